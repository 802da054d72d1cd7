"""A request's arguments, checked once for every backend, with the fingerprint that
idempotency compares (the same key for a different fingerprint is a `Conflict`).

Each backend's public method starts with one of these, then does its storage's part.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from .batch import BatchRow
from .errors import Conflict, ValidationError
from .models import (
    MOVEMENT_FIELDS,
    SORT_KEYS,
    Movement,
    MovementRow,
    Product,
    format_time,
    parse_delta,
    parse_int,
    parse_price,
    parse_quantity,
    validate_category,
    validate_name,
    validate_reason,
    validate_sku,
    validate_store_code,
    validate_unit,
)

__all__ = [
    "NewProduct",
    "StockChange",
    "Transfer",
    "batch_fingerprint",
    "check_page",
    "movement_from_json",
    "movement_json",
    "new_product",
    "product_changes",
    "product_from_json",
    "product_json",
    "reused_key",
    "row_json",
    "sku_key",
    "stock_change",
    "transfer",
]


def batch_fingerprint(rows: Sequence[BatchRow], default_store: str) -> str:
    """A whole batch, for its idempotency key: every row, in order."""
    digest = hashlib.sha256(repr(list(rows)).encode()).hexdigest()
    return f"batch|{default_store}|{len(rows)}|{digest}"


def reused_key(event_id: str, what: str = "request") -> Conflict:
    """The error for an idempotency key used before for a different request (or batch)."""
    return Conflict(
        f"idempotency key {event_id!r} was already used for a different {what}; nothing changed"
    )


def sku_key(sku: str) -> str:
    """How SKUs compare: trimmed, case ignored."""
    return sku.strip().casefold()


@dataclass(frozen=True, slots=True)
class NewProduct:
    sku: str | None
    name: str
    price: Decimal
    unit: str
    category: str | None
    reorder_level: int
    store: str
    quantity: int

    @property
    def fingerprint(self) -> str:
        return f"product.create|{self!r}"


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
) -> NewProduct:
    return NewProduct(
        sku=validate_sku(sku) if sku is not None else None,
        name=validate_name(name),
        price=parse_price(price),
        unit=validate_unit(unit),
        category=validate_category(category),
        reorder_level=parse_int(reorder_level, field="reorder_level", minimum=0),
        store=validate_store_code(store),
        quantity=parse_quantity(quantity),
    )


def product_changes(
    *,
    name: str | None,
    price: Decimal | str | None,
    unit: str | None,
    category: str | None,
    reorder_level: int | None,
) -> dict[str, Any]:
    """The catalog fields to change (None: leave it; category "": clear it)."""
    changes: dict[str, Any] = {}
    if name is not None:
        changes["name"] = validate_name(name)
    if price is not None:
        changes["price"] = parse_price(price)
    if unit is not None:
        changes["unit"] = validate_unit(unit)
    if category is not None:
        changes["category"] = validate_category(category)
    if reorder_level is not None:
        changes["reorder_level"] = parse_int(reorder_level, field="reorder_level", minimum=0)
    return changes


@dataclass(frozen=True, slots=True)
class StockChange:
    """`adjust` (delta) or `set_quantity` (quantity) at one store."""

    store: str
    sku: str
    delta: int | None
    quantity: int | None
    expect: int | None
    reason: str | None

    @property
    def action(self) -> str:
        return "stock.adjust" if self.delta is not None else "stock.set"

    @property
    def fingerprint(self) -> str:
        amount = self.delta if self.delta is not None else self.quantity
        return (
            f"{self.action}|{self.store}|{sku_key(self.sku)}|{amount}|{self.expect}|{self.reason}"
        )


def stock_change(
    store: str,
    sku: str,
    *,
    delta: int | None = None,
    quantity: int | None = None,
    expect: int | None,
    reason: str | None,
) -> StockChange:
    return StockChange(
        store=validate_store_code(store),
        sku=sku,
        delta=parse_delta(delta) if delta is not None else None,
        quantity=parse_quantity(quantity) if quantity is not None else None,
        expect=parse_quantity(expect, field="expect") if expect is not None else None,
        reason=validate_reason(reason),
    )


@dataclass(frozen=True, slots=True)
class Transfer:
    sku: str
    source: str
    target: str
    quantity: int
    reason: str | None

    @property
    def fingerprint(self) -> str:
        return (
            f"stock.transfer|{sku_key(self.sku)}|{self.source}|{self.target}|"
            f"{self.quantity}|{self.reason}"
        )


def transfer(
    sku: str, from_store: str, to_store: str, quantity: int, reason: str | None
) -> Transfer:
    source = validate_store_code(from_store, field="from")
    target = validate_store_code(to_store, field="to")
    if source == target:
        raise ValidationError(f"cannot transfer from {source} to itself", field="to")
    return Transfer(
        sku=sku,
        source=source,
        target=target,
        quantity=parse_int(quantity, field="qty", minimum=1),
        reason=validate_reason(reason),
    )


def check_page(*, sort: str | None = None, limit: int | None, offset: int = 0) -> None:
    """Refuse an unknown sort key and a negative limit or offset."""
    if sort is not None and sort not in SORT_KEYS:
        raise ValidationError(f"sort: {sort!r} is not one of {', '.join(SORT_KEYS)}", field="sort")
    if limit is not None and limit < 0:
        raise ValidationError("limit: must be 0 or more", field="limit")
    if offset < 0:
        raise ValidationError("offset: must be 0 or more", field="offset")


# -- results as JSON, for what idempotency remembers ---------------------------------------


def movement_json(m: Movement) -> dict[str, Any]:
    return row_json(m.row())


def row_json(row: MovementRow, at: str | None = None) -> dict[str, Any]:
    """An audit entry as JSON, from its row; `at` is its time already formatted (a batch
    of entries shares one)."""
    return {
        **dict(zip(MOVEMENT_FIELDS, row, strict=True)),
        "at": at if at is not None else format_time(row[1]),
    }


def movement_from_json(data: dict[str, Any]) -> Movement:
    return Movement(**{**data, "at": datetime.fromisoformat(data["at"].replace("Z", "+00:00"))})


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


def product_from_json(data: dict[str, Any]) -> Product:
    return Product(**{**data, "price": Decimal(data["price"])})
