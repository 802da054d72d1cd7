"""`inv migrate` carries everything that makes retries safe, and loses nothing: a round trip
json -> postgres -> json gives back the history entry for entry, every idempotency
key with its first result, and every user and API token (the same passwords and tokens
work on the target), on real PostgreSQL."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from pg import admin, drop_database, url_for
from typer.testing import CliRunner

from backends import (
    AlreadyExists,
    BatchRow,
    Conflict,
    NotFound,
    Snapshot,
    Unauthenticated,
    ValidationError,
    wire,
)
from backends.jsonfile import JsonBackend
from backends.migrate import migrate
from backends.postgres import PostgresBackend
from inventory_cli.cli import app


@pytest.fixture
def empty_database() -> Iterator[str]:
    """A database with no schema at all, as a new user creates it."""
    name = f"inv_migrate_{os.getpid()}_{os.urandom(3).hex()}"
    with admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield url_for(name)
    drop_database(url_for(name))


def busy_shop(path: Path) -> JsonBackend:
    """A shop with every kind of entry and of idempotency key."""
    shop = JsonBackend(path, actor="ana")
    shop.init()
    shop.add_store("north", "North")
    shop.add_store("empty", "Nothing here")
    shop.add_product("Blue mug", "4.50", sku="MUG", quantity=12, event_id="k-add")
    shop.add_product("Street map", "2.00", sku="Straße", quantity=3)
    shop.adjust("main", "MUG", -2, "sale", event_id="pos-0042")
    shop.transfer("MUG", "main", "north", 4, event_id="k-move")
    shop.edit_product("MUG", price="4.75", event_id="k-edit")
    shop.apply(
        [
            BatchRow(2, "TEA", name="Tea", price=Decimal("3.20"), quantity=5),
            BatchRow(3, "strasse", change=1, idempotency_key="row-1"),
        ],
        event_id="k-batch",
    )
    shop.remove_product("TEA", store="main", force=True, event_id="k-remove")
    return shop


def test_a_round_trip_gives_back_the_history_entry_for_entry_and_every_key(
    tmp_path: Path, empty_database: str
) -> None:
    shop = busy_shop(tmp_path / "inventory.json")
    original = shop.export_state()
    database = PostgresBackend(empty_database, actor="bo", source="migrate")
    report = migrate(shop, database)
    assert (report.copied_stores, report.copied_products) == (2, 3)
    assert report.copied_history == len(original.history)
    assert report.copied_keys == len(original.events) == 7
    assert report.source == report.target
    in_database = database.export_state()
    assert in_database.history == original.history  # ids, times, actors, sources, all

    # A sale retried after the migration is applied once: it replays the first result.
    again = database.adjust("main", "MUG", -2, "sale", event_id="pos-0042")
    assert again.replayed and database.quantity("main", "MUG") == 6
    assert len(database.history()) == len(original.history)

    back = JsonBackend(tmp_path / "back.json", source="migrate")
    migrate(database, back)
    returned = back.export_state()
    assert returned.history == original.history
    assert returned.stores == original.stores
    assert [(p, p.stock) for p in returned.products] == [(p, p.stock) for p in original.products]
    keys = {e.event_id: (e.fingerprint, e.result) for e in returned.events}
    assert keys == {e.event_id: (e.fingerprint, e.result) for e in original.events}
    for call in (
        lambda: back.adjust("main", "MUG", -2, "sale", event_id="pos-0042"),
        lambda: back.transfer("MUG", "main", "north", 4, event_id="k-move")[0],
        lambda: back.edit_product("MUG", price="4.75", event_id="k-edit"),
        lambda: back.remove_product("TEA", store="main", force=True, event_id="k-remove")[0],
    ):
        assert call().replayed
    assert back.export_state().history == original.history
    assert back.verify_audit()[1] == []
    assert database.verify_audit()[1] == []
    database.close()


PASSWORD = "correct horse"


def staffed_shop(path: Path) -> tuple[JsonBackend, dict[str, str]]:
    """A busy shop with an admin, a clerk limited to north and disabled, and tokens
    (one revoked, so the ids have a gap; one used); returns the tokens' secrets."""
    shop = busy_shop(path)
    shop.add_user("ana", PASSWORD, "admin")
    shop.add_user("bob", "battery staple", "clerk", stores=["north"])
    secrets = {"ana": shop.create_token("ana", name="till-1").secret}
    shop.revoke_token(shop.create_token("ana").token.id)
    later = datetime.now(UTC) + timedelta(days=90)
    secrets["bob"] = shop.create_token("bob", name="till-2", expires_at=later).secret
    shop.authenticate(secrets["ana"])  # its last use comes along
    shop.update_user("bob", disabled=True)
    return shop, secrets


def test_users_and_tokens_survive_a_round_trip_json_postgres_json(
    tmp_path: Path, empty_database: str
) -> None:
    shop, secrets = staffed_shop(tmp_path / "inventory.json")
    original = shop.export_state()
    assert [t.id for t in original.tokens] == [1, 3]
    database = PostgresBackend(empty_database, actor="bo", source="migrate")
    report = migrate(shop, database)
    assert (report.copied_users, report.copied_tokens) == (2, 2)
    assert report.source == report.target
    assert (report.source["users"], report.source["tokens"]) == (2, 2)
    in_database = database.export_state()
    assert in_database.users == original.users  # hashes verbatim, roles, stores, flags
    assert in_database.tokens == original.tokens  # digests, ids, names and times
    assert migrate(shop, database).nothing_to_do  # the same users and tokens: all there

    # The same password and the same token work on the target.
    ana = shop.get_user("ana")
    assert database.login("ana", PASSWORD) == ana
    assert database.authenticate(secrets["ana"]) == ana
    bob = database.get_user("bob")
    assert (bob.role, bob.stores, bob.disabled) == ("clerk", ("north",), True)
    with pytest.raises(Unauthenticated):  # still disabled
        database.authenticate(secrets["bob"])
    database.update_user("bob", disabled=False)
    assert database.authenticate(secrets["bob"]).stores == ("north",)
    assert database.create_token("ana").token.id > 3  # after the ids brought
    with pytest.raises(Conflict, match=r"1 of the same users \(bob\)"):  # changed since
        migrate(shop, database)

    back = JsonBackend(tmp_path / "back.json", source="migrate")
    migrate(database, back)
    returned = back.export_state()
    assert returned.users == database.export_state().users
    assert [u.password_hash for u in returned.users] == [u.password_hash for u in original.users]
    assert [t.id for t in returned.tokens] == [1, 3, 4]
    assert back.authenticate(secrets["ana"]) == ana
    assert back.authenticate(secrets["bob"]) == replace(bob, disabled=False)
    assert back.login("ana", PASSWORD) == ana
    with pytest.raises(Unauthenticated):
        back.login("ana", "battery staple")
    database.close()


def test_a_user_name_on_both_sides_refuses_and_writes_nothing(
    tmp_path: Path, empty_database: str
) -> None:
    shop = busy_shop(tmp_path / "inventory.json")
    shop.add_user("ana", PASSWORD, "clerk")
    shop.create_token("ana")
    database = PostgresBackend(empty_database, actor="dba")
    database.init()
    database.add_user("ana", "battery staple", "admin")  # someone else's ana
    before = database.export_state()
    with pytest.raises(Conflict, match=r"already has 1 of the same users \(ana\)"):
        migrate(shop, database)
    assert database.export_state() == before
    assert database.tokens() == [] and database.list_items() == []
    database.close()

    # import_state alone refuses too, and the file is left as it was.
    other = JsonBackend(tmp_path / "other.json")
    other.init()
    other.import_state(Snapshot([], [], [], users=shop.export_state().users))
    path = tmp_path / "other.json"
    kept = path.read_bytes()
    with pytest.raises(AlreadyExists, match="user 'ana' already exists"):
        other.import_state(shop.export_state())
    assert path.read_bytes() == kept and other.list_items() == []


def test_a_snapshot_carries_users_and_tokens_over_the_wire_and_is_checked(
    tmp_path: Path,
) -> None:
    shop = busy_shop(tmp_path / "inventory.json")
    shop.add_user("ana", PASSWORD, "clerk", stores=["north"])
    shop.create_token("ana", name="till-1", expires_at=datetime.now(UTC) + timedelta(days=1))
    state = shop.export_state()
    sent = json.loads(json.dumps(wire.snapshot_json(state)))
    assert wire.snapshot_from_json(sent) == state
    assert sent["users"][0]["password_hash"] == state.users[0].password_hash
    assert sent["tokens"][0]["digest"] == state.tokens[0].digest
    older = {k: v for k, v in sent.items() if k not in ("users", "tokens")}
    assert wire.snapshot_from_json(older) == replace(state, users=[], tokens=[])

    target = JsonBackend(tmp_path / "target.json")
    target.init()
    kept = (tmp_path / "target.json").read_bytes()
    for bad in (
        replace(state.users[0], password_hash="plain text"),
        replace(state.users[0], role="owner"),
        replace(state.users[0], stores=("nowhere",)),
    ):
        with pytest.raises((ValidationError, NotFound)):
            target.import_state(Snapshot([], [], [], users=[bad]))
    with pytest.raises(ValidationError, match="digest"):
        target.import_state(
            Snapshot(
                [], [], [], users=state.users, tokens=[replace(state.tokens[0], digest="x" * 64)]
            )
        )
    with pytest.raises(NotFound, match="no user 'ana'"):
        target.import_state(Snapshot(state.stores, [], [], tokens=state.tokens))
    assert (tmp_path / "target.json").read_bytes() == kept


def test_migrating_again_changes_nothing_and_a_reused_key_is_refused(
    tmp_path: Path, empty_database: str
) -> None:
    shop = busy_shop(tmp_path / "inventory.json")
    database = PostgresBackend(empty_database, actor="bo")
    migrate(shop, database)
    assert migrate(shop, database).nothing_to_do
    other = JsonBackend(tmp_path / "other.json")
    other.init()
    other.add_product("Other", "1.00", sku="OTH", event_id="pos-0042")
    with pytest.raises(Exception, match="same idempotency keys for other requests"):
        migrate(other, database, merge=True)
    database.close()


def test_the_cli_prints_what_it_copied_and_checked(tmp_path: Path, empty_database: str) -> None:
    shop = busy_shop(tmp_path / "inventory.json")
    shop.add_user("ana", PASSWORD, "clerk")
    shop.create_token("ana", name="till-1")
    shop.create_token("ana", name="till-2")
    result = CliRunner().invoke(
        app,
        ["--file", str(tmp_path / "inventory.json"), "migrate", "--to", "postgres"],
        env={"INV_DATABASE_URL": empty_database},
    )
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(
        "Copied 2 new stores, 3 products, 12 history entries, 7 idempotency keys, 1 users "
        "and 2 API tokens to postgresql://postgres@127.0.0.1"
    )
    table = {line.split()[0] if "units" not in line else line[:14]: line for line in lines[1:]}
    assert table["stores"].split()[1:] == ["3", "3"]
    assert table["history"].split()[1:] == ["12", "12"]
    assert table["keys"].split()[1:] == ["7", "7"]
    assert table["users"].split()[1:] == ["1", "1"]
    assert table["tokens"].split()[1:] == ["2", "2"]
    assert [line.split()[-2:] for line in lines if line.startswith("units at north")] == [
        ["4", "4"]
    ]
    retried = CliRunner().invoke(
        app,
        [
            "--backend",
            "postgres",
            "update",
            "MUG",
            "--change",
            "-2",
            "--reason",
            "sale",
            "--idempotency-key",
            "pos-0042",
        ],
        env={"INV_DATABASE_URL": empty_database},
    )
    assert retried.exit_code == 0
    assert retried.stdout == (
        "MUG at main: 12 -> 10 (-2) (already applied with this idempotency key; "
        "nothing changed now)\n"
    )
    PostgresBackend(empty_database).close()


def test_a_source_that_cannot_be_read_creates_no_target(
    tmp_path: Path, empty_database: str
) -> None:
    broken = tmp_path / "inventory.json"
    broken.write_text("{not json")
    target = tmp_path / "new.json"
    result = CliRunner().invoke(
        app, ["--file", str(broken), "migrate", "--to", "json", "--to-file", str(target)]
    )
    assert result.exit_code == 2  # the same backend: a usage error before anything
    assert not target.exists()
    result = CliRunner().invoke(
        app,
        ["--file", str(broken), "migrate", "--to", "postgres"],
        env={"INV_DATABASE_URL": empty_database},
    )
    assert result.exit_code == 78
    assert result.stderr.startswith("Error: ") and "not valid JSON" in result.stderr
    with admin() as conn:
        name = empty_database.rpartition("/")[2]
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            assert cursor.fetchone() is not None
    database = PostgresBackend(empty_database)
    with database.db.connect(check=False) as connection:
        from backends.postgres import schema

        assert schema.current_revision(connection) is None  # no schema was created
    database.close()


def test_migrating_into_a_database_someone_ran_init_on(tmp_path: Path, empty_database: str) -> None:
    shop = busy_shop(tmp_path / "inventory.json")
    original = shop.export_state()
    database = PostgresBackend(empty_database, actor="dba")
    database.init()  # its own store.create entry: no products, no other history
    report = migrate(shop, database)  # no --merge needed
    assert report.copied_history == len(original.history)
    after = database.export_state()
    assert [m.action for m in after.history[:1]] == ["store.create"]
    assert [replace(m, id=0) for m in after.history[1:]] == [
        replace(m, id=0) for m in original.history
    ]
    again = database.transfer("MUG", "main", "north", 4, event_id="k-move")
    moved_out = [
        m for m in after.history if (m.event_id, m.action) == ("k-move", "stock.transfer_out")
    ]
    assert again[0].replayed and [again[0]] == moved_out  # the entry with its new id
    database.close()


def test_a_result_an_earlier_inv_kept_without_its_entries_replays_from_the_history(
    empty_database: str,
) -> None:
    database = PostgresBackend(empty_database, actor="bo")
    database.init()
    database.add_product("Widget", "1.00", sku="W-1")
    database.add_store("north")
    first = database.edit_product("W-1", price="2.00", event_id="k-edit")
    database.remove_store("north", event_id="k-store")
    with psycopg.connect(empty_database, autocommit=True) as conn:
        # What the first postgres release remembered for these two kinds of request.
        conn.execute(
            "UPDATE applied_events SET result = result - 'movements' "
            "WHERE event_id IN ('k-edit', 'k-store')"
        )
    again = database.edit_product("W-1", price="2.00", event_id="k-edit")
    assert again.replayed and again.changes == first.changes == "price 1.00 -> 2.00"
    removed = database.remove_store("north", event_id="k-store")
    assert [m.action for m in removed] == ["store.delete"] and removed[0].replayed
    database.close()
