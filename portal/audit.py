"""The audit log: who did what, when, where, with the before and after."""
from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy.orm import Session

from .models import AuditLog


def record(
    session: Session, action: str, *, at: datetime, staff_id: int | None = None, store_id: int | None = None,
    target: str | None = None, before: dict | None = None, after: dict | None = None, ip: str | None = None,
) -> AuditLog:
    entry = AuditLog(
        action=action, staff_id=staff_id, store_id=store_id, target=target, ip=ip, created_at=at,
        before=json.dumps(before, ensure_ascii=False, default=str) if before is not None else None,
        after=json.dumps(after, ensure_ascii=False, default=str) if after is not None else None,
    )
    session.add(entry)
    return entry
