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

import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec

from .. import values
from ..errors import ValidationError
from ..jsontext import JsonError, loads
from ..models import format_time, utcnow
from ..requests import StockChange, Transfer
from ..values import sku_key

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


class Event(msgspec.Struct, frozen=True):
    """One event; its JSON is its fields (msgspec encodes and decodes it in one pass)."""

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
        return _ENCODER.encode(self)

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
        sku=change.sku,
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
        sku=move.sku,
        delta=None,
        quantity=move.quantity,
        to_store=move.target,
        expect=None,
        reason=move.reason,
        fingerprint=move.fingerprint,
    )


#: Text fields and the grammar each follows (`backends.values`); None: not required.
_TEXT_FIELDS: tuple[tuple[str, Callable[..., Any], bool], ...] = (
    ("message_id", values.idempotency_key, True),
    ("event_id", values.idempotency_key, True),
    ("store", values.store_code, True),
    ("to_store", values.store_code, False),
    ("sku", lambda v, field: values.sku(v, field=field, existing=True), True),
    # Events published by an earlier inv follow the rules they were written under.
    ("reason", lambda v, field: values.reason(v, field=field, existing=True), False),
    ("actor", lambda v, field: values.text(v, field=field, existing=True), True),
    ("source", lambda v, field: values.text(v, field=field, existing=True), True),
    ("at", lambda v, field: values.text(v, field=field, max_length=40), True),
    ("fingerprint", lambda v, field: values.text(v, field=field, max_length=1000), True),
)
_NUMBER_FIELDS = (
    ("delta", values.delta),
    ("quantity", values.quantity),
    ("expect", values.quantity),
)


#: Reads an event's JSON straight into an `Event` when its fields have the right types;
#: anything it refuses is read again by the plain path, which says what is wrong in the
#: words `decode` always used.
_WIRE = msgspec.json.Decoder(Event)
_ENCODER = msgspec.json.Encoder()
#: Fields whose values repeat from event to event (a few stores, SKUs, actors): their
#: checked form is kept, so each distinct value is checked once per worker process.
_REPEATING = frozenset({"store", "to_store", "sku", "reason", "actor", "source"})
_checked: dict[tuple[str, str], Any] = {}


def _check(name: str, check: Callable[..., Any], value: str) -> Any:
    if name not in _REPEATING:
        return check(value, field=name)
    key = (name, value)
    try:
        return _checked[key]
    except KeyError:
        pass
    result = check(value, field=name)  # a ValidationError is not kept: it is raised again
    if len(_checked) >= 100_000:
        _checked.clear()
    _checked[key] = result
    return result


def decode(raw: bytes | None) -> Event:
    """An event from the topic, or `MalformedEvent` saying what is wrong with it.

    Every field is checked by the grammar a command's arguments follow (`backends.values`),
    so what a worker applies is what a command could have asked for.
    """
    if not raw:
        raise MalformedEvent("the message is empty")
    try:
        wire = _WIRE.decode(raw)
    except (msgspec.MsgspecError, RecursionError):  # the plain path says why
        pass
    else:
        event = _as_sent(wire)
        if event is not None:
            return event
    try:
        data = loads(raw)
    except (UnicodeDecodeError, JsonError) as exc:
        raise MalformedEvent(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MalformedEvent(f"not a JSON object but {type(data).__name__}") from None
    return _checked_event(data)


def _as_sent(wire: Event) -> Event | None:
    """`wire` itself when every field is already in its checked form (what `inv` sends):
    the same checks as `_checked_event` without building anything; None when any value
    is not, so that the plain path says what is wrong or builds the checked event."""
    if wire.v != SCHEMA_VERSION or wire.type not in EVENT_TYPES:
        return None
    try:
        for name, check, _ in _TEXT_FIELDS:
            value = getattr(wire, name)
            if value is not None and _check(name, check, value) != value:
                return None
        for name, number in _NUMBER_FIELDS:
            value = getattr(wire, name)
            if value is not None:
                number(value, field=name)
        _check_shape(wire.type, wire.delta, wire.quantity, wire.expect, wire.store, wire.to_store)
        _check_time(wire.at)
    except (ValidationError, MalformedEvent):
        return None
    return wire


def _check_shape(
    kind: str,
    delta: int | None,
    quantity: int | None,
    expect: int | None,
    store: str,
    to_store: str | None,
) -> None:
    """Which numbers and stores each type of event has."""
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
    if kind == "stock.transfer":
        if to_store is None:
            raise MalformedEvent("to_store is missing")
        if (quantity or 0) <= 0:
            raise MalformedEvent("a transfer moves a positive quantity")
        if to_store == store:
            raise MalformedEvent("a transfer goes to another store")
        if expect is not None:
            raise MalformedEvent("a transfer has no expect")
    elif to_store is not None:
        raise MalformedEvent(f"{kind} has no to_store")


def _check_time(at: str) -> None:
    try:
        values.moment(at, field="at")
        datetime.fromisoformat(at.replace("Z", "+00:00"))  # as `Event.time` reads it
    except (ValueError, ValidationError):
        raise MalformedEvent(f"at is not an ISO time: {at!r}") from None


def _checked_event(data: dict[str, Any]) -> Event:
    version = data.get("v")
    if version != SCHEMA_VERSION or type(version) is not int:
        raise MalformedEvent(f"schema version {version!r}, this worker reads {SCHEMA_VERSION}")
    kind = data.get("type")
    if kind not in EVENT_TYPES:
        raise MalformedEvent(f"unknown type {kind!r}")
    texts: dict[str, Any] = {}
    numbers: dict[str, int | None] = {}
    try:
        for name, check, required in _TEXT_FIELDS:
            value = data.get(name)
            if value is None:
                if required or (name == "to_store" and kind == "stock.transfer"):
                    raise MalformedEvent(f"{name} is missing")
                texts[name] = None
                continue
            if type(value) is not str:
                raise MalformedEvent(f"{name} is not text: {value!r}")
            texts[name] = _check(name, check, value)
        for name, number in _NUMBER_FIELDS:
            value = data.get(name)
            if value is not None and type(value) is not int:
                raise MalformedEvent(f"{name} is not a whole number: {value!r}")
            numbers[name] = None if value is None else number(value, field=name)
    except ValidationError as exc:
        raise MalformedEvent(str(exc)) from None
    delta, quantity, expect = numbers["delta"], numbers["quantity"], numbers["expect"]
    _check_shape(kind, delta, quantity, expect, texts["store"], texts["to_store"])
    event = Event(
        message_id=texts["message_id"],
        event_id=texts["event_id"],
        type=kind,
        store=texts["store"],
        sku=texts["sku"],
        delta=delta,
        quantity=quantity,
        to_store=texts["to_store"],
        expect=expect,
        reason=texts["reason"],
        actor=texts["actor"],
        source=texts["source"],
        at=texts["at"],
        fingerprint=texts["fingerprint"],
    )
    _check_time(event.at)
    return event
