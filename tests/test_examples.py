"""The files in examples/ work as the walkthrough says, against a real `inv`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

pytestmark = pytest.mark.slow  # real processes


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
    assert low.returncode == 1, "the examples leave five rows at or below their level"
    assert sorted((r["store"], r["sku"]) for r in json.loads(low.stdout)) == [
        ("main", "KT-2007"),
        ("north", "HW-1002"),
        ("north", "HW-1007"),
        ("north", "KT-2001"),
        ("north", "KT-2008"),
    ]


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


def test_the_walkthrough_from_v1_to_v3(tmp_path: Path) -> None:
    """The shop of the walkthrough, carried up: JSON -> PostgreSQL (`inv migrate`) -> the
    kafka backend on the same database, with a real broker, worker and Redis."""
    from broker import broker_or_skip
    from pg import drop_database, fresh_database
    from services import redis_or_skip

    assert inv(tmp_path, "init").returncode == 0
    for name in ("catalog.csv", "stock-count.csv", "movements.csv"):
        assert inv(tmp_path, "import", str(EXAMPLES / name)).returncode == 0
    v1 = json.loads(inv(tmp_path, "list", "--format", "json").stdout)
    v1_history = json.loads(inv(tmp_path, "history", "--format", "json").stdout)
    url = fresh_database()  # the schema and store main, as `inv init` leaves it
    redis_url = redis_or_skip()
    try:
        with broker_or_skip() as broker:
            env = {
                **os.environ,
                "INV_DATABASE_URL": url,
                "INV_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
                "INV_KAFKA_TOPIC": f"walk-{tmp_path.name}",
                "INV_REDIS_URL": redis_url,
                "INV_CACHE_PREFIX": f"walk-{tmp_path.name}",
                "INV_KAFKA_SESSION_TIMEOUT_MS": "2000",
            }

            def run(*args: str, backend: str) -> subprocess.CompletedProcess[str]:
                return subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "inventory_cli",
                        "--file",
                        str(tmp_path / "inventory.json"),
                        *args,
                    ],
                    capture_output=True,
                    text=True,
                    env={**env, "INV_BACKEND": backend},
                    timeout=120,
                )

            moved = run("migrate", "--to", "postgres", "--merge", backend="json")
            assert moved.returncode == 0, moved.stderr
            v2 = json.loads(run("list", "--format", "json", backend="postgres").stdout)
            assert v2 == v1
            v2_history = json.loads(run("history", "--format", "json", backend="postgres").stdout)
            assert len(v2_history) == len(v1_history) + 1  # + the template's store main
            assert run("init", backend="kafka").returncode == 0  # the topics
            worker = subprocess.Popen(
                [sys.executable, "-m", "inventory_cli", "worker"],
                env={**env, "INV_BACKEND": "kafka"},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                here = ("HW-1001", "main")
                start = next(r["quantity"] for r in v1 if (r["sku"], r["store"]) == here)
                sold = run("update", *here[:1], "--change", "-1", "--wait", backend="kafka")
                assert sold.stdout == f"HW-1001 at main: {start} -> {start - 1} (-1)\n", sold.stderr
                v3 = json.loads(run("list", "--format", "json", backend="kafka").stdout)
                one_less = start - 1
                expected = [
                    {**r, "quantity": one_less, "value": str(Decimal(r["price"]) * one_less)}
                    if (r["sku"], r["store"]) == here
                    else r
                    for r in v1
                ]
                assert v3 == expected
            finally:
                worker.terminate()
                assert worker.wait(30) == 0
    finally:
        drop_database(url)
