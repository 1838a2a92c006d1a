"""The front door, the language switch, and the one-tap unsubscribe link of marketing messages."""
from flask import abort, current_app, redirect, request, session, url_for
from flask_login import current_user

from .. import audit, messaging
from ..access import access
from ..extensions import csrf, db, limiter
from ..models import Member, Message, Staff, Store
from ..web import now, render_page, safe_next_url
from . import bp

UNSUBSCRIBE = "member/unsubscribe.html"
MAX_TOKEN = 64


@bp.route("/")
@access("public")
def index():
    """Send each person to their own part of the portal."""
    if isinstance(current_user, Staff):
        return redirect(url_for("till.index"))
    if isinstance(current_user, Member):
        return redirect(url_for("member.home"))
    return redirect(url_for("auth.member_login"))


@bp.route("/language", methods=["POST"])
@access("public")
def set_language():
    """Keep the chosen language for this browser."""
    lang = request.form.get("lang")
    if lang in ("zh", "en"):
        session["lang"] = lang
    return redirect(safe_next_url(request.form.get("next")) or url_for("main.index"), code=303)


# --- one-tap unsubscribe --------------------------------------------------------------------------------

def _unsubscribe_limit() -> str:
    """Per address: people tap a link now and then; mail providers send one-click requests from few addresses."""
    return current_app.config.get("UNSUBSCRIBE_RATE_LIMIT", "60 per minute")


def _token_key() -> str:
    """Rate-limit key per link, whoever uses it."""
    return "unsubscribe:" + (request.view_args or {}).get("token", "")[:MAX_TOKEN]


def _unsubscribe_page(state: str, message: Message | None = None, status: int = 200, token: str | None = None):
    store = None
    if message is not None:
        store = db.session.get(Store, message.store_id) if message.store_id else None
        member = db.session.get(Member, message.member_id)
        store = store or (member.store if member else None)
    response = render_page(UNSUBSCRIBE, status=status, state=state, store_name=store.name if store else None,
                           token=token)
    response.headers["Cache-Control"] = "no-store"  # the address is the key to this member's choice
    response.headers["X-Robots-Tag"] = "noindex"
    return response


def _message_or_404(token: str) -> Message:
    message = None
    if len(token) <= MAX_TOKEN:
        message = messaging.message_for_token(db.session, token, current_app.config["SECRET_KEY"])
    if message is None:
        abort(_unsubscribe_page("invalid", status=404))
    return message


def _still_subscribed(message: Message) -> bool:
    member = db.session.get(Member, message.member_id)
    return bool(member and member.deleted_at is None and member.marketing_consent)


@bp.route("/u/<token>")
@access("public")
@limiter.limit(_unsubscribe_limit)
@limiter.limit("20 per minute", key_func=_token_key)
def unsubscribe(token: str):
    """The unsubscribe link of a marketing message, without signing in: the store's name and one button.

    Opening it changes nothing (mail scanners open links); the button does. The token is the message id and
    an HMAC of it, so it cannot be guessed; a forged or damaged one is a 404."""
    message = _message_or_404(token)
    if not _still_subscribed(message):
        return _unsubscribe_page("done" if request.args.get("done") else "already", message)
    return _unsubscribe_page("ask", message, token=token)


@bp.route("/u/<token>", methods=["POST"])
@access("public")
@csrf.exempt
@limiter.limit(_unsubscribe_limit)
@limiter.limit("20 per minute", key_func=_token_key)
def confirm_unsubscribe(token: str):
    """Withdraw the member's marketing consent and cancel the marketing still queued for them.

    The page's button posts with its CSRF token. A mail client's RFC 8058 one-click request (body
    `List-Unsubscribe=One-Click`, no cookies, no CSRF token) is let through without one: the unguessable token in
    the address is what authorises it, and all it can do is stop offers. Any other POST without a valid CSRF
    token is refused as everywhere else."""
    one_click = request.form.get("List-Unsubscribe") == "One-Click"
    if not one_click:
        csrf.protect()
    message = _message_or_404(token)
    moment = now()
    changed = messaging.unsubscribe(db.session, message, now=moment)
    if changed:
        audit.record(db.session, "member.unsubscribe", at=moment, store_id=message.store_id,
                     target=f"member:{message.member_id}", ip=request.remote_addr,
                     before={"marketing_consent": True},
                     after={"marketing_consent": False, "message_id": message.id, "one_click": one_click})
    db.session.commit()
    if one_click:
        return _unsubscribe_page("done" if changed else "already", message)
    if not changed:
        return _unsubscribe_page("already", message)
    return redirect(url_for("main.unsubscribe", token=token, done=1), code=303)
