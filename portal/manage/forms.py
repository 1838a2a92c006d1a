"""Forms of the manager area."""
from __future__ import annotations

import re
from datetime import date

from flask_babel import lazy_gettext as _l
from ..forms import PortalForm
from flask_wtf.file import FileField
from wtforms import (
    BooleanField,
    Form,
    IntegerField,
    PasswordField,
    SelectChoice,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, Length, NumberRange, Optional, ValidationError

from ..campaigns import DEFAULT_CONTROL_PERCENT, MAX_CONTROL_PERCENT
from ..complaints import CATEGORY_LABELS, SEVERITY_LABELS, STATUS_LABELS
from ..dashboard import MAX_TAKINGS_FEN
from ..extensions import db
from ..models import Staff
from ..money import InputError, normalise_text, parse_money, parse_points
from ..segments import LISTS, SEGMENT_LABELS
from ..staff import ROLES
from ..till.forms import KeyedForm


class ApiTokenForm(KeyedForm):
    name = StringField(_l("Register name"), filters=[normalise_text],
                       validators=[DataRequired(_l("Name the register, such as “Till 2”.")), Length(max=100)])
    store_id = SelectField(_l("Store"), coerce=int, validate_choice=True)


# --- complaints -----------------------------------------------------------------------------------------

def row_id(value) -> int | None:
    """A row id typed into a form or a URL, or None for anything that is not one."""
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if 1 <= number <= 2**31 - 1 else None


QUEUE_STATUSES = ("active", "open", "acknowledged", "resolved", "closed", "all")


class QueueFilterForm(Form):
    """The queue's filters, read from the query string (a GET form: bookmarkable, no CSRF).

    A value that is not one of the choices is ignored rather than refused: an old bookmark still opens."""

    status = SelectField(_l("Status"), default="active", validate_choice=False, choices=[
        SelectChoice("active", _l("Open or acknowledged")), *(SelectChoice(*item) for item in STATUS_LABELS.items()),
        SelectChoice("all", _l("Any status")),
    ])
    store = SelectField(_l("Store"), coerce=row_id, validate_choice=False)
    category = SelectField(_l("Category"), validate_choice=False,
                           choices=[SelectChoice("", _l("Any category")),
                                    *(SelectChoice(*item) for item in CATEGORY_LABELS.items())])
    severity = SelectField(_l("Severity"), validate_choice=False,
                           choices=[SelectChoice("", _l("Any severity")),
                                    *(SelectChoice(*item) for item in SEVERITY_LABELS.items())])
    overdue = BooleanField(_l("Overdue only"), false_values=("", "0", "false", "n", "no"))

    def chosen(self, field: SelectField):
        """The field's value if it is one of its choices, else None (any)."""
        allowed = {choice.value for choice in field.choices}
        return field.data if field.data in allowed and field.data != "" else None

    def chosen_status(self) -> str:
        return self.status.data if self.status.data in QUEUE_STATUSES else "active"


class FiguresFilterForm(Form):
    period = SelectField(_l("Period"), default="7", validate_choice=False, choices=[
        SelectChoice("today", _l("Today")), SelectChoice("7", _l("Last 7 days")),
        SelectChoice("30", _l("Last 30 days")), SelectChoice("90", _l("Last 90 days")),
    ])
    store = SelectField(_l("Store"), coerce=row_id, validate_choice=False)

    def chosen_period(self) -> str:
        return self.period.data if self.period.data in ("today", "7", "30", "90") else "7"


class ServiceLevelForm(PortalForm):
    """The complaint time limits, in hours (rules for the whole chain; admins only)."""

    complaint_response_hours = StringField(_l("First response within (hours)"))
    complaint_resolution_hours = StringField(_l("Resolution within (hours)"))


class AcknowledgeForm(PortalForm):
    """The first response, with nothing to fill in."""


class CloseForm(PortalForm):
    """resolved -> closed, with nothing to fill in."""


class ReplyForm(PortalForm):
    # The service says what is wrong with the text (empty, too long), the same words the API uses.
    body = TextAreaField(_l("Message"), id="reply-body")
    to_member = BooleanField(_l("Send to the member (otherwise an internal note)"), id="reply-to-member")


class ResolveForm(PortalForm):
    body = TextAreaField(_l("What was done (the member reads this; optional)"), id="resolve-body")


class AssignForm(PortalForm):
    assignee = SelectField(_l("Assign to"), coerce=row_id, validate_choice=False)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.assignee_staff: Staff | None = None

    def validate_assignee(self, field):
        self.assignee_staff = db.session.get(Staff, field.data) if field.data else None
        if self.assignee_staff is None:
            raise ValidationError(_l("Choose someone who works at this store."))


class GoodwillForm(KeyedForm):
    points = StringField(_l("Goodwill points"), id="goodwill-points")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.points_value = 0

    def validate_points(self, field):
        try:
            self.points_value = parse_points(field.data)
        except InputError as error:
            raise ValidationError(error.args[0]) from None


# --- staff and stores -----------------------------------------------------------------------------------
# The rules (username, password length, phone, store code, time zone, who may do what) live in
# portal/staff.py; these forms only carry the fields, and the service's refusals go beside them.



ROLE_LABELS = {"cashier": _l("Cashier"), "manager": _l("Manager"), "admin": _l("Administrator")}
STAFF_STATUSES = ("active", "inactive", "all")


class StaffFilterForm(Form):
    """The staff list's filters, read from the query string; values that are not choices are ignored."""

    store = SelectField(_l("Store"), coerce=row_id, validate_choice=False, id="filter-store")
    role = SelectField(_l("Role"), validate_choice=False, id="filter-role",
                       choices=[SelectChoice("", _l("Any role")),
                                *(SelectChoice(role, ROLE_LABELS[role]) for role in ROLES)])
    status = SelectField(_l("Status"), default="active", validate_choice=False, id="filter-status", choices=[
        SelectChoice("active", _l("Active")), SelectChoice("inactive", _l("Deactivated")),
        SelectChoice("all", _l("Active or deactivated")),
    ])

    def chosen_role(self) -> str | None:
        return self.role.data if self.role.data in ROLES else None

    def chosen_status(self) -> str:
        return self.status.data if self.status.data in STAFF_STATUSES else "active"


class StaffForm(KeyedForm):
    """A new staff account; sent twice, it creates one."""

    username = StringField(_l("Username"), id="staff-username")
    name = StringField(_l("Name"), id="staff-name")
    password = PasswordField(_l("Password"), id="staff-password")
    role = SelectField(_l("Role"), validate_choice=False, id="staff-role")
    store_id = SelectField(_l("Store"), coerce=row_id, validate_choice=False, id="staff-store")
    phone = StringField(_l("Their own mobile (optional)"), id="staff-phone")


class StaffActionForm(PortalForm):
    """Deactivate, reactivate or reset a password: nothing to fill in but the CSRF token."""


class StaffRoleForm(PortalForm):
    role = SelectField(_l("Role"), validate_choice=False)
    store_id = SelectField(_l("Store"), coerce=row_id, validate_choice=False)


class StoreForm(KeyedForm):
    """A new store; sent twice, it creates one."""

    code = StringField(_l("Code"), id="store-code")
    name = StringField(_l("Name"), id="store-name")
    timezone = StringField(_l("Time zone"), id="store-timezone", default="Asia/Shanghai")


class StoreEditForm(PortalForm):
    name = StringField(_l("Name"))
    timezone = StringField(_l("Time zone"))


# --- audit log viewer -----------------------------------------------------------------------------------


_ACTION_CODE = re.compile(r"[a-z0-9_]+(?:\.[a-z0-9_]+)*")
_DATE_TEXT = re.compile(r"([0-9]{4})-([0-9]{1,2})-([0-9]{1,2})")


class AuditFilterForm(Form):
    """The audit log's filters, read from the query string (a GET form: bookmarkable, no CSRF).

    A value that is not valid is ignored, so an old bookmark still opens; only a date that cannot be read is
    pointed out beside its field (and not used)."""

    action = SelectField(_l("Action"), validate_choice=False)
    staff = SelectField(_l("Staff member"), coerce=row_id, validate_choice=False)
    store = SelectField(_l("Store"), coerce=row_id, validate_choice=False)
    target = StringField(_l("Target contains"), filters=[normalise_text])
    date_from = StringField(_l("From (date)"))
    date_to = StringField(_l("To (date)"))

    def chosen_action(self) -> tuple[str | None, str | None]:
        """(action, group): an action code, or a group such as "complaint" from "complaint.*"; else (None, None)."""
        value = (self.action.data or "").strip()
        if len(value) > 64:
            return None, None
        if value.endswith(".*") and _ACTION_CODE.fullmatch(value[:-2]):
            return None, value[:-2]
        if _ACTION_CODE.fullmatch(value):
            return value, None
        return None, None

    def chosen_target(self) -> str | None:
        return (self.target.data or "")[:128] or None

    def chosen_date(self, field) -> date | None:
        """The date typed (YYYY-MM-DD, as a date picker sends it), or None; a date that cannot be read gets an
        error beside the field."""
        text = normalise_text(field.data)
        if not text:
            return None
        match = _DATE_TEXT.fullmatch(text)
        try:
            if not match or not 2000 <= int(match.group(1)) <= 2999:
                raise ValueError
            return date(*(int(part) for part in match.groups()))
        except ValueError:
            field.errors = [_l("Enter a date such as 2026-06-15. This one is not used.")]
            return None


# --- members list (manage/members.py) -------------------------------------------------------------------



MEMBER_LIST_LABELS = {
    "all": _l("All members"),
    "birthdays": _l("Birthdays this month"),
    "expiring": _l("Points expiring in 30 days"),
    "at_risk": _l("Members at risk"),
}
CONSENT_CHOICES = {"yes": True, "no": False}


class MemberFilterForm(Form):
    """The members list's search and filters, read from the query string (a GET form: bookmarkable, no CSRF).

    A value that is not one of the choices is ignored rather than refused: an old bookmark still opens."""

    q = StringField(_l("Name, phone, last 4 digits or card number"), id="member-q", filters=[normalise_text])
    show = SelectField(_l("List"), default="all", validate_choice=False,
                       choices=[SelectChoice(name, MEMBER_LIST_LABELS[name]) for name in LISTS])
    tier = SelectField(_l("Tier"), coerce=row_id, validate_choice=False)
    store = SelectField(_l("Store"), coerce=row_id, validate_choice=False)
    segment = SelectField(_l("Segment"), validate_choice=False,
                          choices=[SelectChoice("", _l("Any segment")),
                                   *(SelectChoice(*item) for item in SEGMENT_LABELS.items())])
    consent = SelectField(_l("Marketing consent"), validate_choice=False, choices=[
        SelectChoice("", _l("Given or not")), SelectChoice("yes", _l("Given")), SelectChoice("no", _l("Not given")),
    ])

    def chosen_show(self) -> str:
        return self.show.data if self.show.data in LISTS else "all"

    def chosen_segment(self) -> str | None:
        return self.segment.data if self.segment.data in SEGMENT_LABELS else None

    def chosen_consent(self) -> bool | None:
        return CONSENT_CHOICES.get(self.consent.data)

    def search_text(self) -> str:
        return (self.q.data or "")[:100]


# --- dashboard: a day's takings -------------------------------------------------------------------------




class TakingsForm(PortalForm):
    """A store's total takings for one local day, from the till's end-of-day report (members and everyone else).

    Sending a day again corrects it (one row per store and day), so the form needs no one-time key.
    The store is the manager's own; an admin picks it."""

    store = SelectField(_l("Store"), coerce=row_id, validate_choice=False, id="takings-store")
    day = StringField(_l("Day"), filters=[normalise_text], id="takings-day")
    amount = StringField(_l("Takings of the day (all customers)"), id="takings-amount")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.day_value: date | None = None
        self.amount_fen = 0

    def validate_day(self, field):
        try:
            self.day_value = date.fromisoformat(field.data or "")
        except ValueError:
            raise ValidationError(_l("Enter a day such as 2026-06-14.")) from None

    def validate_amount(self, field):
        try:
            self.amount_fen = parse_money(field.data, MAX_TAKINGS_FEN)
        except InputError as error:
            raise ValidationError(error.args[0]) from None


# --- member imports (CSV) -------------------------------------------------------------------------------



class ImportForm(KeyedForm):
    """Upload a CSV of existing members; the file itself is checked by imports.start_import."""

    file = FileField(_l("CSV file"))
    store_id = SelectField(_l("Members count as registered at"), coerce=row_id, validate_choice=False)
    dry_run = BooleanField(_l("Dry run: check every row and report what would happen, without adding anyone"))


class ImportStepForm(PortalForm):
    """The next step of an import; `offset` is where the page saw it stand (a step sent twice does nothing)."""

    offset = IntegerField(validators=[Optional(), NumberRange(min=0, max=2**31 - 1)])


class ImportForRealForm(KeyedForm):
    """Run a finished dry run's file as a real import."""


# --- messages: templates and campaigns (manage/messages.py) ---------------------------------------------

from wtforms import RadioField  # noqa: E402



class MessageTemplateForm(KeyedForm):
    """A template's name and its texts in both languages; campaigns.check_template says what is wrong.
    The key makes a new template's form create one template however often it is sent."""

    name = StringField(_l("Template name"), id="template-name")
    subject_zh = StringField(_l("Subject (Chinese)"), id="template-subject-zh")
    body_zh = TextAreaField(_l("Message (Chinese)"), id="template-body-zh")
    subject_en = StringField(_l("Subject (English)"), id="template-subject-en")
    body_en = TextAreaField(_l("Message (English)"), id="template-body-en")
    preview_member = StringField(_l("Preview for the member (card number or phone; empty: the newest member)"),
                                 id="template-preview-member", filters=[normalise_text])

    def texts(self) -> dict:
        return {name: getattr(self, name).data or "" for name in
                ("name", "subject_zh", "body_zh", "subject_en", "body_en")}


class TemplateArchiveForm(PortalForm):
    """Archive a template: nothing to fill in but the CSRF token."""


class CampaignForm(KeyedForm):
    """A new campaign: its name, template, audience, send time and control group; sent twice, it creates one.

    The choices are filled in by the view; the service refuses what is not allowed."""

    name = StringField(_l("Campaign name"), id="campaign-name", filters=[normalise_text])
    template_id = SelectField(_l("Template"), coerce=row_id, validate_choice=False, id="campaign-template")
    tier = SelectField(_l("Tier"), coerce=row_id, validate_choice=False, id="campaign-tier")
    store = SelectField(_l("Store"), coerce=row_id, validate_choice=False, id="campaign-store")
    segment = SelectField(_l("Segment"), validate_choice=False, id="campaign-segment",
                          choices=[SelectChoice("", _l("Any segment")),
                                   *(SelectChoice(*item) for item in SEGMENT_LABELS.items())])
    at_risk = BooleanField(_l("Only members at risk (no purchase in 90 days after at least two)"),
                           id="campaign-at-risk", false_values=("", "0", "false", "n", "no"))
    birthday_month = SelectField(_l("Birthday month"), coerce=row_id, validate_choice=False,
                                 id="campaign-birthday-month")
    when = RadioField(_l("When to send"), default="now", validate_choice=False, id="campaign-when",
                      choices=[SelectChoice("now", _l("Now")), SelectChoice("later", _l("Later, at:"))])
    send_at = StringField(_l("Send at (store time)"), id="campaign-send-at", filters=[normalise_text])
    control_percent = StringField(_l("Control group (percent held back)"), id="campaign-control",
                                  default=str(DEFAULT_CONTROL_PERCENT), filters=[normalise_text])

    def chosen_segment(self) -> str | None:
        return self.segment.data if self.segment.data in SEGMENT_LABELS else None

    def chosen_month(self) -> int | None:
        return self.birthday_month.data if self.birthday_month.data and 1 <= self.birthday_month.data <= 12 else None

    def percent(self) -> int | None:
        """The control group's percent, or None (with an error beside the field) if it is out of bounds."""
        text = (self.control_percent.data or "").rstrip("%").strip()
        if text.isascii() and text.isdigit() and 0 <= int(text) <= MAX_CONTROL_PERCENT:
            return int(text)
        self.control_percent.errors = [_l("Enter a whole number from 0 to %(max)s.", max=MAX_CONTROL_PERCENT)]
        return None


class CampaignStepForm(PortalForm):
    """The next step of queuing a campaign; `offset` is where the page saw it stand (sent twice: nothing)."""

    offset = IntegerField(validators=[Optional(), NumberRange(min=0, max=2**31 - 1)])


class CampaignCancelForm(PortalForm):
    """Cancel a campaign: nothing to fill in but the CSRF token."""
