"""Apply a batch of stock events to PostgreSQL in one transaction, set-based.

`apply_batch(connection, batch)` runs inside the caller's transaction, in six round trips
for a batch of plain adjustments:

1. takes the batch's partition locks (one batch per partition at a time) and the
   transaction's time, and plans its joins as index probes;
2. finds, in one statement, the messages already rejected (by `message_id`), the events
   already applied (by `event_id`; the same key with a different fingerprint is rejected
   as a `Conflict`), and the batch's stores and products;
3. changes every stock row whose events here are all plain adjustments with one guarded
   UPDATE of their net deltas (the guard: no step of the running sum leaves 0..max);
   rows it refuses or that do not exist yet, and rows a count, a transfer or a
   compare-and-set touches, are created if needed and locked in (store, product) order;
4. runs the rules (`backends.rules`, as every backend does) event by event, in message
   order, on the locked rows and on the guarded rows' quantities before the UPDATE: they
   say what each event did (and must agree with what the UPDATE did);
5. writes the locked rows' new quantities with one UPDATE (each takes a new version
   from `stock_version_seq`), takes audit ids in message order,
6. and COPYs the audit rows and `applied_events` (with the result `--wait` prints), then
   inserts any rejections into `rejected_events`.

What no database state decides (array literals, SKU keys, each event's fields as COPY
text) is worked out ahead in a `Batch`, by the worker's reader thread.

An event that can never apply is rejected, never retried and never blocks the rest.  The
caller commits, then writes `Outcome.stock` through to the cache, sends
`Outcome.rejected` to the dead-letter topic, and commits the offsets.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import msgspec
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
from ..models import format_time
from ..postgres.reads import driver_cursor
from ..requests import reused_key
from ..values import MAX_QUANTITY, sku_key
from .events import Event, MalformedEvent, decode

__all__ = [
    "Batch",
    "Message",
    "Outcome",
    "Rejection",
    "StockValue",
    "apply_batch",
    "error_from",
    "record_rejections",
    "unprocessable",
]


class Message(msgspec.Struct, frozen=True):
    """One record from the topic, decoded (or not)."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    event: Event | None
    problem: str | None  # why it could not be decoded
    #: The event's `message_id`; for what could not be decoded, where it is on the topic.
    message_id: str

    @classmethod
    def from_record(cls, topic: str, partition: int, offset: int, value: bytes | None) -> Message:
        try:
            event = decode(value)
        except MalformedEvent as exc:
            return cls(
                topic, partition, offset, value, None, str(exc), f"{topic}:{partition}:{offset}"
            )
        return cls(topic, partition, offset, value, event, None, event.message_id)


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


class StockValue(NamedTuple):
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


Row = tuple[int, int]  # (store id, product id): a stock row


class _Rows:
    """The batch's stock rows: their quantity as the rules go (before the batch at
    first), their version, which the rules changed, and for rows the guarded UPDATE
    changed, the quantity it left."""

    __slots__ = ("changed", "finals", "quantities", "versions")

    def __init__(self) -> None:
        self.quantities: dict[Row, int] = {}
        self.versions: dict[Row, int] = {}
        self.finals: dict[Row, int] = {}
        self.changed: set[Row] = set()


#: Audit months known to have their partition, in this process (a partition is only ever
#: dropped by `inv audit prune`, years later; a missing one fails the COPY, and
#: `Database.write` creates it and runs the batch again).
_MONTHS: set[datetime] = set()


class _Fixed(msgspec.Struct):
    """An event's own fields in the audit entries `applied_events.result` keeps (the
    rest of `requests.row_json`'s fields are the batch's: id, at, store, sku, action,
    delta, quantity_after)."""

    actor: str
    source: str
    event_id: str
    reason: str | None


_JSON = msgspec.json.Encoder()
#: The audit columns in the order the worker's COPY writes them (an event's own fields
#: together).
_AUDIT_COLUMNS = (
    "id",
    "at",
    "actor",
    "source",
    "event_id",
    "reason",
    "store",
    "sku",
    "action",
    "delta",
    "quantity_after",
    "sku_key",
)
_NULL = "\\N"
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


_SKU_TEXTS: dict[tuple[str, str], tuple[str, str, str]] = {}


def _sku_texts(sku: str, key: str) -> tuple[str, str, str]:
    """A product's SKU as COPY text, its key as COPY text, and its SKU as JSON for COPY
    (kept: a worker sees the same products batch after batch)."""
    try:
        return _SKU_TEXTS[(sku, key)]
    except KeyError:
        pass
    if len(_SKU_TEXTS) >= 100_000:
        _SKU_TEXTS.clear()
    made = _SKU_TEXTS[(sku, key)] = (_esc(sku), _esc(key), _esc(_JSON.encode(sku).decode()))
    return made


def _esc(value: str) -> str:
    """Text as COPY's text format needs it (checked text has no tab or line break, so
    the usual case is a backslash at most)."""
    if value.isprintable():
        return value.replace("\\", "\\\\") if "\\" in value else value
    return value.translate(_COPY_ESCAPES)


def _ints(values: Iterable[int]) -> str:
    """An integer array literal: psycopg would dump a list item by item in Python."""
    return "{" + ",".join(map(str, values)) + "}"


def _texts(values: Iterable[str]) -> str:
    """A text array literal (values are checked text: no NUL)."""
    return (
        "{"
        + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
        + "}"
    )


class Batch:
    """A batch of messages with what applying it needs that no database state decides,
    worked out ahead: the worker's reader does it for the next batch while the last one
    is applied, so the applying transaction holds as little Python work as it can.
    """

    __slots__ = (
        "applied",
        "audit",
        "codes",
        "event_ids",
        "keys",
        "message_ids",
        "messages",
        "partitions",
        "results",
        "sku_keys",
        "twice",
    )

    def __init__(self, messages: Sequence[Message]) -> None:
        self.messages = list(messages)
        events = [m.event for m in messages if m.event is not None]
        pairs = sorted({(m.topic, m.partition) for m in messages})
        self.partitions = (_texts(t for t, _ in pairs), _ints(p for _, p in pairs))
        self.message_ids = _texts(m.message_id for m in messages)
        self.event_ids = _texts({ev.event_id for ev in events})
        self.keys: dict[str, str] = {}  # SKU as sent -> its key
        for ev in events:
            if ev.sku not in self.keys:
                self.keys[ev.sku] = sku_key(ev.sku)
        self.sku_keys = _texts(set(self.keys.values()))
        self.codes = _texts(
            {ev.store for ev in events} | {ev.to_store for ev in events if ev.to_store}
        )
        counts = Counter([ev.event_id for ev in events] + [ev.message_id for ev in events])
        self.twice = {key for key, n in counts.items() if n > 1}
        # Each event's own fields as its audit row holds them (`_AUDIT_COLUMNS` order, COPY
        # text), as its result holds them (JSON, escaped for COPY), and its key and
        # fingerprint (COPY text), by message id.
        self.audit: dict[str, str] = {}
        self.results: dict[str, str] = {}
        self.applied: dict[str, str] = {}
        for ev in events:
            reason = _NULL if ev.reason is None else _esc(ev.reason)
            self.audit[ev.message_id] = (
                f"{_esc(ev.actor)}\t{_esc(ev.source)}\t{_esc(ev.event_id)}\t{reason}"
            )
            fixed = _JSON.encode(_Fixed(ev.actor, ev.source, ev.event_id, ev.reason))
            self.results[ev.message_id] = _esc(fixed.decode()[1:-1])
            self.applied[ev.message_id] = f"{_esc(ev.event_id)}\t{_esc(ev.fingerprint)}"


def apply_batch(connection: Connection, batch: Batch | Sequence[Message]) -> Outcome:
    """Apply `messages` (in topic order per partition) inside the caller's transaction.

    Stock rows whose events in this batch are all plain adjustments (no `expect`, no
    count, no transfer) are changed by one guarded UPDATE of their net deltas: it locks,
    checks and writes them in one statement, and `rules.next_quantity` then replays each
    event on the result for its audit entry.  A row the guard refuses (it would go below
    zero or above the maximum on the way) or that does not exist yet, and every row a
    count, a compare-and-set or a transfer touches, is locked and run event by event
    through the rules, as before.  The audit entries are numbered in message order.
    """
    if not isinstance(batch, Batch):
        batch = Batch(batch)
    messages = batch.messages
    outcome = Outcome()
    if not messages:
        return outcome
    cursor = driver_cursor(connection)
    # One batch per partition at a time: a worker that lost its partitions in a rebalance
    # and the one that got them wait for each other here, and the second finds the first's
    # results (applied or rejected) below (the next statement sees what it committed).
    # The batch's rows are found by their primary key: a hash join would read the whole
    # stock table for a thousand rows (the planner prices index probes as if from disk).
    cursor.execute(
        "SELECT now(), set_config('enable_hashjoin', 'off', true), "
        "set_config('enable_mergejoin', 'off', true), "
        "(SELECT count(pg_advisory_xact_lock(hashtext(t), p)) FROM "
        "(SELECT * FROM unnest(%s::text[], %s::integer[]) AS u(t, p) ORDER BY t, p) AS l)",
        batch.partitions,
    )
    at: datetime = cursor.fetchone()[0]
    # In one round trip: messages rejected and events applied before, and the batch's
    # stores and products; SKUs are matched by their key (`values.sku_key`), as every
    # other command does.  Not locked, as a single movement does not lock them: a stock
    # row the batch changes is locked by that change (removing its product or store
    # waits for the batch), and a row it creates checks its keys (a product removed
    # meanwhile fails the batch, which runs again and finds it gone).
    cursor.execute(
        "WITH s AS (SELECT code, id FROM stores WHERE code = ANY(%s::text[])), "
        "p AS (SELECT sku_key, id, sku FROM products WHERE sku_key = ANY(%s::text[])) "
        "SELECT 'r', message_id, NULL::text, NULL::bigint FROM rejected_events "
        "WHERE message_id = ANY(%s::text[]) "
        "UNION ALL SELECT 'a', event_id, fingerprint, NULL::bigint FROM applied_events "
        "WHERE event_id = ANY(%s::text[]) "
        "UNION ALL SELECT 's', code, NULL::text, id FROM s "
        "UNION ALL SELECT 'p', sku_key, sku, id FROM p",
        (batch.codes, batch.sku_keys, batch.message_ids, batch.event_ids),
    )
    seen_messages: set[str] = set()
    applied: dict[str, str] = {}
    store_ids: dict[str, int] = {}
    products: dict[str, tuple[int, str]] = {}
    for kind, key, text_value, number in cursor.fetchall():
        if kind == "a":
            applied[key] = text_value
        elif kind == "p":
            products[key] = (number, text_value)
        elif kind == "s":
            store_ids[key] = number
        else:
            seen_messages.add(key)
    keys = batch.keys

    # Which rows take the guarded UPDATE: those whose events here are all plain
    # adjustments, each sent once (a key or message seen twice in one batch is decided
    # event by event below, as is every event of a row a count, transfer or compare-and-set
    # touches).
    fresh = [
        m.event
        for m in messages
        if m.event is not None
        and m.message_id not in seen_messages
        and m.event.event_id not in applied
    ]
    twice = batch.twice
    simple: dict[Row, list[int]] = {}  # row -> its deltas, in order
    complex_rows: set[Row] = set()
    for e in fresh:
        product = products.get(keys[e.sku])
        if product is None or e.store not in store_ids:
            continue  # refused below
        row = (store_ids[e.store], product[0])
        if (
            e.type == "stock.adjust"
            and e.expect is None
            and e.event_id not in twice
            and e.message_id not in twice
        ):
            simple.setdefault(row, []).append(e.delta)  # type: ignore[arg-type]
        else:
            complex_rows.add(row)
            if e.to_store is not None and e.to_store in store_ids:
                complex_rows.add((store_ids[e.to_store], product[0]))
    for row in complex_rows:
        simple.pop(row, None)

    items = _Rows()
    if simple:
        _guarded_update(cursor, simple, items)
        complex_rows.update(row for row in simple if row not in items.finals)
    created = _lock_rows(cursor, sorted(complex_rows), items)

    # The rules, in order.
    movements: list[tuple[str, str, str, str, int, int]] = []  # message id, action, ...
    results: list[tuple[str, int, int]] = []  # message id, its movements' start and stop
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
            done = _rule(e, keys[e.sku], store_ids, products, items)
        except InventoryError as error:
            rejected_ids.add(message.message_id)
            outcome.rejected.append(_reject(message, error))
            continue
        applied[e.event_id] = e.fingerprint
        start = len(movements)
        for action, store, sku, delta, after in done:
            movements.append((message.message_id, action, store, sku, delta, after))
        results.append((message.message_id, start, len(movements)))
        outcome.applied += 1

    # Rows made for events that were all rejected go again: nothing was stocked there.
    unused = [row for row in created if row not in items.changed]
    if unused:
        cursor.execute(
            "DELETE FROM inventory i USING unnest(%s::integer[], %s::bigint[]) AS v(s, p) "
            "WHERE i.store_id = v.s AND i.product_id = v.p",
            (_ints(r[0] for r in unused), _ints(r[1] for r in unused)),
        )
    codes_by_id = {v: k for k, v in store_ids.items()}
    skus_by_id = {v[0]: v[1] for v in products.values()}
    quantities, versions = items.quantities, items.versions
    for row, final in items.finals.items():
        if quantities[row] != final:  # the guard and the rules disagree: a bug
            raise RuntimeError(f"stock row {row}: rules give {quantities[row]}, SQL {final}")
        outcome.stock.append(
            StockValue(skus_by_id[row[1]], codes_by_id[row[0]], final, versions[row])
        )
    changed = [row for row in complex_rows if row in items.changed]
    # Rows this batch leaves as they were go to the cache too: after a crash between the
    # commit and the write-through, the redelivered batch is all duplicates.
    outcome.stock.extend(
        StockValue(skus_by_id[row[1]], codes_by_id[row[0]], quantities[row], versions[row])
        for row in complex_rows
        if row in quantities and row not in items.changed and row not in created
    )
    if changed:
        cursor.execute(
            "UPDATE inventory i SET quantity = v.q, "
            "version = nextval('stock_version_seq'), updated_at = now() "
            "FROM unnest(%s::integer[], %s::bigint[], %s::integer[]) AS v(s, p, q) "
            "WHERE i.store_id = v.s AND i.product_id = v.p "
            "RETURNING i.store_id, i.product_id, i.quantity, i.version",
            (
                _ints(row[0] for row in changed),
                _ints(row[1] for row in changed),
                _ints(quantities[row] for row in changed),
            ),
        )
        outcome.stock.extend(
            StockValue(skus_by_id[p], codes_by_id[s], q, v) for s, p, q, v in cursor.fetchall()
        )
    if movements:
        month = at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        if month not in _MONTHS:
            cursor.execute("SELECT audit_log_partition(%s)", (month,))
            _MONTHS.add(month)
        cursor.execute(
            "SELECT nextval('audit_log_id_seq') FROM generate_series(1, %s)", (len(movements),)
        )
        ids = sorted(i for (i,) in cursor.fetchall())
        # COPY's text format written here in one piece, mostly from what `Batch` made
        # ahead: psycopg's `write_row` costs more a row than building the line.
        texts = {sku: _sku_texts(sku, key) for key, (_, sku) in products.items()}
        at_text = format_time(at)
        audit, fixed = batch.audit, batch.results
        lines = []
        entries = []
        for i, (m, action, store, sku, delta, after) in zip(ids, movements, strict=True):
            copy_sku, copy_key, json_sku = texts[sku]
            lines.append(
                f"{i}\t{at_text}\t{audit[m]}\t{store}\t{copy_sku}\t{action}\t{delta}\t"
                f"{after}\t{copy_key}\n"
            )
            entries.append(
                f'{{"id":{i},"at":"{at_text}",{fixed[m]},"store":"{store}","sku":{json_sku},'
                f'"action":"{action}","delta":{delta},"quantity_after":{after}}}'
            )
        with cursor.copy(f"COPY audit_log ({', '.join(_AUDIT_COLUMNS)}) FROM STDIN") as copy:
            copy.write("".join(lines))
        applied_text = batch.applied
        with cursor.copy(
            "COPY applied_events (event_id, fingerprint, result, at) FROM STDIN"
        ) as copy:
            copy.write(
                "".join(
                    f"{applied_text[m]}\t"
                    f'{{"movements":[{",".join(entries[start:stop])}]}}\t{at_text}\n'
                    for m, start, stop in results
                )
            )
        outcome.movements = len(movements)
    record_rejections(connection, outcome.rejected)
    return outcome


def _guarded_update(cursor: Any, simple: dict[Row, list[int]], items: _Rows) -> None:
    """Add each row's net delta where no step of its running sum leaves 0..MAX_QUANTITY.

    The updated rows go into `items` as they were before (their quantity less the net
    delta), with the quantity the UPDATE left as their final, so the rules replay each
    event on them; a row missing from the result (not stocked yet, or refused by the
    guard) is left to the locking path.
    """
    rows = sorted(simple)
    lows, highs, nets = [], [], []
    for row in rows:
        deltas = simple[row]
        if len(deltas) == 1:  # most rows: one event a batch
            total = deltas[0]
            low, high = min(total, 0), max(total, 0)
        else:
            low = high = total = 0
            for delta in deltas:
                total += delta
                low = min(low, total)
                high = max(high, total)
        lows.append(low)
        highs.append(high)
        nets.append(total)
    cursor.execute(
        "UPDATE inventory i SET quantity = i.quantity + v.d, "
        "version = nextval('stock_version_seq'), updated_at = now() "
        "FROM (SELECT * FROM unnest(%s::integer[], %s::bigint[], %s::integer[], "
        "%s::integer[], %s::integer[]) AS u(s, p, d, lo, hi) ORDER BY s, p) AS v "
        "WHERE i.store_id = v.s AND i.product_id = v.p "
        "AND i.quantity + v.lo >= 0 AND i.quantity::bigint + v.hi <= %s "
        "RETURNING i.store_id, i.product_id, i.quantity, i.version",
        (
            _ints(r[0] for r in rows),
            _ints(r[1] for r in rows),
            _ints(nets),
            _ints(lows),
            _ints(highs),
            MAX_QUANTITY,
        ),
    )
    net = dict(zip(rows, nets, strict=True))
    quantities, versions, finals = items.quantities, items.versions, items.finals
    for store_id, product_id, quantity, version in cursor.fetchall():
        row = (store_id, product_id)
        quantities[row] = quantity - net[row]
        versions[row] = version
        finals[row] = quantity


def _lock_rows(cursor: Any, rows: list[Row], items: _Rows) -> set[Row]:
    """Create the stock rows in `rows` that do not exist, lock them all in (store,
    product) order, so workers never deadlock each other, and load them into `items`;
    returns the rows it created."""
    created: set[Row] = set()
    missing = rows
    for attempt in range(6):  # a row deleted between the INSERT and the lock is made again
        if not missing:
            return created
        stores_col, products_col = _ints(r[0] for r in missing), _ints(r[1] for r in missing)
        if attempt:
            cursor.execute(
                "INSERT INTO inventory (store_id, product_id, quantity) "
                "SELECT s, p, 0 FROM unnest(%s::integer[], %s::bigint[]) AS v(s, p) "
                "ORDER BY s, p ON CONFLICT DO NOTHING RETURNING store_id, product_id",
                (stores_col, products_col),
            )
            created.update((s, p) for s, p in cursor.fetchall())
        cursor.execute(
            "SELECT i.store_id, i.product_id, i.quantity, i.version FROM inventory i "
            "JOIN unnest(%s::integer[], %s::bigint[]) AS v(s, p) "
            "ON i.store_id = v.s AND i.product_id = v.p "
            "ORDER BY i.store_id, i.product_id FOR UPDATE OF i",
            (stores_col, products_col),
        )
        for store_id, product_id, quantity, version in cursor.fetchall():
            items.quantities[(store_id, product_id)] = quantity
            items.versions[(store_id, product_id)] = version
        missing = [row for row in missing if row not in items.quantities]
    raise RuntimeError(f"stock rows {missing} keep disappearing; retrying the batch")


def _rule(
    e: Event,
    key: str,
    store_ids: dict[str, int],
    products: dict[str, tuple[int, str]],
    items: _Rows,
) -> list[tuple[str, str, str, int, int]]:
    """One event's movements (action, store, sku, delta, after), applied to `items`;
    raises the contract's error, changing nothing, when it cannot apply."""
    for code in (e.store, e.to_store):
        if code is not None and code not in store_ids:
            raise NotFound(f"no store {code!r}")
    product = products.get(key)
    if product is None:
        raise NotFound(f"no product with SKU {e.sku!r}")
    product_id, sku = product
    quantities = items.quantities
    row = (store_ids[e.store], product_id)
    current = quantities[row]
    if e.type == "stock.transfer":
        assert e.to_store is not None and e.quantity is not None
        target = (store_ids[e.to_store], product_id)
        out, into = rules.transfer_quantities(
            current,
            quantities[target],
            sku=sku,
            source=e.store,
            target=e.to_store,
            quantity=e.quantity,
        )
        quantities[row], quantities[target] = out, into
        items.changed.update((row, target))
        return [
            ("stock.transfer_out", e.store, sku, -e.quantity, out),
            ("stock.transfer_in", e.to_store, sku, e.quantity, into),
        ]
    new = rules.next_quantity(
        current, sku=sku, store=e.store, delta=e.delta, quantity=e.quantity, expect=e.expect
    )
    quantities[row] = new
    items.changed.add(row)
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
