"""`inv serve`'s HTTP face: semantics, malformed requests, concurrency, every backend.

Most tests run the application in this process (`TestClient` over `create_app` with a
PostgreSQL backend of its own, an admin and its token) and compare what it answers with
what the CLI prints for the same data and the same mistake.  What needs a real server
runs one: 20 concurrent clients and a retried key against `inv serve` over PostgreSQL,
`inv serve` over the json and the kafka backends once each, and the `http` backend's
exit codes through the CLI.
"""

from __future__ import annotations

import atexit
import contextlib
import csv
import io
import itertools
import json
import random
import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pg
import pytest
from apiserver import ApiServer, PostgresSlot, slot
from broker import free_port
from fastapi.testclient import TestClient
from inprocess import run_cli
from pg import fresh_database

from backends.jsonfile import JsonBackend
from backends.postgres import PostgresBackend
from backends.settings import Settings
from inventory_cli.api.routes import router
from inventory_cli.api.server import create_app

PROBLEM = "application/problem+json"
LIMITLESS = "1000000/minute"
ADMIN_PASSWORD = "admin-password-1"
#: Every status a client's mistake may get; never a 5xx.
CLIENT_ERRORS = {400, 401, 403, 404, 405, 409, 412, 413, 415, 422}
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def settings(**given: Any) -> Settings:
    return Settings(
        backend="postgres", rate_limit_token=LIMITLESS, rate_limit_anonymous=LIMITLESS, **given
    )


@dataclass
class Api:
    """An in-process application over a PostgreSQL database of its own, as `admin`."""

    client: TestClient
    backend: PostgresBackend
    database_url: str
    token: str
    headers: dict[str, str] = field(default_factory=dict)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.get(
            path, headers={**self.headers, **kwargs.pop("headers", {})}, **kwargs
        )

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.post(
            path, headers={**self.headers, **kwargs.pop("headers", {})}, **kwargs
        )

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.request(
            method, path, headers={**self.headers, **kwargs.pop("headers", {})}, **kwargs
        )

    def cli(self, *args: str) -> Any:
        """`inv ARGS` with the postgres backend over the same database."""
        return run_cli(args, env={"INV_BACKEND": "postgres", "INV_DATABASE_URL": self.database_url})

    def movements(self, sku: str, action: str = "stock.adjust") -> list[dict[str, Any]]:
        entries = self.get("/api/v1/history", params={"sku": sku}).json()
        return [e for e in entries if e["action"] == action]


@pytest.fixture(scope="module")
def seed() -> tuple[str, str]:
    """A database with the schema, store main, user `admin` and its token: the template
    each test's database is copied from (hashing a password costs more than a copy)."""
    url = fresh_database()
    with PostgresBackend(url, actor="tester") as setup:
        setup.add_user("admin", ADMIN_PASSWORD, "admin")
        token = setup.create_token("admin", name="tests").secret
    return url, token


_copies = itertools.count()


def copy_of(url: str) -> str:
    source = url.rpartition("/")[2]
    name = f"{source}_{next(_copies)}"
    with pg.admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{source}" STRATEGY FILE_COPY')
    atexit.register(pg.drop_database, pg.url_for(name))
    return pg.url_for(name)


@contextlib.contextmanager
def serving(url: str, token: str) -> Iterator[Api]:
    backend = PostgresBackend(url, actor="tester")
    app = create_app(settings(), backend)
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            yield Api(client, backend, url, token, {"Authorization": f"Bearer {token}"})
    finally:
        backend.close()


@pytest.fixture
def api(seed: tuple[str, str]) -> Iterator[Api]:
    """The application over a database of this test's own."""
    url, token = seed
    mine = copy_of(url)
    with serving(mine, token) as served:
        yield served
    pg.drop_database(mine)


@pytest.fixture(scope="module")
def shared_api(seed: tuple[str, str]) -> Iterator[Api]:
    """One application for the tests that must change nothing; H1 has 5 at main."""
    url, token = seed
    with serving(copy_of(url), token) as served:
        add(served, "H1", 5)
        yield served


def is_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert "Traceback" not in response.text
    return body


def cli_error(result: Any) -> str:
    """The text after `Error: ` of a refused command's one line."""
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return str(lines[0].removeprefix("Error: "))


def add(api: Api, sku: str, quantity: int = 0, **fields: Any) -> dict[str, Any]:
    body = {"name": f"Product {sku}", "price": "4.50", "sku": sku, "quantity": quantity, **fields}
    response = api.post("/api/v1/products", json=body)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()
    return data


# -- 1. HTTP semantics ----------------------------------------------------------------


def test_reads_answer_the_clis_json(api: Api) -> None:
    assert api.post("/api/v1/stores", json={"code": "north", "name": "North"}).status_code == 201
    add(api, "H1", 5, category="Tools", reorder_level=2, unit="box")
    add(api, "N1", 3, store="north", price="12")
    add(api, "GONE", 0)
    assert api.request("DELETE", "/api/v1/products/GONE", params={"store": "main"}).is_success
    api.post("/api/v1/stores/north/inventory/H1/movements", json={"change": 4, "reason": "restock"})

    listed = api.get("/api/v1/inventory").json()
    printed = json.loads(api.cli("list", "--format", "json").stdout)

    def without_value(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in row.items() if k != "value"} for row in rows]

    assert without_value(listed) == without_value(printed)
    assert {(r["sku"], r["store"]) for r in listed} == {
        ("GONE", None),
        ("H1", "main"),
        ("H1", "north"),
        ("N1", "north"),
    }
    assert all(isinstance(r["price"], str) for r in listed)
    assert {r["price"] for r in listed} == {"4.50", "12.00"}

    shown = api.get("/api/v1/products/H1").json()
    assert shown == json.loads(api.cli("show", "H1", "--format", "json").stdout)
    assert shown["stock"] == {"main": 5, "north": 4}

    history = api.get("/api/v1/history").json()
    assert history == json.loads(api.cli("history", "--format", "json").stdout)
    assert history and all(TIME.match(entry["at"]) for entry in history)
    mine = [e for e in history if e["source"] == "api"]
    assert mine and {e["actor"] for e in mine} == {"admin"}

    store_rows = api.get("/api/v1/stores/north/inventory").json()
    assert without_value(store_rows) == without_value(
        json.loads(api.cli("list", "--store", "north", "--format", "json").stdout)
    )


def test_creates_answer_201(api: Api) -> None:
    created = [
        api.post("/api/v1/stores", json={"code": "east"}),
        api.post("/api/v1/products", json={"name": "Saw", "price": "9.99", "sku": "S1"}),
        api.post("/api/v1/stores/main/inventory/S1/movements", json={"set": 7}),
        api.post(
            "/api/v1/transfers", json={"sku": "S1", "from": "main", "to": "east", "quantity": 2}
        ),
        api.post(
            "/api/v1/users",
            json={"username": "clerk1", "password": "clerk-password", "role": "clerk"},
        ),
        api.post("/api/v1/tokens", json={"username": "clerk1", "name": "till"}),
    ]
    assert [r.status_code for r in created] == [201] * len(created), [r.text for r in created]
    assert all(r.headers["content-type"] == "application/json" for r in created)
    transfer = created[3].json()
    assert (transfer["out"]["delta"], transfer["in"]["delta"]) == (-2, 2)
    assert api.get("/api/v1/products/S1").json()["stock"] == {"main": 5, "east": 2}
    assert created[1].json()["price"] == "9.99"


# Each mistake: the CLI's command and the same request over HTTP, with the status it gets.
MISTAKES: dict[str, tuple[tuple[str, ...], tuple[str, str, dict[str, Any] | None], int]] = {
    "not enough stock": (
        ("update", "H1", "--change", "-10"),
        ("POST", "/api/v1/stores/main/inventory/H1/movements", {"change": -10}),
        409,
    ),
    "unknown sku": (("show", "NOPE"), ("GET", "/api/v1/products/NOPE", None), 404),
    "unknown sku, movement": (
        ("update", "NOPE", "--change", "1"),
        ("POST", "/api/v1/stores/main/inventory/NOPE/movements", {"change": 1}),
        404,
    ),
    "unknown store": (
        ("update", "H1", "--change", "1", "--store", "nowhere"),
        ("POST", "/api/v1/stores/nowhere/inventory/H1/movements", {"change": 1}),
        404,
    ),
    "bad price": (
        ("add", "X", "--price", "4.505"),
        ("POST", "/api/v1/products", {"name": "X", "price": "4.505"}),
        422,
    ),
    "negative price": (
        ("add", "X", "--price", "-1"),
        ("POST", "/api/v1/products", {"name": "X", "price": "-1"}),
        422,
    ),
    "store exists": (("store", "add", "main"), ("POST", "/api/v1/stores", {"code": "main"}), 409),
    "sku exists": (
        ("add", "Other", "--price", "1", "--sku", "h1"),
        ("POST", "/api/v1/products", {"name": "Other", "price": "1", "sku": "h1"}),
        409,
    ),
    "stale expect": (
        ("update", "H1", "--change", "1", "--expect", "3"),
        ("POST", "/api/v1/stores/main/inventory/H1/movements", {"change": 1, "expect": 3}),
        409,
    ),
    "stock on hand": (("remove", "H1"), ("DELETE", "/api/v1/products/H1", None), 409),
}


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_a_refusal_is_a_problem_with_the_clis_message(api: Api, mistake: str) -> None:
    add(api, "H1", 5)
    args, (method, path, body), status = MISTAKES[mistake]
    before = api.get("/api/v1/history").json()
    printed = cli_error(api.cli(*args))
    answer = is_problem(api.request(method, path, json=body), status)
    assert answer["detail"] == printed
    assert answer["type"].startswith("https://inv.invalid/problems/")
    assert api.get("/api/v1/history").json() == before  # neither wrote anything
    if mistake == "not enough stock":
        assert (answer["available"], answer["requested"]) == (5, 10)
        assert answer["type"].endswith("/insufficient-stock")
    if status == 422:
        assert answer["field"] == "price"


def test_etag_and_if_match_are_compare_and_set(api: Api) -> None:
    add(api, "H1", 5)
    level = api.get("/api/v1/stores/main/inventory/H1")
    assert level.headers["ETag"] == '"q5"'
    assert level.json() == {"store": "main", "sku": "H1", "quantity": 5}

    path = "/api/v1/stores/main/inventory/H1/movements"
    stale = api.post(path, json={"change": -1}, headers={"If-Match": '"q4"'})
    assert (
        is_problem(stale, 412)["detail"] == "H1 at main is 5, not the expected 4; nothing changed"
    )
    assert api.get("/api/v1/stores/main/inventory/H1").json()["quantity"] == 5

    fresh = api.post(path, json={"change": -1}, headers={"If-Match": level.headers["ETag"]})
    assert fresh.status_code == 201, fresh.text
    assert fresh.headers["ETag"] == '"q4"'
    assert fresh.json()["quantity_after"] == 4
    assert api.get("/api/v1/stores/main/inventory/H1").headers["ETag"] == '"q4"'
    # The old tag is stale now: the same request again is refused.
    assert api.post(path, json={"change": -1}, headers={"If-Match": '"q5"'}).status_code == 412
    counted = api.post(path, json={"set": 9}, headers={"If-Match": '"q4"'})
    assert counted.status_code == 201 and counted.headers["ETag"] == '"q9"'
    is_problem(api.post(path, json={"change": 1}, headers={"If-Match": "garbage"}), 422)


def test_a_retried_idempotency_key_is_answered_alike_and_applied_once(api: Api) -> None:
    add(api, "H1", 5)
    path = "/api/v1/stores/main/inventory/H1/movements"
    key = {"Idempotency-Key": str(uuid.uuid4())}
    first = api.post(path, json={"change": -2, "reason": "sale"}, headers=key)
    again = api.post(path, json={"change": -2, "reason": "sale"}, headers=key)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert api.get("/api/v1/stores/main/inventory/H1").json()["quantity"] == 3
    entries = api.movements("H1")
    assert [e["event_id"] for e in entries] == [key["Idempotency-Key"]]

    other = api.post(path, json={"change": -1, "reason": "sale"}, headers=key)
    assert is_problem(other, 409)["type"].endswith("/conflict")
    assert api.get("/api/v1/stores/main/inventory/H1").json()["quantity"] == 3

    product_key = {"Idempotency-Key": "new-saw-1"}
    body = {"name": "Saw", "price": "9.99", "sku": "S1", "quantity": 1}
    made = [api.post("/api/v1/products", json=body, headers=product_key) for _ in range(2)]
    assert [m.status_code for m in made] == [201, 201]
    assert made[0].json() == made[1].json()
    assert len(api.movements("S1", "product.create")) == 1


BAD_CSV = (
    "sku,name,price,quantity\r\nA1,Apple,1.00,3\r\nB1,Bad,abc,2\r\nC1,,1.00,1\r\nD1,Dog,2.00,-1\r\n"
)
ROW = re.compile(r"^Error: .*?: row (\d+), column (\w+): (.*)$")


def test_import_reports_every_bad_row_as_the_cli_does(api: Api, tmp_path: Path) -> None:
    file = tmp_path / "bad.csv"
    file.write_bytes(BAD_CSV.encode())
    printed = api.cli("import", str(file))
    assert printed.returncode == 65
    expected = [
        {"row": int(m[1]), "column": m[2], "reason": m[3]}
        for line in printed.stderr.splitlines()
        if (m := ROW.match(line))
    ]
    assert [p["row"] for p in expected] == [3, 4, 5]

    headers = {"Content-Type": "text/csv"}
    rejected = is_problem(api.post("/api/v1/imports", content=BAD_CSV, headers=headers), 422)
    assert rejected["problems"] == expected
    assert rejected["type"].endswith("/bad-rows")
    assert api.get("/api/v1/inventory").json() == []

    dry = api.post(
        "/api/v1/imports",
        content=BAD_CSV,
        headers=headers,
        params={"dry_run": "true", "on_error": "skip-rows"},
    )
    assert dry.status_code == 200, dry.text
    assert dry.json()["dry_run"] is True and dry.json()["problems"] == expected
    assert api.get("/api/v1/inventory").json() == []
    assert api.get("/api/v1/history", params={"sku": "A1"}).json() == []

    skipped = api.post(
        "/api/v1/imports", content=BAD_CSV, headers=headers, params={"on_error": "skip-rows"}
    )
    assert skipped.status_code == 200, skipped.text
    assert skipped.json()["problems"] == expected
    assert skipped.json()["applied"] == 1
    rows = api.get("/api/v1/inventory").json()
    assert [(r["sku"], r["store"], r["quantity"]) for r in rows] == [("A1", "main", 3)]

    lines = '{"sku": "E1", "name": "Egg", "price": "0.30", "quantity": 12}\n'
    jsonl = api.post(
        "/api/v1/imports", content=lines, headers={"Content-Type": "application/x-ndjson"}
    )
    assert jsonl.status_code == 200, jsonl.text
    assert api.get("/api/v1/stores/main/inventory/E1").json()["quantity"] == 12


def test_export_streams_what_inv_export_writes(api: Api) -> None:
    assert api.post("/api/v1/stores", json={"code": "north", "name": "North"}).status_code == 201
    add(api, "H1", 5, category="Tools")
    add(api, "N1, comma", 3, store="north")
    add(api, "Z1", 0)
    api.request("DELETE", "/api/v1/products/Z1", params={"store": "main"})
    for fmt in ("csv", "jsonl"):
        exported = api.get("/api/v1/export", params={"format": fmt})
        assert exported.status_code == 200
        assert exported.text == api.cli("export", "--format", fmt).stdout
    exported = api.get("/api/v1/export")
    assert exported.headers["content-type"].startswith("text/csv")
    assert "content-length" not in exported.headers  # streamed
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [(r["sku"], r["store"], r["quantity"]) for r in rows] == [
        ("H1", "main", "5"),
        ("N1, comma", "north", "3"),
        ("Z1", "", ""),
    ]
    # Past the first chunk of 1000 rows: one header, every row once, as the CLI has it.
    many = "sku,name,price,quantity\n" + "".join(
        f"M{i:05d},Many {i},1.25,{i}\n" for i in range(2500)
    )
    imported = api.post("/api/v1/imports", content=many, headers={"Content-Type": "text/csv"})
    assert imported.status_code == 200, imported.text
    for fmt in ("csv", "jsonl"):
        exported = api.get("/api/v1/export", params={"format": fmt})
        assert exported.text == api.cli("export", "--format", fmt).stdout
    lines = api.get("/api/v1/export").text.splitlines()
    assert len(lines) == 1 + 3 + 2500 and lines.count(lines[0]) == 1


LEGACY = {
    "/api/inventory": "/api/v1/inventory",
    "/api/inventorystore": "/api/v1/inventory",
    "/api/stores": "/api/v1/stores",
}


def test_legacy_paths_redirect_and_lead_to_the_same_answers(api: Api) -> None:
    add(api, "H1", 5)
    for old, new in LEGACY.items():
        moved = api.get(old, params={"limit": "5"}, follow_redirects=False)
        assert moved.status_code == 308
        assert moved.headers["location"].endswith(f"{new}?limit=5")
        followed = api.get(old, params={"limit": "5"}, follow_redirects=True)
        assert followed.status_code == 200
        assert followed.json() == api.get(new, params={"limit": "5"}).json()
    login = {"username": "admin", "password": ADMIN_PASSWORD}
    moved = api.client.post("/api/auth", json=login, follow_redirects=False)
    assert moved.status_code == 308 and moved.headers["location"].endswith("/api/v1/auth/login")
    logged_in = api.client.post("/api/auth", json=login, follow_redirects=True)
    assert logged_in.status_code == 200, logged_in.text
    token = logged_in.json()["token"]
    mine = api.client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert mine.json()["username"] == "admin"


def test_readyz_follows_the_database(api: Api) -> None:
    ready = api.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    closed = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere?connect_timeout=2"
    app = create_app(settings(database_url=closed))
    with TestClient(app, raise_server_exceptions=False) as client:
        down = client.get("/readyz")
        body = is_problem(down, 503)
        assert int(down.headers["Retry-After"]) > 0
        assert body["type"].endswith("/unavailable")
        assert client.get("/healthz").status_code == 200


ERROR_STATUSES = ("401", "403", "404", "409", "422", "429", "503")


def test_openapi_documents_every_path_and_its_errors(api: Api) -> None:
    document = api.client.get("/api/v1/openapi.json").json()
    served = {
        route.path.replace(":text", "")
        for route in router.routes
        if getattr(route, "include_in_schema", False)
    }
    assert len(served) > 20
    assert served <= set(document["paths"])
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if not path.startswith("/api/v1/"):
                continue
            responses = operation["responses"]
            for status in ERROR_STATUSES:
                assert status in responses, (method, path, status)
                schema = responses[status]["content"][PROBLEM]["schema"]
                assert {"type", "title", "status", "detail"} <= set(schema["required"])


def test_a_wrong_method_is_405_with_the_resources_methods(shared_api: Api) -> None:
    wrong = shared_api.request("PUT", "/api/v1/products/H1", json={})
    assert is_problem(wrong, 405)
    assert set(wrong.headers["Allow"].split(", ")) == {"GET", "PATCH", "DELETE"}
    # A SKU may hold "/", but .../movements names the movements of H1.
    unknown = shared_api.request("GET", "/api/v1/stores/main/inventory/H1/movements/x")
    assert is_problem(unknown, 404)["detail"] == "no product with SKU 'H1/movements/x'"
    wrong = shared_api.request("PUT", "/api/v1/stores/main/inventory/H1/movements")
    assert is_problem(wrong, 405)
    assert wrong.headers["Allow"] == "POST"


def test_a_body_that_is_not_utf8_is_a_bad_value(shared_api: Api) -> None:
    for path in ("/api/v1/products", "/api/v1/stores", MOVE):
        answer = shared_api.post(path, content=b'{"name": "\xff"}', headers=JSON)
        body = is_problem(answer, 422)
        assert (body["field"], body["type"]) == ("body", "https://inv.invalid/problems/validation")


# -- 2. Malformed requests never get a 500 --------------------------------------------

TEN_MB = 10 * 1024 * 1024
MOVE = "/api/v1/stores/main/inventory/H1/movements"
JSON = {"Content-Type": "application/json"}

MALFORMED: dict[str, tuple[str, str, dict[str, Any]]] = {
    # bodies that are not JSON, or JSON of the wrong shape or types
    "truncated json": ("POST", "/api/v1/products", {"content": b'{"name": ', "headers": JSON}),
    "not utf-8": ("POST", "/api/v1/products", {"content": b"\xff\xfe{\x00", "headers": JSON}),
    "bad utf-8 in a string": (
        "POST",
        "/api/v1/products",
        {"content": b'{"name": "\xed\xa0\x80", "price": "1"}', "headers": JSON},
    ),
    "json list": ("POST", "/api/v1/products", {"json": [1, 2]}),
    "json null": ("POST", "/api/v1/products", {"content": b"null", "headers": JSON}),
    "json string": ("POST", "/api/v1/stores", {"json": "main"}),
    "float price": ("POST", "/api/v1/products", {"json": {"name": "X", "price": 4.5}}),
    "bool price": ("POST", "/api/v1/products", {"json": {"name": "X", "price": True}}),
    "list name": ("POST", "/api/v1/products", {"json": {"name": ["X"], "price": "1"}}),
    "object name": ("POST", "/api/v1/products", {"json": {"name": {"a": 1}, "price": "1"}}),
    "float change": ("POST", MOVE, {"json": {"change": 1.5}}),
    "bool change": ("POST", MOVE, {"json": {"change": True}}),
    "list change": ("POST", MOVE, {"json": {"change": [1]}}),
    "nested change": ("POST", MOVE, {"json": {"change": {"by": 1}}}),
    "infinite change": ("POST", MOVE, {"content": b'{"change": 1e400}', "headers": JSON}),
    "huge change": ("POST", MOVE, {"json": {"change": 10**30}}),
    "huge set": ("POST", MOVE, {"json": {"set": 2**63}}),
    "text change": ("POST", MOVE, {"json": {"change": "lots"}}),
    "huge text change": ("POST", MOVE, {"json": {"change": "9" * 5000}}),
    "change and set": ("POST", MOVE, {"json": {"change": 1, "set": 2}}),
    "neither": ("POST", MOVE, {"json": {}}),
    "unknown field": ("POST", MOVE, {"json": {"change": 1, "sneaky": True}}),
    "huge expect": ("POST", MOVE, {"json": {"change": 1, "expect": 10**20}}),
    "huge if-match": (
        "POST",
        MOVE,
        {"json": {"change": 1}, "headers": {"If-Match": '"q' + "9" * 30 + '"'}},
    ),
    "huge quantity": (
        "POST",
        "/api/v1/products",
        {"json": {"name": "X", "price": "1", "quantity": 10**40}},
    ),
    "huge price": ("POST", "/api/v1/products", {"json": {"name": "X", "price": "9" * 400}}),
    "float transfer": (
        "POST",
        "/api/v1/transfers",
        {"json": {"sku": "H1", "from": "main", "to": "main", "quantity": 0.5}},
    ),
    "same store transfer": (
        "POST",
        "/api/v1/transfers",
        {"json": {"sku": "H1", "from": "main", "to": "main", "quantity": 1}},
    ),
    "batch row of a list": ("POST", "/api/v1/batches", {"json": {"rows": [[1, 2]]}}),
    "batch row unknown key": ("POST", "/api/v1/batches", {"json": {"rows": [{"nope": 1}]}}),
    "batch row float": (
        "POST",
        "/api/v1/batches",
        {"json": {"rows": [{"sku": "H1", "change": 0.5, "price": 1.5}]}},
    ),
    "batch row of objects": (
        "POST",
        "/api/v1/batches",
        {"json": {"rows": [{"sku": {"a": 1}, "name": [1], "store": 7}]}},
    ),
    "snapshot of junk": ("POST", "/api/v1/snapshot", {"json": {"stores": 1}}),
    # NUL bytes, lone surrogates, bad UTF-8
    "nul in a name": ("POST", "/api/v1/products", {"json": {"name": "a\x00b", "price": "1"}}),
    "nul in a sku": (
        "POST",
        "/api/v1/products",
        {"json": {"name": "a", "price": "1", "sku": "H\x00"}},
    ),
    "nul in a reason": ("POST", MOVE, {"json": {"change": 1, "reason": "\x00"}}),
    "nul in a store code": ("POST", "/api/v1/stores", {"json": {"code": "a\x00"}}),
    "lone surrogate name": (
        "POST",
        "/api/v1/products",
        {"content": b'{"name": "\\ud800", "price": "1"}', "headers": JSON},
    ),
    "lone surrogate sku": (
        "POST",
        "/api/v1/products",
        {"content": b'{"name": "x", "price": "1", "sku": "\\udfff"}', "headers": JSON},
    ),
    "lone surrogate reason": (
        "POST",
        MOVE,
        {"content": b'{"change": 1, "reason": "\\ud800"}', "headers": JSON},
    ),
    "lone surrogate password": (
        "POST",
        "/api/v1/auth/login",
        {"content": b'{"username": "admin", "password": "\\ud800xxxxxxxx"}', "headers": JSON},
    ),
    "nul csv": ("POST", "/api/v1/imports", {"content": b"sku,name,price\nA\x00,x,1\n"}),
    "bad utf-8 csv": ("POST", "/api/v1/imports", {"content": b"sku,name,price\n\xff\xfe,x,1\n"}),
    "binary jsonl": (
        "POST",
        "/api/v1/imports",
        {"content": b"\x00\x01{\xff", "params": {"format": "jsonl"}},
    ),
    "jsonl of lists": (
        "POST",
        "/api/v1/imports",
        {"content": b"[1]\n2\n", "params": {"format": "jsonl"}},
    ),
    "empty import": ("POST", "/api/v1/imports", {"content": b""}),
    # query strings
    "nul in search": ("GET", "/api/v1/inventory?search=%00", {}),
    "huge limit": ("GET", "/api/v1/inventory?limit=99999999999999999999", {}),
    "negative limit": ("GET", "/api/v1/inventory?limit=-1", {}),
    "huge offset": ("GET", "/api/v1/inventory?offset=99999999999999999999", {}),
    "text offset": ("GET", "/api/v1/inventory?offset=ten", {}),
    "unknown sort": ("GET", "/api/v1/inventory?sort=bogus", {}),
    "sort with nul": ("GET", "/api/v1/stores/main/inventory?sort=sku%00", {}),
    "bool of junk": ("GET", "/api/v1/inventory?low_stock=maybe", {}),
    "history since junk": ("GET", "/api/v1/history?since=%00yesterday", {}),
    "history huge limit": ("GET", "/api/v1/history?limit=1e99", {}),
    "report until junk": ("GET", "/api/v1/reports/movements?until=%ff", {}),
    "export unknown format": ("GET", "/api/v1/export?format=xml", {}),
    "products huge offset": ("GET", "/api/v1/products?offset=999999999999999999999", {}),
    # paths
    "traversal in a sku": ("GET", "/api/v1/products/..%2F..%2Fetc%2Fpasswd", {}),
    "encoded dots in a sku": ("GET", "/api/v1/products/%2e%2e%2f%2e%2e%2fetc%2fpasswd", {}),
    "plain traversal": ("GET", "/api/v1/products/../../etc/passwd", {}),
    "traversal in a movement": (
        "POST",
        "/api/v1/stores/main/inventory/..%2F..%2Fetc%2Fpasswd/movements",
        {"json": {"change": 1}},
    ),
    "traversal in a store": ("GET", "/api/v1/stores/..%2F..%2Fetc/inventory", {}),
    "nul in a path sku": ("GET", "/api/v1/products/H%00", {}),
    "bad utf-8 in a path": ("GET", "/api/v1/products/%ff%fe", {}),
    "surrogate in a path": ("GET", "/api/v1/stores/main/inventory/%ed%a0%80", {}),
    "nul in a store path": ("GET", "/api/v1/stores/%00/inventory/H1", {}),
    "long sku": ("GET", "/api/v1/products/" + "A" * 20000, {}),
    "nul in a user": ("GET", "/api/v1/users/%00", {}),
    "token id of text": ("DELETE", "/api/v1/tokens/..%2F1", {}),
    "token id huge": ("DELETE", "/api/v1/tokens/99999999999999999999999", {}),
    "patch of junk": ("PATCH", "/api/v1/products/H1", {"json": {"price": [1]}}),
    "unknown route": ("GET", "/api/v1/nothing-here", {}),
    "wrong method": ("PUT", "/api/v1/products", {"json": {}}),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_request_is_a_4xx_problem(shared_api: Api, case: str) -> None:
    api = shared_api
    method, path, kwargs = MALFORMED[case]
    headers = {**api.headers, **kwargs.get("headers", {})}
    sent = {k: v for k, v in kwargs.items() if k != "headers"}
    response = api.client.request(method, path, headers=headers, **sent)
    assert response.status_code in CLIENT_ERRORS, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    assert "Traceback" not in response.text and 'File "' not in response.text
    body = response.json()
    assert body["status"] == response.status_code and body["detail"]
    assert api.get("/api/v1/stores/main/inventory/H1").json()["quantity"] == 5


# Requests a server may take as they come (a search for odd text finds nothing), as long
# as it never fails on them.
ODD: dict[str, tuple[str, str, dict[str, Any]]] = {
    "bad utf-8 in search": ("GET", "/api/v1/inventory?search=%ff%fe", {}),
    "surrogate in category": ("GET", "/api/v1/inventory?category=%ed%a0%80", {}),
    "bad utf-8 in a history sku": ("GET", "/api/v1/history?sku=%c3%28", {}),
    "latin-1 idempotency key": (
        "POST",
        "/api/v1/stores",
        {"json": {"code": "k"}, "headers": {"Idempotency-Key": b"\xed\xa0\x80"}},
    ),
    "latin-1 token": ("GET", "/api/v1/stores", {"headers": {"Authorization": b"Bearer \xff\x00"}}),
    "json as text/plain": (
        "POST",
        "/api/v1/stores",
        {"content": b'{"code": "plain"}', "headers": {"Content-Type": "text/plain"}},
    ),
    "csv as json": (
        "POST",
        "/api/v1/imports",
        {"content": b"sku,name,price\nQ1,q,1\n", "headers": {"Content-Type": "application/json"}},
    ),
}


@pytest.mark.parametrize("case", sorted(ODD))
def test_an_odd_request_is_answered_without_a_500(shared_api: Api, case: str) -> None:
    method, path, kwargs = ODD[case]
    headers = {**shared_api.headers, **kwargs.get("headers", {})}
    sent = {k: v for k, v in kwargs.items() if k != "headers"}
    response = shared_api.client.request(method, path, headers=headers, **sent)
    assert response.status_code < 500, response.text[:500]
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith(PROBLEM)
    assert "Traceback" not in response.text


BIG: dict[str, tuple[str, bytes, str]] = {
    "a 10 MB name": (
        "/api/v1/products",
        json.dumps({"name": "x" * TEN_MB, "price": "1"}).encode(),
        "application/json",
    ),
    "10 MB of junk": (
        "/api/v1/products",
        bytes(range(256)) * (TEN_MB // 256 + 1),
        "application/json",
    ),
    "10 MB of nesting": ("/api/v1/batches", b"[" * (TEN_MB + 1), "application/json"),
    "a 10 MB csv field": (
        "/api/v1/imports",
        b"sku,name,price\nBIG1," + b"y" * TEN_MB + b",1.00\n",
        "text/csv",
    ),
}


@pytest.mark.parametrize("case", sorted(BIG))
def test_a_ten_megabyte_body_is_refused_without_a_500(shared_api: Api, case: str) -> None:
    path, body, media = BIG[case]
    assert len(body) > TEN_MB
    headers = {**shared_api.headers, "Content-Type": media}
    before = shared_api.get("/api/v1/inventory").json()
    response = shared_api.client.post(path, content=body, headers=headers)
    assert response.status_code in {413, 422}, response.text[:300]
    assert response.headers["content-type"].startswith(PROBLEM)
    assert "Traceback" not in response.text and len(response.content) < 100_000
    assert shared_api.get("/api/v1/inventory").json() == before


# -- 3. Concurrent clients against a real server over PostgreSQL ----------------------


@pytest.fixture
def served() -> PostgresSlot:
    server = slot(0)
    server.reset()
    return server


def _client(server: PostgresSlot) -> httpx.Client:
    return httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}, timeout=30
    )


def _in_threads(count: int, work: Any) -> list[Any]:
    """`work(i)` in `count` threads started together; their results, or their errors."""
    start = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = work(i)
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


CLIENTS = 20
EACH = 5


@pytest.mark.slow
def test_twenty_clients_moving_one_item_lose_nothing(served: PostgresSlot) -> None:
    start = CLIENTS * EACH
    with _client(served) as admin:
        made = admin.post(
            "/api/v1/products", json={"name": "Busy", "price": "1", "sku": "B1", "quantity": start}
        )
        assert made.status_code == 201, made.text
    rng = random.Random(9)
    plans = [[rng.choice((-1, 1)) for _ in range(EACH)] for _ in range(CLIENTS)]

    def work(i: int) -> list[tuple[int, str, int]]:
        sent = []
        with _client(served) as client:
            for delta in plans[i]:
                key = str(uuid.uuid4())
                answer = client.post(
                    "/api/v1/stores/main/inventory/B1/movements",
                    json={"change": delta, "reason": "sale" if delta < 0 else "return"},
                    headers={"Idempotency-Key": key},
                )
                sent.append((answer.status_code, key, delta))
        return sent

    sent = [row for rows in _in_threads(CLIENTS, work) for row in rows]
    assert {status for status, _, _ in sent} == {201}
    with _client(served) as admin:
        level = admin.get("/api/v1/stores/main/inventory/B1").json()["quantity"]
        history = admin.get("/api/v1/history", params={"sku": "B1"}).json()
    assert level == start + sum(delta for _, _, delta in sent)
    adjusts = [e for e in history if e["action"] == "stock.adjust"]
    assert sorted(e["event_id"] for e in adjusts) == sorted(key for _, key, _ in sent)
    assert sum(e["delta"] for e in adjusts) == level - start
    assert {e["actor"] for e in adjusts} == {"tester"} and {e["source"] for e in adjusts} == {"api"}


@pytest.mark.slow
def test_twenty_clients_taking_more_than_there_is_take_exactly_all(served: PostgresSlot) -> None:
    stock = CLIENTS * EACH // 2
    with _client(served) as admin:
        made = admin.post(
            "/api/v1/products", json={"name": "Rare", "price": "1", "sku": "R1", "quantity": stock}
        )
        assert made.status_code == 201, made.text

    def work(i: int) -> list[int]:
        with _client(served) as client:
            return [
                client.post(
                    "/api/v1/stores/main/inventory/R1/movements", json={"change": -1}
                ).status_code
                for _ in range(EACH)
            ]

    statuses = [s for rows in _in_threads(CLIENTS, work) for s in rows]
    assert statuses.count(201) == stock and statuses.count(409) == CLIENTS * EACH - stock
    with _client(served) as admin:
        assert admin.get("/api/v1/stores/main/inventory/R1").json()["quantity"] == 0
        history = admin.get("/api/v1/history", params={"sku": "R1"}).json()
    adjusts = [e for e in history if e["action"] == "stock.adjust"]
    assert len(adjusts) == stock
    assert sorted(e["quantity_after"] for e in adjusts) == list(range(stock))


@pytest.mark.slow
def test_one_key_sent_five_times_at_once_is_applied_once(served: PostgresSlot) -> None:
    with _client(served) as admin:
        made = admin.post(
            "/api/v1/products", json={"name": "Once", "price": "1", "sku": "O1", "quantity": 10}
        )
        assert made.status_code == 201, made.text
    key = str(uuid.uuid4())

    def work(i: int) -> tuple[int, Any]:
        with _client(served) as client:
            answer = client.post(
                "/api/v1/stores/main/inventory/O1/movements",
                json={"change": -3, "reason": "sale"},
                headers={"Idempotency-Key": key},
            )
            return answer.status_code, answer.json()

    answers = _in_threads(5, work)
    assert {status for status, _ in answers} == {201}
    assert all(body == answers[0][1] for _, body in answers)
    with _client(served) as admin:
        assert admin.get("/api/v1/stores/main/inventory/O1").json()["quantity"] == 7
        history = admin.get("/api/v1/history", params={"sku": "O1"}).json()
    assert [e["event_id"] for e in history if e["action"] == "stock.adjust"] == [key]


# -- 4. Servers over json and kafka ---------------------------------------------------


def _never_shown(secret: str, *results: Any) -> None:
    for result in results:
        assert secret not in result.stdout and secret not in result.stderr


def json_inventory(path: Path, *users: tuple[str, str, list[str] | None]) -> list[str]:
    """An inventory file with store main and these (name, role, stores) users; a token
    for each."""
    setup = JsonBackend(path=path, actor="setup")
    try:
        setup.init()
        tokens = []
        for name, role, stores in users:
            setup.add_user(name, f"{name}-password", role, stores=stores)
            tokens.append(setup.create_token(name).secret)
        return tokens
    finally:
        setup.close()


@pytest.mark.slow
def test_a_json_server_serves_the_http_backend(tmp_path: Path) -> None:
    path = tmp_path / "inventory.json"
    [token] = json_inventory(path, ("owner", "admin", None))
    server = ApiServer({"INV_BACKEND": "json", "INV_FILE": str(path)})
    try:
        env = {"INV_BACKEND": "http", "INV_URL": server.url, "INV_TOKEN": token}
        before = path.read_bytes()
        added = run_cli(["add", "Saw", "--price", "12.00", "--sku", "SAW1", "--qty", "3"], env=env)
        assert added.returncode == 0, added.stderr
        updated = run_cli(["update", "SAW1", "--change", "4", "--reason", "restock"], env=env)
        assert updated.returncode == 0, updated.stderr
        listed = run_cli(["list", "--format", "json"], env=env)
        assert listed.returncode == 0, listed.stderr
        log = server.log()
    finally:
        server.stop()
    row = [r for r in json.loads(listed.stdout) if r["sku"] == "SAW1"]
    assert [(r["store"], r["quantity"], r["price"]) for r in row] == [("main", 7, "12.00")]
    _never_shown(token, added, updated, listed)
    assert token not in log and '"status": 201' in log

    assert path.read_bytes() != before
    direct = JsonBackend(path=path)
    try:
        assert direct.quantity("main", "SAW1") == 7
        entries = direct.history("SAW1")
        assert len(entries) == 2
        assert {(e.actor, e.source) for e in entries} == {("owner", "api")}
    finally:
        direct.close()


@pytest.fixture(scope="module")
def kafka_broker() -> Iterator[Any]:
    from broker import broker_or_skip

    with broker_or_skip() as running:
        yield running


@pytest.mark.slow
def test_a_kafka_server_accepts_then_the_worker_applies(kafka_broker: Any) -> None:
    from kafka_stack import StackPool

    pool = StackPool(kafka_broker, ahead=0)
    stack = pool.make_stack()
    server = None
    try:
        with PostgresBackend(stack.url, actor="setup") as setup:
            setup.add_user("admin", ADMIN_PASSWORD, "admin")
            token = setup.create_token("admin").secret
            setup.add_product("Kettle", "20", sku="K1", quantity=5)
        server = ApiServer(
            {
                "INV_BACKEND": "kafka",
                "INV_DATABASE_URL": stack.url,
                "INV_KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap,
                "INV_KAFKA_TOPIC": stack.topic,
                "INV_KAFKA_PARTITIONS": str(pool.partitions),
            }
        )
        auth = {"Authorization": f"Bearer {token}"}
        key = str(uuid.uuid4())
        with httpx.Client(base_url=server.url, headers=auth, timeout=30) as client:
            accepted = client.post(
                "/api/v1/stores/main/inventory/K1/movements",
                json={"change": -2, "reason": "sale"},
                headers={"Idempotency-Key": key},
            )
            assert accepted.status_code == 201, accepted.text
            pending = accepted.json()
            assert (pending["id"], pending["quantity_after"], pending["delta"]) == (0, None, -2)
            assert pending["event_id"] == key
            # The README's recipe for waiting on a published change: the same request
            # with its key and --wait blocks until a worker has applied it, once.
            with pool.kafka_backend(stack.url, stack.topic, wait=True) as waiting:
                applied_now = waiting.adjust("main", "K1", -2, "sale", event_id=key)
            assert applied_now.quantity_after == 3
            quantity = client.get("/api/v1/stores/main/inventory/K1").json()["quantity"]
            assert quantity == 3
            entries = client.get("/api/v1/history", params={"sku": "K1"}).json()
        applied = [e for e in entries if e["event_id"] == pending["event_id"]]
        assert [(e["actor"], e["source"], e["quantity_after"]) for e in applied] == [
            ("admin", "api", 3)
        ]
    finally:
        if server is not None:
            server.stop()
        stack.stop()
        pool.close()


# -- 5. The http backend's exit codes through the CLI ---------------------------------


@contextlib.contextmanager
def threaded_server(app: Any) -> Iterator[str]:
    """Uvicorn serving `app` on a free port from a thread of this process; its URL."""
    import uvicorn

    class Signalling(uvicorn.Server):
        """Sets `ready` once started (or once starting failed)."""

        ready = threading.Event()

        async def startup(self, sockets: Any = None) -> None:
            try:
                await super().startup(sockets=sockets)
            finally:
                self.ready.set()

    port = free_port()
    server = Signalling(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    server.ready.wait(20)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextlib.contextmanager
def json_terminal(path: Path, limit: str = LIMITLESS) -> Iterator[tuple[str, str, str]]:
    """A server over a json inventory in a thread: its URL, an admin's token, and the
    token of a clerk of store main."""
    admin, clerk = json_inventory(path, ("owner", "admin", None), ("till", "clerk", ["main"]))
    backend = JsonBackend(path=path)
    app = create_app(
        Settings(backend="json", file=path, rate_limit_token=limit, rate_limit_anonymous=LIMITLESS),
        backend,
    )
    try:
        with threaded_server(app) as url:
            yield url, admin, clerk
    finally:
        backend.close()


def test_http_backend_exit_codes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO")
    with json_terminal(tmp_path / "inventory.json") as (url, admin, clerk):

        def inv(*args: str, token: str = admin, at: str = url) -> Any:
            return run_cli(args, env={"INV_BACKEND": "http", "INV_URL": at, "INV_TOKEN": token})

        made = inv("add", "Rope", "--price", "3", "--sku", "ROPE", "--qty", "2")
        assert made.returncode == 0, made.stderr

        wrong = "inv_" + "x" * 43
        bad_token = inv("list", token=wrong)
        assert bad_token.returncode == 77, bad_token.stderr
        assert bad_token.stderr.startswith("Error: ")

        clerk_adds = inv("store", "add", "west", token=clerk)
        assert clerk_adds.returncode == 77, clerk_adds.stderr
        clerk_moves = inv("update", "ROPE", "--change", "-1", token=clerk)
        assert clerk_moves.returncode == 0, clerk_moves.stderr

        short = inv("update", "ROPE", "--change", "-5")
        assert short.returncode == 1
        assert short.stderr == "Error: not enough ROPE at main: 1 on hand, 5 asked for\n"

        unreachable = inv("update", "ROPE", "--change", "1", at=f"http://127.0.0.1:{free_port()}")
        assert unreachable.returncode == 75, unreachable.stderr
        assert "retry" in unreachable.stderr and "Traceback" not in unreachable.stderr

    _never_shown(admin, made, short, unreachable)
    _never_shown(clerk, clerk_adds, clerk_moves)
    _never_shown(wrong, bad_token)
    assert '"user": "till"' in caplog.text and '"status": 403' in caplog.text  # the access log
    for secret in (admin, clerk, wrong):
        assert secret not in caplog.text


def test_http_backend_over_the_limit_exits_75(tmp_path: Path) -> None:
    with json_terminal(tmp_path / "inventory.json", limit="3/hour") as (url, admin, _):
        env = {"INV_BACKEND": "http", "INV_URL": url, "INV_TOKEN": admin}
        results = []
        for _ in range(6):
            results.append(run_cli(["store", "list"], env=env))
            if results[-1].returncode != 0:
                break
    codes = [r.returncode for r in results]
    assert codes[0] == 0 and codes[-1] == 75, [(r.returncode, r.stderr) for r in results]
    assert set(codes[:-1]) == {0}
    assert re.search(r"retry in \d+ s", results[-1].stderr), results[-1].stderr
    _never_shown(admin, *results)
