"""Complaints: filing one (counter, phone, the member's portal, a cash register, a poor visit rating),
the states it moves through, its service-level clock, goodwill points, and the figures.

States: open -> acknowledged (the first response) -> resolved -> closed. A member may reopen a resolved
complaint within `complaint_reopen_days` of its resolution; it is then open again (its first response
stays on record) and its resolution clock restarts. Every step is a timeline event with who and when,
and goes to the audit log.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask_babel import lazy_gettext as _l
from sqlalchemy import case, exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from . import audit, ledger, messaging
from .checkout import CheckoutError
from .database import lock_row
from .models import (
    COMPLAINT_CATEGORIES,
    COMPLAINT_CHANNELS,
    COMPLAINT_SEVERITIES,
    Complaint,
    ComplaintEvent,
    LedgerEntry,
    LedgerKind,
    Member,
    MessageTemplate,
    Purchase,
    Staff,
    Store,
    VisitRating,
)
from .money import normalise_text
from .rules import Rules

ComplaintError = CheckoutError  # a field, a message shown beside it, and a code for the API
MAX_DESCRIPTION = 2000
MAX_REPLY = 2000
MAX_GOODWILL = 100_000
ACTIVE = ("open", "acknowledged")

CATEGORY_LABELS = {
    "product_quality": _l("Product quality"),
    "service_attitude": _l("Service attitude"),
    "price_billing": _l("Price or billing"),
    "returns_refunds": _l("Returns and refunds"),
    "store_environment": _l("Store environment"),
    "points_membership": _l("Points and membership"),
    "other": _l("Other"),
}
SEVERITY_LABELS = {"low": _l("Low"), "normal": _l("Normal"), "high": _l("High")}
STATUS_LABELS = {"open": _l("Open"), "acknowledged": _l("Acknowledged"), "resolved": _l("Resolved"),
                 "closed": _l("Closed")}


def clean_text(text: str | None) -> str:
    """Trimmed, control characters removed, line breaks kept."""
    return "\n".join(normalise_text(line) for line in (text or "").splitlines()).strip()


def _checked_text(text: str | None, field: str, limit: int, missing) -> str:
    value = clean_text(text)
    if not value:
        raise ComplaintError(field, missing, "missing_description" if field == "description" else "missing_field")
    if len(value) > limit:
        raise ComplaintError(field, _l("Use at most %(count)s characters.", count=limit),
                             "description_too_long" if field == "description" else "too_long")
    return value


def _event(session: Session, complaint: Complaint, kind: str, *, at: datetime, body: str | None = None,
           visible: bool = False, staff: Staff | None = None, member: Member | None = None,
           api_token_id: int | None = None, ip: str | None = None) -> ComplaintEvent:
    event = ComplaintEvent(complaint_id=complaint.id, kind=kind, body=body, visible_to_member=visible,
                           staff_id=staff.id if staff else None, member_id=member.id if member else None,
                           api_token_id=api_token_id, created_at=at)
    session.add(event)
    audit.record(session, f"complaint.{kind}", at=at, staff_id=staff.id if staff else None,
                 store_id=complaint.store_id, target=f"complaint:{complaint.id}", ip=ip,
                 after={"status": complaint.status, **({"member_id": member.id} if member else {}),
                        **({"text": body} if body and not visible else {})})
    return event


def file_complaint(
    session: Session, *, store: Store, category: str, severity: str, description: str, channel: str,
    member: Member | None = None, purchase: Purchase | None = None, staff: Staff | None = None,
    api_token_id: int | None = None, idempotency_key: str | None = None, now: datetime, ip: str | None = None,
) -> Complaint:
    """Open a complaint and put its first step on the timeline, in the caller's transaction.

    A form key seen before returns the complaint it filed (a double-click, a retry)."""
    if idempotency_key:
        earlier = session.scalars(select(Complaint).where(Complaint.idempotency_key == idempotency_key)).first()
        if earlier is not None:
            return earlier
    if category not in COMPLAINT_CATEGORIES:
        raise ComplaintError("category", _l("Choose a category."), "invalid_category")
    if severity not in COMPLAINT_SEVERITIES:
        raise ComplaintError("severity", _l("Choose a severity."), "invalid_severity")
    if channel not in COMPLAINT_CHANNELS:
        raise ValueError(f"unknown channel {channel!r}")
    text = _checked_text(description, "description", MAX_DESCRIPTION, _l("Describe what happened."))
    if purchase is not None and member is not None and purchase.member_id != member.id:
        raise ComplaintError("purchase_id", _l("This purchase belongs to another member."), "purchase_mismatch")
    if purchase is not None and member is None:
        member = purchase.member
    complaint = Complaint(
        member_id=member.id if member else None, store_id=store.id, purchase_id=purchase.id if purchase else None,
        category=category, severity=severity, description=text, status="open", channel=channel,
        staff_id=staff.id if staff else None, api_token_id=api_token_id, idempotency_key=idempotency_key,
        created_at=now,
    )
    try:
        with session.begin_nested():
            session.add(complaint)
            session.flush()
    except IntegrityError:  # the same form, sent twice at once: the other request filed it
        return session.scalars(select(Complaint).where(Complaint.idempotency_key == idempotency_key)).one()
    _event(session, complaint, "opened", at=now, body=text, visible=True, staff=staff,
           member=member if channel in ("member", "survey") else None, api_token_id=api_token_id, ip=ip)
    return complaint


def lock(session: Session, complaint_id: int) -> Complaint | None:
    """Load a complaint for changing it (see database.lock_row)."""
    return lock_row(session, Complaint, complaint_id)


def _refuse(complaint: Complaint, action: str):
    """Why `action` cannot be done in the complaint's present state."""
    if complaint.status == "closed":
        message = _l("This complaint is closed.")
    elif action in ("close", "rate", "reopen") and complaint.status in ACTIVE:
        message = _l("This complaint is not resolved yet.")
    elif complaint.status == "resolved":
        message = _l("This complaint is already resolved.")
    else:
        message = _l("This complaint is already acknowledged.")
    return ComplaintError(None, message, "illegal_transition")


def acknowledge(session: Session, complaint: Complaint, *, staff: Staff, now: datetime,
                ip: str | None = None) -> ComplaintEvent:
    """The first response: open -> acknowledged."""
    if complaint.status != "open":
        raise _refuse(complaint, "acknowledge")
    complaint.status = "acknowledged"
    complaint.first_response_at = complaint.first_response_at or now
    return _event(session, complaint, "acknowledged", at=now, visible=True, staff=staff, ip=ip)


INBOX_ONLY = messaging.Channels()


def reply(session: Session, complaint: Complaint, *, staff: Staff, body: str, to_member: bool,
          now: datetime, ip: str | None = None, channels: messaging.Channels = INBOX_ONLY) -> ComplaintEvent:
    """A reply the member reads, or an internal note. A reply to an open complaint is its first response.

    A reply also reaches the member as a message (template complaint_reply) on `channels`: their inbox, and
    e-mail or SMS where the caller has them configured."""
    text = _checked_text(body, "body", MAX_REPLY, _l("Write the reply."))
    if to_member:
        if complaint.status not in ACTIVE:
            raise _refuse(complaint, "reply")
        if complaint.member_id is None:
            raise ComplaintError("to_member", _l("This complaint has no member to reply to; add a note instead."),
                                 "no_member")
        if complaint.status == "open":
            complaint.status = "acknowledged"
            complaint.first_response_at = complaint.first_response_at or now
    event = _event(session, complaint, "reply" if to_member else "note", at=now, body=text, visible=to_member,
                   staff=staff, ip=ip)
    if to_member:
        _tell_member(session, complaint, event, text, now=now, channels=channels)
    return event


def _tell_member(session: Session, complaint: Complaint, event: ComplaintEvent, text: str, *, now: datetime,
                 channels: messaging.Channels) -> None:
    template = session.scalars(select(MessageTemplate).where(MessageTemplate.code == "complaint_reply")).first()
    member = session.get(Member, complaint.member_id)
    if template is None or member is None:
        return
    session.flush()  # the event's id names the message, so a retried request never sends it twice
    messaging.queue(session, member=member, template=template, purpose="complaint_reply", now=now,
                    channels=channels, extra={"reply": text}, dedupe_key=f"complaint-reply:{event.id}",
                    store=complaint.store)


def assign(session: Session, complaint: Complaint, *, staff: Staff, assignee: Staff, now: datetime,
           ip: str | None = None) -> ComplaintEvent:
    """Give the complaint to a member of staff of its store (or an admin)."""
    if complaint.status not in ACTIVE:
        raise _refuse(complaint, "assign")
    if not assignee.active or (assignee.role != "admin" and assignee.store_id != complaint.store_id):
        raise ComplaintError("assignee", _l("Choose someone who works at this store."), "invalid_assignee")
    complaint.assigned_to_id = assignee.id
    return _event(session, complaint, "assigned", at=now, body=assignee.name, staff=staff, ip=ip)


def resolve(session: Session, complaint: Complaint, *, staff: Staff, body: str | None, now: datetime,
            ip: str | None = None) -> ComplaintEvent:
    """open/acknowledged -> resolved, with what was done (shown to the member)."""
    if complaint.status not in ACTIVE:
        raise _refuse(complaint, "resolve")
    text = clean_text(body)
    if len(text) > MAX_REPLY:
        raise ComplaintError("body", _l("Use at most %(count)s characters.", count=MAX_REPLY), "too_long")
    complaint.status = "resolved"
    complaint.first_response_at = complaint.first_response_at or now
    complaint.resolved_at = now
    return _event(session, complaint, "resolved", at=now, body=text or None, visible=True, staff=staff, ip=ip)


def close(session: Session, complaint: Complaint, *, staff: Staff, now: datetime,
          ip: str | None = None) -> ComplaintEvent:
    """resolved -> closed."""
    if complaint.status != "resolved":
        raise _refuse(complaint, "close")
    complaint.status = "closed"
    complaint.closed_at = now
    return _event(session, complaint, "closed", at=now, visible=True, staff=staff, ip=ip)


def can_reopen(complaint: Complaint, rules: Rules, now: datetime) -> bool:
    return (complaint.status == "resolved" and complaint.resolved_at is not None
            and now <= complaint.resolved_at + timedelta(days=rules.complaint_reopen_days))


def reopen(session: Session, complaint: Complaint, *, member: Member, body: str | None, rules: Rules,
           now: datetime, ip: str | None = None) -> ComplaintEvent:
    """The member is not satisfied: resolved -> open again, within the reopening window."""
    if complaint.member_id != member.id:
        raise ComplaintError(None, _l("No such complaint."), "not_found")
    if complaint.status != "resolved":
        raise _refuse(complaint, "reopen")
    if not can_reopen(complaint, rules, now):
        raise ComplaintError(None, _l("This complaint can no longer be reopened: more than %(days)s days have "
                                      "passed since it was resolved.", days=rules.complaint_reopen_days),
                             "reopen_window_passed")
    text = clean_text(body)
    if len(text) > MAX_REPLY:
        raise ComplaintError("body", _l("Use at most %(count)s characters.", count=MAX_REPLY), "too_long")
    complaint.status = "open"
    complaint.reopened_at = now
    complaint.resolved_at = None
    complaint.rating = None
    return _event(session, complaint, "reopened", at=now, body=text or None, visible=True, member=member, ip=ip)


def rate(session: Session, complaint: Complaint, *, member: Member, rating: int, now: datetime,
         ip: str | None = None) -> ComplaintEvent:
    """The member rates the resolution 1-5, once."""
    if complaint.member_id != member.id:
        raise ComplaintError(None, _l("No such complaint."), "not_found")
    if complaint.status not in ("resolved", "closed"):
        raise _refuse(complaint, "rate")
    if complaint.rating is not None:
        raise ComplaintError("rating", _l("You have already rated this."), "already_rated")
    if not isinstance(rating, int) or not 1 <= rating <= 5:
        raise ComplaintError("rating", _l("Choose from 1 to 5."), "invalid_rating")
    complaint.rating = rating
    return _event(session, complaint, "rated", at=now, body=str(rating), visible=True, member=member, ip=ip)


def grant_goodwill(session: Session, complaint: Complaint, *, staff: Staff, points: int, store: Store,
                   rules: Rules, idempotency_key: str, now: datetime, ip: str | None = None) -> LedgerEntry:
    """Goodwill points, posted as a `bonus` entry linked to the complaint. Once per form key."""
    if not staff.has_role("manager"):
        raise ComplaintError(None, _l("Only managers can grant goodwill points."), "forbidden")
    existing = session.scalars(select(LedgerEntry).where(LedgerEntry.idempotency_key == idempotency_key)).first()
    if existing is not None:
        if existing.complaint_id != complaint.id:
            raise ComplaintError(None, _l("This form was already used. Reload the page."), "idempotency_key_reused")
        return existing
    if complaint.member_id is None:
        raise ComplaintError("points", _l("This complaint has no member to give points to."), "no_member")
    if not 0 < points <= MAX_GOODWILL:
        raise ComplaintError("points", _l("Give from 1 to %(limit)s points.", limit=f"{MAX_GOODWILL:,}"),
                             "invalid_points")
    member = ledger.lock_member(session, complaint.member_id)
    if member is None or member.deleted_at is not None:
        raise ComplaintError("points", _l("This member's account is closed."), "no_member")
    if staff.phone and staff.phone == member.phone:
        raise ComplaintError("points", _l("You cannot credit points to an account with your own phone number."),
                             "own_account")
    expires = ledger.lot_expiry(now, store.timezone, rules.expiry_days)
    try:
        with session.begin_nested():
            entry = ledger.credit(session, member, LedgerKind.BONUS, [ledger.Portion(points, expires)], "goodwill",
                                  at=now, store=store, staff_id=staff.id, complaint_id=complaint.id,
                                  idempotency_key=idempotency_key)
    except IntegrityError:  # the same form, sent twice at once
        return session.scalars(select(LedgerEntry).where(LedgerEntry.idempotency_key == idempotency_key)).one()
    _event(session, complaint, "goodwill", at=now, body=str(points), visible=True, staff=staff, ip=ip)
    return entry


# --- service levels -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Clock:
    response_due: datetime
    resolution_due: datetime
    response_overdue: bool
    resolution_overdue: bool

    @property
    def overdue(self) -> bool:
        return self.response_overdue or self.resolution_overdue


def clock(complaint: Complaint, rules: Rules, now: datetime) -> Clock:
    """When the first response and the resolution are due, and whether either is late now.

    A response made (or a resolution reached) late stays late on record, but only an active complaint
    is overdue in the queue."""
    response_due = complaint.created_at + timedelta(hours=rules.complaint_response_hours)
    resolution_due = (complaint.reopened_at or complaint.created_at) + timedelta(hours=rules.complaint_resolution_hours)
    active = complaint.status in ACTIVE
    return Clock(
        response_due=response_due, resolution_due=resolution_due,
        response_overdue=active and complaint.first_response_at is None and now > response_due,
        resolution_overdue=active and now > resolution_due,
    )


def overdue_condition(rules: Rules, now: datetime):
    """The same test as clock(...).overdue, as SQL, for counting and filtering the queue."""
    response_late = (Complaint.first_response_at.is_(None)
                     & (Complaint.created_at < now - timedelta(hours=rules.complaint_response_hours)))
    resolution_start = func.coalesce(Complaint.reopened_at, Complaint.created_at)
    resolution_late = resolution_start < now - timedelta(hours=rules.complaint_resolution_hours)
    return Complaint.status.in_(ACTIVE) & (response_late | resolution_late)


def queue(session: Session, *, rules: Rules, now: datetime, store_ids: list[int] | None, status: str | None = None,
          category: str | None = None, severity: str | None = None, overdue_only: bool = False,
          limit: int = 200) -> list[Complaint]:
    """The complaints a manager works on, most urgent first: overdue, then high severity, then oldest."""
    query = select(Complaint)
    if store_ids is not None:
        query = query.where(Complaint.store_id.in_(store_ids))
    if status == "active":
        query = query.where(Complaint.status.in_(ACTIVE))
    elif status:
        query = query.where(Complaint.status == status)
    if category:
        query = query.where(Complaint.category == category)
    if severity:
        query = query.where(Complaint.severity == severity)
    late = overdue_condition(rules, now)
    if overdue_only:
        query = query.where(late)
    severity_rank = {"high": 0, "normal": 1, "low": 2}
    query = query.order_by(case((late, 0), else_=1), case(severity_rank, value=Complaint.severity),
                           Complaint.created_at, Complaint.id)
    # the queue shows each complaint's member, store and assignee: load them in three queries, not per row
    query = query.options(selectinload(Complaint.member), selectinload(Complaint.store),
                          selectinload(Complaint.assigned_to))
    return list(session.scalars(query.limit(limit)))


# --- visit ratings --------------------------------------------------------------------------------------

def rate_visit(session: Session, *, member: Member, purchase: Purchase, rating: int, comment: str | None,
               now: datetime) -> VisitRating:
    """A member's one-tap rating of a visit, once per purchase; a 1 or 2 opens a follow-up complaint."""
    if purchase.member_id != member.id:
        raise ComplaintError(None, _l("No such purchase."), "not_found")
    if not isinstance(rating, int) or not 1 <= rating <= 5:
        raise ComplaintError("rating", _l("Choose from 1 to 5."), "invalid_rating")
    text = clean_text(comment) or None
    if text and len(text) > MAX_REPLY:
        raise ComplaintError("comment", _l("Use at most %(count)s characters.", count=MAX_REPLY), "too_long")
    if session.scalars(select(VisitRating).where(VisitRating.purchase_id == purchase.id)).first():
        raise ComplaintError("rating", _l("You have already rated this visit."), "already_rated")
    visit = VisitRating(purchase_id=purchase.id, member_id=member.id, store_id=purchase.store_id, rating=rating,
                        comment=text, created_at=now)
    try:
        with session.begin_nested():
            session.add(visit)
            session.flush()
    except IntegrityError:  # rated twice at once
        raise ComplaintError("rating", _l("You have already rated this visit."), "already_rated") from None
    if rating <= 2:
        follow_up = file_complaint(
            session, store=purchase.store, category="other", severity="normal", channel="survey",
            description=text or str(_l("Rated the visit %(rating)s out of 5.", rating=rating)),
            member=member, purchase=purchase, now=now,
        )
        visit.complaint_id = follow_up.id
    return visit


def unrated_visit(session: Session, member: Member, now: datetime, days: int = 14) -> Purchase | None:
    """The member's latest purchase of the last `days` with no rating and no complaint yet, to offer the
    one-tap rating (a visit already complained about is being looked into; asking again would double it)."""
    return session.scalars(
        select(Purchase)
        .outerjoin(VisitRating, VisitRating.purchase_id == Purchase.id)
        .where(Purchase.member_id == member.id, Purchase.created_at > now - timedelta(days=days),
               VisitRating.id.is_(None), ~exists().where(Complaint.purchase_id == Purchase.id))
        .order_by(Purchase.id.desc()).limit(1)
    ).first()


# --- figures --------------------------------------------------------------------------------------------

def percentile(values: list[float], share: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least `share` of the values at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


@dataclass(frozen=True)
class Times:
    count: int
    median_hours: float | None
    p90_hours: float | None


def _times(durations: list[float]) -> Times:
    return Times(len(durations), statistics.median(durations) if durations else None,
                 percentile(durations, 0.9))


@dataclass(frozen=True)
class GroupFigures:
    key: str  # a category code or a store name
    complaints: int
    response: Times
    resolution: Times
    rating_average: float | None
    ratings: int


@dataclass(frozen=True)
class Figures:
    open_count: int
    overdue_count: int
    complaints: int
    response: Times
    resolution: Times
    rating_average: float | None
    ratings: int
    visit_average: float | None
    visit_satisfied_share: float | None  # share of visit ratings that are 4 or 5
    visit_ratings: int
    by_category: list[GroupFigures]
    by_store: list[GroupFigures]
    visits_by_store: list[tuple[str, int, float | None, float | None]]  # store, ratings, average, share 4-5


def _hours(start: datetime, end: datetime | None) -> float | None:
    return None if end is None else (end - start).total_seconds() / 3600


def _group(key: str, rows: list[Complaint]) -> GroupFigures:
    ratings = [c.rating for c in rows if c.rating is not None]
    return GroupFigures(
        key=key, complaints=len(rows),
        response=_times([h for c in rows if (h := _hours(c.created_at, c.first_response_at)) is not None]),
        resolution=_times([h for c in rows if (h := _hours(c.created_at, c.resolved_at)) is not None]),
        rating_average=statistics.fmean(ratings) if ratings else None, ratings=len(ratings),
    )


def figures(session: Session, *, rules: Rules, now: datetime, since: datetime, until: datetime,
            store_ids: list[int] | None) -> Figures:
    """The complaint and satisfaction figures for complaints and visits in [since, until).

    Response and resolution times run from when the complaint was made to its first response and to its
    (latest) resolution, in hours; open and overdue counts are as of now, whatever the period."""
    def scoped(query, column):
        return query.where(column.in_(store_ids)) if store_ids is not None else query

    active = scoped(select(func.count()).select_from(Complaint).where(Complaint.status.in_(ACTIVE)),
                    Complaint.store_id)
    open_count = session.scalar(active)
    overdue_count = session.scalar(active.where(overdue_condition(rules, now)))
    rows = list(session.scalars(scoped(
        select(Complaint).where(Complaint.created_at >= since, Complaint.created_at < until), Complaint.store_id)))
    overall = _group("", rows)
    by_category = [_group(code, [c for c in rows if c.category == code])
                   for code in COMPLAINT_CATEGORIES if any(c.category == code for c in rows)]
    stores = {c.store_id: c.store.name for c in rows}
    by_store = [_group(name, [c for c in rows if c.store_id == store_id])
                for store_id, name in sorted(stores.items(), key=lambda item: item[1])]
    visits = list(session.scalars(scoped(
        select(VisitRating).where(VisitRating.created_at >= since, VisitRating.created_at < until),
        VisitRating.store_id)))
    visit_stores: dict[int, list[int]] = {}
    for visit in visits:
        visit_stores.setdefault(visit.store_id, []).append(visit.rating)
    names = dict(session.execute(select(Store.id, Store.name).where(Store.id.in_(visit_stores))).all())

    def visit_figures(values: list[int]) -> tuple[float | None, float | None]:
        if not values:
            return None, None
        return statistics.fmean(values), sum(1 for v in values if v >= 4) / len(values)

    average, share = visit_figures([v.rating for v in visits])
    return Figures(
        open_count=open_count, overdue_count=overdue_count, complaints=len(rows), response=overall.response,
        resolution=overall.resolution, rating_average=overall.rating_average, ratings=overall.ratings,
        visit_average=average, visit_satisfied_share=share, visit_ratings=len(visits),
        by_category=by_category, by_store=by_store,
        visits_by_store=[(names[store_id], len(values), *visit_figures(values))
                         for store_id, values in sorted(visit_stores.items(), key=lambda item: names[item[0]])],
    )
