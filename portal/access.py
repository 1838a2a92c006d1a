"""Who may use each route. Every view declares it; the app refuses to start if one does not.

Levels: public (anyone), member (a signed-in member, only their own data),
cashier / manager / admin (staff of at least that role), register (a cash register's
bearer token on the JSON API; session cookies count for nothing there).

A sensitive route (points adjustments, settings, staff and roles, register tokens, exports of personal data)
also says `recent_login=True`: when the password was last entered longer ago than REAUTH_AFTER, the portal asks
for it again before the route runs.

Every refusal of someone signed in (403) and every refused register token (401) is written to the audit log.
"""
from __future__ import annotations

from datetime import datetime, timezone

from flask import Flask, abort, current_app, g, jsonify, redirect, request, session, url_for
from flask_babel import gettext as _
from flask_login import current_user

from . import api_tokens, audit
from .extensions import db
from .models import ROLE_RANK, Member, Staff
from .web import same_site_referrer

LEVELS = ("public", "member", "cashier", "manager", "admin", "register")


def access(level: str, *, recent_login: bool = False):
    """Declare who may use a view: @access("cashier"); @access("manager", recent_login=True) for a sensitive one."""
    if level not in LEVELS:
        raise ValueError(f"unknown access level {level!r}")
    if recent_login and level not in ("cashier", "manager", "admin"):
        raise ValueError("only staff routes ask for the password again")

    def decorate(view):
        view.access_level = level
        view.recent_login = recent_login
        return view

    return decorate


def allowed(user, level: str) -> bool:
    if level == "public":
        return True
    if not getattr(user, "is_authenticated", False):
        return False
    if level == "member":
        return isinstance(user, Member)
    if level == "register":
        return False  # a register is a token, never a signed-in person
    return isinstance(user, Staff) and ROLE_RANK.get(user.role, 0) >= ROLE_RANK[level]


def _view_level(endpoint: str | None) -> str | None:
    if endpoint is None:
        return None
    view = current_app.view_functions.get(endpoint)
    return getattr(view, "access_level", None)


def enforce_access():
    """before_request: refuse anything the route does not allow the current user."""
    if request.endpoint is None:  # 404 or 405: let routing answer
        return None
    level = _view_level(request.endpoint)
    if level is None:
        abort(403)
    if level == "register":
        return _authenticate_register()
    if allowed(current_user, level):
        if getattr(current_app.view_functions[request.endpoint], "recent_login", False) and not login_is_recent():
            return _ask_password_again()
        return None
    if not current_user.is_authenticated:
        if request.path.startswith("/api/"):
            return jsonify(error={"code": "unauthorised", "message": "Sign in first.", "field": None}), 401
        sign_in = "auth.member_login" if level == "member" else "auth.login"
        if request.headers.get("HX-Request"):
            response = current_app.response_class(status=401)
            response.headers["HX-Redirect"] = url_for(sign_in, next=request.full_path)
            return response
        return redirect(url_for(sign_in, next=request.full_path))
    abort(403)


def login_is_recent() -> bool:
    """Whether the password was entered within REAUTH_AFTER (at sign-in or when asked again)."""
    entered = session.get("auth_at", 0)
    return datetime.now(timezone.utc).timestamp() - entered <= current_app.config["REAUTH_AFTER"].total_seconds()


def _ask_password_again():
    """Send the person to enter their password again, then back: to this page for a GET, to the page the form
    was on for a POST (which is not carried out: they make the change again, knowingly)."""
    if request.method == "GET":
        back = request.full_path if request.query_string else request.path
    else:
        back = same_site_referrer() or url_for("main.index")
    target = url_for("auth.reauthenticate", next=back, retry="1" if request.method != "GET" else None)
    if request.headers.get("HX-Request"):
        response = current_app.response_class(status=401)
        response.headers["HX-Redirect"] = target
        return response
    return redirect(target, code=303)


def refused(error=None):
    """Audit a refusal (403 for someone signed in, 401 for a register token) in its own small transaction."""
    db.session.rollback()
    audit.record(db.session, "access.denied", at=datetime.now(timezone.utc), target=request.path[:128],
                 after={"method": request.method, "endpoint": request.endpoint})
    db.session.commit()


def bearer_token() -> str | None:
    """The token of an `Authorization: Bearer <token>` header, if there is one."""
    scheme, _sep, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _authenticate_register():
    """The API answers only a valid, unrevoked register token; the store it belongs to is where calls count."""
    token = api_tokens.authenticate(db.session, bearer_token())
    if token is None:
        refused()
        response = jsonify(error={"code": "unauthorised", "field": None,
                                  "message": _("Send a valid register token: Authorization: Bearer <token>.")})
        response.status_code = 401
        response.headers["WWW-Authenticate"] = 'Bearer realm="api"'
        return response
    g.api_token = token
    if request.method == "POST":  # POSTs hold the write lock anyway; GETs stay read-only
        moment = datetime.now(timezone.utc)
        if api_tokens.needs_touch(token, moment):
            token.last_used_at = moment
    return None


def verify_declarations(app: Flask) -> None:
    """Fail at start-up if a route forgot to declare its access level."""
    missing = [
        endpoint
        for endpoint, view in app.view_functions.items()
        if endpoint != "static" and getattr(view, "access_level", None) is None
    ]
    if missing:
        raise RuntimeError("routes without an access declaration: " + ", ".join(sorted(missing)))
    app.view_functions["static"].access_level = "public"

