"""HTTP-level attacks against the real server (issue 9 §3): each one is run while buyers keep
buying, and must leave them served fast, the workers' memory and open files bounded, and every
answer problem+json.

1. a request head of 150 MB (httptools had no bound: it froze a worker for 28 s);
2. idle and trickling connections (20,000 of them used up the open-file limit), and a worker
   full of them (MAX_CONNECTIONS_PER_WORKER);
3. a megabyte of ticket ids (a 60 MB 422 after 7.4 s of worker time);
4. a newline in the path (forged log lines).
"""

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from boxoffice.logs import escape_controls
from tests.conftest import (
    ADMIN,
    Served,
    running_server,
    serving,
)
from tests.support.system import system_fixture

HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0
# A buyer's request while an attack runs: 2 cores are shared by the attacker, the buyers, two
# workers and PostgreSQL, so the bound is generous; the attacks took 7–28 s before.
BUYER_LATENCY_BOUND = 1.5
# How much a worker's resident memory may grow during an attack.
RSS_GROWTH_BOUND_KIB = 40 * 1024
PROBLEM_JSON = "application/problem+json"
SHED = "boxoffice_http_connections_shed_total"
# How long each attack that can be repeated goes on while the buyers buy.
ATTACK_SECONDS = 3.0


# --- the server's processes ---------------------------------------------------------------


def worker_pids(parent: int) -> list[int]:
    """The uvicorn workers of a `boxoffice serve` (its spawned children, not helpers)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"spawn_main" in cmdline:
            pids.append(int(entry))
    return sorted(pids)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def workers_of(served: Served) -> list[int]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pids = worker_pids(served.process.pid)
        if len(pids) == 2:
            return pids
        time.sleep(0.05)  # polling for processes that are starting, bounded by the deadline
    raise AssertionError(f"expected 2 workers, found {worker_pids(served.process.pid)}")


def port_of(served: Served) -> int:
    return int(served.url.rsplit(":", 1)[1])


def metric(served: Served, name: str, **labels: str) -> float:
    response = httpx.get(served.url + "/metrics", timeout=10)
    assert response.status_code == 200, response.text
    text = response.text
    want = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + ("{" if labels else " ")) and (not labels or want in line):
            total += float(line.rsplit(" ", 1)[1])
    return total


# --- buyers --------------------------------------------------------------------------------


@dataclass
class Buyers:
    """Buyers served throughout an attack: a liveness probe and a reservation loop."""

    base_url: str
    event_id: str
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    async def _loop(self, kind: str, stop: asyncio.Event) -> None:
        number = 0
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10) as client:
            while not stop.is_set():
                number += 1
                started = time.perf_counter()
                try:
                    if kind == "healthz":
                        response = await client.get("/healthz")
                        expected = 200
                    else:
                        response = await client.post(
                            f"/events/{self.event_id}/reservations",
                            json={"quantity": 1, "customer": f"buyer-{number}@example.com"},
                        )
                        expected = 201
                    if response.status_code != expected:
                        self.failures.append(f"{kind}: {response.status_code} {response.text}")
                except httpx.HTTPError as error:
                    self.failures.append(f"{kind}: {error!r}")
                self.latencies.append(time.perf_counter() - started)
                # Paced, so the buyers are a steady trickle rather than load of their own.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.05)

    def check(self) -> None:
        assert not self.failures, self.failures[:5]
        assert len(self.latencies) >= 10, "the buyers hardly ran"
        slowest = max(self.latencies)
        assert slowest < BUYER_LATENCY_BOUND, f"a buyer waited {slowest:.2f} s"


@asynccontextmanager
async def buyers_during(base_url: str, event_id: str) -> AsyncIterator[Buyers]:
    """Buyers buying while the body runs; checked (served, fast) when it ends."""
    buyers = Buyers(base_url, event_id)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(buyers._loop(kind, stop)) for kind in ("healthz", "reserve")]
    try:
        yield buyers
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    buyers.check()


def create_event(base_url: str, quantity: int = 20_000) -> str:
    body = {
        "name": "Hostile traffic",
        "starts_at": "2030-01-01T20:00:00Z",
        "general_admission": {"quantity": quantity, "price": 1000},
    }
    response = httpx.post(base_url + "/events", json=body, headers=ADMIN, timeout=30)
    assert response.status_code == 201, response.text
    event_id: str = response.json()["id"]
    return event_id


@dataclass
class Server:
    served: Served
    event_id: str
    log_path: Path

    @property
    def url(self) -> str:
        return self.served.url

    @property
    def port(self) -> int:
        return port_of(self.served)


@pytest.fixture(scope="module")
@system_fixture
def guarded(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The service with short head and body deadlines (the defaults are 10 s and 30 s)."""
    log_path = tmp_path_factory.mktemp("hostile") / "server.log"
    with serving(
        database_url,
        log_path,
        HEADER_TIMEOUT_SECONDS=str(HEADER_TIMEOUT),
        BODY_TIMEOUT_SECONDS=str(BODY_TIMEOUT),
    ) as served:
        yield Server(served, create_event(served.url), log_path)


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert body["type"] == f"https://boxoffice.dev/problems/{slug}", body
    assert body["status"] == status
    return body


def parse_raw_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


# --- 1. oversized heads ----------------------------------------------------------------------


async def stream_head(port: int, size: int) -> tuple[int, float, bytes]:
    """Send a request head with one header of `size` bytes, 1 MiB at a time, until the server
    stops it; returns the bytes sent, the seconds it took, and what the server answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.perf_counter()
    sent = 0
    chunk = b"a" * (1 << 20)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: attacker\r\nX-Huge: ")
        while sent < size:
            writer.write(chunk)
            await writer.drain()
            sent += len(chunk)
    except OSError:
        pass  # the server closed the connection: what we want
    answer = b""
    with contextlib.suppress(OSError):
        answer = await asyncio.wait_for(reader.read(4096), 5)
    elapsed = time.perf_counter() - started
    writer.close()
    return sent, elapsed, answer


async def test_a_head_over_max_header_bytes_is_a_431_problem(guarded: Server) -> None:
    async with httpx.AsyncClient(base_url=guarded.url, timeout=10) as client:
        refused = await client.get("/healthz", headers={"X-Big": "a" * 40_000})
        body = assert_problem(refused, 431, "request-header-too-large")
        assert refused.headers["connection"] == "close"
        assert body["title"]
        # A large but acceptable head (big cookies) is served as usual.
        fine = await client.get("/healthz", headers={"Cookie": "c=" + "a" * 16_000})
        assert fine.status_code == 200
        # The refusal is counted.
        assert metric(guarded.served, SHED, reason="header-too-large") >= 1


async def test_150_mb_heads_are_cut_off_and_stall_nobody(guarded: Server) -> None:
    workers = workers_of(guarded.served)
    before = {pid: rss_kib(pid) for pid in workers}
    results: list[tuple[int, float, bytes]] = []

    async def attacker(until: float) -> None:
        while time.monotonic() < until:  # as soon as one is cut off, the next one starts
            results.append(await stream_head(guarded.port, 150 << 20))

    async with buyers_during(guarded.url, guarded.event_id):
        until = time.monotonic() + ATTACK_SECONDS
        await asyncio.gather(*(attacker(until) for _ in range(3)))
    assert len(results) >= 3
    for sent, elapsed, answer in results:
        # Cut off after about MAX_HEADER_BYTES (plus socket buffers), within moments.
        assert sent < 32 << 20, f"the server read {sent >> 20} MiB of one head"
        assert elapsed < 3, f"the attacker was stopped only after {elapsed:.1f} s"
        if answer:  # a 431, unless the connection reset overtook it
            status, headers, _ = parse_raw_response(answer)
            assert status == 431 and headers["content-type"] == PROBLEM_JSON
    for pid in workers:
        grew = rss_kib(pid) - before[pid]
        assert grew < RSS_GROWTH_BOUND_KIB, f"worker {pid} grew by {grew} KiB"


# --- 2. idle and slow connections -------------------------------------------------------------


async def idle_connection(port: int) -> tuple[float, bytes]:
    """Connect and send nothing: how long until the server closes it, and what it said."""
    # Timed from before the connect: the server's clock starts at its accept, never earlier,
    # while this task may resume from the connect late on a loaded machine.
    opened = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = await read_until_closed(reader, HEADER_TIMEOUT + 5)
    writer.close()
    return time.perf_counter() - opened, answer


async def trickling_head(port: int) -> tuple[float, bytes]:
    """Send a request head a byte every 200 ms (slowloris): how long until the server closes."""
    # Timed from before the connect: the server's clock starts at its accept, never earlier,
    # while this task may resume from the connect late on a loaded machine.
    opened = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: slow\r\n")

    async def trickle() -> None:
        with contextlib.suppress(OSError):
            while True:
                writer.write(b"X")
                await writer.drain()
                await asyncio.sleep(0.2)  # the attack's own pace

    sender = asyncio.create_task(trickle())
    answer = await read_until_closed(reader, HEADER_TIMEOUT + 5)
    sender.cancel()
    writer.close()
    return time.perf_counter() - opened, answer


async def trickling_body(port: int) -> tuple[float, bytes]:
    """A complete head announcing a body of 100 bytes, then one byte: the body never ends."""
    # Timed from before the connect: the server's clock starts at its accept, never earlier,
    # while this task may resume from the connect late on a loaded machine.
    opened = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"PATCH /tickets/reserve HTTP/1.1\r\nHost: slow\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n{"
    )
    answer = await read_until_closed(reader, BODY_TIMEOUT + 5)
    writer.close()
    return time.perf_counter() - opened, answer


async def read_until_closed(reader: asyncio.StreamReader, within: float) -> bytes:
    data = b""
    with contextlib.suppress(ConnectionError):
        async with asyncio.timeout(within):
            while chunk := await reader.read(4096):
                data += chunk
    return data


async def test_idle_and_slow_connections_are_closed_and_buyers_are_served(
    guarded: Server,
) -> None:
    workers = workers_of(guarded.served)
    files_before = sum(open_files(pid) for pid in workers)
    before = {pid: rss_kib(pid) for pid in workers}
    async with buyers_during(guarded.url, guarded.event_id):
        results = await asyncio.gather(
            *(idle_connection(guarded.port) for _ in range(200)),
            *(trickling_head(guarded.port) for _ in range(80)),
            *(trickling_body(guarded.port) for _ in range(20)),
        )
        # While they are all open, the workers hold them (a file each), and buyers are served.
    idle, heads, bodies = results[:200], results[200:280], results[280:]
    for seconds, answer in idle:
        # Closed after the deadline (the check runs once a second), silently: it sent nothing.
        assert HEADER_TIMEOUT - 0.1 <= seconds < HEADER_TIMEOUT + 2.5, seconds
        assert answer == b""
    for seconds, answer in heads:
        assert HEADER_TIMEOUT - 0.1 <= seconds < HEADER_TIMEOUT + 2.5, seconds
        status, headers, body = parse_raw_response(answer)
        assert status == 408 and headers["content-type"] == PROBLEM_JSON
        assert json.loads(body)["type"].endswith("/request-timeout")
    for seconds, answer in bodies:
        assert BODY_TIMEOUT - 0.1 <= seconds < BODY_TIMEOUT + 2.5, seconds
        status, headers, _ = parse_raw_response(answer)
        assert status == 408 and headers["content-type"] == PROBLEM_JSON
    # Their files are given back.
    deadline = time.monotonic() + 5
    while sum(open_files(pid) for pid in workers) > files_before + 20:
        assert time.monotonic() < deadline, "the workers still hold the closed connections"
        await asyncio.sleep(0.1)  # polling the workers' file tables, bounded by the deadline
    for pid in workers:
        grew = rss_kib(pid) - before[pid]
        assert grew < RSS_GROWTH_BOUND_KIB, f"worker {pid} grew by {grew} KiB"
    log = guarded.log_path.read_text()
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log


CAP = 64  # connections per worker in the capacity test


@pytest.fixture(scope="module")
@system_fixture
def crowded(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The service with room for CAP connections per worker and long head deadlines, so only
    the cap can close idle connections."""
    log_path = tmp_path_factory.mktemp("crowded") / "server.log"
    with serving(
        database_url,
        log_path,
        MAX_CONNECTIONS_PER_WORKER=str(CAP),
        HEADER_TIMEOUT_SECONDS="60",
        BODY_TIMEOUT_SECONDS="60",
    ) as served:
        yield Server(served, create_event(served.url), log_path)


async def test_a_worker_full_of_idle_connections_makes_room_for_buyers(crowded: Server) -> None:
    workers = workers_of(crowded.served)
    files_before = {pid: open_files(pid) for pid in workers}
    evicted_before = metric(crowded.served, SHED, reason="evicted")
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    ceiling = CAP + max(16, CAP // 8)  # what a worker may hold while it makes room
    async with buyers_during(crowded.url, crowded.event_id):
        # An attacker opening idle connections (200 a second, six times what the two workers
        # may hold in all) and keeping them: the workers never hold more than their ceiling.
        until = time.monotonic() + ATTACK_SECONDS
        while time.monotonic() < until:
            idle.append(await asyncio.open_connection("127.0.0.1", crowded.port))
            for pid in workers:
                assert open_files(pid) - files_before[pid] <= ceiling, "over the cap"
            await asyncio.sleep(1 / 200)  # the attacker's pace
        assert len(idle) >= 300
        # The idle connections that waited longest were closed to make room for newcomers:
        # poll until the server has closed all but what the workers may hold.
        deadline = time.monotonic() + 5
        while sum(not reader.at_eof() for reader, _ in idle) > 2 * CAP:
            assert time.monotonic() < deadline, "idle connections beyond the cap stay open"
            await asyncio.sleep(0.05)  # polling the sockets, bounded by the deadline
    for _, writer in idle:
        writer.close()
    evicted = metric(crowded.served, SHED, reason="evicted") - evicted_before
    assert evicted >= len(idle) - 2 * CAP
    assert metric(crowded.served, "boxoffice_http_connections_open") >= 1
    # Logged, but not once per connection: one line per worker and 10 s at most.
    lines = [line for line in crowded.log_path.read_text().splitlines() if "to make room" in line]
    assert 1 <= len(lines) <= 4, lines


async def test_a_worker_full_of_busy_connections_answers_503(crowded: Server) -> None:
    """Requests in progress (here: bodies that never end) are not closed to make room: a
    newcomer is told to come back (503 problem+json, Retry-After), or refused at once."""
    refused_before = metric(crowded.served, SHED, reason="over-capacity")
    busy = [await slow_body_connection(crowded.port) for _ in range(2 * CAP + 60)]
    try:
        answers = await asyncio.gather(*(newcomer(crowded.port) for _ in range(20)))
    finally:
        for _, writer in busy:
            writer.close()
    for seconds, answer in answers:
        assert seconds < 2, "a newcomer was left hanging"
        if answer:  # else refused at once, beyond the worker's ceiling
            status, headers, _ = parse_raw_response(answer)
            assert status in (200, 503), answer
            if status == 503:
                assert headers["content-type"] == PROBLEM_JSON
                assert headers["retry-after"] == "1"
    # The busy connections gone, buyers are served again at once.
    async with buyers_during(crowded.url, crowded.event_id):
        await asyncio.sleep(1)  # the buyers' run
    # The two workers held at most 2 × CAP of them: the rest, and the newcomers, were refused.
    assert metric(crowded.served, SHED, reason="over-capacity") - refused_before >= 60


async def slow_body_connection(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"PATCH /tickets/reserve HTTP/1.1\r\nHost: busy\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n{"
    )
    await writer.drain()
    return reader, writer


async def newcomer(port: int) -> tuple[float, bytes]:
    started = time.perf_counter()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return time.perf_counter() - started, b""
    with contextlib.suppress(OSError):
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: new\r\nConnection: close\r\n\r\n")
    answer = await read_until_closed(reader, 5)
    writer.close()
    return time.perf_counter() - started, answer


# --- 3. error amplification ---------------------------------------------------------------------


def ticket_ids_body(count: int) -> bytes:
    return b'{"ticket_ids": [' + b",".join([b"0"] * count) + b'], "customer": "x"}'


async def test_a_megabyte_of_ticket_ids_gets_a_small_answer_at_once(guarded: Server) -> None:
    path = f"/events/{guarded.event_id}/reservations"
    json_headers = {"Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=guarded.url, timeout=30) as client:
        started = time.perf_counter()
        huge = await client.post(path, content=ticket_ids_body(520_000), headers=json_headers)
        assert time.perf_counter() - started < 1
        assert_problem(huge, 413, "payload-too-large")
        assert len(huge.content) < 1000
        # Under the buyers' cap but wrong everywhere: 2,000 ids and 500 unknown members.
        wrong = (
            b'{"ticket_ids": ['
            + b",".join([b'"x"'] * 2000)
            + b'], "customer": "c", '
            + b",".join(b'"k%d": 1' % i for i in range(500))
            + b"}"
        )
        assert len(wrong) < 16_384
        started = time.perf_counter()
        refused = await client.post(path, content=wrong, headers=json_headers)
        assert time.perf_counter() - started < 1
        body = assert_problem(refused, 422, "invalid-request")
        assert len(body["errors"]) == 5
        assert body["errors"][0]["type"] == "too_long"
        assert body["errors_omitted"] == 496
        assert "(and 500 more)" in body["detail"]
        assert len(refused.content) < 2000
        # The admin's POST /events keeps MAX_BODY_BYTES: a large body is judged, not refused.
        event = await client.post(
            "/events",
            content=b'{"name": "' + b"n" * 100_000 + b'"}',
            headers={**ADMIN, **json_headers},
        )
        assert_problem(event, 422, "invalid-request")


async def test_megabyte_bodies_in_a_loop_stall_nobody(guarded: Server) -> None:
    path = f"/events/{guarded.event_id}/reservations"
    workers = workers_of(guarded.served)
    before = {pid: rss_kib(pid) for pid in workers}
    huge = ticket_ids_body(520_000)
    sent = 0

    async def attacker(stop: asyncio.Event) -> None:
        nonlocal sent
        async with httpx.AsyncClient(base_url=guarded.url, timeout=30) as client:
            while not stop.is_set():
                response = await client.post(
                    path, content=huge, headers={"Content-Type": "application/json"}
                )
                assert response.status_code == 413
                sent += 1

    stop = asyncio.Event()
    async with buyers_during(guarded.url, guarded.event_id):
        attackers = [asyncio.create_task(attacker(stop)) for _ in range(2)]
        await asyncio.sleep(ATTACK_SECONDS)  # the attack's duration
        stop.set()
        await asyncio.gather(*attackers)
    assert sent >= 20, f"only {sent} attacks were answered in {ATTACK_SECONDS} s"
    # Each refusal is a warning, but at most one a second per worker: no flood of log lines.
    warnings = guarded.log_path.read_text().count("body over")
    assert warnings <= 2 * (ATTACK_SECONDS + 2), f"{warnings} warnings for {sent} refusals"
    for pid in workers:
        grew = rss_kib(pid) - before[pid]
        assert grew < RSS_GROWTH_BOUND_KIB, f"worker {pid} grew by {grew} KiB"


# --- 4. log injection ----------------------------------------------------------------------------


@contextmanager
def serving_with_access_log(database_url: str, log_path: Path, **env: str) -> Iterator[str]:
    """`boxoffice serve` at --log-level info (uvicorn's access log on), one worker."""
    with running_server(database_url, log_path, workers=1, log_level="info", **env) as url:
        yield url


FORGED = "boxoffice: forged"


def forging_paths() -> list[str]:
    """Paths whose decoded form ends a log line and starts a forged one."""
    return [
        "/x%0Aboxoffice:%20forged",
        "/x%0D%0Aboxoffice:%20forged",
        "/x%E2%80%A8boxoffice:%20forged",  # U+2028, a line separator to some viewers
        "/x%1B%5B2K%0Dboxoffice:%20forged",  # erase the line, back to its start
    ]


@pytest.mark.parametrize("log_format", ["text", "json"])
@pytest.mark.system
def test_a_newline_in_the_path_forges_no_log_line(
    database_url: str, tmp_path: Path, log_format: str
) -> None:
    log_path = tmp_path / "server.log"
    with (
        serving_with_access_log(database_url, log_path, LOG_FORMAT=log_format) as base_url,
        httpx.Client(base_url=base_url, timeout=30) as client,
    ):
        for path in forging_paths():
            # The access log names every request; the 413's warning names the path too.
            assert client.get(path).status_code == 404
            refused = client.post(path, content=b"x" * 20_000)
            assert refused.status_code == 413
            assert refused.headers["content-type"] == PROBLEM_JSON
    text = log_path.read_text()
    lines = text.splitlines()
    for line in lines:
        message = line
        if log_format == "json" and line.startswith("{"):
            message = json.loads(line)["message"]  # every JSON line is whole
        assert not message.lstrip().startswith(FORGED), line
        assert "\r" not in message and "\x1b" not in message and "\u2028" not in message
    # The first refusal is logged (the others within the second are only counted).
    refusals = [line for line in lines if "body over" in line and "forged" in line]
    assert refusals and "\\nboxoffice: forged" in refusals[0], text


def test_escape_controls_keeps_ordinary_text_and_escapes_line_breaks() -> None:
    assert escape_controls("GET /events/ö 200") == "GET /events/ö 200"
    assert escape_controls("a\nb\r\x1b[2K\u2028\x85\x00") == "a\\nb\\r\\x1b[2K\\u2028\\x85\\x00"
    # Escaping is idempotent: a record met by two handlers reads the same in both.
    once = escape_controls("x\ny")
    assert escape_controls(once) == once
