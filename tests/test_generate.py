"""The data generator (portal/generate.py): the chain it writes keeps the app's own invariants, the app works on it
afterwards, it refuses a database that holds data, and the same seed gives the same rows. Every test runs on SQLite
and on PostgreSQL."""
from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import date, datetime, timedelta, timezone
from types import SimpleNamespace

from zoneinfo import ZoneInfo

import phonenumbers
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import bindparam, func, select, text

from portal import checkout, members, returns, tiers
from portal.cards import is_valid_card_number
from portal.extensions import db
from portal.generate import (
    COLUMNS,
    TABLES,
    Generator,
    Ratios,
    generate_command,
    generate_into,
    read_context,
)
from portal.models import (
    Complaint,
    LedgerEntry,
    Member,
    PointLot,
    Purchase,
    Return,
    Staff,
    Store,
    StoreTakings,
    Tier,
    TierChange,
    UTCDateTime,
)
from portal.phones import normalise_phone
from portal.rules import load_rules, set_rule

from . import factories

UTC = timezone.utc
SHANGHAI = ZoneInfo("Asia/Shanghai")
# Just after the nightly jobs (00:05 expiry, 00:10 birthdays, 00:15 tier review) of 15 June 2026, Shanghai time.
NOW = datetime(2026, 6, 14, 16, 30, tzinfo=UTC)
SMALL = ["--members", "300", "--stores", "3", "--seed", "7", "--now", NOW.isoformat()]
# Rare things made common, over three years so that points also expire.
BUSY = Ratios(return_share=0.15, second_return_share=0.6, rating_share=0.2, complaint_share=0.3,
              anonymous_complaint_share=0.05, adjustment_share=0.3, referral_share=0.3, redeem_share=0.8)


def generate(runner, *extra):
    """The command, as `flask generate` runs it: 300 members, 3 stores (the fixture's and two new)."""
    result = runner.invoke(args=["generate", *SMALL, *extra])
    assert result.exit_code == 0, result.output
    return result.output


def generate_busy(app, seed=11):
    """BUSY over three years, with the shortfall policy that leaves negative balances (set as a manager would)."""
    with app.app_context():
        set_rule(db.session, "shortfall_policy", "negative", staff=None, now=NOW - timedelta(days=4 * 365))
        db.session.commit()
        rules = load_rules(db.session)
        db.session.remove()
        return generate_into(db.engine, members=200, stores=3, years=3, seed=seed, now=NOW, rules=rules,
                             password_hash="!", ratios=BUSY)


def rows(sql: str, **params) -> list:
    """Rows of a query; datetime parameters are bound as the models bind them (naive UTC text on SQLite)."""
    statement = text(sql).bindparams(*(bindparam(name, value, type_=UTCDateTime()) if isinstance(value, datetime)
                                       else bindparam(name, value) for name, value in params.items()))
    return db.session.execute(statement).all()


def none(sql: str, **params) -> None:
    found = rows(sql, **params)
    assert found == [], f"{sql}\n-> {found[:5]}"


def check_ledger_and_lots() -> None:
    """What portal/ledger.py keeps, in SQL over the whole ledger."""
    none("SELECT m.id FROM members m LEFT JOIN (SELECT member_id, SUM(points) AS total FROM ledger_entries "
         "GROUP BY member_id) l ON l.member_id = m.id WHERE m.points_balance <> COALESCE(l.total, 0)")
    none("SELECT m.id FROM members m JOIN ledger_entries e ON e.id = (SELECT MAX(id) FROM ledger_entries "
         "WHERE member_id = m.id) WHERE e.balance_after <> m.points_balance")
    none("SELECT id FROM (SELECT id, points, balance_after, created_at, "
         "LAG(balance_after, 1, 0) OVER (PARTITION BY member_id ORDER BY id) AS before, "
         "LAG(created_at) OVER (PARTITION BY member_id ORDER BY id) AS previous_at FROM ledger_entries) chain "
         "WHERE balance_after <> before + points OR created_at < previous_at")
    none("SELECT id FROM ledger_entries WHERE points = 0 OR (kind IN ('earn', 'restore', 'bonus') AND points < 0) "
         "OR (kind IN ('redeem', 'reverse', 'expire') AND points > 0)")
    # The lots: what is left of them is the balance when positive; each lot is what a credit left after debts.
    none("SELECT m.id FROM members m LEFT JOIN (SELECT member_id, SUM(remaining) AS total FROM point_lots "
         "GROUP BY member_id) l ON l.member_id = m.id "
         "WHERE COALESCE(l.total, 0) <> CASE WHEN m.points_balance > 0 THEN m.points_balance ELSE 0 END")
    none("SELECT l.id FROM point_lots l LEFT JOIN (SELECT lot_id, SUM(points) AS used FROM lot_uses GROUP BY lot_id) "
         "u ON u.lot_id = l.id WHERE l.remaining <> l.points - COALESCE(u.used, 0)")
    none("SELECT e.id FROM ledger_entries e JOIN point_lots l ON l.entry_id = e.id GROUP BY e.id, e.points, "
         "e.member_id HAVING SUM(l.points) > e.points OR MIN(l.member_id) <> e.member_id OR e.points <= 0")
    none("SELECT e.id FROM ledger_entries e JOIN lot_uses u ON u.entry_id = e.id JOIN point_lots l ON l.id = u.lot_id "
         "GROUP BY e.id, e.points, e.kind HAVING e.points >= 0 OR SUM(u.points) > -e.points "
         "OR (e.kind <> 'reverse' AND SUM(u.points) <> -e.points) OR MIN(l.member_id) <> MAX(l.member_id)")
    none("SELECT e.id FROM ledger_entries e WHERE e.kind IN ('redeem', 'expire') "
         "AND NOT EXISTS (SELECT 1 FROM lot_uses u WHERE u.entry_id = e.id)")
    none("SELECT u.id FROM lot_uses u JOIN ledger_entries e ON e.id = u.entry_id WHERE u.restored > 0 "
         "AND e.kind <> 'redeem'")
    # Expiry: no lot is past its expiry with points left, and each expiry takes one whole lot at or after it.
    none("SELECT id FROM point_lots WHERE remaining > 0 AND expires_at <= :now", now=NOW)
    none("SELECT e.id FROM ledger_entries e JOIN lot_uses u ON u.entry_id = e.id JOIN point_lots l ON l.id = u.lot_id "
         "WHERE e.kind = 'expire' AND (l.expires_at > e.created_at OR u.points <> -e.points)")
    # Purchases and their entries.
    none("SELECT p.id FROM purchases p LEFT JOIN ledger_entries e ON e.purchase_id = p.id AND e.kind = 'earn' "
         "WHERE COALESCE(e.points, 0) <> p.points_earned OR (e.id IS NOT NULL AND e.member_id <> p.member_id)")
    none("SELECT p.id FROM purchases p LEFT JOIN ledger_entries e ON e.purchase_id = p.id AND e.kind = 'redeem' "
         "WHERE COALESCE(-e.points, 0) <> p.points_redeemed")
    none("SELECT p.id FROM purchases p LEFT JOIN (SELECT purchase_id, SUM(returned_gross_fen) AS gross, "
         "SUM(refund_fen) AS refund, SUM(points_restored) AS restored, SUM(points_reversed) AS reversed, "
         "COUNT(*) AS n FROM returns GROUP BY purchase_id) r ON r.purchase_id = p.id "
         "WHERE COALESCE(r.gross, 0) <> p.returned_gross_fen OR COALESCE(r.refund, 0) <> p.refunded_fen "
         "OR COALESCE(r.restored, 0) <> p.points_restored OR COALESCE(r.reversed, 0) <> p.points_reversed "
         "OR p.returned_gross_fen > p.gross_fen")
    none("SELECT p.id FROM purchases p WHERE p.returned_gross_fen = p.gross_fen AND (p.refunded_fen <> p.paid_fen "
         "OR p.points_reversed <> p.points_earned OR p.points_restored <> p.points_redeemed)")
    none("SELECT r.id FROM returns r LEFT JOIN ledger_entries e ON e.return_id = r.id AND e.kind = 'restore' "
         "WHERE COALESCE(e.points, 0) <> r.points_restored OR r.cash_refund_fen <> r.refund_fen - "
         "r.shortfall_deducted_fen OR r.created_at <= (SELECT created_at FROM purchases WHERE id = r.purchase_id)")
    for table in ("purchases", "returns", "ledger_entries", "tier_changes", "complaints"):
        none(f"SELECT id FROM {table} WHERE created_at >= :now", now=NOW)


def check_purchases_returns_and_tiers(app) -> None:
    """Every figure again with the app's own rule functions, and the tier history member by member."""
    rules = load_rules(db.session)
    levels = tiers.all_tiers(db.session)
    by_id = {tier.id: tier for tier in levels}
    purchases = db.session.scalars(select(Purchase).order_by(Purchase.id)).all()
    for p in purchases:
        tier = by_id[p.tier_id]
        assert (p.discount_bp, p.multiplier_milli) == (tier.discount_bp, tier.multiplier_milli)
        quote = checkout.quote(p.gross_fen, discount_bp=tier.discount_bp, multiplier_milli=tier.multiplier_milli,
                               points_to_redeem=p.points_redeemed, balance=p.points_redeemed, rules=rules)
        assert (p.discount_fen, p.redeemed_value_fen, p.paid_fen, p.points_earned, p.earn_rate_milli) == (
            quote.discount_fen, quote.redeemed_value_fen, quote.paid_fen, quote.points_earned, quote.earn_rate_milli)
    # Returns, one after another, by the cumulative proportions.
    so_far = {p.id: SimpleNamespace(gross_fen=p.gross_fen, paid_fen=p.paid_fen, points_earned=p.points_earned,
                                    points_redeemed=p.points_redeemed, returned_gross_fen=0, refunded_fen=0,
                                    points_reversed=0, points_restored=0) for p in purchases}
    reversed_in_ledger = dict(rows("SELECT return_id, -SUM(points) FROM ledger_entries WHERE kind = 'reverse' "
                                   "GROUP BY return_id"))
    for r in db.session.scalars(select(Return).order_by(Return.id)):
        state = so_far[r.purchase_id]
        figures = returns.proportional(state, r.returned_gross_fen)
        assert (r.refund_fen, r.points_restored, r.points_reversed) == (
            figures.refund_fen, figures.points_restored, figures.points_reversed)
        covered = min(r.shortfall_points, rules.points_for_value(r.shortfall_deducted_fen))
        assert reversed_in_ledger.get(r.id, 0) == r.points_reversed - covered
        state.returned_gross_fen += r.returned_gross_fen
        state.refunded_fen += r.refund_fen
        state.points_reversed += r.points_reversed
        state.points_restored += r.points_restored
    # Tiers: each change follows the last, purchases carry the tier held when they started, and at `now` the
    # tier agrees with the trailing spend (the nightly review has run).
    changes = defaultdict(list)
    for change in db.session.scalars(select(TierChange).order_by(TierChange.id)):
        changes[change.member_id].append(change)
    bought = defaultdict(list)
    for p in purchases:
        bought[p.member_id].append(p)
    for member in db.session.scalars(select(Member)):
        held, since = levels[0].id, member.created_at
        history = changes[member.id]
        for change in history:
            assert change.from_tier_id == held and change.to_tier_id != held
            assert change.created_at >= since
            held, since = change.to_tier_id, change.created_at
        assert (member.tier_id, member.tier_since) == (held, since)
        for p in bought[member.id]:
            before = [c for c in history if c.created_at < p.created_at]
            assert p.tier_id == (before[-1].to_tier_id if before else levels[0].id)
        spend = tiers.qualifying_spend(db.session, member.id, NOW, rules.qualifying_days)
        earned = tiers.tier_for_spend(levels, spend)
        assert by_id[member.tier_id].threshold_fen >= earned.threshold_fen
        if member.tier_since <= NOW - timedelta(days=rules.tier_retention_days):
            assert member.tier_id == earned.id


def check_members_and_complaints() -> None:
    found = db.session.scalars(select(Member)).all()
    assert len({m.card_number for m in found}) == len({m.phone for m in found}) == len(found)
    for member in found:
        assert is_valid_card_number(member.card_number)
        assert normalise_phone(member.phone) == member.phone and member.phone.startswith("+861")
        assert phonenumbers.is_valid_number(phonenumbers.parse(member.phone))
        assert member.phone_last4 == member.phone[-4:]
        assert member.name and member.name_key == members.name_key(member.name)
        assert member.email is None or member.email.endswith("@example.com")
        if member.birthday:
            assert members.age_on(member.birthday, NOW.date()) >= 14
    # Referrals: the referrer's bonus at the first purchase of the member they brought.
    none("SELECT m.id FROM members m JOIN purchases p ON p.id = (SELECT MIN(id) FROM purchases "
         "WHERE member_id = m.id) LEFT JOIN ledger_entries e ON e.reason = 'referral' AND e.related_member_id = m.id "
         "WHERE m.referrer_id IS NOT NULL AND (e.member_id <> m.referrer_id OR e.purchase_id <> p.id "
         "OR e.id IS NULL OR m.referral_rewarded_at <> p.created_at OR m.referrer_id >= m.id)")
    # Birthday bonuses: once a year (store time), in the birthday month, the year marked on the member.
    years = defaultdict(list)
    for entry in db.session.scalars(select(LedgerEntry).where(LedgerEntry.reason == "birthday")):
        local = entry.created_at.astimezone(SHANGHAI)
        years[entry.member_id].append(local.year)
        assert local.month == db.session.get(Member, entry.member_id).birthday.month
    for member in found:
        assert len(set(years[member.id])) == len(years[member.id])
        assert member.last_birthday_bonus_year == max(years[member.id], default=None)
    # Complaints: each state with the times it implies, a timeline that starts with "opened".
    for complaint in db.session.scalars(select(Complaint)):
        assert (complaint.resolved_at is not None) == (complaint.status in ("resolved", "closed"))
        assert (complaint.closed_at is not None) == (complaint.status == "closed")
        assert complaint.status == "open" or complaint.first_response_at is not None
        assert complaint.first_response_at is None or complaint.first_response_at > complaint.created_at
    none("SELECT c.id FROM complaints c WHERE (SELECT kind FROM complaint_events WHERE complaint_id = c.id "
         "ORDER BY id LIMIT 1) <> 'opened'")
    none("SELECT v.id FROM visit_ratings v LEFT JOIN complaints c ON c.id = v.complaint_id "
         "WHERE (v.rating <= 2) <> (c.id IS NOT NULL) OR (c.id IS NOT NULL AND (c.channel <> 'survey' "
         "OR c.purchase_id <> v.purchase_id))")
    none("SELECT e.id FROM ledger_entries e LEFT JOIN complaints c ON c.id = e.complaint_id "
         "WHERE e.reason = 'goodwill' AND (c.id IS NULL OR c.member_id <> e.member_id)")
    none("SELECT p.id FROM purchases p JOIN members m ON m.id = p.member_id WHERE p.created_at <= m.created_at")
    # Each store's takings for a day: its member sales and more; one row a day from the first to yesterday.
    sales = defaultdict(int)
    for store_id, paid, created_at in db.session.execute(select(Purchase.store_id, Purchase.paid_fen,
                                                                Purchase.created_at)):
        sales[store_id, created_at.astimezone(SHANGHAI).date()] += paid
    takings = {(row.store_id, row.day): row.amount_fen for row in db.session.scalars(select(StoreTakings))}
    assert all(takings.get(key, -1) >= paid for key, paid in sales.items() if key[1] < NOW.astimezone(SHANGHAI).date())
    assert all(takings[key] > sales.get(key, 0) for key in takings)


def check_schema_and_references(app) -> None:
    """The indexes and keys dropped for the load are back as the migrations made them; every reference holds."""
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={
            "compare_type": True,
            "include_object": lambda obj, name, type_, *_: not (type_ == "index" and name == "ix_members_name_key_pattern"),
        })
        assert compare_metadata(context, db.metadata) == []
        if db.engine.dialect.name == "sqlite":
            assert conn.exec_driver_sql("PRAGMA foreign_key_check").all() == []
            assert conn.exec_driver_sql("PRAGMA quick_check").scalar() == "ok"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            triggers = conn.exec_driver_sql("SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' "
                                            "AND tbl_name = 'ledger_entries'").scalar()
        else:
            triggers = conn.exec_driver_sql("SELECT COUNT(*) FROM pg_trigger WHERE tgname = "
                                            "'ledger_entries_append_only'").scalar()
            assert conn.exec_driver_sql("SELECT COUNT(*) FROM pg_indexes WHERE indexname = "
                                        "'ix_members_name_key_pattern'").scalar() == 1
        assert triggers >= 1


def check_nightly_jobs_change_nothing(runner) -> None:
    """The data is as the nightly jobs left it at `now`: running them again at `now` finds nothing to do."""
    for command, expected in (("expire-points", "0 expiry entries posted."), ("review-tiers", "0 members moved down."),
                              ("birthday-bonus", "0 birthday bonuses posted")):
        result = runner.invoke(args=[command, "--now", NOW.isoformat()])
        assert result.exit_code == 0 and expected in result.output, (command, result.output)


def check_all(app, runner) -> None:
    with app.app_context():
        check_ledger_and_lots()
        check_purchases_returns_and_tiers(app)
        check_members_and_complaints()
        check_schema_and_references(app)
    check_nightly_jobs_change_nothing(runner)
    with app.app_context():  # and nothing was owed to those jobs
        check_ledger_and_lots()


def test_generated_chain_keeps_the_apps_invariants(app, runner):
    output = generate(runner)
    assert "Done in" in output and "purchases" in output
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Member)) == 300
        assert db.session.scalar(select(func.count()).select_from(Store)) == 3
        assert set(db.session.scalars(select(Staff.role))) == {"admin", "manager", "cashier"}
        purchases = db.session.scalar(select(func.count()).select_from(Purchase))
        assert 1000 < purchases < 2200  # five a member over two years, give or take
        kinds = dict(rows("SELECT kind, COUNT(*) FROM ledger_entries GROUP BY kind"))
        assert {"earn", "redeem", "reverse", "bonus"} <= set(kinds)
        assert sum(kinds.values()) > 1.3 * purchases
        assert rows("SELECT id FROM returns WHERE returned_gross_fen < (SELECT gross_fen FROM purchases "
                    "WHERE id = purchase_id)")  # some partial returns
        assert rows("SELECT id FROM purchases WHERE returned_gross_fen = gross_fen")  # and some whole ones
        assert db.session.scalar(select(func.count()).select_from(Tier)) == 4
        # the dashboard's running totals were counted from the loaded rows
        bucketed = rows("SELECT SUM(purchases), SUM(paid_fen), SUM(new_members) FROM activity_buckets")[0]
        assert tuple(bucketed) == tuple(rows("SELECT (SELECT COUNT(*) FROM purchases), (SELECT SUM(paid_fen) "
                                             "FROM purchases), (SELECT COUNT(*) FROM members)")[0])
    check_all(app, runner)


def test_busy_chain_over_three_years_expires_points_and_keeps_the_invariants(app, runner):
    summary = generate_busy(app)
    assert summary.ledger_kinds["expire"] > 0 and summary.ledger_kinds["adjust"] > 0
    assert summary.ledger_kinds["restore"] > 0
    with app.app_context():
        assert rows("SELECT id FROM returns WHERE shortfall_points > 0 AND shortfall_policy = 'negative'")
        # a negative balance, later paid off by a credit before any lot is made
        assert rows("SELECT e.id FROM ledger_entries e WHERE e.points > 0 AND e.balance_after - e.points < 0")
        assert rows("SELECT id FROM ledger_entries WHERE reason = 'goodwill'")
        assert {row[0] for row in rows("SELECT DISTINCT status FROM complaints")} >= {"resolved", "closed"}
        # Restored points expire with their lots, never sooner than 30 days after the return.
        restored = db.session.execute(
            select(PointLot.expires_at, Return.created_at).join(LedgerEntry, LedgerEntry.id == PointLot.entry_id)
            .join(Return, Return.id == LedgerEntry.return_id).where(LedgerEntry.kind == "restore")).all()
        assert restored and all(expires >= returned + timedelta(days=30) for expires, returned in restored)
        assert (dict(rows("SELECT action, COUNT(*) FROM audit_log GROUP BY action"))["points.adjust"]
                == summary.ledger_kinds["adjust"])
    check_all(app, runner)


def test_the_app_works_on_generated_data(app, runner):
    generate(runner)
    with app.app_context():
        rules = load_rules(db.session)
        last_purchase = db.session.scalar(select(func.max(Purchase.id)))
        last_entry = db.session.scalar(select(func.max(LedgerEntry.id)))
        member = db.session.scalars(select(Member).where(Member.points_balance >= 500).order_by(Member.id)).first()
        store = db.session.get(Store, member.store_id)
        store_code, member_id = store.code, member.id
        cashier = db.session.scalars(select(Staff).where(Staff.store_id == store.id, Staff.role == "cashier")).first()
        later = NOW + timedelta(hours=10)
        bought = checkout.record_purchase(
            db.session, member_id=member.id, store=store, staff=cashier, gross_fen=50_000, points_to_redeem=200,
            idempotency_key=uuid.uuid4().hex, receipt_number=None, rules=rules, now=later).purchase
        db.session.commit()
        assert bought.id == last_purchase + 1
        returned = returns.record_return(
            db.session, purchase_id=bought.id, store=store, staff=cashier, returned_gross_fen=10_000,
            idempotency_key=uuid.uuid4().hex, rules=rules, now=later + timedelta(hours=1)).ret
        db.session.commit()
        assert returned.id > 0 and returned.points_restored == 40
        entries = db.session.scalars(select(LedgerEntry).where(LedgerEntry.id > last_entry)
                                     .order_by(LedgerEntry.id)).all()
        assert [e.id for e in entries][:1] == [last_entry + 1]
        db.session.refresh(member)
        total = db.session.scalar(select(func.sum(LedgerEntry.points)).where(LedgerEntry.member_id == member.id))
        assert member.points_balance == total == entries[-1].balance_after
        # A new member gets the next id, a card and a lookup by name prefix finds generated members.
        newcomer = members.register_member(
            db.session, name="测试新会员", phone_e164="+8613000000000", birthday=None, email=None,
            guardian_consent=False, marketing_consent=False, referrer=None, store=store, staff=cashier, rules=rules,
            secret_key="k", now=later).member
        db.session.commit()
        assert newcomer.id == 301
        assert members.lookup(db.session, member.name[:1]).members
    client = app.test_client()
    with app.app_context():
        manager = factories.staff(role="admin", store_code=store_code)
        db.session.commit()
        username = manager.username
    assert client.post("/login", data={"username": username, "password": factories.PASSWORD}).status_code == 303
    for page in ("/manage/", "/manage/members", f"/manage/members/{member_id}"):
        assert client.get(page).status_code == 200, page


def test_a_database_with_data_is_refused(app, runner):
    generate(runner)
    with app.app_context():
        counts = {table: db.session.scalar(text(f"SELECT COUNT(*) FROM {table}")) for table in TABLES}
    result = runner.invoke(generate_command, SMALL)
    assert result.exit_code != 0
    assert "already holds data" in result.output and "members" in result.output
    with app.app_context():
        assert counts == {table: db.session.scalar(text(f"SELECT COUNT(*) FROM {table}")) for table in TABLES}


def _in_memory(app, seed: int) -> tuple[dict, Generator]:
    """The rows generate writes for SMALL with this seed, kept in memory, and the starting context."""
    with app.app_context():
        with db.engine.connect() as conn:
            context = read_context(lambda sql: conn.exec_driver_sql(sql).all())
        rules = load_rules(db.session)
    written = defaultdict(list)
    generator = Generator(context, members=300, stores=3, years=2, seed=seed, now=NOW, rules=rules,
                          write=lambda table, columns, batch: written[table].extend(batch))
    generator.run()
    return written, generator


def _comparable(table: str, row) -> tuple:
    if table == "staff":  # the password hash is random on purpose
        return tuple(row[:3]) + tuple(row[4:])
    return tuple(row)


def test_the_same_seed_gives_the_same_data(app, runner):
    first, generator = _in_memory(app, seed=7)
    again, _ = _in_memory(app, seed=7)
    other, _ = _in_memory(app, seed=8)
    assert first == again
    assert first["members"] != other["members"] and first["ledger_entries"] != other["ledger_entries"]
    generate(runner)
    fmt = generator.fmt

    def normal(value):
        if isinstance(value, datetime):
            return fmt(int(value.timestamp()))
        if isinstance(value, date):
            return value.isoformat()
        if isinstance(value, bool):
            return int(value)
        return value

    with app.app_context():
        with db.engine.connect() as conn:
            for table in TABLES:
                columns = ", ".join(f'"{column}"' for column in COLUMNS[table])
                stored = [tuple(normal(v) for v in row) for row in conn.exec_driver_sql(
                    f"SELECT {columns} FROM {table} WHERE id >= {generator.ctx.next_ids[table]} ORDER BY id")]
                expected = sorted(first[table])
                assert [_comparable(table, r) for r in stored] == [_comparable(table, r) for r in expected], table
