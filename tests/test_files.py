"""Import and export file parsing: CSV and JSON Lines, rows numbered as an editor counts."""

from __future__ import annotations

import io
import json
from decimal import Decimal

import pytest

from backends import BatchRow, Item, RowProblem
from inventory_cli.files import FileFormat, export_records, read_rows, write_rows

CSV = FileFormat.csv
JSONL = FileFormat.jsonl


def read(data: bytes, fmt: FileFormat = CSV) -> tuple[list[BatchRow], list[RowProblem]]:
    return read_rows(io.BytesIO(data), fmt)


def where(problems: list[RowProblem]) -> list[tuple[int, str | None]]:
    return [(p.row, p.column) for p in problems]


# -- CSV -------------------------------------------------------------------------------


def test_csv_with_bom_and_crlf() -> None:
    data = b"\xef\xbb\xbfsku,name,price,quantity\r\nMUG,Blue mug,4.50,12\r\nTEA,Tea,2,0\r\n"
    rows, problems = read(data)
    assert problems == []
    assert rows == [
        BatchRow(row=2, sku="MUG", name="Blue mug", price=Decimal("4.50"), quantity=12),
        BatchRow(row=3, sku="TEA", name="Tea", price=Decimal("2.00"), quantity=0),
    ]
    assert rows[0].name == "Blue mug"  # no stray \r left on the last column's neighbour
    assert str(rows[1].price) == "2.00"


def test_csv_header_case_and_whitespace_are_tolerated() -> None:
    rows, problems = read(b" SKU ,\tName , PRICE ,Reorder_Level\nmug,Mug,1.5,3\n")
    assert problems == []
    assert rows == [BatchRow(row=2, sku="mug", name="Mug", price=Decimal("1.50"), reorder_level=3)]


def test_csv_rows_after_a_multiline_field_count_physical_lines() -> None:
    data = (
        b"sku,name,price,reason\r\n"  # line 1
        b'A,Mug,1.00,"first\r\n'  # line 2
        b'second"\r\n'  # line 3
        b"B,Tea,2.00,\r\n"  # line 4
        b'C,"Jam, ""best""",3.00,restock\r\n'  # line 5
    )
    rows, problems = read(data)
    # A newline inside a value is refused (a control character), on the row where it starts.
    assert where(problems) == [(2, "reason")]
    assert [(r.row, r.sku) for r in rows] == [(4, "B"), (5, "C")]
    assert rows[1].name == 'Jam, "best"'


def test_csv_multiline_field_that_is_accepted_still_numbers_later_rows() -> None:
    rows, problems = read(b'sku,name\n"A",Mug\n"B\n",Tea\nC,Jam\n')
    # "B\n" is trimmed to "B" or refused; either way C is on physical line 5.
    assert [r.row for r in rows if r.sku == "C"] == [5]
    assert all(p.row == 3 for p in problems)


def test_csv_blank_lines_are_skipped_but_counted() -> None:
    data = b"sku,change\n\nA,1\n\r\n,\n  ,  \nB,-2\n"
    rows, problems = read(data)
    assert problems == []
    assert [(r.row, r.sku, r.change) for r in rows] == [(3, "A", 1), (7, "B", -2)]


def test_csv_unknown_column_suggests_the_near_one() -> None:
    rows, problems = read(b"sku,name,prices\nA,Mug,1.00\n")
    assert rows == []
    assert where(problems) == [(1, "prices")]
    assert "did you mean 'price'" in problems[0].reason.lower()


def test_csv_unknown_column_with_nothing_near() -> None:
    rows, problems = read(b"sku,zzzzzz\nA,1\n")
    assert rows == []
    assert where(problems) == [(1, "zzzzzz")]
    assert "unknown column" in problems[0].reason


def test_csv_duplicate_column() -> None:
    rows, problems = read(b"sku,name,Name\nA,Mug,Cup\n")
    assert rows == []
    assert where(problems) == [(1, "name")]
    assert "twice" in problems[0].reason


def test_csv_missing_sku_column() -> None:
    rows, problems = read(b"name,price\nMug,1.00\n")
    assert rows == []
    assert where(problems) == [(1, "sku")]
    assert "missing" in problems[0].reason


@pytest.mark.parametrize("data", [b"", b"\xef\xbb\xbf"], ids=["empty", "bom-only"])
def test_csv_empty_file(data: bytes) -> None:
    rows, problems = read(data)
    assert rows == []
    assert len(problems) == 1
    assert problems[0].row == 1
    assert "empty" in problems[0].reason and "header" in problems[0].reason


def test_csv_only_blank_lines_is_one_problem_on_row_1() -> None:
    rows, problems = read(b"\n\r\n\n")
    assert rows == []
    assert len(problems) == 1
    assert problems[0].row == 1


def test_csv_header_only_is_no_rows_and_no_problem() -> None:
    assert read(b"sku,name,price\r\n") == ([], [])


def test_csv_more_values_than_the_header() -> None:
    rows, problems = read(b"sku,name\nA,Mug\nB,Tea,extra\nC,Jam\n")
    assert where(problems) == [(3, None)]
    assert "3 values" in problems[0].reason and "2" in problems[0].reason
    assert [(r.row, r.sku) for r in rows] == [(2, "A"), (4, "C")]


def test_csv_fewer_values_than_the_header_leaves_them_empty() -> None:
    rows, problems = read(b"sku,name,price\nA,Mug\n")
    assert problems == []
    assert rows == [BatchRow(row=2, sku="A", name="Mug")]


@pytest.mark.parametrize("fmt", [CSV, JSONL])
def test_non_utf8_bytes_are_a_problem_not_an_exception(fmt: FileFormat) -> None:
    data = b"sku,name\nA,Mug\nB,Caf\xe9\n" if fmt == CSV else b'{"sku": "A"}\n{"sku": "Caf\xe9"}\n'
    rows, problems = read(data, fmt)
    assert rows == []
    assert len(problems) == 1
    assert "UTF-8" in problems[0].reason


BIG_BODY = b"sku,name\n" + b"".join(b"S%05d,Mug\n" % i for i in range(2000))


@pytest.mark.parametrize(
    ("data", "line"),
    [(b"sku,name\nA,Mug\nB,Caf\xe9\n", 3), (BIG_BODY + b"B,Caf\xe9\n", 2002)],
    ids=["small", "past-the-first-8k"],
)
def test_non_utf8_problem_names_the_line_with_the_bad_byte(data: bytes, line: int) -> None:
    """Rows are numbered as an editor counts lines; there is no row 0."""
    rows, problems = read(data)
    assert rows == []
    assert [p.row for p in problems] == [line], problems


def test_non_utf8_problem_names_the_files_byte_offset() -> None:
    """If the reason names a byte offset, it is the offset in the file, not in a buffer."""
    data = BIG_BODY + b"B,Caf\xe9\n"
    offset = data.index(b"\xe9")
    rows, problems = read(data)
    assert rows == []
    assert len(problems) == 1
    assert f"byte {offset}" in problems[0].reason, problems[0].reason


def test_csv_every_problem_is_reported_with_row_and_column() -> None:
    data = (
        b"sku,name,price,quantity,reorder_level\n"  # 1
        b"A,Mug,4.50,3,1\n"  # 2 good
        b"B,Tea,abc,1,0\n"  # 3 price
        b"C,Jam,1.00,-1,0\n"  # 4 quantity
        b",Nameless,1.00,1,0\n"  # 5 sku
        b"D,Pen,1.001,x,0\n"  # 6 price and quantity
        b"E,Cup,1.00,1.5,-2\n"  # 7 quantity and reorder_level
        b"F,Bag,1.00,2,0\n"  # 8 good
    )
    rows, problems = read(data)
    assert [r.sku for r in rows] == ["A", "F"]
    assert sorted(where(problems), key=str) == sorted(
        [
            (3, "price"),
            (4, "quantity"),
            (5, "sku"),
            (6, "price"),
            (6, "quantity"),
            (7, "quantity"),
            (7, "reorder_level"),
        ],
        key=str,
    )
    for problem in problems:
        # The problem names the column already; the reason does not repeat it.
        assert problem.reason and not problem.reason.startswith(f"{problem.column}:")


def test_quantity_and_change_both_given() -> None:
    rows, problems = read(b"sku,quantity,change\nA,1,2\nB,3,\nC,,-1\n")
    assert len(problems) == 1
    assert problems[0].row == 2
    assert problems[0].column in ("quantity", "change")
    assert "quantity" in problems[0].reason and "change" in problems[0].reason
    assert [(r.sku, r.quantity, r.change) for r in rows] == [("B", 3, None), ("C", None, -1)]


# -- JSON Lines ------------------------------------------------------------------------


def test_jsonl_numbers_become_decimals_never_floats() -> None:
    data = (
        b'{"sku": "MUG", "name": "Mug", "price": 4.5, "quantity": 3, "reorder_level": 2}\n'
        b'{"sku": "TEA", "price": "0.1", "change": -2}\n'
        b'{"sku": "PEN", "price": 12345678.99}\n'
    )
    rows, problems = read(data, JSONL)
    assert problems == []
    assert [r.price for r in rows] == [Decimal("4.50"), Decimal("0.10"), Decimal("12345678.99")]
    assert all(isinstance(r.price, Decimal) for r in rows)
    assert str(rows[0].price) == "4.50"
    assert (rows[0].quantity, rows[0].reorder_level, rows[1].change) == (3, 2, -2)


@pytest.mark.parametrize("value", ["1.5", '"1.5"', "1e3", "2.0"])
def test_jsonl_float_looking_quantity_is_a_problem(value: str) -> None:
    data = f'{{"sku": "A", "quantity": 1}}\n{{"sku": "B", "quantity": {value}}}\n'.encode()
    rows, problems = read(data, JSONL)
    assert where(problems) == [(2, "quantity")]
    assert [r.sku for r in rows] == ["A"]


def test_jsonl_price_with_three_places_is_a_problem() -> None:
    rows, problems = read(b'{"sku": "A", "name": "Mug", "price": 4.999}\n', JSONL)
    assert rows == []
    assert where(problems) == [(1, "price")]


def test_jsonl_non_object_lines() -> None:
    data = b'[1, 2]\n"text"\n42\nnull\n{"sku": "A"}\n'
    rows, problems = read(data, JSONL)
    assert where(problems) == [(1, None), (2, None), (3, None), (4, None)]
    assert all("object" in p.reason for p in problems)
    assert [(r.row, r.sku) for r in rows] == [(5, "A")]


def test_jsonl_invalid_json_line_names_the_row() -> None:
    data = b'{"sku": "A"}\n{"sku": "B",\n{"sku": "C"}\n'
    rows, problems = read(data, JSONL)
    assert where(problems) == [(2, None)]
    assert "JSON" in problems[0].reason
    assert "row 2" in str(problems[0])
    assert [(r.row, r.sku) for r in rows] == [(1, "A"), (3, "C")]


@pytest.mark.parametrize("column", ["quantity", "price", "change", "name", "sku"])
def test_jsonl_booleans_are_refused(column: str) -> None:
    record = {"sku": "A", "name": "Mug", "price": "1.00", column: True}
    data = b'{"sku": "OK"}\n' + json.dumps(record).encode() + b"\n"
    rows, problems = read(data, JSONL)
    assert (2, column) in where(problems)
    assert all(p.row == 2 for p in problems)
    assert [r.sku for r in rows] == ["OK"]


def test_jsonl_lists_and_objects_as_values_are_refused() -> None:
    data = b'{"sku": "A", "name": ["Mug"], "category": {"x": 1}}\n'
    rows, problems = read(data, JSONL)
    assert rows == []
    assert sorted(where(problems), key=str) == [(1, "category"), (1, "name")]


def test_jsonl_unknown_key_suggests_the_near_one() -> None:
    rows, problems = read(b'{"sku": "A"}\n{"sku": "B", "quantiy": 3}\n', JSONL)
    assert where(problems) == [(2, "quantiy")]
    assert "did you mean 'quantity'" in problems[0].reason.lower()
    assert [r.sku for r in rows] == ["A"]


def test_jsonl_blank_lines_bom_and_crlf_keep_line_numbers() -> None:
    data = b'\xef\xbb\xbf{"sku": "A"}\r\n\r\n{"sku": "B", "change": -1}\r\n  \r\n{"sku": "C"}\r\n'
    rows, problems = read(data, JSONL)
    assert problems == []
    assert [(r.row, r.sku) for r in rows] == [(1, "A"), (3, "B"), (5, "C")]


def test_jsonl_nulls_are_absent_and_missing_sku_is_a_problem() -> None:
    data = b'{"sku": "A", "category": null, "quantity": null}\n{"name": "No SKU"}\n'
    rows, problems = read(data, JSONL)
    assert rows == [BatchRow(row=1, sku="A")]
    assert where(problems) == [(2, "sku")]


def test_jsonl_quantity_and_change_both_given() -> None:
    rows, problems = read(b'{"sku": "A", "quantity": 1, "change": 2}\n', JSONL)
    assert rows == []
    assert len(problems) == 1
    assert problems[0].row == 1
    assert problems[0].column in ("quantity", "change")


# -- write_rows + read_rows round trip -------------------------------------------------

ITEMS = [
    Item("MUG", "Blue mug", Decimal("4.50"), "each", "kitchen", 3, "main", 12),
    Item("MUG", "Blue mug", Decimal("4.50"), "each", "kitchen", 3, "north", 0),
    Item("cafe-1", 'Café, "crème" naïve', Decimal("0.00"), "kg", None, 0, "main", 2_000_000),
    Item("LONELY", "Stocked nowhere", Decimal("9999999999.99"), "box", "misc", 0, None, 0),
]
STORE_NAMES = {"main": "Main store", "north": "North, the big one"}


@pytest.mark.parametrize("fmt", [CSV, JSONL])
def test_write_then_read_gives_back_the_same_rows(fmt: FileFormat) -> None:
    out = io.StringIO()
    count = write_rows(export_records(ITEMS, STORE_NAMES), out, fmt)
    assert count == len(ITEMS)
    rows, problems = read(out.getvalue().encode("utf-8"), fmt)
    assert problems == []
    first = 2 if fmt == CSV else 1
    expected = [
        BatchRow(
            row=first + number,
            sku=item.sku,
            name=item.name,
            price=item.price,
            unit=item.unit,
            category=item.category,
            reorder_level=item.reorder_level,
            store=item.store,
            store_name=STORE_NAMES[item.store] if item.store else None,
            quantity=item.quantity if item.store else None,
        )
        for number, item in enumerate(ITEMS)
    ]
    assert rows == expected


def test_jsonl_export_writes_prices_as_text() -> None:
    out = io.StringIO()
    write_rows(export_records(ITEMS[:1], STORE_NAMES), out, JSONL)
    first, *rest = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["price"] == "4.50"
    assert first["quantity"] == 12
    # A store holding none of the exported stock gets a row of its own.
    assert rest == [{"store": "north", "store_name": "North, the big one"}]
