"""The checkout arithmetic of PRODUCT.md at its boundaries: money, points, phones, cards, tiers, expiry.

These are pure functions; no database is needed. Error messages are lazy gettext strings, so a
tiny Flask app with Babel provides the context in which they render (in English, the default).
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from flask_babel import Babel

from portal.cards import is_valid_card_number, luhn_check_digit, new_card_number
from portal.checkout import CheckoutError, max_redeemable, member_discount, points_earned, quote
from portal.ledger import lot_expiry
from portal.models import Tier
from portal.money import InputError, format_yuan, parse_money, parse_points, round_half_up_div
from portal.phones import PhoneError, display_phone, mask_phone, normalise_phone
from portal.rules import DEFAULT_RULES, RuleError, Rules, parse_rule
from portal.tiers import progress, tier_for_spend

UTC = timezone.utc
SHANGHAI = ZoneInfo("Asia/Shanghai")
CAP = DEFAULT_RULES.purchase_cap_fen

# (code, threshold_fen, multiplier_milli, discount_bp): the default tiers of PRODUCT.md.
DEFAULT_TIERS = [
    ("member", 0, 1000, 0),
    ("silver", 100_000, 1200, 200),
    ("gold", 500_000, 1500, 500),
    ("diamond", 2_000_000, 2000, 800),
]
TIER_TERMS = {code: (multiplier, discount) for code, _, multiplier, discount in DEFAULT_TIERS}


@pytest.fixture(scope="module", autouse=True)
def babel_context():
    """An app context so lazy gettext messages can be rendered with str()."""
    app = Flask(__name__)
    Babel(app)
    with app.app_context():
        yield


def make_tiers() -> list[Tier]:
    """The default tiers as unsaved model instances, lowest threshold first."""
    return [
        Tier(id=index, code=code, name_zh=code, name_en=code.title(), threshold_fen=threshold,
             multiplier_milli=multiplier, discount_bp=discount, birthday_bonus=0)
        for index, (code, threshold, multiplier, discount) in enumerate(DEFAULT_TIERS, start=1)
    ]


def quote_for(tier_code: str, gross_fen: int, points: int = 0, balance: int = 0, rules: Rules = DEFAULT_RULES):
    multiplier, discount = TIER_TERMS[tier_code]
    return quote(gross_fen, discount_bp=discount, multiplier_milli=multiplier,
                 points_to_redeem=points, balance=balance, rules=rules)


def checkout_error(tier_code: str, gross_fen: int, points: int = 0, balance: int = 0,
                   rules: Rules = DEFAULT_RULES) -> CheckoutError:
    with pytest.raises(CheckoutError) as caught:
        quote_for(tier_code, gross_fen, points, balance, rules)
    return caught.value


# --- Rules -----------------------------------------------------------------------------------------

def test_default_rules_are_those_of_product_md():
    rules = Rules()
    assert rules.earn_rate_milli == 1000  # 1 point per ¥1
    assert rules.redeem_points_per_yuan == 100  # 100 points = ¥1.00
    assert rules.redeem_minimum == 100
    assert rules.redeem_cap_percent == 100
    assert rules.purchase_cap_fen == 100_000_000  # ¥1,000,000.00
    assert format_yuan(rules.purchase_cap_fen) == "¥1,000,000.00"
    assert rules.expiry_days == 730
    assert rules.shortfall_policy == "deduct"
    assert rules.referral_bonus == 200
    assert rules.guardian_age == 14
    assert rules.activation_minutes == 30
    assert rules.qualifying_days == 365
    assert DEFAULT_RULES == rules


@pytest.mark.parametrize(("points", "fen"), [(0, 0), (1, 1), (100, 100), (2050, 2050), (36944, 36944)])
def test_default_points_value_is_one_fen_a_point(points, fen):
    assert DEFAULT_RULES.points_value_fen(points) == fen
    assert DEFAULT_RULES.points_for_value(fen) == points


def test_points_value_rounds_down_with_other_rates():
    rules = Rules(redeem_points_per_yuan=300)  # 3 points a fen
    assert rules.points_value_fen(299) == 99
    assert rules.points_value_fen(300) == 100
    assert rules.points_for_value(100) == 300


# --- Money input -------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "fen"),
    [
        ("12", 1200),
        ("12.5", 1250),
        ("12.50", 1250),
        ("¥12.50", 1250),
        ("￥12.50", 1250),  # full-width yen sign
        ("１２．５０", 1250),  # full-width digits and point
        ("￥１２．５", 1250),
        (" 12.50 ", 1250),
        ("\u300012.50\u3000", 1250),  # ideographic spaces around
        ("¥ 12.50", 1250),
        ("0.01", 1),
        ("0.1", 10),
        ("1", 100),
        ("007", 700),
        ("999999.99", 99_999_999),
        ("1000000", CAP),
        ("1000000.00", CAP),
    ],
)
def test_parse_money_accepts(text, fen):
    assert parse_money(text, CAP) == fen


@pytest.mark.parametrize(
    ("text", "fen"),
    [
        ("1,234.50", 123_450),
        ("１，２３４．５０", 123_450),
        ("1,000,000.00", CAP),
        ("¥1,234", 123_400),
    ],
)
def test_parse_money_accepts_comma_thousands_separators_in_groups_of_three(text, fen):
    """Not listed in PRODUCT.md but accepted: commas only between groups of exactly three digits."""
    assert parse_money(text, CAP) == fen


def test_parse_money_accepts_a_trailing_point():
    """'12.' reads as ¥12.00 (documented behaviour, not in PRODUCT.md's list)."""
    assert parse_money("12.", CAP) == 1200


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "Enter an amount"),
        ("", "Enter an amount"),
        ("   ", "Enter an amount"),
        ("¥", "Enter an amount"),
        ("abc", "such as 12.50"),
        ("0", "more than zero"),
        ("0.00", "more than zero"),
        ("0.0", "more than zero"),
        ("-5", "more than zero"),
        ("-0.01", "more than zero"),
        ("¥-5", "more than zero"),
        ("－５", "more than zero"),  # full-width minus
        ("12.345", "two decimal places"),
        ("0.001", "two decimal places"),
        ("1e3", "such as 12.50"),
        ("NaN", "such as 12.50"),
        ("inf", "such as 12.50"),
        ("0x10", "such as 12.50"),
        ("1_000", "such as 12.50"),
        ("12,34", "such as 12.50"),  # a decimal comma is not a thousands separator
        ("1,23", "such as 12.50"),
        ("1,2345", "such as 12.50"),
        (",123", "such as 12.50"),
        ("12.5.0", "such as 12.50"),
        (".5", "such as 12.50"),
        ("+5", "such as 12.50"),
        ("¥¥5", "such as 12.50"),
        ("$12", "such as 12.50"),
        ("12元", "such as 12.50"),
        ("1000000.01", "limit of ¥1,000,000.00"),
        ("1,000,000.01", "limit of ¥1,000,000.00"),
        ("10000000000000000", "limit of ¥1,000,000.00"),  # too long to be an amount
        ("9" * 5000, "limit of ¥1,000,000.00"),
    ],
)
def test_parse_money_refuses(text, message):
    with pytest.raises(InputError) as caught:
        parse_money(text, CAP)
    assert message in str(caught.value.args[0])


def test_parse_money_cap_boundary_with_a_configured_cap():
    assert parse_money("50.00", 5000) == 5000
    with pytest.raises(InputError) as caught:
        parse_money("50.01", 5000)
    assert "¥50.00" in str(caught.value.args[0])


@pytest.mark.parametrize("text", ["٣", "١٢.٥٠", "१२.५०"])  # Arabic-Indic and Devanagari digits
def test_parse_money_refuses_digits_that_are_neither_ascii_nor_full_width(text):
    """PRODUCT.md: ASCII or full-width digits, 'anything else' refused. parse_points already refuses these.

    BUG (portal/money.py, parse_money): `\\d` in _MONEY matches every Unicode decimal digit and int()
    converts them, so '٣' is read as ¥3.00 and '١٢.٥٠' as ¥12.50.
    """
    with pytest.raises(InputError):
        amount = parse_money(text, CAP)
        pytest.fail(f"parse_money({text!r}) accepted non-ASCII digits as {amount} fen")


@pytest.mark.parametrize("text", ["12 34", "1 2", "１２\u3000３４"])
def test_parse_money_refuses_spaces_between_digits(text):
    """BUG (portal/money.py, parse_money): every space is removed before matching, so '12 34' (a slip for
    12.34) is read as ¥1,234.00, a hundred times the intended amount, instead of being refused."""
    with pytest.raises(InputError):
        amount = parse_money(text, CAP)
        pytest.fail(f"parse_money({text!r}) accepted it as {format_yuan(amount)}")


# --- Points input ------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "points"),
    [
        (None, 0),
        ("", 0),
        ("  ", 0),
        ("0", 0),
        ("０", 0),
        ("100", 100),
        ("１００", 100),
        (" 2050 ", 2050),
        ("1,000", 1000),
        ("999999999999", 999_999_999_999),
    ],
)
def test_parse_points_accepts(text, points):
    assert parse_points(text) == points


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("-1", "cannot be negative"),
        ("－100", "cannot be negative"),
        ("+100", "whole number"),
        ("1.5", "whole number"),
        ("100.00", "whole number"),
        ("abc", "whole number"),
        ("1e3", "whole number"),
        ("1 000", "whole number"),
        ("1,0,0", "whole number"),
        ("10,0", "whole number"),
        ("٣", "whole number"),
        ("1000000000000", "more points than the balance"),
    ],
)
def test_parse_points_refuses(text, message):
    with pytest.raises(InputError) as caught:
        parse_points(text)
    assert message in str(caught.value.args[0])


# --- Money display and rounding ------------------------------------------------------------------

@pytest.mark.parametrize(
    ("fen", "text"),
    [
        (0, "¥0.00"),
        (1, "¥0.01"),
        (10, "¥0.10"),
        (100, "¥1.00"),
        (1944, "¥19.44"),
        (123_456, "¥1,234.56"),
        (CAP, "¥1,000,000.00"),
        (-100, "-¥1.00"),
        (-1, "-¥0.01"),
    ],
)
def test_format_yuan(fen, text):
    assert format_yuan(fen) == text


@pytest.mark.parametrize(
    ("numerator", "denominator", "result"),
    [
        (0, 7, 0),
        (1, 3, 0),  # 0.333
        (1, 2, 1),  # 0.5 rounds up
        (3, 2, 2),  # 1.5 rounds up
        (5, 2, 3),
        (2, 3, 1),  # 0.667
        (19_444, 10, 1944),  # 1944.4
        (19_445, 10, 1945),  # 1944.5
        (19_449, 10, 1945),
        (34_894 * 10_000, 38_888, 8973),  # worked example 1, first return
        (34_894 * 38_888, 38_888, 34_894),
    ],
)
def test_round_half_up_div(numerator, denominator, result):
    assert round_half_up_div(numerator, denominator) == result


# --- Member discount and points earned ---------------------------------------------------------

@pytest.mark.parametrize(
    ("gross", "discount_bp", "discount"),
    [
        (38_888, 500, 1944),  # 1,944.4 fen rounds down
        (38_890, 500, 1945),  # 1,944.5 fen rounds up
        (38_898, 500, 1945),  # 1,944.9
        (10, 500, 1),  # 0.5 fen rounds up
        (9, 500, 0),  # 0.45 fen
        (30, 500, 2),  # 1.5 fen
        (25, 200, 1),  # 0.5 fen at silver
        (24, 200, 0),  # 0.48 fen
        (1, 800, 0),  # 1 fen at diamond: 0.08 fen
        (7, 800, 1),  # 0.56 fen
        (1000, 200, 20),
        (15_000, 200, 300),
        (CAP, 800, 8_000_000),
        (CAP, 0, 0),
        (12_345, 5000, 6173),  # 50%, the highest a manager may set: 6,172.5 rounds up
    ],
)
def test_member_discount_rounds_half_up_to_the_fen(gross, discount_bp, discount):
    assert member_discount(gross, discount_bp) == discount


@pytest.mark.parametrize(
    ("paid", "earn_rate_milli", "multiplier_milli", "earned"),
    [
        (34_894, 1000, 1500, 523),  # floor(348.94 × 1.5) = floor(523.41)
        (980, 1000, 1200, 11),  # floor(9.8 × 1.2) = floor(11.76)
        (14_700, 1000, 1200, 176),  # floor(147 × 1.2) = floor(176.4)
        (0, 1000, 2000, 0),
        (1, 1000, 2000, 0),
        (49, 1000, 2000, 0),  # 0.98
        (50, 1000, 2000, 1),  # exactly 1.0
        (99, 1000, 1000, 0),
        (100, 1000, 1000, 1),
        (199, 1000, 1000, 1),
        (84, 1000, 1200, 1),  # 0.84 × 1.2 = 1.008
        (83, 1000, 1200, 0),  # 0.996
        (100, 1500, 1000, 1),  # 1.5 points per yuan
        (CAP, 1000, 2000, 2_000_000),
    ],
)
def test_points_earned_is_floored(paid, earn_rate_milli, multiplier_milli, earned):
    assert points_earned(paid, earn_rate_milli, multiplier_milli) == earned


# --- Checkout: the worked examples ----------------------------------------------------------------

def test_worked_example_1_gold_member_pays_partly_with_points():
    receipt = quote_for("gold", 38_888, points=2050, balance=5000)
    assert receipt.discount_bp == 500
    assert format_yuan(receipt.discount_fen) == "¥19.44"
    assert format_yuan(receipt.due_fen) == "¥369.44"
    assert receipt.points_redeemed == 2050
    assert format_yuan(receipt.redeemed_value_fen) == "¥20.50"
    assert format_yuan(receipt.paid_fen) == "¥348.94"
    assert receipt.multiplier_milli == 1500
    assert receipt.earn_rate_milli == 1000
    assert receipt.points_earned == 523


def test_worked_example_2_silver_small_purchase():
    receipt = quote_for("silver", 1000)
    assert format_yuan(receipt.discount_fen) == "¥0.20"
    assert format_yuan(receipt.paid_fen) == "¥9.80"
    assert receipt.points_redeemed == 0
    assert receipt.redeemed_value_fen == 0
    assert receipt.points_earned == 11


def test_worked_example_3_silver_terms_apply_to_the_purchase_that_reaches_gold():
    tiers = make_tiers()
    spend_before = 490_000
    assert tier_for_spend(tiers, spend_before).code == "silver"
    receipt = quote_for("silver", 15_000)
    assert format_yuan(receipt.discount_fen) == "¥3.00"
    assert format_yuan(receipt.paid_fen) == "¥147.00"
    assert receipt.points_earned == 176
    spend_after = spend_before + receipt.paid_fen
    assert format_yuan(spend_after) == "¥5,047.00"
    assert tier_for_spend(tiers, spend_after).code == "gold"


def test_worked_example_4_purchases_before_the_shortfall():
    first = quote_for("member", 50_000)
    assert (first.discount_fen, first.paid_fen, first.points_earned) == (0, 50_000, 500)
    balance = first.points_earned
    second = quote_for("member", 5000, points=400, balance=balance)
    assert format_yuan(second.paid_fen) == "¥46.00"
    assert second.points_earned == 46
    assert balance - second.points_redeemed + second.points_earned == 146
    assert first.paid_fen + second.paid_fen - 50_000 == 4600  # spend after returning the ¥500.00


@pytest.mark.parametrize("tier_code", list(TIER_TERMS))
def test_one_fen_purchase_has_no_discount_and_earns_nothing(tier_code):
    receipt = quote_for(tier_code, 1)
    assert (receipt.discount_fen, receipt.due_fen, receipt.paid_fen, receipt.points_earned) == (0, 1, 1, 0)


# --- Checkout: the purchase amount ----------------------------------------------------------------

@pytest.mark.parametrize("tier_code", list(TIER_TERMS))
def test_purchase_of_exactly_the_cap_is_accepted(tier_code):
    receipt = quote_for(tier_code, CAP)
    assert receipt.discount_fen + receipt.due_fen == CAP


@pytest.mark.parametrize(
    ("gross", "message"),
    [
        (CAP + 1, "more than the limit"),
        (10 * CAP, "more than the limit"),
        (0, "more than zero"),
        (-1, "more than zero"),
    ],
)
def test_purchase_amount_out_of_range_is_refused_beside_the_amount(gross, message):
    error = checkout_error("gold", gross)
    assert error.field == "gross"
    assert message in str(error.message)


def test_purchase_cap_follows_the_rules():
    rules = Rules(purchase_cap_fen=5000)
    assert quote_for("member", 5000, rules=rules).paid_fen == 5000
    assert checkout_error("member", 5001, rules=rules).field == "gross"


# --- Checkout: redemption -------------------------------------------------------------------------
# Gold, gross ¥388.88: due ¥369.44 = 36,944 fen = 36,944 points at most.

@pytest.mark.parametrize(
    ("points", "balance", "message"),
    [
        (1, 5000, "at least 100 points"),
        (99, 5000, "at least 100 points"),
        (2050, 2049, "only 2,049 points"),
        (100, 99, "only 99 points"),
        (100, 0, "only 0 points"),
        (100, -354, "only 0 points"),  # a negative balance (shortfall policy) shows as 0
        (36_945, 40_000, "At most 36,944 points"),
        (40_000, 40_000, "At most 36,944 points"),
        (-1, 5000, "cannot be negative"),
        (-100, 5000, "cannot be negative"),
    ],
)
def test_redemption_refused(points, balance, message):
    error = checkout_error("gold", 38_888, points=points, balance=balance)
    assert error.field == "points"
    assert message in str(error.message)


@pytest.mark.parametrize(
    ("points", "balance", "paid"),
    [
        (0, 0, 36_944),
        (0, -354, 36_944),
        (100, 100, 36_844),  # the minimum, and the whole balance
        (2050, 2050, 34_894),
        (36_943, 40_000, 1),
    ],
)
def test_redemption_accepted(points, balance, paid):
    receipt = quote_for("gold", 38_888, points=points, balance=balance)
    assert receipt.points_redeemed == points
    assert receipt.redeemed_value_fen == points
    assert receipt.paid_fen == paid


def test_redeeming_exactly_the_amount_due_pays_nothing_and_earns_nothing():
    receipt = quote_for("gold", 38_888, points=36_944, balance=36_944)
    assert receipt.due_fen == 36_944
    assert receipt.redeemed_value_fen == receipt.due_fen
    assert receipt.paid_fen == 0
    assert receipt.points_earned == 0


def test_redemption_is_measured_against_the_amount_due_after_the_discount_not_the_gross():
    error = checkout_error("gold", 38_888, points=38_888, balance=50_000)
    assert error.field == "points"


def test_no_redemption_when_the_amount_due_is_below_the_minimum():
    assert max_redeemable(50, 1000, DEFAULT_RULES) == 50
    for points in (50, 100):
        assert checkout_error("member", 50, points=points, balance=1000).field == "points"


@pytest.mark.parametrize(
    ("due", "balance", "cap_percent", "most"),
    [
        (36_944, 40_000, 100, 36_944),
        (36_944, 2050, 100, 2050),
        (36_944, 40_000, 50, 18_472),
        (36_945, 40_000, 50, 18_472),  # 18,472.5 fen rounds down
        (36_944, 40_000, 0, 0),
        (36_944, 0, 100, 0),
        (36_944, -354, 100, 0),
        (0, 1000, 100, 0),
    ],
)
def test_max_redeemable(due, balance, cap_percent, most):
    assert max_redeemable(due, balance, Rules(redeem_cap_percent=cap_percent)) == most


def test_redeem_cap_percent_boundary():
    rules = Rules(redeem_cap_percent=50)
    receipt = quote_for("gold", 38_888, points=18_472, balance=40_000, rules=rules)
    assert receipt.paid_fen == 36_944 - 18_472
    error = checkout_error("gold", 38_888, points=18_473, balance=40_000, rules=rules)
    assert error.field == "points"
    assert "At most 18,472 points" in str(error.message)


def test_redeem_minimum_follows_the_rules():
    rules = Rules(redeem_minimum=500)
    assert checkout_error("gold", 38_888, points=499, balance=5000, rules=rules).field == "points"
    assert quote_for("gold", 38_888, points=500, balance=5000, rules=rules).paid_fen == 36_444


def test_earn_rate_follows_the_rules():
    rules = Rules(earn_rate_milli=2500)  # 2.5 points per ¥1
    receipt = quote_for("gold", 38_888, points=2050, balance=5000, rules=rules)
    assert receipt.earn_rate_milli == 2500
    assert receipt.points_earned == 1308  # floor(348.94 × 2.5 × 1.5) = floor(1308.525)


# --- Tiers ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("spend", "code"),
    [
        (0, "member"),
        (99_999, "member"),  # ¥999.99
        (100_000, "silver"),  # exactly ¥1,000.00
        (100_001, "silver"),
        (499_999, "silver"),
        (500_000, "gold"),
        (1_999_999, "gold"),
        (2_000_000, "diamond"),
        (10**12, "diamond"),
        (-1, "member"),
    ],
)
def test_tier_for_spend_is_the_highest_threshold_reached(spend, code):
    assert tier_for_spend(make_tiers(), spend).code == code


@pytest.mark.parametrize(
    ("current", "spend", "next_code", "needed", "percent"),
    [
        ("member", 0, "silver", 100_000, 0),
        ("member", 99_999, "silver", 1, 99),
        ("member", 50_000, "silver", 50_000, 50),
        ("member", 150_000, "silver", 0, 100),  # reached, not yet re-evaluated
        ("silver", 100_000, "gold", 400_000, 0),
        ("silver", 490_000, "gold", 10_000, 97),
        ("gold", 300_000, "diamond", 1_700_000, 0),  # kept for 12 months below its threshold
        ("gold", 1_999_999, "diamond", 1, 99),
        ("diamond", 2_000_000, None, 0, 100),
        ("diamond", 0, None, 0, 100),
    ],
)
def test_progress_towards_the_next_tier(current, spend, next_code, needed, percent):
    tiers = make_tiers()
    held = next(tier for tier in tiers if tier.code == current)
    shown = progress(tiers, held, spend)
    assert shown.tier is held
    assert (shown.next_tier.code if shown.next_tier else None) == next_code
    assert shown.needed_fen == needed
    assert shown.percent == percent


# --- Points expiry --------------------------------------------------------------------------------

def test_worked_example_5_points_last_until_the_end_of_the_730th_day():
    earned = datetime(2024, 3, 10, 10, 0, tzinfo=SHANGHAI).astimezone(UTC)
    expires = lot_expiry(earned, "Asia/Shanghai", 730)
    assert expires == datetime(2026, 3, 11, 0, 0, tzinfo=SHANGHAI)
    assert expires == datetime(2026, 3, 10, 16, 0, tzinfo=UTC)
    assert expires.utcoffset() == timedelta(0)  # returned in the zone it was given (UTC)
    assert datetime(2026, 3, 10, 23, 59, 59, tzinfo=SHANGHAI) < expires  # still usable on 10 March
    assert datetime(2026, 3, 11, 0, 0, tzinfo=SHANGHAI) >= expires  # gone for the job on 11 March


@pytest.mark.parametrize(
    ("earned_store_time", "expiry_store_day"),
    [
        (datetime(2024, 3, 10, 0, 1), datetime(2026, 3, 11)),  # 2024-03-09 16:01 UTC
        (datetime(2024, 3, 10, 23, 59), datetime(2026, 3, 11)),  # 2024-03-10 15:59 UTC
        (datetime(2024, 3, 11, 0, 1), datetime(2026, 3, 12)),  # 2024-03-10 16:01 UTC
    ],
)
def test_expiry_day_is_counted_in_store_time_not_utc(earned_store_time, expiry_store_day):
    earned = earned_store_time.replace(tzinfo=SHANGHAI).astimezone(UTC)
    assert lot_expiry(earned, "Asia/Shanghai", 730) == expiry_store_day.replace(tzinfo=SHANGHAI)


def test_two_minutes_apart_on_the_same_utc_date_expire_on_different_days():
    before_midnight = datetime(2024, 3, 10, 15, 59, tzinfo=UTC)  # 23:59 in Shanghai
    after_midnight = datetime(2024, 3, 10, 16, 1, tzinfo=UTC)  # 00:01 the next day in Shanghai
    assert before_midnight.date() == after_midnight.date()
    gap = lot_expiry(after_midnight, "Asia/Shanghai", 730) - lot_expiry(before_midnight, "Asia/Shanghai", 730)
    assert gap == timedelta(days=1)


def test_expiry_is_local_midnight_across_a_daylight_saving_change():
    earned = datetime(2024, 3, 10, 12, 0, tzinfo=UTC)  # 08:00 EDT in New York
    expires = lot_expiry(earned, "America/New_York", 730)
    assert expires == datetime(2026, 3, 11, 4, 0, tzinfo=UTC)  # 00:00 EDT
    assert expires.astimezone(ZoneInfo("America/New_York")).time().isoformat() == "00:00:00"


def test_one_day_expiry_and_never_expiring():
    earned = datetime(2024, 3, 10, 2, 0, tzinfo=UTC)
    assert lot_expiry(earned, "Asia/Shanghai", 1) == datetime(2024, 3, 12, tzinfo=SHANGHAI)
    assert lot_expiry(earned, "Asia/Shanghai", 0) is None


# --- Phones ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "text",
    [
        "13812345678",
        "+8613812345678",
        "+86 138 1234 5678",
        "+86-138-1234-5678",
        "008613812345678",
        "138 1234 5678",
        "138-1234-5678",
        "(138) 1234-5678",
        " 13812345678 ",
        "１３８１２３４５６７８",
        "＋８６ １３８ １２３４ ５６７８",
        "１３８\u3000１２３４\u3000５６７８",
    ],
)
def test_normalise_phone_accepts_cn_mobiles(text):
    assert normalise_phone(text) == "+8613812345678"


@pytest.mark.parametrize("prefix", ["13", "14", "15", "16", "17", "18", "19"])
def test_normalise_phone_accepts_every_mobile_prefix(prefix):
    assert normalise_phone(prefix + "912345678") == "+86" + prefix + "912345678"


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "   ",
        "abc",
        "138abcd5678",
        "1381234567",  # 10 digits
        "138123456789",  # 12 digits
        "+86138123456789",
        "10012345678",  # 1 then 0
        "11012345678",
        "12812345678",
        "02112345678",  # Shanghai landline
        "021-1234-5678",
        "010-12345678",
        "+86 21 1234 5678",
        "10086",  # service short number
        "110",
        "1234",
        "+86",
        "138.1234.5678",
    ],
)
def test_normalise_phone_refuses(text):
    with pytest.raises(PhoneError):
        normalise_phone(text)


def test_normalise_phone_keeps_valid_foreign_numbers():
    """Documented behaviour: numbers outside +86 are accepted when the phonenumbers library finds them valid."""
    assert normalise_phone("+852 9123 4567") == "+85291234567"
    with pytest.raises(PhoneError):
        normalise_phone("+1 555")


def test_mask_and_display_phone():
    assert mask_phone("+8613812345678") == "138****5678"
    assert display_phone("+8613812345678") == "13812345678"
    assert mask_phone(None) == mask_phone("") == ""
    assert display_phone(None) == display_phone("") == ""


# --- Card numbers ---------------------------------------------------------------------------------

KNOWN_CARD = "1234567897"


def reference_luhn_valid(number: str) -> bool:
    """The textbook Luhn check, written independently of portal.cards."""
    total = 0
    for position, char in enumerate(reversed(number)):
        digit = int(char)
        if position % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def test_known_card_number_is_valid():
    assert reference_luhn_valid(KNOWN_CARD)
    assert luhn_check_digit(KNOWN_CARD[:-1]) == "7"
    assert is_valid_card_number(KNOWN_CARD)
    assert luhn_check_digit("000000000") == "0"


def test_every_single_digit_typo_is_caught():
    missed = [
        typo
        for position in range(len(KNOWN_CARD))
        for digit in "0123456789"
        if digit != KNOWN_CARD[position]
        and is_valid_card_number(typo := KNOWN_CARD[:position] + digit + KNOWN_CARD[position + 1:])
    ]
    assert missed == []


@pytest.mark.parametrize("card", [KNOWN_CARD, "5098765430", "9000000902"])
def test_adjacent_transpositions_are_caught_except_09_and_90(card):
    """Luhn catches every swap of two adjacent different digits except 0↔9."""
    assert is_valid_card_number(card)
    for position in range(len(card) - 1):
        first, second = card[position], card[position + 1]
        if first == second:
            continue
        swapped = card[:position] + second + first + card[position + 2:]
        expect_caught = {first, second} != {"0", "9"}
        assert is_valid_card_number(swapped) is not expect_caught, swapped


def test_a_09_transposition_goes_unnoticed():
    """The known blind spot of Luhn, pinned so nobody is surprised by it."""
    assert is_valid_card_number("9000000902")
    assert is_valid_card_number("9000009002")  # digits 7 and 8 swapped


@pytest.mark.parametrize(
    "text",
    [
        "",
        "123456789",  # 9 digits
        "12345678970",  # 11 digits
        "１２３４５６７８９７",  # full-width: the form normalises before looking up
        "١٢٣٤٥٦٧٨٩٧",  # Arabic-Indic digits
        " 1234567897",
        "1234567897 ",
        "123456789a",
        "12345-6789",
    ],
)
def test_malformed_card_numbers_are_not_valid(text):
    assert not is_valid_card_number(text)


def test_new_card_numbers_are_valid_and_do_not_start_with_zero():
    for _ in range(500):
        number = new_card_number()
        assert len(number) == 10
        assert number[0] != "0"
        assert is_valid_card_number(number)
        assert reference_luhn_valid(number)


def test_default_fraud_thresholds():
    """Issue 9: more than 5 purchases a day, adjustments of 5,000 points, returns of purchases half paid with
    points."""
    assert (DEFAULT_RULES.fraud_purchases_per_day, DEFAULT_RULES.fraud_adjustment_points,
            DEFAULT_RULES.fraud_return_points_percent) == (5, 5000, 50)


@pytest.mark.parametrize(("name", "text", "value"), [
    ("fraud_purchases_per_day", "1", 1), ("fraud_purchases_per_day", "1000", 1000),
    ("fraud_adjustment_points", "1", 1), ("fraud_adjustment_points", "1000000", 1_000_000),
    ("fraud_return_points_percent", "1", 1), ("fraud_return_points_percent", "100", 100),
])
def test_fraud_thresholds_accept_their_bounds(name, text, value):
    assert parse_rule(name, text) == value


@pytest.mark.parametrize(("name", "text"), [
    ("fraud_purchases_per_day", "0"), ("fraud_purchases_per_day", "1001"), ("fraud_purchases_per_day", "x"),
    ("fraud_adjustment_points", "0"), ("fraud_adjustment_points", "1000001"), ("fraud_adjustment_points", "1.5"),
    ("fraud_return_points_percent", "0"), ("fraud_return_points_percent", "101"),
    ("fraud_return_points_percent", ""),
])
def test_fraud_thresholds_refuse_what_is_out_of_bounds(name, text):
    with pytest.raises(RuleError):
        parse_rule(name, text)
