"""Reading a register's JSON: the types the OpenAPI document promises, checked before any rule runs.

The rules themselves (what a valid amount, phone or birthday is) are the till's forms and the
service functions; the API feeds them the same values and reports their messages.
"""
from __future__ import annotations

from flask import request
from flask_babel import gettext as _
from werkzeug.datastructures import MultiDict

from ..cards import is_valid_card_number
from ..extensions import db
from ..members import find_by_card
from ..models import Member
from .errors import ApiError


def body() -> dict:
    """The request body as a JSON object, or a 400."""
    data = request.get_json(force=True, silent=True)
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", _("The body must be a JSON object."))
    return data


def _missing(name: str) -> ApiError:
    return ApiError(422, "missing_field", _("This field is required."), name)


def _wrong_type(name: str, kind: str) -> ApiError:
    return ApiError(422, "invalid_type", _("This field must be %(kind)s.", kind=kind), name)


def string(data: dict, name: str, *, required: bool = False, max_length: int = 255) -> str | None:
    value = data.get(name)
    if value is None:
        if required:
            raise _missing(name)
        return None
    if not isinstance(value, str):
        raise _wrong_type(name, _("a string"))
    if len(value) > max_length:
        raise ApiError(422, "too_long", _("Use at most %(count)s characters.", count=max_length), name)
    return value


def boolean(data: dict, name: str, *, required: bool = False) -> bool | None:
    value = data.get(name)
    if value is None:
        if required:
            raise _missing(name)
        return None
    if not isinstance(value, bool):
        raise _wrong_type(name, _("true or false"))
    return value


def integer(data: dict, name: str, *, minimum: int = 0, maximum: int = 2**31 - 1,
            required: bool = False) -> int | None:
    value = data.get(name)
    if value is None:
        if required:
            raise _missing(name)
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong_type(name, _("a whole number"))
    if value < minimum:
        raise ApiError(422, "invalid_value", _("This must be at least %(minimum)s.", minimum=minimum), name)
    if value > maximum:
        raise ApiError(422, "invalid_value", _("This must be at most %(maximum)s.", maximum=maximum), name)
    return value


def form_data(**values) -> MultiDict:
    """Values for a till form: None is left out, True is a ticked box, False an unticked one."""
    data = MultiDict()
    for key, value in values.items():
        if value is None or value is False:
            continue
        data[key] = "y" if value is True else str(value)
    return data


def form_refusal(form) -> ApiError:
    """The first of a till form's errors, as a 422 on its field (the API uses the form's field names)."""
    for field in form:
        if field.errors:
            return ApiError(422, "invalid_value", field.errors[0], field.name)
    return ApiError(422, "invalid_value", form.form_errors[0] if form.form_errors else _("Check the request."))


def member_by_card(card_number: str, field: str | None = "card_number", status_unknown: int = 404) -> Member:
    """The member with this card: 422 when the check digit fails, 404 (or `status_unknown`) when unknown."""
    if not is_valid_card_number(card_number):
        raise ApiError(422, "invalid_card_number",
                       _("This card number has a typo: its check digit does not match."), field)
    member = find_by_card(db.session, card_number)
    if member is None:
        raise ApiError(status_unknown, "member_not_found", _("No member has this card number."), field)
    return member
