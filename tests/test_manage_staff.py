"""Staff and stores in the manager console: creating stores and accounts, deactivating (the person's very next
request is refused), reactivating, new passwords (old ones stop working, logins end), role changes, and who
may do what.

Admins work everyone and every store; a manager works the cashiers of their own store only (another store's
person is a 404, a manager or admin of their store a 403). A refusal answers 422 beside its field and changes
nothing; htmx gets the row or the page's block back, a plain form a 303.
"""
from __future__ import annotations

import json
import re
import uuid

import pytest
from sqlalchemy import func, select

from portal import staff as staff_service
from portal.extensions import db
from portal.models import AuditLog, AuthSession, Staff, Store

from . import factories
from .helpers import audited_changes, field_error, form_key, is_full_page, text_of

STAFF = "/manage/staff"
STORES = "/manage/stores"
GOOD_PASSWORD = "a long secret 1"


# --- helpers --------------------------------------------------------------------------------------------

def count(model, *where) -> int:
    return db.session.scalar(select(func.count()).select_from(model).where(*where))


def make_staff(app, role: str = "cashier", store_code: str = "S001", **kwargs) -> int:
    with app.app_context():
        if store_code != "S001":
            factories.store(store_code, f"Store {store_code}")
        person = factories.staff(role=role, store_code=store_code, **kwargs)
        db.session.commit()
        return person.id


def person_of(app, staff_id: int) -> dict:
    with app.app_context():
        person = db.session.get(Staff, staff_id)
        return {"username": person.username, "role": person.role, "store_id": person.store_id,
                "active": person.active, "password_hash": person.password_hash}


def me(app, username: str) -> int:
    with app.app_context():
        return db.session.scalars(select(Staff.id).where(Staff.username == username)).one()


def audit_rows(app, action: str) -> list[AuditLog]:
    with app.app_context():
        rows = list(db.session.scalars(select(AuditLog).where(AuditLog.action == action).order_by(AuditLog.id)))
        db.session.expunge_all()
        return rows


def totals(app) -> dict:
    """Everything a refused action must leave as it was."""
    with app.app_context():
        return {"staff": count(Staff), "stores": count(Store), "audit": count(AuditLog, audited_changes()),
                "active": count(Staff, Staff.active.is_(True)),
                "logins": count(AuthSession, AuthSession.revoked_at.is_(None)),
                "roles": sorted(db.session.execute(select(Staff.id, Staff.role, Staff.store_id)).all())}


def listed(response) -> list[int]:
    return [int(n) for n in re.findall(r'<tr id="staff-(\d+)"', response.get_data(as_text=True))]


def row_text(response, staff_id: int) -> str:
    match = re.search(rf'<tr id="staff-{staff_id}" class="[^"]*">(.*?)</tr>', text_of(response), re.S)
    assert match, f"staff {staff_id} is not on the page"
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", match.group(1))).strip()


def sign_in(app, username: str, password: str):
    """A fresh browser signing in; returns (client, response)."""
    client = app.test_client()
    response = client.post("/login", data={"username": username, "password": password})
    return client, response


def new_password_of(response) -> str:
    match = re.search(r'<code class="mono token">([^<]+)</code>', response.get_data(as_text=True))
    assert match, "no new password on the page"
    return match.group(1)


def staff_form(**overrides) -> dict:
    data = {"username": "newbie", "name": "New Person", "password": GOOD_PASSWORD, "role": "cashier",
            "store_id": "1", "phone": "", "idempotency_key": uuid.uuid4().hex}
    data.update(overrides)
    return data


def store_form(**overrides) -> dict:
    data = {"code": "S002", "name": "Second Store", "timezone": "Asia/Shanghai", "idempotency_key": uuid.uuid4().hex}
    data.update(overrides)
    return data


@pytest.fixture
def admin(client, login):
    login(client, "admin")
    return client


@pytest.fixture
def manager(client, login):
    login(client, "manager")
    return client


# --- who may come in ------------------------------------------------------------------------------------

def test_cashier_gets_403_on_every_route(app, client, login):
    target = make_staff(app)
    login(client, "cashier")
    before = totals(app)
    for path in (STAFF, STORES):
        assert client.get(path).status_code == 403, path
    posts = [STAFF, STORES, f"{STORES}/1", f"{STORES}/1/close", f"{STORES}/1/reopen"] + [
        f"{STAFF}/{target}/{action}" for action in ("deactivate", "reactivate", "password", "role")]
    for path in posts:
        response = client.post(path, data={**staff_form(), **store_form(), "role": "admin"})
        assert response.status_code == 403, path
        assert client.post(path, data=staff_form(), htmx=True).status_code == 403, path
    assert totals(app) == before
    assert f'href="{STAFF}"' not in text_of(client.get("/till/"))


def test_anonymous_is_sent_to_sign_in(app, client):
    target = make_staff(app)
    for path in (STAFF, STORES):
        response = client.get(path)
        assert response.status_code == 302 and response.headers["Location"].startswith("/login"), path
    response = client.post(f"{STAFF}/{target}/deactivate")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")
    assert person_of(app, target)["active"]


def test_manager_may_not_use_the_admin_routes(app, manager):
    target = make_staff(app)
    before = totals(app)
    assert manager.get(STORES).status_code == 403
    assert manager.post(STORES, data=store_form()).status_code == 403
    assert manager.post(f"{STORES}/1/close").status_code == 403
    assert manager.post(f"{STAFF}/{target}/role", data={"role": "manager", "store_id": "1"}).status_code == 403
    assert totals(app) == before
    assert f'href="{STORES}"' not in text_of(manager.get(STAFF))


# --- stores ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("htmx", [False, True])
def test_admin_creates_a_store(app, admin, htmx):
    response = admin.post(STORES, data=store_form(code=" s-002 ", name="  Second  Store ",
                                                  timezone="Europe/London"), htmx=htmx)
    with app.app_context():
        store = db.session.scalars(select(Store).where(Store.code == "S-002")).one()
        assert (store.name, store.timezone, store.active) == ("Second  Store", "Europe/London", True)
        store_id = store.id
    if htmx:
        assert response.status_code == 200 and not is_full_page(response)
        assert "The store S-002 is created." in text_of(response)
    else:
        assert response.status_code == 303
        page = admin.get(response.headers["Location"])
        assert "The store S-002 is created." in text_of(page) and is_full_page(page)
    rows = audit_rows(app, "store.create")
    assert len(rows) == 1 and rows[0].target == f"store:{store_id}"
    after = json.loads(rows[0].after)
    assert (after["code"], after["timezone"], after["active"]) == ("S-002", "Europe/London", True)
    assert rows[0].staff_id is not None and rows[0].before is None
    # the new store can be chosen for staff at once
    assert 'S-002 · Second  Store' in text_of(admin.get(STAFF))


@pytest.mark.parametrize("field, value, message", [
    ("code", "S", "Use 2 to 16 capital letters"),
    ("code", "S 02", "Use 2 to 16 capital letters"),
    ("code", "-S02", "Use 2 to 16 capital letters"),
    ("code", "S0123456789ABCDEF", "Use 2 to 16 capital letters"),
    ("code", "S_02", "Use 2 to 16 capital letters"),
    ("code", "s001", "Another store has the code S001."),
    ("name", "   ", "Give the store a name."),
    ("name", "x" * 101, "Use at most 100 characters."),
    ("timezone", "Mars/Olympus", "Choose a time zone such as Asia/Shanghai."),
    ("timezone", "", "Choose a time zone such as Asia/Shanghai."),
    ("timezone", "../../etc/passwd", "Choose a time zone such as Asia/Shanghai."),
])
@pytest.mark.parametrize("htmx", [False, True])
def test_store_refusals_are_shown_beside_the_field(app, admin, field, value, message, htmx):
    before = totals(app)
    response = admin.post(STORES, data=store_form(**{field: value}), htmx=htmx)
    assert response.status_code == 422
    assert message in (field_error(response, f"store-{field}") or "")
    assert is_full_page(response) is not htmx
    assert totals(app) == before


def test_the_same_store_form_sent_twice_creates_one_store(app, admin):
    data = store_form()
    first = admin.post(STORES, data=data)
    second = admin.post(STORES, data=data)
    assert first.status_code == second.status_code == 303
    assert "already sent" in text_of(admin.get(second.headers["Location"]))
    again = admin.post(STORES, data=data, htmx=True)
    assert again.status_code == 200 and "already sent" in text_of(again)
    with app.app_context():
        assert count(Store, Store.code == "S002") == 1
    assert len(audit_rows(app, "store.create")) == 1
    # a new form with the same code is a duplicate, not a replay
    response = admin.post(STORES, data=store_form())
    assert response.status_code == 422 and "Another store" in field_error(response, "store-code")


def test_store_form_carries_a_fresh_key(admin):
    page = admin.get(STORES)
    assert page.status_code == 200 and is_full_page(page)
    assert form_key(page) != form_key(admin.get(STORES))


@pytest.mark.parametrize("htmx", [False, True])
def test_admin_renames_a_store_and_changes_its_zone(app, admin, htmx):
    response = admin.post(f"{STORES}/1", data={"name": "Flagship", "timezone": "Asia/Urumqi"}, htmx=htmx)
    assert response.status_code == (200 if htmx else 303)
    with app.app_context():
        store = db.session.get(Store, 1)
        assert (store.name, store.timezone) == ("Flagship", "Asia/Urumqi")
    row = audit_rows(app, "store.update")[0]
    assert json.loads(row.before)["name"] == "Test Store" and json.loads(row.after)["timezone"] == "Asia/Urumqi"
    refused = admin.post(f"{STORES}/1", data={"name": "Flagship", "timezone": "Nowhere"}, htmx=htmx)
    assert refused.status_code == 422 and "Choose a time zone" in text_of(refused)
    assert 'value="Nowhere"' in refused.get_data(as_text=True)
    assert admin.post(f"{STORES}/999/close").status_code == 404


def test_closing_a_store_stops_its_registers_and_the_last_open_store_stays(app, admin):
    response = admin.post(f"{STORES}/1/close", htmx=True)
    assert response.status_code == 422 and "only open store" in text_of(response)
    admin.post(STORES, data=store_form())
    with app.app_context():
        second = db.session.scalars(select(Store.id).where(Store.code == "S002")).one()
    assert admin.post(f"{STORES}/1/close").status_code == 303
    with app.app_context():
        assert db.session.get(Store, 1).active is False
    assert "Closed" in text_of(admin.get(STORES))
    assert admin.post(f"{STORES}/{second}/close").status_code == 422  # now S002 is the last open one
    assert admin.post(f"{STORES}/1/reopen").status_code == 303
    with app.app_context():
        assert db.session.get(Store, 1).active is True
    assert [r.action for r in audit_rows(app, "store.close") + audit_rows(app, "store.reopen")] == [
        "store.close", "store.reopen"]


# --- creating staff -------------------------------------------------------------------------------------

@pytest.mark.parametrize("htmx", [False, True])
def test_admin_creates_a_manager_who_can_sign_in(app, admin, htmx):
    response = admin.post(STAFF, data=staff_form(username="Li.Na", role="manager", phone="138 1234 5678"), htmx=htmx)
    if htmx:
        assert response.status_code == 200 and not is_full_page(response)
        assert "The account li.na is created." in text_of(response)
    else:
        assert response.status_code == 303
        assert "The account li.na is created." in text_of(admin.get(response.headers["Location"]))
    with app.app_context():
        person = db.session.scalars(select(Staff).where(Staff.username == "li.na")).one()
        assert (person.role, person.store_id, person.phone, person.active) == ("manager", 1, "+8613812345678", True)
        assert GOOD_PASSWORD not in person.password_hash
        person_id = person.id
    row = audit_rows(app, "staff.create")[0]
    assert row.target == f"staff:{person_id}"
    after = json.loads(row.after)
    assert (after["username"], after["role"], after["store_id"]) == ("li.na", "manager", 1)
    assert GOOD_PASSWORD not in row.after
    _client, login = sign_in(app, "li.na", GOOD_PASSWORD)
    assert login.status_code == 303


@pytest.mark.parametrize("field, value, message", [
    ("username", "x", "Use 2 to 64 letters"),
    ("username", "has space", "Use 2 to 64 letters"),
    ("username", "-dash", "Use 2 to 64 letters"),
    ("username", "a" * 65, "Use 2 to 64 letters"),
    ("password", "short", "Use at least 10 characters."),
    ("password", "123456789", "Use at least 10 characters."),
    ("password", "x" * 257, "Use at most 256 characters."),
    ("phone", "12345", "Enter a mobile number"),
    ("phone", "12812345678", "Enter a mobile number"),
    ("role", "owner", "Choose cashier, manager or administrator."),
    ("store_id", "", "Choose the store they work at."),
    ("name", "n" * 101, "Use at most 100 characters."),
])
@pytest.mark.parametrize("htmx", [False, True])
def test_staff_refusals_are_shown_beside_the_field(app, admin, field, value, message, htmx):
    before = totals(app)
    response = admin.post(STAFF, data=staff_form(**{field: value}), htmx=htmx)
    assert response.status_code == 422
    ids = {"store_id": "staff-store"}
    assert message in (field_error(response, ids.get(field, f"staff-{field}")) or "")
    assert is_full_page(response) is not htmx
    assert totals(app) == before


def test_a_taken_username_is_refused(app, admin):
    existing = make_staff(app)
    username = person_of(app, existing)["username"]
    before = totals(app)
    response = admin.post(STAFF, data=staff_form(username=username.upper()))
    assert response.status_code == 422
    assert field_error(response, "staff-username") == f"The username {username} is taken."
    assert totals(app) == before


def test_the_same_staff_form_sent_twice_creates_one_account(app, admin):
    data = staff_form()
    first = admin.post(STAFF, data=data)
    second = admin.post(STAFF, data=data)
    assert first.status_code == second.status_code == 303
    assert "already sent" in text_of(admin.get(second.headers["Location"]))
    with app.app_context():
        assert count(Staff, Staff.username == "newbie") == 1
    assert len(audit_rows(app, "staff.create")) == 2 - 1  # the admin came from the factory, not the service
    response = admin.post(STAFF, data=staff_form())  # a new form: a duplicate
    assert response.status_code == 422 and "is taken" in field_error(response, "staff-username")


def test_manager_creates_cashiers_of_their_own_store_only(app, manager):
    with app.app_context():
        other = factories.store("S002", "Other").id
        db.session.commit()
    before = totals(app)
    assert manager.post(STAFF, data=staff_form(role="manager")).status_code == 403
    assert manager.post(STAFF, data=staff_form(role="admin")).status_code == 403
    assert manager.post(STAFF, data=staff_form(store_id=str(other))).status_code == 403
    assert manager.post(STAFF, data=staff_form(store_id=str(other)), htmx=True).status_code == 403
    assert totals(app) == before
    page = text_of(manager.get(STAFF))
    new_account = re.search(r'<select[^>]*id="staff-role".*?</select>.*?<select[^>]*id="staff-store".*?</select>', page, re.S)
    assert new_account and "Manager" not in new_account.group(0) and "Other" not in new_account.group(0)
    assert '<option selected value="1">S001' in new_account.group(0)
    assert manager.post(STAFF, data=staff_form()).status_code == 303
    with app.app_context():
        person = db.session.scalars(select(Staff).where(Staff.username == "newbie")).one()
        assert (person.role, person.store_id) == ("cashier", 1)


# --- the list -------------------------------------------------------------------------------------------

def test_manager_sees_only_their_own_store(app, manager):
    ours = make_staff(app)
    theirs = make_staff(app, store_code="S002")
    response = manager.get(f"{STAFF}?status=all")
    assert response.status_code == 200 and is_full_page(response)
    shown = listed(response)
    assert ours in shown and theirs not in shown
    assert theirs not in listed(manager.get(f"{STAFF}?store=2&status=all"))  # the store filter is not theirs
    fragment = manager.get(f"{STAFF}?role=cashier", htmx=True)
    assert fragment.status_code == 200 and not is_full_page(fragment)
    assert listed(fragment) == [ours]
    assert "HX-Request" in fragment.headers["Vary"]


def test_admin_filters_by_store_role_and_status(app, admin):
    cashier = make_staff(app)
    elsewhere = make_staff(app, "manager", store_code="S002")
    gone = make_staff(app)
    with app.app_context():
        db.session.get(Staff, gone).active = False
        db.session.commit()
        second = db.session.scalars(select(Store.id).where(Store.code == "S002")).one()
    everyone = listed(admin.get(STAFF))
    assert cashier in everyone and elsewhere in everyone and gone not in everyone
    assert listed(admin.get(f"{STAFF}?store={second}")) == [elsewhere]
    assert listed(admin.get(f"{STAFF}?role=cashier")) == [cashier]
    assert listed(admin.get(f"{STAFF}?status=inactive", htmx=True)) == [gone]
    assert gone in listed(admin.get(f"{STAFF}?status=all&role=bogus&store=nonsense"))  # bad filters ignored
    text = row_text(admin.get(STAFF), elsewhere)
    assert "Manager" in text and "S002" in text and "Never" in text


def test_the_list_shows_the_last_sign_in(app, admin):
    person = make_staff(app)
    assert "Never" in row_text(admin.get(STAFF), person)
    sign_in(app, person_of(app, person)["username"], factories.PASSWORD)
    assert "Never" not in row_text(admin.get(STAFF), person)


# --- deactivating and reactivating ----------------------------------------------------------------------

@pytest.mark.parametrize("htmx", [False, True])
def test_deactivated_cashier_is_refused_on_their_very_next_request(app, manager, htmx):
    cashier_id = make_staff(app)
    cashier, login = sign_in(app, person_of(app, cashier_id)["username"], factories.PASSWORD)
    assert login.status_code == 303 and cashier.get("/till/").status_code == 200
    response = manager.post(f"{STAFF}/{cashier_id}/deactivate", htmx=htmx)
    if htmx:
        assert response.status_code == 200 and not is_full_page(response)
        assert listed(response) == [cashier_id]
        assert "Deactivated" in row_text(response, cashier_id) and "signed out everywhere" in text_of(response)
        assert "/reactivate" in response.get_data(as_text=True)
    else:
        assert response.status_code == 303
        assert "Deactivated" in row_text(manager.get(response.headers["Location"]), cashier_id)
    refused = cashier.get("/till/")
    assert refused.status_code == 302 and refused.headers["Location"].startswith("/login")
    refused = cashier.get("/till/", htmx=True)
    assert refused.status_code == 401 and refused.headers["HX-Redirect"].startswith("/login")
    assert sign_in(app, person_of(app, cashier_id)["username"], factories.PASSWORD)[1].status_code == 422
    row = audit_rows(app, "staff.deactivate")[0]
    assert row.target == f"staff:{cashier_id}"
    assert json.loads(row.before)["active"] is True and json.loads(row.after)["active"] is False
    with app.app_context():
        assert count(AuthSession, AuthSession.staff_id == cashier_id, AuthSession.revoked_at.is_(None)) == 0


@pytest.mark.parametrize("htmx", [False, True])
def test_reactivated_cashier_can_sign_in_again(app, manager, htmx):
    cashier_id = make_staff(app)
    manager.post(f"{STAFF}/{cashier_id}/deactivate")
    response = manager.post(f"{STAFF}/{cashier_id}/reactivate", htmx=htmx)
    assert response.status_code == (200 if htmx else 303)
    assert person_of(app, cashier_id)["active"] is True
    assert sign_in(app, person_of(app, cashier_id)["username"], factories.PASSWORD)[1].status_code == 303
    row = audit_rows(app, "staff.reactivate")[0]
    assert json.loads(row.before)["active"] is False and json.loads(row.after)["active"] is True
    again = manager.post(f"{STAFF}/{cashier_id}/reactivate", htmx=True)  # already active: nothing changes
    assert again.status_code == 200 and "Nothing changed" in text_of(again)
    assert len(audit_rows(app, "staff.reactivate")) == 1


@pytest.mark.parametrize("htmx", [False, True])
def test_nobody_deactivates_themself(app, client, login, htmx):
    username = login(client, "admin")
    own = me(app, username)
    before = totals(app)
    response = client.post(f"{STAFF}/{own}/deactivate", htmx=htmx)
    assert response.status_code == 422 and "your own account" in text_of(response)
    assert is_full_page(response) is not htmx
    assert totals(app) == before
    assert client.get(STAFF).status_code == 200
    assert f"/staff/{own}/deactivate" not in text_of(client.get(STAFF))


def test_the_last_active_admin_is_never_deactivated_or_demoted(app):
    with app.app_context():
        first, second = factories.staff("admin"), factories.staff("admin")
        staff_service.deactivate_staff(db.session, second, actor=first, now=factories._now())
        # The second admin, although deactivated, cannot take the first (now the last) with them.
        for attempt in (
            lambda: staff_service.deactivate_staff(db.session, first, actor=second, now=factories._now()),
            lambda: staff_service.change_role(db.session, first, role="manager", store=first.store, actor=second,
                                              now=factories._now()),
        ):
            with pytest.raises(staff_service.StaffError) as refused:
                attempt()
            assert refused.value.code == "last_admin"
        assert (first.active, first.role) == (True, "admin")


def test_an_admin_demotes_another_admin_but_not_themself(app, client, login):
    username = login(client, "admin")
    other = make_staff(app, "admin")
    response = client.post(f"{STAFF}/{other}/role", data={"role": "manager", "store_id": "1"})
    assert response.status_code == 303
    own = me(app, username)
    assert client.post(f"{STAFF}/{own}/role", data={"role": "manager", "store_id": "1"}).status_code == 422
    assert person_of(app, own)["role"] == "admin"


# --- new passwords --------------------------------------------------------------------------------------

@pytest.mark.parametrize("htmx", [False, True])
def test_reset_password_ends_logins_and_only_the_new_password_works(app, manager, htmx):
    cashier_id = make_staff(app)
    username = person_of(app, cashier_id)["username"]
    cashier, _login = sign_in(app, username, factories.PASSWORD)
    response = manager.post(f"{STAFF}/{cashier_id}/password", htmx=htmx)
    assert response.status_code == 200
    assert is_full_page(response) is not htmx
    if htmx:
        assert listed(response) == [cashier_id]
    password = new_password_of(response)
    assert len(password) == staff_service.TEMPORARY_LENGTH
    assert cashier.get("/till/").status_code == 302  # the old login has ended
    assert sign_in(app, username, factories.PASSWORD)[1].status_code == 422
    assert sign_in(app, username, password)[1].status_code == 303
    row = audit_rows(app, "staff.password_reset")[0]
    assert row.target == f"staff:{cashier_id}" and password not in (row.after or "")
    assert password not in text_of(manager.get(STAFF))  # shown once only
    second = new_password_of(manager.post(f"{STAFF}/{cashier_id}/password", htmx=True))
    assert second != password


def test_admin_resetting_their_own_password_stays_signed_in(app, client, login):
    own = me(app, login(client, "admin"))
    response = client.post(f"{STAFF}/{own}/password", htmx=True)
    assert response.status_code == 200
    assert client.get(STAFF).status_code == 200
    assert sign_in(app, person_of(app, own)["username"], new_password_of(response))[1].status_code == 303


# --- role changes ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("htmx", [False, True])
def test_admin_changes_a_role_and_it_is_audited(app, admin, htmx):
    cashier_id = make_staff(app)
    with app.app_context():
        second = factories.store("S002", "Second").id
        db.session.commit()
    response = admin.post(f"{STAFF}/{cashier_id}/role", data={"role": "manager", "store_id": str(second)}, htmx=htmx)
    if htmx:
        assert response.status_code == 200 and listed(response) == [cashier_id]
        assert "now works as Manager" in text_of(response)
        assert "S002" in row_text(response, cashier_id)
    else:
        assert response.status_code == 303
    assert (person_of(app, cashier_id)["role"], person_of(app, cashier_id)["store_id"]) == ("manager", second)
    row = audit_rows(app, "staff.role_change")[0]
    assert json.loads(row.before) == {"role": "cashier", "store_id": 1}
    assert json.loads(row.after) == {"role": "manager", "store_id": second}


@pytest.mark.parametrize("data, message", [
    ({"role": "owner", "store_id": "1"}, "Choose cashier, manager or administrator."),
    ({"role": "cashier", "store_id": ""}, "Choose the store they work at."),
    ({"role": "cashier", "store_id": "999"}, "Choose the store they work at."),
])
def test_role_change_refusals(app, admin, data, message):
    manager_id = make_staff(app, "manager")
    before = totals(app)
    response = admin.post(f"{STAFF}/{manager_id}/role", data=data, htmx=True)
    assert response.status_code == 422 and message in text_of(response)
    assert listed(response) == [manager_id]
    assert totals(app) == before


def test_an_admin_may_have_no_store(app, admin):
    manager_id = make_staff(app, "manager")
    assert admin.post(f"{STAFF}/{manager_id}/role", data={"role": "admin", "store_id": ""}).status_code == 303
    assert (person_of(app, manager_id)["role"], person_of(app, manager_id)["store_id"]) == ("admin", None)


# --- a manager's reach ----------------------------------------------------------------------------------

@pytest.mark.parametrize("htmx", [False, True])
def test_another_stores_person_is_404_for_a_manager(app, manager, htmx):
    theirs = make_staff(app, store_code="S002")
    before = totals(app)
    for action in ("deactivate", "reactivate", "password"):
        assert manager.post(f"{STAFF}/{theirs}/{action}", htmx=htmx).status_code == 404, action
    assert manager.post(f"{STAFF}/99999/deactivate").status_code == 404
    assert manager.post(f"{STAFF}/{2**31}/deactivate").status_code == 404
    assert totals(app) == before


@pytest.mark.parametrize("role", ["manager", "admin"])
def test_a_manager_may_not_touch_managers_or_admins_of_their_store(app, manager, role):
    target = make_staff(app, role)
    before = totals(app)
    for action in ("deactivate", "reactivate", "password"):
        assert manager.post(f"{STAFF}/{target}/{action}").status_code == 403, action
    assert totals(app) == before
    page = manager.get(STAFF)
    assert target in listed(page)  # seen, but with no buttons
    assert f"/staff/{target}/deactivate" not in page.get_data(as_text=True)


# --- the command line still works -------------------------------------------------------------------------

def test_staff_error_is_a_refusal_that_reads_in_english(app):
    with app.app_context():
        with pytest.raises(staff_service.StaffError) as refused:
            staff_service.create_staff(db.session, username="boss", name="", password="short", role="admin",
                                       store=None, now=factories._now())
    assert refused.value.field == "password" and refused.value.code == "password_too_short"
    assert "at least 10" in str(refused.value)
