"""Real `inv` processes: concurrency, what a shell sees, and what start-up imports."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ProcCall = Callable[..., subprocess.CompletedProcess[str]]
CliCall = Callable[..., Any]
HEAVY = ("sqlalchemy", "psycopg", "redis", "confluent_kafka", "fastapi", "alembic")

REPLAYED = " (already applied with this idempotency key; nothing changed now)"


def _spawn(inventory: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "inventory_cli", "--file", str(inventory), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_concurrent_processes_never_lose_an_update(cli: CliCall, inventory: Path) -> None:
    """Several processes each increment one item many times; the total is exact."""
    assert cli("init").exit_code == 0
    assert cli("add", "Mug", "--price", "1", "--sku", "MUG").exit_code == 0
    workers, rounds = 6, 15
    script = (
        "import sys\n"
        "from inventory_cli.cli import app\n"
        f"for i in range({rounds}):\n"
        "    try:\n"
        f"        app(['--file', {str(inventory)!r}, 'update', 'MUG', '--change', '1', '-q'])\n"
        "    except SystemExit as exc:\n"
        "        if exc.code: sys.exit(exc.code)\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
        for _ in range(workers)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    # Plus one-shot processes racing each other, as cron jobs would.
    shots = [_spawn(inventory, "update", "MUG", "--change", "1", "-q") for _ in range(8)]
    for proc in shots:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    shown = json.loads(cli("show", "MUG", "--format", "json").stdout)
    assert shown["stock"] == {"main": workers * rounds + 8}
    history = json.loads(cli("history", "MUG", "--format", "json").stdout)
    adjusts = [e for e in history if e["action"] == "stock.adjust"]
    assert len(adjusts) == workers * rounds + 8
    assert sorted(e["quantity_after"] for e in adjusts) == list(range(1, workers * rounds + 9))


@pytest.mark.slow
def test_concurrent_sales_never_oversell(cli: CliCall, inventory: Path) -> None:
    """Ten processes each try to sell 1 of 5 in stock: exactly 5 succeed."""
    assert cli("init").exit_code == 0
    assert cli("add", "Mug", "--price", "1", "--sku", "MUG", "--qty", "5").exit_code == 0
    procs = [_spawn(inventory, "update", "MUG", "--change", "-1") for _ in range(10)]
    codes = [p.wait(timeout=120) for p in procs]
    assert sorted(codes) == [0] * 5 + [1] * 5
    for proc in procs:
        if proc.returncode:
            assert proc.stderr is not None
            assert proc.stderr.read().startswith("Error: not enough MUG at main: 0 on hand")
    assert json.loads(cli("show", "MUG", "--format", "json").stdout)["stock"] == {"main": 0}


def test_a_retried_command_with_a_key_applies_once(cli: CliCall, run_inv: ProcCall) -> None:
    """A cron job run again: each attempt a process of its own."""
    assert cli("init").exit_code == 0
    assert cli("add", "Mug", "--price", "1", "--sku", "MUG", "--qty", "5").exit_code == 0
    for attempt in range(3):
        result = run_inv("update", "MUG", "--change", "-2", "--idempotency-key", "cron-2026-11-25")
        assert result.returncode == 0
        note = (
            " (already applied with this idempotency key; nothing changed now)" if attempt else ""
        )
        assert result.stdout == f"MUG at main: 5 -> 3 (-2){note}\n"
    assert json.loads(cli("show", "MUG", "--format", "json").stdout)["stock"] == {"main": 3}


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("update", "NOPE", "--change", "1"), 1),
        (("update", "MUG"), 2),
        (("import", "bad.csv"), 65),
        (("import", "missing.csv"), 66),
        (("--backend", "postgres", "list"), 75),
        (("export", "-o", "folder"), 77),
        (("--backend", "nosuch", "list"), 78),
    ],
    ids=lambda v: str(v) if isinstance(v, int) else None,
)
def test_each_exit_code_from_a_real_process(
    cli: CliCall, run_inv: ProcCall, inventory: Path, args: tuple[str, ...], code: int
) -> None:
    """One real process per exit code of the README's table: the status reaches the shell
    through `sys.exit`, stdout stays empty and stderr is one `Error:` line (Typer's usage
    text for 2), never a traceback.  The in-process tests cover every other path."""
    assert cli("init").exit_code == 0
    assert cli("add", "Mug", "--price", "1", "--sku", "MUG").exit_code == 0
    (inventory.parent / "bad.csv").write_text("sku,store,change\nMUG,main,lots\n")
    (inventory.parent / "folder").mkdir()
    nowhere = f"postgresql://postgres@127.0.0.1:{_closed_port()}/inv"
    before = inventory.read_bytes()
    result = run_inv(*args, env={"INV_DATABASE_URL": nowhere})
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    if code == 2:
        assert "Usage:" in result.stderr
    elif code == 65:  # a line per bad row, then the verdict
        assert result.stderr == (
            "Error: bad.csv: row 2, column change: 'lots' is not a whole number\n"
            "Error: bad.csv: 1 row bad; nothing was written\n"
        )
    else:
        assert result.stderr.startswith("Error: ")
        assert result.stderr.count("\n") == 1
    assert inventory.read_bytes() == before


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_console_script_exit_codes(inventory: Path) -> None:
    """The installed `inv` script, not just the module."""
    inv = Path(sys.executable).parent / "inv"
    assert inv.exists(), "the console script is not installed in this environment"
    run = [str(inv), "--file", str(inventory)]
    assert subprocess.run([*run, "init"], capture_output=True).returncode == 0
    refused = subprocess.run([*run, "show", "X"], capture_output=True, text=True)
    assert (refused.returncode, refused.stderr) == (1, "Error: no product with SKU 'X'\n")
    version = subprocess.run([str(inv), "--version"], capture_output=True, text=True)
    assert version.stdout.startswith("inv ")


def test_a_closed_pipe_is_not_an_error(run_inv: ProcCall, inventory: Path) -> None:
    run_inv("init")
    rows = "sku,name,price,quantity\n" + "".join(f"S{i},Item {i},1.00,{i}\n" for i in range(3000))
    assert run_inv("import", "-", input=rows).returncode == 0
    shell = subprocess.run(
        f"{sys.executable} -m inventory_cli --file {inventory} list --format csv | head -n 2",
        shell=True,
        capture_output=True,
        text=True,
        executable="/bin/bash",
    )
    assert shell.stdout.splitlines()[0].startswith("sku,name,price")
    assert "Traceback" not in shell.stderr
    assert "BrokenPipe" not in shell.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("--help",),
        ("list", "--format", "json"),
        ("update", "MUG", "--change", "1"),
        ("history", "--format", "csv"),
        ("import", "-"),
    ],
)
def test_json_commands_import_no_heavy_client(
    cli: CliCall, inventory: Path, args: tuple[str, ...]
) -> None:
    assert cli("init").exit_code == 0
    assert cli("add", "M", "--price", "1", "--sku", "MUG").exit_code == 0
    probe = (
        "import sys\n"
        f"sys.argv = ['inv', '--file', {str(inventory)!r}, *{list(args)!r}]\n"
        "from inventory_cli.cli import app\n"  # main() would end the process at once
        "try:\n"
        "    app()\n"
        "except SystemExit:\n"
        "    pass\n"
        "loaded = sorted({m.split('.')[0] for m in sys.modules})\n"
        "sys.stderr.write('LOADED ' + ' '.join(loaded) + '\\n')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        input="sku,change\nMUG,1\n",
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "80"},
    )
    line = next(x for x in result.stderr.splitlines() if x.startswith("LOADED "))
    loaded = set(line.split()[1:])
    assert "backends" in loaded or args == ("--help",)
    assert not loaded & set(HEAVY), loaded & set(HEAVY)
    if args[-1] in ("json", "csv", "-"):
        assert "rich" not in loaded  # only tables and terminals need Rich


def test_progress_bar_on_a_terminal_and_none_when_piped(tmp_path: Path, inventory: Path) -> None:
    """Long work draws a Rich progress bar on a terminal's stderr, nothing on a pipe."""
    import pty

    base = [sys.executable, "-m", "inventory_cli", "--file", str(inventory)]
    subprocess.run([*base, "init"], check=True, capture_output=True)
    data = tmp_path / "rows.csv"
    data.write_text(
        "sku,name,price,quantity\n" + "".join(f"S{i},Item {i},1.00,{i}\n" for i in range(5000))
    )
    piped = subprocess.run(
        [*base, "import", str(data), "--dry-run"], capture_output=True, text=True
    )
    assert piped.returncode == 0
    assert piped.stderr == ""

    leader, follower = pty.openpty()
    with subprocess.Popen(
        [*base, "import", str(data), "-q"],
        stdout=subprocess.PIPE,
        stderr=follower,
        env={**os.environ, "TERM": "xterm", "COLUMNS": "100"},
    ) as proc:
        os.close(follower)
        seen = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        proc.wait(timeout=120)
    os.close(leader)
    assert proc.returncode == 0
    assert b"Reading" in seen or b"Applying" in seen, seen[:300]
    assert b"\x1b[" in seen  # terminal control sequences: a live bar, redrawn
