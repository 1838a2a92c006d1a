"""A chain for real: gunicorn servers on one database, concurrent registers, failed logins, killed workers.

Every test starts real `gunicorn app:app` servers (tests/gunicorn_servers.py) in production mode on the
database the `app` fixture prepared, so each runs on SQLite (one file, several processes) and on PostgreSQL.
Load comes from threads sending plain HTTP (http.client) to the cash-register API, with register tokens made
in the database beforehand. Afterwards the books are read straight from the database:

- every member's cached balance equals the sum of their ledger entries, and each entry's balance_after is the
  running sum (nothing counted twice, nothing lost), and their lots hold max(balance, 0);
- every purchase has exactly its earn and redeem entries and every return its restore and reverse entries,
  and no purchase has more returned than it sold;
- every Idempotency-Key that was answered 201 made exactly one purchase or return, the others none.
"""
from __future__ import annotations

import http.client
import os
import random
import signal
import sqlite3
import string
import threading
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest
from sqlalchemy import create_engine, func, select, text

from portal import api_tokens
from portal.api.idempotency import service_key
from portal.extensions import db
from portal.ledger import ledger_sum
from portal.models import LedgerEntry, Member, PointLot, Purchase, Return
from portal.rules import load_rules

from . import factories
from .gunicorn_servers import Browser, Gunicorn

pytestmark = pytest.mark.slow

REFUSALS = {409, 422}  # the rules said no: fine, as long as nothing was written for it


# --- servers --------------------------------------------------------------------------------------------

@pytest.fixture
def servers(app, tmp_path):
    """servers(n, ...) starts n gunicorn servers on the test's database and waits until each answers; all
    are stopped after the test, and their logs printed (pytest shows them when the test failed)."""
    started: list[Gunicorn] = []
    names = iter(string.ascii_uppercase)

    def start(count: int = 2, *, rate_limits: bool = False, workers: int = 2, worker_class: str = "sync",
              threads: int = 1, env: dict[str, str] | None = None) -> list[Gunicorn]:
        env = {
            "DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
            "SECRET_KEY": app.config["SECRET_KEY"],  # one key for the whole chain
            "PORTAL_ENV": "production",
            "TRUSTED_HOSTS": "127.0.0.1,localhost",
            "SESSION_COOKIE_SECURE": "0",  # plain http on the loopback
            "RATELIMIT_ENABLED": "1" if rate_limits else "0",
            "PORTAL_INSTANCE_PATH": str(tmp_path / "server-instance"),
            **(env or {}),
        }
        group = [Gunicorn(next(names), env, tmp_path, workers=workers, worker_class=worker_class,
                          threads=threads) for _ in range(count)]
        started.extend(group)
        for server in group:
            server.start()
        for server in group:
            server.wait_ready()
        return group

    start.logs = lambda: "\n".join(server.log() for server in started)
    yield start
    for server in started:
        server.stop()
    for server in started:
        print(server.log(20000))


# --- registers ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Call:
    """One API request a register means to make once, with its Idempotency-Key (retries send it again)."""

    kind: str  # "purchase" or "return"
    token: str
    path: str
    body: dict
    key: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass
class Outcome:
    call: Call
    server: str
    status: int | None  # None: the connection broke (a worker killed under it)
    body: object = None
    replayed: bool = False
    error: str | None = None


def send(server: Gunicorn, call: Call) -> Outcome:
    headers = {"Authorization": f"Bearer {call.token}", "Idempotency-Key": call.key, "Accept-Language": "en"}
    try:
        answer = server.post_json(call.path, call.body, headers)
    except (OSError, http.client.HTTPException) as error:  # reset, cut short, timed out: its fate is unknown
        return Outcome(call, server.name, None, error=repr(error))
    try:
        body = answer.json()
    except ValueError:
        body = answer.text[:2000]
    return Outcome(call, server.name, answer.status, body, answer.headers.get("Idempotent-Replayed") == "true")


def send_at_once(pairs: list[tuple[Gunicorn, Call]]) -> list[Outcome]:
    """Send each (server, call) from its own thread, all released together."""
    barrier = threading.Barrier(len(pairs))
    outcomes: list[Outcome | None] = [None] * len(pairs)

    def run(i: int) -> None:
        barrier.wait(timeout=30)
        outcomes[i] = send(*pairs[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(pairs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert all(o is not None for o in outcomes), "a register hung"
    return outcomes


def purchase_call(token: str, card: str, gross: str, redeem: int = 0) -> Call:
    body = {"card_number": card, "gross_amount": gross}
    if redeem:
        body["redeem_points"] = redeem
    return Call("purchase", token, "/api/v1/purchases", body)


def return_call(token: str, purchase_id: int, gross: str) -> Call:
    return Call("return", token, f"/api/v1/purchases/{purchase_id}/returns", {"gross_amount": gross})


def yuan(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


def make_token(app, name: str, store_code: str) -> tuple[int, str]:
    with app.app_context():
        store = factories.store(store_code, f"Store {store_code}")
        row, token = api_tokens.create_token(db.session, name=name, store=store, staff=None, now=factories._now())
        db.session.commit()
        return row.id, token


def make_members(app, count: int, opening_fen: int, points_fen: int = 0) -> list[tuple[int, str, int]]:
    """Members with an opening purchase of `opening_fen` each (to return), after one of `points_fen` that
    earned the points they redeem: (member id, card number, opening purchase id)."""
    made = []
    with app.app_context():
        for _ in range(count):
            member = factories.member()
            if points_fen:
                factories.purchase(member, points_fen)
            opening = factories.purchase(member, opening_fen).purchase
            made.append((member.id, member.card_number, opening.id))
        db.session.commit()
    return made


# --- the books ------------------------------------------------------------------------------------------

def check_books(app) -> dict:
    """Read the whole database and assert the ledger invariants; returns a few totals for the caller."""
    with app.app_context():
        session = db.session
        rules = load_rules(session)
        problems: list[str] = []
        entries = defaultdict(list)
        for entry in session.scalars(select(LedgerEntry).order_by(LedgerEntry.id)):
            entries[entry.member_id].append(entry)
        for member in session.scalars(select(Member)):
            running = 0
            for entry in entries[member.id]:
                running += entry.points
                if entry.balance_after != running:
                    problems.append(f"member {member.id}: entry {entry.id} ({entry.kind} {entry.points:+}) says "
                                    f"balance {entry.balance_after}, the entries before it add up to {running}")
                    break
            if member.points_balance != ledger_sum(session, member.id):
                problems.append(f"member {member.id}: balance {member.points_balance} but ledger "
                                f"{ledger_sum(session, member.id)}")
            lots = session.scalar(select(func.coalesce(func.sum(PointLot.remaining), 0))
                                  .where(PointLot.member_id == member.id))
            if lots != max(member.points_balance, 0):
                problems.append(f"member {member.id}: lots hold {lots}, balance {member.points_balance}")

        by_purchase = defaultdict(lambda: defaultdict(int))
        by_return = defaultdict(lambda: defaultdict(int))
        for entry in (e for member_entries in entries.values() for e in member_entries):
            if entry.return_id is not None:
                by_return[entry.return_id][entry.kind] += entry.points
            elif entry.purchase_id is not None and entry.kind in ("earn", "redeem"):
                by_purchase[entry.purchase_id][entry.kind] += entry.points
        returns_of = defaultdict(list)
        for ret in session.scalars(select(Return)):
            returns_of[ret.purchase_id].append(ret)
            covered = min(ret.shortfall_points, rules.points_for_value(ret.shortfall_deducted_fen))
            want = {"restore": ret.points_restored, "reverse": -(ret.points_reversed - covered)}
            got = {kind: by_return[ret.id][kind] for kind in want}
            if got != want or set(by_return[ret.id]) - set(want):
                problems.append(f"return {ret.id}: entries {dict(by_return[ret.id])}, expected {want}")
        purchases = session.scalars(select(Purchase)).all()
        for purchase in purchases:
            want = {"earn": purchase.points_earned, "redeem": -purchase.points_redeemed}
            got = {kind: by_purchase[purchase.id][kind] for kind in want}
            if got != want:
                problems.append(f"purchase {purchase.id}: entries {dict(by_purchase[purchase.id])}, expected {want}")
            rets = returns_of[purchase.id]
            if purchase.returned_gross_fen > purchase.gross_fen:
                problems.append(f"purchase {purchase.id}: {purchase.returned_gross_fen} returned of "
                                f"{purchase.gross_fen}")
            sums = (sum(r.returned_gross_fen for r in rets), sum(r.refund_fen for r in rets),
                    sum(r.points_reversed for r in rets), sum(r.points_restored for r in rets))
            kept = (purchase.returned_gross_fen, purchase.refunded_fen, purchase.points_reversed,
                    purchase.points_restored)
            if sums != kept:
                problems.append(f"purchase {purchase.id}: its returns add up to {sums}, it keeps {kept}")
        orphans = session.scalar(select(func.count()).select_from(LedgerEntry).where(
            LedgerEntry.purchase_id.is_not(None), LedgerEntry.purchase_id.not_in(select(Purchase.id))))
        if orphans:
            problems.append(f"{orphans} ledger entries name a purchase that does not exist")
        assert not problems, "the books do not add up:\n" + "\n".join(problems)
        return {
            "purchases": len(purchases),
            "returns": sum(len(r) for r in returns_of.values()),
            "returned": {p.id: p.returned_gross_fen for p in purchases},
        }


def rows_for_key(app, token_ids: dict[str, int], call: Call) -> list:
    model = Purchase if call.kind == "purchase" else Return
    with app.app_context():
        return db.session.scalars(
            select(model.id).where(model.idempotency_key == service_key(token_ids[call.token], call.key))).all()


def check_keys(app, token_ids: dict[str, int], outcomes: list[Outcome], logs) -> dict[str, Call]:
    """Each key answered 201 made exactly one row, which every 201 for it names, and exactly one of its 201s
    did the work (the others replay it) unless an attempt whose connection broke did it; a key never answered
    201 made nothing, or at most one row if an attempt broke off (its fate unknown to the register).
    Returns the accepted calls by key."""
    by_key: dict[str, list[Outcome]] = defaultdict(list)
    for outcome in outcomes:
        by_key[outcome.call.key].append(outcome)
    accepted: dict[str, Call] = {}
    problems = []
    for key, answers in by_key.items():
        call = answers[0].call
        rows = rows_for_key(app, token_ids, call)
        created = [a for a in answers if a.status == 201]
        broke = any(a.status is None for a in answers)
        if not created:
            if len(rows) > (1 if broke else 0):
                problems.append(f"{call.kind} key {key}: never accepted, yet rows {rows}")
            continue
        accepted[key] = call
        id_field = "purchase_id" if call.kind == "purchase" else "return_id"
        named = {a.body[id_field] for a in created}
        if len(rows) != 1 or named != set(rows):
            problems.append(f"{call.kind} key {key}: rows {rows}, answers named {named}")
        workers = len([a for a in created if not a.replayed])
        if workers != 1 and not (broke and workers == 0):
            problems.append(f"{call.kind} key {key}: {len(created)} answers 201, of which {workers} did the work")
        if any(a.body != created[0].body for a in created):
            problems.append(f"{call.kind} key {key}: different bodies for one key: {[a.body for a in created]}")
    assert not problems, "\n".join(problems) + "\n" + logs()
    return accepted


def check_answers(outcomes: list[Outcome], logs, *, drops_allowed: bool = False) -> None:
    """No 5xx, nothing but 201 and a refusal by the rules; a broken connection only where workers are killed."""
    bad = [o for o in outcomes
           if (o.status is None and not drops_allowed) or (o.status is not None and o.status not in {201} | REFUSALS)]
    assert not bad, "unexpected answers:\n" + "\n".join(
        f"{o.server} {o.call.path} {o.call.body} -> {o.status} {o.error or o.body}" for o in bad[:20]) + "\n" + logs()
    conflicts = [o for o in outcomes if o.status == 409
                 and not (isinstance(o.body, dict) and o.body["error"]["code"] == "request_in_progress")]
    assert not conflicts, f"the same request under the same key refused as another one: {conflicts[:5]}"


# --- 1 + 2: two servers, one database, concurrent registers --------------------------------------------

def test_two_servers_take_concurrent_checkouts_returns_and_redemptions_for_the_same_members(app, servers):
    """Two registers (at two stores) on two servers, eight at a time: checkouts for four members, some paying
    with points; twelve ¥100 returns racing on each member's ¥800 purchase; a purchase and then two 60%
    returns of it at once; a quarter of all requests sent to both servers at the same moment with the same
    key, and every accepted key sent again at the end. Nothing answers 5xx, each key counts once, and the
    books add up."""
    rng = random.Random(11)
    a, b = servers(2)
    id_1, till_1 = make_token(app, "Till 1", "S001")
    id_9, till_9 = make_token(app, "Till 9", "S002")
    token_ids = {till_1: id_1, till_9: id_9}
    # ¥1,000.00 of points for each, and a purchase of ¥800.00 to return (silver by then: 960 more points).
    members = make_members(app, 4, opening_fen=80_000, points_fen=100_000)
    before = check_books(app)

    jobs = []  # each job returns the outcomes it saw
    # Checkouts for the same four members on both servers, a third of them paying with points; a quarter are
    # sent to both servers at the same moment with the same key (a register retrying on the other server).
    for _ in range(48):
        _id, card, _opening = rng.choice(members)
        call = purchase_call(rng.choice([till_1, till_9]) if rng.random() < 0.3 else till_1, card,
                             yuan(rng.randint(500, 12_000)), redeem=rng.choice([0, 0, 100, 200, 300]))
        if rng.random() < 0.25:
            jobs.append(lambda call=call: send_at_once([(a, call), (b, call)]))
        else:
            server = rng.choice([a, b])
            jobs.append(lambda call=call, server=server: [send(server, call)])
    # Twelve returns of ¥100.00 race on each ¥800.00 opening purchase, at both stores: exactly eight fit.
    for _id, _card, opening in members:
        for _ in range(12):
            call = return_call(rng.choice([till_1, till_9]), opening, "100.00")
            if rng.random() < 0.25:
                jobs.append(lambda call=call: send_at_once([(a, call), (b, call)]))
            else:
                server = rng.choice([a, b])
                jobs.append(lambda call=call, server=server: [send(server, call)])

    # A purchase on one server, then two returns of 60% of it at once on both: only one fits.
    def buy_then_race_two_returns(server: Gunicorn, card: str, gross_fen: int, redeem: int) -> list[Outcome]:
        bought = send(server, purchase_call(till_1, card, yuan(gross_fen), redeem))
        if bought.status != 201:
            return [bought]
        part = yuan(gross_fen * 6 // 10)
        pid = bought.body["purchase_id"]
        raced.append(pid)
        return [bought] + send_at_once([(a, return_call(till_1, pid, part)), (b, return_call(till_9, pid, part))])

    raced: list[int] = []
    for _ in range(8):
        _id, card, _opening = rng.choice(members)
        args = (rng.choice([a, b]), card, rng.randint(2_000, 20_000), rng.choice([0, 100]))
        jobs.append(lambda args=args: buy_then_race_two_returns(*args))
    rng.shuffle(jobs)

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = [o for result in pool.map(lambda job: job(), jobs) for o in result]
    check_answers(outcomes, servers.logs)
    assert {o.server for o in outcomes} == {a.name, b.name}
    assert any(o.status == 201 and o.call.kind == "return" for o in outcomes)
    assert any(o.status == 201 and o.call.body.get("redeem_points") for o in outcomes)

    # Every accepted key sent once more, to the server that did not answer it first: the same answer again.
    first = {}
    for outcome in outcomes:
        if outcome.status == 201:
            first.setdefault(outcome.call.key, outcome)
    with ThreadPoolExecutor(max_workers=8) as pool:
        retries = list(pool.map(lambda o: send(b if o.server == a.name else a, o.call), first.values()))
    for retry in retries:
        original = first[retry.call.key]
        assert (retry.status, retry.replayed, retry.body) == (201, True, original.body), (retry, original)
    outcomes += retries

    accepted = check_keys(app, token_ids, outcomes, servers.logs)
    after = check_books(app)
    bought = [c for c in accepted.values() if c.kind == "purchase"]
    returned = [c for c in accepted.values() if c.kind == "return"]
    assert after["purchases"] - before["purchases"] == len(bought)
    assert after["returns"] - before["returns"] == len(returned)
    for _id, _card, opening in members:  # twelve tries at ¥100 on ¥800: exactly eight, the whole purchase
        assert len([c for c in returned if c.path.endswith(f"/{opening}/returns")]) == 8
        assert after["returned"][opening] == 80_000
    assert raced
    for pid in raced:  # two returns of 60% at once: one of them, never both
        assert len([c for c in returned if c.path.endswith(f"/{pid}/returns")]) == 1, pid


# --- 3: failed logins are counted in the database, so every server sees them ---------------------------

def test_failed_logins_on_two_servers_add_up_and_lock_the_account_on_both(app, servers):
    """Five wrong passwords for one username, three on server A and two on B (each from a fresh browser), lock
    the account (LOGIN_FAILURES_PER_ACCOUNT, default 5, within LOGIN_LOCK_MINUTES): the right password is then
    refused with 429 on either server and signs nobody in. No server saw five failures, and Flask-Limiter's
    in-memory counts are each worker's own, so only a count the servers share can refuse it."""
    a, b = servers(2, rate_limits=True)
    with app.app_context():
        cashier, bystander = factories.staff("cashier"), factories.staff("cashier")
        db.session.commit()
        username, other = cashier.username, bystander.username
    for server in (a, a, b, a, b):
        answer = Browser().sign_in(server, username, "not the password")
        assert answer.status == 422, (server.name, answer.status, answer.text[:300])
        assert "Wrong username or password" in answer.text
    for server in (a, b):
        browser = Browser()
        answer = browser.sign_in(server, username, factories.PASSWORD)
        assert answer.status == 429, (server.name, answer.status, answer.headers, answer.text[:500])
        assert "Too many failed attempts" in answer.text  # the shared count, not a worker's own rate limit
        till = browser.get(server, "/till/")
        assert till.status in (302, 303) and "/login" in till.headers["Location"], (till.status, till.headers)
    # Another account from the same address still signs in: the lock is the account's, not the address's.
    browser = Browser()
    assert browser.sign_in(a, other, factories.PASSWORD).status == 303
    assert browser.get(a, "/till/").status == 200


# --- 4: faults -----------------------------------------------------------------------------------------

def wait_for_workers(server: Gunicorn, gone: set[int], timeout: float = 30, serving: bool = False) -> list[int]:
    """Until the master has its full number of workers again, none of them one of `gone` (and, with
    serving=True, each of them past its start-up and serving requests)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = server.serving_worker_pids() if serving else server.worker_pids()
        if len(pids) == server.workers and not gone & set(pids):
            return pids
        time.sleep(0.1)
    raise AssertionError(f"{server.name} has workers {server.worker_pids()} after killing {gone}\n{server.log()}")


def assert_serves(server: Gunicorn, token: str, card: str, gone: set[int]) -> None:
    """The server answers, and checkouts go through (as many at once as it has workers) until every worker, the
    replacements too once they have started, has served."""
    assert server.get("/api/v1/openapi.json").status == 200
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for outcome in send_at_once([(server, purchase_call(token, card, "12.00")) for _ in range(server.workers)]):
            assert outcome.status == 201, (outcome, server.log())
        serving = server.serving_worker_pids()
        if len(serving) == server.workers and not gone & set(serving):
            return
        time.sleep(0.1)
    raise AssertionError(f"{server.name}: only {server.serving_worker_pids()} of {server.worker_pids()} serve")


def test_a_worker_killed_under_load_is_replaced_and_the_books_still_add_up(app, servers):
    """Six registers keep one server's two workers busy with checkouts; one worker is killed (SIGKILL) in the
    middle of it. The master starts a new one, which serves; no answer was a 5xx; every purchase has its
    ledger entries and no entry lacks its purchase; every balance equals its ledger."""
    (server,) = servers(1, workers=2)
    token_id, token = make_token(app, "Till 1", "S001")
    members = make_members(app, 3, opening_fen=5_000, points_fen=1_000_000)  # some 10,000 points each
    stop, outcomes = threading.Event(), []

    def till(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            _id, card, _opening = rng.choice(members)
            outcomes.append(send(server, purchase_call(token, card, yuan(rng.randint(1_000, 50_000)),
                                                       redeem=rng.choice([0, 100, 500]))))

    tills = [threading.Thread(target=till, args=(i,)) for i in range(6)]
    for thread in tills:
        thread.start()
    time.sleep(0.5)
    victim = random.Random(4).choice(wait_for_workers(server, set(), serving=True))
    os.kill(victim, signal.SIGKILL)
    time.sleep(1.5)
    stop.set()
    for thread in tills:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in tills)

    wait_for_workers(server, {victim})
    assert_serves(server, token, members[0][1], {victim})
    check_answers(outcomes, servers.logs, drops_allowed=True)
    assert len([o for o in outcomes if o.status == 201]) >= 10, "there was no load to speak of"
    check_keys(app, {token: token_id}, outcomes, servers.logs)
    check_books(app)


def test_workers_killed_at_random_during_a_burst_leave_each_checkout_whole_or_absent(app, servers):
    """Eight registers send checkouts with known keys to both servers while a worker of one or the other is
    killed at a random moment, four times; then every key is sent once more: each ends with exactly one
    purchase, and the books add up before and after the retries."""
    a, b = servers(2, workers=2)
    token_id, token = make_token(app, "Till 1", "S001")
    tokens = {token: token_id}
    members = make_members(app, 4, opening_fen=5_000, points_fen=1_000_000)
    kills_wanted, killed, burst, failures = 4, [], [], []
    done = threading.Event()

    def killer() -> None:
        chance = random.Random(8)
        try:
            while len(killed) < kills_wanted:
                server = (a, b)[len(killed) % 2]  # one server's replacement starts while the other is hit
                # One at a time: the last one's replacement serving first, then a random moment.
                wait_for_workers(server, {pid for s, pid in killed if s is server}, serving=True)
                time.sleep(chance.uniform(0.05, 0.5))
                victim = chance.choice(server.worker_pids())
                os.kill(victim, signal.SIGKILL)
                killed.append((server, victim))
        except BaseException as error:  # re-raised in the test's thread
            failures.append(error)
        finally:
            done.set()

    def till(seed: int) -> None:
        rng = random.Random(seed)
        while not done.is_set():
            call = purchase_call(token, rng.choice(members)[1], yuan(rng.randint(1_000, 30_000)),
                                 redeem=rng.choice([0, 100, 300]))
            burst.append(send(rng.choice([a, b]), call))

    reaper = threading.Thread(target=killer)
    tills = [threading.Thread(target=till, args=(i,)) for i in range(8)]
    for thread in [reaper, *tills]:
        thread.start()
    for thread in [reaper, *tills]:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in [reaper, *tills])
    if failures:
        raise failures[0]
    for server in (a, b):
        wait_for_workers(server, {pid for s, pid in killed if s is server})
    dropped = [o for o in burst if o.status is None]
    assert len(killed) == kills_wanted and dropped, f"{len(killed)} kills broke {len(dropped)} requests"
    check_answers(burst, servers.logs, drops_allowed=True)
    assert {o.status for o in burst} <= {201, None}  # points are plenty: only a fault stops a checkout
    check_keys(app, tokens, burst, servers.logs)
    check_books(app)  # whatever a killed worker was doing, it left a whole purchase or nothing

    calls = [o.call for o in burst]
    rng = random.Random(9)
    with ThreadPoolExecutor(max_workers=8) as pool:
        retries = list(pool.map(lambda call: send(rng.choice([a, b]), call), calls))
    assert all(o.status == 201 for o in retries), [o for o in retries if o.status != 201][:5]
    accepted = check_keys(app, tokens, burst + retries, servers.logs)
    assert set(accepted) == {call.key for call in calls}
    assert check_books(app)["purchases"] == len(members) * 2 + len(calls)
    for outcome in dropped:  # a checkout that broke off: done by it or by its retry, never by both
        assert len(rows_for_key(app, tokens, outcome.call)) == 1, outcome


def _sqlite_write_lock_held(path: str) -> bool:
    probe = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError as error:
        if "locked" not in str(error):
            raise
        return True
    finally:
        probe.close()


def test_a_worker_killed_inside_its_checkout_transaction_leaves_nothing_and_the_retry_records_it_whole(
        app, servers, db_backend):
    """The worker is caught inside the checkout's transaction, then killed:

    - PostgreSQL: the member was referred, so their first checkout, after writing the purchase, its earn entry
      and lot, locks the referrer's row to credit the referral bonus; the test holds that row, so the worker
      waits there, its writes not yet committed (pg_locks shows its transaction holding write locks on
      ledger_entries and point_lots), and is killed while it waits;
    - SQLite: the worker is stopped (SIGSTOP) at a random moment of a checkout until it is caught holding the
      database's write lock, which a request holds from its first query to its commit, and is killed stopped.

    Either way nothing of that checkout is in the database, and sending it again records it once and whole."""
    (server,) = servers(1, workers=1)
    token_id, token = make_token(app, "Till 1", "S001")
    tokens = {token: token_id}
    with app.app_context():
        referrer = factories.member(name="Referrer")
        member = factories.member(name="Referred", referrer=referrer)
        db.session.commit()
        referrer_id, member_id, card = referrer.id, member.id, member.card_number
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    earlier: list[Outcome] = []  # SQLite: checkouts that finished before the worker could be caught

    if db_backend == "postgresql":
        engine = create_engine(url)
        try:
            with engine.connect() as holder, engine.connect() as watcher:
                held = holder.begin()
                holder.execute(select(Member.id).where(Member.id == referrer_id).with_for_update())
                caught = purchase_call(token, card, "88.00")
                result: list[Outcome] = []
                sender = threading.Thread(target=lambda: result.append(send(server, caught)))
                sender.start()
                deadline, backend = time.monotonic() + 30, None
                while backend is None and time.monotonic() < deadline:
                    backend = watcher.execute(text(
                        "SELECT a.pid FROM pg_stat_activity a WHERE a.wait_event_type = 'Lock' "
                        "AND a.pid <> pg_backend_pid() AND a.datname = current_database()")).scalar()
                    watcher.rollback()
                    if backend is None:
                        time.sleep(0.05)
                assert backend, "the checkout never reached the referrer's row\n" + server.log()
                written = set(watcher.execute(text(
                    "SELECT relation::regclass::text FROM pg_locks WHERE pid = :pid AND mode = 'RowExclusiveLock'"),
                    {"pid": backend}).scalars())
                watcher.rollback()
                assert {"ledger_entries", "point_lots"} <= written, written  # its earn entry and lot, unseen
                victim = server.worker_pids()[0]
                os.kill(victim, signal.SIGKILL)
                sender.join(timeout=30)
                held.rollback()
                deadline = time.monotonic() + 30
                while watcher.execute(text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"),
                                      {"pid": backend}).scalar() and time.monotonic() < deadline:
                    watcher.rollback()
                    time.sleep(0.05)
                watcher.rollback()
        finally:
            engine.dispose()
    else:
        path = url.removeprefix("sqlite:///")
        chance = random.Random(5)
        victim = None
        for _attempt in range(200):
            call = purchase_call(token, card, yuan(chance.randint(1_000, 20_000)))
            result = []
            sender = threading.Thread(target=lambda call=call: result.append(send(server, call)))
            pid = server.worker_pids()[0]
            sender.start()
            time.sleep(chance.uniform(0, 0.03))
            os.kill(pid, signal.SIGSTOP)
            if _sqlite_write_lock_held(path):
                os.kill(pid, signal.SIGKILL)  # stopped inside its transaction: it never runs another instruction
                victim, caught = pid, call
                sender.join(timeout=30)
                break
            os.kill(pid, signal.SIGCONT)
            sender.join(timeout=30)
            earlier.extend(result)
        assert victim, "the worker was never caught inside a transaction"
        assert all(o.status == 201 for o in earlier), earlier

    assert not sender.is_alive()
    (broken,) = result
    assert broken.status is None, f"the killed worker answered: {broken}"
    left = rows_for_key(app, tokens, caught)
    if db_backend == "postgresql":  # killed while it waited for the referrer: it never committed
        assert left == [], "the killed checkout left its purchase behind"
    else:  # nothing, unless it was stopped in the instant between writing its commit and letting go of the lock
        assert len(left) <= 1
    check_books(app)  # and no part of a purchase: the whole of it or nothing
    wait_for_workers(server, {victim})

    retry = send(server, caught)
    assert (retry.status, retry.replayed) == (201, bool(left)), retry
    check_keys(app, tokens, earlier + [broken, retry], servers.logs)
    check_books(app)
    with app.app_context():
        (purchase_id,) = rows_for_key(app, tokens, caught)
        purchase = db.session.get(Purchase, purchase_id)
        kinds = db.session.scalars(select(LedgerEntry.kind).where(LedgerEntry.purchase_id == purchase_id)
                                   .order_by(LedgerEntry.id)).all()
        assert kinds == ["earn"] + (["bonus"] if not earlier else [])
        assert purchase.points_earned == retry.body["points_earned"] > 0
        # The referral bonus went to the referrer exactly once, whichever checkout came first.
        assert ledger_sum(db.session, referrer_id) == db.session.get(Member, referrer_id).points_balance == 200
        assert db.session.get(Member, member_id).points_balance == sum(
            o.body["points_earned"] for o in earlier + [retry])

