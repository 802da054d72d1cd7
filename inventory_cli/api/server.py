"""`inv serve`: the FastAPI application over one backend, and how Uvicorn runs it.

`create_app(settings)` opens the backend the settings select (json, postgres, kafka)
once; every request works on a view of it acting as the authenticated user
(`Backend.acting_as`).  The perimeter (allow-list, body size, token, rate limit, access
log, metrics) is `perimeter.Perimeter`; the resources are `routes`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import RedirectResponse, Response
from starlette.types import Scope

from backends import Backend, InventoryError, get_backend_class, values
from backends.settings import Settings, secret

from .limits import RateLimits
from .metrics import Metrics
from .perimeter import BodyTooLarge, Perimeter
from .problems import MEDIA_TYPE, PROBLEM_SCHEMA, error_response, problem
from .routes import router
from .schemas import Health, Ready

__all__ = ["Server", "create_app", "serve"]

log = logging.getLogger("inv.api")

#: The original design's paths, and where they live now.
LEGACY_PATHS = {
    "/api/auth": "/api/v1/auth/login",
    "/api/inventory": "/api/v1/inventory",
    "/api/inventorystore": "/api/v1/inventory",
    "/api/stores": "/api/v1/stores",
}


#: Requests a server process works on at once (the rest wait their turn in order).
THREADS = 10


class Server:
    """What the application holds for its lifetime."""

    def __init__(self, settings: Settings, backend: Backend, *, access_log: bool = True) -> None:
        self.settings = settings
        self.backend = backend
        self.limits = RateLimits(
            settings.rate_limit_anonymous,
            settings.rate_limit_token,
            secret(settings.redis_url),
        )
        self.networks = values.networks(settings.allowed_networks)
        self.metrics = Metrics()
        self.access_log = access_log


def open_backend(settings: Settings) -> Backend:
    if settings.backend == "http":
        from backends import ConfigurationError

        raise ConfigurationError(
            "inv serve needs a storage backend (json, postgres, kafka), not http"
        )
    cls = get_backend_class(settings.backend)
    return cls.from_settings(settings, actor="api", source="api")


def create_app(settings: Settings, backend: Backend | None = None) -> FastAPI:
    """The application.  `backend`: one already open (tests); else opened from settings
    and closed when the application stops."""
    owned = backend is None
    server = Server(settings, backend if backend is not None else open_backend(settings))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import anyio.to_thread

        # Requests run in threads; no more at once than the database pool keeps
        # connections for, so none is opened and closed per request.
        anyio.to_thread.current_default_thread_limiter().total_tokens = THREADS
        yield
        if owned:
            server.backend.close()

    errors: dict[int | str, dict[str, Any]] = {
        status: {
            "description": description,
            "content": {MEDIA_TYPE: {"schema": PROBLEM_SCHEMA}},
        }
        for status, description in (
            (401, "No credentials, or a bad, expired or revoked token"),
            (403, "The user may not do this, or the address is not allowed"),
            (404, "No such product, store, user or token"),
            (409, "Already exists, not enough stock, or an idempotency key reused"),
            (412, "If-Match: the stock level has changed since its ETag"),
            (413, "The body is too large"),
            (422, "A bad value, named in `field`; bad rows listed in `problems`"),
            (429, "Over the rate limit; see Retry-After"),
            (503, "A service behind the server is down; see Retry-After"),
        )
    }
    app = FastAPI(
        title="inv",
        summary="Inventory for retail: the CLI's contract over HTTP.",
        version=_version(),
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
        lifespan=lifespan,
        responses=errors,
    )
    app.state.server = server
    app.include_router(router)

    @app.exception_handler(InventoryError)
    async def inventory_error(request: Request, exc: InventoryError) -> Response:
        return error_response(exc, if_match="if-match" in request.headers)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        field = ".".join(where) or "body"
        message = str(first.get("msg", "is not valid"))
        return problem(
            422,
            "Bad value",
            f"{field}: {message}",
            kind="https://inv.invalid/problems/validation",
            field=field,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else "error"
        headers = dict(exc.headers or {})
        if exc.status_code == 400:
            # FastAPI's answer to a body it cannot even decode (not UTF-8): a bad value,
            # as any other body that is not JSON.
            return problem(
                422,
                "Bad value",
                "body: is not JSON text (UTF-8)",
                kind="https://inv.invalid/problems/validation",
                field="body",
            )
        if exc.status_code == 405:
            # Every method the path has, not only those of the first route that matched.
            headers["Allow"] = ", ".join(_methods(app, request.scope)) or headers.get("Allow", "")
        return problem(exc.status_code, detail, detail, headers=headers)

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, exc: BodyTooLarge) -> Response:
        return problem(413, "Too large", "the body is too large")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return problem(500, "Internal error", "the server failed; the log has the details")

    @app.get(
        "/healthz",
        tags=["health"],
        summary="Liveness: the process answers",
        response_model=Health,
    )
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["health"],
        summary="Readiness: the backend's status",
        response_model=Ready,
    )
    def readyz() -> Response:
        import json

        try:
            report = server.backend.status()
        except InventoryError as exc:
            return error_response(exc)
        # Ready when what serves requests answers: the database, and the broker that
        # takes writes.  A replica or the cache down is slower, not unready.
        ready = all(
            bool(part.get("ok", True))
            for name, part in report.items()
            if name in ("database", "kafka") and isinstance(part, dict)
        )
        body = json.dumps(
            {"status": "ready" if ready else "not ready", "backend": report}, default=str
        )
        return Response(
            body,
            status_code=200 if ready else 503,
            media_type="application/json",
            headers=None if ready else {"Retry-After": "5"},
        )

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics", include_in_schema=False)
    def metrics() -> Response:
        data, content_type = server.metrics.exposition()
        return Response(data, media_type=content_type)

    for old, new in LEGACY_PATHS.items():
        app.add_api_route(
            old,
            _redirect(new),
            methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            include_in_schema=False,
        )
    return Perimeter(app, server)  # type: ignore[return-value]


def _methods(app: FastAPI, scope: Scope) -> list[str]:
    """The methods of the resource a path names: those of every route whose template
    matches it, the most specific template only (a SKU may hold `/`, so
    `.../inventory/{sku}` matches `.../inventory/H1/movements` too, less literally)."""
    import re

    from starlette.routing import Match

    found: dict[int, set[str]] = {}
    for route in [*app.routes, *router.routes]:
        methods = getattr(route, "methods", None)
        if methods and route.matches(scope)[0] != Match.NONE:
            literal = len(re.sub(r"{[^}]*}", "", getattr(route, "path", "")))
            found.setdefault(literal, set()).update(methods)
    return sorted(found[max(found)]) if found else []


def _redirect(target: str) -> Any:
    async def redirect(request: Request) -> RedirectResponse:
        query = request.url.query
        return RedirectResponse(target + (f"?{query}" if query else ""), status_code=308)

    return redirect


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("inv")
    except PackageNotFoundError:
        return "0"


def app_from_environment() -> Any:
    """The application from `INV_*` settings: what each Uvicorn worker process builds."""
    from ..settings import load_settings

    return create_app(load_settings())


def serve(
    settings: Settings,
    *,
    host: str,
    port: int,
    workers: int,
    forwarded_allow_ips: str | None,
    log_level: str = "info",
) -> None:
    """Run Uvicorn.  With several workers each process builds its own application from
    the environment (the CLI has put its flags there)."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "proxy_headers": True,
        "forwarded_allow_ips": forwarded_allow_ips or "127.0.0.1",
        "access_log": False,  # ours is one structured line per request, without secrets
        "log_level": log_level,
        "server_header": False,
    }
    if workers > 1:
        os.environ.setdefault("INV_BACKEND", settings.backend)
        os.environ.setdefault("INV_FILE", str(settings.file))
        uvicorn.run(
            "inventory_cli.api.server:app_from_environment",
            factory=True,
            workers=workers,
            **options,
        )
    else:
        uvicorn.run(create_app(settings), **options)
