"""The raw limit of `inv serve`'s stack for bench/api.py: a bare FastAPI app answering a
constant, run by the same `inventory_cli.api.server.serve` with the same options.

`serve` builds Uvicorn's options (proxy headers, no access log, no server header,
workers, ...) and calls `uvicorn.run`; here `uvicorn.run` is swapped for one that runs
this app instead of `create_app(settings)`, so the options can never drift from what
`inv serve` uses.  No backend, no perimeter (token, rate limit, access log, metrics), no
routes but these: sync handlers, so each request makes the same thread-pool hop as
inv's handlers do.

    python bench/bare_app.py --port PORT [--host 127.0.0.1] [--workers 1]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from fastapi import FastAPI

app = FastAPI()


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/c")
def constant() -> dict[str, int]:
    return {"ok": 1}


@app.post("/c", status_code=201)
def constant_post() -> dict[str, int]:
    return {"ok": 1}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)

    import uvicorn

    from backends.settings import Settings
    from inventory_cli.api import server

    real_run = uvicorn.run

    def run(target: Any, **options: Any) -> None:
        if options.pop("workers", 1) > 1:  # each worker imports the app by name
            options.pop("factory", None)
            real_run(
                "bare_app:app",
                workers=args.workers,
                app_dir=str(Path(__file__).resolve().parent),
                **options,
            )
        else:
            real_run(app, **options)

    uvicorn.run = run  # type: ignore[assignment]
    server.serve(
        Settings.model_validate({}),
        host=args.host,
        port=args.port,
        workers=args.workers,
        forwarded_allow_ips=None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
