"""Who sees which stores in the manager area, and the reporting periods.

A manager works their own store only; an admin works every store and may pick one. Every manager page
(complaints, dashboard, members, staff, audit log, fraud signals) asks here rather than deciding itself.
"""
from __future__ import annotations

from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from flask import current_app
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from sqlalchemy import select
from wtforms import SelectChoice

from ..extensions import db
from ..models import Store

PERIODS = ("today", "7", "30", "90")


def is_admin() -> bool:
    return current_user.has_role("admin")


def store_scope() -> list[int] | None:
    """The stores the signed-in person may see: None (all) for an admin, else their own (none if they have none)."""
    if is_admin():
        return None
    return [current_user.store_id] if current_user.store_id else []


def in_scope(store_id: int | None) -> bool:
    scope = store_scope()
    return scope is None or store_id in scope


def all_stores() -> list[Store]:
    return list(db.session.scalars(select(Store).order_by(Store.code)))


def store_choices(stores: list[Store], *, any_label=None) -> list[SelectChoice]:
    """A store picker's choices: "All stores" (or `any_label`) and each store as "CODE · Name"."""
    return [SelectChoice("", any_label or _l("All stores")),
            *(SelectChoice(str(store.id), f"{store.code} · {store.name}") for store in stores)]


def chosen_store(wanted: int | None) -> tuple[Store | None, list[int] | None]:
    """The store a page reports on and the store ids to filter by.

    An admin gets the store they picked (or None and all stores); a manager always gets their own."""
    if is_admin():
        store = db.session.get(Store, wanted) if wanted else None
        return store, ([store.id] if store else None)
    return current_user.store, store_scope()


def zone_of(store: Store | None) -> str:
    return store.timezone if store else current_app.config["BABEL_DEFAULT_TIMEZONE"]


def period_start(period: str, moment: datetime, zone: str) -> datetime:
    """Local midnight of the period's first day: today, or today and the 6, 29 or 89 days before."""
    local_zone = ZoneInfo(zone)
    days_back = 0 if period == "today" else int(period) - 1
    first_day = moment.astimezone(local_zone).date() - timedelta(days=days_back)
    return datetime.combine(first_day, time.min, tzinfo=local_zone).astimezone(timezone.utc)
