"""flask commands: create-admin and demo."""
from __future__ import annotations

from sqlalchemy import func, select

from portal.extensions import db
from portal.models import AuditLog, Member, Purchase, Staff, Store, Tier


def test_create_admin_asks_for_a_password_and_hashes_it(app, runner):
    result = runner.invoke(args=["create-admin", "--username", "Boss"], input="a long secret 1\na long secret 1\n")
    assert result.exit_code == 0, result.output
    assert "Administrator 'boss' created" in result.output
    with app.app_context():
        admin = db.session.scalars(select(Staff).where(Staff.username == "boss")).one()
        assert admin.role == "admin" and admin.password_hash.startswith("scrypt:")
        assert "a long secret" not in admin.password_hash
        assert db.session.scalar(select(func.count()).select_from(AuditLog).where(AuditLog.action == "staff.create")) == 1
    client = app.test_client()
    response = client.post("/login", data={"username": "boss", "password": "a long secret 1"},
                           headers={"X-CSRFToken": client.csrf_token()})
    assert response.status_code == 303


def test_create_admin_refuses_a_short_password(app, runner):
    result = runner.invoke(args=["create-admin", "--username", "boss", "--password", "short"])
    assert result.exit_code != 0 and "at least 10" in result.output
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Staff)) == 0


def test_create_admin_refuses_a_taken_username(runner):
    args = ["create-admin", "--username", "boss", "--password", "a long secret 1"]
    assert runner.invoke(args=args).exit_code == 0
    result = runner.invoke(args=args)
    assert result.exit_code != 0 and "taken" in result.output


def test_create_admin_on_an_empty_database_creates_the_first_store(app, runner):
    with app.app_context():
        db.session.execute(Store.__table__.delete())
        db.session.commit()
    assert runner.invoke(args=["create-admin", "--username", "boss", "--password", "a long secret 1"]).exit_code == 0
    with app.app_context():
        assert db.session.scalars(select(Store.code)).all() == ["S001"]


def test_demo_fills_every_tier_and_prints_logins_once(app, runner):
    result = runner.invoke(args=["demo", "--members", "60", "--seed", "7"])
    assert result.exit_code == 0, result.output
    for role in ("admin", "manager", "cashier"):
        assert role in result.output
    with app.app_context():
        tiers = db.session.execute(
            select(Tier.code, func.count(Member.id)).join(Member, Member.tier_id == Tier.id).group_by(Tier.code)
        ).all()
        assert {code for code, n in tiers if n} == {"member", "silver", "gold", "diamond"}
        assert db.session.scalar(select(func.count()).select_from(Purchase)) > 100
    again = runner.invoke(args=["demo", "--if-empty"])
    assert again.exit_code == 0 and "already" in again.output
    password = result.output.split("cashier")[-1].split()[-1]
    assert password in again.output  # make run shows the demo logins again


def test_the_demo_member_can_sign_in_on_the_phone_with_the_printed_login(app, runner, client):
    result = runner.invoke(args=["demo", "--members", "12", "--seed", "3"])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.strip().startswith("member "))
    _role, phone, password = line.split()
    response = client.post("/member/login", data={"phone": phone, "password": password})
    assert response.status_code == 303 and response.headers["Location"] == "/me/"
    assert "Alice Chen" in client.get("/me/").get_data(as_text=True)
