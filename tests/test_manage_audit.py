"""The audit log viewer: who did what, when, where, with the before and after, filtered and paged.

Managers see their own store's entries (made there or by its staff); admins see every entry and may pick a
store. Invalid filter values are ignored; a date that cannot be read is pointed out beside its field. Every
test runs on SQLite and on PostgreSQL.
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta
from html import unescape
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from portal import audit
from portal.extensions import db
from portal.models import Store

from . import factories
from .conftest import FIXED_NOW
from .helpers import field_error, is_full_page, text_of

PAGE = "/manage/audit"
SHANGHAI = ZoneInfo("Asia/Shanghai")
M = timedelta(minutes=1)


def local(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 6, day, hour, minute, tzinfo=SHANGHAI)


def record(action: str, **kwargs) -> int:
    """An audit entry written through the service; its id."""
    entry = audit.record(db.session, action, **kwargs)
    db.session.flush()
    return entry.id


def store_id(code: str) -> int:
    return db.session.scalars(select(Store.id).where(Store.code == code)).one()


def shown(response) -> list[int]:
    """The ids of the entries listed, in order, but for the sign-ins of the test's own logins."""
    return [int(n) for n, action in re.findall(r'<tr id="audit-(\d+)" data-action="([^"]+)"',
                                               response.get_data(as_text=True)) if not action.startswith("auth.")]


def row(response, entry_id: int) -> str:
    match = re.search(rf'<tr id="audit-{entry_id}"[^>]*>(.*?)</tr>', response.get_data(as_text=True), re.S)
    assert match, f"entry {entry_id} is not shown"
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", match.group(1)))).strip()


@pytest.fixture
def entries(app):
    """A small log across two stores (ids by name).

    ours_rule     rules.set by our manager (no store on the entry: shown to us as made by our staff)
    ours_adjust   points.adjust at Test Store by our manager, 23:50 on 14 June local
    ours_note     complaint.note at Test Store, 00:10 on 15 June local
    theirs        complaint.opened at Second Store by their manager
    their_rule    rules.set by their manager (no store)
    member_self   member.profile by a member (no staff, no store)
    odd           an action the viewer has no words for, at Test Store
    """
    with app.app_context():
        factories.store("S002", "Second Store")
        ours = factories.staff("manager")
        ours.name = "Olga Ours"
        theirs = factories.staff("manager", store_code="S002")
        theirs.name = "Theo Theirs"
        s1, s2 = store_id("S001"), store_id("S002")

        def record(action, at, **kwargs):
            return audit.record(db.session, action, at=at, **kwargs)

        made = {
            "ours_rule": record("rules.set", local(14, 9), staff_id=ours.id, target="rule:expiry_days",
                                before={"expiry_days": 730}, after={"expiry_days": 365}),
            "ours_adjust": record("points.adjust", local(14, 23, 50), staff_id=ours.id, store_id=s1,
                                  target="member:1234567897", ip="10.0.0.7", before={"balance": 0},
                                  after={"balance": 500, "points": 500, "reason": "lost receipt"}),
            "ours_note": record("complaint.note", local(15, 0, 10), staff_id=ours.id, store_id=s1,
                                target="complaint:7", after={"status": "open", "text": "Called back"}),
            "theirs": record("complaint.opened", local(14, 10), staff_id=theirs.id, store_id=s2,
                             target="complaint:8", after={"status": "open"}),
            "their_rule": record("rules.set", local(14, 11), staff_id=theirs.id, target="rule:referral_bonus",
                                 before={"referral_bonus": 200}, after={"referral_bonus": 300}),
            "member_self": record("member.profile", local(14, 12), target="member:3",
                                  before={"name": "A"}, after={"name": "B"}),
            "odd": record("weird.thing", local(14, 13), staff_id=ours.id, store_id=s1, target="X_100%"),
        }
        db.session.commit()
        made = {name: entry.id for name, entry in made.items()}
        made["ours_staff"], made["their_staff"] = ours.id, theirs.id
        return made


def newest_first(entries, *names) -> list[int]:
    return [entries[name] for name in names]


# --- access and scope -----------------------------------------------------------------------------------

def test_a_cashier_is_refused(app, client, login):
    login(client, "cashier")
    for query in ("", "?action=rules.set", "?before=3"):
        assert client.get(PAGE + query).status_code == 403
        assert client.get(PAGE + query, htmx=True).status_code == 403


def test_anonymous_is_sent_to_sign_in(client):
    response = client.get(PAGE)
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")


def test_a_manager_sees_their_stores_entries_and_their_staffs(app, client, login, entries):
    login(client, "manager")
    response = client.get(PAGE)
    assert response.status_code == 200 and is_full_page(response)
    assert shown(response) == newest_first(entries, "ours_note", "ours_adjust", "odd", "ours_rule")
    assert "Theo Theirs" not in text_of(response) and 'name="store"' not in text_of(response)
    with app.app_context():
        second = store_id("S002")
    assert shown(client.get(f"{PAGE}?store={second}")) == shown(response)  # not theirs to pick


def test_an_admin_sees_every_entry_and_can_pick_a_store(app, client, login, entries):
    login(client, "admin")
    response = client.get(PAGE)
    assert shown(response)[:7] == newest_first(entries, "ours_note", "ours_adjust", "odd", "member_self",
                                               "their_rule", "theirs", "ours_rule")
    with app.app_context():
        second = store_id("S002")
    assert shown(client.get(f"{PAGE}?store={second}")) == newest_first(entries, "their_rule", "theirs")


# --- what an entry says ---------------------------------------------------------------------------------

def test_an_entry_says_when_who_where_what_and_the_change(app, client, login, entries):
    login(client, "manager")
    response = client.get(PAGE)
    adjust = row(response, entries["ours_adjust"])
    assert "11:50 PM" in adjust and "6/14/26" in adjust  # store time, not UTC (15:50)
    assert "Olga Ours" in adjust and "Test Store" in adjust and "10.0.0.7" in adjust
    assert "Adjusted a member's points" in adjust and "member:1234567897" in adjust
    assert "balance : 0 → 500" in adjust and "points : 500" in adjust and "reason : lost receipt" in adjust
    rule = row(response, entries["ours_rule"])
    assert "Changed a rule" in rule and "expiry_days : 730 → 365" in rule
    assert "weird.thing" in row(response, entries["odd"])  # no words for it: its code
    assert 'href="/manage/complaints/7"' in response.get_data(as_text=True)


def test_who_is_the_member_or_the_system_when_no_staff_member_did_it(app, client, login, entries):
    with app.app_context():
        cli_entry = record("rules.set", at=local(14, 14), target="rule:guardian_age",
                           before={"guardian_age": 14}, after={"guardian_age": 16})
        reopened = record("complaint.reopened", at=local(14, 15), store_id=store_id("S001"), target="complaint:7",
                          after={"status": "open", "member_id": 3})
        db.session.commit()
    login(client, "admin")
    response = client.get(PAGE)
    assert "The member" in row(response, entries["member_self"])
    assert "The member" in row(response, reopened)
    assert "No staff member: a register, the command line or a daily job" in row(response, cli_entry)


def test_hostile_values_are_escaped(app, client, login):
    with app.app_context():
        hostile = record("staff.create", at=local(14, 9), store_id=store_id("S001"),
                         target="<script>alert(1)</script>", before={"name": "<b>old</b>"},
                         after={"name": "<script>alert(2)</script>", "<img src=x>": "y"}, ip="<i>1</i>")
        db.session.commit()
    login(client, "manager")
    for response in (client.get(PAGE), client.get(PAGE, htmx=True),
                     client.get(PAGE + "?target=%3Cscript%3E")):
        body = response.get_data(as_text=True)
        assert shown(response) == [hostile]
        assert "<script>" not in body and "<img" not in body and "<b>old" not in body and "<i>1" not in body
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
        assert "&lt;script&gt;alert(2)&lt;/script&gt;" in body


# --- filters --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("query", "expected"), [
    ("action=rules.set", ["ours_rule"]),
    ("action=complaint.note", ["ours_note"]),
    ("action=complaint.*", ["ours_note"]),
    ("action=staff.create", []),
    ("target=MEMBER:1234", ["ours_adjust"]),
    ("target=x_100%25", ["odd"]),
    ("target=rule_expiry", []),  # the underscore is a character, not a wildcard (rule:expiry_days stays out)
    ("date_to=2026-06-14", ["ours_adjust", "odd", "ours_rule"]),  # 23:50 local on the 14th is the 14th
    ("date_from=2026-06-15", ["ours_note"]),  # 00:10 local on the 15th (still the 14th in UTC)
    ("date_from=2026-06-14&date_to=2026-06-14", ["ours_adjust", "odd", "ours_rule"]),
    ("date_from=2026-06-16", []),
    ("action=rules.set&target=expiry", ["ours_rule"]),
])
def test_each_filter(client, login, entries, query, expected):
    login(client, "manager")
    assert shown(client.get(f"{PAGE}?{query}")) == [entries[name] for name in expected]


def test_the_staff_filter(app, client, login, entries):
    login(client, "admin")
    assert shown(client.get(f"{PAGE}?staff={entries['their_staff']}")) == newest_first(entries, "their_rule",
                                                                                         "theirs")
    page = client.get(PAGE).get_data(as_text=True)
    assert "Theo Theirs" in page and "Olga Ours" in page  # both are choices


def test_the_action_choices_are_the_actions_present_with_their_groups(client, login, entries):
    login(client, "admin")
    select_html = re.search(r'<select[^>]*name="action".*?</select>', client.get(PAGE).get_data(as_text=True),
                            re.S).group(0)
    values = re.findall(r'<option[^>]*value="([^"]*)"', select_html)
    assert values == ["", "complaint.*", "auth.login", "complaint.note", "complaint.opened", "member.profile",
                      "points.adjust", "rules.set", "weird.thing"]
    assert "Changed a rule" in select_html


@pytest.mark.parametrize("query", [
    "action=%3Cscript%3E", "action=", "action=RULES.SET;drop", "staff=abc", "staff=999999", "staff=-1",
    "store=abc", "store=99999999999", "target=", "before=abc", "before=99999999999", "period=bogus",
])
def test_invalid_filter_values_are_ignored(client, login, entries, query):
    login(client, "manager")
    response = client.get(f"{PAGE}?{query}")
    assert response.status_code == 200
    assert shown(response) == newest_first(entries, "ours_note", "ours_adjust", "odd", "ours_rule")


@pytest.mark.parametrize("bad", ["2026-13-45", "yesterday", "2026-02-30", "15/06/2026", "1999-01-01"])
def test_a_date_that_cannot_be_read_is_pointed_out_and_not_used(client, login, entries, bad):
    login(client, "manager")
    response = client.get(f"{PAGE}?date_from={bad}&action=rules.set")
    assert response.status_code == 200
    assert field_error(response, "date_from") == "Enter a date such as 2026-06-15. This one is not used."
    assert field_error(response, "date_to") is None
    assert shown(response) == [entries["ours_rule"]]  # the other filters still apply
    fragment = client.get(f"{PAGE}?date_to={bad}", htmx=True)
    assert not is_full_page(fragment)
    assert "To (date): Enter a date such as 2026-06-15. This one is not used." in text_of(fragment)


def test_full_width_digits_in_a_date_are_read(client, login, entries):
    login(client, "manager")
    assert shown(client.get(f"{PAGE}?date_from=２０２６-０６-１５")) == [entries["ours_note"]]


def test_htmx_gets_the_results_and_a_full_load_the_page(client, login, entries):
    login(client, "manager")
    fragment = client.get(f"{PAGE}?action=rules.set", htmx=True)
    assert fragment.status_code == 200 and not is_full_page(fragment)
    assert "HX-Request" in fragment.headers["Vary"]
    assert shown(fragment) == [entries["ours_rule"]]
    assert "<form" not in fragment.get_data(as_text=True)
    full = client.get(f"{PAGE}?action=rules.set")
    assert is_full_page(full) and shown(full) == [entries["ours_rule"]]
    assert 'hx-push-url="true"' in full.get_data(as_text=True)
    assert '<option selected value="rules.set">' in full.get_data(as_text=True)


# --- paging ---------------------------------------------------------------------------------------------

def older_link(response) -> str | None:
    match = re.search(r'<a href="([^"]+)"[^>]*rel="next"', response.get_data(as_text=True))
    return unescape(match.group(1)) if match else None


def test_pages_of_fifty_newest_first_with_older_links(app, client, login):
    """120 entries, three at each moment (keyset ties), plus one of another action that the filter leaves out."""
    with app.app_context():
        s1 = store_id("S001")
        ids = []
        for n in range(120):
            ids.append(record("tiers.set", at=FIXED_NOW - (n // 3) * M, store_id=s1, target=f"tier:{n}"))
        record("rules.set", at=FIXED_NOW, store_id=s1)
        db.session.commit()
    expected = sorted(ids, key=lambda i: (ids.index(i) // 3, -i))  # newest first, then the higher id
    login(client, "manager")
    seen, url, pages = [], f"{PAGE}?action=tiers.set", 0
    while url:
        response = client.get(url, htmx=pages % 2 == 1)
        assert response.status_code == 200
        seen += shown(response)
        pages += 1
        url = older_link(response)
        if url:
            assert "action=tiers.set" in url
        if pages > 1:
            assert ">Newest<" in response.get_data(as_text=True)
    assert pages == 3 and seen == expected
    first = client.get(f"{PAGE}?action=tiers.set")
    assert len(shown(first)) == 50 and ">Newest<" not in first.get_data(as_text=True)


def test_a_manager_cannot_page_into_another_stores_entries(app, client, login, entries):
    login(client, "manager")
    response = client.get(f"{PAGE}?before={entries['theirs']}")
    assert entries["theirs"] not in shown(response) and entries["their_rule"] not in shown(response)
