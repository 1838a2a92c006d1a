"""Configuration read from the environment.

Every setting has a safe default for a single store on SQLite; a chain sets
DATABASE_URL (PostgreSQL), SECRET_KEY and RATELIMIT_STORAGE_URI.
"""
import os
import secrets
from datetime import timedelta
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def instance_secret_key(instance_path: str) -> str:
    """A development key, generated once and kept in the instance folder (never committed)."""
    path = Path(instance_path) / "secret_key"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


def normalise_database_url(url: str) -> str:
    """Accept postgres:// and postgresql:// and use the psycopg 3 driver for both."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


class Config:
    ENV_NAME = os.environ.get("PORTAL_ENV", "development")
    SECRET_KEY = os.environ.get("SECRET_KEY")
    SQLALCHEMY_DATABASE_URI = normalise_database_url(os.environ.get("DATABASE_URL", ""))
    SQLALCHEMY_ENGINE_OPTIONS: dict = {"pool_pre_ping": True}
    # How long a request waits for a lock (SQLite's write lock, a PostgreSQL row lock) before it gives up with a
    # "try again" page: nothing is saved then.
    DATABASE_LOCK_TIMEOUT_MS = int(os.environ.get("DATABASE_LOCK_TIMEOUT_MS", "15000"))

    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    SESSION_COOKIE_SECURE = _env_bool("SESSION_COOKIE_SECURE", ENV_NAME == "production")
    SESSION_COOKIE_NAME = "portal_session"
    # A login ends after this much inactivity, and after this long in any case.
    SESSION_IDLE_TIMEOUT = timedelta(minutes=int(os.environ.get("SESSION_IDLE_MINUTES", "120")))
    SESSION_ABSOLUTE_TIMEOUT = timedelta(hours=int(os.environ.get("SESSION_ABSOLUTE_HOURS", "12")))
    # Points adjustments, settings, staff and roles, register tokens and exports ask for the password again when
    # it was last entered longer ago than this.
    REAUTH_AFTER = timedelta(minutes=int(os.environ.get("REAUTH_MINUTES", "15")))

    MAX_CONTENT_LENGTH = int(os.environ.get("MAX_CONTENT_LENGTH", str(2 * 1024 * 1024)))
    # The host names the portal answers to (a request for any other is a 400). Required in production.
    TRUSTED_HOSTS = ([h.strip() for h in os.environ.get("TRUSTED_HOSTS", "").split(",") if h.strip()]
                     or (None if ENV_NAME == "production" else ["127.0.0.1", "localhost", "::1"]))

    WTF_CSRF_TIME_LIMIT = None  # the token lives as long as the login session
    WTF_CSRF_HEADERS = ["X-CSRFToken"]

    BABEL_DEFAULT_LOCALE = "zh"
    BABEL_DEFAULT_TIMEZONE = os.environ.get("STORE_TIMEZONE", "Asia/Shanghai")
    BABEL_TRANSLATION_DIRECTORIES = str(BASE_DIR / "translations")
    LANGUAGES = ("zh", "en")

    RATELIMIT_ENABLED = _env_bool("RATELIMIT_ENABLED", True)
    RATELIMIT_STORAGE_URI = os.environ.get("RATELIMIT_STORAGE_URI", "memory://")
    RATELIMIT_HEADERS_ENABLED = True
    LOGIN_RATE_LIMIT = os.environ.get("LOGIN_RATE_LIMIT", "10 per minute")  # sign-in requests per address
    # Failed passwords and codes, counted in the database (portal/login_guard.py): per account and per address,
    # over a window of this many minutes.
    LOGIN_FAILURES_PER_ACCOUNT = int(os.environ.get("LOGIN_FAILURES_PER_ACCOUNT", "5"))
    LOGIN_FAILURES_PER_ADDRESS = int(os.environ.get("LOGIN_FAILURES_PER_ADDRESS", "20"))
    LOGIN_LOCK_MINUTES = int(os.environ.get("LOGIN_LOCK_MINUTES", "15"))
    API_RATE_LIMIT = os.environ.get("API_RATE_LIMIT", "300 per minute")  # per register token

    HTMX_CDN_URL = os.environ.get("HTMX_CDN_URL", "")

    # Messages (portal/senders.py). The address members reach the portal at: unsubscribe links use it.
    PORTAL_BASE_URL = os.environ.get("PORTAL_BASE_URL", "http://127.0.0.1:5000")
    # E-mail over SMTP; unset MAIL_SERVER: no e-mail (the inbox still works).
    MAIL_SERVER = os.environ.get("MAIL_SERVER", "")
    MAIL_USE_SSL = _env_bool("MAIL_USE_SSL", False)  # TLS from the first byte (SMTPS, usually port 465)
    MAIL_PORT = int(os.environ.get("MAIL_PORT") or (465 if MAIL_USE_SSL else 587))
    MAIL_USERNAME = os.environ.get("MAIL_USERNAME", "")
    MAIL_PASSWORD = os.environ.get("MAIL_PASSWORD", "")
    # STARTTLS; on by default when the portal signs in, so a password never crosses the network in clear.
    MAIL_USE_TLS = _env_bool("MAIL_USE_TLS", bool(MAIL_USERNAME) and not MAIL_USE_SSL)
    MAIL_FROM = os.environ.get("MAIL_FROM", "")  # required with MAIL_SERVER: "会员俱乐部 <club@example.com>"
    MAIL_TIMEOUT = float(os.environ.get("MAIL_TIMEOUT", "10"))
    # SMS over the store's HTTP gateway; unset SMS_GATEWAY_URL (and SMS_SENDER): no SMS.
    SMS_GATEWAY_URL = os.environ.get("SMS_GATEWAY_URL", "")
    SMS_GATEWAY_TOKEN = os.environ.get("SMS_GATEWAY_TOKEN", "")
    SMS_TIMEOUT = float(os.environ.get("SMS_TIMEOUT", "10"))
    SMS_SENDER = os.environ.get("SMS_SENDER", "")  # "package.module:function" for a gateway that differs


class TestConfig(Config):
    ENV_NAME = "testing"
    TESTING = True
    SECRET_KEY = "test-secret-key"
    RATELIMIT_ENABLED = False
    SESSION_COOKIE_SECURE = False
    SERVER_NAME = None
    # Tests never reach a real mail server or SMS gateway, whatever the environment says.
    PORTAL_BASE_URL = "http://127.0.0.1:5000"
    MAIL_SERVER = ""
    SMS_GATEWAY_URL = ""
    SMS_SENDER = ""


class PostgresTestConfig(TestConfig):
    """Same as TestConfig; the test fixtures point SQLALCHEMY_DATABASE_URI at the throwaway cluster."""
