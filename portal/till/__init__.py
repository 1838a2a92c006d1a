from flask import Blueprint

bp = Blueprint("till", __name__)

from . import routes  # noqa: E402,F401
