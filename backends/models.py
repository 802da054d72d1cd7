"""The domain: stores, products, stock levels, movements, and the rules for their values.

Every backend and the CLI parse values through the functions here, so a price, a SKU or
a store code means the same thing everywhere.  Money is `Decimal`, never float; times
are UTC; quantities are integers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

from .errors import ValidationError

__all__ = [
    "ACTIONS",
    "MAX_PRICE",
    "MAX_QUANTITY",
    "MOVEMENT_FIELDS",
    "SORT_KEYS",
    "SOURCES",
    "Item",
    "Movement",
    "MovementRow",
    "MovementSummary",
    "Product",
    "Snapshot",
    "Store",
    "StoreValue",
    "format_time",
    "is_low",
    "parse_delta",
    "parse_int",
    "parse_price",
    "parse_quantity",
    "parse_time",
    "utcnow",
    "validate_category",
    "validate_event_id",
    "validate_name",
    "validate_reason",
    "validate_sku",
    "validate_store_code",
    "validate_unit",
]

#: Quantities fit a signed 32-bit integer so every backend can store them the same way.
MAX_QUANTITY = 2**31 - 1
#: Prices fit NUMERIC(12, 2).
MAX_PRICE = Decimal("9999999999.99")
MAIN_STORE = "main"
ACTIONS = (
    "product.create",
    "product.update",
    "product.delete",
    "stock.adjust",
    "stock.set",
    "stock.transfer_out",
    "stock.transfer_in",
    "store.create",
    "store.delete",
    "audit.prune",
)
SOURCES = ("cli", "api", "import", "worker", "migrate")
SORT_KEYS = ("sku", "name", "quantity", "value")

_STORE_CODE = re.compile(r"[a-z0-9_-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")  # bytes that were not UTF-8 (surrogateescape)
_CENT = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class Store:
    """A shop or warehouse, named by a slug `code`."""

    code: str
    name: str


@dataclass(frozen=True, slots=True)
class Product:
    """A catalog entry; `stock` maps each store it is stocked at to its quantity there."""

    sku: str
    name: str
    price: Decimal
    unit: str = "each"
    category: str | None = None
    reorder_level: int = 0
    stock: dict[str, int] = field(default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True)
class Item:
    """One row of `list`: a product at one store (`store` None when stocked nowhere)."""

    sku: str
    name: str
    price: Decimal
    unit: str
    category: str | None
    reorder_level: int
    store: str | None
    quantity: int

    @property
    def value(self) -> Decimal:
        return self.price * self.quantity


@dataclass(frozen=True, slots=True)
class Movement:
    """One audit entry: a single change, append-only."""

    id: int
    at: datetime
    actor: str
    source: str
    event_id: str
    store: str | None
    sku: str | None
    action: str
    delta: int | None
    quantity_after: int | None
    reason: str | None

    def row(self) -> MovementRow:
        """The fields in `MOVEMENT_FIELDS` order: a COPY row, a CSV line."""
        return (
            self.id,
            self.at,
            self.actor,
            self.source,
            self.event_id,
            self.store,
            self.sku,
            self.action,
            self.delta,
            self.quantity_after,
            self.reason,
        )

    @property
    def pending(self) -> bool:
        """Published and not applied yet (the kafka backend without `wait`): no id, and
        no quantity after, except a set's target."""
        return self.id == 0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A whole inventory, for migrating it: stores, products with stock, history."""

    stores: list[Store]
    products: list[Product]
    history: list[Movement]


#: An audit entry as a tuple, in `MOVEMENT_FIELDS` order (`Movement.row`).
MovementRow = tuple[
    int, datetime, str, str, str, str | None, str | None, str, int | None, int | None, str | None
]

#: The fields of an audit entry, in the order every file and table keeps them.
MOVEMENT_FIELDS = (
    "id",
    "at",
    "actor",
    "source",
    "event_id",
    "store",
    "sku",
    "action",
    "delta",
    "quantity_after",
    "reason",
)


@dataclass(frozen=True, slots=True)
class StoreValue:
    """One row of the stock-value report."""

    store: str
    products: int
    units: int
    value: Decimal


@dataclass(frozen=True, slots=True)
class MovementSummary:
    """One row of the movements report: what moved for one (store, sku) in a period."""

    store: str
    sku: str
    movements: int
    units_in: int
    units_out: int

    @property
    def net(self) -> int:
        return self.units_in - self.units_out


def is_low(quantity: int, reorder_level: int) -> bool:
    """Low stock: at or below the reorder level; a level of 0 means never low."""
    return reorder_level > 0 and quantity <= reorder_level


def utcnow() -> datetime:
    return datetime.now(UTC)


def format_time(at: datetime) -> str:
    """ISO 8601 in UTC with a `Z`, the form every file and JSON output uses."""
    return at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


_RELATIVE = re.compile(r"(\d+)\s*([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(text: str, *, field: str = "since", now: datetime | None = None) -> datetime:
    """An ISO 8601 date or time (naive means UTC), or a relative age such as `24h` or `7d`."""
    text = text.strip()
    match = _RELATIVE.fullmatch(text)
    if match:
        amount = timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
        return (now or utcnow()) - amount
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise ValidationError(
            f"{field}: {text!r} is not an ISO date or time (2026-11-01, 2026-11-01T09:30Z) "
            "or an age (24h, 7d)",
            field=field,
        ) from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC)


def parse_price(value: object, *, field: str = "price") -> Decimal:
    """A price: a decimal with at most 2 places, 0 or more.  Floats are refused outright."""
    if isinstance(value, float):
        raise ValidationError(f"{field}: give the price as text, not a float", field=field)
    if isinstance(value, bool):
        raise ValidationError(f"{field}: {value!r} is not a price", field=field)
    text = str(value).strip()
    try:
        price = Decimal(text)
    except InvalidOperation:
        raise ValidationError(f"{field}: {text!r} is not a number", field=field) from None
    if not price.is_finite():
        raise ValidationError(f"{field}: {text!r} is not a number", field=field)
    if price < 0:
        raise ValidationError(f"{field}: {text} is negative", field=field)
    exponent = price.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -2 and price != price.quantize(_CENT):
        raise ValidationError(f"{field}: {text} has more than 2 decimal places", field=field)
    if price > MAX_PRICE:
        raise ValidationError(f"{field}: {text} is larger than {MAX_PRICE}", field=field)
    return price.quantize(_CENT)


def parse_int(value: object, *, field: str, minimum: int, maximum: int = MAX_QUANTITY) -> int:
    """An integer within bounds; accepts int or its decimal text, never a float or `1.5`."""
    if isinstance(value, bool | float):
        raise ValidationError(f"{field}: {value!r} is not a whole number", field=field)
    if isinstance(value, int):
        number = value
    else:
        text = str(value).strip()
        try:
            number = int(text, 10)
        except ValueError:
            raise ValidationError(f"{field}: {text!r} is not a whole number", field=field) from None
    if number < minimum:
        if minimum == 0:
            raise ValidationError(f"{field}: {number} is negative", field=field)
        raise ValidationError(f"{field}: {number} is less than {minimum}", field=field)
    if number > maximum:
        raise ValidationError(f"{field}: {number} is larger than {maximum}", field=field)
    return number


def parse_quantity(value: object, *, field: str = "quantity") -> int:
    """A stock quantity: a whole number, 0 or more."""
    return parse_int(value, field=field, minimum=0)


def parse_delta(value: object, *, field: str = "change") -> int:
    """A stock change: a whole number, negative to take stock away."""
    return parse_int(value, field=field, minimum=-MAX_QUANTITY)


def _text(value: str, *, field: str, max_length: int) -> str:
    text = value.strip()
    if not text:
        raise ValidationError(f"{field}: must not be empty", field=field)
    if len(text) > max_length:
        raise ValidationError(f"{field}: longer than {max_length} characters", field=field)
    if _CONTROL.search(text):
        raise ValidationError(f"{field}: contains a control character", field=field)
    if _SURROGATE.search(text):
        raise ValidationError(f"{field}: is not valid UTF-8", field=field)
    return text


def validate_event_id(value: str, *, field: str = "idempotency_key") -> str:
    """An idempotency key (event id): 1-200 printable characters, kept as given."""
    _text(value, field=field, max_length=200)
    return value


def validate_sku(value: str, *, field: str = "sku") -> str:
    """A SKU: trimmed, 1-64 printable characters.  Case is kept; lookups ignore it."""
    return _text(value, field=field, max_length=64)


def validate_store_code(value: str, *, field: str = "store") -> str:
    """A store code: a slug of lower-case letters, digits, `-` and `_` (input is lower-cased)."""
    code = value.strip().lower()
    if not code:
        raise ValidationError(f"{field}: must not be empty", field=field)
    if len(code) > 64 or not _STORE_CODE.fullmatch(code):
        raise ValidationError(
            f"{field}: {value!r} is not a store code "
            "(lower-case letters, digits, '-' and '_', at most 64)",
            field=field,
        )
    return code


def validate_name(value: str, *, field: str = "name") -> str:
    return _text(value, field=field, max_length=200)


def validate_unit(value: str, *, field: str = "unit") -> str:
    return _text(value, field=field, max_length=32)


def validate_category(value: str | None, *, field: str = "category") -> str | None:
    """A category, or None; an empty one means none."""
    if value is None or not value.strip():
        return None
    return _text(value, field=field, max_length=100)


def validate_reason(value: str | None, *, field: str = "reason") -> str | None:
    if value is None or not value.strip():
        return None
    return _text(value, field=field, max_length=200)
