"""PostgreSQL connections: the primary and its replicas, pooled; the schema check; driver
errors translated by class; transactions retried when two writers collide.

Everything that talks to the database goes through a `Database`: the postgres and kafka
backends, the worker, seeding.  It is where a psycopg or SQLAlchemy error stops and one
of the contract's errors (`backends.errors`) starts, sorted by the driver's exception
class as DB-API defines them (SQLAlchemy's `is_disconnect` does the same):

==========================================  ==========================================
driver error                                contract error (exit code)
==========================================  ==========================================
`OperationalError`, `InterfaceError`:       `BackendUnavailable`, retryable (75),
connection refused, lost, server shutting   except a refused login, a missing
down, too many connections, a deadlock      database or a TLS mismatch at connect:
or serialization failure                    `ConfigurationError` (78)
`DataError` (class 22): a value the         `ValidationError` (1)
database refuses
`IntegrityError` (class 23)                 `Conflict` (1); a racing insert is retried
                                            first (`Collision`, a deadlock too)
`ProgrammingError` for a missing table or   `ConfigurationError` (78): the schema is
column (42P01, 42703); 42501                damaged or not inv's; `PermissionDenied`
                                            (77) for a missing privilege
a read-only server (25006)                  `ConfigurationError` (78)
anything else (a bug in inv's own SQL)      raised as it is
==========================================  ==========================================

`InventoryError.retryable` says whether trying again later may succeed; the worker and
the retry loop here read it, never the driver error underneath.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import urlsplit

import psycopg
from sqlalchemy import create_engine, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine, make_url

from ..errors import (
    BackendUnavailable,
    ConfigurationError,
    Conflict,
    InventoryError,
    PermissionDenied,
    ValidationError,
)
from . import schema

if TYPE_CHECKING:
    from ..settings import Settings

__all__ = ["Collision", "Database", "check_url", "read_urls", "translate"]

T = TypeVar("T")

log = logging.getLogger("inv.postgres")

_ENGINES: dict[str, Engine] = {}
_SCHEMES = ("postgresql+psycopg://", "postgresql://", "postgres://")


class Collision(BackendUnavailable):
    """Two writers collided (a deadlock, a serialization failure, a racing insert): the
    transaction was rolled back and can simply run again."""


class _RacingInsert(Collision):
    """A unique key taken by another writer meanwhile: worth running again; still taken
    after that, it is a conflict with the data."""


class _MissingPartition(BackendUnavailable):
    """The audit log has no partition for an entry's month yet."""


def read_urls(settings: Settings) -> list[str]:
    """The replicas' URLs of the settings (`read_database_urls`, comma-separated)."""
    from ..settings import secret

    replicas = secret(settings.read_database_urls) or ""
    return [u.strip() for u in replicas.split(",") if u.strip()]


def _hidden(url: str) -> str:
    """A URL for messages: no password, whatever else is wrong with it."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc.rpartition("@")[2]
        user = parts.username
        return f"{parts.scheme}://{user + '@' if user else ''}{netloc}{parts.path}"
    except ValueError:
        return "?"


def check_url(url: str, *, field: str = "database_url") -> str:
    """The driver URL for `url` (psycopg 3, whatever scheme the user wrote), or
    `ConfigurationError` for one that cannot work: another scheme, a malformed URL, a
    port out of range, an option libpq does not know."""
    if not url or not url.strip():
        raise ConfigurationError(f"{field}: is empty")
    url = url.strip()
    for prefix in _SCHEMES:
        if url.startswith(prefix):
            driver = "postgresql+psycopg://" + url[len(prefix) :]
            break
    else:
        raise ConfigurationError(f"{field}: must start with postgresql:// (got {_hidden(url)})")
    try:
        parsed = make_url(driver)
        port = parsed.port
    except (sa_exc.ArgumentError, ValueError) as exc:
        raise ConfigurationError(f"{field}: {_hidden(url)} is not a database URL ({exc})") from None
    if port is not None and not 1 <= port <= 65535:
        raise ConfigurationError(f"{field}: port {port} is out of range (1-65535)")
    if not parsed.database:
        raise ConfigurationError(f"{field}: {_hidden(url)} names no database")
    try:
        psycopg.conninfo.conninfo_to_dict("postgresql://" + url.split("://", 1)[1])
    except psycopg.ProgrammingError as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "not understood"
        raise ConfigurationError(f"{field}: {detail}") from None
    return driver


def describe(url: str) -> str:
    """A checked URL without its password, as users write it."""
    return (
        make_url(check_url(url))
        .render_as_string(hide_password=True)
        .replace("postgresql+psycopg://", "postgresql://")
    )


def where(url: str) -> str:
    """host:port of a checked URL."""
    parsed = make_url(check_url(url))
    return f"{parsed.host or 'localhost'}:{parsed.port or 5432}"


#: Connections a process keeps open per database (more, up to 5, are opened for bursts).
POOL_SIZE = 10


def _engine(url: str) -> Engine:
    """One pool per URL per process."""
    engine = _ENGINES.get(url)
    if engine is None:
        engine = create_engine(
            check_url(url),
            # Kept open: as many as a server runs requests at once (`inv serve` holds
            # its threads to this), so no connection is opened and closed per request.
            pool_size=POOL_SIZE,
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


def _message(orig: BaseException) -> str:
    text_ = str(orig).strip()
    return text_.splitlines()[0] if text_ else type(orig).__name__


#: What libpq says, at connect, when the connection can never work as configured (a
#: connection lost later, TLS or not, says something else and is worth a retry).
_CONNECT_CONFIG = (
    "password authentication failed",
    "no password supplied",
    "does not exist",
    "server does not support SSL",
    "SSL was required",
    "certificate",
    "sslmode",
    "no pg_hba.conf entry",
    "invalid connection option",
    "invalid port",
    "could not translate host name",
)


def translate(exc: BaseException, url: str) -> InventoryError | None:
    """A driver error as one of the contract's errors, naming the server, never the
    password; None for an error in inv's own SQL (a bug: it should show)."""
    orig: BaseException = exc.orig if isinstance(exc, sa_exc.DBAPIError) and exc.orig else exc
    message = _message(orig)
    state = getattr(orig, "sqlstate", None)
    at = where(url)
    if isinstance(exc, sa_exc.TimeoutError):
        return BackendUnavailable(f"PostgreSQL at {at}: no connection free in the pool")
    if isinstance(orig, psycopg.errors.SerializationFailure | psycopg.errors.DeadlockDetected):
        return Collision(f"PostgreSQL at {at}: {message}")
    if isinstance(orig, psycopg.errors.UniqueViolation):
        return _RacingInsert(f"PostgreSQL at {at}: {message}")
    if isinstance(orig, psycopg.errors.CheckViolation) and "no partition" in message:
        return _MissingPartition(f"PostgreSQL at {at}: {message}")
    if isinstance(orig, psycopg.errors.InsufficientPrivilege):
        return PermissionDenied(f"PostgreSQL at {at}: {message}")
    if isinstance(orig, psycopg.errors.ReadOnlySqlTransaction):
        return ConfigurationError(
            f"PostgreSQL at {at} is read-only (a replica?): {message}; "
            "database_url must name the primary"
        )
    if isinstance(orig, psycopg.errors.UndefinedTable | psycopg.errors.UndefinedColumn):
        return ConfigurationError(
            f"the database at {at} does not have inv's schema as this inv knows it "
            f"({message}); restore it, or run 'inv db upgrade' on a database inv created"
        )
    if isinstance(orig, psycopg.OperationalError | psycopg.InterfaceError):
        if state in ("28P01", "28000", "3D000") or (
            state is None and any(sign in message for sign in _CONNECT_CONFIG)
        ):
            return ConfigurationError(f"PostgreSQL at {at}: {message}")
        return BackendUnavailable(f"cannot reach PostgreSQL at {at}: {message}")
    if isinstance(orig, psycopg.DataError):
        return ValidationError(f"the database refused a value: {message}")
    if isinstance(orig, psycopg.IntegrityError):
        return Conflict(f"the data changed meanwhile: {message}; nothing changed")
    return None


class Database:
    """The primary (`url`) and its replicas (`read_urls`) of one inventory.

    Reads go to a replica when there is one; after a write, this object reads the
    primary, so one command reads its own writes.  The schema's revision is checked
    once, on the first connection.
    """

    def __init__(self, url: str, read_urls: Sequence[str] = ()) -> None:
        check_url(url)
        for replica in read_urls:
            check_url(replica, field="read_database_urls")
        self.url = url
        self.read_urls = list(read_urls)
        self.checked = False
        #: Set once this object has written: its reads go to the primary from then on.
        self.wrote = False

    def describe(self) -> str:
        return describe(self.url)

    def close(self) -> None:
        for url in (self.url, *self.read_urls):
            engine = _ENGINES.pop(url, None)
            if engine is not None:
                engine.dispose()

    def _check_schema(self, connection: Connection) -> None:
        revision = schema.current_revision(connection)
        if revision is None:
            raise ConfigurationError(
                f"{self.describe()} has no inv schema; run 'inv init' (or 'inv db upgrade')"
            )
        if revision != schema.HEAD:
            if schema.is_older(revision):
                raise ConfigurationError(
                    f"the schema of {self.describe()} is at {revision}, this inv needs "
                    f"{schema.HEAD}; run 'inv db upgrade'"
                )
            raise ConfigurationError(
                f"the schema of {self.describe()} ({revision}) is not one this inv knows "
                f"(it needs {schema.HEAD}); upgrade inv"
            )
        self.checked = True

    @contextmanager
    def connect(self, url: str | None = None, *, check: bool = True) -> Iterator[Connection]:
        """A pooled connection to `url` (the primary by default), the schema checked."""
        url = url or self.url
        try:
            with _engine(url).connect() as connection:
                if check and not self.checked:
                    self._check_schema(connection)
                    connection.rollback()  # end the check's implicit transaction
                yield connection
        except (sa_exc.DBAPIError, sa_exc.TimeoutError, psycopg.Error) as exc:
            error = translate(exc, url)
            if error is None:
                raise  # a bug in our SQL: let it show
            raise error from exc

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reads: a replica, unless this object has written; the
        primary when the replica cannot be reached (one warning)."""
        with ExitStack() as stack:
            connection = None
            if self.read_urls and not self.wrote:
                url = random.choice(self.read_urls)
                try:
                    connection = stack.enter_context(self.connect(url))
                except BackendUnavailable as exc:
                    log.warning("%s; reading from the primary", exc)
            if connection is None:
                connection = stack.enter_context(self.connect(self.url))
            yield connection

    def write(self, work: Callable[[Connection], T], *, attempts: int = 5, check: bool = True) -> T:
        """Run `work` in one transaction on the primary.  Collisions (deadlocks,
        serialization failures, racing inserts) run it again, up to `attempts` times; a
        missing audit partition is created and it runs again."""
        self.wrote = True
        for attempt in range(attempts):
            last = attempt + 1 == attempts
            try:
                with self.connect(self.url, check=check) as connection, connection.begin():
                    return work(connection)
            except _MissingPartition:
                if last:
                    raise
                self.ensure_partition()
            except _RacingInsert as exc:
                if last:
                    raise Conflict(f"the data changed meanwhile: {exc}; nothing changed") from exc
            except Collision:
                if last:
                    raise
        raise AssertionError("unreachable")

    def ensure_partition(self, at: datetime | None = None) -> None:
        with self.connect(self.url) as connection, connection.begin():
            connection.execute(text("SELECT audit_log_partition(coalesce(:at, now()))"), {"at": at})
