"""Start-up time of `inv list --format json` against a bare `python -c pass`.

Builds a throw-away inventory of 500 products (one `inv init`, one `inv import` of a
generated CSV), then runs each command N times as a real subprocess and prints the
median wall time of both and their ratio.  The raw limit is the interpreter itself:
`inv` can never start faster than `python -c pass`, so the ratio is what we watch.

It also runs `python -X importtime -m inventory_cli list --format json` once and prints
which heavy modules that command imported (none should be: the json backend needs no
database client, and `--format json` needs no Rich).

Always exits 0: the figures are for reading, not for asserting.

    .venv/bin/python bench/startup.py [--runs 20] [--products 500]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from common import INV, PYTHON, UNUSUAL_ENV, Env, child_env

TARGET_RATIO = 8

#: The floor under any command of ours: the libraries every command needs (Typer, and
#: pydantic-settings for the settings), one trivial command, one settings object.  With
#: Typer 0.29 (which builds pydantic adapters for parameters) it is itself about 10x a
#: bare interpreter here, so the 8x target cannot be met with these libraries.
LIBRARY_FLOOR = """
import os
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")  # as inv does
import typer
from pydantic_settings import BaseSettings

class Settings(BaseSettings):
    backend: str = "json"

app = typer.Typer()

@app.command()
def main(fmt: str = "json") -> None:
    Settings()
    print("[]")

app()
"""
HEAVY = ("sqlalchemy", "psycopg", "redis", "confluent_kafka", "rich")


def build_inventory(folder: Path, products: int, env: Env) -> Path:
    """`inv init` then `inv import` of `products` products stocked at main."""
    data = folder / "inventory.json"
    catalog = folder / "catalog.csv"
    with catalog.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["sku", "name", "price", "unit", "category", "reorder_level", "quantity"])
        for n in range(1, products + 1):
            writer.writerow(
                [
                    f"SKU{n:05d}",
                    f"Product {n}",
                    f"{1 + n % 97}.{n % 100:02d}",
                    "each",
                    f"cat-{n % 12}",
                    n % 5,
                    n % 40,
                ]
            )
    for args in (["init"], ["import", str(catalog)]):
        subprocess.run(
            [str(INV), "--file", str(data), "--quiet", *args],
            check=True,
            cwd=folder,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    return data


def median_ms(command: Sequence[str], runs: int, cwd: Path, env: Env) -> float:
    """Median wall time of `runs` runs, in milliseconds (one untimed warm-up run first)."""
    times: list[float] = []
    for i in range(runs + 1):
        start = time.perf_counter()
        subprocess.run(
            command,
            check=True,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        if i:
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def heavy_imports(data: Path, cwd: Path, env: Env) -> list[str]:
    """The HEAVY top-level packages `inv list --format json` imported (-X importtime)."""
    command = [str(PYTHON), "-X", "importtime", "-m", "inventory_cli"]
    done = subprocess.run(
        [*command, "--file", str(data), "list", "--format", "json"],
        check=True,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Lines look like: "import time:       123 |        456 |     package.module"
    seen: set[str] = set()
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        module = line.rsplit("|", 1)[1].strip()
        top = module.split(".", 1)[0]
        if top in HEAVY:
            seen.add(top)
    return sorted(seen)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="timed runs of each (default 20)")
    parser.add_argument(
        "--products", type=int, default=500, help="products in the inventory (default 500)"
    )
    parser.add_argument(
        "--keep-env",
        action="store_true",
        help=f"run the children with {' and '.join(UNUSUAL_ENV)} if set (default: unset them)",
    )
    args = parser.parse_args(argv)
    if args.runs < 1 or args.products < 0:
        parser.error("--runs must be at least 1 and --products at least 0")
    env, removed = child_env(args.keep_env)
    if not INV.exists():
        print(f"no inv next to {PYTHON}: install the project in this venv first")
        return 0

    with tempfile.TemporaryDirectory(prefix="inv-bench-") as tmp:
        folder = Path(tmp)
        data = build_inventory(folder, args.products, env)
        inv_ms = median_ms(
            [str(INV), "--file", str(data), "list", "--format", "json"], args.runs, folder, env
        )
        python_ms = median_ms([str(PYTHON), "-c", "pass"], args.runs, folder, env)
        floor_ms = median_ms(
            [str(PYTHON), "-c", LIBRARY_FLOOR, "--fmt", "json"], args.runs, folder, env
        )
        heavy = heavy_imports(data, folder, env)

    ratio = inv_ms / python_ms
    print(f"inv list --format json ({args.products} products), median of {args.runs} runs")
    print(f"  inv list --format json : {inv_ms:8.1f} ms")
    print(f"  python -c pass         : {python_ms:8.1f} ms")
    print(f"  ratio                  : {ratio:8.1f}x   (target: at most {TARGET_RATIO}x)")
    print(
        f"  library floor          : {floor_ms:8.1f} ms = {floor_ms / python_ms:.1f}x python "
        "(Typer + pydantic-settings, one trivial command)"
    )
    print(f"  inv over the floor     : {inv_ms / floor_ms:8.2f}x")
    print(f"  heavy modules imported : {', '.join(heavy) if heavy else 'none'}")
    print(f"                           (checked: {', '.join(HEAVY)})")
    if removed:
        print(f"  environment            : ran without {', '.join(removed)} (see --keep-env)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
