"""The ledger under concurrent tills and half-finished transactions, on SQLite (WAL) and PostgreSQL.

Each thread works as a request does: its own application context (so its own session and connection),
the service function, then a commit, or a rollback on a refusal. On SQLite the thread declares its
write intent first, so its transaction takes the write lock up front (BEGIN IMMEDIATE); on PostgreSQL
the services lock the member's row. All threads are released together by a barrier.

The second half breaks a checkout and a return halfway (after the ledger entry, before the rest) and
checks that nothing of them stays behind (PRODUCT.md "Ledger": a cached balance changes in the same
transaction as the entries and always equals their sum).
"""
from __future__ import annotations

import itertools
import threading
import uuid
from datetime import timedelta

import pytest
from flask_babel import force_locale
from sqlalchemy import func, select

from portal import checkout, ledger, points, returns, tiers
from portal.checkout import CheckoutError
from portal.database import declare_write_intent
from portal.extensions import db
from portal.models import LedgerEntry, LedgerKind, LotUse, Member, PointLot, Purchase, Return, TierChange, utcnow
from portal.rules import load_rules, set_rule

from . import factories
from .conftest import FIXED_NOW
from .helpers import form_key


def run_together(app, n: int, work) -> list:
    """Run work(i) in n threads released at once, each in its own app context; commit each success and roll
    back each CheckoutError/ReturnError. Returns what each returned, or the refusal (error, English message).
    Anything else a thread raises is re-raised here."""
    barrier = threading.Barrier(n)
    outcomes: list = [None] * n
    leaked: list[BaseException] = []

    def run(i: int) -> None:
        try:
            with app.app_context():
                declare_write_intent()  # contextvars are per thread: each one says it writes
                barrier.wait(timeout=30)
                try:
                    outcome = work(i)
                except CheckoutError as error:  # ReturnError is the same class
                    db.session.rollback()
                    with force_locale("en"):
                        outcomes[i] = (error, str(error.message))
                else:
                    db.session.commit()
                    outcomes[i] = outcome
        except BaseException as error:  # collected, re-raised in the test's thread
            leaked.append(error)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(i,), name=f"till-{i}") for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a till hung"
    if leaked:
        raise leaked[0]
    return outcomes


def refusals(outcomes) -> list[tuple[CheckoutError, str]]:
    return [o for o in outcomes if isinstance(o, tuple) and isinstance(o[0], CheckoutError)]


def buy(member_id: int, gross_fen: int, points: int = 0, now=FIXED_NOW) -> int:
    """One checkout in the current app context (no commit); the purchase id."""
    result = checkout.record_purchase(
        db.session, member_id=member_id, store=factories.store(), staff=None, gross_fen=gross_fen,
        points_to_redeem=points, idempotency_key=uuid.uuid4().hex, receipt_number=None,
        rules=load_rules(db.session), now=now,
    )
    assert not result.replayed
    return result.purchase.id


def give_back(purchase_id: int, returned_gross_fen: int, now) -> int:
    """One return in the current app context (no commit); the return id."""
    result = returns.record_return(
        db.session, purchase_id=purchase_id, store=factories.store(), staff=None,
        returned_gross_fen=returned_gross_fen, idempotency_key=uuid.uuid4().hex, rules=load_rules(db.session),
        now=now,
    )
    return result.ret.id


def books(member_id: int) -> dict:
    """Everything the ledger keeps for one member, to compare before and after (in an app context)."""
    m = db.session.get(Member, member_id)
    db.session.refresh(m)
    return {
        "balance": m.points_balance,
        "ledger_sum": ledger.ledger_sum(db.session, member_id),
        "tier": (m.tier_id, m.tier_since),
        "entries": db.session.execute(
            select(LedgerEntry.id, LedgerEntry.kind, LedgerEntry.points, LedgerEntry.balance_after)
            .where(LedgerEntry.member_id == member_id).order_by(LedgerEntry.id)).all(),
        "lots": db.session.execute(
            select(PointLot.id, PointLot.points, PointLot.remaining, PointLot.expires_at)
            .where(PointLot.member_id == member_id).order_by(PointLot.id)).all(),
        "lot_uses": db.session.execute(
            select(LotUse.id, LotUse.lot_id, LotUse.points, LotUse.restored)
            .join(PointLot, PointLot.id == LotUse.lot_id).where(PointLot.member_id == member_id)
            .order_by(LotUse.id)).all(),
        "purchases": db.session.execute(
            select(Purchase.id, Purchase.returned_gross_fen, Purchase.refunded_fen, Purchase.points_restored,
                   Purchase.points_reversed).where(Purchase.member_id == member_id).order_by(Purchase.id)).all(),
        "returns": db.session.scalars(select(Return.id).where(Return.member_id == member_id)).all(),
        "tier_changes": db.session.scalars(select(TierChange.id).where(TierChange.member_id == member_id)).all(),
    }


# --- (a) twenty tills spend the same 100 points at once -------------------------------------------------

def test_twenty_redemptions_of_the_last_100_points_let_exactly_one_through(app):
    with app.app_context():
        m = factories.member()
        buy(m.id, 10_000)  # ¥100.00 at the base tier: exactly 100 points
        db.session.commit()
        member_id = m.id
        assert m.points_balance == 100

    # ¥1.00 paid entirely with 100 points: nothing earned, so only the redemptions move the balance.
    outcomes = run_together(app, 20, lambda i: buy(member_id, 100, points=100))

    refused = refusals(outcomes)
    recorded = [o for o in outcomes if isinstance(o, int)]
    assert len(recorded) == 1 and len(refused) == 19, outcomes
    for error, message in refused:
        assert error.field == "points"
        assert message == "The member has only 0 points."
    with app.app_context():
        b = books(member_id)
        assert b["balance"] == 0 == b["ledger_sum"]
        assert [(kind, points) for _, kind, points, _ in b["entries"]] == [("earn", 100), ("redeem", -100)]
        assert [after for *_, after in b["entries"]] == [100, 0]
        assert [(points, remaining) for _, points, remaining, _ in b["lots"]] == [(100, 0)]
        assert len(b["purchases"]) == 2
        assert db.session.get(Purchase, recorded[0]).points_redeemed == 100


# --- (b) the same purchase returned at two tills at once ------------------------------------------------

@pytest.mark.parametrize("policy", ["deduct", "negative"])
def test_two_whole_returns_of_one_purchase_at_once_refund_it_once(app, policy):
    later = FIXED_NOW + timedelta(days=3)
    with app.app_context():
        set_rule(db.session, "shortfall_policy", policy, staff=None, now=FIXED_NOW)
        m = factories.member()
        buy(m.id, 50_000)  # 500 points
        purchase_id = buy(m.id, 38_888, points=100)  # paid ¥387.88, earns 387: balance 787
        buy(m.id, 787, points=787)  # ¥7.87 all in points: balance 0, so the return is 287 points short
        db.session.commit()
        member_id = m.id
        paid = db.session.get(Purchase, purchase_id).paid_fen
        assert paid == 38_788
        before = books(member_id)
        assert before["balance"] == 0

    outcomes = run_together(app, 2, lambda i: give_back(purchase_id, 38_888, later))

    refused = refusals(outcomes)
    done = [o for o in outcomes if isinstance(o, int)]
    assert len(done) == 1 and len(refused) == 1, outcomes
    error, message = refused[0]
    assert error.field is None and message == "Everything on this purchase has already been returned."
    with app.app_context():
        p = db.session.get(Purchase, purchase_id)
        rows = db.session.scalars(select(Return).where(Return.purchase_id == purchase_id)).all()
        assert [r.id for r in rows] == done
        assert (p.returned_gross_fen, p.refunded_fen, p.points_restored, p.points_reversed) == (
            38_888, paid, 100, 387)
        ret = rows[0]
        # Restored first (100), then 387 to reverse from 100: 287 short.
        deducted = 287 if policy == "deduct" else 0
        assert (ret.refund_fen, ret.shortfall_points, ret.shortfall_deducted_fen, ret.cash_refund_fen) == (
            paid, 287, deducted, paid - deducted)
        after = books(member_id)
        assert after["balance"] == after["ledger_sum"] == (0 if policy == "deduct" else -287)
        new_entries = [(kind, points) for _, kind, points, _ in after["entries"][len(before["entries"]):]]
        assert new_entries == [("restore", 100), ("reverse", -(387 - deducted))]


def test_ten_partial_returns_at_once_never_return_more_than_was_bought(app):
    """Ten tills each return ¥30.00 of a ¥100.00 purchase: three go through, the rest are told what is left."""
    later = FIXED_NOW + timedelta(days=1)
    with app.app_context():
        m = factories.member()
        purchase_id = buy(m.id, 10_000)
        db.session.commit()
        member_id = m.id

    outcomes = run_together(app, 10, lambda i: give_back(purchase_id, 3_000, later))

    refused = refusals(outcomes)
    assert len(refused) == 7 and sum(isinstance(o, int) for o in outcomes) == 3, outcomes
    for error, message in refused:
        assert error.field == "amount"
        assert message == "At most ¥10.00 of this purchase can still be returned."
    with app.app_context():
        p = db.session.get(Purchase, purchase_id)
        assert (p.returned_gross_fen, p.refunded_fen, p.points_reversed) == (9_000, 9_000, 90)
        rows = db.session.scalars(select(Return).where(Return.purchase_id == purchase_id).order_by(Return.id)).all()
        assert [(r.refund_fen, r.points_reversed) for r in rows] == [(3_000, 30)] * 3
        b = books(member_id)
        assert b["balance"] == b["ledger_sum"] == 10


# --- (c) sixteen tills credit one member at once --------------------------------------------------------

def test_sixteen_tills_crediting_one_member_lose_no_points(app):
    with app.app_context():
        m = factories.member()
        db.session.commit()
        member_id = m.id

    outcomes = run_together(app, 16, lambda i: buy(member_id, 10_000))  # ¥100.00 each

    assert all(isinstance(o, int) for o in outcomes), outcomes
    with app.app_context():
        bought = db.session.scalars(select(Purchase).where(Purchase.member_id == member_id).order_by(Purchase.id)).all()
        assert sorted(p.id for p in bought) == sorted(outcomes)
        b = books(member_id)
        assert b["balance"] == b["ledger_sum"] == sum(p.points_earned for p in bought)
        assert [kind for _, kind, _, _ in b["entries"]] == ["earn"] * 16
        assert [after for *_, after in b["entries"]] == list(
            itertools.accumulate(p.points_earned for p in bought))
        # They ran one after another: the tenth ¥100.00 reached silver (¥1,000), and the six after it had
        # silver's 2 % discount and 1.2x: paid ¥98.00, earned floor(98 x 1.2) = 117.
        assert [(p.paid_fen, p.points_earned) for p in bought] == [(10_000, 100)] * 10 + [(9_800, 117)] * 6
        assert b["balance"] == 10 * 100 + 6 * 117
        changes = db.session.scalars(select(TierChange).where(TierChange.member_id == member_id)).all()
        assert [(c.to_tier.code, c.purchase_id) for c in changes] == [("silver", bought[9].id)]


# --- (d) a transaction that fails halfway leaves nothing behind -----------------------------------------

def checkout_form(client, card: str, **data):
    page = client.get(f"/till/members/{card}")
    data.setdefault("idempotency_key", form_key(page))
    return data


class PowerCut(RuntimeError):
    """Raised by a patched ledger function after it did its work, before the transaction ends."""


@pytest.mark.parametrize("fail_at, points", [(LedgerKind.REDEEM, "100"), (LedgerKind.EARN, "100"),
                                             (LedgerKind.EARN, "")])
def test_checkout_failing_after_the_ledger_entry_writes_nothing(app, cashier_client, monkeypatch, fail_at, points):
    with app.app_context():
        m = factories.member()
        buy(m.id, 50_000, now=utcnow())  # 500 points, one lot
        db.session.commit()
        member_id, card = m.id, m.card_number
        before = books(member_id)
    form = checkout_form(cashier_client, card, gross="12.50", points=points)

    append = ledger._append

    def append_then_fail(session, member, kind, *args, **kwargs):
        entry = append(session, member, kind, *args, **kwargs)  # the entry is flushed, the balance moved
        if kind == fail_at:
            raise PowerCut(f"after the {kind.value} entry, before its lot")
        return entry

    with monkeypatch.context() as patch:
        patch.setattr(ledger, "_append", append_then_fail)
        with pytest.raises(PowerCut):  # TESTING: the error reaches the test instead of a 500 page
            cashier_client.post(f"/till/members/{card}/purchases", data=form, htmx=True)

    with app.app_context():
        assert books(member_id) == before
        assert checkout.find_by_key(db.session, form["idempotency_key"]) is None
    # The lock is gone and the form's key unused: the same form now goes through.
    response = cashier_client.post(f"/till/members/{card}/purchases", data=form, htmx=True)
    assert response.status_code == 200, response.get_data(as_text=True)[:2000]
    with app.app_context():
        after = books(member_id)
        assert len(after["purchases"]) == 2 and after["balance"] == after["ledger_sum"]
        assert after["balance"] == 500 - (100 if points else 0) + (1_150 if points else 1_250) // 100


def test_return_failing_at_the_reversal_writes_nothing(app, cashier_client, monkeypatch):
    with app.app_context():
        m = factories.member()
        buy(m.id, 50_000, now=utcnow())  # 500 points
        purchase_id = buy(m.id, 10_000, points=400, now=utcnow())  # paid ¥96.00, earns 96; balance 196
        db.session.commit()
        member_id = m.id
        before = books(member_id)
        assert before["balance"] == 196
    page = cashier_client.get(f"/till/purchases/{purchase_id}/return")
    assert page.status_code == 200
    form = {"amount": "100.00", "idempotency_key": form_key(page)}

    debit = ledger.debit

    def debit_then_fail(session, member, kind, *args, **kwargs):
        entry = debit(session, member, kind, *args, **kwargs)
        if kind == LedgerKind.REVERSE:
            raise PowerCut("after the reversal entry, before the tier and the commit")
        return entry

    with monkeypatch.context() as patch:
        patch.setattr(ledger, "debit", debit_then_fail)
        with pytest.raises(PowerCut):
            cashier_client.post(f"/till/purchases/{purchase_id}/returns", data=form, htmx=True)

    with app.app_context():
        after = books(member_id)
        assert after == before  # no Return row, no restore entry, purchase totals and lot uses untouched
        assert returns.find_by_key(db.session, form["idempotency_key"]) is None
        assert db.session.scalar(select(func.count()).select_from(Return)) == 0
    response = cashier_client.post(f"/till/purchases/{purchase_id}/returns", data=form, htmx=True)
    assert response.status_code == 200, response.get_data(as_text=True)[:2000]
    with app.app_context():
        p = db.session.get(Purchase, purchase_id)
        assert (p.returned_gross_fen, p.refunded_fen, p.points_restored, p.points_reversed) == (
            10_000, 9_600, 400, 96)
        b = books(member_id)
        assert b["balance"] == b["ledger_sum"] == 196 + 400 - 96


# --- (e) a daily job and a till lock the same two members ------------------------------------------------

def run_job(name: str, now) -> None:
    rules = load_rules(db.session)
    if name == "expire":
        points.expire_all(db.session, now=now)
    elif name == "review":
        tiers.review_all(db.session, now=now, retention_days=rules.tier_retention_days,
                         qualifying_days=rules.qualifying_days)
    else:
        points.birthday_bonuses(db.session, now=now, rules=rules)


@pytest.mark.parametrize("job_name", ["expire", "review", "birthday"])
def test_a_daily_job_and_a_referred_members_first_purchase_do_not_deadlock(app, monkeypatch, job_name):
    """The daily jobs lock members in id order; a referred member's first purchase locks the member, then the
    referrer (a lower id) for the referral bonus. Were a job to hold the referrer while waiting for the
    member, PostgreSQL would abort one of them as a deadlock: both must go through. (SQLite's single write
    lock serialises them.) The job is held, with the referrer locked, until the till has locked the member.
    """
    earned_at = FIXED_NOW
    job_time = earned_at + timedelta(days=800)  # past every lot's 730 days, every tier's 12 months
    with app.app_context():
        manager = factories.staff(role="manager")
        held_tier = "silver" if job_name == "review" else None  # for the review to move down
        referrer = factories.member(now=earned_at, tier=held_tier)
        newcomer = factories.member(now=earned_at, tier=held_tier, referrer=referrer)
        for m in (referrer, newcomer):
            m.birthday = job_time.date().replace(year=1990, day=10)  # for the birthday bonus
        buy(referrer.id, 10_000, now=earned_at)  # 100 points
        points.adjust(db.session, member_id=newcomer.id, staff=manager, store=factories.store(), points=50,
                      reason="welcome", rules=load_rules(db.session), now=earned_at)
        db.session.commit()
        referrer_id, newcomer_id = referrer.id, newcomer.id
        assert referrer_id < newcomer_id
        postgres = db.engine.dialect.name == "postgresql"

    referrer_locked, newcomer_locked = threading.Event(), threading.Event()
    lock_member = ledger.lock_member

    def lock_member_and_meet(session, member_id):
        member = lock_member(session, member_id)
        thread = threading.current_thread().name
        if thread == "till" and member_id == newcomer_id:
            newcomer_locked.set()
        if thread == "job" and member_id == referrer_id:
            referrer_locked.set()  # the job holds the referrer's row ...
            newcomer_locked.wait(timeout=10 if postgres else 1)  # ... until the till holds the newcomer's
        return member

    errors: list[BaseException] = []

    def work(run) -> None:
        with app.app_context():
            declare_write_intent()
            try:
                run()
                db.session.commit()
            except BaseException as error:
                db.session.rollback()
                errors.append(error)
            finally:
                referrer_locked.set()

    def till():
        referrer_locked.wait(timeout=10)
        buy(newcomer_id, 10_000, now=job_time)

    monkeypatch.setattr(ledger, "lock_member", lock_member_and_meet)
    threads = [threading.Thread(target=work, args=(lambda: run_job(job_name, job_time),), name="job"),
               threading.Thread(target=work, args=(till,), name="till")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    monkeypatch.undo()
    assert not any(thread.is_alive() for thread in threads), "the job or the till hung"
    assert errors == [], f"aborted: {errors!r}"

    with app.app_context():
        for member_id in (referrer_id, newcomer_id):
            b = books(member_id)
            assert b["balance"] == b["ledger_sum"]
        assert len(books(newcomer_id)["purchases"]) == 1
        referral = db.session.scalars(select(LedgerEntry).where(
            LedgerEntry.member_id == referrer_id, LedgerEntry.reason == "referral")).one()
        assert referral.points == 200 and referral.related_member_id == newcomer_id
        if job_name == "expire":
            for member_id in (referrer_id, newcomer_id):
                assert "expire" in [kind for _, kind, _, _ in books(member_id)["entries"]]
        elif job_name == "review":
            for member_id in (referrer_id, newcomer_id):
                assert db.session.get(Member, member_id).tier.code == "member"
        else:
            for member_id in (referrer_id, newcomer_id):
                assert db.session.get(Member, member_id).last_birthday_bonus_year == job_time.year
