"""The membership portal: create_app wires configuration, extensions, blueprints, errors and commands."""
from __future__ import annotations

import logging
import mimetypes
import os
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

from flask import Flask, current_app, g, has_request_context, render_template, request, session
from flask_babel import format_date, format_datetime, get_locale
from flask_babel import gettext as _
from flask_login import current_user, logout_user
from flask_wtf.csrf import CSRFError, generate_csrf
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from werkzeug.exceptions import HTTPException, SecurityError
from werkzeug.routing import IntegerConverter

from . import audit, rollups
from . import sessions as auth_sessions
from .access import enforce_access, refused, verify_declarations
from .config import Config, instance_secret_key
from .database import before_writing, configure_engine
from .extensions import babel, csrf, db, limiter, login_manager, migrate
from .complaints import CATEGORY_LABELS, SEVERITY_LABELS, STATUS_LABELS
from .money import format_yuan
from .phones import display_phone, mask_phone
from .web import current_actor

ROOT = Path(__file__).resolve().parent.parent
mimetypes.add_type("application/manifest+json", ".webmanifest")
MAX_ROW_ID = 2**31 - 1


def create_app(config_class: type = Config, overrides: dict | None = None) -> Flask:
    app = Flask(
        __name__,
        instance_path=os.environ.get("PORTAL_INSTANCE_PATH", str(ROOT / "instance")),
        template_folder=str(ROOT / "templates"),
        static_folder=str(ROOT / "static"),
    )
    app.config.from_object(config_class)
    app.config.update(overrides or {})
    app.json.sort_keys = False  # JSON answers keep the field order of their documented shapes
    app.json.ensure_ascii = False  # and Chinese as it is, in UTF-8
    app.url_map.converters["id"] = RowIdConverter
    _configure_secrets_and_database(app)

    db.init_app(app)
    migrate.init_app(app, db, directory=str(ROOT / "migrations"))
    csrf.init_app(app)
    limiter.init_app(app)
    babel.init_app(app, locale_selector=select_locale, timezone_selector=select_timezone)
    _configure_login(app)
    with app.app_context():
        configure_engine(db.engine, app.config["DATABASE_LOCK_TIMEOUT_MS"])

    from .api import bp as api_bp
    from .auth import bp as auth_bp
    from .main import bp as main_bp
    from .manage import bp as manage_bp
    from .member import bp as member_bp
    from .till import bp as till_bp

    app.register_blueprint(main_bp)
    app.register_blueprint(auth_bp)
    app.register_blueprint(till_bp, url_prefix="/till")
    app.register_blueprint(manage_bp, url_prefix="/manage")
    app.register_blueprint(member_bp, url_prefix="/me")
    csrf.exempt(api_bp)  # bearer tokens, never cookies: nothing for a forged request to ride on
    app.register_blueprint(api_bp, url_prefix="/api/v1")

    audit.use_actor_source(current_actor)
    audit.watch_ledger()
    rollups.watch()
    app.before_request(_load_login_before_writing)
    app.before_request(_check_idle_timeout)
    app.before_request(enforce_access)
    app.after_request(_security_headers)
    _register_errors(app)
    _register_template_helpers(app)

    from .cli import register_commands

    register_commands(app)
    verify_declarations(app)
    from . import senders

    senders.configured(app.config)  # refuse to start with an e-mail or SMS setting that cannot work
    return app


class RowIdConverter(IntegerConverter):
    """<id:name> in a URL: a row id, 1 up to the largest 32-bit integer; anything else is a 404, never a
    number too large for the database."""

    def __init__(self, url_map):
        super().__init__(url_map, min=1, max=MAX_ROW_ID)


def _configure_secrets_and_database(app: Flask) -> None:
    if app.config["ENV_NAME"] == "production" and not app.config.get("TRUSTED_HOSTS"):
        raise RuntimeError("TRUSTED_HOSTS must be set in production: the host names the portal is reached by")
    if not app.config.get("SECRET_KEY"):
        if app.config["ENV_NAME"] == "production":
            raise RuntimeError("SECRET_KEY must be set in production")
        app.config["SECRET_KEY"] = instance_secret_key(app.instance_path)
    if not app.config.get("SQLALCHEMY_DATABASE_URI"):
        Path(app.instance_path).mkdir(parents=True, exist_ok=True)
        app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite:///" + str(Path(app.instance_path) / "portal.db")
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        options = dict(app.config["SQLALCHEMY_ENGINE_OPTIONS"])
        options.pop("pool_pre_ping", None)
        options.setdefault("connect_args", {"timeout": app.config["DATABASE_LOCK_TIMEOUT_MS"] / 1000})
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = options


def _configure_login(app: Flask) -> None:
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.session_protection = None  # the server-side session row is the protection

    @login_manager.user_loader
    def load_user(token: str):
        # current_app, not `app`: the login manager is one object shared by every app built in this process.
        return auth_sessions.load(
            db.session, token, now=datetime.now(timezone.utc),
            absolute_timeout=current_app.config["SESSION_ABSOLUTE_TIMEOUT"],
        )


def _load_login_before_writing():
    """On SQLite, a request that writes holds the database's one write lock from its first query to its commit,
    and every other till waits. Who is signed in is only read: load it in a read transaction of its own, ended
    (keeping what it loaded) before the request's work, so that the lock covers the work alone."""
    if request.method in ("GET", "HEAD", "OPTIONS") or request.endpoint == "static" or request.path.startswith("/api/"):
        return None
    with before_writing(db.session):
        current_user._get_current_object()
    return None


def _check_idle_timeout():
    """A login idle longer than SESSION_IDLE_TIMEOUT ends; the clock is kept in the signed cookie."""
    if request.endpoint == "static" or request.path.startswith("/api/") or not current_user.is_authenticated:
        return None
    now = int(datetime.now(timezone.utc).timestamp())
    idle: timedelta = current_app.config["SESSION_IDLE_TIMEOUT"]
    if now - session.get("seen", 0) > idle.total_seconds():
        logout_user()
        session.clear()
        return None
    if now - session.get("seen", 0) > 30:
        session["seen"] = now
    return None


class _NoQueryStrings(logging.Filter):
    """The development server logs each request line; a till lookup's query string holds the phone number
    typed, so the line is logged without it (gunicorn keeps no access log unless asked; see the README)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args and isinstance(record.args, tuple) and isinstance(record.args[0], str):
            first = re.sub(r"^(\S+ [^?\s]*)\?\S*", r"\1?…", record.args[0])
            record.args = (first, *record.args[1:])
        return True


_REQUEST_LOG_FILTER = _NoQueryStrings()
logging.getLogger("werkzeug").addFilter(_REQUEST_LOG_FILTER)


def select_locale() -> str:
    if not has_request_context():
        return current_app.config["BABEL_DEFAULT_LOCALE"]
    chosen = session.get("lang")
    if chosen in ("zh", "en"):
        return chosen
    return request.accept_languages.best_match(("zh", "en")) or "zh"


def select_timezone() -> str | None:
    if not has_request_context():
        return None
    store = getattr(current_user, "store", None) if current_user else None
    return store.timezone if store else None


def _security_headers(response):
    csp = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'self'; "
        "form-action 'self'; frame-ancestors 'none'"
    )
    response.headers.setdefault("Content-Security-Policy", csp)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
    if request.path.startswith("/api/") and request.endpoint != "api.openapi":
        response.headers["Cache-Control"] = "no-store"
    elif current_user and current_user.is_authenticated and request.endpoint != "static":
        response.headers["Cache-Control"] = "no-store"
    return response


def _register_errors(app: Flask) -> None:
    @app.errorhandler(CSRFError)
    def csrf_error(error):
        return render_template("error.html", code=400,
                               message=_("This form has expired. Reload the page and try again.")), 400

    @app.errorhandler(SecurityError)
    def untrusted_host(error):
        # Not a page: building one needs URLs for this host, which is the very thing refused.
        return current_app.response_class(_("This site is not served under that name."), status=400,
                                          mimetype="text/plain")

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        if error.code == 403:
            refused()
        if request.path.startswith("/api/"):
            api_messages = {
                404: _("There is no such address in the API."),
                405: _("This method is not allowed here."),
                413: _("What was sent is too large."),
                429: _("Too many requests from this register. Slow down and try again in a minute."),
            }
            message = api_messages.get(error.code, error.description)
            kept = {name: value for name, value in error.get_headers() if name in ("Allow", "Retry-After")}
            return {"error": {"code": error.name.lower().replace(" ", "_"), "message": message,
                              "field": None}}, error.code, kept
        messages = {
            403: _("You do not have access to this page."),
            404: _("This page does not exist."),
            405: _("This action is not allowed here."),
            413: _("What was sent is too large."),
            429: _("Too many attempts. Wait a minute and try again."),
        }
        message = messages.get(error.code, _("The request could not be handled."))
        return render_template("error.html", code=error.code, message=message), error.code

    @app.errorhandler(OperationalError)
    @app.errorhandler(InterfaceError)
    @app.errorhandler(PoolTimeoutError)
    def database_unavailable(error):
        """The database is locked past the busy timeout, or gone: nothing was saved, so say so and to try again.
        Only the kind of error is logged, never the statement (its parameters may hold a phone number)."""
        try:
            db.session.rollback()
        except Exception:  # the connection may be gone too; the session is thrown away below either way
            pass
        db.session.remove()
        current_app.logger.error("database unavailable: %s", type(getattr(error, "orig", None) or error).__name__)
        g._login_user = login_manager.anonymous_user()  # render without asking the database who is signed in
        message = _("The database is not answering right now. Nothing was saved: try again in a moment.")
        headers = {"Retry-After": "5"}
        if request.path.startswith("/api/"):
            return {"error": {"code": "database_unavailable", "message": message, "field": None}}, 503, headers
        return render_template("error.html", code=503, message=message), 503, headers

    @app.errorhandler(500)
    def server_error(error):
        db.session.rollback()
        if request.path.startswith("/api/"):
            return {"error": {"code": "server_error", "field": None,
                              "message": _("Something went wrong. Nothing was saved.")}}, 500
        return render_template("error.html", code=500, message=_("Something went wrong. Nothing was saved.")), 500


def _register_template_helpers(app: Flask) -> None:
    app.jinja_env.filters["yuan"] = format_yuan
    app.jinja_env.filters["masked"] = mask_phone
    app.jinja_env.filters["phone"] = display_phone
    app.jinja_env.filters["datetime"] = lambda value, fmt="medium": format_datetime(value, fmt) if value else ""
    app.jinja_env.filters["date"] = lambda value, fmt="medium": format_date(value, fmt) if value else ""

    @app.context_processor
    def inject():
        locale = str(get_locale() or "zh")
        return {
            "csrf_token": generate_csrf,
            "locale": locale,
            "tier_name": lambda tier: tier.name(locale) if tier else "",
            "htmx_src": app.config.get("HTMX_CDN_URL") or None,
            "complaint_categories": CATEGORY_LABELS,
            "complaint_severities": SEVERITY_LABELS,
            "complaint_statuses": STATUS_LABELS,
        }
