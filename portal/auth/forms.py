from flask_babel import lazy_gettext as _l
from ..forms import PortalForm
from wtforms import HiddenField, PasswordField, StringField
from wtforms.validators import DataRequired, Length

from ..money import normalise_text


class StaffLoginForm(PortalForm):
    username = StringField(_l("Username"), filters=[normalise_text], validators=[DataRequired(_l("Enter your username.")), Length(max=64)])
    password = PasswordField(_l("Password"), validators=[DataRequired(_l("Enter your password.")), Length(max=256)])
    next = HiddenField()


class ReauthForm(PortalForm):
    password = PasswordField(_l("Password"), validators=[DataRequired(_l("Enter your password.")), Length(max=256)])
    next = HiddenField()
