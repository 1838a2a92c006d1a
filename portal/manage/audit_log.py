"""Manager area: audit_log (being built)."""
from . import bp  # noqa: F401
