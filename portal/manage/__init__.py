from flask import Blueprint

bp = Blueprint("manage", __name__)

from . import (  # noqa: E402,F401
    audit_log,
    complaints,
    dashboard,
    fraud,
    imports,
    members,
    messages,
    routes,
    settings,
    staff_pages,
)
