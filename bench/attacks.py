#!/usr/bin/env python3
"""Attacks: what hostile traffic costs the buyers, in one command.

    .venv/bin/python bench/attacks.py [--database-url URL] [--only headers,idle,...] [--seconds N]

Starts `boxoffice serve --workers 2` as bench/run.py does (boxbench's `Server` and
`benchmark_database`) and measures a baseline, then each attack, while buyers reserve seats
(a child process, so the attacker's event loop never delays the buyers' clock). One row per
attack; it reports and asserts nothing. bench/README.md says what each attack does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import os
import re
import resource
import secrets
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from boxbench.common import PLAIN_HTTP, percentile, say, table
from boxbench.database import benchmark_database
from boxbench.server import Server

ATTACKS = ("headers", "idle", "slowloris", "amplification", "log-injection")
HOST = "127.0.0.1"
# Buyers hold about 5 seats a second. Each measurement gets a slice of 3,000 seats of its own
# (ten minutes' worth), so no two reservations ever ask for the same seat.
SEAT_ROWS, SEATS_PER_ROW, SLICE = 20, 1_000, 3_000
HUGE_HEADER = 150_000_000
CHUNK = b"a" * 65_536
IDLE_TARGET = 20_000
FD_RESERVE = 50  # left free while idling: the sampler reads /proc, the buyers run elsewhere
SLOW_CONNECTIONS = 200
INJECTED = ("%0A", "%0D%0A", "%E2%80%A8", "%1B%5B2K%0D")
FORGED = "boxoffice: forged"
JSON = {"Content-Type": "application/json"}
SHED = re.compile(r'^boxoffice_http_connections_shed_total\{reason="([^"]+)"\} (\S+)$', re.M)


# --------------------------------------------------------------------------------------------
# The buyers: a child process of this script (`--buyer-loop`), from "ready" until SIGTERM


async def buyer_loop(base_url: str, event_id: str, seats: list[int]) -> dict[str, object]:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    latencies: list[float] = []
    failures: list[str] = []

    async def timed(http: httpx.AsyncClient, path: str, expect: int, body: object = None) -> None:
        method = "GET" if body is None else "POST"
        started = time.perf_counter()
        try:
            response = await http.request(method, path, json=body)
            if response.status_code != expect:
                failures.append(f"{method} {path}: {response.status_code} {response.text[:80]}")
        except httpx.HTTPError as exc:
            failures.append(f"{method} {path}: {exc!r}")
        latencies.append((time.perf_counter() - started) * 1000)

    async def reserve(http: httpx.AsyncClient) -> None:
        if not seats:
            failures.append("the buyers ran out of seats")
            stop.set()
            return
        seat = seats.pop(0)
        body = {"ticket_ids": [seat], "customer": f"buyer-{seat}@example.com"}
        await timed(http, f"/events/{event_id}/reservations", 201, body)

    async def paced(interval: float, request: Callable[[], Awaitable[None]]) -> None:
        while not stop.is_set():
            await request()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    def client(headers: dict[str, str] | None = None) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=base_url, timeout=15, verify=PLAIN_HTTP, headers=headers)

    # `Connection: close`: each reservation comes on a new connection, as a new visitor's would.
    async with client() as keep_alive, client({"Connection": "close"}) as fresh:
        print("ready", flush=True)
        await asyncio.gather(
            paced(1 / 15, lambda: timed(keep_alive, "/healthz", 200)),
            paced(0.2, lambda: reserve(fresh)),
        )
    return {"latencies_ms": latencies, "failures": failures}


@dataclass
class BuyerResult:
    latencies_ms: list[float]
    failures: list[str]

    @property
    def ok(self) -> str:
        return f"{len(self.latencies_ms) - len(self.failures):,} / {len(self.failures):,}"

    def latency(self) -> str:
        ms = sorted(self.latencies_ms) or [0.0]
        return f"{percentile(ms, 0.5):.1f} / {percentile(ms, 0.99):.1f} / {ms[-1]:.1f} ms"


class Buyers:
    """The buyer loop in a child process, started before an attack and stopped after it."""

    def __init__(self) -> None:
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, base_url: str, event_id: str, seats: list[int]) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *(sys.executable, __file__, "--buyer-loop", base_url, event_id, json.dumps(seats)),
            stdout=asyncio.subprocess.PIPE,
        )
        assert self.process.stdout is not None
        async with asyncio.timeout(60):
            if (await self.process.stdout.readline()).strip() != b"ready":
                raise RuntimeError("the buyer loop did not start")

    async def stop(self) -> BuyerResult:
        assert self.process is not None
        try:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(60):
                out, _ = await self.process.communicate()
        finally:
            if self.process.returncode is None:
                self.process.kill()
                await self.process.wait()
        try:
            return BuyerResult(**json.loads(out.decode().splitlines()[-1]))
        except (ValueError, IndexError):
            raise RuntimeError("the buyer loop ended without its figures") from None


# --------------------------------------------------------------------------------------------
# The server's workers, seen in /proc


def rss_kib(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


class Workers:
    """The serve process's spawned children (uvicorn's workers): RSS and open files."""

    def __init__(self, serve_pid: int) -> None:
        self.pids = []
        for entry in filter(str.isdigit, os.listdir("/proc")):
            with contextlib.suppress(OSError):
                parent = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
                if (
                    parent == serve_pid
                    and b"spawn_main" in Path(f"/proc/{entry}/cmdline").read_bytes()
                ):
                    self.pids.append(int(entry))
        self.rss_before = [rss_kib(pid) for pid in self.pids]
        self.rss_peak = list(self.rss_before)
        self.fds_before = sum(open_fds(pid) for pid in self.pids)
        self.fds_peak = 0  # above fds_before: the connections they held at once

    async def sample(self) -> None:
        while True:  # four times a second, until cancelled
            rss = [rss_kib(pid) for pid in self.pids]
            self.rss_peak = [max(pair) for pair in zip(self.rss_peak, rss, strict=True)]
            held = sum(open_fds(pid) for pid in self.pids) - self.fds_before
            self.fds_peak = max(self.fds_peak, held)
            await asyncio.sleep(0.25)

    def rss(self) -> str:
        def mb(values: Sequence[int]) -> str:
            return ", ".join(f"{kib / 1024:.0f}" if kib else "gone" for kib in values)

        now = [rss_kib(pid) for pid in self.pids]
        return f"{mb(self.rss_before)} → {mb(now)} MB (peak {mb(self.rss_peak)})"


# --------------------------------------------------------------------------------------------
# The attacks


class IdleConnection(asyncio.Protocol):
    """Sends nothing; notes when the server closes it."""

    def __init__(self) -> None:
        self.closed = asyncio.Event()
        self.closed_at = 0.0

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed_at = time.monotonic()
        self.closed.set()


async def answer_of(reader: asyncio.StreamReader, seconds: float) -> tuple[int | None, int]:
    """The status and size of what the server sends until it closes (or `seconds` pass)."""
    answer = b""
    with contextlib.suppress(OSError):  # TimeoutError and resets included
        async with asyncio.timeout(seconds):
            while chunk := await reader.read(65_536):
                answer += chunk
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.") else None
    return status, len(answer)


def counts(values: Sequence[object]) -> str:
    return ", ".join(f"{n:,}× {value}" for value, n in Counter(values).most_common())


def ids_body(count: int) -> bytes:
    return b'{"ticket_ids": [' + b",".join([b"0"] * count) + b'], "customer": "x"}'


@dataclass
class Row:
    attack: str
    attacker: str = "–"
    buyers: BuyerResult = field(default_factory=lambda: BuyerResult([], []))
    rss: str = "–"
    server: str = ""
    error: str | None = None


class AttackBench:
    def __init__(self, server: Server, env: dict[str, str], seconds: float) -> None:
        self.server, self.env, self.seconds = server, env, seconds
        self.event_id = ""
        self.seats: list[int] = []
        self.workers: Workers | None = None

    def client(self, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
        url = self.server.base_url
        return httpx.AsyncClient(base_url=url, timeout=30, verify=PLAIN_HTTP, headers=headers)

    async def create_event(self) -> None:
        async with self.client({"Authorization": f"Bearer {self.server.admin_token}"}) as http:
            section = {"name": "Floor", "rows": SEAT_ROWS, "seats_per_row": SEATS_PER_ROW}
            body: dict[str, object] = {"name": "Attacks", "venue": "bench"}
            # An hour's hold: no seat comes back on sale during the run.
            body |= {"starts_at": "2030-06-01T20:00:00Z", "hold_seconds": 3_600}
            body["sections"] = [{**section, "price": 5000}]
            response = await http.post("/events", json=body)
            if response.status_code != 201:
                raise RuntimeError(f"POST /events answered {response.status_code}: {response.text}")
            self.event_id = response.json()["id"]
            params: dict[str, str | int] = {"status": "available", "limit": 500}
            while True:
                answer = await http.get(f"/events/{self.event_id}/tickets", params=params)
                page = answer.raise_for_status().json()
                self.seats += [ticket["id"] for ticket in page["items"]]
                if not page["items"] or not page.get("next_after"):
                    break
                params["after"] = page["next_after"]
        say(f"created event {self.event_id} with {len(self.seats):,} seats")

    async def shed(self) -> Counter[str]:
        async with self.client() as http:
            text = (await http.get("/metrics")).text
        return Counter({reason: int(float(value)) for reason, value in SHED.findall(text)})

    async def measure(self, name: str, attack: Callable[[], Awaitable[tuple[str, str]]]) -> Row:
        row = Row(name)
        if not self.server.running:
            say("the server is not running: starting it again")
            await self.server.restart(**self.env)
        assert self.server.pid is not None
        self.workers = workers = Workers(self.server.pid)
        shed_before = await self.shed()
        seats, self.seats = self.seats[:SLICE], self.seats[SLICE:]
        say(f"{name}: running")
        buyers, note = Buyers(), ""
        sampling = asyncio.create_task(workers.sample())
        try:
            await buyers.start(self.server.base_url, self.event_id, seats)
            row.attacker, note = await attack()
        except Exception as exc:  # one attack that cannot run must not stop the others
            row.error = f"{type(exc).__name__}: {exc}"
        finally:
            sampling.cancel()
            try:
                row.buyers = await buyers.stop()
            except Exception as exc:  # no figures from the buyers: the row is not a measurement
                row.error = row.error or f"{type(exc).__name__}: {exc}"
        row.rss = workers.rss()
        if not self.server.running:
            row.error = f"the server died; its log ends:\n{self.server.log_tail(10)}"
        else:
            shed = await self.shed() - shed_before
            shed_text = ", ".join(f"{reason} {n:,}" for reason, n in sorted(shed.items()))
            row.server = "; ".join(filter(None, [note, f"shed: {shed_text or 'none'}"]))
        say(
            f"{name}: attacker got {row.attacker} | buyers ok/failed {row.buyers.ok}, "
            f"p50/p99/max {row.buyers.latency()} | worker RSS {row.rss} | {row.server}"
            + "".join(f"\n    buyer failure: {f}" for f in row.buyers.failures[:3])
            + (f"\n    COULD NOT RUN: {row.error}" if row.error else "")
        )
        return row

    async def baseline(self) -> tuple[str, str]:
        await asyncio.sleep(self.seconds)  # the buyers alone, as long as a timed attack
        return f"no attack ({self.seconds:g} s)", ""

    async def headers(self) -> tuple[str, str]:
        """Two connections at a time, each sending a 150 MB header as fast as it can."""
        outcomes: list[object] = []
        sent: list[int] = []
        cut_ms: list[float] = []

        async def one() -> None:
            reader, writer = await asyncio.open_connection(HOST, self.server.port)
            started, total, outcome = time.perf_counter(), 0, "sent it all"
            try:
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: attacker\r\nX-Huge: ")
                while total < HUGE_HEADER:
                    writer.write(CHUNK)
                    await writer.drain()
                    total += len(CHUNK)
            except ConnectionError:  # reset, or a broken pipe after the reset
                outcome = "reset"
            cut_ms.append((time.perf_counter() - started) * 1000)
            status, _ = await answer_of(reader, 5)
            writer.close()
            outcomes.append(status or outcome)
            sent.append(total)

        async def attacker(until: float) -> None:
            while time.monotonic() < until:
                await one()

        until = time.monotonic() + self.seconds
        await asyncio.gather(attacker(until), attacker(until))
        async with self.client() as http:  # a head just over the bound, read normally: the 431
            probe = await http.get("/healthz", headers={"X-Big": "a" * 40_000})
        return (
            f"{len(sent):,} heads: {counts(outcomes)}; cut after {min(sent) / 1e6:.1f}–"
            f"{max(sent) / 1e6:.1f} MB, ≤ {max(cut_ms):.0f} ms (a 40 KB head: {probe.status_code})",
            "",
        )

    async def idle(self) -> tuple[str, str]:
        """Up to 20,000 connections that never send a byte, held until the server closes them."""
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        limit = hard if hard != resource.RLIM_INFINITY else IDLE_TARGET + 1024
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
        opened: list[tuple[asyncio.BaseTransport, IdleConnection]] = []
        errors: Counter[str] = Counter()
        gate = asyncio.Semaphore(256)  # connects in flight: more would only queue in the backlog

        async def connect() -> None:
            async with gate:
                try:
                    async with asyncio.timeout(10):
                        opened.append(
                            await asyncio.get_running_loop().create_connection(
                                IdleConnection, HOST, self.server.port
                            )
                        )
                except OSError as exc:  # TimeoutError included
                    errors[errno.errorcode.get(exc.errno or 0, type(exc).__name__)] += 1

        try:
            target = min(IDLE_TARGET, limit - len(os.listdir("/proc/self/fd")) - FD_RESERVE)
            started = time.monotonic()
            await asyncio.gather(*(connect() for _ in range(target)))
            opened_in = time.monotonic() - started
            await asyncio.sleep(self.seconds)  # hold them
            held = sum(not idle.closed.is_set() for _, idle in opened)
            with contextlib.suppress(TimeoutError):  # the head timeout should close the rest
                await asyncio.wait_for(asyncio.gather(*(c.closed.wait() for _, c in opened)), 30)
            left = sum(not idle.closed.is_set() for _, idle in opened)
            last = max((idle.closed_at for _, idle in opened), default=started) - started
        finally:
            for transport, _ in opened:
                transport.close()
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        failed = "".join(f", {error} {n:,}" for error, n in errors.items())
        closed = f"{left:,} open after 30 s more" if left else f"the last closed at {last:.1f} s"
        assert self.workers is not None
        return (
            f"opened {len(opened):,} of {target:,} in {opened_in:.1f} s (fd limit {limit:,}"
            f"{failed}); {held:,} still open {self.seconds:g} s later, {closed}",
            f"workers held ≤ {self.workers.fds_peak:,} connections at once",
        )

    async def slowloris(self) -> tuple[str, str]:
        """200 connections trickling a request head, a byte every 200 ms, until closed."""

        async def one() -> tuple[object, int, float]:
            started = time.perf_counter()
            reader, writer = await asyncio.open_connection(HOST, self.server.port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: slow\r\n")

            async def trickle() -> None:
                with contextlib.suppress(OSError):
                    while True:
                        await asyncio.sleep(0.2)
                        writer.write(b"X")
                        await writer.drain()

            trickling = asyncio.create_task(trickle())
            status, size = await answer_of(reader, 30)
            trickling.cancel()
            writer.close()
            return status or "closed without an answer", size, time.perf_counter() - started

        results = await asyncio.gather(*(one() for _ in range(SLOW_CONNECTIONS)))
        closed = sorted(seconds for _, _, seconds in results)
        sizes = ", ".join(map(str, sorted({size for _, size, _ in results})))
        return (
            f"{counts([status for status, _, _ in results])} ({sizes} B) "
            f"after {closed[0]:.1f}–{closed[-1]:.1f} s",
            "",
        )

    async def amplification(self) -> tuple[str, str]:
        """A megabyte of ticket ids, then 15 KB of them, then two clients looping the megabyte."""
        path, megabyte = f"/events/{self.event_id}/reservations", ids_body(520_000)
        once, outcomes, latencies = [], [], []

        async def post(http: httpx.AsyncClient, body: bytes) -> tuple[object, int]:
            started = time.perf_counter()
            try:
                response = await http.post(path, content=body, headers=JSON)
                outcome: tuple[object, int] = response.status_code, len(response.content)
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__, 0
            latencies.append((time.perf_counter() - started) * 1000)
            return outcome

        async with self.client() as http:
            for size, count in (("1 MB", 520_000), ("15 KB", 7_480)):
                status, answer = await post(http, ids_body(count))
                once.append(
                    f"{size}, {count:,} ids: {status}, {answer} B, {latencies.pop():.0f} ms"
                )

        async def looping(until: float) -> None:
            async with self.client() as http:
                while time.monotonic() < until:
                    outcomes.append((await post(http, megabyte))[0])

        until = time.monotonic() + self.seconds
        await asyncio.gather(looping(until), looping(until))
        gigabytes = len(outcomes) * len(megabyte) / 1e9
        return (
            f"{'; '.join(once)}; looped: {counts(outcomes)} in {self.seconds:g} s "
            f"({len(outcomes) / self.seconds:,.0f}/s, {gigabytes:.1f} GB sent, "
            f"p99 {percentile(sorted(latencies), 0.99):.1f} ms)",
            "",
        )

    async def log_injection(self) -> tuple[str, str]:
        """Line breaks and a terminal escape in the path, then a look at the server's log."""
        log_start = self.server.log_path.stat().st_size
        answers: list[object] = []
        async with self.client() as http:
            for code in INJECTED:
                path = f"/x{code}boxoffice:%20forged"
                answers.append(f"GET {(await http.get(path)).status_code}")
                # The 413's warning names the path (the access log is off at --log-level
                # warning) and comes at most once a second per worker: pace so each is written.
                await asyncio.sleep(1.1)
                answers.append(f"POST {(await http.post(path, content=b'x' * 20_000)).status_code}")
        deadline, logged = time.monotonic() + 5, 0
        while logged < len(INJECTED) and time.monotonic() < deadline:  # bounded: 5 s at most
            await asyncio.sleep(0.1)
            with self.server.log_path.open("rb") as log:
                log.seek(log_start)
                logged = log.read().decode(errors="replace").count("forged: body over")
        # splitlines() breaks at \r, U+2028 and the other separators too, not only at \n.
        text = self.server.log_path.read_text(errors="replace")
        forged = sum(line.lstrip().startswith(FORGED) for line in text.splitlines())
        return (
            f"{len(INJECTED)} paths: {counts(answers)}",
            f"{logged} of {len(INJECTED)} refusals logged; {forged} log lines start “{FORGED}”",
        )


# --------------------------------------------------------------------------------------------


async def run_attacks(
    database_url: str, workdir: Path, chosen: list[str], seconds: float
) -> list[Row]:
    env = {"SERVER_SECRET": secrets.token_urlsafe(48)}  # serve wants at least 32 characters
    server = Server(database_url, "bench-admin-" + secrets.token_urlsafe(16), 2, workdir)
    rows: list[Row] = []
    try:
        say("starting boxoffice serve --workers 2")
        await server.start(**env)
        bench = AttackBench(server, env, seconds)
        await bench.create_event()
        for name in ["baseline", *chosen]:
            rows.append(await bench.measure(name, getattr(bench, name.replace("-", "_"))))
    except Exception as exc:  # the server or the event could not be made
        rows.append(Row("setup", error=f"{type(exc).__name__}: {exc}"))
        say(f"COULD NOT RUN: {rows[-1].error}")
    finally:
        await server.stop()
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url",
        default=os.environ.get("TEST_DATABASE_URL"),
        help="a server for a throwaway database (default: TEST_DATABASE_URL, else embedded)",
    )
    parser.add_argument("--only", help=f"comma-separated attacks (default: {','.join(ATTACKS)})")
    parser.add_argument("--seconds", type=float, default=10.0, help="per timed attack (10)")
    parser.add_argument("--buyer-loop", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.buyer_loop:
        base_url, event_id, seats = args.buyer_loop
        print(json.dumps(asyncio.run(buyer_loop(base_url, event_id, json.loads(seats)))))
        return 0
    wanted = {name.strip() for name in (args.only or ",".join(ATTACKS)).split(",")} - {""}
    if wanted - set(ATTACKS):
        print(f"attacks: unknown attacks {sorted(wanted - set(ATTACKS))}", file=sys.stderr)
        return 2
    # As in run.py: one temporary folder for the embedded PostgreSQL and the server.
    with (
        tempfile.TemporaryDirectory(prefix="boxoffice-attacks-", ignore_cleanup_errors=True) as tmp,
        benchmark_database(args.database_url, Path(tmp)) as database,
    ):
        chosen = [name for name in ATTACKS if name in wanted]
        rows = asyncio.run(run_attacks(database.url, Path(tmp), chosen, args.seconds))
    header = ["attack", "attacker got", "buyers ok / failed", "buyers p50 / p99 / max"]
    header += ["worker RSS before → after", "server"]
    lines = []
    for row in rows:
        got = f"**could not run**: {row.error}".replace("\n", " ") if row.error else row.attacker
        lines.append([row.attack, got, row.buyers.ok, row.buyers.latency(), row.rss, row.server])
    print("\n" + table(header, lines))
    return 1 if any(row.error for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
