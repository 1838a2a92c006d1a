from flask import Blueprint

bp = Blueprint("member", __name__)

from . import routes  # noqa: E402,F401
