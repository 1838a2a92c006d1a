"""Complaints: filing one, from the counter, a phone call, the member's portal or a cash register."""
from __future__ import annotations

from datetime import datetime

from flask_babel import lazy_gettext as _l
from sqlalchemy.orm import Session

from .checkout import CheckoutError
from .models import (
    COMPLAINT_CATEGORIES,
    COMPLAINT_CHANNELS,
    COMPLAINT_SEVERITIES,
    Complaint,
    ComplaintEvent,
    Member,
    Purchase,
    Staff,
    Store,
)
from .money import normalise_text

ComplaintError = CheckoutError  # a field, a message shown beside it, and a code for the API
MAX_DESCRIPTION = 2000

CATEGORY_LABELS = {
    "product_quality": _l("Product quality"),
    "service_attitude": _l("Service attitude"),
    "price_billing": _l("Price or billing"),
    "returns_refunds": _l("Returns and refunds"),
    "store_environment": _l("Store environment"),
    "points_membership": _l("Points and membership"),
    "other": _l("Other"),
}
SEVERITY_LABELS = {"low": _l("Low"), "normal": _l("Normal"), "high": _l("High")}


def file_complaint(
    session: Session, *, store: Store, category: str, severity: str, description: str, channel: str,
    member: Member | None = None, purchase: Purchase | None = None, staff: Staff | None = None,
    api_token_id: int | None = None, now: datetime,
) -> Complaint:
    """Open a complaint and put its first step on the timeline, in the caller's transaction."""
    if category not in COMPLAINT_CATEGORIES:
        raise ComplaintError("category", _l("Choose a category."), "invalid_category")
    if severity not in COMPLAINT_SEVERITIES:
        raise ComplaintError("severity", _l("Choose a severity."), "invalid_severity")
    if channel not in COMPLAINT_CHANNELS:
        raise ValueError(f"unknown channel {channel!r}")
    text = "\n".join(normalise_text(line) for line in (description or "").splitlines()).strip()
    if not text:
        raise ComplaintError("description", _l("Describe what happened."), "missing_description")
    if len(text) > MAX_DESCRIPTION:
        raise ComplaintError("description", _l("Use at most %(count)s characters.", count=MAX_DESCRIPTION),
                             "description_too_long")
    if purchase is not None and member is not None and purchase.member_id != member.id:
        raise ComplaintError("purchase_id", _l("This purchase belongs to another member."), "purchase_mismatch")
    if purchase is not None and member is None:
        member = purchase.member
    complaint = Complaint(
        member_id=member.id if member else None, store_id=store.id, purchase_id=purchase.id if purchase else None,
        category=category, severity=severity, description=text, status="open", channel=channel,
        staff_id=staff.id if staff else None, api_token_id=api_token_id, created_at=now,
    )
    session.add(complaint)
    session.flush()
    session.add(ComplaintEvent(
        complaint_id=complaint.id, kind="opened", body=text, visible_to_member=True,
        staff_id=staff.id if staff else None, member_id=member.id if member and channel == "member" else None,
        api_token_id=api_token_id, created_at=now,
    ))
    return complaint
