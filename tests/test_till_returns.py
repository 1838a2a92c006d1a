"""Returns and manual adjustments at the till, through the test client, with and without htmx."""
from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from portal.extensions import db
from portal.models import AuditLog, LedgerEntry, Member, Purchase, Return

from . import factories
from .helpers import field_error, figure, form_key, is_full_page, text_of


@pytest.fixture
def sale(app):
    """A gold member's ¥388.88 purchase paying 2,050 points (PRODUCT worked example 1)."""
    with app.app_context():
        member = factories.member(name="金卡会员", phone="+8613811112222", tier="gold")
        factories.purchase(member, 300_000)
        result = factories.purchase(member, 38_888, points=2_050)
        result.purchase.receipt_number = "R-388"
        db.session.commit()
        return {"purchase": result.purchase.id, "card": member.card_number, "member": member.id,
                "balance": member.points_balance}


def return_(client, purchase_id, amount, **extra):
    page = client.get(f"/till/purchases/{purchase_id}/return")
    return client.post(f"/till/purchases/{purchase_id}/returns",
                       data={"amount": amount, "idempotency_key": form_key(page), **extra}, htmx=True)


@pytest.mark.parametrize("q", ["R-388", "13811112222", "2222", "金卡"])
def test_find_a_purchase_by_receipt_number_phone_or_name(cashier_client, sale, q):
    response = cashier_client.get("/till/returns", query_string={"q": q}, htmx=True)
    assert response.status_code == 200 and not is_full_page(response)
    assert f"/till/purchases/{sale['purchase']}/return" in response.get_data(as_text=True)


def test_find_purchases_by_card_and_without_javascript(cashier_client, sale):
    response = cashier_client.get("/till/returns", query_string={"q": sale["card"]})
    assert is_full_page(response) and "¥388.88" in text_of(response)
    assert "No purchase found." in text_of(cashier_client.get("/till/returns?q=nobody", htmx=True))


def test_partial_returns_add_up_to_the_whole_worked_example_1(app, cashier_client, sale):
    form = cashier_client.get(f"/till/purchases/{sale['purchase']}/return")
    assert figure(form, "returnable") == "¥388.88"
    first = return_(cashier_client, sale["purchase"], "100.00")
    assert first.status_code == 200
    assert first.headers["HX-Push-Url"].startswith("/till/returns/")
    assert figure(first, "refund") == "¥89.73"
    assert figure(first, "restored") == "+527"
    assert figure(first, "reversed") == "−134"
    assert figure(first, "cash-refund") == "¥89.73"
    assert figure(first, "balance") == f"{sale['balance'] + 393:,}"
    second = return_(cashier_client, sale["purchase"], "288.88")
    assert (figure(second, "refund"), figure(second, "restored"), figure(second, "reversed")) == (
        "¥259.21", "+1,523", "−389")
    with app.app_context():
        purchase = db.session.get(Purchase, sale["purchase"])
        assert (purchase.refunded_fen, purchase.points_restored, purchase.points_reversed) == (34_894, 2_050, 523)
        assert db.session.get(Member, sale["member"]).points_balance == sale["balance"] + 2_050 - 523
    done = cashier_client.get(f"/till/purchases/{sale['purchase']}/return")
    assert "Everything on this purchase has already been returned." in text_of(done)


@pytest.mark.parametrize(("amount", "message"), [
    ("", "Enter an amount."),
    ("0", "The amount must be more than zero."),
    ("abc", "Enter an amount in yuan, such as 12.50."),
    ("388.89", "At most ¥388.88 of this purchase can still be returned."),
])
def test_return_errors_are_shown_beside_the_amount(app, cashier_client, sale, amount, message):
    response = return_(cashier_client, sale["purchase"], amount)
    assert response.status_code == 422
    assert field_error(response, "amount") == message
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Return)) == 0


def test_a_second_whole_return_is_refused_with_a_message(app, cashier_client, sale):
    assert return_(cashier_client, sale["purchase"], "388.88").status_code == 200
    response = cashier_client.post(f"/till/purchases/{sale['purchase']}/returns",
                                   data={"amount": "1", "idempotency_key": "k" * 32}, htmx=True)
    assert response.status_code == 422
    assert "Everything on this purchase has already been returned." in text_of(response)


def test_the_same_return_form_twice_records_once(app, cashier_client, sale):
    page = cashier_client.get(f"/till/purchases/{sale['purchase']}/return")
    data = {"amount": "100", "idempotency_key": form_key(page)}
    first = cashier_client.post(f"/till/purchases/{sale['purchase']}/returns", data=data, htmx=True)
    second = cashier_client.post(f"/till/purchases/{sale['purchase']}/returns", data=data, htmx=True)
    assert first.headers["HX-Push-Url"] == second.headers["HX-Push-Url"]
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Return)) == 1


def test_return_without_htmx_redirects_to_a_printable_return_receipt(cashier_client, sale):
    page = cashier_client.get(f"/till/purchases/{sale['purchase']}/return")
    response = cashier_client.post(f"/till/purchases/{sale['purchase']}/returns",
                                   data={"amount": "388.88", "idempotency_key": form_key(page)})
    assert response.status_code == 303
    receipt = cashier_client.get(response.headers["Location"])
    assert is_full_page(receipt) and figure(receipt, "cash-refund") == "¥348.94"


def test_shortfall_is_deducted_from_the_refund_worked_example_4(app, cashier_client):
    with app.app_context():
        member = factories.member()
        big = factories.purchase(member, 50_000).purchase
        factories.purchase(member, 5_000, points=400)
        db.session.commit()
        big_id, member_id = big.id, member.id
    response = return_(cashier_client, big_id, "500")
    assert figure(response, "reversed") == "−500"
    assert figure(response, "shortfall") == "−¥3.54"
    assert figure(response, "cash-refund") == "¥496.46"
    assert figure(response, "balance") == "0"
    with app.app_context():
        assert db.session.get(Member, member_id).points_balance == 0


def test_with_the_negative_policy_the_balance_goes_below_zero_and_shows_so(app, runner, cashier_client):
    assert runner.invoke(args=["set-rule", "shortfall_policy", "negative"]).exit_code == 0
    with app.app_context():
        member = factories.member()
        big = factories.purchase(member, 50_000).purchase
        factories.purchase(member, 5_000, points=400)
        db.session.commit()
        big_id, card = big.id, member.card_number
    response = return_(cashier_client, big_id, "500")
    assert figure(response, "cash-refund") == "¥500.00" and figure(response, "balance") == "-354"
    assert "The balance is negative" in text_of(response)
    panel = text_of(cashier_client.get(f"/till/members/{card}"))
    assert re.search(r'class="balance negative" id="balance">-354<', panel)


def test_a_return_that_drops_the_spend_downgrades_at_once(app, cashier_client):
    with app.app_context():
        member = factories.member(tier="silver")
        result = factories.purchase(member, 600_000)  # paid 588,000 at 2%: reaches gold
        db.session.commit()
        assert member.tier.code == "gold"
        purchase_id, card = result.purchase.id, member.card_number
    response = return_(cashier_client, purchase_id, "6000")
    assert "Tier changed to Member" in text_of(response)
    panel = text_of(cashier_client.get(f"/till/members/{card}"))
    assert "a return lowered the spend" in panel and "reached by a purchase" in panel


def test_a_cashier_of_another_store_can_take_the_return(app, client, login, sale):
    with app.app_context():
        factories.store("S002", "Other Store")
        db.session.commit()
    login(client, "cashier", store_code="S002")
    response = return_(client, sale["purchase"], "100")
    assert response.status_code == 200
    with app.app_context():
        assert db.session.scalars(select(Return)).one().store.code == "S002"


# --- adjustments ----------------------------------------------------------------------------------------

def adjust(client, card, points, reason="盘点更正"):
    page = client.get(f"/till/members/{card}")
    return client.post(f"/till/members/{card}/adjustments",
                       data={"points": points, "reason": reason, "idempotency_key": form_key(page, "/adjustments")},
                       htmx=True)


def test_cashiers_cannot_adjust_points_and_see_no_form(app, cashier_client, sale):
    assert "Adjust points" not in text_of(cashier_client.get(f"/till/members/{sale['card']}"))
    response = cashier_client.post(f"/till/members/{sale['card']}/adjustments",
                                   data={"points": "100", "reason": "x", "idempotency_key": "k" * 32}, htmx=True)
    assert response.status_code == 403
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(LedgerEntry)
                                 .where(LedgerEntry.kind == "adjust")) == 0


def test_a_manager_adjusts_with_a_reason_once_and_it_is_audited(app, client, login, sale):
    login(client, "manager")
    page = client.get(f"/till/members/{sale['card']}")
    data = {"points": "+150", "reason": "补录积分", "idempotency_key": form_key(page, "/adjustments")}
    first = client.post(f"/till/members/{sale['card']}/adjustments", data=data, htmx=True)
    second = client.post(f"/till/members/{sale['card']}/adjustments", data=data, htmx=True)
    assert first.status_code == second.status_code == 200
    assert f"New balance {sale['balance'] + 150:,}" in text_of(first)
    with app.app_context():
        entries = db.session.scalars(select(LedgerEntry).where(LedgerEntry.kind == "adjust")).all()
        assert [(e.points, e.note) for e in entries] == [(150, "补录积分")]
        audit = db.session.scalars(select(AuditLog).where(AuditLog.action == "points.adjust")).one()
        assert '"reason": "补录积分"' in audit.after and str(sale["balance"]) in audit.before


@pytest.mark.parametrize(("points", "reason", "field", "message"), [
    ("0", "x", "points", "Enter a number of points other than zero."),
    ("abc", "x", "points", "Enter a whole number of points."),
    ("100", "", "reason", "Say why the points are adjusted."),
    ("-99999999", "x", "points", "At most 1,000,000 points at a time."),
    ("-99999", "x", "points", "The member has only 2,748 points."),
])
def test_bad_adjustments_are_refused_beside_the_field(app, client, login, sale, points, reason, field, message):
    login(client, "manager")
    response = adjust(client, sale["card"], points, reason)
    assert response.status_code == 422
    assert (field_error(response, field) or "").startswith(message)


def test_no_one_credits_an_account_with_their_own_phone(app, client, sale):
    with app.app_context():
        manager = factories.staff("manager", phone="+8613811112222")
        db.session.commit()
        username = manager.username
    client.post("/login", data={"username": username, "password": factories.PASSWORD})
    response = adjust(client, sale["card"], "100")
    assert response.status_code == 422
    assert field_error(response, "points") == "You cannot credit points to an account with your own phone number."
    assert adjust(client, sale["card"], "-100").status_code == 200
