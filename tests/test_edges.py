"""Where input comes in and output goes out: paths written through links, FIFOs and
devices; settings checked by the value grammar; hand-edited files; numbers as ASCII
digits only.  Everything here runs in process (the `cli` fixture)."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from backends.jsonfile import JsonBackend
from inventory_cli.cli import app

CliCall = Callable[..., Result]


def one_error(result: Result, code: int, *needles: str) -> None:
    """One `Error: ...` line on stderr naming each needle, this exit code."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture
def shop(cli: CliCall) -> CliCall:
    assert cli("init").exit_code == 0
    assert cli("add", "Mug", "--price", "4.50", "--sku", "MUG", "--qty", "3").exit_code == 0
    return cli


# -- writes go through paths, not to them ---------------------------------------------------


def test_export_onto_a_symlink_writes_the_file_it_points_at(shop: CliCall, tmp_path: Path) -> None:
    real = tmp_path / "data" / "stock.csv"
    real.parent.mkdir()
    real.write_text("old\n")
    link = tmp_path / "latest.csv"
    link.symlink_to(real)
    assert shop("export", "-o", str(link), "--quiet").exit_code == 0
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_text().startswith("sku,name,price")


def test_export_to_dev_null_leaves_the_device_a_device(shop: CliCall) -> None:
    assert shop("export", "-o", "/dev/null").exit_code == 0
    assert Path("/dev/null").is_char_device()


def test_export_to_a_fifo_streams_into_it(shop: CliCall, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    result = shop("export", "-o", str(fifo), "--format", "jsonl")
    reader.join(timeout=30)
    assert result.exit_code == 0, result.stderr
    assert fifo.is_fifo()
    assert json.loads(got[0].decode().splitlines()[0])["sku"] == "MUG"


def test_export_to_a_folder_is_refused_and_the_folder_kept(shop: CliCall, tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    one_error(shop("export", "-o", str(folder)), 77, str(folder), "is a folder")
    assert folder.is_dir() and not any(folder.iterdir())


def test_export_into_a_missing_folder_is_a_configuration_error(
    shop: CliCall, tmp_path: Path
) -> None:
    one_error(shop("export", "-o", str(tmp_path / "no" / "x.csv")), 78, "does not exist")


def test_an_inventory_reached_through_a_symlink_stays_one_file(tmp_path: Path) -> None:
    real = tmp_path / "real" / "inventory.json"
    real.parent.mkdir()
    link = tmp_path / "inventory.json"
    link.symlink_to(real)
    via_link = JsonBackend(link, actor="ana")
    assert via_link.init() is True
    via_link.add_product("Mug", "1.00", sku="MUG", quantity=2)
    direct = JsonBackend(real, actor="bo")
    direct.adjust("main", "MUG", 3)
    via_link.adjust("main", "MUG", -1)
    assert link.is_symlink()
    assert direct.quantity("main", "MUG") == via_link.quantity("main", "MUG") == 4
    # One lock and one trail, beside the real file, for both paths.
    assert via_link.lock_path == direct.lock_path == real.with_name("inventory.json.lock")
    assert via_link.audit_path == real.with_name("inventory.audit.jsonl")
    assert not (tmp_path / "inventory.audit.jsonl").exists()
    assert direct.verify_audit() == (1, [])


def test_init_on_a_dangling_symlink_creates_the_file_it_points_at(tmp_path: Path) -> None:
    real = tmp_path / "real.json"
    link = tmp_path / "inventory.json"
    link.symlink_to(real)
    assert JsonBackend(link).init() is True
    assert link.is_symlink() and real.is_file()


def test_an_empty_file_setting_is_a_configuration_error(cli: CliCall) -> None:
    one_error(cli("--file", "", "list"), 78, "file")
    one_error(cli("list", env={"INV_FILE": ""}), 78, "file")


# -- settings follow the value grammar -------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "abc", "1e999", "100000"])
def test_a_lock_timeout_out_of_range_is_refused(cli: CliCall, value: str) -> None:
    one_error(cli("list", env={"INV_LOCK_TIMEOUT": value}), 78, "lock_timeout")


@pytest.mark.parametrize(
    "actor", ["ana\nbo", "ana\x1b[31m", "x" * 5000, "ana\udcff", " "], ids=repr
)
def test_an_actor_that_is_not_one_line_of_text_is_refused(cli: CliCall, actor: str) -> None:
    one_error(cli("init", env={"INV_ACTOR": actor}), 78, "actor")


def test_an_actor_is_trimmed_and_recorded(cli: CliCall) -> None:
    assert cli("init", env={"INV_ACTOR": "  ana  "}).exit_code == 0
    [entry] = json.loads(cli("history", "--format", "json").stdout)
    assert entry["actor"] == "ana"


def test_a_config_file_that_is_not_utf8_is_a_configuration_error(
    cli: CliCall, tmp_path: Path
) -> None:
    config = tmp_path / "inv.toml"
    config.write_bytes(b'backend = "j\xffson"\n')
    one_error(cli("--config", str(config), "list"), 78, str(config), "UTF-8")


def test_a_config_path_that_is_a_folder_is_refused(cli: CliCall, tmp_path: Path) -> None:
    one_error(cli("--config", str(tmp_path), "list"), 78, "is not a file")


# -- hand-edited files ------------------------------------------------------------------------


def edit_file(path: Path, change: Callable[[dict], None]) -> bytes:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))
    return path.read_bytes()


def test_two_spellings_of_one_sku_in_a_hand_edited_file_are_refused(
    shop: CliCall, inventory: Path
) -> None:
    def add_twin(doc: dict) -> None:
        doc["products"]["mug"] = dict(doc["products"]["MUG"])

    before = edit_file(inventory, add_twin)
    one_error(shop("list"), 78, "'mug' and 'MUG' are one SKU")
    one_error(shop("update", "MUG", "--change", "1"), 78)
    assert inventory.read_bytes() == before


def test_a_store_code_that_is_not_a_slug_in_a_hand_edited_file_is_refused(
    shop: CliCall, inventory: Path
) -> None:
    before = edit_file(inventory, lambda doc: doc["stores"].update({"Bad Code": "Bad"}))
    one_error(shop("store", "list"), 78, "stores.Bad Code")
    assert inventory.read_bytes() == before


@pytest.mark.parametrize(
    "raw",
    [b'{"a": ' + b"1" * 5000 + b"}", b"[" * 100_000 + b"]" * 100_000],
    ids=["5000-digit number", "nested 100000 deep"],
)
def test_a_hostile_inventory_file_is_refused_not_crashed_on(
    shop: CliCall, inventory: Path, raw: bytes
) -> None:
    inventory.write_bytes(raw)
    one_error(shop("list"), 78, "not valid JSON")
    assert inventory.read_bytes() == raw


def test_an_audit_trail_that_is_a_folder_is_a_configuration_error(
    shop: CliCall, inventory: Path
) -> None:
    trail = inventory.with_name("inventory.audit.jsonl")
    trail.unlink()
    trail.mkdir()  # root reads any file; a folder cannot be read as one
    result = shop("history")
    assert result.exit_code == 78  # the setup is wrong; an unreadable file is 77 (test_fuzz)
    assert result.stderr.startswith("Error: ") and "Traceback" not in result.stderr


# -- numbers are ASCII digits ---------------------------------------------------------------------


@pytest.mark.parametrize("value", ["1_000", "\u0663", "\uff13", "0x10", "1e3"])
def test_a_number_on_the_command_line_is_ascii_digits(shop: CliCall, value: str) -> None:
    result = shop("update", "MUG", "--change", value)
    assert result.exit_code == 2
    assert "is not a whole number" in result.stderr


@pytest.mark.parametrize("value", ["1_0", "\u0663", "1.5"])
def test_a_number_in_an_import_is_ascii_digits(shop: CliCall, value: str) -> None:
    result = shop("import", "-", input=f"sku,quantity\nMUG,{value}\n")
    assert result.exit_code == 65
    assert f"row 2, column quantity: {value!r} is not a whole number" in result.stderr


def test_a_huge_number_in_a_jsonl_import_is_a_row_problem(shop: CliCall) -> None:
    result = shop(
        "import", "-", "--format", "jsonl", input='{"sku": "MUG", "quantity": ' + "9" * 5000 + "}\n"
    )
    assert result.exit_code == 65
    assert "row 1: not valid JSON: a number has more than 40 digits" in result.stderr


def test_a_deeply_nested_jsonl_row_is_a_row_problem(shop: CliCall) -> None:
    result = shop("import", "-", "--format", "jsonl", input="[" * 100_000 + "\n")
    assert result.exit_code == 65
    assert "row 1: not valid JSON: values are nested too deeply" in result.stderr


def test_an_import_row_with_a_bad_idempotency_key_is_a_row_problem(shop: CliCall) -> None:
    result = shop("import", "-", input="sku,change,idempotency_key\nMUG,1,a\x01b\n")
    assert result.exit_code == 65
    assert "row 2, column idempotency_key: contains a control character" in result.stderr


# -- ages: one grammar ----------------------------------------------------------------------


@pytest.mark.parametrize("age", ["90s", "15m", "24h", "7d", "2w", "18mo", "7y"])
def test_every_age_works_for_since_and_for_older_than(shop: CliCall, age: str) -> None:
    assert shop("history", "--since", age).exit_code == 0
    assert shop("report", "movements", "--since", age, "--until", "0s").exit_code == 0


@pytest.mark.parametrize(
    ("since", "code"),
    [
        ("999999999d", 1),
        ("99999999999y", 1),
        ("0001-01-01", 0),
        ("9999-12-31T23:59:59", 0),
        ("0001-01-01T00:00+01:00", 1),
        ("9999-12-31T23:59-01:00", 1),
        ("\uff12\uff10\uff12\uff16-01-01", 1),  # full-width digits
    ],
)
def test_dates_at_the_edges_of_the_calendar(shop: CliCall, since: str, code: int) -> None:
    result = shop("history", "--since", since, "--format", "json")
    assert result.exit_code == code, result.stderr
    if code:
        one_error(result, code, "since:")


def test_report_movements_as_csv_always_has_a_header(shop: CliCall) -> None:
    result = shop("report", "movements", "--since", "2999-01-01", "--format", "csv")
    assert result.stdout == "store,sku,movements,units_in,units_out,net\n"


def test_a_negative_zero_price_prints_as_zero(cli: CliCall) -> None:
    cli("init")
    assert cli("add", "Free", "--price", "-0", "--sku", "F").stdout.startswith(
        "Added F (Free) at 0.00:"
    )


def test_export_then_import_keeps_stores_without_stock(shop: CliCall, tmp_path: Path) -> None:
    assert shop("store", "add", "empty", "--name", "Empty Shelf").exit_code == 0
    exported = shop("export").stdout
    assert exported.splitlines()[-1] == ",,,,,,empty,Empty Shelf,"
    other = tmp_path / "other.json"
    runner = CliRunner()
    assert runner.invoke(app, ["--file", str(other), "init"]).exit_code == 0
    imported = runner.invoke(app, ["--file", str(other), "import", "-"], input=exported)
    assert imported.exit_code == 0, imported.stderr
    stores = runner.invoke(app, ["--file", str(other), "store", "list", "--format", "json"])
    assert json.loads(stores.stdout) == [
        {"code": "empty", "name": "Empty Shelf"},
        {"code": "main", "name": "Main store"},
    ]


# -- data an earlier inv wrote stays usable ----------------------------------------------------


def test_a_key_an_earlier_inv_stored_in_nfd_is_still_the_same_key(shop: CliCall) -> None:
    key = "cafe\u0301-2026-11-29"  # decomposed, as a macOS file name gives it
    first = shop("update", "MUG", "--change", "-1", "--idempotency-key", key)
    again = shop("update", "MUG", "--change", "-1", "--idempotency-key", key)
    assert first.exit_code == again.exit_code == 0
    assert again.stdout.endswith(
        "(already applied with this idempotency key; nothing changed now)\n"
    )
    composed = shop("update", "MUG", "--change", "-1", "--idempotency-key", "café-2026-11-29")
    assert composed.stdout == "MUG at main: 2 -> 1 (-1)\n"  # keys are compared as sent


def test_a_product_an_earlier_inv_let_in_can_still_be_reached(
    shop: CliCall, inventory: Path
) -> None:
    def legacy(doc: dict) -> None:
        doc["products"]["ZW\u200b1"] = {
            "name": "Old\u0085name",
            "price": "1.00",
            "unit": "each",
            "category": None,
            "reorder_level": 0,
            "stock": {"main": 2},
        }

    edit_file(inventory, legacy)
    assert shop("update", "ZW\u200b1", "--change", "1").stdout == "ZW\u200b1 at main: 2 -> 3 (+1)\n"
    assert (
        json.loads(shop("show", "zw\u200b1", "--format", "json").stdout)["name"] == "Old\u0085name"
    )
    assert shop("remove", "ZW\u200b1", "--force").exit_code == 0
    # New ones are held to today's rules.
    one_error(shop("add", "X", "--price", "1", "--sku", "ZW\u200b1"), 1, "invisible character")


def test_an_inventory_path_that_is_a_fifo_is_refused_without_waiting(
    cli: CliCall, tmp_path: Path
) -> None:
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    one_error(cli("--file", str(fifo), "list"), 78, "not a regular file")


@pytest.mark.parametrize(
    "line",
    [
        '{"id": 1, "at": "2026-01-01T00:00:00Z", "actor": "a", "source": "cli", "event_id": "e",'
        ' "store": "main", "sku": 5, "action": "stock.set", "delta": 1, "quantity_after": 1,'
        ' "reason": null}',
        '{"id": 1, "at": "2026-01-01T00:00:00Z", "actor": "a", "source": "cli", "event_id": "e",'
        ' "store": "main", "sku": "M", "action": "stock.set", "delta": "1", "quantity_after": 1,'
        ' "reason": null}',
        '{"id": 1}',
    ],
    ids=["sku-not-text", "delta-not-a-number", "fields-missing"],
)
def test_an_audit_trail_line_of_the_wrong_shape_is_damage(
    shop: CliCall, inventory: Path, line: str
) -> None:
    trail = inventory.with_name("inventory.audit.jsonl")
    lines = trail.read_text().splitlines()
    lines[0] = line
    data = "\n".join(lines) + "\n"
    trail.write_text(data)
    edit_file(inventory, lambda doc: doc["audit"].update(bytes=len(data.encode())))
    for args in (("history", "M"), ("audit", "verify"), ("report", "movements")):
        one_error(shop(*args), 78, "not an audit entry")


def test_an_idempotency_key_that_is_not_text_in_the_file_is_damage(
    shop: CliCall, inventory: Path
) -> None:
    before = edit_file(inventory, lambda doc: doc["events"].update({"\ud800x": {"fp": "x"}}))
    assert b"\\ud800x" in before  # a lone surrogate, escaped, as JSON allows
    one_error(shop("list"), 78, "events")
    one_error(shop("update", "MUG", "--change", "1"), 78, "events")
    assert inventory.read_bytes() == before


# -- whole numbers in settings and flags ----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("INV_CACHE_TTL", "1_000"),
        ("INV_KAFKA_PARTITIONS", "5.0"),
        ("INV_WORKER_BATCH_SIZE", "\u0663"),
        ("INV_KAFKA_TOPIC", "no spaces"),
        ("INV_KAFKA_TOPIC", "x" * 300),
    ],
)
def test_settings_follow_the_number_and_name_grammar(cli: CliCall, name: str, value: str) -> None:
    one_error(cli("list", env={name: value}), 78, name[4:].lower())


def test_worker_flags_are_whole_numbers(cli: CliCall) -> None:
    result = cli("worker", "--batch-size", "1_000")
    assert result.exit_code == 2 and "is not a whole number" in result.stderr
    one_error(cli("worker", "--batch-size", "0"), 78, "worker_batch_size")
