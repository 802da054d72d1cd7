"""The `http` backend: every `Backend` call as a request to `inv serve`, with `httpx`.

`INV_BACKEND=http INV_URL=https://inv.example.com INV_TOKEN=...`: a store terminal or a
script runs every `inv` command against a server, holding a token instead of database
credentials.  One `httpx.Client` per backend (keep-alive), timeouts from
`INV_HTTP_TIMEOUT`.  Refusals come back as the server's problem documents and are raised
as the same error classes (`backends.problems`), so the exit codes are the same as on
any backend: 401/403 77, 409/412/422 1, 429/503 and an unreachable server 75.

Every mutation carries an `Idempotency-Key` (the caller's, else a fresh UUID), so a
request whose answer was lost is sent again safely.  The token is a secret: it is never
printed, logged or put in an error message.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Self
from urllib.parse import quote, urlsplit

from . import auth, values, wire
from .auth import IssuedToken, Token, User
from .base import Backend, Progress
from .batch import BatchResult, BatchRow, OnError
from .errors import (
    BackendUnavailable,
    ConfigurationError,
    InventoryError,
    NotFound,
    PermissionDenied,
    RefusedError,
    Unauthenticated,
    ValidationError,
)
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
from .problems import error_from_problem
from .requests import StockChange
from .settings import Settings, secret

__all__ = ["HttpBackend"]

#: Attempts for a request that could not reach the server (each mutation has its key,
#: so a second attempt is never applied twice).
ATTEMPTS = 3


def _segment(value: Any) -> str:
    """A path segment: every character but letters, digits, `-_~` escaped (a SKU may
    hold `/`, `?`, `%`, `..`)."""
    return quote(str(value), safe="-_~").replace(".", "%2E") or "%20"


class HttpBackend(Backend):
    """A client of `inv serve`; see the module docstring."""

    name = "http"

    def __init__(
        self,
        url: str,
        token: str | None,
        *,
        timeout: float = 30.0,
        actor: str = "unknown",
        source: str = "cli",
    ) -> None:
        import httpx

        super().__init__(actor=actor, source=source)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError(
                f"INV_URL: {url!r} is not an http(s) URL (https://inv.example.com)"
            )
        self.url = url.rstrip("/")
        headers = {"Accept": "application/json", "User-Agent": "inv-http-backend"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._client = httpx.Client(
            base_url=self.url + "/api/v1",
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            follow_redirects=False,
        )
        self._me: User | None = None

    @classmethod
    def from_settings(cls, settings: Settings, *, actor: str, source: str) -> Self:
        if not settings.url:
            raise ConfigurationError(
                "the http backend needs a server: set INV_URL (https://inv.example.com) "
                "and INV_TOKEN (inv token create prints one)"
            )
        return cls(
            settings.url,
            secret(settings.token),
            timeout=settings.http_timeout,
            actor=actor,
            source=source,
        )

    # The server names the authenticated user and `api` in every entry it writes.
    @property
    def actor(self) -> str:
        return self.me().username

    @actor.setter
    def actor(self, value: str) -> None:
        pass  # the server decides: the token's user

    @property
    def source(self) -> str:
        return "api"

    @source.setter
    def source(self, value: str) -> None:
        pass

    def me(self) -> User:
        """The user the token acts for (asked once)."""
        if self._me is None:
            self._me = wire.user_from_json(self._call("GET", "/auth/me"))
        return self._me

    def describe(self) -> str:
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path}"

    def close(self) -> None:
        self._client.close()

    # -- one request ----------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, Any] | None = None,
        key: str | None = None,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
    ) -> Any:
        import httpx

        sent_headers = dict(headers or {})
        if key is not None:
            sent_headers["Idempotency-Key"] = key
        if body is not None:
            content = json.dumps(body, default=wire.plain, ensure_ascii=False).encode(
                "utf-8", "surrogatepass"
            )
            sent_headers["Content-Type"] = "application/json"
        query = {k: wire.plain(v) for k, v in (params or {}).items() if v is not None}
        for attempt in range(1, ATTEMPTS + 1):
            try:
                response = self._client.request(
                    method, path, content=content, params=query, headers=sent_headers
                )
            except httpx.InvalidURL as exc:
                raise ValidationError(f"cannot send this request: {exc}") from None
            except httpx.TransportError as exc:
                if attempt == ATTEMPTS or (method != "GET" and key is None):
                    raise BackendUnavailable(
                        f"cannot reach the inv server at {self.describe()} "
                        f"({type(exc).__name__}); retry later"
                    ) from None
                time.sleep(0.2 * attempt)
                continue
            if response.status_code < 400:
                self._replayed = response.headers.get("Idempotent-Replayed") == "true"
                if response.status_code == 204 or not response.content:
                    return None
                return response.json()
            raise self._error(response)
        raise AssertionError("unreachable")

    def _error(self, response: Any) -> InventoryError:
        status = response.status_code
        body: Any = None
        with contextlib.suppress(ValueError):
            body = response.json()
        if isinstance(body, dict):
            error = error_from_problem(body)
            if status == 429:
                wait = response.headers.get("Retry-After", "a few")
                return BackendUnavailable(
                    f"the inv server refused: over the rate limit; retry in {wait} s"
                )
            if error is not None:
                if isinstance(error, BackendUnavailable):
                    wait = response.headers.get("Retry-After")
                    if wait:
                        error.args = (f"{error}; retry in {wait} s",)
                return error
            detail = str(body.get("detail") or body.get("title") or "")
        else:
            detail = ""
        detail = detail or f"HTTP {status}"
        if status == 401:
            return Unauthenticated(f"the inv server refused the token: {detail}")
        if status == 403:
            return PermissionDenied(detail)
        if status == 404:
            return NotFound(detail)
        if status in (429, 502, 503, 504):
            wait = response.headers.get("Retry-After", "a few")
            return BackendUnavailable(
                f"the inv server is unavailable ({detail}); retry in {wait} s"
            )
        if status >= 500:
            return BackendUnavailable(f"the inv server failed ({detail}); retry later")
        return RefusedError(detail)

    @staticmethod
    def _key(event_id: str | None) -> tuple[str, bool]:
        """The key to send, and whether it is the caller's (a replay of our own retry is
        not news to the caller)."""
        if event_id is not None:
            return values.idempotency_key(event_id, field="idempotency_key"), True
        return str(uuid.uuid4()), False

    # -- set-up ---------------------------------------------------------------------

    def init(self, *, record: bool = True) -> bool:
        return bool(self._call("POST", "/init", params={"record": record})["created"])

    def upgrade(self) -> tuple[str | None, str]:
        data = self._call("POST", "/db/upgrade")
        return data["before"], data["after"]

    def status(self) -> dict[str, Any]:
        report = self._call("GET", "/status")
        return {
            "backend": self.name,
            "where": self.describe(),
            "ok": bool(report.get("ok")),
            "server": report,
        }

    # -- stores ---------------------------------------------------------------------

    def add_store(
        self, code: str, name: str | None = None, *, event_id: str | None = None
    ) -> Store:
        key, mine = self._key(event_id)
        data = self._call("POST", "/stores", body={"code": code, "name": name}, key=key)
        return wire.store_from_json(data, replayed=mine and self._replayed)

    def remove_store(
        self, code: str, *, force: bool = False, event_id: str | None = None
    ) -> list[Movement]:
        key, mine = self._key(event_id)
        data = self._call("DELETE", f"/stores/{_segment(code)}", params={"force": force}, key=key)
        return self._movements(data["movements"], mine)

    def stores(self) -> list[Store]:
        return [wire.store_from_json(s) for s in self._call("GET", "/stores")]

    # -- catalog --------------------------------------------------------------------

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
        key, mine = self._key(event_id)
        body = {
            "name": name,
            "price": price,
            "sku": sku,
            "store": store,
            "quantity": quantity,
            "unit": unit,
            "category": category,
            "reorder_level": reorder_level,
        }
        data = self._call("POST", "/products", body=body, key=key)
        return wire.product_from_json(data, replayed=mine and self._replayed)

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
        key, mine = self._key(event_id)
        given = {
            "name": name,
            "price": price,
            "unit": unit,
            "category": category,
            "reorder_level": reorder_level,
        }
        body = {k: v for k, v in given.items() if v is not None}
        data = self._call("PATCH", f"/products/{_segment(sku)}", body=body, key=key)
        return wire.edited_from_json(data, replayed=mine and self._replayed)

    def remove_product(
        self,
        sku: str,
        *,
        store: str | None = None,
        force: bool = False,
        event_id: str | None = None,
    ) -> list[Movement]:
        key, mine = self._key(event_id)
        data = self._call(
            "DELETE",
            f"/products/{_segment(sku)}",
            params={"store": store, "force": force},
            key=key,
        )
        return self._movements(data["movements"], mine)

    def get(self, sku: str) -> Product:
        return wire.product_from_json(self._call("GET", f"/products/{_segment(sku)}"))

    def quantity(self, store: str, sku: str) -> int:
        data = self._call("GET", f"/stores/{_segment(store)}/inventory/{_segment(sku)}")
        return int(data["quantity"])

    # -- stock ----------------------------------------------------------------------

    def _change_stock(self, change: StockChange) -> Movement:
        key, mine = self._key(change.event_id)
        body: dict[str, Any] = {"reason": change.reason, "expect": change.expect}
        if change.quantity is not None:
            body["set"] = change.quantity
        else:
            body["change"] = change.delta
        data = self._call(
            "POST",
            f"/stores/{_segment(change.store)}/inventory/{_segment(change.sku)}/movements",
            body=body,
            key=key,
        )
        return wire.movement_from_json(data, replayed=mine and self._replayed)

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
        key, mine = self._key(event_id)
        body = {"sku": sku, "from": from_store, "to": to_store, "quantity": quantity}
        if reason is not None:
            body["reason"] = reason
        data = self._call("POST", "/transfers", body=body, key=key)
        replayed = mine and self._replayed
        return (
            wire.movement_from_json(data["out"], replayed=replayed),
            wire.movement_from_json(data["in"], replayed=replayed),
        )

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
        key, mine = self._key(event_id)
        body = {
            "rows": [wire.batch_row_json(r) for r in rows],
            "on_error": on_error,
            "dry_run": dry_run,
            "default_store": default_store,
        }
        data = self._call("POST", "/batches", body=body, key=key)
        if progress is not None:
            progress(len(rows))
        return wire.batch_result_from_json(data, replayed=mine and self._replayed)

    # -- reads ----------------------------------------------------------------------

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
        params = {
            "low_stock": low_stock,
            "search": search,
            "category": category,
            "sort": sort,
            "descending": descending,
            "limit": limit,
            "offset": offset,
        }
        path = "/inventory" if store is None else f"/stores/{_segment(store)}/inventory"
        return [wire.item_from_json(i) for i in self._call("GET", path, params=params)]

    def history(
        self,
        sku: str | None = None,
        *,
        store: str | None = None,
        since: datetime | None = None,
        limit: int | None = None,
    ) -> list[Movement]:
        params = {"sku": sku, "store": store, "since": since, "limit": limit}
        return [wire.movement_from_json(m) for m in self._call("GET", "/history", params=params)]

    def report_value(self, *, store: str | None = None) -> list[StoreValue]:
        rows = self._call("GET", "/reports/value", params={"store": store})
        return [wire.value_from_json(r) for r in rows]

    def report_low_stock(self, *, store: str | None = None) -> list[Item]:
        rows = self._call("GET", "/reports/low-stock", params={"store": store})
        return [wire.item_from_json(r) for r in rows]

    def report_movements(
        self,
        *,
        store: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[MovementSummary]:
        params = {"store": store, "since": since, "until": until}
        rows = self._call("GET", "/reports/movements", params=params)
        return [wire.summary_from_json(r) for r in rows]

    # -- operations -----------------------------------------------------------------

    def prune_audit(self, older_than: datetime) -> list[str]:
        data = self._call("POST", "/audit/prune", body={"older_than": older_than})
        return list(data["dropped"])

    def verify_audit(self) -> tuple[int, list[str]]:
        data = self._call("POST", "/audit/verify")
        return int(data["checked"]), list(data["problems"])

    def export_state(self) -> Snapshot:
        return wire.snapshot_from_json(self._call("GET", "/snapshot"))

    def import_state(self, snapshot: Snapshot, *, progress: Progress | None = None) -> None:
        self._call("POST", "/snapshot", body=wire.snapshot_json(snapshot))
        if progress is not None:
            progress(len(snapshot.history))

    # -- users and tokens -----------------------------------------------------------

    def add_user(
        self,
        username: str,
        password: str,
        role: str,
        *,
        stores: Sequence[str] | None = None,
    ) -> User:
        body = {
            "username": username,
            "password": password,
            "role": role,
            "stores": list(stores) if stores is not None else None,
        }
        return wire.user_from_json(self._call("POST", "/users", body=body))

    def users(self) -> list[User]:
        return [wire.user_from_json(u) for u in self._call("GET", "/users")]

    def get_user(self, username: str) -> User:
        return wire.user_from_json(self._call("GET", f"/users/{_segment(username)}"))

    def update_user(
        self,
        username: str,
        *,
        password: str | None = None,
        role: str | None = None,
        stores: Sequence[str] | None = None,
        disabled: bool | None = None,
    ) -> User:
        given = {
            "password": password,
            "role": role,
            "stores": list(stores) if stores is not None else None,
            "disabled": disabled,
        }
        body = {k: v for k, v in given.items() if v is not None}
        return wire.user_from_json(self._call("PATCH", f"/users/{_segment(username)}", body=body))

    def remove_user(self, username: str) -> None:
        self._call("DELETE", f"/users/{_segment(username)}")

    def login(self, username: str, password: str) -> User:
        data = self._call("POST", "/auth/login", body={"username": username, "password": password})
        return wire.user_from_json(data["user"])

    def create_token(
        self,
        username: str,
        *,
        name: str | None = None,
        expires_at: datetime | None = None,
    ) -> IssuedToken:
        body = {
            "username": username,
            "name": name,
            "expires": None,
            "expires_at": expires_at,
        }
        data = self._call("POST", "/tokens", body=body)
        return IssuedToken(wire.token_from_json(data), data["token"])

    def tokens(self, username: str | None = None) -> list[Token]:
        rows = self._call("GET", "/tokens", params={"username": username})
        return [wire.token_from_json(t) for t in rows]

    def revoke_token(self, token_id: int) -> Token:
        return wire.token_from_json(self._call("DELETE", f"/tokens/{_segment(token_id)}"))

    def authenticate(self, secret: str) -> User:
        if not auth.looks_like_token(secret):
            raise auth.bad_token()
        data = self._call("GET", "/auth/me", headers={"Authorization": f"Bearer {secret}"})
        return wire.user_from_json(data)

    # -- helpers --------------------------------------------------------------------

    #: Whether the last answer said it was a replay (`Idempotent-Replayed`).
    _replayed = False

    def _movements(self, entries: list[dict[str, Any]], mine: bool) -> list[Movement]:
        replayed = mine and self._replayed
        return [wire.movement_from_json(m, replayed=replayed) for m in entries]
