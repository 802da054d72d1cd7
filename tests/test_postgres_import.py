"""`inv import` on PostgreSQL: a clean CSV file is applied in the database
(`backends.postgres.fileimport`), exactly as parsing it in Python and `apply` would apply
it; any other file is left to them and reported as before.

The differential test imports the same generated files twice, on two fresh databases
holding the same data: once as `inv import` does it (the database takes the file when
it can), once with `import_file` forced to decline (the Python path), and compares what
each printed, the result, the end state, the history and the idempotency keys.
"""

from __future__ import annotations

import csv
import io
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import psycopg
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from inprocess import run_cli
from pg import admin, drop_database, fresh_database
from services import delete_keys, redis_or_skip
from strategies import examples

from backends import BatchResult, BatchRow, Movement, values
from backends.batch import COLUMNS
from backends.postgres import PostgresBackend

#: A generated id in an entry's event id (`<uuid>`, a batch's `<uuid>:<row>`).
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


# -- running `inv import` both ways ------------------------------------------------------


class Imports:
    """What `PostgresBackend.import_file` and `apply` returned during a block."""

    def __init__(self) -> None:
        self.taken: list[BatchResult] = []  # import_file applied the file
        self.declined = 0  # import_file returned None
        self.applied: list[BatchResult] = []  # apply, after parsing in Python


@contextmanager
def watching(*, fast: bool = True) -> Iterator[Imports]:
    """Record what the backend's import paths return; `fast=False`: `import_file`
    declines every file, as a backend without a fast path does."""
    seen = Imports()
    real_import, real_apply = PostgresBackend.import_file, PostgresBackend.apply

    def import_file(self: PostgresBackend, *args: Any, **kwargs: Any) -> BatchResult | None:
        result = real_import(self, *args, **kwargs) if fast else None
        if result is None:
            seen.declined += 1
        else:
            seen.taken.append(result)
        return result

    def apply(self: PostgresBackend, *args: Any, **kwargs: Any) -> BatchResult:
        result = real_apply(self, *args, **kwargs)
        seen.applied.append(result)
        return result

    with (
        mock.patch.object(PostgresBackend, "import_file", import_file),
        mock.patch.object(PostgresBackend, "apply", apply),
    ):
        yield seen


def inv_import(url: str, source: str, *options: str, stdin: bytes | None = None) -> tuple[Any, ...]:
    done = run_cli(
        ["--backend", "postgres", "import", source, *options],
        env={"INV_DATABASE_URL": url, "INV_ACTOR": "tester"},
        input=stdin,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout, done.stderr


@pytest.fixture
def databases() -> Iterator[Callable[[], str]]:
    made: list[str] = []

    def make() -> str:
        made.append(fresh_database())
        return made[-1]

    yield make
    for url in made:
        drop_database(url)


# -- what a database holds ---------------------------------------------------------------


def entry(m: Movement) -> tuple[Any, ...]:
    """An audit entry without its id and time, its batch's generated id hidden."""
    return (
        m.actor,
        m.source,
        UUID.sub("<uuid>", m.event_id),
        m.store,
        m.sku,
        m.action,
        m.delta,
        m.quantity_after,
        m.reason,
    )


def outcome(result: BatchResult) -> tuple[Any, ...]:
    return (
        result.rows,
        result.applied,
        result.unchanged,
        result.duplicates,
        result.dry_run,
        [(p.row, p.column, p.reason) for p in result.problems],
        [entry(m) for m in result.changes],
    )


def state(url: str) -> dict[str, Any]:
    """Stores, products with their keys, stock, history in order, idempotency keys."""
    with psycopg.connect(url) as conn:
        return {
            "stores": conn.execute("SELECT code, name FROM stores ORDER BY code").fetchall(),
            "products": conn.execute(
                "SELECT sku, name, price, unit, category, reorder_level, sku_key, name_key, "
                "category_key FROM products ORDER BY sku_key"
            ).fetchall(),
            "stock": conn.execute(
                "SELECT s.code, p.sku, i.quantity FROM inventory i "
                "JOIN stores s ON s.id = i.store_id JOIN products p ON p.id = i.product_id "
                "ORDER BY s.code, p.sku_key"
            ).fetchall(),
            "history": [
                (row[0], row[1], UUID.sub("<uuid>", row[2]), *row[3:])
                for row in conn.execute(
                    "SELECT actor, source, event_id, store, sku, sku_key, action, delta, "
                    "quantity_after, reason FROM audit_log ORDER BY id"
                )
            ],
            "keys": conn.execute(
                "SELECT event_id, fingerprint FROM applied_events ORDER BY event_id"
            ).fetchall(),
        }


def audit_ids(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT id FROM audit_log ORDER BY id")]


def write_csv(path: Path, rows: list[dict[str, str]], columns: list[str], **style: Any) -> bytes:
    """`rows` as CSV text with `columns`, in a style: `bom`, `crlf`, `blank` (a blank line
    after the first row), `end` (a line end after the last row)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n" if style.get("crlf") else "\n")
    writer.writerow(columns)
    for i, row in enumerate(rows):
        writer.writerow([row.get(c, "") for c in columns])
        if i == 0 and style.get("blank"):
            out.write("\r\n" if style.get("crlf") else "\n")
    text = out.getvalue()
    if not style.get("end", True):
        text = text.rstrip("\r\n")
    data = ("\ufeff" if style.get("bom") else "").encode() + text.encode()
    path.write_bytes(data)
    return data


# -- the differential test ---------------------------------------------------------------

#: Products by key, each spelled one or two ways (case, padding, Unicode forms), with
#: the catalog its rows give.
SPELLINGS = {
    "a1": ["A1", "a1"],
    "b2": ["B2"],
    "c3": ["C3"],
    "d4": ["D4", " D4"],
    "strasse": ["Straße", "STRASSE"],
    "café": ["Café", "CAFE\u0301"],
}
CATALOG = {
    "a1": {"name": "Mug", "price": "4.50", "unit": "each", "category": "kitchen"},
    "b2": {"name": "Cup, tall", "price": "2.5", "reorder_level": "3"},
    "c3": {"name": "Bowl", "price": "7", "unit": "box"},
    "d4": {"name": "Plate", "price": "1.00", "category": "Kitchen", "reorder_level": "1"},
    "strasse": {"name": "Stra\u00dfe sign", "price": "12", "category": "K\u0131tchen"},
    "café": {"name": "Cafe\u0301 cup", "price": "3.30", "unit": "\u00c5ngstr\u00f6m"},
}
#: What the rows give instead, now and then: a catalog change, or a bad value.
OTHER = st.sampled_from(
    [{"price": "5.00"}, {"name": "Mug XL"}, {"unit": "kg"}, {"price": "-1"}, {"name": " Mug "}]
)
STORES = st.sampled_from(["", "", "main", "north", "North", "east"])
QUANTITIES = st.sampled_from(["", "0", "3", "10", "007"])
CHANGES = st.sampled_from(["", "2", "-1", "+5", "2", "-4"])


@st.composite
def rows(draw: st.DrawFn, *, clean: bool, full: bool) -> dict[str, str]:
    """A row; `clean`: every value good (the rows may still go below zero, name a store
    that is not there, ...), `full`: the catalog columns on every product row."""
    if draw(st.integers(0, 9)) == 0:  # a row naming only a store
        return {
            "store": draw(st.sampled_from(["north", "east", "west", "main"])),
            "store_name": draw(st.sampled_from(["East side", "West", *([] if clean else [""])])),
        }
    key = draw(st.sampled_from(sorted(SPELLINGS)))
    row = {"sku": draw(st.sampled_from(SPELLINGS[key]))}
    if full or draw(st.booleans()):
        row |= CATALOG[key]
    if not clean and draw(st.integers(0, 5)) == 0:
        row |= {**CATALOG[key], **draw(OTHER)}
    row["store"] = draw(STORES if clean else st.one_of(STORES, st.just("bad store!")))
    if row["store"] in ("north", "North", "east") and (clean or draw(st.booleans())):
        row["store_name"] = draw(st.sampled_from(["North branch", "East"]))
    move = draw(st.integers(0, 9))
    if move < 4:
        row["quantity"] = draw(QUANTITIES if clean else st.one_of(QUANTITIES, st.just("-1")))
    elif move < 8:
        row["change"] = draw(CHANGES if clean else st.one_of(CHANGES, st.just("1_000")))
    elif move == 8 and not clean:
        row |= {"quantity": "1", "change": "1"}
    if draw(st.integers(0, 3)) == 0:
        row["reason"] = draw(st.sampled_from(["sale", "count", "Restock "]))
    if not clean and draw(st.integers(0, 5)) == 0:
        row[draw(st.sampled_from(["expect", "idempotency_key"]))] = "1"
    return row


@st.composite
def files(draw: st.DrawFn) -> list[dict[str, str]]:
    clean = draw(st.integers(0, 3), label="clean") > 0
    full = draw(st.integers(0, 3), label="full") > 0
    return draw(st.lists(rows(clean=clean, full=full), min_size=1, max_size=8))


#: How a file is written: a BOM, CRLF, a line end after the last row, a blank line.
STYLES = st.fixed_dictionaries(
    {
        "bom": st.booleans(),
        "crlf": st.booleans(),
        "end": st.booleans(),
        "blank": st.integers(0, 19).map(lambda i: i == 0),
    }
)


#: What is there before the import: products by key, with stock at stores.
BEFORE = st.dictionaries(
    st.sampled_from(["a1", "c3"]),
    st.dictionaries(st.sampled_from(["main", "north"]), st.integers(0, 5), max_size=2),
    max_size=2,
)


def prepare(url: str, before: dict[str, dict[str, int]], north: bool) -> None:
    with PostgresBackend(url, actor="tester", source="cli") as backend:
        if north or any("north" in stock for stock in before.values()):
            backend.add_store("north", "North")
        batch = []
        for key, stock in before.items():
            batch.append(BatchRow(len(batch) + 2, key.upper(), name=f"Old {key}", price=3))
            for code, quantity in stock.items():
                batch.append(BatchRow(len(batch) + 2, key, store=code, quantity=quantity))
        if batch:
            backend.apply(batch)


@settings(
    max_examples=examples(30),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    before=BEFORE,
    north=st.booleans(),
    lines=files(),
    order=st.permutations(COLUMNS),
    style=STYLES,
    options=st.sampled_from(
        [*[[]] * 5, ["--on-error", "skip-rows"], ["--store", "north"], ["--dry-run"]]
    ),
    stdin=st.booleans(),
)
def test_a_file_is_applied_as_the_rules_in_python_apply_it(
    tmp_path: Path,
    databases: Callable[[], str],
    before: dict[str, dict[str, int]],
    north: bool,
    lines: list[dict[str, str]],
    order: list[str],
    style: dict[str, bool],
    options: list[str],
    stdin: bool,
) -> None:
    columns = [c for c in order if c == "sku" or any(c in line for line in lines)]
    data = write_csv(tmp_path / "rows.csv", lines, columns, **style)
    source = "-" if stdin else str(tmp_path / "rows.csv")
    fast_url, slow_url = databases(), databases()
    for url in (fast_url, slow_url):
        prepare(url, before, north)

    with watching() as fast:
        printed = inv_import(fast_url, source, *options, stdin=data if stdin else None)
    with watching(fast=False) as slow:
        expected = inv_import(slow_url, source, *options, stdin=data if stdin else None)
    event("taken by the database" if fast.taken else "parsed in Python")

    assert printed == expected
    assert state(fast_url) == state(slow_url)
    assert [outcome(r) for r in fast.taken or fast.applied] == [outcome(r) for r in slow.applied]
    if fast.taken:
        # The entries returned are the ones written, with their ids.
        ids = [m.id for m in fast.taken[0].changes]
        assert ids == audit_ids(fast_url)[-len(ids) :] if ids else True


# -- clean files, bad rows, options ------------------------------------------------------

HEADER = ["sku", "name", "price", "unit", "category", "reorder_level", "store"]
HEADER += ["store_name", "quantity"]


def bench_rows(products: int, stores: int) -> list[dict[str, str]]:
    """The bench's file (bench/common.py): each product at each store, catalog columns
    and the store's name on every row."""
    units = ("each", "box", "kg", "m", "pack")
    found = []
    for p in range(products):
        for s in range(stores):
            found.append(
                {
                    "sku": f"SKU{p:07d}",
                    "name": f"Product {p}",
                    "price": f"{1 + p % 250}.{(p * 7) % 100:02d}",
                    "unit": units[p % len(units)],
                    "category": f"category-{p % 40}",
                    "reorder_level": str(p % 10),
                    "store": "main" if s == 0 else f"store-{s + 1:02d}",
                    "store_name": "Main" if s == 0 else f"Store {s + 1}",
                    "quantity": str((p * 13 + s) % 200),
                }
            )
    return found


def test_a_clean_file_is_applied_in_the_database(
    tmp_path: Path, databases: Callable[[], str]
) -> None:
    file = tmp_path / "stock.csv"
    write_csv(file, bench_rows(400, 5), HEADER)
    fast_url, slow_url = databases(), databases()
    with watching() as fast:
        printed = inv_import(fast_url, str(file))
    assert len(fast.taken) == 1 and not fast.applied and fast.declined == 0
    assert printed == (
        0,
        f"{file}: 2000 rows applied, 0 unchanged, 0 already applied; "
        "400 product.create, 1600 stock.set, 4 store.create\n",
        "",
    )
    with watching(fast=False):
        assert inv_import(slow_url, str(file)) == printed
    assert state(fast_url) == state(slow_url)
    with PostgresBackend(fast_url) as backend:
        assert backend.verify_audit()[1] == []

    # Products that are there: counts again, a change, a catalog change (its first row
    # records it, the others find it done), a row that stocks where it is stocked.
    again = bench_rows(400, 5)
    again[1] |= {"quantity": "", "change": "+4"}
    for row in again[5:10]:
        row["price"] = "9.99"
    again[7]["quantity"] = ""
    write_csv(file, again, [*HEADER, "change"])
    for url, fast_path in ((fast_url, True), (slow_url, False)):
        with watching(fast=fast_path) as seen:
            printed = inv_import(url, str(file))
        assert len(seen.taken) == int(fast_path)
    assert printed == (
        0,
        f"{file}: 1999 rows applied, 1 unchanged, 0 already applied; "
        "1 product.update, 1 stock.adjust, 1998 stock.set\n",
        "",
    )
    assert state(fast_url) == state(slow_url)


def test_a_file_with_a_bad_row_is_reported_as_before_and_nothing_is_written(
    tmp_path: Path, databases: Callable[[], str]
) -> None:
    url = databases()
    with PostgresBackend(url, actor="tester") as backend:
        backend.add_product("Mug", "4.50", sku="MUG", quantity=2)
    before = state(url)
    file = tmp_path / "stock.csv"
    good = bench_rows(20, 2)
    bad = [{"sku": "MUG", "store": "main", "change": "-5"}, {"sku": "NEW", "quantity": "1"}]
    write_csv(file, [*good[:10], bad[0], *good[10:], bad[1]], [*HEADER, "change"])
    with watching() as seen:
        printed = inv_import(url, str(file))
    assert seen.declined == 1 and not seen.taken
    assert printed == (
        65,
        "",
        f"Error: {file}: row 12, column change: not enough MUG at main: 2 on hand, "
        "5 asked for\n"
        f"Error: {file}: row 43, column sku: unknown SKU 'NEW' (a new SKU needs a name and "
        "a price)\n"
        f"Error: {file}: 2 rows bad; nothing was written\n",
    )
    assert state(url) == before


def test_skip_rows_and_dry_run_are_as_before(tmp_path: Path, databases: Callable[[], str]) -> None:
    file = tmp_path / "stock.csv"
    rows = bench_rows(3, 2)
    rows[2]["price"] = "1.234"
    write_csv(file, rows, HEADER)
    for options in (["--on-error", "skip-rows"], ["--dry-run"], ["--dry-run", "-q"]):
        outputs = []
        for fast_path in (True, False):
            url = databases()
            with watching(fast=fast_path) as seen:
                outputs.append((inv_import(url, str(file), *options), state(url)))
            assert not seen.taken
        assert outputs[0] == outputs[1]
    # A clean file on a dry run: what would change, nothing written.
    write_csv(file, bench_rows(2, 1), HEADER)
    url = databases()
    before = state(url)
    code, out, err = inv_import(url, str(file), "--dry-run")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "product.create SKU0000000 at main +0 -> 0",
        "product.create SKU0000001 at main +13 -> 13",
        f"{file}: 2 rows would apply, 0 unchanged, 0 already applied; 2 product.create",
    ]
    assert state(url) == before


def test_bom_crlf_and_stdin(tmp_path: Path, databases: Callable[[], str]) -> None:
    rows = bench_rows(5, 2)
    data = write_csv(tmp_path / "stock.csv", rows, HEADER, bom=True, crlf=True)
    assert data.startswith(b"\xef\xbb\xbf") and b"\r\n" in data
    fast_url, slow_url = databases(), databases()
    with watching() as seen:
        printed = inv_import(fast_url, "-", stdin=data)
    assert len(seen.taken) == 1
    assert printed[:2] == (
        0,
        "stdin: 10 rows applied, 0 unchanged, 0 already applied; "
        "5 product.create, 5 stock.set, 1 store.create\n",
    )
    with watching(fast=False):
        assert inv_import(slow_url, str(tmp_path / "stock.csv")) == (
            0,
            printed[1].replace("stdin", str(tmp_path / "stock.csv")),
            "",
        )
    assert state(fast_url) == state(slow_url)


def test_what_the_database_does_not_take(tmp_path: Path, databases: Callable[[], str]) -> None:
    """Files read otherwise by COPY, or needing the rules row by row, are declined."""
    url = databases()
    with PostgresBackend(url) as backend:
        header = "sku,name,price,quantity\n"
        declined = [
            header + 'A1,"Mug\nbig",1,1\n',  # a line break in a field
            header + 'A1,Mug "big",1,1\n',  # a quote inside a field
            header + "A1,Mug,1,1\n\\.\nB2,Bowl,1,1\n",  # COPY's end of data
            header + "A1,Mug,1,1\r\nB2,Bowl,1,1\n",  # two kinds of line end
            header + "A1,Mug,1\n",  # a short row
            "sku,name,price,name\nA1,Mug,1,Mug\n",  # a column twice
            "sku,nmae,price\nA1,Mug,1\n",  # an unknown column
            "sku,name,price,expect\nA1,Mug,1,0\n",  # compare-and-set
            header + "A1,Mug,1,\u0661\n",  # not ASCII digits
            header + "A1,Mug,1,1\nA1,Mug,2,1\n",  # the catalog differs between rows
            header,  # no rows
        ]
        for text in declined:
            assert backend.import_file(text.encode(), "csv") is None, text
        assert backend.import_file(b"\xff" + header.encode(), "csv") is None
        assert backend.import_file(b'{"sku": "A1"}\n', "jsonl") is None
        assert backend.import_file((header + "A1,Mug,1,1\n").encode(), "csv", dry_run=True) is None
        assert (
            backend.import_file((header + "A1,Mug,1,1\n").encode(), "csv", event_id="batch-1")
            is None
        )
        assert backend.history() == backend.history(limit=1)  # only main's creation
        # Over the maximum, once alone and once after another row: the rules say how.
        backend.add_product("Full", "1", sku="FULL", quantity=values.MAX_QUANTITY)
        for text in ("sku,change\nFULL,1\n", "sku,change\nFULL,0\nFULL,1\n"):
            assert backend.import_file(text.encode(), "csv") is None, text

        # Values spelled otherwise than stored (padded, upper-case, NFD, `4.5`, `007`)
        # are taken as their checked forms.
        taken = backend.import_file(
            (
                "sku,name,price,store,quantity\n"
                'A1,"Cafe\u0301, big",1.5,Main,\n'
                ' a1 ,"Café, big", 1.50 ,MAIN,007\n'
            ).encode(),
            "csv",
        )
        assert taken is not None and (taken.rows, taken.applied, taken.unchanged) == (2, 2, 0)
        assert [(m.action, m.sku, m.store, m.delta, m.quantity_after) for m in taken.changes] == [
            ("product.create", "A1", "main", 0, 0),
            ("stock.set", "A1", "main", 7, 7),
        ]
        assert backend.get("a1").name == "Café, big"


# -- concurrency, the cache, the HTTP API -----------------------------------------------


def test_updates_during_an_import_lose_nothing(databases: Callable[[], str]) -> None:
    url = databases()
    skus = [f"P{i}" for i in range(6)]
    with PostgresBackend(url, actor="tester") as backend:
        backend.add_store("north", "North")
        for sku in skus:
            backend.add_product(f"Product {sku}", "1.00", sku=sku, quantity=50)
            backend.adjust("north", sku, 50)
    data = "sku,store,change\n" + "".join(
        f"{sku},{store},{delta}\n" for sku in skus for store, delta in (("north", 3), ("main", -2))
    )
    # A writer holds the last stock row, so the import waits part-way through its locks
    # while others update every row; then it lets go.
    holder = psycopg.connect(url)
    holder.execute(
        "SELECT 1 FROM inventory i JOIN products p ON p.id = i.product_id "
        "WHERE p.sku = 'P5' FOR UPDATE OF i"
    )
    results: dict[str, Any] = {}

    def importing() -> None:
        with PostgresBackend(url, actor="importer", source="import") as backend:
            results["import"] = backend.import_file(data.encode(), "csv")

    def updating(store: str) -> None:
        with PostgresBackend(url, actor="clerk") as backend:
            for sku in skus:
                backend.adjust(store, sku, -1, "sale")

    started = threading.Thread(target=importing)
    started.start()
    with psycopg.connect(url, autocommit=True) as watcher:
        deadline = time.monotonic() + 30
        while not watcher.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'"
        ).fetchone()[0]:  # type: ignore[index]
            assert time.monotonic() < deadline, "the import never waited for the lock"
    others = [threading.Thread(target=updating, args=(s,)) for s in ("main", "north", "main")]
    for thread in others:
        thread.start()
    holder.rollback()
    holder.close()
    for thread in [started, *others]:
        thread.join(60)
    assert isinstance(results["import"], BatchResult)
    with PostgresBackend(url) as backend:
        stock = {(i.sku, i.store): i.quantity for i in backend.list_items()}
        assert stock == {
            **{(sku, "main"): 50 - 2 - 2 for sku in skus},
            **{(sku, "north"): 50 + 3 - 1 for sku in skus},
        }
        assert backend.verify_audit()[1] == []


def test_the_kafka_backend_forgets_what_an_import_touched(databases: Callable[[], str]) -> None:
    from backends.kafka import KafkaBackend

    url = databases()
    with PostgresBackend(url, actor="tester") as setup:
        setup.add_product("Mug", "4.50", sku="MUG", quantity=5)
        setup.add_product("Cup", "1.00", sku="CUP", quantity=5)
    prefix = f"test-{uuid.uuid4().hex[:8]}"

    def kafka() -> KafkaBackend:
        return KafkaBackend(
            url, bootstrap_servers="127.0.0.1:1", redis_url=redis_or_skip(), cache_prefix=prefix
        )

    backend, reader = kafka(), kafka()
    assert backend.cache is not None and reader.cache is not None
    try:
        for sku in ("MUG", "CUP"):
            reader.get(sku)

        def cached(key: str) -> bool:
            return reader.cache is not None and reader.cache.read(key)[1] is not None

        assert cached("mug") and cached("cup")
        # Declined (a bad row): nothing written, nothing forgotten.
        assert backend.import_file(b"sku,change\nMUG,-9\n", "csv") is None
        assert cached("mug") and cached("cup")
        taken = backend.import_file(b"sku,store,change\nMUG,main,2\n", "csv")
        assert taken is not None and taken.applied == 1
        assert not cached("mug") and cached("cup")
        assert reader.get("MUG").stock == {"main": 7}
    finally:
        delete_keys(prefix)
        backend.close()
        reader.close()


def test_the_api_answers_as_before(databases: Callable[[], str]) -> None:
    from fastapi.testclient import TestClient

    from backends.settings import Settings
    from inventory_cli.api.server import create_app

    rows = bench_rows(4, 2)
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(
        [HEADER, *([r[c] for c in HEADER] for r in rows)]
    )
    first = databases()
    with PostgresBackend(first, actor="tester") as setup:  # a password hashes slowly: once
        setup.add_user("admin", "admin-password-1", "admin")
        token = setup.create_token("admin", name="tests").secret
    second = databases()
    with admin() as conn:
        conn.execute(f'DROP DATABASE "{second.rpartition("/")[2]}"')
        conn.execute(
            f'CREATE DATABASE "{second.rpartition("/")[2]}" '
            f'TEMPLATE "{first.rpartition("/")[2]}" STRATEGY FILE_COPY'
        )
    answers = []
    for url, fast_path in ((first, True), (second, False)):
        backend = PostgresBackend(url, actor="tester")
        limitless = "1000000/minute"
        app = create_app(
            Settings(
                backend="postgres", rate_limit_token=limitless, rate_limit_anonymous=limitless
            ),
            backend,
        )
        try:
            with TestClient(app) as client, watching(fast=fast_path) as seen:
                answer = client.post(
                    "/api/v1/imports",
                    content=out.getvalue(),
                    headers={"Authorization": f"Bearer {token}", "Content-Type": "text/csv"},
                )
            assert answer.status_code == 200, answer.text
            assert len(seen.taken) == int(fast_path)
            body = answer.json()
            for change in body["changes"]:
                change |= {"id": None, "at": None}
                change["event_id"] = UUID.sub("<uuid>", change["event_id"])
            answers.append(body)
        finally:
            backend.close()
    assert answers[0] == answers[1]
    assert answers[0]["applied"] == 8 and answers[0]["problems"] == []
