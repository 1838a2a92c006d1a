"""Running totals for the dashboard, kept up to date by the transactions themselves.

The dashboard reads sums over periods of days; at a chain's size, adding up millions of purchases and ledger
entries on every view is too slow. So each transaction that records a purchase, a return, a member or a ledger
entry also adds its figures to a bucket of 15 minutes (UTC) per store, and per staff member, in the same
transaction: the totals can never disagree with the rows.

Fifteen minutes, because every time zone's midnight falls on a quarter hour: a period that starts at a local
midnight (in any store's zone) is a whole number of buckets, so the dashboard's figures are exactly what adding
up the rows gives. A period ends at "now", and no row is later than now, so the bucket now falls in counts whole.

The session hook (watch) sees every row the ORM inserts, whichever code path adds it. Rows written around the
ORM (the data generator's bulk load) are counted by rebuild(), which recomputes every bucket from the rows.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import (
    Integer, and_, case, cast, delete, func, insert, literal, literal_column, select, union_all,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from . import new_rows
from .models import ActivityBucket, LedgerEntry, Member, Purchase, Return, StaffBucket

BUCKET = timedelta(minutes=15)

# ledger kind -> (the bucket's column for what it adds, for what it takes)
_POINT_COLUMNS = {
    "earn": ("points_earned", None),
    "bonus": ("points_bonus", None),
    "redeem": (None, "points_redeemed"),
    "expire": (None, "points_expired"),
    "restore": ("points_restored", None),
    "reverse": (None, "points_reversed"),
    "adjust": ("points_adjusted_in", "points_adjusted_out"),
}
ACTIVITY_COLUMNS = ("purchases", "paid_fen", "refunded_fen", "new_members", "points_earned", "points_bonus",
                    "points_redeemed", "points_expired", "points_restored", "points_reversed",
                    "points_adjusted_in", "points_adjusted_out")
STAFF_COLUMNS = ("registered", "purchases", "paid_fen")


def bucket_of(moment: datetime) -> datetime:
    """The start of the 15-minute bucket (UTC) a moment falls in."""
    return moment.replace(minute=moment.minute - moment.minute % 15, second=0, microsecond=0)


class Totals:
    """Figures to add, by (store, bucket) and by (staff member, store, bucket)."""

    def __init__(self) -> None:
        self.activity: dict[tuple[int, datetime], dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.staff: dict[tuple[int, int, datetime], dict[str, int]] = defaultdict(lambda: defaultdict(int))

    def purchase(self, *, store_id: int, staff_id: int | None, at: datetime, paid_fen: int) -> None:
        row = self.activity[(store_id, bucket_of(at))]
        row["purchases"] += 1
        row["paid_fen"] += paid_fen
        if staff_id is not None:
            mine = self.staff[(staff_id, store_id, bucket_of(at))]
            mine["purchases"] += 1
            mine["paid_fen"] += paid_fen

    def refund(self, *, store_id: int, at: datetime, cash_refund_fen: int) -> None:
        self.activity[(store_id, bucket_of(at))]["refunded_fen"] += cash_refund_fen

    def member(self, *, store_id: int, registered_by_id: int | None, at: datetime) -> None:
        self.activity[(store_id, bucket_of(at))]["new_members"] += 1
        if registered_by_id is not None:
            self.staff[(registered_by_id, store_id, bucket_of(at))]["registered"] += 1

    def points(self, *, store_id: int, kind: str, points: int, at: datetime) -> None:
        adds, takes = _POINT_COLUMNS[kind]
        column = adds if points > 0 else takes
        if column is not None and points:
            self.activity[(store_id, bucket_of(at))][column] += abs(points)

    def write(self, session: Session) -> None:
        """Add the figures to their buckets (insert or add), in key order so that concurrent writers meet the
        rows in the same order."""
        dialect = session.get_bind().dialect.name
        activity = [{"store_id": key[0], "bucket_start": key[1], **_full(ACTIVITY_COLUMNS, self.activity[key])}
                    for key in sorted(self.activity) if any(self.activity[key].values())]
        staff = [{"staff_id": key[0], "store_id": key[1], "bucket_start": key[2],
                  **_full(STAFF_COLUMNS, self.staff[key])}
                 for key in sorted(self.staff) if any(self.staff[key].values())]
        for row in activity:
            session.execute(_upsert(dialect, ActivityBucket), row)
        for row in staff:
            session.execute(_upsert(dialect, StaffBucket), row)
        self.activity.clear()
        self.staff.clear()


def _full(columns: tuple[str, ...], values: dict[str, int]) -> dict[str, int]:
    return {name: values.get(name, 0) for name in columns}


_UPSERTS: dict[tuple[str, type], object] = {}


def _upsert(dialect: str, model):
    """INSERT ... ON CONFLICT DO UPDATE adding every figure column, built once per database kind and table so
    that SQLAlchemy compiles it once (a figure of 0 adds nothing)."""
    statement = _UPSERTS.get((dialect, model))
    if statement is None:
        table = model.__table__
        keys = ["store_id", "bucket_start"] if model is ActivityBucket else ["staff_id", "store_id", "bucket_start"]
        figures = ACTIVITY_COLUMNS if model is ActivityBucket else STAFF_COLUMNS
        insert_ = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = insert_(table)
        statement = statement.on_conflict_do_update(
            index_elements=keys, set_={c: table.c[c] + statement.excluded[c] for c in figures})
        _UPSERTS[(dialect, model)] = statement
    return statement


# --- the session hook ---------------------------------------------------------------------------------------

_WATCHED = (Purchase, Return, Member, LedgerEntry)


def _member_store(session: Session, member_id: int) -> int:
    member = session.get(Member, member_id)
    return member.store_id


def count_rows(session: Session, rows: Iterable, totals: Totals) -> None:
    for obj in rows:
        if isinstance(obj, Purchase):
            totals.purchase(store_id=obj.store_id, staff_id=obj.staff_id, at=obj.created_at, paid_fen=obj.paid_fen)
        elif isinstance(obj, Return):
            totals.refund(store_id=obj.store_id, at=obj.created_at, cash_refund_fen=obj.cash_refund_fen)
        elif isinstance(obj, Member):
            totals.member(store_id=obj.store_id, registered_by_id=obj.registered_by_id, at=obj.created_at)
        elif isinstance(obj, LedgerEntry):
            store_id = obj.store_id if obj.store_id is not None else _member_store(session, obj.member_id)
            totals.points(store_id=store_id, kind=obj.kind, points=obj.points, at=obj.created_at)


def _write_totals(session: Session, rows: list) -> None:
    totals = Totals()
    count_rows(session, rows, totals)
    totals.write(session)


def watch() -> None:
    """Have every session add the rows each transaction inserts to the running totals, before it commits."""
    new_rows.watch("rollups", _WATCHED, _write_totals)


# --- recomputing every bucket ----------------------------------------------------------------------------

def _bucket_sql(column, dialect: str):
    """SQL for the start of the 15-minute bucket of a UTC time column, stored as the column type stores it."""
    if dialect == "postgresql":
        return func.date_bin(literal_column("interval '15 minutes'"), column,
                             literal_column("timestamptz '2000-01-01 00:00:00+00'"))
    # SQLite keeps UTC times as text, 'YYYY-MM-DD HH:MM:SS.ffffff'
    minute = cast(func.strftime("%M", column), Integer)
    return func.printf("%s%02d:00.000000", func.strftime("%Y-%m-%d %H:", column), minute - minute % 15)


def rebuild(session: Session) -> None:
    """Throw the totals away and count every row again, in the database (after a bulk load; safe at any time)."""
    dialect = session.get_bind().dialect.name

    def bucket(column):
        return _bucket_sql(column, dialect)

    zero = literal(0)
    point_sum = {}
    for kind, (adds, takes) in _POINT_COLUMNS.items():
        if adds:
            point_sum[adds] = (kind, True)
        if takes:
            point_sum[takes] = (kind, False)

    def columns(**given):
        return [given.get(name, zero).label(name) for name in ACTIVITY_COLUMNS]

    ledger_store = func.coalesce(LedgerEntry.store_id, Member.store_id)
    ledger_columns = {}
    for name, (kind, positive) in point_sum.items():
        sign = LedgerEntry.points > 0 if positive else LedgerEntry.points < 0
        ledger_columns[name] = case((and_(LedgerEntry.kind == kind, sign), func.abs(LedgerEntry.points)), else_=0)
    sources = union_all(
        select(Purchase.store_id.label("store_id"), bucket(Purchase.created_at).label("bucket_start"),
               *columns(purchases=literal(1), paid_fen=Purchase.paid_fen)),
        select(Return.store_id, bucket(Return.created_at), *columns(refunded_fen=Return.cash_refund_fen)),
        select(Member.store_id, bucket(Member.created_at), *columns(new_members=literal(1))),
        select(ledger_store, bucket(LedgerEntry.created_at), *columns(**ledger_columns))
        .join(Member, Member.id == LedgerEntry.member_id),
    ).subquery()
    staff_sources = union_all(
        select(Purchase.staff_id.label("staff_id"), Purchase.store_id.label("store_id"),
               bucket(Purchase.created_at).label("bucket_start"), zero.label("registered"),
               literal(1).label("purchases"), Purchase.paid_fen.label("paid_fen"))
        .where(Purchase.staff_id.is_not(None)),
        select(Member.registered_by_id, Member.store_id, bucket(Member.created_at), literal(1), zero, zero)
        .where(Member.registered_by_id.is_not(None)),
    ).subquery()
    session.execute(delete(ActivityBucket))
    session.execute(delete(StaffBucket))
    session.execute(insert(ActivityBucket.__table__).from_select(
        ["store_id", "bucket_start", *ACTIVITY_COLUMNS],
        select(sources.c.store_id, sources.c.bucket_start, *(func.sum(sources.c[n]) for n in ACTIVITY_COLUMNS))
        .group_by(sources.c.store_id, sources.c.bucket_start)))
    session.execute(insert(StaffBucket.__table__).from_select(
        ["staff_id", "store_id", "bucket_start", *STAFF_COLUMNS],
        select(staff_sources.c.staff_id, staff_sources.c.store_id, staff_sources.c.bucket_start,
               *(func.sum(staff_sources.c[n]) for n in STAFF_COLUMNS))
        .group_by(staff_sources.c.staff_id, staff_sources.c.store_id, staff_sources.c.bucket_start)))
