"""The messaging core: placeholders, consent, quiet hours, the monthly cap, retries and unsubscribe tokens.
Runs on SQLite and PostgreSQL."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from portal import messaging
from portal.extensions import db
from portal.models import MessageDelivery, MessageTemplate
from portal.rules import load_rules

from . import factories

UTC = timezone.utc
# 10:00 in Shanghai on 15 June 2026: outside the quiet hours.
DAYTIME = datetime(2026, 6, 15, 2, 0, tzinfo=UTC)
INBOX_ONLY = messaging.Channels()


def template(code: str) -> MessageTemplate:
    return db.session.scalars(select(MessageTemplate).where(MessageTemplate.code == code)).one()


def marketing_template() -> MessageTemplate:
    return template("birthday")


def deliveries(message_id: int) -> list[MessageDelivery]:
    return list(db.session.scalars(select(MessageDelivery).where(MessageDelivery.message_id == message_id)))


def send(now: datetime, senders=None):
    return messaging.send_due(db.session, now=now, rules=load_rules(db.session),
                              senders=senders or {"inbox": messaging.deliver_to_inbox}, default_zone="Asia/Shanghai")


@pytest.mark.parametrize(("text", "code", "problem"), [
    ("Hello {name}, you have {balance} points", "birthday", None),
    ("Your code is {code}", "activation", None),
    ("Your code is {code}", "birthday", "unknown_placeholder"),
    ("Hello {nmae}", None, "unknown_placeholder"),
    ("Hello {name", None, "bad_braces"),
    ("Hello {name!r}", None, "bad_placeholder"),
    ("Hello {0}", None, "bad_placeholder"),
    ("   ", None, "required"),
    ("{{literal braces}} are fine", None, None),
])
def test_template_text_is_checked(ctx, text, code, problem):
    if problem is None:
        assert messaging.check_text(text, "body_en", code=code, limit=2000) == text.strip()
    else:
        with pytest.raises(messaging.TemplateError) as refused:
            messaging.check_text(text, "body_en", code=code, limit=2000)
        assert refused.value.code == problem and refused.value.field == "body_en"


def test_an_unknown_placeholder_is_named_in_the_message(ctx):
    with pytest.raises(messaging.TemplateError) as refused:
        messaging.check_text("Hi {nmae}", "body_en", code=None, limit=2000)
    assert "{nmae}" in str(refused.value.message) and "{name}" in str(refused.value.message)


def test_a_message_is_written_in_the_members_language_with_their_values(ctx):
    member = factories.member(name="Li Lei", now=DAYTIME)
    member.locale = "en"
    factories.purchase(member, 123_400, now=DAYTIME)
    message = messaging.queue(db.session, member=member, template=marketing_template(), purpose="birthday",
                              now=DAYTIME, channels=INBOX_ONLY)
    member.marketing_consent = True
    message = messaging.queue(db.session, member=member, template=marketing_template(), purpose="birthday",
                              now=DAYTIME, channels=INBOX_ONLY)
    assert message.subject == "Happy birthday!"
    assert message.body == "Happy birthday, Li Lei! Test Store has a birthday treat for you. Your balance is 1,234 points."
    assert [d.channel for d in deliveries(message.id)] == ["inbox"]


def test_marketing_needs_consent_and_service_does_not(ctx):
    member = factories.member(now=DAYTIME)
    assert member.marketing_consent is False
    assert messaging.queue(db.session, member=member, template=marketing_template(), purpose="birthday",
                           now=DAYTIME, channels=INBOX_ONLY) is None
    service = messaging.queue(db.session, member=member, template=template("tier_change"), purpose="tier_change",
                              now=DAYTIME, channels=INBOX_ONLY)
    assert service is not None and service.body.startswith(member.name)


def test_the_same_dedupe_key_queues_once(ctx):
    member = factories.member(now=DAYTIME)
    first = messaging.queue(db.session, member=member, template=template("tier_change"), purpose="tier_change",
                            now=DAYTIME, channels=INBOX_ONLY, dedupe_key="tier:1")
    again = messaging.queue(db.session, member=member, template=template("tier_change"), purpose="tier_change",
                            now=DAYTIME, channels=INBOX_ONLY, dedupe_key="tier:1")
    assert first is not None and again is None


@pytest.mark.parametrize(("local", "quiet_until_local"), [
    ("2026-06-15 20:59", None),
    ("2026-06-15 21:00", "2026-06-16 09:00"),
    ("2026-06-16 00:30", "2026-06-16 09:00"),
    ("2026-06-16 08:59", "2026-06-16 09:00"),
    ("2026-06-16 09:00", None),
])
def test_quiet_hours_run_from_21_to_9_store_time(ctx, local, quiet_until_local):
    from zoneinfo import ZoneInfo

    zone = ZoneInfo("Asia/Shanghai")
    moment = datetime.strptime(local, "%Y-%m-%d %H:%M").replace(tzinfo=zone)
    until = messaging.quiet_until(moment, "Asia/Shanghai", load_rules(db.session))
    expected = (datetime.strptime(quiet_until_local, "%Y-%m-%d %H:%M").replace(tzinfo=zone)
                if quiet_until_local else None)
    assert until == expected


def test_the_outbox_holds_marketing_in_quiet_hours_and_stops_at_the_monthly_cap(ctx):
    member = factories.member(now=DAYTIME)
    member.marketing_consent = True
    night = datetime(2026, 6, 15, 14, 0, tzinfo=UTC)  # 22:00 in Shanghai
    messages = [messaging.queue(db.session, member=member, template=marketing_template(), purpose="offer",
                                now=night, channels=INBOX_ONLY) for _ in range(5)]
    db.session.commit()
    run = send(night)
    assert (run.sent, run.held) == (0, 5)
    assert {d.next_attempt_at for m in messages for d in deliveries(m.id)} == {datetime(2026, 6, 16, 1, 0, tzinfo=UTC)}
    run = send(datetime(2026, 6, 16, 1, 0, tzinfo=UTC))  # 09:00: four go, the fifth meets the cap
    assert (run.sent, run.cancelled) == (4, 1)
    capped = [d for m in messages for d in deliveries(m.id) if d.status == "cancelled"]
    assert [d.last_error for d in capped] == ["monthly cap reached"]


def test_withdrawing_consent_cancels_what_is_queued(ctx):
    member = factories.member(now=DAYTIME)
    member.marketing_consent = True
    message = messaging.queue(db.session, member=member, template=marketing_template(), purpose="offer",
                              now=DAYTIME, channels=INBOX_ONLY, not_before=DAYTIME + timedelta(days=1))
    assert messaging.withdraw_marketing(db.session, member.id, now=DAYTIME) == 1
    assert [d.status for d in deliveries(message.id)] == ["cancelled"]


def test_a_failing_sender_is_retried_then_given_up(ctx):
    member = factories.member(now=DAYTIME)
    member.email = "li@example.com"
    message = messaging.queue(db.session, member=member, template=template("tier_change"), purpose="tier_change",
                              now=DAYTIME, channels=messaging.Channels(email=True))
    db.session.commit()

    def broken(delivery, message):
        raise ConnectionRefusedError("mail server down")

    senders = {"inbox": messaging.deliver_to_inbox, "email": broken}
    moment = DAYTIME
    for attempt in range(1, messaging.MAX_ATTEMPTS + 1):
        send(moment, senders)
        email = next(d for d in deliveries(message.id) if d.channel == "email")
        assert email.attempts == attempt and "mail server down" in email.last_error
        moment = email.next_attempt_at
    assert email.status == "failed"
    assert next(d for d in deliveries(message.id) if d.channel == "inbox").status == "sent"


def test_unsubscribe_tokens_are_signed_and_work_once(ctx):
    member = factories.member(now=DAYTIME)
    member.marketing_consent = True
    message = messaging.queue(db.session, member=member, template=marketing_template(), purpose="offer",
                              now=DAYTIME, channels=INBOX_ONLY)
    token = messaging.unsubscribe_token(message.id, "secret")
    assert messaging.message_for_token(db.session, token, "secret") is message
    assert messaging.message_for_token(db.session, token, "other secret") is None
    assert messaging.message_for_token(db.session, token[:-1] + ("0" if token[-1] != "0" else "1"), "secret") is None
    assert messaging.message_for_token(db.session, "nonsense", "secret") is None
    assert messaging.unsubscribe(db.session, message, now=DAYTIME) is True
    assert member.marketing_consent is False and message.unsubscribed_at == DAYTIME
    assert messaging.unsubscribe(db.session, message, now=DAYTIME) is False  # the link used again: no harm


def test_only_one_runner_holds_the_job_lock(ctx):
    lease = timedelta(minutes=30)
    assert messaging.acquire_lock(db.session, "send-care", holder="a", now=DAYTIME, lease=lease)
    assert not messaging.acquire_lock(db.session, "send-care", holder="b", now=DAYTIME, lease=lease)
    messaging.release_lock(db.session, "send-care", holder="a", now=DAYTIME)
    assert messaging.acquire_lock(db.session, "send-care", holder="b", now=DAYTIME, lease=lease)
    # A holder that died: its lease runs out and the next run takes over.
    assert messaging.acquire_lock(db.session, "send-care", holder="c", now=DAYTIME + lease + timedelta(seconds=1),
                                  lease=lease)


def test_an_activation_code_goes_at_night_but_a_tier_note_waits_for_the_morning(ctx):
    member = factories.member(now=DAYTIME)
    night = datetime(2026, 6, 15, 14, 0, tzinfo=UTC)  # 22:00 in Shanghai
    urgent = messaging.queue(db.session, member=member, template=template("activation"), purpose="activation",
                             now=night, channels=INBOX_ONLY, extra={"code": "123456"})
    note = messaging.queue(db.session, member=member, template=template("tier_change"), purpose="tier_change",
                           now=night, channels=INBOX_ONLY)
    db.session.commit()
    run = send(night)
    assert (run.sent, run.held) == (1, 1)
    assert [d.status for d in deliveries(urgent.id)] == ["sent"]
    assert [d.status for d in deliveries(note.id)] == ["queued"]


def test_an_activation_code_not_sent_in_time_is_not_sent_at_all(ctx):
    member = factories.member(now=DAYTIME)
    message = messaging.queue(db.session, member=member, template=template("activation"), purpose="activation",
                              now=DAYTIME, channels=INBOX_ONLY, extra={"code": "123456"})
    db.session.commit()
    run = send(DAYTIME + timedelta(minutes=load_rules(db.session).activation_minutes, seconds=1))
    assert (run.sent, run.cancelled) == (0, 1)
    assert [(d.status, d.last_error) for d in deliveries(message.id)] == [("cancelled", "the activation code has expired")]
