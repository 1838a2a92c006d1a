"""The manager area. For now: the cash registers' API tokens (admins only)."""
from __future__ import annotations

from flask import abort, redirect, request, url_for
from flask_login import current_user
from sqlalchemy import select
from wtforms import SelectChoice

from .. import api_tokens
from ..access import access
from ..extensions import db
from ..models import ApiToken, Store
from ..web import is_htmx, now, render_page
from . import bp
from .forms import ApiTokenForm

TEMPLATE = "manage/api_tokens.html"


def _token_form(form: ApiTokenForm | None = None) -> ApiTokenForm:
    form = form or ApiTokenForm()
    stores = db.session.scalars(select(Store).where(Store.active.is_(True)).order_by(Store.id)).all()
    form.store_id.choices = [SelectChoice(store.id, f"{store.code} · {store.name}") for store in stores]
    return form


def _page(status: int = 200, **context):
    context.setdefault("form", _token_form())
    context.setdefault("new_token", None)
    context.setdefault("replayed", False)
    return render_page(TEMPLATE, "tokens", status=status, tokens=api_tokens.all_tokens(db.session), **context)


@bp.route("/api-tokens")
@access("admin")
def api_tokens_page():
    """Every register's token: which store it counts for, when it was last used, revoked or not."""
    return _page()


@bp.route("/api-tokens", methods=["POST"])
@access("admin", recent_login=True)
def create_api_token():
    """Create a token for one register and show it once; the same form sent twice creates one token."""
    form = _token_form(ApiTokenForm())
    if not form.validate_on_submit():
        return _page(422, form=form)
    store = db.session.get(Store, form.store_id.data)
    try:
        row, token = api_tokens.create_token(
            db.session, name=form.name.data, store=store, staff=current_user, now=now(), ip=request.remote_addr,
            creation_key=form.idempotency_key.data,
        )
    except api_tokens.TokenError as error:
        db.session.rollback()
        form.name.errors = [error.message]
        return _page(422, form=form)
    db.session.commit()
    # The token is shown in this answer only (never put in a cookie or a URL), so no redirect here.
    return _page(201, new_token=token, new_row=row, replayed=token is None, form=_token_form(ApiTokenForm(formdata=None)))


@bp.route("/api-tokens/<id:token_id>/revoke", methods=["POST"])
@access("admin", recent_login=True)
def revoke_api_token(token_id: int):
    """Revoke a register's token; its very next request is refused."""
    row = db.session.get(ApiToken, token_id)
    if row is None:
        abort(404)
    api_tokens.revoke(db.session, row, staff=current_user, now=now(), ip=request.remote_addr)
    db.session.commit()
    if is_htmx():
        return _page(revoked=row)
    return redirect(url_for("manage.api_tokens_page"), code=303)
