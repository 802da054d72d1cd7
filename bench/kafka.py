"""The kafka backend (v3): worker throughput, sync delay, and a cached read.

Needs PostgreSQL (--server, default postgresql://postgres@127.0.0.1:5432), a Kafka-protocol
broker (by default a Tansu broker of its own, started as tests/broker.py starts it, on a
free port; --bootstrap HOST:PORT uses a running one) and Redis (--redis, default
redis://127.0.0.1:6379/0; `--redis none` runs without the cache).  It creates its own
database (`inv_bench_<random>`), topic, consumer group and Redis key prefix
(`inv-bench-<random>`), and removes all of them at the end, also on an error, Ctrl-C or
SIGTERM.  The workers are real `inv --backend kafka worker` processes.

1. worker throughput: a database seeded with 200 stores x 500 products (100,000 stock
   rows), 200,000 +1/-1 adjustments spread over those rows (never below zero) published
   first (timed on their own), then the workers started and timed until every event is
   applied (polling `max(id)` of audit_log every 20 ms, confirmed by a `count(*)`):
   events/s from the first applied event to the last, and from the workers' start (join
   included), with what the workers' database sessions were doing (`pg_stat_activity`
   sampled every 25 ms, as postgres.py does).  Checked: as many applied events and audit
   rows as events sent, none rejected, and every stock row at its seeded quantity plus its
   deltas (else exit 1).  Two limits, through psycopg alone:
   - the raw UPDATE: the same 200,000 (row, delta) updates, `executemany` of
     `UPDATE inventory SET quantity = quantity + %s WHERE store_id = %s AND product_id = %s`,
     1,000 rows a call, one transaction, on the same database after a VACUUM;
   - the set-based floor of the worker's writes, on a copy of the seeded database made
     before the workers started (CREATE DATABASE ... TEMPLATE): the same 200,000 events
     (fresh event ids) in batches of --batch-size, each batch one transaction with
     exactly the writes the worker makes: one UPDATE of the net delta per stock row
     (new version from stock_version_seq, RETURNING quantity and version for the cache),
     one COPY of the audit rows (ids from audit_log_id_seq), one COPY into applied_events
     (the result JSON the worker writes), COMMIT.
2. sync delay: with the workers running (--workers of them, printed; and one warm-up
   event through a producer kept for the whole part), +1 events published at a fixed
   rate (100/s, then 5,000/s, 10 s each; built ahead, so the rate is the broker's and
   the workers' business, not the bench's), the publish time of every event (at most 200
   a second: every n-th one at higher rates) taken just before `produce`.  A poller
   thread asks PostgreSQL every 5 ms which of the outstanding timed events are in
   `applied_events` and, with Redis, whether the worker has written the new quantity
   through to the cache entry a reader reads.  An event is visible at the start of the
   first poll that finds both.  p50 and p99 of publish -> visible, with the broker's
   acknowledgement and the commit on their own.
3. a cached read in process: `KafkaBackend.get(sku)` (one EVALSHA, then the Product) of a
   seeded product (stocked at every store), median of 5,000 calls after the entry is
   filled, against a raw redis-py `GET` of a plain key (median of as many); with
   `Cache.read` alone, a raw `HGETALL` of the same entry, and `get` of a product stocked
   at one store.

Always exits 0 unless the work itself fails (events lost, applied twice or rejected, a
stock row wrong, a worker exiting non-zero, events never visible).  No PostgreSQL or no
broker: a message, exit 0.  No Redis: the cache parts are skipped.

    .venv/bin/python bench/kafka.py [--events 200000] [--stores 200] [--products 500]
        [--workers 1] [--batch-size 1000] [--batch-ms 50] [--partitions 6]
        [--rates 100,5000] [--delay-seconds 10] [--poll-ms 5] [--sample 200]
        [--progress-ms 20] [--stall 60] [--reads 5000]
        [--skip-throughput] [--skip-delay] [--skip-read]
        [--server URL] [--redis URL|none] [--bootstrap HOST:PORT] [--keep-env]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

import msgspec
import psycopg
from common import INV, PYTHON, UNUSUAL_ENV
from postgres import (
    ActivitySampler,
    BenchFailed,
    Databases,
    Figure,
    FloorFailed,
    print_summary,
    short_sql,
    verdict,
)

from backends.kafka import KafkaBackend
from backends.kafka.events import from_change
from backends.models import MOVEMENT_FIELDS, MovementRow, format_time
from backends.requests import row_json, stock_change
from backends.values import sku_key

TARGET_FLOOR_RATIO = 0.7  # x the set-based floor of the worker's writes, at least
TARGET_RAW_RATIO = 0.35  # x a raw batched UPDATE of the same rows, at least
TARGET_DELAY_P99 = {100: 0.5, 5000: 2.0}  # s, at most, by events/s
TARGET_READ_RATIO = 2.0  # x a raw redis-py GET, at most

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
ROOT = Path(__file__).resolve().parent.parent
UPDATE_BATCH = 1_000
#: Tansu holds a consumer's first join for about half the session timeout (tests/broker.py).
SESSION_TIMEOUT_MS = 2000
#: How long the visible events may wait after the last publish before they count as lost.
DRAIN_SECONDS = 30.0
#: The application_name of the bench's own database sessions.
BENCH_APP = "inv-bench"


# -- small helpers ---------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of `values` (not empty)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


def redis_client(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)


@dataclass
class Row:
    """A seeded stock row."""

    store_id: int
    product_id: int
    store: str
    sku: str
    quantity: int


@dataclass
class Setup:
    """Everything one run made, to run children against and to remove at the end."""

    args: argparse.Namespace
    databases: Databases
    folder: Path
    bootstrap: str = ""
    redis_url: str | None = None
    database: str = ""
    floor_database: str = ""  # a copy of the seeded database, for the set-based floor
    topic: str = ""
    group: str = ""
    prefix: str = ""
    broker: Any = None  # tests/broker.py's Broker, when this run started one
    topic_created: bool = False
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    backends: list[KafkaBackend] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.databases.url(self.database)

    def backend(self) -> KafkaBackend:
        backend = KafkaBackend(
            self.url,
            bootstrap_servers=self.bootstrap,
            topic=self.topic,
            partitions=self.args.partitions,
            redis_url=self.redis_url,
            cache_prefix=self.prefix,
            actor="bench",
            source="cli",
        )
        self.backends.append(backend)
        return backend

    def env(self) -> dict[str, str]:
        env = {}
        for key, value in os.environ.items():
            if key.startswith("INV_"):
                continue  # the bench says everything inv needs
            if key in UNUSUAL_ENV and not self.args.keep_env:
                if key not in self.removed:
                    self.removed.append(key)
                continue
            env[key] = value
        env.update(
            INV_DATABASE_URL=self.url,
            INV_KAFKA_BOOTSTRAP_SERVERS=self.bootstrap,
            INV_KAFKA_TOPIC=self.topic,
            INV_KAFKA_PARTITIONS=str(self.args.partitions),
            INV_KAFKA_SESSION_TIMEOUT_MS=str(SESSION_TIMEOUT_MS),
            INV_ACTOR="bench-worker",
        )
        if self.redis_url:
            env.update(INV_REDIS_URL=self.redis_url, INV_CACHE_PREFIX=self.prefix)
        return env

    def producer(self) -> Any:
        """An idempotent producer (acks=all) with librdkafka's default linger.ms of 5: 0
        made Tansu fall 30 s behind (tests/broker.py)."""
        from confluent_kafka import Producer

        return Producer(
            {"bootstrap.servers": self.bootstrap, "enable.idempotence": True, "acks": "all"}
        )

    # -- the workers ---------------------------------------------------------------------

    def start_workers(self) -> float:
        """Start `--workers` `inv worker` processes; returns when they were started."""
        command = [str(INV), "--backend", "kafka", "worker", "--group", self.group]
        command += ["--batch-size", str(self.args.batch_size)]
        command += ["--batch-ms", str(self.args.batch_ms)]
        env = self.env()
        started = time.perf_counter()
        for _ in range(self.args.workers):
            log = self.folder / f"worker-{len(self.logs) + 1}.log"
            self.logs.append(log)
            with log.open("wb") as out:  # a file, never a pipe nobody reads
                self.workers.append(
                    subprocess.Popen(
                        command,
                        cwd=self.folder,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
        return started

    def check_workers(self) -> None:
        for i, worker in enumerate(self.workers):
            if worker.poll() is not None:
                raise BenchFailed(f"worker {i + 1} exited {worker.returncode}:\n{self.log_tail(i)}")

    def log_tail(self, i: int, size: int = 2000) -> str:
        try:
            return self.logs[i].read_text(errors="replace")[-size:]
        except OSError as exc:
            return f"(cannot read {self.logs[i]}: {exc})"

    def stop_workers(self, check: bool = True) -> list[dict[str, int]]:
        """SIGTERM (the worker finishes its batch), then each one's last counters."""
        for worker in self.workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        failed = []
        for i, worker in enumerate(self.workers):
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
                failed.append(f"worker {i + 1} ignored SIGTERM for 30 s (killed)")
            else:
                if worker.returncode != 0:
                    failed.append(f"worker {i + 1} exited {worker.returncode}")
        counters = [self.counters(i) for i in range(len(self.workers))]
        if failed and check:
            raise BenchFailed("; ".join(failed) + ":\n" + self.log_tail(0))
        self.workers.clear()
        return counters

    def counters(self, i: int) -> dict[str, int]:
        """The worker's last `counters: applied=... rejected=...` log line."""
        found = re.findall(r"counters: (.*)", self.log_tail(i, 1 << 20))
        if not found:
            return {}
        return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", found[-1])}

    # -- the end -------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the workers, close the backends, drop the database, remove the Redis keys
        and the topics (or the broker this run started)."""
        with contextlib.suppress(BenchFailed):
            self.stop_workers(check=False)
        for backend in self.backends:
            with contextlib.suppress(Exception):
                backend.close()
        self.backends.clear()
        self.databases.drop_all()
        if self.redis_url and self.prefix:
            with contextlib.suppress(Exception):
                client = redis_client(self.redis_url)
                keys = list(client.scan_iter(match=f"{self.prefix}:*", count=1000))
                for first in range(0, len(keys), 1000):
                    client.delete(*keys[first : first + 1000])
                client.close()
                print(f"removed {len(keys):,} Redis keys {self.prefix}:*")
        if self.broker is not None:
            self.broker.stop()
            self.broker.log_path.unlink(missing_ok=True)
            self.broker = None
            print("stopped the broker")
        elif self.topic_created:
            from confluent_kafka.admin import AdminClient

            admin = AdminClient({"bootstrap.servers": self.bootstrap})
            topics = [self.topic, f"{self.topic}.dlq"]
            with contextlib.suppress(Exception):
                for future in admin.delete_topics(topics, operation_timeout=10).values():
                    future.result(timeout=10)
                print(f"deleted topics {', '.join(topics)}")
            with contextlib.suppress(Exception):
                for future in admin.delete_consumer_groups([self.group]).values():
                    future.result(timeout=10)
            self.topic_created = False


def start_local_broker() -> Any:
    """A Tansu broker (memory storage) on a free port, as the tests start it."""
    sys.path.insert(0, str(ROOT / "tests"))
    from broker import start_broker

    return start_broker()


def environment_line(setup: Setup) -> str:
    with psycopg.connect(f"{setup.databases.server}/postgres", connect_timeout=5) as connection:
        settings: dict[str, str] = dict(
            connection.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('server_version', 'synchronous_commit')"
            ).fetchall()
        )
        shared = connection.execute("SHOW shared_buffers").fetchone()
    redis_version = "none (--redis none)"
    if setup.redis_url:
        info = redis_client(setup.redis_url).info("server")
        redis_version = f"Redis {info.get('redis_version')}"
    if setup.broker is not None:
        done = subprocess.run(
            [setup.broker.binary, "--version"], capture_output=True, text=True, check=False
        )
        broker = f"{done.stdout.strip() or 'tansu'} (memory storage, started by the bench)"
    else:
        broker = f"the broker at {setup.bootstrap}"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"environment: {os.cpu_count()} CPUs (load average {load}), "
        f"Python {sys.version.split()[0]}, PostgreSQL {settings.get('server_version')} "
        f"(shared_buffers {shared[0] if shared else '?'}, synchronous_commit "
        f"{settings.get('synchronous_commit')}), {redis_version}, {broker}"
    )


# -- the data ----------------------------------------------------------------------------


def seed(setup: Setup) -> list[Row]:
    """A fresh database: the schema, the topics and `--stores` x `--products` stock rows."""
    args = setup.args
    setup.database = setup.databases.create()
    backend = setup.backend()
    backend.init()
    setup.topic_created = True
    start = time.perf_counter()
    backend.seed(stores=args.stores, products=args.products)
    seconds = time.perf_counter() - start
    backend.close()  # its pooled session would show in the workers' samples
    with psycopg.connect(setup.url, autocommit=True) as connection:
        connection.execute("VACUUM (ANALYZE) stores, products, inventory")
        rows = [
            Row(*r)
            for r in connection.execute(
                "SELECT i.store_id, i.product_id, s.code, p.sku, i.quantity FROM inventory i "
                "JOIN stores s ON s.id = i.store_id JOIN products p ON p.id = i.product_id "
                "ORDER BY i.store_id, i.product_id"
            )
        ]
    copied = ""
    if not args.skip_throughput:
        # The floor's own copy of this state, made before any worker touches it.
        start = time.perf_counter()
        setup.floor_database = setup.databases.copy(setup.database)
        copied = f"; copied for the floor in {time.perf_counter() - start:.1f} s"
    print(
        f"seeded {args.stores:,} stores x {args.products:,} products = {len(rows):,} stock rows "
        f"in {seconds:.1f} s{copied}; topic {setup.topic} ({args.partitions} partitions), "
        f"group {setup.group}"
    )
    return rows


def stock(url: str) -> dict[tuple[int, int], int]:
    with psycopg.connect(url) as connection:
        return {
            (s, p): q
            for s, p, q in connection.execute(
                "SELECT store_id, product_id, quantity FROM inventory"
            )
        }


def applied_count(connection: psycopg.Connection[Any]) -> int:
    row = connection.execute("SELECT count(*) FROM applied_events").fetchone()
    return int(row[0]) if row else 0


def check_applied(setup: Setup, expected: int, quantities: dict[tuple[int, int], int]) -> str:
    """Every event applied once, none rejected, and every stock row exact; raises
    BenchFailed otherwise.  Returns what was checked."""
    with psycopg.connect(setup.url) as connection:
        counts = connection.execute(
            "SELECT (SELECT count(*) FROM applied_events), "
            "(SELECT count(*) FROM audit_log WHERE action = 'stock.adjust'), "
            "(SELECT count(DISTINCT event_id) FROM audit_log WHERE action = 'stock.adjust'), "
            "(SELECT count(*) FROM rejected_events), (SELECT sum(quantity) FROM inventory)"
        ).fetchone()
    assert counts is not None
    applied, audit, distinct, rejected, total = counts
    now = stock(setup.url)
    wrong = [(k, q, now.get(k)) for k, q in quantities.items() if now.get(k) != q]
    expected_total = sum(quantities.values())
    problems = []
    if applied != expected:
        problems.append(f"{applied:,} applied events, expected {expected:,}")
    if audit != expected or distinct != expected:
        problems.append(
            f"{audit:,} stock.adjust audit rows ({distinct:,} event ids), expected {expected:,}"
        )
    if rejected:
        problems.append(f"{rejected:,} rejected events")
    if total != expected_total:
        problems.append(f"stock total {total:,}, expected {expected_total:,}")
    if wrong:
        shown = ", ".join(f"{k}: {q_now} not {q}" for k, q, q_now in wrong[:3])
        problems.append(f"{len(wrong):,} stock rows wrong ((store_id, product_id) {shown} ...)")
    if problems:
        tails = "\n".join(setup.log_tail(i, 1500) for i in range(len(setup.logs)))
        raise BenchFailed("; ".join(problems) + f"\nworker log:\n{tails}")
    return (
        f"{applied:,} applied events = {audit:,} audit rows = events sent, 0 rejected, "
        f"all {len(quantities):,} stock rows exact (total {total:,})"
    )


# -- 1. throughput ------------------------------------------------------------------------


def throughput_events(rows: list[Row], n: int) -> list[tuple[Row, int]]:
    """`n` (row, delta): rows in a fixed random order, round and round; on even rows the
    deltas go +1, -1, +1, ... and on odd rows +1, +1, ...: never below zero, whatever
    the seeded quantity, since one row's events keep their order."""
    order = list(range(len(rows)))
    random.Random(42).shuffle(order)
    events = []
    for i in range(n):
        r = order[i % len(rows)]
        delta = -1 if (i // len(rows)) % 2 == 1 and r % 2 == 0 else 1
        events.append((rows[r], delta))
    return events


def publish_all(setup: Setup, messages: list[tuple[bytes, bytes]]) -> float:
    """Produce every (key, value), flush once; seconds.  Every one must be acknowledged."""
    producer = setup.producer()
    failures: list[str] = []

    def delivered(err: Any, msg: Any) -> None:
        if err is not None:
            failures.append(err.str())

    start = time.perf_counter()
    for i, (key, value) in enumerate(messages):
        while True:
            try:
                producer.produce(setup.topic, value, key=key, on_delivery=delivered)
                break
            except BufferError:  # the local queue is full: let it drain
                producer.poll(0.05)
        if i % 1000 == 0:
            producer.poll(0)
    left = producer.flush(120)
    seconds = time.perf_counter() - start
    if left or failures:
        raise BenchFailed(
            f"publishing: {left} messages not acknowledged, {len(failures)} failed ({failures[:1]})"
        )
    return seconds


def audit_top(connection: psycopg.Connection[Any]) -> int:
    row = connection.execute("SELECT coalesce(max(id), 0) FROM audit_log").fetchone()
    return int(row[0]) if row else 0


def wait_all_applied(
    setup: Setup, target: int, interval: float, stall: float
) -> tuple[float | None, float, int]:
    """Poll until `target` more events are applied: (first poll that saw one applied,
    first poll that saw them all, polls).  BenchFailed when a worker exits or nothing
    moves for `stall` s.

    The poll is `max(id)` of audit_log (an index lookup; each event here writes one audit
    row, and a batch's ids are taken in one go), not `count(*)` of applied_events, which
    took 35-40 ms at 200,000 rows on this machine: polled every 20 ms it would load the
    database as much as the worker does.  Once the top id says all are there, an exact
    `count(*)` confirms it (a batch of another worker, or one retried, may still commit
    below the top)."""
    first: float | None = None
    polls = 0
    last_top, last_change, last_count = -1, time.perf_counter(), 0.0
    with psycopg.connect(setup.url, autocommit=True, application_name=BENCH_APP) as connection:
        base_top = audit_top(connection)
        base_count = applied_count(connection)
        while True:
            now = time.perf_counter()
            top = audit_top(connection) - base_top
            polls += 1
            if top and first is None:
                first = now
            if top >= target and now - last_count >= 0.2:
                last_count = now
                if applied_count(connection) - base_count >= target:
                    return first, now, polls
            if top != last_top:
                last_top, last_change = top, now
            elif now - last_change > stall:
                setup.check_workers()
                tails = "\n".join(setup.log_tail(i, 1500) for i in range(len(setup.logs)))
                raise BenchFailed(
                    f"{top:,} of {target:,} events applied and none more in {stall:g} s "
                    f"(--stall)\nworker log:\n{tails}"
                )
            setup.check_workers()
            time.sleep(max(0.0, interval - (time.perf_counter() - now)))


def wait_applied_total(setup: Setup, total: int, stall: float) -> None:
    """Until `total` events are applied in all, counted in applied_events.  The delay
    bench waits only for the events it times (every 25th at 5,000/s): the untimed ones
    after the last timed one, on other partitions, may still be in a batch.  BenchFailed
    when a worker exits; returns when the count stops moving for `stall` s, and the
    check that follows says what is missing."""
    with psycopg.connect(setup.url, autocommit=True, application_name=BENCH_APP) as connection:
        last, last_change = -1, time.perf_counter()
        while True:
            count = applied_count(connection)
            now = time.perf_counter()
            if count >= total:
                return
            if count != last:
                last, last_change = count, now
            elif now - last_change > stall:
                return  # check_applied reports the shortfall, with the worker logs
            setup.check_workers()
            time.sleep(0.02)


class WorkerSampler(ActivitySampler):
    """What the workers' database sessions are doing (postgres.py's sampler, without the
    bench's own sessions)."""

    NO_SESSION = "no session (worker starting, or not connected)"
    IDLE_TX = "idle in transaction (worker in Python inside a batch: rules, rows to write)"
    IDLE = "idle, no transaction (between batches: Kafka, Redis write-through, offsets)"

    def _run(self) -> None:
        query = (
            "SELECT state, wait_event_type, wait_event, query FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid() AND backend_type = 'client backend' "
            "AND application_name <> %s"
        )
        with self.databases.admin() as connection:
            while not self._stop.is_set():
                rows = connection.execute(query, (self.name, BENCH_APP)).fetchall()
                self.samples += 1
                if not rows:
                    self.states[self.NO_SESSION] += 1
                for state, wait_type, wait, statement in rows:
                    if state == "active":
                        self.states[short_sql(statement)] += 1
                        self.waits[f"{wait_type}:{wait}" if wait_type else "CPU (no wait)"] += 1
                    elif state and state.startswith("idle in transaction"):
                        self.states[self.IDLE_TX] += 1
                    else:
                        self.states[self.IDLE] += 1
                self._stop.wait(self.interval)


def raw_update(url: str, events: list[tuple[Row, int]]) -> float:
    """rows/s of the same (row, delta) updates by primary key through psycopg, in one
    transaction, after a VACUUM of the rows the workers updated."""
    statement = (
        "UPDATE inventory SET quantity = quantity + %s WHERE store_id = %s AND product_id = %s"
    )
    params = [(delta, row.store_id, row.product_id) for row, delta in events]
    with psycopg.connect(url, autocommit=True) as connection:
        # As the workers found it: seeded, then vacuumed (not the workers' dead rows).
        connection.execute("VACUUM (ANALYZE) inventory")
    with psycopg.connect(url) as connection:
        before = connection.execute("SELECT sum(quantity) FROM inventory").fetchone()
        connection.commit()
        start = time.perf_counter()
        with connection.cursor() as cursor:
            for first in range(0, len(params), UPDATE_BATCH):
                cursor.executemany(statement, params[first : first + UPDATE_BATCH])
        connection.commit()
        seconds = time.perf_counter() - start
        after = connection.execute("SELECT sum(quantity) FROM inventory").fetchone()
    change = sum(d for _, d in events)
    if before is None or after is None or after[0] - before[0] != change:
        raise BenchFailed(f"raw UPDATE changed the stock total from {before} to {after}")
    return len(events) / seconds


#: The audit log's columns as the worker's COPY fills them.
AUDIT_COLUMNS = (*MOVEMENT_FIELDS, "sku_key")
FLOOR_UPDATE = (
    "UPDATE inventory i SET quantity = i.quantity + v.d, "
    "version = nextval('stock_version_seq'), updated_at = now() "
    "FROM unnest(%s::integer[], %s::bigint[], %s::integer[]) AS v(s, p, d) "
    "WHERE i.store_id = v.s AND i.product_id = v.p "
    "RETURNING i.store_id, i.product_id, i.quantity, i.version"
)
FLOOR_IDS = "SELECT now(), ARRAY(SELECT nextval('audit_log_id_seq') FROM generate_series(1, %s))"
FLOOR_HASHJOIN = "off"


@dataclass
class Floor:
    """The set-based floor's run: seconds from the first batch to the last commit, and
    where they went."""

    events: int
    seconds: float = 0.0
    batches: int = 0
    split: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.events / self.seconds


def array(values: Iterable[int]) -> str:
    """An integer array literal: psycopg dumps a list item by item in Python, several
    times slower for 1,000 numbers."""
    return "{" + ",".join(map(str, values)) + "}"


def set_based_floor(url: str, events: list[tuple[Row, int]], batch_size: int) -> Floor:
    """The least a worker must write for `events`, through psycopg alone, on `url` (a copy
    of the seeded database): batches of `batch_size` in publish order, each one
    transaction of one UPDATE (the net delta per stock row, a new version, RETURNING what
    the cache needs), one COPY of the audit rows (one per event, ids from
    audit_log_id_seq, with sku_key), one COPY into applied_events (the worker's result
    JSON) and COMMIT.  Fresh event ids; nothing read or locked first, no rules, no Kafka.

    Ids and fingerprints are made before the clock starts; the Python that the writes
    need (net deltas, quantities after each event, the rows, the result JSON) is timed.
    Checked: every stock row at its seeded quantity plus its deltas, one audit row and
    one applied event per event.
    """
    fingerprints: dict[tuple[str, str, int], str] = {}
    keys: dict[str, str] = {}
    prepared = []
    for row, delta in events:
        fp = fingerprints.get((row.store, row.sku, delta))
        if fp is None:
            change = stock_change(row.store, row.sku, delta=delta, expect=None, reason=None)
            fp = fingerprints[(row.store, row.sku, delta)] = change.fingerprint
        if row.sku not in keys:
            keys[row.sku] = sku_key(row.sku)
        prepared.append((str(uuid.uuid4()), fp, row, delta))
    expected = {(r.store_id, r.product_id): r.quantity for r, _ in events}
    for row, delta in events:
        expected[(row.store_id, row.product_id)] += delta

    encode = msgspec.json.Encoder().encode  # the fastest JSON this project installs
    floor = Floor(len(events))
    split = dict.fromkeys(("UPDATE ... FROM unnest", "audit ids", "COPY audit_log"), 0.0)
    split.update(dict.fromkeys(("COPY applied_events", "COMMIT"), 0.0))
    audit_copy = f"COPY audit_log ({', '.join(AUDIT_COLUMNS)}) FROM STDIN"
    applied_copy = "COPY applied_events (event_id, fingerprint, result, at) FROM STDIN"
    with psycopg.connect(url, application_name=BENCH_APP) as connection:
        # On 100,000 stock rows the planner joins the 1,000 pairs to the table by hashing
        # all of it (25-30 ms a batch here); 1,000 probes of the primary key take a half
        # to a fifth of that.  The floor is the best plan, so it asks for that one.
        connection.execute(f"SET enable_hashjoin = {FLOOR_HASHJOIN}")
        # The month exists (inv init makes them ahead): the worker asks for it in every
        # batch, the floor once, outside the clock.
        connection.execute("SELECT audit_log_partition(now())")
        before = connection.execute(
            "SELECT (SELECT count(*) FROM applied_events), (SELECT count(*) FROM audit_log)"
        ).fetchone()
        connection.commit()
        assert before is not None
        start = time.perf_counter()
        for first in range(0, len(prepared), batch_size):
            chunk = prepared[first : first + batch_size]
            net: dict[tuple[int, int], int] = {}
            for _, _, row, delta in chunk:
                pair = (row.store_id, row.product_id)
                net[pair] = net.get(pair, 0) + delta
            t0 = time.perf_counter()
            after = {
                (s, p): q
                for s, p, q, _version in connection.execute(
                    FLOOR_UPDATE,
                    (array(k[0] for k in net), array(k[1] for k in net), array(net.values())),
                )
            }
            t1 = time.perf_counter()
            found = connection.execute(FLOOR_IDS, (len(chunk),)).fetchone()
            t2 = time.perf_counter()
            assert found is not None
            at, ids = found
            at_text = format_time(at)
            running = {pair: after[pair] - d for pair, d in net.items()}
            audit = []
            applied = []
            for i, (event_id, fp, row, delta) in zip(sorted(ids), chunk, strict=True):
                pair = (row.store_id, row.product_id)
                quantity = running[pair] = running[pair] + delta
                entry: MovementRow = (
                    i, at, "bench", "cli", event_id, row.store, row.sku, "stock.adjust",
                    delta, quantity, None,
                )  # fmt: skip
                audit.append((*entry, keys[row.sku]))
                result = encode({"movements": [row_json(entry, at_text)]}).decode()
                applied.append((event_id, fp, result, at))
            t3 = time.perf_counter()
            with connection.cursor() as cursor:
                with cursor.copy(audit_copy) as copy:
                    for record in audit:
                        copy.write_row(record)
                t4 = time.perf_counter()
                with cursor.copy(applied_copy) as copy:
                    for record in applied:
                        copy.write_row(record)
            t5 = time.perf_counter()
            connection.commit()
            t6 = time.perf_counter()
            split["UPDATE ... FROM unnest"] += t1 - t0
            split["audit ids"] += t2 - t1
            split["COPY audit_log"] += t4 - t3
            split["COPY applied_events"] += t5 - t4
            split["COMMIT"] += t6 - t5
            floor.batches += 1
        floor.seconds = time.perf_counter() - start
        counts = connection.execute(
            "SELECT (SELECT count(*) FROM applied_events), (SELECT count(*) FROM audit_log)"
        ).fetchone()
        now = {
            (s, p): q
            for s, p, q in connection.execute(
                "SELECT store_id, product_id, quantity FROM inventory"
            )
        }
    split["Python (net deltas, rows, result JSON)"] = floor.seconds - sum(split.values())
    floor.split = split
    n = len(events)
    assert counts is not None
    wrong = sum(now.get(pair) != q for pair, q in expected.items())
    if counts[0] - before[0] != n or counts[1] - before[1] != n or wrong:
        raise FloorFailed(
            f"the set-based floor wrote {counts[0] - before[0]:,} applied events and "
            f"{counts[1] - before[1]:,} audit rows for {n:,} events, {wrong:,} stock rows wrong"
        )
    return floor


def bench_throughput(
    setup: Setup, rows: list[Row], quantities: dict[tuple[int, int], int]
) -> list[Figure]:
    args = setup.args
    start = time.perf_counter()
    events = throughput_events(rows, args.events)
    messages = []
    for row, delta in events:
        change = stock_change(row.store, row.sku, delta=delta, expect=None, reason=None)
        event = from_change(change, event_id=None, actor="bench", source="cli")
        messages.append((event.key, event.encode()))
    build = time.perf_counter() - start
    size = sum(len(v) for _, v in messages)
    publish = publish_all(setup, messages)
    del messages
    for row, delta in events:
        quantities[(row.store_id, row.product_id)] += delta

    with WorkerSampler(setup.databases, setup.database) as sampler:
        began = setup.start_workers()
        first, done, polls = wait_all_applied(
            setup, args.events, args.progress_ms / 1000, args.stall
        )
    assert first is not None
    checked = check_applied(setup, args.events, quantities)

    n = args.events
    rate = n / (done - first) if done > first else float("inf")
    wall = n / (done - began)
    raw = raw_update(setup.url, events)
    for row, delta in events:
        quantities[(row.store_id, row.product_id)] += delta
    floor: Floor | None = None
    floor_problem = ""
    try:
        floor = set_based_floor(setup.databases.url(setup.floor_database), events, args.batch_size)
    except (psycopg.Error, FloorFailed) as exc:
        floor_problem = f"{type(exc).__name__}: {str(exc).strip()[:500]}"
    ratio = rate / raw
    ok_ratio = ratio >= TARGET_RAW_RATIO
    resolution = args.progress_ms
    print(
        f"1. worker throughput: {n:,} events over {len(rows):,} stock rows, "
        f"{args.workers} worker(s), batches of up to {args.batch_size:,} events or "
        f"{args.batch_ms} ms"
    )
    print(
        f"  events built (from_change + encode): {build:6.2f} s  ({size / 1e6:.1f} MB of JSON, "
        f"{size / n:.0f} bytes an event)"
    )
    print(f"  published (produce + one flush)     : {publish:6.2f} s  {n / publish:9,.0f} events/s")
    print(
        f"  worker start-up and group join      : {first - began:6.2f} s  "
        "(until the first applied event was seen)"
    )
    print(f"  first applied -> all applied        : {done - first:6.2f} s  {rate:9,.0f} events/s")
    print(f"  worker start -> all applied (wall)  : {done - began:6.2f} s  {wall:9,.0f} events/s")
    print(
        f"    (max(id) of audit_log polled every {resolution} ms, {polls:,} polls: the times "
        "are to that resolution)"
    )
    print(f"  check: {checked}")
    print(
        f"  raw: batched UPDATE, same rows      : {n / raw:6.2f} s  {raw:9,.0f} rows/s  "
        f"(executemany by primary key, {UPDATE_BATCH:,} rows a call, one transaction)"
    )
    figures = [
        Figure(
            "worker",
            f"worker apply, {n:,} events",
            f"{rate:,.0f} ev/s",
            f"wall with join {wall:,.0f} ev/s",
            "",
            None,
        )
    ]
    if floor is None:
        print(f"  set-based floor of the worker's writes: FAILED, no figure ({floor_problem})")
    else:
        ok_floor = rate / floor.rate >= TARGET_FLOOR_RATIO
        print(
            f"  set-based floor of the writes       : {floor.seconds:6.2f} s  "
            f"{floor.rate:9,.0f} events/s  ({floor.batches:,} transactions of up to "
            f"{args.batch_size:,} events, on a copy of the seeded database)"
        )
        for label, seconds in floor.split.items():
            print(f"    {seconds:6.2f} s  {label}")
        print(
            f"    (enable_hashjoin {FLOOR_HASHJOIN} in its session: the UPDATE probes the "
            "primary key instead of hashing the whole table)"
        )
        print(
            f"  raw UPDATE against the floor        : the floor runs at {floor.rate / raw:.3f}x "
            f"the raw UPDATE's rate (the audit rows, applied_events and a commit a batch)"
        )
        print(
            f"  worker / set-based floor            : {rate / floor.rate:6.3f}x  "
            f"(target: at least {TARGET_FLOOR_RATIO}x) -> {verdict(ok_floor)}"
        )
        figures.append(
            Figure(
                "worker",
                "worker / set-based floor",
                f"{rate / floor.rate:.3f}x",
                f"floor {floor.rate:,.0f} ev/s",
                f">= {TARGET_FLOOR_RATIO}x floor",
                ok_floor,
            )
        )
    print(
        f"  worker / raw UPDATE                 : {ratio:6.3f}x  "
        f"(target: at least {TARGET_RAW_RATIO}x) -> {verdict(ok_ratio)}"
    )
    figures.append(
        Figure(
            "worker",
            "worker / raw batched UPDATE",
            f"{ratio:.3f}x",
            f"UPDATE {raw:,.0f} rows/s",
            f">= {TARGET_RAW_RATIO}x raw",
            ok_ratio,
        )
    )
    if floor is not None:
        figures.append(
            Figure(
                "worker",
                "set-based floor / raw UPDATE",
                f"{floor.rate / raw:.3f}x",
                f"floor {floor.rate:,.0f} ev/s, UPDATE {raw:,.0f} rows/s",
                "",
                None,
            )
        )
    for line in sampler.report(done - began):
        print(line.replace("child's", "workers'"))
    return figures


def warm_up(setup: Setup, rows: list[Row], quantities: dict[tuple[int, int], int]) -> int:
    """Start the workers and wait until they applied one event (they have joined)."""
    row = rows[0]
    change = stock_change(row.store, row.sku, delta=1, expect=None, reason="warm-up")
    event = from_change(change, event_id=None, actor="bench", source="cli")
    publish_all(setup, [(event.key, event.encode())])
    quantities[(row.store_id, row.product_id)] += 1
    began = setup.start_workers()
    _, done, _ = wait_all_applied(setup, 1, 0.01, setup.args.stall)
    print(f"workers started and joined: one warm-up event applied after {done - began:.2f} s")
    return 1


# -- 2. sync delay -------------------------------------------------------------------------


@dataclass
class Timeline:
    """Per event: what it touches and when it was published, acknowledged and seen; and
    how the polls went."""

    n: int
    ids: list[str] = field(default_factory=list)
    keys: list[tuple[str, str, int]] = field(default_factory=list)  # sku, store, quantity after
    published: list[float] = field(default_factory=list)
    acked: list[float | None] = field(default_factory=list)
    committed: list[float | None] = field(default_factory=list)
    cached: list[float | None] = field(default_factory=list)
    polls: int = 0
    hits: int = 0  # seen in a cached entry (the others: a miss, read from the database)
    busy: float = 0.0
    longest: float = 0.0

    def __post_init__(self) -> None:
        self.acked = [None] * self.n
        self.committed = [None] * self.n
        self.cached = [None] * self.n

    def since_published(self, times: list[float | None]) -> list[float]:
        return [t - p for t, p in zip(times, self.published, strict=True) if t is not None]


class Poller(threading.Thread):
    """Every `interval` s: which published events are in applied_events (one query for
    all outstanding ones), and, with Redis, which of those a reader's `get` would see:
    where the entry `<prefix>:<gen>:item:<sku>` is a hit (it has `p`), its field
    `s:<store>` must hold at least the quantity the event makes (the events only add, so
    a later one cannot hide it); where it is a miss, the reader reads the database, which
    has the event.  Each is stamped with the start of the poll that found it."""

    def __init__(self, url: str, redis_url: str | None, prefix: str, interval: float) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.redis_url = redis_url
        self.prefix = prefix
        self.interval = interval
        self.timeline: Timeline | None = None
        self.error: BaseException | None = None
        self._halt = threading.Event()
        self._lock = threading.Lock()

    def watch(self, timeline: Timeline | None) -> None:
        with self._lock:
            self.timeline = timeline

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the main thread
            self.error = exc

    def _run(self) -> None:
        client = redis_client(self.redis_url) if self.redis_url else None
        generation = b"0"
        if client is not None:
            generation = client.get(f"{self.prefix}:gen") or b"0"
        prefix = f"{self.prefix}:{generation.decode()}:item:"
        watched: Timeline | None = None
        upto = 0
        waiting: list[int] = []
        writing: list[int] = []
        with psycopg.connect(self.url, autocommit=True, application_name=BENCH_APP) as connection:
            while not self._halt.is_set():
                start = time.perf_counter()
                with self._lock:
                    t = self.timeline
                    if t is not watched:
                        watched, upto, waiting, writing = t, 0, [], []
                    if t is not None:
                        published = len(t.published)
                        waiting.extend(range(upto, published))
                        upto = published
                        if waiting:
                            seen = {
                                r[0]
                                for r in connection.execute(
                                    "SELECT event_id FROM applied_events WHERE event_id = ANY(%s)",
                                    ([t.ids[i] for i in waiting],),
                                )
                            }
                            still = []
                            for i in waiting:
                                if t.ids[i] in seen:
                                    t.committed[i] = start
                                    if client is None:
                                        t.cached[i] = start
                                    else:
                                        writing.append(i)
                                else:
                                    still.append(i)
                            waiting = still
                        if writing and client is not None:
                            read = time.perf_counter()
                            pipe = client.pipeline(transaction=False)
                            for i in writing:
                                sku, store, _ = t.keys[i]
                                pipe.hmget(prefix + sku_key(sku), "p", f"s:{store}")
                            still = []
                            for i, (hit, value) in zip(writing, pipe.execute(), strict=True):
                                if hit is None or (
                                    value is not None and int(value.split(b":")[1]) >= t.keys[i][2]
                                ):
                                    t.cached[i] = read
                                    t.hits += hit is not None
                                else:
                                    still.append(i)
                            writing = still
                        took = time.perf_counter() - start
                        t.polls += 1
                        t.busy += took
                        t.longest = max(t.longest, took)
                self._halt.wait(max(0.0, self.interval - (time.perf_counter() - start)))
        if client is not None:
            client.close()


@dataclass
class Publisher:
    """One producer for the whole part, connected (and given its producer id) by a first
    event before anything is timed: a till keeps its connection."""

    setup: Setup
    producer: Any = None
    failures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.producer = self.setup.producer()

    def build(
        self,
        rows: list[Row],
        quantities: dict[tuple[int, int], int],
        n: int,
        offset: int,
        stride: int = 1,
    ) -> tuple[Timeline, list[tuple[bytes, bytes, int]]]:
        """`n` +1 events over the rows from `offset` on, built ahead (the bench thread
        could not build 5,000 a second and publish them too on two cores): (key, value,
        index in the timeline or -1).  Every `stride`-th event is timed: the timeline
        knows its id and the quantity it makes."""
        timeline = Timeline((n + stride - 1) // stride)
        messages = []
        for i in range(n):
            row = rows[(offset + i * 7919) % len(rows)]
            change = stock_change(row.store, row.sku, delta=1, expect=None, reason="bench")
            event = from_change(change, event_id=None, actor="bench", source="cli")
            key = (row.store_id, row.product_id)
            quantities[key] += 1
            tracked = -1
            if i % stride == 0:
                tracked = len(timeline.ids)
                timeline.ids.append(event.event_id)
                timeline.keys.append((row.sku, row.store, quantities[key]))
            messages.append((event.key, event.encode(), tracked))
        return timeline, messages

    def at_rate(
        self, timeline: Timeline, messages: list[tuple[bytes, bytes, int]], rate: int
    ) -> float:
        """Send the messages at `rate` a second, the timed ones stamped just before
        `produce`; returns the rate achieved."""

        def delivered(i: int, err: Any, msg: Any) -> None:
            if err is not None:
                self.failures.append(err.str())
            elif i >= 0:
                timeline.acked[i] = time.perf_counter()

        producer, topic, n = self.producer, self.setup.topic, len(messages)
        start = time.perf_counter()
        i = 0
        while i < n:
            due = min(n, int((time.perf_counter() - start) * rate) + 1)
            while i < due:
                key, value, tracked = messages[i]
                now = time.perf_counter()
                producer.produce(topic, value, key=key, on_delivery=partial(delivered, tracked))
                if tracked >= 0:
                    timeline.published.append(now)  # last: the poller reads what is published
                i += 1
            # Wait for the next message, but at least a few ms: at 5,000/s a wait per
            # message spins a core the workers need (they share two); the events due
            # meanwhile go together (as the producer's 5 ms linger sends them anyway),
            # each stamped when it is produced.
            pause = start + i / rate - time.perf_counter()
            producer.poll(max(pause, 0.004))
        last = time.perf_counter()
        self.flush()
        return n / (last - start) if n > 1 else float(rate)

    def flush(self) -> None:
        left = self.producer.flush(60)
        if left or self.failures:
            raise BenchFailed(
                f"{left} events not acknowledged, {len(self.failures)} failed {self.failures[:1]}"
            )


def wait_visible(setup: Setup, poller: Poller, timeline: Timeline) -> None:
    """Until the poller has seen every event of `timeline`; BenchFailed after
    DRAIN_SECONDS."""
    deadline = time.perf_counter() + DRAIN_SECONDS
    while time.perf_counter() < deadline:
        if poller.error is not None:
            raise BenchFailed(f"the poller failed: {poller.error!r}")
        setup.check_workers()
        if all(c is not None for c in timeline.cached):
            return
        time.sleep(0.02)
    uncommitted = sum(c is None for c in timeline.committed)
    stale = sum(c is None for c in timeline.cached) - uncommitted
    raise BenchFailed(
        f"of {timeline.n:,} timed events, {uncommitted:,} were not applied and {stale:,} were "
        f"applied but still stale in the cache {DRAIN_SECONDS:g} s after the last publish\n"
        + "\n".join(setup.log_tail(i, 1500) for i in range(len(setup.logs)))
    )


def fill_cache(setup: Setup, rows: list[Row]) -> str:
    """Every product's cache entry filled, as readers leave them: the write-through then
    has to reach what a reader reads (else `get` misses and reads the database)."""
    backend = setup.backend()
    assert backend.cache is not None
    start = time.perf_counter()
    skus = sorted({row.sku for row in rows})
    for sku in skus:
        backend.get(sku)
    seconds = time.perf_counter() - start
    backend.close()
    return f"{len(skus):,} products read into the cache first ({seconds:.1f} s)"


def bench_delay(
    setup: Setup, rows: list[Row], quantities: dict[tuple[int, int], int], applied: int
) -> list[Figure]:
    args = setup.args
    figures = []
    poller = Poller(setup.url, setup.redis_url, setup.prefix, args.poll_ms / 1000)
    poller.start()
    publisher = Publisher(setup)
    where = "committed, and written through to the cached entry" if setup.redis_url else "committed"
    print(f"2. sync delay: publish -> visible ({where}), polled every {args.poll_ms} ms")
    print(
        f"  workers: {args.workers} inv worker process(es) started by the bench (--workers), "
        f"batches of up to {args.batch_size:,} events or {args.batch_ms} ms"
    )
    if setup.redis_url:
        print(f"  {fill_cache(setup, rows)}")
    try:
        # One event first: the producer connects and gets its id, the poller starts.
        timeline, messages = publisher.build(rows, quantities, 1, 0)
        poller.watch(timeline)
        publisher.at_rate(timeline, messages, 1)
        wait_visible(setup, poller, timeline)
        applied += 1
        for number, rate in enumerate(args.rates, start=1):
            n = max(1, round(rate * args.delay_seconds))
            stride = max(1, math.ceil(rate / args.sample))
            timeline, messages = publisher.build(rows, quantities, n, number * 104_729, stride)
            poller.watch(timeline)
            achieved = publisher.at_rate(timeline, messages, rate)
            wait_visible(setup, poller, timeline)
            poller.watch(None)
            applied += n
            visible = timeline.since_published(timeline.cached)
            committed = timeline.since_published(timeline.committed)
            acked = timeline.since_published(timeline.acked)
            p50, p99 = percentile(visible, 50), percentile(visible, 99)
            target = TARGET_DELAY_P99.get(rate)
            ok = target is None or p99 <= target
            cycle = timeline.busy / timeline.polls if timeline.polls else 0.0
            sampled = "every one" if stride == 1 else f"every {stride}th"
            print(
                f"  at {rate:,} events/s for {args.delay_seconds:g} s: {n:,} events, "
                f"published at {achieved:,.0f}/s; {timeline.n:,} timed ({sampled})"
            )
            print(
                f"    publish -> visible      : p50 {ms(p50):>10}  p99 {ms(p99):>10}  "
                f"max {ms(max(visible)):>10}"
            )
            print(
                f"    publish -> broker ack   : p50 {ms(percentile(acked, 50)):>10}  "
                f"p99 {ms(percentile(acked, 99)):>10}"
            )
            if setup.redis_url:
                print(
                    f"    publish -> committed    : p50 {ms(percentile(committed, 50)):>10}  "
                    f"p99 {ms(percentile(committed, 99)):>10}  (then the write-through)"
                )
                print(
                    f"    seen in a cached entry  : {timeline.hits:,} of {timeline.n:,} "
                    "(the others in a missing entry: a reader reads the database)"
                )
            print(
                f"    polls: {timeline.polls:,}, {ms(cycle)} each on average, "
                f"{ms(timeline.longest)} the longest (the resolution: {args.poll_ms} ms, or "
                "the poll when it takes longer)"
            )
            if target is None:
                print("    target: none at this rate")
            else:
                print(f"    target: p99 at most {ms(target)} -> {verdict(ok)}")
                figures.append(
                    Figure(
                        "delay",
                        f"sync delay p99 at {rate:,} ev/s",
                        ms(p99),
                        f"p50 {ms(p50)}; {args.workers} worker(s)",
                        f"<= {ms(target)}",
                        ok,
                    )
                )
    finally:
        poller.stop()
    wait_applied_total(setup, applied, setup.args.stall)
    checked = check_applied(setup, applied, quantities)
    print(f"  check: {checked}")
    return figures


# -- 3. a cached read ----------------------------------------------------------------------


def median_us(runs: int, work: Callable[[], object]) -> float:
    """Median µs of `runs` calls, each timed on its own."""
    times = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        work()
        times.append(time.perf_counter_ns() - start)
    return statistics.median(times) / 1000


def bench_read(setup: Setup, rows: list[Row]) -> list[Figure]:
    assert setup.redis_url is not None
    args = setup.args
    # Made by another backend: one that has written reads the primary, not the cache.
    single = setup.backend().add_product("Bench single-store product", "1.00", quantity=5)
    backend = setup.backend()
    assert backend.cache is not None
    sku = rows[0].sku
    backend.get(sku)  # a miss: fills the entry
    for _ in range(min(200, args.reads)):
        product = backend.get(sku)
    store = rows[0].store
    backend.quantity(store, sku)  # a miss for the store codes: fills them
    hits = backend.cache.hits
    ours = median_us(args.reads, lambda: backend.quantity(store, sku))
    if backend.cache.hits - hits != args.reads:
        raise BenchFailed(f"{args.reads - (backend.cache.hits - hits)} cached reads missed")
    whole = median_us(args.reads, lambda: backend.get(sku))
    script = median_us(args.reads, lambda: backend.cache.read(sku_key(sku)))

    backend.get(single.sku)
    few = median_us(args.reads, lambda: backend.get(single.sku))

    client = redis_client(setup.redis_url)
    key = f"{setup.prefix}:plain"
    client.set(key, b"42")
    for _ in range(min(200, args.reads)):
        client.get(key)
    raw = median_us(args.reads, lambda: client.get(key))
    generation = (client.get(f"{setup.prefix}:gen") or b"0").decode()
    entry = f"{setup.prefix}:{generation}:item:{sku_key(sku)}"
    fields = client.hlen(entry)
    hgetall = median_us(args.reads, lambda: client.hgetall(entry))
    client.close()
    ratio = ours / raw
    ok = ratio <= TARGET_READ_RATIO
    print(f"3. cached read in process, median of {args.reads:,} calls after the entry is filled")
    print(f"  KafkaBackend.quantity({store!r}, {sku!r}): {ours:8.1f} µs  (one stock level)")
    print(
        f"  KafkaBackend.get({sku!r})         : {whole:8.1f} µs  "
        f"(the product, stocked at {len(product.stock):,} stores)"
    )
    print(f"    of which Cache.read (EVALSHA)  : {script:8.1f} µs")
    print(
        f"    raw: redis-py HGETALL of it     : {hgetall:8.1f} µs  ({fields:,} fields: the "
        "catalog and one per store)"
    )
    print(f"  get() of a product at one store   : {few:8.1f} µs")
    print(f"  raw: redis-py GET of a plain key  : {raw:8.1f} µs")
    print(
        f"  ratio                             : {ratio:8.2f}x  "
        f"(target: at most {TARGET_READ_RATIO}x) -> {verdict(ok)}"
    )
    return [
        Figure(
            "read",
            "cached quantity(store, sku)",
            f"{ours:,.0f} µs",
            f"GET {raw:.0f} µs ({ratio:.1f}x); get() of a product at {len(product.stock)} "
            f"stores {whole:.0f} µs ({whole / raw:.1f}x), at one store {few:.0f} µs",
            f"<= {TARGET_READ_RATIO}x GET",
            ok,
        )
    ]


# -- main ----------------------------------------------------------------------------------


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--server", default=DEFAULT_SERVER, help=f"PostgreSQL (default {DEFAULT_SERVER})"
    )
    parser.add_argument(
        "--redis", default=DEFAULT_REDIS, help=f"Redis, or 'none' (default {DEFAULT_REDIS})"
    )
    parser.add_argument(
        "--bootstrap", metavar="HOST:PORT", help="a running broker (default: start Tansu)"
    )
    parser.add_argument("--stores", type=int, default=200, help="seeded stores (default 200)")
    parser.add_argument("--products", type=int, default=500, help="seeded products (default 500)")
    parser.add_argument(
        "--events", type=int, default=200_000, help="throughput events (default 200000)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="inv worker processes the bench starts, for parts 1 and 2 (default 2: one a "
        "core, as docker-compose.yml runs worker-1 and worker-2)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=1000,
        help="worker --batch-size, and the events in each transaction of the set-based "
        "floor (default 1000)",
    )
    parser.add_argument("--batch-ms", type=int, default=50, help="worker --batch-ms (50)")
    parser.add_argument("--partitions", type=int, default=6, help="topic partitions (default 6)")
    parser.add_argument(
        "--rates",
        default="100,5000",
        help="sync delay: events/s, comma-separated (default 100,5000)",
    )
    parser.add_argument(
        "--delay-seconds", type=float, default=10.0, help="sync delay: seconds a rate (10)"
    )
    parser.add_argument("--poll-ms", type=int, default=5, help="sync delay: poll interval (5)")
    parser.add_argument(
        "--sample",
        type=int,
        default=200,
        help="sync delay: events timed a second, at most (default 200; every n-th event)",
    )
    parser.add_argument(
        "--progress-ms", type=int, default=20, help="throughput: poll interval (default 20)"
    )
    parser.add_argument(
        "--stall", type=float, default=60.0, help="fail when nothing applies for this long (60 s)"
    )
    parser.add_argument("--reads", type=int, default=5000, help="cached reads timed (5000)")
    parser.add_argument("--skip-throughput", action="store_true", help="skip part 1")
    parser.add_argument("--skip-delay", action="store_true", help="skip part 2")
    parser.add_argument("--skip-read", action="store_true", help="skip part 3")
    parser.add_argument(
        "--keep-env",
        action="store_true",
        help=f"run the children with {' and '.join(UNUSUAL_ENV)} if set (default: unset them)",
    )
    args = parser.parse_args(argv)
    try:
        args.rates = [int(r) for r in args.rates.split(",") if r.strip()]
    except ValueError:
        parser.error("--rates: whole events/s, comma-separated")
    sizes = [args.stores, args.products, args.events, args.workers, args.batch_size]
    sizes += [args.batch_ms, args.partitions, args.poll_ms, args.progress_ms, args.reads]
    sizes.append(args.sample)
    if min(sizes + args.rates) < 1 or args.delay_seconds <= 0:
        parser.error("sizes, counts, rates and intervals must be at least 1")
    if not INV.exists():
        print(f"no inv next to {PYTHON}: install the project in this venv first")
        return 0

    signal.signal(signal.SIGTERM, _interrupt)
    databases = Databases(args.server)
    token = secrets.token_hex(4)
    with tempfile.TemporaryDirectory(prefix="inv-bench-") as tmp:
        setup = Setup(args, databases, Path(tmp))
        setup.topic = setup.prefix = f"inv-bench-{token}"
        setup.group = f"inv-bench-{token}-workers"
        figures: list[Figure] = []
        try:
            try:
                with databases.admin():
                    pass
            except psycopg.Error as exc:
                print(f"skipped: cannot reach PostgreSQL at {args.server}: {str(exc).strip()}")
                return 0
            if args.redis.lower() not in ("", "none"):
                try:
                    redis_client(args.redis).ping()
                    setup.redis_url = args.redis
                except Exception as exc:
                    print(f"no Redis at {args.redis} ({exc}): the cache parts are skipped")
            if args.bootstrap:
                setup.bootstrap = args.bootstrap
            else:
                try:
                    setup.broker = start_local_broker()
                except Exception as exc:  # BrokerUnavailable, or no tests/ folder
                    print(f"skipped: cannot start a Tansu broker: {exc}")
                    return 0
                setup.bootstrap = setup.broker.bootstrap
            print(environment_line(setup))
            rows = seed(setup)
            quantities = {(r.store_id, r.product_id): r.quantity for r in rows}
            applied = 0
            if not args.skip_throughput:
                figures += bench_throughput(setup, rows, quantities)
                applied += args.events
            if not args.skip_delay:
                if not setup.workers:
                    applied += warm_up(setup, rows, quantities)
                figures += bench_delay(setup, rows, quantities, applied)
            if setup.workers:
                counters = setup.stop_workers()
                for i, c in enumerate(counters):
                    size = c.get("applied", 0) / c["batches"] if c.get("batches") else 0
                    print(
                        f"worker {i + 1} stopped (SIGTERM, exit 0): "
                        + ", ".join(f"{k} {v:,}" for k, v in c.items())
                        + f" ({size:,.0f} events a batch)"
                    )
            if not args.skip_read:
                if setup.redis_url:
                    figures += bench_read(setup, rows)
                else:
                    print("3. cached read: skipped (no Redis)")
        except BenchFailed as exc:
            print(f"failed: {exc}")
            return 1
        except KeyboardInterrupt:
            print("interrupted: removing the bench database, topics and keys")
            return 130
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            setup.close()
    print_summary(figures, setup.removed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
