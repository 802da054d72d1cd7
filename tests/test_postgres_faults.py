"""The postgres backend's failure paths, through `inv` run in-process (`inprocess`; the
real process's exit codes are `test_processes.py`'s).

Each case asserts the exit code (sysexits: 1 refused, 75 unreachable, 78 configuration),
the one-line `Error: ...` message on stderr, no traceback, and that nothing changed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from inprocess import run_cli
from pg import admin, drop_database, fresh_database, url_for

ProcCall = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def db() -> Iterator[str]:
    url = fresh_database()
    yield url
    drop_database(url)


@pytest.fixture
def inv(tmp_path: Path) -> ProcCall:
    """Run `inv --backend postgres ARGS...`, INV_DATABASE_URL=url (None: unset)."""

    def call(
        url: str | None, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        full: dict[str, str | None] = {k: None for k in os.environ if k.startswith("INV_")}
        full["INV_DATABASE_URL"] = url
        full.update(env or {})
        return run_cli(["--backend", "postgres", *args], env=full, cwd=tmp_path)

    return call


def _refused(result: subprocess.CompletedProcess[str], code: int) -> str:
    """Assert one clean `Error:` line and the exit code; return the message."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert result.stderr.startswith("Error: ")
    assert result.stderr.count("\n") == 1, result.stderr
    return result.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stock(inv: ProcCall, url: str, sku: str) -> dict[str, int]:
    shown = inv(url, "show", sku, "--format", "json")
    assert shown.returncode == 0, shown.stderr
    stock: dict[str, int] = json.loads(shown.stdout)["stock"]
    return stock


def _audit_count(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM audit_log").fetchone()
    assert row is not None
    return int(row[0])


# -- unreachable and misconfigured ----------------------------------------------------


@pytest.mark.parametrize("args", [("list",), ("update", "MUG", "--change", "1")])
def test_an_unreachable_server_is_a_retryable_failure_without_the_password(
    inv: ProcCall, args: tuple[str, ...]
) -> None:
    port = _free_port()
    started = time.monotonic()
    result = inv(f"postgresql://postgres:s3cret@127.0.0.1:{port}/x", *args)
    assert time.monotonic() - started < 30
    message = _refused(result, 75)
    assert f"127.0.0.1:{port}" in message
    assert "s3cret" not in result.stderr + result.stdout


def test_an_unknown_role_is_a_configuration_error(inv: ProcCall) -> None:
    # Trust authentication cannot be made to refuse a password; an unknown role is the
    # login failure the local server can show.
    message = _refused(inv("postgresql://nosuchrole@127.0.0.1:5432/postgres", "list"), 78)
    assert "127.0.0.1:5432" in message
    assert 'role "nosuchrole" does not exist' in message


def test_a_missing_database_is_a_configuration_error(inv: ProcCall) -> None:
    name = "inv_no_such_database_here"
    message = _refused(inv(url_for(name), "list"), 78)
    assert f'database "{name}" does not exist' in message


def test_a_schema_behind_the_code_asks_for_db_upgrade(db: str, inv: ProcCall) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0002'")
    # Trust auth ignores the password, so it is in the URL only to be hidden.
    with_password = db.replace("postgres@", "postgres:s3cret@")
    message = _refused(inv(with_password, "list"), 78)
    assert "run 'inv db upgrade'" in message
    assert "0002" in message
    assert "s3cret" not in message
    # Writes are refused the same way, before touching anything.
    _refused(inv(db, "add", "Mug", "--price", "1", "--sku", "MUG"), 78)
    with psycopg.connect(db, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM products").fetchone() == (0,)


def test_a_database_without_the_schema_asks_for_init(inv: ProcCall) -> None:
    name = f"inv_empty_{os.getpid()}_{time.monotonic_ns()}"
    with admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = url_for(name)
        message = _refused(inv(url, "list"), 78)
        assert "inv init" in message
        assert name in message
        _refused(inv(url, "update", "MUG", "--change", "1"), 78)
        with psycopg.connect(url, autocommit=True) as conn:
            assert conn.execute("SELECT to_regclass('products')").fetchone() == (None,)
        # ... and `inv init` does make it usable.
        assert inv(url, "init").returncode == 0
        assert inv(url, "list", "--format", "json").stdout == "[]\n"
    finally:
        drop_database(url_for(name))


def test_the_postgres_backend_without_a_database_url(inv: ProcCall) -> None:
    message = _refused(inv(None, "list"), 78)
    assert "INV_DATABASE_URL" in message


def test_a_url_that_is_not_postgresql(inv: ProcCall) -> None:
    message = _refused(inv("mysql://root:s3cret@127.0.0.1/x", "list"), 78)
    assert "postgresql://" in message
    assert "s3cret" not in message


# -- hostile and out-of-range input ---------------------------------------------------


SQL_SKU = "X'; DROP TABLE products; --"


def test_sql_in_a_sku_is_stored_literally(db: str, inv: ProcCall) -> None:
    assert inv(db, "add", "Mug", "--price", "1", "--sku", "MUG").returncode == 0
    added = inv(db, "add", "x", "--sku", SQL_SKU, "--price", "1", "--quiet")
    assert added.returncode == 0, added.stderr
    shown = inv(db, "show", SQL_SKU, "--format", "json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == {
        "sku": SQL_SKU,
        "name": "x",
        "price": "1.00",
        "unit": "each",
        "category": None,
        "reorder_level": 0,
        "stock": {"main": 0},
    }
    moved = inv(db, "update", SQL_SKU, "--change", "3")
    assert moved.returncode == 0, moved.stderr
    listed = json.loads(inv(db, "list", "--format", "json").stdout)
    assert [(row["sku"], row["quantity"]) for row in listed] == [("MUG", 0), (SQL_SKU, 3)]
    # Search text is text, not a pattern or SQL.
    for text, found in [("'", [SQL_SKU]), ("%", []), ("_", []), ("' OR '1'='1", [])]:
        searched = inv(db, "list", "--search", text, "--format", "json")
        assert searched.returncode == 0, searched.stderr
        assert [row["sku"] for row in json.loads(searched.stdout)] == found, text
    with psycopg.connect(db, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM products").fetchone() == (2,)


def test_sql_in_a_store_code_is_refused_by_the_slug_rule(db: str, inv: ProcCall) -> None:
    code = "x'; DROP TABLE stores; --"
    message = _refused(inv(db, "store", "add", code), 1)
    assert "is not a store code" in message
    assert inv(db, "add", "Mug", "--price", "1", "--sku", "MUG", "--qty", "2").returncode == 0
    _refused(inv(db, "update", "MUG", "--change", "1", "--store", "main' OR '1'='1"), 1)
    stores = inv(db, "store", "list", "--format", "json")
    assert stores.returncode == 0, stores.stderr
    assert [s["code"] for s in json.loads(stores.stdout)] == ["main"]
    assert _stock(inv, db, "MUG") == {"main": 2}


def test_a_price_with_three_decimals_is_refused(db: str, inv: ProcCall) -> None:
    message = _refused(inv(db, "add", "Mug", "--price", "1.234", "--sku", "MUG"), 1)
    assert "price" in message and "1.234" in message and "2 decimal places" in message
    assert inv(db, "list", "--format", "json").stdout == "[]\n"


def test_a_change_past_the_integer_range_is_refused_clearly(db: str, inv: ProcCall) -> None:
    """5 + 2147483647 does not fit a PostgreSQL integer: refused, naming what and where."""
    assert inv(db, "add", "Mug", "--price", "1", "--sku", "MUG", "--qty", "5").returncode == 0
    before = _audit_count(db)
    message = _refused(inv(db, "update", "MUG", "--change", "2147483647"), 1)
    assert _stock(inv, db, "MUG") == {"main": 5}
    assert _audit_count(db) == before
    # The backend has a message for this ("change: MUG at main would exceed 2147483647"):
    # the user should get it, not the server's bare "integer out of range".
    assert "MUG" in message and "2147483647" in message, message


def test_a_transfer_past_the_integer_range_is_refused_clearly(db: str, inv: ProcCall) -> None:
    assert inv(db, "add", "Mug", "--price", "1", "--sku", "MUG", "--qty", "5").returncode == 0
    assert inv(db, "store", "add", "north").returncode == 0
    assert inv(db, "update", "MUG", "--set", "2147483647", "--store", "north").returncode == 0
    before = _audit_count(db)
    message = _refused(
        inv(db, "transfer", "MUG", "--from", "main", "--to", "north", "--qty", "1"), 1
    )
    assert _stock(inv, db, "MUG") == {"main": 5, "north": 2147483647}
    assert _audit_count(db) == before
    assert "MUG" in message and "north" in message, message


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--set", "99999999999"), "quantity: 99999999999 is larger than 2147483647"),
        (("--set", "2147483648"), "quantity: 2147483648 is larger than 2147483647"),
        (("--change", "99999999999"), "change: 99999999999 is larger than 2147483647"),
        (("--set", "-1"), "quantity"),
    ],
)
def test_numbers_out_of_range_are_refused(
    db: str, inv: ProcCall, args: tuple[str, ...], expected: str
) -> None:
    assert inv(db, "add", "Mug", "--price", "1", "--sku", "MUG", "--qty", "5").returncode == 0
    before = _audit_count(db)
    message = _refused(inv(db, "update", "MUG", *args), 1)
    assert expected in message
    assert _stock(inv, db, "MUG") == {"main": 5}
    assert _audit_count(db) == before
