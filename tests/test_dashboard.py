"""The manager dashboard: every figure against a hand-computed data set made through the real services,
period boundaries in the store's time zone, store scoping, the day's takings form, the charts, htmx.

The clock is pinned at FIXED_NOW = 2026-06-15 04:00 UTC = 12:00 on 15 June in Shanghai (UTC+8). "Last 7 days"
then runs from 9 June 00:00 Shanghai (8 June 16:00 UTC) to now.
"""
from __future__ import annotations

import json
import re
import uuid
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest
from flask import current_app
from sqlalchemy import func, select

from portal import accounts, charts, checkout, complaints, dashboard, members, points, returns
from portal.extensions import db
from portal.models import AuditLog, Member, Staff, Store, StoreTakings, Tier
from portal.rules import load_rules

from . import factories
from .conftest import FIXED_NOW
from .helpers import field_error, figure, is_full_page, text_of

DASHBOARD = "/manage/"  # also served at /manage/dashboard
TAKINGS = "/manage/takings"
SHANGHAI = ZoneInfo("Asia/Shanghai")


def local(day: int, hour: int = 12, minute: int = 0, *, month: int = 6, year: int = 2026, zone=SHANGHAI):
    """A moment given in a store's local time (June 2026 unless told), as the services take it (aware)."""
    return datetime(year, month, day, hour, minute, tzinfo=zone)


# --- making the data set through the services -----------------------------------------------------------

def register(name: str, *, at: datetime, store: Store, staff: Staff | None) -> Member:
    return members.register_member(
        db.session, name=name, phone_e164=factories.phone_number(), birthday=None, email=None,
        guardian_consent=False, marketing_consent=False, referrer=None, store=store, staff=staff,
        rules=load_rules(db.session), secret_key=current_app.config["SECRET_KEY"], now=at,
    ).member


def buy(member: Member, gross_fen: int, *, at: datetime, store: Store, staff: Staff | None, points_: int = 0):
    return checkout.record_purchase(
        db.session, member_id=member.id, store=store, staff=staff, gross_fen=gross_fen, points_to_redeem=points_,
        idempotency_key=uuid.uuid4().hex, receipt_number=None, rules=load_rules(db.session), now=at,
    ).purchase


def give_back(purchase, gross_fen: int, *, at: datetime, store: Store, staff: Staff | None):
    return returns.record_return(
        db.session, purchase_id=purchase.id, store=store, staff=staff, returned_gross_fen=gross_fen,
        idempotency_key=uuid.uuid4().hex, rules=load_rules(db.session), now=at,
    ).ret


def complain(store: Store, *, at: datetime, member: Member | None = None):
    return complaints.file_complaint(db.session, store=store, category="other", severity="normal",
                                     description="问题", channel="counter", member=member, now=at)


@pytest.fixture
def data(app):
    """Two Shanghai stores and what happened there; the figures each test expects are worked out beside it.

    S001 "Test Store": cashier C1, manager M1. S002 "Second Store": cashier C2.
    Balances as they go are in the comments (every member is in the lowest tier: 1 point per ¥1, no discount).
    """
    with app.app_context():
        s1 = factories.store("S001")
        s2 = factories.store("S002", "Second Store")
        c1 = factories.staff("cashier", "S001")
        m1 = factories.staff("manager", "S001")
        c2 = factories.staff("cashier", "S002")
        rules = load_rules(db.session)

        # G: an old member whose 70 points from 11 June 2024 expire at the end of 11 June 2026.
        g = register("老会员", at=local(1, year=2024), store=s1, staff=c1)
        buy(g, 7_000, at=local(11, year=2024), store=s1, staff=c1)                         # G 70
        a = register("王小明", at=local(1), store=s1, staff=c1)                             # before the period
        c = register("陈晨", at=local(8, 23, 30), store=s1, staff=c1)                       # 23:30 on the eve: out
        c.tier = db.session.scalars(select(Tier).where(Tier.code == "gold")).one()
        p0 = buy(a, 20_000, at=local(8, 23, 30), store=s1, staff=c1)                      # out; A 200
        p1 = buy(a, 10_000, at=local(9, 0, 10), store=s1, staff=c1)                       # in;  A 300
        b = register("李娜", at=local(10, 10), store=s1, staff=c1)                          # new
        f = register("赵六", at=local(11, 9), store=s1, staff=c1)                           # new, deletes later
        e = register("孙七", at=local(11, 10), store=s2, staff=c2)                          # new at S002
        points.adjust(db.session, member_id=b.id, staff=m1, store=s1, points=500, reason="开业赠送",
                      rules=rules, now=local(11, 11))                                    # B 500
        points.expire_all(db.session, now=local(12, 10))                                  # G -70 -> 0
        p2 = buy(a, 5_000, at=local(12, 15), store=s1, staff=c1, points_=100)             # paid 4,900; A 249
        points.adjust(db.session, member_id=a.id, staff=m1, store=s1, points=-30, reason="更正",
                      rules=rules, now=local(12, 16))                                    # A 219
        p4 = buy(e, 30_000, at=local(13, 9), store=s2, staff=c2)                          # E 300
        k3 = complain(s1, at=local(13, 9))                                                # never answered: overdue
        k1 = complain(s1, at=local(13, 10), member=b)
        complaints.acknowledge(db.session, k1, staff=m1, now=local(13, 12))               # 2 h
        give_back(p1, 5_000, at=local(13, 11), store=s1, staff=c1)                        # refund 5,000; -50: A 169
        complaints.resolve(db.session, k1, staff=m1, body="已退款", now=local(13, 14))
        complaints.grant_goodwill(db.session, k1, staff=m1, points=100, store=s1, rules=rules,
                                  idempotency_key=uuid.uuid4().hex, now=local(13, 14, 30))  # B 600
        k2 = complain(s1, at=local(14, 8))
        complaints.acknowledge(db.session, k2, staff=c1, now=local(14, 14))               # 6 h
        complain(s1, at=local(5, 8))                                                      # before: open, overdue
        complain(s2, at=local(14, 9))                                                     # S002: open
        p3 = buy(b, 8_000, at=local(14, 9), store=s1, staff=c1)                           # B 680
        give_back(p0, 2_000, at=local(14, 10), store=s1, staff=c1)                        # refund 2,000; -20: A 149
        buy(a, 1_000, at=local(14, 12), store=s2, staff=c2)                               # A at S002: A 159
        complaints.rate_visit(db.session, member=a, purchase=p1, rating=5, comment=None, now=local(10, 9))
        complaints.rate_visit(db.session, member=b, purchase=p3, rating=4, comment=None, now=local(14, 10))
        complaints.rate_visit(db.session, member=e, purchase=p4, rating=3, comment=None, now=local(13, 20))
        accounts.erase(db.session, f, now=local(14, 18))
        dashboard.record_takings(db.session, store=s1, day=date(2026, 6, 12), amount_fen=100_000, staff=m1,
                                 now=local(12, 22))
        dashboard.record_takings(db.session, store=s1, day=date(2026, 6, 14), amount_fen=50_000, staff=m1,
                                 now=local(14, 22))
        db.session.commit()
        return {"s1": s1.id, "s2": s2.id, "c1": c1.id, "m1": m1.id, "c2": c2.id, "p2": p2.id, "k3": k3.id}


@pytest.fixture
def manager(app, client, login):
    """A manager of S001, signed in, then the clock pinned (signing in at a pinned past time would expire)."""
    login(client, "manager")
    app.config["FROZEN_NOW"] = FIXED_NOW
    return client


@pytest.fixture
def admin(app, client, login):
    login(client, "admin")
    app.config["FROZEN_NOW"] = FIXED_NOW
    return client


def figures_of(response, *names: str) -> tuple[str, ...]:
    return tuple(figure(response, name) for name in names)


# --- the figures ----------------------------------------------------------------------------------------

def test_a_managers_store_figures_for_the_last_7_days(manager, data):
    response = manager.get(f"{DASHBOARD}?period=7")
    assert response.status_code == 200 and is_full_page(response)
    # Purchases at S001 from 9 June 00:00: P1 10,000 + P2 4,900 + P3 8,000 = 22,900 fen in 3 (P0 at 23:30 on
    # 8 June is out; A's ¥10 at S002 is another store's). Refunds of returns at S001 in the period:
    # 5,000 (of P1) + 2,000 (of P0, bought before the period) = 7,000. Net 15,900.
    assert figures_of(response, "member-sales", "member-paid", "member-refunded", "purchases") == (
        "¥159.00", "¥229.00", "¥70.00", "3")
    assert figure(response, "average-basket") == "¥76.33"  # 22,900 / 3 = 7,633.33 -> 7,633
    # Takings on 12 and 14 June: 1,000.00 + 500.00 = 150,000. Member sales those days: 12 June P2 4,900;
    # 14 June P3 8,000 - 2,000 refunded = 6,000. 10,900 / 150,000 = 7.27 % -> 7.3 %.
    assert figures_of(response, "share", "share-basis") == ("7.3%", "based on 2 of 7 days")
    # New: B (10 June) and F (11 June, since deleted); C registered at 23:30 on the eve is out.
    # Active at S001: A (P1, P2) and B (P3); A bought twice: 1 of 2 = 50 %.
    assert figures_of(response, "new-members", "active-members", "repeat-rate") == ("2", "2", "50.0%")
    # Issued: earned 100 (P1) + 49 (P2) + 80 (P3) = 229, bonus 100 (goodwill) -> 329. Redeemed 100 (P2).
    # Expired: G's 70 (an expiry has no store: it counts for G's store). Reversed 50 + 20. Adjusted +500, -30.
    assert figures_of(response, "points-issued", "points-earned", "points-bonus", "points-redeemed",
                      "points-expired", "points-restored", "points-reversed", "points-adjusted-in",
                      "points-adjusted-out") == ("329", "229", "100", "100", "70", "0", "70", "500", "30")
    # Balances now of S001's current members: A 159 (with the 10 earned at S002), B 680, C 0, G 0 (F deleted).
    # 839 points at 100 points = ¥1 -> ¥8.39.
    assert figure(response, "liability") == "¥8.39"
    assert "839 points held now" in text_of(response)
    # Current members of S001: A, B, G in the lowest tier, C gold; F is deleted.
    assert figures_of(response, "tier-member", "tier-silver", "tier-gold", "tier-diamond") == ("3", "0", "1", "0")
    # Complaints of S001 open now: K2 (acknowledged), K3 and the one of 5 June; overdue (no answer in 24 h):
    # K3 and 5 June's. First responses in the period: K1 2 h, K2 6 h: median 4.0, 90th percentile (rank 2) 6.0.
    assert figures_of(response, "complaints-open", "complaints-overdue", "response-median", "response-p90") == (
        "3", "2", "4.0", "6.0")
    assert figure(response, "satisfaction") == "4.5"  # visits at S001 rated 5 and 4
    # Staff: C1 registered B and F, recorded P1, P2, P3 (22,900) and acknowledged K2; M1 handled K1.
    c1, m1 = data["c1"], data["m1"]
    assert figures_of(response, f"staff-{c1}-registered", f"staff-{c1}-purchases", f"staff-{c1}-paid",
                      f"staff-{c1}-handled") == ("2", "3", "¥229.00", "1")
    assert figures_of(response, f"staff-{m1}-registered", f"staff-{m1}-purchases", f"staff-{m1}-handled") == (
        "0", "0", "1")
    assert f'data-staff="{data["c2"]}"' not in response.get_data(as_text=True)  # S002's cashier


def test_the_daily_numbers_follow_the_stores_days(manager, data):
    body = text_of(manager.get(f"{DASHBOARD}?period=7"))
    rows = dict(re.findall(r'<tr data-day="([0-9-]+)"><th>[^<]*</th><td class="num">([^<]*)</td>', body))
    # 9 June P1; 12 June P2; 13 June the ¥50 refund; 14 June P3 less the ¥20 refund; today nothing yet.
    assert rows == {"2026-06-09": "¥100.00", "2026-06-10": "¥0.00", "2026-06-11": "¥0.00",
                    "2026-06-12": "¥49.00", "2026-06-13": "-¥50.00", "2026-06-14": "¥60.00",
                    "2026-06-15": "¥0.00"}
    takings = re.findall(r'<tr data-day="(2026-06-1[24])">.*?<td class="num">([^<]*)</td></tr>', body, re.S)
    assert takings == [("2026-06-12", "¥1,000.00"), ("2026-06-14", "¥500.00")]


def test_today_and_90_days(manager, data):
    today = manager.get(f"{DASHBOARD}?period=today")
    # Nothing was bought at S001 on 15 June; the share has no takings to compare with.
    assert figures_of(today, "member-sales", "purchases", "average-basket", "share", "share-basis") == (
        "¥0.00", "0", "—", "—", "based on 0 of 1 day")
    assert figures_of(today, "repeat-rate", "new-members", "response-median") == ("—", "0", "—")
    # Balances, tiers and open complaints do not depend on the period.
    assert figures_of(today, "liability", "tier-member", "complaints-open") == ("¥8.39", "3", "3")
    ninety = manager.get(f"{DASHBOARD}?period=90")
    # From 17 March: P0 is in now (20,000), so 42,900 paid in 4; A (1 June) and C are new too: A, B, C, F.
    assert figures_of(ninety, "member-paid", "purchases", "new-members") == ("¥429.00", "4", "4")
    assert figure(ninety, "average-basket") == "¥107.25"  # 42,900 / 4
    assert figure(manager.get(f"{DASHBOARD}?period=nonsense"), "share-basis") == "based on 2 of 7 days"


def london_store():
    store = factories.store("S003", "London")
    store.timezone = "Europe/London"
    return store


def test_a_purchase_counts_by_the_stores_own_days(app, client, login, data):
    """The same moment, 8 June 17:00 UTC, is 9 June 01:00 in Shanghai (in) and 8 June 18:00 in London (out)."""
    with app.app_context():
        london = london_store()
        shanghai = db.session.get(Store, data["s1"])
        moment = datetime(2026, 6, 8, 17, 0, tzinfo=ZoneInfo("UTC"))
        buy(register("Sam", at=moment, store=london, staff=None), 1_000, at=moment, store=london, staff=None)
        buy(register("Ann", at=moment, store=shanghai, staff=None), 1_000, at=moment, store=shanghai, staff=None)
        # London's first day starts 9 June 00:00 BST = 8 June 23:00 UTC: a purchase at 23:00 UTC is in.
        buy(register("Tom", at=moment, store=london, staff=None), 500,
            at=datetime(2026, 6, 8, 23, 0, tzinfo=ZoneInfo("UTC")), store=london, staff=None)
        db.session.commit()
        london_id = london.id
    login(client, "manager")
    other = app.test_client()
    login(other, "admin")
    app.config["FROZEN_NOW"] = FIXED_NOW
    # S001: Ann's ¥10 is in: 22,900 + 1,000 in 4; new: B, F and Ann.
    assert figures_of(client.get(f"{DASHBOARD}?period=7"), "purchases", "member-paid", "new-members") == (
        "4", "¥239.00", "3")
    response = other.get(f"{DASHBOARD}?period=7&store={london_id}")
    assert figures_of(response, "purchases", "member-paid", "new-members") == ("1", "¥5.00", "0")
    assert "Europe/London" in text_of(response)


def test_the_share_of_all_stores_takes_each_stores_own_days(app, admin, data):
    """London's purchase at 20:00 on 14 June is on 15 June in Shanghai: it counts against London's 14 June."""
    with app.app_context():
        london = london_store()
        moment = datetime(2026, 6, 14, 19, 0, tzinfo=ZoneInfo("UTC"))  # 20:00 BST, 03:00 on the 15th in Shanghai
        buy(register("Sam", at=moment, store=london, staff=None), 1_000, at=moment, store=london, staff=None)
        dashboard.record_takings(db.session, store=london, day=date(2026, 6, 14), amount_fen=10_000,
                                 staff=db.session.get(Staff, data["m1"]), now=FIXED_NOW)
        db.session.commit()
    response = admin.get(f"{DASHBOARD}?period=7")
    # (S001's 10,900 + London's 1,000) / (150,000 + 10,000) = 7.44 %; 3 store-days of 7 days x 3 stores.
    assert figures_of(response, "share", "share-basis") == ("7.4%", "based on 3 of 21 store-days")
    # The days of the chart and its table are Shanghai's (the chain's zone): the purchase is on the 15th.
    assert re.search(r'<tr data-day="2026-06-15"><th>[^<]*</th><td class="num">¥10.00</td>', text_of(response))


def test_a_manager_without_a_store_sees_nothing(app, client, login, data):
    username = login(client, "manager")
    with app.app_context():
        db.session.scalars(select(Staff).where(Staff.username == username)).one().store_id = None
        db.session.commit()
    app.config["FROZEN_NOW"] = FIXED_NOW
    response = client.get(DASHBOARD)
    assert response.status_code == 200
    assert figures_of(response, "member-sales", "purchases", "liability", "complaints-open") == (
        "¥0.00", "0", "¥0.00", "0")
    assert "You do not work at a store" in text_of(response) and 'id="takings"' not in text_of(response)
    assert client.post(TAKINGS, data={"day": "2026-06-13", "amount": "100"}).status_code == 404


def test_an_admin_sees_all_stores_or_one(admin, data):
    everything = admin.get(f"{DASHBOARD}?period=7")
    # Paid: S001 22,900 + S002 30,000 (E) + 1,000 (A) = 53,900 in 5; refunds 7,000 -> ¥469.00; basket 10,780.
    assert figures_of(everything, "member-sales", "purchases", "average-basket") == ("¥469.00", "5", "¥107.80")
    # New: B, F, E. Active: A (three purchases), B, E: one of three bought twice or more.
    assert figures_of(everything, "new-members", "active-members", "repeat-rate") == ("3", "3", "33.3%")
    # Liability: S001 839 + E 300 = 1,139 points. Takings only at S001: 2 of 7 days x 2 stores.
    assert figures_of(everything, "liability", "share", "share-basis") == (
        "¥11.39", "7.3%", "based on 2 of 14 store-days")
    assert figures_of(everything, "complaints-open", "points-earned") == ("4", "539")  # 229 + 300 + 10
    second = admin.get(f"{DASHBOARD}?period=7&store={data['s2']}")
    # S002: E's 30,000 and A's 1,000; no returns, no takings.
    assert figures_of(second, "member-sales", "purchases", "average-basket", "share", "share-basis") == (
        "¥310.00", "2", "¥155.00", "—", "based on 0 of 7 days")
    assert figures_of(second, "new-members", "active-members", "repeat-rate", "liability", "tier-member") == (
        "1", "2", "0.0%", "¥3.00", "1")
    assert figures_of(second, "complaints-open", "satisfaction", "points-earned") == ("1", "3.0", "310")
    assert "Second Store, from" in text_of(second)
    assert f'data-staff="{data["c2"]}"' in second.get_data(as_text=True)


def test_a_manager_sees_only_their_store_whatever_the_address_says(app, client, login, data):
    login(client, "manager", store_code="S002")
    app.config["FROZEN_NOW"] = FIXED_NOW
    response = client.get(f"{DASHBOARD}?period=7&store={data['s1']}")
    assert response.status_code == 200
    assert figures_of(response, "member-sales", "purchases", "new-members") == ("¥310.00", "2", "1")
    assert 'name="store"' not in response.get_data(as_text=True)  # no store picker for a manager


def test_both_addresses_and_the_htmx_block(manager, data):
    for path in ("/manage/dashboard", DASHBOARD):
        response = manager.get(path)
        assert response.status_code == 200 and is_full_page(response), path
        assert figure(response, "member-sales") == "¥159.00"
    assert manager.get("/manage").status_code in (301, 308)
    fragment = manager.get(f"{DASHBOARD}?period=today", htmx=True)
    assert fragment.status_code == 200 and not is_full_page(fragment)
    assert "HX-Request" in fragment.headers["Vary"]
    body = fragment.get_data(as_text=True)
    assert 'id="dashboard-scope"' in body and 'hx-get' not in body  # the block, without the filter form
    assert figure(fragment, "member-sales") == "¥0.00"
    full = manager.get(f"{DASHBOARD}?period=today")
    assert 'hx-push-url="true"' in full.get_data(as_text=True)
    assert '<option selected value="today">' in full.get_data(as_text=True)


def test_cashiers_are_refused_and_strangers_sent_to_sign_in(app, client, login, data):
    for path in ("/manage/dashboard", DASHBOARD):
        response = client.get(path)
        assert response.status_code == 302 and response.headers["Location"].startswith("/login")
    login(client, "cashier")
    for path in ("/manage/dashboard", DASHBOARD, f"{DASHBOARD}?period=30"):
        assert client.get(path).status_code == 403, path
        assert client.get(path, htmx=True).status_code == 403, path
    assert client.post(TAKINGS, data={"day": "2026-06-13", "amount": "100"}).status_code == 403
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(StoreTakings)) == 2


# --- the charts -----------------------------------------------------------------------------------------

def svgs(response) -> dict[str, str]:
    return dict(re.findall(r'<svg class="chart [^"]*" id="([^"]+)"(.*?)</svg>', response.get_data(as_text=True), re.S))


def test_the_charts_are_accessible_images_that_escape_names(app, manager, data):
    with app.app_context():
        db.session.get(Store, data["s1"]).name = "<script>alert(1)</script>"
        db.session.commit()
    response = manager.get(f"{DASHBOARD}?period=7")
    body = response.get_data(as_text=True)
    assert "<script>alert" not in body
    charts = svgs(response)
    assert set(charts) == {"chart-daily-sales", "chart-tiers", "chart-points"}
    for name, svg in charts.items():
        assert 'role="img"' in svg and f'aria-labelledby="{name}-title {name}-desc"' in svg
        assert f'<title id="{name}-title">' in svg and f'<desc id="{name}-desc">' in svg
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in svg, name
    daily = charts["chart-daily-sales"]
    assert len(re.findall(r"<rect ", daily)) == 7  # a column a day
    assert 'class="negative"><title>Jun 13, 2026: -¥50.00</title>' in daily
    assert "<title>Jun 14, 2026: ¥60.00</title>" in daily
    assert "<title>Gold: 1</title>" in charts["chart-tiers"]
    assert "<title>Issued: 329</title>" in charts["chart-points"]
    assert "<title>Expired: 70</title>" in charts["chart-points"]


def test_the_charts_speak_chinese(manager, data):
    response = manager.get(f"{DASHBOARD}?period=7", headers={"Accept-Language": "zh-CN"})
    charts = svgs(response)
    for name in ("普通会员", "银卡", "金卡", "钻石"):
        assert f">{name}</text>" in charts["chart-tiers"], name
    assert "<title>金卡: 1</title>" in charts["chart-tiers"]


def test_column_heights_are_to_scale(ctx):
    chart = charts.column_chart([("a", 100), ("b", -50), ("c", 0)], value_text=str, tick_text=str,
                                width=300, height=140, left=0, right=0, top=0, bottom=40)
    # Step 50 over -50..100: the plot's 100 px hold 150, so 100 -> 66.7 px above zero, -50 -> 33.3 below.
    tall, low, flat = chart.columns
    assert (tall.height, low.height, flat.height) == (66.7, 33.3, 0.0)
    assert tall.y == 0.0 and low.y == chart.baseline == 66.7 and low.negative and not tall.negative
    assert [tick.text for tick in chart.ticks] == ["-50", "0", "50", "100"]
    bars = charts.bar_chart([("x", 4, "a"), ("y", 1, "b"), ("z", 0, "c")], value_text=str, width=300,
                            label_width=100, value_width=0)
    assert [bar.width for bar in bars.bars] == [200.0, 50.0, 0.0]
    assert charts.bar_chart([("x", 0, "a")], value_text=str).bars[0].width == 0.0


# --- the day's takings ----------------------------------------------------------------------------------

def takings_rows(app) -> list[tuple[int, date, int]]:
    with app.app_context():
        return [tuple(row) for row in db.session.execute(
            select(StoreTakings.store_id, StoreTakings.day, StoreTakings.amount_fen)
            .order_by(StoreTakings.store_id, StoreTakings.day))]


def takings_audit(app) -> list[tuple[str, int | None, dict | None, dict]]:
    with app.app_context():
        rows = db.session.scalars(select(AuditLog).where(AuditLog.action == "takings.set").order_by(AuditLog.id))
        return [(row.target, row.store_id, json.loads(row.before) if row.before else None, json.loads(row.after))
                for row in rows]


def test_a_manager_records_and_corrects_a_days_takings(app, manager, data):
    form_page = manager.get(f"{DASHBOARD}?period=7")
    assert 'value="2026-06-15"' in form_page.get_data(as_text=True)  # today at the store, by default
    assert 'action="/manage/takings?period=7"' in form_page.get_data(as_text=True)
    response = manager.post(f"{TAKINGS}?period=7", data={"day": "2026-06-13", "amount": "¥1,200.50"})
    assert response.status_code == 303
    assert response.headers["Location"] == f"{DASHBOARD}?period=7&saved=1"
    page = manager.get(response.headers["Location"])
    assert "The takings are saved." in text_of(page)
    # 13 June's member sales at S001: -5,000 (the refund). (10,900 - 5,000) / (150,000 + 120,050) = 2.18 %.
    assert figures_of(page, "share", "share-basis") == ("2.2%", "based on 3 of 7 days")
    s1 = data["s1"]
    assert (s1, date(2026, 6, 13), 120_050) in takings_rows(app)
    before = len(takings_audit(app))
    response = manager.post(f"{TAKINGS}?period=7", data={"day": "2026-06-13", "amount": "1300"}, htmx=True)
    assert response.status_code == 200 and not is_full_page(response)
    assert "The takings are saved." in text_of(response)
    assert figure(response, "share") == "2.1%"  # 5,900 / 280,000 = 2.107 %
    assert [row for row in takings_rows(app) if row[1] == date(2026, 6, 13)] == [(s1, date(2026, 6, 13), 130_000)]
    audit = takings_audit(app)
    assert audit[before - 1:] == [
        ("store:S001:2026-06-13", s1, None, {"day": "2026-06-13", "amount_fen": 120_050}),
        ("store:S001:2026-06-13", s1, {"day": "2026-06-13", "amount_fen": 120_050},
         {"day": "2026-06-13", "amount_fen": 130_000}),
    ]
    with app.app_context():
        by = db.session.scalars(select(AuditLog.staff_id).where(AuditLog.action == "takings.set")
                                .order_by(AuditLog.id.desc())).first()
        assert db.session.get(Staff, by).role == "manager" and by != data["m1"]
    # The same amount again changes nothing and writes nothing.
    assert manager.post(TAKINGS, data={"day": "2026-06-13", "amount": "1,300.00"}).status_code == 303
    assert len(takings_audit(app)) == len(audit)


@pytest.mark.parametrize(("day", "amount", "field", "message"), [
    ("2026-06-13", "", "takings-amount", "Enter an amount."),
    ("2026-06-13", "0", "takings-amount", "The amount must be more than zero."),
    ("2026-06-13", "-5", "takings-amount", "The amount must be more than zero."),
    ("2026-06-13", "abc", "takings-amount", "Enter an amount in yuan, such as 12.50."),
    ("2026-06-13", "1.234", "takings-amount", "Use at most two decimal places."),
    ("2026-06-13", "100000000.01", "takings-amount", "The amount is more than the limit of ¥100,000,000.00."),
    ("", "100", "takings-day", "Enter a day such as 2026-06-14."),
    ("2026-13-01", "100", "takings-day", "Enter a day such as 2026-06-14."),
    ("2026-06-16", "100", "takings-day", "That day has not come yet."),
    ("2025-06-13", "100", "takings-day", "Choose a day within the last year."),  # 367 days before 15 June
])
@pytest.mark.parametrize("htmx", [False, True])
def test_refused_takings_are_shown_beside_the_field(app, manager, data, day, amount, field, message, htmx):
    before, audit = takings_rows(app), takings_audit(app)
    response = manager.post(f"{TAKINGS}?period=30", data={"day": day, "amount": amount}, htmx=htmx)
    assert response.status_code == 422
    assert field_error(response, field) == message
    assert is_full_page(response) != htmx
    # The page is still there, for the 30 days asked: from 16 May, P0 is in too: 42,900 - 7,000.
    assert figure(response, "member-sales") == "¥359.00"
    assert f'value="{day}"' in response.get_data(as_text=True) if day else True  # what was typed stays
    assert takings_rows(app) == before and takings_audit(app) == audit


def test_the_oldest_day_allowed_is_366_days_back(app, manager, data):
    assert manager.post(TAKINGS, data={"day": "2025-06-14", "amount": "100"}).status_code == 303


def test_a_form_without_its_csrf_token_is_refused(app, manager, data):
    before = takings_rows(app)
    response = manager.post(TAKINGS, data={"day": "2026-06-13", "amount": "100"}, csrf=False)
    assert response.status_code in (400, 422)
    assert takings_rows(app) == before


def test_a_manager_cannot_record_for_another_store(app, manager, data):
    before, audit = takings_rows(app), takings_audit(app)
    for store in (data["s2"], 999_999):
        response = manager.post(TAKINGS, data={"store": str(store), "day": "2026-06-13", "amount": "100"})
        assert response.status_code == 404, store
    assert takings_rows(app) == before and takings_audit(app) == audit
    # Sending their own store (or none) is fine.
    own = manager.post(TAKINGS, data={"store": str(data["s1"]), "day": "2026-06-13", "amount": "100"})
    assert own.status_code == 303


def test_an_admin_picks_the_store(app, admin, data):
    response = admin.post(TAKINGS, data={"day": "2026-06-13", "amount": "100"}, htmx=True)
    assert response.status_code == 422 and field_error(response, "takings-store") == "Choose a store."
    page = admin.get(f"{DASHBOARD}?store={data['s2']}")
    takings_form = page.get_data(as_text=True).split('id="takings"')[1]
    assert re.search(rf'<option selected value="{data["s2"]}">S002', takings_form)
    response = admin.post(f"{TAKINGS}?period=7&store={data['s2']}",
                          data={"store": str(data["s2"]), "day": "2026-06-13", "amount": "3100"})
    assert response.headers["Location"] == f"{DASHBOARD}?period=7&store={data['s2']}&saved=1"
    # S002 on 13 June: E's 30,000 against 310,000 of takings: 9.7 %.
    assert figures_of(admin.get(response.headers["Location"]), "share", "share-basis") == (
        "9.7%", "based on 1 of 7 days")
    assert (data["s2"], date(2026, 6, 13), 310_000) in takings_rows(app)
    assert takings_audit(app)[-1][:2] == ("store:S002:2026-06-13", data["s2"])
    assert admin.post(TAKINGS, data={"store": "999999", "day": "2026-06-13", "amount": "1"}).status_code == 404


def test_takings_are_a_stores_own_day_even_for_another_zone(app, admin, data):
    """Recording is refused for a day that has not yet begun at the store, whatever the admin's clock says."""
    with app.app_context():
        london = london_store()
        db.session.commit()
        london_id = london.id
    # 04:00 UTC on 15 June is 05:00 on 15 June in London: the 15th may be recorded, the 16th not.
    assert admin.post(TAKINGS, data={"store": london_id, "day": "2026-06-15", "amount": "1"}).status_code == 303
    response = admin.post(TAKINGS, data={"store": london_id, "day": "2026-06-16", "amount": "1"})
    assert response.status_code == 422
    assert field_error(response, "takings-day") == (
        "That day has not come yet.")


def test_the_service_upserts_and_refuses(app, ctx):
    store = factories.store()
    person = factories.staff("manager")
    dashboard.record_takings(db.session, store=store, day=date(2026, 6, 14), amount_fen=5, staff=person, now=FIXED_NOW)
    dashboard.record_takings(db.session, store=store, day=date(2026, 6, 14), amount_fen=7, staff=person, now=FIXED_NOW)
    assert db.session.scalars(select(StoreTakings.amount_fen)).all() == [7]
    for amount in (0, -1, dashboard.MAX_TAKINGS_FEN + 1):
        with pytest.raises(dashboard.TakingsError) as refused:
            dashboard.record_takings(db.session, store=store, day=date(2026, 6, 14), amount_fen=amount, staff=person,
                                     now=FIXED_NOW)
        assert refused.value.field == "amount"
    assert db.session.scalars(select(StoreTakings.amount_fen)).all() == [7]
