"""The engine of inv: the domain, its errors, the backend contract and the backends.

The grammar of every value is `backends.values`, the rules of the domain
`backends.rules`, every mutation as a typed request `backends.requests`: every backend
and entry point calls them.  Nothing here imports Typer, Rich or FastAPI; heavy clients
are imported only by the backend that needs them.
"""

from .base import Backend, Progress
from .batch import BatchResult, BatchRow, OnError
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
from .models import (
    AppliedEvent,
    Edited,
    Item,
    Movement,
    MovementSummary,
    Product,
    Snapshot,
    Store,
    StoreValue,
)
from .registry import KNOWN_BACKENDS, get_backend_class

__all__ = [
    "KNOWN_BACKENDS",
    "AlreadyExists",
    "AppliedEvent",
    "Backend",
    "BackendUnavailable",
    "BatchRejected",
    "BatchResult",
    "BatchRow",
    "ConfigurationError",
    "Conflict",
    "CorruptData",
    "Edited",
    "InsufficientStock",
    "InventoryError",
    "Item",
    "Movement",
    "MovementSummary",
    "NotFound",
    "OnError",
    "PermissionDenied",
    "Product",
    "Progress",
    "RefusedError",
    "RowProblem",
    "Snapshot",
    "StaleExpect",
    "Store",
    "StoreValue",
    "Unauthenticated",
    "ValidationError",
    "get_backend_class",
]
