"""Demo data: two stores, staff of each role, a few hundred members across all tiers, a year of purchases with
some returns, a few complaints, and each store's daily takings (what member sales are a share of)."""
from __future__ import annotations

import random
import secrets
import uuid
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from . import checkout, complaints, members, returns
from . import staff as staff_service
from .models import Member, Purchase, StoreTakings
from .phones import display_phone
from .rules import load_rules

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = ["伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明", "超", "秀英", "华", "慧"]
LATIN = ["Alice Chen", "Bob Li", "Carol Wang", "David Zhang", "Emma Liu", "Frank Zhao", "Grace Wu", "Henry Xu"]


def _password() -> str:
    return secrets.token_urlsafe(9)


def load_demo(session: Session, *, member_count: int, seed: int) -> list[tuple[str, str, str]]:
    """Create the demo store and data; returns (username or phone, password, role) for each login."""
    rng = random.Random(seed)
    now = datetime.now(timezone.utc)
    rules = load_rules(session)
    store = staff_service.ensure_store(session, code="S001", name="演示门店 Demo Store", now=now)
    second = staff_service.ensure_store(session, code="S002", name="二店 Second Store", now=now)
    logins = []
    staff_by_role = {}
    for username, name, role in (("admin", "Admin", "admin"), ("manager", "经理 Manager", "manager"),
                                 ("cashier", "收银员 Cashier", "cashier")):
        password = _password()
        staff_by_role[role] = staff_service.create_staff(
            session, username=username, name=name, password=password, role=role, store=store, now=now
        )
        logins.append((username, password, role))
    cashier = staff_by_role["cashier"]
    password = _password()
    second_cashier = staff_service.create_staff(
        session, username="cashier2", name="收银员二 Cashier 2", password=password, role="cashier", store=second,
        now=now,
    )
    logins.append(("cashier2", password, "cashier"))

    # Yearly spend bands so that every tier is well represented.
    bands = [(0.45, 10_000, 90_000), (0.27, 100_000, 450_000), (0.18, 500_000, 1_800_000), (0.10, 2_000_000, 4_000_000)]
    created: list[Member] = []
    for index in range(member_count):
        name = LATIN[index % len(LATIN)] if index % 10 == 0 else rng.choice(SURNAMES) + rng.choice(GIVEN)
        phone = f"+861{rng.choice('3456789')}{index:09d}"[:14]
        joined = now - timedelta(days=rng.randint(30, 400), minutes=rng.randint(0, 1440))
        birthday = date(rng.randint(1960, 2005), rng.randint(1, 12), rng.randint(1, 28)) if rng.random() < 0.7 else None
        referrer = rng.choice(created) if created and rng.random() < 0.1 else None
        home, home_cashier = (second, second_cashier) if index % 3 == 2 else (store, cashier)
        registration = members.register_member(
            session, name=name, phone_e164=phone, birthday=birthday, email=None, guardian_consent=False,
            marketing_consent=rng.random() < 0.6, referrer=referrer, store=home, staff=home_cashier,
            rules=rules, secret_key=secrets.token_hex(16), now=joined,
        )
        member = registration.member
        created.append(member)
        if index == 0:  # one member who has already set a password, to try the members' pages
            password = _password()
            member.password_hash = staff_service.hash_password(password)
            member.activated_at = joined
            logins.append((display_phone(phone), password, "member"))
        roll, cumulative = rng.random(), 0.0
        for share, low, high in bands:
            cumulative += share
            if roll <= cumulative:
                break
        target = rng.randint(low, high)
        spent = 0
        moment = max(joined, now - timedelta(days=360))
        while spent < target:
            moment += timedelta(days=rng.uniform(3, 40), minutes=rng.randint(0, 600))
            if moment >= now:
                break
            gross = min(rng.randint(2_000, max(120_000, target // 8)), target - spent + 2_000)
            session.flush()
            redeem = 0
            if member.points_balance >= 500 and rng.random() < 0.25:
                due = gross - checkout.member_discount(gross, member.tier.discount_bp)
                redeem = min(checkout.max_redeemable(due, member.points_balance, rules), 100 * rng.randint(1, 20))
                if redeem < rules.redeem_minimum:
                    redeem = 0
            at, by = (home, home_cashier) if rng.random() < 0.8 else (store, cashier)
            result = checkout.record_purchase(
                session, member_id=member.id, store=at, staff=by, gross_fen=gross,
                points_to_redeem=redeem, idempotency_key=uuid.uuid4().hex,
                receipt_number=f"R{rng.randint(100000, 999999)}", rules=rules, now=moment,
            )
            spent += result.purchase.paid_fen
            if rng.random() < 0.03:  # now and then part of it comes back a few days later
                returns.record_return(
                    session, purchase_id=result.purchase.id, store=at, staff=by,
                    returned_gross_fen=max(100, gross // rng.choice((2, 3, 4))), idempotency_key=uuid.uuid4().hex,
                    rules=rules, now=min(now, moment + timedelta(days=rng.randint(1, 5))),
                )
        if index % 50 == 49:
            session.commit()
    _complaints(session, rng, created, staff_by_role["manager"], (store, second), now)
    _takings(session, rng, (store, second), staff_by_role["manager"], now)
    session.commit()
    return logins


def _complaints(session: Session, rng: random.Random, created: list[Member], manager, stores, now: datetime) -> None:
    """A handful of complaints of the last weeks: some answered and resolved, some still open or late."""
    texts = ["酸奶过期了 The yogurt was past its date", "收银台排队太久 A long queue at the till",
             "积分没有到账 Points missing after a purchase", "价签和结账价格不一致 Shelf and till prices differ"]
    categories = ["product_quality", "service_attitude", "points_membership", "price_billing"]
    for number in range(12):
        made = now - timedelta(hours=rng.randint(2, 24 * 40))
        kind = number % len(texts)
        complaint = complaints.file_complaint(
            session, store=stores[number % 2], category=categories[kind], severity=rng.choice(("low", "normal", "high")),
            description=texts[kind], channel=rng.choice(("counter", "phone", "member")),
            member=rng.choice(created), now=made,
        )
        if number % 3:
            complaints.acknowledge(session, complaint, staff=manager, now=made + timedelta(hours=rng.randint(1, 30)))
            if number % 3 == 2:
                complaints.resolve(session, complaint, staff=manager, body="已处理 Sorted out",
                                   now=made + timedelta(hours=rng.randint(31, 90)))


def _takings(session: Session, rng: random.Random, stores, manager, now: datetime) -> None:
    """Each store's end-of-day takings for the last 90 days: member sales and, on top, what non-members spent."""
    zone = ZoneInfo(stores[0].timezone)
    today = now.astimezone(zone).date()
    for store in stores:
        for back in range(1, 91):
            day = today - timedelta(days=back)
            start = datetime.combine(day, time.min, tzinfo=zone).astimezone(timezone.utc)
            member_sales = session.scalar(
                select(func.coalesce(func.sum(Purchase.paid_fen), 0))
                .where(Purchase.store_id == store.id, Purchase.created_at >= start,
                       Purchase.created_at < start + timedelta(days=1))
            )
            session.add(StoreTakings(store_id=store.id, day=day, entered_by_id=manager.id, updated_at=now,
                                     amount_fen=member_sales + rng.randint(150_000, 900_000)))

