"""Money in integer fen: parsing what a cashier types, and showing it back."""
import re
import unicodedata

_MONEY = re.compile(r"^([0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.([0-9]*))?$")
_POINTS = re.compile(r"^([0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class InputError(ValueError):
    """A value a person typed that cannot be used; the message is shown beside the field."""


def normalise_text(value: str | None) -> str:
    """Full-width digits, signs and spaces become their ASCII forms (NFKC); control characters go; trimmed."""
    return _CONTROL.sub("", unicodedata.normalize("NFKC", value or "")).strip()


def parse_money(value: str | None, cap_fen: int) -> int:
    """Parse '12', '12.5', '12.50', '¥12.50', '１２．５' into fen; refuse anything else.

    Messages are lazy gettext strings so they render in the reader's language.
    """
    from flask_babel import lazy_gettext as _l

    text = normalise_text(value)
    if text.startswith("¥"):
        text = text[1:].strip()
    if not text:
        raise InputError(_l("Enter an amount."))
    if text.startswith("-"):
        raise InputError(_l("The amount must be more than zero."))
    match = _MONEY.match(text)
    if not match:
        raise InputError(_l("Enter an amount in yuan, such as 12.50."))
    whole, decimals = match.group(1).replace(",", ""), match.group(2) or ""
    if len(decimals) > 2:
        raise InputError(_l("Use at most two decimal places."))
    if len(whole) > 15:
        raise InputError(_l("The amount is more than the limit of %(cap)s.", cap=format_yuan(cap_fen)))
    fen = int(whole) * 100 + int(decimals.ljust(2, "0") or 0)
    if fen <= 0:
        raise InputError(_l("The amount must be more than zero."))
    if fen > cap_fen:
        raise InputError(_l("The amount is more than the limit of %(cap)s.", cap=format_yuan(cap_fen)))
    return fen


def parse_points(value: str | None) -> int:
    """Parse a whole, non-negative number of points; empty means 0."""
    from flask_babel import lazy_gettext as _l

    text = normalise_text(value)
    if not text:
        return 0
    if text.startswith("-"):
        raise InputError(_l("Points cannot be negative."))
    if not _POINTS.match(text):
        raise InputError(_l("Enter a whole number of points."))
    text = text.replace(",", "")
    if len(text) > 12:
        raise InputError(_l("That is more points than the balance."))
    return int(text)


def format_yuan(fen: int) -> str:
    """¥1,234.56 (and -¥1.00 for negatives)."""
    sign = "-" if fen < 0 else ""
    whole, part = divmod(abs(int(fen)), 100)
    return f"{sign}¥{whole:,}.{part:02d}"


def round_half_up_div(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded half up, for non-negative integers."""
    return (2 * numerator + denominator) // (2 * denominator)
