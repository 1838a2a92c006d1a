"""Manager area: members (being built)."""
from . import bp  # noqa: F401
