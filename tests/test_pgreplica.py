"""tests/pgreplica.py gives a real streaming replica of the local PostgreSQL, and cleans up.

The primary is a cluster of this module's own (`pgcluster`, which trusts replication
connections from 127.0.0.1): a replica then copies and replays only what these tests
write, not the databases every other test process makes meanwhile.  Without initdb and
pg_ctl, the tests skip saying why, except under CI=true, where they fail.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Iterator
from typing import NoReturn

import psycopg
import pytest
from pgcluster import start_cluster
from pgreplica import (
    PrimaryNotReady,
    PrimaryUnreachable,
    pg_url,
    replica_lag_bytes,
    streaming_replica,
    wait_for_replay,
)
from psycopg import sql
from services import unavailable

#: Where this module's primary listens: set by `_own_primary`.
PRIMARY_HOST = "127.0.0.1"
PRIMARY_PORT = 0
USER = "postgres"


def _give_up(reason: str) -> NoReturn:
    unavailable(f"cannot test the PostgreSQL replica: {reason}")


def _primary(dbname: str = "postgres") -> str:
    return pg_url(PRIMARY_HOST, PRIMARY_PORT, USER, dbname)


@pytest.fixture(scope="module", autouse=True)
def _own_primary() -> Iterator[None]:
    global PRIMARY_HOST, PRIMARY_PORT
    try:
        # Synchronous commits, as in production: a commit is in the WAL the replica is
        # sent (and counted in its lag) when it returns.
        cluster = start_cluster(synchronous_commit="on")
    except (RuntimeError, OSError, KeyError) as e:
        _give_up(f"no PostgreSQL cluster of our own: {e}")
    PRIMARY_HOST, PRIMARY_PORT = cluster.host, cluster.port
    try:
        yield
    finally:
        cluster.stop()


@pytest.fixture
def scratch_db() -> Iterator[str]:
    """A database of its own on the primary, dropped afterwards (with any session on it)."""
    name = f"inv_replica_test_{secrets.token_hex(4)}"
    try:
        admin = psycopg.connect(_primary(), autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as e:
        _give_up(f"no PostgreSQL at {PRIMARY_HOST}:{PRIMARY_PORT}: {e}")
    with admin:
        admin.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with psycopg.connect(_primary(), autocommit=True) as admin:
            admin.execute(
                sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
            )


def _slots_and_senders() -> tuple[set[str], set[str]]:
    with psycopg.connect(_primary(), autocommit=True) as conn:
        slots = {str(r[0]) for r in conn.execute("select slot_name from pg_replication_slots")}
        senders = {
            str(r[0]) for r in conn.execute("select application_name from pg_stat_replication")
        }
    return slots, senders


@pytest.mark.slow
def test_a_streaming_replica_replays_refuses_writes_and_leaves_nothing(scratch_db: str) -> None:
    slots_before, _ = _slots_and_senders()
    primary = _primary(scratch_db)

    with contextlib.ExitStack() as stack:
        try:
            replica = stack.enter_context(streaming_replica(PRIMARY_HOST, PRIMARY_PORT, USER))
        except (PrimaryUnreachable, PrimaryNotReady) as e:
            _give_up(str(e))
        assert replica.host == PRIMARY_HOST
        assert replica.port != PRIMARY_PORT
        assert (
            replica.url(scratch_db)
            == f"postgresql://postgres@127.0.0.1:{replica.port}/{scratch_db}"
        )
        data_dir = replica.data_dir
        assert (data_dir / "standby.signal").exists()

        with psycopg.connect(primary, autocommit=True) as conn:
            conn.execute("create table items (sku text primary key, quantity int not null)")
            conn.execute("insert into items values (%s, %s)", ("MUG", 12))
        wait_for_replay(primary, replica.url(scratch_db))

        with psycopg.connect(replica.url(scratch_db), autocommit=True) as conn:
            assert conn.execute("select pg_is_in_recovery()").fetchone() == (True,)
            assert conn.execute("select quantity from items where sku = 'MUG'").fetchall() == [
                (12,)
            ]
            with pytest.raises(
                psycopg.errors.ReadOnlySqlTransaction,
                match="cannot execute INSERT in a read-only transaction",
            ):
                conn.execute("insert into items values ('TEA', 1)")

        lag = replica_lag_bytes(_primary(), replica.application_name)
        # Replayed a moment ago: well under one WAL segment (16 MB) behind.
        assert isinstance(lag, int) and 0 <= lag < 16 * 1024 * 1024
        assert replica_lag_bytes(_primary()) < 16 * 1024 * 1024  # the largest of all standbys

    # Torn down: no postmaster, no folder, no walsender nor slot left on the primary.
    assert not data_dir.exists()
    deadline = time.monotonic() + 10
    while True:
        slots, senders = _slots_and_senders()
        if replica.application_name not in senders and slots <= slots_before:
            break
        assert time.monotonic() < deadline, f"left on the primary: {senders=} {slots=}"
        time.sleep(0.1)
    assert set(replica.timings) == {"basebackup", "start", "streaming", "teardown"}


@pytest.mark.slow
def test_the_postgres_backend_reads_from_a_replica_and_reports_its_lag(scratch_db: str) -> None:
    """Reads go to the replica; after a write, the same backend reads the primary."""
    from backends.postgres import PostgresBackend

    primary_url = _primary(scratch_db)
    database = scratch_db
    setup = PostgresBackend(primary_url, actor="tester")
    setup.init()
    setup.close()
    try:
        replica_cm = streaming_replica(PRIMARY_HOST, PRIMARY_PORT, USER)
        replica = replica_cm.__enter__()
    except (PrimaryUnreachable, PrimaryNotReady) as e:
        _give_up(str(e))
    try:
        replica_url = replica.url(database)
        writer = PostgresBackend(primary_url, actor="tester")
        writer.add_product("Blue mug", "4.50", sku="MUG", quantity=5)
        wait_for_replay(primary_url, replica_url)
        reader = PostgresBackend(primary_url, read_urls=[replica_url], actor="tester")
        assert [i.quantity for i in reader.list_items()] == [5]

        # Freeze the replica: what it serves stops moving.
        with psycopg.connect(replica_url, autocommit=True) as conn:
            conn.execute("SELECT pg_wal_replay_pause()")
        writer.adjust("main", "MUG", 3)
        fresh_reader = PostgresBackend(primary_url, read_urls=[replica_url], actor="t")
        assert fresh_reader.get("MUG").stock == {"main": 5}  # served by the replica
        assert writer.get("MUG").stock == {"main": 8}  # the writer reads the primary
        reader.adjust("main", "MUG", 1)
        assert reader.get("MUG").stock == {"main": 9}  # read-your-own-write

        status = fresh_reader.status()
        (entry,) = status["replicas"]
        assert entry["ok"] is True and entry["in_recovery"] is True
        assert entry["lag_bytes"] > 0

        with psycopg.connect(replica_url, autocommit=True) as conn:
            conn.execute("SELECT pg_wal_replay_resume()")
        wait_for_replay(primary_url, replica_url)
        assert fresh_reader.get("MUG").stock == {"main": 9}
        for backend in (writer, reader, fresh_reader):
            backend.close()
    finally:
        replica_cm.__exit__(None, None, None)
