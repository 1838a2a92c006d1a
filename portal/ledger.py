"""The append-only points ledger, its lots, and the cached balance that always equals its sum.

Every credit (earn, bonus, restore, a positive adjustment) first pays off a negative balance,
and what is left becomes a lot with an expiry. Every debit (redeem, reverse, expire, a
negative adjustment) takes points from the lots that expire first, and records which lots
it used, so a later return can give redeemed points back with the expiry they came with.
Invariant: a member's remaining lot points equal max(balance, 0).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .database import lock_row
from .models import LedgerEntry, LedgerKind, LotUse, Member, PointLot, Store


class InsufficientPoints(ValueError):
    """A debit larger than what the member's lots hold, where a negative balance is not allowed."""


def lot_expiry(earned_at: datetime, store_timezone: str, expiry_days: int) -> datetime | None:
    """Points earned on day D (store time) can be used until the end of day D + expiry_days."""
    if not expiry_days:
        return None
    zone = ZoneInfo(store_timezone)
    local_day = earned_at.astimezone(zone).date() + timedelta(days=expiry_days + 1)
    return datetime.combine(local_day, time.min, tzinfo=zone).astimezone(earned_at.tzinfo)


def lock_member(session: Session, member_id: int) -> Member | None:
    """Load a member for writing (see database.lock_row)."""
    return lock_row(session, Member, member_id)


def ledger_sum(session: Session, member_id: int) -> int:
    return int(session.scalar(
        select(func.coalesce(func.sum(LedgerEntry.points), 0)).where(LedgerEntry.member_id == member_id)
    ))


def _append(session: Session, member: Member, kind: LedgerKind, points: int, reason: str, *, at: datetime,
            store: Store | None, refs: dict) -> LedgerEntry:
    """Insert one entry and move the cached balance with it, in the caller's transaction.

    The caller holds the member's row lock (lock_member), so reading the balance here and
    writing it back cannot race another till.
    """
    member.points_balance = member.points_balance + points
    entry = LedgerEntry(
        member_id=member.id, kind=kind.value, points=points, balance_after=member.points_balance,
        reason=reason, store_id=store.id if store else None, created_at=at, **refs,
    )
    session.add(entry)
    session.flush()
    return entry


@dataclass(frozen=True)
class Portion:
    """Part of a credit that expires at one moment (None: never)."""

    points: int
    expires_at: datetime | None


def credit(session: Session, member: Member, kind: LedgerKind, portions: list[Portion], reason: str, *,
           at: datetime, store: Store | None = None, **refs) -> LedgerEntry:
    """Add points: one ledger entry; lots for what is left after paying off a negative balance."""
    total = sum(portion.points for portion in portions)
    if total <= 0:
        raise ValueError("a credit adds points")
    debt = max(0, -member.points_balance)
    expiries = [portion.expires_at for portion in portions if portion.points]
    refs.setdefault("expires_at", max(expiries, key=_expiry_order) if expiries else None)
    entry = _append(session, member, kind, total, reason, at=at, store=store, refs=refs)
    for portion in sorted(portions, key=lambda p: _expiry_order(p.expires_at)):
        paid_off = min(debt, portion.points)
        debt -= paid_off
        if portion.points - paid_off:
            session.add(PointLot(
                member_id=member.id, entry_id=entry.id, points=portion.points - paid_off,
                remaining=portion.points - paid_off, expires_at=portion.expires_at, created_at=at,
            ))
    return entry


def _expiry_order(expires_at: datetime | None):
    """Sort key: sooner expiries first, never-expiring last."""
    return (expires_at is None, expires_at.timestamp() if expires_at else 0)


def open_lots(session: Session, member_id: int) -> list[PointLot]:
    """The member's lots with points left, the soonest to expire first."""
    return list(session.scalars(
        select(PointLot)
        .where(PointLot.member_id == member_id, PointLot.remaining > 0)
        .order_by(PointLot.expires_at.is_(None), PointLot.expires_at, PointLot.id)
    ))


def debit(session: Session, member: Member, kind: LedgerKind, points: int, reason: str, *, at: datetime,
          store: Store | None = None, allow_negative: bool = False, lots: list[PointLot] | None = None,
          **refs) -> LedgerEntry:
    """Take points from the lots that expire first; past what the lots hold the balance goes negative,
    only where allow_negative says so (a return's reversal), else InsufficientPoints."""
    if points <= 0:
        raise ValueError("a debit takes points")
    need = points
    uses = []
    for lot in lots if lots is not None else open_lots(session, member.id):
        take = min(need, lot.remaining)
        if take:
            lot.remaining -= take
            uses.append((lot, take))
            need -= take
        if not need:
            break
    if need and not allow_negative:
        raise InsufficientPoints(points - need)
    entry = _append(session, member, kind, -points, reason, at=at, store=store, refs=refs)
    for lot, take in uses:
        session.add(LotUse(entry_id=entry.id, lot_id=lot.id, points=take, restored=0))
    return entry


def available(session: Session, member: Member, now: datetime) -> int:
    """Points the member can spend now: the balance, less lots already past their expiry."""
    return outlook(session, member, now, days=0).available


@dataclass(frozen=True)
class Outlook:
    available: int  # the balance, less lots already past their expiry
    expiring_lots: list[tuple[datetime, int]]  # (expiry, points) of what expires within the days, soonest first

    @property
    def expiring(self) -> int:
        return sum(points for _when, points in self.expiring_lots)


def outlook(session: Session, member: Member, now: datetime, days: int) -> Outlook:
    """The points the member can spend now, and what will expire within the next `days` unless spent, in one
    query."""
    rows = session.execute(
        select(PointLot.expires_at, func.sum(PointLot.remaining))
        .where(PointLot.member_id == member.id, PointLot.remaining > 0,
               PointLot.expires_at <= now + timedelta(days=days))
        .group_by(PointLot.expires_at).order_by(PointLot.expires_at)
    ).all()
    expired = sum(int(points) for when, points in rows if when <= now)
    return Outlook(member.points_balance - expired, [(when, int(points)) for when, points in rows if when > now])


def expire_due(session: Session, member: Member, now: datetime) -> list[LedgerEntry]:
    """Post an `expire` entry for what is left of each lot whose expiry has passed. Idempotent."""
    due = session.scalars(
        select(PointLot)
        .where(PointLot.member_id == member.id, PointLot.remaining > 0, PointLot.expires_at <= now)
        .order_by(PointLot.expires_at, PointLot.id)
    ).all()
    return [
        debit(session, member, LedgerKind.EXPIRE, lot.remaining, "expiry", at=now, lots=[lot])
        for lot in due
    ]


def members_with_expired_lots(session: Session, now: datetime, limit: int) -> list[int]:
    return list(session.scalars(
        select(PointLot.member_id)
        .where(PointLot.remaining > 0, PointLot.expires_at <= now)
        .group_by(PointLot.member_id)
        .order_by(PointLot.member_id)
        .limit(limit)
    ))
