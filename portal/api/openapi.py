"""The OpenAPI 3.1 document of the cash-register API, built once from the shapes below.

The tests check real responses against it and run schemathesis over it, so it cannot drift
from what the endpoints do.
"""
from __future__ import annotations

from functools import cache

from ..complaints import MAX_DESCRIPTION
from ..models import COMPLAINT_CATEGORIES, COMPLAINT_SEVERITIES, LedgerKind

ERROR_CODES = {
    400: ["idempotency_key_required", "invalid_idempotency_key", "invalid_json", "bad_request"],
    401: ["unauthorised"],
    404: ["member_not_found", "purchase_not_found", "not_found"],
    409: ["idempotency_key_reused", "request_in_progress", "phone_taken"],
    413: ["request_entity_too_large"],
    422: [
        "missing_field", "invalid_type", "too_long", "invalid_value", "invalid_amount", "invalid_card_number",
        "amount_over_limit", "invalid_points", "insufficient_points", "purchase_too_small_for_points",
        "below_redeem_minimum", "over_redeem_limit", "exceeds_returnable", "invalid_category",
        "invalid_severity", "missing_description", "description_too_long", "purchase_mismatch",
    ],
    429: ["too_many_requests"],
}
ERROR_TEXT = {
    400: "The request itself is malformed: no Idempotency-Key, or a body that is not a JSON object.",
    401: "No token, an unknown token, or a revoked one.",
    404: "The member or purchase does not exist.",
    409: "The Idempotency-Key was used for a different request, or the phone is already registered.",
    413: "The body is too large.",
    422: "A field is missing, of the wrong type, or refused by the rules; `field` names it.",
    429: "Too many requests from this register; slow down.",
}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict) -> dict:
    return {"anyOf": [schema, {"type": "null"}]}


_optional = _nullable  # an optional field may also be sent as null, meaning "not given"


AMOUNT = {"type": "string", "pattern": r"^-?[0-9]+\.[0-9]{2}$", "examples": ["123.45"],
          "description": "Yuan as a decimal string with two places."}
AMOUNT_IN = {"type": "string", "minLength": 1, "maxLength": 32, "examples": ["123.45"],
             "description": "Yuan: `12`, `12.5`, `12.50`, `¥12.50`, full-width digits; more than zero."}
CARD = {"type": "string", "pattern": "^[0-9]{10}$", "examples": ["1000000008"],
        "description": "10 digits, the last a Luhn check digit."}
TIMESTAMP = {"type": "string", "format": "date-time", "description": "ISO 8601 with the store's offset."}
ROW_ID = {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}
DECIMAL = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$"}

SCHEMAS = {
    "Error": {
        "type": "object", "required": ["error"], "additionalProperties": False,
        "properties": {"error": {
            "type": "object", "required": ["code", "message", "field"], "additionalProperties": False,
            "properties": {
                "code": {"type": "string", "enum": sorted({c for codes in ERROR_CODES.values() for c in codes})},
                "message": {"type": "string", "description": "In the language of Accept-Language (zh or en)."},
                "field": _nullable({"type": "string"}),
            },
        }},
    },
    "Tier": {
        "type": "object", "required": ["code", "name", "multiplier", "discount_percent"],
        "properties": {
            "code": {"type": "string", "examples": ["gold"]},
            "name": {"type": "string", "description": "In the language of Accept-Language."},
            "multiplier": {**DECIMAL, "examples": ["1.5"]},
            "discount_percent": {**DECIMAL, "examples": ["5"]},
        },
    },
    "NextTier": {
        "type": "object", "required": ["code", "spend_needed"],
        "properties": {"code": {"type": "string"}, "spend_needed": AMOUNT},
    },
    "Member": {
        "type": "object",
        "required": ["card_number", "name", "phone_masked", "tier", "balance", "available_points",
                     "qualifying_spend", "next_tier"],
        "properties": {
            "card_number": CARD,
            "name": {"type": "string"},
            "phone_masked": {"type": "string", "examples": ["138****5678"]},
            "tier": _ref("Tier"),
            "balance": {"type": "integer", "description": "Points; negative when a return left a debt."},
            "available_points": {"type": "integer", "description": "Points usable now (expired lots left out)."},
            "qualifying_spend": {**AMOUNT, "description": "Cash paid in the qualifying window, net of refunds."},
            "next_tier": _nullable(_ref("NextTier")),
        },
    },
    "NewMember": {
        "allOf": [_ref("Member"), {
            "type": "object", "required": ["activation_code"],
            "properties": {"activation_code": {
                "type": "string", "pattern": "^[0-9]{6}$",
                "description": "One-time code with which the member sets a password on their phone; "
                               "valid 30 minutes. Show it to the member once."}},
        }],
    },
    "MemberList": {
        "type": "object", "required": ["members"],
        "properties": {"members": {"type": "array", "maxItems": 20, "items": _ref("Member")}},
    },
    "LedgerEntry": {
        "type": "object",
        "required": ["id", "kind", "points", "reason", "created_at", "purchase_id", "return_id"],
        "properties": {
            "id": {"type": "integer"},
            "kind": {"type": "string", "enum": [kind.value for kind in LedgerKind]},
            "points": {"type": "integer", "description": "Positive for credits, negative for debits."},
            "reason": {"type": "string", "examples": ["purchase_earn"]},
            "created_at": TIMESTAMP,
            "purchase_id": _nullable({"type": "integer"}),
            "return_id": _nullable({"type": "integer"}),
            "balance_after": {"type": "integer"},
        },
    },
    "LedgerPage": {
        "type": "object", "required": ["entries", "next_page"],
        "properties": {
            "entries": {"type": "array", "items": _ref("LedgerEntry")},
            "next_page": _nullable({"type": "integer", "minimum": 2}),
        },
    },
    "NewMemberRequest": {
        "type": "object", "required": ["name", "phone", "privacy_consent"],
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 100},
            "phone": {"type": "string", "minLength": 1, "maxLength": 32, "examples": ["13812345678"],
                      "description": "A mainland mobile number; +86 accepted."},
            "birthday": _optional({"type": "string", "format": "date", "maxLength": 10}),
            "email": _optional({"type": "string", "maxLength": 254}),
            "privacy_consent": {"type": "boolean", "const": True,
                                "description": "The member agreed to the privacy notice; required."},
            "marketing_consent": _optional({"type": "boolean"}),
            "guardian_consent": _optional({"type": "boolean",
                                           "description": "Required true when the birthday makes the member under 14."}),
            "referrer": _optional({"type": "string", "maxLength": 32,
                                   "description": "The referrer's phone or card number."}),
        },
    },
    "PurchaseRequest": {
        "type": "object", "required": ["card_number", "gross_amount"],
        "properties": {
            "card_number": CARD,
            "gross_amount": {**AMOUNT_IN, "description": "Shelf price, before the member discount. " +
                             AMOUNT_IN["description"]},
            "redeem_points": _optional({"type": "integer", "minimum": 0, "maximum": 10**12,
                                        "description": "Points to pay with."}),
            "receipt_no": _optional({"type": "string", "maxLength": 64,
                                     "description": "The register's own receipt number."}),
        },
    },
    "Purchase": {
        "type": "object",
        "required": ["purchase_id", "gross_amount", "discount_amount", "redeemed_points", "redeemed_amount",
                     "paid_amount", "points_earned", "balance", "tier", "tier_changed"],
        "properties": {
            "purchase_id": {"type": "integer"},
            "card_number": CARD,
            "gross_amount": AMOUNT,
            "discount_amount": AMOUNT,
            "redeemed_points": {"type": "integer"},
            "redeemed_amount": AMOUNT,
            "paid_amount": AMOUNT,
            "points_earned": {"type": "integer"},
            "balance": {"type": "integer"},
            "tier": {**_ref("Tier"), "description": "The tier after this purchase."},
            "tier_changed": {"type": "boolean"},
            "receipt_no": _nullable({"type": "string"}),
            "created_at": TIMESTAMP,
        },
    },
    "ReturnRequest": {
        "type": "object",
        "properties": {
            "gross_amount": _optional({**AMOUNT_IN, "description": "Shelf price of what comes back. " +
                                       AMOUNT_IN["description"]}),
            "all": _optional({"type": "boolean", "description": "true: return everything still returnable."}),
        },
        "anyOf": [{"required": ["gross_amount"]},
                  {"required": ["all"], "properties": {"all": {"const": True}}}],
    },
    "Return": {
        "type": "object",
        "required": ["return_id", "gross_amount", "refund_amount", "points_reversed", "points_restored",
                     "shortfall_points", "shortfall_amount", "balance", "tier", "tier_changed"],
        "properties": {
            "return_id": {"type": "integer"},
            "purchase_id": {"type": "integer"},
            "gross_amount": AMOUNT,
            "refund_amount": {**AMOUNT, "description": "Cash to give back, after any shortfall deduction."},
            "points_reversed": {"type": "integer"},
            "points_restored": {"type": "integer"},
            "shortfall_points": {"type": "integer",
                                 "description": "Earned points to take back that the balance no longer held."},
            "shortfall_amount": {**AMOUNT, "description": "Taken off the refund for the shortfall."},
            "balance": {"type": "integer"},
            "tier": {**_ref("Tier"), "description": "The tier after this return."},
            "tier_changed": {"type": "boolean"},
            "created_at": TIMESTAMP,
        },
    },
    "ComplaintRequest": {
        "type": "object", "required": ["category", "severity", "description"],
        "properties": {
            "card_number": _optional(CARD),
            "category": {"type": "string", "enum": list(COMPLAINT_CATEGORIES)},
            "severity": {"type": "string", "enum": list(COMPLAINT_SEVERITIES)},
            "description": {"type": "string", "minLength": 1, "maxLength": MAX_DESCRIPTION},
            "purchase_id": _optional(ROW_ID),
        },
    },
    "Complaint": {
        "type": "object", "required": ["complaint_id", "status"],
        "properties": {
            "complaint_id": {"type": "integer"},
            "status": {"type": "string", "enum": ["open"]},
            "created_at": TIMESTAMP,
        },
    },
}

IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key", "in": "header", "required": True,
    "description": "A new key for each new request, reused only to retry it. A retry with the same body gets "
                   "the first answer byte for byte and does nothing again; the same key with another body is "
                   "refused with 409.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]([ -~]*[!-~])?$"},
}
CARD_PATH = {"name": "card_number", "in": "path", "required": True, "schema": CARD}
REPLAYED = {"Idempotent-Replayed": {"description": "`true` when this is the stored answer to a retry.",
                                     "schema": {"type": "string", "enum": ["true"]}}}


def _errors(*statuses: int) -> dict:
    return {
        str(status): {
            "description": ERROR_TEXT[status] + " Codes: " + ", ".join(f"`{c}`" for c in ERROR_CODES[status]) + ".",
            "content": {"application/json": {"schema": _ref("Error")}},
        }
        for status in statuses
    }


def _ok(status: int, schema: str, description: str, headers: dict | None = None) -> dict:
    answer = {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}
    if headers:
        answer["headers"] = headers
    return {str(status): answer}


def _post(summary: str, operation_id: str, request: str, answer: str, description: str, errors: tuple,
          parameters: list | None = None) -> dict:
    return {"post": {
        "summary": summary, "operationId": operation_id, "description": description,
        "parameters": [IDEMPOTENCY_KEY, *(parameters or [])],
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(request)}}},
        "responses": {**_ok(201, answer, "Done.", REPLAYED), **_errors(400, 401, 409, 413, 422, 429, *errors)},
    }}


def _get(summary: str, operation_id: str, answer: str, description: str, parameters: list,
         errors: tuple = ()) -> dict:
    return {"get": {
        "summary": summary, "operationId": operation_id, "description": description, "parameters": parameters,
        "responses": {**_ok(200, answer, "Found."), **_errors(401, 422, 429, *errors)},
    }}


@cache
def document() -> dict:
    """The whole OpenAPI 3.1 document."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Membership portal: cash-register API",
            "version": "1.0.0",
            "description": (
                "For cash registers that talk to the portal directly. Each register has its own bearer token, "
                "created by an admin (Manage → Register tokens, or `flask create-api-token`). Amounts are "
                "decimal strings with two places, points are integers, times are ISO 8601 with the store's "
                "offset. Every POST needs an `Idempotency-Key`. Errors are "
                "`{\"error\": {\"code\", \"message\", \"field\"}}` with a 4xx status. Messages follow "
                "Accept-Language (zh or en)."
            ),
        },
        "servers": [{"url": "/api/v1"}],
        "security": [{"register": []}],
        "components": {
            "securitySchemes": {"register": {"type": "http", "scheme": "bearer",
                                             "description": "A register's token, `plk_...`."}},
            "schemas": SCHEMAS,
        },
        "paths": {
            "/members": _post(
                "Register a member", "registerMember", "NewMemberRequest", "NewMember",
                "Creates the member in the lowest tier at the register's store, with a new card number and a "
                "one-time activation code. A phone already registered is a 409 `phone_taken`.", (),
            ),
            "/members/lookup": _get(
                "Find members", "lookupMembers", "MemberList",
                "By full phone, last 4 digits of the phone, card number, or name prefix. At most 20.",
                [{"name": "q", "in": "query", "required": True,
                  "schema": {"type": "string", "minLength": 1, "maxLength": 64}}],
            ),
            "/members/{card_number}": _get(
                "One member", "getMember", "Member", "A card number whose check digit fails is a 422.",
                [CARD_PATH], (404,),
            ),
            "/members/{card_number}/ledger": _get(
                "A member's points history", "getMemberLedger", "LedgerPage",
                "Every points movement with its reason, newest first, 50 a page; `next_page` is null on the "
                "last page.",
                [CARD_PATH, {"name": "page", "in": "query", "required": False,
                             "schema": {"type": "integer", "minimum": 1, "maximum": 1000000, "default": 1}}],
                (404,),
            ),
            "/purchases": _post(
                "Record a purchase", "recordPurchase", "PurchaseRequest", "Purchase",
                "Applies the member's tier discount, the points paid and the points earned, exactly as the till "
                "does, and moves the member up a tier when the spend reaches it.", (404,),
            ),
            "/purchases/{purchase_id}/returns": _post(
                "Return part or all of a purchase", "recordReturn", "ReturnRequest", "Return",
                "At any store of the chain. Refund and points follow the purchase's proportions; more than is "
                "left to return is a 422 `exceeds_returnable`.", (404,),
                [{"name": "purchase_id", "in": "path", "required": True,
                  "schema": ROW_ID}],
            ),
            "/complaints": _post(
                "Write down a complaint", "fileComplaint", "ComplaintRequest", "Complaint",
                "For a member (card_number) or an anonymous customer, optionally tied to a purchase.", (404,),
            ),
        },
    }
