"""HTTP load: what each request sends (plain or with a fresh Idempotency-Key), the result of a
measurement, and the asyncio + httpx client used when wrk is missing (`--client python`)."""

import asyncio
import json
import os
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from .common import PLAIN_HTTP, pct, percentile
from .cpu import CpuSnapshot, CpuUsage, cpu_snapshot

LOAD_TIMEOUT_SECONDS = 5
# How a runner turns the snapshots around a measurement into its CPU figures.
CpuSince = Callable[[CpuSnapshot, CpuSnapshot], Awaitable[CpuUsage]]


@dataclass(frozen=True)
class Event:
    id: uuid.UUID
    first_ticket: int
    tickets: int


@dataclass(frozen=True)
class TicketRange:
    event_id: uuid.UUID
    first: int
    count: int


@dataclass(frozen=True)
class ReserveChosen:
    """Each lane (wrk thread, or Python connection) walks its own slice of the range."""

    tickets: TicketRange
    # A fresh random Idempotency-Key (uuid4) on every request, as the buyer's web page sends.
    keyed: bool = False


@dataclass(frozen=True)
class ReserveBest:
    event_id: uuid.UUID
    keyed: bool = False


@dataclass(frozen=True)
class ListPages:
    paths: tuple[str, ...]


LoadSpec = ReserveChosen | ReserveBest | ListPages


def capacity_of(spec: LoadSpec) -> int | None:
    """Tickets the run can take before running dry (None: no limit)."""
    return spec.tickets.count if isinstance(spec, ReserveChosen) else None


@dataclass(frozen=True)
class LoadResult:
    seconds: float
    statuses: dict[int, int]
    socket_errors: int
    timeouts: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    cpu: CpuUsage | None
    capacity: int | None = None  # tickets the run could take before running dry

    @property
    def responses(self) -> int:
        return sum(self.statuses.values())

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)

    @property
    def non_2xx(self) -> int:
        return self.responses - self.ok

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    @property
    def rate(self) -> float:
        """Successful requests per second."""
        return self.ok / self.seconds if self.seconds else 0.0

    @property
    def exhausted(self) -> bool:
        return self.capacity is not None and self.responses > self.capacity

    def status_text(self) -> str:
        return ", ".join(f"{n}× {status}" for status, n in sorted(self.statuses.items()))

    def non_2xx_text(self) -> str:
        return f"{self.non_2xx} ({self.status_text()})" if self.non_2xx else "0"


def lanes_for(connections: int) -> int:
    """wrk threads (and pgbench -j): one per core at most, and never more than connections."""
    return max(1, min(connections, 2, os.cpu_count() or 1))


JSON_HEADERS = {"Content-Type": "application/json"}


def python_request(
    spec: LoadSpec, lane: int, lanes: int, sequence: int
) -> tuple[str, str, bytes | None, dict[str, str]]:
    headers = JSON_HEADERS
    if isinstance(spec, ReserveChosen | ReserveBest) and spec.keyed:
        headers = {**JSON_HEADERS, "Idempotency-Key": str(uuid.uuid4())}
    if isinstance(spec, ReserveChosen):
        per_lane = spec.tickets.count // lanes
        ticket = spec.tickets.first + lane * per_lane + sequence % per_lane
        body = json.dumps({"ticket_ids": [ticket], "customer": "bench-http"}).encode()
        return "POST", f"/events/{spec.tickets.event_id}/reservations", body, headers
    if isinstance(spec, ReserveBest):
        body = json.dumps({"quantity": 1, "customer": "bench-best"}).encode()
        return "POST", f"/events/{spec.event_id}/reservations", body, headers
    return "GET", spec.paths[sequence % len(spec.paths)], None, headers


async def python_load(
    base_url: str,
    spec: LoadSpec,
    connections: int,
    duration: float,
    stop: asyncio.Event | None,
    cpu_since: CpuSince,
) -> LoadResult:
    """`connections` lanes, one connection each, until `duration` or `stop`."""
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    errors = Counter[str]()
    deadline = time.perf_counter() + (600 if stop is not None else duration)

    def running() -> bool:
        return time.perf_counter() < deadline and not (stop is not None and stop.is_set())

    async def lane(index: int) -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(
            base_url=base_url, limits=limits, timeout=LOAD_TIMEOUT_SECONDS, verify=PLAIN_HTTP
        ) as client:
            sequence = 0
            while running():
                method, path, body, headers = python_request(spec, index, connections, sequence)
                sequence += 1
                started = time.perf_counter()
                try:
                    response = await client.request(method, path, content=body, headers=headers)
                except httpx.TimeoutException:
                    errors["timeout"] += 1
                    continue
                except httpx.HTTPError:
                    errors["socket"] += 1
                    continue
                latencies.append(time.perf_counter() - started)
                statuses[response.status_code] += 1

    before = cpu_snapshot()
    await asyncio.gather(*(lane(i) for i in range(connections)))
    after = cpu_snapshot()
    latencies.sort()
    return LoadResult(
        seconds=after.at - before.at,
        statuses=dict(statuses),
        socket_errors=errors["socket"],
        timeouts=errors["timeout"],
        p50_ms=percentile(latencies, 0.50) * 1000,
        p90_ms=percentile(latencies, 0.90) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
        max_ms=(latencies[-1] if latencies else 0) * 1000,
        cpu=await cpu_since(before, after),
        capacity=capacity_of(spec),
    )


def other_cpu(result: LoadResult) -> str:
    """The share of the machine's CPU that went to none of ours: other work disturbing us."""
    return pct(result.cpu.other) if result.cpu is not None else "–"
