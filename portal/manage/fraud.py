"""Fraud signals: busy days, large manual adjustments and returns of points-heavy purchases, for a period and a
store, by the thresholds in the rules (changed on the settings page). A manager sees their own store only."""
from __future__ import annotations

from zoneinfo import ZoneInfo

from flask import request
from flask_babel import format_percent

from .. import fraud
from ..access import access
from ..extensions import db
from ..web import now, render_page, rules
from . import bp
from .audit_log import local_time
from .forms import FiguresFilterForm
from .scope import all_stores, chosen_store, in_scope, is_admin, period_start, store_choices, zone_of

TEMPLATE = "manage/fraud.html"


def percent(share: float) -> str:
    return format_percent(share, "#,##0.#%")


@bp.route("/fraud")
@access("manager")
def show_fraud_signals():
    """Members buying more often in a day than the threshold, large manual adjustments and returns of purchases
    paid mostly with points, for today or the last 7, 30 or 90 days."""
    form = FiguresFilterForm(request.args)
    admin = is_admin()
    stores = all_stores() if admin else []
    form.store.choices = store_choices(stores)
    wanted = form.store.data if admin and form.store.data in {store.id for store in stores} else None
    if wanted is None:
        form.store.data = None
    store, store_ids = chosen_store(wanted)
    zone = zone_of(store)
    period = form.chosen_period()
    form.period.data = period
    moment = now()
    since = period_start(period, moment, zone)
    current_rules = rules()
    found = fraud.signals(db.session, rules=current_rules, since=since, until=moment, store_ids=store_ids)
    return render_page(
        TEMPLATE, "signals", form=form, admin=admin, store=store, zone=zone, signals=found,
        thresholds=current_rules, first_day=since.astimezone(ZoneInfo(zone)).date(),
        local_time=local_time, percent=percent, in_scope=in_scope,
    )
