"""A private, throwaway PostgreSQL cluster for one test run: fast because nothing is durable.

    cluster = start_cluster()     # initdb into /tmp/inv-pg-XXXX, start on a free port
    cluster.url("postgres")       # postgresql://postgres@127.0.0.1:PORT/postgres
    cluster.stop()                # stop it and remove the folder

The tests' databases live here rather than on the machine's server: `fsync`,
`synchronous_commit` and `full_page_writes` are off (no test checks PostgreSQL's own
durability: a crash here loses the cluster, which is thrown away anyway), so a commit
costs no disk flush and the test processes do not queue behind one disk.  Replication
connections from 127.0.0.1 are trusted, so the read-replica tests stream from it.

`conftest.py` starts one per test run (in the controller, before any xdist worker, which
inherits `INV_TEST_ADMIN_URL`) unless `INV_TEST_ADMIN_URL` names a server already.  The
PostgreSQL programs run as the `postgres` OS user when we are root (initdb and postgres
refuse root), else as us.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pgreplica import (
    _bindir,
    _free_port,
    _postmaster_pid,
    _Runner,
    _stop,
    _tail,
    pg_url,
    scratch_parent,
)

STARTUP_TIMEOUT = 60.0

#: Settings of the private cluster: fast and throwaway, sized for several test processes.
SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "wal_level": "replica",
    "max_wal_senders": "10",
    "max_connections": "400",
    "shared_buffers": "256MB",
    "max_locks_per_transaction": "256",
    "logging_collector": "off",
    "log_min_messages": "fatal",
    "checkpoint_timeout": "30min",
    "max_wal_size": "4GB",
    # A replica started from a base backup must still find the WAL written meanwhile (each
    # CREATE DATABASE writes its whole template).
    "wal_keep_size": "2GB",
}


@dataclass
class Cluster:
    data_dir: Path
    bindir: Path
    port: int
    os_user: str | None
    host: str = "127.0.0.1"

    def url(self, dbname: str = "postgres") -> str:
        return pg_url(self.host, self.port, "postgres", dbname)

    def stop(self) -> None:
        try:
            _stop(self.bindir, self.data_dir, self.os_user)
        finally:
            shutil.rmtree(self.data_dir, ignore_errors=True)


def _major_on_path() -> int:
    """The major version of the PostgreSQL programs installed (the newest under /usr/lib)."""
    found = sorted(
        (int(p.name) for p in Path("/usr/lib/postgresql").glob("*") if p.name.isdigit()),
        reverse=True,
    )
    if found:
        return found[0]
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--version"], capture_output=True, text=True)
        return int(out.stdout.split()[1].split(".")[0])
    raise RuntimeError("no PostgreSQL programs found (initdb, pg_ctl)")


def start_cluster(os_user: str = "postgres", **settings: str) -> Cluster:
    """initdb a new cluster (in memory if /dev/shm allows) and start it on a free port of
    127.0.0.1; `settings` add to or override `SETTINGS`."""
    bindir = _bindir(_major_on_path())
    as_root = os.geteuid() == 0
    user = os_user if as_root else None
    data_dir = Path(tempfile.mkdtemp(prefix="inv-pg-", dir=scratch_parent()))  # short socket paths
    try:
        if as_root:
            owner = pwd.getpwnam(os_user)
            os.chown(data_dir, owner.pw_uid, owner.pw_gid)
        data_dir.chmod(0o700)
        run = _Runner(user)
        run(
            [
                str(bindir / "initdb"),
                *("-D", str(data_dir), "-U", "postgres", "--auth=trust"),
                *("--encoding=UTF8", "--locale=C.UTF-8", "--no-sync"),
            ],
            timeout=120,
            what="initdb",
        )
        with (data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# tests/pgcluster.py\n")
            conf.writelines(f"{k} = {v}\n" for k, v in {**SETTINGS, **settings}.items())
        for attempt in range(3):
            port = _free_port("127.0.0.1")
            options = (
                f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={data_dir}"
            )
            started = run(
                [
                    str(bindir / "pg_ctl"),
                    *("-D", str(data_dir), "-o", options, "-l", str(data_dir / "log")),
                    *("-w", "-t", str(int(STARTUP_TIMEOUT)), "start"),
                ],
                timeout=STARTUP_TIMEOUT + 10,
                what="pg_ctl start",
                check=False,
            )
            if started.returncode == 0:
                return Cluster(data_dir, bindir, port, user)
            log = _tail(data_dir / "log")
            if "could not bind" in log and attempt < 2 and _postmaster_pid(data_dir) is None:
                continue  # someone took the port between our bind and the postmaster's
            raise RuntimeError(f"the test cluster did not start:\n{started.stdout}\n{log}")
        raise AssertionError("unreachable")
    except BaseException:
        with contextlib.suppress(Exception):
            _stop(bindir, data_dir, user)
        shutil.rmtree(data_dir, ignore_errors=True)
        raise
