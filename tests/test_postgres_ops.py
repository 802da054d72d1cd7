"""Operations on real PostgreSQL through the CLI (in-process): migrate, seed, status,
db upgrade, audit prune."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from inprocess import run_cli
from pg import admin, drop_database, fresh_database, url_for

from backends import Movement, NotFound, Snapshot, Store
from backends.postgres import PostgresBackend, schema

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def inv(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return run_cli(args, env=env, cwd=cwd)


@pytest.fixture
def database() -> str:
    url = fresh_database()
    yield url
    drop_database(url)


@pytest.fixture
def empty_database() -> str:
    """A database with no schema at all, as a new user would create it."""
    name = f"inv_empty_{os.getpid()}_{os.urandom(3).hex()}"
    with admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield url_for(name)
    drop_database(url_for(name))


def test_migrate_json_to_postgres_and_back(tmp_path: Path, empty_database: str) -> None:
    shop = tmp_path / "inventory.json"
    base = ["--file", str(shop)]
    assert inv(*base, "init").returncode == 0
    for name in ("catalog.csv", "movements.csv"):
        assert inv(*base, "import", str(EXAMPLES / name)).returncode == 0
    inv(*base, "add", "Nowhere", "--price", "1", "--sku", "NW-1")
    inv(*base, "remove", "NW-1", "--store", "main")
    env = {"INV_DATABASE_URL": empty_database}
    before = inv(*base, "export").stdout
    history = json.loads(inv(*base, "history", "--format", "json").stdout)

    moved = inv(*base, "migrate", "--to", "postgres", env=env)
    assert moved.returncode == 0, moved.stderr
    assert "Copied 1 new stores, 18 products" in moved.stdout
    assert "units at main" in moved.stdout
    pg = ["--backend", "postgres"]
    assert inv(*pg, "export", env=env).stdout == before
    pg_history = json.loads(inv(*pg, "history", "--format", "json", env=env).stdout)
    copied = [
        (e["at"], e["event_id"], e["action"], e["store"], e["sku"], e["delta"], e["actor"])
        for e in pg_history
    ]
    for entry in history:
        key = (
            entry["at"],
            entry["event_id"],
            entry["action"],
            entry["store"],
            entry["sku"],
            entry["delta"],
            entry["actor"],
        )
        assert key in copied

    again = inv(*base, "migrate", "--to", "postgres", env=env)
    assert again.returncode == 0
    assert "already has everything; nothing changed" in again.stdout
    assert len(json.loads(inv(*pg, "history", "--format", "json", env=env).stdout)) == len(
        pg_history
    )

    back = tmp_path / "back.json"
    returned = inv(*pg, "migrate", "--to", "json", "--to-file", str(back), env=env)
    assert returned.returncode == 0, returned.stderr
    assert inv("--file", str(back), "export").stdout == before


def test_migrate_refuses_a_target_with_other_data(tmp_path: Path, database: str) -> None:
    shop = tmp_path / "inventory.json"
    inv("--file", str(shop), "init")
    inv("--file", str(shop), "add", "Mug", "--price", "1", "--sku", "MUG", "--qty", "3")
    env = {"INV_DATABASE_URL": database}
    inv("--backend", "postgres", "add", "Other", "--price", "2", "--sku", "OTH", env=env)
    refused = inv("--file", str(shop), "migrate", "--to", "postgres", env=env)
    assert refused.returncode == 1
    assert refused.stderr.startswith("Error: ") and "use --merge" in refused.stderr
    merged = inv("--file", str(shop), "migrate", "--to", "postgres", "--merge", env=env)
    assert merged.returncode == 0, merged.stderr
    rows = json.loads(inv("--backend", "postgres", "list", "--format", "json", env=env).stdout)
    assert {(r["sku"], r["quantity"]) for r in rows} == {("MUG", 3), ("OTH", 0)}
    inv("--backend", "postgres", "update", "MUG", "--change", "1", env=env)
    clash = inv("--file", str(shop), "migrate", "--to", "postgres", "--merge", env=env)
    assert clash.returncode == 1
    assert "different data for 1 SKUs (MUG)" in clash.stderr


def test_seed_status_and_reports(database: str) -> None:
    env = {"INV_DATABASE_URL": database}
    seeded = inv("--backend", "postgres", "seed", "--stores", "30", "--products", "20", env=env)
    assert seeded.returncode == 0, seeded.stderr
    assert seeded.stdout == "Seeded 30 stores, 20 products, 600 stock rows\n"
    status = json.loads(inv("--backend", "postgres", "status", "--format", "json", env=env).stdout)
    assert status["ok"] is True and status["schema"] == schema.HEAD
    assert (status["stores"], status["products"], status["stock_rows"]) == (31, 20, 600)
    value = json.loads(
        inv("--backend", "postgres", "report", "value", "--format", "json", env=env).stdout
    )
    assert len(value) == 31 and sum(r["products"] for r in value) == 600
    one = json.loads(
        inv(
            "--backend", "postgres", "list", "--store", "store-00007", "--format", "json", env=env
        ).stdout
    )
    assert len(one) == 20
    history = json.loads(
        inv(
            "--backend",
            "postgres",
            "history",
            "--store",
            "store-00007",
            "--format",
            "json",
            env=env,
        ).stdout
    )
    sets = {e["sku"]: e["quantity_after"] for e in history if e["action"] == "stock.set"}
    assert sets == {r["sku"]: r["quantity"] for r in one}
    again = inv("--backend", "postgres", "seed", "--stores", "2", "--products", "2", env=env)
    assert again.returncode == 1
    assert "seed needs an empty catalog" in again.stderr


def test_db_upgrade_brings_a_behind_schema_forward(empty_database: str) -> None:
    env = {"INV_DATABASE_URL": empty_database}
    before = inv("--backend", "postgres", "list", env=env)
    assert before.returncode == 78
    assert "has no inv schema; run 'inv init'" in before.stderr
    upgraded = inv("--backend", "postgres", "db", "upgrade", env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"schema upgraded from nothing to {schema.HEAD}" in upgraded.stdout
    again = inv("--backend", "postgres", "db", "upgrade", env=env)
    assert f"schema already at {schema.HEAD}" in again.stdout
    assert inv("--backend", "postgres", "init", env=env).returncode == 0
    assert inv("--backend", "postgres", "list", env=env).returncode == 0


def test_the_write_path_schema_upgrades_a_populated_database(empty_database: str) -> None:
    """0004 on a database with stock and history: nothing is lost, the quantity index is
    gone, the stock table leaves room on its pages, the audit time is a BRIN index, and a
    stock change is then a heap-only (HOT) update that writes no index entry."""
    import psycopg
    from sqlalchemy import create_engine

    engine = create_engine(empty_database.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as connection:
        schema.upgrade(connection, "0003")
    engine.dispose()
    with psycopg.connect(empty_database, autocommit=True) as conn:
        conn.execute("INSERT INTO stores (code, name) VALUES ('main', 'Main'), ('north', 'N')")
        conn.execute(
            "INSERT INTO products (sku, name, price, sku_key, name_key) "
            "SELECT 'P' || g, 'Thing ' || g, 1.50, 'p' || g, 'thing ' || g "
            "FROM generate_series(1, 200) g"
        )
        conn.execute(
            "INSERT INTO inventory (store_id, product_id, quantity) "
            "SELECT s.id, p.id, p.id % 7 FROM stores s CROSS JOIN products p"
        )
        conn.execute("SELECT audit_log_partition(now())")
        conn.execute(
            "INSERT INTO audit_log (actor, source, event_id, store, sku, sku_key, action, "
            "delta, quantity_after) SELECT 'a', 'cli', 'e' || g, 'main', 'P1', 'p1', "
            "'stock.adjust', 1, g FROM generate_series(1, 50) g"
        )
        before = conn.execute(
            "SELECT count(*), sum(quantity), (SELECT count(*) FROM audit_log) FROM inventory"
        ).fetchone()
    backend = PostgresBackend(empty_database, actor="tester")
    assert backend.upgrade() == ("0003", schema.HEAD)
    with psycopg.connect(empty_database, autocommit=True) as conn:
        after = conn.execute(
            "SELECT count(*), sum(quantity), (SELECT count(*) FROM audit_log) FROM inventory"
        ).fetchone()
        indexes = dict(
            conn.execute(
                "SELECT indexname, indexdef FROM pg_indexes "
                "WHERE tablename IN ('inventory', 'audit_log')"
            ).fetchall()
        )
        options = conn.execute(
            "SELECT reloptions FROM pg_class WHERE relname = 'inventory'"
        ).fetchone()
    assert after == before == (400, sum(i % 7 for i in range(1, 201)) * 2, 50)
    assert "inventory_store_quantity_idx" not in indexes
    assert "USING brin (at)" in indexes["audit_log_at_idx"]
    assert options == (["fillfactor=80"],)
    assert backend.adjust("north", "P5", 2).quantity_after == 5 % 7 + 2
    # Pages written from now on keep a fifth free (old full pages are left as they are:
    # no rewrite), so a stock row stocked now changes in place, touching no index.
    backend.add_store("south")
    with psycopg.connect(empty_database) as conn:
        conn.execute(
            "INSERT INTO inventory (store_id, product_id, quantity) SELECT s.id, p.id, 1 "
            "FROM stores s CROSS JOIN products p WHERE s.code = 'south'"
        )
        conn.commit()
        conn.execute(
            "UPDATE inventory SET quantity = quantity + 1 "
            "WHERE store_id = (SELECT id FROM stores WHERE code = 'south') "
            "AND product_id = (SELECT id FROM products WHERE sku = 'P7')"
        )
        hot = conn.execute(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables "
            "WHERE relname = 'inventory'"
        ).fetchone()
        conn.rollback()
    assert hot == (1, 1)
    backend.close()


def test_a_stock_level_and_one_stores_list_are_one_statement_each(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hot reads send one statement in autocommit (no BEGIN before it, no ROLLBACK
    after it), and leave the pooled connection as they found it."""
    import psycopg

    backend = PostgresBackend(database, actor="tester")
    backend.add_store("north")
    backend.add_product("Mug", "4.50", sku="MUG", quantity=3)
    sent: list[tuple[str, bool]] = []
    execute = psycopg.Cursor.execute

    def seen(cursor: psycopg.Cursor[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append((str(query).split()[0], cursor.connection.autocommit))
        return execute(cursor, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", seen)
    try:
        assert backend.quantity("main", "mug") == 3
        assert sent == [("SELECT", True)]
        sent.clear()
        assert [i.sku for i in backend.list_items(store="main")] == ["MUG"]
        assert sent == [("SELECT", True)]
        sent.clear()
        # An empty page asks whether the store is there, in a transaction of its own.
        assert backend.list_items(store="north") == []
        with pytest.raises(NotFound):
            backend.list_items(store="south")
        assert sent[0] == ("SELECT", True) and len(sent) == 4
        monkeypatch.undo()
        # Writes on the same pooled connection still run in transactions.
        assert backend.adjust("main", "mug", 1).quantity_after == 4
        with backend.db.connect() as connection:
            assert connection.connection.driver_connection.autocommit is False
    finally:
        backend.close()


def test_audit_prune_drops_whole_old_months_and_says_so(database: str) -> None:
    backend = PostgresBackend(database, actor="tester")
    old = datetime(2015, 3, 10, 12, 0, tzinfo=UTC)
    entry = Movement(
        0, old, "old-actor", "cli", "old-1", "main", None, "store.create", None, None, "long ago"
    )
    backend.import_state(Snapshot([Store("main", "Main store")], [], [entry] * 3))
    recent_before = len(backend.history())
    backend.close()
    env = {"INV_DATABASE_URL": database}
    pruned = inv("--backend", "postgres", "audit", "prune", "--older-than", "7y", env=env)
    assert pruned.returncode == 0, pruned.stderr
    assert pruned.stdout == "Dropped audit_log_2015_03 (3 entries)\n"
    history = json.loads(
        inv("--backend", "postgres", "history", "--format", "json", env=env).stdout
    )
    assert len(history) == recent_before - 3 + 1
    assert history[0]["action"] == "audit.prune"
    assert "audit_log_2015_03" in history[0]["reason"]
    with admin() as conn:
        conn.execute("SELECT 1")  # the server is still fine
    nothing = inv("--backend", "postgres", "audit", "prune", env=env)
    assert nothing.stdout.startswith("Nothing older than")
