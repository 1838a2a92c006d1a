"""Manual points adjustments (managers only, with a reason, audited, never to one's own account)
and changing a points rule with `flask set-rule` (validated, audited)."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from portal import ledger, points, rules
from portal.extensions import db
from portal.models import AuditLog, LedgerEntry, LotUse, Member, PointLot, Setting, Staff
from portal.rules import DEFAULT_RULES, load_rules

from . import factories

UTC = timezone.utc
NOW = datetime(2026, 5, 20, 2, 0, tzinfo=UTC)  # 10:00 on 20 May in Shanghai
OWN_PHONE = "+8613812345678"


def adjust(staff: Staff, member: Member, amount: int, reason: str = "lost receipt, purchase of 12 May",
           now: datetime = NOW) -> LedgerEntry:
    return points.adjust(db.session, member_id=member.id, staff=staff, store=factories.store(), points=amount,
                         reason=reason, rules=load_rules(db.session), now=now)


def adjustments_audited() -> list[AuditLog]:
    return list(db.session.scalars(select(AuditLog).where(AuditLog.action == "points.adjust").order_by(AuditLog.id)))


def assert_books(member: Member) -> None:
    db.session.refresh(member)
    assert member.points_balance == ledger.ledger_sum(db.session, member.id)
    remaining = db.session.scalar(
        select(func.coalesce(func.sum(PointLot.remaining), 0)).where(PointLot.member_id == member.id)
    )
    assert remaining == max(member.points_balance, 0)


@pytest.mark.parametrize("role", ["manager", "admin"])
def test_a_manager_credits_points_with_a_reason_in_the_ledger_and_the_audit_log(ctx, role):
    manager = factories.staff(role=role)
    m = factories.member()
    entry = adjust(manager, m, 500, reason="  goodwill: broken bag  ")
    db.session.commit()

    assert (entry.kind, entry.points, entry.balance_after) == ("adjust", 500, 500)
    assert (entry.note, entry.staff_id, entry.store_id) == ("goodwill: broken bag", manager.id, factories.store().id)
    assert entry.expires_at == datetime(2028, 5, 19, 16, 0, tzinfo=UTC)  # end of 19 May 2028, store time
    lot = db.session.scalars(select(PointLot).where(PointLot.entry_id == entry.id)).one()
    assert (lot.points, lot.remaining, lot.expires_at) == (500, 500, entry.expires_at)
    assert m.points_balance == 500

    [row] = adjustments_audited()
    assert (row.staff_id, row.store_id, row.target) == (manager.id, factories.store().id, f"member:{m.card_number}")
    assert json.loads(row.before) == {"balance": 0}
    assert json.loads(row.after) == {"balance": 500, "points": 500, "reason": "goodwill: broken bag"}
    assert row.created_at == NOW
    assert_books(m)


def test_a_cashier_cannot_adjust_points(ctx):
    cashier = factories.staff(role="cashier")
    m = factories.member()
    db.session.commit()
    for amount in (500, -1):
        with pytest.raises(points.AdjustmentError) as refused:
            adjust(cashier, m, amount)
        db.session.rollback()
        assert refused.value.field is None
    assert m.points_balance == 0
    assert adjustments_audited() == []
    assert db.session.scalar(select(func.count()).select_from(LedgerEntry)) == 0


@pytest.mark.parametrize(
    ("amount", "reason", "field"),
    [
        (500, "", "reason"),
        (500, "   ", "reason"),
        (500, None, "reason"),
        (0, "typo", "points"),
        (1_000_001, "too generous", "points"),
        (-1_000_001, "too harsh", "points"),
        (-301, "more than there is", "points"),
    ],
)
def test_refused_adjustments_change_nothing(ctx, amount, reason, field):
    manager = factories.staff(role="manager")
    m = factories.member()
    adjust(manager, m, 300, now=NOW - timedelta(days=1))
    db.session.commit()
    entries = db.session.scalar(select(func.count()).select_from(LedgerEntry))

    with pytest.raises(points.AdjustmentError) as refused:
        adjust(manager, m, amount, reason=reason)
    db.session.rollback()
    assert refused.value.field == field
    assert m.points_balance == 300
    assert db.session.scalar(select(func.count()).select_from(LedgerEntry)) == entries
    assert len(adjustments_audited()) == 1
    assert_books(m)


def test_a_debit_beyond_the_balance_says_what_the_member_has(ctx):
    manager = factories.staff(role="manager")
    m = factories.member()
    adjust(manager, m, 300, now=NOW - timedelta(days=1))
    db.session.commit()
    with pytest.raises(points.AdjustmentError) as refused:
        adjust(manager, m, -301)
    db.session.rollback()
    assert refused.value.field == "points" and "300" in str(refused.value.message)


def test_a_debit_within_the_balance_takes_the_soonest_expiring_points(ctx):
    manager = factories.staff(role="manager")
    m = factories.member()
    long_lived = adjust(manager, m, 300, now=NOW - timedelta(days=2))  # expires in 730 days
    rules.set_rule(db.session, "expiry_days", "30", staff=manager, now=NOW - timedelta(days=1))
    short_lived = adjust(manager, m, 200, now=NOW - timedelta(days=1))  # expires in 30 days
    db.session.commit()

    debit = adjust(manager, m, -250, reason="points given twice by mistake")
    db.session.commit()
    assert (debit.kind, debit.points, debit.balance_after, debit.note) == (
        "adjust", -250, 250, "points given twice by mistake")
    used = db.session.execute(
        select(PointLot.entry_id, LotUse.points).join(PointLot, LotUse.lot_id == PointLot.id)
        .where(LotUse.entry_id == debit.id).order_by(LotUse.id)
    ).all()
    assert [tuple(row) for row in used] == [(short_lived.id, 200), (long_lived.id, 50)]
    last = adjustments_audited()[-1]
    assert json.loads(last.before) == {"balance": 500}
    assert json.loads(last.after)["balance"] == 250 and json.loads(last.after)["points"] == -250
    assert_books(m)


def test_a_debit_of_exactly_the_balance_leaves_zero(ctx):
    manager = factories.staff(role="manager")
    m = factories.member()
    adjust(manager, m, 300, now=NOW - timedelta(days=1))
    adjust(manager, m, -300)
    db.session.commit()
    assert m.points_balance == 0
    assert_books(m)


def test_a_debit_cannot_take_points_that_have_already_expired(ctx):
    """The expiry is posted first, so the debit is measured against what is really left."""
    manager = factories.staff(role="manager")
    m = factories.member()
    adjust(manager, m, 300, now=NOW - timedelta(days=731))  # usable to the end of yesterday
    adjust(manager, m, 100, now=NOW - timedelta(days=1))
    db.session.commit()
    assert m.points_balance == 400 and ledger.available(db.session, m, NOW) == 100
    db.session.commit()
    with pytest.raises(points.AdjustmentError) as refused:
        adjust(manager, m, -200)
    db.session.rollback()
    assert refused.value.field == "points" and "100" in str(refused.value.message)
    entry = adjust(manager, m, -100)
    db.session.commit()
    assert entry.balance_after == 0
    assert [e.points for e in db.session.scalars(select(LedgerEntry).where(LedgerEntry.kind == "expire"))] == [-300]
    assert_books(m)


def test_the_same_adjustment_key_twice_posts_once(ctx):
    manager = factories.staff(role="manager")
    m, other = factories.member(), factories.member()
    first = points.adjust(db.session, member_id=m.id, staff=manager, store=factories.store(), points=500,
                          reason="goodwill", rules=load_rules(db.session), now=NOW, idempotency_key="adjust-key-0001")
    db.session.commit()
    again = points.adjust(db.session, member_id=m.id, staff=manager, store=factories.store(), points=500,
                          reason="goodwill", rules=load_rules(db.session), now=NOW, idempotency_key="adjust-key-0001")
    db.session.commit()
    assert again.id == first.id
    assert m.points_balance == 500 and len(adjustments_audited()) == 1

    with pytest.raises(points.AdjustmentError) as refused:
        points.adjust(db.session, member_id=other.id, staff=manager, store=factories.store(), points=500,
                      reason="goodwill", rules=load_rules(db.session), now=NOW, idempotency_key="adjust-key-0001")
    db.session.rollback()
    assert refused.value.field is None and other.points_balance == 0


def test_no_one_credits_an_account_with_their_own_phone(ctx):
    manager = factories.staff(role="manager", phone=OWN_PHONE)
    own = factories.member(phone=OWN_PHONE)
    someone_else = factories.member()
    other_manager = factories.staff(role="manager")
    adjust(other_manager, own, 500, now=NOW - timedelta(days=1))
    db.session.commit()

    with pytest.raises(points.AdjustmentError) as refused:
        adjust(manager, own, 100)
    db.session.rollback()
    assert refused.value.field == "points"
    assert own.points_balance == 500 and len(adjustments_audited()) == 1

    debit = adjust(manager, own, -100, reason="points given twice by mistake")
    credit = adjust(manager, someone_else, 100)
    db.session.commit()
    assert (debit.points, own.points_balance) == (-100, 400)
    assert (credit.points, someone_else.points_balance) == (100, 100)
    assert len(adjustments_audited()) == 3


def test_an_admin_created_with_their_phone_cannot_credit_it_however_it_was_typed(app, runner):
    result = runner.invoke(args=["create-admin", "--username", "boss", "--password", "a long secret 1",
                                 "--phone", "138 1234 5678"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        admin = db.session.scalars(select(Staff).where(Staff.username == "boss")).one()
        assert admin.phone == OWN_PHONE
        own = factories.member(phone=OWN_PHONE)
        db.session.commit()
        with pytest.raises(points.AdjustmentError) as refused:
            adjust(admin, own, 100)
        db.session.rollback()
        assert refused.value.field == "points"
        assert own.points_balance == 0


# --- set-rule ------------------------------------------------------------------------------------------


def rule_changes() -> list[AuditLog]:
    return list(db.session.scalars(select(AuditLog).where(AuditLog.action == "rules.set").order_by(AuditLog.id)))


@pytest.mark.parametrize(
    ("name", "text", "before", "after"),
    [
        ("shortfall_policy", "negative", "deduct", "negative"),
        ("expiry_days", "365", 730, 365),
        ("expiry_days", "0", 730, 0),
        ("redeem_minimum", "200", 100, 200),
    ],
)
def test_set_rule_changes_the_rule_and_audits_it(app, runner, name, text, before, after):
    result = runner.invoke(args=["set-rule", name, text])
    assert result.exit_code == 0, result.output
    assert f"{name}: {before!r} -> {after!r}" in result.output
    with app.app_context():
        assert getattr(load_rules(db.session), name) == after
        [row] = rule_changes()
        assert row.target == f"rule:{name}"
        assert json.loads(row.before) == {name: before}
        assert json.loads(row.after) == {name: after}


def test_a_changed_rule_applies_to_the_next_purchase(app, runner):
    assert runner.invoke(args=["set-rule", "earn_rate_milli", "2000"]).exit_code == 0  # 2 points per ¥1
    with app.app_context():
        sale = factories.purchase(factories.member(), 10_000).purchase
        db.session.commit()
        assert sale.points_earned == 200


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("no_such_rule", "5"),
        ("Expiry_Days", "30"),
        ("shortfall_policy", "maybe"),
        ("shortfall_policy", ""),
        ("expiry_days", "-1"),
        ("expiry_days", "3651"),
        ("expiry_days", "thirty"),
        ("expiry_days", "30.5"),
        ("expiry_days", ""),
        ("redeem_cap_percent", "0"),
        ("redeem_cap_percent", "101"),
        ("earn_rate_milli", "0"),
        ("redeem_points_per_yuan", "0"),
        ("privacy_version", "   "),
        ("expiry_days", "1_000"),
        ("expiry_days", "٣٠"),
        ("expiry_days", "+30"),
    ],
)
def test_set_rule_refuses_unknown_rules_and_bad_values(app, runner, name, text):
    result = runner.invoke(args=["set-rule", name, text])
    assert result.exit_code != 0
    assert "Error" in result.output
    with app.app_context():
        assert load_rules(db.session) == DEFAULT_RULES
        assert db.session.scalar(select(func.count()).select_from(Setting)) == 0
        assert rule_changes() == []


def test_set_rule_needs_both_a_name_and_a_value(runner):
    assert runner.invoke(args=["set-rule", "expiry_days"]).exit_code != 0


@pytest.mark.parametrize("command", ["expire-points", "review-tiers", "birthday-bonus"])
def test_a_daily_command_with_an_unreadable_time_says_so(runner, command):
    result = runner.invoke(args=[command, "--now", "yesterday"])
    assert result.exit_code == 2
    assert "is not an ISO 8601 time" in result.output
