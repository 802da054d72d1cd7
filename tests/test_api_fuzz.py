"""Schemathesis over `inv serve`'s OpenAPI document: no 5xx, no answer outside the document.

Every operation of `/api/v1/openapi.json` gets bounded examples (the Hypothesis profile's
share of `FUZZ_EXAMPLES`, see `strategies.examples`), valid and invalid, sent to the
application in this process over a PostgreSQL backend of its own, as an admin.  Each
answer is checked for:

- no server error (`not_a_server_error`);
- a status, content type and headers the document lists for the operation;
- a body that matches the documented schema (`response_schema_conformance`: the
  resources' models in `inventory_cli/api/schemas.py`, problem details for errors);
- a request that breaks the schema being refused (`negative_data_rejection`), and an
  undeclared method answered 405 with the right `Allow`.

Left out: `negative_data_rejection` for `POST /imports`, whose body is text (a "wrong
type" for a CSV file is still text, a file with bad rows, which a dry run reports with 200),
and `positive_data_acceptance`.  The document gives types, not the domain's grammar
(a SKU's characters, a price's places, a store that exists), so a request that fits the
schema is often rightly refused with 422 or 404.

The schema is read when the module is imported, from an application whose backend is
never called (a JSON file that is not created): the document is the same for every
backend, which `test_the_document_is_the_servers` checks against the PostgreSQL one.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)
from strategies import examples

from backends.postgres import PostgresBackend
from backends.settings import Settings
from inventory_cli.api.server import create_app

LIMITLESS = "1000000/minute"
#: Examples per operation under the `ci` profile (a quarter of them under `dev`).
FUZZ_EXAMPLES = 20
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    unsupported_method,
    allow_header_conformance,
]


def settings(**given: Any) -> Settings:
    return Settings(rate_limit_token=LIMITLESS, rate_limit_anonymous=LIMITLESS, **given)


def _document() -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="inv-openapi-"))
    app = create_app(settings(backend="json", file=folder / "inventory.json"))
    with TestClient(app) as client:
        document: dict[str, Any] = client.get("/api/v1/openapi.json").json()
    return document


DOCUMENT = _document()
schema = schemathesis.openapi.from_dict(DOCUMENT)


class Fuzzed:
    """The application under test, and a fresh admin token for each example (an example
    may revoke the token it was sent with)."""

    def __init__(self, *, seeded: bool = True, user: str = "fuzzer") -> None:
        from pg import fresh_database

        self.user = user
        self.backend = PostgresBackend(fresh_database(), actor="tester")
        self.backend.add_user(user, "fuzzer-password", "admin")
        if seeded:
            self.backend.add_product("Hammer", "4.50", sku="H1", quantity=5)
        self.app = create_app(settings(backend="postgres"), self.backend)

    def headers(self) -> dict[str, str]:
        token = self.backend.create_token(self.user, name="fuzz").secret
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def fuzzed() -> Iterator[Fuzzed]:
    target = Fuzzed()
    yield target
    target.backend.close()


def test_the_document_is_the_servers(fuzzed: Fuzzed) -> None:
    with TestClient(fuzzed.app) as client:
        served = client.get("/api/v1/openapi.json")
    assert served.status_code == 200
    assert served.json() == DOCUMENT
    assert sum(len(operations) for operations in DOCUMENT["paths"].values()) >= 35


@schema.parametrize()
@hypothesis_settings(
    max_examples=examples(FUZZ_EXAMPLES),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_every_answer_fits_the_document(case: Any, fuzzed: Fuzzed) -> None:
    checks = CHECKS
    if case.operation.path == "/api/v1/imports":
        # The body is text: a "wrong type" for it is still text, a file of bad rows.
        checks = [check for check in CHECKS if check is not negative_data_rejection]
    case.call_and_validate(app=fuzzed.app, headers=fuzzed.headers(), checks=checks)


#: A session of good requests, one or more per operation: (method, path, case data,
#: status).  Random examples rarely get past the domain's checks; these do, so every
#: success is checked against its documented schema too.
SESSION: list[tuple[str, str, dict[str, Any], int]] = [
    ("GET", "/healthz", {}, 200),
    ("GET", "/readyz", {}, 200),
    (
        "POST",
        "/api/v1/auth/login",
        {"body": {"username": "fuzzer", "password": "fuzzer-password"}},
        200,
    ),
    ("GET", "/api/v1/auth/me", {}, 200),
    ("POST", "/api/v1/init", {}, 200),
    ("POST", "/api/v1/db/upgrade", {}, 200),
    ("POST", "/api/v1/stores", {"body": {"code": "north", "name": "North"}}, 201),
    ("GET", "/api/v1/stores", {}, 200),
    (
        "POST",
        "/api/v1/products",
        {"body": {"name": "Saw", "price": "9.99", "sku": "S1", "quantity": 4, "category": "Tools"}},
        201,
    ),
    ("GET", "/api/v1/products", {"query": {"search": "saw"}}, 200),
    ("GET", "/api/v1/products/{sku}", {"path_parameters": {"sku": "S1"}}, 200),
    (
        "PATCH",
        "/api/v1/products/{sku}",
        {"path_parameters": {"sku": "S1"}, "body": {"price": "10.50"}},
        200,
    ),
    ("GET", "/api/v1/inventory", {"query": {"sort": "value", "descending": True}}, 200),
    ("GET", "/api/v1/stores/{store}/inventory", {"path_parameters": {"store": "main"}}, 200),
    (
        "GET",
        "/api/v1/stores/{store}/inventory/{sku}",
        {"path_parameters": {"store": "main", "sku": "S1"}},
        200,
    ),
    (
        "POST",
        "/api/v1/stores/{store}/inventory/{sku}/movements",
        {
            "path_parameters": {"store": "main", "sku": "S1"},
            "body": {"change": -1, "reason": "sale"},
        },
        201,
    ),
    (
        "POST",
        "/api/v1/stores/{store}/inventory/{sku}/movements",
        {"path_parameters": {"store": "main", "sku": "S1"}, "body": {"set": 10}},
        201,
    ),
    (
        "POST",
        "/api/v1/transfers",
        {"body": {"sku": "S1", "from": "main", "to": "north", "quantity": 2}},
        201,
    ),
    (
        "POST",
        "/api/v1/batches",
        {
            "body": {
                "rows": [{"row": 2, "sku": "B1", "name": "Bolt", "price": "0.10", "quantity": 100}]
            }
        },
        200,
    ),
    (
        "POST",
        "/api/v1/imports",
        {"body": "sku,name,price,quantity\nI1,Nail,0.05,3\n", "media_type": "text/csv"},
        200,
    ),
    ("GET", "/api/v1/export", {"query": {"format": "jsonl"}}, 200),
    ("GET", "/api/v1/history", {"query": {"sku": "S1"}}, 200),
    ("GET", "/api/v1/reports/value", {}, 200),
    ("GET", "/api/v1/reports/low-stock", {}, 200),
    ("GET", "/api/v1/reports/movements", {"query": {"since": "2000-01-01T00:00:00Z"}}, 200),
    ("GET", "/api/v1/status", {}, 200),
    (
        "POST",
        "/api/v1/users",
        {
            "body": {
                "username": "till",
                "password": "till-password",
                "role": "clerk",
                "stores": ["main"],
            }
        },
        201,
    ),
    ("GET", "/api/v1/users", {}, 200),
    ("GET", "/api/v1/users/{username}", {"path_parameters": {"username": "till"}}, 200),
    (
        "PATCH",
        "/api/v1/users/{username}",
        {"path_parameters": {"username": "till"}, "body": {"disabled": True}},
        200,
    ),
    ("POST", "/api/v1/tokens", {"body": {"username": "till", "name": "front till"}}, 201),
    ("GET", "/api/v1/tokens", {"query": {"username": "till"}}, 200),
    (
        "DELETE",
        "/api/v1/tokens/{token_id}",
        {"path_parameters": {"token_id": "<till's token>"}},
        200,
    ),
    ("DELETE", "/api/v1/users/{username}", {"path_parameters": {"username": "till"}}, 204),
    ("POST", "/api/v1/audit/verify", {}, 200),
    ("POST", "/api/v1/audit/prune", {"body": {"older_than": "2000-01-01T00:00:00Z"}}, 200),
    ("GET", "/api/v1/snapshot", {}, 200),
    ("POST", "/api/v1/snapshot", {"body": "<the snapshot, into an empty backend>"}, 200),
    (
        "DELETE",
        "/api/v1/products/{sku}",
        {"path_parameters": {"sku": "S1"}, "query": {"store": "north", "force": True}},
        200,
    ),
    ("DELETE", "/api/v1/stores/{store}", {"path_parameters": {"store": "north"}}, 200),
]


@pytest.mark.slow
def test_a_session_of_good_requests_fits_the_document() -> None:
    target, empty = Fuzzed(), Fuzzed(seeded=False, user="migrator")
    try:
        token_id = snapshot = None
        for method, path, data, status in SESSION:
            to = target
            if path.endswith("{token_id}"):
                data = {"path_parameters": {"token_id": str(token_id)}}
            elif path == "/api/v1/snapshot" and method == "POST":
                data, to = {"body": snapshot}, empty
            case = schema[path][method].Case(**data)
            response = case.call_and_validate(app=to.app, headers=to.headers(), checks=CHECKS)
            assert response.status_code == status, (method, path, response.text)
            if path == "/api/v1/tokens" and method == "POST":
                token_id = response.json()["id"]
            if path == "/api/v1/snapshot" and method == "GET":
                snapshot = response.json()
        covered = {(method, path) for method, path, _, _ in SESSION}
        documented = {
            (method.upper(), path)
            for path, operations in DOCUMENT["paths"].items()
            for method in operations
        }
        assert documented == covered
        with TestClient(empty.app) as client:
            moved = client.get("/api/v1/products/S1", headers=empty.headers())
        assert moved.json()["price"] == "10.50"
    finally:
        target.backend.close()
        empty.backend.close()
