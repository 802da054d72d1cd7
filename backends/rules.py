"""The rules of the domain, as pure functions: every backend calls them, none keeps a copy.

A backend decides where data lives and how it is locked; what a rule says is decided
here.  The json engine runs them on its in-memory state, the postgres backend on rows it
has locked (its guarded SQL only makes the change atomic: when the guard refuses, the
rule says why), and the kafka worker on the rows of its batch.

* `next_quantity`: the quantity a change or a count leaves, or why it is refused
  (a stale `expect`, below zero, above the maximum);
* `transfer_quantities`: both sides of a transfer;
* `check_unstock`, `check_product_removal`, `check_store_removal`: whether stock may
  leave a store, a product the catalog, a store the inventory;
* `product_diff`: what an edit changes, and the text the history records for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import Conflict, InsufficientStock, StaleExpect, ValidationError
from .values import MAX_QUANTITY

__all__ = [
    "MAIN_STORE",
    "check_product_removal",
    "check_store_removal",
    "check_unstock",
    "generated_number",
    "generated_sku",
    "next_quantity",
    "product_diff",
    "show",
    "transfer_quantities",
]

#: The catalog fields, in the order a product's changes are told.
CATALOG_FIELDS = ("name", "price", "unit", "category", "reorder_level")
#: The store every inventory has, which cannot be removed.
MAIN_STORE = "main"


def next_quantity(
    current: int,
    *,
    sku: str,
    store: str,
    delta: int | None = None,
    quantity: int | None = None,
    expect: int | None = None,
) -> int:
    """The quantity at `store` after adding `delta` (a change) or setting `quantity` (a
    count) where `current` is on hand.

    Raises `Conflict` when `expect` is given and differs from `current` (compare-and-set),
    `InsufficientStock` when a change would go below zero, `ValidationError` when it would
    go above `MAX_QUANTITY`.  Nothing is changed by a refusal.
    """
    if expect is not None and current != expect:
        raise StaleExpect(
            f"{sku} at {store} is {current}, not the expected {expect}; nothing changed"
        )
    if quantity is not None:
        return quantity
    assert delta is not None, "a change needs a delta or a quantity"
    after = current + delta
    if after < 0:
        raise InsufficientStock(
            f"not enough {sku} at {store}: {current} on hand, {-delta} asked for",
            available=current,
            requested=-delta,
        )
    if after > MAX_QUANTITY:
        raise ValidationError(
            f"change: {sku} at {store} would exceed {MAX_QUANTITY}", field="change"
        )
    return after


def transfer_quantities(
    source_current: int,
    target_current: int,
    *,
    sku: str,
    source: str,
    target: str,
    quantity: int,
) -> tuple[int, int]:
    """The quantities at both stores after moving `quantity` from `source` to `target`."""
    out = next_quantity(source_current, sku=sku, store=source, delta=-quantity)
    into = next_quantity(target_current, sku=sku, store=target, delta=quantity)
    return out, into


def check_unstock(sku: str, store: str, on_hand: int, *, force: bool) -> None:
    """A product leaves one store: refused while stock is on hand there, unless `force`
    writes it off."""
    if on_hand and not force:
        raise Conflict(f"{sku} still has {on_hand} on hand at {store}; use --force to write it off")


def check_product_removal(sku: str, stock: Mapping[str, int], *, force: bool) -> None:
    """A product leaves the catalog: refused while any store holds some, unless `force`."""
    on_hand = {code: q for code, q in stock.items() if q}
    if on_hand and not force:
        where = ", ".join(f"{q} at {code}" for code, q in sorted(on_hand.items()))
        raise Conflict(f"{sku} still has stock on hand ({where}); use --force to write it off")


def check_store_removal(code: str, on_hand: int | None, *, force: bool) -> None:
    """A store is removed: never `main`; refused while it holds stock, unless `force`.
    `on_hand` None checks only what needs no data (the name)."""
    if code == MAIN_STORE:
        raise ValidationError("store 'main' cannot be removed", field="store")
    if on_hand and not force:
        raise Conflict(
            f"store {code!r} still holds {on_hand} units of stock; "
            "move it away or use --force to write it off"
        )


def show(value: Any) -> str:
    """A catalog value as the history writes it: `none` for nothing."""
    return "none" if value is None else str(value)


def product_diff(
    current: Mapping[str, Any], changes: Mapping[str, Any]
) -> tuple[dict[str, Any], str | None]:
    """The fields of `changes` that differ from `current`, and the text the history
    records for them (`price 4.50 -> 4.75; unit each -> box`), None when nothing differs."""
    order = {name: i for i, name in enumerate(CATALOG_FIELDS)}
    changed = {
        key: value
        for key, value in sorted(changes.items(), key=lambda kv: order.get(kv[0], len(order)))
        if current[key] != value
    }
    if not changed:
        return {}, None
    said = "; ".join(
        f"{key} {show(current[key])} -> {show(value)}" for key, value in changed.items()
    )
    return changed, said


def generated_sku(number: int) -> str:
    """The SKU given to a product added without one: `P000001`, ..."""
    return f"P{number:06d}"


def generated_number(sku: str) -> int | None:
    """The number of a SKU in the form `generated_sku` makes (`P000042` is 42), else
    None: what generated SKUs continue after, once an inventory is brought in."""
    digits = sku[1:]
    if sku[:1] == "P" and len(digits) >= 6 and digits.isascii() and digits.isdigit():
        return int(digits)
    return None
