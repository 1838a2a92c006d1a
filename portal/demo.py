"""Demo data: one store, staff of each role, a few hundred members across all tiers, a year of purchases."""
from __future__ import annotations

import random
import secrets
import uuid
from datetime import date, datetime, timedelta, timezone

from sqlalchemy.orm import Session

from . import checkout, members
from . import staff as staff_service
from .models import Member
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

    # Yearly spend bands so that every tier is well represented.
    bands = [(0.45, 10_000, 90_000), (0.27, 100_000, 450_000), (0.18, 500_000, 1_800_000), (0.10, 2_000_000, 4_000_000)]
    created: list[Member] = []
    for index in range(member_count):
        name = LATIN[index % len(LATIN)] if index % 10 == 0 else rng.choice(SURNAMES) + rng.choice(GIVEN)
        phone = f"+861{rng.choice('3456789')}{index:09d}"[:14]
        joined = now - timedelta(days=rng.randint(30, 400), minutes=rng.randint(0, 1440))
        birthday = date(rng.randint(1960, 2005), rng.randint(1, 12), rng.randint(1, 28)) if rng.random() < 0.7 else None
        referrer = rng.choice(created) if created and rng.random() < 0.1 else None
        registration = members.register_member(
            session, name=name, phone_e164=phone, birthday=birthday, email=None, guardian_consent=False,
            marketing_consent=rng.random() < 0.6, referrer=referrer, store=store, staff=cashier,
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
            result = checkout.record_purchase(
                session, member_id=member.id, store=store, staff=cashier, gross_fen=gross,
                points_to_redeem=redeem, idempotency_key=uuid.uuid4().hex,
                receipt_number=f"R{rng.randint(100000, 999999)}", rules=rules, now=moment,
            )
            spent += result.purchase.paid_fen
        if index % 50 == 49:
            session.commit()
    session.commit()
    return logins

