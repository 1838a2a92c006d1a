"""Forms of the manager area."""
from __future__ import annotations

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import BooleanField, Form, SelectChoice, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, ValidationError

from ..complaints import CATEGORY_LABELS, SEVERITY_LABELS, STATUS_LABELS
from ..extensions import db
from ..models import Staff
from ..money import InputError, normalise_text, parse_points
from ..till.forms import KeyedForm


class ApiTokenForm(KeyedForm):
    name = StringField(_l("Register name"), filters=[normalise_text],
                       validators=[DataRequired(_l("Name the register, such as “Till 2”.")), Length(max=100)])
    store_id = SelectField(_l("Store"), coerce=int, validate_choice=True)


# --- complaints -----------------------------------------------------------------------------------------

def _row_id(value) -> int | None:
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
    store = SelectField(_l("Store"), coerce=_row_id, validate_choice=False)
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
    store = SelectField(_l("Store"), coerce=_row_id, validate_choice=False)

    def chosen_period(self) -> str:
        return self.period.data if self.period.data in ("today", "7", "30", "90") else "7"


class ServiceLevelForm(FlaskForm):
    """The complaint time limits, in hours (rules for the whole chain; admins only)."""

    complaint_response_hours = StringField(_l("First response within (hours)"))
    complaint_resolution_hours = StringField(_l("Resolution within (hours)"))


class AcknowledgeForm(FlaskForm):
    """The first response, with nothing to fill in."""


class CloseForm(FlaskForm):
    """resolved -> closed, with nothing to fill in."""


class ReplyForm(FlaskForm):
    # The service says what is wrong with the text (empty, too long), the same words the API uses.
    body = TextAreaField(_l("Message"), id="reply-body")
    to_member = BooleanField(_l("Send to the member (otherwise an internal note)"), id="reply-to-member")


class ResolveForm(FlaskForm):
    body = TextAreaField(_l("What was done (the member reads this; optional)"), id="resolve-body")


class AssignForm(FlaskForm):
    assignee = SelectField(_l("Assign to"), coerce=_row_id, validate_choice=False)

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

