"""flask backup and flask restore: a backup restored gives back every table exactly as it was at backup time.

Every test using `app` runs on SQLite (the online backup API) and on PostgreSQL (pg_dump / pg_restore).
"""
from __future__ import annotations

import os
import resource
import signal
import sqlite3
import stat
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from portal import api_tokens, complaints, messaging
from portal import backup as backup_service
from portal.demo import load_demo
from portal.extensions import db
from portal.models import Member, MessageTemplate, Purchase, Store

from . import factories

HEAD = backup_service.schema_revisions(Path(__file__).resolve().parent.parent / "migrations")[-1]


# --- helpers -----------------------------------------------------------------------------------------------

def snapshot(app) -> dict[str, list[dict]]:
    """Every row of every table, all columns, ordered by primary key; and where each id counter stands
    (PostgreSQL's sequences, SQLite's sqlite_sequence), so new rows after a restore get fresh ids."""
    with app.app_context():
        engine = db.engine
        inspector = inspect(engine)
        tables: dict[str, list[dict]] = {}
        with engine.connect() as connection:
            for name in sorted(inspector.get_table_names()):
                key = inspector.get_pk_constraint(name)["constrained_columns"] or [
                    column["name"] for column in inspector.get_columns(name)]
                order = ", ".join(f'"{column}"' for column in key)
                tables[name] = [dict(row._mapping) for row in
                                connection.execute(text(f'SELECT * FROM "{name}" ORDER BY {order}'))]
            if engine.dialect.name == "postgresql":
                tables["(sequences)"] = [dict(row._mapping) for row in connection.execute(text(
                    "SELECT schemaname, sequencename, last_value FROM pg_sequences ORDER BY 1, 2"))]
            elif connection.execute(text("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'")).first():
                tables["sqlite_sequence"] = [dict(row._mapping) for row in connection.execute(
                    text("SELECT name, seq FROM sqlite_sequence ORDER BY name"))]
    return tables


def differences(expected: dict[str, list[dict]], actual: dict[str, list[dict]]) -> list[str]:
    """The tables whose rows differ, with the first differing row, for a readable failure."""
    found = []
    for name in sorted(set(expected) | set(actual)):
        want, got = expected.get(name), actual.get(name)
        if want != got:
            if want is None or got is None:
                found.append(f"{name}: table {'missing' if got is None else 'added'}")
                continue
            first = next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), min(len(want), len(got)))
            found.append(f"{name}: {len(want)} rows expected, {len(got)} found; first difference at row {first}: "
                         f"{want[first] if first < len(want) else None} != {got[first] if first < len(got) else None}")
    return found


def without_new_audit(tables: dict[str, list[dict]], action: str) -> dict[str, list[dict]]:
    """The tables with the audit entries of `action` (which the command itself writes afterwards) left out,
    and the audit log's id sequence set back by as many."""
    kept = dict(tables)
    kept["audit_log"] = [row for row in tables["audit_log"] if row["action"] != action]
    written = len(tables["audit_log"]) - len(kept["audit_log"])
    if "(sequences)" in kept:
        kept["(sequences)"] = [
            {**row, "last_value": row["last_value"] - written} if row["sequencename"] == "audit_log_id_seq" else row
            for row in kept["(sequences)"]]
    return kept


def invoke(runner, *args: str, input: str | None = None):
    """Run a flask command; a refusal is a message and a non-zero exit, never a traceback."""
    result = runner.invoke(args=list(args), input=input)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    return result


def revision(app) -> str:
    with app.app_context():
        return db.session.scalar(text("SELECT version_num FROM alembic_version"))


def set_revision(app, value: str) -> None:
    with app.app_context():
        db.session.execute(text("UPDATE alembic_version SET version_num = :value"), {"value": value})
        db.session.commit()


def member_count(app) -> int:
    with app.app_context():
        return len(db.session.scalars(select(Member.id)).all())


def add_member(app, name: str = "Added Later") -> int:
    with app.app_context():
        member = factories.member(name=name)
        factories.purchase(member, 12_300)
        db.session.commit()
        return member.id


def fill(app, runner, client, login) -> None:
    """A store's realistic data: the demo (members in every tier, a year of purchases and returns,
    complaints with their timeline, takings), a register's API purchase, a signed-in cashier and a wrong
    password, a changed rule, a visit rating, a message to a member and the outbox run."""
    with app.app_context():
        load_demo(db.session, member_count=12, seed=7)
        store = factories.store()
        _row, token = api_tokens.create_token(db.session, name="Till 9", store=store, staff=None,
                                              now=factories._now())
        db.session.commit()
        card = db.session.scalars(select(Member.card_number).order_by(Member.id)).first()
    answer = client.post("/api/v1/purchases", json={"card_number": card, "gross_amount": "88.80"}, csrf=False,
                         headers={"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex})
    assert answer.status_code == 201, answer.get_data(as_text=True)
    login(client, "manager")  # the demo has "cashier" and "cashier2"; login() makes "<role><n>"
    app.test_client().post("/login", data={"username": "cashier", "password": "not the password"})
    assert invoke(runner, "set-rule", "shortfall_policy", "negative").exit_code == 0
    with app.app_context():
        purchase = db.session.scalars(select(Purchase).order_by(Purchase.id)).first()
        complaints.rate_visit(db.session, member=purchase.member, purchase=purchase, rating=2, comment="太慢了",
                              now=factories._now())
        notice = db.session.scalars(select(MessageTemplate).where(MessageTemplate.code == "tier_change")).one()
        messaging.queue(db.session, member=purchase.member, template=notice, purpose="tier_change",
                        now=factories._now(), channels=messaging.Channels())
        db.session.commit()
    assert invoke(runner, "send-care").exit_code == 0
    assert invoke(runner, "send-messages").exit_code == 0


# --- the round trip ----------------------------------------------------------------------------------------

def test_a_restored_backup_gives_back_every_table_as_it_was(app, runner, client, login, tmp_path, request):
    fill(app, runner, client, login)
    at_backup = snapshot(app)
    filled = {name for name, rows in at_backup.items() if rows}
    assert {"members", "purchases", "returns", "ledger_entries", "point_lots", "complaints", "complaint_events",
            "audit_log", "store_takings", "api_tokens", "api_requests", "auth_sessions", "settings",
            "visit_ratings", "tier_changes", "job_locks", "login_failures", "messages", "message_deliveries"} <= filled
    assert len(filled) >= 25, sorted(set(at_backup) - filled)

    target = tmp_path / "nightly" / "portal.backup"
    result = invoke(runner, "backup", str(target))
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == str(target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600  # personal data: readable by its owner only
    assert os.listdir(target.parent) == ["portal.backup"]  # no temporary file left beside it
    with app.app_context():
        assert db.session.scalar(text("SELECT count(*) FROM audit_log WHERE action = 'database.backup'")) == 1

    # Another app server's connection, open across the restore: it must see the restored data, not a file
    # moved away under it.
    other_server = create_engine(app.config["SQLALCHEMY_DATABASE_URI"], pool_size=1)
    request.addfinalizer(other_server.dispose)
    with other_server.connect() as other:
        assert other.scalar(text("SELECT count(*) FROM members")) == len(at_backup["members"])
        other.rollback()

        # Business goes on after the backup: new rows, deleted rows, changed rows.
        added = add_member(app)
        with app.app_context():
            db.session.execute(text("DELETE FROM store_takings WHERE id IN (SELECT id FROM store_takings "
                                    "ORDER BY id LIMIT 25)"))
            db.session.execute(text("DELETE FROM auth_sessions"))
            db.session.execute(text("DELETE FROM visit_ratings"))
            db.session.execute(text("UPDATE members SET name = 'Renamed' WHERE id = :id"),
                               {"id": at_backup["members"][0]["id"]})
            db.session.commit()
        assert invoke(runner, "set-rule", "shortfall_policy", "deduct").exit_code == 0
        assert differences(at_backup, without_new_audit(snapshot(app), "database.backup"))

        result = invoke(runner, "restore", str(target), "--yes")
        assert result.exit_code == 0, result.output
        assert f"schema revision {HEAD}" in result.output

        restored = snapshot(app)
        assert differences(at_backup, without_new_audit(restored, "database.restore")) == []
        restore_entries = [row for row in restored["audit_log"] if row["action"] == "database.restore"]
        assert len(restore_entries) == 1 and restore_entries[0]["target"] == "file:portal.backup"

        assert other.scalar(text("SELECT count(*) FROM members WHERE id = :id"), {"id": added}) == 0
        assert other.scalar(text("SELECT name FROM members WHERE id = :id"),
                            {"id": at_backup["members"][0]["id"]}) == at_backup["members"][0]["name"]
        other.rollback()

    # The portal works on the restored data: a new member and purchase get fresh ids, the ledger adds up.
    again = add_member(app, "After Restore")
    assert again not in {row["id"] for row in at_backup["members"]}
    with app.app_context():
        for member in db.session.scalars(select(Member)):
            assert member.points_balance == db.session.scalar(
                text("SELECT COALESCE(SUM(points), 0) FROM ledger_entries WHERE member_id = :id"), {"id": member.id})
    # The safety copy of what was there before the restore is kept.
    kept = list((Path(app.instance_path) / "backups").glob("before-restore-*"))
    assert len(kept) == 1 and stat.S_IMODE(kept[0].stat().st_mode) == 0o600


def test_restore_asks_first_and_no_leaves_everything_as_it_was(app, runner, tmp_path):
    add_member(app, "Before")
    target = tmp_path / "b.backup"
    assert invoke(runner, "backup", str(target)).exit_code == 0
    added = add_member(app, "After")
    before = snapshot(app)

    result = invoke(runner, "restore", str(target), input="n\n")
    assert result.exit_code != 0
    assert "Replace ALL data" in result.output and "Aborted" in result.output
    assert differences(before, snapshot(app)) == []
    assert not (Path(app.instance_path) / "backups").exists() or not list(
        (Path(app.instance_path) / "backups").iterdir())

    result = invoke(runner, "restore", str(target), input="y\n")
    assert result.exit_code == 0, result.output
    with app.app_context():
        assert db.session.get(Member, added) is None


def test_backup_without_a_path_goes_to_the_instance_folder_with_the_time_in_its_name(app, runner):
    result = invoke(runner, "backup")
    assert result.exit_code == 0, result.output
    written = Path(result.output.splitlines()[-1])
    assert written.parent == Path(app.instance_path) / "backups"
    assert stat.S_IMODE(written.parent.stat().st_mode) == 0o700
    stamp = datetime.strptime(written.name.split("-", 1)[1].split(".")[0], "%Y%m%dT%H%M%SZ")
    assert abs(stamp.replace(tzinfo=timezone.utc) - datetime.now(timezone.utc)).total_seconds() < 120
    # A folder given: a timestamped file inside it.
    folder = written.parent.parent / "elsewhere"
    folder.mkdir()
    result = invoke(runner, "backup", str(folder))
    assert result.exit_code == 0 and Path(result.output.splitlines()[-1]).parent == folder


# --- refusals ----------------------------------------------------------------------------------------------

def _sqlite_file_of_another_application(path: Path) -> None:
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    connection.execute("INSERT INTO notes (body) VALUES ('hello')")
    connection.commit()
    connection.close()


@pytest.mark.parametrize("kind", ["csv", "empty", "cut_in_half", "cut_near_the_end", "other_database",
                                  "other_application"])
def test_restore_refuses_what_is_not_a_backup_of_this_portal(app, runner, tmp_path, db_backend, sqlite_template,
                                                            kind):
    add_member(app)
    bad = tmp_path / "bad.file"
    if kind == "csv":
        bad.write_text("name,phone\n王小明,+8613900000001\n")
    elif kind == "empty":
        bad.write_bytes(b"")
    elif kind.startswith("cut"):  # a real backup, cut short (a disk that filled, a copy interrupted)
        with app.app_context():
            load_demo(db.session, member_count=12, seed=5)
        good = tmp_path / "good.backup"
        assert invoke(runner, "backup", str(good)).exit_code == 0
        whole = good.read_bytes()
        bad.write_bytes(whole[: len(whole) // 2 if kind == "cut_in_half" else len(whole) * 19 // 20])
    elif kind == "other_database":  # the other kind of database's backup
        if db_backend == "sqlite":
            bad.write_bytes(b"PGDMP\x01\x0f\x00" + os.urandom(2000))
        else:
            bad.write_bytes(Path(sqlite_template).read_bytes())
    else:
        _sqlite_file_of_another_application(bad)
    before = snapshot(app)

    result = invoke(runner, "restore", str(bad), "--yes")
    assert result.exit_code == 1, result.output
    expected = {
        "csv": "not a SQLite database" if db_backend == "sqlite" else "not a pg_dump archive",
        "empty": "not a SQLite database" if db_backend == "sqlite" else "not a pg_dump archive",
        # PostgreSQL: the archive's table of contents is read, then the restore fails part-way and rolls back.
        "cut_in_half": "is damaged" if db_backend == "sqlite" else "cannot be read as a pg_dump archive",
        "cut_near_the_end": "is damaged" if db_backend == "sqlite" else "Nothing was changed",
        "other_database": ("is a PostgreSQL backup" if db_backend == "sqlite" else "is a SQLite backup"),
        "other_application": "no schema revision" if db_backend == "sqlite" else "is a SQLite backup",
    }[kind]
    assert expected in result.output
    assert "Error: " in result.output
    assert differences(before, snapshot(app)) == []


@pytest.mark.parametrize("stamped", ["9999_from_a_newer_version", "0007"])
def test_restore_checks_the_backups_schema_revision(app, runner, tmp_path, db_backend, stamped):
    """A backup from a newer portal is refused on both databases. An older one: SQLite takes it back whole and
    says to upgrade; PostgreSQL refuses (pg_restore --clean would leave the newer tables behind)."""
    assert revision(app) == HEAD
    add_member(app, "In the backup")
    set_revision(app, stamped)
    target = tmp_path / "stamped.backup"
    assert invoke(runner, "backup", str(target)).exit_code == 0
    set_revision(app, HEAD)
    later = add_member(app, "Not in the backup")
    before = snapshot(app)

    result = invoke(runner, "restore", str(target), "--yes")
    if stamped.startswith("9999"):
        assert result.exit_code == 1
        assert "does not know" in result.output and "newer version" in result.output
    elif db_backend == "postgresql":
        assert result.exit_code == 1
        assert "older than the database's" in result.output and "empty database" in result.output
    else:
        assert result.exit_code == 0, result.output
        assert "db upgrade" in result.output
        assert revision(app) == stamped
        with app.app_context():
            assert db.session.get(Member, later) is None
        return
    assert differences(before, snapshot(app)) == []
    assert revision(app) == HEAD


# --- failures leave nothing half-written ---------------------------------------------------------------------

def test_a_failed_backup_leaves_no_file_and_keeps_the_previous_one(app, runner, tmp_path):
    """The disk fills up in the middle of the backup (a file size limit the dump inherits): a clear error, a
    non-zero exit, no new file, and the previous backup of the same name is untouched."""
    with app.app_context():
        load_demo(db.session, member_count=12, seed=3)
    target = tmp_path / "backups" / "nightly.backup"
    assert invoke(runner, "backup", str(target)).exit_code == 0
    previous = target.read_bytes()
    assert len(previous) > 32_768
    add_member(app)

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (len(previous) // 4, hard))
    try:
        result = runner.invoke(args=["backup", str(target)])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    assert "failed" in result.output
    assert os.listdir(target.parent) == ["nightly.backup"]
    assert target.read_bytes() == previous


def test_a_missing_pg_dump_is_a_clear_error(app, runner, tmp_path, monkeypatch, db_backend):
    """PG_BIN_DIR pointing where there is no pg_dump: PostgreSQL's backup stops with a message; SQLite's
    backup needs no outside tool and goes on."""
    empty = tmp_path / "no-tools"
    empty.mkdir()
    monkeypatch.setenv("PG_BIN_DIR", str(empty))
    target = tmp_path / "out" / "x.backup"
    result = invoke(runner, "backup", str(target))
    if db_backend == "postgresql":
        assert result.exit_code == 1
        assert f"pg_dump is not in PG_BIN_DIR ({empty})" in result.output
        assert not target.exists() and os.listdir(target.parent) == []
    else:
        assert result.exit_code == 0 and target.exists()


# --- consistency under load --------------------------------------------------------------------------------

def test_a_backup_while_another_connection_holds_a_write_transaction_is_consistent(app, runner, tmp_path,
                                                                                  request):
    """A till is in the middle of a transaction (its rows written, not committed) when the backup runs: the
    backup does not wait for it, holds what was committed (on SQLite: also what still sits in the WAL), and
    none of the unfinished transaction."""
    member_id = add_member(app, "Original Name")
    other = create_engine(app.config["SQLALCHEMY_DATABASE_URI"], poolclass=NullPool)
    request.addfinalizer(other.dispose)
    target = tmp_path / "during.backup"
    held, failures = threading.Event(), []

    def till():
        try:
            with Session(other) as session:
                session.get(Member, member_id).name = "Committed Name"
                session.commit()
                session.get(Member, member_id).name = "Unfinished Name"
                session.add(Store(code="S009", name="Unfinished store", timezone="Asia/Shanghai",
                                  created_at=datetime.now(timezone.utc)))
                session.flush()  # the write lock (SQLite) or the row locks (PostgreSQL) are held from here
                held.set()
                deadline = time.monotonic() + 30
                while not target.exists() and time.monotonic() < deadline:  # until the backup file is complete
                    time.sleep(0.02)
                session.commit()
        except Exception as error:  # reported in the test below
            failures.append(error)
            held.set()

    thread = threading.Thread(target=till)
    thread.start()
    assert held.wait(30)
    at_backup = snapshot(app)
    started = time.monotonic()
    result = invoke(runner, "backup", str(target))
    thread.join(60)
    assert not failures, failures
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started < 25  # it did not wait out the till's transaction (30 s above)

    assert invoke(runner, "restore", str(target), "--yes").exit_code == 0
    assert differences(at_backup, without_new_audit(snapshot(app), "database.restore")) == []
    with app.app_context():
        assert db.session.get(Member, member_id).name == "Committed Name"
        assert db.session.scalars(select(Store).where(Store.code == "S009")).first() is None


def test_a_restore_that_cannot_get_the_database_gives_up_and_changes_nothing(app, runner, tmp_path, request):
    """A till holds a write transaction for longer than the lock timeout: the restore waits that long, says
    why it stopped, and the data is as it was (then the till's own change goes through)."""
    member_id = add_member(app, "Before")
    target = tmp_path / "b.backup"
    assert invoke(runner, "backup", str(target)).exit_code == 0
    add_member(app, "After")
    before = snapshot(app)
    app.config["DATABASE_LOCK_TIMEOUT_MS"] = 1000
    other = create_engine(app.config["SQLALCHEMY_DATABASE_URI"], poolclass=NullPool)
    request.addfinalizer(other.dispose)
    held, restore_ended, failures = threading.Event(), threading.Event(), []

    def till():
        try:
            with Session(other) as session:
                session.get(Member, member_id).name = "Till's change"
                session.flush()
                held.set()
                restore_ended.wait(30)  # (a restore that waited for ever would go on after these 30 s)
                session.commit()
        except Exception as error:  # reported in the test below
            failures.append(error)
            held.set()

    thread = threading.Thread(target=till)
    thread.start()
    assert held.wait(30)
    started = time.monotonic()
    result = invoke(runner, "restore", str(target), "--yes", "--no-safety-copy")
    waited = time.monotonic() - started
    restore_ended.set()
    thread.join(60)
    assert not failures, failures
    assert waited < 20
    assert result.exit_code == 1
    assert ("stayed locked" in result.output or "kept busy" in result.output), result.output
    assert "changed" in result.output
    before["members"] = [{**row, "name": "Till's change"} if row["id"] == member_id else row
                         for row in before["members"]]
    assert differences(before, snapshot(app)) == []


# --- the PostgreSQL tools, without a database ---------------------------------------------------------------

FAKE_TOOL = """#!/bin/sh
printf '%s\\n' "$@" > "$FAKE_LOG.$(basename "$0").args"
printf '%s' "$PGPASSWORD" > "$FAKE_LOG.$(basename "$0").password"
for argument in "$@"; do
    case "$argument" in --file=*) printf 'PGDMP fake archive' > "${argument#--file=}" ;; esac
done
"""


def test_pg_dump_gets_the_password_in_its_environment_never_on_the_command_line(tmp_path, monkeypatch):
    tools = tmp_path / "bin"
    tools.mkdir()
    for name in ("pg_dump", "pg_restore"):
        (tools / name).write_text(FAKE_TOOL)
        (tools / name).chmod(0o755)
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "log"))
    url = make_url("postgresql+psycopg://shop@db.example:6543/portal?sslmode=require&application_name=bk")
    engine = create_engine(url.set(password="s3cret 'pa\\ss"))
    written = backup_service.backup(engine, tmp_path / "out.dump", pg_bin_dir=str(tools))
    assert written.read_bytes() == b"PGDMP fake archive"
    arguments = (tmp_path / "log.pg_dump.args").read_text()
    assert "s3cret" not in arguments
    assert (tmp_path / "log.pg_dump.password").read_text() == "s3cret 'pa\\ss"
    assert "--format=custom" in arguments.splitlines() and "--no-password" in arguments.splitlines()
    conninfo = next(line for line in arguments.splitlines() if line.startswith("--dbname="))[len("--dbname="):]
    from psycopg.conninfo import conninfo_to_dict

    assert conninfo_to_dict(conninfo) == {"host": "db.example", "port": "6543", "user": "shop", "dbname": "portal",
                                          "sslmode": "require", "application_name": "bk"}


def test_the_newest_installed_postgresql_tools_are_found_when_path_has_none(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    installed = ["/usr/lib/postgresql/9.6/bin/pg_dump", "/usr/lib/postgresql/16/bin/pg_dump",
                 "/usr/lib/postgresql/15/bin/pg_dump"]
    monkeypatch.setattr(backup_service.glob, "glob", lambda pattern: list(installed))
    assert backup_service.find_pg_tool("pg_dump") == "/usr/lib/postgresql/16/bin/pg_dump"
    installed.clear()
    with pytest.raises(backup_service.BackupError, match="not found on PATH"):
        backup_service.find_pg_tool("pg_dump")
