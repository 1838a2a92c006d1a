"""Money and points are sacred: one purchase per checkout form, however often and however fast it is sent.

Every test runs on SQLite and on PostgreSQL (through the `app` fixture). The concurrent tests fire
real requests from several threads, each with its own test client signed in as the same cashier,
released together by a barrier.
"""
from __future__ import annotations

import re
import threading
import uuid

import pytest
from sqlalchemy import func, select

from portal import checkout
from portal.extensions import db
from portal.ledger import ledger_sum
from portal.models import LedgerEntry, Member, Purchase

from . import factories
from .helpers import field_error, figure, form_key, text_of

THREADS = 10
RECEIPT_URL = re.compile(r"^/till/purchases/(\d+)$")
FIGURES = ("gross", "discount", "due", "redeemed", "paid", "earned", "balance")


# --- helpers --------------------------------------------------------------------------------------------

def new_key() -> str:
    return uuid.uuid4().hex


def purchases_url(card: str) -> str:
    return f"/till/members/{card}/purchases"


def receipt_target(response) -> str:
    """Where the answer sends the till: the pushed URL (htmx) or the redirect (no JavaScript)."""
    if response.status_code == 303:
        return response.headers["Location"]
    assert response.status_code == 200, (response.status_code, text_of(response)[:2000])
    return response.headers["HX-Push-Url"]


def receipt_id(response) -> int:
    match = RECEIPT_URL.match(receipt_target(response))
    assert match, receipt_target(response)
    return int(match.group(1))


def figures(response) -> dict[str, str]:
    body = response.get_data(as_text=True)
    return {name: figure(response, name) for name in FIGURES if f'data-figure="{name}"' in body}


def state(app, member_id: int) -> dict:
    """What the database holds for one member: purchases, ledger entries by kind, balance and ledger sum."""
    with app.app_context():
        purchases = db.session.scalars(
            select(Purchase).where(Purchase.member_id == member_id).order_by(Purchase.id)
        ).all()
        kinds = dict(
            db.session.execute(
                select(LedgerEntry.kind, func.count()).where(LedgerEntry.member_id == member_id)
                .group_by(LedgerEntry.kind)
            ).all()
        )
        return {
            "purchases": [(p.id, p.idempotency_key, p.gross_fen, p.points_redeemed) for p in purchases],
            "entries": {str(getattr(kind, "value", kind)): n for kind, n in kinds.items()},
            "balance": db.session.scalar(select(Member.points_balance).where(Member.id == member_id)),
            "ledger_sum": ledger_sum(db.session, member_id),
            "all_purchases": db.session.scalar(select(func.count()).select_from(Purchase)),
            "all_entries": db.session.scalar(select(func.count()).select_from(LedgerEntry)),
        }


def entries_of_purchase(app, purchase_id: int) -> list[tuple[str, int]]:
    with app.app_context():
        rows = db.session.execute(
            select(LedgerEntry.kind, LedgerEntry.points).where(LedgerEntry.purchase_id == purchase_id)
            .order_by(LedgerEntry.id)
        ).all()
        return [(str(getattr(kind, "value", kind)), points) for kind, points in rows]


def assert_books_balance(app, member_id: int, expected_balance: int) -> None:
    s = state(app, member_id)
    assert s["balance"] == s["ledger_sum"] == expected_balance, s


@pytest.fixture
def member(app):
    """A base-tier member with 500 points (one ¥500.00 purchase), as plain values."""
    with app.app_context():
        m = factories.member(name="王小明")
        factories.purchase(m, 50_000)
        db.session.commit()
        assert m.points_balance == 500
        return {"id": m.id, "card": m.card_number}


def cashier_clients(app, login, n: int):
    """n test clients sharing one cashier login: one real login, then the session cookie copied."""
    first = app.test_client()
    login(first, "cashier")
    first.csrf_token()  # puts the CSRF secret in the session before the cookie is copied
    cookie = first.get_cookie(app.config["SESSION_COOKIE_NAME"])
    assert cookie is not None
    clients = [first]
    for _ in range(n - 1):
        other = app.test_client()
        other.set_cookie(cookie.key, cookie.value, domain=cookie.domain or "localhost", path=cookie.path or "/")
        clients.append(other)
    return clients


def fire_together(clients, make_request):
    """Run make_request(client, i) in one thread per client, all released at once; return the answers."""
    barrier = threading.Barrier(len(clients))
    results: list = [None] * len(clients)
    errors: list[BaseException] = []

    def run(i: int, client) -> None:
        try:
            barrier.wait(timeout=30)
            response = make_request(client, i)
            results[i] = (response.status_code, dict(response.headers), response.get_data(as_text=True))
        except BaseException as error:  # collected and re-raised in the test's thread
            errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=run, args=(i, c), name=f"till-{i}") for i, c in enumerate(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a till request hung"
    if errors:
        raise errors[0]
    return results


# --- 1. a double submission records one purchase -------------------------------------------------------

@pytest.mark.parametrize("htmx", [True, False], ids=["htmx", "no-js"])
def test_same_form_sent_twice_records_one_purchase_and_shows_the_same_receipt(app, cashier_client, member, htmx):
    page = cashier_client.get(f"/till/members/{member['card']}")
    key = form_key(page)
    data = {"gross": "88.88", "points": "200", "receipt_number": "R-42", "idempotency_key": key}

    first = cashier_client.post(purchases_url(member["card"]), data=data, htmx=htmx)
    second = cashier_client.post(purchases_url(member["card"]), data=data, htmx=htmx)

    assert first.status_code == second.status_code == (200 if htmx else 303)
    assert receipt_target(first) == receipt_target(second)
    purchase_id = receipt_id(first)
    if htmx:
        shown_first, shown_second = figures(first), figures(second)
    else:
        shown_first = figures(cashier_client.get(receipt_target(first)))
        shown_second = figures(cashier_client.get(receipt_target(second)))
    # ¥88.88, no discount at base tier, 200 points pay ¥2.00, ¥86.88 paid earns 86.
    expected = {"gross": "¥88.88", "discount": "−¥0.00", "due": "¥88.88", "redeemed": "−¥2.00",
                "paid": "¥86.88", "earned": "+86", "balance": "386"}
    assert shown_first == shown_second == expected

    s = state(app, member["id"])
    assert [p for p in s["purchases"] if p[1] == key] == [(purchase_id, key, 8888, 200)]
    assert len(s["purchases"]) == 2  # the setup purchase and this one
    assert sorted(entries_of_purchase(app, purchase_id)) == [("earn", 86), ("redeem", -200)]
    assert s["entries"] == {"earn": 2, "redeem": 1}
    assert_books_balance(app, member["id"], 500 - 200 + 86)


# --- 2. same key, different figures: the first purchase stands ------------------------------------------

@pytest.mark.parametrize(
    "second_data",
    [
        {"gross": "500.00"},
        {"gross": "88.88", "points": "400"},
        {"gross": "1", "points": "100", "receipt_number": "R-other"},
    ],
    ids=["other-amount", "other-points", "other-everything"],
)
def test_same_key_with_different_figures_answers_with_the_first_receipt(app, cashier_client, member, second_data):
    key = new_key()
    first = cashier_client.post(purchases_url(member["card"]),
                                data={"gross": "88.88", "points": "200", "idempotency_key": key}, htmx=True)
    assert first.status_code == 200
    after_first = state(app, member["id"])

    second = cashier_client.post(purchases_url(member["card"]), data={**second_data, "idempotency_key": key},
                                 htmx=True)

    assert second.status_code == 200
    assert second.headers["HX-Push-Url"] == first.headers["HX-Push-Url"]
    assert figures(second) == figures(first)
    assert figure(second, "gross") == "¥88.88" and figure(second, "paid") == "¥86.88"
    assert state(app, member["id"]) == after_first
    assert_books_balance(app, member["id"], 386)


# --- 3. refreshing the receipt records nothing -----------------------------------------------------------

def test_refreshing_the_receipt_after_a_plain_post_records_nothing_new(app, cashier_client, member):
    key = new_key()
    response = cashier_client.post(purchases_url(member["card"]),
                                   data={"gross": "12.50", "idempotency_key": key})
    assert response.status_code == 303
    url = response.headers["Location"]
    assert RECEIPT_URL.match(url)
    after_post = state(app, member["id"])

    for _ in range(3):  # F5, F5, F5 — and htmx's own history restore
        receipt = cashier_client.get(url)
        assert receipt.status_code == 200
        assert figure(receipt, "paid") == "¥12.50" and figure(receipt, "earned") == "+12"
        assert figure(receipt, "balance") == "512"
    assert cashier_client.get(url, htmx=True).status_code == 200

    assert state(app, member["id"]) == after_post
    assert_books_balance(app, member["id"], 512)


def test_refreshing_the_pushed_url_after_an_htmx_post_records_nothing_new(app, cashier_client, member):
    response = cashier_client.post(purchases_url(member["card"]),
                                   data={"gross": "12.50", "idempotency_key": new_key()}, htmx=True)
    after_post = state(app, member["id"])
    receipt = cashier_client.get(response.headers["HX-Push-Url"])
    assert receipt.status_code == 200
    assert figures(receipt) == figures(response)
    assert state(app, member["id"]) == after_post


# --- 4. ten tills press Enter at once with the same form -------------------------------------------------

def test_concurrent_submissions_of_one_form_record_one_purchase(app, login, member):
    clients = cashier_clients(app, login, THREADS)
    key = new_key()
    data = {"gross": "88.88", "points": "200", "idempotency_key": key}

    def submit(client, i):
        return client.post(purchases_url(member["card"]), data=data, htmx=i % 2 == 0)

    results = fire_together(clients, submit)

    statuses = [status for status, _, _ in results]
    assert all(status in (200, 303) for status in statuses), statuses
    targets = set()
    for i, (status, headers, _body) in enumerate(results):
        if i % 2 == 0:
            assert status == 200, (i, status)
            targets.add(headers["HX-Push-Url"])
        else:
            assert status == 303, (i, status)
            targets.add(headers["Location"])
    assert len(targets) == 1, targets
    purchase_id = int(RECEIPT_URL.match(targets.pop()).group(1))

    s = state(app, member["id"])
    assert [p for p in s["purchases"] if p[1] == key] == [(purchase_id, key, 8888, 200)]
    assert len(s["purchases"]) == 2
    assert sorted(entries_of_purchase(app, purchase_id)) == [("earn", 86), ("redeem", -200)]
    assert s["entries"] == {"earn": 2, "redeem": 1}
    assert_books_balance(app, member["id"], 386)


# --- 5. ten tills spend the same points at once -----------------------------------------------------------

def test_concurrent_redemptions_never_spend_more_than_the_balance(app, login, member):
    clients = cashier_clients(app, login, THREADS)

    def submit(client, _i):
        # ¥1.00 paid entirely with 100 points: nothing earned, so only redemptions move the balance.
        return client.post(purchases_url(member["card"]),
                           data={"gross": "1.00", "points": "100", "idempotency_key": new_key()}, htmx=True)

    results = fire_together(clients, submit)

    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200] * 5 + [422] * 5, statuses
    for status, headers, body in results:
        if status == 200:
            assert RECEIPT_URL.match(headers["HX-Push-Url"])
            assert 'data-figure="redeemed">−¥1.00<' in body
        else:
            assert "HX-Push-Url" not in headers
            # The points field stays visible with its message, so the cashier can clear it and take cash.
            shown = re.search(r'<p class="error" id="points-error" role="alert">([^<]*)</p>', body)
            assert shown and shown.group(1).startswith("The member has only 0 points."), body[:3000]
            assert re.search(r'<input[^>]*name="points"[^>]*type="text"', body)

    s = state(app, member["id"])
    assert len(s["purchases"]) == 1 + 5
    assert s["entries"] == {"earn": 1, "redeem": 5}
    assert s["balance"] >= 0
    assert_books_balance(app, member["id"], 0)
    with app.app_context():
        balances_after = db.session.scalars(
            select(LedgerEntry.balance_after).where(LedgerEntry.member_id == member["id"])
            .order_by(LedgerEntry.id)
        ).all()
    assert balances_after == [500, 400, 300, 200, 100, 0]  # each redemption saw the one before it


# --- 6. a refused checkout writes nothing and leaves the key usable ---------------------------------------

def test_refused_checkout_writes_nothing_and_the_same_form_can_then_succeed(app, cashier_client, member):
    page = cashier_client.get(f"/till/members/{member['card']}")
    key = form_key(page)
    before = state(app, member["id"])

    refused = cashier_client.post(purchases_url(member["card"]),
                                  data={"gross": "100", "points": "600", "idempotency_key": key}, htmx=True)
    assert refused.status_code == 422
    assert field_error(refused, "points").startswith("The member has only 500 points.")
    assert form_key(refused) == key  # the corrected form is sent with the same key
    assert "HX-Push-Url" not in refused.headers
    assert state(app, member["id"]) == before
    with app.app_context():
        assert checkout.find_by_key(db.session, key) is None

    accepted = cashier_client.post(purchases_url(member["card"]),
                                   data={"gross": "100", "points": "300", "idempotency_key": key}, htmx=True)
    assert accepted.status_code == 200
    assert figure(accepted, "redeemed") == "−¥3.00" and figure(accepted, "earned") == "+97"
    s = state(app, member["id"])
    assert [p[1:] for p in s["purchases"] if p[1] == key] == [(key, 10_000, 300)]
    assert_books_balance(app, member["id"], 500 - 300 + 97)

    # And from now on the key replays that purchase.
    again = cashier_client.post(purchases_url(member["card"]),
                                data={"gross": "100", "points": "300", "idempotency_key": key}, htmx=True)
    assert again.headers["HX-Push-Url"] == accepted.headers["HX-Push-Url"]
    assert state(app, member["id"]) == s


def test_a_form_key_used_for_one_member_is_refused_for_another(app, cashier_client, member):
    with app.app_context():
        other = factories.member(name="李四")
        db.session.commit()
        other_id, other_card = other.id, other.card_number
    key = new_key()
    first = cashier_client.post(purchases_url(member["card"]), data={"gross": "10", "idempotency_key": key},
                                htmx=True)
    assert first.status_code == 200
    before = state(app, other_id)

    second = cashier_client.post(purchases_url(other_card), data={"gross": "10", "idempotency_key": key},
                                 htmx=True)

    assert second.status_code == 422
    assert "already used for another member" in text_of(second)
    assert "HX-Push-Url" not in second.headers
    assert state(app, other_id) == before
    assert_books_balance(app, other_id, 0)
    assert_books_balance(app, member["id"], 510)


# --- the race record_purchase guards with a SAVEPOINT ------------------------------------------------------

def test_key_inserted_between_the_check_and_the_insert_replays_the_first_purchase(app, cashier_client, member,
                                                                                    monkeypatch):
    """Another request committed the key after our lookup: the unique index catches it, we answer its receipt."""
    key = new_key()
    first = cashier_client.post(purchases_url(member["card"]), data={"gross": "20", "idempotency_key": key},
                                htmx=True)
    assert first.status_code == 200
    after_first = state(app, member["id"])

    real_find = checkout.find_by_key
    calls = []

    def blind_first_lookup(session, k):
        calls.append(k)
        return None if len(calls) == 1 else real_find(session, k)

    monkeypatch.setattr(checkout, "find_by_key", blind_first_lookup)
    second = cashier_client.post(purchases_url(member["card"]), data={"gross": "30", "idempotency_key": key},
                                 htmx=True)
    monkeypatch.undo()

    assert len(calls) == 2  # the blind check, then the replay after the IntegrityError
    assert second.status_code == 200
    assert second.headers["HX-Push-Url"] == first.headers["HX-Push-Url"]
    assert figures(second) == figures(first)
    assert state(app, member["id"]) == after_first
    assert_books_balance(app, member["id"], 520)
