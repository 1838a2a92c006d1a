"""Fraud signals: busy days (by the store's local day), large manual adjustments and returns of points-heavy
purchases, by the thresholds in the rules, for a period and a store. Every test runs on SQLite and PostgreSQL.

The data set (FIXED_NOW is 12:00 on 15 June 2026 in Shanghai; the threshold is "more than 5 a day"):
  Ann    6 purchases on 14 June, 10:00-15:00 at Test Store               -> a busy day
  Ben    5 purchases on 14 June at Test Store                            -> at the threshold, not a signal
  Cat    3 at 23:30-23:50 on 13 June and 3 at 00:10-00:30 on 14 June     -> one UTC day, two local days: none
  Dan    6 on 12 June, 00:10 to 23:50 local                              -> two UTC days, one local day: a signal
  Eve    4 at Test Store and 2 at Second Store on 14 June                -> a signal for all stores only
  Ann also made 6 purchases 20 days ago (only in the 30- and 90-day periods).
"""
from __future__ import annotations

import re
import uuid
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from portal import complaints, fraud, ledger, points, returns
from portal.extensions import db
from portal.models import AuditLog, LedgerKind, Member, Store
from portal.rules import load_rules, set_rule

from . import factories
from .conftest import FIXED_NOW
from .helpers import is_full_page, text_of

PAGE = "/manage/fraud"
SHANGHAI = ZoneInfo("Asia/Shanghai")
H = timedelta(hours=1)


def local(day: int, hour: int, minute: int = 0, month: int = 6) -> datetime:
    """A moment in June 2026, Shanghai time."""
    return datetime(2026, month, day, hour, minute, tzinfo=SHANGHAI)


def buy(member: Member, moment: datetime, store_code: str = "S001", gross_fen: int = 1_000, points_: int = 0):
    return factories.purchase(member, gross_fen, points=points_, now=moment, store_code=store_code).purchase


@pytest.fixture
def busy_data(app):
    """The purchases of the module docstring; returns the members' ids by name."""
    with app.app_context():
        factories.store("S002", "Second Store")
        made = {name: factories.member(name=name, now=local(1, 9)) for name in ("Ann", "Ben", "Cat", "Dan", "Eve")}
        for hour in range(10, 16):
            buy(made["Ann"], local(14, hour))
            buy(made["Ann"], local(26, hour, month=5))
        for hour in range(10, 15):
            buy(made["Ben"], local(14, hour))
        for minute in (30, 40, 50):
            buy(made["Cat"], local(13, 23, minute))
        for minute in (10, 20, 30):
            buy(made["Cat"], local(14, 0, minute))
        for moment in (local(12, 0, 10), local(12, 0, 20), local(12, 8), local(12, 23, 30), local(12, 23, 40),
                       local(12, 23, 50)):
            buy(made["Dan"], moment)
        for hour in (9, 10, 11, 12):
            buy(made["Eve"], local(14, hour))
        for hour in (17, 18):
            buy(made["Eve"], local(14, hour), store_code="S002")
        db.session.commit()
        return {name: member.id for name, member in made.items()}


def found_days(store_ids=None, since=local(9, 0), threshold=5) -> list[tuple[int, date, int]]:
    days, more = fraud.busy_days(db.session, threshold=threshold, since=since, until=FIXED_NOW, store_ids=store_ids)
    assert not more
    return [(d.member.id, d.day, d.purchases) for d in days]


def store_id(code: str) -> int:
    return db.session.scalars(select(Store.id).where(Store.code == code)).one()


# --- the service ----------------------------------------------------------------------------------------

def test_busy_days_are_counted_by_the_stores_local_day(app, busy_data):
    with app.app_context():
        assert found_days() == [
            (busy_data["Ann"], date(2026, 6, 14), 6),
            (busy_data["Eve"], date(2026, 6, 14), 6),
            (busy_data["Dan"], date(2026, 6, 12), 6),
        ]
        assert found_days([store_id("S001")]) == [(busy_data["Ann"], date(2026, 6, 14), 6),
                                                   (busy_data["Dan"], date(2026, 6, 12), 6)]
        assert found_days([store_id("S002")]) == []
        assert found_days([]) == []


def test_a_busy_day_has_its_total_paid_stores_and_times(app, busy_data):
    with app.app_context():
        days, _more = fraud.busy_days(db.session, threshold=5, since=local(9, 0), until=FIXED_NOW, store_ids=None)
        eve = next(d for d in days if d.member.id == busy_data["Eve"])
        assert eve.paid_fen == 6_000
        assert [s.code for s in eve.stores] == ["S001", "S002"]
        assert (eve.first_at, eve.last_at) == (local(14, 9), local(14, 18))


def test_the_threshold_and_the_period_decide(app, busy_data):
    with app.app_context():
        assert (busy_data["Ben"], date(2026, 6, 14), 5) in found_days(threshold=4)
        assert (busy_data["Cat"], date(2026, 6, 14), 3) in found_days(threshold=2)
        assert [row[0] for row in found_days(threshold=6)] == []
        a_month = found_days(since=local(16, 0, month=5))
        assert (busy_data["Ann"], date(2026, 5, 26), 6) in a_month and len(a_month) == 4


def test_a_day_in_another_time_zone_is_that_stores_day(app):
    """A store in New York: 6 purchases from 00:30 to 23:30 New York time on 10 March 2026 (EDT starts on the 8th)
    fall on one local day though they cover two UTC days."""
    with app.app_context():
        factories.store("NY1", "New York")
        db.session.get(Store, store_id("NY1")).timezone = "America/New_York"
        member = factories.member()
        new_york = ZoneInfo("America/New_York")
        for hour, minute in ((0, 30), (6, 0), (12, 0), (18, 0), (20, 0), (23, 30)):
            buy(member, datetime(2026, 3, 10, hour, minute, tzinfo=new_york), store_code="NY1")
        db.session.commit()
        days, _more = fraud.busy_days(db.session, threshold=5, since=datetime(2026, 3, 1, tzinfo=new_york),
                                      until=FIXED_NOW, store_ids=None)
        assert [(d.member.id, d.day, d.purchases) for d in days] == [(member.id, date(2026, 3, 10), 6)]


@pytest.fixture
def adjustment_data(app):
    """Manual adjustments around the 5,000-point threshold, one at Second Store, and two that are not manual
    adjustments: an imported opening balance and a goodwill bonus."""
    with app.app_context():
        factories.store("S002", "Second Store")
        manager = factories.staff("manager")
        other = factories.staff("manager", store_code="S002")
        member = factories.member(name="Mia")
        made = {}
        for name, amount, who, code in (("plus_at", 5000, manager, "S001"), ("plus_below", 4999, manager, "S001"),
                                        ("minus_at", -5000, manager, "S001"), ("minus_below", -4999, manager, "S001"),
                                        ("elsewhere", 9000, other, "S002")):
            made[name] = points.adjust(
                db.session, member_id=member.id, staff=who, store=factories.store(code), points=amount,
                reason=f"reason {name}", rules=load_rules(db.session), now=local(14, 10) + len(made) * H,
                idempotency_key=uuid.uuid4().hex).id
        ledger.credit(db.session, member, LedgerKind.ADJUST, [ledger.Portion(50_000, None)], "opening_balance",
                      at=local(14, 8), store=factories.store(), staff_id=manager.id, note="import #1")
        complaint = complaints.file_complaint(db.session, store=factories.store(), category="other", severity="low",
                                              description="Rude", channel="counter", member=member, now=local(14, 9))
        complaints.grant_goodwill(db.session, complaint, staff=manager, points=8000, store=factories.store(),
                                  rules=load_rules(db.session), idempotency_key=uuid.uuid4().hex, now=local(14, 16))
        db.session.commit()
        return made


def test_adjustments_at_the_threshold_either_way_are_signals(app, adjustment_data):
    with app.app_context():
        def ids(threshold, store_ids=None):
            found, _more = fraud.large_adjustments(db.session, threshold=threshold, since=local(9, 0),
                                                   until=FIXED_NOW, store_ids=store_ids)
            return [item.entry.id for item in found]

        a = adjustment_data
        assert ids(5000) == [a["elsewhere"], a["minus_at"], a["plus_at"]]  # newest first; no bonus, no import
        assert ids(5000, [store_id("S001")]) == [a["minus_at"], a["plus_at"]]
        assert ids(4999, [store_id("S001")]) == [a["minus_below"], a["minus_at"], a["plus_below"], a["plus_at"]]
        assert ids(9001) == []


@pytest.fixture
def return_data(app):
    """A gold member (5 percent off) pays two ¥100.00 purchases partly with points: 4,750 points (50 percent of the
    ¥95.00 due) and 4,749 points (just under), and returns both; a points-heavy return at Second Store too."""
    with app.app_context():
        factories.store("S002", "Second Store")
        cashier = factories.staff("cashier")
        member = factories.member(name="Gus", tier="gold", now=local(1, 9))
        buy(member, local(2, 10), gross_fen=1_000_000)  # earns 14,250 points
        heavy = buy(member, local(14, 10), points_=4750, gross_fen=10_000)
        light = buy(member, local(14, 11), points_=4749, gross_fen=10_000)
        elsewhere = buy(member, local(14, 12), points_=4000, gross_fen=5_000, store_code="S002")
        made = {}
        for name, bought, code, moment in (("heavy", heavy, "S001", local(15, 9)), ("light", light, "S001",
                                           local(15, 10)), ("elsewhere", elsewhere, "S002", local(15, 11))):
            made[name] = returns.record_return(
                db.session, purchase_id=bought.id, store=factories.store(code), staff=cashier,
                returned_gross_fen=None, idempotency_key=uuid.uuid4().hex, rules=load_rules(db.session),
                now=moment).ret.id
        complaint = complaints.file_complaint(db.session, store=factories.store(), category="returns_refunds",
                                              severity="low", description="Refund slow", channel="counter",
                                              member=member, purchase=heavy, now=local(15, 9, 30))
        made["complaint"] = complaint.id
        db.session.commit()
        return made


def test_returns_of_purchases_paid_at_least_the_percentage_with_points(app, return_data):
    with app.app_context():
        def found(percent, store_ids=None):
            rows, _more = fraud.points_heavy_returns(db.session, percent=percent, since=local(9, 0), until=FIXED_NOW,
                                                     store_ids=store_ids)
            return rows

        r = return_data
        assert [row.ret.id for row in found(50)] == [r["elsewhere"], r["heavy"]]
        heavy = found(50, [store_id("S001")])
        assert [row.ret.id for row in heavy] == [r["heavy"]]
        assert heavy[0].points_share == 0.5 and heavy[0].purchase.due_fen == 9500
        assert heavy[0].complaint_ids == (r["complaint"],)
        assert heavy[0].staff is not None
        assert [row.ret.id for row in found(49, [store_id("S001")])] == [r["light"], r["heavy"]]
        assert [row.ret.id for row in found(84)] == [r["elsewhere"]]  # 4,000 points of ¥47.50 due: 84.2 percent
        assert found(85) == []


def test_lists_are_cut_at_the_limit_and_say_so(app, adjustment_data):
    with app.app_context():
        found, more = fraud.large_adjustments(db.session, threshold=1, since=local(9, 0), until=FIXED_NOW,
                                              store_ids=None, limit=2)
        assert len(found) == 2 and more


# --- the page -------------------------------------------------------------------------------------------

def sign_in(app, client, login, role="manager", store_code="S001"):
    login(client, role, store_code)
    app.config["FROZEN_NOW"] = FIXED_NOW  # after the login: see test_manage_complaints.pin_clock


def busy_rows(response) -> list[tuple[str, str, str]]:
    """(member id, day, purchases) of the busy-days table."""
    body = response.get_data(as_text=True)
    return [(member, day, purchases) for member, day, purchases in re.findall(
        r'<tr data-member="(\d+)" data-day="([\d-]+)">.*?data-figure="purchases">(\d+)<', body, re.S)]


def row(response, row_id: str) -> str:
    match = re.search(rf'<tr id="{row_id}">(.*?)</tr>', text_of(response), re.S)
    assert match, f"no row {row_id}"
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", match.group(1))).strip()


def test_a_cashier_is_refused(app, client, login):
    login(client, "cashier")
    assert client.get(PAGE).status_code == 403
    assert client.get(PAGE, htmx=True).status_code == 403


def test_a_manager_sees_their_stores_busy_days(app, client, login, busy_data):
    sign_in(app, client, login)
    response = client.get(PAGE)
    assert response.status_code == 200 and is_full_page(response)
    assert busy_rows(response) == [(str(busy_data["Ann"]), "2026-06-14", "6"),
                                   (str(busy_data["Dan"]), "2026-06-12", "6")]
    page = text_of(response)
    assert f'href="/manage/members/{busy_data["Ann"]}"' in page
    assert "¥60.00" in row_text_of_member(response, busy_data["Ann"])
    assert "More than 5 purchases by one member in one day" in page
    assert 'href="/manage/settings#fraud-rules"' in page
    assert 'name="store"' not in page  # a manager has no store to choose
    assert "Second Store" not in page


def row_text_of_member(response, member_id: int) -> str:
    match = re.search(rf'<tr data-member="{member_id}"[^>]*>(.*?)</tr>', text_of(response), re.S)
    return re.sub(r"<[^>]+>", " ", match.group(1))


def test_a_manager_cannot_pick_another_store(app, client, login, busy_data):
    with app.app_context():
        second = store_id("S002")
    sign_in(app, client, login)
    assert [r[0] for r in busy_rows(client.get(f"{PAGE}?store={second}"))] == [
        str(busy_data["Ann"]), str(busy_data["Dan"])]


def test_an_admin_sees_every_store_or_one(app, client, login, busy_data):
    with app.app_context():
        second = store_id("S002")
    sign_in(app, client, login, "admin")
    everything = client.get(PAGE)
    assert [r[0] for r in busy_rows(everything)] == [str(busy_data[n]) for n in ("Ann", "Eve", "Dan")]
    assert "Test Store, Second Store" in row_text_of_member(everything, busy_data["Eve"])
    only_second = client.get(f"{PAGE}?store={second}", htmx=True)
    assert only_second.status_code == 200 and not is_full_page(only_second)
    assert busy_rows(only_second) == []
    assert "Second Store, from June" in text_of(only_second)
    assert "HX-Request" in only_second.headers["Vary"]


@pytest.mark.parametrize(("period", "expected"), [("today", 0), ("7", 2), ("30", 3), ("90", 3), ("bogus", 2)])
def test_the_period_decides(app, client, login, busy_data, period, expected):
    sign_in(app, client, login)
    assert len(busy_rows(client.get(f"{PAGE}?period={period}"))) == expected


def test_adjustments_on_the_page_say_who_why_and_for_whom(app, client, login, adjustment_data):
    sign_in(app, client, login)
    response = client.get(PAGE)
    shown = re.findall(r'<tr id="adjustment-(\d+)">', response.get_data(as_text=True))
    assert shown == [str(adjustment_data["minus_at"]), str(adjustment_data["plus_at"])]
    text = row(response, f"adjustment-{adjustment_data['minus_at']}")
    assert "-5,000" in text and "reason minus_at" in text and "Mia" in text and "Manager" in text
    assert "Test Store" in text


def test_returns_on_the_page_with_the_share_refund_and_links(app, client, login, return_data):
    sign_in(app, client, login)
    response = client.get(PAGE)
    body = response.get_data(as_text=True)
    assert re.findall(r'<tr id="return-(\d+)">', body) == [str(return_data["heavy"])]
    text = row(response, f"return-{return_data['heavy']}")
    assert "50%" in text and "4,750" in text and "¥95.00" in text and "Gus" in text
    assert f'href="/manage/complaints/{return_data["complaint"]}"' in body
    assert f'href="/till/returns/{return_data["heavy"]}"' in body


def test_thresholds_changed_on_the_settings_page_change_the_lists(app, client, login, busy_data, adjustment_data,
                                                                   return_data):
    sign_in(app, client, login)
    before = client.get(PAGE)
    assert len(busy_rows(before)) == 2 and before.get_data(as_text=True).count('<tr id="return-') == 1
    settings = client.get("/manage/settings").get_data(as_text=True)
    form = dict(re.findall(r'<input id="rule-(\w+)" name="\w+" value="([^"]*)"', settings))
    form.update(shortfall_policy="deduct", fraud_purchases_per_day="4", fraud_adjustment_points="4999",
                fraud_return_points_percent="49")
    assert client.post("/manage/settings/rules", data=form).status_code == 303
    after = client.get(PAGE)
    assert (str(busy_data["Ben"]), "2026-06-14", "5") in busy_rows(after)
    assert after.get_data(as_text=True).count('<tr id="adjustment-') == 4
    assert after.get_data(as_text=True).count('<tr id="return-') == 2
    assert "More than 4 purchases by one member in one day" in text_of(after)
    with app.app_context():
        targets = sorted(db.session.scalars(select(AuditLog.target).where(AuditLog.action == "rules.set")))
        assert targets == ["rule:fraud_adjustment_points", "rule:fraud_purchases_per_day",
                           "rule:fraud_return_points_percent"]


def test_nothing_to_show(app, client, login):
    sign_in(app, client, login)
    page = text_of(client.get(PAGE))
    assert "No member made more than 5 purchases in one day." in page
    assert "No manual adjustment of 5,000 points or more." in page
    assert "No return of a purchase paid at least 50 percent with points." in page


def test_a_deleted_member_is_shown_without_a_link(app, client, login, busy_data):
    with app.app_context():
        db.session.get(Member, busy_data["Ann"]).deleted_at = FIXED_NOW - H
        db.session.commit()
    sign_in(app, client, login)
    response = client.get(PAGE)
    assert "Former member" in row_text_of_member(response, busy_data["Ann"])
    assert f'href="/manage/members/{busy_data["Ann"]}"' not in response.get_data(as_text=True)


def test_set_rule_keeps_the_fraud_rules_in_bounds(ctx):
    from portal.rules import RuleError

    with pytest.raises(RuleError):
        set_rule(db.session, "fraud_return_points_percent", "101", staff=None, now=FIXED_NOW)
    set_rule(db.session, "fraud_return_points_percent", "100", staff=None, now=FIXED_NOW)
    assert load_rules(db.session).fraud_return_points_percent == 100
