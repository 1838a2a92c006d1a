"""Hostile input, fuzzed with hypothesis, against every form and every API body (issue 11, "Bad input").

Every POST form of the portal (till, member, manage, sign-in, language) and every body of the cash-register API
is sent values a careless or malicious client could send: negatives, "NaN", "inf", "1e309", huge and full-width
numbers, digits that are digits only to str.isdigit ("²", "①"), decimals with many places, control characters
(NUL, ESC, the right-to-left override), 10 kB strings, markup and htmx attributes, quotes and SQL fragments,
empty and missing fields, repeated fields, fields the form does not have, and valid values, so that some
submissions pass every check and reach the services. Each example starts from a valid submission and spoils
some of its fields.

For every answer the test checks what a user would notice:
- never a 5xx (in tests an unhandled error is raised rather than turned into a 500: it fails the same way);
- a refusal (a 4xx, or a page showing an error beside a field) leaves the books exactly as they were: the number
  and sum of ledger entries and every member's balance;
- after any answer every member's balance still equals the sum of their ledger entries;
- no markup from the input comes back unescaped, in the page that echoes it and, after the fuzzing, in every
  page that lists what was saved (till member page, receipts, member history and complaints, the managers'
  members list, complaint queue and complaint pages, audit log, staff, stores, settings, templates, imports);
  each test also checks that its markup does come back escaped somewhere, so the sweep is not vacuous.
  JSON answers hold the same strings as data, with < > & written as \\u003c \\u003e \\u0026, and nosniff.

Reproducibility: every test runs with derandomize=True and database=None. The same examples run on every
machine and every run (a failure in CI is a failure on a laptop, with the same falsifying example), and nothing
is written into the shared working tree (.hypothesis/). The hostile values that matter most are listed
explicitly (sampled, not hoped for), so a fixed seed loses little. FUZZ_RANDOM=1 explores new examples
locally; FUZZ_EXAMPLES=60 gives every form four times as many (15 is the default's base).

Examples of one test share one database (ledger entries refuse DELETE, so it cannot be rolled back between
them): the checks are invariants that hold whatever earlier examples did, and every example that carries a
one-time form key or Idempotency-Key gets a fresh one (uuid4), so no example replays another's answer.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from portal import api_tokens, complaints, messaging
from portal.extensions import db
from portal.models import (
    ApiToken,
    Campaign,
    Complaint,
    LedgerEntry,
    Member,
    MemberImport,
    MessageTemplate,
    Purchase,
    Return,
    Tier,
)
from portal.rules import load_rules

from . import factories

UTC = timezone.utc
SCALE = int(os.environ.get("FUZZ_EXAMPLES", "15")) / 15  # FUZZ_EXAMPLES=60: four times as many everywhere


def fuzz(examples: int = 15):
    """The settings of every fuzzing test (see the module's docstring for derandomize and database)."""
    return settings(
        max_examples=max(1, round(examples * SCALE)), deadline=None,
        derandomize=not os.environ.get("FUZZ_RANDOM"), database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                               HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


# --- hostile values -------------------------------------------------------------------------------------

MARKUP = (
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '<div hx-get="/logout" hx-trigger="load">',
    '"><svg onload=alert(1)>',
    "' autofocus onfocus='alert(1)",
)
# What must never come back raw: the dangerous part of each markup string (a truncated echo is caught too).
NEEDLES = ("<script>alert(1)", "<img src=x", '<div hx-get="/logout"', "<svg onload", "' autofocus onfocus='")
ESCAPED_SCRIPT = "&lt;script&gt;alert(1)&lt;/script&gt;"
CONTROL = "a\x00b\x1b[2J\u202e\x7f"  # NUL (which PostgreSQL refuses in text), ESC, a right-to-left override, DEL

NUMBERS = (
    "-1", "-0.01", "-100", "0", "0.00", "00", "NaN", "nan", "inf", "-inf", "Infinity", "1e309", "-1e309", "1e3",
    "1E2", str(2**31), str(2**63), str(2**64), str(-2**63), str(10**30), "9" * 400, "１２３", "１２．５０", "－５",
    "¥１００", "12.345", "0.001", "3." + "3" * 30, "1,000.00", "1,00", "1,,000", "¥12.50", "¥", "¥-5", "12.50元",
    " 12 ", "0x10", "1_000", "+5", "--5", "5-", "1/2", "²", "①", "٣", "३", "Ⅻ", "1.", ".5", "..", "1..2",
)
TEXTS = (
    "", " ", "\u3000", "\x00", "a\x00b", "\x1b[2J", "\x1b]0;owned\x07", "\u202e", "\u202egnp.exe", "\ufeff",
    "\u200b", "\r\n", "\t", "\x7f", "\x85", "\u2028", "' OR 1=1 --", "1; DROP TABLE members",
    "'; DROP TABLE ledger_entries; --",
    "admin'--", '"', "'", "`", "\\", "%", "_", "%s%s%s%n", "{0}", "{name}", "{name.__class__}", "{{7*7}}", "${7*7}",
    "%(name)s", "{", "}", "null", "None", "true", "[]", "{}", "💩", "𠀀", "Ｗ", "ǅ", "../../etc/passwd",
    "javascript:alert(1)", "//evil.example", "https://evil.example/", "/\\evil.example", "=1+1", "@SUM(A1)",
)
LONG = ("x" * 10240, MARKUP[0] * 410, "１" * 10240, "9" * 10240, "王" * 5000, "\x00" * 1000)
FRAGMENTS = NUMBERS + TEXTS + MARKUP
ALL_HOSTILE = FRAGMENTS + LONG


class Omit:
    """A field left out of the submission altogether."""

    def __repr__(self):
        return "OMIT"


OMIT = Omit()
FRESH = "<a fresh uuid4 key>"  # replaced by a new key when the example is sent


def hostile_text() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(ALL_HOSTILE),
        st.lists(st.sampled_from(FRAGMENTS), min_size=2, max_size=4).map("".join),
        st.text(max_size=30),
    )


def hostile_value() -> st.SearchStrategy:
    """What a spoiled field holds: a hostile string, nothing at all, or the field sent twice."""
    return st.one_of(hostile_text(), st.just(OMIT), st.lists(hostile_text(), min_size=2, max_size=2))


def form(valid: dict, *, spoil: tuple[str, ...] = ()) -> st.SearchStrategy[dict]:
    """A valid submission with some fields spoiled. `spoil` adds fields the form does not have (a client trying
    to set what the form does not offer); a spoiled csrf_token field stands in for a forged or damaged token."""
    names = sorted(valid) + list(spoil) + ["csrf_token"]

    def merge(base: dict, spoiled: dict) -> dict:
        return {**base, **spoiled}

    return st.builds(merge, st.fixed_dictionaries(valid),
                     st.dictionaries(st.sampled_from(names), hostile_value(), max_size=min(4, len(names))))


def fresh_keys(data: dict) -> dict:
    """The submission as sent: fresh one-time keys, omitted fields left out."""
    sent = {}
    for name, value in data.items():
        if value is OMIT:
            continue
        sent[name] = uuid.uuid4().hex if value == FRESH else value
    return sent


BAD_IDS = ("0", "-1", str(2**31), str(2**64), "1e3", "²", "abc", "1 OR 1=1", "<script>")


def mostly(valid, hostile: st.SearchStrategy | None = None) -> st.SearchStrategy:
    """One of `valid` three times in four, else a hostile value (for a URL's id or card number)."""
    return usually(st.sampled_from(tuple(valid)), hostile if hostile is not None else st.sampled_from(BAD_IDS))


def usually(common: st.SearchStrategy, rare: st.SearchStrategy) -> st.SearchStrategy:
    """`common` three times in four, else `rare` (st.one_of would give each half)."""
    return st.sampled_from((True, True, True, False)).flatmap(lambda take: common if take else rare)


def path(value) -> str:
    """A URL path segment: an id, or a hostile value quoted so that it stays one segment."""
    return quote(str(value), safe="")


def amounts(low_fen: int = 1, high_fen: int = 100_000) -> st.SearchStrategy[str]:
    return st.integers(low_fen, high_fen).map(lambda fen: f"{fen // 100}.{fen % 100:02d}")


def phones() -> st.SearchStrategy[str]:
    return st.integers(0, 10**8 - 1).map(lambda n: f"137{n:08d}")


VALID_NAMES = ("王小明", "Alice Smith", *MARKUP, "O'Brien \"Bob\"", "李 & 王")
FLAGS = ("", "y", "on", "1", "false", "0")


# --- the books ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Books:
    count: int
    total: int
    balances: tuple  # (member id, cached balance), by id
    sums: dict       # member id -> sum of their ledger entries

    @property
    def state(self) -> tuple:
        return self.count, self.total, self.balances

    def unbalanced(self) -> list:
        return [(member_id, balance, self.sums.get(member_id, 0)) for member_id, balance in self.balances
                if balance != self.sums.get(member_id, 0)]


def books(app) -> Books:
    with app.app_context():
        count, total = db.session.execute(
            select(func.count(LedgerEntry.id), func.coalesce(func.sum(LedgerEntry.points), 0))).one()
        balances = tuple(tuple(row) for row in db.session.execute(
            select(Member.id, Member.points_balance).order_by(Member.id)))
        sums = dict(db.session.execute(
            select(LedgerEntry.member_id, func.sum(LedgerEntry.points)).group_by(LedgerEntry.member_id)).all())
        db.session.remove()
    return Books(int(count), int(total), balances, {k: int(v) for k, v in sums.items()})


FIELD_ERROR = re.compile(r'<p class="(?:[^"]* )?error(?: [^"]*)?"[^>]*role="alert"')


def refused(response) -> bool:
    """A 4xx, or a page that shows an error beside a field or above a form."""
    if 400 <= response.status_code < 500:
        return True
    return response.mimetype == "text/html" and bool(FIELD_ERROR.search(response.get_data(as_text=True)))


def assert_no_raw_markup(response, where: str) -> None:
    needles = NEEDLES
    if response.mimetype == "application/json":  # never sniffed as HTML, and no raw tag in it either
        assert response.headers.get("X-Content-Type-Options") == "nosniff", where
        needles = [needle for needle in NEEDLES if "<" in needle]  # a quote breaks out of nothing in JSON
    body = response.get_data(as_text=True)
    for needle in needles:
        assert needle not in body, f"{where}: input markup {needle!r} comes back unescaped"


def check_answer(app, response, before: Books, where: str) -> None:
    assert response.status_code < 500, f"{where}: {response.status_code}"
    assert_no_raw_markup(response, where)
    after = books(app)
    assert not after.unbalanced(), f"{where}: balances differ from their ledger: {after.unbalanced()}"
    if refused(response):
        assert after.state == before.state, f"{where}: refused ({response.status_code}) but the books changed"


def send(app, client, method: str, url: str, *, data=None, htmx: bool = False, **kwargs):
    """One request, checked (see check_answer)."""
    before = books(app)
    if isinstance(data, dict):
        data = fresh_keys(data)
    response = client.open(url, method=method, data=data, htmx=htmx, **kwargs)
    check_answer(app, response, before, f"{method} {url}")
    OUTCOMES.append((method, url, response.status_code, refused(response)))
    return response


OUTCOMES: list[tuple] = []  # what this test's requests came to: (method, url, status, refused)


@pytest.fixture(autouse=True)
def outcomes():
    OUTCOMES.clear()
    yield OUTCOMES
    if os.environ.get("FUZZ_STATS"):
        counts = Counter((status, was_refused) for _method, _url, status, was_refused in OUTCOMES)
        print(f"\n{os.environ.get('PYTEST_CURRENT_TEST', '').split(' ')[0]}: {sorted(counts.items())}")
        if os.environ.get("FUZZ_STATS") == "urls":
            for method, url, status, _refused in OUTCOMES:
                print(f"   {status} {method} {url[:100]!r}")


def assert_both_outcomes(prefix: str = "") -> None:
    """Some examples were refused and some got through to the services: the fuzzing tried both paths."""
    seen = {was_refused for method, url, _status, was_refused in OUTCOMES
            if method == "POST" and url.startswith(prefix)}
    assert seen == {True, False}, f"{prefix or 'every request'}: only {'refusals' if True in seen else 'successes'}"


# --- after the fuzzing: every page that lists what was saved ---------------------------------------------

def _ids(model, *where) -> list[int]:
    return list(db.session.scalars(select(model.id).where(*where).order_by(model.id)))


def sweep(app, login, member_phones: tuple[str, ...] = ()) -> dict[str, str]:
    """Every page that lists or shows what the fuzzing saved, as an admin (and as each given member, with
    factories.PASSWORD), each checked for raw markup; answers {url: body}."""
    staff_client = app.test_client()
    login(staff_client, "admin")
    with app.app_context():
        cards = list(db.session.scalars(select(Member.card_number).where(Member.deleted_at.is_(None))))
        urls = [
            "/till/", "/manage/members", "/manage/members?show=all&q=%3C", "/manage/complaints?status=all",
            "/manage/audit", "/manage/staff?status=all", "/manage/stores", "/manage/settings",
            "/manage/messages/templates", "/manage/messages", "/manage/api-tokens", "/manage/imports",
            "/manage/dashboard", "/manage/fraud", "/manage/complaints/figures",
            *(f"/till/members/{card}" for card in cards),
            *(f"/manage/members/{i}" for i in _ids(Member)),
            *(f"/manage/complaints/{i}" for i in _ids(Complaint)),
            *(f"/till/complaints/{i}" for i in _ids(Complaint)),
            *(f"/till/purchases/{i}" for i in _ids(Purchase)),
            *(f"/till/purchases/{i}/return" for i in _ids(Purchase)),
            *(f"/till/returns/{i}" for i in _ids(Return)),
            *(f"/manage/messages/templates/{i}" for i in _ids(MessageTemplate)),
            *(f"/manage/messages/{i}" for i in _ids(Campaign)),
            *(f"/manage/imports/{i}" for i in _ids(MemberImport)),
        ]
        db.session.remove()
    pages = {}
    for url in urls:
        response = staff_client.get(url)
        assert response.status_code == 200, f"GET {url}: {response.status_code}"
        assert_no_raw_markup(response, f"GET {url}")
        pages[url] = response.get_data(as_text=True)
    for phone in member_phones:
        member_client = app.test_client()
        sign_in_member(member_client, phone)
        with app.app_context():
            member = db.session.scalars(select(Member).where(Member.phone == phone)).one()
            mine = _ids(Complaint, Complaint.member_id == member.id)
            db.session.remove()
        for url in ("/me/", "/me/history", "/me/history?show=purchases", "/me/history?show=tiers",
                    "/me/complaints", "/me/profile", "/me/inbox", "/me/card", "/me/data",
                    *(f"/me/complaints/{i}" for i in mine)):
            response = member_client.get(url)
            assert response.status_code == 200, f"GET {url}: {response.status_code}"
            assert_no_raw_markup(response, f"member GET {url}")
            pages[f"member {phone} {url}"] = response.get_data(as_text=True)
    return pages


def shown_escaped(pages: dict[str, str], needle: str = ESCAPED_SCRIPT) -> list[str]:
    return [url for url, body in pages.items() if needle in body]


# --- people and things to work on -----------------------------------------------------------------------

ALICE = "+8613811112222"
BOB = "+8613933334444"


def sign_in_member(client, phone: str):
    response = client.post("/member/login", data={"phone": phone.removeprefix("+86"),
                                                  "password": factories.PASSWORD})
    assert response.status_code == 303, response.status_code
    return client


def make_member(phone: str, name: str = "Alice Own", purchases: tuple[int, ...] = (100_000,),
                points: tuple[int, ...] = ()) -> dict:
    """An activated member (password factories.PASSWORD) with purchases (fen), some paid partly with points."""
    member = factories.member(name=name, phone=phone, activated=True)
    made = [factories.purchase(member, fen).purchase.id for fen in purchases]
    made += [factories.purchase(member, 20_000, points=used).purchase.id for used in points]
    db.session.commit()
    return {"id": member.id, "card": member.card_number, "phone": phone, "purchases": made}


@pytest.fixture
def alice(app) -> dict:
    with app.app_context():
        return make_member(ALICE, purchases=(100_000, 50_000), points=(300,))


@pytest.fixture
def bob(app) -> dict:
    with app.app_context():
        return make_member(BOB, name="Bob Other", purchases=(80_000,))


def file_complaints(member: dict, how_many: int, *, resolved: bool = False) -> list[int]:
    staff = factories.staff(role="manager")
    ids = []
    for n in range(how_many):
        complaint = complaints.file_complaint(
            db.session, store=factories.store(), category="product_quality", severity="normal",
            description=f"Sour milk {n}", channel="counter", member=db.session.get(Member, member["id"]),
            now=datetime.now(UTC))
        db.session.flush()
        if resolved:
            complaints.resolve(db.session, complaint, staff=staff, body="Refunded", now=datetime.now(UTC))
        ids.append(complaint.id)
    db.session.commit()
    return ids


def other_store() -> int:
    with_store = factories.store("S002", "Second Store")
    db.session.commit()
    return with_store.id


# --- the till -------------------------------------------------------------------------------------------

REGISTER = form({
    "name": st.sampled_from(VALID_NAMES), "phone": phones(),
    "birthday": st.one_of(st.just(""), st.dates(date(1940, 1, 1), date(2005, 12, 31)).map(date.isoformat)),
    "guardian_consent": st.sampled_from(FLAGS), "privacy_consent": st.just("y"),
    "marketing_consent": st.sampled_from(FLAGS),
    "email": st.sampled_from(("", "wang@example.com", "<script>alert(1)</script>@example.cn")),
    "referrer": st.sampled_from(("", ALICE.removeprefix("+86"))),
}, spoil=("points_balance", "tier_id", "store_id"))


def test_till_register_member_form(app, client, login, alice):
    login(client, "cashier")

    @fuzz(25)
    @example(data={"name": MARKUP[0], "phone": "13700000001", "birthday": "", "privacy_consent": "y",
                   "email": "<script>alert(1)</script>@example.cn", "referrer": ""}, htmx=False)
    @example(data={"name": MARKUP[2], "phone": "13700000002", "privacy_consent": "y", "referrer": "13811112222"},
             htmx=True)
    @example(data={"name": CONTROL, "phone": "13700000003", "privacy_consent": "y", "email": CONTROL,
                   "referrer": CONTROL, "birthday": CONTROL}, htmx=False)
    @given(data=REGISTER, htmx=st.booleans())
    def register(data, htmx):
        send(app, client, "POST", "/till/members", data=data, htmx=htmx)

    register()
    assert_both_outcomes()
    pages = sweep(app, login)
    assert shown_escaped(pages), "the registered names with markup are listed nowhere"
    assert ESCAPED_SCRIPT in pages["/manage/members"]


def checkout_form(receipt=st.sampled_from(("", "R-001", *MARKUP))):
    return form({"gross": amounts(1, 50_000_00), "points": st.sampled_from(("", "0", "100", "250", "１００")),
                 "receipt_number": receipt, "idempotency_key": st.just(FRESH)},
                spoil=("member_id", "store_id", "staff_id"))


def test_till_purchase_form(app, client, login, alice, bob):
    login(client, "cashier")
    cards = mostly((alice["card"], alice["card"], bob["card"]), hostile_text())

    @fuzz(25)
    @example(data={"gross": "388.88", "points": "100", "receipt_number": MARKUP[0], "idempotency_key": FRESH},
             card=alice["card"], htmx=False)
    @example(data={"gross": "1e309", "points": "NaN", "receipt_number": "", "idempotency_key": FRESH},
             card=alice["card"], htmx=True)
    @example(data={"gross": CONTROL, "points": CONTROL, "receipt_number": CONTROL, "idempotency_key": CONTROL},
             card=CONTROL, htmx=False)
    @example(data={"gross": "12", "points": "", "receipt_number": CONTROL, "idempotency_key": FRESH},
             card=alice["card"], htmx=False)
    @given(data=checkout_form(), card=cards, htmx=st.booleans())
    def buy(data, card, htmx):
        send(app, client, "POST", f"/till/members/{path(card)}/purchases", data=data, htmx=htmx)

    buy()
    assert_both_outcomes()
    pages = sweep(app, login, member_phones=(ALICE,))
    assert shown_escaped(pages), "the receipt number with markup is shown nowhere"


def test_till_return_form(app, client, login, alice, bob):
    login(client, "cashier")
    purchases = mostly(alice["purchases"] + bob["purchases"])

    @fuzz(25)
    @example(data={"amount": "100.00", "idempotency_key": FRESH}, purchase=alice["purchases"][0], htmx=False)
    @example(data={"amount": "999999999", "idempotency_key": FRESH}, purchase=alice["purchases"][1], htmx=True)
    @given(data=form({"amount": amounts(1, 60_000), "idempotency_key": st.just(FRESH)}), purchase=purchases,
           htmx=st.booleans())
    def give_back(data, purchase, htmx):
        send(app, client, "POST", f"/till/purchases/{path(purchase)}/returns", data=data, htmx=htmx)

    give_back()
    assert_both_outcomes()
    sweep(app, login, member_phones=(ALICE,))


def test_till_activation_code_form(app, client, login, alice):
    login(client, "cashier")
    cards = mostly((alice["card"],), hostile_text())

    @fuzz()
    @example(card=alice["card"], data={}, htmx=False)
    @example(card=alice["card"][:-1] + str((int(alice["card"][-1]) + 1) % 10), data={"code": MARKUP[0]}, htmx=True)
    @given(card=cards, data=form({}, spoil=("code", "member_id", "minutes")), htmx=st.booleans())
    def issue(card, data, htmx):
        send(app, client, "POST", f"/till/members/{path(card)}/activation-code", data=data, htmx=htmx)

    issue()
    assert_both_outcomes()


def test_till_adjustment_form(app, client, login, alice, bob):
    login(client, "manager")
    cards = mostly((alice["card"], alice["card"], bob["card"]), hostile_text())
    adjust = form({
        "points": st.sampled_from(("+50", "-10", "100", "−5", "－５", "-999999999", "1,000")),
        "reason": st.sampled_from(("Goodwill", *MARKUP)), "idempotency_key": st.just(FRESH),
    }, spoil=("member_id", "staff_id", "kind"))

    @fuzz(25)
    @example(data={"points": "+25", "reason": MARKUP[0], "idempotency_key": FRESH}, card=alice["card"], htmx=False)
    @example(data={"points": "-99999999999", "reason": "x", "idempotency_key": FRESH}, card=alice["card"],
             htmx=True)
    @example(data={"points": "5", "reason": CONTROL, "idempotency_key": FRESH}, card=alice["card"], htmx=False)
    @given(data=adjust, card=cards, htmx=st.booleans())
    def adjust_points(data, card, htmx):
        send(app, client, "POST", f"/till/members/{path(card)}/adjustments", data=data, htmx=htmx)

    adjust_points()
    assert_both_outcomes()
    pages = sweep(app, login, member_phones=(ALICE,))
    assert any(url.startswith("member ") for url in shown_escaped(pages)), \
        "the adjustment's reason with markup is not in the member's history"


def test_till_complaint_form(app, client, login, alice):
    login(client, "cashier")
    till_complaint = form({
        "card_number": st.sampled_from(("", alice["card"])),
        "purchase_id": st.sampled_from(("", *map(str, alice["purchases"]), "²", "①", "٣", "99999")),
        "channel": st.sampled_from(("counter", "phone")),
        "category": st.sampled_from(tuple(complaints.CATEGORY_LABELS)),
        "severity": st.sampled_from(tuple(complaints.SEVERITY_LABELS)),
        "description": st.sampled_from(("The milk was sour.", *MARKUP)), "idempotency_key": st.just(FRESH),
    }, spoil=("status", "store_id"))

    @fuzz(25)
    @example(data={"card_number": alice["card"], "purchase_id": "", "channel": "counter", "category": "other",
                   "severity": "high", "description": MARKUP[0], "idempotency_key": FRESH}, htmx=False)
    @example(data={"card_number": "", "purchase_id": "²", "channel": "phone", "category": "other",
                   "severity": "low", "description": MARKUP[2], "idempotency_key": FRESH}, htmx=True)
    @example(data={"card_number": CONTROL, "purchase_id": CONTROL, "channel": "counter", "category": "other",
                   "severity": "low", "description": CONTROL, "idempotency_key": FRESH}, htmx=False)
    @example(data={"card_number": "", "purchase_id": "", "channel": "counter", "category": "other",
                   "severity": "low", "description": CONTROL, "idempotency_key": FRESH}, htmx=False)
    @given(data=till_complaint, htmx=st.booleans())
    def file(data, htmx):
        send(app, client, "POST", "/till/complaints", data=data, htmx=htmx)

    file()
    assert_both_outcomes()
    pages = sweep(app, login, member_phones=(ALICE,))
    assert ESCAPED_SCRIPT in pages["/manage/complaints?status=all"] or any(
        url.startswith("/manage/complaints/") for url in shown_escaped(pages))


def test_till_lookup_and_return_search_queries(app, client, login, alice):
    login(client, "cashier")
    queries = st.one_of(st.sampled_from(("1111", "2222", alice["card"], "13811112222", "Alice", "王")),
                        hostile_text())

    @fuzz(30)
    @example(q=MARKUP[0], url="/till/lookup", htmx=False)
    @example(q="²", url="/till/complaints/new?purchase=", htmx=False)
    @example(q=CONTROL, url="/till/lookup?q=", htmx=True)
    @example(q=CONTROL, url="/till/returns?q=", htmx=False)
    @example(q="\x00", url="/till/returns?q=", htmx=False)
    @given(q=queries, url=st.sampled_from(("/till/lookup?q=", "/till/returns?q=", "/till/complaints/new?card=",
                                           "/till/complaints/new?purchase=", "/till/lookup")),
           htmx=st.booleans())
    def look_up(q, url, htmx):
        target = url + quote(q, safe="") if url.endswith("=") else url
        query = {"q": q} if not url.endswith("=") else None
        send(app, client, "GET", target, query_string=query, htmx=htmx)

    look_up()


# --- the member's phone ---------------------------------------------------------------------------------

def test_member_profile_form(app, client, login, alice):
    sign_in_member(client, ALICE)
    profile = form({
        "name": st.sampled_from(VALID_NAMES),
        "birthday": st.one_of(st.just(""), st.dates(date(1940, 1, 1), date(2020, 12, 31)).map(date.isoformat)),
        "guardian_consent": st.sampled_from(FLAGS), "marketing_consent": st.sampled_from(FLAGS),
        "locale": st.sampled_from(("zh", "en")),
    }, spoil=("points_balance", "phone", "tier_id", "password_hash"))

    @fuzz(25)
    @example(data={"name": MARKUP[0], "birthday": "", "locale": "en"})
    @example(data={"name": CONTROL, "birthday": CONTROL, "locale": CONTROL})
    @given(data=profile)
    def save(data):
        send(app, client, "POST", "/me/profile", data=data)

    save()
    assert_both_outcomes()
    # the last example may have left another name: put the markup back to see it listed
    send(app, client, "POST", "/me/profile", data={"name": MARKUP[0], "locale": "en"})
    pages = sweep(app, login, member_phones=(ALICE,))
    assert ESCAPED_SCRIPT in pages["/manage/members"]


def test_member_password_form(app, client, alice):
    sign_in_member(client, ALICE)
    passwords = st.sampled_from((factories.PASSWORD, "a new password 1", "短密码"))

    def same_confirm(data: dict) -> dict:
        if "confirm" not in data or data["confirm"] == "<same>":
            data = {**data, "confirm": data.get("password", "")}
        return data

    change = form({"current_password": passwords, "password": passwords, "confirm": st.just("<same>")}).map(
        same_confirm)

    @fuzz()
    @example(data={"current_password": factories.PASSWORD, "password": MARKUP[0], "confirm": MARKUP[0]})
    @example(data={"current_password": CONTROL, "password": CONTROL, "confirm": CONTROL})
    @given(data=change)
    def change_password(data):
        send(app, client, "POST", "/me/password", data=data)

    change_password()
    assert_both_outcomes()


def test_member_complaint_form(app, client, login, alice, bob):
    sign_in_member(client, ALICE)
    member_complaint = form({
        "category": st.sampled_from(tuple(complaints.CATEGORY_LABELS)),
        "purchase_id": st.sampled_from(("", *map(str, alice["purchases"]), str(bob["purchases"][0]), "²", "①")),
        "description": st.sampled_from(("The milk was sour.", *MARKUP)), "idempotency_key": st.just(FRESH),
    }, spoil=("member_id", "store_id", "severity", "channel"))

    @fuzz(20)
    @example(data={"category": "other", "purchase_id": str(alice["purchases"][0]), "description": MARKUP[0],
                   "idempotency_key": FRESH})
    @example(data={"category": "other", "purchase_id": str(bob["purchases"][0]), "description": "Not mine",
                   "idempotency_key": FRESH})
    @example(data={"category": "other", "purchase_id": "", "description": CONTROL, "idempotency_key": FRESH})
    @given(data=member_complaint)
    def file(data):
        send(app, client, "POST", "/me/complaints", data=data)

    file()
    assert_both_outcomes()
    with app.app_context():
        assert not db.session.scalar(select(func.count()).select_from(Complaint).where(
            Complaint.purchase_id == bob["purchases"][0])), "a complaint about another member's purchase"
    pages = sweep(app, login, member_phones=(ALICE,))
    assert any(url.startswith("member ") for url in shown_escaped(pages))


def test_member_complaint_rating_and_reopen_forms(app, client, login, alice, bob):
    sign_in_member(client, ALICE)
    with app.app_context():
        mine = file_complaints(alice, 4, resolved=True) + file_complaints(alice, 1)
        theirs = file_complaints(bob, 1, resolved=True)
    ids = mostly(mine + theirs)

    @fuzz(25)
    @example(action="reopen", complaint=mine[0], data={"body": MARKUP[0]})
    @example(action="rating", complaint=mine[1], data={"rating": "5"})
    @example(action="rating", complaint=mine[2], data={"rating": "²"})
    @example(action="reopen", complaint=theirs[0], data={"body": "let me in"})
    @example(action="reopen", complaint=mine[3], data={"body": CONTROL})
    @given(action=st.sampled_from(("rating", "reopen")), complaint=ids,
           data=form({"rating": st.sampled_from(("1", "3", "5", "0", "6")),
                      "body": st.sampled_from(("", "Still broken", *MARKUP))}))
    def act(action, complaint, data):
        send(app, client, "POST", f"/me/complaints/{path(complaint)}/{action}", data=data)

    act()
    assert_both_outcomes()
    with app.app_context():
        other = db.session.get(Complaint, theirs[0])
        assert other.status == "resolved" and other.rating is None, "another member's complaint changed"
    pages = sweep(app, login, member_phones=(ALICE,))
    assert shown_escaped(pages), "the reopening reason with markup is shown nowhere"


def test_member_visit_rating_form(app, client, login, alice, bob):
    sign_in_member(client, ALICE)
    purchases = mostly(alice["purchases"] + bob["purchases"])

    @fuzz(20)
    @example(purchase=alice["purchases"][0], data={"rating": "1", "comment": MARKUP[0]}, htmx=True)
    @example(purchase=bob["purchases"][0], data={"rating": "5", "comment": ""}, htmx=False)
    @example(purchase=alice["purchases"][1], data={"rating": "2", "comment": CONTROL}, htmx=False)
    @given(purchase=purchases, htmx=st.booleans(),
           data=form({"rating": st.sampled_from(("1", "2", "5", "0", "6", "4.5")),
                      "comment": st.sampled_from(("", "Lovely", *MARKUP))}))
    def rate(purchase, data, htmx):
        send(app, client, "POST", f"/me/visits/{path(purchase)}/rating", data=data, htmx=htmx)

    rate()
    assert_both_outcomes()
    pages = sweep(app, login, member_phones=(ALICE,))
    assert shown_escaped(pages), "the low rating's comment with markup is shown nowhere"


def _delivered_offer(member_id: int) -> int:
    """A marketing message with markup in it, in the member's inbox; answers its id."""
    moment = (datetime.now(UTC) - timedelta(days=1)).replace(hour=2, minute=0)  # 10:00 in Shanghai
    member = db.session.get(Member, member_id)
    member.marketing_consent = True
    offer = MessageTemplate(code="fuzz_offer", kind="marketing", name=MARKUP[0], subject_en=MARKUP[0],
                            body_en="Hello {name} " + MARKUP[1], subject_zh=MARKUP[2], body_zh="你好 {name}",
                            created_at=moment, updated_at=moment)
    db.session.add(offer)
    db.session.flush()
    message = messaging.queue(db.session, member=member, template=offer, purpose="offer", now=moment,
                              channels=messaging.Channels())
    db.session.commit()
    messaging.send_due(db.session, now=moment, rules=load_rules(db.session),
                       senders={"inbox": messaging.deliver_to_inbox}, default_zone="Asia/Shanghai")
    return message.id


def test_member_inbox_unsubscribe_data_and_delete_forms(app, client, login, alice):
    sign_in_member(client, ALICE)
    with app.app_context():
        message_id = _delivered_offer(alice["id"])
        token = messaging.unsubscribe_token(message_id, app.config["SECRET_KEY"])
        carol = make_member("+8613700000009", name="Carol Leaving")
    carol_client = sign_in_member(app.test_client(), carol["phone"])
    tokens = mostly((token,), st.one_of(st.sampled_from((f"²{token[1:]}", token + "x", "1." + "0" * 32, "")),
                                        hostile_text()))
    actions = st.sampled_from(("read", "unsubscribe", "unsubscribe-one-click", "data", "delete"))
    data = form({"password": st.sampled_from(("wrong password", factories.PASSWORD)),
                 "understood": st.sampled_from(FLAGS)}, spoil=("List-Unsubscribe",))

    @fuzz(25)
    @example(action="delete", message=message_id, token=token, data={"password": MARKUP[0], "understood": "y"},
             htmx=False)
    @example(action="unsubscribe", message=message_id, token="²" * 5 + ".abc", data={}, htmx=False)
    @example(action="read", message=message_id, token=token, data={}, htmx=True)
    @given(action=actions, message=mostly((message_id,)), token=tokens, data=data, htmx=st.booleans())
    def act(action, message, token, data, htmx):
        if action == "read":
            send(app, client, "POST", f"/me/inbox/{path(message)}/read", data=data, htmx=htmx)
        elif action == "data":
            send(app, client, "POST", "/me/data.json", data=data)
        elif action == "delete":  # Carol's account: Alice's pages are swept afterwards
            send(app, carol_client, "POST", "/me/delete", data=data, htmx=htmx)
        else:
            one_click = action.endswith("one-click")
            if one_click:
                data = {**data, "List-Unsubscribe": "One-Click"}
            send(app, app.test_client(), "GET", f"/u/{path(token)}")
            send(app, app.test_client(), "POST", f"/u/{path(token)}", data=data, csrf=not one_click)

    act()
    pages = sweep(app, login, member_phones=(ALICE,))
    assert shown_escaped(pages), "the offer with markup is shown nowhere"
    assert_both_outcomes()


def test_manager_forms_with_nothing_to_fill_in(app, client, login, alice):
    """Acknowledge and close a complaint, deactivate and reactivate staff, close and reopen a store, archive a
    template, run and cancel a campaign, run an import, revoke a token: forms with only their CSRF token (and
    an offset), fuzzed by the id in their address and by fields they do not have."""
    login(client, "admin")
    with app.app_context():
        db.session.get(Member, alice["id"]).marketing_consent = True
        db.session.commit()
        complaint_ids = file_complaints(alice, 3)
        people = [factories.staff(role="cashier").id, factories.staff(role="manager").id]
        second = other_store()
        token_id = api_tokens.create_token(db.session, name=MARKUP[0], store=factories.store(), staff=None,
                                           now=datetime.now(UTC))[0].id
        db.session.commit()
    made = send(app, client, "POST", "/manage/messages/templates", data={
        "name": MARKUP[0], "subject_zh": "你好", "body_zh": "{name}", "subject_en": "Hi", "body_en": "{name}",
        "preview_member": "", "idempotency_key": FRESH})
    template_id = made.headers["Location"].split("/")[-1].split("?")[0]
    campaign = send(app, client, "POST", "/manage/messages", data={
        "name": MARKUP[0], "template_id": template_id, "when": "later", "send_at": "2030-01-01 10:00",
        "control_percent": "0", "idempotency_key": FRESH})
    assert campaign.status_code == 303, campaign.status_code
    campaign_id = campaign.headers["Location"].split("/")[-1]
    started = send(app, client, "POST", "/manage/imports", content_type="multipart/form-data", data={
        "file": (io.BytesIO(_csv([HEADER, [MARKUP[0], "13755550002", "100", "", "", "", ""]])), "m.csv"),
        "store_id": str(second), "dry_run": "y", "idempotency_key": FRESH})
    assert started.status_code == 303, started.status_code
    import_id = started.headers["Location"].split("/")[-1]
    targets = {
        "complaints/{}/acknowledge": complaint_ids, "complaints/{}/close": complaint_ids,
        "staff/{}/deactivate": people, "staff/{}/reactivate": people,
        "stores/{}/close": [second], "stores/{}/reopen": [second],
        "messages/templates/{}/archive": [template_id], "messages/{}/step": [campaign_id],
        "messages/{}/cancel": [campaign_id], "imports/{}/step": [import_id], "imports/{}/run": [import_id],
        "api-tokens/{}/revoke": [token_id],
    }
    data = form({"offset": st.sampled_from(("", "0", "1", "5"))}, spoil=("status", "role", "active"))

    @fuzz(40)
    @example(url="complaints/{}/acknowledge", target=complaint_ids[0], data={}, htmx=False)
    @example(url="imports/{}/step", target=import_id, data={"offset": str(2**64)}, htmx=True)
    @example(url="messages/{}/step", target=campaign_id, data={"offset": "-1"}, htmx=False)
    @given(url=st.sampled_from(sorted(targets)), target=st.data(), data=data, htmx=st.booleans())
    def act(url, target, data, htmx):
        if not isinstance(target, (int, str)):
            target = target.draw(mostly(targets[url]))
        send(app, client, "POST", "/manage/" + url.format(path(target)), data=data, htmx=htmx)

    act()
    sweep(app, login)
    assert_both_outcomes()


# --- signing in, activation and the language switch -----------------------------------------------------

def test_staff_login_form(app, client):
    with app.app_context():
        username = factories.staff(role="cashier").username
        db.session.commit()
    login_form = form({"username": st.sampled_from((username, "nobody", MARKUP[0])),
                       "password": st.sampled_from((factories.PASSWORD, "wrong password")),
                       "next": st.sampled_from(("", "/till/", "//evil.example", "https://evil.example/",
                                                "javascript:alert(1)", "/\\evil.example"))})

    @fuzz()
    @example(data={"username": username, "password": factories.PASSWORD, "next": "/till/"})
    @example(data={"username": MARKUP[0], "password": "x", "next": MARKUP[1]})
    @example(data={"username": CONTROL, "password": CONTROL, "next": CONTROL})
    @given(data=login_form)
    def sign_in(data):
        response = send(app, client, "POST", "/login", data=data)
        if response.status_code == 303:
            assert_stays_here(response)
        client.post("/logout")

    sign_in()
    assert_both_outcomes()


def assert_stays_here(response) -> None:
    location = response.headers["Location"]
    assert location.startswith("/") and not location.startswith(("//", "/\\")), location


def test_member_login_form(app, client, alice):
    login_form = form({"phone": st.sampled_from((ALICE.removeprefix("+86"), "13800000000",
                                                 "１３８１１１１２２２２")),
                       "password": st.sampled_from((factories.PASSWORD, "wrong password")),
                       "next": st.sampled_from(("", "/me/history", "//evil.example", "https://evil.example/"))})

    @fuzz()
    @example(data={"phone": "138 1111 2222", "password": factories.PASSWORD, "next": "//evil.example"})
    @example(data={"phone": MARKUP[0], "password": MARKUP[1], "next": MARKUP[2]})
    @example(data={"phone": CONTROL, "password": CONTROL, "next": CONTROL})
    @given(data=login_form)
    def sign_in(data):
        response = send(app, client, "POST", "/member/login", data=data)
        if response.status_code == 303:
            assert_stays_here(response)
        client.post("/logout")

    sign_in()
    assert_both_outcomes()


def test_member_activation_form(app, client):
    with app.app_context():
        fresh = factories.member(name="New Member", phone="+8613822223333")
        code = fresh.activation_code
        db.session.commit()
    activation = form({"phone": st.just("13822223333"),
                       "code": st.sampled_from(("000000", "123456", code, "１２３４５６")),
                       "password": st.sampled_from(("a good password", "short")), "confirm": st.just("<same>")})

    def same_confirm(data: dict) -> dict:
        if data.get("confirm") == "<same>":
            data = {**data, "confirm": data.get("password", "")}
        return data

    @fuzz()
    @example(data={"phone": MARKUP[0], "code": MARKUP[1], "password": MARKUP[2], "confirm": MARKUP[3]})
    @example(data={"phone": "13822223333", "code": code, "password": MARKUP[0], "confirm": MARKUP[0]})
    @example(data={"phone": "13822223333", "code": CONTROL, "password": CONTROL, "confirm": CONTROL})
    @given(data=activation.map(same_confirm))
    def activate(data):
        send(app, client, "POST", "/member/activate", data=data)
        client.post("/logout")

    activate()
    assert_both_outcomes()


def test_language_switch_form(app, client):
    @fuzz(20)
    @example(data={"lang": MARKUP[0], "next": "//evil.example"})
    @example(data={"lang": "en", "next": "/me/", "csrf_token": "forged"})
    @given(data=form({"lang": st.sampled_from(("zh", "en")),
                      "next": st.sampled_from(("", "/till/", "//evil.example", "https://evil.example/x",
                                               "javascript:alert(1)", "/\\evil.example", "/\x00"))}))
    def switch(data):
        response = send(app, client, "POST", "/language", data=data)
        assert response.status_code in (303, 400)  # 400: a forged CSRF token
        if response.status_code == 303:
            assert_stays_here(response)

    switch()
    assert_both_outcomes()


# --- the manager area -----------------------------------------------------------------------------------

def _current_rules_form(client) -> dict:
    page = client.get("/manage/settings").get_data(as_text=True)
    values = dict(re.findall(r'<input id="rule-(\w+)" name="\w+" value="([^"]*)"', page))
    for name in re.findall(r'<select id="rule-(\w+)"', page):
        values[name] = re.search(rf'<select id="rule-{name}".*?<option value="([^"]*)" selected', page,
                                 re.S).group(1)
    return values


def test_settings_rules_form(app, client, login, alice):
    login(client, "admin")
    current = _current_rules_form(client)
    assert "earn_rate_milli" in current and "shortfall_policy" in current, current
    rules_form = form({name: st.just(value) for name, value in current.items()})

    @fuzz(20)
    @example(data={**current, "purchase_cap_fen": "1e309", "earn_rate_milli": "NaN"})
    @example(data={**current, "privacy_version": MARKUP[0]})
    @example(data={**current, "privacy_version": CONTROL, "shortfall_policy": CONTROL})
    @given(data=rules_form)
    def save(data):
        send(app, client, "POST", "/manage/settings/rules", data=data)

    save()
    assert_both_outcomes()
    sweep(app, login)


def _current_tiers_form(client) -> dict:
    page = client.get("/manage/settings").get_data(as_text=True)
    return dict(re.findall(r'name="((?:member|silver|gold|diamond)-\w+)"[^>]*value="([^"]*)"', page))


def test_settings_tiers_form(app, client, login, alice):
    login(client, "admin")
    current = _current_tiers_form(client)
    assert "gold-threshold" in current and "member-name_en" in current, current
    tiers_form = form({name: st.just(value) for name, value in current.items()})

    @fuzz(20)
    @example(data={**current, "gold-name_en": MARKUP[0], "silver-name_zh": MARKUP[2]})
    @example(data={**current, "gold-name_en": CONTROL, "silver-threshold": CONTROL})
    @example(data={**current, "gold-multiplier": "1e309", "silver-discount": "NaN", "diamond-threshold": "-1"})
    @given(data=tiers_form)
    def save(data):
        send(app, client, "POST", "/manage/settings/tiers", data=data)

    save()
    assert_both_outcomes()
    send(app, client, "POST", "/manage/settings/tiers", data={**current, "gold-name_en": MARKUP[0]})
    # a gold member, so that the tier's name shows on the member's pages too
    with app.app_context():
        gold = db.session.get(Member, alice["id"])
        gold.tier = db.session.scalars(select(Tier).where(Tier.code == "gold")).one()
        db.session.commit()
    pages = sweep(app, login, member_phones=(ALICE,))
    assert len(shown_escaped(pages)) >= 2, "the tier name with markup is shown nowhere"


def test_complaint_service_levels_form(app, client, login):
    login(client, "admin")

    @fuzz()
    @example(data={"complaint_response_hours": "12", "complaint_resolution_hours": "48"})
    @example(data={"complaint_response_hours": "9" * 10240, "complaint_resolution_hours": "-1"})
    @given(data=form({"complaint_response_hours": st.sampled_from(("24", "1", "48")),
                      "complaint_resolution_hours": st.sampled_from(("72", "100"))}))
    def save(data):
        send(app, client, "POST", "/manage/complaints/service-levels", data=data)

    save()
    assert_both_outcomes()


def test_staff_create_form(app, client, login):
    login(client, "admin")
    with app.app_context():
        stores = [factories.store().id, other_store()]
    staff_form = form({
        "username": st.integers(0, 10**6).map(lambda n: f"user{n}"), "name": st.sampled_from(VALID_NAMES),
        "password": st.just("a long enough password"), "role": st.sampled_from(("cashier", "manager", "admin")),
        "store_id": st.sampled_from(tuple(map(str, stores))),
        "phone": st.one_of(st.just(""), phones()), "idempotency_key": st.just(FRESH),
    }, spoil=("active", "password_hash"))

    @fuzz(20)
    @example(data={"username": "markup1", "name": MARKUP[0], "password": "a long enough password",
                   "role": "cashier", "store_id": str(stores[0]), "phone": "", "idempotency_key": FRESH}, htmx=False)
    @example(data={"username": CONTROL, "name": CONTROL, "password": CONTROL, "role": CONTROL,
                   "store_id": CONTROL, "phone": CONTROL, "idempotency_key": FRESH}, htmx=False)
    @example(data={"username": "control1", "name": CONTROL, "password": "a long enough password",
                   "role": "cashier", "store_id": str(stores[0]), "phone": "", "idempotency_key": FRESH}, htmx=False)
    @given(data=staff_form, htmx=st.booleans())
    def create(data, htmx):
        send(app, client, "POST", "/manage/staff", data=data, htmx=htmx)

    create()
    assert_both_outcomes()
    pages = sweep(app, login)
    assert ESCAPED_SCRIPT in pages["/manage/staff?status=all"]


def test_staff_role_and_password_reset_forms(app, client, login):
    login(client, "admin")
    with app.app_context():
        stores = [factories.store().id, other_store()]
        people = [factories.staff(role="cashier").id, factories.staff(role="manager").id,
                  factories.staff(role="admin").id]
        db.session.commit()
    ids = mostly(people)

    @fuzz(25)
    @example(person=people[0], action="password", data={}, htmx=True)
    @example(person=people[0], action="role", data={"role": "manager", "store_id": str(stores[1])}, htmx=False)
    @example(person=people[1], action="role", data={"role": MARKUP[0], "store_id": CONTROL}, htmx=True)
    @given(person=ids, action=st.sampled_from(("role", "password")), htmx=st.booleans(),
           data=form({"role": st.sampled_from(("cashier", "manager", "admin")),
                      "store_id": st.sampled_from(("", *map(str, stores)))}, spoil=("password", "active")))
    def act(person, action, data, htmx):
        send(app, client, "POST", f"/manage/staff/{path(person)}/{action}", data=data, htmx=htmx)

    act()
    assert_both_outcomes()
    sweep(app, login)


def test_store_create_and_update_forms(app, client, login):
    login(client, "admin")
    with app.app_context():
        stores = [factories.store().id, other_store()]
    store_form = form({"code": st.integers(100, 999).map(lambda n: f"S{n}"), "name": st.sampled_from(VALID_NAMES),
                       "timezone": st.sampled_from(("Asia/Shanghai", "Asia/Hong_Kong", "Europe/London")),
                       "idempotency_key": st.just(FRESH)}, spoil=("active",))
    targets = st.one_of(st.just(None), st.just(None), mostly(stores))

    @fuzz(25)
    @example(store=None, data={"code": "S900", "name": MARKUP[0], "timezone": "Asia/Shanghai",
                               "idempotency_key": FRESH}, htmx=False)
    @example(store=stores[1], data={"name": MARKUP[2], "timezone": "Asia/Shanghai"}, htmx=True)
    @example(store=stores[1], data={"name": "Second", "timezone": MARKUP[1]}, htmx=False)
    @example(store=None, data={"code": CONTROL, "name": CONTROL, "timezone": CONTROL, "idempotency_key": FRESH},
             htmx=False)
    @example(store=stores[1], data={"name": CONTROL, "timezone": "Asia/Shanghai\x00"}, htmx=False)
    @given(store=targets, data=store_form, htmx=st.booleans())
    def save(store, data, htmx):
        url = "/manage/stores" if store is None else f"/manage/stores/{path(store)}"
        send(app, client, "POST", url, data=data, htmx=htmx)

    save()
    assert_both_outcomes()
    pages = sweep(app, login)
    assert ESCAPED_SCRIPT in pages["/manage/stores"]


def test_takings_form(app, client, login):
    login(client, "manager")
    with app.app_context():
        stores = [factories.store().id, other_store()]
    takings = form({"store": st.sampled_from(("", str(stores[0]))),
                    "day": st.dates(date(2026, 1, 1), date(2026, 12, 31)).map(date.isoformat),
                    "amount": amounts(1, 10**9)})

    @fuzz(20)
    @example(data={"store": str(stores[1]), "day": "2026-06-01", "amount": "10.00"}, htmx=False)
    @example(data={"store": "", "day": "9999-99-99", "amount": "1e309"}, htmx=True)
    @example(data={"store": CONTROL, "day": CONTROL, "amount": CONTROL}, htmx=False)
    @example(data={"store": "", "day": "2026-06-01", "amount": "１２，３４５．６７"}, htmx=False)
    @given(data=takings, htmx=st.booleans())
    def record(data, htmx):
        send(app, client, "POST", "/manage/takings", data=data, htmx=htmx)

    record()
    assert_both_outcomes()


def test_complaint_reply_assign_resolve_and_goodwill_forms(app, client, login, alice):
    login(client, "admin")
    with app.app_context():
        ids = file_complaints(alice, 4) + [complaints.file_complaint(
            db.session, store=factories.store(), category="other", severity="low", description="No member",
            channel="counter", now=datetime.now(UTC)).id]
        people = [factories.staff(role="cashier").id, factories.staff(role="manager", store_code="S009").id]
        db.session.commit()
    targets = mostly(ids)
    actions = st.sampled_from(("reply", "assign", "resolve", "goodwill"))
    data = form({"body": st.sampled_from(("We are sorry.", *MARKUP)), "to_member": st.sampled_from(FLAGS),
                 "assignee": st.sampled_from(("", *map(str, people))),
                 "points": st.sampled_from(("50", "0", "100", "1,000")), "idempotency_key": st.just(FRESH)})

    @fuzz(30)
    @example(action="reply", complaint=ids[0], data={"body": MARKUP[0], "to_member": "y"}, htmx=False)
    @example(action="reply", complaint=ids[0], data={"body": MARKUP[2], "to_member": ""}, htmx=True)
    @example(action="goodwill", complaint=ids[1], data={"points": "200", "idempotency_key": FRESH}, htmx=False)
    @example(action="goodwill", complaint=ids[4], data={"points": "200", "idempotency_key": FRESH}, htmx=False)
    @example(action="goodwill", complaint=ids[1], data={"points": "1e309", "idempotency_key": FRESH}, htmx=True)
    @example(action="resolve", complaint=ids[2], data={"body": MARKUP[1]}, htmx=False)
    @example(action="reply", complaint=ids[3], data={"body": CONTROL, "to_member": "y"}, htmx=False)
    @example(action="resolve", complaint=ids[3], data={"body": CONTROL}, htmx=False)
    @example(action="assign", complaint=ids[3], data={"assignee": CONTROL}, htmx=False)
    @given(action=actions, complaint=targets, data=data, htmx=st.booleans())
    def act(action, complaint, data, htmx):
        send(app, client, "POST", f"/manage/complaints/{path(complaint)}/{action}", data=data, htmx=htmx)

    act()
    assert_both_outcomes()
    pages = sweep(app, login, member_phones=(ALICE,))
    assert ESCAPED_SCRIPT in pages[f"/manage/complaints/{ids[0]}"]
    assert any(url.startswith("member ") for url in shown_escaped(pages)), "the reply is not on the member's phone"


def _template_fields(name=st.sampled_from(("Spring offer", *MARKUP))):
    return {"name": name, "subject_zh": st.sampled_from(("你好 {name}", *MARKUP)),
            "body_zh": st.sampled_from(("{name}，你有 {balance} 积分", "{name.__class__}", *MARKUP)),
            "subject_en": st.sampled_from(("Hello {name}", "{0}", *MARKUP)),
            "body_en": st.sampled_from(("You have {balance} points", "{{ }}", "{", *MARKUP)),
            "preview_member": st.sampled_from(("", "13811112222", "1111")), "idempotency_key": st.just(FRESH)}


def test_message_template_create_update_and_preview_forms(app, client, login, alice):
    login(client, "admin")
    with app.app_context():
        alice_member = db.session.get(Member, alice["id"])
        alice_member.name = MARKUP[0]  # a preview shows the member's name in the message
        db.session.commit()
        standard = db.session.scalars(select(MessageTemplate.id).order_by(MessageTemplate.id)).first()
    assert standard is not None
    markup_template = {"name": MARKUP[0], "subject_zh": MARKUP[1], "body_zh": "{name} " + MARKUP[2],
                       "subject_en": MARKUP[3], "body_en": MARKUP[4], "preview_member": "", "idempotency_key": FRESH}
    made = []
    for _ in range(2):  # one that the fuzzing rewrites, one that keeps its markup to be listed
        created = send(app, client, "POST", "/manage/messages/templates", data=markup_template)
        assert created.status_code == 303, created.status_code
        made.append(int(created.headers["Location"].split("/")[-1].split("?")[0]))
    mine = made[0]
    urls = st.sampled_from(("/manage/messages/templates", f"/manage/messages/templates/{mine}",
                            f"/manage/messages/templates/{standard}", "/manage/messages/templates/preview",
                            f"/manage/messages/templates/preview?template={mine}",
                            f"/manage/messages/templates/preview?template={standard}",
                            "/manage/messages/templates/preview?template=²",
                            f"/manage/messages/templates/{2**31}"))

    @fuzz(30)
    @example(url="/manage/messages/templates/preview", data=markup_template, htmx=True)
    @example(url="/manage/messages/templates", data={name: CONTROL for name in markup_template}, htmx=False)
    @example(url=f"/manage/messages/templates/{mine}", data={**{name: CONTROL for name in markup_template},
                                                            "subject_zh": "ok", "body_zh": "ok"}, htmx=False)
    @example(url="/manage/messages/templates/preview", data={**markup_template, "preview_member": CONTROL},
             htmx=False)
    @given(url=urls, data=form(_template_fields()), htmx=st.booleans())
    def save(url, data, htmx):
        send(app, client, "POST", url, data=data, htmx=htmx)

    save()
    assert_both_outcomes()
    pages = sweep(app, login)
    assert ESCAPED_SCRIPT in pages["/manage/messages/templates"]


def test_campaign_create_and_preview_forms(app, client, login, alice):
    login(client, "admin")
    with app.app_context():
        db.session.get(Member, alice["id"]).marketing_consent = True  # an audience to send to
        db.session.commit()
        stores = [factories.store().id, other_store()]
        tier_ids = list(db.session.scalars(select(Tier.id).order_by(Tier.id)))
        db.session.remove()
    template = send(app, client, "POST", "/manage/messages/templates", data={
        "name": MARKUP[0], "subject_zh": "你好 {name}", "body_zh": "{name}", "subject_en": "Hi {name}",
        "body_en": "{name}, you have {balance} points", "preview_member": "", "idempotency_key": FRESH})
    assert template.status_code == 303
    template_id = template.headers["Location"].split("/")[-1].split("?")[0]
    campaign = form({
        "name": st.sampled_from(("Spring", *MARKUP)), "template_id": st.sampled_from((template_id, "", "1")),
        "tier": st.sampled_from(("", "0", str(2**31), *map(str, tier_ids))),
        "store": st.sampled_from(("", *map(str, stores))),
        "segment": st.sampled_from(("", "champions", "at_risk")), "at_risk": st.sampled_from(FLAGS),
        "birthday_month": st.sampled_from(("", "1", "12", "13")), "when": st.sampled_from(("now", "later")),
        "send_at": st.sampled_from(("", "2026-07-01 10:00", "2026-07-01T10:00+08:00")),
        "control_percent": st.sampled_from(("10", "0", "50%")), "idempotency_key": st.just(FRESH),
    })

    @fuzz(25)
    @example(url="/manage/messages", data={"name": MARKUP[0], "template_id": template_id, "when": "now",
                                           "control_percent": "10", "idempotency_key": FRESH}, htmx=False)
    @example(url="/manage/messages/new/audience", data={"template_id": template_id, "control_percent": "1e309",
                                                        "birthday_month": str(2**64)}, htmx=True)
    @example(url="/manage/messages", data={"name": CONTROL, "template_id": template_id, "when": "later",
                                           "send_at": CONTROL, "control_percent": CONTROL, "segment": CONTROL,
                                           "idempotency_key": FRESH}, htmx=False)
    @example(url="/manage/messages", data={"name": CONTROL, "template_id": template_id, "when": "now",
                                           "control_percent": "10", "idempotency_key": FRESH}, htmx=False)
    @given(url=st.sampled_from(("/manage/messages", "/manage/messages/new/audience")), data=campaign,
           htmx=st.booleans())
    def save(url, data, htmx):
        send(app, client, "POST", url, data=data, htmx=htmx)

    save()
    assert_both_outcomes()
    pages = sweep(app, login)
    assert ESCAPED_SCRIPT in pages["/manage/messages"]


def _csv(rows: list[list[str]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerows(rows)
    return out.getvalue().encode("utf-8", "surrogatepass")


HEADER = ["name", "phone", "points", "birthday", "email", "marketing_consent", "card_number"]


def import_rows():
    cell = st.one_of(hostile_text(), st.just(""))
    row = st.fixed_dictionaries({
        "name": st.sampled_from(VALID_NAMES), "phone": phones(), "points": st.sampled_from(("", "0", "120", "1,000")),
        "birthday": st.sampled_from(("", "1990-01-31")), "email": st.just(""),
        "marketing_consent": st.sampled_from(("", "yes", "no")), "card_number": st.just(""),
    })
    spoiled = st.builds(lambda base, changes: [changes.get(name, base[name]) for name in HEADER],
                        row, st.dictionaries(st.sampled_from(HEADER), cell, max_size=3))
    return st.lists(spoiled, min_size=1, max_size=6)


def test_member_import_upload_form(app, client, login):
    login(client, "admin")
    with app.app_context():
        stores = [factories.store().id, other_store()]
    header = st.one_of(st.just(HEADER), st.lists(st.sampled_from(HEADER + ["姓名", "", MARKUP[0]]), max_size=8))
    files = st.one_of(
        st.builds(lambda head, rows: _csv([head, *rows]), header, import_rows()),
        st.sampled_from((b"", b"\xff\xfe\x00\x00", b"\x00" * 100, "姓名,手机\n王,138".encode("gbk"),
                         b"name,phone\n" + b"a," * 5000, b"=cmd|' /C calc'!A0,phone\n")),
        st.binary(max_size=200),
    )
    upload = form({"store_id": st.sampled_from(tuple(map(str, stores))), "dry_run": st.sampled_from(FLAGS),
                   "idempotency_key": st.just(FRESH)})

    @fuzz(20)
    @example(content=_csv([HEADER, [MARKUP[0], "13755550001", "500", "", "", "yes", ""],
                           [MARKUP[2], "not a phone", "-5", "", "", "", ""]]),
             filename="members.csv", data={"store_id": str(stores[0]), "dry_run": "", "idempotency_key": FRESH})
    @given(content=files, filename=st.sampled_from(("members.csv", MARKUP[0], "../../x.csv", "a\x00.csv", "")),
           data=upload)
    def upload_file(content, filename, data):
        body = fresh_keys(data)
        body["file"] = (io.BytesIO(content), filename)
        response = send(app, client, "POST", "/manage/imports", data=body, content_type="multipart/form-data")
        if response.status_code == 303:  # started: run it to the end, checking the books at every step
            url = response.headers["Location"]
            for _ in range(20):
                step = send(app, client, "POST", url + "/step", data={}, htmx=True)
                if "hx-trigger" not in step.get_data(as_text=True):
                    break

    upload_file()
    assert_both_outcomes()
    pages = sweep(app, login)
    assert ESCAPED_SCRIPT in pages["/manage/members"], "the imported name with markup is not listed"


def test_api_token_create_form(app, client, login):
    login(client, "admin")
    with app.app_context():
        stores = [factories.store().id, other_store()]

    @fuzz(20)
    @example(data={"name": MARKUP[0], "store_id": str(stores[0]), "idempotency_key": FRESH})
    @example(data={"name": CONTROL, "store_id": CONTROL, "idempotency_key": FRESH})
    @given(data=form({"name": st.sampled_from(("Till 2", *MARKUP)),
                      "store_id": st.sampled_from(tuple(map(str, stores))), "idempotency_key": st.just(FRESH)},
                     spoil=("token_hash", "revoked_at")))
    def create(data):
        send(app, client, "POST", "/manage/api-tokens", data=data)

    create()
    assert_both_outcomes()
    pages = sweep(app, login)
    assert ESCAPED_SCRIPT in pages["/manage/api-tokens"]


# --- the cash-register API ------------------------------------------------------------------------------

def json_values() -> st.SearchStrategy:
    """Any JSON value, hostile strings and numbers JSON cannot hold included (Python writes NaN, Infinity)."""
    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.sampled_from((2**64, -2**63, 10**30)),
                        st.floats(), hostile_text())
    return st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                         st.dictionaries(st.text(max_size=5), inner, max_size=3)),
                        max_leaves=5)


def api_body(valid: dict) -> st.SearchStrategy[dict]:
    names = sorted(valid) + ["member_id", "store_id", "points_balance"]
    return st.builds(lambda base, spoiled: {k: v for k, v in {**base, **spoiled}.items() if v is not OMIT},
                     st.fixed_dictionaries(valid),
                     st.dictionaries(st.sampled_from(names), st.one_of(json_values(), st.just(OMIT)), max_size=3))


RAW_BODIES = (  # now and then the body is not a JSON object at all
    b"", b"null", b"[]", b"{", b"\xff\xfe", b"1e309", b'{"a": NaN}', b"{}" * 1000, b'"<script>"',
    b"9" * 5000, b'{"redeem_points": ' + b"9" * 5000 + b', "purchase_id": ' + b"9" * 5000 + b"}")


def encode(body) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


@pytest.fixture
def register_token(app) -> str:
    with app.app_context():
        _row, token = api_tokens.create_token(db.session, name="Till 1", store=factories.store(), staff=None,
                                              now=datetime.now(UTC))
        db.session.commit()
    return token


def api_post(app, client, token: str, url: str, body, key: str | None = FRESH):
    headers = {"Authorization": f"Bearer {token}"}
    if key is not None:
        headers["Idempotency-Key"] = uuid.uuid4().hex if key == FRESH else key
    response = send(app, client, "POST", "/api/v1" + url, data=encode(body), content_type="application/json",
                    headers=headers, csrf=False)
    if response.status_code >= 400:
        error = response.get_json()["error"]
        assert set(error) == {"code", "message", "field"}, error
    return response


API_KEYS = st.one_of(st.just(FRESH), st.just(FRESH), st.sampled_from(("", "x", "a" * 300, "' OR 1=1 --", MARKUP[0])))


def test_api_register_member_body(app, client, login, register_token, alice):
    body = usually(api_body({
        "name": st.sampled_from(VALID_NAMES), "phone": phones(),
        "birthday": st.sampled_from(("1990-05-01", "", "2030-01-01")), "email": st.sampled_from(("", "a@b.cn")),
        "privacy_consent": st.just(True), "marketing_consent": st.booleans(), "guardian_consent": st.booleans(),
        "referrer": st.sampled_from((None, ALICE, alice["card"], "0000000000")),
    }), st.sampled_from(RAW_BODIES))

    @fuzz(25)
    @example(body={"name": MARKUP[0], "phone": "13766660001", "privacy_consent": True}, key=FRESH)
    @example(body={"name": "x", "phone": "13766660002", "privacy_consent": "yes",
                   "birthday": "１９９０-０１-０１"},
             key=FRESH)
    @example(body={"name": CONTROL, "phone": "13766660003", "privacy_consent": True, "email": CONTROL,
                   "referrer": CONTROL, "birthday": CONTROL}, key=FRESH)
    @example(body={"name": CONTROL, "phone": "13766660004", "privacy_consent": True}, key=FRESH)
    @given(body=body, key=API_KEYS)
    def register(body, key):
        api_post(app, client, register_token, "/members", body, key)

    register()
    assert_both_outcomes()
    pages = sweep(app, login)
    assert ESCAPED_SCRIPT in pages["/manage/members"]


def test_api_purchase_body(app, client, login, register_token, alice, bob):
    body = usually(api_body({
        "card_number": st.sampled_from((alice["card"], bob["card"], "0000000000")), "gross_amount": amounts(1, 10**7),
        "redeem_points": st.sampled_from((None, 0, 100, 250)),
        "receipt_no": st.sampled_from((None, "R-9", *MARKUP)),
    }), st.sampled_from(RAW_BODIES))

    @fuzz(25)
    @example(body={"card_number": alice["card"], "gross_amount": "12.50", "receipt_no": MARKUP[0]}, key=FRESH)
    @example(body={"card_number": alice["card"], "gross_amount": "1e309", "redeem_points": 2**64}, key=FRESH)
    @example(body={"card_number": alice["card"], "gross_amount": 12.5, "redeem_points": 1.5}, key=FRESH)
    @example(body={"card_number": CONTROL, "gross_amount": CONTROL, "receipt_no": CONTROL}, key=FRESH)
    @example(body={"card_number": alice["card"], "gross_amount": "1", "receipt_no": CONTROL}, key=FRESH)
    @given(body=body, key=API_KEYS)
    def buy(body, key):
        api_post(app, client, register_token, "/purchases", body, key)

    buy()
    assert_both_outcomes()
    pages = sweep(app, login)
    assert shown_escaped(pages), "the receipt number with markup is shown nowhere"


def test_api_return_body(app, client, login, register_token, alice, bob):
    ids = mostly(alice["purchases"] + bob["purchases"])
    body = usually(api_body({"gross_amount": st.one_of(amounts(1, 60_000), st.just(OMIT)),
                               "all": st.sampled_from((OMIT, True, False))}), st.sampled_from(RAW_BODIES))

    @fuzz(25)
    @example(purchase=alice["purchases"][0], body={"gross_amount": "10.00"}, key=FRESH)
    @example(purchase=alice["purchases"][0], body={"all": True, "gross_amount": "1"}, key=FRESH)
    @example(purchase=alice["purchases"][2], body={"all": True}, key=FRESH)
    @given(purchase=ids, body=body, key=API_KEYS)
    def give_back(purchase, body, key):
        api_post(app, client, register_token, f"/purchases/{path(purchase)}/returns", body, key)

    give_back()
    assert_both_outcomes()
    sweep(app, login)


def test_api_complaint_body(app, client, login, register_token, alice):
    body = usually(api_body({
        "card_number": st.sampled_from((OMIT, alice["card"], "0000000000")),
        "category": st.sampled_from(tuple(complaints.CATEGORY_LABELS)),
        "severity": st.sampled_from(tuple(complaints.SEVERITY_LABELS)),
        "description": st.sampled_from(("Sour milk", *MARKUP)),
        "purchase_id": st.sampled_from((OMIT, *alice["purchases"], 2**31, 2**64, -1)),
    }), st.sampled_from(RAW_BODIES))

    @fuzz(25)
    @example(body={"category": "other", "severity": "low", "description": MARKUP[0], "card_number": alice["card"]},
             key=FRESH)
    @example(body={"category": CONTROL, "severity": CONTROL, "description": CONTROL}, key=FRESH)
    @example(body={"category": "other", "severity": "low", "description": CONTROL}, key=FRESH)
    @given(body=body, key=API_KEYS)
    def file(body, key):
        api_post(app, client, register_token, "/complaints", body, key)

    file()
    assert_both_outcomes()
    pages = sweep(app, login, member_phones=(ALICE,))
    assert ESCAPED_SCRIPT in pages["/manage/complaints?status=all"] or any(
        url.startswith("/manage/complaints/") for url in shown_escaped(pages))


def test_api_lookup_query(app, client, register_token, alice):
    queries = st.one_of(st.sampled_from(("1111", "2222", alice["card"], ALICE, "Alice", "王")), hostile_text())

    @fuzz(25)
    @example(q=MARKUP[0], extra={})
    @example(q="\x00", extra={"page": "²"})
    @example(q=CONTROL, extra={})
    @example(q="王\x00", extra={})
    @given(q=queries, extra=st.dictionaries(st.sampled_from(("q", "page", "limit")), hostile_text(), max_size=2))
    def look_up(q, extra):
        response = send(app, client, "GET", "/api/v1/members/lookup", query_string={"q": q, **extra},
                        headers={"Authorization": f"Bearer {register_token}"})
        if response.status_code == 200:
            assert isinstance(response.get_json()["members"], list)

    look_up()
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(ApiToken)) == 1
