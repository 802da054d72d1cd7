"""`inv seed`: a realistic data set for demos and benchmarks, generated in the database.

It holds its tables locked for the whole load: seed a new database, not a busy one.

Stores `store-00001`..., products `P000001`... with names, categories, units, prices and
reorder levels drawn from small word lists, and every product stocked at every store
with a random quantity (default 10,000 x 500 = 5,000,000 stock rows).  Each step is one
set-based `INSERT ... SELECT` over `generate_series`, a slice of stores at a time so a
progress bar can move; every stock row gets its `stock.set` audit entry.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.engine import Connection

from ..base import Progress
from ..errors import Conflict, ValidationError

if TYPE_CHECKING:
    from .database import Database

__all__ = ["seed"]

SLICE = 250  # stores per statement

ADJECTIVES = ["Blue", "Red", "Large", "Small", "Steel", "Oak", "Classic", "Eco", "Pro", "Mini"]
NOUNS = [
    "mug",
    "hammer",
    "towel",
    "kettle",
    "lamp",
    "bowl",
    "drill",
    "brush",
    "jar",
    "tray",
    "glove",
    "bucket",
    "candle",
    "clock",
    "vase",
    "pan",
    "saw",
    "rope",
    "tape",
    "fan",
]
CATEGORIES = ["kitchen", "tools", "garden", "lighting", "cleaning", "decor", "storage"]
UNITS = ["each", "each", "each", "pack", "box", "kg", "m"]


def _array(values: list[str]) -> str:
    return "ARRAY[" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + "]"


# Loading millions of rows is 2-3 times faster with the stock table's foreign keys and
# secondary indexes, and the audit log's, built once at the end rather than row by row.
# Their definitions are read from the catalog, so the migrations stay their one source.
DEFERRED_INDEXES = (
    "inventory_product_idx",
    "audit_log_sku_idx",
    "audit_log_store_idx",
    "audit_log_at_idx",
)


def _defer_checks(connection: Connection) -> list[str]:
    """Drop the stock table's foreign keys and the secondary indexes; return the
    statements that put them back (run inside the same transaction)."""
    restore = []
    for name, definition in connection.execute(
        text(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'inventory'::regclass AND contype = 'f' ORDER BY conname"
        )
    ).all():
        connection.execute(text(f'ALTER TABLE inventory DROP CONSTRAINT "{name}"'))
        restore.append(f'ALTER TABLE inventory ADD CONSTRAINT "{name}" {definition}')
    for name, definition in connection.execute(
        text(
            "SELECT indexname, indexdef FROM pg_indexes "
            "WHERE schemaname = current_schema() AND indexname = ANY(:names)"
        ),
        {"names": list(DEFERRED_INDEXES)},
    ).all():
        connection.execute(text(f'DROP INDEX "{name}"'))
        restore.append(definition.replace(" ON ONLY ", " ON "))
    return restore


def seed(
    db: Database,
    *,
    stores: int,
    products: int,
    actor: str,
    source: str,
    progress: Progress | None = None,
) -> dict[str, int]:
    if stores < 1 or products < 1:
        raise ValidationError("seed: --stores and --products must be 1 or more")
    if stores > 99999 or products > 999999:
        raise ValidationError("seed: at most 99,999 stores and 999,999 products")
    event_id = f"seed-{uuid.uuid4()}"
    params = {"actor": actor, "source": source, "event": event_id}

    def work(connection: Connection) -> dict[str, int]:
        if connection.execute(text("SELECT exists(SELECT 1 FROM products)")).scalar_one():
            raise Conflict("seed needs an empty catalog; this database already has products")
        connection.execute(text("SELECT audit_log_partition(now())"))
        first_store = connection.execute(
            text("SELECT coalesce(max(id), 0) FROM stores")
        ).scalar_one()
        connection.execute(
            text(
                "INSERT INTO stores (code, name) SELECT format('store-%s', lpad(g::text, 5, '0')), "
                "format('Store %s', g) FROM generate_series(1, :n) g "
                "ON CONFLICT (code) DO NOTHING"
            ),
            {"n": stores},
        )
        connection.execute(
            text(
                # The word lists are ASCII: lower() is the key `backends.values` computes.
                "INSERT INTO products (sku, name, price, unit, category, reorder_level, "
                "sku_key, name_key, category_key) "
                "SELECT sku, name, price, unit, category, reorder_level, lower(sku), "
                "lower(name), lower(category) FROM (SELECT format('P%s', lpad(g::text, 6, '0')) "
                "AS sku, "
                f"({_array(ADJECTIVES)})[1 + g % {len(ADJECTIVES)}] || ' ' || "
                f"({_array(NOUNS)})[1 + (g / {len(ADJECTIVES)}) % {len(NOUNS)}] || ' ' || g "
                "AS name, round((0.5 + random() * 99.5)::numeric, 2) AS price, "
                f"({_array(UNITS)})[1 + g % {len(UNITS)}] AS unit, "
                f"({_array(CATEGORIES)})[1 + g % {len(CATEGORIES)}] AS category, "
                "(g % 4) * 5 AS reorder_level FROM generate_series(1, :n) g) AS generated"
            ),
            {"n": products},
        )
        connection.execute(text("SELECT setval('product_sku_seq', :n)"), {"n": products})
        connection.execute(
            text(
                "INSERT INTO audit_log (actor, source, event_id, store, sku, action, reason) "
                "SELECT :actor, :source, :event, code, NULL, 'store.create', name "
                "FROM stores WHERE id > :first ORDER BY id"
            ),
            {**params, "first": first_store},
        )
        connection.execute(
            text(
                "INSERT INTO audit_log (actor, source, event_id, store, sku, sku_key, action, "
                "reason) SELECT :actor, :source, :event, NULL, sku, sku_key, 'product.create', "
                "'seed' FROM products ORDER BY id"
            ),
            params,
        )
        store_ids = (
            connection.execute(text("SELECT id FROM stores WHERE code LIKE 'store-%' ORDER BY id"))
            .scalars()
            .all()
        )
        restore = _defer_checks(connection)
        done = 0
        for start in range(0, len(store_ids), SLICE):
            part = store_ids[start : start + SLICE]
            connection.execute(
                text(
                    "WITH stocked AS (INSERT INTO inventory (store_id, product_id, quantity) "
                    "SELECT s, p.id, (random() * 200)::int FROM unnest(CAST(:ids AS int[])) s "
                    "CROSS JOIN products p RETURNING store_id, product_id, quantity) "
                    "INSERT INTO audit_log (actor, source, event_id, store, sku, sku_key, action, "
                    "delta, quantity_after, reason) "
                    "SELECT :actor, :source, :event, s.code, p.sku, p.sku_key, 'stock.set', "
                    "t.quantity, "
                    "t.quantity, 'seed' FROM stocked t JOIN stores s ON s.id = t.store_id "
                    "JOIN products p ON p.id = t.product_id"
                ),
                {**params, "ids": list(part)},
            )
            done += len(part)
            if progress is not None:
                progress(done)
        for statement in restore:
            connection.execute(text(statement))
        return {
            "stores": len(store_ids),
            "products": products,
            "stock_rows": len(store_ids) * products,
        }

    return db.write(work)
