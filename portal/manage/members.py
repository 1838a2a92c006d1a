"""The member base: the list with its search, filters, RFM segments and quick lists (birthdays this month,
points expiring in 30 days, members at risk), one member's 360° view, and the CSV export.

A store manager sees their store's members (registered there, or with a purchase there); another store's
member is a 404, like a missing one. An admin sees every member and may filter by a store. Opening a
member's page and exporting are audited: a manager's view of personal data, and every export, are on record.
"""
from __future__ import annotations

from datetime import date, datetime

from flask import Response, abort, request, stream_with_context, url_for
from flask_babel import format_date, get_locale
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from wtforms import SelectChoice

from .. import members as members_service
from .. import segments
from .. import tiers as tiers_service
from ..access import access
from ..extensions import db
from ..models import Store
from ..web import is_htmx, now, render_page, rules
from . import bp
from .complaints import CHANNEL_LABELS
from .forms import MEMBER_LIST_LABELS, MemberFilterForm, row_id
from .scope import all_stores, chosen_store, in_scope, is_admin, store_choices, store_scope, zone_of

LIST = "manage/members.html"
DETAIL = "manage/member.html"
FILTER_NAMES = ("q", "show", "tier", "segment", "consent", "store")
TIER_REASONS = {
    "purchase": _l("Reached with a purchase"),
    "return": _l("After a return"),
    "review": _l("Yearly review of the spend"),
    "override": _l("Set by a manager"),
}


def _locale() -> str:
    return str(get_locale() or "zh")


def _read_filters(form: MemberFilterForm, moment: datetime) -> tuple[segments.MemberFilter, Store | None, bool]:
    """The list's filters from the query string, within what the signed-in person may see: a manager always
    gets their own store, an admin the store they picked (or every store). Fills in the form's choices."""
    admin = is_admin()
    stores = all_stores() if admin else []
    form.store.choices = store_choices(stores)
    locale = _locale()
    form.tier.choices = [SelectChoice("", _l("Any tier")),
                         *(SelectChoice(str(tier.id), tier.name(locale))
                           for tier in tiers_service.all_tiers(db.session))]
    tier_ids = {int(choice.value) for choice in form.tier.choices if choice.value}
    wanted = form.store.data if admin and form.store.data in {store.id for store in stores} else None
    if not admin:
        form.store.data = None
    store, store_ids = chosen_store(wanted)
    show = form.chosen_show()
    filters = segments.MemberFilter(
        search=form.search_text(),
        tier_id=form.tier.data if form.tier.data in tier_ids else None,
        store_ids=store_ids,
        segment=form.chosen_segment(),
        marketing=form.chosen_consent(),
        show=show,
        birthday_month=members_service.local_date(moment, zone_of(store)).month,
    )
    return filters, store, admin


def _query_args() -> dict:
    """The filters as they were asked for, for the pager's and the export's links (empty ones left out)."""
    args = {name: request.args.get(name, "") for name in FILTER_NAMES}
    if not is_admin():
        args.pop("store")
    return {name: value[:100] for name, value in args.items() if value}


def _page_number() -> int:
    value = request.args.get("page", "")
    return int(value) if value.isascii() and value.isdigit() and 0 < int(value) < 100_000 else 1


@bp.route("/members")
@access("manager")
def list_members():
    """The member base: search by name, phone, last 4 digits or card; filter by tier, store (admins), segment
    and marketing consent; quick lists of birthdays this month, points expiring in 30 days and members at
    risk. 50 to a page; htmx gets the results block alone."""
    form = MemberFilterForm(request.args)
    moment = now()
    filters, store, admin = _read_filters(form, moment)
    result = segments.list_members(db.session, filters, now=moment, page=_page_number())
    args = _query_args()
    return render_page(
        LIST, "results", form=form, admin=admin, store=store, result=result, filters=filters, moment=moment,
        page_url=lambda page: url_for("manage.list_members", **args, page=page),
        export_url=url_for("manage.export_members", **args),
        segment_labels=segments.SEGMENT_LABELS, segment_hints=segments.SEGMENT_HINTS,
        list_labels=MEMBER_LIST_LABELS, month=_month_name(filters.birthday_month),
    )


def _month_name(month: int | None) -> str:
    return format_date(date(2000, month, 1), "MMMM") if month else ""


@bp.route("/members.csv")
@access("manager", recent_login=True)
def export_members():
    """The list as it is filtered now, every page of it, as CSV for a spreadsheet (audited, streamed)."""
    form = MemberFilterForm(request.args)
    moment = now()
    filters, store, _admin = _read_filters(form, moment)
    export = segments.export_members(
        db.session, filters, now=moment, staff_id=current_user.id,
        store_id=store.id if store else current_user.store_id, ip=request.remote_addr,
    )
    db.session.commit()
    body = segments.csv_text(export, zone=zone_of(store), locale=_locale(), expiring=filters.show == "expiring")
    filename = f"members-{members_service.local_date(moment, zone_of(store)).strftime('%Y%m%d')}.csv"
    return Response(stream_with_context(body), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def _before(name: str) -> int | None:
    return row_id(request.args.get(name))


@bp.route("/members/<id:member_id>")
@access("manager")
def show_member(member_id: int):
    """One member, all of it: profile and consents, points and their ledger, purchases with their returns,
    complaints, tier history and visit ratings. Opening it is audited; htmx asks for the next page of the
    ledger or the purchases alone (more=ledger|purchases&before=id)."""
    member = segments.member_in_scope(db.session, member_id, store_scope())
    if member is None:
        abort(404)
    more, before = request.args.get("more"), _before("before")
    common = {"member": member, "in_scope": in_scope, "tier_reasons": TIER_REASONS,
              "channel_labels": CHANNEL_LABELS}
    if is_htmx() and before and more == "ledger":
        entries, next_before = segments.ledger_page(db.session, member.id, before)
        return render_page(DETAIL, "ledger_rows", entries=entries, ledger_next=next_before, **common)
    if is_htmx() and before and more == "purchases":
        purchases, next_before, returns = segments.purchases_page(db.session, member.id, before)
        return render_page(DETAIL, "purchase_rows", purchases=purchases, purchases_next=next_before,
                           returns_by_purchase=returns, **common)
    moment = now()
    view = segments.view_member(
        db.session, member, now=moment, qualifying_days=rules().qualifying_days, staff_id=current_user.id,
        store_id=current_user.store_id, ip=request.remote_addr,
        ledger_before=before if more == "ledger" else None, purchases_before=before if more == "purchases" else None,
    )
    db.session.commit()
    return render_page(
        DETAIL, view=view, entries=view.ledger, ledger_next=view.ledger_next, purchases=view.purchases,
        purchases_next=view.purchases_next, returns_by_purchase=view.returns_by_purchase, moment=moment,
        segment_labels=segments.SEGMENT_LABELS, segment_hints=segments.SEGMENT_HINTS, **common,
    )
