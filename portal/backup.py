"""Backups of the whole database, and putting one back.

SQLite: sqlite3's online backup API copies the live file page by page inside one read transaction, so the copy
is consistent and the portal goes on serving (in WAL mode readers never block writers, nor writers readers).
The copy is made self-contained (rollback journal, no -wal file). A restore copies the backup back INTO the
live file with the same API, under the database's own locks: connections that other processes hold open see the
restored data on their next transaction, where moving a file under them would leave them on the old one.

PostgreSQL: pg_dump in custom format, and pg_restore --clean --if-exists --no-owner --single-transaction, so a
restore that fails changes nothing. The tools come from PG_BIN_DIR, PATH or the newest
/usr/lib/postgresql/<version>/bin; the password goes to them in PGPASSWORD, never on the command line.

A backup is written to a temporary name beside the target and renamed when it is complete: a failed backup leaves
no file (and an older backup of the same name stays as it was). Backups hold personal data: they are created
readable by their owner only.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import sqlite3
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import SQLAlchemyError

SQLITE_MAGIC = b"SQLite format 3\x00"
PG_DUMP_MAGIC = b"PGDMP"


class BackupError(Exception):
    """A backup or restore that could not be done; the message says why and what to do."""


@dataclass(frozen=True)
class BackupFile:
    """A backup file checked for restoring: its database kind and its schema revision."""

    path: Path
    kind: str  # "sqlite" or "postgresql"
    revision: str
    head: str  # the newest revision this code knows

    @property
    def needs_upgrade(self) -> bool:
        return self.revision != self.head


def schema_revisions(migrations_dir: str | Path) -> list[str]:
    """The schema revisions this code knows, oldest first."""
    script = ScriptDirectory(str(migrations_dir))
    return [revision.revision for revision in reversed(list(script.walk_revisions()))]


def database_kind(engine: Engine) -> str:
    kind = engine.dialect.name
    if kind not in ("sqlite", "postgresql"):
        raise BackupError(f"Backups of a {kind} database are not supported (only SQLite and PostgreSQL).")
    return kind


def describe(engine: Engine) -> str:
    """The database for a message: its URL without the password."""
    return engine.url.render_as_string(hide_password=True)


def default_target(engine: Engine, folder: str | Path, now: datetime, prefix: str = "portal") -> Path:
    """A backup's file name when none is given: `<folder>/portal-20260615T040000Z.db` (UTC; `.dump` for a
    pg_dump archive), which sorts by time."""
    suffix = ".db" if database_kind(engine) == "sqlite" else ".dump"
    return Path(folder) / f"{prefix}-{now.strftime('%Y%m%dT%H%M%SZ')}{suffix}"


def backup(engine: Engine, target: str | Path, *, timeout: float = 15.0, pg_bin_dir: str | None = None) -> Path:
    """Copy the whole database to `target` (a file, replaced if it exists) while the portal may be serving.

    Waits up to `timeout` seconds for a lock another connection holds (SQLite: a writer in a database that is
    not in WAL mode; PostgreSQL: a table being changed by a migration). Returns the path written."""
    target = Path(target).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    os.close(handle)
    temp = Path(temp_name)  # mkstemp made it readable by its owner only; it keeps that mode
    try:
        if database_kind(engine) == "sqlite":
            _sqlite_backup(_sqlite_path(engine), temp, timeout)
        else:
            _pg_backup(engine.url, temp, timeout, pg_bin_dir)
        _sync(temp)
        os.replace(temp, target)
        _sync(target.parent)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return target


def check_backup(engine: Engine, source: str | Path, *, migrations_dir: str | Path,
                 pg_bin_dir: str | None = None) -> BackupFile:
    """Check that `source` is a backup of this portal's database that this code can restore, and say what it
    holds. Changes nothing. Refuses another kind of file, the other database's backups, a damaged file and a
    schema newer than this code knows."""
    source = Path(source)
    kind = database_kind(engine)
    try:
        with source.open("rb") as file:
            start = file.read(len(SQLITE_MAGIC))
    except OSError as error:
        raise BackupError(f"Cannot read {source}: {error.strerror}.") from None
    if start.startswith(PG_DUMP_MAGIC) and kind == "sqlite":
        raise BackupError(f"{source} is a PostgreSQL backup (pg_dump); this portal's database is SQLite.")
    if start == SQLITE_MAGIC and kind == "postgresql":
        raise BackupError(f"{source} is a SQLite backup; this portal's database is PostgreSQL.")
    if kind == "sqlite":
        if start != SQLITE_MAGIC:
            raise BackupError(f"{source} is not a SQLite database, so not a backup of this portal.")
        revisions = _sqlite_backup_revisions(source)
    else:
        if not start.startswith(PG_DUMP_MAGIC):
            raise BackupError(f"{source} is not a pg_dump archive (custom format), so not a backup of this portal.")
        revisions = _pg_dump_revisions(source, pg_bin_dir)
    known = schema_revisions(migrations_dir)
    if len(revisions) != 1:
        raise BackupError(f"{source} is not a backup of this portal: it has no schema revision (alembic_version).")
    revision = revisions[0]
    if revision not in known:
        raise BackupError(
            f"{source} is at schema revision {revision!r}, which this version of the portal does not know "
            f"(the newest it knows is {known[-1]!r}): it was made by a newer version. Install that version "
            "or a later one, then restore."
        )
    return BackupFile(path=source, kind=kind, revision=revision, head=known[-1])


def restore(engine: Engine, source: str | Path, *, migrations_dir: str | Path, timeout: float = 15.0,
            pg_bin_dir: str | None = None) -> BackupFile:
    """Replace every table of the database with the backup `source`, after checking it (check_backup).

    The engine's pooled connections are closed first. SQLite: the backup is copied into the live file under a
    write lock, waiting up to `timeout` seconds for one; PostgreSQL: pg_restore in one transaction, each lock
    waited for up to `timeout` seconds (stop the app servers if they keep tables busy). On failure the
    database is as it was."""
    checked = check_backup(engine, source, migrations_dir=migrations_dir, pg_bin_dir=pg_bin_dir)
    known = schema_revisions(migrations_dir)
    if checked.kind == "postgresql":
        live = live_revision(engine)
        if live in known and known.index(live) > known.index(checked.revision):
            raise BackupError(
                f"{source} is at schema revision {checked.revision!r}, older than the database's {live!r}: "
                "restoring it over the newer schema would leave the newer tables behind. Restore it into an "
                "empty database (createdb, point DATABASE_URL at it), then run `flask --app app db upgrade`."
            )
    engine.dispose()
    if checked.kind == "sqlite":
        _sqlite_restore(Path(source), _sqlite_path(engine), timeout)
    else:
        _pg_restore(engine, Path(source), timeout, pg_bin_dir)
    engine.dispose()
    if live_revision(engine) != checked.revision:
        raise BackupError(f"The restore finished but the database is not at revision {checked.revision!r}.")
    return checked


def live_revision(engine: Engine) -> str | None:
    """The database's schema revision (alembic_version); None for a database without one."""
    try:
        with engine.connect() as connection:
            if not inspect(connection).has_table("alembic_version"):
                return None
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except SQLAlchemyError as error:
        raise BackupError(f"The database's schema revision cannot be read: {getattr(error, 'orig', None) or error}"
                          ) from None


def _sync(path: Path) -> None:
    """Flush a file or a folder entry to the disk, so a backup that was reported written survives a crash."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


# --- SQLite ------------------------------------------------------------------------------------------------

def _sqlite_path(engine: Engine) -> Path:
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        raise BackupError("Only a SQLite database in a file can be backed up and restored.")
    return Path(database).absolute()


def _sqlite_connect(path: Path, mode: str, timeout: float) -> sqlite3.Connection:
    """A plain sqlite3 connection: mode "ro" (never writes, never creates), "rw" or "rwc" (may create)."""
    return sqlite3.connect(f"{path.absolute().as_uri()}?mode={mode}", uri=True, timeout=timeout,
                           isolation_level=None)


class _TimedOut(Exception):
    pass


def _copy(source: sqlite3.Connection, destination: sqlite3.Connection, timeout: float) -> None:
    """The whole database in one step (one read transaction: a consistent copy), giving up when a lock is
    still held after `timeout` seconds (sqlite3 itself would retry forever)."""
    deadline = time.monotonic() + timeout

    def progress(status: int, _remaining: int, _total: int) -> None:
        if status in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) and time.monotonic() > deadline:
            raise _TimedOut

    source.backup(destination, progress=progress, sleep=0.1)


def _sqlite_backup(live: Path, temp: Path, timeout: float) -> None:
    if not live.is_file():
        raise BackupError(f"There is no database at {live}.")
    try:
        source = _sqlite_connect(live, "ro", timeout)
        destination = sqlite3.connect(temp, isolation_level=None)
        try:
            _copy(source, destination, timeout)
            destination.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
            if destination.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise BackupError("The copy did not pass SQLite's check; nothing was written. Try again.")
        finally:
            destination.close()
            source.close()
    except _TimedOut:
        raise BackupError(f"The database stayed locked for {timeout:g} seconds; nothing was written. "
                          "Try again.") from None
    except sqlite3.Error as error:
        raise BackupError(f"The backup failed ({error}); nothing was written.") from None


def _sqlite_backup_revisions(source: Path) -> list[str]:
    try:
        connection = _sqlite_connect(source, "ro", 1.0)
        try:
            if connection.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise BackupError(f"{source} is damaged (SQLite's check failed): it cannot be restored.")
            has_version = connection.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'").fetchone()
            if not has_version:
                return []
            return [row[0] for row in connection.execute("SELECT version_num FROM alembic_version")]
        finally:
            connection.close()
    except sqlite3.Error as error:
        raise BackupError(f"{source} is damaged ({error}): it cannot be restored.") from None


def _sqlite_restore(source: Path, live: Path, timeout: float) -> None:
    if live.exists() and source.resolve() == live.resolve():
        raise BackupError(f"{source} is the live database itself, not a backup.")
    live.parent.mkdir(parents=True, exist_ok=True)
    try:
        backup_connection = _sqlite_connect(source, "ro", timeout)
        destination = _sqlite_connect(live, "rwc", timeout)  # a lost database file is made anew
        try:
            _copy(backup_connection, destination, timeout)
        finally:
            destination.close()
            backup_connection.close()
    except _TimedOut:
        raise BackupError(f"The database stayed locked for {timeout:g} seconds; nothing was changed. "
                          "Try again, or stop the app servers first.") from None
    except sqlite3.Error as error:
        raise BackupError(f"The restore failed ({error}); the database was not changed.") from None


# --- PostgreSQL --------------------------------------------------------------------------------------------

def find_pg_tool(name: str, bin_dir: str | None = None) -> str:
    """pg_dump or pg_restore: from `bin_dir` (PG_BIN_DIR) when set, else PATH, else the newest
    /usr/lib/postgresql/<version>/bin (Debian's layout)."""
    if bin_dir:
        candidate = Path(bin_dir) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
        raise BackupError(f"{name} is not in PG_BIN_DIR ({bin_dir}).")
    found = shutil.which(name)
    if found:
        return found

    def version(path: str) -> tuple[int, ...]:
        number = Path(path).parent.parent.name
        return tuple(int(part) for part in number.split(".")) if re.fullmatch(r"\d+(\.\d+)*", number) else (0,)

    installed = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=version, reverse=True)
    if installed:
        return installed[0]
    raise BackupError(f"{name} was not found on PATH nor in /usr/lib/postgresql/*/bin. Install the PostgreSQL "
                      "client tools (apt-get install postgresql-client) or set PG_BIN_DIR to their folder.")


def libpq_arguments(url: URL, **extra: str) -> tuple[str, dict[str, str]]:
    """A libpq connection string for pg_dump/pg_restore --dbname, and the environment to run them in.

    The SQLAlchemy URL (postgresql+psycopg://user:password@host:port/db?sslmode=require) becomes
    "host=... port=... user=... dbname=... sslmode=..."; the password goes to PGPASSWORD, never into the
    command line (where any user of the machine could read it). `extra` adds or replaces parameters."""
    parameters: dict[str, str] = {}
    for key, value in url.translate_connect_args(username="user", database="dbname").items():
        parameters[key] = str(value)
    for key, value in url.query.items():
        parameters[key] = ",".join(value) if isinstance(value, tuple) else str(value)
    parameters.update(extra)
    password = parameters.pop("password", None)
    environment = dict(os.environ)
    if password:
        environment["PGPASSWORD"] = password

    def quoted(value: str) -> str:
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"

    return " ".join(f"{key}={quoted(value)}" for key, value in parameters.items()), environment


def _run(command: list[str], environment: dict[str, str] | None, what: str) -> str:
    try:
        done = subprocess.run(command, env=environment, capture_output=True, stdin=subprocess.DEVNULL)
    except OSError as error:
        raise BackupError(f"{what} could not be run: {error.strerror}.") from None
    if done.returncode != 0:
        tool = Path(command[0]).name + ": "
        errors = [line.removeprefix(tool) for line in done.stderr.decode("utf-8", "replace").strip().splitlines()]
        detail = " ".join(errors[-3:]) if errors else f"exit status {done.returncode}"
        raise BackupError(f"{what} failed: {detail}")
    return done.stdout.decode("utf-8", "replace")


def _pg_backup(url: URL, temp: Path, timeout: float, bin_dir: str | None) -> None:
    pg_dump = find_pg_tool("pg_dump", bin_dir)
    pg_restore = find_pg_tool("pg_restore", bin_dir)
    conninfo, environment = libpq_arguments(url)
    _run([pg_dump, "--format=custom", "--no-password", f"--lock-wait-timeout={int(timeout * 1000)}",
          f"--file={temp}", f"--dbname={conninfo}"], environment, "pg_dump")
    _run([pg_restore, "--list", str(temp)], None, "Reading the new archive back (pg_restore --list)")


def _pg_dump_revisions(source: Path, bin_dir: str | None) -> list[str]:
    """The rows of alembic_version in a pg_dump archive, read without a database (pg_restore to stdout)."""
    pg_restore = find_pg_tool("pg_restore", bin_dir)
    try:
        listing = _run([pg_restore, "--data-only", "--table=alembic_version", "--file=-", str(source)], None,
                       "pg_restore")
    except BackupError as error:
        raise BackupError(f"{source} cannot be read as a pg_dump archive ({error}).") from None
    revisions, copying = [], False
    for line in listing.splitlines():
        if copying:
            if line == "\\.":
                break
            revisions.append(line.strip())
        elif line.startswith("COPY ") and "alembic_version" in line:
            copying = True
    return revisions


def _pg_restore(engine: Engine, source: Path, timeout: float, bin_dir: str | None) -> None:
    """pg_restore in one transaction. pg_restore sets lock_timeout to 0 itself, and while it waits for a table
    every request that touches the table queues behind it: so a watchdog cancels its statement when it has
    waited for a lock longer than `timeout` seconds, and the whole restore rolls back."""
    pg_restore = find_pg_tool("pg_restore", bin_dir)
    name = f"portal-restore-{os.getpid()}-{time.monotonic_ns()}"
    conninfo, environment = libpq_arguments(engine.url, application_name=name)
    command = [pg_restore, "--clean", "--if-exists", "--no-owner", "--single-transaction", "--no-password",
               f"--dbname={conninfo}", str(source)]
    try:
        process = subprocess.Popen(command, env=environment, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE)
    except OSError as error:
        raise BackupError(f"pg_restore could not be run: {error.strerror}.") from None
    cancelled = False
    while True:
        try:
            _out, errors = process.communicate(timeout=0.25)
            break
        except subprocess.TimeoutExpired:
            cancelled = cancelled or _cancel_if_kept_waiting(engine, name, timeout)
    if process.returncode == 0:
        return
    if cancelled:
        raise BackupError(f"The restore waited more than {timeout:g} seconds for a table that another connection "
                          "kept busy, and stopped. Nothing was changed (the restore runs in one transaction). Stop "
                          "the app servers, or try again at a quiet moment.")
    lines = [line.removeprefix("pg_restore: ") for line in errors.decode("utf-8", "replace").strip().splitlines()]
    detail = " ".join(lines[-3:]) if lines else f"exit status {process.returncode}"
    raise BackupError(f"pg_restore failed: {detail} Nothing was changed (the restore runs in one transaction).")


def _cancel_if_kept_waiting(engine: Engine, application_name: str, timeout: float) -> bool:
    """Cancel the restore's statement when it has waited for a lock for more than `timeout` seconds."""
    try:
        with engine.connect() as connection:
            cancelled = connection.execute(text(
                "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = :name "
                "AND wait_event_type = 'Lock' AND clock_timestamp() - query_start > make_interval(secs => :seconds)"
            ), {"name": application_name, "seconds": timeout}).scalars().all()
            connection.rollback()
    except SQLAlchemyError:
        return False
    return any(cancelled)
