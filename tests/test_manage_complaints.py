"""The managers' complaints console: the queue with its filters and overdue items, one complaint with its
timeline and actions, goodwill points, and the figures.

Managers see and work only their own store's complaints (another store's is a 404); admins see every store.
Every action is one locked, audited step on the timeline; a refused one answers 422 with the message and
changes nothing. htmx gets the page's block back, a plain form a 303 to the complaint.
"""
from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from portal import complaints
from portal.extensions import db
from portal.models import AuditLog, Complaint, ComplaintEvent, LedgerEntry, Member, Staff, Store
from portal.rules import load_rules, set_rule

from . import factories
from .conftest import FIXED_NOW
from .helpers import audited_changes, field_error, figure, form_key, is_full_page, text_of

QUEUE = "/manage/complaints"
FIGURES = "/manage/complaints/figures"
ACTIONS = ("acknowledge", "reply", "assign", "resolve", "close", "goodwill")
H = timedelta(hours=1)


# --- helpers --------------------------------------------------------------------------------------------

def count(model, *where) -> int:
    return db.session.scalar(select(func.count()).select_from(model).where(*where))


def page(complaint_id: int) -> str:
    return f"{QUEUE}/{complaint_id}"


def second_store() -> Store:
    return factories.store("S002", "Second Store")


def file(*, store_code: str = "S001", member: Member | bool | None = True, at=None, category: str = "other",
         severity: str = "normal", description: str = "The milk was sour.") -> Complaint:
    """A complaint made at the counter, through the service (inside an app context; the caller commits)."""
    if member is True:
        member = factories.member(store_code=store_code)
    return complaints.file_complaint(
        db.session, store=factories.store(store_code), category=category, severity=severity,
        description=description, channel="counter", member=member or None, now=at or FIXED_NOW - 2 * H,
    )


def make_complaint(app, state: str = "open", **kwargs) -> int:
    """A complaint brought to `state` through the service functions; its id."""
    with app.app_context():
        complaint = file(**kwargs)
        moved_to(complaint, state, complaint.created_at)
        db.session.commit()
        return complaint.id


def moved_to(complaint: Complaint, state: str, start) -> None:
    staff = factories.staff("manager", store_code=complaint.store.code)
    if state in ("acknowledged", "resolved", "closed"):
        complaints.acknowledge(db.session, complaint, staff=staff, now=start + H)
    if state in ("resolved", "closed"):
        complaints.resolve(db.session, complaint, staff=staff, body="Refunded.", now=start + 2 * H)
    if state == "closed":
        complaints.close(db.session, complaint, staff=staff, now=start + 3 * H)


def snapshot(app, complaint_id: int) -> dict:
    """Everything an action could change."""
    with app.app_context():
        c = db.session.get(Complaint, complaint_id)
        return {
            "status": c.status, "first_response_at": c.first_response_at, "resolved_at": c.resolved_at,
            "closed_at": c.closed_at, "assigned_to_id": c.assigned_to_id,
            "events": count(ComplaintEvent, ComplaintEvent.complaint_id == complaint_id),
            "audit": count(AuditLog, audited_changes()), "ledger": count(LedgerEntry),
            "balance": c.member.points_balance if c.member else None,
        }


def events_of(app, complaint_id: int) -> list[tuple[str, bool, int | None, str | None]]:
    with app.app_context():
        rows = db.session.scalars(select(ComplaintEvent).where(ComplaintEvent.complaint_id == complaint_id)
                                  .order_by(ComplaintEvent.id))
        return [(e.kind, e.visible_to_member, e.staff_id, e.body) for e in rows]


def audit_rows(app, complaint_id: int) -> list[tuple[str, int | None]]:
    with app.app_context():
        rows = db.session.scalars(select(AuditLog).where(AuditLog.target == f"complaint:{complaint_id}")
                                  .order_by(AuditLog.id))
        return [(row.action, row.staff_id) for row in rows]


def staff_id(app, username: str) -> int:
    with app.app_context():
        return db.session.scalars(select(Staff.id).where(Staff.username == username)).one()


def listed(response) -> list[int]:
    """The complaint ids in the queue, in their order."""
    return [int(n) for n in re.findall(r'<tr id="complaint-(\d+)"', response.get_data(as_text=True))]


def row_of(response, complaint_id: int) -> tuple[str, str]:
    """A queue row's class and its text."""
    match = re.search(rf'<tr id="complaint-{complaint_id}" class="([^"]*)">(.*?)</tr>', text_of(response), re.S)
    assert match, f"complaint {complaint_id} is not in the queue"
    return match.group(1), re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", match.group(2))).strip()


def problem(response) -> str | None:
    match = re.search(r'<p class="error form-error" role="alert" id="action-problem">([^<]*)</p>', text_of(response))
    return match.group(1) if match else None


def timeline(response) -> str:
    match = re.search(r'<ol class="timeline" id="timeline">(.*?)</ol>', text_of(response), re.S)
    assert match, "no timeline on the page"
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", match.group(1))).strip()


def post(client, complaint_id: int, action: str, data: dict | None = None, htmx: bool = False):
    data = dict(data or {})
    if action == "goodwill":
        data.setdefault("idempotency_key", uuid.uuid4().hex)
    return client.post(f"{page(complaint_id)}/{action}", data=data, htmx=htmx)


@pytest.fixture
def manager(client, login):
    login(client, "manager")
    return client


def pin_clock(app) -> None:
    """The pages' clock (web.now) stops at FIXED_NOW from here on.

    Pinned after signing in, not with @pytest.mark.config(FROZEN_NOW=...): the login form starts the session at
    web.now() while sessions.load and the idle check read the real clock, so a login at a frozen time in the
    past is taken for one that expired long ago."""
    app.config["FROZEN_NOW"] = FIXED_NOW


@pytest.fixture
def frozen(app, manager):
    """A signed-in manager, then the clock pinned at FIXED_NOW."""
    pin_clock(app)


# --- access ---------------------------------------------------------------------------------------------

def test_cashier_is_refused_everywhere(app, client, login):
    complaint_id = make_complaint(app)
    before = snapshot(app, complaint_id)
    login(client, "cashier")
    for path in (QUEUE, page(complaint_id), FIGURES):
        assert client.get(path).status_code == 403, path
    for action in ACTIONS:
        assert post(client, complaint_id, action, {"body": "x", "points": "5", "assignee": "1"}).status_code == 403
    assert snapshot(app, complaint_id) == before
    assert f'href="{QUEUE}"' not in text_of(client.get("/till/"))


def test_anonymous_is_sent_to_sign_in(app, client):
    complaint_id = make_complaint(app)
    before = snapshot(app, complaint_id)
    for path in (QUEUE, page(complaint_id), FIGURES):
        response = client.get(path)
        assert response.status_code == 302 and response.headers["Location"].startswith("/login"), path
    for action in ACTIONS:
        response = post(client, complaint_id, action, {"body": "x", "points": "5"})
        assert response.status_code == 302 and response.headers["Location"].startswith("/login"), action
    assert snapshot(app, complaint_id) == before


def test_manager_has_the_link_and_sees_only_their_store(app, client, login):
    with app.app_context():
        second_store()
        db.session.commit()
    ours = make_complaint(app)
    theirs = make_complaint(app, store_code="S002")
    before = snapshot(app, theirs)
    login(client, "manager")
    assert 'href="/manage/"' in text_of(client.get("/till/"))  # "Manage" in the top bar
    assert f'href="{QUEUE}"' in text_of(client.get("/manage/"))  # and the console's own menu
    response = client.get(QUEUE)
    assert response.status_code == 200 and is_full_page(response)
    assert listed(response) == [ours]
    assert listed(client.get(f"{QUEUE}?store={theirs}&status=all")) == [ours]  # the store filter is not theirs
    assert client.get(page(theirs)).status_code == 404
    for action in ACTIONS:
        assert post(client, theirs, action, {"body": "x", "to_member": "y", "points": "5"}).status_code == 404
    assert snapshot(app, theirs) == before
    assert client.get(page(ours)).status_code == 200
    assert client.get(page(2**31)).status_code == 404  # beyond a row id: the converter refuses it


def test_admin_sees_every_store_and_can_filter_by_one(app, client, login):
    with app.app_context():
        second_id = second_store().id
        db.session.commit()
    ours = make_complaint(app)
    theirs = make_complaint(app, store_code="S002")
    login(client, "admin")
    response = client.get(QUEUE)
    assert sorted(listed(response)) == sorted([ours, theirs])
    assert "Second Store" in row_of(response, theirs)[1]
    assert listed(client.get(f"{QUEUE}?store={second_id}")) == [theirs]
    assert client.get(page(theirs)).status_code == 200
    assert post(client, theirs, "acknowledge").status_code == 303
    assert snapshot(app, theirs)["status"] == "acknowledged"


# --- the queue ------------------------------------------------------------------------------------------

@pytest.fixture
def queue_data(app):
    """Five complaints at fixed times before FIXED_NOW (24 h to respond, 72 h to resolve)."""
    with app.app_context():
        staff = factories.staff("manager")
        made = {}
        made["late_response"] = file(at=FIXED_NOW - 30 * H, category="product_quality")
        made["fresh_high"] = file(at=FIXED_NOW - 2 * H, severity="high", category="service_attitude")
        made["late_resolution"] = file(at=FIXED_NOW - 80 * H, severity="low", member=None)
        complaints.acknowledge(db.session, made["late_resolution"], staff=staff, now=FIXED_NOW - 79 * H)
        made["resolved"] = file(at=FIXED_NOW - 10 * H)
        moved_to(made["resolved"], "resolved", FIXED_NOW - 10 * H)
        made["closed"] = file(at=FIXED_NOW - 200 * H)
        moved_to(made["closed"], "closed", FIXED_NOW - 200 * H)
        db.session.commit()
        return {name: c.id for name, c in made.items()}


@pytest.mark.usefixtures("frozen")
def test_queue_puts_overdue_first_and_tags_how_late(app, manager, queue_data):
    ids = queue_data
    response = manager.get(QUEUE)
    assert response.status_code == 200
    assert listed(response) == [ids["late_response"], ids["late_resolution"], ids["fresh_high"]]
    css, text = row_of(response, ids["late_response"])
    assert "overdue" in css.split() and "Overdue by 6 hours" in text
    css, text = row_of(response, ids["late_resolution"])
    assert "overdue" in css.split() and "Overdue by 8 hours" in text and "Anonymous" in text
    css, text = row_of(response, ids["fresh_high"])
    assert "overdue" not in css.split() and "Overdue" not in text and "Response due" in text
    assert "A first response is due within 24 hours of a complaint, its resolution within 3 days." in text_of(response)


@pytest.mark.usefixtures("frozen")
def test_service_levels_follow_the_rules_in_force(app, manager, queue_data):
    with app.app_context():
        set_rule(db.session, "complaint_response_hours", "1", staff=None, now=FIXED_NOW)
        set_rule(db.session, "complaint_resolution_hours", "96", staff=None, now=FIXED_NOW)
        db.session.commit()
    response = manager.get(QUEUE)
    assert ("A first response is due within 60 minutes of a complaint, its resolution within 4 days."
            in text_of(response))
    # both unanswered ones are late now (high severity first); the answered one is within its 96 hours
    assert listed(response) == [queue_data["fresh_high"], queue_data["late_response"], queue_data["late_resolution"]]
    css, text = row_of(response, queue_data["fresh_high"])
    assert "overdue" in css.split() and "Overdue by 60 minutes" in text
    css, text = row_of(response, queue_data["late_resolution"])  # 80 h old, answered: due at 96 h now
    assert "overdue" not in css.split() and "Resolution due" in text


@pytest.mark.parametrize("query, expected", [
    ("", ["late_response", "late_resolution", "fresh_high"]),
    ("?status=active", ["late_response", "late_resolution", "fresh_high"]),
    ("?overdue=1", ["late_response", "late_resolution"]),
    ("?status=open", ["late_response", "fresh_high"]),
    ("?status=acknowledged", ["late_resolution"]),
    ("?status=resolved", ["resolved"]),
    ("?status=closed", ["closed"]),
    ("?status=all&overdue=1", ["late_response", "late_resolution"]),
    ("?category=product_quality", ["late_response"]),
    ("?severity=high", ["fresh_high"]),
    ("?severity=low&overdue=1", ["late_resolution"]),
    ("?status=resolved&overdue=1", []),
    ("?status=nonsense&category=nonsense&store=x", ["late_response", "late_resolution", "fresh_high"]),
])
@pytest.mark.usefixtures("frozen")
def test_queue_filters(manager, queue_data, query, expected):
    response = manager.get(QUEUE + query)
    assert response.status_code == 200
    assert listed(response) == [queue_data[name] for name in expected]
    if not expected:
        assert "No complaint matches these filters." in text_of(response)


@pytest.mark.usefixtures("frozen")
def test_queue_all_statuses_and_htmx_gets_only_the_list(manager, queue_data):
    everything = manager.get(f"{QUEUE}?status=all")
    assert sorted(listed(everything)) == sorted(queue_data.values())
    fragment = manager.get(f"{QUEUE}?overdue=1", htmx=True)
    assert fragment.status_code == 200
    assert not is_full_page(fragment)
    assert "HX-Request" in fragment.headers["Vary"]
    assert listed(fragment) == [queue_data["late_response"], queue_data["late_resolution"]]
    assert 'name="status"' not in fragment.get_data(as_text=True)  # the filters stay on the page
    full = manager.get(f"{QUEUE}?overdue=1")
    assert is_full_page(full) and 'name="status"' in full.get_data(as_text=True)


@pytest.mark.usefixtures("frozen")
def test_detail_shows_due_times_and_lateness(manager, queue_data):
    response = manager.get(page(queue_data["late_response"]))
    assert response.status_code == 200 and is_full_page(response)
    text = text_of(response)
    assert "Complaint #%d" % queue_data["late_response"] in text
    assert "First response due" in text and "Resolution due" in text
    assert "Overdue by 6 hours" in text
    assert "The milk was sour." in text


# --- actions --------------------------------------------------------------------------------------------

def test_acknowledge_plain_redirects_and_is_on_timeline_and_audit(app, client, login):
    complaint_id = make_complaint(app)
    username = login(client, "manager")
    me = staff_id(app, username)
    response = post(client, complaint_id, "acknowledge")
    assert response.status_code == 303
    assert response.headers["Location"] == page(complaint_id)
    state = snapshot(app, complaint_id)
    assert state["status"] == "acknowledged" and state["first_response_at"] is not None
    assert events_of(app, complaint_id)[-1] == ("acknowledged", True, me, None)
    assert audit_rows(app, complaint_id)[-1] == ("complaint.acknowledged", me)
    shown = client.get(page(complaint_id))
    assert "Acknowledged" in timeline(shown)
    assert "Manager" in timeline(shown)  # who: the manager's name


def test_acknowledge_htmx_gets_the_block_and_the_url(app, manager):
    complaint_id = make_complaint(app)
    response = post(manager, complaint_id, "acknowledge", htmx=True)
    assert response.status_code == 200
    assert not is_full_page(response)
    assert response.headers["HX-Push-Url"] == page(complaint_id)
    assert "HX-Request" in response.headers["Vary"]
    assert "The complaint is acknowledged." in text_of(response)
    assert 'id="complaint-status">Acknowledged<' in text_of(response)


@pytest.mark.parametrize("htmx", [False, True])
def test_reply_to_member_is_a_first_response(app, client, login, htmx):
    complaint_id = make_complaint(app)
    me = staff_id(app, login(client, "manager"))
    response = post(client, complaint_id, "reply", {"body": "  We are sorry; come by for a refund.  ",
                                                    "to_member": "y"}, htmx=htmx)
    assert response.status_code == (200 if htmx else 303)
    state = snapshot(app, complaint_id)
    assert state["status"] == "acknowledged" and state["first_response_at"] is not None
    assert events_of(app, complaint_id)[-1] == ("reply", True, me, "We are sorry; come by for a refund.")
    assert audit_rows(app, complaint_id)[-1] == ("complaint.reply", me)
    shown = response if htmx else client.get(page(complaint_id))
    assert "Reply to the member" in timeline(shown)
    assert "We are sorry; come by for a refund." in timeline(shown)
    assert "The member reads this" in timeline(shown)


def test_internal_note_leaves_the_status_and_is_marked_internal(app, manager):
    complaint_id = make_complaint(app, member=None)
    response = post(manager, complaint_id, "reply", {"body": "Called the supplier."}, htmx=True)
    assert response.status_code == 200
    assert snapshot(app, complaint_id)["status"] == "open"
    assert events_of(app, complaint_id)[-1][:2] == ("note", False)
    assert "Internal note Internal" in timeline(response)
    assert "The note is added." in text_of(response)
    with app.app_context():
        row = db.session.scalars(select(AuditLog).where(AuditLog.action == "complaint.note")).one()
        assert "Called the supplier." in row.after


def test_assign_lists_the_store_staff_and_admins(app, client, login):
    with app.app_context():
        second_store()
        cashier = factories.staff("cashier")
        elsewhere = factories.staff("cashier", store_code="S002")
        admin = factories.staff("admin", store_code="S002")
        gone = factories.staff("cashier")
        gone.active = False
        db.session.commit()
        cashier_id, cashier_name, elsewhere_id, admin_id, gone_id = (
            cashier.id, cashier.name, elsewhere.id, admin.id, gone.id)
    complaint_id = make_complaint(app)
    me = staff_id(app, login(client, "manager"))
    shown = client.get(page(complaint_id)).get_data(as_text=True)
    options = set(re.findall(r'<option[^>]*value="(\d+)"', shown))
    assert {str(cashier_id), str(admin_id), str(me)} <= options
    assert str(elsewhere_id) not in options and str(gone_id) not in options

    response = post(client, complaint_id, "assign", {"assignee": str(cashier_id)})
    assert response.status_code == 303
    assert snapshot(app, complaint_id)["assigned_to_id"] == cashier_id
    assert events_of(app, complaint_id)[-1] == ("assigned", False, me, cashier_name)
    assert audit_rows(app, complaint_id)[-1] == ("complaint.assigned", me)
    assert f"To {cashier_name}" in timeline(client.get(page(complaint_id)))

    assert post(client, complaint_id, "assign", {"assignee": str(admin_id)}).status_code == 303
    assert snapshot(app, complaint_id)["assigned_to_id"] == admin_id


@pytest.mark.parametrize("who", ["elsewhere", "gone", "missing", "nonsense"])
def test_assign_refuses_someone_outside_the_store(app, manager, who):
    with app.app_context():
        second_store()
        people = {"elsewhere": factories.staff("cashier", store_code="S002"), "gone": factories.staff("cashier")}
        people["gone"].active = False
        db.session.commit()
        ids = {name: str(person.id) for name, person in people.items()} | {"missing": "999999", "nonsense": "x"}
    complaint_id = make_complaint(app)
    before = snapshot(app, complaint_id)
    response = post(manager, complaint_id, "assign", {"assignee": ids[who]})
    assert response.status_code == 422
    assert field_error(response, "assignee") == "Choose someone who works at this store."
    assert snapshot(app, complaint_id) == before


def test_resolve_then_close(app, client, login):
    complaint_id = make_complaint(app, state="acknowledged")
    me = staff_id(app, login(client, "manager"))
    response = post(client, complaint_id, "resolve", {"body": "Replaced the product."}, htmx=True)
    assert response.status_code == 200
    state = snapshot(app, complaint_id)
    assert state["status"] == "resolved" and state["resolved_at"] is not None
    assert events_of(app, complaint_id)[-1] == ("resolved", True, me, "Replaced the product.")
    assert "Replaced the product." in timeline(response)
    assert 'action="/manage/complaints/%d/close"' % complaint_id in response.get_data(as_text=True)

    response = post(client, complaint_id, "close")
    assert response.status_code == 303
    state = snapshot(app, complaint_id)
    assert state["status"] == "closed" and state["closed_at"] is not None
    assert events_of(app, complaint_id)[-1] == ("closed", True, me, None)
    assert [action for action, _who in audit_rows(app, complaint_id)][-2:] == ["complaint.resolved", "complaint.closed"]
    shown = client.get(page(complaint_id))
    assert "This complaint is closed." in text_of(shown)
    assert "/resolve" not in shown.get_data(as_text=True)


def test_resolve_without_a_message(app, manager):
    complaint_id = make_complaint(app)  # straight from open: resolving is also the first response
    assert post(manager, complaint_id, "resolve", {"body": ""}).status_code == 303
    state = snapshot(app, complaint_id)
    assert state["status"] == "resolved" and state["first_response_at"] == state["resolved_at"]
    assert events_of(app, complaint_id)[-1][0:2] == ("resolved", True)
    assert events_of(app, complaint_id)[-1][3] is None


def test_goodwill_posts_a_bonus_linked_to_the_complaint_once(app, client, login):
    complaint_id = make_complaint(app, state="acknowledged")
    me = staff_id(app, login(client, "manager"))
    before = snapshot(app, complaint_id)
    key = form_key(client.get(page(complaint_id)), "/goodwill")
    first = post(client, complaint_id, "goodwill", {"points": "50", "idempotency_key": key}, htmx=True)
    again = post(client, complaint_id, "goodwill", {"points": "50", "idempotency_key": key}, htmx=True)
    assert first.status_code == 200 and again.status_code == 200
    assert "The goodwill points are posted." in text_of(first)
    assert form_key(first, "/goodwill") != key  # the next grant is a new form
    after = snapshot(app, complaint_id)
    assert after["balance"] == before["balance"] + 50
    assert after["ledger"] == before["ledger"] + 1
    with app.app_context():
        entry = db.session.scalars(select(LedgerEntry).where(LedgerEntry.complaint_id == complaint_id)).one()
        assert (entry.kind, entry.points, entry.reason, entry.staff_id) == ("bonus", 50, "goodwill", me)
        assert entry.idempotency_key == key
    assert [kind for kind, *_rest in events_of(app, complaint_id)].count("goodwill") == 1
    assert events_of(app, complaint_id)[-1] == ("goodwill", True, me, "50")
    assert audit_rows(app, complaint_id)[-1] == ("complaint.goodwill", me)
    assert "50 points to the member" in timeline(again)
    assert 'id="complaint-goodwill">50<' in text_of(again)

    plain = post(client, complaint_id, "goodwill", {"points": "1,000"})
    assert plain.status_code == 303
    assert snapshot(app, complaint_id)["balance"] == before["balance"] + 1050


# --- refusals -------------------------------------------------------------------------------------------

REFUSALS = [
    # (state, with a member, action, form, field (None: above the forms), message)
    ("open", True, "close", {}, None, "This complaint is not resolved yet."),
    ("acknowledged", True, "close", {}, None, "This complaint is not resolved yet."),
    ("closed", True, "close", {}, None, "This complaint is closed."),
    ("acknowledged", True, "acknowledge", {}, None, "This complaint is already acknowledged."),
    ("resolved", True, "acknowledge", {}, None, "This complaint is already resolved."),
    ("resolved", True, "resolve", {"body": "again"}, None, "This complaint is already resolved."),
    ("closed", True, "assign", {"assignee": "self"}, None, "This complaint is closed."),
    ("closed", True, "reply", {"body": "Hello", "to_member": "y"}, None, "This complaint is closed."),
    ("open", True, "reply", {"body": "   ", "to_member": "y"}, "reply-body", "Write the reply."),
    ("open", True, "reply", {"body": ""}, "reply-body", "Write the reply."),
    ("open", True, "reply", {"body": "x" * 2001}, "reply-body", "Use at most 2000 characters."),
    ("open", False, "reply", {"body": "We are sorry.", "to_member": "y"}, "reply-to-member",
     "This complaint has no member to reply to; add a note instead."),
    ("acknowledged", True, "goodwill", {"points": "0"}, "goodwill-points", "Give from 1 to 100,000 points."),
    ("acknowledged", True, "goodwill", {"points": ""}, "goodwill-points", "Give from 1 to 100,000 points."),
    ("acknowledged", True, "goodwill", {"points": "100001"}, "goodwill-points", "Give from 1 to 100,000 points."),
    ("acknowledged", True, "goodwill", {"points": "-5"}, "goodwill-points", "Points cannot be negative."),
    ("acknowledged", False, "goodwill", {"points": "50"}, "goodwill-points",
     "This complaint has no member to give points to."),
]


@pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
@pytest.mark.parametrize("state, with_member, action, data, field, message", REFUSALS)
def test_refused_actions_say_why_and_change_nothing(app, client, login, htmx, state, with_member, action, data,
                                                    field, message):
    complaint_id = make_complaint(app, state=state, member=with_member)
    me = staff_id(app, login(client, "manager"))
    data = {name: str(me) if value == "self" else value for name, value in data.items()}
    before = snapshot(app, complaint_id)
    response = post(client, complaint_id, action, data, htmx=htmx)
    assert response.status_code == 422
    assert is_full_page(response) is not htmx
    assert "HX-Push-Url" not in response.headers
    if field is None:
        assert problem(response) == message
    else:
        assert field_error(response, field) == message
        assert problem(response) is None
    assert snapshot(app, complaint_id) == before


def test_a_goodwill_form_cannot_be_replayed_on_another_complaint(app, manager):
    first, second = make_complaint(app, state="acknowledged"), make_complaint(app, state="acknowledged")
    key = form_key(manager.get(page(first)), "/goodwill")
    assert post(manager, first, "goodwill", {"points": "20", "idempotency_key": key}).status_code == 303
    before = snapshot(app, second)
    response = post(manager, second, "goodwill", {"points": "20", "idempotency_key": key}, htmx=True)
    assert response.status_code == 422
    assert problem(response) == "This form was already used. Reload the page."
    assert snapshot(app, second) == before


def test_close_twice_through_the_page(app, manager):
    complaint_id = make_complaint(app, state="resolved")
    assert post(manager, complaint_id, "close").status_code == 303
    closed = snapshot(app, complaint_id)
    response = post(manager, complaint_id, "close", htmx=True)
    assert response.status_code == 422
    assert problem(response) == "This complaint is closed."
    assert snapshot(app, complaint_id) == closed


def test_a_refused_reply_keeps_what_was_typed_and_nothing_leaks_into_other_forms(app, manager):
    complaint_id = make_complaint(app, member=None)
    response = post(manager, complaint_id, "reply", {"body": "Sorry about that", "to_member": "y"})
    assert response.status_code == 422
    body = response.get_data(as_text=True)
    assert re.search(r'<textarea[^>]*id="reply-body"[^>]*>\s*Sorry about that</textarea>', body)
    assert re.search(r'<textarea[^>]*id="resolve-body"[^>]*>\s*</textarea>', body)


# --- figures --------------------------------------------------------------------------------------------

@pytest.fixture
def figures_data(app):
    """A small, hand-computed set (FIXED_NOW is 12:00 on 15 June in Shanghai).

    Test Store, last 7 days: four complaints.
      A product_quality  made -100 h  answered +2 h  resolved +10 h  rated 5
      B product_quality  made  -50 h  answered +4 h  resolved +30 h  rated 3
      C service_attitude made  -20 h  answered +1 h (a reply)        still active
      D service_attitude made   -5 h  no answer yet                  open
    and one made ten days ago, never answered (open, overdue, outside the period).
    Second Store: E other, made -30 h, resolved at +6 h (its first response too).
    Visits at Test Store: 5, 4 and 3 in the last three days, and a 5 eleven days ago (outside the 7 days).
    """
    with app.app_context():
        second_store()
        staff = factories.staff("manager")
        other = factories.staff("manager", store_code="S002")

        def made(hours_ago, category, store_code="S001"):
            return file(at=FIXED_NOW - hours_ago * H, category=category, store_code=store_code)

        a, b = made(100, "product_quality"), made(50, "product_quality")
        for c, answered, resolved, rating in ((a, 2, 10, 5), (b, 4, 30, 3)):
            complaints.acknowledge(db.session, c, staff=staff, now=c.created_at + answered * H)
            complaints.resolve(db.session, c, staff=staff, body=None, now=c.created_at + resolved * H)
            complaints.rate(db.session, c, member=c.member, rating=rating, now=c.created_at + (resolved + 1) * H)
        c = made(20, "service_attitude")
        complaints.reply(db.session, c, staff=staff, body="On it.", to_member=True, now=c.created_at + H)
        made(5, "service_attitude")
        made(240, "other")
        e = made(30, "other", store_code="S002")
        complaints.resolve(db.session, e, staff=other, body=None, now=e.created_at + 6 * H)

        member = factories.member()
        for rating, days_ago in ((5, 1), (4, 2), (3, 3), (5, 11)):
            moment = FIXED_NOW - timedelta(days=days_ago)
            bought = factories.purchase(member, 10_000, now=moment)
            complaints.rate_visit(db.session, member=member, purchase=bought.purchase, rating=rating, comment=None,
                                  now=moment + H)
        db.session.commit()


def group_row(response, key: str) -> list[str]:
    """The cells of a figures table's row, as text."""
    match = re.search(rf'<tr data-group="{re.escape(key)}">(.*?)</tr>', text_of(response), re.S)
    assert match, f"no row {key!r}"
    cells = re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", match.group(1), re.S)
    return [re.sub(r"<[^>]+>", "", cell).strip() for cell in cells]


@pytest.mark.usefixtures("frozen")
def test_figures_for_a_managers_store(manager, figures_data):
    response = manager.get(f"{FIGURES}?period=7")
    assert response.status_code == 200 and is_full_page(response)
    assert (figure(response, "open"), figure(response, "overdue"), figure(response, "complaints")) == ("3", "1", "4")
    assert (figure(response, "response-median"), figure(response, "response-p90")) == ("2.0", "4.0")
    assert (figure(response, "resolution-median"), figure(response, "resolution-p90")) == ("20.0", "30.0")
    assert figure(response, "rating") == "4.0"
    assert (figure(response, "visit-average"), figure(response, "visit-share")) == ("4.0", "66.7%")
    assert group_row(response, "product_quality") == ["Product quality", "2", "3.0", "4.0", "20.0", "30.0", "4.0 (2)"]
    assert group_row(response, "service_attitude") == ["Service attitude", "2", "1.0", "1.0", "—", "—", "—"]
    assert group_row(response, "Test Store")[:2] == ["Test Store", "4"]
    assert "Second Store" not in text_of(response)
    assert 'name="store"' not in response.get_data(as_text=True)  # a manager has no store to choose
    assert 'style="' not in response.get_data(as_text=True)  # the CSP forbids inline styles
    assert "<meter" in response.get_data(as_text=True)


def test_figures_for_an_admin_all_stores_and_one(app, client, login, figures_data):
    login(client, "admin")
    pin_clock(app)
    response = client.get(f"{FIGURES}?period=7")
    assert (figure(response, "open"), figure(response, "overdue"), figure(response, "complaints")) == ("3", "1", "5")
    assert (figure(response, "response-median"), figure(response, "response-p90")) == ("3.0", "6.0")
    assert (figure(response, "resolution-median"), figure(response, "resolution-p90")) == ("10.0", "30.0")
    assert group_row(response, "Second Store")[:4] == ["Second Store", "1", "6.0", "6.0"]
    assert group_row(response, "other")[:2] == ["Other", "1"]

    with app.app_context():
        second_id = db.session.scalars(select(Store.id).where(Store.code == "S002")).one()
    only_second = client.get(f"{FIGURES}?period=7&store={second_id}", htmx=True)
    assert not is_full_page(only_second)
    assert (figure(only_second, "open"), figure(only_second, "complaints")) == ("0", "1")
    assert figure(only_second, "visit-average") == "—"
    assert "Second Store, from" in text_of(only_second)


@pytest.mark.parametrize("period, complaints_count, visits", [
    ("today", "1", "0"), ("7", "4", "3"), ("30", "5", "4"), ("90", "5", "4"), ("bogus", "4", "3"),
])
@pytest.mark.usefixtures("frozen")
def test_figures_periods(manager, figures_data, period, complaints_count, visits):
    response = manager.get(f"{FIGURES}?period={period}")
    assert figure(response, "complaints") == complaints_count
    assert figure(response, "visit-count") == visits


@pytest.mark.usefixtures("frozen")
def test_today_starts_at_local_midnight(app, manager):
    # FIXED_NOW is 12:00 in Shanghai: today began at 16:00 UTC the day before.
    with app.app_context():
        file(at=FIXED_NOW - 11 * H - 30 * timedelta(minutes=1))  # 00:30 today, local
        file(at=FIXED_NOW - 12 * H - 30 * timedelta(minutes=1))  # 23:30 yesterday, local
        db.session.commit()
    response = manager.get(f"{FIGURES}?period=today")
    assert figure(response, "complaints") == "1"
    assert "from June 15, 2026 to now" in text_of(response)
    assert figure(manager.get(f"{FIGURES}?period=7"), "complaints") == "2"


# --- the time limits, edited by a manager or an admin ------------------------------------------------------------------

def test_an_admin_changes_the_time_limits_and_the_change_is_audited(app, client, login):
    login(client, "admin")
    page = client.get("/manage/complaints")
    assert "Change the time limits" in page.get_data(as_text=True)
    response = client.post("/manage/complaints/service-levels",
                           data={"complaint_response_hours": "12", "complaint_resolution_hours": "48"})
    assert response.status_code == 303
    with app.app_context():
        current = load_rules(db.session)
        assert (current.complaint_response_hours, current.complaint_resolution_hours) == (12, 48)
        actions = db.session.scalars(select(AuditLog.target).where(AuditLog.action == "rules.set")).all()
        assert sorted(actions) == ["rule:complaint_resolution_hours", "rule:complaint_response_hours"]
    assert "within 12 hours" in client.get("/manage/complaints?saved=1").get_data(as_text=True)


@pytest.mark.parametrize("hours", ["0", "abc", "", "99999"])
def test_a_bad_time_limit_is_refused_beside_the_field_and_nothing_changes(app, client, login, hours):
    login(client, "admin")
    response = client.post("/manage/complaints/service-levels",
                           data={"complaint_response_hours": hours, "complaint_resolution_hours": "48"})
    assert response.status_code == 422
    assert "Enter a whole number of hours from 1 to 720." in response.get_data(as_text=True)
    with app.app_context():
        assert load_rules(db.session).complaint_resolution_hours == 72


def test_a_manager_changes_the_time_limits_too(app, client, login):
    login(client, "manager")
    assert "Change the time limits" in client.get("/manage/complaints").get_data(as_text=True)
    assert client.post("/manage/complaints/service-levels",
                       data={"complaint_response_hours": "6", "complaint_resolution_hours": "36"}).status_code == 303
    with app.app_context():
        assert load_rules(db.session).complaint_response_hours == 6


def test_each_step_is_audited_with_the_address_it_came_from(app, client, login):
    with app.app_context():
        complaint = complaints.file_complaint(
            db.session, store=factories.store(), category="other", severity="low", description="Noisy fridge",
            channel="counter", now=factories._now())
        db.session.commit()
        complaint_id = complaint.id
    login(client, "manager")
    response = client.post(f"/manage/complaints/{complaint_id}/acknowledge", data={},
                           environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert response.status_code == 303
    with app.app_context():
        row = db.session.scalars(select(AuditLog).where(AuditLog.action == "complaint.acknowledged")).one()
        assert row.ip == "10.1.2.3" and row.target == f"complaint:{complaint_id}"
