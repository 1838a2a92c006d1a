"""The points rules a manager can change, with their defaults (PRODUCT.md).

Values live in the settings table only once changed; everything else reads the
defaults here. Rules are read at the start of each transaction, so a change takes
effect from the next transaction on.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields, replace

from sqlalchemy import select
from sqlalchemy.orm import Session

from . import audit
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
    complaint_response_hours: int = 24  # first response due within this long of the complaint
    complaint_resolution_hours: int = 72  # resolution due within this long (of the complaint, or of a reopening)
    complaint_reopen_days: int = 7  # a member may reopen a resolved complaint for this long
    fraud_purchases_per_day: int = 5  # more purchases than this by one member in one local day is a signal
    fraud_adjustment_points: int = 5000  # a manual adjustment of at least this many points (either sign)
    fraud_return_points_percent: int = 50  # returning a purchase at least this percent paid with points
    quiet_hours_start: int = 21  # no marketing message from this hour (store time)...
    quiet_hours_end: int = 9  # ...until this hour
    marketing_monthly_cap: int = 4  # marketing messages a member gets at most in a calendar month

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


class RuleError(ValueError):
    pass


CHOICES = {"shortfall_policy": ("deduct", "negative")}
BOUNDS = {
    "earn_rate_milli": (1, 100_000), "redeem_points_per_yuan": (1, 100_000), "redeem_minimum": (1, 1_000_000),
    "redeem_cap_percent": (1, 100), "purchase_cap_fen": (100, 10_000_000_000), "expiry_days": (0, 3650),
    "referral_bonus": (0, 1_000_000), "guardian_age": (0, 18), "activation_minutes": (5, 1440),
    "tier_retention_days": (1, 3650), "qualifying_days": (1, 3650),
    "complaint_response_hours": (1, 720), "complaint_resolution_hours": (1, 2160), "complaint_reopen_days": (0, 90),
    "quiet_hours_start": (0, 23), "quiet_hours_end": (0, 23), "marketing_monthly_cap": (0, 100),
    "fraud_purchases_per_day": (1, 1000), "fraud_adjustment_points": (1, 1_000_000),
    "fraud_return_points_percent": (1, 100),
}


def parse_rule(name: str, text: str):
    """The typed value of one rule from text, checked against its bounds or choices."""
    if name not in RULE_NAMES:
        raise RuleError(f"unknown rule {name!r}; known: {', '.join(sorted(RULE_NAMES))}")
    default = getattr(DEFAULT_RULES, name)
    if isinstance(default, int):
        if not re.fullmatch(r"-?[0-9]{1,30}", text.strip()):  # more digits than int() reads is no rule
            raise RuleError(f"{name} must be a whole number")
        value = int(text)
        low, high = BOUNDS[name]
        if not low <= value <= high:
            raise RuleError(f"{name} must be between {low} and {high}")
        return value
    value = text.strip()
    if name in CHOICES and value not in CHOICES[name]:
        raise RuleError(f"{name} must be one of: {', '.join(CHOICES[name])}")
    if not value:
        raise RuleError(f"{name} cannot be empty")
    return value


def set_rule(session: Session, name: str, text: str, *, staff, now) -> tuple:
    """Change one rule from the next transaction on, with the before and after in the audit log."""
    value = parse_rule(name, text)
    before = getattr(load_rules(session), name)
    setting = session.get(Setting, name)
    if setting is None:
        setting = Setting(key=name)
        session.add(setting)
    setting.value = json.dumps(value)
    setting.updated_at = now
    setting.updated_by_id = staff.id if staff else None
    audit.record(session, "rules.set", at=now, staff_id=staff.id if staff else None, target=f"rule:{name}",
                 before={name: before}, after={name: value})
    return before, value
