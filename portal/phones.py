"""Phone numbers: normalised to E.164 (default region CN) and masked for cashiers."""
import re

import phonenumbers

from .money import normalise_text

DEFAULT_REGION = "CN"
_CN_MOBILE = re.compile(r"^1[3-9]\d{9}$")


class PhoneError(ValueError):
    pass


def normalise_phone(value: str | None, region: str = DEFAULT_REGION) -> str:
    """Return the E.164 form of a phone number, or raise PhoneError."""
    text = normalise_text(value)
    text = re.sub(r"[\s\-()]", "", text)
    if not text or not re.fullmatch(r"\+?\d{5,17}", text):
        raise PhoneError("not a phone number")
    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        raise PhoneError(str(exc)) from exc
    if parsed.country_code == 86:
        if not _CN_MOBILE.match(str(parsed.national_number)):
            raise PhoneError("not a mainland mobile number")
    elif not phonenumbers.is_valid_number(parsed):
        raise PhoneError("not a valid number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def national_digits(e164: str) -> str:
    parsed = phonenumbers.parse(e164, None)
    return str(parsed.national_number)


def mask_phone(e164: str | None) -> str:
    """138****5678: the first three and last four digits of the national number."""
    if not e164:
        return ""
    digits = national_digits(e164)
    if len(digits) <= 7:
        return "*" * (len(digits) - 4) + digits[-4:]
    return digits[:3] + "*" * (len(digits) - 7) + digits[-4:]


_LONG_DIGIT_RUN = re.compile(r"\d[\d \-]{5,}\d")


def mask_numbers_in(text: str | None) -> str | None:
    """Free text (a search typed by staff) with every run of seven or more digits masked like a phone, so the
    audit log can say what was searched for without holding a phone number."""
    if not text:
        return text

    def mask(match: re.Match) -> str:
        digits = re.sub(r"\D", "", match.group(0))
        if len(digits) < 7:
            return match.group(0)
        if len(digits) <= 8:
            return "*" * (len(digits) - 4) + digits[-4:]
        return digits[:3] + "*" * (len(digits) - 7) + digits[-4:]

    return _LONG_DIGIT_RUN.sub(mask, text)


def display_phone(e164: str | None) -> str:
    """The full national number, for the member themself and managers."""
    if not e164:
        return ""
    parsed = phonenumbers.parse(e164, None)
    if parsed.country_code == 86:
        return str(parsed.national_number)
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
