"""The manager dashboard, the manager's landing page: member sales and their share of all sales, members,
points, tiers, complaints and each staff member's work, for a period and a store (admins: or all stores);
and the form on which a manager records the day's takings of their store."""
from __future__ import annotations

from zoneinfo import ZoneInfo

from babel.dates import format_skeleton
from flask import abort, redirect, request, url_for
from flask_babel import format_date, format_decimal, format_percent, get_locale, gettext
from flask_login import current_user

from .. import charts, dashboard
from ..access import access
from ..extensions import db
from ..models import Store
from ..money import format_yuan
from ..web import is_htmx, now, render_page, rules
from . import bp
from .forms import FiguresFilterForm, TakingsForm
from .scope import all_stores, chosen_store, is_admin, period_start, store_choices, zone_of

TEMPLATE = "manage/dashboard.html"


def percent(share: float | None) -> str:
    return "—" if share is None else format_percent(share, "#,##0.0%")


def one_decimal(value: float | None) -> str:
    return "—" if value is None else format_decimal(value, "#,##0.0")


def whole(value: int) -> str:
    return format_decimal(value, "#,##0")


def tick_yuan(fen: int) -> str:
    """An axis tick in yuan: whole yuan without the fen when they are nought."""
    return format_yuan(fen).removesuffix(".00")


def _filters() -> dict:
    """The period and store the page reports on, from the query string (an admin's store is a choice;
    a manager's is always their own)."""
    form = FiguresFilterForm(request.args)
    admin = is_admin()
    stores = all_stores() if admin else []
    form.store.choices = store_choices(stores)
    store, store_ids = chosen_store(form.store.data if admin else None)
    form.store.data = store.id if admin and store else None
    period = form.chosen_period()
    form.period.data = period
    return {"filter_form": form, "admin": admin, "stores": stores, "store": store, "store_ids": store_ids,
            "period": period, "zone": zone_of(store)}


def _takings_form(filters: dict, form: TakingsForm | None = None) -> TakingsForm:
    """The takings form, blank for the day that is today at the store (its store: the one being looked at)."""
    if form is None:
        form = TakingsForm(formdata=None)
        form.store.data = filters["store"].id if filters["store"] else None
        form.day.data = now().astimezone(ZoneInfo(filters["zone"])).date().isoformat()
    form.store.choices = store_choices([s for s in filters["stores"] if s.active], any_label=gettext("Choose…"))
    return form


def _charts(data: dashboard.Dashboard, locale: str) -> dict:
    """The three charts' geometry, with their labels written for the reader."""
    daily = charts.column_chart(
        [(format_date(day.day, "medium"), day.member_sales_fen) for day in data.days],
        axis_labels=[format_skeleton("MMMd", day.day, locale=locale) for day in data.days],
        value_text=format_yuan, tick_text=tick_yuan)
    tiers = charts.bar_chart([(tier.name(locale), count, f"tier-{tier.code}") for tier, count in data.tiers],
                             value_text=whole)
    movements = charts.bar_chart([
        (gettext("Issued"), data.points.issued, "points-issued"),
        (gettext("Redeemed"), data.points.redeemed, "points-redeemed"),
        (gettext("Expired"), data.points.expired, "points-expired"),
    ], value_text=whole)
    return {"daily_chart": daily, "tier_chart": tiers, "points_chart": movements}


def _page(status: int = 200, filters: dict | None = None, **context):
    """The dashboard (or its block for htmx) for the filters in the query string."""
    filters = filters or _filters()
    moment = now()
    since = period_start(filters["period"], moment, filters["zone"])
    data = dashboard.figures(db.session, store_ids=filters["store_ids"], since=since, until=moment,
                             zone=filters["zone"], rules=rules(), now=moment)
    locale = str(get_locale() or "zh")
    context.setdefault("saved", request.args.get("saved") == "1")
    context["takings_form"] = _takings_form(filters, context.get("takings_form"))
    return render_page(
        TEMPLATE, "dashboard", status=status, data=data, first_day=data.days[0].day, moment=moment,
        query=_query(filters), percent=percent, one_decimal=one_decimal, whole=whole,
        **_charts(data, locale), **filters, **context)


@bp.route("/dashboard")
@bp.route("/")
@access("manager")
def show_dashboard():
    """The figures for the chosen period and store; the filters re-render the figures only (htmx) and the
    address keeps them, so a bookmark or a refresh shows the same."""
    return _page()


def _takings_store(form: TakingsForm, filters: dict) -> Store | None:
    """The store the takings are for: a manager's own (another store is a 404, like a missing one);
    for an admin the one picked (None if none was)."""
    wanted = form.store.data
    if filters["admin"]:
        store = db.session.get(Store, wanted) if wanted else None
        if wanted and store is None:
            abort(404)
        return store
    own = current_user.store
    if own is None or (wanted and wanted != own.id):
        abort(404)
    return own


@bp.route("/takings", methods=["POST"])
@access("manager")
def record_takings():
    """Record or correct a store's takings for a day (audited); the share of member sales follows at once."""
    filters = _filters()
    form = TakingsForm()
    store = _takings_store(form, filters)
    valid = form.validate_on_submit()
    if store is None:
        form.store.errors = [*form.store.errors, gettext("Choose a store.")]
        valid = False
    if valid:
        try:
            dashboard.record_takings(db.session, store=store, day=form.day_value, amount_fen=form.amount_fen,
                                     staff=current_user, now=now(), ip=request.remote_addr)
        except dashboard.TakingsError as error:
            db.session.rollback()
            getattr(form, error.field).errors = [error.message]
        else:
            db.session.commit()
            if is_htmx():
                return _page(filters=filters, saved=True)
            return redirect(url_for("manage.show_dashboard", **_query(filters), saved=1), code=303)
    db.session.rollback()
    return _page(422, filters=filters, takings_form=form)


def _query(filters: dict) -> dict:
    query = {"period": filters["period"]}
    if filters["admin"] and filters["store"]:
        query["store"] = filters["store"].id
    return query
