"""Bearer tokens for cash registers: one per register, shown once, kept only as a SHA-256 hash."""
from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from flask_babel import lazy_gettext as _l
from sqlalchemy import Engine, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from . import audit
from .database import write_intent
from .models import ApiToken, Staff, Store
from .money import normalise_text
from .refusals import Refusal

TOKEN_PREFIX = "plk_"
LAST_USED_RESOLUTION = timedelta(minutes=5)  # how stale "last used" may get, to spare a write per call


TokenError = Refusal  # a token that cannot be created


def hash_token(token: str) -> str:
    """Tokens are 256 random bits, so a plain SHA-256 is enough to keep them unusable if the table leaks."""
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, *, name: str, store: Store, staff: Staff | None, now: datetime,
                 ip: str | None = None, creation_key: str | None = None) -> tuple[ApiToken, str | None]:
    """A new token for one register at `store`; returns the row and the token, which is never shown again.

    A `creation_key` seen before (the same form sent twice) returns that token's row and None.
    """
    if creation_key:
        earlier = session.scalars(select(ApiToken).where(ApiToken.creation_key == creation_key)).one_or_none()
        if earlier is not None:
            return earlier, None
    clean = normalise_text(name)
    if not clean:
        raise TokenError("name", _l("Name the register, such as “Till 2”."))
    if len(clean) > 100:
        raise TokenError("name", _l("Use at most 100 characters."))
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        name=clean, store_id=store.id, token_hash=hash_token(token), token_hint=token[:10],
        created_by_id=staff.id if staff else None, created_at=now, creation_key=creation_key,
    )
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:  # the same form, sent twice at once: the other request made it
        if creation_key:
            earlier = session.scalars(select(ApiToken).where(ApiToken.creation_key == creation_key)).one_or_none()
            if earlier is not None:
                return earlier, None
        raise
    audit.record(session, "api_token.create", at=now, staff_id=staff.id if staff else None, store_id=store.id,
                 target=f"api_token:{row.id}", after={"name": clean, "store": store.code}, ip=ip)
    return row, token


def authenticate(session: Session, token: str | None) -> ApiToken | None:
    """The active token this is, or None (unknown, revoked, or its store closed)."""
    if not token or not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    row = session.scalars(select(ApiToken).where(ApiToken.token_hash == hash_token(token))).one_or_none()
    if row is None or row.revoked_at is not None or not row.store.active:
        return None
    return row


def needs_touch(row: ApiToken, now: datetime) -> bool:
    return row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION


def record_use_apart(engine: Engine, token_id: int, now: datetime) -> None:
    """Note a read-only call's time in a short transaction of its own, run after the request has
    ended, so that a GET never turns its own read into a write or waits for a lock."""
    with write_intent(), engine.begin() as connection:
        connection.execute(update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=now))


def revoke(session: Session, row: ApiToken, *, staff: Staff | None, now: datetime, ip: str | None = None) -> bool:
    """Revoke a token; its next request is refused. False when it was already revoked."""
    if row.revoked_at is not None:
        return False
    row.revoked_at = now
    row.revoked_by_id = staff.id if staff else None
    audit.record(session, "api_token.revoke", at=now, staff_id=staff.id if staff else None,
                 store_id=row.store_id, target=f"api_token:{row.id}", before={"name": row.name}, ip=ip)
    return True


def all_tokens(session: Session) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.revoked_at.is_not(None), ApiToken.id.desc())))
