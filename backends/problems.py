"""The `type` of each RFC 9457 problem `inv serve` answers, and the error class it means.

The server writes `type_uri(error)`; the `http` backend turns a problem back into the
same class with `error_from_problem`, so a refusal crosses the wire unchanged (and the
CLI's exit code is the same on every backend).
"""

from __future__ import annotations

from typing import Any

from .errors import (
    AlreadyExists,
    BackendUnavailable,
    BatchRejected,
    ConfigurationError,
    Conflict,
    CorruptData,
    InsufficientStock,
    InventoryError,
    NotFound,
    PermissionDenied,
    RefusedError,
    RowProblem,
    StaleExpect,
    Unauthenticated,
    ValidationError,
)

__all__ = ["PROBLEM_TYPES", "error_from_problem", "type_uri"]

_BASE = "https://inv.invalid/problems/"

#: Every error class by the last part of its `type` (most specific classes first).
_KINDS: dict[str, type[InventoryError]] = {
    "unauthenticated": Unauthenticated,
    "permission-denied": PermissionDenied,
    "not-found": NotFound,
    "already-exists": AlreadyExists,
    "insufficient-stock": InsufficientStock,
    "stale-expect": StaleExpect,
    "conflict": Conflict,
    "validation": ValidationError,
    "refused": RefusedError,
    "bad-rows": BatchRejected,
    "unavailable": BackendUnavailable,
    "corrupt-data": CorruptData,
    "configuration": ConfigurationError,
}
PROBLEM_TYPES = {kind: _BASE + kind for kind in _KINDS}


def type_uri(error: InventoryError) -> str:
    for kind, cls in _KINDS.items():
        if isinstance(error, cls):
            return PROBLEM_TYPES[kind]
    return "about:blank"


def error_from_problem(body: dict[str, Any]) -> InventoryError | None:
    """The error a problem document describes, or None for a type inv did not write."""
    kind = str(body.get("type", "")).removeprefix(_BASE)
    cls = _KINDS.get(kind)
    if cls is None:
        return None
    detail = str(body.get("detail") or body.get("title") or kind)
    if cls is ValidationError:
        field = body.get("field")
        return ValidationError(detail, field=field if isinstance(field, str) else None)
    if cls is InsufficientStock:
        return InsufficientStock(
            detail,
            available=_int(body.get("available")),
            requested=_int(body.get("requested")),
        )
    if cls is BatchRejected:
        problems = [
            RowProblem(_int(p.get("row")), p.get("column"), str(p.get("reason", "")))
            for p in body.get("problems") or []
            if isinstance(p, dict)
        ]
        error = BatchRejected(problems)
        error.args = (detail,)
        return error
    return cls(detail)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
