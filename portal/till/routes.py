"""The till: one screen to find or register a member, record a purchase and print the receipt."""
from __future__ import annotations

from flask import abort, current_app, redirect, request, session, url_for
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from .. import checkout, members, tiers
from ..access import access
from ..cards import is_valid_card_number
from ..extensions import db
from ..models import LedgerEntry, Member, Purchase, TierChange
from ..web import current_store, is_htmx, now, render_page, rules
from . import bp
from .forms import CheckoutForm, RegisterForm

TEMPLATE = "till/index.html"


def _member_or_404(card_number: str) -> Member:
    if not is_valid_card_number(card_number):
        abort(404)
    member = members.find_by_card(db.session, card_number)
    if member is None:
        abort(404)
    return member


def _member_context(member: Member, form: CheckoutForm | None = None, typed_phone: bool = False) -> dict:
    """Everything the member panel shows: tier, discount, balance and what the next tier needs."""
    spend = tiers.qualifying_spend(db.session, member.id, now(), rules().qualifying_days)
    tier_progress = tiers.progress(tiers.all_tiers(db.session), member.tier, spend)
    recent = db.session.scalars(
        select(Purchase).where(Purchase.member_id == member.id).order_by(Purchase.id.desc()).limit(5)
    ).all()
    registered = session.pop("registered", None)
    if registered and registered.get("card") != member.card_number:
        registered = None
    return {
        "member": member,
        "progress": tier_progress,
        "recent_purchases": recent,
        "form": form or CheckoutForm(),
        "rules": rules(),
        "max_points": checkout.max_redeemable(10**15, member.points_balance, rules()),
        "typed_phone": typed_phone,
        "registered": registered,
    }


@bp.route("/")
@access("cashier")
def index():
    """The till screen, with an empty panel."""
    return render_page(TEMPLATE, "panel", q="", lookup=None)


@bp.route("/lookup")
@access("cashier")
def lookup():
    """Matches for the lookup box as the cashier types; a card or full phone opens the member at once."""
    q = request.args.get("q", "")[:64]
    result = members.lookup(db.session, q)
    if result.exact and result.members:
        member = result.members[0]
        context = _member_context(member, typed_phone=result.kind == "phone")
        if is_htmx():
            response = render_page(TEMPLATE, "panel", q=q, lookup=result, **context)
            response.headers["HX-Retarget"] = "#panel"
            response.headers["HX-Reswap"] = "innerHTML"
            response.headers["HX-Push-Url"] = url_for("till.show_member", card_number=member.card_number)
            return response
        return redirect(url_for("till.show_member", card_number=member.card_number), code=303)
    return render_page(TEMPLATE, "results", q=q, lookup=result)


@bp.route("/members/new")
@access("cashier")
def new_member():
    """The registration form, in the panel."""
    return render_page(TEMPLATE, "panel", q="", lookup=None, register_form=RegisterForm(), rules=rules())


@bp.route("/members", methods=["POST"])
@access("cashier")
def register_member():
    """Register a member; show the card number and the one-time activation code."""
    form = RegisterForm()
    if form.validate_on_submit():
        try:
            registration = members.register_member(
                db.session,
                name=form.name.data,
                phone_e164=form.phone_e164,
                birthday=form.birthday.data,
                email=form.email.data,
                guardian_consent=form.guardian_consent.data,
                marketing_consent=form.marketing_consent.data,
                referrer=form.referrer_member,
                store=current_store(),
                staff=current_user,
                rules=rules(),
                secret_key=current_app.config["SECRET_KEY"],
                now=now(),
            )
            db.session.commit()
        except IntegrityError:
            db.session.rollback()
            form.phone.errors = [_("This phone is already registered.")]
        else:
            member = registration.member
            session["registered"] = {
                "card": member.card_number,
                "code": registration.activation_code,
                "minutes": rules().activation_minutes,
            }
            target = url_for("till.show_member", card_number=member.card_number)
            if is_htmx():
                response = render_page(TEMPLATE, "panel", q="", lookup=None, **_member_context(member))
                response.headers["HX-Push-Url"] = target
                return response
            return redirect(target, code=303)
    return render_page(TEMPLATE, "panel", status=422, q="", lookup=None, register_form=form, rules=rules())


@bp.route("/members/<card_number>")
@access("cashier")
def show_member(card_number: str):
    """The member panel with the checkout form."""
    member = _member_or_404(card_number)
    return render_page(TEMPLATE, "panel", q="", lookup=None, **_member_context(member))


@bp.route("/members/<card_number>/purchases", methods=["POST"])
@access("cashier")
def record_purchase(card_number: str):
    """Record a purchase once per form key; answer with the receipt."""
    member = _member_or_404(card_number)
    form = CheckoutForm()
    if form.validate_on_submit():
        try:
            result = checkout.record_purchase(
                db.session,
                member_id=member.id,
                store=current_store(),
                staff=current_user,
                gross_fen=form.gross_fen,
                points_to_redeem=form.points_value,
                idempotency_key=form.idempotency_key.data,
                receipt_number=form.receipt_number.data,
                rules=rules(),
                now=now(),
            )
        except checkout.CheckoutError as error:
            db.session.rollback()
            field = getattr(form, error.field, None) if error.field else None
            if field is not None:
                field.errors = [error.message]
            else:
                form.form_errors.append(error.message)
        else:
            db.session.commit()
            target = url_for("till.show_receipt", purchase_id=result.purchase.id)
            if is_htmx():
                response = render_page(TEMPLATE, "panel", q="", lookup=None, **_receipt_context(result.purchase))
                response.headers["HX-Push-Url"] = target
                return response
            return redirect(target, code=303)
    db.session.rollback()
    member = _member_or_404(card_number)
    return render_page(TEMPLATE, "panel", status=422, q="", lookup=None, **_member_context(member, form))


def _receipt_context(purchase: Purchase) -> dict:
    """The purchase, its tier change and the member's balance right after it."""
    change = db.session.scalars(select(TierChange).where(TierChange.purchase_id == purchase.id)).first()
    balance_after = db.session.scalar(
        select(LedgerEntry.balance_after)
        .where(LedgerEntry.purchase_id == purchase.id, LedgerEntry.member_id == purchase.member_id)
        .order_by(LedgerEntry.id.desc())
        .limit(1)
    )
    return {"purchase": purchase, "tier_change": change, "member": purchase.member, "balance_after": balance_after}


@bp.route("/purchases/<int:purchase_id>")
@access("cashier")
def show_receipt(purchase_id: int):
    """A receipt, printable; staff below admin see only their own store's receipts."""
    purchase = db.session.get(Purchase, purchase_id)
    if purchase is None:
        abort(404)
    if current_user.role != "admin" and purchase.store_id != current_store().id:
        abort(404)
    return render_page(TEMPLATE, "panel", q="", lookup=None, **_receipt_context(purchase))
