"""Test data made through the same service functions the app uses."""
from __future__ import annotations

import itertools
import uuid
from datetime import datetime, timezone

from flask import current_app
from sqlalchemy import select
from werkzeug.security import generate_password_hash

from portal import checkout, members
from portal.extensions import db
from portal.models import Member, Staff, Store
from portal.rules import load_rules

PASSWORD = "correct horse battery"
_FAST_HASH = generate_password_hash(PASSWORD, method="pbkdf2:sha256:1000")  # tests only
_counter = itertools.count(1)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def store(code: str = "S001", name: str = "Test Store") -> Store:
    found = db.session.scalars(select(Store).where(Store.code == code)).one_or_none()
    if found:
        return found
    found = Store(code=code, name=name, timezone="Asia/Shanghai", created_at=_now())
    db.session.add(found)
    db.session.flush()
    return found


def staff(role: str = "cashier", store_code: str = "S001", phone: str | None = None) -> Staff:
    n = next(_counter)
    person = Staff(
        username=f"{role}{n}", name=f"{role.title()} {n}", password_hash=_FAST_HASH, role=role,
        store_id=store(store_code).id, phone=phone, active=True, created_at=_now(),
    )
    db.session.add(person)
    db.session.flush()
    return person


def phone_number() -> str:
    return f"+86139{next(_counter):08d}"


def member(name: str = "王小明", phone: str | None = None, tier: str | None = None, now: datetime | None = None,
           referrer: Member | None = None, store_code: str = "S001", activated: bool = False) -> Member:
    """A registered member; `.activation_code` is the code the till showed (hashed with the app's key, so
    it works at /member/activate). activated=True gives them the password PASSWORD at once."""
    registration = members.register_member(
        db.session, name=name, phone_e164=phone or phone_number(), birthday=None, email=None,
        guardian_consent=False, marketing_consent=False, referrer=referrer, store=store(store_code), staff=None,
        rules=load_rules(db.session), secret_key=current_app.config["SECRET_KEY"], now=now or _now(),
    )
    registration.member.activation_code = registration.activation_code
    if activated:
        registration.member.password_hash = _FAST_HASH
        registration.member.activated_at = now or _now()
    if tier:
        from portal.models import Tier

        registration.member.tier = db.session.scalars(select(Tier).where(Tier.code == tier)).one()
    db.session.flush()
    return registration.member


def purchase(member_: Member, gross_fen: int, points: int = 0, now: datetime | None = None, store_code: str = "S001"):
    return checkout.record_purchase(
        db.session, member_id=member_.id, store=store(store_code), staff=None, gross_fen=gross_fen,
        points_to_redeem=points, idempotency_key=uuid.uuid4().hex, receipt_number=None,
        rules=load_rules(db.session), now=now or _now(),
    )
