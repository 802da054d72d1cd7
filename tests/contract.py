"""The conformance suite: every behaviour of the `Backend` contract, written once.

Each backend's test module subclasses `BackendContract` and supplies two fixtures; the
tests use nothing but the `Backend` interface and the types and errors of `backends`, so a
difference between backends is a bug, not a capability flag.
"""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from backends import (
    AlreadyExists,
    Backend,
    BatchRejected,
    BatchRow,
    Conflict,
    InsufficientStock,
    InventoryError,
    Item,
    Movement,
    MovementSummary,
    NotFound,
    PermissionDenied,
    Product,
    RefusedError,
    Snapshot,
    StaleExpect,
    Store,
    StoreValue,
    Unauthenticated,
    ValidationError,
)
from backends.auth import Token, token_digest

__all__ = ["BackendContract", "build_shop", "item_to_row", "snapshot"]

MakeBackend = Callable[[], Backend]


# -- helpers (no fixtures) -------------------------------------------------------------


def snapshot(backend: Backend) -> tuple[list[Item], list[Store], list[Movement]]:
    """Everything observable, to show that a refused or repeated request changed nothing."""
    return backend.list_items(), backend.stores(), backend.history()


def key() -> str:
    return str(uuid.uuid4())


def actions(entries: Sequence[Movement]) -> list[str]:
    return [m.action for m in entries]


def new_entries(backend: Backend, before: int) -> list[Movement]:
    """The audit entries written since the history held `before` entries, newest first."""
    entries = backend.history()
    assert len(entries) >= before
    return entries[: len(entries) - before]


def not_theirs(state: Snapshot, target: Backend) -> Snapshot:
    """`state` without the users `target` has already (over HTTP, each server has its own
    admin `tester`, with a token), as `inv migrate` leaves them out."""
    theirs = {u.username for u in target.users()}
    return replace(
        state,
        users=[u for u in state.users if u.username not in theirs],
        tokens=[t for t in state.tokens if t.username not in theirs],
    )


def tick() -> None:
    """Until the clock shows a later millisecond, so entries on either side of a timestamp
    (kept to the microsecond everywhere) are told apart, whichever clock stamps them."""
    start = datetime.now(UTC)
    while datetime.now(UTC) - start < timedelta(milliseconds=5):
        pass  # a few milliseconds of the clock itself, whatever the load


def build_shop(backend: Backend) -> None:
    """A small shop used by the list, report and round-trip tests.

    Rows by sku (store, quantity, value):
      A-1 Pear           0.50 Food  reorder 5: main 3 (1.50, low), north 20 (10.00)
      B-2 Banana Bread   3.00 Food  reorder 0: main 10 (30.00)
      C-3 Claw Hammer   12.00 Tools reorder 2: main 2 (24.00, low: equal to the level)
      D-4 Drill         80.00 Tools reorder 0: north 1 (80.00)
      E-5 Apple Corer    9.99 -     reorder 4: stocked nowhere (never low)
    """
    backend.add_store("north", "North Side")
    backend.add_product(
        "Pear", "0.50", sku="A-1", quantity=3, category="Food", reorder_level=5, unit="kg"
    )
    backend.adjust("north", "A-1", 20, "restock")
    backend.add_product("Banana Bread", "3", sku="B-2", quantity=10, category="Food")
    backend.add_product(
        "Claw Hammer", "12.00", sku="C-3", quantity=2, category="Tools", reorder_level=2
    )
    backend.add_product("Drill", "80", sku="D-4", store="north", quantity=1, category="Tools")
    backend.add_product("Apple Corer", "9.99", sku="E-5", reorder_level=4)
    backend.remove_product("E-5", store="main")


def shop_item(sku: str, store: str | None, quantity: int) -> Item:
    """The `Item` that `build_shop` leaves for (sku, store)."""
    catalog: dict[str, tuple[str, str, str, str | None, int]] = {
        "A-1": ("Pear", "0.50", "kg", "Food", 5),
        "B-2": ("Banana Bread", "3.00", "each", "Food", 0),
        "C-3": ("Claw Hammer", "12.00", "each", "Tools", 2),
        "D-4": ("Drill", "80.00", "each", "Tools", 0),
        "E-5": ("Apple Corer", "9.99", "each", None, 4),
    }
    name, price, unit, category, level = catalog[sku]
    return Item(sku, name, Decimal(price), unit, category, level, store, quantity)


A1_MAIN = shop_item("A-1", "main", 3)
A1_NORTH = shop_item("A-1", "north", 20)
B2_MAIN = shop_item("B-2", "main", 10)
C3_MAIN = shop_item("C-3", "main", 2)
D4_NORTH = shop_item("D-4", "north", 1)
E5_NOWHERE = shop_item("E-5", None, 0)
SHOP_ROWS = [A1_MAIN, A1_NORTH, B2_MAIN, C3_MAIN, D4_NORTH, E5_NOWHERE]

#: Where `BackendContract._mixed_rows` goes wrong: (row, column).
MIXED_PROBLEMS = [(4, "store"), (8, "price"), (12, "change")]


def item_to_row(number: int, item: Item, store_names: dict[str, str]) -> BatchRow:
    """One export row: the catalog columns, then the store and quantity if stocked."""
    return BatchRow(
        row=number,
        sku=item.sku,
        name=item.name,
        price=item.price,
        unit=item.unit,
        category=item.category,
        reorder_level=item.reorder_level,
        store=item.store,
        store_name=store_names[item.store] if item.store is not None else None,
        quantity=item.quantity if item.store is not None else None,
    )


def where(problems: Sequence[Any]) -> list[tuple[int, str | None]]:
    return sorted((p.row, p.column) for p in problems)


class BackendContract:
    """Every behaviour of the `Backend` contract.  Subclass it once per backend.

    The subclass provides two fixtures:

    * ``backend``: a fresh, initialised backend holding only store ``main``, opened with
      ``actor="tester"`` and ``source="cli"`` (over http the server names the token's
      user and ``api``: entries are checked against ``backend.actor`` and ``.source``);
    * ``make_backend``: a callable that returns another such backend, independent of
      ``backend`` and of every other one it made (used by the export/import round trip).

    Both are closed by the fixtures.  For example::

        class TestJsonContract(BackendContract):
            @pytest.fixture
            def make_backend(self, tmp_path): ...

            @pytest.fixture
            def backend(self, make_backend):
                return make_backend()
    """

    # -- set-up ------------------------------------------------------------------------

    def test_fresh_backend_has_only_main_and_nothing_stocked(self, backend: Backend) -> None:
        assert [s.code for s in backend.stores()] == ["main"]
        assert backend.list_items() == []

    def test_init_again_returns_false_and_changes_nothing(self, backend: Backend) -> None:
        backend.add_product("Widget", "1.00", sku="W-1", quantity=2)
        before = snapshot(backend)
        assert backend.init() is False
        assert snapshot(backend) == before

    def test_describe_says_where_the_data_lives(self, backend: Backend) -> None:
        text = backend.describe()
        assert isinstance(text, str)
        assert text.strip() != ""

    def test_close_is_safe_twice_and_works_as_context_manager(
        self, make_backend: MakeBackend
    ) -> None:
        other = make_backend()
        with other as entered:
            assert entered is other
            assert [s.code for s in entered.stores()] == ["main"]
        other.close()  # a second close must not raise

    # -- stores ------------------------------------------------------------------------

    def test_add_store(self, backend: Backend) -> None:
        store = backend.add_store("north", "North Side")
        assert store == Store("north", "North Side")
        assert Store("north", "North Side") in backend.stores()

    def test_stores_are_listed_by_code(self, backend: Backend) -> None:
        backend.add_store("zeta")
        backend.add_store("alpha")
        backend.add_store("m-2")
        assert [s.code for s in backend.stores()] == ["alpha", "m-2", "main", "zeta"]

    def test_store_name_defaults_to_code(self, backend: Backend) -> None:
        assert backend.add_store("depot") == Store("depot", "depot")
        assert Store("depot", "depot") in backend.stores()

    def test_store_code_is_lower_cased(self, backend: Backend) -> None:
        store = backend.add_store("North_2", "North")
        assert store.code == "north_2"
        assert [s.code for s in backend.stores()] == ["main", "north_2"]

    def test_duplicate_store_refused(self, backend: Backend) -> None:
        backend.add_store("north", "North")
        before = snapshot(backend)
        for code in ("north", "NORTH", "main"):
            with pytest.raises(AlreadyExists):
                backend.add_store(code, "Other")
        assert snapshot(backend) == before

    @pytest.mark.parametrize("code", ["has space", "a/b", "café", "", "   ", "x" * 65, "a.b"])
    def test_store_code_must_be_a_slug(self, backend: Backend, code: str) -> None:
        before = snapshot(backend)
        with pytest.raises(ValidationError):
            backend.add_store(code)
        assert snapshot(backend) == before

    def test_add_store_records_store_create(self, backend: Backend) -> None:
        before = len(backend.history())
        backend.add_store("north", "North")
        [entry] = new_entries(backend, before)
        assert entry.action == "store.create"
        assert entry.store == "north"
        assert entry.sku is None
        assert (entry.actor, entry.source) == (backend.actor, backend.source)

    def test_remove_empty_store(self, backend: Backend) -> None:
        backend.add_store("north")
        before = len(backend.history())
        backend.remove_store("north")
        assert [s.code for s in backend.stores()] == ["main"]
        entries = new_entries(backend, before)
        assert entries[0].action == "store.delete"
        assert entries[0].store == "north"
        with pytest.raises(NotFound):
            backend.list_items(store="north")

    def test_remove_main_refused(self, backend: Backend) -> None:
        before = snapshot(backend)
        with pytest.raises(ValidationError):
            backend.remove_store("main")
        with pytest.raises(ValidationError):
            backend.remove_store("main", force=True)
        assert snapshot(backend) == before

    def test_remove_unknown_store(self, backend: Backend) -> None:
        with pytest.raises(NotFound):
            backend.remove_store("nowhere")

    def test_remove_store_holding_stock_refused_unless_force(self, backend: Backend) -> None:
        backend.add_store("north")
        backend.add_product("Widget", "2.00", sku="W-1", quantity=1)
        backend.adjust("north", "W-1", 5)
        before = snapshot(backend)
        with pytest.raises(Conflict):
            backend.remove_store("north")
        assert snapshot(backend) == before

        backend.remove_store("north", force=True)
        assert [s.code for s in backend.stores()] == ["main"]
        assert backend.get("W-1").stock == {"main": 1}
        assert [(i.store, i.quantity) for i in backend.list_items()] == [("main", 1)]
        assert backend.history()[0].action == "store.delete"

    def test_remove_store_with_only_zero_stock_needs_no_force(self, backend: Backend) -> None:
        backend.add_store("north")
        backend.add_product("Widget", "2.00", sku="W-1", store="north")
        backend.remove_store("north")
        assert [s.code for s in backend.stores()] == ["main"]
        assert backend.get("W-1").stock == {}

    # -- catalog -----------------------------------------------------------------------

    def test_add_product_with_sku(self, backend: Backend) -> None:
        product = backend.add_product(
            "Blue Widget",
            "4.50",
            sku="W-1",
            quantity=5,
            unit="box",
            category="Tools",
            reorder_level=2,
        )
        expected = Product("W-1", "Blue Widget", Decimal("4.50"), "box", "Tools", 2)
        assert product == expected
        assert product.stock == {"main": 5}
        fetched = backend.get("W-1")
        assert fetched == expected
        assert fetched.stock == {"main": 5}

    def test_add_product_defaults(self, backend: Backend) -> None:
        product = backend.add_product("Thing", "1", sku="T-1")
        assert (product.unit, product.category, product.reorder_level) == ("each", None, 0)
        assert product.stock == {"main": 0}
        assert backend.list_items() == [
            Item("T-1", "Thing", Decimal("1.00"), "each", None, 0, "main", 0)
        ]

    def test_generated_skus_count_up(self, backend: Backend) -> None:
        first = backend.add_product("First", "1.00")
        second = backend.add_product("Second", "1.00")
        third = backend.add_product("Third", "1.00")
        assert [first.sku, second.sku, third.sku] == ["P000001", "P000002", "P000003"]
        assert backend.get("p000002").name == "Second"

    def test_generated_sku_skips_one_taken(self, backend: Backend) -> None:
        backend.add_product("Manual", "1.00", sku="p000001")
        generated = backend.add_product("Auto", "1.00")
        assert re.fullmatch(r"P\d{6}", generated.sku)
        assert generated.sku.lower() != "p000001"
        another = backend.add_product("Auto 2", "1.00")
        assert re.fullmatch(r"P\d{6}", another.sku)
        assert len({"p000001", generated.sku.lower(), another.sku.lower()}) == 3

    def test_add_product_records_product_create(self, backend: Backend) -> None:
        before = len(backend.history())
        backend.add_product("Widget", "1.00", sku="W-1", quantity=5)
        [entry] = new_entries(backend, before)
        assert entry.action == "product.create"
        assert (entry.store, entry.sku) == ("main", "W-1")
        assert (entry.delta, entry.quantity_after) == (5, 5)
        assert (entry.actor, entry.source) == (backend.actor, backend.source)

    def test_add_product_at_another_store(self, backend: Backend) -> None:
        backend.add_store("north")
        product = backend.add_product("Widget", "1.00", sku="W-1", store="north", quantity=3)
        assert product.stock == {"north": 3}
        assert backend.get("w-1").stock == {"north": 3}
        assert [(i.store, i.quantity) for i in backend.list_items()] == [("north", 3)]
        assert backend.history()[0].store == "north"

    def test_add_product_to_unknown_store(self, backend: Backend) -> None:
        before = snapshot(backend)
        with pytest.raises(NotFound):
            backend.add_product("Widget", "1.00", sku="W-1", store="nowhere")
        assert snapshot(backend) == before

    def test_duplicate_sku_refused_ignoring_case(self, backend: Backend) -> None:
        backend.add_product("Widget", "1.00", sku="Ab-1", quantity=2)
        before = snapshot(backend)
        for sku in ("Ab-1", "AB-1", "ab-1", "  aB-1 "):
            with pytest.raises(AlreadyExists):
                backend.add_product("Other", "2.00", sku=sku, quantity=9)
        assert snapshot(backend) == before

    def test_sku_lookup_ignores_case_and_keeps_case(self, backend: Backend) -> None:
        backend.add_product("Widget", "1.00", sku="AbC-9")
        assert backend.get("abc-9").sku == "AbC-9"
        assert backend.get("ABC-9").sku == "AbC-9"
        assert backend.adjust("main", "aBc-9", 2).sku == "AbC-9"
        assert [i.sku for i in backend.list_items()] == ["AbC-9"]
        assert backend.get("ABC-9").stock == {"main": 2}

    def test_sku_is_trimmed(self, backend: Backend) -> None:
        product = backend.add_product("Widget", "1.00", sku="  X-1  ")
        assert product.sku == "X-1"
        assert backend.get("X-1").sku == "X-1"
        assert backend.get(" x-1 ").sku == "X-1"

    def test_get_unknown_sku(self, backend: Backend) -> None:
        with pytest.raises(NotFound):
            backend.get("nope")

    def test_quantity_of_one_item(self, backend: Backend) -> None:
        backend.add_store("north")
        backend.add_product("Widget", "1.00", sku="W-1", quantity=4)
        assert backend.quantity("main", "w-1") == 4
        assert backend.quantity("north", "W-1") == 0, "not stocked there: 0"
        backend.adjust("north", "W-1", 3)
        backend.adjust("main", "W-1", -1)
        assert (backend.quantity("main", "W-1"), backend.quantity("north", "W-1")) == (3, 3)
        assert backend.quantity("main", "W-1") == 3, "asked again (a cache hit): the same"
        with pytest.raises(NotFound):
            backend.quantity("main", "nope")
        with pytest.raises(NotFound):
            backend.quantity("south", "W-1")
        backend.remove_product("W-1", store="north", force=True)
        assert backend.quantity("north", "W-1") == 0
        backend.remove_product("W-1", force=True)
        with pytest.raises(NotFound):
            backend.quantity("main", "W-1")

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"name": ""},
            {"name": "   "},
            {"name": "bad\x07name"},
            {"sku": "   "},
            {"quantity": -1},
            {"reorder_level": -1},
            {"unit": ""},
            {"sku": "S" * 65},
            {"name": "n" * 201},
            {"quantity": 2**31},
            {"quantity": 1.5},
        ],
        ids=[
            "empty-name",
            "blank-name",
            "control-char",
            "blank-sku",
            "neg-qty",
            "neg-level",
            "empty-unit",
            "long-sku",
            "long-name",
            "huge-qty",
            "float-qty",
        ],
    )
    def test_add_product_bad_values(self, backend: Backend, kwargs: dict[str, Any]) -> None:
        args: dict[str, Any] = {"name": "Widget", "price": "1.00", "sku": "W-1", **kwargs}
        before = snapshot(backend)
        with pytest.raises(ValidationError):
            backend.add_product(**args)
        assert snapshot(backend) == before

    def test_edit_every_field(self, backend: Backend) -> None:
        backend.add_product("Blue Widget", "4.50", sku="W-1", quantity=5, category="Tools")
        edit = backend.edit_product(
            "w-1", name="Red Widget", price="4.75", unit="kg", category="Garden", reorder_level=3
        )
        edited = edit.product
        expected = Product("W-1", "Red Widget", Decimal("4.75"), "kg", "Garden", 3)
        assert edited == expected
        assert edit.changes == (
            "name Blue Widget -> Red Widget; price 4.50 -> 4.75; unit each -> kg; "
            "category Tools -> Garden; reorder_level 0 -> 3"
        )
        assert not edit.replayed
        assert edited.stock == {"main": 5}
        assert backend.get("W-1") == expected

    def test_edit_none_leaves_fields_alone(self, backend: Backend) -> None:
        backend.add_product(
            "Blue Widget", "4.50", sku="W-1", unit="box", category="Tools", reorder_level=2
        )
        edited = backend.edit_product("W-1", name="Red Widget").product
        assert edited == Product("W-1", "Red Widget", Decimal("4.50"), "box", "Tools", 2)

    def test_edit_empty_category_clears_it(self, backend: Backend) -> None:
        backend.add_product("Widget", "1.00", sku="W-1", category="Tools")
        assert backend.edit_product("W-1", category="").product.category is None
        assert backend.get("W-1").category is None
        assert backend.list_items()[0].category is None

    def test_edit_records_update_listing_what_changed(self, backend: Backend) -> None:
        backend.add_product("Blue Widget", "4.50", sku="W-1")
        before = len(backend.history())
        backend.edit_product("W-1", price="4.75")
        [entry] = new_entries(backend, before)
        assert entry.action == "product.update"
        assert entry.sku == "W-1"
        assert (entry.actor, entry.source) == (backend.actor, backend.source)
        assert entry.reason is not None
        assert "price" in entry.reason
        assert "4.50" in entry.reason
        assert "4.75" in entry.reason

        before = len(backend.history())
        backend.edit_product("W-1", name="Red Widget", unit="kg", price="4.75")
        [entry] = new_entries(backend, before)
        assert entry.reason is not None
        assert "name" in entry.reason
        assert "unit" in entry.reason
        assert "price" not in entry.reason  # the price did not change this time

    def test_edit_records_nothing_when_nothing_differs(self, backend: Backend) -> None:
        backend.add_product("Widget", "4.50", sku="W-1", category="Tools")
        before = snapshot(backend)
        edited = backend.edit_product("w-1", name="Widget", price="4.5", category="Tools")
        assert edited.product == Product("W-1", "Widget", Decimal("4.50"), "each", "Tools", 0)
        assert edited.changes is None
        assert backend.edit_product("W-1") == edited
        assert snapshot(backend) == before

    def test_edit_unknown_sku(self, backend: Backend) -> None:
        with pytest.raises(NotFound):
            backend.edit_product("nope", name="X")

    def test_edit_bad_value_changes_nothing(self, backend: Backend) -> None:
        backend.add_product("Widget", "4.50", sku="W-1")
        before = snapshot(backend)
        with pytest.raises(ValidationError):
            backend.edit_product("W-1", name="New", price="-1")
        with pytest.raises(ValidationError):
            backend.edit_product("W-1", name="  ")
        with pytest.raises(ValidationError):
            backend.edit_product("W-1", reorder_level=-2)
        assert snapshot(backend) == before

    def test_remove_product_from_one_store(self, backend: Backend) -> None:
        backend.add_store("north")
        backend.add_product("Widget", "1.00", sku="W-1")
        backend.adjust("north", "W-1", 3)
        before = len(backend.history())
        entries = backend.remove_product("w-1", store="main")
        assert [(m.action, m.store, m.sku, m.delta) for m in entries] == [
            ("product.delete", "main", "W-1", 0)
        ]
        assert new_entries(backend, before) == entries
        assert backend.get("W-1").stock == {"north": 3}
        assert [(i.store, i.quantity) for i in backend.list_items()] == [("north", 3)]

    def test_remove_product_from_store_with_stock_needs_force(self, backend: Backend) -> None:
        backend.add_product("Widget", "1.00", sku="W-1", quantity=5)
        before = snapshot(backend)
        with pytest.raises(Conflict):
            backend.remove_product("W-1", store="main")
        assert snapshot(backend) == before

        entries = backend.remove_product("W-1", store="main", force=True)
        assert [(m.action, m.store, m.delta) for m in entries] == [("product.delete", "main", -5)]
        assert backend.get("W-1").stock == {}
        assert backend.list_items() == [
            Item("W-1", "Widget", Decimal("1.00"), "each", None, 0, None, 0)
        ]

    def test_remove_product_from_catalog(self, backend: Backend) -> None:
        backend.add_store("north")
        backend.add_product("Widget", "1.00", sku="W-1")
        backend.set_quantity("north", "W-1", 0)
        before = len(backend.history())
        entries = backend.remove_product("w-1")
        assert len(entries) == 3
        assert {m.action for m in entries} == {"product.delete"}
        assert {m.sku for m in entries} == {"W-1"}
        assert sorted((m.store, m.delta) for m in entries if m.store is not None) == [
            ("main", 0),
            ("north", 0),
        ]
        assert [m.store for m in entries].count(None) == 1
        assert sorted(m.id for m in new_entries(backend, before)) == sorted(m.id for m in entries)
        with pytest.raises(NotFound):
            backend.get("W-1")
        assert backend.list_items() == []

    def test_remove_product_from_catalog_with_stock_needs_force(self, backend: Backend) -> None:
        backend.add_store("north")
        backend.add_product("Widget", "1.00", sku="W-1", quantity=4)
        backend.adjust("north", "W-1", 2)
        before = snapshot(backend)
        with pytest.raises(Conflict):
            backend.remove_product("W-1")
        assert snapshot(backend) == before

        entries = backend.remove_product("W-1", force=True)
        assert sorted((m.store, m.delta) for m in entries if m.store is not None) == [
            ("main", -4),
            ("north", -2),
        ]
        assert len(entries) == 3
        with pytest.raises(NotFound):
            backend.get("W-1")
        assert backend.list_items() == []

    def test_remove_unknown_product_or_store(self, backend: Backend) -> None:
        backend.add_product("Widget", "1.00", sku="W-1")
        before = snapshot(backend)
        with pytest.raises(NotFound):
            backend.remove_product("nope")
        with pytest.raises(NotFound):
            backend.remove_product("W-1", store="nowhere")
        # Neither there: the store is named first, as by every command that takes one.
        with pytest.raises(NotFound, match="no store 'nowhere'"):
            backend.remove_product("nope", store="nowhere")
        assert snapshot(backend) == before

    def test_sku_can_be_reused_after_removal(self, backend: Backend) -> None:
        backend.add_product("Widget", "1.00", sku="W-1", quantity=2)
        backend.remove_product("W-1", force=True)
        product = backend.add_product("New Widget", "2.00", sku="w-1", quantity=1)
        assert product.sku == "w-1"
        assert backend.get("W-1").name == "New Widget"

    # -- prices ------------------------------------------------------------------------

    @pytest.mark.parametrize(
        ("given", "stored"),
        [
            ("4.5", "4.50"),
            ("4.50", "4.50"),
            ("4.500", "4.50"),
            ("7", "7.00"),
            ("0", "0.00"),
            (" 12.3 ", "12.30"),
            (Decimal("4.5"), "4.50"),
            (Decimal("19.99"), "19.99"),
        ],
    )
    def test_price_is_decimal_with_two_places(
        self, backend: Backend, given: str | Decimal, stored: str
    ) -> None:
        product = backend.add_product("Widget", given, sku="W-1")
        for price in (product.price, backend.get("W-1").price, backend.list_items()[0].price):
            assert isinstance(price, Decimal)
            assert price == Decimal(stored)
            assert str(price) == stored

    @pytest.mark.parametrize(
        "price",
        [
            "4.555",
            "0.001",
            Decimal("1.001"),
            "-1",
            "-0.01",
            "abc",
            "",
            "NaN",
            "Infinity",
            "1e999",
            4.5,
            1.0,
            True,
        ],
        ids=repr,
    )
    def test_bad_price_refused(self, backend: Backend, price: Any) -> None:
        backend.add_product("Widget", "1.00", sku="W-1")
        before = snapshot(backend)
        with pytest.raises(ValidationError):
            backend.add_product("Other", price, sku="O-1")
        with pytest.raises(ValidationError):
            backend.edit_product("W-1", price=price)
        assert snapshot(backend) == before

    def test_edit_price_keeps_decimal(self, backend: Backend) -> None:
        backend.add_product("Widget", "1.00", sku="W-1")
        edited = backend.edit_product("W-1", price=Decimal("2.1")).product
        assert str(edited.price) == "2.10"
        assert str(backend.get("W-1").price) == "2.10"

    # -- stock: adjust and set ---------------------------------------------------------

    def test_adjust_up_and_down(self, backend: Backend) -> None:
        backend.add_product("Widget", "1.00", sku="W-1", quantity=10)
        up = backend.adjust("main", "W-1", 5, "restock")
        assert (up.action, up.store, up.sku) == ("stock.adjust", "main", "W-1")
        assert (up.delta, up.quantity_after, up.reason) == (5, 15, "restock")
        down = backend.adjust("main", "w-1", -4, "sale")
        assert (down.delta, down.quantity_after, down.reason) == (-4, 11, "sale")
        assert backend.get("W-1").stock == {"main": 11}
        assert backend.history()[:2] == [down, up]

    def test_adjust_to_exactly_zero(self, backend: Backend) -> None:
        backend.add_product("Widget", "1.00", sku="W-1", quantity=3)
        assert backend.adjust("main", "W-1", -3).quantity_after == 0
        assert backend.get("W-1").stock == {"main": 0}

    def test_adjust_stocks_product_at_a_new_store(self, backend: Backend) -> None:
        backend.add_store("north")
        backend.add_product("Widget", "1.00", sku="W-1")
        entry = backend.adjust("north", "W-1", 3)
        assert (entry.store, entry.quantity_after) == ("north", 3)
        assert backend.get("W-1").stock == {"main": 0, "north": 3}

    def test_adjust_below_zero_refused_and_changes_nothing(self, backend: Backend) -> None:
        backend.add_store("north")
        backend.add_product("Widget", "1.00", sku="W-1", quantity=3)
        before = snapshot(backend)
        with pytest.raises(InsufficientStock) as refused:
            backend.adjust("main", "W-1", -4, "sale")
        assert refused.value.available == 3
        with pytest.raises(InsufficientStock) as refused:
            backend.adjust("north", "W-1", -1)  # not stocked there: 0 on hand
        assert refused.value.available == 0
        assert snapshot(backend) == before
        assert backend.get("W-1").stock == {"main": 3}

    def test_adjust_bad_values(self, backend: Backend) -> None:
        backend.add_product("Widget", "1.00", sku="W-1", quantity=5)
        before = snapshot(backend)
        with pytest.raises(ValidationError):
            backend.adjust("main", "W-1", 1.5)  # type: ignore[arg-type]
        with pytest.raises(ValidationError):
            backend.adjust("main", "W-1", 1, "bad\x00reason")
        with pytest.raises(ValidationError):
            backend.set_quantity("main", "W-1", 2**31)
        assert snapshot(backend) == before

    def test_adjust_unknown_sku_or_store(self, backend: Backend) -> None:
        backend.add_product("Widget", "1.00", sku="W-1")
        before = snapshot(backend)
        with pytest.raises(NotFound):
            backend.adjust("main", "nope", 1)
        with pytest.raises(NotFound):
            backend.adjust("nowhere", "W-1", 1)
        assert snapshot(backend) == before

    def test_set_quantity_records_the_implied_delta(self, backend: Backend) -> None:
        backend.add_product("Widget", "1.00", sku="W-1", quantity=10)
        down = backend.set_quantity("main", "w-1", 7, "count")
        assert (down.action, down.store, down.sku) == ("stock.set", "main", "W-1")
        assert (down.delta, down.quantity_after, down.reason) == (-3, 7, "count")
        up = backend.set_quantity("main", "W-1", 12)
        assert (up.delta, up.quantity_after) == (5, 12)
        assert backend.get("W-1").stock == {"main": 12}
        assert backend.history()[:2] == [up, down]

    def test_set_quantity_to_the_same_value_records_zero(self, backend: Backend) -> None:
        backend.add_product("Widget", "1.00", sku="W-1", quantity=7)
        before = len(backend.history())
        entry = backend.set_quantity("main", "W-1", 7, "count")
        assert (entry.action, entry.delta, entry.quantity_after) == ("stock.set", 0, 7)
        assert new_entries(backend, before) == [entry]

    def test_set_quantity_stocks_product_at_a_new_store(self, backend: Backend) -> None:
        backend.add_store("north")
        backend.add_product("Widget", "1.00", sku="W-1", quantity=1)
        entry = backend.set_quantity("north", "W-1", 4)
        assert (entry.delta, entry.quantity_after) == (4, 4)
        assert backend.get("W-1").stock == {"main": 1, "north": 4}

    def test_set_quantity_negative_refused(self, backend: Backend) -> None:
        backend.add_product("Widget", "1.00", sku="W-1", quantity=1)
        before = snapshot(backend)
        with pytest.raises(ValidationError):
            backend.set_quantity("main", "W-1", -1)
        with pytest.raises(NotFound):
            backend.set_quantity("main", "nope", 1)
        with pytest.raises(NotFound):
            backend.set_quantity("nowhere", "W-1", 1)
        assert snapshot(backend) == before

    # -- stock: transfer ---------------------------------------------------------------

    def test_transfer_writes_both_entries(self, backend: Backend) -> None:
        backend.add_store("north")
        backend.add_product("Widget", "1.00", sku="W-1", quantity=10)
        before = len(backend.history())
        out, into = backend.transfer("w-1", "main", "north", 4, "rebalance")
        assert (out.action, out.store, out.sku) == ("stock.transfer_out", "main", "W-1")
        assert (out.delta, out.quantity_after) == (-4, 6)
        assert (into.action, into.store, into.sku) == ("stock.transfer_in", "north", "W-1")
        assert (into.delta, into.quantity_after) == (4, 4)
        assert out.reason == into.reason == "rebalance"
        assert sorted(m.id for m in new_entries(backend, before)) == sorted([out.id, into.id])
        assert backend.get("W-1").stock == {"main": 6, "north": 4}

        backend.transfer("W-1", "north", "main", 4)
        assert backend.get("W-1").stock == {"main": 10, "north": 0}

    def test_transfer_is_all_or_nothing_when_source_is_short(self, backend: Backend) -> None:
        backend.add_store("north")
        backend.add_product("Widget", "1.00", sku="W-1", quantity=3)
        before = snapshot(backend)
        with pytest.raises(InsufficientStock) as refused:
            backend.transfer("W-1", "main", "north", 4)
        assert refused.value.available == 3
        assert snapshot(backend) == before
        assert backend.get("W-1").stock == {"main": 3}

    def test_transfer_to_the_same_store_refused(self, backend: Backend) -> None:
        backend.add_product("Widget", "1.00", sku="W-1", quantity=3)
        before = snapshot(backend)
        with pytest.raises(ValidationError):
            backend.transfer("W-1", "main", "main", 1)
        assert snapshot(backend) == before

    def test_transfer_unknown_store_or_sku(self, backend: Backend) -> None:
        backend.add_store("north")
        backend.add_product("Widget", "1.00", sku="W-1", quantity=3)
        before = snapshot(backend)
        with pytest.raises(NotFound):
            backend.transfer("W-1", "main", "nowhere", 1)
        with pytest.raises(NotFound):
            backend.transfer("W-1", "nowhere", "main", 1)
        with pytest.raises(NotFound):
            backend.transfer("nope", "main", "north", 1)
        assert snapshot(backend) == before

    @pytest.mark.parametrize("quantity", [0, -1])
    def test_transfer_quantity_must_be_positive(self, backend: Backend, quantity: int) -> None:
        backend.add_store("north")
        backend.add_product("Widget", "1.00", sku="W-1", quantity=3)
        before = snapshot(backend)
        with pytest.raises(ValidationError):
            backend.transfer("W-1", "main", "north", quantity)
        assert snapshot(backend) == before

    # -- idempotency -------------------------------------------------------------------

    def test_adjust_same_event_id_returns_first_result(self, backend: Backend) -> None:
        backend.add_product("Widget", "1.00", sku="W-1", quantity=10)
        event = key()
        first = backend.adjust("main", "W-1", 5, "restock", event_id=event)
        assert first.event_id == event
        before = snapshot(backend)
        again = backend.adjust("main", "W-1", 5, "restock", event_id=event)
        assert again == first
        assert snapshot(backend) == before
        assert backend.get("W-1").stock == {"main": 15}

    def test_repeat_after_later_changes_still_changes_nothing(self, backend: Backend) -> None:
        backend.add_product("Widget", "1.00", sku="W-1", quantity=10)
        event = key()
        first = backend.adjust("main", "W-1", -10, "sale", event_id=event)
        backend.adjust("main", "W-1", 3, "restock")
        before = snapshot(backend)
        assert backend.adjust("main", "W-1", -10, "sale", event_id=event) == first
        assert snapshot(backend) == before
        assert backend.get("W-1").stock == {"main": 3}

    def test_set_quantity_same_event_id_returns_first_result(self, backend: Backend) -> None:
        backend.add_product("Widget", "1.00", sku="W-1", quantity=10)
        event = key()
        first = backend.set_quantity("main", "W-1", 4, "count", event_id=event)
        assert first.event_id == event
        backend.adjust("main", "W-1", 1)
        before = snapshot(backend)
        assert backend.set_quantity("main", "W-1", 4, "count", event_id=event) == first
        assert snapshot(backend) == before
        assert backend.get("W-1").stock == {"main": 5}

    def test_transfer_same_event_id_returns_first_result(self, backend: Backend) -> None:
        backend.add_store("north")
        backend.add_product("Widget", "1.00", sku="W-1", quantity=10)
        event = key()
        first = backend.transfer("W-1", "main", "north", 4, event_id=event)
        assert first[0].event_id == first[1].event_id == event
        before = snapshot(backend)
        assert backend.transfer("W-1", "main", "north", 4, event_id=event) == first
        assert snapshot(backend) == before
        assert backend.get("W-1").stock == {"main": 6, "north": 4}

    def test_add_product_same_event_id_returns_first_result(self, backend: Backend) -> None:
        event = key()
        first = backend.add_product("Widget", "1.00", sku="W-1", quantity=3, event_id=event)
        assert backend.history()[0].event_id == event
        before = snapshot(backend)
        again = backend.add_product("Widget", "1.00", sku="W-1", quantity=3, event_id=event)
        assert again == first
        assert snapshot(backend) == before

    def test_add_product_generated_sku_same_event_id(self, backend: Backend) -> None:
        event = key()
        first = backend.add_product("Widget", "1.00", event_id=event)
        before = snapshot(backend)
        again = backend.add_product("Widget", "1.00", event_id=event)
        assert again == first
        assert again.sku == "P000001"
        assert snapshot(backend) == before
        assert len(backend.list_items()) == 1

    def test_add_product_repeat_after_removal_does_not_recreate(self, backend: Backend) -> None:
        event = key()
        first = backend.add_product("Widget", "1.00", sku="W-1", event_id=event)
        backend.remove_product("W-1")
        before = snapshot(backend)
        assert backend.add_product("Widget", "1.00", sku="W-1", event_id=event) == first
        assert snapshot(backend) == before
        with pytest.raises(NotFound):
            backend.get("W-1")

    def test_add_store_same_event_id_returns_first_result(self, backend: Backend) -> None:
        event = key()
        first = backend.add_store("north", "North", event_id=event)
        assert backend.history()[0].event_id == event
        before = snapshot(backend)
        assert backend.add_store("north", "North", event_id=event) == first
        assert snapshot(backend) == before

    def test_edit_product_same_event_id_returns_first_result(self, backend: Backend) -> None:
        backend.add_product("Widget", "1.00", sku="W-1")
        event = key()
        first = backend.edit_product("W-1", price="5.00", event_id=event)
        backend.edit_product("W-1", price="6.00")
        before = snapshot(backend)
        again = backend.edit_product("W-1", price="5.00", event_id=event)
        assert again == first
        assert again.replayed and not first.replayed
        assert again.changes == "price 1.00 -> 5.00"  # what the first call did, not now
        assert again.product.price == Decimal("5.00")
        assert snapshot(backend) == before
        assert backend.get("W-1").price == Decimal("6.00")

    def test_remove_product_same_event_id_returns_first_result(self, backend: Backend) -> None:
        backend.add_product("Widget", "1.00", sku="W-1", quantity=2)
        event = key()
        first = backend.remove_product("W-1", force=True, event_id=event)
        before = snapshot(backend)
        assert backend.remove_product("W-1", force=True, event_id=event) == first
        assert snapshot(backend) == before

    def test_remove_store_same_event_id_changes_nothing(self, backend: Backend) -> None:
        backend.add_store("north")
        event = key()
        backend.remove_store("north", event_id=event)
        before = snapshot(backend)
        backend.remove_store("north", event_id=event)  # no NotFound: it was already done
        assert snapshot(backend) == before

    def test_event_id_reused_for_a_different_request(self, backend: Backend) -> None:
        backend.add_store("north")
        backend.add_product("Widget", "1.00", sku="W-1", quantity=10)
        event = key()
        backend.adjust("main", "W-1", 5, event_id=event)
        before = snapshot(backend)
        with pytest.raises(Conflict):
            backend.adjust("main", "W-1", 6, event_id=event)
        with pytest.raises(Conflict):
            backend.adjust("north", "W-1", 5, event_id=event)
        with pytest.raises(Conflict):
            backend.set_quantity("main", "W-1", 5, event_id=event)
        with pytest.raises(Conflict):
            backend.transfer("W-1", "main", "north", 5, event_id=event)
        with pytest.raises(Conflict):
            backend.add_store("south", event_id=event)
        with pytest.raises(Conflict):
            backend.add_product("Other", "1.00", sku="O-1", event_id=event)
        assert snapshot(backend) == before

    def test_transfer_key_reused_with_another_quantity(self, backend: Backend) -> None:
        backend.add_store("north")
        backend.add_product("Widget", "1.00", sku="W-1", quantity=10)
        event = key()
        backend.transfer("W-1", "main", "north", 2, event_id=event)
        before = snapshot(backend)
        with pytest.raises(Conflict):
            backend.transfer("W-1", "main", "north", 3, event_id=event)
        assert snapshot(backend) == before

    @pytest.mark.parametrize("bad", ["k" * 201, "pos\x00-1", "pos-\udcff", "   "])
    def test_a_malformed_idempotency_key_is_refused(self, backend: Backend, bad: str) -> None:
        backend.add_product("Widget", "1.00", sku="W-1", quantity=3)
        before = snapshot(backend)
        with pytest.raises(ValidationError, match="idempotency_key"):
            backend.adjust("main", "W-1", 1, event_id=bad)
        with pytest.raises(ValidationError, match="idempotency_key"):
            backend.apply([BatchRow(2, "W-1", change=1)], event_id=bad)
        assert snapshot(backend) == before

    def test_without_event_id_every_call_applies(self, backend: Backend) -> None:
        backend.add_product("Widget", "1.00", sku="W-1", quantity=0)
        first = backend.adjust("main", "W-1", 1)
        second = backend.adjust("main", "W-1", 1)
        assert backend.get("W-1").stock == {"main": 2}
        assert first.event_id != second.event_id
        assert first.event_id.strip() != ""

    # -- compare-and-set ---------------------------------------------------------------

    def test_adjust_with_matching_expect(self, backend: Backend) -> None:
        backend.add_product("Widget", "1.00", sku="W-1", quantity=10)
        entry = backend.adjust("main", "W-1", -2, expect=10)
        assert entry.quantity_after == 8
        assert backend.get("W-1").stock == {"main": 8}

    def test_adjust_with_stale_expect(self, backend: Backend) -> None:
        backend.add_product("Widget", "1.00", sku="W-1", quantity=10)
        before = snapshot(backend)
        with pytest.raises(Conflict):
            backend.adjust("main", "W-1", -2, expect=9)
        with pytest.raises(Conflict):
            backend.adjust("main", "W-1", 2, expect=11)
        assert snapshot(backend) == before

    def test_set_quantity_with_expect(self, backend: Backend) -> None:
        backend.add_product("Widget", "1.00", sku="W-1", quantity=10)
        before = snapshot(backend)
        with pytest.raises(Conflict):
            backend.set_quantity("main", "W-1", 3, expect=4)
        assert snapshot(backend) == before
        entry = backend.set_quantity("main", "W-1", 3, expect=10)
        assert (entry.delta, entry.quantity_after) == (-7, 3)

    def test_expect_zero_where_not_stocked(self, backend: Backend) -> None:
        backend.add_store("north")
        backend.add_product("Widget", "1.00", sku="W-1", quantity=10)
        before = snapshot(backend)
        with pytest.raises(Conflict):
            backend.set_quantity("north", "W-1", 5, expect=1)
        assert snapshot(backend) == before
        assert backend.set_quantity("north", "W-1", 5, expect=0).quantity_after == 5

    # -- history -----------------------------------------------------------------------

    def test_history_entry_fields(self, backend: Backend) -> None:
        event = key()
        start = datetime.now(UTC)
        backend.add_product("Widget", "1.00", sku="W-1", quantity=10)
        entry = backend.adjust("main", "w-1", -3, "sale", event_id=event)
        end = datetime.now(UTC)
        latest = backend.history()[0]
        assert latest == entry
        assert isinstance(entry.id, int)
        assert entry.at.tzinfo is not None
        assert entry.at.utcoffset() == timedelta(0)
        assert start - timedelta(seconds=1) <= entry.at <= end + timedelta(seconds=1)
        assert (entry.actor, entry.source, entry.event_id) == (backend.actor, backend.source, event)
        assert (entry.store, entry.sku, entry.action) == ("main", "W-1", "stock.adjust")
        assert (entry.delta, entry.quantity_after, entry.reason) == (-3, 7, "sale")

    def test_history_ids_are_unique(self, backend: Backend) -> None:
        build_shop(backend)
        ids = [m.id for m in backend.history()]
        assert len(ids) == len(set(ids))

    def test_history_is_newest_first(self, backend: Backend) -> None:
        backend.add_store("north")
        backend.add_product("Widget", "1.00", sku="W-1", quantity=10)
        backend.adjust("main", "W-1", -1)
        backend.set_quantity("main", "W-1", 4)
        backend.edit_product("W-1", name="Gadget")
        entries = backend.history("W-1")
        assert actions(entries) == [
            "product.update",
            "stock.set",
            "stock.adjust",
            "product.create",
        ]
        assert all(a.at >= b.at for a, b in itertools.pairwise(entries))
        assert backend.history()[0] == entries[0]

    def test_history_for_one_sku_ignores_case(self, backend: Backend) -> None:
        backend.add_product("Widget", "1.00", sku="W-1", quantity=10)
        backend.add_product("Other", "1.00", sku="X-1", quantity=10)
        backend.adjust("main", "W-1", -1)
        backend.adjust("main", "X-1", -1)
        backend.adjust("main", "W-1", -1)
        entries = backend.history("w-1")
        assert entries == backend.history("W-1")
        assert {m.sku for m in entries} == {"W-1"}
        assert actions(entries) == ["stock.adjust", "stock.adjust", "product.create"]
        assert backend.history("nope") == []

    def test_history_for_one_store(self, backend: Backend) -> None:
        backend.add_store("north")
        backend.add_product("Widget", "1.00", sku="W-1", quantity=10)
        backend.transfer("W-1", "main", "north", 2)
        backend.adjust("north", "W-1", -1)
        backend.adjust("main", "W-1", -1)
        entries = backend.history(store="north")
        assert {m.store for m in entries} == {"north"}
        assert actions(entries)[:2] == ["stock.adjust", "stock.transfer_in"]
        assert "stock.transfer_out" not in actions(entries)
        main = backend.history(store="main")
        assert {m.store for m in main} == {"main"}
        assert actions(main)[:3] == ["stock.adjust", "stock.transfer_out", "product.create"]
        assert actions(backend.history("W-1", store="north")) == [
            "stock.adjust",
            "stock.transfer_in",
        ]

    def test_history_since(self, backend: Backend) -> None:
        backend.add_product("Widget", "1.00", sku="W-1", quantity=10)
        tick()
        cut = datetime.now(UTC)
        tick()
        backend.adjust("main", "W-1", -1)
        tick()
        backend.adjust("main", "W-1", -2)
        everything = backend.history()
        assert backend.history(since=cut) == everything[:2]
        assert backend.history("W-1", since=cut) == everything[:2]
        # `since` is inclusive: an entry at exactly that time is in
        assert backend.history(since=everything[1].at) == everything[:2]
        assert backend.history(since=datetime.now(UTC) + timedelta(hours=1)) == []

    def test_history_limit(self, backend: Backend) -> None:
        backend.add_product("Widget", "1.00", sku="W-1", quantity=10)
        for _ in range(4):
            backend.adjust("main", "W-1", -1)
        everything = backend.history()
        assert backend.history(limit=2) == everything[:2]
        assert backend.history("W-1", limit=3) == backend.history("W-1")[:3]
        assert len(backend.history("W-1", limit=100)) == 5

    def test_history_keeps_deleted_products(self, backend: Backend) -> None:
        backend.add_product("Widget", "1.00", sku="W-1", quantity=10)
        backend.adjust("main", "W-1", -4)
        backend.remove_product("W-1", force=True)
        entries = backend.history("w-1")
        assert entries[0].action == "product.delete"
        assert actions(entries).count("product.delete") == 2  # main, then the catalog
        assert actions(entries)[-2:] == ["stock.adjust", "product.create"]
        assert {m.sku for m in entries} == {"W-1"}

    # -- list: filters and sorting -----------------------------------------------------

    def test_list_every_row(self, backend: Backend) -> None:
        build_shop(backend)
        assert backend.list_items() == SHOP_ROWS

    def test_item_value_is_exact(self, backend: Backend) -> None:
        build_shop(backend)
        values = {(i.sku, i.store): i.value for i in backend.list_items()}
        assert values[("A-1", "main")] == Decimal("1.50")
        assert isinstance(values[("A-1", "main")], Decimal)

    def test_list_one_store(self, backend: Backend) -> None:
        build_shop(backend)
        assert backend.list_items(store="north") == [A1_NORTH, D4_NORTH]
        assert backend.list_items(store="main") == [A1_MAIN, B2_MAIN, C3_MAIN]

    def test_list_unknown_store(self, backend: Backend) -> None:
        with pytest.raises(NotFound):
            backend.list_items(store="nowhere")

    def test_product_stocked_nowhere_appears_once(self, backend: Backend) -> None:
        backend.add_store("north")
        backend.add_product("Widget", "1.00", sku="W-1")
        backend.remove_product("W-1", store="main")
        expected = Item("W-1", "Widget", Decimal("1.00"), "each", None, 0, None, 0)
        assert backend.list_items() == [expected]
        assert backend.list_items(store="main") == []
        assert backend.list_items(store="north") == []

    def test_list_low_stock(self, backend: Backend) -> None:
        build_shop(backend)
        assert backend.list_items(low_stock=True) == [A1_MAIN, C3_MAIN]
        assert backend.list_items(low_stock=True, store="north") == []
        backend.adjust("north", "A-1", -15)  # 5 left, equal to the level
        assert backend.list_items(low_stock=True, store="north") == [shop_item("A-1", "north", 5)]

    def test_low_stock_needs_a_reorder_level(self, backend: Backend) -> None:
        backend.add_product("Widget", "1.00", sku="W-1", quantity=0, reorder_level=0)
        backend.add_product("Gadget", "1.00", sku="G-1", quantity=1, reorder_level=1)
        backend.add_product("Gizmo", "1.00", sku="Z-1", quantity=2, reorder_level=1)
        assert [i.sku for i in backend.list_items(low_stock=True)] == ["G-1"]

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("HAMMER", [C3_MAIN]),
            ("ea", [A1_MAIN, A1_NORTH, B2_MAIN]),
            ("e-5", [E5_NOWHERE]),
            ("d-", [D4_NORTH]),
            ("apple", [E5_NOWHERE]),
            ("zzz", []),
        ],
    )
    def test_list_search(self, backend: Backend, text: str, expected: list[Item]) -> None:
        build_shop(backend)
        assert backend.list_items(search=text) == expected

    def test_list_category_is_exact_ignoring_case(self, backend: Backend) -> None:
        build_shop(backend)
        assert backend.list_items(category="tools") == [C3_MAIN, D4_NORTH]
        assert backend.list_items(category="FOOD") == [A1_MAIN, A1_NORTH, B2_MAIN]
        assert backend.list_items(category="tool") == []
        assert backend.list_items(category="Food", store="north") == [A1_NORTH]

    def test_list_filters_combine(self, backend: Backend) -> None:
        build_shop(backend)
        assert backend.list_items(category="food", search="pear", low_stock=True) == [A1_MAIN]

    def test_sort_by_name(self, backend: Backend) -> None:
        build_shop(backend)
        assert backend.list_items(sort="name") == [
            E5_NOWHERE,  # Apple Corer
            B2_MAIN,  # Banana Bread
            C3_MAIN,  # Claw Hammer
            D4_NORTH,  # Drill
            A1_MAIN,  # Pear, main before north
            A1_NORTH,
        ]

    def test_sort_by_quantity(self, backend: Backend) -> None:
        build_shop(backend)
        ascending = [E5_NOWHERE, D4_NORTH, C3_MAIN, A1_MAIN, B2_MAIN, A1_NORTH]
        assert backend.list_items(sort="quantity") == ascending
        assert backend.list_items(sort="quantity", descending=True) == ascending[::-1]

    def test_sort_by_value(self, backend: Backend) -> None:
        build_shop(backend)
        ascending = [E5_NOWHERE, A1_MAIN, A1_NORTH, C3_MAIN, B2_MAIN, D4_NORTH]
        assert backend.list_items(sort="value") == ascending
        assert backend.list_items(sort="value", descending=True) == ascending[::-1]

    def test_sort_by_sku_descending(self, backend: Backend) -> None:
        for sku in ("B-2", "C-3", "A-1"):
            backend.add_product("Thing", "1.00", sku=sku)
        assert [i.sku for i in backend.list_items(descending=True)] == ["C-3", "B-2", "A-1"]

    def test_sort_ties_fall_back_to_sku_then_store(self, backend: Backend) -> None:
        backend.add_store("north")
        backend.add_product("Same", "1.00", sku="Z-2", quantity=1)
        backend.add_product("Same", "2.00", sku="Z-1", quantity=1)
        backend.adjust("north", "Z-1", 1)
        by_name = [(i.sku, i.store) for i in backend.list_items(sort="name")]
        assert by_name == [("Z-1", "main"), ("Z-1", "north"), ("Z-2", "main")]
        by_quantity = [(i.sku, i.store) for i in backend.list_items(sort="quantity")]
        assert by_quantity == [("Z-1", "main"), ("Z-1", "north"), ("Z-2", "main")]

    def test_unknown_sort_key_refused(self, backend: Backend) -> None:
        with pytest.raises(ValidationError):
            backend.list_items(sort="colour")

    def test_limit_and_offset(self, backend: Backend) -> None:
        build_shop(backend)
        assert backend.list_items(limit=2) == SHOP_ROWS[:2]
        assert backend.list_items(limit=2, offset=1) == SHOP_ROWS[1:3]
        assert backend.list_items(offset=4) == SHOP_ROWS[4:]
        assert backend.list_items(offset=10) == []
        assert backend.list_items(sort="quantity", limit=1, descending=True) == [A1_NORTH]

    # -- reports -----------------------------------------------------------------------

    def test_report_value(self, backend: Backend) -> None:
        build_shop(backend)
        backend.add_store("empty", "Empty")
        report = backend.report_value()
        assert report == [
            StoreValue("empty", 0, 0, Decimal("0")),
            StoreValue("main", 3, 15, Decimal("55.50")),
            StoreValue("north", 2, 21, Decimal("90.00")),
        ]
        assert all(isinstance(row.value, Decimal) for row in report)
        assert backend.report_value(store="north") == [StoreValue("north", 2, 21, Decimal("90"))]

    def test_report_value_is_exact_decimal(self, backend: Backend) -> None:
        backend.add_product("Dime", "0.10", sku="D-1", quantity=3)
        backend.add_product("Twenty", "0.20", sku="T-1", quantity=1)
        [row] = backend.report_value()
        assert row == StoreValue("main", 2, 4, Decimal("0.50"))
        assert str(row.value.quantize(Decimal("0.01"))) == "0.50"

    def test_report_low_stock_lowest_first(self, backend: Backend) -> None:
        build_shop(backend)
        assert backend.report_low_stock() == [C3_MAIN, A1_MAIN]
        assert backend.report_low_stock(store="north") == []

    def test_report_movements(self, backend: Backend) -> None:
        backend.add_store("north")
        backend.add_product("Widget", "1.00", sku="W-1", quantity=10)  # main +10
        tick()
        first_cut = datetime.now(UTC)
        tick()
        adjusted = backend.adjust("main", "W-1", -3)  # main -3
        tick()
        second_cut = datetime.now(UTC)
        tick()
        backend.transfer("W-1", "main", "north", 2)  # main -2, north +2
        backend.edit_product("W-1", price="2.00")  # catalog only: not a movement
        backend.set_quantity("main", "W-1", 10)  # 5 -> 10: main +5

        assert backend.report_movements() == [
            MovementSummary("main", "W-1", 4, 15, 5),
            MovementSummary("north", "W-1", 1, 2, 0),
        ]
        assert backend.report_movements(since=first_cut) == [
            MovementSummary("main", "W-1", 3, 5, 5),
            MovementSummary("north", "W-1", 1, 2, 0),
        ]
        assert backend.report_movements(until=second_cut) == [
            MovementSummary("main", "W-1", 2, 10, 3),
        ]
        assert backend.report_movements(since=first_cut, until=second_cut) == [
            MovementSummary("main", "W-1", 1, 0, 3),
        ]
        # [since, until): an entry at exactly `until` is out, at exactly `since` is in
        assert backend.report_movements(until=adjusted.at) == [
            MovementSummary("main", "W-1", 1, 10, 0),
        ]
        assert backend.report_movements(since=adjusted.at, until=second_cut) == [
            MovementSummary("main", "W-1", 1, 0, 3),
        ]
        assert backend.report_movements(store="north") == [
            MovementSummary("north", "W-1", 1, 2, 0),
        ]
        assert backend.report_movements()[0].net == 10

    def test_report_movements_counts_stock_written_off(self, backend: Backend) -> None:
        backend.add_product("Widget", "1.00", sku="W-1", quantity=4)
        backend.add_product("Gadget", "1.00", sku="G-1", quantity=1)
        backend.remove_product("W-1", force=True)
        assert backend.report_movements() == [
            MovementSummary("main", "G-1", 1, 1, 0),
            MovementSummary("main", "W-1", 2, 4, 4),
        ]

    # -- apply: batches ----------------------------------------------------------------

    def test_apply_creates_products(self, backend: Backend) -> None:
        rows = [
            BatchRow(
                2,
                "A-1",
                name="Apple",
                price=Decimal("0.50"),
                category="Food",
                reorder_level=5,
                quantity=10,
            ),
            BatchRow(3, "B-2", name="Bread", price=Decimal("2"), unit="loaf"),
        ]
        before = len(backend.history())
        result = backend.apply(rows)
        assert (result.rows, result.applied, result.duplicates) == (2, 2, 0)
        assert result.problems == []
        assert result.dry_run is False
        apple = backend.get("a-1")
        assert apple == Product("A-1", "Apple", Decimal("0.50"), "each", "Food", 5)
        assert apple.stock == {"main": 10}
        bread = backend.get("B-2")
        assert bread == Product("B-2", "Bread", Decimal("2.00"), "loaf", None, 0)
        assert bread.stock == {}  # no store and no quantity: catalog only
        written = new_entries(backend, before)
        assert sorted(actions(result.changes)) == sorted(actions(written))
        assert actions(written).count("product.create") == 2

    def test_apply_updates_existing_products(self, backend: Backend) -> None:
        backend.add_product("Apple", "0.50", sku="A-1", quantity=10)
        before = len(backend.history())
        result = backend.apply(
            [
                BatchRow(2, "a-1", price=Decimal("0.60")),
                BatchRow(3, "A-1", change=-3, reason="sale"),
                BatchRow(4, "A-1", quantity=20, reason="count"),
            ]
        )
        assert result.problems == []
        assert result.applied == 3
        assert backend.get("A-1") == Product("A-1", "Apple", Decimal("0.60"))
        assert backend.get("A-1").stock == {"main": 20}
        written = new_entries(backend, before)
        assert sorted(actions(written)) == ["product.update", "stock.adjust", "stock.set"]
        adjusted = next(m for m in written if m.action == "stock.adjust")
        assert (adjusted.delta, adjusted.quantity_after, adjusted.reason) == (-3, 7, "sale")
        counted = next(m for m in written if m.action == "stock.set")
        assert (counted.delta, counted.quantity_after) == (13, 20)
        assert len(backend.list_items()) == 1

    def test_apply_row_with_nothing_new_is_unchanged(self, backend: Backend) -> None:
        backend.add_product("Apple", "0.50", sku="A-1", quantity=10)
        before = snapshot(backend)
        result = backend.apply([BatchRow(2, "A-1", name="Apple", price=Decimal("0.5"))])
        assert (result.rows, result.applied, result.unchanged) == (1, 0, 1)
        assert result.problems == []
        assert snapshot(backend) == before

    def test_apply_store_without_quantity_stocks_at_zero(self, backend: Backend) -> None:
        backend.add_store("north")
        backend.add_product("Apple", "0.50", sku="A-1", quantity=10)
        backend.apply([BatchRow(2, "A-1", store="north")])
        assert backend.get("A-1").stock == {"main": 10, "north": 0}

    def test_apply_default_store(self, backend: Backend) -> None:
        backend.add_store("north")
        backend.apply(
            [BatchRow(2, "N-1", name="New", price=Decimal("1.00"), quantity=4)],
            default_store="north",
        )
        assert backend.get("N-1").stock == {"north": 4}

    def test_apply_expect(self, backend: Backend) -> None:
        backend.add_product("Apple", "0.50", sku="A-1", quantity=10)
        result = backend.apply([BatchRow(2, "A-1", change=-2, expect=10)])
        assert result.problems == []
        assert backend.get("A-1").stock == {"main": 8}

        before = snapshot(backend)
        with pytest.raises(BatchRejected) as rejected:
            backend.apply(
                [
                    BatchRow(2, "A-1", quantity=5, expect=8),
                    BatchRow(3, "A-1", quantity=6, expect=8),  # row 2 made it 5
                ]
            )
        assert where(rejected.value.problems) == [(3, "expect")]
        assert snapshot(backend) == before

    def test_apply_store_name_creates_the_store(self, backend: Backend) -> None:
        backend.add_product("Apple", "0.50", sku="A-1", quantity=10)
        result = backend.apply(
            [
                BatchRow(2, "A-1", store="north", store_name="North Side", quantity=5),
                BatchRow(3, "A-1", store="north", change=2),
            ]
        )
        assert result.problems == []
        assert Store("north", "North Side") in backend.stores()
        assert backend.get("A-1").stock == {"main": 10, "north": 7}
        assert "store.create" in actions(backend.history())

    def test_apply_unknown_store_is_a_problem(self, backend: Backend) -> None:
        backend.add_product("Apple", "0.50", sku="A-1", quantity=10)
        before = snapshot(backend)
        with pytest.raises(BatchRejected) as rejected:
            backend.apply([BatchRow(2, "A-1", store="nowhere", quantity=1)])
        assert where(rejected.value.problems) == [(2, "store")]
        assert snapshot(backend) == before

    def test_apply_new_sku_needs_name_and_price(self, backend: Backend) -> None:
        before = snapshot(backend)
        result = backend.apply(
            [
                BatchRow(2, "N-1", price=Decimal("1.00"), quantity=1),
                BatchRow(3, "N-2", name="No price", quantity=1),
            ],
            on_error="skip-rows",
        )
        assert where(result.problems) == [(2, "name"), (3, "price")]
        assert result.applied == 0
        assert snapshot(backend) == before

    def test_apply_oversell_is_a_problem(self, backend: Backend) -> None:
        backend.add_product("Apple", "0.50", sku="A-1", quantity=10)
        before = snapshot(backend)
        with pytest.raises(BatchRejected) as rejected:
            backend.apply([BatchRow(2, "A-1", change=-11)])
        [problem] = rejected.value.problems
        assert (problem.row, problem.column) == (2, "change")
        assert problem.reason.strip() != ""
        assert snapshot(backend) == before

    @staticmethod
    def _mixed_rows() -> list[BatchRow]:
        """Rows 2, 7 and 13 are good; 4, 8 and 12 are bad (store, price, change).

        The numbers are the file's own (blank lines and a header skipped), not positions.
        """
        return [
            BatchRow(2, "N-1", name="New", price=Decimal("1.00"), quantity=3),
            BatchRow(4, "A-1", store="nowhere", quantity=1),
            BatchRow(7, "A-1", store="north", store_name="North", quantity=2),
            BatchRow(8, "N-2", name="No price", quantity=1),
            BatchRow(12, "A-1", change=-50),
            BatchRow(13, "A-1", change=1),
        ]

    def test_apply_reject_all_reports_every_problem_and_writes_nothing(
        self, backend: Backend
    ) -> None:
        backend.add_product("Apple", "0.50", sku="A-1", quantity=10)
        before = snapshot(backend)
        with pytest.raises(BatchRejected) as rejected:
            backend.apply(self._mixed_rows())
        problems = rejected.value.problems
        assert where(problems) == MIXED_PROBLEMS
        assert all(p.reason.strip() for p in problems)
        assert snapshot(backend) == before
        with pytest.raises(NotFound):
            backend.get("N-1")

    def test_apply_skip_rows_applies_the_good_ones(self, backend: Backend) -> None:
        backend.add_product("Apple", "0.50", sku="A-1", quantity=10)
        result = backend.apply(self._mixed_rows(), on_error="skip-rows")
        assert where(result.problems) == MIXED_PROBLEMS
        assert (result.rows, result.applied) == (6, 3)
        assert backend.get("N-1").stock == {"main": 3}
        assert backend.get("A-1").stock == {"main": 11, "north": 2}
        assert Store("north", "North") in backend.stores()
        with pytest.raises(NotFound):
            backend.get("N-2")

    def test_apply_dry_run_writes_nothing(self, backend: Backend) -> None:
        backend.add_product("Apple", "0.50", sku="A-1", quantity=10)
        rows = [
            BatchRow(2, "N-1", name="New", price=Decimal("1.00"), quantity=3),
            BatchRow(3, "A-1", store="north", store_name="North", quantity=2),
            BatchRow(4, "A-1", change=-4),
        ]
        before = snapshot(backend)
        dry = backend.apply(rows, dry_run=True)
        assert dry.dry_run is True
        assert dry.problems == []
        assert dry.changes != []
        assert snapshot(backend) == before

        real = backend.apply(rows)
        assert real.dry_run is False
        assert sorted(actions(dry.changes)) == sorted(actions(real.changes))
        assert [(m.store, m.sku, m.delta) for m in dry.changes] == [
            (m.store, m.sku, m.delta) for m in real.changes
        ]
        assert backend.get("A-1").stock == {"main": 6, "north": 2}

    def test_apply_dry_run_reports_problems(self, backend: Backend) -> None:
        backend.add_product("Apple", "0.50", sku="A-1", quantity=10)
        before = snapshot(backend)
        result = backend.apply(self._mixed_rows(), dry_run=True, on_error="skip-rows")
        assert where(result.problems) == MIXED_PROBLEMS
        assert snapshot(backend) == before

    def test_apply_rows_see_earlier_rows(self, backend: Backend) -> None:
        result = backend.apply(
            [
                BatchRow(2, "N-1", name="New", price=Decimal("1.00"), quantity=5),
                BatchRow(3, "n-1", change=-5),  # N-1 exists now, with 5
                BatchRow(4, "N-1", store="north", store_name="North", quantity=3, expect=0),
                BatchRow(5, "N-1", store="north", change=-3, expect=3),
                BatchRow(6, "N-1", price=Decimal("2.50")),
            ]
        )
        assert result.problems == []
        product = backend.get("N-1")
        assert product == Product("N-1", "New", Decimal("2.50"))
        assert product.stock == {"main": 0, "north": 0}

    def test_apply_row_idempotency_keys(self, backend: Backend) -> None:
        backend.add_product("Apple", "0.50", sku="A-1", quantity=10)
        rows = [
            BatchRow(2, "A-1", change=5, idempotency_key="k-1"),
            BatchRow(3, "A-1", change=1, idempotency_key="k-2"),
        ]
        first = backend.apply(rows)
        assert (first.applied, first.duplicates) == (2, 0)
        assert backend.get("A-1").stock == {"main": 16}

        before = snapshot(backend)
        again = backend.apply(rows)
        assert (again.rows, again.applied, again.duplicates) == (2, 0, 2)
        assert snapshot(backend) == before

        mixed = backend.apply(
            [
                BatchRow(2, "A-1", change=5, idempotency_key="k-1"),
                BatchRow(3, "A-1", change=2, idempotency_key="k-3"),
            ]
        )
        assert (mixed.applied, mixed.duplicates) == (1, 1)
        assert backend.get("A-1").stock == {"main": 18}

    def test_apply_row_key_reused_for_a_different_change_is_a_problem(
        self, backend: Backend
    ) -> None:
        backend.add_product("Apple", "0.50", sku="A-1", quantity=10)
        backend.apply([BatchRow(2, "A-1", change=-1, idempotency_key="till-7")])
        before = snapshot(backend)
        with pytest.raises(BatchRejected) as caught:
            backend.apply([BatchRow(5, "A-1", change=-40, idempotency_key="till-7")])
        assert [(p.row, p.column) for p in caught.value.problems] == [(5, "idempotency_key")]
        assert "till-7" in caught.value.problems[0].reason
        assert snapshot(backend) == before
        # The same row at another line of a resent file is a retry, not a conflict.
        again = backend.apply([BatchRow(9, "A-1", change=-1, idempotency_key="till-7")])
        assert (again.applied, again.duplicates, again.problems) == (0, 1, [])
        # Within one batch: the second, different use of a key is reported.
        result = backend.apply(
            [
                BatchRow(2, "A-1", change=-1, idempotency_key="till-8"),
                BatchRow(3, "A-1", change=-2, idempotency_key="till-8"),
                BatchRow(4, "A-1", change=-1, idempotency_key="till-8"),
            ],
            on_error="skip-rows",
        )
        assert (result.applied, result.duplicates) == (1, 1)
        assert [(p.row, p.column) for p in result.problems] == [(3, "idempotency_key")]
        assert backend.get("A-1").stock == {"main": 8}

    def test_apply_row_key_used_by_a_single_command_conflicts(self, backend: Backend) -> None:
        backend.add_product("Apple", "0.50", sku="A-1", quantity=10)
        backend.adjust("main", "A-1", -1, event_id="pos-1")
        with pytest.raises(BatchRejected) as caught:
            backend.apply([BatchRow(2, "A-1", change=-1, idempotency_key="pos-1")])
        assert [(p.row, p.column) for p in caught.value.problems] == [(2, "idempotency_key")]
        assert backend.get("A-1").stock == {"main": 9}

    def test_verify_audit_agrees_after_every_kind_of_change(self, backend: Backend) -> None:
        backend.add_store("north")
        backend.add_product("Apple", "0.50", sku="A-1", quantity=10)
        backend.add_product("Pear", "0.70", sku="B-1", quantity=3, store="north")
        backend.adjust("main", "A-1", -4)
        backend.set_quantity("north", "A-1", 7)
        backend.transfer("A-1", "main", "north", 2)
        backend.apply(
            [
                BatchRow(2, "C-1", name="Fig", price=Decimal("1.00"), quantity=4),
                BatchRow(3, "A-1", change=1, store="north"),
            ]
        )
        backend.remove_product("B-1", force=True)
        backend.remove_product("A-1", store="main", force=True)
        checked, problems = backend.verify_audit()
        assert problems == []
        assert checked == 2  # A-1 at north, C-1 at main

    def test_apply_batch_event_id_returns_first_result(self, backend: Backend) -> None:
        backend.add_product("Apple", "0.50", sku="A-1", quantity=10)
        rows = [BatchRow(2, "A-1", change=5), BatchRow(3, "B-2", name="B", price=Decimal(1))]
        event = key()
        first = backend.apply(rows, event_id=event)
        before = snapshot(backend)
        again = backend.apply(rows, event_id=event)
        assert again == first
        assert snapshot(backend) == before
        assert backend.get("A-1").stock == {"main": 15}

    def test_apply_batch_event_id_reused_for_other_rows(self, backend: Backend) -> None:
        backend.add_product("Apple", "0.50", sku="A-1", quantity=10)
        event = key()
        backend.apply([BatchRow(2, "A-1", change=5)], event_id=event)
        before = snapshot(backend)
        with pytest.raises(Conflict):
            backend.apply([BatchRow(2, "A-1", change=7)], event_id=event)
        with pytest.raises(Conflict, match="different batch"):
            backend.apply([BatchRow(2, "A-1", change=7)], event_id=event)
        assert snapshot(backend) == before

    def test_apply_reports_progress(self, backend: Backend) -> None:
        done: list[int] = []
        rows = [
            BatchRow(n, f"S-{n}", name=f"Thing {n}", price=Decimal("1.00"), quantity=n)
            for n in range(2, 12)
        ]
        backend.apply(rows, progress=done.append)
        assert done != []
        assert done == sorted(done)
        assert done[-1] == len(rows)

    # -- export / import round trip ----------------------------------------------------

    def test_export_import_round_trip(self, backend: Backend, make_backend: MakeBackend) -> None:
        build_shop(backend)
        backend.add_product("Zero", "0.99", sku="F-6", store="north", category="Misc")
        backend.add_store("south", "South")
        backend.add_product("Mixed Case", "5.05", sku="mC-7", store="south", quantity=8)
        names = {s.code: s.name for s in backend.stores()}
        items = backend.list_items()
        rows = [item_to_row(n, item, names) for n, item in enumerate(items, start=2)]

        other = make_backend()
        result = other.apply(rows)
        assert result.problems == []
        assert other.list_items() == items
        assert other.stores() == backend.stores()
        assert other.report_value() == backend.report_value()
        for item in items:
            assert other.get(item.sku).stock == backend.get(item.sku).stock

    def test_a_store_without_stock_survives_export_and_import(
        self, backend: Backend, make_backend: MakeBackend
    ) -> None:
        backend.add_store("empty", "Empty Shelf")
        backend.add_product("Widget", "1.00", sku="W-1", quantity=2)
        rows = [
            BatchRow(2, "W-1", name="Widget", price=Decimal("1.00"), store="main", quantity=2),
            BatchRow(3, None, store="empty", store_name="Empty Shelf"),
        ]
        other = make_backend()
        result = other.apply(rows)
        assert (result.problems, result.applied) == ([], 2)
        assert other.stores() == backend.stores()
        assert other.apply([BatchRow(2, None, store="empty", store_name="Empty Shelf")]).unchanged
        with pytest.raises(BatchRejected) as refused:
            other.apply([BatchRow(2, None, store="nowhere")])
        assert [(p.row, p.column) for p in refused.value.problems] == [(2, "store_name")]
        with pytest.raises(BatchRejected) as refused:
            other.apply([BatchRow(2, None, store="empty", quantity=3)])
        assert [(p.row, p.column) for p in refused.value.problems] == [(2, "sku")]

    # -- one identity for SKUs: case-folded NFC ---------------------------------------------

    def test_skus_are_one_product_ignoring_case_folding_and_unicode_form(
        self, backend: Backend
    ) -> None:
        backend.add_product("Street", "1.00", sku="Straße", quantity=1)
        for spelling in ("STRASSE", "strasse", "STRAẞE"):
            with pytest.raises(AlreadyExists):
                backend.add_product("Other", "1.00", sku=spelling)
            assert backend.get(spelling).sku == "Straße"
        nfd = "Cafe\u0301"  # e + combining acute: the same SKU as "Café"
        backend.add_product("Coffee", "2.00", sku=nfd, quantity=1)
        assert backend.get("Café").sku == "Café"  # stored in NFC
        assert backend.get("CAFÉ").sku == "Café"
        backend.adjust("main", "CAFE\u0301", 2)
        assert backend.quantity("main", "café") == 3
        assert [m.sku for m in backend.history("cafÉ")][-1] == "Café"
        assert [i.sku for i in backend.list_items(search="É")] == ["Café"]
        assert [i.sku for i in backend.list_items(search="SS")] == ["Straße"]

    @pytest.mark.parametrize(
        ("sku", "looked_up"),
        [
            ("A\u200bB", NotFound),
            ("\ufeffAB", NotFound),
            ("A\u00adB", NotFound),
            ("A\u00a0B", NotFound),
            ("A\x85B", NotFound),
            ("A\u2028B", NotFound),
            ("A\x00B", ValidationError),
            ("A\nB", ValidationError),
        ],
        ids=["zero-width", "bom", "soft-hyphen", "nbsp", "nel", "line-sep", "nul", "newline"],
    )
    def test_invisible_and_control_characters_are_refused_in_new_skus(
        self, backend: Backend, sku: str, looked_up: type[InventoryError]
    ) -> None:
        before = snapshot(backend)
        with pytest.raises(ValidationError, match=r"sku: contains an? (invisible|control)"):
            backend.add_product("X", "1.00", sku=sku)
        # Looking one up is no error of grammar (an earlier inv may have let one in): it
        # is simply not there.  Controls are never text.
        with pytest.raises(looked_up):
            backend.get(sku)
        with pytest.raises(looked_up):
            backend.adjust("main", sku, 1)
        assert snapshot(backend) == before

    def test_text_is_stored_nfc_and_trimmed(self, backend: Backend) -> None:
        product = backend.add_product(
            "  Cafe\u0301 au lait ", "1.00", sku=" Lait-1 ", category=" Cafe\u0301 "
        )
        assert (product.sku, product.name, product.category) == ("Lait-1", "Café au lait", "Café")
        assert [i.sku for i in backend.list_items(category="CAFÉ")] == ["Lait-1"]

    # -- replays say so -------------------------------------------------------------------

    def test_a_replayed_result_is_marked_and_a_first_one_is_not(self, backend: Backend) -> None:
        backend.add_store("north")
        calls: list[Callable[[str], Any]] = [
            lambda k: backend.add_product("Widget", "1.00", sku="W-1", quantity=5, event_id=k),
            lambda k: backend.adjust("main", "W-1", -1, event_id=k),
            lambda k: backend.set_quantity("main", "W-1", 7, event_id=k),
            lambda k: backend.transfer("W-1", "main", "north", 2, event_id=k)[0],
            lambda k: backend.edit_product("W-1", price="2.00", event_id=k),
            lambda k: backend.add_store("south", event_id=k),
            lambda k: backend.remove_product("W-1", store="north", force=True, event_id=k)[0],
            lambda k: backend.apply([BatchRow(2, "W-1", change=1)], event_id=k),
            lambda k: backend.remove_store("south", event_id=k)[-1],
        ]
        for call in calls:
            event = key()
            first = call(event)
            assert not first.replayed
            before = snapshot(backend)
            again = call(event)
            assert again.replayed
            assert again == first
            assert snapshot(backend) == before

    def test_remove_store_returns_the_entries_it_wrote(self, backend: Backend) -> None:
        backend.add_store("north")
        backend.add_product("Widget", "1.00", sku="W-1", store="north", quantity=3)
        backend.add_product("Gadget", "1.00", sku="G-1", store="north")
        written = backend.remove_store("north", force=True)
        assert [(m.action, m.sku, m.delta) for m in written] == [
            ("product.delete", "G-1", 0),
            ("product.delete", "W-1", -3),
            ("store.delete", None, None),
        ]
        assert written == new_entries(backend, len(backend.history()) - 3)[::-1]

    def test_a_replayed_add_after_removal_is_the_first_result_marked_replayed(
        self, backend: Backend
    ) -> None:
        event = key()
        first = backend.add_product("Widget", "1.00", sku="W-1", event_id=event)
        backend.remove_product("W-1")
        again = backend.add_product("Widget", "1.00", sku="W-1", event_id=event)
        assert again == first and again.replayed
        with pytest.raises(NotFound):
            backend.get("W-1")

    def test_a_batch_key_reused_by_one_of_its_rows_is_a_row_problem(self, backend: Backend) -> None:
        backend.add_product("Widget", "1.00", sku="W-1")
        with pytest.raises(BatchRejected) as refused:
            backend.apply([BatchRow(2, "W-1", change=1, idempotency_key="KK")], event_id="KK")
        assert [(p.row, p.column) for p in refused.value.problems] == [(2, "idempotency_key")]
        assert backend.quantity("main", "W-1") == 0

    # -- the same bounds on every backend ----------------------------------------------

    def test_limits_and_offsets_have_the_same_bounds_everywhere(self, backend: Backend) -> None:
        backend.add_product("Widget", "1.00", sku="W-1")
        assert len(backend.list_items(limit=2**31 - 1, offset=0)) == 1
        bad: dict[str, int]
        for bad in ({"limit": 2**31}, {"limit": 10**20}, {"offset": 2**31}, {"limit": -1}):
            with pytest.raises(ValidationError):
                backend.list_items(**bad)
        with pytest.raises(ValidationError):
            backend.history(limit=10**20)

    def test_a_negative_zero_price_is_zero(self, backend: Backend) -> None:
        assert str(backend.add_product("Free", "-0", sku="F-1").price) == "0.00"
        assert str(backend.edit_product("F-1", price="-0.00").product.price) == "0.00"

    @pytest.mark.parametrize(
        "value", ["1_000", "\u0663", "\uff13", "1.0", " 1e3", "0x10", "", "--1"]
    )
    def test_numbers_are_ascii_digits_only(self, backend: Backend, value: str) -> None:
        backend.add_product("Widget", "1.00", sku="W-1")
        before = snapshot(backend)
        with pytest.raises(BatchRejected) as refused:
            backend.apply([BatchRow(2, "W-1", quantity=value)])  # type: ignore[arg-type]
        assert [(p.row, p.column) for p in refused.value.problems] == [(2, "quantity")]
        with pytest.raises(ValidationError):
            backend.add_product("Other", "1.00", sku="O-1", quantity=value)  # type: ignore[arg-type]
        with pytest.raises(ValidationError):
            backend.adjust("main", "W-1", value)  # type: ignore[arg-type]
        assert snapshot(backend) == before

    # -- what migrate carries ---------------------------------------------------------------

    def test_export_state_carries_every_idempotency_key_with_its_result(
        self, backend: Backend
    ) -> None:
        backend.add_product("Widget", "1.00", sku="W-1", quantity=5, event_id="k-add")
        backend.adjust("main", "W-1", -2, "sale", event_id="k-sale")
        backend.apply([BatchRow(2, "W-1", change=1, idempotency_key="k-row")], event_id="k-batch")
        state = backend.export_state()
        keys = {e.event_id: e for e in state.events}
        assert set(keys) == {"k-add", "k-sale", "k-row", "k-batch"}
        sale = keys["k-sale"]
        assert sale.fingerprint.startswith("stock.adjust|main|w-1|-2|")
        [entry] = sale.result["movements"]
        assert (entry["action"], entry["delta"], entry["quantity_after"]) == ("stock.adjust", -2, 3)
        assert entry["id"] in {m.id for m in state.history}
        assert keys["k-add"].result["product"]["sku"] == "W-1"
        assert keys["k-batch"].result["applied"] == 1

    def test_import_state_appends_history_and_carries_keys(
        self, backend: Backend, make_backend: MakeBackend
    ) -> None:
        backend.add_store("north")
        backend.add_product("Widget", "1.00", sku="W-1", quantity=5, event_id="k-add")
        backend.transfer("W-1", "main", "north", 2, event_id="k-move")
        state = backend.export_state()
        target = make_backend()  # it has history of its own (its init): ids follow it
        own = target.export_state().history
        target.import_state(not_theirs(state, target))
        copied = target.export_state()
        assert [replace(m, id=0) for m in copied.history[len(own) :]] == [
            replace(m, id=0) for m in state.history
        ]
        assert {(e.event_id, e.fingerprint) for e in copied.events} == {
            (e.event_id, e.fingerprint) for e in state.events
        }
        out, into = target.transfer("W-1", "main", "north", 2, event_id="k-move")
        assert out.replayed and into.replayed
        assert (out.id, into.id) == tuple(m.id for m in copied.history[-2:])
        assert (target.quantity("main", "W-1"), target.quantity("north", "W-1")) == (3, 2)

    def test_import_state_carries_users_and_tokens_as_stored(
        self, backend: Backend, make_backend: MakeBackend
    ) -> None:
        backend.add_store("north")
        ana = backend.add_user("ana", "correct horse", "clerk", stores=["north"])
        issued = backend.create_token("ana", name="till-3")
        state = backend.export_state()
        [stored] = [u for u in state.users if u.username == "ana"]
        assert stored.user == ana and stored.password_hash.startswith("$argon2id$")
        [token] = [t for t in state.tokens if t.username == "ana"]
        assert token.token == issued.token and token.digest == token_digest(issued.secret)
        assert token.digest not in repr(state) and stored.password_hash not in repr(state)
        target = make_backend()  # over HTTP: with a user and a token of its own
        users, tokens = target.users(), target.tokens()
        target.import_state(not_theirs(state, target))
        assert target.users() == sorted([*users, ana], key=lambda u: u.username)
        [copied] = [t for t in target.tokens() if t.username == "ana"]
        assert replace(copied, id=0) == replace(issued.token, id=0)
        assert copied.id == issued.token.id or tokens  # ids kept where there were none
        assert [t.id for t in target.tokens()] == [*(t.id for t in tokens), copied.id]
        # The same user again is refused, and nothing is written.
        with pytest.raises(AlreadyExists):
            target.import_state(replace(state, stores=[], products=[], history=[], events=[]))
        assert target.users() == sorted([*users, ana], key=lambda u: u.username)
        assert [t.id for t in target.tokens()] == [*(t.id for t in tokens), copied.id]
        # The password and the token work there as they did here.
        assert target.login("ana", "correct horse") == ana
        assert target.authenticate(issued.secret) == ana

    # -- users and tokens (each password hash costs tens of ms: few users per test) ------
    # A backend may start with a user and a token of its own (over HTTP: whom it acts
    # as), so these compare with what was there before.

    def test_add_get_and_list_users(self, backend: Backend) -> None:
        backend.add_store("north")
        before = backend.users()
        ana = backend.add_user("Ana", "correct horse", "ADMIN")
        bob = backend.add_user("bob", "battery staple", "clerk", stores=["north", "Main"])
        assert (ana.username, ana.role, ana.stores, ana.disabled) == ("ana", "admin", None, False)
        assert (bob.username, bob.role, bob.stores) == ("bob", "clerk", ("main", "north"))
        assert ana.created_at is not None and ana.created_at.tzinfo is not None
        assert abs(ana.created_at - datetime.now(UTC)) < timedelta(minutes=5)
        assert backend.users() == sorted([*before, ana, bob], key=lambda u: u.username)
        assert backend.get_user("ANA") == ana
        with pytest.raises(NotFound):
            backend.get_user("carol")

    def test_update_user(self, backend: Backend) -> None:
        backend.add_store("north")
        backend.add_user("ana", "correct horse", "clerk")
        assert backend.update_user("ana", role="manager", stores=["north"]).stores == ("north",)
        assert backend.get_user("ana").role == "manager"
        assert backend.update_user("ana", stores=[]).stores is None  # every store again
        assert backend.update_user("ana", disabled=True).disabled is True
        assert backend.get_user("ana").disabled is True
        assert backend.update_user("ana", disabled=False) == backend.get_user("ana")
        assert backend.update_user("ana") == backend.get_user("ana")  # nothing to change
        with pytest.raises(NotFound):
            backend.update_user("bob", role="admin")
        with pytest.raises(NotFound):
            backend.update_user("ana", stores=["nowhere"])
        with pytest.raises(ValidationError):
            backend.update_user("ana", role="owner")
        assert (backend.get_user("ana").role, backend.get_user("ana").stores) == ("manager", None)

    def test_a_new_password_replaces_the_old(self, backend: Backend) -> None:
        backend.add_user("ana", "correct horse", "clerk")
        backend.update_user("ana", password="battery staple")
        assert backend.login("ana", "battery staple").username == "ana"
        with pytest.raises(Unauthenticated):
            backend.login("ana", "correct horse")
        with pytest.raises(ValidationError, match="shorter than 8"):
            backend.update_user("ana", password="short")

    def test_remove_user_removes_its_tokens(self, backend: Backend) -> None:
        users, tokens = backend.users(), [t.id for t in backend.tokens()]
        backend.add_user("ana", "correct horse", "clerk")
        secret = backend.create_token("ana").secret
        backend.remove_user("ANA")
        assert backend.users() == users
        assert [t.id for t in backend.tokens()] == tokens
        with pytest.raises(NotFound):
            backend.get_user("ana")
        with pytest.raises(Unauthenticated):
            backend.authenticate(secret)
        with pytest.raises(NotFound):
            backend.remove_user("ana")

    @pytest.mark.parametrize(
        ("args", "field"),
        [
            (("has space", "correct horse", "clerk"), "username"),
            (("-ana", "correct horse", "clerk"), "username"),
            (("a" * 65, "correct horse", "clerk"), "username"),
            (("", "correct horse", "clerk"), "username"),
            (("ana", "short", "clerk"), "password"),
            (("ana", "x" * 1025, "clerk"), "password"),
            (("ana", "correct\x00horse", "clerk"), "password"),
            (("ana", "correct horse", "owner"), "role"),
        ],
    )
    def test_user_values_are_checked(
        self, backend: Backend, args: tuple[str, str, str], field: str
    ) -> None:
        before = backend.users()
        with pytest.raises(ValidationError) as refused:
            backend.add_user(*args)
        assert refused.value.field == field
        assert str(refused.value).startswith(f"{field}: ")
        assert backend.users() == before

    def test_a_user_limited_to_an_unknown_store_is_refused(self, backend: Backend) -> None:
        before = backend.users()
        with pytest.raises(NotFound, match="nowhere"):
            backend.add_user("ana", "correct horse", "clerk", stores=["main", "nowhere"])
        with pytest.raises(ValidationError):
            backend.add_user("ana", "correct horse", "clerk", stores=["not a code"])
        assert backend.users() == before

    def test_duplicate_user_refused_whatever_the_case(self, backend: Backend) -> None:
        before = backend.users()
        ana = backend.add_user("ana", "correct horse", "clerk")
        with pytest.raises(AlreadyExists):
            backend.add_user("ANA", "battery staple", "admin")
        assert backend.users() == sorted([*before, ana], key=lambda u: u.username)
        assert backend.login("ana", "correct horse") == ana

    def test_login_refuses_everything_wrong_with_one_message(self, backend: Backend) -> None:
        ana = backend.add_user("ana", "correct horse", "clerk")
        assert backend.login("Ana", "correct horse") == ana
        messages = set()
        for name, password in [
            ("ana", "Correct horse"),
            ("bob", "correct horse"),
            ("not a name!", "correct horse"),
        ]:
            with pytest.raises(Unauthenticated) as refused:
                backend.login(name, password)
            messages.add(str(refused.value))
        backend.update_user("ana", disabled=True)
        with pytest.raises(Unauthenticated) as refused:
            backend.login("ana", "correct horse")
        messages.add(str(refused.value))
        assert messages == {"wrong user name or password"}

    def test_a_token_is_shown_once_and_maps_to_its_user(self, backend: Backend) -> None:
        ana = backend.add_user("ana", "correct horse", "clerk")
        expires = datetime.now(UTC) + timedelta(days=90)
        issued = backend.create_token("ANA", name=" till-3 ", expires_at=expires)
        secret = issued.secret
        assert secret.startswith("inv_") and len(secret) >= 40
        token = issued.token
        assert (token.username, token.name, token.last_used_at) == ("ana", "till-3", None)
        assert token.expires_at is not None
        assert abs(token.expires_at - expires) < timedelta(milliseconds=1)
        assert backend.authenticate(secret) == ana
        [listed] = backend.tokens("ana")
        assert (listed.id, listed.username, listed.name) == (token.id, "ana", "till-3")
        assert listed.created_at == token.created_at
        for shown in (repr(backend.tokens()), repr(backend.tokens("ana")), repr(token)):
            assert secret not in shown and secret[4:] not in shown
            assert token_digest(secret) not in shown

    def test_tokens_ids_grow_and_are_listed_oldest_first(self, backend: Backend) -> None:
        backend.add_user("ana", "correct horse", "clerk")
        backend.add_user("bob", "correct horse", "clerk")
        first = backend.create_token("ana", name="one").token
        second = backend.create_token("bob").token
        backend.revoke_token(second.id)
        third = backend.create_token("ana", name="three").token
        assert first.id < second.id < third.id  # a revoked id is never given again
        assert second.name is None and second.expires_at is None
        ids = [t.id for t in backend.tokens()]
        assert ids == sorted(ids)
        assert [i for i in ids if i >= first.id] == [first.id, third.id]
        assert [t.name for t in backend.tokens("ana")] == ["one", "three"]
        assert backend.tokens("bob") == []
        with pytest.raises(NotFound):
            backend.tokens("carol")
        with pytest.raises(NotFound):
            backend.create_token("carol")

    def test_an_expired_token_is_refused(self, backend: Backend) -> None:
        backend.add_user("ana", "correct horse", "clerk")
        past = backend.create_token("ana", expires_at=datetime.now(UTC) - timedelta(seconds=1))
        future = backend.create_token("ana", expires_at=datetime.now(UTC) + timedelta(hours=1))
        with pytest.raises(Unauthenticated):
            backend.authenticate(past.secret)
        assert backend.authenticate(future.secret).username == "ana"
        assert [t.last_used_at is None for t in backend.tokens("ana")] == [True, False]

    def test_a_revoked_token_is_refused_at_once(self, backend: Backend) -> None:
        backend.add_user("ana", "correct horse", "clerk")
        kept = backend.create_token("ana", name="kept")
        gone = backend.create_token("ana", name="gone")
        assert backend.authenticate(gone.secret).username == "ana"
        revoked = backend.revoke_token(gone.token.id)
        assert (revoked.id, revoked.name, revoked.username) == (gone.token.id, "gone", "ana")
        with pytest.raises(Unauthenticated):
            backend.authenticate(gone.secret)
        assert backend.authenticate(kept.secret).username == "ana"
        assert [t.id for t in backend.tokens("ana")] == [kept.token.id]
        with pytest.raises(NotFound):
            backend.revoke_token(gone.token.id)

    def test_a_disabled_users_tokens_are_refused_until_enabled(self, backend: Backend) -> None:
        backend.add_user("ana", "correct horse", "clerk")
        secret = backend.create_token("ana").secret
        backend.update_user("ana", disabled=True)
        with pytest.raises(Unauthenticated):
            backend.authenticate(secret)
        backend.update_user("ana", disabled=False)
        assert backend.authenticate(secret).disabled is False

    def test_unknown_and_malformed_tokens_are_refused_alike(self, backend: Backend) -> None:
        backend.add_user("ana", "correct horse", "clerk")
        secret = backend.create_token("ana").secret
        flipped = secret[:-1] + ("A" if secret[-1] != "A" else "B")
        messages = set()
        for garbage in [
            "",
            "inv_",
            "x" * 47,
            "inv_" + "A" * 43,
            flipped,
            secret + "x",
            secret.upper(),
            " " + secret,
            "inv_" + "\u00e9" * 43,
        ]:
            with pytest.raises(Unauthenticated) as refused:
                backend.authenticate(garbage)
            messages.add(str(refused.value))
        assert messages == {"the token is not valid (expired, revoked or unknown)"}
        assert backend.tokens("ana")[0].last_used_at is None

    def test_authenticate_records_the_last_use_at_most_once_a_minute(
        self, backend: Backend
    ) -> None:
        backend.add_user("ana", "correct horse", "clerk")
        issued = backend.create_token("ana")
        assert backend.tokens("ana")[0].last_used_at is None
        backend.authenticate(issued.secret)
        [used] = backend.tokens("ana")
        assert used.last_used_at is not None
        assert used.last_used_at >= issued.token.created_at
        assert abs(used.last_used_at - datetime.now(UTC)) < timedelta(minutes=5)
        backend.authenticate(issued.secret)
        assert backend.tokens("ana") == [used]  # within the minute: not written again

    def test_unauthenticated_is_a_permission_error(self) -> None:
        assert issubclass(Unauthenticated, PermissionDenied)
        assert not issubclass(Unauthenticated, RefusedError)
        assert {f for f in Token.__dataclass_fields__} == {
            "id",
            "username",
            "name",
            "created_at",
            "expires_at",
            "last_used_at",
        }

    # -- errors ------------------------------------------------------------------------

    def test_error_tree(self) -> None:
        for refused in (ValidationError, NotFound, AlreadyExists, InsufficientStock, Conflict):
            assert issubclass(refused, RefusedError)
            assert not issubclass(refused, KeyError)
        assert issubclass(RefusedError, InventoryError)
        assert issubclass(BatchRejected, InventoryError)
        assert not issubclass(BatchRejected, RefusedError)

    def test_every_refusal_is_a_typed_error_with_a_message(self, backend: Backend) -> None:
        backend.add_product("Widget", "1.00", sku="W-1", quantity=1)
        attempts: list[tuple[type[InventoryError], Callable[[], object]]] = [
            (NotFound, lambda: backend.get("nope")),
            (AlreadyExists, lambda: backend.add_product("X", "1", sku="w-1")),
            (InsufficientStock, lambda: backend.adjust("main", "W-1", -2)),
            (ValidationError, lambda: backend.add_product("X", 1.5, sku="X-1")),
            (StaleExpect, lambda: backend.adjust("main", "W-1", 1, expect=5)),
            (BatchRejected, lambda: backend.apply([BatchRow(2, "W-1", change=-5)])),
        ]
        for error, attempt in attempts:
            with pytest.raises(InventoryError) as raised:
                attempt()
            assert type(raised.value) is error
            assert str(raised.value).strip() != ""
            assert isinstance(raised.value, RefusedError) == (error is not BatchRejected)
