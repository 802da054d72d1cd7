"""Output: a Rich table for people, JSON and CSV that scripts can rely on.

Every read command turns its results into plain records (`dict`s of str, int, Decimal,
None) with the `*_record` functions here, then `render`s them in the chosen format.
Rich is imported only to draw a table, so `--format json` starts fast.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from enum import StrEnum
from typing import Any, TextIO

from backends import Movement, wire
from backends.models import MOVEMENT_FIELDS, format_time

__all__ = [
    "FileFormat",
    "Format",
    "ShowFormat",
    "item_record",
    "movement_record",
    "product_record",
    "progress",
    "render",
    "token_record",
    "user_record",
]

Record = dict[str, Any]


class Format(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


class FileFormat(StrEnum):
    """Import and export files."""

    csv = "csv"
    jsonl = "jsonl"


class ShowFormat(StrEnum):
    table = "table"
    json = "json"


# The records of results that read the same in a table as in JSON are their JSON forms
# (`backends.wire`, what the HTTP API answers too): one field list per type.
item_record = wire.item_json
product_record = wire.product_json
store_record = wire.store_json
value_record = wire.value_json
summary_record = wire.summary_json
# Those with times keep them as `datetime`s, which a table shows for people.
user_record = wire.user_fields
token_record = wire.token_fields
_plain = wire.plain

SUMMARY_COLUMNS = ("store", "sku", "movements", "units_in", "units_out", "net")
USER_COLUMNS = ("username", "role", "stores", "disabled", "created_at")
TOKEN_COLUMNS = ("id", "username", "name", "created_at", "expires_at", "last_used_at")


def movement_record(movement: Movement) -> Record:
    return dict(zip(MOVEMENT_FIELDS, movement.row(), strict=True))


def _cell(value: Any, *, human: bool = False) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S") if human else format_time(value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    return str(value)


def write_json(value: Any, out: TextIO) -> None:
    # One write: under PYTHONUNBUFFERED each small write would be a system call.
    out.write(json.dumps(_plain(value), ensure_ascii=False, indent=2) + "\n")


def render(
    records: Sequence[Record],
    fmt: str,
    *,
    columns: Sequence[str] | None = None,
    title: str | None = None,
    empty: str = "nothing to show",
    footer: Record | None = None,
    out: TextIO | None = None,
) -> None:
    """Write `records` to stdout as a table, a JSON array, or CSV with a header."""
    out = out or sys.stdout
    if columns is None:
        columns = list(records[0]) if records else []
    if fmt == Format.json:
        write_json([{c: r[c] for c in columns} for r in records], out)
    elif fmt == Format.csv:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([_cell(record[c]) for c in columns] for record in records)
        out.write(buffer.getvalue())
    else:
        _table(records, columns, title=title, empty=empty, footer=footer, out=out)


def render_one(record: Record, fmt: str, *, title: str | None = None) -> None:
    """One object: JSON, or a two-column table for people."""
    if fmt == Format.json:
        write_json(record, sys.stdout)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in _flat(record):
        table.add_row(key, _cell(value, human=True) if value not in (None, {}) else "-")
    Console(width=_width(sys.stdout)).print(table)


def _flat(record: Record, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested objects as dotted rows (`kafka.lag`), lists of objects one row each
    (`kafka.partitions[3]`), for a two-column table."""
    rows: list[tuple[str, Any]] = []
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            rows += _flat(value, f"{name}.")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for i, item in enumerate(value):
                rows.append((f"{name}[{item.get('partition', i)}]", item))
        else:
            rows.append((name, value))
    return rows


_RIGHT = {
    "price",
    "quantity",
    "value",
    "reorder_level",
    "delta",
    "quantity_after",
    "units",
    "products",
    "movements",
    "units_in",
    "units_out",
    "net",
    "id",
}


def _table(
    records: Sequence[Record],
    columns: Sequence[str],
    *,
    title: str | None,
    empty: str,
    footer: Record | None,
    out: TextIO,
) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(file=out, width=_width(out))
    if not records:
        console.print(f"[dim]{empty}[/dim]")
        return
    table = Table(title=title, show_footer=footer is not None)
    for column in columns:
        table.add_column(
            column.replace("_", " "),
            justify="right" if column in _RIGHT else "left",
            footer=_cell(footer.get(column), human=True) if footer else "",
            overflow="fold",
        )
    for record in records:
        table.add_row(
            *("-" if record[c] is None else _cell(record[c], human=True) for c in columns)
        )
    console.print(table)


def _width(out: TextIO) -> int | None:
    """A terminal's own width; a wide page when piped, so rows don't wrap in files."""
    return None if out.isatty() else 200


@contextmanager
def progress(description: str, total: int | None) -> Iterator[Any]:
    """A Rich progress bar on a terminal; on a pipe, a callable that does nothing.

    Yields `advance_to(done)`.
    """
    if not sys.stderr.isatty():
        yield lambda done: None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda done: bar.update(task, completed=done)
