"""The cash-register JSON API under /api/v1: bearer tokens, idempotent POSTs, an OpenAPI 3.1 document."""
from flask import Blueprint, current_app

from ..extensions import api_rate_key, limiter

bp = Blueprint("api", __name__)
# Once, at import: the limiter keeps blueprint limits itself, whichever app is serving.
limiter.limit(lambda: current_app.config["API_RATE_LIMIT"], key_func=api_rate_key)(bp)

from . import errors, routes  # noqa: E402,F401  (routes register themselves on bp)
