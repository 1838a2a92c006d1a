"""A campaign from the manager's screen to a member's phone, in Debian's Chromium driven by Playwright against
the app served on a local port.

A manager writes a campaign for a small audience (the members with marketing consent), sees its size and the
message as one of them would read it, creates it and watches the page queue the messages; the outbox runs (as
cron would run `flask send-messages`) and the page, polling, shows them sent. A member then signs in on a phone,
sees the unread badge, opens the inbox and reads the message, and the badge goes. No page may log an error or
break the Content-Security-Policy.
"""
from __future__ import annotations

import re
from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from portal import messaging
from portal.extensions import db
from portal.models import Message
from portal.rules import load_rules

from . import factories
from .browser import (  # noqa: F401  (browser, live_server, browsing and manager are fixtures)
    assert_fits_the_phone, browser, browsing, expect, live_server, manager, phone_page, sign_in,
)

pytestmark = pytest.mark.slow

SHANGHAI = ZoneInfo("Asia/Shanghai")


def daytime(moment: datetime) -> datetime:
    """`moment`, or if it falls in the quiet hours (21:00 to 09:00 in Shanghai) the next 09:30 there: when the
    outbox may send marketing."""
    local = moment.astimezone(SHANGHAI)
    if 9 <= local.hour < 21:
        return moment
    day = local.date() + timedelta(days=1 if local.hour >= 21 else 0)
    return datetime.combine(day, time(9, 30), tzinfo=SHANGHAI).astimezone(timezone.utc)


@pytest.fixture
def audience(app) -> dict:
    """Two members who agreed to marketing (one can sign in on a phone) and one who did not."""
    with app.app_context():
        reader = factories.member(name="Han Meimei", activated=True)
        reader.locale = "en"
        other = factories.member(name="Li Lei")
        for person in (reader, other):
            person.marketing_consent = True
        factories.member(name="Not Interested")
        db.session.commit()
        return {"phone": reader.phone, "id": reader.id}


def test_a_manager_sends_a_campaign_and_a_member_reads_it_on_a_phone(app, browsing, manager, audience):
    page = browsing.page()
    sign_in(page, manager)
    page.goto("/manage/messages")
    page.locator("nav.manage-nav a", has_text="Messages").wait_for()
    page.get_by_role("link", name="New campaign").click()

    expect(page.locator("[data-figure=audience-size]")).to_have_text("2")
    expect(page.locator("#campaign-consent-note")).to_be_visible()
    page.locator("#campaign-name").fill("Summer thanks")
    page.locator("#campaign-template").select_option(label="Birthday greeting")
    preview = page.locator("#campaign-audience [data-figure=preview-subject-en]")
    expect(preview).to_have_text("Happy birthday!")  # the audience block followed the change
    page.locator("#campaign-control").fill("0")
    page.get_by_role("button", name="Create and send").click()

    expect(page).to_have_url(re.compile(r"/manage/messages/\d+$"))
    status = page.locator("#campaign-status")
    expect(status.locator("[data-figure=status]")).to_have_text("Sending")  # queued by the polling steps
    expect(status.locator("[data-figure=queued]")).to_have_text("2")
    expect(status.locator("[data-figure=audience]")).to_have_text("2")
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Message)) == 2
        run = messaging.send_due(db.session, now=daytime(datetime.now(timezone.utc)), rules=load_rules(db.session),
                                 senders={"inbox": messaging.deliver_to_inbox}, default_zone="Asia/Shanghai")
        assert run.sent == 2
    expect(status.locator("[data-figure=status]")).to_have_text("Sent", timeout=10_000)  # the page polled
    expect(status.locator("[data-figure=delivered]")).to_have_text("2")

    phone = phone_page(browsing)
    phone.goto("/member/login")
    phone.locator("input[name=phone]").fill(audience["phone"][3:])
    phone.locator("input[name=password]").fill(factories.PASSWORD)
    phone.get_by_role("button", name="Sign in").click()
    expect(phone).to_have_url(re.compile(r"/me/$"))
    badge = phone.locator("#inbox-badge")
    expect(badge).to_contain_text("1 unread")
    assert_fits_the_phone(phone)
    phone.locator("a.inbox-link").click()
    expect(phone).to_have_url(re.compile(r"/me/inbox$"))
    phone.get_by_role("link", name="Happy birthday!").click()
    expect(phone.locator("#message-body")).to_have_text(
        "Happy birthday, Han Meimei! Test Store has a birthday treat for you. Your balance is 0 points.")
    expect(phone.locator("#message-unsubscribe")).to_be_visible()
    expect(badge).not_to_contain_text("unread")  # marked read once shown
    assert_fits_the_phone(phone)

    page.reload()
    expect(page.locator("[data-figure=read]")).to_have_text("1")
    assert browsing.problems == []
