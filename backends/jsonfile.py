"""The `json` backend (v1): one JSON file, no services, for one shop.

Configuration (settings; see the README for flags and environment names)::

    file          path of the inventory file        INV_FILE    ./inventory.json
    lock_timeout  seconds to wait for another inv   INV_LOCK_TIMEOUT  30

Beside ``inventory.json`` it keeps:

* ``inventory.audit.jsonl``: the audit trail, one JSON object per line, append-only;
* ``inventory.json.bak``: the previous version of the file;
* ``inventory.json.lock``: the lock that serialises writers (``fcntl.flock``).

A write takes the lock, reads the file, changes it in memory, appends its audit lines
(fsynced), then writes a temp file in the same folder, fsyncs it and ``os.replace``-s it
over the old one.  The main file records how many bytes of the audit trail are
committed, so a crash between the two writes leaves lines past that mark, which readers
ignore and the next writer cuts off: the file and its trail always agree.  Readers need
no lock: they see the old file or the new one, never half of one.

Example::

    with JsonBackend("shop/inventory.json", actor="ana") as inv:
        inv.init()
        inv.add_product("Blue mug", "4.50", quantity=12)
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Self, TypeVar

from .base import Backend, Progress
from .batch import BatchResult, BatchRow, OnError
from .engine import Context, State, run_batch
from .errors import (
    AlreadyExists,
    BackendUnavailable,
    BatchRejected,
    ConfigurationError,
    Conflict,
    CorruptData,
    NotFound,
    PermissionDenied,
    RowProblem,
    ValidationError,
)
from .fsutil import replacing
from .models import (
    MAIN_STORE,
    Item,
    Movement,
    MovementSummary,
    Product,
    Snapshot,
    Store,
    StoreValue,
    format_time,
    is_low,
    parse_int,
    parse_price,
    parse_quantity,
    utcnow,
    validate_category,
    validate_event_id,
    validate_name,
    validate_sku,
    validate_store_code,
    validate_unit,
)
from .requests import (
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
from .requests import transfer as transfer_request

__all__ = ["SCHEMA_VERSION", "JsonBackend"]

FORMAT = "inv-inventory"
SCHEMA_VERSION = 1
_MISSING = object()
T = TypeVar("T")


def _movement_json(m: Movement) -> str:
    return json.dumps(movement_json(m), ensure_ascii=False, separators=(",", ":"))


_movement_from = movement_from_json


def _product(entry: dict[str, Any]) -> Product:
    return Product(
        sku=entry["sku"],
        name=entry["name"],
        price=entry["price"],
        unit=entry["unit"],
        category=entry["category"],
        reorder_level=entry["reorder_level"],
        stock=dict(sorted(entry["stock"].items())),
    )


def _product_json(entry: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": entry["name"],
        "price": str(entry["price"]),
        "unit": entry["unit"],
        "category": entry["category"],
        "reorder_level": entry["reorder_level"],
        "stock": entry["stock"],
    }


def _check_document(doc: Any, path: Path) -> dict[str, Any]:
    """Refuse anything but a well-formed inv file, naming where it goes wrong."""

    def bad(where: str, what: str) -> CorruptData:
        return CorruptData(f"{path}: {where}: {what}; the file was left untouched")

    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CorruptData(
            f'{path} is not an inv inventory file (no "format": "{FORMAT}"); it was left untouched'
        )
    version = doc.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise bad("schema_version", "missing or not a number")
    if version > SCHEMA_VERSION:
        raise CorruptData(
            f"{path} has schema_version {version}, newer than this inv understands "
            f"({SCHEMA_VERSION}); upgrade inv"
        )
    for key, kind in (("stores", dict), ("products", dict), ("events", dict), ("audit", dict)):
        if not isinstance(doc.get(key), kind):
            raise bad(key, "missing or not an object")
    if not isinstance(doc.get("next_sku"), int):
        raise bad("next_sku", "missing or not a number")
    for key in ("entries", "bytes"):
        value = doc["audit"].get(key)
        if not isinstance(value, int) or value < 0:
            raise bad(f"audit.{key}", "missing or not a count")
    stores = doc["stores"]
    if MAIN_STORE not in stores:
        raise bad("stores", "store 'main' is missing")
    for code, name in stores.items():
        if not isinstance(name, str):
            raise bad(f"stores.{code}", "the name is not text")
    for sku, entry in doc["products"].items():
        where = f"products.{sku}"
        if not isinstance(entry, dict):
            raise bad(where, "not an object")
        try:
            validate_sku(sku)
            entry["name"] = validate_name(_text(entry.get("name")))
            entry["price"] = parse_price(_text(entry.get("price")))
            entry["unit"] = validate_unit(_text(entry.get("unit")))
            entry["category"] = validate_category(entry.get("category"))
            entry["reorder_level"] = parse_int(
                entry.get("reorder_level"), field="reorder_level", minimum=0
            )
            stock = entry.get("stock")
            if not isinstance(stock, dict):
                raise ValidationError("stock: not an object")
            for store, quantity in stock.items():
                if store not in stores:
                    raise ValidationError(f"stock: unknown store {store!r}")
                parse_quantity(quantity, field=f"stock.{store}")
        except (ValidationError, TypeError) as exc:
            raise bad(where, str(exc)) from None
    return doc


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{value!r} is not text")
    return value


class JsonBackend(Backend):
    """Inventory in one JSON file; see the module docstring."""

    name = "json"

    def __init__(
        self,
        path: str | os.PathLike[str] = "inventory.json",
        *,
        actor: str = "unknown",
        source: str = "cli",
        lock_timeout: float = 30.0,
    ) -> None:
        super().__init__(actor=actor, source=source)
        self.path = Path(path)
        stem = self.path.name.removesuffix(".json")
        self.audit_path = self.path.with_name(f"{stem}.audit.jsonl")
        self.backup_path = self.path.with_name(self.path.name + ".bak")
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.lock_timeout = lock_timeout

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], *, actor: str, source: str) -> Self:
        return cls(
            settings.get("file") or "inventory.json",
            actor=actor,
            source=source,
            lock_timeout=float(settings.get("lock_timeout") or 30.0),
        )

    def describe(self) -> str:
        return str(self.path)

    # -- files ----------------------------------------------------------------------

    @contextlib.contextmanager
    def _os_errors(self, doing: str) -> Iterator[None]:
        """Turn OS errors into the contract's errors, naming the path."""
        try:
            yield
        except PermissionError as exc:
            where = exc.filename or self.path
            if Path(where).name.startswith(f".{self.path.name}."):  # our temp file
                where = f"in {Path(where).parent}"
            raise PermissionDenied(f"cannot {doing} {where}: permission denied") from exc
        except FileNotFoundError as exc:
            raise ConfigurationError(
                f"cannot {doing} {exc.filename or self.path}: the folder does not exist"
            ) from exc
        except IsADirectoryError as exc:
            where = exc.filename or self.path
            raise ConfigurationError(f"{where} is a folder, not a file") from exc
        except OSError as exc:
            if exc.errno in (errno.EROFS, errno.EACCES):
                raise PermissionDenied(
                    f"cannot {doing} {exc.filename or self.path}: {exc.strerror}"
                ) from exc
            raise BackendUnavailable(
                f"cannot {doing} {exc.filename or self.path}: {exc.strerror}"
            ) from exc

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._os_errors("lock"):
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + self.lock_timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise BackendUnavailable(
                            f"{self.path} is locked by another inv process "
                            f"(waited {self.lock_timeout:g} s); try again"
                        ) from None
                    time.sleep(0.005)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _read_document(self) -> dict[str, Any]:
        try:
            with open(self.path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            raise ConfigurationError(
                f"no inventory at {self.path}; run 'inv init' to create one"
            ) from None
        except IsADirectoryError:
            raise ConfigurationError(f"{self.path} is a folder, not a file") from None
        except PermissionError as exc:
            raise PermissionDenied(f"cannot read {self.path}: permission denied") from exc
        try:
            doc = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise CorruptData(
                f"{self.path} is not UTF-8 text (byte {exc.start}); it was left untouched"
            ) from None
        except json.JSONDecodeError as exc:
            raise CorruptData(
                f"{self.path} is not valid JSON: {exc.msg} at line {exc.lineno}, "
                f"column {exc.colno}; it was left untouched"
            ) from None
        return _check_document(doc, self.path)

    def _load(self) -> State:
        doc = self._read_document()
        state = State(
            doc["stores"],
            {sku.casefold(): {"sku": sku, **entry} for sku, entry in doc["products"].items()},
            next_sku=doc["next_sku"],
            audit_entries=doc["audit"]["entries"],
            events=doc["events"],
        )
        state.meta["audit_bytes"] = doc["audit"]["bytes"]
        return state

    def _audit_lines(self, state: State) -> Iterator[dict[str, Any]]:
        """The committed audit entries, oldest first (lines past the mark are ignored)."""
        size = state.meta["audit_bytes"]
        if size:
            try:
                with open(self.audit_path, "rb") as f:
                    data = f.read(size)
            except FileNotFoundError:
                raise CorruptData(
                    f"the audit trail {self.audit_path} is missing; restore it from a backup"
                ) from None
            if len(data) < size:
                raise CorruptData(
                    f"the audit trail {self.audit_path} is shorter than {self.path} records"
                )
            for number, line in enumerate(data.splitlines(), 1):
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise CorruptData(
                        f"{self.audit_path}: line {number}, column {exc.colno}: {exc.msg}"
                    ) from None
        for movement in state.new_audit:
            yield json.loads(_movement_json(movement))

    def _save(self, state: State) -> None:
        """Append the new audit lines, then replace the main file that commits them.

        The temp file for the main file is written first, so a folder that cannot be
        written stops the save before the audit trail is touched.
        """
        mark = state.meta["audit_bytes"]
        payload = "".join(_movement_json(m) + "\n" for m in state.new_audit).encode()
        state.meta["audit_bytes"] = mark + len(payload)
        try:
            with (
                self._os_errors("write"),
                replacing(self.path, self._dump(state).encode(), backup=self.backup_path),
            ):
                if payload:
                    self._append_audit(mark, payload)
        except BaseException:
            state.meta["audit_bytes"] = mark
            raise
        # Temp files left by a writer killed mid-write (we hold the lock: none is live).
        for stale in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            with contextlib.suppress(OSError):
                stale.unlink()

    def _append_audit(self, mark: int, payload: bytes) -> None:
        """Write `payload` at byte `mark` of the trail, cutting off lines past the mark."""
        # Create the trail only when nothing is recorded yet: a missing trail with
        # entries recorded is damage to report, not to paper over.
        flags = os.O_RDWR | (os.O_CREAT if mark == 0 else 0)
        try:
            fd = os.open(self.audit_path, flags, 0o644)
        except FileNotFoundError:
            raise CorruptData(
                f"the audit trail {self.audit_path} is missing; restore it from a backup; "
                "nothing was written"
            ) from None
        with os.fdopen(fd, "r+b") as f:
            size = os.fstat(fd).st_size
            if size < mark:
                raise CorruptData(
                    f"the audit trail {self.audit_path} is shorter than {self.path} records; "
                    "nothing was written"
                )
            f.truncate(mark)
            f.seek(mark)
            f.write(payload)
            f.flush()
            os.fsync(fd)

    @staticmethod
    def _dump(state: State) -> str:
        doc = {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            "next_sku": state.meta["next_sku"],
            "audit": {
                "entries": state.meta["audit_entries"],
                "bytes": state.meta["audit_bytes"],
            },
            "stores": state.stores,
            "products": {e["sku"]: _product_json(e) for e in state.products.values()},
            "events": state.events,
        }
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n"

    @contextlib.contextmanager
    def _writing(self) -> Iterator[State]:
        """Lock, load, yield the state; save it if it changed and no error was raised."""
        with self._locked():
            state = self._load()
            yield state
            if state.changed:
                self._save(state)

    def _once(
        self,
        event_id: str | None,
        fingerprint: str,
        work: Callable[[State, Context], T],
        replay: Callable[[State, dict[str, Any]], T],
        remember: Callable[[T], dict[str, Any]],
    ) -> T:
        """Run `work` once per event id: the same id again replays the first result."""
        if event_id is not None:
            validate_event_id(event_id)
        with self._writing() as state:
            if event_id is not None and event_id in state.events:
                seen = state.events[event_id]
                if seen["fp"] != fingerprint:
                    raise reused_key(event_id)
                return replay(state, seen)
            ctx = Context(self.actor, self.source, event_id or str(uuid.uuid4()))
            first = len(state.new_audit)
            result = work(state, ctx)
            if event_id is not None:
                written = state.new_audit[first:]
                record = {
                    "at": format_time(ctx.at),
                    "fp": fingerprint,
                    "audit": [written[0].id, len(written)] if written else [0, 0],
                    **remember(result),
                }
                state.put(state.events, event_id, record)
            return result

    def _replayed_movements(self, state: State, seen: dict[str, Any]) -> list[Movement]:
        first, count = seen["audit"]
        if not count:
            return []
        return [
            _movement_from(line)
            for line in self._audit_lines(state)
            if first <= line["id"] < first + count
        ]

    def _movement_once(
        self, event_id: str | None, fingerprint: str, work: Callable[[State, Context], Movement]
    ) -> Movement:
        return self._once(
            event_id,
            fingerprint,
            work,
            lambda state, seen: self._replayed_movements(state, seen)[0],
            lambda _: {},
        )

    # -- set-up ---------------------------------------------------------------------

    def init(self) -> bool:
        if self.path.exists():
            self._read_document()  # refuse a foreign or damaged file; never overwrite it
            return False
        if self.audit_path.exists() and self.audit_path.stat().st_size:
            raise ConfigurationError(
                f"{self.audit_path} exists without {self.path}; move it away before 'inv init'"
            )
        with self._os_errors("create"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked():
            if self.path.exists():  # another process won the race
                return False
            state = State({MAIN_STORE: "Main store"}, {})
            state.meta["audit_bytes"] = 0
            ctx = Context(self.actor, self.source, str(uuid.uuid4()))
            state.record(ctx, "store.create", store=MAIN_STORE, sku=None, reason="init")
            self._save(state)
        return True

    # -- stores ---------------------------------------------------------------------

    def add_store(
        self, code: str, name: str | None = None, *, event_id: str | None = None
    ) -> Store:
        code = validate_store_code(code)
        name = validate_name(name, field="name") if name is not None else code

        def work(state: State, ctx: Context) -> Store:
            if code in state.stores:
                raise AlreadyExists(f"store {code!r} already exists")
            state.put(state.stores, code, name)
            state.record(ctx, "store.create", store=code, sku=None, reason=name)
            return Store(code, name)

        return self._once(
            event_id,
            f"store.create|{code}|{name}",
            work,
            lambda state, seen: Store(code, seen["name"]),
            lambda store: {"name": store.name},
        )

    def remove_store(self, code: str, *, force: bool = False, event_id: str | None = None) -> None:
        code = validate_store_code(code)
        if code == MAIN_STORE:
            raise ValidationError("store 'main' cannot be removed", field="store")

        def work(state: State, ctx: Context) -> None:
            state.store(code)
            held = [e for e in state.products.values() if code in e["stock"]]
            on_hand = sum(e["stock"][code] for e in held)
            if on_hand and not force:
                raise Conflict(
                    f"store {code!r} still holds {on_hand} units of stock; "
                    "move it away or use --force to write it off"
                )
            for entry in held:
                state.unstock(ctx, entry, code, force=True, reason="store removed")
            state.drop(state.stores, code)
            state.record(ctx, "store.delete", store=code, sku=None)

        self._once(event_id, f"store.delete|{code}|{force}", work, lambda *_: None, lambda _: {})

    def stores(self) -> list[Store]:
        state = self._load()
        return [Store(code, name) for code, name in sorted(state.stores.items())]

    # -- catalog --------------------------------------------------------------------

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

        def work(state: State, ctx: Context) -> Product:
            state.store(request.store)
            entry, _ = state.create_product(
                ctx,
                sku=request.sku,
                name=request.name,
                price=request.price,
                unit=request.unit,
                category=request.category,
                reorder_level=request.reorder_level,
                store=request.store,
                quantity=request.quantity,
                reason=None,
            )
            return _product(entry)

        return self._once(
            event_id,
            request.fingerprint,
            work,
            lambda state, seen: product_from_json(seen["product"]),
            lambda product: {"product": product_json(product)},
        )

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

        def work(state: State, ctx: Context) -> Product:
            entry = state.product(sku)
            state.update_product(ctx, entry, changes)
            return _product(entry)

        return self._once(
            event_id,
            f"product.update|{sku_key(sku)}|{sorted(changes.items())}",
            work,
            lambda state, seen: product_from_json(seen["product"]),
            lambda product: {"product": product_json(product)},
        )

    def remove_product(
        self,
        sku: str,
        *,
        store: str | None = None,
        force: bool = False,
        event_id: str | None = None,
    ) -> list[Movement]:
        code = validate_store_code(store) if store is not None else None

        def work(state: State, ctx: Context) -> list[Movement]:
            entry = state.product(sku)
            if code is not None:
                state.store(code)
                if code not in entry["stock"]:
                    raise NotFound(f"{entry['sku']} is not stocked at {code}")
                return [state.unstock(ctx, entry, code, force=force, reason=None)]
            on_hand = {s: q for s, q in entry["stock"].items() if q}
            if on_hand and not force:
                where = ", ".join(f"{q} at {s}" for s, q in sorted(on_hand.items()))
                raise Conflict(
                    f"{entry['sku']} still has stock on hand ({where}); use --force to write it off"
                )
            written = [
                state.unstock(ctx, entry, s, force=True, reason=None)
                for s in sorted(entry["stock"])
            ]
            state.drop(state.products, entry["sku"].casefold())
            written.append(state.record(ctx, "product.delete", store=None, sku=entry["sku"]))
            return written

        return self._once(
            event_id,
            f"product.delete|{sku_key(sku)}|{code}|{force}",
            work,
            self._replayed_movements,
            lambda _: {},
        )

    def get(self, sku: str) -> Product:
        return _product(self._load().product(sku))

    # -- stock ----------------------------------------------------------------------

    def _change_stock(self, change: StockChange, event_id: str | None) -> Movement:
        def work(state: State, ctx: Context) -> Movement:
            state.store(change.store)
            entry = state.product(change.sku)
            return state.change_stock(
                ctx,
                entry,
                change.store,
                delta=change.delta,
                quantity=change.quantity,
                expect=change.expect,
                reason=change.reason,
            )

        return self._movement_once(event_id, change.fingerprint, work)

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

        def work(state: State, ctx: Context) -> tuple[Movement, Movement]:
            state.store(move.source, field="from")
            state.store(move.target, field="to")
            entry = state.product(move.sku)
            out = state.change_stock(
                ctx,
                entry,
                move.source,
                delta=-move.quantity,
                reason=move.reason,
                action="stock.transfer_out",
            )
            into = state.change_stock(
                ctx,
                entry,
                move.target,
                delta=move.quantity,
                reason=move.reason,
                action="stock.transfer_in",
            )
            return out, into

        def replay(state: State, seen: dict[str, Any]) -> tuple[Movement, Movement]:
            out, into = self._replayed_movements(state, seen)
            return out, into

        return self._once(event_id, move.fingerprint, work, replay, lambda _: {})

    # -- batches --------------------------------------------------------------------

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
        if on_error not in ("reject-all", "skip-rows"):
            raise ValidationError(f"on_error: {on_error!r} is not reject-all or skip-rows")
        default_store = validate_store_code(default_store)
        fingerprint = batch_fingerprint(rows, default_store) if event_id is not None else "batch"
        if event_id is not None:
            validate_event_id(event_id)
        with self._locked():
            state = self._load()
            if event_id is not None and event_id in state.events:
                seen = state.events[event_id]
                if seen["fp"] != fingerprint:
                    raise reused_key(event_id, "batch")
                return BatchResult(
                    rows=seen["rows"],
                    applied=seen["applied"],
                    unchanged=seen["unchanged"],
                    duplicates=seen["duplicates"],
                    problems=[RowProblem(*p) for p in seen["problems"]],
                    changes=self._replayed_movements(state, seen),
                )

            def remember(key: str, fingerprint: str, written: list[Movement]) -> None:
                state.put(
                    state.events,
                    key,
                    {
                        "at": format_time(written[0].at if written else utcnow()),
                        "fp": fingerprint,
                        "audit": [written[0].id, len(written)] if written else [0, 0],
                    },
                )

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
                return result
            if result.problems and on_error == "reject-all":
                raise BatchRejected(result.problems)
            if event_id is not None:
                state.put(
                    state.events,
                    event_id,
                    {
                        "at": format_time(utcnow()),
                        "fp": fingerprint,
                        "audit": [result.changes[0].id, len(result.changes)]
                        if result.changes
                        else [0, 0],
                        "rows": result.rows,
                        "applied": result.applied,
                        "unchanged": result.unchanged,
                        "duplicates": result.duplicates,
                        "problems": [[p.row, p.column, p.reason] for p in result.problems],
                    },
                )
            if state.changed:
                self._save(state)
            return result

    # -- operations -----------------------------------------------------------------

    def upgrade(self) -> tuple[str | None, str]:
        self._read_document()  # refuses a file newer than this code
        return str(SCHEMA_VERSION), str(SCHEMA_VERSION)

    def status(self) -> dict[str, Any]:
        state = self._load()
        return {
            "backend": self.name,
            "where": str(self.path),
            "ok": True,
            "bytes": self.path.stat().st_size,
            "audit_bytes": state.meta["audit_bytes"],
            "stores": len(state.stores),
            "products": len(state.products),
            "history": state.meta["audit_entries"],
        }

    def verify_audit(self) -> tuple[int, list[str]]:
        state = self._load()
        last: dict[tuple[str, str], int] = {}
        problems = []
        expected_id = 0
        for line in self._audit_lines(state):
            expected_id += 1
            if line["id"] != expected_id:
                problems.append(f"history entry {expected_id} is missing (found {line['id']})")
                expected_id = line["id"]
            if line["store"] and line["sku"] and line["quantity_after"] is not None:
                last[(line["store"], line["sku"].casefold())] = line["quantity_after"]
        checked = 0
        for key, entry in state.products.items():
            for code, quantity in entry["stock"].items():
                checked += 1
                recorded = last.pop((code, key), None)
                if recorded != quantity:
                    problems.append(
                        f"{entry['sku']} at {code}: {quantity} on hand, history says {recorded}"
                    )
        for (code, sku), recorded in sorted(last.items()):
            if recorded:
                problems.append(f"{sku} at {code}: not stocked, history says {recorded}")
        return checked, problems

    def export_state(self) -> Snapshot:
        state = self._load()
        return Snapshot(
            stores=[Store(code, name) for code, name in sorted(state.stores.items())],
            products=sorted((_product(e) for e in state.products.values()), key=lambda p: p.sku),
            history=[_movement_from(line) for line in self._audit_lines(state)],
        )

    def import_state(self, snapshot: Snapshot, *, progress: Progress | None = None) -> None:
        with self._writing() as state:
            for store in snapshot.stores:
                if store.code not in state.stores:
                    state.put(state.stores, store.code, store.name)
            for product in snapshot.products:
                key = product.sku.casefold()
                if key in state.products:
                    raise AlreadyExists(f"SKU {product.sku!r} already exists here")
                state.put(
                    state.products,
                    key,
                    {
                        "sku": product.sku,
                        "name": product.name,
                        "price": product.price,
                        "unit": product.unit,
                        "category": product.category,
                        "reorder_level": product.reorder_level,
                        "stock": dict(product.stock),
                    },
                )
            for done, m in enumerate(snapshot.history, 1):
                number = state.meta["audit_entries"] + 1
                state.put(state.meta, "audit_entries", number)
                state.new_audit.append(replace(m, id=number))
                if progress is not None and done % 10000 == 0:
                    progress(done)

    # -- reads ----------------------------------------------------------------------

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
        state = self._load()
        code = state.store(store) if store is not None else None
        needle = search.strip().casefold() if search else None
        wanted_category = category.strip().casefold() if category else None
        items: list[Item] = []
        for entry in state.products.values():
            if (
                needle
                and needle not in entry["sku"].casefold()
                and needle not in (entry["name"].casefold())
            ):
                continue
            if wanted_category is not None and (entry["category"] or "").casefold() != (
                wanted_category
            ):
                continue
            stock = entry["stock"]
            places: list[tuple[str | None, int]]
            if code is not None:
                places = [(code, stock[code])] if code in stock else []
            elif stock:
                places = list(stock.items())
            else:
                places = [] if low_stock else [(None, 0)]
            for where, quantity in places:
                if low_stock and not is_low(quantity, entry["reorder_level"]):
                    continue
                items.append(
                    Item(
                        entry["sku"],
                        entry["name"],
                        entry["price"],
                        entry["unit"],
                        entry["category"],
                        entry["reorder_level"],
                        where,
                        quantity,
                    )
                )
        items.sort(key=lambda i: (i.sku.casefold(), i.sku, i.store or ""))
        if sort == "name":
            items.sort(key=lambda i: i.name.casefold(), reverse=descending)
        elif sort == "quantity":
            items.sort(key=lambda i: i.quantity, reverse=descending)
        elif sort == "value":
            items.sort(key=lambda i: i.value, reverse=descending)
        elif descending:
            items.sort(key=lambda i: i.sku.casefold(), reverse=True)
        end = None if limit is None else offset + limit
        return items[offset:end]

    def history(
        self,
        sku: str | None = None,
        *,
        store: str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> list[Movement]:
        check_page(limit=limit)
        state = self._load()
        code = validate_store_code(store) if store is not None else None
        wanted = sku.strip().casefold() if sku is not None else None
        since_text = format_time(since) if since is not None else None
        found = []
        for line in self._audit_lines(state):
            if wanted is not None and (line["sku"] or "").casefold() != wanted:
                continue
            if code is not None and line["store"] != code:
                continue
            if since_text is not None and line["at"] < since_text:
                continue
            found.append(line)
        found.reverse()
        if limit is not None:
            found = found[:limit]
        return [_movement_from(line) for line in found]

    def report_value(self, *, store: str | None = None) -> list[StoreValue]:
        state = self._load()
        codes = [state.store(store)] if store is not None else sorted(state.stores)
        counts = dict.fromkeys(codes, 0)
        units = dict.fromkeys(codes, 0)
        values = dict.fromkeys(codes, Decimal("0.00"))
        for entry in state.products.values():
            for code, quantity in entry["stock"].items():
                if code in counts:
                    counts[code] += 1
                    units[code] += quantity
                    values[code] += entry["price"] * quantity
        return [StoreValue(code, counts[code], units[code], values[code]) for code in codes]

    def report_movements(
        self,
        *,
        store: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[MovementSummary]:
        state = self._load()
        code = state.store(store) if store is not None else None
        since_text = format_time(since) if since is not None else None
        until_text = format_time(until) if until is not None else None
        sums: dict[tuple[str, str], list[int]] = {}
        for line in self._audit_lines(state):
            if line["store"] is None or line["sku"] is None or line["delta"] is None:
                continue
            if code is not None and line["store"] != code:
                continue
            if since_text is not None and line["at"] < since_text:
                continue
            if until_text is not None and line["at"] >= until_text:
                continue
            total = sums.setdefault((line["store"], line["sku"]), [0, 0, 0])
            total[0] += 1
            if line["delta"] > 0:
                total[1] += line["delta"]
            else:
                total[2] -= line["delta"]
        return [
            MovementSummary(store, sku, count, units_in, units_out)
            for (store, sku), (count, units_in, units_out) in sorted(sums.items())
        ]
