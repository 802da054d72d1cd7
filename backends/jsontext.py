"""JSON text from outside (the inventory file, its audit trail, import rows, events),
parsed so that no input can do more than be refused.

`json.loads` alone lets a 5,000-digit number raise a bare `ValueError` and a value
nested 100,000 deep a `RecursionError`; `loads` turns both, and malformed JSON, into
`JsonError` with a message and, where there is one, the line and column.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

__all__ = ["JsonError", "loads"]

#: The longest number taken (the largest value inv stores has 19 digits).
MAX_DIGITS = 40


class JsonError(ValueError):
    """Text that is not JSON inv can read: `msg`, and `lineno`/`colno` when known."""

    def __init__(self, msg: str, lineno: int | None = None, colno: int | None = None) -> None:
        where = f" at line {lineno}, column {colno}" if lineno is not None else ""
        super().__init__(f"{msg}{where}")
        self.msg = msg
        self.lineno = lineno
        self.colno = colno


class _TooLong(ValueError):
    pass


def _integer(text: str) -> int:
    if len(text) > MAX_DIGITS:
        raise _TooLong(text)
    return int(text)


def _decimal(text: str) -> Decimal:
    if len(text) > MAX_DIGITS:
        raise _TooLong(text)
    return Decimal(text)


def _float(text: str) -> float:
    if len(text) > MAX_DIGITS:
        raise _TooLong(text)
    return float(text)


def loads(data: str | bytes, *, decimals: bool = False) -> Any:
    """Parse `data`; numbers with a fraction become `Decimal` with `decimals`, else
    `float`.  Raises `JsonError` (and `UnicodeDecodeError` for bytes that are not UTF-8)."""
    try:
        return json.loads(
            data,
            parse_int=_integer,
            parse_float=_decimal if decimals else _float,
            parse_constant=_constant,
        )
    except json.JSONDecodeError as exc:
        raise JsonError(exc.msg, exc.lineno, exc.colno) from None
    except _TooLong as exc:
        raise JsonError(
            f"a number has more than {MAX_DIGITS} digits ({str(exc)[:20]}...)"
        ) from None
    except RecursionError:
        raise JsonError("values are nested too deeply") from None


def _constant(name: str) -> Any:
    raise JsonError(f"{name} is not a JSON number")
