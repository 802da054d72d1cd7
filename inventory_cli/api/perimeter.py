"""What every request passes before a route sees it, in one ASGI middleware:

1. the IP allow-list (`INV_ALLOWED_NETWORKS`), checked against the client address that
   Uvicorn's proxy headers middleware settled (`--forwarded-allow-ips`): others get 403
   before any credential is read;
2. a body larger than `MAX_BODY` is refused with 413;
3. the bearer token is authenticated (`Backend.authenticate`), and the request counted
   against the token's budget, or the client address's when there is no valid token;
   over the limit is 429 with `Retry-After`; every answer carries `RateLimit-*`;
4. one access-log line and the Prometheus metrics, with the route's template as path.

`/healthz`, `/readyz` and `/metrics` are for load balancers and monitoring: never rate
limited, never authenticated (the allow-list still applies).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool

from backends import BackendUnavailable, InventoryError, Unauthenticated
from backends.auth import User, looks_like_token, token_digest

from .problems import error_response, problem

if TYPE_CHECKING:
    from .server import Server

__all__ = ["Identity", "Perimeter"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

access_log = logging.getLogger("inv.api.access")

#: Paths for infrastructure: no token, no rate limit.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
#: API paths that need no token: logging in, and the API's description.
PUBLIC_PATHS = frozenset(
    {"/api/v1/auth/login", "/api/auth", "/api/v1/openapi.json", "/api/v1/docs"}
)
#: The largest request body (an import of a few hundred thousand rows).
MAX_BODY = 64 * 1024 * 1024


@dataclass(slots=True)
class Identity:
    """Who is calling, as the perimeter found out: a user, or why there is none."""

    user: User | None = None
    error: InventoryError | None = None


class Perimeter:
    def __init__(self, app: ASGIApp, server: Server) -> None:
        self.app = app
        self.server = server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        server = self.server
        client = scope["client"][0] if scope.get("client") else ""
        path: str = scope["path"]
        state: dict[str, Any] = {"status": 500, "user": "-"}
        extra: list[tuple[bytes, bytes]] = []

        async def respond(response: Any) -> None:
            await response(scope, receive, send_wrapped)

        async def send_wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                if extra:
                    message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        try:
            if (
                server.networks
                and not _allowed(client, server.networks)
                and not (path in OPEN_PATHS and _loopback(client))
            ):
                await respond(
                    problem(403, "Not allowed", f"the address {client} is not on the allow-list")
                )
                return
            if _declared_length(scope) > MAX_BODY:
                await respond(
                    problem(413, "Too large", f"the body is larger than {MAX_BODY} bytes")
                )
                return
            if path not in OPEN_PATHS:
                identity, decision = await run_in_threadpool(self._identify, scope, client)
                scope["inv.identity"] = identity
                if identity.user is not None:
                    state["user"] = identity.user.username
                if decision is not None:
                    extra.extend(decision.headers())
                    if not decision.allowed:
                        server.metrics.limited(
                            "token" if identity.user is not None else "anonymous"
                        )
                        await respond(
                            problem(
                                429,
                                "Too many requests",
                                f"over the limit of {decision.limit} requests; "
                                f"retry in {decision.reset} s",
                                headers={"Retry-After": str(max(1, decision.reset))},
                            )
                        )
                        return
                if identity.user is None and _needs_token(path):
                    # Before the body is read: no credentials is 401 whatever was sent.
                    await respond(
                        error_response(
                            identity.error
                            or Unauthenticated(
                                "no credentials: send Authorization: Bearer <token>",
                                presented=False,
                            )
                        )
                    )
                    return
            await self.app(scope, _limited(receive), send_wrapped)
        finally:
            route = scope.get("route") or _route(self.app, scope)
            template = getattr(route, "path", None) or ("-" if path not in OPEN_PATHS else path)
            elapsed = time.perf_counter() - started
            server.metrics.observe(scope["method"], template, state["status"], elapsed)
            if server.access_log:
                access_log.info(
                    json.dumps(
                        {
                            "method": scope["method"],
                            "path": template,
                            "status": state["status"],
                            "ms": round(elapsed * 1000, 2),
                            "user": state["user"],
                            "client": client,
                        }
                    )
                )

    def _identify(self, scope: Scope, client: str) -> tuple[Identity, Any]:
        """Authenticate the bearer token (if any) and count the request."""
        limits = self.server.limits
        secret = _bearer(scope)
        identity = Identity()
        if secret is not None:
            if not looks_like_token(secret):
                identity.error = Unauthenticated(
                    "the token is not valid (expired, revoked or unknown)"
                )
            else:
                try:
                    identity.user = self.server.backend.authenticate(secret)
                except (Unauthenticated, BackendUnavailable) as exc:
                    identity.error = exc
                except InventoryError as exc:
                    identity.error = exc
        if identity.user is not None and secret is not None:
            decision = limits.check("token", token_digest(secret)[:32])
        else:
            decision = limits.check("anonymous", client)
        return identity, decision


def _route(app: Any, scope: Scope) -> Any:
    """The route a request refused here (403, 413, 429) would have reached, so that its
    log line and metrics name the route as those of the requests served do."""
    if scope.get("path") in OPEN_PATHS:
        return None
    from starlette.routing import Match

    probe = dict(scope)  # matching may note things in the scope: not in the request's
    for route in _leaves(getattr(app, "routes", ())):
        try:
            match, _ = route.matches(probe)
        except Exception:  # a path a convertor refuses: no route
            continue
        if match == Match.FULL:
            return route
    return None


def _leaves(routes: Any) -> Any:
    """The routes, those of included routers among them (FastAPI keeps an included
    router as one route whose `original_router` holds its own)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _leaves(inner.routes)
        else:
            yield route


def _allowed(client: str, networks: list[Any]) -> bool:
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return False
    return any(address in network for network in networks)


def _needs_token(path: str) -> bool:
    return path.startswith("/api/") and path not in PUBLIC_PATHS


def _loopback(client: str) -> bool:
    """The machine itself (a container's own healthcheck) may always ask for health."""
    try:
        return ipaddress.ip_address(client).is_loopback
    except ValueError:
        return False


def _declared_length(scope: Scope) -> int:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return 0
    return 0


def _bearer(scope: Scope) -> str | None:
    """The token of `Authorization: Bearer ...`; "" for a malformed header."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return ""
            return str(token.strip())
    return None


def _limited(receive: Receive) -> Receive:
    """Stop a body sent without a length (chunked) once it passes `MAX_BODY`."""
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > MAX_BODY:
                raise BodyTooLarge()
        return message

    return wrapped


class BodyTooLarge(Exception):
    """A chunked body grew past `MAX_BODY`; answered with 413."""
