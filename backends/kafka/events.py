"""Stock events: what the CLI publishes to Kafka and the worker applies.

One event is one JSON object (UTF-8), versioned by `"v"`::

    {"v": 1, "message_id": "…uuid…", "event_id": "pos-0042", "type": "stock.adjust",
     "store": "main", "sku": "MUG", "delta": -2, "quantity": null, "to_store": null,
     "expect": 12, "reason": "sale", "actor": "ana", "source": "cli",
     "at": "2026-11-25T10:00:00.000000Z", "fingerprint": "stock.adjust|main|mug|-2|12|sale"}

* `type` is `stock.adjust` (`delta`), `stock.set` (`quantity`) or `stock.transfer`
  (`quantity` from `store` to `to_store`).
* `event_id` is the idempotency key (a script's `--idempotency-key`, else a UUID); the
  worker applies each `event_id` once.  `fingerprint` is the request as the key's first
  use must match (the same key for a different request is a `Conflict`).
* `message_id` is new for every publish, so a message delivered twice is recognised even
  when it was rejected (and is never applied after it was rejected).
* The message key is `store:sku` (SKU case-folded): one item's events share a partition
  and stay in order.  A transfer is keyed by its source item, so it keeps its order with
  the source's events; with the target's it may not (a sale at the target queued right
  after a transfer into it can be applied first, and then refused for want of stock).

`decode` turns bytes from the topic into an `Event` or raises `MalformedEvent` naming
what is wrong; the worker rejects such a message instead of stopping its partition.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from ..models import MAX_QUANTITY, format_time, utcnow
from ..requests import StockChange, Transfer, sku_key

__all__ = [
    "EVENT_TYPES",
    "SCHEMA_VERSION",
    "Event",
    "MalformedEvent",
    "decode",
    "from_change",
    "from_transfer",
]

SCHEMA_VERSION = 1
EVENT_TYPES = ("stock.adjust", "stock.set", "stock.transfer")


class MalformedEvent(ValueError):
    """Bytes on the topic that are not an event this code can apply."""


@dataclass(frozen=True, slots=True)
class Event:
    message_id: str
    event_id: str
    type: str
    store: str
    sku: str
    delta: int | None
    quantity: int | None
    to_store: str | None
    expect: int | None
    reason: str | None
    actor: str
    source: str
    at: str
    fingerprint: str
    v: int = SCHEMA_VERSION

    @property
    def key(self) -> bytes:
        """The message key: `store:sku`, so one item's events keep their order."""
        return f"{self.store}:{sku_key(self.sku)}".encode()

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @property
    def time(self) -> datetime:
        return datetime.fromisoformat(self.at.replace("Z", "+00:00"))


def _base(event_id: str | None, actor: str, source: str) -> dict[str, Any]:
    return {
        "message_id": str(uuid.uuid4()),
        "event_id": event_id or str(uuid.uuid4()),
        "actor": actor,
        "source": source,
        "at": format_time(utcnow()),
    }


def from_change(change: StockChange, *, event_id: str | None, actor: str, source: str) -> Event:
    """The event for a checked `adjust` or `set_quantity`."""
    return Event(
        **_base(event_id, actor, source),
        type=change.action,
        store=change.store,
        sku=change.sku.strip(),
        delta=change.delta,
        quantity=change.quantity,
        to_store=None,
        expect=change.expect,
        reason=change.reason,
        fingerprint=change.fingerprint,
    )


def from_transfer(move: Transfer, *, event_id: str | None, actor: str, source: str) -> Event:
    """The event for a checked transfer."""
    return Event(
        **_base(event_id, actor, source),
        type="stock.transfer",
        store=move.source,
        sku=move.sku.strip(),
        delta=None,
        quantity=move.quantity,
        to_store=move.target,
        expect=None,
        reason=move.reason,
        fingerprint=move.fingerprint,
    )


#: Text fields: (name, longest, required).  `at` is checked by parsing it.
_TEXT_FIELDS = (
    ("message_id", 200, True),
    ("event_id", 200, True),
    ("store", 64, True),
    ("to_store", 64, False),
    ("sku", 64, True),
    ("reason", 200, False),
    ("actor", 200, True),
    ("source", 200, True),
    ("at", 40, True),
    ("fingerprint", 1000, True),
)
_NUMBER_FIELDS = ("delta", "quantity", "expect")
#: What no text field may hold: control characters, bytes that were not UTF-8.
_BAD_TEXT = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
_SLUG = re.compile(r"[a-z0-9_-]{1,64}")


def decode(raw: bytes | None) -> Event:
    """An event from the topic, or `MalformedEvent` saying what is wrong with it.

    The checks are the value rules of a command's arguments (`backends.models`), done in
    one pass: the worker decodes every message, so this is on its hot path.
    """
    if not raw:
        raise MalformedEvent("the message is empty")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedEvent(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MalformedEvent(f"not a JSON object but {type(data).__name__}")
    version = data.get("v")
    if version != SCHEMA_VERSION:
        raise MalformedEvent(f"schema version {version!r}, this worker reads {SCHEMA_VERSION}")
    kind = data.get("type")
    if kind not in EVENT_TYPES:
        raise MalformedEvent(f"unknown type {kind!r}")
    texts: dict[str, str | None] = {}
    for name, longest, required in _TEXT_FIELDS:
        value = data.get(name)
        if value is None:
            if required or (name == "to_store" and kind == "stock.transfer"):
                raise MalformedEvent(f"{name} is missing")
            texts[name] = None
            continue
        if type(value) is not str:
            raise MalformedEvent(f"{name} is not str: {value!r}")
        if len(value) > longest:
            raise MalformedEvent(f"{name}: longer than {longest} characters")
        if not value.strip():
            if name != "reason":
                raise MalformedEvent(f"{name} is empty")
            value = None
        texts[name] = value
    if _BAD_TEXT.search("".join(v for v in texts.values() if v)):  # one search for all
        for name, value in texts.items():
            if value and any("\ud800" <= c <= "\udfff" for c in value):
                raise MalformedEvent(f"{name}: is not valid UTF-8")
            if value and _BAD_TEXT.search(value):
                raise MalformedEvent(f"{name}: contains a control character")
    numbers: dict[str, int | None] = {}
    for name in _NUMBER_FIELDS:
        value = data.get(name)
        if value is not None and (
            type(value) is not int or not -MAX_QUANTITY <= value <= MAX_QUANTITY
        ):
            if type(value) is not int:
                raise MalformedEvent(f"{name} is not int: {value!r}")
            raise MalformedEvent(f"{name} is out of range: {value}")
        numbers[name] = value
    for name in ("store", "to_store"):
        code = texts[name]
        if code is not None and not _SLUG.fullmatch(code):
            raise MalformedEvent(f"{name}: {code!r} is not a store code")
    delta, quantity, expect = numbers["delta"], numbers["quantity"], numbers["expect"]
    if kind == "stock.adjust":
        if delta is None:
            raise MalformedEvent("delta is missing")
        if quantity is not None:
            raise MalformedEvent("an adjustment has a delta, not a quantity")
    else:
        if quantity is None:
            raise MalformedEvent("quantity is missing")
        if delta is not None:
            raise MalformedEvent(f"{kind} has a quantity, not a delta")
    if (quantity is not None and quantity < 0) or (expect is not None and expect < 0):
        raise MalformedEvent("a quantity is negative")
    if kind == "stock.transfer":
        if (quantity or 0) <= 0:
            raise MalformedEvent("a transfer moves a positive quantity")
        if texts["to_store"] == texts["store"]:
            raise MalformedEvent("a transfer goes to another store")
        if expect is not None:
            raise MalformedEvent("a transfer has no expect")
    elif texts["to_store"] is not None:
        raise MalformedEvent(f"{kind} has no to_store")
    event = Event(
        message_id=texts["message_id"],  # type: ignore[arg-type]
        event_id=texts["event_id"],  # type: ignore[arg-type]
        type=kind,
        store=texts["store"],  # type: ignore[arg-type]
        sku=texts["sku"],  # type: ignore[arg-type]
        delta=delta,
        quantity=quantity,
        to_store=texts["to_store"],
        expect=expect,
        reason=texts["reason"],
        actor=texts["actor"],  # type: ignore[arg-type]
        source=texts["source"],  # type: ignore[arg-type]
        at=texts["at"],  # type: ignore[arg-type]
        fingerprint=texts["fingerprint"],  # type: ignore[arg-type]
    )
    try:
        event.time  # noqa: B018 - parse it now, so a bad time is malformed, not a crash later
    except ValueError:
        raise MalformedEvent(f"at is not an ISO time: {event.at!r}") from None
    return event
