"""The audit log: who did what, when, where, with the before and after."""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, or_, select, true
from sqlalchemy.orm import Session

from .models import AuditLog, Staff, Store


def record(
    session: Session, action: str, *, at: datetime, staff_id: int | None = None, store_id: int | None = None,
    target: str | None = None, before: dict | None = None, after: dict | None = None, ip: str | None = None,
) -> AuditLog:
    entry = AuditLog(
        action=action, staff_id=staff_id, store_id=store_id, target=target, ip=ip, created_at=at,
        before=json.dumps(before, ensure_ascii=False, default=str) if before is not None else None,
        after=json.dumps(after, ensure_ascii=False, default=str) if after is not None else None,
    )
    session.add(entry)
    return entry


# --- reading it back (the audit log viewer) -------------------------------------------------------------

def in_stores(store_ids: list[int] | None):
    """Entries of the stores: made at one of them, or by someone who works at one. None: every entry."""
    if store_ids is None:
        return true()
    return or_(AuditLog.store_id.in_(store_ids),
               AuditLog.staff_id.in_(select(Staff.id).where(Staff.store_id.in_(store_ids))))


@dataclass(frozen=True)
class Page:
    """A page of entries, newest first; whether older ones follow; who made them and where, by id."""

    entries: list[AuditLog]
    older: bool
    staff: dict[int, Staff]
    stores: dict[int, Store]


def search(
    session: Session, *, store_ids: list[int] | None, action: str | None = None, action_prefix: str | None = None,
    staff_id: int | None = None, target: str | None = None, since: datetime | None = None,
    until: datetime | None = None, before_id: int | None = None, limit: int = 50,
) -> Page:
    """A page of entries, newest first, and whether older ones follow.

    `action_prefix` ("complaint") matches every action of that group ("complaint.…"); `target` is found
    anywhere in the target, in any case; [since, until) bound the time; paging is by keyset: the entries
    older than the entry `before_id` (an unknown id starts from the newest)."""
    query = select(AuditLog).where(in_stores(store_ids))
    if action:
        query = query.where(AuditLog.action == action)
    if action_prefix:
        query = query.where(AuditLog.action.startswith(action_prefix + ".", autoescape=True))
    if staff_id is not None:
        query = query.where(AuditLog.staff_id == staff_id)
    if target:
        query = query.where(AuditLog.target.icontains(target, autoescape=True))
    if since is not None:
        query = query.where(AuditLog.created_at >= since)
    if until is not None:
        query = query.where(AuditLog.created_at < until)
    cursor = session.get(AuditLog, before_id) if before_id else None
    if cursor is not None:
        query = query.where(or_(AuditLog.created_at < cursor.created_at,
                                and_(AuditLog.created_at == cursor.created_at, AuditLog.id < cursor.id)))
    rows = list(session.scalars(query.order_by(AuditLog.created_at.desc(), AuditLog.id.desc()).limit(limit + 1)))
    entries = rows[:limit]
    staff = session.scalars(select(Staff).where(Staff.id.in_({e.staff_id for e in entries if e.staff_id})))
    stores = session.scalars(select(Store).where(Store.id.in_({e.store_id for e in entries if e.store_id})))
    return Page(entries=entries, older=len(rows) > limit, staff={person.id: person for person in staff},
                stores={store.id: store for store in stores})


def actions_present(session: Session, store_ids: list[int] | None) -> list[str]:
    """The actions the stores' entries hold, for a filter's choices."""
    return list(session.scalars(select(AuditLog.action).where(in_stores(store_ids)).distinct()
                                .order_by(AuditLog.action)))


def staff_present(session: Session, store_ids: list[int] | None) -> list[Staff]:
    """Who made the stores' entries, by name."""
    ids = select(AuditLog.staff_id).where(in_stores(store_ids), AuditLog.staff_id.is_not(None)).distinct()
    return list(session.scalars(select(Staff).where(Staff.id.in_(ids)).order_by(Staff.name, Staff.id)))
