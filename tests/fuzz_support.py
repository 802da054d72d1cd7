"""Helpers for tests/test_fuzz.py: awkward values, the checks every run of `inv` must pass,
fresh inventories per example, and a way to make a file really unreadable as root.

The promise checked everywhere: no input gives a Python traceback; a failure exits with a
code from the README's table and prints `Error: ...` lines on stderr; a refused command
writes nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import typer.main
import typer.testing
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

from inventory_cli.cli import app

__all__ = [
    "AWKWARD",
    "AWKWARD_NUMBERS",
    "AWKWARD_TIMES",
    "EXIT_CODES",
    "awkward_text",
    "check",
    "crash_summary",
    "error_lines",
    "invoke",
    "one_error",
    "run_unprivileged",
    "snapshot",
    "uncaught",
]

#: Every exit code the README's table allows.
EXIT_CODES = frozenset({0, 1, 2, 65, 66, 75, 77, 78})

ROOT = Path(__file__).resolve().parent.parent

#: Numbers in every spelling: underscores, other scripts' digits, NaN and infinities,
#: more digits than Decimal's 28, past 32 and 64 bits.
AWKWARD_NUMBERS: tuple[str, ...] = (
    "0",
    "-0",
    "+0",
    "00",
    "1",
    "-1",
    "1_000",
    "1_0",
    "\u0663",  # Arabic-Indic three
    "\u0661\u0662",  # Arabic-Indic 12
    "\uff11\uff12",  # full-width 12
    "\u00b2",
    "\u216b",  # Roman numeral twelve
    "nan",
    "NaN",
    "-nan",
    "sNaN",
    "inf",
    "-inf",
    "Infinity",
    "1e999",
    "-1e999",
    "1e-999",
    "1E+30",
    "0x10",
    "1.5",
    "1,5",
    "4.505",
    "9999999999.99",
    "10000000000",
    "1" * 30,
    "1" * 27 + ".123",
    "9" * 30 + ".001",
    "9" * 400,
    "-" + "9" * 30,
    "2147483647",
    "2147483648",
    "-2147483648",
    "-2147483649",
    "99999999999999999999",
    str(2**63 - 1),
    str(2**63),
    str(-(2**63) - 1),
)

#: Ages past any calendar and dates at its edges, with time zones.
AWKWARD_TIMES: tuple[str, ...] = (
    "999999999d",
    "99999999999y",
    "99999mo",
    "99999999999mo",
    "99999999999w",
    "99999999999999999999s",
    "99999999999999999999h",
    "999999999999d",
    "0d",
    "0y",
    "-1d",
    "1.5d",
    "7d",
    "24h",
    "18mo",
    "7y",
    "0001-01-01",
    "0001-01-01T00:00+01:00",
    "0001-01-01T00:00:00+23:59",
    "9999-12-31",
    "9999-12-31T23:59-01:00",
    "9999-12-31T23:59:59.999999Z",
    "2026-02-30",
    "2026-11-01T25:00",
    "2026-11-01T09:30+25:00",
    "1970-01-01T00:00Z",
)

#: Text that has broken parsers before: all of the above, control and invisible
#: characters, lone surrogates (what a non-UTF-8 argv byte becomes), NFC/NFD pairs,
#: case-folding traps, very long strings, things that look like options.
AWKWARD: tuple[str, ...] = (
    "",
    " ",
    *AWKWARD_NUMBERS,
    *AWKWARD_TIMES,
    "\x00",
    "a\x00b",
    "\x1b[31mred",
    "\r\n",
    "\t",
    "\x7f",
    "\x85",
    "\u2028",
    "\udcff",
    "a\udcffb",
    "\udc80\udc80",
    "\u200b",
    "a\u200bb",
    "\ufeffMUG-1",
    "\u200d",
    "\u2060",
    "\u00ad",
    "\u00e9",
    "e\u0301",
    "\u00c5",
    "A\u030a",
    "\u212b",
    "\ufb01",
    "\u00df",
    "SS",
    "\u0130",
    "\u01c5",
    "\U0001f600",
    "\U0010ffff",
    "\ue000",
    "main",
    "MAIN",
    " main ",
    "north",
    "Bad Code",
    "MUG-1",
    "mug-1",
    " MUG-1 ",
    "P000001",
    "p000001",
    "a" * 64,
    "a" * 65,
    "a" * 200,
    "a" * 201,
    "a" * 5000,
    "x" * 100_000,
    "--help",
    "-",
    "--",
    "-q",
    "'",
    '"',
    "\\",
    "%s",
    "{}",
    "${HOME}",
    "DROP TABLE products;--",
    "' OR 1=1 --",
    "%",
    "_",
)

#: The lone surrogates a command line or an environment variable can hold: Python decodes
#: a byte that is not UTF-8 (0x80-0xff) to U+DC80-U+DCFF (surrogateescape).
_ARGV_SURROGATES = st.integers(0xDC80, 0xDCFF).map(chr)
#: Any lone surrogate: what a JSON string can hold ("\ud800").
_ANY_SURROGATE = st.integers(0xD800, 0xDFFF).map(chr)
_SPECIAL_CHARS = st.sampled_from(
    ["\x00", "\x1b", "\n", "\r", "\u200b", "\u0301", "\u0663", "\uff11", "_", "-", " ", "."]
)


@functools.cache
def awkward_text(*, max_size: int = 40, any_surrogate: bool = False) -> st.SearchStrategy[str]:
    """An awkward value: one of AWKWARD, random text with any code point, or a number.

    Lone surrogates are those argv can hold, unless `any_surrogate` (JSON text)."""
    surrogates = _ANY_SURROGATE if any_surrogate else _ARGV_SURROGATES
    chars = st.one_of(st.characters(codec=None), surrogates, _SPECIAL_CHARS)
    return st.one_of(
        st.sampled_from(AWKWARD),
        st.text(chars, max_size=max_size),
        st.integers().map(str),
        st.floats().map(str),
        st.tuples(st.integers(), st.integers(-40, 40)).map(lambda t: f"{t[0]}E{t[1]}"),
    )


def safe_path(value: str) -> str:
    """A path value that cannot leave the current folder: no `/`, no leading `~`."""
    return "f-" + value.replace("/", "_")


# -- running inv and checking what it did -------------------------------------------------


def invoke(
    args: Sequence[str],
    *,
    input: str | bytes | None = None,
    env: Mapping[str, str | None] | None = None,
) -> Result:
    """Run `inv ARGS` in-process, the way conftest's `cli` fixture does.

    The runner rebuilds the Click command from the Typer app on every call, which costs
    about 0.1 s; the fuzzers run thousands of commands, so the command is built once.
    """
    with mock.patch.object(typer.testing, "_get_command", _command):
        return CliRunner().invoke(app, list(args), input=input, env=env)


@functools.cache
def _built() -> Any:
    return typer.main.get_command(app)


def _command(_app: object) -> Any:
    return _built()


def uncaught(result: Result) -> str | None:
    """The traceback of an exception that escaped the app, or None.

    The in-process runner catches what escapes and reports exit code 1: without this a
    crash would pass for a refusal.
    """
    if result.exception is None or isinstance(result.exception, SystemExit):
        return None
    assert result.exc_info is not None
    return "".join(traceback.format_exception(*result.exc_info))


def crash_summary(result: Result) -> str:
    """`Type: first line of the message` of an escaped exception, or ""."""
    exc = result.exception
    if exc is None or isinstance(exc, SystemExit):
        return ""
    first = (str(exc).splitlines() or [""])[0]
    return f"{type(exc).__module__}.{type(exc).__qualname__}: {first[:160]}"


def describe(args: Sequence[str], result: Result) -> str:
    shown = [a if len(a) <= 80 else f"{a[:40]}...({len(a)} chars)" for a in args]
    return (
        f"inv {shown!r} -> {result.exit_code}\n"
        f"stdout: {result.stdout[-500:]!r}\nstderr: {result.stderr[-1500:]!r}"
    )


def error_lines(result: Result) -> list[str]:
    """stderr's lines, split where a script splits them: at each newline."""
    return result.stderr.removesuffix("\n").split("\n") if result.stderr else []


def check(
    args: Sequence[str],
    result: Result,
    *,
    allowed: frozenset[int] = EXIT_CODES,
) -> None:
    """The promise every run keeps: no traceback, a code from the table, `Error:` lines."""
    crash = uncaught(result)
    assert crash is None, f"{describe(args, result)}\nuncaught exception:\n{crash}"
    assert "Traceback" not in result.stderr, describe(args, result)
    assert result.exit_code in allowed, describe(args, result)
    if result.exit_code in (0, 2):
        return
    lines = error_lines(result)
    if not lines:
        # Only `report low-stock --exit-code` and `status` fail quietly, by design.
        assert "--exit-code" in args or "status" in args, (
            f"exit {result.exit_code} without an Error line\n{describe(args, result)}"
        )
        return
    bad = [line for line in lines if not line.startswith("Error: ")]
    assert not bad, f"stderr lines that are not 'Error: ...': {bad!r}\n{describe(args, result)}"


def one_error(args: Sequence[str], result: Result, code: int) -> str:
    """Exactly this exit code, and stderr is one `Error: ...` line; returns the message."""
    check(args, result)
    assert result.exit_code == code, describe(args, result)
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("Error: "), describe(args, result)
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file under `folder` (bytes) and every folder (None), except lock files."""
    found: dict[str, bytes | None] = {}
    for path in sorted(folder.rglob("*")):
        name = str(path.relative_to(folder))
        if path.name.endswith(".lock"):
            continue
        if path.is_symlink() or not (path.is_dir() or path.is_file()):
            found[name] = b"<special>"
        elif path.is_dir():
            found[name] = None
        else:
            found[name] = path.read_bytes()
    return found


def changes(before: Mapping[str, bytes | None], after: Mapping[str, bytes | None]) -> list[str]:
    """Names of the files added, removed or changed."""
    return sorted(
        name
        for name in set(before) | set(after)
        if before.get(name, b"<absent>") != after.get(name, b"<absent>")
    )


@contextlib.contextmanager
def copy_of(template: Path) -> Iterator[Path]:
    """A fresh copy of the folder `template`, as the current directory, removed after."""
    with tempfile.TemporaryDirectory(prefix="inv-fuzz-") as tmp:
        work = Path(tmp) / "w"
        shutil.copytree(template, work)
        with contextlib.chdir(work):
            yield work


@contextlib.contextmanager
def logging_restored() -> Iterator[None]:
    """`inv worker` reconfigures the root logger; put it back for the tests after."""
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


# -- the json inventory file ---------------------------------------------------------


def read_doc(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return doc


def write_doc(path: Path, doc: Any) -> None:
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")


# -- a file that cannot be read, even by root ---------------------------------------------

_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE = 1
_CAP_DAC_READ_SEARCH = 2


def _drop_file_capabilities() -> None:  # runs in the child, before exec
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def can_drop_capabilities() -> bool:
    """Whether a child process can be started without root's right to read any file."""
    if os.geteuid() != 0:
        return True
    probe = subprocess.run(
        [sys.executable, "-c", "pass"],
        preexec_fn=_drop_file_capabilities,
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


def run_unprivileged(
    args: Sequence[str], *, cwd: Path, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real `inv` in a subprocess for which permission bits apply: as root it
    drops CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH first, so `chmod 000` really means
    unreadable."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("INV_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "inventory_cli", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        preexec_fn=_drop_file_capabilities if os.geteuid() == 0 else None,
    )
