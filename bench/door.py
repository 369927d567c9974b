#!/usr/bin/env python3
"""From the hold to the door: what booking, checking in and the owed e-mail cost, through
HTTP and with pgbench on the same SQL in the same run; the figures into bench/RESULTS.md.

    .venv/bin/python bench/door.py                   # 2,000 bookings a measurement, c=16, 64
    .venv/bin/python bench/door.py --quick --output /tmp/results.md     # smoke run, ~1 min

It starts `boxoffice serve --workers 2` as a user does (boxbench's Server: a temporary folder,
the working tree's code, an explicit SERVER_SECRET, rate limits off, the sweeper off) with
PAYMENT_PROVIDER=test and the e-mail written as .eml files (SMTP_URL empty, MAIL_DIR in the
temporary folder), against a private embedded PostgreSQL unless --database-url (or
TEST_DATABASE_URL) names a server (a throwaway database there, dropped afterwards). On one
event it makes every hold first (HTTP, not timed), then measures, at each --concurrency:

- bookings through HTTP on fresh holds of 2 tickets: the direct confirm
  (`POST /reservations/{id}/confirm`), and the checkout (`POST /reservations/{id}/checkout`)
  followed by the test provider's signed notification (`POST /payments/webhooks/test`),
  with the outbox senders idle (OUTBOX_INTERVAL_SECONDS=3600), as pgbench sends no e-mail;
- first, once only (at the first --concurrency), direct confirms with the senders at work:
  the outbox's unsent backlog polled every 100 ms from the first booking until the two
  workers' senders have sent all they owe;
- first scans of distinct ticket codes (`POST /events/{id}/checkins`, one scanner token per
  connection), and 64 scanners on one code at once (exactly one may admit it);
- pgbench on the service's own SQL (imported, not copied; the server stopped meanwhile): the
  direct confirm's transaction (holder.confirm: the BOOK statement and the reads around it)
  on pre-made holds, and the check-in's transaction (checkin.service.check_in) on distinct
  codes.

Exit status: 0, or 1 when a measurement could not run or a sanity check failed (a booking
or a first scan refused, the hot code not admitted exactly once, e-mail not drained, the
invariants broken); the section is written either way, with what went wrong in its notes.
"""

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import secrets
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from boxbench.common import (
    DEFAULT_OUTPUT,
    PLAIN_HTTP,
    cpu_ms,
    ms,
    num,
    pct,
    percentile,
    ratio,
    read_text,
    say,
    table,
)
from boxbench.cpu import CpuSnapshot, CpuUsage, cpu_snapshot, cpu_usage, local_postmaster
from boxbench.cpu import machine_busy as machine_busy_share
from boxbench.database import Database, benchmark_database
from boxbench.load import lanes_for
from boxbench.machine import find_pgbench, git_revision, machine_facts, tool_version
from boxbench.pgbench import parse_pgbench, pgbench_env
from boxbench.plan import LONG_HOLD_SECONDS, SEATS_PER_ROW
from boxbench.sections import DOOR, with_section
from boxbench.server import Server

from boxoffice.checkin.service import _ADMIT, _DOOR_LOCK_TIMEOUT, _LOCK_TICKET, _SCANNER_BY_TOKEN
from boxoffice.config import Settings
from boxoffice.db import Database as ServiceDatabase
from boxoffice.payments.testpay import PAID, TestProvider
from boxoffice.reservations.holder import (
    _BOOKING,
    _LOCK_OWN_TICKETS,
    _LOCK_RESERVATION,
    _RESERVATION,
    _RESERVATION_TICKETS,
    BOOK,
)
from boxoffice.reservations.tokens import hash_token

BOOKINGS, QUICK_BOOKINGS = 2_000, 200
CONCURRENCIES = (16, 64)
HOT_SCANNERS = 64
TICKETS_PER_HOLD = 2
PREPARE_CONCURRENCY = 16
HTTP_TIMEOUT_SECONDS = 30
# OUTBOX_INTERVAL_SECONDS's largest value: the senders sleep through the measurements that
# are compared with pgbench.
SENDERS_IDLE_SECONDS = 3600
MAIL_RUN = "confirm, senders at work"
BACKLOG_POLL_SECONDS = 0.1
DRAIN_PATIENCE_SECONDS = 600
UNSENT = "SELECT count(*) FROM outbox_messages WHERE sent_at IS NULL"
JSON = {"Content-Type": "application/json"}

T = TypeVar("T")


# --- HTTP: lanes of one connection each ---------------------------------------------------


@dataclass
class Outcome:
    """One operation: its calls (name, status or 0 for a transport error, seconds)."""

    calls: list[tuple[str, int, float]]
    ok: bool
    seconds: float
    body: bytes = b""


Op = Callable[[httpx.AsyncClient, int, T], Awaitable[Outcome]]


class Lanes:
    """`count` clients of one keep-alive connection each; a run hands them items from one
    shared list, each lane taking the next as soon as it is free."""

    def __init__(self, base_url: str, count: int) -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        self.clients = [
            httpx.AsyncClient(
                base_url=base_url, limits=limits, timeout=HTTP_TIMEOUT_SECONDS, verify=PLAIN_HTTP
            )
            for _ in range(count)
        ]

    async def __aenter__(self) -> "Lanes":
        return self

    async def __aexit__(self, *_: object) -> None:
        await asyncio.gather(*(client.aclose() for client in self.clients))

    async def run(self, items: Sequence[T], op: Op[T]) -> tuple[float, list[Outcome]]:
        """Every item once; the seconds from the first request to the last answer."""
        pending = iter(items)
        outcomes: list[Outcome] = []

        async def lane(index: int) -> None:
            for item in pending:  # one iterator: the next free lane takes the next item
                outcomes.append(await op(self.clients[index], index, item))

        started = time.perf_counter()
        await asyncio.gather(*(lane(i) for i in range(len(self.clients))))
        return time.perf_counter() - started, outcomes


async def call(
    client: httpx.AsyncClient, name: str, method: str, path: str, **kwargs: Any
) -> tuple[httpx.Response | None, tuple[str, int, float]]:
    started = time.perf_counter()
    try:
        response = await client.request(method, path, **kwargs)
    except httpx.HTTPError:
        return None, (name, 0, time.perf_counter() - started)
    return response, (name, response.status_code, time.perf_counter() - started)


# --- what the benchmark works on ----------------------------------------------------------


@dataclass(frozen=True)
class Hold:
    n: int
    reservation_id: str
    token: str
    customer: str
    tickets: tuple[int, ...]


@dataclass
class HttpRun:
    """One HTTP measurement (warm-up excluded)."""

    kind: str
    concurrency: int
    ops: int
    ok: int
    seconds: float
    latencies: dict[str, list[float]]  # per call, and the whole operation: ms, sorted
    failures: Counter[str]
    cpu: CpuUsage | None
    mail: "MailFigures | None" = None

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def p(self, name: str, share: float) -> float | None:
        values = self.latencies.get(name)
        return percentile(values, share) if values else None


@dataclass
class PgbenchRun:
    kind: str
    concurrency: int
    transactions: int
    failed: int
    tps: float
    latencies: list[float]  # ms, sorted
    statements: list[tuple[str, float]]  # label, mean ms
    cpu: CpuUsage | None
    aborted: str | None = None


@dataclass
class MailFigures:
    messages: int
    peak: int
    at_end: int
    drained_after: float | None  # seconds after the last booking's answer; None: not drained
    whole_seconds: float | None  # from the first booking until drained
    failed: int
    files: int
    # From the last booking's answer until none was left: the senders' work alone.
    drain_cpu: CpuUsage | None = None

    @property
    def after_rate(self) -> float | None:
        if self.drained_after is None or self.at_end == 0:
            return None
        return self.at_end / max(self.drained_after, BACKLOG_POLL_SECONDS)

    @property
    def whole_rate(self) -> float | None:
        return self.messages / self.whole_seconds if self.whole_seconds else None


@dataclass
class HotFigures:
    scanners: int
    statuses: Counter[str]
    admitted_in_db: int
    audit_rows: int
    slowest_ms: float
    spread_ms: float


@dataclass
class Findings:
    facts: dict[str, str] = field(default_factory=dict)
    http: list[HttpRun] = field(default_factory=list)
    pgbench: list[PgbenchRun] = field(default_factory=list)
    hot: HotFigures | None = None
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def summarise(
    kind: str,
    concurrency: int,
    seconds: float,
    outcomes: list[Outcome],
    whole: str,
    cpu: CpuUsage | None,
) -> HttpRun:
    latencies: dict[str, list[float]] = {}
    failures: Counter[str] = Counter()
    for outcome in outcomes:
        for name, _status, took in outcome.calls:
            latencies.setdefault(name, []).append(took * 1000)
        if outcome.ok:
            latencies.setdefault(whole, []).append(outcome.seconds * 1000)
        else:
            name, status, _ = outcome.calls[-1]
            failures[f"{name} {status or 'transport error'}"] += 1
    for values in latencies.values():
        values.sort()
    return HttpRun(
        kind=kind,
        concurrency=concurrency,
        ops=len(outcomes),
        ok=sum(outcome.ok for outcome in outcomes),
        seconds=seconds,
        latencies=latencies,
        failures=failures,
        cpu=cpu,
    )


# --- the run ----------------------------------------------------------------------------


class Door:
    def __init__(self, args: argparse.Namespace, database: Database, workdir: Path) -> None:
        self.args = args
        self.database = database
        self.workdir = workdir
        self.mail_dir = workdir / "mail"
        self.server = Server(database.url, "bench-admin-" + secrets.token_urlsafe(16), 2, workdir)
        # What the server runs with (same environment, no .env, the same secret): the test
        # provider's notifications are signed with it.
        self.settings = Settings(
            database_url=database.url, server_secret=self.server.server_secret, _env_file=None
        )
        self.provider = TestProvider(self.settings)
        self.found = Findings()
        self.pgbench = find_pgbench()
        self._conn: asyncpg.Connection | None = None
        self._poll: asyncpg.Connection | None = None
        self._admin: httpx.AsyncClient | None = None
        self.postmaster: int | None = None
        self.event_id = ""
        self.first_ticket = 0
        self.scanners: list[tuple[str, str]] = []  # (name, token)
        self.links: list[dict[str, Any]] = []  # a few direct confirms' answers
        self.paid_holds: list[Hold] = []  # a few holds booked by the provider's webhook

    @property
    def conn(self) -> asyncpg.Connection:
        assert self._conn is not None
        return self._conn

    @property
    def admin(self) -> httpx.AsyncClient:
        assert self._admin is not None
        return self._admin

    # -- set-up ---------------------------------------------------------------------------

    async def start_server(self, *, senders: bool) -> None:
        """The server, its outbox senders at work (OUTBOX_INTERVAL_SECONDS from the
        environment, default 1 s) or idle: a sender's pass at start-up finds nothing owed and
        the next comes after OUTBOX_INTERVAL_SECONDS=3600, after the run."""
        env = {
            "PAYMENT_PROVIDER": "test",
            "SMTP_URL": "",  # empty: the e-mail is written as .eml files under MAIL_DIR
            "MAIL_DIR": str(self.mail_dir),
        }
        if not senders:
            env["OUTBOX_INTERVAL_SECONDS"] = str(SENDERS_IDLE_SECONDS)
        await self.server.restart(**env)

    async def open(self) -> None:
        busy = await machine_busy_share()
        self.found.facts["other load"] = (
            f"{pct(busy)} of the machine's CPU was busy in the 2 s before the run started"
        )
        if busy is not None and busy > 0.15:
            say(f"door: warning: the machine is {pct(busy)} busy with other work")
            self.found.notes.append(
                f"The machine was {pct(busy)} busy with other work when the run started: "
                "the figures are lower than on an idle machine."
            )
        say("door: starting the server")
        await self.start_server(senders=True)
        self._conn = await asyncpg.connect(self.database.url)
        self._poll = await asyncpg.connect(self.database.url)
        self.postmaster = local_postmaster(await self.conn.fetchval("SELECT pg_backend_pid()"))
        self._admin = httpx.AsyncClient(
            base_url=self.server.base_url,
            timeout=120,
            headers={"Authorization": f"Bearer {self.server.admin_token}"},
        )
        await self.collect_facts()

    async def close(self) -> None:
        if self._admin is not None:
            await self._admin.aclose()
        for conn in (self._conn, self._poll):
            if conn is not None:
                await conn.close()
        await self.server.stop()

    async def create_event(self, tickets: int) -> None:
        rows = math.ceil(tickets / SEATS_PER_ROW)
        response = await self.admin.post(
            "/events",
            json={
                "name": "bench door",
                "venue": "bench",
                "starts_at": "2030-06-01T20:00:00Z",
                "hold_seconds": LONG_HOLD_SECONDS,
                "sections": [
                    {"name": "Floor", "rows": rows, "seats_per_row": SEATS_PER_ROW, "price": 5000}
                ],
            },
        )
        if response.status_code != 201:
            raise RuntimeError(f"POST /events answered {response.status_code}: {response.text}")
        self.event_id = response.json()["id"]
        first, last, count = await self.conn.fetchrow(
            "SELECT min(id), max(id), count(*) FROM tickets WHERE event_id = $1",
            uuid.UUID(self.event_id),
        )
        if last - first + 1 != count:
            raise RuntimeError("the event's ticket ids are not one contiguous range")
        self.first_ticket = int(first)
        say(f"door: created an event of {count:,} tickets")

    async def create_scanners(self, count: int) -> None:
        for index in range(count):
            response = await self.admin.post(
                f"/events/{self.event_id}/scanners", json={"name": f"door {index + 1}"}
            )
            if response.status_code != 201:
                raise RuntimeError(f"POST scanners answered {response.status_code}")
            answer = response.json()
            self.scanners.append((answer["name"], answer["token"]))

    async def prepare_holds(self, count: int) -> list[Hold]:
        """`count` holds of 2 adjacent tickets each, through HTTP (not timed)."""

        async def reserve(client: httpx.AsyncClient, _: int, n: int) -> Outcome:
            first = self.first_ticket + n * TICKETS_PER_HOLD
            customer = f"buyer-{n}@example.com"
            body = {"ticket_ids": [first, first + 1], "customer": customer}
            response, made = await call(
                client, "reserve", "POST", f"/events/{self.event_id}/reservations", json=body
            )
            ok = response is not None and response.status_code == 201
            return Outcome([made], ok, made[2], response.content if response is not None else b"")

        started = time.perf_counter()
        async with Lanes(self.server.base_url, PREPARE_CONCURRENCY) as lanes:
            _, outcomes = await lanes.run(range(count), reserve)
        holds = []
        for outcome in outcomes:
            if not outcome.ok:
                raise RuntimeError(f"a hold was refused: {outcome.calls} {outcome.body[:300]!r}")
            answer = json.loads(outcome.body)
            ids = tuple(sorted(int(ticket["id"]) for ticket in answer["tickets"]))
            n = (ids[0] - self.first_ticket) // TICKETS_PER_HOLD
            holds.append(Hold(n, answer["id"], answer["token"], answer["customer"], ids))
        holds.sort(key=lambda hold: hold.n)
        say(f"door: made {count:,} holds in {time.perf_counter() - started:.1f} s")
        return holds

    # -- measurement helpers ----------------------------------------------------------------

    async def checkpoint(self) -> None:
        with contextlib.suppress(asyncpg.PostgresError):
            await self.conn.execute("CHECKPOINT")

    async def cpu_since(self, before: CpuSnapshot, after: CpuSnapshot) -> CpuUsage:
        await asyncio.sleep(0.3)  # let the backends of a client that just left be reaped
        return cpu_usage(before, after, self.server.pid, self.postmaster, cpu_snapshot())

    async def wait_drained(self, patience: float = DRAIN_PATIENCE_SECONDS) -> bool:
        deadline = time.perf_counter() + patience
        while time.perf_counter() < deadline:
            if await self.conn.fetchval(UNSENT) == 0:
                return True
            await asyncio.sleep(BACKLOG_POLL_SECONDS)
        return False

    def eml_files(self) -> int:
        return sum(1 for _ in self.mail_dir.rglob("*.eml")) if self.mail_dir.exists() else 0

    async def watch_backlog(
        self, done: asyncio.Event, marks: dict[str, float]
    ) -> tuple[int, int, float | None]:
        """The outbox's unsent count every 100 ms until `done`, then until it is 0: the peak,
        the count at the last booking's answer, when it reached 0 (perf_counter)."""
        assert self._poll is not None
        peak, at_end, drained = 0, -1, None
        while True:
            count = int(await self._poll.fetchval(UNSENT))
            now = time.perf_counter()
            if at_end < 0:
                peak = max(peak, count)
                if done.is_set():
                    at_end = count
            if at_end >= 0 and count == 0:
                drained = now
                break
            if done.is_set() and now - marks["end"] > DRAIN_PATIENCE_SECONDS:
                break
            if not done.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), BACKLOG_POLL_SECONDS)
            else:
                await asyncio.sleep(BACKLOG_POLL_SECONDS)
        return peak, at_end, drained

    def warm_count(self, total: int, concurrency: int) -> int:
        return max(concurrency, total // 10)

    # -- bookings -------------------------------------------------------------------------

    async def confirm_op(self, client: httpx.AsyncClient, _: int, hold: Hold) -> Outcome:
        response, made = await call(
            client,
            "confirm",
            "POST",
            f"/reservations/{hold.reservation_id}/confirm",
            content=json.dumps({"payment_reference": f"bench-{hold.n}"}).encode(),
            headers={**JSON, "Authorization": f"Bearer {hold.token}"},
        )
        ok = response is not None and response.status_code == 200
        return Outcome([made], ok, made[2], response.content if ok and response else b"")

    async def checkout_op(self, client: httpx.AsyncClient, _: int, hold: Hold) -> Outcome:
        started = time.perf_counter()
        response, checkout = await call(
            client,
            "checkout",
            "POST",
            f"/reservations/{hold.reservation_id}/checkout",
            headers={"Authorization": f"Bearer {hold.token}"},
        )
        if response is None or response.status_code != 201:
            return Outcome([checkout], False, time.perf_counter() - started)
        payment = response.json()
        # The provider's payment id is the tail of the checkout page's path.
        provider_payment_id = payment["checkout_url"].split("?", 1)[0].rsplit("/", 1)[-1]
        body, headers = self.provider.notification(
            provider_payment_id, PAID, amount_minor=payment["amount"], currency=payment["currency"]
        )
        response, webhook = await call(
            client,
            "webhook",
            "POST",
            "/payments/webhooks/test",
            content=body,
            headers={**JSON, **headers},
        )
        ok = (
            response is not None
            and response.status_code == 200
            and response.json().get("outcome") == "booked"
        )
        return Outcome([checkout, webhook], ok, time.perf_counter() - started)

    async def bookings(
        self, kind: str, op: Op[Hold], holds: list[Hold], c: int, *, mail: bool = False
    ) -> HttpRun:
        """A warm-up (the first holds), then the measured bookings (the last `--bookings`).
        With `mail` (the senders at work): the warm-up's e-mail sent before, and the
        outbox's backlog watched from the first measured booking until the senders have
        sent all they owe."""
        warm_holds, measured = holds[: -self.args.bookings], holds[-self.args.bookings :]
        async with Lanes(self.server.base_url, c) as lanes:
            _, warm_outcomes = await lanes.run(warm_holds, op)
            refused = sum(not o.ok for o in warm_outcomes)
            if refused:
                self.found.errors.append(f"{kind} c={c}: {refused} warm-up bookings failed")
            if mail and not await self.wait_drained():
                raise RuntimeError("the warm-up's e-mail was not sent within 10 min")
            await self.checkpoint()
            last_id = await self.conn.fetchval("SELECT coalesce(max(id), 0) FROM outbox_messages")
            files = self.eml_files()
            done, marks = asyncio.Event(), {"end": 0.0}
            watcher = asyncio.create_task(self.watch_backlog(done, marks)) if mail else None
            before = cpu_snapshot()
            seconds, outcomes = await lanes.run(measured, op)
            after = cpu_snapshot()
            marks["end"] = after.at
            done.set()
            # The bookings' CPU ends here; what the senders use after it is the e-mail's.
            cpu = await self.cpu_since(before, after)
        run = summarise(kind, c, seconds, outcomes, "booking", cpu)
        self.found.http.append(run)
        if kind == "confirm" and not self.links:
            self.links = [json.loads(o.body) for o in outcomes[:5] if o.ok]
        if kind == "checkout" and not self.paid_holds:
            self.paid_holds = measured[:3]
        if run.ok != run.ops:
            self.found.errors.append(f"{kind} c={c}: {run.ops - run.ok} bookings failed")
        if watcher is not None:
            peak, at_end, drained = await watcher
            drain_cpu = cpu_usage(after, cpu_snapshot(), self.server.pid, self.postmaster)
            messages, failed = await self.conn.fetchrow(
                "SELECT count(*), count(*) FILTER (WHERE last_error IS NOT NULL) FROM "
                "outbox_messages WHERE id > $1",
                last_id,
            )
            run.mail = MailFigures(
                messages=int(messages),
                peak=peak,
                at_end=at_end,
                drained_after=None if drained is None else drained - marks["end"],
                whole_seconds=None if drained is None else drained - before.at,
                failed=int(failed),
                files=self.eml_files() - files,
                drain_cpu=drain_cpu if drained is not None else None,
            )
            if drained is None:
                self.found.errors.append(f"{kind} c={c}: the outbox did not drain in time")
            if run.mail.messages != run.ok or run.mail.files != run.ok:
                self.found.errors.append(
                    f"{kind} c={c}: {run.mail.messages} e-mails owed and {run.mail.files} "
                    f"written for {run.ok} bookings"
                )
        self.say_http(run, "booking")
        return run

    def say_http(self, run: HttpRun, whole: str) -> None:
        mail = ""
        if run.mail is not None:
            drained = run.mail.drained_after
            mail = f"; e-mail: peak backlog {run.mail.peak}, " + (
                "not drained" if drained is None else f"drained {drained:.1f} s after the last"
            )
        say(
            f"door: {run.kind} c={run.concurrency}: {run.ok}/{run.ops} in {run.seconds:.2f} s "
            f"= {run.rate:,.0f}/s, p50 {ms(run.p(whole, 0.5))}, p99 {ms(run.p(whole, 0.99))}" + mail
        )

    # -- check-in -------------------------------------------------------------------------

    async def checkin_op(self, client: httpx.AsyncClient, lane: int, code: str) -> Outcome:
        response, made = await call(
            client,
            "check-in",
            "POST",
            f"/events/{self.event_id}/checkins",
            content=json.dumps({"ticket_code": code}).encode(),
            headers={**JSON, "Authorization": f"Bearer {self.scanners[lane][1]}"},
        )
        ok = response is not None and response.status_code == 200
        return Outcome([made], ok, made[2])

    async def checkins(self, codes: list[str], c: int) -> HttpRun:
        """A warm-up (the first codes), then the measured first scans (the last
        2 × `--bookings`)."""
        measured = 2 * self.args.bookings
        async with Lanes(self.server.base_url, c) as lanes:
            await lanes.run(codes[:-measured], self.checkin_op)
            await self.checkpoint()
            before = cpu_snapshot()
            seconds, outcomes = await lanes.run(codes[-measured:], self.checkin_op)
            after = cpu_snapshot()
        run = summarise(
            "check-in", c, seconds, outcomes, "check-in", await self.cpu_since(before, after)
        )
        self.found.http.append(run)
        self.say_http(run, "check-in")
        if run.ok != run.ops:
            self.found.errors.append(f"check-in c={c}: {run.ops - run.ok} first scans refused")
        return run

    async def hot_code(self, code: str) -> None:
        """HOT_SCANNERS scanners, one connection each, all scan one code at once."""
        barrier = asyncio.Barrier(HOT_SCANNERS)

        async def scanner(client: httpx.AsyncClient, index: int) -> tuple[str, float, float]:
            with contextlib.suppress(httpx.HTTPError):
                await client.get("/healthz")
            await barrier.wait()
            sent = time.perf_counter()
            response, made = await call(
                client,
                "check-in",
                "POST",
                f"/events/{self.event_id}/checkins",
                content=json.dumps({"ticket_code": code}).encode(),
                headers={**JSON, "Authorization": f"Bearer {self.scanners[index][1]}"},
            )
            answer = "transport error"
            if response is not None:
                answer = str(response.status_code)
                if response.status_code != 200:
                    with contextlib.suppress(ValueError, AttributeError):
                        answer += " " + str(response.json()["type"]).rsplit("/", 1)[-1]
            return answer, sent, sent + made[2]

        async with Lanes(self.server.base_url, HOT_SCANNERS) as lanes:
            outcomes = await asyncio.gather(
                *(scanner(client, i) for i, client in enumerate(lanes.clients))
            )
        released = min(sent for _, sent, _ in outcomes)
        admitted, audits = await self.conn.fetchrow(
            "SELECT (SELECT count(*) FROM issued_tickets WHERE code = $1 AND checked_in_at IS "
            "NOT NULL), (SELECT count(*) FROM audit_log WHERE action = 'checked-in' AND "
            "details->>'ticket_code' = $1)",
            code,
        )
        hot = HotFigures(
            scanners=HOT_SCANNERS,
            statuses=Counter(answer for answer, _, _ in outcomes),
            admitted_in_db=int(admitted),
            audit_rows=int(audits),
            slowest_ms=max(answered - released for _, _, answered in outcomes) * 1000,
            spread_ms=(max(sent for _, sent, _ in outcomes) - released) * 1000,
        )
        self.found.hot = hot
        say(f"door: {HOT_SCANNERS} scanners on one code: {dict(hot.statuses)}")
        if hot.statuses.get("200") != 1 or hot.admitted_in_db != 1 or hot.audit_rows != 1:
            self.found.errors.append(
                f"{HOT_SCANNERS} scanners on one code: not exactly one admission "
                f"({dict(hot.statuses)}, {hot.admitted_in_db} in the database)"
            )

    async def check_codes_against_api(self) -> None:
        """The codes the benchmark reads from issued_tickets are the ones the buyer's
        booking link shows (GET /bookings/{id} with the link's secret): checked on a few."""
        answers = list(self.links)
        for hold in self.paid_holds:
            # The holder learns of the webhook's booking from GET /reservations/{id}.
            response = await self.admin.get(
                f"/reservations/{hold.reservation_id}",
                headers={"Authorization": f"Bearer {hold.token}"},
            )
            reservation = response.json()
            if reservation.get("status") != "confirmed" or not reservation.get("booking_url"):
                self.found.errors.append(f"hold {hold.reservation_id}: {reservation}")
                continue
            answers.append(
                {"id": reservation["booking_id"], "booking_url": reservation["booking_url"]}
            )
        checked = 0
        for answer in answers:
            booking_id = answer["id"]
            secret = answer["booking_url"].split("#", 1)[1]
            response = await self.admin.get(
                f"/bookings/{booking_id}", headers={"Authorization": f"Bearer {secret}"}
            )
            shown = sorted(ticket["code"] for ticket in response.json()["tickets"])
            stored = sorted(
                await self.conn.fetchval(
                    "SELECT array_agg(code) FROM issued_tickets WHERE booking_id = $1",
                    uuid.UUID(booking_id),
                )
            )
            if shown != stored or len(shown) != TICKETS_PER_HOLD:
                self.found.errors.append(f"booking {booking_id}: GET /bookings shows {shown}")
            checked += 1
        self.found.notes.append(
            f"Ticket codes are read from `issued_tickets`; for {checked} bookings (direct "
            "confirms, and checkouts whose link `GET /reservations/{id}` gave) they were "
            "checked against what `GET /bookings/{id}` shows with the booking link's secret."
        )

    async def unused_codes(self) -> list[str]:
        rows = await self.conn.fetch(
            "SELECT code FROM issued_tickets WHERE event_id = $1 AND checked_in_at IS NULL "
            "ORDER BY id",
            uuid.UUID(self.event_id),
        )
        return [row["code"] for row in rows]

    # -- pgbench --------------------------------------------------------------------------

    async def run_pgbench(
        self, kind: str, script: str, clients: int, per_client: int, variables: dict[str, str]
    ) -> PgbenchRun:
        assert self.pgbench is not None
        tag = uuid.uuid4().hex[:8]
        path = self.workdir / f"door-{tag}.sql"
        path.write_text(script)
        prefix = self.workdir / f"door-{tag}-log"
        command = [str(self.pgbench), "-n", "-M", "prepared", "-r", "-l"]
        command += ["--log-prefix", str(prefix)]
        command += ["-c", str(clients), "-j", str(lanes_for(clients)), "-t", str(per_client)]
        command += ["-f", str(path)]
        for name, value in {"tx": "0", "nothing": "nothing", **variables}.items():
            command += ["-D", f"{name}={value}"]
        command.append(self.database.url)
        env = pgbench_env(self.settings)
        before = cpu_snapshot()
        process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
        )
        out, err = await process.communicate()
        after = cpu_snapshot()
        output = out.decode(errors="replace") + err.decode(errors="replace")
        aborted = None
        if process.returncode == 2 and "tps = " in output:
            lines = [ln for ln in output.splitlines() if "aborted in command" in ln]
            reasons = Counter(ln.split("ERROR:", 1)[-1].strip() for ln in lines)
            aborted = (
                ", ".join(f"{n}× `{reason}`" for reason, n in reasons.items())
                or "some clients aborted"
            )
        elif process.returncode != 0:
            raise RuntimeError(f"pgbench failed ({process.returncode}):\n{output[-3000:]}")
        tps, transactions, failed, statements = parse_pgbench(output)
        latencies = []
        for log in self.workdir.glob(f"{prefix.name}.*"):
            for line in log.read_text().splitlines():
                fields = line.split()
                if len(fields) >= 3 and fields[2].isdigit():
                    latencies.append(int(fields[2]) / 1000)
        latencies.sort()
        return PgbenchRun(
            kind=kind,
            concurrency=clients,
            transactions=transactions,
            failed=failed,
            tps=tps,
            latencies=latencies,
            statements=statements,
            cpu=await self.cpu_since(before, after),
            aborted=aborted,
        )

    async def pgbench_pair(
        self,
        kind: str,
        script: str,
        clients: int,
        warm: int,
        measured: int,
        first: int,
        variables: dict[str, str],
    ) -> int:
        """A warm-up run and a measured one at `clients`, each client walking its own rows of
        the bench table from `first`; returns the rows used."""
        warm_each = max(1, warm // clients)
        each = max(1, measured // clients)
        await self.run_pgbench(
            kind,
            script,
            clients,
            warm_each,
            {**variables, "first": str(first), "per_client": str(warm_each)},
        )
        first += warm_each * clients
        await self.checkpoint()
        run = await self.run_pgbench(
            kind, script, clients, each, {**variables, "first": str(first), "per_client": str(each)}
        )
        self.found.pgbench.append(run)
        say(
            f"door: pgbench {kind} c={clients}: {run.transactions:,} at {run.tps:,.0f}/s, p50 "
            f"{ms(percentile(run.latencies, 0.5))}, p99 {ms(percentile(run.latencies, 0.99))}"
        )
        if run.aborted:
            # Not the benchmark's failure: what the service's SQL met (a lock wait beyond
            # the service's lock_timeout, say). The figures count what the others did.
            self.found.notes.append(
                f"pgbench {kind} c={clients}: {run.transactions:,} of {each * clients:,} "
                f"transactions done; some clients aborted: {run.aborted}"
            )
        elif run.failed or run.transactions != each * clients:
            self.found.errors.append(
                f"pgbench {kind} c={clients}: {run.transactions} of {each * clients} done, "
                f"{run.failed} failed"
            )
        return warm_each * clients + each * clients

    # -- facts ----------------------------------------------------------------------------

    async def collect_facts(self) -> None:
        facts = self.found.facts
        facts.update(machine_facts())
        row = await self.conn.fetchrow(
            "SELECT current_setting('server_version') AS version,"
            " current_setting('fsync') AS fsync,"
            " current_setting('synchronous_commit') AS synchronous_commit,"
            " current_setting('shared_buffers') AS shared_buffers"
        )
        where = (
            "embedded (private server in a temporary folder, unix socket)"
            if self.database.embedded
            else "external (`--database-url`; a throwaway database, dropped afterwards)"
        )
        facts["PostgreSQL"] = (
            f"{row['version']}, {where}; fsync {row['fsync']}, synchronous_commit "
            f"{row['synchronous_commit']}, shared_buffers {row['shared_buffers']}"
        )
        facts["server"] = (
            "`boxoffice serve --workers 2 --log-level warning`, PAYMENT_PROVIDER=test, "
            f"e-mail as .eml files (SMTP_URL empty, MAIL_DIR in the run's folder), "
            f"OUTBOX_INTERVAL_SECONDS {self.settings.outbox_interval_seconds:g}, POOL_SIZE "
            f"{self.settings.pool_size} + {self.settings.pool_max_overflow} per worker, "
            "SWEEP_INTERVAL_SECONDS=0, rate limits off"
        )
        facts["HTTP load"] = (
            f"asyncio + httpx {httpx.__version__} in the benchmark's process, one keep-alive "
            "connection per concurrent client"
        )
        facts["pgbench"] = (
            f"{tool_version([str(self.pgbench), '--version'])}, -M prepared"
            if self.pgbench is not None
            else "not found: no pgbench figures"
        )


# --- pgbench scripts from the service's SQL ---------------------------------------------

_PARAMETER = re.compile(r"\$(\d+)\b")
# A pgbench variable where pgbench would see one (it does not skip quoted literals).
_VARIABLE = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
_NULL = "NULLIF(:nothing, 'nothing')"
# BOOK's e-mail test says `[:space:]`, which pgbench would read as a variable `:space`;
# `\s` is the same class in a PostgreSQL regular expression's brackets.
_SPACE_CLASS = "[:space:]"


def bind(statement: str, values: dict[int, str], *, gset: str | None = None) -> str:
    """`statement` with each `$n` replaced by values[n] (pgbench variables), ended by `;` or
    by `\\gset prefix` (pgbench then keeps the answer's columns as variables)."""
    text = statement.strip().replace(_SPACE_CLASS, r"\s")
    missing = {int(n) for n in _PARAMETER.findall(text)} - values.keys()
    if missing:
        raise ValueError(f"no value for ${sorted(missing)} in {text[:60]!r}")
    text = _PARAMETER.sub(lambda match: values[int(match.group(1))], text)
    return text + (f"\n\\gset {gset}" if gset else ";")


def check_variables(script: str, known: Iterable[str]) -> str:
    """Refuse a script in which pgbench would find a variable nobody sets."""
    sql = "\n".join(line for line in script.splitlines() if not line.startswith("\\"))
    unknown = set(_VARIABLE.findall(sql)) - set(known)
    if unknown:
        raise ValueError(f"the pgbench script would read unset variables {sorted(unknown)}")
    return script


_PICK = [
    r"\set n :first + :client_id * :per_client + :tx",
    r"\set tx :tx + 1",
]


def confirm_script() -> str:
    """holder.confirm's transaction without an Idempotency-Key, on the n-th pre-made hold."""
    hold = ":hold_reservation_id"
    lines = [
        "-- written by bench/door.py: boxoffice.reservations.holder.confirm's statements",
        *_PICK,
        # Not the service's: which hold (its id, customer and two tickets), before BEGIN.
        "SELECT reservation_id, customer, t1, t2 FROM bench_door_holds WHERE n = :n",
        r"\gset hold_",
        "BEGIN;",
        bind(_LOCK_RESERVATION, {1: hold}),
        bind(_LOCK_OWN_TICKETS, {1: hold}),
        bind(
            BOOK,
            {
                1: hold,
                2: ":event_id",
                3: ":hold_customer",
                4: ":payment_reference",
                5: "ARRAY[:hold_t1, :hold_t2]",
                6: _NULL,
            },
        ),
        bind(_RESERVATION, {1: hold}),
        bind(_RESERVATION_TICKETS, {1: hold}),
        bind(_BOOKING, {1: hold}),
        "COMMIT;",
    ]
    known = ["n", "first", "client_id", "per_client", "tx", "event_id", "payment_reference"]
    known += ["nothing", "hold_reservation_id", "hold_customer", "hold_t1", "hold_t2"]
    return check_variables("\n".join(lines) + "\n", known)


def checkin_script() -> str:
    """checkin.service.check_in's transaction for a scanner, on the n-th unused code."""
    lines = [
        "-- written by bench/door.py: boxoffice.checkin.service.check_in's statements",
        *_PICK,
        # Not the service's: which code, before BEGIN.
        "SELECT code FROM bench_door_codes WHERE n = :n",
        r"\gset door_",
        "BEGIN;",
        _DOOR_LOCK_TIMEOUT.strip() + ";",
        bind(_SCANNER_BY_TOKEN, {1: ":scanner_hash"}, gset="scanner_"),
        bind(_LOCK_TICKET, {1: ":door_code"}, gset="ticket_"),
        bind(_ADMIT, {1: ":ticket_id", 2: ":scanner_name", 3: ":scanner_id"}),
        "COMMIT;",
    ]
    known = ["n", "first", "client_id", "per_client", "tx", "scanner_hash", "door_code"]
    known += ["ticket_id", "scanner_name", "scanner_id"]
    return check_variables("\n".join(lines) + "\n", known)


# --- the whole run ----------------------------------------------------------------------


async def run(args: argparse.Namespace, database: Database, workdir: Path) -> Findings:
    door = Door(args, database, workdir)
    found = door.found
    concurrencies: tuple[int, ...] = args.concurrency
    n = args.bookings
    checkins = 2 * n

    async def guarded(label: str, step: Awaitable[Any]) -> bool:
        """Run one step; a failure is reported and the run goes on with the next."""
        try:
            await step
        except Exception as error:
            found.errors.append(f"{label}: {type(error).__name__}: {error}")
            tail = door.server.log_tail() if door.server.running else ""
            say(f"door: {label} failed: {type(error).__name__}: {error}\n{tail}")
            return False
        return True

    try:
        await door.open()
        # Holds: each booking measurement's warm-up and N, for HTTP confirm, HTTP checkout
        # and pgbench's confirm at each concurrency, and the e-mail run's.
        per_kind = [door.warm_count(n, c) + n for c in concurrencies]
        holds_needed = 3 * sum(per_kind) + per_kind[0]
        await door.create_event(holds_needed * TICKETS_PER_HOLD)
        await door.create_scanners(max(HOT_SCANNERS, *concurrencies))
        holds = await door.prepare_holds(holds_needed)
        taken = per_kind[0]
        # The e-mail: direct confirms with the senders at work, as in service.
        say(f"door: confirm c={concurrencies[0]}, the outbox senders at work")
        await guarded(
            "e-mail",
            door.bookings(MAIL_RUN, door.confirm_op, holds[:taken], concurrencies[0], mail=True),
        )
        # Everything compared with pgbench: the senders idle (pgbench sends no e-mail).
        say("door: restarting the server with its outbox senders idle")
        await door.start_server(senders=False)
        for kind, op in (("confirm", door.confirm_op), ("checkout", door.checkout_op)):
            for c, count in zip(concurrencies, per_kind, strict=True):
                say(f"door: {kind} c={c}")
                await guarded(f"{kind} c={c}", door.bookings(kind, op, holds[taken:][:count], c))
                taken += count
        pgbench_holds = holds[taken:]

        codes = await door.unused_codes()
        await guarded("booking links", door.check_codes_against_api())
        await guarded("one code, many scanners", door.hot_code(codes.pop()))
        per_checkin = [door.warm_count(checkins, c) + checkins for c in concurrencies]
        for c, count in zip(concurrencies, per_checkin, strict=True):
            if count > len(codes):
                found.errors.append(f"check-in c={c}: {len(codes)} unused codes, {count} needed")
                continue
            say(f"door: check-in c={c}")
            await guarded(f"check-in c={c}", door.checkins(codes[:count], c))
            codes = codes[count:]

        if door.pgbench is None:
            found.notes.append("pgbench not found: no raw-database figures.")
        else:
            # The raw database alone: the server stopped.
            await door.server.stop()
            await guarded("pgbench", pgbench_runs(door, pgbench_holds, codes))
        await guarded("invariants", invariants(door))
    finally:
        await door.close()
    return found


async def pgbench_runs(door: Door, holds: list[Hold], spare_codes: list[str]) -> None:
    """pgbench on the direct confirm's and the check-in's SQL, at each concurrency, on the
    holds made for it and the codes nobody scanned yet (the bench tables list them)."""
    found = door.found
    n = door.args.bookings
    checkins = 2 * n
    await door.conn.execute(
        "CREATE UNLOGGED TABLE bench_door_holds (n int PRIMARY KEY, reservation_id uuid, "
        "customer text, t1 bigint, t2 bigint)"
    )
    await door.conn.copy_records_to_table(
        "bench_door_holds",
        records=[
            (i, uuid.UUID(hold.reservation_id), hold.customer, *hold.tickets)
            for i, hold in enumerate(holds)
        ],
    )
    await door.conn.execute("ANALYZE bench_door_holds")
    first = 0
    for c in door.args.concurrency:
        say(f"door: pgbench confirm c={c}")
        first += await door.pgbench_pair(
            "confirm",
            confirm_script(),
            c,
            door.warm_count(n, c),
            n,
            first,
            {"event_id": door.event_id, "payment_reference": "bench-pgbench"},
        )
    # Codes: those HTTP left, then those of pgbench's own bookings.
    spare = set(spare_codes)
    codes = spare_codes + [code for code in await door.unused_codes() if code not in spare]
    await door.conn.execute("CREATE UNLOGGED TABLE bench_door_codes (n int PRIMARY KEY, code text)")
    await door.conn.copy_records_to_table("bench_door_codes", records=list(enumerate(codes)))
    await door.conn.execute("ANALYZE bench_door_codes")
    # Every pgbench client scans as the first scanner (the service looks a token up by its
    # hash whichever scanner it is).
    scanner = "\\x" + hash_token(door.scanners[0][1]).hex()
    first = 0
    for c in door.args.concurrency:
        if first + door.warm_count(checkins, c) + checkins > len(codes):
            found.errors.append(f"pgbench check-in c={c}: not enough unused codes")
            continue
        say(f"door: pgbench check-in c={c}")
        first += await door.pgbench_pair(
            "check-in",
            checkin_script(),
            c,
            door.warm_count(checkins, c),
            checkins,
            first,
            {"scanner_hash": scanner},
        )


async def invariants(door: Door) -> None:
    from boxoffice.invariants import check_invariants

    await door.conn.execute("ANALYZE tickets, ticket_audit, reservations, reservation_tickets")
    db = ServiceDatabase(door.settings.model_copy(update={"statement_timeout_ms": 300_000}))
    try:
        violations = await check_invariants(db, event_id=uuid.UUID(door.event_id))
    finally:
        await db.close()
    if violations:
        text = "; ".join(str(v) for v in violations[:3])
        door.found.errors.append(f"invariants broken: {text}")
    else:
        door.found.notes.append("The event's invariants I1–I5 and its audit trail hold.")


# --- the report -------------------------------------------------------------------------


def _cpu(cpu: CpuUsage | None, ops: int, parts: tuple[str, ...] = ("app", "db", "client")) -> str:
    if cpu is None or not ops:
        return "–"
    each = cpu.per_request_ms(ops)
    return " / ".join(cpu_ms(each[part]).removesuffix(" ms") for part in parts)


def _lat(values: list[float] | None) -> tuple[str, str]:
    if not values:
        return "–", "–"
    return ms(percentile(values, 0.5)), ms(percentile(values, 0.99))


def section(found: Findings, args: argparse.Namespace, minutes: float) -> str:
    facts = found.facts
    pg = {(r.kind, r.concurrency): r for r in found.pgbench}
    http = {(r.kind, r.concurrency): r for r in found.http}
    rows: list[list[str]] = []
    for kind, whole, label in (
        ("confirm", "booking", "booking: direct confirm"),
        (MAIL_RUN, "booking", "booking: direct confirm, the senders at work"),
        ("checkout", "booking", "booking: checkout + signed webhook"),
        ("check-in", "check-in", "check-in: first scan of a distinct code"),
    ):
        for c in args.concurrency:
            run = http.get((kind, c))
            raw = pg.get((kind, c))
            if run is not None:
                p50, p99 = _lat(run.latencies.get(whole))
                versus = ratio(run.rate, raw.tps if raw else None)
                direct = http.get(("confirm", c))
                of_direct = (
                    f"{pct(run.rate / direct.rate)} of HTTP confirm"
                    if direct is not None and direct.rate
                    else "–"
                )
                if kind == "checkout":
                    # No pgbench script for this path: compared with the direct confirm.
                    shown = f"no pgbench script; {of_direct}"
                elif kind == MAIL_RUN:
                    shown = f"{of_direct} (senders idle)"
                else:
                    shown = f"**{pct(versus)}**" if versus is not None else "–"
                failures = ", ".join(f"{k}: {v}" for k, v in run.failures.items()) or "0"
                rows.append(
                    [
                        f"{label}, HTTP",
                        str(c),
                        f"{run.ok:,} / {run.ops:,}",
                        f"{run.rate:,.0f}/s",
                        p50,
                        p99,
                        shown,
                        _cpu(run.cpu, run.ok),
                        failures,
                    ]
                )
                if kind == "checkout":
                    for name in ("checkout", "webhook"):
                        one50, one99 = _lat(run.latencies.get(name))
                        rows.append(
                            [f"… the `{name}` call alone", str(c), "", "", one50, one99] + [""] * 3
                        )
            if raw is not None and kind != "checkout":
                p50, p99 = _lat(raw.latencies)
                rows.append(
                    [
                        f"{label}, pgbench (same SQL)",
                        str(c),
                        f"{raw.transactions:,}",
                        f"{raw.tps:,.0f}/s",
                        p50,
                        p99,
                        "",
                        _cpu(raw.cpu, raw.transactions),
                        str(raw.failed) + (" (clients aborted)" if raw.aborted else ""),
                    ]
                )
    mail_rows = []
    for run in found.http:
        mail = run.mail
        if mail is None:
            continue
        mail_rows.append(
            [
                f"direct confirm, c={run.concurrency}",
                num(mail.messages),
                num(mail.peak),
                num(mail.at_end),
                "not drained" if mail.drained_after is None else f"{mail.drained_after:.1f} s",
                "–" if mail.after_rate is None else f"{mail.after_rate:,.0f}/s",
                "–" if mail.whole_rate is None else f"{mail.whole_rate:,.0f}/s",
                _cpu(mail.drain_cpu, mail.at_end, parts=("app", "db")),
                f"{mail.files:,}",
                str(mail.failed),
            ]
        )
    statement_notes = []
    for raw in found.pgbench:
        total = sum(latency for _, latency in raw.statements)
        book = [latency for label, latency in raw.statements if label.startswith("WITH booking")]
        if raw.kind == "confirm" and book and raw.statements:
            statement_notes.append(
                f"confirm c={raw.concurrency}: BOOK {book[0]:.2f} ms of {total:.2f} ms a "
                f"transaction (the hold's lookup {raw.statements[0][1]:.2f} ms)"
            )
        if raw.kind == "check-in" and raw.statements:
            statement_notes.append(
                f"check-in c={raw.concurrency}: the code's lookup "
                f"{raw.statements[0][1]:.2f} ms of {total:.2f} ms"
            )
    hot = found.hot
    hot_line = "not measured"
    if hot is not None:
        answers = ", ".join(f"{n}× {answer}" for answer, n in sorted(hot.statuses.items()))
        exactly_one = hot.statuses.get("200") == 1 and hot.admitted_in_db == 1
        hot_line = (
            f"{hot.scanners} scanners (own token and connection each, connections opened "
            f"beforehand, released at a barrier) scanned one code at once: {answers}; "
            f"admitted in the database {hot.admitted_in_db}×, check-in audit rows "
            f"{hot.audit_rows}; slowest answer {ms(hot.slowest_ms)} from the release (all "
            f"sent within {ms(hot.spread_ms)}). Exactly one admission: "
            f"{'**yes**' if exactly_one else '**no**'}."
        )
    quick = " (`--quick`: a smoke run)" if args.quick else ""
    command = "bench/door.py " + " ".join(sys.argv[1:])
    lines = [
        "## From the hold to the door: booking, check-in, e-mail (`bench/door.py`)",
        "",
        f"Generated by `.venv/bin/python {command.strip()}`{quick} on {facts['date']} in "
        f"{minutes:.1f} min ({facts['CPU']}, {facts['memory']}; {facts['OS']}; "
        f"{facts['Python']}; {git_revision()}). PostgreSQL {facts['PostgreSQL']}. Server: "
        f"{facts['server']}. HTTP load: {facts['HTTP load']}. pgbench: {facts['pgbench']}. "
        f"{facts['other load'][:1].upper()}{facts['other load'][1:]}. Client, server and "
        "PostgreSQL share the machine's cores. What each figure means: "
        "[README.md](README.md#from-the-hold-to-the-door).",
        "",
        f"{args.bookings:,} bookings a measurement, each on a fresh hold of 2 tickets made "
        f"beforehand (not timed); {2 * args.bookings:,} first scans a check-in measurement; "
        "each after a warm-up of the same kind (a tenth as many, at least one per client) and a "
        "`CHECKPOINT`. A rate is what succeeded ÷ the seconds from the first request to the "
        "last answer; a checkout booking is its two calls, its latency both together. CPU "
        "per operation: ms of the server's processes / PostgreSQL's / the client's (for "
        "pgbench: the server stopped, pgbench itself). The outbox senders sleep through every "
        "measurement compared with pgbench (OUTBOX_INTERVAL_SECONDS=3600, nothing owed at "
        "the server's start), as pgbench sends no e-mail; they are at work, as in service, "
        "in the first measurement only (“the senders at work”, c = the first "
        "`--concurrency`), whose server CPU per booking includes the e-mail sent meanwhile "
        "(the messages less the backlog at the last booking, below).",
        "",
        table(
            [
                "what",
                "c",
                "done",
                "per second",
                "p50",
                "p99",
                "HTTP ÷ pgbench",
                "CPU ms per op (app / PG / client)",
                "failed",
            ],
            rows,
        ),
        "",
        "**E-mail** (the outbox senders of both workers, .eml files): for the bookings made "
        "while the senders were at work, the messages they owed, the outbox's unsent count "
        "polled every 100 ms (peak, and at the last booking's answer), how long after the "
        "last booking "
        "none was left, the senders' rate then (backlog at the last booking ÷ that time, "
        "no bookings competing) and over the whole run (messages ÷ seconds from the first "
        "booking until none was left), and the CPU the server and PostgreSQL spent from the "
        "last booking until none was left, per message sent in that time:",
        "",
        table(
            [
                "bookings",
                "messages",
                "peak backlog",
                "backlog at the last booking",
                "drained after",
                "senders after",
                "senders, whole run",
                "CPU ms per e-mail after (app / PG)",
                ".eml written",
                "failed",
            ],
            mail_rows or [["–"] * 10],
        ),
        "",
        f"**One code, many scanners**: {hot_line}",
    ]
    if statement_notes:
        lines += [
            "",
            "pgbench's own statement latencies (means, `-r`): " + "; ".join(statement_notes) + ".",
        ]
    notes = [f"**error:** {e}" for e in found.errors] + found.notes
    if notes:
        lines += ["", *[f"- {note}" for note in notes]]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--bookings",
        type=int,
        help=f"bookings a measurement (default {BOOKINGS:,}; {QUICK_BOOKINGS} with --quick); "
        "a check-in measurement scans twice as many codes",
    )
    parser.add_argument(
        "--concurrency",
        type=lambda text: tuple(int(part) for part in text.split(",") if part.strip()),
        default=CONCURRENCIES,
        help="comma-separated client counts (default 16,64)",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("TEST_DATABASE_URL"),
        help="a PostgreSQL server to use (a throwaway database is created there and dropped "
        "after); default: TEST_DATABASE_URL, else a private embedded PostgreSQL",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="results file")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_BOOKINGS} bookings (~1 min)")
    args = parser.parse_args(argv)
    if args.bookings is None:
        args.bookings = QUICK_BOOKINGS if args.quick else BOOKINGS
    if not args.concurrency or min(args.concurrency) < 1 or args.bookings < 1:
        parser.error("--concurrency and --bookings must be positive")
    if max(args.concurrency) > HOT_SCANNERS * 4:
        parser.error(f"--concurrency at most {HOT_SCANNERS * 4}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="boxoffice-door-", ignore_cleanup_errors=True) as tmp,
        benchmark_database(args.database_url, Path(tmp)) as database,
    ):
        try:
            found = asyncio.run(run(args, database, Path(tmp)))
        except Exception as error:
            say(f"door: could not run: {type(error).__name__}: {error}")
            return 1
    text = section(found, args, (time.perf_counter() - started) / 60)
    args.output.write_text(with_section(read_text(args.output), DOOR, text))
    print("\n" + text)
    say(f"door: wrote the section into {args.output}")
    return 1 if found.errors else 0


if __name__ == "__main__":
    sys.exit(main())
