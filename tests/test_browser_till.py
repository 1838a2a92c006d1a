"""The till in a real browser: Debian's Chromium driven by Playwright against the app served on a local port.

A cashier signs in, registers a member, records two purchases and sees the member reach Silver on the
receipt; the lookup box finds the member as the cashier types. Every step after sign-in must be an htmx swap
(no full reload), and the page must log no error and no Content-Security-Policy violation.
"""
from __future__ import annotations

import re
import pytest

from portal.extensions import db

from . import factories
from .browser import (  # noqa: F401  (browser, live_server, browsing and staff are fixtures)
    cashier, ARTIFACTS, assert_same_page, browser, browsing, expect, live_server, mark_page, sign_in,
)

pytestmark = pytest.mark.slow


def record_purchase(page, amount: str) -> None:
    form = page.locator("#panel form.checkout")
    form.locator("input[name=gross]").fill(amount)
    form.locator("button[type=submit]").click()
    expect(page.locator("#panel #receipt")).to_be_visible()


def test_cashier_registers_a_member_whose_second_purchase_reaches_silver(browsing, cashier, db_backend):
    page = browsing.page("en-US")
    sign_in(page, cashier)
    mark_page(page)

    page.locator(".till-search a.button[href$='/till/members/new']").click()
    form = page.locator("#panel form.register")
    expect(form).to_be_visible()
    expect(page).to_have_url(re.compile(r"/till/members/new$"))
    form.locator("input[name=name]").fill("Li Lei")
    form.locator("input[name=phone]").fill("13912345678")
    form.locator("input[name=privacy_consent]").check()
    form.locator("button[type=submit]").click()

    card = page.locator("#panel #new-card")
    expect(card).to_have_text(re.compile(r"^\s*\d{10}\s*$"))
    expect(page.locator("#panel #activation-code")).to_have_text(re.compile(r"^\s*\d{6}\s*$"))
    card_number = card.inner_text().strip()
    expect(page).to_have_url(re.compile(rf"/till/members/{card_number}$"))
    expect(page.locator("#panel .member-head .tier")).to_have_class(re.compile(r"\btier-member\b"))
    expect(page.locator("#panel input[name=gross]")).to_be_focused()
    assert_same_page(page)

    record_purchase(page, "600")
    receipt = page.locator("#panel #receipt")
    expect(receipt.locator("[data-figure=gross]")).to_have_text("¥600.00")
    expect(receipt.locator("[data-figure=paid]")).to_have_text("¥600.00")
    expect(receipt.locator("[data-figure=earned]")).to_have_text("+600")
    expect(receipt.locator("[data-figure=balance]")).to_have_text("600")
    expect(receipt.locator("[data-figure=tier-change]")).to_have_count(0)
    expect(page).to_have_url(re.compile(r"/till/purchases/\d+$"))
    assert_same_page(page)

    receipt.locator(f"a[hx-get$='/till/members/{card_number}']").click()
    expect(page.locator(f"#panel .member-panel[data-card='{card_number}']")).to_be_visible()
    record_purchase(page, "450")
    # Silver is reached by this purchase, so its discount and multiplier apply only from the next one.
    expect(receipt.locator("[data-figure=discount]")).to_have_text("−¥0.00")
    expect(receipt.locator("[data-figure=paid]")).to_have_text("¥450.00")
    expect(receipt.locator("[data-figure=earned]")).to_have_text("+450")
    expect(receipt.locator("[data-figure=balance]")).to_have_text("1,050")
    tier_change = receipt.locator("[data-figure=tier-change]")
    expect(tier_change).to_be_visible()
    expect(tier_change).to_contain_text("Silver")
    receipt_url = page.url
    assert_same_page(page)

    receipt.locator(f"a[hx-get$='/till/members/{card_number}']").click()
    panel = page.locator(f"#panel .member-panel[data-card='{card_number}']")
    expect(panel.locator(".member-head .tier")).to_have_text("Silver")
    expect(panel.locator(".member-head .tier")).to_have_class(re.compile(r"\btier-silver\b"))
    expect(panel.locator("dl.member-facts > dd").nth(2)).to_have_text("2%")  # the member discount
    expect(panel.locator("#balance")).to_have_text("1,050")
    assert_same_page(page)

    # Back (htmx keeps no history cache, so it asks the server): the receipt again, inside the whole till page.
    page.go_back()
    expect(page).to_have_url(receipt_url)
    expect(page.locator("#panel #receipt [data-figure=tier-change]")).to_be_visible()
    expect(page.locator("header.topbar")).to_have_count(1)
    expect(page.locator("#q")).to_be_visible()

    # The receipt, printed in Chinese: a second browser whose language is Simplified Chinese.
    zh_page = browsing.page("zh-CN")
    sign_in(zh_page, cashier)
    zh_page.goto(receipt_url)
    zh_receipt = zh_page.locator("#receipt")
    expect(zh_page.locator("html")).to_have_attribute("lang", "zh-Hans")
    expect(zh_receipt.locator("[data-figure=tier-change]")).to_contain_text("银卡")
    expect(zh_receipt.locator("[data-figure=paid]")).to_have_text("¥450.00")
    assert re.search(r"[\u4e00-\u9fff]", zh_receipt.inner_text()), "the Chinese receipt shows no Chinese text"
    ARTIFACTS.mkdir(exist_ok=True)
    zh_receipt.screenshot(path=ARTIFACTS / f"till-receipt-zh-{db_backend}.png")

    assert browsing.problems == []


def test_lookup_finds_the_member_as_the_cashier_types(app, browsing, cashier):
    with app.app_context():
        member = factories.member(name="Han Meimei", phone="+8613912345678")
        factories.member(name="Zhang San", phone="+8613800001111")
        db.session.commit()
        card_number = member.card_number

    page = browsing.page("en-US")
    sign_in(page, cashier)
    mark_page(page)
    box = page.locator("#q")

    box.press_sequentially("5678")  # the last 4 digits of the phone, no Enter
    matches = page.locator("#results ul.matches li")
    expect(matches).to_have_count(1)
    expect(matches.first).to_contain_text("Han Meimei")
    expect(matches.first).to_contain_text(card_number)
    expect(matches.first).to_contain_text("139****5678")
    expect(page.locator("#panel .member-panel")).to_have_count(0)

    box.fill("")
    box.press_sequentially(card_number)  # as a scanner types it, no Enter
    panel = page.locator(f"#panel .member-panel[data-card='{card_number}']")
    expect(panel).to_be_visible()
    expect(panel.locator(".member-head h2")).to_have_text("Han Meimei")
    expect(page).to_have_url(re.compile(rf"/till/members/{card_number}$"))
    assert_same_page(page)

    assert browsing.problems == []


def test_bad_input_and_a_lost_connection_are_shown_to_the_cashier(app, browsing, cashier):
    with app.app_context():
        card_number = factories.member(name="Li Lei").card_number
        db.session.commit()

    page = browsing.page("en-US")
    sign_in(page, cashier)
    page.goto(f"/till/members/{card_number}")
    page.wait_for_function("window.htmx !== undefined")
    mark_page(page)
    form = page.locator("#panel form.checkout")

    form.locator("input[name=gross]").fill("12.345")
    form.locator("button[type=submit]").click()
    expect(page.locator("#gross-error")).to_have_text("Use at most two decimal places.")
    assert_same_page(page)

    # The network drops: the cashier is told, and pressing the button again is safe.
    page.route("**/purchases", lambda route: route.abort())
    form.locator("input[name=gross]").fill("12.50")
    form.locator("button[type=submit]").click()
    expect(page.locator("#request-problem")).to_be_visible()
    expect(page.locator("#request-problem")).to_contain_text("never recorded twice")
    page.unroute("**/purchases")
    form.locator("button[type=submit]").click()
    expect(page.locator("#panel #receipt")).to_be_visible()
    expect(page.locator("#request-problem")).to_be_hidden()
    expect(page.locator('[data-figure="paid"]')).to_have_text("¥12.50")

    # Chromium reports the refused form (422) and the aborted request, and htmx logs the failed
    # request, as console errors; nothing else may appear.
    unexpected = [p for p in browsing.problems
                  if "422" not in p and "ERR_FAILED" not in p and "htmx:sendError" not in p
                  and "htmx:afterRequest" not in p]
    assert unexpected == []
