"""The manager's console in a real browser (Debian's Chromium through Playwright).

A manager lowers Silver's qualifying spend on the settings page; the member whose spend now reaches it moves up
on their very next purchase, and not before (the purchase itself still gets the old tier's terms).
"""
from __future__ import annotations

import re

import pytest

from portal.extensions import db
from portal.models import Member

from . import factories
from .browser import (  # noqa: F401  (browser, live_server, browsing and staff are fixtures)
    assert_same_page, browser, browsing, expect, live_server, manager, mark_page, sign_in,
)

pytestmark = pytest.mark.slow


def test_a_manager_lowers_a_tier_threshold_and_a_member_moves_up_on_the_next_purchase(app, browsing, manager):
    with app.app_context():
        member = factories.member(name="Han Meimei")
        factories.purchase(member, 80_000)  # ¥800.00 of qualifying spend: below Silver's ¥1,000
        db.session.commit()
        card_number, member_id = member.card_number, member.id

    page = browsing.page("en-US")
    sign_in(page, manager)
    page.locator("header nav a", has_text="Manage").click()
    page.locator("header nav.manage-nav a", has_text="Settings").click()
    expect(page).to_have_url(re.compile(r"/manage/settings$"))
    threshold = page.locator("#silver-threshold")
    expect(threshold).to_have_value("1000.00")

    # A threshold out of order is refused beside the field and nothing changes.
    threshold.fill("6000")
    page.get_by_role("button", name="Save the tiers").click()
    expect(page.locator("td.has-error")).to_have_count(1)
    expect(page.locator("#silver-threshold")).to_have_value("6000")

    page.locator("#silver-threshold").fill("900")
    page.get_by_role("button", name="Save the tiers").click()
    expect(page.locator(".notice.success")).to_contain_text("The tiers are saved")
    expect(page.locator("#silver-threshold")).to_have_value("900.00")
    with app.app_context():
        assert db.session.get(Member, member_id).tier.code == "member"  # a setting moves nobody by itself

    page.locator("header nav a", has_text="Till").click()
    page.wait_for_function("window.htmx !== undefined")
    mark_page(page)
    page.locator("#q").press_sequentially(card_number)
    panel = page.locator(f"#panel .member-panel[data-card='{card_number}']")
    expect(panel.locator(".member-head .tier")).to_have_text("Member")
    panel.locator("form.checkout input[name=gross]").fill("150")
    panel.locator("form.checkout button[type=submit]").click()

    receipt = page.locator("#panel #receipt")
    # Still the Member tier's terms for this purchase: no discount, 1 point per ¥1.
    expect(receipt.locator("[data-figure=discount]")).to_have_text("−¥0.00")
    expect(receipt.locator("[data-figure=paid]")).to_have_text("¥150.00")
    expect(receipt.locator("[data-figure=earned]")).to_have_text("+150")
    # ¥800 + ¥150 = ¥950 reaches the new ¥900 threshold: Silver from the next purchase.
    expect(receipt.locator("[data-figure=tier-change]")).to_contain_text("Silver")
    assert_same_page(page)
    with app.app_context():
        assert db.session.get(Member, member_id).tier.code == "silver"

    # Chromium logs the refused form's answer (422, as every refused form answers) as a console error: that one
    # is expected, anything else is a problem.
    refused = re.compile(r"/manage/settings/tiers: Failed to load resource: the server responded with a status of 422\b")
    assert [problem for problem in browsing.problems if not refused.search(problem)] == []
    assert len(browsing.problems) == 1, browsing.problems
