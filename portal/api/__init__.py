"""The cash-register JSON API under /api/v1: bearer tokens, idempotent POSTs, an OpenAPI 3.1 document."""
from flask import Blueprint

bp = Blueprint("api", __name__)

from . import errors, routes  # noqa: E402,F401  (routes register themselves on bp)
