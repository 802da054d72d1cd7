"""PostgreSQL-specific behaviour of the postgres backend, against a real server.

The audit log's immutability and partitions through plain SQL, lock ordering under
opposite transfers, races between sessions, idempotent retries through the CLI, and the
read/write split.  Failure paths (unreachable server, bad configuration, hostile input)
are in test_postgres_faults.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from inprocess import run_cli
from pg import drop_database, fresh_database

from backends import InsufficientStock
from backends.postgres import PostgresBackend, database

ProcCall = Callable[..., subprocess.CompletedProcess[str]]

REPLAYED = " (already applied with this idempotency key; nothing changed now)"


@pytest.fixture
def db() -> Iterator[str]:
    """A fresh migrated database (store main), dropped afterwards."""
    url = fresh_database()
    yield url
    drop_database(url)


@pytest.fixture
def inv(tmp_path: Path) -> ProcCall:
    """`inv --backend postgres ARGS...` against `url`, in-process (`inprocess.run_cli`); the
    concurrency tests start real processes of their own."""

    def call(
        url: str | None, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("INV_")}
        return run_cli(
            ["--backend", "postgres", *args],
            env={**unset, "INV_DATABASE_URL": url, **(env or {})},
            cwd=tmp_path,
        )

    return call


def _sql(url: str, query: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description is not None else []


def _month(year: int, month: int, ahead: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + ahead
    return index // 12, index % 12 + 1


# -- the audit log is append-only ------------------------------------------------------


@pytest.fixture
def moved(db: str) -> Iterator[str]:
    """A database with a few movements in its audit log."""
    backend = PostgresBackend(db, actor="tester")
    try:
        backend.add_product("Mug", "4.50", sku="MUG", quantity=10)
        backend.add_store("north")
        backend.adjust("main", "MUG", -3, "sale")
        backend.set_quantity("main", "MUG", 12, "count")
        backend.transfer("MUG", "main", "north", 2)
    finally:
        backend.close()
    yield db


def _current_partition(url: str) -> str:
    """The partition holding the newest audit row: this month's, named audit_log_YYYY_MM."""
    ((name,),) = _sql(
        url, "SELECT tableoid::regclass::text FROM audit_log ORDER BY id DESC LIMIT 1"
    )
    return str(name)


TAMPERING = [
    "UPDATE {table} SET reason = 'tampered'",
    "UPDATE {table} SET delta = 0 WHERE action = 'stock.adjust'",
    "DELETE FROM {table}",
    "DELETE FROM {table} WHERE action = 'stock.transfer_out'",
    "TRUNCATE {table}",
    "TRUNCATE {table} CASCADE",
    "MERGE INTO {table} a USING (SELECT 1) s ON true WHEN MATCHED THEN DELETE",
    "INSERT INTO {table} SELECT * FROM {table} ON CONFLICT (id, at) DO UPDATE SET reason = 'x'",
]


@pytest.mark.parametrize("target", ["audit_log", "partition"])
@pytest.mark.parametrize("statement", TAMPERING)
def test_the_audit_log_refuses_change_even_to_the_superuser(
    moved: str, target: str, statement: str
) -> None:
    table = _current_partition(moved) if target == "partition" else "audit_log"
    snapshot = "SELECT * FROM audit_log ORDER BY id"
    before = _sql(moved, snapshot)
    assert len(before) == 7  # store.create main + north, product.create, adjust, set, out, in
    with psycopg.connect(moved) as conn:
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
        with pytest.raises(psycopg.Error, match="append-only") as refused:
            conn.execute(statement.format(table=table))
        assert refused.value.sqlstate == "42501"
        conn.rollback()
    assert _sql(moved, snapshot) == before


def test_the_current_partition_is_named_for_this_month(moved: str) -> None:
    now = datetime.now(UTC)
    assert _current_partition(moved) == f"audit_log_{now:%Y_%m}"


def test_every_partition_has_its_own_truncate_trigger(db: str) -> None:
    rows = _sql(
        db,
        "SELECT c.relname, EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid "
        "AND t.tgtype & 32 <> 0 AND t.tgenabled <> 'D') "
        "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'audit_log'::regclass ORDER BY c.relname",
    )
    assert len(rows) >= 13
    assert [name for name, has_trigger in rows if not has_trigger] == []


# -- partitions -----------------------------------------------------------------------


def _bounds(url: str, table: str) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        row = conn.execute(
            "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_class c "
            "JOIN pg_inherits i ON i.inhrelid = c.oid "
            "WHERE c.relname = %s AND i.inhparent = 'audit_log'::regclass",
            (table,),
        ).fetchone()
    assert row is not None, f"{table} is not a partition of audit_log"
    return str(row[0])


def test_this_month_and_the_next_twelve_have_partitions_after_init(db: str) -> None:
    now = datetime.now(UTC)
    for ahead in range(13):
        year, month = _month(now.year, now.month, ahead)
        table = f"audit_log_{year:04d}_{month:02d}"
        following = _month(year, month, 1)
        assert _bounds(db, table) == (
            f"FOR VALUES FROM ('{year:04d}-{month:02d}-01 00:00:00+00') "
            f"TO ('{following[0]:04d}-{following[1]:02d}-01 00:00:00+00')"
        )


def test_a_month_without_a_partition_gets_one_on_demand(db: str) -> None:
    insert = (
        "INSERT INTO audit_log (at, actor, source, event_id, store, sku, action, delta, "
        "quantity_after) VALUES (%s, 'tester', 'cli', 'e-2020', 'main', 'OLD', "
        "'stock.adjust', 1, 1) RETURNING tableoid::regclass::text"
    )
    assert _sql(db, "SELECT to_regclass('audit_log_2020_03')") == [(None,)]
    with psycopg.connect(db) as conn:
        with pytest.raises(psycopg.Error, match="no partition"):
            conn.execute(insert, ("2020-03-15 12:00:00+00",))
        conn.rollback()
        # A session in another time zone still gets UTC months.
        conn.execute("SET TimeZone = 'America/New_York'")
        assert conn.execute("SELECT audit_log_partition('2020-03-15')").fetchone() == (
            "audit_log_2020_03",
        )
        # Calling it again is harmless and names the same table.
        assert conn.execute("SELECT audit_log_partition('2020-03-02')").fetchone() == (
            "audit_log_2020_03",
        )
        # 23:30 in New York on 31 March is April in UTC.
        assert conn.execute("SELECT audit_log_partition('2020-03-31 23:30:00-05')").fetchone() == (
            "audit_log_2020_04",
        )
        assert conn.execute(insert, ("2020-03-15 12:00:00+00",)).fetchone() == (
            "audit_log_2020_03",
        )
        conn.commit()
    assert _bounds(db, "audit_log_2020_03") == (
        "FOR VALUES FROM ('2020-03-01 00:00:00+00') TO ('2020-04-01 00:00:00+00')"
    )
    assert _bounds(db, "audit_log_2020_04") == (
        "FOR VALUES FROM ('2020-04-01 00:00:00+00') TO ('2020-05-01 00:00:00+00')"
    )
    triggers = _sql(
        db,
        "SELECT tgname FROM pg_trigger WHERE tgrelid = 'audit_log_2020_03'::regclass "
        "AND tgtype & 32 <> 0",
    )
    assert triggers == [("audit_log_no_truncate",)]
    with psycopg.connect(db) as conn:
        for statement in ("TRUNCATE audit_log_2020_03", "DELETE FROM audit_log_2020_03"):
            with pytest.raises(psycopg.Error, match="append-only"):
                conn.execute(statement)
            conn.rollback()
    assert _sql(db, "SELECT count(*) FROM audit_log_2020_03") == [(1,)]


def test_a_movement_in_a_month_whose_partition_is_gone_recreates_it(db: str) -> None:
    """The backend creates a missing partition and retries, rather than failing."""
    backend = PostgresBackend(db, actor="tester")
    try:
        backend.add_product("Mug", "1", sku="MUG", quantity=5)
        current = _current_partition(db)
        _sql(db, f"DROP TABLE {current}")  # retention pruning drops whole partitions
        moved = backend.adjust("main", "MUG", -2, "sale")
        assert (moved.delta, moved.quantity_after) == (-2, 3)
    finally:
        backend.close()
    assert _current_partition(db) == current
    assert _sql(db, f"SELECT action, delta FROM {current}") == [("stock.adjust", -2)]
    assert _sql(
        db,
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass(%s) AND tgtype & 32 <> 0",
        (current,),
    ) == [(1,)]


# -- lock ordering --------------------------------------------------------------------


@pytest.mark.slow
def test_opposite_transfers_never_deadlock(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    setup = PostgresBackend(db, actor="tester")
    setup.add_store("b-store")
    setup.add_store("a-store")  # created second: store ids and codes sort differently
    setup.add_product("Mug", "1", sku="MUG", quantity=0)
    setup.set_quantity("a-store", "MUG", 1000)
    setup.set_quantity("b-store", "MUG", 1000)
    per_thread, threads = 25, 8
    seen_states: list[str | None] = []
    failures: list[BaseException] = []
    start = threading.Barrier(threads)

    translate = database.translate

    def recording(exc, url):  # type: ignore[no-untyped-def]
        orig = getattr(exc, "orig", exc)
        seen_states.append(getattr(orig, "sqlstate", None))
        return translate(exc, url)

    # Every driver error passes through here before the backend may retry it.
    monkeypatch.setattr(database, "translate", recording)

    def worker(n: int) -> None:
        backend = PostgresBackend(db, actor=f"t{n}")
        source, target = ("a-store", "b-store") if n % 2 else ("b-store", "a-store")
        start.wait()
        try:
            for i in range(per_thread):
                backend.transfer("MUG", source, target, 1 + (i + n) % 3)
        except BaseException as exc:
            failures.append(exc)

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    setup.close()  # disposes the shared pool: sessions end and flush their statistics
    assert failures == []
    # Deadlocks and serialization failures are retried by the backend, so look at what
    # the driver raised, and at what the server counted.
    assert seen_states == []
    datname = db.rpartition("/")[2]
    assert _sql(db, "SELECT deadlocks FROM pg_stat_database WHERE datname = %s", (datname,)) == [
        (0,)
    ]
    stock = _sql(
        db,
        "SELECT s.code, i.quantity FROM inventory i JOIN stores s ON s.id = i.store_id "
        "ORDER BY s.code",
    )
    assert sum(q for _, q in stock) == 2000
    assert dict(stock).keys() == {"a-store", "b-store", "main"}
    pairs = _sql(
        db,
        "SELECT event_id, array_agg(action ORDER BY action), sum(delta) FROM audit_log "
        "WHERE action LIKE 'stock.transfer%%' GROUP BY event_id",
    )
    assert len(pairs) == per_thread * threads
    assert all(
        actions == ["stock.transfer_in", "stock.transfer_out"] and total == 0
        for _, actions, total in pairs
    )


# -- races between real processes -----------------------------------------------------


def test_concurrent_sessions_never_lose_an_update(db: str, inv: ProcCall) -> None:
    """Six writers, each a backend of its own (its own pool and sessions), increment one
    item at once: the server sees what six processes would make it see, at a fraction
    of the cost (the JSON backend's race needs real processes: test_processes.py)."""
    assert inv(db, "add", "Mug", "--price", "1", "--sku", "MUG").returncode == 0
    workers, rounds = 6, 15
    start = threading.Barrier(workers)
    failures: list[BaseException] = []

    def writer() -> None:
        backend = PostgresBackend(db, actor="tester")
        try:
            start.wait()
            for _ in range(rounds):
                backend.adjust("main", "MUG", 1)
        except BaseException as exc:
            failures.append(exc)
        finally:
            backend.close()

    threads = [threading.Thread(target=writer) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert failures == []
    total = workers * rounds
    shown = json.loads(inv(db, "show", "MUG", "--format", "json").stdout)
    assert shown["stock"] == {"main": total}
    after = _sql(
        db,
        "SELECT quantity_after FROM audit_log WHERE sku = 'MUG' AND action = 'stock.adjust' "
        "ORDER BY quantity_after",
    )
    assert [q for (q,) in after] == list(range(1, total + 1))


def test_concurrent_sales_never_oversell(db: str, inv: ProcCall) -> None:
    """Ten sessions each sell 1 of 5 in stock at once: exactly 5 succeed, the others are
    told there is not enough, and nothing goes below zero."""
    assert inv(db, "add", "Mug", "--price", "1", "--sku", "MUG", "--qty", "5").returncode == 0
    start = threading.Barrier(10)
    outcomes: list[object] = []

    def seller() -> None:
        backend = PostgresBackend(db, actor="tester")
        try:
            start.wait()
            outcomes.append(backend.adjust("main", "MUG", -1).quantity_after)
        except BaseException as exc:
            outcomes.append(exc)
        finally:
            backend.close()

    threads = [threading.Thread(target=seller) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    sold = sorted(o for o in outcomes if isinstance(o, int))
    refused = [o for o in outcomes if not isinstance(o, int)]
    assert sold == [0, 1, 2, 3, 4]
    assert len(refused) == 5 and all(isinstance(e, InsufficientStock) for e in refused), refused
    assert all(str(e).startswith("not enough MUG at main: 0 on hand") for e in refused)
    assert json.loads(inv(db, "show", "MUG", "--format", "json").stdout)["stock"] == {"main": 0}
    assert _sql(db, "SELECT count(*) FROM audit_log WHERE action = 'stock.adjust'") == [(5,)]


# -- idempotent retries ---------------------------------------------------------------


def test_a_retried_command_with_a_key_applies_once(db: str, inv: ProcCall) -> None:
    assert inv(db, "add", "Mug", "--price", "1", "--sku", "MUG", "--qty", "5").returncode == 0
    key = "cron-2026-11-25-mug"
    for attempt in range(3):
        result = inv(db, "update", "MUG", "--change", "-2", "--idempotency-key", key)
        note = (
            " (already applied with this idempotency key; nothing changed now)" if attempt else ""
        )
        assert (result.returncode, result.stdout, result.stderr) == (
            0,
            f"MUG at main: 5 -> 3 (-2){note}\n",
            "",
        )
    other = inv(db, "update", "MUG", "--change", "-1", "--idempotency-key", key)
    assert other.returncode == 1
    assert other.stdout == ""
    assert other.stderr == (
        f"Error: idempotency key {key!r} was already used for a different request; "
        "nothing changed\n"
    )
    # The same key on a --set is a different request too.
    assert inv(db, "update", "MUG", "--set", "3", "--idempotency-key", key).returncode == 1
    assert json.loads(inv(db, "show", "MUG", "--format", "json").stdout)["stock"] == {"main": 3}
    assert _sql(
        db, "SELECT action, delta, quantity_after FROM audit_log WHERE event_id = %s", (key,)
    ) == [("stock.adjust", -2, 3)]


# -- the read/write split -------------------------------------------------------------


def test_reads_go_to_the_replica_until_the_backend_writes(db: str, inv: ProcCall) -> None:
    replica = fresh_database()  # a stand-in: a different database, with different data
    try:
        primary_only = PostgresBackend(db, actor="tester")
        primary_only.add_product("On primary", "1", sku="PRI", quantity=1)
        replica_only = PostgresBackend(replica, actor="tester")
        replica_only.add_product("On replica", "1", sku="REP", quantity=1)

        split = PostgresBackend(db, read_urls=[replica], actor="tester")
        assert [i.sku for i in split.list_items()] == ["REP"]
        assert split.get("REP").stock == {"main": 1}
        assert [m.sku for m in split.history() if m.sku] == ["REP"]

        split.adjust("main", "PRI", 4, "restock")  # a write: it must go to the primary
        assert [(i.sku, i.quantity) for i in split.list_items()] == [("PRI", 5)]
        assert [m.sku for m in split.history() if m.sku] == ["PRI", "PRI"]

        # A new backend object (the next command) reads from the replica again.
        next_command = PostgresBackend(db, read_urls=[replica], actor="tester")
        assert [i.sku for i in next_command.list_items()] == ["REP"]
        assert _sql(replica, "SELECT count(*) FROM products WHERE sku = 'PRI'") == [(0,)]

        # The same routing through the CLI's settings.
        listed = inv(db, "list", "--format", "json", env={"INV_READ_DATABASE_URLS": replica})
        assert listed.returncode == 0, listed.stderr
        assert [row["sku"] for row in json.loads(listed.stdout)] == ["REP"]
        for backend in (primary_only, replica_only, split, next_command):
            backend.close()
    finally:
        drop_database(replica)


def test_opposite_transfers_wait_rather_than_fail_fast(db: str) -> None:
    """A transfer that meets a locked row waits for it (no lock-timeout error)."""
    setup = PostgresBackend(db, actor="tester")
    setup.add_store("north")
    setup.add_product("Mug", "1", sku="MUG", quantity=10)
    setup.set_quantity("north", "MUG", 10)
    setup.close()
    with psycopg.connect(db) as blocker:
        blocker.execute(
            "SELECT 1 FROM inventory i JOIN stores s ON s.id = i.store_id "
            "WHERE s.code = 'north' FOR UPDATE OF i"
        )
        done: list[object] = []

        def transfer() -> None:
            backend = PostgresBackend(db, actor="tester")
            try:
                done.append(backend.transfer("MUG", "main", "north", 3))
            except BaseException as exc:
                done.append(exc)

        thread = threading.Thread(target=transfer)
        thread.start()
        deadline = time.monotonic() + 30
        waiting = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock'"
        )
        while _sql(db, waiting) != [(1,)]:
            assert time.monotonic() < deadline, "the transfer never waited for the lock"
            thread.join(timeout=0.01)  # returns at once if the transfer ended: a failure
            assert done == [], f"the transfer did not wait for the lock: {done}"
        assert done == []  # waiting for the lock, not failed
        blocker.rollback()
        thread.join(timeout=30)
    assert len(done) == 1 and isinstance(done[0], tuple), done
    stock = _sql(
        db,
        "SELECT s.code, i.quantity FROM inventory i JOIN stores s ON s.id = i.store_id "
        "ORDER BY s.code",
    )
    assert stock == [("main", 7), ("north", 13)]
