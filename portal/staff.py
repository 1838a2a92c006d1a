"""Staff accounts and stores: who may create, deactivate, reactivate, reset and promote whom.

Admins work every store and create stores; a manager works the cashiers of their own store only. Nobody
deactivates or demotes themself, and the last active admin is never deactivated or demoted, so the chain
can always be managed. Every change is audited with its before and after. Deactivating an account or
resetting its password ends all of its logins; a deactivated account's next request is refused
(sessions.load checks Staff.active).

A refusal raises StaffError (a Refusal: field, message, code) and changes nothing. Code "forbidden" means
the actor may not do this at all (a page answers 403); every other code is about what was typed (422).
"""
from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from zoneinfo import available_timezones

from flask_babel import force_locale
from flask_babel import lazy_gettext as _l
from sqlalchemy import case, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from werkzeug.security import generate_password_hash

from . import audit, sessions
from .models import ROLE_RANK, AuthSession, Staff, Store
from .money import normalise_text
from .phones import PhoneError, normalise_phone
from .refusals import Refusal

USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
STORE_CODE = re.compile(r"^[A-Z0-9][A-Z0-9-]{1,15}$")
MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 256
ROLES = ("cashier", "manager", "admin")
# Temporary passwords: 16 characters without look-alikes (0/O, 1/l/I), about 80 bits, read out or typed easily.
TEMPORARY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
TEMPORARY_LENGTH = 16


class StaffError(Refusal):
    """A staff or store change the rules refuse. str() is English (for the CLI and logs); `message` is in
    the reader's language, for beside the field."""

    def __str__(self) -> str:
        with force_locale("en"):
            return str(self.message)


def hash_password(password: str) -> str:
    """scrypt, Werkzeug's strong default."""
    return generate_password_hash(password, method="scrypt")


# --- rules shared by the functions below ----------------------------------------------------------------

@lru_cache(maxsize=1)
def timezones() -> frozenset[str]:
    """The IANA zone names this system knows (read once)."""
    return frozenset(available_timezones())


def _forbidden(message=None) -> StaffError:
    return StaffError(None, message or _l("You may not do this."), "forbidden")


def may_manage(actor: Staff, person: Staff) -> bool:
    """Whether `actor` may deactivate, reactivate or reset `person`: an admin anyone, a manager the cashiers
    of their own store."""
    if actor.role == "admin":
        return True
    return (actor.role == "manager" and person.role == "cashier" and actor.store_id is not None
            and person.store_id == actor.store_id)


def _check_may_manage(actor: Staff, person: Staff) -> None:
    if not may_manage(actor, person):
        raise _forbidden(_l("Only an administrator may change this account."))


def _check_password(password: str, field: str = "password") -> None:
    if len(password or "") < MIN_PASSWORD_LENGTH:
        raise StaffError(field, _l("Use at least %(count)s characters.", count=MIN_PASSWORD_LENGTH),
                         "password_too_short")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise StaffError(field, _l("Use at most %(count)s characters.", count=MAX_PASSWORD_LENGTH), "too_long")


def _other_active_admins(session: Session, person: Staff) -> int:
    """How many active admins there are besides `person`, with their rows locked, so two admins demoting each
    other at once cannot leave none (the second waits, then counts again)."""
    others = session.scalars(
        select(Staff.id).where(Staff.role == "admin", Staff.active.is_(True), Staff.id != person.id)
        .with_for_update()
    ).all()
    return len(others)


def _created_by_form(session: Session, model, creation_key: str | None):
    """The store or account the form with this key created, if it was sent before."""
    if not creation_key:
        return None
    return session.scalars(select(model).where(model.creation_key == creation_key)).first()


# --- stores ---------------------------------------------------------------------------------------------

def ensure_store(session: Session, *, code: str, name: str, now: datetime) -> Store:
    """The store with this code, created if there is none (the CLI's first store)."""
    store = session.scalars(select(Store).where(Store.code == code)).one_or_none()
    if store is None:
        store = Store(code=code, name=name, created_at=now)
        session.add(store)
        session.flush()
    return store


def _store_name(name: str) -> str:
    clean = normalise_text(name)
    if not clean:
        raise StaffError("name", _l("Give the store a name."), "required")
    if len(clean) > 100:
        raise StaffError("name", _l("Use at most %(count)s characters.", count=100), "too_long")
    return clean


def _store_timezone(zone: str) -> str:
    clean = normalise_text(zone)
    if clean not in timezones():
        raise StaffError("timezone", _l("Choose a time zone such as Asia/Shanghai."), "invalid_timezone")
    return clean


def _store_state(store: Store) -> dict:
    return {"code": store.code, "name": store.name, "timezone": store.timezone, "active": store.active}


@dataclass
class Created:
    """What a creation form made, and whether this answer is a replay of an earlier send."""

    row: Store | Staff
    replayed: bool = False


def create_store(session: Session, *, code: str, name: str, timezone: str, actor: Staff, now: datetime,
                 ip: str | None = None, creation_key: str | None = None) -> Created:
    """A new store (admins only). Its code is 2 to 16 capitals, digits or dashes, unique; its time zone an
    IANA name. The same form sent twice creates one store."""
    if actor.role != "admin":
        raise _forbidden(_l("Only an administrator may create stores."))
    if (earlier := _created_by_form(session, Store, creation_key)) is not None:
        return Created(earlier, replayed=True)
    clean_code = normalise_text(code).upper()
    if not STORE_CODE.match(clean_code):
        raise StaffError("code", _l("Use 2 to 16 capital letters, digits or dashes, such as S002."), "invalid_code")
    clean_name = _store_name(name)
    zone = _store_timezone(timezone)
    if session.scalars(select(Store.id).where(Store.code == clean_code)).first() is not None:
        raise StaffError("code", _l("Another store has the code %(code)s.", code=clean_code), "code_taken")
    store = Store(code=clean_code, name=clean_name, timezone=zone, active=True, created_at=now,
                  creation_key=creation_key or None)
    try:
        with session.begin_nested():
            session.add(store)
            session.flush()
    except IntegrityError:  # the same code or form at the same moment in another request
        if (earlier := _created_by_form(session, Store, creation_key)) is not None:
            return Created(earlier, replayed=True)
        raise StaffError("code", _l("Another store has the code %(code)s.", code=clean_code), "code_taken") from None
    audit.record(session, "store.create", at=now, staff_id=actor.id, store_id=store.id, target=f"store:{store.id}",
                 after=_store_state(store), ip=ip)
    return Created(store)


def update_store(session: Session, store: Store, *, name: str, timezone: str, actor: Staff, now: datetime,
                 ip: str | None = None) -> bool:
    """Rename a store or change its time zone (admins only); False when nothing changed."""
    if actor.role != "admin":
        raise _forbidden(_l("Only an administrator may change stores."))
    clean_name, zone = _store_name(name), _store_timezone(timezone)
    before = _store_state(store)
    if (clean_name, zone) == (store.name, store.timezone):
        return False
    store.name, store.timezone = clean_name, zone
    audit.record(session, "store.update", at=now, staff_id=actor.id, store_id=store.id, target=f"store:{store.id}",
                 before=before, after=_store_state(store), ip=ip)
    return True


def set_store_open(session: Session, store: Store, *, open_: bool, actor: Staff, now: datetime,
                   ip: str | None = None) -> bool:
    """Close a store (its registers' tokens stop working; its history stays) or open it again (admins only).
    The last open store cannot be closed. False when it already was so."""
    if actor.role != "admin":
        raise _forbidden(_l("Only an administrator may close or open stores."))
    if store.active == open_:
        return False
    if not open_:
        others = session.scalars(
            select(Store.id).where(Store.active.is_(True), Store.id != store.id).with_for_update()
        ).all()
        if not others:
            raise StaffError(None, _l("This is the only open store; it cannot be closed."), "last_store")
    before = _store_state(store)
    store.active = open_
    audit.record(session, "store.reopen" if open_ else "store.close", at=now, staff_id=actor.id, store_id=store.id,
                 target=f"store:{store.id}", before=before, after=_store_state(store), ip=ip)
    return True


# --- staff ----------------------------------------------------------------------------------------------

def _staff_state(person: Staff) -> dict:
    return {"username": person.username, "role": person.role, "store_id": person.store_id, "active": person.active}


def create_staff(
    session: Session, *, username: str, name: str, password: str, role: str, store: Store | None,
    now: datetime, created_by: Staff | None = None, phone: str | None = None,
) -> Staff:
    """A new staff account (the command line and the demo; see create_account)."""
    return create_account(session, username=username, name=name, password=password, role=role, store=store,
                          now=now, created_by=created_by, phone=phone).row


def create_account(
    session: Session, *, username: str, name: str, password: str, role: str, store: Store | None,
    now: datetime, created_by: Staff | None = None, phone: str | None = None, ip: str | None = None,
    creation_key: str | None = None,
) -> Created:
    """A new staff account. `created_by` None is the command line (the first admin), which may create anyone;
    otherwise an admin creates anyone anywhere and a manager only cashiers of their own store. Cashiers and
    managers belong to an open store. The same form (creation_key) sent twice creates one account."""
    if (earlier := _created_by_form(session, Staff, creation_key)) is not None:
        return Created(earlier, replayed=True)
    if role not in ROLES:
        raise StaffError("role", _l("Choose cashier, manager or administrator."), "invalid_role")
    if created_by is not None:
        if created_by.role != "admin" and (created_by.role != "manager" or role != "cashier"):
            raise _forbidden(_l("A manager may create cashiers only."))
        if created_by.role == "manager" and (store is None or store.id != created_by.store_id):
            raise _forbidden(_l("A manager may create cashiers of their own store only."))
    if role != "admin" and store is None:
        raise StaffError("store_id", _l("Choose the store they work at."), "required")
    if store is not None and not store.active and created_by is not None:
        raise StaffError("store_id", _l("This store is closed."), "store_closed")
    username = normalise_text(username).lower()
    if not USERNAME.match(username):
        raise StaffError("username", _l("Use 2 to 64 letters, digits, dots, dashes or underscores, starting with a "
                                        "letter or digit."), "invalid_username")
    clean_name = normalise_text(name) or username
    if len(clean_name) > 100:
        raise StaffError("name", _l("Use at most %(count)s characters.", count=100), "too_long")
    _check_password(password)
    if phone and normalise_text(phone):
        try:
            phone = normalise_phone(phone)
        except PhoneError:
            raise StaffError("phone", _l("Enter a mobile number such as 13812345678."), "invalid_phone") from None
    else:
        phone = None
    taken = StaffError("username", _l("The username %(username)s is taken.", username=username), "username_taken")
    if session.scalars(select(Staff.id).where(Staff.username == username)).first() is not None:
        raise taken
    person = Staff(
        username=username, name=clean_name, password_hash=hash_password(password), role=role,
        store_id=store.id if store else None, phone=phone, active=True, created_at=now,
        creation_key=creation_key or None,
    )
    try:
        with session.begin_nested():
            session.add(person)
            session.flush()
    except IntegrityError:  # the same username or form at the same moment: a replay, or another form
        if (earlier := _created_by_form(session, Staff, creation_key)) is not None:
            return Created(earlier, replayed=True)
        raise taken from None
    after = _staff_state(person)
    after.pop("active")
    audit.record(
        session, "staff.create", at=now, staff_id=created_by.id if created_by else None,
        store_id=person.store_id, target=f"staff:{person.id}", after=after, ip=ip,
    )
    return Created(person)


def deactivate_staff(session: Session, person: Staff, *, actor: Staff, now: datetime, ip: str | None = None) -> bool:
    """Deactivate an account: every login of theirs ends and their next request is refused. Nobody deactivates
    themself, and the last active admin stays. False when they already were inactive."""
    _check_may_manage(actor, person)
    if person.id == actor.id:
        raise StaffError(None, _l("You cannot deactivate your own account."), "self")
    if not person.active:
        return False
    if person.role == "admin" and _other_active_admins(session, person) == 0:
        raise StaffError(None, _l("This is the last active administrator; it cannot be deactivated."), "last_admin")
    before = _staff_state(person)
    person.active = False
    sessions.end_all(session, staff_id=person.id, now=now)
    audit.record(session, "staff.deactivate", at=now, staff_id=actor.id, store_id=person.store_id,
                 target=f"staff:{person.id}", before=before, after=_staff_state(person), ip=ip)
    return True


def reactivate_staff(session: Session, person: Staff, *, actor: Staff, now: datetime, ip: str | None = None) -> bool:
    """Let a deactivated account sign in again (with its password as it was). False when it was active."""
    _check_may_manage(actor, person)
    if person.active:
        return False
    if person.store is not None and not person.store.active and person.role != "admin":
        raise StaffError(None, _l("Their store is closed. Move them to an open store first."), "store_closed")
    before = _staff_state(person)
    person.active = True
    audit.record(session, "staff.reactivate", at=now, staff_id=actor.id, store_id=person.store_id,
                 target=f"staff:{person.id}", before=before, after=_staff_state(person), ip=ip)
    return True


def temporary_password() -> str:
    return "".join(secrets.choice(TEMPORARY_ALPHABET) for _ in range(TEMPORARY_LENGTH))


def reset_password(session: Session, person: Staff, *, actor: Staff, now: datetime, ip: str | None = None,
                   keep_token: str | None = None) -> str:
    """Give the account a new, generated password and end all its logins; returns the password, to be shown
    once and never stored. `keep_token` keeps the actor's own login when they reset their own password."""
    _check_may_manage(actor, person)
    password = temporary_password()
    person.password_hash = hash_password(password)
    sessions.end_all(session, staff_id=person.id, now=now,
                     except_token=keep_token if person.id == actor.id else None)
    audit.record(session, "staff.password_reset", at=now, staff_id=actor.id, store_id=person.store_id,
                 target=f"staff:{person.id}", after={"username": person.username, "logins_ended": True}, ip=ip)
    return password


def change_role(session: Session, person: Staff, *, role: str, store: Store | None, actor: Staff, now: datetime,
                ip: str | None = None) -> bool:
    """Change someone's role or store (admins only; not their own). The last active admin is never demoted.
    Cashiers and managers belong to an open store. False when nothing changed."""
    if actor.role != "admin":
        raise _forbidden(_l("Only an administrator may change roles."))
    if role not in ROLES:
        raise StaffError("role", _l("Choose cashier, manager or administrator."), "invalid_role")
    if person.id == actor.id:
        raise StaffError("role", _l("You cannot change your own role; ask another administrator."), "self")
    if role != "admin" and store is None:
        raise StaffError("store_id", _l("Choose the store they work at."), "required")
    store_id = store.id if store else None
    if (role, store_id) == (person.role, person.store_id):
        return False
    if store is not None and store_id != person.store_id and not store.active:
        raise StaffError("store_id", _l("This store is closed."), "store_closed")
    if person.role == "admin" and role != "admin" and person.active and _other_active_admins(session, person) == 0:
        raise StaffError("role", _l("This is the last active administrator; it cannot be demoted."), "last_admin")
    before = {"role": person.role, "store_id": person.store_id}
    person.role, person.store_id = role, store_id
    session.flush()
    session.expire(person, ["store"])
    audit.record(session, "staff.role_change", at=now, staff_id=actor.id, store_id=store_id,
                 target=f"staff:{person.id}", before=before, after={"role": role, "store_id": store_id}, ip=ip)
    return True


# --- the list -------------------------------------------------------------------------------------------

def staff_list(session: Session, *, store_ids: list[int] | None, role: str | None = None,
               active: bool | None = None, limit: int = 500,
               only_id: int | None = None) -> list[tuple[Staff, datetime | None]]:
    """Staff with when each last signed in, active first, by store then role (highest first) then name.
    `store_ids` None is every store (and staff with none); `only_id` one person."""
    logins = select(AuthSession.staff_id, func.max(AuthSession.created_at).label("last_login"))
    logins = logins.where(AuthSession.staff_id == only_id) if only_id is not None else logins.where(
        AuthSession.staff_id.is_not(None))
    last_login = logins.group_by(AuthSession.staff_id).subquery()
    query = select(Staff, last_login.c.last_login).outerjoin(last_login, last_login.c.staff_id == Staff.id)
    if store_ids is not None:
        query = query.where(Staff.store_id.in_(store_ids))
    if role:
        query = query.where(Staff.role == role)
    if active is not None:
        query = query.where(Staff.active.is_(active))
    if only_id is not None:
        query = query.where(Staff.id == only_id)
    rank = sorted(ROLE_RANK.items(), key=lambda item: -item[1])
    order = case({name: position for position, (name, _rank) in enumerate(rank)}, value=Staff.role)
    query = query.order_by(Staff.active.desc(), Staff.store_id, order, Staff.name, Staff.id).limit(limit)
    rows = session.execute(query).all()
    return [(person, _aware(moment)) for person, moment in rows]


def _aware(moment: datetime | None) -> datetime | None:
    """max() over a UTC column comes back naive on SQLite."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=timezone.utc)
