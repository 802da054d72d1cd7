"""Fuzzers and regression tests for every way input reaches `inv`.

The promise (README, DESIGN.md): no user input ever produces a Python traceback; a
failure prints `Error: ...` on stderr (one line, or one per bad import row) and exits with
a code from the README's table (0, 1, 2, 65, 66, 75, 77, 78); a refused command writes
nothing.  The entry points:

* the command line: every command's arguments, with awkward values (json backend, and a
  smaller run on postgres);
* settings: `INV_*` environment variables and TOML config files;
* import files: CSV and JSON Lines, from a file and from stdin;
* the JSON inventory file itself, damaged in every way we could think of;
* the Kafka worker's decoder, `backends.kafka.events.decode`.

The second half pins each input that was seen to break one of these rules.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import json
import os
import shutil
import tempfile
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

import pytest
from fuzz_support import (
    AWKWARD_NUMBERS,
    AWKWARD_TIMES,
    awkward_text,
    can_drop_capabilities,
    changes,
    check,
    copy_of,
    crash_summary,
    describe,
    error_lines,
    invoke,
    logging_restored,
    one_error,
    read_doc,
    run_unprivileged,
    safe_path,
    snapshot,
    write_doc,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from services import unavailable
from strategies import examples
from typer.testing import Result

from backends.batch import COLUMNS
from backends.kafka.events import Event, MalformedEvent, decode

FIXTURES = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]

# -- a shop to fuzz ------------------------------------------------------------------------

SHOP = (
    ("init",),
    ("store", "add", "north", "--name", "North branch"),
    (
        "add",
        "Blue mug",
        "--price",
        "4.50",
        "--qty",
        "12",
        "--sku",
        "MUG-1",
        "--category",
        "Kitchen",
        "--reorder-level",
        "5",
    ),
    ("add", "Hammer", "--price", "12", "--qty", "3", "--sku", "HAM-1", "--store", "north"),
    ("add", "Tea towel", "--price", "3.20", "--sku", "TT-1", "--unit", "pack"),
    ("update", "MUG-1", "--change", "-2", "--reason", "sale", "--idempotency-key", "k-used"),
)

GOOD_CSV = "sku,name,price,store,quantity\nNEW-1,New thing,2.50,main,4\nMUG-1,,,north,1\n"


def _no_inv_env() -> dict[str, str | None]:
    return {name: None for name in os.environ if name.startswith("INV_")}


def build_shop(folder: Path) -> Path:
    """`folder/inventory.json` with two stores, three products and some history."""
    folder.mkdir(parents=True, exist_ok=True)
    inventory = folder / "inventory.json"
    home = folder.parent / "home"  # no user config of the developer's leaks in
    env = {**_no_inv_env(), "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
    with contextlib.chdir(folder):
        for args in SHOP:
            result = invoke(["--file", str(inventory), *args], env=env)
            assert result.exit_code == 0, describe(args, result)
    (folder / "good.csv").write_text(GOOD_CSV, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def shop_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_shop(tmp_path_factory.mktemp("shop") / "shop")


@pytest.fixture
def shop(shop_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh copy of the shop for one (non-Hypothesis) test, as the current folder."""
    work = tmp_path / "shop"
    shutil.copytree(shop_template, work)
    monkeypatch.chdir(work)
    return work


def inv(folder: Path, *args: str, **kwargs: Any) -> Result:
    """`inv --file folder/inventory.json ARGS`."""
    return invoke(["--file", str(folder / "inventory.json"), *args], **kwargs)


# -- the grammar, as the fuzzer sees it ------------------------------------------------------

PLAUSIBLE: dict[str, tuple[str, ...]] = {
    "sku": ("MUG-1", "mug-1", "HAM-1", "TT-1", "P000001", "NOPE"),
    "store": ("main", "north", "south"),
    "int": ("0", "1", "3", "-1", "12", "100"),
    "price": ("0", "4.50", "12", "0.01"),
    "text": ("sale", "Kitchen", "North branch", "each"),
    "time": ("7d", "24h", "2026-01-01", "2020-01-01T09:30Z"),
    "age": ("7y", "18mo", "6w", "90d"),
    "format": ("table", "json", "csv", "jsonl"),
    "sort": ("sku", "name", "quantity", "value"),
    "on-error": ("reject-all", "skip-rows"),
    "backend": ("json", "postgres", "kafka", "http", "JSON"),
    "key": ("k-used", "k-new"),
    "path": ("good.csv", "missing.csv", "", ".", "..", "out.csv", "inventory.json"),
    "url": (
        "postgresql://[::1",
        "postgresql://postgres@127.0.0.1:99999/x",
        "postgresql://postgres@127.0.0.1:1/x",
        "mysql://x@127.0.0.1/x",
        "nonsense",
    ),
}


@dataclass(frozen=True)
class Command:
    """One command's grammar: positional kinds (a trailing `?`: optional), options and
    their kinds, the options always given, and flags."""

    words: tuple[str, ...]
    positional: tuple[str, ...] = ()
    options: Mapping[str, str] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    reads_only: bool = False


COMMANDS: tuple[Command, ...] = (
    Command(("init",), flags=("-q",)),
    Command(
        ("add",),
        ("text",),
        {
            "--price": "price",
            "--qty": "int",
            "--sku": "sku",
            "--store": "store",
            "--unit": "text",
            "--category": "text",
            "--reorder-level": "int",
            "--idempotency-key": "key",
        },
        required=("--price",),
        flags=("-q",),
    ),
    Command(
        ("edit",),
        ("sku",),
        {
            "--name": "text",
            "--price": "price",
            "--unit": "text",
            "--category": "text",
            "--reorder-level": "int",
            "--idempotency-key": "key",
        },
        flags=("-q",),
    ),
    Command(
        ("remove",),
        ("sku",),
        {"--store": "store", "--idempotency-key": "key"},
        flags=("--force", "-q"),
    ),
    Command(
        ("update",),
        ("sku",),
        {
            "--change": "int",
            "--set": "int",
            "--store": "store",
            "--reason": "text",
            "--expect": "int",
            "--idempotency-key": "key",
        },
        flags=("--wait", "-q"),
    ),
    Command(
        ("transfer",),
        ("sku",),
        {
            "--from": "store",
            "--to": "store",
            "--qty": "int",
            "--reason": "text",
            "--idempotency-key": "key",
        },
        required=("--from", "--to", "--qty"),
        flags=("--wait", "-q"),
    ),
    Command(
        ("list",),
        (),
        {
            "--store": "store",
            "--search": "text",
            "--category": "text",
            "--sort": "sort",
            "--limit": "int",
            "--offset": "int",
            "--format": "format",
        },
        flags=("--low-stock", "--desc"),
        reads_only=True,
    ),
    Command(("show",), ("sku",), {"--format": "format"}, reads_only=True),
    Command(
        ("history",),
        ("sku?",),
        {"--store": "store", "--since": "time", "--limit": "int", "--format": "format"},
        reads_only=True,
    ),
    Command(
        ("store", "add"),
        ("store",),
        {"--name": "text", "--idempotency-key": "key"},
        flags=("-q",),
    ),
    Command(("store", "list"), (), {"--format": "format"}, reads_only=True),
    Command(
        ("store", "remove"),
        ("store",),
        {"--idempotency-key": "key"},
        flags=("--force", "-q"),
    ),
    Command(("report", "value"), (), {"--store": "store", "--format": "format"}, reads_only=True),
    Command(
        ("report", "low-stock"),
        (),
        {"--store": "store", "--format": "format"},
        flags=("--exit-code",),
        reads_only=True,
    ),
    Command(
        ("report", "movements"),
        (),
        {"--store": "store", "--since": "time", "--until": "time", "--format": "format"},
        reads_only=True,
    ),
    Command(
        ("import",),
        ("path",),
        {
            "--on-error": "on-error",
            "--format": "format",
            "--store": "store",
            "--idempotency-key": "key",
        },
        flags=("--dry-run", "-q"),
    ),
    Command(
        ("export",),
        (),
        {"--format": "format", "--output": "path", "--store": "store"},
        flags=("-q",),
    ),
    Command(("status",), (), {"--format": "format"}, reads_only=True),
    Command(("db", "upgrade"), (), flags=("-q",)),
    Command(("audit", "prune"), (), {"--older-than": "age"}, flags=("-q",)),
    Command(("audit", "verify"), (), flags=("-q",), reads_only=True),
    Command(("seed",), (), {"--stores": "int", "--products": "int"}, flags=("-q",)),
    Command(
        ("worker",),
        (),
        {"--batch-size": "int", "--batch-ms": "int", "--group": "text", "--health-file": "path"},
        flags=("--verbose",),
    ),
    Command(
        ("migrate",),
        (),
        {"--to": "backend", "--to-database-url": "url", "--to-file": "path"},
        required=("--to",),
        flags=("--merge", "-q"),
    ),
)

#: What the postgres run covers: the commands that send user text to SQL.  Not seeding
#: (it would really seed), the worker (it needs Kafka), migrate (a second backend), nor
#: the commands without arguments (init, status, db upgrade, store list, audit verify).
PG_COMMANDS = tuple(
    c
    for c in COMMANDS
    if c.words[0] not in ("seed", "worker", "migrate", "init", "status", "db")
    and c.words not in (("store", "list"), ("audit", "verify"))
)


#: The awkward values most likely to trip each kind of value, drawn as often as random ones.
SHARPER: dict[str, tuple[str, ...]] = {
    "int": AWKWARD_NUMBERS,
    "price": AWKWARD_NUMBERS,
    "time": AWKWARD_TIMES,
    "age": AWKWARD_TIMES,
    "sku": ("a\udcffb", "\udcff", "a\x00b", "MUG-1\u200b", "\u00e9", "e\u0301", "A" * 65),
    "store": ("Bad Code", "NORTH", "n\u200borth", "\udcff", "a" * 65, "main\x00"),
}


@functools.cache
def value_for(kind: str) -> st.SearchStrategy[str]:
    kind = kind.rstrip("?")
    if kind == "path":
        # Paths stay inside the example's folder: an awkward path must not write elsewhere.
        return st.one_of(st.sampled_from(PLAUSIBLE["path"]), awkward_text().map(safe_path))
    sharper = SHARPER.get(kind)
    return st.one_of(
        st.sampled_from(PLAUSIBLE[kind]),
        *([st.sampled_from(sharper)] if sharper else []),
        awkward_text(),
    )


@st.composite
def command_lines(draw: st.DrawFn, commands: tuple[Command, ...]) -> tuple[Command, list[str]]:
    """A command and its argv (without the leading `--file`)."""
    command = draw(st.sampled_from(commands))
    args: list[str] = []
    if draw(st.integers(0, 9)) == 0:
        args += ["--backend", draw(value_for("backend"))]
    if draw(st.integers(0, 9)) == 0:
        args += ["--config", draw(value_for("path"))]
    if draw(st.integers(0, 9)) == 0:
        args += ["--file", draw(value_for("path"))]
    if draw(st.integers(0, 9)) == 0:
        args.append("-q")
    args += command.words
    for kind in command.positional:
        if kind.endswith("?") and draw(st.booleans()):
            continue
        args.append(draw(value_for(kind)))
    names = sorted(command.options)
    chosen = draw(st.lists(st.sampled_from(names), unique=True, max_size=4)) if names else []
    for name in (*command.required, *[n for n in chosen if n not in command.required]):
        args += [name, draw(value_for(command.options[name]))]
    if command.flags:
        args += draw(st.lists(st.sampled_from(command.flags), unique=True))
    return command, args


def may_write(command: Command, args: list[str], code: int) -> bool:
    """Whether this run may leave the data changed."""
    if command.reads_only:
        return False
    if code == 0:
        return True
    # skip-rows applies the good rows and still exits 65 for the bad ones.
    return command.words == ("import",) and code == 65 and "skip-rows" in args


# -- 1. the command line, json backend ------------------------------------------------------


@settings(max_examples=examples(200), deadline=None, suppress_health_check=FIXTURES)
@given(line=command_lines(COMMANDS))
def test_fuzz_command_line_json(shop_template: Path, line: tuple[Command, list[str]]) -> None:
    command, args = line
    with copy_of(shop_template) as work, logging_restored():
        before = snapshot(work)
        argv = ["--file", "inventory.json", *args]
        result = invoke(argv, env=_no_inv_env())
        check(argv, result)
        if not may_write(command, args, result.exit_code):
            changed = changes(before, snapshot(work))
            assert not changed, f"{changed} changed\n{describe(argv, result)}"


# -- 1b. the command line, postgres backend ---------------------------------------------------


_TABLES = """
SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
ORDER BY 1
"""


def _pg_state(url: str) -> dict[str, tuple[int, str | None]]:
    """Each table's row count and a digest of its rows: what a refused command must leave."""
    import psycopg

    state: dict[str, tuple[int, str | None]] = {}
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        for (table,) in conn.execute(_TABLES).fetchall():
            digest = "md5(string_agg(t::text, '|' ORDER BY t::text))"
            row = conn.execute(f'SELECT count(*), {digest} FROM "{table}" t').fetchone()
            assert row is not None
            state[table] = (row[0], row[1])
    return state


def _pg_empty(url: str) -> None:
    """Delete every row but the schema version (triggers off for this session: the audit
    log refuses TRUNCATE otherwise)."""
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        conn.execute("SET session_replication_role = replica")
        tables = [t for (t,) in conn.execute(_TABLES).fetchall() if t != "alembic_version"]
        conn.execute(
            "TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE"
        )


@contextlib.contextmanager
def pg_database() -> Iterator[str]:
    from pg import drop_database, fresh_database

    url = fresh_database()
    try:
        yield url
    finally:
        drop_database(url)


def pg_env(url: str) -> dict[str, str | None]:
    return {**_no_inv_env(), "INV_BACKEND": "postgres", "INV_DATABASE_URL": url}


def pg_shop(url: str) -> None:
    for args in SHOP:
        result = invoke(list(args), env=pg_env(url))
        assert result.exit_code == 0, describe(args, result)


class ShopDatabase:
    """One database holding the shop, shared by a module's tests: `clean()` puts the shop
    back when a test changed it (a new database costs about 0.7 s here, a clean-up only
    when something was written)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.baseline: dict[str, tuple[int, str | None]] = {}

    def clean(self) -> dict[str, tuple[int, str | None]]:
        if not self.baseline or _pg_state(self.url) != self.baseline:
            _pg_empty(self.url)
            pg_shop(self.url)
            self.baseline = _pg_state(self.url)
        return self.baseline


@pytest.fixture(scope="module")
def shop_db() -> Iterator[ShopDatabase]:
    with pg_database() as url:
        yield ShopDatabase(url)


@settings(max_examples=examples(40), deadline=None, suppress_health_check=FIXTURES)
@given(line=command_lines(PG_COMMANDS))
def test_fuzz_command_line_postgres(shop_db: ShopDatabase, line: tuple[Command, list[str]]) -> None:
    command, args = line
    before = shop_db.clean()
    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):
        (Path(tmp) / "good.csv").write_text(GOOD_CSV, encoding="utf-8")
        result = invoke(args, env=pg_env(shop_db.url))
        check(args, result)
        if not may_write(command, args, result.exit_code):
            after = _pg_state(shop_db.url)
            assert after == before, f"the database changed\n{describe(args, result)}"


# -- 2. settings: INV_* variables and TOML files ---------------------------------------------


def _env_safe(value: str) -> bool:
    """What an environment variable can hold: no NUL, and encodable by the OS."""
    if "\x00" in value:
        return False
    try:
        os.fsencode(value)
    except UnicodeEncodeError:
        return False
    return True


_NUMBERS = ("0", "-1", "nan", "inf", "-inf", "1e999", "0.001", "30", "1_0", "\u0663", "")
_URLS = (
    "postgresql://[::1",
    "postgresql://postgres@127.0.0.1:99999/x",
    "postgresql://postgres@127.0.0.1:1/x?foo=bar",
    "postgresql://postgres@127.0.0.1:1/x",
    "postgresql://postgres@127.0.0.1:abc/x",
    "postgres ql://x",
    "mysql://x@127.0.0.1/x",
    "redis://127.0.0.1:1/0",
    "redis://[::1",
    "",
    ",,",
)
ENV_VALUES: dict[str, tuple[str, ...]] = {
    "INV_BACKEND": ("json", "JSON", " json", "postgres", "kafka", "http", ""),
    "INV_FILE": ("inventory.json", "", ".", "missing.json", "good.csv"),
    "INV_ACTOR": ("ana", "a\nb", "\x1b[31m", "a" * 5000, "a\udcffb", "\u200b", ""),
    "INV_LOCK_TIMEOUT": _NUMBERS,
    "INV_DATABASE_URL": _URLS,
    "INV_READ_DATABASE_URLS": _URLS,
    "INV_REDIS_URL": _URLS,
    "INV_KAFKA_BOOTSTRAP_SERVERS": ("127.0.0.1:1", "", ",", "[::1"),
    "INV_KAFKA_TOPIC": ("inventory-events", "", "a" * 300, "bad topic"),
    "INV_KAFKA_PARTITIONS": _NUMBERS,
    "INV_KAFKA_GROUP": ("g", ""),
    "INV_KAFKA_TIMEOUT": ("0.5", "0", "-1", "nan", ""),
    "INV_KAFKA_SESSION_TIMEOUT_MS": _NUMBERS,
    "INV_WAIT_TIMEOUT": _NUMBERS,
    "INV_CACHE_TTL": _NUMBERS,
    "INV_CACHE_PREFIX": ("inv", "", "a:b"),
    "INV_WORKER_BATCH_SIZE": _NUMBERS,
    "INV_WORKER_BATCH_MS": _NUMBERS,
    "INV_URL": ("http://127.0.0.1:1", "", "::"),
    "INV_TOKEN": ("t", ""),
    "INV_CONFIG": ("", "missing.toml", ".", "good.csv", "inventory.json"),
}

#: Commands the settings fuzzers run: reads and writes, each fast to refuse when a
#: service is unreachable (every URL above fails at once, none waits for a timeout).
SETTINGS_COMMANDS: tuple[tuple[Command, tuple[str, ...]], ...] = (
    (COMMANDS[6], ("list",)),
    (COMMANDS[7], ("show", "MUG-1")),
    (COMMANDS[8], ("history", "MUG-1")),
    (COMMANDS[1], ("add", "New", "--price", "1", "--qty", "2")),
    (COMMANDS[4], ("update", "MUG-1", "--change", "-1")),
    (COMMANDS[9], ("store", "add", "south")),
)


@functools.cache
def env_values(name: str) -> st.SearchStrategy[str]:
    values = st.one_of(
        st.sampled_from(ENV_VALUES[name]), st.sampled_from(AWKWARD_NUMBERS), awkward_text()
    )
    if name in ("INV_FILE", "INV_CONFIG"):
        values = st.one_of(st.sampled_from(ENV_VALUES[name]), awkward_text().map(safe_path))
    if name in ("INV_DATABASE_URL", "INV_READ_DATABASE_URLS", "INV_REDIS_URL", "INV_URL"):
        values = st.sampled_from(ENV_VALUES[name])  # nothing that could reach a real host
    return values.filter(_env_safe)


@st.composite
def environments(draw: st.DrawFn) -> dict[str, str | None]:
    names = draw(st.lists(st.sampled_from(sorted(ENV_VALUES)), unique=True, min_size=1))
    env = _no_inv_env()
    for name in names:
        env[name] = draw(env_values(name))
    return env


@settings(max_examples=examples(80), deadline=None, suppress_health_check=FIXTURES)
@given(env=environments(), which=st.sampled_from(SETTINGS_COMMANDS))
def test_fuzz_environment(
    shop_template: Path,
    env: dict[str, str | None],
    which: tuple[Command, tuple[str, ...]],
) -> None:
    command, args = which
    with copy_of(shop_template) as work:
        before = snapshot(work)
        result = invoke(list(args), env=env)
        shown = {k: v for k, v in env.items() if v is not None}
        check([*args, f"env={shown!r}"], result)
        if not may_write(command, list(args), result.exit_code):
            changed = changes(before, snapshot(work))
            assert not changed, f"{changed} changed\n{describe(args, result)}\nenv={shown!r}"


# TOML: a small writer, so the fuzzer can make valid files with values of the wrong type.

SETTING_KEYS = (
    "backend",
    "file",
    "actor",
    "lock_timeout",
    "database_url",
    "read_database_urls",
    "redis_url",
    "kafka_bootstrap_servers",
    "kafka_topic",
    "kafka_partitions",
    "kafka_group",
    "kafka_timeout",
    "kafka_session_timeout_ms",
    "wait_timeout",
    "cache_ttl",
    "cache_prefix",
    "worker_batch_size",
    "worker_batch_ms",
    "url",
    "token",
)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:
            return "nan"
        if value in (float("inf"), float("-inf")):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # TOML basic strings take JSON's escapes
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


_toml_scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(),
    awkward_text(max_size=20),
    st.sampled_from(["json", "postgres", "inventory.json", "30", "postgresql://[::1"]),
    st.datetimes(),
    st.dates(),
    st.times(),
)
toml_values = st.recursive(
    _toml_scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["a", "b"]), inner, max_size=2)
    ),
    max_leaves=6,
)


@st.composite
def toml_documents(draw: st.DrawFn) -> bytes:
    keys = draw(
        st.lists(
            st.sampled_from([*SETTING_KEYS, "bogus", "Backend", "file.x"]),
            unique=True,
            max_size=5,
        )
    )
    lines = [f"{json.dumps(k)} = {toml_value(draw(toml_values))}" for k in keys]
    text = "\n".join(lines) + "\n"
    return text.encode("utf-8", "surrogatepass")


def toml_problem(raw: bytes) -> bool:
    """Whether a config file is unusable whatever the settings code does with its values:
    not UTF-8, not TOML, or a key that is not a setting."""
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        return True
    return any(key not in SETTING_KEYS for key in data)


@settings(max_examples=examples(80), deadline=None, suppress_health_check=FIXTURES)
@given(
    raw=st.one_of(toml_documents(), st.binary(max_size=300)),
    which=st.sampled_from(SETTINGS_COMMANDS),
)
def test_fuzz_config_file(
    shop_template: Path, raw: bytes, which: tuple[Command, tuple[str, ...]]
) -> None:
    command, args = which
    with copy_of(shop_template) as work:
        (work / "fuzz.toml").write_bytes(raw)
        before = snapshot(work)
        argv = ["--config", "fuzz.toml", *args]
        result = invoke(argv, env=_no_inv_env())
        check([*argv, f"config={raw[:300]!r}"], result)
        if toml_problem(raw):
            assert result.exit_code == 78, f"config {raw!r}\n{describe(argv, result)}"
        if not may_write(command, list(args), result.exit_code):
            changed = changes(before, snapshot(work))
            assert not changed, f"{changed} changed\n{describe(argv, result)}\nconfig={raw!r}"


# -- 3. import files -------------------------------------------------------------------------

_IMPORT_COLUMNS = (*COLUMNS, "bogus", "SKU", " sku ", "")

json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.sampled_from([10**30, -(10**30), 2**31, 2**63]),
        st.floats(),
        awkward_text(max_size=30, any_surrogate=True),
        st.sampled_from(["MUG-1", "main", "north", "4.50", "1", "-1", "1_0", "\u0663"]),
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=5,
)


@st.composite
def csv_files(draw: st.DrawFn) -> bytes:
    header = draw(st.lists(st.sampled_from(_IMPORT_COLUMNS), min_size=1, max_size=6))
    if draw(st.booleans()) and "sku" not in header:
        header = ["sku", *header]
    rows = draw(
        st.lists(
            st.lists(
                st.one_of(st.sampled_from(["", "MUG-1", "main", "1", "4.50"]), awkward_text()),
                min_size=0,
                max_size=len(header) + 1,
            ),
            max_size=5,
        )
    )
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    writer.writerow(header)
    writer.writerows(rows)
    prefix = "\ufeff" if draw(st.booleans()) else ""
    return (prefix + out.getvalue()).encode("utf-8", "surrogatepass")


@st.composite
def jsonl_files(draw: st.DrawFn) -> bytes:
    lines: list[str] = []
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.integers(0, 9))
        if kind == 0:
            lines.append(json.dumps(draw(json_values)))
        elif kind == 1:
            lines.append(draw(awkward_text()).replace("\n", " "))
        else:
            keys = draw(st.lists(st.sampled_from(_IMPORT_COLUMNS), max_size=6, unique=True))
            row = {k: draw(json_values) for k in keys}
            if draw(st.booleans()):
                row["sku"] = draw(st.sampled_from(["MUG-1", "NEW-1", "mug-1"]))
            lines.append(json.dumps(row))
    return "\n".join(lines).encode("utf-8", "surrogatepass")


def non_utf8(raw: bytes) -> bool:
    try:
        raw.removeprefix(b"\xef\xbb\xbf").decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


IMPORT_OPTIONS = st.lists(
    st.sampled_from(["--dry-run", "--on-error=skip-rows", "--on-error=reject-all", "-q"]),
    unique=True,
    max_size=2,
)


def _check_import(work: Path, argv: list[str], raw: bytes, result: Result, before: Any) -> None:
    shown = [*argv, f"file={raw[:300]!r}"]
    check(shown, result)
    # The file exists and the options are good: the rows decide, 0 or 65.
    assert result.exit_code in (0, 65), describe(shown, result)
    if non_utf8(raw):
        assert result.exit_code == 65, describe(shown, result)
    writes = result.exit_code == 0 or "--on-error=skip-rows" in argv
    if "--dry-run" in argv or not writes:
        changed = changes(before, snapshot(work))
        assert not changed, f"{changed} changed\n{describe(shown, result)}"


@settings(max_examples=examples(120), deadline=None, suppress_health_check=FIXTURES)
@given(
    fmt=st.sampled_from(["csv", "jsonl"]),
    data=st.data(),
    options=IMPORT_OPTIONS,
    from_stdin=st.booleans(),
)
def test_fuzz_import(
    shop_template: Path, fmt: str, data: st.DataObject, options: list[str], from_stdin: bool
) -> None:
    raw = data.draw(
        st.one_of(csv_files() if fmt == "csv" else jsonl_files(), st.binary(max_size=500)),
        label="file",
    )
    with copy_of(shop_template) as work:
        before = snapshot(work)
        if from_stdin:
            argv = ["--file", "inventory.json", "import", "-", "--format", fmt, *options]
            result = invoke(argv, input=raw, env=_no_inv_env())
        else:
            before = {**before, f"rows.{fmt}": raw}
            (work / f"rows.{fmt}").write_bytes(raw)
            argv = ["--file", "inventory.json", "import", f"rows.{fmt}", *options]
            result = invoke(argv, env=_no_inv_env())
        _check_import(work, argv, raw, result, before)


# -- 4. the JSON inventory file ----------------------------------------------------------------

READS: tuple[tuple[str, ...], ...] = (
    ("list",),
    ("list", "--format", "json", "--sort", "value"),
    ("show", "MUG-1"),
    ("history",),
    ("history", "MUG-1", "--since", "0001-01-01"),
    ("store", "list"),
    ("report", "value"),
    ("report", "low-stock"),
    ("report", "movements"),
    ("export",),
    ("audit", "verify"),
)
WRITES: tuple[tuple[str, ...], ...] = (
    ("init",),
    ("add", "New", "--price", "1", "--qty", "2"),
    ("update", "MUG-1", "--change", "-1"),
    ("update", "MUG-1", "--set", "4", "--idempotency-key", "k-used"),
    ("edit", "MUG-1", "--price", "5"),
    ("remove", "TT-1"),
    ("transfer", "MUG-1", "--from", "main", "--to", "north", "--qty", "1"),
    ("store", "add", "south"),
    ("store", "remove", "north", "--force"),
    ("import", "good.csv"),
    ("export", "-o", "out.csv"),
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


def _mutate(doc: Any, path: tuple[Any, ...], op: str, new: Any, key: str) -> Any:
    if not path:
        return new
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    if op == "replace":
        parent[last] = new
    elif op == "delete":
        del parent[last]
    elif op == "add" and isinstance(parent[last], dict):
        parent[last][key] = new
    elif op == "rename" and isinstance(parent, dict):
        parent[key] = parent.pop(last)
    else:
        parent[last] = new
    return doc


@st.composite
def damaged_files(draw: st.DrawFn, original: bytes) -> bytes:
    """inventory.json after one random change: a JSON value anywhere, or raw bytes."""
    if draw(st.integers(0, 3)) == 0:
        at = draw(st.integers(0, len(original)))
        how = draw(st.sampled_from(["truncate", "insert", "overwrite"]))
        junk = draw(st.binary(min_size=1, max_size=8))
        if how == "truncate":
            return original[:at]
        if how == "insert":
            return original[:at] + junk + original[at:]
        return original[:at] + junk + original[at + len(junk) :]
    doc = json.loads(original)
    paths = list(_paths(doc))
    path = draw(st.sampled_from(paths))
    op = draw(st.sampled_from(["replace", "delete", "add", "rename"]))
    key = draw(st.one_of(st.sampled_from(["mug-1", "Bad Code", "a", "A", ""]), st.text()))
    doc = _mutate(doc, path, op, draw(json_values), key)
    return json.dumps(doc, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")


@settings(max_examples=examples(120), deadline=None, suppress_health_check=FIXTURES)
@given(data=st.data(), args=st.sampled_from(READS + WRITES))
def test_fuzz_inventory_file(
    shop_template: Path, data: st.DataObject, args: tuple[str, ...]
) -> None:
    original = (shop_template / "inventory.json").read_bytes()
    raw = data.draw(damaged_files(original), label="inventory.json")
    with copy_of(shop_template) as work:
        (work / "inventory.json").write_bytes(raw)
        before = snapshot(work)
        argv = ["--file", "inventory.json", *args]
        result = invoke(argv, env=_no_inv_env())
        check([*argv, f"inventory.json={raw[:400]!r}"], result)
        if result.exit_code != 0 or args in READS:
            changed = changes(before, snapshot(work))
            assert not changed, f"{changed} changed\n{describe(argv, result)}\nfile={raw!r}"


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A damage: set the value at a path such as `products|MUG-1|stock|main`."""

    def damage(doc: dict[str, Any]) -> None:
        *parents, last = path.split("|")
        target = doc
        for part in parents:
            target = target[part]
        target[last] = value

    return damage


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    def damage(doc: dict[str, Any]) -> None:
        *parents, last = path.split("|")
        target = doc
        for part in parents:
            target = target[part]
        del target[last]

    return damage


def _copy_product(*skus: str) -> Callable[[dict[str, Any]], None]:
    """A damage: more products, copies of MUG-1 under these keys."""

    def damage(doc: dict[str, Any]) -> None:
        for sku in skus:
            doc["products"][sku] = json.loads(json.dumps(doc["products"]["MUG-1"]))

    return damage


def _add_store(code: str) -> Callable[[dict[str, Any]], None]:
    def damage(doc: dict[str, Any]) -> None:
        doc["stores"][code] = "Somewhere"

    return damage


def _nested(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


#: Damage that makes the file unusable: every command must exit 78 and leave it as it was.
#: (description, change to the parsed document)
DAMAGES: tuple[tuple[str, Callable[[dict[str, Any]], None]], ...] = (
    ("schema_version is text", _set("schema_version", "1")),
    ("schema_version is true", _set("schema_version", True)),
    ("schema_version is a float", _set("schema_version", 1.0)),
    ("next_sku is text", _set("next_sku", "2")),
    ("next_sku is true", _set("next_sku", True)),
    ("next_sku is null", _set("next_sku", None)),
    ("audit is a list", _set("audit", [])),
    ("audit.entries is text", _set("audit|entries", "3")),
    ("audit.entries is true", _set("audit|entries", True)),
    ("audit.bytes is a float", _set("audit|bytes", 1.5)),
    ("audit.bytes is 10**30", _set("audit|bytes", 10**30)),
    ("stores is a list", _set("stores", [])),
    ("store main is missing", _delete("stores|main")),
    ("store name is a number", _set("stores|north", 5)),
    ("store code 'Bad Code'", _add_store("Bad Code")),
    ("store code 'NORTH'", _add_store("NORTH")),
    ("store code ''", _add_store("")),
    ("products is a list", _set("products", [])),
    ("product is a list", _set("products|MUG-1", [])),
    ("SKUs MUG-1 and mug-1 both present", _copy_product("mug-1")),
    ("SKUs A and a both present", _copy_product("A", "a")),
    ("SKUs NFC and NFD of the same text", _copy_product("\u00e9", "e\u0301")),
    ("SKU is empty", _copy_product("")),
    ("SKU has a NUL", _copy_product("X\x00")),
    ("SKU is 65 characters", _copy_product("A" * 65)),
    ("name is a number", _set("products|MUG-1|name", 5)),
    ("name is empty", _set("products|MUG-1|name", "")),
    ("name has a control character", _set("products|MUG-1|name", "a\x1bb")),
    ("price is a float", _set("products|MUG-1|price", 4.5)),
    ("price is not a number", _set("products|MUG-1|price", "abc")),
    ("price is negative", _set("products|MUG-1|price", "-1.00")),
    ("price has 3 decimals", _set("products|MUG-1|price", "4.505")),
    ("price has 30 digits", _set("products|MUG-1|price", "1" * 27 + ".123")),
    ("unit is a list", _set("products|MUG-1|unit", [])),
    ("category is a number", _set("products|MUG-1|category", 5)),
    ("reorder_level is text", _set("products|MUG-1|reorder_level", "5")),
    ("reorder_level is true", _set("products|MUG-1|reorder_level", True)),
    ("reorder_level is negative", _set("products|MUG-1|reorder_level", -1)),
    ("reorder_level is 10**30", _set("products|MUG-1|reorder_level", 10**30)),
    ("stock is a list", _set("products|MUG-1|stock", [])),
    ("a quantity is text", _set("products|MUG-1|stock|main", "10")),
    ("a quantity is a float", _set("products|MUG-1|stock|main", 1.5)),
    ("a quantity is true", _set("products|MUG-1|stock|main", True)),
    ("a quantity is null", _set("products|MUG-1|stock|main", None)),
    ("a quantity is negative", _set("products|MUG-1|stock|main", -1)),
    ("a quantity is 10**30", _set("products|MUG-1|stock|main", 10**30)),
    ("a quantity is nested 500 deep", _set("products|MUG-1|stock|main", _nested(500))),
    ("stock at an unknown store", _set("products|MUG-1|stock|ghost", 1)),
    ("events is a list", _set("events", [])),
    ("an event is a number", _set("events|k-used", 5)),
    ("an event is empty", _set("events|k-used", {})),
    ("an event's fields have the wrong types", _set("events|k-used", {"fp": 1, "audit": "x"})),
)

#: Damage to the text itself: a 5,000-digit integer, 100,000 levels of nesting, bytes
#: that are not UTF-8.
RAW_DAMAGES: tuple[tuple[str, Callable[[bytes], bytes]], ...] = (
    (
        "a 5,000-digit integer",
        lambda raw: raw.replace(b'"next_sku":', b'"next_sku":' + b"9" * 5000 + b',"x":', 1),
    ),
    (
        "a quantity of 5,000 digits",
        lambda raw: raw.replace(b'"main":10', b'"main":' + b"1" * 5000, 1),
    ),
    (
        "an object nested 100,000 deep",
        lambda raw: raw.replace(
            b'"category":"Kitchen"', b'"category":' + b"[" * 100_000 + b"]" * 100_000, 1
        ),
    ),
    (
        "objects nested 100,000 deep",
        lambda raw: raw.replace(
            b'"events":{',
            b'"events":{"deep":' + b'{"a":' * 100_000 + b"1" + b"}" * 100_000 + b",",
            1,
        ),
    ),
    ("bytes that are not UTF-8", lambda raw: raw.replace(b"Blue mug", b"Blue \xff\xfe mug", 1)),
    ("a lone surrogate escape", lambda raw: raw.replace(b"Blue mug", b"Blue \\udc80 mug", 1)),
    ("NaN as a quantity", lambda raw: raw.replace(b'"main":10', b'"main":NaN', 1)),
    ("Infinity as a quantity", lambda raw: raw.replace(b'"main":10', b'"main":Infinity', 1)),
    ("a 1e999 quantity", lambda raw: raw.replace(b'"main":10', b'"main":1e999', 1)),
    ("a duplicate key", lambda raw: raw.replace(b'"main":10', b'"main":10,"main":-5', 1)),
    ("an empty file", lambda raw: b""),
    ("a truncated file", lambda raw: raw[: len(raw) // 2]),
)

#: What the damage tests run on each damaged file (the random damage test runs them all).
STRICT_COMMANDS: tuple[tuple[str, ...], ...] = (
    ("list",),
    ("history",),
    ("init",),
    ("add", "New", "--price", "1", "--qty", "2"),
    ("update", "MUG-1", "--set", "4", "--idempotency-key", "k-used"),
)


def _compact(shop_template: Path) -> bytes:
    """The shop's inventory.json in compact form, so raw damages find their anchors."""
    return json.dumps(
        read_doc(shop_template / "inventory.json"), ensure_ascii=False, separators=(",", ":")
    ).encode()


def _all_refused(work: Path, raw: bytes) -> list[str]:
    """Run every command on the damaged file; return what broke the rule (78, untouched)."""
    (work / "inventory.json").write_bytes(raw)
    failures: list[str] = []
    for args in STRICT_COMMANDS:
        before = snapshot(work)
        argv = ["--file", "inventory.json", *args]
        result = invoke(argv, env=_no_inv_env())
        changed = changes(before, snapshot(work))
        what = crash_summary(result)
        lines = error_lines(result)
        if (
            result.exit_code != 78
            or what
            or changed
            or len(lines) != 1
            or not lines[0].startswith("Error: ")
        ):
            failures.append(
                f"inv {' '.join(args)} -> {result.exit_code} {what} "
                f"{result.stderr.strip()[:160]!r}{' CHANGED ' + str(changed) if changed else ''}"
            )
    return failures


@pytest.mark.parametrize(("what", "damage"), DAMAGES, ids=[d[0] for d in DAMAGES])
def test_damaged_inventory_file_is_refused_by_every_command(
    shop: Path, what: str, damage: Callable[[dict[str, Any]], None]
) -> None:
    doc = read_doc(shop / "inventory.json")
    damage(doc)
    write_doc(shop / "inventory.json", doc)
    failures = _all_refused(shop, (shop / "inventory.json").read_bytes())
    assert not failures, f"{what}: expected exit 78, file untouched:\n" + "\n".join(failures)


@pytest.mark.parametrize(("what", "damage"), RAW_DAMAGES, ids=[d[0] for d in RAW_DAMAGES])
def test_damaged_inventory_text_is_refused_by_every_command(
    shop: Path, shop_template: Path, what: str, damage: Callable[[bytes], bytes]
) -> None:
    original = _compact(shop_template)
    raw = damage(original)
    assert raw != original or what == "an empty file", f"{what}: the damage found no anchor"
    failures = _all_refused(shop, raw)
    assert not failures, f"{what}: expected exit 78, file untouched:\n" + "\n".join(failures)


# -- 5. Kafka events ---------------------------------------------------------------------------

VALID_EVENT: dict[str, Any] = {
    "v": 1,
    "message_id": "0b6f3c53-1c2b-4a37-9a0e-0d6d8b1e5e10",
    "event_id": "pos-0042",
    "type": "stock.adjust",
    "store": "main",
    "sku": "MUG",
    "delta": -2,
    "quantity": None,
    "to_store": None,
    "expect": 12,
    "reason": "sale",
    "actor": "ana",
    "source": "cli",
    "at": "2026-11-25T10:00:00.000000Z",
    "fingerprint": "stock.adjust|main|mug|-2|12|sale",
}


def _decodes_or_refuses(raw: bytes) -> None:
    try:
        event = decode(raw)
    except MalformedEvent:
        return
    except Exception as exc:  # any other exception is the bug
        pytest.fail(f"decode({raw[:300]!r}) raised {type(exc).__name__}: {exc}")
    assert isinstance(event, Event)
    assert decode(event.encode()) == event, "an accepted event does not survive a round trip"


def test_the_valid_event_decodes() -> None:
    event = decode(json.dumps(VALID_EVENT).encode())
    assert event.sku == "MUG" and event.delta == -2


@settings(max_examples=examples(150), deadline=None, suppress_health_check=FIXTURES)
@given(raw=st.binary(max_size=300))
def test_fuzz_decode_bytes(raw: bytes) -> None:
    _decodes_or_refuses(raw)


_event_fields = st.sampled_from([*VALID_EVENT, "extra"])


@settings(max_examples=examples(250), deadline=None, suppress_health_check=FIXTURES)
@given(
    changed=st.dictionaries(_event_fields, json_values, max_size=4),
    dropped=st.lists(_event_fields, max_size=2),
    kind=st.sampled_from(["stock.adjust", "stock.set", "stock.transfer"]),
    ascii_only=st.booleans(),
)
def test_fuzz_decode_objects(
    changed: dict[str, Any], dropped: list[str], kind: str, ascii_only: bool
) -> None:
    event = {**VALID_EVENT, "type": kind, **changed}
    for name in dropped:
        event.pop(name, None)
    raw = json.dumps(event, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    _decodes_or_refuses(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"v": 1, "delta": ' + b"9" * 5000 + b"}",
        json.dumps(VALID_EVENT).encode().replace(b'"delta": -2', b'"delta": ' + b"9" * 5000),
        b'{"v": 1, "sku": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        json.dumps({**VALID_EVENT, "at": "9999-12-31T23:59-01:00"}).encode(),
        json.dumps({**VALID_EVENT, "at": "0001-01-01T00:00+01:00"}).encode(),
        json.dumps({**VALID_EVENT, "v": True}).encode(),
        json.dumps({**VALID_EVENT, "delta": True}).encode(),
        json.dumps({**VALID_EVENT, "delta": 1.0}).encode(),
        json.dumps({**VALID_EVENT, "expect": float("nan")}).encode(),
        json.dumps({**VALID_EVENT, "sku": "\ud800"}).encode(),
        b'{"v": 1, "sku": "\xff"}',
        b"\xef\xbb\xbf" + json.dumps(VALID_EVENT).encode(),
        json.dumps(VALID_EVENT).encode("utf-16"),
    ],
    ids=lambda raw: raw[:30].decode("latin-1"),
)
def test_decode_awkward_events(raw: bytes) -> None:
    _decodes_or_refuses(raw)


# ============================================================================================
# Regression tests: each input below was seen to break the promise.
# ============================================================================================

PRICE_30_DIGITS = "1" * 27 + ".123"  # 30 digits: more than Decimal's 28-digit context


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("add", "X", "--price", PRICE_30_DIGITS), 1),
        (("add", "X", "--price", "9" * 30 + ".001"), 1),
        (("edit", "MUG-1", "--price", PRICE_30_DIGITS), 1),
        (("history", "--since", "999999999d"), 1),
        (("history", "--since", "99999999999999999999s"), 1),
        (("report", "movements", "--since", "999999999d"), 1),
        (("history", "--since", "0001-01-01T00:00+01:00"), 1),
        (("history", "--since", "9999-12-31T23:59-01:00"), 1),
        (("report", "movements", "--since", "0001-01-01T00:00+01:00"), 1),
        (("report", "movements", "--until", "9999-12-31T23:59-01:00"), 1),
        (("audit", "prune", "--older-than", "99999999999y"), 1),
        (("audit", "prune", "--older-than", "99999mo"), 1),
        (("audit", "prune", "--older-than", "99999999999mo"), 1),
        (("audit", "prune", "--older-than", "999999999999d"), 1),
        (("add", "X", "--price", "1", "--qty", "1_000"), 2),
        (("add", "X", "--price", "1", "--qty", "\u0663"), 2),
        (("add", "X", "--price", "1", "--qty", "\uff13"), 2),
        (("update", "MUG-1", "--change", "1_0"), 2),
        (("update", "MUG-1", "--set", "1_0"), 2),
        (("update", "MUG-1", "--set", "\u0663"), 2),
        (("add", "X", "--price", "1", "--reorder-level", "1_0"), 2),
        (("transfer", "MUG-1", "--from", "main", "--to", "north", "--qty", "1_0"), 2),
        (("list", "--limit", "1_0"), 2),
        # Prices follow the same grammar as quantities: ASCII digits only (my reading of
        # DESIGN.md's "the grammar of every value ... written once").
        (("add", "X", "--price", "1_0"), 1),
        (("add", "X", "--price", "\u0663"), 1),
        (("add", "X", "--price", "\uff11\uff12"), 1),
        (("edit", "MUG-1", "--price", "1_0"), 1),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, tuple) else str(v),
)
def test_argument_regressions(shop: Path, args: tuple[str, ...], code: int) -> None:
    before = snapshot(shop)
    argv = ["--file", "inventory.json", *args]
    result = invoke(argv, env=_no_inv_env())
    if code == 2:
        check(argv, result)
        assert result.exit_code == 2, describe(argv, result)
    else:
        one_error(argv, result, code)
    assert not changes(before, snapshot(shop))


def test_since_year_one_works(shop: Path) -> None:
    for args in (
        ("history", "--since", "0001-01-01"),
        ("report", "movements", "--since", "0001-01-01"),
    ):
        result = inv(shop, *args)
        check(args, result)
        assert result.exit_code == 0, describe(args, result)


def test_price_minus_zero_is_stored_as_zero(shop: Path) -> None:
    """`--price -0` is zero: refused, or kept as "0.00", never "-0.00"."""
    result = inv(shop, "add", "Free thing", "--price", "-0", "--sku", "FREE")
    check(["add", "--price", "-0"], result)
    if result.exit_code == 0:
        shown = inv(shop, "show", "FREE", "--format", "json")
        assert json.loads(shown.stdout)["price"] == "0.00", shown.stdout
        assert "-0.00" not in result.stdout, result.stdout
    else:
        assert result.exit_code == 1


@pytest.mark.parametrize(
    "args",
    [
        ("--file", "", "list"),
        ("--file", "", "init"),
        ("--file", "", "add", "X", "--price", "1"),
        ("--file", ".", "list"),
        ("--file", "/", "list"),
        ("--file", "a" * 300, "list"),
        ("--file", "a" * 300, "init"),
        ("--file", "good.csv/inventory.json", "list"),
    ],
    ids=[
        "empty-list",
        "empty-init",
        "empty-add",
        "dot",
        "root",
        "too-long-list",
        "too-long-init",
        "under-a-file",
    ],
)
def test_unusable_file_setting_exits_78(shop: Path, args: tuple[str, ...]) -> None:
    before = snapshot(shop)
    one_error(args, invoke(list(args), env=_no_inv_env()), 78)
    assert not changes(before, snapshot(shop))


def test_a_file_name_that_is_not_utf8_is_no_crash(shop: Path) -> None:
    """A non-UTF-8 byte in a file name (a lone surrogate in argv) is echoed, not a crash."""
    name = "inv-\udcff.json"
    for argv in (
        ["--file", name, "init"],
        ["--file", name, "list"],
        ["--file", "inventory.json", "export", "-o", "x\udcff.csv"],
        ["--file", "inventory.json", "import", "x\udcff.csv", "--dry-run"],
    ):
        result = invoke(argv, env=_no_inv_env())
        check(argv, result)
        assert result.exit_code == 0, describe(argv, result)


@pytest.mark.parametrize("target", ["folder", "empty", "dot"])
def test_export_to_a_folder_is_not_a_retry(shop: Path, target: str) -> None:
    (shop / "folder").mkdir()
    path = {"folder": str(shop / "folder"), "empty": "", "dot": "."}[target]
    before = snapshot(shop)
    argv = ["--file", "inventory.json", "export", "-o", path]
    result = invoke(argv, env=_no_inv_env())
    one_error(argv, result, result.exit_code)
    assert result.exit_code == 77, describe(argv, result)
    assert not changes(before, snapshot(shop))


# -- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "args"),
    [
        ("INV_LOCK_TIMEOUT", "0", ("list",)),
        ("INV_LOCK_TIMEOUT", "nan", ("list",)),
        ("INV_LOCK_TIMEOUT", "-1", ("list",)),
        ("INV_LOCK_TIMEOUT", "nan", ("add", "X", "--price", "1")),
        ("INV_LOCK_TIMEOUT", "-inf", ("add", "X", "--price", "1")),
        ("INV_ACTOR", "ana\nbob", ("add", "X", "--price", "1")),
        ("INV_ACTOR", "a" * 5000, ("add", "X", "--price", "1")),
        ("INV_ACTOR", "ana\x1b[31m", ("add", "X", "--price", "1")),
        ("INV_ACTOR", "ana\udcff", ("add", "X", "--price", "1")),
        ("INV_ACTOR", "ana\udcff", ("update", "MUG-1", "--change", "1")),
        ("INV_FILE", "", ("list",)),
    ],
    ids=lambda v: (
        repr(v)[:30] if isinstance(v, str) else " ".join(v) if isinstance(v, tuple) else v
    ),
)
def test_bad_settings_exit_78(shop: Path, name: str, value: str, args: tuple[str, ...]) -> None:
    before = snapshot(shop)
    one_error(args, invoke(list(args), env={**_no_inv_env(), name: value}), 78)
    assert not changes(before, snapshot(shop))


@pytest.mark.parametrize(
    ("text", "code"),
    [
        (b'backend = "json"\nactor = "\xff\xfe"\n', 78),
        (b"\xff\xfe\x00b\x00", 78),
        (b"lock_timeout = nan\n", 78),
        (b"lock_timeout = -1\n", 78),
        (b'actor = "ana\\nbob"\n', 78),
        (b"file = 5\n", 78),
        (b"bogus = 1\n", 78),
    ],
    ids=["not-utf8", "utf16", "lock-nan", "lock-negative", "actor-newline", "file-int", "unknown"],
)
def test_bad_config_file(shop: Path, text: bytes, code: int) -> None:
    (shop / "bad.toml").write_bytes(text)
    before = snapshot(shop)
    argv = ["--config", "bad.toml", "add", "X", "--price", "1"]
    one_error(argv, invoke(argv, env=_no_inv_env()), code)
    assert not changes(before, snapshot(shop))


def test_config_path_is_a_folder(shop: Path) -> None:
    (shop / "conf.d").mkdir()
    argv = ["--config", "conf.d", "list"]
    result = invoke(argv, env=_no_inv_env())
    one_error(argv, result, result.exit_code)
    assert result.exit_code == 78, describe(argv, result)


def _unreadable(path: Path) -> None:
    if not can_drop_capabilities():
        unavailable(  # a skip, but a failure under CI=true
            "running as root without CAP_SETPCAP: cannot start a process that permission "
            "bits apply to, so no file can be made unreadable"
        )
    path.chmod(0)


@pytest.mark.parametrize("how", ["./inv.toml", "--config", "INV_CONFIG"])
def test_unreadable_config_file_exits_77(shop: Path, how: str) -> None:
    (shop / "inv.toml").write_text('backend = "json"\n', encoding="utf-8")
    _unreadable(shop / "inv.toml")
    args = ["--config", "inv.toml", "list"] if how == "--config" else ["list"]
    env = {"INV_CONFIG": "inv.toml"} if how == "INV_CONFIG" else {}
    proc = run_unprivileged(args, cwd=shop, env=env)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 77, (proc.returncode, proc.stderr)
    assert proc.stderr.startswith("Error: ") and proc.stderr.count("\n") == 1, proc.stderr


def test_unreadable_audit_trail_exits_77(shop: Path) -> None:
    _unreadable(shop / "inventory.audit.jsonl")
    for args in (("history",), ("audit", "verify")):
        proc = run_unprivileged(["--file", "inventory.json", *args], cwd=shop)
        assert "Traceback" not in proc.stderr, proc.stderr
        assert proc.returncode == 77, (args, proc.returncode, proc.stderr)
        assert proc.stderr.startswith("Error: ") and proc.stderr.count("\n") == 1, proc.stderr


@pytest.mark.parametrize(
    "args", [("history",), ("audit", "verify"), ("update", "MUG-1", "--change", "1")]
)
def test_audit_trail_that_is_a_folder(shop: Path, args: tuple[str, ...]) -> None:
    (shop / "inventory.audit.jsonl").unlink()
    (shop / "inventory.audit.jsonl").mkdir()
    before = snapshot(shop)
    argv = ["--file", "inventory.json", *args]
    result = invoke(argv, env=_no_inv_env())
    one_error(argv, result, result.exit_code)
    assert result.exit_code == 78, describe(argv, result)
    assert not changes(before, snapshot(shop))


# -- import files --------------------------------------------------------------------------------

HUGE_INT_ROW = b'{"sku": "BIG", "name": "n", "price": "1", "quantity": ' + b"9" * 5000 + b"}\n"
DEEP_ROW = b'{"sku": "DEEP", "name": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n"
DEEP_OBJECT_ROW = b'{"sku": "DEEP", "name": ' + b'{"a":' * 100_000 + b"1" + b"}" * 100_000 + b"}\n"


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("big.jsonl", HUGE_INT_ROW),
        ("deep.jsonl", DEEP_ROW),
        ("deep-objects.jsonl", DEEP_OBJECT_ROW),
        ("two.jsonl", b'{"sku": "MUG-1", "change": 1}\n' + HUGE_INT_ROW),
        ("q.csv", b"sku,quantity\nMUG-1,1_0\n"),
        ("q-arabic.csv", "sku,quantity\nMUG-1,\u0663\n".encode()),
        ("q-fullwidth.csv", "sku,quantity\nMUG-1,\uff13\n".encode()),
        ("c.csv", b"sku,change\nMUG-1,1_0\n"),
        ("r.csv", b"sku,reorder_level\nMUG-1,1_0\n"),
        ("q.jsonl", b'{"sku": "MUG-1", "quantity": "1_0"}\n'),
        ("q-arabic.jsonl", '{"sku": "MUG-1", "quantity": "\u0663"}\n'.encode()),
        ("price.csv", b"sku,name,price\nNEW-2,n," + PRICE_30_DIGITS.encode() + b"\n"),
        ("price-underscore.csv", b"sku,name,price\nNEW-2,n,1_0\n"),
    ],
)
def test_import_regressions_exit_65(shop: Path, name: str, data: bytes) -> None:
    (shop / name).write_bytes(data)
    before = snapshot(shop)
    fmt = "jsonl" if name.endswith(".jsonl") else "csv"
    for argv in (
        ["--file", "inventory.json", "import", name],
        ["--file", "inventory.json", "import", "-", "--format", fmt],
        ["--file", "inventory.json", "import", name, "--on-error", "skip-rows", "--dry-run"],
    ):
        result = invoke(argv, input=data if "-" in argv else None, env=_no_inv_env())
        check(argv, result)
        assert result.exit_code == 65, describe(argv, result)
        assert "row " in result.stderr, describe(argv, result)
        assert not changes(before, snapshot(shop)), describe(argv, result)


def test_import_missing_file_exits_66(shop: Path) -> None:
    argv = ["--file", "inventory.json", "import", "nope.csv"]
    one_error(argv, invoke(argv, env=_no_inv_env()), 66)


# -- identity of SKUs (DESIGN.md: NFC, casefold, no invisible characters) ----------------------


def _sku_identity_cases() -> list[tuple[str, str]]:
    return [("\u00e9", "e\u0301"), ("\u00c5", "A\u030a"), ("Stra\u00dfe", "STRASSE")]


@pytest.mark.parametrize(
    ("first", "second"), _sku_identity_cases(), ids=["e-acute", "A-ring", "sharp-s"]
)
def test_same_sku_in_another_normal_form_is_the_same_product_json(
    shop: Path, first: str, second: str
) -> None:
    _same_product(lambda *a: inv(shop, *a), first, second)


def _same_product(run: Callable[..., Result], first: str, second: str) -> None:
    added = run("add", "Thing", "--price", "1", "--sku", first)
    assert added.exit_code == 0, describe(["add", first], added)
    again = run("add", "Other", "--price", "1", "--sku", second)
    one_error(["add", "--sku", second], again, 1)
    shown = run("show", second, "--format", "json")
    check(["show", second], shown)
    assert shown.exit_code == 0, describe(["show", second], shown)


@pytest.mark.parametrize("sku", ["A\u200bB", "\ufeffAB", "AB\u2060", "A\u00adB", "A\u200dB"])
def test_sku_with_an_invisible_character_is_refused_json(shop: Path, sku: str) -> None:
    before = snapshot(shop)
    argv = ["add", "Thing", "--price", "1", "--sku", sku]
    one_error(argv, inv(shop, *argv), 1)
    assert not changes(before, snapshot(shop))


# -- postgres -----------------------------------------------------------------------------------


@pytest.fixture
def pg_url(shop_db: ShopDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The shop in PostgreSQL, as it was built; the current folder is an empty temp folder."""
    monkeypatch.chdir(tmp_path)
    shop_db.clean()
    return shop_db.url


def pg(url: str, *args: str, **kwargs: Any) -> Result:
    return invoke(list(args), env=pg_env(url), **kwargs)


@pytest.mark.parametrize(
    "args",
    [
        ("show", "a\udcffb"),
        ("update", "a\udcffb", "--change", "1"),
        ("update", "MUG-1", "--change", "1", "--store", "main", "--reason", "x\udcff"),
        ("history", "a\udcffb"),
        ("edit", "a\udcffb", "--name", "x"),
        ("remove", "a\udcffb"),
        ("transfer", "a\udcffb", "--from", "main", "--to", "north", "--qty", "1"),
        ("add", "X", "--price", "1", "--sku", "a\udcffb"),
        ("show", "a\x00b"),
        ("update", "a\x00b", "--change", "1"),
        ("audit", "prune", "--older-than", "99999999999y"),
        ("history", "--since", "0001-01-01T00:00+01:00"),
        ("add", "X", "--price", PRICE_30_DIGITS),
    ],
    ids=lambda a: " ".join(a).encode("unicode_escape").decode()[:50],
)
def test_postgres_refuses_awkward_arguments_with_1(pg_url: str, args: tuple[str, ...]) -> None:
    before = _pg_state(pg_url)
    one_error(args, pg(pg_url, *args), 1)
    assert _pg_state(pg_url) == before


@pytest.mark.parametrize(
    "args",
    [
        ("list", "--search", "\udcff"),
        ("list", "--category", "\udcff"),
        ("list", "--search", "\x00"),
        ("list", "--category", "a\x00"),
    ],
    ids=["search-surrogate", "category-surrogate", "search-nul", "category-nul"],
)
def test_postgres_awkward_filters_are_refused(pg_url: str, args: tuple[str, ...]) -> None:
    result = pg(pg_url, *args)
    check(args, result)
    assert result.exit_code == 1, describe(args, result)
    assert result.stderr.startswith(f"Error: {args[1].removeprefix('--')}: "), describe(
        args, result
    )


@pytest.mark.parametrize(
    "args",
    [
        ("list", "--limit", "99999999999999999999"),
        ("list", "--offset", "99999999999999999999"),
        ("history", "--limit", "99999999999999999999"),
        ("list", "--limit", "9223372036854775808"),
    ],
    ids=["list-limit", "list-offset", "history-limit", "limit-2**63"],
)
def test_huge_limit_is_the_same_on_json_and_postgres(
    shop: Path, pg_url: str, args: tuple[str, ...]
) -> None:
    on_json = inv(shop, *args)
    on_pg = pg(pg_url, *args)
    check(args, on_json)
    check(args, on_pg)
    assert on_json.exit_code == 1, describe(args, on_json)
    assert on_json.stderr.endswith(" is larger than 2147483647\n"), describe(args, on_json)
    assert (on_pg.exit_code, on_pg.stderr) == (on_json.exit_code, on_json.stderr), (
        f"json: {describe(args, on_json)}\npostgres: {describe(args, on_pg)}"
    )


@pytest.mark.parametrize(
    ("first", "second"), _sku_identity_cases(), ids=["e-acute", "A-ring", "sharp-s"]
)
def test_same_sku_in_another_normal_form_is_the_same_product_postgres(
    pg_url: str, first: str, second: str
) -> None:
    _same_product(lambda *a: pg(pg_url, *a), first, second)


@pytest.mark.parametrize("sku", ["A\u200bB", "\ufeffAB"])
def test_sku_with_an_invisible_character_is_refused_postgres(pg_url: str, sku: str) -> None:
    before = _pg_state(pg_url)
    argv = ("add", "Thing", "--price", "1", "--sku", sku)
    one_error(argv, pg(pg_url, *argv), 1)
    assert _pg_state(pg_url) == before


def _sql(url: str, *statements: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        for statement in statements:
            conn.execute(statement)


@contextlib.contextmanager
def empty_database() -> Iterator[str]:
    import uuid

    from pg import admin, drop_database, url_for

    name = f"inv_fuzz_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = url_for(name)
    try:
        yield url
    finally:
        drop_database(url)


def test_init_on_a_database_with_an_unrelated_products_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with empty_database() as url:
        _sql(url, "CREATE TABLE products (id serial PRIMARY KEY, title text)")
        one_error(["init"], pg(url, "init"), 78)
        one_error(["list"], pg(url, "list"), 78)


def _each_refused(url: str, commands: tuple[tuple[str, ...], ...], code: int) -> list[str]:
    """Run each command; return those that did not exit `code` with one `Error:` line."""
    failures: list[str] = []
    for args in commands:
        result = pg(url, *args)
        last = crash_summary(result)
        lines = error_lines(result)
        if (
            result.exit_code != code
            or last
            or len(lines) != 1
            or not lines[0].startswith("Error: ")
        ):
            failures.append(
                f"inv {' '.join(args)} -> {result.exit_code} {last} {result.stderr.strip()[:200]!r}"
            )
    return failures


SCHEMA_COMMANDS: tuple[tuple[str, ...], ...] = (
    ("list",),
    ("show", "MUG-1"),
    ("add", "X", "--price", "1"),
    ("update", "MUG-1", "--change", "1"),
    ("report", "value"),
    ("history",),
    ("init",),
    ("db", "upgrade"),
)


def test_a_missing_table_exits_78(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every command that needs the stock table says the schema is damaged."""
    monkeypatch.chdir(tmp_path)
    with pg_database() as url:
        pg_shop(url)
        _sql(url, "DROP TABLE inventory")
        failures = _each_refused(url, SCHEMA_COMMANDS[:5], 78)
    assert not failures, "DROP TABLE inventory, then:\n" + "\n".join(failures)


def test_tables_without_a_version_exit_78(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pg_database() as url:
        pg_shop(url)
        _sql(url, "DROP TABLE alembic_version")
        failures = _each_refused(url, SCHEMA_COMMANDS, 78)
    assert not failures, "DROP TABLE alembic_version, then:\n" + "\n".join(failures)


def test_an_unknown_schema_version_exits_78(pg_url: str) -> None:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        assert row is not None
        conn.execute("UPDATE alembic_version SET version_num = 'zzzz_unknown'")
        try:
            failures = _each_refused(pg_url, SCHEMA_COMMANDS, 78)
        finally:
            conn.execute("UPDATE alembic_version SET version_num = %s", (row[0],))
    assert not failures, "alembic_version = 'zzzz_unknown', then:\n" + "\n".join(failures)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://[::1",
        "postgresql://postgres@127.0.0.1:abc/x",
        "postgresql://postgres@127.0.0.1:99999/x",
        "postgresql://postgres@127.0.0.1:-5/x",
        "postgresql://postgres@127.0.0.1:5432/x?foo=bar",
        "postgresql://postgres@127.0.0.1:5432/x?sslmode=bogus",
        "postgres ql://x",
        "mysql://x@127.0.0.1/x",
        "nonsense",
        "postgresql://postgres@127.0.0.1:5432/x\udcff",
    ],
)
@pytest.mark.parametrize("args", [("list",), ("init",)], ids=lambda a: " ".join(a))
def test_malformed_database_url_exits_78(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, args: tuple[str, ...]
) -> None:
    monkeypatch.chdir(tmp_path)
    one_error(args, pg(url, *args), 78)


@pytest.mark.parametrize(
    "replicas",
    ["postgresql://[::1", "postgresql://postgres@127.0.0.1:99999/x", "mysql://x@127.0.0.1/x"],
)
def test_malformed_replica_url_exits_78(pg_url: str, replicas: str) -> None:
    result = invoke(["list"], env={**pg_env(pg_url), "INV_READ_DATABASE_URLS": replicas})
    one_error(["list"], result, 78)


def test_migrate_to_a_malformed_database_url_exits_78(shop: Path) -> None:
    argv = [
        "--file",
        "inventory.json",
        "migrate",
        "--to",
        "postgres",
        "--to-database-url",
        "postgresql://[::1",
    ]
    one_error(argv, invoke(argv, env=_no_inv_env()), 78)
