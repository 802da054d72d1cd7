"""The engine of inv: the domain, its errors, the backend contract and the backends.

Nothing here imports Typer, Rich or FastAPI; heavy clients are imported only by the
backend that needs them.
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
    ValidationError,
)
from .models import Item, Movement, MovementSummary, Product, Snapshot, Store, StoreValue
from .registry import KNOWN_BACKENDS, get_backend_class

__all__ = [
    "KNOWN_BACKENDS",
    "AlreadyExists",
    "Backend",
    "BackendUnavailable",
    "BatchRejected",
    "BatchResult",
    "BatchRow",
    "ConfigurationError",
    "Conflict",
    "CorruptData",
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
    "Store",
    "StoreValue",
    "ValidationError",
    "get_backend_class",
]
