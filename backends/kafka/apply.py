"""Apply a batch of stock events to PostgreSQL in one transaction, set-based.

`apply_batch(connection, messages)` runs inside the caller's transaction:

1. skips messages already rejected (by `message_id`) and events already applied (by
   `event_id`; the same key with a different fingerprint is rejected as a `Conflict`);
2. resolves stores and products in two queries, creates the stock rows the events touch
   and locks them all in (store, product) order, so workers never deadlock each other;
3. runs the rules in order (`backends.rules`, as every backend does: `expect`, the
   maximum, never below zero);
4. writes back with one UPDATE of the changed rows (each takes a new version from
   `stock_version_seq`), one COPY of the audit rows, one COPY into `applied_events`
   (with the result `--wait` prints), one INSERT into `rejected_events`.

An event that can never apply is rejected, never retried and never blocks the rest.  The
caller commits, then writes `Outcome.stock` through to the cache, sends
`Outcome.rejected` to the dead-letter topic, and commits the offsets.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from .. import rules
from ..errors import (
    Conflict,
    InsufficientStock,
    InventoryError,
    NotFound,
    StaleExpect,
    ValidationError,
)
from ..models import MovementRow, format_time
from ..postgres.bulk import audit_ids, copy_audit_rows, copy_rows
from ..requests import reused_key, row_json
from ..values import sku_key
from .events import Event, MalformedEvent, decode

__all__ = [
    "Message",
    "Outcome",
    "Rejection",
    "StockValue",
    "apply_batch",
    "error_from",
    "record_rejections",
    "unprocessable",
]


@dataclass(frozen=True, slots=True)
class Message:
    """One record from the topic, decoded (or not)."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    event: Event | None
    problem: str | None  # why it could not be decoded

    @classmethod
    def from_record(cls, topic: str, partition: int, offset: int, value: bytes | None) -> Message:
        try:
            return cls(topic, partition, offset, value, decode(value), None)
        except MalformedEvent as exc:
            return cls(topic, partition, offset, value, None, str(exc))

    @property
    def message_id(self) -> str:
        if self.event is not None:
            return self.event.message_id
        return f"{self.topic}:{self.partition}:{self.offset}"


@dataclass(frozen=True, slots=True)
class Rejection:
    message: Message
    error: str  # the error's class name: InsufficientStock, Conflict, NotFound, ...
    reason: str
    detail: dict[str, Any]

    def record(self) -> dict[str, Any]:
        """What the dead-letter topic carries."""
        value = self.message.value or b""
        return {
            "message_id": self.message.message_id,
            "event_id": self.message.event.event_id if self.message.event else None,
            "topic": self.message.topic,
            "partition": self.message.partition,
            "offset": self.message.offset,
            "error": self.error,
            "reason": self.reason,
            "payload": value.decode("utf-8", "replace"),
        }


@dataclass(frozen=True, slots=True)
class StockValue:
    """A stock row as committed, for the cache's write-through."""

    sku: str
    store: str
    quantity: int
    version: int


@dataclass
class Outcome:
    applied: int = 0
    duplicates: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    stock: list[StockValue] = field(default_factory=list)
    movements: int = 0


def _reject(message: Message, error: InventoryError | MalformedEvent) -> Rejection:
    detail: dict[str, Any] = {}
    if isinstance(error, InsufficientStock):
        detail = {"available": error.available, "requested": error.requested}
    elif isinstance(error, ValidationError) and error.field:
        detail = {"field": error.field}
    return Rejection(message, type(error).__name__, str(error), detail)


def error_from(kind: str, reason: str, detail: dict[str, Any]) -> InventoryError:
    """The contract's error for a rejection recorded by `apply_batch`."""
    if kind == "InsufficientStock":
        return InsufficientStock(
            reason,
            available=int(detail.get("available", 0)),
            requested=int(detail.get("requested", 0)),
        )
    if kind == "ValidationError" or kind == "MalformedEvent":
        return ValidationError(reason, field=detail.get("field"))
    if kind == "Unprocessable":
        return ValidationError(f"the worker could not apply it: {reason}")
    if kind == "NotFound":
        return NotFound(reason)
    if kind == "StaleExpect":
        return StaleExpect(reason)
    return Conflict(reason)


class _Item:
    """One stock row under the batch's lock."""

    __slots__ = ("changed", "quantity", "version")

    def __init__(self, quantity: int, version: int) -> None:
        self.quantity = quantity
        self.version = version
        self.changed = False


def apply_batch(connection: Connection, messages: Sequence[Message]) -> Outcome:
    """Apply `messages` (in topic order per partition) inside the caller's transaction."""
    outcome = Outcome()
    if not messages:
        return outcome
    # One batch per partition at a time: a worker that lost its partitions in a rebalance
    # and the one that got them wait for each other here, and the second finds the first's
    # results (applied or rejected) below.
    for topic, partition in sorted({(m.topic, m.partition) for m in messages}):
        connection.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(:t), :p)"),
            {"t": topic, "p": partition},
        )
    seen_messages = set(
        connection.execute(
            text("SELECT message_id FROM rejected_events WHERE message_id = ANY(:m)"),
            {"m": [m.message_id for m in messages]},
        ).scalars()
    )
    events = [m.event for m in messages if m.event is not None]
    applied: dict[str, str] = dict(
        connection.execute(
            text("SELECT event_id, fingerprint FROM applied_events WHERE event_id = ANY(:e)"),
            {"e": list({ev.event_id for ev in events})},
        ).all()
    )
    # Stores and products are locked against deletion (KEY SHARE, in id order) for the
    # batch; SKUs are matched by their key (`values.sku_key`), as every other command does.
    codes = {ev.store for ev in events} | {ev.to_store for ev in events if ev.to_store}
    store_ids: dict[str, int] = dict(
        connection.execute(
            text("SELECT code, id FROM stores WHERE code = ANY(:c) ORDER BY id FOR KEY SHARE"),
            {"c": list(codes)},
        ).all()
    )
    products: dict[str, tuple[int, str]] = {
        row.sku_key: (row.id, row.sku)
        for row in connection.execute(
            text(
                "SELECT p.sku_key, p.id, p.sku FROM products p "
                "WHERE p.sku_key = ANY(CAST(:k AS text[])) ORDER BY p.id FOR KEY SHARE"
            ),
            {"k": list({sku_key(ev.sku) for ev in events})},
        )
    }

    # Create the rows the events may touch, then lock them all, in one order.
    pairs: set[tuple[int, int]] = set()
    for ev in events:
        product = products.get(sku_key(ev.sku))
        if product is None:
            continue
        for code in (ev.store, ev.to_store):
            if code is not None and code in store_ids:
                pairs.add((store_ids[code], product[0]))
    created: set[tuple[int, int]] = set()
    items: dict[tuple[int, int], _Item] = {}
    missing = sorted(pairs)
    for _ in range(5):  # a row deleted between the INSERT and the lock is made again
        if not missing:
            break
        stores_col, products_col = [p[0] for p in missing], [p[1] for p in missing]
        created |= {
            (r.store_id, r.product_id)
            for r in connection.execute(
                text(
                    "INSERT INTO inventory (store_id, product_id, quantity) "
                    "SELECT s, p, 0 FROM unnest(CAST(:s AS integer[]), CAST(:p AS bigint[])) "
                    "AS v(s, p) ORDER BY s, p ON CONFLICT DO NOTHING "
                    "RETURNING store_id, product_id"
                ),
                {"s": stores_col, "p": products_col},
            )
        }
        for row in connection.execute(
            text(
                "SELECT i.store_id, i.product_id, i.quantity, i.version FROM inventory i "
                "JOIN unnest(CAST(:s AS integer[]), CAST(:p AS bigint[])) AS v(s, p) "
                "ON i.store_id = v.s AND i.product_id = v.p "
                "ORDER BY i.store_id, i.product_id FOR UPDATE OF i"
            ),
            {"s": stores_col, "p": products_col},
        ):
            items[(row.store_id, row.product_id)] = _Item(row.quantity, row.version)
        missing = [pair for pair in missing if pair not in items]
    if missing:
        raise RuntimeError(f"stock rows {missing} keep disappearing; retrying the batch")

    # The rules, in order.
    at: datetime = connection.execute(text("SELECT now()")).scalar_one()
    movements: list[tuple[Event, str, str, str, int, int]] = []
    results: dict[str, tuple[str, list[int]]] = {}  # event_id -> (fingerprint, movement idx)
    rejected_ids: set[str] = set()
    for message in messages:
        if message.message_id in seen_messages or message.message_id in rejected_ids:
            outcome.duplicates += 1
            continue
        if message.event is None:
            rejected_ids.add(message.message_id)
            outcome.rejected.append(
                _reject(message, MalformedEvent(message.problem or "malformed"))
            )
            continue
        e = message.event
        first = applied.get(e.event_id)
        if first is not None:
            if first == e.fingerprint:
                outcome.duplicates += 1
            else:
                rejected_ids.add(message.message_id)
                outcome.rejected.append(_reject(message, reused_key(e.event_id)))
            continue
        try:
            done = _rule(e, store_ids, products, items)
        except InventoryError as error:
            rejected_ids.add(message.message_id)
            outcome.rejected.append(_reject(message, error))
            continue
        applied[e.event_id] = e.fingerprint
        results[e.event_id] = (
            e.fingerprint,
            list(range(len(movements), len(movements) + len(done))),
        )
        movements.extend((e, *m) for m in done)
        outcome.applied += 1

    # Rows made for events that were all rejected go again: nothing was stocked there.
    unused = [pair for pair in created if not items[pair].changed]
    if unused:
        connection.execute(
            text(
                "DELETE FROM inventory i USING unnest(CAST(:s AS integer[]), "
                "CAST(:p AS bigint[])) AS v(s, p) WHERE i.store_id = v.s AND i.product_id = v.p"
            ),
            {"s": [p[0] for p in unused], "p": [p[1] for p in unused]},
        )
    codes_by_id = {v: k for k, v in store_ids.items()}
    skus_by_id = {v[0]: v[1] for v in products.values()}
    # Rows this batch leaves as they were go to the cache too: after a crash between the
    # commit and the write-through, the redelivered batch is all duplicates.
    outcome.stock.extend(
        StockValue(skus_by_id[pair[1]], codes_by_id[pair[0]], item.quantity, item.version)
        for pair, item in items.items()
        if not item.changed and pair not in created
    )
    changed = [(pair, item) for pair, item in items.items() if item.changed]
    if changed:
        for row in connection.execute(
            text(
                "UPDATE inventory i SET quantity = v.q, "
                "version = nextval('stock_version_seq'), updated_at = now() "
                "FROM unnest(CAST(:s AS integer[]), CAST(:p AS bigint[]), "
                "CAST(:q AS integer[])) AS v(s, p, q) "
                "WHERE i.store_id = v.s AND i.product_id = v.p "
                "RETURNING i.store_id, i.product_id, i.quantity, i.version"
            ),
            {
                "s": [pair[0] for pair, _ in changed],
                "p": [pair[1] for pair, _ in changed],
                "q": [item.quantity for _, item in changed],
            },
        ):
            outcome.stock.append(
                StockValue(
                    skus_by_id[row.product_id], codes_by_id[row.store_id], row.quantity, row.version
                )
            )
    if movements:
        # Rows, not Movement objects: this runs for every event of every batch.
        rows: list[MovementRow] = [
            (i, at, e.actor, e.source, e.event_id, store, sku, action, delta, after, e.reason)
            for i, (e, action, store, sku, delta, after) in zip(
                audit_ids(connection, len(movements)), movements, strict=True
            )
        ]
        copy_audit_rows(connection, rows)
        at_text = format_time(at)
        copy_rows(
            connection,
            "applied_events",
            ("event_id", "fingerprint", "result", "at"),
            (
                (
                    event_id,
                    fingerprint,
                    json.dumps({"movements": [row_json(rows[i], at_text) for i in idx]}),
                    at,
                )
                for event_id, (fingerprint, idx) in results.items()
            ),
        )
        outcome.movements = len(rows)
    record_rejections(connection, outcome.rejected)
    return outcome


def _rule(
    e: Event,
    store_ids: dict[str, int],
    products: dict[str, tuple[int, str]],
    items: dict[tuple[int, int], _Item],
) -> list[tuple[str, str, str, int, int]]:
    """One event's movements (action, store, sku, delta, after), applied to `items`;
    raises the contract's error, changing nothing, when it cannot apply."""
    for code in (e.store, e.to_store):
        if code is not None and code not in store_ids:
            raise NotFound(f"no store {code!r}")
    product = products.get(sku_key(e.sku))
    if product is None:
        raise NotFound(f"no product with SKU {e.sku!r}")
    product_id, sku = product
    item = items[(store_ids[e.store], product_id)]
    current = item.quantity
    if e.type == "stock.transfer":
        assert e.to_store is not None and e.quantity is not None
        target = items[(store_ids[e.to_store], product_id)]
        out, into = rules.transfer_quantities(
            current,
            target.quantity,
            sku=sku,
            source=e.store,
            target=e.to_store,
            quantity=e.quantity,
        )
        item.quantity, target.quantity = out, into
        item.changed = target.changed = True
        return [
            ("stock.transfer_out", e.store, sku, -e.quantity, out),
            ("stock.transfer_in", e.to_store, sku, e.quantity, into),
        ]
    new = rules.next_quantity(
        current, sku=sku, store=e.store, delta=e.delta, quantity=e.quantity, expect=e.expect
    )
    item.quantity = new
    item.changed = True
    return [(e.type, e.store, sku, new - current, new)]


def record_rejections(connection: Connection, rejections: Sequence[Rejection]) -> None:
    """Insert rejections into `rejected_events` (a message already there is left as is)."""
    if not rejections:
        return
    connection.execute(
        text(
            'INSERT INTO rejected_events (message_id, event_id, topic, "partition", '
            '"offset", error, reason, detail, payload) '
            "SELECT * FROM unnest(CAST(:m AS text[]), CAST(:e AS text[]), "
            "CAST(:t AS text[]), CAST(:pa AS integer[]), CAST(:o AS bigint[]), "
            "CAST(:er AS text[]), CAST(:r AS text[]), CAST(:d AS jsonb[]), "
            "CAST(:pl AS text[])) ON CONFLICT (message_id) DO NOTHING"
        ),
        {
            "m": [_clean(r.message.message_id) for r in rejections],
            "e": [
                _clean(r.message.event.event_id) if r.message.event else None for r in rejections
            ],
            "t": [r.message.topic for r in rejections],
            "pa": [r.message.partition for r in rejections],
            "o": [r.message.offset for r in rejections],
            "er": [r.error for r in rejections],
            "r": [_clean(r.reason) for r in rejections],
            "d": [json.dumps(r.detail) for r in rejections],
            "pl": [_clean((r.message.value or b"").decode("utf-8", "replace")) for r in rejections],
        },
    )


def _clean(value: str) -> str:
    """Text PostgreSQL takes: no NUL, no lone surrogates."""
    return value.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def unprocessable(message: Message, error: BaseException) -> Rejection:
    """A message that made its batch fail again and again, on its own: rejected, so that
    its partition goes on."""
    return Rejection(message, "Unprocessable", f"{type(error).__name__}: {error}"[:1000], {})
