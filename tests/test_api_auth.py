"""Who may call `inv serve`, and the perimeter around it, over real processes.

Every test talks to real `inv serve` processes over real PostgreSQL (and Redis for the
shared budget).  The authorization matrix is generated: every endpoint x every role
(admin, manager and clerk limited to store `north`, and admin, manager and clerk of every
store) x the caller's own store / another one, the expected status computed by
`expected()` from DESIGN.md's roles, written here apart from `backends/auth.py` so that
the test can disagree with the code.  One server (module fixture, one per xdist process)
serves the whole matrix: each case makes the data it acts on (fresh SKUs, stores, users,
tokens), so no case depends on another.  The other servers are started by the one test
that needs them, which stops them before reading their log.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import random
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
import psycopg
import pytest
from apiserver import ApiServer
from broker import free_port
from inprocess import run_cli
from pg import fresh_database
from prometheus_client.parser import text_string_to_metric_families
from services import redis_or_skip

from backends.auth import token_digest
from backends.postgres import PostgresBackend

PROBLEM = "application/problem+json"
OWN, OTHER = "north", "south"

#: username -> (role, stores it is limited to; None: every store)
ROLES: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "admin-all": ("admin", None),
    "admin-north": ("admin", (OWN,)),
    "manager-north": ("manager", (OWN,)),
    "clerk-north": ("clerk", (OWN,)),
    "manager-all": ("manager", None),
    "clerk-all": ("clerk", None),
}

#: DESIGN.md, "HTTP API": admin everything; manager the catalog, stock and reports at its
#: stores; clerk stock movements, transfers out of and reads at its stores.
GRANTS: dict[str, frozenset[str]] = {
    "admin": frozenset(
        {"read", "move", "transfer", "catalog", "report", "stores", "users", "operate"}
    ),
    "manager": frozenset({"read", "move", "transfer", "catalog", "report"}),
    "clerk": frozenset({"read", "move", "transfer"}),
}


@dataclass(frozen=True)
class Need:
    """What an endpoint asks of the caller.

    `right`: the role's right it needs (None: any authenticated user).  `scope`:
    ``store`` at the store the request names (a limited user: only its own);
    ``any`` no store (a limited user is served its stores' rows only);
    ``every`` touches every store or every user (a limited user is refused);
    ``self`` the caller's own user or token is free, another's needs `right` and no
    store limit.
    """

    right: str | None
    scope: str
    ok: int = 200
    refused: int = 403


def expected(need: Need, username: str, target: str) -> int:
    role, stores = ROLES[username]
    limited = stores is not None
    if need.scope == "self" and target == "own":
        return need.ok
    if need.right is not None and need.right not in GRANTS[role]:
        return need.refused
    if need.scope == "store" and limited and target != "own":
        return need.refused
    if need.scope in ("every", "self") and limited:
        return need.refused
    return need.ok


def started(*servers: tuple[dict[str, str], dict[str, Any]]) -> list[ApiServer]:
    """`ApiServer(env, **options)` for each, started side by side."""
    with ThreadPoolExecutor(len(servers)) as pool:
        starting = [pool.submit(ApiServer, env, **options) for env, options in servers]
        return [future.result() for future in starting]


# -- the world the matrix runs in -----------------------------------------------------


@dataclass
class World:
    server: ApiServer
    database_url: str
    setup: PostgresBackend
    tokens: dict[str, str]
    passwords: dict[str, str]
    client: httpx.Client
    names: Iterator[int] = field(default_factory=itertools.count)

    @property
    def url(self) -> str:
        return self.server.url

    def fresh(self, prefix: str) -> str:
        return f"{prefix}{next(self.names)}"

    def call(self, username: str | None, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", None) or {})
        if username is not None:
            headers["Authorization"] = f"Bearer {self.tokens[username]}"
        return self.client.request(method, path, headers=headers, **kwargs)

    def stocked(self, store: str, quantity: int = 10) -> str:
        sku = self.fresh("T")
        self.setup.add_product("thing", "1.50", sku=sku, store=store, quantity=quantity)
        return sku


PASSWORD = "pw-{name}-e7c1f0a9"


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    database = fresh_database()
    env = {
        "INV_BACKEND": "postgres",
        "INV_DATABASE_URL": database,
        "INV_ALLOWED_NETWORKS": "127.0.0.0/8",
    }
    with ThreadPoolExecutor(1) as pool:
        starting = pool.submit(ApiServer, env)  # while the users' hashes are made
        setup, tokens, passwords = _populate(database)
        server = starting.result()
    client = httpx.Client(base_url=server.url, timeout=30)
    try:
        yield World(server, database, setup, tokens, passwords, client)
    finally:
        client.close()
        server.stop()
        setup.close()


def _populate(database: str) -> tuple[PostgresBackend, dict[str, str], dict[str, str]]:
    setup = PostgresBackend(database, actor="setup")
    setup.add_store(OWN, "North")
    setup.add_store(OTHER, "South")
    passwords = {name: PASSWORD.format(name=name) for name in [*ROLES, "bystander"]}
    tokens = {}
    for name, (role, stores) in ROLES.items():
        setup.add_user(name, passwords[name], role, stores=stores)
        tokens[name] = setup.create_token(name, name="matrix").secret
    setup.add_user("bystander", passwords["bystander"], "clerk", stores=[OTHER])
    setup.create_token("bystander", name="theirs")
    # What the filtered reads are checked against: rows at both stores, some low.
    setup.add_product("seed north", "2.00", sku="SEED-N", store=OWN, quantity=5, reorder_level=9)
    setup.add_product("seed south", "3.00", sku="SEED-S", store=OTHER, quantity=5, reorder_level=9)
    setup.add_product("seed both", "4.00", sku="SEED-B", store=OWN, quantity=5)
    setup.adjust(OTHER, "SEED-B", 5, "restock")
    setup.adjust(OTHER, "SEED-S", -1, "sale")
    setup.adjust(OWN, "SEED-N", -1, "sale")
    return setup, tokens, passwords


# -- the endpoints --------------------------------------------------------------------


@dataclass
class Prepared:
    path: str
    params: dict[str, Any] | None = None
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] | None = None
    cleanup: Callable[[], None] | None = None


Prepare = Callable[[World, str, str], Prepared]
Check = Callable[[World, str, httpx.Response], None]


@dataclass(frozen=True)
class Endpoint:
    method: str
    template: str
    need: Need
    prepare: Prepare
    check: Check | None = None
    targets: tuple[str, ...] = ()

    def cases(self) -> tuple[str, ...]:
        if self.targets:
            return self.targets
        return ("own", "other") if self.need.scope in ("store", "self") else ("-",)


def store_of(target: str) -> str:
    return OWN if target == "own" else OTHER


def visible(username: str, store: str | None) -> bool:
    """Whether `username` is shown rows at `store` (None: catalog rows, shown to all)."""
    stores = ROLES[username][1]
    return store is None or stores is None or store in stores


def check_seen(username: str, seen: set[str | None]) -> None:
    """The stores of the rows of a read of every store, as `username` should see them."""
    assert {s for s in seen if not visible(username, s)} == set(), (username, seen)
    assert OWN in seen
    if ROLES[username][1] is None:
        assert OTHER in seen


def check_rows(key: str = "store") -> Check:
    """A read of every store: the caller sees its stores' rows and only those."""

    def check(world: World, username: str, response: httpx.Response) -> None:
        check_seen(username, {row[key] for row in response.json()})

    return check


def check_at(world: World, username: str, response: httpx.Response) -> None:
    """A read of one store (`?store=`, or `/stores/{store}/...`): that store's rows only."""
    url = response.request.url
    store = url.params.get("store") or url.path.split("/")[4]
    assert {row["store"] for row in response.json()} == {store}


def check_csv_rows(world: World, username: str, response: httpx.Response) -> None:
    rows = list(csv.DictReader(io.StringIO(response.text)))
    seen = {row["store"] or None for row in rows}
    wanted = response.request.url.params.get("store")
    if wanted:
        assert seen == {wanted}
        return
    check_seen(username, seen)


def check_stock_shown(world: World, username: str, response: httpx.Response) -> None:
    body = response.json()
    products = body if isinstance(body, list) else [body]
    both = next(p for p in products if p["sku"] == "SEED-B")
    shown = {OWN: 5, OTHER: 5}
    assert both["stock"] == {s: q for s, q in shown.items() if visible(username, s)}
    for product in products:
        assert all(visible(username, s) for s in product["stock"]), product


def check_stores(world: World, username: str, response: httpx.Response) -> None:
    codes = {s["code"] for s in response.json()}
    if ROLES[username][1] is None:
        assert {OWN, OTHER, "main"} <= codes
    else:
        assert codes == {OWN}


def check_movement(world: World, username: str, response: httpx.Response) -> None:
    entry = response.json()
    assert (entry["actor"], entry["source"], entry["quantity_after"]) == (username, "api", 9)


def check_transfer(world: World, username: str, response: httpx.Response) -> None:
    body = response.json()
    assert body["out"]["actor"] == body["in"]["actor"] == username
    assert (body["out"]["quantity_after"], body["in"]["quantity_after"]) == (8, 2)


def check_me(world: World, username: str, response: httpx.Response) -> None:
    assert response.json()["username"] == username


def check_own_tokens(world: World, username: str, response: httpx.Response) -> None:
    owners = {t["username"] for t in response.json()}
    if username == "admin-all":
        assert {username, "bystander"} <= owners
    else:
        assert owners == {username}


def check_stock_level(world: World, username: str, response: httpx.Response) -> None:
    assert response.json()["quantity"] == 5
    assert response.headers["ETag"] == '"q5"'


def seed(path: str, **params: Any) -> Prepare:
    """A request on the seeded rows, at the target's store when the path names one."""

    def prepare(world: World, username: str, target: str) -> Prepared:
        store = store_of(target)
        given = {k: (store if v is STORE else v) for k, v in params.items()}
        return Prepared(path.format(store=store), params=given or None)

    return prepare


STORE = object()  # a parameter that is the target's store


def new_product(world: World, username: str, target: str) -> Prepared:
    body = {"name": "new", "price": "1.00", "sku": world.fresh("P"), "store": store_of(target)}
    return Prepared("/api/v1/products", json={**body, "quantity": 3})


def edit_product(world: World, username: str, target: str) -> Prepared:
    return Prepared(f"/api/v1/products/{world.stocked(OTHER)}", json={"price": "2.25"})


def remove_from_store(world: World, username: str, target: str) -> Prepared:
    store = store_of(target)
    return Prepared(f"/api/v1/products/{world.stocked(store, 0)}", params={"store": store})


def remove_from_catalog(world: World, username: str, target: str) -> Prepared:
    return Prepared(f"/api/v1/products/{world.stocked(OWN, 0)}")


def new_store(world: World, username: str, target: str) -> Prepared:
    return Prepared("/api/v1/stores", json={"code": world.fresh("new-"), "name": "New"})


def remove_store(world: World, username: str, target: str) -> Prepared:
    """A fresh store; `own`: the (limited) caller is limited to it as well."""
    code = world.fresh("gone-")
    world.setup.add_store(code)
    stores = ROLES[username][1]
    if target == "own" and stores is not None:
        world.setup.update_user(username, stores=[*stores, code])

        def restore() -> None:
            world.setup.update_user(username, stores=list(stores))

        return Prepared(f"/api/v1/stores/{code}", cleanup=restore)
    return Prepared(f"/api/v1/stores/{code}")


def move(world: World, username: str, target: str) -> Prepared:
    store = store_of(target)
    path = f"/api/v1/stores/{store}/inventory/{world.stocked(store)}/movements"
    return Prepared(path, json={"change": -1, "reason": "sale"})


def transfer(world: World, username: str, target: str) -> Prepared:
    source = store_of(target)
    sink = OTHER if source == OWN else OWN
    body = {"sku": world.stocked(source), "from": source, "to": sink, "quantity": 2}
    return Prepared("/api/v1/transfers", json=body)


def batch(world: World, username: str, target: str) -> Prepared:
    store = store_of(target)
    rows = [{"row": 2, "sku": world.stocked(store), "store": store, "change": 1}]
    return Prepared("/api/v1/batches", json={"rows": rows, "default_store": store})


def import_csv(world: World, username: str, target: str) -> Prepared:
    store = store_of(target)
    text = f"sku,store,change\n{world.stocked(store)},{store},1\n"
    return Prepared(
        "/api/v1/imports",
        params={"store": store},
        content=text.encode(),
        headers={"Content-Type": "text/csv"},
    )


def user_path(suffix: str = "") -> Prepare:
    def prepare(world: World, username: str, target: str) -> Prepared:
        name = username if target == "own" else "bystander"
        return Prepared(f"/api/v1/users/{name}{suffix}")

    return prepare


def new_user(world: World, username: str, target: str) -> Prepared:
    body = {"username": world.fresh("user-"), "password": "long enough", "role": "clerk"}
    return Prepared("/api/v1/users", json=body)


def change_user(world: World, username: str, target: str) -> Prepared:
    if target == "own":  # a new password: the same one, so the matrix keeps logging in
        return Prepared(f"/api/v1/users/{username}", json={"password": world.passwords[username]})
    return Prepared("/api/v1/users/bystander", json={"disabled": False})


def widen_self(world: World, username: str, target: str) -> Prepared:
    """A user's own role and stores, set to its role over every store: no change for
    an admin of every store, a way out of its stores for anyone else."""
    role = ROLES[username][0]
    return Prepared(f"/api/v1/users/{username}", json={"role": role, "stores": None})


def remove_user(world: World, username: str, target: str) -> Prepared:
    if ROLES[username] != ("admin", None):  # refused: no need to make a user (a hash)
        return Prepared("/api/v1/users/bystander")
    name = world.fresh("user-")
    world.setup.add_user(name, "long enough", "clerk")
    return Prepared(f"/api/v1/users/{name}")


def tokens_of(world: World, username: str, target: str) -> Prepared:
    return Prepared(
        "/api/v1/tokens", params={"username": username if target == "own" else "bystander"}
    )


def new_token(world: World, username: str, target: str) -> Prepared:
    if target == "own":
        return Prepared("/api/v1/tokens", json={"name": "till"})
    return Prepared("/api/v1/tokens", json={"name": "till", "username": "bystander"})


def revoke_token(world: World, username: str, target: str) -> Prepared:
    owner = username if target == "own" else "bystander"
    issued = world.setup.create_token(owner, name="to revoke")
    return Prepared(f"/api/v1/tokens/{issued.token.id}")


def snapshot(world: World, username: str, target: str) -> Prepared:
    body = {
        "stores": [{"code": world.fresh("snap-"), "name": "Snap"}],
        "products": [],
        "history": [],
        "events": [],
    }
    return Prepared("/api/v1/snapshot", json=body)


def fixed(path: str, body: Any = None) -> Prepare:
    return lambda world, username, target: Prepared(path, json=body)


INVENTORY = "/api/v1/stores/{store}/inventory"
ENDPOINTS = [
    Endpoint("GET", "/api/v1/auth/me", Need(None, "any"), fixed("/api/v1/auth/me"), check_me),
    # catalog
    Endpoint(
        "GET",
        "/api/v1/products",
        Need("read", "any"),
        seed("/api/v1/products", search="SEED"),
        check_stock_shown,
    ),
    Endpoint("POST", "/api/v1/products", Need("catalog", "store", 201), new_product),
    Endpoint(
        "GET",
        "/api/v1/products/{sku}",
        Need("read", "any"),
        fixed("/api/v1/products/SEED-B"),
        check_stock_shown,
    ),
    Endpoint("PATCH", "/api/v1/products/{sku}", Need("catalog", "any"), edit_product),
    Endpoint("DELETE", "/api/v1/products/{sku}?store", Need("catalog", "store"), remove_from_store),
    Endpoint("DELETE", "/api/v1/products/{sku}", Need("catalog", "every"), remove_from_catalog),
    # stores
    Endpoint("GET", "/api/v1/stores", Need("read", "any"), fixed("/api/v1/stores"), check_stores),
    Endpoint("POST", "/api/v1/stores", Need("stores", "store", 201), new_store, targets=("other",)),
    Endpoint("DELETE", "/api/v1/stores/{code}", Need("stores", "store"), remove_store),
    # stock
    Endpoint(
        "GET",
        "/api/v1/inventory",
        Need("read", "any"),
        seed("/api/v1/inventory", search="SEED"),
        check_rows(),
    ),
    Endpoint("GET", INVENTORY, Need("read", "store"), seed(INVENTORY), check_at),
    Endpoint(
        "GET",
        INVENTORY + "/{sku}",
        Need("read", "store"),
        seed(INVENTORY + "/SEED-B"),
        check_stock_level,
    ),
    Endpoint(
        "POST", INVENTORY + "/{sku}/movements", Need("move", "store", 201), move, check_movement
    ),
    Endpoint("POST", "/api/v1/transfers", Need("transfer", "store", 201), transfer, check_transfer),
    # batches, imports, export
    Endpoint("POST", "/api/v1/batches", Need("catalog", "store"), batch),
    Endpoint("POST", "/api/v1/imports", Need("catalog", "store"), import_csv),
    Endpoint(
        "GET",
        "/api/v1/export?store",
        Need("read", "store"),
        seed("/api/v1/export", store=STORE),
        check_csv_rows,
    ),
    Endpoint("GET", "/api/v1/export", Need("read", "any"), seed("/api/v1/export"), check_csv_rows),
    # history and reports
    Endpoint(
        "GET",
        "/api/v1/history?store",
        Need("read", "store"),
        seed("/api/v1/history", store=STORE),
        check_at,
    ),
    Endpoint(
        "GET",
        "/api/v1/history",
        Need("read", "any"),
        seed("/api/v1/history", limit="100000"),
        check_rows(),
    ),
    *(
        Endpoint(
            "GET",
            f"/api/v1/reports/{report}?store",
            Need("report", "store"),
            seed(f"/api/v1/reports/{report}", store=STORE),
            check_at,
        )
        for report in ("value", "low-stock", "movements")
    ),
    *(
        Endpoint(
            "GET",
            f"/api/v1/reports/{report}",
            Need("report", "any"),
            seed(f"/api/v1/reports/{report}"),
            check_rows(),
        )
        for report in ("value", "low-stock", "movements")
    ),
    Endpoint("GET", "/api/v1/status", Need("report", "any"), fixed("/api/v1/status")),
    # users and tokens
    Endpoint("GET", "/api/v1/users", Need("users", "every"), fixed("/api/v1/users")),
    Endpoint("POST", "/api/v1/users", Need("users", "every", 201), new_user),
    Endpoint("GET", "/api/v1/users/{username}", Need("users", "self"), user_path()),
    Endpoint("PATCH", "/api/v1/users/{username}", Need("users", "self"), change_user),
    Endpoint(
        "PATCH", "/api/v1/users/{username} (role, stores)", Need("users", "every"), widen_self
    ),
    Endpoint("DELETE", "/api/v1/users/{username}", Need("users", "every", 204), remove_user),
    Endpoint("GET", "/api/v1/tokens", Need(None, "any"), fixed("/api/v1/tokens"), check_own_tokens),
    Endpoint("GET", "/api/v1/tokens?username", Need("users", "self"), tokens_of),
    Endpoint("POST", "/api/v1/tokens", Need("users", "self", 201), new_token),
    # Another's token is not found for whoever may not manage users: its id says nothing.
    Endpoint("DELETE", "/api/v1/tokens/{id}", Need("users", "self", refused=404), revoke_token),
    # operations
    Endpoint("POST", "/api/v1/init", Need("operate", "every"), fixed("/api/v1/init")),
    Endpoint("POST", "/api/v1/db/upgrade", Need("operate", "every"), fixed("/api/v1/db/upgrade")),
    Endpoint(
        "POST", "/api/v1/audit/verify", Need("report", "every"), fixed("/api/v1/audit/verify")
    ),
    Endpoint(
        "POST",
        "/api/v1/audit/prune",
        Need("operate", "every"),
        fixed("/api/v1/audit/prune", {"older_than": "2001-01-01T00:00:00Z"}),
    ),
    Endpoint("GET", "/api/v1/snapshot", Need("operate", "every"), fixed("/api/v1/snapshot")),
    Endpoint("POST", "/api/v1/snapshot", Need("operate", "every"), snapshot),
]

CASES = [
    pytest.param(
        endpoint, username, target, id=f"{endpoint.method} {endpoint.template}-{username}-{target}"
    )
    for endpoint in ENDPOINTS
    for target in endpoint.cases()
    for username in ROLES
]


def test_the_matrix_covers_every_route_of_the_api(world: World) -> None:
    """Each route of the OpenAPI document is in the matrix (or is `auth/login`, which
    needs no token and has tests of its own)."""
    document = world.client.get("/api/v1/openapi.json").json()
    routes = {
        (method.upper(), re.sub(r"\{[^}]*\}", "{}", path))
        for path, operations in document["paths"].items()
        for method in operations
        if path.startswith("/api/v1/")
    }
    covered = {
        (e.method, re.sub(r"\{[^}]*\}", "{}", e.template.split("?")[0].split(" ")[0]))
        for e in ENDPOINTS
    }
    missing = routes - covered - {("POST", "/api/v1/auth/login")}
    assert missing == set(), sorted(missing)


@pytest.mark.parametrize(("endpoint", "username", "target"), CASES)
def test_authorization_matrix(world: World, endpoint: Endpoint, username: str, target: str) -> None:
    want = expected(endpoint.need, username, target)
    prepared = endpoint.prepare(world, username, target)
    try:
        response = world.call(
            username,
            endpoint.method,
            quote(prepared.path),
            params=prepared.params,
            json=prepared.json,
            content=prepared.content,
            headers=prepared.headers,
        )
    finally:
        if prepared.cleanup is not None:
            prepared.cleanup()
    assert response.status_code == want, response.text
    if want >= 400:
        assert response.headers["content-type"] == PROBLEM
    elif endpoint.check is not None:
        endpoint.check(world, username, response)


# -- 401 ------------------------------------------------------------------------------


def _refused(response: httpx.Response) -> str:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["WWW-Authenticate"].startswith("Bearer ")
    body = response.json()
    assert (body["status"], body["title"]) == (401, "Not authenticated")
    return str(body["detail"])


def test_no_or_malformed_credentials_are_401(world: World) -> None:
    path = "/api/v1/stores"
    missing = _refused(world.client.get(path))
    assert "no credentials" in missing
    details = {
        header: _refused(world.client.get(path, headers={"Authorization": header}))
        for header in (
            "Basic eDp5",
            "Bearer",
            "Bearer garbage",
            "bearer inv_" + "A" * 43,  # the shape of a token, but none was ever made
            "Token " + world.tokens["admin-all"],  # a real token under another scheme
        )
    }
    assert len(set(details.values())) == 1, details
    assert missing not in details.values()
    # The right token under the scheme's name in any case works.
    ok = world.client.get(path, headers={"Authorization": "bearer " + world.tokens["clerk-all"]})
    assert ok.status_code == 200


def test_expired_revoked_disabled_and_removed_tokens_are_refused_at_once(world: World) -> None:
    path = "/api/v1/auth/me"
    name = world.fresh("gone-user-")
    world.setup.add_user(name, "long enough", "clerk")

    def bearer(secret: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {secret}"}

    unknown = _refused(world.client.get(path, headers=bearer("inv_" + "x" * 43)))

    past = datetime.now(UTC) - timedelta(minutes=1)
    expired = world.setup.create_token(name, name="old", expires_at=past).secret
    assert _refused(world.client.get(path, headers=bearer(expired))) == unknown

    revoked = world.setup.create_token(name, name="to revoke")
    assert world.client.get(path, headers=bearer(revoked.secret)).status_code == 200
    answer = world.call("admin-all", "DELETE", f"/api/v1/tokens/{revoked.token.id}")
    assert answer.status_code == 200
    assert _refused(world.client.get(path, headers=bearer(revoked.secret))) == unknown

    live = world.setup.create_token(name, name="live").secret
    assert world.client.get(path, headers=bearer(live)).status_code == 200
    answer = world.call("admin-all", "PATCH", f"/api/v1/users/{name}", json={"disabled": True})
    assert answer.status_code == 200
    assert _refused(world.client.get(path, headers=bearer(live))) == unknown
    answer = world.call("admin-all", "PATCH", f"/api/v1/users/{name}", json={"disabled": False})
    assert answer.status_code == 200
    assert world.client.get(path, headers=bearer(live)).status_code == 200

    assert world.call("admin-all", "DELETE", f"/api/v1/users/{name}").status_code == 204
    assert _refused(world.client.get(path, headers=bearer(live))) == unknown


def test_http_backend_reads_its_token_from_a_secrets_file(world: World, tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "INV_TOKEN").write_text(world.tokens["clerk-north"] + "\n")
    env = {"INV_BACKEND": "http", "INV_URL": world.url, "INV_SECRETS_DIR": str(secrets)}
    result = run_cli(["store", "list", "--format", "json"], env=env)
    assert result.returncode == 0, result.stderr
    assert [s["code"] for s in json.loads(result.stdout)] == [OWN]  # clerk-north's view
    assert world.tokens["clerk-north"] not in result.stdout + result.stderr
    (secrets / "INV_TOKEN").write_text("inv_" + "Z" * 43)
    refused = run_cli(["store", "list"], env=env)
    assert refused.returncode == 77, refused.stderr


# -- login and rate limits ------------------------------------------------------------


def _limits(response: httpx.Response) -> tuple[int, int, int]:
    headers = response.headers
    reset = int(headers["RateLimit-Reset"])
    return int(headers["RateLimit-Limit"]), int(headers["RateLimit-Remaining"]), reset


def _metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _sample(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.slow
def test_login_guessing_and_token_budgets_reach_429() -> None:
    database = fresh_database()
    password = "alice-secret-5d1e"
    with PostgresBackend(database, actor="setup") as setup:
        setup.add_user("alice", password, "manager")
        first = setup.create_token("alice", name="till-1").secret
        second = setup.create_token("alice", name="till-2").secret
    server = ApiServer(
        {
            "INV_BACKEND": "postgres",
            "INV_DATABASE_URL": database,
            "INV_RATE_LIMIT_ANONYMOUS": "5/minute",
            "INV_RATE_LIMIT_TOKEN": "10/minute",
        }
    )
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:

            def login(username: str, secret: str) -> httpx.Response:
                body = {"username": username, "password": secret}
                return client.post("/api/v1/auth/login", json=body)

            answer = login("alice", password)
            assert answer.status_code == 200, answer.text
            assert _limits(answer)[:2] == (5, 4) and 1 <= _limits(answer)[2] <= 60
            token = answer.json()["token"]
            until = datetime.fromisoformat(answer.json()["expires_at"].replace("Z", "+00:00"))
            assert timedelta(hours=1) < until - datetime.now(UTC) < timedelta(days=2)
            me = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
            assert (me.status_code, me.json()["username"]) == (200, "alice")

            wrong = login("alice", "not the password")
            nobody = login("nobody", "not the password")
            assert wrong.json()["detail"] == nobody.json()["detail"]
            guesses = [wrong, nobody, login("alice", "guess 3"), login("alice", "guess 4")]
            for remaining, guess in zip((3, 2, 1, 0), guesses, strict=True):
                assert guess.status_code == 401
                assert guess.headers["content-type"] == PROBLEM
                assert _limits(guess)[:2] == (5, remaining)

            sixth = login("alice", "guess 6")
            assert sixth.status_code == 429, sixth.text
            assert sixth.headers["content-type"] == PROBLEM
            assert 1 <= int(sixth.headers["Retry-After"]) <= 60
            limit, remaining, reset = _limits(sixth)
            assert (limit, remaining) == (5, 0) and 1 <= reset <= 60
            # The budget is the address's: the right password does not get through either.
            assert login("alice", password).status_code == 429

            for _ in range(8):
                assert client.get("/healthz").status_code == 200

            def stores(secret: str) -> httpx.Response:
                return client.get("/api/v1/stores", headers={"Authorization": f"Bearer {secret}"})

            # Tokens have budgets of their own, one per token.
            for remaining in range(9, -1, -1):
                answer = stores(first)
                assert answer.status_code == 200
                assert _limits(answer)[:2] == (10, remaining)
            over = stores(first)
            assert over.status_code == 429 and int(over.headers["Retry-After"]) >= 1
            assert _limits(over)[:2] == (10, 0)
            answer = stores(second)
            assert answer.status_code == 200 and _limits(answer)[:2] == (10, 9)

            scraped = client.get("/metrics")
            assert scraped.status_code == 200
            assert scraped.headers["content-type"].startswith("text/plain")
            samples = _metrics(scraped.text)
    finally:
        server.stop()

    refused = "inv_api_rate_limited_total"
    assert _sample(samples, refused, budget="anonymous") == 2
    assert _sample(samples, refused, budget="token") == 1
    requests = "inv_api_requests_total"
    login_route = {"method": "POST", "route": "/api/v1/auth/login"}
    assert _sample(samples, requests, **login_route, status="200") == 1
    assert _sample(samples, requests, **login_route, status="401") == 4
    assert _sample(samples, requests, **login_route, status="429") == 2
    stores_route = {"method": "GET", "route": "/api/v1/stores"}
    assert _sample(samples, requests, **stores_route, status="200") == 11
    assert _sample(samples, requests, **stores_route, status="429") == 1
    assert _sample(samples, requests, method="GET", route="/healthz", status="200") >= 8
    latency = "inv_api_request_duration_seconds"
    assert _sample(samples, latency + "_count", route="/api/v1/auth/login") == 7
    assert _sample(samples, latency + "_bucket", route="/api/v1/auth/login", le="+Inf") == 7
    assert _sample(samples, latency + "_bucket", route="/api/v1/stores", le="+Inf") == 12
    buckets = sorted(
        (float(dict(labels)["le"]), value)
        for (name, labels), value in samples.items()
        if name == latency + "_bucket" and dict(labels)["route"] == "/api/v1/stores"
    )
    assert len(buckets) > 5  # a histogram: bounds, each counting what took no longer
    assert [v for _, v in buckets] == sorted(v for _, v in buckets)


def _redis_database(base: str) -> str:
    """The test Redis, in a database of this xdist process's own (1-15)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    number = 1 + int(re.sub(r"\D", "", worker) or 0) % 15
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path=f"/{number}"))


@pytest.mark.slow
def test_two_servers_share_one_budget_through_redis() -> None:
    redis_url = _redis_database(redis_or_skip())
    # A window no other run uses: its length is part of the counter's key, so a parallel
    # run of this test (another checkout, another xdist process) counts apart.
    window = random.randrange(3600, 7200)
    env = {
        "INV_BACKEND": "postgres",
        "INV_DATABASE_URL": fresh_database(),
        "INV_REDIS_URL": redis_url,
        "INV_RATE_LIMIT_ANONYMOUS": f"6 per {window} seconds",
    }
    servers = started((env, {}), (env, {}))
    try:
        with httpx.Client(timeout=30) as client:
            answers = [client.get(servers[i % 2].url + "/api/v1/stores") for i in range(8)]
    finally:
        for server in servers:
            server.stop()
    assert [a.status_code for a in answers] == [401] * 6 + [429] * 2
    assert [_limits(a)[1] for a in answers] == [5, 4, 3, 2, 1, 0, 0, 0]
    assert all(_limits(a)[0] == 6 for a in answers)


# -- the allow-list and trusted proxies -----------------------------------------------


@pytest.mark.slow
def test_allow_list_refuses_before_credentials_and_trusts_only_its_proxies(
    world: World,
) -> None:
    database = fresh_database()
    with PostgresBackend(database, actor="setup") as setup:
        setup.add_user("dave", "long enough", "admin")
        token = setup.create_token("dave").secret
    env = {
        "INV_BACKEND": "postgres",
        "INV_DATABASE_URL": database,
        "INV_ALLOWED_NETWORKS": "10.0.0.0/8",
    }
    valid = {"Authorization": f"Bearer {token}"}
    garbage = {"Authorization": "Bearer garbage"}
    proxied = {"X-Forwarded-For": "10.1.2.3"}
    outsider = {"X-Forwarded-For": "192.0.2.9"}
    # The load balancer is 127.0.0.1 (this client) for one, elsewhere for the other.
    behind_proxy, elsewhere = started(
        (env, {"args": ("--forwarded-allow-ips", "127.0.0.1")}),
        (env, {"args": ("--forwarded-allow-ips", "192.0.2.1")}),
    )
    try:
        with httpx.Client(base_url=behind_proxy.url, timeout=30) as client:
            refusals = [
                client.get("/api/v1/stores"),
                client.get("/api/v1/stores", headers=garbage),
                client.get("/api/v1/stores", headers=valid),
                client.post("/api/v1/auth/login", json={"username": "dave", "password": "x"}),
                client.get("/api/v1/stores", headers={**valid, **outsider}),
                client.get("/healthz", headers=outsider),
                client.get("/metrics", headers=outsider),
            ]
            # The machine itself (a container's healthcheck) may ask for health only.
            loopback_health = client.get("/healthz")
            through = client.get("/api/v1/stores", headers={**valid, **proxied})
            through_garbage = client.get("/api/v1/stores", headers={**garbage, **proxied})
            health = client.get("/healthz", headers=proxied)
            ignored = client.get(elsewhere.url + "/api/v1/stores", headers={**valid, **proxied})
    finally:
        behind_proxy.stop()
        elsewhere.stop()
    for refusal in [*refusals, ignored]:
        assert refusal.status_code == 403, refusal.text
        assert refusal.headers["content-type"] == PROBLEM
        assert "allow-list" in refusal.json()["detail"]
    assert through.status_code == 200
    assert through_garbage.status_code == 401
    assert health.status_code == loopback_health.status_code == 200
    log = behind_proxy.log()
    assert '"client": "10.1.2.3"' in log and '"client": "127.0.0.1"' in log

    # `world` allows 127.0.0.0/8: it serves this client, and still refuses 10.1.2.3.
    assert world.call("clerk-all", "GET", "/api/v1/stores").status_code == 200
    assert world.client.get("/healthz").status_code == 200
    forwarded = world.call("clerk-all", "GET", "/api/v1/stores", headers=proxied)
    assert forwarded.status_code == 403


# -- secrets --------------------------------------------------------------------------


@pytest.mark.slow
def test_secrets_from_files_redis_down_and_nothing_secret_in_answers_or_logs(
    tmp_path: Path,
) -> None:
    """A server whose database and Redis URLs are files (and not in its environment)
    serves.  Its Redis is down: every request is served all the same, over limits that
    are not counted, and one warning says so.  After logins, token creation and
    requests, no password (Redis's either), token, token digest or password hash is in
    any answer or in its log, whose access lines are one per request."""
    database = fresh_database()
    passwords = {"erin": "erin-password-71b0", "frank": "frank-password-93c4"}
    with PostgresBackend(database, actor="setup") as setup:
        setup.add_user("erin", passwords["erin"], "admin")
        setup.add_user("frank", passwords["frank"], "clerk")
        setup.add_product("widget", "1.00", sku="W-1", quantity=4)
        secrets = [setup.create_token("erin", name="setup").secret]
    folder = tmp_path / "secrets"
    folder.mkdir()
    (folder / "INV_DATABASE_URL").write_text(database + "\n")
    redis_password = "redis-password-4a7f"
    closed = f"redis://:{redis_password}@127.0.0.1:{free_port()}/0"
    (folder / "INV_REDIS_URL").write_text(closed + "\n")
    assert "INV_DATABASE_URL" not in os.environ and "INV_REDIS_URL" not in os.environ
    one = "1/hour"  # every request past the first would be refused, were it counted
    server = ApiServer(
        {
            "INV_BACKEND": "postgres",
            "INV_SECRETS_DIR": str(folder),
            "INV_RATE_LIMIT_ANONYMOUS": one,
            "INV_RATE_LIMIT_TOKEN": one,
        }
    )
    seen: list[httpx.Response] = []
    log_lines: list[tuple[str, str, int, str]] = []

    def call(method: str, path: str, template: str, user: str, **kwargs: Any) -> httpx.Response:
        answer = client.request(method, path, **kwargs)
        seen.append(answer)
        log_lines.append((method, template, answer.status_code, user))
        return answer

    def bearer(secret: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {secret}"}

    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            login = "/api/v1/auth/login"
            for name, secret in passwords.items():
                answer = call(
                    "POST", login, login, "-", json={"username": name, "password": secret}
                )
                assert answer.status_code == 200
                secrets.append(answer.json()["token"])
            wrong = {"username": "erin", "password": passwords["frank"]}
            assert call("POST", login, login, "-", json=wrong).status_code == 401
            erin, frank = bearer(secrets[1]), bearer(secrets[2])
            made = call("POST", "/api/v1/tokens", "/api/v1/tokens", "erin", headers=erin, json={})
            assert made.status_code == 201
            secrets.append(made.json()["token"])
            for path in ("/api/v1/users", "/api/v1/tokens", "/api/v1/auth/me"):
                answer = call("GET", path, path, "erin", headers=bearer(secrets[-1]))
                assert answer.status_code == 200
            answer = call("GET", "/api/v1/auth/me", "/api/v1/auth/me", "frank", headers=frank)
            assert answer.json()["username"] == "frank"
            level = "/api/v1/stores/{store}/inventory/{sku:text}"
            answer = call("GET", "/api/v1/stores/main/inventory/W-1", level, "frank", headers=frank)
            assert answer.json()["quantity"] == 4
            moved = call(
                "POST",
                "/api/v1/stores/main/inventory/W-1/movements",
                level + "/movements",
                "frank",
                headers=frank,
                json={"change": -1},
            )
            assert moved.status_code == 201 and moved.json()["actor"] == "frank"
            users = call("GET", "/api/v1/users", "/api/v1/users", "frank", headers=frank)
            assert users.status_code == 403
            assert call("GET", "/api/v1/stores", "/api/v1/stores", "-").status_code == 401
            call("GET", "/api/v1/nowhere", "-", "erin", headers=erin)
    finally:
        server.stop()

    with psycopg.connect(database) as conn:
        hashes = [h for (h,) in conn.execute("SELECT password_hash FROM users")]
        digests = [d for (d,) in conn.execute("SELECT token_hash FROM api_tokens")]
    assert len(hashes) == 2 and len(digests) == len(secrets) == 4
    assert sorted(digests) == sorted(token_digest(s) for s in secrets)
    forbidden = [*passwords.values(), redis_password, *secrets, *digests, *hashes]
    forbidden += [h.rsplit("$", 1)[-1] for h in hashes]  # the hash part alone
    log = server.log()
    for answer in seen:
        shown = answer.text + "\n" + "\n".join(f"{k}: {v}" for k, v in answer.headers.items())
        body = answer.json() if answer.status_code in (200, 201) else None
        handed_out = body.get("token") if isinstance(body, dict) else None
        for secret in forbidden:
            if secret != handed_out:  # a login or a new token shows its own secret, once
                assert secret not in shown, (answer.request.url.path, secret)
    for secret in forbidden:
        assert secret not in log

    assert all("RateLimit-Limit" not in a.headers for a in seen)  # nothing counted
    warnings = [
        line for line in log.splitlines() if "rate limit" in line.lower() and line[0] != "{"
    ]
    assert len(warnings) == 1, warnings
    assert "not counted" in warnings[0]

    access = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    access = [a for a in access if a["path"] != "/healthz"]  # the start-up polls
    assert [(a["method"], a["path"], a["status"], a["user"]) for a in access] == log_lines
    assert all(isinstance(a["ms"], int | float) for a in access)
