"""Fixtures shared by every test: an isolated environment, and `inv` run two ways.

`cli` runs the Typer app in-process (fast, stdout and stderr apart); `run_inv` runs the
real console entry point in a subprocess, for what only a real process shows (exit
codes through `sys.exit`, tracebacks, imports, concurrency).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from inventory_cli.cli import app

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def isolated_env(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """No INV_* variable, user config or ./inv.toml of the developer's leaks into a test."""
    for name in list(os.environ):
        if name.startswith("INV_"):
            monkeypatch.delenv(name)
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    yield


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    return tmp_path / "inventory.json"


CliCall = Callable[..., Result]


@pytest.fixture
def cli(inventory: Path, monkeypatch: pytest.MonkeyPatch) -> CliCall:
    """Run `inv --file <tmp inventory> ARGS...` in-process; returns the Result."""
    monkeypatch.chdir(inventory.parent)
    runner = CliRunner()

    def call(*args: str, input: str | bytes | None = None, env: dict[str, str] | None = None):
        return runner.invoke(app, ["--file", str(inventory), *args], input=input, env=env)

    return call


ProcCall = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run_inv(inventory: Path) -> ProcCall:
    """Run the real `inv` (python -m inventory_cli) in a subprocess against the tmp file."""

    def call(
        *args: str, input: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "inventory_cli", "--file", str(inventory), *args],
            input=input,
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
            cwd=inventory.parent,
            timeout=120,
        )

    return call
