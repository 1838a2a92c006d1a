"""Engine tuning for SQLite and the write-lock discipline shared by both databases.

SQLite runs in WAL mode with foreign keys on and a busy timeout. A request that
may write (any non-GET request, or a CLI command that asks for it) starts its
transaction with BEGIN IMMEDIATE, so two tills never both read a balance and
then both write it: the second waits for the first instead of failing late.
On PostgreSQL the same guarantee comes from row locks (SELECT ... FOR UPDATE)
taken by the service functions. On both, a lock waited for longer than the lock
timeout ends the request with an error (shown as "try again", nothing saved).
"""
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from contextvars import ContextVar

try:
    import fcntl
except ImportError:  # Windows has no fcntl: SQLite's own waiting then decides who writes next
    fcntl = None

import click
from flask import g, has_request_context, request
from sqlalchemy import event, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
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
    return (has_request_context() and request.method not in ("GET", "HEAD", "OPTIONS")
            and not g.get("reading_only", False))


@contextmanager
def reading():
    """Within this block, a request that writes begins its transactions as reads (SQLite's plain BEGIN)."""
    before = g.get("reading_only", False)
    g.reading_only = True
    try:
        yield
    finally:
        g.reading_only = before


@contextmanager
def before_writing(session):
    """Around what a request reads to decide what to write (who is signed in, the form's checks, the member,
    the rules): on SQLite, read it in a transaction of its own, ended (keeping what it loaded) when the block
    ends, so that the write lock taken next covers the writing alone. The service functions load again,
    under the lock, whatever they change. On PostgreSQL, where reading takes no lock, nothing changes."""
    real = session() if callable(session) else session
    if real.get_bind().dialect.name != "sqlite":
        yield
        return
    with reading():
        yield
        end_keeping_loaded(real)


def end_keeping_loaded(session, *, done_writing: bool = False) -> None:
    """Commit, keeping what the session loaded instead of expiring it (it is what was just committed, so
    drawing the answer needs no query to load it again).

    With done_writing, the request has written all it will: its later transactions (a lazy load while the
    answer is drawn) are reads, and on SQLite do not take the write lock again."""
    real = session() if callable(session) else session
    previous = real.expire_on_commit
    real.expire_on_commit = False
    try:
        real.commit()
    finally:
        real.expire_on_commit = previous
    if done_writing and has_request_context():
        g.reading_only = True


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

    queue = WriterQueue.for_database(engine.url.database, busy_timeout_ms)

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        if not _wants_write_lock():
            connection.exec_driver_sql("BEGIN")
            return
        if queue is None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
            return
        dbapi_connection = connection.connection.dbapi_connection
        queue.enter(dbapi_connection)
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            queue.leave(dbapi_connection)
            raise

    if queue is not None:
        queue.release_after_transactions_of(engine)


class WriterQueue:
    """SQLite's writers, on this host, in a queue.

    SQLite lets one connection write at a time; the others poll for the lock, sleeping longer between tries
    the longer they have waited (up to 100 ms). Under a burst of checkouts, newcomers polling every
    millisecond keep taking the lock from a till that has been waiting a while, which then waits seconds. So
    a transaction that will write first waits its turn here: threads of one process on a lock of that
    process, processes on an advisory lock on a file beside the database (flock), which the kernel gives up
    when the holder releases it, or dies. The holder then takes SQLite's write lock at once. The turn ends
    when the transaction commits or rolls back (or its connection is closed).
    """

    _queues: dict[str, "WriterQueue"] = {}

    @classmethod
    def for_database(cls, database: str | None, timeout_ms: int) -> "WriterQueue | None":
        if not database or database == ":memory:" or database.startswith("file:") or fcntl is None:
            return None
        path = os.path.abspath(database) + "-writers"
        queue = cls._queues.get(path)
        if queue is None or queue.timeout != timeout_ms / 1000:
            queue = cls._queues[path] = cls(path, timeout_ms / 1000)
        return queue

    def __init__(self, path: str, timeout: float):
        self.path = path
        self.timeout = timeout
        self._turn = threading.Lock()  # one writer of this process at a time
        self._held: dict[int, int] = {}  # id(DBAPI connection) -> the file descriptor holding the flock

    def enter(self, dbapi_connection) -> None:
        deadline = time.monotonic() + self.timeout
        if not self._turn.acquire(timeout=self.timeout):
            raise _locked()
        try:
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            self._turn.release()
            raise
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not _wait_for_flock(descriptor, deadline - time.monotonic()):
                self._turn.release()
                raise _locked() from None
        except BaseException:
            os.close(descriptor)
            self._turn.release()
            raise
        self._held[id(dbapi_connection)] = descriptor

    def leave(self, dbapi_connection) -> None:
        descriptor = self._held.pop(id(getattr(dbapi_connection, "dbapi_connection", dbapi_connection)), None)
        if descriptor is None:
            return
        os.close(descriptor)  # closing the file releases the flock
        self._turn.release()

    def release_after_transactions_of(self, engine: Engine) -> None:
        """Leave the queue once the DBAPI commit or rollback is done (SQLAlchemy's commit and rollback events
        come before it), and when a connection is closed or invalidated."""
        dialect = engine.dialect
        commit, rollback = dialect.do_commit, dialect.do_rollback

        def do_commit(dbapi_connection):
            try:
                commit(dbapi_connection)
            finally:
                self.leave(dbapi_connection)

        def do_rollback(dbapi_connection):
            try:
                rollback(dbapi_connection)
            finally:
                self.leave(dbapi_connection)

        dialect.do_commit, dialect.do_rollback = do_commit, do_rollback
        for name in ("close", "invalidate", "close_detached"):
            event.listen(engine, name, lambda dbapi_connection, *_args: self.leave(dbapi_connection))


def _wait_for_flock(descriptor: int, timeout: float) -> bool:
    """Wait up to `timeout` seconds for the flock on `descriptor`; True once held. On False the descriptor is given
    up: the helper thread closes it when its wait ends (the lock comes, and so goes at once).

    The wait is a blocking flock, so that the kernel wakes the waiters the moment the lock is released, roughly
    in the order they came, instead of leaving it to whoever polls next. It happens in a helper thread, because a blocking flock cannot
    time out; a lock belongs to the open file, not to the thread that took it."""
    state = {"held": False, "abandoned": False}
    guard, taken = threading.Lock(), threading.Event()

    def wait() -> None:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        except OSError:
            os.close(descriptor)
            taken.set()
            return
        with guard:
            if state["abandoned"]:
                os.close(descriptor)
                return
            state["held"] = True
        taken.set()

    threading.Thread(target=wait, name="sqlite-writer-turn", daemon=True).start()
    taken.wait(max(timeout, 0))
    with guard:
        if state["held"]:
            return True
        state["abandoned"] = True
    return False


def _locked() -> OperationalError:
    return OperationalError("BEGIN IMMEDIATE", None, sqlite3.OperationalError("database is locked"))


def lock_row(session: Session, model, row_id: int):
    """Load one row for changing it, fresh from the database: SELECT ... FOR UPDATE on PostgreSQL, where
    concurrent writers then wait their turn; on SQLite the request already holds the write lock."""
    return session.scalars(
        select(model).where(model.id == row_id).with_for_update().execution_options(populate_existing=True)
    ).one_or_none()
