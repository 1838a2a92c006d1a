"""The member's inbox in the portal: the messages whose inbox delivery was sent, newest first, and what is unread.

A message is in the inbox once the outbox has sent its inbox delivery (`messaging.deliver_to_inbox`); a queued
one is not there yet (it may wait out the quiet hours, or a campaign's time) and a cancelled one never will be.
Newest first means by the time it arrived (the delivery's `sent_at`), then by id, so a campaign queued early and
sent late sits where the member saw it appear. No Flask in here.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.orm import Session

from .models import Message, MessageDelivery

PAGE_SIZE = 20


@dataclass(frozen=True)
class InboxItem:
    message: Message
    arrived_at: datetime

    @property
    def unread(self) -> bool:
        return self.message.read_at is None


def _delivered():
    """The sent inbox delivery of a message (a message has at most one)."""
    return and_(MessageDelivery.message_id == Message.id, MessageDelivery.channel == "inbox",
                MessageDelivery.status == "sent")


def unread_count(session: Session, member_id: int) -> int:
    """How many messages in the member's inbox are unread: one query."""
    return int(session.scalar(
        select(func.count()).select_from(Message)
        .where(Message.member_id == member_id, Message.read_at.is_(None), exists().where(_delivered()))
    ) or 0)


def find(session: Session, member_id: int, message_id: int) -> InboxItem | None:
    """One message of the member's inbox; None for another member's, or one not (yet) delivered to the inbox."""
    row = session.execute(
        select(Message, MessageDelivery.sent_at).join(MessageDelivery, _delivered())
        .where(Message.id == message_id, Message.member_id == member_id)
    ).first()
    return InboxItem(row[0], row[1]) if row else None


def page(session: Session, member_id: int, *, before: int | None = None,
         size: int = PAGE_SIZE) -> tuple[list[InboxItem], int | None]:
    """A page of the member's inbox, newest first, and the message id to ask for the next page with (or None).

    `before` is the last message of the previous page; one that is not in this member's inbox gives nothing,
    so a tampered address shows nobody else's messages and never repeats the first page."""
    query = (select(Message, MessageDelivery.sent_at).join(MessageDelivery, _delivered())
             .where(Message.member_id == member_id))
    if before is not None:
        anchor = find(session, member_id, before)
        if anchor is None:
            return [], None
        query = query.where(or_(MessageDelivery.sent_at < anchor.arrived_at,
                                and_(MessageDelivery.sent_at == anchor.arrived_at, Message.id < before)))
    rows = session.execute(
        query.order_by(MessageDelivery.sent_at.desc(), Message.id.desc()).limit(size + 1)
    ).all()
    items = [InboxItem(message, arrived_at) for message, arrived_at in rows[:size]]
    return items, (items[-1].message.id if len(rows) > size else None)


def mark_read(session: Session, member_id: int, message_id: int, *, now: datetime) -> bool:
    """Mark one of the member's delivered messages read. Idempotent: the first reading's time is kept, and a
    second call changes nothing. Returns True only when this call marked it."""
    delivered = select(MessageDelivery.message_id).where(
        MessageDelivery.message_id == message_id, MessageDelivery.channel == "inbox",
        MessageDelivery.status == "sent")
    marked = session.execute(
        update(Message)
        .where(Message.id == message_id, Message.member_id == member_id, Message.read_at.is_(None),
               Message.id.in_(delivered))
        .values(read_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    return bool(marked)
