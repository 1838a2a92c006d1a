"""Who may use every route of the portal, written down by hand, and proven against every role.

- EXPECTED below is the rule for each endpoint, typed out here on purpose (never read from the views), and
  RECENT_LOGIN the staff routes that ask for the password again: a new route, or a view whose declaration
  changes, fails `test_every_route_is_written_down_with_its_level` until someone decides who may use it and
  writes it here.
- The sweep walks app.url_map: every rule, every method it takes (GET, POST), as anonymous, member, cashier,
  manager and admin. URL parameters are real rows made for the sweep, so an allowed role reaches the view: it
  must not be refused (401, 403, sent to a sign-in page) and never gets a 500; a GET answers 200 or a redirect.
  A refused role gets 403 when signed in as the wrong kind, the right sign-in page when not signed in (the
  staff one for staff pages, the member one for member pages; 401 with HX-Redirect for htmx), and the JSON API
  answers 401 to anyone without a register's bearer token, whatever session cookie they carry.
- Members try other members' ids on every member route that takes one: 404, and the other member's rows stay
  as they were. A cashier or manager of one store tries another store's purchases, returns, complaints and
  members (returns are the one thing allowed across stores: PRODUCT.md, "Returns").

The sweep covers everything tests/test_manage_access.py checks of the /manage routes (cashier and member 403,
plain and htmx; visitors sent to /login; manager 403 on admin-only routes), with real rows instead of id 1, for
every blueprint. Runs on SQLite and PostgreSQL.
"""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import func, select

from portal import api_tokens, campaigns, complaints, imports, messaging, returns
from portal.extensions import db
from portal.models import (
    Campaign,
    Complaint,
    ComplaintEvent,
    LedgerEntry,
    Member,
    MemberImport,
    Message,
    MessageTemplate,
    Purchase,
    Return,
    Staff,
    VisitRating,
)
from portal.rules import load_rules

from . import factories
from .helpers import form_key, text_of

UTC = timezone.utc
SECRET = "test-secret-key"  # TestConfig.SECRET_KEY
ROLES = ("anonymous", "member", "cashier", "manager", "admin")

# --- the table: who may use each endpoint -------------------------------------------------------------------
# public: anyone; member: a signed-in member (their own data only); cashier / manager / admin: staff of at
# least that role; register: a cash register's bearer token on the JSON API (no session counts there).

EXPECTED = {
    # front door, language, one-tap unsubscribe, static files
    "main.index": "public",
    "main.set_language": "public",
    "main.unsubscribe": "public",
    "main.confirm_unsubscribe": "public",
    "static": "public",
    # signing in and out
    "auth.login": "public",
    "auth.logout": "public",
    "auth.member_login": "public",
    "auth.activate": "public",
    "auth.reauthenticate": "cashier",  # staff enter their password again before a sensitive change
    # the member's own pages
    "member.home": "member",
    "member.card": "member",
    "member.history": "member",
    "member.inbox": "member",
    "member.show_message": "member",
    "member.mark_message_read": "member",
    "member.profile": "member",
    "member.update_profile": "member",
    "member.change_password": "member",
    "member.my_data": "member",
    "member.download_data": "member",
    "member.confirm_delete": "member",
    "member.delete_account": "member",
    "member.rate_visit": "member",
    "member.my_complaints": "member",
    "member.new_complaint": "member",
    "member.file_complaint": "member",
    "member.show_complaint": "member",
    "member.reopen_complaint": "member",
    "member.rate_complaint": "member",
    # the till
    "till.index": "cashier",
    "till.lookup": "cashier",
    "till.new_member": "cashier",
    "till.register_member": "cashier",
    "till.show_member": "cashier",
    "till.record_purchase": "cashier",
    "till.show_receipt": "cashier",
    "till.find_purchases": "cashier",
    "till.new_return": "cashier",
    "till.record_return": "cashier",
    "till.show_return": "cashier",
    "till.issue_activation_code": "cashier",
    "till.new_complaint": "cashier",
    "till.file_complaint": "cashier",
    "till.show_complaint": "cashier",
    "till.adjust_points": "manager",  # cashiers never adjust points
    # the manager console
    "manage.show_dashboard": "manager",
    "manage.record_takings": "manager",
    "manage.show_audit_log": "manager",
    "manage.show_fraud_signals": "manager",
    "manage.list_complaints": "manager",
    "manage.show_complaint": "manager",
    "manage.acknowledge_complaint": "manager",
    "manage.assign_complaint": "manager",
    "manage.close_complaint": "manager",
    "manage.grant_goodwill": "manager",
    "manage.reply_to_complaint": "manager",
    "manage.resolve_complaint": "manager",
    "manage.show_complaint_figures": "manager",
    "manage.update_service_levels": "manager",
    "manage.imports_page": "manager",
    "manage.start_import": "manager",
    "manage.show_import": "manager",
    "manage.import_refusals_csv": "manager",
    "manage.run_import_for_real": "manager",
    "manage.run_import_step": "manager",
    "manage.list_members": "manager",
    "manage.export_members": "manager",
    "manage.show_member": "manager",
    "manage.list_campaigns": "manager",
    "manage.create_campaign": "manager",
    "manage.new_campaign": "manager",
    "manage.preview_campaign": "manager",
    "manage.show_campaign": "manager",
    "manage.cancel_campaign": "manager",
    "manage.run_campaign_step": "manager",
    "manage.list_message_templates": "manager",
    "manage.new_message_template": "manager",
    "manage.create_message_template": "manager",
    "manage.edit_message_template": "manager",
    "manage.update_message_template": "manager",
    "manage.archive_message_template": "manager",
    "manage.preview_message_template": "manager",
    "manage.show_settings": "manager",
    "manage.update_rules": "manager",
    "manage.update_tiers": "manager",
    "manage.list_staff": "manager",
    "manage.create_staff": "manager",
    "manage.deactivate_staff": "manager",
    "manage.reactivate_staff": "manager",
    "manage.reset_staff_password": "manager",
    "manage.change_staff_role": "admin",
    "manage.list_stores": "admin",
    "manage.create_store": "admin",
    "manage.update_store": "admin",
    "manage.close_store": "admin",
    "manage.reopen_store": "admin",
    "manage.api_tokens_page": "admin",
    "manage.create_api_token": "admin",
    "manage.revoke_api_token": "admin",
    # the cash registers' JSON API
    "api.openapi": "public",
    "api.lookup_members": "register",
    "api.show_member": "register",
    "api.member_ledger": "register",
    "api.register_member": "register",
    "api.record_purchase": "register",
    "api.record_return": "register",
    "api.file_complaint": "register",
}

# Sensitive staff routes that ask for the password again when it was entered long ago (recent_login=True).
RECENT_LOGIN = {
    "till.adjust_points",
    "manage.export_members",
    "manage.update_service_levels", "manage.grant_goodwill",
    "manage.update_tiers", "manage.update_rules",
    "manage.create_api_token", "manage.revoke_api_token",
    "manage.create_staff", "manage.deactivate_staff", "manage.reactivate_staff", "manage.change_staff_role",
    "manage.reset_staff_password",
    "manage.create_store", "manage.update_store", "manage.close_store", "manage.reopen_store",
    "manage.start_import", "manage.run_import_for_real",
}

ALLOWED = {
    "public": set(ROLES),
    "member": {"member"},
    "cashier": {"cashier", "manager", "admin"},
    "manager": {"manager", "admin"},
    "admin": {"admin"},
    "register": set(),  # only a bearer token, checked separately
}
SIGN_IN_PAGES = ("/login", "/member/login")
# Allowed answers that send someone to a sign-in page by design, not as a refusal.
SENDS_TO_SIGN_IN = {
    ("main.index", "anonymous"),  # the front door sends visitors to the member sign-in
    ("auth.logout", "member"), ("auth.logout", "cashier"), ("auth.logout", "manager"), ("auth.logout", "admin"),
    ("auth.logout", "anonymous"),
}
# POSTs after which the client may be signed out (or signed in afresh): the sweep signs in again.
SIGNS_OUT = {"auth.logout", "auth.login", "auth.member_login", "auth.activate", "member.delete_account"}


# --- the rows the URLs point at -----------------------------------------------------------------------------

def _daytime(moment: datetime) -> datetime:
    """10:00 in Shanghai (02:00 UTC) on or before `moment`: outside the quiet hours, so messages go at once."""
    day = moment.replace(hour=2, minute=0, second=0, microsecond=0)
    return day if day <= moment else day - timedelta(days=1)


def _template(code: str, kind: str, at: datetime) -> MessageTemplate:
    row = MessageTemplate(code=code, kind=kind, name=f"Access {code}", subject_en="Hello", body_en="Hello {name}.",
                          subject_zh="你好", body_zh="{name}，你好。", created_at=at, updated_at=at)
    db.session.add(row)
    db.session.flush()
    return row


def _delivered(member: Member, template: MessageTemplate, at: datetime) -> Message:
    """A message that reached the member's inbox."""
    message = messaging.queue(db.session, member=member, template=template, purpose="test", now=at,
                              channels=messaging.Channels())
    assert message is not None
    db.session.commit()
    messaging.send_due(db.session, now=at, rules=load_rules(db.session),
                       senders={"inbox": messaging.deliver_to_inbox}, default_zone="Asia/Shanghai")
    return message


def build_world(app) -> dict:
    """One of everything a URL can name, at store S001, plus a signed-in identity for each role.

    The staff member and the store the sweep acts on (deactivate, reset, close) are spare ones, never the
    people signed in; the admin has no store, as a chain's admin may."""
    moment = datetime.now(UTC)
    with app.app_context():
        home = factories.store()
        spare_store = factories.store("S002", "Spare Store")
        cashier = factories.staff("cashier")
        manager = factories.staff("manager")
        admin = factories.staff("admin")
        admin.store_id = None
        target = factories.staff("cashier")
        member = factories.member(name="Access Member", activated=True, now=moment - timedelta(days=30))
        member.marketing_consent = True
        rules = load_rules(db.session)
        sale = factories.purchase(member, 20_000, now=moment - timedelta(hours=2)).purchase
        ret = returns.record_return(db.session, purchase_id=sale.id, store=home, staff=None,
                                    returned_gross_fen=1_000, idempotency_key=uuid.uuid4().hex, rules=rules,
                                    now=moment - timedelta(hours=1)).ret
        complaint = complaints.file_complaint(
            db.session, store=home, category="product_quality", severity="normal", description="Sour milk",
            channel="counter", member=member, now=moment - timedelta(hours=1))
        offer = _template("access_offer", "marketing", moment)
        message = _delivered(member, offer, _daytime(moment))
        job = imports.start_import(db.session, data="name,phone,points\n张三,13800000001,100\n".encode(),
                                   filename="members.csv", store=home, staff=manager, dry_run=True, now=moment,
                                   max_bytes=1_000_000)
        campaign = campaigns.create_campaign(
            db.session, name="Access campaign", template=offer, audience=campaigns.Audience(store_id=home.id),
            send_at=moment, control_percent=0, staff=manager, now=moment)
        swept_token, _shown = api_tokens.create_token(db.session, name="Till swept", store=home, staff=None,
                                                      now=moment)
        _row, register_token = api_tokens.create_token(db.session, name="Till used", store=home, staff=None,
                                                       now=moment)
        db.session.commit()
        return {
            "usernames": {"cashier": cashier.username, "manager": manager.username, "admin": admin.username},
            "member_phone": member.phone,
            "register_token": register_token,
            "params": {
                "purchase_id": sale.id, "complaint_id": complaint.id, "return_id": ret.id,
                "message_id": message.id, "import_id": job.id, "campaign_id": campaign.id,
                "template_id": offer.id, "staff_id": target.id, "store_id": spare_store.id,
                "token_id": swept_token.id, "card_number": member.card_number, "member_id": member.id,
                "token": messaging.unsubscribe_token(message.id, SECRET), "filename": "js/portal.js",
            },
        }


def sign_in(client, world: dict, role: str) -> None:
    if role == "anonymous":
        return
    if role == "member":
        response = client.post("/member/login", data={"phone": world["member_phone"].removeprefix("+86"),
                                                      "password": factories.PASSWORD})
    else:
        response = client.post("/login", data={"username": world["usernames"][role],
                                               "password": factories.PASSWORD})
    assert response.status_code == 303, (role, response.status_code)


def routes(app, params: dict) -> list[tuple[str, str, str]]:
    """(endpoint, method, url) for every rule and every method of it that the portal uses."""
    found = []
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: (r.rule, r.endpoint)):
        missing = rule.arguments - params.keys()
        assert not missing, f"{rule.rule}: give build_world a real row for {sorted(missing)}"
        url = rule.build({name: params[name] for name in rule.arguments}, append_unknown=False)[1]
        for method in sorted(rule.methods & {"GET", "POST"}):
            found.append((rule.endpoint, method, url))
    return found


# --- judging one answer ----------------------------------------------------------------------------------

def _location(response) -> str:
    return response.headers.get("Location", "")


def _sign_in_target(location: str) -> str | None:
    path = urlsplit(location).path
    return path if path in SIGN_IN_PAGES else None


def judge_allowed(endpoint: str, method: str, role: str, response) -> str | None:
    """Why an allowed answer is wrong, or None."""
    status = response.status_code
    if status >= 500:
        return "server error"
    if status in (401, 403):
        return "refused"
    sent_to = _location(response) if 300 <= status < 400 else response.headers.get("HX-Redirect", "")
    if _sign_in_target(sent_to) and (endpoint, role) not in SENDS_TO_SIGN_IN:
        return f"sent to sign in ({sent_to})"
    if method == "GET" and not (status == 200 or 300 <= status < 400):
        return "a GET of a real row should answer 200 or a redirect"
    return None


def judge_refused(level: str, role: str, url: str, response, htmx: bool = False) -> str | None:
    """Why a refusal is the wrong one, or None."""
    status = response.status_code
    if level == "register":
        body = response.get_json(silent=True) or {}
        if status != 401 or body.get("error", {}).get("code") != "unauthorised":
            return "the API must answer 401 JSON without a register's token"
        if not response.headers.get("WWW-Authenticate", "").startswith("Bearer"):
            return "401 without WWW-Authenticate: Bearer"
        return None
    if role != "anonymous":
        return None if status == 403 else "signed in as the wrong kind: expected 403"
    sign_in_page = "/member/login" if level == "member" else "/login"
    if htmx:
        if status != 401:
            return "htmx without a login: expected 401 with HX-Redirect"
        target = response.headers.get("HX-Redirect", "")
    else:
        if status != 302:
            return f"without a login: expected a redirect to {sign_in_page}"
        target = _location(response)
    parts = urlsplit(target)
    back = parse_qs(parts.query).get("next", [""])[0]
    if parts.path != sign_in_page or urlsplit(back).path != urlsplit(url).path:
        return f"expected {sign_in_page}?next={url}, got {target!r}"
    return None


# --- 1. the table ----------------------------------------------------------------------------------------

def test_every_route_is_written_down_with_its_level(app):
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()}
    unlisted = sorted(endpoints - EXPECTED.keys())
    assert not unlisted, f"new routes: write down who may use them in EXPECTED: {unlisted}"
    gone = sorted(EXPECTED.keys() - endpoints)
    assert not gone, f"routes in EXPECTED that the app no longer has: {gone}"
    declared = {endpoint: getattr(app.view_functions[endpoint], "access_level", None) for endpoint in endpoints}
    changed = {endpoint: f"declared {declared[endpoint]!r}, table says {EXPECTED[endpoint]!r}"
               for endpoint in sorted(endpoints) if declared[endpoint] != EXPECTED[endpoint]}
    assert not changed, changed
    sensitive = {endpoint for endpoint in endpoints if getattr(app.view_functions[endpoint], "recent_login", False)}
    assert sorted(sensitive - RECENT_LOGIN) == [], "newly sensitive routes: add them to RECENT_LOGIN"
    assert sorted(RECENT_LOGIN - sensitive) == [], "routes that no longer ask for the password again"


# --- 2. the sweep ----------------------------------------------------------------------------------------

def test_every_route_answers_every_role_as_the_table_says(app):
    world = build_world(app)
    swept = routes(app, world["params"])
    failures = []
    for role in ROLES:
        client = app.test_client()
        sign_in(client, world, role)
        for endpoint, method, url in swept:
            level = EXPECTED[endpoint]
            for htmx in (False, True):  # htmx: the view renders a fragment; a visitor gets 401 + HX-Redirect
                response = client.open(url, method=method, htmx=htmx)
                if role in ALLOWED[level]:
                    problem = judge_allowed(endpoint, method, role, response)
                else:
                    problem = judge_refused(level, role, url, response, htmx=htmx)
                response.close()  # a streamed answer (a static file, a CSV) ends its request context here
                if problem:
                    failures.append(f"{endpoint} {method} {url} as {role}{' (htmx)' if htmx else ''}: "
                                    f"{response.status_code} - {problem}")
                if method == "POST" and endpoint in SIGNS_OUT:
                    client = app.test_client()
                    sign_in(client, world, role)
    assert not failures, f"{len(failures)} wrong answers:\n" + "\n".join(failures)


def test_the_api_answers_a_registers_token_and_only_that(app):
    """Every register route: a valid bearer token reaches the view (whatever it then says about the body);
    a wrong one, or a staff member's session cookie, is a 401 like no token at all."""
    world = build_world(app)
    api = [(e, m, u) for e, m, u in routes(app, world["params"]) if EXPECTED[e] == "register"]
    assert len(api) >= 7
    failures = []
    staff = app.test_client()
    sign_in(staff, world, "admin")
    for endpoint, method, url in api:
        body = {"json": {}} if method == "POST" else {}
        good = staff.open(url, method=method, headers={"Authorization": f"Bearer {world['register_token']}"},
                          **body)
        if good.status_code >= 500 or good.status_code in (401, 403):
            failures.append(f"{endpoint} {method} {url} with a valid token: {good.status_code}")
        for header in ("Bearer not-a-real-token", "Basic YWRtaW46YWRtaW4=", f"Token {world['register_token']}"):
            bad = staff.open(url, method=method, headers={"Authorization": header}, **body)
            problem = judge_refused("register", "admin", url, bad)
            if problem:
                failures.append(f"{endpoint} {method} {url} with {header.split()[0]}: {bad.status_code} - {problem}")
    assert not failures, "\n".join(failures)


# --- 3. members and other members' ids -------------------------------------------------------------------

MEMBER_ID_ROUTES = {  # every member route whose URL names a row
    "member.show_complaint", "member.rate_complaint", "member.reopen_complaint",
    "member.show_message", "member.mark_message_read", "member.rate_visit",
}


def _members_world(app) -> dict:
    """Two activated members; the other one has a resolved complaint (so it could be rated and reopened), an
    unread message, and a recent visit not yet rated: each would change if the owner check were missing."""
    moment = datetime.now(UTC)
    with app.app_context():
        manager = factories.staff("manager")
        mine = factories.member(name="Me Myself", activated=True, now=moment - timedelta(days=30))
        theirs = factories.member(name="Someone Else", activated=True, now=moment - timedelta(days=30))
        sale = factories.purchase(theirs, 10_000, now=moment - timedelta(hours=3)).purchase
        complaint = complaints.file_complaint(
            db.session, store=factories.store(), category="service_attitude", severity="normal",
            description="Rude", channel="member", member=theirs, now=moment - timedelta(hours=3))
        complaints.resolve(db.session, complaint, staff=manager, body="Apologised", now=moment - timedelta(hours=2))
        notice = _template("access_notice", "service", moment)
        message = _delivered(theirs, notice, _daytime(moment))
        db.session.commit()
        return {"mine": mine.id, "mine_phone": mine.phone, "theirs": theirs.id, "theirs_phone": theirs.phone,
                "purchase": sale.id, "complaint": complaint.id, "message": message.id}


def _their_rows(w: dict) -> dict:
    db.session.expire_all()
    complaint = db.session.get(Complaint, w["complaint"])
    return {
        "complaint": (complaint.status, complaint.rating, complaint.resolved_at, complaint.reopened_at),
        "events": db.session.scalar(select(func.count()).select_from(ComplaintEvent)
                                    .where(ComplaintEvent.complaint_id == w["complaint"])),
        "complaints": db.session.scalar(select(func.count()).select_from(Complaint)),
        "read_at": db.session.get(Message, w["message"]).read_at,
        "visit_ratings": db.session.scalar(select(func.count()).select_from(VisitRating)),
    }


def _member_client(app, phone: str):
    client = app.test_client()
    response = client.post("/member/login", data={"phone": phone.removeprefix("+86"), "password": factories.PASSWORD})
    assert response.status_code == 303
    return client


def _id_requests(w: dict) -> list[tuple[str, str, str, dict]]:
    """(endpoint, method, url, form) for each member route with an id, with a form that would work."""
    return [
        ("member.show_complaint", "GET", f"/me/complaints/{w['complaint']}", {}),
        ("member.rate_complaint", "POST", f"/me/complaints/{w['complaint']}/rating", {"rating": "1"}),
        ("member.show_message", "GET", f"/me/inbox/{w['message']}", {}),
        ("member.mark_message_read", "POST", f"/me/inbox/{w['message']}/read", {}),
        ("member.rate_visit", "POST", f"/me/visits/{w['purchase']}/rating", {"rating": "1", "comment": "Bad"}),
        ("member.reopen_complaint", "POST", f"/me/complaints/{w['complaint']}/reopen", {"body": "Not solved"}),
    ]


def test_every_member_route_with_an_id_is_tried_here(app):
    with_ids = {rule.endpoint for rule in app.url_map.iter_rules()
                if rule.endpoint.startswith("member.") and rule.arguments}
    tried = {endpoint for endpoint, *_rest in _id_requests({"complaint": 1, "message": 1, "purchase": 1})}
    assert with_ids == MEMBER_ID_ROUTES == tried, "a member route with an id: add it to _id_requests"


def test_a_member_gets_404_on_another_members_ids_and_nothing_changes(app):
    w = _members_world(app)
    with app.app_context():
        before = _their_rows(w)
    me = _member_client(app, w["mine_phone"])
    failures = []
    for endpoint, method, url, form in _id_requests(w):
        for htmx in (False, True):
            response = me.open(url, method=method, data=form, htmx=htmx)
            if response.status_code != 404:
                failures.append(f"{endpoint} {method} {url} (htmx={htmx}): {response.status_code}")
    # The complaint form only offers the member's own visits: another's purchase is neither shown nor taken.
    page = me.get(f"/me/complaints/new?purchase={w['purchase']}")
    assert page.status_code == 200 and f'value="{w["purchase"]}"' not in page.get_data(as_text=True)
    filed = me.post("/me/complaints", data={"category": "other", "description": "About their visit",
                                            "purchase_id": str(w["purchase"]), "idempotency_key": uuid.uuid4().hex})
    if filed.status_code != 422:
        failures.append(f"member.file_complaint with another's purchase: {filed.status_code}")
    assert not failures, "\n".join(failures)
    with app.app_context():
        assert _their_rows(w) == before

    # The same requests by the owner work, so the 404s above come from the owner check, not from the forms.
    owner = _member_client(app, w["theirs_phone"])
    for endpoint, method, url, form in _id_requests(w):
        response = owner.open(url, method=method, data=form)
        assert response.status_code in (200, 303), (endpoint, response.status_code)
    with app.app_context():
        after = _their_rows(w)
        assert after["complaint"][0] == "open" and after["read_at"] is not None
        assert after["visit_ratings"] == before["visit_ratings"] + 1
        assert after["complaints"] == before["complaints"] + 1  # the rating of 1 opened a follow-up


# --- 4. staff and another store's rows -------------------------------------------------------------------

def _stores_world(app) -> dict:
    """Store A (S001) and store B (S002), each with a cashier and a manager; at B a member who registered and
    bought there, a return of part of it made at B, a complaint, an import, a campaign and a cashier."""
    moment = datetime.now(UTC)
    with app.app_context():
        factories.store()
        store_b = factories.store("S002", "Other Store")
        people = {f"{role}_{code}": factories.staff(role, store_code=f"S00{n}")
                  for n, code in ((1, "a"), (2, "b")) for role in ("cashier", "manager")}
        people["admin"] = factories.staff("admin")
        member_b = factories.member(name="Bea Other-Store", store_code="S002", now=moment - timedelta(days=30))
        member_b.marketing_consent = True
        sale_b = factories.purchase(member_b, 50_000, now=moment - timedelta(hours=3), store_code="S002").purchase
        ret_b = returns.record_return(db.session, purchase_id=sale_b.id, store=store_b, staff=None,
                                      returned_gross_fen=5_000, idempotency_key=uuid.uuid4().hex,
                                      rules=load_rules(db.session), now=moment - timedelta(hours=2)).ret
        complaint_b = complaints.file_complaint(
            db.session, store=store_b, category="product_quality", severity="high",
            description="Store B only complaint", channel="counter", member=member_b, purchase=sale_b,
            now=moment - timedelta(hours=2))
        job_b = imports.start_import(db.session, data="name,phone,points\n李四,13800000002,100\n".encode(),
                                     filename="b.csv", store=store_b, staff=people["manager_b"], dry_run=True,
                                     now=moment, max_bytes=1_000_000)
        campaign_b = campaigns.create_campaign(
            db.session, name="Store B offer", template=_template("access_b_offer", "marketing", moment),
            audience=campaigns.Audience(store_id=store_b.id), send_at=moment + timedelta(days=1),
            control_percent=0, staff=people["manager_b"], now=moment)
        db.session.commit()
        return {
            "usernames": {key: person.username for key, person in people.items()},
            "cashier_b": people["cashier_b"].id, "member_b": member_b.id, "card_b": member_b.card_number,
            "purchase_b": sale_b.id, "return_b": ret_b.id, "complaint_b": complaint_b.id,
            "import_b": job_b.id, "campaign_b": campaign_b.id,
            "store_a": factories.store().id, "store_b": store_b.id,
        }


def _staff_client(app, username: str):
    client = app.test_client()
    response = client.post("/login", data={"username": username, "password": factories.PASSWORD})
    assert response.status_code == 303
    return client


def _complaint_state(complaint_id: int) -> tuple:
    db.session.expire_all()
    complaint = db.session.get(Complaint, complaint_id)
    events = db.session.scalar(select(func.count()).select_from(ComplaintEvent)
                               .where(ComplaintEvent.complaint_id == complaint_id))
    goodwill = db.session.scalar(select(func.count()).select_from(LedgerEntry)
                                 .where(LedgerEntry.complaint_id == complaint_id))
    return complaint.status, complaint.assigned_to_id, events, goodwill


def test_a_cashier_sees_only_their_stores_receipts_and_complaints_but_may_take_any_stores_return(app):
    w = _stores_world(app)
    cashier_a = _staff_client(app, w["usernames"]["cashier_a"])
    purchase, ret, complaint = w["purchase_b"], w["return_b"], w["complaint_b"]
    for url in (f"/till/purchases/{purchase}", f"/till/returns/{ret}", f"/till/complaints/{complaint}"):
        for htmx in (False, True):
            assert cashier_a.get(url, htmx=htmx).status_code == 404, (url, htmx)

    # By design (PRODUCT.md, "Returns": a return belongs to one purchase "at any store of the chain"), a cashier
    # takes back what was bought at another store: the return form opens, the return is recorded, and it
    # counts at the store where the goods came back (the cashier's), for its refund and its ledger entries.
    # The purchase's receipt stays the other store's: it is still a 404 to this cashier.
    form = cashier_a.get(f"/till/purchases/{purchase}/return")
    assert form.status_code == 200
    taken = cashier_a.post(f"/till/purchases/{purchase}/returns",
                           data={"amount": "100", "idempotency_key": form_key(form, "/returns")})
    assert taken.status_code == 303, text_of(taken)
    new_return = int(urlsplit(_location(taken)).path.rsplit("/", 1)[1])
    with app.app_context():
        row = db.session.get(Return, new_return)
        assert (row.purchase_id, row.store_id, row.refund_fen > 0) == (purchase, w["store_a"], True)
        stores_of_entries = set(db.session.scalars(select(LedgerEntry.store_id)
                                                   .where(LedgerEntry.return_id == new_return)))
        assert stores_of_entries == {w["store_a"]}
        assert db.session.get(Purchase, purchase).store_id == w["store_b"]
    assert cashier_a.get(f"/till/returns/{new_return}").status_code == 200
    assert cashier_a.get(f"/till/purchases/{purchase}").status_code == 404

    # Store B's own cashier sees its receipt, its return and its complaint, but not the return made at A.
    cashier_b = _staff_client(app, w["usernames"]["cashier_b"])
    for url in (f"/till/purchases/{purchase}", f"/till/returns/{ret}", f"/till/complaints/{complaint}"):
        assert cashier_b.get(url).status_code == 200, url
    assert cashier_b.get(f"/till/returns/{new_return}").status_code == 404


def test_a_manager_gets_404_on_another_stores_rows_and_changes_nothing(app):
    w = _stores_world(app)
    manager_a = _staff_client(app, w["usernames"]["manager_a"])
    complaint = w["complaint_b"]
    gets = [
        f"/till/purchases/{w['purchase_b']}", f"/till/returns/{w['return_b']}", f"/till/complaints/{complaint}",
        f"/manage/complaints/{complaint}", f"/manage/members/{w['member_b']}",
        f"/manage/imports/{w['import_b']}", f"/manage/imports/{w['import_b']}/refused.csv",
        f"/manage/messages/{w['campaign_b']}",
    ]
    key = uuid.uuid4().hex
    posts = [
        (f"/manage/complaints/{complaint}/acknowledge", {}),
        (f"/manage/complaints/{complaint}/reply", {"body": "Sorry", "to_member": "y"}),
        (f"/manage/complaints/{complaint}/assign", {"assignee": str(w["cashier_b"])}),
        (f"/manage/complaints/{complaint}/goodwill", {"points": "500", "idempotency_key": key}),
        (f"/manage/complaints/{complaint}/resolve", {"body": "Done"}),
        (f"/manage/complaints/{complaint}/close", {}),
        (f"/manage/imports/{w['import_b']}/step", {}),
        (f"/manage/imports/{w['import_b']}/run", {"idempotency_key": uuid.uuid4().hex}),
        (f"/manage/messages/{w['campaign_b']}/cancel", {}),
        (f"/manage/messages/{w['campaign_b']}/step", {}),
        (f"/manage/staff/{w['cashier_b']}/deactivate", {}),
        (f"/manage/staff/{w['cashier_b']}/password", {}),
    ]

    def state():
        with app.app_context():
            job = db.session.get(MemberImport, w["import_b"])
            campaign = db.session.get(Campaign, w["campaign_b"])
            person = db.session.get(Staff, w["cashier_b"])
            return (_complaint_state(complaint), (job.status, job.processed_rows),
                    (campaign.cancelled_at, campaign.prepared_count), (person.active, person.password_hash),
                    db.session.scalar(select(func.count()).select_from(MemberImport)))

    before = state()
    failures = [f"GET {url}: {code}" for url in gets
                if (code := manager_a.get(url).status_code) != 404]
    failures += [f"POST {url}: {code}" for url, form in posts
                 if (code := manager_a.post(url, data=form).status_code) != 404]
    assert not failures, "\n".join(failures)
    assert state() == before
    # Nor do the lists show them.
    assert "Store B only complaint" not in text_of(manager_a.get("/manage/complaints?status=all"))
    assert "Bea Other-Store" not in text_of(manager_a.get("/manage/members"))

    # Store B's manager (and the admin) open the same pages, so the 404s come from the store check.
    for username in (w["usernames"]["manager_b"], w["usernames"]["admin"]):
        other = _staff_client(app, username)
        for url in gets:
            assert other.get(url).status_code == 200, (username, url)
