"""What the benchmark scripts share: the `inv` to run, the generated import file, and the
environment the children run in."""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

PYTHON = Path(sys.executable)
INV = PYTHON.parent / "inv"
HEADER = ["sku", "name", "price", "unit", "category", "reorder_level"]
HEADER += ["store", "store_name", "quantity"]
UNITS = ("each", "box", "kg", "m", "pack")

#: Set in some shells and CI images, absent on a user's machine.  PYTHONUNBUFFERED makes
#: every write a system call; PYTHONDONTWRITEBYTECODE recompiles any module whose .pyc is
#: stale on every start.  The children run without them (--keep-env: with).
UNUSUAL_ENV = ("PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE")
Env = dict[str, str] | None


def store_code(n: int) -> str:
    return "main" if n == 0 else f"store-{n + 1:02d}"


def write_csv(path: Path, rows: int, stores: int) -> None:
    """`rows` import rows: row i is product i // stores at store i % stores."""
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(HEADER)
        for i in range(rows):
            p, s = divmod(i, stores)
            writer.writerow(
                [
                    f"SKU{p:07d}",
                    f"Product {p}",
                    f"{1 + p % 250}.{(p * 7) % 100:02d}",
                    UNITS[p % len(UNITS)],
                    f"category-{p % 40}",
                    p % 10,
                    store_code(s),
                    "Main" if s == 0 else f"Store {s + 1}",
                    (p * 13 + s) % 200,
                ]
            )


def child_env(keep: bool) -> tuple[Env, list[str]]:
    """The environment for the children, and the names taken out of it."""
    removed = [name for name in UNUSUAL_ENV if name in os.environ and not keep]
    if not removed:
        return None, []
    return {k: v for k, v in os.environ.items() if k not in removed}, removed
