"""The append-only points ledger and the cached balance that always equals its sum."""
from __future__ import annotations

from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .models import LedgerEntry, LedgerKind, Member, Store


def lot_expiry(earned_at: datetime, store_timezone: str, expiry_days: int) -> datetime | None:
    """Points earned on day D (store time) can be used until the end of day D + expiry_days."""
    if not expiry_days:
        return None
    zone = ZoneInfo(store_timezone)
    local_day = earned_at.astimezone(zone).date() + timedelta(days=expiry_days + 1)
    return datetime.combine(local_day, time.min, tzinfo=zone).astimezone(earned_at.tzinfo)


def post_entry(
    session: Session,
    member: Member,
    kind: LedgerKind,
    points: int,
    reason: str,
    *,
    at: datetime,
    store: Store | None = None,
    staff_id: int | None = None,
    purchase_id: int | None = None,
    related_member_id: int | None = None,
    note: str | None = None,
    expires_at: datetime | None = None,
) -> LedgerEntry:
    """Append one entry and move the cached balance with it, in the caller's transaction.

    The caller holds the member's row lock (see lock_member), so reading the balance
    here and writing it back cannot race another till.
    """
    member.points_balance = member.points_balance + points
    entry = LedgerEntry(
        member_id=member.id,
        kind=kind.value,
        points=points,
        balance_after=member.points_balance,
        reason=reason,
        note=note,
        purchase_id=purchase_id,
        related_member_id=related_member_id,
        staff_id=staff_id,
        store_id=store.id if store else None,
        expires_at=expires_at,
        created_at=at,
    )
    session.add(entry)
    return entry


def lock_member(session: Session, member_id: int) -> Member | None:
    """Load a member for writing: FOR UPDATE on PostgreSQL; SQLite already holds the write lock."""
    return session.scalars(
        select(Member).where(Member.id == member_id).with_for_update().execution_options(populate_existing=True)
    ).one_or_none()


def ledger_sum(session: Session, member_id: int) -> int:
    return session.scalar(
        select(func.coalesce(func.sum(LedgerEntry.points), 0)).where(LedgerEntry.member_id == member_id)
    )
