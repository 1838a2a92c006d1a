"""Security promises, each proven: failed sign-ins counted in the database, the password asked again before a
sensitive change, headers and hosts, the database being unavailable, and an audit log that names who did what
from where without ever writing down a phone number, a password or a token."""
from __future__ import annotations

import json
import logging
import re
import sqlite3
import threading
from datetime import timedelta

import pytest
from sqlalchemy import create_engine, func, select, text

from portal import create_app
from portal.config import Config, TestConfig
from portal.extensions import db
from portal.models import (
    ApiToken, AuditLog, AuthSession, LedgerEntry, LoginFailure, Member, Purchase, Setting, Staff,
)

from . import factories
from .conftest import CsrfClient
from .helpers import field_error, form_key, text_of

LOCKED = "Too many failed attempts. Try again in 15 minutes."


def staff_of(app, role: str = "cashier", store_code: str = "S001") -> str:
    with app.app_context():
        person = factories.staff(role, store_code=store_code)
        db.session.commit()
        return person.username


def sign_in(client, username, password=factories.PASSWORD):
    return client.post("/login", data={"username": username, "password": password})


def other_address(app, address: str):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


# --- failed sign-ins, counted in the database -----------------------------------------------------------

def test_after_five_failures_even_the_right_password_is_refused_for_a_while(app, client):
    username = staff_of(app)
    for _ in range(5):
        assert sign_in(client, username, "wrong password").status_code == 422
    response = sign_in(client, username)
    assert response.status_code == 429
    assert field_error(response, "password") == LOCKED
    assert client.get("/till/").status_code == 302  # not signed in
    with app.app_context():
        rows = db.session.scalars(select(LoginFailure)).all()
        assert len(rows) == 5
        assert all(username not in row.account and row.ip == "127.0.0.1" for row in rows)
        # 15 minutes on, the oldest failure no longer counts and the account may try again
        for row in rows:
            row.created_at -= timedelta(minutes=15)
        db.session.commit()
    assert sign_in(client, username).status_code == 303
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(LoginFailure)) == 0  # cleared on success


def test_the_account_lock_is_per_account(app, client):
    locked, other = staff_of(app), staff_of(app)
    for _ in range(5):
        sign_in(client, locked, "wrong password")
    assert sign_in(client, other).status_code == 303


def test_someone_elses_guessing_cannot_lock_a_person_out_of_their_own_browser(app):
    username = staff_of(app)
    own = other_address(app, "10.0.0.5")
    assert sign_in(own, username).status_code == 303  # this browser now carries the account's device cookie
    own.post("/logout")
    attacker = other_address(app, "203.0.113.9")
    for _ in range(6):
        sign_in(attacker, username, "guess")
    assert sign_in(attacker, username).status_code == 429  # even with the right password, from there
    assert sign_in(own, username).status_code == 303
    assert own.get("/till/").status_code == 200


def test_a_forged_device_cookie_counts_for_nothing(app):
    username = staff_of(app)
    attacker = other_address(app, "203.0.113.9")
    attacker.set_cookie("portal_device", "WyJhYmMiXQ.forged")
    for _ in range(5):
        sign_in(attacker, username, "guess")
    assert sign_in(attacker, username).status_code == 429


def test_failures_from_one_address_are_limited_across_accounts(app):
    names = [staff_of(app) for _ in range(3)]
    guesser = other_address(app, "198.51.100.7")
    for n in range(20):
        assert sign_in(guesser, f"nobody{n}", "guess").status_code == 422
    response = sign_in(guesser, names[0])
    assert response.status_code == 429 and field_error(response, "password") == LOCKED
    assert sign_in(other_address(app, "198.51.100.8"), names[1]).status_code == 303


def test_member_sign_in_and_activation_count_against_the_same_phone(app, client):
    with app.app_context():
        member = factories.member(phone="+8613811112222", activated=True)
        db.session.commit()
        code = member.activation_code
    for _ in range(3):
        client.post("/member/login", data={"phone": "138 1111 2222", "password": "guess"})
    for _ in range(2):
        client.post("/member/activate", data={"phone": "13811112222", "code": "000000" if code != "000000"
                                              else "111111", "password": "new password 12", "confirm": "new password 12"})
    response = client.post("/member/login", data={"phone": "+8613811112222", "password": factories.PASSWORD})
    assert response.status_code == 429 and LOCKED in text_of(response)


# --- the password again before a sensitive change --------------------------------------------------------

SENSITIVE = {
    "till.adjust_points", "manage.export_members", "manage.update_service_levels", "manage.grant_goodwill",
    "manage.update_tiers", "manage.update_rules", "manage.create_api_token", "manage.revoke_api_token",
    "manage.create_staff", "manage.deactivate_staff", "manage.reactivate_staff", "manage.change_staff_role",
    "manage.reset_staff_password", "manage.create_store", "manage.update_store", "manage.close_store",
    "manage.reopen_store", "manage.start_import", "manage.run_import_for_real",
}


def test_the_sensitive_routes_are_the_ones_that_ask_again(app):
    asking = {endpoint for endpoint, view in app.view_functions.items() if getattr(view, "recent_login", False)}
    assert asking == SENSITIVE


def age_login(client, minutes: int) -> None:
    with client.session_transaction() as session:
        session["auth_at"] -= minutes * 60


def current_rules_form(client) -> dict:
    page = client.get("/manage/settings").get_data(as_text=True)
    values = dict(re.findall(r'<input id="rule-(\w+)" name="\w+" value="([^"]*)"', page))
    values["shortfall_policy"] = "deduct"
    return values


def expiry_days(app) -> str | None:
    with app.app_context():
        return db.session.scalar(select(Setting.value).where(Setting.key == "expiry_days"))


def test_an_old_login_enters_the_password_again_before_changing_a_rule(app, client, login):
    username = login(client, "manager")
    form = current_rules_form(client)
    age_login(client, 16)
    before = expiry_days(app)
    response = client.post("/manage/settings/rules", data={**form, "expiry_days": "100"},
                           headers={"Referer": "http://localhost/manage/settings"})
    assert response.status_code == 303
    assert response.headers["Location"] == "/reauth?next=/manage/settings&retry=1"
    assert expiry_days(app) == before  # not carried out
    page = client.get(response.headers["Location"])
    assert "Nothing was changed yet" in text_of(page) and username in text_of(page)

    wrong = client.post("/reauth", data={"password": "not it", "next": "/manage/settings"})
    assert wrong.status_code == 422 and field_error(wrong, "password") == "This is not your password."
    right = client.post("/reauth", data={"password": factories.PASSWORD, "next": "/manage/settings"})
    assert right.status_code == 303 and right.headers["Location"] == "/manage/settings"
    assert client.post("/manage/settings/rules", data={**form, "expiry_days": "100"}).status_code == 303
    assert expiry_days(app) == "100"
    with app.app_context():
        actions = db.session.scalars(select(AuditLog.action).order_by(AuditLog.id)).all()
    assert actions[-3:] == ["auth.reauth_failed", "auth.reauth", "rules.set"]


def test_an_old_login_is_asked_again_on_htmx_and_for_an_export(client, login):
    login(client, "manager")
    age_login(client, 16)
    response = client.post("/manage/settings/tiers", data={}, htmx=True)
    assert response.status_code == 401 and response.headers["HX-Redirect"].startswith("/reauth?next=")
    export = client.get("/manage/members.csv?tier=gold")
    assert export.status_code == 303
    assert export.headers["Location"] == "/reauth?next=/manage/members.csv?tier%3Dgold"


def test_a_login_within_the_window_is_not_asked_again_and_ordinary_pages_never_are(app, client, login):
    login(client, "manager")
    age_login(client, 14)
    assert client.get("/manage/members.csv").status_code == 200
    age_login(client, 60)
    assert client.get("/manage/settings").status_code == 200
    assert client.get("/till/").status_code == 200


def test_guessing_the_password_again_is_limited_like_a_sign_in(client, login):
    login(client, "manager")
    age_login(client, 16)
    for _ in range(5):
        assert client.post("/reauth", data={"password": "guess"}).status_code == 422
    response = client.post("/reauth", data={"password": factories.PASSWORD})
    assert response.status_code == 429 and field_error(response, "password") == LOCKED


# --- headers, hosts and sizes ----------------------------------------------------------------------------

def test_every_kind_of_response_carries_the_security_headers(app, client, login):
    login(client, "cashier")
    with app.app_context():
        card = factories.member().card_number
        db.session.commit()
    answers = {
        "page": client.get("/till/"),
        "fragment": client.get("/till/lookup?q=0000", htmx=True),
        "404": client.get("/nowhere"),
        "403": client.get("/manage/"),
        "api": client.get("/api/v1/members/lookup?phone=1"),
        "openapi": client.get("/api/v1/openapi.json"),
        "static": client.get("/static/css/portal.css"),
        "member panel": client.get(f"/till/members/{card}"),
    }
    for name, response in answers.items():
        headers = response.headers
        csp = headers.get("Content-Security-Policy", "")
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, name
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, name
        assert headers["X-Content-Type-Options"] == "nosniff", name
        assert headers["Referrer-Policy"] == "same-origin", name
        response.close()
    for personal in ("page", "member panel", "api"):
        assert answers[personal].headers["Cache-Control"] == "no-store", personal


def test_pages_need_no_inline_script_style_or_handler(app, client, login):
    """The policy forbids inline code, so the pages must not rely on any: htmx is told not to add its inline
    indicator styles nor to evaluate strings."""
    login(client, "manager")
    with app.app_context():
        card = factories.member().card_number
        db.session.commit()
    for path in ("/till/", f"/till/members/{card}", "/till/members/new", "/manage/", "/manage/settings",
                 "/manage/members", "/manage/audit", "/login"):
        body = client.get(path).get_data(as_text=True)
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", body), path
        assert not re.search(r"\sstyle=", body), path
        assert not re.search(r"\son[a-z]+=", body), path
        assert not re.search(r"\shx-on", body), path
    till = client.get("/till/").get_data(as_text=True)
    config = json.loads(re.search(r"<meta name=\"htmx-config\" content='([^']+)'>", till).group(1))
    assert config["allowEval"] is False and config["includeIndicatorStyles"] is False


def test_a_request_for_another_host_is_refused(client):
    refused = client.get("/login", headers={"Host": "evil.example"})
    assert refused.status_code == 400 and text_of(refused) == "This site is not served under that name."
    assert client.get("/login", headers={"Host": "localhost"}).status_code == 200


def test_a_body_over_the_limit_is_refused(client, app):
    size = app.config["MAX_CONTENT_LENGTH"]
    assert 0 < size <= 10 * 1024 * 1024
    response = client.post("/login", data={"username": "x" * (size + 1), "password": "y"})
    assert response.status_code == 413


@pytest.mark.parametrize(("setting", "message"), [("SECRET_KEY", "SECRET_KEY"), ("TRUSTED_HOSTS", "TRUSTED_HOSTS")])
def test_production_refuses_to_start_without(monkeypatch, tmp_path, setting, message):
    class Production(Config):
        ENV_NAME = "production"
        SECRET_KEY = "a real secret"
        TRUSTED_HOSTS = ["club.example.com"]

    setattr(Production, setting, None)
    monkeypatch.setenv("PORTAL_INSTANCE_PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match=message):
        create_app(Production, {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/x.db"})


def test_production_cookies_are_secure(monkeypatch):
    monkeypatch.setenv("PORTAL_ENV", "production")
    monkeypatch.delenv("SESSION_COOKIE_SECURE", raising=False)
    import importlib

    from portal import config as config_module

    try:
        reloaded = importlib.reload(config_module)
        assert reloaded.Config.SESSION_COOKIE_SECURE is True
        assert reloaded.Config.SESSION_COOKIE_HTTPONLY is True
        assert reloaded.Config.SESSION_COOKIE_SAMESITE == "Lax"
        assert reloaded.Config.TRUSTED_HOSTS is None  # so production must name its hosts
    finally:
        monkeypatch.undo()
        importlib.reload(config_module)


# --- the database locked or gone -------------------------------------------------------------------------

@pytest.mark.parametrize("uri", ["sqlite:////nonexistent-dir/portal.db",
                                 "postgresql+psycopg://nobody:x@127.0.0.1:9/portal?connect_timeout=2"])
def test_a_database_that_is_gone_gives_a_clear_page_not_a_traceback(monkeypatch, tmp_path, uri):
    monkeypatch.setenv("PORTAL_INSTANCE_PATH", str(tmp_path))
    app = create_app(TestConfig, {"SQLALCHEMY_DATABASE_URI": uri, "PROPAGATE_EXCEPTIONS": False})
    app.test_client_class = CsrfClient
    client = app.test_client()
    response = client.post("/login", data={"username": "someone", "password": "secret words"})
    body = text_of(response)
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"
    assert "The database is not answering right now. Nothing was saved" in body
    assert "Traceback" not in body and "OperationalError" not in body
    api = client.get("/api/v1/members/lookup?phone=1", headers={"Authorization": "Bearer plk_x"})
    assert api.status_code == 503 and api.get_json()["error"]["code"] == "database_unavailable"


def _hold_the_lock(app, card: str, release: threading.Event, held: threading.Event):
    """Another till, stuck in the middle of a change to this member."""
    uri = app.config["SQLALCHEMY_DATABASE_URI"]
    if uri.startswith("sqlite"):
        conn = sqlite3.connect(uri.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        held.set()
        release.wait(10)
        conn.execute("ROLLBACK")
        conn.close()
        return
    engine = create_engine(uri)
    with engine.begin() as conn:
        conn.execute(text("SELECT id FROM members WHERE card_number = :card FOR UPDATE"), {"card": card})
        held.set()
        release.wait(10)
    engine.dispose()


@pytest.mark.config(DATABASE_LOCK_TIMEOUT_MS=300)
def test_a_locked_database_says_try_again_and_saves_nothing(app, client, login):
    login(client, "cashier")
    with app.app_context():
        card = factories.member().card_number
        db.session.commit()
    page = client.get(f"/till/members/{card}")
    data = {"gross": "88.00", "idempotency_key": form_key(page)}
    release, held = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold_the_lock, args=(app, card, release, held))
    holder.start()
    try:
        assert held.wait(10)
        response = client.post(f"/till/members/{card}/purchases", data=data)
        assert response.status_code == 503
        assert "Nothing was saved" in text_of(response)
    finally:
        release.set()
        holder.join()
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Purchase)) == 0
        assert db.session.scalar(select(func.count()).select_from(LedgerEntry)) == 0
    retried = client.post(f"/till/members/{card}/purchases", data=data)  # the same form, sent again
    assert retried.status_code == 303
    assert client.post(f"/till/members/{card}/purchases", data=data).status_code == 303  # and once more
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Purchase)) == 1
        assert db.session.scalars(select(Member.points_balance)).one() == 88


# --- the audit log: who, in which role, where, from which address -----------------------------------------

def test_sign_ins_refusals_and_sign_outs_are_audited_with_role_store_and_address(app):
    username = staff_of(app, "cashier")
    till = other_address(app, "10.1.2.3")
    sign_in(till, username, "wrong password")
    sign_in(till, "no-such-person", "wrong password")
    sign_in(till, username)
    till.get("/manage/")  # a cashier in the console: refused
    till.post("/logout")
    with app.app_context():
        cashier = db.session.scalars(select(Staff).where(Staff.username == username)).one()
        rows = db.session.scalars(select(AuditLog).order_by(AuditLog.id)).all()
        seen = [(r.action, r.staff_id, r.role, r.store_id, r.ip, r.target) for r in rows]
    assert seen == [
        ("auth.login_failed", None, "anonymous", None, "10.1.2.3", f"staff:{cashier.id}"),
        ("auth.login_failed", None, "anonymous", None, "10.1.2.3", None),
        ("auth.login", cashier.id, "cashier", cashier.store_id, "10.1.2.3", f"staff:{cashier.id}"),
        ("access.denied", cashier.id, "cashier", cashier.store_id, "10.1.2.3", "/manage/"),
        ("auth.logout", cashier.id, "cashier", cashier.store_id, "10.1.2.3", f"staff:{cashier.id}"),
    ]
    assert all(r.created_at is not None for r in rows)


def test_a_refused_register_token_is_audited(app, client):
    client.environ_base["REMOTE_ADDR"] = "10.9.9.9"
    assert client.get("/api/v1/members/lookup?phone=1", headers={"Authorization": "Bearer plk_wrong"}).status_code == 401
    with app.app_context():
        entry = db.session.scalars(select(AuditLog)).one()
    assert (entry.action, entry.role, entry.ip, entry.target) == ("access.denied", "anonymous", "10.9.9.9",
                                                                  "/api/v1/members/lookup")


def test_every_ledger_entry_is_named_by_an_audit_entry_with_its_actor(app, client, login, runner):
    login(client, "manager")
    with app.app_context():
        referrer = factories.member(name="Referrer")
        db.session.commit()
        newcomer = factories.member(name="Newcomer", referrer=referrer)
        db.session.commit()
        card, old_card = newcomer.card_number, referrer.card_number
    page = client.get(f"/till/members/{card}")
    bought = client.post(f"/till/members/{card}/purchases", data={"gross": "300", "idempotency_key": form_key(page)})
    purchase_path = bought.headers["Location"]
    ret_page = client.get(purchase_path.rstrip("/") + "/return")
    assert client.post(purchase_path.rstrip("/") + "/returns",
                       data={"amount": "100", "idempotency_key": form_key(ret_page)}).status_code == 303
    page = client.get(f"/till/members/{old_card}")
    client.post(f"/till/members/{old_card}/adjustments",
                data={"points": "50", "reason": "lost receipt", "idempotency_key": form_key(page, "/adjustments")})
    assert runner.invoke(args=["expire-points", "--now", "2031-01-01T00:00:00+00:00"]).exit_code == 0
    with app.app_context():
        ledger = {e.id: e for e in db.session.scalars(select(LedgerEntry))}
        named, roles = {}, {}
        for entry in db.session.scalars(select(AuditLog).where(AuditLog.action == "ledger.post")):
            for item in json.loads(entry.after)["entries"]:
                named[item["id"]] = entry
                roles[item["id"]] = entry.role
        assert len(ledger) >= 6
        assert set(named) == set(ledger)
        for entry_id, entry in ledger.items():
            audit_entry = named[entry_id]
            assert audit_entry.target == f"member:{entry.member_id}"
            if entry.kind == "expire":
                assert (audit_entry.role, audit_entry.staff_id, audit_entry.ip) == ("system", None, None)
            else:
                assert audit_entry.role == "manager" and audit_entry.ip == "127.0.0.1"
                assert audit_entry.staff_id == entry.staff_id and audit_entry.store_id == entry.store_id


def test_nothing_logged_holds_a_phone_a_password_or_a_token(app, client, login, caplog):
    """Every log: Python's (at DEBUG), the audit log's every column, failed sign-ins, stored logins and tokens."""
    caplog.set_level(logging.DEBUG)
    phone_digits, password, new_password = "13955550123", factories.PASSWORD, "a brand new secret 9"
    login(client, "admin")
    registered = client.post("/till/members", data={
        "name": "Secret Keeper", "phone": phone_digits, "privacy_consent": "y"})
    assert registered.status_code == 303
    with app.app_context():
        member = db.session.scalars(select(Member).where(Member.name == "Secret Keeper")).one()
        card = member.card_number
    client.get(f"/till/lookup?q={phone_digits}")
    client.get(f"/till/members/{card}")
    client.get(f"/manage/members/{member.id}")
    client.get(f"/manage/members.csv?q={phone_digits}").close()
    client.post(f"/till/members/{card}/activation-code")
    code_page = client.get(f"/till/members/{card}")
    code = re.search(r'id="activation-code">(\d{6})<', text_of(code_page)).group(1)
    token_page = client.post("/manage/api-tokens", data={"name": "Till 9", "store_id": "1", "idempotency_key": "t" * 32})
    api_token = re.search(r"plk_[A-Za-z0-9_\-]+", text_of(token_page)).group(0)
    client.get("/api/v1/members/lookup?phone=" + phone_digits, headers={"Authorization": f"Bearer {api_token}"})
    client.post("/logout")
    phone = app.test_client()
    phone.post("/member/login", data={"phone": phone_digits, "password": "wrong guess 1"})
    phone.post("/member/activate", data={"phone": phone_digits, "code": code, "password": new_password,
                                         "confirm": new_password})
    phone.post("/me/password", data={"current_password": "wrong guess 2", "password": "x" * 12, "confirm": "x" * 12})
    phone.post("/me/data.json").close()
    session_cookie = phone.get_cookie("portal_session").value
    secrets_ = [phone_digits, password, new_password, "wrong guess 1", "wrong guess 2", api_token, code,
                session_cookie]

    written = [record.getMessage() for record in caplog.records]
    with app.app_context():
        for table in (AuditLog.__table__, LoginFailure.__table__, AuthSession.__table__, ApiToken.__table__):
            for row in db.session.execute(select(table)):
                written.append(" ".join(str(value) for value in row))
        assert db.session.scalar(select(func.count()).select_from(AuditLog).where(
            AuditLog.action.in_(["member.view", "members.export", "member.export", "auth.login_failed",
                                 "auth.password_failed", "member.activate", "api_token.create"]))) >= 7
    everything = "\n".join(written)
    for secret in secrets_:
        assert secret not in everything, secret
    assert '"search": "139****0123"' in everything  # the export's filters, with the phone masked as at the till


@pytest.mark.parametrize(("typed", "kept"), [
    ("13955550123", "139****0123"), ("+86 139 5555 0123", "+861******0123"), ("王 5550123", "王 ***0123"),
    ("王小明", "王小明"), ("123456", "123456"), (None, None),
])
def test_numbers_in_a_search_are_masked_for_the_audit_log(typed, kept):
    from portal.phones import mask_numbers_in

    assert mask_numbers_in(typed) == kept


def test_the_audit_viewer_shows_the_role_of_each_actor(app, client, login):
    username = login(client, "admin")
    page = text_of(client.get("/manage/audit"))
    assert "Signed in" in page and "Administrator" in page and username in page


def test_the_request_log_keeps_no_query_string(app, caplog):
    """The development server logs every request line; a till lookup's holds the phone typed."""
    import urllib.request

    from .live_server import LiveServer

    caplog.set_level(logging.INFO, logger="werkzeug")
    with LiveServer(app) as server:
        with urllib.request.urlopen(f"{server.url}/login?next=/till/lookup%3Fq%3D13955550123") as answer:
            assert answer.status == 200
    lines = [record.getMessage() for record in caplog.records if record.name == "werkzeug"]
    assert any('"GET /login?… HTTP/1.1" 200' in line for line in lines), lines
    assert not any("13955550123" in line for line in lines)
