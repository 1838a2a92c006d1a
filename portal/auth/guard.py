"""The web side of portal.login_guard: which account a form names, whether it may try now, and the device
cookie that keeps a person's own browser from being locked out by someone else's guessing."""
from __future__ import annotations

from datetime import datetime, timezone

from flask import after_this_request, current_app, request
from flask_babel import ngettext
from itsdangerous import BadSignature, URLSafeSerializer

from .. import login_guard
from ..extensions import db

DEVICE_COOKIE = "portal_device"
DEVICE_COOKIE_DAYS = 365
DEVICE_ACCOUNTS_KEPT = 5


def _moment() -> datetime:
    # Like the logins themselves, on the real clock: a frozen test clock must not move the lock.
    return datetime.now(timezone.utc)


def _limits() -> login_guard.Limits:
    return login_guard.Limits.from_config(current_app.config)


def staff_account(username: str) -> str:
    return login_guard.account_key(current_app.config["SECRET_KEY"], "staff", username)


def member_account(phone: str) -> str:
    """A member's phone in E.164 when it could be read (so every way of writing it is one account)."""
    return login_guard.account_key(current_app.config["SECRET_KEY"], "member", phone)


def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt="portal-device")


def _trusted_accounts() -> list[str]:
    raw = request.cookies.get(DEVICE_COOKIE)
    if not raw:
        return []
    try:
        accounts = _serializer().loads(raw)
    except BadSignature:
        return []
    return [a for a in accounts if isinstance(a, str)] if isinstance(accounts, list) else []


def refusal(account: str, *, from_sign_in_page: bool = True) -> str | None:
    """The message to show if this account may not try now from here, else None.

    On a sign-in page a browser where the account signed in before is not held by the account's count
    (only by its address's); a password asked again inside a login is (a stolen session may not guess)."""
    trusted = from_sign_in_page and account in _trusted_accounts()
    minutes = login_guard.locked_for(db.session, account=account, ip=request.remote_addr, now=_moment(),
                                     limits=_limits(), trusted_device=trusted)
    if minutes is None:
        return None
    return ngettext("Too many failed attempts. Try again in %(num)d minute.",
                    "Too many failed attempts. Try again in %(num)d minutes.", minutes)


def failed(account: str) -> None:
    """Count a wrong password or code (the caller commits)."""
    login_guard.record_failure(db.session, account=account, ip=request.remote_addr, now=_moment(), limits=_limits())


def succeeded(account: str) -> None:
    """A right password: the account's count starts again, and this browser is remembered as the account's."""
    login_guard.clear(db.session, account)
    accounts = [account, *[a for a in _trusted_accounts() if a != account]][:DEVICE_ACCOUNTS_KEPT]
    value = _serializer().dumps(accounts)

    @after_this_request
    def remember_device(response):
        response.set_cookie(DEVICE_COOKIE, value, max_age=DEVICE_COOKIE_DAYS * 86400, httponly=True,
                            secure=current_app.config["SESSION_COOKIE_SECURE"], samesite="Lax")
        return response
