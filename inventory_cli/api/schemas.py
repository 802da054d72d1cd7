"""What each resource answers, for the OpenAPI document only.

The handlers answer `backends.wire` JSON themselves (a `Response`, so FastAPI neither
converts nor checks it); these models describe that JSON, field for field, so a client
(and Schemathesis, `tests/test_api_fuzz.py`) can check every answer against the
document.  Prices and values are decimal strings with two places, times ISO 8601 UTC
with a `Z`, as the CLI's `--format json` prints them.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Audit",
    "BatchOut",
    "Created",
    "Dropped",
    "EditedOut",
    "Health",
    "IssuedTokenOut",
    "ItemOut",
    "LoginOut",
    "MovementOut",
    "MovementsOut",
    "ProductOut",
    "Ready",
    "SnapshotLoaded",
    "SnapshotOut",
    "StockLevel",
    "StoreOut",
    "SummaryOut",
    "TokenOut",
    "TransferOut",
    "Upgraded",
    "UserOut",
    "ValueOut",
]

Money = Annotated[str, Field(pattern=r"^[0-9]+\.[0-9]{2}$", examples=["4.50"])]
Time = Annotated[
    str,
    Field(
        pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?Z$",
        examples=["2024-05-01T09:30:00.000000Z"],
    ),
]
Count = Annotated[int, Field(ge=0)]


class Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProductOut(Out):
    sku: str
    name: str
    price: Money
    unit: str
    category: str | None
    reorder_level: Count
    stock: dict[str, Count] = Field(description="quantity per store where it is stocked")


class ItemOut(Out):
    """One row of `inv list`: a product at a store (`store` null: stocked nowhere)."""

    sku: str
    name: str
    price: Money
    unit: str
    category: str | None
    reorder_level: Count
    store: str | None
    quantity: Count
    value: Money


class StoreOut(Out):
    code: str
    name: str


class MovementOut(Out):
    """An audit entry; on the kafka backend a movement not yet applied has `id` 0."""

    id: Count
    at: Time
    actor: str
    source: str
    event_id: str | None
    store: str | None
    sku: str | None
    action: str
    delta: int | None
    quantity_after: Count | None
    reason: str | None


class MovementsOut(Out):
    movements: list[MovementOut]


class EditedOut(Out):
    product: ProductOut
    changes: str | None = Field(description="what changed, as the history tells it")


class StockLevel(Out):
    store: str
    sku: str
    quantity: Count


class TransferOut(Out):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    out: MovementOut
    into: MovementOut = Field(alias="in")


class RowProblemOut(Out):
    row: int
    column: str | None
    reason: str


class BatchOut(Out):
    rows: Count
    applied: Count
    unchanged: Count
    duplicates: Count
    problems: list[RowProblemOut]
    changes: list[MovementOut]
    dry_run: bool


class ValueOut(Out):
    store: str
    products: Count
    units: Count
    value: Money


class SummaryOut(Out):
    store: str
    sku: str
    movements: Count
    units_in: Count
    units_out: Count
    net: int


class UserOut(Out):
    username: str
    role: str
    stores: list[str] | None
    disabled: bool
    created_at: Time | None


class TokenOut(Out):
    id: Count
    username: str
    name: str | None
    created_at: Time
    expires_at: Time | None
    last_used_at: Time | None


class IssuedTokenOut(TokenOut):
    token: str = Field(description="the secret, shown this once")


class LoginOut(Out):
    token: str
    expires_at: Time | None
    user: UserOut


class Created(Out):
    created: bool


class Upgraded(Out):
    before: str | None
    after: str


class Audit(Out):
    checked: Count
    problems: list[str]


class Dropped(Out):
    dropped: list[str]


class SnapshotOut(BaseModel):
    stores: list[StoreOut]
    products: list[ProductOut]
    history: list[MovementOut]
    events: list[dict[str, Any]]


class SnapshotLoaded(Out):
    stores: Count
    products: Count


class Health(Out):
    status: str


class Ready(Out):
    status: str
    backend: dict[str, Any]
