"""Points given or taken outside a purchase: manual adjustments and the yearly birthday bonus."""
from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from flask_babel import lazy_gettext as _l
from sqlalchemy import extract, or_, select
from sqlalchemy.orm import Session

from . import audit, ledger
from .checkout import CheckoutError
from .models import LedgerEntry, LedgerKind, Member, Staff, Store
from .rules import Rules

AdjustmentError = CheckoutError  # a field and a message shown beside it
MAX_ADJUSTMENT = 1_000_000
BIRTHDAY_CHANGE_GRACE = timedelta(days=30)


def adjust(
    session: Session, *, member_id: int, staff: Staff, store: Store, points: int, reason: str, rules: Rules,
    now: datetime, idempotency_key: str | None = None, ip: str | None = None,
) -> LedgerEntry:
    """A manager's manual adjustment, with its reason, in the ledger and in the audit log.

    No one may credit an account that carries their own phone number, and a debit may not take
    more than the member has. A key seen before returns the entry it made (a double-click, a retry).
    """
    if not staff.has_role("manager"):
        raise AdjustmentError(None, _l("Only managers can adjust points."))
    reason = (reason or "").strip()
    if not reason:
        raise AdjustmentError("reason", _l("Say why the points are adjusted."))
    if points == 0:
        raise AdjustmentError("points", _l("Enter a number of points other than zero."))
    if abs(points) > MAX_ADJUSTMENT:
        raise AdjustmentError("points", _l("At most %(limit)s points at a time.", limit=f"{MAX_ADJUSTMENT:,}"))
    member = ledger.lock_member(session, member_id)
    if member is None or member.deleted_at is not None:
        raise AdjustmentError(None, _l("No such member."))
    if idempotency_key:
        done = session.scalars(select(LedgerEntry).where(LedgerEntry.idempotency_key == idempotency_key)).first()
        if done is not None:
            if done.member_id != member.id:
                raise AdjustmentError(None, _l("This form was already used for another member. Start again."))
            return done
    if points > 0 and staff.phone and staff.phone == member.phone:
        raise AdjustmentError("points", _l("You cannot credit points to an account with your own phone number."))
    ledger.expire_due(session, member, now)
    before = member.points_balance
    refs = dict(at=now, store=store, staff_id=staff.id, note=reason, idempotency_key=idempotency_key)
    if points > 0:
        expires = ledger.lot_expiry(now, store.timezone, rules.expiry_days)
        entry = ledger.credit(session, member, LedgerKind.ADJUST, [ledger.Portion(points, expires)],
                              "adjustment", **refs)
    else:
        try:
            entry = ledger.debit(session, member, LedgerKind.ADJUST, -points, "adjustment", **refs)
        except ledger.InsufficientPoints:
            raise AdjustmentError(
                "points", _l("The member has only %(balance)s points.", balance=f"{max(before, 0):,}")
            ) from None
    audit.record(
        session, "points.adjust", at=now, staff_id=staff.id, store_id=store.id, ip=ip,
        target=f"member:{member.card_number}",
        before={"balance": before}, after={"balance": member.points_balance, "points": points, "reason": reason},
    )
    return entry


def birthday_bonuses(session: Session, *, now: datetime, rules: Rules, batch: int = 500) -> tuple[int, int]:
    """Post the birthday bonus once a year, in the birthday month of the member's store time zone.

    A birthday changed in the last 30 days earns no bonus this year. Running twice posts nothing twice:
    each member's year is marked in the same transaction as the entry. Returns (posted, forfeited).
    """
    posted = forfeited = 0
    for store in session.scalars(select(Store).order_by(Store.id)).all():
        today = now.astimezone(ZoneInfo(store.timezone)).date()
        after_id = 0
        while True:
            ids = list(session.scalars(
                select(Member.id).where(
                    Member.store_id == store.id, Member.deleted_at.is_(None), Member.birthday.is_not(None),
                    extract("month", Member.birthday) == today.month,
                    or_(Member.last_birthday_bonus_year.is_(None), Member.last_birthday_bonus_year < today.year),
                    Member.id > after_id,
                ).order_by(Member.id).limit(batch)
            ))
            if not ids:
                break
            for member_id in ids:
                member = ledger.lock_member(session, member_id)
                if member.last_birthday_bonus_year != today.year:  # else another run got here first
                    member.last_birthday_bonus_year = today.year
                    changed = member.birthday_changed_at
                    if (changed and changed > now - BIRTHDAY_CHANGE_GRACE) or not member.tier.birthday_bonus:
                        forfeited += 1
                    else:
                        expires = ledger.lot_expiry(now, store.timezone, rules.expiry_days)
                        ledger.credit(session, member, LedgerKind.BONUS,
                                      [ledger.Portion(member.tier.birthday_bonus, expires)], "birthday",
                                      at=now, store=store)
                        posted += 1
                session.commit()  # one member at a time: a till waits for no more than that
            after_id = ids[-1]
    return posted, forfeited


def expire_all(session: Session, *, now: datetime, batch: int = 500) -> int:
    """The daily expiry: an `expire` entry for what is left of every lot past its expiry. Idempotent."""
    posted = 0
    while True:
        ids = ledger.members_with_expired_lots(session, now, batch)
        if not ids:
            return posted
        for member_id in ids:
            member = ledger.lock_member(session, member_id)
            posted += len(ledger.expire_due(session, member, now))
            session.commit()  # one member at a time: a till waits for no more than that
