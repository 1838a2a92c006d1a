"""Staff accounts and stores."""
from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.security import generate_password_hash

from . import audit
from .models import Staff, Store
from .phones import PhoneError, normalise_phone

USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
MIN_PASSWORD_LENGTH = 10


class StaffError(ValueError):
    pass


def hash_password(password: str) -> str:
    """scrypt, Werkzeug's strong default."""
    return generate_password_hash(password, method="scrypt")


def ensure_store(session: Session, *, code: str, name: str, now: datetime) -> Store:
    store = session.scalars(select(Store).where(Store.code == code)).one_or_none()
    if store is None:
        store = Store(code=code, name=name, created_at=now)
        session.add(store)
        session.flush()
    return store


def create_staff(
    session: Session, *, username: str, name: str, password: str, role: str, store: Store | None,
    now: datetime, created_by: Staff | None = None, phone: str | None = None,
) -> Staff:
    username = username.strip().lower()
    if not USERNAME.match(username):
        raise StaffError("username: 2-64 characters, letters, digits, dot, dash or underscore")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise StaffError(f"password: at least {MIN_PASSWORD_LENGTH} characters")
    if role not in ("cashier", "manager", "admin"):
        raise StaffError("role: cashier, manager or admin")
    if session.scalars(select(Staff).where(Staff.username == username)).one_or_none():
        raise StaffError(f"username {username!r} is taken")
    if phone:
        try:
            phone = normalise_phone(phone)
        except PhoneError:
            raise StaffError("phone: not a valid mobile number") from None
    staff = Staff(
        username=username, name=name.strip() or username, password_hash=hash_password(password),
        role=role, store_id=store.id if store else None, phone=phone or None, active=True, created_at=now,
    )
    session.add(staff)
    session.flush()
    audit.record(
        session, "staff.create", at=now, staff_id=created_by.id if created_by else None,
        store_id=staff.store_id, target=f"staff:{staff.id}",
        after={"username": username, "role": role, "store_id": staff.store_id},
    )
    return staff
