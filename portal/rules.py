"""The points rules a manager can change, with their defaults (PRODUCT.md).

Values live in the settings table only once changed; everything else reads the
defaults here. Rules are read at the start of each transaction, so a change takes
effect from the next transaction on.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace

from sqlalchemy import select
from sqlalchemy.orm import Session

from .models import Setting


@dataclass(frozen=True)
class Rules:
    earn_rate_milli: int = 1000  # points per yuan paid, in thousandths (1000 = 1 point per ¥1)
    redeem_points_per_yuan: int = 100  # 100 points = ¥1.00
    redeem_minimum: int = 100
    redeem_cap_percent: int = 100  # at most this share of the amount due may be paid with points
    purchase_cap_fen: int = 100_000_000  # ¥1,000,000.00
    expiry_days: int = 730  # 0 = points never expire
    shortfall_policy: str = "deduct"  # or "negative"
    referral_bonus: int = 200
    privacy_version: str = "2026-01"
    guardian_age: int = 14
    activation_minutes: int = 30
    tier_retention_days: int = 365
    qualifying_days: int = 365

    def points_value_fen(self, points: int) -> int:
        """What a number of points is worth, in fen (rounded down)."""
        return points * 100 // self.redeem_points_per_yuan

    def points_for_value(self, fen: int) -> int:
        """Points worth at most `fen`: fen x points-per-yuan / 100, rounded down (exact at 100 points = ¥1)."""
        return fen * self.redeem_points_per_yuan // 100


DEFAULT_RULES = Rules()
RULE_NAMES = {f.name for f in fields(Rules)}


def load_rules(session: Session) -> Rules:
    overrides = {}
    for setting in session.scalars(select(Setting).where(Setting.key.in_(RULE_NAMES))):
        overrides[setting.key] = json.loads(setting.value)
    return replace(DEFAULT_RULES, **overrides) if overrides else DEFAULT_RULES
