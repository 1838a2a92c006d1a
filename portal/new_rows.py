"""Acting on the rows a transaction inserts, just before it commits, whichever code path added them.

The audit log's `ledger.post` entries and the dashboard's running totals both need every row of some kinds
that a transaction inserts, counted once, in the same transaction. `watch` registers, for one such consumer,
session hooks that collect those rows at each flush and hand the ones still in the session to the consumer
before the outermost commit. A savepoint's release is not a commit (its rows are handed over with the rest of
the transaction), and a savepoint rolled back takes back its own rows only.
"""
from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import event, inspect
from sqlalchemy.orm import Session


def watch(name: str, kinds: tuple[type, ...], consume: Callable[[Session, list], None]) -> None:
    """Before each commit, call consume(session, rows) with the rows of `kinds` the transaction inserted."""
    key = f"new_rows:{name}"

    def collect(session: Session, _flush_context) -> None:
        new = [obj for obj in session.new if isinstance(obj, kinds)]
        if new:
            session.info.setdefault(key, []).extend(new)

    def before_commit(session: Session) -> None:
        if session.in_nested_transaction():
            return
        if not session.info.get(key) and not any(isinstance(obj, kinds) for obj in session.new):
            return
        session.flush()
        rows = [obj for obj in session.info.pop(key, []) if inspect(obj).persistent]
        if rows:
            consume(session, rows)

    def after_rollback(session: Session, previous_transaction) -> None:
        if previous_transaction.nested:
            kept = [obj for obj in session.info.get(key, []) if obj in session]
            if kept:
                session.info[key] = kept
                return
        session.info.pop(key, None)

    listeners = _registered.setdefault(name, (collect, before_commit, after_rollback))
    for event_name, listener in zip(("after_flush", "before_commit", "after_soft_rollback"), listeners):
        if not event.contains(Session, event_name, listener):
            event.listen(Session, event_name, listener)


_registered: dict[str, tuple] = {}
