"""The settings page: managers and admins change the tiers and rules, with refusals beside the field.
Every test runs on SQLite and on PostgreSQL."""
from __future__ import annotations

import json
import re

import pytest
from sqlalchemy import select

from portal.extensions import db
from portal.models import AuditLog, Staff, Tier
from portal.rules import load_rules

from .helpers import text_of

TIER_FORM = {
    "member-name_zh": "普通会员", "member-name_en": "Member", "member-threshold": "0", "member-multiplier": "1",
    "member-discount": "0", "member-birthday_bonus": "50",
    "silver-name_zh": "银卡", "silver-name_en": "Silver", "silver-threshold": "1000.00", "silver-multiplier": "1.2",
    "silver-discount": "2", "silver-birthday_bonus": "100",
    "gold-name_zh": "金卡", "gold-name_en": "Gold", "gold-threshold": "5000", "gold-multiplier": "1.5",
    "gold-discount": "5", "gold-birthday_bonus": "300",
    "diamond-name_zh": "钻石", "diamond-name_en": "Diamond", "diamond-threshold": "20000",
    "diamond-multiplier": "2", "diamond-discount": "8", "diamond-birthday_bonus": "1000",
}


def error_beside(response, field_id: str) -> str | None:
    match = re.search(rf'id="{field_id}-error" role="alert">([^<]*)<', response.get_data(as_text=True))
    return match.group(1) if match else None


def test_a_cashier_cannot_see_the_settings(client, login):
    login(client, "cashier")
    assert client.get("/manage/settings").status_code == 403


def test_a_manager_changes_the_settings_too(app, client, login):
    """Store managers set the tiers and the points rules (PRODUCT.md); the change is audited under their name."""
    username = login(client, "manager")
    page = client.get("/manage/settings")
    assert page.status_code == 200
    assert "Save the tiers" in text_of(page) and "Save the rules" in text_of(page)
    response = client.post("/manage/settings/rules", data={**current_rules_form(client), "expiry_days": "10"})
    assert response.status_code == 303
    with app.app_context():
        entry = db.session.scalars(select(AuditLog).where(AuditLog.action == "rules.set")).one()
        assert db.session.get(Staff, entry.staff_id).username == username
        assert json.loads(entry.after) == {"expiry_days": 10}


def test_an_admin_changes_a_tier_and_it_is_audited(app, client, login):
    login(client, "admin")
    response = client.post("/manage/settings/tiers", data={**TIER_FORM, "silver-threshold": "800",
                                                            "silver-discount": "2.5"})
    assert response.status_code == 303
    with app.app_context():
        silver = db.session.scalars(select(Tier).where(Tier.code == "silver")).one()
        assert (silver.threshold_fen, silver.discount_bp) == (80_000, 250)
        row = db.session.scalars(select(AuditLog).where(AuditLog.action == "tiers.set")).one()
        assert row.target == "tier:silver" and row.staff_id is not None
    assert 'value="800.00"' in client.get("/manage/settings?saved=tiers").get_data(as_text=True)


@pytest.mark.parametrize(("changes", "field", "message"), [
    ({"gold-threshold": "900"}, "gold-threshold",
     "The tiers must keep their order: a higher tier needs a higher spend."),
    ({"gold-discount": "51"}, "gold-discount", "The discount must be from 0 to 50 percent."),
    ({"silver-multiplier": "abc"}, "silver-multiplier", "Enter a number such as 1.5."),
    ({"diamond-name_en": " "}, "diamond-name_en", "Give the tier a name."),
    ({"member-threshold": "1"}, "member-threshold", "The lowest tier starts at ¥0."),
])
def test_refused_tier_settings_are_shown_beside_the_field_and_change_nothing(app, client, login, changes, field,
                                                                              message):
    login(client, "admin")
    response = client.post("/manage/settings/tiers", data={**TIER_FORM, **changes})
    assert response.status_code == 422
    assert error_beside(response, field) == message
    with app.app_context():
        assert db.session.scalars(select(AuditLog).where(AuditLog.action == "tiers.set")).all() == []
        assert db.session.scalars(select(Tier.threshold_fen).order_by(Tier.threshold_fen)).all() == [
            0, 100_000, 500_000, 2_000_000]


def current_rules_form(client) -> dict:
    page = client.get("/manage/settings").get_data(as_text=True)
    values = dict(re.findall(r'<input id="rule-(\w+)" name="\w+" value="([^"]*)"', page))
    values["shortfall_policy"] = "deduct"
    return values


def test_an_admin_changes_a_points_rule_from_the_next_transaction(app, client, login):
    login(client, "admin")
    form = current_rules_form(client)
    assert form["expiry_days"] == "730"
    response = client.post("/manage/settings/rules", data={**form, "expiry_days": "365",
                                                            "shortfall_policy": "negative"})
    assert response.status_code == 303
    with app.app_context():
        current = load_rules(db.session)
        assert (current.expiry_days, current.shortfall_policy) == (365, "negative")
        targets = sorted(db.session.scalars(select(AuditLog.target).where(AuditLog.action == "rules.set")))
        assert targets == ["rule:expiry_days", "rule:shortfall_policy"]


@pytest.mark.parametrize(("name", "value", "message"), [
    ("expiry_days", "-1", "Enter a whole number from 0 to 3,650."),
    ("redeem_cap_percent", "abc", "Enter a whole number from 1 to 100."),
    ("shortfall_policy", "forgive", "Choose one of the options."),
])
def test_refused_rules_are_shown_beside_the_field_and_change_nothing(app, client, login, name, value, message):
    login(client, "admin")
    response = client.post("/manage/settings/rules", data={**current_rules_form(client), name: value})
    assert response.status_code == 422
    assert error_beside(response, f"rule-{name}") == message
    with app.app_context():
        assert db.session.scalars(select(AuditLog).where(AuditLog.action == "rules.set")).all() == []


# --- the fraud thresholds (issue 9) ----------------------------------------------------------------------

@pytest.mark.parametrize(("name", "value", "message"), [
    ("fraud_purchases_per_day", "0", "Enter a whole number from 1 to 1,000."),
    ("fraud_purchases_per_day", "1001", "Enter a whole number from 1 to 1,000."),
    ("fraud_purchases_per_day", "5.5", "Enter a whole number from 1 to 1,000."),
    ("fraud_purchases_per_day", "", "Enter a whole number from 1 to 1,000."),
    ("fraud_adjustment_points", "-5000", "Enter a whole number from 1 to 1,000,000."),
    ("fraud_adjustment_points", "1000001", "Enter a whole number from 1 to 1,000,000."),
    ("fraud_adjustment_points", "five thousand", "Enter a whole number from 1 to 1,000,000."),
    ("fraud_return_points_percent", "0", "Enter a whole number from 1 to 100."),
    ("fraud_return_points_percent", "101", "Enter a whole number from 1 to 100."),
    ("fraud_return_points_percent", "50%", "Enter a whole number from 1 to 100."),
])
def test_refused_fraud_thresholds_are_shown_beside_the_field_and_change_nothing(app, client, login, name, value,
                                                                                 message):
    login(client, "manager")
    response = client.post("/manage/settings/rules", data={**current_rules_form(client), name: value,
                                                            "expiry_days": "100"})
    assert response.status_code == 422
    assert error_beside(response, f"rule-{name}") == message
    assert f'value="{value}"' in response.get_data(as_text=True)  # what was typed stays in the field
    with app.app_context():
        assert db.session.scalars(select(AuditLog).where(AuditLog.action == "rules.set")).all() == []
        current = load_rules(db.session)
        assert (current.fraud_purchases_per_day, current.fraud_adjustment_points,
                current.fraud_return_points_percent, current.expiry_days) == (5, 5000, 50, 730)


@pytest.mark.parametrize(("name", "before", "after"), [
    ("fraud_purchases_per_day", 5, 1), ("fraud_purchases_per_day", 5, 1000),
    ("fraud_adjustment_points", 5000, 1_000_000), ("fraud_return_points_percent", 50, 100),
    ("fraud_return_points_percent", 50, 1),
])
def test_a_fraud_threshold_is_changed_and_audited_with_its_before_and_after(app, client, login, name, before,
                                                                           after):
    login(client, "manager")
    form = current_rules_form(client)
    assert form[name] == str(before)
    assert client.post("/manage/settings/rules", data={**form, name: f" {after} "}).status_code == 303
    with app.app_context():
        assert getattr(load_rules(db.session), name) == after
        entry = db.session.scalars(select(AuditLog).where(AuditLog.action == "rules.set")).one()
        assert entry.target == f"rule:{name}"
        assert (json.loads(entry.before), json.loads(entry.after)) == ({name: before}, {name: after})
    assert f'id="rule-{name}" name="{name}" value="{after}"' in client.get("/manage/settings").get_data(as_text=True)


def test_the_rules_are_grouped_with_the_fraud_thresholds_under_their_own_heading(client, login):
    login(client, "manager")
    page = client.get("/manage/settings").get_data(as_text=True)
    fraud = page[page.index('id="fraud-rules"'):]
    fraud = fraud[:fraud.index("</fieldset>")]
    assert "<legend>Fraud signals</legend>" in fraud
    assert re.findall(r'name="(fraud_\w+)"', fraud) == ["fraud_purchases_per_day", "fraud_adjustment_points",
                                                        "fraud_return_points_percent"]
    for section in ("points-rules", "expiry-rules", "member-rules", "complaint-rules"):
        assert f'id="{section}"' in page


def test_a_cashier_cannot_change_the_rules(app, client, login):
    login(client, "cashier")
    response = client.post("/manage/settings/rules", data={"fraud_purchases_per_day": "1"})
    assert response.status_code == 403
    assert client.post("/manage/settings/tiers", data=TIER_FORM).status_code == 403
    with app.app_context():
        assert load_rules(db.session).fraud_purchases_per_day == 5
