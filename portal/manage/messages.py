"""Messages: the templates (standard and the managers' own, with a preview for a real member) and the
campaigns (audience, size and preview, send time, control group; queuing in steps with a progress bar, then
the sending progress and the results against the control group).

Templates are chain-wide: managers and admins edit them. A manager sees and creates only campaigns of their
own store; an admin sees every campaign and may send to one store or to all. Another store's campaign is a
404, like a missing one. The service is portal/campaigns.py.
"""
from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

from flask import abort, current_app, redirect, request, url_for
from flask_babel import format_date, format_decimal, format_percent, get_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from wtforms import SelectChoice

from .. import campaigns, messaging, senders, segments
from .. import tiers as tiers_service
from ..access import access
from ..extensions import db
from ..models import Campaign, MessageTemplate, Store
from ..web import is_htmx, now, render_page, rules
from . import bp
from .forms import CampaignCancelForm, CampaignForm, CampaignStepForm, MessageTemplateForm, TemplateArchiveForm
from .scope import all_stores, in_scope, is_admin, store_choices, store_scope, zone_of

TEMPLATES = "manage/message_templates.html"
TEMPLATE = "manage/message_template.html"
CAMPAIGNS = "manage/campaigns.html"
NEW_CAMPAIGN = "manage/campaign_new.html"
CAMPAIGN = "manage/campaign.html"

KIND_LABELS = {"service": _l("Service (every member)"), "marketing": _l("Marketing (with consent only)")}
STATUS_LABELS = {
    "preparing": _l("Queuing the messages"),
    "scheduled": _l("Waiting for the send time"),
    "sending": _l("Sending"),
    "done": _l("Sent"),
    "cancelled": _l("Cancelled"),
}
CHANNEL_LABELS = {"inbox": _l("Inbox"), "email": _l("E-mail"), "sms": _l("SMS")}


def _locale() -> str:
    return str(get_locale() or "zh")


def percent(value: float | None) -> str:
    return "—" if value is None else format_percent(value / 100, "#,##0.0%")


def points(value: float | None) -> str:
    """An uplift in percentage points, signed."""
    return "—" if value is None else ("+" if value > 0 else "") + format_decimal(value, "#,##0.0")


FORMATTERS = {"percent": percent, "uplift": points, "status_labels": STATUS_LABELS, "kind_labels": KIND_LABELS,
              "channel_labels": CHANNEL_LABELS, "segment_labels": segments.SEGMENT_LABELS}


# --- templates ------------------------------------------------------------------------------------------

def _template_or_404(template_id: int) -> MessageTemplate:
    template = db.session.get(MessageTemplate, template_id)
    if template is None:
        abort(404)
    return template


@bp.route("/messages/templates")
@access("manager")
def list_message_templates():
    """Every template, standard and the managers' own: kind, code and when it last changed."""
    return render_page(TEMPLATES, templates=campaigns.list_templates(db.session),
                       is_standard=campaigns.is_standard, archive_form=TemplateArchiveForm(formdata=None),
                       saved=request.args.get("saved"), **FORMATTERS)


def _editor(template: MessageTemplate | None, form: MessageTemplateForm, status: int = 200, *,
            shown: campaigns.Preview | None = None, saved: bool = False):
    """The template's page, or for htmx its editor block (the form, the placeholders and the preview)."""
    code = template.code if template else None
    allowed = messaging.allowed_placeholders(code)
    return render_page(
        TEMPLATE, "editor", status=status, message_template=template, form=form, preview=shown, saved=saved,
        placeholders=[(name, messaging.PLACEHOLDER_LABELS[name]) for name in allowed],
        preview_url=url_for("manage.preview_message_template", template=template.id if template else None),
        standard=bool(template and campaigns.is_standard(template)), **FORMATTERS,
    )


def _refused(form: MessageTemplateForm, refusal: campaigns.CampaignError) -> None:
    for problem in getattr(refusal, "problems", [refusal]):
        field = getattr(form, problem.field or "", None)
        if field is not None:
            field.errors = [*field.errors, problem.message]


@bp.route("/messages/templates/new")
@access("manager")
def new_message_template():
    """An empty marketing template to write."""
    return _editor(None, MessageTemplateForm(formdata=None))


@bp.route("/messages/templates", methods=["POST"])
@access("manager")
def create_message_template():
    """Save a new marketing template; an unknown placeholder or a missing text is refused beside its field."""
    form = MessageTemplateForm()
    if form.validate_on_submit():
        try:
            template = campaigns.create_template(db.session, form.texts(), staff=current_user, now=now(),
                                                 ip=request.remote_addr, creation_key=form.idempotency_key.data)
        except campaigns.CampaignError as refusal:
            db.session.rollback()
            _refused(form, refusal)
        else:
            db.session.commit()
            return redirect(url_for("manage.edit_message_template", template_id=template.id, saved=1), code=303)
    db.session.rollback()
    return _editor(None, form, 422)


@bp.route("/messages/templates/<id:template_id>")
@access("manager")
def edit_message_template(template_id: int):
    """A template's texts to reword, with the placeholders it may use and a preview."""
    template = _template_or_404(template_id)
    form = MessageTemplateForm(formdata=None, obj=template)
    return _editor(template, form, saved=bool(request.args.get("saved")))


@bp.route("/messages/templates/<id:template_id>", methods=["POST"])
@access("manager")
def update_message_template(template_id: int):
    """Save a template's new wording (audited with the before and after); its code and kind stay."""
    template = _template_or_404(template_id)
    form = MessageTemplateForm()
    if form.validate_on_submit():
        try:
            campaigns.update_template(db.session, template, form.texts(), staff=current_user, now=now(),
                                      ip=request.remote_addr)
        except campaigns.CampaignError as refusal:
            db.session.rollback()
            _refused(form, refusal)
        else:
            db.session.commit()
            return redirect(url_for("manage.edit_message_template", template_id=template.id, saved=1), code=303)
    db.session.rollback()
    return _editor(_template_or_404(template_id), form, 422)


@bp.route("/messages/templates/preview", methods=["POST"])
@access("manager")
def preview_message_template():
    """The texts as typed, rendered for a real member (by card number or phone; the newest member in scope
    if none is given) in Chinese and English. Nothing is saved."""
    template_id = request.args.get("template", type=int)
    template = _template_or_404(template_id) if template_id else None
    form = MessageTemplateForm()
    if not form.validate_on_submit():
        return _editor(template, form, 422)
    member = campaigns.find_member(db.session, form.preview_member.data, store_scope())
    if member is None:
        form.preview_member.errors = [_("No member of yours has this card number or phone.")
                                      if form.preview_member.data else _("There is no member to preview with yet.")]
        return _editor(template, form, 422)
    try:
        shown = campaigns.preview(db.session, form.texts(), member, code=template.code if template else None,
                                  now=now())
    except campaigns.CampaignError as refusal:
        _refused(form, refusal)
        return _editor(template, form, 422)
    return _editor(template, form, shown=shown)


@bp.route("/messages/templates/<id:template_id>/archive", methods=["POST"])
@access("manager")
def archive_message_template(template_id: int):
    """Archive a managers' template: it is no longer offered for new campaigns."""
    template = _template_or_404(template_id)
    form = TemplateArchiveForm()
    if form.validate_on_submit():
        try:
            campaigns.archive_template(db.session, template, staff=current_user, now=now(), ip=request.remote_addr)
        except campaigns.CampaignError:
            db.session.rollback()
            abort(409)
        db.session.commit()
        return redirect(url_for("manage.list_message_templates", saved=1), code=303)
    db.session.rollback()
    abort(400)


# --- the campaigns list ---------------------------------------------------------------------------------

@bp.route("/messages")
@access("manager")
def list_campaigns():
    """The campaigns (a manager's store's; every one for an admin), newest first, with their status and
    key figures: audience, control group, deliveries sent and still queued."""
    moment = now()
    rows = campaigns.list_campaigns(db.session, store_scope())
    counts = campaigns.delivery_counts(db.session, [campaign.id for campaign in rows])
    items = [(campaign, campaigns.progress(db.session, campaign, now=moment), counts[campaign.id])
             for campaign in rows]
    return render_page(CAMPAIGNS, items=items, admin=is_admin(), **FORMATTERS)


# --- a new campaign -------------------------------------------------------------------------------------

def _campaign_form(form: CampaignForm | None = None) -> CampaignForm:
    """The form with its choices: marketing templates, tiers, birthday months, and (admins) the stores."""
    form = form or CampaignForm(formdata=None)
    form.template_id.choices = [SelectChoice("", _l("Choose…"))] + [
        SelectChoice(str(template.id), template.name) for template in campaigns.marketing_templates(db.session)]
    locale = _locale()
    form.tier.choices = [SelectChoice("", _l("Any tier")), *(
        SelectChoice(str(tier.id), tier.name(locale)) for tier in tiers_service.all_tiers(db.session))]
    form.store.choices = store_choices(all_stores() if is_admin() else [])
    form.birthday_month.choices = [SelectChoice("", _l("Any month")), *(
        SelectChoice(str(month), format_date(date(2000, month, 1), "MMMM")) for month in range(1, 13))]
    return form


def _audience(form: CampaignForm) -> tuple[campaigns.Audience, Store | None]:
    """The audience the form asks for, within what the signed-in person may choose: a manager's own store
    always; an admin's pick, or every store."""
    tier_ids = {int(choice.value) for choice in form.tier.choices if choice.value}
    if is_admin():
        store = db.session.get(Store, form.store.data) if form.store.data else None
    else:
        store = current_user.store
        form.store.data = None
    audience = campaigns.Audience(
        tier_id=form.tier.data if form.tier.data in tier_ids else None,
        store_id=store.id if store else None,
        segment=form.chosen_segment(),
        at_risk=bool(form.at_risk.data),
        birthday_month=form.chosen_month(),
    )
    return audience, store


def _template(form: CampaignForm) -> MessageTemplate | None:
    return db.session.get(MessageTemplate, form.template_id.data) if form.template_id.data else None


def _audience_view(form: CampaignForm, moment: datetime) -> dict:
    """The audience's size and its preview: the chosen template rendered for the audience's newest member."""
    audience, store = _audience(form)
    size = campaigns.audience_size(db.session, audience, now=moment)
    sample = campaigns.sample_member(db.session, audience, now=moment) if size else None
    template = _template(form)
    shown = None
    if sample is not None and template is not None and template.kind == "marketing":
        texts = {name: getattr(template, name) for name, _limit in campaigns.TEXT_FIELDS}
        shown = campaigns.preview(db.session, texts, sample, code=template.code, now=moment, store=store)
    control = form.percent() if form.control_percent.data is not None else campaigns.DEFAULT_CONTROL_PERCENT
    return {"size": size, "sample": sample, "shown": shown, "store": store,
            "control": campaigns.control_count(size, control) if control is not None else None}


def _new_page(form: CampaignForm, status: int = 200, block: str | None = None, problem: str | None = None):
    moment = now()
    view = _audience_view(form, moment)
    return render_page(NEW_CAMPAIGN, block, status=status, form=form, admin=is_admin(), problem=problem,
                       zone=zone_of(view["store"]), quiet_start=rules().quiet_hours_start,
                       quiet_end=rules().quiet_hours_end, **view, **FORMATTERS)


@bp.route("/messages/new")
@access("manager")
def new_campaign():
    """The campaign form: name, template, audience (the size and a preview follow every change), send time
    and control group."""
    return _new_page(_campaign_form())


@bp.route("/messages/new/audience", methods=["POST"])
@access("manager")
def preview_campaign():
    """The audience's size and the message for one of its members, as the form stands (nothing is saved)."""
    form = _campaign_form(CampaignForm())
    if not form.validate_on_submit():
        return _new_page(form, 422, "audience")
    return _new_page(form, block="audience")


def _send_at(form: CampaignForm, store: Store | None, moment: datetime) -> datetime | None:
    """When to send: now, or the local time typed (in the campaign's store's zone, or the chain's)."""
    if form.when.data != "later":
        return moment
    text = (form.send_at.data or "").replace(" ", "T")
    try:
        local = datetime.fromisoformat(text)
    except ValueError:
        form.send_at.errors = [_("Enter a date and time such as 2026-06-20 10:00.")]
        return None
    if local.tzinfo is not None:
        form.send_at.errors = [_("Enter a date and time such as 2026-06-20 10:00.")]
        return None
    return local.replace(tzinfo=ZoneInfo(zone_of(store))).astimezone(moment.tzinfo)


@bp.route("/messages", methods=["POST"])
@access("manager")
def create_campaign():
    """Create the campaign: its audience and control group are frozen now, then its page queues the
    messages in steps. The same form sent twice creates one campaign."""
    form = _campaign_form(CampaignForm())
    moment = now()
    if form.validate_on_submit():
        audience, store = _audience(form)
        control = form.percent()
        send_at = _send_at(form, store, moment)
        if control is not None and send_at is not None:
            try:
                campaign = campaigns.create_campaign(
                    db.session, name=form.name.data or "", template=_template(form), audience=audience,
                    send_at=send_at, control_percent=control, staff=current_user, now=moment,
                    creation_key=form.idempotency_key.data, ip=request.remote_addr)
            except campaigns.CampaignError as refusal:
                db.session.rollback()
                field = getattr(form, refusal.field or "", None)
                if field is None:
                    return _new_page(form, 422, problem=refusal.message)
                field.errors = [refusal.message]
            else:
                if not in_scope(campaign.store_id):  # a replayed key of someone else's campaign
                    abort(404)
                db.session.commit()
                return redirect(url_for("manage.show_campaign", campaign_id=campaign.id), code=303)
    db.session.rollback()
    return _new_page(form, 422)


# --- one campaign ---------------------------------------------------------------------------------------

def _campaign_or_404(campaign_id: int, *, for_update: bool = False) -> Campaign:
    campaign = (campaigns.lock(db.session, campaign_id) if for_update
                else db.session.get(Campaign, campaign_id))
    if campaign is None or not in_scope(campaign.store_id):
        abort(404)
    return campaign


def _campaign_page(campaign: Campaign, status: int = 200, problem: str | None = None):
    """The campaign's page, or for htmx its status block (which polls while anything is left to do)."""
    moment = now()
    audience = campaigns.audience_of(campaign)
    tier = next((t for t in tiers_service.all_tiers(db.session) if t.id == audience.tier_id), None)
    return render_page(
        CAMPAIGN, "status", status=status, campaign=campaign, moment=moment,
        progress=campaigns.progress(db.session, campaign, now=moment),
        results=campaigns.results(db.session, campaign, now=moment), audience=audience,
        tier_name=tier.name(_locale()) if tier else None,
        month_name=format_date(date(2000, audience.birthday_month, 1), "MMMM") if audience.birthday_month else None,
        step_form=CampaignStepForm(formdata=None), cancel_form=CampaignCancelForm(formdata=None),
        problem=problem, result_days=campaigns.RESULT_DAYS, **FORMATTERS,
    )


def _answer(campaign: Campaign):
    target = url_for("manage.show_campaign", campaign_id=campaign.id)
    if is_htmx():
        response = _campaign_page(campaign)
        response.headers["HX-Push-Url"] = target
        return response
    return redirect(target, code=303)


@bp.route("/messages/<id:campaign_id>")
@access("manager")
def show_campaign(campaign_id: int):
    """One campaign: its audience, status and progress, and its results against the control group."""
    return _campaign_page(_campaign_or_404(campaign_id))


@bp.route("/messages/<id:campaign_id>/step", methods=["POST"])
@access("manager")
def run_campaign_step(campaign_id: int):
    """Queue the next members' messages in one transaction, under the campaign's lock, and show where it
    stands. The page's status block posts here until every message is queued; without JavaScript a
    Continue button does."""
    campaign = _campaign_or_404(campaign_id, for_update=True)
    form = CampaignStepForm()
    if not form.validate_on_submit():
        db.session.rollback()
        return _campaign_page(_campaign_or_404(campaign_id), 422)
    channels, _senders = senders.configured(current_app.config)
    campaigns.queue_step(db.session, campaign, channels=channels, now=now(), offset=form.offset.data)
    db.session.commit()
    return _answer(campaign)


@bp.route("/messages/<id:campaign_id>/cancel", methods=["POST"])
@access("manager")
def cancel_campaign(campaign_id: int):
    """Cancel a campaign that still has messages to queue or send: they are never sent."""
    campaign = _campaign_or_404(campaign_id, for_update=True)
    form = CampaignCancelForm()
    if not form.validate_on_submit():
        db.session.rollback()
        return _campaign_page(_campaign_or_404(campaign_id), 422, problem=_("This form is damaged. Reload the page."))
    try:
        campaigns.cancel_campaign(db.session, campaign, staff=current_user, now=now(), ip=request.remote_addr)
    except campaigns.CampaignError as refusal:
        db.session.rollback()
        return _campaign_page(_campaign_or_404(campaign_id), 422, problem=refusal.message)
    db.session.commit()
    return _answer(campaign)
