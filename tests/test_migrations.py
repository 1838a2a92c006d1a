"""The schema comes only from migrations: they match the models, and they go down and up again cleanly."""
from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from sqlalchemy import func, inspect, select

from portal.extensions import db
from portal.models import Tier


def test_models_match_the_migrated_schema(app):
    with app.app_context():
        with db.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={
                "compare_type": True,
                # made by hand for PostgreSQL's LIKE prefix search (migration 0001), not in the models
                "include_object": lambda obj, name, type_, *_: not (
                    type_ == "index" and name == "ix_members_name_key_pattern"),
            })
            differences = compare_metadata(context, db.metadata)
    assert differences == []


def test_migrations_go_down_and_up_again(app):
    with app.app_context():
        db.session.remove()
        downgrade(revision="base")
        assert set(inspect(db.engine).get_table_names()) <= {"alembic_version"}
        upgrade()
        assert db.session.scalar(select(func.count()).select_from(Tier)) == 4
        assert db.session.scalars(select(Tier.code).order_by(Tier.threshold_fen)).all() == [
            "member", "silver", "gold", "diamond"]
