"""`inv migrate`: carry a whole inventory from one backend to another, and prove it.

What is copied: stores, the catalog with its stock, and the full history (appended in
order, with new ids, keeping times, actors, sources and event ids).  The target must be
empty (only store `main`, no products) unless `merge` is given; products on both sides
must then be identical.  Running it again finds nothing left to copy and changes
nothing.  Afterwards the target is read back and compared: product, stock-row and
history counts, and each store's total quantity.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .base import Backend, Progress
from .errors import Conflict
from .models import MAIN_STORE, Movement, Product, Snapshot

__all__ = ["MigrationReport", "migrate"]


@dataclass
class MigrationReport:
    """What was copied, and the figures checked on both sides."""

    copied_stores: int = 0
    copied_products: int = 0
    copied_history: int = 0
    source: dict[str, int] = field(default_factory=dict)
    target: dict[str, int] = field(default_factory=dict)
    totals: dict[str, tuple[int, int]] = field(default_factory=dict)  # store -> (src, dst)

    @property
    def nothing_to_do(self) -> bool:
        return not (self.copied_stores or self.copied_products or self.copied_history)


def _entry_key(m: Movement) -> tuple[object, ...]:
    return (m.at, m.event_id, m.action, m.store, m.sku, m.delta, m.quantity_after)


def _counts(snapshot: Snapshot) -> dict[str, int]:
    return {
        "stores": len(snapshot.stores),
        "products": len(snapshot.products),
        "stock_rows": sum(len(p.stock) for p in snapshot.products),
        "history": len(snapshot.history),
    }


def _totals(snapshot: Snapshot) -> dict[str, int]:
    totals = {s.code: 0 for s in snapshot.stores}
    for product in snapshot.products:
        for code, quantity in product.stock.items():
            totals[code] = totals.get(code, 0) + quantity
    return totals


def _same(a: Product, b: Product) -> bool:
    return a == b and a.stock == b.stock  # Product's == leaves stock out


def migrate(
    source: Backend, target: Backend, *, merge: bool = False, progress: Progress | None = None
) -> MigrationReport:
    """Copy `source` into `target` (created if needed); raise `Conflict` if it can't."""
    target.init()
    have = source.export_state()
    there = target.export_state()
    their_products = {p.sku.casefold(): p for p in there.products}
    clashes = [
        p.sku
        for p in have.products
        if p.sku.casefold() in their_products and not _same(p, their_products[p.sku.casefold()])
    ]
    if clashes:
        listed = ", ".join(clashes[:5]) + (" ..." if len(clashes) > 5 else "")
        raise Conflict(
            f"{target.describe()} has different data for {len(clashes)} SKUs ({listed}); "
            "nothing was copied"
        )
    their_stores = {s.code for s in there.stores}
    seen = {_entry_key(m) for m in there.history}
    delta = Snapshot(
        stores=[s for s in have.stores if s.code not in their_stores],
        products=[p for p in have.products if p.sku.casefold() not in their_products],
        history=[m for m in have.history if _entry_key(m) not in seen],
    )
    target_is_empty = not there.products and their_stores <= {MAIN_STORE}
    anything = delta.stores or delta.products or delta.history
    if anything and not target_is_empty and not merge:
        raise Conflict(
            f"{target.describe()} is not empty ({len(there.products)} products, "
            f"{len(there.stores)} stores); use --merge to add to it"
        )
    if anything:
        target.import_state(delta, progress=progress)
    after = target.export_state()
    report = MigrationReport(
        copied_stores=len(delta.stores),
        copied_products=len(delta.products),
        copied_history=len(delta.history),
        source=_counts(have),
        target=_counts(after),
    )
    mine, theirs = _totals(have), _totals(after)
    report.totals = {code: (mine[code], theirs.get(code, 0)) for code in mine}
    landed = {p.sku.casefold(): p for p in after.products}
    missing = [
        p.sku
        for p in have.products
        if not _same(p, landed.get(p.sku.casefold(), p)) or p.sku.casefold() not in landed
    ]
    wrong_totals = [code for code, (a, b) in report.totals.items() if a != b and target_is_empty]
    after_seen = {_entry_key(m) for m in after.history}
    lost = sum(1 for m in have.history if _entry_key(m) not in after_seen)
    if missing or wrong_totals or lost:
        raise Conflict(
            f"verification failed after copying: {len(missing)} products differ, "
            f"{len(wrong_totals)} store totals differ, {lost} history entries missing"
        )
    return report
