"""The API's endpoints. Each parses JSON, calls the same service function as the till, and answers JSON."""
from __future__ import annotations

from datetime import datetime, timezone

from flask import current_app, g, request
from flask_babel import get_locale
from flask_babel import gettext as _
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from .. import api_tokens, checkout, complaints, members, returns, senders, tiers
from ..access import access
from ..extensions import db
from ..models import LedgerEntry, Member, Purchase
from ..money import InputError, normalise_text, parse_money
from ..till.forms import RegisterForm
from ..web import now, rules
from . import bp, inputs, shapes
from .errors import ApiError
from .idempotency import idempotent
from .openapi import document

LEDGER_PAGE_SIZE = 50
ANY_AMOUNT_FEN = 10**17  # parse without a cap; the service applies the real one with its own message
SERVICE_FIELDS = {"gross": "gross_amount", "points": "redeem_points", "amount": "gross_amount"}
NOT_FOUND_CODES = {"member_not_found", "purchase_not_found"}


def _locale() -> str:
    return str(get_locale() or "zh")


def _zone() -> str:
    return g.api_token.store.timezone


def _member_body(member: Member) -> dict:
    return shapes.member(db.session, member, now=now(), rules=rules(), locale=_locale())


def _refusal(error: checkout.CheckoutError) -> ApiError:
    """A service's refusal (checkout, return, complaint) as an API error on the API's field name."""
    status = 404 if error.code in NOT_FOUND_CODES else 422
    return ApiError(status, error.code, error.message, SERVICE_FIELDS.get(error.field, error.field))


def _amount(text: str, field: str = "gross_amount") -> int:
    try:
        return parse_money(text, ANY_AMOUNT_FEN)
    except InputError as error:
        raise ApiError(422, "invalid_amount", error.args[0], field) from None


@bp.after_request
def attribute_call(response):
    """Every call is put down to its register and store: in the log, and as the token's last use."""
    token = g.get("api_token")
    if token is not None:
        current_app.logger.info("api %s %s -> %s register=%s store=%s", request.method, request.path,
                                response.status_code, token.id, token.store_id)
        moment = datetime.now(timezone.utc)
        if request.method == "GET" and api_tokens.needs_touch(token, moment):
            engine, token_id = db.engine, token.id
            response.call_on_close(lambda: api_tokens.record_use_apart(engine, token_id, moment))
    return response


@bp.after_request
def html_safe_json(response):
    """No raw <, > or & in a JSON answer: they are written \\u003c, \\u003e, \\u0026 (the same JSON), so a name or a
    description a register sent with markup in it comes back as data that nothing could read as HTML."""
    if response.mimetype == "application/json" and not response.direct_passthrough:
        body = response.get_data(as_text=True)
        if any(c in body for c in "<>&"):
            response.set_data(body.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))
    return response


@bp.get("/openapi.json")
@access("public")
def openapi():
    """The OpenAPI 3.1 document that describes every endpoint, field and error of this API."""
    return document()


@bp.post("/members")
@access("register")
@idempotent
def register_member():
    """Register a member at the register's store; answers the member and their one-time activation code."""
    data = inputs.body()
    values = dict(
        name=inputs.string(data, "name", required=True, max_length=100),
        phone=inputs.string(data, "phone", required=True, max_length=32),
        birthday=inputs.string(data, "birthday", max_length=10),
        email=inputs.string(data, "email", max_length=254),
        privacy_consent=inputs.boolean(data, "privacy_consent", required=True),
        marketing_consent=inputs.boolean(data, "marketing_consent"),
        guardian_consent=inputs.boolean(data, "guardian_consent"),
        referrer=inputs.string(data, "referrer", max_length=32),
    )
    form = RegisterForm(formdata=inputs.form_data(**values), meta={"csrf": False},
                        store_timezone=g.api_token.store.timezone)
    if not form.validate():
        if form.phone.errors and form.phone_e164 and members.find_by_phone(db.session, form.phone_e164):
            raise ApiError(409, "phone_taken", _("This phone is already registered."), "phone")
        raise inputs.form_refusal(form)
    token = g.api_token
    try:
        with db.session.begin_nested():
            registration = members.register_member(
                db.session, name=form.name.data, phone_e164=form.phone_e164, birthday=form.birthday.data,
                email=form.email.data, guardian_consent=form.guardian_consent.data,
                marketing_consent=form.marketing_consent.data, referrer=form.referrer_member,
                store=token.store, staff=None, rules=rules(), secret_key=current_app.config["SECRET_KEY"],
                now=now(), api_token_id=token.id, channels=senders.configured(current_app.config)[0],
            )
    except IntegrityError:
        raise ApiError(409, "phone_taken", _("This phone is already registered."), "phone") from None
    body = _member_body(registration.member)
    body["activation_code"] = registration.activation_code
    return body, 201


@bp.get("/members/lookup")
@access("register")
def lookup_members():
    """Members by full phone, last 4 digits, card number or name prefix (at most 20)."""
    q = request.args.get("q", "")
    if len(q) > 64:
        raise ApiError(422, "too_long", _("Use at most %(count)s characters.", count=64), "q")
    result = members.lookup(db.session, q)
    if result.kind == "empty":
        raise ApiError(422, "missing_field", _("Give a phone, the last 4 digits, a card number or a name."), "q")
    if result.kind == "invalid_card":
        raise ApiError(422, "invalid_card_number",
                       _("This card number has a typo: its check digit does not match."), "q")
    all_tiers = tiers.all_tiers(db.session)
    moment, locale = now(), _locale()
    return {"members": [
        shapes.member(db.session, member, now=moment, rules=rules(), locale=locale, all_tiers=all_tiers)
        for member in result.members
    ]}


@bp.get("/members/<card_number>")
@access("register")
def show_member(card_number: str):
    """One member by card number."""
    return _member_body(inputs.member_by_card(card_number))


@bp.get("/members/<card_number>/ledger")
@access("register")
def member_ledger(card_number: str):
    """The member's points movements, newest first, a page at a time."""
    member = inputs.member_by_card(card_number)
    page_text = request.args.get("page", "1").strip()
    if not (page_text.isascii() and page_text.isdigit()) or not 1 <= int(page_text) <= 1_000_000:
        raise ApiError(422, "invalid_value", _("The page must be a whole number from 1."), "page")
    page = int(page_text)
    rows = db.session.scalars(
        select(LedgerEntry).where(LedgerEntry.member_id == member.id)
        .order_by(LedgerEntry.id.desc()).offset((page - 1) * LEDGER_PAGE_SIZE).limit(LEDGER_PAGE_SIZE + 1)
    ).all()
    zone = _zone()
    return {
        "entries": [shapes.ledger_entry(row, zone) for row in rows[:LEDGER_PAGE_SIZE]],
        "next_page": page + 1 if len(rows) > LEDGER_PAGE_SIZE else None,
    }


@bp.post("/purchases")
@access("register")
@idempotent
def record_purchase():
    """Record a purchase for a member: discount, points paid, points earned, tier; answers the receipt figures."""
    data = inputs.body()
    card = inputs.string(data, "card_number", required=True, max_length=32)
    gross = inputs.string(data, "gross_amount", required=True, max_length=32)
    redeem = inputs.integer(data, "redeem_points", maximum=10**12) or 0
    receipt = normalise_text(inputs.string(data, "receipt_no", max_length=64)) or None
    member = inputs.member_by_card(card)
    gross_fen = _amount(gross)
    token = g.api_token
    try:
        result = checkout.record_purchase(
            db.session, member_id=member.id, store=token.store, staff=None, gross_fen=gross_fen,
            points_to_redeem=redeem, idempotency_key=g.idempotency_key, receipt_number=receipt,
            rules=rules(), now=now(), api_token_id=token.id,
        )
    except checkout.CheckoutError as error:
        raise _refusal(error) from None
    return shapes.purchase(result.purchase, tier_changed=result.tier_change is not None, locale=_locale(),
                           zone=_zone()), 201


@bp.post("/purchases/<id:purchase_id>/returns")
@access("register")
@idempotent
def record_return(purchase_id: int):
    """Return part of a purchase ({"gross_amount"}) or all that is left ({"all": true}), at any store."""
    data = inputs.body()
    gross = inputs.string(data, "gross_amount", max_length=32)
    everything = inputs.boolean(data, "all")
    if everything and gross is not None:
        raise ApiError(422, "invalid_value", _("Send either gross_amount or \"all\": true, not both."),
                       "gross_amount")
    if not everything and gross is None:
        raise ApiError(422, "missing_field", _("Send the amount returned, or \"all\": true."), "gross_amount")
    if db.session.get(Purchase, purchase_id) is None:
        raise ApiError(404, "purchase_not_found", _("No purchase has this number."), None)
    token = g.api_token
    try:
        result = returns.record_return(
            db.session, purchase_id=purchase_id, store=token.store, staff=None,
            returned_gross_fen=None if everything else _amount(gross), idempotency_key=g.idempotency_key,
            rules=rules(), now=now(), api_token_id=token.id,
        )
    except returns.ReturnError as error:
        raise _refusal(error) from None
    return shapes.return_(result.ret, tier_changed=result.tier_change is not None, locale=_locale(),
                          zone=_zone()), 201


@bp.post("/complaints")
@access("register")
@idempotent
def file_complaint():
    """Write down a complaint at the counter, for a member or an anonymous customer."""
    data = inputs.body()
    card = inputs.string(data, "card_number", max_length=32)
    category = inputs.string(data, "category", required=True, max_length=32)
    severity = inputs.string(data, "severity", required=True, max_length=16)
    description = inputs.string(data, "description", required=True, max_length=complaints.MAX_DESCRIPTION)
    purchase_id = inputs.integer(data, "purchase_id", minimum=1)
    member = inputs.member_by_card(card) if card is not None else None
    purchase = None
    if purchase_id is not None:
        purchase = db.session.get(Purchase, purchase_id)
        if purchase is None:
            raise ApiError(404, "purchase_not_found", _("No purchase has this number."), "purchase_id")
    token = g.api_token
    try:
        complaint = complaints.file_complaint(
            db.session, store=token.store, category=category, severity=severity, description=description,
            channel="register", member=member, purchase=purchase, api_token_id=token.id, now=now(),
            ip=request.remote_addr,
        )
    except complaints.ComplaintError as error:
        raise _refusal(error) from None
    return shapes.complaint(complaint, _zone()), 201
