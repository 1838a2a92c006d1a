"""A manager's tier settings (issue 9, the service part): validated, audited, and in force from the next
transaction. Every test runs on SQLite and on PostgreSQL."""
from __future__ import annotations

import dataclasses
import json
import uuid
from datetime import datetime, timezone

import pytest
from flask_babel import force_locale
from sqlalchemy import select

from portal import checkout, tiers
from portal.extensions import db
from portal.models import AuditLog, Tier
from portal.rules import load_rules

from . import factories

NOW = datetime(2026, 5, 4, 2, 0, tzinfo=timezone.utc)


def settings() -> list[tiers.TierSetting]:
    """The tiers as they are, as settings a manager would send back."""
    return [tiers.TierSetting(t.code, t.name_zh, t.name_en, t.threshold_fen, t.multiplier_milli, t.discount_bp,
                              t.birthday_bonus) for t in tiers.all_tiers(db.session)]


def changed(wanted: list[tiers.TierSetting], code: str, **values) -> list[tiers.TierSetting]:
    return [dataclasses.replace(s, **values) if s.code == code else s for s in wanted]


def test_the_default_tiers_pass_their_own_checks(ctx):
    tiers.check_tier_settings(tiers.all_tiers(db.session), settings())


def test_a_change_is_applied_and_audited_with_before_and_after(ctx):
    wanted = changed(settings(), "silver", threshold_fen=50_000, discount_bp=300, name_en="Silver Plus")
    assert tiers.update_tiers(db.session, wanted, staff_id=None, now=NOW, ip="10.0.0.9") == ["silver"]
    db.session.commit()
    silver = db.session.scalars(select(Tier).where(Tier.code == "silver")).one()
    assert (silver.threshold_fen, silver.discount_bp, silver.name_en) == (50_000, 300, "Silver Plus")
    row = db.session.scalars(select(AuditLog).where(AuditLog.action == "tiers.set")).one()
    assert row.target == "tier:silver" and row.ip == "10.0.0.9"
    assert json.loads(row.before) == {"threshold_fen": 100_000, "discount_bp": 200, "name_en": "Silver"}
    assert json.loads(row.after) == {"threshold_fen": 50_000, "discount_bp": 300, "name_en": "Silver Plus"}


def test_sending_the_tiers_unchanged_changes_and_audits_nothing(ctx):
    assert tiers.update_tiers(db.session, settings(), staff_id=None, now=NOW) == []
    assert db.session.scalars(select(AuditLog)).all() == []


def test_a_lower_threshold_moves_a_member_up_at_their_next_purchase(ctx):
    member = factories.member(now=NOW)
    first = factories.purchase(member, 60_000, now=NOW)  # ¥600: not silver under the default ¥1,000
    assert first.tier_change is None and member.tier.code == "member"
    tiers.update_tiers(db.session, changed(settings(), "silver", threshold_fen=50_000), staff_id=None, now=NOW)
    db.session.commit()
    second = checkout.record_purchase(
        db.session, member_id=member.id, store=factories.store(), staff=None, gross_fen=1_000, points_to_redeem=0,
        idempotency_key=uuid.uuid4().hex, receipt_number=None, rules=load_rules(db.session), now=NOW,
    )
    assert second.tier_change is not None and member.tier.code == "silver"


@pytest.mark.parametrize(("code", "values", "field", "message"), [
    ("member", {"threshold_fen": 100}, "member-threshold", "The lowest tier starts at ¥0."),
    ("gold", {"threshold_fen": 100_000}, "gold-threshold", "Each tier needs a higher spend than the one below."),
    ("gold", {"threshold_fen": 50_000}, "gold-threshold",
     "The tiers must keep their order: a higher tier needs a higher spend."),
    ("silver", {"multiplier_milli": 900}, "silver-multiplier", "The points multiplier must be from 1 to 10."),
    ("silver", {"multiplier_milli": 10_001}, "silver-multiplier", "The points multiplier must be from 1 to 10."),
    ("gold", {"discount_bp": 5_001}, "gold-discount", "The discount must be from 0 to 50 percent."),
    ("gold", {"discount_bp": -1}, "gold-discount", "The discount must be from 0 to 50 percent."),
    ("diamond", {"birthday_bonus": -5}, "diamond-birthday_bonus",
     "The birthday bonus must be from 0 to 1,000,000 points."),
    ("diamond", {"name_zh": "  "}, "diamond-name_zh", "Give the tier a name."),
    ("diamond", {"name_en": "x" * 51}, "diamond-name_en", "Use at most 50 characters."),
])
def test_settings_that_would_break_the_tiers_are_refused_and_change_nothing(ctx, code, values, field, message):
    before = settings()
    with pytest.raises(tiers.TierSettingsError) as refused:
        tiers.update_tiers(db.session, changed(before, code, **values), staff_id=None, now=NOW)
    assert refused.value.field == field
    with force_locale("en"):
        assert str(refused.value.message) == message
    db.session.rollback()
    assert settings() == before
    assert db.session.scalars(select(AuditLog)).all() == []


def test_every_tier_must_be_given_once(ctx):
    wanted = settings()
    with pytest.raises(tiers.TierSettingsError) as refused:
        tiers.update_tiers(db.session, wanted[:-1], staff_id=None, now=NOW)
    assert refused.value.field == "tiers"
    with pytest.raises(tiers.TierSettingsError):
        tiers.update_tiers(db.session, wanted + wanted[:1], staff_id=None, now=NOW)
