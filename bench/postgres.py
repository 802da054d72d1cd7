"""The postgres backend (v2) against raw psycopg: import, seeding, a report, a list, an update.

Creates its own databases (`inv_bench_<random>` on --server, default
postgresql://postgres@127.0.0.1:5432) and drops them at the end, also on an error or
Ctrl-C.  Runs `inv --backend postgres ...` as real subprocesses with INV_DATABASE_URL
pointing at them, and measures:

1. import: `inv import` of a 100,000-row CSV (20,000 products x 5 stores, the same file
   as json_import.py) on a fresh `inv init`-ed database, rows/s, against
   - the hand-written set-based floor of the import, on another fresh `inv init`-ed
     database, through psycopg in one transaction: COPY the raw file into a temporary
     table of text columns, INSERT the missing stores, the products (with their keys),
     the stock rows (joined to the new ids) and the audit rows inv import writes (one
     per row and one per store created), COMMIT; checked to write what inv wrote;
   - a plain batched UPDATE of the imported rows by primary key in the real `inventory`
     table (psycopg `executemany`, 1,000 rows a call, pipelined, after a VACUUM);
   - as information, a plain `COPY ... FROM STDIN (FORMAT csv, HEADER)` of the file into
     an unindexed table, and the batched UPDATE on a bare table with a primary key only.
   Then the same file in this process on another fresh database, to show where the time
   goes: `PostgresBackend.import_file` and its statements when the backend has one (and
   it takes the file), else parse (`read_rows`) and `PostgresBackend.apply`, split into
   load, rules, write-back statements and the rest.
2. seeding: `inv seed` (10,000 stores x 500 products = 5,000,000 stock rows) on a fresh
   database, wall seconds.
3. `report value` over those rows: `PostgresBackend.report_value()` in process against
   the same aggregate written by hand through psycopg (median of 5 each, after a warm-up).
4. `list` of one store (500 rows) in process: median of 50 `list_items(store=...)` calls,
   against the same query by hand through psycopg (the backend's join and order, the
   store by its code, fetched as tuples; checked to return the same rows).
5. one `inv update P000001 --store store-00042 --change 1` process: median of 10, against
   `python -c pass` and a bare psycopg process doing one UPDATE; with the cold in-process
   `adjust` and the top modules of `python -X importtime`.

While a subprocess runs (import, seed), this process samples `pg_stat_activity` every
25 ms to show which statement the child's session was running (or that it was idle: the
child was in Python, or not connected yet).  Statements the backend ran that missed
their target are shown with EXPLAIN ANALYZE (always with --explain).

Always exits 0 unless the work itself fails (a child exits non-zero, rows are missing):
the timings are for reading, not for asserting.  No server at --server: a message, exit 0.

    .venv/bin/python bench/postgres.py [--rows 100000] [--stores 10000] [--products 500]
        [--skip-import] [--skip-seed] [--seeded-db NAME] [--skip-reads] [--skip-update]
        [--runs 10] [--no-vacuum] [--explain] [--keep-env]
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import os
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
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any
from unittest import mock

import psycopg
from common import HEADER, INV, PYTHON, UNUSUAL_ENV, write_csv
from psycopg import sql
from sqlalchemy import event
from sqlalchemy.engine import Engine

from backends.postgres import backend as backend_module
from backends.postgres import bulk, database
from backends.postgres.backend import PostgresBackend
from inventory_cli.files import FileFormat, read_rows

TARGET_IMPORT_FLOOR_RATIO = 0.7  # x the hand-written set-based floor's rows/s, at least
TARGET_IMPORT_UPDATE_RATIO = 0.3  # x a raw batched UPDATE of the imported rows, at least
OLD_IMPORT_RATE = 60_000  # rows/s: the old absolute target, printed as information
TARGET_SEED_SECONDS = 60.0  # at most
TARGET_REPORT_RATIO = 1.5  # x the raw SQL, at most
TARGET_LIST_RATIO = 2.5  # x the same query by hand, at most
TARGET_UPDATE_MS = 400.0  # at most

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432"
UPDATE_BATCH = 1_000


RAW_VALUE = """
SELECT s.code, v.products, v.units, v.value
FROM (SELECT i.store_id, count(*) AS products, sum(i.quantity) AS units,
             sum(i.quantity * p.price) AS value
      FROM inventory i JOIN products p ON p.id = i.product_id
      GROUP BY i.store_id) v
JOIN stores s ON s.id = v.store_id
"""

# `list --store S` as the backend writes it (backends/postgres/reads.py: products joined
# to the store's stock and the store, in the same order), in one statement.
RAW_LIST = """
SELECT p.sku, p.name, p.price, p.unit, p.category, p.reorder_level, s.code AS store,
       i.quantity
FROM products p JOIN inventory i ON i.product_id = p.id JOIN stores s ON s.id = i.store_id
WHERE s.code = %(code)s
ORDER BY p.sku_key, p.sku COLLATE "C", s.code COLLATE "C"
"""


# -- small helpers ---------------------------------------------------------------------


def verdict(ok: bool | None) -> str:
    """pass or MISS; None: a figure without a target (information)."""
    if ok is None:
        return "info"
    return "pass" if ok else "MISS"


def print_summary(figures: list[Figure], removed: list[str]) -> None:
    """The last lines of a bench: each figure against its target, and the environment."""
    if figures:
        print("summary:")
        for f in figures:
            raw = f"   ({f.raw})" if f.raw else ""
            target = f"target {f.target:16}" if f.target else f"{'':23}"
            print(f"  {f.what:36} {f.value:>12}  {target} {verdict(f.ok)}{raw}")
    if removed:
        print(f"environment: the children ran without {', '.join(removed)} (see --keep-env)")


def median_of(runs: int, work: Callable[[], object]) -> float:
    """Median seconds of `runs` calls of `work` (the caller warms up)."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def short_sql(statement: str, width: int = 64) -> str:
    flat = " ".join(statement.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


class Databases:
    """Creates `inv_bench_<random>` databases and drops every one of them at the end."""

    def __init__(self, server: str) -> None:
        self.server = server.rstrip("/")
        self.created: list[str] = []
        self.backends: list[PostgresBackend] = []

    def admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(f"{self.server}/postgres", autocommit=True, connect_timeout=5)

    def url(self, name: str) -> str:
        return f"{self.server}/{name}"

    def create(self) -> str:
        name = f"inv_bench_{secrets.token_hex(5)}"
        with self.admin() as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self.created.append(name)
        return name

    def copy(self, source: str) -> str:
        """A new database made from `source` as a template: the same rows, indexes,
        statistics and visibility map (nobody may be connected to `source`)."""
        name = f"inv_bench_{secrets.token_hex(5)}"
        with self.admin() as admin:
            admin.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(source)
                )
            )
        self.created.append(name)
        return name

    def backend(self, name: str, source: str = "cli") -> PostgresBackend:
        backend = PostgresBackend(self.url(name), actor="bench", source=source)
        self.backends.append(backend)
        return backend

    def drop_all(self) -> None:
        for backend in self.backends:
            backend.close()
        self.backends.clear()
        if not self.created:
            return
        dropped = []
        with self.admin() as admin:
            while self.created:
                name = self.created.pop()
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
                dropped.append(name)
        print(f"dropped {', '.join(reversed(dropped))}")


def environment_line(server: str) -> str:
    with psycopg.connect(f"{server}/postgres", connect_timeout=5) as connection:
        settings = dict(
            connection.execute(
                "SELECT name, setting || coalesce(unit, '') FROM pg_settings WHERE name IN "
                "('server_version', 'shared_buffers', 'work_mem', "
                "'max_parallel_workers_per_gather', 'synchronous_commit')"
            ).fetchall()
        )
        shared = connection.execute("SHOW shared_buffers").fetchone()
    return (
        f"environment: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        f"PostgreSQL {settings.get('server_version')}, "
        f"shared_buffers {shared[0] if shared else '?'}, work_mem {settings.get('work_mem')}, "
        f"parallel workers/gather {settings.get('max_parallel_workers_per_gather')}, "
        f"synchronous_commit {settings.get('synchronous_commit')}"
    )


# -- children --------------------------------------------------------------------------


@dataclass
class Children:
    """How to run `inv` against one of the bench databases."""

    databases: Databases
    keep_env: bool
    cwd: Path
    removed: list[str] = field(default_factory=list)

    def env(self, name: str) -> dict[str, str]:
        env = {}
        for key, value in os.environ.items():
            if key.startswith("INV_"):
                continue  # the bench says everything inv needs
            if key in UNUSUAL_ENV and not self.keep_env:
                if key not in self.removed:
                    self.removed.append(key)
                continue
            env[key] = value
        env["INV_DATABASE_URL"] = self.databases.url(name)
        return env

    def run(
        self, name: str, *args: str, prefix: Sequence[str] = ()
    ) -> subprocess.CompletedProcess[str]:
        command = [*prefix] if prefix else [str(INV)]
        return subprocess.run(
            [*command, "--backend", "postgres", *args],
            cwd=self.cwd,
            env=self.env(name),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
        )

    def check(self, name: str, *args: str) -> subprocess.CompletedProcess[str]:
        done = self.run(name, *args)
        if done.returncode != 0:
            raise BenchFailed(
                f"inv {' '.join(args)} exited {done.returncode}: {done.stderr.strip()[-2000:]}"
            )
        return done


class BenchFailed(Exception):
    """The work itself failed: exit 1."""


class ActivitySampler:
    """Samples what the client sessions on one database are doing, every `interval` s.

    A session running a statement counts for that statement (and its wait event, or CPU);
    one idle in a transaction means the child is in Python between statements; no session
    at all means the child is starting, parsing, or exiting.
    """

    NO_SESSION = "no session (child starting, parsing or exiting)"
    IDLE_TX = "idle in transaction (child in Python between statements)"
    IDLE = "idle, no transaction (child in Python)"

    def __init__(self, databases: Databases, name: str, interval: float = 0.025) -> None:
        self.databases = databases
        self.name = name
        self.interval = interval
        self.samples = 0
        self.states: Counter[str] = Counter()
        self.waits: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ActivitySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        query = (
            "SELECT state, wait_event_type, wait_event, query FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        )
        with self.databases.admin() as connection:
            while not self._stop.is_set():
                rows = connection.execute(query, (self.name,)).fetchall()
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

    def report(self, wall: float, top: int = 6) -> list[str]:
        if not self.samples:
            return ["  (no samples)"]
        lines = [
            f"  where the child's wall time went ({self.samples} samples of pg_stat_activity):"
        ]
        for label, count in self.states.most_common(top):
            share = count / self.samples
            lines.append(f"    {share:6.1%}  ~{share * wall:6.2f} s  {label}")
        active = sum(self.waits.values())
        if active:
            waits = ", ".join(
                f"{label} {count / active:.0%}" for label, count in self.waits.most_common(4)
            )
            lines.append(f"    while running a statement: {waits}")
        return lines


def timed_child(
    children: Children, name: str, *args: str
) -> tuple[subprocess.CompletedProcess[str], float, ActivitySampler]:
    sampler = ActivitySampler(children.databases, name)
    with sampler:
        start = time.perf_counter()
        done = children.run(name, *args)
        wall = time.perf_counter() - start
    return done, wall, sampler


def median_process_ms(command: Sequence[str], runs: int, cwd: Path, env: dict[str, str]) -> float:
    """Median wall of `runs` runs in ms, after one untimed warm-up; each must exit 0."""
    times = []
    for i in range(runs + 1):
        start = time.perf_counter()
        done = subprocess.run(
            command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True
        )
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            raise BenchFailed(
                f"{' '.join(command[:6])}... exited {done.returncode}: {done.stderr[-1000:]}"
            )
        if i:
            times.append(elapsed * 1000)
    return statistics.median(times)


# -- in-process profiling -------------------------------------------------------------


class Statements:
    """Times every statement run in this process while it is entered, and remembers each
    one with its parameters, attributed to the current phase.

    It wraps psycopg's `Cursor.execute`, `executemany` and `copy`, under SQLAlchemy's
    engine and under code that uses the driver's cursor directly alike (the backends
    move hot statements from one to the other).  A COPY is timed from its start to its
    end, the Python that makes and sends its rows included.  Only the code under test may
    run statements in this process meanwhile."""

    def __init__(self) -> None:
        self.phase = ["other"]
        self.seconds: dict[tuple[str, str], float] = defaultdict(float)
        self.calls: Counter[tuple[str, str]] = Counter()
        self.last: list[tuple[str, Any, float]] = []
        self._patches = contextlib.ExitStack()

    def __enter__(self) -> Statements:
        cursor = psycopg.Cursor
        for name, wrapper in (
            ("execute", self._execute),
            ("executemany", self._executemany),
            ("copy", self._copy),
        ):
            self._patches.enter_context(
                mock.patch.object(cursor, name, wrapper(getattr(cursor, name)))
            )
        return self

    def __exit__(self, *exc: object) -> None:
        self._patches.close()

    @staticmethod
    def _text(cursor: Any, query: Any) -> str:
        if isinstance(query, str):
            return query
        if isinstance(query, bytes):
            return query.decode(errors="replace")
        try:
            return str(query.as_string(cursor))
        except Exception:
            return str(query)

    def _execute(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def execute(cursor: Any, query: Any, params: Any = None, *args: Any, **kw: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(cursor, query, params, *args, **kw)
            finally:
                elapsed = time.perf_counter() - start
                statement = self._text(cursor, query)
                self.add(short_sql(statement), elapsed)
                self.last.append((statement, params, elapsed))

        return execute

    def _executemany(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def executemany(cursor: Any, query: Any, params_seq: Any, *args: Any, **kw: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(cursor, query, params_seq, *args, **kw)
            finally:
                label = "executemany " + short_sql(self._text(cursor, query), 52)
                self.add(label, time.perf_counter() - start)

        return executemany

    def _copy(self, original: Callable[..., Any]) -> Callable[..., Any]:
        @contextlib.contextmanager
        def copy(cursor: Any, statement: Any, *args: Any, **kw: Any) -> Iterator[Any]:
            start = time.perf_counter()
            try:
                with original(cursor, statement, *args, **kw) as copying:
                    yield copying
            finally:
                label = short_sql(self._text(cursor, statement), 40)
                self.add(f"{label} (rows made and sent by Python)", time.perf_counter() - start)

        return copy

    def add(self, label: str, seconds: float) -> None:
        key = (self.phase[-1], label)
        self.seconds[key] += seconds
        self.calls[key] += 1

    def wrap(self, name: str, function: Callable[..., Any], totals: dict[str, float]) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            self.phase.append(name)
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                totals[name] = totals.get(name, 0.0) + time.perf_counter() - start
                self.phase.pop()

        return wrapped

    def total(self, phase: str) -> float:
        return sum(seconds for (p, _), seconds in self.seconds.items() if p == phase)

    def in_phase(self, phase: str, top: int = 6) -> list[tuple[str, float, int]]:
        found = [
            (label, seconds, self.calls[(p, label)])
            for (p, label), seconds in self.seconds.items()
            if p == phase
        ]
        return sorted(found, key=lambda f: -f[1])[:top]


def explain(engine: Engine, statement: str, parameters: Any) -> list[str]:
    """EXPLAIN (ANALYZE, BUFFERS) of a statement the backend ran, with its parameters."""
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
        lines = [row[0] for row in cursor.fetchall()]
        raw.rollback()
    finally:
        raw.close()
    return lines


def explain_raw(url: str, statement: str, parameters: Any = None) -> list[str]:
    with psycopg.connect(url) as connection:
        rows = connection.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
        return [row[0] for row in rows]


def print_plan(title: str, lines: list[str]) -> None:
    print(f"    {title}:")
    for line in lines:
        print(f"      {line}")


# -- 1. import -------------------------------------------------------------------------


def bench_import(args: argparse.Namespace, children: Children, folder: Path) -> list[Figure]:
    databases = children.databases
    source = folder / "rows.csv"
    start = time.perf_counter()
    write_csv(source, args.rows, args.import_stores)
    generate = time.perf_counter() - start
    products = -(-args.rows // args.import_stores)
    data = source.read_bytes()

    name = databases.create()
    children.check(name, "init")
    done, wall, sampler = timed_child(children, name, "import", str(source))
    if done.returncode != 0:
        raise BenchFailed(f"inv import exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    written = import_counts(databases.url(name))
    if written["inventory"] != args.rows:
        raise BenchFailed(
            f"after inv import: {written['inventory']} stock rows, expected {args.rows}"
        )
    rate = args.rows / wall

    copy_rate, bare_rate = raw_limits(databases.url(name), source, args.rows, args.import_stores)
    update_rate = raw_update_imported(databases.url(name), args.rows)

    # The floor, on a fresh `inv init`-ed database of its own.
    floor: ImportFloor | None = None
    floor_problem = ""
    floor_db = databases.create()
    children.check(floor_db, "init")
    try:
        floor = import_floor(databases.url(floor_db), data)
        mismatch = {
            k: (v, written.get(k))
            for k, v in import_counts(floor.url).items()
            if written.get(k) != v
        }
        if mismatch:
            raise FloorFailed(
                "it wrote other rows than inv import: "
                + ", ".join(f"{k} {a:,} (inv {b:,})" for k, (a, b) in mismatch.items())
            )
    except (psycopg.Error, FloorFailed) as exc:
        floor, floor_problem = None, f"{type(exc).__name__}: {str(exc).strip()[:500]}"

    print(f"1. import: {args.rows:,} rows ({products:,} products x {args.import_stores} stores)")
    print(f"  CSV generated in {generate:.2f} s ({len(data) / 1e6:.1f} MB)")
    print(f"  summary: {done.stdout.strip()}")
    audit = ", ".join(
        f"{written[k]:,} {k[len('audit ') :]}" for k in sorted(written) if k.startswith("audit ")
    )
    print(
        f"  check  : {written['inventory']:,} stock rows, {written['products']:,} products, "
        f"{written['stores']} stores, audit entries: {audit}"
    )
    print(f"  inv import, wall           : {wall:6.2f} s  {rate:9,.0f} rows/s  (subprocess)")
    print(
        f"  raw: COPY FROM STDIN (csv) : {args.rows / copy_rate:6.2f} s  {copy_rate:9,.0f} rows/s"
        f"  -> inv is {copy_rate / rate:.1f}x slower  (into an unindexed table)"
    )
    print(
        f"  raw: batched UPDATE, bare  : {args.rows / bare_rate:6.2f} s  {bare_rate:9,.0f} rows/s"
        f"  (a table with a primary key only; information)"
    )
    print(
        f"  raw: batched UPDATE        : {args.rows / update_rate:6.2f} s  "
        f"{update_rate:9,.0f} rows/s  (the imported rows in inventory, by primary key, "
        f"executemany {UPDATE_BATCH:,} a call, one transaction, after a VACUUM)"
    )
    figures = [
        Figure(
            "import",
            f"inv import, {args.rows:,} rows",
            f"{rate:,.0f} rows/s",
            f"COPY {copy_rate:,.0f} rows/s ({copy_rate / rate:.1f}x); "
            f"bare-table UPDATE {bare_rate:,.0f} rows/s",
            "",
            None,
        )
    ]
    if floor is None:
        print(f"  set-based floor of the import: FAILED, no figure ({floor_problem})")
    else:
        ok_floor = rate / floor.rate >= TARGET_IMPORT_FLOOR_RATIO
        print(
            f"  set-based floor            : {floor.seconds:6.2f} s  {floor.rate:9,.0f} rows/s  "
            "(psycopg, one transaction, on a fresh inv init-ed database; same rows written)"
        )
        for label, seconds in floor.split.items():
            print(f"      {seconds:6.2f} s  {label}")
        print(
            f"  import / set-based floor   : {rate / floor.rate:6.3f}x  "
            f"(target: at least {TARGET_IMPORT_FLOOR_RATIO}x) -> {verdict(ok_floor)}"
        )
        figures.append(
            Figure(
                "import",
                "import / set-based floor",
                f"{rate / floor.rate:.3f}x",
                f"floor {floor.rate:,.0f} rows/s",
                f">= {TARGET_IMPORT_FLOOR_RATIO}x floor",
                ok_floor,
            )
        )
    ok_update = rate / update_rate >= TARGET_IMPORT_UPDATE_RATIO
    print(
        f"  import / raw UPDATE        : {rate / update_rate:6.3f}x  "
        f"(target: at least {TARGET_IMPORT_UPDATE_RATIO}x) -> {verdict(ok_update)}"
    )
    figures.append(
        Figure(
            "import",
            "import / raw batched UPDATE",
            f"{rate / update_rate:.3f}x",
            f"UPDATE {update_rate:,.0f} rows/s (the imported rows)",
            f">= {TARGET_IMPORT_UPDATE_RATIO}x raw",
            ok_update,
        )
    )
    if floor is not None:
        print(
            f"  floor / raw UPDATE         : {floor.rate / update_rate:6.3f}x  (information: what "
            "the import's inserts and audit rows cost against updating the same rows)"
        )
    print(
        f"  information: the old target, {OLD_IMPORT_RATE:,} rows/s "
        f"({args.rows / OLD_IMPORT_RATE:.2f} s) -> {verdict(rate >= OLD_IMPORT_RATE)}"
    )
    for line in sampler.report(wall):
        print(line)

    try:
        in_total = breakdown(args, databases, source, data)
    except BenchFailed:
        raise
    except Exception as exc:  # a wrapped function moved or changed: say so, go on
        print(f"  in process: the breakdown failed ({type(exc).__name__}: {exc}); skipped")
    else:
        rest = wall - in_total
        print(
            f"    rest of the subprocess                 : {rest:6.2f} s  "
            + (
                "(start-up, imports, exit)"
                if rest >= 0
                else "(negative: the same work ran slower here than in the child: other "
                "load on the machine)"
            )
        )
        if floor is not None:
            # The floor runs in a process already started, with its connection open: this
            # is the import on the same terms (its statements timed, which costs a little).
            print(
                f"  information: in process / set-based floor: {floor.seconds / in_total:6.3f}x  "
                "(the import without the process's start-up and exit, as the floor is timed)"
            )
    return figures


def import_counts(url: str) -> dict[str, int]:
    """What an import wrote: stock rows, products, stores, the stock total, and the
    audit entries of source `import` by action."""
    with psycopg.connect(url) as connection:
        counts = connection.execute(
            "SELECT (SELECT count(*) FROM inventory), (SELECT count(*) FROM products), "
            "(SELECT count(*) FROM stores), (SELECT coalesce(sum(quantity), 0) FROM inventory)"
        ).fetchone()
        actions = connection.execute(
            "SELECT action, count(*) FROM audit_log WHERE source = 'import' GROUP BY action"
        ).fetchall()
    assert counts is not None
    found = dict(zip(("inventory", "products", "stores", "units"), counts, strict=True))
    found.update({f"audit {action}": n for action, n in actions})
    return found


class FloorFailed(Exception):
    """A floor did not write what the product writes: its figure means nothing (the
    bench's own mistake, not the product's: reported, and the exit status unchanged)."""


@dataclass
class ImportFloor:
    url: str
    rows: int
    seconds: float
    split: dict[str, float]

    @property
    def rate(self) -> float:
        return self.rows / self.seconds


# The import's floor, statement by statement.  The keys are computed as `lower()`: for
# the ASCII values of the bench's file that is what `values.sku_key` and `text_key`
# (casefold, NFC) give; inv computes them in Python because other text needs more.
# Nothing is validated, nothing is looked up row by row: only the writes the schema
# needs for a file of new products on a fresh database.
FLOOR_TABLE = (
    "CREATE TEMP TABLE floor_rows (n bigint GENERATED ALWAYS AS IDENTITY, "
    + ", ".join(f"{column} text" for column in HEADER)
    + ") ON COMMIT DROP"
)
FLOOR_COPY = f"COPY floor_rows ({', '.join(HEADER)}) FROM STDIN (FORMAT csv, HEADER true)"
# A store's and a product's fields come from its first row.  The first rows are found by
# hash aggregates (`min(n) ... GROUP BY`): DISTINCT ON sorted 100,000 rows, and that sort
# spilled to disk with the default work_mem (0.2 s against 0.06 s for the stores here).
FLOOR_STORES = """
INSERT INTO stores (code, name)
SELECT r.store, r.store_name FROM floor_rows r
WHERE r.n IN (SELECT min(n) FROM floor_rows GROUP BY store)
  AND NOT EXISTS (SELECT FROM stores s WHERE s.code = r.store)
ORDER BY r.n
RETURNING code
"""
FLOOR_PRODUCTS = """
INSERT INTO products (sku, name, price, unit, category, reorder_level,
                      sku_key, name_key, category_key)
SELECT sku, name, price::numeric(12, 2), coalesce(unit, 'each'), category,
       coalesce(reorder_level::integer, 0), lower(sku), lower(name), lower(category)
FROM floor_rows WHERE n IN (SELECT min(n) FROM floor_rows GROUP BY lower(sku))
ORDER BY n
"""
FLOOR_STOCK = """
INSERT INTO inventory (store_id, product_id, quantity)
SELECT s.id, p.id, r.quantity::integer
FROM floor_rows r JOIN stores s ON s.code = r.store JOIN products p ON p.sku_key = lower(r.sku)
"""
# As inv import writes them: a store.create for each store the file creates (at its first
# row), then for each row a product.create (the row that creates the product) or a
# stock.set, with the quantity as delta and quantity_after; event ids `<batch>:<line>`,
# ids from audit_log_id_seq in row order.
FLOOR_AUDIT = """
INSERT INTO audit_log (at, actor, source, event_id, store, sku, action, delta,
                       quantity_after, reason, sku_key)
SELECT now(), %(actor)s, 'import', %(batch)s || ':' || (a.n + 1), a.store, a.sku, a.action,
       a.delta, a.delta, a.reason, lower(a.sku)
FROM (
    SELECT f.n, 0 AS k, f.store, NULL::text AS sku, 'store.create' AS action,
           NULL::integer AS delta, f.store_name AS reason
    FROM floor_rows f
    WHERE f.n IN (SELECT min(n) FROM floor_rows GROUP BY store)
      AND f.store = ANY(%(created)s)
    UNION ALL
    SELECT r.n, 1, r.store, r.sku,
           CASE WHEN r.n IN (SELECT min(n) FROM floor_rows GROUP BY lower(sku))
                THEN 'product.create' ELSE 'stock.set' END,
           r.quantity::integer, NULL
    FROM floor_rows r
) a
ORDER BY a.n, a.k
"""


def import_floor(url: str, data: bytes) -> ImportFloor:
    """The hand-written set-based floor of the import, in one transaction: COPY the raw
    file into a temporary table of text columns, insert the missing stores, the
    products (with their keys), the stock rows (joined to the new ids) and the audit
    rows inv import writes, COMMIT."""
    split: dict[str, float] = {}
    with psycopg.connect(url) as connection:
        connection.execute("SELECT 1").fetchone()  # connected, outside the clock
        connection.commit()
        start = last = time.perf_counter()

        def step(label: str) -> None:
            nonlocal last
            now = time.perf_counter()
            split[label] = split.get(label, 0.0) + now - last
            last = now

        connection.execute(FLOOR_TABLE)
        with connection.cursor() as cursor, cursor.copy(FLOOR_COPY) as copy:
            for offset in range(0, len(data), 1 << 20):
                copy.write(data[offset : offset + (1 << 20)])
        step("COPY the raw file into a temporary table")
        connection.execute("SELECT audit_log_partition(now())")
        created = [code for (code,) in connection.execute(FLOOR_STORES)]
        step("INSERT the missing stores")
        connection.execute(FLOOR_PRODUCTS)
        step("INSERT the products (each from its first row)")
        connection.execute(FLOOR_STOCK)
        step("INSERT the stock rows (joined to the new ids)")
        connection.execute(
            FLOOR_AUDIT, {"actor": "bench", "batch": str(uuid.uuid4()), "created": created}
        )
        step("INSERT ... SELECT the audit rows")
        connection.commit()
        step("COMMIT")
        seconds = time.perf_counter() - start
    rows = data.count(b"\n") - 1
    return ImportFloor(url, rows, seconds, split)


def raw_update_imported(url: str, rows: int) -> float:
    """rows/s of a plain batched UPDATE of the imported stock rows by primary key
    (`executemany`, UPDATE_BATCH rows a call, one transaction) on the real `inventory`
    table, after a VACUUM (ANALYZE): the same rows the import wrote, in file order."""
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("VACUUM (ANALYZE) inventory")
    with psycopg.connect(url) as connection:
        stock = connection.execute(
            "SELECT quantity + 1, store_id, product_id FROM inventory ORDER BY product_id, store_id"
        ).fetchall()
        before = connection.execute("SELECT sum(quantity) FROM inventory").fetchone()
        connection.commit()
        statement = "UPDATE inventory SET quantity = %s WHERE store_id = %s AND product_id = %s"
        start = time.perf_counter()
        with connection.cursor() as cursor:
            for first in range(0, len(stock), UPDATE_BATCH):
                cursor.executemany(statement, stock[first : first + UPDATE_BATCH])
        connection.commit()
        seconds = time.perf_counter() - start
        after = connection.execute("SELECT sum(quantity) FROM inventory").fetchone()
    if len(stock) != rows or before is None or after is None or after[0] - before[0] != rows:
        raise BenchFailed(f"raw UPDATE of the imported rows: {before} -> {after}, {len(stock)}")
    return rows / seconds


def breakdown(args: argparse.Namespace, databases: Databases, source: Path, data: bytes) -> float:
    """The same file imported in this process on a fresh database, to show where the
    time goes: through `PostgresBackend.import_file` when there is one (and it takes
    the file), else parse (`read_rows`) and `PostgresBackend.apply` split into phases.
    Returns the seconds of the whole."""
    import_file: Any = getattr(PostgresBackend, "import_file", None)
    if callable(import_file):
        name = databases.create()
        backend = databases.backend(name, source="import")
        backend.init()
        wanted = {"on_error": "reject-all", "default_store": "main"}
        try:
            accepted = set(inspect.signature(import_file).parameters)
        except (TypeError, ValueError):
            accepted = set()
        kwargs = {k: v for k, v in wanted.items() if k in accepted}
        with Statements() as statements:
            start = time.perf_counter()
            result = import_file(backend, data, FileFormat.csv, **kwargs)
            seconds = time.perf_counter() - start
        if result is not None:
            with psycopg.connect(databases.url(name)) as connection:
                stock = connection.execute("SELECT count(*) FROM inventory").fetchone()
            if stock is None or stock[0] != args.rows:
                raise BenchFailed(
                    f"in-process import_file wrote {stock} stock rows, not {args.rows}"
                )
            sql_total = statements.total("other")
            print("  in process (same file, fresh database): PostgresBackend.import_file")
            print(f"    import_file (parse, check, write, commit): {seconds:6.2f} s")
            print(f"      statements (execute, executemany, COPY): {sql_total:6.2f} s")
            for label, took, calls in statements.in_phase("other", 8):
                print(f"        {took:6.2f} s  {calls:>6,}x  {label}")
            print(f"      the rest: Python between statements  : {seconds - sql_total:6.2f} s")
            print(
                f"    total                                  : {seconds:6.2f} s  "
                f"({args.rows / seconds:,.0f} rows/s)"
            )
            return seconds
        print("  in process: import_file returned None (this file takes the Python path)")
    return python_breakdown(args, databases, source)


def python_breakdown(args: argparse.Namespace, databases: Databases, source: Path) -> float:
    """Parse (`read_rows`) and `PostgresBackend.apply` on a fresh database, split into
    load, rules, each write-back statement and COPY, and the Python in between.  Only the
    functions that are still there are wrapped."""
    inproc = databases.create()
    backend = databases.backend(inproc, source="import")
    backend.init()
    start = time.perf_counter()
    with source.open("rb") as f:
        rows, problems = read_rows(f, FileFormat.csv)
    parse = time.perf_counter() - start
    if problems:
        raise BenchFailed(f"in-process parse found {len(problems)} problems: {problems[:3]}")
    totals: dict[str, float] = {}
    with (
        Statements() as statements,
        contextlib.ExitStack() as patches,
    ):
        for module, attribute, phase in (
            (bulk, "load_state", "load"),
            (bulk, "write_back", "write"),
            (backend_module, "run_batch", "rules"),
            (bulk, "_renumber", "renumber"),
        ):
            function = getattr(module, attribute, None)
            if callable(function):
                patches.enter_context(
                    mock.patch.object(module, attribute, statements.wrap(phase, function, totals))
                )
        start = time.perf_counter()
        result = backend.apply(rows, on_error="reject-all")
        apply_total = time.perf_counter() - start
    if result.applied != args.rows:
        raise BenchFailed(f"in-process apply applied {result.applied} rows, not {args.rows}")

    load, rules, write = totals.get("load", 0.0), totals.get("rules", 0.0), totals.get("write", 0.0)
    rest = apply_total - load - rules - write
    in_total = parse + apply_total
    print("  in process (same rows, fresh database):")
    print(f"    parse  read_rows                       : {parse:6.2f} s")
    print(f"    apply  PostgresBackend.apply           : {apply_total:6.2f} s")
    print(f"      load  (lock and read what it names)  : {load:6.2f} s")
    for label, seconds, calls in statements.in_phase("load", 4):
        print(f"        {seconds:6.2f} s  {calls:>6,}x  {label}")
    print(f"        {load - statements.total('load'):6.2f} s          Python: building the State")
    print(f"      rules (backends.engine.run_batch)    : {rules:6.2f} s")
    print(f"      write back (COPY + set-based SQL)    : {write:6.2f} s")
    for label, seconds, calls in statements.in_phase("write", 8):
        print(f"        {seconds:6.2f} s  {calls:>6,}x  {label}")
    renumber = totals.get("renumber", 0.0)
    renumber_sql = statements.total("renumber")
    print(
        f"        {renumber:6.2f} s          _renumber: audit ids (SQL {renumber_sql:.2f} s, "
        f"Python dataclasses.replace {renumber - renumber_sql:.2f} s)"
    )
    python = write - statements.total("write") - renumber
    print(f"        {python:6.2f} s          Python: diffing the State, building rows")
    print(f"      connect, schema check, COMMIT, rest  : {rest:6.2f} s")
    print(
        f"    total                                  : {in_total:6.2f} s  "
        f"({args.rows / in_total:,.0f} rows/s)"
    )
    if args.explain:
        for title, plan in explain_write_back(databases, rows):
            print_plan(f"EXPLAIN ANALYZE, {title} (same rows, another fresh database)", plan)
    return in_total


def explain_write_back(databases: Databases, rows: Sequence[Any]) -> list[tuple[str, list[str]]]:
    """Apply `rows` on a fresh database with the write-back statements that return no
    rows (the stock upsert, the product update) run as EXPLAIN (ANALYZE, BUFFERS): it
    executes them all the same, and shows index and foreign-key trigger time."""
    name = databases.create()
    backend = databases.backend(name, source="import")
    backend.init()
    engine = database._engine(backend.url)
    plans: list[tuple[str, list[str]]] = []

    def before(conn: Any, cursor: Any, statement: str, parameters: Any, *rest: Any) -> Any:
        if statement.startswith(("INSERT INTO inventory", "UPDATE products")) and (
            "RETURNING" not in statement
        ):
            conn.info["bench_explain"] = short_sql(statement, 40)
            return "EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters
        return statement, parameters

    def after(conn: Any, cursor: Any, *rest: Any) -> None:
        title = conn.info.pop("bench_explain", None)
        if title is not None:
            plans.append((title, [row[0] for row in cursor.fetchall()]))

    event.listen(engine, "before_cursor_execute", before, retval=True)
    event.listen(engine, "after_cursor_execute", after)
    try:
        backend.apply(rows, on_error="reject-all")
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)
    return plans


def raw_limits(url: str, source: str | Path, rows: int, stores: int) -> tuple[float, float]:
    """rows/s of a plain COPY of the file (median of 3) and of a plain batched UPDATE."""
    data = Path(source).read_bytes()
    copy_times = []
    with psycopg.connect(url) as connection:
        for _ in range(3):
            connection.execute("DROP TABLE IF EXISTS plain_import")
            connection.execute(
                "CREATE TABLE plain_import (sku text, name text, price numeric(12,2), unit text, "
                "category text, reorder_level integer, store text, store_name text, "
                "quantity integer)"
            )
            connection.commit()
            start = time.perf_counter()
            with (
                connection.cursor() as cursor,
                cursor.copy("COPY plain_import FROM STDIN (FORMAT csv, HEADER)") as copy,
            ):
                for offset in range(0, len(data), 1 << 20):
                    copy.write(data[offset : offset + (1 << 20)])
            connection.commit()
            copy_times.append(time.perf_counter() - start)
            loaded = connection.execute("SELECT count(*) FROM plain_import").fetchone()
            if loaded is None or loaded[0] != rows:
                raise BenchFailed(f"raw COPY loaded {loaded} rows, expected {rows}")
        connection.execute("DROP TABLE plain_import")

        connection.execute(
            "CREATE TABLE plain_stock (store_id integer, product_id bigint, quantity integer, "
            "PRIMARY KEY (store_id, product_id))"
        )
        connection.execute(
            "INSERT INTO plain_stock SELECT g %% %s, g / %s, 0 FROM generate_series(0, %s) g",
            (stores, stores, rows - 1),
        )
        connection.execute("ANALYZE plain_stock")
        connection.commit()
        statement = "UPDATE plain_stock SET quantity = %s WHERE store_id = %s AND product_id = %s"
        start = time.perf_counter()
        with connection.cursor() as cursor:
            for first in range(0, rows, UPDATE_BATCH):
                batch = range(first, min(rows, first + UPDATE_BATCH))
                cursor.executemany(
                    statement, [(1 + g * 13 % 200, g % stores, g // stores) for g in batch]
                )
        connection.commit()
        update_seconds = time.perf_counter() - start
        done = connection.execute("SELECT count(*) FROM plain_stock WHERE quantity > 0").fetchone()
        updated = done[0] if done else 0
        connection.execute("DROP TABLE plain_stock")
        connection.commit()
    if updated != rows:
        raise BenchFailed(f"raw UPDATE touched {updated} rows, expected {rows}")
    return rows / statistics.median(copy_times), rows / update_seconds


# -- 2. seeding ------------------------------------------------------------------------


def bench_seed(args: argparse.Namespace, children: Children) -> tuple[str, list[Figure]]:
    databases = children.databases
    name = databases.create()
    children.check(name, "init")
    done, wall, sampler = timed_child(
        children,
        name,
        "seed",
        "--stores",
        str(args.stores),
        "--products",
        str(args.products),
    )
    if done.returncode != 0:
        raise BenchFailed(f"inv seed exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    with psycopg.connect(databases.url(name)) as connection:
        counts = connection.execute(
            "SELECT (SELECT count(*) FROM inventory), (SELECT count(*) FROM audit_log), "
            "pg_database_size(current_database())"
        ).fetchone()
    assert counts is not None
    expected = args.stores * args.products
    if counts[0] != expected:
        raise BenchFailed(f"after inv seed: {counts[0]} stock rows, expected {expected}")
    print(f"2. seeding: {args.stores:,} stores x {args.products:,} products")
    print(f"  summary: {done.stdout.strip()}")
    print(
        f"  check  : {counts[0]:,} stock rows, {counts[1]:,} audit entries, "
        f"database {counts[2] / 1e9:.2f} GB"
    )
    ok = wall <= TARGET_SEED_SECONDS
    print(
        f"  inv seed, wall : {wall:6.1f} s  ({expected / wall:,.0f} stock rows/s, each with its "
        f"audit entry)"
    )
    print(f"  target: at most {TARGET_SEED_SECONDS:g} s  -> {verdict(ok)}")
    for line in sampler.report(wall):
        print(line)
    if not args.no_vacuum:
        start = time.perf_counter()
        with psycopg.connect(databases.url(name), autocommit=True) as connection:
            connection.execute("VACUUM (ANALYZE) stores, products, inventory")
        print(
            "  then VACUUM (ANALYZE) stores, products, inventory: "
            f"{time.perf_counter() - start:.1f} s"
            " (not in the figure; what autovacuum does within minutes; --no-vacuum skips it)"
        )
    figure = Figure(
        "seed",
        f"inv seed, {expected:,} stock rows",
        f"{wall:.1f} s",
        "",
        f"<= {TARGET_SEED_SECONDS:g} s",
        ok,
    )
    return name, [figure]


def pick_store(url: str, n: int) -> str:
    """`store-000NN`, or the last seeded store when there are fewer than `n`."""
    with psycopg.connect(url) as connection:
        row = connection.execute(
            "SELECT code FROM stores WHERE code LIKE 'store-%%' AND code <= %s "
            "ORDER BY code DESC LIMIT 1",
            (f"store-{n:05d}",),
        ).fetchone()
    if row is None:
        raise BenchFailed("the seeded database has no store-NNNNN stores")
    return str(row[0])


# -- 3. and 4. reads -------------------------------------------------------------------


def bench_reads(args: argparse.Namespace, databases: Databases, name: str) -> list[Figure]:
    url = databases.url(name)
    backend = databases.backend(name)
    engine = database._engine(url)
    figures = []
    with psycopg.connect(url) as connection:
        stock_rows = connection.execute("SELECT count(*) FROM inventory").fetchone()
    assert stock_rows is not None
    store = pick_store(url, 42)

    # 3. report value
    backend.report_value()  # warm-up
    with Statements() as statements:
        ours = median_of(args.report_runs, backend.report_value)
        values = backend.report_value()
    with psycopg.connect(url) as connection:
        connection.execute(RAW_VALUE).fetchall()  # warm-up
        raw = median_of(args.report_runs, lambda: connection.execute(RAW_VALUE).fetchall())
        raw_rows = connection.execute(RAW_VALUE).fetchall()
    raw_total = sum(r[3] for r in raw_rows)
    our_total = sum(v.value for v in values)
    if abs(raw_total - our_total) > len(raw_rows) * 0.005 + 0.01:
        raise BenchFailed(f"report value total {our_total} differs from the raw SQL's {raw_total}")
    ratio = ours / raw
    ok = ratio <= TARGET_REPORT_RATIO
    print(f"3. report value over {stock_rows[0]:,} stock rows, {len(values):,} stores")
    print(
        f"  PostgresBackend.report_value() : {ours * 1000:8.1f} ms  (median of {args.report_runs})"
    )
    if statements.last:
        sql_median = statistics.median(s[2] for s in statements.last[: args.report_runs])
        print(f"    of which its SQL statement   : {sql_median * 1000:8.1f} ms  (median)")
    print(
        f"  raw SQL through psycopg        : {raw * 1000:8.1f} ms  "
        "(sum(quantity * price) by store_id)"
    )
    print(
        f"  ratio                          : {ratio:8.2f}x  "
        f"(target: at most {TARGET_REPORT_RATIO}x) -> {verdict(ok)}"
    )
    if args.explain or not ok:
        if statements.last:
            slowest = max(statements.last, key=lambda s: s[2])
            print_plan(
                "EXPLAIN ANALYZE, the backend's statement", explain(engine, slowest[0], slowest[1])
            )
        print_plan("EXPLAIN ANALYZE, the raw SQL", explain_raw(url, RAW_VALUE))
    figures.append(
        Figure(
            "report",
            "report value (in process)",
            f"{ours * 1000:.0f} ms",
            f"raw SQL {raw * 1000:.0f} ms ({ratio:.2f}x)",
            f"<= {TARGET_REPORT_RATIO}x raw",
            ok,
        )
    )

    # 4. list of one store
    items = backend.list_items(store=store)  # warm-up
    with Statements() as statements:
        ours = median_of(args.list_runs, lambda: backend.list_items(store=store))
    sql_per_call = sum(s[2] for s in statements.last) / args.list_runs
    per_statement = Counter[str]()
    for statement, _, seconds in statements.last:
        per_statement[short_sql(statement, 56)] += seconds
    with psycopg.connect(url) as connection:
        hand = connection.execute(RAW_LIST, {"code": store}).fetchall()  # warm-up
        raw = median_of(
            args.list_runs, lambda: connection.execute(RAW_LIST, {"code": store}).fetchall()
        )
    ours_rows = [(i.sku, i.store, i.quantity) for i in items]
    same = ours_rows == [(r[0], r[6], r[7]) for r in hand]
    ratio = ours / raw
    ok = ratio <= TARGET_LIST_RATIO
    print(f"4. list --store {store}: {len(items):,} rows, in process")
    print(f"  PostgresBackend.list_items     : {ours * 1000:8.2f} ms  (median of {args.list_runs})")
    print(f"    of which SQL statements      : {sql_per_call * 1000:8.2f} ms a call (mean):")
    for label, seconds in per_statement.most_common(4):
        print(f"      {seconds / args.list_runs * 1000:6.2f} ms  {label}")
    print(
        f"  the same query by hand         : {raw * 1000:8.2f} ms  (psycopg, tuples: products "
        "JOIN inventory JOIN stores WHERE code = S, the backend's order)"
    )
    if not same:
        print(
            f"    NOTE: its rows differ from list_items' ({len(hand)} against {len(items)}, or "
            "in another order): the backend's query has changed, RAW_LIST should follow it"
        )
    print(
        f"  ratio                          : {ratio:8.2f}x  "
        f"(target: at most {TARGET_LIST_RATIO}x) -> {verdict(ok)}"
    )
    print(f"  information: at most 5 ms (the old target) -> {verdict(ours * 1000 <= 5.0)}")
    if args.explain or not ok:
        if statements.last:
            query = max(statements.last, key=lambda s: s[2])
            print_plan(
                "EXPLAIN ANALYZE, the backend's slowest statement",
                explain(engine, query[0], query[1]),
            )
        print_plan("EXPLAIN ANALYZE, by hand", explain_raw(url, RAW_LIST, {"code": store}))
    figures.append(
        Figure(
            "list",
            f"list --store ({len(items)} rows) / by hand",
            f"{ratio:.2f}x",
            f"list_items {ours * 1000:.2f} ms, by hand {raw * 1000:.2f} ms",
            f"<= {TARGET_LIST_RATIO}x",
            ok,
        )
    )
    backend.close()
    return figures


# -- 5. one update process -------------------------------------------------------------


def importtime_top(children: Children, name: str, args: Sequence[str], top: int = 8) -> list[str]:
    done = children.run(
        name, *args, prefix=[str(PYTHON), "-X", "importtime", "-m", "inventory_cli"]
    )
    if done.returncode != 0:
        raise BenchFailed(
            f"python -X importtime ... exited {done.returncode}: {done.stderr[-1000:]}"
        )
    found = []
    total = 0
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)", line)
        if match is None:
            continue
        cumulative, depth, module = int(match[2]), len(match[3]) // 2, match[4]
        found.append((cumulative, depth, module))
        if depth == 0:
            total += cumulative
    lines = [
        f"  python -X importtime, top {top} cumulative at depth 0-1 "
        f"(all imports: {total / 1000:.0f} ms, importtime's own overhead included):"
    ]
    shallow = [f for f in found if f[1] <= 1]
    for cumulative, depth, module in sorted(shallow, reverse=True)[:top]:
        lines.append(f"    {cumulative / 1000:7.1f} ms  {'  ' * depth}{module}")
    return lines


def bench_update(
    args: argparse.Namespace, children: Children, name: str, sku: str, store: str
) -> list[Figure]:
    databases = children.databases
    command = ["update", sku, "--store", store, "--change", "1"]
    env = children.env(name)
    ours = median_process_ms(
        [str(INV), "--backend", "postgres", *command], args.runs, children.cwd, env
    )
    bare = median_process_ms([str(PYTHON), "-c", "pass"], args.runs, children.cwd, env)
    raw_code = (
        "import psycopg, sys\n"
        "with psycopg.connect(sys.argv[1]) as c:\n"
        '    c.execute("UPDATE inventory SET quantity = quantity + 1 WHERE store_id = '
        "(SELECT id FROM stores WHERE code = %s) AND product_id = (SELECT id FROM products "
        'WHERE sku_key = lower(%s)) RETURNING quantity", '
        "(sys.argv[2], sys.argv[3])).fetchone()\n"
    )
    raw = median_process_ms(
        [str(PYTHON), "-c", raw_code, databases.url(name), store, sku], args.runs, children.cwd, env
    )

    # In process: a cold backend each time (connect, schema check, one movement).
    cold = []
    for i in range(args.runs + 1):
        backend = PostgresBackend(databases.url(name), actor="bench")
        start = time.perf_counter()
        backend.adjust(store, sku, 1)
        elapsed = time.perf_counter() - start
        backend.close()
        if i:
            cold.append(elapsed * 1000)
    backend = databases.backend(name)
    backend.adjust(store, sku, 1)
    warm = median_of(args.runs, lambda: backend.adjust(store, sku, 1)) * 1000
    backend.close()
    importtime = importtime_top(children, name, ["update", *command[1:]])

    ok = ours <= TARGET_UPDATE_MS
    print(f"5. one process: inv --backend postgres {' '.join(command)}, median of {args.runs}")
    print(f"  inv update                     : {ours:8.1f} ms")
    print(f"  python -c pass                 : {bare:8.1f} ms  -> ratio {ours / bare:.1f}x")
    print(f"  python + psycopg, one UPDATE   : {raw:8.1f} ms  -> ratio {ours / raw:.1f}x")
    print(
        f"  in process, cold (connect, schema check, movement): {statistics.median(cold):6.1f} ms"
    )
    print(f"  in process, warm (pooled connection)             : {warm:6.1f} ms")
    print(f"  target: at most {TARGET_UPDATE_MS:g} ms -> {verdict(ok)}")
    for line in importtime:
        print(line)
    return [
        Figure(
            "update",
            "inv update, one process",
            f"{ours:.0f} ms",
            f"python -c pass {bare:.0f} ms ({ours / bare:.1f}x); psycopg UPDATE {raw:.0f} ms "
            f"({ours / raw:.1f}x)",
            f"<= {TARGET_UPDATE_MS:g} ms",
            ok,
        )
    ]


# -- main ------------------------------------------------------------------------------


@dataclass
class Figure:
    part: str
    what: str
    value: str
    raw: str
    target: str  # empty: information, no target
    ok: bool | None


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--server", default=DEFAULT_SERVER, help=f"PostgreSQL (default {DEFAULT_SERVER})"
    )
    parser.add_argument("--rows", type=int, default=100_000, help="import rows (default 100000)")
    parser.add_argument(
        "--import-stores", type=int, default=5, help="stores in the import file (default 5)"
    )
    parser.add_argument("--stores", type=int, default=10_000, help="seed: stores (default 10000)")
    parser.add_argument("--products", type=int, default=500, help="seed: products (default 500)")
    parser.add_argument("--runs", type=int, default=10, help="update processes timed (default 10)")
    parser.add_argument("--report-runs", type=int, default=5, help="report value calls (default 5)")
    parser.add_argument("--list-runs", type=int, default=50, help="list calls (default 50)")
    parser.add_argument("--skip-import", action="store_true", help="skip part 1")
    parser.add_argument(
        "--skip-seed", action="store_true", help="skip part 2, and 3-5 unless --seeded-db"
    )
    parser.add_argument(
        "--seeded-db", metavar="NAME", help="run 3-5 on this seeded database (kept)"
    )
    parser.add_argument("--skip-reads", action="store_true", help="skip parts 3 and 4")
    parser.add_argument("--skip-update", action="store_true", help="skip part 5")
    parser.add_argument("--no-vacuum", action="store_true", help="no VACUUM ANALYZE after seeding")
    parser.add_argument(
        "--explain",
        action="store_true",
        help="EXPLAIN ANALYZE the reads always, and the import's write-back (Python path)",
    )
    parser.add_argument(
        "--keep-env",
        action="store_true",
        help=f"run the children with {' and '.join(UNUSUAL_ENV)} if set (default: unset them)",
    )
    args = parser.parse_args(argv)
    if min(args.rows, args.import_stores, args.stores, args.products, args.runs) < 1:
        parser.error("--rows, --import-stores, --stores, --products and --runs must be at least 1")
    if not INV.exists():
        print(f"no inv next to {PYTHON}: install the project in this venv first")
        return 0
    try:
        print(environment_line(args.server))
    except psycopg.Error as exc:
        print(f"skipped: cannot reach PostgreSQL at {args.server}: {str(exc).strip()}")
        return 0

    signal.signal(signal.SIGTERM, _interrupt)
    databases = Databases(args.server)
    figures: list[Figure] = []
    children = Children(databases, args.keep_env, Path("."))
    try:
        with tempfile.TemporaryDirectory(prefix="inv-bench-") as tmp:
            children.cwd = Path(tmp)
            if not args.skip_import:
                figures += bench_import(args, children, Path(tmp))
                databases.drop_all()  # free the disk before seeding
            seeded = args.seeded_db
            if not args.skip_seed and seeded is None:
                seeded, found = bench_seed(args, children)
                figures += found
            if seeded is not None:
                if not args.skip_reads:
                    figures += bench_reads(args, databases, seeded)
                if not args.skip_update:
                    store = pick_store(databases.url(seeded), 42)
                    figures += bench_update(args, children, seeded, "P000001", store)
    except BenchFailed as exc:
        print(f"failed: {exc}")
        return 1
    except KeyboardInterrupt:
        print("interrupted: dropping the bench databases")
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        databases.drop_all()
    print_summary(figures, children.removed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
