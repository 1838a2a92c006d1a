"""The member's inbox on the phone, the one-tap unsubscribe link, consent withdrawal, and the service messages
sent where things happen (a reply to a complaint, a new activation code).

Messages are queued with messaging.queue and delivered by the outbox (messaging.send_due), as in production.
Every test runs on SQLite and on PostgreSQL (through the `app` fixture)."""
from __future__ import annotations

import itertools
import re
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from portal import accounts, complaints, messaging, senders
from portal.extensions import db
from portal.models import AuditLog, Member, Message, MessageDelivery, MessageTemplate
from portal.rules import load_rules

from . import factories
from .helpers import is_full_page, text_of

UTC = timezone.utc
# 10:00 in Shanghai: outside the quiet hours, so marketing goes out at once.
DAYTIME = datetime(2026, 6, 15, 2, 0, tzinfo=UTC)
ALICE_PHONE = "+8613811112222"
BOB_PHONE = "+8613933334444"
SECRET = "test-secret-key"  # TestConfig.SECRET_KEY
_numbers = itertools.count(1)


# --- helpers --------------------------------------------------------------------------------------------

def make_member(name: str, phone: str, consent: bool = False) -> dict:
    member = factories.member(name=name, phone=phone, activated=True, now=DAYTIME - timedelta(days=30))
    member.locale = "en"
    member.marketing_consent = consent
    db.session.commit()
    return {"id": member.id, "phone": phone, "card": member.card_number, "name": name}


def template(kind: str = "service", subject: str | None = None, body: str = "Hello {name}.") -> MessageTemplate:
    n = next(_numbers)
    row = MessageTemplate(code=f"test_{n}", kind=kind, name=f"Test {n}", subject_en=subject or f"Subject {n}",
                          body_en=body, subject_zh=subject or f"主题 {n}", body_zh=body, created_at=DAYTIME,
                          updated_at=DAYTIME)
    db.session.add(row)
    db.session.flush()
    return row


def queue(member_id: int, subject: str, *, kind: str = "service", body: str = "Hello {name}.",
          at: datetime = DAYTIME, not_before: datetime | None = None) -> int:
    message = messaging.queue(db.session, member=db.session.get(Member, member_id),
                              template=template(kind, subject, body), purpose="test", now=at,
                              channels=messaging.Channels(), not_before=not_before)
    assert message is not None
    db.session.commit()
    return message.id


def send(at: datetime = DAYTIME) -> messaging.OutboxRun:
    return messaging.send_due(db.session, now=at, rules=load_rules(db.session),
                              senders={"inbox": messaging.deliver_to_inbox}, default_zone="Asia/Shanghai")


def delivered(member_id: int, subject: str, **kwargs) -> int:
    """A message that reached the member's inbox at `at`."""
    message_id = queue(member_id, subject, **kwargs)
    send(kwargs.get("at", DAYTIME))
    return message_id


def statuses(message_id: int) -> dict[str, str]:
    return {d.channel: d.status for d in db.session.scalars(
        select(MessageDelivery).where(MessageDelivery.message_id == message_id))}


def sign_in(client, phone: str):
    response = client.post("/member/login", data={"phone": phone.removeprefix("+86"), "password": factories.PASSWORD})
    assert response.status_code == 303
    return client


def shown_messages(response) -> list[int]:
    return [int(n) for n in re.findall(r'<li class="entry message[^"]*" data-message="(\d+)"', text_of(response))]


def unread_rows(response) -> list[int]:
    return [int(n) for n in re.findall(r'<li class="entry message unread" data-message="(\d+)"', text_of(response))]


def badge(response) -> str:
    """What the Inbox entry of the bottom menu shows beside its name ('' without unread messages)."""
    match = re.search(r'<span id="inbox-badge"[^>]*>(.*?)</span>\s*</a>', text_of(response), re.S)
    assert match, "no inbox badge in the menu"
    shown = re.search(r'<span aria-hidden="true">([^<]*)</span>', match.group(1))
    return shown.group(1) if shown else ""


def home_notice(response) -> str | None:
    match = re.search(r'id="inbox-unread"><a href="/me/inbox">([^<]*)</a>', text_of(response))
    return match.group(1) if match else None


def token_for(message_id: int) -> str:
    return messaging.unsubscribe_token(message_id, SECRET)


def consent_of(member_id: int) -> bool:
    db.session.expire_all()
    return db.session.get(Member, member_id).marketing_consent


@pytest.fixture
def alice(app):
    with app.app_context():
        return make_member("Alice Own", ALICE_PHONE, consent=True)


@pytest.fixture
def bob(app):
    with app.app_context():
        return make_member("Bob Secret", BOB_PHONE, consent=True)


@pytest.fixture
def alice_client(client, alice):
    return sign_in(client, alice["phone"])


# --- the inbox ------------------------------------------------------------------------------------------

def test_the_inbox_shows_only_messages_whose_inbox_delivery_was_sent(app, alice_client, alice):
    with app.app_context():
        arrived = delivered(alice["id"], "Your tier changed")
        waiting = queue(alice["id"], "Later notice", not_before=DAYTIME + timedelta(days=2))
        send()  # not due yet: still queued
        cancelled = queue(alice["id"], "Withdrawn offer", kind="marketing")
        messaging.withdraw_marketing(db.session, alice["id"], now=DAYTIME)
        db.session.commit()
        assert statuses(waiting) == {"inbox": "queued"} and statuses(cancelled) == {"inbox": "cancelled"}

    response = alice_client.get("/me/inbox")
    page = text_of(response)
    assert response.status_code == 200
    assert shown_messages(response) == [arrived]
    assert "Your tier changed" in page and "Hello Alice Own." in page
    assert "Later notice" not in page and "Withdrawn offer" not in page
    for hidden in (waiting, cancelled):
        assert alice_client.get(f"/me/inbox/{hidden}").status_code == 404


def test_an_empty_inbox_says_so(alice_client):
    response = alice_client.get("/me/inbox")
    assert "No messages yet." in text_of(response) and shown_messages(response) == []
    assert 'aria-current="page">Inbox' in text_of(response)


def test_the_inbox_is_newest_first_by_arrival_and_pages_with_htmx(app, alice_client, alice):
    with app.app_context():
        # queued first but held back a day: it arrives last, so it comes first
        late = queue(alice["id"], "Held back", not_before=DAYTIME + timedelta(days=1))
        ids = [delivered(alice["id"], f"Message {n}", at=DAYTIME + timedelta(minutes=n)) for n in range(1, 25)]
        send(DAYTIME + timedelta(days=1))
    newest_first = [late] + ids[::-1]

    first = alice_client.get("/me/inbox")
    assert shown_messages(first) == newest_first[:20]
    more = re.search(r'hx-get="(/me/inbox\?before=(\d+))"', text_of(first))
    assert more and int(more.group(2)) == newest_first[19]

    rows = alice_client.get(more.group(1), htmx=True)
    assert rows.status_code == 200 and not is_full_page(rows)
    assert "HX-Request" in rows.headers["Vary"]
    assert shown_messages(rows) == newest_first[20:]
    assert "Show more" not in text_of(rows)

    whole = alice_client.get(more.group(1))  # the same address as a page of its own (no JavaScript, a bookmark)
    assert is_full_page(whole) and shown_messages(whole) == newest_first[20:]
    assert alice_client.get("/me/inbox", htmx=True).status_code == 200  # no `before`: the whole page
    assert is_full_page(alice_client.get("/me/inbox", htmx=True))


def test_another_members_message_is_a_404_and_their_anchor_shows_nothing(app, alice_client, alice, bob):
    with app.app_context():
        mine = delivered(alice["id"], "For Alice")
        theirs = delivered(bob["id"], "For Bob")
    assert alice_client.get(f"/me/inbox/{theirs}").status_code == 404
    assert alice_client.post(f"/me/inbox/{theirs}/read", htmx=True).status_code == 404
    assert alice_client.post(f"/me/inbox/{theirs}/read").status_code == 404
    assert alice_client.get("/me/inbox/999999").status_code == 404
    page = alice_client.get(f"/me/inbox?before={theirs}", htmx=True)
    assert shown_messages(page) == [] and "For Bob" not in text_of(page)
    assert "For Bob" not in text_of(alice_client.get("/me/inbox"))
    assert shown_messages(alice_client.get("/me/inbox")) == [mine]
    with app.app_context():
        assert db.session.get(Message, theirs).read_at is None


def test_opening_a_message_shows_it_and_a_load_triggered_post_marks_it_read_once(app, alice_client, alice):
    with app.app_context():
        message_id = delivered(alice["id"], "Two lines", body="First line\nSecond line for {name}")
    page = alice_client.get(f"/me/inbox/{message_id}")
    html = text_of(page)
    assert page.status_code == 200
    assert "<h1>Two lines</h1>" in html
    assert '<p class="pre" id="message-body">First line\nSecond line for Alice Own</p>' in html
    assert re.search(r'id="message-when">6/15/26, 10:00\sAM<', html)  # arrived 10:00 store time
    form = re.search(r'<form id="mark-read"[^>]*>', html).group(0)
    assert f'hx-post="/me/inbox/{message_id}/read"' in form and 'hx-trigger="load"' in form
    with app.app_context():
        assert db.session.get(Message, message_id).read_at is None  # the GET wrote nothing

    first_read = DAYTIME + timedelta(hours=1)
    app.config["FROZEN_NOW"] = first_read
    answer = alice_client.post(f"/me/inbox/{message_id}/read", htmx=True)
    assert answer.status_code == 200 and not is_full_page(answer)
    assert 'id="inbox-badge" hx-swap-oob="true"' in text_of(answer)  # the menu's count, swapped in place
    app.config["FROZEN_NOW"] = first_read + timedelta(hours=5)
    again = alice_client.post(f"/me/inbox/{message_id}/read")
    assert again.status_code == 303 and again.headers["Location"] == f"/me/inbox/{message_id}"
    with app.app_context():
        assert db.session.get(Message, message_id).read_at == first_read  # the first reading is kept

    read = text_of(alice_client.get(f"/me/inbox/{message_id}"))
    assert 'id="mark-read"' not in read
    assert unread_rows(alice_client.get("/me/inbox")) == []


def test_the_unread_count_is_on_the_home_page_and_the_menu(app, alice_client, alice):
    home = alice_client.get("/me/")
    assert home_notice(home) is None and badge(home) == ""
    with app.app_context():
        ids = [delivered(alice["id"], f"News {n}") for n in range(3)]
        queue(alice["id"], "Not yet", not_before=DAYTIME + timedelta(days=3))
    home = alice_client.get("/me/")
    assert home_notice(home) == "You have 3 unread messages"
    assert badge(home) == "3" and "3 unread" in text_of(home)
    assert badge(alice_client.get("/me/card")) == "3"
    assert unread_rows(alice_client.get("/me/inbox")) == ids[::-1]

    read = alice_client.post(f"/me/inbox/{ids[0]}/read", htmx=True)
    assert re.search(r'<span aria-hidden="true">2</span>', text_of(read))
    home = alice_client.get("/me/")
    assert home_notice(home) == "You have 2 unread messages" and badge(home) == "2"
    for message_id in ids[1:]:
        alice_client.post(f"/me/inbox/{message_id}/read")
    cleared = alice_client.post(f"/me/inbox/{ids[0]}/read", htmx=True)
    assert '<span id="inbox-badge" hx-swap-oob="true"></span>' in text_of(cleared)
    home = alice_client.get("/me/")
    assert home_notice(home) is None and badge(home) == ""


def test_the_unread_count_is_one_query(app, alice_client, alice):
    from sqlalchemy import event

    from portal import inbox

    with app.app_context():
        for n in range(5):
            delivered(alice["id"], f"News {n}")
        statements = []
        listener = lambda *args: statements.append(args[2])  # noqa: E731
        event.listen(db.engine, "before_cursor_execute", listener)
        try:
            assert inbox.unread_count(db.session, alice["id"]) == 5
        finally:
            event.remove(db.engine, "before_cursor_execute", listener)
        assert len([sql for sql in statements if sql.strip().upper() != "BEGIN"]) == 1


def test_a_marketing_message_carries_the_unsubscribe_link_and_a_service_one_does_not(app, alice_client, alice):
    with app.app_context():
        offer = delivered(alice["id"], "Spring offer", kind="marketing")
        notice = delivered(alice["id"], "Points expire")
    page = text_of(alice_client.get(f"/me/inbox/{offer}"))
    link = re.search(r'id="message-unsubscribe">.*?<a href="([^"]+)">Unsubscribe</a>', page, re.S)
    assert link and link.group(1) == f"/u/{token_for(offer)}"
    with app.app_context():  # the same link as the e-mail's, on the portal's own address
        assert senders.unsubscribe_url(app.config, offer).endswith(link.group(1))
    assert 'id="message-unsubscribe"' not in text_of(alice_client.get(f"/me/inbox/{notice}"))


# --- one-tap unsubscribe --------------------------------------------------------------------------------

@pytest.fixture
def offer(app, alice) -> dict:
    """A marketing message Alice got, one still queued for her, and a queued service message."""
    with app.app_context():
        sent = delivered(alice["id"], "Spring offer", kind="marketing")
        queued = queue(alice["id"], "Summer offer", kind="marketing", not_before=DAYTIME + timedelta(days=30))
        service = queue(alice["id"], "Points expire", not_before=DAYTIME + timedelta(days=30))
    return {"id": sent, "queued": queued, "service": service, "url": f"/u/{token_for(sent)}"}


def unsubscribe_audits(app) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(select(AuditLog.target).where(AuditLog.action == "member.unsubscribe")))


def test_the_link_shows_the_store_and_one_button_without_signing_in_and_opening_it_changes_nothing(
        app, client, alice, offer):
    response = client.get(offer["url"])
    page = text_of(response)
    assert response.status_code == 200
    assert "You will no longer get offers and news from Test Store." in page
    assert len(re.findall(r"<button", re.search(r'<section class="card narrow unsubscribe".*?</section>', page,
                                                re.S).group(0))) == 1
    assert f'action="{offer["url"]}"' in page and 'name="csrf_token"' in page
    assert "Alice Own" not in page  # a forwarded link tells nobody who the member is
    assert response.headers["Cache-Control"] == "no-store"
    with app.app_context():
        assert consent_of(alice["id"]) is True


def test_the_button_unsubscribes_cancels_queued_marketing_and_is_audited(app, client, alice, offer):
    response = client.post(offer["url"])
    assert response.status_code == 303 and response.headers["Location"] == f"{offer['url']}?done=1"
    done = client.get(response.headers["Location"])
    assert done.status_code == 200 and "You are unsubscribed" in text_of(done)
    assert "no more offers and news from Test Store" in text_of(done)
    with app.app_context():
        assert consent_of(alice["id"]) is False
        assert db.session.get(Message, offer["id"]).unsubscribed_at is not None
        assert statuses(offer["queued"]) == {"inbox": "cancelled"}
        assert statuses(offer["service"]) == {"inbox": "queued"}  # account messages still come
    assert unsubscribe_audits(app) == [f"member:{alice['id']}"]


def test_a_reused_link_says_already_unsubscribed(app, client, alice, offer):
    assert client.post(offer["url"]).status_code == 303
    again = client.post(offer["url"])
    assert again.status_code == 200 and "You are already unsubscribed" in text_of(again)
    opened = client.get(offer["url"])
    assert opened.status_code == 200 and "You are already unsubscribed" in text_of(opened)
    assert "<button type=\"submit\" class=\"primary wide\">" not in text_of(opened)
    one_click = client.post(offer["url"], data={"List-Unsubscribe": "One-Click"}, csrf=False)
    assert one_click.status_code == 200 and "You are already unsubscribed" in text_of(one_click)
    assert unsubscribe_audits(app) == [f"member:{alice['id']}"]  # once


@pytest.mark.parametrize("tamper", [
    lambda token: token[:-1] + ("0" if token[-1] != "0" else "1"),  # a changed signature
    lambda token: token[:-4],  # cut short
    lambda token: str(int(token.split(".")[0]) + 1) + "." + token.split(".")[1],  # another message's id
    lambda token: token.split(".")[0],  # no signature
    lambda token: "abc." + token.split(".")[1],
    lambda token: token + "0" * 100,  # far too long
])
def test_a_forged_or_damaged_link_is_a_404_with_a_clear_message(app, client, alice, offer, tamper):
    forged = "/u/" + tamper(token_for(offer["id"]))
    for response in (client.get(forged), client.post(forged),
                     client.post(forged, data={"List-Unsubscribe": "One-Click"}, csrf=False)):
        assert response.status_code == 404
        assert "This unsubscribe link is not valid" in text_of(response)
    with app.app_context():
        assert consent_of(alice["id"]) is True
    assert unsubscribe_audits(app) == []


def test_a_mail_clients_one_click_post_works_without_csrf(app, client, alice, offer):
    fresh = app.test_client()  # no cookies at all, as a mail provider's server
    response = fresh.post(offer["url"], data="List-Unsubscribe=One-Click", csrf=False,
                          content_type="application/x-www-form-urlencoded")
    assert response.status_code == 200 and "You are unsubscribed" in text_of(response)
    with app.app_context():
        assert consent_of(alice["id"]) is False
        assert statuses(offer["queued"]) == {"inbox": "cancelled"}
    with app.app_context():
        row = db.session.scalars(select(AuditLog).where(AuditLog.action == "member.unsubscribe")).one()
        assert '"one_click": true' in row.after


@pytest.mark.parametrize("body", [{}, {"List-Unsubscribe": "Yes"}, {"one-click": "1"}])
def test_any_other_post_without_csrf_is_refused(app, client, alice, offer, body):
    response = client.post(offer["url"], data=body, csrf=False)
    assert response.status_code == 400 and "This form has expired" in text_of(response)
    with app.app_context():
        assert consent_of(alice["id"]) is True
        assert statuses(offer["queued"]) == {"inbox": "queued"}


def test_other_routes_still_need_csrf(app, alice_client, alice, offer):
    refused = alice_client.post("/me/profile", data={"name": "Changed", "locale": "en",
                                                     "List-Unsubscribe": "One-Click"}, csrf=False)
    assert refused.status_code == 400
    assert alice_client.post(f"/me/inbox/{offer['id']}/read", data={"List-Unsubscribe": "One-Click"},
                             csrf=False).status_code == 400
    with app.app_context():
        assert db.session.get(Member, alice["id"]).name == "Alice Own"
        assert db.session.get(Message, offer["id"]).read_at is None


@pytest.mark.config(RATELIMIT_ENABLED=True, UNSUBSCRIBE_RATE_LIMIT="3 per minute")
def test_the_link_is_rate_limited(client, alice, offer):
    forged = "/u/1.0123456789abcdef0123456789abcdef"
    assert [client.get(forged).status_code for _ in range(3)] == [404, 404, 404]
    assert client.get(offer["url"]).status_code == 429


# --- consent ----------------------------------------------------------------------------------------------

def profile_form(**changes) -> dict:
    data = {"name": "Alice Own", "birthday": "", "locale": "en"}
    data.update(changes)
    return data


def test_withdrawing_consent_on_the_profile_cancels_queued_marketing_and_it_can_be_given_again(
        app, alice_client, alice, offer):
    response = alice_client.post("/me/profile", data=profile_form())  # the consent box unticked
    assert response.status_code == 303
    with app.app_context():
        assert consent_of(alice["id"]) is False
        assert statuses(offer["queued"]) == {"inbox": "cancelled"}
        assert statuses(offer["service"]) == {"inbox": "queued"}
        assert messaging.queue(db.session, member=db.session.get(Member, alice["id"]),
                               template=template("marketing"), purpose="test", now=DAYTIME,
                               channels=messaging.Channels()) is None  # nothing new either
    assert alice_client.post("/me/profile", data=profile_form(marketing_consent="y")).status_code == 303
    with app.app_context():
        assert consent_of(alice["id"]) is True
        assert statuses(offer["queued"]) == {"inbox": "cancelled"}  # what was stopped stays stopped


def test_saving_the_profile_with_consent_kept_cancels_nothing(app, alice_client, alice, offer):
    assert alice_client.post("/me/profile", data=profile_form(marketing_consent="y")).status_code == 303
    with app.app_context():
        assert statuses(offer["queued"]) == {"inbox": "queued"}


def test_erasing_the_account_cancels_everything_queued_and_blanks_the_words(app, alice, offer):
    with app.app_context():
        accounts.erase(db.session, db.session.get(Member, alice["id"]), now=DAYTIME)
        db.session.commit()
        assert statuses(offer["queued"]) == {"inbox": "cancelled"}
        assert statuses(offer["service"]) == {"inbox": "cancelled"}
        texts = db.session.execute(select(Message.subject, Message.body)
                                   .where(Message.member_id == alice["id"])).all()
        assert texts and all(subject == "" and body == "" for subject, body in texts)


def test_the_data_download_includes_the_messages(app, alice_client, alice, offer):
    data = alice_client.post("/me/data.json").get_json()
    subjects = {m["subject"]: m for m in data["messages"]}
    assert set(subjects) == {"Spring offer", "Summer offer", "Points expire"}
    assert subjects["Spring offer"]["channels"][0]["status"] == "sent"


# --- service messages where things happen ---------------------------------------------------------------

def make_complaint(member: dict | None) -> int:
    complaint = complaints.file_complaint(
        db.session, store=factories.store(), category="product_quality", severity="normal", description="Sour milk",
        channel="counter", member=db.session.get(Member, member["id"]) if member else None, now=DAYTIME)
    db.session.commit()
    return complaint.id


def complaint_messages() -> list[Message]:
    return list(db.session.scalars(select(Message).where(Message.purpose == "complaint_reply").order_by(Message.id)))


@pytest.mark.parametrize("htmx", [False, True])
def test_a_reply_to_the_member_reaches_their_inbox(app, client, login, alice, htmx):
    with app.app_context():
        complaint_id = make_complaint(alice)
    login(client, "manager")
    response = client.post(f"/manage/complaints/{complaint_id}/reply", htmx=htmx,
                           data={"body": "Sorry!\nCome by for a refund.", "to_member": "y"})
    assert response.status_code == (200 if htmx else 303)
    client.post(f"/manage/complaints/{complaint_id}/reply", data={"body": "Supplier batch 42."})  # a note
    with app.app_context():
        [message] = complaint_messages()
        assert message.member_id == alice["id"] and message.kind == "service"
        assert message.subject == "A reply to your complaint"
        assert message.body == "Hello Alice Own, Test Store replied to your complaint: Sorry!\nCome by for a refund."
        assert statuses(message.id) == {"inbox": "queued"}
        send(datetime.now(UTC) + timedelta(minutes=1))  # the reply was written on the real clock
        message_id = message.id

    member = sign_in(app.test_client(), alice["phone"])
    assert shown_messages(member.get("/me/inbox")) == [message_id]
    assert "Come by for a refund." in text_of(member.get(f"/me/inbox/{message_id}"))
    assert "Supplier batch 42." not in text_of(member.get(f"/me/inbox/{message_id}"))


def test_a_reply_uses_the_channels_given_and_a_complaint_without_member_sends_nothing(app, alice):
    with app.app_context():
        member = db.session.get(Member, alice["id"])
        member.email = "alice@example.com"
        staff = factories.staff(role="manager")
        with_member, anonymous = make_complaint(alice), make_complaint(None)
        complaints.reply(db.session, db.session.get(complaints.Complaint, with_member), staff=staff, body="On it.",
                         to_member=True, now=DAYTIME, channels=messaging.Channels(email=True))
        complaints.reply(db.session, db.session.get(complaints.Complaint, anonymous), staff=staff, body="Noted.",
                         to_member=False, now=DAYTIME)
        db.session.commit()
        [message] = complaint_messages()
        assert statuses(message.id) == {"inbox": "queued", "email": "queued"}
        assert message.dedupe_key.startswith("complaint-reply:")


@pytest.fixture
def sms_configured(monkeypatch):
    """An SMS gateway is configured (what senders.configured says), so codes go out by SMS."""
    monkeypatch.setattr(senders, "configured",
                        lambda config: (messaging.Channels(sms=True), {"inbox": messaging.deliver_to_inbox}))


def activation_messages() -> list[Message]:
    return list(db.session.scalars(select(Message).where(Message.purpose == "activation").order_by(Message.id)))


def test_a_new_code_from_the_till_goes_by_sms_only_when_configured(app, alice, login, sms_configured):
    cashier = app.test_client()
    login(cashier, "cashier")
    page = text_of(cashier.post(f"/till/members/{alice['card']}/activation-code", htmx=True))
    code = re.search(r'id="activation-code">(\d{6})<', page).group(1)
    with app.app_context():
        [message] = activation_messages()
        assert message.member_id == alice["id"] and code in message.body
        assert statuses(message.id) == {"sms": "queued"}  # never the inbox
        audits = db.session.scalars(select(AuditLog.after).where(AuditLog.after.is_not(None))).all()
        assert not any(code in (after or "") for after in audits)


def test_a_newer_code_cancels_the_earlier_one_still_queued(app, alice, login, sms_configured):
    cashier = app.test_client()
    login(cashier, "cashier")
    for _ in range(2):
        assert cashier.post(f"/till/members/{alice['card']}/activation-code").status_code == 303
    with app.app_context():
        first, second = activation_messages()
        assert statuses(first.id) == {"sms": "cancelled"} and statuses(second.id) == {"sms": "queued"}


def test_registration_sends_the_code_by_sms_when_configured(app, login, sms_configured):
    cashier = app.test_client()
    login(cashier, "cashier")
    response = cashier.post("/till/members", data={"name": "Li Lei", "phone": "13700001111", "privacy_consent": "y"})
    assert response.status_code == 303
    with app.app_context():
        [message] = activation_messages()
        assert statuses(message.id) == {"sms": "queued"}
        assert db.session.get(Member, message.member_id).phone == "+8613700001111"


def test_without_sms_or_e_mail_no_code_is_sent(app, alice, login):
    cashier = app.test_client()
    login(cashier, "cashier")
    assert cashier.post(f"/till/members/{alice['card']}/activation-code").status_code == 303
    assert cashier.post("/till/members", data={"name": "Li Lei", "phone": "13700001111",
                                               "privacy_consent": "y"}).status_code == 303
    with app.app_context():
        assert activation_messages() == []
        assert db.session.scalar(select(func.count()).select_from(MessageDelivery)) == 0
