"""The audit log: who did what, when, where, with the before and after."""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, or_, select, true
from sqlalchemy.orm import Session

from . import new_rows
from .models import AuditLog, LedgerEntry, Staff, Store


@dataclass(frozen=True)
class Actor:
    """Who is acting, for entries that do not say: the web layer tells (see use_actor_source); the CLI's jobs
    have no actor, so they are the system."""

    staff_id: int | None = None
    member_id: int | None = None
    role: str = "system"
    store_id: int | None = None
    ip: str | None = None


SYSTEM = Actor()
_actor_source: Callable[[], Actor] = lambda: SYSTEM


def use_actor_source(source: Callable[[], Actor]) -> None:
    """Set the function that says who is acting now (the app sets one that reads the request)."""
    global _actor_source
    _actor_source = source


def record(
    session: Session, action: str, *, at: datetime, staff_id: int | None = None, store_id: int | None = None,
    target: str | None = None, before: dict | None = None, after: dict | None = None, ip: str | None = None,
    member_id: int | None = None, role: str | None = None,
) -> AuditLog:
    """One entry: what, when, on what, before and after, and who did it from where.

    What the caller leaves out about the actor comes from the current actor (the signed-in person, the register
    or the system), so every entry says who, in which role, at which store and from which address."""
    actor = _actor_source()
    if staff_id is None and member_id is None:
        staff_id, member_id = actor.staff_id, actor.member_id
        role = role or actor.role
    elif role is None:
        if staff_id is not None:
            staff = session.get(Staff, staff_id)
            role = staff.role if staff is not None else None
        else:
            role = "member"
    store_id = store_id if store_id is not None else actor.store_id
    ip = ip or actor.ip
    entry = AuditLog(
        action=action, staff_id=staff_id, member_id=member_id, role=role, store_id=store_id, target=target,
        ip=(ip or "")[:64] or None, created_at=at,
        before=json.dumps(before, ensure_ascii=False, default=str) if before is not None else None,
        after=json.dumps(after, ensure_ascii=False, default=str) if after is not None else None,
    )
    session.add(entry)
    return entry


# --- every ledger operation ---------------------------------------------------------------------------

def _audit_ledger_entries(session: Session, collected: list) -> None:
    """Before a commit: one entry per member whose points this transaction moved, naming each ledger row."""
    by_member: dict[int, list[LedgerEntry]] = {}
    for entry in collected:
        by_member.setdefault(entry.member_id, []).append(entry)
    for member_id, entries in by_member.items():
        first = entries[0]
        record(session, "ledger.post", at=first.created_at, target=f"member:{member_id}",
               store_id=first.store_id,
               after={"entries": [{"id": e.id, "kind": e.kind, "points": e.points, "reason": e.reason,
                                   **({"purchase_id": e.purchase_id} if e.purchase_id else {}),
                                   **({"return_id": e.return_id} if e.return_id else {})} for e in entries],
                      "balance": entries[-1].balance_after})


def watch_ledger() -> None:
    """Have every session write a "ledger.post" entry for the ledger rows each transaction adds, whichever code
    path posted them (till, API, jobs, imports): the audit log misses no ledger operation."""
    new_rows.watch("audit_ledger", (LedgerEntry,), _audit_ledger_entries)


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
