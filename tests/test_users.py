"""`inv user ...` and `inv token ...`: passwords never on argv, tokens shown once.

In-process (`inprocess.run_cli`) on the JSON file, the main path once on PostgreSQL too;
what the backends do with users and tokens is the contract's (`contract.py`).  Each
password hash costs tens of milliseconds: a test adds one user, two at most.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from inprocess import run_cli
from pg import drop_database, fresh_database

from backends import Backend, Unauthenticated
from backends.auth import token_digest
from backends.jsonfile import JsonBackend
from backends.postgres import PostgresBackend

PASSWORD = "correct horse"
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
TOKEN = re.compile(r"inv_[A-Za-z0-9_-]{43}")


@dataclass
class Inv:
    """`inv ARGS...` against one fresh inventory, and the backend behind it."""

    run: Callable[..., subprocess.CompletedProcess[str]]
    open: Callable[[], Backend]
    files: Path | None  # the JSON backend's folder: every byte it wrote


def _json_inv(tmp_path: Path) -> Inv:
    path = tmp_path / "inventory.json"

    def run(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return run_cli(["--file", str(path), *args], cwd=tmp_path, input=input)

    JsonBackend(path, actor="tester").init()
    return Inv(run, lambda: JsonBackend(path, actor="tester"), tmp_path)


@pytest.fixture
def inv(tmp_path: Path) -> Inv:
    return _json_inv(tmp_path)


@pytest.fixture(params=["json", "postgres"])
def any_inv(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Inv]:
    if request.param == "json":
        yield _json_inv(tmp_path)
        return
    url = fresh_database()

    def run(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return run_cli(
            ["--backend", "postgres", *args],
            env={"INV_DATABASE_URL": url},
            cwd=tmp_path,
            input=input,
        )

    opened: list[PostgresBackend] = []

    def open_backend() -> Backend:
        opened.append(PostgresBackend(url, actor="tester"))
        return opened[-1]

    yield Inv(run, open_backend, None)
    for backend in opened:
        backend.close()
    drop_database(url)


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    assert result.stderr == "" or not result.stderr.startswith("Error"), result.stderr
    return result


def refused(result: subprocess.CompletedProcess[str], code: int, message: str) -> None:
    """Exit `code` with exactly `Error: message` on stderr and nothing on stdout."""
    assert (result.returncode, result.stderr, result.stdout) == (code, f"Error: {message}\n", "")


def add_ana(inv: Inv, *extra: str) -> None:
    added = ok(inv.run("user", "add", "ana", "--role", "clerk", *extra, input=PASSWORD + "\n"))
    assert added.stdout.startswith("Added user ana (clerk")


# -- the main path, on both backends ------------------------------------------------------


def test_a_user_and_a_token_from_end_to_end(any_inv: Inv) -> None:
    inv = any_inv
    added = ok(
        inv.run(
            "user", "add", "Ana", "--role", "admin", "-s", "main", "--password-stdin",
            input=PASSWORD + "\n",
        )
    )  # fmt: skip
    assert (added.stdout, added.stderr) == ("Added user ana (admin, stores main)\n", "")
    [listed] = json.loads(ok(inv.run("user", "list", "--format", "json")).stdout)
    assert TIME.fullmatch(listed.pop("created_at"))
    assert listed == {"username": "ana", "role": "admin", "stores": ["main"], "disabled": False}

    made = ok(inv.run("token", "create", "--user", "ana", "--name", "till-3", "--quiet"))
    assert made.stderr == ""
    assert TOKEN.fullmatch(made.stdout.removesuffix("\n")), made.stdout
    secret = made.stdout.strip()
    with inv.open() as backend:
        assert backend.authenticate(secret).username == "ana"
        assert backend.login("ana", PASSWORD).role == "admin"

    shown = ok(inv.run("token", "list", "--format", "json")).stdout
    assert secret not in shown and secret[4:] not in shown and token_digest(secret) not in shown
    [token] = json.loads(shown)
    assert (token["username"], token["name"]) == ("ana", "till-3")
    assert TIME.fullmatch(token["last_used_at"])  # authenticated above
    expires = datetime.fromisoformat(token["expires_at"])
    assert abs(expires - datetime.now(UTC) - timedelta(days=90)) < timedelta(minutes=5)

    revoked = ok(inv.run("token", "revoke", str(token["id"])))
    assert revoked.stdout == f"Revoked token {token['id']} (till-3) of ana\n"
    assert ok(inv.run("token", "list", "--format", "json")).stdout == "[]\n"
    with inv.open() as backend, pytest.raises(Unauthenticated):
        backend.authenticate(secret)
    refused(inv.run("token", "revoke", str(token["id"])), 1, f"no token {token['id']}")


# -- passwords: stdin or a prompt, never argv ---------------------------------------------


def test_the_password_is_asked_twice_at_a_prompt(inv: Inv) -> None:
    result = ok(inv.run("user", "add", "ana", "--role", "manager", input=f"{PASSWORD}\n" * 2))
    assert result.stdout.endswith("Added user ana (manager)\n")
    assert PASSWORD not in result.stdout + result.stderr  # hidden
    with inv.open() as backend:
        assert backend.login("ana", PASSWORD).role == "manager"


def test_two_different_passwords_at_the_prompt_add_no_user(inv: Inv) -> None:
    result = inv.run("user", "add", "ana", "--role", "clerk", input=f"{PASSWORD}\nsomething else\n")
    assert result.returncode == 1
    assert "do not match" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert ok(inv.run("user", "list", "--format", "json")).stdout == "[]\n"


def test_password_stdin_takes_the_first_line_without_its_line_end(inv: Inv) -> None:
    add_ana(inv, "--password-stdin")  # "\n"
    with inv.open() as backend:
        assert backend.login("ana", PASSWORD).username == "ana"
    ok(inv.run("user", "passwd", "ana", "--password-stdin", input="battery staple\r\nnext\n"))
    with inv.open() as backend:
        assert backend.login("ana", "battery staple").username == "ana"
        with pytest.raises(Unauthenticated):
            backend.login("ana", PASSWORD)


@pytest.mark.parametrize("given", ["short\n", "", "\n", "short"])
def test_a_short_password_is_refused(inv: Inv, given: str) -> None:
    result = inv.run("user", "add", "ana", "--role", "clerk", "--password-stdin", input=given)
    refused(result, 1, "password: shorter than 8 characters")
    assert ok(inv.run("user", "list", "--format", "json")).stdout == "[]\n"


@pytest.mark.parametrize(
    "args",
    [
        ("user", "add", "ana", "--role", "clerk", "--password", PASSWORD),
        ("user", "add", "ana", "--role", "clerk", "--password=" + PASSWORD),
        ("user", "passwd", "ana", "--password", PASSWORD),
    ],
)
def test_a_password_on_the_command_line_is_a_usage_error(inv: Inv, args: tuple[str, ...]) -> None:
    result = inv.run(*args, input="")
    assert result.returncode == 2
    assert "No such option: --password" in result.stderr
    assert ok(inv.run("user", "list", "--format", "json")).stdout == "[]\n"


def test_the_file_never_holds_a_password_or_a_token(inv: Inv) -> None:
    add_ana(inv, "--password-stdin")
    made = ok(inv.run("token", "create", "--user", "ana", "--expires", "never"))
    secret = made.stdout.strip()
    assert TOKEN.fullmatch(secret)
    assert "shown only this once" in made.stderr and "never expiring" in made.stderr
    ok(inv.run("user", "passwd", "ana", "--password-stdin", input="battery staple\n"))
    assert inv.files is not None
    written = b"".join(p.read_bytes() for p in sorted(inv.files.rglob("*")) if p.is_file())
    assert b'"users"' in written and b'"tokens"' in written  # the file is the one
    for secret_text in (PASSWORD, "battery staple", secret, secret[4:]):
        assert secret_text.encode() not in written


# -- users ---------------------------------------------------------------------------------


def test_user_list_in_each_format(inv: Inv) -> None:
    ok(inv.run("store", "add", "north"))
    add_ana(inv, "--store", "north", "--store", "main", "--password-stdin")
    assert (
        ok(inv.run("user", "list", "--format", "csv"))
        .stdout.splitlines()[1]
        .startswith("ana,clerk,main north,False,")
    )
    table = ok(inv.run("user", "list")).stdout
    assert "ana" in table and "main, north" in table and "$argon2" not in table
    ok(inv.run("user", "set", "ana", "--all-stores"))
    assert "│ all " in ok(inv.run("user", "list")).stdout


def test_user_set_disable_enable_and_remove(inv: Inv) -> None:
    add_ana(inv, "--password-stdin")
    secret = ok(inv.run("token", "create", "--user", "ana", "-q")).stdout.strip()
    assert ok(inv.run("user", "set", "ana", "--role", "manager", "-s", "main")).stdout == (
        "Updated ana (manager, stores main)\n"
    )
    assert ok(inv.run("user", "disable", "ana")).stdout == (
        "Disabled ana: its logins and tokens are refused\n"
    )
    with inv.open() as backend, pytest.raises(Unauthenticated):
        backend.authenticate(secret)
    assert ok(inv.run("user", "enable", "ANA")).stdout == "Enabled ana (manager, stores main)\n"
    with inv.open() as backend:
        assert backend.authenticate(secret).role == "manager"
    assert ok(inv.run("user", "remove", "ana")).stdout == "Removed user ana and its tokens\n"
    assert ok(inv.run("token", "list", "--format", "json")).stdout == "[]\n"
    refused(inv.run("user", "remove", "ana"), 1, "no user 'ana'")


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("user", "set", "bob", "--role", "admin"), 1, "no user 'bob'"),
        (("user", "disable", "bob"), 1, "no user 'bob'"),
        (("user", "passwd", "bob", "--password-stdin"), 1, "no user 'bob'"),
        (("user", "add", "bob", "--role", "clerk", "-s", "nowhere", "--password-stdin"), 1,
         "no store 'nowhere'"),
        (("user", "add", "Bob Smith", "--role", "clerk", "--password-stdin"), 1,
         "username: 'Bob Smith' is not a user name (1-64 of a-z, 0-9, '.', '_', '@', '-', "
         "starting with a letter or digit)"),
        (("token", "create", "--user", "bob"), 1, "no user 'bob'"),
        (("token", "list", "--user", "bob"), 1, "no user 'bob'"),
        (("token", "create", "--user", "ana", "--expires", "3x"), 1,
         "expires: '3x' is not an age (90s, 15m, 24h, 7d, 2w, 18mo, 7y)"),
        (("token", "revoke", "99"), 1, "no token 99"),
    ],
)  # fmt: skip
def test_refusals_name_what_is_wrong(
    inv: Inv, args: tuple[str, ...], code: int, message: str
) -> None:
    refused(inv.run(*args, input=PASSWORD + "\n"), code, message)
    assert ok(inv.run("user", "list", "--format", "json")).stdout == "[]\n"


@pytest.mark.parametrize(
    "args",
    [
        ("user", "set", "ana"),
        ("user", "set", "ana", "--store", "main", "--all-stores"),
        ("user", "add", "ana", "--role", "owner", "--password-stdin"),
        ("user", "add", "ana", "--password-stdin"),
        ("token", "revoke", "one"),
        ("token", "create"),
    ],
)
def test_usage_errors_exit_2(inv: Inv, args: tuple[str, ...]) -> None:
    result = inv.run(*args, input=PASSWORD + "\n")
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout == ""


# -- tokens --------------------------------------------------------------------------------


def test_a_token_is_printed_once_and_listed_without_it(inv: Inv) -> None:
    add_ana(inv, "--password-stdin")
    made = ok(inv.run("token", "create", "--user", "ana", "--name", "till-3"))
    secret = made.stdout.removesuffix("\n")
    assert TOKEN.fullmatch(secret) and made.stdout.count("\n") == 1
    assert re.fullmatch(
        rf"Created token 1 \(till-3\) for ana, until {TIME.pattern}\. "
        r"It is shown only this once: keep it now\.\n",
        made.stderr,
    ), made.stderr
    second = ok(inv.run("token", "create", "--user", "ana", "--expires", "12h", "-q")).stdout
    assert second != made.stdout
    for fmt in ("table", "json", "csv"):
        shown = ok(inv.run("token", "list", "--user", "ana", "--format", fmt)).stdout
        assert "till-3" in shown
        for hidden in (secret, secret[4:], second.strip(), token_digest(secret)):
            assert hidden not in shown
    csv_rows = ok(inv.run("token", "list", "--format", "csv")).stdout.splitlines()
    assert csv_rows[0] == "id,username,name,created_at,expires_at,last_used_at"
    assert [row.split(",")[:3] for row in csv_rows[1:]] == [
        ["1", "ana", "till-3"],
        ["2", "ana", ""],
    ]
    [_, twelve] = json.loads(ok(inv.run("token", "list", "--format", "json")).stdout)
    expires = datetime.fromisoformat(twelve["expires_at"])
    assert abs(expires - datetime.now(UTC) - timedelta(hours=12)) < timedelta(minutes=5)


def test_the_global_quiet_flag_leaves_the_token_alone_on_stdout(inv: Inv) -> None:
    add_ana(inv, "--password-stdin")
    made = ok(inv.run("--quiet", "token", "create", "--user", "ana"))
    assert made.stderr == "" and TOKEN.fullmatch(made.stdout.removesuffix("\n"))


# -- postgres: authenticate is one statement, on the primary -------------------------------


@pytest.fixture
def pg_url() -> Iterator[str]:
    url = fresh_database()
    yield url
    drop_database(url)


def test_postgres_authenticate_is_one_statement_and_reads_stay_on_replicas(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg

    with PostgresBackend(pg_url, actor="tester") as setup:
        setup.add_user("ana", PASSWORD, "clerk")
        secret = setup.create_token("ana").secret
    # The primary named as a replica too: whether reads stay on "replicas" shows in `wrote`.
    backend = PostgresBackend(pg_url, read_urls=[pg_url], actor="tester")
    statements: list[str] = []
    execute = psycopg.Cursor.execute

    def seen(cursor: psycopg.Cursor[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        statements.append(str(query))  # every statement, through SQLAlchemy or not
        return execute(cursor, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", seen)
    try:
        backend.authenticate(secret)  # the first use is written down: two statements
        assert [s.split()[0] for s in statements[-2:]] == ["SELECT", "UPDATE"]
        for _ in range(3):
            statements.clear()
            assert backend.authenticate(secret).username == "ana"
            assert len(statements) == 1 and statements[0].startswith("SELECT")
        assert backend.db.wrote is False
    finally:
        backend.close()
