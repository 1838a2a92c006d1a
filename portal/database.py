"""Engine tuning for SQLite and the write-lock discipline shared by both databases.

SQLite runs in WAL mode with foreign keys on and a busy timeout. A request that
may write (any non-GET request, or a CLI command that asks for it) starts its
transaction with BEGIN IMMEDIATE, so two tills never both read a balance and
then both write it: the second waits for the first instead of failing late.
On PostgreSQL the same guarantee comes from row locks (SELECT ... FOR UPDATE)
taken by the service functions. On both, a lock waited for longer than the lock
timeout ends the request with an error (shown as "try again", nothing saved).
"""
from contextlib import contextmanager
from contextvars import ContextVar

import click
from flask import has_request_context, request
from sqlalchemy import event, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

_write_intent: ContextVar[bool] = ContextVar("write_intent", default=False)


def declare_write_intent(value: bool = True) -> None:
    """Mark the running CLI command as one that writes, until it ends.

    The mark is taken back when the command's click context closes, so it never outlives the command in a
    process that goes on (the test runner, a shell that invokes several commands)."""
    token = _write_intent.set(value)
    command = click.get_current_context(silent=True)
    if command is not None:
        command.call_on_close(lambda: _write_intent.reset(token))


@contextmanager
def write_intent():
    """Within this block, transactions on this thread take the write lock up front."""
    token = _write_intent.set(True)
    try:
        yield
    finally:
        _write_intent.reset(token)


def _wants_write_lock() -> bool:
    if _write_intent.get():
        return True
    return has_request_context() and request.method not in ("GET", "HEAD", "OPTIONS")


def configure_engine(engine: Engine, busy_timeout_ms: int) -> None:
    if engine.dialect.name == "postgresql":
        @event.listens_for(engine, "connect")
        def _on_pg_connect(dbapi_connection, _record):
            # A row lock held too long (a stuck till, a long job) ends the waiting request with an error page,
            # rather than leaving a cashier waiting for ever.
            with dbapi_connection.cursor() as cursor:
                cursor.execute(f"SET lock_timeout = {int(busy_timeout_ms)}")
            dbapi_connection.commit()
        return
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Let SQLAlchemy's begin event issue BEGIN itself (pysqlite's own is deferred only).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE" if _wants_write_lock() else "BEGIN")


def lock_row(session: Session, model, row_id: int):
    """Load one row for changing it, fresh from the database: SELECT ... FOR UPDATE on PostgreSQL, where
    concurrent writers then wait their turn; on SQLite the request already holds the write lock."""
    return session.scalars(
        select(model).where(model.id == row_id).with_for_update().execution_options(populate_existing=True)
    ).one_or_none()
