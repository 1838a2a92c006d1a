"""The ledger: append-only in the database, and the cached balance always equals the sum of the entries."""
from __future__ import annotations

import random

import pytest
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import DBAPIError

from portal import checkout, ledger
from portal.extensions import db
from portal.models import LedgerEntry, Member, Purchase
from portal.rules import load_rules

from . import factories


@pytest.mark.parametrize("statement", [
    update(LedgerEntry).values(points=1_000_000),
    delete(LedgerEntry),
])
def test_ledger_entries_cannot_be_changed_or_deleted(app, statement):
    with app.app_context():
        m = factories.member()
        factories.purchase(m, 10_000)
        db.session.commit()
        with pytest.raises(DBAPIError, match="append-only"):
            db.session.execute(statement)
            db.session.flush()
        db.session.rollback()
        assert db.session.scalar(select(func.sum(LedgerEntry.points))) == 100


@pytest.mark.parametrize("seed", range(3))
def test_balance_always_equals_the_ledger_and_never_goes_negative(app, seed):
    """Random purchases with random redemptions, some refused: the books always add up."""
    rng = random.Random(seed)
    with app.app_context():
        people = [factories.member() for _ in range(3)]
        people[1].referrer_id = people[0].id
        db.session.commit()
        for _ in range(40):
            m = rng.choice(people)
            db.session.refresh(m)
            points = rng.choice([0, 0, 100, 250, m.points_balance, m.points_balance + 1])
            try:
                factories.purchase(m, rng.randint(1, 300_000), points=points)
                db.session.commit()
            except checkout.CheckoutError:
                db.session.rollback()
        for m in db.session.scalars(select(Member)):
            assert m.points_balance == ledger.ledger_sum(db.session, m.id)
            assert m.points_balance >= 0
            last = db.session.scalar(
                select(LedgerEntry.balance_after).where(LedgerEntry.member_id == m.id)
                .order_by(LedgerEntry.id.desc()).limit(1)
            )
            assert last in (None, m.points_balance)
        paid = db.session.scalar(select(func.sum(Purchase.paid_fen)))
        assert paid is not None and paid > 0


def test_sqlite_pragmas(app):
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        with app.app_context():
            with db.engine.connect() as conn:
                assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
                assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
                assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 15000
    else:
        assert app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql+psycopg://")


def test_earned_points_carry_their_expiry_in_store_time(app):
    with app.app_context():
        m = factories.member()
        rules = load_rules(db.session)
        result = factories.purchase(m, 10_000)
        db.session.commit()
        entry = db.session.scalars(select(LedgerEntry).where(LedgerEntry.purchase_id == result.purchase.id)).one()
        assert entry.kind == "earn" and entry.reason == "purchase_earn"
        assert entry.expires_at == ledger.lot_expiry(result.purchase.created_at, "Asia/Shanghai", rules.expiry_days)
