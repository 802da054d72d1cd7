"""Importing a file in the database: a clean CSV file applied with COPY and set-based SQL.

This is `PostgresBackend.import_file` (the contract is `Backend.import_file`).  The file's
bytes go to the server as they are, by COPY, into a temporary table of text columns
numbered by line.  Each *distinct* value is then checked in Python by the grammar of its
column (`backends.batch.GRAMMAR`, the functions `inventory_cli.files.read_rows` calls),
and the keys of SKUs, names and categories are computed by `backends.values`: a file of
100,000 rows has a few thousand distinct values at most besides its SKUs and names.
What a row means (`backends.batch`) is then applied to all rows at once: missing stores,
new products, catalog changes (`rules.product_diff`, in Python, for the products that
exist), the stock of each (store, SKU) computed over its rows in order with window
functions (a `quantity` row starts a new running sum, a `change` row adds to it), and
one audit row per change, numbered from `audit_log_id_seq` in row order.

Only a file that it can apply exactly as `read_rows` and `PostgresBackend.apply` would is
taken: every row good, no `expect` or `idempotency_key`, the catalog columns of a
product the same on each of its rows that gives them, no quoted line break (rows would
be numbered differently), nothing COPY reads otherwise than Python's csv module.
Anything else rolls back and returns None: the caller then parses the file in Python,
which reports every bad row with its number, column and reason, as it always did.
"""

from __future__ import annotations

import codecs
import csv
import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
from sqlalchemy import text
from sqlalchemy.engine import Connection

from .. import rules, values
from ..base import Progress
from ..batch import COLUMNS, GRAMMAR, BatchResult
from ..errors import ValidationError
from ..models import Movement, utcnow
from ..rules import CATALOG_FIELDS
from .bulk import copy_rows
from .reads import driver, driver_cursor, product_keys

__all__ = ["CsvFile", "apply_csv", "csv_file"]

#: Columns whose values make a row need more than this module does (compare-and-set,
#: keys remembered per row): a file that fills any of them is left to the rules in Python.
UNTAKEN = ("expect", "idempotency_key")
#: The value columns, checked once per distinct value.
CHECKED = tuple(c for c in COLUMNS if c not in UNTAKEN)
#: A quoted field as both Python's csv module and COPY read it: from a field's start to
#: a field's end, quotes inside doubled, no line break.
_QUOTED = re.compile(rb'(?:(?<=[,\n])|^)"(?:[^"\r\n]|"")*"(?=[,\r\n]|\Z)')
#: COPY's end-of-data marker, on a line of its own.
_END_MARK = re.compile(rb"(?m)^\\\.\r?$")
#: Longer values than these are not in any grammar (and csv refuses fields past 131,072
#: characters).
_LONGEST = 10_000


@dataclass(frozen=True, slots=True)
class CsvFile:
    """A CSV file whose text COPY reads as Python's csv module does: its columns (as
    `read_rows` names them) and its rows' bytes, the header line taken off."""

    columns: tuple[str, ...]
    body: bytes


def csv_file(data: bytes) -> CsvFile | None:
    """The file, if COPY is sure to read it as `read_rows` does; else None.

    UTF-8 (a BOM is dropped), one kind of line end (LF or CRLF), a header of known
    columns on one line, quotes only around whole fields without line breaks, no NUL
    and no `\\.` line."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    if b"\x00" in data:
        return None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    returns = data.count(b"\r")
    if returns and not (returns == data.count(b"\r\n") == data.count(b"\n")):
        return None  # a lone CR, or CRLF and LF mixed: COPY wants one kind
    header, newline, body = data.partition(b"\n")
    header = header.removesuffix(b"\r")
    if not newline or b'"' in header:
        return None
    names = next(csv.reader([header.decode("utf-8")]), [])
    columns = tuple(name.strip().lower() for name in names)
    if "sku" not in columns or len(set(columns)) < len(columns):
        return None
    if any(c not in COLUMNS for c in columns):
        return None
    # Trailing empty lines are skipped by read_rows; COPY would refuse them.
    body = body.rstrip(b"\r\n")
    if not body or _END_MARK.search(body):
        return None
    if b'"' in body and b'"' in _QUOTED.sub(b"", body):
        return None
    return CsvFile(columns, body)


class _NotSimple(Exception):
    """The file needs the rules in Python: roll back, and let the caller parse it."""


def apply_csv(
    connection: Connection,
    file: CsvFile,
    *,
    actor: str,
    source: str,
    batch_id: str,
    default_store: str,
    progress: Progress | None = None,
) -> BatchResult | None:
    """Apply a checked file in this transaction; None (nothing written, the transaction
    to be rolled back) when it is not clean and simple."""
    try:
        return _Import(connection, file, actor, source, batch_id, default_store).run(progress)
    except _NotSimple:
        return None


def _sql(connection: Connection, statement: str, **params: Any) -> Any:
    return connection.execute(text(statement), params)


def _fetch(connection: Connection, statement: str, **params: Any) -> list[tuple[Any, ...]]:
    """Every row of a statement (`%(name)s` parameters), as tuples: for the many rows
    of a file, through psycopg's own cursor (a SQLAlchemy result fetches row by row)."""
    with driver_cursor(connection) as cursor:
        rows: list[tuple[Any, ...]] = cursor.execute(statement, params).fetchall()
        return rows


class _Import:
    def __init__(
        self,
        connection: Connection,
        file: CsvFile,
        actor: str,
        source: str,
        batch_id: str,
        default_store: str,
    ) -> None:
        self.connection = connection
        self.file = file
        self.actor = actor
        self.source = source
        self.batch_id = batch_id
        self.default_store = default_store
        #: Whether any of the file's SKUs names a product that is there.
        self.known = False
        #: Whether a product is spelled two ways in the file.
        self.respelled = False

    def run(self, progress: Progress | None) -> BatchResult:
        at = utcnow()
        self.load()
        self.check_values()
        rows = self.plan()
        self.lock()
        self.products()
        self.stock()
        self.diff_products()
        self.write()
        changes = self.audit_and_stock(at)
        applied = len({m.event_id for m in changes})
        if progress is not None:
            progress(rows)
        return BatchResult(rows=rows, applied=applied, unchanged=rows - applied, changes=changes)

    # -- the rows, as COPY reads them, each value checked ---------------------------------

    def load(self) -> None:
        c = self.connection
        if _sql(c, "SELECT current_setting('client_encoding')").scalar() != "UTF8":
            raise _NotSimple
        # For this transaction: a file's rows sorted and hashed in memory; temporary
        # tables have no statistics, so sizes are guessed: no JIT compiling (it would
        # start, for 0.5 s) and no merge joins (sorting both sides instead of hashing).
        _sql(c, "SET LOCAL work_mem = '64MB'")
        _sql(c, "SET LOCAL jit = off")
        _sql(c, "SET LOCAL enable_mergejoin = off")
        every = ", ".join(f"{column} text" for column in COLUMNS)
        _sql(
            c,
            "CREATE TEMP TABLE import_rows (n integer GENERATED ALWAYS AS IDENTITY, "
            f"{every}) ON COMMIT DROP",
        )
        given = ", ".join(self.file.columns)
        try:
            with (
                driver_cursor(c) as cursor,
                cursor.copy(
                    f"COPY import_rows ({given}) FROM STDIN (FORMAT csv, FORCE_NULL ({given}))"
                ) as copy,
            ):
                body = memoryview(self.file.body)
                for start in range(0, len(body), 1 << 20):
                    copy.write(body[start : start + (1 << 20)])
        except psycopg.DataError:  # a row of more or fewer values, ...: read_rows says which
            raise _NotSimple from None

    def check_values(self) -> None:
        """Check each distinct value with its column's grammar, and write each one whose
        checked form is spelled otherwise (`Main` for a store, `4.5` for a price) as that
        form; a blank one becomes NULL, as read_rows leaves it out.  Number the products
        (by SKU key) and the stores the rows name."""
        c = self.connection
        checked = [column for column in CHECKED if column in self.file.columns]
        # One pass: a hash table per column.  GROUPING() has a bit per column, clear for
        # the column a row's value is of.
        listed = ", ".join(checked)
        found = _fetch(
            c,
            f"SELECT GROUPING({listed}), {listed} FROM import_rows "
            f"GROUP BY GROUPING SETS ({', '.join(f'({column})' for column in checked)})",
        )
        index = {
            ((1 << len(checked)) - 1) ^ (1 << (len(checked) - 1 - i)): i
            for i in range(len(checked))
        }
        rewrites: list[tuple[str, str, str | None]] = []
        skus: dict[str, str] = {}
        texts: set[str] = set()
        stores = {self.default_store}
        for row in found:
            i = index[row[0]]
            raw = row[i + 1]
            if raw is None:
                continue
            column = checked[i]
            form = _form(column, raw)
            if form != raw:
                rewrites.append((column, raw, form))
            if form is None:
                continue
            if column == "sku":
                skus[form] = values.sku_key(form)
            elif column in ("name", "category"):
                texts.add(form)
            elif column == "store":
                stores.add(form)
        if rewrites:
            _sql(
                c,
                "CREATE TEMP TABLE import_rewrites (c text, raw text, form text) ON COMMIT DROP",
            )
            copy_rows(c, "import_rewrites", ("c", "raw", "form"), rewrites)
            for column in sorted({column for column, _, _ in rewrites}):
                _sql(
                    c,
                    f"UPDATE import_rows r SET {column} = w.form FROM import_rewrites w "
                    f"WHERE w.c = :c AND r.{column} = w.raw",
                    c=column,
                )
        # Each spelling of a SKU with its key and product number; names and categories
        # with their keys; store codes with their numbers.  One table each, so that the
        # planner, without statistics, sizes them from their pages.
        numbers: dict[str, int] = {}
        spellings = [
            (sku, key, numbers.setdefault(key, len(numbers) + 1)) for sku, key in skus.items()
        ]
        # A product spelled two ways is created as its first row spells it.
        self.respelled = len(numbers) < len(spellings)
        for table, columns, rows in (
            ("import_skus", ("sku", "key", "pid"), spellings),
            ("import_texts", ("value", "key"), [(v, values.text_key(v)) for v in texts]),
            ("import_codes", ("code", "sid"), [(c, i) for i, c in enumerate(sorted(stores), 1)]),
        ):
            typed = ", ".join(
                f"{c} {'integer' if c in ('pid', 'sid') else 'text'}" for c in columns
            )
            _sql(c, f"CREATE TEMP TABLE {table} ({typed}) ON COMMIT DROP")
            copy_rows(c, table, columns, rows)

    def plan(self) -> int:
        """The rows with their values typed, their product and store numbered; returns
        how many, if each one is a row this module applies."""
        c = self.connection
        # Catalog values compare as bytes (their min and max too: they are the same on
        # each of a product's rows, or it is declined).
        catalog = ", ".join(f'r.{f} COLLATE "C" AS {f}' for f in CATALOG_FIELDS)
        # A row of blank values only is skipped by read_rows (its line still counts).
        _sql(
            c,
            "CREATE TEMP TABLE import_plan ON COMMIT DROP AS "
            "SELECT r.n, k.pid, r.sku, s.sid, s.code AS store, "
            "r.store IS NOT NULL AS explicit, r.store_name, "
            "CAST(r.quantity AS integer) AS quantity, CAST(r.change AS integer) AS change, "
            "r.reason, num_nonnulls(r.name, r.price, r.unit, r.category, r.reorder_level) > 0 "
            f"AS catalog, {catalog}, "
            # What read_rows refuses, or apply needs the rules in Python for.
            "r.quantity IS NOT NULL AND r.change IS NOT NULL OR r.expect IS NOT NULL "
            "OR r.idempotency_key IS NOT NULL OR r.sku IS NULL AND (r.store IS NULL "
            "OR num_nonnulls(r.name, r.price, r.unit, r.category, r.reorder_level, r.quantity, "
            "r.change) > 0) AS odd "
            "FROM import_rows r LEFT JOIN import_skus k ON k.sku = r.sku "
            "JOIN import_codes s ON s.code = coalesce(r.store, :store) "
            f"WHERE num_nonnulls({', '.join(f'r.{c}' for c in COLUMNS)}) > 0",
            store=self.default_store,
        )
        row = _sql(
            c, "SELECT count(*) AS rows, count(*) FILTER (WHERE odd) AS odd FROM import_plan"
        ).one()
        if row.odd or not row.rows:
            raise _NotSimple
        return int(row.rows)

    # -- what each row does ------------------------------------------------------------

    def lock(self) -> None:
        """Lock the products the file names, then their stock, in the order `apply` does
        (by id; by store, then product), so the two never deadlock each other; keep them
        as locked.  A product or stock row made by someone else after this is not in
        them: the row this import then inserts collides with it, and the whole import
        runs again, as `apply` does."""
        c = self.connection
        found = _sql(
            c,
            "CREATE TEMP TABLE import_known ON COMMIT DROP AS SELECT p.id, p.sku, p.sku_key, "
            + ", ".join(f"p.{f}" for f in CATALOG_FIELDS)
            + " FROM products p WHERE p.sku_key IN "
            "(SELECT key FROM import_skus) ORDER BY p.id FOR UPDATE OF p",
        )
        self.known = bool(found.rowcount)
        if self.known:
            _sql(
                c,
                "CREATE TEMP TABLE import_held ON COMMIT DROP AS SELECT store_id, product_id, "
                "quantity FROM inventory WHERE product_id IN (SELECT id FROM import_known) "
                "ORDER BY store_id, product_id FOR UPDATE",
            )

    def products(self) -> None:
        c = self.connection
        # Each product: its first row and first catalog row, the values of its catalog
        # rows (the same on each, or it is declined below), what is stored.
        if self.respelled:  # spelled as its first row spells it
            first = "(SELECT f.sku FROM import_plan f WHERE f.n = g.first_n)"
            once = "(SELECT DISTINCT ON (pid) pid, key FROM import_skus ORDER BY pid)"
        else:
            first, once = "k.sku", "import_skus"
        _sql(
            c,
            "CREATE TEMP TABLE import_products ON COMMIT DROP AS "
            "SELECT g.pid, g.first_n, g.catalog_n, coalesce(g.touches, false) AS touches, "
            "coalesce(g.catalog_n = g.first_n, false) "
            f"AS first_catalog, coalesce(p.sku, {first}) AS sku, k.key AS sku_key, "
            "p.id IS NULL AS new, p.id AS product_id, g.name, g.price, g.unit, g.category, "
            "g.reorder_level FROM (SELECT pid, min(n) AS first_n, "
            "min(n) FILTER (WHERE catalog) AS catalog_n, min(n) FILTER (WHERE quantity "
            "IS NOT NULL OR change IS NOT NULL OR explicit) = min(n) AS touches, "
            + ", ".join(f"min({f}) FILTER (WHERE catalog) AS {f}" for f in CATALOG_FIELDS)
            + " FROM import_plan WHERE pid IS NOT NULL GROUP BY pid) g "
            f"JOIN {once} k ON k.pid = g.pid "
            "LEFT JOIN import_known p ON p.sku_key = k.key",
        )
        # Each store: its first row, and whether it is there.
        _sql(
            c,
            "CREATE TEMP TABLE import_stores ON COMMIT DROP AS "
            "SELECT g.sid, k.code AS store, g.first_n, f.store_name, s.id IS NULL AS new, "
            "s.id AS store_id FROM (SELECT sid, min(n) AS first_n FROM import_plan "
            "GROUP BY sid) g JOIN import_codes k USING (sid) "
            "JOIN import_plan f ON f.n = g.first_n LEFT JOIN stores s ON s.code = k.code",
        )
        # Counted, not EXISTS: the planner would look for the first one row by row.
        odd = _sql(
            c,
            # A product whose catalog rows differ: each row would update it in turn.
            "SELECT (SELECT count(*) FROM import_plan x JOIN import_products p USING (pid) "
            "WHERE x.catalog AND (x.name, x.price, x.unit, x.category, x.reorder_level) "
            "IS DISTINCT FROM (p.name, p.price, p.unit, p.category, p.reorder_level)) "
            # A new SKU whose first row does not create it: an unknown SKU, a missing field.
            "+ (SELECT count(*) FROM import_products WHERE new AND NOT "
            "(first_catalog AND name IS NOT NULL AND price IS NOT NULL)) "
            # A store that is not there, first named without a name to create it by.
            "+ (SELECT count(*) FROM import_stores WHERE new AND store_name IS NULL)",
        ).scalar()
        if odd:
            raise _NotSimple

    def stock(self) -> None:
        """The stock of each (store, product) a row touches, row after row: a count (a
        row's quantity, or a new product's) sets it, a change adds to it, from what is on
        hand (0 where it is not stocked).  After row r it is the last count before r (or
        what was on hand) plus the changes since: one running sum of the changes
        (`total`), and the last count's offset from it, in one sort.  A (store, product)
        one row touches (most, in an export) needs no sort."""
        c = self.connection
        held = (
            "i.quantity AS held FROM import_plan x JOIN import_stores s USING (sid) "
            "JOIN import_products p USING (pid) LEFT JOIN import_held i "
            "ON i.store_id = s.store_id AND i.product_id = p.product_id "
            if self.known
            else "NULL::integer AS held FROM import_plan x "
        )
        _sql(
            c,
            "CREATE TEMP TABLE import_stock ON COMMIT DROP AS "
            f"WITH touching AS MATERIALIZED (SELECT x.n, x.sid, x.pid, x.quantity, x.change, {held}"
            "WHERE x.pid IS NOT NULL AND (x.quantity IS NOT NULL "
            "OR x.change IS NOT NULL OR x.explicit)), "
            "repeated AS (SELECT sid, pid FROM touching GROUP BY sid, pid HAVING count(*) > 1), "
            "totals AS (SELECT t.*, sum(coalesce(t.change, 0)) OVER w AS total "
            "FROM touching t JOIN repeated USING (sid, pid) "
            "WINDOW w AS (PARTITION BY sid, pid ORDER BY n)), "
            "running AS (SELECT n, sid, pid, quantity, change, held, "
            "coalesce((max(CASE WHEN quantity IS NOT NULL THEN ARRAY[n, quantity - total] END) "
            "OVER w)[2], held, 0) + total AS after "
            "FROM totals WINDOW w AS (PARTITION BY sid, pid ORDER BY n)) "
            "SELECT n, sid, pid, quantity IS NOT NULL AS counts, change IS NOT NULL AS changes, "
            "held, after, after - coalesce(lag(after) OVER w, held, 0) AS delta, "
            "lag(after) OVER w IS NULL AND held IS NULL AS stocks, "
            "lead(n) OVER w IS NULL AS last "
            "FROM running WINDOW w AS (PARTITION BY sid, pid ORDER BY n) "
            "UNION ALL "
            "SELECT n, sid, pid, quantity IS NOT NULL, change IS NOT NULL, held, after, "
            "after - coalesce(held, 0), held IS NULL, true "
            "FROM (SELECT t.*, coalesce(t.quantity, coalesce(CAST(t.held AS bigint), 0) "
            "+ coalesce(t.change, 0)) AS after FROM touching t WHERE NOT EXISTS "
            "(SELECT FROM repeated r WHERE r.sid = t.sid AND r.pid = t.pid)) once",
        )
        odd = _sql(
            c,
            "SELECT count(*) FROM import_stock WHERE after NOT BETWEEN 0 AND :most",
            most=values.MAX_QUANTITY,
        ).scalar()
        if odd:
            raise _NotSimple  # below zero or over the maximum: the rules say how

    def diff_products(self) -> None:
        """The catalog changes of products that are there (`rules.product_diff`)."""
        c = self.connection
        _sql(
            c,
            "CREATE TEMP TABLE import_updates (id bigint, sku text, sku_key text, n integer, "
            "said text, name text, price numeric(12,2), unit text, category text, "
            "reorder_level integer, name_key text, category_key text) ON COMMIT DROP",
        )
        if not self.known:
            return
        found = _sql(
            c,
            "SELECT p.id, p.sku, p.sku_key, i.catalog_n, "
            + ", ".join(f"p.{f}, i.{f} AS given_{f}" for f in CATALOG_FIELDS)
            + " FROM import_products i JOIN import_known p ON p.id = i.product_id "
            "WHERE i.catalog_n IS NOT NULL",
        )
        updates = []
        for row in found:
            current = {f: getattr(row, f) for f in CATALOG_FIELDS}
            given = {
                f: GRAMMAR[f](getattr(row, f"given_{f}"))
                for f in CATALOG_FIELDS
                if getattr(row, f"given_{f}") is not None
            }
            changed, said = rules.product_diff(current, given)
            if said is None:
                continue
            new = {**current, **changed}
            _, name_key, category_key = product_keys(row.sku, new["name"], new["category"])
            updates.append(
                (
                    row.id,
                    row.sku,
                    row.sku_key,
                    row.catalog_n,
                    said,
                    *(new[f] for f in CATALOG_FIELDS),
                    name_key,
                    category_key,
                )
            )
        if updates:
            copy_rows(
                c,
                "import_updates",
                ("id", "sku", "sku_key", "n", "said", *CATALOG_FIELDS, "name_key", "category_key"),
                updates,
            )

    # -- writing -----------------------------------------------------------------------

    def write(self) -> None:
        c = self.connection
        _sql(
            c,
            "WITH made AS (INSERT INTO stores (code, name) SELECT store, store_name "
            "FROM import_stores WHERE new ORDER BY first_n RETURNING id, code) "
            "UPDATE import_stores s SET store_id = made.id FROM made WHERE made.code = s.store",
        )
        _sql(
            c,
            "WITH made AS (INSERT INTO products (sku, name, price, unit, category, "
            "reorder_level, sku_key, name_key, category_key) "
            "SELECT p.sku, p.name, CAST(p.price AS numeric(12,2)), coalesce(p.unit, 'each'), "
            "p.category, coalesce(CAST(p.reorder_level AS integer), 0), p.sku_key, n.key, "
            "k.key FROM import_products p "
            "JOIN import_texts n ON n.value = p.name "
            "LEFT JOIN import_texts k ON k.value = p.category "
            "WHERE p.new ORDER BY p.first_n RETURNING id, sku_key) "
            "UPDATE import_products p SET product_id = made.id FROM made "
            "WHERE made.sku_key = p.sku_key",
        )
        _sql(
            c,
            "UPDATE products p SET name = u.name, price = u.price, unit = u.unit, "
            "category = u.category, reorder_level = u.reorder_level, name_key = u.name_key, "
            "category_key = u.category_key, updated_at = now() "
            "FROM import_updates u WHERE p.id = u.id",
        )

    def audit_and_stock(self, at: datetime) -> list[Movement]:
        """The audit entries, one per change, in the order the rules write them (a
        row's new store, its product, its stock), numbered in that order; then the
        stock.  Returns the entries, made while the server writes the stock (checking
        each new row's foreign keys takes it about a second per 100,000)."""
        c = self.connection
        month = at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        _sql(c, "SELECT audit_log_partition(:at)", at=month)
        # A row's reason, where the file has some.
        reasons = "reason" in self.file.columns
        reason = "x.reason" if reasons else "NULL"
        plan = "LEFT JOIN import_plan x ON x.n = {} " if reasons else ""
        raw = driver(c)
        with raw.pipeline() as pipeline, raw.cursor() as entries, raw.cursor() as stock:
            entries.execute(
                "INSERT INTO audit_log (id, at, actor, source, event_id, store, sku, sku_key, "
                "action, delta, quantity_after, reason) "
                "SELECT nextval('audit_log_id_seq'), %(at)s, %(actor)s, %(source)s, "
                "%(batch)s || ':' || (e.n + 1), e.store, e.sku, e.sku_key, e.action, e.delta, "
                "e.after, e.reason FROM ("
                "SELECT first_n AS n, 0 AS k, store, NULL AS sku, NULL AS sku_key, "
                "'store.create' AS action, NULL::bigint AS delta, NULL::bigint AS after, "
                "store_name AS reason FROM import_stores WHERE new "
                "UNION ALL "
                # A new product's first row, when it touches no stock (else below).
                f"SELECT p.first_n, 1, NULL, p.sku, p.sku_key, 'product.create', NULL, NULL, "
                f"{reason} FROM import_products p "
                + plan.format("p.first_n")
                + "WHERE p.new AND NOT p.touches "
                "UNION ALL "
                "SELECT n, 1, NULL, sku, sku_key, 'product.update', NULL, NULL, said "
                "FROM import_updates "
                "UNION ALL "
                "SELECT l.n, CASE WHEN l.n = p.first_n AND p.new THEN 1 ELSE 2 END, s.store, "
                "p.sku, p.sku_key, CASE WHEN l.n = p.first_n AND p.new THEN 'product.create' "
                "WHEN l.counts THEN 'stock.set' WHEN l.changes THEN 'stock.adjust' "
                "ELSE 'stock.set' END, l.delta, l.after, "
                f"{reason} FROM import_stock l JOIN import_stores s USING (sid) "
                "JOIN import_products p USING (pid) "
                + plan.format("l.n")
                + "WHERE l.counts OR l.changes OR l.stocks OR l.n = p.first_n AND p.new "
                "ORDER BY n, k) e "
                "RETURNING id, event_id, store, sku, action, delta, quantity_after, reason",
                {"at": at, "actor": self.actor, "source": self.source, "batch": self.batch_id},
            )
            pipeline.sync()  # the entries are written, their rows here (not yet read)
            # Sent without waiting for it: the entries are read and made meanwhile.  Rows
            # that were there change in place (no foreign-key check fires); the others
            # are inserted.
            changed = (
                "WITH changed AS (UPDATE inventory i SET quantity = l.after, "
                "version = nextval('stock_version_seq'), updated_at = now() "
                "FROM import_stock l JOIN import_stores s USING (sid) "
                "JOIN import_products p USING (pid) "
                "WHERE l.last AND l.held IS NOT NULL AND l.after <> l.held "
                "AND i.store_id = s.store_id AND i.product_id = p.product_id) "
            )
            stock.execute(
                (changed if self.known else "")
                + "INSERT INTO inventory (store_id, product_id, quantity) "
                "SELECT s.store_id, p.product_id, l.after FROM import_stock l "
                "JOIN import_stores s USING (sid) JOIN import_products p USING (pid) "
                "WHERE l.last AND l.held IS NULL"
            )
            actor, source = self.actor, self.source
            return [
                Movement(i, at, actor, source, event, store, sku, action, delta, after, reason)
                for i, event, store, sku, action, delta, after, reason in entries.fetchall()
            ]


def _form(column: str, raw: str) -> str | None:
    """A value's checked form as text (None: blank, left out); `_NotSimple` if its
    grammar refuses it (read_rows reports it)."""
    if len(raw) > _LONGEST:
        raise _NotSimple
    if not raw.strip():
        return None
    try:
        value = GRAMMAR[column](raw)
    except ValidationError:
        raise _NotSimple from None
    if isinstance(value, Decimal | int):
        return str(value)
    assert isinstance(value, str)
    return value
