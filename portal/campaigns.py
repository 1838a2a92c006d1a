"""Campaigns and the templates they send: a marketing message to an audience of members, with a random
control group held back to measure what the message did.

Templates. The standard templates (seeded by migration 0007: activation, expiry_reminder, tier_change,
complaint_reply, birthday) keep their code and kind, since the portal sends them by itself; managers may
reword them. Templates managers add are marketing ones, coded `marketing_<id>`, and may be archived. Every text
is checked by messaging.check_text, and a preview renders it with a real member's values without saving.

Campaigns. Creating one freezes its audience: one INSERT ... SELECT writes a CampaignMember row for every member
the filters choose (always only members with marketing consent), then a seeded random sample of exactly
round_half_up(n × percent / 100) of them is marked as the control group. The seed is kept, so the split can be
drawn again and checked. The messages are then queued in steps of STEP_MEMBERS members (`queue_step`), each
one transaction under the campaign's row lock, so a progress bar can follow a large audience and a step sent
twice queues nothing twice (the offset guard, as the member import has it; dedupe keys besides). The outbox
(`flask send-messages`) sends them from the send time on, respecting quiet hours and the monthly cap.

Results (`results`) are computed in SQL: deliveries by channel and status, reads and unsubscriptions, and for
the sent group and the control group, the members who bought within RESULT_DAYS of the send time and what they
spent (cash paid net of refunds, at any store of the chain). The groups are as drawn when the campaign was
created (a member of the sent group whose message was cancelled still counts in it), so the comparison stays
fair. The uplift is the difference of the buyers' shares in percentage points.

The seed of the draw and the number of sent-group members already queued are the campaign's `seed` and
`prepared_count`; its `audience` is the filters, as JSON.
No Flask in here.
"""
from __future__ import annotations

import json
import random
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from flask_babel import lazy_gettext as _l
from sqlalchemy import Integer, and_, case, distinct, extract, false, func, insert, literal, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from . import audit, messaging, segments
from .database import lock_row
from .models import (
    Campaign,
    CampaignMember,
    Member,
    Message,
    MessageDelivery,
    MessageTemplate,
    Purchase,
    Staff,
    Store,
)
from .phones import PhoneError, normalise_phone
from .refusals import Refusal

STANDARD_CODES = ("activation", "expiry_reminder", "tier_change", "complaint_reply", "birthday")
STEP_MEMBERS = 500  # messages queued per step (one transaction)
RESULT_DAYS = 14  # a purchase within this many days of the send time counts as a response
MAX_CONTROL_PERCENT = 50
DEFAULT_CONTROL_PERCENT = 10
MAX_NAME = 100
CONTROL_CHUNK = 500  # ids per UPDATE when marking the control group
# Sample values for the placeholders only some standard templates have, in a preview.
SAMPLE_EXTRA = {"code": "123456", "reply": _l("Thank you for telling us; we have refunded the difference.")}
CONSENT_REASONS = ("no marketing consent", "consent withdrawn", "unsubscribed", "account erased")
CAP_REASON = "monthly cap reached"
CANCEL_REASON = "campaign cancelled"


class CampaignError(Refusal):
    pass


# --- templates ------------------------------------------------------------------------------------------

TEXT_FIELDS = (("subject_zh", messaging.MAX_SUBJECT), ("body_zh", messaging.MAX_BODY),
               ("subject_en", messaging.MAX_SUBJECT), ("body_en", messaging.MAX_BODY))


def is_standard(template: MessageTemplate) -> bool:
    return template.code in STANDARD_CODES


def list_templates(session: Session) -> list[MessageTemplate]:
    """Every template: the standard ones first, then the managers' own, newest first; archived ones last."""
    standard = case(*((MessageTemplate.code == code, index) for index, code in enumerate(STANDARD_CODES)),
                    else_=len(STANDARD_CODES))
    return list(session.scalars(select(MessageTemplate).order_by(
        MessageTemplate.archived_at.is_not(None), standard, MessageTemplate.id.desc())))


def marketing_templates(session: Session) -> list[MessageTemplate]:
    """What a campaign may send: marketing templates not archived."""
    return list(session.scalars(select(MessageTemplate).where(
        MessageTemplate.kind == "marketing", MessageTemplate.archived_at.is_(None)).order_by(MessageTemplate.name)))


def check_template(fields: dict, *, code: str | None) -> tuple[dict, list[Refusal]]:
    """The template's name and texts, cleaned, and every refusal (one per field at most), so that each field
    shows its own problem at once."""
    clean, problems = {}, []
    name = " ".join((fields.get("name") or "").split())
    if not name:
        problems.append(CampaignError("name", _l("Name the template."), "required"))
    elif len(name) > MAX_NAME:
        problems.append(CampaignError("name", _l("Use at most %(count)s characters.", count=MAX_NAME), "too_long"))
    clean["name"] = name
    for field_name, limit in TEXT_FIELDS:
        try:
            clean[field_name] = messaging.check_text(fields.get(field_name) or "", field_name, code=code,
                                                     limit=limit)
        except messaging.TemplateError as refusal:
            problems.append(refusal)
    return clean, problems


def _template_state(template: MessageTemplate) -> dict:
    return {"code": template.code, "kind": template.kind, "name": template.name,
            **{name: getattr(template, name) for name, _limit in TEXT_FIELDS}}


class TemplateRefused(CampaignError):
    """Several fields refused at once: `problems` holds each field's refusal."""

    def __init__(self, problems: list[Refusal]):
        super().__init__(problems[0].field, problems[0].message, problems[0].code)
        self.problems = problems


def create_template(session: Session, fields: dict, *, staff: Staff, now: datetime,
                    ip: str | None = None, creation_key: str | None = None) -> MessageTemplate:
    """A new marketing template, coded `marketing_<id>` (audited "template.create"). The same form
    (creation_key) sent twice creates one template."""
    if creation_key and (earlier := session.scalars(
            select(MessageTemplate).where(MessageTemplate.creation_key == creation_key)).first()) is not None:
        return earlier
    clean, problems = check_template(fields, code=None)
    if problems:
        raise TemplateRefused(problems)
    template = MessageTemplate(code=f"new_{secrets.token_hex(12)}", kind="marketing", created_by_id=staff.id,
                               created_at=now, updated_at=now, creation_key=creation_key or None, **clean)
    session.add(template)
    session.flush()
    template.code = f"marketing_{template.id}"
    audit.record(session, "template.create", at=now, staff_id=staff.id, store_id=staff.store_id,
                 target=f"template:{template.id}", after=_template_state(template), ip=ip)
    session.flush()
    return template


def update_template(session: Session, template: MessageTemplate, fields: dict, *, staff: Staff, now: datetime,
                    ip: str | None = None) -> bool:
    """Reword a template (its code and kind stay); audited "template.update" with the before and after.
    Returns False when nothing changed (and nothing is recorded)."""
    clean, problems = check_template(fields, code=template.code)
    if problems:
        raise TemplateRefused(problems)
    before = _template_state(template)
    for name, value in clean.items():
        setattr(template, name, value)
    after = _template_state(template)
    if after == before:
        return False
    template.updated_at = now
    changed = [name for name in after if after[name] != before[name]]
    audit.record(session, "template.update", at=now, staff_id=staff.id, store_id=staff.store_id,
                 target=f"template:{template.id}", before={name: before[name] for name in changed},
                 after={name: after[name] for name in changed}, ip=ip)
    return True


def archive_template(session: Session, template: MessageTemplate, *, staff: Staff, now: datetime,
                     ip: str | None = None) -> None:
    """Archive a managers' template: no new campaign can use it (those that did keep it)."""
    if is_standard(template):
        raise CampaignError(None, _l("The portal sends the standard templates itself; they cannot be archived."),
                            "standard_template")
    if template.archived_at is not None:
        return
    template.archived_at = now
    audit.record(session, "template.archive", at=now, staff_id=staff.id, store_id=staff.store_id,
                 target=f"template:{template.id}", before={"archived": False}, after={"archived": True}, ip=ip)


def find_member(session: Session, text: str | None, store_ids: list[int] | None) -> Member | None:
    """The member a preview is for: by card number or phone, within the stores (None: every store); with
    nothing typed, the newest member. Erased members are never shown."""
    query = select(Member).where(Member.deleted_at.is_(None))
    if store_ids is not None:
        query = query.where(segments.in_stores(store_ids))
    typed = re.sub(r"[\s-]", "", text or "")
    if typed:
        if typed.isdigit() and len(typed) == 10:
            query = query.where(Member.card_number == typed)
        else:
            try:
                query = query.where(Member.phone == normalise_phone(typed))
            except PhoneError:
                return None
    return session.scalars(query.options(selectinload(Member.tier), selectinload(Member.store))
                           .order_by(Member.id.desc()).limit(1)).first()


@dataclass(frozen=True)
class Preview:
    """A template's texts rendered for one member, in both languages (nothing saved)."""

    member: Member
    subject_zh: str
    body_zh: str
    subject_en: str
    body_en: str


def preview(session: Session, texts: dict, member: Member, *, code: str | None, now: datetime,
            store: Store | None = None) -> Preview:
    """Render the texts (checked first, like saving them) with the member's real values, in Chinese and in
    English. The template object is never added to the session."""
    _clean, problems = check_template({"name": "preview", **texts}, code=code)
    if problems:
        raise TemplateRefused(problems)
    draft = MessageTemplate(**{name: texts.get(name) or "" for name, _limit in TEXT_FIELDS})
    extra = {name: str(SAMPLE_EXTRA[name]) for name in messaging.EXTRA_PLACEHOLDERS.get(code or "", ())}
    rendered = {}
    for locale in ("zh", "en"):
        values = messaging.member_values(session, member, now=now, locale=locale, store=store, extra=extra)
        rendered[locale] = messaging.render(draft, values, locale)
    return Preview(member, rendered["zh"][0], rendered["zh"][1], rendered["en"][0], rendered["en"][1])


# --- the audience ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Audience:
    """Who a campaign is for. Marketing consent is always required; `store_id` None is every store."""

    tier_id: int | None = None
    store_id: int | None = None
    segment: str | None = None
    at_risk: bool = False
    birthday_month: int | None = None

    def described(self) -> dict:
        return {"tier_id": self.tier_id, "store_id": self.store_id, "segment": self.segment,
                "at_risk": self.at_risk, "birthday_month": self.birthday_month, "marketing_consent": True}

    @classmethod
    def from_described(cls, data: dict) -> Audience:
        return cls(tier_id=data.get("tier_id"), store_id=data.get("store_id"), segment=data.get("segment"),
                   at_risk=bool(data.get("at_risk")), birthday_month=data.get("birthday_month"))


def audience_query(audience: Audience, *, now: datetime):
    """SELECT the ids of the audience's members: not erased, with marketing consent, and matching every
    filter. The segments are those of the members list (segments.segment_expression), in SQL."""
    query = select(Member.id.label("member_id"))
    if audience.segment in segments.SEGMENTS or audience.at_risk:
        stats = segments.purchase_stats(now)
        segment = segments.segment_expression(stats, now)
        query = query.outerjoin(stats, stats.c.member_id == Member.id)
        if audience.segment in segments.SEGMENTS:
            query = query.where(segment == audience.segment)
        if audience.at_risk:
            query = query.where(segment == "at_risk")
    query = query.where(Member.deleted_at.is_(None), Member.marketing_consent.is_(True))
    if audience.tier_id is not None:
        query = query.where(Member.tier_id == audience.tier_id)
    if audience.store_id is not None:
        query = query.where(segments.in_stores([audience.store_id]))
    if audience.birthday_month:
        query = query.where(extract("month", Member.birthday) == audience.birthday_month)
    return query


def audience_size(session: Session, audience: Audience, *, now: datetime) -> int:
    return int(session.scalar(select(func.count()).select_from(audience_query(audience, now=now).subquery())))


def sample_member(session: Session, audience: Audience, *, now: datetime) -> Member | None:
    """One member of the audience for the preview: the newest."""
    ids = audience_query(audience, now=now).subquery()
    return session.scalars(select(Member).where(Member.id.in_(select(ids.c.member_id)))
                           .options(selectinload(Member.tier), selectinload(Member.store))
                           .order_by(Member.id.desc()).limit(1)).first()


def control_count(size: int, percent: int) -> int:
    """How many members the control group holds: size × percent / 100, rounded half up."""
    return (size * percent + 50) // 100


def control_ids(member_ids: list[int], percent: int, seed: int) -> list[int]:
    """The control group drawn from the audience (ids in any order): the same seed always draws the same."""
    ordered = sorted(member_ids)
    return sorted(random.Random(seed).sample(ordered, control_count(len(ordered), percent)))


# --- creating a campaign --------------------------------------------------------------------------------

def audience_of(campaign: Campaign) -> Audience:
    return Audience.from_described(json.loads(campaign.audience or "{}"))


def seed_of(campaign: Campaign) -> int:
    return campaign.seed


def prepared_of(campaign: Campaign) -> int:
    """How many members of the sent group the steps have worked through."""
    return campaign.prepared_count


def sent_group_size(campaign: Campaign) -> int:
    return campaign.audience_size - campaign.control_size


def create_campaign(
    session: Session, *, name: str, template: MessageTemplate | None, audience: Audience, send_at: datetime,
    control_percent: int, staff: Staff, now: datetime, creation_key: str | None = None, ip: str | None = None,
) -> Campaign:
    """Create a campaign and freeze its audience and control group (see the module's docstring); the
    messages are queued afterwards by `queue_step`. The same form (creation_key) sent twice creates one."""
    if creation_key and (earlier := _by_key(session, creation_key)) is not None:
        return earlier
    name = " ".join((name or "").split())
    if not name:
        raise CampaignError("name", _l("Name the campaign."), "required")
    if len(name) > MAX_NAME:
        raise CampaignError("name", _l("Use at most %(count)s characters.", count=MAX_NAME), "too_long")
    if template is None or template.kind != "marketing" or template.archived_at is not None:
        raise CampaignError("template_id", _l("Choose a marketing template."), "template")
    if not 0 <= control_percent <= MAX_CONTROL_PERCENT:
        raise CampaignError("control_percent", _l("Hold back from 0 to %(max)s percent.",
                                                  max=MAX_CONTROL_PERCENT), "control_percent")
    if send_at < now - timedelta(minutes=1):
        raise CampaignError("send_at", _l("Choose a time from now on."), "past")
    size = audience_size(session, audience, now=now)
    if size == 0:
        raise CampaignError(None, _l("No member with marketing consent matches these filters."), "empty")

    seed = secrets.randbits(62)
    campaign = Campaign(
        name=name, template_id=template.id, store_id=audience.store_id, control_percent=control_percent,
        send_at=send_at, creation_key=creation_key or None, created_by_id=staff.id, created_at=now,
        audience=json.dumps(audience.described(), sort_keys=True), seed=seed, prepared_count=0,
    )
    try:
        with session.begin_nested():
            session.add(campaign)
            session.flush()
    except IntegrityError:  # the same form at the same moment in another request
        if creation_key and (earlier := _by_key(session, creation_key)) is not None:
            return earlier
        raise

    chosen = audience_query(audience, now=now).subquery()
    session.execute(insert(CampaignMember).from_select(
        ["campaign_id", "member_id", "control"],
        select(literal(campaign.id, Integer), chosen.c.member_id, false()),
    ))
    member_ids = list(session.scalars(select(CampaignMember.member_id)
                                      .where(CampaignMember.campaign_id == campaign.id)))
    control = control_ids(member_ids, control_percent, seed)
    for start in range(0, len(control), CONTROL_CHUNK):
        session.execute(update(CampaignMember)
                        .where(CampaignMember.campaign_id == campaign.id,
                               CampaignMember.member_id.in_(control[start:start + CONTROL_CHUNK]))
                        .values(control=True).execution_options(synchronize_session=False))
    campaign.audience_size, campaign.control_size = len(member_ids), len(control)
    if campaign.audience_size == campaign.control_size:
        campaign.queued_at = now  # nothing to queue: everyone is held back
    audit.record(session, "campaign.create", at=now, staff_id=staff.id, store_id=audience.store_id or staff.store_id,
                 target=f"campaign:{campaign.id}",
                 after={"name": name, "template": template.code, "audience": audience.described(),
                        "send_at": send_at.isoformat(), "control_percent": control_percent,
                        "audience_size": campaign.audience_size, "control_size": campaign.control_size}, ip=ip)
    session.flush()
    return campaign


def _by_key(session: Session, creation_key: str) -> Campaign | None:
    return session.scalars(select(Campaign).where(Campaign.creation_key == creation_key)).first()


def lock(session: Session, campaign_id: int) -> Campaign | None:
    """Load a campaign for working on it (see database.lock_row)."""
    return lock_row(session, Campaign, campaign_id)


def queue_step(session: Session, campaign: Campaign, *, channels: messaging.Channels, now: datetime,
               offset: int | None = None, size: int | None = None) -> int:
    """Queue the messages of the next `size` members of the sent group of a locked campaign (see `lock`);
    the last step marks it queued. Returns how many members this step worked through.

    `offset` is where the caller saw the campaign stand: if another step has moved it on meanwhile (a poll
    fired twice), this one does nothing. Members who withdrew consent since get no message."""
    size = size or STEP_MEMBERS
    prepared = campaign.prepared_count
    if campaign.cancelled_at is not None or campaign.queued_at is not None or (offset is not None and offset != prepared):
        return 0
    batch = list(session.scalars(
        select(CampaignMember.member_id)
        .where(CampaignMember.campaign_id == campaign.id, CampaignMember.control.is_(False))
        .order_by(CampaignMember.member_id).offset(prepared).limit(size)))
    members = {member.id: member for member in session.scalars(
        select(Member).where(Member.id.in_(batch)).options(selectinload(Member.tier), selectinload(Member.store)))}
    template, store = campaign.template, campaign.store
    for member_id in batch:
        messaging.queue(session, member=members[member_id], template=template, purpose="campaign", now=now,
                        channels=channels, dedupe_key=f"campaign:{campaign.id}:{member_id}",
                        not_before=max(campaign.send_at, now), campaign_id=campaign.id, store=store)
    campaign.prepared_count = prepared + len(batch)
    if campaign.prepared_count >= sent_group_size(campaign) or not batch:
        campaign.queued_at = now
    session.flush()
    return len(batch)


def cancel_campaign(session: Session, campaign: Campaign, *, staff: Staff, now: datetime,
                    ip: str | None = None) -> int:
    """Stop a campaign: what is still queued is cancelled and no further step queues anything. Returns how
    many deliveries were cancelled. A campaign with nothing left to send is refused."""
    if campaign.cancelled_at is not None:
        raise CampaignError(None, _l("This campaign is already cancelled."), "cancelled")
    queued = _queued_deliveries(campaign.id)
    waiting = session.scalar(select(func.count()).select_from(MessageDelivery).where(queued))
    if campaign.queued_at is not None and not waiting:
        raise CampaignError(None, _l("Everything is sent already: there is nothing left to cancel."), "done")
    cancelled = session.execute(
        update(MessageDelivery).where(queued).values(status="cancelled", last_error=CANCEL_REASON)
        .execution_options(synchronize_session=False)).rowcount or 0
    campaign.cancelled_at = now
    audit.record(session, "campaign.cancel", at=now, staff_id=staff.id, store_id=campaign.store_id or staff.store_id,
                 target=f"campaign:{campaign.id}", before={"status": "queued"},
                 after={"status": "cancelled", "deliveries_cancelled": cancelled}, ip=ip)
    return cancelled


def _queued_deliveries(campaign_id: int):
    return and_(MessageDelivery.status == "queued",
                MessageDelivery.message_id.in_(select(Message.id).where(Message.campaign_id == campaign_id)))


# --- where it stands, and what it did -------------------------------------------------------------------

@dataclass
class Progress:
    """How far a campaign is: queuing its messages (`prepared` of `to_prepare` members), then sending them
    (`settled` of `deliveries`: sent, failed or cancelled)."""

    status: str  # preparing, scheduled, sending, done, cancelled
    prepared: int
    to_prepare: int
    deliveries: int
    queued: int
    sent: int

    @property
    def settled(self) -> int:
        return self.deliveries - self.queued

    @property
    def working(self) -> bool:
        return self.status in ("preparing", "scheduled", "sending")


def progress(session: Session, campaign: Campaign, *, now: datetime) -> Progress:
    counts = dict(session.execute(
        select(MessageDelivery.status, func.count()).join(Message, Message.id == MessageDelivery.message_id)
        .where(Message.campaign_id == campaign.id).group_by(MessageDelivery.status)).all())
    total, queued, sent = sum(counts.values()), counts.get("queued", 0), counts.get("sent", 0)
    if campaign.cancelled_at is not None:
        status = "cancelled"
    elif campaign.queued_at is None:
        status = "preparing"
    elif queued and now < campaign.send_at:
        status = "scheduled"
    elif queued:
        status = "sending"
    else:
        status = "done"
    return Progress(status, prepared_of(campaign), sent_group_size(campaign), total, queued, sent)


@dataclass(frozen=True)
class ChannelFigures:
    channel: str
    sent: int = 0
    queued: int = 0
    held: int = 0  # of the queued: waiting out the quiet hours
    failed: int = 0
    cancelled_cap: int = 0
    cancelled_consent: int = 0
    cancelled_other: int = 0  # the campaign was cancelled, no sender configured


@dataclass(frozen=True)
class Group:
    """The sent group or the control group: members, buyers within RESULT_DAYS and what they spent."""

    members: int
    buyers: int
    spend_fen: int

    @property
    def buyers_percent(self) -> float | None:
        return 100 * self.buyers / self.members if self.members else None

    @property
    def spend_per_member_fen(self) -> int | None:
        return round(self.spend_fen / self.members) if self.members else None


@dataclass
class Results:
    messages: int
    delivered: int  # members with at least one delivery sent
    read: int
    unsubscribed: int
    channels: list[ChannelFigures] = field(default_factory=list)
    sent_group: Group = Group(0, 0, 0)
    control_group: Group = Group(0, 0, 0)
    window_start: datetime | None = None
    window_end: datetime | None = None
    window_open: bool = False  # the RESULT_DAYS are not over yet: the figures may still grow

    @property
    def failed(self) -> int:
        return sum(channel.failed for channel in self.channels)

    @property
    def held_or_cancelled(self) -> int:
        return sum(c.held + c.cancelled_cap + c.cancelled_consent + c.cancelled_other for c in self.channels)

    @property
    def uplift_points(self) -> float | None:
        """The sent group's buyers' share minus the control group's, in percentage points."""
        sent, control = self.sent_group.buyers_percent, self.control_group.buyers_percent
        if sent is None or control is None:
            return None
        return round(sent - control, 1)


def results(session: Session, campaign: Campaign, *, now: datetime) -> Results:
    """What the campaign did, every figure from one SQL aggregate (see the module's docstring)."""
    of_campaign = Message.campaign_id == campaign.id
    messages, read, unsubscribed = session.execute(
        select(func.count(Message.id), func.count(Message.read_at), func.count(Message.unsubscribed_at))
        .where(of_campaign)).one()
    delivered = session.scalar(
        select(func.count(distinct(Message.id))).join(MessageDelivery, MessageDelivery.message_id == Message.id)
        .where(of_campaign, MessageDelivery.status == "sent"))

    status, reason = MessageDelivery.status, MessageDelivery.last_error
    cancelled = status == "cancelled"

    def counted(condition):
        return func.sum(case((condition, 1), else_=0))

    rows = session.execute(
        select(MessageDelivery.channel, counted(status == "sent"), counted(status == "queued"),
               counted(and_(status == "queued", MessageDelivery.attempts == 0,
                            MessageDelivery.next_attempt_at > Message.not_before)),
               counted(status == "failed"), counted(and_(cancelled, reason == CAP_REASON)),
               counted(and_(cancelled, reason.in_(CONSENT_REASONS))),
               counted(and_(cancelled, or_(reason.is_(None), reason.not_in(CONSENT_REASONS + (CAP_REASON,))))))
        .join(Message, Message.id == MessageDelivery.message_id).where(of_campaign)
        .group_by(MessageDelivery.channel)).all()
    order = {channel: index for index, channel in enumerate(("inbox", "email", "sms"))}
    channels = sorted((ChannelFigures(row[0], *(int(value or 0) for value in row[1:])) for row in rows),
                      key=lambda figures: order.get(figures.channel, 9))

    start, end = campaign.send_at, campaign.send_at + timedelta(days=RESULT_DAYS)
    bought = (select(Purchase.member_id.label("member_id"),
                     func.sum(Purchase.paid_fen - Purchase.refunded_fen).label("spend"))
              .where(Purchase.created_at >= start, Purchase.created_at < end,
                     Purchase.member_id.in_(select(CampaignMember.member_id)
                                            .where(CampaignMember.campaign_id == campaign.id)))
              .group_by(Purchase.member_id).subquery("bought"))
    groups = {bool(control): Group(int(members), int(buyers or 0), int(spend or 0)) for control, members, buyers, spend
              in session.execute(
                  select(CampaignMember.control, func.count(CampaignMember.id), func.count(bought.c.member_id),
                         func.coalesce(func.sum(bought.c.spend), 0))
                  .outerjoin(bought, bought.c.member_id == CampaignMember.member_id)
                  .where(CampaignMember.campaign_id == campaign.id).group_by(CampaignMember.control)).all()}
    return Results(
        messages=int(messages), delivered=int(delivered or 0), read=int(read), unsubscribed=int(unsubscribed),
        channels=channels, sent_group=groups.get(False, Group(0, 0, 0)),
        control_group=groups.get(True, Group(0, 0, 0)), window_start=start, window_end=end,
        window_open=start <= now < end,
    )


def list_campaigns(session: Session, store_ids: list[int] | None, *, limit: int = 100) -> list[Campaign]:
    """The newest campaigns of the stores (None: every campaign, the chain-wide ones included)."""
    query = select(Campaign).options(selectinload(Campaign.template), selectinload(Campaign.store))
    if store_ids is not None:
        query = query.where(Campaign.store_id.in_(store_ids))
    return list(session.scalars(query.order_by(Campaign.id.desc()).limit(limit)))


def delivery_counts(session: Session, campaign_ids: list[int]) -> dict[int, dict[str, int]]:
    """For the list: each campaign's deliveries by status."""
    counts: dict[int, dict[str, int]] = {campaign_id: {} for campaign_id in campaign_ids}
    if campaign_ids:
        for campaign_id, status, number in session.execute(
                select(Message.campaign_id, MessageDelivery.status, func.count())
                .join(Message, Message.id == MessageDelivery.message_id)
                .where(Message.campaign_id.in_(campaign_ids))
                .group_by(Message.campaign_id, MessageDelivery.status)):
            counts[campaign_id][status] = int(number)
    return counts
