"""Who may use each route. Every view declares it; the app refuses to start if one does not.

Levels: public (anyone), member (a signed-in member, only their own data),
cashier / manager / admin (staff of at least that role), register (a cash register's
bearer token on the JSON API; session cookies count for nothing there).
"""
from __future__ import annotations

from datetime import datetime, timezone

from flask import Flask, abort, current_app, g, jsonify, redirect, request, url_for
from flask_babel import gettext as _
from flask_login import current_user

from . import api_tokens
from .extensions import db
from .models import ROLE_RANK, Member, Staff

LEVELS = ("public", "member", "cashier", "manager", "admin", "register")


def access(level: str):
    """Declare who may use a view: @access("cashier")."""
    if level not in LEVELS:
        raise ValueError(f"unknown access level {level!r}")

    def decorate(view):
        view.access_level = level
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


def bearer_token() -> str | None:
    """The token of an `Authorization: Bearer <token>` header, if there is one."""
    scheme, _sep, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _authenticate_register():
    """The API answers only a valid, unrevoked register token; the store it belongs to is where calls count."""
    token = api_tokens.authenticate(db.session, bearer_token())
    if token is None:
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

