"""Every mutation as a typed request: its arguments checked once, for every backend, and
the fingerprint that idempotency compares.

Each backend's public method starts by building one of these, then does its storage's
part.  A fingerprint starts with the request's kind, so an idempotency key used for one
kind of request can never replay another; the same key for a different fingerprint is a
`Conflict` (`reused_key`).  The fingerprints' text is stored beside each key (in the JSON
file, in `applied_events`) and travels through `inv migrate`: it must stay stable.

What a key remembers is its first result, in one JSON form every backend reads: the
audit entries it wrote (`movements`, read with `result_movements`), and the product
(`product_json`), the store name or the batch figures (`batch_json`) where the request
returns them.  The JSON file keeps the entries as ids into its audit trail instead.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from . import rules, values
from .batch import COLUMNS, BatchResult, BatchRow, OnError
from .errors import Conflict, RowProblem, ValidationError
from .models import (
    MOVEMENT_FIELDS,
    SORT_KEYS,
    Movement,
    MovementRow,
    Product,
    format_time,
)

__all__ = [
    "AddStore",
    "Batch",
    "EditProduct",
    "NewProduct",
    "Page",
    "RemoveProduct",
    "RemoveStore",
    "Request",
    "StockChange",
    "Transfer",
    "add_store",
    "batch",
    "batch_from_json",
    "batch_json",
    "edit_product",
    "movement_from_json",
    "movement_json",
    "new_product",
    "page",
    "product_from_json",
    "product_json",
    "remove_product",
    "remove_store",
    "result_movements",
    "reused_key",
    "row_fingerprint",
    "row_json",
    "search",
    "stock_change",
    "transfer",
]


def reused_key(event_id: str, what: str = "request") -> Conflict:
    """The error for an idempotency key used before for a different request (or batch)."""
    return Conflict(
        f"idempotency key {event_id!r} was already used for a different {what}; nothing changed"
    )


def _key(event_id: str | None) -> str | None:
    return values.idempotency_key(event_id) if event_id is not None else None


class Request:
    """Base of the typed requests: each has its checked `event_id` (None: no key) and
    its `fingerprint`."""

    __slots__ = ()
    event_id: str | None

    @property
    def fingerprint(self) -> str:
        raise NotImplementedError


# -- stores ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AddStore(Request):
    code: str
    name: str
    event_id: str | None

    @property
    def fingerprint(self) -> str:
        return f"store.create|{self.code}|{self.name}"


def add_store(code: str, name: str | None, event_id: str | None) -> AddStore:
    checked = values.store_code(code)
    return AddStore(checked, values.name(name) if name is not None else checked, _key(event_id))


@dataclass(frozen=True, slots=True)
class RemoveStore(Request):
    code: str
    force: bool
    event_id: str | None

    @property
    def fingerprint(self) -> str:
        return f"store.delete|{self.code}|{self.force}"


def remove_store(code: str, force: bool, event_id: str | None) -> RemoveStore:
    checked = values.store_code(code)
    rules.check_store_removal(checked, None, force=force)
    return RemoveStore(checked, bool(force), _key(event_id))


# -- catalog ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewProduct(Request):
    sku: str | None
    name: str
    price: Decimal
    unit: str
    category: str | None
    reorder_level: int
    store: str
    quantity: int
    event_id: str | None = None

    @property
    def fingerprint(self) -> str:
        # The text of the first release's fingerprint: the fields but the key.
        return (
            f"product.create|NewProduct(sku={self.sku!r}, name={self.name!r}, "
            f"price={self.price!r}, unit={self.unit!r}, category={self.category!r}, "
            f"reorder_level={self.reorder_level!r}, store={self.store!r}, "
            f"quantity={self.quantity!r})"
        )

    def fields(self) -> dict[str, Any]:
        """The catalog fields, as the product keeps them."""
        return {
            "name": self.name,
            "price": self.price,
            "unit": self.unit,
            "category": self.category,
            "reorder_level": self.reorder_level,
        }


def new_product(
    name: str,
    price: Decimal | str,
    *,
    sku: str | None,
    store: str,
    quantity: int,
    unit: str,
    category: str | None,
    reorder_level: int,
    event_id: str | None = None,
) -> NewProduct:
    return NewProduct(
        sku=values.sku(sku) if sku is not None else None,
        name=values.name(name),
        price=values.price(price),
        unit=values.unit(unit),
        category=values.category(category),
        reorder_level=values.reorder_level(reorder_level),
        store=values.store_code(store),
        quantity=values.quantity(quantity),
        event_id=_key(event_id),
    )


@dataclass(frozen=True, slots=True)
class EditProduct(Request):
    sku: str
    changes: tuple[tuple[str, Any], ...]  # (field, new value), sorted by field
    event_id: str | None

    @property
    def fingerprint(self) -> str:
        return f"product.update|{values.sku_key(self.sku)}|{list(self.changes)}"


def edit_product(
    sku: str,
    *,
    name: str | None,
    price: Decimal | str | None,
    unit: str | None,
    category: str | None,
    reorder_level: int | None,
    event_id: str | None,
) -> EditProduct:
    """The catalog fields to change (None: leave it; category "": clear it)."""
    changes: dict[str, Any] = {}
    if name is not None:
        changes["name"] = values.name(name)
    if price is not None:
        changes["price"] = values.price(price)
    if unit is not None:
        changes["unit"] = values.unit(unit)
    if category is not None:
        changes["category"] = values.category(category)
    if reorder_level is not None:
        changes["reorder_level"] = values.reorder_level(reorder_level)
    return EditProduct(
        values.sku(sku, existing=True), tuple(sorted(changes.items())), _key(event_id)
    )


@dataclass(frozen=True, slots=True)
class RemoveProduct(Request):
    sku: str
    store: str | None  # None: from the catalog
    force: bool
    event_id: str | None

    @property
    def fingerprint(self) -> str:
        return f"product.delete|{values.sku_key(self.sku)}|{self.store}|{self.force}"


def remove_product(sku: str, store: str | None, force: bool, event_id: str | None) -> RemoveProduct:
    return RemoveProduct(
        values.sku(sku, existing=True),
        values.store_code(store) if store is not None else None,
        bool(force),
        _key(event_id),
    )


# -- stock -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StockChange(Request):
    """`adjust` (delta) or `set_quantity` (quantity) at one store."""

    store: str
    sku: str
    delta: int | None
    quantity: int | None
    expect: int | None
    reason: str | None
    event_id: str | None = None

    @property
    def action(self) -> str:
        return "stock.adjust" if self.delta is not None else "stock.set"

    @property
    def fingerprint(self) -> str:
        amount = self.delta if self.delta is not None else self.quantity
        return (
            f"{self.action}|{self.store}|{values.sku_key(self.sku)}|{amount}|"
            f"{self.expect}|{self.reason}"
        )


def stock_change(
    store: str,
    sku: str,
    *,
    delta: int | None = None,
    quantity: int | None = None,
    expect: int | None,
    reason: str | None,
    event_id: str | None = None,
) -> StockChange:
    if (delta is None) == (quantity is None):
        raise ValidationError("give a change or a quantity, not both or neither", field="change")
    return StockChange(
        store=values.store_code(store),
        sku=values.sku(sku, existing=True),
        delta=values.delta(delta) if delta is not None else None,
        quantity=values.quantity(quantity) if quantity is not None else None,
        expect=values.quantity(expect, field="expect") if expect is not None else None,
        reason=values.reason(reason),
        event_id=_key(event_id),
    )


@dataclass(frozen=True, slots=True)
class Transfer(Request):
    sku: str
    source: str
    target: str
    quantity: int
    reason: str | None
    event_id: str | None = None

    @property
    def fingerprint(self) -> str:
        return (
            f"stock.transfer|{values.sku_key(self.sku)}|{self.source}|{self.target}|"
            f"{self.quantity}|{self.reason}"
        )


def transfer(
    sku: str,
    from_store: str,
    to_store: str,
    quantity: int,
    reason: str | None,
    event_id: str | None = None,
) -> Transfer:
    checked_sku = values.sku(sku, existing=True)
    source = values.store_code(from_store, field="from")
    target = values.store_code(to_store, field="to")
    if source == target:
        raise ValidationError(f"cannot transfer from {source} to itself", field="to")
    return Transfer(
        sku=checked_sku,
        source=source,
        target=target,
        quantity=values.integer(quantity, field="qty", minimum=1),
        reason=values.reason(reason),
        event_id=_key(event_id),
    )


# -- batches ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Batch(Request):
    rows: Sequence[BatchRow]
    default_store: str
    on_error: OnError
    event_id: str | None

    @property
    def fingerprint(self) -> str:
        """A whole batch, for its idempotency key: every row, in order."""
        if self.event_id is None:
            return "batch"
        digest = hashlib.sha256(repr(list(self.rows)).encode()).hexdigest()
        return f"batch|{self.default_store}|{len(self.rows)}|{digest}"


def batch(
    rows: Sequence[BatchRow], *, default_store: str, on_error: str, event_id: str | None
) -> Batch:
    if on_error not in ("reject-all", "skip-rows"):
        raise ValidationError(
            f"on_error: {on_error!r} is not reject-all or skip-rows", field="on_error"
        )
    return Batch(rows, values.store_code(default_store), on_error, _key(event_id))  # type: ignore[arg-type]


def batch_json(result: BatchResult) -> dict[str, Any]:
    """A batch's figures, as its idempotency key remembers them (its entries are kept as
    every request's are: `movements`)."""
    return {
        "rows": result.rows,
        "applied": result.applied,
        "unchanged": result.unchanged,
        "duplicates": result.duplicates,
        "problems": [[p.row, p.column, p.reason] for p in result.problems],
    }


def batch_from_json(data: dict[str, Any], changes: list[Movement]) -> BatchResult:
    """The first result of a batch, replayed."""
    return BatchResult(
        rows=data["rows"],
        applied=data["applied"],
        unchanged=data["unchanged"],
        duplicates=data["duplicates"],
        problems=[RowProblem(*p) for p in data["problems"]],
        changes=changes,
        replayed=True,
    )


def row_fingerprint(row: BatchRow) -> str:
    """What a keyed batch row asks for, without where it stood in its file."""
    return "row|" + repr([getattr(row, column) for column in COLUMNS])


# -- reads -----------------------------------------------------------------------------


def search(text: str | None) -> str | None:
    """A `list` search, as the key it is looked for in (`values.text_key` of the SKU or
    the name); None for no search."""
    if text is None or not text.strip():
        return None
    return values.text_key(values.text(text, field="search", max_length=200))


@dataclass(frozen=True, slots=True)
class Page:
    sort: str
    descending: bool
    limit: int | None
    offset: int


def page(
    *, sort: str = "sku", descending: bool = False, limit: int | None, offset: int = 0
) -> Page:
    """A read's order and window: an unknown sort key, or a limit or offset out of
    bounds, is refused the same way on every backend."""
    if sort not in SORT_KEYS:
        raise ValidationError(f"sort: {sort!r} is not one of {', '.join(SORT_KEYS)}", field="sort")
    return Page(
        sort,
        bool(descending),
        values.limit(limit) if limit is not None else None,
        values.offset(offset),
    )


# -- results as JSON, for what idempotency remembers -----------------------------------


def result_movements(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The audit entries a key's first result holds (a batch of the first release kept
    them as `changes`)."""
    entries = result.get("movements", result.get("changes", []))
    return entries if isinstance(entries, list) else []


def movement_json(m: Movement) -> dict[str, Any]:
    return row_json(m.row())


def row_json(row: MovementRow, at: str | None = None) -> dict[str, Any]:
    """An audit entry as JSON, from its row; `at` is its time already formatted (a batch
    of entries shares one)."""
    return {
        **dict(zip(MOVEMENT_FIELDS, row, strict=True)),
        "at": at if at is not None else format_time(row[1]),
    }


def movement_from_json(data: dict[str, Any], *, replayed: bool = False) -> Movement:
    fields: dict[str, Any] = {name: data.get(name) for name in MOVEMENT_FIELDS}
    fields["at"] = datetime.fromisoformat(str(data["at"]).replace("Z", "+00:00"))
    return Movement(**fields, replayed=replayed)


def product_json(p: Product) -> dict[str, Any]:
    return {
        "sku": p.sku,
        "name": p.name,
        "price": str(p.price),
        "unit": p.unit,
        "category": p.category,
        "reorder_level": p.reorder_level,
        "stock": dict(p.stock),
    }


def product_from_json(data: dict[str, Any], *, replayed: bool = False) -> Product:
    return Product(
        sku=data["sku"],
        name=data["name"],
        price=Decimal(data["price"]),
        unit=data["unit"],
        category=data.get("category"),
        reorder_level=data.get("reorder_level", 0),
        stock=dict(data.get("stock", {})),
        replayed=replayed,
    )
