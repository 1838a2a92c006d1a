"""Fraud signals (PRODUCT.md, managers): patterns a manager should look at, by the thresholds in the rules.

- Busy days: a member with more than `fraud_purchases_per_day` purchases in one local day. The day is the
  calendar day of the store where each purchase was made, in that store's time zone.
- Large adjustments: a manager's manual adjustment (ledger kind "adjust", reason "adjustment"; opening
  balances posted by an import are not manual) of at least `fraud_adjustment_points` points, added or taken.
- Points-heavy returns: a return of a purchase whose amount due (gross less the member discount) was paid
  at least `fraud_return_points_percent` percent with points, since the points come back with the refund.

Each list covers [since, until) and the given stores (None: every store), and is computed in SQL; only the
local-day bucketing of busy days is done here in Python, because SQLite has no time zones: SQL finds the
candidates (members with more purchases in the whole period than the threshold, a GROUP BY), then only their
purchases of the period are read and counted by local day, which is exact on both databases, in every zone,
across daylight-saving changes. Signals are prompts to look, never verdicts.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from .models import ApiToken, Complaint, LedgerEntry, LedgerKind, Member, Purchase, Return, Staff, Store
from .rules import Rules

LIMIT = 200  # rows a list shows at most; the newest (or busiest) first
MANUAL_ADJUSTMENT = "adjustment"  # the ledger reason of a manager's adjustment (imported opening balances differ)


@dataclass(frozen=True)
class BusyDay:
    """One member's local day with more purchases than the threshold."""

    member: Member
    day: date
    purchases: int
    paid_fen: int
    stores: tuple[Store, ...]
    first_at: datetime
    last_at: datetime


@dataclass(frozen=True)
class LargeAdjustment:
    entry: LedgerEntry
    member: Member
    staff: Staff | None
    store: Store | None


@dataclass(frozen=True)
class PointsHeavyReturn:
    ret: Return
    purchase: Purchase
    member: Member
    staff: Staff | None  # who processed the return at the till
    register: ApiToken | None  # or the cash register that sent it
    complaint_ids: tuple[int, ...]  # complaints about the purchase, in the same stores

    @property
    def points_share(self) -> float:
        """The part of the amount due that points paid, 0 to 1."""
        return self.purchase.redeemed_value_fen / self.purchase.due_fen


@dataclass(frozen=True)
class Signals:
    busy_days: list[BusyDay]
    adjustments: list[LargeAdjustment]
    returns: list[PointsHeavyReturn]
    more: dict[str, bool] = field(default_factory=dict)  # list name -> some rows were left out


def _scoped(query, column, store_ids: list[int] | None):
    return query if store_ids is None else query.where(column.in_(store_ids))


def busy_days(session: Session, *, threshold: int, since: datetime, until: datetime,
              store_ids: list[int] | None, limit: int = LIMIT) -> tuple[list[BusyDay], bool]:
    """Members with more than `threshold` purchases in one local day, newest day first, then the busiest."""
    in_period = [Purchase.created_at >= since, Purchase.created_at < until]
    if store_ids is not None:
        in_period.append(Purchase.store_id.in_(store_ids))
    candidates = (select(Purchase.member_id).where(*in_period).group_by(Purchase.member_id)
                  .having(func.count(Purchase.id) > threshold))
    rows = session.execute(
        select(Purchase.member_id, Purchase.store_id, Purchase.created_at, Purchase.paid_fen)
        .where(*in_period, Purchase.member_id.in_(candidates))
        .order_by(Purchase.member_id, Purchase.created_at, Purchase.id)
    ).all()
    stores = {store.id: store for store in session.scalars(select(Store))}
    zones: dict[int, ZoneInfo] = {}
    days: dict[tuple[int, date], list] = defaultdict(list)
    for member_id, store_id, created_at, paid_fen in rows:
        zone = zones.setdefault(store_id, ZoneInfo(stores[store_id].timezone))
        days[(member_id, created_at.astimezone(zone).date())].append((store_id, created_at, paid_fen))
    busy = {key: bought for key, bought in days.items() if len(bought) > threshold}
    members = {m.id: m for m in session.scalars(select(Member).where(Member.id.in_({m for m, _ in busy})))}
    found = [
        BusyDay(member=members[member_id], day=day, purchases=len(bought), paid_fen=sum(b[2] for b in bought),
                stores=tuple(sorted({stores[b[0]] for b in bought}, key=lambda s: s.code)),
                first_at=bought[0][1], last_at=bought[-1][1])
        for (member_id, day), bought in busy.items()
    ]
    found.sort(key=lambda d: (-d.day.toordinal(), -d.purchases, d.member.id))
    return found[:limit], len(found) > limit


def large_adjustments(session: Session, *, threshold: int, since: datetime, until: datetime,
                      store_ids: list[int] | None, limit: int = LIMIT) -> tuple[list[LargeAdjustment], bool]:
    """Manual adjustments of at least `threshold` points either way, newest first, with who made them."""
    query = _scoped(
        select(LedgerEntry, Member, Staff, Store)
        .join(Member, Member.id == LedgerEntry.member_id)
        .outerjoin(Staff, Staff.id == LedgerEntry.staff_id)
        .outerjoin(Store, Store.id == LedgerEntry.store_id)
        .where(LedgerEntry.kind == LedgerKind.ADJUST.value, LedgerEntry.reason == MANUAL_ADJUSTMENT,
               or_(LedgerEntry.points >= threshold, LedgerEntry.points <= -threshold),
               LedgerEntry.created_at >= since, LedgerEntry.created_at < until),
        LedgerEntry.store_id, store_ids,
    ).order_by(LedgerEntry.created_at.desc(), LedgerEntry.id.desc()).limit(limit + 1)
    found = [LargeAdjustment(entry=entry, member=member, staff=staff, store=store)
             for entry, member, staff, store in session.execute(query)]
    return found[:limit], len(found) > limit


def points_heavy_returns(session: Session, *, percent: int, since: datetime, until: datetime,
                         store_ids: list[int] | None,
                         limit: int = LIMIT) -> tuple[list[PointsHeavyReturn], bool]:
    """Returns (made in the stores) of purchases paid at least `percent` percent with points, newest first.

    The share is redeemed value / (gross - discount), compared in integers: value x 100 >= percent x due."""
    query = _scoped(
        select(Return, Purchase, Member, Staff, ApiToken)
        .join(Purchase, Purchase.id == Return.purchase_id)
        .join(Member, Member.id == Return.member_id)
        .outerjoin(Staff, Staff.id == Return.staff_id)
        .outerjoin(ApiToken, ApiToken.id == Return.api_token_id)
        .where(Return.created_at >= since, Return.created_at < until, Purchase.redeemed_value_fen > 0,
               Purchase.redeemed_value_fen * 100 >= percent * (Purchase.gross_fen - Purchase.discount_fen)),
        Return.store_id, store_ids,
    ).order_by(Return.created_at.desc(), Return.id.desc()).limit(limit + 1)
    rows = session.execute(query).all()
    purchase_ids = {purchase.id for _, purchase, *_ in rows}
    complaints: dict[int, list[int]] = defaultdict(list)
    if purchase_ids:
        about = _scoped(select(Complaint.purchase_id, Complaint.id).where(Complaint.purchase_id.in_(purchase_ids)),
                        Complaint.store_id, store_ids).order_by(Complaint.id)
        for purchase_id, complaint_id in session.execute(about):
            complaints[purchase_id].append(complaint_id)
    found = [PointsHeavyReturn(ret=ret, purchase=purchase, member=member, staff=staff, register=register,
                               complaint_ids=tuple(complaints[purchase.id]))
             for ret, purchase, member, staff, register in rows]
    return found[:limit], len(found) > limit


def signals(session: Session, *, rules: Rules, since: datetime, until: datetime,
            store_ids: list[int] | None) -> Signals:
    """The three lists of signals for a period and the stores, by the thresholds in force."""
    window = dict(since=since, until=until, store_ids=store_ids)
    days, more_days = busy_days(session, threshold=rules.fraud_purchases_per_day, **window)
    adjustments, more_adjustments = large_adjustments(session, threshold=rules.fraud_adjustment_points, **window)
    returns, more_returns = points_heavy_returns(session, percent=rules.fraud_return_points_percent, **window)
    return Signals(busy_days=days, adjustments=adjustments, returns=returns,
                   more={"busy_days": more_days, "adjustments": more_adjustments, "returns": more_returns})
