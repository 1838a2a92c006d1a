"""Manager area: imports (being built)."""
from . import bp  # noqa: F401
