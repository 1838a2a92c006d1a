"""flask commands: create-admin, create-api-token, demo, expire-points, review-tiers, birthday-bonus, set-rule,
send-care, send-messages, backup, restore, rebuild-rollups."""
from __future__ import annotations

import os
import secrets
import socket
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import click
from flask import Flask
from sqlalchemy import func, select

from . import api_tokens, audit, care, messaging, rollups, senders
from . import backup as backup_service
from . import points as points_service
from . import rules as rules_service
from . import staff as staff_service
from . import tiers
from .database import declare_write_intent
from .extensions import db
from .generate import generate_command
from .models import Member, Staff, Store
from .rules import load_rules

JOB_LEASE = timedelta(minutes=30)  # a job lock's lease; a server that died frees it when this runs out


def register_commands(app: Flask) -> None:
    @app.cli.command("create-admin")
    @click.option("--username", prompt=True, help="Login name of the first administrator.")
    @click.option("--name", default="", help="Display name (defaults to the username).")
    @click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True,
                  help="At least 10 characters; asked for when not given.")
    @click.option("--store-code", default="S001", show_default=True, help="Store to create if there is none yet.")
    @click.option("--store-name", default="Main store", show_default=True)
    @click.option("--phone", default=None, help="The administrator's own phone (they can never credit it).")
    def create_admin(username: str, name: str, password: str, store_code: str, store_name: str, phone: str | None):
        """Create an administrator account (there is no default password)."""
        declare_write_intent()
        now = datetime.now(timezone.utc)
        store = staff_service.ensure_store(db.session, code=store_code, name=store_name, now=now)
        try:
            admin = staff_service.create_staff(
                db.session, username=username, name=name, password=password, role="admin", store=store, now=now,
                phone=phone,
            )
        except staff_service.StaffError as error:
            db.session.rollback()
            raise click.ClickException(str(error)) from None
        db.session.commit()
        click.echo(f"Administrator {admin.username!r} created for store {store.code} ({store.name}).")

    @app.cli.command("create-api-token")
    @click.option("--name", required=True, help="The register's name, such as 'Till 2'.")
    @click.option("--store", "store_code", default=None, help="Store code (defaults to the first store).")
    def create_api_token(name: str, store_code: str | None):
        """Create a cash register's API token; the token alone is printed on the last line."""
        declare_write_intent()
        query = select(Store).where(Store.active.is_(True)).order_by(Store.id).limit(1)
        if store_code:
            query = select(Store).where(Store.code == store_code)
        store = db.session.scalars(query).one_or_none()
        if store is None:
            raise click.ClickException(
                f"No store with code {store_code!r}." if store_code else "There is no store yet: run create-admin."
            )
        if not store.active:
            raise click.ClickException(f"Store {store.code} is closed; its registers cannot use the API.")
        try:
            row, token = api_tokens.create_token(db.session, name=name, store=store, staff=None,
                                                 now=datetime.now(timezone.utc))
        except api_tokens.TokenError as error:
            db.session.rollback()
            raise click.ClickException(str(error.message)) from None
        db.session.commit()
        click.echo(f"Token {row.id} for register {row.name!r} at store {store.code} ({store.name}).")
        click.echo("It is shown only now; the portal keeps only its SHA-256.")
        click.echo(token)

    @app.cli.command("demo")
    @click.option("--if-empty", is_flag=True, help="Do nothing when the database already has members or staff.")
    @click.option("--members", "member_count", default=300, show_default=True)
    @click.option("--seed", default=None, type=int, help="Random seed, for a repeatable data set.")
    def demo(if_empty: bool, member_count: int, seed: int | None):
        """Fill a demo store: staff of each role (passwords printed), members in every tier, a year of purchases."""
        from .demo import load_demo

        declare_write_intent()
        has_data = db.session.scalar(select(func.count()).select_from(Member)) or db.session.scalar(
            select(func.count()).select_from(Staff)
        )
        saved = Path(app.instance_path) / "demo-logins.txt"
        if if_empty and has_data:
            click.echo("Database already has data; demo data not loaded.")
            if saved.exists():
                click.echo(saved.read_text(), nl=False)
            return
        logins = load_demo(db.session, member_count=member_count, seed=seed if seed is not None else secrets.randbits(32))
        lines = ["Demo logins (staff sign in at http://127.0.0.1:5000/login, the member at /member/login):"]
        lines += [f"  {role:8} {username:10} {password}" for username, password, role in logins]
        text = "\n".join(lines) + "\n"
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(text)
        saved.chmod(0o600)
        click.echo(f"Demo data loaded. The logins are kept in {saved} (readable by you only).")
        click.echo(text, nl=False)

    def moment(value: str | None) -> datetime:
        """--now for replaying a missed day; defaults to the current time."""
        if not value:
            return datetime.now(timezone.utc)
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise click.BadParameter(f"{value!r} is not an ISO 8601 time, e.g. 2026-03-11T00:05+08:00",
                                     param_hint="--now") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)

    now_option = click.option("--now", "now_text", default=None, metavar="ISO-8601",
                              help="Run as if at this time (default: now).")

    @app.cli.command("expire-points")
    @now_option
    def expire_points(now_text: str | None):
        """Post expiry entries for every lot whose expiry has passed (daily; running twice changes nothing)."""
        declare_write_intent()
        posted = points_service.expire_all(db.session, now=moment(now_text))
        click.echo(f"{posted} expiry entries posted.")

    @app.cli.command("review-tiers")
    @now_option
    def review_tiers(now_text: str | None):
        """Move members down whose tier has passed its 12 months and whose net spend no longer earns it."""
        declare_write_intent()
        rules = load_rules(db.session)
        moved = tiers.review_all(db.session, now=moment(now_text), retention_days=rules.tier_retention_days,
                                 qualifying_days=rules.qualifying_days)
        click.echo(f"{moved} members moved down.")

    @app.cli.command("birthday-bonus")
    @now_option
    def birthday_bonus(now_text: str | None):
        """Post the birthday bonus to members in their birthday month, once a year."""
        declare_write_intent()
        posted, forfeited = points_service.birthday_bonuses(db.session, now=moment(now_text),
                                                            rules=load_rules(db.session))
        click.echo(f"{posted} birthday bonuses posted; {forfeited} skipped (birthday changed in the last 30 days).")

    def job_holder() -> str:
        """Who holds a job lock: this server and process."""
        return f"{socket.gethostname()}:{os.getpid()}"[-64:]

    def outbox_setup():
        """The channels and senders configured (portal/senders.py); a setting that cannot work stops the job."""
        try:
            return senders.configured(app.config)
        except ValueError as error:  # senders.ConfigurationError
            raise click.ClickException(str(error)) from None

    def run_locked(name: str, now: datetime, work: Callable[[Callable[[], None]], None]) -> None:
        """Run `work()` under the job lock `name`, or say another server has it and do nothing.

        The lease runs in real time (not --now): a replay of a missed day must not take over a lease that
        today's run holds. `work` gets a heartbeat to call between batches, which renews the lease and stops
        the run if another server has taken it over. The lock is given back at the end, also after an error;
        finished_at records the run's own time (--now) only when it finished."""
        holder = job_holder()

        def heartbeat() -> None:
            if not messaging.renew_lock(db.session, name, holder=holder, now=datetime.now(timezone.utc),
                                        lease=JOB_LEASE):
                raise click.ClickException(f"{name} lost its lock to another server; stopped.")

        if not messaging.acquire_lock(db.session, name, holder=holder, now=datetime.now(timezone.utc),
                                      lease=JOB_LEASE):
            click.echo(f"{name} is already running elsewhere; nothing done.")
            return
        finished = False
        try:
            work(heartbeat)
            finished = True
        finally:
            db.session.rollback()
            messaging.release_lock(db.session, name, holder=holder, now=now, finished=finished)

    @app.cli.command("send-care")
    @now_option
    def send_care(now_text: str | None):
        """Queue birthday greetings, expiring-points reminders and tier-change notes (daily; nothing goes twice)."""
        declare_write_intent()
        now = moment(now_text)
        channels, _senders = outbox_setup()

        def work(heartbeat):
            run = care.send_care(db.session, now=now, channels=channels, heartbeat=heartbeat)
            for code in run.missing_templates:
                click.echo(f"No {code!r} template (archived or missing): those messages were not queued.")
            click.echo(f"{run.birthday} birthday greetings queued.")
            for days in care.THRESHOLDS:
                click.echo(f"{run.expiry[days]} reminders queued for points expiring within {days} days.")
            click.echo(f"{run.tier_change} tier-change notes queued.")

        run_locked(care.LOCK_NAME, now, work)

    @app.cli.command("send-messages")
    @now_option
    @click.option("--batch", default=100, show_default=True, type=click.IntRange(min=1),
                  help="Deliveries read from the outbox at a time.")
    def send_messages(now_text: str | None, batch: int):
        """Send what is due in the outbox (quiet hours and the monthly cap apply); resumes where it stopped."""
        declare_write_intent()
        fixed = moment(now_text) if now_text else None
        _channels, outbox_senders = outbox_setup()

        def work(heartbeat):
            def clock() -> datetime:  # called before each batch: keep the lease while the outbox is long
                heartbeat()
                return fixed or datetime.now(timezone.utc)

            run = messaging.send_due(
                db.session, now=fixed or datetime.now(timezone.utc), rules=load_rules(db.session),
                senders=outbox_senders, default_zone=app.config["BABEL_DEFAULT_TIMEZONE"], batch=batch,
                clock=clock,
            )
            click.echo(f"{run.sent} sent, {run.held} held for quiet hours, {run.retried} to retry, "
                       f"{run.failed} failed, {run.cancelled} cancelled.")
            for error in sorted(set(run.errors))[:5]:
                click.echo(f"  error: {error}")

        run_locked("send-messages", fixed or datetime.now(timezone.utc), work)

    app.cli.add_command(generate_command)

    @app.cli.command("rebuild-rollups")
    def rebuild_rollups():
        """Count the dashboard's running totals again from every purchase, return, member and ledger entry (after
        a bulk load; the portal keeps them up to date by itself otherwise)."""
        declare_write_intent()
        rollups.rebuild(db.session)
        db.session.commit()
        click.echo("The dashboard's totals were counted again.")

    @app.cli.command("set-rule")
    @click.argument("name")
    @click.argument("value")
    def set_rule(name: str, value: str):
        """Change one points rule, e.g. `set-rule shortfall_policy negative` (audited)."""
        declare_write_intent()
        try:
            change = rules_service.set_rule(db.session, name, value, staff=None, now=datetime.now(timezone.utc))
        except rules_service.RuleError as error:
            db.session.rollback()
            raise click.ClickException(str(error)) from None
        db.session.commit()
        click.echo(f"{name}: {change[0]!r} -> {change[1]!r}")

    def backup_options() -> dict:
        """How long a backup or restore waits for a lock, and where pg_dump/pg_restore are (PG_BIN_DIR)."""
        return {"timeout": app.config.get("DATABASE_LOCK_TIMEOUT_MS", 15000) / 1000,
                "pg_bin_dir": app.config.get("PG_BIN_DIR") or os.environ.get("PG_BIN_DIR") or None}

    def backups_folder() -> Path:
        folder = Path(app.instance_path) / "backups"
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        return folder

    def audit_database(action: str, path: Path) -> None:
        """Record a backup (all personal data leaves the database) or a restore in the audit log, when the
        database is at the schema this code writes (a restored older backup is not, until db upgrade)."""
        try:
            current = backup_service.live_revision(db.engine)
        except backup_service.BackupError:
            return
        if current != backup_service.schema_revisions(app.extensions["migrate"].directory)[-1]:
            return
        declare_write_intent()
        audit.record(db.session, action, at=datetime.now(timezone.utc), target=f"file:{path.name}"[:128],
                     after={"path": str(path), "bytes": path.stat().st_size})
        db.session.commit()

    @app.cli.command("backup")
    @click.argument("path", required=False, type=click.Path(path_type=Path))
    def backup(path: Path | None):
        """Copy the whole database to PATH while the portal serves (SQLite: online backup; PostgreSQL: pg_dump).

        PATH defaults to a timestamped file in the instance folder's backups/; a folder gets one inside it.
        The file written is printed alone on the last line."""
        now = datetime.now(timezone.utc)
        if path is None or path.is_dir():
            target = backup_service.default_target(db.engine, path or backups_folder(), now)
        else:
            target = path
        db.session.remove()
        try:
            written = backup_service.backup(db.engine, target, **backup_options())
        except backup_service.BackupError as error:
            raise click.ClickException(str(error)) from None
        audit_database("database.backup", written)
        click.echo(f"Backup of {backup_service.describe(db.engine)} written ({written.stat().st_size:,} bytes):")
        click.echo(str(written))

    @app.cli.command("restore")
    @click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
    @click.option("--yes", is_flag=True, help="Do not ask before replacing the data (for scripts).")
    @click.option("--no-safety-copy", is_flag=True,
                  help="Do not back up the current database first (e.g. when it is damaged).")
    def restore(path: Path, yes: bool, no_safety_copy: bool):
        """Replace ALL data with a backup made by `backup` (asks first unless --yes).

        The backup must be of this portal, at a schema revision this code knows. The current database is
        backed up to the instance folder's backups/ first (before-restore-...)."""
        options = backup_options()
        migrations = app.extensions["migrate"].directory
        db.session.remove()
        try:
            checked = backup_service.check_backup(db.engine, path, migrations_dir=migrations,
                                                  pg_bin_dir=options["pg_bin_dir"])
        except backup_service.BackupError as error:
            raise click.ClickException(str(error)) from None
        database = backup_service.describe(db.engine)
        if not yes:
            click.confirm(f"Replace ALL data in {database} with {path} (schema revision {checked.revision})?",
                          abort=True)
        if not no_safety_copy:
            safety = backup_service.default_target(db.engine, backups_folder(), datetime.now(timezone.utc),
                                                   prefix="before-restore")
            try:
                backup_service.backup(db.engine, safety, **options)
            except backup_service.BackupError as error:
                raise click.ClickException(f"The current database could not be saved first, so nothing was "
                                           f"restored: {error} (--no-safety-copy skips this step.)") from None
            click.echo(f"The current database was saved to {safety}.")
        try:
            restored = backup_service.restore(db.engine, path, migrations_dir=migrations, **options)
        except backup_service.BackupError as error:
            raise click.ClickException(str(error)) from None
        audit_database("database.restore", path.absolute())
        click.echo(f"{database} restored from {path} (schema revision {restored.revision}).")
        if restored.needs_upgrade:
            click.echo(f"The backup is of an older schema: run `flask --app app db upgrade` (to {restored.head}) "
                       "before serving.")
