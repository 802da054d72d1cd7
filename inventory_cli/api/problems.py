"""Errors as RFC 9457 problem details, mapped once from the backend's error types.

Each backend error class has one status, one `type` and one title; the `detail` is the
text the CLI prints after `Error:`.  Extension members carry what a program needs to act
without parsing text: `field` (a bad value), `available` and `requested` (not enough
stock), `problems` (the bad rows of a batch).  The `http` backend reads `type` back into
the same error class, so a refusal means the same thing on every backend.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

from backends import (
    AlreadyExists,
    BackendUnavailable,
    BatchRejected,
    ConfigurationError,
    Conflict,
    InsufficientStock,
    InventoryError,
    NotFound,
    PermissionDenied,
    RefusedError,
    StaleExpect,
    Unauthenticated,
    ValidationError,
)
from backends.problems import PROBLEM_TYPES, type_uri

__all__ = ["MEDIA_TYPE", "PROBLEM_SCHEMA", "error_response", "problem", "status_for"]

MEDIA_TYPE = "application/problem+json"

#: Most specific first: (error class, status, title).
STATUSES: tuple[tuple[type[InventoryError], int, str], ...] = (
    (Unauthenticated, 401, "Not authenticated"),
    (PermissionDenied, 403, "Not allowed"),
    (NotFound, 404, "Not found"),
    (AlreadyExists, 409, "Already exists"),
    (InsufficientStock, 409, "Not enough stock"),
    (StaleExpect, 412, "Not the expected quantity"),
    (Conflict, 409, "Conflict"),
    (ValidationError, 422, "Bad value"),
    (RefusedError, 422, "Refused"),
    (BatchRejected, 422, "Bad rows"),
    (BackendUnavailable, 503, "Service unavailable"),
    (ConfigurationError, 503, "Not available on this server"),
)

#: Seconds a client should wait before retrying a 503.
RETRY_AFTER = 5


def status_for(error: InventoryError) -> tuple[int, str]:
    for kind, status, title in STATUSES:
        if isinstance(error, kind):
            return status, title
    return 500, "Internal error"


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    kind: str = "about:blank",
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> Response:
    body = {"type": kind, "title": title, "status": status, "detail": detail, **extensions}
    return Response(
        json.dumps(body, ensure_ascii=False),
        status_code=status,
        media_type=MEDIA_TYPE,
        headers=headers,
    )


def error_response(error: InventoryError, *, if_match: bool = False) -> Response:
    """The problem for a backend error.  A stale compare-and-set is 412 only when the
    client asked with `If-Match`; with `expect` in the body it is the 409 of any
    conflict, as the CLI's `--expect` is refused like any conflict."""
    status, title = status_for(error)
    if isinstance(error, StaleExpect) and not if_match:
        status, title = 409, "Conflict"
    headers: dict[str, str] = {}
    extensions: dict[str, Any] = {}
    if isinstance(error, Unauthenticated):
        # RFC 6750: no error code when no credentials came at all.
        headers["WWW-Authenticate"] = (
            'Bearer realm="inv", error="invalid_token"' if error.presented else 'Bearer realm="inv"'
        )
    if isinstance(error, BackendUnavailable):
        headers["Retry-After"] = str(RETRY_AFTER)
    if isinstance(error, ValidationError) and error.field:
        extensions["field"] = error.field
    if isinstance(error, InsufficientStock):
        extensions["available"] = error.available
        extensions["requested"] = error.requested
    if isinstance(error, BatchRejected):
        extensions["problems"] = [
            {"row": p.row, "column": p.column, "reason": p.reason} for p in error.problems
        ]
    return problem(
        status,
        title,
        str(error),
        kind=type_uri(error),
        headers=headers,
        **extensions,
    )


#: The problem document, for the OpenAPI description of every error response.
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "enum": ["about:blank", *PROBLEM_TYPES.values()]},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "field": {"type": "string"},
        "available": {"type": "integer"},
        "requested": {"type": "integer"},
        "problems": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "row": {"type": "integer"},
                    "column": {"type": ["string", "null"]},
                    "reason": {"type": "string"},
                },
            },
        },
    },
}
