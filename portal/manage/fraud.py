"""Manager area: fraud (being built)."""
from . import bp  # noqa: F401
