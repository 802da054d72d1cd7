"""The rules, applied to an in-memory copy of the inventory.

The JSON backend keeps its whole inventory in a `State`; other backends load into one
just the part a batch touches (under row locks) and write back what changed.  Either
way a batch row means the same thing everywhere (`backends.batch`), decided here once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from . import rules, values
from .base import Progress
from .batch import CATALOG_FIELDS, COLUMNS, GRAMMAR, BatchResult, BatchRow
from .errors import (
    AlreadyExists,
    Conflict,
    InventoryError,
    NotFound,
    RefusedError,
    RowProblem,
    ValidationError,
)
from .models import Movement, utcnow
from .requests import row_fingerprint

__all__ = ["Context", "RowFailure", "State", "apply_row", "run_batch"]

MISSING = object()


class RowFailure(Exception):
    """A batch row failed at one column."""

    def __init__(self, column: str | None, error: InventoryError) -> None:
        super().__init__(str(error))
        self.column = column
        self.error = error


class State:
    """Stores, products and their stock in memory, with an undo log for rollbacks.

    `stores` maps code -> name.  `products` maps the SKU's key (`values.sku_key`: case
    and Unicode normal form ignored) to an entry: a dict with sku, name, price, unit,
    category, reorder_level and stock (store -> quantity).  `meta` holds counters:
    next_sku, audit_entries (the id of the last audit entry; new entries continue from
    it), and for the JSON file audit_bytes (how much of its trail is committed).
    `events` maps idempotency keys to what the backend remembers of them (it needs at
    least `fp`, the fingerprint).
    """

    def __init__(
        self,
        stores: dict[str, str],
        products: dict[str, dict[str, Any]],
        *,
        next_sku: int = 1,
        audit_entries: int = 0,
        events: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.stores = stores
        self.products = products
        self.events: dict[str, dict[str, Any]] = events if events is not None else {}
        self.meta: dict[str, int] = {"next_sku": next_sku, "audit_entries": audit_entries}
        self.new_audit: list[Movement] = []
        self._undo: list[tuple[dict[Any, Any], Any, Any]] = []

    # -- changes, each undoable -----------------------------------------------------

    def put(self, mapping: dict[Any, Any], key: Any, value: Any) -> None:
        self._undo.append((mapping, key, mapping.get(key, MISSING)))
        mapping[key] = value

    def drop(self, mapping: dict[Any, Any], key: Any) -> None:
        self._undo.append((mapping, key, mapping[key]))
        del mapping[key]

    @property
    def changed(self) -> bool:
        return bool(self._undo)

    def savepoint(self) -> tuple[int, int]:
        return len(self._undo), len(self.new_audit)

    def rollback(self, mark: tuple[int, int]) -> None:
        undo_len, audit_len = mark
        while len(self._undo) > undo_len:
            mapping, key, old = self._undo.pop()
            if old is MISSING:
                mapping.pop(key, None)
            else:
                mapping[key] = old
        del self.new_audit[audit_len:]

    # -- look-ups -------------------------------------------------------------------

    def product(self, sku: str) -> dict[str, Any]:
        """The entry of a checked SKU (`values.sku`); `NotFound` if there is none."""
        try:
            return self.products[values.sku_key(sku)]
        except KeyError:
            raise NotFound(f"no product with SKU {sku!r}") from None

    def store(self, code: str, *, field: str = "store") -> str:
        code = values.store_code(code, field=field)
        if code not in self.stores:
            raise NotFound(f"no store {code!r}")
        return code

    def record(
        self,
        ctx: Context,
        action: str,
        *,
        store: str | None,
        sku: str | None,
        delta: int | None = None,
        quantity_after: int | None = None,
        reason: str | None = None,
    ) -> Movement:
        number = self.meta["audit_entries"] + 1
        self.put(self.meta, "audit_entries", number)
        movement = Movement(
            id=number,
            at=ctx.at,
            actor=ctx.actor,
            source=ctx.source,
            event_id=ctx.event_id,
            store=store,
            sku=sku,
            action=action,
            delta=delta,
            quantity_after=quantity_after,
            reason=reason,
        )
        self.new_audit.append(movement)
        return movement

    # -- the rules ------------------------------------------------------------------

    def create_product(
        self,
        ctx: Context,
        *,
        sku: str | None,
        name: str,
        price: Decimal,
        unit: str,
        category: str | None,
        reorder_level: int,
        store: str | None,
        quantity: int,
        reason: str | None,
    ) -> tuple[dict[str, Any], Movement]:
        if sku is None:
            number = self.meta["next_sku"]
            while values.sku_key(rules.generated_sku(number)) in self.products:
                number += 1
            sku = rules.generated_sku(number)
            self.put(self.meta, "next_sku", number + 1)
        elif values.sku_key(sku) in self.products:
            existing = self.products[values.sku_key(sku)]["sku"]
            raise AlreadyExists(f"SKU {sku!r} already exists (as {existing!r})")
        entry: dict[str, Any] = {
            "sku": sku,
            "name": name,
            "price": price,
            "unit": unit,
            "category": category,
            "reorder_level": reorder_level,
            "stock": {},
        }
        if store is not None:
            entry["stock"][store] = quantity
        self.put(self.products, values.sku_key(sku), entry)
        movement = self.record(
            ctx,
            "product.create",
            store=store,
            sku=sku,
            delta=quantity if store is not None else None,
            quantity_after=quantity if store is not None else None,
            reason=reason,
        )
        return entry, movement

    def update_product(
        self, ctx: Context, entry: dict[str, Any], changes: Mapping[str, Any]
    ) -> Movement | None:
        changed, said = rules.product_diff(entry, changes)
        for key, value in changed.items():
            self.put(entry, key, value)
        if said is None:
            return None
        return self.record(ctx, "product.update", store=None, sku=entry["sku"], reason=said)

    def change_stock(
        self,
        ctx: Context,
        entry: dict[str, Any],
        store: str,
        *,
        delta: int | None = None,
        quantity: int | None = None,
        expect: int | None = None,
        reason: str | None = None,
        action: str | None = None,
    ) -> Movement:
        stock = entry["stock"]
        current = stock.get(store, 0)
        after = rules.next_quantity(
            current, sku=entry["sku"], store=store, delta=delta, quantity=quantity, expect=expect
        )
        if action is None:
            action = "stock.adjust" if quantity is None else "stock.set"
        delta, quantity = after - current, after
        self.put(stock, store, quantity)
        return self.record(
            ctx,
            action,
            store=store,
            sku=entry["sku"],
            delta=delta,
            quantity_after=quantity,
            reason=reason,
        )

    def unstock(
        self, ctx: Context, entry: dict[str, Any], store: str, *, force: bool, reason: str | None
    ) -> Movement:
        on_hand = entry["stock"][store]
        rules.check_unstock(entry["sku"], store, on_hand, force=force)
        self.drop(entry["stock"], store)
        return self.record(
            ctx,
            "product.delete",
            store=store,
            sku=entry["sku"],
            delta=-on_hand,
            quantity_after=0,
            reason=reason,
        )


class Context:
    """Who and when, shared by every entry one request writes."""

    __slots__ = ("actor", "at", "event_id", "source")

    def __init__(self, actor: str, source: str, event_id: str, at: datetime | None = None) -> None:
        self.actor = actor
        self.source = source
        self.event_id = event_id
        self.at = at or utcnow()


def apply_row(state: State, ctx: Context, row: BatchRow, default_store: str) -> list[Movement]:
    """Apply one batch row to `state` (see `backends.batch`); raises RowFailure."""
    column: str | None = "sku"
    try:
        if row.sku is None:
            return _store_row(state, ctx, row)
        sku = values.sku(row.sku, existing=True)  # it may name a product: a lookup
        fields: dict[str, Any] = {}
        for column in CATALOG_FIELDS:
            value = getattr(row, column)
            if value is not None:
                fields[column] = GRAMMAR[column](value)
        column = "change"
        if row.quantity is not None and row.change is not None:
            raise ValidationError("give quantity or change, not both")
        quantity = values.quantity(row.quantity) if row.quantity is not None else None
        change = values.delta(row.change) if row.change is not None else None
        column = "expect"
        expect = values.quantity(row.expect, field="expect") if row.expect is not None else None
        column = "reason"
        reason = values.reason(row.reason)
        written: list[Movement] = []
        column = "store"
        explicit_store = row.store is not None
        store = values.store_code(row.store) if row.store is not None else default_store
        if store not in state.stores:
            if row.store_name is None:
                raise NotFound(f"no store {store!r} (give store_name to create it)")
            column = "store_name"
            name = values.name(row.store_name, field="store_name")
            state.put(state.stores, store, name)
            written.append(state.record(ctx, "store.create", store=store, sku=None, reason=name))
        entry = state.products.get(values.sku_key(sku))
        if entry is None:
            column = "sku"
            if not fields:
                raise NotFound(f"unknown SKU {sku!r} (a new SKU needs a name and a price)")
            for column in ("name", "price"):
                if column not in fields:
                    raise ValidationError(f"new SKU {sku!r} needs a {column}")
            column = "sku"
            sku = values.sku(sku)  # a SKU being created: the full rule
            # A new SKU has 0 on hand: the same rule as for any other change.
            column = "quantity" if quantity is not None else "change"
            initial = rules.next_quantity(
                0, sku=sku, store=store, delta=change or 0, quantity=quantity, expect=expect
            )
            touches_store = explicit_store or quantity is not None or change is not None
            _, movement = state.create_product(
                ctx,
                sku=sku,
                name=fields["name"],
                price=fields["price"],
                unit=fields.get("unit", "each"),
                category=fields.get("category"),
                reorder_level=fields.get("reorder_level", 0),
                store=store if touches_store else None,
                quantity=initial,
                reason=reason,
            )
            written.append(movement)
            return written
        update = state.update_product(ctx, entry, fields)
        if update is not None:
            written.append(update)
        if quantity is not None or change is not None:
            column = "quantity" if quantity is not None else "change"
            written.append(
                state.change_stock(
                    ctx,
                    entry,
                    store,
                    quantity=quantity,
                    delta=change,
                    expect=expect,
                    reason=reason,
                )
            )
        elif explicit_store and store not in entry["stock"]:
            written.append(state.change_stock(ctx, entry, store, quantity=0, reason=reason))
        return written
    except Conflict as exc:
        raise RowFailure("expect" if row.expect is not None else column, exc) from None
    except ValidationError as exc:
        raise RowFailure(exc.field or column, exc) from None
    except RefusedError as exc:
        raise RowFailure(column, exc) from None


def _store_row(state: State, ctx: Context, row: BatchRow) -> list[Movement]:
    """A row without a SKU: the store it names, created with `store_name` if missing."""
    others = [
        column
        for column in COLUMNS
        if column not in ("sku", "store", "store_name", "reason", "idempotency_key")
        and getattr(row, column) is not None
    ]
    if row.store is None or others:
        raise RowFailure("sku", ValidationError("a SKU is required"))
    try:
        code = values.store_code(row.store)
    except ValidationError as exc:
        raise RowFailure("store", exc) from None
    if code in state.stores:
        return []
    if row.store_name is None:
        raise RowFailure(
            "store_name", NotFound(f"no store {code!r} (give store_name to create it)")
        )
    try:
        name = values.name(row.store_name, field="store_name")
    except ValidationError as exc:
        raise RowFailure("store_name", exc) from None
    state.put(state.stores, code, name)
    return [state.record(ctx, "store.create", store=code, sku=None, reason=name)]


def run_batch(
    state: State,
    rows: Sequence[BatchRow],
    *,
    actor: str,
    source: str,
    batch_id: str,
    default_store: str,
    dry_run: bool = False,
    progress: Progress | None = None,
    remember: Callable[[str, str, list[Movement]], None],
) -> BatchResult:
    """Apply `rows` in order to `state`, each all or nothing; collect every problem.

    A row whose idempotency key is in `state.events` is a duplicate if it asks for the
    same change (same fingerprint), else a problem.  `remember(key, fingerprint,
    written)` is called for each keyed row applied, and must put the key in
    `state.events` (through `state.put`, so a rollback forgets it).
    """
    result = BatchResult(rows=len(rows), dry_run=dry_run)
    at = utcnow()
    for done, row in enumerate(rows, 1):
        key = row.idempotency_key
        if key is not None:
            try:
                key = values.idempotency_key(key)
            except ValidationError as exc:
                result.problems.append(RowProblem(row.row, "idempotency_key", str(exc)))
                continue
        if key is not None and key in state.events:
            # Seen before (in an earlier request or earlier in this batch): the same row
            # again is a harmless retry; a different one is a mistake.
            if state.events[key]["fp"] == row_fingerprint(row):
                result.duplicates += 1
            else:
                result.problems.append(
                    RowProblem(
                        row.row,
                        "idempotency_key",
                        f"key {key!r} was already used for a different change",
                    )
                )
            continue
        ctx = Context(actor, source, key or f"{batch_id}:{row.row}", at)
        mark = state.savepoint()
        try:
            written = apply_row(state, ctx, row, default_store)
        except RowFailure as failure:
            state.rollback(mark)
            result.problems.append(RowProblem(row.row, failure.column, str(failure)))
            continue
        if key is not None:
            remember(key, row_fingerprint(row), written)
        if written:
            result.applied += 1
            result.changes.extend(written)
        else:
            result.unchanged += 1
        if progress is not None and done % 1000 == 0:
            progress(done)
    if progress is not None:
        progress(len(rows))
    return result
