"""The till: one screen to find or register a member, record a purchase and print the receipt."""
from __future__ import annotations

from flask import abort, current_app, redirect, request, session, url_for
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import select
from sqlalchemy.orm import joinedload
from sqlalchemy.exc import IntegrityError

from .. import audit, checkout, complaints, ledger, members, points, returns, senders, tiers
from ..access import access
from ..database import before_writing, end_keeping_loaded
from ..cards import is_valid_card_number
from ..extensions import db
from ..models import Complaint, LedgerEntry, Member, Purchase, Return, TierChange
from ..money import normalise_text
from ..web import current_store, is_htmx, now, render_page, rules
from . import bp
from .forms import AdjustForm, CheckoutForm, ComplaintForm, RegisterForm, ReturnForm

TEMPLATE = "till/index.html"


def _panel(name: str, status: int = 200, **context):
    """The till page with `name` in its panel (member, register, receipt, return_form, return_receipt)."""
    return render_page(TEMPLATE, "panel", status=status, q="", lookup=None, panel=name, **context)


def _written(target: str, panel: str, context):
    """After a write (committed with end_keeping_loaded, so the answer is drawn from what the transaction
    loaded, without loading it again or taking SQLite's write lock again): htmx gets the result in the panel
    with its URL pushed (so a refresh shows it again instead of posting again); a plain form gets a redirect
    to the same URL."""
    if is_htmx():
        response = _panel(panel, **context())
        response.headers["HX-Push-Url"] = target
        return response
    return redirect(target, code=303)


def _show_error(form, error) -> None:
    """Put a service's refusal beside the field it names, or above the form."""
    field = getattr(form, error.field, None) if error.field else None
    if field is not None:
        field.errors = [error.message]
    else:
        form.form_errors.append(error.message)


def _member_or_404(card_number: str) -> Member:
    if not is_valid_card_number(card_number):
        abort(404)
    member = members.find_by_card(db.session, card_number)
    if member is None:
        abort(404)
    return member


def _member_context(member: Member, form: CheckoutForm | None = None, typed_phone: bool = False,
                    adjust_form: AdjustForm | None = None, adjusted: LedgerEntry | None = None) -> dict:
    """Everything the member panel shows: tier, discount, balance and what the next tier needs."""
    moment = now()
    spend = tiers.qualifying_spend(db.session, member.id, moment, rules().qualifying_days)
    tier_progress = tiers.progress(tiers.all_tiers(db.session), member.tier, spend)
    recent = db.session.scalars(
        select(Purchase).where(Purchase.member_id == member.id).options(joinedload(Purchase.store))
        .order_by(Purchase.id.desc()).limit(5)
    ).all()
    tier_history = db.session.scalars(
        select(TierChange).where(TierChange.member_id == member.id).order_by(TierChange.id.desc()).limit(5)
    ).all()
    points_outlook = ledger.outlook(db.session, member, moment, days=30)
    usable, expiring = points_outlook.available, points_outlook.expiring
    registered = session.pop("registered", None)
    if registered and registered.get("card") != member.card_number:
        registered = None
    return {
        "member": member,
        "usable_points": usable,
        "expiring_points": expiring,
        "progress": tier_progress,
        "recent_purchases": recent,
        "tier_history": tier_history,
        "form": form or CheckoutForm(),
        "adjust_form": adjust_form or (AdjustForm() if current_user.has_role("manager") else None),
        "adjusted": adjusted,
        "rules": rules(),
        "max_points": checkout.max_redeemable(10**15, usable, rules()),
        "typed_phone": typed_phone,
        "registered": registered,
    }


@bp.route("/")
@access("cashier")
def index():
    """The till screen, with an empty panel."""
    return _panel("empty")


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
            response = render_page(TEMPLATE, "panel", q=q, lookup=result, panel="member", **context)
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
    return _panel("register", register_form=RegisterForm(), rules=rules())


@bp.route("/members", methods=["POST"])
@access("cashier")
def register_member():
    """Register a member; show the card number and the one-time activation code."""
    form = RegisterForm(store_timezone=current_store().timezone)
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
                channels=senders.configured(current_app.config)[0],
            )
            end_keeping_loaded(db.session, done_writing=True)
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
            return _written(url_for("till.show_member", card_number=member.card_number), "member",
                            lambda: _member_context(member))
    return _panel("register", 422, register_form=form, rules=rules())


@bp.route("/members/<card_number>")
@access("cashier")
def show_member(card_number: str):
    """The member panel with the checkout form."""
    member = _member_or_404(card_number)
    return _panel("member", **_member_context(member))


@bp.route("/members/<card_number>/purchases", methods=["POST"])
@access("cashier")
def record_purchase(card_number: str):
    """Record a purchase once per form key; answer with the receipt."""
    form = CheckoutForm()
    with before_writing(db.session):
        member = _member_or_404(card_number)
        valid = form.validate_on_submit()
    if valid:
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
            _show_error(form, error)
        else:
            end_keeping_loaded(db.session, done_writing=True)
            return _written(url_for("till.show_receipt", purchase_id=result.purchase.id), "receipt",
                            lambda: _receipt_context(result.purchase, None if result.replayed else result))
    db.session.rollback()
    member = _member_or_404(card_number)
    return _panel("member", 422, **_member_context(member, form))


def _receipt_context(purchase: Purchase, recorded: checkout.CheckoutResult | None = None) -> dict:
    """The purchase, its tier change and the member's balance right after it (known without asking the database
    when the purchase was `recorded` in this request: the balance is then the member's, if the purchase moved
    points)."""
    if recorded is not None:
        moved = purchase.points_redeemed or purchase.points_earned
        return {"purchase": purchase, "tier_change": recorded.tier_change, "member": purchase.member,
                "balance_after": purchase.member.points_balance if moved else None}
    change = db.session.scalars(select(TierChange).where(TierChange.purchase_id == purchase.id)).first()
    balance_after = db.session.scalar(
        select(LedgerEntry.balance_after)
        .where(LedgerEntry.purchase_id == purchase.id, LedgerEntry.member_id == purchase.member_id)
        .order_by(LedgerEntry.id.desc())
        .limit(1)
    )
    return {"purchase": purchase, "tier_change": change, "member": purchase.member, "balance_after": balance_after}


@bp.route("/purchases/<id:purchase_id>")
@access("cashier")
def show_receipt(purchase_id: int):
    """A receipt, printable; staff below admin see only their own store's receipts."""
    purchase = db.session.get(Purchase, purchase_id)
    if purchase is None:
        abort(404)
    if current_user.role != "admin" and purchase.store_id != current_store().id:
        abort(404)
    return _panel("receipt", **_receipt_context(purchase))


# --- returns --------------------------------------------------------------------------------------------

@bp.route("/returns")
@access("cashier")
def find_purchases():
    """Purchases to return, by till receipt number, or by member (card, phone, last 4 digits, name)."""
    q = request.args.get("q", "")[:64]
    text = normalise_text(q)  # as receipt numbers are kept; a NUL would be refused by PostgreSQL
    found: list[Purchase] = []
    if text:
        found = list(db.session.scalars(
            select(Purchase).where(Purchase.receipt_number == text).order_by(Purchase.id.desc()).limit(20)
        ))
        if not found:
            result = members.lookup(db.session, text)
            ids = [m.id for m in result.members]
            if ids:
                found = list(db.session.scalars(
                    select(Purchase).where(Purchase.member_id.in_(ids)).order_by(Purchase.id.desc()).limit(20)
                ))
    return render_page(TEMPLATE, "results", q="", lookup=None, return_q=q, purchases=found)


def _purchase_or_404(purchase_id: int) -> Purchase:
    purchase = db.session.get(Purchase, purchase_id)
    if purchase is None:
        abort(404)
    return purchase


def _return_form_context(purchase: Purchase, form: ReturnForm | None = None) -> dict:
    earlier = db.session.scalars(
        select(Return).where(Return.purchase_id == purchase.id).order_by(Return.id)
    ).all()
    return {"purchase": purchase, "return_form": form or ReturnForm(), "earlier_returns": earlier,
            "member": purchase.member}


@bp.route("/purchases/<id:purchase_id>/return")
@access("cashier")
def new_return(purchase_id: int):
    """The return form for one purchase, at any store of the chain."""
    purchase = _purchase_or_404(purchase_id)
    return _panel("return_form", **_return_form_context(purchase))


@bp.route("/purchases/<id:purchase_id>/returns", methods=["POST"])
@access("cashier")
def record_return(purchase_id: int):
    """Record a return once per form key; answer with the return receipt."""
    form = ReturnForm()
    with before_writing(db.session):
        purchase = _purchase_or_404(purchase_id)
        valid = form.validate_on_submit()
    if valid:
        try:
            result = returns.record_return(
                db.session, purchase_id=purchase.id, store=current_store(), staff=current_user,
                returned_gross_fen=form.amount_fen, idempotency_key=form.idempotency_key.data,
                rules=rules(), now=now(),
            )
        except returns.ReturnError as error:
            db.session.rollback()
            _show_error(form, error)
        else:
            end_keeping_loaded(db.session, done_writing=True)
            return _written(url_for("till.show_return", return_id=result.ret.id), "return_receipt",
                            lambda: _return_receipt_context(result.ret))
    db.session.rollback()
    purchase = _purchase_or_404(purchase_id)
    return _panel("return_form", 422, **_return_form_context(purchase, form))


def _return_receipt_context(ret: Return) -> dict:
    change = db.session.scalars(select(TierChange).where(TierChange.return_id == ret.id)).first()
    balance_after = db.session.scalar(
        select(LedgerEntry.balance_after).where(LedgerEntry.return_id == ret.id)
        .order_by(LedgerEntry.id.desc()).limit(1)
    )
    return {"ret": ret, "purchase": ret.purchase, "member": ret.member, "tier_change": change,
            "balance_after": balance_after}


@bp.route("/returns/<id:return_id>")
@access("cashier")
def show_return(return_id: int):
    """A return receipt, printable; staff below admin see only returns made at their store."""
    ret = db.session.get(Return, return_id)
    if ret is None or (current_user.role != "admin" and ret.store_id != current_store().id):
        abort(404)
    return _panel("return_receipt", **_return_receipt_context(ret))


@bp.route("/members/<card_number>/activation-code", methods=["POST"])
@access("cashier")
def issue_activation_code(card_number: str):
    """A new one-time code for a member who forgot their password (or never set one); earlier codes stop working."""
    member = _member_or_404(card_number)
    code = members.issue_activation_code(db.session, member, staff=current_user, rules=rules(),
                                         secret_key=current_app.config["SECRET_KEY"], now=now(),
                                         channels=senders.configured(current_app.config)[0])
    audit.record(db.session, "member.activation_code", at=now(), staff_id=current_user.id,
                 store_id=current_store().id, target=f"member:{member.id}", ip=request.remote_addr)
    end_keeping_loaded(db.session, done_writing=True)
    session["registered"] = {"card": member.card_number, "code": code, "minutes": rules().activation_minutes,
                             "reissued": True}
    return _written(url_for("till.show_member", card_number=card_number), "member",
                    lambda: _member_context(member))


# --- complaints -----------------------------------------------------------------------------------------

@bp.route("/complaints/new")
@access("cashier")
def new_complaint():
    """The complaint form in the panel, for the member (?card=) and purchase (?purchase=) it is about, if any."""
    form = ComplaintForm(formdata=None)
    form.card_number.data = request.args.get("card", "")[:32]
    wanted = request.args.get("purchase", "")
    purchase = (db.session.get(Purchase, int(wanted))
                if wanted.isascii() and wanted.isdigit() and len(wanted) < 10 else None)
    if purchase is not None:
        form.purchase_id.data = str(purchase.id)
        form.card_number.data = form.card_number.data or (purchase.member.card_number
                                                           if purchase.member.deleted_at is None else "")
    return _panel("complaint_form", complaint_form=form, purchase=purchase)


@bp.route("/complaints", methods=["POST"])
@access("cashier")
def file_complaint():
    """Write down a complaint at the counter (or taken by phone); once per form key."""
    form = ComplaintForm()
    if form.validate_on_submit():
        try:
            complaint = complaints.file_complaint(
                db.session, store=current_store(), category=form.category.data, severity=form.severity.data,
                description=form.description.data, channel=form.channel.data, member=form.member,
                purchase=form.purchase, staff=current_user, idempotency_key=form.idempotency_key.data, now=now(),
                ip=request.remote_addr,
            )
        except complaints.ComplaintError as error:
            db.session.rollback()
            _show_error(form, error)
        else:
            end_keeping_loaded(db.session, done_writing=True)
            return _written(url_for("till.show_complaint", complaint_id=complaint.id), "complaint_logged",
                            lambda: {"complaint": complaint})
    db.session.rollback()
    return _panel("complaint_form", 422, complaint_form=form, purchase=form.purchase)


@bp.route("/complaints/<id:complaint_id>")
@access("cashier")
def show_complaint(complaint_id: int):
    """The complaint just logged, with its number to give the customer; staff see their own store's."""
    complaint = db.session.get(Complaint, complaint_id)
    if complaint is None or (current_user.role != "admin" and complaint.store_id != current_store().id):
        abort(404)
    return _panel("complaint_logged", complaint=complaint)


# --- manual adjustments ---------------------------------------------------------------------------------

@bp.route("/members/<card_number>/adjustments", methods=["POST"])
@access("manager", recent_login=True)
def adjust_points(card_number: str):
    """A manager adds or takes points with a reason (audited)."""
    member = _member_or_404(card_number)
    form = AdjustForm()
    if form.validate_on_submit():
        try:
            entry = points.adjust(
                db.session, member_id=member.id, staff=current_user, store=current_store(),
                points=form.points_value, reason=form.reason.data, rules=rules(), now=now(),
                idempotency_key=form.idempotency_key.data, ip=request.remote_addr,
            )
        except points.AdjustmentError as error:
            db.session.rollback()
            _show_error(form, error)
        else:
            end_keeping_loaded(db.session, done_writing=True)
            return _written(url_for("till.show_member", card_number=card_number), "member",
                            lambda: _member_context(_member_or_404(card_number), adjusted=entry))
    db.session.rollback()
    member = _member_or_404(card_number)
    return _panel("member", 422, **_member_context(member, adjust_form=form))
