"""Real `inv serve` processes for the tests: started on a free port, stopped at the end.

`ApiServer` runs `python -m inventory_cli serve` with the environment given (its log in
a file, for the tests that read the access log); `PostgresSlot` is a server over its own
PostgreSQL database with an admin user `tester` and a token, which `reset()` brings
back to a fresh inventory (store `main` only) without restarting the server, so the
conformance suite can run over HTTP at the cost of a TRUNCATE per test.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psycopg
from broker import free_port

__all__ = ["ADMIN_PASSWORD", "ApiServer", "PostgresSlot", "slot"]

ADMIN_PASSWORD = "tester-password"
#: So the suite never meets the limits it does not test.
UNLIMITED = "1000000/minute"


class ApiServer:
    """One `inv serve` process."""

    def __init__(
        self,
        env: dict[str, str],
        *,
        args: tuple[str, ...] = (),
        cwd: Path | None = None,
        ready_status: int = 200,
    ):
        """`ready_status`: what /healthz answers once the server is up (403 from a server
        whose allow-list leaves this client out)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(tempfile.mkstemp(prefix="inv-serve-", suffix=".log")[1])
        self.env = {
            **os.environ,
            "INV_RATE_LIMIT_TOKEN": UNLIMITED,
            "INV_RATE_LIMIT_ANONYMOUS": UNLIMITED,
            **env,
        }
        self.args = args
        self.cwd = cwd
        self.ready_status = ready_status
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "inventory_cli",
                    "serve",
                    "--port",
                    str(self.port),
                    *self.args,
                ],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
            )
        atexit.register(self.stop)
        deadline = time.monotonic() + 60
        # One client for every poll: a new one per poll (`httpx.get`) costs ~50 ms of CPU
        # (its TLS context), as much as the sleep, taken from the server starting up.
        with httpx.Client(timeout=1) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"inv serve exited {self.process.returncode}:\n{self.log()}")
                try:
                    if client.get(self.url + "/healthz").status_code == self.ready_status:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.05)  # polling a process that is starting up
        raise RuntimeError(f"inv serve did not answer within 60 s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class PostgresSlot:
    """A server over a database of its own, with admin `tester` and its token."""

    def __init__(self) -> None:
        from pg import fresh_database

        from backends.postgres import PostgresBackend

        self.database_url = fresh_database()
        with PostgresBackend(self.database_url, actor="tester") as setup:
            setup.add_user("tester", ADMIN_PASSWORD, "admin")
            issued = setup.create_token("tester", name="tests")
        self.token = issued.secret
        self.token_id = issued.token.id
        self.server = ApiServer({"INV_BACKEND": "postgres", "INV_DATABASE_URL": self.database_url})
        self.url = self.server.url

    def reset(self) -> None:
        """Back to store `main` only and user `tester` only, the server still running:
        what `init` leaves, written by hand in one round trip (a TRUNCATE, not a new
        database, so the server's pooled connections stay good)."""
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            conn.execute(
                """
                SET session_replication_role = replica;  -- past the audit log's guard
                TRUNCATE stores, products, inventory, audit_log, applied_events,
                    rejected_events RESTART IDENTITY CASCADE;
                SET session_replication_role = origin;
                ALTER SEQUENCE product_sku_seq RESTART;
                ALTER SEQUENCE stock_version_seq RESTART;
                ALTER SEQUENCE audit_log_id_seq RESTART;
                DELETE FROM users WHERE username <> 'tester';
                UPDATE users SET role = 'admin', stores = NULL, disabled = false
                    WHERE username = 'tester';
                INSERT INTO stores (code, name) VALUES ('main', 'Main store');
                INSERT INTO audit_log (actor, source, event_id, store, action, reason)
                    VALUES ('tester', 'cli', gen_random_uuid()::text, 'main',
                            'store.create', 'init');
                """
            )
            conn.execute("DELETE FROM api_tokens WHERE id <> %s", (self.token_id,))

    def backend(self):  # type: ignore[no-untyped-def]
        from backends.http import HttpBackend

        return HttpBackend(self.url, self.token, timeout=30)


_SLOTS: list[PostgresSlot] = []


def slot(index: int) -> PostgresSlot:
    """The `index`th server of this test process, started on first use."""
    while len(_SLOTS) <= index:
        _SLOTS.append(PostgresSlot())
    return _SLOTS[index]
