"""Real PostgreSQL for tests: a template database with the schema, cloned per backend.

Isolation by namespace: every backend gets its own database, `CREATE DATABASE ...
TEMPLATE ... STRATEGY FILE_COPY` of one migrated once per test process (about 20 ms on
the run's private cluster in memory, see `pgcluster`), dropped afterwards.
The server is the local one (`INV_TEST_ADMIN_URL`, default
postgresql://postgres@127.0.0.1:5432/postgres).  When it is unreachable the tests skip,
except under CI=true, where they fail: CI must never pass without PostgreSQL.
"""

from __future__ import annotations

import atexit
import itertools
import os
import threading
import uuid

import psycopg
from services import unavailable

from backends.postgres import PostgresBackend

ADMIN_URL = os.environ.get("INV_TEST_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
_PREFIX = f"inv_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
_counter = itertools.count()
_template: str | None = None
_template_lock = threading.Lock()


def url_for(database: str) -> str:
    base, _, _ = ADMIN_URL.rpartition("/")
    return f"{base}/{database}"


def admin() -> psycopg.Connection:
    """An autocommit connection to the maintenance database; skips or fails if down."""
    try:
        return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL is not reachable at {ADMIN_URL}: {exc}")


def _drop(database: str) -> None:
    try:
        with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    except psycopg.Error:
        pass


def template() -> str:
    """The migrated template database, made on first use and dropped at exit."""
    global _template
    with _template_lock:
        return _make_template() if _template is None else _template


def _make_template() -> str:
    global _template
    if _template is None:
        name = f"{_PREFIX}_tpl"
        with admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        atexit.register(_drop, name)
        backend = PostgresBackend(url_for(name), actor="tester")
        backend.init()
        backend.close()
        _template = name
    return _template


def fresh_database() -> str:
    """A new database with the schema and store main; its URL.  Dropped at exit."""
    source = template()
    name = f"{_PREFIX}_{next(_counter)}"
    with admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{source}" STRATEGY FILE_COPY')
    atexit.register(_drop, name)
    return url_for(name)


def drop_database(url: str) -> None:
    _drop(url.rpartition("/")[2])


def fresh_backend(actor: str = "tester", source: str = "cli") -> PostgresBackend:
    return PostgresBackend(fresh_database(), actor=actor, source=source)
