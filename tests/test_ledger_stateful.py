"""Random sequences of till work against the points ledger (hypothesis stateful), on both databases.

Members register (some referred, some with a birthday), buy (amounts tiny and huge, with and without
points), return part or all of a purchase (and sometimes more than is left, which is refused), see their
points expire, get a birthday bonus, are adjusted by a manager (sometimes by more than they have, which
is refused), and the tier review runs, while the clock only moves forward and a manager switches the
shortfall policy. After every step the books are read back from the database and must add up
(PRODUCT.md "Points rules", "Tiers", "Returns").

Each expected figure is recomputed here from the wording of PRODUCT.md, not taken from portal/.

The database is not reset between the machine's runs (ledger entries refuse DELETE): each run starts its
clock at the same moment, creates its own members, and checks only those. The jobs that touch every member
(expiry, review, birthday bonus) also touch the members of earlier runs, which is harmless.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import func, select

from portal import checkout, points, returns, tiers
from portal.checkout import CheckoutError
from portal.extensions import db
from portal.models import LedgerEntry, LotUse, Member, PointLot, Purchase, Return, Tier, TierChange
from portal.returns import ReturnError
from portal.rules import DEFAULT_RULES, load_rules, set_rule

from . import factories

UTC = timezone.utc
STORE_ZONE = ZoneInfo("Asia/Shanghai")
START = datetime(2026, 1, 1, 2, 0, tzinfo=UTC)
CAP = DEFAULT_RULES.purchase_cap_fen
YEAR = timedelta(days=365)  # qualifying window and tier retention (defaults)
MAX_MEMBERS = 5

CREDIT_KINDS = {"earn", "restore", "bonus"}
DEBIT_KINDS = {"redeem", "reverse", "expire"}

MACHINE_SETTINGS = settings(
    max_examples=25,
    stateful_step_count=30,
    deadline=None,
    database=None,  # like tests/test_rules_properties.py: nothing written into the working tree
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

# The clock moves forward by hours or days at every step, and by up to more than two years at the jobs.
gaps = st.one_of(
    st.integers(0, 72).map(lambda hours: timedelta(hours=hours)),
    st.integers(0, 90).map(lambda days: timedelta(days=days)),
)
long_gaps = st.tuples(
    st.sampled_from([0, 1, 29, 30, 31, 364, 365, 366, 729, 730, 731, 800]), st.integers(0, 23)
).map(lambda t: timedelta(days=t[0], hours=t[1]))
grosses = st.one_of(
    st.integers(1, 1_000),  # a few fen up to ¥10
    st.integers(1_000, 500_000),  # everyday baskets
    st.integers(1, CAP),  # anything the cap allows
    st.sampled_from([1, 99, 100, 101, CAP - 1, CAP, CAP + 1]),  # CAP + 1 is refused
)


def half_up(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded half up (non-negative), written out here independently."""
    quotient, rest = divmod(numerator, denominator)
    return quotient + (1 if 2 * rest >= denominator else 0)


def end_of_store_day(moment: datetime, days_later: int) -> datetime:
    """The first instant after the end of the store-time day `days_later` days after `moment`'s."""
    day = moment.astimezone(STORE_ZONE).date() + timedelta(days=days_later + 1)
    return datetime.combine(day, time.min, tzinfo=STORE_ZONE).astimezone(UTC)


@dataclass(frozen=True)
class Level:
    id: int
    code: str
    threshold: int
    multiplier_milli: int
    discount_bp: int
    birthday_bonus: int


@dataclass(frozen=True)
class Before:
    """What a member looks like just before a step, at the step's moment."""

    balance: int
    available: int  # the balance less lots past their expiry (which the step will post first)
    level: Level
    spend: int


class LedgerMachine(RuleBasedStateMachine):
    app = None  # set by the test: the `app` fixture of one database

    def __init__(self):
        super().__init__()
        self._ctx = self.app.app_context()
        self._ctx.push()
        self.now = START
        self.members: list[int] = []
        self.purchases: list[int] = []
        self.store = factories.store()
        self.cashier = factories.staff(role="cashier")
        self.manager = factories.staff(role="manager")
        set_rule(db.session, "shortfall_policy", "deduct", staff=None, now=self.now)
        db.session.commit()
        self.policy = "deduct"
        self.levels = [
            Level(t.id, t.code, t.threshold_fen, t.multiplier_milli, t.discount_bp, t.birthday_bonus)
            for t in db.session.scalars(select(Tier).order_by(Tier.threshold_fen))
        ]
        self.by_id = {level.id: level for level in self.levels}

    def teardown(self):
        db.session.rollback()
        self._ctx.pop()

    # --- reading the database ------------------------------------------------------------------------

    def tick(self, gap: timedelta) -> None:
        self.now += gap

    def member(self, member_id: int) -> Member:
        return db.session.get(Member, member_id)

    def level_for(self, spend: int) -> Level:
        """The highest tier whose threshold the spend reaches."""
        return [level for level in self.levels if level.threshold <= spend][-1]

    def spend(self, member_id: int) -> int:
        """Cash paid in the trailing 365 days, net of refunds."""
        rows = db.session.execute(
            select(Purchase.paid_fen, Purchase.refunded_fen, Purchase.created_at).where(Purchase.member_id == member_id)
        ).all()
        return sum(paid - refunded for paid, refunded, at in rows if at > self.now - YEAR)

    def expired_remaining(self, member_id: int) -> int:
        lots = db.session.execute(
            select(PointLot.remaining, PointLot.expires_at).where(PointLot.member_id == member_id)
        )
        return sum(remaining for remaining, expires in lots if expires is not None and expires <= self.now)

    def before(self, member_id: int) -> Before:
        m = self.member(member_id)
        return Before(
            balance=m.points_balance,
            available=m.points_balance - self.expired_remaining(member_id),
            level=self.by_id[m.tier_id],
            spend=self.spend(member_id),
        )

    def balance(self, member_id: int) -> int:
        return self.member(member_id).points_balance

    def level(self, member_id: int) -> Level:
        return self.by_id[self.member(member_id).tier_id]

    # --- steps ---------------------------------------------------------------------------------------

    def _register(self, referrer_id: int | None, birthday_month: int | None, birthday_just_changed: bool) -> None:
        referrer = self.member(referrer_id) if referrer_id else None
        m = factories.member(now=self.now, referrer=referrer)
        if birthday_month:
            m.birthday = date(1990, birthday_month, 15)
            m.birthday_changed_at = self.now if birthday_just_changed else None
        db.session.commit()
        assert m.points_balance == 0 and m.tier_id == self.levels[0].id and m.tier_since == self.now
        self.members.append(m.id)

    @initialize(gap=gaps, birthday_month=st.none() | st.integers(1, 12))
    def first_member(self, gap, birthday_month):
        self.tick(gap)
        self._register(None, birthday_month, False)

    @precondition(lambda self: len(self.members) < MAX_MEMBERS)
    @rule(data=st.data(), gap=gaps, birthday_month=st.none() | st.integers(1, 12), birthday_just_changed=st.booleans())
    def register(self, data, gap, birthday_month, birthday_just_changed):
        """A new member, sometimes referred by an earlier one (whose bonus comes at the first purchase)."""
        self.tick(gap)
        referrer_id = data.draw(st.none() | st.sampled_from(self.members), label="referrer")
        self._register(referrer_id, birthday_month, birthday_just_changed)

    def _checkout(self, member_id: int, gross: int, points_to_redeem: int) -> int | None:
        """One checkout, checked figure by figure; the purchase id, or None when (rightly) refused."""
        rules = load_rules(db.session)
        b = self.before(member_id)
        m = self.member(member_id)
        referrer_id = m.referrer_id
        first = db.session.scalar(select(func.count()).where(Purchase.member_id == member_id)) == 0
        referrer_balance = self.balance(referrer_id) if referrer_id else None

        discount = half_up(gross * b.level.discount_bp, 10_000)
        due = gross - discount
        expected_field = None
        if gross > CAP:
            expected_field = "gross"
        elif points_to_redeem and not 100 <= points_to_redeem <= min(b.available, due):
            expected_field = "points"  # 100 at least, never more than the balance nor than the amount due

        key = uuid.uuid4().hex
        try:
            result = checkout.record_purchase(
                db.session, member_id=member_id, store=self.store, staff=self.cashier, gross_fen=gross,
                points_to_redeem=points_to_redeem, idempotency_key=key, receipt_number=None, rules=rules,
                now=self.now,
            )
        except CheckoutError as error:
            db.session.rollback()
            event(f"checkout refused on {error.field}")
            assert error.field == expected_field and expected_field is not None, (
                f"refused on {error.field!r} ({error.message}); expected {expected_field!r}")
            assert self.balance(member_id) == b.balance
            assert checkout.find_by_key(db.session, key) is None
            return None
        purchase_id = result.purchase.id
        db.session.commit()
        assert expected_field is None, f"accepted; expected a refusal on {expected_field!r}"
        event("checkout with points" if points_to_redeem else "checkout")

        p = db.session.get(Purchase, purchase_id)
        paid = due - points_to_redeem  # 100 points = ¥1.00, so one point per fen
        earned = paid * b.level.multiplier_milli // 100_000  # floor(paid yuan x 1 point per ¥1 x multiplier)
        assert (p.tier_id, p.discount_fen, p.points_redeemed, p.paid_fen, p.points_earned) == (
            b.level.id, discount, points_to_redeem, paid, earned)
        assert self.balance(member_id) == b.available - points_to_redeem + earned
        spend_after = self.spend(member_id)
        assert spend_after == b.spend + paid
        # Upgrades happen at the purchase that reaches the threshold, never down at a purchase.
        reached = self.level_for(spend_after)
        expected_level = reached if reached.threshold > b.level.threshold else b.level
        assert self.level(member_id) == expected_level
        if expected_level != b.level:
            assert self.member(member_id).tier_since == self.now
            assert result.tier_change is not None and result.tier_change.to_tier_id == expected_level.id
        if referrer_id:
            bonus = DEFAULT_RULES.referral_bonus if first else 0
            assert self.balance(referrer_id) == referrer_balance + bonus
        self.purchases.append(purchase_id)
        return purchase_id

    @precondition(lambda self: self.members)
    @rule(data=st.data(), gross=grosses, gap=gaps)
    def purchase(self, data, gross, gap):
        self.tick(gap)
        self._checkout(data.draw(st.sampled_from(self.members), label="member"), gross, 0)

    def _redeem(self, data, within_limits: bool) -> None:
        rich = [member_id for member_id in self.members if self.before(member_id).available >= 100]
        member_id = data.draw(st.sampled_from(rich or self.members), label="member")
        b = self.before(member_id)
        gross = data.draw(grosses | st.integers(100, max(100, 2 * b.available)), label="gross")
        due = gross - half_up(gross * b.level.discount_bp, 10_000)
        most = max(0, min(b.available, due))
        edges = st.sampled_from(sorted({99, 100, 101, most, most + 1, max(b.available, 0) + 1} - {0}))
        to_redeem = data.draw(st.integers(100, most) if within_limits and most >= 100 else edges, label="points")
        self._checkout(member_id, gross, to_redeem)

    @precondition(lambda self: self.members)
    @rule(data=st.data(), gap=gaps)
    def redeem(self, data, gap):
        """A purchase paid partly or wholly with points."""
        self.tick(gap)
        self._redeem(data, within_limits=True)

    @precondition(lambda self: self.members)
    @rule(data=st.data(), gap=gaps)
    def redeem_at_the_limits(self, data, gap):
        """Points at or just past what is allowed: 99, 100, the balance, the amount due, one more."""
        self.tick(gap)
        self._redeem(data, within_limits=False)

    @precondition(lambda self: self.members)
    @rule(data=st.data(), gross=grosses, gap=gaps, later=gaps)
    def spend_the_points_then_return(self, data, gross, gap, later):
        """Buy, spend every point there is, then bring the first purchase back: the reversal is short."""
        self.tick(gap)
        member_id = data.draw(st.sampled_from(self.members), label="member")
        bought = self._checkout(member_id, min(gross, CAP), 0)
        b = self.before(member_id)
        if b.available >= 100:  # a basket whose amount due is about the balance, all paid in points
            gross = -(-b.available * 10_000 // (10_000 - b.level.discount_bp))
            self._checkout(member_id, gross, min(b.available, gross - half_up(gross * b.level.discount_bp, 10_000)))
        if bought:
            self.tick(later)
            p = db.session.get(Purchase, bought)
            self._return(bought, data.draw(st.just(p.gross_fen) | st.integers(1, p.gross_fen), label="returned"))

    @precondition(lambda self: self.members)
    @rule(data=st.data(), gap=gaps, later=gaps, extra=st.integers(0, 10_000))
    def reach_the_next_tier_then_return(self, data, gap, later, extra):
        """Buy just enough to reach the next tier, then bring part or all of it back."""
        self.tick(gap)
        member_id = data.draw(st.sampled_from(self.members), label="member")
        b = self.before(member_id)
        higher = [level for level in self.levels if level.threshold > max(b.spend, b.level.threshold)]
        if not higher:
            return
        needed = higher[0].threshold - b.spend
        gross = needed * 10_000 // (10_000 - b.level.discount_bp) + 2 + extra
        bought = self._checkout(member_id, min(gross, CAP), 0)
        if bought:
            self.tick(later)
            p = db.session.get(Purchase, bought)
            self._return(bought, data.draw(st.integers(1, p.gross_fen), label="returned"))

    def _returnable(self, min_left: int) -> list[int]:
        return list(db.session.scalars(
            select(Purchase.id).where(Purchase.id.in_(self.purchases),
                                      Purchase.gross_fen - Purchase.returned_gross_fen >= min_left)
            .order_by(Purchase.id)
        ))

    @precondition(lambda self: self.purchases)
    @rule(data=st.data(), gap=gaps)
    def return_part(self, data, gap):
        """Part of what is left of a purchase comes back."""
        self.tick(gap)
        purchase_id = data.draw(st.sampled_from(self._returnable(2) or self.purchases), label="purchase")
        p = db.session.get(Purchase, purchase_id)
        left = p.gross_fen - p.returned_gross_fen
        self._return(purchase_id, data.draw(st.integers(1, max(1, left - 1)), label="returned_gross_fen"))

    @precondition(lambda self: self.purchases)
    @rule(data=st.data(), gap=gaps)
    def return_the_rest(self, data, gap):
        """All that is left of a purchase comes back (the whole purchase, if nothing came back before)."""
        self.tick(gap)
        purchase_id = data.draw(st.sampled_from(self._returnable(1) or self.purchases), label="purchase")
        p = db.session.get(Purchase, purchase_id)
        self._return(purchase_id, max(1, p.gross_fen - p.returned_gross_fen))

    @precondition(lambda self: self.purchases)
    @rule(data=st.data(), gap=gaps)
    def return_too_much(self, data, gap):
        """More than is left, or nothing: refused, and nothing changes."""
        self.tick(gap)
        purchase_id = data.draw(st.sampled_from(self.purchases), label="purchase")
        p = db.session.get(Purchase, purchase_id)
        left = p.gross_fen - p.returned_gross_fen
        self._return(purchase_id, data.draw(st.integers(left + 1, left + p.gross_fen) | st.just(0),
                                            label="returned_gross_fen"))

    def _return(self, purchase_id: int, amount: int) -> None:
        p = db.session.get(Purchase, purchase_id)
        left = p.gross_fen - p.returned_gross_fen
        rules = load_rules(db.session)
        assert rules.shortfall_policy == self.policy
        member_id = p.member_id
        b = self.before(member_id)
        snapshot = (p.returned_gross_fen, p.refunded_fen, p.points_restored, p.points_reversed)
        returned_before, refunded_before, restored_before, reversed_before = snapshot
        gross, paid, earned, redeemed = p.gross_fen, p.paid_fen, p.points_earned, p.points_redeemed
        in_window = p.created_at > self.now - YEAR

        expected_field = "none-left" if not left else ("amount" if amount <= 0 or amount > left else None)
        key = uuid.uuid4().hex
        try:
            result = returns.record_return(
                db.session, purchase_id=purchase_id, store=self.store, staff=self.cashier, returned_gross_fen=amount,
                idempotency_key=key, rules=rules, now=self.now,
            )
        except ReturnError as error:
            db.session.rollback()
            assert expected_field is not None, f"refused ({error.message}); expected a return"
            event(f"return refused: {expected_field}")
            assert error.field == (None if expected_field == "none-left" else expected_field)
            p = db.session.get(Purchase, purchase_id)
            assert (p.returned_gross_fen, p.refunded_fen, p.points_restored, p.points_reversed) == snapshot
            assert self.balance(member_id) == b.balance
            return
        return_id = result.ret.id
        db.session.commit()
        assert expected_field is None, f"accepted; expected a refusal ({expected_field})"
        event("return: whole rest" if amount == left else "return: partial")

        so_far = returned_before + amount
        refund = half_up(paid * so_far, gross) - refunded_before
        restored = redeemed * so_far // gross - restored_before
        reversed_ = earned * so_far // gross - reversed_before
        short = max(0, reversed_ - max(b.available + restored, 0))  # restored points are credited first
        deducted = min(short, refund) if self.policy == "deduct" else 0  # 100 points = ¥1: a fen a point
        ret = db.session.get(Return, return_id)
        assert (ret.returned_gross_fen, ret.refund_fen, ret.points_restored, ret.points_reversed) == (
            amount, refund, restored, reversed_)
        assert (ret.shortfall_points, ret.shortfall_deducted_fen, ret.cash_refund_fen, ret.shortfall_policy) == (
            short, deducted, refund - deducted, self.policy)
        assert self.balance(member_id) == b.available + restored - reversed_ + deducted
        if short:
            event(f"return with a shortfall ({self.policy})")
        if self.balance(member_id) < 0:
            event("negative balance after a return")

        # Restored points keep the expiry of the lots they came from, but never sooner than 30 days from now.
        floor = end_of_store_day(self.now, 30)
        origins = {
            None if expires is None else max(expires, floor)
            for expires in db.session.scalars(
                select(PointLot.expires_at).join(LotUse, LotUse.lot_id == PointLot.id)
                .join(LedgerEntry, LedgerEntry.id == LotUse.entry_id)
                .where(LedgerEntry.purchase_id == purchase_id, LedgerEntry.kind == "redeem")
            )
        }
        for expires in db.session.scalars(
            select(PointLot.expires_at).join(LedgerEntry, LedgerEntry.id == PointLot.entry_id)
            .where(LedgerEntry.return_id == return_id, LedgerEntry.kind == "restore")
        ):
            assert expires in origins and (expires is None or expires >= floor)

        # Tier: a return that drops the spend below the held tier's threshold moves the member down at once,
        # to what the spend now earns; a tier already held above the spend (the 12 months' grace) is left
        # to the review. Either way a return never moves a member up.
        spend_after = self.spend(member_id)
        assert spend_after == b.spend - (refund if in_window else 0)
        after = self.level(member_id)
        if b.level == self.level_for(b.spend):
            assert after == self.level_for(spend_after)
        else:
            assert after == b.level
        if after != b.level:
            event("tier down at a return")
            assert result.tier_change is not None and result.tier_change.reason == "return"
            assert self.member(member_id).tier_since == self.now

    @precondition(lambda self: self.purchases)
    @rule(gap=long_gaps)
    def expire(self, gap):
        """The daily expiry job, run after the clock moved on (sometimes past the 730 days)."""
        self.tick(gap)
        expected = {member_id: self.before(member_id).available for member_id in self.members}
        points.expire_all(db.session, now=self.now)
        db.session.commit()
        for member_id, balance in expected.items():
            assert self.balance(member_id) == balance
            assert self.expired_remaining(member_id) == 0
        assert points.expire_all(db.session, now=self.now) == 0  # running it twice changes nothing
        db.session.commit()

    @precondition(lambda self: self.purchases)
    @rule(gap=long_gaps)
    def review(self, gap):
        """The daily tier review: down to what the spend earns, once the tier has been held 12 months."""
        self.tick(gap)
        rules = load_rules(db.session)
        held = {member_id: self.level(member_id) for member_id in self.members}
        tiers.review_all(db.session, now=self.now, retention_days=rules.tier_retention_days,
                         qualifying_days=rules.qualifying_days)
        db.session.commit()
        for member_id, before in held.items():
            m = self.member(member_id)
            after, earned = self.by_id[m.tier_id], self.level_for(self.spend(member_id))
            assert after.threshold <= before.threshold  # never up
            if after != before:
                assert after == earned and m.tier_since == self.now
            # Above what the spend earns only while the tier is less than 12 months old.
            assert after == earned or m.tier_since > self.now - YEAR, (after.code, earned.code, m.tier_since)

    @precondition(lambda self: self.members)
    @rule(data=st.data(), gap=gaps)
    def adjust(self, data, gap):
        """A manager adds or takes points; taking more than the member has is refused."""
        self.tick(gap)
        member_id = data.draw(st.sampled_from(self.members), label="member")
        b = self.before(member_id)
        has = max(b.available, 0)
        amount = data.draw(st.one_of(
            st.integers(1, 100_000),
            st.integers(-(has + 500), -1),
            st.sampled_from([n for n in (-has, -(has + 1)) if n]),
        ), label="points")
        try:
            points.adjust(db.session, member_id=member_id, staff=self.manager, store=self.store, points=amount,
                          reason="stocktake", rules=load_rules(db.session), now=self.now)
        except CheckoutError as error:
            db.session.rollback()
            assert (amount < 0 and -amount > has) or abs(amount) > points.MAX_ADJUSTMENT, (
                f"refused ({error.message}) with {has} points available")
            assert error.field == "points"
            assert self.balance(member_id) == b.balance
            event("adjustment refused")
            return
        db.session.commit()
        assert amount > 0 or -amount <= has, f"took {-amount} points from a member with {has}"
        assert abs(amount) <= points.MAX_ADJUSTMENT
        assert self.balance(member_id) == b.available + amount

    @rule(policy=st.sampled_from(["deduct", "negative"]), gap=gaps)
    def switch_shortfall_policy(self, policy, gap):
        self.tick(gap)
        set_rule(db.session, "shortfall_policy", policy, staff=None, now=self.now)
        db.session.commit()
        self.policy = policy
        assert load_rules(db.session).shortfall_policy == policy

    @precondition(lambda self: self.members)
    @rule(gap=gaps)
    def birthday_bonus(self, gap):
        """The yearly birthday bonus: once a year in the birthday month, none after a recent change."""
        self.tick(gap)
        today = self.now.astimezone(STORE_ZONE).date()
        expected = {}
        for member_id in self.members:
            m = self.member(member_id)
            due = (m.birthday is not None and m.birthday.month == today.month
                   and (m.last_birthday_bonus_year or 0) < today.year)
            changed = m.birthday_changed_at
            recently_changed = changed is not None and changed > self.now - timedelta(days=30)
            bonus = self.by_id[m.tier_id].birthday_bonus if due and not recently_changed else 0
            expected[member_id] = (m.points_balance + bonus, today.year if due else m.last_birthday_bonus_year)
        points.birthday_bonuses(db.session, now=self.now, rules=load_rules(db.session))
        db.session.commit()
        points.birthday_bonuses(db.session, now=self.now, rules=load_rules(db.session))  # twice: nothing more
        db.session.commit()
        for member_id, (balance, year) in expected.items():
            m = self.member(member_id)
            assert (m.points_balance, m.last_birthday_bonus_year) == (balance, year)

    # --- what must hold after every step -------------------------------------------------------------

    @invariant()
    def books_add_up(self):
        """Read back from the database, a few queries for all of this run's members at once."""
        if not self.members:
            return
        session = db.session
        mine = self.members
        people = {m.id: m for m in session.scalars(select(Member).where(Member.id.in_(mine)))}

        # The cached balance is the sum of the entries, and each entry's balance_after the running sum.
        running = dict.fromkeys(mine, 0)
        for member_id, kind, entry_points, balance_after in session.execute(
            select(LedgerEntry.member_id, LedgerEntry.kind, LedgerEntry.points, LedgerEntry.balance_after)
            .where(LedgerEntry.member_id.in_(mine)).order_by(LedgerEntry.id)
        ):
            assert entry_points != 0
            assert (kind not in CREDIT_KINDS or entry_points > 0) and (kind not in DEBIT_KINDS or entry_points < 0)
            running[member_id] += entry_points
            assert balance_after == running[member_id]
        assert {member_id: m.points_balance for member_id, m in people.items()} == running

        # Lots: what is left in them is the balance (0 when it is negative); no lot used beyond its points.
        lots = session.execute(
            select(PointLot.id, PointLot.member_id, PointLot.points, PointLot.remaining, PointLot.expires_at,
                   PointLot.created_at, LedgerEntry.kind, LedgerEntry.member_id.label("entry_member_id"))
            .join(LedgerEntry, LedgerEntry.id == PointLot.entry_id).where(PointLot.member_id.in_(mine))
        ).all()
        used = dict(session.execute(
            select(LotUse.lot_id, func.sum(LotUse.points)).join(PointLot, PointLot.id == LotUse.lot_id)
            .where(PointLot.member_id.in_(mine)).group_by(LotUse.lot_id)
        ).all())
        left_in_lots = dict.fromkeys(mine, 0)
        for lot in lots:
            left_in_lots[lot.member_id] += lot.remaining
            assert 0 <= lot.remaining <= lot.points and lot.points > 0
            assert used.get(lot.id, 0) == lot.points - lot.remaining
            assert lot.entry_member_id == lot.member_id and lot.kind in CREDIT_KINDS | {"adjust"}
            if lot.kind != "restore":  # 730 days, to the end of that day in store time
                assert lot.expires_at == end_of_store_day(lot.created_at, 730)
        assert left_in_lots == {member_id: max(balance, 0) for member_id, balance in running.items()}

        # Tier: never below what the trailing spend earns (upgrades happen at the purchase that reaches a
        # threshold, and the spend only grows at a purchase). The history of changes leads to the tier held.
        purchases = list(session.scalars(select(Purchase).where(Purchase.member_id.in_(mine))))
        spend = dict.fromkeys(mine, 0)
        for p in purchases:
            if p.created_at > self.now - YEAR:
                spend[p.member_id] += p.paid_fen - p.refunded_fen
        history = {member_id: (self.levels[0].id, m.created_at) for member_id, m in people.items()}
        for member_id, from_id, to_id, at in session.execute(
            select(TierChange.member_id, TierChange.from_tier_id, TierChange.to_tier_id, TierChange.created_at)
            .where(TierChange.member_id.in_(mine)).order_by(TierChange.id)
        ):
            assert from_id == history[member_id][0] and to_id != from_id
            history[member_id] = (to_id, at)
        for member_id, m in people.items():
            assert self.by_id[m.tier_id].threshold >= self.level_for(spend[member_id]).threshold
            assert (m.tier_id, m.tier_since) == history[member_id]

        # Returns add up to the purchase's running totals, by the cumulative proportions of PRODUCT.md.
        returned = {row[0]: tuple(row[1:]) for row in session.execute(
            select(Return.purchase_id, func.sum(Return.returned_gross_fen), func.sum(Return.refund_fen),
                   func.sum(Return.points_restored), func.sum(Return.points_reversed))
            .where(Return.member_id.in_(mine)).group_by(Return.purchase_id)
        )}
        marked = dict(session.execute(  # redeemed points given back, marked on the redemption's lot uses
            select(LedgerEntry.purchase_id, func.sum(LotUse.restored))
            .join(LedgerEntry, LedgerEntry.id == LotUse.entry_id)
            .where(LedgerEntry.member_id.in_(mine), LedgerEntry.kind == "redeem").group_by(LedgerEntry.purchase_id)
        ).all())
        for p in purchases:
            assert 0 <= p.returned_gross_fen <= p.gross_fen
            totals = (p.returned_gross_fen, p.refunded_fen, p.points_restored, p.points_reversed)
            assert returned.get(p.id, (0, 0, 0, 0)) == totals
            so_far = p.returned_gross_fen
            assert p.refunded_fen == half_up(p.paid_fen * so_far, p.gross_fen)
            assert p.points_restored == p.points_redeemed * so_far // p.gross_fen
            assert p.points_reversed == p.points_earned * so_far // p.gross_fen
            if so_far == p.gross_fen:  # wholly returned: every figure equals the purchase's own
                assert totals[1:] == (p.paid_fen, p.points_redeemed, p.points_earned)
            assert marked.get(p.id, 0) == p.points_restored
        for ret in session.execute(
            select(Return.member_id, Purchase.member_id.label("buyer_id"), Return.refund_fen,
                   Return.shortfall_deducted_fen, Return.cash_refund_fen)
            .join(Purchase, Purchase.id == Return.purchase_id).where(Return.member_id.in_(mine))
        ):
            assert ret.buyer_id == ret.member_id
            assert 0 <= ret.shortfall_deducted_fen <= ret.refund_fen
            assert ret.cash_refund_fen == ret.refund_fen - ret.shortfall_deducted_fen


@pytest.mark.slow  # 15-20 s on SQLite, 20-40 s on PostgreSQL
def test_the_books_add_up_after_any_sequence_of_till_work(app, monkeypatch):
    monkeypatch.setattr(LedgerMachine, "app", app)
    run_state_machine_as_test(LedgerMachine, settings=MACHINE_SETTINGS)
