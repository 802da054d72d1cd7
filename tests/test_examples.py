"""The files in examples/ work as the walkthrough says, against a real `inv`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def inv(folder: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inventory_cli", "--file", str(folder / "inventory.json"), *args],
        capture_output=True,
        text=True,
        input=input,
        timeout=120,
    )


def test_a_day_in_the_shop(tmp_path: Path) -> None:
    assert inv(tmp_path, "init").returncode == 0
    for name in ("catalog.csv", "stock-count.csv", "movements.csv", "movements.jsonl"):
        result = inv(tmp_path, "import", str(EXAMPLES / name))
        assert result.returncode == 0, (name, result.stderr)
        assert "0 already applied" in result.stdout
    stores = json.loads(inv(tmp_path, "store", "list", "--format", "json").stdout)
    assert {s["code"] for s in stores} == {"main", "north"}
    before = inv(tmp_path, "export").stdout
    again = inv(tmp_path, "import", str(EXAMPLES / "movements.csv"))
    assert again.returncode == 0
    assert "0 rows applied" in again.stdout
    assert inv(tmp_path, "export").stdout == before
    low = inv(tmp_path, "report", "low-stock", "--exit-code", "--format", "json")
    assert low.returncode in (0, 1)
    assert (low.returncode == 1) == bool(json.loads(low.stdout))


def test_stream_movements_applies_a_feed_once(tmp_path: Path) -> None:
    assert inv(tmp_path, "init").returncode == 0
    assert inv(tmp_path, "import", str(EXAMPLES / "catalog.csv")).returncode == 0
    env = {
        **os.environ,
        "INV": str(Path(sys.executable).parent / "inv"),
        "INV_FILE": str(tmp_path / "inventory.json"),
    }
    script = [str(EXAMPLES / "stream-movements.sh"), "-s", "main", str(EXAMPLES / "pos-export.csv")]
    first = subprocess.run(script, capture_output=True, text=True, env=env, timeout=120)
    assert first.returncode == 0, first.stderr
    after_first = inv(tmp_path, "export").stdout
    second = subprocess.run(script, capture_output=True, text=True, env=env, timeout=120)
    assert second.returncode == 0, second.stderr
    assert inv(tmp_path, "export").stdout == after_first
    history = json.loads(inv(tmp_path, "history", "--format", "json").stdout)
    sales = [e for e in history if e["source"] == "import" and e["action"] == "stock.adjust"]
    feed_lines = [
        line for line in (EXAMPLES / "pos-export.csv").read_text().splitlines()[1:] if line
    ]
    assert len(sales) == len([x for x in feed_lines if not x.endswith(",0")])


def test_crontab_uses_real_commands() -> None:
    text = (EXAMPLES / "crontab").read_text()
    for command in ("export", "report low-stock"):
        assert f"$INV {command}" in text
        result = subprocess.run(
            [sys.executable, "-m", "inventory_cli", *command.split(), "--help"],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0
    assert "--exit-code" in text
