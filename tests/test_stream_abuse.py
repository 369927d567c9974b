"""Live streams under abuse, against the real server (`boxoffice serve`, two workers):

- a storm of opens (a crowd of reconnecting browsers) next to buyers on a 200,000-ticket
  event: buyers still get 201/409 quickly, the sweeper keeps running, snapshots stay small,
  and the workers' memory comes back once the streams are closed;
- caps: a client past MAX_STREAMS_PER_CLIENT gets a 429, a worker past
  MAX_STREAMS_PER_WORKER a 503, both problem+json with Retry-After;
- a client that reads nothing is dropped; a reading one next to it is not;
- changes committed while streams open and share snapshots are never lost: every stream's
  picture of the event converges to the database.
And, without a server, the bookkeeping of shared snapshots step by step.

Clients are told apart by X-Forwarded-For, which uvicorn takes from 127.0.0.1 (a local proxy).
"""

import asyncio
import itertools
import json
import random
import socket
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from boxoffice.config import Settings
from boxoffice.errors import ServiceUnavailable
from boxoffice.live.feed import MAX_PENDING, Subscription, TicketFeed, TooManyStreams
from boxoffice.live.relay import RELAY_LOCK
from boxoffice.live.service import MAX_REPLAYED_CHANGES, SharedSnapshots, snapshot_statuses
from boxoffice.migrate import upgrade
from tests.conftest import ADMIN, ADMIN_TOKEN, Databases, Served, create_engine, serving, ticket_ids
from tests.support.metrics import parse, value
from tests.support.problems import assert_problem, bearer
from tests.support.system import system_fixture

DEADLINE_SECONDS = 20.0
BIG_EVENT_TICKETS = 200_000
# The storm: this many opens a second, for this long, from this many client addresses.
STORM_OPENS_PER_SECOND = 35
STORM_SECONDS = 4.0
STORM_CLIENTS = 20
# Worker memory: how far above its resting size it may go, and come back to.
RSS_PEAK_MARGIN_KIB = 100 * 1024
RSS_SETTLED_MARGIN_KIB = 30 * 1024


def client_address(n: int) -> dict[str, str]:
    return {"X-Forwarded-For": f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}"}


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll an outcome until it holds, or fail after DEADLINE_SECONDS."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not await check():
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.05)


class Watcher:
    """One stream read in the background, as a browser reads it: its picture of the event.

    With `follow=False` only the first snapshot's arrival and size are noted; the rest is
    read and thrown away."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        event_id: str,
        headers: dict[str, str],
        *,
        follow: bool = True,
    ) -> None:
        self.state: dict[int, str] = {}
        self.snapshots = 0
        self.first_snapshot_bytes = 0
        self.opened = asyncio.Event()  # the answer came (with 200: its first snapshot too)
        self.opened_after = 0.0
        self.refusal: httpx.Response | None = None
        self.ended = False
        self._follow = follow
        self.task = asyncio.create_task(self._read(client, event_id, headers))

    async def _read(
        self, client: httpx.AsyncClient, event_id: str, headers: dict[str, str]
    ) -> None:
        began = time.monotonic()
        try:
            async with client.stream("GET", f"/events/{event_id}/stream", headers=headers) as r:
                if r.status_code != 200:
                    await r.aread()
                    self.refusal = r
                    return
                buffer = bytearray()
                async for chunk in r.aiter_raw():
                    if self.snapshots and not self._follow:
                        continue
                    buffer += chunk
                    while (end := buffer.find(b"\n\n")) >= 0:
                        self._apply(bytes(buffer[:end]).decode())
                        del buffer[: end + 2]
                        if self.snapshots and not self.opened.is_set():
                            self.opened_after = time.monotonic() - began
                            self.opened.set()
        finally:
            self.ended = True
            self.opened.set()

    def _apply(self, block: str) -> None:
        kind, data = "message", ""
        for line in block.split("\n"):
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                data += line.removeprefix("data: ")
        if not data:
            return
        if kind == "snapshot" and not self.snapshots:
            self.first_snapshot_bytes = len(data)
        self.snapshots += kind == "snapshot"
        if not self._follow:
            return  # a crowd's 200,000-seat pictures would only load the test's own CPU
        body = json.loads(data)
        if kind == "snapshot":
            self.state = snapshot_statuses(body)
        elif kind == "tickets":
            self.state.update((int(i), status) for i, status in body["tickets"])

    @property
    def status_code(self) -> int:
        return self.refusal.status_code if self.refusal is not None else 200

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def close_all(watchers: list[Watcher]) -> None:
    await asyncio.gather(*(watcher.close() for watcher in watchers))


# ---- the server, its database, its events -------------------------------------------------


@pytest.fixture(scope="module")
def abuse_database(databases: Databases) -> str:
    """A database of this module's own: its 200,000 tickets stay out of the others' checks."""
    url = databases.create("boxoffice_abuse")
    upgrade(url)
    return url


@pytest.fixture(scope="module")
def abuse_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("abuse") / "server.log"


@pytest.fixture(scope="module")
@system_fixture
def abuse_server(abuse_database: str, abuse_log: Path) -> Iterator[Served]:
    # The sweeper runs (it must not starve); holds of 100 tickets make changes in bulk.
    env = {"SWEEP_INTERVAL_SECONDS": "0.5", "MAX_TICKETS_PER_HOLD": "100"}
    with serving(abuse_database, abuse_log, workers=2, **env) as served:
        yield served


@pytest_asyncio.fixture(scope="module")
async def abuse_engine(abuse_database: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(Settings(database_url=abuse_database, admin_token=ADMIN_TOKEN))
    yield engine
    await engine.dispose()


@pytest_asyncio.fixture
async def http(abuse_server: Served) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=100)
    async with httpx.AsyncClient(base_url=abuse_server.url, timeout=30, limits=limits) as client:
        yield client


async def create_event(client: httpx.AsyncClient, **kind: Any) -> str:
    body = {"name": "Abuse", "starts_at": "2030-01-01T20:00:00Z", **kind}
    response = await client.post("/events", json=body, headers=ADMIN, timeout=120)
    assert response.status_code == 201, response.text
    event_id: str = response.json()["id"]
    return event_id


@pytest_asyncio.fixture(scope="module")
async def big_event(abuse_server: Served) -> str:
    async with httpx.AsyncClient(base_url=abuse_server.url) as client:
        return await create_event(
            client, general_admission={"quantity": BIG_EVENT_TICKETS, "price": 1000}
        )


async def streams_open(client: httpx.AsyncClient) -> float:
    response = await client.get("/metrics")
    assert response.status_code == 200
    return value(parse(response.text), "boxoffice_streams_open")


async def no_streams_open(client: httpx.AsyncClient) -> None:
    async def none() -> bool:
        return await streams_open(client) == 0

    await eventually(none, "every stream closed on the server")


async def database_state(engine: AsyncEngine, event_id: str) -> dict[int, str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT t.id, ticket_effective_status(t.status, t.hold_expires_at)::text"
                " FROM tickets t WHERE t.event_id = :e"
            ),
            {"e": uuid.UUID(event_id)},
        )
        return {int(ticket_id): status for ticket_id, status in rows}


def worker_pids(serve_pid: int) -> list[int]:
    """The uvicorn workers `serve` started (multiprocessing children), not its helpers."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if parent == serve_pid and b"spawn_main" in command:
            pids.append(int(stat.parent.name))
    return sorted(pids)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


# ---- a storm of opens ---------------------------------------------------------------------


async def test_a_storm_of_opens_leaves_buyers_the_sweeper_and_memory_alone(
    abuse_server: Served, big_event: str, http: httpx.AsyncClient
) -> None:
    """35 opens a second for 4 s on a 200,000-ticket event while buyers reserve."""
    workers = worker_pids(abuse_server.process.pid)
    assert len(workers) == 2, workers
    # Warm up both workers' stream path and snapshot pool, then take their resting size.
    warm = [Watcher(http, big_event, client_address(n), follow=False) for n in range(8)]
    await asyncio.gather(*(watcher.opened.wait() for watcher in warm))
    assert all(watcher.status_code == 200 for watcher in warm)
    await close_all(warm)
    await no_streams_open(http)
    resting = {pid: rss_kib(pid) for pid in workers}
    peak = dict(resting)
    sweeps_before = parse((await http.get("/metrics")).text)

    contended = (await http.get(f"/events/{big_event}/tickets", params={"limit": 40})).json()
    contended_ids = [ticket["id"] for ticket in contended["items"]]
    outcomes: list[tuple[int, float]] = []
    watchers: list[Watcher] = []
    stop = asyncio.Event()

    async def buyer(n: int) -> None:
        for attempt in itertools.count():
            if stop.is_set():
                return
            # Half best available, half a seat others want too (the 409s).
            body: dict[str, Any] = {"customer": f"storm-{n}-{attempt}@example.com"}
            if attempt % 2:
                body["ticket_ids"] = [random.choice(contended_ids)]
            else:
                body["quantity"] = 2
            began = time.monotonic()
            response = await http.post(f"/events/{big_event}/reservations", json=body)
            outcomes.append((response.status_code, time.monotonic() - began))
            await asyncio.sleep(0.02)  # pacing: a steady stream of buyers, not a flood

    async def sample_memory() -> None:
        while not stop.is_set():
            for pid in workers:
                peak[pid] = max(peak[pid], rss_kib(pid))
            await asyncio.sleep(0.1)

    async def storm() -> None:
        began = time.monotonic()
        for n in range(int(STORM_OPENS_PER_SECOND * STORM_SECONDS)):
            # Paced on the clock: the n-th open starts at n / rate seconds.
            await asyncio.sleep(max(0.0, began + n / STORM_OPENS_PER_SECOND - time.monotonic()))
            watchers.append(
                Watcher(http, big_event, client_address(1000 + n % STORM_CLIENTS), follow=False)
            )

    helpers = [asyncio.create_task(buyer(n)) for n in range(4)]
    helpers.append(asyncio.create_task(sample_memory()))
    storm_began = time.monotonic()
    try:
        await storm()
        async with asyncio.timeout(DEADLINE_SECONDS):
            await asyncio.gather(*(watcher.opened.wait() for watcher in watchers))
        storm_took = time.monotonic() - storm_began
        stop.set()
        await asyncio.gather(*helpers)
        open_times = sorted(watcher.opened_after for watcher in watchers)
        refused = [watcher.status_code for watcher in watchers if watcher.status_code != 200]
        assert refused == [], refused
        assert all(not watcher.ended for watcher in watchers)
        sweeps_after = parse((await http.get("/metrics")).text)
        snapshot_bytes = max(watcher.first_snapshot_bytes for watcher in watchers)
    finally:
        stop.set()
        await asyncio.gather(*helpers, return_exceptions=True)
        await close_all(watchers)
    await no_streams_open(http)

    latencies = sorted(latency for _, latency in outcomes)
    statuses = {status for status, _ in outcomes}
    figures: dict[str, Any] = {
        "opens": len(watchers),
        "opens_per_second": round(len(watchers) / storm_took, 1),
        "open_p50_ms": round(statistics.median(open_times) * 1000),
        "open_max_ms": round(open_times[-1] * 1000),
        "snapshot_bytes": snapshot_bytes,
        "buyer_requests": len(outcomes),
        "buyer_statuses": sorted(statuses),
        "buyer_p50_ms": round(statistics.median(latencies) * 1000),
        "buyer_p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000),
        "buyer_max_ms": round(latencies[-1] * 1000),
        "rss_resting_mib": {pid: resting[pid] // 1024 for pid in workers},
        "rss_peak_mib": {pid: peak[pid] // 1024 for pid in workers},
    }
    print("storm:", figures)
    assert figures["opens_per_second"] >= 30
    assert statuses <= {201, 409} and 201 in statuses and 409 in statuses, statuses
    assert latencies[-1] < 1.0, figures
    assert snapshot_bytes < 2000, figures  # 4.5 MB as [id, status] pairs
    failed = value(sweeps_after, "boxoffice_sweeper_runs_total", result="failed") - value(
        sweeps_before, "boxoffice_sweeper_runs_total", result="failed"
    )
    ran = value(sweeps_after, "boxoffice_sweeper_runs_total", result="ok") - value(
        sweeps_before, "boxoffice_sweeper_runs_total", result="ok"
    )
    assert failed == 0 and ran >= 2 * len(workers), (failed, ran)
    for pid in workers:
        assert peak[pid] - resting[pid] < RSS_PEAK_MARGIN_KIB, figures

    async def memory_back() -> bool:
        return all(rss_kib(pid) - resting[pid] < RSS_SETTLED_MARGIN_KIB for pid in workers)

    await eventually(memory_back, f"worker memory back near {resting} KiB")
    print("settled rss MiB:", {pid: rss_kib(pid) // 1024 for pid in workers})


# ---- caps ---------------------------------------------------------------------------------


async def test_a_client_past_its_stream_cap_gets_429(
    abuse_server: Served, big_event: str, http: httpx.AsyncClient
) -> None:
    """MAX_STREAMS_PER_CLIENT (20) per worker: the two workers together take 20 to 40 streams
    from one address, depending on which worker each connection lands on."""
    greedy = client_address(5000)
    watchers: list[Watcher] = []
    try:
        refusal = None
        while refusal is None:
            assert len(watchers) <= 40, "no cap"
            watcher = Watcher(http, big_event, greedy, follow=False)
            await watcher.opened.wait()
            if watcher.refusal is not None:
                refusal = watcher.refusal
            else:
                watchers.append(watcher)
        assert len(watchers) >= 20
        assert_problem(refusal, 429, "too-many-requests")
        assert int(refusal.headers["Retry-After"]) > 0
        # Another client is not concerned.
        other = Watcher(http, big_event, client_address(5001), follow=False)
        await other.opened.wait()
        assert other.status_code == 200
        watchers.append(other)
    finally:
        await close_all(watchers)
    await no_streams_open(http)
    again = Watcher(http, big_event, greedy, follow=False)
    await again.opened.wait()
    assert again.status_code == 200
    await again.close()


@pytest.mark.system
async def test_a_worker_at_its_stream_cap_answers_503(
    abuse_database: str, big_event: str, tmp_path: Path
) -> None:
    with serving(abuse_database, tmp_path / "capped.log", MAX_STREAMS_PER_WORKER="2") as capped:
        async with httpx.AsyncClient(base_url=capped.url, timeout=30) as client:
            watchers: list[Watcher] = []
            try:
                refusal = None
                while refusal is None:
                    assert len(watchers) <= 4, "no cap"
                    watcher = Watcher(client, big_event, client_address(len(watchers)))
                    await watcher.opened.wait()
                    if watcher.refusal is not None:
                        refusal = watcher.refusal
                    else:
                        watchers.append(watcher)
                assert len(watchers) >= 2
                assert_problem(refusal, 503, "service-unavailable")
                assert int(refusal.headers["Retry-After"]) > 0
                # Buyers are not concerned.
                hold = await client.post(
                    f"/events/{big_event}/reservations", json={"quantity": 1, "customer": "cap"}
                )
                assert hold.status_code == 201, hold.text
            finally:
                await close_all(watchers)
            await no_streams_open(client)


# ---- a client that does not read ----------------------------------------------------------


async def test_a_client_that_reads_nothing_is_dropped_and_a_reader_is_not(
    abuse_server: Served, abuse_engine: AsyncEngine, abuse_log: Path, http: httpx.AsyncClient
) -> None:
    event = await create_event(http, general_admission={"quantity": 4000, "price": 1000})
    reader = Watcher(http, event, client_address(7000))
    await reader.opened.wait()
    assert reader.status_code == 200
    # A client with a tiny receive window that never reads what it asked for.
    address = urlsplit(abuse_server.url)
    silent = socket.socket()
    silent.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    silent.connect((address.hostname, address.port))
    silent.sendall(
        f"GET /events/{event}/stream HTTP/1.1\r\nHost: {address.netloc}\r\n"
        "X-Forwarded-For: 10.99.0.1\r\n\r\n".encode()
    )
    try:

        async def both_open() -> bool:
            return await streams_open(http) == 2

        await eventually(both_open, "the silent client's stream open")
        # Changes in bulk (100 tickets each) until the server gives up on the silent client:
        # first the kernel's send buffer (up to tcp_wmem's 4 MB) fills, then the server's, then
        # the stream's queue of MAX_PENDING changes.
        dropped = asyncio.Event()
        churned = 0

        async def churn(n: int) -> None:
            nonlocal churned
            while not dropped.is_set():
                held = await http.post(
                    f"/events/{event}/reservations", json={"quantity": 100, "customer": f"bulk{n}"}
                )
                assert held.status_code == 201, held.text
                hold = held.json()
                gone = await http.delete(
                    f"/reservations/{hold['id']}", headers=bearer(hold["token"])
                )
                assert gone.status_code == 204
                churned += 2

        churners = [asyncio.create_task(churn(n)) for n in range(6)]
        began = time.monotonic()
        try:
            while await streams_open(http) == 2:
                assert time.monotonic() - began < 120, "the silent client was never dropped"
                assert not any(task.done() for task in churners)
                await asyncio.sleep(0.2)
        finally:
            dropped.set()
            await asyncio.gather(*churners)
        print(f"silent client dropped after {churned} changes, {time.monotonic() - began:.1f} s")
        assert await streams_open(http) == 1
        assert not reader.ended

        # Once it reads, the silent client finds the connection closed by the server.
        silent.setblocking(False)
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(DEADLINE_SECONDS):
            while await loop.sock_recv(silent, 1 << 16):
                pass

        expected = await database_state(abuse_engine, event)
        assert set(expected.values()) == {"available"}

        async def reader_converged() -> bool:
            return reader.state == expected

        await eventually(reader_converged, "the reader sees every seat free again")
        assert not reader.ended
        assert "dropped a live stream" in await asyncio.to_thread(abuse_log.read_text)
    finally:
        silent.close()
        await reader.close()
    await no_streams_open(http)


# ---- changes racing the shared snapshots --------------------------------------------------


async def test_changes_committed_while_streams_open_are_never_lost(
    abuse_server: Served, abuse_engine: AsyncEngine, http: httpx.AsyncClient
) -> None:
    """Buyers hold and release seats nonstop while streams open in bursts (so most of them
    share a snapshot read in flight or a second old, with the changes heard since): once the
    buyers stop, every stream shows exactly what the database holds."""
    event = await create_event(
        http, sections=[{"name": "Hall", "rows": 20, "seats_per_row": 30, "price": 2500}]
    )
    seats = await ticket_ids(http, event)
    stop = asyncio.Event()
    churned = 0

    async def buyer(n: int) -> None:
        nonlocal churned
        holds: list[dict[str, Any]] = []
        for attempt in itertools.count():
            if stop.is_set():
                return
            if holds and (len(holds) > 3 or random.random() < 0.4):
                hold = holds.pop(random.randrange(len(holds)))
                gone = await http.delete(
                    f"/reservations/{hold['id']}", headers=bearer(hold["token"])
                )
                assert gone.status_code == 204, gone.text
            else:
                chosen = random.sample(seats, random.randint(1, 3))
                response = await http.post(
                    f"/events/{event}/reservations",
                    json={"ticket_ids": sorted(chosen), "customer": f"race-{n}-{attempt}"},
                )
                assert response.status_code in (201, 409), response.text
                if response.status_code == 201:
                    holds.append(response.json())
            churned += 1

    buyers = [asyncio.create_task(buyer(n)) for n in range(6)]
    watchers: list[Watcher] = []
    try:
        for burst in range(12):
            await asyncio.sleep(0.25)  # pacing between bursts of opens, while buyers buy
            watchers += [Watcher(http, event, client_address(9000 + burst)) for _ in range(4)]
        async with asyncio.timeout(DEADLINE_SECONDS):
            await asyncio.gather(*(watcher.opened.wait() for watcher in watchers))
        assert all(watcher.status_code == 200 for watcher in watchers)
        stop.set()
        await asyncio.gather(*buyers)
        assert churned > 100, churned
        expected = await database_state(abuse_engine, event)
        assert "reserved" in expected.values()

        async def all_converged() -> bool:
            return all(watcher.state == expected for watcher in watchers)

        try:
            await eventually(all_converged, "every stream shows the database's seats")
        except AssertionError:
            wrong = [
                {
                    i: (shown, expected.get(i))
                    for i, shown in w.state.items()
                    if shown != expected[i]
                }
                for w in watchers
                if w.state != expected
            ]
            raise AssertionError(f"streams diverged (shown, database): {wrong}") from None
        assert all(not watcher.ended for watcher in watchers)
    finally:
        stop.set()
        await asyncio.gather(*buyers, return_exceptions=True)
        await close_all(watchers)
    await no_streams_open(http)


async def test_a_change_repeated_in_one_relay_batch_still_arrives(
    abuse_server: Served, abuse_engine: AsyncEngine, http: httpx.AsyncClient
) -> None:
    """Hold the first 10 free tickets, release them, hold them again: the second hold's
    change is the first's, word for word. Sent in one relay transaction, PostgreSQL would
    deliver it once (identical NOTIFY payloads are folded) and streams would show the seats
    free; each notification carries its outbox id, so none are alike."""
    event = await create_event(http, general_admission={"quantity": 50, "price": 1000})
    reader = Watcher(http, event, client_address(8000))
    await reader.opened.wait()
    async with abuse_engine.connect() as conn:
        # Stop the relay and keep any from starting: the changes wait for one batch.
        await conn.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name LIKE 'boxoffice-relay/%' AND datname = current_database()"
            )
        )
        await conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": RELAY_LOCK})
        try:
            first = await http.post(
                f"/events/{event}/reservations", json={"quantity": 10, "customer": "again"}
            )
            assert first.status_code == 201, first.text
            hold = first.json()
            gone = await http.delete(f"/reservations/{hold['id']}", headers=bearer(hold["token"]))
            assert gone.status_code == 204
            second = await http.post(
                f"/events/{event}/reservations", json={"quantity": 10, "customer": "again"}
            )
            assert second.status_code == 201, second.text
            assert {t["id"] for t in second.json()["tickets"]} == {t["id"] for t in hold["tickets"]}
        finally:
            await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": RELAY_LOCK})
    expected = await database_state(abuse_engine, event)

    async def converged() -> bool:
        return reader.state == expected

    try:
        await eventually(converged, "the stream shows the second hold")
    finally:
        await reader.close()
    await no_streams_open(http)


# ---- the bookkeeping, without a server -----------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Reads:
    """A snapshot reader that answers when told to, numbering its reads."""

    def __init__(self) -> None:
        self.count = 0
        self.answer = asyncio.Event()
        self.fail = False

    async def __call__(self, event_id: uuid.UUID) -> bytes:
        self.count += 1
        number = self.count
        await self.answer.wait()
        if self.fail:
            raise ConnectionError("the database is away")
        return f"snapshot {number}".encode()


async def test_a_shared_snapshot_comes_with_every_change_heard_since_its_read_began() -> None:
    clock, reads = Clock(), Reads()
    shared = SharedSnapshots(reads, reuse_seconds=1.0, clock=clock)
    event = uuid.uuid4()

    first, replay = shared.join(event)
    assert replay == []
    shared.heard(event, b"change 1")  # committed while the read may already have looked
    second, replay = shared.join(event)
    assert second is first and replay == [b"change 1"]
    reads.answer.set()
    assert await first == b"snapshot 1"

    shared.heard(event, b"change 2")
    shared.heard(uuid.uuid4(), b"another event's change")
    clock.now += 0.9
    third, replay = shared.join(event)
    assert third is first and replay == [b"change 1", b"change 2"]
    assert reads.count == 1

    clock.now += 0.2  # older than reuse_seconds: read again
    fourth, replay = shared.join(event)
    assert fourth is not first and replay == []
    assert await fourth == b"snapshot 2"

    shared.forget_all()  # the feed missed changes: nothing read before may be handed out
    fifth, _ = shared.join(event)
    assert fifth is not fourth
    await fifth
    for n in range(MAX_REPLAYED_CHANGES + 1):
        shared.heard(event, b"change %d" % n)
    sixth, replay = shared.join(event)  # replaying that many would cost more than a read
    assert sixth is not fifth and replay == []
    await sixth


async def test_a_failed_snapshot_read_is_not_handed_out_again() -> None:
    reads = Reads()
    reads.fail = True
    reads.answer.set()
    shared = SharedSnapshots(reads, clock=Clock())
    event = uuid.uuid4()
    failing, _ = shared.join(event)
    with pytest.raises(ConnectionError):
        await failing
    reads.fail = False
    retried, _ = shared.join(event)
    assert retried is not failing and await retried == b"snapshot 2"


def notification(event: uuid.UUID, ticket: int) -> str:
    return json.dumps({"event_id": str(event), "tickets": [[ticket, "reserved"]]})


async def test_a_stream_opening_on_a_shared_snapshot_misses_nothing_and_repeats_nothing() -> None:
    reads = Reads()
    feed = TicketFeed("postgresql://nobody@localhost/none", snapshots=SharedSnapshots(reads))
    settings = Settings(database_url="postgresql://nobody@localhost/none", admin_token=ADMIN_TOKEN)
    event = uuid.uuid4()

    early, early_snapshot = feed.open(event, client="a", settings=settings)
    feed.hear(notification(event, 1))  # between the read's start and the second open
    late, late_snapshot = feed.open(event, client="b", settings=settings)
    feed.hear(notification(event, 2))
    reads.answer.set()
    assert await early_snapshot == await late_snapshot and reads.count == 1
    for subscription in (early, late):
        chunk = await subscription.next()
        assert chunk is not None
        assert [
            json.loads(line.removeprefix("data: "))["tickets"][0][0]
            for line in chunk.decode().split("\n")
            if line.startswith("data: ")
        ] == [1, 2]
    feed.unsubscribe(early)
    feed.unsubscribe(late)


async def test_streams_are_capped_per_client_and_per_worker() -> None:
    reads = Reads()
    reads.answer.set()
    feed = TicketFeed("postgresql://nobody@localhost/none", snapshots=SharedSnapshots(reads))
    settings = Settings(
        database_url="postgresql://nobody@localhost/none",
        admin_token=ADMIN_TOKEN,
        max_streams_per_client=2,
        max_streams_per_worker=3,
    )
    event = uuid.uuid4()
    opened = [feed.open(event, client="a", settings=settings)[0] for _ in range(2)]
    with pytest.raises(TooManyStreams):
        feed.open(event, client="a", settings=settings)
    opened.append(feed.open(event, client="b", settings=settings)[0])
    with pytest.raises(ServiceUnavailable):
        feed.open(event, client="c", settings=settings)
    feed.unsubscribe(opened.pop(0))
    opened.append(feed.open(event, client="a", settings=settings)[0])
    for subscription in opened:
        feed.unsubscribe(subscription)


async def test_a_burst_becomes_a_snapshot_and_a_client_that_does_not_read_is_dropped() -> None:
    reading = Subscription(uuid.uuid4(), "a")
    for n in range(MAX_PENDING + 1):
        reading.deliver(b"change %d" % n)
    assert await reading.next() is None  # start over from a snapshot
    assert not reading.dropped.is_set()

    stuck = Subscription(uuid.uuid4(), "b")
    stuck.sending = True  # its last write still waits for the client to read
    for n in range(MAX_PENDING + 1):
        stuck.deliver(b"change %d" % n)
    assert stuck.dropped.is_set()
