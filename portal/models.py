"""Typed SQLAlchemy models. The schema itself comes only from migrations/."""
from __future__ import annotations

import enum
from datetime import date, datetime, timezone

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from .extensions import db


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on both SQLite (which stores naive text) and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(timezone.utc)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Role(str, enum.Enum):
    CASHIER = "cashier"
    MANAGER = "manager"
    ADMIN = "admin"


ROLE_RANK = {Role.CASHIER.value: 1, Role.MANAGER.value: 2, Role.ADMIN.value: 3}


class LedgerKind(str, enum.Enum):
    EARN = "earn"
    REDEEM = "redeem"
    REVERSE = "reverse"
    RESTORE = "restore"
    EXPIRE = "expire"
    ADJUST = "adjust"
    BONUS = "bonus"


class LoginMixin:
    """What Flask-Login needs; get_id is the server-side session token (see sessions.py)."""

    auth_token = None
    is_authenticated = True
    is_anonymous = False

    def get_id(self):
        return self.auth_token


class Store(db.Model):
    __tablename__ = "stores"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(16), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    timezone: Mapped[str] = mapped_column(String(64), default="Asia/Shanghai")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    creation_key: Mapped[str | None] = mapped_column(String(64))  # the form that created it; unique index below
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index("uq_stores_creation_key", "creation_key", unique=True),)


class Staff(LoginMixin, db.Model):
    __tablename__ = "staff"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    store_id: Mapped[int | None] = mapped_column(ForeignKey("stores.id"))
    phone: Mapped[str | None] = mapped_column(String(20))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    creation_key: Mapped[str | None] = mapped_column(String(64))  # the form that created it; unique index below
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    store: Mapped[Store | None] = relationship()

    __table_args__ = (
        CheckConstraint("role IN ('cashier', 'manager', 'admin')", name="role"),
        Index("uq_staff_creation_key", "creation_key", unique=True),
    )

    @property
    def is_active(self) -> bool:
        return self.active

    def has_role(self, minimum: str) -> bool:
        return ROLE_RANK.get(self.role, 0) >= ROLE_RANK[minimum]


class Tier(db.Model):
    __tablename__ = "tiers"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(16), unique=True)
    name_zh: Mapped[str] = mapped_column(String(50))
    name_en: Mapped[str] = mapped_column(String(50))
    threshold_fen: Mapped[int] = mapped_column(BigInteger)
    multiplier_milli: Mapped[int] = mapped_column(Integer)  # 1500 = 1.5x
    discount_bp: Mapped[int] = mapped_column(Integer)  # 500 = 5%
    birthday_bonus: Mapped[int] = mapped_column(Integer)

    def name(self, locale: str) -> str:
        return self.name_zh if locale.startswith("zh") else self.name_en


class Member(LoginMixin, db.Model):
    __tablename__ = "members"
    __table_args__ = (
        # The dashboard's tier counts and points liability read this index alone, not the wide member rows.
        Index("ix_members_standing", "deleted_at", "tier_id", "store_id", "points_balance"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    card_number: Mapped[str] = mapped_column(String(10), unique=True)
    name: Mapped[str | None] = mapped_column(String(100))
    name_key: Mapped[str | None] = mapped_column(String(100), index=True)  # casefolded, for prefix lookup
    phone: Mapped[str | None] = mapped_column(String(20), unique=True)  # E.164
    phone_last4: Mapped[str | None] = mapped_column(String(4), index=True)
    email: Mapped[str | None] = mapped_column(String(254))
    birthday: Mapped[date | None] = mapped_column(Date)
    birthday_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    guardian_consent: Mapped[bool] = mapped_column(Boolean, default=False)
    privacy_version: Mapped[str] = mapped_column(String(32))
    privacy_consented_at: Mapped[datetime] = mapped_column(UTCDateTime)
    marketing_consent: Mapped[bool] = mapped_column(Boolean, default=False)
    marketing_consent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    tier_id: Mapped[int] = mapped_column(ForeignKey("tiers.id"))
    tier_since: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    points_balance: Mapped[int] = mapped_column(BigInteger, default=0)
    referrer_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"))
    referral_rewarded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_birthday_bonus_year: Mapped[int | None] = mapped_column(Integer)
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id"), index=True)  # where the member registered
    registered_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    api_token_id: Mapped[int | None] = mapped_column(ForeignKey("api_tokens.id"))  # registered by a register
    password_hash: Mapped[str | None] = mapped_column(String(255))
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    locale: Mapped[str | None] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    tier: Mapped[Tier] = relationship()
    store: Mapped[Store] = relationship()
    referrer: Mapped[Member | None] = relationship(remote_side=[id])

    @property
    def is_active(self) -> bool:
        return self.deleted_at is None


class ActivationCode(db.Model):
    """A one-time 6-digit code with which a member sets a password on their phone."""

    __tablename__ = "activation_codes"

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Purchase(db.Model):
    __tablename__ = "purchases"

    id: Mapped[int] = mapped_column(primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id"))
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    api_token_id: Mapped[int | None] = mapped_column(ForeignKey("api_tokens.id"))  # recorded by a register
    receipt_number: Mapped[str | None] = mapped_column(String(64), index=True)
    tier_id: Mapped[int] = mapped_column(ForeignKey("tiers.id"))  # tier held when the purchase started
    gross_fen: Mapped[int] = mapped_column(BigInteger)
    discount_bp: Mapped[int] = mapped_column(Integer)
    discount_fen: Mapped[int] = mapped_column(BigInteger)
    points_redeemed: Mapped[int] = mapped_column(BigInteger, default=0)
    redeemed_value_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    paid_fen: Mapped[int] = mapped_column(BigInteger)
    earn_rate_milli: Mapped[int] = mapped_column(Integer)
    multiplier_milli: Mapped[int] = mapped_column(Integer)
    points_earned: Mapped[int] = mapped_column(BigInteger)
    # Running totals of the returns against this purchase (each return adds to them under the row lock).
    returned_gross_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    refunded_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    points_reversed: Mapped[int] = mapped_column(BigInteger, default=0)
    points_restored: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    member: Mapped[Member] = relationship()
    store: Mapped[Store] = relationship()
    staff: Mapped[Staff | None] = relationship()
    tier: Mapped[Tier] = relationship()

    __table_args__ = (
        Index("ix_purchases_member_created", "member_id", "created_at"),
        # member_id too, so that the dashboard counts active members from the index alone
        Index("ix_purchases_store_created", "store_id", "created_at", "member_id"),
        CheckConstraint("gross_fen > 0", name="gross_positive"),
        CheckConstraint("paid_fen >= 0", name="paid_not_negative"),
        CheckConstraint("returned_gross_fen >= 0 AND returned_gross_fen <= gross_fen", name="returned_within_gross"),
    )

    @property
    def due_fen(self) -> int:
        return self.gross_fen - self.discount_fen

    @property
    def returnable_fen(self) -> int:
        """Shelf-price amount that can still be returned."""
        return self.gross_fen - self.returned_gross_fen


class Return(db.Model):
    """One return against a purchase; its figures follow the cumulative proportions of PRODUCT.md."""

    __tablename__ = "returns"

    id: Mapped[int] = mapped_column(primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    purchase_id: Mapped[int] = mapped_column(ForeignKey("purchases.id"), index=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id"))
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    api_token_id: Mapped[int | None] = mapped_column(ForeignKey("api_tokens.id"))  # recorded by a register
    returned_gross_fen: Mapped[int] = mapped_column(BigInteger)
    refund_fen: Mapped[int] = mapped_column(BigInteger)  # the proportional refund, before any shortfall
    points_restored: Mapped[int] = mapped_column(BigInteger)
    points_reversed: Mapped[int] = mapped_column(BigInteger)
    shortfall_points: Mapped[int] = mapped_column(BigInteger, default=0)  # reversal the balance could not cover
    shortfall_deducted_fen: Mapped[int] = mapped_column(BigInteger, default=0)  # taken off the refund for it
    cash_refund_fen: Mapped[int] = mapped_column(BigInteger)  # what the member gets back
    shortfall_policy: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    purchase: Mapped[Purchase] = relationship()
    member: Mapped[Member] = relationship()
    store: Mapped[Store] = relationship()
    staff: Mapped[Staff | None] = relationship()

    __table_args__ = (
        CheckConstraint("returned_gross_fen > 0", name="returned_positive"),
        Index("ix_returns_store_created", "store_id", "created_at"),
    )


class LedgerEntry(db.Model):
    """One change of a member's points. Rows are only ever inserted."""

    __tablename__ = "ledger_entries"

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    kind: Mapped[str] = mapped_column(String(16))
    points: Mapped[int] = mapped_column(BigInteger)
    balance_after: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(32))  # a code, rendered in the reader's language
    note: Mapped[str | None] = mapped_column(Text)  # free text, e.g. a manager's adjustment reason
    idempotency_key: Mapped[str | None] = mapped_column(String(64))  # manual adjustments; unique index below
    purchase_id: Mapped[int | None] = mapped_column(ForeignKey("purchases.id"), index=True)
    return_id: Mapped[int | None] = mapped_column(ForeignKey("returns.id"), index=True)
    complaint_id: Mapped[int | None] = mapped_column(ForeignKey("complaints.id"))  # goodwill points
    related_member_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"))
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    store_id: Mapped[int | None] = mapped_column(ForeignKey("stores.id"))
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # for credits: when their lot expires
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    store: Mapped[Store | None] = relationship()
    purchase: Mapped[Purchase | None] = relationship()

    __table_args__ = (
        Index("ix_ledger_member_id", "member_id", "id"),
        Index("uq_ledger_entries_idempotency_key", "idempotency_key", unique=True),
        CheckConstraint(
            "kind IN ('earn', 'redeem', 'reverse', 'restore', 'expire', 'adjust', 'bonus')", name="kind"
        ),
    )


class PointLot(db.Model):
    """Points credited together that expire together. `remaining` is what is left to spend.

    The sum of a member's remaining points equals their balance when it is positive (0 when negative).
    """

    __tablename__ = "point_lots"

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    entry_id: Mapped[int] = mapped_column(ForeignKey("ledger_entries.id"), index=True)
    points: Mapped[int] = mapped_column(BigInteger)
    remaining: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)  # None: never
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        Index("ix_point_lots_member_expiry", "member_id", "expires_at"),
        CheckConstraint("remaining >= 0 AND remaining <= points", name="remaining_within_points"),
    )


class LotUse(db.Model):
    """How many points of a lot one debit entry (redeem, reverse, expire, adjust) took."""

    __tablename__ = "lot_uses"

    id: Mapped[int] = mapped_column(primary_key=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("ledger_entries.id"), index=True)
    lot_id: Mapped[int] = mapped_column(ForeignKey("point_lots.id"), index=True)
    points: Mapped[int] = mapped_column(BigInteger)
    restored: Mapped[int] = mapped_column(BigInteger, default=0)  # given back by returns (redemptions only)

    lot: Mapped[PointLot] = relationship()

    __table_args__ = (
        CheckConstraint("points > 0", name="points_positive"),
        CheckConstraint("restored >= 0 AND restored <= points", name="restored_within_points"),
    )


class TierChange(db.Model):
    __tablename__ = "tier_changes"

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    from_tier_id: Mapped[int | None] = mapped_column(ForeignKey("tiers.id"))
    to_tier_id: Mapped[int] = mapped_column(ForeignKey("tiers.id"))
    reason: Mapped[str] = mapped_column(String(16))  # purchase, return, review, override
    purchase_id: Mapped[int | None] = mapped_column(ForeignKey("purchases.id"))
    return_id: Mapped[int | None] = mapped_column(ForeignKey("returns.id"))
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    qualifying_spend_fen: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    from_tier: Mapped[Tier | None] = relationship(foreign_keys=[from_tier_id])
    to_tier: Mapped[Tier] = relationship(foreign_keys=[to_tier_id])


class Setting(db.Model):
    """A rule a manager changed from its default; absent keys use the defaults in rules.py."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)  # JSON
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))


class AuthSession(db.Model):
    """A server-side login. The cookie holds only its random token, so logout truly ends it."""

    __tablename__ = "auth_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"), index=True)
    member_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(255))

    staff: Mapped[Staff | None] = relationship()
    member: Mapped[Member | None] = relationship()


class ApiToken(db.Model):
    """A cash register's bearer token. Only its SHA-256 is kept; the token itself is shown once."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    token_hint: Mapped[str] = mapped_column(String(16))  # the first characters, to tell tokens apart
    creation_key: Mapped[str | None] = mapped_column(String(64), unique=True)  # the form that created it
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))

    store: Mapped[Store] = relationship()

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class ApiRequest(db.Model):
    """A register's POST and the answer it got, so a retry with the same Idempotency-Key gets the same answer."""

    __tablename__ = "api_requests"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_id: Mapped[int] = mapped_column(ForeignKey("api_tokens.id"))
    idempotency_key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))  # SHA-256 of method, path and body
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(255))
    status_code: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("token_id", "idempotency_key", name="uq_api_requests_token_key"),)


COMPLAINT_CATEGORIES = (
    "product_quality", "service_attitude", "price_billing", "returns_refunds", "store_environment",
    "points_membership", "other",
)
COMPLAINT_SEVERITIES = ("low", "normal", "high")
COMPLAINT_STATUSES = ("open", "acknowledged", "resolved", "closed")
COMPLAINT_CHANNELS = ("counter", "phone", "member", "register", "survey")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN (" + ", ".join(f"'{value}'" for value in values) + ")"


class Complaint(db.Model):
    """A complaint, from the counter, the phone, the member's portal or a cash register."""

    __tablename__ = "complaints"

    id: Mapped[int] = mapped_column(primary_key=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(64))  # the form that filed it; unique index below
    member_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"), index=True)
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id"), index=True)
    purchase_id: Mapped[int | None] = mapped_column(ForeignKey("purchases.id"))
    category: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(8))
    description: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="open")
    channel: Mapped[str] = mapped_column(String(16))
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))  # who logged it
    api_token_id: Mapped[int | None] = mapped_column(ForeignKey("api_tokens.id"))
    assigned_to_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    first_response_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    rating: Mapped[int | None] = mapped_column(Integer)  # the member's rating of the resolution, 1-5
    reopened_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)

    member: Mapped[Member | None] = relationship()
    store: Mapped[Store] = relationship()
    purchase: Mapped[Purchase | None] = relationship()
    staff: Mapped[Staff | None] = relationship(foreign_keys=[staff_id])
    assigned_to: Mapped[Staff | None] = relationship(foreign_keys=[assigned_to_id])

    __table_args__ = (
        CheckConstraint(_in("category", COMPLAINT_CATEGORIES), name="category"),
        CheckConstraint(_in("severity", COMPLAINT_SEVERITIES), name="severity"),
        CheckConstraint(_in("status", COMPLAINT_STATUSES), name="status"),
        CheckConstraint(_in("channel", COMPLAINT_CHANNELS), name="channel"),
        CheckConstraint("rating IS NULL OR (rating >= 1 AND rating <= 5)", name="rating"),
        Index("uq_complaints_idempotency_key", "idempotency_key", unique=True),
    )


class ComplaintEvent(db.Model):
    """One step on a complaint's timeline: who, when, and what (opened, a reply, a note, resolved...)."""

    __tablename__ = "complaint_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    complaint_id: Mapped[int] = mapped_column(ForeignKey("complaints.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    body: Mapped[str | None] = mapped_column(Text)
    visible_to_member: Mapped[bool] = mapped_column(Boolean, default=False)
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    member_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"))
    api_token_id: Mapped[int | None] = mapped_column(ForeignKey("api_tokens.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    staff: Mapped[Staff | None] = relationship()


class VisitRating(db.Model):
    """A member's one-tap rating of a visit (a purchase), once per purchase; a 1 or 2 opens a follow-up."""

    __tablename__ = "visit_ratings"

    id: Mapped[int] = mapped_column(primary_key=True)
    purchase_id: Mapped[int] = mapped_column(ForeignKey("purchases.id"), unique=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id"))
    rating: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str | None] = mapped_column(Text)
    complaint_id: Mapped[int | None] = mapped_column(ForeignKey("complaints.id"))  # the follow-up it opened
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)

    purchase: Mapped[Purchase] = relationship()

    __table_args__ = (CheckConstraint("rating >= 1 AND rating <= 5", name="rating"),)


class AuditLog(db.Model):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    member_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"))  # a member acting on their own account
    role: Mapped[str | None] = mapped_column(String(16))  # the actor's role then: admin ... member, register, system
    store_id: Mapped[int | None] = mapped_column(ForeignKey("stores.id"))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(128))
    before: Mapped[str | None] = mapped_column(Text)  # JSON
    after: Mapped[str | None] = mapped_column(Text)  # JSON
    ip: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class StoreTakings(db.Model):
    """A store's total sales for one local day (members and everyone else), from the till's end-of-day report.

    Member sales are recorded purchase by purchase; this is what they are a share of."""

    __tablename__ = "store_takings"

    id: Mapped[int] = mapped_column(primary_key=True)
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id"))
    day: Mapped[date] = mapped_column(Date)
    amount_fen: Mapped[int] = mapped_column(BigInteger)
    entered_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    store: Mapped[Store] = relationship()

    __table_args__ = (
        UniqueConstraint("store_id", "day", name="uq_store_takings_store_day"),
        CheckConstraint("amount_fen >= 0", name="amount_not_negative"),
    )


IMPORT_STATUSES = ("pending", "running", "done", "failed")


class MemberImport(db.Model):
    """One upload of existing members (CSV), worked through in steps so a progress bar can follow it."""

    __tablename__ = "member_imports"

    id: Mapped[int] = mapped_column(primary_key=True)
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id"))  # where the imported members count as registered
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    creation_key: Mapped[str | None] = mapped_column(String(64), unique=True)  # the form that started it
    filename: Mapped[str] = mapped_column(String(255))
    file_sha256: Mapped[str] = mapped_column(String(64), index=True)
    encoding: Mapped[str] = mapped_column(String(16))
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    content: Mapped[str] = mapped_column(Text)  # the decoded CSV text
    total_rows: Mapped[int] = mapped_column(Integer, default=0)
    processed_rows: Mapped[int] = mapped_column(Integer, default=0)
    created_count: Mapped[int] = mapped_column(Integer, default=0)
    skipped_count: Mapped[int] = mapped_column(Integer, default=0)  # already members: nothing added
    refused_count: Mapped[int] = mapped_column(Integer, default=0)
    points_total: Mapped[int] = mapped_column(BigInteger, default=0)  # opening balances posted
    report: Mapped[str] = mapped_column(Text, default="[]")  # JSON: [{"row", "reason", ...}] of refused/skipped rows
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    store: Mapped[Store] = relationship()
    staff: Mapped[Staff | None] = relationship()

    __table_args__ = (CheckConstraint(_in("status", IMPORT_STATUSES), name="status"),)


MESSAGE_KINDS = ("service", "marketing")
MESSAGE_CHANNELS = ("inbox", "email", "sms")
DELIVERY_STATUSES = ("queued", "sent", "failed", "cancelled")


class MessageTemplate(db.Model):
    """A message in both languages with placeholders such as {name} or {balance}, for care or a campaign."""

    __tablename__ = "message_templates"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)  # birthday, expiry_reminder, tier_change, or a slug
    kind: Mapped[str] = mapped_column(String(16))  # service or marketing
    name: Mapped[str] = mapped_column(String(100))
    subject_zh: Mapped[str] = mapped_column(String(200))
    body_zh: Mapped[str] = mapped_column(Text)
    subject_en: Mapped[str] = mapped_column(String(200))
    body_en: Mapped[str] = mapped_column(Text)
    creation_key: Mapped[str | None] = mapped_column(String(64), unique=True)  # the form that created it
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (CheckConstraint(_in("kind", MESSAGE_KINDS), name="kind"),)


class Campaign(db.Model):
    """A marketing message to an audience of members, with a random control group held back to measure it."""

    __tablename__ = "campaigns"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    template_id: Mapped[int] = mapped_column(ForeignKey("message_templates.id"))
    store_id: Mapped[int | None] = mapped_column(ForeignKey("stores.id"))  # whose members (None: every store)
    audience: Mapped[str] = mapped_column(Text, default="{}")  # JSON: the filters that chose the members
    control_percent: Mapped[int] = mapped_column(Integer, default=10)
    seed: Mapped[int] = mapped_column(BigInteger, default=0)  # of the random draw of the control group
    prepared_count: Mapped[int] = mapped_column(Integer, default=0)  # sent-group members queued so far
    send_at: Mapped[datetime] = mapped_column(UTCDateTime)
    audience_size: Mapped[int] = mapped_column(Integer, default=0)
    control_size: Mapped[int] = mapped_column(Integer, default=0)
    creation_key: Mapped[str | None] = mapped_column(String(64), unique=True)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # every message of the sent group queued
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # What the page calls its status (preparing, scheduled, sending, done) follows from these and the deliveries.

    template: Mapped[MessageTemplate] = relationship()
    store: Mapped[Store | None] = relationship()


class CampaignMember(db.Model):
    """A member a campaign chose: sent the message, or held back in the control group."""

    __tablename__ = "campaign_members"

    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id"))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"), index=True)
    control: Mapped[bool] = mapped_column(Boolean, default=False)

    __table_args__ = (UniqueConstraint("campaign_id", "member_id", name="uq_campaign_members_campaign_member"),)


class Message(db.Model):
    """One message to one member, written in their language; it reaches them through one or more deliveries."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    kind: Mapped[str] = mapped_column(String(16))  # service or marketing
    purpose: Mapped[str] = mapped_column(String(32))  # birthday, expiry_reminder, tier_change, campaign, ...
    campaign_id: Mapped[int | None] = mapped_column(ForeignKey("campaigns.id"), index=True)
    template_id: Mapped[int | None] = mapped_column(ForeignKey("message_templates.id"))
    store_id: Mapped[int | None] = mapped_column(ForeignKey("stores.id"))  # whose clock (quiet hours) applies
    locale: Mapped[str] = mapped_column(String(8))
    subject: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    dedupe_key: Mapped[str | None] = mapped_column(String(128))  # one message per key, ever; unique index below
    not_before: Mapped[datetime] = mapped_column(UTCDateTime)  # not sent before this (a campaign's time)
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    unsubscribed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # its unsubscribe link was used
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    member: Mapped[Member] = relationship()

    __table_args__ = (
        CheckConstraint(_in("kind", MESSAGE_KINDS), name="kind"),
        Index("uq_messages_dedupe_key", "dedupe_key", unique=True),
        Index("ix_messages_member_id", "member_id", "id"),
    )


class MessageDelivery(db.Model):
    """A message on one channel (the inbox, e-mail or SMS): the outbox row that send-messages works through."""

    __tablename__ = "message_deliveries"

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id"), index=True)
    channel: Mapped[str] = mapped_column(String(8))
    address: Mapped[str | None] = mapped_column(String(254))  # the e-mail address or phone it goes to
    status: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    message: Mapped[Message] = relationship()

    __table_args__ = (
        CheckConstraint(_in("channel", MESSAGE_CHANNELS), name="channel"),
        CheckConstraint(_in("status", DELIVERY_STATUSES), name="status"),
        Index("ix_message_deliveries_outbox", "status", "next_attempt_at"),
    )


class ActivityBucket(db.Model):
    """A store's figures for 15 minutes (UTC), added to by each transaction (portal/rollups.py)."""

    __tablename__ = "activity_buckets"

    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id"), primary_key=True)
    bucket_start: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    purchases: Mapped[int] = mapped_column(BigInteger, default=0)
    paid_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    refunded_fen: Mapped[int] = mapped_column(BigInteger, default=0)
    new_members: Mapped[int] = mapped_column(BigInteger, default=0)
    points_earned: Mapped[int] = mapped_column(BigInteger, default=0)
    points_bonus: Mapped[int] = mapped_column(BigInteger, default=0)
    points_redeemed: Mapped[int] = mapped_column(BigInteger, default=0)
    points_expired: Mapped[int] = mapped_column(BigInteger, default=0)
    points_restored: Mapped[int] = mapped_column(BigInteger, default=0)
    points_reversed: Mapped[int] = mapped_column(BigInteger, default=0)
    points_adjusted_in: Mapped[int] = mapped_column(BigInteger, default=0)
    points_adjusted_out: Mapped[int] = mapped_column(BigInteger, default=0)

    __table_args__ = (Index("ix_activity_buckets_bucket_start", "bucket_start"),)


class StaffBucket(db.Model):
    """What one staff member did at a store in 15 minutes (UTC): members registered, purchases recorded."""

    __tablename__ = "staff_buckets"

    staff_id: Mapped[int] = mapped_column(ForeignKey("staff.id"), primary_key=True)
    store_id: Mapped[int] = mapped_column(ForeignKey("stores.id"), primary_key=True)
    bucket_start: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    registered: Mapped[int] = mapped_column(BigInteger, default=0)
    purchases: Mapped[int] = mapped_column(BigInteger, default=0)
    paid_fen: Mapped[int] = mapped_column(BigInteger, default=0)

    __table_args__ = (Index("ix_staff_buckets_bucket_start", "bucket_start"),)


class LoginFailure(db.Model):
    """One failed sign-in or activation attempt, kept a short while, so that every app server counts the same
    failures. The account is a keyed hash: no username or phone is stored here."""

    __tablename__ = "login_failures"

    id: Mapped[int] = mapped_column(primary_key=True)
    account: Mapped[str] = mapped_column(String(64))
    ip: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        Index("ix_login_failures_account", "account", "created_at"),
        Index("ix_login_failures_ip", "ip", "created_at"),
    )


class JobLock(db.Model):
    """A lease that lets one app server at a time run a daily job (send-care, send-messages)."""

    __tablename__ = "job_locks"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(64))
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


__all__ = [
    "ActivationCode", "ActivityBucket", "ApiRequest", "Campaign", "CampaignMember", "JobLock", "LoginFailure", "MemberImport", "Message",
    "MessageDelivery", "MessageTemplate", "StoreTakings", "ApiToken", "AuditLog", "Complaint", "ComplaintEvent", "VisitRating", "AuthSession", "LedgerEntry", "LedgerKind", "LotUse", "Member", "PointLot",
    "Purchase", "Return",
    "Role", "ROLE_RANK", "Setting", "Staff", "StaffBucket", "Store", "Tier", "TierChange", "utcnow",
]
