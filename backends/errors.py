"""Every error a backend may raise, and nothing else crosses the `Backend` interface.

Driver errors (OS, JSON, and later psycopg, redis, confluent-kafka) are translated at the
edge of each backend and chained with ``raise ... from exc``.  The CLI maps each class to
one exit code (see ``inventory_cli.errors``)::

    InventoryError
    ├── RefusedError                    the request was understood and refused (exit 1)
    │   ├── ValidationError             a value is malformed or out of range
    │   ├── NotFound                    no such product, store or entry
    │   ├── AlreadyExists               the SKU or store code is taken
    │   ├── InsufficientStock           the movement would take stock below zero
    │   └── Conflict                    a stale --expect, or an idempotency key reused
    │       └── StaleExpect             compare-and-set failed: the quantity changed (HTTP 412)
    ├── BatchRejected                   rows of a batch (an import) are bad (exit 65)
    ├── BackendUnavailable              a service is unreachable; safe to retry (exit 75)
    ├── PermissionDenied                a role, a token, a read-only folder (exit 77)
    │   └── Unauthenticated             no credentials, or bad, expired or revoked ones
    └── ConfigurationError              bad settings, a missing extra, an unusable file (exit 78)
        └── CorruptData                 the data file is damaged or is not an inv file
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "AlreadyExists",
    "BackendUnavailable",
    "BatchRejected",
    "ConfigurationError",
    "Conflict",
    "CorruptData",
    "InsufficientStock",
    "InventoryError",
    "NotFound",
    "PermissionDenied",
    "RefusedError",
    "RowProblem",
    "StaleExpect",
    "Unauthenticated",
    "ValidationError",
]


class InventoryError(Exception):
    """Base of every error a backend raises."""

    #: Whether the same request may succeed later unchanged (a service came back, a
    #: collision with another writer passed).  Retry loops read this, never the driver
    #: error underneath.
    retryable: bool = False


class RefusedError(InventoryError):
    """The request was understood and refused; retrying it unchanged will not help."""


class ValidationError(RefusedError):
    """A value is malformed or out of range."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class NotFound(RefusedError):
    """No such product, store or entry."""


class AlreadyExists(RefusedError):
    """The SKU or store code is already taken."""


class InsufficientStock(RefusedError):
    """The movement would take a quantity below zero."""

    def __init__(self, message: str, *, available: int, requested: int) -> None:
        super().__init__(message)
        self.available = available
        self.requested = requested


class Conflict(RefusedError):
    """The state is not what the caller expected: a stale --expect, or a reused idempotency key."""


class StaleExpect(Conflict):
    """Compare-and-set failed: the quantity on hand is not the one the caller expected."""


@dataclass(frozen=True)
class RowProblem:
    """One bad row of a batch: the line it came from, the column, and why."""

    row: int
    column: str | None
    reason: str

    def __str__(self) -> str:
        where = f"row {self.row}"
        if self.column:
            where += f", column {self.column}"
        return f"{where}: {self.reason}"


class BatchRejected(InventoryError):
    """Rows of a batch are bad; with reject-all nothing was written."""

    def __init__(self, problems: list[RowProblem]) -> None:
        noun = "row" if len(problems) == 1 else "rows"
        super().__init__(f"{len(problems)} bad {noun}; nothing was written")
        self.problems = problems


class BackendUnavailable(InventoryError):
    """A service (database, broker, cache, server) cannot be reached; safe to retry."""

    retryable = True


class PermissionDenied(InventoryError):
    """The caller may not do this: a role, a token, or a folder it cannot write."""


class Unauthenticated(PermissionDenied):
    """No credentials, or a password, token or user that is wrong, expired, revoked or
    disabled (HTTP 401; the CLI's exit code is permission's, 77).  `presented`: whether
    any credentials came with the request."""

    def __init__(self, message: str, *, presented: bool = True) -> None:
        super().__init__(message)
        self.presented = presented


class ConfigurationError(InventoryError):
    """Settings are wrong or incomplete, or an optional extra is not installed."""


class CorruptData(ConfigurationError):
    """The data file is damaged or is not an inv file; it is left untouched."""
