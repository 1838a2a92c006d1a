from flask import Blueprint

bp = Blueprint("manage", __name__)

from . import routes  # noqa: E402,F401
