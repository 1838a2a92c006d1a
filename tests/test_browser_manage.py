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


def gbk_file(path, rows: int) -> None:
    """A member list as Excel in China saves it: GBK, Chinese headers; row 3 has a phone that is not one."""
    lines = ["姓名,手机,积分"]
    for number in range(rows):
        phone = "12345" if number == 1 else f"139{number:08d}"
        lines.append(f"会员{number},{phone},{number % 7 * 100}")
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("gbk"))


def test_a_manager_imports_a_gbk_file_dry_run_first_with_the_progress_bar_moving(app, browsing, manager, tmp_path):
    rows = 450  # three steps of 200 rows
    upload = tmp_path / "会员.csv"
    gbk_file(upload, rows)
    points = sum(number % 7 * 100 for number in range(rows) if number != 1)

    page = browsing.page("zh-CN")
    sign_in(page, manager)
    page.goto("/manage/imports")
    page.wait_for_function("window.htmx !== undefined")
    mark_page(page)
    page.locator("input[type=file][name=file]").set_input_files(str(upload))
    page.locator("input[name=dry_run]").check()
    page.locator("main form button[type=submit]").click()

    progress = page.locator("section.import-progress")
    expect(progress.locator("progress")).to_have_attribute("max", str(rows))
    # The bar moves while the steps run (each step answers with the next poll), then stops at the end.
    page.wait_for_function("() => { const p = document.querySelector('section.import-progress progress');"
                           " return p !== null && Number(p.value) > 0 && Number(p.value) < Number(p.max); }")
    expect(progress.locator("[data-figure=processed]")).to_have_text(f"{rows}")
    expect(progress.locator("[data-figure=created]")).to_have_text(f"{rows - 1}")
    expect(progress.locator("[data-figure=refused]")).to_have_text("1")
    expect(progress.locator("#refused-row-3")).to_be_visible()  # the header is row 1, so the second member is row 3
    assert_same_page(page)
    with app.app_context():
        assert db.session.query(Member).count() == 0  # a dry run adds nobody

    page.locator("#import-outcome button[type=submit]").click()
    outcome = page.locator("#import-outcome.success")
    expect(outcome).to_be_visible(timeout=20_000)
    progress = page.locator("section.import-progress")
    expect(progress.locator("[data-figure=created]")).to_have_text(f"{rows - 1}")
    expect(progress.locator("[data-figure=points]")).to_have_text(f"{points:,}")
    assert_same_page(page)
    with app.app_context():
        assert db.session.query(Member).count() == rows - 1
        assert sum(m.points_balance for m in db.session.query(Member)) == points

    assert browsing.problems == []
