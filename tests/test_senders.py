"""The channels: e-mail against a real local SMTP server (aiosmtpd), SMS against a local HTTP gateway, and which
channels the settings turn on. The tests that queue messages run on SQLite and PostgreSQL."""
from __future__ import annotations

import email
import email.policy
import json
import socket
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from portal import messaging, senders
from portal.extensions import db
from portal.models import Message, MessageDelivery, MessageTemplate
from portal.rules import load_rules

from . import factories

UTC = timezone.utc
DAYTIME = datetime(2026, 6, 15, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai: outside the quiet hours
SECRET = "test-secret-key"  # TestConfig's
BASE_URL = "https://club.example.com"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def template(code: str) -> MessageTemplate:
    return db.session.scalars(select(MessageTemplate).where(MessageTemplate.code == code)).one()


def channel_delivery(message: Message, channel: str) -> MessageDelivery:
    db.session.expire_all()
    return db.session.scalars(select(MessageDelivery).where(MessageDelivery.message_id == message.id,
                                                            MessageDelivery.channel == channel)).one()


def queue_for(member, code: str, channels: messaging.Channels) -> Message:
    message = messaging.queue(db.session, member=member, template=template(code), purpose=code, now=DAYTIME,
                              channels=channels)
    assert message is not None
    return message


def send_all(app, now: datetime = DAYTIME) -> messaging.OutboxRun:
    _channels, configured = senders.configured(app.config)
    return messaging.send_due(db.session, now=now, rules=load_rules(db.session), senders=configured,
                              default_zone="Asia/Shanghai")


# --- a local SMTP server --------------------------------------------------------------------------------

class Mailbox:
    """An aiosmtpd handler that keeps what it is given, or refuses at the step it is told to."""

    def __init__(self, refuse_rcpt: str | None = None, refuse_data: str | None = None):
        self.envelopes = []
        self.refuse_rcpt, self.refuse_data = refuse_rcpt, refuse_data

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.refuse_rcpt:
            return self.refuse_rcpt
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.refuse_data:
            return self.refuse_data
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"

    def mails(self):
        return [email.message_from_bytes(e.content, policy=email.policy.default) for e in self.envelopes]


class SmtpServer:
    def __init__(self, port: int):
        self.port, self.controller = port, None

    def start(self, mailbox: Mailbox | None = None) -> Mailbox:
        self.mailbox = mailbox or Mailbox()
        self.controller = Controller(self.mailbox, hostname="127.0.0.1", port=self.port)
        self.controller.start()
        return self.mailbox

    def stop(self):
        if self.controller:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def smtp(app):
    """A port for a local SMTP server (started by the test) and the app configured to send mail there."""
    server = SmtpServer(free_port())
    app.config.update(MAIL_SERVER="127.0.0.1", MAIL_PORT=server.port, MAIL_USE_TLS=False, MAIL_USE_SSL=False,
                      MAIL_FROM="会员俱乐部 <club@example.com>", PORTAL_BASE_URL=BASE_URL)
    yield server
    server.stop()


def member_with_email(address: str = "wang@example.com", consent: bool = True):
    member = factories.member(name="王小明", now=DAYTIME)
    member.email, member.marketing_consent = address, consent
    return member


def test_email_round_trip_through_a_real_smtp_server(app, ctx, smtp):
    mailbox = smtp.start()
    member = member_with_email()
    channels, _ = senders.configured(app.config)
    birthday = queue_for(member, "birthday", channels)
    service = queue_for(member, "tier_change", channels)
    db.session.commit()

    run = send_all(app)

    assert run.sent == 4 and run.errors == []  # two messages, inbox and e-mail each
    assert [e.rcpt_tos for e in mailbox.envelopes] == [["wang@example.com"], ["wang@example.com"]]
    assert [e.mail_from for e in mailbox.envelopes] == ["club@example.com", "club@example.com"]
    greeting, note = mailbox.mails()
    url = f"{BASE_URL}/u/{messaging.unsubscribe_token(birthday.id, SECRET)}"
    assert greeting["To"] == "wang@example.com"
    assert greeting["From"].addresses[0].display_name == "会员俱乐部"
    assert greeting["Subject"] == "生日快乐！"
    assert greeting["Content-Language"] == "zh"
    body = greeting.get_content()
    assert body.startswith("王小明，祝您生日快乐！Test Store为您准备了生日礼遇")
    assert body.rstrip("\n").splitlines()[-1].endswith(url)
    assert greeting["List-Unsubscribe"].strip() == f"<{url}>"  # a long header may be folded
    assert greeting["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert greeting["Message-ID"].endswith("@example.com>")
    assert note["Subject"] == "您的会员等级已变更"
    assert note.get_content() == service.body + "\n"
    assert note["List-Unsubscribe"] is None and "/u/" not in note.get_content()
    assert note["Message-ID"] != greeting["Message-ID"]
    assert channel_delivery(birthday, "email").status == "sent"
    # The link leads back to the message, so the public unsubscribe route can act on it.
    token = greeting["List-Unsubscribe"].strip().strip("<>").rsplit("/u/", 1)[1]
    assert messaging.message_for_token(db.session, token, SECRET).id == birthday.id


def test_an_english_member_gets_english_mail(app, ctx, smtp):
    mailbox = smtp.start()
    member = member_with_email("li@example.com")
    member.name, member.locale = "Li Lei", "en"
    message = queue_for(member, "birthday", senders.configured(app.config)[0])
    db.session.commit()
    send_all(app)
    (mail,) = mailbox.mails()
    assert mail["Subject"] == "Happy birthday!"
    assert mail.get_content().startswith("Happy birthday, Li Lei! Test Store has a birthday treat for you.")
    assert mail.get_content().rstrip("\n").splitlines()[-1] == (
        f"Unsubscribe: {BASE_URL}/u/{messaging.unsubscribe_token(message.id, SECRET)}")


def test_a_refused_connection_is_retried_with_the_error_kept(app, ctx, smtp):
    member = member_with_email()
    message = queue_for(member, "tier_change", senders.configured(app.config)[0])
    db.session.commit()

    run = send_all(app)  # nothing listens on the port yet

    delivery = channel_delivery(message, "email")
    assert (run.sent, run.retried) == (1, 1)  # the inbox went, the e-mail waits
    assert delivery.status == "queued" and delivery.attempts == 1
    assert "ConnectionRefusedError" in delivery.last_error
    assert delivery.next_attempt_at > DAYTIME

    mailbox = smtp.start()  # the server is back: the retry goes through, once
    send_all(app, delivery.next_attempt_at)
    delivery = channel_delivery(message, "email")
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("sent", 2, None)
    assert len(mailbox.envelopes) == 1


@pytest.mark.parametrize(("refusal", "settings", "expected"), [
    ({"refuse_rcpt": "550 5.1.1 No such user"}, {}, "550"),
    ({"refuse_rcpt": "451 4.3.0 Try again later"}, {}, "451"),
    ({"refuse_data": "554 5.7.1 Message rejected"}, {}, "554"),
    # STARTTLS asked for, the server offers none: nothing is sent in clear.
    ({}, {"MAIL_USE_TLS": True}, "SMTPNotSupportedError"),
])
def test_a_mail_server_that_refuses_leaves_the_delivery_queued(app, ctx, smtp, refusal, settings, expected):
    mailbox = smtp.start(Mailbox(**refusal))
    app.config.update(settings)
    member = member_with_email()
    message = queue_for(member, "tier_change", senders.configured(app.config)[0])
    db.session.commit()

    run = send_all(app)

    delivery = channel_delivery(message, "email")
    assert run.retried == 1 and delivery.status == "queued" and delivery.attempts == 1
    assert expected in delivery.last_error
    assert mailbox.envelopes == []


# --- a local SMS gateway --------------------------------------------------------------------------------

class Gateway:
    """An HTTP server in a thread that records each request and gives the answers it is told to."""

    def __init__(self):
        self.requests: list[dict] = []
        self.answers: list[tuple[int, bytes, dict]] = []
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                gateway.requests.append({"path": self.path, "authorization": self.headers.get("Authorization"),
                                         "content_type": self.headers.get("Content-Type"),
                                         "json": json.loads(raw.decode("utf-8"))})
                status, body, headers = gateway.answers.pop(0) if gateway.answers else (200, b'{"ok": true}', {})
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/sms/send"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def gateway(app, monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    server = Gateway()
    app.config.update(SMS_GATEWAY_URL=server.url, SMS_GATEWAY_TOKEN="s3cret-token", SMS_TIMEOUT=5,
                      PORTAL_BASE_URL=BASE_URL)
    yield server
    server.close()


def test_sms_posts_json_with_the_bearer_token(app, ctx, gateway):
    member = factories.member(name="王小明", now=DAYTIME)
    member.marketing_consent = True
    channels, _ = senders.configured(app.config)
    assert channels == messaging.Channels(sms=True)
    birthday = queue_for(member, "birthday", channels)
    service = queue_for(member, "tier_change", channels)
    db.session.commit()

    run = send_all(app)

    assert run.sent == 4 and run.errors == []
    greeting, note = gateway.requests
    url = f"{BASE_URL}/u/{messaging.unsubscribe_token(birthday.id, SECRET)}"
    assert greeting["path"] == "/sms/send"
    assert greeting["authorization"] == "Bearer s3cret-token"
    assert greeting["content_type"].startswith("application/json")
    assert greeting["json"]["to"] == member.phone and member.phone.startswith("+86")
    assert greeting["json"]["message_id"] == str(channel_delivery(birthday, "sms").id)
    text = greeting["json"]["text"]
    assert text.startswith(f"生日快乐！: {birthday.body}") and text.splitlines()[-1].endswith(url)
    assert note["json"] == {"to": member.phone, "text": f"{service.subject}: {service.body}",
                            "message_id": str(channel_delivery(service, "sms").id)}
    assert channel_delivery(birthday, "sms").status == "sent"


def test_sms_without_a_token_sends_no_authorization(app, ctx, gateway):
    app.config["SMS_GATEWAY_TOKEN"] = ""
    queue_for(factories.member(now=DAYTIME), "tier_change", senders.configured(app.config)[0])
    db.session.commit()
    send_all(app)
    assert [r["authorization"] for r in gateway.requests] == [None]


@pytest.mark.parametrize(("status", "body", "headers"), [
    (500, b"Internal error: gateway down", {}),
    (503, b"<html><body>\n  Service   Unavailable\n</body></html>", {}),
    (401, b'{"error": "bad token"}', {}),
    (429, b"slow down", {"Retry-After": "60"}),
    (302, b"", {"Location": "/elsewhere"}),  # a redirect is not followed: the POST would become a GET
])
def test_a_gateway_error_is_retried_with_the_status_kept(app, ctx, gateway, status, body, headers):
    message = queue_for(factories.member(now=DAYTIME), "tier_change", senders.configured(app.config)[0])
    db.session.commit()
    gateway.answers.append((status, body, headers))

    run = send_all(app)

    delivery = channel_delivery(message, "sms")
    assert run.retried == 1 and delivery.status == "queued" and delivery.attempts == 1
    assert f"SMS gateway answered {status}" in delivery.last_error
    assert " ".join(body.decode().split())[:50] in delivery.last_error
    assert len(gateway.requests) == 1

    send_all(app, delivery.next_attempt_at)  # the gateway answers 200 now
    delivery = channel_delivery(message, "sms")
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("sent", 2, None)
    assert len(gateway.requests) == 2


def test_an_unreachable_gateway_is_retried(app, ctx, monkeypatch):
    app.config.update(SMS_GATEWAY_URL=f"http://127.0.0.1:{free_port()}/send", SMS_TIMEOUT=5)
    message = queue_for(factories.member(now=DAYTIME), "tier_change", senders.configured(app.config)[0])
    db.session.commit()
    send_all(app)
    delivery = channel_delivery(message, "sms")
    assert delivery.status == "queued" and "SMS gateway not reached" in delivery.last_error


# --- which channels the settings turn on ----------------------------------------------------------------

BASE = {"SECRET_KEY": SECRET, "PORTAL_BASE_URL": BASE_URL}
MAIL = {"MAIL_SERVER": "smtp.example.com", "MAIL_FROM": "club@example.com"}
SMS = {"SMS_GATEWAY_URL": "https://sms.example.com/send"}
sent_by_custom_transport: list[dict] = []


def custom_transport(*, to: str, text: str, reference: str, config) -> None:
    """An SMS_SENDER for the test: a store whose gateway is not the JSON POST."""
    sent_by_custom_transport.append({"to": to, "text": text, "reference": reference})


@pytest.mark.parametrize(("settings", "expected"), [
    ({}, messaging.Channels()),
    (MAIL, messaging.Channels(email=True)),
    (SMS, messaging.Channels(sms=True)),
    ({**MAIL, **SMS}, messaging.Channels(email=True, sms=True)),
    ({"SMS_SENDER": "tests.test_senders:custom_transport"}, messaging.Channels(sms=True)),
    ({"MAIL_SERVER": "", "SMS_GATEWAY_URL": ""}, messaging.Channels()),
])
def test_each_setting_turns_its_channel_on(settings, expected):
    channels, configured = senders.configured({**BASE, **settings})
    assert channels == expected
    assert sorted(configured) == sorted(["inbox"] + ["email"] * expected.email + ["sms"] * expected.sms)
    assert configured["inbox"] is messaging.deliver_to_inbox


def test_the_application_starts_with_the_inbox_only(app):
    assert senders.configured(app.config) == (messaging.Channels(), {"inbox": messaging.deliver_to_inbox})


@pytest.mark.parametrize(("settings", "problem"), [
    ({"MAIL_SERVER": "smtp.example.com"}, "MAIL_FROM"),
    ({**MAIL, "MAIL_FROM": "the club"}, "MAIL_FROM"),
    ({**MAIL, "MAIL_USE_TLS": True, "MAIL_USE_SSL": True}, "not both"),
    ({"SMS_GATEWAY_URL": "file:///etc/passwd"}, "SMS_GATEWAY_URL"),
    ({"SMS_GATEWAY_URL": "sms.example.com/send"}, "SMS_GATEWAY_URL"),
    ({"SMS_SENDER": "tests.nowhere:send"}, "SMS_SENDER"),
    ({"SMS_SENDER": "tests.test_senders:SECRET"}, "not a function"),
    ({**MAIL, "PORTAL_BASE_URL": "club.example.com"}, "PORTAL_BASE_URL"),
    ({**SMS, "PORTAL_BASE_URL": "http://127.0.0.1:5000", "ENV_NAME": "production"}, "PORTAL_BASE_URL"),
])
def test_settings_that_cannot_work_are_refused_at_setup(settings, problem):
    with pytest.raises(senders.ConfigurationError, match=problem):
        senders.configured({**BASE, **settings})


def test_a_custom_sms_sender_gets_the_text_with_the_unsubscribe_link():
    sent_by_custom_transport.clear()
    _channels, configured = senders.configured({**BASE, "SMS_SENDER": "tests.test_senders.custom_transport"})
    message = Message(id=41, kind="marketing", locale="en", subject="Happy birthday!", body="A treat awaits.")
    configured["sms"](MessageDelivery(id=7, channel="sms", address="+8613912345678"), message)
    assert sent_by_custom_transport == [{
        "to": "+8613912345678", "reference": "7",
        "text": f"Happy birthday!: A treat awaits.\nUnsubscribe: {BASE_URL}/u/{messaging.unsubscribe_token(41, SECRET)}",
    }]


def test_unsubscribe_url_uses_the_public_address():
    assert senders.unsubscribe_url({"SECRET_KEY": SECRET, "PORTAL_BASE_URL": "https://club.example.com/"}, 5) == (
        f"https://club.example.com/u/{messaging.unsubscribe_token(5, SECRET)}")
    assert senders.unsubscribe_url({"SECRET_KEY": SECRET}, 5).startswith("http://127.0.0.1:5000/u/5.")


def test_a_retried_email_keeps_its_message_id():
    _channels, configured = senders.configured({**BASE, **MAIL})
    delivery = MessageDelivery(id=9, message_id=3, channel="email", address="li@example.com")
    message = Message(id=3, kind="service", locale="en", subject="Hello", body="Plain ASCII text.")
    first, again = configured["email"].build(delivery, message), configured["email"].build(delivery, message)
    assert first["Message-ID"] == again["Message-ID"]
    assert first["Content-Transfer-Encoding"] == "7bit" and first["List-Unsubscribe"] is None


def test_the_app_refuses_to_start_with_a_mail_setting_that_cannot_work(tmp_path):
    from portal import create_app
    from portal.config import TestConfig

    with pytest.raises(senders.ConfigurationError):
        create_app(TestConfig, {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'x.db'}",
                                "MAIL_SERVER": "127.0.0.1", "MAIL_FROM": "not an address"})
