"""The front door and the language switch."""
from flask import redirect, request, session, url_for
from flask_login import current_user

from ..access import access
from ..models import Member, Staff
from ..web import safe_next_url
from . import bp


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
