"""CSV cells a spreadsheet opens safely: a cell that could start a formula is neutralised (OWASP, CSV injection)."""
from __future__ import annotations

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet may take for the start of a formula


def neutralise(value) -> str:
    """The cell as text; one that starts like a formula gets a leading single quote. Numbers too (-354)."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def restore(value: str) -> str:
    """Undo `neutralise` on a cell read back from a file the portal wrote (corrected and uploaded again)."""
    return value[1:] if len(value) > 1 and value[0] == "'" and value[1:].startswith(FORMULA_STARTS) else value
