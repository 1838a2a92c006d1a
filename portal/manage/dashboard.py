"""Manager area: dashboard (being built)."""
from . import bp  # noqa: F401
