"""The CLI's one error boundary: each backend error type maps to one exit code.

Exit codes follow sysexits where one fits, so cron wrappers can tell a retry from a mistake.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer

from backends import (
    BackendUnavailable,
    BatchRejected,
    ConfigurationError,
    InventoryError,
    PermissionDenied,
    RefusedError,
)

__all__ = ["EXIT_CODES", "exit_code_for", "fail", "guard"]

OK = 0
REFUSED = 1
USAGE = 2  # Typer's own
DATA_ERROR = 65  # an import file had bad rows
TEMP_FAILURE = 75  # a service is unreachable: safe to retry
NO_PERMISSION = 77
CONFIG = 78  # bad configuration, a missing extra, an unusable data file

#: Most specific first.
EXIT_CODES: tuple[tuple[type[InventoryError], int], ...] = (
    (RefusedError, REFUSED),
    (BatchRejected, DATA_ERROR),
    (BackendUnavailable, TEMP_FAILURE),
    (PermissionDenied, NO_PERMISSION),
    (ConfigurationError, CONFIG),
)

P = ParamSpec("P")
R = TypeVar("R")


def exit_code_for(error: InventoryError) -> int:
    for kind, code in EXIT_CODES:
        if isinstance(error, kind):
            return code
    return REFUSED


def fail(message: str, code: int) -> typer.Exit:
    """Print `Error: message` on stderr; return the Exit to raise."""
    print(f"Error: {message}", file=sys.stderr)
    return typer.Exit(code)


def guard(command: Callable[P, R]) -> Callable[P, R]:
    """Wrap a command so a backend error prints one line and exits with its code."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except BatchRejected as exc:
            for problem in exc.problems:
                print(f"Error: {problem}", file=sys.stderr)
            raise fail(str(exc), DATA_ERROR) from None
        except InventoryError as exc:
            raise fail(str(exc), exit_code_for(exc)) from None

    return run
