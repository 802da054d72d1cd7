"""The backend contract: what every storage backend does, documented once, here.

A backend is opened from the settings (`Backend.from_settings`), used, and closed
(it is a context manager).  Every mutation:

* is **idempotent** by `event_id`: the CLI makes a UUID per command, a script may give
  its own (`--idempotency-key`).  The same key again returns the first result, marked
  `replayed`, and changes nothing; the same key for a *different* request raises
  `Conflict`.
* writes one audit entry (`Movement`) per change, with the backend's `actor` and `source`.
* is atomic: it happens whole or raises and changes nothing.

Stock quantities are never negative: a change that would take one below zero raises
`InsufficientStock`.  `expect` is compare-and-set on the current quantity: if it differs,
`Conflict` is raised and nothing changes.  These rules are `backends.rules`; every value is
checked by `backends.values` (SKUs are looked up by `values.sku_key`: case and Unicode
normal form ignored; store codes are lower-case slugs).  Results come back as the frozen
types of `backends.models`.
"""

from __future__ import annotations

import abc
import copy
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Self

from . import values
from .batch import BatchResult, BatchRow, OnError
from .errors import ConfigurationError, NotFound
from .models import (
    Edited,
    Item,
    Movement,
    MovementSummary,
    Product,
    Snapshot,
    Store,
    StoreValue,
)
from .requests import StockChange, stock_change

if TYPE_CHECKING:
    from .auth import IssuedToken, Token, User
    from .settings import Settings

__all__ = ["Backend", "Progress"]

#: Called with the number of rows done so far, for progress bars.
Progress = Callable[[int], None]


class Backend(abc.ABC):
    """Base class of every backend.  Subclasses implement the abstract methods."""

    #: The name users select it by (`--backend NAME`).
    name: ClassVar[str]

    #: Block until a movement is applied (`--wait`).  Only the kafka backend applies
    #: movements later; the others have applied them when the call returns.
    wait: bool = False

    def __init__(self, *, actor: str = "unknown", source: str = "cli") -> None:
        #: Who the audit entries name, and through what they came.
        self.actor = actor
        self.source = source

    @classmethod
    @abc.abstractmethod
    def from_settings(cls, settings: Settings, *, actor: str, source: str) -> Self:
        """Open the backend from the settings (`backends.settings.Settings`)."""

    def acting_as(self, actor: str, source: str) -> Self:
        """A view of this backend whose entries name `actor` and `source`, sharing its
        connections: the HTTP server makes one per request for the authenticated user.
        Close the original, not the views."""
        view = copy.copy(self)
        view.actor = actor
        view.source = source
        return view

    def close(self) -> None:  # noqa: B027 - most backends hold nothing to close
        """Release connections.  Safe to call twice."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- set-up --------------------------------------------------------------------

    @abc.abstractmethod
    def init(self, *, record: bool = True) -> bool:
        """Create the storage (file, schema) with store `main` and, with `record`, the
        `store.create` entry that says so (`inv migrate` creates its target without it:
        the history it copies has its own).

        Returns True if it was created, False if it was already there (nothing changes).
        """

    @abc.abstractmethod
    def describe(self) -> str:
        """Where the data lives, for messages (`./inventory.json`, a database URL without
        its password)."""

    # -- stores --------------------------------------------------------------------

    @abc.abstractmethod
    def add_store(
        self, code: str, name: str | None = None, *, event_id: str | None = None
    ) -> Store:
        """Create a store (`store.create`).  `name` defaults to the code.

        Raises `AlreadyExists` if the code is taken, `ValidationError` if it is not a slug.
        """

    @abc.abstractmethod
    def remove_store(
        self, code: str, *, force: bool = False, event_id: str | None = None
    ) -> list[Movement]:
        """Delete a store and the stock records held there (`store.delete`).

        Store `main` cannot be removed (`ValidationError`).  A store still holding stock is
        refused with `Conflict` unless `force`, which writes the stock off first (one
        `product.delete` entry per product held there).  Returns the entries written.
        """

    @abc.abstractmethod
    def stores(self) -> list[Store]:
        """Every store, by code."""

    # -- catalog -------------------------------------------------------------------

    @abc.abstractmethod
    def add_product(
        self,
        name: str,
        price: Decimal | str,
        *,
        sku: str | None = None,
        store: str = "main",
        quantity: int = 0,
        unit: str = "each",
        category: str | None = None,
        reorder_level: int = 0,
        event_id: str | None = None,
    ) -> Product:
        """Add a product to the catalog and stock it at `store` with `quantity`.

        Without `sku` one is generated (`P000001`, the next free number).  One audit entry,
        `product.create`, records the store, the quantity as its delta, and the quantity
        after.  Raises `AlreadyExists` (SKU taken, ignoring case), `NotFound` (store),
        `ValidationError` (any value).  Returns the product with its `stock`.
        """

    @abc.abstractmethod
    def edit_product(
        self,
        sku: str,
        *,
        name: str | None = None,
        price: Decimal | str | None = None,
        unit: str | None = None,
        category: str | None = None,
        reorder_level: int | None = None,
        event_id: str | None = None,
    ) -> Edited:
        """Change catalog fields; None leaves a field as it is, `category=""` clears it.

        One `product.update` entry whose reason lists what changed (`price 4.50 -> 4.75`,
        `rules.product_diff`); nothing is recorded when nothing differs.  Returns the
        product with its `stock` and that text.
        """

    @abc.abstractmethod
    def remove_product(
        self,
        sku: str,
        *,
        store: str | None = None,
        force: bool = False,
        event_id: str | None = None,
    ) -> list[Movement]:
        """Remove a product from one store (`store`) or from the catalog (no `store`).

        Stock still on hand is refused with `Conflict` unless `force`.  Writes one
        `product.delete` entry per store it leaves (delta = minus the quantity written off)
        and, for the catalog, one with no store.  Returns those entries.
        """

    @abc.abstractmethod
    def get(self, sku: str) -> Product:
        """One product with its stock at every store it is stocked at.  `NotFound` if none."""

    def quantity(self, store: str, sku: str) -> int:
        """The stock of `sku` at `store`: 0 where it is not stocked.  `NotFound` for an
        unknown product or store.  (The kafka backend answers it from Redis.)"""
        code = values.store_code(store)
        product = self.get(sku)
        if code in product.stock:
            return product.stock[code]
        if code not in {s.code for s in self.stores()}:
            raise NotFound(f"no store {code!r}")
        return 0

    # -- stock ---------------------------------------------------------------------

    def adjust(
        self,
        store: str,
        sku: str,
        delta: int,
        reason: str | None = None,
        *,
        expect: int | None = None,
        event_id: str | None = None,
    ) -> Movement:
        """Add `delta` (negative to take away) to the stock of `sku` at `store`.

        The new quantity is computed by the store of record.  A result below zero raises
        `InsufficientStock`; a quantity other than `expect` raises `Conflict`.  The product
        becomes stocked at the store if it was not.  Returns the `stock.adjust` entry.
        """
        change = stock_change(
            store, sku, delta=delta, expect=expect, reason=reason, event_id=event_id
        )
        return self._change_stock(change)

    def set_quantity(
        self,
        store: str,
        sku: str,
        quantity: int,
        reason: str | None = None,
        *,
        expect: int | None = None,
        event_id: str | None = None,
    ) -> Movement:
        """Set the stock (a count); the `stock.set` entry records the delta it implies."""
        change = stock_change(
            store, sku, quantity=quantity, expect=expect, reason=reason, event_id=event_id
        )
        return self._change_stock(change)

    @abc.abstractmethod
    def _change_stock(self, change: StockChange) -> Movement:
        """Apply a checked `adjust` or `set_quantity`, once per `change.event_id`."""

    @abc.abstractmethod
    def transfer(
        self,
        sku: str,
        from_store: str,
        to_store: str,
        quantity: int,
        reason: str | None = None,
        *,
        event_id: str | None = None,
    ) -> tuple[Movement, Movement]:
        """Move `quantity` (> 0) between two different stores, all or nothing.

        Returns the `stock.transfer_out` and `stock.transfer_in` entries.
        """

    @abc.abstractmethod
    def apply(
        self,
        rows: Sequence[BatchRow],
        *,
        on_error: OnError = "reject-all",
        dry_run: bool = False,
        default_store: str = "main",
        event_id: str | None = None,
        progress: Progress | None = None,
    ) -> BatchResult:
        """Apply many rows as one unit; see `backends.batch` for what a row means.

        Every bad row is reported with its row number, column and reason.  With
        `reject-all`, any bad row raises `BatchRejected` and nothing is written; with
        `skip-rows` the good rows are applied and the problems returned.  `dry_run`
        validates and returns what would change, writing nothing.  `event_id` identifies
        the whole batch: the same batch again returns the first result.
        """

    def import_file(
        self,
        data: bytes,
        fmt: str,
        *,
        on_error: OnError = "reject-all",
        dry_run: bool = False,
        default_store: str = "main",
        event_id: str | None = None,
        progress: Progress | None = None,
    ) -> BatchResult | None:
        """Apply a whole import file (`fmt`: `csv` or `jsonl`) in the store of record, if
        this backend can do it faster than parsing it in Python and calling `apply`.

        Returns what `apply` would return for the file's rows (figures, entries), having
        written exactly what it would write; or None, having written nothing, when the
        file is not one it takes: the caller then parses the file
        (`inventory_cli.files.read_rows`) and calls `apply`, as for any backend, and that
        is what reports bad rows.  Only a clean file is ever taken, so this never reports
        problems nor raises `BatchRejected`.  Bad arguments (`default_store`, `on_error`,
        `event_id`) raise `ValidationError` as `apply` does.

        The default takes no file.
        """
        return None

    # -- reads ---------------------------------------------------------------------

    @abc.abstractmethod
    def list_items(
        self,
        *,
        store: str | None = None,
        low_stock: bool = False,
        search: str | None = None,
        category: str | None = None,
        sort: str = "sku",
        descending: bool = False,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Item]:
        """One row per stocked (sku, store) pair, and one per product stocked nowhere
        (store None, quantity 0) unless `store` is given.

        `low_stock` keeps rows at or below their reorder level (a level of 0 is never
        low; unstocked rows are never low).  `search` matches SKU or name, ignoring case;
        `category` matches exactly, ignoring case.  `sort` is one of sku, name, quantity,
        value (price x quantity); ties fall back to sku then store.  `NotFound` for an
        unknown store.
        """

    @abc.abstractmethod
    def history(
        self,
        sku: str | None = None,
        *,
        store: str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> list[Movement]:
        """Audit entries, newest first, optionally for one SKU (case ignored, including
        products since deleted), one store, and from `since` on."""

    @abc.abstractmethod
    def report_value(self, *, store: str | None = None) -> list[StoreValue]:
        """Stock value per store (every store, by code, even empty ones)."""

    def report_low_stock(self, *, store: str | None = None) -> list[Item]:
        """Rows at or below their reorder level, lowest quantity first."""
        return self.list_items(store=store, low_stock=True, sort="quantity")

    @abc.abstractmethod
    def report_movements(
        self,
        *,
        store: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[MovementSummary]:
        """Stock movements per (store, sku) in [since, until): how many, units in, units out.

        Counts stock entries (adjust, set, transfers, and stock created or written off
        with a product); catalog-only entries are left out.  Ordered by store, then sku.
        """

    # -- users and API tokens (rules: `backends.auth`) ------------------------------------

    @abc.abstractmethod
    def add_user(
        self,
        username: str,
        password: str,
        role: str,
        *,
        stores: Sequence[str] | None = None,
    ) -> User:
        """Create a user; the password is stored only as its Argon2id hash.

        `stores` limits the user to those stores (each must exist: `NotFound`); None or
        empty means every store.  `AlreadyExists` if the name is taken, `ValidationError`
        for a bad name (`values.username`), password (`values.password`) or role.
        """

    @abc.abstractmethod
    def users(self) -> list[User]:
        """Every user, by name."""

    @abc.abstractmethod
    def get_user(self, username: str) -> User:
        """One user; `NotFound` if there is none."""

    @abc.abstractmethod
    def update_user(
        self,
        username: str,
        *,
        password: str | None = None,
        role: str | None = None,
        stores: Sequence[str] | None = None,
        disabled: bool | None = None,
    ) -> User:
        """Change a user; None leaves a field as it is (`stores=[]`: every store).
        Disabling a user refuses its tokens at once."""

    @abc.abstractmethod
    def remove_user(self, username: str) -> None:
        """Delete a user and its tokens.  `NotFound` if there is none."""

    @abc.abstractmethod
    def login(self, username: str, password: str) -> User:
        """The user, if the password is right and the user enabled; else
        `Unauthenticated` with one message whatever was wrong (`auth.bad_login`)."""

    @abc.abstractmethod
    def create_token(
        self,
        username: str,
        *,
        name: str | None = None,
        expires_at: datetime | None = None,
    ) -> IssuedToken:
        """Make a token for a user (`NotFound` if none); its secret is in the result
        and nowhere else: only its digest is stored."""

    @abc.abstractmethod
    def tokens(self, username: str | None = None) -> list[Token]:
        """Tokens (never their secrets), of one user or of all, oldest first."""

    @abc.abstractmethod
    def revoke_token(self, token_id: int) -> Token:
        """Delete a token so it is refused at once; returns it.  `NotFound` if none."""

    @abc.abstractmethod
    def authenticate(self, secret: str) -> User:
        """The user a token acts for; `Unauthenticated` if the token is unknown,
        expired or revoked, or its user disabled or gone (`auth.check_token_usable`).
        Records when the token was last used (at most about once a minute)."""

    # -- operations (not every backend has each; the default says so) ------------------

    def upgrade(self) -> tuple[str | None, str]:
        """`inv db upgrade`: bring the storage's schema to this code's; (before, after)."""
        raise ConfigurationError(f"the {self.name} backend has no schema to upgrade")

    def status(self) -> dict[str, Any]:
        """Health of every service behind the backend, for `inv status`."""
        return {"backend": self.name, "where": self.describe(), "ok": True}

    def prune_audit(self, older_than: datetime) -> list[str]:
        """Drop whole months of history older than `older_than`; returns what went."""
        raise ConfigurationError(
            f"the {self.name} backend keeps all its history; pruning needs postgres"
        )

    @abc.abstractmethod
    def verify_audit(self) -> tuple[int, list[str]]:
        """Check the stock against its history: every (store, sku)'s last recorded
        quantity equals what is on hand.  Returns (stock rows checked, mismatches)."""

    def seed(
        self, *, stores: int, products: int, progress: Progress | None = None
    ) -> dict[str, int]:
        """Generate a realistic data set for demos and benchmarks; returns counts."""
        raise ConfigurationError(f"seeding is for the postgres backend, not {self.name}")

    @abc.abstractmethod
    def export_state(self) -> Snapshot:
        """Everything, for `inv migrate`: stores, catalog with stock, history oldest first,
        the idempotency keys with their fingerprints and first results, and the users and
        API tokens as stored (`StoredUser`, `StoredToken`: hashes and digests, which no
        other read returns)."""

    @abc.abstractmethod
    def import_state(self, snapshot: Snapshot, *, progress: Progress | None = None) -> None:
        """Add `snapshot` to this backend in one unit, for `inv migrate`.

        Stores already here are kept; products, idempotency keys, users and tokens must
        not be here yet.  History entries keep their times, actors and event ids, and
        their ids too when this backend has no history yet; otherwise they are appended
        in order with new ids (and the keys' results follow them).  Users and tokens keep
        their password hashes and digests verbatim, so each password and token works
        here; tokens keep their ids when this backend has no token yet, else get new ones.
        """
