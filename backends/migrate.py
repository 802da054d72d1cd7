"""`inv migrate`: carry a whole inventory from one backend to another, and prove it.

What is copied: stores, the catalog with its stock, the full history (in order, keeping
ids, times, actors, sources and event ids), the idempotency keys with the
fingerprint and first result of each, so a sale retried after the migration is still
applied once, and the users and API tokens as stored (password hashes and token digests
verbatim), so every password and every terminal's token still works.  The target is
created if needed, without an entry of its own: the history it receives starts with the
source's.

The target must be empty (only store `main`, no products, no history but its own `inv
init` entry; users of its own are allowed) unless `merge` is given; products on both
sides must then be identical.  A user on both sides must be the same user as stored (as
a previous run of this copy left it), else nothing is copied; so must a token on both.
Tokens keep their ids in a target that has none yet, else get new ones.
History copied after any of the target's own is appended with new ids.  Running it again
finds nothing left to copy and changes nothing.  Afterwards the target is read back and
compared: stores, products, stock, history entries and keys with their results, users
and tokens, and each store's total quantity; into a target without history the history
must come back entry for entry, ids included.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .auth import StoredToken
from .base import Backend, Progress
from .errors import Conflict
from .models import MAIN_STORE, AppliedEvent, Movement, Product, Snapshot
from .requests import result_movements
from .values import sku_key

__all__ = ["MigrationReport", "migrate"]


@dataclass
class MigrationReport:
    """What was copied, and the figures checked on both sides."""

    copied_stores: int = 0
    copied_products: int = 0
    copied_history: int = 0
    copied_keys: int = 0
    copied_users: int = 0
    copied_tokens: int = 0
    source: dict[str, int] = field(default_factory=dict)
    target: dict[str, int] = field(default_factory=dict)
    totals: dict[str, tuple[int, int]] = field(default_factory=dict)  # store -> (src, dst)

    @property
    def nothing_to_do(self) -> bool:
        return not (
            self.copied_stores
            or self.copied_products
            or self.copied_history
            or self.copied_keys
            or self.copied_users
            or self.copied_tokens
        )


def _entry_key(m: Movement) -> tuple[object, ...]:
    return (m.at, m.event_id, m.action, m.store, m.sku, m.delta, m.quantity_after)


def _counts(snapshot: Snapshot) -> dict[str, int]:
    return {
        "stores": len(snapshot.stores),
        "products": len(snapshot.products),
        "stock_rows": sum(len(p.stock) for p in snapshot.products),
        "history": len(snapshot.history),
        "keys": len(snapshot.events),
        "users": len(snapshot.users),
        "tokens": len(snapshot.tokens),
    }


def _totals(snapshot: Snapshot) -> dict[str, int]:
    totals = {s.code: 0 for s in snapshot.stores}
    for product in snapshot.products:
        for code, quantity in product.stock.items():
            totals[code] = totals.get(code, 0) + quantity
    return totals


def _same(a: Product, b: Product) -> bool:
    return a == b and a.stock == b.stock  # Product's == leaves stock out


def _same_token(a: StoredToken, b: StoredToken) -> bool:
    """The same token as stored (its id may differ; a later last use is fine)."""
    return (
        (a.username, a.digest, a.name, a.created_at, a.expires_at)
        == (b.username, b.digest, b.name, b.created_at, b.expires_at)
    ) and (a.last_used_at is None or (b.last_used_at or a.last_used_at) >= a.last_used_at)


def _listed(items: list[str]) -> str:
    return ", ".join(items[:5]) + (" ..." if len(items) > 5 else "")


def migrate(
    source: Backend, target: Backend, *, merge: bool = False, progress: Progress | None = None
) -> MigrationReport:
    """Copy `source` into `target` (created if needed); raise `Conflict` if it can't."""
    have = source.export_state()  # first: a source that cannot be read creates nothing
    target.init(record=False)
    there = target.export_state()
    their_products = {sku_key(p.sku): p for p in there.products}
    clashes = [
        p.sku
        for p in have.products
        if sku_key(p.sku) in their_products and not _same(p, their_products[sku_key(p.sku)])
    ]
    if clashes:
        raise Conflict(
            f"{target.describe()} has different data for {len(clashes)} SKUs "
            f"({_listed(clashes)}); nothing was copied"
        )
    their_keys = {e.event_id: e for e in there.events}
    reused = [
        e.event_id
        for e in have.events
        if e.event_id in their_keys and their_keys[e.event_id].fingerprint != e.fingerprint
    ]
    if reused:
        raise Conflict(
            f"{target.describe()} used {len(reused)} of the same idempotency keys for other "
            f"requests ({_listed(reused)}); nothing was copied"
        )
    their_users = {u.username: u for u in there.users}
    other_users = [
        u.username for u in have.users if u.username in their_users and their_users[u.username] != u
    ]
    if other_users:
        raise Conflict(
            f"{target.describe()} already has {len(other_users)} of the same users "
            f"({_listed(other_users)}), not as they are here; nothing was copied"
        )
    their_tokens = {t.digest: t for t in there.tokens}
    other_tokens = [
        str(t.id)
        for t in have.tokens
        if t.digest in their_tokens and not _same_token(t, their_tokens[t.digest])
    ]
    if other_tokens:
        raise Conflict(
            f"{target.describe()} already has {len(other_tokens)} of the same tokens "
            f"(ids {_listed(other_tokens)} here), not as they are here; nothing was copied"
        )
    their_stores = {s.code for s in there.stores}
    seen = {_entry_key(m) for m in there.history}
    delta = Snapshot(
        stores=[s for s in have.stores if s.code not in their_stores],
        products=[p for p in have.products if sku_key(p.sku) not in their_products],
        history=[m for m in have.history if _entry_key(m) not in seen],
        events=[e for e in have.events if e.event_id not in their_keys],
        users=[u for u in have.users if u.username not in their_users],
        tokens=[t for t in have.tokens if t.digest not in their_tokens],
    )
    # Empty: store main only, no product, and no history but the entry of its own `inv
    # init` (then the copied history follows it, renumbered).
    target_is_empty = (
        not there.products
        and their_stores <= {MAIN_STORE}
        and all(m.action == "store.create" and m.store == MAIN_STORE for m in there.history)
        and len(there.history) <= 1
    )
    anything = (
        delta.stores
        or delta.products
        or delta.history
        or delta.events
        or delta.users
        or delta.tokens
    )
    if anything and not target_is_empty and not merge:
        raise Conflict(
            f"{target.describe()} is not empty ({len(there.products)} products, "
            f"{len(there.stores)} stores, {len(there.history)} history entries); "
            "use --merge to add to it"
        )
    if anything:
        target.import_state(delta, progress=progress)
    after = target.export_state()
    report = MigrationReport(
        copied_stores=len(delta.stores),
        copied_products=len(delta.products),
        copied_history=len(delta.history),
        copied_keys=len(delta.events),
        copied_users=len(delta.users),
        copied_tokens=len(delta.tokens),
        source=_counts(have),
        target=_counts(after),
    )
    mine, theirs = _totals(have), _totals(after)
    report.totals = {code: (mine[code], theirs.get(code, 0)) for code in mine}
    _verify(have, after, report, exact=target_is_empty and not there.history)
    return report


def _verify(have: Snapshot, after: Snapshot, report: MigrationReport, *, exact: bool) -> None:
    """Everything of `have` is in `after`: stores with their names, products with their
    stock, history, keys with their fingerprints and results, users and tokens as stored
    (`exact`: into a target that had no history, the history entry for entry, ids
    included)."""
    their_stores = {s.code: s.name for s in after.stores}
    lost_stores = [s.code for s in have.stores if their_stores.get(s.code) != s.name]
    landed = {sku_key(p.sku): p for p in after.products}
    missing = [
        p.sku
        for p in have.products
        if sku_key(p.sku) not in landed or not _same(p, landed[sku_key(p.sku)])
    ]
    wrong_totals = [code for code, (a, b) in report.totals.items() if a != b and exact]
    if exact:
        lost = sum(1 for a, b in zip(have.history, after.history, strict=False) if a != b)
        lost += abs(len(have.history) - len(after.history))
    else:
        after_seen = {_entry_key(m) for m in after.history}
        lost = sum(1 for m in have.history if _entry_key(m) not in after_seen)
    keys: dict[str, AppliedEvent] = {e.event_id: e for e in after.events}
    lost_keys = sum(
        1
        for e in have.events
        if e.event_id not in keys
        or keys[e.event_id].fingerprint != e.fingerprint
        or len(result_movements(keys[e.event_id].result)) != len(result_movements(e.result))
    )
    their_users = {u.username: u for u in after.users}
    lost_users = sum(1 for u in have.users if their_users.get(u.username) != u)
    their_tokens = {t.digest: t for t in after.tokens}
    lost_tokens = sum(
        1
        for t in have.tokens
        if t.digest not in their_tokens or not _same_token(t, their_tokens[t.digest])
    )
    if lost_stores or missing or wrong_totals or lost or lost_keys or lost_users or lost_tokens:
        raise Conflict(
            f"verification failed after copying: {len(lost_stores)} stores, "
            f"{len(missing)} products and {len(wrong_totals)} store totals differ, "
            f"{lost} history entries differ or are missing, {lost_keys} idempotency keys "
            f"are missing or lost their result, {lost_users} users and {lost_tokens} tokens "
            "are missing or differ"
        )
