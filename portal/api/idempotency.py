"""Idempotent POSTs: every POST carries an Idempotency-Key; the first answer is kept and replayed.

The key row is inserted before the work, in the same transaction, so:
- a retry after the answer was committed finds the row and gets the stored body, byte for byte;
- a concurrent request with the same key waits on the row (PostgreSQL's unique index, SQLite's
  write lock) and then replays the answer instead of doing the work a second time;
- a refusal (any 4xx) rolls the row back with everything else, so a corrected retry may reuse the key.
The same key with a different method, path or body is refused with 409.
"""
from __future__ import annotations

import hashlib
import json
from functools import wraps

from flask import current_app, g, request
from flask_babel import gettext as _
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..extensions import db
from ..models import ApiRequest
from ..web import now
from .errors import ApiError

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255


def _key() -> str:
    key = request.headers.get(HEADER, "").strip()
    if not key:
        raise ApiError(400, "idempotency_key_required",
                       _("Send an Idempotency-Key header with every POST, a new one for each new request."))
    if len(key) > MAX_KEY_LENGTH or not key.isascii() or not key.isprintable():
        raise ApiError(400, "invalid_idempotency_key",
                       _("The Idempotency-Key must be at most 255 printable ASCII characters."))
    return key


def _fingerprint() -> str:
    """What makes two requests 'the same': method, path and body (as JSON, ignoring key order and spacing)."""
    raw = request.get_data(cache=True)
    try:
        body = json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    except ValueError:
        body = raw
    digest = hashlib.sha256()
    for part in (request.method.encode(), request.path.encode(), body):
        digest.update(len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()


def service_key(token_id: int, key: str) -> str:
    """The key a service function stores on the row it writes, unique across registers (64 characters)."""
    return "api-" + hashlib.sha256(f"{token_id}:{key}".encode()).hexdigest()[:60]


def _stored(token_id: int, key: str) -> ApiRequest | None:
    return db.session.scalars(
        select(ApiRequest).where(ApiRequest.token_id == token_id, ApiRequest.idempotency_key == key)
    ).one_or_none()


def _answer(row: ApiRequest, fingerprint: str):
    if row.fingerprint != fingerprint:
        raise ApiError(409, "idempotency_key_reused",
                       _("This Idempotency-Key was already used for a different request. Use a new key."))
    if row.status_code is None:  # cannot normally be seen: the row commits together with its answer
        raise ApiError(409, "request_in_progress", _("This request is still being handled. Try again."))
    response = current_app.response_class(row.response_body, status=row.status_code,
                                          mimetype="application/json")
    response.headers["Idempotent-Replayed"] = "true"
    return response


def idempotent(view):
    """Run a POST view at most once per (register, Idempotency-Key); replay its first answer after that.

    The view returns (body_dict, status); it runs inside the request's single transaction, which
    this wrapper commits together with the stored answer.
    """
    @wraps(view)
    def wrapper(*args, **kwargs):
        key, fingerprint, token = _key(), _fingerprint(), g.api_token
        found = _stored(token.id, key)
        if found is not None:
            db.session.commit()  # keeps the token's last-used time
            return _answer(found, fingerprint)
        row = ApiRequest(token_id=token.id, idempotency_key=key, fingerprint=fingerprint,
                         method=request.method, path=request.path[:255], created_at=now())
        try:
            with db.session.begin_nested():
                db.session.add(row)
                db.session.flush()
        except IntegrityError:
            # Another request with this key committed while we waited for its row: replay its answer.
            db.session.rollback()
            return _answer(_stored(token.id, key), fingerprint)
        g.idempotency_key = service_key(token.id, key)
        try:
            body, status = view(*args, **kwargs)
        except Exception:
            db.session.rollback()
            raise
        text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
        row.status_code = status
        row.response_body = text
        db.session.commit()
        return current_app.response_class(text, status=status, mimetype="application/json")

    return wrapper
