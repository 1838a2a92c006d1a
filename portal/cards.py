"""Card numbers: 10 digits, the last a Luhn check digit, so a mistyped number is caught."""
import secrets

CARD_LENGTH = 10


def luhn_check_digit(payload: str) -> str:
    total = 0
    for index, char in enumerate(reversed(payload)):
        digit = int(char)
        if index % 2 == 0:  # these positions are doubled once the check digit is appended
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return str((10 - total % 10) % 10)


def is_valid_card_number(number: str) -> bool:
    return (
        len(number) == CARD_LENGTH
        and number.isdigit()
        and number.isascii()
        and luhn_check_digit(number[:-1]) == number[-1]
    )


def new_card_number() -> str:
    """A random card number that does not start with 0 (so spreadsheets keep it intact)."""
    payload = str(secrets.randbelow(9 * 10 ** (CARD_LENGTH - 2)) + 10 ** (CARD_LENGTH - 2))
    return payload + luhn_check_digit(payload)
