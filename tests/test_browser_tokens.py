"""Register tokens in a real browser: Debian's Chromium driven by Playwright against the app served on a local port.

An admin signs in, opens Register tokens from the top bar, creates a token for "Till 2" and sees it once, uses it
against the API, then revokes it (declining the confirmation first, then accepting it) and sees it marked revoked
while the API refuses it. Creating and revoking are htmx swaps (no full reload), and the page logs no error and no
Content-Security-Policy violation.
"""
from __future__ import annotations

import re

import pytest

from .browser import (  # noqa: F401  (browser, live_server, browsing and staff are fixtures)
    admin, assert_same_page, browser, browsing, expect, live_server, mark_page, sign_in,
)

pytestmark = pytest.mark.slow

LOOKUP = "/api/v1/members/lookup?q=1234"


def call_api(page, token: str):
    """GET the member lookup as a register would, with the token as its bearer."""
    return page.request.get(LOOKUP, headers={"Authorization": f"Bearer {token}"})


def test_admin_creates_a_register_token_uses_it_and_revokes_it(browsing, admin, db_backend, tmp_path):
    page = browsing.page("en-US")
    sign_in(page, admin)

    page.locator("header.topbar nav a", has_text="Manage").click()
    page.locator("header.topbar nav.manage-nav a", has_text="Register tokens").click()
    expect(page).to_have_url(re.compile(r"/manage/api-tokens$"))
    expect(page.locator("main h1")).to_have_text("Register tokens")
    expect(page.locator("main")).to_contain_text("No register has a token yet.")
    page.wait_for_load_state("load")
    page.wait_for_function("window.htmx !== undefined")
    mark_page(page)

    form = page.locator("main form[action$='/manage/api-tokens']")
    form.locator("input[name=name]").fill("Till 2")
    expect(form.locator("select[name=store_id] option:checked")).to_have_text("S001 · Test Store")
    form.locator("button[type=submit]").click()

    notice = page.locator("#new-token")
    expect(notice).to_contain_text("Token for Till 2")
    shown = notice.locator("code.token")
    expect(shown).to_have_text(re.compile(r"^plk_[A-Za-z0-9_-]{40,}$"))
    token = shown.inner_text().strip()
    row = page.locator("table.tokens tbody tr", has_text="Till 2")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("Active")
    expect(row).to_contain_text(token[:10] + "…")
    expect(form.locator("input[name=name]")).to_have_value("")  # ready for the next register
    assert_same_page(page)

    answer = call_api(page, token)
    assert answer.status == 200
    assert answer.json() == {"members": []}

    # Declining the confirmation leaves the token working.
    page.once("dialog", lambda dialog: dialog.dismiss())
    row.get_by_role("button", name="Revoke").click()
    expect(row).to_contain_text("Active")
    assert call_api(page, token).status == 200

    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Revoke").click()
    expect(page.locator("main [role=status]")).to_contain_text("The token for Till 2 is revoked.")
    expect(row).to_contain_text("Revoked")
    expect(row.get_by_role("button", name="Revoke")).to_have_count(0)
    expect(page.locator("#new-token")).to_have_count(0)  # the token is not shown again
    assert token not in page.content()
    assert_same_page(page)

    refused = call_api(page, token)
    assert refused.status == 401
    assert refused.json()["error"]["code"] == "unauthorised"

    # The same page in Chinese: a second browser whose language is Simplified Chinese.
    zh_page = browsing.page("zh-CN")
    sign_in(zh_page, admin)
    zh_page.goto("/manage/api-tokens")
    expect(zh_page.locator("html")).to_have_attribute("lang", "zh-Hans")
    expect(zh_page.locator("header.topbar")).to_contain_text("管理员")
    expect(zh_page.locator("table.tokens tbody tr", has_text="Till 2")).to_have_count(1)
    screenshot = tmp_path / f"register-tokens-zh-{db_backend}.png"
    zh_page.locator("main").screenshot(path=screenshot)
    assert screenshot.stat().st_size > 0

    assert browsing.problems == []
