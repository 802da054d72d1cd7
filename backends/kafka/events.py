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
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from ..errors import ValidationError
from ..models import (
    MAX_QUANTITY,
    format_time,
    utcnow,
    validate_event_id,
    validate_name,
    validate_reason,
    validate_sku,
    validate_store_code,
)
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


def _field(data: dict[str, Any], name: str, kind: type | tuple[type, ...], *, null: bool) -> Any:
    value = data.get(name)
    if value is None:
        if null:
            return None
        raise MalformedEvent(f"{name} is missing")
    if isinstance(value, bool) or not isinstance(value, kind):
        raise MalformedEvent(f"{name} is not {getattr(kind, '__name__', kind)}: {value!r}")
    if isinstance(value, int) and not -MAX_QUANTITY <= value <= MAX_QUANTITY:
        raise MalformedEvent(f"{name} is out of range: {value}")
    if isinstance(value, str) and name != "reason" and not value.strip():
        raise MalformedEvent(f"{name} is empty")
    return value


def decode(raw: bytes | None) -> Event:
    """An event from the topic, or `MalformedEvent` saying what is wrong with it."""
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
    kind = _field(data, "type", str, null=False)
    if kind not in EVENT_TYPES:
        raise MalformedEvent(f"unknown type {kind!r}")
    event = Event(
        message_id=_field(data, "message_id", str, null=False),
        event_id=_field(data, "event_id", str, null=False),
        type=kind,
        store=_field(data, "store", str, null=False),
        sku=_field(data, "sku", str, null=False),
        delta=_field(data, "delta", int, null=kind != "stock.adjust"),
        quantity=_field(data, "quantity", int, null=kind == "stock.adjust"),
        to_store=_field(data, "to_store", str, null=kind != "stock.transfer"),
        expect=_field(data, "expect", int, null=True),
        reason=_field(data, "reason", str, null=True),
        actor=_field(data, "actor", str, null=False),
        source=_field(data, "source", str, null=False),
        at=_field(data, "at", str, null=False),
        fingerprint=_field(data, "fingerprint", str, null=False),
    )
    try:
        event.time  # noqa: B018 - parse it now, so a bad time is malformed, not a crash later
    except ValueError:
        raise MalformedEvent(f"at is not an ISO time: {event.at!r}") from None
    # The same value rules as a command's arguments: what the database would refuse
    # (NUL, bytes that were not UTF-8, an over-long key) is malformed here, never a batch
    # that cannot commit.
    try:
        validate_event_id(event.message_id, field="message_id")
        validate_event_id(event.event_id, field="event_id")
        validate_store_code(event.store)
        if event.to_store is not None:
            validate_store_code(event.to_store, field="to_store")
        validate_sku(event.sku)
        validate_reason(event.reason)
        validate_name(event.actor, field="actor")
        validate_name(event.source, field="source")
        if len(event.fingerprint) > 1000 or "\x00" in event.fingerprint:
            raise MalformedEvent("fingerprint is not a request's")
    except ValidationError as exc:
        raise MalformedEvent(str(exc)) from None
    if (event.quantity is not None and event.quantity < 0) or (
        event.expect is not None and event.expect < 0
    ):
        raise MalformedEvent("a quantity is negative")
    if kind == "stock.adjust" and event.quantity is not None:
        raise MalformedEvent("an adjustment has a delta, not a quantity")
    if kind != "stock.adjust" and event.delta is not None:
        raise MalformedEvent(f"{kind} has a quantity, not a delta")
    if kind == "stock.transfer":
        if (event.quantity or 0) <= 0:
            raise MalformedEvent("a transfer moves a positive quantity")
        if event.to_store == event.store:
            raise MalformedEvent("a transfer goes to another store")
        if event.expect is not None:
            raise MalformedEvent("a transfer has no expect")
    return event
