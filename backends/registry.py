"""Backends by name, imported on first use so `inv --help` pulls in no database driver.

Like fsspec's ``known_implementations``: a name maps to ``"module:Class"`` and the extra
that installs what it needs.
"""

from __future__ import annotations

import difflib
import importlib
from typing import NamedTuple

from .base import Backend
from .errors import ConfigurationError

__all__ = ["KNOWN_BACKENDS", "get_backend_class"]


class Known(NamedTuple):
    target: str
    extra: str | None


KNOWN_BACKENDS: dict[str, Known] = {
    "json": Known("backends.jsonfile:JsonBackend", None),
    "postgres": Known("backends.postgres:PostgresBackend", "postgres"),
    "kafka": Known("backends.kafka:KafkaBackend", "kafka"),
    "http": Known("backends.http:HttpBackend", "http"),
}
#: Named in the design, not built yet: said plainly rather than "unknown".
PLANNED_BACKENDS: tuple[str, ...] = ()


def get_backend_class(name: str) -> type[Backend]:
    """The class registered as `name`; `ConfigurationError` with a hint if it can't load."""
    if name in PLANNED_BACKENDS:
        raise ConfigurationError(
            f"the {name} backend is not part of this release yet; "
            f"available: {', '.join(KNOWN_BACKENDS)}"
        )
    try:
        known = KNOWN_BACKENDS[name]
    except KeyError:
        hint = difflib.get_close_matches(name, [*KNOWN_BACKENDS, *PLANNED_BACKENDS], n=1)
        suggestion = f" Did you mean {hint[0]!r}?" if hint else ""
        choices = ", ".join(KNOWN_BACKENDS)
        raise ConfigurationError(
            f"unknown backend {name!r} (choose from {choices}).{suggestion}"
        ) from None
    module_name, _, class_name = known.target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = f"; install it with: pip install 'inv[{known.extra}]'" if known.extra else ""
        raise ConfigurationError(
            f"the {name} backend cannot load ({exc.name or exc} is missing){extra}"
        ) from exc
    cls: type[Backend] = getattr(module, class_name)
    return cls
