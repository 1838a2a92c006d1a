"""A member's complaint and the manager's answer, in a real browser: Debian's Chromium driven by Playwright
against the app served on a local port (issue 8).

On a 390×844 phone, a member signs in, goes from the home page to "My complaints", tells the store about a
problem with their last visit and lands on the complaint, open. At a desk, a manager of that store opens
Complaints from the top bar, finds it in the queue, replies to the member (the reply is the first response, so
the complaint becomes Acknowledged), gives 100 goodwill points and resolves it with a message; every action is
an htmx swap (no full reload). Back on the phone the member reads the reply, the resolution and the apology
points, rates the resolution 5 with one tap, and sees the balance 100 points higher. No page may scroll
sideways on the phone, log an error or break the Content-Security-Policy.
"""
from __future__ import annotations

import re

import pytest

from portal.extensions import db

from . import factories
from .browser import (  # noqa: F401  (browser, live_server, browsing and staff are fixtures)
    manager, ARTIFACTS, assert_clear_of_the_menu, assert_fits_the_phone, assert_same_page, browser, browsing, expect,
    live_server, mark_page, phone_page, sign_in,
)

pytestmark = pytest.mark.slow

MEMBER_PHONE = "+8613912345678"
DESCRIPTION = "The milk I bought was two days past its date, and the cashier would not take it back."
REPLY = "We are sorry. We have checked the dairy shelf and removed the old stock; please bring the milk back."
RESOLUTION = "Refunded the milk at the counter and retrained the dairy team on date checks."


@pytest.fixture
def member(app) -> dict:
    """An activated member (password factories.PASSWORD) with one purchase of ¥888.00 (888 points)."""
    with app.app_context():
        person = factories.member(name="Han Meimei", phone=MEMBER_PHONE, activated=True)
        purchase = factories.purchase(person, gross_fen=88_800).purchase
        db.session.commit()
        return {"name": person.name, "card": person.card_number, "purchase_id": purchase.id}


def member_sign_in(page, phone: str) -> None:
    page.goto("/member/login")
    form = page.locator("main form[action$='/member/login']")
    form.locator("input[name=phone]").fill(phone)
    form.locator("input[name=password]").fill(factories.PASSWORD)
    form.locator("button[type=submit]").tap()
    expect(page).to_have_url(re.compile(r"/me/$"))


def test_a_member_files_a_complaint_and_a_manager_answers_it(browsing, member, manager, db_backend):
    ARTIFACTS.mkdir(exist_ok=True)

    # --- 1. The member tells the store about a problem, from the phone. ---------------------------------------
    phone = phone_page(browsing, "en-US")
    member_sign_in(phone, "139 1234 5678")
    expect(phone.locator("#balance")).to_have_text("888")
    phone.locator("main a[href$='/me/complaints']", has_text="Something wrong? Tell us").tap()

    expect(phone).to_have_url(re.compile(r"/me/complaints$"))
    expect(phone.locator("main h1")).to_have_text("My complaints")
    expect(phone.locator("main")).to_contain_text("You have not made any complaint.")
    expect(phone.locator("nav.member-nav a[aria-current=page]")).to_have_text("Me")
    phone.wait_for_load_state("load")
    assert_fits_the_phone(phone)
    phone.get_by_role("link", name="Tell us about a problem").tap()

    expect(phone).to_have_url(re.compile(r"/me/complaints/new$"))
    form = phone.locator("main form[action$='/me/complaints']")
    form.get_by_label("What is it about?").select_option(label="Product quality")
    visit = form.get_by_label("Which visit (optional)")
    expect(visit.locator("option:checked")).to_have_text("No particular visit")
    the_visit = visit.locator(f"option[value='{member['purchase_id']}']")
    expect(the_visit).to_have_text(re.compile(r"^¥888\.00 · .+ · Test Store$"))
    visit.select_option(label=the_visit.inner_text())
    form.get_by_label("What happened").fill(DESCRIPTION)
    phone.wait_for_load_state("load")
    assert_fits_the_phone(phone)
    phone.screenshot(path=ARTIFACTS / f"member-complaint-form-phone-{db_backend}.png")
    form.get_by_role("button", name="Send").tap()

    expect(phone).to_have_url(re.compile(r"/me/complaints/\d+$"))
    complaint_id = int(phone.url.rsplit("/", 1)[1])
    complaint_url = phone.url
    card = phone.locator("#complaint")
    expect(card.locator("h1")).to_have_text(f"Complaint no. {complaint_id}")
    expect(card.locator(".tag.status-open")).to_have_text("Open")
    expect(card).to_contain_text("Product quality · Test Store")
    opened = card.locator("ol.timeline li.event-opened")
    expect(opened).to_contain_text("You wrote")
    expect(opened.locator("p.pre")).to_have_text(DESCRIPTION)
    expect(phone.locator("#rate-resolution")).to_have_count(0)  # nothing to rate before it is resolved
    phone.wait_for_load_state("load")
    assert_fits_the_phone(phone)

    # --- 2. The manager of the store answers it, at a desk. ---------------------------------------------------
    desk = browsing.page("en-US")
    sign_in(desk, manager)
    desk.locator("header.topbar nav a", has_text="Manage").click()
    desk.locator("header.topbar nav.manage-nav a", has_text="Complaints").click()
    expect(desk).to_have_url(re.compile(r"/manage/complaints$"))
    expect(desk.locator("main h1")).to_have_text("Complaints")
    row = desk.locator(f"table.complaint-queue tr#complaint-{complaint_id}")
    expect(row).to_contain_text("Product quality")
    expect(row.locator(".excerpt")).to_contain_text("The milk I bought was two days past its date")
    expect(row.locator(".status")).to_have_text("Open")
    expect(row).to_contain_text(member["name"])
    expect(row).to_contain_text("Response due")
    row.get_by_role("link", name=f"#{complaint_id}").click()

    detail_url = re.compile(rf"/manage/complaints/{complaint_id}$")
    expect(desk).to_have_url(detail_url)
    expect(desk.locator("main h1")).to_have_text(f"Complaint #{complaint_id}")
    status = desk.locator("#complaint-status")
    expect(status).to_have_text("Open")
    expect(desk.locator("#complaint .complaint-text")).to_have_text(DESCRIPTION)
    expect(desk.locator("#complaint")).to_contain_text("By the member, online")
    expect(desk.locator("#complaint")).to_contain_text("¥888.00")  # the visit the member picked
    desk.wait_for_load_state("load")
    desk.wait_for_function("window.htmx !== undefined")
    mark_page(desk)

    # A reply the member reads is the first response: the complaint becomes Acknowledged.
    reply = desk.locator("#complaint-actions form.reply")
    reply.get_by_label("Message").fill(REPLY)
    reply.get_by_label("Send to the member (otherwise an internal note)").check()
    reply.get_by_role("button", name="Add").click()
    notice = desk.locator("#complaint [role=status]")
    expect(notice).to_have_text("The reply is sent to the member.")
    expect(status).to_have_text("Acknowledged")
    replied = desk.locator("#timeline li.event-reply")
    expect(replied).to_have_count(1)
    expect(replied.locator(".event-head")).to_contain_text("The member reads this")
    expect(replied.locator(".event-body")).to_have_text(REPLY)
    expect(desk.locator("#complaint-actions form.acknowledge")).to_have_count(0)  # already answered
    expect(desk.locator("#complaint-actions form.reply").get_by_label("Message")).to_have_value("")
    expect(desk).to_have_url(detail_url)
    assert_same_page(desk)

    goodwill = desk.locator("#complaint-actions form.goodwill")
    goodwill.get_by_label("Goodwill points").fill("100")
    goodwill.get_by_role("button", name="Give points").click()
    expect(notice).to_have_text("The goodwill points are posted.")
    expect(desk.locator("#complaint-goodwill")).to_have_text("100")
    expect(desk.locator("#timeline li.event-goodwill .event-body")).to_have_text("100 points to the member")
    expect(status).to_have_text("Acknowledged")
    assert_same_page(desk)

    resolve = desk.locator("#complaint-actions form.resolve")
    resolve.get_by_label("What was done (the member reads this; optional)").fill(RESOLUTION)
    resolve.get_by_role("button", name="Mark resolved").click()
    expect(notice).to_have_text("The complaint is resolved.")
    expect(status).to_have_text("Resolved")
    resolved = desk.locator("#timeline li.event-resolved")
    expect(resolved.locator(".event-body")).to_have_text(RESOLUTION)
    expect(resolved.locator(".event-head")).to_contain_text("The member reads this")
    expect(desk.locator("#complaint-actions form.resolve")).to_have_count(0)
    expect(desk.locator("#complaint-actions form.close")).to_have_count(1)
    expect(desk.locator("#timeline li")).to_have_count(4)  # made, reply, goodwill, resolved
    expect(desk).to_have_url(detail_url)
    assert_same_page(desk)
    desk.screenshot(path=ARTIFACTS / f"manage-complaint-{db_backend}.png", full_page=True)
    assert browsing.problems == []  # the console so far; the member's pages are checked again at the end

    # --- 3. The member reads the answer, rates it, and has the points. ----------------------------------------
    phone.reload()
    expect(phone).to_have_url(complaint_url)
    expect(card.locator(".tag.status-resolved")).to_have_text("Resolved")
    timeline = card.locator("ol.timeline")
    expect(timeline.locator("li.event-reply")).to_contain_text("The store replied")
    expect(timeline.locator("li.event-reply p.pre")).to_have_text(REPLY)
    expect(timeline.locator("li.event-resolved p.pre")).to_have_text(RESOLUTION)
    expect(timeline.locator("li.event-goodwill")).to_contain_text("The store gave you 100 points as an apology")
    expect(phone.locator("#reopen")).to_be_visible()  # resolved, within the reopening days
    rate = phone.locator("#rate-resolution")
    expect(rate.get_by_role("button")).to_have_count(5)
    phone.wait_for_load_state("load")
    assert_fits_the_phone(phone)
    rate.get_by_role("button", name="5 out of 5", exact=True).tap()

    expect(phone).to_have_url(complaint_url)
    expect(timeline.locator("li.event-rated")).to_contain_text("You rated it 5 out of 5")
    expect(phone.locator("#rate-resolution")).to_have_count(0)  # once only
    phone.wait_for_load_state("load")
    assert_fits_the_phone(phone)
    # What the phone shows (menu included), at the top and scrolled to the end; a full-page capture would
    # paint the fixed menu in the middle of the page.
    phone.screenshot(path=ARTIFACTS / f"member-complaint-phone-{db_backend}.png")
    all_mine = phone.locator("main a[href$='/me/complaints']", has_text="All my complaints")
    assert_clear_of_the_menu(phone, all_mine)
    phone.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
    phone.wait_for_function("Math.ceil(window.scrollY + window.innerHeight) >= document.documentElement.scrollHeight")
    phone.screenshot(path=ARTIFACTS / f"member-complaint-end-phone-{db_backend}.png")

    all_mine.tap()
    expect(phone).to_have_url(re.compile(r"/me/complaints$"))
    mine = phone.locator("main ul.entries li")
    expect(mine).to_have_count(1)
    expect(mine).to_contain_text(f"No. {complaint_id} · Product quality")
    expect(mine.locator(".tag")).to_have_text("Resolved")

    phone.locator("nav.member-nav a[href$='/me/']").tap()
    expect(phone).to_have_url(re.compile(r"/me/$"))
    expect(phone.locator("#balance")).to_have_text("988")
    expect(phone.locator("main")).to_contain_text("Goodwill points for a complaint")

    # The manager sees the member's rating on the complaint.
    desk.reload()
    expect(desk.locator("#complaint")).to_contain_text("Member's rating")
    expect(desk.locator("#timeline li.event-rated .event-body")).to_have_text("5 out of 5")

    assert browsing.problems == []
