"""A backend and a plain-dict model driven side by side by Hypothesis.

After every step the backend's `list_items()` must equal what the model says, and its
history must hold exactly one entry per change the model counted.  Each backend's test
module gets a runnable test case with::

    TestJsonMachine = machine_for(make_json_backend).TestCase
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from strategies import (
    categories,
    deltas,
    examples,
    names,
    price_text,
    quantities,
    reasons,
    skus,
    store_codes,
    units,
)

from backends import (
    AlreadyExists,
    Backend,
    Conflict,
    InsufficientStock,
    Item,
    Store,
)

__all__ = ["MACHINE_SETTINGS", "InventoryMachine", "machine_for"]

MACHINE_SETTINGS = settings(
    max_examples=examples(50),
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


#: How `expect` is given: not at all (most often), matching, or stale.
EXPECT = st.sampled_from(["none", "none", "right", "stale"])


@dataclass
class ModelProduct:
    sku: str
    name: str
    price: Decimal
    unit: str
    category: str | None
    reorder_level: int
    stock: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Done:
    """A request that changed something, to send again with its event id later."""

    call: Callable[..., Any]
    event_id: str
    result: Any


def _text(value: str) -> str:
    """Text as every backend stores it: NFC, trimmed (`backends.values.text`)."""
    return unicodedata.normalize("NFC", value).strip()


def _price(text: str) -> Decimal:
    return Decimal(text).quantize(Decimal("0.01"))


class InventoryMachine(RuleBasedStateMachine):
    """Drives `make_backend()` and a dict model with the same requests."""

    #: Set by each backend's test module (see `machine_for`): a fresh, initialised backend.
    make_backend: ClassVar[Callable[[], Backend]]

    def __init__(self) -> None:
        super().__init__()
        self.backend = type(self).make_backend()
        self.products: dict[str, ModelProduct] = {}  # by sku.lower()
        self.stores: dict[str, str] = {s.code: s.name for s in self.backend.stores()}
        assert list(self.stores) == ["main"]
        self.baseline = len(self.backend.history())
        self.changes = 0
        self.done: list[Done] = []
        self._events = 0

    def teardown(self) -> None:
        self.backend.close()

    # -- helpers -----------------------------------------------------------------------

    def event(self) -> str:
        self._events += 1
        return f"machine-{self._events}"

    def pick_product(self, data: st.DataObject) -> ModelProduct:
        product = data.draw(st.sampled_from(sorted(self.products.values(), key=lambda p: p.sku)))
        return product

    def any_case(self, data: st.DataObject, sku: str) -> str:
        """The SKU as a user might type it: lookups ignore case."""
        return data.draw(st.sampled_from([sku, sku.lower(), sku.upper()]))

    def pick_store(self, data: st.DataObject, product: ModelProduct | None = None) -> str:
        """Any store; for a product, more often one where it is stocked, so moves succeed."""
        anywhere = st.sampled_from(sorted(self.stores))
        if product is None or not product.stock:
            return data.draw(anywhere)
        return data.draw(st.sampled_from(sorted(product.stock)) | anywhere)

    def remember(self, call: Callable[..., Any], event_id: str, result: Any) -> None:
        self.done.append(Done(call, event_id, result))

    # -- rules -------------------------------------------------------------------------

    @rule(
        data=st.data(),
        sku=st.none() | skus,
        name=names,
        price=price_text,
        quantity=quantities,
        unit=units,
        category=categories,
        reorder_level=st.integers(0, 20),
    )
    def add_product(
        self,
        data: st.DataObject,
        sku: str | None,
        name: str,
        price: str,
        quantity: int,
        unit: str,
        category: str | None,
        reorder_level: int,
    ) -> None:
        store = self.pick_store(data)
        call = functools.partial(
            self.backend.add_product,
            name,
            price,
            sku=sku,
            store=store,
            quantity=quantity,
            unit=unit,
            category=category,
            reorder_level=reorder_level,
        )
        event_id = self.event()
        if sku is not None and sku.strip().lower() in self.products:
            with pytest.raises(AlreadyExists):
                call(event_id=event_id)
            return
        product = call(event_id=event_id)
        if sku is None:
            assert re.fullmatch(r"P\d{6}", product.sku), product.sku
            assert product.sku.lower() not in self.products
        else:
            assert product.sku == sku.strip()
        assert product.price == _price(price)
        assert product.stock == {store: quantity}
        self.products[product.sku.lower()] = ModelProduct(
            product.sku,
            _text(name),
            _price(price),
            unit,
            category,
            reorder_level,
            {store: quantity},
        )
        self.changes += 1
        self.remember(call, event_id, product)

    @precondition(lambda self: len(self.stores) < 5)
    @rule(code=store_codes, name=st.none() | names)
    def add_store(self, code: str, name: str | None) -> None:
        call = functools.partial(self.backend.add_store, code, name)
        event_id = self.event()
        if code in self.stores:
            with pytest.raises(AlreadyExists):
                call(event_id=event_id)
            return
        store = call(event_id=event_id)
        expected = Store(code, _text(name) if name is not None else code)
        assert store == expected
        self.stores[code] = expected.name
        self.changes += 1
        self.remember(call, event_id, store)

    @precondition(lambda self: self.products)
    @rule(
        data=st.data(),
        delta=deltas,
        reason=reasons,
        expect=EXPECT,
    )
    def adjust(self, data: st.DataObject, delta: int, reason: str | None, expect: str) -> None:
        product = self.pick_product(data)
        store = self.pick_store(data, product)
        current = product.stock.get(store, 0)
        expected = {"none": None, "right": current, "stale": current + 1}[expect]
        call = functools.partial(
            self.backend.adjust,
            store,
            self.any_case(data, product.sku),
            delta,
            reason,
            expect=expected,
        )
        event_id = self.event()
        if expect == "stale":
            refusal: Any = Conflict if current + delta >= 0 else (Conflict, InsufficientStock)
            with pytest.raises(refusal):
                call(event_id=event_id)
            return
        if current + delta < 0:
            with pytest.raises(InsufficientStock) as refused:
                call(event_id=event_id)
            assert refused.value.available == current
            return
        entry = call(event_id=event_id)
        assert (entry.action, entry.store, entry.sku) == ("stock.adjust", store, product.sku)
        assert (entry.delta, entry.quantity_after) == (delta, current + delta)
        assert entry.event_id == event_id
        product.stock[store] = current + delta
        self.changes += 1
        self.remember(call, event_id, entry)

    @precondition(lambda self: self.products)
    @rule(data=st.data(), quantity=quantities, expect=EXPECT)
    def set_quantity(self, data: st.DataObject, quantity: int, expect: str) -> None:
        product = self.pick_product(data)
        store = self.pick_store(data, product)
        current = product.stock.get(store, 0)
        expected = {"none": None, "right": current, "stale": current + 1}[expect]
        call = functools.partial(
            self.backend.set_quantity,
            store,
            self.any_case(data, product.sku),
            quantity,
            "count",
            expect=expected,
        )
        event_id = self.event()
        if expect == "stale":
            with pytest.raises(Conflict):
                call(event_id=event_id)
            return
        entry = call(event_id=event_id)
        assert (entry.action, entry.store, entry.sku) == ("stock.set", store, product.sku)
        assert (entry.delta, entry.quantity_after) == (quantity - current, quantity)
        product.stock[store] = quantity
        self.changes += 1
        self.remember(call, event_id, entry)

    @precondition(lambda self: self.products and len(self.stores) >= 2)
    @rule(data=st.data())
    def transfer(self, data: st.DataObject) -> None:
        product = self.pick_product(data)
        source = self.pick_store(data, product)
        target = data.draw(st.sampled_from(sorted(set(self.stores) - {source})))
        available = product.stock.get(source, 0)
        # Mostly what the source holds, sometimes more than it has.
        within = st.integers(1, available) if available > 0 else st.nothing()
        quantity = data.draw(within | st.integers(1, available + 5))
        call = functools.partial(
            self.backend.transfer, self.any_case(data, product.sku), source, target, quantity
        )
        event_id = self.event()
        if available < quantity:
            with pytest.raises(InsufficientStock) as refused:
                call(event_id=event_id)
            assert refused.value.available == available
            return
        out, into = call(event_id=event_id)
        after_in = product.stock.get(target, 0) + quantity
        assert (out.action, out.store, out.delta) == ("stock.transfer_out", source, -quantity)
        assert out.quantity_after == available - quantity
        assert (into.action, into.store, into.delta) == ("stock.transfer_in", target, quantity)
        assert into.quantity_after == after_in
        product.stock[source] = available - quantity
        product.stock[target] = after_in
        self.changes += 2
        self.remember(call, event_id, (out, into))

    @precondition(lambda self: any(p.stock for p in self.products.values()))
    @rule(data=st.data(), force=st.booleans())
    def remove_from_store(self, data: st.DataObject, force: bool) -> None:
        stocked = sorted((p for p in self.products.values() if p.stock), key=lambda p: p.sku)
        product = data.draw(st.sampled_from(stocked))
        store = data.draw(st.sampled_from(sorted(product.stock)))
        call = functools.partial(
            self.backend.remove_product, self.any_case(data, product.sku), store=store, force=force
        )
        event_id = self.event()
        on_hand = product.stock[store]
        if on_hand > 0 and not force:
            with pytest.raises(Conflict):
                call(event_id=event_id)
            return
        entries = call(event_id=event_id)
        assert [(m.action, m.store, m.sku, m.delta) for m in entries] == [
            ("product.delete", store, product.sku, -on_hand)
        ]
        del product.stock[store]
        self.changes += 1
        self.remember(call, event_id, entries)

    @precondition(lambda self: self.products)
    @rule(data=st.data(), force=st.booleans())
    def remove_from_catalog(self, data: st.DataObject, force: bool) -> None:
        product = self.pick_product(data)
        call = functools.partial(
            self.backend.remove_product, self.any_case(data, product.sku), force=force
        )
        event_id = self.event()
        if any(product.stock.values()) and not force:
            with pytest.raises(Conflict):
                call(event_id=event_id)
            return
        entries = call(event_id=event_id)
        assert len(entries) == len(product.stock) + 1
        assert sorted((m.store, m.delta) for m in entries if m.store is not None) == sorted(
            (store, -quantity) for store, quantity in product.stock.items()
        )
        assert {m.action for m in entries} == {"product.delete"}
        del self.products[product.sku.lower()]
        self.changes += len(entries)
        self.remember(call, event_id, entries)

    @precondition(lambda self: self.products)
    @rule(data=st.data(), price=price_text)
    def edit_price(self, data: st.DataObject, price: str) -> None:
        product = self.pick_product(data)
        call = functools.partial(
            self.backend.edit_product, self.any_case(data, product.sku), price=price
        )
        event_id = self.event()
        result = call(event_id=event_id)
        edited = result.product
        assert edited.price == _price(price)
        assert edited.stock == product.stock
        if edited.price != product.price:
            product.price = edited.price
            self.changes += 1
            self.remember(call, event_id, result)

    @precondition(lambda self: self.done)
    @rule(data=st.data())
    def repeat_event(self, data: st.DataObject) -> None:
        """The same event id again returns the first result and changes nothing."""
        done = data.draw(st.sampled_from(self.done))
        assert done.call(event_id=done.event_id) == done.result

    # -- invariants --------------------------------------------------------------------

    def expected_items(self) -> list[Item]:
        items = []
        for p in self.products.values():
            rows = sorted(p.stock.items()) or [(None, 0)]
            for store, quantity in rows:
                items.append(
                    Item(
                        p.sku, p.name, p.price, p.unit, p.category, p.reorder_level, store, quantity
                    )
                )
        return sorted(items, key=_row_key)

    @invariant()
    def items_match_model(self) -> None:
        assert sorted(self.backend.list_items(), key=_row_key) == self.expected_items()

    @invariant()
    def stores_match_model(self) -> None:
        assert {s.code: s.name for s in self.backend.stores()} == self.stores

    @invariant()
    def one_history_entry_per_change(self) -> None:
        assert len(self.backend.history()) == self.baseline + self.changes


def _row_key(item: Item) -> tuple[str, str]:
    return item.sku, item.store or ""


def machine_for(factory: Callable[[], Backend]) -> type[InventoryMachine]:
    """A subclass of `InventoryMachine` that builds its backends with `factory`."""
    machine = type(
        "InventoryMachine",
        (InventoryMachine,),
        {"make_backend": staticmethod(factory), "__module__": __name__},
    )
    machine.TestCase.settings = MACHINE_SETTINGS
    return machine
