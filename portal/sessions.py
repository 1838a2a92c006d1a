"""Server-side logins. The signed cookie carries a random token; the row decides whether it still counts.

Logging out revokes the row, so a copied cookie stops working; so does deactivating
the account. The idle clock lives in the signed cookie (no write on every page view),
the absolute clock in the row.
"""
from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session, joinedload

from .models import AuthSession, Member, Staff


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start(
    session: Session, *, staff: Staff | None = None, member: Member | None = None,
    ip: str | None, user_agent: str | None, now: datetime,
) -> str:
    token = secrets.token_urlsafe(32)
    session.add(
        AuthSession(
            token_hash=_hash(token),
            staff_id=staff.id if staff else None,
            member_id=member.id if member else None,
            created_at=now,
            last_seen_at=now,
            ip=(ip or "")[:64] or None,
            user_agent=(user_agent or "")[:255] or None,
        )
    )
    return token


def load(session: Session, token: str, *, now: datetime, absolute_timeout: timedelta) -> Staff | Member | None:
    """The staff member or member a token belongs to, if the login is still valid.

    One query: the login row with its account, and the account's store (and a member's tier), which
    nearly every page shows."""
    row = session.scalars(
        select(AuthSession).where(AuthSession.token_hash == _hash(token)).options(
            joinedload(AuthSession.staff).joinedload(Staff.store),
            joinedload(AuthSession.member).options(joinedload(Member.store), joinedload(Member.tier)),
        )
    ).one_or_none()
    if row is None or row.revoked_at is not None or now - row.created_at > absolute_timeout:
        return None
    if row.staff_id is not None:
        user = row.staff
        if user is None or not user.active:
            return None
    else:
        user = row.member
        if user is None or user.deleted_at is not None:
            return None
    user.auth_token = token
    return user


def end(session: Session, token: str, now: datetime) -> None:
    session.execute(
        update(AuthSession).where(AuthSession.token_hash == _hash(token), AuthSession.revoked_at.is_(None))
        .values(revoked_at=now)
    )


def end_all(session: Session, *, staff_id: int | None = None, member_id: int | None = None, now: datetime,
            except_token: str | None = None) -> None:
    """Revoke every login of one account (deactivation, password reset, account deletion), but for
    `except_token` (the login that changed the password) when given."""
    condition = AuthSession.staff_id == staff_id if staff_id is not None else AuthSession.member_id == member_id
    conditions = [condition, AuthSession.revoked_at.is_(None)]
    if except_token:
        conditions.append(AuthSession.token_hash != _hash(except_token))
    session.execute(update(AuthSession).where(*conditions).values(revoked_at=now))
