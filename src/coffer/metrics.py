"""Prometheus metrics: requests by operation and status, request latency, cache hits and misses,
audit group-commit batch sizes.

Labels are operation names, statuses and cache names only: never a key, token, principal or
organisation identity, never anything a request carried.

With several server processes (``coffer serve --workers N``), ``coffer serve`` points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before the workers start: every worker then
keeps its values in memory-mapped files there, and ``GET /metrics`` of any worker sums the files
of all of them (``prometheus_client``'s multiprocess mode). Values are chosen per process when a
labelled child is first made, so the variable must be set before the worker's first request,
which ``coffer serve`` does before starting them.

The hot path keeps its cost small: a child per (operation, status) and per cache is made once
and kept; an observation is one locked add (in memory, or in the worker's mapped file).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

#: The environment variable of prometheus_client's multiprocess mode.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

# No ``*_created`` series: one per labelled child, of no use to rates, doubling the output.
disable_created_metrics()  # type: ignore[no-untyped-call]
REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "coffer_requests",
    "HTTP requests answered, by operation (the route's operation id) and status.",
    ["operation", "status"],
    registry=REGISTRY,
)
REQUEST_DURATION = Histogram(
    "coffer_request_duration_seconds",
    "Time from a request's arrival in the app to the last byte of its response, by operation.",
    ["operation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=REGISTRY,
)
CACHE_HITS = Counter(
    "coffer_cache_hits",
    "Lookups answered from a cache, by cache.",
    ["cache"],
    registry=REGISTRY,
)
CACHE_MISSES = Counter(
    "coffer_cache_misses",
    "Lookups a cache could not answer (absent or expired), by cache.",
    ["cache"],
    registry=REGISTRY,
)
AUDIT_BATCH_SIZE = Histogram(
    "coffer_audit_batch_size",
    "Audit records committed per group-commit transaction.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000),
    registry=REGISTRY,
)
INTEGRITY_FAILURES = Counter(
    "coffer_integrity_failures",
    "Rows of the database refused because their MAC was not theirs or they were rolled back to "
    "an older version than the audit trail records, by table.",
    ["table"],
    registry=REGISTRY,
)
RATE_LIMITED = Counter(
    "coffer_rate_limited",
    "Requests answered 429 by a rate limit: per principal, or failed authentications per source.",
    ["limit"],
    registry=REGISTRY,
)
AUDIT_SINK_LAG = Gauge(
    "coffer_audit_sink_lag_records",
    "Audit records committed but not yet delivered to an optional audit sink, by sink.",
    ["sink"],
    multiprocess_mode="livemostrecent",
    registry=REGISTRY,
)
AUDIT_SINK_FAILURES = Counter(
    "coffer_audit_sink_failures",
    "Deliveries an optional audit sink refused or did not answer (each is retried), by sink.",
    ["sink"],
    registry=REGISTRY,
)
if MULTIPROC_ENV not in os.environ:
    # Memory and CPU of this process (not available per worker in multiprocess mode).
    ProcessCollector(registry=REGISTRY)

#: The operation label of a request that matched no route.
UNMATCHED = "unmatched"


def count_rate_limited(limit: str) -> None:
    RATE_LIMITED.labels(limit).inc()


def sink_lag_meter(sink: str) -> Callable[[int], None]:
    """Sets the lag gauge of the optional audit sink ``sink``."""
    return AUDIT_SINK_LAG.labels(sink).set


def sink_failure_meter(sink: str) -> Callable[[], None]:
    return AUDIT_SINK_FAILURES.labels(sink).inc


class CacheMeter:
    """The hit and miss counters of one cache: ``hit()`` and ``miss()``."""

    __slots__ = ("hit", "miss")

    def __init__(self, cache: str) -> None:
        self.hit: Callable[[], None] = CACHE_HITS.labels(cache).inc
        self.miss: Callable[[], None] = CACHE_MISSES.labels(cache).inc


class RequestMeter:
    """Counts and times requests; children are made on first use and kept."""

    __slots__ = ("_counters", "_durations")

    def __init__(self) -> None:
        self._counters: dict[tuple[str, int], Callable[[], None]] = {}
        self._durations: dict[str, Callable[[float], None]] = {}

    def observe(self, operation: str, status: int, seconds: float) -> None:
        count = self._counters.get((operation, status))
        if count is None:
            count = self._counters[operation, status] = REQUESTS.labels(operation, status).inc
        count()
        duration = self._durations.get(operation)
        if duration is None:
            duration = self._durations[operation] = REQUEST_DURATION.labels(operation).observe
        duration(seconds)


def observe_audit_batch(size: int) -> None:
    AUDIT_BATCH_SIZE.observe(size)


def count_integrity_failure(table: str) -> None:
    INTEGRITY_FAILURES.labels(table).inc()


def render() -> bytes:
    """The metrics in Prometheus text format: this process's, or, in multiprocess mode, the sum
    over every process that shares the directory."""
    if MULTIPROC_ENV in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def multiprocess_dir() -> Path:
    """A fresh directory for the metrics of several worker processes, set in the environment
    (for the workers about to be started); remove it with ``remove_multiprocess_dir``."""
    path = Path(tempfile.mkdtemp(prefix="coffer-metrics-"))
    os.environ[MULTIPROC_ENV] = str(path)
    return path


def remove_multiprocess_dir(path: Path) -> None:
    os.environ.pop(MULTIPROC_ENV, None)
    shutil.rmtree(path, ignore_errors=True)


def process_exited(pid: int) -> None:
    """Tell multiprocess mode that worker ``pid`` is gone (its live gauges no longer count;
    its counters and histograms do, as totals must)."""
    if MULTIPROC_ENV in os.environ:
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
