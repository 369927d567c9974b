"""Prometheus metrics, summed over the workers of one `boxoffice serve`.

`boxoffice serve` points PROMETHEUS_MULTIPROC_DIR at a private folder before its workers start
(it must be set before prometheus_client is imported); each worker then writes its samples
there and /metrics, whichever worker answers, reports the sum. Without that variable (an app
built in-process, e.g. by a test) the metrics are this process's own.
"""

import glob
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from boxoffice.db import Database

MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

REQUESTS = Counter(
    "boxoffice_http_requests_total",
    "HTTP requests answered, by route template, method and status",
    ["route", "method", "status"],
)
LATENCY = Histogram(
    "boxoffice_http_request_duration_seconds",
    "Time from request start to the end of the response, by route template and method",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
RESERVATIONS = Counter(
    "boxoffice_reservations_total",
    "Reservation outcomes: won (hold made), refused (409), no_pass (403, a queued event "
    "without a valid pass), confirmed (paid), expired (swept)",
    ["outcome"],
)
LOCK_TIMEOUTS = Counter(
    "boxoffice_lock_timeouts_total",
    "Requests that gave up on a row lock held by another request (SQLSTATE 55P03)",
)
RATE_LIMITED = Counter(
    "boxoffice_rate_limited_total",
    "Requests refused with 429 by a per-client rate limit (RATE_LIMIT_*), by scope",
    ["scope"],
)
QUEUE_JOINS = Counter("boxoffice_queue_joins_total", "Places taken in the events' waiting rooms")
QUEUE_ADMITTED = Counter(
    "boxoffice_queue_admitted_total", "Waiting-room places admitted (passes handed out)"
)
# Set by the admitter that leads (the most recent value of a live worker is the truth).
QUEUE_WAITING = Gauge(
    "boxoffice_queue_waiting",
    "Places waiting in the events' waiting rooms (pre-queue included)",
    multiprocess_mode="livemostrecent",
)
QUEUE_ACTIVE_PASSES = Gauge(
    "boxoffice_queue_active_passes",
    "Waiting-room passes handed out, unexpired and not used yet",
    multiprocess_mode="livemostrecent",
)
WAITING_LIST_WAITING = Gauge(
    "boxoffice_waiting_list_waiting",
    "Buyers on sold-out events' waiting lists",
    multiprocess_mode="livemostrecent",
)
WAITING_LIST_OFFERS = Counter(
    "boxoffice_waiting_list_offers_total",
    "Returned seats held for the next buyer on a sold-out event's waiting list",
)
POOL_CHECKED_OUT = Gauge(
    "boxoffice_db_pool_checked_out",
    "Database connections in use, summed over live workers",
    multiprocess_mode="livesum",
)
POOL_SIZE = Gauge(
    "boxoffice_db_pool_size",
    "Database pool size (connections kept open), summed over live workers",
    multiprocess_mode="livesum",
)
STREAMS_OPEN = Gauge(
    "boxoffice_streams_open",
    "Live availability streams (GET /events/{id}/stream) open, summed over live workers",
    multiprocess_mode="livesum",
)
FEED_CONNECTED = Gauge(
    "boxoffice_feed_connected",
    "Workers whose LISTEN connection for ticket changes is up",
    multiprocess_mode="livesum",
)
CONNECTIONS_OPEN = Gauge(
    "boxoffice_http_connections_open",
    "HTTP connections open, summed over live workers (sampled every second)",
    multiprocess_mode="livesum",
)
CONNECTIONS_SHED = Counter(
    "boxoffice_http_connections_shed_total",
    "HTTP connections the server closed or refused to protect the others, by reason",
    ["reason"],
)
SWEEPER_RUNS = Counter("boxoffice_sweeper_runs_total", "Expiry sweeper runs", ["result"])
SWEEPER_FREED_TICKETS = Counter(
    "boxoffice_sweeper_freed_tickets_total", "Tickets freed from expired holds by the sweeper"
)
HISTORY_PRUNED = Counter(
    "boxoffice_sweeper_pruned_rows_total",
    "Rows of unsold holds past HISTORY_RETENTION_HOURS the sweeper deleted, by table",
    ["table"],
)

# The routes whose answers are reservation outcomes: (method, template) → {status: outcome}.
_OUTCOMES: dict[tuple[str, str], dict[int, str]] = {
    ("POST", "/events/{event_id}/reservations"): {201: "won", 403: "no_pass", 409: "refused"},
    ("PATCH", "/tickets/reserve"): {200: "won", 409: "refused"},
    ("POST", "/reservations/{reservation_id}/confirm"): {200: "confirmed"},
}

# Label lookups take a lock and build a tuple; the request path reuses the children instead.
_children: dict[tuple[str, str, int], tuple[Any, Any, Any]] = {}


def observe_request(
    method: str, route: str, status: int, seconds: float, replayed: bool = False
) -> None:
    key = (method, route, status)
    children = _children.get(key)
    if children is None:
        outcome = _OUTCOMES.get((method, route), {}).get(status)
        children = (
            REQUESTS.labels(route, method, str(status)),
            LATENCY.labels(route, method),
            RESERVATIONS.labels(outcome) if outcome else None,
        )
        _children[key] = children
    requests, latency, outcome_counter = children
    requests.inc()
    latency.observe(seconds)
    if outcome_counter is not None and not replayed:
        outcome_counter.inc()


def sample_pool(db: "Database") -> None:
    POOL_CHECKED_OUT.set(db.in_use)
    POOL_SIZE.set(db.size)


def record_sweep(tickets_freed: int, reservations_expired: int) -> None:
    SWEEPER_RUNS.labels("ok").inc()
    SWEEPER_FREED_TICKETS.inc(tickets_freed)
    RESERVATIONS.labels("expired").inc(reservations_expired)


def record_sweep_failure() -> None:
    SWEEPER_RUNS.labels("failed").inc()


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_DIR_ENV) or None


class _WorkersCollector(Collector):
    """prometheus_client's MultiProcessCollector, minus the files a worker is still creating.

    A worker creates its file for a kind of metric when it first uses one (a histogram on its
    first request), and the file is empty until the worker sizes it. Upstream's collector
    reads every file and fails on an empty one (prometheus/client_python#1199), so a scrape
    that met a worker at that moment answered 500 — and a worker killed there would have
    broken every scrape after. An empty file holds no samples yet; files only grow.
    """

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def collect(self) -> Iterable[Metric]:
        files = [path for path in glob.glob(os.path.join(self.folder, "*.db")) if _sized(path)]
        return multiprocess.MultiProcessCollector.merge(files, accumulate=True)  # type: ignore[no-untyped-call,no-any-return]


def _sized(path: str) -> bool:
    try:
        return os.stat(path).st_size > 0
    except FileNotFoundError:  # a dead worker's live gauges, removed since the glob
        return False


def exposition() -> tuple[bytes, str]:
    """The text format: the sum over workers in multiprocess mode, else this process."""
    folder = multiprocess_dir()
    if folder:
        registry = CollectorRegistry()
        registry.register(_WorkersCollector(folder))
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def worker_exiting() -> None:
    """Drop this worker's live gauges, so the sums count only running workers."""
    if multiprocess_dir():
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
