"""Recording a purchase: the checkout arithmetic of PRODUCT.md and the transaction around it.

Order: gross -> member discount (tier %, half up to the fen) -> points redemption ->
cash paid -> points earned -> tier re-evaluated. The discount and multiplier are
those of the tier held when the purchase starts; an upgrade applies from the next one.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from flask_babel import lazy_gettext as _l
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from . import ledger, tiers
from .models import LedgerKind, Purchase, Staff, Store, TierChange
from .money import round_half_up_div
from .refusals import Refusal
from .rules import Rules


CheckoutError = Refusal  # a checkout that cannot be recorded


@dataclass(frozen=True)
class Quote:
    gross_fen: int
    discount_bp: int
    discount_fen: int
    due_fen: int
    points_redeemed: int
    redeemed_value_fen: int
    paid_fen: int
    earn_rate_milli: int
    multiplier_milli: int
    points_earned: int


def member_discount(gross_fen: int, discount_bp: int) -> int:
    """The tier discount in fen, rounded half up."""
    return round_half_up_div(gross_fen * discount_bp, 10_000)


def points_earned(paid_fen: int, earn_rate_milli: int, multiplier_milli: int) -> int:
    """floor(paid_yuan x earn_rate x multiplier), in integers."""
    return paid_fen * earn_rate_milli * multiplier_milli // (100 * 1000 * 1000)


def max_redeemable(due_fen: int, balance: int, rules: Rules) -> int:
    """The most points that may pay towards `due_fen` with this balance."""
    value_cap = due_fen * rules.redeem_cap_percent // 100
    return max(0, min(balance, rules.points_for_value(value_cap)))


def quote(
    gross_fen: int,
    *,
    discount_bp: int,
    multiplier_milli: int,
    points_to_redeem: int,
    balance: int,
    rules: Rules,
) -> Quote:
    """Work out every figure of the receipt, or raise CheckoutError beside the field at fault."""
    if gross_fen <= 0:
        raise CheckoutError("gross", _l("The amount must be more than zero."), "invalid_amount")
    if gross_fen > rules.purchase_cap_fen:
        raise CheckoutError("gross", _l("The amount is more than the limit for one purchase."),
                            "amount_over_limit")
    discount = member_discount(gross_fen, discount_bp)
    due = gross_fen - discount
    if points_to_redeem < 0:
        raise CheckoutError("points", _l("Points cannot be negative."), "invalid_points")
    if points_to_redeem:
        if points_to_redeem > balance:
            raise CheckoutError(
                "points", _l("The member has only %(balance)s points.", balance=f"{max(balance, 0):,}"),
                "insufficient_points",
            )
        most = max_redeemable(due, balance, rules)
        if most < rules.redeem_minimum:
            raise CheckoutError(
                "points",
                _l("This purchase is too small to pay with points (at least %(minimum)s points at a time).",
                   minimum=rules.redeem_minimum),
                "purchase_too_small_for_points",
            )
        if points_to_redeem < rules.redeem_minimum:
            raise CheckoutError(
                "points", _l("Redeem at least %(minimum)s points at a time.", minimum=rules.redeem_minimum),
                "below_redeem_minimum",
            )
        if points_to_redeem > most:
            raise CheckoutError(
                "points",
                _l("At most %(points)s points can pay for this purchase.", points=f"{most:,}"),
                "over_redeem_limit",
            )
    redeemed_value = rules.points_value_fen(points_to_redeem)
    paid = due - redeemed_value
    earned = points_earned(paid, rules.earn_rate_milli, multiplier_milli)
    return Quote(
        gross_fen=gross_fen,
        discount_bp=discount_bp,
        discount_fen=discount,
        due_fen=due,
        points_redeemed=points_to_redeem,
        redeemed_value_fen=redeemed_value,
        paid_fen=paid,
        earn_rate_milli=rules.earn_rate_milli,
        multiplier_milli=multiplier_milli,
        points_earned=earned,
    )


@dataclass(frozen=True)
class CheckoutResult:
    purchase: Purchase
    tier_change: TierChange | None
    replayed: bool  # True when this key had already recorded the purchase


def find_by_key(session: Session, key: str) -> Purchase | None:
    return session.scalars(select(Purchase).where(Purchase.idempotency_key == key)).one_or_none()


def _replay(session: Session, key: str, member_id: int) -> CheckoutResult:
    purchase = find_by_key(session, key)
    if purchase.member_id != member_id:
        raise CheckoutError(None, _l("This form was already used for another member. Start a new sale."),
                            "idempotency_key_reused")
    change = session.scalars(select(TierChange).where(TierChange.purchase_id == purchase.id)).first()
    return CheckoutResult(purchase, change, replayed=True)


def record_purchase(
    session: Session,
    *,
    member_id: int,
    store: Store,
    staff: Staff | None,
    gross_fen: int,
    points_to_redeem: int,
    idempotency_key: str,
    receipt_number: str | None,
    rules: Rules,
    now: datetime,
    api_token_id: int | None = None,
) -> CheckoutResult:
    """Record one purchase with its ledger entries and tier change, once per idempotency key.

    Runs inside the caller's transaction; the caller commits. A key seen before returns the
    purchase it recorded (a double-click, a retry), whatever the rest of the form says.
    `staff` is the cashier at the till, or None with `api_token_id` for a cash register.
    """
    member = ledger.lock_member(session, member_id)
    if member is None or member.deleted_at is not None:
        raise CheckoutError(None, _l("No such member."), "member_not_found")
    if find_by_key(session, idempotency_key):
        return _replay(session, idempotency_key, member_id)
    ledger.expire_due(session, member, now)
    levels = tiers.all_tiers(session)  # before member.tier, which then comes from the session's identity map

    figures = quote(
        gross_fen,
        discount_bp=member.tier.discount_bp,
        multiplier_milli=member.tier.multiplier_milli,
        points_to_redeem=points_to_redeem,
        balance=member.points_balance,
        rules=rules,
    )
    referral_due = bool(member.referrer_id and member.referral_rewarded_at is None and rules.referral_bonus)
    first_purchase = referral_due and session.scalar(
        select(Purchase.id).where(Purchase.member_id == member.id).limit(1)) is None
    purchase = Purchase(
        idempotency_key=idempotency_key,
        member_id=member.id,
        store_id=store.id,
        staff_id=staff.id if staff else None,
        api_token_id=api_token_id,
        receipt_number=receipt_number or None,
        tier_id=member.tier_id,
        gross_fen=figures.gross_fen,
        discount_bp=figures.discount_bp,
        discount_fen=figures.discount_fen,
        points_redeemed=figures.points_redeemed,
        redeemed_value_fen=figures.redeemed_value_fen,
        paid_fen=figures.paid_fen,
        earn_rate_milli=figures.earn_rate_milli,
        multiplier_milli=figures.multiplier_milli,
        points_earned=figures.points_earned,
        refunded_fen=0,
        created_at=now,
    )
    try:
        with session.begin_nested():
            session.add(purchase)
            session.flush()
    except IntegrityError:
        # Another request with the same key committed between our check and our insert.
        return _replay(session, idempotency_key, member_id)

    refs = dict(at=now, store=store, staff_id=staff.id if staff else None, purchase_id=purchase.id)
    expires = ledger.lot_expiry(now, store.timezone, rules.expiry_days)
    if figures.points_redeemed:
        ledger.debit(session, member, LedgerKind.REDEEM, figures.points_redeemed, "purchase_redeem", **refs)
    if figures.points_earned:
        ledger.credit(session, member, LedgerKind.EARN, [ledger.Portion(figures.points_earned, expires)],
                      "purchase_earn", **refs)
    if first_purchase:
        referrer = ledger.lock_member(session, member.referrer_id)
        if referrer is not None and referrer.deleted_at is None:
            ledger.credit(session, referrer, LedgerKind.BONUS, [ledger.Portion(rules.referral_bonus, expires)],
                          "referral", related_member_id=member.id, **refs)
        member.referral_rewarded_at = now

    session.flush()
    spend = tiers.qualifying_spend(session, member.id, now, rules.qualifying_days)
    change = tiers.upgrade_if_reached(
        session, member, levels, spend,
        at=now, reason="purchase", purchase_id=purchase.id, staff_id=staff.id if staff else None,
    )
    return CheckoutResult(purchase, change, replayed=False)
