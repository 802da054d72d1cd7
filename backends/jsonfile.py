"""The `json` backend (v1): one JSON file, no services, for one shop.

Configuration (settings; see the README for flags and environment names)::

    file          path of the inventory file        INV_FILE    ./inventory.json
    lock_timeout  seconds to wait for another inv   INV_LOCK_TIMEOUT  30

The file also keeps the users and API tokens (`Backend.add_user`, `create_token`): a
password only as its Argon2id hash, a token only as its SHA-256 digest.  A file with
none is written as ``schema_version`` 1, as before they existed, so an older inv still
reads it; one with users or tokens is written as 2, so an older inv refuses it instead
of dropping them on its next write.

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

A path that is a symbolic link is followed: the real file is written (and locked), and
its companions live beside the real file, so two paths to one inventory stay one.

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
import re
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, TypeVar

from . import auth, requests, rules, values
from .auth import IssuedToken, Token, User
from .base import Backend, Progress
from .batch import BatchResult, BatchRow, OnError
from .engine import Context, State, run_batch
from .errors import (
    AlreadyExists,
    BackendUnavailable,
    BatchRejected,
    ConfigurationError,
    CorruptData,
    NotFound,
    PermissionDenied,
    ValidationError,
)
from .fsutil import replacing, shown
from .jsontext import JsonError, loads
from .models import (
    MAIN_STORE,
    AppliedEvent,
    Edited,
    Item,
    Movement,
    MovementSummary,
    Product,
    Snapshot,
    Store,
    StoreValue,
    format_time,
    is_low,
    utcnow,
)
from .requests import (
    StockChange,
    movement_from_json,
    movement_json,
    product_from_json,
    product_json,
    result_movements,
    reused_key,
)
from .settings import DEFAULTS

if TYPE_CHECKING:
    from .settings import Settings

__all__ = ["SCHEMA_VERSION", "JsonBackend"]

FORMAT = "inv-inventory"
#: The newest this inv reads and writes (2 adds users and tokens); a file without them
#: is still written as 1.
SCHEMA_VERSION = 2
T = TypeVar("T")

#: What an idempotency key remembers in the file besides its result's own keys.
_EVENT_META = ("at", "fp", "audit", "movements")


def _movement_json(m: Movement) -> str:
    return json.dumps(movement_json(m), ensure_ascii=False, separators=(",", ":"))


def _product(entry: dict[str, Any], *, replayed: bool = False) -> Product:
    return Product(
        sku=entry["sku"],
        name=entry["name"],
        price=entry["price"],
        unit=entry["unit"],
        category=entry["category"],
        reorder_level=entry["reorder_level"],
        stock=dict(sorted(entry["stock"].items())),
        replayed=replayed,
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
    """Refuse anything but a well-formed inv file, naming where it goes wrong; values
    are checked by the grammar every other entry point uses (`backends.values`)."""

    def bad(where: str, what: str) -> CorruptData:
        return CorruptData(f"{shown(path)}: {where}: {what}; the file was left untouched")

    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CorruptData(
            f'{shown(path)} is not an inv inventory file (no "format": "{FORMAT}"); '
            "it was left untouched"
        )
    version = doc.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise bad("schema_version", "missing or not a number")
    if version > SCHEMA_VERSION:
        raise CorruptData(
            f"{shown(path)} has schema_version {version}, newer than this inv understands "
            f"({SCHEMA_VERSION}); upgrade inv"
        )
    for key in ("stores", "products", "events", "audit"):
        if not isinstance(doc.get(key), dict):
            raise bad(key, "missing or not an object")
    next_sku = doc.get("next_sku")
    if not isinstance(next_sku, int) or isinstance(next_sku, bool) or next_sku < 1:
        raise bad("next_sku", "missing or not a number")
    for key in ("entries", "bytes"):
        value = doc["audit"].get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**53:
            raise bad(f"audit.{key}", "missing or not a count")
    stores = doc["stores"]
    if MAIN_STORE not in stores:
        raise bad("stores", "store 'main' is missing")
    for code, name in stores.items():
        try:
            if values.store_code(code) != code:
                raise ValidationError(f"{code!r} is not a store code as inv writes it")
            stores[code] = values.name(name, existing=True)
        except ValidationError as exc:
            raise bad(f"stores.{code}", str(exc)) from None
    products: dict[str, dict[str, Any]] = {}
    for sku, entry in doc["products"].items():
        where = f"products.{sku}"
        if not isinstance(entry, dict):
            raise bad(where, "not an object")
        try:
            checked = values.sku(sku, existing=True)
            entry["sku"] = checked
            entry["name"] = values.name(entry.get("name"), existing=True)
            if not isinstance(entry.get("price"), str):
                raise ValidationError(f"price: {entry.get('price')!r} is not text")
            entry["price"] = values.price(entry["price"])
            entry["unit"] = values.unit(entry.get("unit"), existing=True)
            entry["category"] = values.category(entry.get("category"), existing=True)
            if not isinstance(entry.get("reorder_level"), int):
                raise ValidationError(
                    f"reorder_level: {entry.get('reorder_level')!r} is not a whole number"
                )
            entry["reorder_level"] = values.reorder_level(entry["reorder_level"])
            stock = entry.get("stock")
            if not isinstance(stock, dict):
                raise ValidationError("stock: not an object")
            for store, quantity in stock.items():
                if store not in stores:
                    raise ValidationError(f"stock: unknown store {store!r}")
                if not isinstance(quantity, int) or isinstance(quantity, bool):
                    raise ValidationError(f"stock.{store}: {quantity!r} is not a whole number")
                values.quantity(quantity, field=f"stock.{store}")
        except ValidationError as exc:
            raise bad(where, str(exc)) from None
        key = values.sku_key(checked)
        if key in products:
            raise bad(
                where,
                f"{checked!r} and {products[key]['sku']!r} are one SKU (case and Unicode form "
                "are ignored); merge them by hand",
            )
        products[key] = entry
    for event_id, event in doc["events"].items():
        try:
            values.idempotency_key(event_id)
        except ValidationError as exc:
            raise bad("events", f"{event_id!r}: {exc}") from None
        if not _is_event(event):
            raise bad(f"events.{event_id}", "not an idempotency record")
    doc["products"] = products
    _check_users(doc, bad)
    return doc


def _check_users(doc: dict[str, Any], bad: Callable[[str, str], CorruptData]) -> None:
    """The users and tokens sections (absent in files written before them: none),
    checked by the grammar `add_user` and `create_token` use; tokens keyed by id."""
    users = doc.setdefault("users", {})
    if not isinstance(users, dict):
        raise bad("users", "not an object")
    for name, entry in users.items():
        try:
            if not isinstance(entry, dict):
                raise ValidationError("not an object")
            if values.username(name) != name:
                raise ValidationError(f"{name!r} is not a user name as inv writes it")
            if not str(entry.get("password_hash")).startswith("$argon2"):
                raise ValidationError("password_hash: not an Argon2 hash")
            if auth.role(entry.get("role")) != entry["role"]:
                raise ValidationError(f"role: {entry['role']!r} is not a role as inv writes it")
            stores = entry.get("stores")
            if stores is not None and (
                not isinstance(stores, list) or auth.user_stores(stores) != tuple(stores)
            ):
                raise ValidationError("stores: not null or a sorted list of store codes")
            if not isinstance(entry.get("disabled"), bool):
                raise ValidationError("disabled: not true or false")
            _time(entry.get("created_at"), "created_at")
        except ValidationError as exc:
            raise bad(f"users.{name}", str(exc)) from None
    listed = doc.get("tokens", [])
    if not isinstance(listed, list):
        raise bad("tokens", "not a list")
    tokens: dict[int, dict[str, Any]] = {}
    digests: set[str] = set()
    for index, entry in enumerate(listed):
        try:
            if not isinstance(entry, dict):
                raise ValidationError("not an object")
            number: Any = entry.get("id")
            if not _is_int(number) or not 0 < number < 2**53 or number in tokens:
                raise ValidationError(f"id: {number!r} is not a new positive whole number")
            if entry.get("username") not in users:
                raise ValidationError(f"username: no user {entry.get('username')!r}")
            digest = entry.get("digest")
            if not isinstance(digest, str) or not _DIGEST.fullmatch(digest) or digest in digests:
                raise ValidationError("digest: not a SHA-256 digest of its own")
            if auth.token_name(entry.get("name")) != entry.get("name"):
                raise ValidationError(f"name: {entry.get('name')!r} is not a token name")
            _time(entry.get("created_at"), "created_at")
            for field in ("expires_at", "last_used_at"):
                if entry.get(field) is not None:
                    _time(entry[field], field)
        except ValidationError as exc:
            raise bad(f"tokens[{index}]", str(exc)) from None
        tokens[number] = entry
        digests.add(digest)
    next_token = doc.get("next_token", 1)
    if not _is_int(next_token) or not max(tokens, default=0) < next_token < 2**53:
        raise bad("next_token", "not a number past every token's id")
    doc["tokens"] = tokens
    doc["next_token"] = next_token


_DIGEST = re.compile(r"[0-9a-f]{64}")
#: How stale a token's time of last use may get before `authenticate` writes it.
_TOUCH_EVERY = timedelta(seconds=60)


def _time(value: Any, field: str) -> datetime:
    """A time as the file keeps it (`format_time`)."""
    if isinstance(value, str) and value.isascii():
        try:
            at = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if at.tzinfo is not None:
                return at.astimezone(UTC)
    raise ValidationError(f"{field}: {value!r} is not a time in UTC")


def _optional_time(value: Any, field: str) -> datetime | None:
    return None if value is None else _time(value, field)


def _user(name: str, entry: dict[str, Any]) -> User:
    stores = entry["stores"]
    return User(
        username=name,
        role=entry["role"],
        stores=tuple(stores) if stores is not None else None,
        disabled=entry["disabled"],
        created_at=_time(entry["created_at"], "created_at"),
    )


def _token(entry: dict[str, Any]) -> Token:
    return Token(
        id=entry["id"],
        username=entry["username"],
        name=entry["name"],
        created_at=_time(entry["created_at"], "created_at"),
        expires_at=_optional_time(entry.get("expires_at"), "expires_at"),
        last_used_at=_optional_time(entry.get("last_used_at"), "last_used_at"),
    )


def _stored_user(name: str, entry: dict[str, Any]) -> auth.StoredUser:
    user = _user(name, entry)
    assert user.created_at is not None
    return auth.StoredUser(
        username=name,
        password_hash=entry["password_hash"],
        role=user.role,
        stores=user.stores,
        disabled=user.disabled,
        created_at=user.created_at,
    )


def _stored_token(entry: dict[str, Any]) -> auth.StoredToken:
    token = _token(entry)
    return auth.StoredToken(
        id=token.id,
        username=token.username,
        digest=entry["digest"],
        name=token.name,
        created_at=token.created_at,
        expires_at=token.expires_at,
        last_used_at=token.last_used_at,
    )


def _optional_format(at: datetime | None) -> str | None:
    return format_time(at) if at is not None else None


class _FileState(State):
    """The engine's state plus what only this backend keeps: users (name -> entry),
    tokens (id -> entry) and, in `meta`, the next token's id."""

    def __init__(
        self,
        stores: dict[str, str],
        products: dict[str, dict[str, Any]],
        *,
        next_sku: int = 1,
        audit_entries: int = 0,
        audit_bytes: int = 0,
        events: dict[str, dict[str, Any]] | None = None,
        users: dict[str, dict[str, Any]] | None = None,
        tokens: dict[int, dict[str, Any]] | None = None,
        next_token: int = 1,
    ) -> None:
        super().__init__(
            stores, products, next_sku=next_sku, audit_entries=audit_entries, events=events
        )
        self.meta["audit_bytes"] = audit_bytes
        self.meta["next_token"] = next_token
        self.users: dict[str, dict[str, Any]] = users if users is not None else {}
        self.tokens: dict[int, dict[str, Any]] = tokens if tokens is not None else {}

    def user(self, name: str) -> dict[str, Any]:
        try:
            return self.users[name]
        except KeyError:
            raise auth.no_user(name) from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


#: The type of each field of an audit line (None: the field may be null).
_AUDIT_TYPES: dict[str, tuple[type, ...]] = {
    "id": (int,),
    "at": (str,),
    "actor": (str,),
    "source": (str,),
    "event_id": (str,),
    "store": (str, type(None)),
    "sku": (str, type(None)),
    "action": (str,),
    "delta": (int, type(None)),
    "quantity_after": (int, type(None)),
    "reason": (str, type(None)),
}


def _is_audit_entry(entry: Any) -> bool:
    """An audit line has every field, of its type (what reads and reports rely on)."""
    return isinstance(entry, dict) and all(
        isinstance(entry.get(name), kinds) and not isinstance(entry.get(name), bool)
        for name, kinds in _AUDIT_TYPES.items()
    )


def _is_event(event: Any) -> bool:
    """What the file keeps of an idempotency key has the fields replays read."""
    if not isinstance(event, dict) or not isinstance(event.get("fp"), str):
        return False
    if not isinstance(event.get("at", ""), str):
        return False
    audit = event.get("audit", [0, 0])
    if not (isinstance(audit, list) and len(audit) == 2 and all(_is_int(a) for a in audit)):
        return False
    checks: dict[str, Callable[[Any], bool]] = {
        "movements": lambda v: isinstance(v, list) and all(isinstance(m, dict) for m in v),
        "product": lambda v: isinstance(v, dict),
        "name": lambda v: isinstance(v, str),
        "rows": _is_int,
        "applied": _is_int,
        "unchanged": _is_int,
        "duplicates": _is_int,
        "problems": lambda v: (
            isinstance(v, list) and all(isinstance(p, list) and len(p) == 3 for p in v)
        ),
    }
    return all(check(event[key]) for key, check in checks.items() if key in event)


class JsonBackend(Backend):
    """Inventory in one JSON file; see the module docstring."""

    name = "json"

    def __init__(
        self,
        path: str | os.PathLike[str] = DEFAULTS.file,
        *,
        actor: str = "unknown",
        source: str = "cli",
        lock_timeout: float = DEFAULTS.lock_timeout,
    ) -> None:
        super().__init__(actor=actor, source=source)
        if not str(path).strip():
            raise ConfigurationError("file: the inventory file's path is empty")
        #: The path as given, for messages.
        self.path = Path(path)
        #: The real file behind any symbolic links: what is read, written and locked.
        self.real_path = Path(os.path.realpath(self.path))
        with self._os_errors("open"):
            if not self.real_path.name or self.real_path.is_dir():
                raise IsADirectoryError(errno.EISDIR, "it is a folder, not a file", str(path))
            if self.real_path.exists() and not self.real_path.is_file():
                raise ConfigurationError(f"{shown(path)} is not a regular file (a FIFO, a device?)")
        stem = self.real_path.name.removesuffix(".json")
        self.audit_path = self.real_path.with_name(f"{stem}.audit.jsonl")
        self.backup_path = self.real_path.with_name(self.real_path.name + ".bak")
        self.lock_path = self.real_path.with_name(self.real_path.name + ".lock")
        self.lock_timeout = values.seconds(lock_timeout, field="lock_timeout")

    @classmethod
    def from_settings(cls, settings: Settings, *, actor: str, source: str) -> Self:
        return cls(settings.file, actor=actor, source=source, lock_timeout=settings.lock_timeout)

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
            if Path(where).name.startswith(f".{self.real_path.name}."):  # our temp file
                where = f"in {Path(where).parent}"
            raise PermissionDenied(f"cannot {doing} {where}: permission denied") from exc
        except FileNotFoundError as exc:
            raise ConfigurationError(
                f"cannot {doing} {shown(exc.filename or self.path)}: the folder does not exist"
            ) from exc
        except (IsADirectoryError, NotADirectoryError) as exc:
            where = exc.filename or self.path
            raise ConfigurationError(f"cannot {doing} {where}: {exc.strerror}") from exc
        except OSError as exc:
            if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise PermissionDenied(
                    f"cannot {doing} {shown(exc.filename or self.path)}: {exc.strerror}"
                ) from exc
            if exc.errno in (errno.ENAMETOOLONG, errno.ELOOP, errno.EINVAL):
                raise ConfigurationError(
                    f"cannot {doing} {shown(exc.filename or self.path)}: {exc.strerror}"
                ) from exc
            raise BackendUnavailable(
                f"cannot {doing} {shown(exc.filename or self.path)}: {exc.strerror}"
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
                            f"{shown(self.path)} is locked by another inv process "
                            f"(waited {self.lock_timeout:g} s); try again"
                        ) from None
                    time.sleep(0.005)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _read_document(self) -> dict[str, Any]:
        with self._os_errors("read"):
            exists = self.real_path.exists()
        if not exists:
            raise ConfigurationError(
                f"no inventory at {shown(self.path)}; run 'inv init' to create one"
            )
        with self._os_errors("read"), open(self.real_path, "rb") as f:
            raw = f.read()
        try:
            doc = loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise CorruptData(
                f"{shown(self.path)} is not UTF-8 text (byte {exc.start}); it was left untouched"
            ) from None
        except JsonError as exc:
            raise CorruptData(
                f"{shown(self.path)} is not valid JSON: {exc}; it was left untouched"
            ) from None
        return _check_document(doc, self.path)

    def _load(self) -> _FileState:
        doc = self._read_document()
        return _FileState(
            doc["stores"],
            doc["products"],
            next_sku=doc["next_sku"],
            audit_entries=doc["audit"]["entries"],
            audit_bytes=doc["audit"]["bytes"],
            events=doc["events"],
            users=doc["users"],
            tokens=doc["tokens"],
            next_token=doc["next_token"],
        )

    def _audit_lines(self, state: State) -> Iterator[dict[str, Any]]:
        """The committed audit entries, oldest first (lines past the mark are ignored)."""
        size = state.meta["audit_bytes"]
        if size:
            with self._os_errors("read the audit trail"):
                there = self.audit_path.exists()
            if not there:
                raise CorruptData(
                    f"the audit trail {shown(self.audit_path)} is missing; restore it from a backup"
                )
            with self._os_errors("read the audit trail"), open(self.audit_path, "rb") as f:
                data = f.read(size)
            if len(data) < size:
                raise CorruptData(
                    f"the audit trail {shown(self.audit_path)} is shorter than "
                    f"{shown(self.path)} records"
                )
            for number, line in enumerate(data.splitlines(), 1):
                try:
                    entry = loads(line)
                except (JsonError, UnicodeDecodeError) as exc:
                    raise CorruptData(f"{shown(self.audit_path)}: line {number}: {exc}") from None
                if not _is_audit_entry(entry):
                    raise CorruptData(
                        f"{shown(self.audit_path)}: line {number}: not an audit entry"
                    )
                yield entry
        for movement in state.new_audit:
            yield json.loads(_movement_json(movement))

    def _movement_from(self, line: dict[str, Any], *, replayed: bool = False) -> Movement:
        try:
            return movement_from_json(line, replayed=replayed)
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptData(
                f"{shown(self.audit_path)}: entry {line.get('id')} is not an audit entry ({exc})"
            ) from None

    def _save(self, state: _FileState) -> None:
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
                replacing(self.real_path, self._dump(state).encode(), backup=self.backup_path),
            ):
                if payload:
                    self._append_audit(mark, payload)
        except BaseException:
            state.meta["audit_bytes"] = mark
            raise
        # Temp files left by a writer killed mid-write (we hold the lock: none is live).
        for stale in self.real_path.parent.glob(f".{self.real_path.name}.*.tmp"):
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
                f"the audit trail {shown(self.audit_path)} is missing; restore it from a backup; "
                "nothing was written"
            ) from None
        with os.fdopen(fd, "r+b") as f:
            size = os.fstat(fd).st_size
            if size < mark:
                raise CorruptData(
                    f"the audit trail {shown(self.audit_path)} is shorter than "
                    f"{shown(self.path)} records; "
                    "nothing was written"
                )
            f.truncate(mark)
            f.seek(mark)
            f.write(payload)
            f.flush()
            os.fsync(fd)

    @staticmethod
    def _dump(state: _FileState) -> str:
        with_users = bool(state.users or state.tokens or state.meta["next_token"] > 1)
        doc: dict[str, Any] = {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION if with_users else 1,
            "next_sku": state.meta["next_sku"],
            "audit": {
                "entries": state.meta["audit_entries"],
                "bytes": state.meta["audit_bytes"],
            },
            "stores": state.stores,
            "products": {e["sku"]: _product_json(e) for e in state.products.values()},
            "events": state.events,
        }
        if with_users:
            doc["users"] = state.users
            doc["tokens"] = [state.tokens[number] for number in sorted(state.tokens)]
            doc["next_token"] = state.meta["next_token"]
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n"

    @contextlib.contextmanager
    def _writing(self) -> Iterator[_FileState]:
        """Lock, load, yield the state; save it if it changed and no error was raised."""
        with self._locked():
            state = self._load()
            yield state
            if state.changed:
                self._save(state)

    # -- idempotency ----------------------------------------------------------------

    def _once(
        self,
        request: requests.Request,
        work: Callable[[State, Context], T],
        replay: Callable[[State, dict[str, Any]], T],
        remember: Callable[[T], dict[str, Any]],
    ) -> T:
        """Run `work` once per event id: the same id again replays the first result (the
        file keeps the key with the request's fingerprint, the ids of the audit entries
        it wrote, and what `remember` adds)."""
        event_id = request.event_id
        with self._writing() as state:
            if event_id is not None and event_id in state.events:
                seen = state.events[event_id]
                if seen["fp"] != request.fingerprint:
                    raise reused_key(event_id)
                return replay(state, seen)
            ctx = Context(self.actor, self.source, event_id or str(uuid.uuid4()))
            first = len(state.new_audit)
            result = work(state, ctx)
            if event_id is not None:
                written = state.new_audit[first:]
                record = {
                    "at": format_time(ctx.at),
                    "fp": request.fingerprint,
                    **self._audit_refs(written),
                    **remember(result),
                }
                state.put(state.events, event_id, record)
            return result

    @staticmethod
    def _audit_refs(written: Sequence[Movement]) -> dict[str, Any]:
        """How a key points at the entries its request wrote: `[first id, count]` (they
        are consecutive in this file); entries brought by `inv migrate` from a database
        whose ids interleave are kept whole instead."""
        if not written:
            return {"audit": [0, 0]}
        ids = [m.id for m in written]
        if ids == list(range(ids[0], ids[0] + len(ids))):
            return {"audit": [ids[0], len(ids)]}
        return {"audit": [0, 0], "movements": [movement_json(m) for m in written]}

    def _replayed_movements(self, state: State, seen: dict[str, Any]) -> list[Movement]:
        if "movements" in seen:
            return [self._movement_from(m, replayed=True) for m in result_movements(seen)]
        first, count = seen.get("audit", [0, 0])
        if not count:
            return []
        return [
            self._movement_from(line, replayed=True)
            for line in self._audit_lines(state)
            if first <= line["id"] < first + count
        ]

    # -- set-up ---------------------------------------------------------------------

    def init(self, *, record: bool = True) -> bool:
        with self._os_errors("create"):
            exists = self.real_path.exists()
        if exists:
            self._read_document()  # refuse a foreign or damaged file; never overwrite it
            return False
        with self._os_errors("create"):
            trail = self.audit_path.exists() and self.audit_path.stat().st_size
        if trail:
            raise ConfigurationError(
                f"{shown(self.audit_path)} exists without {shown(self.path)}; "
                "move it away before 'inv init'"
            )
        with self._os_errors("create"):
            self.real_path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked():
            if self.real_path.exists():  # another process won the race
                return False
            state = _FileState({MAIN_STORE: "Main store"}, {})
            if record:
                ctx = Context(self.actor, self.source, str(uuid.uuid4()))
                state.record(ctx, "store.create", store=MAIN_STORE, sku=None, reason="init")
            self._save(state)
        return True

    # -- stores ---------------------------------------------------------------------

    def add_store(
        self, code: str, name: str | None = None, *, event_id: str | None = None
    ) -> Store:
        request = requests.add_store(code, name, event_id)

        def work(state: State, ctx: Context) -> Store:
            if request.code in state.stores:
                raise AlreadyExists(f"store {request.code!r} already exists")
            state.put(state.stores, request.code, request.name)
            state.record(ctx, "store.create", store=request.code, sku=None, reason=request.name)
            return Store(request.code, request.name)

        return self._once(
            request,
            work,
            lambda state, seen: Store(request.code, seen["name"], replayed=True),
            lambda store: {"name": store.name},
        )

    def remove_store(
        self, code: str, *, force: bool = False, event_id: str | None = None
    ) -> list[Movement]:
        request = requests.remove_store(code, force, event_id)

        def work(state: State, ctx: Context) -> list[Movement]:
            state.store(request.code)
            held = [e for e in state.products.values() if request.code in e["stock"]]
            on_hand = sum(e["stock"][request.code] for e in held)
            rules.check_store_removal(request.code, on_hand, force=request.force)
            held.sort(key=lambda e: (values.sku_key(e["sku"]), e["sku"]))
            written = [
                state.unstock(ctx, entry, request.code, force=True, reason="store removed")
                for entry in held
            ]
            state.drop(state.stores, request.code)
            written.append(state.record(ctx, "store.delete", store=request.code, sku=None))
            return written

        return self._once(request, work, self._replayed_movements, lambda _: {})

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

        def work(state: State, ctx: Context) -> Product:
            state.store(request.store)
            entry, _ = state.create_product(
                ctx,
                sku=request.sku,
                store=request.store,
                quantity=request.quantity,
                reason=None,
                **request.fields(),
            )
            return _product(entry)

        return self._once(
            request,
            work,
            lambda state, seen: product_from_json(seen["product"], replayed=True),
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

        def work(state: State, ctx: Context) -> Edited:
            entry = state.product(request.sku)
            written = state.update_product(ctx, entry, dict(request.changes))
            return Edited(_product(entry), written.reason if written is not None else None)

        def replay(state: State, seen: dict[str, Any]) -> Edited:
            entries = self._replayed_movements(state, seen)
            return Edited(
                product_from_json(seen["product"], replayed=True),
                entries[0].reason if entries else None,
                replayed=True,
            )

        return self._once(
            request,
            work,
            replay,
            lambda edited: {"product": product_json(edited.product)},
        )

    def remove_product(
        self,
        sku: str,
        *,
        store: str | None = None,
        force: bool = False,
        event_id: str | None = None,
    ) -> list[Movement]:
        request = requests.remove_product(sku, store, force, event_id)

        def work(state: State, ctx: Context) -> list[Movement]:
            code = request.store
            if code is not None:
                state.store(code)  # the store first, as every command that names one
            entry = state.product(request.sku)
            if code is not None:
                if code not in entry["stock"]:
                    raise NotFound(f"{entry['sku']} is not stocked at {code}")
                return [state.unstock(ctx, entry, code, force=request.force, reason=None)]
            rules.check_product_removal(entry["sku"], entry["stock"], force=request.force)
            written = [
                state.unstock(ctx, entry, s, force=True, reason=None)
                for s in sorted(entry["stock"])
            ]
            state.drop(state.products, values.sku_key(entry["sku"]))
            written.append(state.record(ctx, "product.delete", store=None, sku=entry["sku"]))
            return written

        return self._once(request, work, self._replayed_movements, lambda _: {})

    def get(self, sku: str) -> Product:
        return _product(self._load().product(values.sku(sku, existing=True)))

    # -- stock ----------------------------------------------------------------------

    def _change_stock(self, change: StockChange) -> Movement:
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

        return self._once(
            change,
            work,
            lambda state, seen: self._replayed_movements(state, seen)[0],
            lambda _: {},
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
        move = requests.transfer(sku, from_store, to_store, quantity, reason, event_id)

        def work(state: State, ctx: Context) -> tuple[Movement, Movement]:
            state.store(move.source, field="from")
            state.store(move.target, field="to")
            entry = state.product(move.sku)
            stock = entry["stock"]
            rules.transfer_quantities(
                stock.get(move.source, 0),
                stock.get(move.target, 0),
                sku=entry["sku"],
                source=move.source,
                target=move.target,
                quantity=move.quantity,
            )
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

        return self._once(move, work, replay, lambda _: {})

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
        request = requests.batch(
            rows, default_store=default_store, on_error=on_error, event_id=event_id
        )
        with self._locked():
            state = self._load()
            if request.event_id is not None and request.event_id in state.events:
                seen = state.events[request.event_id]
                if seen["fp"] != request.fingerprint:
                    raise reused_key(request.event_id, "batch")
                return requests.batch_from_json(seen, self._replayed_movements(state, seen))

            if request.event_id is not None:
                # The batch's key is taken before its rows run, as the database takes it:
                # a row that reuses it is a row problem on every backend.
                state.put(state.events, request.event_id, {"fp": request.fingerprint})

            def remember(key: str, fingerprint: str, written: list[Movement]) -> None:
                state.put(
                    state.events,
                    key,
                    {
                        "at": format_time(written[0].at if written else utcnow()),
                        "fp": fingerprint,
                        **self._audit_refs(written),
                    },
                )

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
                return result
            if result.problems and request.on_error == "reject-all":
                raise BatchRejected(result.problems)
            if request.event_id is not None:
                state.put(
                    state.events,
                    request.event_id,
                    {
                        "at": format_time(utcnow()),
                        "fp": request.fingerprint,
                        **self._audit_refs(result.changes),
                        **requests.batch_json(result),
                    },
                )
            if state.changed:
                self._save(state)
            return result

    # -- users and API tokens -------------------------------------------------------

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
        hashed = auth.hash_password(password)  # slow: before the lock, not under it
        with self._writing() as state:
            for code in limited or ():
                state.store(code)
            if name in state.users:
                raise AlreadyExists(f"user {name!r} already exists")
            entry = {
                "password_hash": hashed,
                "role": checked_role,
                "stores": list(limited) if limited is not None else None,
                "disabled": False,
                "created_at": format_time(utcnow()),
            }
            state.put(state.users, name, entry)
            return _user(name, entry)

    def users(self) -> list[User]:
        state = self._load()
        return [_user(name, state.users[name]) for name in sorted(state.users)]

    def get_user(self, username: str) -> User:
        name = values.username(username)
        return _user(name, self._load().user(name))

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
        with self._writing() as state:
            entry = state.user(name)
            for code in changes.get("stores") or ():
                state.store(code)
            if changes:
                entry = {**entry, **changes}
                state.put(state.users, name, entry)
            return _user(name, entry)

    def remove_user(self, username: str) -> None:
        name = values.username(username)
        with self._writing() as state:
            state.user(name)
            for number, token in list(state.tokens.items()):
                if token["username"] == name:
                    state.drop(state.tokens, number)
            state.drop(state.users, name)

    def login(self, username: str, password: str) -> User:
        try:
            name: str | None = values.username(username)
        except ValidationError:
            name = None
        entry = self._load().users.get(name) if name is not None else None
        stored = entry["password_hash"] if entry is not None else None
        # Verified whatever the user's state, so each refusal takes as long as the others.
        if not auth.verify_password(stored, password) or entry is None or entry["disabled"]:
            raise auth.bad_login()
        assert name is not None and stored is not None
        if auth.needs_rehash(stored):
            fresh = auth.hash_password(password)
            with self._writing() as state:
                now = state.users.get(name)
                if now is not None and now["password_hash"] == stored:
                    state.put(state.users, name, {**now, "password_hash": fresh})
        return _user(name, entry)

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
        with self._writing() as state:
            state.user(owner)
            number = state.meta["next_token"]
            entry = {
                "id": number,
                "username": owner,
                "digest": digest,
                "name": label,
                "created_at": format_time(utcnow()),
                "expires_at": format_time(expires_at) if expires_at is not None else None,
                "last_used_at": None,
            }
            state.put(state.tokens, number, entry)
            state.put(state.meta, "next_token", number + 1)
            return IssuedToken(_token(entry), secret)

    def tokens(self, username: str | None = None) -> list[Token]:
        state = self._load()
        owner = None
        if username is not None:
            owner = values.username(username)
            state.user(owner)
        return [
            _token(state.tokens[number])
            for number in sorted(state.tokens)
            if owner is None or state.tokens[number]["username"] == owner
        ]

    def revoke_token(self, token_id: int) -> Token:
        number = values.integer(token_id, field="id", minimum=1, maximum=2**53)
        with self._writing() as state:
            if number not in state.tokens:
                raise NotFound(f"no token {number}")
            token = _token(state.tokens[number])
            state.drop(state.tokens, number)
            return token

    def authenticate(self, secret: str) -> User:
        if not auth.looks_like_token(secret):
            raise auth.bad_token()
        digest = auth.token_digest(secret)
        now = utcnow()

        def usable(state: _FileState) -> tuple[dict[str, Any], User]:
            found = next((e for e in state.tokens.values() if e["digest"] == digest), None)
            if found is None or not auth.same_digest(found["digest"], secret):
                raise auth.bad_token()
            owner = state.users.get(found["username"])
            user = _user(found["username"], owner) if owner is not None else None
            return found, auth.check_token_usable(_token(found), user, now)

        found, user = usable(self._load())  # no lock: readers see one whole file
        used = _optional_time(found["last_used_at"], "last_used_at")
        # Rewriting the whole file on every request would serialise them all: the time of
        # last use is kept to about a minute.
        if used is None or now - used > _TOUCH_EVERY:
            with self._writing() as state:
                found, user = usable(state)  # revoked or disabled meanwhile: refused
                state.put(state.tokens, found["id"], {**found, "last_used_at": format_time(now)})
        return user

    # -- operations -----------------------------------------------------------------

    def upgrade(self) -> tuple[str | None, str]:
        # Refuses a file newer than this code; an older one is written anew as it changes.
        version = str(self._read_document()["schema_version"])
        return version, version

    def status(self) -> dict[str, Any]:
        state = self._load()
        with self._os_errors("read"):
            size = self.real_path.stat().st_size
        return {
            "backend": self.name,
            "where": str(self.path),
            "ok": True,
            "bytes": size,
            "audit_bytes": state.meta["audit_bytes"],
            "stores": len(state.stores),
            "products": len(state.products),
            "history": state.meta["audit_entries"],
        }

    def verify_audit(self) -> tuple[int, list[str]]:
        state = self._load()
        last: dict[tuple[str, str], int] = {}
        problems = []
        previous = 0
        for line in self._audit_lines(state):
            # Ids only grow; a history brought from PostgreSQL may skip some.
            if line["id"] <= previous:
                problems.append(f"history entry {line['id']} comes after entry {previous}")
            previous = max(previous, line["id"])
            if line.get("store") and line.get("sku") and line.get("quantity_after") is not None:
                last[(line["store"], values.sku_key(line["sku"]))] = line["quantity_after"]
        if previous != state.meta["audit_entries"]:
            problems.append(
                f"the history ends at entry {previous}, the file records "
                f"{state.meta['audit_entries']}"
            )
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
        history = [self._movement_from(line) for line in self._audit_lines(state)]
        by_id = {m.id: m for m in history}
        events = []
        for event_id, seen in state.events.items():
            result = {k: v for k, v in seen.items() if k not in _EVENT_META}
            if "movements" in seen:
                result["movements"] = result_movements(seen)
            else:
                first, count = seen.get("audit", [0, 0])
                result["movements"] = [
                    movement_json(by_id[i]) for i in range(first, first + count) if i in by_id
                ]
            at = seen.get("at")
            events.append(
                AppliedEvent(
                    event_id,
                    seen["fp"],
                    values.moment(at, field="at") if isinstance(at, str) else utcnow(),
                    result,
                )
            )
        return Snapshot(
            stores=[Store(code, name) for code, name in sorted(state.stores.items())],
            products=sorted((_product(e) for e in state.products.values()), key=lambda p: p.sku),
            history=history,
            events=events,
            users=[_stored_user(name, state.users[name]) for name in sorted(state.users)],
            tokens=[_stored_token(state.tokens[number]) for number in sorted(state.tokens)],
        )

    def import_state(self, snapshot: Snapshot, *, progress: Progress | None = None) -> None:
        with self._writing() as state:
            for store in snapshot.stores:
                if store.code not in state.stores:
                    state.put(state.stores, store.code, store.name)
            for product in snapshot.products:
                key = values.sku_key(product.sku)
                if key in state.products:
                    raise AlreadyExists(f"SKU {product.sku!r} already exists here")
                for code in product.stock:
                    if code not in state.stores:
                        raise NotFound(f"no store {code!r} for the stock of {product.sku}")
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
            # Into an empty history the entries keep their ids; else they follow ours.
            keep_ids = state.meta["audit_entries"] == 0
            new_ids: dict[int, int] = {}
            for done, m in enumerate(snapshot.history, 1):
                number = m.id if keep_ids else state.meta["audit_entries"] + 1
                new_ids[m.id] = number
                state.put(state.meta, "audit_entries", number)
                state.new_audit.append(replace(m, id=number))
                if progress is not None and done % 10000 == 0:
                    progress(done)
            by_id = {m.id: m for m in state.new_audit}
            for event in snapshot.events:
                if event.event_id in state.events:
                    raise AlreadyExists(f"idempotency key {event.event_id!r} already exists here")
                entries = result_movements(event.result)
                found = [new_ids.get(m.get("id", 0)) for m in entries]
                refs: dict[str, Any]
                if all(i is not None and i in by_id for i in found):
                    refs = self._audit_refs([by_id[i] for i in found if i is not None])
                else:
                    # Its entries are not in the history brought (pruned): kept whole.
                    refs = {
                        "audit": [0, 0],
                        "movements": [{**m, "id": new_ids.get(m.get("id", 0), 0)} for m in entries],
                    }
                extra = {
                    k: v for k, v in event.result.items() if k not in (*_EVENT_META, "changes")
                }
                state.put(
                    state.events,
                    event.event_id,
                    {"at": format_time(event.at), "fp": event.fingerprint, **refs, **extra},
                )
            numbers = [rules.generated_number(p.sku) for p in snapshot.products]
            highest = max((n for n in numbers if n is not None), default=0)
            if highest:
                state.put(state.meta, "next_sku", max(state.meta["next_sku"], highest + 1))
            self._import_users(state, snapshot)

    @staticmethod
    def _import_users(state: _FileState, snapshot: Snapshot) -> None:
        """The snapshot's users and tokens, hashes and digests verbatim (so every password
        and token works here as it did there).  A user already here is refused; tokens
        keep their ids when there are none here yet, else are numbered after ours."""
        users = [auth.stored_user(u) for u in snapshot.users]
        tokens = sorted((auth.stored_token(t) for t in snapshot.tokens), key=lambda t: t.id)
        for user in users:
            if user.username in state.users:
                raise AlreadyExists(f"user {user.username!r} already exists here")
            for code in user.stores or ():
                if code not in state.stores:
                    raise NotFound(f"no store {code!r} for user {user.username!r}")
            state.put(
                state.users,
                user.username,
                {
                    "password_hash": user.password_hash,
                    "role": user.role,
                    "stores": list(user.stores) if user.stores is not None else None,
                    "disabled": user.disabled,
                    "created_at": format_time(user.created_at),
                },
            )
        keep_ids = not state.tokens
        digests = {e["digest"] for e in state.tokens.values()}
        for token in tokens:
            if token.username not in state.users:
                raise NotFound(f"no user {token.username!r} for token {token.id}")
            if token.digest in digests:
                raise AlreadyExists(f"token {token.id} ({token.username}) is already here")
            number = token.id if keep_ids else state.meta["next_token"]
            if number in state.tokens:
                raise ValidationError(f"tokens: id {number} given twice", field="tokens")
            digests.add(token.digest)
            state.put(
                state.tokens,
                number,
                {
                    "id": number,
                    "username": token.username,
                    "digest": token.digest,
                    "name": token.name,
                    "created_at": format_time(token.created_at),
                    "expires_at": _optional_format(token.expires_at),
                    "last_used_at": _optional_format(token.last_used_at),
                },
            )
            state.put(state.meta, "next_token", max(state.meta["next_token"], number + 1))

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
        window = requests.page(sort=sort, descending=descending, limit=limit, offset=offset)
        code = values.store_code(store) if store is not None else None
        needle = requests.search(search)
        wanted_category = values.category(category) if category else None
        wanted = values.text_key(wanted_category) if wanted_category else None
        state = self._load()
        if code is not None:
            state.store(code)
        items: list[tuple[tuple[str, str, str], Item]] = []
        for key, entry in state.products.items():
            if needle and needle not in key and needle not in values.text_key(entry["name"]):
                continue
            if wanted is not None and values.text_key(entry["category"] or "") != wanted:
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
                item = Item(
                    entry["sku"],
                    entry["name"],
                    entry["price"],
                    entry["unit"],
                    entry["category"],
                    entry["reorder_level"],
                    where,
                    quantity,
                )
                items.append(((key, entry["sku"], where or ""), item))
        # Ties always fall back to the SKU's key, the SKU, then the store, ascending.
        items.sort(key=lambda pair: pair[0])
        ordered = [item for _, item in items]
        if window.sort == "name":
            names = {id(i): values.text_key(i.name) for i in ordered}
            ordered.sort(key=lambda i: names[id(i)], reverse=window.descending)
        elif window.sort == "quantity":
            ordered.sort(key=lambda i: i.quantity, reverse=window.descending)
        elif window.sort == "value":
            ordered.sort(key=lambda i: i.value, reverse=window.descending)
        elif window.descending:
            ordered.sort(key=lambda i: values.sku_key(i.sku), reverse=True)
        end = None if window.limit is None else window.offset + window.limit
        return ordered[window.offset : end]

    def history(
        self,
        sku: str | None = None,
        *,
        store: str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> list[Movement]:
        window = requests.page(limit=limit)
        code = values.store_code(store) if store is not None else None
        wanted = values.sku_key(values.sku(sku, existing=True)) if sku is not None else None
        state = self._load()
        since_text = format_time(since) if since is not None else None
        found = []
        for line in self._audit_lines(state):
            if wanted is not None and values.sku_key(line.get("sku") or "") != wanted:
                continue
            if code is not None and line.get("store") != code:
                continue
            if since_text is not None and str(line.get("at")) < since_text:
                continue
            found.append(line)
        found.reverse()
        if window.limit is not None:
            found = found[: window.limit]
        return [self._movement_from(line) for line in found]

    def report_value(self, *, store: str | None = None) -> list[StoreValue]:
        code = values.store_code(store) if store is not None else None
        state = self._load()
        codes = [state.store(code)] if code is not None else sorted(state.stores)
        counts = dict.fromkeys(codes, 0)
        units = dict.fromkeys(codes, 0)
        worth = dict.fromkeys(codes, Decimal("0.00"))
        for entry in state.products.values():
            for where, quantity in entry["stock"].items():
                if where in counts:
                    counts[where] += 1
                    units[where] += quantity
                    worth[where] += entry["price"] * quantity
        return [StoreValue(c, counts[c], units[c], worth[c]) for c in codes]

    def report_movements(
        self,
        *,
        store: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[MovementSummary]:
        code = values.store_code(store) if store is not None else None
        state = self._load()
        if code is not None:
            state.store(code)
        since_text = format_time(since) if since is not None else None
        until_text = format_time(until) if until is not None else None
        sums: dict[tuple[str, str], list[int]] = {}
        for line in self._audit_lines(state):
            if line.get("store") is None or line.get("sku") is None or line.get("delta") is None:
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
            MovementSummary(where, sku, count, units_in, units_out)
            for (where, sku), (count, units_in, units_out) in sorted(sums.items())
        ]
