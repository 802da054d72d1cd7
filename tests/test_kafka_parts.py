"""The kafka backend's parts on their own: the event format, the Redis cache's version
guard (against a real Redis), and the batch applier on a real PostgreSQL."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from broker import free_port
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pg import drop_database, fresh_database
from services import delete_keys, redis_or_skip
from strategies import examples

from backends import BatchRejected, BatchRow, InventoryError, rules
from backends.kafka import KafkaBackend
from backends.kafka.apply import Message, apply_batch
from backends.kafka.cache import Cache
from backends.kafka.events import MalformedEvent, decode, from_change, from_transfer
from backends.postgres import PostgresBackend
from backends.requests import stock_change, transfer

# -- events ----------------------------------------------------------------------------


def _adjust(sku: str = "MUG", delta: int = -2, **kw: Any) -> Any:
    change = stock_change("main", sku, delta=delta, expect=kw.get("expect"), reason="sale")
    return from_change(change, event_id=kw.get("event_id"), actor="ana", source="cli")


def test_an_event_round_trips_and_is_keyed_by_store_and_sku() -> None:
    event = _adjust(" Mug ", -2, expect=5, event_id="pos-1")
    assert event.key == b"main:mug"
    assert decode(event.encode()) == event
    data = json.loads(event.encode())
    assert data["v"] == 1 and data["type"] == "stock.adjust" and data["delta"] == -2
    assert data["expect"] == 5 and data["event_id"] == "pos-1" and data["sku"] == "Mug"
    move = from_transfer(
        transfer("MUG", "main", "north", 3, None), event_id=None, actor="ana", source="cli"
    )
    assert decode(move.encode()) == move and move.to_store == "north" and move.quantity == 3
    assert move.event_id != move.message_id


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"", "empty"),
        (b"not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"v": 2}', "schema version 2"),
        (b"\xff\xfe", "not JSON"),
    ],
)
def test_malformed_bytes_say_what_is_wrong(raw: bytes, why: str) -> None:
    with pytest.raises(MalformedEvent, match=why):
        decode(raw)


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("type", "stock.steal", "unknown type"),
        ("delta", None, "delta is missing"),
        ("delta", "3", "delta is not a whole number"),
        ("delta", True, "delta is not a whole number"),
        ("delta", 2**40, "delta: 1099511627776 is larger than 2147483647"),
        ("sku", "  ", "sku: must not be empty"),
        ("quantity", -1, "quantity: -1 is negative"),
        ("at", "yesterday", "not an ISO time"),
        ("message_id", None, "message_id is missing"),
        ("reason", "sale\x00", "control character"),
        ("reason", "sale\udcff", "not valid UTF-8"),
        ("sku", "MUG\udcff", "not valid UTF-8"),
        ("event_id", "k" * 201, "longer than 200"),
        ("store", "Main Store", "store"),
        ("quantity", 3, "has a delta, not a quantity"),
    ],
)
def test_a_bad_field_is_named(field: str, value: Any, why: str) -> None:
    data = json.loads(_adjust().encode())
    data[field] = value
    with pytest.raises(MalformedEvent, match=why):
        decode(json.dumps(data).encode())


def test_an_event_names_a_sku_as_a_lookup_does() -> None:
    """An event's SKU names a product that exists, so it follows the lookup grammar: an
    invisible character (allowed before the rules refused it for new SKUs) is kept, and
    the worker finds the product or refuses it as unknown, as `inv update` does."""
    data = json.loads(_adjust().encode())
    data["sku"] = "MUG\u200b"
    assert decode(json.dumps(data).encode()).sku == "MUG\u200b"


# -- the cache, on a real Redis ----------------------------------------------------------


@pytest.fixture
def cache() -> Iterator[Cache]:
    made = Cache(redis_or_skip(), prefix=f"test-{uuid.uuid4().hex[:8]}", ttl=60)
    yield made
    delete_keys(made.prefix)
    made.close()


CATALOG = {
    "sku": "MUG",
    "name": "Mug",
    "price": "4.50",
    "unit": "each",
    "category": None,
    "reorder_level": 0,
}


def test_a_miss_fills_and_the_next_read_hits(cache: Cache) -> None:
    stamp, catalog, stock = cache.read("mug")
    assert stamp == ("0", "0") and catalog is None
    cache.fill(stamp, "mug", CATALOG, [("main", 7, 12), ("north", 3, 1)])
    _, catalog, stock = cache.read("mug")
    assert catalog == CATALOG and stock == {"main": 12, "north": 1}
    assert (cache.hits, cache.misses) == (1, 1)
    assert cache.stats()["hit_ratio"] == 0.5


def test_a_slow_reader_never_puts_an_older_quantity_back(cache: Cache) -> None:
    stamp, _, _ = cache.read("mug")  # a reader misses and reads version 7 ...
    assert cache.write_through([("MUG", "main", 11, 8)])  # ... the worker commits version 8
    cache.fill(stamp, "mug", CATALOG, [("main", 7, 12)])  # ... the reader fills late
    assert cache.read("mug")[2] == {"main": 11}
    assert cache.write_through([("MUG", "main", 99, 5)])  # an old write-through, replayed
    assert cache.read("mug")[2] == {"main": 11}
    assert cache.write_through([("MUG", "main", 10, 9), ("MUG", "north", 4, 10)])
    assert cache.read("mug")[2] == {"main": 10, "north": 4}


def test_a_reader_that_read_before_a_forget_cannot_fill_after_it(cache: Cache) -> None:
    stamp, _, _ = cache.read("mug")  # a reader misses and reads the old catalog ...
    assert cache.forget(["Mug"])  # ... a direct change commits and forgets the entry ...
    cache.fill(stamp, "mug", CATALOG, [("main", 7, 12)])  # ... the old read arrives
    assert cache.read("mug")[1] is None, "refused: it would bring the old catalog back"
    fresh, _, _ = cache.read("mug")
    cache.fill(fresh, "mug", {**CATALOG, "name": "Big mug"}, [("main", 8, 0)])
    assert cache.read("mug")[1:] == ({**CATALOG, "name": "Big mug"}, {"main": 0})


def test_forgetting_drops_one_entry_or_all(cache: Cache) -> None:
    for sku in ("mug", "cup"):
        stamp, _, _ = cache.read(sku)
        cache.fill(stamp, sku, {**CATALOG, "sku": sku}, [("main", 1, 1)])
    old_stamp = cache.read("cup")[0]
    assert old_stamp is not None
    assert cache.forget(["MUG"])
    assert cache.read("mug")[1] is None and cache.read("cup")[1] is not None
    assert cache.forget_all()
    stamp, catalog, _ = cache.read("cup")
    assert stamp == ("1", "0") and catalog is None
    cache.fill(old_stamp, "cup", CATALOG, [("main", 2, 2)])  # read before forget_all
    assert cache.read("cup")[1] is None, "a fill read before forget_all is refused"


def test_redis_down_is_a_miss_and_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    down = Cache(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)
    with caplog.at_level(logging.WARNING, logger="inv.cache"):
        assert down.read("mug") == (None, None, {})
        assert down.read("mug") == (None, None, {})
        assert not down.write_through([("MUG", "main", 1, 1)])
        assert not down.forget_all()
    warnings = [r for r in caplog.records if r.name == "inv.cache"]
    assert len(warnings) == 1 and "is unavailable" in warnings[0].getMessage()
    assert down.stats()["ok"] is False


# -- the batch applier, on a real PostgreSQL -------------------------------------------


@pytest.fixture
def database() -> Iterator[str]:
    url = fresh_database()
    backend = PostgresBackend(url, actor="tester")
    backend.add_product("Mug", "4.50", sku="MUG", quantity=5)
    backend.add_store("north")
    backend.close()
    yield url
    drop_database(url)


def _messages(*events: Any) -> list[Message]:
    return [
        Message.from_record("t", 0, i, e if isinstance(e, bytes) else e.encode())
        for i, e in enumerate(events)
    ]


def _apply(url: str, messages: list[Message]) -> Any:
    backend = PostgresBackend(url, actor="worker")
    try:
        return backend.db.write(lambda connection: apply_batch(connection, messages))
    finally:
        backend.close()


def test_a_batch_applies_in_order_and_rejects_what_cannot_apply(database: str) -> None:
    take = _adjust(delta=-4)
    too_many = _adjust(delta=-2)  # 1 left: refused, and the rest goes on
    restock = _adjust(delta=10, event_id="delivery-1")
    again = _adjust(delta=10, event_id="delivery-1")  # the same key: skipped
    clash = _adjust(delta=3, event_id="delivery-1")  # the same key, another request
    unknown = _adjust("NOPE", 1)
    move = from_transfer(
        transfer("mug", "main", "north", 6, None), event_id=None, actor="ana", source="cli"
    )
    outcome = _apply(
        database, _messages(take, too_many, restock, again, clash, unknown, b"junk", move)
    )
    assert outcome.applied == 3 and outcome.duplicates == 1
    assert [r.error for r in outcome.rejected] == [
        "InsufficientStock",
        "Conflict",
        "NotFound",
        "MalformedEvent",
    ]
    assert sorted((v.store, v.quantity) for v in outcome.stock) == [("main", 5), ("north", 6)]
    with psycopg.connect(database, autocommit=True) as conn:
        audit = conn.execute(
            "SELECT action, store, delta, quantity_after FROM audit_log "
            "WHERE action LIKE 'stock.%%' ORDER BY id"
        ).fetchall()
        rejected = conn.execute("SELECT count(*) FROM rejected_events").fetchone()
    assert audit == [
        ("stock.adjust", "main", -4, 1),
        ("stock.adjust", "main", 10, 11),
        ("stock.transfer_out", "main", -6, 5),
        ("stock.transfer_in", "north", 6, 6),
    ]
    assert rejected == (4,)
    # The whole batch delivered again (a worker killed before its offset commit): nothing
    # applies twice, nothing rejected is applied now.
    replay = _apply(
        database, _messages(take, too_many, restock, again, clash, unknown, b"junk", move)
    )
    assert (replay.applied, replay.duplicates, replay.rejected) == (0, 8, [])


_STORES = ("main", "north", "south")


def _event(kind: str, store: str, amount: int, key: str | None, expect: int | None) -> Any:
    if kind == "transfer":
        target = _STORES[(_STORES.index(store) + 1) % len(_STORES)]
        move = transfer("MUG", store, target, abs(amount) or 1, None)
        return from_transfer(move, event_id=key, actor="a", source="cli")
    change = stock_change(
        store,
        "mug",
        delta=amount if kind == "adjust" else None,
        quantity=abs(amount) if kind == "set" else None,
        expect=expect,
        reason=None,
    )
    return from_change(change, event_id=key, actor="a", source="cli")


_batch_events = st.lists(
    st.tuples(
        st.sampled_from(["adjust"] * 6 + ["set", "transfer"]),
        st.sampled_from(_STORES),
        st.integers(-6, 6),
        st.sampled_from([None, None, None, "k1", "k2"]),
        st.sampled_from([None, None, None, 0, 3]),
        st.booleans(),  # sent twice (the same message again)
    ),
    min_size=1,
    max_size=12,
)


@settings(
    max_examples=examples(40),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batches=st.lists(_batch_events, min_size=1, max_size=3))
def test_a_batch_does_what_its_events_do_one_by_one(
    database: str, batches: list[list[tuple[Any, ...]]]
) -> None:
    """Rows whose events are all plain adjustments take one guarded UPDATE of their net
    delta, the others are locked and run event by event: either way a batch must do what
    the rules do applied to its events one at a time, in order (refusals, keys used twice,
    messages delivered twice, stock never below zero on the way)."""
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO stores (code, name) VALUES ('south', 'South') ON CONFLICT DO NOTHING"
        )
        on_hand = dict(
            conn.execute(
                "SELECT s.code, i.quantity FROM inventory i JOIN stores s ON s.id = i.store_id"
            ).fetchall()
        )
    stock = {code: on_hand.get(code, 0) for code in _STORES}
    applied: dict[str, str] = {}  # event id -> fingerprint
    refused: set[str] = set()  # message ids
    for spec in batches:
        suffix = uuid.uuid4().hex[:8]
        events = []
        for kind, store, amount, key, expect, twice in spec:
            event = _event(kind, store, amount, key and f"{key}-{suffix}", expect)
            events += [event, event] if twice else [event]
        expected_errors: list[str] = []
        for event in events:  # the model: the rules, one event at a time
            if event.message_id in refused:
                continue
            if event.event_id in applied:
                if applied[event.event_id] != event.fingerprint:
                    expected_errors.append("Conflict")
                    refused.add(event.message_id)
                continue
            try:
                if event.type == "stock.transfer":
                    stock[event.store], stock[event.to_store] = rules.transfer_quantities(
                        stock[event.store],
                        stock[event.to_store],
                        sku="MUG",
                        source=event.store,
                        target=event.to_store,
                        quantity=event.quantity,
                    )
                else:
                    stock[event.store] = rules.next_quantity(
                        stock[event.store],
                        sku="MUG",
                        store=event.store,
                        delta=event.delta,
                        quantity=event.quantity,
                        expect=event.expect,
                    )
            except InventoryError as error:
                expected_errors.append(type(error).__name__)
                refused.add(event.message_id)
                continue
            applied[event.event_id] = event.fingerprint
        outcome = _apply(database, _messages(*events))
        assert [r.error for r in outcome.rejected] == expected_errors
        with psycopg.connect(database, autocommit=True) as conn:
            got = dict(
                conn.execute(
                    "SELECT s.code, i.quantity FROM inventory i JOIN stores s ON s.id = i.store_id"
                ).fetchall()
            )
            last = dict(
                conn.execute(
                    "SELECT DISTINCT ON (store) store, quantity_after FROM audit_log "
                    "WHERE action LIKE 'stock.%%' ORDER BY store, id DESC"
                ).fetchall()
            )
        assert {code: got.get(code, 0) for code in _STORES} == stock
        assert {code: q for code, q in last.items()} == {code: got[code] for code in last}
        assert {(v.store, v.quantity) for v in outcome.stock} <= set(got.items())


def test_a_rejected_event_leaves_no_empty_stock_row(database: str) -> None:
    outcome = _apply(
        database,
        _messages(
            from_change(
                stock_change("north", "MUG", delta=-1, expect=None, reason=None),
                event_id=None,
                actor="a",
                source="cli",
            )
        ),
    )
    assert [r.error for r in outcome.rejected] == ["InsufficientStock"]
    with psycopg.connect(database, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT count(*) FROM inventory i JOIN stores s ON s.id = i.store_id "
            "WHERE s.code = 'north'"
        ).fetchone()
    assert rows == (0,), "north was never stocked: the refused event must not stock it"


def test_two_workers_given_the_same_batch_apply_it_once(database: str) -> None:
    """After a rebalance the old and the new owner of a partition may hold the same
    events: the second waits for the first (a lock per partition) and finds them done."""
    messages = _messages(_adjust(delta=-5))  # 5 on hand: whoever is second must not refuse
    first = PostgresBackend(database, actor="worker")
    second: dict[str, Any] = {}
    with first.db.connect() as connection, connection.begin():
        outcome = apply_batch(connection, messages)
        racer = threading.Thread(target=lambda: second.update(o=_apply(database, messages)))
        racer.start()
        racer.join(0.5)
        assert racer.is_alive(), "the second worker waits for the first one's commit"
    racer.join(10)
    first.close()
    assert outcome.applied == 1
    assert (second["o"].applied, second["o"].duplicates, second["o"].rejected) == (0, 1, [])
    with psycopg.connect(database, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM rejected_events").fetchone() == (0,)


def test_a_message_that_always_fails_is_isolated_and_rejected(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch that fails for a reason other than PostgreSQL being away (a bug, a value
    the database refuses) is split until the one message that fails is found; it is
    rejected and the rest applied.  The failure is made by hand: a real server cannot be
    asked to fail on one message."""
    from backends.kafka import worker as worker_module
    from backends.kafka.backend import KafkaBackend

    messages = _messages(*(_adjust(delta=d) for d in (1, 2, 3, 4, 5)))
    bad = messages[3].message_id
    real = worker_module.apply_batch

    def failing(connection: Any, batch: Any) -> Any:
        if any(m.message_id == bad for m in batch):
            raise RuntimeError("boom")
        return real(connection, batch)

    monkeypatch.setattr(worker_module, "apply_batch", failing)
    backend = KafkaBackend(database, bootstrap_servers="127.0.0.1:1", actor="worker")
    outcome = worker_module.Worker(backend)._apply(messages)
    backend.close()
    assert outcome is not None
    assert outcome.applied == 4 and [r.error for r in outcome.rejected] == ["Unprocessable"]
    with psycopg.connect(database, autocommit=True) as conn:
        assert conn.execute("SELECT message_id, reason FROM rejected_events").fetchall() == [
            (bad, "RuntimeError: boom")
        ]
        stock = conn.execute(
            "SELECT quantity FROM inventory i JOIN stores s ON s.id = i.store_id "
            "WHERE s.code = 'main'"
        ).fetchone()
    assert stock == (5 + 1 + 2 + 3 + 5,)


# -- the kafka backend's one post-write hook ----------------------------------------------


def test_writes_straight_to_postgres_forget_what_they_touched_and_nothing_else(
    database: str,
) -> None:
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    backend = KafkaBackend(
        database, bootstrap_servers="127.0.0.1:1", redis_url=redis_or_skip(), cache_prefix=prefix
    )
    reader = KafkaBackend(
        database, bootstrap_servers="127.0.0.1:1", redis_url=redis_or_skip(), cache_prefix=prefix
    )
    assert backend.cache is not None and reader.cache is not None
    try:
        reader.get("MUG")  # a miss: fills the entry
        assert reader.cache.read("mug")[1] is not None

        def cached() -> bool:
            return reader.cache is not None and reader.cache.read("mug")[1] is not None

        # A dry run and a refused import change nothing: the entry stays.
        backend.apply([BatchRow(2, "MUG", name="Big mug")], dry_run=True)
        with pytest.raises(BatchRejected):
            backend.apply([BatchRow(2, "MUG", change=-99)])
        assert cached()
        # An edit of another product leaves this one's entry alone; this one's drops it.
        backend.add_product("Cup", "1.00", sku="CUP")
        assert cached()
        backend.edit_product("mug", price="5.00")
        assert not cached()
        assert reader.get("MUG").price == Decimal("5.00")
    finally:
        delete_keys(prefix)
        backend.close()
        reader.close()
