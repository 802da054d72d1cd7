"""`inv ARGS...` in this process, answered as `subprocess.run` would answer it.

    result = run_cli(["--backend", "postgres", "list"], env={...}, cwd=folder)
    result.returncode, result.stdout, result.stderr

For failure paths and everything else that does not need a process of its own: about a
millisecond instead of the 0.3 s a Python start costs.  What only a real process shows
(the exit status through `sys.exit`, a traceback printed by the interpreter, signals,
concurrency, imports) keeps its subprocess test (`test_processes.py` has one per exit
code).  An exception that escapes the app is put on stderr as the interpreter would print
it, so "no traceback" assertions hold in-process too.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path

from typer.testing import CliRunner

from inventory_cli.cli import app


def run_cli(
    args: Sequence[str],
    *,
    env: Mapping[str, str | None] | None = None,
    cwd: str | Path | None = None,
    input: str | bytes | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the app on `args`; `env` is laid over os.environ (None removes a variable)."""
    runner = CliRunner()
    overlay = {k: v for k, v in (env or {}).items() if os.environ.get(k) != v}
    with contextlib.chdir(cwd or os.getcwd()):
        result = runner.invoke(app, list(args), input=input, env=overlay)
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "Traceback (most recent call last):\n" + "".join(
            traceback.format_exception(result.exception)
        )
    return subprocess.CompletedProcess(["inv", *args], result.exit_code, result.stdout, stderr)
