"""The managers' member pages: the list with its search, filters, RFM segments and quick lists, one member's
360° view, and the CSV export.

A manager sees their store's members (registered there, or with a purchase there); another store's member is
a 404. An admin sees every member and may filter by a store. Opening a member and exporting are audited. The
clock is pinned at FIXED_NOW (12:00 on 15 June 2026 in Shanghai) and purchases are made at known times before
it, so each segment's boundaries can be tried to the second.
"""
from __future__ import annotations

import csv
import io
import json
import re
import uuid
from datetime import date, datetime, timedelta

import pytest
from sqlalchemy import func, select

from portal import complaints, returns, segments, spreadsheet
from portal.extensions import db
from portal.models import AuditLog, Member, PointLot, Staff, Store, Tier
from portal.rules import load_rules

from . import factories
from .conftest import FIXED_NOW, UTC
from .helpers import figure, is_full_page, text_of

LIST = "/manage/members"
CSV_URL = "/manage/members.csv"
DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)
LONG_AGO = FIXED_NOW - 400 * DAY  # when the members of these tests registered, unless a test says otherwise


# --- helpers --------------------------------------------------------------------------------------------

def page(member_id: int) -> str:
    return f"{LIST}/{member_id}"


def second_store() -> Store:
    return factories.store("S002", "Second Store")


def make_member(name: str = "王小明", *, registered=LONG_AGO, store_code: str = "S001", bought_ago=(),
                bought_at: str | None = None, phone: str | None = None, **fields) -> Member:
    """A member registered at `registered`, with a ¥10.00 purchase at each of `bought_ago` (timedeltas before
    FIXED_NOW) at `bought_at` (their own store by default). Inside an app context; the caller commits."""
    member = factories.member(name=name, phone=phone, now=registered, store_code=store_code)
    for field_name, value in fields.items():
        setattr(member, field_name, value)
    for ago in sorted(bought_ago, reverse=True):
        factories.purchase(member, 1000, now=FIXED_NOW - ago, store_code=bought_at or store_code)
    db.session.flush()
    return member


def pin_clock(app, moment: datetime = FIXED_NOW) -> None:
    """The pages' clock stops here. Pinned after signing in (a login at a frozen past time looks expired)."""
    app.config["FROZEN_NOW"] = moment


@pytest.fixture
def manager(app, client, login):
    login(client, "manager")
    pin_clock(app)
    return client


@pytest.fixture
def admin(app, client, login):
    login(client, "admin")
    pin_clock(app)
    return client


def listed(response) -> list[int]:
    """The member ids in the list, in their order."""
    return [int(n) for n in re.findall(r'<tr id="member-(\d+)"', response.get_data(as_text=True))]


def segments_shown(response) -> dict[int, str]:
    return {int(n): seg for n, seg in
            re.findall(r'<tr id="member-(\d+)" data-segment="([a-z_]+)"', response.get_data(as_text=True))}


def row_text(response, member_id: int) -> str:
    match = re.search(rf'<tr id="member-{member_id}"[^>]*>(.*?)</tr>', text_of(response), re.S)
    assert match, f"member {member_id} is not listed"
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", match.group(1))).strip()


def count_shown(response) -> str:
    match = re.search(r'<p class="muted" role="status" id="member-count">(.*?)</p>', text_of(response), re.S)
    assert match, "no count on the page"
    return re.sub(r"\s+", " ", match.group(1)).strip()


def section(response, section_id: str) -> str:
    match = re.search(rf'<section class="card" id="{section_id}">(.*?)</section>', text_of(response), re.S)
    assert match, f"no section {section_id}"
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", match.group(1))).strip()


def audit_rows(app, action: str) -> list[AuditLog]:
    with app.app_context():
        rows = list(db.session.scalars(select(AuditLog).where(AuditLog.action == action).order_by(AuditLog.id)))
        db.session.expunge_all()
        return rows


def csv_rows(response) -> list[list[str]]:
    body = response.get_data()
    assert body.startswith(b"\xef\xbb\xbf"), "no byte-order mark"
    return list(csv.reader(io.StringIO(body.decode("utf-8-sig"), newline="")))


def staff_of(app, username: str) -> Staff:
    with app.app_context():
        person = db.session.scalars(select(Staff).where(Staff.username == username)).one()
        db.session.expunge(person)
        return person


# --- access ---------------------------------------------------------------------------------------------

def routes_for(member_id: int) -> list[str]:
    return [LIST, f"{LIST}?show=expiring", CSV_URL, page(member_id), f"{page(member_id)}?more=ledger&before=5"]


def test_cashier_is_refused_everywhere(app, client, login):
    with app.app_context():
        member_id = make_member().id
        db.session.commit()
    login(client, "cashier")
    for path in routes_for(member_id):
        assert client.get(path).status_code == 403, path
        assert client.get(path, htmx=True).status_code == 403, path
    assert audit_rows(app, "members.export") == [] and audit_rows(app, "member.view") == []


def test_anonymous_is_sent_to_sign_in(app, client):
    with app.app_context():
        member_id = make_member().id
        db.session.commit()
    for path in routes_for(member_id):
        response = client.get(path)
        assert response.status_code == 302 and response.headers["Location"].startswith("/login"), path


# --- scope ----------------------------------------------------------------------------------------------

@pytest.fixture
def two_stores(app):
    """Members of S001, of S002, and one of S002 who bought once at S001."""
    with app.app_context():
        second_id = second_store().id
        ours = make_member("Ours", bought_ago=[10 * DAY])
        theirs = make_member("Theirs", store_code="S002", bought_ago=[10 * DAY])
        visitor = make_member("Visitor", store_code="S002", bought_ago=[5 * DAY])
        factories.purchase(visitor, 500, now=FIXED_NOW - 3 * DAY, store_code="S001")
        db.session.commit()
        return {"ours": ours.id, "theirs": theirs.id, "visitor": visitor.id, "second_store": second_id}


def test_manager_sees_their_stores_members_only(manager, two_stores):
    ids = two_stores
    response = manager.get(LIST)
    assert response.status_code == 200 and is_full_page(response)
    assert sorted(listed(response)) == sorted([ids["ours"], ids["visitor"]])
    assert count_shown(response) == "2 members"
    # the store filter is an admin's: a manager asking for another store still gets their own
    assert sorted(listed(manager.get(f"{LIST}?store={ids['second_store']}"))) == sorted([ids["ours"], ids["visitor"]])
    assert 'name="store"' not in text_of(response)
    assert manager.get(page(ids["theirs"])).status_code == 404
    assert manager.get(f"{page(ids['theirs'])}?more=ledger&before=99", htmx=True).status_code == 404
    assert manager.get(page(ids["visitor"])).status_code == 200  # bought here: ours to look after too
    assert manager.get(page(ids["ours"])).status_code == 200
    assert manager.get(page(2**31)).status_code == 404
    assert manager.get(page(999999)).status_code == 404
    rows = csv_rows(manager.get(f"{CSV_URL}?store={ids['second_store']}"))
    assert sorted(row[1] for row in rows[1:]) == ["Ours", "Visitor"]


def test_admin_sees_everyone_and_filters_by_store(admin, two_stores):
    ids = two_stores
    assert sorted(listed(admin.get(LIST))) == sorted([ids["ours"], ids["theirs"], ids["visitor"]])
    assert 'name="store"' in text_of(admin.get(LIST))
    response = admin.get(f"{LIST}?store={ids['second_store']}")
    assert sorted(listed(response)) == sorted([ids["theirs"], ids["visitor"]])
    assert "Second Store" in row_text(response, ids["theirs"])
    store_one = admin.get(f"{LIST}?store=1")
    assert sorted(listed(store_one)) == sorted([ids["ours"], ids["visitor"]])
    assert admin.get(page(ids["theirs"])).status_code == 200
    assert sorted(listed(admin.get(f"{LIST}?store=nonsense"))) == sorted(ids[k] for k in ("ours", "theirs", "visitor"))


# --- segments -------------------------------------------------------------------------------------------

SEGMENT_CASES = {
    # name: (registered, purchases before FIXED_NOW, expected segment)
    "champion": (LONG_AGO, [200 * DAY, 100 * DAY, 50 * DAY, 10 * DAY], "champions"),
    "champion_edge": (LONG_AGO, [300 * DAY, 200 * DAY, 100 * DAY, 30 * DAY - SECOND], "champions"),
    "champion_30_days_ago": (LONG_AGO, [300 * DAY, 200 * DAY, 100 * DAY, 30 * DAY], "loyal"),
    "four_but_one_old": (LONG_AGO, [365 * DAY, 200 * DAY, 100 * DAY, 10 * DAY], "loyal"),
    "loyal": (LONG_AGO, [120 * DAY, 60 * DAY], "loyal"),
    "loyal_edge": (LONG_AGO, [120 * DAY, 90 * DAY - SECOND], "loyal"),
    "at_risk_90_days": (LONG_AGO, [120 * DAY, 90 * DAY], "at_risk"),
    "at_risk_old": (LONG_AGO, [390 * DAY, 380 * DAY], "at_risk"),
    "new": (FIXED_NOW - 5 * DAY, [], "new"),
    "new_with_a_purchase": (FIXED_NOW - 5 * DAY, [2 * DAY], "new"),
    "new_edge": (FIXED_NOW - 30 * DAY + SECOND, [], "new"),
    "registered_30_days_ago": (FIXED_NOW - 30 * DAY, [], "hibernating"),
    "never_bought": (LONG_AGO, [], "hibernating"),
    "one_long_ago": (LONG_AGO, [100 * DAY], "hibernating"),
    "one_at_90_days": (LONG_AGO, [90 * DAY], "hibernating"),
    "occasional": (LONG_AGO, [20 * DAY], "occasional"),
    "occasional_edge": (LONG_AGO, [90 * DAY - SECOND], "occasional"),
    "one_recent_one_older_than_a_year": (LONG_AGO, [390 * DAY, 20 * DAY], "occasional"),
}


@pytest.fixture
def segment_members(app):
    with app.app_context():
        made = {name: make_member(name, registered=registered, bought_ago=ago).id
                for name, (registered, ago, _segment) in SEGMENT_CASES.items()}
        db.session.commit()
        return made


def test_each_member_is_in_the_segment_its_purchases_put_it_in(manager, segment_members):
    shown = segments_shown(manager.get(LIST))
    assert {name: shown[member_id] for name, member_id in segment_members.items()} == {
        name: expected for name, (_r, _a, expected) in SEGMENT_CASES.items()}


@pytest.mark.parametrize("segment", segments.SEGMENTS)
def test_segment_filter_lists_exactly_that_segment(manager, segment_members, segment):
    expected = sorted(segment_members[name] for name, case in SEGMENT_CASES.items() if case[2] == segment)
    response = manager.get(f"{LIST}?segment={segment}")
    assert sorted(listed(response)) == expected
    assert set(segments_shown(response).values()) <= {segment}


def test_the_segment_is_computed_by_the_database_and_matches_the_detail(app, manager, segment_members):
    with app.app_context():
        for name, member_id in segment_members.items():
            stats = segments.member_stats(db.session, member_id, now=FIXED_NOW)
            assert stats.segment == SEGMENT_CASES[name][2], name
    response = manager.get(page(segment_members["at_risk_90_days"]))
    assert 'id="member-segment"' in response.get_data(as_text=True)
    assert re.search(r'id="member-segment"[^>]*>At risk<', text_of(response))
    assert figure(response, "purchases-year") == "2"
    assert figure(response, "net-spend") == "¥20.00"


def test_frequency_and_spend_net_of_refunds(app, manager):
    with app.app_context():
        member = make_member("Refunded", bought_ago=[400 * DAY, 10 * DAY])
        purchase = factories.purchase(member, 50000, now=FIXED_NOW - 5 * DAY).purchase
        returns.record_return(db.session, purchase_id=purchase.id, store=factories.store(), staff=None,
                              returned_gross_fen=20000, idempotency_key=uuid.uuid4().hex,
                              rules=load_rules(db.session), now=FIXED_NOW - 4 * DAY)
        db.session.commit()
        member_id = member.id
    response = manager.get(page(member_id))
    assert figure(response, "purchases-year") == "2"
    assert figure(response, "purchases-ever") == "3"
    assert figure(response, "net-spend") == "¥310.00"  # ¥10.00 + ¥500.00 − ¥200.00 refunded


def test_at_risk_list_is_products_definition_most_recently_lapsed_first(manager, segment_members):
    response = manager.get(f"{LIST}?show=at_risk")
    assert listed(response) == [segment_members["at_risk_90_days"], segment_members["at_risk_old"]]
    assert "bought at least twice but not in the last 90 days" in text_of(response)


# --- filters and search ---------------------------------------------------------------------------------

@pytest.fixture
def people(app):
    with app.app_context():
        made = {
            "alice": make_member("Alice Wong", phone="+8613812345678", marketing_consent=True,
                                 marketing_consent_at=LONG_AGO),
            "alan": make_member("alan Chen", phone="+8613900001111"),
            "wang": make_member("王小明", phone="+8613712349999", marketing_consent=True,
                                marketing_consent_at=LONG_AGO),
            "gold": make_member("Goldie", phone="+8613600002222"),
        }
        made["gold"].tier = db.session.scalars(select(Tier).where(Tier.code == "gold")).one()
        erased = make_member("Alice Erased", phone="+8613500003333")
        erased.deleted_at = FIXED_NOW - DAY
        erased.name = erased.name_key = erased.phone = erased.phone_last4 = None
        db.session.commit()
        result = {name: member.id for name, member in made.items()}
        result["erased"] = erased.id
        result["cards"] = {name: member.card_number for name, member in made.items()}
        return result


@pytest.mark.parametrize("query, expected", [
    ("ali", ["alice"]),
    ("AL", ["alice", "alan"]),
    ("Alan chen", ["alan"]),
    ("王", ["wang"]),
    ("5678", ["alice"]),
    ("9999", ["wang"]),
    ("13812345678", ["alice"]),
    ("+86 138 1234 5678", ["alice"]),
    ("138-1234-5678", ["alice"]),
    ("13812345670", []),
    ("nobody", []),
    ("", ["alice", "alan", "wang", "gold"]),
])
def test_search(manager, people, query, expected):
    response = manager.get(LIST, query_string={"q": query})
    assert sorted(listed(response)) == sorted(people[name] for name in expected)


def test_search_by_card_number_whole_or_its_start(manager, people):
    card = people["cards"]["wang"]
    assert listed(manager.get(LIST, query_string={"q": card})) == [people["wang"]]
    assert people["wang"] in listed(manager.get(LIST, query_string={"q": card[:7]}))
    assert listed(manager.get(LIST, query_string={"q": card[:9] + str((int(card[9]) + 1) % 10)})) == []


@pytest.mark.parametrize("query, expected", [
    ({"tier": "gold"}, ["gold"]),
    ({"tier": "member"}, ["alice", "alan", "wang"]),
    ({"consent": "yes"}, ["alice", "wang"]),
    ({"consent": "no"}, ["alan", "gold"]),
    ({"consent": "maybe"}, ["alice", "alan", "wang", "gold"]),
    ({"consent": "yes", "q": "al"}, ["alice"]),
    ({"segment": "hibernating", "consent": "no"}, ["alan", "gold"]),
    ({"segment": "champions"}, []),
    ({"segment": "bogus"}, ["alice", "alan", "wang", "gold"]),
])
def test_filters(app, manager, people, query, expected):
    if "tier" in query:
        with app.app_context():
            query = dict(query, tier=db.session.scalars(select(Tier.id).where(Tier.code == query["tier"])).one())
    assert sorted(listed(manager.get(LIST, query_string=query))) == sorted(people[name] for name in expected)


def test_list_shows_masked_phone_tier_balance_consent_and_last_purchase(app, manager, people):
    with app.app_context():
        factories.purchase(db.session.get(Member, people["alice"]), 12345, now=FIXED_NOW - 2 * DAY)
        db.session.commit()
    text = row_text(manager.get(LIST), people["alice"])
    assert people["cards"]["alice"] in text and "Alice Wong" in text
    # The list masks phones: a manager sees the whole number on the member's page, whose every opening is audited.
    assert "138****5678" in text and "13812345678" not in text
    assert "Member" in text and "123" in text and "Yes" in text
    assert "6/13/26" in text  # 13 June, 12:00 in Shanghai
    assert "Occasional" in text


def test_erased_members_are_not_listed_but_their_page_is_anonymised(app, manager, people):
    assert people["erased"] not in listed(manager.get(LIST))
    response = manager.get(page(people["erased"]))
    assert response.status_code == 200
    body = text_of(response)
    assert "Erased member" in body and "deleted their account" in body
    assert 'id="profile"' not in body and 'id="consents"' not in body
    assert "Alice Erased" not in body and "13500003333" not in body


def test_paging_fifty_to_a_page(app, manager):
    with app.app_context():
        ids = [make_member(f"Member {n:02d}").id for n in range(55)]
        db.session.commit()
    first = manager.get(LIST)
    assert count_shown(first) == "55 members · page 1 of 2"
    assert listed(first) == sorted(ids, reverse=True)[:50]
    assert 'rel="next" href="/manage/members?page=2"' in first.get_data(as_text=True)
    second = manager.get(f"{LIST}?page=2")
    assert listed(second) == sorted(ids, reverse=True)[50:]
    assert 'rel="prev"' in second.get_data(as_text=True) and 'rel="next"' not in second.get_data(as_text=True)
    assert listed(manager.get(f"{LIST}?page=99")) == listed(second)  # past the end: the last page
    assert listed(manager.get(f"{LIST}?page=abc")) == listed(first)
    filtered = manager.get(f"{LIST}?q=Member+0&page=1")
    assert count_shown(filtered) == "10 members"
    assert 'rel="next"' not in filtered.get_data(as_text=True)


def test_the_pager_keeps_the_filters(app, manager, monkeypatch):
    monkeypatch.setattr(segments, "PAGE_SIZE", 2)
    with app.app_context():
        for n in range(5):
            make_member(f"Zed {n}")
        db.session.commit()
    body = manager.get(f"{LIST}?q=Zed&consent=no&page=2").get_data(as_text=True)
    assert "/manage/members?q=Zed&amp;consent=no&amp;page=3" in body
    assert "/manage/members?q=Zed&amp;consent=no&amp;page=1" in body
    assert 'href="/manage/members.csv?q=Zed&amp;consent=no"' in body


def test_htmx_gets_the_results_block_and_a_plain_request_the_page(manager, people):
    plain = manager.get(f"{LIST}?consent=yes")
    assert is_full_page(plain) and 'hx-push-url="true"' in plain.get_data(as_text=True)
    assert 'value="yes" selected' in plain.get_data(as_text=True) or 'selected value="yes"' in plain.get_data(as_text=True)
    fragment = manager.get(f"{LIST}?consent=yes", htmx=True)
    assert fragment.status_code == 200 and not is_full_page(fragment)
    assert "<form" not in fragment.get_data(as_text=True)
    assert sorted(listed(fragment)) == sorted(listed(plain)) == sorted([people["alice"], people["wang"]])
    assert count_shown(fragment) == "2 members"
    for response in (plain, fragment):
        assert "HX-Request" in response.headers["Vary"]


# --- quick lists ----------------------------------------------------------------------------------------

def test_birthdays_this_month_in_the_stores_zone(app, client, login):
    """At 01:00 on 1 July in Shanghai it is still 30 June in UTC: the list is July's."""
    with app.app_context():
        july = make_member("July", birthday=date(1990, 7, 15))
        july_first = make_member("July First", birthday=date(2001, 7, 1))
        june = make_member("June", birthday=date(1985, 6, 30))
        make_member("No birthday")
        db.session.commit()
        ids = (july.id, july_first.id, june.id)
    login(client, "manager")
    pin_clock(app, datetime(2026, 6, 30, 17, 0, tzinfo=UTC))
    response = client.get(f"{LIST}?show=birthdays")
    assert listed(response) == [ids[1], ids[0]]  # by day of the month
    assert "birthday is in July" in text_of(response)
    pin_clock(app, datetime(2026, 6, 30, 15, 59, tzinfo=UTC))  # 23:59 on 30 June in Shanghai
    assert listed(client.get(f"{LIST}?show=birthdays")) == [ids[2]]


def test_points_expiring_in_thirty_days(app, manager):
    """Lots expire at the end of a local day 730 days after they were earned; the list looks 30 days ahead and
    shows what would expire, soonest first."""
    with app.app_context():
        soon = make_member("Soon")
        factories.purchase(soon, 30000, now=FIXED_NOW - 720 * DAY)  # expires in 10 days
        factories.purchase(soon, 5000, now=FIXED_NOW - 710 * DAY)  # in 20
        factories.purchase(soon, 10000, now=FIXED_NOW - 690 * DAY)  # in 40: not in the 30 days
        later = make_member("Later")
        factories.purchase(later, 30000, now=FIXED_NOW - 690 * DAY)  # in 40: not yet
        spent = make_member("Spent")
        factories.purchase(spent, 30000, now=FIXED_NOW - 725 * DAY)
        factories.purchase(spent, 40000, points=300, now=FIXED_NOW - DAY)  # used them all
        edge = make_member("Edge")
        factories.purchase(edge, 1000, now=FIXED_NOW - 600 * DAY)
        past_edge = make_member("Past edge")
        factories.purchase(past_edge, 1000, now=FIXED_NOW - 600 * DAY)
        first_soon = make_member("Sooner")
        factories.purchase(first_soon, 700, now=FIXED_NOW - 725 * DAY)
        db.session.flush()
        lots = {m.id: db.session.scalars(select(PointLot).where(PointLot.member_id == m.id)).one()
                for m in (edge, past_edge)}
        lots[edge.id].expires_at = FIXED_NOW + 30 * DAY
        lots[past_edge.id].expires_at = FIXED_NOW + 30 * DAY + SECOND
        db.session.commit()
        ids = {m.name: m.id for m in (soon, later, spent, edge, past_edge, first_soon)}
    response = manager.get(f"{LIST}?show=expiring")
    assert listed(response) == [ids["Sooner"], ids["Soon"], ids["Edge"]]
    assert " 450 350 " in row_text(response, ids["Soon"])  # the balance, then what expires
    assert re.search(r'<td class="num" data-expiring>350</td>', response.get_data(as_text=True))
    assert "Jun 25, 2026" in row_text(response, ids["Soon"])  # usable to the end of 25 June, Shanghai time
    assert count_shown(response) == "3 members"
    assert figure(manager.get(page(ids["Soon"])), "expiring") == "350"


# --- one member -----------------------------------------------------------------------------------------

@pytest.fixture
def history(app):
    """A member with purchases, a return that took them back down a tier, a complaint at each store, a rated
    visit with its follow-up, and a goodwill bonus."""
    with app.app_context():
        second_store()
        member = make_member("Li Lei", phone="+8613811112222", email="li@example.com",
                             birthday=date(1990, 3, 4), marketing_consent=True,
                             marketing_consent_at=LONG_AGO + DAY, activated_at=LONG_AGO + 2 * DAY)
        small = factories.purchase(member, 38888, now=FIXED_NOW - 30 * DAY).purchase
        big = factories.purchase(member, 120000, now=FIXED_NOW - 20 * DAY, store_code="S002").purchase
        returns.record_return(db.session, purchase_id=big.id, store=factories.store("S001"), staff=None,
                              returned_gross_fen=None, idempotency_key=uuid.uuid4().hex,
                              rules=load_rules(db.session), now=FIXED_NOW - 19 * DAY)
        ours = complaints.file_complaint(db.session, store=factories.store("S001"), category="product_quality",
                                         severity="normal", description="Sour milk", channel="counter",
                                         member=member, now=FIXED_NOW - 10 * DAY)
        theirs = complaints.file_complaint(db.session, store=factories.store("S002"), category="service_attitude",
                                           severity="high", description="Rude", channel="phone", member=member,
                                           now=FIXED_NOW - 9 * DAY)
        visit = complaints.rate_visit(db.session, member=member, purchase=small, rating=2, comment="Slow queue",
                                      now=FIXED_NOW - 8 * DAY)
        db.session.commit()
        return {"member": member.id, "card": member.card_number, "small": small.id, "big": big.id,
                "ours": ours.id, "theirs": theirs.id, "follow_up": visit.complaint_id}


def test_member_page_shows_everything(manager, history):
    response = manager.get(page(history["member"]))
    assert response.status_code == 200 and is_full_page(response)
    profile = section(response, "profile")
    assert "13811112222" in profile and "li@example.com" in profile and "March 4, 1990" in profile
    assert history["card"] in profile and "Activated on" in profile and "Test Store" in profile
    consents = section(response, "consents")
    assert "Version 2026-01, agreed" in consents and "Agreed" in consents
    assert figure(response, "balance") == "388"
    ledger = section(response, "ledger")
    for words in ("Points for a purchase at Test Store", "Points for a purchase at Second Store",
                  "Points taken back for a return at Test Store"):
        assert words in ledger
    purchases = section(response, "purchases")
    assert "¥388.88" in purchases and "¥1,200.00" in purchases and "Second Store" in purchases
    assert "Returned ¥1,200.00 at Test Store" in purchases and "refund ¥1,200.00" in purchases
    assert "¥1,200.00" in section(response, "returns")
    tiers = section(response, "tier-history")
    assert "Member → Silver" in tiers and "Reached with a purchase" in tiers
    assert "Silver → Member" in tiers and "After a return" in tiers
    complaints_text = section(response, "complaints")
    assert f"#{history['ours']}" in complaints_text and f"#{history['theirs']}" in complaints_text
    body = response.get_data(as_text=True)
    # our store's complaints link to the queue's page; another store's would be a 404 there, so no link
    assert f'href="/manage/complaints/{history["ours"]}"' in body
    assert f'href="/manage/complaints/{history["theirs"]}"' not in body
    visits = section(response, "visit-ratings")
    assert "2 out of 5" in visits and "Slow queue" in visits and f"#{history['follow_up']}" in visits
    assert figure(response, "purchases-ever") == "2"
    assert figure(response, "net-spend") == "¥388.88"


def test_admin_gets_links_to_every_stores_complaints(admin, history):
    body = admin.get(page(history["member"])).get_data(as_text=True)
    assert f'href="/manage/complaints/{history["theirs"]}"' in body
    assert admin.get(f"/manage/complaints/{history['theirs']}").status_code == 200


def test_opening_a_member_is_audited_with_who_where_and_from_where(app, client, login, history):
    username = login(client, "manager")
    pin_clock(app)
    assert audit_rows(app, "member.view") == []
    client.get(page(history["member"]), environ_base={"REMOTE_ADDR": "10.1.2.3"})
    client.get(page(history["member"]))
    rows = audit_rows(app, "member.view")
    staff = staff_of(app, username)
    assert [(r.target, r.staff_id, r.store_id, r.ip, r.created_at) for r in rows] == [
        (f"member:{history['member']}", staff.id, staff.store_id, "10.1.2.3", FIXED_NOW),
        (f"member:{history['member']}", staff.id, staff.store_id, "127.0.0.1", FIXED_NOW),
    ]


def test_a_refused_member_page_is_not_audited(app, manager, two_stores):
    manager.get(page(two_stores["theirs"]))
    assert audit_rows(app, "member.view") == []


def test_ledger_and_purchases_page_with_show_more(app, manager, monkeypatch):
    monkeypatch.setattr(segments, "DETAIL_PAGE_SIZE", 2)
    with app.app_context():
        member = make_member("Busy", bought_ago=[5 * DAY, 4 * DAY, 3 * DAY, 2 * DAY, DAY])
        db.session.commit()
        member_id = member.id
    response = manager.get(page(member_id))
    body = response.get_data(as_text=True)
    entries = [int(n) for n in re.findall(r'data-entry="(\d+)"', body)]
    assert len(entries) == 2 and entries == sorted(entries, reverse=True)
    more = re.search(r'href="(/manage/members/\d+\?more=ledger&amp;before=(\d+))"', body)
    assert more and int(more.group(2)) == entries[-1]
    url = more.group(1).replace("&amp;", "&")
    views = len(audit_rows(app, "member.view"))
    fragment = manager.get(url, htmx=True)
    assert fragment.status_code == 200 and not is_full_page(fragment)
    next_entries = [int(n) for n in re.findall(r'data-entry="(\d+)"', fragment.get_data(as_text=True))]
    assert len(next_entries) == 2 and max(next_entries) < min(entries)
    assert "Show more" in fragment.get_data(as_text=True)
    assert len(audit_rows(app, "member.view")) == views  # only opening the page is a view
    plain = manager.get(url)  # without JavaScript: the whole page, from there on
    assert is_full_page(plain)
    assert [int(n) for n in re.findall(r'data-entry="(\d+)"', plain.get_data(as_text=True))] == next_entries
    assert len(audit_rows(app, "member.view")) == views + 1
    purchases = [int(n) for n in re.findall(r'<tr data-purchase="(\d+)"', body)]
    more = re.search(r'href="(/manage/members/\d+\?more=purchases&amp;before=(\d+))"', body)
    fragment = manager.get(more.group(1).replace("&amp;", "&"), htmx=True)
    later = [int(n) for n in re.findall(r'<tr data-purchase="(\d+)"', fragment.get_data(as_text=True))]
    assert len(later) == 2 and max(later) < min(purchases)


# --- the CSV export -------------------------------------------------------------------------------------

NASTY_NAMES = ['=HYPERLINK("http://evil.example","click")', "+1", "-2", "@SUM(A1)", "王小明", "Plain"]


@pytest.fixture
def nasty(app):
    with app.app_context():
        made = {name: make_member(name, bought_ago=[3 * DAY] if name == "Plain" else []).id for name in NASTY_NAMES}
        tabbed = make_member("Tab")
        tabbed.name = "\tTabbed"  # as an import might have left it (the till strips control characters)
        carriage = make_member("CR")
        carriage.name = "\rReturned"
        db.session.commit()
        made["\tTabbed"], made["\rReturned"] = tabbed.id, carriage.id
        return made


def test_csv_neutralises_formulas_keeps_chinese_and_has_a_bom(app, manager, nasty):
    response = manager.get(CSV_URL)
    assert response.status_code == 200
    assert response.mimetype == "text/csv" and response.mimetype_params.get("charset") == "utf-8"
    assert response.headers["Content-Disposition"] == 'attachment; filename="members-20260615.csv"'
    assert response.is_streamed
    rows = csv_rows(response)
    assert rows[0][:4] == ["Card number", "Name", "Phone", "E-mail"]
    names = sorted(row[1] for row in rows[1:])
    assert names == sorted([
        "'=HYPERLINK(\"http://evil.example\",\"click\")", "'+1", "'-2", "'@SUM(A1)", "王小明", "Plain",
        "'\tTabbed", "'\rReturned",
    ])
    for row in rows[1:]:
        for cell in row:
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), row
    plain = next(row for row in rows if row[1] == "Plain")
    assert plain[6] == "10" and plain[7] == "2026-06-12 12:00" and plain[8] == "1" and plain[9] == "10.00"
    assert plain[10] == "Occasional" and plain[11] == "No" and plain[12] == "Test Store"
    assert plain[13] == "2025-05-11"


def test_csv_cells_are_neutralised_one_by_one():
    assert [spreadsheet.neutralise(value) for value in ("=1+1", "+86", "-354", "@x", "\tx", "\rx", "a=b", "", None, 5,
                                                   -5)] == \
        ["'=1+1", "'+86", "'-354", "'@x", "'\tx", "'\rx", "a=b", "", "", "5", "'-5"]


@pytest.mark.parametrize("query, names", [
    ({"q": "王"}, ["王小明"]),
    ({"segment": "occasional"}, ["Plain"]),
    ({"segment": "hibernating", "q": "Plain"}, []),
])
def test_csv_follows_the_filters_and_is_audited(app, client, login, nasty, query, names):
    username = login(client, "manager")
    pin_clock(app)
    response = client.get(CSV_URL, query_string=query, environ_base={"REMOTE_ADDR": "10.9.9.9"})
    rows = csv_rows(response)
    assert [row[1] for row in rows[1:]] == names
    staff = staff_of(app, username)
    (row,) = audit_rows(app, "members.export")
    assert (row.staff_id, row.store_id, row.ip, row.target, row.created_at) == \
        (staff.id, staff.store_id, "10.9.9.9", "members", FIXED_NOW)
    after = json.loads(row.after)
    assert after["rows"] == len(names)
    assert after["filters"]["search"] == query.get("q") and after["filters"]["segment"] == query.get("segment")
    assert after["filters"]["store_ids"] == [staff.store_id]


def test_csv_of_the_expiring_list_says_what_expires(app, manager):
    with app.app_context():
        soon = make_member("Soon")
        factories.purchase(soon, 30000, now=FIXED_NOW - 720 * DAY)
        make_member("Nothing to expire", bought_ago=[DAY])
        db.session.commit()
    rows = csv_rows(manager.get(f"{CSV_URL}?show=expiring"))
    assert rows[0][-2:] == ["Points expiring in 30 days", "Use the first of them by"]
    assert [(row[1], row[-2], row[-1]) for row in rows[1:]] == [("Soon", "300", "2026-06-25")]


def test_a_large_export_is_read_in_batches(app, manager, monkeypatch):
    with app.app_context():
        for n in range(7):
            make_member(f"Bulk {n}")
        db.session.commit()
    original = segments.export_members
    monkeypatch.setattr(segments, "export_members",
                        lambda *args, **kwargs: original(*args, **dict(kwargs, batch=2)))
    monkeypatch.setattr(segments, "CSV_CHUNK", 1)
    response = manager.get(CSV_URL)
    chunks = list(response.response)
    assert len(chunks) == 8  # the header, then one piece per member
    body = b"".join(chunk if isinstance(chunk, bytes) else chunk.encode() for chunk in chunks)
    assert body.startswith(b"\xef\xbb\xbf")
    names = [row[1] for row in csv.reader(io.StringIO(body.decode("utf-8-sig")))]
    assert names[0] == "Name" and sorted(names[1:]) == [f"Bulk {n}" for n in range(7)]


def test_export_link_carries_the_filters(manager, people):
    fragment = manager.get(f"{LIST}?consent=yes&segment=hibernating", htmx=True).get_data(as_text=True)
    assert 'href="/manage/members.csv?segment=hibernating&amp;consent=yes"' in fragment


def test_admin_export_of_one_store_is_audited_with_that_store(app, admin, two_stores):
    rows = csv_rows(admin.get(f"{CSV_URL}?store={two_stores['second_store']}"))
    assert sorted(row[1] for row in rows[1:]) == ["Theirs", "Visitor"]
    (row,) = audit_rows(app, "members.export")
    assert row.store_id == two_stores["second_store"]
    assert json.loads(row.after)["filters"]["store_ids"] == [two_stores["second_store"]]


def test_audit_counts_match_rows(app, manager, people):
    csv_rows(manager.get(CSV_URL))
    with app.app_context():
        total = db.session.scalar(select(func.count()).select_from(Member).where(Member.deleted_at.is_(None)))
    (row,) = audit_rows(app, "members.export")
    assert json.loads(row.after)["rows"] == total == 4


def test_the_pages_and_the_export_in_chinese(manager, history):
    zh = {"Accept-Language": "zh-CN,zh;q=0.9"}
    listing = manager.get(LIST, headers=zh)
    assert listing.status_code == 200 and "普通会员" in text_of(listing) and "Li Lei" in text_of(listing)
    assert manager.get(f"{LIST}?show=birthdays", headers=zh).status_code == 200
    assert manager.get(page(history["member"]), headers=zh).status_code == 200
    rows = csv_rows(manager.get(CSV_URL, headers=zh))
    assert rows[0][0] == "卡号" and rows[1][5] == "普通会员"
