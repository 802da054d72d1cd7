"""The kafka backend with real processes, and what happens when things fail.

Every test runs `inv worker` as a real subprocess against a real broker (Tansu), a real
PostgreSQL and Redis, and checks the invariant that matters: every event sent is applied
exactly once (audit rows equal events sent; every quantity exact), whatever was killed,
cut off or restarted on the way.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from broker import Broker, broker_or_skip, free_port
from confluent_kafka import Consumer, Producer, TopicPartition
from inprocess import run_cli
from outages import TcpProxy, private_redis
from pg import drop_database, fresh_database
from services import redis_or_skip

from backends import NotFound
from backends.kafka import KafkaBackend
from backends.kafka.events import from_change
from backends.requests import stock_change
from backends.settings import Settings

SKUS = [f"K-{n}" for n in range(12)]
STORES = ["main", "north"]

pytestmark = pytest.mark.slow  # real processes


@pytest.fixture(scope="module")
def broker() -> Iterator[Broker]:
    with broker_or_skip() as running:
        yield running


class Shop:
    """One inventory on the kafka backend: a database, a topic, `inv` (in-process) and
    worker processes."""

    def __init__(self, broker: Broker, folder: Path, redis_url: str) -> None:
        self.broker = broker
        self.folder = folder
        self.url = fresh_database()
        self.topic = f"faults-{uuid.uuid4().hex[:10]}"
        self.group = f"{self.topic}-workers"  # not the default: status must use the setting
        self.env = {
            "INV_KAFKA_GROUP": self.group,
            "INV_BACKEND": "kafka",
            "INV_DATABASE_URL": self.url,
            "INV_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
            "INV_KAFKA_TOPIC": self.topic,
            "INV_REDIS_URL": redis_url,
            "INV_CACHE_PREFIX": self.topic,
            "INV_KAFKA_SESSION_TIMEOUT_MS": "2000",
            "INV_KAFKA_TIMEOUT": "3",
            "INV_WAIT_TIMEOUT": "30",
            "INV_ACTOR": "tester",
        }
        self.workers: list[subprocess.Popen[bytes]] = []
        init = self.inv("init")
        assert init.returncode == 0, init.stderr
        backend = self.backend()
        for sku in SKUS:
            backend.add_product(f"Product {sku}", "1.00", sku=sku, quantity=0)
        backend.add_store("north")
        backend.close()
        self.sent: Counter[tuple[str, str]] = Counter()
        self.events = 0

    def backend(self, **overrides: Any) -> KafkaBackend:
        values = {k[4:].lower(): v for k, v in self.env.items()}
        values.update(overrides)
        return KafkaBackend.from_settings(Settings(**values), actor="tester", source="cli")

    def inv(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`inv ARGS...` in-process (the workers are the real processes here)."""
        return run_cli(args, env={**self.env, **(env or {})}, cwd=self.folder)

    def inv_process(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`inv ARGS...` as a real process: for what its stderr shows (the logging set-up)."""
        return subprocess.run(
            [sys.executable, "-m", "inventory_cli", *args],
            capture_output=True,
            text=True,
            env={**os.environ, **self.env, **(env or {})},
            cwd=self.folder,
            timeout=120,
        )

    def start_worker(
        self, name: str, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = (self.folder / f"{name}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "inventory_cli", "worker", "--batch-ms", "20", *args],
            stdout=log,
            stderr=log,
            env={**os.environ, **self.env, **(env or {})},
            cwd=self.folder,
        )
        self.workers.append(process)
        return process

    def log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text()

    def publish(self, changes: list[tuple[str, str, int]], *, pace: float = 0.0) -> None:
        """Send +/- changes as the CLI would, straight to the topic (fast); `pace` seconds
        between sends."""
        producer = Producer({**self.broker.producer_config()})
        for store, sku, delta in changes:
            event = from_change(
                stock_change(store, sku, delta=delta, expect=None, reason="test"),
                event_id=None,
                actor="tester",
                source="cli",
            )
            producer.produce(self.topic, event.encode(), key=event.key)
            producer.poll(0)
            self.sent[(store, sku)] += delta
            self.events += 1
            if pace:
                time.sleep(pace)
        assert producer.flush(30) == 0

    def scalar(self, sql: str, *params: Any) -> Any:
        with psycopg.connect(self.url, autocommit=True) as conn:
            row = conn.execute(sql, params or None).fetchone()
            assert row is not None
            return row[0]

    def applied(self) -> int:
        return int(self.scalar("SELECT count(*) FROM audit_log WHERE action = 'stock.adjust'"))

    def wait_until(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                logs = {p.name: p.read_text()[-2000:] for p in self.folder.glob("*.log")}
                raise AssertionError(f"timed out waiting for {what}; worker logs: {logs}")
            time.sleep(0.05)

    def assert_exactly_once(self) -> None:
        """Audit rows equal events sent, applied_events too, and every quantity exact."""
        assert self.applied() == self.events
        assert self.scalar("SELECT count(*) FROM rejected_events") == 0
        with psycopg.connect(self.url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT s.code, p.sku, i.quantity FROM inventory i JOIN stores s "
                "ON s.id = i.store_id JOIN products p ON p.id = i.product_id"
            ).fetchall()
            duplicates = conn.execute(
                "SELECT count(*) FROM (SELECT event_id FROM audit_log GROUP BY event_id "
                "HAVING count(*) > 1) d"
            ).fetchone()
        assert duplicates == (0,)
        on_hand = {(store, sku): quantity for store, sku, quantity in rows}
        for (store, sku), total in self.sent.items():
            assert on_hand.get((store, sku), 0) == total, (store, sku)

    def committed(self) -> int:
        """The offsets the workers' group has committed, summed over the partitions."""
        consumer = Consumer(self.broker.consumer_config(self.group))
        try:
            partitions = consumer.list_topics(self.topic, timeout=10).topics[self.topic].partitions
            done = consumer.committed(
                [TopicPartition(self.topic, p) for p in partitions], timeout=10
            )
        finally:
            consumer.close()
        return sum(max(0, tp.offset) for tp in done)

    def end_offsets(self) -> int:
        """How many messages the topic holds, summed over the partitions."""
        consumer = Consumer(self.broker.consumer_config(self.group))
        try:
            partitions = consumer.list_topics(self.topic, timeout=10).topics[self.topic].partitions
            marks = [
                consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10)
                for p in partitions
            ]
        finally:
            consumer.close()
        return sum(high for _, high in marks)

    def close(self) -> None:
        for process in self.workers:
            if process.poll() is None:
                process.kill()
                process.wait(10)
        drop_database(self.url)


@pytest.fixture
def shop(broker: Broker, tmp_path: Path) -> Iterator[Shop]:
    made = Shop(broker, tmp_path, redis_or_skip())
    yield made
    made.close()


def stream(n: int, *, seed: int = 0) -> list[tuple[str, str, int]]:
    """`n` changes that never take anything below zero: mostly +1 with some -1."""
    out: list[tuple[str, str, int]] = []
    level: Counter[tuple[str, str]] = Counter()
    for i in range(n):
        key = (STORES[(i + seed) % 2], SKUS[(i * 7 + seed) % len(SKUS)])
        delta = -1 if i % 5 == 4 and level[key] > 0 else 1 + i % 3
        level[key] += delta
        out.append((*key, delta))
    return out


def test_the_cli_end_to_end_with_a_worker(shop: Shop) -> None:
    queued = shop.inv("update", "K-1", "--change", "5", "--reason", "delivery")
    assert queued.returncode == 0, queued.stderr
    assert queued.stdout.startswith("K-1 at main: +5 queued as event ")
    # Not applied: no worker yet, and the status says there is lag.
    assert shop.applied() == 0
    status = json.loads(shop.inv("status", "--format", "json").stdout)
    assert status["kafka"]["lag"] == 1 and status["kafka"]["ok"] is True
    assert 0 <= status["kafka"]["oldest_unapplied_age_s"] < 120, "queued moments ago"
    shop.start_worker("w1")
    waited = shop.inv("update", "K-1", "--change", "-2", "--wait")
    assert waited.returncode == 0, waited.stderr
    assert waited.stdout == "K-1 at main: 5 -> 3 (-2)\n"
    moved = shop.inv("transfer", "K-1", "--from", "main", "--to", "north", "--qty", "1", "--wait")
    assert moved.stdout == "Moved 1 K-1 from main to north (main: 2, north: 1)\n", moved.stderr
    # Refused by the worker: the error and exit code of every backend.
    short = shop.inv("update", "K-1", "--change", "-50", "--wait")
    assert short.returncode == 1
    assert short.stderr == "Error: not enough K-1 at main: 2 on hand, 50 asked for\n"
    stale = shop.inv("update", "K-1", "--set", "9", "--expect", "7", "--wait")
    assert stale.returncode == 1 and "is 2, not the expected 7" in stale.stderr
    # The same idempotency key twice: applied once, the first result both times.
    first = shop.inv("update", "K-2", "--change", "4", "--idempotency-key", "pos-1", "--wait")
    again = shop.inv("update", "K-2", "--change", "4", "--idempotency-key", "pos-1", "--wait")
    assert first.stdout == "K-2 at main: 0 -> 4 (+4)\n"
    assert again.stdout == (
        "K-2 at main: 0 -> 4 (+4) (already applied with this idempotency key; "
        "nothing changed now)\n"
    )
    other = shop.inv("update", "K-2", "--change", "1", "--idempotency-key", "pos-1")
    assert other.returncode == 1 and "already used for a different request" in other.stderr
    shown = json.loads(shop.inv("show", "K-1", "--format", "json").stdout)
    assert shown["stock"] == {"main": 2, "north": 1}
    again_shown = json.loads(shop.inv("show", "K-1", "--format", "json").stdout)
    assert again_shown == shown
    # One quantity, from Redis once cached; store codes are cached and forgotten too.
    reader = shop.backend()
    assert reader.quantity("main", "k-1") == 2 and reader.quantity("north", "K-1") == 1
    assert reader.cache is not None and reader.cache.hits >= 1
    with pytest.raises(NotFound):
        reader.quantity("south", "K-1")
    assert shop.inv("store", "add", "south").returncode == 0
    assert reader.quantity("south", "K-1") == 0
    assert shop.inv("update", "K-1", "--change", "1", "--store", "south", "--wait").returncode == 0
    assert reader.quantity("south", "K-1") == 1, "the worker wrote it through"
    reader.close()
    status = json.loads(shop.inv("status", "--format", "json").stdout)
    assert status["ok"] is True and status["kafka"]["lag"] == 0
    assert status["kafka"]["group"] == shop.group  # the workers' group, from the setting
    table = shop.inv("status")
    assert (
        table.returncode == 0 and "kafka.lag" in table.stdout and "cache.hit_ratio" in table.stdout
    )
    assert status["rejected_events"] == 2
    assert status["cache"]["hits"] >= 1 and status["cache"]["hit_ratio"] > 0
    # The rejected events went to the dead-letter topic too.
    dead = _read_topic(shop.broker, f"{shop.topic}.dlq", 2)
    assert sorted(d["error"] for d in dead) == ["InsufficientStock", "StaleExpect"]
    assert shop.scalar("SELECT count(*) FROM audit_log WHERE action LIKE 'stock.%'") == 6


def _read_topic(
    broker: Broker, topic: str, count: int, timeout: float = 20
) -> list[dict[str, Any]]:
    consumer = Consumer(broker.consumer_config(f"reader-{uuid.uuid4().hex[:6]}"))
    consumer.subscribe([topic])
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(found) < count and time.monotonic() < deadline:
            record = consumer.poll(0.2)
            if record is not None and record.error() is None:
                found.append(json.loads(record.value() or b"{}"))
    finally:
        consumer.close()
    return found


def test_kill_9_the_worker_mid_stream_applies_every_event_once(shop: Shop) -> None:
    shop.publish(stream(3000))
    for round_ in range(3):
        worker = shop.start_worker(f"w{round_}", "--batch-size", "100")
        before = shop.applied()
        shop.wait_until(
            lambda before=before: shop.applied() >= before + 300, 60, "the worker to make progress"
        )
        worker.kill()
        worker.wait(10)
        assert shop.applied() < 3000, "the stream should still be going when it is killed"
    shop.start_worker("last", "--batch-size", "100")
    shop.wait_until(lambda: shop.applied() >= 3000, 120, "every event")
    # Offsets are committed after the batch that applied them: once all are, anything
    # redelivered has been through the worker, applied twice or not.
    shop.wait_until(lambda: shop.committed() >= 3000, 60, "every offset committed")
    shop.assert_exactly_once()


def test_two_workers_share_six_partitions_while_one_stops_and_starts(shop: Shop) -> None:
    a = shop.start_worker("a")
    b = shop.start_worker("b")
    changes = stream(4000, seed=3)
    import threading

    sender = threading.Thread(target=shop.publish, args=(changes,), kwargs={"pace": 0.0015})
    sender.start()
    shop.wait_until(lambda: shop.applied() >= 800, 60, "both workers to apply")
    b.send_signal(signal.SIGTERM)
    assert b.wait(30) == 0, "SIGTERM finishes the batch in hand and exits 0"
    assert "worker stopped" in shop.log("b")
    shop.start_worker("b2")
    shop.wait_until(lambda: "assigned partitions" in shop.log("b2"), 60, "b2 to join")
    sender.join(120)
    shop.wait_until(lambda: shop.applied() >= 4000, 120, "every event")
    shop.wait_until(lambda: shop.committed() >= 4000, 60, "every offset committed")
    shop.assert_exactly_once()
    assert shop.log("a").count("assigned partitions") >= 2, "a rebalance gave a new share"
    a.send_signal(signal.SIGTERM)
    assert a.wait(30) == 0


def test_postgres_unreachable_for_the_worker_retries_and_loses_nothing(shop: Shop) -> None:
    host_port = shop.url.split("@", 1)[1].split("/", 1)[0]
    host, port = host_port.split(":")
    with TcpProxy((host, int(port))) as proxy:
        behind = shop.url.replace(host_port, f"127.0.0.1:{proxy.port}")
        shop.start_worker("w", env={"INV_DATABASE_URL": behind})
        shop.publish(stream(200))
        shop.wait_until(lambda: shop.applied() >= 200, 60, "the first events")
        proxy.cut()
        shop.publish(stream(500, seed=1))
        shop.wait_until(lambda: "retrying in" in shop.log("w"), 30, "the worker to retry")
        assert shop.committed() <= 200
        shop.wait_until(lambda: shop.log("w").count("retrying in") >= 3, 60, "two more retries")
        # Nothing applied while it is away, and no offset committed past what was applied
        # (the first 200's commit may itself be late: on a loaded machine a 2 s session
        # can lapse, and a commit from a member the group dropped is refused).
        assert shop.applied() == 200
        assert shop.committed() <= 200, "an offset was committed for an event not applied"
        proxy.restore()
        shop.wait_until(lambda: shop.applied() >= 700, 60, "everything once PostgreSQL is back")
    shop.wait_until(lambda: shop.committed() >= 700, 60, "every offset committed")
    shop.assert_exactly_once()


def test_a_malformed_message_is_rejected_and_its_partition_goes_on(shop: Shop) -> None:
    shop.start_worker("w")
    producer = Producer(shop.broker.producer_config())
    key = b"main:k-3"  # the partition K-3's events at main go to
    for garbage in (b"not json at all", b'{"v": 99}', b"\xff\xfe", b""):
        producer.produce(shop.topic, garbage, key=key)
    assert producer.flush(10) == 0
    shop.publish([("main", "K-3", 2), ("main", "K-3", 3)])
    shop.wait_until(lambda: shop.applied() >= 2, 30, "the events behind the garbage")
    shop.wait_until(
        lambda: shop.scalar("SELECT count(*) FROM rejected_events") == 4, 30, "the rejections"
    )
    errors = shop.scalar("SELECT array_agg(DISTINCT error) FROM rejected_events")
    assert errors == ["MalformedEvent"]
    assert (
        shop.scalar(
            "SELECT quantity FROM inventory i JOIN products p ON p.id = i.product_id "
            "WHERE p.sku = 'K-3' AND i.store_id = (SELECT id FROM stores WHERE code = 'main')"
        )
        == 5
    )
    shop.wait_until(lambda: "not JSON" in shop.log("w"), 10, "the rejections in the log")
    dead = _read_topic(shop.broker, f"{shop.topic}.dlq", 4)
    assert len(dead) == 4 and all(d["error"] == "MalformedEvent" for d in dead)


def test_broker_unreachable_update_exits_75_quickly_and_records_nothing(shop: Shop) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = shop.inv(
        "update", "K-1", "--change", "1", env={"INV_KAFKA_BOOTSTRAP_SERVERS": nowhere}
    )
    took = time.monotonic() - started
    assert result.returncode == 75, result.stderr
    assert result.stderr.startswith(f"Error: cannot reach Kafka at {nowhere}")
    assert "Traceback" not in result.stderr
    assert took < 3 + 10, f"bounded by INV_KAFKA_TIMEOUT (3 s) plus start-up, took {took:.1f} s"
    # Nothing was recorded, and the real topic got nothing.
    assert shop.end_offsets() == 0
    shop.start_worker("w")
    shop.wait_until(lambda: "assigned partitions" in shop.log("w"), 60, "the worker to join")
    assert shop.applied() == 0
    backend = shop.backend()
    assert backend.status()["kafka"]["lag"] == 0
    backend.close()


def test_redis_down_means_slower_reads_never_failed_ones(shop: Shop, tmp_path: Path) -> None:
    with private_redis(tmp_path) as redis_server:
        env = {"INV_REDIS_URL": redis_server.url}
        shop.start_worker("w", env=env)
        assert shop.inv("update", "K-4", "--change", "3", "--wait", env=env).returncode == 0
        first = shop.inv("show", "K-4", "--format", "json", env=env)
        assert json.loads(first.stdout)["stock"] == {"main": 3}
        cached = shop.inv("status", "--format", "json", env=env)
        assert json.loads(cached.stdout)["cache"]["misses"] >= 1

        redis_server.stop()
        applied = shop.inv("update", "K-4", "--change", "2", "--wait", env=env)
        assert applied.returncode == 0 and applied.stdout == "K-4 at main: 3 -> 5 (+2)\n"
        read = shop.inv_process("show", "K-4", "--format", "json", env=env)
        assert read.returncode == 0, read.stderr
        assert json.loads(read.stdout)["stock"] == {"main": 5}
        assert read.stderr.count("Warning: Redis at") == 1, read.stderr
        status = shop.inv("status", "--format", "json", env=env)
        assert status.returncode == 75 and json.loads(status.stdout)["cache"]["ok"] is False

        redis_server.start()  # back, empty
        assert shop.inv("update", "K-4", "--change", "1", "--wait", env=env).returncode == 0
        again = shop.inv_process("show", "K-4", "--format", "json", env=env)
        assert again.stderr == "" and json.loads(again.stdout)["stock"] == {"main": 6}
        # The cache fills again: a read soon hits it (the worker may empty it once more as
        # it finds Redis back, so "soon", not "the second read").
        deadline = time.monotonic() + 30
        while True:
            again = shop.inv("show", "K-4", "--format", "json", env=env)
            assert json.loads(again.stdout)["stock"] == {"main": 6}
            stats = json.loads(shop.inv("status", "--format", "json", env=env).stdout)["cache"]
            assert stats["ok"] is True
            if stats["hits"] >= 1:
                break
            assert time.monotonic() < deadline, f"the cache does not fill again: {stats}"
    assert "Redis" in shop.log("w")  # the worker noticed, and went on
    assert shop.applied() == 3


def test_a_worker_started_before_the_topic_exists_waits_for_it(
    broker: Broker, tmp_path: Path
) -> None:
    shop = Shop(broker, tmp_path, redis_or_skip())
    try:
        shop.env["INV_KAFKA_TOPIC"] = late = f"late-{uuid.uuid4().hex[:8]}"
        shop.start_worker("early")
        shop.wait_until(lambda: "Kafka:" in shop.log("early"), 30, "the missing topic's warning")
        assert shop.inv("init").returncode == 0  # creates the topic now
        done = shop.inv("update", "K-5", "--change", "2", "--wait")
        assert done.returncode == 0, (done.stderr, shop.log("early"))
        assert done.stdout == "K-5 at main: 0 -> 2 (+2)\n"
        assert shop.log("early").count("Kafka:") <= 2, "warned once, not at every poll"
        assert late in shop.log("early")
    finally:
        shop.close()


def _scrape(port: int) -> dict[str, float]:
    """`/metrics` of a worker: each sample's name with its labels -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def test_the_worker_serves_its_counts_to_prometheus(shop: Shop) -> None:
    port = free_port()
    changes = stream(30)
    shop.publish(changes)
    # The same event twice (a producer retry): applied once, then skipped as a duplicate;
    # and one that can never apply (not enough stock): rejected.
    producer = Producer(shop.broker.producer_config())
    twice = from_change(
        stock_change("main", "K-9", delta=1, expect=None, reason="test"),
        event_id=None,
        actor="tester",
        source="cli",
    )
    short = from_change(
        stock_change("north", "K-0", delta=-1000, expect=None, reason="sale"),
        event_id=None,
        actor="tester",
        source="cli",
    )
    for event in (twice, twice, short):
        producer.produce(shop.topic, event.encode(), key=event.key)
    assert producer.flush(10) == 0
    shop.start_worker("m", "--metrics-port", str(port))
    shop.wait_until(lambda: shop.applied() >= len(changes) + 1, 30, "every event")

    def counted() -> bool:
        try:
            seen = _scrape(port)
        except OSError:
            return False
        return seen.get("inv_worker_events_applied_total") == len(changes) + 1

    shop.wait_until(counted, 10, "the applied counter to reach every event")
    seen = _scrape(port)
    assert seen["inv_worker_events_rejected_total"] == 1
    assert seen["inv_worker_events_duplicate_total"] == 1
    assert seen["inv_worker_batch_duration_seconds_count"] >= 1
    assert seen["inv_worker_batch_duration_seconds_sum"] > 0
    # The lag per partition (refreshed every second): all six held, nothing left behind.
    shop.wait_until(
        lambda: sum(k.startswith("inv_worker_lag{") for k in _scrape(port)) == 6,
        10,
        "the lag of each partition",
    )
    lags = {k: v for k, v in _scrape(port).items() if k.startswith("inv_worker_lag{")}
    assert f"inv_worker_lag{{partition=0,topic={shop.topic}}}" in lags
    assert set(lags.values()) == {0.0}, lags
    assert f"metrics on http://127.0.0.1:{port}/metrics" in shop.log("m")


def test_worker_metrics_need_the_api_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if not installed
    result = run_cli(["--backend", "kafka", "worker", "--metrics-port", "9100"])
    assert result.returncode == 78, result.stderr
    assert result.stderr == (
        "Error: --metrics-port needs the api extra (prometheus_client is missing); "
        "install it with: pip install 'inv[api]'\n"
    )


def test_worker_metrics_on_a_port_in_use_is_a_configuration_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # said before connecting to anything: no broker or database is named here
        result = run_cli(["--backend", "kafka", "worker", "--metrics-port", str(port)])
    assert result.returncode == 78, result.stderr
    assert result.stderr.startswith(f"Error: --metrics-port: cannot listen on 127.0.0.1:{port}: ")
