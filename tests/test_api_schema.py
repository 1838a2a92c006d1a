"""The OpenAPI document is the contract: it is valid OpenAPI 3.1, it names every API route, real answers
match it, and schemathesis, generating requests from it, finds no 500 and no answer that breaks it."""
from __future__ import annotations

import re
import uuid

import jsonschema
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from portal.api.openapi import ERROR_CODES, document
from portal import api_tokens
from portal.extensions import db
from portal.models import ApiToken

from . import factories
from .test_api import Register, make_token, new_member

PREFIX = "/api/v1"
IDEMPOTENCY_KEY = re.compile(r"[!-~]([ -~]*[!-~])?")


def response_schema(path: str, method: str, status: int) -> dict:
    """The JSON schema the document gives for this answer, with the components it refers to."""
    doc = document()
    responses = doc["paths"][path][method]["responses"]
    assert str(status) in responses, f"{method.upper()} {path} does not document status {status}"
    schema = dict(responses[str(status)]["content"]["application/json"]["schema"])
    schema["components"] = doc["components"]
    return schema


def check(response, path: str, method: str = "get") -> None:
    validator = jsonschema.Draft202012Validator(response_schema(path, method, response.status_code),
                                                format_checker=jsonschema.FormatChecker())
    validator.validate(response.get_json())
    assert response.headers["Content-Type"] == "application/json"


def test_the_document_is_openapi_3_1_and_served_publicly(client):
    response = client.get(PREFIX + "/openapi.json")
    assert response.status_code == 200
    body = response.get_json()
    assert body["openapi"] == "3.1.0"
    assert body == document()
    for name, schema in body["components"]["schemas"].items():
        jsonschema.Draft202012Validator.check_schema(schema)


def test_every_api_route_is_in_the_document_and_nothing_else(app):
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(PREFIX) and rule.endpoint != "api.openapi":
            path = rule.rule[len(PREFIX):].replace("<id:", "<").replace("<", "{").replace(">", "}")
            routes |= {(path, method.lower()) for method in rule.methods - {"HEAD", "OPTIONS"}}
    documented = {(path, method) for path, item in document()["paths"].items() for method in item}
    assert routes == documented


def test_every_error_code_the_api_can_answer_is_listed():
    codes = document()["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"]
    assert set(codes) == {code for group in ERROR_CODES.values() for code in group}


def test_real_answers_match_the_document(app, client):
    """A day at the register, every answer checked against the document: successes and refusals."""
    register = Register(client, make_token(app))
    _, referrer = new_member(app, tier="diamond")

    created = register.post("/members", {"name": "李雷", "phone": "13812345678", "privacy_consent": True,
                                          "referrer": referrer, "birthday": "1990-01-31"})
    check(created, "/members", "post")
    card = created.get_json()["card_number"]
    check(register.post("/members", {"name": "x", "phone": "13812345678", "privacy_consent": True}),
          "/members", "post")  # 409 phone_taken
    check(register.post("/members", {"name": "x"}), "/members", "post")  # 422
    check(register.post("/members", "[]"), "/members", "post")  # 400
    check(register.post("/members", {}, key=None), "/members", "post")  # 400

    check(register.get("/members/lookup", q="5678"), "/members/lookup")
    check(register.get("/members/lookup", q=""), "/members/lookup")  # 422
    check(client.get(PREFIX + "/members/lookup?q=5678"), "/members/lookup")  # 401
    check(register.get(f"/members/{card}"), "/members/{card_number}")
    check(register.get(f"/members/{referrer}"), "/members/{card_number}")  # next_tier null
    check(register.get("/members/1000000008"), "/members/{card_number}")  # 404
    check(register.get("/members/1000000009"), "/members/{card_number}")  # 422

    sale = register.post("/purchases", {"card_number": card, "gross_amount": "1200", "receipt_no": "R-1"})
    check(sale, "/purchases", "post")
    purchase_id = sale.get_json()["purchase_id"]
    check(register.post("/purchases", {"card_number": card, "gross_amount": "50", "redeem_points": 200}),
          "/purchases", "post")
    check(register.post("/purchases", {"card_number": card, "gross_amount": "1", "redeem_points": 9}),
          "/purchases", "post")  # 422
    check(register.post("/purchases", {"card_number": "1000000008", "gross_amount": "1"}),
          "/purchases", "post")  # 404
    check(register.post("/purchases", {"card_number": card, "gross_amount": "2"}, key="k"), "/purchases", "post")
    check(register.post("/purchases", {"card_number": card, "gross_amount": "3"}, key="k"),
          "/purchases", "post")  # 409

    path = "/purchases/{purchase_id}/returns"
    check(register.post(f"/purchases/{purchase_id}/returns", {"gross_amount": "200"}), path, "post")
    check(register.post(f"/purchases/{purchase_id}/returns", {"gross_amount": "2000"}), path, "post")  # 422
    check(register.post(f"/purchases/{purchase_id}/returns", {"all": True}), path, "post")
    check(register.post("/purchases/999/returns", {"all": True}), path, "post")  # 404

    check(register.get(f"/members/{card}/ledger"), "/members/{card_number}/ledger")
    check(register.get(f"/members/{card}/ledger", page="x"), "/members/{card_number}/ledger")  # 422

    check(register.post("/complaints", {"card_number": card, "category": "other", "severity": "normal",
                                        "description": "Queue too long", "purchase_id": purchase_id}),
          "/complaints", "post")
    check(register.post("/complaints", {"category": "other", "severity": "normal", "description": ""}),
          "/complaints", "post")  # 422


# --- schemathesis ---------------------------------------------------------------------------------------

REGISTER_TOKEN = "plk_schemathesis-register-0123456789abcdefghijklmn"  # this test's own, made below


@pytest.fixture
def register_token(app) -> None:
    """The register whose token schemathesis sends, and the member whose card the document's examples use."""
    with app.app_context():
        store = factories.store()
        db.session.add(ApiToken(name="Fuzzing till", store_id=store.id, token_hash=api_tokens.hash_token(REGISTER_TOKEN),
                                token_hint=REGISTER_TOKEN[:10], created_at=factories._now()))
        member = factories.member(name="Example Member", phone="+8613800138000")
        member.card_number = "1000000008"
        factories.purchase(member, 300_000)
        db.session.commit()


# Built from the document the app serves (test_the_document_is_openapi_3_1_and_served_publicly proves
# they are the same), so the tests can be generated before any app exists.
schema = schemathesis.openapi.from_dict(document())
schema.config.update(base_url="http://localhost" + PREFIX)


@schema.auth()
class RegisterAuth:
    """How schemathesis signs in; its checks also send requests without it, and expect a 401."""

    def get(self, case, context):
        return REGISTER_TOKEN

    def set(self, case, data, context):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.filter_too_much])
def test_schemathesis_finds_no_500_and_no_answer_outside_the_document(case, app, register_token):
    case.operation.app = case.operation.schema.app = app  # every request, the checks' own follow-ups too, goes to this app in-process
    # Keep a malformed key (it is probing the 400), but make a well-formed one unique, so that most
    # examples do real work instead of replaying each other.
    key = (case.headers or {}).get("Idempotency-Key")
    if key is not None and IDEMPOTENCY_KEY.fullmatch(key) and len(key) < 200:
        case.headers["Idempotency-Key"] = f"{key}-{uuid.uuid4().hex}"
    # Not checked: that every schema-valid request is accepted. The rules go beyond what a schema can
    # say (a card's check digit, a phone's format, the balance, what is left to return); those refusals
    # are documented 4xx answers, which the other checks hold to the document.
    response = case.call(app=app)
    case.validate_response(response, excluded_checks=[positive_data_acceptance])
