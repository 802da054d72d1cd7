"""Fixtures shared by every test: an isolated environment, and `inv` run two ways.

`cli` runs the Typer app in-process (fast, stdout and stderr apart); `run_inv` runs the
real console entry point in a subprocess, for what only a real process shows (exit
codes through `sys.exit`, tracebacks, imports, concurrency).

Before any test (and before any xdist worker starts) the run gets a private PostgreSQL
cluster without fsync (`pgcluster`), unless `INV_TEST_ADMIN_URL` names a server; and a
Hypothesis profile: `ci` under CI=true (every example), `dev` otherwise (a quarter of
them; `HYPOTHESIS_PROFILE=ci` runs the full count locally).  Tests scale their own counts
with `strategies.examples(n)`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from typer.testing import CliRunner, Result

from inventory_cli.cli import app

ROOT = Path(__file__).resolve().parent.parent

settings.register_profile(
    "ci",
    max_examples=100,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "dev", max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") == "true" else "dev")
)


def pytest_configure(config: pytest.Config) -> None:
    """One private PostgreSQL cluster for the run, started by the controller only."""
    if hasattr(config, "workerinput") or os.environ.get("INV_TEST_ADMIN_URL"):
        return
    from pgcluster import start_cluster

    try:
        cluster = start_cluster()
    except Exception as exc:  # no initdb here: the machine's server serves, more slowly
        sys.stderr.write(f"no private PostgreSQL cluster ({exc}); using 127.0.0.1:5432\n")
        return
    os.environ["INV_TEST_ADMIN_URL"] = cluster.url()
    config.stash[_CLUSTER] = cluster


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest tests first (stateful machines and those marked `slow`), so that with
    xdist none of them starts last and holds up the end of the run."""

    def later(item: pytest.Item) -> bool:
        return not (item.name == "runTest" or item.get_closest_marker("slow"))

    items.sort(key=later)


def pytest_unconfigure(config: pytest.Config) -> None:
    cluster = config.stash.get(_CLUSTER, None)
    if cluster is not None:
        cluster.stop()


_CLUSTER = pytest.StashKey["pgcluster.Cluster"]()


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
