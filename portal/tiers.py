"""Tiers: qualifying spend, the tier it earns, and what the next tier needs."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .models import Member, Purchase, Tier, TierChange


def all_tiers(session: Session) -> list[Tier]:
    """Tiers from the lowest threshold to the highest."""
    return list(session.scalars(select(Tier).order_by(Tier.threshold_fen, Tier.id)))


def qualifying_spend(session: Session, member_id: int, now: datetime, days: int = 365) -> int:
    """Cash paid in the trailing `days`, net of refunds, in fen. Points-paid amounts do not count."""
    since = now - timedelta(days=days)
    return session.scalar(
        select(func.coalesce(func.sum(Purchase.paid_fen - Purchase.refunded_fen), 0)).where(
            Purchase.member_id == member_id, Purchase.created_at > since
        )
    )


def tier_for_spend(tiers: list[Tier], spend_fen: int) -> Tier:
    """The highest tier whose threshold the spend reaches."""
    reached = [tier for tier in tiers if tier.threshold_fen <= spend_fen]
    return reached[-1] if reached else tiers[0]


@dataclass(frozen=True)
class TierProgress:
    tier: Tier
    spend_fen: int
    next_tier: Tier | None
    needed_fen: int  # 0 when there is no next tier

    @property
    def percent(self) -> int:
        if not self.next_tier:
            return 100
        floor = self.tier.threshold_fen
        span = self.next_tier.threshold_fen - floor
        return max(0, min(100, (self.spend_fen - floor) * 100 // span)) if span > 0 else 100


def progress(tiers: list[Tier], current: Tier, spend_fen: int) -> TierProgress:
    higher = [tier for tier in tiers if tier.threshold_fen > current.threshold_fen]
    next_tier = higher[0] if higher else None
    needed = max(0, next_tier.threshold_fen - spend_fen) if next_tier else 0
    return TierProgress(current, spend_fen, next_tier, needed)


def upgrade_if_reached(
    session: Session,
    member: Member,
    tiers: list[Tier],
    spend_fen: int,
    *,
    at: datetime,
    reason: str,
    purchase_id: int | None = None,
    staff_id: int | None = None,
) -> TierChange | None:
    """Move the member up when the spend reaches a higher tier; never down (that is for returns and reviews)."""
    earned = tier_for_spend(tiers, spend_fen)
    if earned.threshold_fen <= member.tier.threshold_fen:
        return None
    change = TierChange(
        member_id=member.id,
        from_tier_id=member.tier_id,
        to_tier_id=earned.id,
        reason=reason,
        purchase_id=purchase_id,
        staff_id=staff_id,
        qualifying_spend_fen=spend_fen,
        created_at=at,
    )
    member.tier = earned
    member.tier_since = at
    session.add(change)
    return change
