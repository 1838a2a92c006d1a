from flask import Blueprint

bp = Blueprint("manage", __name__)

from . import settings, complaints, routes  # noqa: E402,F401
