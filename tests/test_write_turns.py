"""Tills that write at the same moment take turns (portal/database.py: on SQLite the writers' queue and the
database's write lock, on PostgreSQL the member's row lock): a till that finds another in the middle of a
change waits for it and then works on what it left; one kept waiting past the lock timeout is told to try
again and saves nothing; and whatever ends a turn (a commit, a rollback, an error) lets the next writer in."""
from __future__ import annotations

import fcntl
import os
import threading
from datetime import datetime, timezone

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from portal import ledger
from portal.database import WriterQueue, lock_row, write_intent
from portal.extensions import db
from portal.models import LedgerEntry, LedgerKind, Member, Purchase, Store

from . import factories
from .helpers import figure, form_key


def _adjust_and_hold(app, member_id: int, points: int, release: threading.Event, held: threading.Event,
                     commit: bool = True) -> None:
    """Another till, through the portal's own engine, in the middle of adding points to this member."""
    with app.app_context(), write_intent():
        member = lock_row(db.session, Member, member_id)
        store = db.session.get(Store, member.store_id)
        ledger.credit(db.session, member, LedgerKind.ADJUST, [ledger.Portion(points, None)], "adjustment",
                      at=datetime.now(timezone.utc), store=store)
        db.session.flush()
        held.set()
        release.wait(10)
        if commit:
            db.session.commit()
        else:
            db.session.rollback()
        db.session.remove()


def _member(app) -> tuple[int, str]:
    with app.app_context():
        member = factories.member()
        db.session.commit()
        return member.id, member.card_number


def _holding(app, member_id: int, points: int, commit: bool = True):
    release, held = threading.Event(), threading.Event()
    holder = threading.Thread(target=_adjust_and_hold, args=(app, member_id, points, release, held, commit))
    holder.start()
    assert held.wait(10)
    return holder, release


def test_a_checkout_waits_for_the_till_before_it_and_counts_on_its_points(app, client, login):
    login(client, "cashier")
    member_id, card = _member(app)
    page = client.get(f"/till/members/{card}")
    holder, release = _holding(app, member_id, 500)
    answers = []
    checkout = threading.Thread(target=lambda: answers.append(client.post(
        f"/till/members/{card}/purchases", data={"gross": "12.00", "idempotency_key": form_key(page)},
        headers={"HX-Request": "true"})))
    checkout.start()
    checkout.join(0.3)
    assert checkout.is_alive()  # waiting for its turn, not refused
    release.set()
    holder.join()
    checkout.join(10)
    assert answers[0].status_code == 200
    assert figure(answers[0], "balance") == "512"  # the other till's 500 points, then its own 12
    with app.app_context():
        assert [e.balance_after for e in db.session.scalars(
            select(LedgerEntry).where(LedgerEntry.member_id == member_id).order_by(LedgerEntry.id))] == [500, 512]


def test_reading_goes_on_while_another_till_writes(app, client, login):
    login(client, "cashier")
    member_id, card = _member(app)
    holder, release = _holding(app, member_id, 500)
    try:
        response = client.get(f"/till/lookup?q={card}", headers={"HX-Request": "true"})
        assert response.status_code == 200
        assert 'id="balance">0<' in response.get_data(as_text=True)  # what was committed, not the held change
    finally:
        release.set()
        holder.join()


@pytest.mark.config(DATABASE_LOCK_TIMEOUT_MS=300)
def test_a_till_kept_waiting_too_long_is_told_to_try_again_and_the_next_turn_is_free(app, client, login):
    login(client, "cashier")
    member_id, card = _member(app)
    page = client.get(f"/till/members/{card}")
    data = {"gross": "30.00", "idempotency_key": form_key(page)}
    holder, release = _holding(app, member_id, 500, commit=False)
    try:
        assert client.post(f"/till/members/{card}/purchases", data=data).status_code == 503
    finally:
        release.set()
        holder.join()
    # The holder rolled back and the refused request ended: nobody holds a turn, so the same form goes through
    # at once, and a second writer after it too.
    assert client.post(f"/till/members/{card}/purchases", data=data).status_code == 303
    again = client.get(f"/till/members/{card}")
    assert client.post(f"/till/members/{card}/purchases",
                       data={"gross": "1.00", "idempotency_key": form_key(again)}).status_code == 303
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Purchase)) == 2
        assert db.session.scalars(select(Member.points_balance).where(Member.id == member_id)).one() == 31


# --- SQLite's writers' queue itself (portal.database.WriterQueue), without a database -----------------------

class _Connection:
    """Stands for a DBAPI connection: the queue only keys on it."""


def _another_worker_holds(path: str):
    """Another worker process in its turn: a flock on the queue's file through a file of its own."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(descriptor, fcntl.LOCK_EX)
    return descriptor


def test_the_writers_queue_waits_for_another_process_and_gives_up_at_the_timeout(tmp_path):
    queue = WriterQueue.for_database(str(tmp_path / "portal.db"), 300)
    other = _another_worker_holds(queue.path)
    first = _Connection()
    with pytest.raises(OperationalError, match="database is locked"):
        queue.enter(first)  # the other worker keeps its turn past the timeout
    waiting, entered = _Connection(), threading.Event()
    waiter = threading.Thread(target=lambda: (queue.enter(waiting), entered.set()))
    waiter.start()
    assert not entered.wait(0.1)
    os.close(other)  # the other worker's transaction ends
    assert entered.wait(5)  # the waiting writer's turn, without polling
    waiter.join()
    with pytest.raises(OperationalError):  # now this process holds the turn: another worker waits for it
        WriterQueue(queue.path, 0.1).enter(_Connection())
    queue.leave(waiting)
    again = _Connection()
    queue.enter(again)  # free again: the given-up wait above left nothing behind
    queue.leave(again)
    queue.leave(again)  # leaving twice is harmless
    taken = _another_worker_holds(queue.path)  # and another worker gets it as soon as it is left
    os.close(taken)
