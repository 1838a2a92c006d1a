"""The member base as managers see it: RFM segments, the filtered member lists, the CSV export and one
member's 360° view.

RFM (recency, frequency, monetary) comes from one aggregate over each member's purchases (`purchase_stats`):
when they last bought, how often in the last 365 days and ever, and the net cash they paid in the last 365
days. Every member falls in exactly one segment, decided by the first rule that holds, in this order:

1. champions   — bought within the last 30 days and 4 or more times in the last 365 days;
2. loyal       — bought within the last 90 days and 2 or more times in the last 365 days;
3. at risk     — 2 or more purchases ever and none in the last 90 days (PRODUCT's "members at risk": no
                 purchase in 90 days after at least two before);
4. new         — registered within the last 30 days;
5. hibernating — no purchase in the last 90 days, or never bought;
6. occasional  — the rest: one recent purchase in the year.

"At risk" comes before "new" so that it is exactly PRODUCT's list whatever the data (a member registered
this month cannot have two purchases older than 90 days unless their history was imported). "Within the
last N days" means after now − N days, as qualifying spend counts it (tiers.qualifying_spend): a purchase
exactly 90 days old is no longer within the last 90 days. Monetary value already grades members into tiers
(qualifying spend is the same net-cash figure), so the segments use recency and frequency and show the
spend beside them.

The segment is a CASE expression over that aggregate, so filtering and counting by segment happen in the
database, never by loading every member. The clock is the chain's (UTC now), not a store's.

Which members a store sees: the chain shares one member base, but a store's members are those registered
there or with a purchase there (`in_stores`).
"""
from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from flask_babel import lazy_gettext as _l
from sqlalchemy import and_, case, exists, extract, false, func, or_, select
from sqlalchemy.orm import Session, selectinload

from . import audit, ledger, members, tiers
from .cards import CARD_LENGTH
from .models import (
    Complaint,
    LedgerEntry,
    Member,
    PointLot,
    Purchase,
    Return,
    Staff,
    TierChange,
    VisitRating,
)
from .money import normalise_text
from .phones import PhoneError, display_phone, mask_numbers_in, normalise_phone
from .spreadsheet import neutralise

# --- the segments ---------------------------------------------------------------------------------------

FREQUENCY_DAYS = 365  # purchases and spend are counted over this many days
CHAMPION_RECENT_DAYS = 30
CHAMPION_MIN_PURCHASES = 4  # in FREQUENCY_DAYS
LOYAL_RECENT_DAYS = 90
LOYAL_MIN_PURCHASES = 2  # in FREQUENCY_DAYS
LAPSED_DAYS = 90  # no purchase for this long: at risk or hibernating
AT_RISK_MIN_PURCHASES = 2  # ever
NEW_MEMBER_DAYS = 30
EXPIRING_DAYS = 30  # the "points expiring soon" list looks this far ahead

SEGMENTS = ("champions", "loyal", "at_risk", "new", "hibernating", "occasional")
SEGMENT_LABELS = {
    "champions": _l("Champions"),
    "loyal": _l("Loyal"),
    "at_risk": _l("At risk"),
    "new": _l("New"),
    "hibernating": _l("Hibernating"),
    "occasional": _l("Occasional"),
}
SEGMENT_HINTS = {
    "champions": _l("Bought in the last 30 days, and 4 or more times in the last 365 days."),
    "loyal": _l("Bought in the last 90 days, and 2 or more times in the last 365 days."),
    "at_risk": _l("Bought at least twice, but not in the last 90 days."),
    "new": _l("Registered in the last 30 days."),
    "hibernating": _l("No purchase in the last 90 days (or never), and fewer than two ever."),
    "occasional": _l("One purchase in the last 90 days, and no other in the year."),
}

LISTS = ("all", "birthdays", "expiring", "at_risk")
PAGE_SIZE = 50
DETAIL_PAGE_SIZE = 50  # ledger entries, purchases, returns, ratings shown at once on the member's page


def purchase_stats(now: datetime):
    """One row per member who ever bought: last purchase time, purchases in the last FREQUENCY_DAYS and ever,
    and net cash paid (after refunds) in the last FREQUENCY_DAYS."""
    year_ago = now - timedelta(days=FREQUENCY_DAYS)
    in_year = Purchase.created_at > year_ago
    return (
        select(
            Purchase.member_id.label("member_id"),
            func.max(Purchase.created_at).label("last_purchase_at"),
            func.count(Purchase.id).label("purchases"),
            func.sum(case((in_year, 1), else_=0)).label("purchases_year"),
            func.sum(case((in_year, Purchase.paid_fen - Purchase.refunded_fen), else_=0)).label("net_paid_year"),
        )
        .group_by(Purchase.member_id)
        .subquery("purchase_stats")
    )


def segment_expression(stats, now: datetime):
    """The member's segment as SQL (see the module's docstring); `stats` is purchase_stats(now), outer-joined."""
    last = stats.c.last_purchase_at
    in_year = func.coalesce(stats.c.purchases_year, 0)
    ever = func.coalesce(stats.c.purchases, 0)
    lapsed = or_(last.is_(None), last <= now - timedelta(days=LAPSED_DAYS))
    return case(
        (and_(last > now - timedelta(days=CHAMPION_RECENT_DAYS), in_year >= CHAMPION_MIN_PURCHASES), "champions"),
        (and_(last > now - timedelta(days=LOYAL_RECENT_DAYS), in_year >= LOYAL_MIN_PURCHASES), "loyal"),
        (and_(ever >= AT_RISK_MIN_PURCHASES, lapsed), "at_risk"),
        (Member.created_at > now - timedelta(days=NEW_MEMBER_DAYS), "new"),
        (lapsed, "hibernating"),
        else_="occasional",
    )


def in_stores(store_ids: list[int]):
    """A store's members: registered at one of the stores, or with a purchase at one of them."""
    return or_(
        Member.store_id.in_(store_ids),
        exists().where(Purchase.member_id == Member.id, Purchase.store_id.in_(store_ids)),
    )


def search_condition(session: Session, query: str | None):
    """The till's lookup, as a condition: a card number (10 digits, or the first digits of one), the last 4
    digits of a phone, a full phone, or the start of a name. None when nothing was typed."""
    text = normalise_text(query)
    compact = text.replace(" ", "").replace("-", "")
    if not text:
        return None
    if compact.isascii() and compact.isdigit():
        if len(compact) == 4:
            return Member.phone_last4 == compact
        if len(compact) == CARD_LENGTH:
            return Member.card_number == compact
        if len(compact) < CARD_LENGTH:
            return Member.card_number.startswith(compact)  # digits only: nothing to escape
    if compact.isascii() and compact.lstrip("+").isdigit():
        try:
            return Member.phone == normalise_phone(compact)
        except PhoneError:
            return false()
    return members.name_prefix(session, members.name_key(text))


# --- the lists ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MemberFilter:
    """What the members list shows. `store_ids` None is every store (an admin who picked none)."""

    search: str = ""
    tier_id: int | None = None
    store_ids: list[int] | None = None
    segment: str | None = None
    marketing: bool | None = None  # marketing consent: yes, no, or either (None)
    show: str = "all"  # one of LISTS
    birthday_month: int | None = None  # for show="birthdays": the month it is now in the store's zone

    def described(self) -> dict:
        """The filters as plain values, for the audit log."""
        return {"search": mask_numbers_in(self.search) or None, "tier_id": self.tier_id, "store_ids": self.store_ids,
                "segment": self.segment, "marketing": self.marketing, "show": self.show,
                "birthday_month": self.birthday_month if self.show == "birthdays" else None}


@dataclass(frozen=True)
class MemberRow:
    member: Member
    last_purchase_at: datetime | None
    purchases_year: int
    net_paid_year_fen: int
    segment: str
    expiring_points: int | None = None  # on the expiring list: what expires within EXPIRING_DAYS
    expiring_from: datetime | None = None  # and when the first of it does

    @property
    def use_by(self) -> datetime | None:
        """The last moment the first expiring points can be used: a lot that expires at midnight can be used
        until the end of the day before, which is the day to tell the member."""
        return self.expiring_from - timedelta(seconds=1) if self.expiring_from else None


@dataclass(frozen=True)
class MemberPage:
    rows: list[MemberRow]
    total: int
    page: int
    pages: int


def _base(now: datetime, *, expiring_list: bool = False, counting: bool = False, with_stats: bool = True):
    """Members with their purchase figures and segment (and, for the expiring list, the points about to
    expire, joined so that only members with some are left): the query and the parts to filter and sort on.

    `counting` selects the member ids alone, and without `with_stats` the purchases are left out (a count
    that filters on no segment need not add up every purchase)."""
    stats = purchase_stats(now)
    segment = segment_expression(stats, now)
    columns = [Member.id] if counting else [Member, stats.c.last_purchase_at, stats.c.purchases_year,
                                            stats.c.net_paid_year, segment.label("segment")]
    expiring = None
    if expiring_list:
        expiring = (
            select(PointLot.member_id.label("member_id"), func.sum(PointLot.remaining).label("points"),
                   func.min(PointLot.expires_at).label("first_at"))
            .where(PointLot.remaining > 0, PointLot.expires_at > now,
                   PointLot.expires_at <= now + timedelta(days=EXPIRING_DAYS))
            .group_by(PointLot.member_id)
            .subquery("expiring")
        )
        if not counting:
            columns += [expiring.c.points, expiring.c.first_at]
    query = select(*columns)
    if with_stats or not counting:
        query = query.outerjoin(stats, stats.c.member_id == Member.id)
    if expiring is not None:
        query = query.join(expiring, expiring.c.member_id == Member.id)
    return query, stats, segment, expiring


def _listing(session: Session, filters: MemberFilter, now: datetime, *, counting: bool = False):
    """The list as one SELECT: members (not erased) with their purchase figures and segment, filtered and
    ordered, not yet paged (or, `counting`, only the ids of the members it holds)."""
    by_segment = filters.segment in SEGMENTS or filters.show == "at_risk"
    query, stats, segment, expiring = _base(now, expiring_list=filters.show == "expiring", counting=counting,
                                            with_stats=by_segment)
    query = query.where(Member.deleted_at.is_(None))
    searched = search_condition(session, filters.search)
    if searched is not None:
        query = query.where(searched)
    if filters.tier_id is not None:
        query = query.where(Member.tier_id == filters.tier_id)
    if filters.store_ids is not None:
        query = query.where(in_stores(filters.store_ids))
    if filters.segment in SEGMENTS:
        query = query.where(segment == filters.segment)
    if filters.marketing is not None:
        query = query.where(Member.marketing_consent.is_(filters.marketing))
    if filters.show == "at_risk":
        query = query.where(segment == "at_risk")
    if filters.show == "birthdays":
        query = query.where(extract("month", Member.birthday) == (filters.birthday_month or 0))
    if counting:
        return query

    if filters.show == "birthdays":
        order = [extract("day", Member.birthday), Member.name_key, Member.id]
    elif expiring is not None:
        order = [expiring.c.first_at, Member.id]
    elif filters.show == "at_risk":
        order = [stats.c.last_purchase_at.desc(), Member.id.desc()]
    else:
        order = [Member.id.desc()]  # newest members first
    return query.order_by(*order)


def _with_members_loaded(query):
    return query.options(selectinload(Member.tier), selectinload(Member.store))


def member_stats(session: Session, member_id: int, *, now: datetime) -> MemberRow:
    """One member's purchase figures and segment, by the same SQL as the lists."""
    query, _stats, _segment, _expiring = _base(now)
    return _row(session.execute(query.where(Member.id == member_id)).one())


def _row(result) -> MemberRow:
    extra = tuple(result[5:7]) if len(result) > 5 else (None, None)
    return MemberRow(
        member=result[0], last_purchase_at=result[1], purchases_year=int(result[2] or 0),
        net_paid_year_fen=int(result[3] or 0), segment=result[4],
        expiring_points=int(extra[0]) if extra[0] is not None else None, expiring_from=extra[1],
    )


def count_members(session: Session, filters: MemberFilter, *, now: datetime) -> int:
    listing = _listing(session, filters, now, counting=True)
    return int(session.scalar(select(func.count()).select_from(listing.subquery())))


def list_members(session: Session, filters: MemberFilter, *, now: datetime, page: int = 1,
                 page_size: int | None = None) -> MemberPage:
    """One page of the filtered list (PAGE_SIZE to a page) and how many members it holds in all."""
    page_size = page_size or PAGE_SIZE
    total = count_members(session, filters, now=now)
    pages = max(1, -(-total // page_size))
    page = min(max(1, page), pages)
    results = session.execute(_with_members_loaded(_listing(session, filters, now))
                              .limit(page_size).offset((page - 1) * page_size))
    return MemberPage([_row(result) for result in results], total, page, pages)


@dataclass
class Export:
    """A member export under way: how many rows it holds, and the rows, read in batches as they are written."""

    total: int
    rows: Iterator[MemberRow] = field(repr=False)


def export_members(session: Session, filters: MemberFilter, *, now: datetime, staff_id: int | None,
                   store_id: int | None, ip: str | None, batch: int = 500) -> Export:
    """Audit a CSV export ("members.export", with the filters and the row count) and hand back its rows.

    The rows are read lazily, `batch` at a time, so a large export never sits in memory whole; the audit row
    is written first, so an export that is cut short is still on record."""
    total = count_members(session, filters, now=now)
    audit.record(session, "members.export", at=now, staff_id=staff_id, store_id=store_id, target="members",
                 after={"filters": filters.described(), "rows": total}, ip=ip)

    def rows() -> Iterator[MemberRow]:
        results = session.execute(_with_members_loaded(_listing(session, filters, now))
                                  .execution_options(yield_per=batch))
        for result in results:
            yield _row(result)

    return Export(total, rows())


# --- the CSV export -------------------------------------------------------------------------------------

CSV_COLUMNS = (
    _l("Card number"), _l("Name"), _l("Phone"), _l("E-mail"), _l("Birthday"), _l("Tier"), _l("Points balance"),
    _l("Last purchase"), _l("Purchases in the last 365 days"), _l("Net spend in the last 365 days (yuan)"),
    _l("Segment"), _l("Marketing consent"), _l("Registered at"), _l("Registered on"),
)
CSV_EXPIRING_COLUMNS = (_l("Points expiring in 30 days"), _l("Use the first of them by"))
CSV_CHUNK = 64 * 1024  # characters written out at a time


def _plain_yuan(fen: int) -> str:
    """1234.56: a number a spreadsheet can add up (no ¥, no thousands separator)."""
    sign = "-" if fen < 0 else ""
    whole, part = divmod(abs(fen), 100)
    return f"{sign}{whole}.{part:02d}"


def csv_text(export: Export, *, zone: str, locale: str, expiring: bool) -> Iterator[str]:
    """The export as CSV text, in pieces: a byte-order mark first (so Excel opens UTF-8, Chinese included),
    the translated header row, then one row per member, times in the store's zone."""
    local = ZoneInfo(zone)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    yes, no = str(_l("Yes")), str(_l("No"))
    segment_names = {code: str(label) for code, label in SEGMENT_LABELS.items()}  # translated once, not per row
    tier_names: dict[int, str] = {}

    def when(moment: datetime | None) -> str:
        return moment.astimezone(local).strftime("%Y-%m-%d %H:%M") if moment else ""

    def phone(e164: str | None) -> str:
        # display_phone's answer for a mainland number, without parsing it again for every row
        return e164[3:] if e164 and e164.startswith("+86") else display_phone(e164)

    header = [str(label) for label in CSV_COLUMNS + (CSV_EXPIRING_COLUMNS if expiring else ())]
    writer.writerow([neutralise(label) for label in header])
    yield "\ufeff" + buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    for row in export.rows:
        member = row.member
        if member.tier_id not in tier_names:
            tier_names[member.tier_id] = member.tier.name(locale)
        cells = [
            member.card_number, member.name, phone(member.phone), member.email,
            member.birthday.isoformat() if member.birthday else "", tier_names[member.tier_id],
            member.points_balance, when(row.last_purchase_at), row.purchases_year,
            _plain_yuan(row.net_paid_year_fen), segment_names[row.segment],
            yes if member.marketing_consent else no, member.store.name,
            member.created_at.astimezone(local).date().isoformat(),
        ]
        if expiring:
            cells += [row.expiring_points, row.use_by.astimezone(local).date().isoformat()]
        writer.writerow([neutralise(cell) for cell in cells])
        if buffer.tell() >= CSV_CHUNK:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue()


# --- one member -----------------------------------------------------------------------------------------

def member_in_scope(session: Session, member_id: int, store_ids: list[int] | None) -> Member | None:
    """The member, if they exist and belong to the stores (None: every store); else None, like a missing one."""
    query = select(Member).where(Member.id == member_id)
    if store_ids is not None:
        query = query.where(in_stores(store_ids))
    return session.scalars(query).one_or_none()


@dataclass
class MemberView:
    """Everything a manager sees about one member."""

    member: Member
    stats: MemberRow
    purchases_ever: int
    qualifying_spend_fen: int
    available_points: int
    expiring_points: int
    registered_by: Staff | None
    ledger: list[LedgerEntry]
    ledger_next: int | None
    purchases: list[Purchase]
    purchases_next: int | None
    returns_by_purchase: dict[int, list[Return]]
    returns: list[Return]
    complaints: list[Complaint]
    tier_changes: list[TierChange]
    visit_ratings: list[VisitRating]


def ledger_page(session: Session, member_id: int, before: int | None,
                size: int | None = None) -> tuple[list[LedgerEntry], int | None]:
    """The member's points movements, newest first, `size` (DETAIL_PAGE_SIZE) at a time (keyset on the id),
    and where the next page starts."""
    size = size or DETAIL_PAGE_SIZE
    query = select(LedgerEntry).where(LedgerEntry.member_id == member_id).options(selectinload(LedgerEntry.store))
    if before:
        query = query.where(LedgerEntry.id < before)
    rows = list(session.scalars(query.order_by(LedgerEntry.id.desc()).limit(size + 1)))
    return rows[:size], (rows[size - 1].id if len(rows) > size else None)


def purchases_page(session: Session, member_id: int, before: int | None, size: int | None = None
                   ) -> tuple[list[Purchase], int | None, dict[int, list[Return]]]:
    """The member's purchases, newest first, `size` (DETAIL_PAGE_SIZE) at a time, each with its returns."""
    size = size or DETAIL_PAGE_SIZE
    query = select(Purchase).where(Purchase.member_id == member_id).options(selectinload(Purchase.store))
    if before:
        query = query.where(Purchase.id < before)
    rows = list(session.scalars(query.order_by(Purchase.id.desc()).limit(size + 1)))
    shown, more = rows[:size], len(rows) > size
    returns: dict[int, list[Return]] = {}
    if shown:
        for ret in session.scalars(select(Return).where(Return.purchase_id.in_([p.id for p in shown]))
                                   .options(selectinload(Return.store)).order_by(Return.id)):
            returns.setdefault(ret.purchase_id, []).append(ret)
    return shown, (shown[-1].id if more else None), returns


def view_member(session: Session, member: Member, *, now: datetime, qualifying_days: int, staff_id: int | None,
                store_id: int | None, ip: str | None, ledger_before: int | None = None,
                purchases_before: int | None = None) -> MemberView:
    """The 360° view of one member, and the audit row that says who looked ("member.view"): a manager's view
    of personal data is on record. The caller has checked the member is in scope. The ledger and the
    purchases start at the newest, or before the given ids (the next pages, without JavaScript)."""
    audit.record(session, "member.view", at=now, staff_id=staff_id, store_id=store_id,
                 target=f"member:{member.id}", ip=ip)
    stats = member_stats(session, member.id, now=now)
    entries, ledger_next = ledger_page(session, member.id, ledger_before)
    purchases, purchases_next, returns_by_purchase = purchases_page(session, member.id, purchases_before)
    newest = DETAIL_PAGE_SIZE
    points_outlook = ledger.outlook(session, member, now, EXPIRING_DAYS)
    return MemberView(
        member=member,
        stats=stats,
        purchases_ever=int(session.scalar(select(func.count(Purchase.id)).where(Purchase.member_id == member.id))),
        qualifying_spend_fen=tiers.qualifying_spend(session, member.id, now, qualifying_days),
        available_points=points_outlook.available,
        expiring_points=points_outlook.expiring,
        registered_by=session.get(Staff, member.registered_by_id) if member.registered_by_id else None,
        ledger=entries, ledger_next=ledger_next,
        purchases=purchases, purchases_next=purchases_next, returns_by_purchase=returns_by_purchase,
        returns=list(session.scalars(
            select(Return).where(Return.member_id == member.id)
            .options(selectinload(Return.store), selectinload(Return.purchase))
            .order_by(Return.id.desc()).limit(newest))),
        complaints=list(session.scalars(
            select(Complaint).where(Complaint.member_id == member.id).options(selectinload(Complaint.store))
            .order_by(Complaint.id.desc()).limit(newest))),
        tier_changes=list(session.scalars(
            select(TierChange).where(TierChange.member_id == member.id)
            .options(selectinload(TierChange.from_tier), selectinload(TierChange.to_tier))
            .order_by(TierChange.id.desc()))),
        visit_ratings=list(session.scalars(
            select(VisitRating).where(VisitRating.member_id == member.id)
            .options(selectinload(VisitRating.purchase).selectinload(Purchase.store))
            .order_by(VisitRating.id.desc()).limit(newest))),
    )
