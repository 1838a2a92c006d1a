"""Helpers shared by the blueprints: page-or-fragment rendering, the current store, the clock."""
from __future__ import annotations

from datetime import datetime, timezone
from urllib.parse import urlsplit

from flask import current_app, g, has_request_context, render_template, request
from flask_login import current_user
from jinja2_fragments.flask import render_block
from sqlalchemy import select

from .audit import SYSTEM, Actor
from .extensions import db
from .models import Member, Staff, Store
from .rules import Rules, load_rules


def is_htmx() -> bool:
    """True for an htmx request that wants a fragment.

    Boosted requests and history restores (the back button with no cached page) want the whole page.
    """
    headers = request.headers
    return (
        headers.get("HX-Request") == "true"
        and headers.get("HX-Boosted") != "true"
        and headers.get("HX-History-Restore-Request") != "true"
    )


def render_page(template: str, block: str | None = None, status: int = 200, **context):
    """Render the whole page, or only `block` of the same template for an htmx request."""
    if block and is_htmx():
        body = render_block(template, block, **context)
    else:
        body = render_template(template, **context)
    response = current_app.make_response((body, status))
    response.vary.add("HX-Request")
    return response


def now() -> datetime:
    """The current time in UTC; tests may pin it with app.config['FROZEN_NOW']."""
    frozen = current_app.config.get("FROZEN_NOW")
    return frozen if frozen is not None else datetime.now(timezone.utc)


def rules() -> Rules:
    """The points rules in force for this request, read once."""
    if "rules" not in g:
        g.rules = load_rules(db.session)
    return g.rules


def current_store() -> Store | None:
    """The store a staff member works at; staff without one (an admin) work at the first store."""
    if "store" not in g:
        store = getattr(current_user, "store", None)
        if store is None:
            store = db.session.scalars(select(Store).where(Store.active.is_(True)).order_by(Store.id).limit(1)).first()
        g.store = store
    return g.store


def safe_next_url(target: str | None) -> str | None:
    """Only a path on this site may be a redirect target after login or a language switch."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    parts = urlsplit(target)
    return None if parts.scheme or parts.netloc else target


def current_actor() -> Actor:
    """Who is acting in this request, for the audit log: a staff member, a member, a register or nobody yet."""
    if not has_request_context():
        return SYSTEM
    ip = request.remote_addr
    token = g.get("api_token")
    if token is not None:
        return Actor(role="register", store_id=token.store_id, ip=ip)
    user = current_user._get_current_object() if current_user else None
    if isinstance(user, Staff):
        return Actor(staff_id=user.id, role=user.role, store_id=user.store_id, ip=ip)
    if isinstance(user, Member):
        return Actor(member_id=user.id, role="member", store_id=user.store_id, ip=ip)
    return Actor(role="anonymous", ip=ip)


def same_site_referrer() -> str | None:
    """The path of the page a form was sent from, when it is a page of this site."""
    referrer = request.referrer
    if not referrer:
        return None
    parts = urlsplit(referrer)
    if parts.netloc and parts.netloc != request.host:
        return None
    return safe_next_url(parts.path + (f"?{parts.query}" if parts.query else ""))
