"""Shared parts of the real-browser tests: Debian's Chromium, the app on a local port, and a page wrapper
that collects console errors and CSP violations. Test modules import the fixtures they use from here.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from portal.extensions import db

from . import factories
from .live_server import LiveServer

from playwright import sync_api as playwright_sync

expect = playwright_sync.expect

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--no-first-run", "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"  # gitignored
TIMEOUT_MS = 5_000

# Runs before any page script and is exempt from the CSP; turns each violation into a console error.
REPORT_CSP_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", function (e) {
  console.error("CSP violation: " + e.violatedDirective + " blocked " + (e.blockedURI || "inline") +
                " at " + e.sourceFile + ":" + e.lineNumber);
});
"""


@pytest.fixture(scope="module")
def browser():
    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: run `make system-deps`"
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def live_server(app):
    with LiveServer(app) as server:
        yield server


class Browsing:
    """Opens pages in browser contexts and collects what went wrong on them."""

    def __init__(self, browser, base_url: str) -> None:
        self.browser = browser
        self.base_url = base_url
        self.problems: list[str] = []
        self.contexts = []

    def page(self, locale: str = "en-US"):
        context = self.browser.new_context(
            base_url=self.base_url, locale=locale, viewport={"width": 1280, "height": 900}
        )
        context.set_default_timeout(TIMEOUT_MS)
        context.add_init_script(REPORT_CSP_VIOLATIONS)
        self.contexts.append(context)
        page = context.new_page()
        page.on("console", self._on_console)
        page.on("pageerror", lambda error: self.problems.append(f"page error on {page.url}: {error}"))
        return page

    def _on_console(self, message) -> None:
        if message.type == "error":
            self.problems.append(f"console error at {message.location.get('url')}: {message.text}")

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture
def browsing(browser, live_server):
    browsing = Browsing(browser, live_server.url)
    yield browsing
    browsing.close()


def sign_in(page, username: str) -> None:
    page.goto("/login")
    page.locator("input[name=username]").fill(username)
    page.locator("input[name=password]").fill(factories.PASSWORD)
    page.locator("main form button[type=submit]").click()
    expect(page).to_have_url(re.compile(r"/till/$"))
    # htmx (a deferred script) takes over the links on load; a click before that is a plain page load.
    page.wait_for_load_state("load")
    page.wait_for_function("window.htmx !== undefined")
    expect(page.locator("#q")).to_be_visible()


def mark_page(page) -> None:
    """Set a flag on window that survives htmx swaps but not a page load."""
    page.evaluate("window.__sameDocument = true")


def assert_same_page(page) -> None:
    assert page.evaluate("window.__sameDocument === true"), "the page was reloaded instead of swapped by htmx"


# --- a phone-sized page ----------------------------------------------------------------------------------

PHONE_WIDTH, PHONE_HEIGHT = 390, 844
SIZE = {"width": PHONE_WIDTH, "height": PHONE_HEIGHT}
PHONE = {"viewport": SIZE, "screen": SIZE, "device_scale_factor": 3, "is_mobile": True, "has_touch": True}


def phone_page(browsing, locale: str = "en-US"):
    """A page in a new phone-sized browser context, reporting into browsing.problems as Browsing.page() does.

    (Browsing.page() always opens a 1280×900 desktop window.)"""
    context = browsing.browser.new_context(base_url=browsing.base_url, locale=locale, **PHONE)
    context.set_default_timeout(TIMEOUT_MS)
    context.add_init_script(REPORT_CSP_VIOLATIONS)
    browsing.contexts.append(context)
    page = context.new_page()

    def on_console(message) -> None:
        if message.type == "error":
            browsing.problems.append(f"console error at {message.location.get('url')}: {message.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: browsing.problems.append(f"page error on {page.url}: {error}"))
    return page


def assert_fits_the_phone(page) -> None:
    """Nothing makes the page scroll sideways on the phone."""
    widths = page.evaluate(
        "({scroll: document.documentElement.scrollWidth, inner: window.innerWidth, "
        "body: document.body.scrollWidth})"
    )
    assert widths["inner"] == PHONE_WIDTH, f"the layout viewport is not the phone's width on {page.url}: {widths}"
    assert widths["scroll"] <= widths["inner"], f"{page.url} overflows horizontally: {widths}"
    assert widths["body"] <= widths["inner"], f"{page.url} overflows horizontally: {widths}"


def assert_clear_of_the_menu(page, last) -> None:
    """Scrolled to the end, the page's last content sits above the fixed bottom menu, not under it."""
    page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
    page.wait_for_function("Math.ceil(window.scrollY + window.innerHeight) >= document.documentElement.scrollHeight")
    menu, end = page.locator("nav.member-nav").bounding_box(), last.bounding_box()
    assert menu and end
    assert end["y"] + end["height"] <= menu["y"], f"{page.url}: the last content {end} is under the menu {menu}"
    page.evaluate("window.scrollTo(0, 0)")


# --- staff who sign in ----------------------------------------------------------------------------------

def _staff(app, role: str) -> str:
    """A member of staff of the test store; returns the username (the password is factories.PASSWORD)."""
    with app.app_context():
        username = factories.staff(role=role).username
        db.session.commit()
    return username


@pytest.fixture
def cashier(app) -> str:
    return _staff(app, "cashier")


@pytest.fixture
def manager(app) -> str:
    return _staff(app, "manager")


@pytest.fixture
def admin(app) -> str:
    return _staff(app, "admin")
