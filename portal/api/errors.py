"""API errors: always {"error": {"code", "message", "field"}} with a 4xx status."""
from __future__ import annotations

from flask import jsonify

from . import bp


class ApiError(Exception):
    """A refusal the register can act on; `field` names the body or query field at fault, if one is."""

    def __init__(self, status: int, code: str, message, field: str | None = None):
        super().__init__(str(message))
        self.status = status
        self.code = code
        self.message = str(message)
        self.field = field


def error_body(code: str, message, field: str | None = None) -> dict:
    return {"error": {"code": code, "message": str(message), "field": field}}


@bp.errorhandler(ApiError)
def api_error(error: ApiError):
    response = jsonify(error_body(error.code, error.message, error.field))
    response.status_code = error.status
    return response
