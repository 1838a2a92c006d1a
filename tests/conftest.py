"""Fixtures: the app on SQLite and on PostgreSQL, clients that send CSRF tokens, and logins by role.

Every test that uses `app` (or anything built on it) runs twice: once on a SQLite file
and once on a throwaway PostgreSQL cluster started for the session.
"""
from __future__ import annotations

import os
import shutil
from datetime import datetime, timezone

import pytest
from flask.testing import FlaskClient
from itsdangerous import URLSafeTimedSerializer
from sqlalchemy import Integer, create_engine, text

from portal import create_app
from portal.config import PostgresTestConfig, TestConfig
from portal.extensions import db, limiter

from . import factories, pgcluster

DATABASES = ["sqlite", "postgresql"]


def pytest_addoption(parser):
    parser.addoption("--db", action="append", choices=DATABASES, help="only these databases (default: both)")


def pytest_generate_tests(metafunc):
    if "db_backend" in metafunc.fixturenames:
        chosen = metafunc.config.getoption("db") or DATABASES
        metafunc.parametrize("db_backend", chosen, scope="session")


def _migrate(app) -> None:
    from flask_migrate import upgrade

    with app.app_context():
        upgrade()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory):
    """A migrated SQLite file; each test gets a copy."""
    path = tmp_path_factory.mktemp("sqlite") / "template.db"
    app = create_app(TestConfig, {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{path}"})
    _migrate(app)
    with app.app_context():
        db.engine.dispose()
    return path


@pytest.fixture(scope="session")
def pg_database():
    """A migrated PostgreSQL database and the rows the migrations seeded, restored before each test."""
    url = os.environ.get("TEST_DATABASE_URL")
    cluster = None
    if not url:
        cluster = pgcluster.start()
        admin = create_engine(cluster.url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("CREATE DATABASE portal_test"))
        admin.dispose()
        url = cluster.url.rsplit("/", 1)[0] + "/portal_test"
    app = create_app(PostgresTestConfig, {"SQLALCHEMY_DATABASE_URI": url})
    _migrate(app)
    with app.app_context():
        tables = [t.name for t in db.metadata.sorted_tables]
        id_tables = [t for t in db.metadata.sorted_tables
                     if "id" in t.c and t.c.id.primary_key and t.c.id.autoincrement in (True, "auto")
                     and isinstance(t.c.id.type, Integer)]
        seeds = {}
        with db.engine.connect() as conn:
            for table in db.metadata.sorted_tables:
                rows = [dict(r._mapping) for r in conn.execute(table.select())]
                if rows:
                    seeds[table] = rows
        db.engine.dispose()
    info = {"url": url, "tables": tables, "seeds": seeds, "id_tables": id_tables}
    yield info
    if "engine" in info:
        info["engine"].dispose()
    if cluster:
        cluster.stop()


def _reset_postgres(info) -> None:
    """Empty every table and put back the seeded rows, with each id sequence starting again where it would.

    DELETE with triggers and foreign-key checks off (session_replication_role) is some 20 times faster than
    TRUNCATE on tables this small; a role that may not do that (an existing TEST_DATABASE_URL) gets TRUNCATE."""
    engine = info.setdefault("engine", create_engine(info["url"]))
    tables = info["tables"]
    with engine.begin() as conn:
        if info.get("fast_reset", True):
            try:
                with conn.begin_nested():
                    conn.execute(text("SET LOCAL session_replication_role = replica"))
            except Exception:
                info["fast_reset"] = False
        if info.get("fast_reset", True):
            for table in reversed(tables):
                conn.execute(text(f'DELETE FROM "{table}"'))
        else:
            conn.execute(text("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE"))
        for table, rows in info["seeds"].items():
            conn.execute(table.insert(), rows)
        restarts = [f"setval(pg_get_serial_sequence('{t.name}', 'id'), "
                    f"COALESCE((SELECT MAX(id) FROM \"{t.name}\"), 0) + 1, false)"
                    for t in info["id_tables"]]
        conn.execute(text("SELECT " + ", ".join(restarts)))


class CsrfClient(FlaskClient):
    """A test client that sends a valid CSRF token with every POST, as the pages and htmx do.

    Pass csrf=False to send none (to test that CSRF is enforced). Pages come in English
    unless a test asks for another language.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.environ_base.setdefault("HTTP_ACCEPT_LANGUAGE", "en")

    def csrf_token(self) -> str:
        app = self.application
        with self.session_transaction() as session:
            raw = session.get("csrf_token")
            if raw is None:
                import hashlib

                raw = session["csrf_token"] = hashlib.sha1(os.urandom(64)).hexdigest()
        return URLSafeTimedSerializer(app.secret_key, salt="wtf-csrf-token").dumps(raw)

    def open(self, *args, csrf: bool = True, htmx: bool = False, **kwargs):
        method = (kwargs.get("method") or "GET").upper()
        headers = dict(kwargs.pop("headers", None) or {})
        if htmx:
            headers["HX-Request"] = "true"
        if csrf and method == "POST" and "X-CSRFToken" not in headers:
            headers["X-CSRFToken"] = self.csrf_token()
        kwargs["headers"] = headers
        return super().open(*args, **kwargs)


@pytest.fixture(scope="session")
def sqlite_live_path(tmp_path_factory):
    """The one SQLite file the shared app uses; each test gets the migrated template copied over it."""
    return tmp_path_factory.mktemp("sqlite-live") / "portal.db"


# One app per database, built once and restored after each test: building one compiles every URL rule (about
# 80 ms), which across the whole suite is minutes. A test with its own @pytest.mark.config gets a fresh app.
_SHARED_APPS: dict[str, tuple] = {}


def _shared_app(db_backend: str, config, uri: str):
    if db_backend not in _SHARED_APPS:
        app = create_app(config, {"SQLALCHEMY_DATABASE_URI": uri})
        app.test_client_class = CsrfClient
        _SHARED_APPS[db_backend] = (app, dict(app.config))
    return _SHARED_APPS[db_backend]


@pytest.fixture
def app(db_backend, request, tmp_path, monkeypatch):
    """The portal on a fresh database of the chosen kind, with the default tiers and one store."""
    monkeypatch.setenv("PORTAL_INSTANCE_PATH", str(tmp_path / "instance"))
    marker = request.node.get_closest_marker("config")
    if db_backend == "sqlite":
        template = request.getfixturevalue("sqlite_template")
        path = tmp_path / "portal.db" if marker else request.getfixturevalue("sqlite_live_path")
        # A new file (a new inode) in the old one's place: a connection a test left open keeps the old file.
        for leftover in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            leftover.unlink(missing_ok=True)
        fresh = path.with_name(path.name + ".new")
        shutil.copy(template, fresh)
        os.replace(fresh, path)
        config, uri = TestConfig, f"sqlite:///{path}"
    else:
        info = request.getfixturevalue("pg_database")
        _reset_postgres(info)
        config, uri = PostgresTestConfig, info["url"]
    if marker:
        app, snapshot = create_app(config, {"SQLALCHEMY_DATABASE_URI": uri, **marker.kwargs}), None
        app.test_client_class = CsrfClient
    else:
        app, snapshot = _shared_app(db_backend, config, uri)
        # The limiter is one object for every app: a test's own app may have switched it on (Flask-Limiter's
        # `enabled` is global), so the shared app sets it back to its own setting.
        limiter.enabled = app.config["RATELIMIT_ENABLED"]
    app.instance_path = str(tmp_path / "instance")
    with app.app_context():
        factories.store(code="S001", name="Test Store")
        db.session.commit()
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    if snapshot is not None:  # what the test changed (a frozen clock, a mail server) goes back
        app.config.clear()
        app.config.update(snapshot)


@pytest.fixture
def client(app) -> CsrfClient:
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def ctx(app):
    """An application context, for tests that call services directly."""
    with app.app_context():
        yield


@pytest.fixture
def login(app):
    """login(client, role) signs a new staff member of that role in through the real login form."""

    def do_login(client, role: str = "cashier", store_code: str = "S001"):
        with app.app_context():
            staff = factories.staff(role=role, store_code=store_code)
            db.session.commit()
            username = staff.username
        response = client.post("/login", data={"username": username, "password": factories.PASSWORD})
        assert response.status_code == 303, response.get_data(as_text=True)
        return username

    return do_login


@pytest.fixture
def cashier_client(client, login):
    login(client, "cashier")
    return client


def pytest_configure(config):
    config.addinivalue_line("markers", "config(**kwargs): app configuration overrides for this test")


UTC = timezone.utc
FIXED_NOW = datetime(2026, 6, 15, 4, 0, tzinfo=UTC)
