"""Complaints and visit ratings on the member's phone: filing, following the timeline, reopening,
rating, the one-tap visit rating, and never another member's complaint or purchase.

Every test runs on SQLite and on PostgreSQL (through the `app` fixture)."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from portal import complaints
from portal.extensions import db
from portal.models import Complaint, ComplaintEvent, Member, Purchase, VisitRating
from portal.rules import load_rules

from . import factories
from .helpers import field_error, form_key, text_of

UTC = timezone.utc


def sign_in(client, phone: str):
    response = client.post("/member/login", data={"phone": phone.removeprefix("+86"), "password": factories.PASSWORD})
    assert response.status_code == 303
    return client


def make_member(name: str, phone: str, purchase_fen: int | None = 10_000) -> dict:
    member = factories.member(name=name, phone=phone, activated=True)
    purchase = factories.purchase(member, purchase_fen).purchase if purchase_fen else None
    db.session.commit()
    return {"id": member.id, "phone": phone, "card": member.card_number,
            "purchase": purchase.id if purchase else None}


@pytest.fixture
def alice(app):
    with app.app_context():
        return make_member("Alice Own", "+8613811112222")


@pytest.fixture
def bob(app):
    with app.app_context():
        return make_member("Bob Secret", "+8613933334444", 120_000)


@pytest.fixture
def alice_client(client, alice):
    return sign_in(client, alice["phone"])


def count(model, *where) -> int:
    return db.session.scalar(select(func.count()).select_from(model).where(*where))


def file_for(member: dict, **changes) -> int:
    """A complaint of this member, filed at the counter, in the state asked for."""
    store = factories.store()
    complaint = complaints.file_complaint(
        db.session, store=store, category="product_quality", severity="normal", description="Sour milk",
        channel="counter", member=db.session.get(Member, member["id"]), now=changes.pop("now", datetime.now(UTC)))
    db.session.commit()
    return complaint.id


def manager():
    staff = factories.staff(role="manager")
    db.session.commit()
    return staff


def complaint_form(client, **fields):
    page = client.get("/me/complaints/new")
    data = {"idempotency_key": form_key(page), "category": "service_attitude", "purchase_id": "",
            "description": "Nobody at the counter for ten minutes."}
    data.update(fields)
    return client.post("/me/complaints", data=data)


# --- filing ---------------------------------------------------------------------------------------------

def test_a_member_files_a_complaint_about_a_visit_and_follows_it(app, alice_client, alice):
    response = complaint_form(alice_client, purchase_id=str(alice["purchase"]))
    assert response.status_code == 303
    match = re.fullmatch(r"/me/complaints/(\d+)", response.headers["Location"])
    assert match
    with app.app_context():
        complaint = db.session.get(Complaint, int(match.group(1)))
        assert (complaint.member_id, complaint.purchase_id, complaint.channel, complaint.status) == (
            alice["id"], alice["purchase"], "member", "open")
        assert complaint.store.code == "S001"
    page = text_of(alice_client.get(response.headers["Location"]))
    assert "Nobody at the counter for ten minutes." in page and "You wrote" in page and "Open" in page
    assert f"No. {match.group(1)}" in text_of(alice_client.get("/me/complaints"))


def test_the_same_complaint_form_sent_twice_files_one(app, alice_client):
    page = alice_client.get("/me/complaints/new")
    data = {"idempotency_key": form_key(page), "category": "other", "purchase_id": "", "description": "Twice"}
    first = alice_client.post("/me/complaints", data=data)
    second = alice_client.post("/me/complaints", data=data)
    assert first.headers["Location"] == second.headers["Location"]
    with app.app_context():
        assert count(Complaint) == 1


@pytest.mark.parametrize(("fields", "field", "message"), [
    ({"description": "   "}, "description", "Describe what happened."),
    ({"description": "x" * 2001}, "description", "Field cannot be longer than 2000 characters."),
    ({"category": "weather"}, "category", "Not a valid choice."),
    ({"purchase_id": "999999"}, "purchase_id", "Not a valid choice."),
])
def test_refused_complaints_say_why_beside_the_field_and_file_nothing(app, alice_client, fields, field, message):
    response = complaint_form(alice_client, **fields)
    assert response.status_code == 422
    assert field_error(response, field) == message
    with app.app_context():
        assert count(Complaint) == 0


def test_a_member_cannot_complain_about_another_members_visit(app, alice_client, bob):
    response = complaint_form(alice_client, purchase_id=str(bob["purchase"]))
    assert response.status_code == 422
    with app.app_context():
        assert count(Complaint) == 0
    assert "¥1,200.00" not in text_of(alice_client.get("/me/complaints/new"))


# --- the timeline, reopening and rating -----------------------------------------------------------------

def test_the_member_sees_replies_meant_for_them_but_never_internal_notes(app, alice_client, alice):
    with app.app_context():
        complaint_id = file_for(alice)
        boss, complaint = manager(), db.session.get(Complaint, complaint_id)
        complaints.reply(db.session, complaint, staff=boss, body="Internal: supplier batch 42", to_member=False,
                         now=datetime.now(UTC))
        complaints.reply(db.session, complaint, staff=boss, body="Sorry! Come by for a refund.", to_member=True,
                         now=datetime.now(UTC))
        db.session.commit()
    page = text_of(alice_client.get(f"/me/complaints/{complaint_id}"))
    assert "Sorry! Come by for a refund." in page and "The store replied" in page
    assert "supplier batch 42" not in page
    assert "Acknowledged" in page


def test_reopen_within_seven_days_then_rate_once(app, alice_client, alice):
    with app.app_context():
        complaint_id = file_for(alice)
        complaints.resolve(db.session, db.session.get(Complaint, complaint_id), staff=manager(),
                           body="Refunded.", now=datetime.now(UTC))
        db.session.commit()
    page = text_of(alice_client.get(f"/me/complaints/{complaint_id}"))
    assert "Not solved?" in page and "How well was it resolved?" in page
    response = alice_client.post(f"/me/complaints/{complaint_id}/reopen", data={"body": "Still sour."})
    assert response.status_code == 303
    with app.app_context():
        complaint = db.session.get(Complaint, complaint_id)
        assert complaint.status == "open" and complaint.reopened_at is not None
        complaints.resolve(db.session, complaint, staff=manager(), body="Replaced.", now=datetime.now(UTC))
        db.session.commit()
    assert alice_client.post(f"/me/complaints/{complaint_id}/rating", data={"rating": "4"}).status_code == 303
    again = alice_client.post(f"/me/complaints/{complaint_id}/rating", data={"rating": "5"})
    assert again.status_code == 422 and "You have already rated this." in text_of(again)
    with app.app_context():
        assert db.session.get(Complaint, complaint_id).rating == 4
    assert "You rated it 4 out of 5" in text_of(alice_client.get(f"/me/complaints/{complaint_id}"))


def test_reopening_after_the_window_is_refused_and_changes_nothing(app, alice_client, alice):
    resolved_at = datetime.now(UTC) - timedelta(days=8)
    with app.app_context():
        complaint_id = file_for(alice, now=resolved_at - timedelta(hours=1))
        complaints.resolve(db.session, db.session.get(Complaint, complaint_id), staff=manager(), body=None,
                           now=resolved_at)
        db.session.commit()
        events = count(ComplaintEvent)
    assert "Not solved?" not in text_of(alice_client.get(f"/me/complaints/{complaint_id}"))
    response = alice_client.post(f"/me/complaints/{complaint_id}/reopen", data={"body": "late"})
    assert response.status_code == 422
    assert "can no longer be reopened: more than 7 days have passed" in text_of(response)
    with app.app_context():
        assert db.session.get(Complaint, complaint_id).status == "resolved"
        assert count(ComplaintEvent) == events


@pytest.mark.parametrize("rating", ["0", "6", "abc", ""])
def test_a_resolution_rating_outside_1_to_5_is_refused(app, alice_client, alice, rating):
    with app.app_context():
        complaint_id = file_for(alice)
        complaints.resolve(db.session, db.session.get(Complaint, complaint_id), staff=manager(), body=None,
                           now=datetime.now(UTC))
        db.session.commit()
    response = alice_client.post(f"/me/complaints/{complaint_id}/rating", data={"rating": rating})
    assert response.status_code == 422 and "Choose from 1 to 5." in text_of(response)
    with app.app_context():
        assert db.session.get(Complaint, complaint_id).rating is None


def test_rating_an_open_complaint_is_refused(app, alice_client, alice):
    with app.app_context():
        complaint_id = file_for(alice)
    response = alice_client.post(f"/me/complaints/{complaint_id}/rating", data={"rating": "5"})
    assert response.status_code == 422 and "not resolved yet" in text_of(response)


# --- visit ratings --------------------------------------------------------------------------------------

def test_home_offers_a_one_tap_rating_of_the_last_visit_once(app, alice_client, alice):
    home = text_of(alice_client.get("/me/"))
    assert "How was your visit to Test Store" in home
    action = f"/me/visits/{alice['purchase']}/rating"
    assert action in home
    response = alice_client.post(action, data={"rating": "5"}, htmx=True)
    assert response.status_code == 200 and "Thank you for your rating!" in text_of(response)
    assert "How was your visit" not in text_of(alice_client.get("/me/"))
    again = alice_client.post(action, data={"rating": "4"}, htmx=True)
    assert again.status_code == 422 and "You have already rated this visit." in text_of(again)
    with app.app_context():
        ratings = db.session.scalars(select(VisitRating)).all()
        assert [(r.purchase_id, r.rating, r.complaint_id) for r in ratings] == [(alice["purchase"], 5, None)]


def test_a_poor_visit_rating_opens_a_follow_up_in_the_queue(app, alice_client, alice):
    response = alice_client.post(f"/me/visits/{alice['purchase']}/rating",
                                 data={"rating": "2", "comment": "Rude cashier"})
    assert response.status_code == 303
    with app.app_context():
        visit = db.session.scalars(select(VisitRating)).one()
        follow_up = db.session.get(Complaint, visit.complaint_id)
        assert (follow_up.channel, follow_up.purchase_id, follow_up.status) == ("survey", alice["purchase"], "open")
        assert follow_up.description == "Rude cashier"
    assert "Rude cashier" in text_of(alice_client.get(f"/me/complaints/{follow_up.id}"))


def test_a_plain_visit_rating_needs_a_number(app, alice_client, alice):
    response = alice_client.post(f"/me/visits/{alice['purchase']}/rating", data={"rating": "9"})
    assert response.status_code == 422
    with app.app_context():
        assert count(VisitRating) == 0


# --- isolation ------------------------------------------------------------------------------------------

def test_another_members_complaints_and_visits_are_not_found(app, alice_client, bob):
    with app.app_context():
        bobs = file_for(bob)
        complaints.resolve(db.session, db.session.get(Complaint, bobs), staff=manager(), body="Secret reply",
                           now=datetime.now(UTC))
        db.session.commit()
    assert alice_client.get(f"/me/complaints/{bobs}").status_code == 404
    assert alice_client.post(f"/me/complaints/{bobs}/reopen", data={"body": "x"}).status_code == 404
    assert alice_client.post(f"/me/complaints/{bobs}/rating", data={"rating": "1"}).status_code == 404
    assert alice_client.post(f"/me/visits/{bob['purchase']}/rating", data={"rating": "1"}).status_code == 404
    assert "Sour milk" not in text_of(alice_client.get("/me/complaints"))
    with app.app_context():
        complaint = db.session.get(Complaint, bobs)
        assert (complaint.status, complaint.rating) == ("resolved", None)
        assert count(VisitRating) == 0


def test_staff_and_strangers_cannot_use_the_members_complaint_pages(app, client, login, alice):
    with app.app_context():
        complaint_id = file_for(alice)
    assert client.get(f"/me/complaints/{complaint_id}").status_code == 302
    login(client, "manager")
    assert client.get(f"/me/complaints/{complaint_id}").status_code == 403
    assert client.post("/me/complaints", data={"description": "x"}).status_code == 403


# --- at the till ----------------------------------------------------------------------------------------

def test_a_cashier_logs_a_complaint_about_a_purchase_in_one_form(app, client, login, alice):
    login(client, "cashier")
    form = client.get(f"/till/complaints/new?purchase={alice['purchase']}", htmx=True)
    assert "About the purchase of" in text_of(form) and alice["card"] in text_of(form)
    data = {"idempotency_key": form_key(form), "purchase_id": str(alice["purchase"]), "card_number": alice["card"],
            "channel": "phone", "category": "price_billing", "severity": "high", "description": "Charged twice"}
    response = client.post("/till/complaints", data=data, htmx=True)
    assert response.status_code == 200 and "is logged" in text_of(response)
    assert client.post("/till/complaints", data=data, htmx=True).headers["HX-Push-Url"] == \
        response.headers["HX-Push-Url"]
    with app.app_context():
        complaint = db.session.scalars(select(Complaint)).one()
        assert (complaint.channel, complaint.category, complaint.severity, complaint.member_id) == (
            "phone", "price_billing", "high", alice["id"])
        assert complaint.staff_id is not None


def test_an_anonymous_customers_complaint_at_the_till(app, client, login):
    login(client, "cashier")
    form = client.get("/till/complaints/new", htmx=True)
    response = client.post("/till/complaints", data={
        "idempotency_key": form_key(form), "card_number": "", "purchase_id": "", "channel": "counter",
        "category": "store_environment", "severity": "low", "description": "Wet floor"}, htmx=True)
    assert response.status_code == 200 and "Not a member" in text_of(response)


@pytest.mark.parametrize(("fields", "field", "message"), [
    ({"description": ""}, "description", "Describe what happened."),
    ({"card_number": "1000000009"}, "card_number", "This card number has a typo: its check digit does not match."),
    ({"card_number": "1000000008"}, "card_number", "No member has this card number."),
])
def test_refused_till_complaints_change_nothing(app, client, login, fields, field, message):
    login(client, "cashier")
    form = client.get("/till/complaints/new", htmx=True)
    data = {"idempotency_key": form_key(form), "card_number": "", "purchase_id": "", "channel": "counter",
            "category": "other", "severity": "normal", "description": "x", **fields}
    response = client.post("/till/complaints", data=data, htmx=True)
    assert response.status_code == 422
    assert field_error(response, field) == message
    with app.app_context():
        assert count(Complaint) == 0


def test_an_unknown_purchase_is_refused_at_the_till(app, client, login):
    login(client, "cashier")
    form = client.get("/till/complaints/new", htmx=True)
    response = client.post("/till/complaints", data={
        "idempotency_key": form_key(form), "card_number": "", "purchase_id": "999999", "channel": "counter",
        "category": "other", "severity": "normal", "description": "x"}, htmx=True)
    assert response.status_code == 422 and "No such purchase." in text_of(response)
    with app.app_context():
        assert count(Complaint) == 0
        assert load_rules(db.session).complaint_response_hours == 24
        assert count(Purchase) == 0
