"""The members' own area on their phones: activation with the till's code, sign-in and sign-out, home,
the QR card, history, profile, their data, account deletion, the new code from the till, the web app
manifest, and that a member only ever reaches their own data.

Every test runs on SQLite and on PostgreSQL (through the `app` fixture).
"""
from __future__ import annotations

import json
import re
import uuid
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import zxingcpp
from babel.dates import format_date
from PIL import Image
from sqlalchemy import func, select

from portal import accounts, ledger, members, points, returns
from portal.extensions import db
from portal.models import (
    ActivationCode,
    AuditLog,
    AuthSession,
    LedgerEntry,
    Member,
    Purchase,
    Return,
    TierChange,
)
from portal.rules import load_rules

from . import factories
from .conftest import FIXED_NOW
from .helpers import field_error, is_full_page, text_of

UTC = timezone.utc
SHANGHAI = ZoneInfo("Asia/Shanghai")
NEW_PASSWORD = "a brand new secret"
# One message for every refusal of a code, so the page does not tell a stranger which phones are members.
WRONG_CODE = ("This phone and code do not match, or the code is no longer valid. Check it, or ask at the till "
              "for a new code.")
CODE_GONE = TOO_MANY_TRIES = WRONG_CODE
WRONG_LOGIN = "Wrong phone or password. New here? Activate your account first."
ALICE_PHONE = "+8613811112222"
BOB_PHONE = "+8613933334444"

MEMBER_GET_PAGES = ["/me/", "/me/card", "/me/history", "/me/history?show=purchases", "/me/history?show=tiers",
                    "/me/profile", "/me/data", "/me/delete", "/me/inbox"]
MEMBER_POSTS = ["/me/profile", "/me/password", "/me/data.json", "/me/delete", "/me/complaints"]
# Routes about one of the member's own rows (a complaint, a visit, a message); tests/test_member_complaints.py
# and tests/test_member_inbox.py try other members' ids on each of them.
MEMBER_OWNED_ROUTES = {
    ("/me/complaints", "GET"), ("/me/complaints/new", "GET"), ("/me/complaints/<id:complaint_id>", "GET"),
    ("/me/complaints/<id:complaint_id>/reopen", "POST"), ("/me/complaints/<id:complaint_id>/rating", "POST"),
    ("/me/visits/<id:purchase_id>/rating", "POST"),
    ("/me/inbox/<id:message_id>", "GET"), ("/me/inbox/<id:message_id>/read", "POST"),
}


# --- helpers --------------------------------------------------------------------------------------------

def national(e164: str) -> str:
    return e164.removeprefix("+86")


def wrong_code_for(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


def activate(client, phone: str, code: str, password: str = NEW_PASSWORD, confirm: str | None = None):
    return client.post("/member/activate", data={
        "phone": national(phone) if phone.startswith("+86") else phone, "code": code, "password": password,
        "confirm": password if confirm is None else confirm,
    })


def sign_in(client, phone: str, password: str = factories.PASSWORD):
    return client.post("/member/login", data={"phone": national(phone), "password": password})


def cookie_of(client) -> str:
    return client.get_cookie("portal_session").value


def with_cookie(app, cookie: str):
    """A second browser holding a copy of a session cookie."""
    other = app.test_client()
    other.set_cookie("portal_session", cookie)
    return other


def new_member(name: str = "王小明", phone: str | None = None, activated: bool = True, **kwargs) -> dict:
    m = factories.member(name=name, phone=phone, activated=activated, **kwargs)
    db.session.commit()
    return {"id": m.id, "card": m.card_number, "phone": m.phone, "code": m.activation_code, "name": m.name}


def codes_of(member_id: int) -> list[ActivationCode]:
    return list(db.session.scalars(select(ActivationCode).where(ActivationCode.member_id == member_id)
                                   .order_by(ActivationCode.id)))


def audited(action: str) -> list[AuditLog]:
    return list(db.session.scalars(select(AuditLog).where(AuditLog.action == action).order_by(AuditLog.id)))


def grant(member_id: int, amount: int, reason: str, now: datetime | None = None):
    manager = factories.staff(role="manager")
    return points.adjust(db.session, member_id=member_id, staff=manager, store=factories.store(), points=amount,
                         reason=reason, rules=load_rules(db.session), now=now or datetime.now(UTC))


def give_back(purchase: Purchase, gross_fen: int | None, store_code: str = "S001", now: datetime | None = None):
    return returns.record_return(
        db.session, purchase_id=purchase.id, store=factories.store(store_code), staff=None,
        returned_gross_fen=gross_fen, idempotency_key=uuid.uuid4().hex, rules=load_rules(db.session),
        now=now or datetime.now(UTC),
    )


def entry_ids(response) -> list[int]:
    return [int(n) for n in re.findall(r'data-entry="(\d+)"', response.get_data(as_text=True))]


def show_more_url(response) -> str | None:
    match = re.search(r'<a class="button" href="([^"]+)"\s+hx-get=', response.get_data(as_text=True))
    return match.group(1).replace("&amp;", "&") if match else None


def member_row(member_id: int) -> dict:
    member = db.session.get(Member, member_id)
    db.session.refresh(member)
    return {column.key: getattr(member, column.key) for column in Member.__table__.columns}


def medium_date(moment: datetime) -> str:
    """A date as the English pages show it (store time)."""
    return format_date(moment.astimezone(SHANGHAI).date(), "medium", locale="en")


def qr_text(svg: str) -> str:
    """What a scanner reads from the card's QR code: its SVG path (segno draws horizontal strokes) is
    drawn into an image and decoded."""
    size = int(re.search(r'viewBox="0 0 (\d+) \d+"', svg).group(1))
    path = re.search(r'<path stroke="#000" d="([^"]+)"', svg).group(1)
    image = Image.new("L", (size, size), 255)
    x = y = 0.0
    for command, a, b in re.findall(r"([MmHh])(-?[\d.]+)(?:[ ,](-?[\d.]+))?", path):
        if command == "M":
            x, y = float(a), float(b)
        elif command == "m":
            x, y = x + float(a), y + float(b)
        else:
            end = float(a) if command == "H" else x + float(a)
            for column in range(int(min(x, end)), int(max(x, end))):
                image.putpixel((column, int(y)), 0)
            x = end
    image = image.resize((size * 8, size * 8), Image.NEAREST)
    found = zxingcpp.read_barcodes(image)
    assert found, "the QR code does not scan"
    return found[0].text


# --- fixtures -------------------------------------------------------------------------------------------

@pytest.fixture
def fresh(app):
    """A member just registered at the till: a code, no password yet."""
    with app.app_context():
        return new_member(phone=ALICE_PHONE, activated=False)


@pytest.fixture
def alice(app):
    """An activated member (password factories.PASSWORD)."""
    with app.app_context():
        return new_member(name="Alice Own", phone=ALICE_PHONE)


@pytest.fixture
def member_client(client, alice):
    assert sign_in(client, alice["phone"]).status_code == 303
    return client


@pytest.fixture
def cashier(app, login):
    other = app.test_client()
    login(other, "cashier")
    return other


# --- activation -----------------------------------------------------------------------------------------

def test_activation_page_renders(client):
    response = client.get("/member/activate")
    assert response.status_code == 200
    page = text_of(response)
    assert 'name="code"' in page and 'autocomplete="one-time-code"' in page


def test_activation_with_the_tills_code_sets_the_password_and_signs_in(app, client, fresh):
    response = activate(client, fresh["phone"], fresh["code"])
    assert response.status_code == 303 and response.headers["Location"] == "/me/"
    assert "Hello, 王小明" in text_of(client.get("/me/"))
    with app.app_context():
        member = db.session.get(Member, fresh["id"])
        assert member.activated_at is not None and member.password_hash
        [code] = codes_of(fresh["id"])
        assert code.used_at is not None and code.attempts == 0
        assert [row.target for row in audited("member.activate")] == [f"member:{fresh['id']}"]

    assert client.post("/logout").headers["Location"] == "/member/login"
    assert client.get("/me/").status_code == 302
    response = client.post("/member/login", data={"phone": "138 1111 2222", "password": NEW_PASSWORD})
    assert response.status_code == 303 and response.headers["Location"] == "/me/"
    assert client.get("/me/").status_code == 200


def test_activation_accepts_the_phone_as_people_type_it_and_a_full_width_code(client, fresh):
    full_width = "".join(chr(ord(digit) + 0xFEE0) for digit in fresh["code"])
    assert activate(client, "+86 138 1111 2222", f" {full_width} ").status_code == 303


def test_wrong_code_is_refused_beside_the_code_and_counted(app, client, fresh):
    response = activate(client, fresh["phone"], wrong_code_for(fresh["code"]))
    assert response.status_code == 422
    assert field_error(response, "code") == WRONG_CODE
    assert client.get("/me/").status_code == 302
    with app.app_context():
        [code] = codes_of(fresh["id"])
        assert code.attempts == 1 and code.used_at is None
        assert db.session.get(Member, fresh["id"]).password_hash is None


@pytest.mark.config(LOGIN_FAILURES_PER_ACCOUNT=10)  # the code's own limit, apart from the account's
def test_after_five_wrong_tries_even_the_right_code_is_refused(app, client, fresh):
    for _ in range(accounts.MAX_CODE_ATTEMPTS):
        assert field_error(activate(client, fresh["phone"], wrong_code_for(fresh["code"])), "code") == WRONG_CODE
    response = activate(client, fresh["phone"], fresh["code"])
    assert response.status_code == 422
    assert field_error(response, "code") == TOO_MANY_TRIES
    with app.app_context():
        [code] = codes_of(fresh["id"])
        assert code.attempts == accounts.MAX_CODE_ATTEMPTS and code.used_at is None
        assert db.session.get(Member, fresh["id"]).password_hash is None


@pytest.fixture
def registered_at_fixed_time(app):
    with app.app_context():
        return new_member(phone=ALICE_PHONE, activated=False, now=FIXED_NOW)


@pytest.mark.config(FROZEN_NOW=FIXED_NOW + timedelta(minutes=30))
def test_a_code_is_refused_once_30_minutes_have_passed(app, client, registered_at_fixed_time):
    member = registered_at_fixed_time
    response = activate(client, member["phone"], member["code"])
    assert response.status_code == 422
    assert field_error(response, "code") == CODE_GONE
    with app.app_context():
        assert db.session.get(Member, member["id"]).password_hash is None


@pytest.mark.config(FROZEN_NOW=FIXED_NOW + timedelta(minutes=29, seconds=59))
def test_a_code_still_works_in_its_30th_minute(client, registered_at_fixed_time):
    member = registered_at_fixed_time
    assert activate(client, member["phone"], member["code"]).status_code == 303


def test_a_code_from_an_hour_ago_is_refused(app, client):
    with app.app_context():
        member = new_member(phone=ALICE_PHONE, activated=False, now=datetime.now(UTC) - timedelta(hours=1))
    response = activate(client, member["phone"], member["code"])
    assert response.status_code == 422 and field_error(response, "code") == CODE_GONE


def test_a_used_code_cannot_be_used_again(app, client, fresh):
    assert activate(client, fresh["phone"], fresh["code"]).status_code == 303
    client.post("/logout")
    response = activate(client, fresh["phone"], fresh["code"], password="someone else's password")
    assert response.status_code == 422
    assert field_error(response, "code") == CODE_GONE
    assert sign_in(client, fresh["phone"], "someone else's password").status_code == 422
    assert sign_in(client, fresh["phone"], NEW_PASSWORD).status_code == 303


def test_a_new_code_from_the_till_makes_the_older_one_stop_working(app, client, cashier, fresh, monkeypatch):
    # The till draws a code at random; make it one that differs from the old code, so the test always runs.
    monkeypatch.setattr("portal.members.secrets.randbelow", lambda _n: (int(fresh["code"]) + 1) % 1_000_000)
    response = cashier.post(f"/till/members/{fresh['card']}/activation-code", htmx=True)
    new_code = re.search(r'id="activation-code">(\d{6})<', response.get_data(as_text=True)).group(1)
    assert new_code != fresh["code"]
    response = activate(client, fresh["phone"], fresh["code"])
    assert response.status_code == 422
    assert field_error(response, "code") == WRONG_CODE  # checked against the newest code only
    assert activate(client, fresh["phone"], new_code).status_code == 303


@pytest.mark.parametrize("phone", ["13900009999", "+8613900009999"])
def test_an_unknown_phone_gets_the_same_message_as_a_wrong_code(client, fresh, phone):
    response = activate(client, phone, fresh["code"])
    assert response.status_code == 422
    assert field_error(response, "code") == WRONG_CODE


@pytest.mark.parametrize(("password", "confirm", "field", "message"), [
    ("short77", None, "password", "Use at least 8 characters."),
    ("", None, "password", "Choose a password."),
    (NEW_PASSWORD, "something else", "confirm", "The two passwords are not the same."),
])
def test_password_rules_at_activation(app, client, fresh, password, confirm, field, message):
    response = activate(client, fresh["phone"], fresh["code"], password=password, confirm=confirm)
    assert response.status_code == 422
    assert field_error(response, field) == message
    with app.app_context():
        [code] = codes_of(fresh["id"])
        assert code.used_at is None and code.attempts == 0  # a typo in the password does not cost a try
    assert activate(client, fresh["phone"], fresh["code"]).status_code == 303


@pytest.mark.parametrize(("data", "field", "message"), [
    ({"phone": "", "code": "123456"}, "phone", "Enter your mobile number."),
    ({"phone": "12345", "code": "123456"}, "phone", "Enter a mobile number such as 13812345678."),
    ({"phone": "13811112222", "code": ""}, "code", "Enter the code the cashier gave you."),
])
def test_activation_form_errors(client, fresh, data, field, message):
    response = client.post("/member/activate", data={**data, "password": NEW_PASSWORD, "confirm": NEW_PASSWORD})
    assert response.status_code == 422
    assert field_error(response, field) == message


def test_activation_ends_every_other_login_of_the_member(app, client, alice):
    """A forgotten password (or a lost phone): the new code signs out wherever the member still was."""
    sign_in(client, alice["phone"])
    elsewhere = cookie_of(client)
    with app.app_context():
        member = db.session.get(Member, alice["id"])
        code = members.issue_activation_code(db.session, member, staff=None, rules=load_rules(db.session),
                                             secret_key=app.config["SECRET_KEY"], now=datetime.now(UTC))
        db.session.commit()
    phone = app.test_client()
    assert activate(phone, alice["phone"], code).status_code == 303
    assert phone.get("/me/").status_code == 200
    assert with_cookie(app, elsewhere).get("/me/").status_code == 302


@pytest.mark.config(LOGIN_FAILURES_PER_ACCOUNT=3)
def test_activation_attempts_for_one_phone_are_rate_limited(app, client, fresh):
    for _ in range(3):
        assert activate(client, fresh["phone"], wrong_code_for(fresh["code"])).status_code == 422
    response = activate(client, fresh["phone"], fresh["code"])
    assert response.status_code == 429
    assert "Too many failed attempts. Try again in 15 minutes." in text_of(response)
    with app.app_context():
        assert db.session.get(Member, fresh["id"]).password_hash is None


@pytest.mark.config(LOGIN_FAILURES_PER_ACCOUNT=3)
def test_member_sign_in_attempts_for_one_phone_are_rate_limited(client, alice):
    for _ in range(3):
        assert sign_in(client, alice["phone"], "wrong password").status_code == 422
    assert sign_in(client, alice["phone"]).status_code == 429


@pytest.mark.config(LOGIN_FAILURES_PER_ACCOUNT=3)
def test_the_account_rate_limit_cannot_be_dodged_by_writing_the_phone_differently(client, alice):
    for typed in ("13811112222", "138 1111 2222", "+8613811112222"):
        assert client.post("/member/login", data={"phone": typed, "password": "wrong"}).status_code == 422
    response = client.post("/member/login", data={"phone": "138-1111-2222", "password": "wrong"})
    assert response.status_code == 429


# --- sign-in and sign-out -------------------------------------------------------------------------------

def test_member_login_page_renders(client):
    response = client.get("/member/login")
    assert response.status_code == 200
    assert 'type="tel"' in response.get_data(as_text=True)
    assert 'href="/member/activate"' in response.get_data(as_text=True)


@pytest.mark.parametrize(("phone", "password"), [
    (ALICE_PHONE, "wrong password"),
    ("+8613900009999", factories.PASSWORD),
])
def test_wrong_phone_or_password_gets_one_message(client, alice, phone, password):
    response = sign_in(client, phone, password)
    assert response.status_code == 422
    assert field_error(response, "password") == WRONG_LOGIN
    assert client.get("/me/").status_code == 302


def test_a_member_who_never_activated_cannot_sign_in(client, fresh):
    response = sign_in(client, fresh["phone"], "")
    assert response.status_code == 422
    assert sign_in(client, fresh["phone"], factories.PASSWORD).status_code == 422


def test_signed_in_member_is_sent_home_from_the_login_page(member_client):
    response = member_client.get("/member/login")
    assert response.status_code == 302 and response.headers["Location"] == "/me/"
    assert member_client.get("/").headers["Location"] == "/me/"


def test_logout_ends_the_login_on_the_server(app, member_client, alice):
    stolen = cookie_of(member_client)
    assert with_cookie(app, stolen).get("/me/").status_code == 200  # the copy works while signed in
    response = member_client.post("/logout")
    assert response.status_code == 303 and response.headers["Location"] == "/member/login"
    assert member_client.get("/me/").status_code == 302
    thief = with_cookie(app, stolen)
    response = thief.get("/me/")
    assert response.status_code == 302 and response.headers["Location"].startswith("/member/login")
    assert thief.get("/me/data").status_code == 302
    with app.app_context():
        assert db.session.scalars(select(AuthSession.revoked_at).where(AuthSession.member_id == alice["id"])).one()


def test_a_deleted_member_cannot_sign_in(app, client, alice):
    with app.app_context():
        accounts.erase(db.session, db.session.get(Member, alice["id"]), now=datetime.now(UTC))
        db.session.commit()
    response = sign_in(client, alice["phone"])
    assert response.status_code == 422
    assert field_error(response, "password") == WRONG_LOGIN


# --- home -----------------------------------------------------------------------------------------------

def test_home_shows_balance_expiring_points_tier_and_the_next_tier(app, client):
    now = datetime.now(UTC)
    with app.app_context():
        m = factories.member(name="Alice Own", phone=ALICE_PHONE, activated=True, now=now - timedelta(days=716))
        old = factories.purchase(m, 30_000, now=now - timedelta(days=715))  # 300 points, expiring in ~15 days
        factories.purchase(m, 12_000, now=now - timedelta(days=1))  # 120 points, ¥120 of qualifying spend
        db.session.commit()
        lot_end = db.session.scalars(select(LedgerEntry.expires_at)
                                     .where(LedgerEntry.purchase_id == old.purchase.id)).one()
    sign_in(client, ALICE_PHONE)
    response = client.get("/me/")
    assert response.status_code == 200
    page = text_of(response)
    assert "Hello, Alice Own" in page
    assert re.search(r'id="balance">420<', page)
    assert "Worth ¥4.20 at the till" in page
    expiring = re.search(r'id="expiring">(.*?)</div>', page, re.S).group(1)
    assert "Expiring in the next 30 days" in expiring
    # usable until the end of the 730th day: the day before the lot's midnight
    assert f"300 points on {medium_date(lot_end - timedelta(seconds=1))}" in expiring
    assert "120 points" not in expiring
    tier = re.search(r'id="tier">(.*?)</section>', page, re.S).group(1)
    assert "<h2>Member</h2>" in tier
    assert "Member discount</dt><dd>0%" in tier
    assert "Spend ¥880.00 more to reach Silver." in tier
    assert 'value="12"' in tier  # ¥120 of ¥1,000
    assert "Spend in the last 12 months: ¥120.00" in tier
    assert 'id="keeping"' not in page  # nobody loses the lowest tier
    assert "Points for a purchase at Test Store" in page  # recent points


def test_home_without_points_yet(member_client):
    page = text_of(member_client.get("/me/"))
    assert re.search(r'id="balance">0<', page)
    assert 'id="expiring"' not in page
    assert "No points yet." in page


def test_a_silver_member_sees_what_keeps_the_tier(app, client):
    with app.app_context():
        m = factories.member(name="Silvia", phone=ALICE_PHONE, activated=True, tier="silver")
        factories.purchase(m, 20_000)  # 2% off: paid ¥196.00
        db.session.commit()
        held_until = m.tier_since + timedelta(days=365)
    sign_in(client, ALICE_PHONE)
    page = text_of(client.get("/me/"))
    tier = re.search(r'id="tier">(.*?)</section>', page, re.S).group(1)
    assert "<h2>Silver</h2>" in tier
    assert "Member discount</dt><dd>2%" in tier
    assert "Points per ¥1 paid</dt><dd>1.2×" in tier
    assert "Birthday bonus</dt><dd>100 points" in tier
    assert "Spend ¥4,804.00 more to reach Gold." in tier
    assert (f"Silver is yours until {medium_date(held_until)}. To keep it after that, spend ¥804.00 more over "
            "the 12 months before then.") in tier


def test_a_gold_member_whose_spend_keeps_the_tier(app, client):
    with app.app_context():
        m = factories.member(name="Goldie", phone=ALICE_PHONE, activated=True)
        factories.purchase(m, 600_000)  # reaches gold at this purchase
        db.session.commit()
        assert m.tier.code == "gold"
        held_until = m.tier_since + timedelta(days=365)
    sign_in(client, ALICE_PHONE)
    tier = re.search(r'id="tier">(.*?)</section>', text_of(client.get("/me/")), re.S).group(1)
    assert "<h2>Gold</h2>" in tier and "Member discount</dt><dd>5%" in tier
    assert "Spend ¥14,000.00 more to reach Diamond." in tier
    assert f"Gold is yours until {medium_date(held_until)}, and your spend already keeps it after that." in tier


def test_a_diamond_member_is_told_it_is_the_highest_tier(app, client):
    with app.app_context():
        new_member(phone=ALICE_PHONE, tier="diamond")
    sign_in(client, ALICE_PHONE)
    page = text_of(client.get("/me/"))
    assert "You are in our highest tier." in page and "Member discount</dt><dd>8%" in page


# --- card -----------------------------------------------------------------------------------------------

def test_card_shows_the_number_and_a_qr_code_the_till_can_scan(app, member_client, alice, cashier):
    response = member_client.get("/me/card")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    svg = re.search(r"<svg[^>]*>.*?</svg>", page, re.S).group(0)
    assert 'class="qr"' in svg.split(">", 1)[0]
    card = alice["card"]
    assert f"{card[:4]} {card[4:8]} {card[8:]}" in text_of(response)
    assert "Alice Own · Member" in text_of(response)

    scanned = qr_text(svg)
    assert scanned == card
    response = cashier.get(f"/till/lookup?q={scanned}")  # the scanner types the number and Enter
    assert response.status_code == 303 and response.headers["Location"] == f"/till/members/{card}"
    assert "Alice Own" in text_of(cashier.get(response.headers["Location"]))
    # a cashier typing the number as it is printed on the card finds the member too
    typed = cashier.get(f"/till/lookup?q={card[:4]} {card[4:8]} {card[8:]}", htmx=True)
    assert typed.headers["HX-Push-Url"] == f"/till/members/{card}"


# --- history --------------------------------------------------------------------------------------------

@pytest.fixture
def history_member(app):
    """A member with every kind of points movement, newest last."""
    now = datetime.now(UTC)
    with app.app_context():
        factories.store("S002", "Riverside Store")
        m = factories.member(name="Alice Own", phone=ALICE_PHONE, activated=True, now=now - timedelta(days=801))
        factories.purchase(m, 3_000, now=now - timedelta(days=800))  # +30, expired since
        db.session.commit()
        points.expire_all(db.session, now=now)  # -30
        first = factories.purchase(m, 10_000).purchase  # +100
        grant(m.id, 500, "lost receipt of 12 May")  # +500
        paid_with_points = factories.purchase(m, 5_000, points=200).purchase  # -200, +48
        db.session.commit()
        give_back(paid_with_points, None, store_code="S002")  # +200 restored, -48 reversed
        give_back(first, 4_000)  # -40 reversed
        member = db.session.get(Member, m.id)
        member.birthday = date(1990, now.astimezone(SHANGHAI).month, 1)
        db.session.commit()
        assert points.birthday_bonuses(db.session, now=now, rules=load_rules(db.session)) == (1, 0)  # +50
        db.session.commit()
        db.session.refresh(member)
        assert member.points_balance == ledger.ledger_sum(db.session, m.id) == 610
        return {"id": m.id, "card": m.card_number, "first": first.id, "paid_with_points": paid_with_points.id}


def test_history_gives_every_points_movement_with_its_reason_in_words(client, history_member):
    sign_in(client, ALICE_PHONE)
    response = client.get("/me/history")
    assert response.status_code == 200 and is_full_page(response)
    page = text_of(response)
    rows = re.findall(r'<li class="entry" data-entry="\d+">\s*<span>(.*?)<br>.*?<strong[^>]*>([^<]+)</strong>',
                      page, re.S)
    assert [(reason.strip(), amount) for reason, amount in rows] == [
        ("Birthday bonus", "+50"),
        ("Points taken back for a return at Test Store", "-40"),
        ("Points taken back for a return at Riverside Store", "-48"),
        ("Points given back for a return at Riverside Store", "+200"),
        ("Points for a purchase at Test Store", "+48"),
        ("Paid with points at Test Store", "-200"),
        ("Adjusted by the store: lost receipt of 12 May", "+500"),
        ("Points for a purchase at Test Store", "+100"),
        ("Points expired", "-30"),
        ("Points for a purchase at Test Store", "+30"),
    ]
    assert "balance 610" in page
    assert "Show more" not in page


def test_history_of_purchases_shows_each_purchase_with_its_returns(client, history_member):
    sign_in(client, ALICE_PHONE)
    response = client.get("/me/history?show=purchases")
    assert response.status_code == 200
    page = text_of(response)
    assert page.count('class="entry purchase"') == 3
    first = re.search(rf'data-purchase="{history_member["first"]}">(.*?)</li>', page, re.S).group(1)
    assert "Purchase at Test Store" in first and "¥100.00" in first and "100 points earned" in first
    assert re.search(r"Returned ¥40.00 at Test Store on [^,]+, \d{4}, refund ¥40.00", first)
    other = re.search(rf'data-purchase="{history_member["paid_with_points"]}">(.*?)</li>', page, re.S).group(1)
    assert "200 points used" in other and "48 points earned" in other and "¥48.00" in other
    assert re.search(r"Returned ¥50.00 at Riverside Store on [^,]+, \d{4}, refund ¥48.00", other)


def test_history_of_tiers_shows_each_change_and_why(app, client):
    with app.app_context():
        m = factories.member(name="Alice Own", phone=ALICE_PHONE, activated=True)
        sale = factories.purchase(m, 120_000).purchase
        db.session.commit()
        give_back(sale, 50_000)
        db.session.commit()
        assert db.session.scalar(select(func.count()).select_from(TierChange)) == 2
    sign_in(client, ALICE_PHONE)
    page = text_of(client.get("/me/history?show=tiers"))
    assert "Member → Silver" in page and "reached with a purchase" in page
    assert "Silver → Member" in page and "after a return" in page
    assert page.index("Silver → Member") < page.index("Member → Silver")  # newest first


def test_an_empty_history(member_client):
    for view in ("points", "purchases", "tiers"):
        assert "Nothing here yet." in text_of(member_client.get(f"/me/history?show={view}"))


def test_an_unknown_history_view_shows_the_points(member_client):
    response = member_client.get("/me/history?show=secrets")
    assert response.status_code == 200 and 'aria-current="page">Points<' in text_of(response)


def test_history_is_paged_and_htmx_fetches_only_the_next_rows(app, client):
    with app.app_context():
        m = factories.member(name="Alice Own", phone=ALICE_PHONE, activated=True)
        for n in range(1, 24):
            grant(m.id, n, f"note {n:02d}")
        db.session.commit()
        ids = list(db.session.scalars(select(LedgerEntry.id).where(LedgerEntry.member_id == m.id)
                                      .order_by(LedgerEntry.id.desc())))
    sign_in(client, ALICE_PHONE)
    first = client.get("/me/history")
    assert entry_ids(first) == ids[:20]
    page = text_of(first)
    assert "note 23" in page and "note 04" in page and "note 03" not in page
    more = show_more_url(first)
    assert more == f"/me/history?show=points&before={ids[19]}"
    assert "Show more" in page

    rest = client.get(more, htmx=True)
    assert rest.status_code == 200 and not is_full_page(rest)
    assert entry_ids(rest) == ids[20:]
    assert "note 03" in text_of(rest) and "note 01" in text_of(rest) and "Show more" not in text_of(rest)
    assert rest.headers["Vary"].count("HX-Request") == 1

    whole = client.get(more)  # without JavaScript the link opens a page of its own
    assert is_full_page(whole) and entry_ids(whole) == ids[20:]


def test_purchases_are_paged_too(app, client):
    with app.app_context():
        m = factories.member(name="Alice Own", phone=ALICE_PHONE, activated=True)
        for _ in range(21):
            factories.purchase(m, 100)
        db.session.commit()
    sign_in(client, ALICE_PHONE)
    first = client.get("/me/history?show=purchases")
    assert text_of(first).count('class="entry purchase"') == 20
    rest = client.get(show_more_url(first), htmx=True)
    assert not is_full_page(rest) and text_of(rest).count('class="entry purchase"') == 1


@pytest.mark.parametrize("before", ["abc", "-5", "0", "99999999999999", "1e3", "١٢"])
def test_a_nonsense_page_marker_is_ignored_or_harmless(member_client, before):
    assert member_client.get(f"/me/history?before={before}").status_code == 200


def test_a_superscript_digit_as_page_marker_is_ignored(member_client):
    assert member_client.get("/me/history?before=%C2%B2").status_code == 200


# --- profile --------------------------------------------------------------------------------------------

def profile_form(**changes) -> dict:
    data = {"name": "Alice Own", "birthday": "", "locale": "en"}
    data.update(changes)
    return {key: value for key, value in data.items() if value is not None}


def test_profile_page_shows_my_details(member_client, alice):
    response = member_client.get("/me/profile")
    assert response.status_code == 200
    page = text_of(response)
    assert "13811112222" in page and alice["card"] in page and 'value="Alice Own"' in page


def test_changing_name_and_birthday(app, member_client, alice):
    before = datetime.now(UTC)
    response = member_client.post("/me/profile", data=profile_form(name="  Alice New ", birthday="1990-05-20"))
    assert response.status_code == 303 and response.headers["Location"] == "/me/profile?saved=profile"
    assert "Your details are saved." in text_of(member_client.get(response.headers["Location"]))
    with app.app_context():
        member = db.session.get(Member, alice["id"])
        assert (member.name, member.name_key, member.birthday) == ("Alice New", "alice new", date(1990, 5, 20))
        assert member.birthday_changed_at >= before - timedelta(seconds=1)
        [row] = audited("member.profile")
        assert row.target == f"member:{alice['id']}"
        assert json.loads(row.after) == {"name": "Alice New", "birthday": "1990-05-20", "locale": "en"}
    assert "Hello, Alice New" in text_of(member_client.get("/me/"))


def test_saving_the_same_birthday_again_does_not_restart_the_30_days(app, member_client, alice):
    member_client.post("/me/profile", data=profile_form(birthday="1990-05-20"))
    with app.app_context():
        first = db.session.get(Member, alice["id"]).birthday_changed_at
    member_client.post("/me/profile", data=profile_form(name="Alice Two", birthday="1990-05-20"))
    with app.app_context():
        assert db.session.get(Member, alice["id"]).birthday_changed_at == first


def years_ago(years: int, days: int = 0) -> str:
    today = datetime.now(SHANGHAI).date()
    return (today.replace(year=today.year - years) - timedelta(days=days)).isoformat()


@pytest.mark.parametrize(("changes", "field", "message"), [
    ({"birthday": years_ago(10)}, "birthday", "Members under 14 need a parent's or guardian's consent."),
    ({"birthday": (datetime.now(SHANGHAI).date() + timedelta(days=2)).isoformat()}, "birthday",
     "The birthday cannot be in the future."),
    ({"birthday": "1899-12-31"}, "birthday", "Check the year of the birthday."),
    ({"birthday": "20 May 1990"}, "birthday", "Not a valid date value."),
    ({"name": "   "}, "name", "Enter your name."),
    ({"name": "x" * 101}, "name", "Field cannot be longer than 100 characters."),
    ({"locale": "fr"}, "locale", "Not a valid choice."),
])
def test_profile_errors_are_shown_beside_the_field_and_nothing_changes(app, member_client, alice, changes, field,
                                                                       message):
    with app.app_context():
        before = member_row(alice["id"])
    response = member_client.post("/me/profile", data=profile_form(**changes))
    assert response.status_code == 422
    assert field_error(response, field) == message
    assert is_full_page(response)
    with app.app_context():
        assert member_row(alice["id"]) == before


def test_profile_errors_come_back_as_a_fragment_to_htmx(member_client):
    response = member_client.post("/me/profile", data=profile_form(name=""), htmx=True)
    assert response.status_code == 422 and not is_full_page(response)
    assert field_error(response, "name") == "Enter your name."


def test_a_child_under_14_needs_a_guardians_consent(app, member_client, alice):
    response = member_client.post("/me/profile", data=profile_form(birthday=years_ago(14, days=-1)))  # 14 tomorrow
    assert field_error(response, "birthday") == "Members under 14 need a parent's or guardian's consent."
    response = member_client.post("/me/profile", data=profile_form(birthday=years_ago(10), guardian_consent="y"))
    assert response.status_code == 303
    response = member_client.post("/me/profile", data=profile_form(birthday=years_ago(14, days=1)))  # 14 yesterday
    assert response.status_code == 303
    with app.app_context():
        member = db.session.get(Member, alice["id"])
        assert member.birthday.isoformat() == years_ago(14, days=1) and member.guardian_consent is False


def test_the_age_is_counted_on_the_store_date(ctx):
    member = factories.member()
    now = datetime(2026, 6, 14, 17, 0, tzinfo=UTC)  # 01:00 on 15 June in Shanghai
    change = accounts.ProfileChange(name="Kid", birthday=date(2012, 6, 15), guardian_consent=False,
                                    marketing_consent=False, locale="en")
    accounts.update_profile(db.session, member, change, rules=load_rules(db.session), now=now)  # 14 today


def consent_box(client) -> str:
    box = re.search(r'<input[^>]*name="marketing_consent"[^>]*>', text_of(client.get("/me/profile"))).group(0)
    return "checked" if " checked" in box else "unchecked"


def test_marketing_consent_is_withdrawn_as_easily_as_it_was_given(app, member_client, alice):
    response = member_client.post("/me/profile", data=profile_form(marketing_consent="y"))
    assert response.status_code == 303
    with app.app_context():
        member = db.session.get(Member, alice["id"])
        assert member.marketing_consent is True
        given_at = member.marketing_consent_at
    assert consent_box(member_client) == "checked"

    response = member_client.post("/me/profile", data=profile_form())  # one untick, one tap on Save
    assert response.status_code == 303
    with app.app_context():
        member = db.session.get(Member, alice["id"])
        assert member.marketing_consent is False
        assert member.marketing_consent_at is not None and member.marketing_consent_at >= given_at
        assert json.loads(audited("member.profile")[-1].after) == {"marketing_consent": False}
    assert consent_box(member_client) == "unchecked"


def test_language_switch_changes_the_pages_and_is_kept_for_the_next_sign_in(app, member_client, alice):
    assert 'lang="en"' in text_of(member_client.get("/me/"))
    assert member_client.post("/me/profile", data=profile_form(locale="zh")).status_code == 303
    page = text_of(member_client.get("/me/"))
    assert 'lang="zh-Hans"' in page and "积分" in page
    assert member_client.post("/me/profile", data=profile_form(locale="en")).status_code == 303
    assert 'lang="en"' in text_of(member_client.get("/me/"))
    with app.app_context():
        assert db.session.get(Member, alice["id"]).locale == "en"

    chinese_browser = app.test_client()
    chinese_browser.environ_base["HTTP_ACCEPT_LANGUAGE"] = "zh-CN,zh;q=0.9"
    sign_in(chinese_browser, alice["phone"])
    assert 'lang="en"' in text_of(chinese_browser.get("/me/"))  # the member's choice, not the browser's


def test_changing_the_password_keeps_this_login_and_ends_the_others(app, member_client, alice):
    other = app.test_client()
    sign_in(other, alice["phone"])
    assert other.get("/me/").status_code == 200
    response = member_client.post("/me/password", data={
        "current_password": factories.PASSWORD, "password": NEW_PASSWORD, "confirm": NEW_PASSWORD})
    assert response.status_code == 303 and response.headers["Location"] == "/me/profile?saved=password"
    assert "other devices are signed out" in text_of(member_client.get(response.headers["Location"]))
    assert member_client.get("/me/").status_code == 200
    assert other.get("/me/").status_code == 302
    fresh_browser = app.test_client()
    assert sign_in(fresh_browser, alice["phone"]).status_code == 422
    assert sign_in(fresh_browser, alice["phone"], NEW_PASSWORD).status_code == 303
    with app.app_context():
        assert [row.target for row in audited("member.password")] == [f"member:{alice['id']}"]


@pytest.mark.parametrize(("data", "field", "message"), [
    ({"current_password": "not it", "password": NEW_PASSWORD, "confirm": NEW_PASSWORD}, "current_password",
     "This is not your current password."),
    ({"current_password": factories.PASSWORD, "password": "short", "confirm": "short"}, "password",
     "Use at least 8 characters."),
    ({"current_password": factories.PASSWORD, "password": NEW_PASSWORD, "confirm": "other"}, "confirm",
     "The two passwords are not the same."),
    ({"current_password": "", "password": NEW_PASSWORD, "confirm": NEW_PASSWORD}, "current_password",
     "Enter your current password."),
])
def test_password_change_errors(app, member_client, alice, data, field, message):
    with app.app_context():
        before = member_row(alice["id"])["password_hash"]
    response = member_client.post("/me/password", data=data)
    assert response.status_code == 422
    assert field_error(response, field) == message
    with app.app_context():
        assert member_row(alice["id"])["password_hash"] == before
        assert not audited("member.password")


@pytest.mark.config(LOGIN_FAILURES_PER_ACCOUNT=2)
@pytest.mark.parametrize("path", ["/me/password", "/me/delete"])
def test_guessing_the_password_from_a_signed_in_phone_is_limited(member_client, path):
    """A stolen session cannot keep guessing the current password to change it or delete the account."""
    data = {"current_password": "guess one two", "password": "new password 1", "confirm": "new password 1",
            "understood": "y"} if path == "/me/password" else {"password": "guess one two", "understood": "y"}
    for _ in range(2):
        assert member_client.post(path, data=data).status_code == 422
    assert member_client.post(path, data=data).status_code == 429


# --- my data --------------------------------------------------------------------------------------------

def test_my_data_page_offers_the_download_and_the_deletion(member_client):
    page = text_of(member_client.get("/me/data"))
    assert 'action="/me/data.json"' in page and 'href="/me/delete"' in page


def test_download_my_data_as_json(app, client, history_member):
    sign_in(client, ALICE_PHONE)
    response = client.post("/me/data.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.headers["Content-Disposition"] == f'attachment; filename="my-data-{history_member["card"]}.json"'
    assert response.headers["Cache-Control"] == "no-store"
    data = json.loads(response.get_data(as_text=True))
    assert data["member"]["phone"] == ALICE_PHONE
    assert data["member"]["name"] == "Alice Own" and data["member"]["card_number"] == history_member["card"]
    assert data["member"]["points_balance"] == 610
    assert len(data["purchases"]) == 3
    assert {p["gross_fen"] for p in data["purchases"]} == {3_000, 10_000, 5_000}
    assert sum(entry["points"] for entry in data["points"]) == 610
    assert {entry["reason"] for entry in data["points"]} >= {"purchase_earn", "purchase_redeem", "expiry",
                                                              "birthday", "adjustment"}
    assert len(data["returns"]) == 2
    with app.app_context():
        [row] = audited("member.export")
        assert row.target == f"member:{history_member['id']}"


def test_the_download_needs_a_post_with_the_csrf_token(member_client):
    assert member_client.get("/me/data.json").status_code == 405
    assert member_client.post("/me/data.json", csrf=False).status_code == 400


# --- deleting the account -------------------------------------------------------------------------------

def test_delete_asks_for_confirmation_first(member_client):
    response = member_client.get("/me/delete")
    assert response.status_code == 200
    page = text_of(response)
    assert "This cannot be undone." in page and 'name="understood"' in page and 'name="password"' in page


@pytest.mark.parametrize(("data", "field", "message"), [
    ({"password": factories.PASSWORD}, "understood", "Tick the box to confirm."),
    ({"password": "not my password", "understood": "y"}, "password", "This is not your password."),
    ({"password": "", "understood": "y"}, "password", "Enter your password."),
])
def test_delete_is_refused_without_the_box_or_the_right_password(app, member_client, alice, data, field, message):
    with app.app_context():
        before = member_row(alice["id"])
    response = member_client.post("/me/delete", data=data)
    assert response.status_code == 422
    assert field_error(response, field) == message
    with app.app_context():
        assert member_row(alice["id"]) == before
    assert member_client.get("/me/").status_code == 200


def test_deleting_the_account_erases_the_person_and_keeps_the_books(app, client, cashier, history_member):
    sign_in(client, ALICE_PHONE)
    elsewhere = app.test_client()
    sign_in(elsewhere, ALICE_PHONE)
    copied = cookie_of(elsewhere)
    with app.app_context():
        entries_before = list(db.session.execute(
            select(LedgerEntry.id, LedgerEntry.member_id, LedgerEntry.points).order_by(LedgerEntry.id)))
        purchases_before = list(db.session.execute(
            select(Purchase.id, Purchase.member_id, Purchase.paid_fen).order_by(Purchase.id)))

    response = client.post("/me/delete", data={"password": factories.PASSWORD, "understood": "y"})
    assert response.status_code == 303 and response.headers["Location"] == "/member/login?deleted=1"
    assert "Your account is deleted." in text_of(client.get(response.headers["Location"]))
    assert client.get("/me/").status_code == 302
    assert with_cookie(app, copied).get("/me/").status_code == 302

    with app.app_context():
        member = db.session.get(Member, history_member["id"])
        assert (member.name, member.phone, member.email, member.birthday, member.password_hash) == (None,) * 5
        assert member.phone_last4 is None and member.name_key is None and member.locale is None
        assert member.marketing_consent is False and member.deleted_at is not None
        assert list(db.session.execute(
            select(LedgerEntry.id, LedgerEntry.member_id, LedgerEntry.points).order_by(LedgerEntry.id))
        ) == entries_before
        assert list(db.session.execute(
            select(Purchase.id, Purchase.member_id, Purchase.paid_fen).order_by(Purchase.id))) == purchases_before
        assert db.session.scalar(select(func.count()).select_from(Return)) == 2
        assert ledger.ledger_sum(db.session, member.id) == member.points_balance == 610
        assert db.session.scalar(select(func.count()).select_from(AuthSession).where(
            AuthSession.member_id == member.id, AuthSession.revoked_at.is_(None))) == 0
        assert [row.target for row in audited("member.erase")] == [f"member:{member.id}"]

    card = history_member["card"]
    assert "No member found" in text_of(cashier.get(f"/till/lookup?q={card}", htmx=True))
    assert "No member found" in text_of(cashier.get(f"/till/lookup?q={ALICE_PHONE}", htmx=True))
    assert cashier.get(f"/till/members/{card}").status_code == 404
    assert sign_in(app.test_client(), ALICE_PHONE).status_code == 422


def test_a_deleted_members_phone_can_register_again(app, member_client, alice, cashier):
    member_client.post("/me/delete", data={"password": factories.PASSWORD, "understood": "y"})
    response = cashier.post("/till/members", data={"name": "Alice Again", "phone": national(ALICE_PHONE),
                                                   "privacy_consent": "y"})
    assert response.status_code == 303, text_of(response)[:2000]
    with app.app_context():
        assert db.session.scalars(select(Member).where(Member.phone == ALICE_PHONE)).one().id != alice["id"]


def test_an_unused_code_stops_working_when_the_account_is_deleted(app, client, fresh):
    with app.app_context():
        accounts.erase(db.session, db.session.get(Member, fresh["id"]), now=datetime.now(UTC))
        db.session.commit()
    assert activate(client, fresh["phone"], fresh["code"]).status_code == 422


def test_deleting_the_account_erases_where_the_member_signed_in_from(app, member_client, alice):
    member_client.post("/me/delete", data={"password": factories.PASSWORD, "understood": "y"})
    with app.app_context():
        rows = db.session.execute(select(AuthSession.ip, AuthSession.user_agent)
                                  .where(AuthSession.member_id == alice["id"])).all()
        assert all(ip is None and agent is None for ip, agent in rows)


# --- one member never reaches another's data ------------------------------------------------------------

@pytest.fixture
def bob(app, alice):
    """A second member with purchases, a return and a tier change, all after Alice's rows."""
    with app.app_context():
        a = db.session.get(Member, alice["id"])
        factories.purchase(a, 10_000)
        m = factories.member(name="Bob Secret", phone=BOB_PHONE, activated=True)
        sale = factories.purchase(m, 120_000).purchase
        db.session.commit()
        give_back(sale, 1_000)
        db.session.commit()
        return {
            "id": m.id, "card": m.card_number, "phone": m.phone, "name": m.name,
            "entries": list(db.session.scalars(select(LedgerEntry.id).where(LedgerEntry.member_id == m.id))),
            "purchases": list(db.session.scalars(select(Purchase.id).where(Purchase.member_id == m.id))),
        }


def bobs_traces(bob: dict) -> list[str]:
    return [bob["name"], bob["card"], national(bob["phone"]), "139****4444", "¥1,200.00"]


def assert_nothing_of_bob(response, bob: dict) -> None:
    # the language switch echoes the address the member typed (with Bob's ids in it): that is no leak
    page = re.sub(r'<input type="hidden" name="next" value="[^"]*">', "", text_of(response))
    for trace in bobs_traces(bob):
        assert trace not in page, trace
    shown = set(re.findall(r'data-(?:entry|purchase)="(\d+)"', page))
    assert not shown & {str(n) for n in bob["entries"] + bob["purchases"]}


def test_every_member_route_is_covered_by_the_isolation_tests(app):
    routes = {(rule.rule, method) for rule in app.url_map.iter_rules() if rule.endpoint.startswith("member.")
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    covered = ({(path.split("?")[0], "GET") for path in MEMBER_GET_PAGES} | {(path, "POST") for path in MEMBER_POSTS}
               | MEMBER_OWNED_ROUTES)
    assert routes == covered


def test_member_pages_ignore_other_members_ids_in_the_address(app, member_client, alice, bob):
    before = max(bob["entries"] + bob["purchases"]) + 1
    tricks = f"member_id={bob['id']}&card_number={bob['card']}&card={bob['card']}&phone={bob['phone']}&id={bob['id']}"
    for path in MEMBER_GET_PAGES:
        joiner = "&" if "?" in path else "?"
        for query in (tricks, f"{tricks}&before={before}", f"before={bob['entries'][0]}"):
            response = member_client.get(f"{path}{joiner}{query}")
            assert response.status_code == 200, path
            assert_nothing_of_bob(response, bob)
    page = text_of(member_client.get(f"/me/history?{tricks}&before={before}"))
    assert "Points for a purchase at Test Store" in page  # Alice's own entry, and only hers
    assert alice["card"] in text_of(member_client.get(f"/me/card?{tricks}"))
    with app.app_context():
        assert member_row(bob["id"])["name"] == "Bob Secret"


def test_member_actions_ignore_other_members_ids_in_the_form(app, member_client, alice, bob):
    with app.app_context():
        bob_before = member_row(bob["id"])
    tricks = {"member_id": bob["id"], "card_number": bob["card"], "phone": national(bob["phone"]), "id": bob["id"]}

    response = member_client.post(f"/me/profile?member_id={bob['id']}",
                                  data={**tricks, **profile_form(name="Changed by Alice", marketing_consent="y")})
    assert response.status_code == 303
    response = member_client.post(f"/me/password?member_id={bob['id']}", data={
        **tricks, "current_password": factories.PASSWORD, "password": NEW_PASSWORD, "confirm": NEW_PASSWORD})
    assert response.status_code == 303

    response = member_client.post(f"/me/data.json?member_id={bob['id']}&card_number={bob['card']}", data=tricks)
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    for trace in (bob["name"], bob["card"], bob["phone"]):
        assert trace not in body
    data = json.loads(body)
    assert data["member"]["card_number"] == alice["card"] and data["member"]["name"] == "Changed by Alice"
    assert {entry["id"] for entry in data["points"]}.isdisjoint(bob["entries"])
    assert {p["id"] for p in data["purchases"]}.isdisjoint(bob["purchases"])
    assert data["returns"] == [] and data["tier_changes"] == []

    # the same password opens both accounts here: the form's ids must still not choose the account
    response = member_client.post(f"/me/delete?member_id={bob['id']}", data={
        **tricks, "password": NEW_PASSWORD, "understood": "y"})
    assert response.status_code == 303

    with app.app_context():
        assert member_row(bob["id"]) == bob_before
        alice_now = db.session.get(Member, alice["id"])
        assert alice_now.deleted_at is not None and alice_now.name is None
        assert db.session.scalar(select(func.count()).select_from(AuthSession).where(
            AuthSession.member_id == bob["id"])) == 0
    bobs_phone = app.test_client()
    assert sign_in(bobs_phone, bob["phone"]).status_code == 303
    assert "Hello, Bob Secret" in text_of(bobs_phone.get("/me/"))


def test_a_member_cannot_post_for_another_member_at_the_till_or_the_api(app, member_client, alice, bob):
    card = bob["card"]
    for path in ("/till/", f"/till/members/{card}", f"/till/lookup?q={card}", "/till/members/new",
                 "/manage/api-tokens"):
        assert member_client.get(path).status_code == 403, path
    for path in (f"/till/members/{card}/activation-code", f"/till/members/{card}/purchases", "/till/members",
                 f"/till/members/{card}/adjustments", "/manage/api-tokens"):
        assert member_client.post(path, data={"gross": "10", "points": "100000"}).status_code == 403, path
    response = member_client.get(f"/api/v1/members/{card}")
    assert response.status_code == 401 and response.json["error"]["code"] == "unauthorised"
    assert member_client.post("/api/v1/members", json={}).status_code == 401
    with app.app_context():
        assert codes_of(bob["id"])[-1].used_at is None and len(codes_of(bob["id"])) == 1
        assert db.session.scalar(select(func.count()).select_from(Purchase)) == 2


@pytest.mark.parametrize("role", ["cashier", "manager", "admin"])
def test_staff_cannot_open_member_pages(client, login, role):
    login(client, role)
    for path in MEMBER_GET_PAGES:
        assert client.get(path).status_code == 403, path
    for path in MEMBER_POSTS:
        assert client.post(path, data={"name": "x", "password": "x", "understood": "y"}).status_code == 403, path


def test_anonymous_visitors_are_sent_to_the_member_sign_in(client):
    for path in MEMBER_GET_PAGES:
        response = client.get(path)
        assert response.status_code == 302, path
        assert response.headers["Location"].startswith("/member/login?next="), path
    for path in MEMBER_POSTS:
        response = client.post(path, data={"password": "x", "understood": "y"})
        assert response.status_code == 302 and response.headers["Location"].startswith("/member/login"), path
    response = client.get("/me/history?before=5", htmx=True)
    assert response.status_code == 401 and response.headers["HX-Redirect"].startswith("/member/login")


def test_after_sign_in_the_member_returns_to_the_page_asked_for(client, alice):
    location = client.get("/me/card").headers["Location"]
    assert location.startswith("/member/login?next=/me/card")
    next_url = re.search(r'name="next" type="hidden" value="([^"]*)"', text_of(client.get(location))).group(1)
    response = client.post("/member/login", data={"phone": national(alice["phone"]), "password": factories.PASSWORD,
                                                  "next": next_url})
    assert response.status_code == 303 and response.headers["Location"].startswith("/me/card")


# --- a new code from the till ---------------------------------------------------------------------------

def test_cashier_issues_a_new_code_shown_in_the_panel_and_audited(app, client, cashier, alice):
    response = cashier.post(f"/till/members/{alice['card']}/activation-code", htmx=True)
    assert response.status_code == 200 and not is_full_page(response)
    assert response.headers["HX-Push-Url"] == f"/till/members/{alice['card']}"
    page = text_of(response)
    assert "New activation code" in page and "valid for 30 minutes" in page
    code = re.search(r'id="activation-code">(\d{6})<', page).group(1)
    with app.app_context():
        [row] = audited("member.activation_code")
        assert row.target == f"member:{alice['id']}" and row.staff_id is not None
        first, second = codes_of(alice["id"])
        assert first.expires_at <= second.created_at  # the code given at registration stopped working
        assert second.expires_at - second.created_at == timedelta(minutes=30)
        assert second.created_by_id == row.staff_id
    assert 'id="activation-code"' not in text_of(cashier.get(f"/till/members/{alice['card']}"))  # shown once

    response = activate(client, alice["phone"], code)  # forgotten password: a new one is set
    assert response.status_code == 303
    assert sign_in(app.test_client(), alice["phone"]).status_code == 422
    assert sign_in(app.test_client(), alice["phone"], NEW_PASSWORD).status_code == 303


def test_a_new_code_without_htmx_redirects_to_the_member_panel(cashier, alice):
    response = cashier.post(f"/till/members/{alice['card']}/activation-code")
    assert response.status_code == 303 and response.headers["Location"] == f"/till/members/{alice['card']}"
    page = text_of(cashier.get(response.headers["Location"]))
    assert re.search(r'id="activation-code">\d{6}<', page)


def test_the_member_panel_offers_a_new_code(cashier, alice):
    page = text_of(cashier.get(f"/till/members/{alice['card']}"))
    assert f'action="/till/members/{alice["card"]}/activation-code"' in page
    assert "New activation code (forgotten password)" in page


def test_a_new_code_needs_a_staff_login(client, alice):
    response = client.post(f"/till/members/{alice['card']}/activation-code")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")


# --- add to home screen ---------------------------------------------------------------------------------

def test_the_web_app_manifest_names_icons_that_exist(client):
    with client.get("/static/manifest.webmanifest") as response:
        assert response.status_code == 200
        assert response.mimetype == "application/manifest+json"
        manifest = json.loads(response.get_data(as_text=True))
    assert manifest["start_url"] == "/me/" and manifest["display"] == "standalone"
    assert manifest["name"] and manifest["short_name"]
    assert any(icon["type"] == "image/png" and icon["sizes"] == "192x192" for icon in manifest["icons"])
    assert any(icon["type"] == "image/png" and icon["sizes"] == "512x512" for icon in manifest["icons"])
    for icon in manifest["icons"]:
        with client.get(icon["src"]) as response:
            assert response.status_code == 200, icon["src"]
            assert response.mimetype == icon["type"] in ("image/png", "image/svg+xml"), icon["src"]
            if icon["type"] == "image/png":
                from io import BytesIO

                with Image.open(BytesIO(response.get_data())) as image:
                    assert "{}x{}".format(*image.size) == icon["sizes"], icon["src"]


def test_pages_link_the_manifest_and_the_touch_icon(client, member_client):
    for path in ("/member/login", "/me/", "/me/card"):
        page = member_client.get(path, follow_redirects=True).get_data(as_text=True)
        assert '<link rel="manifest" href="/static/manifest.webmanifest">' in page, path
        href = re.search(r'<link rel="apple-touch-icon" href="([^"]+)">', page).group(1)
        with member_client.get(href) as response:
            assert response.status_code == 200 and response.mimetype == "image/png"
