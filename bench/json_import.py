"""Bulk import into the json backend: `inv import` of a 100,000-row CSV.

Generates a CSV of products x stores (20,000 x 5 by default: every row creates or
re-states a product and sets its stock at one store, the first row of a store creates
it), runs `inv init`, then times `inv --file X import FILE` as a real subprocess (wall
time, interpreter start-up included) and checks that it exits 0 and that
`inv list --format json` gives back one row per line of the file.

Then, to show where the time goes, it does the same work in this process on a fresh
file: parse (`inventory_cli.files.read_rows`), apply (`JsonBackend.apply`, rules and
audit entries in memory) and save (audit trail append + JSON dump + atomic replace).

Always exits 0 unless the import itself fails (exit code or row count wrong): the
timings are for reading, not for asserting.

    .venv/bin/python bench/json_import.py [--rows 100000] [--stores 5]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import HEADER, INV, PYTHON, UNUSUAL_ENV, Env, child_env, write_csv

from backends.engine import State
from backends.jsonfile import JsonBackend
from inventory_cli.files import FileFormat, read_rows

TARGET_ROWS = 100_000
TARGET_SECONDS = 5.0


def run(*args: str, cwd: Path, env: Env) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(INV), *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True
    )


class TimedJsonBackend(JsonBackend):
    """JsonBackend that records how long saving and the JSON dump took."""

    save_seconds = 0.0
    dump_seconds = 0.0

    def _save(self, state: State) -> None:
        start = time.perf_counter()
        super()._save(state)
        TimedJsonBackend.save_seconds += time.perf_counter() - start

    @staticmethod
    def _dump(state: State) -> str:
        start = time.perf_counter()
        text = JsonBackend._dump(state)
        TimedJsonBackend.dump_seconds += time.perf_counter() - start
        return text


def in_process(folder: Path, source: Path) -> dict[str, Any]:
    """Parse, apply and save the same file in this process; seconds for each."""
    timings: dict[str, Any] = {}
    start = time.perf_counter()
    with source.open("rb") as f:
        rows, problems = read_rows(f, FileFormat.csv)
    timings["parse"] = time.perf_counter() - start
    if problems:
        raise SystemExit(f"in-process parse found {len(problems)} problems: {problems[:3]}")
    backend = TimedJsonBackend(folder / "inproc.json", actor="bench", source="import")
    backend.init()
    TimedJsonBackend.save_seconds = TimedJsonBackend.dump_seconds = 0.0
    start = time.perf_counter()
    result = backend.apply(rows, on_error="reject-all")
    total = time.perf_counter() - start
    timings["save"] = TimedJsonBackend.save_seconds
    timings["dump"] = TimedJsonBackend.dump_seconds
    timings["apply"] = total - timings["save"]
    timings["applied"] = result.applied
    timings["size"] = (folder / "inproc.json").stat().st_size
    timings["audit_size"] = (folder / "inproc.audit.jsonl").stat().st_size
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=TARGET_ROWS, help="rows (default 100000)")
    parser.add_argument("--stores", type=int, default=5, help="stores (default 5)")
    parser.add_argument(
        "--keep-env",
        action="store_true",
        help=f"run the children with {' and '.join(UNUSUAL_ENV)} if set (default: unset them)",
    )
    args = parser.parse_args(argv)
    if args.rows < 1 or args.stores < 1:
        parser.error("--rows and --stores must be at least 1")
    env, removed = child_env(args.keep_env)
    if not INV.exists():
        print(f"no inv next to {PYTHON}: install the project in this venv first")
        return 0

    with tempfile.TemporaryDirectory(prefix="inv-bench-") as tmp:
        folder = Path(tmp)
        source = folder / "rows.csv"
        start = time.perf_counter()
        write_csv(source, args.rows, args.stores)
        generate = time.perf_counter() - start
        data = folder / "inventory.json"

        init = run("--file", str(data), "init", cwd=folder, env=env)
        if init.returncode != 0:
            print(f"inv init exited {init.returncode}: {init.stderr.decode().strip()}")
            return 1
        start = time.perf_counter()
        done = run("--file", str(data), "import", str(source), cwd=folder, env=env)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            print(f"inv import exited {done.returncode} (expected 0)")
            print(done.stderr.decode()[-2000:])
            return 1

        start = time.perf_counter()
        listed = run("--file", str(data), "list", "--format", "json", cwd=folder, env=env)
        list_seconds = time.perf_counter() - start
        count = len(json.loads(listed.stdout)) if listed.returncode == 0 else -1
        if count != args.rows:
            print(f"inv list --format json gave {count} rows, expected {args.rows}")
            return 1
        file_size = data.stat().st_size

        parts = in_process(folder, source)

    rate = args.rows / wall
    products = -(-args.rows // args.stores)
    print(f"inv import: {args.rows:,} rows ({products:,} products x {args.stores} stores)")
    print(f"  CSV generated in {generate:.2f} s ({source.name}, {HEADER[0]}..{HEADER[-1]})")
    print(f"  summary: {done.stdout.decode().strip()}")
    print(f"  wall time   : {wall:6.2f} s  ({rate:,.0f} rows/s, subprocess, start-up included)")
    print(f"  target      : {TARGET_ROWS:,} rows in at most {TARGET_SECONDS:g} s")
    print(
        f"  check       : inv list --format json -> {count:,} rows in {list_seconds:.2f} s; "
        f"inventory.json {file_size / 1e6:.1f} MB"
    )
    in_total = parts["parse"] + parts["apply"] + parts["save"]
    print("in process (same rows, fresh file):")
    print(f"  parse  read_rows        : {parts['parse']:6.2f} s")
    print(f"  apply  JsonBackend.apply: {parts['apply']:6.2f} s  (rules, audit entries in memory)")
    print(
        f"  save   audit + file     : {parts['save']:6.2f} s  "
        f"(of which JSON dump {parts['dump']:.2f} s; "
        f"audit trail {parts['audit_size'] / 1e6:.1f} MB)"
    )
    print(f"  total                   : {in_total:6.2f} s  ({args.rows / in_total:,.0f} rows/s)")
    print(f"  rest of the subprocess  : {wall - in_total:6.2f} s  (start-up, imports, exit)")
    if removed:
        print(f"environment: the children ran without {', '.join(removed)} (see --keep-env)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
