"""Failed password and code attempts, counted in the database so that every worker and app server sees the
same count (an in-memory counter would give each of them its own allowance).

Two limits, both over a sliding window (LOGIN_LOCK_MINUTES, 15 by default):
- per account (a staff username or a member's phone, however it was typed): after LOGIN_FAILURES_PER_ACCOUNT
  failures (5) the account takes no more attempts until the oldest of them leaves the window;
- per address: after LOGIN_FAILURES_PER_ADDRESS failures (20) from one address, that address takes none.

So that nobody can lock a real person out by failing on purpose, a browser where the account has signed in
before carries a signed device cookie, and the account limit does not apply to it (the address limit does).
The wait is never longer than the window, and a successful sign-in clears the account's count.

Accounts are stored as a keyed hash: this table never holds a username or a phone number.
"""
from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from math import ceil

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from .models import LoginFailure


@dataclass(frozen=True)
class Limits:
    per_account: int
    per_address: int
    window: timedelta

    @classmethod
    def from_config(cls, config) -> Limits:
        return cls(per_account=int(config["LOGIN_FAILURES_PER_ACCOUNT"]),
                   per_address=int(config["LOGIN_FAILURES_PER_ADDRESS"]),
                   window=timedelta(minutes=int(config["LOGIN_LOCK_MINUTES"])))


def account_key(secret_key: str, kind: str, identifier: str) -> str:
    """The stored name of an account: 'staff' + username or 'member' + phone in E.164, hashed with the app's key."""
    message = f"{kind}:{identifier.strip().lower()}".encode()
    return hmac.new(secret_key.encode(), message, hashlib.sha256).hexdigest()


def _wait(times: list[datetime], allowed: int, window: timedelta, now: datetime) -> timedelta | None:
    """How long until fewer than `allowed` of these failures (newest first) are inside the window."""
    if allowed <= 0 or len(times) < allowed:
        return None
    return times[allowed - 1] + window - now


def locked_for(session: Session, *, account: str, ip: str | None, now: datetime, limits: Limits,
               trusted_device: bool = False) -> int | None:
    """Minutes (rounded up) until this account may try again from this address, or None if it may now."""
    since = now - limits.window
    waits = []
    if not trusted_device:
        times = session.scalars(
            select(LoginFailure.created_at).where(LoginFailure.account == account, LoginFailure.created_at > since)
            .order_by(LoginFailure.created_at.desc()).limit(limits.per_account)).all()
        waits.append(_wait(times, limits.per_account, limits.window, now))
    if ip:
        times = session.scalars(
            select(LoginFailure.created_at).where(LoginFailure.ip == ip, LoginFailure.created_at > since)
            .order_by(LoginFailure.created_at.desc()).limit(limits.per_address)).all()
        waits.append(_wait(times, limits.per_address, limits.window, now))
    longest = max((w for w in waits if w is not None), default=None)
    if longest is None or longest <= timedelta(0):
        return None
    return max(1, ceil(longest.total_seconds() / 60))


def record_failure(session: Session, *, account: str, ip: str | None, now: datetime, limits: Limits) -> None:
    """Count one failure, and forget this account's and address's failures that no longer count."""
    gone = now - limits.window
    session.execute(delete(LoginFailure).where(LoginFailure.account == account, LoginFailure.created_at <= gone))
    if ip:
        session.execute(delete(LoginFailure).where(LoginFailure.ip == ip, LoginFailure.created_at <= gone))
    session.add(LoginFailure(account=account, ip=(ip or "")[:64] or None, created_at=now))


def clear(session: Session, account: str) -> None:
    """A successful sign-in: the account starts again from nothing (its address's count stays)."""
    session.execute(delete(LoginFailure).where(LoginFailure.account == account))
