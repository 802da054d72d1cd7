"""PostgreSQL errors become the contract's by class, never by a catch-all: a database that
is not inv's, a damaged schema, a bad URL or TLS setting are configuration (78), a value
the database refuses is refused (1), and only a server that cannot be reached is 75.

Every case is made on the real server; the CLI runs in process."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import psycopg
import pytest
from pg import admin, drop_database, fresh_database, url_for
from sqlalchemy import text
from typer.testing import CliRunner, Result

from backends import BackendUnavailable, ConfigurationError, Conflict, ValidationError
from backends.postgres import PostgresBackend
from backends.postgres.database import Collision, check_url, translate
from inventory_cli.cli import app

Run = Callable[..., Result]


@pytest.fixture
def database() -> Iterator[str]:
    url = fresh_database()
    yield url
    drop_database(url)


@pytest.fixture
def empty_database() -> Iterator[str]:
    name = f"inv_errors_{os.getpid()}_{os.urandom(3).hex()}"
    with admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield url_for(name)
    drop_database(url_for(name))


def run(url: str, *args: str) -> Result:
    return CliRunner().invoke(app, ["--backend", "postgres", *args], env={"INV_DATABASE_URL": url})


def one_error(result: Result, code: int, *needles: str) -> None:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def sql(url: str, statement: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement)


def test_init_refuses_a_database_with_someone_elses_products_table(empty_database: str) -> None:
    sql(empty_database, "CREATE TABLE products (id int, label text)")
    one_error(run(empty_database, "init"), 78, "tables inv did not create (products)")
    with psycopg.connect(empty_database) as conn:
        assert conn.execute("SELECT to_regclass('stores')").fetchone() == (None,)


def test_a_missing_table_is_a_damaged_schema(database: str) -> None:
    assert run(database, "add", "Mug", "--price", "1", "--sku", "MUG").exit_code == 0
    sql(database, "DROP TABLE inventory CASCADE")
    one_error(run(database, "list"), 78, 'relation "inventory" does not exist')
    one_error(run(database, "update", "MUG", "--change", "1"), 78, "schema")


@pytest.mark.parametrize("command", [("list",), ("init",), ("db", "upgrade")])
def test_an_unknown_alembic_version_is_refused(database: str, command: tuple[str, ...]) -> None:
    sql(database, "UPDATE alembic_version SET version_num = 'zz99'")
    one_error(run(database, *command), 78, "zz99")


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("postgresql://[::1", "not a database URL"),
        ("postgresql://127.0.0.1:99999/db", "port 99999 is out of range"),
        ("postgresql://127.0.0.1:5432/db?frobnicate=1", "frobnicate"),
        ("mysql://127.0.0.1/db", "must start with postgresql://"),
        ("postgresql://127.0.0.1:5432", "names no database"),
        ("postgresql://127.0.0.1:port/db", "not a database URL"),
    ],
)
def test_a_malformed_database_url_is_a_configuration_error(url: str, needle: str) -> None:
    one_error(run(url, "list"), 78, needle)
    with pytest.raises(ConfigurationError, match=needle):
        check_url(url)


def test_a_tls_mismatch_is_a_configuration_error(database: str) -> None:
    one_error(run(database + "?sslmode=require", "list"), 78, "SSL")


def test_a_wrong_database_name_is_a_configuration_error(database: str) -> None:
    one_error(run(database + "_missing", "list"), 78, "does not exist")


def test_only_an_unreachable_server_is_worth_a_retry() -> None:
    result = run("postgresql://postgres@127.0.0.1:1/inventory", "list")
    one_error(result, 75, "cannot reach PostgreSQL at 127.0.0.1:1")


def test_a_non_utf8_argument_is_refused_before_the_database_sees_it(database: str) -> None:
    one_error(run(database, "show", "MUG\udcff"), 1, "sku: is not valid UTF-8")
    one_error(run(database, "add", "Mug\udcff", "--price", "1"), 1, "name: is not valid UTF-8")


def test_driver_errors_are_sorted_by_class(database: str) -> None:
    backend = PostgresBackend(database)
    with backend.db.connect() as connection:
        for statement, expected, retryable in [
            ("SELECT 1 / 0", ValidationError, False),
            ("SELECT CAST('x' AS integer)", ValidationError, False),
            ("INSERT INTO stores (code, name) VALUES ('Bad Code', 'x')", Conflict, False),
            ("INSERT INTO stores (code, name) VALUES ('main', 'again')", Collision, True),
        ]:
            try:
                with connection.begin():
                    connection.execute(text(statement))
            except Exception as exc:  # the driver's, as SQLAlchemy wraps it
                error = translate(exc, database)
                assert isinstance(error, expected), (statement, error)
                assert error.retryable is retryable
            else:
                pytest.fail(f"{statement} did not fail")
    backend.close()


def test_a_server_that_goes_away_is_retryable(database: str) -> None:
    backend = PostgresBackend(database)
    with backend.db.connect() as connection:
        pid = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with psycopg.connect(database, autocommit=True) as killer:
            killer.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(Exception) as raised:
            connection.execute(text("SELECT 1"))
    error = translate(raised.value, database)
    assert isinstance(error, BackendUnavailable) and error.retryable
    backend.close()
