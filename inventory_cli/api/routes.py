"""The resources under `/api/v1`: one per contract method, the CLI's field names.

Each handler: check the caller's right (`backends.auth.authorize`) at the store it
touches, call one `Backend` method on a view acting as the caller (`acting_as`: the
audit entry names the user, source `api`), and answer the `backends.wire` JSON of the
result.  Errors are raised as the backend's types and become problems in one place
(`problems.error_response`).  A store-limited user sees only its stores' rows.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, cast

from fastapi import APIRouter, Depends, Header, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr
from starlette.convertors import Convertor, register_url_convertor
from starlette.responses import Response, StreamingResponse

from backends import (
    Backend,
    BatchRejected,
    Item,
    NotFound,
    Product,
    Unauthenticated,
    ValidationError,
    values,
    wire,
)
from backends.auth import Permission, User, authorize, can, expiry, unrestricted, visible

from ..files import export_records, read_rows, write_rows
from ..formats import FileFormat
from .schemas import (
    Audit,
    BatchOut,
    Created,
    Dropped,
    EditedOut,
    IssuedTokenOut,
    ItemOut,
    LoginOut,
    MovementOut,
    MovementsOut,
    ProductOut,
    SnapshotLoaded,
    SnapshotOut,
    StockLevel,
    StoreOut,
    SummaryOut,
    TokenOut,
    TransferOut,
    Upgraded,
    UserOut,
    ValueOut,
)

__all__ = ["router"]


class _Text(Convertor[str]):
    """A path parameter that is any text, `/` and line breaks included (a SKU may hold
    them; clients escape them, the server sees them decoded)."""

    regex = r"[\s\S]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("text", _Text())

router = APIRouter(prefix="/api/v1")

Number = StrictInt | StrictStr
Key = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Makes a retry safe: the same key and request again returns the first "
        "response; the same key for another request is 409.",
    ),
]
#: How long a token from `auth/login` lasts.
LOGIN_TOKEN_HOURS = 12


# -- the caller -----------------------------------------------------------------------


@dataclass(slots=True)
class Caller:
    user: User
    backend: Backend

    def may(self, permission: Permission, store: str | None = None) -> None:
        authorize(self.user, permission, store)

    def sees(self, store: str | None) -> bool:
        return visible(self.user, store)

    def everywhere(self, permission: Permission) -> None:
        """`permission` with no store limit: for what reaches every store or every user
        (a user limited to stores could otherwise read or change the others' rows, or make
        itself a user who is not limited)."""
        unrestricted(self.user, permission)

    @property
    def manages_users(self) -> bool:
        return self.user.stores is None and can(self.user, Permission.USERS)


async def caller(request: Request) -> Caller:
    """The authenticated user (the perimeter found it) and a backend acting as them."""
    identity = request.scope.get("inv.identity")
    if identity is None or identity.user is None:
        if identity is not None and identity.error is not None:
            raise identity.error
        raise Unauthenticated("no credentials: send Authorization: Bearer <token>", presented=False)
    server = request.app.state.server
    return Caller(identity.user, server.backend.acting_as(identity.user.username, "api"))


Call = Annotated[Caller, Depends(caller)]


def ok(
    data: Any, status: int = 200, *, replayed: bool = False, etag: str | None = None
) -> Response:
    headers = {}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    if etag is not None:
        headers["ETag"] = etag
    return Response(
        json.dumps(data, ensure_ascii=False),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def code(store: str, field: str = "store") -> str:
    return values.store_code(store, field=field)


def code_or_none(store: str | None) -> str | None:
    """A store a request names, checked; None when it names none (every store)."""
    return None if store is None else code(store)


def etag(quantity: int) -> str:
    """A stock level's ETag: its representation is its quantity, so equal quantities
    are the same representation (a strong validator in RFC 9110's sense)."""
    return f'"q{quantity}"'


def expected(if_match: str | None) -> int | None:
    """The quantity an `If-Match` header expects; None for none or `*`."""
    if if_match is None or if_match.strip() == "*":
        return None
    tag = if_match.split(",")[0].strip()
    if tag.startswith('"q') and tag.endswith('"') and tag[2:-1].isdigit() and len(tag) < 16:
        return int(tag[2:-1])
    raise ValidationError(
        f'If-Match: {if_match[:40]!r} is not an ETag of a stock level ("q12")', field="If-Match"
    )


# -- bodies ---------------------------------------------------------------------------


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Login(Body):
    username: StrictStr
    password: StrictStr


class NewProduct(Body):
    name: StrictStr
    price: StrictStr | StrictInt
    sku: StrictStr | None = None
    store: StrictStr = "main"
    quantity: Number = 0
    unit: StrictStr = "each"
    category: StrictStr | None = None
    reorder_level: Number = 0


class ProductChange(Body):
    name: StrictStr | None = None
    price: StrictStr | StrictInt | None = None
    unit: StrictStr | None = None
    category: StrictStr | None = None
    reorder_level: Number | None = None


class NewStore(Body):
    code: StrictStr
    name: StrictStr | None = None


class StockMovement(Body):
    """Exactly one of `change` (add, negative to take away) and `set` (a count)."""

    change: Number | None = None
    set: Number | None = None
    expect: Number | None = None
    reason: StrictStr | None = None


class Transfer(Body):
    """`from` and `to` on the wire (Python keeps `from` for itself)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    sku: StrictStr
    from_store: StrictStr = Field(alias="from")
    to_store: StrictStr = Field(alias="to")
    quantity: Number
    reason: StrictStr | None = None


class Batch(Body):
    rows: list[dict[str, Any]]
    on_error: Literal["reject-all", "skip-rows"] = "reject-all"
    dry_run: StrictBool = False
    default_store: StrictStr = "main"


class NewUser(Body):
    username: StrictStr
    password: StrictStr
    role: StrictStr
    stores: list[StrictStr] | None = None


class UserChange(Body):
    password: StrictStr | None = None
    role: StrictStr | None = None
    stores: list[StrictStr] | None = None
    disabled: StrictBool | None = None


class NewToken(Body):
    """`expires` an age from now (`90d`, `never`), or `expires_at` a moment."""

    username: StrictStr | None = None
    name: StrictStr | None = None
    expires: StrictStr | None = "90d"
    expires_at: StrictStr | None = None


class Prune(Body):
    older_than: StrictStr


# -- who am I, logging in -------------------------------------------------------------


@router.post(
    "/auth/login",
    tags=["auth"],
    summary="Trade a user name and password for a token",
    response_model=LoginOut,
)
def login(body: Login, request: Request) -> Response:
    backend: Backend = request.app.state.server.backend
    user = backend.login(body.username, body.password)
    now = datetime.now(UTC)
    issued = backend.create_token(
        user.username, name="login", expires_at=now + timedelta(hours=LOGIN_TOKEN_HOURS)
    )
    return ok(
        {
            "token": issued.secret,
            "expires_at": wire.time_json(issued.token.expires_at),
            "user": wire.user_json(user),
        }
    )


@router.get(
    "/auth/me", tags=["auth"], summary="The user the token acts for", response_model=UserOut
)
def me(call: Call) -> Response:
    return ok(wire.user_json(call.user))


# -- catalog --------------------------------------------------------------------------


@router.get(
    "/products",
    tags=["products"],
    summary="The catalog, with stock per store",
    response_model=list[ProductOut],
)
def products(
    call: Call,
    search: str | None = None,
    category: str | None = None,
    limit: str | None = None,
    offset: str = "0",
) -> Response:
    call.may(Permission.READ)
    rows = call.backend.list_items(search=search, category=category)
    grouped: dict[str, dict[str, Any]] = {}
    for item in rows:
        entry = grouped.get(item.sku)
        if entry is None:
            entry = grouped[item.sku] = wire.product_json(_product(item))
        if item.store is not None and call.sees(item.store):
            entry["stock"][item.store] = item.quantity
    found = list(grouped.values())
    start = values.offset(offset)
    end = None if limit is None else start + values.limit(limit)
    return ok(found[start:end])


def _product(item: Item) -> Product:
    return Product(
        item.sku, item.name, item.price, item.unit, item.category, item.reorder_level, {}
    )


@router.post(
    "/products",
    tags=["products"],
    status_code=201,
    summary="Add a product",
    response_model=ProductOut,
)
def add_product(body: NewProduct, call: Call, key: Key = None) -> Response:
    call.may(Permission.CATALOG, code(body.store))
    product = call.backend.add_product(
        body.name,
        str(body.price),
        sku=body.sku,
        store=body.store,
        quantity=cast(int, body.quantity),
        unit=body.unit,
        category=body.category,
        reorder_level=cast(int, body.reorder_level),
        event_id=key,
    )
    return ok(_shown(call, wire.product_json(product)), 201, replayed=product.replayed)


def _shown(call: Caller, product: dict[str, Any]) -> dict[str, Any]:
    product["stock"] = {s: q for s, q in product["stock"].items() if call.sees(s)}
    return product


@router.get(
    "/products/{sku:text}",
    tags=["products"],
    summary="One product and its stock",
    response_model=ProductOut,
)
def get_product(sku: str, call: Call) -> Response:
    call.may(Permission.READ)
    return ok(_shown(call, wire.product_json(call.backend.get(sku))))


@router.patch(
    "/products/{sku:text}",
    tags=["products"],
    summary="Change catalog fields",
    response_model=EditedOut,
)
def edit_product(sku: str, body: ProductChange, call: Call, key: Key = None) -> Response:
    call.may(Permission.CATALOG)
    edited = call.backend.edit_product(
        sku,
        name=body.name,
        price=None if body.price is None else str(body.price),
        unit=body.unit,
        category=body.category,
        reorder_level=cast("int | None", body.reorder_level),
        event_id=key,
    )
    data = wire.edited_json(edited)
    data["product"] = _shown(call, data["product"])
    return ok(data, replayed=edited.replayed)


@router.delete(
    "/products/{sku:text}",
    tags=["products"],
    summary="Remove a product from one store, or from the catalog",
    response_model=MovementsOut,
)
def remove_product(
    sku: str, call: Call, store: str | None = None, force: bool = False, key: Key = None
) -> Response:
    if store is None:
        unrestricted(call.user, Permission.CATALOG)
    else:
        call.may(Permission.CATALOG, code(store))
    entries = call.backend.remove_product(sku, store=store, force=force, event_id=key)
    return _movements(entries)


def _movements(entries: list[Any]) -> Response:
    return ok(
        {"movements": [wire.movement_json(m) for m in entries]},
        replayed=any(m.replayed for m in entries),
    )


# -- stores ---------------------------------------------------------------------------


@router.get(
    "/stores",
    tags=["stores"],
    summary="Every store the caller may see",
    response_model=list[StoreOut],
)
def stores(call: Call) -> Response:
    call.may(Permission.READ)
    return ok([wire.store_json(s) for s in call.backend.stores() if call.sees(s.code)])


@router.post(
    "/stores", tags=["stores"], status_code=201, summary="Add a store", response_model=StoreOut
)
def add_store(body: NewStore, call: Call, key: Key = None) -> Response:
    call.may(Permission.STORES)
    call.may(Permission.STORES, code(body.code, "code"))  # a limited user: its stores only
    store = call.backend.add_store(body.code, body.name, event_id=key)
    return ok(wire.store_json(store), 201, replayed=store.replayed)


@router.delete(
    "/stores/{store}", tags=["stores"], summary="Remove a store", response_model=MovementsOut
)
def remove_store(store: str, call: Call, force: bool = False, key: Key = None) -> Response:
    call.may(Permission.STORES)
    call.may(Permission.STORES, code(store))
    return _movements(call.backend.remove_store(store, force=force, event_id=key))


# -- stock ----------------------------------------------------------------------------


def _items(
    call: Caller,
    *,
    store: str | None,
    low_stock: bool = False,
    search: str | None = None,
    category: str | None = None,
    sort: str = "sku",
    descending: bool = False,
    limit: str | None = None,
    offset: str = "0",
) -> list[Item]:
    """`list_items` as the caller may see it: a limited user's rows at its stores (and
    the catalog rows of products stocked nowhere)."""
    count = None if limit is None else values.limit(limit)
    skip = values.offset(offset)
    call.may(Permission.READ, code_or_none(store))
    if store is not None or call.user.stores is None:
        return call.backend.list_items(
            store=store,
            low_stock=low_stock,
            search=search,
            category=category,
            sort=sort,
            descending=descending,
            limit=count,
            offset=skip,
        )
    rows = call.backend.list_items(
        low_stock=low_stock, search=search, category=category, sort=sort, descending=descending
    )
    seen = [item for item in rows if call.sees(item.store)]
    return seen[skip : None if count is None else skip + count]


ListQuery = dict[str, Any]


def list_query(
    low_stock: bool = False,
    search: str | None = None,
    category: str | None = None,
    sort: str = "sku",
    descending: bool = False,
    limit: str | None = None,
    offset: str = "0",
) -> ListQuery:
    return {
        "low_stock": low_stock,
        "search": search,
        "category": category,
        "sort": sort,
        "descending": descending,
        "limit": limit,
        "offset": offset,
    }


Filters = Annotated[ListQuery, Depends(list_query)]


@router.get(
    "/inventory",
    tags=["stock"],
    summary="Stock rows at every store (inv list)",
    response_model=list[ItemOut],
)
def inventory(call: Call, filters: Filters, store: str | None = None) -> Response:
    return ok([wire.item_json(i) for i in _items(call, store=store, **filters)])


@router.get(
    "/stores/{store}/inventory",
    tags=["stock"],
    summary="One store's stock",
    response_model=list[ItemOut],
)
def store_inventory(store: str, call: Call, filters: Filters) -> Response:
    return ok([wire.item_json(i) for i in _items(call, store=store, **filters)])


@router.get(
    "/stores/{store}/inventory/{sku:text}",
    tags=["stock"],
    summary="One stock level, with its ETag",
    response_model=StockLevel,
)
def stock_level(store: str, sku: str, call: Call) -> Response:
    call.may(Permission.READ, code(store))
    quantity = call.backend.quantity(store, sku)
    body = {"store": code(store), "sku": values.sku(sku, existing=True), "quantity": quantity}
    return ok(body, etag=etag(quantity))


@router.post(
    "/stores/{store}/inventory/{sku:text}/movements",
    tags=["stock"],
    status_code=201,
    summary="Change or count the stock (If-Match: compare-and-set)",
    response_model=MovementOut,
)
def move_stock(
    store: str,
    sku: str,
    body: StockMovement,
    call: Call,
    key: Key = None,
    if_match: Annotated[str | None, Header(alias="If-Match")] = None,
) -> Response:
    call.may(Permission.MOVE, code(store))
    if (body.change is None) == (body.set is None):
        raise ValidationError("give one of change or set", field="change")
    expect = body.expect if body.expect is not None else expected(if_match)
    if body.change is not None:
        entry = call.backend.adjust(
            store,
            sku,
            cast(int, body.change),
            body.reason,
            expect=cast("int | None", expect),
            event_id=key,
        )
    else:
        entry = call.backend.set_quantity(
            store,
            sku,
            cast(int, body.set),
            body.reason,
            expect=cast("int | None", expect),
            event_id=key,
        )
    tag = etag(entry.quantity_after) if entry.quantity_after is not None else None
    return ok(wire.movement_json(entry), 201, replayed=entry.replayed, etag=tag)


@router.post(
    "/transfers",
    tags=["stock"],
    status_code=201,
    summary="Move stock between stores",
    response_model=TransferOut,
)
def transfer(body: Transfer, call: Call, key: Key = None) -> Response:
    call.may(Permission.TRANSFER, code(body.from_store, "from"))
    out, into = call.backend.transfer(
        body.sku,
        body.from_store,
        body.to_store,
        cast(int, body.quantity),
        body.reason,
        event_id=key,
    )
    return ok(
        {"out": wire.movement_json(out), "in": wire.movement_json(into)},
        201,
        replayed=out.replayed,
    )


# -- batches, imports, export ---------------------------------------------------------


def _check_rows_stores(call: Caller, stores: set[str]) -> None:
    call.may(Permission.CATALOG)
    for store in sorted(stores):
        call.may(Permission.CATALOG, store)


@router.post(
    "/batches", tags=["imports"], summary="Apply parsed rows as one unit", response_model=BatchOut
)
def batch(body: Batch, call: Call, key: Key = None) -> Response:
    rows = []
    for data in body.rows:
        try:
            rows.append(wire.batch_row_from_json(data))
        except TypeError as exc:
            raise ValidationError(f"rows: {exc}", field="rows") from None
    if call.user.stores is not None:
        default = code(body.default_store, "default_store")
        _check_rows_stores(call, {_row_store(r.store, default) for r in rows})
    else:
        call.may(Permission.CATALOG)
    result = call.backend.apply(
        rows,
        on_error=body.on_error,
        dry_run=body.dry_run,
        default_store=body.default_store,
        event_id=key,
    )
    return ok(wire.batch_result_json(result), replayed=result.replayed)


def _row_store(store: Any, default: str) -> str:
    try:
        return code(store) if store is not None else default
    except ValidationError:
        return default  # the backend reports the bad value as the row's problem


@router.post(
    "/imports",
    tags=["imports"],
    summary="Import a CSV or JSON Lines file (the body), as `inv import`",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/x-ndjson": {"schema": {"type": "string"}},
            },
        }
    },
    response_model=BatchOut,
)
async def import_file(
    request: Request,
    call: Call,
    format: FileFormat | None = None,
    dry_run: bool = False,
    on_error: Literal["reject-all", "skip-rows"] = "reject-all",
    store: str = "main",
    key: Key = None,
) -> Response:
    from starlette.concurrency import run_in_threadpool

    data = await request.body()
    if not data:
        raise ValidationError(
            "body: empty; send the file (CSV with a header row, or JSON Lines)", field="body"
        )
    given = format or (
        FileFormat.jsonl
        if "ndjson" in request.headers.get("content-type", "")
        or "jsonl" in request.headers.get("content-type", "")
        else FileFormat.csv
    )
    return await run_in_threadpool(_import, call, data, given, dry_run, on_error, store, key)


def _import(
    call: Caller,
    data: bytes,
    fmt: FileFormat,
    dry_run: bool,
    on_error: Literal["reject-all", "skip-rows"],
    store: str,
    key: str | None,
) -> Response:
    default = code(store)
    if call.user.stores is None:
        # A user of every store may have the backend apply a clean file itself; one
        # limited to some stores has the file parsed, to check each row's store.
        call.may(Permission.CATALOG)
        taken = call.backend.import_file(
            data, fmt.value, on_error=on_error, dry_run=dry_run, default_store=store, event_id=key
        )
        if taken is not None:
            return ok(wire.batch_result_json(taken), replayed=taken.replayed)
    rows, problems = read_rows(io.BytesIO(data), fmt)
    if call.user.stores is not None:
        _check_rows_stores(call, {_row_store(r.store, default) for r in rows})
    if dry_run or (problems and on_error == "reject-all"):
        result = call.backend.apply(rows, on_error="skip-rows", dry_run=True, default_store=store)
    else:
        result = call.backend.apply(rows, on_error=on_error, default_store=store, event_id=key)
    problems = sorted([*problems, *result.problems], key=lambda p: p.row)
    if problems and on_error == "reject-all" and not dry_run:
        raise BatchRejected(problems)
    data_out = wire.batch_result_json(result)
    data_out["problems"] = [wire.problem_json(p) for p in problems]
    return ok(data_out, replayed=result.replayed)


@router.get(
    "/export",
    tags=["imports"],
    summary="The catalog and stock, as `inv export`",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The file, streamed",
            "content": {
                "text/csv": {"schema": {"type": "string"}},
                "application/x-ndjson": {"schema": {"type": "string"}},
            },
        }
    },
)
def export(
    call: Call, format: FileFormat = FileFormat.csv, store: str | None = None
) -> StreamingResponse:
    items = _items(call, store=store)
    names = {s.code: s.name for s in call.backend.stores() if call.sees(s.code)}
    if store is not None:
        names = {c: n for c, n in names.items() if c == code(store)}

    def lines() -> Iterator[str]:
        buffer = io.StringIO()
        records = list(export_records(items, names))
        for start in range(0, max(1, len(records)), 1000):
            chunk = records[start : start + 1000]
            if start == 0:
                write_rows(chunk, buffer, format)
            else:
                _write_more(chunk, buffer, format)
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()

    media = "text/csv; charset=utf-8" if format == FileFormat.csv else "application/x-ndjson"
    return StreamingResponse(lines(), media_type=media)


def _write_more(records: list[dict[str, Any]], out: io.StringIO, fmt: FileFormat) -> None:
    """Rows after the first chunk: CSV without its header again."""
    if fmt == FileFormat.csv:
        scratch = io.StringIO()
        write_rows(records, scratch, fmt)
        out.write(scratch.getvalue().split("\n", 1)[1])
    else:
        write_rows(records, out, fmt)


# -- history and reports --------------------------------------------------------------


@router.get(
    "/history",
    tags=["reports"],
    summary="Audit entries, newest first",
    response_model=list[MovementOut],
)
def history(
    call: Call,
    sku: str | None = None,
    store: str | None = None,
    since: str | None = None,
    limit: str | None = None,
) -> Response:
    call.may(Permission.READ, code_or_none(store))
    when = values.moment(since) if since is not None else None
    count = values.limit(limit) if limit is not None else None
    limited = store is None and call.user.stores is not None
    entries = call.backend.history(sku, store=store, since=when, limit=None if limited else count)
    if limited:
        entries = [m for m in entries if call.sees(m.store)][:count]
    return ok([wire.movement_json(m) for m in entries])


def _report_store(call: Caller, store: str | None) -> str | None:
    call.may(Permission.REPORT, code_or_none(store))
    return store


@router.get(
    "/reports/value",
    tags=["reports"],
    summary="Stock value per store",
    response_model=list[ValueOut],
)
def report_value(call: Call, store: str | None = None) -> Response:
    rows = call.backend.report_value(store=_report_store(call, store))
    return ok([wire.value_json(r) for r in rows if call.sees(r.store)])


@router.get(
    "/reports/low-stock",
    tags=["reports"],
    summary="Rows at or below their level",
    response_model=list[ItemOut],
)
def report_low_stock(call: Call, store: str | None = None) -> Response:
    rows = call.backend.report_low_stock(store=_report_store(call, store))
    return ok([wire.item_json(r) for r in rows if call.sees(r.store)])


@router.get(
    "/reports/movements",
    tags=["reports"],
    summary="Movements per store and SKU",
    response_model=list[SummaryOut],
)
def report_movements(
    call: Call, store: str | None = None, since: str | None = None, until: str | None = None
) -> Response:
    rows = call.backend.report_movements(
        store=_report_store(call, store),
        since=values.moment(since) if since is not None else None,
        until=values.moment(until, field="until") if until is not None else None,
    )
    return ok([wire.summary_json(r) for r in rows if call.sees(r.store)])


@router.get(
    "/status",
    tags=["operations"],
    summary="Health of every service (inv status)",
    response_model=dict[str, Any],
)
def status(call: Call) -> Response:
    call.may(Permission.REPORT)
    return ok(call.backend.status())


# -- users and tokens -----------------------------------------------------------------


@router.get("/users", tags=["users"], summary="Every user", response_model=list[UserOut])
def users(call: Call) -> Response:
    call.everywhere(Permission.USERS)
    return ok([wire.user_json(u) for u in call.backend.users()])


@router.post(
    "/users", tags=["users"], status_code=201, summary="Add a user", response_model=UserOut
)
def add_user(body: NewUser, call: Call) -> Response:
    call.everywhere(Permission.USERS)
    user = call.backend.add_user(body.username, body.password, body.role, stores=body.stores)
    return ok(wire.user_json(user), 201)


@router.get("/users/{username}", tags=["users"], summary="One user", response_model=UserOut)
def get_user(username: str, call: Call) -> Response:
    if values.username(username) != call.user.username:
        call.everywhere(Permission.USERS)
    return ok(wire.user_json(call.backend.get_user(username)))


@router.patch("/users/{username}", tags=["users"], summary="Change a user", response_model=UserOut)
def update_user(username: str, body: UserChange, call: Call) -> Response:
    own = values.username(username) == call.user.username
    if not (own and body.role is None and body.stores is None and body.disabled is None):
        call.everywhere(Permission.USERS)  # anyone may change their own password, no more
    user = call.backend.update_user(
        username,
        password=body.password,
        role=body.role,
        stores=body.stores,
        disabled=body.disabled,
    )
    return ok(wire.user_json(user))


@router.delete(
    "/users/{username}",
    tags=["users"],
    status_code=204,
    summary="Remove a user and its tokens",
    response_class=Response,
)
def remove_user(username: str, call: Call) -> Response:
    call.everywhere(Permission.USERS)
    call.backend.remove_user(username)
    return Response(status_code=204)


@router.get(
    "/tokens", tags=["users"], summary="Tokens (never their secrets)", response_model=list[TokenOut]
)
def tokens(call: Call, username: str | None = None) -> Response:
    if username is not None and values.username(username) != call.user.username:
        call.everywhere(Permission.USERS)
    if username is None and not call.manages_users:
        username = call.user.username
    return ok([wire.token_json(t) for t in call.backend.tokens(username)])


@router.post(
    "/tokens",
    tags=["users"],
    status_code=201,
    summary="Make a token (shown once)",
    response_model=IssuedTokenOut,
)
def create_token(body: NewToken, call: Call) -> Response:
    owner = values.username(body.username) if body.username else call.user.username
    if owner != call.user.username:
        call.everywhere(Permission.USERS)
    if body.expires_at is not None:
        until: datetime | None = values.moment(body.expires_at, field="expires_at")
    else:
        until = expiry(body.expires, datetime.now(UTC))
    issued = call.backend.create_token(owner, name=body.name, expires_at=until)
    return ok({"token": issued.secret, **wire.token_json(issued.token)}, 201)


@router.delete(
    "/tokens/{token_id}", tags=["users"], summary="Revoke a token", response_model=TokenOut
)
def revoke_token(token_id: str, call: Call) -> Response:
    number = values.integer(token_id, field="token_id", minimum=1, maximum=2**63 - 1)
    if not call.manages_users:
        own = {t.id for t in call.backend.tokens(call.user.username)}
        if number not in own:
            raise NotFound(f"no token {number} of user {call.user.username!r}")
    return ok(wire.token_json(call.backend.revoke_token(number)))


# -- operations (admin) ---------------------------------------------------------------


@router.post(
    "/init", tags=["operations"], summary="Create the storage (inv init)", response_model=Created
)
def init(call: Call, record: bool = True) -> Response:
    call.everywhere(Permission.OPERATE)
    return ok({"created": call.backend.init(record=record)})


@router.post(
    "/db/upgrade",
    tags=["operations"],
    summary="Migrate the schema (inv db upgrade)",
    response_model=Upgraded,
)
def upgrade(call: Call) -> Response:
    call.everywhere(Permission.OPERATE)
    before, after = call.backend.upgrade()
    return ok({"before": before, "after": after})


@router.post(
    "/audit/verify",
    tags=["operations"],
    summary="Check stock against history",
    response_model=Audit,
)
def audit_verify(call: Call) -> Response:
    call.may(Permission.REPORT)
    unrestricted(call.user, Permission.REPORT)
    checked, problems = call.backend.verify_audit()
    return ok({"checked": checked, "problems": problems})


@router.post(
    "/audit/prune",
    tags=["operations"],
    summary="Drop months of old history",
    response_model=Dropped,
)
def audit_prune(body: Prune, call: Call) -> Response:
    call.everywhere(Permission.OPERATE)
    when = values.moment(body.older_than, field="older_than")
    return ok({"dropped": call.backend.prune_audit(when)})


@router.get(
    "/snapshot",
    tags=["operations"],
    summary="Everything, for inv migrate",
    response_model=SnapshotOut,
)
def snapshot(call: Call) -> Response:
    # Admin-only (OPERATE): it carries password hashes and token digests, for inv migrate.
    call.everywhere(Permission.OPERATE)
    return ok(wire.snapshot_json(call.backend.export_state()))


@router.post(
    "/snapshot",
    tags=["operations"],
    summary="Add a snapshot (inv migrate)",
    response_model=SnapshotLoaded,
)
def load_snapshot(body: dict[str, Any], call: Call) -> Response:
    call.everywhere(Permission.OPERATE)
    try:
        state = wire.snapshot_from_json(body)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValidationError(f"snapshot: malformed ({exc!r})", field="snapshot") from None
    call.backend.import_state(state)
    return ok({"stores": len(state.stores), "products": len(state.products)})


#: The busiest resources (a till's sales and look-ups), matched first: a request is
#: tried against the routes in order, and each try costs.  The movements route comes
#: before the stock level's, whose SKU pattern would also take `.../movements`.
HOT_PATHS = (
    "/api/v1/stores/{store}/inventory/{sku:text}/movements",
    "/api/v1/stores/{store}/inventory/{sku:text}",
)


def _order(route: Any) -> int:
    path = getattr(route, "path", "")
    return HOT_PATHS.index(path) if path in HOT_PATHS else len(HOT_PATHS)


router.routes.sort(key=_order)
