"""Tiers: qualifying spend, the tier it earns, and what the next tier needs."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from flask_babel import lazy_gettext as _l
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from . import audit
from .ledger import lock_member
from .models import Member, Purchase, Tier, TierChange
from .refusals import Refusal


def all_tiers(session: Session) -> list[Tier]:
    """Tiers from the lowest threshold to the highest."""
    return list(session.scalars(select(Tier).order_by(Tier.threshold_fen, Tier.id)))


def qualifying_spend(session: Session, member_id: int, now: datetime, days: int = 365) -> int:
    """Cash paid in the trailing `days`, net of refunds, in fen. Points-paid amounts do not count."""
    since = now - timedelta(days=days)
    return int(session.scalar(
        select(func.coalesce(func.sum(Purchase.paid_fen - Purchase.refunded_fen), 0)).where(
            Purchase.member_id == member_id, Purchase.created_at > since
        )
    ))


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


@dataclass(frozen=True)
class Keeping:
    held_until: datetime | None  # None for the lowest tier, which nobody loses
    spend_needed_fen: int  # more net spend needed in the window to keep the tier past held_until


def keeping(tiers: list[Tier], member: Member, spend_fen: int, retention_days: int) -> Keeping:
    """What keeps the member's tier: it is theirs until `held_until`; after that the daily review keeps
    it only if the trailing spend still reaches its threshold."""
    if member.tier.threshold_fen <= tiers[0].threshold_fen:
        return Keeping(None, 0)
    return Keeping(member.tier_since + timedelta(days=retention_days),
                   max(0, member.tier.threshold_fen - spend_fen))


def progress(tiers: list[Tier], current: Tier, spend_fen: int) -> TierProgress:
    higher = [tier for tier in tiers if tier.threshold_fen > current.threshold_fen]
    next_tier = higher[0] if higher else None
    needed = max(0, next_tier.threshold_fen - spend_fen) if next_tier else 0
    return TierProgress(current, spend_fen, next_tier, needed)


def _change_tier(session: Session, member: Member, to: Tier, *, at: datetime, reason: str, spend_fen: int,
                 purchase_id: int | None = None, return_id: int | None = None,
                 staff_id: int | None = None) -> TierChange:
    """Move the member to another tier and keep the change, with its reason, for their history."""
    change = TierChange(
        member_id=member.id, from_tier_id=member.tier_id, to_tier_id=to.id, reason=reason,
        purchase_id=purchase_id, return_id=return_id, staff_id=staff_id,
        qualifying_spend_fen=spend_fen, created_at=at,
    )
    member.tier = to
    member.tier_since = at
    session.add(change)
    return change


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
    return _change_tier(session, member, earned, at=at, reason=reason, spend_fen=spend_fen,
                        purchase_id=purchase_id, staff_id=staff_id)


def downgrade_after_return(
    session: Session, member: Member, tiers: list[Tier], spend_before: int, spend_after: int, *,
    at: datetime, return_id: int, staff_id: int | None = None,
) -> TierChange | None:
    """A return that drops the spend below the held tier's threshold moves the member down at once
    (buy big, reach Gold, return it: no Gold). A tier held only by the 12 months' grace is left to the review."""
    threshold = member.tier.threshold_fen
    if not (spend_after < threshold <= spend_before):
        return None
    return _change_tier(session, member, tier_for_spend(tiers, spend_after), at=at, reason="return",
                        spend_fen=spend_after, return_id=return_id, staff_id=staff_id)


def review(session: Session, member: Member, tiers: list[Tier], *, now: datetime,
           retention_days: int, qualifying_days: int) -> TierChange | None:
    """The daily review: once the tier has been held for its 12 months, move the member down to
    what the trailing net spend earns. Never up (purchases do that) and never before the 12 months."""
    if member.tier_since > now - timedelta(days=retention_days):
        return None
    spend = qualifying_spend(session, member.id, now, qualifying_days)
    earned = tier_for_spend(tiers, spend)
    if earned.threshold_fen >= member.tier.threshold_fen:
        return None
    return _change_tier(session, member, earned, at=now, reason="review", spend_fen=spend)


def members_due_for_review(session: Session, now: datetime, retention_days: int, after_id: int,
                           limit: int) -> list[int]:
    """Members above the lowest tier whose tier is older than the retention period."""
    lowest = session.scalar(select(Tier.id).order_by(Tier.threshold_fen, Tier.id).limit(1))
    return list(session.scalars(
        select(Member.id)
        .where(Member.tier_id != lowest, Member.tier_since <= now - timedelta(days=retention_days),
               Member.deleted_at.is_(None), Member.id > after_id)
        .order_by(Member.id).limit(limit)
    ))


def review_all(session: Session, *, now: datetime, retention_days: int, qualifying_days: int,
               batch: int = 500) -> int:
    """Run the review over every member due for it. Returns the number moved down."""
    moved, after_id = 0, 0
    levels = all_tiers(session)
    while True:
        ids = members_due_for_review(session, now, retention_days, after_id, batch)
        if not ids:
            return moved
        for member_id in ids:
            member = lock_member(session, member_id)
            if review(session, member, levels, now=now, retention_days=retention_days,
                      qualifying_days=qualifying_days):
                moved += 1
            session.commit()  # one member at a time: a till waits for no more than that
        after_id = ids[-1]


# --- a manager's settings for the tiers -----------------------------------------------------------------

TierSettingsError = Refusal  # a tier setting refused; `field` is e.g. "silver-threshold"


@dataclass(frozen=True)
class TierSetting:
    code: str
    name_zh: str
    name_en: str
    threshold_fen: int
    multiplier_milli: int
    discount_bp: int
    birthday_bonus: int


MAX_MULTIPLIER_MILLI = 10_000  # 10x
MAX_DISCOUNT_BP = 5_000  # 50%
MAX_BIRTHDAY_BONUS = 1_000_000


def check_tier_settings(current: list[Tier], wanted: list[TierSetting]) -> None:
    """Refuse settings that would break the tiers: every tier given once, names in both languages,
    thresholds strictly ascending from ¥0, multipliers from 1x to 10x, discounts from 0 to 50%."""
    if sorted(t.code for t in current) != sorted(w.code for w in wanted):
        raise TierSettingsError("tiers", _l("Give the settings of every tier, once each."))
    ordered = sorted(wanted, key=lambda w: w.threshold_fen)
    for position, tier in enumerate(ordered):
        for name_field in ("name_zh", "name_en"):
            name = getattr(tier, name_field).strip()
            if not name:
                raise TierSettingsError(f"{tier.code}-{name_field}", _l("Give the tier a name."))
            if len(name) > 50:
                raise TierSettingsError(f"{tier.code}-{name_field}", _l("Use at most %(count)s characters.", count=50))
        if position == 0 and tier.threshold_fen != 0:
            raise TierSettingsError(f"{tier.code}-threshold", _l("The lowest tier starts at ¥0."))
        if position and tier.threshold_fen == ordered[position - 1].threshold_fen:
            raise TierSettingsError(f"{tier.code}-threshold", _l("Each tier needs a higher spend than the one below."))
        if not 1000 <= tier.multiplier_milli <= MAX_MULTIPLIER_MILLI:
            raise TierSettingsError(f"{tier.code}-multiplier", _l("The points multiplier must be from 1 to 10."))
        if not 0 <= tier.discount_bp <= MAX_DISCOUNT_BP:
            raise TierSettingsError(f"{tier.code}-discount", _l("The discount must be from 0 to 50 percent."))
        if not 0 <= tier.birthday_bonus <= MAX_BIRTHDAY_BONUS:
            raise TierSettingsError(f"{tier.code}-birthday_bonus",
                                    _l("The birthday bonus must be from 0 to %(limit)s points.",
                                       limit=f"{MAX_BIRTHDAY_BONUS:,}"))
    old_order = [t.code for t in sorted(current, key=lambda t: (t.threshold_fen, t.id))]
    moved = next((w for w, code in zip(ordered, old_order) if w.code != code), None)
    if moved is not None:  # the first tier whose new threshold puts it out of its place
        raise TierSettingsError(f"{moved.code}-threshold",
                                _l("The tiers must keep their order: a higher tier needs a higher spend."))


def update_tiers(session: Session, wanted: list[TierSetting], *, staff_id: int | None, now: datetime,
                 ip: str | None = None) -> list[str]:
    """Apply checked tier settings; each changed tier is audited with its before and after. Members move
    between tiers only at their next purchase, return or review, like any other rule change.
    Returns the codes of the tiers that changed."""
    current = all_tiers(session)
    check_tier_settings(current, wanted)
    fields = ("name_zh", "name_en", "threshold_fen", "multiplier_milli", "discount_bp", "birthday_bonus")
    changed = []
    for setting in wanted:
        tier = next(t for t in current if t.code == setting.code)
        before = {field: getattr(tier, field) for field in fields}
        after = {field: (getattr(setting, field).strip() if field.startswith("name") else getattr(setting, field))
                 for field in fields}
        if before == after:
            continue
        for field, value in after.items():
            setattr(tier, field, value)
        audit.record(session, "tiers.set", at=now, staff_id=staff_id, target=f"tier:{tier.code}",
                     before={k: v for k, v in before.items() if before[k] != after[k]},
                     after={k: v for k, v in after.items() if before[k] != after[k]}, ip=ip)
        changed.append(tier.code)
    return changed
