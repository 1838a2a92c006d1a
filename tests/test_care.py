"""The daily care job (`flask send-care`) and the outbox command (`flask send-messages`): birthday greetings,
expiring-points reminders, tier-change notes, the job lock, quiet hours, the monthly cap and consent.
Runs on SQLite and PostgreSQL, with the clock frozen through --now."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from portal import care, messaging
from portal.accounts import ProfileChange, update_profile
from portal.extensions import db
from portal.models import (
    JobLock,
    Member,
    Message,
    MessageDelivery,
    MessageTemplate,
    PointLot,
    Tier,
    TierChange,
)
from portal.rules import load_rules

from . import factories

UTC = timezone.utc
SHANGHAI = ZoneInfo("Asia/Shanghai")
# 00:00 on 16 June 2026 in Shanghai, when cron would run the daily jobs.
MIDNIGHT = datetime(2026, 6, 16, 0, 0, tzinfo=SHANGHAI).astimezone(UTC)
NOON = datetime(2026, 6, 15, 12, 0, tzinfo=SHANGHAI).astimezone(UTC)


def local(text: str, zone: ZoneInfo = SHANGHAI) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=zone).astimezone(UTC)


def invoke(runner, *args: str, now: datetime | None = None):
    command = list(args) + (["--now", now.isoformat()] if now else [])
    result = runner.invoke(args=command)
    assert result.exit_code == 0, result.output
    return result


def care_counts(output: str) -> dict[str, int]:
    """The numbers send-care printed, by kind."""
    counts = {}
    for line in output.splitlines():
        number = int(line.split()[0])
        if "birthday" in line:
            counts["birthday"] = number
        elif "within 30 days" in line:
            counts["30"] = number
        elif "within 7 days" in line:
            counts["7"] = number
        elif "tier-change" in line:
            counts["tier"] = number
    return counts


def messages(purpose: str) -> list[Message]:
    return list(db.session.scalars(select(Message).where(Message.purpose == purpose).order_by(Message.id)))


def statuses(message_id: int) -> list[str]:
    return list(db.session.scalars(select(MessageDelivery.status).where(MessageDelivery.message_id == message_id)))


def member(name: str, *, birthday: date | None = None, consent: bool = False, locale: str = "en",
           store_code: str = "S001", now: datetime = NOON) -> Member:
    person = factories.member(name=name, now=now - timedelta(days=400), store_code=store_code)
    person.birthday, person.marketing_consent, person.locale = birthday, consent, locale
    db.session.flush()
    return person


# --- birthday greetings ---------------------------------------------------------------------------------

def test_birthday_greetings_go_once_a_year_to_consenting_members_in_their_birthday_month(app, runner):
    with app.app_context():
        june = member("June Fan", birthday=date(1990, 6, 28), consent=True).id
        member("No Consent", birthday=date(1991, 6, 3))
        member("July Fan", birthday=date(1992, 7, 1), consent=True)
        member("No Birthday", consent=True)
        erased = member("Erased", birthday=date(1990, 6, 5), consent=True)
        erased.deleted_at = NOON - timedelta(days=1)
        db.session.commit()

    first = invoke(runner, "send-care", now=NOON)
    assert care_counts(first.output)["birthday"] == 1
    assert care_counts(invoke(runner, "send-care", now=NOON).output)["birthday"] == 0  # the same day again
    assert care_counts(invoke(runner, "send-care", now=NOON + timedelta(days=1)).output)["birthday"] == 0
    with app.app_context():
        sent = messages("birthday")
        assert [(m.member_id, m.kind, m.dedupe_key) for m in sent] == [(june, "marketing", f"birthday:2026:{june}")]
        assert sent[0].subject == "Happy birthday!" and sent[0].body.startswith("Happy birthday, June Fan!")
        assert statuses(sent[0].id) == ["queued"]
    # A year later: greeted again, once.
    assert care_counts(invoke(runner, "send-care", now=NOON + timedelta(days=365)).output)["birthday"] == 1
    with app.app_context():
        assert [m.dedupe_key for m in messages("birthday")] == [f"birthday:2026:{june}", f"birthday:2027:{june}"]


def test_the_birthday_month_is_that_of_the_members_store_time_zone(app, runner):
    with app.app_context():
        factories.store("S002", "New York").timezone = "America/New_York"
        shanghai_july = member("Shanghai July", birthday=date(1990, 7, 2), consent=True).id
        new_york_july = member("NY July", birthday=date(1990, 7, 2), consent=True, store_code="S002").id
        new_york_june = member("NY June", birthday=date(1990, 6, 2), consent=True, store_code="S002").id
        db.session.commit()
    # 1 July 09:00 in Shanghai is still 30 June 21:00 in New York.
    invoke(runner, "send-care", now=local("2026-07-01 09:00"))
    with app.app_context():
        assert sorted(m.member_id for m in messages("birthday")) == sorted([shanghai_july, new_york_june])
    invoke(runner, "send-care", now=local("2026-07-01 09:00", ZoneInfo("America/New_York")))
    with app.app_context():
        assert sorted(m.member_id for m in messages("birthday")) == sorted(
            [shanghai_july, new_york_june, new_york_july])


# --- expiring points ------------------------------------------------------------------------------------

def lot_expiring(person: Member, points: int, expires_at: datetime) -> None:
    """A lot of `points` that expires at `expires_at` (earned by a purchase, its expiry moved)."""
    factories.purchase(person, points * 100, now=NOON - timedelta(days=300))
    lot = db.session.scalars(select(PointLot).where(PointLot.member_id == person.id)
                             .order_by(PointLot.id.desc()).limit(1)).one()
    lot.expires_at = expires_at
    db.session.flush()


def test_points_expiring_within_30_and_7_days_are_reminded_once_per_date_and_threshold(app, runner):
    with app.app_context():
        reader = member("Li Lei")
        lot_expiring(reader, 120, MIDNIGHT + timedelta(days=30))  # exactly 30 days: last day 15 July
        lot_expiring(reader, 30, MIDNIGHT + timedelta(days=30))  # the same day: one reminder for 150
        lot_expiring(reader, 80, MIDNIGHT + timedelta(days=31))  # 31 days: nothing yet
        lot_expiring(reader, 40, MIDNIGHT + timedelta(days=8))  # last day 23 June: the 30-day reminder
        lot_expiring(reader, 20, MIDNIGHT + timedelta(days=7))  # last day 22 June: the 7-day reminder only
        chinese = member("韩梅梅", locale="zh")
        lot_expiring(chinese, 60, MIDNIGHT + timedelta(days=3))
        far = member("Far Away")
        lot_expiring(far, 500, MIDNIGHT + timedelta(days=45))
        gone = member("Erased")
        lot_expiring(gone, 70, MIDNIGHT + timedelta(days=5))
        gone.deleted_at = NOON
        spent = member("All Spent")
        lot_expiring(spent, 90, MIDNIGHT + timedelta(days=5))
        db.session.execute(PointLot.__table__.update().where(PointLot.member_id == spent.id).values(remaining=0))
        reader_id, chinese_id = reader.id, chinese.id
        db.session.commit()

    first = invoke(runner, "send-care", now=MIDNIGHT)
    assert (care_counts(first.output)["30"], care_counts(first.output)["7"]) == (2, 2)
    with app.app_context():
        reminders = {m.dedupe_key: m for m in messages("expiry_reminder")}
        assert sorted(reminders) == sorted([
            f"expiry:30:2026-07-15:{reader_id}", f"expiry:30:2026-06-23:{reader_id}",
            f"expiry:7:2026-06-22:{reader_id}", f"expiry:7:2026-06-18:{chinese_id}",
        ])
        july = reminders[f"expiry:30:2026-07-15:{reader_id}"]
        assert july.kind == "service" and july.subject == "Some of your points are about to expire"
        assert july.body.startswith("Hello Li Lei, 150 of your points expire on July 15, 2026.")
        assert "40 of your points expire on June 23, 2026." in reminders[f"expiry:30:2026-06-23:{reader_id}"].body
        assert "20 of your points expire on June 22, 2026." in reminders[f"expiry:7:2026-06-22:{reader_id}"].body
        assert "60 积分将于 2026年6月18日 过期" in reminders[f"expiry:7:2026-06-18:{chinese_id}"].body
        assert all(statuses(m.id) == ["queued"] for m in reminders.values())

    again = invoke(runner, "send-care", now=MIDNIGHT + timedelta(hours=5))
    assert (care_counts(again.output)["30"], care_counts(again.output)["7"]) == (0, 0)
    # A day later: 23 June comes within 7 days and 16 July within 30; nothing else goes again.
    next_day = invoke(runner, "send-care", now=MIDNIGHT + timedelta(days=1))
    assert (care_counts(next_day.output)["30"], care_counts(next_day.output)["7"]) == (1, 1)
    with app.app_context():
        new = {m.dedupe_key for m in messages("expiry_reminder")} - set(reminders)
        assert new == {f"expiry:7:2026-06-23:{reader_id}", f"expiry:30:2026-07-16:{reader_id}"}
        assert db.session.scalar(select(func.count()).select_from(Message)
                                 .where(Message.purpose == "expiry_reminder")) == 6


# --- tier changes ---------------------------------------------------------------------------------------

def tier(code: str) -> Tier:
    return db.session.scalars(select(Tier).where(Tier.code == code)).one()


def change(person: Member, to: str, at: datetime, reason: str = "purchase") -> TierChange:
    row = TierChange(member_id=person.id, from_tier_id=person.tier_id, to_tier_id=tier(to).id, reason=reason,
                     qualifying_spend_fen=0, created_at=at)
    person.tier = tier(to)
    db.session.add(row)
    db.session.flush()
    return row


def test_a_tier_change_is_noted_once(app, runner):
    with app.app_context():
        upgraded = member("Up Grade")
        factories.purchase(upgraded, 100_000, now=NOON - timedelta(hours=2))  # ¥1,000: silver
        bounced = member("Bounce Back", locale="zh")
        change(bounced, "gold", NOON - timedelta(hours=3))
        latest = change(bounced, "silver", NOON - timedelta(hours=1), reason="return")
        old = member("Long Ago")
        change(old, "gold", NOON - timedelta(days=20))
        later = member("After Now")
        change(later, "gold", NOON + timedelta(hours=1))  # after the run's time: not yet
        upgraded_id, bounced_id, latest_id = upgraded.id, bounced.id, latest.id
        db.session.commit()

    assert care_counts(invoke(runner, "send-care", now=NOON).output)["tier"] == 2
    assert care_counts(invoke(runner, "send-care", now=NOON).output)["tier"] == 0
    with app.app_context():
        notes = {m.member_id: m for m in messages("tier_change")}
        assert set(notes) == {upgraded_id, bounced_id}
        assert notes[upgraded_id].body == "Hello Up Grade, your tier is now Silver."
        assert notes[bounced_id].dedupe_key == f"tier:{latest_id}" and notes[bounced_id].body.endswith("银卡。")
    # The next day: the change after the first run's time is noted; nothing else goes again.
    assert care_counts(invoke(runner, "send-care", now=NOON + timedelta(days=1)).output)["tier"] == 1
    assert care_counts(invoke(runner, "send-care", now=NOON + timedelta(days=2)).output)["tier"] == 0


def test_a_tier_change_is_not_missed_when_the_job_was_skipped_for_days(app, runner):
    invoke(runner, "send-care", now=NOON)
    with app.app_context():
        person = member("Patient")
        change(person, "gold", NOON + timedelta(days=2))
        db.session.commit()
    # Ten days without a run: the window reaches back to the last run, past the usual 8 days.
    assert care_counts(invoke(runner, "send-care", now=NOON + timedelta(days=12)).output)["tier"] == 1


# --- the job lock ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["send-care", "send-messages"])
def test_a_second_run_does_nothing_while_another_server_holds_the_lock(app, runner, command):
    with app.app_context():
        member("June Fan", birthday=date(1990, 6, 28), consent=True)
        other = member("Other")
        messaging.queue(db.session, member=other, template=db.session.scalars(
            select(MessageTemplate).where(MessageTemplate.code == "tier_change")).one(), purpose="tier_change",
            now=NOON, channels=messaging.Channels())
        db.session.commit()
        assert messaging.acquire_lock(db.session, command, holder="other-server:1", now=datetime.now(UTC),
                                      lease=timedelta(minutes=30))
        before = db.session.scalar(select(func.count()).select_from(Message))

    result = invoke(runner, command, now=NOON)
    assert result.output == f"{command} is already running elsewhere; nothing done.\n"
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Message)) == before
        assert set(db.session.scalars(select(MessageDelivery.status))) == {"queued"}
        lock = db.session.get(JobLock, command)
        assert lock.holder == "other-server:1" and lock.locked_until is not None  # theirs, untouched


def test_a_stale_lease_is_taken_over_and_the_lock_given_back(app, runner):
    with app.app_context():
        member("June Fan", birthday=date(1990, 6, 28), consent=True)
        db.session.commit()
        # A server that died an hour ago, with a 30-minute lease.
        assert messaging.acquire_lock(db.session, "send-care", holder="dead-server:1",
                                      now=datetime.now(UTC) - timedelta(hours=1), lease=timedelta(minutes=30))
    assert care_counts(invoke(runner, "send-care", now=NOON).output)["birthday"] == 1
    with app.app_context():
        lock = db.session.get(JobLock, "send-care")
        assert lock.holder != "dead-server:1" and lock.locked_until is None and lock.finished_at == NOON


def test_the_lock_is_given_back_after_an_error(app, runner, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(care, "send_care", broken)
    result = runner.invoke(args=["send-care", "--now", NOON.isoformat()])
    assert result.exit_code != 0 and isinstance(result.exception, RuntimeError)
    with app.app_context():
        lock = db.session.get(JobLock, "send-care")
        assert lock.locked_until is None and lock.finished_at is None  # free, and not counted as a run
    monkeypatch.undo()
    assert "birthday greetings queued" in invoke(runner, "send-care", now=NOON).output


# --- the outbox -----------------------------------------------------------------------------------------

def test_the_cli_prints_what_it_did(app, runner):
    with app.app_context():
        member("June Fan", birthday=date(1990, 6, 28), consent=True)
        db.session.commit()
    assert invoke(runner, "send-care", now=NOON).output == (
        "1 birthday greetings queued.\n"
        "0 reminders queued for points expiring within 30 days.\n"
        "0 reminders queued for points expiring within 7 days.\n"
        "0 tier-change notes queued.\n"
    )
    assert invoke(runner, "send-messages", now=NOON).output == (
        "1 sent, 0 held for quiet hours, 0 to retry, 0 failed, 0 cancelled.\n")
    assert invoke(runner, "send-messages", now=NOON).output == (
        "0 sent, 0 held for quiet hours, 0 to retry, 0 failed, 0 cancelled.\n")


def test_send_messages_refuses_a_bad_now(runner):
    result = runner.invoke(args=["send-messages", "--now", "yesterday"])
    assert result.exit_code != 0 and "not an ISO 8601 time" in result.output


def test_messages_reach_the_inbox_outside_quiet_hours(app, runner):
    with app.app_context():
        fan = member("June Fan", birthday=date(1990, 6, 28), consent=True)
        upgraded = member("Up Grade")
        factories.purchase(upgraded, 100_000, now=local("2026-06-15 20:00"))
        lot_expiring(fan, 50, local("2026-06-15 21:00") + timedelta(days=6))
        db.session.commit()
    queued = care_counts(invoke(runner, "send-care", now=local("2026-06-15 21:30")).output)
    assert queued == {"birthday": 1, "30": 0, "7": 1, "tier": 1}

    # 22:00 in Shanghai: the care messages, service or marketing, wait for 09:00.
    night = invoke(runner, "send-messages", now=local("2026-06-15 22:00"))
    assert night.output.startswith("0 sent, 3 held for quiet hours, 0 to retry, 0 failed, 0 cancelled.")
    with app.app_context():
        greeting = messages("birthday")[0]
        delivery = db.session.scalars(select(MessageDelivery).where(MessageDelivery.message_id == greeting.id)).one()
        assert (delivery.status, delivery.next_attempt_at) == ("queued", local("2026-06-16 09:00"))
        assert all(statuses(m.id) == ["queued"] for m in messages("tier_change") + messages("expiry_reminder"))
    early = invoke(runner, "send-messages", now=local("2026-06-16 08:59"))
    assert early.output.startswith("0 sent, 0 held")  # not yet due
    morning = invoke(runner, "send-messages", now=local("2026-06-16 09:00"))
    assert morning.output.startswith("3 sent, 0 held")
    with app.app_context():
        delivery = db.session.scalars(select(MessageDelivery).where(MessageDelivery.message_id == greeting.id)).one()
        assert (delivery.channel, delivery.status, delivery.sent_at) == ("inbox", "sent", local("2026-06-16 09:00"))


def test_the_monthly_cap_stops_the_birthday_greeting(app, runner):
    with app.app_context():
        fan = member("June Fan", birthday=date(1990, 6, 28), consent=True)
        offer = db.session.scalars(select(MessageTemplate).where(MessageTemplate.code == "birthday")).one()
        for day in range(1, 5):  # four marketing messages already this month
            messaging.queue(db.session, member=fan, template=offer, purpose="offer", now=local(f"2026-06-0{day} 10:00"),
                            channels=messaging.Channels())
        db.session.commit()
    assert invoke(runner, "send-messages", now=local("2026-06-10 10:00")).output.startswith("4 sent")
    invoke(runner, "send-care", now=local("2026-06-15 10:00"))
    result = invoke(runner, "send-messages", now=local("2026-06-15 10:05"))
    assert result.output.startswith("0 sent, 0 held for quiet hours, 0 to retry, 0 failed, 1 cancelled.")
    with app.app_context():
        delivery = db.session.scalars(select(MessageDelivery).where(
            MessageDelivery.message_id == messages("birthday")[0].id)).one()
        assert (delivery.status, delivery.last_error) == ("cancelled", "monthly cap reached")


@pytest.mark.parametrize("how", ["settings", "flag"])
def test_withdrawing_consent_before_sending_cancels_the_birthday_greeting(app, runner, how):
    with app.app_context():
        fan_id = member("June Fan", birthday=date(1990, 6, 28), consent=True).id
        db.session.commit()
    invoke(runner, "send-care", now=local("2026-06-15 22:00"))  # queued at night: waits for 09:00
    assert invoke(runner, "send-messages", now=local("2026-06-15 22:05")).output.startswith("0 sent, 1 held")
    with app.app_context():
        fan = db.session.get(Member, fan_id)
        if how == "settings":  # the member's own settings page: queued marketing is cancelled at once
            update_profile(db.session, fan, ProfileChange(name=fan.name, birthday=fan.birthday,
                                                          guardian_consent=False, marketing_consent=False,
                                                          locale="en"),
                           rules=load_rules(db.session), now=local("2026-06-15 23:00"))
        else:  # however consent went, the outbox checks it again before sending
            fan.marketing_consent = False
        db.session.commit()
    result = invoke(runner, "send-messages", now=local("2026-06-16 09:00"))
    assert result.output.startswith("0 sent")
    with app.app_context():
        assert statuses(messages("birthday")[0].id) == ["cancelled"]
    # Withdrawn consent: the next year's greeting is not even queued.
    assert care_counts(invoke(runner, "send-care", now=local("2027-06-15 10:00")).output)["birthday"] == 0


def test_care_works_in_batches(app):
    with app.app_context():
        for n in range(7):
            member(f"Fan {n}", birthday=date(1990, 6, 1 + n), consent=True)
        db.session.commit()
        run = care.send_care(db.session, now=NOON, channels=messaging.Channels(), batch=3)
        assert run.birthday == 7 and run.total == 7
        assert care.send_care(db.session, now=NOON, channels=messaging.Channels(), batch=3).total == 0


def test_a_long_outbox_run_keeps_its_lease_and_stops_if_the_lock_is_taken_over(app, runner, monkeypatch):
    from sqlalchemy import update

    from portal import senders

    with app.app_context():
        note = db.session.scalars(select(MessageTemplate).where(MessageTemplate.code == "tier_change")).one()
        for n in range(4):
            messaging.queue(db.session, member=member(f"Reader {n}"), template=note, purpose="tier_change", now=NOON,
                            channels=messaging.Channels())
        db.session.commit()
    leases = []

    def inbox(delivery, message):
        lock = db.session.get(JobLock, "send-messages")
        db.session.refresh(lock)
        leases.append(lock.locked_until)
        if len(leases) == 2:  # another server takes the lock over (as if our lease had run out)
            db.session.execute(update(JobLock).where(JobLock.name == "send-messages").values(holder="other:2"))

    monkeypatch.setattr(senders, "configured", lambda config: (messaging.Channels(), {"inbox": inbox}))
    result = runner.invoke(args=["send-messages", "--now", NOON.isoformat(), "--batch", "1"])
    assert result.exit_code == 1 and "send-messages lost its lock to another server; stopped." in result.output
    assert len(leases) == 2 and leases[1] >= leases[0]  # renewed between batches (real time)
    with app.app_context():
        assert sorted(db.session.scalars(select(MessageDelivery.status))) == ["queued", "queued", "sent", "sent"]
        assert db.session.get(JobLock, "send-messages").holder == "other:2"  # theirs now: not released by us
