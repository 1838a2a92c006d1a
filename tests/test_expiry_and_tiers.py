"""The daily jobs and the rules behind them: points expiry (worked example 5), redemption from the
lots that expire first, the yearly tier review and the birthday bonus. Jobs run through their
flask commands with --now, as cron would run them on a missed day.
"""
from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from portal import checkout, ledger, rules, tiers
from portal.extensions import db
from portal.models import LedgerEntry, LotUse, Member, PointLot, Tier, TierChange
from portal.rules import load_rules

from . import factories

UTC = timezone.utc


def run(runner, *args: str) -> int:
    """Run a command and return the first number it reports."""
    result = runner.invoke(args=list(args))
    assert result.exit_code == 0, result.output
    return int(re.search(r"\d+", result.output).group())


def member_by_id(member_id: int) -> Member:
    return db.session.get(Member, member_id)


def kinds(member_id: int, kind: str) -> list[LedgerEntry]:
    return list(db.session.scalars(
        select(LedgerEntry).where(LedgerEntry.member_id == member_id, LedgerEntry.kind == kind).order_by(LedgerEntry.id)
    ))


def assert_books(member: Member) -> None:
    assert member.points_balance == ledger.ledger_sum(db.session, member.id)
    remaining = db.session.scalar(
        select(func.coalesce(func.sum(PointLot.remaining), 0)).where(PointLot.member_id == member.id)
    )
    assert remaining == max(member.points_balance, 0)


# --- Expiry --------------------------------------------------------------------------------------------

EARNED = datetime(2024, 3, 9, 16, 30, tzinfo=UTC)  # 00:30 on 10 March 2024 in Shanghai (9 March in UTC)


def test_worked_example_5_points_expire_after_the_end_of_the_730th_day(app, runner):
    with app.app_context():
        m = factories.member(now=EARNED)
        factories.purchase(m, 50_000, now=EARNED)
        db.session.commit()
        member_id = m.id
        last_minute = datetime(2026, 3, 10, 15, 59, 59, tzinfo=UTC)  # 23:59:59 on 10 March 2026
        assert ledger.available(db.session, m, last_minute) == 500
        assert ledger.available(db.session, m, datetime(2026, 3, 10, 16, 0, tzinfo=UTC)) == 0

    assert run(runner, "expire-points", "--now", "2026-03-10T15:59:00Z") == 0
    with app.app_context():
        assert member_by_id(member_id).points_balance == 500
        assert kinds(member_id, "expire") == []

    assert run(runner, "expire-points", "--now", "2026-03-10T16:00:00Z") == 1  # 00:00 on 11 March
    with app.app_context():
        m = member_by_id(member_id)
        [expiry] = kinds(member_id, "expire")
        assert (expiry.points, expiry.balance_after, expiry.reason) == (-500, 0, "expiry")
        assert expiry.created_at == datetime(2026, 3, 10, 16, 0, tzinfo=UTC)
        assert m.points_balance == 0
        assert_books(m)

    assert run(runner, "expire-points", "--now", "2026-03-10T16:00:00Z") == 0
    assert run(runner, "expire-points", "--now", "2026-03-12T02:00:00Z") == 0
    with app.app_context():
        assert len(kinds(member_id, "expire")) == 1
        assert member_by_id(member_id).points_balance == 0


def test_the_expiry_job_posts_only_what_is_left_of_each_lot_for_every_member(app, runner):
    with app.app_context():
        spender, keeper, fresh = (factories.member(now=EARNED) for _ in range(3))
        for m in (spender, keeper):
            factories.purchase(m, 50_000, now=EARNED)
        factories.purchase(spender, 10_000, points=300, now=datetime(2025, 1, 1, tzinfo=UTC))  # earns 97
        factories.purchase(fresh, 50_000, now=datetime(2025, 6, 1, tzinfo=UTC))
        db.session.commit()
        ids = spender.id, keeper.id, fresh.id

    assert run(runner, "expire-points", "--now", "2026-03-11T02:00:00Z") == 2
    with app.app_context():
        spender, keeper, fresh = (member_by_id(i) for i in ids)
        assert [e.points for e in kinds(spender.id, "expire")] == [-200]
        assert [e.points for e in kinds(keeper.id, "expire")] == [-500]
        assert kinds(fresh.id, "expire") == []
        assert (spender.points_balance, keeper.points_balance, fresh.points_balance) == (97, 0, 500)
        for m in (spender, keeper, fresh):
            assert_books(m)


def test_redemption_uses_the_lots_that_expire_first(ctx):
    t0 = datetime(2026, 1, 5, 2, 0, tzinfo=UTC)
    m = factories.member(now=t0)
    long_lived = factories.purchase(m, 50_000, now=t0).purchase  # 500, expires in 730 days
    rules.set_rule(db.session, "expiry_days", "100", staff=None, now=t0)
    short_lived = factories.purchase(m, 30_000, now=t0 + timedelta(days=1)).purchase  # 300, in 100 days
    rules.set_rule(db.session, "expiry_days", "730", staff=None, now=t0 + timedelta(days=1))
    db.session.commit()

    def lot_of(purchase):
        earn = db.session.scalars(
            select(LedgerEntry).where(LedgerEntry.purchase_id == purchase.id, LedgerEntry.kind == "earn")
        ).one()
        return db.session.scalars(select(PointLot).where(PointLot.entry_id == earn.id)).one()

    long_lot, short_lot = lot_of(long_lived), lot_of(short_lived)
    assert short_lot.expires_at < long_lot.expires_at and short_lot.id > long_lot.id

    first = factories.purchase(m, 10_000, points=200, now=t0 + timedelta(days=2)).purchase
    db.session.commit()
    db.session.refresh(long_lot), db.session.refresh(short_lot)
    assert (short_lot.remaining, long_lot.remaining) == (100, 500)

    second = factories.purchase(m, 10_000, points=250, now=t0 + timedelta(days=3)).purchase
    db.session.commit()
    db.session.refresh(long_lot), db.session.refresh(short_lot)
    assert (short_lot.remaining, long_lot.remaining) == (0, 350)
    used = db.session.execute(
        select(LotUse.lot_id, LotUse.points).join(LedgerEntry, LotUse.entry_id == LedgerEntry.id)
        .where(LedgerEntry.purchase_id == second.id).order_by(LotUse.id)
    ).all()
    assert [tuple(row) for row in used] == [(short_lot.id, 100), (long_lot.id, 150)]
    assert first.points_redeemed + second.points_redeemed == 450
    assert_books(m)


def test_expired_points_not_yet_posted_cannot_be_redeemed(ctx):
    m = factories.member(now=EARNED)
    factories.purchase(m, 50_000, now=EARNED)  # 500, usable to 10 March 2026
    factories.purchase(m, 20_000, now=datetime(2025, 6, 1, tzinfo=UTC))  # 200
    db.session.commit()
    at_the_till = datetime(2026, 3, 11, 2, 0, tzinfo=UTC)  # the daily job has not run yet
    assert m.points_balance == 700
    assert ledger.available(db.session, m, at_the_till) == 200

    with pytest.raises(checkout.CheckoutError) as refused:
        factories.purchase(m, 10_000, points=300, now=at_the_till)
    assert refused.value.field == "points"
    assert "200" in str(refused.value.message) and "700" not in str(refused.value.message)
    db.session.rollback()
    assert m.points_balance == 700 and kinds(m.id, "expire") == []

    sale = factories.purchase(m, 10_000, points=200, now=at_the_till).purchase
    db.session.commit()
    assert (sale.points_redeemed, sale.paid_fen, sale.points_earned) == (200, 9800, 98)
    assert [e.points for e in kinds(m.id, "expire")] == [-500]
    assert m.points_balance == 98
    assert_books(m)


# --- Tier review ---------------------------------------------------------------------------------------

T0 = datetime(2025, 3, 1, 2, 0, tzinfo=UTC)


def test_review_moves_a_member_down_only_after_12_months(app, runner):
    with app.app_context():
        m = factories.member(now=T0 - timedelta(days=310))
        factories.purchase(m, 300_000, now=T0 - timedelta(days=300))  # ¥3,000: silver
        factories.purchase(m, 260_000, now=T0)  # silver terms, paid ¥2,548: spend ¥5,548, gold
        factories.purchase(m, 150_000, now=T0 + timedelta(days=200))  # gold terms, paid ¥1,425
        db.session.commit()
        assert m.tier.code == "gold" and m.tier_since == T0
        member_id = m.id

    # 100 days on the spend is ¥2,548 (silver) and 364 days on ¥3,973, but the 12 months are not over.
    for days in (100, 364):
        now = (T0 + timedelta(days=days)).isoformat()
        assert run(runner, "review-tiers", "--now", now) == 0
    with app.app_context():
        assert member_by_id(member_id).tier.code == "gold"

    review_at = T0 + timedelta(days=366)  # only the ¥1,425 purchase is left in the 365 days
    assert run(runner, "review-tiers", "--now", review_at.isoformat()) == 1
    with app.app_context():
        m = member_by_id(member_id)
        assert m.tier.code == "silver" and m.tier_since == review_at
        change = db.session.scalars(select(TierChange).where(TierChange.member_id == member_id)
                                    .order_by(TierChange.id.desc())).first()
        assert (change.reason, change.from_tier.code, change.to_tier.code) == ("review", "gold", "silver")
        assert change.qualifying_spend_fen == 142_500 and change.created_at == review_at

    # The new tier starts its own 12 months.
    assert run(runner, "review-tiers", "--now", (review_at + timedelta(days=1)).isoformat()) == 0


def test_review_itself_waits_for_the_12_months(ctx):
    """The rule holds in tiers.review too, not only in the query that picks whom to review."""
    m = factories.member(now=T0 - timedelta(days=310))
    factories.purchase(m, 300_000, now=T0 - timedelta(days=300))
    factories.purchase(m, 260_000, now=T0)  # gold at T0
    db.session.commit()
    current, levels = load_rules(db.session), tiers.all_tiers(db.session)

    def review(days):
        return tiers.review(db.session, m, levels, now=T0 + timedelta(days=days),
                            retention_days=current.tier_retention_days, qualifying_days=current.qualifying_days)

    assert review(100) is None and review(364) is None  # spend ¥2,548 earns silver, but not yet
    change = review(365)
    assert change is not None and change.reason == "review" and m.tier.code == "member"


def test_review_keeps_a_member_who_still_qualifies(app, runner):
    with app.app_context():
        m = factories.member(now=T0)
        factories.purchase(m, 600_000, now=T0)  # gold
        factories.purchase(m, 550_000, now=T0 + timedelta(days=300))  # gold terms, paid ¥5,225
        db.session.commit()
        member_id = m.id
    assert run(runner, "review-tiers", "--now", (T0 + timedelta(days=366)).isoformat()) == 0
    with app.app_context():
        m = member_by_id(member_id)
        assert m.tier.code == "gold" and m.tier_since == T0
        assert db.session.scalar(select(func.count()).select_from(TierChange)
                                 .where(TierChange.reason == "review")) == 0


def test_review_never_moves_anyone_up(app, runner):
    """A manager lowers gold's threshold below a silver member's spend: the review still does not move them up."""
    with app.app_context():
        m = factories.member(now=T0 - timedelta(days=410))
        factories.purchase(m, 120_000, now=T0 - timedelta(days=400))  # silver
        factories.purchase(m, 300_000, now=T0 - timedelta(days=30))  # silver terms, paid ¥2,940
        gold = db.session.scalars(select(Tier).where(Tier.code == "gold")).one()
        gold.threshold_fen = 200_000
        db.session.commit()
        assert m.tier.code == "silver" and tiers.qualifying_spend(db.session, m.id, T0) == 294_000
        member_id = m.id
    assert run(runner, "review-tiers", "--now", T0.isoformat()) == 0
    with app.app_context():
        assert member_by_id(member_id).tier.code == "silver"
        assert db.session.scalar(select(func.count()).select_from(TierChange)
                                 .where(TierChange.reason == "review")) == 0


def test_review_all_works_through_every_member_in_batches(ctx):
    people = []
    for _ in range(5):
        m = factories.member(now=T0)
        factories.purchase(m, 600_000, now=T0)  # gold, then nothing for a year
        people.append(m)
    db.session.commit()
    current = load_rules(db.session)
    moved = tiers.review_all(db.session, now=T0 + timedelta(days=366), batch=2,
                             retention_days=current.tier_retention_days, qualifying_days=current.qualifying_days)
    assert moved == 5
    for m in people:
        db.session.refresh(m)
        assert m.tier.code == "member"


# --- Birthday bonus ------------------------------------------------------------------------------------


def birthday_member(birthday: date, tier: str = "gold", changed_at: datetime | None = None) -> int:
    m = factories.member(tier=tier, now=datetime(2025, 1, 1, tzinfo=UTC))
    m.birthday = birthday
    m.birthday_changed_at = changed_at
    return m.id


def bonuses(member_id: int) -> list[tuple[int, str, datetime]]:
    return [(e.points, e.reason, e.created_at) for e in kinds(member_id, "bonus")]


def test_birthday_bonus_once_in_the_birthday_month_of_store_time(app, runner):
    with app.app_context():
        april = birthday_member(date(1990, 4, 15))
        march = birthday_member(date(1991, 3, 20), tier="silver")
        db.session.commit()

    # 23:30 on 31 March in Shanghai: the March member's month, not the April member's.
    assert run(runner, "birthday-bonus", "--now", "2026-03-31T15:30:00Z") == 1
    # 00:30 on 1 April in Shanghai, though still 31 March in UTC.
    first_of_april = datetime(2026, 3, 31, 16, 30, tzinfo=UTC)
    assert run(runner, "birthday-bonus", "--now", first_of_april.isoformat()) == 1
    assert run(runner, "birthday-bonus", "--now", "2026-04-20T02:00:00Z") == 0  # not twice a year
    with app.app_context():
        assert bonuses(april) == [(300, "birthday", first_of_april)]  # gold's bonus
        assert [points for points, *_ in bonuses(march)] == [100]  # silver's
        for member_id in (april, march):
            assert_books(member_by_id(member_id))

    assert run(runner, "birthday-bonus", "--now", "2026-05-01T02:00:00Z") == 0  # outside the month
    assert run(runner, "birthday-bonus", "--now", "2027-04-02T02:00:00Z") == 1  # next year, again
    with app.app_context():
        assert [points for points, *_ in bonuses(april)] == [300, 300]
        assert member_by_id(april).points_balance == 600


def test_the_year_of_a_january_birthday_is_counted_in_store_time(app, runner):
    with app.app_context():
        member_id = birthday_member(date(1988, 1, 5), tier="member")
        db.session.commit()
    assert run(runner, "birthday-bonus", "--now", "2026-12-31T16:30:00Z") == 1  # 1 January 2027 in Shanghai
    assert run(runner, "birthday-bonus", "--now", "2027-01-20T02:00:00Z") == 0
    assert run(runner, "birthday-bonus", "--now", "2028-01-03T02:00:00Z") == 1
    with app.app_context():
        assert [points for points, *_ in bonuses(member_id)] == [50, 50]
        assert member_by_id(member_id).last_birthday_bonus_year == 2028


def test_no_birthday_bonus_for_a_birthday_changed_within_30_days(app, runner):
    run_at = datetime(2026, 4, 10, 2, 0, tzinfo=UTC)
    with app.app_context():
        recent = birthday_member(date(1990, 4, 15), changed_at=run_at - timedelta(days=10))
        settled = birthday_member(date(1990, 4, 16), changed_at=run_at - timedelta(days=31))
        db.session.commit()
    result = runner.invoke(args=["birthday-bonus", "--now", run_at.isoformat()])
    assert result.exit_code == 0
    assert "1 birthday bonuses posted; 1 skipped" in result.output
    assert run(runner, "birthday-bonus", "--now", "2026-04-25T02:00:00Z") == 0  # none this year
    with app.app_context():
        assert bonuses(recent) == []
        assert [points for points, *_ in bonuses(settled)] == [300]
    assert run(runner, "birthday-bonus", "--now", "2027-04-01T02:00:00Z") == 2  # next year both
