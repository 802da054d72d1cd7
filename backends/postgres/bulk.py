"""Bulk paths: batches (import), with COPY into temporary tables and set-based SQL.

`load_state` locks and loads only what a batch touches (its SKUs' products and stock,
all stores) into a `backends.engine.State`; the shared rules run on it in memory; then
`write_back` writes the difference in a handful of set-based statements: COPY into
temporary tables, then one INSERT/UPDATE each for stores, products, stock, audit rows
and idempotency keys.  No row-at-a-time round trips.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from .. import auth, rules, values
from ..base import Progress
from ..batch import BatchRow
from ..engine import State
from ..errors import AlreadyExists, NotFound, ValidationError
from ..models import MOVEMENT_FIELDS, Movement, MovementRow, Snapshot
from ..rules import CATALOG_FIELDS
from .reads import driver_cursor, product_keys

__all__ = [
    "Loaded",
    "audit_ids",
    "copy_audit",
    "copy_audit_rows",
    "copy_rows",
    "import_snapshot",
    "load_state",
    "write_back",
]

PRODUCT_FIELDS = CATALOG_FIELDS
KEY_FIELDS = ("sku_key", "name_key", "category_key")
#: The audit log's columns as COPY fills them: the entry's fields and its SKU's key.
AUDIT_COPY_COLUMNS = (*MOVEMENT_FIELDS, "sku_key")


def copy_rows(
    connection: Connection, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> None:
    """COPY `rows` into `table` through psycopg's COPY protocol."""
    with (
        driver_cursor(connection) as cursor,
        cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy,
    ):
        for row in rows:
            copy.write_row(row)


@dataclass
class Loaded:
    """A batch's slice of the database, as loaded, and the State the rules will change."""

    state: State
    store_ids: dict[str, int]
    product_ids: dict[str, int]  # SKU key -> id
    original: dict[str, dict[str, Any]]  # SKU key -> fields and stock as loaded


def load_state(connection: Connection, rows: Sequence[BatchRow]) -> Loaded:
    """Lock and load the products and stock the batch's rows name, and every store."""
    store_rows = connection.execute(text("SELECT id, code, name FROM stores")).all()
    store_ids = {r.code: r.id for r in store_rows}
    stores = {r.code: r.name for r in store_rows}
    connection.execute(text("CREATE TEMP TABLE batch_skus (key text PRIMARY KEY) ON COMMIT DROP"))
    copy_rows(connection, "batch_skus", ("key",), ((k,) for k in _keys(rows)))
    found = connection.execute(
        text(
            "SELECT p.id, p.sku, p.name, p.price, p.unit, p.category, p.reorder_level "
            "FROM products p JOIN batch_skus b ON p.sku_key = b.key "
            "ORDER BY p.id FOR UPDATE OF p"
        )
    ).all()
    products: dict[str, dict[str, Any]] = {}
    product_ids: dict[str, int] = {}
    by_id: dict[int, dict[str, Any]] = {}
    for r in found:
        entry = {
            "sku": r.sku,
            "name": r.name,
            "price": r.price,
            "unit": r.unit,
            "category": r.category,
            "reorder_level": r.reorder_level,
            "stock": {},
        }
        products[values.sku_key(r.sku)] = entry
        product_ids[values.sku_key(r.sku)] = r.id
        by_id[r.id] = entry
    if by_id:
        stock = connection.execute(
            text(
                "SELECT i.product_id, s.code, i.quantity FROM inventory i "
                "JOIN stores s ON s.id = i.store_id WHERE i.product_id = ANY(:ids) "
                "ORDER BY i.store_id, i.product_id FOR UPDATE OF i"
            ),
            {"ids": list(by_id)},
        )
        for product_id, code, quantity in stock:
            by_id[product_id]["stock"][code] = quantity
    original = {
        key: {**{f: e[f] for f in PRODUCT_FIELDS}, "stock": dict(e["stock"])}
        for key, e in products.items()
    }
    keyed = [
        row.idempotency_key
        for row in rows
        if isinstance(row.idempotency_key, str)
        and _valid(values.idempotency_key, row.idempotency_key)
    ]
    events: dict[str, dict[str, Any]] = {}
    if keyed:
        seen = connection.execute(
            text("SELECT event_id, fingerprint FROM applied_events WHERE event_id = ANY(:k)"),
            {"k": keyed},
        )
        events = {event_id: {"fp": fp} for event_id, fp in seen}
    state = State(stores, products, events=events)
    return Loaded(state, store_ids, product_ids, original)


def _valid(check: Any, value: Any) -> bool:
    try:
        check(value)
    except ValidationError:
        return False
    return True


def _keys(rows: Sequence[BatchRow]) -> set[str]:
    """The keys of the rows' SKUs; a SKU that is not one is left to the rules to report."""
    keys = set()
    for row in rows:
        if row.sku is None:
            continue
        try:
            keys.add(values.sku_key(values.sku(row.sku, existing=True)))
        except ValidationError:
            continue
    return keys


def _product_keys(entry: dict[str, Any]) -> tuple[str, str, str | None]:
    return product_keys(entry["sku"], entry["name"], entry["category"])


def write_back(connection: Connection, loaded: Loaded, changes: list[Movement]) -> list[Movement]:
    """Write what the rules changed; returns the audit entries with their real ids."""
    state = loaded.state
    new_stores = [
        (code, name) for code, name in state.stores.items() if code not in loaded.store_ids
    ]
    if new_stores:
        created = connection.execute(
            text(
                "INSERT INTO stores (code, name) SELECT * FROM unnest(CAST(:c AS text[]), "
                "CAST(:n AS text[])) RETURNING id, code"
            ),
            {"c": [c for c, _ in new_stores], "n": [n for _, n in new_stores]},
        )
        loaded.store_ids.update({code: store_id for store_id, code in created})

    new_products = [e for key, e in state.products.items() if key not in loaded.original]
    changed_products = [
        (loaded.product_ids[key], e)
        for key, e in state.products.items()
        if key in loaded.original and any(e[f] != loaded.original[key][f] for f in PRODUCT_FIELDS)
    ]
    if new_products:
        connection.execute(
            text(
                "CREATE TEMP TABLE batch_products (sku text, name text, price numeric(12,2), "
                "unit text, category text, reorder_level integer, sku_key text, "
                "name_key text, category_key text) ON COMMIT DROP"
            )
        )
        copy_rows(
            connection,
            "batch_products",
            ("sku", *PRODUCT_FIELDS, *KEY_FIELDS),
            ((e["sku"], *(e[f] for f in PRODUCT_FIELDS), *_product_keys(e)) for e in new_products),
        )
        created = connection.execute(
            text(
                "INSERT INTO products (sku, name, price, unit, category, reorder_level, "
                "sku_key, name_key, category_key) SELECT sku, name, price, unit, category, "
                "reorder_level, sku_key, name_key, category_key FROM batch_products "
                "RETURNING id, sku_key"
            )
        )
        loaded.product_ids.update({key: pid for pid, key in created})
    if changed_products:
        connection.execute(
            text(
                "CREATE TEMP TABLE batch_changed (id bigint, name text, price numeric(12,2), "
                "unit text, category text, reorder_level integer, name_key text, "
                "category_key text) ON COMMIT DROP"
            )
        )
        copy_rows(
            connection,
            "batch_changed",
            ("id", *PRODUCT_FIELDS, "name_key", "category_key"),
            (
                (pid, *(e[f] for f in PRODUCT_FIELDS), *_product_keys(e)[1:])
                for pid, e in changed_products
            ),
        )
        connection.execute(
            text(
                "UPDATE products p SET name = c.name, price = c.price, unit = c.unit, "
                "category = c.category, reorder_level = c.reorder_level, "
                "name_key = c.name_key, category_key = c.category_key, updated_at = now() "
                "FROM batch_changed c WHERE p.id = c.id"
            )
        )

    new_stock, changed_stock = [], []
    for key, entry in state.products.items():
        before = loaded.original.get(key, {}).get("stock", {})
        for code, quantity in entry["stock"].items():
            if code not in before:
                new_stock.append((loaded.store_ids[code], loaded.product_ids[key], quantity))
            elif before[code] != quantity:
                changed_stock.append((loaded.store_ids[code], loaded.product_ids[key], quantity))
    if new_stock or changed_stock:
        connection.execute(
            text(
                "CREATE TEMP TABLE batch_stock (store_id integer, product_id bigint, "
                "quantity integer, existing boolean) ON COMMIT DROP"
            )
        )
        copy_rows(
            connection,
            "batch_stock",
            ("store_id", "product_id", "quantity", "existing"),
            [*((*r, False) for r in new_stock), *((*r, True) for r in changed_stock)],
        )
        # Rows locked by load_state change in place: an UPDATE keeps its keys, so no
        # foreign-key check fires, unlike an upsert.
        connection.execute(
            text(
                "UPDATE inventory i SET quantity = b.quantity, "
                "version = nextval('stock_version_seq'), updated_at = now() "
                "FROM batch_stock b WHERE b.existing "
                "AND i.store_id = b.store_id AND i.product_id = b.product_id"
            )
        )
        connection.execute(
            text(
                "INSERT INTO inventory (store_id, product_id, quantity) "
                "SELECT store_id, product_id, quantity FROM batch_stock WHERE NOT existing"
            )
        )

    written = _renumber(connection, changes)
    if written:
        copy_audit(connection, written)
    new_keys = [(k, e["fp"]) for k, e in state.events.items() if e.get("new")]
    if new_keys:
        copy_rows(connection, "applied_events", ("event_id", "fingerprint"), new_keys)
    return written


def audit_ids(connection: Connection, n: int) -> list[int]:
    """`n` new ids from the audit sequence, in order."""
    if n == 0:
        return []
    return sorted(
        connection.execute(
            text("SELECT nextval('audit_log_id_seq') FROM generate_series(1, :n)"), {"n": n}
        ).scalars()
    )


def _renumber(connection: Connection, changes: Sequence[Movement]) -> list[Movement]:
    """Give the entries real ids from the audit sequence, in order."""
    return [
        Movement(i, *m.row()[1:])
        for m, i in zip(changes, audit_ids(connection, len(changes)), strict=True)
    ]


def copy_audit_rows(connection: Connection, rows: Sequence[MovementRow]) -> None:
    """COPY audit rows (ids given) into audit_log, creating the months they need."""
    months = {row[1].replace(day=1, hour=0, minute=0, second=0, microsecond=0) for row in rows}
    for month in sorted(months):
        connection.execute(text("SELECT audit_log_partition(:at)"), {"at": month})
    keys: dict[str, str] = {}
    copy_rows(
        connection,
        "audit_log",
        AUDIT_COPY_COLUMNS,
        (
            (
                *row,
                None
                if row[6] is None
                else keys.get(row[6]) or keys.setdefault(row[6], values.sku_key(row[6])),
            )
            for row in rows
        ),
    )


def copy_audit(connection: Connection, movements: Sequence[Movement]) -> None:
    """COPY audit entries (ids given) into audit_log, creating the months they need."""
    copy_audit_rows(connection, [m.row() for m in movements])


def import_snapshot(
    connection: Connection, snapshot: Snapshot, *, progress: Progress | None = None
) -> None:
    """Add a whole inventory: stores (missing ones), products with stock, history, and
    idempotency keys.  Into an empty audit log the entries keep their ids (the sequence
    moves past them); otherwise they are numbered after ours, and the keys' results follow."""
    have = {code for (code,) in connection.execute(text("SELECT code FROM stores"))}
    missing = [s for s in snapshot.stores if s.code not in have]
    if missing:
        connection.execute(
            text(
                "INSERT INTO stores (code, name) SELECT * FROM unnest(CAST(:c AS text[]), "
                "CAST(:n AS text[]))"
            ),
            {"c": [s.code for s in missing], "n": [s.name for s in missing]},
        )
    if snapshot.products:
        connection.execute(
            text(
                "CREATE TEMP TABLE import_products (sku text, name text, price numeric(12,2), "
                "unit text, category text, reorder_level integer, sku_key text, "
                "name_key text, category_key text) ON COMMIT DROP"
            )
        )
        copy_rows(
            connection,
            "import_products",
            ("sku", *PRODUCT_FIELDS, *KEY_FIELDS),
            (
                (
                    p.sku,
                    p.name,
                    p.price,
                    p.unit,
                    p.category,
                    p.reorder_level,
                    *_product_keys({"sku": p.sku, "name": p.name, "category": p.category}),
                )
                for p in snapshot.products
            ),
        )
        clash = (
            connection.execute(
                text(
                    "SELECT p.sku FROM products p JOIN import_products i "
                    "ON p.sku_key = i.sku_key LIMIT 5"
                )
            )
            .scalars()
            .all()
        )
        if clash:
            raise AlreadyExists(f"SKUs already here: {', '.join(clash)}")
        connection.execute(
            text(
                "INSERT INTO products (sku, name, price, unit, category, reorder_level, "
                "sku_key, name_key, category_key) SELECT sku, name, price, unit, category, "
                "reorder_level, sku_key, name_key, category_key FROM import_products"
            )
        )
        connection.execute(
            text(
                "CREATE TEMP TABLE import_stock (sku_key text, store text, quantity integer) "
                "ON COMMIT DROP"
            )
        )
        copy_rows(
            connection,
            "import_stock",
            ("sku_key", "store", "quantity"),
            (
                (values.sku_key(p.sku), code, q)
                for p in snapshot.products
                for code, q in p.stock.items()
            ),
        )
        unknown = connection.execute(
            text(
                "SELECT t.store FROM import_stock t LEFT JOIN stores s ON s.code = t.store "
                "WHERE s.id IS NULL LIMIT 1"
            )
        ).scalar()
        if unknown is not None:
            raise NotFound(f"no store {unknown!r} for the stock brought in")
        connection.execute(
            text(
                "INSERT INTO inventory (store_id, product_id, quantity) "
                "SELECT s.id, p.id, t.quantity FROM import_stock t "
                "JOIN stores s ON s.code = t.store JOIN products p ON p.sku_key = t.sku_key"
            )
        )
        # Generated SKUs continue after the highest one brought in.
        numbers = [rules.generated_number(p.sku) for p in snapshot.products]
        highest = max((n for n in numbers if n is not None), default=0)
        if highest:
            connection.execute(
                text(
                    "SELECT setval('product_sku_seq', greatest((SELECT last_value FROM "
                    "product_sku_seq), :n))"
                ),
                {"n": min(highest, 2**63 - 1)},
            )
    new_ids: dict[int, int] = {}
    if snapshot.history:
        empty = connection.execute(text("SELECT NOT EXISTS (SELECT 1 FROM audit_log)")).scalar()
        if empty:
            written = list(snapshot.history)
            connection.execute(
                text("SELECT setval('audit_log_id_seq', :n)"),
                {"n": max(m.id for m in written)},
            )
        else:
            written = _renumber(connection, snapshot.history)
        new_ids = {old.id: new.id for old, new in zip(snapshot.history, written, strict=True)}
        copy_audit(connection, written)
        if progress is not None:
            progress(len(written))
    if snapshot.events:
        clash = (
            connection.execute(
                text(
                    "SELECT event_id FROM applied_events "
                    "WHERE event_id = ANY(CAST(:k AS text[])) LIMIT 5"
                ),
                {"k": [e.event_id for e in snapshot.events]},
            )
            .scalars()
            .all()
        )
        if clash:
            raise AlreadyExists(f"idempotency keys already here: {', '.join(clash)}")
        copy_rows(
            connection,
            "applied_events",
            ("event_id", "fingerprint", "at", "result"),
            (
                (e.event_id, e.fingerprint, e.at, json.dumps(_renumbered(e.result, new_ids)))
                for e in snapshot.events
            ),
        )

    if snapshot.users or snapshot.tokens:
        _import_users(connection, snapshot)


def _import_users(connection: Connection, snapshot: Snapshot) -> None:
    """The snapshot's users and tokens, hashes and digests verbatim (so every password and
    token works here as it did there).  A user already here is refused; tokens keep their
    ids when there are none here yet (the id sequence moves past them), else get new ones."""
    users = [auth.stored_user(u) for u in snapshot.users]
    tokens = sorted((auth.stored_token(t) for t in snapshot.tokens), key=lambda t: t.id)
    if users:
        names = [u.username for u in users]
        if len(set(names)) < len(names):
            raise ValidationError("users: a user name given twice", field="users")
        clash = (
            connection.execute(
                text(
                    "SELECT username FROM users WHERE username = ANY(CAST(:u AS text[])) "
                    'ORDER BY username COLLATE "C" LIMIT 5'
                ),
                {"u": names},
            )
            .scalars()
            .all()
        )
        if clash:
            raise AlreadyExists(f"users already here: {', '.join(clash)}")
        codes = sorted({code for u in users for code in u.stores or ()})
        if codes:
            # Held (KEY SHARE) until the commit, so none is removed meanwhile.
            found = set(
                connection.execute(
                    text("SELECT code FROM stores WHERE code = ANY(:c) FOR KEY SHARE"),
                    {"c": codes},
                ).scalars()
            )
            for user in users:
                for code in user.stores or ():
                    if code not in found:
                        raise NotFound(f"no store {code!r} for user {user.username!r}")
        copy_rows(
            connection,
            "users",
            ("username", "password_hash", "role", "stores", "disabled", "created_at"),
            (
                (
                    u.username,
                    u.password_hash,
                    u.role,
                    list(u.stores) if u.stores is not None else None,
                    u.disabled,
                    u.created_at,
                )
                for u in users
            ),
        )
    if not tokens:
        return
    ids = [t.id for t in tokens]
    if len(set(ids)) < len(ids):
        raise ValidationError("tokens: an id given twice", field="tokens")
    connection.execute(
        text(
            "CREATE TEMP TABLE import_tokens (id bigint, username text, token_hash text, "
            "name text, created_at timestamptz, expires_at timestamptz, "
            "last_used_at timestamptz) ON COMMIT DROP"
        )
    )
    copy_rows(
        connection,
        "import_tokens",
        ("id", "username", "token_hash", "name", "created_at", "expires_at", "last_used_at"),
        (
            (t.id, t.username, t.digest, t.name, t.created_at, t.expires_at, t.last_used_at)
            for t in tokens
        ),
    )
    orphan = connection.execute(
        text(
            "SELECT t.username, t.id FROM import_tokens t LEFT JOIN users u "
            "ON u.username = t.username WHERE u.id IS NULL ORDER BY t.id LIMIT 1"
        )
    ).first()
    if orphan is not None:
        raise NotFound(f"no user {orphan.username!r} for token {orphan.id}")
    clash = (
        connection.execute(
            text(
                "SELECT t.id FROM import_tokens t JOIN api_tokens a "
                "ON a.token_hash = t.token_hash ORDER BY t.id LIMIT 5"
            )
        )
        .scalars()
        .all()
    )
    if len({t.digest for t in tokens}) < len(tokens) or clash:
        raise AlreadyExists(
            f"tokens already here: {', '.join(str(i) for i in clash) or 'the same one twice'}"
        )
    keep_ids = connection.execute(text("SELECT NOT EXISTS (SELECT 1 FROM api_tokens)")).scalar()
    columns = "user_id, token_hash, name, created_at, expires_at, last_used_at"
    selected = (
        "u.id, t.token_hash, t.name, t.created_at, t.expires_at, t.last_used_at "
        "FROM import_tokens t JOIN users u ON u.username = t.username ORDER BY t.id"
    )
    if keep_ids:
        connection.execute(
            text(
                f"INSERT INTO api_tokens (id, {columns}) OVERRIDING SYSTEM VALUE "
                f"SELECT t.id, {selected}"
            )
        )
        # New tokens are numbered after these (and after any this database gave before).
        connection.execute(
            text(
                "SELECT setval(CAST(s AS regclass), greatest(:n, "
                "pg_sequence_last_value(CAST(s AS regclass)))) "
                "FROM pg_get_serial_sequence('api_tokens', 'id') AS s"
            ),
            {"n": max(ids)},
        )
    else:
        connection.execute(text(f"INSERT INTO api_tokens ({columns}) SELECT {selected}"))


def _renumbered(result: dict[str, Any], new_ids: dict[int, int]) -> dict[str, Any]:
    """A key's result with its entries' ids as they are here."""
    if not new_ids or all(old == new for old, new in new_ids.items()):
        return result
    entries = [
        {**m, "id": new_ids.get(m.get("id"), m.get("id"))} for m in result.get("movements", [])
    ]
    return {**result, "movements": entries}
