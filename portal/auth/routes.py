"""Signing in and out: staff with a username, members with their phone; members activate with the
till's one-time code."""
import secrets
from datetime import datetime, timezone

from flask import current_app, redirect, request, session, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_user, logout_user
from sqlalchemy import select
from werkzeug.security import check_password_hash, generate_password_hash

from .. import accounts, audit
from .. import sessions as auth_sessions
from ..access import access
from ..extensions import db, limiter
from ..models import Member, Staff
from ..web import now, render_page, safe_next_url
from . import bp, guard
from ..member.forms import ActivateForm, MemberLoginForm
from .forms import ReauthForm, StaffLoginForm

# Checked against when the username is unknown, so a wrong name and a wrong password take the same time.
_DUMMY_HASH = generate_password_hash(secrets.token_hex(16))


def _login_limits():
    return current_app.config["LOGIN_RATE_LIMIT"]


def _moment() -> datetime:
    # Logins live on the real clock, like the checks that load them (a frozen test clock must not end them).
    return datetime.now(timezone.utc)


def _refused(account: str, field, *, target: str | None, from_sign_in_page: bool = True) -> bool:
    """True (with the message beside `field`, and an audit entry) if the account may not try now."""
    message = guard.refusal(account, from_sign_in_page=from_sign_in_page)
    if message is None:
        return False
    field.errors.append(message)
    audit.record(db.session, "auth.locked", at=_moment(), target=target)
    db.session.commit()
    return True


def _failed(account: str, *, action: str, target: str | None) -> None:
    """A wrong password or code: counted against the account and the address, and audited. The target names
    the account only when it exists, by id: what was typed (a phone, or a password in the wrong field) is never
    written down."""
    guard.failed(account)
    audit.record(db.session, action, at=_moment(), target=target)
    db.session.commit()


@bp.route("/login", methods=["GET", "POST"])
@access("public")
@limiter.limit(_login_limits, methods=["POST"])
def login():
    """Staff sign in with username and password; the old session is cleared first."""
    if current_user.is_authenticated and request.method == "GET":
        return redirect(url_for("main.index"))
    form = StaffLoginForm(next=request.args.get("next"))
    status = 422 if request.method == "POST" else 200
    if form.validate_on_submit():
        username = form.username.data.strip().lower()
        account = guard.staff_account(username)
        staff = db.session.scalars(select(Staff).where(Staff.username == username)).one_or_none()
        target = f"staff:{staff.id}" if staff else None
        if _refused(account, form.password, target=target):
            return render_page("auth/login.html", form=form, status=429)
        password_ok = check_password_hash(staff.password_hash if staff else _DUMMY_HASH, form.password.data)
        if staff and password_ok and staff.active:
            guard.succeeded(account)
            _sign_in(staff)
            return redirect(safe_next_url(form.next.data) or url_for("till.index"), code=303)
        _failed(account, action="auth.login_failed", target=target)
        form.password.errors.append(_("Wrong username or password."))
    return render_page("auth/login.html", form=form, status=status)


def _sign_in(user: Staff | Member) -> None:
    """Start a server-side login for `user` in a fresh session (the old one is cleared, its language kept)."""
    lang = session.get("lang")
    if isinstance(user, Member) and user.locale:
        lang = user.locale
    session.clear()
    if lang:
        session["lang"] = lang
    kind = {"staff": user} if isinstance(user, Staff) else {"member": user}
    moment = _moment()
    user.auth_token = auth_sessions.start(db.session, ip=request.remote_addr, user_agent=request.user_agent.string,
                                          now=moment, **kind)
    if isinstance(user, Staff):
        audit.record(db.session, "auth.login", at=moment, staff_id=user.id, store_id=user.store_id,
                     target=f"staff:{user.id}")
    else:
        audit.record(db.session, "auth.login", at=moment, member_id=user.id, store_id=user.store_id,
                     target=f"member:{user.id}")
    db.session.commit()
    login_user(user)
    session["seen"] = session["auth_at"] = int(moment.timestamp())


def _member_target(phone_e164: str) -> str | None:
    member = accounts.find_by_phone(db.session, phone_e164)
    return f"member:{member.id}" if member else None


@bp.route("/member/login", methods=["GET", "POST"])
@access("public")
@limiter.limit(_login_limits, methods=["POST"])
def member_login():
    """Members sign in with their phone and the password they set."""
    if isinstance(current_user, Member) and request.method == "GET":
        return redirect(url_for("member.home"))
    form = MemberLoginForm(next=request.args.get("next"))
    status = 422 if request.method == "POST" else 200
    if form.validate_on_submit():
        account = guard.member_account(form.phone_e164)
        if _refused(account, form.password, target=_member_target(form.phone_e164)):
            return render_page("auth/member_login.html", form=form, status=429)
        member = accounts.authenticate(db.session, form.phone_e164, form.password.data)
        if member is not None:
            guard.succeeded(account)
            _sign_in(member)
            return redirect(safe_next_url(form.next.data) or url_for("member.home"), code=303)
        _failed(account, action="auth.login_failed", target=_member_target(form.phone_e164))
        form.password.errors.append(_("Wrong phone or password. New here? Activate your account first."))
    return render_page("auth/member_login.html", form=form, status=status)


@bp.route("/member/activate", methods=["GET", "POST"])
@access("public")
@limiter.limit(_login_limits, methods=["POST"])
def activate():
    """Set a password with the 6-digit code from the till (also after a forgotten password)."""
    form = ActivateForm()
    status = 422 if request.method == "POST" else 200
    if form.validate_on_submit():
        account = guard.member_account(form.phone_e164)
        if _refused(account, form.code, target=_member_target(form.phone_e164)):
            return render_page("auth/activate.html", form=form, status=429)
        try:
            member = accounts.activate(db.session, phone_e164=form.phone_e164, code=form.code.data,
                                       password=form.password.data, secret_key=current_app.config["SECRET_KEY"],
                                       now=now())
        except accounts.AccountError as error:
            # a wrong try counts against the code (committed with the failure)
            getattr(form, error.field).errors = [error.message]
            if error.field == "code":
                _failed(account, action="auth.activation_failed", target=_member_target(form.phone_e164))
            else:
                db.session.commit()
        else:
            guard.succeeded(account)
            _sign_in(member)
            return redirect(url_for("member.home"), code=303)
    return render_page("auth/activate.html", form=form, status=status)


@bp.route("/reauth", methods=["GET", "POST"])
@access("cashier")
def reauthenticate():
    """Enter the password again before a sensitive change, when the login is older than REAUTH_AFTER."""
    form = ReauthForm(next=request.args.get("next"))
    staff: Staff = current_user
    minutes = int(current_app.config["REAUTH_AFTER"].total_seconds() // 60)
    status = 422 if request.method == "POST" else 200
    context = dict(form=form, minutes=minutes, from_form=request.args.get("retry") == "1")
    if form.validate_on_submit():
        account = guard.staff_account(staff.username)
        target = f"staff:{staff.id}"
        if _refused(account, form.password, target=target, from_sign_in_page=False):
            return render_page("auth/reauth.html", status=429, **context)
        if check_password_hash(staff.password_hash, form.password.data):
            guard.succeeded(account)
            audit.record(db.session, "auth.reauth", at=_moment(), target=target)
            db.session.commit()
            session["auth_at"] = int(_moment().timestamp())
            return redirect(safe_next_url(form.next.data) or url_for("main.index"), code=303)
        _failed(account, action="auth.reauth_failed", target=target)
        form.password.errors.append(_("This is not your password."))
    return render_page("auth/reauth.html", status=status, **context)


@bp.route("/logout", methods=["POST"])
@access("public")
def logout():
    """End the login on the server too, so a copied cookie no longer works."""
    was_member = isinstance(current_user, Member)
    if current_user.is_authenticated and current_user.auth_token:
        auth_sessions.end(db.session, current_user.auth_token, now())
        audit.record(db.session, "auth.logout", at=_moment(),
                     target=f"{'member' if was_member else 'staff'}:{current_user.id}")
        db.session.commit()
    lang = session.get("lang")
    logout_user()
    session.clear()
    if lang:
        session["lang"] = lang
    return redirect(url_for("auth.member_login" if was_member else "auth.login"), code=303)
