"""The member's own pages on a phone: Debian's Chromium, emulating a 390×844 touch screen, driven by Playwright
against the app served on a local port.

A member activates their account with the till's 6-digit code, lands on their home page (points, what expires
soon, the tier), opens the card from the bottom menu and shows its QR code; the code, read from a screenshot by a
real barcode decoder, is what a cashier's scanner types into the till's lookup box, and it opens that member. A
wrong code is shown beside the code field, and the home page comes in Chinese to a Chinese phone. No page may
scroll sideways on the phone, log an error or break the Content-Security-Policy.
"""
from __future__ import annotations

import re
import shutil
from datetime import datetime, timezone

import pytest
import zxingcpp
from PIL import Image

from portal import rules as portal_rules
from portal.extensions import db

from . import factories
from .browser import (  # noqa: F401  (browser, live_server, browsing and staff are fixtures)
    cashier, ARTIFACTS, PHONE, PHONE_HEIGHT, PHONE_WIDTH, assert_clear_of_the_menu, assert_fits_the_phone, assert_same_page,
    browser, browsing, expect, live_server, mark_page, phone_page, sign_in,
)

pytestmark = pytest.mark.slow

MEMBER_PHONE = "+8613912345678"
NEW_PASSWORD = "plum blossom 2026"


def activate(page, phone: str, code: str) -> None:
    """Fill in and send the activation form (phone, the till's code, the new password twice)."""
    page.goto("/member/activate")
    form = page.locator("main form[action$='/member/activate']")
    form.locator("input[name=phone]").fill(phone)
    form.locator("input[name=code]").fill(code)
    form.locator("input[name=password]").fill(NEW_PASSWORD)
    form.locator("input[name=confirm]").fill(NEW_PASSWORD)
    form.locator("button[type=submit]").click()


@pytest.fixture
def with_message(app, member) -> dict:
    """The member has one unread message in the inbox (a service note, delivered by the outbox)."""
    from sqlalchemy import select

    from portal import messaging
    from portal.models import Member, MessageTemplate

    with app.app_context():
        person = db.session.scalars(select(Member).where(Member.card_number == member["card"])).one()
        notice = db.session.scalars(select(MessageTemplate).where(MessageTemplate.code == "tier_change")).one()
        moment = datetime.now(timezone.utc)
        messaging.queue(db.session, member=person, template=notice, purpose="tier_change", now=moment,
                        channels=messaging.Channels())
        messaging.send_due(db.session, now=moment, rules=portal_rules.load_rules(db.session),
                           senders={"inbox": messaging.deliver_to_inbox}, default_zone="Asia/Shanghai")
    return member


@pytest.fixture
def member(app) -> dict:
    """A member fresh from the till (not yet activated) with one purchase of ¥888.00, whose points expire in
    3 weeks (the expiry rule is set to 20 days first)."""
    with app.app_context():
        portal_rules.set_rule(db.session, "expiry_days", "20", staff=None, now=datetime.now(timezone.utc))
        db.session.flush()
        person = factories.member(name="Han Meimei", phone=MEMBER_PHONE)
        factories.purchase(person, gross_fen=88_800)
        db.session.commit()
        return {"card": person.card_number, "code": person.activation_code, "name": person.name}


def test_member_activates_sees_points_and_shows_a_card_the_till_can_scan(
    browsing, member, cashier, db_backend, tmp_path
):
    page = phone_page(browsing, "en-US")
    page.goto("/member/activate")
    assert_fits_the_phone(page)
    activate(page, "139 1234 5678", member["code"])

    expect(page).to_have_url(re.compile(r"/me/$"))
    expect(page.locator("#balance")).to_have_text("888")
    tier = page.locator("#tier")
    expect(tier).to_be_visible()
    expect(tier.locator("h2")).to_have_text("Member")
    expect(tier).to_contain_text("Spend ¥112.00 more to reach Silver.")
    expect(page.locator("#expiring")).to_contain_text("888 points on")
    expect(page.locator("nav.member-nav a[aria-current=page]")).to_have_text("Home")
    page.wait_for_load_state("load")
    assert_fits_the_phone(page)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"member-home-phone-{db_backend}.png")  # what the phone shows, menu included
    assert_clear_of_the_menu(page, page.locator("main a[href$='/me/history']", has_text="All history"))

    # The bottom menu stays on screen (it is fixed) and leads to the card.
    nav = page.locator("nav.member-nav")
    box = nav.bounding_box()
    assert box is not None and abs(box["y"] + box["height"] - PHONE_HEIGHT) < 1, f"the menu is not at the bottom: {box}"
    nav.locator("a[href$='/me/card']").tap()
    expect(page).to_have_url(re.compile(r"/me/card$"))
    card = member["card"]
    expect(page.locator("#card-number")).to_have_text(f"{card[:4]} {card[4:8]} {card[8:]}")
    expect(page.locator("nav.member-nav a[aria-current=page]")).to_have_text("Card")
    qr = page.locator("#card svg.qr")
    expect(qr).to_be_visible()
    page.wait_for_load_state("load")
    assert_fits_the_phone(page)

    qr_box = qr.bounding_box()
    assert qr_box is not None
    assert qr_box["width"] >= 250, f"the QR code is too small to scan on a phone: {qr_box}"
    assert qr_box["x"] >= 0 and qr_box["x"] + qr_box["width"] <= PHONE_WIDTH, f"the QR code is cut off: {qr_box}"
    assert qr_box["y"] + qr_box["height"] <= PHONE_HEIGHT - box["height"], (
        f"the QR code is not wholly on screen above the menu: {qr_box}"
    )

    shot = tmp_path / f"member-card-phone-{db_backend}.png"
    page.screenshot(path=shot)
    shutil.copyfile(shot, ARTIFACTS / shot.name)
    with Image.open(shot) as image:
        assert image.size == (PHONE_WIDTH * PHONE["device_scale_factor"], PHONE_HEIGHT * PHONE["device_scale_factor"])
        found = zxingcpp.read_barcodes(image)
    assert len(found) == 1, f"expected one barcode in the screenshot, found {[(b.format, b.text) for b in found]}"
    assert found[0].format == zxingcpp.BarcodeFormat.QRCode
    scanned = found[0].text
    assert scanned == card

    # At the till, the scanner types what it read into the lookup box; the member's panel opens.
    till = browsing.page("en-US")
    sign_in(till, cashier)
    mark_page(till)
    till.locator("#q").press_sequentially(scanned)  # as a scanner types it, no Enter
    panel = till.locator(f"#panel .member-panel[data-card='{scanned}']")
    expect(panel).to_be_visible()
    expect(panel.locator(".member-head h2")).to_have_text(member["name"])
    expect(panel.locator("#balance")).to_have_text("888")
    expect(till).to_have_url(re.compile(rf"/till/members/{scanned}$"))
    assert_same_page(till)

    assert browsing.problems == []


def test_a_wrong_code_is_shown_beside_the_code_field(browsing, member, db_backend):
    page = phone_page(browsing, "en-US")
    wrong = f"{(int(member['code']) + 1) % 1_000_000:06d}"
    activate(page, "13912345678", wrong)

    code = page.locator("main form input[name=code]")
    error = page.locator("#code-error")
    expect(error).to_have_text("This phone and code do not match, or the code is no longer valid. Check it, or ask "
                               "at the till for a new code.")
    expect(page).to_have_url(re.compile(r"/member/activate$"))  # still here, not signed in
    expect(code).to_have_attribute("aria-invalid", "true")
    expect(code).to_have_attribute("aria-describedby", "code-error")
    # Beside the field: in the same .field block, just under the box, and on screen.
    errors = page.locator(".field.has-error")
    expect(errors).to_have_count(1)
    expect(errors.filter(has=page.locator("input[name=code]")).locator("#code-error")).to_have_count(1)
    code_box, error_box = code.bounding_box(), error.bounding_box()
    assert code_box and error_box
    assert 0 <= error_box["y"] - (code_box["y"] + code_box["height"]) < 40, (code_box, error_box)
    assert error_box["y"] + error_box["height"] <= PHONE_HEIGHT, "the message is below the fold"
    expect(page.locator("main form input[name=phone]")).to_have_value("13912345678")
    page.wait_for_load_state("load")
    assert_fits_the_phone(page)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"member-activate-wrong-code-phone-{db_backend}.png")

    # The right code still works afterwards (one wrong try of five).
    activate(page, "13912345678", member["code"])
    expect(page).to_have_url(re.compile(r"/me/$"))
    expect(page.locator("#balance")).to_have_text("888")

    # Chromium logs the refused form's status (422, as every refused form in the portal answers) as a console
    # error; nothing else may appear.
    refused = re.compile(r"/member/activate: Failed to load resource: the server responded with a status of 422\b")
    assert [p for p in browsing.problems if not refused.search(p)] == []
    assert len(browsing.problems) == 1, browsing.problems


def test_the_home_page_in_chinese_on_a_phone(browsing, member, with_message, db_backend):
    page = phone_page(browsing, "zh-CN")
    page.goto("/member/activate")
    expect(page.locator("html")).to_have_attribute("lang", "zh-Hans")
    expect(page.locator("main h1")).to_have_text("设置密码")
    assert_fits_the_phone(page)
    activate(page, "13912345678", member["code"])

    expect(page).to_have_url(re.compile(r"/me/$"))
    expect(page.locator("html")).to_have_attribute("lang", "zh-Hans")
    expect(page).to_have_title(re.compile(r"^我的会员 · 会员中心$"))
    expect(page.locator("#balance")).to_have_text("888")
    expect(page.locator(".member-summary")).to_contain_text("Han Meimei，您好")
    expect(page.locator(".member-summary .label")).to_have_text("积分")
    expect(page.locator("#expiring")).to_contain_text("30 天内将过期")
    expect(page.locator("#tier h2")).to_have_text("普通会员")
    expect(page.locator("#tier")).to_contain_text("银卡")
    nav = page.locator("nav.member-nav")
    expect(nav).to_have_attribute("aria-label", "会员菜单")
    expect(nav.locator("a")).to_have_count(5)
    expect(nav.locator("a:not(.inbox-link)")).to_have_text(["首页", "会员卡", "记录", "我的"])
    expect(nav.locator("a[aria-current=page]")).to_have_text("首页")
    # The inbox entry carries the unread count, on its own line of the menu: five entries fit the phone.
    inbox_link = nav.locator("a.inbox-link")
    expect(inbox_link.locator("#inbox-badge span[aria-hidden=true]")).to_have_text("1")
    nav_box, badge_box = nav.bounding_box(), inbox_link.locator("#inbox-badge").bounding_box()
    assert nav_box and badge_box and badge_box["x"] + badge_box["width"] <= PHONE_WIDTH
    assert all(abs(box["height"] - nav_box["height"]) <= 1 for box in
               (nav.locator("a").nth(n).bounding_box() for n in range(5))), "a menu entry wraps onto two lines"
    expect(page.locator("header.topbar .brand")).to_have_text("会员中心")
    page.wait_for_load_state("load")
    assert_fits_the_phone(page)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"member-home-zh-phone-{db_backend}.png")
    assert_clear_of_the_menu(page, page.locator("main a[href$='/me/history']", has_text="全部记录"))

    nav.locator("a[href$='/me/card']").tap()
    expect(page).to_have_url(re.compile(r"/me/card$"))
    expect(page.locator("#card .card-brand")).to_have_text("会员卡")
    expect(page.locator("#card svg.qr")).to_be_visible()
    page.wait_for_load_state("load")
    assert_fits_the_phone(page)
    page.screenshot(path=ARTIFACTS / f"member-card-zh-phone-{db_backend}.png")

    # The inbox: the message opens, is marked read by the page itself, and the badge goes.
    nav.locator("a.inbox-link").tap()
    expect(page).to_have_url(re.compile(r"/me/inbox$"))
    page.locator("#inbox .message.unread a").tap()
    expect(page.locator("#message h1")).to_have_text("您的会员等级已变更")
    expect(nav.locator("#inbox-badge")).to_have_text("")
    page.wait_for_load_state("load")
    assert_fits_the_phone(page)
    page.screenshot(path=ARTIFACTS / f"member-message-zh-phone-{db_backend}.png")

    assert browsing.problems == []
