"""Gettext catalog chores, with nothing but Babel and the standard library (no Flask app code).

    python -m portal.i18n_tools fill-english translations/en/LC_MESSAGES/messages.po
        Give every English message whose msgstr is empty (or fuzzy, i.e. stale after a
        change of its msgid) its msgid as translation, plural forms too, clear the fuzzy
        flag, and write the file back. Run by `make translations` after `pybabel update`.

    python -m portal.i18n_tools check [--root DIR] [--translations DIR]
        Extract the messages afresh (the rules of babel.cfg, keyword _l besides Babel's
        defaults) and exit 1 listing every msgid that is missing from, empty in or fuzzy
        in a catalog (zh, en), and every translation whose placeholders differ from its
        msgid's. Exit 0 when the catalogs are complete.

The module also runs as a plain script (python portal/i18n_tools.py ...).
"""
from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from babel.messages.catalog import Catalog, Message
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_keywords, parse_mapping_cfg
from babel.messages.pofile import read_po, write_po

ROOT = Path(__file__).resolve().parent.parent
LOCALES = ("zh", "en")
DOMAIN = "messages"
EXTRA_KEYWORDS = ("_l",)  # as `pybabel extract -k _l` in the Makefile

# One printf-style conversion: %(name)s, %s, %5.2f, %% ...
_CONVERSION = re.compile(r"%(?:\((?P<name>[^)]*)\))?[#0 +-]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[hlL]?(?P<type>[diouxXeEfFgGcrsa%])")


# --------------------------------------------------------------------------- fill-english

def _fill(message: Message, num_plurals: int) -> bool:
    """Make an English message its own translation where it has none (or a stale one)."""
    if message.pluralizable:
        singular, plural = message.id[0], message.id[1]
        current = message.string if isinstance(message.string, (tuple, list)) else (message.string,)
        forms = list(current) + [""] * (num_plurals - len(current))
        wanted = [singular if index == 0 else plural for index in range(num_plurals)]
        if message.fuzzy:
            new = wanted
        else:
            new = [form or wanted[index] for index, form in enumerate(forms[:num_plurals])]
        changed = tuple(new) != tuple(current) or message.fuzzy
        message.string = tuple(new)
    else:
        changed = not message.string or message.fuzzy
        if changed:
            message.string = message.id
    if changed:
        message.flags.discard("fuzzy")
    return changed


def fill_english(path: str | Path) -> int:
    """Fill the English catalog at `path` in place; return how many messages changed."""
    path = Path(path)
    with path.open("rb") as fileobj:
        catalog = read_po(fileobj, locale="en", domain=DOMAIN)
    changed = sum(_fill(message, catalog.num_plurals) for message in catalog if message.id)
    if changed:
        with path.open("wb") as fileobj:
            write_po(fileobj, catalog)
    return changed


# --------------------------------------------------------------------------- check

def extract_messages(root: str | Path = ROOT, mapping_file: str | Path | None = None) -> Catalog:
    """The messages of the source tree as `pybabel extract -F babel.cfg -k _l` finds them."""
    root = Path(root)
    mapping_file = Path(mapping_file) if mapping_file else root / "babel.cfg"
    with mapping_file.open(encoding="utf-8") as fileobj:
        method_map, options_map = parse_mapping_cfg(fileobj, filename=str(mapping_file))
    keywords = dict(DEFAULT_KEYWORDS)
    keywords.update(parse_keywords(EXTRA_KEYWORDS))
    template = Catalog(fuzzy=False)
    for filename, lineno, message, comments, context in extract_from_dir(
        str(root), method_map, options_map, keywords=keywords
    ):
        template.add(message, None, [(filename, lineno)], auto_comments=comments, context=context)
    return template


def load_catalog(path: str | Path, locale: str) -> Catalog:
    with Path(path).open("rb") as fileobj:
        return read_po(fileobj, locale=locale, domain=DOMAIN)


class _AnyValue(Mapping):
    """A mapping that has every key, for trying a format string without its real values."""

    def __getitem__(self, key):
        return 0

    def __iter__(self):
        return iter(())

    def __len__(self):
        return 0


def _conversions(text: str) -> tuple[set[str], list[str], int]:
    """Named placeholders (as written, e.g. '%(points)s'), positional ones, and stray '%' signs."""
    named: set[str] = set()
    positional: list[str] = []
    covered = 0
    for match in _CONVERSION.finditer(text):
        covered += match.group(0).count("%")
        if match.group("name") is not None:
            named.add(match.group(0))
        elif match.group("type") != "%":
            positional.append(match.group("type"))
    stray = text.count("%") - covered
    return named, positional, stray


def _formats(text: str) -> bool:
    """True when `text % {...}` works, as Jinja's gettext always does it."""
    try:
        text % _AnyValue()
    except (ValueError, TypeError, KeyError):
        return False
    return True


def placeholder_problems(msgid: str | tuple, msgstr: str | tuple) -> list[str]:
    """How the placeholders of a translation differ from those of its msgid (empty when they agree)."""
    ids = list(msgid) if isinstance(msgid, (tuple, list)) else [msgid]
    forms = list(msgstr) if isinstance(msgstr, (tuple, list)) else [msgstr]
    id_named: set[str] = set()
    id_positional: list[str] = []
    for text in ids:
        named, positional, _stray = _conversions(text)
        id_named |= named
        id_positional = max(id_positional, positional, key=len)
    last_named = _conversions(ids[-1])[0]
    problems = []
    for index, form in enumerate(forms):
        if not form:
            continue
        named, positional, stray = _conversions(form)
        expected = id_named if len(ids) == 1 else last_named if index == len(forms) - 1 else None
        if expected is not None and named != expected:
            missing, extra = sorted(expected - named), sorted(named - expected)
            detail = []
            if missing:
                detail.append("missing " + ", ".join(missing))
            if extra:
                detail.append("unknown " + ", ".join(extra))
            problems.append("placeholders differ: " + "; ".join(detail))
        elif expected is None and not named <= id_named:
            problems.append("unknown placeholders " + ", ".join(sorted(named - id_named)))
        if positional != id_positional:
            problems.append(f"positional placeholders differ: {id_positional} vs {positional}")
        if stray and all(_formats(text) for text in ids) and not _formats(form):
            problems.append("a lone '%' (write '%%') breaks formatting")
    return problems


def _label(message: Message) -> str:
    msgid = message.id[0] if isinstance(message.id, (tuple, list)) else message.id
    return (f"[{message.context}] " if message.context else "") + repr(msgid)


def find_problems(template: Catalog, catalogs: Mapping[str, Catalog | None]) -> list[str]:
    """Every msgid of `template` missing, empty or fuzzy in a catalog, and every placeholder mismatch."""
    problems = []
    for locale, catalog in catalogs.items():
        if catalog is None:
            problems.append(f"{locale}: no catalog")
            continue
        for wanted in template:
            if not wanted.id:
                continue
            where = f"{locale}: {_label(wanted)}"
            found = catalog.get(wanted.id, context=wanted.context)
            if found is None:
                problems.append(f"{where}: missing")
                continue
            if isinstance(wanted.id, (tuple, list)) != isinstance(found.id, (tuple, list)):
                problems.append(f"{where}: plural forms differ from the source")
                continue
            forms = found.string if isinstance(found.string, (tuple, list)) else (found.string,)
            if not all(forms) or (found.pluralizable and len(forms) < catalog.num_plurals):
                problems.append(f"{where}: empty")
            if found.fuzzy:
                problems.append(f"{where}: fuzzy")
            for problem in placeholder_problems(found.id, found.string):
                problems.append(f"{where}: {problem}")
    return problems


def check(
    root: str | Path = ROOT, translations: str | Path | None = None, locales: Iterable[str] = LOCALES
) -> list[str]:
    """The problems of the catalogs under `translations` against a fresh extraction of `root`."""
    root = Path(root)
    translations = Path(translations) if translations else root / "translations"
    return find_problems(extract_messages(root), load_catalogs(translations, locales))


def load_catalogs(translations: str | Path, locales: Iterable[str] = LOCALES) -> dict[str, Catalog | None]:
    """The .po catalog of each locale under `translations`, or None where there is none."""
    translations = Path(translations)
    catalogs: dict[str, Catalog | None] = {}
    for locale in locales:
        path = translations / locale / "LC_MESSAGES" / f"{DOMAIN}.po"
        catalogs[locale] = load_catalog(path, locale) if path.exists() else None
    return catalogs


# --------------------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m portal.i18n_tools", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fill = commands.add_parser("fill-english", help="make English msgids their own translations")
    fill.add_argument("path", help="the English .po file")
    checker = commands.add_parser("check", help="fail unless every message is translated in every catalog")
    checker.add_argument("--root", default=str(ROOT), help="the project root (babel.cfg is read from it)")
    checker.add_argument("--translations", default=None, help="the catalogs' directory (default ROOT/translations)")
    args = parser.parse_args(argv)

    if args.command == "fill-english":
        changed = fill_english(args.path)
        print(f"{args.path}: {changed} English message(s) filled")
        return 0

    root = Path(args.root)
    template = extract_messages(root)
    problems = find_problems(template, load_catalogs(args.translations or root / "translations"))
    if problems:
        for problem in problems:
            print(problem)
        print(f"{len(problems)} problem(s) in the catalogs", file=sys.stderr)
        return 1
    print(f"catalogs complete: {sum(1 for message in template if message.id)} messages in {', '.join(LOCALES)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
