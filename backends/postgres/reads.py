"""The postgres backend's queries, as functions of a connection.

The backend picks the connection (a replica, or the primary after a write, or the
transaction a write is in); these say what is read.  Text is matched by the keys
`backends.values` computes (`sku_key`, `name_key`, `category_key` columns), so a search,
a filter or an order means what it means on every other backend.  Values arrive already
checked by `backends.values`/`backends.requests`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
from sqlalchemy import text
from sqlalchemy.engine import Connection

from .. import values
from ..auth import StoredToken, StoredUser
from ..errors import NotFound
from ..models import (
    MOVEMENT_FIELDS,
    AppliedEvent,
    Item,
    Movement,
    MovementSummary,
    Product,
    Snapshot,
    Store,
    StoreValue,
)
from ..requests import Page

__all__ = [
    "AUDIT_COLUMNS",
    "PRODUCT_COLUMNS",
    "counts",
    "history",
    "list_items",
    "movement",
    "product",
    "product_keys",
    "product_row",
    "report_movements",
    "report_value",
    "snapshot",
    "stock_levels",
    "store_id",
    "stores",
    "verify_audit",
]

AUDIT_COLUMNS = ", ".join(MOVEMENT_FIELDS)
PRODUCT_COLUMNS = "id, sku, name, price, unit, category, reorder_level"


def product_keys(sku: str, name: str, category: str | None) -> tuple[str, str, str | None]:
    """What the `sku_key`, `name_key` and `category_key` columns hold for a product."""
    return (
        values.sku_key(sku),
        values.text_key(name),
        values.text_key(category) if category is not None else None,
    )


def movement(row: Any) -> Movement:
    """An audit entry from a row with the `MOVEMENT_FIELDS` columns."""
    return Movement(*(getattr(row, name) for name in MOVEMENT_FIELDS))


def store_id(connection: Connection, code: str, *, lock: str = "") -> int:
    """The id of store `code`; `NotFound` if there is none.  `lock`: a locking clause."""
    found = connection.execute(
        text(f"SELECT id FROM stores WHERE code = :c {lock}"), {"c": code}
    ).scalar()
    if found is None:
        raise no_store(code)
    return int(found)


def no_store(code: str) -> NotFound:
    return NotFound(f"no store {code!r}")


def no_product(sku: str) -> NotFound:
    return NotFound(f"no product with SKU {sku!r}")


def stock_row(connection: Connection, store: str, sku: str) -> tuple[int, int, str]:
    """(store id, product id, the product's SKU as stored) of a checked store code and
    SKU, the stock row created at 0 if it was not there: one round trip.  `NotFound`
    for the store (first) or the product."""
    row = connection.execute(
        text(
            "WITH s AS (SELECT id FROM stores WHERE code = :c), "
            "p AS (SELECT id, sku FROM products WHERE sku_key = :k), "
            "created AS (INSERT INTO inventory (store_id, product_id, quantity) "
            "SELECT s.id, p.id, 0 FROM s, p ON CONFLICT DO NOTHING) "
            "SELECT (SELECT id FROM s) AS store, (SELECT id FROM p) AS product, "
            "(SELECT sku FROM p) AS sku"
        ),
        {"c": store, "k": values.sku_key(sku)},
    ).one()
    if row.store is None:
        raise no_store(store)
    if row.product is None:
        raise no_product(sku)
    return int(row.store), int(row.product), str(row.sku)


def product_row(connection: Connection, sku: str, *, lock: bool = False) -> Any:
    """The catalog row of a checked SKU, found by its key; `NotFound` if there is none."""
    row = connection.execute(
        text(
            f"SELECT {PRODUCT_COLUMNS} FROM products WHERE sku_key = :k"
            + (" FOR UPDATE" if lock else "")
        ),
        {"k": values.sku_key(sku)},
    ).first()
    if row is None:
        raise no_product(sku)
    return row


def quantity(connection: Connection, store: str, sku: str) -> int:
    """One stock level in one round trip (one statement, without BEGIN and ROLLBACK): 0
    where the product is not stocked at the store; `NotFound` for an unknown product
    (first) or store."""
    with single_statement(connection) as cursor:
        cursor.execute(
            "SELECT p.id, s.id, i.quantity FROM (SELECT 1) AS one "
            "LEFT JOIN products p ON p.sku_key = %s "
            "LEFT JOIN stores s ON s.code = %s "
            "LEFT JOIN inventory i ON i.store_id = s.id AND i.product_id = p.id",
            (values.sku_key(sku), store),
        )
        product, store_found, on_hand = cursor.fetchone()
    if product is None:
        raise no_product(sku)
    if store_found is None:
        raise no_store(store)
    return int(on_hand or 0)


def stock_levels(connection: Connection, product_id: int) -> list[tuple[str, int, int]]:
    """(store, version, quantity) for every store the product is stocked at."""
    rows = connection.execute(
        text(
            "SELECT s.code, i.version, i.quantity FROM inventory i "
            "JOIN stores s ON s.id = i.store_id "
            'WHERE i.product_id = :p ORDER BY s.code COLLATE "C"'
        ),
        {"p": product_id},
    )
    return [(code, version, quantity) for code, version, quantity in rows]


def product(connection: Connection, row: Any, stock: dict[str, int] | None = None) -> Product:
    """A product from its catalog row, with its stock (read unless given)."""
    if stock is None:
        stock = {code: q for code, _, q in stock_levels(connection, row.id)}
    return Product(
        sku=row.sku,
        name=row.name,
        price=row.price,
        unit=row.unit,
        category=row.category,
        reorder_level=row.reorder_level,
        stock=stock,
    )


def stores(connection: Connection) -> list[Store]:
    rows = connection.execute(text('SELECT code, name FROM stores ORDER BY code COLLATE "C"'))
    return [Store(code, name) for code, name in rows]


def driver(connection: Connection) -> psycopg.Connection[Any]:
    """The psycopg connection under a SQLAlchemy one, in its transaction: for COPY,
    pipelines and the statements that run too often for SQLAlchemy's overhead."""
    raw = connection.connection.driver_connection
    assert raw is not None
    return raw  # type: ignore[no-any-return]


@contextmanager
def single_statement(connection: Connection) -> Iterator[Any]:
    """A psycopg cursor (see `driver_cursor`) for a read of one statement, sent without
    `BEGIN` before it and `ROLLBACK` after it (two round trips of the three), when the
    connection is not in a transaction yet."""
    raw = driver(connection)
    if raw.autocommit or raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        with raw.cursor() as cursor:
            yield cursor
        return
    raw.autocommit = True
    try:
        with raw.cursor() as cursor:
            yield cursor
    finally:
        raw.autocommit = False


def driver_cursor(connection: Connection, **options: Any) -> Any:
    """A psycopg cursor on the connection: for the hot reads, whose rows go straight into
    the result objects (SQLAlchemy's `text()` costs more per statement and per row than
    the query itself on a small result).  Parameters are psycopg's (`%(name)s`);
    `options` go to `cursor()` (a `row_factory`)."""
    return driver(connection).cursor(**options)


def list_items(
    connection: Connection,
    *,
    store: str | None,
    low_stock: bool,
    search: str | None,
    category: str | None,
    page: Page,
) -> list[Item]:
    """`Backend.list_items`; `search` and `category` are keys (`values.text_key`).

    One round trip: a store is matched by its code in the query itself, and only an empty
    answer asks whether the store exists (`NotFound` if not)."""
    where = []
    params: dict[str, Any] = {}
    if store is not None:
        params["store"] = store
        where.append("s.code = %(store)s")
    if low_stock:
        where.append("p.reorder_level > 0 AND i.quantity <= p.reorder_level")
    if search:
        params["search"] = search
        where.append("(strpos(p.sku_key, %(search)s) > 0 OR strpos(p.name_key, %(search)s) > 0)")
    if category:
        params["category"] = category
        where.append("p.category_key = %(category)s")
    direction = "DESC" if page.descending else "ASC"
    first = {
        "sku": f"p.sku_key {direction}",
        "name": f"p.name_key {direction}",
        "quantity": f"coalesce(i.quantity, 0) {direction}",
        "value": f"p.price * coalesce(i.quantity, 0) {direction}",
    }[page.sort]
    join = "JOIN" if store is not None or low_stock else "LEFT JOIN"
    sql = (
        "SELECT p.sku, p.name, p.price, p.unit, p.category, p.reorder_level, "
        "s.code AS store, coalesce(i.quantity, 0) AS quantity "
        f"FROM products p {join} inventory i ON i.product_id = p.id "
        f"{join} stores s ON s.id = i.store_id "
        + (f"WHERE {' AND '.join(where)} " if where else "")
        + f'ORDER BY {first}, p.sku_key, p.sku COLLATE "C", s.code COLLATE "C" NULLS FIRST'
        # Written into the statement (checked integers): as parameters, a prepared plan
        # made for an unknown limit can be a hundred times slower for the usual none.
        + ("" if page.limit is None else f" LIMIT {int(page.limit)}")
        + (f" OFFSET {int(page.offset)}" if page.offset else "")
    )
    with single_statement(connection) as cursor:
        cursor.execute(sql, params)
        items = [Item(*row) for row in cursor.fetchall()]
    if not items and store is not None:
        store_id(connection, store)  # NotFound for a store that does not exist
    return items


def history(
    connection: Connection,
    *,
    sku_key: str | None,
    store: str | None,
    since: datetime | None,
    limit: int | None,
) -> list[Movement]:
    where = []
    params: dict[str, Any] = {}
    if sku_key is not None:
        where.append("sku_key = :sku_key")
        params["sku_key"] = sku_key
    if store is not None:
        where.append("store = :store")
        params["store"] = store
    if since is not None:
        where.append("at >= :since")
        params["since"] = since
    sql = (
        f"SELECT {AUDIT_COLUMNS} FROM audit_log "
        + (f"WHERE {' AND '.join(where)} " if where else "")
        + "ORDER BY id DESC"
        # Written into the statement (a checked integer), as `list_items` does: a plan
        # prepared for an unknown limit may read the whole log for the usual few rows.
        + ("" if limit is None else f" LIMIT {int(limit)}")
    )
    return [movement(r) for r in connection.execute(text(sql), params)]


def report_value(connection: Connection, *, store: str | None) -> list[StoreValue]:
    # Aggregate stock by store id first (parallel-friendly), then name the stores.
    only = store_id(connection, store) if store is not None else None
    where = "WHERE i.store_id = :store_id " if only is not None else ""
    rows = connection.execute(
        text(
            "SELECT s.code, coalesce(t.products, 0) AS products, "
            "coalesce(t.units, 0) AS units, coalesce(t.value, 0) AS value "
            "FROM stores s LEFT JOIN (SELECT i.store_id, count(*) AS products, "
            "sum(i.quantity) AS units, sum(i.quantity * p.price) AS value "
            "FROM inventory i JOIN products p ON p.id = i.product_id "
            f"{where}GROUP BY i.store_id) t ON t.store_id = s.id "
            + ("WHERE s.id = :store_id " if only is not None else "")
            + 'ORDER BY s.code COLLATE "C"'
        ),
        {"store_id": only},
    )
    return [
        StoreValue(r.code, r.products, r.units, Decimal(r.value).quantize(Decimal("0.01")))
        for r in rows
    ]


def report_movements(
    connection: Connection,
    *,
    store: str | None,
    since: datetime | None,
    until: datetime | None,
) -> list[MovementSummary]:
    if store is not None:
        store_id(connection, store)
    rows = connection.execute(
        text(
            "SELECT store, sku, count(*) AS movements, "
            "coalesce(sum(delta) FILTER (WHERE delta > 0), 0) AS units_in, "
            "coalesce(-sum(delta) FILTER (WHERE delta < 0), 0) AS units_out "
            "FROM audit_log WHERE store IS NOT NULL AND sku IS NOT NULL "
            "AND delta IS NOT NULL "
            "AND (CAST(:code AS text) IS NULL OR store = :code) "
            "AND (CAST(:since AS timestamptz) IS NULL OR at >= :since) "
            "AND (CAST(:until AS timestamptz) IS NULL OR at < :until) "
            'GROUP BY store, sku ORDER BY store COLLATE "C", sku COLLATE "C"'
        ),
        {"code": store, "since": since, "until": until},
    )
    return [MovementSummary(r.store, r.sku, r.movements, r.units_in, r.units_out) for r in rows]


def verify_audit(connection: Connection) -> tuple[int, list[str]]:
    """Every stock row against the last quantity its history records."""
    checked = connection.execute(text("SELECT count(*) FROM inventory")).scalar_one()
    rows = connection.execute(
        text(
            "WITH last AS (SELECT DISTINCT ON (store, sku_key) store, sku_key AS key, sku, "
            "quantity_after FROM audit_log WHERE store IS NOT NULL AND sku IS NOT NULL "
            "AND quantity_after IS NOT NULL ORDER BY store, sku_key, id DESC), "
            "stock AS (SELECT s.code AS store, p.sku_key AS key, p.sku, i.quantity "
            "FROM inventory i JOIN stores s ON s.id = i.store_id "
            "JOIN products p ON p.id = i.product_id) "
            "SELECT coalesce(stock.sku, last.sku) AS sku, "
            "coalesce(stock.store, last.store) AS store, stock.quantity, "
            "last.quantity_after FROM stock FULL JOIN last "
            "ON last.store = stock.store AND last.key = stock.key "
            "WHERE stock.quantity IS DISTINCT FROM last.quantity_after "
            "AND NOT (stock.quantity IS NULL AND last.quantity_after = 0) "
            'ORDER BY coalesce(stock.store, last.store) COLLATE "C", '
            'coalesce(stock.sku, last.sku) COLLATE "C" LIMIT 1000'
        )
    ).all()
    problems = [
        f"{r.sku} at {r.store}: "
        + (f"{r.quantity} on hand" if r.quantity is not None else "not stocked")
        + f", history says {r.quantity_after}"
        for r in rows
    ]
    return int(checked), problems


def counts(connection: Connection) -> dict[str, Any]:
    """The sizes `status` reports."""
    row = connection.execute(
        text(
            "SELECT (SELECT count(*) FROM stores) AS stores, "
            "(SELECT count(*) FROM products) AS products, "
            "(SELECT count(*) FROM inventory) AS stock_rows, "
            "(SELECT coalesce(max(id), 0) FROM audit_log) AS last_audit_id"
        )
    ).one()
    return dict(row._asdict())


def snapshot(connection: Connection) -> Snapshot:
    """Everything, in one REPEATABLE READ transaction the caller has begun."""
    all_stores = stores(connection)
    stock: dict[int, dict[str, int]] = {}
    for product_id, code, quantity in connection.execute(
        text(
            "SELECT i.product_id, s.code, i.quantity FROM inventory i "
            'JOIN stores s ON s.id = i.store_id ORDER BY s.code COLLATE "C"'
        )
    ):
        stock.setdefault(product_id, {})[code] = quantity
    products = [
        Product(r.sku, r.name, r.price, r.unit, r.category, r.reorder_level, stock.get(r.id, {}))
        for r in connection.execute(
            text(f'SELECT {PRODUCT_COLUMNS} FROM products ORDER BY sku COLLATE "C"')
        )
    ]
    entries = [
        movement(r)
        for r in connection.execute(text(f"SELECT {AUDIT_COLUMNS} FROM audit_log ORDER BY id"))
    ]
    events = [
        AppliedEvent(r.event_id, r.fingerprint, r.at, dict(r.result))
        for r in connection.execute(
            text(
                "SELECT event_id, fingerprint, at, result FROM applied_events "
                'ORDER BY at, event_id COLLATE "C"'
            )
        )
    ]
    users = [
        StoredUser(
            r.username,
            r.password_hash,
            r.role,
            tuple(r.stores) if r.stores is not None else None,
            r.disabled,
            r.created_at,
        )
        for r in connection.execute(
            text(
                "SELECT username, password_hash, role, stores, disabled, created_at "
                'FROM users ORDER BY username COLLATE "C"'
            )
        )
    ]
    tokens = [
        StoredToken(
            r.id, r.username, r.token_hash, r.name, r.created_at, r.expires_at, r.last_used_at
        )
        for r in connection.execute(
            text(
                "SELECT t.id, u.username, t.token_hash, t.name, t.created_at, t.expires_at, "
                "t.last_used_at FROM api_tokens t JOIN users u ON u.id = t.user_id ORDER BY t.id"
            )
        )
    ]
    return Snapshot(all_stores, products, entries, events, users, tokens)
