"""A data generator for performance work: a whole chain's history, built quickly and kept consistent.

`flask --app app generate --members N [--stores 20] [--years 2] [--seed S] [--now ISO-8601]` fills an empty,
migrated database with stores, their staff, N members and `years` of their activity up to `now`: purchases (some
paid partly with points), returns (partial and whole, at any store of the chain), every points movement in the
ledger with its lots and lot uses, birthday and referral bonuses, expiries, a few manual adjustments, tier changes,
visit ratings, complaints in every state with their timelines (some with goodwill points), each store's daily
takings and the audit entries of the adjustments and complaint steps. For N = 1,000,000 the default ratios give
about 5,000,000 purchases and 8,000,000 ledger entries. Points expire 730 days after they are earned, so expiries
appear only with more than two years of history (--years 3).

How it is fast: nothing goes through the ORM. A first pass draws every member's registration and purchase
schedule into compact arrays (so that a referrer knows when the member they brought first bought); a second pass
plays each member's history in time order through a small in-memory model of the ledger (balance, lots soonest
to expire first, lot uses), computing every figure with the app's own rule functions (checkout.member_discount,
max_redeemable and points_earned, Rules.points_value_fen, returns.proportional and shortfall,
tiers.tier_for_spend, ledger.lot_expiry), and streams rows out in batches from a writer thread: on SQLite through
the raw sqlite3 connection (executemany; synchronous, foreign-key and CHECK enforcement off during the load,
secondary indexes built after it, every CHECK verified by quick_check before the commit), on PostgreSQL through
COPY (foreign keys and secondary indexes dropped for the load and put back from their own definitions before the
commit, which checks every reference). Everything is one transaction: a failed run leaves the database as it was.
The tables are locked for the whole load, so run it while nothing else uses the database.

What it keeps, member by member, as the services do:
- points_balance = the sum of the member's ledger = the balance_after of their last entry (ids in time order);
- the remaining points of their lots = max(balance, 0); each lot's remaining = its points - what lot uses took;
  a redemption's lot uses record what returns restored, and restored points expire with their lots, never
  sooner than 30 days after the return;
- purchase figures as checkout.quote gives them, at the tier held when the purchase started; returns by the
  cumulative proportions, their running totals on the purchase, the shortfall policy in force;
- tiers: upgrades at the purchase that reaches a threshold, downgrades at a return that drops below it, the
  nightly review after 12 months; at `now` the tier agrees with the trailing 365-day qualifying spend;
- the nightly jobs as the app runs them, in store time: expiry (00:05), birthday bonus (00:10, in the birthday
  month, once a year), tier review (00:15); run again at `now`, they find nothing to do;
- card numbers valid (Luhn), phones unique mainland mobile numbers (E.164), made-up Chinese names, e-mail
  addresses only at example.com; ids in registration order, each member's rows in time order.

What it does not generate: activation codes, login sessions, messages and campaigns, API tokens, imports, and the
"ledger.post" audit entries the app writes per transaction (the audit log gets one "data.generate" entry saying
the data was generated, besides the adjustments and complaint steps). Members are not activated (no password) and
none is deleted. All generated staff share one random password, printed at the end.

The same seed, parameters, `now` and starting database give the same rows (the staff password hash aside).
"""
from __future__ import annotations

import bisect
import calendar
import json
import math
import os
import queue
import random
import secrets
import threading
import time as wallclock
from array import array
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, time, timezone
from zoneinfo import ZoneInfo

import click
from flask.cli import with_appcontext

from . import checkout
from . import returns as return_rules
from . import tiers as tier_rules
from .cards import luhn_check_digit
from .ledger import lot_expiry
from .members import name_key
from .rules import Rules, load_rules

UTC = timezone.utc
DAY = 86_400
NEVER = 1 << 62  # sort key of a lot that never expires
OPENS, OPEN_SECONDS = 9 * 3600, 12 * 3600 + 1800  # store hours 09:00-21:30
EXPIRY_JOB, BIRTHDAY_JOB, REVIEW_JOB = 5 * 60, 10 * 60, 15 * 60  # the nightly jobs, seconds after local midnight
CHAIN_TIMEZONE = "Asia/Shanghai"
HEAVY_BASKET = math.log(2.5)

# Tables that must be empty: generate adds a whole history, never to one that exists.
MUST_BE_EMPTY = ("members", "purchases", "returns", "ledger_entries", "point_lots", "lot_uses", "tier_changes",
                 "complaints", "complaint_events", "visit_ratings", "store_takings")

COLUMNS = {
    "stores": ("id", "code", "name", "timezone", "active", "created_at"),
    "staff": ("id", "username", "name", "password_hash", "role", "store_id", "active", "created_at"),
    "members": ("id", "card_number", "name", "name_key", "phone", "phone_last4", "email", "birthday",
                "guardian_consent", "privacy_version", "privacy_consented_at", "marketing_consent",
                "marketing_consent_at", "tier_id", "tier_since", "points_balance", "referrer_id",
                "referral_rewarded_at", "last_birthday_bonus_year", "store_id", "registered_by_id", "locale",
                "created_at"),
    "purchases": ("id", "idempotency_key", "member_id", "store_id", "staff_id", "receipt_number", "tier_id",
                  "gross_fen", "discount_bp", "discount_fen", "points_redeemed", "redeemed_value_fen", "paid_fen",
                  "earn_rate_milli", "multiplier_milli", "points_earned", "returned_gross_fen", "refunded_fen",
                  "points_reversed", "points_restored", "created_at"),
    "returns": ("id", "idempotency_key", "purchase_id", "member_id", "store_id", "staff_id", "returned_gross_fen",
                "refund_fen", "points_restored", "points_reversed", "shortfall_points", "shortfall_deducted_fen",
                "cash_refund_fen", "shortfall_policy", "created_at"),
    "ledger_entries": ("id", "member_id", "kind", "points", "balance_after", "reason", "note", "idempotency_key",
                       "purchase_id", "return_id", "complaint_id", "related_member_id", "staff_id", "store_id",
                       "expires_at", "created_at"),
    "point_lots": ("id", "member_id", "entry_id", "points", "remaining", "expires_at", "created_at"),
    "lot_uses": ("id", "entry_id", "lot_id", "points", "restored"),
    "tier_changes": ("id", "member_id", "from_tier_id", "to_tier_id", "reason", "purchase_id", "return_id",
                     "staff_id", "qualifying_spend_fen", "created_at"),
    "complaints": ("id", "member_id", "store_id", "purchase_id", "category", "severity", "description", "status",
                   "channel", "staff_id", "assigned_to_id", "first_response_at", "resolved_at", "closed_at",
                   "rating", "reopened_at", "created_at"),
    "complaint_events": ("id", "complaint_id", "kind", "body", "visible_to_member", "staff_id", "member_id",
                         "created_at"),
    "visit_ratings": ("id", "purchase_id", "member_id", "store_id", "rating", "comment", "complaint_id",
                      "created_at"),
    "store_takings": ("id", "store_id", "day", "amount_fen", "entered_by_id", "updated_at"),
    "audit_log": ("id", "staff_id", "member_id", "role", "store_id", "action", "target", "before", "after", "ip",
                  "created_at"),
}
# Parents first: the order rows are written in when a writer wants it, and the order of the summary.
TABLES = tuple(COLUMNS)


@dataclass(frozen=True)
class Ratios:
    """How the generated chain behaves; the defaults give 5 purchases a member over two years."""

    purchases_per_member_year: float = 2.5
    register_at_purchase: float = 0.7  # share of members who register at the till while buying
    founding_share: float = 0.25  # share of members who join in the chain's first 30 days
    home_store_share: float = 0.8  # purchases at the member's own store
    redeem_share: float = 0.55  # purchases paid partly with points, when the balance allows
    return_share: float = 0.04  # purchases with a return
    whole_return_share: float = 0.6  # of those, returned whole at once
    second_return_share: float = 0.35  # partial returns followed by another
    same_store_return_share: float = 0.85
    rating_share: float = 0.03  # purchases whose visit the member rates
    complaint_share: float = 0.01  # members who file a complaint
    anonymous_complaint_share: float = 0.002  # complaints without a member, per member
    adjustment_share: float = 0.005  # members with a manual adjustment
    birthday_share: float = 0.75
    referral_share: float = 0.08
    email_share: float = 0.3
    marketing_share: float = 0.55
    english_share: float = 0.08
    cashiers_per_store: int = 4
    basket_median_yuan: float = 60.0
    heavy_share: float = 0.04  # families and small businesses: six times the visits, 2.5 times the basket


@dataclass(frozen=True)
class TierInfo:
    id: int
    code: str
    threshold_fen: int
    multiplier_milli: int
    discount_bp: int
    birthday_bonus: int


@dataclass(frozen=True)
class StoreInfo:
    id: int
    code: str
    timezone: str


@dataclass
class Context:
    """What the database holds before the run: the tiers, the stores to keep, and where ids continue."""

    tiers: list[TierInfo]
    stores: list[StoreInfo]  # the open ones, which take part
    store_codes: set[str]  # every store's, closed ones too
    usernames: set[str]
    next_ids: dict[str, int]
    filled: dict[str, bool]  # MUST_BE_EMPTY table -> holds rows

    @property
    def refusal(self) -> str | None:
        full = [table for table, has_rows in self.filled.items() if has_rows]
        if not full:
            return None
        return ("The database already holds data (" + ", ".join(full) + "). generate only fills an empty, "
                "migrated database: point DATABASE_URL at a new one, run `flask db upgrade`, then generate.")


def read_context(fetch) -> Context:
    """The Context, through `fetch(sql) -> list of rows` on the connection that will write."""
    tiers = [TierInfo(*row) for row in fetch(
        "SELECT id, code, threshold_fen, multiplier_milli, discount_bp, birthday_bonus FROM tiers "
        "ORDER BY threshold_fen, id")]
    all_stores = fetch("SELECT id, code, timezone, active FROM stores ORDER BY id")
    stores = [StoreInfo(row[0], row[1], row[2]) for row in all_stores if row[3]]
    usernames = {row[0] for row in fetch("SELECT username FROM staff")}
    next_ids = {table: int(fetch(f"SELECT COALESCE(MAX(id), 0) FROM {table}")[0][0]) + 1 for table in TABLES}
    filled = {table: bool(fetch(f"SELECT id FROM {table} LIMIT 1")) for table in MUST_BE_EMPTY}
    return Context(tiers, stores, {row[1] for row in all_stores}, usernames, next_ids, filled)


# --- names, phones, cards -------------------------------------------------------------------------------

SURNAMES = ("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔"
            "钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤")
GIVEN = ("伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀英华慧巧美霞平刚桂兰玉萍红娥玲芬燕鹏辉建国文斌宇浩凯健俊帆帅旭宁"
         "龙林欣晨博子涵轩怡佳雨琪思梓睿嘉欣悦然诗彤晓雪梅琳颖婷倩雅晶丹蕾薇月莉萌瑶珊婧璐嘉伦志坤亮成东海波")
# Mobile prefixes in service in mainland China (three digits, then eight subscriber digits).
MOBILE_PREFIXES = (130, 131, 132, 133, 134, 135, 136, 137, 138, 139, 145, 147, 150, 151, 152, 153, 155, 156, 157,
                   158, 159, 166, 173, 175, 176, 177, 178, 180, 181, 182, 183, 184, 185, 186, 187, 188, 189, 191,
                   193, 195, 197, 198, 199)
STORE_PLACES = ("徐汇", "静安", "浦东", "黄浦", "长宁", "虹口", "杨浦", "闵行", "普陀", "宝山", "嘉定", "松江", "青浦",
                "奉贤", "金山", "崇明", "苏州园区", "杭州西湖", "南京新街口", "无锡", "宁波", "合肥", "常州", "嘉兴",
                "绍兴", "南通", "扬州", "湖州", "镇江", "台州")
STORE_PLACES_EN = ("Xuhui", "Jing'an", "Pudong", "Huangpu", "Changning", "Hongkou", "Yangpu", "Minhang", "Putuo",
                   "Baoshan", "Jiading", "Songjiang", "Qingpu", "Fengxian", "Jinshan", "Chongming", "Suzhou SIP",
                   "Hangzhou West Lake", "Nanjing Xinjiekou", "Wuxi", "Ningbo", "Hefei", "Changzhou", "Jiaxing",
                   "Shaoxing", "Nantong", "Yangzhou", "Huzhou", "Zhenjiang", "Taizhou")
ADJUST_CREDITS = ("补录积分：小票未积分 Points missing from a receipt", "收银系统故障补偿 Till outage compensation",
                  "会员活动补发 Promotion points not credited")
ADJUST_DEBITS = ("重复积分扣回 Points credited twice", "误操作更正 Correcting a wrong credit")
COMPLAINTS = {
    "product_quality": ("酸奶过期了 The yogurt was past its date", "水果有坏的 Some of the fruit was bad",
                        "包装破损 The packaging was broken"),
    "service_attitude": ("收银员态度不好 The cashier was rude", "排队太久没人管 A long queue and nobody helped"),
    "price_billing": ("价签和结账价格不一致 Shelf and till prices differ", "被多收了一件 Charged for one item twice"),
    "returns_refunds": ("退货退款太慢 The refund took too long", "退货被拒绝 A return was refused"),
    "store_environment": ("店里地面很滑 The floor was slippery", "停车场太乱 The car park is chaotic"),
    "points_membership": ("积分没有到账 Points missing after a purchase", "生日积分没收到 No birthday points"),
    "other": ("希望延长营业时间 Please open longer", "建议增加自助收银 More self-checkouts, please"),
}
REPLIES = ("您好，已经核实情况，我们会尽快处理。 We have looked into it and will sort it out soon.",
           "非常抱歉给您带来不便。 We are sorry for the trouble.")
RESOLUTIONS = ("已处理并致歉 Sorted out, with an apology", "已退款 Refunded", "已补发积分 Points credited",
               "已加强员工培训 Staff have been briefed")
NOTES = ("已联系门店主管 Store supervisor contacted", "需要调取监控 CCTV to be checked")
RATING_COMMENTS = {1: ("太差了 Very poor", "结账太慢 Checkout far too slow"), 2: ("不太满意 Not great",),
                   3: (None, "一般 OK"), 4: (None, "不错 Good"), 5: (None, "很满意 Very good")}


def _coprime_multiplier(rng: random.Random, modulus: int) -> int:
    while True:
        candidate = rng.randrange(modulus // 3, modulus - 1)
        if math.gcd(candidate, modulus) == 1:
            return candidate


# --- time -----------------------------------------------------------------------------------------------

class _Zones:
    """Store-time arithmetic in integer UTC seconds. A zone with one UTC offset over the whole span (Asia/Shanghai)
    is plain arithmetic; any other goes through zoneinfo, cached (the local date is constant within 15 minutes)."""

    def __init__(self, first: int, last: int):
        self.first, self.last = first, last
        self._zones: dict[str, ZoneInfo] = {}
        self._fixed: dict[str, int | None] = {}
        self._midnight: dict = {}
        self._ordinal: dict = {}
        self._expiry: dict = {}

    def zone(self, name: str) -> ZoneInfo:
        if name not in self._zones:
            zone = self._zones[name] = ZoneInfo(name)
            offsets = {int(datetime.fromtimestamp(t, zone).utcoffset().total_seconds())
                       for t in range(self.first, self.last, DAY // 4)}
            self._fixed[name] = offsets.pop() if len(offsets) == 1 else None
        return self._zones[name]

    def midnight(self, tz: str, ordinal: int) -> int:
        """The UTC second at which local day `ordinal` starts."""
        key = (tz, ordinal)
        found = self._midnight.get(key)
        if found is None:
            found = self._midnight[key] = int(
                datetime.combine(date.fromordinal(ordinal), time.min, tzinfo=self.zone(tz)).timestamp())
        return found

    def ordinal(self, tz: str, ts: int) -> int:
        """The local day (date ordinal) of UTC second `ts`."""
        offset = self._fixed.get(tz)
        if offset is not None:
            return (ts + offset) // DAY + 719163  # 719163: the ordinal of 1970-01-01
        key = (tz, ts // 900)
        found = self._ordinal.get(key)
        if found is None:
            found = self._ordinal[key] = datetime.fromtimestamp(key[1] * 900, self.zone(tz)).date().toordinal()
        return found

    def expiry(self, ts: int, tz: str, days: int) -> int | None:
        """ledger.lot_expiry for a credit at `ts`, in seconds (it depends only on the local day)."""
        return self.expiry_on(tz, self.ordinal(tz, ts), days)

    def expiry_on(self, tz: str, ordinal: int, days: int) -> int | None:
        """ledger.lot_expiry for a credit on local day `ordinal`."""
        key = (tz, ordinal, days)
        if key in self._expiry:
            return self._expiry[key]
        noon = datetime.fromtimestamp(self.midnight(tz, key[1]) + DAY // 2, UTC)
        found = lot_expiry(noon, tz, days)
        found = self._expiry[key] = None if found is None else int(found.timestamp())
        return found

    def job_at_or_after(self, tz: str, ts: int, offset: int) -> int:
        """The first run at or after `ts` of a nightly job that runs `offset` seconds after local midnight."""
        ordinal = self.ordinal(tz, ts)
        run = self.midnight(tz, ordinal) + offset
        return run if run >= ts else self.midnight(tz, ordinal + 1) + offset


def _timestamp_format():
    """A function from UTC seconds to the text both databases read into their timestamp columns (PostgreSQL with
    the session in UTC): 'YYYY-MM-DD HH:MM:SS.ffffff', the form SQLAlchemy stores in SQLite."""
    days: dict[int, str] = {}
    clock = [f" {h:02d}:{m:02d}:{s:02d}.000000" for h in range(24) for m in range(60) for s in range(60)]

    def fmt(ts: int | None) -> str | None:
        if ts is None:
            return None
        day = ts // DAY
        prefix = days.get(day)
        if prefix is None:
            prefix = days[day] = date.fromordinal(719163 + day).isoformat()  # 719163: 1970-01-01
        return prefix + clock[ts - day * DAY]

    return fmt


# --- the in-memory model of one member -----------------------------------------------------------------

class _Lot:
    __slots__ = ("id", "entry_id", "points", "remaining", "expires", "key", "created")

    def __init__(self, lot_id, entry_id, points, expires, created):
        self.id = lot_id
        self.entry_id = entry_id
        self.points = points
        self.remaining = points
        self.expires = expires
        self.key = (NEVER if expires is None else expires, lot_id)
        self.created = created


class _Use:
    __slots__ = ("id", "entry_id", "lot", "points", "restored")

    def __init__(self, use_id, entry_id, lot, points):
        self.id = use_id
        self.entry_id = entry_id
        self.lot = lot
        self.points = points
        self.restored = 0


@dataclass
class _Store:
    index: int
    id: int
    code: str
    timezone: str
    manager_id: int = 0
    manager_name: str = ""
    cashier_ids: list[int] = field(default_factory=list)
    weight: float = 1.0


@dataclass
class Summary:
    rows: dict[str, int]
    seconds: float
    tiers: dict[str, int]
    ledger_kinds: dict[str, int]
    now: datetime
    admin_username: str
    bytes: int = 0


class Generator:
    """Builds the rows. `write(table, columns, rows)` receives them in batches; `progress(text)` hears how far."""

    def __init__(self, context: Context, *, members: int, stores: int, years: int, seed: int, now: datetime,
                 rules: Rules, write, progress=lambda text: None, password_hash: str = "!",
                 ratios: Ratios = Ratios(), batch: int = 20_000):
        if not context.tiers:
            raise ValueError("no tiers: run the migrations first")
        self.ctx = context
        self.n = members
        self.store_count = stores
        self.years = years
        self.seed = seed
        self.now = int(now.timestamp())
        self.now_dt = now
        self.rules = rules
        self.write = write
        self.progress = progress
        self.password_hash = password_hash
        self.ratios = ratios
        self.batch = batch
        self.zones = _Zones(self.now - (years * 365 + 60) * DAY, self.now + (rules.expiry_days + 60) * DAY)
        self.fmt = _timestamp_format()
        self._expiry_texts: dict[int, str] = {}
        self.tiers = context.tiers
        self.tier_index = {tier.id: index for index, tier in enumerate(self.tiers)}
        # a purchase that brings the spend to this reaches a higher tier
        self.next_threshold = [tier.threshold_fen for tier in self.tiers[1:]] + [NEVER]
        self.buffers: dict[str, list] = {table: [] for table in TABLES}
        self.counts: dict[str, int] = {table: 0 for table in TABLES}
        self.ids = dict(context.next_ids)
        self.ledger_kinds: Counter = Counter()
        self.started = wallclock.monotonic()
        self.start = self.now - years * 365 * DAY
        self.qualifying = rules.qualifying_days * DAY
        self.retention = rules.tier_retention_days * DAY

    # -- plumbing --

    def next_id(self, table: str) -> int:
        value = self.ids[table]
        self.ids[table] = value + 1
        return value

    def flush(self, force: bool = False) -> None:
        for table in TABLES:
            rows = self.buffers[table]
            if rows and (force or len(rows) >= self.batch):
                if table == "ledger_entries":
                    self.ledger_kinds.update(Counter(row[2] for row in rows))
                self.write(table, COLUMNS[table], rows)
                self.counts[table] += len(rows)
                self.buffers[table] = []

    def expiry_text(self, ts: int | None) -> str | None:
        """fmt(ts) for lot expiries, of which there are few: one a day."""
        if ts is None:
            return None
        found = self._expiry_texts.get(ts)
        if found is None:
            found = self._expiry_texts[ts] = self.fmt(ts)
        return found

    def elapsed(self) -> float:
        return wallclock.monotonic() - self.started

    # -- the run --

    def run(self) -> Summary:
        self._chain()
        self._schedule()
        self._members()
        self._anonymous_complaints()
        self._takings()
        self._audit_generation()
        self.flush(force=True)
        tiers = {tier.code: count for tier, count in zip(self.tiers, self.tier_counts)}
        return Summary(dict(self.counts), self.elapsed(), tiers, dict(sorted(self.ledger_kinds.items())),
                       self.now_dt, self.admin_username)

    def _chain(self) -> None:
        """Stores (those already there first) and their staff: a manager and cashiers each, and one admin."""
        rng = random.Random(f"{self.seed}:chain")
        fmt = self.fmt
        opened = self.start - 30 * DAY
        stores = [_Store(i, s.id, s.code, s.timezone) for i, s in enumerate(self.ctx.stores)]
        taken_codes = self.ctx.store_codes
        number = 0
        while len(stores) < self.store_count:
            number += 1
            code = f"S{number:03d}"
            if code in taken_codes:
                continue
            place = (len(stores)) % len(STORE_PLACES)
            suffix = "" if len(stores) < len(STORE_PLACES) else f" {len(stores) // len(STORE_PLACES) + 1}"
            store = _Store(len(stores), self.next_id("stores"), code, CHAIN_TIMEZONE)
            self.buffers["stores"].append((store.id, code, f"{STORE_PLACES[place]}店 {STORE_PLACES_EN[place]}{suffix}",
                                           CHAIN_TIMEZONE, 1, fmt(opened)))
            stores.append(store)
        if not stores:
            raise ValueError("no store to generate for")
        usernames = set(self.ctx.usernames)

        def username(wanted: str) -> str:
            candidate, n = wanted, 1
            while candidate in usernames:
                n += 1
                candidate = f"{wanted}{n}"
            usernames.add(candidate)
            return candidate

        staff_rows = self.buffers["staff"]
        admin_id = self.next_id("staff")
        self.admin_username = username("chain-admin")
        staff_rows.append((admin_id, self.admin_username, "连锁管理员 Chain admin", self.password_hash, "admin",
                           None, 1, fmt(opened)))
        for store in stores:
            store.weight = rng.lognormvariate(0, 0.45)
            store.manager_id = self.next_id("staff")
            store.manager_name = self._name(rng)
            staff_rows.append((store.manager_id, username(f"{store.code.lower()}-manager"), store.manager_name,
                               self.password_hash, "manager", store.id, 1, fmt(opened)))
            for k in range(self.ratios.cashiers_per_store):
                cashier = self.next_id("staff")
                store.cashier_ids.append(cashier)
                staff_rows.append((cashier, username(f"{store.code.lower()}-cashier{k + 1}"), self._name(rng),
                                   self.password_hash, "cashier", store.id, 1, fmt(opened)))
        self.stores = stores
        total = sum(s.weight for s in stores)
        cumulative, self.store_cumulative = 0.0, []
        for store in stores:
            cumulative += store.weight / total
            self.store_cumulative.append(cumulative)
        self.store_cumulative[-1] = 1.0
        self.flush()

    @staticmethod
    def _name(rng: random.Random) -> str:
        given = GIVEN[int(rng.random() * len(GIVEN))]
        if rng.random() < 0.6:
            given += GIVEN[int(rng.random() * len(GIVEN))]
        return SURNAMES[int(rng.random() * len(SURNAMES))] + given

    def _pick_store(self, u: float) -> int:
        return bisect.bisect_left(self.store_cumulative, u)

    def _schedule(self) -> None:
        """Pass one: every member's registration and purchase times, stores, cashiers and gross amounts."""
        rng = random.Random(f"{self.seed}:schedule")
        r = rng.random
        ratios, zones, stores = self.ratios, self.zones, self.stores
        n = self.n
        chain_tz = stores[0].timezone
        first_day = zones.ordinal(chain_tz, self.start) + 1
        today = zones.ordinal(chain_tz, self.now)
        whole_days = max(1, today - first_day)  # registrations: up to yesterday
        founding_days = min(30, whole_days)
        founding = ratios.founding_share if whole_days > 60 else 0.0
        days = sorted((r() * founding_days) if r() < founding else (r() * whole_days) for _ in range(n))
        # Purchases a member makes after registering, a day: set so that the mean comes out as asked.
        exposure = founding * (whole_days - founding_days / 2) + (1 - founding) * whole_days / 2
        wanted = ratios.purchases_per_member_year * whole_days / 365
        per_day = max(0.0, wanted - ratios.register_at_purchase) / max(exposure, 1.0)
        log_basket = math.log(ratios.basket_median_yuan * 100)
        cap = self.rules.purchase_cap_fen
        now = self.now

        self.m_join = array("q")
        self.m_store = array("H")
        self.m_off = array("Q", [0])
        self.m_referrer = array("i")
        self.referees: dict[int, list[int]] = {}
        self.p_ts = array("q")
        self.p_store = array("H")
        self.p_staff = array("I")
        self.p_gross = array("q")
        p_ts, p_store, p_staff, p_gross = self.p_ts, self.p_store, self.p_staff, self.p_gross
        pick = self._pick_store
        home_share, at_purchase = ratios.home_store_share, ratios.register_at_purchase
        heavy = ratios.heavy_share
        light = (1 - 6 * heavy) / (1 - heavy)  # so that the mean visit rate stays per_day
        for i in range(n):
            home = pick(r())
            tz = stores[home].timezone
            u = days[i]
            whole = int(u)
            joined = zones.midnight(tz, first_day + whole) + OPENS + int((u - whole) * OPEN_SECONDS)
            self.m_join.append(joined)
            self.m_store.append(home)
            if i and r() < ratios.referral_share:
                referrer = int(r() * i)
                self.m_referrer.append(referrer)
                self.referees.setdefault(referrer, []).append(i)
            else:
                self.m_referrer.append(-1)
            visits = []
            if r() < at_purchase:
                visits.append((joined + 30 + int(r() * 900), home))
            if r() < heavy:
                rate = per_day * 6 * rng.gammavariate(2, 0.5)
                basket = log_basket + HEAVY_BASKET + rng.gauss(0, 0.5)
            else:
                rate = per_day * light * rng.gammavariate(0.7, 1 / 0.7)
                basket = log_basket + rng.gauss(0, 0.5)
            if rate > 0:
                while True:
                    u += rng.expovariate(rate)
                    whole = int(u)
                    if first_day + whole > today:
                        break
                    store = home if r() < home_share else pick(r())
                    ts = zones.midnight(stores[store].timezone, first_day + whole) + OPENS + int(
                        (u - whole) * OPEN_SECONDS)
                    if ts >= now:
                        break
                    visits.append((ts, store))
            visits.sort()
            last = joined
            for ts, store in visits:
                if ts <= last:
                    ts = last + 1
                if ts >= now:
                    break
                last = ts
                cashiers = stores[store].cashier_ids
                p_ts.append(ts)
                p_store.append(store)
                p_staff.append(cashiers[int(r() * len(cashiers))])
                p_gross.append(max(50, min(cap, int(math.exp(basket + rng.gauss(0, 0.75))))))
            self.m_off.append(len(p_ts))
        self.first_purchase_id = self.ids["purchases"]
        self.ids["purchases"] += len(p_ts)
        self.progress(f"schedule: {n:,} members, {len(p_ts):,} purchases drawn ({self.elapsed():.1f} s)")

    # -- pass two: each member's history --

    def _members(self) -> None:
        rng = random.Random(f"{self.seed}:members")
        r = rng.random
        ratios, rules, fmt = self.ratios, self.rules, self.fmt
        n = self.n
        first_member = self.ids["members"]
        self.ids["members"] += n
        self.first_member_id = first_member
        phone_space = len(MOBILE_PREFIXES) * 100_000_000
        phone_a, phone_b = _coprime_multiplier(rng, phone_space), rng.randrange(phone_space)
        card_space = 900_000_000
        card_a, card_b = _coprime_multiplier(rng, card_space), rng.randrange(card_space)
        this_year = self.now_dt.year
        self.tier_counts = [0] * len(self.tiers)
        self.takings: dict[int, int] = {}  # store index * 10,000,000 + local day -> member sales (paid)
        member_rows = self.buffers["members"]
        step = max(1, n // 20)
        for i in range(n):
            member_id = first_member + i
            home = self.stores[self.m_store[i]]
            joined = self.m_join[i]
            name = self._name(rng)
            x = (phone_a * i + phone_b) % phone_space
            national = f"{MOBILE_PREFIXES[x // 100_000_000]}{x % 100_000_000:08d}"
            payload = str(100_000_000 + (card_a * i + card_b) % card_space)
            birthday = None
            if r() < ratios.birthday_share:
                year = this_year - 16 - int(r() * 60)
                month = 1 + int(r() * 12)
                birthday = date(year, month, 1 + int(r() * calendar.monthrange(year, month)[1]))
            email = f"member{member_id}@example.com" if r() < ratios.email_share else None
            marketing = r() < ratios.marketing_share
            locale = "en" if r() < ratios.english_share else None
            registered_by = home.cashier_ids[int(r() * len(home.cashier_ids))]
            card = payload + luhn_check_digit(payload)
            state = _MemberHistory(self, rng, i, member_id, card, home, joined, birthday).play()
            joined_text = fmt(joined)
            self.tier_counts[state.tier] += 1
            referrer = self.m_referrer[i]
            member_rows.append((
                member_id, card, name, name_key(name), "+86" + national,
                national[-4:], email, birthday.isoformat() if birthday else None, 0, rules.privacy_version,
                joined_text, 1 if marketing else 0, joined_text if marketing else None,
                self.tiers[state.tier].id, joined_text if state.tier_since == joined else fmt(state.tier_since),
                state.balance, first_member + referrer if referrer >= 0 else None,
                fmt(state.referral_rewarded_at), state.birthday_year, home.id, registered_by, locale, joined_text,
            ))
            if len(member_rows) >= 2000:
                self.flush()
                member_rows = self.buffers["members"]
            if (i + 1) % step == 0 or i + 1 == n:
                self.flush()
                member_rows = self.buffers["members"]
                done = {t: self.counts[t] + len(self.buffers[t])
                        for t in ("members", "purchases", "ledger_entries", "point_lots")}
                self.progress(f"members {i + 1:,}/{n:,}: " + ", ".join(f"{t} {c:,}" for t, c in done.items())
                              + f" ({self.elapsed():.1f} s)")

    def _anonymous_complaints(self) -> None:
        rng = random.Random(f"{self.seed}:anonymous")
        count = int(self.n * self.ratios.anonymous_complaint_share)
        span = max(DAY, self.now - self.start - DAY)
        for _ in range(count):
            store = self.stores[self._pick_store(rng.random())]
            created = self.zones.job_at_or_after(store.timezone, self.start + int(rng.random() * span), 0)
            created += OPENS + int(rng.random() * OPEN_SECONDS)
            if created >= self.now:
                continue
            _complaint(self, rng, store, created, member_id=None, purchase_id=None,
                       channel="counter" if rng.random() < 0.6 else "phone", history=None)
        self.progress(f"complaints without a member: {count:,} ({self.elapsed():.1f} s)")

    def _takings(self) -> None:
        """Each store's end-of-day takings: its member sales plus what everyone else spent."""
        rng = random.Random(f"{self.seed}:takings")
        rows = self.buffers["store_takings"]
        for store in self.stores:
            tz = store.timezone
            first = self.zones.ordinal(tz, self.start) + 1
            last = self.zones.ordinal(tz, self.now)
            scale = store.weight * max(1, self.n // len(self.stores)) / 50
            for ordinal in range(first, last):
                members = self.takings.get(store.index * 10_000_000 + ordinal, 0)
                others = int(scale * rng.uniform(800, 2400))
                rows.append((self.next_id("store_takings"), store.id, date.fromordinal(ordinal).isoformat(),
                             members + others, store.manager_id,
                             self.fmt(self.zones.midnight(tz, ordinal) + 22 * 3600)))
            self.flush()

    def _audit_generation(self) -> None:
        self.flush(force=True)
        after = {"members": self.n, "stores": len(self.stores), "years": self.years, "seed": self.seed,
                 "now": self.now_dt.isoformat(), "rows": {t: c for t, c in self.counts.items() if c}}
        self.buffers["audit_log"].append((self.next_id("audit_log"), None, None, "system", None, "data.generate",
                                          "database", None, json.dumps(after), None, self.fmt(self.now)))

    def audit(self, *, action, at, staff_id=None, member_id=None, role=None, store_id=None, target=None,
              before=None, after=None):
        self.buffers["audit_log"].append((
            self.next_id("audit_log"), staff_id, member_id, role, store_id, action, target,
            json.dumps(before, ensure_ascii=False) if before is not None else None,
            json.dumps(after, ensure_ascii=False) if after is not None else None, None, self.fmt(at)))


# A purchase while its member's history plays: a list, in the order of the purchases table's figure columns.
(P_ID, P_CREATED, P_STORE, P_STAFF, P_TIER, P_GROSS, P_DISCOUNT_BP, P_DISCOUNT, P_REDEEMED, P_REDEEMED_VALUE, P_PAID,
 P_EARN_RATE, P_MULTIPLIER, P_EARNED, P_RETURNED, P_REFUNDED, P_REVERSED, P_RESTORED, P_USES, P_TEXT) = range(20)


class _PurchaseView:
    """A purchase record seen with the attribute names returns.proportional reads."""

    __slots__ = ("gross_fen", "paid_fen", "points_earned", "points_redeemed", "returned_gross_fen",
                 "refunded_fen", "points_reversed", "points_restored")

    def __init__(self, record):
        self.gross_fen = record[P_GROSS]
        self.paid_fen = record[P_PAID]
        self.points_earned = record[P_EARNED]
        self.points_redeemed = record[P_REDEEMED]
        self.returned_gross_fen = record[P_RETURNED]
        self.refunded_fen = record[P_REFUNDED]
        self.points_reversed = record[P_REVERSED]
        self.points_restored = record[P_RESTORED]


def _lot_key(lot: _Lot):
    return lot.key


class _MemberHistory:
    """One member's ledger, lots, purchases, returns and tier, played event by event as the services do."""

    def __init__(self, gen: Generator, rng: random.Random, index: int, member_id: int, card: str, home: _Store,
                 joined: int, birthday: date | None):
        self.g = gen
        self.rng = rng
        self.index = index
        self.member_id = member_id
        self.card = card
        self.home = home
        self.joined = joined
        self.birthday = birthday
        self.balance = 0
        self.tier = 0
        self.tier_since = joined
        self.referral_rewarded_at = None
        self.birthday_year = None
        self.open_lots: list[_Lot] = []  # lots with points left, the soonest to expire first (as ledger.open_lots)
        self.lots: list[_Lot] = []
        self.uses: list[_Use] = []
        self.purchases: list[list] = []
        self.by_index: dict[int, list] = {}
        self.clock = joined
        self.entries = gen.buffers["ledger_entries"]
        self.fmt = gen.fmt
        self.expiry_text = gen.expiry_text
        self._last_at, self._last_text = None, None

    def text(self, at: int) -> str:
        """fmt(at), for the several rows one event writes at the same moment."""
        if at != self._last_at:
            self._last_at, self._last_text = at, self.fmt(at)
        return self._last_text

    # -- the ledger, as portal/ledger.py keeps it --

    def _entry(self, kind, points, reason, at, store_id, staff_id, purchase_id, return_id, expires,
               complaint_id=None, related=None, note=None, key=None) -> int:
        g = self.g
        self.balance += points
        entry_id = g.ids["ledger_entries"]
        g.ids["ledger_entries"] = entry_id + 1
        self.entries.append((entry_id, self.member_id, kind, points, self.balance, reason, note, key, purchase_id,
                             return_id, complaint_id, related, staff_id, store_id, self.expiry_text(expires),
                             self.text(at)))
        return entry_id

    def _lot(self, entry_id, points, expires, at) -> None:
        g = self.g
        lot = _Lot(g.ids["point_lots"], entry_id, points, expires, self.text(at))
        g.ids["point_lots"] += 1
        self.lots.append(lot)
        open_lots = self.open_lots
        if not open_lots or open_lots[-1].key < lot.key:
            open_lots.append(lot)
        else:
            bisect.insort(open_lots, lot, key=_lot_key)

    def credit(self, kind, points, expires, reason, at, store_id, staff_id=None, purchase_id=None, return_id=None,
               complaint_id=None, related=None, note=None, key=None) -> int:
        """ledger.credit of one portion: pay off a negative balance first, a lot for the rest."""
        debt = -self.balance if self.balance < 0 else 0
        entry_id = self._entry(kind, points, reason, at, store_id, staff_id, purchase_id, return_id, expires,
                               complaint_id, related, note, key)
        if points > debt:
            self._lot(entry_id, points - debt, expires, at)
        return entry_id

    def credit_portions(self, kind, portions, reason, at, store_id, staff_id, purchase_id, return_id) -> int:
        """ledger.credit of several portions (a return's restored points): the entry expires with the latest
        portion (never, if one never expires); the debt is paid from the soonest-expiring portions."""
        debt = -self.balance if self.balance < 0 else 0
        expiries = [expires for points, expires in portions if points]
        entry_expires = None if None in expiries else max(expiries)
        entry_id = self._entry(kind, sum(points for points, _ in portions), reason, at, store_id, staff_id,
                               purchase_id, return_id, entry_expires)
        for points, expires in sorted(portions, key=lambda portion: NEVER if portion[1] is None else portion[1]):
            paid_off = min(debt, points)
            debt -= paid_off
            if points - paid_off:
                self._lot(entry_id, points - paid_off, expires, at)
        return entry_id

    def debit(self, kind, points, reason, at, store_id, staff_id=None, purchase_id=None, return_id=None, *,
              allow_negative=False, lot=None, note=None, key=None) -> list[_Use]:
        """ledger.debit: from the lots that expire first; below zero only where allowed."""
        need, taken = points, []
        for candidate in ((lot,) if lot is not None else self.open_lots):
            take = candidate.remaining if candidate.remaining < need else need
            if take:
                candidate.remaining -= take
                taken.append((candidate, take))
                need -= take
            if not need:
                break
        if need and not allow_negative:
            raise AssertionError(f"member {self.member_id}: a {kind} of {points} with too few points")
        entry_id = self._entry(kind, -points, reason, at, store_id, staff_id, purchase_id, return_id, None,
                               note=note, key=key)
        g = self.g
        uses = []
        for candidate, take in taken:
            uses.append(_Use(g.ids["lot_uses"], entry_id, candidate, take))
            g.ids["lot_uses"] += 1
        self.uses.extend(uses)
        open_lots = self.open_lots
        spent = 0  # lots are used from the front, so the empty ones are at the front
        while spent < len(open_lots) and open_lots[spent].remaining == 0:
            spent += 1
        if spent:
            del open_lots[:spent]
        return uses

    def expire_due(self, ts: int) -> None:
        """ledger.expire_due, which each purchase, return and adjustment runs first (the nightly job has usually
        done it already)."""
        open_lots = self.open_lots
        while open_lots and open_lots[0].expires is not None and open_lots[0].expires <= ts:
            self.debit("expire", open_lots[0].remaining, "expiry", ts, None, lot=open_lots[0])

    # -- tiers --

    def spend(self, at: int) -> int:
        """tiers.qualifying_spend: cash paid in the trailing window, net of refunds."""
        since = at - self.g.qualifying
        total = 0
        for record in reversed(self.purchases):
            if record[P_CREATED] <= since:
                break
            total += record[P_PAID] - record[P_REFUNDED]
        return total

    def earned(self, spend: int) -> int:
        return self.g.tier_index[tier_rules.tier_for_spend(self.g.tiers, spend).id]

    def change_tier(self, to: int, at: int, reason: str, spend: int, purchase_id=None, return_id=None,
                    staff_id=None) -> None:
        """tiers._change_tier: the new tier from `at`, kept with its reason."""
        g = self.g
        g.buffers["tier_changes"].append((
            g.next_id("tier_changes"), self.member_id, g.tiers[self.tier].id, g.tiers[to].id, reason, purchase_id,
            return_id, staff_id, spend, self.text(at)))
        self.tier = to
        self.tier_since = at

    def next_review(self, until: int) -> int | None:
        """The first nightly review up to `until` that moves the member down (tiers.review), if any."""
        if self.tier == 0:
            return None
        g = self.g
        tz = self.home.timezone
        run = g.zones.job_at_or_after(tz, max(self.tier_since + g.retention, self.clock), REVIEW_JOB)
        while run <= until:
            if self.earned(self.spend(run)) < self.tier:
                return run
            since = run - g.qualifying
            leaving = [record[P_CREATED] + g.qualifying for record in self.purchases if record[P_CREATED] > since]
            if not leaving:
                return run
            run = g.zones.job_at_or_after(tz, min(leaving), REVIEW_JOB)
        return None

    # -- the nightly jobs up to a moment --

    def jobs_until(self, until: int) -> None:
        """What the expiry, birthday and review jobs did up to `until`, in time order."""
        review = self.next_review(until) if self.tier else None
        birthdays = self.birthdays
        while True:
            expiry = NEVER
            if self.open_lots and self.open_lots[0].expires is not None:
                expiry = self.open_lots[0].expires + EXPIRY_JOB
            birthday = birthdays[self.birthday_next][0] if self.birthday_next < len(birthdays) else NEVER
            soonest = min(expiry, birthday, NEVER if review is None else review)
            if soonest > until:
                return
            self.clock = soonest
            if soonest == expiry:
                lot = self.open_lots[0]
                self.debit("expire", lot.remaining, "expiry", soonest, None, lot=lot)
            elif soonest == birthday:
                self.birthday_year = birthdays[self.birthday_next][1]
                self.birthday_next += 1
                bonus = self.g.tiers[self.tier].birthday_bonus
                if bonus:  # points.birthday_bonuses
                    expires = self.g.zones.expiry(soonest, self.home.timezone, self.g.rules.expiry_days)
                    self.credit("bonus", bonus, expires, "birthday", soonest, self.home.id)
            else:
                spend = self.spend(soonest)
                self.change_tier(self.earned(spend), soonest, "review", spend)
                review = self.next_review(until)

    def birthday_runs(self) -> list[tuple[int, int]]:
        """(run, year) of each birthday-bonus run that pays this member: the first nightly run in the birthday
        month (home store time) after registration, each year, up to now."""
        if self.birthday is None:
            return []
        g, tz = self.g, self.home.timezone
        month = self.birthday.month
        registered_day = g.zones.ordinal(tz, self.joined)
        runs = []
        for year in range(date.fromordinal(registered_day).year, g.now_dt.year + 1):
            first = date(year, month, 1).toordinal()
            last = first + calendar.monthrange(year, month)[1] - 1
            day = max(first, registered_day)
            if g.zones.midnight(tz, day) + BIRTHDAY_JOB < self.joined:
                day += 1
            if day > last:
                continue
            run = g.zones.midnight(tz, day) + BIRTHDAY_JOB
            if run <= g.now:
                runs.append((run, year))
        return runs

    # -- the events --

    def play(self):
        g, rng = self.g, self.rng
        r = rng.random
        ratios = g.ratios
        now = g.now
        p_ts, p_gross = g.p_ts, g.p_gross
        return_share, rating_share = ratios.return_share, ratios.rating_share
        first, end = g.m_off[self.index], g.m_off[self.index + 1]
        events = []  # (time, sequence, kind, payload), the sequence unique so that payloads are never compared
        for k in range(first, end):
            ts = p_ts[k]
            events.append((ts, len(events), "purchase", k))
            if r() < return_share:
                gross = p_gross[k]
                when = g.zones.job_at_or_after(g.stores[g.p_store[k]].timezone, ts + int(r() * 14 * DAY), 0)
                when += OPENS + int(r() * OPEN_SECONDS)  # at a till, on a later day
                if when < now:
                    if gross < 2 or r() < ratios.whole_return_share:
                        events.append((when, len(events), "return", (k, None)))
                    else:
                        part = max(1, min(gross - 1, int(gross * (0.1 + 0.6 * r()))))
                        events.append((when, len(events), "return", (k, part)))
                        if r() < ratios.second_return_share:
                            later = g.zones.job_at_or_after(g.stores[g.p_store[k]].timezone,
                                                            when + int(r() * 10 * DAY), 0)
                            later += OPENS + int(r() * OPEN_SECONDS)
                            if later < now:
                                rest = None if r() < 0.6 else max(1, int((gross - part) * (0.2 + 0.6 * r())))
                                events.append((later, len(events), "return", (k, rest)))
            if r() < rating_share:
                events.append((ts + 600 + int(r() * 2 * DAY), len(events), "rating", k))
        for referee in g.referees.get(self.index, ()):
            k = g.m_off[referee]
            if k < g.m_off[referee + 1]:
                events.append((p_ts[k], len(events), "referral", referee))
        for kind, share in (("adjust", ratios.adjustment_share), ("complaint", ratios.complaint_share)):
            if r() < share:
                when = self.joined + int(r() * (now - self.joined))
                when = g.zones.job_at_or_after(self.home.timezone, when, 0) + OPENS + int(r() * OPEN_SECONDS)
                if when < now:
                    events.append((when, len(events), kind, None))
        if len(events) > 1:
            events.sort()
        self.sequence = len(events)
        self.birthdays = self.birthday_runs()
        self.birthday_next = 0
        handlers = self.HANDLERS
        position = 0
        while position < len(events):
            ts, _, kind, payload = events[position]
            position += 1
            if ts >= now:
                continue
            self.jobs_until(ts)
            self.clock = ts
            follow = handlers[kind](self, ts, payload)
            if follow:
                for later, kind_later, payload_later in follow:
                    self.sequence += 1
                    bisect.insort(events, (later, self.sequence, kind_later, payload_later), lo=position)
        self.jobs_until(now)
        self._rows()
        return self

    def purchase(self, ts: int, k: int):
        """checkout.record_purchase at `ts`."""
        self.expire_due(ts)
        g, rng = self.g, self.rng
        rules = g.rules
        store = g.stores[g.p_store[k]]
        staff_id = g.p_staff[k]
        tier = g.tiers[self.tier]
        gross = g.p_gross[k]
        # checkout.quote's figures, from the functions it uses (quote itself builds a frozen dataclass, which
        # costs more than all the arithmetic; the redemption here is always within its limits).
        discount = checkout.member_discount(gross, tier.discount_bp)
        due = gross - discount
        redeem = 0
        if self.balance >= rules.redeem_minimum and rng.random() < g.ratios.redeem_share:
            most = checkout.max_redeemable(due, self.balance, rules)
            if most >= rules.redeem_minimum:
                if rng.random() < 0.5:
                    redeem = most
                else:
                    redeem = rules.redeem_minimum + int(rng.random() * (most - rules.redeem_minimum + 1))
                    rounded = redeem - redeem % 100
                    redeem = rounded if rounded >= rules.redeem_minimum else redeem
        redeemed_value = rules.points_value_fen(redeem)
        paid = due - redeemed_value
        earned = checkout.points_earned(paid, rules.earn_rate_milli, tier.multiplier_milli)
        purchase_id = g.first_purchase_id + k
        record = [purchase_id, ts, store, staff_id, tier.id, gross, tier.discount_bp, discount, redeem, redeemed_value,
                  paid, rules.earn_rate_milli, tier.multiplier_milli, earned, 0, 0, 0, 0, (), self.text(ts)]
        first_purchase = not self.purchases
        self.purchases.append(record)
        self.by_index[k] = record
        local_day = g.zones.ordinal(store.timezone, ts)
        day = store.index * 10_000_000 + local_day
        g.takings[day] = g.takings.get(day, 0) + paid
        if redeem:
            record[P_USES] = self.debit("redeem", redeem, "purchase_redeem", ts, store.id, staff_id, purchase_id)
        if earned:
            expires = g.zones.expiry_on(store.timezone, local_day, rules.expiry_days)
            self.credit("earn", earned, expires, "purchase_earn", ts, store.id, staff_id, purchase_id)
        if first_purchase and g.m_referrer[self.index] >= 0 and rules.referral_bonus:
            self.referral_rewarded_at = ts  # the referrer's bonus is posted in the referrer's own history
        spend = self.spend(ts)
        if spend >= g.next_threshold[self.tier]:
            earned = self.earned(spend)
            self.change_tier(earned, ts, "purchase", spend, purchase_id=purchase_id, staff_id=staff_id)

    def referral(self, ts: int, referee: int):
        """The bonus this member earns when a member they brought makes a first purchase (checkout)."""
        g = self.g
        rules = g.rules
        if not rules.referral_bonus:
            return
        k = g.m_off[referee]
        store = g.stores[g.p_store[k]]
        expires = g.zones.expiry(ts, store.timezone, rules.expiry_days)
        self.credit("bonus", rules.referral_bonus, expires, "referral", ts, store.id, g.p_staff[k],
                    g.first_purchase_id + k, related=g.first_member_id + referee)

    def give_back(self, ts: int, payload):
        """returns.record_return at `ts`."""
        g, rng = self.g, self.rng
        rules = g.rules
        k, amount = payload
        record = self.by_index.get(k)
        if record is None or record[P_RETURNED] >= record[P_GROSS]:
            return
        self.expire_due(ts)
        returnable = record[P_GROSS] - record[P_RETURNED]
        amount = returnable if amount is None else min(amount, returnable)
        if rng.random() < g.ratios.same_store_return_share:
            store = record[P_STORE]
        else:
            store = g.stores[g._pick_store(rng.random())]
        staff_id = store.cashier_ids[int(rng.random() * len(store.cashier_ids))]
        figures = return_rules.proportional(_PurchaseView(record), amount)
        short = return_rules.shortfall(self.balance + figures.points_restored, figures.points_reversed,
                                       figures.refund_fen, rules)
        return_id = g.next_id("returns")
        g.buffers["returns"].append((
            return_id, f"g{return_id:015d}", record[P_ID], self.member_id, store.id, staff_id, amount,
            figures.refund_fen, figures.points_restored, figures.points_reversed, short.points, short.deducted_fen,
            figures.refund_fen - short.deducted_fen, rules.shortfall_policy, self.text(ts)))
        record[P_RETURNED] += amount
        record[P_REFUNDED] += figures.refund_fen
        record[P_REVERSED] += figures.points_reversed
        record[P_RESTORED] += figures.points_restored
        if figures.points_restored:  # returns._restore
            floor = g.zones.expiry(ts, store.timezone, 30)
            portions, left = [], figures.points_restored
            for use in record[P_USES]:
                take = min(left, use.points - use.restored)
                if take:
                    use.restored += take
                    expires = use.lot.expires
                    portions.append((take, None if expires is None else max(expires, floor)))
                    left -= take
                if not left:
                    break
            if left:
                portions.append((left, g.zones.expiry(ts, store.timezone, rules.expiry_days)))
            self.credit_portions("restore", portions, "return_restore", ts, store.id, staff_id, record[P_ID],
                                 return_id)
        to_reverse = figures.points_reversed - short.covered_points
        if to_reverse:
            self.debit("reverse", to_reverse, "return_reverse", ts, store.id, staff_id, record[P_ID], return_id,
                       allow_negative=True)
        spend_after = self.spend(ts)
        in_window = record[P_CREATED] > ts - g.qualifying
        spend_before = spend_after + (figures.refund_fen if in_window else 0)
        threshold = g.tiers[self.tier].threshold_fen
        if spend_after < threshold <= spend_before:  # tiers.downgrade_after_return
            self.change_tier(self.earned(spend_after), ts, "return", spend_after, return_id=return_id,
                             staff_id=staff_id)

    def adjust(self, ts: int, _payload):
        """points.adjust by the home store's manager: mostly credits, a debit only within the balance."""
        self.expire_due(ts)
        g, rng = self.g, self.rng
        manager, store_id = self.home.manager_id, self.home.id
        before = self.balance
        key = f"g-adjust-{g.ids['ledger_entries']}"
        if rng.random() < 0.7 or self.balance < 100:
            points = 50 * (1 + int(rng.random() * 40))
            note = ADJUST_CREDITS[int(rng.random() * len(ADJUST_CREDITS))]
            expires = g.zones.expiry(ts, self.home.timezone, g.rules.expiry_days)
            self.credit("adjust", points, expires, "adjustment", ts, store_id, manager, note=note, key=key)
        else:
            points = -max(1, int(self.balance * (0.1 + 0.5 * rng.random())))
            note = ADJUST_DEBITS[int(rng.random() * len(ADJUST_DEBITS))]
            self.debit("adjust", -points, "adjustment", ts, store_id, manager, note=note, key=key)
        g.audit(action="points.adjust", at=ts, staff_id=manager, role="manager", store_id=store_id,
                target=f"member:{self.card}", before={"balance": before},
                after={"balance": self.balance, "points": points, "reason": note})

    def rating(self, ts: int, k: int):
        """complaints.rate_visit: a 1 or 2 opens a follow-up complaint."""
        g, rng = self.g, self.rng
        record = self.by_index.get(k)
        if record is None:
            return
        u = rng.random()
        score = 1 if u < 0.03 else 2 if u < 0.08 else 3 if u < 0.2 else 4 if u < 0.5 else 5
        comments = RATING_COMMENTS[score]
        comment = comments[int(rng.random() * len(comments))]
        rating_id = g.next_id("visit_ratings")
        store = record[P_STORE]
        complaint_id, follow = None, ()
        if score <= 2:  # the low scores always come with a comment here, which becomes the description
            complaint_id, follow = _complaint(g, rng, store, ts, member_id=self.member_id, purchase_id=record[P_ID],
                                              channel="survey", history=self, category="other",
                                              severity="normal", description=comment)
        g.buffers["visit_ratings"].append((rating_id, record[P_ID], self.member_id, store.id, score, comment,
                                           complaint_id, self.fmt(ts)))
        return follow

    def complaint(self, ts: int, _payload):
        """complaints.file_complaint, about one of the member's purchases half the time, and what followed."""
        g, rng = self.g, self.rng
        record = None
        if self.purchases and rng.random() < 0.5:
            record = self.purchases[int(rng.random() * len(self.purchases))]
        store = record[P_STORE] if record else self.home
        u = rng.random()
        channel = "counter" if u < 0.45 else "member" if u < 0.8 else "phone"
        _, follow = _complaint(g, rng, store, ts, member_id=self.member_id,
                               purchase_id=record[P_ID] if record else None, channel=channel, history=self)
        return follow

    def goodwill(self, ts: int, payload):
        """complaints.grant_goodwill: a bonus linked to the complaint."""
        g = self.g
        complaint_id, points, staff_id, store = payload
        expires = g.zones.expiry(ts, store.timezone, g.rules.expiry_days)
        self.credit("bonus", points, expires, "goodwill", ts, store.id, staff_id, complaint_id=complaint_id,
                    key=f"g-goodwill-{complaint_id}")

    # -- rows whose figures are final only at the end --

    def _rows(self) -> None:
        g = self.g
        member_id = self.member_id
        purchase_rows = g.buffers["purchases"]
        for record in self.purchases:
            purchase_id, store = record[P_ID], record[P_STORE]
            purchase_rows.append((purchase_id, f"g{purchase_id:015d}", member_id, store.id, record[P_STAFF],
                                  f"{store.code}-{purchase_id:010d}", record[P_TIER], *record[P_GROSS:P_USES],
                                  record[P_TEXT]))
        lot_rows = g.buffers["point_lots"]
        expiry_text = self.expiry_text
        for lot in self.lots:
            lot_rows.append((lot.id, member_id, lot.entry_id, lot.points, lot.remaining, expiry_text(lot.expires),
                             lot.created))
        use_rows = g.buffers["lot_uses"]
        for use in self.uses:
            use_rows.append((use.id, use.entry_id, use.lot.id, use.points, use.restored))

    HANDLERS = {"purchase": purchase, "return": give_back, "rating": rating, "referral": referral, "adjust": adjust,
                "complaint": complaint, "goodwill": goodwill}


def _complaint(gen: Generator, rng: random.Random, store: _Store, created: int, *, member_id, purchase_id, channel,
               history: _MemberHistory | None, category: str | None = None, severity: str | None = None,
               description: str | None = None):
    """One complaint and its timeline up to now: open -> acknowledged -> resolved -> closed, with replies, a
    reopening, a rating and goodwill points now and then. Returns (id, events for the member's history)."""
    g, r, now, fmt = gen, rng.random, gen.now, gen.fmt
    if category is None:
        category = tuple(COMPLAINTS)[int(r() * len(COMPLAINTS))]
    if description is None:
        texts = COMPLAINTS[category]
        description = texts[int(r() * len(texts))]
    if severity is None:
        u = r()
        severity = "low" if u < 0.3 else "normal" if u < 0.85 else "high"
    complaint_id = g.next_id("complaints")
    manager = store.manager_id
    cashier = store.cashier_ids[int(r() * len(store.cashier_ids))]
    target = f"complaint:{complaint_id}"
    state = {"status": "open", "first_response_at": None, "resolved_at": None, "closed_at": None, "rating": None,
             "reopened_at": None, "assigned_to_id": None}
    follow = []

    def event(kind, at, *, body=None, visible=False, staff_id=None, by_member=False):
        g.buffers["complaint_events"].append((g.next_id("complaint_events"), complaint_id, kind, body,
                                              1 if visible else 0, staff_id, member_id if by_member else None,
                                              fmt(at)))
        after = {"status": state["status"]}
        if by_member:
            after["member_id"] = member_id
        if body and not visible:
            after["text"] = body
        role = "member" if by_member else ("manager" if staff_id == manager else "cashier")
        g.audit(action=f"complaint.{kind}", at=at, staff_id=staff_id, member_id=member_id if by_member else None,
                role=role, store_id=store.id, target=target, after=after)

    filed_by_member = channel in ("member", "survey")
    staff_id = None if filed_by_member else (cashier if channel == "counter" else manager)
    event("opened", created, body=description, visible=True, staff_id=staff_id, by_member=filed_by_member)
    waiting = r() < 0.03  # left in the queue, overdue: never answered, or answered and never resolved
    at = now if waiting and r() < 0.5 else created + 1800 + int(r() * 40 * 3600)
    if at < now:
        if r() < 0.2:
            state["assigned_to_id"] = manager
            event("assigned", at - 600, body=store.manager_name, staff_id=manager)
        if member_id is not None and r() < 0.4:
            state["status"] = "acknowledged"
            state["first_response_at"] = at
            event("reply", at, body=REPLIES[int(r() * len(REPLIES))], visible=True, staff_id=manager)
        else:
            state["status"] = "acknowledged"
            state["first_response_at"] = at
            event("acknowledged", at, visible=True, staff_id=manager)
        if r() < 0.15:
            event("note", at + 300, body=NOTES[int(r() * len(NOTES))], staff_id=manager)
        resolved = now if waiting else at + 2 * 3600 + int(r() * 80 * 3600)
        while resolved < now and state["status"] in ("open", "acknowledged"):
            state["status"] = "resolved"
            state["resolved_at"] = resolved
            event("resolved", resolved, body=RESOLUTIONS[int(r() * len(RESOLUTIONS))], visible=True,
                  staff_id=manager)
            if member_id is not None and state["reopened_at"] is None and r() < 0.06:
                reopened = resolved + 3600 + int(r() * 5 * DAY)
                if reopened < now:
                    state.update(status="open", reopened_at=reopened, resolved_at=None, rating=None)
                    event("reopened", reopened, body="问题没有解决 Not solved", visible=True, by_member=True)
                    resolved = reopened + 4 * 3600 + int(r() * 44 * 3600)
                    continue
            break
        if state["status"] == "resolved":
            resolved = state["resolved_at"]
            if member_id is not None and history is not None and r() < 0.15:
                granted = resolved + 600
                if granted < now:
                    points = 50 * (1 + int(r() * 10))
                    follow.append((granted, "goodwill", (complaint_id, points, manager, store)))
                    event("goodwill", granted, body=str(points), visible=True, staff_id=manager)
            if member_id is not None and r() < 0.45:
                rated = resolved + 3600 + int(r() * 3 * DAY)
                if rated < now:
                    u = r()
                    state["rating"] = 1 if u < 0.1 else 2 if u < 0.2 else 3 if u < 0.35 else 4 if u < 0.6 else 5
                    event("rated", rated, body=str(state["rating"]), visible=True, by_member=True)
            closed = resolved + 7 * DAY + int(r() * 3 * DAY)
            if closed < now and r() < 0.8:
                state["status"] = "closed"
                state["closed_at"] = closed
                event("closed", closed, visible=True, staff_id=manager)
    g.buffers["complaints"].append((
        complaint_id, member_id, store.id, purchase_id, category, severity, description, state["status"], channel,
        staff_id, state["assigned_to_id"], fmt(state["first_response_at"]), fmt(state["resolved_at"]),
        fmt(state["closed_at"]), state["rating"], fmt(state["reopened_at"]), fmt(created)))
    return complaint_id, follow


# --- writing --------------------------------------------------------------------------------------------

def _column_list(columns) -> str:
    return ", ".join(f'"{column}"' for column in columns)


class SqliteWriter:
    """Rows into SQLite through the raw sqlite3 connection: one transaction, executemany, checks off for the load.

    During the load synchronous is OFF, and so are foreign-key and CHECK enforcement (a CHECK costs SQLite more
    than the insert itself): before the commit, PRAGMA quick_check and foreign_key_check go through each loaded
    table once, which verifies every CHECK, NOT NULL and foreign key, and the run fails if anything is wrong. The pragmas go back to what they were. With
    drop_indexes, the secondary indexes of the loaded tables are dropped first and created again from their own
    SQL before the commit, which also verifies the unique ones."""

    def __init__(self, raw, *, drop_indexes: bool = True):
        self.raw = raw
        self.conn = raw.driver_connection
        self.cursor = self.conn.cursor()
        self.drop_indexes = drop_indexes
        self.statements: dict[str, str] = {}
        self.saved: dict[str, object] = {}
        self.indexes: list[str] = []
        self.open = False

    def fetch(self, sql: str) -> list[tuple]:
        return self.cursor.execute(sql).fetchall()

    def begin(self) -> None:
        for pragma in ("foreign_keys", "synchronous", "cache_size", "ignore_check_constraints"):
            self.saved[pragma] = self.cursor.execute(f"PRAGMA {pragma}").fetchone()[0]
        self.cursor.execute("PRAGMA foreign_keys=OFF")
        self.cursor.execute("PRAGMA ignore_check_constraints=ON")
        self.cursor.execute("PRAGMA synchronous=OFF")
        self.cursor.execute("PRAGMA cache_size=-1000000")  # 1 GB
        self.cursor.execute("BEGIN IMMEDIATE")
        self.open = True

    def prepare(self) -> None:
        """Called once the database is known to be empty: drop the secondary indexes when asked to."""
        if not self.drop_indexes:
            return
        placeholders = ", ".join("?" for _ in TABLES)
        for name, sql in self.cursor.execute(
                f"SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
                f"AND tbl_name IN ({placeholders}) ORDER BY name", TABLES).fetchall():
            self.indexes.append(sql)
            self.cursor.execute(f'DROP INDEX "{name}"')

    def write(self, table: str, columns, rows) -> None:
        statement = self.statements.get(table)
        if statement is None:
            statement = self.statements[table] = (
                f"INSERT INTO {table} ({_column_list(columns)}) VALUES ({', '.join('?' for _ in columns)})")
        self.cursor.executemany(statement, rows)

    def finish(self, progress=lambda text: None) -> None:
        started = wallclock.monotonic()
        for sql in self.indexes:
            self.cursor.execute(sql)
        if self.indexes:
            progress(f"{len(self.indexes)} indexes created again ({wallclock.monotonic() - started:.1f} s)")
        started = wallclock.monotonic()
        self.cursor.execute("PRAGMA ignore_check_constraints=OFF")
        problems = [row[0] for table in TABLES for row in self.cursor.execute(f"PRAGMA quick_check({table})")
                    if row[0] != "ok"]
        problems += [f"{table} row {rowid} refers to a missing {parent}" for name in TABLES
                     for table, rowid, parent, _ in self.cursor.execute(f"PRAGMA foreign_key_check({name})")]
        if problems:
            raise GenerateError("The generated rows break the schema: " + "; ".join(problems[:5]))
        progress(f"constraints checked ({wallclock.monotonic() - started:.1f} s)")
        self.cursor.execute("COMMIT")
        self.open = False
        self._restore()
        started = wallclock.monotonic()
        self.cursor.execute("ANALYZE")  # the query planner's statistics, as PostgreSQL's ANALYZE after its load
        progress(f"tables analysed ({wallclock.monotonic() - started:.1f} s)")
        self.cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def abort(self) -> None:
        if self.open:
            self.cursor.execute("ROLLBACK")
            self.open = False
        self._restore()

    def _restore(self) -> None:
        for pragma, value in self.saved.items():
            self.cursor.execute(f"PRAGMA {pragma}={int(value)}")
        self.saved = {}

    def size(self) -> int:
        path = self.fetch("PRAGMA database_list")[0][2]
        return sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))

    def close(self) -> None:
        self.cursor.close()
        self.raw.close()


class PostgresWriter:
    """Rows into PostgreSQL with COPY, in one transaction.

    The loaded tables are locked; their foreign keys are dropped for the load and added again before the commit,
    with their own definitions (pg_get_constraintdef), which checks every reference in one pass per key. With
    drop_indexes, the secondary indexes are dropped and created again the same way (pg_indexes.indexdef). CHECK
    constraints stay: COPY checks them row by row. The id sequences are set past the new rows, and the tables
    analysed, at the end."""

    def __init__(self, raw, *, drop_indexes: bool = True):
        self.raw = raw
        self.conn = raw.driver_connection
        self.drop_indexes = drop_indexes
        self.statements: dict[str, str] = {}
        self.foreign_keys: list[tuple[str, str, str]] = []
        self.indexes: list[tuple[str, str]] = []
        self.open = False

    def fetch(self, sql: str, params=None) -> list[tuple]:
        with self.conn.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    def begin(self) -> None:
        self.conn.rollback()
        self.open = True
        self.fetch("SET LOCAL TIME ZONE 'UTC'")
        self.fetch(f"LOCK TABLE {', '.join(TABLES)} IN SHARE ROW EXCLUSIVE MODE")

    def prepare(self) -> None:
        self.foreign_keys = self.fetch(
            "SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid) FROM pg_constraint c "
            "WHERE c.contype = 'f' AND c.conrelid = ANY(%s::regclass[]) ORDER BY 1, 2", (list(TABLES),))
        for table, name, _definition in self.foreign_keys:
            self.fetch(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
        if self.drop_indexes:
            self.indexes = self.fetch(
                "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.schemaname = current_schema() "
                "AND i.tablename = ANY(%s) AND NOT EXISTS (SELECT 1 FROM pg_constraint c "
                "WHERE c.conindid = format('%%I.%%I', i.schemaname, i.indexname)::regclass) ORDER BY 1",
                (list(TABLES),))
            for name, _definition in self.indexes:
                self.fetch(f'DROP INDEX "{name}"')

    def write(self, table: str, columns, rows) -> None:
        statement = self.statements.get(table)
        if statement is None:
            statement = self.statements[table] = f"COPY {table} ({_column_list(columns)}) FROM STDIN"
        with self.conn.cursor() as cursor, cursor.copy(statement) as copy:
            write_row = copy.write_row
            for row in rows:
                write_row(row)

    def finish(self, progress=lambda text: None) -> None:
        started = wallclock.monotonic()
        for _name, definition in self.indexes:
            self.fetch(definition)
        if self.indexes:
            progress(f"{len(self.indexes)} indexes created again ({wallclock.monotonic() - started:.1f} s)")
        started = wallclock.monotonic()
        for table, name, definition in self.foreign_keys:
            self.fetch(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
        progress(f"{len(self.foreign_keys)} foreign keys added again and checked "
                 f"({wallclock.monotonic() - started:.1f} s)")
        self.fetch("SELECT " + ", ".join(
            f"setval(pg_get_serial_sequence('{table}', 'id'), COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)"
            for table in TABLES))
        self.conn.commit()
        self.open = False
        started = wallclock.monotonic()
        self.fetch("ANALYZE " + ", ".join(TABLES))
        self.conn.commit()
        progress(f"tables analysed ({wallclock.monotonic() - started:.1f} s)")

    def abort(self) -> None:
        if self.open:
            self.conn.rollback()
            self.open = False

    def size(self) -> int:
        return int(self.fetch("SELECT pg_database_size(current_database())")[0][0])

    def close(self) -> None:
        self.raw.close()


def open_writer(engine, *, drop_indexes: bool | None = None):
    """The fast writer for the app's database (a connection of its own from the engine's pool)."""
    name = engine.dialect.name
    if name not in ("sqlite", "postgresql"):
        raise GenerateError(f"generate writes to SQLite or PostgreSQL, not {name}.")
    options = {} if drop_indexes is None else {"drop_indexes": drop_indexes}
    raw = engine.raw_connection()
    return SqliteWriter(raw, **options) if name == "sqlite" else PostgresWriter(raw, **options)


class _WriterThread:
    """Hands batches to a thread that writes them, so that the database works while the next rows are computed
    (sqlite3 and libpq let go of the GIL while the database works). The first error stops the run."""

    def __init__(self, write, depth: int = 6):
        self._write = write
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="generate-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is None:
                try:
                    self._write(*item)
                except BaseException as error:  # handed to the generating thread
                    self._error = error

    def write(self, table: str, columns, rows) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put((table, columns, rows))

    def close(self) -> None:
        """Wait for every batch to be written; raise what went wrong, if anything did."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self._error is not None:
            raise self._error


class GenerateError(Exception):
    """The database cannot take generated data (not empty, not migrated, not a database generate knows)."""


def generate_into(engine, *, members: int, stores: int, years: int, seed: int, now: datetime, rules: Rules,
                  password_hash: str, progress=lambda text: None, ratios: Ratios = Ratios(),
                  drop_indexes: bool | None = None) -> Summary:
    """Generate a chain into the empty database behind `engine`, in one transaction; the Summary says what."""
    writer = open_writer(engine, drop_indexes=drop_indexes)
    try:
        writer.begin()
        try:
            context = read_context(writer.fetch)
        except Exception as error:  # a table missing: not migrated
            raise GenerateError(f"The database is not ready ({error}). Run `flask db upgrade` first.") from None
        if context.refusal:
            raise GenerateError(context.refusal)
        writer.prepare()
        thread = _WriterThread(writer.write)
        try:
            generator = Generator(context, members=members, stores=stores, years=years, seed=seed, now=now,
                                  rules=rules, write=thread.write, progress=progress, password_hash=password_hash,
                                  ratios=ratios)
            summary = generator.run()
        finally:
            thread.close()
        writer.finish(progress=progress)
        summary.bytes = writer.size()
        summary.seconds = generator.elapsed()
    except BaseException:
        writer.abort()
        raise
    finally:
        writer.close()
    return summary


def _moment(value: str | None) -> datetime:
    if not value:
        return datetime.now(UTC).replace(microsecond=0)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time, e.g. 2026-06-15T12:00+08:00",
                                 param_hint="--now") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC).replace(microsecond=0)


@click.command("generate")
@click.option("--members", "member_count", type=click.IntRange(min=1), required=True,
              help="How many members (about 5 purchases each over two years).")
@click.option("--stores", "store_count", type=click.IntRange(min=1, max=999), default=20, show_default=True,
              help="Stores in the chain, counting those already in the database.")
@click.option("--years", type=click.IntRange(min=1, max=10), default=2, show_default=True,
              help="Years of history up to --now.")
@click.option("--seed", type=int, default=None, help="Random seed (printed when not given), for the same data again.")
@click.option("--now", "now_text", default=None, metavar="ISO-8601", help="The end of the history (default: now).")
@with_appcontext
def generate_command(member_count: int, store_count: int, years: int, seed: int | None, now_text: str | None):
    """Fill an EMPTY, migrated database with a realistic chain: stores, staff, members and years of purchases,
    returns, points, tiers and complaints, written in bulk (SQLite: executemany; PostgreSQL: COPY)."""
    from .extensions import db
    from .staff import hash_password

    now = _moment(now_text)
    if seed is None:
        seed = secrets.randbelow(2**31)
    rules = load_rules(db.session)
    db.session.remove()
    click.echo(f"Generating {member_count:,} members, {store_count} stores, {years} years up to {now.isoformat()} "
               f"with seed {seed} into {db.engine.url.render_as_string(hide_password=True)}")
    password = secrets.token_urlsafe(12)
    try:
        summary = generate_into(db.engine, members=member_count, stores=store_count, years=years, seed=seed,
                                now=now, rules=rules, password_hash=hash_password(password), progress=click.echo)
    except GenerateError as error:
        raise click.ClickException(str(error)) from None
    from . import rollups
    from .database import declare_write_intent

    counting = wallclock.monotonic()
    declare_write_intent()
    rollups.rebuild(db.session)  # the bulk load went around the session that keeps the dashboard's totals
    db.session.commit()
    click.echo(f"The dashboard's totals counted in {wallclock.monotonic() - counting:.1f} s.")
    click.echo(f"Done in {summary.seconds:.1f} s: {sum(summary.rows.values()):,} rows, database "
               f"{summary.bytes / 2**20:,.0f} MiB.")
    for table, count in summary.rows.items():
        if count:
            click.echo(f"  {table:18} {count:>12,}")
    click.echo("  tiers: " + ", ".join(f"{code} {count:,}" for code, count in summary.tiers.items()))
    click.echo("  ledger: " + ", ".join(f"{kind} {count:,}" for kind, count in summary.ledger_kinds.items()))
    click.echo(f"Staff ({summary.admin_username}, sNNN-manager, sNNN-cashierN) sign in with the password {password}")
