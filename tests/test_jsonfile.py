"""The JSON backend's file-level guarantees: atomic writes, `.bak`, the audit mark, the lock,
refusing corrupt or foreign files, and surviving `kill -9`.

These use real files, and real processes where only one shows it (a folder unwritable
to a user without root's powers, `kill -9`).  The CLI's exit codes and messages are
checked in-process (`inprocess.run_cli`), as `subprocess.run` would report them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, NoReturn

import inprocess
import pytest
from services import unavailable

import inventory_cli
from backends import (
    AlreadyExists,
    BackendUnavailable,
    BatchRejected,
    BatchRow,
    ConfigurationError,
    Conflict,
    CorruptData,
    InsufficientStock,
    InventoryError,
    NotFound,
    ValidationError,
)
from backends.auth import token_digest
from backends.jsonfile import SCHEMA_VERSION, JsonBackend

REPO = Path(inventory_cli.__file__).resolve().parent.parent
CLI_TIMEOUT = 120  # a safety net against a hung child, not an assertion


# -- helpers ---------------------------------------------------------------------------


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    """The test's environment without INV_* settings, with HOME pointing at a tmp folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INV_")}
    env["HOME"] = str(home)
    env["XDG_CONFIG_HOME"] = str(home / ".config")
    env.update(extra)
    return env


def run_cli(
    path: Path, *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return inprocess.run_cli(
        ["--file", str(path), *args], cwd=cwd, env=env if env is not None else cli_env(cwd)
    )


def assert_clean_error(result: subprocess.CompletedProcess[str], code: int) -> None:
    """Exit `code`, one `Error: ` message on stderr, never a traceback."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert result.stderr.startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout, result.stderr


def files_in(folder: Path) -> dict[str, bytes]:
    """Every file in `folder` with its bytes, except the (empty) lock file."""
    return {
        p.name: p.read_bytes()
        for p in sorted(folder.iterdir())
        if p.is_file() and not p.name.endswith(".lock")
    }


def load_doc(path: Path) -> dict[str, Any]:
    return json.loads(path.read_bytes())


def audit_ids(inv: JsonBackend) -> list[int]:
    return sorted(m.id for m in inv.history())


def assert_audit_consistent(inv: JsonBackend) -> None:
    """The trail is exactly as long as the main file records, every line parses, ids 1..N."""
    doc = load_doc(inv.path)
    data = inv.audit_path.read_bytes()
    assert len(data) == doc["audit"]["bytes"]
    lines = [json.loads(line) for line in data.splitlines()]
    assert [line["id"] for line in lines] == list(range(1, len(lines) + 1))
    assert doc["audit"]["entries"] == len(lines)
    assert audit_ids(inv) == list(range(1, len(lines) + 1))


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    folder = tmp_path / "shop"
    folder.mkdir()
    return folder / "inventory.json"


@pytest.fixture
def inv(shop: Path) -> JsonBackend:
    backend = JsonBackend(shop, actor="tester")
    assert backend.init() is True
    return backend


@pytest.fixture
def stocked(inv: JsonBackend) -> JsonBackend:
    """Store main and north; MUG with 5 at main, 2 at north; one keyed adjust done."""
    inv.add_store("north", "North")
    inv.add_product("Blue mug", "4.50", sku="MUG", quantity=5)
    inv.adjust("north", "MUG", 2, "restock", event_id="key-1")
    return inv


# -- init ------------------------------------------------------------------------------


def test_init_creates_the_file_with_format_version_and_store_main(shop: Path) -> None:
    inv = JsonBackend(shop, actor="tester")
    assert not shop.exists()
    assert inv.init() is True
    doc = load_doc(shop)
    assert doc["format"] == "inv-inventory"
    assert doc["schema_version"] == 1
    assert "main" in doc["stores"]
    assert [s.code for s in inv.stores()] == ["main"]
    entries = inv.history()
    assert [(m.action, m.store) for m in entries] == [("store.create", "main")]
    assert_audit_consistent(inv)


def test_init_twice_returns_false_and_changes_no_byte(shop: Path) -> None:
    assert JsonBackend(shop, actor="tester").init() is True
    before = files_in(shop.parent)
    assert JsonBackend(shop, actor="someone-else").init() is False
    assert files_in(shop.parent) == before
    assert not (shop.parent / "inventory.json.bak").exists()


def test_cli_init_twice_leaves_the_file_unchanged(tmp_path: Path, shop: Path) -> None:
    first = run_cli(shop, "init", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    before = files_in(shop.parent)
    second = run_cli(shop, "init", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "already exists" in second.stdout
    assert files_in(shop.parent) == before


# -- .bak ------------------------------------------------------------------------------


def test_every_write_keeps_the_previous_version_as_bak(inv: JsonBackend) -> None:
    bak = inv.path.with_name("inventory.json.bak")
    writes: list[Callable[[], object]] = [
        lambda: inv.add_store("north", "North"),
        lambda: inv.add_product("Blue mug", "4.50", sku="MUG", quantity=5),
        lambda: inv.adjust("main", "MUG", -2, "sale"),
        lambda: inv.set_quantity("main", "MUG", 10, "count"),
        lambda: inv.edit_product("MUG", price="4.75"),
        lambda: inv.transfer("MUG", "main", "north", 4),
        lambda: inv.apply([BatchRow(row=2, sku="TEA", name="Tea", price=Decimal("2.00"))]),
        lambda: inv.remove_product("MUG", store="north", force=True),
        lambda: inv.remove_store("north"),
    ]
    for number, write in enumerate(writes):
        before = inv.path.read_bytes()
        write()
        after = inv.path.read_bytes()
        assert after != before, f"write {number} changed nothing"
        assert bak.read_bytes() == before, f"write {number}: .bak is not the previous version"


# -- refused writes change nothing -----------------------------------------------------


FAILING_WRITES: dict[str, tuple[type[InventoryError], Callable[[JsonBackend], object]]] = {
    "insufficient-stock": (InsufficientStock, lambda b: b.adjust("main", "MUG", -6, "sale")),
    "unknown-sku": (NotFound, lambda b: b.adjust("main", "NOPE", 1)),
    "unknown-store": (NotFound, lambda b: b.adjust("south", "MUG", 1)),
    "negative-set": (ValidationError, lambda b: b.set_quantity("main", "MUG", -1)),
    "price-three-places": (ValidationError, lambda b: b.add_product("Tea", "4.999")),
    "stale-expect": (Conflict, lambda b: b.adjust("main", "MUG", 1, expect=99)),
    "key-reused": (Conflict, lambda b: b.adjust("north", "MUG", 3, event_id="key-1")),
    "sku-taken": (AlreadyExists, lambda b: b.add_product("Mug", "1.00", sku="mug")),
    "transfer-too-many": (InsufficientStock, lambda b: b.transfer("MUG", "main", "north", 9)),
    "remove-with-stock": (Conflict, lambda b: b.remove_product("MUG")),
    "remove-store-with-stock": (Conflict, lambda b: b.remove_store("north")),
    "batch-reject-all": (
        BatchRejected,
        lambda b: b.apply(
            [
                BatchRow(row=2, sku="TEA", name="Tea", price=Decimal("2.00"), quantity=3),
                BatchRow(row=3, sku="MUG", change=-100),
            ]
        ),
    ),
}


@pytest.mark.parametrize("case", FAILING_WRITES, ids=list(FAILING_WRITES))
def test_a_failing_write_changes_no_byte(stocked: JsonBackend, case: str) -> None:
    error, write = FAILING_WRITES[case]
    before = files_in(stocked.path.parent)
    assert "inventory.audit.jsonl" in before and "inventory.json.bak" in before
    with pytest.raises(error):
        write(stocked)
    assert files_in(stocked.path.parent) == before
    assert stocked.get("MUG").stock == {"main": 5, "north": 2}


def test_a_replayed_idempotency_key_changes_no_byte(stocked: JsonBackend) -> None:
    before = files_in(stocked.path.parent)
    again = stocked.adjust("north", "MUG", 2, "restock", event_id="key-1")
    assert again.quantity_after == 2
    assert files_in(stocked.path.parent) == before


# -- the audit mark: a crash between the two writes ------------------------------------


def _crash_tail(inv: JsonBackend, kind: str) -> bytes:
    """What a crash after the audit append but before the main-file replace leaves."""
    entries = load_doc(inv.path)["audit"]["entries"]
    if kind == "garbage":
        return b'{"id": 999, "this is not' + b"\n\x00\xff half a line"
    ghost = {
        "id": entries + 1,
        "at": "2030-01-01T00:00:00Z",
        "actor": "ghost",
        "source": "cli",
        "event_id": "ghost-event",
        "store": "main",
        "sku": "MUG",
        "action": "stock.adjust",
        "delta": 100,
        "quantity_after": 105,
        "reason": "never committed",
    }
    return (json.dumps(ghost) + "\n" + json.dumps({**ghost, "id": entries + 2}) + "\n").encode()


@pytest.mark.parametrize("kind", ["garbage", "valid-json-lines"])
def test_audit_lines_past_the_mark_are_ignored_then_cut_off(
    stocked: JsonBackend, kind: str
) -> None:
    doc = load_doc(stocked.path)
    committed = stocked.audit_path.read_bytes()
    assert len(committed) == doc["audit"]["bytes"]
    history_before = stocked.history()
    with open(stocked.audit_path, "ab") as f:
        f.write(_crash_tail(stocked, kind))
    assert stocked.audit_path.stat().st_size > doc["audit"]["bytes"]

    # Readers ignore the tail.
    assert stocked.history() == history_before
    assert all(m.actor != "ghost" for m in stocked.history())
    assert stocked.get("MUG").stock["main"] == 5

    # The next writer cuts it off before appending its own entry.
    moved = stocked.adjust("main", "MUG", 1, "restock")
    assert moved.id == doc["audit"]["entries"] + 1
    assert_audit_consistent(stocked)
    data = stocked.audit_path.read_bytes()
    assert data.startswith(committed)
    assert b"ghost" not in data and b"this is not" not in data
    latest = stocked.history(limit=1)[0]
    assert (latest.id, latest.delta, latest.quantity_after, latest.actor) == (
        moved.id,
        1,
        6,
        "tester",
    )
    assert stocked.get("MUG").stock["main"] == 6


def test_audit_shorter_than_recorded_is_corrupt_and_writes_refuse(stocked: JsonBackend) -> None:
    data = stocked.audit_path.read_bytes()
    stocked.audit_path.write_bytes(data[:-10])
    before = files_in(stocked.path.parent)
    with pytest.raises(CorruptData, match="shorter"):
        stocked.history()
    for write in (
        lambda: stocked.adjust("main", "MUG", 1),
        lambda: stocked.add_product("Tea", "2.00"),
        lambda: stocked.add_store("south"),
    ):
        with pytest.raises(CorruptData):
            write()
        assert files_in(stocked.path.parent) == before


def test_audit_missing_while_entries_are_recorded_is_corrupt_and_writes_refuse(
    stocked: JsonBackend,
) -> None:
    stocked.audit_path.unlink()
    main_before = stocked.path.read_bytes()
    bak_before = stocked.backup_path.read_bytes()
    with pytest.raises(CorruptData, match="missing"):
        stocked.history()
    for write in (
        lambda: stocked.adjust("main", "MUG", 1),
        lambda: stocked.add_product("Tea", "2.00"),
    ):
        with pytest.raises(CorruptData):
            write()
        assert stocked.path.read_bytes() == main_before
        assert stocked.backup_path.read_bytes() == bak_before


def test_a_refused_write_does_not_create_an_empty_audit_trail(stocked: JsonBackend) -> None:
    """A refused write must leave the folder as it was: no empty trail in place of the
    missing one (which would turn "missing; restore it" into a misleading "shorter")."""
    stocked.audit_path.unlink()
    with pytest.raises(CorruptData):
        stocked.adjust("main", "MUG", 1)
    assert not stocked.audit_path.exists()
    with pytest.raises(CorruptData, match="missing"):
        stocked.history()


# -- corrupt and foreign files ---------------------------------------------------------


def _valid_doc(tmp_path: Path) -> dict[str, Any]:
    folder = tmp_path / "template"
    folder.mkdir(exist_ok=True)
    inv = JsonBackend(folder / "inventory.json", actor="tester")
    if inv.init():
        inv.add_product("Blue mug", "4.50", sku="MUG", quantity=5)
    return load_doc(inv.path)


def _mutated(tmp_path: Path, change: Callable[[dict[str, Any]], object]) -> bytes:
    doc = _valid_doc(tmp_path)
    change(doc)
    return json.dumps(doc, indent=1).encode()


BROKEN_JSON = b'{"format": "inv-inventory",\n  "schema_version": 1,\n  oops\n}\n'

#: A user as the file keeps one (the hash is not of any password: it is never checked).
USER = {
    "password_hash": "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo",
    "role": "admin",
    "stores": None,
    "disabled": False,
    "created_at": "2026-01-01T00:00:00.000000Z",
}
TOKEN = {
    "id": 1,
    "username": "ana",
    "digest": "0" * 64,
    "name": None,
    "created_at": "2026-01-01T00:00:00.000000Z",
    "expires_at": None,
    "last_used_at": None,
}


def _with_users(doc: dict[str, Any], users: Any, tokens: Any = ()) -> None:
    doc.update(schema_version=2, users=users, tokens=list(tokens), next_token=9)


CORRUPT: dict[str, Callable[[Path], bytes]] = {
    "not-json": lambda _: BROKEN_JSON,
    "not-utf8": lambda _: b'{"format": "inv-\xff\xfe"}\n',
    "foreign-object": lambda _: b'{"a": 1}\n',
    "json-array": lambda _: b"[1, 2, 3]\n",
    "empty": lambda _: b"",
    "price-three-places": lambda t: _mutated(
        t, lambda d: d["products"]["MUG"].__setitem__("price", "4.999")
    ),
    "price-as-float": lambda t: _mutated(
        t, lambda d: d["products"]["MUG"].__setitem__("price", 4.5)
    ),
    "negative-stock": lambda t: _mutated(
        t, lambda d: d["products"]["MUG"]["stock"].__setitem__("main", -1)
    ),
    "unknown-store-in-stock": lambda t: _mutated(
        t, lambda d: d["products"]["MUG"]["stock"].__setitem__("nowhere", 1)
    ),
    "newer-schema": lambda t: _mutated(
        t, lambda d: d.__setitem__("schema_version", SCHEMA_VERSION + 1)
    ),
    "users-not-an-object": lambda t: _mutated(t, lambda d: _with_users(d, [USER])),
    "user-with-an-unknown-role": lambda t: _mutated(
        t, lambda d: _with_users(d, {"ana": {**USER, "role": "owner"}})
    ),
    "user-name-not-lower-case": lambda t: _mutated(t, lambda d: _with_users(d, {"Ana": USER})),
    "user-without-a-hash": lambda t: _mutated(
        t, lambda d: _with_users(d, {"ana": {**USER, "password_hash": None}})
    ),
    "token-of-no-user": lambda t: _mutated(
        t, lambda d: _with_users(d, {"ana": USER}, [{**TOKEN, "username": "bob"}])
    ),
    "token-ids-twice": lambda t: _mutated(
        t, lambda d: _with_users(d, {"ana": USER}, [TOKEN, {**TOKEN, "digest": "1" * 64}])
    ),
    "token-with-a-secret-for-a-digest": lambda t: _mutated(
        t, lambda d: _with_users(d, {"ana": USER}, [{**TOKEN, "digest": "inv_" + "a" * 43}])
    ),
    "next-token-not-past-the-ids": lambda t: _mutated(
        t, lambda d: (_with_users(d, {"ana": USER}, [TOKEN]), d.__setitem__("next_token", 1))
    ),
    "no-main-store": lambda t: _mutated(t, lambda d: d["stores"].pop("main")),
}


def _write_corrupt(shop: Path, tmp_path: Path, case: str) -> bytes:
    data = CORRUPT[case](tmp_path)
    shop.write_bytes(data)
    return data


@pytest.mark.parametrize("case", CORRUPT, ids=list(CORRUPT))
def test_corrupt_or_foreign_file_is_refused_and_never_overwritten(
    tmp_path: Path, shop: Path, case: str
) -> None:
    data = _write_corrupt(shop, tmp_path, case)
    inv = JsonBackend(shop, actor="tester")
    attempts: list[Callable[[], object]] = [
        inv.list_items,
        inv.history,
        inv.stores,
        inv.init,
        lambda: inv.add_product("Tea", "2.00"),
        lambda: inv.adjust("main", "MUG", 1),
        lambda: inv.set_quantity("main", "MUG", 3),
        lambda: inv.add_store("south"),
    ]
    for attempt in attempts:
        with pytest.raises(CorruptData):
            attempt()
        assert shop.read_bytes() == data
    assert sorted(p.name for p in shop.parent.iterdir() if not p.name.endswith(".lock")) == [
        "inventory.json"
    ]


def test_not_json_names_line_and_column(shop: Path) -> None:
    shop.write_bytes(BROKEN_JSON)
    with pytest.raises(CorruptData) as caught:
        JsonBackend(shop, actor="tester").list_items()
    message = str(caught.value)
    assert "line 3" in message and "column 3" in message, message
    assert str(shop) in message


def test_a_damaged_user_is_named(tmp_path: Path, shop: Path) -> None:
    _write_corrupt(shop, tmp_path, "user-with-an-unknown-role")
    with pytest.raises(CorruptData) as caught:
        JsonBackend(shop, actor="tester").users()
    assert f"{shop}: users.ana: role: 'owner' is not a role" in str(caught.value)
    _write_corrupt(shop, tmp_path, "token-of-no-user")
    with pytest.raises(CorruptData, match=r"tokens\[0\]: username: no user 'bob'"):
        JsonBackend(shop, actor="tester").list_items()


def test_newer_schema_says_upgrade(tmp_path: Path, shop: Path) -> None:
    _write_corrupt(shop, tmp_path, "newer-schema")
    with pytest.raises(CorruptData, match="upgrade"):
        JsonBackend(shop, actor="tester").list_items()


CLI_ATTEMPTS: dict[str, tuple[str, ...]] = {
    "list": ("list", "--format", "json"),
    "add": ("add", "Tea", "--price", "2.00"),
    "update": ("update", "MUG", "--change", "1"),
    "init": ("init",),
}


@pytest.mark.parametrize("case", CORRUPT, ids=list(CORRUPT))
def test_cli_refuses_corrupt_file_with_exit_78(tmp_path: Path, shop: Path, case: str) -> None:
    data = _write_corrupt(shop, tmp_path, case)
    for name, args in CLI_ATTEMPTS.items():
        result = run_cli(shop, *args, cwd=tmp_path)
        assert_clean_error(result, 78)
        assert result.stdout == "", (name, result.stdout)
        assert shop.read_bytes() == data, f"{name} changed the file"
        if case == "not-json":
            assert "line 3" in result.stderr and "column 3" in result.stderr, result.stderr
    assert not shop.with_name("inventory.json.bak").exists()


# -- users and tokens in the file ------------------------------------------------------


def test_a_file_is_version_2_only_while_it_holds_users_or_tokens(shop: Path) -> None:
    inv = JsonBackend(shop, actor="tester")
    inv.init()
    inv.add_product("Blue mug", "4.50", sku="MUG", quantity=5)
    doc = load_doc(shop)
    assert doc["schema_version"] == 1  # as an older inv writes it, and reads it
    assert not {"users", "tokens", "next_token"} & set(doc)
    assert (inv.users(), inv.tokens(), inv.upgrade()) == ([], [], ("1", "1"))
    inv.add_user("ana", "correct horse", "admin")
    issued = inv.create_token("ana", name="till-3")
    doc = load_doc(shop)
    assert doc["schema_version"] == 2  # an older inv refuses it rather than drop them
    assert set(doc["users"]) == {"ana"}
    assert doc["users"]["ana"]["password_hash"].startswith("$argon2id$")
    assert doc["tokens"] == [
        {
            "id": issued.token.id,
            "username": "ana",
            "digest": token_digest(issued.secret),
            "name": "till-3",
            "created_at": doc["tokens"][0]["created_at"],
            "expires_at": None,
            "last_used_at": None,
        }
    ]
    raw = shop.read_bytes() + inv.audit_path.read_bytes()
    assert b"correct horse" not in raw and issued.secret.encode() not in raw
    assert inv.get("MUG").stock == {"main": 5}


def test_authenticate_rewrites_the_file_at_most_once_a_minute(shop: Path) -> None:
    inv = JsonBackend(shop, actor="tester")
    inv.init()
    inv.add_user("ana", "correct horse", "admin")
    secret = inv.create_token("ana").secret
    inv.authenticate(secret)
    written = (shop.stat().st_ino, shop.stat().st_mtime_ns, shop.read_bytes())
    for _ in range(3):
        inv.authenticate(secret)
    assert (shop.stat().st_ino, shop.stat().st_mtime_ns, shop.read_bytes()) == written
    # Two minutes later (the file says so), the next use is written down.
    doc = load_doc(shop)
    doc["tokens"][0]["last_used_at"] = "2000-01-01T00:00:00.000000Z"
    shop.write_text(json.dumps(doc))
    inv.authenticate(secret)
    [token] = inv.tokens()
    assert token.last_used_at is not None and token.last_used_at.year > 2000


# -- missing file ----------------------------------------------------------------------


def test_missing_file_says_run_inv_init(shop: Path) -> None:
    inv = JsonBackend(shop, actor="tester")
    for attempt in (inv.list_items, inv.history, lambda: inv.adjust("main", "MUG", 1)):
        with pytest.raises(ConfigurationError, match="inv init"):
            attempt()
    assert not shop.exists()
    assert not inv.audit_path.exists()


def test_cli_missing_file_exits_78(tmp_path: Path, shop: Path) -> None:
    for args in (("list",), ("update", "MUG", "--change", "1")):
        result = run_cli(shop, *args, cwd=tmp_path)
        assert_clean_error(result, 78)
        assert "inv init" in result.stderr
    assert not shop.exists()


# -- the lock --------------------------------------------------------------------------


@contextlib.contextmanager
def lock_held(inv: JsonBackend) -> Iterator[None]:
    """Hold the writers' lock through our own open file description."""
    fd = os.open(inv.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        os.close(fd)


def test_a_held_lock_makes_writers_give_up_and_readers_carry_on(stocked: JsonBackend) -> None:
    before = files_in(stocked.path.parent)
    impatient = JsonBackend(stocked.path, actor="tester", lock_timeout=0.2)
    with lock_held(stocked):
        with pytest.raises(BackendUnavailable, match="locked"):
            impatient.adjust("main", "MUG", 1)
        with pytest.raises(BackendUnavailable):
            impatient.add_product("Tea", "2.00")
        assert files_in(stocked.path.parent) == before
        items = {(i.sku, i.store): i.quantity for i in impatient.list_items()}
        assert items == {("MUG", "main"): 5, ("MUG", "north"): 2}
        assert len(impatient.history()) == len(stocked.history())
    # Released: the same backend writes again.
    assert impatient.adjust("main", "MUG", 1).quantity_after == 6


def test_cli_with_the_lock_held_exits_75_and_reads_still_work(
    tmp_path: Path, stocked: JsonBackend
) -> None:
    shop = stocked.path
    before = files_in(shop.parent)
    env = cli_env(tmp_path, INV_LOCK_TIMEOUT="0.2")
    with lock_held(stocked):
        result = run_cli(shop, "update", "MUG", "--change", "1", cwd=tmp_path, env=env)
        assert_clean_error(result, 75)
        assert "locked" in result.stderr
        assert files_in(shop.parent) == before
        listed = run_cli(shop, "list", "--format", "json", cwd=tmp_path, env=env)
        assert listed.returncode == 0, listed.stderr
        rows = {(r["sku"], r["store"]): r["quantity"] for r in json.loads(listed.stdout)}
        assert rows == {("MUG", "main"): 5, ("MUG", "north"): 2}


# -- an unwritable folder, as a user root is not ---------------------------------------


def _give_up(reason: str) -> NoReturn:
    unavailable(f"cannot run the unwritable-folder test: {reason}")


def _nobody_command(cwd: Path) -> tuple[list[str], dict[str, str]]:
    """argv prefix and env that run `python` without root's power to ignore permissions.

    As root, that is `setpriv --bounding-set=-all`: still uid 0, so it can read the
    checkout and the venv wherever they are, but with no capability (no
    CAP_DAC_OVERRIDE), so a folder's mode applies to it as to anyone.
    """
    env = cli_env(cwd, PYTHONDONTWRITEBYTECODE="1")
    if os.geteuid() != 0:
        return [sys.executable], env
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        _give_up("setpriv (util-linux) is not installed; cannot drop root's capabilities")
    prefix = [setpriv, "--bounding-set=-all", "--", sys.executable]
    probe = subprocess.run(
        [*prefix, "-c", "import inventory_cli.cli"],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=CLI_TIMEOUT,
    )
    if probe.returncode != 0:
        _give_up(f"cannot run inv without capabilities: {probe.stderr.strip()[-300:]}")
    return prefix, env


@pytest.fixture
def public_folder() -> Iterator[Path]:
    """A folder outside pytest's tmp root (which is 0700 to root) that nobody can enter."""
    outer = Path(tempfile.mkdtemp(prefix="inv-perm-"))
    outer.chmod(0o755)
    try:
        yield outer
    finally:
        for path in [outer, *outer.rglob("*")]:
            if path.is_dir():
                path.chmod(0o755)
        shutil.rmtree(outer, ignore_errors=True)


@pytest.mark.parametrize("lock_file", ["lock-present", "lock-absent"])
def test_cli_in_an_unwritable_folder_exits_77(public_folder: Path, lock_file: str) -> None:
    folder = public_folder / "shop"
    folder.mkdir(mode=0o755)
    shop = folder / "inventory.json"
    inv = JsonBackend(shop, actor="tester")
    inv.init()
    inv.add_product("Blue mug", "4.50", sku="MUG", quantity=5)
    for path in folder.iterdir():
        path.chmod(0o644)
    if lock_file == "lock-absent":
        inv.lock_path.unlink()
    folder.chmod(0o555)
    before = files_in(folder)

    prefix, env = _nobody_command(public_folder)

    def inv_as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*prefix, "-m", "inventory_cli", "--file", str(shop), *args],
            capture_output=True,
            text=True,
            cwd=public_folder,
            env=env,
            timeout=CLI_TIMEOUT,
        )

    # Reading needs no write access: this also proves the user can run inv at all.
    listed = inv_as_nobody("list", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    assert [r["quantity"] for r in json.loads(listed.stdout)] == [5]

    for args in (("add", "Tea", "--price", "2.00"), ("update", "MUG", "--change", "1")):
        result = inv_as_nobody(*args)
        assert_clean_error(result, 77)
        assert "permission denied" in result.stderr.lower(), result.stderr
        assert files_in(folder) == before
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [*before, *(["inventory.json.lock"] if lock_file == "lock-present" else [])]
    )


# -- file mode -------------------------------------------------------------------------


def test_file_mode_is_kept_across_writes(stocked: JsonBackend) -> None:
    stocked.path.chmod(0o640)
    stocked.adjust("main", "MUG", 1)
    assert stat.S_IMODE(stocked.path.stat().st_mode) == 0o640
    stocked.add_product("Tea", "2.00")
    assert stat.S_IMODE(stocked.path.stat().st_mode) == 0o640
    stocked.path.chmod(0o600)
    stocked.set_quantity("main", "MUG", 1)
    assert stat.S_IMODE(stocked.path.stat().st_mode) == 0o600


# -- kill -9 ---------------------------------------------------------------------------

WRITER = """
import sys
from backends.jsonfile import JsonBackend

inv = JsonBackend(sys.argv[1], actor="looper")
while True:
    inv.adjust("main", "MUG", 1, "restock")
    print("ok", flush=True)
"""


@pytest.mark.slow
def test_kill_9_at_a_random_moment_loses_nothing_and_keeps_the_trail(inv: JsonBackend) -> None:
    inv.add_product("Blue mug", "4.50", sku="MUG")
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    acknowledged = 0
    for round_number in range(5):
        wait_for = rng.randint(3, 40)
        child = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(inv.path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        try:
            assert child.stdout is not None
            for _ in range(wait_for):
                line = child.stdout.readline()
                if line != "ok\n":
                    child.kill()
                    assert child.stderr is not None
                    pytest.fail(f"seed {seed}: the writer stopped: {line!r} {child.stderr.read()}")
                acknowledged += 1
            # A random extra number of instructions before the kill lands.
            for _ in range(rng.randint(0, 20_000)):
                pass
            child.send_signal(signal.SIGKILL)
        finally:
            child.kill()
            child.wait(timeout=CLI_TIMEOUT)
            assert child.stdout is not None and child.stderr is not None
            child.stdout.close()
            child.stderr.close()
        assert child.returncode == -signal.SIGKILL

        after = JsonBackend(inv.path, actor="tester")
        quantity = after.get("MUG").stock["main"]
        adjusts = [m for m in after.history("MUG") if m.action == "stock.adjust"]
        context = f"seed {seed}, round {round_number}"
        assert quantity == len(adjusts), context
        assert quantity >= acknowledged, f"{context}: an acknowledged write was lost"
        assert all(m.delta == 1 and m.actor == "looper" for m in adjusts), context
        assert [m.quantity_after for m in reversed(adjusts)] == list(range(1, quantity + 1))
        ids = audit_ids(after)
        assert ids == list(range(1, len(ids) + 1)), context
        assert load_doc(inv.path)["audit"]["entries"] == len(ids), context
        acknowledged = quantity

    # The next write cuts off whatever the last kill left past the mark.
    inv.adjust("main", "MUG", 1)
    assert inv.get("MUG").stock["main"] == acknowledged + 1
    assert_audit_consistent(inv)
