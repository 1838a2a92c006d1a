"""Forms of the till. Checks that need the database are validate_<field> methods."""
from __future__ import annotations

import re
import uuid

from flask import current_app
from flask_babel import lazy_gettext as _l
from ..forms import PortalForm
from wtforms import BooleanField, DateField, HiddenField, SelectChoice, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional, ValidationError

from .. import complaints as complaint_service
from .. import members as member_service
from ..cards import CARD_LENGTH, is_valid_card_number
from ..extensions import db
from ..models import Purchase
from ..refusals import Refusal
from ..money import InputError, normalise_text, parse_money, parse_points
from ..phones import PhoneError, normalise_phone
from ..web import now, rules

def money_in(field, cap_fen: int) -> int:
    """The fen a money field holds, or a ValidationError beside it."""
    try:
        return parse_money(field.data, cap_fen)
    except InputError as error:
        raise ValidationError(error.args[0]) from None


class KeyedForm(PortalForm):
    """A form that writes carries a one-time key; the database holds it unique, so a double-click,
    a refresh or a retry records once."""

    idempotency_key = HiddenField(validators=[DataRequired(), Length(min=16, max=64)])

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.idempotency_key.data:
            self.idempotency_key.data = uuid.uuid4().hex

    def validate_idempotency_key(self, field):
        if not re.fullmatch(r"[A-Za-z0-9_-]+", field.data or ""):
            raise ValidationError(_l("This form is damaged. Reload the page."))


class CheckoutForm(KeyedForm):
    gross = StringField(_l("Amount (shelf price)"))
    points = StringField(_l("Pay with points"))
    receipt_number = StringField(
        _l("Till receipt no. (optional)"), filters=[normalise_text], validators=[Optional(), Length(max=64)]
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gross_fen = 0
        self.points_value = 0

    def validate_gross(self, field):
        self.gross_fen = money_in(field, rules().purchase_cap_fen)

    def validate_points(self, field):
        try:
            self.points_value = parse_points(field.data)
        except InputError as error:
            raise ValidationError(error.args[0]) from None


class ReturnForm(KeyedForm):
    amount = StringField(_l("Amount returned (shelf price)"))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.amount_fen = 0

    def validate_amount(self, field):
        self.amount_fen = money_in(field, rules().purchase_cap_fen)


class AdjustForm(KeyedForm):
    points = StringField(_l("Points to add (or take away, with a minus sign)"))
    reason = StringField(_l("Reason"), filters=[normalise_text],
                         validators=[DataRequired(_l("Say why the points are adjusted.")), Length(max=200)])

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.points_value = 0

    def validate_points(self, field):
        text = normalise_text(field.data).replace(" ", "")
        sign = -1 if text[:1] in ("-", "−") else 1
        try:
            value = parse_points(text.lstrip("+-−"))
        except InputError as error:
            raise ValidationError(error.args[0]) from None
        if value == 0:
            raise ValidationError(_l("Enter a number of points other than zero."))
        self.points_value = sign * value


class RegisterForm(PortalForm):
    name = StringField(
        _l("Name"), filters=[normalise_text],
        validators=[DataRequired(_l("Enter the member's name.")), Length(max=100)],
    )
    phone = StringField(_l("Mobile phone"), validators=[DataRequired(_l("Enter a mobile phone number."))])
    birthday = DateField(_l("Birthday (optional)"), validators=[Optional()])
    guardian_consent = BooleanField()
    email = StringField(_l("E-mail (optional)"), filters=[normalise_text], validators=[Optional(), Length(max=254)])
    privacy_consent = BooleanField(_l("The member has read and agrees to the privacy notice"))
    marketing_consent = BooleanField(_l("The member agrees to receive offers and news (optional)"))
    referrer = StringField(_l("Referred by: phone or card (optional)"), filters=[normalise_text])

    def __init__(self, *args, store_timezone: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.guardian_consent.label.text = _l(
            "A parent or guardian agrees (members under %(age)s)", age=rules().guardian_age
        )
        self.phone_e164 = None
        self.referrer_member = None
        self.store_timezone = store_timezone or current_app.config["BABEL_DEFAULT_TIMEZONE"]

    def validate_phone(self, field):
        try:
            self.phone_e164 = normalise_phone(field.data)
        except PhoneError:
            raise ValidationError(_l("Enter a mobile number such as 13812345678.")) from None
        existing = member_service.find_by_phone(db.session, self.phone_e164)
        if existing is not None:
            raise ValidationError(
                _l("This phone is already registered (card %(card)s).", card=existing.card_number)
            )

    def validate_birthday(self, field):
        try:
            member_service.check_birthday(field.data, today=member_service.local_date(now(), self.store_timezone),
                                          guardian_consent=self.guardian_consent.data,
                                          guardian_age=rules().guardian_age)
        except Refusal as refusal:
            raise ValidationError(refusal.message) from None

    def validate_email(self, field):
        if field.data and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", field.data):
            raise ValidationError(_l("Enter an e-mail address such as name@example.com."))

    def validate_privacy_consent(self, field):
        if not field.data:
            raise ValidationError(_l("The member must agree to the privacy notice to join."))

    def validate_referrer(self, field):
        value = normalise_text(field.data).replace(" ", "")
        if not value:
            return
        if value.isdigit() and len(value) == CARD_LENGTH and not is_valid_card_number(value):
            raise ValidationError(_l("This card number has a typo: its check digit does not match."))
        self.referrer_member = member_service.resolve_referrer(db.session, value)
        if self.referrer_member is None:
            raise ValidationError(_l("No member has this phone or card number."))
        if self.phone_e164 and self.referrer_member.phone == self.phone_e164:
            raise ValidationError(_l("A member cannot refer themselves."))


class ComplaintForm(KeyedForm):
    """A complaint written down at the counter or taken by phone, for a member or an anonymous customer."""

    card_number = StringField(_l("Member's card (leave empty for a customer who is not a member)"),
                              filters=[normalise_text], validators=[Optional(), Length(max=32)])
    purchase_id = HiddenField()
    channel = SelectField(_l("How it came"), choices=[SelectChoice("counter", _l("At the counter")),
                                                      SelectChoice("phone", _l("By phone"))])
    category = SelectField(_l("Category"), choices=[SelectChoice(code, label) for code, label
                                                    in complaint_service.CATEGORY_LABELS.items()])
    severity = SelectField(_l("Severity"), default="normal", choices=[
        SelectChoice(code, label) for code, label in complaint_service.SEVERITY_LABELS.items()])
    description = TextAreaField(_l("What happened"), validators=[
        DataRequired(_l("Describe what happened.")), Length(max=complaint_service.MAX_DESCRIPTION)])

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.member = None
        self.purchase = None

    def validate_card_number(self, field):
        if not field.data:
            return
        value = field.data.replace(" ", "")
        if not is_valid_card_number(value):
            raise ValidationError(_l("This card number has a typo: its check digit does not match."))
        self.member = member_service.find_by_card(db.session, value)
        if self.member is None:
            raise ValidationError(_l("No member has this card number."))

    def validate_purchase_id(self, field):
        if not field.data:
            return
        found = db.session.get(Purchase, int(field.data)) if (
            field.data.isascii() and field.data.isdigit() and len(field.data) < 10) else None
        if found is None:
            raise ValidationError(_l("No such purchase."))
        self.purchase = found
