"""The framework's two ceilings on this machine: a bare Flask app that bench/run.py serves with gunicorn beside
the portal, with the same gunicorn settings, on the same database, loaded by the same command.

- GET /tpl: render a template of about the byte size of the till's lookup fragment (BENCH_TPL_BYTES, measured
  by run.py on the real fragments) and nothing else: no session, no login, no database.
- POST /write: through the portal's own Flask-SQLAlchemy `db` and models, one indexed read (a member by card,
  locked for update as the portal's checkout locks it), one LedgerEntry insert (carrying the request's one-time
  key in its unique idempotency_key, as a checkout's purchase carries its own; run.py counts them), one
  Member.points_balance update, one commit, and a small template.

The database engine is set up as the portal sets up its own (portal.database.configure_engine: SQLite in WAL
with BEGIN IMMEDIATE for a POST, PostgreSQL with its lock timeout; the same pool options), so that the ratio of
a portal scenario to its ceiling is the cost of the portal's own code, not of a different configuration.
"""
from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

from flask import Flask, abort, render_template, request
from sqlalchemy import select

from portal.config import Config, normalise_database_url
from portal.database import configure_engine
from portal.extensions import db
from portal.models import LedgerEntry, Member

TEMPLATES = Path(__file__).resolve().parent / "templates"
SURNAMES = "王李张刘陈杨黄赵吴周"
TIERS = (("member", "普通会员"), ("silver", "银卡"), ("gold", "金卡"), ("diamond", "钻石"))


def _engine_options(uri: str) -> dict:
    """The portal's engine options for this database (see portal/__init__.py: SQLite drops the pre-ping and
    gets the busy timeout as its connect timeout)."""
    options = dict(Config.SQLALCHEMY_ENGINE_OPTIONS)
    if uri.startswith("sqlite"):
        options.pop("pool_pre_ping", None)
        options.setdefault("connect_args", {"timeout": Config.DATABASE_LOCK_TIMEOUT_MS / 1000})
    return options


def _row(index: int) -> dict:
    code, name = TIERS[index % len(TIERS)]
    return {"card": f"{3000000000 + index * 7919:010d}", "name": SURNAMES[index % len(SURNAMES)] + "伟" + str(index),
            "phone": f"138****{index % 10000:04d}", "tier": code, "tier_name": name, "points": index * 37}


def _sized_rows(app: Flask, target_bytes: int) -> list[dict]:
    """As many rows as make the rendered /tpl about `target_bytes` long (measured, not guessed)."""
    rows = [_row(i) for i in range(2000)]
    with app.test_request_context("/tpl?q=1234"):
        def size(count: int) -> int:
            return len(render_template("tpl.html", rows=rows[:count], q="1234").encode())
        base, per_row = size(0), max(1, size(10) - size(9))
    count = max(1, min(len(rows), round((target_bytes - base) / per_row)))
    return rows[:count]


def create_ceiling_app() -> Flask:
    app = Flask(__name__, template_folder=str(TEMPLATES))
    uri = normalise_database_url(os.environ["DATABASE_URL"])
    app.config.update(SQLALCHEMY_DATABASE_URI=uri, SQLALCHEMY_ENGINE_OPTIONS=_engine_options(uri))
    db.init_app(app)
    with app.app_context():
        configure_engine(db.engine, Config.DATABASE_LOCK_TIMEOUT_MS)
    rows = _sized_rows(app, int(os.environ.get("BENCH_TPL_BYTES", "6000")))

    @app.get("/tpl")
    def tpl():
        return render_template("tpl.html", rows=rows, q=request.args.get("q", "")[:64])

    @app.post("/write")
    def write():
        member = db.session.scalars(
            select(Member).where(Member.card_number == request.form.get("card", "")).with_for_update()
        ).one_or_none()
        if member is None:
            abort(404)
        member.points_balance = member.points_balance + 1
        entry = LedgerEntry(member_id=member.id, kind="adjust", points=1, balance_after=member.points_balance,
                            reason="adjustment", note="benchmark ceiling", store_id=member.store_id,
                            idempotency_key=request.form.get("k") or None,
                            created_at=datetime.now(timezone.utc))
        db.session.add(entry)
        # Flush (the UPDATE and the INSERT) and take what the page shows before the commit expires the objects,
        # so that rendering costs no further SELECT: one read, one insert, one update, one commit.
        db.session.flush()
        shown = {"member": {"name": member.name, "card_number": member.card_number,
                            "points_balance": member.points_balance},
                 "entry": {"id": entry.id, "kind": entry.kind, "points": entry.points}}
        db.session.commit()
        return render_template("write.html", **shown)

    @app.get("/ready")
    def ready():
        return "ok"

    return app


app = create_ceiling_app()
