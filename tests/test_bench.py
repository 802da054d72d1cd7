"""The benchmark scripts still run (on tiny sizes): a bench that rots is not measured."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pg import ADMIN_URL

BENCH = Path(__file__).resolve().parent.parent / "bench"


#: The tests' PostgreSQL server (the run's private cluster), without a database name.
SERVER = ADMIN_URL.rpartition("/")[0]


def run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_startup_bench_runs() -> None:
    result = run("startup.py", "--runs", "2", "--products", "20")
    assert result.returncode == 0, result.stderr
    assert "ratio" in result.stdout and "heavy modules imported : none" in result.stdout


def test_json_import_bench_runs() -> None:
    result = run("json_import.py", "--rows", "600", "--stores", "3")
    assert result.returncode == 0, result.stderr
    assert "rows/s" in result.stdout and "in process" in result.stdout


@pytest.mark.slow
def test_postgres_bench_runs() -> None:
    result = run(
        "postgres.py",
        "--server",
        SERVER,
        "--rows",
        "600",
        "--import-stores",
        "3",
        "--stores",
        "20",
        "--products",
        "10",
        "--runs",
        "2",
        "--report-runs",
        "2",
        "--list-runs",
        "3",
        "--no-vacuum",
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    assert "summary:" in result.stdout
    for figure in ("inv import", "inv seed", "report value", "list --store", "inv update"):
        assert figure in result.stdout


@pytest.mark.slow
def test_kafka_bench_runs() -> None:
    result = run(
        "kafka.py",
        "--server",
        SERVER,
        "--events",
        "2000",
        "--stores",
        "10",
        "--products",
        "50",
        "--delay-seconds",
        "1",
        "--reads",
        "200",
        "--stall",
        "30",
        "--workers",
        "1",
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    assert "summary:" in result.stdout
    for figure in (
        "first applied -> all applied",
        "raw: batched UPDATE",
        "publish -> visible",
        "sync delay p99 at 100 ev/s",
        "sync delay p99 at 5,000 ev/s",
        "raw: redis-py GET",
        "cached quantity(store, sku)",
    ):
        assert figure in result.stdout


@pytest.mark.slow
def test_api_bench_runs() -> None:
    # One run, with the load generator the bench picks (wrk when installed, else its
    # own): both print the same table.
    result = run("api.py", "--server", SERVER, "--quick")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    assert "summary:" in result.stdout
    for figure in (
        "bare FastAPI route, GET /c (raw limit)",
        "GET /api/v1/stores/{store}/inventory/{sku}",
        "in process: backend.quantity(store, sku)",
        "GET / bare:",
        "POST .../movements",
        "p99 at 200/s:",
        "closed loop: POST .../movements",
        "whole process, median of 2",
    ):
        assert figure in result.stdout
    assert "dropped inv_bench_" in result.stdout
