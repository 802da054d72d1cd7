"""The HTTP API (`inv serve` over postgres): reads, movements, and the http backend.

Creates its own database (`inv_bench_<random>` on --server, default
postgresql://postgres@127.0.0.1:5432), seeds it (200 stores x 500 products), adds an
admin user `bench` and a token, and starts real server processes on free 127.0.0.1
ports (stopped at the end, the database dropped, also on an error, Ctrl-C or SIGTERM):
`inv serve --workers W` over that database (INV_RATE_LIMIT_TOKEN 100000000/minute, so
nothing is throttled; its access log to a file), and the raw limit of the stack,
`bench/bare_app.py`: a bare FastAPI app answering a constant from a sync route, run by
the same `serve()` with the same Uvicorn options and worker count.

1. `GET /api/v1/stores/{store}/inventory/{sku}` (one stock level; 1,000 seeded stock
   rows in turn) with N keep-alive clients (default 20) for --seconds (default 5) after
   a 1 s warm-up: requests/s, p50, p99, next to `GET /c` of the bare app (the raw limit),
   and next to the backend's own calls in this process (`quantity(store, sku)` in a
   loop, and `authenticate(token)`, which the server runs first on every request).
2. `POST .../movements` with `{"change": 1, "reason": "bench"}`: p99 at a fixed offered
   rate of 200 requests/s for 10 s (open loop: each request scheduled at start + i/200
   and timed from that time, so a slow answer delays the ones behind it and is counted
   for them, as wrk2 does), next to the bare app's `POST /c` at the same rate (the floor
   of the stack and of the generator); then the most it does closed-loop (N clients),
   next to the bare app's and to `adjust` in this process.
3. `inv update SKU --store S --change 1` through the http backend against the postgres
   backend: in process (each backend opened from Settings, `adjust` called --calls
   times, median) and as whole processes (--runs each, alternating, after a warm-up),
   with the ratio http / postgres.  On a busy machine these stop after 10 s and 30 s
   (once 5 of each are timed), so the whole bench stays within about two minutes.

Closed-loop load is `wrk` (one thread, a Lua script for the paths, the token and the
POST body) when it is installed, else a Python asyncio generator in this process (raw
HTTP/1.1 over keep-alive sockets; `--tool python` forces it).  The fixed rate is always
the Python generator (wrk 4 is not constant-rate).  Beside each load the CPU used by the
server (its process tree), PostgreSQL (the bench database's sessions, sampled every
100 ms: a lower bound when sessions come and go), the load generator and the whole
machine is printed in cores, so a saturated generator or a busy machine shows, with the
database sessions opened during the load (pg_stat_database) and the server's CPU per
request.

Always exits 0 unless the work itself fails (a request answered other than 2xx, a server
or `inv update` exiting non-zero).  No PostgreSQL at --server: a message, exit 0.

    .venv/bin/python bench/api.py [--clients 20] [--seconds 5] [--rate 200]
        [--rate-seconds 10] [--runs 20] [--calls 200] [--workers 1] [--stores 200]
        [--products 500] [--tool auto|wrk|python] [--quick]
        [--server postgresql://postgres@127.0.0.1:5432] [--keep-env]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import psycopg
from common import INV, PYTHON, UNUSUAL_ENV
from postgres import BenchFailed, Databases, Figure, print_summary, verdict

from backends import get_backend_class
from backends.settings import Settings

TARGET_GET_RATIO = 0.5  # x the bare route's requests/s, at least
TARGET_POST_P99 = 0.050  # s at TARGET_POST_RATE, at most
TARGET_POST_RATE = 200  # requests/s offered
TARGET_UPDATE_RATIO = 1.2  # http / postgres `inv update`, at most

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432"
HERE = Path(__file__).resolve().parent
UNLIMITED = "100000000/minute"
TOKEN_USER = "bench"
PATHS = 1_000  # stock rows the load goes round
WARM_UP = 1.0  # s of load before each timed one
#: Part 3 stops early (after at least MIN_SAMPLES each) past these, on a busy machine.
CALLS_SECONDS = 10.0
RUNS_SECONDS = 30.0
MIN_SAMPLES = 5


# -- small helpers ---------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of `values` (not empty)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(keep: bool, removed: list[str]) -> dict[str, str]:
    """This process's environment without INV_* (the bench says what inv needs) and,
    unless `keep`, without PYTHONUNBUFFERED/PYTHONDONTWRITEBYTECODE."""
    env = {}
    for key, value in os.environ.items():
        if key.startswith("INV_"):
            continue
        if key in UNUSUAL_ENV and not keep:
            if key not in removed:
                removed.append(key)
            continue
        env[key] = value
    return env


# -- CPU accounting ----------------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants (Uvicorn's workers)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{current}/task"):
                children = Path(f"/proc/{current}/task/{task}/children").read_text()
                todo.extend(int(child) for child in children.split())
    return found


def _cpu(pid: int | str) -> float | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = text[text.rindex(")") + 2 :].split()
    return (int(rest[11]) + int(rest[12])) / TICK


class SessionCpu:
    """CPU of the PostgreSQL sessions on one database, on this machine: the postmaster's
    children whose title names it, sampled every 100 ms from a thread so that sessions
    ending during a load (a pool too small opens and closes them) count too, with what
    they spent starting."""

    def __init__(self, postmaster: int | None, database: str) -> None:
        self.postmaster = postmaster
        self.marker = f" {database} ".encode()
        self.before: dict[int, float] = {}
        self.seen: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sessions(self) -> dict[int, float]:
        if self.postmaster is None:
            return {}
        try:
            children = Path(f"/proc/{self.postmaster}/task/{self.postmaster}/children")
            pids = children.read_text().split()
        except OSError:
            return {}
        found = {}
        for pid in pids:
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            cpu = _cpu(pid) if self.marker in title else None
            if cpu is not None:
                found[int(pid)] = cpu
        return found

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self.seen.update(self.sessions())

    def start(self) -> None:
        self.before = self.sessions()
        self.seen = dict(self.before)
        self._thread.start()

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self.seen.update(self.sessions())
        return sum(cpu - self.before.get(pid, 0.0) for pid, cpu in self.seen.items())


def _machine_busy() -> float:
    """CPU seconds the machine spent not idle, all CPUs."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    ticks = [int(f) for f in fields[:8]]
    return (sum(ticks) - ticks[3] - ticks[4]) / TICK  # minus idle and iowait


@dataclass
class CpuSnapshot:
    wall: float
    server: dict[int, float]
    generator: float
    machine: float


class CpuMeter:
    """CPU between `start()` and `stop()`, in cores (CPU seconds / wall seconds): of the
    server's process tree, of PostgreSQL's sessions on the bench database (`SessionCpu`;
    nothing when PostgreSQL runs on another machine), of the load generator (this
    process for the Python one, its children for wrk) and of the whole machine."""

    def __init__(
        self, server_pid: int | None, external: bool, postmaster: int | None, database: str
    ) -> None:
        self.server_pid = server_pid
        self.external = external
        self.postgres = SessionCpu(postmaster, database)
        self.before: CpuSnapshot | None = None

    def snapshot(self) -> CpuSnapshot:
        tree: dict[int, float] = {}
        if self.server_pid is not None:
            for pid in _tree(self.server_pid):
                cpu = _cpu(pid)
                if cpu is not None:
                    tree[pid] = cpu
        usage = resource.getrusage(
            resource.RUSAGE_CHILDREN if self.external else resource.RUSAGE_SELF
        )
        return CpuSnapshot(
            time.perf_counter(), tree, usage.ru_utime + usage.ru_stime, _machine_busy()
        )

    def start(self) -> None:
        self.postgres.start()
        self.before = self.snapshot()

    def stop(self) -> dict[str, float]:
        assert self.before is not None
        after, before = self.snapshot(), self.before
        postgres = self.postgres.stop()
        wall = after.wall - before.wall

        def grown(a: dict[int, float], b: dict[int, float]) -> float:
            return sum(cpu - b.get(pid, 0.0) for pid, cpu in a.items())

        return {
            "server": grown(after.server, before.server) / wall,
            "postgres": postgres / wall,
            "generator": (after.generator - before.generator) / wall,
            "machine": (after.machine - before.machine) / wall,
        }


# -- servers -----------------------------------------------------------------------------


class Server:
    """A server process on a free port: `inv serve` or the bare app."""

    def __init__(self, label: str, command: list[str], env: dict[str, str], log: Path) -> None:
        self.label = label
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [*command, "--port", str(self.port)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C is ours to pass on, not the terminal's
            )
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise BenchFailed(f"{label} exited {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise BenchFailed(f"{label} did not answer within 60 s:\n{self.log()}")
            time.sleep(0.05)  # polling a process that is starting up

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self, tail: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # Uvicorn's graceful stop
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# -- load: requests ----------------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""

    def raw(self, port: int) -> bytes:
        lines = [f"{self.method} {self.path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        if self.method != "GET":
            lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


@dataclass
class Load:
    """What one load run gave."""

    tool: str
    requests: int
    seconds: float
    p50: float
    p99: float
    max: float
    errors: Counter[str] = field(default_factory=Counter)
    cpu: dict[str, float] = field(default_factory=dict)
    sessions: int = 0  # PostgreSQL sessions opened on the bench database during the load
    lag_p99: float | None = None  # open loop: scheduled -> sent, p99
    offered: float | None = None

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


# -- load: wrk ---------------------------------------------------------------------------


def wrk_version() -> str | None:
    if shutil.which("wrk") is None:
        return None
    done = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    found = re.search(r"wrk (\S+)", done.stdout + done.stderr)
    return found.group(1) if found else "?"


WRK_SCRIPT = """
local paths = {%(paths)s}
local headers = {%(headers)s}
local body = %(body)s
local n = 0
request = function()
  n = n + 1
  return wrk.format("%(method)s", paths[(n %% #paths) + 1], headers, body)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%%d duration=%%d p50=%%d p99=%%d max=%%d connect=%%d read=%%d " ..
    "write=%%d status=%%d timeout=%%d\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def _lua(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid Lua string for these characters


def wrk_load(
    url: str, requests: Sequence[Request], clients: int, seconds: float, folder: Path
) -> Load:
    first = requests[0]
    script = folder / "bench.lua"
    script.write_text(
        WRK_SCRIPT
        % {
            "paths": ", ".join(_lua(r.path) for r in requests),
            "headers": ", ".join(f"[{_lua(k)}] = {_lua(v)}" for k, v in first.headers.items()),
            "body": _lua(first.body.decode()) if first.body else "nil",
            "method": first.method,
        }
    )
    command = ["wrk", "-t1", f"-c{clients}", f"-d{max(1, round(seconds))}s", "--timeout", "10s"]
    command += ["-s", str(script), url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    found = re.search(r"BENCH (.*)", done.stdout)
    if done.returncode != 0 or found is None:
        raise BenchFailed(f"wrk exited {done.returncode}: {done.stdout[-1000:]}{done.stderr}")
    figures = {k: int(v) for k, v in (p.split("=") for p in found.group(1).split())}
    errors: Counter[str] = Counter()
    for kind in ("connect", "read", "write", "status", "timeout"):
        if figures[kind]:
            errors[f"wrk {kind} errors"] = figures[kind]
    return Load(
        "wrk",
        figures["requests"],
        figures["duration"] / 1e6,
        figures["p50"] / 1e6,
        figures["p99"] / 1e6,
        figures["max"] / 1e6,
        errors,
    )


# -- load: Python ------------------------------------------------------------------------


class Connection:
    """One keep-alive HTTP/1.1 connection, one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def exchange(self, request: bytes) -> int:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        at = head.lower().find(b"\r\ncontent-length:")
        if at >= 0:
            end = head.index(b"\r\n", at + 2)
            length = int(head[at + 17 : end])
            if length:
                await self.reader.readexactly(length)
        elif status not in (204, 304):
            raise BenchFailed(f"an answer without Content-Length: {head[:200]!r}")
        return status

    def close(self) -> None:
        self.writer.close()


async def _closed_loop(
    port: int, requests: list[bytes], clients: int, seconds: float
) -> tuple[list[float], Counter[str], float]:
    connections = [await Connection.open(port) for _ in range(clients)]
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    start = time.perf_counter()
    deadline = start + seconds

    async def client(i: int, connection: Connection) -> None:
        n = i * 7919
        while True:
            sent = time.perf_counter()
            if sent >= deadline:
                return
            status = await connection.exchange(requests[n % len(requests)])
            n += 1
            latencies.append(time.perf_counter() - sent)
            if status >= 300:
                errors[f"HTTP {status}"] += 1

    try:
        await asyncio.wait_for(
            asyncio.gather(*(client(i, c) for i, c in enumerate(connections))), seconds + 30
        )
    finally:
        for connection in connections:
            connection.close()
    return latencies, errors, time.perf_counter() - start


def python_load(port: int, requests: Sequence[Request], clients: int, seconds: float) -> Load:
    raw = [r.raw(port) for r in requests]
    latencies, errors, wall = asyncio.run(_closed_loop(port, raw, clients, seconds))
    if not latencies:
        raise BenchFailed("no request completed")
    return Load(
        "python",
        len(latencies),
        wall,
        percentile(latencies, 50),
        percentile(latencies, 99),
        max(latencies),
        errors,
    )


async def _open_loop(
    port: int, requests: list[bytes], rate: float, seconds: float, clients: int
) -> tuple[list[float], list[float], Counter[str], float]:
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    connections = [await Connection.open(port) for _ in range(clients)]
    for connection in connections:
        pool.put_nowait(connection)
    latencies: list[float] = []
    lags: list[float] = []
    errors: Counter[str] = Counter()
    count = max(1, int(rate * seconds))

    async def one(n: int, scheduled: float) -> None:
        connection = await pool.get()  # all busy: the request waits, and that counts
        lags.append(time.perf_counter() - scheduled)
        try:
            status = await connection.exchange(requests[n % len(requests)])
        finally:
            pool.put_nowait(connection)
        latencies.append(time.perf_counter() - scheduled)
        if status >= 300:
            errors[f"HTTP {status}"] += 1

    tasks = []
    start = time.perf_counter() + 0.01
    try:
        for n in range(count):
            scheduled = start + n / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(n, scheduled)))
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
    finally:
        for connection in connections:
            connection.close()
    return latencies, lags, errors, time.perf_counter() - start


def python_rate(
    port: int, requests: Sequence[Request], rate: float, seconds: float, clients: int
) -> Load:
    raw = [r.raw(port) for r in requests]
    latencies, lags, errors, wall = asyncio.run(_open_loop(port, raw, rate, seconds, clients))
    return Load(
        "python, open loop",
        len(latencies),
        wall,
        percentile(latencies, 50),
        percentile(latencies, 99),
        max(latencies),
        errors,
        lag_p99=percentile(lags, 99),
        offered=rate,
    )


# -- the bench ---------------------------------------------------------------------------


@dataclass
class Setup:
    args: argparse.Namespace
    databases: Databases
    folder: Path
    removed: list[str] = field(default_factory=list)
    database: str = ""
    token: str = ""
    stock: list[tuple[str, str]] = field(default_factory=list)  # (store, sku) to go round
    servers: list[Server] = field(default_factory=list)
    inv: Server | None = None  # the inv serve of parts 1-2, kept for part 3
    tool: str = "python"
    postmaster: int | None = None

    @property
    def url(self) -> str:
        return self.databases.url(self.database)

    def env(self) -> dict[str, str]:
        return clean_env(self.args.keep_env, self.removed)

    def start(self, label: str, command: list[str], env: dict[str, str]) -> Server:
        server = Server(label, command, env, self.folder / f"{label.split()[0]}.log")
        self.servers.append(server)
        return server

    def start_inv(self) -> Server:
        env = self.env() | {
            "INV_BACKEND": "postgres",
            "INV_DATABASE_URL": self.url,
            "INV_RATE_LIMIT_TOKEN": UNLIMITED,
            "INV_RATE_LIMIT_ANONYMOUS": UNLIMITED,
        }
        command = [str(INV), "serve", "--host", "127.0.0.1", "--workers", str(self.args.workers)]
        return self.start("inv serve", command, env)

    def start_bare(self) -> Server:
        command = [str(PYTHON), str(HERE / "bare_app.py"), "--workers", str(self.args.workers)]
        return self.start("bare app", command, self.env())

    def stop(self, server: Server) -> None:
        server.stop()
        self.servers.remove(server)

    def close(self) -> None:
        for server in list(self.servers):
            self.stop(server)
        self.databases.drop_all()

    def load(self, server: Server, requests: Sequence[Request], seconds: float) -> Load:
        """Closed loop: --clients connections, each sending as soon as it has its answer."""
        clients = self.args.clients

        def run(duration: float) -> Load:
            with failing(server):
                if self.tool == "wrk":
                    return wrk_load(server.url, requests, clients, duration, self.folder)
                return python_load(server.port, requests, clients, duration)

        run(self.args.warm_up)
        meter = CpuMeter(server.pid, self.tool == "wrk", self.postmaster, self.database)
        sessions = self.sessions()
        meter.start()
        found = run(seconds)
        found.cpu = meter.stop()
        found.sessions = self.sessions() - sessions
        check(server, found)
        return found

    def rate(self, server: Server, requests: Sequence[Request], rate: float) -> Load:
        """Open loop at `rate` requests/s for --rate-seconds (after a short warm-up)."""
        clients = self.args.clients
        with failing(server):
            python_rate(server.port, requests, rate, min(self.args.warm_up, 1.0), clients)
        meter = CpuMeter(server.pid, False, self.postmaster, self.database)
        sessions = self.sessions()
        meter.start()
        with failing(server):
            found = python_rate(server.port, requests, rate, self.args.rate_seconds, clients)
        found.cpu = meter.stop()
        found.sessions = self.sessions() - sessions
        check(server, found)
        return found

    def sessions(self) -> int:
        """Sessions ever opened on the bench database (pg_stat_database)."""
        with self.databases.admin() as connection:
            row = connection.execute(
                "SELECT sessions FROM pg_stat_database WHERE datname = %s", (self.database,)
            ).fetchone()
        return int(row[0]) if row and row[0] is not None else 0


@contextlib.contextmanager
def failing(server: Server) -> Iterator[None]:
    """A load whose connections broke or timed out: BenchFailed, with the server's log."""
    try:
        yield
    except (
        OSError,
        asyncio.IncompleteReadError,
        asyncio.LimitOverrunError,
        TimeoutError,
        subprocess.TimeoutExpired,
    ) as exc:
        raise BenchFailed(f"{server.label}: {exc!r}\n{server.log()}") from exc


def check(server: Server, load: Load) -> None:
    if load.errors:
        raise BenchFailed(
            f"{server.label}: {dict(load.errors)} in {load.requests:,} requests\n{server.log()}"
        )


def cpu_text(load: Load) -> str:
    cpu = load.cpu
    return (
        f"CPU: server {cpu['server']:.2f}, PostgreSQL {cpu['postgres']:.2f}, "
        f"generator {cpu['generator']:.2f}, machine {cpu['machine']:.2f} cores; "
        f"{load.sessions:,} database sessions opened"
    )


def load_line(label: str, load: Load) -> str:
    return (
        f"  {label:42} {load.rate:9,.0f} req/s  p50 {ms(load.p50):>9}  p99 {ms(load.p99):>9}"
        f"  ({load.requests:,} in {load.seconds:.1f} s)"
    )


def per_second(work: Callable[[int], object], seconds: float) -> tuple[float, list[float]]:
    """Calls of `work(n)` a second over about `seconds`, and each call's time."""
    times = []
    start = time.perf_counter()
    n = 0
    while time.perf_counter() - start < seconds:
        began = time.perf_counter()
        work(n)
        times.append(time.perf_counter() - began)
        n += 1
    return n / (time.perf_counter() - start), times


def prepare(setup: Setup) -> None:
    """The database: schema, seed, the admin `bench` and its token; the stock rows."""
    args = setup.args
    setup.database = setup.databases.create()
    backend = setup.databases.backend(setup.database)
    backend.init()
    start = time.perf_counter()
    backend.seed(stores=args.stores, products=args.products)
    seconds = time.perf_counter() - start
    backend.add_user(TOKEN_USER, "bench-password", "admin")
    setup.token = backend.create_token(TOKEN_USER, name="bench").secret
    with psycopg.connect(setup.url, autocommit=True) as connection:
        connection.execute("VACUUM (ANALYZE) stores, products, inventory")
        rows = connection.execute(
            "SELECT s.code, p.sku FROM inventory i JOIN stores s ON s.id = i.store_id "
            "JOIN products p ON p.id = i.product_id"
        ).fetchall()
    pick = random.Random(42)
    setup.stock = [(str(s), str(p)) for s, p in pick.sample(rows, min(PATHS, len(rows)))]
    print(
        f"seeded {args.stores:,} stores x {args.products:,} products = {len(rows):,} stock rows "
        f"in {seconds:.1f} s (database {setup.database}); admin user {TOKEN_USER} and a token"
    )


def bench_reads_and_moves(setup: Setup) -> list[Figure]:
    args = setup.args
    auth = {"Authorization": f"Bearer {setup.token}"}
    gets = [Request("GET", f"/api/v1/stores/{s}/inventory/{p}", auth) for s, p in setup.stock]
    body = json.dumps({"change": 1, "reason": "bench"}).encode()
    posts = [
        Request(
            "POST",
            f"/api/v1/stores/{s}/inventory/{p}/movements",
            auth | {"Content-Type": "application/json"},
            body,
        )
        for s, p in setup.stock
    ]
    bare_get = [Request("GET", "/c", {})]
    bare_post = [Request("POST", "/c", {"Content-Type": "application/json"}, body)]

    # The raw limit first, alone on the machine.
    bare = setup.start_bare()
    b_get = setup.load(bare, bare_get, args.seconds)
    b_rate = setup.rate(bare, bare_post, args.rate)
    b_post = setup.load(bare, bare_post, args.seconds)
    setup.stop(bare)

    server = setup.start_inv()
    o_get = setup.load(server, gets, args.seconds)
    o_rate = setup.rate(server, posts, args.rate)
    o_post = setup.load(server, posts, args.seconds)

    # The backend's calls in this process (the server idle).
    backend = setup.databases.backend(setup.database)
    stock = setup.stock
    backend.quantity(*stock[0])
    in_seconds = min(args.seconds, 3.0)
    q_rate, q_times = per_second(lambda n: backend.quantity(*stock[n % len(stock)]), in_seconds)
    a_rate, a_times = per_second(lambda n: backend.authenticate(setup.token), in_seconds / 2)
    m_rate, m_times = per_second(
        lambda n: backend.adjust(*stock[n % len(stock)], 1, "bench"), in_seconds
    )

    get_ratio = o_get.rate / b_get.rate
    get_ok = get_ratio >= TARGET_GET_RATIO
    post_ok = o_rate.p99 <= TARGET_POST_P99
    tool = f"{setup.tool} {wrk_version()}, 1 thread" if setup.tool == "wrk" else setup.tool
    workers = f"{args.workers} worker{'s' if args.workers > 1 else ''}"
    print(
        f"1. GET one stock level: {args.clients} keep-alive clients, {args.seconds:g} s after "
        f"a {args.warm_up:g} s warm-up ({tool}; {workers}; {len(stock):,} stock rows in turn)"
    )
    print(load_line("bare FastAPI route, GET /c (raw limit)", b_get))
    print(f"    {cpu_text(b_get)}")
    print(load_line("GET /api/v1/stores/{store}/inventory/{sku}", o_get))
    print(f"    {cpu_text(o_get)}")
    if o_get.cpu["server"]:
        print(
            f"    server CPU a request: {o_get.cpu['server'] / o_get.rate * 1e6:,.0f} µs "
            f"(bare: {b_get.cpu['server'] / b_get.rate * 1e6:,.0f} µs)"
        )
    print(
        f"  in process: backend.quantity(store, sku)  {q_rate:9,.0f} calls/s  "
        f"median {ms(statistics.median(q_times))}"
    )
    print(
        f"  in process: backend.authenticate(token)   {a_rate:9,.0f} calls/s  "
        f"median {ms(statistics.median(a_times))}"
    )
    print(
        f"  GET / bare: {get_ratio:.2f}x (target at least {TARGET_GET_RATIO:g}x -> "
        f"{verdict(get_ok)}); GET / in-process quantity: {o_get.rate / q_rate:.2f}x"
    )

    print(
        f'2. POST one movement ({{"change": 1}}; {len(stock):,} stock rows in turn): '
        f"open loop at {args.rate:g} requests/s for {args.rate_seconds:g} s (python, "
        f"latency from the scheduled send), then closed loop as in 1."
    )
    for label, load in (("bare FastAPI route, POST /c", b_rate), ("POST .../movements", o_rate)):
        assert load.lag_p99 is not None
        print(
            f"  {label:30} at {load.rate:5,.0f}/s: p50 {ms(load.p50):>9}  p99 "
            f"{ms(load.p99):>9}  max {ms(load.max):>9}  (scheduled -> sent p99 "
            f"{ms(load.lag_p99)})"
        )
        print(f"    {cpu_text(load)}")
    print(
        f"  p99 at {args.rate:g}/s: {ms(o_rate.p99)} (target at most {ms(TARGET_POST_P99)} -> "
        f"{verdict(post_ok)}); {o_rate.p99 / b_rate.p99:.1f}x the bare route's"
    )
    print(load_line("closed loop: bare FastAPI route, POST /c", b_post))
    print(f"    {cpu_text(b_post)}")
    print(load_line("closed loop: POST .../movements", o_post))
    print(f"    {cpu_text(o_post)}")
    print(
        f"  in process: backend.adjust(store, sku, 1)  {m_rate:9,.0f} calls/s  "
        f"median {ms(statistics.median(m_times))}"
    )
    print(
        f"  POST / bare: {o_post.rate / b_post.rate:.2f}x; POST / in-process adjust: "
        f"{o_post.rate / m_rate:.2f}x"
    )

    setup.inv = server
    return [
        Figure(
            "get",
            "GET one stock level",
            f"{o_get.rate:,.0f} req/s",
            f"bare route {b_get.rate:,.0f} req/s: {get_ratio:.2f}x; p99 {ms(o_get.p99)}",
            f">= {TARGET_GET_RATIO:g}x bare",
            get_ok,
        ),
        Figure(
            "post",
            f"POST p99 at {args.rate:g} req/s",
            ms(o_rate.p99),
            f"bare route {ms(b_rate.p99)}; closed loop {o_post.rate:,.0f} req/s",
            f"<= {ms(TARGET_POST_P99)}",
            post_ok if args.rate == TARGET_POST_RATE else True,
        ),
    ]


def bench_update(setup: Setup, server: Server) -> list[Figure]:
    args = setup.args
    store, sku = setup.stock[0]
    postgres_settings = Settings.model_validate({"backend": "postgres", "database_url": setup.url})
    http_settings = Settings.model_validate(
        {"backend": "http", "url": server.url, "token": setup.token}
    )
    opened = {}
    for name, settings in (("postgres", postgres_settings), ("http", http_settings)):
        opened[name] = get_backend_class(name).from_settings(settings, actor="bench", source="cli")
    calls: dict[str, list[float]] = {"postgres": [], "http": []}
    try:
        for backend in opened.values():
            backend.adjust(store, sku, 1)
        deadline = time.perf_counter() + CALLS_SECONDS
        for n in range(args.calls):  # alternating, so both see the same machine
            if n >= MIN_SAMPLES and time.perf_counter() > deadline:
                break
            for name, backend in opened.items():
                began = time.perf_counter()
                backend.adjust(store, sku, 1)
                calls[name].append(time.perf_counter() - began)
    finally:
        for backend in opened.values():
            backend.close()

    command = [str(INV), "update", sku, "--store", store, "--change", "1"]
    envs = {
        "postgres": setup.env() | {"INV_BACKEND": "postgres", "INV_DATABASE_URL": setup.url},
        "http": setup.env()
        | {"INV_BACKEND": "http", "INV_URL": server.url, "INV_TOKEN": setup.token},
    }
    runs: dict[str, list[float]] = {"postgres": [], "http": []}
    deadline = time.perf_counter() + RUNS_SECONDS
    with tempfile.TemporaryDirectory(prefix="inv-bench-") as cwd:
        for i in range(args.runs + 1):
            if i > MIN_SAMPLES and time.perf_counter() > deadline:
                break
            for name, env in envs.items():
                began = time.perf_counter()
                done = subprocess.run(
                    command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True
                )
                elapsed = time.perf_counter() - began
                if done.returncode != 0:
                    raise BenchFailed(
                        f"inv update over {name} exited {done.returncode}: "
                        f"{done.stderr.decode(errors='replace')[-1000:]}"
                    )
                if i:
                    runs[name].append(elapsed)

    process = {name: statistics.median(times) for name, times in runs.items()}
    inproc = {name: statistics.median(times) for name, times in calls.items()}
    ratio = process["http"] / process["postgres"]
    ok = ratio <= TARGET_UPDATE_RATIO
    print(
        f"3. inv update {sku} --store {store} --change 1: http backend (through inv serve) "
        f"against postgres backend"
    )
    print(
        f"  in process, adjust(), median of {len(calls['http'])} (warm):  postgres "
        f"{ms(inproc['postgres'])}  http {ms(inproc['http'])}  -> "
        f"{inproc['http'] / inproc['postgres']:.2f}x"
    )
    print(
        f"  whole process, median of {len(runs['http'])} (alternating):    postgres "
        f"{ms(process['postgres'])}  http {ms(process['http'])}  -> {ratio:.2f}x "
        f"(target at most {TARGET_UPDATE_RATIO:g}x -> {verdict(ok)})"
    )
    return [
        Figure(
            "update",
            "inv update: http / postgres process",
            f"{ratio:.2f}x",
            f"postgres {ms(process['postgres'])}, http {ms(process['http'])}; in process "
            f"{ms(inproc['postgres'])} / {ms(inproc['http'])}",
            f"<= {TARGET_UPDATE_RATIO:g}x",
            ok,
        )
    ]


def environment_line(setup: Setup) -> str:
    with setup.databases.admin() as connection:
        row = connection.execute(
            "SELECT current_setting('server_version'), current_setting('shared_buffers'), "
            "current_setting('synchronous_commit'), pg_backend_pid()"
        ).fetchone()
        assert row is not None
        with contextlib.suppress(OSError, ValueError, IndexError):  # a server elsewhere
            stat = Path(f"/proc/{row[3]}/stat").read_text()
            setup.postmaster = int(stat[stat.rindex(")") + 2 :].split()[1])
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"environment: {os.cpu_count()} CPUs (load average {load}), Python "
        f"{sys.version.split()[0]}, PostgreSQL {row[0]} (shared_buffers {row[1]}, "
        f"synchronous_commit {row[2]}); closed-loop load: {setup.tool}"
        + (f" {wrk_version()}" if setup.tool == "wrk" else "")
    )


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--server", default=DEFAULT_SERVER, help=f"PostgreSQL (default {DEFAULT_SERVER})"
    )
    parser.add_argument("--clients", type=int, default=20, help="keep-alive clients (20)")
    parser.add_argument("--seconds", type=float, default=5.0, help="each closed-loop load (5)")
    parser.add_argument("--warm-up", type=float, default=WARM_UP, help="before each load (1)")
    parser.add_argument("--rate", type=float, default=TARGET_POST_RATE, help="POST req/s (200)")
    parser.add_argument("--rate-seconds", type=float, default=10.0, help="at that rate (10)")
    parser.add_argument("--runs", type=int, default=20, help="inv update processes each (20)")
    parser.add_argument("--calls", type=int, default=200, help="in-process adjust each (200)")
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="server processes, for inv serve and the bare app alike (2: one per core here)",
    )
    parser.add_argument("--stores", type=int, default=200, help="seeded stores (200)")
    parser.add_argument("--products", type=int, default=500, help="seeded products (500)")
    parser.add_argument(
        "--tool",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="closed-loop load: wrk if installed (auto), or the Python generator",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: tiny sizes, about a second a load"
    )
    parser.add_argument(
        "--keep-env",
        action="store_true",
        help=f"run the children with {' and '.join(UNUSUAL_ENV)} if set (default: unset them)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.warm_up, args.rate_seconds = 1.0, 0.3, 1.0
        args.runs, args.calls, args.stores, args.products = 2, 10, 5, 10
        args.clients = min(args.clients, 5)
    sizes = [args.clients, args.runs, args.calls, args.workers, args.stores, args.products]
    if min(sizes) < 1 or min(args.seconds, args.rate, args.rate_seconds) <= 0:
        parser.error("sizes, counts, rates and durations must be positive")
    if not INV.exists():
        print(f"no inv next to {PYTHON}: install the project in this venv first")
        return 0
    tool = args.tool
    if tool == "auto":
        tool = "wrk" if shutil.which("wrk") else "python"
    elif tool == "wrk" and not shutil.which("wrk"):
        parser.error("--tool wrk: wrk is not installed")

    signal.signal(signal.SIGTERM, _interrupt)
    databases = Databases(args.server)
    figures: list[Figure] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="inv-bench-") as tmp:
        setup = Setup(args, databases, Path(tmp), tool=tool)
        try:
            try:
                print(environment_line(setup))
            except psycopg.Error as exc:
                print(f"skipped: cannot reach PostgreSQL at {args.server}: {str(exc).strip()}")
                return 0
            prepare(setup)
            figures += bench_reads_and_moves(setup)
            assert setup.inv is not None
            figures += bench_update(setup, setup.inv)
        except BenchFailed as exc:
            print(f"failed: {exc}")
            return 1
        except KeyboardInterrupt:
            print("interrupted: stopping the servers, dropping the bench database")
            return 130
        finally:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            setup.close()
    print(f"whole bench: {time.perf_counter() - started:.0f} s")
    print_summary(figures, setup.removed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
