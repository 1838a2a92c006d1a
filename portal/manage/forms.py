"""Forms of the manager area."""
from __future__ import annotations

from flask_babel import lazy_gettext as _l
from wtforms import SelectField, StringField
from wtforms.validators import DataRequired, Length

from ..money import normalise_text
from ..till.forms import KeyedForm


class ApiTokenForm(KeyedForm):
    name = StringField(_l("Register name"), filters=[normalise_text],
                       validators=[DataRequired(_l("Name the register, such as “Till 2”.")), Length(max=100)])
    store_id = SelectField(_l("Store"), coerce=int, validate_choice=True)
