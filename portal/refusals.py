"""The one shape of a refusal that the rules give: which field it is about, a message for beside it,
and a stable code the API reports. Each service names it after itself (CheckoutError, ReturnError, ...)."""
from __future__ import annotations


class Refusal(ValueError):
    """An action the rules refuse; nothing was changed. `field` is None when it is about no one field."""

    def __init__(self, field: str | None, message, code: str = "invalid_value"):
        super().__init__(message)
        self.field = field
        self.message = message
        self.code = code
