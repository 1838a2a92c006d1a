"""The complaints console: the queue, one complaint with its timeline and actions, and the figures.

A manager sees and works only the complaints of their own store; an admin sees every store and may filter by
one. Each action locks the complaint, calls one service function and commits once; a refusal changes nothing
and is shown beside the field it concerns, with status 422.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from flask import abort, current_app, redirect, request, url_for
from flask_babel import format_decimal, format_percent, format_timedelta
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from sqlalchemy import func, or_, select
from wtforms import SelectChoice

from .. import complaints, senders
from .. import rules as rules_service
from ..access import access
from ..extensions import db
from ..models import Complaint, ComplaintEvent, LedgerEntry, Staff
from ..web import is_htmx, now, render_page, rules
from . import bp
from .scope import all_stores, in_scope, is_admin, period_start, store_choices, store_scope
from .forms import (
    AcknowledgeForm,
    AssignForm,
    CloseForm,
    FiguresFilterForm,
    GoodwillForm,
    QueueFilterForm,
    ReplyForm,
    ResolveForm,
    ServiceLevelForm,
)

QUEUE = "manage/complaints.html"
DETAIL = "manage/complaint.html"
FIGURES = "manage/complaint_figures.html"

EVENT_LABELS = {
    "opened": _l("Complaint made"),
    "acknowledged": _l("Acknowledged"),
    "reply": _l("Reply to the member"),
    "note": _l("Internal note"),
    "assigned": _l("Assigned"),
    "resolved": _l("Resolved"),
    "closed": _l("Closed"),
    "reopened": _l("Reopened by the member"),
    "rated": _l("Resolution rated"),
    "goodwill": _l("Goodwill points"),
}
CHANNEL_LABELS = {
    "counter": _l("At the counter"),
    "phone": _l("By phone"),
    "member": _l("By the member, online"),
    "register": _l("From a cash register"),
    "survey": _l("A poor visit rating"),
}
DONE_MESSAGES = {
    "acknowledge": _l("The complaint is acknowledged."),
    "reply": _l("The reply is sent to the member."),
    "note": _l("The note is added."),
    "assign": _l("The complaint is assigned."),
    "resolve": _l("The complaint is resolved."),
    "close": _l("The complaint is closed."),
    "goodwill": _l("The goodwill points are posted."),
}
FORM_NAMES = ("acknowledge_form", "reply_form", "assign_form", "resolve_form", "close_form", "goodwill_form")


# --- who sees what --------------------------------------------------------------------------------------

def _complaint_or_404(complaint_id: int, *, for_update: bool = False) -> Complaint:
    """The complaint, if it is one the signed-in person may see; another store's is a 404 like a missing one."""
    complaint = (complaints.lock(db.session, complaint_id) if for_update
                 else db.session.get(Complaint, complaint_id))
    if complaint is None or not in_scope(complaint.store_id):
        abort(404)
    return complaint


# --- formatting shared by the three pages ---------------------------------------------------------------

def late_by(clock: complaints.Clock, moment: datetime) -> timedelta | None:
    """How long past its earliest missed due time an overdue complaint is; None if it is not overdue."""
    missed = [due for due, late in ((clock.response_due, clock.response_overdue),
                                    (clock.resolution_due, clock.resolution_overdue)) if late]
    return moment - min(missed) if missed else None


def duration(delta: timedelta) -> str:
    """“5 hours”, “30 hours”, “3 days”: precise enough to see how late, in the reader's language."""
    return format_timedelta(delta, granularity="minute", threshold=2)


def hours(value: float | None) -> str:
    return "—" if value is None else format_decimal(value, "#,##0.0")


def average(value: float | None) -> str:
    return "—" if value is None else format_decimal(value, "0.0")


def percent(share: float | None) -> str:
    return "—" if share is None else format_percent(share, "#,##0.0%")


FORMATTERS = {"late_by": late_by, "duration": duration, "hours": hours, "average": average, "percent": percent,
              "category_labels": complaints.CATEGORY_LABELS, "severity_labels": complaints.SEVERITY_LABELS,
              "status_labels": complaints.STATUS_LABELS, "event_labels": EVENT_LABELS,
              "channel_labels": CHANNEL_LABELS}


# --- the queue ------------------------------------------------------------------------------------------

@bp.route("/complaints")
@access("manager")
def list_complaints():
    """The queue, most urgent first, filtered by status, store (admins), category, severity and lateness."""
    form = QueueFilterForm(request.args)
    admin = is_admin()
    stores = all_stores() if admin else []
    form.store.choices = store_choices(stores)
    store_ids = store_scope()
    chosen_store = form.store.data if admin and form.store.data in {store.id for store in stores} else None
    if chosen_store is not None:
        store_ids = [chosen_store]
    status = form.chosen_status()
    moment, current_rules = now(), rules()
    rows = complaints.queue(
        db.session, rules=current_rules, now=moment, store_ids=store_ids,
        status=None if status == "all" else status, category=form.chosen(form.category),
        severity=form.chosen(form.severity), overdue_only=bool(form.overdue.data),
    )
    items = [(complaint, complaints.clock(complaint, current_rules, moment)) for complaint in rows]
    return render_page(QUEUE, "list", form=form, items=items, admin=admin, moment=moment,
                       levels_form=_levels_form(), levels_saved=request.args.get("saved"),
                       response_limit=timedelta(hours=current_rules.complaint_response_hours),
                       resolution_limit=timedelta(hours=current_rules.complaint_resolution_hours),
                       limit_reached=len(rows) >= 200, **FORMATTERS)


def _levels_form(form: ServiceLevelForm | None = None) -> ServiceLevelForm:
    if form is None:
        form = ServiceLevelForm(formdata=None)
        form.complaint_response_hours.data = str(rules().complaint_response_hours)
        form.complaint_resolution_hours.data = str(rules().complaint_resolution_hours)
    return form


@bp.route("/complaints/service-levels", methods=["POST"])
@access("manager", recent_login=True)
def update_service_levels():
    """Change the complaint time limits for the whole chain (audited, from the next request on)."""
    form = ServiceLevelForm()
    if form.validate_on_submit():
        failed = False
        for field in (form.complaint_response_hours, form.complaint_resolution_hours):
            try:
                value = rules_service.parse_rule(field.name, field.data or "")
            except rules_service.RuleError:
                low, high = rules_service.BOUNDS[field.name]
                field.errors = [_l("Enter a whole number of hours from %(low)s to %(high)s.", low=low, high=high)]
                failed = True
                continue
            if value != getattr(rules(), field.name):
                rules_service.set_rule(db.session, field.name, str(value), staff=current_user, now=now())
        if not failed:
            db.session.commit()
            return redirect(url_for("manage.list_complaints", saved=1), code=303)
    db.session.rollback()
    filters = QueueFilterForm(formdata=None)
    filters.store.choices = store_choices(all_stores())
    return render_page(QUEUE, status=422, form=filters, items=[], admin=True,
                       moment=now(), levels_form=_levels_form(form), levels_saved=None,
                       response_limit=timedelta(hours=rules().complaint_response_hours),
                       resolution_limit=timedelta(hours=rules().complaint_resolution_hours),
                       limit_reached=False, **FORMATTERS)


# --- one complaint --------------------------------------------------------------------------------------

def _assignees(complaint: Complaint) -> list[Staff]:
    """Who can take the complaint: active staff of its store, and the admins."""
    return list(db.session.scalars(
        select(Staff).where(Staff.active.is_(True),
                            or_(Staff.store_id == complaint.store_id, Staff.role == "admin"))
        .order_by(Staff.name, Staff.id)
    ))


def _fresh_forms(complaint: Complaint) -> dict:
    """Every action's form, empty (formdata=None: a POST's fields must not leak into the other forms)."""
    assign_form = AssignForm(formdata=None)
    assign_form.assignee.data = complaint.assigned_to_id
    return {"acknowledge_form": AcknowledgeForm(formdata=None), "reply_form": ReplyForm(formdata=None),
            "assign_form": assign_form, "resolve_form": ResolveForm(formdata=None),
            "close_form": CloseForm(formdata=None), "goodwill_form": GoodwillForm(formdata=None)}


def _detail(complaint: Complaint, status: int = 200, **context):
    """The complaint page (or its block for htmx): details, service-level due times, timeline and actions."""
    moment, current_rules = now(), rules()
    forms = _fresh_forms(complaint)
    forms.update({name: form for name, form in context.items() if name in FORM_NAMES})
    context = {name: value for name, value in context.items() if name not in FORM_NAMES}
    staff_choices = [SelectChoice("", _l("Choose…"))] + [
        SelectChoice(str(person.id), person.name + (f" ({person.store.code})" if person.store_id != complaint.store_id
                                                    and person.store else ""))
        for person in _assignees(complaint)
    ]
    forms["assign_form"].assignee.choices = staff_choices
    events = list(db.session.scalars(
        select(ComplaintEvent).where(ComplaintEvent.complaint_id == complaint.id)
        .order_by(ComplaintEvent.created_at, ComplaintEvent.id)
    ))
    goodwill_points = db.session.scalar(
        select(func.coalesce(func.sum(LedgerEntry.points), 0)).where(LedgerEntry.complaint_id == complaint.id)
    )
    context.setdefault("problem", None)
    context.setdefault("done", None)
    return render_page(
        DETAIL, "complaint", status=status, complaint=complaint, events=events, moment=moment,
        clock=complaints.clock(complaint, current_rules, moment), current_rules=current_rules,
        goodwill_points=int(goodwill_points), max_reply=complaints.MAX_REPLY, **forms, **context, **FORMATTERS,
    )


@bp.route("/complaints/<id:complaint_id>")
@access("manager")
def show_complaint(complaint_id: int):
    """One complaint: what happened, who made it, when answers are due, every step so far, and the actions."""
    return _detail(_complaint_or_404(complaint_id))


def _act(complaint_id: int, form, form_name: str, step):
    """Lock the complaint, check the form, let `step(complaint, form)` call one service function (it returns
    which message to show), commit once. A refusal rolls everything back and shows the page again with 422."""
    complaint = _complaint_or_404(complaint_id, for_update=True)
    problem = None
    if form.validate_on_submit():
        try:
            done = step(complaint, form)
        except complaints.ComplaintError as error:
            db.session.rollback()
            field = getattr(form, error.field, None) if error.field else None
            if field is not None:
                field.errors = [error.message]
            else:
                problem = error.message
        else:
            db.session.commit()
            target = url_for("manage.show_complaint", complaint_id=complaint_id)
            if is_htmx():
                response = _detail(_complaint_or_404(complaint_id), done=DONE_MESSAGES[done])
                response.headers["HX-Push-Url"] = target
                return response
            return redirect(target, code=303)
    db.session.rollback()
    return _detail(_complaint_or_404(complaint_id), 422, problem=problem, **{form_name: form})


@bp.route("/complaints/<id:complaint_id>/acknowledge", methods=["POST"])
@access("manager")
def acknowledge_complaint(complaint_id: int):
    """The first response: the member is told the complaint is being looked at."""
    def step(complaint, form):
        complaints.acknowledge(db.session, complaint, staff=current_user, now=now(), ip=request.remote_addr)
        return "acknowledge"

    return _act(complaint_id, AcknowledgeForm(), "acknowledge_form", step)


@bp.route("/complaints/<id:complaint_id>/reply", methods=["POST"])
@access("manager")
def reply_to_complaint(complaint_id: int):
    """A reply the member reads, or (unticked) an internal note only staff see."""
    def step(complaint, form):
        complaints.reply(db.session, complaint, staff=current_user, body=form.body.data,
                         to_member=bool(form.to_member.data), now=now(), ip=request.remote_addr,
                         channels=senders.configured(current_app.config)[0])
        return "reply" if form.to_member.data else "note"

    return _act(complaint_id, ReplyForm(), "reply_form", step)


@bp.route("/complaints/<id:complaint_id>/assign", methods=["POST"])
@access("manager")
def assign_complaint(complaint_id: int):
    """Give the complaint to someone of its store (or an admin) to follow up."""
    def step(complaint, form):
        complaints.assign(db.session, complaint, staff=current_user, assignee=form.assignee_staff, now=now(),
                          ip=request.remote_addr)
        return "assign"

    return _act(complaint_id, AssignForm(), "assign_form", step)


@bp.route("/complaints/<id:complaint_id>/resolve", methods=["POST"])
@access("manager")
def resolve_complaint(complaint_id: int):
    """Mark the complaint resolved, optionally telling the member what was done."""
    def step(complaint, form):
        complaints.resolve(db.session, complaint, staff=current_user, body=form.body.data, now=now(),
                           ip=request.remote_addr)
        return "resolve"

    return _act(complaint_id, ResolveForm(), "resolve_form", step)


@bp.route("/complaints/<id:complaint_id>/close", methods=["POST"])
@access("manager")
def close_complaint(complaint_id: int):
    """Close a resolved complaint (the member can no longer reopen it)."""
    def step(complaint, form):
        complaints.close(db.session, complaint, staff=current_user, now=now(), ip=request.remote_addr)
        return "close"

    return _act(complaint_id, CloseForm(), "close_form", step)


@bp.route("/complaints/<id:complaint_id>/goodwill", methods=["POST"])
@access("manager", recent_login=True)
def grant_goodwill(complaint_id: int):
    """Goodwill points for the member, posted as a bonus linked to the complaint; a form sent twice posts once."""
    def step(complaint, form):
        complaints.grant_goodwill(db.session, complaint, staff=current_user, points=form.points_value,
                                  store=complaint.store, rules=rules(), idempotency_key=form.idempotency_key.data,
                                  now=now(), ip=request.remote_addr)
        return "goodwill"

    return _act(complaint_id, GoodwillForm(), "goodwill_form", step)


# --- figures --------------------------------------------------------------------------------------------

@bp.route("/complaints/figures")
@access("manager")
def show_complaint_figures():
    """Open and overdue counts, response and resolution times, and satisfaction, for a period and a store."""
    form = FiguresFilterForm(request.args)
    admin = is_admin()
    stores = all_stores() if admin else []
    form.store.choices = store_choices(stores)
    store = None
    if admin:
        store = next((s for s in stores if s.id == form.store.data), None)
        store_ids = [store.id] if store else None
    else:
        store = current_user.store
        store_ids = store_scope()
    zone = store.timezone if store else current_app.config["BABEL_DEFAULT_TIMEZONE"]
    period = form.chosen_period()
    form.period.data = period
    moment = now()
    since = period_start(period, moment, zone)
    data = complaints.figures(db.session, rules=rules(), now=moment, since=since, until=moment, store_ids=store_ids)
    busiest = max((group.complaints for group in data.by_category), default=0)
    first_day = since.astimezone(ZoneInfo(zone)).date()
    return render_page(FIGURES, "figures", form=form, admin=admin, store=store, figures=data, first_day=first_day,
                       period=period, moment=moment, busiest=busiest, **FORMATTERS)
