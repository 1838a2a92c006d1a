"""The dashboard's running totals (portal/rollups.py): whatever path writes the rows, the totals kept as the
transactions happen are exactly what counting every row again gives, and a transaction that is rolled back
leaves them as they were."""
from __future__ import annotations

import json
import threading
import uuid
from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from portal import checkout, ledger, rollups
from portal.database import declare_write_intent, write_intent
from portal.extensions import db
from portal.models import ActivityBucket, AuditLog, LedgerKind, Member, Staff, StaffBucket, Store
from portal.rules import load_rules

from . import factories
from .helpers import form_key

UTC = timezone.utc


def totals() -> dict:
    """Every bucket's figures, by key."""
    activity = {(row.store_id, row.bucket_start): tuple(getattr(row, c) for c in rollups.ACTIVITY_COLUMNS)
                for row in db.session.execute(select(ActivityBucket.__table__))}
    staff = {(row.staff_id, row.store_id, row.bucket_start): (row.registered, row.purchases, row.paid_fen)
             for row in db.session.execute(select(StaffBucket.__table__))}
    return {"activity": activity, "staff": staff}


def counted_again() -> dict:
    rollups.rebuild(db.session)
    db.session.flush()
    again = totals()
    db.session.rollback()
    return again


def test_bucket_starts_are_quarter_hours():
    moment = datetime(2026, 6, 15, 13, 44, 59, 999_999, tzinfo=UTC)
    assert rollups.bucket_of(moment) == datetime(2026, 6, 15, 13, 30, tzinfo=UTC)
    assert rollups.bucket_of(moment + timedelta(microseconds=1)) == datetime(2026, 6, 15, 13, 45, tzinfo=UTC)


def test_the_totals_kept_by_every_path_equal_the_rows_counted_again(app, client, login, runner):
    """Till checkouts (paying with points, with a referral), returns, registrations, a manager's adjustment, an
    API purchase, the expiry job, a member import's opening balance and a purchase at another store."""
    username = login(client, "manager")
    with app.app_context():
        second = factories.store("S002", "Second Store")
        second.timezone = "Europe/London"
        referrer = factories.member(name="Referrer")
        db.session.commit()
        newcomer = factories.member(name="Newcomer", referrer=referrer)
        factories.purchase(referrer, 50_000, now=datetime(2024, 1, 5, 3, 0, tzinfo=UTC))  # long expired by now
        factories.purchase(newcomer, 20_000, store_code="S002")
        db.session.commit()
        card, old_card = newcomer.card_number, referrer.card_number
    page = client.get(f"/till/members/{card}")
    bought = client.post(f"/till/members/{card}/purchases", data={"gross": "300", "points": "100",
                                                                  "idempotency_key": form_key(page)})
    assert bought.status_code == 303
    receipt = bought.headers["Location"].rstrip("/")
    returned = client.post(receipt + "/returns", data={"amount": "120",
                                                       "idempotency_key": form_key(client.get(receipt + "/return"))})
    assert returned.status_code == 303
    page = client.get(f"/till/members/{old_card}")
    client.post(f"/till/members/{old_card}/adjustments",
                data={"points": "-40", "reason": "count", "idempotency_key": form_key(page, "/adjustments")})
    assert client.post("/till/members", data={"name": "韩梅梅", "phone": "13600001111",
                                              "privacy_consent": "y"}).status_code == 303
    assert runner.invoke(args=["expire-points"]).exit_code == 0
    with app.app_context():
        kept = totals()
        assert kept == counted_again()
        assert len(kept["activity"]) >= 3 and len(kept["staff"]) >= 1
        # the manager's own work: one member registered, one purchase of ¥300.00 less 100 points (¥1.00)
        manager_id = db.session.scalars(select(Staff.id).where(Staff.username == username)).one()
        mine = [v for (staff_id, *_), v in kept["staff"].items() if staff_id == manager_id]
        assert tuple(map(sum, zip(*mine))) == (1, 1, 29_900)


def test_a_refused_or_rolled_back_transaction_adds_nothing(app):
    with app.app_context():
        member = factories.member()
        factories.purchase(member, 10_000)
        db.session.commit()
        before = totals()
        member = db.session.get(Member, member.id)
        store = db.session.get(Store, member.store_id)
        checkout.record_purchase(db.session, member_id=member.id, store=store, staff=None, gross_fen=5_000,
                                 points_to_redeem=0, idempotency_key=uuid.uuid4().hex, receipt_number=None,
                                 rules=load_rules(db.session), now=datetime.now(UTC))
        db.session.flush()
        db.session.rollback()
        assert totals() == before
        try:
            checkout.record_purchase(db.session, member_id=member.id, store=store, staff=None, gross_fen=5_000,
                                     points_to_redeem=10**6, idempotency_key=uuid.uuid4().hex, receipt_number=None,
                                     rules=load_rules(db.session), now=datetime.now(UTC))
        except checkout.CheckoutError:
            db.session.rollback()
        else:
            raise AssertionError("a redemption beyond the balance was accepted")
        assert totals() == before == counted_again()


def test_a_savepoint_counts_with_its_transaction_and_a_rolled_back_one_takes_back_its_rows_only(app):
    """A purchase flushed before a savepoint that is rolled back (as a checkout whose key another till used
    meanwhile) still counts once the transaction commits; the savepoint's own rows do not; and the audit log
    names the transaction's ledger rows in one entry, not one per savepoint."""
    with app.app_context():
        member = factories.member()
        db.session.commit()
        member = db.session.get(Member, member.id)
        store = db.session.get(Store, member.store_id)
        with write_intent():
            kept = checkout.record_purchase(db.session, member_id=member.id, store=store, staff=None,
                                            gross_fen=7_000, points_to_redeem=0, idempotency_key=uuid.uuid4().hex,
                                            receipt_number=None, rules=load_rules(db.session),
                                            now=datetime.now(UTC))
            savepoint = db.session.begin_nested()
            ledger.credit(db.session, member, LedgerKind.ADJUST, [ledger.Portion(999, None)], "adjust",
                          at=datetime.now(UTC), store=store)
            db.session.flush()
            savepoint.rollback()
            db.session.commit()
        kept_totals = totals()
        assert kept_totals == counted_again()
        assert sum(row[0] for row in kept_totals["activity"].values()) == 1  # the purchase
        assert sum(row[10] for row in kept_totals["activity"].values()) == 0  # points_adjusted_in: rolled back
        posts = db.session.scalars(
            select(AuditLog).where(AuditLog.action == "ledger.post", AuditLog.target == f"member:{member.id}")
        ).all()
        assert len(posts) == 1
        assert [e["purchase_id"] for e in json.loads(posts[0].after)["entries"]] == [kept.purchase.id]


def test_concurrent_checkouts_at_one_store_all_count(app):
    """Eight tills at once add to the same store's bucket: none of the additions is lost."""
    with app.app_context():
        ids = [factories.member().id for _ in range(8)]
        db.session.commit()
    barrier = threading.Barrier(8)
    failures: list[BaseException] = []

    def till(n: int) -> None:
        try:
            with app.app_context():
                declare_write_intent()
                barrier.wait(timeout=30)
                store = db.session.scalars(select(Store)).first()
                checkout.record_purchase(db.session, member_id=ids[n], store=store, staff=None,
                                         gross_fen=1_000 + n, points_to_redeem=0, idempotency_key=uuid.uuid4().hex,
                                         receipt_number=None, rules=load_rules(db.session), now=datetime.now(UTC))
                db.session.commit()
        except BaseException as error:  # re-raised below
            failures.append(error)

    threads = [threading.Thread(target=till, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    with app.app_context():
        kept = totals()
        purchases = sum(v[0] for v in kept["activity"].values())
        paid = sum(v[1] for v in kept["activity"].values())
        assert (purchases, paid) == (8, sum(1_000 + n for n in range(8)))
        assert kept == counted_again()


def test_rebuild_rollups_counts_rows_written_around_the_orm(app, runner):
    """A bulk load (the data generator) writes rows the session never sees: the command counts them."""
    with app.app_context():
        member = factories.member()
        factories.purchase(member, 10_000)
        db.session.commit()
        db.session.execute(ActivityBucket.__table__.delete())
        db.session.commit()
        assert totals()["activity"] == {}
    result = runner.invoke(args=["rebuild-rollups"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        activity = totals()["activity"]
        assert sum(v[0] for v in activity.values()) == 1  # the purchase
        assert sum(v[3] for v in activity.values()) == 1  # the new member
        assert sum(v[4] for v in activity.values()) == 100  # its points earned


def test_an_expiry_counts_for_the_members_store(app):
    with app.app_context():
        london = factories.store("S009", "London")
        member = factories.member(store_code="S009")
        factories.purchase(member, 10_000, store_code="S009", now=datetime(2024, 1, 1, 12, tzinfo=UTC))
        db.session.commit()
        member = db.session.get(Member, member.id)
        entries = ledger.expire_due(db.session, member, datetime(2026, 6, 1, tzinfo=UTC))
        db.session.commit()
        assert [e.kind for e in entries] == [LedgerKind.EXPIRE.value] and entries[0].store_id is None
        expired = {key[0]: v[7] for key, v in totals()["activity"].items() if v[7]}
        assert expired == {london.id: 100}


def test_counting_again_puts_each_row_in_its_quarter_hour(app):
    """Every minute of an hour, on both databases' own date arithmetic."""
    with app.app_context():
        member = factories.member(now=datetime(2026, 6, 15, 9, 0, tzinfo=UTC))
        for minute in range(0, 60, 7):
            factories.purchase(member, 1_000, now=datetime(2026, 6, 15, 9, minute, 59, 999_999, tzinfo=UTC))
        db.session.commit()
        kept = totals()
        again = counted_again()
        assert kept == again
        assert {start.minute for _store, start in again["activity"]} == {0, 15, 30, 45}
