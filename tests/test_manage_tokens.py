"""Register tokens: an admin creates and revokes the cash registers' API tokens on the page and from the command line.

A token is shown once, kept only as its SHA-256, works against the API at once and stops working as soon as it is
revoked. Both pages are admin-only; each POST is CSRF-protected, audited and answers a fragment to htmx.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone

import pytest
from sqlalchemy import func, select

from portal.api_tokens import create_token, hash_token
from portal.extensions import db
from portal.models import ApiToken, AuditLog, Staff, Store

from . import factories
from .helpers import field_error, form_key, is_full_page, text_of

PAGE = "/manage/api-tokens"
LOOKUP = "/api/v1/members/lookup?q=1234"
COMPLAINT = {"category": "other", "severity": "low", "description": "x"}


def count(model, *where) -> int:
    return db.session.scalar(select(func.count()).select_from(model).where(*where))


def store_id(code: str = "S001") -> int:
    return db.session.scalars(select(Store.id).where(Store.code == code)).one()


def shown_token(response) -> str | None:
    """The token in the 'shown once' notice, if the answer shows one."""
    match = re.search(r'<code class="mono token">([^<]*)</code>', response.get_data(as_text=True))
    return match.group(1) if match else None


def token_row(response, token_id: int) -> str:
    """The text of the token's row in the table."""
    match = re.search(rf'<tr id="token-{token_id}">(.*?)</tr>', text_of(response), re.S)
    assert match, f"no row for token {token_id} on the page"
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", match.group(1))).strip()


def api_get(client, token: str | None):
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return client.get(LOOKUP, headers=headers)


def make_token() -> tuple[int, str]:
    """A token made through the service, as the command line makes it: (id, token)."""
    row, token = create_token(db.session, name="Till 1", store=factories.store(), staff=None,
                              now=datetime.now(timezone.utc))
    db.session.commit()
    return row.id, token


@pytest.fixture
def admin_client(client, login):
    login(client, "admin")
    return client


def create(app, client, name: str = "Till 2", store: str = "S001", htmx: bool = False, key: str | None = None,
           **extra):
    """Post the creation form as the page offers it (its own one-time key unless `key` is given)."""
    with app.app_context():
        chosen = store_id(store)
    data = {"name": name, "store_id": str(chosen), "idempotency_key": key or form_key(client.get(PAGE)), **extra}
    return client.post(PAGE, data=data, htmx=htmx)


def only_token(app) -> dict:
    with app.app_context():
        row = db.session.scalars(select(ApiToken)).one()
        return {"id": row.id, "name": row.name, "hash": row.token_hash, "hint": row.token_hint,
                "store": row.store.code, "created_by_id": row.created_by_id, "last_used_at": row.last_used_at,
                "revoked_at": row.revoked_at}


# --- access ---------------------------------------------------------------------------------------------

def test_admin_sees_the_page_and_the_link_in_the_console_menu(admin_client):
    response = admin_client.get(PAGE)
    assert response.status_code == 200
    page = text_of(response)
    assert "<h1>Register tokens</h1>" in page
    assert "No register has a token yet." in page
    assert "S001 · Test Store" in page
    assert is_full_page(response)
    assert f'href="{PAGE}"' in text_of(admin_client.get("/manage/"))


@pytest.mark.parametrize("role", ["cashier", "manager"])
def test_cashier_and_manager_are_refused(app, client, login, role):
    login(client, role)
    with app.app_context():
        token_id, _token = make_token()
    assert client.get(PAGE).status_code == 403
    assert client.post(PAGE, data={"name": "Till 9", "store_id": "1", "idempotency_key": "k" * 32}).status_code == 403
    assert client.post(f"{PAGE}/{token_id}/revoke").status_code == 403
    assert f'href="{PAGE}"' not in text_of(client.get("/till/"))
    with app.app_context():
        assert count(ApiToken) == 1
        assert count(ApiToken, ApiToken.revoked_at.is_not(None)) == 0


@pytest.mark.parametrize("method, path", [("GET", PAGE), ("POST", PAGE), ("POST", f"{PAGE}/1/revoke")])
def test_anonymous_is_sent_to_login(app, client, method, path):
    with app.app_context():
        make_token()
    response = client.open(path, method=method, data={"name": "Till 9", "store_id": "1", "idempotency_key": "k" * 32})
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")
    with app.app_context():
        assert count(ApiToken) == 1
        assert count(ApiToken, ApiToken.revoked_at.is_not(None)) == 0


def test_a_signed_in_admin_without_a_token_is_refused_by_the_api(admin_client):
    response = api_get(admin_client, None)  # the session cookie counts for nothing on the API
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorised"


# --- creating -------------------------------------------------------------------------------------------

def test_create_shows_the_token_once_and_keeps_only_its_hash(app, admin_client):
    response = create(app, admin_client, name="Till 2")
    assert response.status_code == 201
    assert is_full_page(response)
    token = shown_token(response)
    assert token is not None and token.startswith("plk_")
    assert "Token for Till 2" in text_of(response)

    row = only_token(app)
    assert row["name"] == "Till 2" and row["store"] == "S001"
    assert row["hash"] != token
    assert row["hash"] == hash_token(token)
    assert token.startswith(row["hint"]) and len(row["hint"]) < len(token)
    with app.app_context():
        admin = db.session.scalars(select(Staff).where(Staff.role == "admin")).one()
        assert row["created_by_id"] == admin.id

    api = api_get(admin_client, token)
    assert api.status_code == 200
    assert api.get_json() == {"members": []}

    again = admin_client.get(PAGE)
    assert shown_token(again) is None
    assert token not in text_of(again)
    assert token_row(again, row["id"]).startswith(f"Till 2 Test Store {row['hint']}…")
    assert "Active" in token_row(again, row["id"])


def test_the_form_sent_twice_creates_one_token_and_shows_it_once(app, admin_client):
    key = form_key(admin_client.get(PAGE))
    first = create(app, admin_client, key=key)
    second = create(app, admin_client, key=key)
    token = shown_token(first)
    assert token is not None
    assert second.status_code == 201
    assert shown_token(second) is None and token not in text_of(second)
    assert "This form was already sent: the token for Till 2 was created and shown then." in text_of(second)
    with app.app_context():
        assert count(ApiToken) == 1
        assert count(AuditLog, AuditLog.action == "api_token.create") == 1


def test_the_answer_offers_a_fresh_form_for_the_next_register(app, admin_client):
    first = create(app, admin_client, name="Till 2")
    next_key = form_key(first)
    with app.app_context():
        assert count(ApiToken, ApiToken.creation_key == next_key) == 0
    second = create(app, admin_client, name="Till 3", key=next_key)
    assert second.status_code == 201
    assert shown_token(second) not in (None, shown_token(first))
    with app.app_context():
        assert sorted(db.session.scalars(select(ApiToken.name))) == ["Till 2", "Till 3"]


@pytest.mark.parametrize("name, error", [
    ("", "Name the register, such as “Till 2”."),
    ("   ", "Name the register, such as “Till 2”."),
    ("x" * 101, "Field cannot be longer than 100 characters."),
])
def test_a_missing_or_long_name_is_refused_beside_the_field(app, admin_client, name, error):
    response = create(app, admin_client, name=name)
    assert response.status_code == 422
    assert field_error(response, "name") == error
    assert shown_token(response) is None
    with app.app_context():
        assert count(ApiToken) == 0
        assert count(AuditLog, AuditLog.action == "api_token.create") == 0


@pytest.mark.parametrize("store_value", ["closed", "9999", "abc"])
def test_a_store_not_in_the_list_is_refused(app, admin_client, store_value):
    with app.app_context():
        closed = factories.store("S009", "Closed Store")
        closed.active = False
        db.session.commit()
        closed_id = closed.id
    page = admin_client.get(PAGE)
    assert "Closed Store" not in text_of(page)
    value = str(closed_id) if store_value == "closed" else store_value
    response = admin_client.post(PAGE, data={"name": "Till 2", "store_id": value, "idempotency_key": form_key(page)})
    assert response.status_code == 422
    assert field_error(response, "store_id")
    with app.app_context():
        assert count(ApiToken) == 0


# --- revoking -------------------------------------------------------------------------------------------

def test_revoke_refuses_the_very_next_call_and_shows_it_revoked(app, admin_client):
    token = shown_token(create(app, admin_client))
    token_id = only_token(app)["id"]
    assert api_get(admin_client, token).status_code == 200

    response = admin_client.post(f"{PAGE}/{token_id}/revoke")
    assert response.status_code == 303
    assert response.headers["Location"] == PAGE

    api = api_get(admin_client, token)
    assert api.status_code == 401
    assert api.get_json()["error"]["code"] == "unauthorised"
    assert api.headers["WWW-Authenticate"].startswith("Bearer")

    page = admin_client.get(PAGE)
    row = token_row(page, token_id)
    assert "Revoked" in row and "Active" not in row
    assert f"{PAGE}/{token_id}/revoke" not in text_of(page)  # no Revoke button left for it
    assert only_token(app)["revoked_at"] is not None


def test_create_and_revoke_are_audited_once(app, admin_client):
    create(app, admin_client)
    token_id = only_token(app)["id"]
    admin_client.post(f"{PAGE}/{token_id}/revoke")
    assert admin_client.post(f"{PAGE}/{token_id}/revoke").status_code == 303  # already revoked: nothing more
    with app.app_context():
        admin_id = db.session.scalars(select(Staff.id).where(Staff.role == "admin")).one()
        rows = db.session.execute(select(AuditLog.action, AuditLog.target, AuditLog.staff_id).order_by(AuditLog.id)
                                  .where(AuditLog.action.like("api_token.%"))).all()
        assert [tuple(r) for r in rows] == [
            ("api_token.create", f"api_token:{token_id}", admin_id),
            ("api_token.revoke", f"api_token:{token_id}", admin_id),
        ]


def test_revoking_an_unknown_token_is_not_found(admin_client):
    assert admin_client.post(f"{PAGE}/999/revoke").status_code == 404


# --- CSRF and htmx --------------------------------------------------------------------------------------

def test_create_without_csrf_token_is_refused(app, admin_client):
    page = admin_client.get(PAGE)
    with app.app_context():
        data = {"name": "Till 2", "store_id": str(store_id()), "idempotency_key": form_key(page)}
    response = admin_client.post(PAGE, data=data, csrf=False)
    assert response.status_code == 400
    assert "This form has expired" in text_of(response)
    with app.app_context():
        assert count(ApiToken) == 0


def test_revoke_without_csrf_token_is_refused(app, admin_client):
    token = shown_token(create(app, admin_client))
    response = admin_client.post(f"{PAGE}/{only_token(app)['id']}/revoke", csrf=False)
    assert response.status_code == 400
    assert only_token(app)["revoked_at"] is None
    assert api_get(admin_client, token).status_code == 200


def test_htmx_create_answers_the_tokens_fragment(app, admin_client):
    response = create(app, admin_client, htmx=True)
    assert response.status_code == 201
    assert not is_full_page(response)
    assert "<h1>Register tokens</h1>" in text_of(response)
    assert shown_token(response).startswith("plk_")
    assert "HX-Request" in response.headers["Vary"]


def test_htmx_create_with_an_error_answers_the_fragment_with_422(app, admin_client):
    response = create(app, admin_client, name="", htmx=True)
    assert response.status_code == 422
    assert not is_full_page(response)
    assert field_error(response, "name") == "Name the register, such as “Till 2”."


def test_htmx_revoke_answers_the_tokens_fragment(app, admin_client):
    token = shown_token(create(app, admin_client))
    token_id = only_token(app)["id"]
    response = admin_client.post(f"{PAGE}/{token_id}/revoke", htmx=True)
    assert response.status_code == 200
    assert not is_full_page(response)
    assert "The token for Till 2 is revoked." in text_of(response)
    assert "Revoked" in token_row(response, token_id)
    assert "HX-Request" in response.headers["Vary"]
    assert api_get(admin_client, token).status_code == 401


# --- last used ------------------------------------------------------------------------------------------

def test_a_post_to_the_api_records_when_the_token_was_last_used(app, admin_client):
    token = shown_token(create(app, admin_client))
    token_id = only_token(app)["id"]
    assert only_token(app)["last_used_at"] is None
    assert "Never" in token_row(admin_client.get(PAGE), token_id)

    before = datetime.now(timezone.utc)
    response = admin_client.post("/api/v1/complaints", json=COMPLAINT, csrf=False,
                                 headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "complaint-1"})
    assert response.status_code == 201, response.get_data(as_text=True)
    used = only_token(app)["last_used_at"]
    assert used is not None and before <= used <= datetime.now(timezone.utc)
    assert "Never" not in token_row(admin_client.get(PAGE), token_id)


# --- command line ---------------------------------------------------------------------------------------

def test_cli_prints_the_token_alone_on_the_last_line_and_it_works(app, runner):
    result = runner.invoke(args=["create-api-token", "--name", "Till 3"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    token = lines[-1]
    assert re.fullmatch(r"plk_[A-Za-z0-9_-]{40,}", token)
    assert token not in "\n".join(lines[:-1])
    assert "store S001" in result.output
    row = only_token(app)
    assert row["name"] == "Till 3" and row["store"] == "S001" and row["hash"] == hash_token(token)
    with app.app_context():
        assert count(AuditLog, AuditLog.action == "api_token.create") == 1
    assert api_get(app.test_client(), token).status_code == 200


def test_cli_with_an_unknown_store_fails_and_creates_nothing(app, runner):
    result = runner.invoke(args=["create-api-token", "--name", "Till 3", "--store", "S404"])
    assert result.exit_code != 0
    assert "No store with code 'S404'." in result.output
    with app.app_context():
        assert count(ApiToken) == 0


def test_cli_attributes_the_token_to_the_store_given(app, runner):
    with app.app_context():
        factories.store("S002", "Second Store")
        db.session.commit()
    result = runner.invoke(args=["create-api-token", "--name", "Till 1", "--store", "S002"])
    assert result.exit_code == 0, result.output
    assert "store S002 (Second Store)" in result.output
    assert only_token(app)["store"] == "S002"
    default = runner.invoke(args=["create-api-token", "--name", "Till 2"])
    assert default.exit_code == 0 and "store S001" in default.output  # without --store: the first store


def test_cli_refuses_an_empty_name(app, runner):
    result = runner.invoke(args=["create-api-token", "--name", "  "])
    assert result.exit_code != 0
    # In the portal's default language (Chinese), like every message the services give.
    assert "请填写收银机名称" in result.output
    with app.app_context():
        assert count(ApiToken) == 0
