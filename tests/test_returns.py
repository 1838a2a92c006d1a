"""Returns: the worked examples of PRODUCT.md, the shortfall policies, refusals, idempotency,
the downgrade a return causes, and the expiry of the points a return gives back.

Every figure asserted is one the receipt or the member's history shows (fen, points).
"""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from portal import ledger, points, returns, rules, tiers
from portal.extensions import db
from portal.models import LedgerEntry, Member, PointLot, Purchase, Return, TierChange
from portal.rules import load_rules

from . import factories

UTC = timezone.utc
T0 = datetime(2026, 1, 5, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai


def grant(member: Member, amount: int, now: datetime) -> None:
    """An opening balance, given the way a manager would."""
    manager = factories.staff(role="manager")
    points.adjust(db.session, member_id=member.id, staff=manager, store=factories.store(), points=amount,
                  reason="opening balance", rules=load_rules(db.session), now=now)


def give_back(purchase: Purchase, gross_fen: int, now: datetime, *, key: str | None = None,
              store_code: str = "S001") -> returns.ReturnResult:
    return returns.record_return(
        db.session, purchase_id=purchase.id, store=factories.store(store_code), staff=None,
        returned_gross_fen=gross_fen, idempotency_key=key or uuid.uuid4().hex, rules=load_rules(db.session),
        now=now,
    )


def entries(ret: Return) -> list[tuple[str, int]]:
    """The ledger entries a return wrote, in the order it wrote them."""
    rows = db.session.scalars(select(LedgerEntry).where(LedgerEntry.return_id == ret.id).order_by(LedgerEntry.id))
    return [(row.kind, row.points) for row in rows]


def lots_remaining(member: Member) -> int:
    return db.session.scalar(
        select(func.coalesce(func.sum(PointLot.remaining), 0)).where(PointLot.member_id == member.id)
    )


def assert_books(member: Member) -> None:
    """The cached balance equals the ledger; the lots hold exactly the positive part of it."""
    db.session.refresh(member)
    assert member.points_balance == ledger.ledger_sum(db.session, member.id)
    assert lots_remaining(member) == max(member.points_balance, 0)


def count(model) -> int:
    return db.session.scalar(select(func.count()).select_from(model))


# --- Worked examples ----------------------------------------------------------------------------------


def test_worked_example_1_gold_member_returns_in_two_parts_that_add_up(ctx):
    m = factories.member(tier="gold", now=T0)
    grant(m, 2050, T0)
    sale = factories.purchase(m, 38_888, points=2050, now=T0 + timedelta(minutes=5)).purchase
    db.session.commit()
    assert (sale.discount_fen, sale.due_fen, sale.redeemed_value_fen) == (1944, 36_944, 2050)
    assert (sale.paid_fen, sale.points_earned) == (34_894, 523)
    assert m.points_balance == 523

    first = give_back(sale, 10_000, T0 + timedelta(days=3)).ret
    db.session.commit()
    assert (first.refund_fen, first.cash_refund_fen) == (8973, 8973)
    assert (first.points_restored, first.points_reversed) == (527, 134)
    assert (first.shortfall_points, first.shortfall_deducted_fen) == (0, 0)
    assert entries(first) == [("restore", 527), ("reverse", -134)]  # restored points are credited first
    assert m.points_balance == 523 + 393
    assert_books(m)

    rest = give_back(sale, 28_888, T0 + timedelta(days=4)).ret
    db.session.commit()
    assert (rest.refund_fen, rest.cash_refund_fen) == (25_921, 25_921)
    assert (rest.points_restored, rest.points_reversed) == (1523, 389)
    assert entries(rest) == [("restore", 1523), ("reverse", -389)]

    assert first.refund_fen + rest.refund_fen == 34_894 == sale.paid_fen
    assert first.points_restored + rest.points_restored == 2050 == sale.points_redeemed
    assert first.points_reversed + rest.points_reversed == 523 == sale.points_earned
    assert (sale.returned_gross_fen, sale.returnable_fen, sale.refunded_fen) == (38_888, 0, 34_894)
    assert m.points_balance == 2050  # back where the member started
    assert_books(m)


def test_worked_example_2_three_small_returns_add_up_to_the_purchase(ctx):
    m = factories.member(tier="silver", now=T0)
    sale = factories.purchase(m, 1000, now=T0).purchase
    db.session.commit()
    assert (sale.discount_fen, sale.paid_fen, sale.points_earned) == (20, 980, 11)

    figures = []
    for day, gross in enumerate([333, 333, 334], start=1):
        ret = give_back(sale, gross, T0 + timedelta(days=day)).ret
        db.session.commit()
        figures.append((ret.refund_fen, ret.points_reversed))
        assert ret.points_restored == 0
    assert figures == [(326, 3), (327, 4), (327, 4)]
    assert sum(refund for refund, _ in figures) == 980
    assert sum(reversed_ for _, reversed_ in figures) == 11
    assert m.points_balance == 0
    assert_books(m)


def example_4_setup(policy: str):
    """PRODUCT.md example 4 up to the return: balance 146 after two purchases."""
    m = factories.member(now=T0)
    if policy != "deduct":
        rules.set_rule(db.session, "shortfall_policy", policy, staff=None, now=T0)
    big = factories.purchase(m, 50_000, now=T0).purchase
    small = factories.purchase(m, 5000, points=400, now=T0 + timedelta(hours=1)).purchase
    db.session.commit()
    assert big.points_earned == 500
    assert (small.paid_fen, small.points_earned) == (4600, 46)
    assert m.points_balance == 146
    return m, big


@pytest.mark.parametrize(
    ("policy", "deducted", "cash_refund", "balance"),
    [("deduct", 354, 49_646, 0), ("negative", 0, 50_000, -354)],
)
def test_worked_example_4_shortfall_under_each_policy(ctx, policy, deducted, cash_refund, balance):
    m, big = example_4_setup(policy)

    ret = give_back(big, 50_000, T0 + timedelta(days=1)).ret
    db.session.commit()
    assert (ret.refund_fen, ret.points_reversed, ret.shortfall_policy) == (50_000, 500, policy)
    assert ret.shortfall_points == 354
    assert ret.shortfall_deducted_fen == deducted
    assert ret.cash_refund_fen == cash_refund
    assert m.points_balance == balance
    assert tiers.qualifying_spend(db.session, m.id, T0 + timedelta(days=1)) == 4600
    assert_books(m)


def test_a_negative_balance_is_paid_off_first_by_later_earnings(ctx):
    m, big = example_4_setup("negative")
    give_back(big, 50_000, T0 + timedelta(days=1))
    db.session.commit()
    assert m.points_balance == -354

    later = factories.purchase(m, 50_000, now=T0 + timedelta(days=2)).purchase
    db.session.commit()
    assert later.points_earned == 500
    assert m.points_balance == 146
    assert lots_remaining(m) == 146
    earn = db.session.scalars(select(LedgerEntry).where(LedgerEntry.purchase_id == later.id)).one()
    assert (earn.kind, earn.points, earn.balance_after) == ("earn", 500, 146)
    new_lot = db.session.scalars(select(PointLot).where(PointLot.entry_id == earn.id)).one()
    assert (new_lot.points, new_lot.remaining) == (146, 146)
    assert_books(m)


def test_what_the_cash_refund_cannot_cover_stays_as_a_negative_balance(ctx):
    """With a generous earn rate the points can be worth more than the cash: the refund goes to zero
    and the rest of the reversal is left as a negative balance."""
    rules.set_rule(db.session, "earn_rate_milli", "100000", staff=None, now=T0)  # 100 points per ¥1
    m = factories.member(tier="diamond", now=T0)
    sale = factories.purchase(m, 10_000, now=T0).purchase
    assert (sale.paid_fen, sale.points_earned) == (9200, 18_400)
    spent = factories.purchase(m, 20_000, points=18_400, now=T0 + timedelta(hours=1)).purchase
    db.session.commit()
    assert (spent.paid_fen, spent.points_earned, m.points_balance) == (0, 0, 0)

    ret = give_back(sale, 10_000, T0 + timedelta(days=1)).ret
    db.session.commit()
    assert (ret.refund_fen, ret.shortfall_points, ret.shortfall_deducted_fen) == (9200, 18_400, 9200)
    assert ret.cash_refund_fen == 0
    assert m.points_balance == -9200  # 9,200 points covered by the ¥92.00 kept, 9,200 left owing
    assert_books(m)


def test_restored_points_pay_off_a_negative_balance_before_the_reversal_is_measured(ctx):
    """After example 4's negative balance, returning the purchase paid partly with points: the 400
    points given back clear the 354 owed first, so the 46 to reverse are covered with no shortfall."""
    m, big = example_4_setup("negative")
    give_back(big, 50_000, T0 + timedelta(days=1))
    db.session.commit()
    small = db.session.scalars(
        select(Purchase).where(Purchase.member_id == m.id, Purchase.points_redeemed == 400)
    ).one()

    ret = give_back(small, 5000, T0 + timedelta(days=2)).ret
    db.session.commit()
    assert (ret.refund_fen, ret.points_restored, ret.points_reversed) == (4600, 400, 46)
    assert (ret.shortfall_points, ret.cash_refund_fen) == (0, 4600)
    assert entries(ret) == [("restore", 400), ("reverse", -46)]
    assert m.points_balance == 0
    assert tiers.qualifying_spend(db.session, m.id, T0 + timedelta(days=2)) == 0
    assert_books(m)


@st.composite
def purchases_and_splits(draw):
    gross = draw(st.integers(1, 100_000_000))
    paid = draw(st.integers(0, gross))
    earned = draw(st.integers(0, 2 * paid // 100))
    redeemed = draw(st.integers(0, gross - paid))
    cuts = sorted(draw(st.lists(st.integers(1, gross), max_size=6, unique=True)) + [gross])
    parts = [b - a for a, b in zip([0] + cuts, cuts) if b > a]
    return SimpleNamespace(gross_fen=gross, paid_fen=paid, points_earned=earned, points_redeemed=redeemed,
                           returned_gross_fen=0, refunded_fen=0, points_reversed=0, points_restored=0), parts


@settings(database=None, deadline=None, max_examples=200)
@given(purchases_and_splits())
def test_partial_returns_always_add_up_to_the_whole(case):
    """Any split of a purchase into returns refunds exactly what was paid and moves exactly the points."""
    purchase, parts = case
    for part in parts:
        figures = returns.proportional(purchase, part)
        assert min(figures.refund_fen, figures.points_reversed, figures.points_restored) >= 0
        purchase.returned_gross_fen += part
        purchase.refunded_fen += figures.refund_fen
        purchase.points_reversed += figures.points_reversed
        purchase.points_restored += figures.points_restored
    assert (purchase.refunded_fen, purchase.points_reversed, purchase.points_restored) == (
        purchase.paid_fen, purchase.points_earned, purchase.points_redeemed)


# --- Refusals ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "amount", "field"),
    [
        ([], 0, "amount"),
        ([], -100, "amount"),
        ([], 10_001, "amount"),  # more than was bought
        ([6000], 4001, "amount"),  # more than is left
        ([10_000], 1, None),  # everything already returned
        ([6000, 4000], 100, None),
    ],
)
def test_refused_returns_change_nothing(ctx, before, amount, field):
    m = factories.member(now=T0)
    sale = factories.purchase(m, 10_000, now=T0).purchase
    db.session.commit()
    for gross in before:
        give_back(sale, gross, T0 + timedelta(days=1))
        db.session.commit()
    balance, returned = m.points_balance, sale.returned_gross_fen
    ledger_rows, return_rows = count(LedgerEntry), count(Return)

    with pytest.raises(returns.ReturnError) as refused:
        give_back(sale, amount, T0 + timedelta(days=2))
    db.session.rollback()
    assert refused.value.field == field
    db.session.refresh(sale)
    assert (sale.returned_gross_fen, m.points_balance) == (returned, balance)
    assert (count(LedgerEntry), count(Return)) == (ledger_rows, return_rows)


def test_the_refusal_for_too_much_names_what_is_left(ctx):
    m = factories.member(now=T0)
    sale = factories.purchase(m, 10_000, now=T0).purchase
    give_back(sale, 6000, T0 + timedelta(days=1))
    db.session.commit()
    with pytest.raises(returns.ReturnError) as refused:
        give_back(sale, 4001, T0 + timedelta(days=2))
    db.session.rollback()
    assert refused.value.field == "amount"
    assert "40.00" in str(refused.value.message)


def test_a_return_at_another_store_of_the_chain(ctx):
    m = factories.member(now=T0)
    sale = factories.purchase(m, 10_000, now=T0).purchase
    other = factories.store("S002", "Second Store")
    db.session.commit()

    ret = give_back(sale, 10_000, T0 + timedelta(days=1), store_code="S002").ret
    db.session.commit()
    assert (ret.store_id, sale.store_id) == (other.id, factories.store().id)
    assert (ret.refund_fen, ret.points_reversed) == (10_000, 100)
    reversal = db.session.scalars(select(LedgerEntry).where(LedgerEntry.return_id == ret.id)).one()
    assert (reversal.kind, reversal.points, reversal.store_id) == ("reverse", -100, other.id)
    assert m.points_balance == 0
    assert_books(m)


# --- Idempotency ---------------------------------------------------------------------------------------


def test_the_same_key_twice_records_one_return(ctx):
    m = factories.member(now=T0)
    sale = factories.purchase(m, 10_000, now=T0).purchase
    db.session.commit()

    first = give_back(sale, 4000, T0 + timedelta(days=1), key="return-key-0001")
    db.session.commit()
    assert first.replayed is False
    written = (count(Return), count(LedgerEntry), count(PointLot), count(TierChange))
    balance = m.points_balance

    again = give_back(sale, 4000, T0 + timedelta(days=1, seconds=2), key="return-key-0001")
    db.session.commit()
    assert again.replayed is True
    assert again.ret.id == first.ret.id
    assert (again.ret.refund_fen, again.ret.points_reversed) == (4000, 40)
    assert (count(Return), count(LedgerEntry), count(PointLot), count(TierChange)) == written
    db.session.refresh(sale)
    assert (sale.returned_gross_fen, sale.refunded_fen, m.points_balance) == (4000, 4000, balance)


def test_a_replay_wins_even_after_everything_was_returned(ctx):
    """A double-click on the last return shows its receipt again, not a refusal."""
    m = factories.member(now=T0)
    sale = factories.purchase(m, 10_000, now=T0).purchase
    give_back(sale, 10_000, T0 + timedelta(days=1), key="return-key-0002")
    db.session.commit()
    again = give_back(sale, 10_000, T0 + timedelta(days=1), key="return-key-0002")
    assert again.replayed is True and again.ret.refund_fen == 10_000
    assert count(Return) == 1


def test_a_key_used_for_another_purchase_is_refused(ctx):
    m = factories.member(now=T0)
    one = factories.purchase(m, 10_000, now=T0).purchase
    two = factories.purchase(m, 10_000, now=T0).purchase
    give_back(one, 1000, T0 + timedelta(days=1), key="return-key-0003")
    db.session.commit()
    with pytest.raises(returns.ReturnError) as refused:
        give_back(two, 1000, T0 + timedelta(days=1), key="return-key-0003")
    db.session.rollback()
    assert refused.value.field is None
    assert two.returned_gross_fen == 0 and count(Return) == 1


# --- Tiers ---------------------------------------------------------------------------------------------


def test_buy_big_reach_gold_return_it_no_gold(ctx):
    m = factories.member(now=T0)
    factories.purchase(m, 120_000, now=T0)  # ¥1,200: silver
    db.session.commit()
    assert m.tier.code == "silver"
    big = factories.purchase(m, 400_000, now=T0 + timedelta(days=1))
    db.session.commit()
    assert big.purchase.paid_fen == 392_000  # silver's 2% off
    assert m.tier.code == "gold" and big.tier_change.reason == "purchase"

    result = give_back(big.purchase, 400_000, T0 + timedelta(days=2))
    db.session.commit()
    assert result.ret.refund_fen == 392_000
    assert m.tier.code == "silver"  # the tier the ¥1,200 still earns, not the lowest
    change = result.tier_change
    assert change is not None
    assert (change.reason, change.from_tier.code, change.to_tier.code) == ("return", "gold", "silver")
    assert (change.return_id, change.qualifying_spend_fen) == (result.ret.id, 120_000)
    assert m.tier_since == T0 + timedelta(days=2)


def test_a_partial_return_that_drops_below_the_threshold_downgrades(ctx):
    m = factories.member(tier="silver", now=T0)
    big = factories.purchase(m, 520_000, now=T0)
    db.session.commit()
    assert big.purchase.paid_fen == 509_600 and m.tier.code == "gold"

    small = give_back(big.purchase, 20_000, T0 + timedelta(days=1))  # refund 19,600: spend 490,000
    db.session.commit()
    assert small.ret.refund_fen == 19_600
    assert m.tier.code == "silver"
    assert (small.tier_change.reason, small.tier_change.qualifying_spend_fen) == ("return", 490_000)


def test_a_tier_held_only_by_the_grace_is_not_taken_by_a_small_return(ctx):
    m = factories.member(now=T0 - timedelta(days=310))
    factories.purchase(m, 300_000, now=T0 - timedelta(days=300))  # silver
    gold = factories.purchase(m, 260_000, now=T0)  # silver terms: paid 254,800; spend 554,800: gold
    db.session.commit()
    assert gold.purchase.paid_fen == 254_800 and m.tier.code == "gold"

    later = T0 + timedelta(days=100)  # the ¥3,000 purchase has left the 365 days: spend ¥2,548
    assert tiers.qualifying_spend(db.session, m.id, later) == 254_800
    result = give_back(gold.purchase, 10_000, later)
    db.session.commit()
    assert result.ret.refund_fen == 9800
    assert result.tier_change is None
    assert m.tier.code == "gold" and m.tier_since == T0
    assert db.session.scalar(select(func.count()).select_from(TierChange).where(TierChange.reason == "return")) == 0


def test_a_return_of_a_purchase_older_than_the_qualifying_window_keeps_the_tier(ctx):
    m = factories.member(now=T0)
    old = factories.purchase(m, 600_000, now=T0).purchase  # gold
    factories.purchase(m, 100_000, now=T0 + timedelta(days=300))  # gold terms: paid 95,000
    db.session.commit()
    # 400 days on, the old purchase no longer counts: returning it leaves the spend where it was,
    # so the tier is left to the daily review.
    result = give_back(old, 600_000, T0 + timedelta(days=400))
    db.session.commit()
    assert result.ret.refund_fen == 600_000
    assert result.tier_change is None and m.tier.code == "gold"


# --- Expiry of restored points ------------------------------------------------------------------------


def restored_lots(ret: Return) -> list[tuple[int, datetime | None]]:
    entry = db.session.scalars(
        select(LedgerEntry).where(LedgerEntry.return_id == ret.id, LedgerEntry.kind == "restore")
    ).one()
    lots = db.session.scalars(select(PointLot).where(PointLot.entry_id == entry.id).order_by(PointLot.expires_at))
    return [(lot.points, lot.expires_at) for lot in lots]


def test_restored_points_keep_their_lots_expiry_but_never_less_than_30_days(ctx):
    m = factories.member(now=datetime(2024, 3, 1, tzinfo=UTC))
    factories.purchase(m, 30_000, now=datetime(2024, 3, 10, 2, 0, tzinfo=UTC))  # 300, usable to 10 Mar 2026
    factories.purchase(m, 20_000, now=datetime(2025, 6, 1, 2, 0, tzinfo=UTC))  # 200, usable to 1 Jun 2027
    paid_with_points = factories.purchase(m, 500, points=500, now=datetime(2026, 2, 1, 2, 0, tzinfo=UTC)).purchase
    db.session.commit()
    assert (paid_with_points.paid_fen, paid_with_points.points_earned, m.points_balance) == (0, 0, 0)

    # Returned on 1 March 2026, 11:00 in Shanghai: the 300 would expire in 9 days.
    ret = give_back(paid_with_points, 500, datetime(2026, 3, 1, 3, 0, tzinfo=UTC)).ret
    db.session.commit()
    assert ret.points_restored == 500
    assert restored_lots(ret) == [
        (300, datetime(2026, 3, 31, 16, 0, tzinfo=UTC)),  # end of 31 March, store time: return day + 30
        (200, datetime(2027, 6, 1, 16, 0, tzinfo=UTC)),  # end of 1 June 2027: its own expiry
    ]
    assert m.points_balance == 500
    assert_books(m)
    # The extended points really are usable past their original expiry.
    assert ledger.available(db.session, m, datetime(2026, 3, 20, tzinfo=UTC)) == 500
    assert ledger.available(db.session, m, datetime(2026, 3, 31, 16, 0, tzinfo=UTC)) == 200


def test_points_restored_after_their_lot_expired_get_30_days_from_the_return(ctx):
    m = factories.member(now=datetime(2024, 3, 1, tzinfo=UTC))
    factories.purchase(m, 50_000, now=datetime(2024, 3, 10, 2, 0, tzinfo=UTC))  # usable to 10 Mar 2026
    paid_with_points = factories.purchase(m, 500, points=500, now=datetime(2026, 3, 1, 2, 0, tzinfo=UTC)).purchase
    db.session.commit()

    # Returned at 00:30 on 20 March 2026 in Shanghai (still the 19th in UTC), after the lot expired.
    ret = give_back(paid_with_points, 500, datetime(2026, 3, 19, 16, 30, tzinfo=UTC)).ret
    db.session.commit()
    assert restored_lots(ret) == [(500, datetime(2026, 4, 19, 16, 0, tzinfo=UTC))]  # end of 19 April
    assert m.points_balance == 500
    assert_books(m)


def test_a_partial_return_restores_from_the_first_lots_used(ctx):
    m = factories.member(now=datetime(2024, 3, 1, tzinfo=UTC))
    factories.purchase(m, 30_000, now=datetime(2024, 3, 10, 2, 0, tzinfo=UTC))
    factories.purchase(m, 20_000, now=datetime(2025, 6, 1, 2, 0, tzinfo=UTC))
    sale = factories.purchase(m, 500, points=500, now=datetime(2026, 2, 1, 2, 0, tzinfo=UTC)).purchase
    db.session.commit()

    half = give_back(sale, 250, datetime(2026, 2, 2, 3, 0, tzinfo=UTC)).ret
    rest = give_back(sale, 250, datetime(2026, 2, 3, 3, 0, tzinfo=UTC)).ret
    db.session.commit()
    assert (half.points_restored, rest.points_restored) == (250, 250)
    assert restored_lots(half) == [(250, datetime(2026, 3, 10, 16, 0, tzinfo=UTC))]
    assert restored_lots(rest) == [
        (50, datetime(2026, 3, 10, 16, 0, tzinfo=UTC)),
        (200, datetime(2027, 6, 1, 16, 0, tzinfo=UTC)),
    ]
    assert_books(m)


def test_a_shortfall_worth_less_than_a_fen_stays_owing():
    """At 1,000 points per ¥1, 5 points short are worth 0.5 fen: nothing comes off the refund, and the
    5 points are not forgiven: they stay as a negative balance."""
    from portal.returns import shortfall
    from portal.rules import Rules

    rules = Rules(redeem_points_per_yuan=1000)
    short = shortfall(0, 5, 10_000, rules)
    assert (short.points, short.deducted_fen, short.covered_points) == (5, 0, 0)
    short = shortfall(0, 1_999, 10_000, rules)
    assert (short.deducted_fen, short.covered_points) == (199, 1_990)
