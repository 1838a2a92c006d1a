"""Forms of the member's own pages, and of activation and sign-in on the phone."""
from __future__ import annotations

from flask_babel import lazy_gettext as _l
from ..forms import PortalForm
from wtforms import (
    BooleanField,
    DateField,
    HiddenField,
    PasswordField,
    SelectChoice,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, EqualTo, Length, Optional, ValidationError

from .. import complaints as complaint_service
from ..money import normalise_text
from ..till.forms import KeyedForm
from ..phones import PhoneError, normalise_phone


class PhoneFieldMixin:
    """A mobile number, normalised to E.164 in `phone_e164` when it reads as one."""

    def validate_phone(self, field):
        try:
            self.phone_e164 = normalise_phone(field.data)
        except PhoneError:
            self.phone_e164 = None
            raise ValidationError(_l("Enter a mobile number such as 13812345678.")) from None


class MemberLoginForm(PhoneFieldMixin, PortalForm):
    phone = StringField(_l("Mobile phone"), validators=[DataRequired(_l("Enter your mobile number."))])
    password = PasswordField(_l("Password"), validators=[DataRequired(_l("Enter your password.")), Length(max=256)])
    next = HiddenField()


class ActivateForm(PhoneFieldMixin, PortalForm):
    phone = StringField(_l("Mobile phone"), validators=[DataRequired(_l("Enter your mobile number."))])
    code = StringField(_l("6-digit code from the till"), filters=[normalise_text],
                       validators=[DataRequired(_l("Enter the code the cashier gave you.")), Length(max=12)])
    password = PasswordField(_l("Choose a password"),
                             validators=[DataRequired(_l("Choose a password.")), Length(max=256)])
    confirm = PasswordField(_l("The password again"),
                            validators=[EqualTo("password", _l("The two passwords are not the same."))])


class ProfileForm(PortalForm):
    name = StringField(_l("Name"), filters=[normalise_text],
                       validators=[DataRequired(_l("Enter your name.")), Length(max=100)])
    birthday = DateField(_l("Birthday (optional)"), validators=[Optional()])
    guardian_consent = BooleanField()
    marketing_consent = BooleanField(_l("Send me offers and news (you can stop them at any time)"))
    locale = SelectField(_l("Language"), choices=[SelectChoice("zh", "中文"), SelectChoice("en", "English")])

    def __init__(self, *args, guardian_age: int = 14, **kwargs):
        super().__init__(*args, **kwargs)
        self.guardian_consent.label.text = _l("A parent or guardian agrees (members under %(age)s)",
                                              age=guardian_age)


class PasswordForm(PortalForm):
    current_password = PasswordField(_l("Current password"),
                                     validators=[DataRequired(_l("Enter your current password."))])
    password = PasswordField(_l("New password"), validators=[DataRequired(_l("Choose a password.")),
                                                             Length(max=256)])
    confirm = PasswordField(_l("The new password again"),
                            validators=[EqualTo("password", _l("The two passwords are not the same."))])


class DeleteForm(PortalForm):
    password = PasswordField(_l("Your password"), validators=[DataRequired(_l("Enter your password."))])
    understood = BooleanField(_l("I understand that my account is deleted for good"),
                              validators=[DataRequired(_l("Tick the box to confirm."))])


class MemberComplaintForm(KeyedForm):
    """A complaint the member files from the phone, optionally about one of their purchases."""

    category = SelectField(_l("What is it about?"), choices=[
        SelectChoice(code, label) for code, label in complaint_service.CATEGORY_LABELS.items()])
    purchase_id = SelectField(_l("Which visit (optional)"), choices=[SelectChoice("", "—")], validate_choice=True)
    description = TextAreaField(_l("What happened"), validators=[
        DataRequired(_l("Describe what happened.")), Length(max=complaint_service.MAX_DESCRIPTION)])


class ReopenForm(PortalForm):
    body = TextAreaField(_l("Why is it not solved? (optional)"), validators=[Length(max=2000)])


class VisitRatingForm(PortalForm):
    rating = SelectField(choices=[SelectChoice(str(n), str(n)) for n in range(1, 6)])
    comment = TextAreaField(_l("Anything to add? (optional)"), validators=[Length(max=2000)])
