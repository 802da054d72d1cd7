"""Import and export files: CSV with a header row, or JSON Lines with the same keys.

Reading turns each line into a `BatchRow` with its values parsed, and collects every
problem (row number as an editor counts lines, header = 1; the column; the reason)
instead of stopping at the first.  What a row *means* is the backend's business
(`backends.batch`); this module only knows the file formats.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import io
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from decimal import Decimal
from typing import IO, Any, TextIO

from backends import BatchRow, Item, RowProblem, ValidationError
from backends.batch import COLUMNS, GRAMMAR
from backends.jsontext import JsonError, loads

from .formats import FileFormat

__all__ = ["EXPORT_COLUMNS", "FileFormat", "export_records", "read_rows", "write_rows"]


#: What export writes: one row per (sku, store), the catalog columns, store and quantity.
EXPORT_COLUMNS = (
    "sku",
    "name",
    "price",
    "unit",
    "category",
    "reorder_level",
    "store",
    "store_name",
    "quantity",
)


def _reason(error: ValidationError, column: str) -> str:
    """The message without a leading `column: ` (the problem names the column already)."""
    text = str(error)
    prefix = f"{column}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


#: Columns of text: a JSON number there is taken as its digits (`{"sku": 12345}`).
_TEXT_COLUMNS = frozenset(
    {"sku", "name", "unit", "category", "store", "store_name", "reason", "idempotency_key"}
)


def _parse_row(number: int, fields: dict[str, Any], problems: list[RowProblem]) -> BatchRow | None:
    parsed: dict[str, Any] = {}
    ok = True
    for column, raw in fields.items():
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            continue
        if isinstance(raw, bool | list | dict):
            kind = {bool: "true or false", list: "a list", dict: "an object"}[type(raw)]
            problems.append(RowProblem(number, column, f"{kind} is not a plain value"))
            ok = False
            continue
        if column in _TEXT_COLUMNS and isinstance(raw, int | Decimal):
            raw = str(raw)
        try:
            parsed[column] = GRAMMAR[column](raw)
        except ValidationError as exc:
            problems.append(RowProblem(number, column, _reason(exc, column)))
            ok = False
    if not str(fields.get("sku") or "").strip():
        # A row naming only a store (and its name) creates the store: export writes one
        # for each store that holds no stock.
        if not ok or set(parsed) - {"store", "store_name", "reason", "idempotency_key"}:
            problems.append(RowProblem(number, "sku", "a SKU is required"))
            return None
        if "store" not in parsed:
            problems.append(RowProblem(number, "sku", "a SKU is required"))
            return None
        return BatchRow(row=number, sku=None, **parsed)
    if "quantity" in parsed and "change" in parsed:
        problems.append(RowProblem(number, "change", "give quantity or change, not both"))
        return None
    if not ok:
        return None
    return BatchRow(row=number, **parsed)


def _check_columns(names: Sequence[str], problems: list[RowProblem], *, row: int) -> bool:
    ok = True
    seen: set[str] = set()
    for name in names:
        if name not in COLUMNS:
            hint = difflib.get_close_matches(name, COLUMNS, n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            problems.append(RowProblem(row, name or "(blank)", f"unknown column{extra}"))
            ok = False
        elif name in seen:
            problems.append(RowProblem(row, name, "column appears twice"))
            ok = False
        seen.add(name)
    return ok


class _Lines:
    """Counts the physical lines the csv reader has pulled, to number rows like an editor."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.count = 0

    def __iter__(self) -> Iterator[str]:
        for line in self.stream:
            self.count += 1
            yield line


def _csv_rows(
    text: TextIO, problems: list[RowProblem], progress: Callable[[int], None]
) -> list[BatchRow]:
    lines = _Lines(text)
    try:
        return _csv_records(csv.reader(lines), lines, problems, progress)
    except csv.Error as exc:
        problems.append(RowProblem(max(lines.count, 1), None, f"not readable as CSV: {exc}"))
        return []


def _csv_records(
    reader: Iterator[list[str]],
    lines: _Lines,
    problems: list[RowProblem],
    progress: Callable[[int], None],
) -> list[BatchRow]:
    try:
        header = next(reader)
    except StopIteration:
        problems.append(RowProblem(1, None, "the file is empty (a header row is required)"))
        return []
    columns = [name.strip().lower() for name in header]
    if not _check_columns(columns, problems, row=1):
        return []
    if "sku" not in columns:
        problems.append(RowProblem(1, "sku", "missing required column"))
        return []
    rows: list[BatchRow] = []
    start = lines.count + 1
    width = len(columns)
    for record in reader:
        number, start = start, lines.count + 1
        if not any(cell.strip() for cell in record):
            continue
        if len(record) > width:
            problems.append(
                RowProblem(number, None, f"{len(record)} values but the header has {width}")
            )
            continue
        row = _parse_row(number, dict(zip(columns, record, strict=False)), problems)
        if row is not None:
            rows.append(row)
        if len(rows) % 1000 == 0:
            progress(len(rows))
    return rows


def _jsonl_rows(
    text: TextIO, problems: list[RowProblem], progress: Callable[[int], None]
) -> list[BatchRow]:
    rows: list[BatchRow] = []
    for number, line in enumerate(text, 1):
        if not line.strip():
            continue
        try:
            fields = loads(line, decimals=True)
        except JsonError as exc:
            where = f" (column {exc.colno})" if exc.colno is not None else ""
            problems.append(RowProblem(number, None, f"not valid JSON: {exc.msg}{where}"))
            continue
        if not isinstance(fields, dict):
            problems.append(RowProblem(number, None, "not a JSON object"))
            continue
        keys = [str(k) for k in fields]
        if not _check_columns(keys, problems, row=number):
            continue
        row = _parse_row(number, fields, problems)
        if row is not None:
            rows.append(row)
        if len(rows) % 1000 == 0:
            progress(len(rows))
    return rows


def read_rows(
    stream: IO[bytes],
    fmt: FileFormat,
    *,
    progress: Callable[[int], None] = lambda done: None,
) -> tuple[list[BatchRow], list[RowProblem]]:
    """Parse every row; return the good ones and a problem for each bad one.

    UTF-8 (a BOM is skipped), any line ending.  A problem with no column concerns the
    whole line; one on row 1 of a CSV file concerns the header.
    """
    problems: list[RowProblem] = []
    data = stream.read()
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        decoded = data[bom:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = exc.start + bom
        line = data.count(b"\n", 0, offset) + 1
        problems.append(RowProblem(line, None, f"not UTF-8 text ({exc.reason} at byte {offset})"))
        return [], problems
    text = io.StringIO(decoded, newline="" if fmt == FileFormat.csv else None)
    if fmt == FileFormat.csv:
        return _csv_rows(text, problems, progress), problems
    return _jsonl_rows(text, problems, progress), problems


def export_records(
    items: Iterable[Item],
    store_names: dict[str, str],
    *,
    progress: Callable[[int], None] = lambda done: None,
) -> Iterator[dict[str, Any]]:
    """Export rows: the catalog columns, the store and its name, and the quantity; then a
    row with only the store and its name for each store that holds no stock."""
    stocked: set[str] = set()
    for done, item in enumerate(items, 1):
        if done % 1000 == 0:
            progress(done)
        yield {
            "sku": item.sku,
            "name": item.name,
            "price": item.price,
            "unit": item.unit,
            "category": item.category,
            "reorder_level": item.reorder_level,
            "store": item.store,
            "store_name": store_names.get(item.store) if item.store else None,
            "quantity": item.quantity if item.store else None,
        }
        if item.store:
            stocked.add(item.store)
    for code, name in store_names.items():
        if code not in stocked and code != "main":  # main is in every inventory
            yield dict.fromkeys(EXPORT_COLUMNS) | {"store": code, "store_name": name}


def write_rows(records: Iterable[dict[str, Any]], out: TextIO, fmt: FileFormat) -> int:
    """Write export rows; returns how many."""
    count = 0
    if fmt == FileFormat.csv:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(EXPORT_COLUMNS)
        for record in records:
            writer.writerow(["" if record[c] is None else str(record[c]) for c in EXPORT_COLUMNS])
            count += 1
    else:
        for record in records:
            plain = {
                c: str(v) if isinstance(v, Decimal) else v
                for c, v in record.items()
                if v is not None
            }
            out.write(json.dumps(plain, ensure_ascii=False) + "\n")
            count += 1
    return count
