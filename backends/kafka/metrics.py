"""Prometheus metrics of `inv worker --metrics-port`: events applied, rejected and skipped
as duplicates, how long each batch takes, and the group's lag on this worker's partitions.

`prometheus-client` comes with the `api` extra and is imported only here, only when
metrics are asked for: a worker without `--metrics-port` never loads it.  Each
`WorkerMetrics` has its own registry (tests run several workers in one process) and its
own HTTP server, on 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigurationError

__all__ = ["WorkerMetrics"]

#: Batches take milliseconds when all is well, seconds while PostgreSQL is slow or away.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class WorkerMetrics:
    """The worker's metrics, and (after `serve`) the HTTP server that exposes them."""

    def __init__(self) -> None:
        try:
            from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        except ImportError as exc:
            raise ConfigurationError(
                f"--metrics-port needs the api extra ({exc.name or exc} is missing); "
                "install it with: pip install 'inv[api]'"
            ) from None
        self.registry = CollectorRegistry()
        self.applied: Any = Counter(
            "inv_worker_events_applied",
            "Events applied to PostgreSQL.",
            registry=self.registry,
        )
        self.rejected: Any = Counter(
            "inv_worker_events_rejected",
            "Events that can never apply (recorded as rejected, sent to the dead-letter topic).",
            registry=self.registry,
        )
        self.duplicates: Any = Counter(
            "inv_worker_events_duplicate",
            "Events skipped because they were applied already (redelivered).",
            registry=self.registry,
        )
        self.retries: Any = Counter(
            "inv_worker_batch_retries",
            "Batches tried again because PostgreSQL was unreachable or writers collided.",
            registry=self.registry,
        )
        self.duration: Any = Histogram(
            "inv_worker_batch_duration_seconds",
            "Time to apply a batch and commit it (transaction, write-through, offsets).",
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.lag: Any = Gauge(
            "inv_worker_lag",
            "Events on this worker's partitions not yet consumed, by topic and partition.",
            ["topic", "partition"],
            registry=self.registry,
        )
        self._server: Any = None
        self._thread: Any = None
        self.address: tuple[str, int] | None = None

    def batch(self, *, applied: int, rejected: int, duplicates: int, seconds: float) -> None:
        self.applied.inc(applied)
        self.rejected.inc(rejected)
        self.duplicates.inc(duplicates)
        self.duration.observe(seconds)

    def retried(self) -> None:
        self.retries.inc()

    def set_lag(self, topic: str, lags: dict[int, int]) -> None:
        """The lag of each partition this worker holds now; partitions it gave up are
        dropped from the gauge."""
        self.lag.clear()
        for partition, lag in lags.items():
            self.lag.labels(topic, str(partition)).set(lag)

    def serve(self, port: int, host: str = "127.0.0.1") -> tuple[str, int]:
        """Expose `/metrics` on host:port (a thread); returns the address bound."""
        from prometheus_client import start_http_server

        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise ConfigurationError(
                f"--metrics-port: cannot listen on {host}:{port}: {exc.strerror or exc}"
            ) from None
        bound = self._server.server_address
        self.address = (str(bound[0]), int(bound[1]))
        return self.address

    def close(self) -> None:
        """Stop the HTTP server (if serving)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
