"""How messages leave the portal: the inbox (always), e-mail over SMTP and SMS over a store's HTTP gateway when
configured. `configured(config)` says which channels are on and gives the outbox its senders.

A sender is called by the outbox (`messaging.send_one`) with a delivery and its message; it returns when the
mail server or the gateway took the message and raises otherwise: the outbox keeps the error and retries.

Settings (portal/config.py, README "Messages: e-mail and SMS"):
- e-mail: MAIL_SERVER (unset: no e-mail), MAIL_PORT, MAIL_USERNAME, MAIL_PASSWORD, MAIL_USE_TLS (STARTTLS),
  MAIL_USE_SSL (SMTPS), MAIL_FROM (required with MAIL_SERVER), MAIL_TIMEOUT;
- SMS: SMS_GATEWAY_URL (unset: no SMS), SMS_GATEWAY_TOKEN (sent as a bearer token), SMS_TIMEOUT, and
  SMS_SENDER, "package.module:function", for a store whose gateway wants something else than the JSON POST
  below. That function is called as function(to=..., text=..., reference=..., config=...) and raises when the
  message was not taken; the portal still writes the text (with the unsubscribe link for marketing);
- PORTAL_BASE_URL: where members reach the portal; the one-tap unsubscribe links point there.

No Flask application objects in here: the configuration mapping is passed in.
"""
from __future__ import annotations

import hashlib
import hmac
import importlib
import json
import smtplib
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from urllib.parse import urlsplit

from flask_babel import force_locale, gettext

from . import messaging
from .models import Message, MessageDelivery

DEFAULT_BASE_URL = "http://127.0.0.1:5000"
ERROR_EXCERPT = 200  # characters of a gateway's answer kept in a delivery's error


class ConfigurationError(ValueError):
    """A messaging setting that cannot work, found when the senders are set up rather than at the first send."""


class SmsGatewayError(RuntimeError):
    """The SMS gateway did not take a message."""


# --- unsubscribe links ----------------------------------------------------------------------------------

def _base_url(config: Mapping) -> str:
    return (config.get("PORTAL_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")


def unsubscribe_url(config: Mapping, message_id: int) -> str:
    """The one-tap unsubscribe link of a message: PORTAL_BASE_URL/u/<signed token> (the public route)."""
    return f"{_base_url(config)}/u/{messaging.unsubscribe_token(message_id, config['SECRET_KEY'])}"


def unsubscribe_line(url: str, locale: str) -> str:
    """The last line of a marketing e-mail or SMS, in the message's language."""
    with force_locale(locale):
        return gettext("Unsubscribe: %(url)s", url=url)


def _check_base_url(config: Mapping) -> None:
    parts = urlsplit(_base_url(config))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError("PORTAL_BASE_URL must be an http(s) address such as https://club.example.com")
    if config.get("ENV_NAME") == "production" and parts.hostname in ("127.0.0.1", "localhost", "::1"):
        raise ConfigurationError("Set PORTAL_BASE_URL to the portal's public address: e-mails and SMS link to it")


# --- e-mail over SMTP -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class EmailSender:
    """Sends a delivery as a plain-text UTF-8 e-mail, one SMTP connection per message."""

    host: str
    port: int
    username: str
    password: str
    use_tls: bool
    use_ssl: bool
    sender: str
    timeout: float
    base_url: str
    secret_key: str

    @classmethod
    def from_config(cls, config: Mapping) -> EmailSender:
        sender = (config.get("MAIL_FROM") or "").strip()
        if "@" not in parseaddr(sender)[1]:
            raise ConfigurationError("MAIL_FROM must be an e-mail address when MAIL_SERVER is set")
        use_tls, use_ssl = bool(config.get("MAIL_USE_TLS")), bool(config.get("MAIL_USE_SSL"))
        if use_tls and use_ssl:
            raise ConfigurationError("Choose MAIL_USE_TLS (STARTTLS) or MAIL_USE_SSL (SMTPS), not both")
        return cls(
            host=config["MAIL_SERVER"], port=int(config.get("MAIL_PORT") or (465 if use_ssl else 587)),
            username=config.get("MAIL_USERNAME") or "", password=config.get("MAIL_PASSWORD") or "",
            use_tls=use_tls, use_ssl=use_ssl, sender=sender, timeout=float(config.get("MAIL_TIMEOUT") or 10),
            base_url=_base_url(config), secret_key=config["SECRET_KEY"],
        )

    def unsubscribe_url(self, message_id: int) -> str:
        return unsubscribe_url({"PORTAL_BASE_URL": self.base_url, "SECRET_KEY": self.secret_key}, message_id)

    def message_id(self, delivery: MessageDelivery) -> str:
        """The same Message-ID on every try of a delivery, so a mail server may spot a repeat."""
        domain = parseaddr(self.sender)[1].rpartition("@")[2] or "portal.invalid"
        local = f"portal.{delivery.message_id}.{delivery.id}"
        check = hmac.new(self.secret_key.encode(), local.encode(), hashlib.sha256).hexdigest()[:12]
        return f"<{local}.{check}@{domain}>"

    def build(self, delivery: MessageDelivery, message: Message, *, now: datetime | None = None) -> EmailMessage:
        if not delivery.address:
            raise ValueError("the delivery has no e-mail address")
        mail = EmailMessage()
        mail["From"] = self.sender
        mail["To"] = delivery.address
        mail["Subject"] = message.subject
        mail["Date"] = format_datetime(now or datetime.now(timezone.utc))
        mail["Message-ID"] = self.message_id(delivery)
        mail["Auto-Submitted"] = "auto-generated"  # RFC 3834: out-of-office replies stay away
        body = message.body
        if message.kind == "marketing":
            url = self.unsubscribe_url(message.id)
            mail["List-Unsubscribe"] = f"<{url}>"
            mail["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"  # RFC 8058
            body = f"{body}\n\n{unsubscribe_line(url, message.locale)}"
        # Chinese text goes as base64 so no relay has to pass 8-bit data.
        mail.set_content(body + "\n", charset="utf-8", cte=None if body.isascii() else "base64")
        mail["Content-Language"] = message.locale  # after set_content, which clears the Content-* headers
        return mail

    def __call__(self, delivery: MessageDelivery, message: Message) -> None:
        mail = self.build(delivery, message)
        smtp = self._connect()
        try:
            smtp.send_message(mail)
        finally:
            try:  # the message was taken: a failed goodbye must not make it look unsent
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                smtp.close()

    def _connect(self) -> smtplib.SMTP:
        context = ssl.create_default_context()
        if self.use_ssl:
            smtp = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        try:
            if self.use_tls:
                smtp.starttls(context=context)
            if self.username:
                smtp.login(self.username, self.password)
        except BaseException:
            smtp.close()
            raise
        return smtp


# --- SMS over an HTTP gateway ---------------------------------------------------------------------------

class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is a failure: following it would turn the POST into a GET without the message."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def _excerpt(raw: bytes) -> str:
    return " ".join(raw.decode("utf-8", "replace").split())[:ERROR_EXCERPT]


def post_to_gateway(*, to: str, text: str, reference: str, config: Mapping) -> None:
    """POST {"to", "text", "message_id"} as JSON to SMS_GATEWAY_URL (with SMS_GATEWAY_TOKEN as a bearer
    token); any answer but 2xx, or no answer, raises SmsGatewayError with the status and the answer's start."""
    payload = json.dumps({"to": to, "text": text, "message_id": reference}, ensure_ascii=False).encode()
    headers = {"Content-Type": "application/json; charset=utf-8", "Accept": "application/json",
               "User-Agent": "membership-portal"}
    if config.get("SMS_GATEWAY_TOKEN"):
        headers["Authorization"] = f"Bearer {config['SMS_GATEWAY_TOKEN']}"
    request = urllib.request.Request(config["SMS_GATEWAY_URL"], data=payload, headers=headers, method="POST")
    opener = urllib.request.build_opener(_RefuseRedirects)
    try:
        with opener.open(request, timeout=float(config.get("SMS_TIMEOUT") or 10)) as answer:
            if not 200 <= answer.status < 300:
                raise SmsGatewayError(f"SMS gateway answered {answer.status}: {_excerpt(answer.read(1000))}")
    except urllib.error.HTTPError as error:
        with error:
            raise SmsGatewayError(f"SMS gateway answered {error.code}: {_excerpt(error.read(1000))}") from None
    except urllib.error.URLError as error:
        raise SmsGatewayError(f"SMS gateway not reached: {error.reason}") from None
    except OSError as error:  # a timeout or a connection cut while reading the answer
        raise SmsGatewayError(f"SMS gateway not reached: {error}") from None


SmsTransport = Callable[..., None]


def _load(path: str) -> SmsTransport:
    module_name, colon, name = path.partition(":")
    if not colon:
        module_name, _dot, name = path.rpartition(".")
    try:
        found = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as error:
        raise ConfigurationError(f"SMS_SENDER {path!r} cannot be loaded: {error}") from None
    if not callable(found):
        raise ConfigurationError(f"SMS_SENDER {path!r} is not a function")
    return found


@dataclass(frozen=True)
class SmsSender:
    """Writes the SMS text ("<subject>: <body>", and the unsubscribe link for marketing) and hands it to the
    gateway: the JSON POST above, or the SMS_SENDER function."""

    transport: SmsTransport
    config: Mapping

    @classmethod
    def from_config(cls, config: Mapping) -> SmsSender:
        if config.get("SMS_SENDER"):
            return cls(_load(config["SMS_SENDER"]), config)
        parts = urlsplit(config["SMS_GATEWAY_URL"])
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError("SMS_GATEWAY_URL must be an http(s) address")
        return cls(post_to_gateway, config)

    def text(self, message: Message) -> str:
        text = f"{message.subject}: {message.body}"
        if message.kind == "marketing":
            text += "\n" + unsubscribe_line(unsubscribe_url(self.config, message.id), message.locale)
        return text

    def __call__(self, delivery: MessageDelivery, message: Message) -> None:
        if not delivery.address:
            raise ValueError("the delivery has no phone number")
        self.transport(to=delivery.address, text=self.text(message), reference=str(delivery.id), config=self.config)


# --- which channels are on ------------------------------------------------------------------------------

def configured(config) -> tuple[messaging.Channels, dict[str, messaging.Sender]]:
    """The channels in use and a sender for each: the inbox always, e-mail when MAIL_SERVER is set, SMS when
    SMS_GATEWAY_URL (or SMS_SENDER) is. A setting that cannot work raises ConfigurationError."""
    email = bool(config.get("MAIL_SERVER"))
    sms = bool(config.get("SMS_GATEWAY_URL") or config.get("SMS_SENDER"))
    senders: dict[str, messaging.Sender] = {"inbox": messaging.deliver_to_inbox}
    if email or sms:
        _check_base_url(config)
    if email:
        senders["email"] = EmailSender.from_config(config)
    if sms:
        senders["sms"] = SmsSender.from_config(config)
    return messaging.Channels(email=email, sms=sms), senders
