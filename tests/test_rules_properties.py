"""Properties of the checkout arithmetic that must hold for every input (hypothesis).

Each expected figure is recomputed here with fractions.Fraction from the wording of PRODUCT.md,
independently of the integer arithmetic in portal/.
"""
from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from fractions import Fraction
from unittest.mock import patch
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portal.cards import CARD_LENGTH, is_valid_card_number, luhn_check_digit, new_card_number
from portal.checkout import CheckoutError, quote
from portal.ledger import lot_expiry
from portal.models import Tier
from portal.money import format_yuan, parse_money, round_half_up_div
from portal.rules import DEFAULT_RULES, Rules
from portal.tiers import tier_for_spend

CAP = DEFAULT_RULES.purchase_cap_fen
HALF = Fraction(1, 2)

# No example database: nothing is written into the working tree, and every run is fresh.
rule_settings = settings(database=None, deadline=None, max_examples=100)

DEFAULT_TIER_TERMS = [(0, 1000), (200, 1200), (500, 1500), (800, 2000)]  # (discount_bp, multiplier_milli)
tier_terms = st.one_of(
    st.sampled_from(DEFAULT_TIER_TERMS),
    # what a manager may set: discounts 0–50 %, multipliers ≥ 1
    st.tuples(st.integers(0, 5000), st.integers(1000, 10_000)),
)
grosses = st.one_of(st.integers(1, CAP), st.integers(1, 1000), st.sampled_from([1, CAP - 1, CAP]))
earn_rates = st.one_of(st.just(1000), st.integers(0, 10_000))
cap_percents = st.one_of(st.just(100), st.integers(0, 100))


def expected_discount(gross: int, discount_bp: int) -> int:
    """The tier discount in fen, rounded half up."""
    return math.floor(Fraction(gross * discount_bp, 10_000) + HALF)


def expected_earned(paid_fen: int, earn_rate_milli: int, multiplier_milli: int) -> int:
    """floor(paid_yuan × earn_rate × tier_multiplier)."""
    return math.floor(Fraction(paid_fen, 100) * Fraction(earn_rate_milli, 1000) * Fraction(multiplier_milli, 1000))


@rule_settings
@given(gross=grosses, terms=tier_terms, earn_rate=earn_rates, cap_percent=cap_percents, data=st.data())
def test_every_accepted_checkout_adds_up(gross, terms, earn_rate, cap_percent, data):
    discount_bp, multiplier = terms
    rules = Rules(earn_rate_milli=earn_rate, redeem_cap_percent=cap_percent)
    due = gross - expected_discount(gross, discount_bp)
    most = math.floor(Fraction(due * cap_percent, 100))  # 1 point = 1 fen by default
    balance = data.draw(st.integers(-1000, 2 * most + 200), label="balance")
    ceiling = min(balance, most)
    choices = [st.just(0)]
    if ceiling >= rules.redeem_minimum:
        choices += [st.integers(rules.redeem_minimum, ceiling), st.sampled_from([rules.redeem_minimum, ceiling])]
    points = data.draw(st.one_of(choices), label="points")

    receipt = quote(gross, discount_bp=discount_bp, multiplier_milli=multiplier,
                    points_to_redeem=points, balance=balance, rules=rules)

    assert receipt.gross_fen == gross
    assert receipt.discount_fen == expected_discount(gross, discount_bp)
    assert receipt.discount_fen + receipt.due_fen == gross
    assert receipt.points_redeemed == points
    assert receipt.redeemed_value_fen == points
    assert receipt.redeemed_value_fen <= receipt.due_fen
    assert Fraction(receipt.redeemed_value_fen) <= Fraction(receipt.due_fen * cap_percent, 100)
    assert receipt.paid_fen == receipt.due_fen - receipt.redeemed_value_fen
    assert 0 <= receipt.paid_fen <= receipt.due_fen
    assert receipt.points_earned == expected_earned(receipt.paid_fen, earn_rate, multiplier)
    assert receipt.points_earned >= 0


@rule_settings
@given(
    gross=grosses,
    terms=tier_terms,
    cap_percent=cap_percents,
    minimum=st.one_of(st.just(100), st.integers(1, 1000)),
    balance=st.one_of(st.integers(-1000, 100_000), st.integers(-1000, 2 * CAP)),
    points=st.one_of(st.integers(-200, 1000), st.integers(-10, 2 * CAP), st.sampled_from([0, 99, 100, 101])),
)
def test_a_redemption_is_accepted_exactly_when_the_rules_allow_it(gross, terms, cap_percent, minimum, balance, points):
    """At least the minimum, never more than the balance, never more than the (capped) amount due."""
    discount_bp, multiplier = terms
    rules = Rules(redeem_cap_percent=cap_percent, redeem_minimum=minimum)
    due = gross - expected_discount(gross, discount_bp)
    allowed = points == 0 or (
        points >= minimum and points <= balance and Fraction(points) <= Fraction(due * cap_percent, 100)
    )
    try:
        receipt = quote(gross, discount_bp=discount_bp, multiplier_milli=multiplier,
                        points_to_redeem=points, balance=balance, rules=rules)
    except CheckoutError as error:
        assert error.field == "points"
        assert not allowed, f"refused an allowed redemption: {error}"
    else:
        assert allowed, "accepted a redemption the rules forbid"
        assert receipt.paid_fen == due - points


@rule_settings
@given(
    gross=grosses,
    terms=tier_terms,
    points_per_yuan=st.integers(1, 1000),
    cap_percent=cap_percents,
    data=st.data(),
)
def test_redeemed_value_never_exceeds_the_amount_due_at_any_redemption_rate(
    gross, terms, points_per_yuan, cap_percent, data
):
    discount_bp, multiplier = terms
    rules = Rules(redeem_points_per_yuan=points_per_yuan, redeem_cap_percent=cap_percent, redeem_minimum=1)
    points = data.draw(st.integers(0, 3 * gross * points_per_yuan // 100 + 10), label="points")
    try:
        receipt = quote(gross, discount_bp=discount_bp, multiplier_milli=multiplier,
                        points_to_redeem=points, balance=points, rules=rules)
    except CheckoutError as error:
        assert error.field == "points"
        return
    assert receipt.redeemed_value_fen == math.floor(Fraction(points * 100, points_per_yuan))
    assert receipt.redeemed_value_fen <= receipt.due_fen
    assert Fraction(receipt.redeemed_value_fen) <= Fraction(receipt.due_fen * cap_percent, 100)
    assert 0 <= receipt.paid_fen <= receipt.due_fen


@rule_settings
@given(gross=st.integers(CAP + 1, 100 * CAP) | st.integers(-CAP, 0), terms=tier_terms)
def test_amounts_outside_one_fen_to_the_cap_are_refused(gross, terms):
    discount_bp, multiplier = terms
    with pytest.raises(CheckoutError) as caught:
        quote(gross, discount_bp=discount_bp, multiplier_milli=multiplier,
              points_to_redeem=0, balance=0, rules=DEFAULT_RULES)
    assert caught.value.field == "gross"


@rule_settings
@given(numerator=st.integers(0, 10**15), denominator=st.integers(1, 10**9))
def test_round_half_up_div_matches_fractions(numerator, denominator):
    assert round_half_up_div(numerator, denominator) == math.floor(Fraction(numerator, denominator) + HALF)


# --- Money text round trips -------------------------------------------------------------------------

FULL_WIDTH = str.maketrans("0123456789.,¥", "０１２３４５６７８９．，￥")


@rule_settings
@given(fen=st.one_of(st.integers(1, CAP), st.integers(1, 10_000)))
def test_format_yuan_round_trips_through_parse_money(fen):
    shown = format_yuan(fen)
    assert parse_money(shown, CAP) == fen
    assert parse_money(shown.translate(FULL_WIDTH), CAP) == fen
    plain = f"{fen // 100}.{fen % 100:02d}"
    assert parse_money(plain, CAP) == fen
    assert parse_money(f" ¥{plain} ", CAP) == fen


@rule_settings
@given(fen=st.integers(-(10**15), 10**15))
def test_format_yuan_shape(fen):
    shown = format_yuan(fen)
    sign, _, number = shown.partition("¥")
    assert sign == ("-" if fen < 0 else "")
    whole, part = number.split(".")
    assert len(part) == 2
    assert int(whole.replace(",", "")) * 100 + int(part) == abs(fen)


# --- Card numbers -----------------------------------------------------------------------------------

@rule_settings
@given(draw=st.one_of(st.integers(0, 9 * 10**8 - 1), st.sampled_from([0, 9 * 10**8 - 1])))
def test_new_card_number_is_always_valid(draw):
    with patch("portal.cards.secrets.randbelow", return_value=draw) as randbelow:
        number = new_card_number()
    randbelow.assert_called_once_with(9 * 10**8)
    assert len(number) == CARD_LENGTH
    assert number.isascii() and number.isdigit()
    assert number[0] != "0"
    assert is_valid_card_number(number)


@rule_settings
@given(payload=st.text("0123456789", min_size=CARD_LENGTH - 1, max_size=CARD_LENGTH - 1), data=st.data())
def test_the_check_digit_catches_any_single_digit_change(payload, data):
    number = payload + luhn_check_digit(payload)
    assert is_valid_card_number(number)
    position = data.draw(st.integers(0, CARD_LENGTH - 1), label="position")
    digit = data.draw(st.sampled_from([d for d in "0123456789" if d != number[position]]), label="digit")
    typo = number[:position] + digit + number[position + 1:]
    assert not is_valid_card_number(typo)


# --- Tiers ------------------------------------------------------------------------------------------

@st.composite
def tier_ladders(draw):
    """Tiers with strictly ascending thresholds from 0, as a manager may set them."""
    steps = draw(st.lists(st.integers(1, 5_000_000), min_size=0, max_size=5))
    thresholds = [0]
    for step in steps:
        thresholds.append(thresholds[-1] + step)
    return [
        Tier(id=index, code=f"t{index}", name_zh="", name_en="", threshold_fen=threshold,
             multiplier_milli=1000, discount_bp=0, birthday_bonus=0)
        for index, threshold in enumerate(thresholds, start=1)
    ]


@rule_settings
@given(tiers=tier_ladders(), spend=st.integers(0, 50_000_000), more=st.integers(0, 50_000_000))
def test_tier_is_the_highest_threshold_reached_and_grows_with_spend(tiers, spend, more):
    tier = tier_for_spend(tiers, spend)
    assert tier.threshold_fen <= spend
    assert all(other.threshold_fen > spend for other in tiers if other.threshold_fen > tier.threshold_fen)
    assert tier_for_spend(tiers, spend + more).threshold_fen >= tier.threshold_fen


# --- Points expiry ----------------------------------------------------------------------------------

ZONES = ["Asia/Shanghai", "Asia/Hong_Kong", "Europe/London", "America/New_York", "Australia/Sydney", "UTC"]


@rule_settings
@given(
    earned=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 12, 31),
                        timezones=st.just(timezone.utc)),
    zone_name=st.sampled_from(ZONES),
    days=st.one_of(st.just(730), st.integers(1, 3650)),
)
def test_points_expire_at_local_midnight_after_the_last_usable_day(earned, zone_name, days):
    zone = ZoneInfo(zone_name)
    expires = lot_expiry(earned, zone_name, days)
    local = expires.astimezone(zone)
    assert (local.hour, local.minute, local.second, local.microsecond) == (0, 0, 0, 0)
    last_usable_day = earned.astimezone(zone).date() + timedelta(days=days)
    assert local.date() == last_usable_day + timedelta(days=1)
    assert expires > earned
