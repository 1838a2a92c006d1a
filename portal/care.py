"""Automatic care: the daily job that queues birthday greetings, expiring-points reminders and tier-change notes.

`send_care` is what `flask --app app send-care` runs once a day on any one app server (the CLI holds the job
lock "send-care" around it). It only queues messages (portal/messaging.py `queue`); the outbox
(`flask send-messages`) sends them, and applies the quiet hours and the monthly cap at send time.

Every message carries a dedupe key, unique in the database, so running the job twice, or on two servers at
once, queues nothing twice:
- birthday greetings (marketing: only members with consent) in the birthday month of the member's registration
  store's time zone, once a year: "birthday:<year>:<member id>";
- reminders 30 and 7 days before points expire, one per expiry date and threshold:
  "expiry:<30|7>:<last local day the points can be used>:<member id>". A date within 7 days gets the 7-day
  reminder only (never both on the same day); a date between 7 and 30 days away gets the 30-day one. The body
  names the points expiring on that date and the date itself;
- a note on a tier change: "tier:<tier change id>", for the member's latest change since the previous run (an
  earlier change in the same window is superseded: the note says the tier they hold now, not one they held for
  a moment). The window reaches back to a day before the previous run finished, and at least 8 days, so a day
  the job was skipped is not missed.

Work goes in batches of members with a commit per batch, so a large member base neither holds a long
transaction nor loses the work done when it stops. No Flask in here.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from flask_babel import format_date, force_locale
from sqlalchemy import String, cast, exists, extract, func, literal, select
from sqlalchemy.orm import Session, selectinload

from . import messaging
from .models import JobLock, Member, Message, MessageTemplate, PointLot, Store, TierChange

LOCK_NAME = "send-care"
THRESHOLDS = (30, 7)  # days before points expire that a reminder goes out
TIER_WINDOW = timedelta(days=8)  # tier changes looked at, at least
TIER_OVERLAP = timedelta(days=1)  # reach this far before the previous run finished
BATCH = 200


@dataclass
class CareRun:
    birthday: int = 0
    expiry: dict[int, int] = field(default_factory=lambda: {days: 0 for days in THRESHOLDS})
    tier_change: int = 0
    missing_templates: list[str] = field(default_factory=list)
    heartbeat: Callable[[], None] | None = None  # called after each batch (the CLI renews its lock's lease)

    def batch_done(self, session: Session) -> None:
        session.commit()
        if self.heartbeat:
            self.heartbeat()

    @property
    def total(self) -> int:
        return self.birthday + sum(self.expiry.values()) + self.tier_change


def _template(session: Session, code: str, run: CareRun) -> MessageTemplate | None:
    template = session.scalars(select(MessageTemplate).where(MessageTemplate.code == code,
                                                             MessageTemplate.archived_at.is_(None))).one_or_none()
    if template is None:
        run.missing_templates.append(code)
    return template


def _existing_keys(session: Session, keys: list[str]) -> set[str]:
    if not keys:
        return set()
    return set(session.scalars(select(Message.dedupe_key).where(Message.dedupe_key.in_(keys))))


def _last_day(expires_at: datetime, zone: str) -> date:
    """The last day points can be used: a lot expires at the end of that day, store time."""
    return (expires_at - timedelta(seconds=1)).astimezone(ZoneInfo(zone)).date()


# --- birthday greetings ---------------------------------------------------------------------------------

def birthday_greetings(session: Session, *, now: datetime, channels: messaging.Channels, run: CareRun,
                       batch: int = BATCH) -> int:
    """Queue a birthday greeting, once a year, to members with marketing consent in their birthday month."""
    template = _template(session, "birthday", run)
    if template is None:
        return 0
    queued = 0
    for store in session.scalars(select(Store).order_by(Store.id)).all():
        today = now.astimezone(ZoneInfo(store.timezone)).date()
        prefix = f"birthday:{today.year}:"
        greeted = exists().where(Message.dedupe_key == literal(prefix) + cast(Member.id, String))
        after_id = 0
        while True:
            members = list(session.scalars(
                select(Member).where(
                    Member.store_id == store.id, Member.deleted_at.is_(None), Member.marketing_consent.is_(True),
                    Member.birthday.is_not(None), extract("month", Member.birthday) == today.month,
                    Member.id > after_id, ~greeted,
                ).order_by(Member.id).limit(batch).options(selectinload(Member.tier))
            ))
            if not members:
                break
            for member in members:
                if messaging.queue(session, member=member, template=template, purpose="birthday", now=now,
                                   channels=channels, dedupe_key=f"{prefix}{member.id}", store=store):
                    queued += 1
            run.batch_done(session)
            after_id = members[-1].id
    run.birthday += queued
    return queued


# --- expiring points ------------------------------------------------------------------------------------

def _expiring_window(now: datetime, days: int):
    return (PointLot.remaining > 0, PointLot.expires_at > now, PointLot.expires_at <= now + timedelta(days=days))


def expiry_reminders(session: Session, *, now: datetime, channels: messaging.Channels, run: CareRun,
                     batch: int = BATCH) -> dict[int, int]:
    """Queue a reminder 30 days and again 7 days before points expire: one per member, expiry date and
    threshold, naming the points that expire that day and the day itself."""
    template = _template(session, "expiry_reminder", run)
    if template is None:
        return run.expiry
    longest, shortest = max(THRESHOLDS), min(THRESHOLDS)
    window = _expiring_window(now, longest)
    after_id = 0
    while True:
        member_ids = list(session.scalars(
            select(PointLot.member_id).join(Member, Member.id == PointLot.member_id)
            .where(*window, Member.deleted_at.is_(None), PointLot.member_id > after_id)
            .group_by(PointLot.member_id).order_by(PointLot.member_id).limit(batch)
        ))
        if not member_ids:
            break
        rows = session.execute(
            select(PointLot.member_id, PointLot.expires_at, func.sum(PointLot.remaining))
            .where(*window, PointLot.member_id.in_(member_ids))
            .group_by(PointLot.member_id, PointLot.expires_at)
        ).all()
        members = {member.id: member for member in session.scalars(
            select(Member).where(Member.id.in_(member_ids)).options(selectinload(Member.tier),
                                                                     selectinload(Member.store)))}
        # member -> last day -> [points, soonest expiry instant]
        due: dict[int, dict[date, list]] = defaultdict(dict)
        for member_id, expires_at, points in rows:
            day = _last_day(expires_at, members[member_id].store.timezone)
            entry = due[member_id].setdefault(day, [0, expires_at])
            entry[0] += int(points)
            entry[1] = min(entry[1], expires_at)
        wanted = []
        for member_id, days in due.items():
            for day, (points, expires_at) in days.items():
                threshold = shortest if expires_at <= now + timedelta(days=shortest) else longest
                wanted.append((f"expiry:{threshold}:{day.isoformat()}:{member_id}", member_id, threshold, day,
                               points))
        sent_before = _existing_keys(session, [key for key, *_rest in wanted])
        for key, member_id, threshold, day, points in sorted(wanted, key=lambda item: (item[1], item[3])):
            if key in sent_before:
                continue
            member = members[member_id]
            with force_locale(messaging.member_locale(member)):
                when = format_date(day, "long")
            if messaging.queue(session, member=member, template=template, purpose="expiry_reminder", now=now,
                               channels=channels, dedupe_key=key,
                               extra={"expiring_points": f"{points:,}", "expiry_date": when}):
                run.expiry[threshold] += 1
        run.batch_done(session)
        after_id = member_ids[-1]
    return run.expiry


# --- tier changes ---------------------------------------------------------------------------------------

def tier_window_start(session: Session, now: datetime) -> datetime:
    """How far back tier changes are looked at: 8 days, or to a day before the previous run finished if that
    was longer ago (a skipped day is not missed; dedupe keys keep what was sent from going twice)."""
    since = now - TIER_WINDOW
    lock = session.get(JobLock, LOCK_NAME)
    if lock is not None and lock.finished_at is not None:
        since = min(since, lock.finished_at - TIER_OVERLAP)
    return since


def tier_change_notes(session: Session, *, now: datetime, channels: messaging.Channels, run: CareRun,
                      since: datetime | None = None, batch: int = BATCH) -> int:
    """Queue a note on each member's latest tier change since the previous run."""
    template = _template(session, "tier_change", run)
    if template is None:
        return 0
    since = since if since is not None else tier_window_start(session, now)
    in_window = (TierChange.created_at > since, TierChange.created_at <= now)
    latest = (select(func.max(TierChange.id).label("id")).where(*in_window)
              .group_by(TierChange.member_id).subquery())
    queued = 0
    after_id = 0
    while True:
        changes = list(session.scalars(
            select(TierChange).join(latest, latest.c.id == TierChange.id)
            .join(Member, Member.id == TierChange.member_id)
            .where(Member.deleted_at.is_(None), TierChange.id > after_id)
            .order_by(TierChange.id).limit(batch).options(selectinload(TierChange.to_tier))
        ))
        if not changes:
            break
        sent_before = _existing_keys(session, [f"tier:{change.id}" for change in changes])
        members = {member.id: member for member in session.scalars(
            select(Member).where(Member.id.in_([change.member_id for change in changes]))
            .options(selectinload(Member.tier), selectinload(Member.store)))}
        for change in changes:
            key = f"tier:{change.id}"
            if key in sent_before:
                continue
            member = members[change.member_id]
            tier = change.to_tier.name(messaging.member_locale(member))
            if messaging.queue(session, member=member, template=template, purpose="tier_change", now=now,
                               channels=channels, dedupe_key=key, extra={"tier": tier}):
                queued += 1
        run.batch_done(session)
        after_id = changes[-1].id
    run.tier_change += queued
    return queued


# --- the daily job --------------------------------------------------------------------------------------

def send_care(session: Session, *, now: datetime, channels: messaging.Channels, batch: int = BATCH,
              heartbeat: Callable[[], None] | None = None) -> CareRun:
    """Queue today's care messages (the caller holds the job lock). Safe to run again: nothing goes twice."""
    run = CareRun(heartbeat=heartbeat)
    birthday_greetings(session, now=now, channels=channels, run=run, batch=batch)
    expiry_reminders(session, now=now, channels=channels, run=run, batch=batch)
    tier_change_notes(session, now=now, channels=channels, run=run, batch=batch)
    return run
