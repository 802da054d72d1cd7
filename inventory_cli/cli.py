"""The `inv` command: parse, call one `Backend` method, render.

Business rules live in `backends`; this module only turns arguments into a call and
the result into output.  Data goes to stdout, `Error: ...` lines to stderr, and each
backend error maps to one exit code (`inventory_cli.errors`).
"""

import sys
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

from backends.models import MOVEMENT_FIELDS

from .errors import DATA_ERROR, REFUSED, TEMP_FAILURE, fail, guard
from .formats import FileFormat, Format, ShowFormat

if TYPE_CHECKING:
    from backends import Backend, BatchResult, BatchRow, Movement, RowProblem
    from backends.auth import User

    from .settings import Settings

__all__ = ["app", "main"]

F = TypeVar("F", bound=Callable[..., Any])

HELP = (
    "Inventory for retail, from one shop to ten thousand stores.\n\n"
    "Products live in one catalog; each store holds its own stock of them. "
    "Start with [bold]inv init[/bold], then [bold]inv add[/bold], [bold]inv update[/bold] "
    "and [bold]inv list[/bold]."
)

app = typer.Typer(
    name="inv",
    help=HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)
store_app = typer.Typer(help="Add, list and remove stores.", no_args_is_help=True)
report_app = typer.Typer(help="Reports: stock value, low stock, movements.", no_args_is_help=True)
db_app = typer.Typer(help="The database schema (postgres).", no_args_is_help=True)
audit_app = typer.Typer(help="The audit log.", no_args_is_help=True)
user_app = typer.Typer(
    help="Users of the HTTP API: add, list, change, remove.", no_args_is_help=True
)
token_app = typer.Typer(help="API tokens: create (shown once), list, revoke.", no_args_is_help=True)
app.add_typer(store_app, name="store")
app.add_typer(report_app, name="report")
app.add_typer(db_app, name="db")
app.add_typer(audit_app, name="audit")
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")


def command(group: typer.Typer, name: str | None = None) -> Callable[[F], F]:
    """Register a command behind the one error boundary."""

    def register(function: F) -> F:
        group.command(name)(guard(function))
        return function

    return register


# -- shared state and options --------------------------------------------------------


@dataclass
class Options:
    """The global flags; settings are loaded only when a command needs a backend."""

    backend: str | None = None
    file: Path | None = None
    config: Path | None = None
    quiet: bool = False

    def settings(self) -> "Settings":
        from .settings import load_settings

        return load_settings(self.config, backend=self.backend, file=self.file)

    def open(self, source: str = "cli", settings: "Settings | None" = None) -> "Backend":
        import logging

        from backends import get_backend_class

        if not logging.getLogger().handlers:
            # Backends warn (a replica or the cache is down) through logging: one line each.
            logging.basicConfig(level=logging.WARNING, format="Warning: %(message)s")
            # A Kafka client's retries are not news: what fails is raised as an error.
            logging.getLogger("inv.kafka.client").setLevel(logging.CRITICAL)
        settings = settings or self.settings()
        cls = get_backend_class(settings.backend)
        return cls.from_settings(settings, actor=settings.who(), source=source)


def _options(ctx: typer.Context) -> Options:
    if not isinstance(ctx.obj, Options):
        ctx.obj = Options()
    return ctx.obj


def _say(ctx: typer.Context, quiet: bool, text: str, *, replayed: bool = False) -> None:
    """A confirmation on stdout, unless --quiet; a replayed request (its idempotency key
    was applied before) says so: what is printed is the first result."""
    if not (quiet or _options(ctx).quiet):
        print(f"{text} {REPLAYED}" if replayed else text)


#: What a confirmation adds when the request was applied before with the same key.
REPLAYED = "(already applied with this idempotency key; nothing changed now)"


def _whole(text: str) -> int:
    """A whole number on the command line: ASCII digits and a sign, nothing else (no
    `1_000`, no digits of other scripts); its bounds are the backend's to check."""
    from backends import ValidationError, values

    try:
        return values.integer(text, field="value", minimum=-(10**41), maximum=10**41)
    except ValidationError as exc:
        raise typer.BadParameter(str(exc).removeprefix("value: ")) from None


Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing on success.")]
StoreOpt = Annotated[str, typer.Option("--store", "-s", help="Store code.")]
Key = Annotated[
    str | None,
    typer.Option(
        "--idempotency-key",
        help="Make retries safe: the same key again returns the first result.",
    ),
]
Reason = Annotated[
    str | None, typer.Option("--reason", "-r", help="Why: sale, restock, count, damage, ...")
]
Wait = Annotated[
    bool,
    typer.Option("--wait", help="Wait until applied (kafka backend; others apply at once)."),
]
FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="Output format.")]


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"inv {version('inv')}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    backend: Annotated[
        str | None,
        typer.Option(
            "--backend", "-b", help="json (default), or a service backend.", show_default=False
        ),
    ] = None,
    # Paths are taken as text: the backend and the settings say what is wrong with one
    # (Click's own checks would answer an unreadable file with a usage error).
    file: Annotated[
        str | None,
        typer.Option("--file", help="The JSON inventory file.", show_default="./inventory.json"),
    ] = None,
    config: Annotated[
        str | None, typer.Option("--config", help="TOML settings file.", envvar="INV_CONFIG")
    ] = None,
    quiet: Quiet = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    for stream in (sys.stdout, sys.stderr):
        # A file name that is not UTF-8 (a lone surrogate) is echoed, not a crash.
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    ctx.obj = Options(
        backend=backend,
        file=Path(file) if file is not None else None,
        config=Path(config) if config is not None else None,
        quiet=quiet,
    )


# -- set-up ---------------------------------------------------------------------------


@command(app)
def init(ctx: typer.Context, quiet: Quiet = False) -> None:
    """Create the inventory (the JSON file, or the schema) with store main."""
    with _options(ctx).open() as inv:
        created = inv.init()
        where = inv.describe()
    _say(ctx, quiet, f"Created {where}" if created else f"{where} already exists; nothing changed")


# -- catalog --------------------------------------------------------------------------


@command(app)
def add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Product name.")],
    price: Annotated[str, typer.Option("--price", "-p", help="Unit price, e.g. 4.50.")],
    qty: Annotated[
        int, typer.Option("--qty", "-n", parser=_whole, help="Opening stock at --store.")
    ] = 0,
    sku: Annotated[
        str | None,
        typer.Option("--sku", help="SKU.", show_default="the next free P000001-style one"),
    ] = None,
    store: StoreOpt = "main",
    unit: Annotated[str, typer.Option("--unit", help="each, kg, box, ...")] = "each",
    category: Annotated[str | None, typer.Option("--category", "-c")] = None,
    reorder_level: Annotated[
        int,
        typer.Option(
            "--reorder-level", parser=_whole, help="Low stock at or below this (0: never)."
        ),
    ] = 0,
    idempotency_key: Key = None,
    quiet: Quiet = False,
) -> None:
    """Add a product to the catalog and stock it at a store.  Prints the new SKU."""
    with _options(ctx).open() as inv:
        product = inv.add_product(
            name,
            price,
            sku=sku,
            store=store,
            quantity=qty,
            unit=unit,
            category=category,
            reorder_level=reorder_level,
            event_id=idempotency_key,
        )
    if quiet or _options(ctx).quiet:
        print(product.sku)
        return
    where, count = next(iter(product.stock.items()), (store, qty))
    _say(
        ctx,
        quiet,
        f"Added {product.sku} ({product.name}) at {product.price}: "
        f"{count} {product.unit} at {where}",
        replayed=product.replayed,
    )


@command(app)
def edit(
    ctx: typer.Context,
    sku: Annotated[str, typer.Argument(help="The product's SKU.")],
    name: Annotated[str | None, typer.Option("--name")] = None,
    price: Annotated[str | None, typer.Option("--price", "-p")] = None,
    unit: Annotated[str | None, typer.Option("--unit")] = None,
    category: Annotated[str | None, typer.Option("--category", "-c", help='"" clears it.')] = None,
    reorder_level: Annotated[int | None, typer.Option("--reorder-level", parser=_whole)] = None,
    idempotency_key: Key = None,
    quiet: Quiet = False,
) -> None:
    """Change a product's catalog fields."""
    if all(v is None for v in (name, price, unit, category, reorder_level)):
        raise typer.BadParameter(
            "give at least one of --name, --price, --unit, --category, --reorder-level"
        )
    with _options(ctx).open() as inv:
        edited = inv.edit_product(
            sku,
            name=name,
            price=price,
            unit=unit,
            category=category,
            reorder_level=reorder_level,
            event_id=idempotency_key,
        )
    product = edited.product
    _say(
        ctx,
        quiet,
        f"Updated {product.sku}: {edited.changes}"
        if edited.changes
        else f"{product.sku}: no change",
        replayed=edited.replayed,
    )


@command(app)
def remove(
    ctx: typer.Context,
    sku: Annotated[str, typer.Argument(help="The product's SKU.")],
    store: Annotated[
        str | None,
        typer.Option("--store", "-s", help="Only drop it from this store."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Write off stock still on hand.")] = False,
    idempotency_key: Key = None,
    quiet: Quiet = False,
) -> None:
    """Remove a product from a store (--store) or from the catalog."""
    with _options(ctx).open() as inv:
        written = inv.remove_product(sku, store=store, force=force, event_id=idempotency_key)
    off = sum(-(m.delta or 0) for m in written)
    note = f" ({off} written off)" if off else ""
    sku_out = written[0].sku if written else sku
    where = f"from {written[0].store}" if store is not None and written else "from the catalog"
    _say(
        ctx,
        quiet,
        f"Removed {sku_out} {where}{note}",
        replayed=any(m.replayed for m in written),
    )


# -- stock ----------------------------------------------------------------------------


@command(app)
def update(
    ctx: typer.Context,
    sku: Annotated[str, typer.Argument(help="The product's SKU.")],
    change: Annotated[
        int | None,
        typer.Option("--change", parser=_whole, help="Add N (negative to take away: --change -3)."),
    ] = None,
    set_to: Annotated[
        int | None, typer.Option("--set", parser=_whole, help="Set the stock to N (a count).")
    ] = None,
    store: StoreOpt = "main",
    reason: Reason = None,
    expect: Annotated[
        int | None,
        typer.Option(
            "--expect",
            parser=_whole,
            help="Only if the current quantity is this (compare-and-set).",
        ),
    ] = None,
    idempotency_key: Key = None,
    wait: Wait = False,
    quiet: Quiet = False,
) -> None:
    """Change the stock of a product at a store, by --change N or to --set N."""
    if (change is None) == (set_to is None):
        raise typer.BadParameter("give exactly one of --change N or --set N")
    with _options(ctx).open() as inv:
        inv.wait = wait
        if change is not None:
            moved = inv.adjust(store, sku, change, reason, expect=expect, event_id=idempotency_key)
        else:
            assert set_to is not None
            moved = inv.set_quantity(
                store, sku, set_to, reason, expect=expect, event_id=idempotency_key
            )
    _say(ctx, quiet, _describe_move(moved), replayed=moved.replayed)


def _describe_move(m: "Movement") -> str:
    if m.pending:
        what = f"set to {m.quantity_after}" if m.delta is None else f"{m.delta:+d}"
        return f"{m.sku} at {m.store}: {what} queued as event {m.event_id}"
    after = m.quantity_after or 0
    delta = m.delta or 0
    return f"{m.sku} at {m.store}: {after - delta} -> {after} ({delta:+d})"


@command(app)
def transfer(
    ctx: typer.Context,
    sku: Annotated[str, typer.Argument(help="The product's SKU.")],
    from_store: Annotated[str, typer.Option("--from", help="Store it leaves.")],
    to_store: Annotated[str, typer.Option("--to", help="Store it goes to.")],
    qty: Annotated[int, typer.Option("--qty", "-n", parser=_whole, help="How many.")],
    reason: Reason = None,
    idempotency_key: Key = None,
    wait: Wait = False,
    quiet: Quiet = False,
) -> None:
    """Move stock between two stores, all or nothing."""
    with _options(ctx).open() as inv:
        inv.wait = wait
        out, into = inv.transfer(sku, from_store, to_store, qty, reason, event_id=idempotency_key)
    if out.pending:
        _say(
            ctx,
            quiet,
            f"Moving {qty} {out.sku} from {out.store} to {into.store}: queued as event "
            f"{out.event_id}",
        )
        return
    _say(
        ctx,
        quiet,
        f"Moved {-(out.delta or 0)} {out.sku} from {out.store} to {into.store} "
        f"({out.store}: {out.quantity_after}, {into.store}: {into.quantity_after})",
        replayed=out.replayed,
    )


# -- reads ----------------------------------------------------------------------------


class SortKey(StrEnum):
    sku = "sku"
    name = "name"
    quantity = "quantity"
    value = "value"


LIST_TABLE = ("sku", "name", "category", "store", "quantity", "unit", "price", "value")
LIST_COLUMNS = (
    "sku",
    "name",
    "price",
    "unit",
    "category",
    "reorder_level",
    "store",
    "quantity",
    "value",
)


@command(app, "list")
def list_(
    ctx: typer.Context,
    store: Annotated[str | None, typer.Option("--store", "-s", help="Only this store.")] = None,
    low_stock: Annotated[
        bool, typer.Option("--low-stock", help="Only rows at or below their reorder level.")
    ] = False,
    search: Annotated[str | None, typer.Option("--search", help="Text in the SKU or name.")] = None,
    category: Annotated[str | None, typer.Option("--category", "-c")] = None,
    sort: Annotated[SortKey, typer.Option("--sort", help="Sort by.")] = SortKey.sku,
    desc: Annotated[bool, typer.Option("--desc", help="Largest first.")] = False,
    limit: Annotated[
        int | None, typer.Option("--limit", parser=_whole, help="At most N rows.")
    ] = None,
    offset: Annotated[
        int, typer.Option("--offset", parser=_whole, help="Skip the first N rows.")
    ] = 0,
    fmt: FormatOpt = Format.table,
) -> None:
    """List stock: one row per product and store."""
    from .formats import item_record, render

    with _options(ctx).open() as inv:
        items = inv.list_items(
            store=store,
            low_stock=low_stock,
            search=search,
            category=category,
            sort=sort.value,
            descending=desc,
            limit=limit,
            offset=offset,
        )
    records = [item_record(i) for i in items]
    columns = LIST_TABLE if fmt == Format.table else LIST_COLUMNS
    render(records, fmt, columns=columns, empty="no products")


@command(app)
def show(
    ctx: typer.Context,
    sku: Annotated[str, typer.Argument(help="The product's SKU.")],
    fmt: Annotated[ShowFormat, typer.Option("--format", "-f")] = ShowFormat.table,
) -> None:
    """Show one product and its stock at every store."""
    from .formats import product_record, render_one

    with _options(ctx).open() as inv:
        product = inv.get(sku)
    record = product_record(product)
    if fmt == ShowFormat.table:
        record["stock"] = ", ".join(f"{s}: {q}" for s, q in product.stock.items())
        record["total"] = sum(product.stock.values())
    render_one(record, fmt, title=product.sku)


HISTORY_TABLE = ("id", "at", "actor", "action", "store", "sku", "delta", "quantity_after", "reason")
HISTORY_COLUMNS = MOVEMENT_FIELDS

Since = Annotated[
    str | None,
    typer.Option("--since", help="ISO date or time (UTC), or an age: 15m, 24h, 7d, 18mo, 7y."),
]


@command(app)
def history(
    ctx: typer.Context,
    sku: Annotated[str | None, typer.Argument(help="Only this SKU.")] = None,
    store: Annotated[str | None, typer.Option("--store", "-s", help="Only this store.")] = None,
    since: Since = None,
    limit: Annotated[
        int | None, typer.Option("--limit", parser=_whole, help="At most N, newest first.")
    ] = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """The audit trail, newest first."""
    from backends import values

    from .formats import movement_record, render

    when = values.moment(since, field="since") if since is not None else None
    with _options(ctx).open() as inv:
        entries = inv.history(sku, store=store, since=when, limit=limit)
    columns = HISTORY_TABLE if fmt == Format.table else HISTORY_COLUMNS
    render([movement_record(m) for m in entries], fmt, columns=columns, empty="no history")


# -- stores ---------------------------------------------------------------------------


@command(store_app, "add")
def store_add(
    ctx: typer.Context,
    code: Annotated[str, typer.Argument(help="Store code: lower-case letters, digits, - and _.")],
    name: Annotated[
        str | None, typer.Option("--name", help="Store name.", show_default="the code")
    ] = None,
    idempotency_key: Key = None,
    quiet: Quiet = False,
) -> None:
    """Add a store."""
    with _options(ctx).open() as inv:
        added = inv.add_store(code, name, event_id=idempotency_key)
    _say(ctx, quiet, f"Added store {added.code} ({added.name})", replayed=added.replayed)


@command(store_app, "list")
def store_list(ctx: typer.Context, fmt: FormatOpt = Format.table) -> None:
    """List the stores."""
    from .formats import render, store_record

    with _options(ctx).open() as inv:
        stores = inv.stores()
    render([store_record(s) for s in stores], fmt, columns=("code", "name"))


@command(store_app, "remove")
def store_remove(
    ctx: typer.Context,
    code: Annotated[str, typer.Argument(help="Store code.")],
    force: Annotated[
        bool, typer.Option("--force", help="Write off stock still held there.")
    ] = False,
    idempotency_key: Key = None,
    quiet: Quiet = False,
) -> None:
    """Remove a store (refused while it holds stock, unless --force)."""
    with _options(ctx).open() as inv:
        written = inv.remove_store(code, force=force, event_id=idempotency_key)
    from backends import values

    off = sum(-(m.delta or 0) for m in written)
    note = f" ({off} written off)" if off else ""
    # An earlier inv remembered no entries for a removal: the replay has none to show.
    _say(
        ctx,
        quiet,
        f"Removed store {values.store_code(code)}{note}",
        replayed=not written or any(m.replayed for m in written),
    )


# -- users and API tokens -------------------------------------------------------------


class Role(StrEnum):
    admin = "admin"
    manager = "manager"
    clerk = "clerk"


UserName = Annotated[str, typer.Argument(help="The user's name (kept lower-case).")]
PasswordStdin = Annotated[
    bool,
    typer.Option(
        "--password-stdin",
        help="Read the password from standard input (its first line), not a prompt.",
    ),
]
UserStores = Annotated[
    list[str] | None,
    typer.Option(
        "--store",
        "-s",
        metavar="CODE",
        help="Limit the user to this store; repeat for more.",
        show_default="every store",
    ),
]


def _password(from_stdin: bool) -> str:
    """A new password: never from argv (it would show in `ps` and shell history)."""
    if from_stdin:
        # As `docker login --password-stdin`: the first line, without its line end.
        return sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    # Prompts go to stderr, so stdout stays the command's own.
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True, err=True)
    return password


def _describe_user(user: "User") -> str:
    where = ", stores " + " ".join(user.stores) if user.stores is not None else ""
    off = ", disabled" if user.disabled else ""
    return f"{user.username} ({user.role}{where}{off})"


@command(user_app, "add")
def user_add(
    ctx: typer.Context,
    username: UserName,
    role: Annotated[Role, typer.Option("--role", "-r", help="What the user may do.")],
    store: UserStores = None,
    password_stdin: PasswordStdin = False,
    quiet: Quiet = False,
) -> None:
    """Add a user; the password is asked twice (or read with --password-stdin)."""
    from backends import values

    values.username(username)  # a bad name is refused before the password is asked
    with _options(ctx).open() as inv:
        user = inv.add_user(username, _password(password_stdin), role.value, stores=store)
    _say(ctx, quiet, f"Added user {_describe_user(user)}")


@command(user_app, "list")
def user_list(ctx: typer.Context, fmt: FormatOpt = Format.table) -> None:
    """List the users (never their passwords)."""
    from .formats import USER_COLUMNS, render, user_record

    with _options(ctx).open() as inv:
        records = [user_record(u) for u in inv.users()]
    if fmt != Format.json:
        for record in records:
            stores = record["stores"]
            joined = ", " if fmt == Format.table else " "
            record["stores"] = joined.join(stores) if stores is not None else None
    if fmt == Format.table:
        for record in records:
            record["stores"] = record["stores"] or "all"
    render(records, fmt, columns=USER_COLUMNS, empty="no users")


@command(user_app, "remove")
def user_remove(ctx: typer.Context, username: UserName, quiet: Quiet = False) -> None:
    """Remove a user and revoke its tokens."""
    from backends import values

    with _options(ctx).open() as inv:
        inv.remove_user(username)
    _say(ctx, quiet, f"Removed user {values.username(username)} and its tokens")


@command(user_app, "passwd")
def user_passwd(
    ctx: typer.Context,
    username: UserName,
    password_stdin: PasswordStdin = False,
    quiet: Quiet = False,
) -> None:
    """Set a user's password (asked twice, or read with --password-stdin)."""
    with _options(ctx).open() as inv:
        inv.get_user(username)  # an unknown user is refused before the password is asked
        user = inv.update_user(username, password=_password(password_stdin))
    _say(ctx, quiet, f"Changed the password of {user.username}")


@command(user_app, "disable")
def user_disable(ctx: typer.Context, username: UserName, quiet: Quiet = False) -> None:
    """Refuse a user's logins and tokens, at once, until enabled again."""
    with _options(ctx).open() as inv:
        user = inv.update_user(username, disabled=True)
    _say(ctx, quiet, f"Disabled {user.username}: its logins and tokens are refused")


@command(user_app, "enable")
def user_enable(ctx: typer.Context, username: UserName, quiet: Quiet = False) -> None:
    """Let a disabled user in again (its tokens work again unless expired)."""
    with _options(ctx).open() as inv:
        user = inv.update_user(username, disabled=False)
    _say(ctx, quiet, f"Enabled {_describe_user(user)}")


@command(user_app, "set")
def user_set(
    ctx: typer.Context,
    username: UserName,
    role: Annotated[Role | None, typer.Option("--role", "-r", help="A new role.")] = None,
    store: Annotated[
        list[str] | None,
        typer.Option(
            "--store",
            "-s",
            metavar="CODE",
            help="Limit the user to these stores (repeat for more).",
        ),
    ] = None,
    all_stores: Annotated[
        bool, typer.Option("--all-stores", help="Lift the limit: every store.")
    ] = False,
    quiet: Quiet = False,
) -> None:
    """Change a user's role or stores."""
    if store and all_stores:
        raise typer.BadParameter("give --store or --all-stores, not both")
    if role is None and not store and not all_stores:
        raise typer.BadParameter("give at least one of --role, --store, --all-stores")
    stores: list[str] | None = [] if all_stores else (store or None)
    with _options(ctx).open() as inv:
        user = inv.update_user(
            username, role=role.value if role is not None else None, stores=stores
        )
    _say(ctx, quiet, f"Updated {_describe_user(user)}")


@command(token_app, "create")
def token_create(
    ctx: typer.Context,
    user: Annotated[str, typer.Option("--user", "-u", help="Whom the token acts for.")],
    name: Annotated[
        str | None, typer.Option("--name", help="A label for it: till-3, nightly-import.")
    ] = None,
    expires: Annotated[
        str,
        typer.Option("--expires", help="Valid for this long (90d, 12h, 1y) or never."),
    ] = "90d",
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print only the token, no note.")
    ] = False,
) -> None:
    """Make an API token and print it, once: only its digest is kept."""
    from backends.auth import expiry
    from backends.models import format_time, utcnow

    expires_at = expiry(expires, utcnow())
    with _options(ctx).open() as inv:
        issued = inv.create_token(user, name=name, expires_at=expires_at)
    print(issued.secret)
    if not (quiet or _options(ctx).quiet):
        token = issued.token
        label = f" ({token.name})" if token.name else ""
        until = f"until {format_time(token.expires_at)}" if token.expires_at else "never expiring"
        print(
            f"Created token {token.id}{label} for {token.username}, {until}. "
            "It is shown only this once: keep it now.",
            file=sys.stderr,
        )


@command(token_app, "list")
def token_list(
    ctx: typer.Context,
    user: Annotated[str | None, typer.Option("--user", "-u", help="Only this user's.")] = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """List tokens, oldest first (never the tokens themselves)."""
    from .formats import TOKEN_COLUMNS, render, token_record

    with _options(ctx).open() as inv:
        tokens = inv.tokens(user)
    render([token_record(t) for t in tokens], fmt, columns=TOKEN_COLUMNS, empty="no tokens")


@command(token_app, "revoke")
def token_revoke(
    ctx: typer.Context,
    token_id: Annotated[int, typer.Argument(metavar="ID", parser=_whole, help="Its id.")],
    quiet: Quiet = False,
) -> None:
    """Revoke a token: refused from now on."""
    with _options(ctx).open() as inv:
        token = inv.revoke_token(token_id)
    label = f" ({token.name})" if token.name else ""
    _say(ctx, quiet, f"Revoked token {token.id}{label} of {token.username}")


# -- reports --------------------------------------------------------------------------


@command(report_app, "value")
def report_value(
    ctx: typer.Context,
    store: Annotated[str | None, typer.Option("--store", "-s", help="Only this store.")] = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Stock value per store (price x quantity)."""
    from decimal import Decimal

    from .formats import render, value_record

    with _options(ctx).open() as inv:
        rows = inv.report_value(store=store)
    footer = {
        "store": "total",
        "products": sum(r.products for r in rows),
        "units": sum(r.units for r in rows),
        "value": sum((r.value for r in rows), Decimal("0.00")),
    }
    render([value_record(r) for r in rows], fmt, title="Stock value", footer=footer)


@command(report_app, "low-stock")
def report_low_stock(
    ctx: typer.Context,
    store: Annotated[str | None, typer.Option("--store", "-s", help="Only this store.")] = None,
    fmt: FormatOpt = Format.table,
    exit_code: Annotated[
        bool, typer.Option("--exit-code", help="Exit 1 when anything is low (for cron alerts).")
    ] = False,
) -> None:
    """Products at or below their reorder level, lowest first."""
    from .formats import item_record, render

    with _options(ctx).open() as inv:
        items = inv.report_low_stock(store=store)
    columns = (
        ("sku", "name", "store", "quantity", "reorder_level", "unit")
        if fmt == Format.table
        else LIST_COLUMNS
    )
    render(
        [item_record(i) for i in items],
        fmt,
        columns=columns,
        title="Low stock",
        empty="nothing is low",
    )
    if exit_code and items:
        raise typer.Exit(REFUSED)


@command(report_app, "movements")
def report_movements(
    ctx: typer.Context,
    store: Annotated[str | None, typer.Option("--store", "-s", help="Only this store.")] = None,
    since: Since = None,
    until: Annotated[
        str | None, typer.Option("--until", help="End (exclusive), same forms as --since.")
    ] = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Units in and out per product and store over a period."""
    from backends import values

    from .formats import SUMMARY_COLUMNS, render, summary_record

    start = values.moment(since, field="since") if since is not None else None
    end = values.moment(until, field="until") if until is not None else None
    with _options(ctx).open() as inv:
        rows = inv.report_movements(store=store, since=start, until=end)
    render(
        [summary_record(r) for r in rows],
        fmt,
        columns=SUMMARY_COLUMNS,
        title="Movements",
        empty="no movements",
    )


# -- import and export ----------------------------------------------------------------


class OnErrorChoice(StrEnum):
    reject_all = "reject-all"
    skip_rows = "skip-rows"


def _guess_format(path: str, given: FileFormat | None) -> FileFormat:
    if given is not None:
        return given
    if path.lower().endswith((".jsonl", ".ndjson", ".json")):
        return FileFormat.jsonl
    return FileFormat.csv


def _open_input(stack: ExitStack, source: str) -> IO[bytes]:
    if source == "-":
        return sys.stdin.buffer
    try:
        return stack.enter_context(open(source, "rb"))
    except FileNotFoundError:
        raise fail(f"{source}: no such file", 66) from None
    except IsADirectoryError:
        raise fail(f"{source} is a folder, not a file", 66) from None
    except PermissionError:
        raise fail(f"{source}: permission denied", 77) from None
    except (OSError, ValueError) as exc:  # a name too long, a loop of links, a NUL
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise fail(f"{source}: cannot read it: {reason}", 66) from None


def _report_problems(name: str, problems: "list[RowProblem]") -> None:
    for problem in sorted(problems, key=lambda p: p.row):
        where = f"{name}: {problem}" if problem.row else f"{name}: {problem.reason}"
        print(f"Error: {where}", file=sys.stderr)


@command(app, "import")
def import_(
    ctx: typer.Context,
    source: Annotated[
        str, typer.Argument(metavar="FILE|-", help="CSV or JSON Lines; - for stdin.")
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check and show what would change; write nothing.")
    ] = False,
    on_error: Annotated[
        OnErrorChoice,
        typer.Option("--on-error", help="reject-all writes nothing if any row is bad."),
    ] = OnErrorChoice.reject_all,
    fmt: Annotated[
        FileFormat | None,
        typer.Option(
            "--format",
            "-f",
            help="csv or jsonl.",
            show_default="from the extension (.jsonl, .ndjson), else csv",
        ),
    ] = None,
    store: Annotated[
        str, typer.Option("--store", "-s", help="Store for rows without one.")
    ] = "main",
    idempotency_key: Key = None,
    quiet: Quiet = False,
) -> None:
    """Apply a file of products and stock movements, all rows or none."""
    import io

    from .files import read_rows
    from .formats import progress

    file_format = _guess_format(source, fmt)
    name = "stdin" if source == "-" else source
    with ExitStack() as stack:
        data = _open_input(stack, source).read()
    with _options(ctx).open(source="import") as inv:
        # A backend that can apply the file itself does (a clean file, in one go); else
        # it is parsed here and its rows applied.
        with progress(f"Importing {name}", None) as advance:
            taken = inv.import_file(
                data,
                file_format.value,
                on_error=on_error.value,
                dry_run=dry_run,
                default_store=store,
                event_id=idempotency_key,
                progress=advance,
            )
        if taken is None:
            with progress(f"Reading {name}", None) as advance:
                rows, problems = read_rows(io.BytesIO(data), file_format, progress=advance)
            result = _apply_rows(
                inv, rows, problems, name, dry_run, on_error, store, idempotency_key
            )
        else:
            result, problems = taken, []
    problems += result.problems
    if dry_run:
        for m in result.changes:
            print(_describe_change(m))
    _report_problems(name, problems)
    bad = len({p.row for p in problems})
    if problems and not dry_run and on_error == OnErrorChoice.reject_all:
        raise fail(f"{name}: {_rows(bad)} bad; nothing was written", DATA_ERROR)
    verb = "would apply" if dry_run else "applied"
    _say(
        ctx,
        quiet,
        f"{name}: {_rows(result.applied)} {verb}, {result.unchanged} unchanged, "
        f"{result.duplicates} already applied; {_count_changes(result.changes)}",
        replayed=result.replayed,
    )
    if problems:
        skipped = "would be skipped" if dry_run else "skipped"
        raise fail(f"{name}: {_rows(bad)} bad, {skipped}", DATA_ERROR)


def _apply_rows(
    inv: "Backend",
    rows: "list[BatchRow]",
    problems: "list[RowProblem]",
    name: str,
    dry_run: bool,
    on_error: OnErrorChoice,
    store: str,
    idempotency_key: str | None,
) -> "BatchResult":
    """Apply a file's parsed rows (`problems`: those that did not parse)."""
    from backends import BatchRejected

    from .formats import progress

    with progress("Applying", len(rows)) as advance:
        if dry_run or (problems and on_error == OnErrorChoice.reject_all):
            result = inv.apply(rows, on_error="skip-rows", dry_run=True, default_store=store)
        else:
            try:
                result = inv.apply(
                    rows,
                    on_error=on_error.value,
                    default_store=store,
                    event_id=idempotency_key,
                    progress=advance,
                )
            except BatchRejected as exc:
                _report_problems(name, exc.problems)
                bad = len({p.row for p in exc.problems})
                raise fail(f"{name}: {_rows(bad)} bad; nothing was written", DATA_ERROR) from None
    return result


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def _describe_change(m: "Movement") -> str:
    parts = [m.action, m.sku or "-"]
    if m.store:
        parts.append(f"at {m.store}")
    if m.delta is not None:
        parts.append(f"{m.delta:+d} -> {m.quantity_after}")
    if m.reason:
        parts.append(f"({m.reason})")
    return " ".join(parts)


def _count_changes(changes: "list[Movement]") -> str:
    if not changes:
        return "no changes"
    counts = Counter(m.action for m in changes)
    return ", ".join(f"{n} {action}" for action, n in sorted(counts.items()))


@command(app)
def export(
    ctx: typer.Context,
    fmt: Annotated[
        FileFormat, typer.Option("--format", "-f", help="csv or jsonl.")
    ] = FileFormat.csv,
    output: Annotated[
        str | None,
        typer.Option("--output", "-o", help="Write here, atomically.", show_default="stdout"),
    ] = None,
    store: Annotated[str | None, typer.Option("--store", "-s", help="Only this store.")] = None,
    quiet: Quiet = False,
) -> None:
    """Write the catalog and stock as CSV or JSON Lines; import reads it back."""
    import io

    from backends.fsutil import write_output

    from .files import export_records, write_rows
    from .formats import progress

    with _options(ctx).open() as inv:
        items = inv.list_items(store=store)
        names = {s.code: s.name for s in inv.stores()}
        if store is not None:
            from backends import values

            only = values.store_code(store)
            names = {code: n for code, n in names.items() if code == only}
    with progress("Exporting", len(items)) as advance:
        records = export_records(items, names, progress=advance)
        buffer = io.StringIO()
        count = write_rows(records, buffer, fmt)
    if output is None:
        sys.stdout.write(buffer.getvalue())
        return
    write_output(Path(output), buffer.getvalue().encode())
    if not (quiet or _options(ctx).quiet):
        print(f"Exported {count} rows to {output}", file=sys.stderr)


# -- operations -----------------------------------------------------------------------


@command(db_app, "upgrade")
def db_upgrade(ctx: typer.Context, quiet: Quiet = False) -> None:
    """Migrate the schema to this version of inv (safe to run again)."""
    with _options(ctx).open() as inv:
        before, after = inv.upgrade()
        where = inv.describe()
    if before == after:
        _say(ctx, quiet, f"{where}: schema already at {after}")
    else:
        _say(ctx, quiet, f"{where}: schema upgraded from {before or 'nothing'} to {after}")


@command(audit_app, "prune")
def audit_prune(
    ctx: typer.Context,
    older_than: Annotated[
        str, typer.Option("--older-than", help="Retention, an age: 7y, 18mo, 6w, 90d.")
    ] = "7y",
    quiet: Quiet = False,
) -> None:
    """Drop whole months of history older than the retention (7 years by default)."""
    from backends import values

    cutoff = values.age(older_than, field="older-than")
    with _options(ctx).open() as inv:
        dropped = inv.prune_audit(cutoff)
    if dropped:
        _say(ctx, quiet, "Dropped " + ", ".join(dropped))
    else:
        _say(ctx, quiet, f"Nothing older than {cutoff:%Y-%m-%d} to drop")


@command(audit_app, "verify")
def audit_verify(ctx: typer.Context, quiet: Quiet = False) -> None:
    """Check every stock level against its history; exit 1 on any mismatch."""
    with _options(ctx).open() as inv:
        checked, problems = inv.verify_audit()
    for problem in problems:
        print(f"Error: {problem}", file=sys.stderr)
    if problems:
        raise fail(f"{len(problems)} of {checked} stock rows disagree with the history", REFUSED)
    _say(ctx, quiet, f"{checked} stock rows agree with the history")


@command(app)
def seed(
    ctx: typer.Context,
    stores: Annotated[
        int, typer.Option("--stores", parser=_whole, help="How many stores.")
    ] = 10_000,
    products: Annotated[
        int, typer.Option("--products", parser=_whole, help="How many products.")
    ] = 500,
    quiet: Quiet = False,
) -> None:
    """Generate a realistic data set (every product at every store), for demos."""
    from .formats import progress

    with _options(ctx).open() as inv, progress("Seeding stores", stores) as advance:
        counts = inv.seed(stores=stores, products=products, progress=advance)
    _say(
        ctx,
        quiet,
        f"Seeded {counts['stores']} stores, {counts['products']} products, "
        f"{counts['stock_rows']} stock rows",
    )


@command(app)
def status(
    ctx: typer.Context,
    fmt: Annotated[ShowFormat, typer.Option("--format", "-f")] = ShowFormat.table,
) -> None:
    """Health of the backend's services: database, replicas and their lag."""
    from .formats import render_one

    with _options(ctx).open() as inv:
        report = inv.status()
    render_one(report, fmt, title=f"inv status ({report['backend']})")
    if not report.get("ok", True):
        raise typer.Exit(TEMP_FAILURE)


@command(app)
def worker(
    ctx: typer.Context,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size", parser=_whole, help="Events per batch, at most.", show_default="1000"
        ),
    ] = None,
    batch_ms: Annotated[
        int | None,
        typer.Option(
            "--batch-ms",
            parser=_whole,
            help="How long a batch waits to fill, in ms.",
            show_default="50",
        ),
    ] = None,
    group: Annotated[
        str | None,
        typer.Option("--group", help="The consumer group.", show_default="inv-workers"),
    ] = None,
    health_file: Annotated[
        Path | None,
        typer.Option(
            "--health-file", help="Touch this file after every poll (container healthchecks)."
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            parser=_whole,
            help="Serve Prometheus metrics on this port (/metrics; needs the api extra).",
        ),
    ] = None,
    metrics_host: Annotated[
        str,
        typer.Option("--metrics-host", help="Address the metrics listen on (with --metrics-port)."),
    ] = "127.0.0.1",
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every batch.")] = False,
) -> None:
    """Apply stock events from Kafka to PostgreSQL, in batches (kafka backend).

    Run as many as you like: they share the topic's partitions.  SIGTERM or Ctrl-C
    finishes the batch in hand and exits 0.  With --metrics-port, /metrics has the
    events applied, rejected and skipped as duplicates, batch durations and the lag.
    """
    import logging
    import signal

    from backends import ConfigurationError
    from backends.kafka import KafkaBackend
    from backends.kafka.worker import Worker

    if metrics_port is not None and not 0 <= metrics_port <= 65535:
        raise typer.BadParameter(
            f"{metrics_port} is not a port (0-65535)", param_hint="--metrics-port"
        )
    options = _options(ctx)
    settings = options.settings()
    # The flags override the settings, and are checked as the settings are.
    overrides = {"kafka_group": group, "worker_batch_size": batch_size, "worker_batch_ms": batch_ms}
    given = {k: v for k, v in overrides.items() if v is not None}
    if given:
        from .settings import with_changes

        settings = with_changes(settings, given)
    metrics = None
    if metrics_port is not None:  # first: a missing extra or a port in use is said at once
        from backends.kafka.metrics import WorkerMetrics

        metrics = WorkerMetrics()
        metrics.serve(metrics_port, metrics_host)
    with ExitStack() as stack:
        if metrics is not None:
            stack.callback(metrics.close)
        logging.basicConfig(
            level=logging.DEBUG if verbose else logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            force=True,
        )
        handler = logging.getLogger().handlers[0]
        handler.formatter.converter = time.gmtime  # type: ignore[union-attr]
        inv = stack.enter_context(options.open(source="worker", settings=settings))
        if not isinstance(inv, KafkaBackend):
            raise ConfigurationError(
                f"inv worker applies Kafka events; the {inv.name} backend has none "
                "(use --backend kafka)"
            )
        runner = Worker(
            inv,
            group=settings.kafka_group,
            batch_size=settings.worker_batch_size,
            batch_ms=settings.worker_batch_ms,
            session_timeout_ms=settings.kafka_session_timeout_ms,
            health_file=health_file,
            metrics=metrics,
        )

        def stop(signum: int, frame: object) -> None:
            logging.getLogger("inv.worker").info(
                "%s: finishing the batch in hand", signal.Signals(signum).name
            )
            runner.stop()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        runner.run()


@command(app)
def migrate(
    ctx: typer.Context,
    to: Annotated[str, typer.Option("--to", help="The backend to move to: postgres or json.")],
    to_database_url: Annotated[
        str | None,
        typer.Option(
            "--to-database-url",
            help="Target database.",
            show_default="INV_DATABASE_URL",
        ),
    ] = None,
    to_file: Annotated[
        str | None,
        typer.Option("--to-file", help="Target JSON file.", show_default="--file"),
    ] = None,
    merge: Annotated[
        bool, typer.Option("--merge", help="Add to a target that already has data.")
    ] = False,
    quiet: Quiet = False,
) -> None:
    """Copy stores, catalog, stock, history, users and API tokens to another backend,
    and verify them."""
    from backends import get_backend_class
    from backends.migrate import migrate as run_migration

    from .formats import progress
    from .settings import load_settings, with_changes

    options = _options(ctx)
    settings = load_settings(options.config, backend=options.backend, file=options.file)
    if to == settings.backend:
        raise typer.BadParameter(f"the inventory is already on {to}", param_hint="--to")
    from pydantic import SecretStr

    changes: dict[str, Any] = {"backend": to}
    if to_database_url is not None:
        changes["database_url"] = SecretStr(to_database_url)
    if to_file is not None:
        changes["file"] = Path(to_file).expanduser()
    # Validated like any settings: a bad --to-file or --to-database-url is refused here.
    target_settings = with_changes(settings, changes, what="bad target: ")
    source_cls = get_backend_class(settings.backend)
    target_cls = get_backend_class(to)
    with (
        source_cls.from_settings(settings, actor=settings.who(), source="migrate") as source,
        target_cls.from_settings(target_settings, actor=settings.who(), source="migrate") as target,
        progress("Copying history", None) as advance,
    ):
        report = run_migration(source, target, merge=merge, progress=advance)
        where = target.describe()
    if quiet or options.quiet:
        return
    if report.nothing_to_do:
        print(f"{where} already has everything; nothing changed")
    else:
        print(
            f"Copied {report.copied_stores} new stores, {report.copied_products} products, "
            f"{report.copied_history} history entries, {report.copied_keys} idempotency "
            f"keys, {report.copied_users} users and {report.copied_tokens} API tokens "
            f"to {where}"
        )
    rows = [(key, report.source[key], report.target[key]) for key in report.source]
    rows += [(f"units at {code}", a, b) for code, (a, b) in sorted(report.totals.items())]
    width = max(len(name) for name, _, _ in rows)
    print(f"{'checked':<{width}}  {'source':>9}  {'target':>9}")
    for name, mine, theirs in rows:
        print(f"{name:<{width}}  {mine:>9}  {theirs:>9}")


@command(app)
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", help="Port to listen on.")] = 8000,
    workers: Annotated[
        int, typer.Option("--workers", "-w", help="Server processes (each its own pool).")
    ] = 1,
    forwarded_allow_ips: Annotated[
        str | None,
        typer.Option(
            "--forwarded-allow-ips",
            help="Proxies whose X-Forwarded-For is trusted (the load balancer ending TLS).",
            show_default="127.0.0.1",
        ),
    ] = None,
) -> None:
    """Serve the HTTP API (FastAPI on Uvicorn) over the configured backend."""
    from backends import ConfigurationError

    if not 0 <= port <= 65535:
        raise typer.BadParameter(f"{port} is not a port (0-65535)", param_hint="--port")
    if not 1 <= workers <= 64:
        raise typer.BadParameter(f"{workers} is not 1-64", param_hint="--workers")
    options = _options(ctx)
    settings = options.settings()
    try:
        from .api.server import serve as run
    except ImportError as exc:
        raise ConfigurationError(
            f"inv serve needs the api extra ({exc.name or exc} is missing); "
            "install it with: pip install 'inv[api]'"
        ) from None
    if options.config is not None:
        import os

        os.environ.setdefault("INV_CONFIG", str(options.config))
    run(
        settings,
        host=host,
        port=port,
        workers=workers,
        forwarded_allow_ips=forwarded_allow_ips,
    )


def main() -> None:
    """The console script: run the app; a closed pipe (`inv list | head`) is not an error.

    Once the command is done and its output flushed, the process ends at once
    (`os._exit`): tearing the interpreter down, module by module and object by object,
    took 50 ms of a 260 ms `inv list` and 200 ms after a 100,000-row import, and does
    nothing a finished command needs (files and connections are closed by then)."""
    try:
        app()
    except SystemExit as done:
        _end(done.code)
    except BrokenPipeError:
        _end(0, closed=True)
    _end(0)


def _end(code: object, *, closed: bool = False) -> NoReturn:
    import logging
    import os

    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # `sys.exit("message")`, as Python would
        print(code, file=sys.stderr)
        status = 1
    try:
        if not closed:
            sys.stdout.flush()
    except BrokenPipeError:
        closed = True
    if closed:  # a reader that stopped early: nothing more goes to it
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    sys.stderr.flush()
    logging.shutdown()
    os._exit(status)
