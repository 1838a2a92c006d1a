"""Small readers of what a page shows, for assertions a user would make."""
from __future__ import annotations

import re
from html import unescape


def text_of(response) -> str:
    return unescape(response.get_data(as_text=True))


def figure(response, name: str) -> str:
    """The text of the receipt cell marked data-figure=name."""
    match = re.search(rf'data-figure="{name}">([^<]*)<', response.get_data(as_text=True))
    assert match, f"no figure {name!r} on the page"
    return unescape(match.group(1)).strip()


def field_error(response, field_id: str) -> str | None:
    """The error message shown beside a form field, if any."""
    match = re.search(rf'<p class="error" id="{field_id}-error" role="alert">([^<]*)</p>', response.get_data(as_text=True))
    return unescape(match.group(1)) if match else None


def form_key(response, action: str | None = None) -> str:
    """The one-time key of the first form on the page, or of the first form after `action` (a URL part)."""
    body = response.get_data(as_text=True)
    if action:
        body = body[body.index(action):]
    match = re.search(r'name="idempotency_key" type="hidden" value="([^"]+)"', body)
    assert match, "no form with a key on the page"
    return match.group(1)


def is_full_page(response) -> bool:
    return "<html" in response.get_data(as_text=True)


def audited_changes():
    """The audit entries that record a change: not sign-ins, sign-outs or refused requests, which every
    request of a test may add."""
    from portal.models import AuditLog

    return AuditLog.action.notlike("auth.%") & AuditLog.action.notlike("access.%")
