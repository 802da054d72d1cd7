"""The `postgres` backend (v2): PostgreSQL through SQLAlchemy Core and psycopg 3.

Configuration (settings; see the README for flags and environment names)::

    database_url        the primary             INV_DATABASE_URL
                        postgresql://user:password@host:5432/inventory
    read_database_urls  replicas, comma-separated   INV_READ_DATABASE_URLS

Reads go to a replica when there is one; writes, and reads that follow a write by the
same backend object (one command), go to the primary.  The schema is managed by Alembic
(`inv db upgrade`); a database whose schema is behind this code is refused with a hint.

A movement is one guarded statement (`UPDATE ... SET quantity = quantity + :d WHERE ...
AND quantity + :d >= 0 RETURNING`) plus its audit row and its idempotency record, in
one transaction.  Transfers lock their two rows in store order, so opposite transfers
never deadlock.  Batches (import) lock the rows they touch, apply the shared rules of
`backends.engine` to them, and write the result back with COPY and set-based SQL.

Example::

    with PostgresBackend("postgresql://inv@127.0.0.1/inventory", actor="ana") as inv:
        inv.init()
        inv.adjust("main", "P000001", -2, "sale")
"""

from __future__ import annotations

import json
import logging
import random
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from datetime import datetime
from decimal import Decimal
from typing import Any, Self, TypeVar

import psycopg
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError

from ..base import Backend, Progress
from ..batch import BatchResult, BatchRow, OnError
from ..engine import State, run_batch, show
from ..errors import (
    AlreadyExists,
    BackendUnavailable,
    BatchRejected,
    ConfigurationError,
    Conflict,
    InsufficientStock,
    InventoryError,
    NotFound,
    PermissionDenied,
    RowProblem,
    ValidationError,
)
from ..models import (
    MAIN_STORE,
    MAX_QUANTITY,
    MOVEMENT_FIELDS,
    Item,
    Movement,
    MovementSummary,
    Product,
    Snapshot,
    Store,
    StoreValue,
    format_time,
    validate_event_id,
    validate_name,
    validate_store_code,
)
from ..requests import (
    StockChange,
    batch_fingerprint,
    check_page,
    movement_from_json,
    movement_json,
    new_product,
    product_changes,
    product_from_json,
    product_json,
    reused_key,
    sku_key,
)
from ..requests import transfer as transfer_request
from . import schema

__all__ = ["PostgresBackend"]

T = TypeVar("T")

log = logging.getLogger("inv.postgres")

_ENGINES: dict[str, Engine] = {}

AUDIT_COLUMNS = ", ".join(MOVEMENT_FIELDS)
RETRYABLE = {"40001", "40P01", "23505"}  # serialization failure, deadlock, a racing insert


def _driver_url(url: str) -> str:
    """psycopg 3 is the driver, whatever scheme the user wrote."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise ConfigurationError(
        "database_url: must start with postgresql:// "
        f"(got {make_url(url).render_as_string(hide_password=True) if '://' in url else '?'})"
    )


def _engine(url: str) -> Engine:
    """One pool per URL per process."""
    engine = _ENGINES.get(url)
    if engine is None:
        engine = create_engine(
            _driver_url(url),
            pool_size=5,
            max_overflow=5,
            pool_pre_ping=False,
            connect_args={
                "connect_timeout": 5,
                "options": "-c TimeZone=UTC",
                # A server that vanishes without closing (a cable, a frozen VM) is noticed
                # in about 20 s instead of the kernel's two hours.
                "keepalives": 1,
                "keepalives_idle": 10,
                "keepalives_interval": 3,
                "keepalives_count": 3,
            },
        )
        _ENGINES[url] = engine
    return engine


def _where(url: str) -> str:
    parsed = make_url(_driver_url(url))
    return f"{parsed.host or 'localhost'}:{parsed.port or 5432}"


def _movement(row: Any) -> Movement:
    """An audit entry from a row with the `MOVEMENT_FIELDS` columns."""
    return Movement(*(getattr(row, name) for name in MOVEMENT_FIELDS))


class _Refused(Exception):
    """Raised inside a transaction to roll it back, carrying the error to raise after."""

    def __init__(self, error: InventoryError) -> None:
        self.error = error


class PostgresBackend(Backend):
    """Inventory in PostgreSQL; see the module docstring."""

    name = "postgres"

    def __init__(
        self,
        url: str,
        *,
        read_urls: Sequence[str] = (),
        actor: str = "unknown",
        source: str = "cli",
    ) -> None:
        super().__init__(actor=actor, source=source)
        self.url = url
        self.read_urls = list(read_urls)
        self._checked = False
        self._wrote = False

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], *, actor: str, source: str) -> Self:
        url = _secret(settings.get("database_url"))
        if not url:
            raise ConfigurationError(
                "the postgres backend needs a database: set INV_DATABASE_URL "
                "(postgresql://user:password@host:5432/dbname)"
            )
        replicas = _secret(settings.get("read_database_urls")) or ""
        return cls(
            url,
            read_urls=[u.strip() for u in replicas.split(",") if u.strip()],
            actor=actor,
            source=source,
        )

    def describe(self) -> str:
        return (
            make_url(_driver_url(self.url))
            .render_as_string(hide_password=True)
            .replace("postgresql+psycopg://", "postgresql://")
        )

    def close(self) -> None:
        for url in (self.url, *self.read_urls):
            engine = _ENGINES.pop(url, None)
            if engine is not None:
                engine.dispose()

    # -- connections and errors -------------------------------------------------------

    def _translate(self, exc: DBAPIError | psycopg.Error, url: str) -> InventoryError | None:
        """A driver error as one of the contract's errors, naming the server, never the
        password."""
        orig = exc.orig if isinstance(exc, DBAPIError) else exc
        message = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
        state = getattr(orig, "sqlstate", None)
        where = _where(url)
        if state == "28P01" or "password authentication failed" in message:
            return ConfigurationError(f"PostgreSQL at {where} refused the login: {message}")
        if state == "3D000" or ("database" in message and "does not exist" in message):
            return ConfigurationError(f"PostgreSQL at {where}: {message}")
        if state == "28000" or ("role" in message and "does not exist" in message):
            return ConfigurationError(f"PostgreSQL at {where}: {message}")
        if state == "42501":
            return PermissionDenied(f"PostgreSQL at {where}: {message}")
        if state == "22003":
            return ValidationError(f"a number is out of range: {message}")
        if state is not None and state.startswith(("42", "0A")):
            return None  # syntax or semantics of our own SQL: a bug, not the user's doing
        if state is None or state.startswith(("08", "57P")):
            return BackendUnavailable(f"cannot reach PostgreSQL at {where}: {message}")
        return BackendUnavailable(f"PostgreSQL at {where} failed: {message}")

    def _check_schema(self, connection: Connection) -> None:
        if self._checked:
            return
        revision = schema.current_revision(connection)
        if revision is None:
            raise ConfigurationError(
                f"{self.describe()} has no inv schema; run 'inv init' (or 'inv db upgrade')"
            )
        if revision != schema.HEAD:
            if revision < schema.HEAD:
                raise ConfigurationError(
                    f"the schema of {self.describe()} is at {revision}, this inv needs "
                    f"{schema.HEAD}; run 'inv db upgrade'"
                )
            raise ConfigurationError(
                f"the schema of {self.describe()} ({revision}) is newer than this inv "
                f"({schema.HEAD}); upgrade inv"
            )
        self._checked = True

    @contextmanager
    def _connect(self, url: str, *, check: bool = True) -> Iterator[Connection]:
        try:
            with _engine(url).connect() as connection:
                if check and not self._checked:
                    self._check_schema(connection)
                    connection.rollback()  # end the check's implicit transaction
                yield connection
        except (DBAPIError, psycopg.Error) as exc:
            error = self._translate(exc, url)
            if error is None:
                raise  # a bug in our SQL: let it show
            raise error from exc

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        """A connection for reads: a replica, unless this backend has written; the
        primary when the replica cannot be reached (one warning)."""
        with ExitStack() as stack:
            connection = None
            if self.read_urls and not self._wrote:
                url = random.choice(self.read_urls)
                try:
                    connection = stack.enter_context(self._connect(url))
                except BackendUnavailable as exc:
                    log.warning("%s; reading from the primary", exc)
            if connection is None:
                connection = stack.enter_context(self._connect(self.url))
            yield connection

    def _write(self, work: Callable[[Connection], T], *, attempts: int = 5) -> T:
        """Run `work` in one transaction on the primary; retry deadlocks and
        serialization failures; create a missing audit partition and retry."""
        self._wrote = True
        for attempt in range(attempts):
            try:
                with self._connect(self.url) as connection, connection.begin():
                    return work(connection)
            except _Refused as refused:
                raise refused.error from None
            except BackendUnavailable as exc:
                cause = exc.__cause__
                orig = cause.orig if isinstance(cause, DBAPIError) else cause
                state = getattr(orig, "sqlstate", None)
                if state in RETRYABLE and attempt + 1 < attempts:
                    continue
                if state == "23514" and "no partition" in str(orig) and attempt + 1 < attempts:
                    self._ensure_partition()
                    continue
                raise
        raise AssertionError("unreachable")

    def _ensure_partition(self, at: datetime | None = None) -> None:
        with self._connect(self.url) as connection, connection.begin():
            connection.execute(text("SELECT audit_log_partition(coalesce(:at, now()))"), {"at": at})

    # -- idempotency ------------------------------------------------------------------

    def _claim(
        self, connection: Connection, event_id: str | None, fingerprint: str, what: str = "request"
    ) -> dict[str, Any] | None:
        """Take `event_id` for this transaction; if it was applied before, return what
        was remembered (a concurrent holder of the key is waited for)."""
        if event_id is None:
            return None
        try:
            validate_event_id(event_id)
        except ValidationError as exc:
            raise _Refused(exc) from None
        taken = connection.execute(
            text(
                "INSERT INTO applied_events (event_id, fingerprint) VALUES (:k, :fp) "
                "ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
            ),
            {"k": event_id, "fp": fingerprint},
        ).first()
        if taken is not None:
            return None
        seen = connection.execute(
            text("SELECT fingerprint, result FROM applied_events WHERE event_id = :k"),
            {"k": event_id},
        ).one()
        if seen.fingerprint != fingerprint:
            raise _Refused(reused_key(event_id, what))
        result: dict[str, Any] = seen.result
        return result

    def _remember(self, connection: Connection, event_id: str | None, result: Any) -> None:
        if event_id is not None:
            connection.execute(
                text("UPDATE applied_events SET result = CAST(:r AS jsonb) WHERE event_id = :k"),
                {"k": event_id, "r": json.dumps(result)},
            )

    def _audit(
        self,
        connection: Connection,
        event_id: str,
        action: str,
        *,
        store: str | None,
        sku: str | None,
        delta: int | None = None,
        quantity_after: int | None = None,
        reason: str | None = None,
    ) -> Movement:
        row = connection.execute(
            text(
                "INSERT INTO audit_log (actor, source, event_id, store, sku, action, delta, "
                "quantity_after, reason) VALUES (:actor, :source, :event_id, :store, :sku, "
                f":action, :delta, :quantity_after, :reason) RETURNING {AUDIT_COLUMNS}"
            ),
            {
                "actor": self.actor,
                "source": self.source,
                "event_id": event_id,
                "store": store,
                "sku": sku,
                "action": action,
                "delta": delta,
                "quantity_after": quantity_after,
                "reason": reason,
            },
        ).one()
        return _movement(row)

    # -- look-ups inside a transaction ------------------------------------------------

    @staticmethod
    def _store_id(connection: Connection, code: str) -> int:
        found = connection.execute(
            text("SELECT id FROM stores WHERE code = :c"), {"c": code}
        ).scalar()
        if found is None:
            raise _Refused(NotFound(f"no store {code!r}"))
        return int(found)

    @staticmethod
    def _product_row(connection: Connection, sku: str, *, lock: bool = False) -> Any:
        row = connection.execute(
            text(
                "SELECT id, sku, name, price, unit, category, reorder_level FROM products "
                "WHERE lower(sku) = lower(:s)" + (" FOR UPDATE" if lock else "")
            ),
            {"s": sku.strip()},
        ).first()
        if row is None:
            raise _Refused(NotFound(f"no product with SKU {sku.strip()!r}"))
        return row

    @staticmethod
    def _stock_levels(connection: Connection, product_id: int) -> list[tuple[str, int, int]]:
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

    @classmethod
    def _stock_of(cls, connection: Connection, product_id: int) -> dict[str, int]:
        return {code: q for code, _, q in cls._stock_levels(connection, product_id)}

    def _product(
        self, connection: Connection, row: Any, stock: dict[str, int] | None = None
    ) -> Product:
        return Product(
            sku=row.sku,
            name=row.name,
            price=row.price,
            unit=row.unit,
            category=row.category,
            reorder_level=row.reorder_level,
            stock=self._stock_of(connection, row.id) if stock is None else stock,
        )

    # -- set-up -----------------------------------------------------------------------

    def init(self) -> bool:
        def work(connection: Connection) -> bool:
            # One initialiser at a time; a second one finds the schema there.
            connection.execute(text("SELECT pg_advisory_xact_lock(hashtext('inv.init'))"))
            before = schema.current_revision(connection)
            if before is not None and before > schema.HEAD:
                raise _Refused(
                    ConfigurationError(
                        f"the schema of {self.describe()} ({before}) is newer than this inv"
                    )
                )
            schema.upgrade(connection)
            created = connection.execute(
                text(
                    "INSERT INTO stores (code, name) VALUES ('main', 'Main store') "
                    "ON CONFLICT (code) DO NOTHING RETURNING id"
                )
            ).first()
            if created is not None:
                self._audit(
                    connection,
                    str(uuid.uuid4()),
                    "store.create",
                    store=MAIN_STORE,
                    sku=None,
                    reason="init",
                )
            return before is None

        self._wrote = True
        try:
            with self._connect(self.url, check=False) as connection, connection.begin():
                created = work(connection)
        except _Refused as refused:
            raise refused.error from None
        self._checked = False
        return created

    def upgrade(self) -> tuple[str | None, str]:
        """`inv db upgrade`: migrate to this code's schema; returns (before, after)."""
        with self._connect(self.url, check=False) as connection, connection.begin():
            before = schema.current_revision(connection)
            schema.upgrade(connection)
            connection.execute(
                text(
                    "SELECT audit_log_partition(now() + make_interval(months => m)) "
                    "FROM generate_series(-1, 12) AS m"
                )
            )
        self._checked = False
        return before, schema.HEAD

    # -- stores -----------------------------------------------------------------------

    def add_store(
        self, code: str, name: str | None = None, *, event_id: str | None = None
    ) -> Store:
        code = validate_store_code(code)
        name = validate_name(name, field="name") if name is not None else code

        def work(connection: Connection) -> Store:
            seen = self._claim(connection, event_id, f"store.create|{code}|{name}")
            if seen is not None:
                return Store(code, seen["name"])
            created = connection.execute(
                text(
                    "INSERT INTO stores (code, name) VALUES (:c, :n) "
                    "ON CONFLICT (code) DO NOTHING RETURNING id"
                ),
                {"c": code, "n": name},
            ).first()
            if created is None:
                raise _Refused(AlreadyExists(f"store {code!r} already exists"))
            self._audit(
                connection,
                event_id or str(uuid.uuid4()),
                "store.create",
                store=code,
                sku=None,
                reason=name,
            )
            self._remember(connection, event_id, {"name": name})
            return Store(code, name)

        return self._write(work)

    def remove_store(self, code: str, *, force: bool = False, event_id: str | None = None) -> None:
        code = validate_store_code(code)
        if code == MAIN_STORE:
            raise ValidationError("store 'main' cannot be removed", field="store")

        def work(connection: Connection) -> None:
            if self._claim(connection, event_id, f"store.delete|{code}|{force}") is not None:
                return
            found = connection.execute(
                text("SELECT id FROM stores WHERE code = :c FOR UPDATE"), {"c": code}
            ).scalar()
            if found is None:
                raise _Refused(NotFound(f"no store {code!r}"))
            held = connection.execute(
                text(
                    "SELECT p.sku, i.quantity FROM inventory i JOIN products p "
                    "ON p.id = i.product_id WHERE i.store_id = :s "
                    'ORDER BY lower(p.sku) COLLATE "C", p.sku COLLATE "C" FOR UPDATE OF i'
                ),
                {"s": found},
            ).all()
            on_hand = sum(q for _, q in held)
            if on_hand and not force:
                raise _Refused(
                    Conflict(
                        f"store {code!r} still holds {on_hand} units of stock; "
                        "move it away or use --force to write it off"
                    )
                )
            eid = event_id or str(uuid.uuid4())
            for sku, quantity in held:
                self._audit(
                    connection,
                    eid,
                    "product.delete",
                    store=code,
                    sku=sku,
                    delta=-quantity,
                    quantity_after=0,
                    reason="store removed",
                )
            connection.execute(text("DELETE FROM stores WHERE id = :s"), {"s": found})
            self._audit(connection, eid, "store.delete", store=code, sku=None)
            self._remember(connection, event_id, {})

        self._write(work)

    def stores(self) -> list[Store]:
        with self._read() as connection:
            rows = connection.execute(
                text('SELECT code, name FROM stores ORDER BY code COLLATE "C"')
            )
            return [Store(code, name) for code, name in rows]

    # -- catalog ----------------------------------------------------------------------

    def add_product(
        self,
        name: str,
        price: Decimal | str,
        *,
        sku: str | None = None,
        store: str = "main",
        quantity: int = 0,
        unit: str = "each",
        category: str | None = None,
        reorder_level: int = 0,
        event_id: str | None = None,
    ) -> Product:
        request = new_product(
            name,
            price,
            sku=sku,
            store=store,
            quantity=quantity,
            unit=unit,
            category=category,
            reorder_level=reorder_level,
        )
        code, quantity = request.store, request.quantity
        fields: dict[str, Any] = {
            "name": request.name,
            "price": request.price,
            "unit": request.unit,
            "category": request.category,
            "reorder_level": request.reorder_level,
        }
        fingerprint = request.fingerprint

        def work(connection: Connection) -> Product:
            seen = self._claim(connection, event_id, fingerprint)
            if seen is not None:
                return product_from_json(seen["product"])
            store_id = self._store_id(connection, code)
            new_sku = request.sku
            while True:
                candidate = new_sku or "P{:06d}".format(
                    connection.execute(text("SELECT nextval('product_sku_seq')")).scalar_one()
                )
                row = connection.execute(
                    text(
                        "INSERT INTO products (sku, name, price, unit, category, reorder_level) "
                        "VALUES (:sku, :name, :price, :unit, :category, :reorder_level) "
                        "ON CONFLICT ((lower(sku))) DO NOTHING RETURNING id"
                    ),
                    {**fields, "sku": candidate},
                ).first()
                if row is not None:
                    break
                if new_sku is not None:
                    existing = connection.execute(
                        text("SELECT sku FROM products WHERE lower(sku) = lower(:s)"),
                        {"s": new_sku},
                    ).scalar()
                    raise _Refused(
                        AlreadyExists(f"SKU {new_sku!r} already exists (as {existing!r})")
                    )
            connection.execute(
                text("INSERT INTO inventory (store_id, product_id, quantity) VALUES (:s, :p, :q)"),
                {"s": store_id, "p": row.id, "q": quantity},
            )
            self._audit(
                connection,
                event_id or str(uuid.uuid4()),
                "product.create",
                store=code,
                sku=candidate,
                delta=quantity,
                quantity_after=quantity,
            )
            product = Product(sku=candidate, **fields, stock={code: quantity})
            self._remember(connection, event_id, {"product": product_json(product)})
            return product

        return self._write(work)

    def edit_product(
        self,
        sku: str,
        *,
        name: str | None = None,
        price: Decimal | str | None = None,
        unit: str | None = None,
        category: str | None = None,
        reorder_level: int | None = None,
        event_id: str | None = None,
    ) -> Product:
        changes = product_changes(
            name=name, price=price, unit=unit, category=category, reorder_level=reorder_level
        )
        fingerprint = f"product.update|{sku_key(sku)}|{sorted(changes.items())}"

        def work(connection: Connection) -> Product:
            seen = self._claim(connection, event_id, fingerprint)
            if seen is not None:
                return product_from_json(seen["product"])
            row = self._product_row(connection, sku, lock=True)
            said = [
                f"{key} {show(getattr(row, key))} -> {show(value)}"
                for key, value in changes.items()
                if getattr(row, key) != value
            ]
            if said:
                connection.execute(
                    text(
                        "UPDATE products SET "
                        + ", ".join(f"{key} = :{key}" for key in changes)
                        + ", updated_at = now() WHERE id = :id"
                    ),
                    {**changes, "id": row.id},
                )
                self._audit(
                    connection,
                    event_id or str(uuid.uuid4()),
                    "product.update",
                    store=None,
                    sku=row.sku,
                    reason="; ".join(said),
                )
                row = self._product_row(connection, row.sku)
            product = self._product(connection, row)
            self._remember(connection, event_id, {"product": product_json(product)})
            return product

        return self._write(work)

    def remove_product(
        self,
        sku: str,
        *,
        store: str | None = None,
        force: bool = False,
        event_id: str | None = None,
    ) -> list[Movement]:
        code = validate_store_code(store) if store is not None else None
        fingerprint = f"product.delete|{sku_key(sku)}|{code}|{force}"

        def work(connection: Connection) -> list[Movement]:
            seen = self._claim(connection, event_id, fingerprint)
            if seen is not None:
                return [movement_from_json(m) for m in seen["movements"]]
            eid = event_id or str(uuid.uuid4())
            if code is not None:
                store_id = self._store_id(connection, code)
            row = self._product_row(connection, sku, lock=True)
            held = connection.execute(
                text(
                    "SELECT s.id, s.code, i.quantity FROM inventory i JOIN stores s "
                    "ON s.id = i.store_id WHERE i.product_id = :p "
                    'ORDER BY s.code COLLATE "C" FOR UPDATE OF i'
                ),
                {"p": row.id},
            ).all()
            written: list[Movement] = []
            if code is not None:
                here = [h for h in held if h.id == store_id]
                if not here:
                    raise _Refused(NotFound(f"{row.sku} is not stocked at {code}"))
                on_hand = here[0].quantity
                if on_hand and not force:
                    raise _Refused(
                        Conflict(
                            f"{row.sku} still has {on_hand} on hand at {code}; "
                            "use --force to write it off"
                        )
                    )
                connection.execute(
                    text("DELETE FROM inventory WHERE store_id = :s AND product_id = :p"),
                    {"s": store_id, "p": row.id},
                )
                written.append(
                    self._audit(
                        connection,
                        eid,
                        "product.delete",
                        store=code,
                        sku=row.sku,
                        delta=-on_hand,
                        quantity_after=0,
                    )
                )
            else:
                on_hand = {h.code: h.quantity for h in held if h.quantity}
                if on_hand and not force:
                    where = ", ".join(f"{q} at {s}" for s, q in sorted(on_hand.items()))
                    raise _Refused(
                        Conflict(
                            f"{row.sku} still has stock on hand ({where}); "
                            "use --force to write it off"
                        )
                    )
                for h in held:
                    written.append(
                        self._audit(
                            connection,
                            eid,
                            "product.delete",
                            store=h.code,
                            sku=row.sku,
                            delta=-h.quantity,
                            quantity_after=0,
                        )
                    )
                connection.execute(text("DELETE FROM products WHERE id = :p"), {"p": row.id})
                written.append(
                    self._audit(connection, eid, "product.delete", store=None, sku=row.sku)
                )
            self._remember(connection, event_id, {"movements": [movement_json(m) for m in written]})
            return written

        return self._write(work)

    def get(self, sku: str) -> Product:
        with self._read() as connection:
            try:
                row = self._product_row(connection, sku)
            except _Refused as refused:
                raise refused.error from None
            return self._product(connection, row)

    # -- stock ------------------------------------------------------------------------

    def _move(
        self,
        connection: Connection,
        eid: str,
        *,
        store: str,
        sku: str,
        delta: int | None = None,
        quantity: int | None = None,
        expect: int | None = None,
        reason: str | None = None,
        action: str,
        ids: tuple[int, int] | None = None,
    ) -> Movement:
        """One guarded statement: the store of record computes the new quantity."""
        if ids is None:
            store_id = self._store_id(connection, store)
            product = self._product_row(connection, sku)
            product_id, sku = product.id, product.sku
            connection.execute(
                text(
                    "INSERT INTO inventory (store_id, product_id, quantity) VALUES (:s, :p, 0) "
                    "ON CONFLICT DO NOTHING"
                ),
                {"s": store_id, "p": product_id},
            )
        else:
            store_id, product_id = ids
        params = {"s": store_id, "p": product_id, "d": delta, "q": quantity, "e": expect}
        if quantity is None:
            updated = connection.execute(
                text(
                    "UPDATE inventory SET quantity = quantity + :d, "
                    "version = nextval('stock_version_seq'), updated_at = now() "
                    "WHERE store_id = :s AND product_id = :p "
                    "AND CAST(quantity AS bigint) + :d BETWEEN 0 AND 2147483647 "
                    "AND (CAST(:e AS integer) IS NULL OR quantity = :e) "
                    "RETURNING quantity, quantity - :d AS before"
                ),
                params,
            ).first()
        else:
            updated = connection.execute(
                text(
                    "UPDATE inventory i SET quantity = :q, "
                    "version = nextval('stock_version_seq'), updated_at = now() "
                    "FROM (SELECT quantity FROM inventory "
                    "WHERE store_id = :s AND product_id = :p FOR UPDATE) old "
                    "WHERE i.store_id = :s AND i.product_id = :p "
                    "AND (CAST(:e AS integer) IS NULL OR old.quantity = :e) "
                    "RETURNING i.quantity, old.quantity AS before"
                ),
                params,
            ).first()
        if updated is None:
            current = connection.execute(
                text("SELECT quantity FROM inventory WHERE store_id = :s AND product_id = :p"),
                params,
            ).scalar_one()
            if expect is not None and current != expect:
                raise _Refused(
                    Conflict(
                        f"{sku} at {store} is {current}, not the expected {expect}; nothing changed"
                    )
                )
            assert delta is not None
            if current + delta > MAX_QUANTITY:
                raise _Refused(
                    ValidationError(
                        f"change: {sku} at {store} would exceed {MAX_QUANTITY}", field="change"
                    )
                )
            raise _Refused(
                InsufficientStock(
                    f"not enough {sku} at {store}: {current} on hand, {-delta} asked for",
                    available=current,
                    requested=-delta,
                )
            )
        return self._audit(
            connection,
            eid,
            action,
            store=store,
            sku=sku,
            delta=updated.quantity - updated.before,
            quantity_after=updated.quantity,
            reason=reason,
        )

    def _movement_once(
        self, event_id: str | None, fingerprint: str, work: Callable[[Connection, str], Movement]
    ) -> Movement:
        def run(connection: Connection) -> Movement:
            seen = self._claim(connection, event_id, fingerprint)
            if seen is not None:
                return movement_from_json(seen["movements"][0])
            moved = work(connection, event_id or str(uuid.uuid4()))
            self._remember(connection, event_id, {"movements": [movement_json(moved)]})
            return moved

        return self._write(run)

    def _change_stock(self, change: StockChange, event_id: str | None) -> Movement:
        return self._movement_once(
            event_id,
            change.fingerprint,
            lambda connection, eid: self._move(
                connection,
                eid,
                store=change.store,
                sku=change.sku,
                delta=change.delta,
                quantity=change.quantity,
                expect=change.expect,
                reason=change.reason,
                action=change.action,
            ),
        )

    def transfer(
        self,
        sku: str,
        from_store: str,
        to_store: str,
        quantity: int,
        reason: str | None = None,
        *,
        event_id: str | None = None,
    ) -> tuple[Movement, Movement]:
        move = transfer_request(sku, from_store, to_store, quantity, reason)
        source, target, quantity, reason = move.source, move.target, move.quantity, move.reason
        fingerprint = move.fingerprint

        def work(connection: Connection) -> tuple[Movement, Movement]:
            seen = self._claim(connection, event_id, fingerprint)
            if seen is not None:
                out, into = (movement_from_json(m) for m in seen["movements"])
                return out, into
            source_id = self._store_id(connection, source)
            target_id = self._store_id(connection, target)
            product = self._product_row(connection, sku)
            # Rows are created and locked in store-id order, whatever the direction, so two
            # opposite transfers wait for each other instead of deadlocking.
            for store_id in sorted((source_id, target_id)):
                connection.execute(
                    text(
                        "INSERT INTO inventory (store_id, product_id, quantity) "
                        "VALUES (:s, :p, 0) ON CONFLICT DO NOTHING"
                    ),
                    {"s": store_id, "p": product.id},
                )
            connection.execute(
                text(
                    "SELECT 1 FROM inventory WHERE product_id = :p AND store_id IN (:a, :b) "
                    "ORDER BY store_id FOR UPDATE"
                ),
                {"p": product.id, "a": source_id, "b": target_id},
            )
            eid = event_id or str(uuid.uuid4())
            out = self._move(
                connection,
                eid,
                store=source,
                sku=product.sku,
                delta=-quantity,
                reason=reason,
                action="stock.transfer_out",
                ids=(source_id, product.id),
            )
            into = self._move(
                connection,
                eid,
                store=target,
                sku=product.sku,
                delta=quantity,
                reason=reason,
                action="stock.transfer_in",
                ids=(target_id, product.id),
            )
            self._remember(
                connection, event_id, {"movements": [movement_json(out), movement_json(into)]}
            )
            return out, into

        return self._write(work)

    # -- batches ----------------------------------------------------------------------

    def apply(
        self,
        rows: Sequence[BatchRow],
        *,
        on_error: OnError = "reject-all",
        dry_run: bool = False,
        default_store: str = "main",
        event_id: str | None = None,
        progress: Progress | None = None,
    ) -> BatchResult:
        from . import bulk

        if on_error not in ("reject-all", "skip-rows"):
            raise ValidationError(f"on_error: {on_error!r} is not reject-all or skip-rows")
        default_store = validate_store_code(default_store)
        fingerprint = batch_fingerprint(rows, default_store) if event_id else "batch"

        def work(connection: Connection) -> BatchResult:
            seen = self._claim(connection, event_id, fingerprint, "batch")
            if seen is not None:
                return BatchResult(
                    rows=seen["rows"],
                    applied=seen["applied"],
                    unchanged=seen["unchanged"],
                    duplicates=seen["duplicates"],
                    problems=[RowProblem(*p) for p in seen["problems"]],
                    changes=[movement_from_json(m) for m in seen["changes"]],
                )
            loaded = bulk.load_state(connection, rows)
            state: State = loaded.state

            def remember(key: str, fp: str, written: list[Movement]) -> None:
                state.put(state.events, key, {"fp": fp, "new": True})

            result = run_batch(
                state,
                rows,
                actor=self.actor,
                source=self.source,
                batch_id=event_id or str(uuid.uuid4()),
                default_store=default_store,
                dry_run=dry_run,
                progress=progress,
                remember=remember,
            )
            if dry_run:
                raise _DryRun(result)
            if result.problems and on_error == "reject-all":
                raise _Refused(BatchRejected(result.problems))
            result.changes = bulk.write_back(connection, loaded, result.changes)
            if event_id is not None:
                self._remember(
                    connection,
                    event_id,
                    {
                        "rows": result.rows,
                        "applied": result.applied,
                        "unchanged": result.unchanged,
                        "duplicates": result.duplicates,
                        "problems": [[p.row, p.column, p.reason] for p in result.problems],
                        "changes": [movement_json(m) for m in result.changes],
                    },
                )
            return result

        try:
            return self._write(work)
        except _DryRun as dry:
            return dry.result

    # -- operations -------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The primary's health and size, and each replica's health and lag."""
        report: dict[str, Any] = {"backend": self.name, "where": self.describe(), "ok": True}
        with self._connect(self.url) as connection:
            counts = connection.execute(
                text(
                    "SELECT (SELECT count(*) FROM stores) AS stores, "
                    "(SELECT count(*) FROM products) AS products, "
                    "(SELECT count(*) FROM inventory) AS stock_rows, "
                    "(SELECT coalesce(max(id), 0) FROM audit_log) AS last_audit_id"
                )
            ).one()
            report.update(counts._asdict())
            report["schema"] = schema.current_revision(connection)
            senders = {
                r.application_name: r
                for r in connection.execute(
                    text(
                        "SELECT application_name, client_addr, state, "
                        "pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn) AS lag_bytes, "
                        "extract(epoch FROM replay_lag) AS lag_seconds "
                        "FROM pg_stat_replication"
                    )
                )
            }
        replicas = []
        for url in self.read_urls:
            entry: dict[str, Any] = {"where": _where(url), "ok": True}
            try:
                with self._connect(url) as connection:
                    row = connection.execute(
                        text(
                            "SELECT pg_is_in_recovery() AS recovering, "
                            "current_setting('cluster_name') AS name, "
                            "extract(epoch FROM now() - pg_last_xact_replay_timestamp()) "
                            "AS replay_age"
                        )
                    ).one()
                entry["in_recovery"] = row.recovering
                sender = senders.get(row.name)
                if sender is not None:
                    entry["lag_bytes"] = int(sender.lag_bytes or 0)
                    entry["lag_seconds"] = float(sender.lag_seconds or 0)
                    entry["state"] = sender.state
            except InventoryError as exc:
                entry.update(ok=False, error=str(exc))
                report["ok"] = False
            replicas.append(entry)
        report["replicas"] = replicas
        return report

    def prune_audit(self, older_than: datetime) -> list[str]:
        """Drop the monthly partitions that end at or before `older_than`, whole, and
        record that in the audit log (`audit.prune`)."""

        def work(connection: Connection) -> list[str]:
            partitions = connection.execute(
                text(
                    "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound "
                    "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "WHERE i.inhparent = 'audit_log'::regclass ORDER BY c.relname"
                )
            ).all()
            dropped = []
            for name, bound in partitions:
                upper = connection.execute(
                    text("SELECT CAST(substring(:b FROM 'TO \\(''([^'']+)''\\)') AS timestamptz)"),
                    {"b": bound},
                ).scalar()
                if upper is not None and upper <= older_than:
                    rows = connection.execute(text(f'SELECT count(*) FROM "{name}"')).scalar_one()
                    connection.execute(text(f'ALTER TABLE audit_log DETACH PARTITION "{name}"'))
                    connection.execute(text(f'DROP TABLE "{name}"'))
                    dropped.append(f"{name} ({rows} entries)")
            if dropped:
                self._audit(
                    connection,
                    str(uuid.uuid4()),
                    "audit.prune",
                    store=None,
                    sku=None,
                    reason=f"older than {format_time(older_than)}: {', '.join(dropped)}",
                )
            return dropped

        return self._write(work)

    def seed(
        self, *, stores: int, products: int, progress: Progress | None = None
    ) -> dict[str, int]:
        from . import seeding

        return seeding.seed(self, stores=stores, products=products, progress=progress)

    def verify_audit(self) -> tuple[int, list[str]]:
        with self._read() as connection:
            checked = connection.execute(text("SELECT count(*) FROM inventory")).scalar_one()
            rows = connection.execute(
                text(
                    "WITH last AS (SELECT DISTINCT ON (store, lower(sku)) store, "
                    "lower(sku) AS key, sku, quantity_after FROM audit_log "
                    "WHERE store IS NOT NULL AND sku IS NOT NULL "
                    "AND quantity_after IS NOT NULL ORDER BY store, lower(sku), id DESC), "
                    "stock AS (SELECT s.code AS store, lower(p.sku) AS key, p.sku, i.quantity "
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

    def export_state(self) -> Snapshot:
        with self._connect(self.url) as connection, connection.begin():
            connection.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
            stores = [
                Store(code, name)
                for code, name in connection.execute(
                    text('SELECT code, name FROM stores ORDER BY code COLLATE "C"')
                )
            ]
            stock: dict[int, dict[str, int]] = {}
            for product_id, code, quantity in connection.execute(
                text(
                    "SELECT i.product_id, s.code, i.quantity FROM inventory i "
                    'JOIN stores s ON s.id = i.store_id ORDER BY s.code COLLATE "C"'
                )
            ):
                stock.setdefault(product_id, {})[code] = quantity
            products = [
                Product(
                    r.sku, r.name, r.price, r.unit, r.category, r.reorder_level, stock.get(r.id, {})
                )
                for r in connection.execute(
                    text(
                        "SELECT id, sku, name, price, unit, category, reorder_level "
                        'FROM products ORDER BY sku COLLATE "C"'
                    )
                )
            ]
            history = [
                _movement(r)
                for r in connection.execute(
                    text(f"SELECT {AUDIT_COLUMNS} FROM audit_log ORDER BY id")
                )
            ]
        return Snapshot(stores, products, history)

    def import_state(self, snapshot: Snapshot, *, progress: Progress | None = None) -> None:
        from . import bulk

        def work(connection: Connection) -> None:
            bulk.import_snapshot(connection, snapshot, progress=progress)

        self._write(work)

    # -- reads ------------------------------------------------------------------------

    def list_items(
        self,
        *,
        store: str | None = None,
        low_stock: bool = False,
        search: str | None = None,
        category: str | None = None,
        sort: str = "sku",
        descending: bool = False,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Item]:
        check_page(sort=sort, limit=limit, offset=offset)
        code = validate_store_code(store) if store is not None else None
        where = []
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        with self._read() as connection:
            if code is not None:
                params["store_id"] = self._read_store_id(connection, code)
                where.append("i.store_id = :store_id")
            if low_stock:
                where.append("p.reorder_level > 0 AND i.quantity <= p.reorder_level")
            if search:
                params["search"] = search.strip().lower()
                where.append(
                    "(strpos(lower(p.sku), :search) > 0 OR strpos(lower(p.name), :search) > 0)"
                )
            if category:
                params["category"] = category.strip().lower()
                where.append("lower(p.category) = :category")
            direction = "DESC" if descending else "ASC"
            first = {
                "sku": f'lower(p.sku) COLLATE "C" {direction}',
                "name": f'lower(p.name) COLLATE "C" {direction}',
                "quantity": f"coalesce(i.quantity, 0) {direction}",
                "value": f"p.price * coalesce(i.quantity, 0) {direction}",
            }[sort]
            join = "JOIN" if code is not None or low_stock else "LEFT JOIN"
            sql = (
                "SELECT p.sku, p.name, p.price, p.unit, p.category, p.reorder_level, "
                "s.code AS store, coalesce(i.quantity, 0) AS quantity "
                f"FROM products p {join} inventory i ON i.product_id = p.id "
                "LEFT JOIN stores s ON s.id = i.store_id "
                + (f"WHERE {' AND '.join(where)} " if where else "")
                + f'ORDER BY {first}, lower(p.sku) COLLATE "C", p.sku COLLATE "C", '
                's.code COLLATE "C" NULLS FIRST LIMIT :limit OFFSET :offset'
            )
            rows = connection.execute(text(sql), params)
            return [
                Item(
                    r.sku, r.name, r.price, r.unit, r.category, r.reorder_level, r.store, r.quantity
                )
                for r in rows
            ]

    def _read_store_id(self, connection: Connection, code: str) -> int:
        try:
            return self._store_id(connection, code)
        except _Refused as refused:
            raise refused.error from None

    def history(
        self,
        sku: str | None = None,
        *,
        store: str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> list[Movement]:
        check_page(limit=limit)
        code = validate_store_code(store) if store is not None else None
        where = []
        params: dict[str, Any] = {"limit": limit}
        if sku is not None:
            where.append("lower(sku) = lower(:sku)")
            params["sku"] = sku.strip()
        if code is not None:
            where.append("store = :store")
            params["store"] = code
        if since is not None:
            where.append("at >= :since")
            params["since"] = since
        sql = (
            f"SELECT {AUDIT_COLUMNS} FROM audit_log "
            + (f"WHERE {' AND '.join(where)} " if where else "")
            + "ORDER BY id DESC LIMIT :limit"
        )
        with self._read() as connection:
            return [_movement(r) for r in connection.execute(text(sql), params)]

    def report_value(self, *, store: str | None = None) -> list[StoreValue]:
        code = validate_store_code(store) if store is not None else None
        with self._read() as connection:
            # Aggregate stock by store id first (parallel-friendly), then name the stores.
            store_id = self._read_store_id(connection, code) if code is not None else None
            only = "WHERE i.store_id = :store_id " if store_id is not None else ""
            rows = connection.execute(
                text(
                    "SELECT s.code, coalesce(t.products, 0) AS products, "
                    "coalesce(t.units, 0) AS units, coalesce(t.value, 0) AS value "
                    "FROM stores s LEFT JOIN (SELECT i.store_id, count(*) AS products, "
                    "sum(i.quantity) AS units, sum(i.quantity * p.price) AS value "
                    "FROM inventory i JOIN products p ON p.id = i.product_id "
                    f"{only}GROUP BY i.store_id) t ON t.store_id = s.id "
                    + ("WHERE s.id = :store_id " if store_id is not None else "")
                    + 'ORDER BY s.code COLLATE "C"'
                ),
                {"store_id": store_id},
            )
            return [
                StoreValue(r.code, r.products, r.units, Decimal(r.value).quantize(Decimal("0.01")))
                for r in rows
            ]

    def report_movements(
        self,
        *,
        store: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[MovementSummary]:
        code = validate_store_code(store) if store is not None else None
        with self._read() as connection:
            if code is not None:
                self._read_store_id(connection, code)
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
                {"code": code, "since": since, "until": until},
            )
            return [
                MovementSummary(r.store, r.sku, r.movements, r.units_in, r.units_out) for r in rows
            ]


class _DryRun(Exception):
    """Rolls a dry run's transaction back, carrying its result out."""

    def __init__(self, result: BatchResult) -> None:
        self.result = result


def _secret(value: Any) -> str | None:
    if value is None:
        return None
    getter = getattr(value, "get_secret_value", None)
    return str(getter() if getter else value)
