"""The `postgres` backend (v2): PostgreSQL through SQLAlchemy Core and psycopg 3.

Configuration (settings; see the README for flags and environment names)::

    database_url        the primary             INV_DATABASE_URL
                        postgresql://user:password@host:5432/inventory
    read_database_urls  replicas, comma-separated   INV_READ_DATABASE_URLS

Reads go to a replica when there is one; writes, and reads that follow a write by the
same backend object (one command), go to the primary.  The schema is managed by Alembic
(`inv db upgrade`); a database whose schema is behind this code is refused with a hint.
Connections, error translation and retries are `backends.postgres.database`; the
queries of reads are `backends.postgres.reads`.

A movement is one guarded statement (`UPDATE ... SET quantity = quantity + :d WHERE ...
AND quantity + :d >= 0 RETURNING`) plus its audit row and its idempotency record, in
one transaction; when the guard refuses, `backends.rules` says why.  Transfers lock
their two rows in store order, so opposite transfers never deadlock.  Batches (import)
lock the rows they touch, apply the shared rules of `backends.engine` to them, and write
the result back with COPY and set-based SQL.  A whole clean CSV file (`import_file`) is
applied in the database, rows and all (`backends.postgres.fileimport`).

Example::

    with PostgresBackend("postgresql://inv@127.0.0.1/inventory", actor="ana") as inv:
        inv.init()
        inv.adjust("main", "P000001", -2, "sale")
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Self, TypeVar

from psycopg.rows import namedtuple_row
from sqlalchemy import text
from sqlalchemy.engine import Connection

from .. import auth, requests, rules, values
from ..auth import IssuedToken, Token, User
from ..base import Backend, Progress
from ..batch import BatchResult, BatchRow, OnError
from ..engine import State, run_batch
from ..errors import (
    AlreadyExists,
    BackendUnavailable,
    BatchRejected,
    ConfigurationError,
    InventoryError,
    NotFound,
    ValidationError,
)
from ..models import (
    MAIN_STORE,
    Edited,
    Item,
    Movement,
    MovementSummary,
    Product,
    Snapshot,
    Store,
    StoreValue,
    format_time,
)
from ..requests import (
    StockChange,
    movement_from_json,
    movement_json,
    product_from_json,
    product_json,
    result_movements,
    reused_key,
)
from ..settings import secret
from . import reads, schema
from .database import Collision, Database, read_urls, where

if TYPE_CHECKING:
    from ..settings import Settings

__all__ = ["PostgresBackend"]

T = TypeVar("T")

AUDIT_COLUMNS = reads.AUDIT_COLUMNS
USER_COLUMNS = "username, role, stores, disabled, created_at"
TOKEN_COLUMNS = "id, name, created_at, expires_at, last_used_at"
#: How stale a token's time of last use may get before `authenticate` writes it.
TOUCH_EVERY = timedelta(seconds=60)


class _DryRun(Exception):
    """Rolls a dry run's transaction back, carrying its result out."""

    def __init__(self, result: BatchResult) -> None:
        self.result = result


class _NotTaken(Exception):
    """Rolls back an import of a file that is left to the rules in Python."""


def _user(row: Any) -> User:
    return User(
        username=row.username,
        role=row.role,
        stores=tuple(row.stores) if row.stores is not None else None,
        disabled=row.disabled,
        created_at=row.created_at,
    )


def _token(row: Any) -> Token:
    return Token(
        id=row.id,
        username=row.username,
        name=row.name,
        created_at=row.created_at,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
    )


def _replayed(seen: dict[str, Any]) -> list[Movement]:
    """The entries a key's first use wrote, as remembered."""
    return [movement_from_json(m, replayed=True) for m in result_movements(seen)]


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
        self.db = Database(url, read_urls)
        self._touched: list[Movement] = []

    @classmethod
    def from_settings(cls, settings: Settings, *, actor: str, source: str) -> Self:
        url = secret(settings.database_url)
        if not url:
            raise ConfigurationError(
                f"the {cls.name} backend needs a database: set INV_DATABASE_URL "
                "(postgresql://user:password@host:5432/dbname)"
            )
        return cls(url, read_urls=read_urls(settings), actor=actor, source=source)

    @property
    def url(self) -> str:
        return self.db.url

    @property
    def read_urls(self) -> list[str]:
        return self.db.read_urls

    def describe(self) -> str:
        return self.db.describe()

    def close(self) -> None:
        self.db.close()

    # -- transactions -----------------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.db.read() as connection:
            yield connection

    def _write(self, work: Callable[[Connection], T], *, everything: bool = False) -> T:
        """Run `work` in one transaction on the primary (see `Database.write`), then the
        post-write hook with the audit entries it wrote (`everything`: it may have changed
        anything).  A refusal or a dry run rolled back and changed nothing; a service lost
        on the way may have been lost after the commit, so the hook hears that anything
        may have changed."""
        self._touched = []
        try:
            result = self.db.write(work)
        except BackendUnavailable:
            # Lost while committing, perhaps after the commit: anything may have changed.
            self._written(None)
            raise
        self._written(None if everything else self._touched)
        return result

    def _written(self, entries: Sequence[Movement] | None) -> None:
        """After every write: the entries it wrote, or None when anything may have changed.
        The kafka backend drops the cache entries they touch.  (A backend object serves
        one caller at a time, as a connection does.)"""

    @contextmanager
    def _primary(self) -> Iterator[Connection]:
        """The primary, each statement its own transaction, for what must see the latest
        state on every request (a token just revoked, a user just disabled) without
        sending this object's later reads there, as a write does."""
        with self.db.connect() as connection:
            yield connection.execution_options(isolation_level="AUTOCOMMIT")

    def _write_unchecked(self, work: Callable[[Connection], T]) -> T:
        """`_write` before the schema is there to check (init, upgrade)."""
        self._touched = []
        try:
            return self.db.write(work, check=False, attempts=1)
        finally:
            self._written(None)

    # -- idempotency ------------------------------------------------------------------

    @staticmethod
    def _claim(
        connection: Connection, request: requests.Request, what: str = "request"
    ) -> dict[str, Any] | None:
        """Take the request's key for this transaction; if it was applied before, return
        what was remembered (a concurrent holder of the key is waited for)."""
        if request.event_id is None:
            return None
        taken = connection.execute(
            text(
                "INSERT INTO applied_events (event_id, fingerprint) VALUES (:k, :fp) "
                "ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
            ),
            {"k": request.event_id, "fp": request.fingerprint},
        ).first()
        if taken is not None:
            return None
        seen = connection.execute(
            text("SELECT fingerprint, result, at FROM applied_events WHERE event_id = :k"),
            {"k": request.event_id},
        ).one()
        if seen.fingerprint != request.fingerprint:
            raise reused_key(request.event_id, what)
        result: dict[str, Any] = dict(seen.result)
        if "movements" not in result and "changes" not in result:
            # Kept by an inv that remembered no entries for this kind of request: they
            # are in the audit log, written in the same transaction (the same `at`).
            rows = connection.execute(
                text(
                    f"SELECT {AUDIT_COLUMNS} FROM audit_log WHERE at = :at "
                    "AND event_id = :k ORDER BY id"
                ),
                {"at": seen.at, "k": request.event_id},
            )
            result["movements"] = [movement_json(reads.movement(r)) for r in rows]
        return result

    @staticmethod
    def _remember(
        connection: Connection,
        request: requests.Request,
        written: Sequence[Movement],
        extra: dict[str, Any] | None = None,
    ) -> None:
        if request.event_id is not None:
            result = {**(extra or {}), "movements": [movement_json(m) for m in written]}
            connection.execute(
                text("UPDATE applied_events SET result = CAST(:r AS jsonb) WHERE event_id = :k"),
                {"k": request.event_id, "r": json.dumps(result)},
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
                "INSERT INTO audit_log (actor, source, event_id, store, sku, sku_key, action, "
                "delta, quantity_after, reason) VALUES (:actor, :source, :event_id, :store, "
                ":sku, :sku_key, :action, :delta, :quantity_after, :reason) "
                f"RETURNING {AUDIT_COLUMNS}"
            ),
            {
                "actor": self.actor,
                "source": self.source,
                "event_id": event_id,
                "store": store,
                "sku": sku,
                "sku_key": values.sku_key(sku) if sku is not None else None,
                "action": action,
                "delta": delta,
                "quantity_after": quantity_after,
                "reason": reason,
            },
        ).one()
        entry = reads.movement(row)
        self._touched.append(entry)
        return entry

    # -- set-up -----------------------------------------------------------------------

    def init(self, *, record: bool = True) -> bool:
        def work(connection: Connection) -> bool:
            # One initialiser at a time; a second one finds the schema there.
            connection.execute(text("SELECT pg_advisory_xact_lock(hashtext('inv.init'))"))
            before = schema.current_revision(connection)
            if before is not None and before != schema.HEAD and not schema.is_older(before):
                raise ConfigurationError(
                    f"the schema of {self.describe()} ({before}) is not one this inv knows; "
                    "upgrade inv"
                )
            schema.upgrade(connection)
            created = connection.execute(
                text(
                    "INSERT INTO stores (code, name) VALUES ('main', 'Main store') "
                    "ON CONFLICT (code) DO NOTHING RETURNING id"
                )
            ).first()
            if created is not None and record:
                self._audit(
                    connection,
                    str(uuid.uuid4()),
                    "store.create",
                    store=MAIN_STORE,
                    sku=None,
                    reason="init",
                )
            return before is None

        created = self._write_unchecked(work)
        self.db.checked = False
        return created

    def upgrade(self) -> tuple[str | None, str]:
        """`inv db upgrade`: migrate to this code's schema; returns (before, after)."""

        def work(connection: Connection) -> str | None:
            before = schema.current_revision(connection)
            schema.upgrade(connection)
            connection.execute(
                text(
                    "SELECT audit_log_partition(now() + make_interval(months => m)) "
                    "FROM generate_series(-1, 12) AS m"
                )
            )
            return before

        before = self._write_unchecked(work)
        self.db.checked = False
        return before, schema.HEAD

    # -- stores -----------------------------------------------------------------------

    def add_store(
        self, code: str, name: str | None = None, *, event_id: str | None = None
    ) -> Store:
        request = requests.add_store(code, name, event_id)

        def work(connection: Connection) -> Store:
            seen = self._claim(connection, request)
            if seen is not None:
                return Store(request.code, seen["name"], replayed=True)
            created = connection.execute(
                text(
                    "INSERT INTO stores (code, name) VALUES (:c, :n) "
                    "ON CONFLICT (code) DO NOTHING RETURNING id"
                ),
                {"c": request.code, "n": request.name},
            ).first()
            if created is None:
                raise AlreadyExists(f"store {request.code!r} already exists")
            entry = self._audit(
                connection,
                request.event_id or str(uuid.uuid4()),
                "store.create",
                store=request.code,
                sku=None,
                reason=request.name,
            )
            self._remember(connection, request, [entry], {"name": request.name})
            return Store(request.code, request.name)

        return self._write(work)

    def remove_store(
        self, code: str, *, force: bool = False, event_id: str | None = None
    ) -> list[Movement]:
        request = requests.remove_store(code, force, event_id)

        def work(connection: Connection) -> list[Movement]:
            seen = self._claim(connection, request)
            if seen is not None:
                return _replayed(seen)
            found = reads.store_id(connection, request.code, lock="FOR UPDATE")
            held = connection.execute(
                text(
                    "SELECT p.sku, i.quantity FROM inventory i JOIN products p "
                    "ON p.id = i.product_id WHERE i.store_id = :s "
                    'ORDER BY p.sku_key, p.sku COLLATE "C" FOR UPDATE OF i'
                ),
                {"s": found},
            ).all()
            rules.check_store_removal(request.code, sum(q for _, q in held), force=request.force)
            eid = request.event_id or str(uuid.uuid4())
            written = [
                self._audit(
                    connection,
                    eid,
                    "product.delete",
                    store=request.code,
                    sku=sku,
                    delta=-quantity,
                    quantity_after=0,
                    reason="store removed",
                )
                for sku, quantity in held
            ]
            connection.execute(text("DELETE FROM stores WHERE id = :s"), {"s": found})
            written.append(
                self._audit(connection, eid, "store.delete", store=request.code, sku=None)
            )
            self._remember(connection, request, written)
            return written

        return self._write(work)

    def stores(self) -> list[Store]:
        with self._read() as connection:
            return reads.stores(connection)

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
        request = requests.new_product(
            name,
            price,
            sku=sku,
            store=store,
            quantity=quantity,
            unit=unit,
            category=category,
            reorder_level=reorder_level,
            event_id=event_id,
        )
        fields = request.fields()

        def work(connection: Connection) -> Product:
            seen = self._claim(connection, request)
            if seen is not None:
                return product_from_json(seen["product"], replayed=True)
            store_id = reads.store_id(connection, request.store)
            while True:
                candidate = request.sku or rules.generated_sku(
                    connection.execute(text("SELECT nextval('product_sku_seq')")).scalar_one()
                )
                row = connection.execute(
                    text(
                        "INSERT INTO products (sku, sku_key, name, name_key, price, unit, "
                        "category, category_key, reorder_level) VALUES (:sku, :sku_key, "
                        ":name, :name_key, :price, :unit, :category, :category_key, "
                        ":reorder_level) ON CONFLICT (sku_key) DO NOTHING RETURNING id"
                    ),
                    {
                        **fields,
                        "sku": candidate,
                        **dict(
                            zip(
                                ("sku_key", "name_key", "category_key"),
                                reads.product_keys(candidate, fields["name"], fields["category"]),
                                strict=True,
                            )
                        ),
                    },
                ).first()
                if row is not None:
                    break
                if request.sku is not None:
                    existing = reads.product_row(connection, request.sku).sku
                    raise AlreadyExists(f"SKU {request.sku!r} already exists (as {existing!r})")
            connection.execute(
                text("INSERT INTO inventory (store_id, product_id, quantity) VALUES (:s, :p, :q)"),
                {"s": store_id, "p": row.id, "q": request.quantity},
            )
            entry = self._audit(
                connection,
                request.event_id or str(uuid.uuid4()),
                "product.create",
                store=request.store,
                sku=candidate,
                delta=request.quantity,
                quantity_after=request.quantity,
            )
            product = Product(sku=candidate, **fields, stock={request.store: request.quantity})
            self._remember(connection, request, [entry], {"product": product_json(product)})
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
    ) -> Edited:
        request = requests.edit_product(
            sku,
            name=name,
            price=price,
            unit=unit,
            category=category,
            reorder_level=reorder_level,
            event_id=event_id,
        )

        def work(connection: Connection) -> Edited:
            seen = self._claim(connection, request)
            if seen is not None:
                entries = _replayed(seen)
                return Edited(
                    product_from_json(seen["product"], replayed=True),
                    entries[0].reason if entries else None,
                    replayed=True,
                )
            row = reads.product_row(connection, request.sku, lock=True)
            changed, said = rules.product_diff(row._asdict(), dict(request.changes))
            written = []
            if said is not None:
                columns = dict(changed)
                _, name_key, category_key = reads.product_keys(
                    row.sku, changed.get("name", row.name), changed.get("category", row.category)
                )
                if "name" in changed:
                    columns["name_key"] = name_key
                if "category" in changed:
                    columns["category_key"] = category_key
                connection.execute(
                    text(
                        "UPDATE products SET "
                        + ", ".join(f"{key} = :{key}" for key in columns)
                        + ", updated_at = now() WHERE id = :id"
                    ),
                    {**columns, "id": row.id},
                )
                written.append(
                    self._audit(
                        connection,
                        request.event_id or str(uuid.uuid4()),
                        "product.update",
                        store=None,
                        sku=row.sku,
                        reason=said,
                    )
                )
                row = reads.product_row(connection, row.sku)
            product = reads.product(connection, row)
            self._remember(connection, request, written, {"product": product_json(product)})
            return Edited(product, said)

        return self._write(work)

    def remove_product(
        self,
        sku: str,
        *,
        store: str | None = None,
        force: bool = False,
        event_id: str | None = None,
    ) -> list[Movement]:
        request = requests.remove_product(sku, store, force, event_id)

        def work(connection: Connection) -> list[Movement]:
            seen = self._claim(connection, request)
            if seen is not None:
                return _replayed(seen)
            eid = request.event_id or str(uuid.uuid4())
            code = request.store
            store_id = reads.store_id(connection, code) if code is not None else None
            row = reads.product_row(connection, request.sku, lock=True)
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
                    raise NotFound(f"{row.sku} is not stocked at {code}")
                on_hand = here[0].quantity
                rules.check_unstock(row.sku, code, on_hand, force=request.force)
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
                rules.check_product_removal(
                    row.sku, {h.code: h.quantity for h in held}, force=request.force
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
            self._remember(connection, request, written)
            return written

        return self._write(work)

    def get(self, sku: str) -> Product:
        checked = values.sku(sku, existing=True)
        with self._read() as connection:
            return reads.product(connection, reads.product_row(connection, checked))

    def quantity(self, store: str, sku: str) -> int:
        code = values.store_code(store)
        checked = values.sku(sku, existing=True)
        with self._read() as connection:
            return reads.quantity(connection, code, checked)

    def acting_as(self, actor: str, source: str) -> Self:
        """A view for one caller: its own `Database` object (the same pools), so that
        one request's write sends only that request's later reads to the primary."""
        view = super().acting_as(actor, source)
        view.db = copy.copy(self.db)
        view.db.wrote = False
        return view

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
        """One guarded statement: the store of record computes the new quantity; when
        the guard refuses, `rules.next_quantity` on the locked row says why."""
        if ids is None:
            store_id, product_id, sku = reads.stock_row(connection, store, sku)
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
                text(
                    "SELECT quantity FROM inventory WHERE store_id = :s AND product_id = :p "
                    "FOR UPDATE"
                ),
                params,
            ).scalar()
            if current is None:  # removed since the INSERT above: run the whole thing again
                raise Collision(f"the stock of {sku} at {store} was removed meanwhile")
            after = rules.next_quantity(
                current, sku=sku, store=store, delta=delta, quantity=quantity, expect=expect
            )
            # The rule allows what the guard refused: the rule is the one that decides.
            updated = connection.execute(
                text(
                    "UPDATE inventory SET quantity = :q, version = nextval('stock_version_seq'), "
                    "updated_at = now() WHERE store_id = :s AND product_id = :p "
                    "RETURNING quantity, CAST(:before AS integer) AS before"
                ),
                {**params, "q": after, "before": current},
            ).one()
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

    def _change_stock(self, change: StockChange) -> Movement:
        def work(connection: Connection) -> Movement:
            seen = self._claim(connection, change)
            if seen is not None:
                return _replayed(seen)[0]
            moved = self._move(
                connection,
                change.event_id or str(uuid.uuid4()),
                store=change.store,
                sku=change.sku,
                delta=change.delta,
                quantity=change.quantity,
                expect=change.expect,
                reason=change.reason,
                action=change.action,
            )
            self._remember(connection, change, [moved])
            return moved

        return self._write(work)

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
        move = requests.transfer(sku, from_store, to_store, quantity, reason, event_id)

        def work(connection: Connection) -> tuple[Movement, Movement]:
            seen = self._claim(connection, move)
            if seen is not None:
                out, into = _replayed(seen)
                return out, into
            source_id = reads.store_id(connection, move.source)
            target_id = reads.store_id(connection, move.target)
            product = reads.product_row(connection, move.sku)
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
            eid = move.event_id or str(uuid.uuid4())
            out = self._move(
                connection,
                eid,
                store=move.source,
                sku=product.sku,
                delta=-move.quantity,
                reason=move.reason,
                action="stock.transfer_out",
                ids=(source_id, product.id),
            )
            into = self._move(
                connection,
                eid,
                store=move.target,
                sku=product.sku,
                delta=move.quantity,
                reason=move.reason,
                action="stock.transfer_in",
                ids=(target_id, product.id),
            )
            self._remember(connection, move, [out, into])
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

        request = requests.batch(
            rows, default_store=default_store, on_error=on_error, event_id=event_id
        )

        def work(connection: Connection) -> BatchResult:
            seen = self._claim(connection, request, "batch")
            if seen is not None:
                return requests.batch_from_json(seen, _replayed(seen))
            loaded = bulk.load_state(connection, rows)
            state: State = loaded.state

            def remember(key: str, fp: str, written: list[Movement]) -> None:
                state.put(state.events, key, {"fp": fp, "new": True})

            result = run_batch(
                state,
                rows,
                actor=self.actor,
                source=self.source,
                batch_id=request.event_id or str(uuid.uuid4()),
                default_store=request.default_store,
                dry_run=dry_run,
                progress=progress,
                remember=remember,
            )
            if dry_run:
                raise _DryRun(result)
            if result.problems and request.on_error == "reject-all":
                raise BatchRejected(result.problems)
            result.changes = bulk.write_back(connection, loaded, result.changes)
            self._touched.extend(result.changes)
            self._remember(connection, request, result.changes, requests.batch_json(result))
            return result

        try:
            return self._write(work)
        except _DryRun as dry:
            return dry.result

    def import_file(
        self,
        data: bytes,
        fmt: str,
        *,
        on_error: OnError = "reject-all",
        dry_run: bool = False,
        default_store: str = "main",
        event_id: str | None = None,
        progress: Progress | None = None,
    ) -> BatchResult | None:
        """A clean CSV file is applied in the database (`backends.postgres.fileimport`);
        anything else, a dry run and a batch with an idempotency key return None."""
        from . import fileimport

        request = requests.batch(
            [], default_store=default_store, on_error=on_error, event_id=event_id
        )
        if fmt != "csv" or dry_run or request.event_id is not None:
            return None
        file = fileimport.csv_file(data)
        if file is None:
            return None

        def work(connection: Connection) -> BatchResult:
            result = fileimport.apply_csv(
                connection,
                file,
                actor=self.actor,
                source=self.source,
                batch_id=str(uuid.uuid4()),
                default_store=request.default_store,
                progress=progress,
            )
            if result is None:
                raise _NotTaken
            self._touched.extend(result.changes)
            return result

        try:
            return self._write(work)
        except _NotTaken:
            return None

    # -- users and API tokens (straight to PostgreSQL, on the kafka backend too) ---------

    @staticmethod
    def _check_stores(connection: Connection, codes: Sequence[str] | None) -> None:
        """`NotFound` for the first of `codes` that is not a store; the others are held
        (KEY SHARE) until the transaction ends, so none is removed meanwhile."""
        if not codes:
            return
        found = set(
            connection.execute(
                text("SELECT code FROM stores WHERE code = ANY(:c) FOR KEY SHARE"),
                {"c": list(codes)},
            ).scalars()
        )
        for code in codes:
            if code not in found:
                raise NotFound(f"no store {code!r}")

    def add_user(
        self,
        username: str,
        password: str,
        role: str,
        *,
        stores: Sequence[str] | None = None,
    ) -> User:
        name = values.username(username)
        values.password(password)
        checked_role = auth.role(role)
        limited = auth.user_stores(stores)
        hashed = auth.hash_password(password)  # slow: before the transaction

        def work(connection: Connection) -> User:
            self._check_stores(connection, limited)
            row = connection.execute(
                text(
                    "INSERT INTO users (username, password_hash, role, stores) "
                    "VALUES (:u, :h, :r, :s) ON CONFLICT (username) DO NOTHING "
                    f"RETURNING {USER_COLUMNS}"
                ),
                {
                    "u": name,
                    "h": hashed,
                    "r": checked_role,
                    "s": list(limited) if limited is not None else None,
                },
            ).first()
            if row is None:
                raise AlreadyExists(f"user {name!r} already exists")
            return _user(row)

        return self._write(work)

    def users(self) -> list[User]:
        with self._read() as connection:
            rows = connection.execute(
                text(f'SELECT {USER_COLUMNS} FROM users ORDER BY username COLLATE "C"')
            )
            return [_user(row) for row in rows]

    def get_user(self, username: str) -> User:
        name = values.username(username)
        with self._read() as connection:
            row = connection.execute(
                text(f"SELECT {USER_COLUMNS} FROM users WHERE username = :u"), {"u": name}
            ).first()
        if row is None:
            raise auth.no_user(name)
        return _user(row)

    def update_user(
        self,
        username: str,
        *,
        password: str | None = None,
        role: str | None = None,
        stores: Sequence[str] | None = None,
        disabled: bool | None = None,
    ) -> User:
        name = values.username(username)
        changes = auth.user_changes(password=password, role=role, stores=stores, disabled=disabled)

        def work(connection: Connection) -> User:
            row = connection.execute(
                text(f"SELECT {USER_COLUMNS} FROM users WHERE username = :u FOR UPDATE"),
                {"u": name},
            ).first()
            if row is None:
                raise auth.no_user(name)
            self._check_stores(connection, changes.get("stores"))
            if changes:
                row = connection.execute(
                    text(
                        "UPDATE users SET "
                        + ", ".join(f"{column} = :{column}" for column in changes)
                        + f" WHERE username = :u RETURNING {USER_COLUMNS}"
                    ),
                    {**changes, "u": name},
                ).one()
            return _user(row)

        return self._write(work)

    def remove_user(self, username: str) -> None:
        name = values.username(username)

        def work(connection: Connection) -> None:
            # Its tokens go with it (ON DELETE CASCADE).
            gone = connection.execute(
                text("DELETE FROM users WHERE username = :u RETURNING id"), {"u": name}
            ).first()
            if gone is None:
                raise auth.no_user(name)

        self._write(work)

    def login(self, username: str, password: str) -> User:
        try:
            name: str | None = values.username(username)
        except ValidationError:
            name = None
        row = None
        if name is not None:
            with self._primary() as connection:
                row = connection.execute(
                    text(f"SELECT password_hash, {USER_COLUMNS} FROM users WHERE username = :u"),
                    {"u": name},
                ).first()
        stored = row.password_hash if row is not None else None
        # Verified whatever the user's state (and with no connection held: it is slow),
        # so each refusal takes as long as the others.
        if not auth.verify_password(stored, password) or row is None or row.disabled:
            raise auth.bad_login()
        if auth.needs_rehash(row.password_hash):
            fresh = auth.hash_password(password)
            with self._primary() as connection:
                connection.execute(
                    text(
                        "UPDATE users SET password_hash = :new "
                        "WHERE username = :u AND password_hash = :old"
                    ),
                    {"new": fresh, "u": name, "old": row.password_hash},
                )
        return _user(row)

    def create_token(
        self,
        username: str,
        *,
        name: str | None = None,
        expires_at: datetime | None = None,
    ) -> IssuedToken:
        owner = values.username(username)
        label = auth.token_name(name)
        secret, digest = auth.new_token()

        def work(connection: Connection) -> Token:
            row = connection.execute(
                text(
                    "INSERT INTO api_tokens (user_id, token_hash, name, expires_at) "
                    "SELECT id, :h, :n, :e FROM users WHERE username = :u "
                    f"RETURNING {TOKEN_COLUMNS}, CAST(:u AS text) AS username"
                ),
                {"h": digest, "n": label, "e": expires_at, "u": owner},
            ).first()
            if row is None:
                raise auth.no_user(owner)
            return _token(row)

        return IssuedToken(self._write(work), secret)

    def tokens(self, username: str | None = None) -> list[Token]:
        owner = values.username(username) if username is not None else None
        with self._read() as connection:
            if owner is not None:
                known = connection.execute(
                    text("SELECT 1 FROM users WHERE username = :u"), {"u": owner}
                ).first()
                if known is None:
                    raise auth.no_user(owner)
            rows = connection.execute(
                text(
                    "SELECT t.id, t.name, t.created_at, t.expires_at, t.last_used_at, "
                    "u.username FROM api_tokens t JOIN users u ON u.id = t.user_id "
                    "WHERE CAST(:u AS text) IS NULL OR u.username = :u ORDER BY t.id"
                ),
                {"u": owner},
            )
            return [_token(row) for row in rows]

    def revoke_token(self, token_id: int) -> Token:
        number = values.integer(token_id, field="id", minimum=1, maximum=2**63 - 1)

        def work(connection: Connection) -> Token:
            row = connection.execute(
                text(
                    "DELETE FROM api_tokens t USING users u WHERE t.id = :i "
                    "AND u.id = t.user_id RETURNING t.id, t.name, t.created_at, "
                    "t.expires_at, t.last_used_at, u.username"
                ),
                {"i": number},
            ).first()
            if row is None:
                raise NotFound(f"no token {number}")
            return _token(row)

        return self._write(work)

    def authenticate(self, secret: str) -> User:
        if not auth.looks_like_token(secret):
            raise auth.bad_token()
        with self._primary() as connection:
            # One statement per request: the token by its digest (an index), its user,
            # and the database's clock.
            # Through psycopg: SQLAlchemy's statement and row building cost more than
            # the query on every request.
            with reads.driver_cursor(connection, row_factory=namedtuple_row) as cursor:
                cursor.execute(
                    "SELECT t.id, t.token_hash, t.name, t.created_at, t.expires_at, "
                    "t.last_used_at, u.username, u.role, u.stores, u.disabled, "
                    "u.created_at AS user_created_at, now() AS now "
                    "FROM api_tokens t JOIN users u ON u.id = t.user_id "
                    "WHERE t.token_hash = %s",
                    (auth.token_digest(secret),),
                )
                row = cursor.fetchone()
            if row is None or not auth.same_digest(row.token_hash, secret):
                raise auth.bad_token()
            user = auth.check_token_usable(
                _token(row),
                User(
                    username=row.username,
                    role=row.role,
                    stores=tuple(row.stores) if row.stores is not None else None,
                    disabled=row.disabled,
                    created_at=row.user_created_at,
                ),
                row.now,
            )
            # A second statement at most once a minute per token, and only by one of
            # the requests that race for it.
            if row.last_used_at is None or row.now - row.last_used_at > TOUCH_EVERY:
                with reads.driver_cursor(connection) as cursor:
                    cursor.execute(
                        "UPDATE api_tokens SET last_used_at = now() WHERE id = %s "
                        "AND (last_used_at IS NULL OR last_used_at < now() - %s)",
                        (row.id, TOUCH_EVERY),
                    )
        return user

    # -- operations -------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The primary's health and size, and each replica's health and lag."""
        report: dict[str, Any] = {"backend": self.name, "where": self.describe(), "ok": True}
        with self.db.connect() as connection:
            report.update(reads.counts(connection))
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
            entry: dict[str, Any] = {"where": where(url), "ok": True}
            try:
                with self.db.connect(url) as connection:
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

        try:
            return seeding.seed(
                self.db,
                stores=stores,
                products=products,
                actor=self.actor,
                source=self.source,
                progress=progress,
            )
        finally:
            self._written(None)

    def verify_audit(self) -> tuple[int, list[str]]:
        with self._read() as connection:
            return reads.verify_audit(connection)

    def export_state(self) -> Snapshot:
        with self.db.connect() as connection, connection.begin():
            connection.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
            return reads.snapshot(connection)

    def import_state(self, snapshot: Snapshot, *, progress: Progress | None = None) -> None:
        from . import bulk

        self._write(
            lambda connection: bulk.import_snapshot(connection, snapshot, progress=progress),
            everything=True,
        )

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
        page = requests.page(sort=sort, descending=descending, limit=limit, offset=offset)
        code = values.store_code(store) if store is not None else None
        wanted = values.category(category) if category else None
        with self._read() as connection:
            return reads.list_items(
                connection,
                store=code,
                low_stock=low_stock,
                search=requests.search(search),
                category=values.text_key(wanted) if wanted else None,
                page=page,
            )

    def history(
        self,
        sku: str | None = None,
        *,
        store: str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> list[Movement]:
        page = requests.page(limit=limit)
        code = values.store_code(store) if store is not None else None
        key = values.sku_key(values.sku(sku, existing=True)) if sku is not None else None
        with self._read() as connection:
            return reads.history(connection, sku_key=key, store=code, since=since, limit=page.limit)

    def report_value(self, *, store: str | None = None) -> list[StoreValue]:
        code = values.store_code(store) if store is not None else None
        with self._read() as connection:
            return reads.report_value(connection, store=code)

    def report_movements(
        self,
        *,
        store: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[MovementSummary]:
        code = values.store_code(store) if store is not None else None
        with self._read() as connection:
            return reads.report_movements(connection, store=code, since=since, until=until)
