"""The `kafka` backend (v3): stock movements go through Kafka, a worker applies them.

Configuration (settings; see the README for flags and environment names)::

    database_url              the primary (the worker's and the catalog's)   INV_DATABASE_URL
    read_database_urls        replicas, comma-separated                 INV_READ_DATABASE_URLS
    kafka_bootstrap_servers   host:port[,host:port]                INV_KAFKA_BOOTSTRAP_SERVERS
    kafka_topic               the events topic (default inventory-events)     INV_KAFKA_TOPIC
    kafka_partitions          partitions `inv init` creates (default 6)  INV_KAFKA_PARTITIONS
    kafka_timeout             seconds to wait for the broker (default 10)   INV_KAFKA_TIMEOUT
    kafka_group               the workers' consumer group (inv-workers)     INV_KAFKA_GROUP
    redis_url                 the read cache (optional)                        INV_REDIS_URL
    cache_ttl                 seconds a cache entry lives (default 300)        INV_CACHE_TTL
    cache_prefix              the cache's key prefix (default inv)          INV_CACHE_PREFIX
    wait_timeout              seconds `--wait` waits for the worker (30)    INV_WAIT_TIMEOUT

**Writes (CQRS).**  `adjust`, `set_quantity` and `transfer` are checked here (the numbers,
the store and the product exist, a reused idempotency key), then published as an event
(`backends.kafka.events`) with the idempotent producer and `acks=all`, keyed by
`store:sku`; the call returns once the broker has it, with a *pending* entry
(`Movement.pending`).  With `wait` (`--wait`) it blocks until a worker has applied the
event and returns the entry, or raises the error the worker rejected it with.  Everything
else (catalog, stores, imports) is rare, needs an answer at once, and is written straight
to PostgreSQL as the postgres backend does; the worker serialises with it on row locks.

**Reads.**  `get` asks Redis first (`backends.kafka.cache`); a miss is read from the
primary and fills the cache; with Redis down it reads a replica, then the primary.  The
other reads go to a replica, or the primary when there is none or it is down.  After a
write (or a `--wait`), the same backend reads the primary and skips the
cache: it reads its own writes.

**The worker** is `backends.kafka.worker` (`inv worker`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Self

from sqlalchemy import text

from .. import requests, values
from ..errors import (
    BackendUnavailable,
    ConfigurationError,
    InventoryError,
    NotFound,
)
from ..models import Movement, Product
from ..postgres import reads
from ..postgres.backend import PostgresBackend
from ..postgres.database import read_urls
from ..requests import (
    StockChange,
    movement_from_json,
    product_from_json,
    product_json,
    reused_key,
)
from ..settings import DEFAULTS, secret
from ..values import sku_key
from . import admin
from .apply import error_from
from .cache import Cache
from .events import Event, from_change, from_transfer

if TYPE_CHECKING:
    from ..settings import Settings

__all__ = ["KafkaBackend", "pending"]

log = logging.getLogger("inv.kafka")


def pending(event: Event, action: str, store: str, delta: int | None) -> Movement:
    """The entry an event will write, before a worker has applied it: id 0, and a
    quantity after only for a set (its target)."""
    return Movement(
        id=0,
        at=event.time,
        actor=event.actor,
        source=event.source,
        event_id=event.event_id,
        store=store,
        sku=event.sku,
        action=action,
        delta=delta,
        quantity_after=event.quantity if action == "stock.set" else None,
        reason=event.reason,
    )


class KafkaBackend(PostgresBackend):
    """Writes through Kafka to PostgreSQL, reads through Redis; see the module docstring."""

    name = "kafka"

    def __init__(
        self,
        url: str,
        *,
        bootstrap_servers: str,
        topic: str = DEFAULTS.kafka_topic,
        partitions: int = DEFAULTS.kafka_partitions,
        timeout: float = DEFAULTS.kafka_timeout,
        redis_url: str | None = None,
        cache_ttl: int = DEFAULTS.cache_ttl,
        cache_prefix: str = DEFAULTS.cache_prefix,
        wait: bool = False,
        wait_timeout: float = DEFAULTS.wait_timeout,
        group: str = DEFAULTS.kafka_group,
        read_urls: Sequence[str] = (),
        actor: str = "unknown",
        source: str = "cli",
    ) -> None:
        super().__init__(url, read_urls=read_urls, actor=actor, source=source)
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.partitions = partitions
        self.timeout = timeout
        self.group = group
        self.wait = wait
        self.wait_timeout = wait_timeout
        self.cache = Cache(redis_url, ttl=cache_ttl, prefix=cache_prefix) if redis_url else None
        #: Shared with the views `acting_as` makes (one producer per server process).
        self._shared: dict[str, Any] = {"producer": None}

    @classmethod
    def from_settings(cls, settings: Settings, *, actor: str, source: str) -> Self:
        url = secret(settings.database_url)
        if not url:
            raise ConfigurationError(
                "the kafka backend needs its database: set INV_DATABASE_URL "
                "(postgresql://user:password@host:5432/dbname)"
            )
        if not settings.kafka_bootstrap_servers:
            raise ConfigurationError(
                "the kafka backend needs a broker: set INV_KAFKA_BOOTSTRAP_SERVERS (host:9092)"
            )
        return cls(
            url,
            bootstrap_servers=settings.kafka_bootstrap_servers,
            topic=settings.kafka_topic,
            partitions=settings.kafka_partitions,
            timeout=settings.kafka_timeout,
            redis_url=secret(settings.redis_url),
            cache_ttl=settings.cache_ttl,
            cache_prefix=settings.cache_prefix,
            wait_timeout=settings.wait_timeout,
            group=settings.kafka_group,
            read_urls=read_urls(settings),
            actor=actor,
            source=source,
        )

    @property
    def dead_letter_topic(self) -> str:
        return f"{self.topic}.dlq"

    @property
    def _producer(self) -> Any:
        return self._shared["producer"]

    @_producer.setter
    def _producer(self, producer: Any) -> None:
        self._shared["producer"] = producer

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(self.timeout)
            self._producer = None
        if self.cache is not None:
            self.cache.close()
        super().close()

    # -- Kafka -------------------------------------------------------------------------

    def kafka_config(self) -> dict[str, Any]:
        """What every client of this backend's broker shares."""
        return {
            "bootstrap.servers": self.bootstrap_servers,
            "socket.connection.setup.timeout.ms": max(1000, int(self.timeout * 1000)),
            # librdkafka's own lines go through logging, not straight to stderr: a command
            # reports a broker it cannot reach once, as an error; the worker logs them.
            "logger": logging.getLogger("inv.kafka.client"),
        }

    def unreachable(self, detail: str) -> BackendUnavailable:
        return BackendUnavailable(f"cannot reach Kafka at {self.bootstrap_servers}: {detail}")

    def producer(self) -> Any:
        if self._producer is None:
            from confluent_kafka import Producer

            self._producer = Producer(
                {
                    **self.kafka_config(),
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 5,
                    "message.timeout.ms": max(1000, int(self.timeout * 1000)),
                    "allow.auto.create.topics": False,
                }
            )
        return self._producer

    def publish(self, event: Event) -> None:
        """Send `event` and return once the broker has it; `BackendUnavailable` if it
        cannot say so within the timeout (the event was then not recorded)."""
        failures: list[str] = []

        def delivered(err: Any, msg: Any) -> None:
            if err is not None:
                failures.append(err.str())

        producer = self.producer()
        try:
            producer.produce(self.topic, event.encode(), key=event.key, on_delivery=delivered)
        except BufferError as exc:
            raise self.unreachable(f"the send buffer is full ({exc})") from None
        except Exception as exc:  # KafkaException: an unknown topic, a bad setting
            raise self.unreachable(str(exc)) from None
        left = producer.flush(self.timeout + 1)
        if left or failures:
            self._producer = None  # an idempotent producer that lost its broker is stuck
            raise self.unreachable(
                f"{failures[0] if failures else 'no answer'}; event {event.event_id} was not "
                f"confirmed: to retry without applying it twice, re-run with "
                f"--idempotency-key {event.event_id}"
            )

    # -- set-up ------------------------------------------------------------------------

    def init(self, *, record: bool = True) -> bool:
        created = super().init(record=record)
        admin.create_topics(self)
        return created

    # -- stock: through Kafka ----------------------------------------------------------

    def _first_result(self, event_id: str | None, fingerprint: str) -> list[Movement] | None:
        """The entries a reused idempotency key gave the first time; `Conflict` if it was
        used for a different request."""
        if event_id is None:
            return None
        with self.db.connect() as connection:
            row = connection.execute(
                text("SELECT fingerprint, result FROM applied_events WHERE event_id = :k"),
                {"k": event_id},
            ).first()
        if row is None:
            return None
        if row.fingerprint != fingerprint:
            raise reused_key(event_id)
        return [movement_from_json(m, replayed=True) for m in row.result.get("movements", [])]

    def _check_names(self, sku: str, *stores: str) -> None:
        """`NotFound` for a store or product that does not exist (a replica may lag:
        what it does not know is asked of the primary)."""
        query = text(
            "SELECT (SELECT array_agg(code) FROM stores WHERE code = ANY(:c)) AS stores, "
            "EXISTS (SELECT 1 FROM products WHERE sku_key = :k) AS product"
        )
        params = {"c": list(stores), "k": sku_key(sku)}
        with self._read() as connection:
            row = connection.execute(query, params).one()
        if (set(row.stores or ()) != set(stores) or not row.product) and self.read_urls:
            with self.db.connect() as connection:
                row = connection.execute(query, params).one()
        for code in stores:
            if code not in (row.stores or ()):
                raise NotFound(f"no store {code!r}")
        if not row.product:
            raise NotFound(f"no product with SKU {sku!r}")

    def _change_stock(self, change: StockChange) -> Movement:
        first = self._first_result(change.event_id, change.fingerprint)
        if first is not None:
            return first[0]
        self._check_names(change.sku, change.store)
        event = from_change(change, event_id=change.event_id, actor=self.actor, source=self.source)
        self.publish(event)
        if self.wait:
            return self.wait_for(event)[0]
        return pending(event, change.action, change.store, change.delta)

    def transfer(
        self,
        sku: str,
        from_store: str,
        to_store: str,
        quantity: int,
        reason: str | None = None,
        *,
        event_id: str | None = None,
    ) -> tuple[Movement, Movement]:
        move = requests.transfer(sku, from_store, to_store, quantity, reason, event_id)
        first = self._first_result(move.event_id, move.fingerprint)
        if first is not None:
            return first[0], first[1]
        self._check_names(move.sku, move.source, move.target)
        event = from_transfer(move, event_id=move.event_id, actor=self.actor, source=self.source)
        self.publish(event)
        if self.wait:
            out, into = self.wait_for(event)
            return out, into
        return (
            pending(event, "stock.transfer_out", move.source, -move.quantity),
            pending(event, "stock.transfer_in", move.target, move.quantity),
        )

    def wait_for(self, event: Event, timeout: float | None = None) -> list[Movement]:
        """Block until a worker has applied `event` (its entries) or rejected it (its
        error is raised); `BackendUnavailable` after `timeout` seconds."""
        limit = self.wait_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        query = text(
            "SELECT (SELECT json_build_object('fp', fingerprint, 'result', result) "
            "FROM applied_events WHERE event_id = :e) AS applied, "
            "(SELECT json_build_object('error', error, 'reason', reason, 'detail', detail) "
            "FROM rejected_events WHERE message_id = :m) AS rejected"
        )
        self.db.wrote = True  # from now on this backend reads the primary, not the cache
        pause = 0.002
        with self.db.connect() as connection:
            while True:
                row = connection.execute(query, {"e": event.event_id, "m": event.message_id}).one()
                connection.rollback()
                if row.applied is not None:
                    if row.applied["fp"] != event.fingerprint:
                        raise reused_key(event.event_id)
                    return [movement_from_json(m) for m in row.applied["result"]["movements"]]
                if row.rejected is not None:
                    rejected = row.rejected
                    raise error_from(rejected["error"], rejected["reason"], rejected["detail"])
                if time.monotonic() > deadline:
                    raise BackendUnavailable(
                        f"event {event.event_id} was published but not applied within "
                        f"{limit:g} s; is a worker running? (inv status shows the lag) "
                        f"To wait again without applying it twice, re-run with "
                        f"--idempotency-key {event.event_id} --wait"
                    )
                time.sleep(pause)
                pause = min(pause * 1.5, 0.05)

    # -- reads: Redis, then a replica, then the primary -----------------------------------

    def get(self, sku: str) -> Product:
        checked = values.sku(sku, existing=True)
        if self.cache is None or self.db.wrote:
            return super().get(checked)
        key = sku_key(checked)
        stamp, catalog, stock = self.cache.read(key)
        if catalog is not None:
            return product_from_json({**catalog, "stock": dict(sorted(stock.items()))})
        if stamp is None:  # Redis is down: a replica, then the primary
            return super().get(checked)
        # A miss is filled from the primary: a replica may not have seen a change yet.
        with self.db.connect() as connection:
            row = reads.product_row(connection, checked)
            levels = reads.stock_levels(connection, row.id)
            product = reads.product(connection, row, {code: q for code, _, q in levels})
        self.cache.fill(stamp, key, {**product_json(product), "stock": {}}, levels)
        return product

    def quantity(self, store: str, sku: str) -> int:
        """One quantity: one Redis round trip when cached; else as `get` (which fills the
        cache), with the store codes cached beside it."""
        code = values.store_code(store)
        checked = values.sku(sku, existing=True)
        if self.cache is None or self.db.wrote:
            return super().quantity(code, checked)
        cached = self.cache.quantity(sku_key(checked), code)
        if cached is not None and cached >= 0:
            return cached
        if cached == -1:
            raise NotFound(f"no store {code!r}")
        product = self.get(checked)
        with self.db.connect() as connection:  # the primary: a replica may lag
            codes = list(connection.execute(text("SELECT code FROM stores")).scalars())
        self.cache.fill_stores(codes)
        if code not in codes:
            raise NotFound(f"no store {code!r}")
        return product.stock.get(code, 0)

    # -- catalog, stores, imports: straight to PostgreSQL --------------------------------

    def _written(self, entries: Sequence[Movement] | None) -> None:
        """After a write straight to PostgreSQL, drop the cache entries it touched: the
        products its entries name, the store list when stores came or went, everything
        when anything may have changed."""
        if self.cache is None:
            return
        if entries is None or any(m.action == "store.delete" for m in entries):
            self.cache.forget_all()
            return
        skus = {m.sku for m in entries if m.sku is not None}
        if skus:
            self.cache.forget(skus)
        if any(m.action == "store.create" for m in entries):
            self.cache.forget_stores()

    # -- status ------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """PostgreSQL and its replicas, the broker and the consumer lag per partition,
        the age of the oldest unapplied event, rejected events, and Redis."""
        try:
            report = super().status()
        except InventoryError as exc:
            report = {"backend": self.name, "where": self.describe(), "ok": False}
            report["database"] = {"ok": False, "error": str(exc)}
        else:
            try:
                with self.db.connect() as connection:
                    report["rejected_events"] = connection.execute(
                        text("SELECT count(*) FROM rejected_events")
                    ).scalar_one()
            except InventoryError:
                pass
        kafka = admin.consumer_lag(self, group=self.group)
        report["kafka"] = kafka
        if not kafka["ok"]:
            report["ok"] = False
        if self.cache is not None:
            report["cache"] = self.cache.stats()
            if not report["cache"]["ok"]:
                report["ok"] = False
        return report
