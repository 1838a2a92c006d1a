"""Signing in and out: staff with a username, members with their phone; members activate with the
till's one-time code."""
import secrets
from datetime import datetime, timezone

from flask import current_app, redirect, request, session, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_user, logout_user
from sqlalchemy import select
from werkzeug.security import check_password_hash, generate_password_hash

from .. import accounts
from .. import sessions as auth_sessions
from ..access import access
from ..extensions import db, limiter, login_account_key
from ..models import Member, Staff
from ..web import now, render_page, safe_next_url
from . import bp
from ..member.forms import ActivateForm, MemberLoginForm
from .forms import StaffLoginForm

# Checked against when the username is unknown, so a wrong name and a wrong password take the same time.
_DUMMY_HASH = generate_password_hash(secrets.token_hex(16))


def _login_limits():
    return current_app.config["LOGIN_RATE_LIMIT"]


def _account_limits():
    return current_app.config["LOGIN_ACCOUNT_RATE_LIMIT"]


@bp.route("/login", methods=["GET", "POST"])
@access("public")
@limiter.limit(_login_limits, methods=["POST"])
@limiter.limit(_account_limits, methods=["POST"], key_func=login_account_key)
def login():
    """Staff sign in with username and password; the old session is cleared first."""
    if current_user.is_authenticated and request.method == "GET":
        return redirect(url_for("main.index"))
    form = StaffLoginForm(next=request.args.get("next"))
    if form.validate_on_submit():
        username = form.username.data.strip().lower()
        staff = db.session.scalars(select(Staff).where(Staff.username == username)).one_or_none()
        password_ok = check_password_hash(staff.password_hash if staff else _DUMMY_HASH, form.password.data)
        if staff and password_ok and staff.active:
            _sign_in(staff)
            return redirect(safe_next_url(form.next.data) or url_for("till.index"), code=303)
        form.password.errors.append(_("Wrong username or password."))
    status = 422 if request.method == "POST" else 200
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
    # Logins live on the real clock, like the checks that load them (a frozen test clock must not end them).
    moment = datetime.now(timezone.utc)
    user.auth_token = auth_sessions.start(db.session, ip=request.remote_addr, user_agent=request.user_agent.string,
                                          now=moment, **kind)
    db.session.commit()
    login_user(user)
    session["seen"] = int(moment.timestamp())


@bp.route("/member/login", methods=["GET", "POST"])
@access("public")
@limiter.limit(_login_limits, methods=["POST"])
@limiter.limit(_account_limits, methods=["POST"], key_func=login_account_key)
def member_login():
    """Members sign in with their phone and the password they set."""
    if isinstance(current_user, Member) and request.method == "GET":
        return redirect(url_for("member.home"))
    form = MemberLoginForm(next=request.args.get("next"))
    if form.validate_on_submit():
        member = accounts.authenticate(db.session, form.phone_e164, form.password.data)
        if member is not None:
            _sign_in(member)
            return redirect(safe_next_url(form.next.data) or url_for("member.home"), code=303)
        form.password.errors.append(_("Wrong phone or password. New here? Activate your account first."))
    status = 422 if request.method == "POST" else 200
    return render_page("auth/member_login.html", form=form, status=status)


@bp.route("/member/activate", methods=["GET", "POST"])
@access("public")
@limiter.limit(_login_limits, methods=["POST"])
@limiter.limit(_account_limits, methods=["POST"], key_func=login_account_key)
def activate():
    """Set a password with the 6-digit code from the till (also after a forgotten password)."""
    form = ActivateForm()
    if form.validate_on_submit():
        try:
            member = accounts.activate(db.session, phone_e164=form.phone_e164, code=form.code.data,
                                       password=form.password.data, secret_key=current_app.config["SECRET_KEY"],
                                       now=now())
        except accounts.AccountError as error:
            db.session.commit()  # a wrong try counts against the code
            getattr(form, error.field).errors = [error.message]
        else:
            _sign_in(member)
            return redirect(url_for("member.home"), code=303)
    status = 422 if request.method == "POST" else 200
    return render_page("auth/activate.html", form=form, status=status)


@bp.route("/logout", methods=["POST"])
@access("public")
def logout():
    """End the login on the server too, so a copied cookie no longer works."""
    was_member = isinstance(current_user, Member)
    if current_user.is_authenticated and current_user.auth_token:
        auth_sessions.end(db.session, current_user.auth_token, now())
        db.session.commit()
    lang = session.get("lang")
    logout_user()
    session.clear()
    if lang:
        session["lang"] = lang
    return redirect(url_for("auth.member_login" if was_member else "auth.login"), code=303)
