"""A member's own account: activation with the till's one-time code, password sign-in, the profile,
a copy of everything held about them, and erasure.

Erasure removes the person, not the books: personal fields are cleared, while the ledger, purchases
and returns stay (linked to an anonymous member row) so every figure still adds up.
"""
from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import date, datetime

from flask_babel import lazy_gettext as _l
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash

from . import audit, messaging, sessions
from .checkout import CheckoutError
from .members import check_birthday, find_by_phone, hash_code, local_date, name_key
from .models import (
    ActivationCode,
    AuthSession,
    Complaint,
    ComplaintEvent,
    LedgerEntry,
    Member,
    Message,
    MessageDelivery,
    Purchase,
    Return,
    TierChange,
    VisitRating,
)
from .money import normalise_text
from .rules import Rules
from .staff import hash_password

AccountError = CheckoutError  # a field, a message shown beside it, and a code
MIN_PASSWORD_LENGTH = 8
MAX_CODE_ATTEMPTS = 5
# Checked against when the phone is unknown, so an unknown phone and a wrong password take the same time.
_DUMMY_HASH = hash_password("not a real password")


def check_password_rules(password: str) -> None:
    if len(password or "") < MIN_PASSWORD_LENGTH:
        raise AccountError("password", _l("Use at least %(count)s characters.", count=MIN_PASSWORD_LENGTH),
                           "password_too_short")
    if len(password) > 256:
        raise AccountError("password", _l("Use at most %(count)s characters.", count=256), "too_long")


def activate(session: Session, *, phone_e164: str, code: str, password: str, secret_key: str,
             now: datetime) -> Member:
    """Set the member's password with the one-time code the till gave them.

    The code works once, until it expires, and for at most MAX_CODE_ATTEMPTS tries; every wrong try
    counts (the caller commits even when this raises). Every other login of the member ends.
    """
    # One message for an unknown phone, a wrong code, and a code used up, expired or tried too often:
    # the page must not tell a stranger which phones belong to members.
    message = _l("This phone and code do not match, or the code is no longer valid. Check it, or ask at "
                 "the till for a new code.")
    wrong = AccountError("code", message, "wrong_code")
    check_password_rules(password)
    member = find_by_phone(session, phone_e164)
    if member is None or member.deleted_at is not None:
        raise wrong
    found = session.scalars(
        select(ActivationCode)
        .where(ActivationCode.member_id == member.id, ActivationCode.used_at.is_(None),
               ActivationCode.expires_at > now)
        .order_by(ActivationCode.id.desc()).limit(1).with_for_update()
    ).one_or_none()
    if found is None:
        raise AccountError("code", message, "code_expired")
    if found.attempts >= MAX_CODE_ATTEMPTS:
        raise AccountError("code", message, "too_many_attempts")
    if not hmac.compare_digest(found.code_hash, hash_code(normalise_text(code), member.id, secret_key)):
        found.attempts += 1
        raise wrong
    found.used_at = now
    member.password_hash = hash_password(password)
    member.activated_at = member.activated_at or now
    sessions.end_all(session, member_id=member.id, now=now)
    audit.record(session, "member.activate", at=now, target=f"member:{member.id}", member_id=member.id,
                 store_id=member.store_id)
    return member


def authenticate(session: Session, phone_e164: str | None, password: str) -> Member | None:
    """The member with this phone and password, or None (taking as long either way)."""
    member = find_by_phone(session, phone_e164) if phone_e164 else None
    usable = member is not None and member.deleted_at is None and member.password_hash
    ok = check_password_hash(member.password_hash if usable else _DUMMY_HASH, password or "")
    return member if usable and ok else None


@dataclass(frozen=True)
class ProfileChange:
    name: str
    birthday: date | None
    guardian_consent: bool
    marketing_consent: bool
    locale: str | None


def update_profile(session: Session, member: Member, change: ProfileChange, *, rules: Rules,
                   now: datetime) -> list[str]:
    """Apply the member's own changes; returns the names of the fields that changed.

    A new birthday is dated (a birthday changed within 30 days earns no bonus that year); members
    under the guardian age need a guardian's consent; consents keep the time they were given.
    """
    name = normalise_text(change.name)
    if not name:
        raise AccountError("name", _l("Enter your name."), "missing_field")
    if len(name) > 100:
        raise AccountError("name", _l("Use at most %(count)s characters.", count=100), "too_long")
    check_birthday(change.birthday, today=local_date(now, member.store.timezone),
                   guardian_consent=change.guardian_consent, guardian_age=rules.guardian_age)
    if change.locale not in (None, "zh", "en"):
        raise AccountError("locale", _l("Choose a language."), "invalid_value")
    before = {"name": member.name, "birthday": member.birthday, "marketing_consent": member.marketing_consent,
              "guardian_consent": member.guardian_consent, "locale": member.locale}
    if member.name != name:
        member.name, member.name_key = name, name_key(name)
    if member.birthday != change.birthday:
        member.birthday = change.birthday
        member.birthday_changed_at = now
    member.guardian_consent = change.guardian_consent
    if member.marketing_consent != change.marketing_consent:
        member.marketing_consent = change.marketing_consent
        member.marketing_consent_at = now
        if not change.marketing_consent:  # withdrawn: what is still queued stops too
            messaging.withdraw_marketing(session, member.id, now=now)
    member.locale = change.locale
    after = {"name": member.name, "birthday": member.birthday, "marketing_consent": member.marketing_consent,
             "guardian_consent": member.guardian_consent, "locale": member.locale}
    changed = [key for key in before if before[key] != after[key]]
    if changed:
        audit.record(session, "member.profile", at=now, target=f"member:{member.id}",
                     before={key: before[key] for key in changed}, after={key: after[key] for key in changed})
    return changed


def change_password(session: Session, member: Member, *, current: str, new: str, keep_token: str | None,
                    now: datetime) -> None:
    """A new password, given the current one; every other login of the member ends."""
    if not member.password_hash or not check_password_hash(member.password_hash, current or ""):
        raise AccountError("current_password", _l("This is not your current password."), "wrong_password")
    check_password_rules(new)
    member.password_hash = hash_password(new)
    sessions.end_all(session, member_id=member.id, now=now, except_token=keep_token)
    audit.record(session, "member.password", at=now, target=f"member:{member.id}")


def _iso(value) -> str | None:
    return value.isoformat() if value is not None else None


def export(session: Session, member: Member, *, now: datetime) -> dict:
    """Everything the portal holds about the member, for them to download (JSON-ready)."""
    purchases = session.scalars(select(Purchase).where(Purchase.member_id == member.id).order_by(Purchase.id))
    returns_ = session.scalars(select(Return).where(Return.member_id == member.id).order_by(Return.id))
    entries = session.scalars(select(LedgerEntry).where(LedgerEntry.member_id == member.id)
                              .order_by(LedgerEntry.id))
    changes = session.scalars(select(TierChange).where(TierChange.member_id == member.id).order_by(TierChange.id))
    complaints = session.scalars(select(Complaint).where(Complaint.member_id == member.id).order_by(Complaint.id))
    logins = session.scalars(select(AuthSession).where(AuthSession.member_id == member.id).order_by(AuthSession.id))
    visits = session.scalars(select(VisitRating).where(VisitRating.member_id == member.id).order_by(VisitRating.id))
    messages = list(session.scalars(select(Message).where(Message.member_id == member.id).order_by(Message.id)))
    channels: dict[int, list[dict]] = {}
    for delivery in session.scalars(select(MessageDelivery).where(
            MessageDelivery.message_id.in_([m.id for m in messages])).order_by(MessageDelivery.id)):
        channels.setdefault(delivery.message_id, []).append(
            {"channel": delivery.channel, "status": delivery.status, "sent_at": _iso(delivery.sent_at)})
    complaint_list = []
    for complaint in complaints:
        events = session.scalars(
            select(ComplaintEvent).where(ComplaintEvent.complaint_id == complaint.id,
                                         ComplaintEvent.visible_to_member.is_(True)).order_by(ComplaintEvent.id))
        complaint_list.append({
            "id": complaint.id, "category": complaint.category, "severity": complaint.severity,
            "description": complaint.description, "status": complaint.status, "store": complaint.store.name,
            "purchase_id": complaint.purchase_id, "created_at": _iso(complaint.created_at),
            "rating": complaint.rating,
            "timeline": [{"kind": e.kind, "text": e.body, "at": _iso(e.created_at)} for e in events],
        })
    return {
        "exported_at": _iso(now),
        "member": {
            "card_number": member.card_number, "name": member.name, "phone": member.phone, "email": member.email,
            "birthday": _iso(member.birthday), "birthday_changed_at": _iso(member.birthday_changed_at),
            "guardian_consent": member.guardian_consent, "privacy_version": member.privacy_version,
            "privacy_consented_at": _iso(member.privacy_consented_at),
            "marketing_consent": member.marketing_consent, "marketing_consent_at": _iso(member.marketing_consent_at),
            "tier": member.tier.code, "tier_since": _iso(member.tier_since),
            "points_balance": member.points_balance, "registered_at": _iso(member.created_at),
            "registered_at_store": member.store.name, "activated_at": _iso(member.activated_at),
            "language": member.locale,
            "referred_by_card": member.referrer.card_number if member.referrer else None,
        },
        "points": [{"id": e.id, "kind": e.kind, "points": e.points, "balance_after": e.balance_after,
                    "reason": e.reason, "note": e.note, "purchase_id": e.purchase_id, "return_id": e.return_id,
                    "store": e.store.name if e.store else None, "expires_at": _iso(e.expires_at),
                    "at": _iso(e.created_at)} for e in entries],
        "purchases": [{"id": p.id, "store": p.store.name, "receipt_no": p.receipt_number, "gross_fen": p.gross_fen,
                       "discount_fen": p.discount_fen, "points_redeemed": p.points_redeemed,
                       "paid_fen": p.paid_fen, "points_earned": p.points_earned,
                       "returned_gross_fen": p.returned_gross_fen, "at": _iso(p.created_at)} for p in purchases],
        "returns": [{"id": r.id, "purchase_id": r.purchase_id, "store": r.store.name,
                     "returned_gross_fen": r.returned_gross_fen, "refund_fen": r.cash_refund_fen,
                     "points_reversed": r.points_reversed, "points_restored": r.points_restored,
                     "at": _iso(r.created_at)} for r in returns_],
        "tier_changes": [{"from": c.from_tier.code if c.from_tier else None, "to": c.to_tier.code,
                          "reason": c.reason, "at": _iso(c.created_at)} for c in changes],
        "complaints": complaint_list,
        "visit_ratings": [{"purchase_id": v.purchase_id, "rating": v.rating, "comment": v.comment,
                           "at": _iso(v.created_at)} for v in visits],
        "messages": [{"id": m.id, "kind": m.kind, "purpose": m.purpose, "subject": m.subject, "text": m.body,
                      "at": _iso(m.created_at), "read_at": _iso(m.read_at),
                      "unsubscribed_at": _iso(m.unsubscribed_at), "channels": channels.get(m.id, [])}
                     for m in messages],
        "logins": [{"started_at": _iso(s.created_at), "ended_at": _iso(s.revoked_at), "ip": s.ip,
                    "device": s.user_agent} for s in logins],
    }


def erase(session: Session, member: Member, *, now: datetime) -> None:
    """Delete the member's account: personal fields erased, every login ended, the books kept.

    The row stays as an anonymous holder of the ledger, purchases and returns (its card number is
    no longer found at the till), so the store's figures still add up.
    """
    for field in ("name", "name_key", "phone", "phone_last4", "email", "birthday", "birthday_changed_at",
                  "password_hash", "locale"):
        setattr(member, field, None)
    member.marketing_consent = False
    member.marketing_consent_at = now
    member.guardian_consent = False
    member.deleted_at = now
    for code in session.scalars(select(ActivationCode).where(ActivationCode.member_id == member.id,
                                                             ActivationCode.used_at.is_(None))):
        code.expires_at = min(code.expires_at, now)
    _erase_messages(session, member.id, now=now)
    sessions.end_all(session, member_id=member.id, now=now)
    session.execute(update(AuthSession).where(AuthSession.member_id == member.id).values(ip=None, user_agent=None))
    audit.record(session, "member.erase", at=now, target=f"member:{member.id}")


def _erase_messages(session: Session, member_id: int, *, now: datetime) -> None:
    """Nothing more reaches an erased member: marketing and service still queued are cancelled. The messages
    stay (a campaign's figures count them) without their words, which name the member, nor the address or phone
    a delivery went to."""
    messaging.withdraw_marketing(session, member_id, now=now, reason="account erased")
    mine = select(Message.id).where(Message.member_id == member_id)
    session.execute(
        update(MessageDelivery).where(MessageDelivery.status == "queued", MessageDelivery.message_id.in_(mine))
        .values(status="cancelled", last_error="account erased").execution_options(synchronize_session=False))
    session.execute(update(MessageDelivery).where(MessageDelivery.message_id.in_(mine))
                    .values(address=None).execution_options(synchronize_session=False))
    session.execute(update(Message).where(Message.member_id == member_id)
                    .values(subject="", body="").execution_options(synchronize_session=False))
