"""Every result type as JSON and back: what `inv serve` answers and the `http` backend reads.

The field names are the CLI's (`--format json`): prices and values are strings
(`"4.50"`), times ISO 8601 UTC with a `Z`.  `*_json` turns a model into JSON-ready data,
`*_from_json` reads it back into the same model, so a result that crossed the wire
compares equal to the one the server's backend returned.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from decimal import Decimal
from typing import Any

from .auth import StoredToken, StoredUser, Token, User
from .batch import BatchResult, BatchRow
from .errors import RowProblem
from .models import (
    AppliedEvent,
    Edited,
    Item,
    MovementSummary,
    Snapshot,
    Store,
    StoreValue,
    format_time,
)
from .requests import movement_from_json, movement_json, product_from_json, product_json

__all__ = [
    "batch_result_from_json",
    "batch_result_json",
    "batch_row_from_json",
    "batch_row_json",
    "edited_from_json",
    "edited_json",
    "item_from_json",
    "item_json",
    "movement_from_json",
    "movement_json",
    "plain",
    "product_from_json",
    "product_json",
    "snapshot_from_json",
    "snapshot_json",
    "store_from_json",
    "store_json",
    "stored_token_from_json",
    "stored_token_json",
    "stored_user_from_json",
    "stored_user_json",
    "summary_from_json",
    "summary_json",
    "time_from_json",
    "token_fields",
    "token_from_json",
    "token_json",
    "user_fields",
    "user_from_json",
    "user_json",
    "value_from_json",
    "value_json",
]

Json = dict[str, Any]


def plain(value: Any) -> Any:
    """JSON-ready: Decimal as its string ("4.50"), times ISO 8601 UTC with a `Z`."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def time_json(at: datetime | None) -> str | None:
    return None if at is None else format_time(at)


def time_from_json(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text.replace("Z", "+00:00"))


def store_json(s: Store) -> Json:
    return {"code": s.code, "name": s.name}


def store_from_json(data: Json, *, replayed: bool = False) -> Store:
    return Store(data["code"], data["name"], replayed=replayed)


def item_json(i: Item) -> Json:
    return {
        "sku": i.sku,
        "name": i.name,
        "price": str(i.price),
        "unit": i.unit,
        "category": i.category,
        "reorder_level": i.reorder_level,
        "store": i.store,
        "quantity": i.quantity,
        "value": str(i.value),
    }


def item_from_json(data: Json) -> Item:
    return Item(
        data["sku"],
        data["name"],
        Decimal(data["price"]),
        data["unit"],
        data["category"],
        data["reorder_level"],
        data["store"],
        data["quantity"],
    )


def edited_json(e: Edited) -> Json:
    return {"product": product_json(e.product), "changes": e.changes}


def edited_from_json(data: Json, *, replayed: bool = False) -> Edited:
    return Edited(product_from_json(data["product"]), data["changes"], replayed=replayed)


def value_json(v: StoreValue) -> Json:
    return {"store": v.store, "products": v.products, "units": v.units, "value": str(v.value)}


def value_from_json(data: Json) -> StoreValue:
    return StoreValue(data["store"], data["products"], data["units"], Decimal(data["value"]))


def summary_json(s: MovementSummary) -> Json:
    return {
        "store": s.store,
        "sku": s.sku,
        "movements": s.movements,
        "units_in": s.units_in,
        "units_out": s.units_out,
        "net": s.net,
    }


def summary_from_json(data: Json) -> MovementSummary:
    return MovementSummary(
        data["store"], data["sku"], data["movements"], data["units_in"], data["units_out"]
    )


def problem_json(p: RowProblem) -> Json:
    return {"row": p.row, "column": p.column, "reason": p.reason}


def problem_from_json(data: Json) -> RowProblem:
    return RowProblem(data["row"], data.get("column"), data["reason"])


def batch_row_json(r: BatchRow) -> Json:
    data = {name: getattr(r, name) for name in BatchRow.__slots__}
    if r.price is not None:
        data["price"] = str(r.price)
    return {k: v for k, v in data.items() if v is not None or k == "sku"}


def batch_row_from_json(data: Json) -> BatchRow:
    """A row as sent; its values are checked by the backend, as any row's are."""
    return BatchRow(**data)


def batch_result_json(r: BatchResult) -> Json:
    return {
        "rows": r.rows,
        "applied": r.applied,
        "unchanged": r.unchanged,
        "duplicates": r.duplicates,
        "problems": [problem_json(p) for p in r.problems],
        "changes": [movement_json(m) for m in r.changes],
        "dry_run": r.dry_run,
    }


def batch_result_from_json(data: Json, *, replayed: bool = False) -> BatchResult:
    return BatchResult(
        rows=data["rows"],
        applied=data["applied"],
        unchanged=data["unchanged"],
        duplicates=data["duplicates"],
        problems=[problem_from_json(p) for p in data["problems"]],
        changes=[movement_from_json(m, replayed=replayed) for m in data["changes"]],
        dry_run=data["dry_run"],
        replayed=replayed,
    )


def user_fields(u: User) -> dict[str, Any]:
    """A user with its time as a `datetime` (a CLI table shows it for people); `stores` a
    list, or None for every store.  Never the password hash."""
    return {
        "username": u.username,
        "role": u.role,
        "stores": list(u.stores) if u.stores is not None else None,
        "disabled": u.disabled,
        "created_at": u.created_at,
    }


def user_json(u: User) -> Json:
    return plain(user_fields(u))  # type: ignore[no-any-return]


def user_from_json(data: Json) -> User:
    stores = data.get("stores")
    return User(
        data["username"],
        data["role"],
        tuple(stores) if stores is not None else None,
        bool(data.get("disabled", False)),
        time_from_json(data.get("created_at")),
    )


def token_fields(t: Token) -> dict[str, Any]:
    """A token as stored, times as `datetime`s: never its secret (not stored) nor its
    digest."""
    return {
        "id": t.id,
        "username": t.username,
        "name": t.name,
        "created_at": t.created_at,
        "expires_at": t.expires_at,
        "last_used_at": t.last_used_at,
    }


def token_json(t: Token) -> Json:
    return plain(token_fields(t))  # type: ignore[no-any-return]


def token_from_json(data: Json) -> Token:
    created = time_from_json(data["created_at"])
    assert created is not None
    return Token(
        data["id"],
        data["username"],
        data.get("name"),
        created,
        time_from_json(data.get("expires_at")),
        time_from_json(data.get("last_used_at")),
    )


def stored_user_json(u: StoredUser) -> Json:
    return {**user_json(u.user), "password_hash": u.password_hash}


def stored_user_from_json(data: Json) -> StoredUser:
    user = user_from_json(data)
    if user.created_at is None:
        raise ValueError("a stored user without created_at")
    return StoredUser(
        user.username,
        data["password_hash"],
        user.role,
        user.stores,
        user.disabled,
        user.created_at,
    )


def stored_token_json(t: StoredToken) -> Json:
    return {**token_json(t.token), "digest": t.digest}


def stored_token_from_json(data: Json) -> StoredToken:
    token = token_from_json(data)
    return StoredToken(
        token.id,
        token.username,
        data["digest"],
        token.name,
        token.created_at,
        token.expires_at,
        token.last_used_at,
    )


def snapshot_json(s: Snapshot) -> Json:
    return {
        "stores": [store_json(x) for x in s.stores],
        "products": [product_json(p) for p in s.products],
        "history": [movement_json(m) for m in s.history],
        "events": [{**asdict(e), "at": format_time(e.at)} for e in s.events],
        # Password hashes and token digests (never a secret) travel so logins and tokens
        # survive `inv migrate`: acceptable as /api/v1/snapshot is admin-only (OPERATE).
        "users": [stored_user_json(u) for u in s.users],
        "tokens": [stored_token_json(t) for t in s.tokens],
    }


def snapshot_from_json(data: Json) -> Snapshot:
    return Snapshot(
        stores=[store_from_json(x) for x in data["stores"]],
        products=[product_from_json(p) for p in data["products"]],
        history=[movement_from_json(m) for m in data["history"]],
        events=[
            AppliedEvent(e["event_id"], e["fingerprint"], time_from_json(e["at"]), e["result"])  # type: ignore[arg-type]
            for e in data["events"]
        ],
        # Absent from a server older than users in snapshots: none.
        users=[stored_user_from_json(u) for u in data.get("users", [])],
        tokens=[stored_token_from_json(t) for t in data.get("tokens", [])],
    )
