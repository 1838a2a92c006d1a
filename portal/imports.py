"""Importing existing members, with their opening balances, from a CSV file (a spreadsheet's "Save as CSV").

An upload is checked as a whole first (size, encoding, header) and kept as one `MemberImport` row holding the
decoded text. It is then worked through in steps of CHUNK_ROWS rows, each step one transaction under the
import's row lock, so a progress bar can follow it and a repeated or concurrent step never does a row twice:
the step starts from `processed_rows`, which only the lock holder moves on.

Each row becomes a member (created the way the till registers one, without a referrer or activation code)
with one ledger credit for the opening balance, or is skipped (the phone or card is already a member: this is
what makes importing the same file twice add nothing), or is refused with a reason code and its parameters,
rendered in the reader's language. A dry run decides every row exactly the same way but writes no member or
ledger row.
"""
from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache

from flask_babel import lazy_gettext as _l
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from . import audit, ledger
from .cards import is_valid_card_number, new_card_number
from .database import lock_row
from .members import check_birthday, local_date, name_key
from .models import LedgerKind, Member, MemberImport, Staff, Store, Tier
from .money import normalise_text
from .phones import PhoneError, national_digits, normalise_phone
from .refusals import Refusal
from .rules import Rules
from .spreadsheet import neutralise, restore

ImportRefusal = Refusal  # a file that cannot be imported at all; nothing is stored

CHUNK_ROWS = 200
MAX_OPENING_POINTS = 1_000_000  # like a manual adjustment: more than this is a typo, not a balance
MAX_NAME = 100
MAX_EMAIL = 254
MAX_SHOWN_VALUE = 40  # a refused cell is quoted in the reason up to this many characters
PRIVACY_VERSION = "import"  # what the members' privacy agreement is recorded as
LEDGER_REASON = "opening_balance"
AUDIT_ACTION = "members.import"

# Column names a file may use (compared casefolded, spaces and hyphens as underscores), English and Chinese.
COLUMNS: dict[str, tuple[str, ...]] = {
    "name": ("name", "姓名", "会员姓名"),
    "phone": ("phone", "mobile", "手机", "手机号", "手机号码"),
    "points": ("points", "opening_balance", "积分", "积分余额"),
    "birthday": ("birthday", "生日"),
    "email": ("email", "e_mail", "邮箱", "电子邮箱"),
    "marketing_consent": ("marketing_consent", "营销同意"),
    "card_number": ("card_number", "卡号", "会员卡号"),
}
REQUIRED = ("name", "phone")
COLUMN_LABELS = {"name": "name / 姓名", "phone": "phone / 手机", "points": "points / 积分",
                 "birthday": "birthday / 生日", "email": "email / 邮箱",
                 "marketing_consent": "marketing_consent / 营销同意", "card_number": "card_number / 卡号"}
YES = {"yes", "y", "1", "true", "是", "同意"}
NO = {"no", "n", "0", "false", "否", "不同意", ""}

# Why a row was refused or skipped; `params` fill the placeholders. Rendered when read, in the reader's language.
REASONS = {
    "name_missing": _l("The name is empty."),
    "name_too_long": _l("The name is longer than %(max)s characters."),
    "phone_missing": _l("The phone is empty."),
    "phone_invalid": _l("“%(value)s” is not a mobile phone number."),
    "phone_repeated": _l("The same phone as row %(first)s, which counts instead."),
    "points_invalid": _l("The points “%(value)s” are not a whole number."),
    "points_negative": _l("An opening balance cannot be negative (%(value)s)."),
    "points_too_many": _l("More than %(max)s points: check the opening balance."),
    "birthday_invalid": _l("“%(value)s” is not a date; write it like 1990-03-25 or 1990/3/25."),
    "birthday_future": _l("The birthday %(value)s is in the future."),
    "birthday_implausible": _l("Check the year of the birthday %(value)s."),
    "guardian_required": _l("The member is under %(age)s and needs a guardian's consent: register them at the till."),
    "email_invalid": _l("“%(value)s” is not an e-mail address."),
    "consent_invalid": _l("Marketing consent “%(value)s”: write yes or no."),
    "card_invalid": _l("The card number “%(value)s” is not 10 digits with a matching check digit."),
    "card_repeated": _l("The same card number as row %(first)s, which counts instead."),
    "card_closed": _l("This card number belonged to an account that was deleted."),
    "own_phone": _l("This is your own phone number: you cannot credit points to it."),
    "already_member": _l("Already a member: nothing was added."),
}


def reason_text(code: str, params: dict | None = None) -> str:
    """A row's reason in the reader's language (call within a request or with a forced locale)."""
    template = str(REASONS.get(code, code))
    try:
        return template % (params or {}) if params else template
    except (KeyError, TypeError, ValueError):
        return template


# --- the file -------------------------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def decode(data: bytes) -> tuple[str, str]:
    """The text of an upload and its encoding: UTF-8 (with or without a BOM), else GB18030 (a superset of the
    GBK that Excel in China saves). Anything else is refused, as is anything that is not text."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ImportRefusal("file", _l("The file is in UTF-16. In the spreadsheet, save it as “CSV UTF-8” "
                                       "(or plain CSV) and upload that."), "unsupported_encoding")
    text = encoding = None
    if data.startswith(codecs.BOM_UTF8):
        candidates = ("utf-8-sig",)
    else:
        candidates = ("utf-8", "gb18030")
    for candidate in candidates:
        try:
            text, encoding = data.decode(candidate), candidate
            break
        except UnicodeDecodeError:
            continue
    if text is None or _CONTROL.search(text):
        raise ImportRefusal("file", _l("This is not a CSV file in UTF-8 or GBK. In the spreadsheet, save it as "
                                       "“CSV UTF-8” (or plain CSV) and upload that."), "unsupported_encoding")
    return text, encoding


def _header_key(cell: str) -> str:
    text = unicodedata.normalize("NFKC", cell).strip().strip("*").strip().casefold()
    return re.sub(r"[\s\-]+", "_", text)


_ALIASES = {_header_key(alias): column for column, aliases in COLUMNS.items() for alias in aliases}


def _delimiter(text: str) -> str:
    """Comma, unless the header line has none and is clearly separated by tabs or semicolons."""
    first = text.split("\n", 1)[0]
    if "," in first:
        return ","
    for candidate in ("\t", ";"):
        if candidate in first:
            return candidate
    return ","


@dataclass
class Sheet:
    """A file's columns (column name -> position) and its data rows as (spreadsheet row number, cells)."""

    header: list[str]
    columns: dict[str, int]
    rows: list[tuple[int, list[str]]]
    ignored: list[str] = field(default_factory=list)


def read_sheet(text: str) -> Sheet:
    """Parse the CSV text: the header names the columns, the rows are numbered as a spreadsheet numbers them
    (header = row 1), and blank rows are passed over. Refuses a file without the required columns or rows."""
    if not text.strip():
        raise ImportRefusal("file", _l("The file is empty."), "empty_file")
    try:
        records = list(csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(text)))
    except csv.Error:
        raise ImportRefusal("file", _l("The file cannot be read as CSV. Save it from the spreadsheet as CSV "
                                       "and upload it again."), "unreadable") from None
    header = records[0] if records else []
    columns: dict[str, int] = {}
    ignored = []
    for position, cell in enumerate(header):
        column = _ALIASES.get(_header_key(cell))
        if column is None:
            if cell.strip():
                ignored.append(cell.strip())
            continue
        if column in columns:
            raise ImportRefusal("file", _l("Two columns mean the same thing: %(column)s.",
                                           column=COLUMN_LABELS[column]), "repeated_column")
        columns[column] = position
    missing = [COLUMN_LABELS[column] for column in REQUIRED if column not in columns]
    if missing:
        raise ImportRefusal("file", _l("The first row must name the columns. Missing: %(missing)s.",
                                       missing=", ".join(missing)), "missing_columns")
    rows = [(number, cells) for number, cells in enumerate(records[1:], start=2)
            if any(cell.strip() for cell in cells)]
    if not rows:
        raise ImportRefusal("file", _l("The file has no rows under its header."), "no_rows")
    return Sheet(header, columns, rows, ignored)


def _cell(sheet: Sheet, cells: list[str], column: str) -> str:
    position = sheet.columns.get(column)
    if position is None or position >= len(cells):
        return ""
    value = cells[position]
    return normalise_text(restore(value))  # a cell neutralised by our own refused-rows download comes back


def size_label(size: int) -> str:
    """1.9 MB, 980 KB: a file size as people read it (the units are the same in Chinese)."""
    if size >= 1_048_576:
        return f"{size / 1_048_576:.1f} MB"
    return f"{max(1, round(size / 1024)):,} KB"


def too_large(max_bytes: int) -> ImportRefusal:
    return ImportRefusal("file", _l("The file is larger than %(limit)s. Split it and import the parts one after "
                                    "the other.", limit=size_label(max_bytes)), "too_large")


def start_import(session: Session, *, data: bytes, filename: str | None, store: Store | None, staff: Staff,
                 dry_run: bool, now: datetime, max_bytes: int, creation_key: str | None = None) -> MemberImport:
    """Check an upload as a whole and keep it as an import to be worked through in steps.

    A `creation_key` seen before (the same form sent twice) returns that import. Raises ImportRefusal (field
    "file" or "store_id") and stores nothing when the file cannot be imported at all."""
    if creation_key:
        earlier = session.scalars(select(MemberImport).where(MemberImport.creation_key == creation_key)).first()
        if earlier is not None:
            return earlier
    if store is None:
        raise ImportRefusal("store_id", _l("Choose the store the members count as registered at."), "no_store")
    if not filename and not data:
        raise ImportRefusal("file", _l("Choose a CSV file to import."), "no_file")
    if len(data) > max_bytes:
        raise too_large(max_bytes)
    if not data:
        raise ImportRefusal("file", _l("The file is empty."), "empty_file")
    text, encoding = decode(data)
    sheet = read_sheet(text)
    job = MemberImport(
        store_id=store.id, staff_id=staff.id, creation_key=creation_key,
        filename=normalise_text(filename or "import.csv")[:255] or "import.csv",
        file_sha256=hashlib.sha256(data).hexdigest(), encoding=encoding, dry_run=dry_run, status="pending",
        content=text, total_rows=len(sheet.rows), processed_rows=0, created_count=0, skipped_count=0,
        refused_count=0, points_total=0, report="[]", created_at=now,
    )
    try:
        with session.begin_nested():
            session.add(job)
            session.flush()
    except IntegrityError:  # the same form, sent twice at once: the other request stored it
        if creation_key:
            earlier = session.scalars(select(MemberImport).where(MemberImport.creation_key == creation_key)).first()
            if earlier is not None:
                return earlier
        raise
    return job


def repeat_for_real(session: Session, dry: MemberImport, *, staff: Staff, now: datetime,
                    creation_key: str | None = None) -> MemberImport:
    """After a finished dry run: the same file as a real import (a new import of its own)."""
    if creation_key:
        earlier = session.scalars(select(MemberImport).where(MemberImport.creation_key == creation_key)).first()
        if earlier is not None:
            return earlier
    if not dry.dry_run or dry.status != "done":
        raise ImportRefusal(None, _l("Only a finished dry run can be run for real."), "not_a_finished_dry_run")
    job = MemberImport(
        store_id=dry.store_id, staff_id=staff.id, creation_key=creation_key, filename=dry.filename,
        file_sha256=dry.file_sha256, encoding=dry.encoding, dry_run=False, status="pending", content=dry.content,
        total_rows=dry.total_rows, processed_rows=0, created_count=0, skipped_count=0, refused_count=0,
        points_total=0, report="[]", created_at=now,
    )
    session.add(job)
    session.flush()
    return job


def lock(session: Session, import_id: int) -> MemberImport | None:
    """Load an import for working on it (see database.lock_row)."""
    return lock_row(session, MemberImport, import_id)


# --- one row --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    """A row that passed every check on its own."""

    number: int
    name: str
    phone: str  # E.164
    points: int
    birthday: date | None
    email: str | None
    marketing_consent: bool
    card_number: str | None


class RowRefused(Exception):
    def __init__(self, code: str, **params):
        super().__init__(code)
        self.code = code
        self.params = {name: str(value) for name, value in params.items()}


def _shown(value: str) -> str:
    return value if len(value) <= MAX_SHOWN_VALUE else value[:MAX_SHOWN_VALUE - 1] + "…"


_POINTS = re.compile(r"^([0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)$")
_DATE = re.compile(r"^(\d{4})\s*(?:[-/.]|年)\s*(\d{1,2})\s*(?:[-/.]|月)\s*(\d{1,2})\s*日?$")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def parse_phone(text: str) -> str:
    if not text:
        raise RowRefused("phone_missing")
    try:
        return normalise_phone(text)
    except PhoneError:
        raise RowRefused("phone_invalid", value=_shown(text)) from None


def parse_points(text: str) -> int:
    compact = text.replace(" ", "")
    if not compact:
        return 0
    if compact.startswith("-") and _POINTS.match(compact[1:]):
        raise RowRefused("points_negative", value=_shown(compact))
    if not _POINTS.match(compact):
        raise RowRefused("points_invalid", value=_shown(text))
    points = int(compact.replace(",", ""))
    if points > MAX_OPENING_POINTS:
        raise RowRefused("points_too_many", max=f"{MAX_OPENING_POINTS:,}")
    return points


def parse_birthday(text: str, *, today: date, guardian_age: int) -> date | None:
    if not text:
        return None
    match = _DATE.match(text)
    try:
        birthday = date(*(int(part) for part in match.groups())) if match else None
    except ValueError:
        birthday = None
    if birthday is None:
        raise RowRefused("birthday_invalid", value=_shown(text))
    try:
        check_birthday(birthday, today=today, guardian_consent=False, guardian_age=guardian_age)
    except Refusal as refusal:
        if refusal.code == "guardian_consent_required":
            raise RowRefused("guardian_required", age=guardian_age) from None
        raise RowRefused("birthday_future" if birthday > today else "birthday_implausible",
                         value=birthday.isoformat()) from None
    return birthday


def parse_consent(text: str) -> bool:
    value = text.casefold()
    if value in YES:
        return True
    if value in NO:
        return False
    raise RowRefused("consent_invalid", value=_shown(text))


def parse_card(text: str) -> str | None:
    compact = text.replace(" ", "")
    if not compact:
        return None
    if not is_valid_card_number(compact):
        raise RowRefused("card_invalid", value=_shown(text))
    return compact


def check_row(sheet: Sheet, number: int, cells: list[str], *, phone: str, today: date, rules: Rules) -> Row:
    """Every check of one row on its own (the phone is already normalised); raises RowRefused."""
    name = _cell(sheet, cells, "name")
    if not name:
        raise RowRefused("name_missing")
    if len(name) > MAX_NAME:
        raise RowRefused("name_too_long", max=MAX_NAME)
    points = parse_points(_cell(sheet, cells, "points"))
    birthday = parse_birthday(_cell(sheet, cells, "birthday"), today=today, guardian_age=rules.guardian_age)
    email = _cell(sheet, cells, "email")
    if email and (len(email) > MAX_EMAIL or not _EMAIL.fullmatch(email)):
        raise RowRefused("email_invalid", value=_shown(email))
    consent = parse_consent(_cell(sheet, cells, "marketing_consent"))
    card = parse_card(_cell(sheet, cells, "card_number"))
    return Row(number, name, phone, points, birthday, email or None, consent, card)


# --- a step ---------------------------------------------------------------------------------------------

def _phone_key(text: str) -> str:
    """A cheap key two cells share whenever they are the same phone (its last 8 digits)."""
    return re.sub(r"\D", "", normalise_text(text))[-8:]


@dataclass
class _FileIndex:
    """What each row needs to know about the rows before it (repeats) and about the whole file (card numbers
    a new card must not take). Built from the text alone, so a step depends only on the file."""

    sheet: Sheet
    phone_rows: dict[str, list[int]]  # phone key -> row indexes, in file order
    first_card: dict[str, int]  # valid card number -> index of the first row with it
    cards: set[str]
    _phones: dict[int, str | None] = field(default_factory=dict)

    @classmethod
    def build(cls, sheet: Sheet) -> _FileIndex:
        phone_rows: dict[str, list[int]] = {}
        first_card: dict[str, int] = {}
        for index, (_number, cells) in enumerate(sheet.rows):
            key = _phone_key(_cell(sheet, cells, "phone"))
            if key:
                phone_rows.setdefault(key, []).append(index)
            card = _cell(sheet, cells, "card_number").replace(" ", "")
            if is_valid_card_number(card):
                first_card.setdefault(card, index)
        return cls(sheet, phone_rows, first_card, set(first_card))

    def phone_of(self, index: int) -> str | None:
        if index not in self._phones:
            try:
                self._phones[index] = normalise_phone(_cell(self.sheet, self.sheet.rows[index][1], "phone"))
            except PhoneError:
                self._phones[index] = None
        return self._phones[index]

    def earlier_same_phone(self, index: int, phone: str) -> int | None:
        """The first row before `index` with the same (valid) phone."""
        for other in self.phone_rows.get(_phone_key(_cell(self.sheet, self.sheet.rows[index][1], "phone")), []):
            if other >= index:
                return None
            if self.phone_of(other) == phone:
                return other
        return None


@dataclass
class _Tally:
    created: int = 0
    skipped: int = 0
    refused: int = 0
    points: int = 0
    report: list[dict] = field(default_factory=list)

    def note(self, number: int, outcome: str, code: str, params: dict | None = None) -> None:
        entry = {"row": number, "outcome": outcome, "reason": code}
        if params:
            entry["params"] = params
        self.report.append(entry)
        if outcome == "skipped":
            self.skipped += 1
        else:
            self.refused += 1


@lru_cache(maxsize=2)
def _prepared(content: str) -> tuple[Sheet, _FileIndex]:
    """The parsed file and its index, kept for the next steps of the same import in this process: they depend
    only on the text, and parsing a large file for every step of 200 rows would cost more than the rows."""
    sheet = read_sheet(content)
    return sheet, _FileIndex.build(sheet)


def run_step(session: Session, job: MemberImport, *, rules: Rules, now: datetime, offset: int | None = None,
             chunk: int = CHUNK_ROWS) -> int:
    """Work through the next `chunk` rows of a locked import (see `lock`) and move its counters on; the last
    step marks it done and, for a real import, writes the audit row. Returns how many rows this step did.

    `offset` is where the caller saw the import stand: if another step has moved it on meanwhile (a poll
    fired twice), this one does nothing."""
    if job.status == "done" or (offset is not None and offset != job.processed_rows):
        return 0
    sheet, index = _prepared(job.content)
    start = job.processed_rows
    end = min(start + chunk, len(sheet.rows))
    store, staff = job.store, job.staff
    today = local_date(now, store.timezone)
    tally = _Tally()

    candidates: list[tuple[int, str]] = []  # (row index, phone) of rows not refused for their phone
    for position in range(start, end):
        number, cells = sheet.rows[position]
        try:
            phone = parse_phone(_cell(sheet, cells, "phone"))
        except RowRefused as refused:
            tally.note(number, "refused", refused.code, refused.params)
            continue
        candidates.append((position, phone))
    phones = {phone for _position, phone in candidates}
    known_phones = set(session.scalars(select(Member.phone).where(Member.phone.in_(phones)))) if phones else set()
    chunk_cards = {card for card in (_cell(sheet, sheet.rows[p][1], "card_number").replace(" ", "")
                                     for p, _phone in candidates) if is_valid_card_number(card)}
    known_cards = {number: deleted_at for number, deleted_at in session.execute(
        select(Member.card_number, Member.deleted_at).where(Member.card_number.in_(chunk_cards)))
    } if chunk_cards else {}
    lowest = session.scalars(select(Tier).order_by(Tier.threshold_fen, Tier.id).limit(1)).one()
    expires = ledger.lot_expiry(now, store.timezone, rules.expiry_days)
    new_cards = _NewCards(session, index.cards)

    for position, phone in candidates:
        number, cells = sheet.rows[position]
        try:
            earlier = index.earlier_same_phone(position, phone)
            if earlier is not None:
                raise RowRefused("phone_repeated", first=sheet.rows[earlier][0])
            card = _cell(sheet, cells, "card_number").replace(" ", "")
            if card in index.first_card and index.first_card[card] < position:
                raise RowRefused("card_repeated", first=sheet.rows[index.first_card[card]][0])
            if phone in known_phones or (card in known_cards and known_cards[card] is None):
                tally.note(number, "skipped", "already_member")
                continue
            if card in known_cards:
                raise RowRefused("card_closed")
            row = check_row(sheet, number, cells, phone=phone, today=today, rules=rules)
            if row.points and staff is not None and staff.phone and staff.phone == phone:
                raise RowRefused("own_phone")
        except RowRefused as refused:
            tally.note(number, "refused", refused.code, refused.params)
            continue
        if not job.dry_run:
            try:
                with session.begin_nested():
                    _create(session, row, job=job, store=store, tier=lowest, expires=expires, cards=new_cards,
                            now=now)
            except IntegrityError:  # another import (or the till) made this member meanwhile
                tally.note(number, "skipped", "already_member")
                continue
        tally.created += 1
        tally.points += row.points

    tally.report.sort(key=lambda entry: entry["row"])
    job.report = json.dumps(json.loads(job.report or "[]") + tally.report, ensure_ascii=False)
    job.created_count += tally.created
    job.skipped_count += tally.skipped
    job.refused_count += tally.refused
    job.points_total += tally.points
    job.processed_rows = end
    job.status = "running"
    if end >= len(sheet.rows):
        _finish(session, job, now=now)
    return end - start


class _NewCards:
    """Fresh card numbers for rows that bring none: not a member's, not in the file; checked 50 at a time."""

    def __init__(self, session: Session, in_file: set[str]):
        self.session, self.in_file, self.ready = session, in_file, []

    def next(self) -> str:
        while not self.ready:
            batch = {new_card_number() for _ in range(50)} - self.in_file
            used = set(self.session.scalars(select(Member.card_number).where(Member.card_number.in_(batch))))
            self.ready = sorted(batch - used)
        return self.ready.pop()


def _create(session: Session, row: Row, *, job: MemberImport, store: Store, tier: Tier, expires: datetime | None,
            cards: _NewCards, now: datetime) -> Member:
    """A member as the till registers one, minus the referrer and the activation code (the till issues one
    when the member asks), and their opening balance as one credit that can never be posted twice."""
    member = Member(
        card_number=row.card_number or cards.next(), name=row.name, name_key=name_key(row.name), phone=row.phone,
        phone_last4=national_digits(row.phone)[-4:], email=row.email, birthday=row.birthday,
        guardian_consent=False, privacy_version=PRIVACY_VERSION, privacy_consented_at=now,
        marketing_consent=row.marketing_consent, marketing_consent_at=now if row.marketing_consent else None,
        tier=tier, tier_since=now, points_balance=0, store_id=store.id, registered_by_id=job.staff_id,
        created_at=now,
    )
    session.add(member)
    session.flush()
    if row.points:
        ledger.credit(session, member, LedgerKind.ADJUST, [ledger.Portion(row.points, expires)], LEDGER_REASON,
                      at=now, store=store, staff_id=job.staff_id, note=f"import #{job.id}",
                      idempotency_key=f"import:{row.phone}")
    return member


def _finish(session: Session, job: MemberImport, *, now: datetime) -> None:
    job.status = "done"
    job.finished_at = now
    if job.dry_run:
        return  # a dry run changes nothing in the books, so there is nothing to audit
    audit.record(
        session, AUDIT_ACTION, at=now, staff_id=job.staff_id, store_id=job.store_id, target=f"member_import:{job.id}",
        after={"file": job.filename, "sha256": job.file_sha256, "encoding": job.encoding, "rows": job.total_rows,
               "created": job.created_count, "skipped": job.skipped_count, "refused": job.refused_count,
               "points": job.points_total, "privacy_version": PRIVACY_VERSION},
    )


# --- reading the result ---------------------------------------------------------------------------------

def report(job: MemberImport, outcome: str | None = None) -> list[dict]:
    """The report's entries ({"row", "outcome", "reason", "params"}), in row order; only one outcome if asked."""
    entries = json.loads(job.report or "[]")
    return [entry for entry in entries if outcome is None or entry["outcome"] == outcome]


def ignored_columns(job: MemberImport) -> list[str]:
    """Header cells the import did not use."""
    try:
        return read_sheet(job.content).ignored
    except Refusal:
        return []


def refusals_csv(job: MemberImport, *, row_label: str, reason_label: str) -> str:
    """The refused rows as CSV: the row number and reason, then the row as it was in the file (under its own
    header), so the file can be corrected and imported again. Every cell is neutralised."""
    sheet = read_sheet(job.content)
    by_number = dict(sheet.rows)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([neutralise(cell) for cell in [row_label, reason_label, *sheet.header]])
    for entry in report(job, "refused"):
        cells = by_number.get(entry["row"], [])
        writer.writerow([neutralise(str(cell)) for cell in
                         [entry["row"], reason_text(entry["reason"], entry.get("params")), *cells]])
    return out.getvalue()
