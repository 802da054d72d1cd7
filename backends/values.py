"""The grammar of every value inv takes in, written once.

A CLI argument, an import row, the JSON file's contents, a Kafka event and a setting
are all checked by the one function here for their kind, so `" mug "`, `1_000`, an NFD
spelling or a zero-width space mean the same thing (or are refused the same way)
everywhere.  Each function returns the value in its one stored form or raises
`ValidationError` naming the field; nothing downstream checks it again.

Text is NFC-normalised and trimmed.  Numbers are ASCII digits only (no `1_000`, no
Arabic-Indic digits), within the same bounds on every backend.  Two SKUs are the same
product when their `sku_key`s are equal: the case-folded NFC form, which PostgreSQL
keeps in a column with a unique index, so the database enforces the same identity.
"""

from __future__ import annotations

import math
import re
import unicodedata
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from .errors import ValidationError

__all__ = [
    "MAX_LIMIT",
    "MAX_PRICE",
    "MAX_QUANTITY",
    "MAX_SECONDS",
    "actor",
    "age",
    "category",
    "delta",
    "idempotency_key",
    "integer",
    "limit",
    "moment",
    "name",
    "networks",
    "offset",
    "password",
    "price",
    "quantity",
    "reason",
    "reorder_level",
    "seconds",
    "sku",
    "sku_key",
    "store_code",
    "text",
    "text_key",
    "unit",
    "username",
]

#: Quantities fit a signed 32-bit integer so every backend can store them the same way.
MAX_QUANTITY = 2**31 - 1
#: Prices fit NUMERIC(12, 2).
MAX_PRICE = Decimal("9999999999.99")
#: The most rows a read may ask for, or skip, on any backend.
MAX_LIMIT = MAX_QUANTITY
#: The longest wait a setting may ask for: a day.
MAX_SECONDS = 86400.0

_CENT = Decimal("0.01")
_INT_OR_TEXT = (int, str)
_STORE_CODE = re.compile(r"[a-z0-9_-]{1,64}", re.ASCII)
_INTEGER = re.compile(r"[+-]?[0-9]+", re.ASCII)
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)", re.ASCII)
_USERNAME = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}", re.ASCII)
_AGE = re.compile(r"([0-9]+)\s*(s|m|h|d|w|mo|y)", re.ASCII)
#: Longest text a number may be given as (the largest values need far fewer digits).
_NUMBER_TEXT = 40

#: Characters no text may hold: controls (C0, DEL, C1), line and paragraph separators.
_CONTROL_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})
#: What text stored by an earlier inv may hold that new text may not (C1 controls, line
#: and paragraph separators, and in SKUs invisible characters): it stays readable and
#: can be looked up, so no inventory is locked out by a rule that came later.
_EARLIER_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: What a SKU may not hold besides: characters that print as nothing or look like a
#: space (format characters such as U+200B, private use, unassigned, other spaces).
_INVISIBLE_CATEGORIES = frozenset({"Cf", "Co", "Cn", "Zs"})


def text(value: object, *, field: str, max_length: int = 200, existing: bool = False) -> str:
    """Free text (a name, a unit, a reason): NFC, trimmed, 1-`max_length` characters,
    no control characters and nothing that was not UTF-8.

    `existing`: text already stored (or a SKU looked up rather than created) is held to
    the rules it was written under: only C0 controls and bytes that were not UTF-8 are
    refused."""
    if not isinstance(value, str):
        raise ValidationError(f"{field}: {value!r} is not text", field=field)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: bytes that were not UTF-8
        raise ValidationError(f"{field}: is not valid UTF-8", field=field) from None
    if len(value) > max_length * 4 + 64:  # refuse a huge value before normalising it
        raise ValidationError(f"{field}: longer than {max_length} characters", field=field)
    result = unicodedata.normalize("NFC", value).strip()
    if not result:
        raise ValidationError(f"{field}: must not be empty", field=field)
    if len(result) > max_length:
        raise ValidationError(f"{field}: longer than {max_length} characters", field=field)
    if existing:
        found = _EARLIER_CONTROL.search(result)
        if found:
            raise ValidationError(
                f"{field}: contains a control character (U+{ord(found.group()):04X})",
                field=field,
            )
    elif not result.isprintable():  # fast path: most text is printable throughout
        for char in result:
            if unicodedata.category(char) in _CONTROL_CATEGORIES:
                raise ValidationError(
                    f"{field}: contains a control character (U+{ord(char):04X})", field=field
                )
    return result


def _optional_text(
    value: object, *, field: str, max_length: int, existing: bool = False
) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return text(value, field=field, max_length=max_length, existing=existing)


def sku(value: object, *, field: str = "sku", existing: bool = False) -> str:
    """A SKU: text of 1-64 characters, case kept, with no invisible character (a
    zero-width space, a soft hyphen, a no-break space) that would make two SKUs look
    alike.  Compare SKUs with `sku_key`.

    `existing`: a SKU that names a product rather than creates one (a lookup, a stored
    one) follows the rules of `text(existing=True)`, so a product an earlier inv let in
    can still be reached, changed and removed."""
    result = text(value, field=field, max_length=64, existing=existing)
    if not existing and not result.isascii():
        for char in result:
            if char != " " and unicodedata.category(char) in _INVISIBLE_CATEGORIES:
                raise ValidationError(
                    f"{field}: contains an invisible character (U+{ord(char):04X})", field=field
                )
    return result


def text_key(value: str) -> str:
    """How text compares when case is ignored: the case-folded NFC form."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", value).casefold())


def sku_key(value: str) -> str:
    """How SKUs compare: trimmed, NFC, case-folded (`straße` is `STRASSE`, and an NFD
    spelling is the NFC one).  Every backend and the database's unique index use it."""
    value = value.strip()
    if value.isascii():
        return value.lower()  # the same as casefold for ASCII, and much faster
    return text_key(value)


def store_code(value: object, *, field: str = "store") -> str:
    """A store code: a slug of lower-case ASCII letters, digits, `-` and `_`, at most 64
    (input is trimmed and lower-cased)."""
    if not isinstance(value, str):
        raise ValidationError(f"{field}: {value!r} is not a store code", field=field)
    code = value.strip()
    if not code:
        raise ValidationError(f"{field}: must not be empty", field=field)
    if code.isascii():
        code = code.lower()
        if _STORE_CODE.fullmatch(code):
            return code
    shown = value if len(value) <= 80 else value[:77] + "..."
    raise ValidationError(
        f"{field}: {shown!r} is not a store code "
        "(lower-case letters, digits, '-' and '_', at most 64)",
        field=field,
    )


def name(value: object, *, field: str = "name", existing: bool = False) -> str:
    """A product or store name."""
    return text(value, field=field, max_length=200, existing=existing)


def unit(value: object, *, field: str = "unit", existing: bool = False) -> str:
    """A unit of measure: each, kg, box, ..."""
    return text(value, field=field, max_length=32, existing=existing)


def category(value: object, *, field: str = "category", existing: bool = False) -> str | None:
    """A category, or None; an empty one means none."""
    return _optional_text(value, field=field, max_length=100, existing=existing)


def reason(value: object, *, field: str = "reason", existing: bool = False) -> str | None:
    """Why stock moved (sale, restock, count, damage, ...), or None."""
    return _optional_text(value, field=field, max_length=200, existing=existing)


def idempotency_key(value: object, *, field: str = "idempotency_key") -> str:
    """An idempotency key (event id): 1-200 characters without control characters,
    trimmed and otherwise kept exactly as given (no Unicode normalisation: a key is
    compared as the bytes a script sent, as every earlier inv compared it)."""
    if not isinstance(value, str):
        raise ValidationError(f"{field}: {value!r} is not text", field=field)
    key = value.strip()
    text(key, field=field, max_length=200, existing=True)
    if len(key) > 200:
        raise ValidationError(f"{field}: longer than 200 characters", field=field)
    return key


def actor(value: object, *, field: str = "actor") -> str:
    """Who the history names: 1-200 printable characters on one line."""
    return text(value, field=field, max_length=200)


def username(value: object, *, field: str = "username") -> str:
    """A user's name: 1-64 of lower-case letters, digits, `.`, `_`, `@`, `-`, starting
    with a letter or digit; given in any case, kept lower-cased (so `Ann` is `ann`)."""
    if not isinstance(value, str):
        raise ValidationError(f"{field}: {value!r} is not text", field=field)
    name = value.strip().lower()
    if not _USERNAME.fullmatch(name):
        raise ValidationError(
            f"{field}: {_shown(value)} is not a user name (1-64 of a-z, 0-9, '.', '_', "
            "'@', '-', starting with a letter or digit)",
            field=field,
        )
    return name


def networks(value: object, *, field: str = "allowed_networks") -> list[Any]:
    """IP networks, comma-separated: CIDRs or single addresses (`10.0.0.0/8,
    192.168.1.7`); none for None or blank."""
    import ipaddress

    if value is None:
        return []
    if not isinstance(value, str):
        raise ValidationError(f"{field}: {value!r} is not text", field=field)
    found = []
    for part in (p.strip() for p in value.split(",")):
        if part:
            try:
                found.append(ipaddress.ip_network(part, strict=False))
            except ValueError:
                raise ValidationError(
                    f"{field}: {_shown(part)} is not a network (10.0.0.0/8, 192.168.1.7)",
                    field=field,
                ) from None
    return found


def password(value: object, *, field: str = "password") -> str:
    """A password: 8-1024 characters, kept exactly as given (no trimming: every
    character counts), with no NUL and nothing that was not UTF-8."""
    if not isinstance(value, str):
        raise ValidationError(f"{field}: is not text", field=field)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(f"{field}: is not valid UTF-8", field=field) from None
    if "\x00" in value:
        raise ValidationError(f"{field}: contains a NUL character", field=field)
    if len(value) < 8:
        raise ValidationError(f"{field}: shorter than 8 characters", field=field)
    if len(value) > 1024:
        raise ValidationError(f"{field}: longer than 1024 characters", field=field)
    return value


def integer(value: object, *, field: str, minimum: int, maximum: int = MAX_QUANTITY) -> int:
    """A whole number within bounds, given as an int or as ASCII digits with an optional
    sign; never a float, `1.5`, `1_000` or digits of another script."""
    if isinstance(value, bool) or not isinstance(value, _INT_OR_TEXT):
        raise ValidationError(f"{field}: {value!r} is not a whole number", field=field)
    if isinstance(value, int):
        number = value
    else:
        given = value.strip()
        if not _INTEGER.fullmatch(given):
            shown = given if len(given) <= 40 else given[:37] + "..."
            raise ValidationError(f"{field}: {shown!r} is not a whole number", field=field)
        if len(given.lstrip("+-").lstrip("0")) > _NUMBER_TEXT:
            number = -(10**_NUMBER_TEXT) if given.startswith("-") else 10**_NUMBER_TEXT
        else:
            number = int(given, 10)
    if number < minimum:
        if minimum == 0:
            raise ValidationError(f"{field}: {_short(number)} is negative", field=field)
        raise ValidationError(f"{field}: {_short(number)} is less than {minimum}", field=field)
    if number > maximum:
        raise ValidationError(f"{field}: {_short(number)} is larger than {maximum}", field=field)
    return number


def _short(number: int) -> str:
    digits = str(number) if abs(number) < 10**_NUMBER_TEXT else "a number of 40 digits or more"
    return digits


def quantity(value: object, *, field: str = "quantity") -> int:
    """A stock quantity: a whole number, 0 or more."""
    return integer(value, field=field, minimum=0)


def delta(value: object, *, field: str = "change") -> int:
    """A stock change: a whole number, negative to take stock away."""
    return integer(value, field=field, minimum=-MAX_QUANTITY)


def reorder_level(value: object, *, field: str = "reorder_level") -> int:
    """The level at or below which stock is low; 0 means never low."""
    return integer(value, field=field, minimum=0)


def limit(value: object, *, field: str = "limit") -> int:
    """How many rows a read returns at most."""
    return integer(value, field=field, minimum=0, maximum=MAX_LIMIT)


def offset(value: object, *, field: str = "offset") -> int:
    """How many rows a read skips."""
    return integer(value, field=field, minimum=0, maximum=MAX_LIMIT)


def price(value: object, *, field: str = "price") -> Decimal:
    """A price: a decimal with at most 2 places, 0 to `MAX_PRICE`, as text of ASCII
    digits, an int or a `Decimal`; never a float (it cannot hold cents exactly)."""
    if isinstance(value, float):
        raise ValidationError(f"{field}: give the price as text, not a float", field=field)
    if isinstance(value, bool) or not isinstance(value, int | str | Decimal):
        raise ValidationError(f"{field}: {value!r} is not a price", field=field)
    if isinstance(value, str):
        given = value.strip()
        if len(given) > _NUMBER_TEXT or not _DECIMAL.fullmatch(given):
            shown = given if len(given) <= 40 else given[:37] + "..."
            raise ValidationError(f"{field}: {shown!r} is not a price", field=field)
        amount = Decimal(given)
    else:
        given = str(value)
        amount = Decimal(value)
        if not amount.is_finite():
            raise ValidationError(f"{field}: {given!r} is not a price", field=field)
    if amount < 0:
        raise ValidationError(f"{field}: {given} is negative", field=field)
    if amount > MAX_PRICE:
        shown = given if len(given) <= 40 else "a number of 40 digits or more"
        raise ValidationError(f"{field}: {shown} is larger than {MAX_PRICE}", field=field)
    try:
        cents = amount.quantize(_CENT)
    except InvalidOperation:  # pragma: no cover - bounded above, so it fits
        raise ValidationError(f"{field}: {given!r} is not a price", field=field) from None
    if cents != amount:
        raise ValidationError(f"{field}: {given} has more than 2 decimal places", field=field)
    return cents if cents else Decimal("0.00")  # never "-0.00"


def seconds(value: object, *, field: str) -> float:
    """A wait in seconds (a timeout): more than 0, at most a day, finite."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValidationError(f"{field}: {value!r} is not a number of seconds", field=field)
    if isinstance(value, str):
        given = value.strip()
        if len(given) > _NUMBER_TEXT or not _DECIMAL.fullmatch(given):
            raise ValidationError(f"{field}: {given!r} is not a number of seconds", field=field)
        number = float(given)
    else:
        number = float(value)
    if math.isnan(number) or number <= 0:
        raise ValidationError(f"{field}: must be more than 0 seconds", field=field)
    if number > MAX_SECONDS:
        raise ValidationError(f"{field}: must be at most {MAX_SECONDS:g} seconds", field=field)
    return number


# -- times ----------------------------------------------------------------------------

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def age(value: object, *, field: str, now: datetime | None = None) -> datetime:
    """A moment given as an age before `now` (UTC): a whole number and a unit, `s`
    seconds, `m` minutes, `h` hours, `d` days, `w` weeks, `mo` months, `y` years
    (`90s`, `15m`, `24h`, `7d`, `2w`, `18mo`, `7y`)."""
    given = value.strip() if isinstance(value, str) else ""
    match = _AGE.fullmatch(given)
    if not match:
        raise ValidationError(
            f"{field}: {_shown(value)} is not an age (90s, 15m, 24h, 7d, 2w, 18mo, 7y)",
            field=field,
        )
    return _before(now or datetime.now(UTC), match.group(1), match.group(2), field=field)


def _before(now: datetime, digits: str, unit: str, *, field: str) -> datetime:
    too_far = ValidationError(f"{field}: {digits}{unit} is too far back", field=field)
    if len(digits.lstrip("0")) > 12:
        raise too_far
    amount = int(digits)
    try:
        if unit in ("mo", "y"):
            months = now.year * 12 + now.month - 1 - amount * (12 if unit == "y" else 1)
            year, month = divmod(months, 12)
            if year < 1:
                raise too_far
            return now.replace(year=year, month=month + 1, day=min(now.day, 28))
        return now - timedelta(**{_UNITS[unit]: amount})
    except (OverflowError, ValueError):
        raise too_far from None


def moment(value: object, *, field: str = "since", now: datetime | None = None) -> datetime:
    """A moment in UTC: an ISO 8601 date or time (one without a zone is UTC), or an age
    (see `age`).  Years 1 to 9999."""
    given = value.strip() if isinstance(value, str) else ""
    match = _AGE.fullmatch(given)
    if match:
        return _before(now or datetime.now(UTC), match.group(1), match.group(2), field=field)
    if not given.isascii() or len(given) > 40:
        raise _not_a_moment(value, field)
    try:
        at = datetime.fromisoformat(given)
    except ValueError:
        raise _not_a_moment(value, field) from None
    if at.tzinfo is None:
        return at.replace(tzinfo=UTC)
    try:
        return at.astimezone(UTC)
    except OverflowError:
        raise ValidationError(
            f"{field}: {given} is outside the years 1 to 9999 in UTC", field=field
        ) from None


def _not_a_moment(value: object, field: str) -> ValidationError:
    return ValidationError(
        f"{field}: {_shown(value)} is not an ISO date or time (2026-11-01, "
        "2026-11-01T09:30Z) or an age (90s, 15m, 24h, 7d, 2w, 18mo, 7y)",
        field=field,
    )


def _shown(value: object) -> str:
    if isinstance(value, str) and len(value) > 40:
        return repr(value[:37] + "...")
    return repr(value)
