"""Returns: the cumulative proportional arithmetic of PRODUCT.md and the transaction around it.

For a purchase with gross G, cash paid P, points earned E and points redeemed R, after the
returns so far add up to g at shelf price:
    refund   = round_half_up(P x g / G) - already refunded
    reversed = floor(E x g / G) - already reversed
    restored = floor(R x g / G) - already restored
so partial returns always add up exactly to the whole. Restored points are credited first;
a reversal the member can no longer cover (the points were spent) is a shortfall, taken off the
cash refund at the redemption value (policy "deduct") or left as a negative balance ("negative").
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from flask_babel import lazy_gettext as _l
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from . import ledger, tiers
from .checkout import CheckoutError
from .database import lock_row
from .models import LedgerEntry, LedgerKind, LotUse, Member, Purchase, Return, Staff, Store, TierChange
from .money import format_yuan, round_half_up_div
from .rules import Rules

ReturnError = CheckoutError  # same shape: a field and a message shown beside it


@dataclass(frozen=True)
class ReturnFigures:
    returned_gross_fen: int
    refund_fen: int
    points_restored: int
    points_reversed: int


def proportional(purchase: Purchase, returned_gross_fen: int) -> ReturnFigures:
    """This return's share of the purchase, cumulative so that all returns add up to the whole."""
    so_far = purchase.returned_gross_fen + returned_gross_fen
    gross = purchase.gross_fen
    return ReturnFigures(
        returned_gross_fen=returned_gross_fen,
        refund_fen=round_half_up_div(purchase.paid_fen * so_far, gross) - purchase.refunded_fen,
        points_restored=purchase.points_redeemed * so_far // gross - purchase.points_restored,
        points_reversed=purchase.points_earned * so_far // gross - purchase.points_reversed,
    )


@dataclass(frozen=True)
class Shortfall:
    points: int  # reversal not covered by the balance
    deducted_fen: int  # taken off the refund for it
    covered_points: int  # the part of the shortfall the deduction paid for


def shortfall(balance_after_restore: int, points_reversed: int, refund_fen: int, rules: Rules) -> Shortfall:
    """How much of a reversal the balance cannot cover, and what the policy does about it."""
    short = max(0, points_reversed - max(balance_after_restore, 0))
    if not short or rules.shortfall_policy != "deduct":
        return Shortfall(short, 0, 0)
    deducted = min(rules.points_value_fen(short), refund_fen)
    # Only what the deduction paid for is covered; the rest (even a fraction of a fen) stays owing.
    return Shortfall(short, deducted, min(short, rules.points_for_value(deducted)))


def validate_amount(purchase: Purchase, returned_gross_fen: int) -> None:
    if purchase.returnable_fen <= 0:
        raise ReturnError(None, _l("Everything on this purchase has already been returned."), "exceeds_returnable")
    if returned_gross_fen <= 0:
        raise ReturnError("amount", _l("The amount must be more than zero."), "invalid_amount")
    if returned_gross_fen > purchase.returnable_fen:
        raise ReturnError(
            "amount", _l("At most %(amount)s of this purchase can still be returned.",
                         amount=format_yuan(purchase.returnable_fen)),
            "exceeds_returnable",
        )


@dataclass(frozen=True)
class ReturnResult:
    ret: Return
    tier_change: TierChange | None
    replayed: bool


def find_by_key(session: Session, key: str) -> Return | None:
    return session.scalars(select(Return).where(Return.idempotency_key == key)).one_or_none()


def _replay(session: Session, key: str, purchase_id: int) -> ReturnResult:
    ret = find_by_key(session, key)
    if ret.purchase_id != purchase_id:
        raise ReturnError(None, _l("This form was already used for another purchase. Start again."),
                          "idempotency_key_reused")
    change = session.scalars(select(TierChange).where(TierChange.return_id == ret.id)).first()
    return ReturnResult(ret, change, replayed=True)


def lock_purchase(session: Session, purchase_id: int) -> Purchase | None:
    return lock_row(session, Purchase, purchase_id)


def _restore(session: Session, member: Member, purchase: Purchase, points: int, *, at: datetime, store: Store,
             rules: Rules, refs: dict) -> None:
    """Give redeemed points back with the expiry of the lots they came from, never sooner than 30 days."""
    floor = ledger.lot_expiry(at, store.timezone, 30)
    uses = session.scalars(
        select(LotUse).join(LedgerEntry, LotUse.entry_id == LedgerEntry.id)
        .where(LedgerEntry.purchase_id == purchase.id, LedgerEntry.kind == LedgerKind.REDEEM.value)
        .order_by(LotUse.id)
    ).all()
    portions, left = [], points
    for use in uses:
        take = min(left, use.points - use.restored)
        if take:
            use.restored += take
            expires = use.lot.expires_at
            portions.append(ledger.Portion(take, None if expires is None else max(expires, floor)))
            left -= take
        if not left:
            break
    if left:  # redeemed before lots were kept: give it the standard expiry
        portions.append(ledger.Portion(left, ledger.lot_expiry(at, store.timezone, rules.expiry_days)))
    ledger.credit(session, member, LedgerKind.RESTORE, portions, "return_restore", at=at, store=store, **refs)


def record_return(
    session: Session, *, purchase_id: int, store: Store, staff: Staff | None, returned_gross_fen: int | None,
    idempotency_key: str, rules: Rules, now: datetime, api_token_id: int | None = None,
) -> ReturnResult:
    """Record one return, once per idempotency key, in the caller's transaction.

    Everything left on the purchase can be returned at once by passing `returned_gross_fen=None`.
    """
    found = session.get(Purchase, purchase_id)
    if found is None:
        raise ReturnError(None, _l("No such purchase."), "purchase_not_found")
    member = ledger.lock_member(session, found.member_id)  # member first, then purchase: the checkout's order
    purchase = lock_purchase(session, purchase_id)
    if find_by_key(session, idempotency_key):
        return _replay(session, idempotency_key, purchase_id)
    if returned_gross_fen is None:
        returned_gross_fen = purchase.returnable_fen
    validate_amount(purchase, returned_gross_fen)
    ledger.expire_due(session, member, now)

    figures = proportional(purchase, returned_gross_fen)
    short = shortfall(member.points_balance + figures.points_restored, figures.points_reversed,
                      figures.refund_fen, rules)
    ret = Return(
        idempotency_key=idempotency_key, purchase_id=purchase.id, member_id=member.id, store_id=store.id,
        staff_id=staff.id if staff else None, api_token_id=api_token_id, returned_gross_fen=returned_gross_fen,
        refund_fen=figures.refund_fen, points_restored=figures.points_restored,
        points_reversed=figures.points_reversed, shortfall_points=short.points,
        shortfall_deducted_fen=short.deducted_fen, cash_refund_fen=figures.refund_fen - short.deducted_fen,
        shortfall_policy=rules.shortfall_policy, created_at=now,
    )
    try:
        with session.begin_nested():
            session.add(ret)
            session.flush()
    except IntegrityError:
        return _replay(session, idempotency_key, purchase_id)

    purchase.returned_gross_fen += figures.returned_gross_fen
    purchase.refunded_fen += figures.refund_fen
    purchase.points_reversed += figures.points_reversed
    purchase.points_restored += figures.points_restored

    refs = dict(staff_id=staff.id if staff else None, purchase_id=purchase.id, return_id=ret.id)
    if figures.points_restored:
        _restore(session, member, purchase, figures.points_restored, at=now, store=store, rules=rules, refs=refs)
    to_reverse = figures.points_reversed - short.covered_points
    if to_reverse:
        ledger.debit(session, member, LedgerKind.REVERSE, to_reverse, "return_reverse", at=now, store=store,
                     allow_negative=True, **refs)

    session.flush()
    spend_after = tiers.qualifying_spend(session, member.id, now, rules.qualifying_days)
    in_window = purchase.created_at > now - timedelta(days=rules.qualifying_days)
    spend_before = spend_after + (figures.refund_fen if in_window else 0)
    change = tiers.downgrade_after_return(
        session, member, tiers.all_tiers(session), spend_before, spend_after,
        at=now, return_id=ret.id, staff_id=staff.id if staff else None,
    )
    return ReturnResult(ret, change, replayed=False)
