"""Manager area: staff_pages (being built)."""
from . import bp  # noqa: F401
