"""Members: registration, the till's lookup, and one-time activation codes."""
from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from flask_babel import lazy_gettext as _l
from sqlalchemy import and_, select, update
from sqlalchemy.orm import Session

from . import messaging
from .cards import CARD_LENGTH, is_valid_card_number, new_card_number
from .models import ActivationCode, Member, Message, MessageDelivery, MessageTemplate, Staff, Store, Tier
from .money import normalise_text
from .phones import PhoneError, national_digits, normalise_phone
from .refusals import Refusal
from .rules import Rules

LOOKUP_LIMIT = 20


def name_key(name: str) -> str:
    return normalise_text(name).casefold()


def find_by_phone(session: Session, e164: str) -> Member | None:
    return session.scalars(select(Member).where(Member.phone == e164)).one_or_none()


def find_by_card(session: Session, card_number: str) -> Member | None:
    return session.scalars(
        select(Member).where(Member.card_number == card_number, Member.deleted_at.is_(None))
    ).one_or_none()


@dataclass(frozen=True)
class Lookup:
    """What the till's single box understood, and what it found."""

    kind: str  # card, phone, last4, name, empty, partial (digits still being typed), invalid_card, invalid
    members: list[Member]
    exact: bool  # a card or full phone: at most one member, open it at once


def lookup(session: Session, query: str | None) -> Lookup:
    """Find members by full phone, last 4 digits, card number (typed or scanned) or name prefix."""
    text = normalise_text(query)
    compact = text.replace(" ", "").replace("-", "")
    if not text:
        return Lookup("empty", [], False)
    if compact.isdigit() and compact.isascii():
        if len(compact) == CARD_LENGTH:
            if not is_valid_card_number(compact):
                return Lookup("invalid_card", [], False)
            member = find_by_card(session, compact)
            return Lookup("card", [member] if member else [], True)
        if len(compact) < CARD_LENGTH and len(compact) != 4:
            return Lookup("partial", [], False)
        if len(compact) == 4:
            found = session.scalars(
                select(Member)
                .where(Member.phone_last4 == compact, Member.deleted_at.is_(None))
                .order_by(Member.name_key, Member.id)
                .limit(LOOKUP_LIMIT)
            ).all()
            return Lookup("last4", list(found), False)
    if compact.lstrip("+").isdigit() and compact.isascii():
        try:
            e164 = normalise_phone(compact)
        except PhoneError:
            return Lookup("invalid", [], False)
        member = find_by_phone(session, e164)
        return Lookup("phone", [member] if member else [], True)
    found = session.scalars(
        select(Member)
        .where(name_prefix(session, name_key(text)), Member.deleted_at.is_(None))
        .order_by(Member.name_key, Member.id)
        .limit(LOOKUP_LIMIT)
    ).all()
    return Lookup("name", list(found), False)


def name_prefix(session: Session, key: str):
    """name_key starts with key, in a form each database answers from its index.

    SQLite compares text byte by byte, so a range does it; PostgreSQL has a pattern-ops index for LIKE.
    """
    if session.get_bind().dialect.name == "sqlite":
        return and_(Member.name_key >= key, Member.name_key < key + "\U0010ffff")
    escaped = key.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return Member.name_key.like(escaped + "%", escape="\\")


def resolve_referrer(session: Session, text: str | None) -> Member | None:
    """A referrer given as a phone or a card number; None when not found."""
    value = normalise_text(text).replace(" ", "")
    if not value:
        return None
    if value.isdigit() and len(value) == CARD_LENGTH:
        return find_by_card(session, value) if is_valid_card_number(value) else None
    try:
        return find_by_phone(session, normalise_phone(value))
    except PhoneError:
        return None


def local_date(moment: datetime, zone: str) -> date:
    """The calendar day `moment` falls on in a store's time zone (ages and birthdays count in store time)."""
    return moment.astimezone(ZoneInfo(zone)).date()


def age_on(birthday: date, today: date) -> int:
    return today.year - birthday.year - ((today.month, today.day) < (birthday.month, birthday.day))


def check_birthday(birthday: date | None, *, today: date, guardian_consent: bool, guardian_age: int) -> None:
    """PRODUCT's birthday rules, for the till and the member's own profile: not in the future, a plausible
    year, and a guardian's consent for members under `guardian_age` (ages counted on the store's day)."""
    if birthday is None:
        return
    if birthday > today:
        raise Refusal("birthday", _l("The birthday cannot be in the future."))
    if birthday < date(1900, 1, 1):
        raise Refusal("birthday", _l("Check the year of the birthday."))
    if age_on(birthday, today) < guardian_age and not guardian_consent:
        raise Refusal("birthday", _l("Members under %(age)s need a parent's or guardian's consent.",
                                     age=guardian_age), "guardian_consent_required")


@dataclass(frozen=True)
class Registration:
    member: Member
    activation_code: str


def register_member(
    session: Session,
    *,
    name: str,
    phone_e164: str,
    birthday: date | None,
    email: str | None,
    guardian_consent: bool,
    marketing_consent: bool,
    referrer: Member | None,
    store: Store,
    staff: Staff | None,
    rules: Rules,
    secret_key: str,
    now: datetime,
    api_token_id: int | None = None,
    channels: messaging.Channels | None = None,
) -> Registration:
    """Create a member in the lowest tier with a new card number and a one-time activation code.

    Raises IntegrityError when the phone is taken by a concurrent registration; the caller
    reports it beside the phone field.
    """
    lowest = session.scalars(select(Tier).order_by(Tier.threshold_fen, Tier.id).limit(1)).one()
    clean_name = normalise_text(name)
    member = Member(
        name=clean_name,
        name_key=name_key(clean_name),
        phone=phone_e164,
        phone_last4=national_digits(phone_e164)[-4:],
        email=email or None,
        birthday=birthday,
        guardian_consent=guardian_consent,
        privacy_version=rules.privacy_version,
        privacy_consented_at=now,
        marketing_consent=marketing_consent,
        marketing_consent_at=now if marketing_consent else None,
        tier=lowest,
        tier_since=now,
        points_balance=0,
        referrer_id=referrer.id if referrer else None,
        store_id=store.id,
        registered_by_id=staff.id if staff else None,
        api_token_id=api_token_id,
        created_at=now,
    )
    for _attempt in range(5):
        member.card_number = new_card_number()
        if find_by_card(session, member.card_number) is None:
            break
    session.add(member)
    session.flush()
    code = issue_activation_code(session, member, staff=staff, rules=rules, secret_key=secret_key, now=now,
                                 channels=channels)
    return Registration(member, code)


def hash_code(code: str, member_id: int, secret_key: str) -> str:
    return hmac.new(secret_key.encode(), f"{member_id}:{code}".encode(), hashlib.sha256).hexdigest()


def issue_activation_code(
    session: Session, member: Member, *, staff: Staff | None, rules: Rules, secret_key: str, now: datetime,
    channels: messaging.Channels | None = None,
) -> str:
    """A new 6-digit code, valid for `activation_minutes`; earlier unused codes stop working.

    With e-mail or SMS among `channels`, the code is also sent to the member there (never to the inbox, which
    they cannot open without it); the till shows it in any case."""
    for old in session.scalars(
        select(ActivationCode).where(ActivationCode.member_id == member.id, ActivationCode.used_at.is_(None))
    ):
        old.expires_at = min(old.expires_at, now)
    code = f"{secrets.randbelow(1_000_000):06d}"
    session.add(
        ActivationCode(
            member_id=member.id,
            code_hash=hash_code(code, member.id, secret_key),
            expires_at=now + timedelta(minutes=rules.activation_minutes),
            created_by_id=staff.id if staff else None,
            created_at=now,
        )
    )
    if channels is not None and (channels.email or channels.sms):
        _send_code(session, member, code, now=now, channels=channels)
    return code


def _send_code(session: Session, member: Member, code: str, *, now: datetime, channels: messaging.Channels) -> None:
    """Queue the code by e-mail or SMS; an earlier code still waiting in the outbox no longer works, so it stays."""
    earlier = select(Message.id).where(Message.member_id == member.id, Message.purpose == "activation")
    session.execute(
        update(MessageDelivery).where(MessageDelivery.status == "queued", MessageDelivery.message_id.in_(earlier))
        .values(status="cancelled", last_error="a newer code was issued").execution_options(synchronize_session=False))
    template = session.scalars(select(MessageTemplate).where(MessageTemplate.code == "activation")).first()
    if template is not None:
        messaging.queue(session, member=member, template=template, purpose="activation", now=now,
                        channels=channels, extra={"code": code}, inbox=False)

