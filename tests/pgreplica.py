"""A real streaming replica of the local PostgreSQL, for the read/write-split tests.

    with streaming_replica() as replica:          # primary: 127.0.0.1:5432, user postgres
        ...write on the primary...
        wait_for_replay(primary_url, replica.url("mydb"))
        ...read on replica.url("mydb")...

`streaming_replica` checks that the primary can feed a standby (a `replication` line in
pg_hba.conf for 127.0.0.1, wal_level >= replica, free WAL senders) and raises
`PrimaryNotReady` saying what to change if not; it never edits the server's configuration.
It then takes a `pg_basebackup -R -X stream` into a fresh folder under /tmp, starts a hot
standby there on a free port of 127.0.0.1, waits until it streams, and on exit stops it
(`pg_ctl stop -m fast`, harder if need be) and removes the folder, even if the body raised.

It creates no replication slot: the only one is pg_basebackup's own temporary slot, which
the primary drops when pg_basebackup disconnects.  The PostgreSQL programs run as the
`postgres` OS user when we are root (initdb, pg_ctl and postgres refuse root), else as us.
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import pq

#: How long the replica may take to accept connections and stream, in seconds.
STARTUP_TIMEOUT = 30.0
#: pg_basebackup of the test cluster takes a second or two; this is only a safety net.
BASEBACKUP_TIMEOUT = 300.0
STOP_TIMEOUT = 30.0
#: Settings a hot standby must have at least as high as its primary.
_AT_LEAST_PRIMARY = (
    "max_connections",
    "max_worker_processes",
    "max_wal_senders",
    "max_prepared_transactions",
    "max_locks_per_transaction",
)

Conninfo = str | psycopg.Connection[tuple[object, ...]]


class PrimaryUnreachable(RuntimeError):
    """No PostgreSQL answers at the primary's address (or it refuses us outright)."""


class PrimaryNotReady(RuntimeError):
    """The primary is up but its configuration cannot feed a streaming replica."""


def scratch_parent() -> str:
    """/dev/shm when it is a roomy tmpfs (nothing to write back to a disk), else /tmp: short
    paths either way, for the sockets."""
    try:
        shm = os.statvfs("/dev/shm")
    except OSError:
        return "/tmp"
    return "/dev/shm" if shm.f_bavail * shm.f_frsize > 4 * 1024**3 else "/tmp"


def pg_url(host: str, port: int, user: str = "postgres", dbname: str = "postgres") -> str:
    """postgresql://USER@HOST:PORT/DBNAME"""
    return f"postgresql://{quote(user, safe='')}@{host}:{port}/{quote(dbname, safe='')}"


@dataclass(frozen=True)
class Replica:
    """A running hot standby.  `timings` (seconds) gains "teardown" once it is stopped."""

    host: str
    port: int
    data_dir: Path
    user: str = "postgres"
    #: What the primary's pg_stat_replication calls this standby (its cluster_name).
    application_name: str = ""
    timings: dict[str, float] = field(default_factory=dict, compare=False)

    def url(self, dbname: str = "postgres") -> str:
        """postgresql://postgres@127.0.0.1:PORT/DBNAME on the replica."""
        return pg_url(self.host, self.port, self.user, dbname)

    dsn = url


@contextlib.contextmanager
def streaming_replica(
    primary_host: str = "127.0.0.1",
    primary_port: int = 5432,
    user: str = "postgres",
    *,
    os_user: str = "postgres",
    startup_timeout: float = STARTUP_TIMEOUT,
) -> Iterator[Replica]:
    """A streaming hot standby of the primary, on a free port of `primary_host`."""
    primary = pg_url(primary_host, primary_port, user)
    settings = check_primary(primary_host, primary_port, user)
    bindir = _bindir(int(settings["server_version_num"]) // 10000)
    as_root = os.geteuid() == 0
    timings: dict[str, float] = {}

    data_dir = Path(tempfile.mkdtemp(prefix="pgreplica-", dir=scratch_parent()))
    try:
        if as_root:
            owner = pwd.getpwnam(os_user)
            os.chown(data_dir, owner.pw_uid, owner.pw_gid)
        data_dir.chmod(0o700)
        run = _Runner(os_user if as_root else None)

        started = time.monotonic()
        basebackup = [
            str(bindir / "pg_basebackup"),
            *("-h", primary_host, "-p", str(primary_port), "-U", user, "-D", str(data_dir)),
            *("-R", "-X", "stream", "-c", "fast", "--no-password", "--no-sync"),
        ]
        if int(settings["max_replication_slots"]) == 0:
            basebackup.append("--no-slot")  # it would fail creating its temporary slot
        run(basebackup, timeout=BASEBACKUP_TIMEOUT, what="pg_basebackup")
        timings["basebackup"] = time.monotonic() - started

        started = time.monotonic()
        replica = _start(run, bindir, data_dir, primary_host, user, settings, startup_timeout)
        replica.timings.update(timings)
        timings = replica.timings  # the caller's copy gets "teardown" too
        timings["start"] = time.monotonic() - started
        started = time.monotonic()
        _wait_until_streaming(replica, primary, startup_timeout)
        timings["streaming"] = time.monotonic() - started

        yield replica
    finally:
        started = time.monotonic()
        try:
            _stop(bindir, data_dir, os_user if as_root else None)
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)
        timings["teardown"] = time.monotonic() - started


# -- the primary -------------------------------------------------------------------------


def check_primary(host: str, port: int, user: str) -> dict[str, str]:
    """The primary's settings, or PrimaryUnreachable / PrimaryNotReady saying what is wrong."""
    where = f"{host}:{port}"
    try:
        conn = psycopg.connect(pg_url(host, port, user), autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as e:
        raise PrimaryUnreachable(f"cannot connect to PostgreSQL at {where} as {user}: {e}") from e
    with conn:
        names = [
            "server_version_num",
            "wal_level",
            "max_wal_senders",
            "max_replication_slots",
            "hba_file",
            *_AT_LEAST_PRIMARY,
        ]
        rows = conn.execute(
            "select name, setting from pg_settings where name = any(%s)", [names]
        ).fetchall()
        settings = {str(name): str(value) for name, value in rows}
        in_recovery, may_replicate, senders = _one(
            conn,
            "select pg_is_in_recovery(),"
            " (select rolsuper or rolreplication from pg_roles where rolname = current_user),"
            " (select count(*) from pg_stat_replication)",
        )
        problems = []
        if in_recovery:
            problems.append(f"{where} is itself a standby; point this at the primary")
        if settings["wal_level"] not in ("replica", "logical"):
            problems.append(
                f"wal_level is {settings['wal_level']}: set wal_level = replica in "
                "postgresql.conf and restart PostgreSQL"
            )
        free = int(settings["max_wal_senders"]) - int(str(senders))
        if free < 2:  # pg_basebackup -X stream uses two; the replica one, afterwards
            problems.append(
                f"max_wal_senders is {settings['max_wal_senders']} with {senders} in use; "
                "pg_basebackup -X stream needs 2 free: raise max_wal_senders and restart"
            )
        if not may_replicate:
            problems.append(f"role {user} has neither SUPERUSER nor REPLICATION")
        refused = _replication_refused(host, port, user)
        if refused and "pg_hba.conf" in refused:
            major = int(settings["server_version_num"]) // 10000
            problems.append(_hba_advice(conn, settings["hba_file"], host, user, refused, major))
        elif refused and not problems:
            problems.append(f"a replication connection as {user} fails: {refused}")
    if problems:
        raise PrimaryNotReady(
            f"the PostgreSQL at {where} cannot feed a streaming replica "
            "(this helper does not change the server's configuration):\n- " + "\n- ".join(problems)
        )
    return settings


def _replication_refused(host: str, port: int, user: str) -> str:
    """libpq's error for a physical replication connection, "" if it is accepted."""
    conninfo = f"host={host} port={port} user={user} dbname=postgres replication=true"
    pgconn = pq.PGconn.connect(f"{conninfo} connect_timeout=5".encode())
    try:
        if pgconn.status == pq.ConnStatus.OK:
            return ""
        return pgconn.error_message.decode(errors="replace").strip()
    finally:
        pgconn.finish()


def _hba_advice(
    conn: psycopg.Connection[tuple[object, ...]],
    hba_file: str,
    host: str,
    user: str,
    error: str,
    major: int,
) -> str:
    lines = [
        f"it refuses replication connections from {host} for {user}: {error}",
        f"  {hba_file} has (first match wins; 'all' in the database column does not cover"
        " replication connections):",
    ]
    try:
        rules = conn.execute(
            "select line_number, type, array_to_string(database, ','),"
            " array_to_string(user_name, ','), coalesce(address, ''), coalesce(netmask, ''),"
            " auth_method, coalesce(error, '') from pg_hba_file_rules order by line_number"
        ).fetchall()
    except psycopg.Error as e:  # only superusers may read pg_hba_file_rules
        rules = []
        lines.append(f"    (cannot read pg_hba_file_rules: {e})")
    for number, kind, dbs, users, address, netmask, method, err in rules:
        if address and netmask:
            with contextlib.suppress(ValueError):
                bits = bin(int(ipaddress.ip_address(str(netmask)))).count("1")
                address, netmask = f"{address}/{bits}", ""
        rule = " ".join(str(s) for s in (kind, dbs, users, address, netmask, method) if s)
        lines.append(f"    line {number}: {rule}" + (f"  [error: {err}]" if err else ""))
    lines.append(
        f"  add, above any other line matching it, `host replication {user} {host}/32 trust`,"
        f" then reload: psql -c 'select pg_reload_conf()' (or pg_ctlcluster {major} main reload)"
    )
    return "\n".join(lines)


def _one(conn: psycopg.Connection[tuple[object, ...]], query: str) -> tuple[object, ...]:
    row = conn.execute(query).fetchone()
    assert row is not None
    return row


def _bindir(major: int) -> Path:
    """Where the PostgreSQL programs of the primary's major version are."""
    candidates = [Path(f"/usr/lib/postgresql/{major}/bin")]  # Debian, Ubuntu
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        candidates.append(Path(out.stdout.strip()))
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for bindir in candidates:
        if (bindir / "pg_ctl").is_file() and (bindir / "pg_basebackup").is_file():
            out = subprocess.run([bindir / "pg_ctl", "--version"], capture_output=True, text=True)
            found = re.search(r"\(PostgreSQL\) (\d+)", out.stdout)
            if found and int(found.group(1)) == major:
                return bindir
    raise RuntimeError(
        f"no PostgreSQL {major} pg_ctl and pg_basebackup in any of "
        + ", ".join(str(c) for c in candidates)
    )


# -- the replica -------------------------------------------------------------------------


class _Runner:
    """Runs a program, as `os_user` (through runuser) if given; kills it if it overruns."""

    def __init__(self, os_user: str | None) -> None:
        self.prefix = ["runuser", "-u", os_user, "--"] if os_user else []
        # No PGHOST, PGDATA, PGOPTIONS... of ours steers the PostgreSQL programs.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}

    def __call__(
        self, argv: Sequence[str], *, timeout: float, what: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        # A session of its own, so a timeout (or ^C) kills runuser *and* what it runs.
        proc = subprocess.Popen(
            [*self.prefix, *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=self.env,
            cwd="/",
            start_new_session=True,
        )
        try:
            out, _ = proc.communicate(timeout=timeout)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
        result = subprocess.CompletedProcess(proc.args, proc.returncode, out, None)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n{out.strip()}")
        return result


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _start(
    run: _Runner,
    bindir: Path,
    data_dir: Path,
    host: str,
    user: str,
    primary: dict[str, str],
    timeout: float,
) -> Replica:
    """Write the replica's own configuration and start it on a free port (3 tries)."""
    log = data_dir / "log"
    for attempt in range(3):
        port = _free_port(host)
        name = f"pgreplica_{port}"
        # The base backup has the primary's postgresql.auto.conf (+ primary_conninfo from -R)
        # but, on Debian, no postgresql.conf nor pg_hba.conf: those live in /etc.
        conf = {
            "listen_addresses": f"'{host}'",
            "port": str(port),
            "unix_socket_directories": f"'{data_dir}'",
            "hot_standby": "on",
            "cluster_name": f"'{name}'",  # the walreceiver's application_name, process titles
            "hba_file": f"'{data_dir / 'pg_hba.conf'}'",
            "ident_file": f"'{data_dir / 'pg_ident.conf'}'",
            "shared_buffers": "16MB",
            "fsync": "off",  # a throwaway copy
            "wal_receiver_status_interval": "1s",  # a fresher replay_lsn on the primary
            "archive_mode": "off",
            "logging_collector": "off",
            "log_line_prefix": "'%m [%p] %q%u@%d '",
            **{setting: primary[setting] for setting in _AT_LEAST_PRIMARY},
        }
        (data_dir / "postgresql.conf").write_text(
            "# written by tests/pgreplica.py\n" + "".join(f"{k} = {v}\n" for k, v in conf.items())
        )
        (data_dir / "pg_hba.conf").write_text(
            "local all all trust\n"
            f"host all all {host}/32 trust\n"
            f"host replication all {host}/32 trust\n"
        )
        (data_dir / "pg_ident.conf").write_text("")
        if os.geteuid() == 0:
            stat = data_dir.stat()
            for written in ("postgresql.conf", "pg_hba.conf", "pg_ident.conf"):
                os.chown(data_dir / written, stat.st_uid, stat.st_gid)
        options = (
            f"-p {port} -c listen_addresses={host} -c unix_socket_directories={data_dir}"
            " -c hot_standby=on"
        )
        argv = [str(bindir / "pg_ctl"), "-D", str(data_dir), "-o", options, "-l", str(log)]
        started = run(
            [*argv, "-w", "-t", str(max(1, math.ceil(timeout))), "start"],
            timeout=timeout + 10,
            what="pg_ctl start",
            check=False,
        )
        if started.returncode == 0:
            return Replica(host, port, data_dir, user, application_name=name)
        log_text = _tail(log)
        if "could not bind" in log_text and attempt < 2 and _postmaster_pid(data_dir) is None:
            continue  # someone took the port between our bind and the postmaster's
        raise RuntimeError(
            f"the replica did not start (pg_ctl exit {started.returncode}):\n"
            f"{started.stdout.strip()}\n--- {log}:\n{log_text}"
        )
    raise AssertionError("unreachable")


def _wait_until_streaming(replica: Replica, primary: str, timeout: float) -> None:
    """Until the replica is in recovery, its walreceiver streams and the primary sees it."""
    deadline = time.monotonic() + timeout
    seen: object = "no connection yet"
    with psycopg.connect(primary, autocommit=True, connect_timeout=5) as on_primary:
        while True:
            if _postmaster_pid(replica.data_dir) is None:
                raise RuntimeError(
                    f"the replica's postmaster exited:\n{_tail(replica.data_dir / 'log')}"
                )
            try:
                with psycopg.connect(replica.url(), autocommit=True, connect_timeout=2) as conn:
                    seen = _one(
                        conn,
                        "select pg_is_in_recovery(), (select status from pg_stat_wal_receiver)",
                    )
            except psycopg.OperationalError as e:
                seen = e
            if seen == (True, "streaming"):
                sender = on_primary.execute(
                    "select state, replay_lsn from pg_stat_replication where application_name = %s",
                    [replica.application_name],
                ).fetchone()
                if sender is not None and sender[0] == "streaming" and sender[1] is not None:
                    return
                seen = f"primary's pg_stat_replication: {sender}"
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the replica on port {replica.port} was not streaming after {timeout}s"
                    f" (last: {seen!r}):\n{_tail(replica.data_dir / 'log')}"
                )
            time.sleep(0.1)


def _postmaster_pid(data_dir: Path) -> int | None:
    """The pid of the postmaster running on `data_dir`, if any."""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, someone else's
    return pid


def _children(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(stat.parent.name))
    return children


def _stop(bindir: Path, data_dir: Path, os_user: str | None) -> None:
    """Stop the postmaster on `data_dir`, if it runs: fast, then immediate, then SIGKILL."""
    run = _Runner(os_user)
    for mode in ("fast", "immediate"):
        if _postmaster_pid(data_dir) is None:
            return
        pg_ctl = [str(bindir / "pg_ctl"), "-D", str(data_dir), "-m", mode, "-w"]
        with contextlib.suppress(subprocess.TimeoutExpired):
            run(
                [*pg_ctl, "-t", str(int(STOP_TIMEOUT)), "stop"],
                timeout=STOP_TIMEOUT + 10,
                what="pg_ctl stop",
                check=False,
            )
    pid = _postmaster_pid(data_dir)
    if pid is None:
        return
    for victim in [pid, *_children(pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _postmaster_pid(data_dir) is not None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"could not stop the replica's postmaster (pid {pid})")
        time.sleep(0.05)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"(no log: {e})"


# -- replication progress ----------------------------------------------------------------


@contextlib.contextmanager
def _connected(conninfo: Conninfo) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    if isinstance(conninfo, psycopg.Connection):
        yield conninfo
    else:
        with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
            yield conn


def _lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def replica_lag_bytes(primary: Conninfo, application_name: str | None = None) -> int:
    """How many bytes of WAL the primary has written that a standby has not replayed.

    From the primary's pg_stat_replication: pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)
    for the standby called `application_name` (a Replica's `application_name`), or the
    largest over all standbys if None.  LookupError if no such standby has reported yet.
    """
    with _connected(primary) as conn:
        rows = conn.execute(
            "select application_name,"
            " pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint"
            " from pg_stat_replication"
            " where (%(name)s::text is null or application_name = %(name)s::text)"
            " and replay_lsn is not null",
            {"name": application_name},
        ).fetchall()
    if not rows:
        which = "any standby" if application_name is None else repr(application_name)
        raise LookupError(f"pg_stat_replication has no replay position for {which}")
    return max(int(str(lag)) for _, lag in rows)


def wait_for_replay(primary: Conninfo, replica: Conninfo, timeout: float = 10.0) -> str:
    """Wait until the replica has replayed all WAL the primary had written at call time.

    Compares the replica's pg_last_wal_replay_lsn() with the primary's pg_current_wal_lsn()
    read first (so a primary with synchronous_commit off may not have written the last
    commits yet); returns that LSN.  TimeoutError if the replica is not there in `timeout`s.
    """
    with _connected(primary) as conn:
        target = str(_one(conn, "select pg_current_wal_lsn()::text")[0])
    deadline = time.monotonic() + timeout
    with _connected(replica) as conn:
        while True:
            replayed = _one(conn, "select pg_last_wal_replay_lsn()::text")[0]
            if replayed is None:
                raise ValueError("wait_for_replay: the 'replica' is not a standby")
            if _lsn(str(replayed)) >= _lsn(target):
                return target
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the replica did not replay up to {target} in {timeout}s (it is at {replayed})"
                )
            time.sleep(0.02)
