"""Batches: many movements applied as one unit (imports, scripts streaming through stdin).

A `BatchRow` is one line of an import file after its values were parsed; `Backend.apply`
takes a list of them.  What a row means is defined once, here, and every backend follows it:

1. The product is looked up by `sku` (case ignored).  A new SKU needs `name` and `price`
   and is created (`product.create`); for a known SKU the catalog fields given and
   different from the stored ones are updated (`product.update`).
2. `store` (else the batch's default store) must exist, unless `store_name` is given,
   in which case a missing store is created with that name (`store.create`).
3. `quantity` sets the stock there (`stock.set`), `change` adjusts it (`stock.adjust`),
   both honouring `expect` (compare-and-set).  With neither, an explicit `store` stocks
   the product there at 0 if it is not yet; no store and no quantity touches catalog only.
4. `idempotency_key` makes the row safe to send again: a key already applied is skipped.
5. A row without a `sku` names a store: with `store_name`, a missing store is created
   (how `export` writes a store that holds no stock, so an import gives it back).

Rows apply in order, each seeing the ones before it.  A bad row is reported with its
row number, column and reason; with `on_error="reject-all"` any bad row means nothing is
written (`BatchRejected`), with `"skip-rows"` the good rows apply and the bad are returned.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from . import values
from .errors import RowProblem
from .models import Movement
from .rules import CATALOG_FIELDS

__all__ = ["CATALOG_FIELDS", "COLUMNS", "GRAMMAR", "BatchResult", "BatchRow", "OnError"]

OnError = Literal["reject-all", "skip-rows"]
#: Every column an import file may have, in the order export writes them.
COLUMNS = (
    "sku",
    *CATALOG_FIELDS,
    "store",
    "store_name",
    "quantity",
    "change",
    "reason",
    "expect",
    "idempotency_key",
)

#: The grammar of each column's values (`backends.values`), for import files and rows.
GRAMMAR: dict[str, Callable[[Any], Any]] = {
    "sku": values.sku,
    "name": values.name,
    "price": values.price,
    "unit": values.unit,
    "category": values.category,
    "reorder_level": values.reorder_level,
    "store": values.store_code,
    "store_name": lambda v: values.name(v, field="store_name"),
    "quantity": values.quantity,
    "change": values.delta,
    "reason": values.reason,
    "expect": lambda v: values.quantity(v, field="expect"),
    "idempotency_key": values.idempotency_key,
}


@dataclass(slots=True)
class BatchRow:
    """One parsed row; None means the column was absent or empty."""

    row: int
    sku: str | None
    name: str | None = None
    price: Decimal | None = None
    unit: str | None = None
    category: str | None = None
    reorder_level: int | None = None
    store: str | None = None
    store_name: str | None = None
    quantity: int | None = None
    change: int | None = None
    reason: str | None = None
    expect: int | None = None
    idempotency_key: str | None = None


@dataclass(slots=True)
class BatchResult:
    """What a batch did (or, on a dry run, would do)."""

    rows: int = 0
    applied: int = 0
    unchanged: int = 0
    duplicates: int = 0
    problems: list[RowProblem] = field(default_factory=list)
    changes: list[Movement] = field(default_factory=list)
    dry_run: bool = False
    #: The first result of a batch sent again with the same idempotency key.
    replayed: bool = field(default=False, compare=False)
