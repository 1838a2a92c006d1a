"""Staff sign-in and sign-out, sessions that really end, rate limits, headers and access declarations."""
from __future__ import annotations

from datetime import timedelta

import pytest
from flask import Flask
from sqlalchemy import select, update

from portal import create_app
from portal.access import access, verify_declarations
from portal.config import Config
from portal.extensions import db
from portal.models import AuthSession, Staff

from . import factories
from .helpers import field_error, text_of


@pytest.fixture
def cashier(app):
    with app.app_context():
        staff = factories.staff("cashier")
        db.session.commit()
        return staff.username


def sign_in(client, username, password=factories.PASSWORD, **extra):
    return client.post("/login", data={"username": username, "password": password, **extra})


def test_login_page_renders(client):
    response = client.get("/login")
    assert response.status_code == 200
    assert 'name="username"' in response.get_data(as_text=True)


def test_login_lands_on_the_till(client, cashier):
    response = sign_in(client, cashier)
    assert response.status_code == 303 and response.headers["Location"] == "/till/"
    assert client.get("/till/").status_code == 200


def test_username_is_case_insensitive(client, cashier):
    assert sign_in(client, cashier.upper()).status_code == 303


@pytest.mark.parametrize(("username", "password"), [("cashier1x", factories.PASSWORD), (None, "wrong password")])
def test_wrong_username_or_password_gives_one_message(client, cashier, username, password):
    response = sign_in(client, username or cashier, password)
    assert response.status_code == 422
    assert field_error(response, "password") == "Wrong username or password."
    assert client.get("/till/").status_code == 302


def test_empty_login_fields_get_messages(client):
    response = client.post("/login", data={})
    assert response.status_code == 422
    assert field_error(response, "username") == "Enter your username."
    assert field_error(response, "password") == "Enter your password."


def test_inactive_staff_cannot_sign_in(app, client, cashier):
    with app.app_context():
        db.session.execute(update(Staff).where(Staff.username == cashier).values(active=False))
        db.session.commit()
    assert sign_in(client, cashier).status_code == 422


def test_next_url_is_followed_only_within_the_site(client, cashier):
    assert sign_in(client, cashier, next="/till/members/new").headers["Location"] == "/till/members/new"
    client.post("/logout")
    assert sign_in(client, cashier, next="https://evil.example/").headers["Location"] == "/till/"
    client.post("/logout")
    assert sign_in(client, cashier, next="//evil.example/").headers["Location"] == "/till/"


def test_session_is_cleared_before_login(client, cashier):
    with client.session_transaction() as session:
        session["planted"] = "by an attacker"
    sign_in(client, cashier)
    with client.session_transaction() as session:
        assert "planted" not in session


def test_a_cookie_replayed_after_logout_is_refused(app, client, cashier):
    sign_in(client, cashier)
    stolen = client.get_cookie("portal_session").value
    assert client.post("/logout").status_code == 303
    thief = app.test_client()
    thief.set_cookie("portal_session", stolen)
    assert thief.get("/till/").status_code == 302
    with app.app_context():
        assert db.session.scalar(select(AuthSession.revoked_at)) is not None


def test_deactivation_refuses_the_next_request(app, client, cashier):
    sign_in(client, cashier)
    assert client.get("/till/").status_code == 200
    with app.app_context():
        db.session.execute(update(Staff).where(Staff.username == cashier).values(active=False))
        db.session.commit()
    assert client.get("/till/").status_code == 302


def test_idle_login_ends(client, cashier):
    sign_in(client, cashier)
    with client.session_transaction() as session:
        session["seen"] -= int(timedelta(hours=3).total_seconds())
    assert client.get("/till/").status_code == 302


def test_login_ends_after_the_absolute_timeout(app, client, cashier):
    sign_in(client, cashier)
    with app.app_context():
        row = db.session.scalars(select(AuthSession)).one()
        row.created_at = row.created_at - timedelta(hours=13)
        db.session.commit()
    assert client.get("/till/").status_code == 302


@pytest.mark.config(LOGIN_FAILURES_PER_ACCOUNT=3)
def test_repeated_failed_logins_for_one_account_are_limited(client, cashier):
    for _ in range(3):
        assert sign_in(client, cashier, "wrong password").status_code == 422
    response = sign_in(client, cashier, "wrong password")
    assert response.status_code == 429
    assert "Too many failed attempts. Try again in 15 minutes." in text_of(response)


@pytest.mark.config(RATELIMIT_ENABLED=True, LOGIN_RATE_LIMIT="3 per minute")
def test_repeated_logins_from_one_address_are_limited(client):
    for n in range(3):
        sign_in(client, f"someone{n}", "wrong password")
    assert sign_in(client, "someone-else", "wrong password").status_code == 429


def test_security_headers_on_every_page(client, cashier):
    sign_in(client, cashier)
    for path in ("/login", "/till/", "/static/css/portal.css"):
        with client.get(path) as response:
            headers = response.headers
        csp = headers["Content-Security-Policy"]
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert "frame-ancestors 'none'" in csp
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "same-origin"
    assert client.get("/till/").headers["Cache-Control"] == "no-store"


def test_session_cookie_flags(client, cashier):
    response = sign_in(client, cashier)
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_production_refuses_to_start_without_a_secret_key(monkeypatch, tmp_path):
    class Production(Config):
        ENV_NAME = "production"
        SECRET_KEY = None

    monkeypatch.setenv("PORTAL_INSTANCE_PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="SECRET_KEY"):
        create_app(Production, {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/x.db"})


def test_development_key_is_generated_once_in_the_instance_folder(monkeypatch, tmp_path):
    class Development(Config):
        SECRET_KEY = None

    monkeypatch.setenv("PORTAL_INSTANCE_PATH", str(tmp_path))
    first = create_app(Development, {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/x.db"})
    second = create_app(Development, {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/x.db"})
    assert first.secret_key == second.secret_key and len(first.secret_key) == 64
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0


def test_a_route_without_an_access_declaration_stops_the_app():
    app = Flask(__name__)

    @app.route("/forgotten")
    def forgotten():
        return "open to all?"

    @app.route("/declared")
    @access("cashier")
    def declared():
        return "fine"

    with pytest.raises(RuntimeError, match="forgotten"):
        verify_declarations(app)


def test_every_route_of_the_portal_declares_its_access(app):
    for endpoint, view in app.view_functions.items():
        assert getattr(view, "access_level", None), endpoint


def test_language_switch_is_kept(client):
    assert 'lang="en"' in client.get("/login").get_data(as_text=True)
    response = client.post("/language", data={"lang": "zh", "next": "/login"})
    assert response.status_code == 303 and response.headers["Location"] == "/login"
    assert 'lang="zh-Hans"' in client.get("/login").get_data(as_text=True)


def test_browser_language_picks_the_default(app):
    client = app.test_client()
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = "zh-CN,zh;q=0.9"
    assert 'lang="zh-Hans"' in client.get("/login").get_data(as_text=True)
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = "en-GB,en;q=0.9"
    assert 'lang="en"' in client.get("/login").get_data(as_text=True)


def test_unknown_page_is_a_friendly_404(client):
    response = client.get("/no/such/page")
    assert response.status_code == 404
    assert "This page does not exist." in text_of(response)
