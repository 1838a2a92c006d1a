"""Importing existing members with opening balances from CSV (Manage → Import members).

A file is checked as a whole when it is uploaded (size, encoding, columns; refused beside the file field, nothing
kept), then worked through in steps of 200 rows, each under the import's lock. Every row becomes a member with
one opening-balance credit, is skipped (already a member), or is refused with its spreadsheet row number and a
reason. A dry run decides the same and writes nothing. Managers work their own store only; admins every store.
"""
from __future__ import annotations

import codecs
import csv
import io
import re
import threading
import uuid
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import func, select
from werkzeug.datastructures import FileStorage
from werkzeug.test import encode_multipart

from portal import accounts, imports, ledger, spreadsheet
from portal.cards import luhn_check_digit
from portal.extensions import db
from portal.models import AuditLog, LedgerEntry, Member, MemberImport, PointLot, Staff, Store
from portal.rules import load_rules

from . import factories
from .conftest import FIXED_NOW
from .helpers import field_error, figure, is_full_page, text_of

DATA = Path(__file__).parent / "data"
IMPORTS = "/manage/imports"
GOOD_CARD = "6000000015"  # the card number in the sample files
ZH_HEADER = "姓名,手机号,积分,生日,邮箱,营销同意,卡号"
EN_HEADER = "name,phone,points,birthday,email,marketing_consent,card_number"


def card(payload: str) -> str:
    return payload + luhn_check_digit(payload)


# --- helpers --------------------------------------------------------------------------------------------

def count(model, *where) -> int:
    return db.session.scalar(select(func.count()).select_from(model).where(*where))


def totals(app) -> dict:
    """Everything an import could write."""
    with app.app_context():
        return {"members": count(Member), "ledger": count(LedgerEntry), "lots": count(PointLot),
                "audit": count(AuditLog, AuditLog.action == "members.import"),
                "points": int(db.session.scalar(select(func.coalesce(func.sum(Member.points_balance), 0))))}


def upload(client, data: bytes, *, filename: str = "members.csv", dry_run: bool = False, store_id=None,
           htmx: bool = False, key: str | None = None):
    form = {"file": (io.BytesIO(data), filename), "idempotency_key": key or uuid.uuid4().hex}
    if dry_run:
        form["dry_run"] = "y"
    if store_id is not None:
        form["store_id"] = str(store_id)
    return client.post(IMPORTS, data=form, content_type="multipart/form-data", htmx=htmx)


def import_id_of(response) -> int:
    location = response.headers.get("HX-Push-Url") or response.headers["Location"]
    match = re.fullmatch(rf"{IMPORTS}/(\d+)", location)
    assert match, location
    return int(match.group(1))


def step(client, import_id: int, offset: int | None = None, htmx: bool = True):
    data = {} if offset is None else {"offset": str(offset)}
    return client.post(f"{IMPORTS}/{import_id}/step", data=data, htmx=htmx)


def polls(response) -> bool:
    return 'hx-trigger="load' in response.get_data(as_text=True)


def run_to_end(client, import_id: int):
    """Post steps as the page would until the import stops polling; the last answer."""
    for _ in range(1000):
        response = step(client, import_id)
        assert response.status_code == 200, text_of(response)
        if not polls(response):
            return response
    raise AssertionError("the import never finished")


def import_file(client, data: bytes, **kwargs) -> tuple[int, object]:
    """Upload and run to the end; the import's id and its final fragment."""
    started = upload(client, data, **kwargs)
    assert started.status_code == 303, text_of(started)
    import_id = import_id_of(started)
    return import_id, run_to_end(client, import_id)


def refused_rows(response) -> dict[int, str]:
    """Row number -> reason, as the report lists them."""
    rows = re.findall(r'<tr id="refused-row-(\d+)"><td class="num">\d+</td><td>([^<]*)</td></tr>', text_of(response))
    return {int(number): reason for number, reason in rows}


def csv_bytes(header: str, rows: list[str], encoding: str = "utf-8") -> bytes:
    return ("\r\n".join([header, *rows]) + "\r\n").encode(encoding)


def member_by_phone(phone: str) -> Member | None:
    return db.session.scalars(select(Member).where(Member.phone == phone)).one_or_none()


@pytest.fixture
def manager(app, client, login):
    """A signed-in manager of S001, then the pages' clock pinned at FIXED_NOW (after the login: see
    test_manage_complaints.pin_clock)."""
    username = login(client, "manager")
    app.config["FROZEN_NOW"] = FIXED_NOW
    client.username = username
    return client


def staff_of(app, username: str) -> tuple[int, int]:
    with app.app_context():
        person = db.session.scalars(select(Staff).where(Staff.username == username)).one()
        return person.id, person.store_id


# --- good files -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("filename, encoding", [
    ("import_members_utf8.csv", "utf-8"),
    ("import_members_utf8_bom.csv", "utf-8-sig"),
    ("import_members_gbk.csv", "gb18030"),
])
def test_a_good_file_makes_members_with_their_opening_balances(app, manager, filename, encoding):
    data = (DATA / filename).read_bytes()
    if filename.endswith("gbk.csv"):
        with pytest.raises(UnicodeDecodeError):
            data.decode("utf-8")  # the sample really is GBK
        assert "王小明".encode("gbk") in data
    import_id, done = import_file(manager, data, filename=filename)
    assert not polls(done)
    assert (figure(done, "created"), figure(done, "skipped"), figure(done, "refused"), figure(done, "points")) == (
        "3", "0", "0", "2,700")
    assert "The import is finished." in text_of(done)
    me, store_id = staff_of(app, manager.username)
    with app.app_context():
        job = db.session.get(MemberImport, import_id)
        assert (job.status, job.encoding, job.total_rows, job.processed_rows) == ("done", encoding, 3, 3)
        assert job.finished_at == FIXED_NOW and job.filename == filename
        expiry = ledger.lot_expiry(FIXED_NOW, "Asia/Shanghai", 730)
        expected = {
            "+8613800138001": ("王小明", 1200, date(1990, 3, 25), "wang@example.com", True),
            "+8613800138002": ("李华", 0, date(1985, 7, 1), None, False),
            "+8613800138003": ("张伟", 1500, None, None, True),
        }
        for phone, (name, points, birthday, email, consent) in expected.items():
            member = member_by_phone(phone)
            assert (member.name, member.birthday, member.email, member.marketing_consent) == (
                name, birthday, email, consent)
            assert member.marketing_consent_at == (FIXED_NOW if consent else None)
            assert (member.privacy_version, member.privacy_consented_at) == ("import", FIXED_NOW)
            assert (member.store_id, member.registered_by_id, member.tier.code) == (store_id, me, "member")
            assert member.points_balance == points == ledger.ledger_sum(db.session, member.id)
            entries = db.session.scalars(select(LedgerEntry).where(LedgerEntry.member_id == member.id)).all()
            lots = db.session.scalars(select(PointLot).where(PointLot.member_id == member.id)).all()
            if points:
                [entry] = entries
                assert (entry.kind, entry.reason, entry.points, entry.staff_id, entry.store_id) == (
                    "adjust", "opening_balance", points, me, store_id)
                assert entry.idempotency_key == f"import:{phone}"
                assert [(lot.points, lot.remaining, lot.expires_at) for lot in lots] == [(points, points, expiry)]
            else:
                assert entries == [] and lots == []
        assert member_by_phone("+8613800138002").card_number == GOOD_CARD  # kept from the old system
        issued = member_by_phone("+8613800138001").card_number
        assert len(issued) == 10 and issued != GOOD_CARD
        [row] = db.session.scalars(select(AuditLog).where(AuditLog.action == "members.import")).all()
        assert (row.staff_id, row.store_id, row.target) == (me, store_id, f"member_import:{import_id}")
        assert '"created": 3' in row.after and '"refused": 0' in row.after and '"points": 2700' in row.after


def test_english_headers_tabs_and_date_and_number_forms(app, manager):
    data = csv_bytes("Name\tPhone\tPoints\tBirthday\tE-mail\tMarketing Consent", [
        "Ann\t13900000001\t2,000\t1990/3/5\tann@example.com\tYes",
        "Ben\t0086 139 0000 0002\t\t1991年12月31日\t\tn",
        "Cat\t１３９００００００03\t７\t2001-1-2\t\tTRUE",
    ])
    _import_id, done = import_file(manager, data)
    assert figure(done, "created") == "3" and figure(done, "points") == "2,007"
    with app.app_context():
        assert [(m.name, m.birthday, m.marketing_consent, m.points_balance)
                for m in db.session.scalars(select(Member).order_by(Member.phone))] == [
            ("Ann", date(1990, 3, 5), True, 2000),
            ("Ben", date(1991, 12, 31), False, 0),
            ("Cat", date(2001, 1, 2), True, 7),
        ]


@pytest.mark.parametrize("value, consent", [
    ("yes", True), ("Y", True), ("1", True), ("是", True), ("true", True),
    ("no", False), ("N", False), ("0", False), ("否", False), ("", False),
])
def test_marketing_consent_values(app, manager, value, consent):
    import_file(manager, csv_bytes(EN_HEADER, [f"Ann,13900000001,0,,,{value},"]))
    with app.app_context():
        assert member_by_phone("+8613900000001").marketing_consent is consent


def test_a_new_card_is_never_one_in_the_file_or_a_members(app, manager, monkeypatch):
    with app.app_context():
        taken = factories.member(phone="+8613900000009").card_number
        db.session.commit()
    draws = iter([GOOD_CARD, taken] * 25 + [card(f"7000000{n:02d}") for n in range(99)])  # first 50: both taken
    monkeypatch.setattr(imports, "new_card_number", lambda: next(draws))
    rows = ["Ann,13900000001,1,,,,", f"Bob,13900000002,1,,,,{GOOD_CARD}"]
    _import_id, done = import_file(manager, csv_bytes(EN_HEADER, rows))
    assert figure(done, "created") == "2"
    with app.app_context():
        issued = member_by_phone("+8613900000001").card_number
        assert issued.startswith("7000000") and issued not in (GOOD_CARD, taken)
        assert member_by_phone("+8613900000002").card_number == GOOD_CARD


def test_ignored_columns_are_named_in_the_report(manager):
    _import_id, done = import_file(manager, csv_bytes("name,phone,vip_level,备注", ["Ann,13900000001,3,好"]))
    assert figure(done, "created") == "1"
    assert "Columns ignored: vip_level, 备注" in text_of(done)


# --- files refused as a whole ---------------------------------------------------------------------------

BAD_FILES = {
    "utf16_with_bom": (codecs.BOM_UTF16_LE + f"{EN_HEADER}\r\n张三,13900000001,1,,,,\r\n".encode("utf-16-le"),
                       "The file is in UTF-16."),
    "utf16_without_bom": (f"{EN_HEADER}\r\nAnn,13900000001,1,,,,\r\n".encode("utf-16-le"),
                          "This is not a CSV file in UTF-8 or GBK."),
    "random_bytes": (bytes(range(256)) * 8, "This is not a CSV file in UTF-8 or GBK."),
    "an_image": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(100), "This is not a CSV file in UTF-8 or GBK."),
    "no_name_column": (csv_bytes("phone,points", ["13900000001,5"]), "Missing: name / 姓名."),
    "no_columns_we_know": (csv_bytes("a,b", ["1,2"]), "Missing: name / 姓名, phone / 手机."),
    "the_same_column_twice": (csv_bytes("name,手机,phone", ["Ann,13900000001,13900000001"]),
                              "Two columns mean the same thing: phone / 手机."),
    "empty": (b"", "The file is empty."),
    "only_blank_lines": (b"\r\n \r\n\r\n", "The file is empty."),
    "header_only": (csv_bytes(ZH_HEADER, []), "The file has no rows under its header."),
    "header_and_blank_rows": (csv_bytes(EN_HEADER, [",,,,,,", ""]), "The file has no rows under its header."),
}


@pytest.mark.parametrize("htmx", [False, True])
@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_file_that_cannot_be_imported_is_refused_beside_the_field(app, manager, case, htmx):
    data, message = BAD_FILES[case]
    before = totals(app)
    response = upload(manager, data, htmx=htmx)
    assert response.status_code == 422
    assert message in (field_error(response, "file") or "")
    assert is_full_page(response) is not htmx
    assert 'enctype="multipart/form-data"' in text_of(response)  # the form again, to choose another file
    with app.app_context():
        assert count(MemberImport) == 0
    assert totals(app) == before


def test_no_file_chosen(app, manager):
    response = manager.post(IMPORTS, data={"idempotency_key": uuid.uuid4().hex}, content_type="multipart/form-data")
    assert response.status_code == 422
    assert field_error(response, "file") == "Choose a CSV file to import."


@pytest.mark.config(IMPORT_MAX_BYTES=1000)
def test_a_file_over_the_import_limit_is_refused_beside_the_field(app, manager):
    rows = [f"Member {n},139{n:08d},10" for n in range(40)]
    data = csv_bytes("name,phone,points", rows)
    assert len(data) > 1000
    response = upload(manager, data)
    assert response.status_code == 422
    assert field_error(response, "file").startswith("The file is larger than")
    with app.app_context():
        assert count(MemberImport) == 0
    assert upload(manager, data[:990]).status_code == 303  # under the limit (the last row cut short: fine)


def upload_in_memory(client, data: bytes, htmx: bool = False):
    """A large upload, encoded in memory (the test client would spool it to a file it never closes)."""
    boundary, body = encode_multipart({"file": FileStorage(io.BytesIO(data), "big.csv", content_type="text/csv"),
                                       "idempotency_key": uuid.uuid4().hex})
    return client.post(IMPORTS, data=body, content_type=f"multipart/form-data; boundary={boundary}", htmx=htmx)


@pytest.mark.parametrize("htmx", [False, True])
def test_the_default_limit_fits_in_a_request_and_anything_larger_is_refused_beside_the_field(app, manager, htmx):
    request_limit = app.config["MAX_CONTENT_LENGTH"]
    header = b"name,phone,points\r\n"
    too_big_for_import = header + b"x" * (request_limit - 32 * 1024)  # fits in a request, not in an import
    response = upload_in_memory(manager, too_big_for_import)
    assert response.status_code == 422
    assert field_error(response, "file").startswith("The file is larger than 1.9 MB.")
    # Larger than a request may be: refused before the view runs, yet shown beside the field all the same.
    response = upload_in_memory(manager, header + b"x" * request_limit, htmx=htmx)
    assert response.status_code == 422
    assert field_error(response, "file").startswith("The file is larger than 1.9 MB.")
    assert is_full_page(response) is not htmx
    with app.app_context():
        assert count(MemberImport) == 0


def test_the_same_upload_form_sent_twice_starts_one_import(app, manager):
    data = (DATA / "import_members_utf8.csv").read_bytes()
    key = uuid.uuid4().hex
    first, again = upload(manager, data, key=key), upload(manager, data, key=key)
    assert first.status_code == again.status_code == 303
    assert import_id_of(first) == import_id_of(again)
    with app.app_context():
        assert count(MemberImport) == 1


# --- rows refused one by one ----------------------------------------------------------------------------

GOOD_BEFORE = "Ann,13900000001,100,,,,"
GOOD_AFTER = "Cat,13900000003,300,,,,"

BAD_ROWS = {
    "name_missing": (",13900000002,5,,,,", "The name is empty."),
    "name_too_long": ("X" * 101 + ",13900000002,5,,,,", "The name is longer than 100 characters."),
    "phone_missing": ("Bob,,5,,,,", "The phone is empty."),
    "phone_not_mobile": ("Bob,12345,5,,,,", "“12345” is not a mobile phone number."),
    "phone_landline": ("Bob,02112345678,5,,,,", "“02112345678” is not a mobile phone number."),
    "phone_repeated": ("Bob,+86 139 0000 0001,5,,,,", "The same phone as row 2, which counts instead."),
    "points_negative": ("Bob,13900000002,-5,,,,", "An opening balance cannot be negative (-5)."),
    "points_decimal": ("Bob,13900000002,12.5,,,,", "The points “12.5” are not a whole number."),
    "points_words": ("Bob,13900000002,lots,,,,", "The points “lots” are not a whole number."),
    "points_too_many": ("Bob,13900000002,1000001,,,,", "More than 1,000,000 points: check the opening balance."),
    "birthday_not_a_date": ("Bob,13900000002,5,1990-02-30,,,",
                            "“1990-02-30” is not a date; write it like 1990-03-25 or 1990/3/25."),
    "birthday_in_words": ("Bob,13900000002,5,March 1990,,,",
                          "“March 1990” is not a date; write it like 1990-03-25 or 1990/3/25."),
    "birthday_future": ("Bob,13900000002,5,2026-06-16,,,", "The birthday 2026-06-16 is in the future."),
    "birthday_too_old": ("Bob,13900000002,5,1899-12-31,,,", "Check the year of the birthday 1899-12-31."),
    "under_guardian_age": ("Bob,13900000002,5,2015-01-01,,,",
                           "The member is under 14 and needs a guardian's consent: register them at the till."),
    "email": ("Bob,13900000002,5,,bob@,,", "“bob@” is not an e-mail address."),
    "consent": ("Bob,13900000002,5,,,maybe,", "Marketing consent “maybe”: write yes or no."),
    "card_typo": (f"Bob,13900000002,5,,,,{GOOD_CARD[:-1]}9", f"The card number “{GOOD_CARD[:-1]}9” is not 10 digits "
                                                                 "with a matching check digit."),
    "card_short": ("Bob,13900000002,5,,,,12345", "The card number “12345” is not 10 digits with a matching check digit."),
}


@pytest.mark.parametrize("case", list(BAD_ROWS))
def test_a_bad_row_is_refused_with_its_row_number_and_the_rest_imported(app, manager, case):
    row, reason = BAD_ROWS[case]
    _import_id, done = import_file(manager, csv_bytes(EN_HEADER, [GOOD_BEFORE, row, GOOD_AFTER]))
    assert refused_rows(done) == {3: reason}
    assert (figure(done, "created"), figure(done, "refused"), figure(done, "points")) == ("2", "1", "400")
    with app.app_context():
        assert sorted(m.phone for m in db.session.scalars(select(Member))) == ["+8613900000001", "+8613900000003"]
        assert count(LedgerEntry) == 2


def test_a_card_number_repeated_in_the_file(app, manager):
    rows = [f"Ann,13900000001,1,,,,{GOOD_CARD}", f"Bob,13900000002,1,,,,{GOOD_CARD}"]
    _import_id, done = import_file(manager, csv_bytes(EN_HEADER, rows))
    assert refused_rows(done) == {3: "The same card number as row 2, which counts instead."}


def test_a_card_of_a_deleted_account_is_not_brought_back(app, manager):
    with app.app_context():
        gone = factories.member(phone="+8613900000009")
        gone.card_number = GOOD_CARD
        accounts.erase(db.session, gone, now=FIXED_NOW)
        db.session.commit()
    _import_id, done = import_file(manager, csv_bytes(EN_HEADER, [f"Bob,13900000002,1,,,,{GOOD_CARD}"]))
    assert refused_rows(done) == {2: "This card number belonged to an account that was deleted."}


def test_no_opening_balance_for_ones_own_phone(app, manager):
    with app.app_context():
        person = db.session.scalars(select(Staff).where(Staff.username == manager.username)).one()
        person.phone = "+8613900000002"
        db.session.commit()
    rows = ["Me,13900000002,500,,,,", "Ann,13900000001,5,,,,"]
    _import_id, done = import_file(manager, csv_bytes(EN_HEADER, rows))
    assert refused_rows(done) == {2: "This is your own phone number: you cannot credit points to it."}
    assert figure(done, "created") == "1"


def test_row_numbers_count_as_a_spreadsheet_does(app, manager):
    """The header is row 1; a blank row still counts; a quoted cell over two lines is one row."""
    data = csv_bytes(EN_HEADER, ['"Ann\nSmith",13900000001,1,,,,', "", "Bob,bad,1,,,,"])
    _import_id, done = import_file(manager, data)
    assert refused_rows(done) == {4: "“bad” is not a mobile phone number."}
    assert figure(done, "created") == "1"


def test_refused_rows_download_neutralised_and_importable_again(app, manager):
    rows = [
        "=HYPERLINK(\"http://x\"),+86 12,5,,,,",
        "Ann,13900000001,5,,,,",
        "@Bob,13900000002,-7,,,,",
        "Cat,13900000003,3,,-cat@,,",
    ]
    import_id, done = import_file(manager, csv_bytes(EN_HEADER, rows))
    assert sorted(refused_rows(done)) == [2, 4, 5]
    assert f'href="{IMPORTS}/{import_id}/refused.csv"' in text_of(done)
    response = manager.get(f"{IMPORTS}/{import_id}/refused.csv")
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert f'filename="import-{import_id}-refused.csv"' in response.headers["Content-Disposition"]
    body = response.get_data()
    assert body.startswith(codecs.BOM_UTF8)
    table = list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))
    assert table[0] == ["Row", "Reason", *EN_HEADER.split(",")]
    assert [line[0] for line in table[1:]] == ["2", "4", "5"]
    assert table[1][1] == "“+86 12” is not a mobile phone number."
    assert table[1][2:4] == ["'=HYPERLINK(\"http://x\")", "'+86 12"]
    assert table[2][2:5] == ["'@Bob", "13900000002", "'-7"]
    assert table[3][6] == "'-cat@"
    for line in table:
        for cell in line:
            assert not cell.startswith(spreadsheet.FORMULA_STARTS)
    # the download goes back in as it is: the same rows refused again for the same reasons
    _again_id, again = import_file(manager, body, filename="refused.csv")
    assert list(refused_rows(again).values()) == list(refused_rows(done).values())
    assert figure(again, "created") == "0"
    assert "Columns ignored: Row, Reason" in text_of(again)


# --- twice, dry runs ------------------------------------------------------------------------------------

def test_the_same_file_twice_adds_nothing(app, manager):
    data = csv_bytes(EN_HEADER, ["Ann,13900000001,100,,,,", f"Bob,13900000002,200,,,,{GOOD_CARD}", "Eve,bad,1,,,,"])
    import_file(manager, data)
    after_first = totals(app)
    assert after_first["members"] == 2 and after_first["points"] == 300
    _second_id, again = import_file(manager, data)
    assert (figure(again, "created"), figure(again, "skipped"), figure(again, "refused"), figure(again, "points")) == (
        "0", "2", "1", "0")
    assert "2, 3" in text_of(again)  # the skipped rows
    after_second = totals(app)
    assert after_second == {**after_first, "audit": 2}


def test_a_row_already_a_member_by_card_is_skipped(app, manager):
    with app.app_context():
        existing = factories.member(phone="+8613900000009")
        existing.card_number = GOOD_CARD
        db.session.commit()
    _import_id, done = import_file(manager, csv_bytes(EN_HEADER, [f"Bob,13900000002,5,,,,{GOOD_CARD}"]))
    assert (figure(done, "created"), figure(done, "skipped")) == ("0", "1")
    with app.app_context():
        assert member_by_phone("+8613900000002") is None


def test_a_dry_run_writes_nothing_and_reports_what_would_happen(app, manager):
    with app.app_context():
        factories.member(phone="+8613900000004")
        db.session.commit()
    rows = ["Ann,13900000001,100,,,,", "Bob,13900000002,-1,,,,", "Ann again,13900000001,5,,,,",
            "Dan,13900000004,50,,,,", "Cat,13900000003,300,,,,"]
    data = csv_bytes(EN_HEADER, rows)
    before = totals(app)
    dry_id, dry = import_file(manager, data, dry_run=True)
    assert totals(app) == before
    figures = [figure(dry, name) for name in ("created", "skipped", "refused", "points")]
    assert figures == ["2", "1", "2", "400"]
    assert "This was a dry run: nothing was added." in text_of(dry)
    assert "Members who would be added" in text_of(dry)
    assert sorted(refused_rows(dry)) == [3, 4]
    # the button runs the same file for real, as a new import with the same outcome
    response = manager.post(f"{IMPORTS}/{dry_id}/run", data={"idempotency_key": uuid.uuid4().hex})
    assert response.status_code == 303
    real_id = import_id_of(response)
    assert real_id != dry_id
    real = run_to_end(manager, real_id)
    assert [figure(real, name) for name in ("created", "skipped", "refused", "points")] == figures
    assert refused_rows(real) == refused_rows(dry)
    after = totals(app)
    assert (after["members"] - before["members"], after["points"] - before["points"], after["audit"]) == (2, 400, 1)


def test_only_a_finished_dry_run_can_be_run_for_real(app, manager):
    data = csv_bytes(EN_HEADER, ["Ann,13900000001,100,,,,"])
    real_id, _done = import_file(manager, data)
    dry = upload(manager, data, dry_run=True)
    unfinished_id = import_id_of(dry)
    for import_id in (real_id, unfinished_id):
        response = manager.post(f"{IMPORTS}/{import_id}/run", data={"idempotency_key": uuid.uuid4().hex})
        assert response.status_code == 422
        assert "Only a finished dry run can be run for real." in text_of(response)
    with app.app_context():
        assert count(MemberImport) == 2


# --- progress -------------------------------------------------------------------------------------------

def many_rows(n: int) -> bytes:
    return csv_bytes("name,phone,points", [f"Member {i},139{i:08d},{i}" for i in range(1, n + 1)])


def test_progress_polls_until_done_then_shows_the_report(app, manager):
    started = upload(manager, many_rows(450), htmx=True)
    assert started.status_code == 200 and not is_full_page(started)
    import_id = import_id_of(started)
    assert (figure(started, "processed"), figure(started, "total")) == ("0", "450")
    assert polls(started) and 'hx-vals=\'{"offset": "0"}\'' in started.get_data(as_text=True)

    first = step(manager, import_id, offset=0)
    assert first.status_code == 200 and not is_full_page(first)
    assert "HX-Request" in first.headers["Vary"]
    assert (figure(first, "processed"), figure(first, "total"), figure(first, "percent")) == ("200", "450", "44%")
    assert '<progress max="450" value="200">' in first.get_data(as_text=True)
    assert polls(first) and 'hx-vals=\'{"offset": "200"}\'' in first.get_data(as_text=True)
    assert f'hx-post="{IMPORTS}/{import_id}/step"' in first.get_data(as_text=True)
    assert figure(first, "created") == "200"
    assert "The import is finished." not in text_of(first)

    second = step(manager, import_id, offset=200)
    assert figure(second, "processed") == "400" and polls(second)
    last = step(manager, import_id, offset=400)
    assert (figure(last, "processed"), figure(last, "percent"), figure(last, "created")) == ("450", "100%", "450")
    assert not polls(last) and "hx-post" not in last.get_data(as_text=True).split("import-outcome")[0]
    assert "The import is finished." in text_of(last)
    assert figure(last, "points") == f"{450 * 451 // 2:,}"
    with app.app_context():
        assert count(Member) == 450
        assert count(AuditLog, AuditLog.action == "members.import") == 1


def test_without_javascript_a_continue_button_steps_and_comes_back(app, manager):
    started = upload(manager, many_rows(250))
    import_id = import_id_of(started)
    page = manager.get(f"{IMPORTS}/{import_id}")
    assert is_full_page(page)
    assert f'<form method="post" action="{IMPORTS}/{import_id}/step">' in page.get_data(as_text=True)
    response = step(manager, import_id, offset=0, htmx=False)
    assert response.status_code == 303 and response.headers["Location"] == f"{IMPORTS}/{import_id}"
    assert figure(manager.get(response.headers["Location"]), "processed") == "200"
    step(manager, import_id, offset=200, htmx=False)
    done = manager.get(f"{IMPORTS}/{import_id}")
    assert figure(done, "processed") == "250" and "Continue" not in text_of(done)


def test_a_step_sent_twice_for_the_same_offset_does_its_rows_once(app, manager):
    import_id = import_id_of(upload(manager, many_rows(450)))
    with app.app_context():
        rules = load_rules(db.session)
        job = imports.lock(db.session, import_id)
        assert imports.run_step(db.session, job, rules=rules, now=FIXED_NOW, offset=0) == 200
        db.session.commit()
        job = imports.lock(db.session, import_id)
        assert imports.run_step(db.session, job, rules=rules, now=FIXED_NOW, offset=0) == 0
        db.session.commit()
        job = db.session.get(MemberImport, import_id)
        assert (job.processed_rows, job.created_count) == (200, 200)
        assert count(Member) == 200 and count(LedgerEntry) == 200
    twice = [step(manager, import_id, offset=200) for _ in range(2)]
    assert [figure(r, "processed") for r in twice] == ["400", "400"]
    with app.app_context():
        assert count(Member) == 400


def test_concurrent_steps_never_do_a_row_twice(app, client, login):
    """Two polls fired at once with the same offset: one does the rows, the other finds them done."""
    username = login(client, "manager")
    second = app.test_client()
    assert second.post("/login", data={"username": username, "password": factories.PASSWORD}).status_code == 303
    import_id = import_id_of(upload(client, many_rows(300)))
    results = []
    start = threading.Barrier(2)

    def poll(c):
        start.wait()
        results.append(step(c, import_id, offset=0).status_code)

    threads = [threading.Thread(target=poll, args=(c,)) for c in (client, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [200, 200]
    with app.app_context():
        job = db.session.get(MemberImport, import_id)
        assert (job.processed_rows, job.created_count, job.skipped_count, job.refused_count) == (200, 200, 0, 0)
        assert imports.report(job) == []
        assert count(Member) == 200 and count(LedgerEntry) == 200


def test_two_imports_of_one_file_at_once_credit_each_member_once(app, client, login):
    username = login(client, "manager")
    second = app.test_client()
    assert second.post("/login", data={"username": username, "password": factories.PASSWORD}).status_code == 303
    data = many_rows(150)
    ids = [import_id_of(upload(client, data)), import_id_of(upload(client, data))]
    start = threading.Barrier(2)

    def poll(c, import_id):
        start.wait()
        step(c, import_id)

    threads = [threading.Thread(target=poll, args=pair) for pair in zip((client, second), ids)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with app.app_context():
        jobs = [db.session.get(MemberImport, import_id) for import_id in ids]
        assert all(job.status == "done" for job in jobs)
        assert sorted((job.created_count, job.skipped_count) for job in jobs) == [(0, 150), (150, 0)]
        assert count(Member) == 150 and count(LedgerEntry) == 150
        assert totals(app)["points"] == 150 * 151 // 2


# --- who sees what --------------------------------------------------------------------------------------

def test_cashier_is_refused_everywhere(app, client, login):
    login(client, "manager")
    import_id, _done = import_file(client, csv_bytes(EN_HEADER, ["Ann,bad,1,,,,"]))
    client.post("/logout")
    login(client, "cashier")
    for path in (IMPORTS, f"{IMPORTS}/{import_id}", f"{IMPORTS}/{import_id}/refused.csv"):
        assert client.get(path).status_code == 403, path
    assert upload(client, csv_bytes(EN_HEADER, ["Bob,13900000002,1,,,,"])).status_code == 403
    assert step(client, import_id).status_code == 403
    assert client.post(f"{IMPORTS}/{import_id}/run", data={"idempotency_key": uuid.uuid4().hex}).status_code == 403
    with app.app_context():
        assert count(MemberImport) == 1 and count(Member) == 0


def test_anonymous_is_sent_to_sign_in(client):
    response = client.get(IMPORTS)
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")


def test_a_manager_sees_and_runs_only_their_own_stores_imports(app, client, login):
    with app.app_context():
        factories.store("S002", "Second Store")
        db.session.commit()
    login(client, "manager", store_code="S002")
    theirs = import_id_of(upload(client, csv_bytes(EN_HEADER, ["Ann,13900000001,1,,,,", "Bob,x,1,,,,"])))
    client.post("/logout")
    login(client, "manager")
    ours = import_id_of(upload(client, csv_bytes(EN_HEADER, ["Cat,13900000003,1,,,,"])))
    page = client.get(IMPORTS)
    assert f'id="import-row-{ours}"' in page.get_data(as_text=True)
    assert f'id="import-row-{theirs}"' not in page.get_data(as_text=True)
    for path in (f"{IMPORTS}/{theirs}", f"{IMPORTS}/{theirs}/refused.csv"):
        assert client.get(path).status_code == 404, path
    assert step(client, theirs).status_code == 404
    assert client.post(f"{IMPORTS}/{theirs}/run", data={"idempotency_key": uuid.uuid4().hex}).status_code == 404
    assert client.get(f"{IMPORTS}/{2**31}").status_code == 404
    with app.app_context():
        assert db.session.get(MemberImport, theirs).processed_rows == 0
        assert count(Member) == 0


def test_a_manager_imports_into_their_own_store_whatever_the_form_says(app, client, login):
    with app.app_context():
        other = factories.store("S002", "Second Store").id
        db.session.commit()
    login(client, "manager")
    page = client.get(IMPORTS)
    assert 'name="store_id"' not in page.get_data(as_text=True)
    assert "The members count as registered at Test Store." in text_of(page)
    import_id = import_id_of(upload(client, csv_bytes(EN_HEADER, ["Ann,13900000001,1,,,,"]), store_id=other))
    run_to_end(client, import_id)
    with app.app_context():
        assert db.session.get(MemberImport, import_id).store.code == "S001"
        assert member_by_phone("+8613900000001").store.code == "S001"


def test_an_admin_picks_the_store_and_sees_every_import(app, client, login):
    with app.app_context():
        other = factories.store("S002", "Second Store").id
        db.session.commit()
    login(client, "manager")
    ours = import_id_of(upload(client, csv_bytes(EN_HEADER, ["Ann,13900000001,1,,,,"])))
    client.post("/logout")
    login(client, "admin")
    response = upload(client, csv_bytes(EN_HEADER, ["Bob,13900000002,1,,,,"]))
    assert response.status_code == 422
    assert field_error(response, "store_id") == "Choose the store the members count as registered at."
    theirs = import_id_of(upload(client, csv_bytes(EN_HEADER, ["Bob,13900000002,1,,,,"]), store_id=other))
    page = client.get(IMPORTS).get_data(as_text=True)
    assert f'id="import-row-{ours}"' in page and f'id="import-row-{theirs}"' in page
    run_to_end(client, ours)  # an admin may carry on a manager's import
    run_to_end(client, theirs)
    with app.app_context():
        assert member_by_phone("+8613900000002").store_id == other
        assert member_by_phone("+8613900000001").store.code == "S001"
        stores = {row.store_id for row in db.session.scalars(select(AuditLog).where(
            AuditLog.action == "members.import"))}
        assert stores == {other, db.session.scalars(select(Store.id).where(Store.code == "S001")).one()}


# --- pages and fragments --------------------------------------------------------------------------------

def test_upload_answers_htmx_with_the_progress_block_and_a_plain_form_with_a_redirect(app, manager):
    data = csv_bytes(EN_HEADER, ["Ann,13900000001,1,,,,"])
    plain = upload(manager, data)
    assert plain.status_code == 303 and plain.headers["Location"].startswith(f"{IMPORTS}/")
    fragment = upload(manager, data, htmx=True)
    assert fragment.status_code == 200 and not is_full_page(fragment)
    import_id = import_id_of(fragment)
    assert fragment.headers["HX-Push-Url"] == f"{IMPORTS}/{import_id}"
    assert "HX-Request" in fragment.headers["Vary"]
    # the import page's content, for the page's main area: its heading and the progress that polls
    assert f"Import #{import_id}" in text_of(fragment) and polls(fragment)
    assert 'class="card import-progress"' in fragment.get_data(as_text=True)
    assert 'hx-target="#main"' in upload(manager, b"", htmx=True).get_data(as_text=True)  # a refusal: the form


def test_the_import_page_full_and_as_a_fragment(app, manager):
    import_id, _done = import_file(manager, csv_bytes(EN_HEADER, ["Ann,13900000001,1,,,,", "Bob,x,1,,,,"]))
    full = manager.get(f"{IMPORTS}/{import_id}")
    assert full.status_code == 200 and is_full_page(full)
    assert f"Import #{import_id}" in text_of(full)
    fragment = manager.get(f"{IMPORTS}/{import_id}", htmx=True)
    assert fragment.status_code == 200 and not is_full_page(fragment)
    assert "HX-Request" in fragment.headers["Vary"]
    assert refused_rows(fragment) == refused_rows(full) == {3: "“x” is not a mobile phone number."}


def test_the_list_shows_recent_imports_with_their_counts(app, manager):
    import_id, _done = import_file(manager, csv_bytes(EN_HEADER, ["Ann,13900000001,7,,,,", "Bob,x,1,,,,"]),
                                   filename="old-system.csv")
    page = manager.get(IMPORTS)
    assert page.status_code == 200 and is_full_page(page)
    match = re.search(rf'<tr id="import-row-{import_id}">(.*?)</tr>', text_of(page), re.S)
    cells = [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", match.group(1), re.S)]
    assert cells[0] == f"#{import_id}" and cells[1] == "old-system.csv"
    assert cells[4:] == ["2", "1", "0", "1", "7", "Done"]


def test_reasons_are_shown_in_the_readers_language(app, manager):
    import_id, _done = import_file(manager, csv_bytes(EN_HEADER, ["Ann,13900000001,1,,,,", "Bob,x,1,,,,"]))
    with app.app_context():
        entries = imports.report(db.session.get(MemberImport, import_id), "refused")
    assert entries == [{"row": 3, "outcome": "refused", "reason": "phone_invalid", "params": {"value": "x"}}]
    chinese = manager.get(f"{IMPORTS}/{import_id}", headers={"Accept-Language": "zh"})
    assert chinese.status_code == 200 and 'lang="zh-Hans"' in chinese.get_data(as_text=True)
    assert "x" in refused_rows(chinese)[3]


def test_an_oversized_upload_by_a_cashier_shows_no_import_form(app, client, login):
    login(client, "cashier")
    response = upload_in_memory(client, b"name,phone\r\n" + b"x" * app.config["MAX_CONTENT_LENGTH"])
    assert response.status_code in (403, 413)
    assert 'name="file"' not in text_of(response)
    with app.app_context():
        assert count(MemberImport) == 0
