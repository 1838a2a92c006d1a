"""The cash-register API: what a register sends, what it gets back, and what the books say afterwards.

Every test runs on SQLite and on PostgreSQL (through the `app` fixture). Registers authenticate with
their own bearer token; every POST carries an Idempotency-Key.
"""
from __future__ import annotations

import json
import threading
import uuid
from datetime import date

import pytest
from sqlalchemy import func, select

from portal import api_tokens, rules
from portal.extensions import db
from portal.ledger import ledger_sum
from portal.models import ApiToken, Complaint, ComplaintEvent, LedgerEntry, Member, Purchase, Return

from . import factories


class Register:
    """A cash register talking to the API with its own token."""

    def __init__(self, client, token: str):
        self.client = client
        self.token = token

    def headers(self, key: str | None = None, **extra) -> dict:
        headers = {"Authorization": f"Bearer {self.token}", **extra}
        if key is not None:
            headers["Idempotency-Key"] = key
        return headers

    def get(self, path: str, **params):
        return self.client.get("/api/v1" + path, query_string=params, headers=self.headers())

    def post(self, path: str, body, key: str | None = "new", **headers):
        key = uuid.uuid4().hex if key == "new" else key
        data = body if isinstance(body, (str, bytes)) else json.dumps(body)
        return self.client.post("/api/v1" + path, data=data, content_type="application/json",
                                headers=self.headers(key, **headers), csrf=False)


def make_token(app, name: str = "Till 1", store_code: str = "S001") -> str:
    with app.app_context():
        store = factories.store(store_code, f"Store {store_code}")
        _row, token = api_tokens.create_token(db.session, name=name, store=store, staff=None,
                                              now=factories._now())
        db.session.commit()
    return token


@pytest.fixture
def register(app, client) -> Register:
    return Register(client, make_token(app))


def new_member(app, **kwargs) -> tuple[int, str]:
    with app.app_context():
        member = factories.member(**kwargs)
        db.session.commit()
        return member.id, member.card_number


def error(response) -> dict:
    body = response.get_json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "field"}, body
    assert body["error"]["message"]
    return body["error"]


def count(app, model, *where) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model).where(*where))


# --- tokens ---------------------------------------------------------------------------------------------

def test_without_a_token_the_api_answers_401(client):
    response = client.get("/api/v1/members/lookup", query_string={"q": "1234"})
    assert response.status_code == 401
    assert error(response)["code"] == "unauthorised"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("header", ["Bearer nonsense", "Bearer plk_" + "x" * 43, "Basic dXNlcjpwYXNz", "plk_abc"])
def test_a_wrong_token_is_refused(client, header):
    response = client.get("/api/v1/members/lookup", query_string={"q": "1234"},
                          headers={"Authorization": header})
    assert response.status_code == 401
    assert error(response)["code"] == "unauthorised"


def test_a_signed_in_cashier_cookie_does_not_open_the_api(app, client, login):
    login(client, "admin")
    assert client.get("/api/v1/members/lookup", query_string={"q": "1234"}).status_code == 401


def test_a_revoked_token_is_refused_on_its_very_next_call(app, register):
    assert register.get("/members/lookup", q="1234").status_code == 200
    with app.app_context():
        row = db.session.scalars(select(ApiToken)).one()
        api_tokens.revoke(db.session, row, staff=None, now=factories._now())
        db.session.commit()
    response = register.get("/members/lookup", q="1234")
    assert response.status_code == 401
    assert error(response)["code"] == "unauthorised"


def test_tokens_are_stored_only_as_a_hash(app, register):
    with app.app_context():
        row = db.session.scalars(select(ApiToken)).one()
        assert register.token not in (row.token_hash, row.token_hint)
        assert row.token_hash == api_tokens.hash_token(register.token)


@pytest.mark.config(RATELIMIT_ENABLED=True, API_RATE_LIMIT="3 per minute")
def test_each_register_has_its_own_rate_limit(app, client):
    first = Register(client, make_token(app, "Till 1"))
    second = Register(client, make_token(app, "Till 2"))
    for _ in range(3):
        assert first.get("/members/lookup", q="1234").status_code == 200
    response = first.get("/members/lookup", q="1234")
    assert response.status_code == 429
    assert error(response)["code"] == "too_many_requests"
    assert second.get("/members/lookup", q="1234").status_code == 200


def test_api_answers_are_not_cached_and_set_no_cookie(register):
    response = register.get("/members/lookup", q="1234")
    assert response.headers["Cache-Control"] == "no-store"
    assert "Set-Cookie" not in response.headers
    assert response.headers["X-Content-Type-Options"] == "nosniff"


# --- members --------------------------------------------------------------------------------------------

def test_register_a_member(app, register):
    response = register.post("/members", {
        "name": "李雷", "phone": "+86 138 1234 5678", "birthday": "1990-05-17", "privacy_consent": True,
        "marketing_consent": True,
    })
    assert response.status_code == 201
    body = response.get_json()
    assert body["name"] == "李雷"
    assert body["phone_masked"] == "138****5678"
    assert len(body["card_number"]) == 10
    assert body["tier"] == {"code": "member", "name": "Member", "multiplier": "1", "discount_percent": "0"}
    assert (body["balance"], body["available_points"], body["qualifying_spend"]) == (0, 0, "0.00")
    assert body["next_tier"] == {"code": "silver", "spend_needed": "1000.00"}
    assert len(body["activation_code"]) == 6 and body["activation_code"].isdigit()
    with app.app_context():
        member = db.session.scalars(select(Member)).one()
        token = db.session.scalars(select(ApiToken)).one()
        assert member.phone == "+8613812345678"
        assert member.birthday == date(1990, 5, 17)
        assert member.marketing_consent and member.privacy_version
        assert (member.api_token_id, member.store_id, member.registered_by_id) == (token.id, token.store_id, None)


def test_tier_names_follow_accept_language(register):
    response = register.post("/members", {"name": "Han Meimei", "phone": "13900001111", "privacy_consent": True},
                             **{"Accept-Language": "zh-CN"})
    assert response.get_json()["tier"]["name"] == "普通会员"


def test_a_phone_already_registered_is_409_phone_taken(app, register):
    new_member(app, phone="+8613812345678")
    response = register.post("/members", {"name": "Someone", "phone": "13812345678", "privacy_consent": True})
    assert response.status_code == 409
    assert error(response) | {"message": None} == {"code": "phone_taken", "field": "phone", "message": None}
    assert count(app, Member) == 1


@pytest.mark.parametrize(("body", "field", "code"), [
    ({"phone": "13812345678", "privacy_consent": True}, "name", "missing_field"),
    ({"name": "A", "privacy_consent": True}, "phone", "missing_field"),
    ({"name": "A", "phone": "13812345678"}, "privacy_consent", "missing_field"),
    ({"name": "A", "phone": "13812345678", "privacy_consent": False}, "privacy_consent", "invalid_value"),
    ({"name": "A", "phone": "13812345678", "privacy_consent": "yes"}, "privacy_consent", "invalid_type"),
    ({"name": "A", "phone": "12345", "privacy_consent": True}, "phone", "invalid_value"),
    ({"name": "A", "phone": 13812345678, "privacy_consent": True}, "phone", "invalid_type"),
    ({"name": "   ", "phone": "13812345678", "privacy_consent": True}, "name", "invalid_value"),
    ({"name": "A" * 101, "phone": "13812345678", "privacy_consent": True}, "name", "too_long"),
    ({"name": "A", "phone": "13812345678", "privacy_consent": True, "birthday": "1990-02-30"}, "birthday",
     "invalid_value"),
    ({"name": "A", "phone": "13812345678", "privacy_consent": True, "birthday": "2020-01-01"}, "birthday",
     "invalid_value"),
    ({"name": "A", "phone": "13812345678", "privacy_consent": True, "email": "not-an-email"}, "email",
     "invalid_value"),
    ({"name": "A", "phone": "13812345678", "privacy_consent": True, "referrer": "13900000000"}, "referrer",
     "invalid_value"),
])
def test_refused_registrations_name_the_field_and_save_nothing(app, register, body, field, code):
    response = register.post("/members", body)
    assert response.status_code == 422
    assert (error(response)["field"], error(response)["code"]) == (field, code)
    assert count(app, Member) == 0


def test_an_under_14_registers_with_a_guardians_consent(app, register):
    response = register.post("/members", {"name": "Xiao Hong", "phone": "13812345678", "birthday": "2020-01-01",
                                           "guardian_consent": True, "privacy_consent": True})
    assert response.status_code == 201


def test_a_referrer_is_rewarded_on_the_new_members_first_purchase(app, register):
    referrer_id, referrer_card = new_member(app)
    body = register.post("/members", {"name": "New", "phone": "13812345678", "privacy_consent": True,
                                      "referrer": referrer_card}).get_json()
    assert register.post("/purchases", {"card_number": body["card_number"], "gross_amount": "10"}).status_code == 201
    with app.app_context():
        assert db.session.get(Member, referrer_id).points_balance == 200


@pytest.mark.parametrize("raw", ["not json", "[1, 2]", '"text"', ""])
def test_a_body_that_is_not_a_json_object_is_400(register, raw):
    response = register.post("/members", raw)
    assert response.status_code == 400
    assert error(response)["code"] == "invalid_json"


def test_lookup_by_last_four_digits_full_phone_card_and_name(app, register):
    _, card = new_member(app, name="Wang Fang", phone="+8613800005678")
    new_member(app, name="Wang Lei", phone="+8613900005678")
    new_member(app, name="Zhao Min", phone="+8613700001234")
    names = lambda response: sorted(m["name"] for m in response.get_json()["members"])  # noqa: E731
    assert names(register.get("/members/lookup", q="5678")) == ["Wang Fang", "Wang Lei"]
    assert names(register.get("/members/lookup", q="138 0000 5678")) == ["Wang Fang"]
    assert names(register.get("/members/lookup", q=card)) == ["Wang Fang"]
    assert names(register.get("/members/lookup", q="wang")) == ["Wang Fang", "Wang Lei"]
    assert names(register.get("/members/lookup", q="Nobody")) == []
    found = register.get("/members/lookup", q="5678").get_json()["members"][0]
    assert set(found) >= {"card_number", "name", "phone_masked", "tier", "balance", "available_points",
                          "qualifying_spend", "next_tier"}
    assert "+86" not in json.dumps(found) and "13800005678" not in json.dumps(found)


@pytest.mark.parametrize(("q", "code"), [("", "missing_field"), ("1234567890", "invalid_card_number")])
def test_lookup_refusals(register, q, code):
    response = register.get("/members/lookup", q=q)
    assert response.status_code == 422
    assert error(response) | {"message": None} == {"code": code, "field": "q", "message": None}


def test_one_member_with_balance_spend_and_next_tier(app, register):
    member_id, card = new_member(app)
    with app.app_context():
        factories.purchase(db.session.get(Member, member_id), 120_000)  # ¥1,200: silver, 1,200 points
        db.session.commit()
    body = register.get(f"/members/{card}").get_json()
    assert body["tier"] == {"code": "silver", "name": "Silver", "multiplier": "1.2", "discount_percent": "2"}
    assert (body["balance"], body["available_points"]) == (1200, 1200)
    assert body["qualifying_spend"] == "1200.00"
    assert body["next_tier"] == {"code": "gold", "spend_needed": "3800.00"}


def test_a_diamond_member_has_no_next_tier(app, register):
    _, card = new_member(app, tier="diamond")
    body = register.get(f"/members/{card}").get_json()
    assert body["tier"]["multiplier"] == "2" and body["tier"]["discount_percent"] == "8"
    assert body["next_tier"] is None


def test_unknown_card_is_404_and_a_typo_is_422(app, register):
    _, card = new_member(app)
    typo = card[:-1] + str((int(card[-1]) + 1) % 10)
    assert register.get(f"/members/{typo}").status_code == 422
    assert error(register.get(f"/members/{typo}"))["code"] == "invalid_card_number"
    unknown = "1000000008"  # a valid check digit, no such member
    assert register.get(f"/members/{unknown}").status_code == 404
    assert error(register.get(f"/members/{unknown}"))["code"] == "member_not_found"
    assert register.get("/members/abc").status_code == 422


def test_the_ledger_newest_first_a_page_at_a_time(app, register, monkeypatch):
    monkeypatch.setattr("portal.api.routes.LEDGER_PAGE_SIZE", 2)
    member_id, card = new_member(app)
    for gross in ("10.00", "20.00", "30.00"):
        assert register.post("/purchases", {"card_number": card, "gross_amount": gross}).status_code == 201
    first = register.get(f"/members/{card}/ledger").get_json()
    assert [(e["kind"], e["points"], e["reason"]) for e in first["entries"]] == [
        ("earn", 30, "purchase_earn"), ("earn", 20, "purchase_earn")]
    assert first["next_page"] == 2
    entry = first["entries"][0]
    assert entry["created_at"].endswith("+08:00")
    assert entry["return_id"] is None and isinstance(entry["purchase_id"], int)
    second = register.get(f"/members/{card}/ledger", page=2).get_json()
    assert [e["points"] for e in second["entries"]] == [10]
    assert second["next_page"] is None
    assert register.get(f"/members/{card}/ledger", page=3).get_json() == {"entries": [], "next_page": None}


@pytest.mark.parametrize("page", ["0", "-1", "abc", "1.5", "99999999999"])
def test_a_bad_ledger_page_is_422(app, register, page):
    _, card = new_member(app)
    response = register.get(f"/members/{card}/ledger", page=page)
    assert response.status_code == 422
    assert error(response)["field"] == "page"


# --- purchases ------------------------------------------------------------------------------------------

def test_worked_example_1_through_the_api(app, register):
    member_id, card = new_member(app, tier="gold")
    with app.app_context():
        factories.purchase(db.session.get(Member, member_id), 500_000)  # keeps gold; earns 7,125 points
        db.session.commit()
    response = register.post("/purchases", {"card_number": card, "gross_amount": "388.88", "redeem_points": 2050,
                                            "receipt_no": "T2-000123"})
    assert response.status_code == 201
    body = response.get_json()
    assert {key: body[key] for key in ("gross_amount", "discount_amount", "redeemed_points", "redeemed_amount",
                                       "paid_amount", "points_earned", "tier_changed", "receipt_no")} == {
        "gross_amount": "388.88", "discount_amount": "19.44", "redeemed_points": 2050, "redeemed_amount": "20.50",
        "paid_amount": "348.94", "points_earned": 523, "tier_changed": False, "receipt_no": "T2-000123"}
    assert body["balance"] == 7125 - 2050 + 523
    assert body["tier"]["code"] == "gold"
    with app.app_context():
        purchase = db.session.get(Purchase, body["purchase_id"])
        token = db.session.scalars(select(ApiToken)).one()
        assert (purchase.api_token_id, purchase.store_id, purchase.staff_id) == (token.id, token.store_id, None)
        assert ledger_sum(db.session, member_id) == body["balance"]


def test_worked_example_3_the_upgrade_applies_from_the_next_purchase(app, register):
    member_id, card = new_member(app, tier="silver")
    with app.app_context():
        factories.purchase(db.session.get(Member, member_id), 500_000)  # ¥4,900 paid after silver's 2%
        db.session.commit()
    body = register.post("/purchases", {"card_number": card, "gross_amount": "150"}).get_json()
    assert (body["discount_amount"], body["paid_amount"], body["points_earned"]) == ("3.00", "147.00", 176)
    assert body["tier_changed"] is True
    assert body["tier"] == {"code": "gold", "name": "Gold", "multiplier": "1.5", "discount_percent": "5"}


@pytest.mark.parametrize(("body", "status", "field", "code"), [
    ({"gross_amount": "10"}, 422, "card_number", "missing_field"),
    ({"card_number": "1000000008", "gross_amount": "10"}, 404, "card_number", "member_not_found"),
    ({"card_number": "1000000009", "gross_amount": "10"}, 422, "card_number", "invalid_card_number"),
    ({"card_number": "CARD", "gross_amount": "0"}, 422, "gross_amount", "invalid_amount"),
    ({"card_number": "CARD"}, 422, "gross_amount", "missing_field"),
    ({"card_number": "CARD", "gross_amount": 12.5}, 422, "gross_amount", "invalid_type"),
    ({"card_number": "CARD", "gross_amount": "-5"}, 422, "gross_amount", "invalid_amount"),
    ({"card_number": "CARD", "gross_amount": "1.999"}, 422, "gross_amount", "invalid_amount"),
    ({"card_number": "CARD", "gross_amount": "abc"}, 422, "gross_amount", "invalid_amount"),
    ({"card_number": "CARD", "gross_amount": "1000000.01"}, 422, "gross_amount", "amount_over_limit"),
    ({"card_number": "CARD", "gross_amount": "100", "redeem_points": 5000}, 422, "redeem_points",
     "insufficient_points"),
    ({"card_number": "CARD", "gross_amount": "100", "redeem_points": 50}, 422, "redeem_points",
     "below_redeem_minimum"),
    ({"card_number": "CARD", "gross_amount": "5", "redeem_points": 600}, 422, "redeem_points",
     "over_redeem_limit"),
    ({"card_number": "CARD", "gross_amount": "100", "redeem_points": -1}, 422, "redeem_points", "invalid_value"),
    ({"card_number": "CARD", "gross_amount": "100", "redeem_points": "100"}, 422, "redeem_points", "invalid_type"),
    ({"card_number": "CARD", "gross_amount": "100", "redeem_points": True}, 422, "redeem_points", "invalid_type"),
    ({"card_number": "CARD", "gross_amount": "100", "receipt_no": "x" * 65}, 422, "receipt_no", "too_long"),
])
def test_refused_purchases_name_the_field_and_change_nothing(app, register, body, status, field, code):
    member_id, card = new_member(app)
    with app.app_context():
        factories.purchase(db.session.get(Member, member_id), 100_000)  # 1,000 points to spend
        db.session.commit()
    body = {key: card if value == "CARD" else value for key, value in body.items()}
    response = register.post("/purchases", body)
    assert response.status_code == status, response.get_json()
    assert (error(response)["field"], error(response)["code"]) == (field, code)
    assert count(app, Purchase) == 1
    assert count(app, LedgerEntry) == 1


def test_amounts_are_accepted_as_a_cashier_would_type_them(app, register):
    _, card = new_member(app)
    for typed, gross in (("12", "12.00"), ("12.5", "12.50"), ("¥12.50", "12.50"), ("１２．５", "12.50")):
        body = register.post("/purchases", {"card_number": card, "gross_amount": typed}).get_json()
        assert body["gross_amount"] == gross


# --- returns --------------------------------------------------------------------------------------------

def test_worked_example_2_three_small_returns_through_the_api(app, register):
    _, card = new_member(app, tier="silver")
    purchase = register.post("/purchases", {"card_number": card, "gross_amount": "10.00"}).get_json()
    assert (purchase["paid_amount"], purchase["points_earned"]) == ("9.80", 11)
    results = [register.post(f"/purchases/{purchase['purchase_id']}/returns", {"gross_amount": amount}).get_json()
               for amount in ("3.33", "3.33", "3.34")]
    assert [r["refund_amount"] for r in results] == ["3.26", "3.27", "3.27"]
    assert [r["points_reversed"] for r in results] == [3, 4, 4]
    assert results[-1]["balance"] == 0
    response = register.post(f"/purchases/{purchase['purchase_id']}/returns", {"gross_amount": "0.01"})
    assert response.status_code == 422
    assert error(response)["code"] == "exceeds_returnable"


@pytest.mark.parametrize(("policy", "refund", "shortfall_amount", "balance"), [
    ("deduct", "496.46", "3.54", 0), ("negative", "500.00", "0.00", -354)])
def test_worked_example_4_shortfall_through_the_api(app, register, policy, refund, shortfall_amount, balance):
    _, card = new_member(app)
    if policy != "deduct":
        with app.app_context():
            rules.set_rule(db.session, "shortfall_policy", policy, staff=None, now=factories._now())
            db.session.commit()
    big = register.post("/purchases", {"card_number": card, "gross_amount": "500"}).get_json()
    small = register.post("/purchases", {"card_number": card, "gross_amount": "50", "redeem_points": 400}).get_json()
    assert (small["paid_amount"], small["balance"]) == ("46.00", 146)
    response = register.post(f"/purchases/{big['purchase_id']}/returns", {"all": True})
    assert response.status_code == 201
    body = response.get_json()
    assert (body["gross_amount"], body["refund_amount"], body["points_reversed"], body["points_restored"]) == (
        "500.00", refund, 500, 0)
    assert (body["shortfall_points"], body["shortfall_amount"], body["balance"]) == (354, shortfall_amount, balance)
    member = register.get(f"/members/{card}").get_json()
    assert member["qualifying_spend"] == "46.00"


def test_a_return_that_takes_the_tier_away_says_so(app, register):
    _, card = new_member(app)
    purchase = register.post("/purchases", {"card_number": card, "gross_amount": "1200"}).get_json()
    assert purchase["tier"]["code"] == "silver" and purchase["tier_changed"]
    body = register.post(f"/purchases/{purchase['purchase_id']}/returns", {"gross_amount": "300"}).get_json()
    assert body["tier"]["code"] == "member" and body["tier_changed"] is True
    with app.app_context():
        ret = db.session.get(Return, body["return_id"])
        token = db.session.scalars(select(ApiToken)).one()
        assert (ret.api_token_id, ret.store_id, ret.staff_id) == (token.id, token.store_id, None)


def test_a_return_at_another_stores_register(app, client):
    here = Register(client, make_token(app, "Till 1", "S001"))
    there = Register(client, make_token(app, "Till 9", "S002"))
    _, card = new_member(app)
    purchase = here.post("/purchases", {"card_number": card, "gross_amount": "80"}).get_json()
    body = there.post(f"/purchases/{purchase['purchase_id']}/returns", {"all": True}).get_json()
    with app.app_context():
        assert db.session.get(Return, body["return_id"]).store.code == "S002"


@pytest.mark.parametrize(("body", "status", "field", "code"), [
    ({}, 422, "gross_amount", "missing_field"),
    ({"all": False}, 422, "gross_amount", "missing_field"),
    ({"all": True, "gross_amount": "10"}, 422, "gross_amount", "invalid_value"),
    ({"all": "yes"}, 422, "all", "invalid_type"),
    ({"gross_amount": "0"}, 422, "gross_amount", "invalid_amount"),
    ({"gross_amount": "80.01"}, 422, "gross_amount", "exceeds_returnable"),
    ({"gross_amount": "999999999"}, 422, "gross_amount", "exceeds_returnable"),
])
def test_refused_returns_change_nothing(app, register, body, status, field, code):
    _, card = new_member(app)
    purchase = register.post("/purchases", {"card_number": card, "gross_amount": "80"}).get_json()
    response = register.post(f"/purchases/{purchase['purchase_id']}/returns", body)
    assert response.status_code == status
    assert (error(response)["field"], error(response)["code"]) == (field, code)
    assert count(app, Return) == 0
    assert count(app, LedgerEntry) == 1


@pytest.mark.parametrize("purchase_id", ["999", "0", "99999999999999999999"])
def test_returning_an_unknown_purchase_is_404(register, purchase_id):
    response = register.post(f"/purchases/{purchase_id}/returns", {"all": True})
    assert response.status_code == 404
    assert error(response)["code"] in ("purchase_not_found", "not_found")


# --- complaints -----------------------------------------------------------------------------------------

def test_a_complaint_for_a_member_and_a_purchase(app, register):
    member_id, card = new_member(app)
    purchase = register.post("/purchases", {"card_number": card, "gross_amount": "80"}).get_json()
    response = register.post("/complaints", {
        "card_number": card, "category": "product_quality", "severity": "high",
        "description": "The milk was sour.\nBought this morning.", "purchase_id": purchase["purchase_id"]})
    assert response.status_code == 201
    body = response.get_json()
    assert body["status"] == "open"
    with app.app_context():
        complaint = db.session.get(Complaint, body["complaint_id"])
        token = db.session.scalars(select(ApiToken)).one()
        assert (complaint.member_id, complaint.purchase_id) == (member_id, purchase["purchase_id"])
        assert (complaint.channel, complaint.store_id, complaint.api_token_id) == ("register", token.store_id,
                                                                                   token.id)
        assert complaint.description == "The milk was sour.\nBought this morning."
        events = db.session.scalars(select(ComplaintEvent).where(ComplaintEvent.complaint_id == complaint.id)).all()
        assert [event.kind for event in events] == ["opened"]


def test_an_anonymous_customers_complaint(app, register):
    response = register.post("/complaints", {"category": "store_environment", "severity": "low",
                                             "description": "Wet floor by the door"})
    assert response.status_code == 201
    with app.app_context():
        assert db.session.get(Complaint, response.get_json()["complaint_id"]).member_id is None


@pytest.mark.parametrize(("body", "status", "field", "code"), [
    ({"severity": "low", "description": "x"}, 422, "category", "missing_field"),
    ({"category": "weather", "severity": "low", "description": "x"}, 422, "category", "invalid_category"),
    ({"category": "other", "severity": "urgent", "description": "x"}, 422, "severity", "invalid_severity"),
    ({"category": "other", "severity": "low", "description": "   "}, 422, "description", "missing_description"),
    ({"category": "other", "severity": "low", "description": "x" * 2001}, 422, "description", "too_long"),
    ({"category": "other", "severity": "low", "description": "x", "purchase_id": 999}, 404, "purchase_id",
     "purchase_not_found"),
    ({"category": "other", "severity": "low", "description": "x", "purchase_id": 0}, 422, "purchase_id",
     "invalid_value"),
    ({"category": "other", "severity": "low", "description": "x", "card_number": "1000000008"}, 404,
     "card_number", "member_not_found"),
    ({"category": "other", "severity": "low", "description": "x", "card_number": "OTHER", "purchase_id": "P"},
     422, "purchase_id", "purchase_mismatch"),
])
def test_refused_complaints_change_nothing(app, register, body, status, field, code):
    _, card = new_member(app)
    _, other = new_member(app)
    purchase = register.post("/purchases", {"card_number": card, "gross_amount": "80"}).get_json()
    swap = {"OTHER": other, "P": purchase["purchase_id"]}
    body = {key: swap.get(value, value) if isinstance(value, str) else value for key, value in body.items()}
    response = register.post("/complaints", body)
    assert response.status_code == status, response.get_json()
    assert (error(response)["field"], error(response)["code"]) == (field, code)
    assert count(app, Complaint) == 0


# --- idempotency ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/members", "/purchases", "/purchases/1/returns", "/complaints"])
def test_every_post_needs_an_idempotency_key(register, path):
    response = register.post(path, {}, key=None)
    assert response.status_code == 400
    assert error(response)["code"] == "idempotency_key_required"


def test_a_replay_returns_the_first_answer_byte_for_byte_and_does_nothing_again(app, register):
    member_id, card = new_member(app)
    body = {"card_number": card, "gross_amount": "388.88"}
    first = register.post("/purchases", body, key="till-1-sale-42")
    again = register.post("/purchases", json.dumps(body, indent=2), key="till-1-sale-42")  # same JSON, spaced
    assert first.status_code == again.status_code == 201
    assert again.get_data() == first.get_data()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert count(app, Purchase) == 1
    with app.app_context():
        assert db.session.get(Member, member_id).points_balance == 388


def test_the_same_key_with_another_body_is_409(app, register):
    _, card = new_member(app)
    assert register.post("/purchases", {"card_number": card, "gross_amount": "10"}, key="k-1").status_code == 201
    response = register.post("/purchases", {"card_number": card, "gross_amount": "11"}, key="k-1")
    assert response.status_code == 409
    assert error(response)["code"] == "idempotency_key_reused"
    other_path = register.post("/complaints", {"category": "other", "severity": "low", "description": "x"},
                               key="k-1")
    assert other_path.status_code == 409
    assert count(app, Purchase) == 1 and count(app, Complaint) == 0


def test_a_refused_request_keeps_nothing_so_the_corrected_retry_may_reuse_its_key(app, register):
    _, card = new_member(app)
    assert register.post("/purchases", {"card_number": card, "gross_amount": "0"}, key="k-2").status_code == 422
    response = register.post("/purchases", {"card_number": card, "gross_amount": "10"}, key="k-2")
    assert response.status_code == 201


def test_keys_belong_to_their_register(app, client):
    first = Register(client, make_token(app, "Till 1"))
    second = Register(client, make_token(app, "Till 2"))
    _, card = new_member(app)
    body = {"card_number": card, "gross_amount": "10"}
    assert first.post("/purchases", body, key="sale-1").status_code == 201
    assert second.post("/purchases", body, key="sale-1").status_code == 201
    assert count(app, Purchase) == 2


def test_a_replayed_registration_shows_the_same_card_and_code(app, register):
    body = {"name": "Li", "phone": "13812345678", "privacy_consent": True}
    first = register.post("/members", body, key="reg-1")
    again = register.post("/members", body, key="reg-1")
    assert again.status_code == 201 and again.get_data() == first.get_data()
    assert count(app, Member) == 1


@pytest.mark.parametrize("key", ["x" * 256, "naïve-key"])
def test_a_malformed_idempotency_key_is_400(app, register, key):
    _, card = new_member(app)
    response = register.post("/purchases", {"card_number": card, "gross_amount": "10"}, key=key)
    assert response.status_code == 400
    assert error(response)["code"] == "invalid_idempotency_key"


def test_concurrent_requests_with_one_key_do_the_work_once(app):
    """Ten threads send the same purchase with the same key at the same moment: one purchase, ten equal answers."""
    token = make_token(app)
    member_id, card = new_member(app)
    body = {"card_number": card, "gross_amount": "123.45", "redeem_points": 0}
    barrier = threading.Barrier(10)
    answers: list = [None] * 10

    def send(slot: int) -> None:
        register = Register(app.test_client(), token)
        barrier.wait()
        answers[slot] = register.post("/purchases", body, key="same-key")

    threads = [threading.Thread(target=send, args=(n,)) for n in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {answer.status_code for answer in answers} == {201}
    assert len({answer.get_data() for answer in answers}) == 1
    assert count(app, Purchase) == 1
    with app.app_context():
        assert db.session.get(Member, member_id).points_balance == 123 == ledger_sum(db.session, member_id)


def test_a_read_only_call_is_noted_as_the_tokens_last_use(app, register):
    """Noted once the answer is sent (when the server closes the response), in a transaction of its own."""
    with register.get("/members/lookup", q="1234") as response:
        assert response.status_code == 200
    with app.app_context():
        row = db.session.scalars(select(ApiToken)).one()
        assert row.last_used_at is not None
        first_use = row.last_used_at
    with register.get("/members/lookup", q="1234") as response:
        assert response.status_code == 200
    with app.app_context():  # within a few minutes: not written again
        assert db.session.scalars(select(ApiToken)).one().last_used_at == first_use
