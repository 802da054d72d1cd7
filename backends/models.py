"""The domain: stores, products, stock levels, movements, as the backends return them.

Money is `Decimal`, never float; times are UTC; quantities are integers.  The grammar of
each value is `backends.values`; the rules that change them are `backends.rules`.

A result a backend returns for a request it had applied before (the same idempotency
key again) is the first result, marked `replayed`: nothing changed this time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from .auth import StoredToken, StoredUser
from .rules import MAIN_STORE
from .values import MAX_PRICE, MAX_QUANTITY

__all__ = [
    "ACTIONS",
    "MAIN_STORE",
    "MAX_PRICE",
    "MAX_QUANTITY",
    "MOVEMENT_FIELDS",
    "SORT_KEYS",
    "SOURCES",
    "AppliedEvent",
    "Edited",
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
    "utcnow",
]

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


@dataclass(frozen=True, slots=True)
class Store:
    """A shop or warehouse, named by a slug `code`."""

    code: str
    name: str
    replayed: bool = field(default=False, compare=False)


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
    replayed: bool = field(default=False, compare=False)


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
    replayed: bool = field(default=False, compare=False)

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
class Edited:
    """What `edit_product` did: the product after it, and the text the history recorded
    for the change (`price 4.50 -> 4.75`), None when nothing differed."""

    product: Product
    changes: str | None
    replayed: bool = field(default=False, compare=False)


@dataclass(frozen=True, slots=True)
class AppliedEvent:
    """An idempotency key a backend remembers: the fingerprint of the request it was
    first used for, when, and that request's result as JSON (see `backends.requests`).
    `inv migrate` carries them, so a retry after a migration is still applied once."""

    event_id: str
    fingerprint: str
    at: datetime
    result: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A whole inventory, for migrating it: stores, products with stock, history (oldest
    first, with its ids), the idempotency keys with their results, and the users and API
    tokens as stored (password hashes and token digests, never a secret: there is none)."""

    stores: list[Store]
    products: list[Product]
    history: list[Movement]
    events: list[AppliedEvent] = field(default_factory=list)
    users: list[StoredUser] = field(default_factory=list)
    tokens: list[StoredToken] = field(default_factory=list)


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
