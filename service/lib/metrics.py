"""Prometheus metrics, served at ``GET /metrics`` (``service.health.metrics``).

Counters and histograms are kept per process with ``prometheus_client``;
under ``delight serve --workers N`` every worker writes to files in
``PROMETHEUS_MULTIPROC_DIR`` (``serve`` sets it) and a scrape adds them up.
What lives in the database — budget left, the webhook backlog — is read at
scrape time, so every worker answers the same.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUESTS = Counter("delight_http_requests", "HTTP requests by route and status", ["method", "route", "status"])
LATENCY = Histogram(
    "delight_http_request_duration_seconds",
    "HTTP request latency by route",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
)
EVENTS = Counter("delight_events", "New events recorded, by type", ["type"])
AWARDS = Counter("delight_awards", "Awards issued, by campaign and kind", ["campaign", "kind"])
RULE_EVALUATION = Histogram(
    "delight_rule_evaluation_seconds",
    "Time to evaluate the rule set against one event",
    buckets=(0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05),
)


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    REQUESTS.labels(method, route, str(status)).inc()
    LATENCY.labels(method, route).observe(seconds)


def registry_text() -> bytes:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest()
