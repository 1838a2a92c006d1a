"""The cash-register JSON API under /api/v1: bearer tokens, idempotent POSTs, an OpenAPI 3.1 document."""
import hashlib

from flask import Blueprint, current_app
from flask_limiter.util import get_remote_address

from ..access import bearer_token
from ..extensions import limiter


def api_rate_key() -> str:
    """Rate-limit key for the API: the register's token (hashed), or the address when there is none."""
    token = bearer_token()
    if token:
        return "token:" + hashlib.sha256(token.encode()).hexdigest()[:32]
    return "address:" + (get_remote_address() or "")


bp = Blueprint("api", __name__)
# Once, at import: the limiter keeps blueprint limits itself, whichever app is serving.
limiter.limit(lambda: current_app.config["API_RATE_LIMIT"], key_func=api_rate_key)(bp)

from . import errors, routes  # noqa: E402,F401  (routes register themselves on bp)
