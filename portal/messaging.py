"""Messages to members: templates with placeholders, the outbox, consent, quiet hours and the monthly cap.

A message is written once, in the member's language, when it is queued (`queue`): its subject and body are
the template's with the member's values put in. It reaches the member through deliveries, one per channel:
the inbox in the portal always; e-mail when the member has an address and a mail server is configured; SMS
when a gateway is configured. `send_due` works through the queued deliveries (the outbox).

Two kinds of message (PRODUCT.md, Keeping in touch):
- service (activation code, points about to expire, complaint replies, tier changes) reach every member;
- marketing (birthday greetings, offers, win-back) reach only members who gave marketing consent. A member
  who withdraws consent gets nothing more, including what is already queued (`withdraw_marketing`, and the
  outbox checks again before each delivery). Marketing stops at the monthly cap (4 a member a calendar month,
  in store time). Every message waits out the quiet hours (21:00 to 09:00 in the store's time zone) but those
  the member is waiting for: an activation code, a reply to their complaint.

Each queued message may carry a dedupe key (unique in the database): the same key never queues twice, which
makes the daily care job safe to run again. No Flask in here: senders and settings are passed in.
"""
from __future__ import annotations

import hashlib
import hmac
import string
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Callable, Protocol
from zoneinfo import ZoneInfo

from flask_babel import format_date, force_locale
from flask_babel import lazy_gettext as _l
from sqlalchemy import and_, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from . import ledger
from .models import (
    JobLock,
    Member,
    Message,
    MessageDelivery,
    MessageTemplate,
    Store,
)
from .refusals import Refusal
from .rules import Rules

# What any template may name, and what only some purposes provide.
PLACEHOLDERS = ("name", "tier", "balance", "expiring_points", "expiry_date", "store")
EXTRA_PLACEHOLDERS = {"activation": ("code",), "complaint_reply": ("reply",)}
PLACEHOLDER_LABELS = {
    "name": _l("the member's name"),
    "tier": _l("their tier"),
    "balance": _l("their points balance"),
    "expiring_points": _l("points expiring in the next 30 days"),
    "expiry_date": _l("when the first of them expire"),
    "store": _l("the store's name"),
    "code": _l("the activation code"),
    "reply": _l("the reply to the complaint"),
}
MAX_SUBJECT = 200
MAX_BODY = 2000
MAX_ATTEMPTS = 5
# Service messages the member is waiting for go at any hour; every other message waits out the quiet hours.
URGENT_PURPOSES = frozenset({"activation", "complaint_reply"})
RETRY_AFTER = (timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=30), timedelta(hours=2))


class TemplateError(Refusal):
    pass


def allowed_placeholders(code: str | None) -> tuple[str, ...]:
    return PLACEHOLDERS + EXTRA_PLACEHOLDERS.get(code or "", ())


def placeholders_in(text: str, field_name: str) -> list[str]:
    """The names a template text uses, in order; a stray brace is refused."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError:
        raise TemplateError(field_name, _l("A brace is not closed. Write placeholders as {name}; for a brace "
                                           "itself write {{ or }}."), "bad_braces") from None
    names = []
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if spec or conversion or not name.isidentifier():
            raise TemplateError(field_name, _l("Write placeholders as a plain name in braces, such as {name}."),
                                "bad_placeholder")
        names.append(name)
    return names


def check_text(text: str, field_name: str, *, code: str | None, limit: int) -> str:
    """A subject or body of a template: not empty, not too long, and naming only known placeholders."""
    clean = (text or "").strip()
    if not clean:
        raise TemplateError(field_name, _l("Write the text."), "required")
    if len(clean) > limit:
        raise TemplateError(field_name, _l("Use at most %(count)s characters.", count=limit), "too_long")
    allowed = allowed_placeholders(code)
    for name in placeholders_in(clean, field_name):
        if name not in allowed:
            raise TemplateError(
                field_name,
                _l("There is no placeholder {%(name)s}. Use: %(known)s.", name=name,
                   known=", ".join("{" + known + "}" for known in allowed)),
                "unknown_placeholder",
            )
    return clean


# --- a member's values ----------------------------------------------------------------------------------

def member_values(session: Session, member: Member, *, now: datetime, locale: str,
                  store: Store | None = None, extra: dict | None = None) -> dict[str, str]:
    """What each placeholder stands for, for this member now, in their language."""
    store = store or member.store
    zone = ZoneInfo(store.timezone if store else "Asia/Shanghai")
    soon = ledger.outlook(session, member, now, days=30)
    lots, expiring_points = soon.expiring_lots, soon.expiring
    with force_locale(locale):
        # A lot expires at the end of its last day: the day before the instant, in store time, is the last one.
        expiry_date = format_date((lots[0][0] - timedelta(seconds=1)).astimezone(zone).date(), "long") if lots else ""
    values = {
        "name": member.name or "",
        "tier": member.tier.name(locale) if member.tier else "",
        "balance": f"{member.points_balance:,}",
        "expiring_points": f"{expiring_points:,}",
        "expiry_date": expiry_date,
        "store": store.name if store else "",
    }
    values.update({key: str(value) for key, value in (extra or {}).items()})
    return values


class _Blank(dict):
    def __missing__(self, key):  # a placeholder this purpose does not provide stays empty
        return ""


def render(template: MessageTemplate, values: dict[str, str], locale: str) -> tuple[str, str]:
    """The template's subject and body in `locale` (zh or en) with the values put in."""
    chinese = locale.startswith("zh")
    subject = template.subject_zh if chinese else template.subject_en
    body = template.body_zh if chinese else template.body_en
    fill = _Blank(values)
    return subject.format_map(fill)[:MAX_SUBJECT], body.format_map(fill)[:MAX_BODY]


# --- queueing -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Channels:
    """Which channels are configured: the inbox always; e-mail and SMS when the store set them up."""

    email: bool = False
    sms: bool = False


def member_locale(member: Member) -> str:
    return member.locale if member.locale in ("zh", "en") else "zh"


def may_receive(member: Member, kind: str) -> bool:
    """Service messages reach every member; marketing only those who agreed. Erased members get nothing."""
    if member.deleted_at is not None:
        return False
    return kind == "service" or bool(member.marketing_consent)


def queue(
    session: Session, *, member: Member, template: MessageTemplate, purpose: str, now: datetime,
    channels: Channels, extra: dict | None = None, dedupe_key: str | None = None, not_before: datetime | None = None,
    campaign_id: int | None = None, store: Store | None = None, inbox: bool = True,
) -> Message | None:
    """Write one message for the member and queue its deliveries, in the caller's transaction.

    Returns None when the member may not receive it (no consent for marketing, an erased account) or when a
    message with the same dedupe key was queued before. `inbox=False` leaves the inbox out (an activation code
    is no use there: the member cannot sign in without it)."""
    if not may_receive(member, template.kind):
        return None
    if dedupe_key and session.scalar(select(Message.id).where(Message.dedupe_key == dedupe_key)) is not None:
        return None
    locale = member_locale(member)
    store = store or member.store
    subject, body = render(template, member_values(session, member, now=now, locale=locale, store=store,
                                                   extra=extra), locale)
    message = Message(
        member_id=member.id, kind=template.kind, purpose=purpose, campaign_id=campaign_id, template_id=template.id,
        store_id=store.id if store else None, locale=locale, subject=subject, body=body, dedupe_key=dedupe_key,
        not_before=not_before or now, created_at=now,
    )
    deliveries = []
    if inbox:
        deliveries.append(("inbox", None))
    if channels.email and member.email:
        deliveries.append(("email", member.email))
    if channels.sms and member.phone:
        deliveries.append(("sms", member.phone))
    if not deliveries:
        return None
    try:
        with session.begin_nested():
            session.add(message)
            session.flush()
    except IntegrityError:  # the same dedupe key queued at the same moment by another run
        return None
    for channel, address in deliveries:
        session.add(MessageDelivery(message_id=message.id, channel=channel, address=address, status="queued",
                                    next_attempt_at=message.not_before, created_at=now))
    session.flush()
    return message


def withdraw_marketing(session: Session, member_id: int, *, now: datetime, reason: str = "consent withdrawn") -> int:
    """Cancel every marketing delivery still queued for the member; returns how many."""
    queued = select(Message.id).where(Message.member_id == member_id, Message.kind == "marketing")
    result = session.execute(
        update(MessageDelivery)
        .where(MessageDelivery.status == "queued", MessageDelivery.message_id.in_(queued))
        .values(status="cancelled", last_error=reason)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount or 0


# --- unsubscribe links ----------------------------------------------------------------------------------

def unsubscribe_token(message_id: int, secret_key: str) -> str:
    """The one-tap unsubscribe link's token: the message id and an HMAC of it, so it cannot be guessed."""
    signature = hmac.new(secret_key.encode(), f"unsubscribe:{message_id}".encode(), hashlib.sha256).hexdigest()
    return f"{message_id}.{signature[:32]}"


def message_for_token(session: Session, token: str, secret_key: str) -> Message | None:
    """The message whose unsubscribe link this is, or None for a forged or damaged token."""
    head, _dot, _signature = (token or "").partition(".")
    if not (head.isascii() and head.isdigit()) or len(head) > 10:
        return None
    if not hmac.compare_digest(unsubscribe_token(int(head), secret_key), token):
        return None
    return session.get(Message, int(head))


def unsubscribe(session: Session, message: Message, *, now: datetime) -> bool:
    """Withdraw the member's marketing consent from a message's link. False if it was already withdrawn."""
    member = session.get(Member, message.member_id)
    if member is None or member.deleted_at is not None:
        return False
    if message.unsubscribed_at is None:
        message.unsubscribed_at = now
    if not member.marketing_consent:
        return False
    member.marketing_consent = False
    member.marketing_consent_at = now
    withdraw_marketing(session, member.id, now=now, reason="unsubscribed")
    return True


# --- quiet hours and the monthly cap --------------------------------------------------------------------

def quiet_until(moment: datetime, zone: str, rules: Rules) -> datetime | None:
    """When the quiet hours that `moment` falls in end (UTC), or None outside them.

    With the defaults (21 to 9) the quiet hours wrap midnight: 21:00 is quiet, 08:59 is quiet, 09:00 is not."""
    start, end = rules.quiet_hours_start, rules.quiet_hours_end
    if start == end:
        return None
    local_zone = ZoneInfo(zone)
    local = moment.astimezone(local_zone)
    hour = local.hour
    if start > end:  # across midnight
        if hour >= start:
            day = local.date() + timedelta(days=1)
        elif hour < end:
            day = local.date()
        else:
            return None
    elif start <= hour < end:
        day = local.date()
    else:
        return None
    return datetime.combine(day, time(end), tzinfo=local_zone).astimezone(timezone.utc)


def month_start(moment: datetime, zone: str) -> datetime:
    local = moment.astimezone(ZoneInfo(zone))
    return datetime.combine(date(local.year, local.month, 1), time.min, tzinfo=ZoneInfo(zone)).astimezone(timezone.utc)


def marketing_sent_this_month(session: Session, member_id: int, *, now: datetime, zone: str,
                              except_message: int | None = None) -> int:
    """Marketing messages the member got this calendar month (store time): those with a delivery sent."""
    sent = select(MessageDelivery.message_id).where(MessageDelivery.status == "sent",
                                                    MessageDelivery.sent_at >= month_start(now, zone))
    query = select(func.count()).select_from(Message).where(
        Message.member_id == member_id, Message.kind == "marketing", Message.id.in_(sent))
    if except_message is not None:
        query = query.where(Message.id != except_message)
    return int(session.scalar(query) or 0)


# --- the outbox -----------------------------------------------------------------------------------------

class Sender(Protocol):
    def __call__(self, delivery: MessageDelivery, message: Message) -> None: ...


def deliver_to_inbox(delivery: MessageDelivery, message: Message) -> None:
    """The inbox is the database itself: a sent inbox delivery is what the member's inbox shows."""


@dataclass
class OutboxRun:
    sent: int = 0
    failed: int = 0
    retried: int = 0
    cancelled: int = 0
    held: int = 0
    errors: list[str] = field(default_factory=list)


def _due(session: Session, now: datetime, limit: int) -> list[MessageDelivery]:
    query = (select(MessageDelivery)
             .where(MessageDelivery.status == "queued", MessageDelivery.next_attempt_at <= now)
             .order_by(MessageDelivery.next_attempt_at, MessageDelivery.id).limit(limit))
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return list(session.scalars(query))


def send_one(session: Session, delivery: MessageDelivery, *, now: datetime, rules: Rules,
             senders: dict[str, Sender], default_zone: str, run: OutboxRun) -> None:
    """Try one queued delivery: check consent, the quiet hours (all but urgent service messages) and the monthly
    cap (marketing), then send or schedule a retry."""
    message = delivery.message
    member = session.get(Member, message.member_id)
    store = session.get(Store, message.store_id) if message.store_id else None
    zone = store.timezone if store else default_zone
    if member is None or not may_receive(member, message.kind):
        delivery.status, delivery.last_error = "cancelled", ("no marketing consent" if member and member.deleted_at
                                                             is None else "account erased")
        run.cancelled += 1
        return
    if message.purpose == "activation" and now - message.created_at > timedelta(minutes=rules.activation_minutes):
        delivery.status, delivery.last_error = "cancelled", "the activation code has expired"
        run.cancelled += 1
        return
    if message.purpose not in URGENT_PURPOSES:
        wait = quiet_until(now, zone, rules)
        if wait is not None:
            delivery.next_attempt_at = wait
            run.held += 1
            return
    if message.kind == "marketing":
        already = marketing_sent_this_month(session, member.id, now=now, zone=zone, except_message=message.id)
        if already >= rules.marketing_monthly_cap:
            delivery.status, delivery.last_error = "cancelled", "monthly cap reached"
            run.cancelled += 1
            return
    sender = senders.get(delivery.channel)
    if sender is None:
        delivery.status, delivery.last_error = "cancelled", f"no {delivery.channel} sender configured"
        run.cancelled += 1
        return
    delivery.attempts += 1
    try:
        sender(delivery, message)
    except Exception as error:  # noqa: BLE001 - a sender's failure is recorded and retried, never fatal
        delivery.last_error = f"{type(error).__name__}: {error}"[:2000]
        run.errors.append(delivery.last_error)
        if delivery.attempts >= MAX_ATTEMPTS:
            delivery.status = "failed"
            run.failed += 1
        else:
            delivery.next_attempt_at = now + RETRY_AFTER[min(delivery.attempts, len(RETRY_AFTER)) - 1]
            run.retried += 1
        return
    delivery.status, delivery.sent_at, delivery.last_error = "sent", now, None
    run.sent += 1


def send_due(session: Session, *, now: datetime, rules: Rules, senders: dict[str, Sender], default_zone: str,
             batch: int = 100, clock: Callable[[], datetime] | None = None) -> OutboxRun:
    """Work through the due deliveries, committing after each, so a crash resumes where it stopped and a
    message already handed to a mail server or SMS gateway is not sent again."""
    run = OutboxRun()
    while True:
        moment = clock() if clock else now
        due = _due(session, moment, batch)
        if not due:
            session.commit()
            return run
        for delivery in due:
            send_one(session, delivery, now=moment, rules=rules, senders=senders, default_zone=default_zone,
                     run=run)
            session.commit()
        if len(due) < batch:
            return run


# --- one runner at a time -------------------------------------------------------------------------------

def acquire_lock(session: Session, name: str, *, holder: str, now: datetime, lease: timedelta) -> bool:
    """Take the named job lock for `lease` (committed at once), unless another holder has it and its lease
    runs. Works the same on SQLite and PostgreSQL: one conditional UPDATE, which only one server can win."""
    if session.get(JobLock, name) is None:
        try:
            with session.begin_nested():
                session.add(JobLock(name=name))
                session.flush()
        except IntegrityError:
            pass
    taken = session.execute(
        update(JobLock)
        .where(JobLock.name == name, and_(JobLock.locked_until.is_(None) | (JobLock.locked_until < now)))
        .values(holder=holder, locked_until=now + lease)
        .execution_options(synchronize_session=False)
    ).rowcount
    session.commit()
    return bool(taken)


def renew_lock(session: Session, name: str, *, holder: str, now: datetime, lease: timedelta) -> bool:
    """Extend the lease of a lock still held (committed at once); False if another runner has taken it over."""
    renewed = session.execute(
        update(JobLock).where(JobLock.name == name, JobLock.holder == holder, JobLock.locked_until.is_not(None))
        .values(locked_until=now + lease).execution_options(synchronize_session=False)
    ).rowcount
    session.commit()
    return bool(renewed)


def release_lock(session: Session, name: str, *, holder: str, now: datetime, finished: bool = True) -> None:
    """Give the lock back. `finished=False` (a run that failed) leaves finished_at at the last run that
    finished, which the next run may use to know how far back to look."""
    values = {"locked_until": None, **({"finished_at": now} if finished else {})}
    session.execute(
        update(JobLock).where(JobLock.name == name, JobLock.holder == holder)
        .values(**values).execution_options(synchronize_session=False)
    )
    session.commit()
