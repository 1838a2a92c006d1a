"""The gettext catalogs: complete in both languages, and really used by the app.

No database is needed: the app is built on an empty SQLite file only to get a request context,
and the catalogs are compiled from the .po files into a temporary folder, so the tests do not
depend on `make compile-translations` having been run.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po, write_po
from flask import render_template_string
from flask_babel import force_locale, get_locale, get_translations, gettext, lazy_gettext

from portal import create_app, i18n_tools
from portal.config import TestConfig
from portal.extensions import babel

ROOT = Path(__file__).resolve().parent.parent
TRANSLATIONS = ROOT / "translations"


# ----------------------------------------------------------------------------- the real catalogs

def test_catalogs_are_complete():
    """Every extracted msgid is translated, not fuzzy, with the same placeholders (run `make translations`)."""
    problems = i18n_tools.check(ROOT)
    assert problems == [], "\n".join(["catalogs incomplete:"] + problems)


def test_the_app_reads_the_catalogs_from_the_translations_folder():
    assert Path(TestConfig.BABEL_TRANSLATION_DIRECTORIES) == TRANSLATIONS
    for locale in ("zh", "en"):
        assert (TRANSLATIONS / locale / "LC_MESSAGES" / "messages.po").is_file()


@pytest.fixture
def compiled(tmp_path) -> Path:
    """The .po catalogs compiled into tmp_path/translations, as `pybabel compile --use-fuzzy` does."""
    out = tmp_path / "translations"
    for locale in ("zh", "en"):
        with (TRANSLATIONS / locale / "LC_MESSAGES" / "messages.po").open("rb") as fileobj:
            catalog = read_po(fileobj, locale=locale)
        target = out / locale / "LC_MESSAGES"
        target.mkdir(parents=True)
        with (target / "messages.mo").open("wb") as fileobj:
            write_mo(fileobj, catalog, use_fuzzy=True)
    return out


@pytest.fixture
def i18n_app(tmp_path, compiled):
    # Flask-Babel keeps loaded catalogs on the shared Babel object for the whole process;
    # start and end with an empty cache so no other test sees these (or stale) catalogs.
    app = create_app(TestConfig, {
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'unused.db'}",
        "BABEL_TRANSLATION_DIRECTORIES": str(compiled),
    })
    with app.app_context():
        babel.domain_instance.cache.clear()
    yield app
    with app.app_context():
        babel.domain_instance.cache.clear()


def test_chinese_catalog_translates(i18n_app):
    with i18n_app.test_request_context("/", headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.5"}):
        assert str(get_locale()) == "zh"
        assert gettext("Sign in") == "登录"
        assert gettext("The member has only %(balance)s points.", balance="1,234") == "该会员仅有1,234积分。"
        assert str(lazy_gettext("Pay with points")) == "积分抵扣"
        page = render_template_string(
            "{{ _('Staff sign-in') }}|{{ _('Member discount (%(percent)s)', percent='5%') }}"
        )
        assert page == "员工登录|会员折扣（5%）"


def test_english_catalog_is_english(i18n_app):
    with i18n_app.test_request_context("/", headers={"Accept-Language": "en-GB,en;q=0.8"}):
        assert str(get_locale()) == "en"
        catalog = get_translations()
        assert catalog.gettext("Sign in") == "Sign in"  # found in the English catalog, not a fallback
        assert "Sign in" in getattr(catalog, "_catalog", {})
        assert gettext("The member has only %(balance)s points.", balance="12") == "The member has only 12 points."
        assert render_template_string("{{ _('Sign in') }}") == "Sign in"


def test_the_language_switch_wins_over_the_browser(i18n_app):
    with i18n_app.test_request_context("/", headers={"Accept-Language": "en"}):
        from flask import session

        session["lang"] = "zh"
        assert gettext("Sign out") == "退出登录"
        with force_locale("en"):
            assert gettext("Sign out") == "Sign out"


# ----------------------------------------------------------------------------- the tools themselves

def _catalog(locale: str, messages: dict, fuzzy: set = frozenset()) -> Catalog:
    catalog = Catalog(locale=locale, fuzzy=False)
    for msgid, msgstr in messages.items():
        flags = ("fuzzy",) if msgid in fuzzy else ()
        catalog.add(msgid, msgstr, flags=flags)
    return catalog


def test_check_reports_missing_empty_fuzzy_and_placeholder_mismatches():
    template = _catalog(None, {
        "Sign in": "", "Points": "", "Due": "", "Paid": "",
        "The member has only %(balance)s points.": "", "Up to %(points)s": "", "Name": "",
    })
    zh = _catalog("zh", {
        "Sign in": "登录",
        "Points": "",
        "Due": "应付",
        "The member has only %(balance)s points.": "该会员仅有%(points)s积分。",
        "Up to %(points)s": "最多100%可用%(points)s",
        "Name": "姓名",
    }, fuzzy={"Due"})
    en = _catalog("en", {key: key for key in ("Sign in", "Points", "Due", "Paid", "Up to %(points)s", "Name",
                                               "The member has only %(balance)s points.")})
    problems = i18n_tools.find_problems(template, {"zh": zh, "en": en})
    assert problems == [
        "zh: 'Points': empty",
        "zh: 'Due': fuzzy",
        "zh: 'Paid': missing",
        "zh: 'The member has only %(balance)s points.': placeholders differ: missing %(balance)s; unknown %(points)s",
        "zh: 'Up to %(points)s': a lone '%' (write '%%') breaks formatting",
    ]
    assert i18n_tools.find_problems(template, {"zh": None}) == ["zh: no catalog"]


def test_check_extracts_lazy_strings_and_templates_like_babel_cfg():
    template = i18n_tools.extract_messages(ROOT)
    ids = {message.id for message in template if message.id}
    assert "Pay with points" in ids  # _l() in portal/till/forms.py
    assert "Staff sign-in" in ids  # _() in templates/auth/login.html
    assert "Wrong username or password." in ids  # _() in portal/auth/routes.py


def test_fill_english(tmp_path):
    catalog = Catalog(locale="en", fuzzy=False)
    catalog.add("Sign in", "")
    catalog.add("Sign out", "Log out")  # a deliberate English wording is kept
    catalog.add("Paid with %(points)s points", "Paid with points", flags=("fuzzy",))  # stale after a msgid change
    catalog.add(("%(num)s point", "%(num)s points"), ("", ""))
    path = tmp_path / "messages.po"
    with path.open("wb") as fileobj:
        write_po(fileobj, catalog)

    assert i18n_tools.fill_english(path) == 3

    with path.open("rb") as fileobj:
        filled = read_po(fileobj, locale="en")
    assert filled.get("Sign in").string == "Sign in"
    assert filled.get("Sign out").string == "Log out"
    assert filled.get("Paid with %(points)s points").string == "Paid with %(points)s points"
    assert not filled.get("Paid with %(points)s points").fuzzy
    assert filled.get("%(num)s point").string == ("%(num)s point", "%(num)s points")
    assert i18n_tools.fill_english(path) == 0
