"""The CLI: the grammar of DESIGN.md, stdout for data, `Error: ...` on stderr, exit codes.

Each error test asserts the exit code and the exact message together, and that the data
file is byte-for-byte unchanged.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import Result

CliCall = Callable[..., Result]


@pytest.fixture
def shop(cli: CliCall) -> CliCall:
    """An inventory with two stores and three products."""
    assert cli("init").exit_code == 0
    assert cli("store", "add", "north", "--name", "North branch").exit_code == 0
    for args in (
        (
            "Blue mug",
            "--price",
            "4.50",
            "--qty",
            "12",
            "--sku",
            "MUG-1",
            "--category",
            "Kitchen",
            "--reorder-level",
            "5",
        ),
        (
            "Hammer",
            "--price",
            "12",
            "--qty",
            "3",
            "--sku",
            "HAM-1",
            "--store",
            "north",
            "--category",
            "tools",
            "--reorder-level",
            "4",
        ),
        ("Tea towel", "--price", "3.20", "--sku", "TT-1", "--unit", "pack"),
    ):
        result = cli("add", *args)
        assert result.exit_code == 0, result.stderr
    return cli


def one_error(result: Result, code: int, message: str) -> None:
    """Exactly one `Error: ...` line on stderr, this exit code, nothing on stdout."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert result.stderr == f"Error: {message}\n"
    assert result.stdout == ""


def listing(cli: CliCall, *args: str) -> list[dict[str, object]]:
    result = cli("list", "--format", "json", *args)
    assert result.exit_code == 0, result.stderr
    rows: list[dict[str, object]] = json.loads(result.stdout)
    return rows


# -- init and add -------------------------------------------------------------------


def test_init_creates_the_file_once(cli: CliCall, inventory: Path) -> None:
    first = cli("init")
    assert first.exit_code == 0
    assert first.stdout == f"Created {inventory}\n"
    before = inventory.read_bytes()
    again = cli("init")
    assert again.exit_code == 0
    assert again.stdout == f"{inventory} already exists; nothing changed\n"
    assert inventory.read_bytes() == before


def test_commands_before_init_say_how_to_start(cli: CliCall, inventory: Path) -> None:
    one_error(cli("list"), 78, f"no inventory at {inventory}; run 'inv init' to create one")
    assert not inventory.exists()


def test_add_prints_the_new_sku_alone_with_quiet(cli: CliCall) -> None:
    cli("init")
    result = cli("add", "Blue mug", "--price", "4.50", "--qty", "12", "--quiet")
    assert result.exit_code == 0
    assert result.stdout == "P000001\n"
    result = cli("-q", "add", "Red mug", "--price", "4.50")
    assert result.stdout == "P000002\n"
    result = cli("add", "Green mug", "--price", "4")
    assert result.stdout == "Added P000003 (Green mug) at 4.00: 0 each at main\n"


def test_add_stocks_at_the_store_given(shop: CliCall) -> None:
    rows = listing(shop, "--search", "hammer")
    assert rows == [
        {
            "sku": "HAM-1",
            "name": "Hammer",
            "price": "12.00",
            "unit": "each",
            "category": "tools",
            "reorder_level": 4,
            "store": "north",
            "quantity": 3,
            "value": "36.00",
        }
    ]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("Mug", "--price", "abc"), 1, "price: 'abc' is not a price"),
        (("Mug", "--price", "4.999"), 1, "price: 4.999 has more than 2 decimal places"),
        (("Mug", "--price", "-1"), 1, "price: -1 is negative"),
        (("Mug", "--price", "1", "--qty", "-3"), 1, "quantity: -3 is negative"),
        (("Mug", "--price", "1", "--store", "south"), 1, "no store 'south'"),
        (
            ("Mug", "--price", "1", "--store", "No Way!"),
            1,
            "store: 'No Way!' is not a store code (lower-case letters, digits, '-' and '_', "
            "at most 64)",
        ),
        (("Mug", "--price", "1", "--sku", "mug-1"), 1, "SKU 'mug-1' already exists (as 'MUG-1')"),
        (("  ", "--price", "1"), 1, "name: must not be empty"),
    ],
)
def test_add_refuses_bad_input(
    shop: CliCall, inventory: Path, args: tuple[str, ...], code: int, message: str
) -> None:
    before = inventory.read_bytes()
    one_error(shop("add", *args), code, message)
    assert inventory.read_bytes() == before


def test_usage_errors_exit_2_without_traceback(shop: CliCall, inventory: Path) -> None:
    before = inventory.read_bytes()
    result = shop("add", "Mug")  # --price missing
    assert result.exit_code == 2
    assert "--price" in result.stderr
    assert "Traceback" not in result.stderr
    result = shop("update", "MUG-1", "--change", "1", "--set", "3")
    assert result.exit_code == 2
    assert "give exactly one of --change N or --set N" in result.stderr
    result = shop("update", "MUG-1", "--change", "lots")
    assert result.exit_code == 2
    assert inventory.read_bytes() == before


# -- update ---------------------------------------------------------------------------


def test_update_change_and_set(shop: CliCall) -> None:
    result = shop("update", "MUG-1", "--change", "-3", "--reason", "sale")
    assert (result.exit_code, result.stdout) == (0, "MUG-1 at main: 12 -> 9 (-3)\n")
    result = shop("update", "mug-1", "--set", "20", "--reason", "count")
    assert (result.exit_code, result.stdout) == (0, "MUG-1 at main: 9 -> 20 (+11)\n")
    result = shop("update", "HAM-1", "--change", "2", "--store", "north", "-q")
    assert (result.exit_code, result.stdout) == (0, "")
    assert [r["quantity"] for r in listing(shop, "--search", "ham")] == [5]


def test_update_refusals_change_nothing(shop: CliCall, inventory: Path) -> None:
    before = inventory.read_bytes()
    one_error(
        shop("update", "MUG-1", "--change", "-13"),
        1,
        "not enough MUG-1 at main: 12 on hand, 13 asked for",
    )
    one_error(shop("update", "NOPE", "--change", "1"), 1, "no product with SKU 'NOPE'")
    one_error(shop("update", "MUG-1", "--change", "1", "--store", "south"), 1, "no store 'south'")
    one_error(shop("update", "MUG-1", "--set", "-1"), 1, "quantity: -1 is negative")
    one_error(
        shop("update", "MUG-1", "--set", "5", "--expect", "11"),
        1,
        "MUG-1 at main is 12, not the expected 11; nothing changed",
    )
    assert inventory.read_bytes() == before


def test_update_with_expect_is_compare_and_set(shop: CliCall) -> None:
    assert shop("update", "MUG-1", "--change", "-2", "--expect", "12").exit_code == 0
    assert shop("update", "MUG-1", "--change", "-2", "--expect", "12").exit_code == 1
    assert listing(shop, "--search", "MUG")[0]["quantity"] == 10


def test_idempotency_key_makes_a_retry_safe(shop: CliCall) -> None:
    first = shop("update", "MUG-1", "--change", "-2", "--idempotency-key", "pos-17")
    again = shop("update", "MUG-1", "--change", "-2", "--idempotency-key", "pos-17")
    assert first.exit_code == again.exit_code == 0
    assert first.stdout == "MUG-1 at main: 12 -> 10 (-2)\n"
    assert again.stdout == (
        "MUG-1 at main: 12 -> 10 (-2) (already applied with this idempotency key; "
        "nothing changed now)\n"
    )
    assert listing(shop, "--search", "MUG")[0]["quantity"] == 10
    entries = json.loads(shop("history", "MUG-1", "--format", "json").stdout)
    assert [e["event_id"] for e in entries].count("pos-17") == 1
    one_error(
        shop("update", "MUG-1", "--change", "-5", "--idempotency-key", "pos-17"),
        1,
        "idempotency key 'pos-17' was already used for a different request; nothing changed",
    )


# -- edit, remove, transfer -------------------------------------------------------------


def test_edit(shop: CliCall) -> None:
    result = shop("edit", "MUG-1", "--price", "4.75", "--category", "")
    assert result.exit_code == 0
    assert result.stdout == "Updated MUG-1: price 4.50 -> 4.75; category Kitchen -> none\n"
    row = listing(shop, "--search", "MUG")[0]
    assert (row["price"], row["category"]) == ("4.75", None)
    assert shop("edit", "MUG-1", "--price", "4.75").stdout == "MUG-1: no change\n"
    assert shop("edit", "MUG-1").exit_code == 2
    one_error(
        shop("edit", "MUG-1", "--price", "1.234"), 1, "price: 1.234 has more than 2 decimal places"
    )


def test_remove_refuses_stock_on_hand_unless_forced(shop: CliCall, inventory: Path) -> None:
    before = inventory.read_bytes()
    one_error(
        shop("remove", "MUG-1"),
        1,
        "MUG-1 still has stock on hand (12 at main); use --force to write it off",
    )
    assert inventory.read_bytes() == before
    result = shop("remove", "TT-1")
    assert (result.exit_code, result.stdout) == (0, "Removed TT-1 from the catalog\n")
    result = shop("remove", "MUG-1", "--store", "main", "--force")
    assert (result.exit_code, result.stdout) == (0, "Removed MUG-1 from main (12 written off)\n")
    rows = listing(shop)
    assert [(r["sku"], r["store"], r["quantity"]) for r in rows] == [
        ("HAM-1", "north", 3),
        ("MUG-1", None, 0),
    ]


def test_transfer(shop: CliCall, inventory: Path) -> None:
    result = shop("transfer", "MUG-1", "--from", "main", "--to", "north", "--qty", "5")
    assert result.exit_code == 0
    assert result.stdout == "Moved 5 MUG-1 from main to north (main: 7, north: 5)\n"
    before = inventory.read_bytes()
    one_error(
        shop("transfer", "MUG-1", "--from", "main", "--to", "north", "--qty", "8"),
        1,
        "not enough MUG-1 at main: 7 on hand, 8 asked for",
    )
    one_error(
        shop("transfer", "MUG-1", "--from", "main", "--to", "main", "--qty", "1"),
        1,
        "cannot transfer from main to itself",
    )
    one_error(
        shop("transfer", "MUG-1", "--from", "main", "--to", "south", "--qty", "1"),
        1,
        "no store 'south'",
    )
    one_error(
        shop("transfer", "MUG-1", "--from", "main", "--to", "north", "--qty", "0"),
        1,
        "qty: 0 is less than 1",
    )
    assert inventory.read_bytes() == before


# -- reads ----------------------------------------------------------------------------


def test_list_formats(shop: CliCall) -> None:
    rows = listing(shop)
    assert [(r["sku"], r["store"], r["quantity"]) for r in rows] == [
        ("HAM-1", "north", 3),
        ("MUG-1", "main", 12),
        ("TT-1", "main", 0),
    ]
    assert all(isinstance(r["price"], str) for r in rows)
    result = shop("list", "--format", "csv")
    parsed = list(csv.DictReader(io.StringIO(result.stdout)))
    assert parsed[1] == {
        "sku": "MUG-1",
        "name": "Blue mug",
        "price": "4.50",
        "unit": "each",
        "category": "Kitchen",
        "reorder_level": "5",
        "store": "main",
        "quantity": "12",
        "value": "54.00",
    }
    table = shop("list")
    assert table.exit_code == 0
    assert "Blue mug" in table.stdout and "54.00" in table.stdout


def test_list_filters_and_sorting(shop: CliCall) -> None:
    assert [r["sku"] for r in listing(shop, "--store", "north")] == ["HAM-1"]
    assert [r["sku"] for r in listing(shop, "--category", "kitchen")] == ["MUG-1"]
    assert [r["sku"] for r in listing(shop, "--search", "TOWEL")] == ["TT-1"]
    assert [r["sku"] for r in listing(shop, "--low-stock")] == ["HAM-1"]
    assert [r["sku"] for r in listing(shop, "--sort", "value", "--desc")] == [
        "MUG-1",
        "HAM-1",
        "TT-1",
    ]
    assert [r["sku"] for r in listing(shop, "--sort", "quantity")] == ["TT-1", "HAM-1", "MUG-1"]
    assert [r["sku"] for r in listing(shop, "--sort", "name", "--limit", "1", "--offset", "1")] == [
        "HAM-1"
    ]
    one_error(shop("list", "--store", "south"), 1, "no store 'south'")
    assert shop("list", "--sort", "price").exit_code == 2


def test_show(shop: CliCall) -> None:
    shop("transfer", "MUG-1", "--from", "main", "--to", "north", "--qty", "2")
    result = shop("show", "mug-1", "--format", "json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {
        "sku": "MUG-1",
        "name": "Blue mug",
        "price": "4.50",
        "unit": "each",
        "category": "Kitchen",
        "reorder_level": 5,
        "stock": {"main": 10, "north": 2},
    }
    table = shop("show", "MUG-1")
    assert "main: 10, north: 2" in table.stdout
    one_error(shop("show", "NOPE"), 1, "no product with SKU 'NOPE'")


def test_history(shop: CliCall) -> None:
    shop("update", "MUG-1", "--change", "-1", "--reason", "sale")
    shop("update", "HAM-1", "--change", "1", "--store", "north")
    entries = json.loads(shop("history", "MUG-1", "--format", "json").stdout)
    assert [(e["action"], e["delta"], e["quantity_after"], e["reason"]) for e in entries] == [
        ("stock.adjust", -1, 11, "sale"),
        ("product.create", 12, 12, None),
    ]
    fields = {
        "id",
        "at",
        "actor",
        "source",
        "event_id",
        "store",
        "sku",
        "action",
        "delta",
        "quantity_after",
        "reason",
    }
    assert set(entries[0]) == fields
    assert entries[0]["at"].endswith("Z") and entries[0]["source"] == "cli"
    north = json.loads(shop("history", "--store", "north", "--format", "json").stdout)
    assert {e["store"] for e in north} == {"north"}
    assert len(json.loads(shop("history", "--limit", "2", "--format", "json").stdout)) == 2
    future = json.loads(shop("history", "--since", "2999-01-01", "--format", "json").stdout)
    assert future == []
    recent = json.loads(shop("history", "--since", "1h", "--format", "json").stdout)
    assert len(recent) == len(json.loads(shop("history", "--format", "json").stdout))
    one_error(
        shop("history", "--since", "yesterday"),
        1,
        "since: 'yesterday' is not an ISO date or time (2026-11-01, 2026-11-01T09:30Z) "
        "or an age (90s, 15m, 24h, 7d, 2w, 18mo, 7y)",
    )


# -- stores ---------------------------------------------------------------------------


def test_stores(shop: CliCall, inventory: Path) -> None:
    stores = json.loads(shop("store", "list", "--format", "json").stdout)
    assert stores == [
        {"code": "main", "name": "Main store"},
        {"code": "north", "name": "North branch"},
    ]
    one_error(shop("store", "add", "north"), 1, "store 'north' already exists")
    one_error(shop("store", "remove", "main"), 1, "store 'main' cannot be removed")
    one_error(
        shop("store", "remove", "north"),
        1,
        "store 'north' still holds 3 units of stock; move it away or use --force to write it off",
    )
    assert shop("store", "add", "South", "-q").stdout == ""
    assert shop("store", "remove", "south").stdout == "Removed store south\n"
    assert shop("store", "remove", "north", "--force").exit_code == 0
    assert [r["sku"] for r in listing(shop, "--search", "HAM")] == ["HAM-1"]
    assert listing(shop, "--search", "HAM")[0]["store"] is None


# -- reports --------------------------------------------------------------------------


def test_report_value(shop: CliCall) -> None:
    rows = json.loads(shop("report", "value", "--format", "json").stdout)
    assert rows == [
        {"store": "main", "products": 2, "units": 12, "value": "54.00"},
        {"store": "north", "products": 1, "units": 3, "value": "36.00"},
    ]
    table = shop("report", "value")
    assert "90.00" in table.stdout  # the total line


def test_report_low_stock_exit_code(shop: CliCall) -> None:
    result = shop("report", "low-stock", "--format", "json", "--exit-code")
    assert result.exit_code == 1
    assert [r["sku"] for r in json.loads(result.stdout)] == ["HAM-1"]
    assert result.stderr == ""
    shop("update", "HAM-1", "--store", "north", "--set", "10")
    result = shop("report", "low-stock", "--exit-code")
    assert result.exit_code == 0
    assert "nothing is low" in result.stdout


def test_report_movements(shop: CliCall) -> None:
    shop("update", "MUG-1", "--change", "-3")
    shop("update", "MUG-1", "--change", "5")
    rows = json.loads(shop("report", "movements", "--store", "main", "--format", "json").stdout)
    mug = next(r for r in rows if r["sku"] == "MUG-1")
    assert mug == {
        "store": "main",
        "sku": "MUG-1",
        "movements": 3,
        "units_in": 17,
        "units_out": 3,
        "net": 14,
    }
    assert (
        json.loads(shop("report", "movements", "--since", "2999-01-01", "--format", "json").stdout)
        == []
    )


# -- import and export ------------------------------------------------------------------


def test_export_import_round_trip(shop: CliCall, inventory: Path, tmp_path: Path) -> None:
    shop("add", "Nowhere", "--price", "1.00", "--sku", "NW-1")
    shop("remove", "NW-1", "--store", "main")
    exported = shop("export")
    assert exported.exit_code == 0
    lines = exported.stdout.splitlines()
    assert lines[0] == "sku,name,price,unit,category,reorder_level,store,store_name,quantity"
    assert "NW-1,Nowhere,1.00,each,,0,,," in lines
    (tmp_path / "export.csv").write_text(exported.stdout)
    jsonl = shop("export", "--format", "jsonl", "-o", str(tmp_path / "export.jsonl"))
    assert jsonl.exit_code == 0 and jsonl.stdout == ""

    for name in ("export.csv", "export.jsonl"):
        other = tmp_path / f"other-{name}.json"
        base = ["--file", str(other)]
        assert shop(*base, "init").exit_code == 0
        result = shop(*base, "import", str(tmp_path / name))
        assert result.exit_code == 0, result.stderr
        assert shop(*base, "export").stdout == exported.stdout
        stores = json.loads(shop(*base, "store", "list", "--format", "json").stdout)
        assert {"code": "north", "name": "North branch"} in stores


def test_import_reports_every_bad_row_and_writes_nothing(shop: CliCall, inventory: Path) -> None:
    before = inventory.read_bytes()
    data = (
        "sku,name,price,quantity,change\r\n"
        "NEW-1,Thing,4.999,3,\r\n"
        "NEW-2,,1.00,2,\r\n"
        "MUG-1,,,,-100\r\n"
        "MUG-1,,,,-1\r\n"
        "NEW-3,Other,2.00,-4,\r\n"
    )
    result = shop("import", "-", input="\ufeff" + data)
    assert result.exit_code == 65
    assert result.stderr.splitlines() == [
        "Error: stdin: row 2, column price: 4.999 has more than 2 decimal places",
        "Error: stdin: row 3, column name: new SKU 'NEW-2' needs a name",
        "Error: stdin: row 4, column change: not enough MUG-1 at main: 12 on hand, 100 asked for",
        "Error: stdin: row 6, column quantity: -4 is negative",
        "Error: stdin: 4 rows bad; nothing was written",
    ]
    assert result.stdout == ""
    assert inventory.read_bytes() == before


def test_import_skip_rows_applies_the_good_ones(shop: CliCall) -> None:
    data = "sku,change,reason\nMUG-1,-2,sale\nNOPE,1,\nMUG-1,-1,sale\n"
    result = shop("import", "-", "--on-error", "skip-rows", input=data)
    assert result.exit_code == 65
    assert result.stderr.splitlines() == [
        "Error: stdin: row 3, column sku: unknown SKU 'NOPE' (a new SKU needs a name and a price)",
        "Error: stdin: 1 row bad, skipped",
    ]
    assert (
        result.stdout == "stdin: 2 rows applied, 0 unchanged, 0 already applied; 2 stock.adjust\n"
    )
    assert listing(shop, "--search", "MUG")[0]["quantity"] == 9


def test_import_dry_run_writes_nothing(shop: CliCall, inventory: Path) -> None:
    before = inventory.read_bytes()
    result = shop("import", "-", "--dry-run", input="sku,change\nMUG-1,-2\n")
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        "stock.adjust MUG-1 at main -2 -> 10",
        "stdin: 1 row would apply, 0 unchanged, 0 already applied; 1 stock.adjust",
    ]
    assert inventory.read_bytes() == before


def test_import_idempotency_keys_in_rows(shop: CliCall) -> None:
    data = "sku,change,idempotency_key\nMUG-1,-1,k1\nMUG-1,-1,k2\n"
    assert shop("import", "-", input=data).exit_code == 0
    again = shop("import", "-", input=data)
    assert again.exit_code == 0
    assert again.stdout == "stdin: 0 rows applied, 0 unchanged, 2 already applied; no changes\n"
    assert listing(shop, "--search", "MUG")[0]["quantity"] == 10


def test_import_jsonl_from_a_file(shop: CliCall, tmp_path: Path) -> None:
    path = tmp_path / "moves.jsonl"
    path.write_text(
        '{"sku": "MUG-1", "change": -2, "reason": "sale"}\n'
        "\n"
        '{"sku": "NEW-9", "name": "Bowl", "price": 3.5, "quantity": 4, "store": "north"}\n'
    )
    result = shop("import", str(path))
    assert result.exit_code == 0, result.stderr
    rows = {(r["sku"], r["store"]): r for r in listing(shop)}
    assert rows[("MUG-1", "main")]["quantity"] == 10
    assert rows[("NEW-9", "north")]["price"] == "3.50"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("name,price\nMug,1\n", "stdin: row 1, column sku: missing required column"),
        (
            "sku,quantiy\nMUG-1,3\n",
            "stdin: row 1, column quantiy: unknown column (did you mean 'quantity'?)",
        ),
        ("", "stdin: row 1: the file is empty (a header row is required)"),
    ],
)
def test_import_bad_files(shop: CliCall, inventory: Path, data: str, message: str) -> None:
    before = inventory.read_bytes()
    result = shop("import", "-", input=data)
    assert result.exit_code == 65
    assert result.stderr.splitlines() == [
        f"Error: {message}",
        "Error: stdin: 1 row bad; nothing was written",
    ]
    assert inventory.read_bytes() == before


def test_import_missing_file(shop: CliCall, tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    one_error(shop("import", str(missing)), 66, f"{missing}: no such file")


def test_import_non_utf8(shop: CliCall, inventory: Path) -> None:
    before = inventory.read_bytes()
    result = shop("import", "-", input=b"sku,name,price\nX,Caf\xe9,1\n")
    assert result.exit_code == 65
    assert result.stderr.startswith("Error: stdin: row 2: not UTF-8 text (invalid continuation")
    assert inventory.read_bytes() == before


def test_audit_verify_finds_a_stock_level_edited_behind_its_back(
    shop: CliCall, inventory: Path
) -> None:
    shop("update", "MUG-1", "--change", "-2")
    ok = shop("audit", "verify")
    assert (ok.exit_code, ok.stdout) == (0, "3 stock rows agree with the history\n")
    doc = json.loads(inventory.read_text())
    doc["products"]["MUG-1"]["stock"]["main"] = 99
    inventory.write_text(json.dumps(doc))
    bad = shop("audit", "verify")
    assert bad.exit_code == 1
    assert bad.stderr.splitlines() == [
        "Error: MUG-1 at main: 99 on hand, history says 10",
        "Error: 1 of 3 stock rows disagree with the history",
    ]
