"""Prometheus metrics of `inv serve`: requests by route template and status, latency,
rate-limit refusals.  Each server object has its own registry (tests start several)."""

from __future__ import annotations

from typing import Any

__all__ = ["Metrics"]


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.requests: Any = Counter(
            "inv_api_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency: Any = Histogram(
            "inv_api_request_duration_seconds",
            "Time to answer a request, by route template.",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.refused: Any = Counter(
            "inv_api_rate_limited",
            "Requests refused with 429, by budget (anonymous or token).",
            ["budget"],
            registry=self.registry,
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def limited(self, budget: str) -> None:
        self.refused.labels(budget).inc()

    def exposition(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
