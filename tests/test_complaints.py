"""Complaints (PRODUCT.md "Complaints"): the state machine and every refused step, the timeline and the
audit log, filing, the service-level clock against its SQL twin, the queue, goodwill points, visit
ratings, and the managers' figures against hand-computed numbers.

Times are frozen: every call gets `now=` explicitly, from T0 on.
"""
from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from flask_babel import force_locale
from sqlalchemy import func, select

from portal import complaints, ledger
from portal.extensions import db
from portal.models import AuditLog, Complaint, ComplaintEvent, LedgerEntry, Member, Purchase, VisitRating
from portal.rules import load_rules, set_rule

from . import factories

UTC = timezone.utc
T0 = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)  # 09:00 in Shanghai
H = timedelta(hours=1)
S = timedelta(seconds=1)
US = timedelta(microseconds=1)
OWN_PHONE = "+8613812345678"


# --- helpers ----------------------------------------------------------------------------------------------


@pytest.fixture
def w(ctx):
    """Two stores, staff of both, two members."""
    second = factories.store("S002", "Another Store")
    world = SimpleNamespace(
        store=factories.store(), second=second,
        cashier=factories.staff(role="cashier"), colleague=factories.staff(role="cashier"),
        manager=factories.staff(role="manager"), elsewhere=factories.staff(role="manager", store_code="S002"),
        member=factories.member(now=T0 - 30 * 24 * H), other=factories.member(now=T0 - 30 * 24 * H),
        inactive=factories.staff(role="cashier"),
    )
    world.inactive.active = False
    db.session.commit()
    return world


def rules():
    return load_rules(db.session)


def file(w, *, member: Member | None = None, now: datetime = T0, store=None, category: str = "product_quality",
         severity: str = "normal", channel: str = "counter", staff="cashier", purchase: Purchase | None = None,
         description: str = "The milk was sour.") -> Complaint:
    return complaints.file_complaint(
        db.session, store=store or w.store, category=category, severity=severity, description=description,
        channel=channel, member=member, purchase=purchase,
        staff=getattr(w, staff) if isinstance(staff, str) else staff, now=now,
    )


def at_status(w, status: str, *, anonymous: bool = False) -> Complaint:
    """A complaint filed at T0, acknowledged at +1h, resolved at +2h, closed at +3h (as far as `status`)."""
    c = file(w, member=None if anonymous else w.member)
    if status != "open":
        complaints.acknowledge(db.session, c, staff=w.cashier, now=T0 + H)
    if status in ("resolved", "closed"):
        complaints.resolve(db.session, c, staff=w.cashier, body="Replaced the milk.", now=T0 + 2 * H)
    if status == "closed":
        complaints.close(db.session, c, staff=w.manager, now=T0 + 3 * H)
    db.session.commit()
    return c


def events(c: Complaint) -> list[ComplaintEvent]:
    return list(db.session.scalars(
        select(ComplaintEvent).where(ComplaintEvent.complaint_id == c.id).order_by(ComplaintEvent.id)))


def audits(c: Complaint) -> list[AuditLog]:
    return list(db.session.scalars(
        select(AuditLog).where(AuditLog.target == f"complaint:{c.id}").order_by(AuditLog.id)))


def count(model) -> int:
    return db.session.scalar(select(func.count()).select_from(model))


def snapshot(c: Complaint) -> tuple:
    """Everything a step may change (read from the object, then counted in the database)."""
    return (c.status, c.first_response_at, c.resolved_at, c.closed_at, c.reopened_at, c.rating, c.assigned_to_id,
            len(events(c)), count(ComplaintEvent), count(AuditLog), count(LedgerEntry))


def last_event(c: Complaint) -> ComplaintEvent:
    return events(c)[-1]


def assert_step(c: Complaint, kind: str, at: datetime, *, staff=None, member=None, visible: bool) -> None:
    """The last timeline entry and the last audit row are this step, with who and when."""
    event = last_event(c)
    assert (event.kind, event.created_at, event.visible_to_member) == (kind, at, visible)
    assert (event.staff_id, event.member_id) == (staff.id if staff else None, member.id if member else None)
    row = audits(c)[-1]
    assert (row.action, row.created_at, row.staff_id, row.store_id) == (
        f"complaint.{kind}", at, staff.id if staff else None, c.store_id)
    assert json.loads(row.after)["status"] == c.status


# --- allowed transitions ------------------------------------------------------------------------------------


def test_acknowledge_is_the_first_response(w):
    c = at_status(w, "open")
    complaints.acknowledge(db.session, c, staff=w.cashier, now=T0 + 5 * H)
    db.session.commit()
    assert (c.status, c.first_response_at, c.resolved_at) == ("acknowledged", T0 + 5 * H, None)
    assert_step(c, "acknowledged", T0 + 5 * H, staff=w.cashier, visible=True)


def test_a_reply_to_the_member_acknowledges_an_open_complaint_and_later_replies_keep_the_first_response(w):
    c = at_status(w, "open")
    complaints.reply(db.session, c, staff=w.cashier, body="  Sorry!\nWe will call you.  ", to_member=True,
                     now=T0 + 2 * H)
    db.session.commit()
    assert (c.status, c.first_response_at) == ("acknowledged", T0 + 2 * H)
    assert last_event(c).body == "Sorry!\nWe will call you."
    assert_step(c, "reply", T0 + 2 * H, staff=w.cashier, visible=True)
    assert "text" not in json.loads(audits(c)[-1].after)  # what the member reads is on the timeline

    complaints.reply(db.session, c, staff=w.manager, body="Refund sent.", to_member=True, now=T0 + 4 * H)
    db.session.commit()
    assert (c.status, c.first_response_at) == ("acknowledged", T0 + 2 * H)
    assert_step(c, "reply", T0 + 4 * H, staff=w.manager, visible=True)


@pytest.mark.parametrize("status", ["open", "acknowledged"])
def test_resolve_from_open_or_acknowledged(w, status):
    c = at_status(w, status)
    first = c.first_response_at
    complaints.resolve(db.session, c, staff=w.manager, body=" Gave a new bottle. ", now=T0 + 6 * H)
    db.session.commit()
    assert (c.status, c.resolved_at) == ("resolved", T0 + 6 * H)
    assert c.first_response_at == (first or T0 + 6 * H)  # resolving an open complaint also answers it
    assert last_event(c).body == "Gave a new bottle."
    assert_step(c, "resolved", T0 + 6 * H, staff=w.manager, visible=True)


def test_close_a_resolved_complaint(w):
    c = at_status(w, "resolved")
    complaints.close(db.session, c, staff=w.manager, now=T0 + 9 * H)
    db.session.commit()
    assert (c.status, c.closed_at, c.resolved_at, c.first_response_at) == ("closed", T0 + 9 * H, T0 + 2 * H, T0 + H)
    assert_step(c, "closed", T0 + 9 * H, staff=w.manager, visible=True)


@pytest.mark.parametrize("after", [H, 7 * 24 * H])  # the last moment of the window still counts
def test_the_member_reopens_within_seven_days_keeping_the_first_response(w, after):
    c = at_status(w, "resolved")
    complaints.rate(db.session, c, member=w.member, rating=2, now=T0 + 2 * H + S)
    db.session.commit()
    at = T0 + 2 * H + after
    complaints.reopen(db.session, c, member=w.member, body="Still sour.", rules=rules(), now=at)
    db.session.commit()
    assert (c.status, c.first_response_at, c.reopened_at, c.resolved_at, c.rating) == ("open", T0 + H, at, None, None)
    assert last_event(c).body == "Still sour."
    assert_step(c, "reopened", at, member=w.member, visible=True)
    # and it can be worked, resolved and rated again
    complaints.acknowledge(db.session, c, staff=w.cashier, now=at + H)
    complaints.resolve(db.session, c, staff=w.cashier, body=None, now=at + 2 * H)
    complaints.rate(db.session, c, member=w.member, rating=5, now=at + 3 * H)
    db.session.commit()
    assert (c.status, c.first_response_at, c.resolved_at, c.rating) == ("resolved", T0 + H, at + 2 * H, 5)
    assert last_event(c).body == "5"


@pytest.mark.parametrize("status", ["resolved", "closed"])
@pytest.mark.parametrize("rating", [1, 5])
def test_the_member_rates_a_resolved_or_closed_complaint(w, status, rating):
    c = at_status(w, status)
    complaints.rate(db.session, c, member=w.member, rating=rating, now=T0 + 10 * H)
    db.session.commit()
    assert (c.status, c.rating) == (status, rating)
    assert last_event(c).body == str(rating)
    assert_step(c, "rated", T0 + 10 * H, member=w.member, visible=True)


def test_assign_to_staff_of_the_store_or_an_admin(w):
    c = at_status(w, "acknowledged")
    complaints.assign(db.session, c, staff=w.manager, assignee=w.colleague, now=T0 + 4 * H)
    db.session.commit()
    assert c.assigned_to_id == w.colleague.id
    assert last_event(c).body == w.colleague.name
    assert_step(c, "assigned", T0 + 4 * H, staff=w.manager, visible=False)

    admin = factories.staff(role="admin", store_code="S002")
    complaints.assign(db.session, c, staff=w.manager, assignee=admin, now=T0 + 5 * H)
    db.session.commit()
    assert (c.assigned_to_id, c.status) == (admin.id, "acknowledged")


@pytest.mark.parametrize("status", ["open", "acknowledged", "resolved", "closed"])
@pytest.mark.parametrize("anonymous", [False, True])
def test_internal_notes_are_allowed_in_every_state_and_hidden_from_the_member(w, status, anonymous):
    c = at_status(w, status, anonymous=anonymous)
    before = snapshot(c)
    complaints.reply(db.session, c, staff=w.manager, body="Supplier batch 0412 again.", to_member=False,
                     now=T0 + 20 * H)
    db.session.commit()
    after = snapshot(c)
    assert after[:7] == before[:7]  # no change of state: a note is not a response
    assert after[7] == before[7] + 1
    event = last_event(c)
    assert (event.kind, event.body, event.visible_to_member) == ("note", "Supplier batch 0412 again.", False)
    assert_step(c, "note", T0 + 20 * H, staff=w.manager, visible=False)
    assert json.loads(audits(c)[-1].after)["text"] == "Supplier batch 0412 again."


@pytest.mark.parametrize("to_member", [True, False])
@pytest.mark.parametrize("body", ["", "  \n\t ", "x" * 2001])
def test_an_empty_or_too_long_reply_is_refused(w, to_member, body):
    c = at_status(w, "open")
    before = snapshot(c)
    with pytest.raises(complaints.ComplaintError) as refused:
        complaints.reply(db.session, c, staff=w.cashier, body=body, to_member=to_member, now=T0 + H)
    assert (refused.value.field, refused.value.code) == ("body", "too_long" if body.startswith("x") else "missing_field")
    assert snapshot(c) == before


# --- refused transitions: nothing changes ---------------------------------------------------------------------


def _act(w, c, action: str, now: datetime):
    session = db.session
    steps = {
        "acknowledge": lambda: complaints.acknowledge(session, c, staff=w.cashier, now=now),
        "reply": lambda: complaints.reply(session, c, staff=w.cashier, body="Hello", to_member=True, now=now),
        "resolve": lambda: complaints.resolve(session, c, staff=w.cashier, body="Done", now=now),
        "resolve_too_long": lambda: complaints.resolve(session, c, staff=w.cashier, body="x" * 2001, now=now),
        "close": lambda: complaints.close(session, c, staff=w.manager, now=now),
        "reopen": lambda: complaints.reopen(session, c, member=w.member, body="No", rules=rules(), now=now),
        "reopen_too_long": lambda: complaints.reopen(session, c, member=w.member, body="x" * 2001, rules=rules(),
                                                     now=now),
        "reopen_late": lambda: complaints.reopen(session, c, member=w.member, body="No", rules=rules(),
                                                 now=T0 + 2 * H + 7 * 24 * H + US),
        "reopen_by_other": lambda: complaints.reopen(session, c, member=w.other, body="No", rules=rules(), now=now),
        "rate": lambda: complaints.rate(session, c, member=w.member, rating=4, now=now),
        "rate_0": lambda: complaints.rate(session, c, member=w.member, rating=0, now=now),
        "rate_6": lambda: complaints.rate(session, c, member=w.member, rating=6, now=now),
        "rate_text": lambda: complaints.rate(session, c, member=w.member, rating="5", now=now),
        "rate_by_other": lambda: complaints.rate(session, c, member=w.other, rating=4, now=now),
        "assign": lambda: complaints.assign(session, c, staff=w.manager, assignee=w.colleague, now=now),
        "assign_other_store": lambda: complaints.assign(session, c, staff=w.manager, assignee=w.elsewhere, now=now),
        "assign_inactive": lambda: complaints.assign(session, c, staff=w.manager, assignee=w.inactive, now=now),
    }
    return steps[action]()


REFUSED = [
    ("acknowledged", "acknowledge", "illegal_transition"),
    ("resolved", "acknowledge", "illegal_transition"),
    ("closed", "acknowledge", "illegal_transition"),
    ("resolved", "reply", "illegal_transition"),
    ("closed", "reply", "illegal_transition"),
    ("anonymous", "reply", "no_member"),
    ("resolved", "resolve", "illegal_transition"),
    ("closed", "resolve", "illegal_transition"),
    ("acknowledged", "resolve_too_long", "too_long"),
    ("open", "close", "illegal_transition"),
    ("acknowledged", "close", "illegal_transition"),
    ("closed", "close", "illegal_transition"),
    ("open", "reopen", "illegal_transition"),
    ("acknowledged", "reopen", "illegal_transition"),
    ("closed", "reopen", "illegal_transition"),
    ("resolved", "reopen_late", "reopen_window_passed"),
    ("resolved", "reopen_too_long", "too_long"),
    ("resolved", "reopen_by_other", "not_found"),
    ("anonymous_resolved", "reopen", "not_found"),
    ("open", "rate", "illegal_transition"),
    ("acknowledged", "rate", "illegal_transition"),
    ("rated", "rate", "already_rated"),
    ("closed_rated", "rate", "already_rated"),
    ("resolved", "rate_0", "invalid_rating"),
    ("resolved", "rate_6", "invalid_rating"),
    ("closed", "rate_6", "invalid_rating"),
    ("resolved", "rate_text", "invalid_rating"),
    ("resolved", "rate_by_other", "not_found"),
    ("resolved", "assign", "illegal_transition"),
    ("closed", "assign", "illegal_transition"),
    ("open", "assign_other_store", "invalid_assignee"),
    ("acknowledged", "assign_inactive", "invalid_assignee"),
]


@pytest.mark.parametrize(("status", "action", "code"), REFUSED, ids=[f"{a}-when-{s}" for s, a, _ in REFUSED])
def test_a_refused_step_changes_nothing(w, status, action, code):
    if status.startswith("anonymous"):
        c = at_status(w, "resolved" if status == "anonymous_resolved" else "open", anonymous=True)
    elif status.endswith("_rated"):
        c = at_status(w, status.removesuffix("_rated"))
        complaints.rate(db.session, c, member=w.member, rating=3, now=T0 + 3 * H + S)
        db.session.commit()
    elif status == "rated":
        c = at_status(w, "resolved")
        complaints.rate(db.session, c, member=w.member, rating=3, now=T0 + 3 * H + S)
        db.session.commit()
    else:
        c = at_status(w, status)
    before = snapshot(c)
    with pytest.raises(complaints.ComplaintError) as refused:
        _act(w, c, action, T0 + 4 * H)
    assert refused.value.code == code
    assert snapshot(c) == before  # neither the object nor the database moved
    db.session.rollback()
    assert snapshot(c) == before


# --- the timeline, start to finish -----------------------------------------------------------------------------


def test_every_step_is_on_the_timeline_with_who_and_when_and_in_the_audit_log(w):
    m, cashier, manager = w.member, w.cashier, w.manager
    c = file(w, member=m, channel="member", staff=None, description="Charged twice\nfor one loaf.",
             category="price_billing", severity="high")
    db.session.commit()
    complaints.reply(db.session, c, staff=manager, body="Check till 3 log.", to_member=False, now=T0 + 30 * 60 * S)
    complaints.assign(db.session, c, staff=manager, assignee=cashier, now=T0 + 45 * 60 * S)
    complaints.reply(db.session, c, staff=cashier, body="We are checking.", to_member=True, now=T0 + H)
    complaints.resolve(db.session, c, staff=cashier, body="Refunded ¥5.", now=T0 + 2 * H)
    complaints.rate(db.session, c, member=m, rating=2, now=T0 + 3 * H)
    complaints.reopen(db.session, c, member=m, body="Refund not received.", rules=rules(), now=T0 + 4 * H)
    complaints.acknowledge(db.session, c, staff=cashier, now=T0 + 5 * H)
    complaints.resolve(db.session, c, staff=manager, body=None, now=T0 + 6 * H)
    complaints.grant_goodwill(db.session, c, staff=manager, points=200, store=w.store, rules=rules(),
                              idempotency_key="gw-timeline", now=T0 + 6 * H + 30 * 60 * S)
    complaints.close(db.session, c, staff=manager, now=T0 + 7 * H)
    db.session.commit()

    expected = [
        ("opened", None, m.id, T0, True, "Charged twice\nfor one loaf.", "open"),
        ("note", manager.id, None, T0 + 30 * 60 * S, False, "Check till 3 log.", "open"),
        ("assigned", manager.id, None, T0 + 45 * 60 * S, False, cashier.name, "open"),
        ("reply", cashier.id, None, T0 + H, True, "We are checking.", "acknowledged"),
        ("resolved", cashier.id, None, T0 + 2 * H, True, "Refunded ¥5.", "resolved"),
        ("rated", None, m.id, T0 + 3 * H, True, "2", "resolved"),
        ("reopened", None, m.id, T0 + 4 * H, True, "Refund not received.", "open"),
        ("acknowledged", cashier.id, None, T0 + 5 * H, True, None, "acknowledged"),
        ("resolved", manager.id, None, T0 + 6 * H, True, None, "resolved"),
        ("goodwill", manager.id, None, T0 + 6 * H + 30 * 60 * S, True, "200", "resolved"),
        ("closed", manager.id, None, T0 + 7 * H, True, None, "closed"),
    ]
    assert [(e.kind, e.staff_id, e.member_id, e.created_at, e.visible_to_member, e.body) for e in events(c)] == [
        row[:6] for row in expected]
    rows = audits(c)
    assert [(r.action, r.staff_id, r.store_id, r.created_at, json.loads(r.after)["status"]) for r in rows] == [
        (f"complaint.{kind}", staff_id, w.store.id, at, status) for kind, staff_id, _, at, _, _, status in expected]
    assert [json.loads(r.after).get("text") for r in rows][1:3] == ["Check till 3 log.", cashier.name]
    assert (c.first_response_at, c.resolved_at, c.closed_at, c.reopened_at, c.rating) == (
        T0 + H, T0 + 6 * H, T0 + 7 * H, T0 + 4 * H, None)


# --- filing ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field", "code"),
    [
        ({"description": ""}, "description", "missing_description"),
        ({"description": "   \n\t\r\n  "}, "description", "missing_description"),
        ({"description": "x" * 2001}, "description", "description_too_long"),
        ({"category": "food"}, "category", "invalid_category"),
        ({"category": ""}, "category", "invalid_category"),
        ({"severity": "urgent"}, "severity", "invalid_severity"),
        ({"purchase": "other"}, "purchase_id", "purchase_mismatch"),
    ],
    ids=["empty", "whitespace", "too-long", "bad-category", "no-category", "bad-severity", "another-members-purchase"],
)
def test_filing_refusals(w, changes, field, code):
    if changes.get("purchase") == "other":
        changes = {"purchase": factories.purchase(w.other, 1000, now=T0 - H).purchase}
        db.session.commit()
    before = (count(Complaint), count(ComplaintEvent), count(AuditLog))
    with pytest.raises(complaints.ComplaintError) as refused:
        file(w, member=w.member, **changes)
    assert (refused.value.field, refused.value.code) == (field, code)
    assert (count(Complaint), count(ComplaintEvent), count(AuditLog)) == before


def test_an_unknown_channel_is_a_programming_error(w):
    with pytest.raises(ValueError):
        file(w, member=w.member, channel="fax")
    assert count(Complaint) == 0


def test_the_longest_description_and_its_line_breaks_are_kept(w):
    longest = file(w, member=w.member, description="y" * 2000)
    kept = file(w, member=w.member, description="  第一行\r\n\r\n  second line\x07  \nthird  ")
    db.session.commit()
    db.session.expire_all()
    assert longest.description == "y" * 2000
    assert kept.description == "第一行\n\nsecond line\nthird"
    assert events(kept)[0].body == kept.description


def test_an_anonymous_complaint_at_the_counter(w):
    c = file(w, member=None, severity="low", category="store_environment", description="Wet floor, no sign.")
    db.session.commit()
    assert (c.member_id, c.purchase_id, c.staff_id, c.status, c.channel, c.created_at) == (
        None, None, w.cashier.id, "open", "counter", T0)
    [opened] = events(c)
    assert (opened.kind, opened.staff_id, opened.member_id, opened.created_at) == ("opened", w.cashier.id, None, T0)
    assert [r.action for r in audits(c)] == ["complaint.opened"]


def test_a_complaint_with_only_a_purchase_belongs_to_the_purchases_member(w):
    sale = factories.purchase(w.member, 2590, now=T0 - 2 * H).purchase
    c = file(w, purchase=sale, channel="phone", category="returns_refunds")
    db.session.commit()
    assert (c.member_id, c.purchase_id, c.channel) == (w.member.id, sale.id, "phone")
    # its own member's purchase is fine too
    c2 = file(w, member=w.member, purchase=sale)
    assert c2.purchase_id == sale.id


# --- the service-level clock ------------------------------------------------------------------------------------


def test_response_clock_turns_overdue_one_second_after_24_hours(w):
    c = at_status(w, "open")
    r = rules()
    assert complaints.clock(c, r, T0 + 24 * H) == complaints.Clock(T0 + 24 * H, T0 + 72 * H, False, False)
    late = complaints.clock(c, r, T0 + 24 * H + S)
    assert (late.response_overdue, late.resolution_overdue, late.overdue) == (True, False, True)
    assert complaints.clock(c, r, T0 + 72 * H + S).resolution_overdue


def test_a_late_first_response_stops_the_response_clock_but_not_the_resolution_clock(w):
    c = at_status(w, "open")
    complaints.acknowledge(db.session, c, staff=w.cashier, now=T0 + 30 * H)
    db.session.commit()
    r = rules()
    assert not complaints.clock(c, r, T0 + 30 * H).overdue
    assert not complaints.clock(c, r, T0 + 72 * H).overdue
    late = complaints.clock(c, r, T0 + 72 * H + S)
    assert (late.response_overdue, late.resolution_overdue) == (False, True)


def test_a_reopened_complaint_restarts_its_resolution_clock(w):
    c = at_status(w, "resolved")
    reopened = T0 + 50 * H
    complaints.reopen(db.session, c, member=w.member, body=None, rules=rules(), now=reopened)
    db.session.commit()
    r = rules()
    clock = complaints.clock(c, r, T0 + 72 * H + S)
    assert (clock.resolution_due, clock.overdue) == (reopened + 72 * H, False)
    assert not complaints.clock(c, r, reopened + 72 * H).overdue
    late = complaints.clock(c, r, reopened + 72 * H + S)
    assert (late.response_overdue, late.resolution_overdue) == (False, True)  # the first response stays on record


@pytest.mark.parametrize("status", ["resolved", "closed"])
def test_a_resolved_or_closed_complaint_is_never_overdue(w, status):
    c = at_status(w, status)
    for now in (T0 + 24 * H + S, T0 + 72 * H + S, T0 + 1000 * H):
        assert not complaints.clock(c, rules(), now).overdue
    assert complaints.queue(db.session, rules=rules(), now=T0 + 1000 * H, store_ids=None, overdue_only=True) == []


def test_the_clock_follows_a_changed_rule(w):
    c = at_status(w, "open")
    set_rule(db.session, "complaint_response_hours", "2", staff=w.manager, now=T0)
    set_rule(db.session, "complaint_resolution_hours", "5", staff=w.manager, now=T0)
    db.session.commit()
    r = rules()
    assert (r.complaint_response_hours, r.complaint_resolution_hours) == (2, 5)
    assert complaints.clock(c, r, T0 + 2 * H) == complaints.Clock(T0 + 2 * H, T0 + 5 * H, False, False)
    assert complaints.clock(c, r, T0 + 2 * H + S).response_overdue
    assert complaints.clock(c, r, T0 + 5 * H + S).resolution_overdue
    assert [x.id for x in complaints.queue(db.session, rules=r, now=T0 + 2 * H + S, store_ids=None,
                                           overdue_only=True)] == [c.id]
    assert complaints.queue(db.session, rules=r, now=T0 + 2 * H, store_ids=None, overdue_only=True) == []


def _mixed_complaints(w) -> list[Complaint]:
    """Complaints in every state, answered early, late, never, and reopened."""
    session, cashier, m = db.session, w.cashier, w.member
    made = []

    def new(at, **kw):
        c = file(w, member=m, now=at, **kw)
        made.append(c)
        return c

    new(T0)  # never answered
    late = new(T0 + H, store=w.second)
    complaints.acknowledge(session, late, staff=cashier, now=T0 + 30 * H)
    early = new(T0 + 2 * H, severity="high")
    complaints.reply(session, early, staff=cashier, body="On it", to_member=True, now=T0 + 3 * H)
    reopened = new(T0)
    complaints.resolve(session, reopened, staff=cashier, body=None, now=T0 + 10 * H)
    complaints.reopen(session, reopened, member=m, body=None, rules=rules(), now=T0 + 20 * H + 500 * US)
    reworked = new(T0 + 5 * H, severity="low")
    complaints.resolve(session, reworked, staff=cashier, body=None, now=T0 + 7 * H)
    complaints.reopen(session, reworked, member=m, body=None, rules=rules(), now=T0 + 8 * H)
    complaints.acknowledge(session, reworked, staff=cashier, now=T0 + 9 * H)
    resolved = new(T0 - 10 * H)
    complaints.resolve(session, resolved, staff=cashier, body=None, now=T0 + 100 * H)
    closed = new(T0 - 10 * H)
    complaints.resolve(session, closed, staff=cashier, body=None, now=T0 - 9 * H)
    complaints.close(session, closed, staff=cashier, now=T0 - 8 * H)
    new(T0 + 48 * H + 7 * US, store=w.second)  # microseconds matter
    db.session.commit()
    db.session.expire_all()  # read everything back as the database keeps it
    return made


def test_the_sql_overdue_condition_agrees_with_the_clock_at_every_boundary(w):
    made = _mixed_complaints(w)
    strict = dataclasses.replace(rules(), complaint_response_hours=2, complaint_resolution_hours=5)
    for r in (rules(), strict):
        boundaries = {T0 - 20 * H, T0 + 1000 * H}
        for c in made:
            for start, hours in ((c.created_at, r.complaint_response_hours),
                                 (c.created_at, r.complaint_resolution_hours),
                                 (c.reopened_at, r.complaint_resolution_hours)):
                if start is not None:
                    boundaries |= {start + hours * H + d for d in (-US, timedelta(0), US)}
        seen = set()
        for now in sorted(boundaries):
            expected = {c.id for c in made if complaints.clock(c, r, now).overdue}
            seen.add(frozenset(expected))
            in_queue = complaints.queue(db.session, rules=r, now=now, store_ids=None, overdue_only=True)
            assert {c.id for c in in_queue} == expected, now
            counted = db.session.scalar(
                select(func.count()).select_from(Complaint).where(complaints.overdue_condition(r, now)))
            assert counted == len(expected), now
            # the queue lists overdue items first
            everything = complaints.queue(db.session, rules=r, now=now, store_ids=None)
            assert {c.id for c in everything[:len(expected)]} == expected
        assert len(seen) > 4  # the instants really do cross boundaries
        for now in (T0 + 24 * H, T0 + 24 * H + S, T0 + 80 * H, T0 + 200 * H):
            figs = complaints.figures(db.session, rules=r, now=now, since=T0, until=T0 + H, store_ids=None)
            assert figs.overdue_count == sum(complaints.clock(c, r, now).overdue for c in made)
            assert figs.open_count == sum(c.status in ("open", "acknowledged") for c in made) == 6
            scoped = complaints.figures(db.session, rules=r, now=now, since=T0, until=T0 + H,
                                        store_ids=[w.second.id])
            assert scoped.overdue_count == sum(complaints.clock(c, r, now).overdue for c in made
                                               if c.store_id == w.second.id)


# --- the queue ----------------------------------------------------------------------------------------------------


def test_queue_filters_and_puts_overdue_first_then_high_severity_then_oldest(w):
    cashier, m = w.cashier, w.member
    c1 = file(w, member=m, now=T0, severity="low", category="service_attitude")  # overdue
    c2 = file(w, member=m, now=T0 + H, severity="high")  # overdue
    c3 = file(w, member=m, now=T0 + 10 * H, severity="high")
    c4 = file(w, member=m, now=T0 + 8 * H)
    complaints.acknowledge(db.session, c4, staff=cashier, now=T0 + 9 * H)
    c5 = file(w, member=m, now=T0 + 7 * H, severity="high", category="service_attitude")
    c6 = file(w, member=None, now=T0 + 2 * H, severity="low")
    complaints.resolve(db.session, c6, staff=cashier, body=None, now=T0 + 3 * H)
    c7 = file(w, member=m, now=T0 + 4 * H, store=w.second, staff=w.elsewhere, category="service_attitude")  # overdue
    db.session.commit()
    now = T0 + 30 * H

    def ids(**kw):
        kw.setdefault("store_ids", None)
        return [c.id for c in complaints.queue(db.session, rules=rules(), now=now, **kw)]

    assert ids() == [c.id for c in (c2, c7, c1, c5, c3, c4, c6)]
    assert ids(status="active") == [c.id for c in (c2, c7, c1, c5, c3, c4)]
    assert ids(status="open") == [c.id for c in (c2, c7, c1, c5, c3)]
    assert ids(status="acknowledged") == [c4.id]
    assert ids(status="resolved") == [c6.id]
    assert ids(status="closed") == []
    assert ids(category="service_attitude") == [c.id for c in (c7, c1, c5)]
    assert ids(severity="high") == [c.id for c in (c2, c5, c3)]
    assert ids(severity="low", status="active") == [c1.id]
    assert ids(store_ids=[w.second.id]) == [c7.id]
    assert ids(store_ids=[w.store.id], overdue_only=True) == [c2.id, c1.id]
    assert ids(store_ids=[]) == []
    assert ids(overdue_only=True) == [c2.id, c7.id, c1.id]
    assert ids(overdue_only=True, severity="high") == [c2.id]
    assert ids(limit=2) == [c2.id, c7.id]
    # the same age and severity: the older id first
    twin = file(w, member=m, now=T0 + 10 * H, severity="high")
    db.session.commit()
    assert ids(severity="high") == [c.id for c in (c2, c5, c3, twin)]


# --- goodwill points ----------------------------------------------------------------------------------------------


def goodwill(w, c, *, staff=None, points=300, key="gw-1", now=T0 + 5 * H):
    return complaints.grant_goodwill(db.session, c, staff=staff or w.manager, points=points, store=w.store,
                                     rules=rules(), idempotency_key=key, now=now)


@pytest.mark.parametrize("role", ["manager", "admin"])
def test_goodwill_posts_a_bonus_entry_linked_to_the_complaint_once_per_key(w, role):
    granter = w.manager if role == "manager" else factories.staff(role="admin")
    c = at_status(w, "resolved")
    entry = goodwill(w, c, staff=granter)
    db.session.commit()
    assert (entry.kind, entry.reason, entry.points, entry.balance_after) == ("bonus", "goodwill", 300, 300)
    assert (entry.member_id, entry.complaint_id, entry.staff_id, entry.store_id, entry.created_at) == (
        w.member.id, c.id, granter.id, w.store.id, T0 + 5 * H)
    assert entry.expires_at == datetime(2028, 3, 1, 16, 0, tzinfo=UTC)  # end of 1 March 2028, store time
    db.session.refresh(w.member)
    assert w.member.points_balance == 300 == ledger.ledger_sum(db.session, w.member.id)
    event = last_event(c)
    assert (event.kind, event.body, event.visible_to_member) == ("goodwill", "300", True)
    assert_step(c, "goodwill", T0 + 5 * H, staff=granter, visible=True)

    before = snapshot(c)
    again = goodwill(w, c, staff=granter, now=T0 + 6 * H)  # the same form sent twice
    db.session.commit()
    assert again.id == entry.id
    assert snapshot(c) == before
    db.session.refresh(w.member)
    assert w.member.points_balance == 300

    other = goodwill(w, c, staff=granter, points=100_000, key="gw-2", now=T0 + 7 * H)
    db.session.commit()
    assert (other.points, other.balance_after) == (100_000, 100_300)
    assert db.session.scalar(select(func.count()).select_from(LedgerEntry)
                             .where(LedgerEntry.complaint_id == c.id)) == 2


@pytest.mark.parametrize(
    ("case", "points", "code"),
    [("cashier", 300, "forbidden"), ("zero", 0, "invalid_points"), ("negative", -50, "invalid_points"),
     ("too_many", 100_001, "invalid_points"), ("anonymous", 300, "no_member"), ("own_phone", 300, "own_account")],
)
def test_goodwill_refusals_change_nothing(w, case, points, code):
    staff = w.manager
    if case == "own_phone":
        owner = factories.member(phone=OWN_PHONE, now=T0 - H)
        staff = factories.staff(role="manager", phone=OWN_PHONE)
        c = file(w, member=owner, now=T0)
    else:
        c = file(w, member=None if case == "anonymous" else w.member, now=T0)
        if case == "cashier":
            staff = w.cashier
    db.session.commit()
    before = snapshot(c)
    with pytest.raises(complaints.ComplaintError) as refused:
        goodwill(w, c, staff=staff, points=points)
    assert refused.value.code == code
    assert snapshot(c) == before
    assert count(LedgerEntry) == 0
    assert db.session.scalar(select(func.sum(Member.points_balance))) == 0


# --- visit ratings -------------------------------------------------------------------------------------------------


def visit(w, sale, rating, *, member=None, comment=None, now=T0 + H):
    return complaints.rate_visit(db.session, member=member or w.member, purchase=sale, rating=rating,
                                 comment=comment, now=now)


@pytest.mark.parametrize("rating", [1, 2, 3, 4, 5])
def test_a_visit_rating_of_1_or_2_opens_a_follow_up(w, rating):
    sale = factories.purchase(w.member, 5000, now=T0, store_code="S002").purchase
    db.session.commit()
    rated = visit(w, sale, rating, comment="  Queue was long.\n\x00Cold coffee.  ", now=T0 + H)
    db.session.commit()
    assert (rated.purchase_id, rated.member_id, rated.store_id, rated.rating, rated.created_at) == (
        sale.id, w.member.id, w.second.id, rating, T0 + H)
    assert rated.comment == "Queue was long.\nCold coffee."
    if rating >= 3:
        assert rated.complaint_id is None
        assert count(Complaint) == 0
        return
    follow_up = db.session.get(Complaint, rated.complaint_id)
    assert (follow_up.channel, follow_up.member_id, follow_up.purchase_id, follow_up.store_id) == (
        "survey", w.member.id, sale.id, w.second.id)
    assert (follow_up.status, follow_up.category, follow_up.severity, follow_up.created_at) == (
        "open", "other", "normal", T0 + H)
    assert follow_up.description == "Queue was long.\nCold coffee."
    assert [(e.kind, e.created_at) for e in events(follow_up)] == [("opened", T0 + H)]
    assert count(Complaint) == 1
    assert [c.id for c in complaints.queue(db.session, rules=rules(), now=T0 + 2 * H, store_ids=[w.second.id])] == [
        follow_up.id]


def test_a_low_rating_without_a_comment_gets_a_description(w):
    sale = factories.purchase(w.member, 5000, now=T0).purchase
    rated = visit(w, sale, 1, comment="   ")
    db.session.commit()
    assert rated.comment is None
    follow_up = db.session.get(Complaint, rated.complaint_id)
    assert "1" in follow_up.description and "5" in follow_up.description


@pytest.mark.parametrize(
    ("case", "rating", "code"),
    [("twice", 4, "already_rated"), ("twice_low", 1, "already_rated"), ("zero", 0, "invalid_rating"),
     ("six", 6, "invalid_rating"), ("text", "5", "invalid_rating"), ("other_member", 5, "not_found")],
)
def test_visit_rating_refusals(w, case, rating, code):
    sale = factories.purchase(w.member, 5000, now=T0).purchase
    db.session.commit()
    if case.startswith("twice"):
        visit(w, sale, 5)
        db.session.commit()
    before = (count(VisitRating), count(Complaint), count(ComplaintEvent), count(AuditLog))
    with pytest.raises(complaints.ComplaintError) as refused:
        visit(w, sale, rating, member=w.other if case == "other_member" else None, now=T0 + 2 * H)
    assert refused.value.code == code
    assert (count(VisitRating), count(Complaint), count(ComplaintEvent), count(AuditLog)) == before


def test_unrated_visit_offers_the_newest_unrated_purchase_of_the_last_14_days(w):
    first = factories.purchase(w.member, 1000, now=T0).purchase
    second = factories.purchase(w.member, 2000, now=T0 + 24 * H).purchase
    factories.purchase(w.other, 3000, now=T0 + 48 * H)  # someone else's
    db.session.commit()
    now = T0 + 3 * 24 * H
    assert complaints.unrated_visit(db.session, w.member, now) == second
    visit(w, second, 4, now=now)
    db.session.commit()
    assert complaints.unrated_visit(db.session, w.member, now) == first
    # the window: 14 days after the purchase it is no longer offered
    assert complaints.unrated_visit(db.session, w.member, T0 + 14 * 24 * H - S) == first
    assert complaints.unrated_visit(db.session, w.member, T0 + 14 * 24 * H) is None
    visit(w, first, 5, now=now)
    db.session.commit()
    assert complaints.unrated_visit(db.session, w.member, now) is None


# --- figures --------------------------------------------------------------------------------------------------------


def test_percentile_is_nearest_rank():
    p = complaints.percentile
    assert p([], 0.9) is None
    assert p([7.5], 0.9) == p([7.5], 0.5) == p([7.5], 0.0) == 7.5
    assert p([30, 1, 10, 3, 2], 0.9) == 30
    assert p([1, 2, 3, 10, 30], 0.5) == 3
    assert p([1, 2, 3, 10, 30], 0.8) == 10
    assert p([1, 2], 0.5) == 1
    assert p([1, 2], 0.9) == 2
    assert p(list(range(1, 11)), 0.9) == 9
    assert p(list(range(1, 11)), 0.91) == 10
    assert p(list(range(1, 21)), 0.9) == 18
    assert p(list(range(1, 101)), 0.9) == 90
    assert p([4, 1, 3], 0.0) == 1
    assert p([4, 1, 3], 1.0) == 4


def test_figures_match_hand_computed_numbers(w):
    session, cashier, m = db.session, w.cashier, w.member
    since, until = T0, T0 + 7 * 24 * H

    def complaint(created, category, store, respond=None, resolve=None, rating=None, by_reply=False):
        c = file(w, member=m, now=created, category=category, store=store)
        if respond is not None:
            if by_reply:
                complaints.reply(session, c, staff=cashier, body="Looking", to_member=True, now=created + respond * H)
            else:
                complaints.acknowledge(session, c, staff=cashier, now=created + respond * H)
        if resolve is not None:
            complaints.resolve(session, c, staff=cashier, body=None, now=created + resolve * H)
        if rating is not None:
            complaints.rate(session, c, member=m, rating=rating, now=created + resolve * H + S)
        return c

    test_store, another = w.store, w.second  # "Test Store" and "Another Store"
    complaint(T0, "product_quality", test_store, respond=1, resolve=5, rating=5)  # on `since`: counted
    complaint(T0 + H, "product_quality", test_store, respond=2, resolve=20, rating=4)
    complaint(T0 + 2 * H, "service_attitude", another, respond=3, resolve=50, rating=1)
    complaint(T0 + 3 * H, "service_attitude", another, respond=10)
    complaint(T0 + 4 * H, "service_attitude", test_store, respond=30, by_reply=True)
    complaint(since - S, "product_quality", test_store)  # before the period, still open and overdue
    complaint(since - 2 * 24 * H, "other", another, respond=0.5, resolve=0.75)  # before the period, resolved

    def sale(store_code, at):
        return factories.purchase(m, 1000, now=at, store_code=store_code).purchase

    for rating, code, at in [(5, "S001", T0), (4, "S001", T0 + H), (3, "S001", T0 + 2 * H),
                             (3, "S002", T0 + 3 * H), (3, "S002", T0 + 4 * H), (5, "S002", until - S),
                             (1, "S002", until),  # on `until`: not counted, and its follow-up neither
                             (2, "S001", since - S)]:  # before the period, its follow-up neither
        visit(w, sale(code, at - H), rating, now=at)
    session.commit()

    now = until + H
    f = complaints.figures(session, rules=rules(), now=now, since=since, until=until, store_ids=None)
    # as of now: 3 acknowledged/open in the period, the one before it, and the two survey follow-ups
    assert (f.open_count, f.overdue_count) == (5, 4)  # overdue: T0+3h, T0+4h, since-1s, since-1s follow-up
    assert f.complaints == 5
    assert f.response == complaints.Times(5, 3, 30)
    assert f.resolution == complaints.Times(3, 20, 50)
    assert (f.rating_average, f.ratings) == (pytest.approx(10 / 3), 3)
    assert f.by_category == [
        complaints.GroupFigures("product_quality", 2, complaints.Times(2, 1.5, 2), complaints.Times(2, 12.5, 20),
                                4.5, 2),
        complaints.GroupFigures("service_attitude", 3, complaints.Times(3, 10, 30), complaints.Times(1, 50, 50),
                                1.0, 1),
    ]
    assert f.by_store == [
        complaints.GroupFigures("Another Store", 2, complaints.Times(2, 6.5, 10), complaints.Times(1, 50, 50),
                                1.0, 1),
        complaints.GroupFigures("Test Store", 3, complaints.Times(3, 2, 30), complaints.Times(2, 12.5, 20), 4.5, 2),
    ]
    # visits in the period: Test Store 5, 4, 3; Another Store 3, 3, 5
    assert f.visit_ratings == 6
    assert f.visit_average == pytest.approx(23 / 6)
    assert f.visit_satisfied_share == pytest.approx(3 / 6)
    assert [(name, n) for name, n, _, _ in f.visits_by_store] == [("Another Store", 3), ("Test Store", 3)]
    assert [(avg, share) for _, _, avg, share in f.visits_by_store] == [
        (pytest.approx(11 / 3), pytest.approx(1 / 3)), (pytest.approx(4.0), pytest.approx(2 / 3))]

    scoped = complaints.figures(session, rules=rules(), now=now, since=since, until=until, store_ids=[another.id])
    assert (scoped.open_count, scoped.overdue_count, scoped.complaints) == (2, 1, 2)  # T0+3h, and until's follow-up
    assert scoped.response == complaints.Times(2, 6.5, 10)
    assert scoped.resolution == complaints.Times(1, 50, 50)
    assert [g.key for g in scoped.by_category] == ["service_attitude"]
    assert [g.key for g in scoped.by_store] == ["Another Store"]
    assert (scoped.visit_ratings, scoped.visit_average) == (3, pytest.approx(11 / 3))
    assert [name for name, *_ in scoped.visits_by_store] == ["Another Store"]

    # the period's edges: `since` is in, `until` is out
    later = complaints.figures(session, rules=rules(), now=now, since=T0 + S, until=until + S, store_ids=None)
    assert (later.complaints, later.response.count, later.visit_ratings) == (5, 4, 6)  # T0 out; until's follow-up in
    assert later.visit_average == pytest.approx((4 + 3 + 3 + 3 + 5 + 1) / 6)
    assert [g.key for g in later.by_category] == ["product_quality", "service_attitude", "other"]

    empty = complaints.figures(session, rules=rules(), now=now, since=until + 24 * H, until=until + 48 * H,
                               store_ids=None)
    assert (empty.complaints, empty.response, empty.resolution, empty.rating_average, empty.ratings) == (
        0, complaints.Times(0, None, None), complaints.Times(0, None, None), None, 0)
    assert (empty.visit_ratings, empty.visit_average, empty.visit_satisfied_share) == (0, None, None)
    assert (empty.by_category, empty.by_store, empty.visits_by_store) == ([], [], [])
    assert (empty.open_count, empty.overdue_count) == (5, 4)  # as of now, whatever the period


# --- what a refusal says, and who opened a follow-up ----------------------------------------------------

@pytest.mark.parametrize(("status", "action", "message"), [
    ("acknowledged", "close", "This complaint is not resolved yet."),
    ("open", "close", "This complaint is not resolved yet."),
    ("acknowledged", "acknowledge", "This complaint is already acknowledged."),
    ("resolved", "resolve", "This complaint is already resolved."),
    ("closed", "close", "This complaint is closed."),
])
def test_a_refusal_says_why_in_words_for_the_action_tried(w, status, action, message):
    c = at_status(w, status)
    step = {"close": complaints.close, "acknowledge": complaints.acknowledge}.get(action)
    with pytest.raises(complaints.ComplaintError) as refused:
        if step:
            step(db.session, c, staff=w.manager, now=T0 + 5 * H)
        else:
            complaints.resolve(db.session, c, staff=w.manager, body=None, now=T0 + 5 * H)
    with force_locale("en"):
        assert str(refused.value.message) == message


def test_a_poor_visit_ratings_follow_up_names_the_member_who_opened_it(w):
    sale = factories.purchase(w.member, 5_000, now=T0).purchase
    visit = complaints.rate_visit(db.session, member=w.member, purchase=sale, rating=1, comment=None, now=T0 + H)
    opened = events(db.session.get(Complaint, visit.complaint_id))[0]
    assert (opened.kind, opened.member_id, opened.staff_id) == ("opened", w.member.id, None)


def test_a_goodwill_key_used_for_another_complaint_is_refused(w):
    first, second = at_status(w, "acknowledged"), at_status(w, "acknowledged")
    complaints.grant_goodwill(db.session, first, staff=w.manager, points=50, store=w.store, rules=rules(),
                              idempotency_key="goodwill-key-0001", now=T0 + 4 * H)
    with pytest.raises(complaints.ComplaintError) as refused:
        complaints.grant_goodwill(db.session, second, staff=w.manager, points=50, store=w.store, rules=rules(),
                                  idempotency_key="goodwill-key-0001", now=T0 + 4 * H)
    assert refused.value.code == "idempotency_key_reused"


def test_a_visit_already_complained_about_is_not_offered_for_rating(w):
    sale = factories.purchase(w.member, 5_000, now=T0).purchase
    assert complaints.unrated_visit(db.session, w.member, T0 + H) == sale
    file(w, member=w.member, purchase=sale, now=T0 + H)
    assert complaints.unrated_visit(db.session, w.member, T0 + 2 * H) is None
