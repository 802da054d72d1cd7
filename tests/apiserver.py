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
import threading
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
        self.process = subprocess.Popen(
            [sys.executable, "-m", "inventory_cli", "serve", "--port", str(self.port), *self.args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=self.cwd,
        )
        atexit.register(self.stop)
        listening = threading.Event()
        threading.Thread(target=self._copy_log, args=(listening,), daemon=True).start()
        # Uvicorn says so once its socket listens (with several workers, the parent's
        # socket: a request waits there until a worker takes it).  The thread also sets
        # the event when the process ends, so a failed start is seen at once.
        if not listening.wait(60):
            raise RuntimeError(f"inv serve did not listen within 60 s:\n{self.log()}")
        if self.process.poll() is not None:
            self.process.wait()
            raise RuntimeError(f"inv serve exited {self.process.returncode}:\n{self.log()}")
        answer = httpx.get(self.url + "/healthz", timeout=30)
        assert answer.status_code == self.ready_status, (answer.status_code, self.log())

    def _copy_log(self, listening: threading.Event) -> None:
        """The server's output into its log file, line by line, for its whole life."""
        assert self.process is not None and self.process.stdout is not None
        with self.log_path.open("ab") as log:
            for line in self.process.stdout:
                log.write(line)
                log.flush()
                if b"Uvicorn running on" in line:
                    listening.set()
        listening.set()

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
