"""Benchmark fixtures, made inside the portal through its own services, after the data set is loaded.

Run by bench/run.py as `python -m bench.prepare OUT.json` with the scratch database's environment. It creates
the benchmark's cashiers (staff.create_staff), activates a few members with a known password the way a member
does (members.issue_activation_code, then accounts.activate), records the purchases the return scenario takes
small amounts back from (checkout.record_purchase), and picks the members every scenario rotates over: phones,
last-4s and cards to look up, cards to check out, cards for the write ceiling. Everything it chose is written
to OUT.json for the load generator. Nothing here is used by the portal itself.
"""
from __future__ import annotations

import json
import random
import sys
import uuid
from datetime import datetime, timezone

from sqlalchemy import func, select

from portal import accounts, checkout, members
from portal import staff as staff_service
from portal.database import write_intent
from portal.extensions import db
from portal.models import LedgerEntry, Member, Purchase, Staff, Store
from portal.phones import national_digits
from portal.rules import load_rules

CASHIERS = 4          # tills: each its own account and login, the load rotates over them
MEMBER_LOGINS = 8     # members signed in on their phones, the member scenarios rotate over them
LOOKUPS = 3000        # members whose phone, last 4 digits and card the lookups rotate over
CHECKOUT_CARDS = 2000
WRITE_CARDS = 2000
RETURN_PURCHASES = 200
RETURN_GROSS_FEN = 50_000  # ¥500.00 each; the scenario returns ¥1.00 at a time, round robin


def _sample_ids(session, count: int, rng: random.Random) -> list[int]:
    """Ids of up to `count` live members with a phone, drawn at random (by id, not ORDER BY random())."""
    low, high = session.execute(select(func.min(Member.id), func.max(Member.id))).one()
    if low is None:
        raise SystemExit("The database has no members: the data loader did not run.")
    chosen: list[int] = []
    seen: set[int] = set()
    for _attempt in range(20):
        wanted = [rng.randint(low, high) for _ in range(count * 2)]
        wanted = [i for i in wanted if i not in seen]
        seen.update(wanted)
        for start in range(0, len(wanted), 900):
            chosen += session.scalars(
                select(Member.id).where(Member.id.in_(wanted[start:start + 900]), Member.deleted_at.is_(None),
                                        Member.phone.is_not(None))
            ).all()
        if len(chosen) >= count or len(seen) >= high - low + 1:
            break
    rng.shuffle(chosen)
    return chosen[:count]


def _rows(session, ids: list[int]) -> list[Member]:
    found: dict[int, Member] = {}
    for start in range(0, len(ids), 900):
        for member in session.scalars(select(Member).where(Member.id.in_(ids[start:start + 900]))):
            found[member.id] = member
    return [found[i] for i in ids if i in found]


def prepare(out_path: str, password: str, seed: int) -> None:
    from flask import current_app

    rng = random.Random(seed)
    session = db.session
    now = datetime.now(timezone.utc)
    rules = load_rules(session)
    secret_key = current_app.config["SECRET_KEY"]
    with write_intent():
        store = session.scalars(select(Store).where(Store.active.is_(True)).order_by(Store.id).limit(1)).one()
        cashiers = []
        for number in range(1, CASHIERS + 1):
            username = f"bench-till-{number}"
            existing = session.scalars(select(Staff).where(Staff.username == username)).one_or_none()
            if existing is None:
                existing = staff_service.create_staff(session, username=username, name=f"Bench till {number}",
                                                      password=password, role="cashier", store=store, now=now)
            cashiers.append(existing)
        session.commit()

        total = session.scalar(select(func.count()).select_from(Member).where(Member.deleted_at.is_(None)))
        needed = LOOKUPS + CHECKOUT_CARDS + WRITE_CARDS + 400
        pool = _rows(session, _sample_ids(session, min(needed, total), rng))
        if len(pool) < 50:
            raise SystemExit(f"Only {len(pool)} members with a phone: load more data (--members).")
        # Split the pool: the write ceiling, the checkouts and the members who sign in never share a member, so
        # that the ceiling's bare ledger rows (no lots) never meet the portal's rules.
        quarter = max(1, len(pool) // 4)
        candidates, pool = pool[:min(400, quarter)], pool[min(400, quarter):]
        write_members = pool[:min(WRITE_CARDS, len(pool) // 3)]
        checkout_members = pool[len(write_members):len(write_members) + min(CHECKOUT_CARDS, len(pool) // 3)]
        lookup_members = pool[len(write_members) + len(checkout_members):][:LOOKUPS] or checkout_members

        # Members who sign in: from a random sample, the busier ones (at or above the 75th percentile of
        # ledger entries), so the history page is a full page as often as the data allows.
        counts = dict(session.execute(
            select(LedgerEntry.member_id, func.count()).where(LedgerEntry.member_id.in_([m.id for m in candidates]))
            .group_by(LedgerEntry.member_id)
        ).all())
        ranked = sorted(candidates, key=lambda m: counts.get(m.id, 0))
        busy = ranked[int(len(ranked) * 0.75):] or ranked
        logins = rng.sample(busy, min(MEMBER_LOGINS, len(busy)))
        member_logins = []
        for member in logins:
            code = members.issue_activation_code(session, member, staff=cashiers[0], rules=rules,
                                                 secret_key=secret_key, now=now)
            accounts.activate(session, phone_e164=member.phone, code=code, password=password,
                              secret_key=secret_key, now=now)
            member_logins.append({"phone": national_digits(member.phone), "entries": counts.get(member.id, 0)})
        session.commit()

        # Purchases made for the return scenario: big enough that ¥1.00 returns never run out.
        return_purchases = []
        for index in range(RETURN_PURCHASES):
            buyer = checkout_members[index % len(checkout_members)]
            result = checkout.record_purchase(
                session, member_id=buyer.id, store=store, staff=cashiers[index % len(cashiers)],
                gross_fen=RETURN_GROSS_FEN, points_to_redeem=0, idempotency_key="bench-" + uuid.uuid4().hex,
                receipt_number=f"BENCH-R{index:05d}", rules=rules, now=now,
            )
            return_purchases.append(result.purchase.id)
            if index % 100 == 99:
                session.commit()
        session.commit()

        figures = {
            "members": total,
            "purchases": session.scalar(select(func.count()).select_from(Purchase)),
            "ledger_entries": session.scalar(select(func.count()).select_from(LedgerEntry)),
            "stores": session.scalar(select(func.count()).select_from(Store)),
        }
    rng.shuffle(lookup_members)
    result = {
        "cashiers": [c.username for c in cashiers],
        "member_logins": member_logins,
        "lookup_phones": [national_digits(m.phone) for m in lookup_members],
        "lookup_last4": [m.phone_last4 for m in lookup_members if m.phone_last4],
        "lookup_cards": [m.card_number for m in lookup_members],
        "checkout_cards": [m.card_number for m in checkout_members],
        "write_cards": [m.card_number for m in write_members],
        "return_purchases": return_purchases,
        "return_capacity_fen": RETURN_GROSS_FEN,
        "figures": figures,
    }
    with open(out_path, "w") as handle:
        json.dump(result, handle)


def main() -> None:
    out_path, seed = sys.argv[1], int(sys.argv[2])
    password = sys.stdin.readline().strip()  # never on the command line, where `ps` would show it
    from portal import create_app

    app = create_app()
    with app.app_context():
        prepare(out_path, password, seed)


if __name__ == "__main__":
    main()
