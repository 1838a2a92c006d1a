"""The JSON shapes of the API, fixed by contract: amounts as "123.45", points as integers,
times as ISO 8601 with the store's offset, multipliers and percentages as decimal strings."""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from .. import ledger, tiers
from ..models import Complaint, LedgerEntry, Member, Purchase, Return, Tier
from ..phones import mask_phone
from ..rules import Rules


def amount(fen: int) -> str:
    """Fen as a decimal string with two places: 12345 -> "123.45"."""
    sign = "-" if fen < 0 else ""
    whole, part = divmod(abs(int(fen)), 100)
    return f"{sign}{whole}.{part:02d}"


def _plain(value: Decimal) -> str:
    """A decimal without trailing zeros or exponent: 1.50 -> "1.5", 10 -> "10"."""
    return format(value.normalize(), "f")


def multiplier(milli: int) -> str:
    """1500 -> "1.5", 1000 -> "1"."""
    return _plain(Decimal(milli) / 1000)


def discount_percent(basis_points: int) -> str:
    """500 -> "5", 250 -> "2.5"."""
    return _plain(Decimal(basis_points) / 100)


def timestamp(moment: datetime, zone: str) -> str:
    """ISO 8601 with the store's offset, to the second."""
    return moment.astimezone(ZoneInfo(zone)).isoformat(timespec="seconds")


def tier(row: Tier, locale: str) -> dict:
    return {"code": row.code, "name": row.name(locale), "multiplier": multiplier(row.multiplier_milli),
            "discount_percent": discount_percent(row.discount_bp)}


def member(session: Session, row: Member, *, now: datetime, rules: Rules, locale: str,
           all_tiers: list[Tier] | None = None) -> dict:
    """A member as the register sees them: masked phone, tier, balance and what the next tier needs."""
    spend = tiers.qualifying_spend(session, row.id, now, rules.qualifying_days)
    progress = tiers.progress(all_tiers or tiers.all_tiers(session), row.tier, spend)
    return {
        "card_number": row.card_number,
        "name": row.name,
        "phone_masked": mask_phone(row.phone),
        "tier": tier(row.tier, locale),
        "balance": row.points_balance,
        "available_points": ledger.available(session, row, now),
        "qualifying_spend": amount(spend),
        "next_tier": (
            {"code": progress.next_tier.code, "spend_needed": amount(progress.needed_fen)}
            if progress.next_tier else None
        ),
    }


def ledger_entry(row: LedgerEntry, zone: str) -> dict:
    return {"id": row.id, "kind": row.kind, "points": row.points, "reason": row.reason,
            "created_at": timestamp(row.created_at, zone), "purchase_id": row.purchase_id,
            "return_id": row.return_id, "balance_after": row.balance_after}


def purchase(row: Purchase, *, tier_changed: bool, locale: str, zone: str) -> dict:
    """A recorded purchase with the member's balance and tier right after it."""
    return {
        "purchase_id": row.id,
        "card_number": row.member.card_number,
        "gross_amount": amount(row.gross_fen),
        "discount_amount": amount(row.discount_fen),
        "redeemed_points": row.points_redeemed,
        "redeemed_amount": amount(row.redeemed_value_fen),
        "paid_amount": amount(row.paid_fen),
        "points_earned": row.points_earned,
        "balance": row.member.points_balance,
        "tier": tier(row.member.tier, locale),
        "tier_changed": tier_changed,
        "receipt_no": row.receipt_number,
        "created_at": timestamp(row.created_at, zone),
    }


def return_(row: Return, *, tier_changed: bool, locale: str, zone: str) -> dict:
    """A recorded return with the member's balance and tier right after it."""
    return {
        "return_id": row.id,
        "purchase_id": row.purchase_id,
        "gross_amount": amount(row.returned_gross_fen),
        "refund_amount": amount(row.cash_refund_fen),
        "points_reversed": row.points_reversed,
        "points_restored": row.points_restored,
        "shortfall_points": row.shortfall_points,
        "shortfall_amount": amount(row.shortfall_deducted_fen),
        "balance": row.member.points_balance,
        "tier": tier(row.member.tier, locale),
        "tier_changed": tier_changed,
        "created_at": timestamp(row.created_at, zone),
    }


def complaint(row: Complaint, zone: str) -> dict:
    return {"complaint_id": row.id, "status": row.status, "created_at": timestamp(row.created_at, zone)}
