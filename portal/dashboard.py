"""The manager dashboard: a store's (or the chain's) figures for a period, and the day's takings.

Sums of money, purchases, new members, points and each staff member's work come from the running totals per 15
minutes that every transaction keeps (portal/rollups.py), so a view reads a few thousand rows, not millions;
active and repeat members are counted from the purchases themselves (a distinct count cannot be summed).

Every figure is an SQL aggregate over the period [since, until): `since` is local midnight of the period's
first day in the chosen store's time zone (scope.period_start), `until` is now. Each is scoped to a list of
store ids (None: every store). Money is integer fen. The definitions, shown to managers in the same words:

- Member sales: cash paid (Purchase.paid_fen: after the member discount and after points, so points are not
  money) of the purchases made in the period at the stores, less the cash refunded (Return.cash_refund_fen)
  for the returns made in the period at the stores, whenever the purchase was.
- Purchases: how many purchases members made in the period. Average basket: the cash paid of those purchases
  divided by their number, rounded half up to the fen (before returns: a basket is what was bought).
- Share of all sales: member sales on the days for which the store recorded its takings, divided by the
  takings of those days. Days are the store's local days; for several stores each store's own days and
  takings count (a store-day). Days without takings are left out of both sides, and the page says how many
  days (store-days) of the period the share is based on.
- New members: members registered at the stores in the period (also those who deleted their account since).
  Active members: members with at least one purchase at the stores in the period. Repeat-purchase rate: of
  the active members, the share with two or more purchases at the stores in the period.
- Points in the period, by ledger entry: *issued* = points earned on purchases (earn) plus bonuses (birthday,
  referral, goodwill: bonus); *redeemed* = points paid with (redeem); *expired* (expire); returns give back
  redeemed points (restore) and take back earned ones (reverse); manual adjustments are shown apart, what
  they added and what they took. An entry counts for the store it was posted at, or, when it has none (an
  expiry), for the store where the member registered.
- Points liability now: the sum of the positive balances of members who registered at the stores and have
  not deleted their account, at the redemption value (rules.points_value_fen).
- Tiers now: members per tier, among those who registered at the stores and have not deleted their account.
- Complaints: complaints.figures() for the stores and period (open and overdue now; first-response median
  and 90th percentile of the complaints made in the period; the average visit rating in the period).
- Per staff member: members they registered at the stores in the period; purchases they recorded at the
  stores in the period and their cash paid (returns are not netted: they may be another person's);
  complaints handled = distinct complaints of the stores on which they acknowledged, replied (to the member
  or as a note), resolved or closed in the period.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from flask_babel import lazy_gettext as _l
from sqlalchemy import and_, case, func, literal, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from . import audit, complaints, rollups
from .models import (
    ActivityBucket,
    Complaint,
    ComplaintEvent,
    Member,
    Purchase,
    Staff,
    StaffBucket,
    Store,
    StoreTakings,
    Tier,
)
from .money import round_half_up_div
from .refusals import Refusal
from .rules import Rules

MAX_TAKINGS_FEN = 10_000_000_000  # ¥100,000,000.00 for one store's day
TAKINGS_DAYS_BACK = 366  # a day's takings can be recorded or corrected for about a year
HANDLING_EVENTS = ("acknowledged", "reply", "note", "resolved", "closed")


class TakingsError(Refusal):
    """A day's takings that cannot be recorded; nothing was changed."""


# --- days -----------------------------------------------------------------------------------------------

def local_days(since: datetime, until: datetime, zone: str) -> list[date]:
    """The local days from the one `since` falls on to the one `until` falls on, both included."""
    local = ZoneInfo(zone)
    first, last = since.astimezone(local).date(), until.astimezone(local).date()
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def day_starts(days: list[date], zone: str) -> list[datetime]:
    """UTC starts of each day and of the day after the last (so len(days) + 1 moments)."""
    local = ZoneInfo(zone)
    return [datetime.combine(day, time.min, tzinfo=local).astimezone(timezone.utc)
            for day in [*days, days[-1] + timedelta(days=1)]]


def _day_index(column, starts: list[datetime]):
    """SQL: the index of the day `column` falls on (0 for the first day), NULL outside the days.

    A binary search written as nested CASEs: each row is compared with about log2(days) day starts rather
    than with every day's (a 30-day dashboard adds up tens of thousands of 15-minute rows)."""
    def between(low: int, high: int):  # the row is known to fall in days low .. high - 1
        if high - low == 1:
            return literal(low)
        middle = (low + high) // 2
        return case((column < starts[middle], between(low, middle)), else_=between(middle, high))

    days = len(starts) - 1
    return case((and_(column >= starts[0], column < starts[days]), between(0, days)), else_=None)


def _store_day_index(column, store_column, zones: dict[str, list[int]], days: list[date]):
    """SQL: the index of the store's local day `column` falls on, each store in its own zone."""
    if len(zones) == 1:
        return _day_index(column, day_starts(days, next(iter(zones))))
    return case(*((store_column.in_(ids), _day_index(column, day_starts(days, zone))) for zone, ids in zones.items()),
                else_=None)


# --- the figures ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Sales:
    paid_fen: int  # cash paid of the purchases in the period
    refunded_fen: int  # cash refunded by the returns in the period
    purchases: int

    @property
    def net_fen(self) -> int:
        return self.paid_fen - self.refunded_fen

    @property
    def average_basket_fen(self) -> int | None:
        return round_half_up_div(self.paid_fen, self.purchases) if self.purchases else None


@dataclass(frozen=True)
class Share:
    member_sales_fen: int  # member sales on the store-days with takings
    takings_fen: int  # the takings of those store-days
    days_with_takings: int  # store-days
    days: int  # store-days of the period

    @property
    def share(self) -> float | None:
        return self.member_sales_fen / self.takings_fen if self.takings_fen else None


@dataclass(frozen=True)
class Day:
    day: date
    member_sales_fen: int
    purchases: int
    takings_fen: int | None  # the stores' takings recorded for the day, None if none


@dataclass(frozen=True)
class Members:
    new: int
    active: int
    repeat: int  # of the active, those with 2+ purchases

    @property
    def repeat_rate(self) -> float | None:
        return self.repeat / self.active if self.active else None


@dataclass(frozen=True)
class Points:
    earned: int
    bonus: int
    redeemed: int
    expired: int
    restored: int
    reversed: int
    adjusted_in: int
    adjusted_out: int

    @property
    def issued(self) -> int:
        return self.earned + self.bonus


@dataclass(frozen=True)
class Liability:
    points: int
    value_fen: int


@dataclass(frozen=True)
class StaffRow:
    staff: Staff
    registered: int
    purchases: int
    paid_fen: int
    complaints_handled: int


@dataclass(frozen=True)
class Dashboard:
    since: datetime
    until: datetime
    zone: str
    sales: Sales
    share: Share
    days: list[Day]
    members: Members
    points: Points
    liability: Liability
    tiers: list[tuple[Tier, int]]
    complaints: complaints.Figures
    staff: list[StaffRow]


def _scoped(query, column, store_ids: list[int] | None):
    return query if store_ids is None else query.where(column.in_(store_ids))


def _in_period(column, since: datetime, until: datetime):
    return and_(column >= since, column < until)


def _buckets(store_ids: list[int] | None, since: datetime, until: datetime):
    """The stores' 15-minute totals (portal/rollups.py) of the period [since, until): since is a local
    midnight, a whole number of buckets; nothing is later than until (now), so its bucket counts whole."""
    return _scoped(select(ActivityBucket).where(ActivityBucket.bucket_start >= rollups.bucket_of(since),
                                                ActivityBucket.bucket_start < until),
                   ActivityBucket.store_id, store_ids).subquery()


def sales(session: Session, *, store_ids: list[int] | None, since: datetime, until: datetime) -> Sales:
    """Cash paid and number of the purchases in the period, and the cash refunded by returns in the period."""
    rows = _buckets(store_ids, since, until)
    paid, count, refunded = session.execute(select(
        func.coalesce(func.sum(rows.c.paid_fen), 0), func.coalesce(func.sum(rows.c.purchases), 0),
        func.coalesce(func.sum(rows.c.refunded_fen), 0))).one()
    return Sales(paid_fen=int(paid), refunded_fen=int(refunded), purchases=int(count))


def _movements(store_ids, since, until, day_of):
    """Member sales (paid less refunded) and purchases in the period as rows (day, store_id, amount,
    purchases), one per store and 15 minutes."""
    rows = _buckets(store_ids, since, until)
    return select(day_of(rows.c.bucket_start, rows.c.store_id).label("day"), rows.c.store_id.label("store_id"),
                  (rows.c.paid_fen - rows.c.refunded_fen).label("amount"),
                  rows.c.purchases.label("purchases")).subquery()


def daily(session: Session, *, store_ids: list[int] | None, since: datetime, until: datetime,
          zone: str) -> list[Day]:
    """Member sales and purchases per local day of `zone`, with the takings recorded for each day."""
    days = local_days(since, until, zone)
    starts = day_starts(days, zone)
    rows = _movements(store_ids, since, until, lambda column, _store: _day_index(column, starts))
    totals = {index: (int(amount), int(count)) for index, amount, count in session.execute(
        select(rows.c.day, func.sum(rows.c.amount), func.sum(rows.c.purchases))
        .where(rows.c.day.is_not(None)).group_by(rows.c.day))}
    takings = dict(session.execute(_scoped(
        select(StoreTakings.day, func.sum(StoreTakings.amount_fen))
        .where(StoreTakings.day >= days[0], StoreTakings.day <= days[-1]).group_by(StoreTakings.day),
        StoreTakings.store_id, store_ids)).all())
    return [Day(day, *totals.get(index, (0, 0)), int(takings[day]) if day in takings else None)
            for index, day in enumerate(days)]


def share(session: Session, *, store_ids: list[int] | None, since: datetime, until: datetime,
          zone: str) -> Share:
    """Member sales on the store-days that have takings, over those takings (see the module's definition)."""
    days = local_days(since, until, zone)
    stores = list(session.execute(_scoped(select(Store.id, Store.timezone, Store.active), Store.id, store_ids)))
    zones: dict[str, list[int]] = {}
    for store_id, store_zone, _active in stores:
        zones.setdefault(store_zone, []).append(store_id)
    takings = session.execute(_scoped(
        select(StoreTakings.store_id, StoreTakings.day, StoreTakings.amount_fen)
        .where(StoreTakings.day >= days[0], StoreTakings.day <= days[-1]), StoreTakings.store_id, store_ids)).all()
    store_days = len(days) * (len(stores) if store_ids is not None else sum(1 for s in stores if s.active))
    if not takings or not zones:
        return Share(0, 0, 0, store_days)
    # Each store's own local days; the window is widened by a day each side so that no store's day is cut.
    rows = _movements(store_ids, since - timedelta(days=1), until,
                      lambda column, store_column: _store_day_index(column, store_column, zones, days))
    sold = {(store_id, index): int(amount) for store_id, index, amount in session.execute(
        select(rows.c.store_id, rows.c.day, func.sum(rows.c.amount))
        .where(rows.c.day.is_not(None)).group_by(rows.c.store_id, rows.c.day))}
    position = {day: index for index, day in enumerate(days)}
    return Share(member_sales_fen=sum(sold.get((store_id, position[day]), 0) for store_id, day, _ in takings),
                 takings_fen=sum(int(amount) for _, _, amount in takings),
                 days_with_takings=len(takings), days=max(store_days, len(takings)))


def members(session: Session, *, store_ids: list[int] | None, since: datetime, until: datetime) -> Members:
    """New members, active members and how many of the active bought twice or more (see the module)."""
    rows = _buckets(store_ids, since, until)
    new = session.scalar(select(func.coalesce(func.sum(rows.c.new_members), 0)))
    # Every store named even for all stores, so that the (store, time, member) index is read store by store
    # whatever the planner knows of the table.
    scope = store_ids if store_ids is not None else list(session.scalars(select(Store.id)))
    per_member = select(Purchase.member_id, func.count(Purchase.id).label("n")).where(
        Purchase.store_id.in_(scope), _in_period(Purchase.created_at, since, until)
    ).group_by(Purchase.member_id).subquery()
    active, repeat = session.execute(select(
        func.count(), func.coalesce(func.sum(case((per_member.c.n >= 2, 1), else_=0)), 0)
    ).select_from(per_member)).one()
    return Members(new=int(new), active=int(active), repeat=int(repeat))


def points(session: Session, *, store_ids: list[int] | None, since: datetime, until: datetime) -> Points:
    """Points moved in the period, by kind (see the module for what counts as issued). An entry without a
    store (an expiry) counted for the member's store when it was posted (portal/rollups.py)."""
    rows = _buckets(store_ids, since, until)
    names = ("earned", "bonus", "redeemed", "expired", "restored", "reversed", "adjusted_in", "adjusted_out")
    sums = session.execute(select(*(func.coalesce(func.sum(rows.c[f"points_{name}"]), 0) for name in names))).one()
    return Points(**{name: int(value) for name, value in zip(names, sums)})


def liability(session: Session, *, store_ids: list[int] | None, rules: Rules) -> Liability:
    """What the members' points are worth now: positive balances of current members, at the redemption value."""
    total = int(session.scalar(_scoped(
        select(func.coalesce(func.sum(Member.points_balance), 0))
        .where(Member.points_balance > 0, Member.deleted_at.is_(None)), Member.store_id, store_ids)))
    return Liability(points=total, value_fen=rules.points_value_fen(total))


def tier_counts(session: Session, *, store_ids: list[int] | None) -> list[tuple[Tier, int]]:
    """Every tier, lowest first, with how many current members hold it now."""
    counts = dict(session.execute(_scoped(
        select(Member.tier_id, func.count(Member.id)).where(Member.deleted_at.is_(None)), Member.store_id, store_ids
    ).group_by(Member.tier_id)).all())
    tiers = session.scalars(select(Tier).order_by(Tier.threshold_fen, Tier.id))
    return [(tier, int(counts.get(tier.id, 0))) for tier in tiers]


def staff_rows(session: Session, *, store_ids: list[int] | None, since: datetime, until: datetime) -> list[StaffRow]:
    """Each staff member of the stores (active, or with anything to count) with what they did in the period."""
    mine = _scoped(select(StaffBucket.staff_id, func.sum(StaffBucket.registered), func.sum(StaffBucket.purchases),
                          func.sum(StaffBucket.paid_fen))
                   .where(StaffBucket.bucket_start >= rollups.bucket_of(since), StaffBucket.bucket_start < until),
                   StaffBucket.store_id, store_ids).group_by(StaffBucket.staff_id)
    registered, sold = {}, {}
    for staff_id, members_registered, purchases, paid in session.execute(mine):
        if members_registered:
            registered[staff_id] = int(members_registered)
        if purchases:
            sold[staff_id] = (int(purchases), int(paid))
    handled = dict(session.execute(_scoped(
        select(ComplaintEvent.staff_id, func.count(func.distinct(ComplaintEvent.complaint_id)))
        .join(Complaint, Complaint.id == ComplaintEvent.complaint_id)
        .where(ComplaintEvent.staff_id.is_not(None), ComplaintEvent.kind.in_(HANDLING_EVENTS),
               _in_period(ComplaintEvent.created_at, since, until)),
        Complaint.store_id, store_ids).group_by(ComplaintEvent.staff_id)).all())
    busy = set(registered) | set(sold) | set(handled)
    members_of_scope = Staff.active.is_(True) if store_ids is None else and_(Staff.active.is_(True),
                                                                              Staff.store_id.in_(store_ids))
    people = session.scalars(select(Staff).where(or_(members_of_scope, Staff.id.in_(busy)))
                             .order_by(Staff.name, Staff.id))
    return [StaffRow(person, int(registered.get(person.id, 0)), *sold.get(person.id, (0, 0)),
                     int(handled.get(person.id, 0))) for person in people]


def figures(session: Session, *, store_ids: list[int] | None, since: datetime, until: datetime, zone: str,
            rules: Rules, now: datetime) -> Dashboard:
    """Everything the dashboard shows for the stores (None: all) and the period [since, until)."""
    scope = dict(store_ids=store_ids, since=since, until=until)
    return Dashboard(
        since=since, until=until, zone=zone, sales=sales(session, **scope), share=share(session, **scope, zone=zone),
        days=daily(session, **scope, zone=zone), members=members(session, **scope), points=points(session, **scope),
        liability=liability(session, store_ids=store_ids, rules=rules),
        tiers=tier_counts(session, store_ids=store_ids),
        complaints=complaints.figures(session, rules=rules, now=now, since=since, until=until, store_ids=store_ids),
        staff=staff_rows(session, **scope),
    )


# --- the day's takings ----------------------------------------------------------------------------------

def record_takings(session: Session, *, store: Store, day: date, amount_fen: int, staff: Staff, now: datetime,
                   ip: str | None = None) -> StoreTakings:
    """Record a store's takings for one of its local days, or correct them (one row per store and day).

    The day may be today (the till's end-of-day report) or up to about a year back, never a day still to
    come. A change is audited as "takings.set" with the amount before (none for a new day) and after; sending
    the same amount again changes nothing and writes no audit row."""
    today = now.astimezone(ZoneInfo(store.timezone)).date()
    if day > today:
        raise TakingsError("day", _l("That day has not come yet."),
                           "day_in_future")
    if day < today - timedelta(days=TAKINGS_DAYS_BACK):
        raise TakingsError("day", _l("Choose a day within the last year."), "day_too_old")
    if amount_fen <= 0:
        raise TakingsError("amount", _l("Enter the day's takings, more than zero."), "invalid_amount")
    if amount_fen > MAX_TAKINGS_FEN:
        raise TakingsError("amount", _l("That is more than one store takes in a day; check the amount."), "too_large")

    def existing() -> StoreTakings | None:
        return session.scalars(select(StoreTakings).where(StoreTakings.store_id == store.id, StoreTakings.day == day)
                               .with_for_update()).one_or_none()

    row = existing()
    before = row.amount_fen if row is not None else None
    if row is None:
        try:
            with session.begin_nested():
                row = StoreTakings(store_id=store.id, day=day, amount_fen=amount_fen, entered_by_id=staff.id,
                                   updated_at=now)
                session.add(row)
                session.flush()
        except IntegrityError:  # another manager recorded the same day a moment ago: correct theirs
            row = existing()
            before = row.amount_fen
    if before == amount_fen:
        return row
    row.amount_fen, row.entered_by_id, row.updated_at = amount_fen, staff.id, now
    audit.record(session, "takings.set", at=now, staff_id=staff.id, store_id=store.id, ip=ip,
                 target=f"store:{store.code}:{day.isoformat()}",
                 before=None if before is None else {"day": day.isoformat(), "amount_fen": before},
                 after={"day": day.isoformat(), "amount_fen": amount_fen})
    return row
