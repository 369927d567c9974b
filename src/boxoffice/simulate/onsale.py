"""`boxoffice simulate onsale`: an on-sale through the waiting room, rushed by many buyers.

What one run does, against a private server (rate limits at their defaults) or `--url`:

1. Creates a seated event with the waiting room on (`queue_admit_per_minute`, a cap per
   customer), its sales opening later.
2. The pre-queue (`--pre-queue-share` of the buyers) joins in a burst; then sales are set to
   open `--opens-in` seconds later by the database clock (PATCH /events/{id}), and at the
   opening the other buyers join in a burst.
3. Each buyer learns when it is admitted. `--streams` of them (spread over the population)
   follow their place over Server-Sent Events; the others poll `GET …/queue/{place}` when the
   server's own estimate of their wait says so (position ÷ rate, plus a tick), then back off
   on that estimate again: about one to two polls a buyer, where fixed-interval polling of
   100,000 buyers would be the load. Once admitted, a buyer holds its tickets with the pass
   (`queue_pass`) and pays (`POST /reservations/{id}/confirm`). A few ask for more than the
   cap first (refused, then ask for what is left under it); a few try a hold without a pass
   while waiting and a second hold with their spent pass (both refused). Once the event is
   sold out, buyers still waiting leave (as a sold-out page makes them), and buyers admitted
   then do not try.
4. Every buyer has an address of its own (`X-Forwarded-For`, which the server trusts from
   127.0.0.1), so per-client rate limits apply per buyer, as in real life.
5. Alongside, the scalper (boxoffice.simulate.onsale_scalper) attacks another event with the
   protections on (cap, default rate limits); after the rush the same attack runs against a
   server with its rate limits off on an event without a cap.
6. When every buyer is done and the queue has drained, the figures are read from the
   database (boxoffice.simulate.onsale_figures) and judged.

Concurrency is bounded: `--concurrency` joins in flight (256), 64 polls and 32 reservations
or payments at a time, the streams, the scalper and the real buyer; buyers waiting for a
slot are not timed (a latency is the request's own).
"""

import argparse
import asyncio
import contextlib
import json
import random
import secrets
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx

from boxoffice.config import Settings
from boxoffice.serving import ServeFailed, ServeProcess
from boxoffice.simulate import onsale_args as defaults
from boxoffice.simulate.load import SetupError, check_reachable, describe, raise_open_files_limit
from boxoffice.simulate.onsale_args import ONSALE, stray_flags
from boxoffice.simulate.onsale_figures import (
    ClientJoin,
    Integrity,
    PlaceRow,
    admission_rate,
    arrival_fairness,
    checks,
    integrity,
    lane_order_violations,
    latency_ms,
    opening_of,
    pre_queue_fairness,
    queue_places,
    reservation_target,
)
from boxoffice.simulate.onsale_scalper import (
    ScalperResult,
    held_most,
    real_buyer,
    scalper,
)
from boxoffice.simulate.outcomes import InvariantReport
from boxoffice.simulate.runner import (
    EXIT_FAIL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SETUP,
    SERVER_START_SECONDS,
    SERVER_SWEEP_INTERVAL_SECONDS,
    SERVER_WORKERS,
    Target,
    check_database,
    private_server,
)
from boxoffice.simulate.scenarios import seated_sections

__all__ = ["ONSALE", "OnsalePlan", "main", "plan_from_args", "run_onsale"]

T = TypeVar("T")
Say = Callable[[str], None]

POLL_CONCURRENCY = 64
SHOP_CONCURRENCY = 32
# The admitter's tick (QUEUE_ADMIT_INTERVAL_SECONDS): a poll comes this long after the
# estimated moment, so the tick that admits the place has happened.
TICK_SECONDS = 0.5
POLL_MARGIN_SECONDS = 0.15
MAX_POLL_WAIT_SECONDS = 30.0
# Shares of the buyers with a special errand.
GREEDY_SHARE = 0.05
PROBE_SHARE = 0.02
# How many tickets a buyer wants, with how likely (never more than the cap).
WANTS: tuple[tuple[int, float], ...] = ((1, 0.3), (2, 0.4), (3, 0.15), (4, 0.15))
# The private server's rate limits for the rush: the service's defaults, whatever the
# environment says; and off, for the scalper without protections.
PROTECTED_LIMITS = {
    "RATE_LIMIT_RESERVATIONS_PER_MINUTE": str(
        Settings.model_fields["rate_limit_reservations_per_minute"].default
    ),
    "RATE_LIMIT_RESERVATIONS_BURST": str(
        Settings.model_fields["rate_limit_reservations_burst"].default
    ),
    "RATE_LIMIT_QUEUE_PER_MINUTE": str(
        Settings.model_fields["rate_limit_queue_per_minute"].default
    ),
    "RATE_LIMIT_QUEUE_BURST": str(Settings.model_fields["rate_limit_queue_burst"].default),
}
LIMITS_OFF = {"RATE_LIMIT_RESERVATIONS_PER_MINUTE": "0", "RATE_LIMIT_QUEUE_PER_MINUTE": "0"}

# What each kind of request may answer besides an error (`status` or `status problem`).
# A 503 (every pool connection busy at that moment) is what a saturated server answers,
# with Retry-After: joins and polls wait that long and ask again, as a real client does, and
# the figures count them.
RETRIED = "503 service-unavailable"
EXPECTED: dict[str, frozenset[str]] = {
    "join": frozenset({"201", RETRIED}),
    "poll": frozenset({"200", RETRIED}),
    "stream": frozenset({"200"}),
    "reserve": frozenset(
        {
            "201",
            "409 tickets-unavailable",
            "409 customer-limit-reached",
            "409 conflict",
            "429 too-many-requests",
        }
    ),
    "confirm": frozenset({"200"}),
    # A hold without a pass, or with a spent one: refused (a seat-less refusal never gets as
    # far as the pass).
    "probe-no-pass": frozenset(
        {"403 queue-pass-required", "409 sales-closed", "409 tickets-unavailable"}
    ),
    "probe-reuse": frozenset(
        {"403 queue-pass-required", "409 tickets-unavailable", "409 customer-limit-reached"}
    ),
    "scalper-hold": frozenset(
        {
            "201",
            "409 tickets-unavailable",
            "409 customer-limit-reached",
            "409 conflict",
            "429 too-many-requests",
        }
    ),
    "real-hold": frozenset(
        {"201", "409 tickets-unavailable", "409 conflict", "429 too-many-requests"}
    ),
    "scalper-release": frozenset({"204", "409 reservation-expired", "409 reservation-not-active"}),
    "real-release": frozenset({"204", "409 reservation-expired", "409 reservation-not-active"}),
    "event": frozenset({"200"}),
    "admin": frozenset({"200"}),
}


# --- the plan ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class OnsalePlan:
    buyers: int = defaults.DEFAULT_BUYERS
    tickets: int = defaults.DEFAULT_TICKETS
    pre_queue_share: float = defaults.DEFAULT_PRE_QUEUE_SHARE
    admit_per_minute: int = defaults.DEFAULT_ADMIT_PER_MINUTE
    cap: int | None = defaults.DEFAULT_CAP
    concurrency: int = defaults.DEFAULT_CONCURRENCY
    streams: int = defaults.DEFAULT_STREAMS
    opens_in: float = defaults.DEFAULT_OPENS_IN
    scalper: bool = True
    scalper_seconds: float = defaults.DEFAULT_SCALPER_SECONDS
    scalper_tickets: int = defaults.DEFAULT_SCALPER_TICKETS
    scalper_names: int = defaults.DEFAULT_SCALPER_NAMES
    scalper_hold_seconds: int = defaults.DEFAULT_SCALPER_HOLD_SECONDS
    seed: int = 0
    timeout: float = 30.0
    max_seconds: float | None = None
    fail_on_missed_targets: bool = False

    @property
    def pre_queue(self) -> int:
        return round(self.buyers * self.pre_queue_share)

    @property
    def deadline_seconds(self) -> float:
        """How long after the opening buyers may still wait to be admitted."""
        if self.max_seconds is not None:
            return self.max_seconds
        return 120 + 1.5 * self.buyers * 60 / self.admit_per_minute + self.buyers / 200

    def settings(self) -> dict[str, Any]:
        return {
            "buyers": self.buyers,
            "tickets": self.tickets,
            "pre_queue_share": self.pre_queue_share,
            "pre_queue": self.pre_queue,
            "admit_per_minute": self.admit_per_minute,
            "cap": self.cap,
            "concurrency": self.concurrency,
            "poll_concurrency": POLL_CONCURRENCY,
            "shop_concurrency": SHOP_CONCURRENCY,
            "streams": min(self.streams, self.buyers),
            "opens_in": self.opens_in,
            "scalper": self.scalper,
            "scalper_seconds": self.scalper_seconds,
            "scalper_tickets": self.scalper_tickets,
            "scalper_names": self.scalper_names,
            "scalper_hold_seconds": self.scalper_hold_seconds,
            "seed": self.seed,
            "timeout": self.timeout,
            "max_seconds": round(self.deadline_seconds, 1),
        }


def plan_from_args(args: argparse.Namespace) -> OnsalePlan:
    """The plan from `simulate onsale`'s options; ValueError for ones that make no sense."""
    stray = stray_flags(args)
    if stray:
        raise ValueError(f"{', '.join(stray)} do(es) not go with `simulate onsale`")

    def given(name: str, default: T) -> T:
        value = getattr(args, name, None)
        return default if value is None else value

    cap = given("cap", defaults.DEFAULT_CAP)
    plan = OnsalePlan(
        buyers=given("buyers", defaults.DEFAULT_BUYERS),
        tickets=given("tickets", defaults.DEFAULT_TICKETS),
        pre_queue_share=given("pre_queue_share", defaults.DEFAULT_PRE_QUEUE_SHARE),
        admit_per_minute=given("admit_per_minute", defaults.DEFAULT_ADMIT_PER_MINUTE),
        cap=cap or None,
        concurrency=given("concurrency", defaults.DEFAULT_CONCURRENCY),
        streams=given("streams", defaults.DEFAULT_STREAMS),
        opens_in=given("opens_in", defaults.DEFAULT_OPENS_IN),
        scalper=given("scalper", True),
        scalper_seconds=given("scalper_seconds", defaults.DEFAULT_SCALPER_SECONDS),
        scalper_tickets=given("scalper_tickets", defaults.DEFAULT_SCALPER_TICKETS),
        scalper_names=given("scalper_names", defaults.DEFAULT_SCALPER_NAMES),
        scalper_hold_seconds=given("scalper_hold_seconds", defaults.DEFAULT_SCALPER_HOLD_SECONDS),
        seed=given("seed", secrets.randbelow(2**31)),
        timeout=given("timeout", 30.0),
        max_seconds=getattr(args, "max_seconds", None),
        fail_on_missed_targets=bool(getattr(args, "fail_on_missed_targets", False)),
    )
    for name, value in (
        ("--buyers", plan.buyers),
        ("--tickets", plan.tickets),
        ("--admit-per-minute", plan.admit_per_minute),
        ("--concurrency", plan.concurrency),
        ("--scalper-seconds", plan.scalper_seconds),
        ("--scalper-tickets", plan.scalper_tickets),
        ("--scalper-names", plan.scalper_names),
        ("--scalper-hold-seconds", plan.scalper_hold_seconds),
        ("--timeout", plan.timeout),
    ):
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value:g}")
    if not 0 <= plan.pre_queue_share <= 1:
        raise ValueError("--pre-queue-share must be between 0 and 1")
    if plan.buyers > 16_000_000:
        raise ValueError("--buyers: at most 16,000,000 (one 10.x.y.z address each)")
    if plan.cap is not None and plan.cap < 0:
        raise ValueError("--cap must not be negative (0: no cap)")
    if plan.streams < 0 or plan.opens_in < 0:
        raise ValueError("--streams and --opens-in must not be negative")
    if plan.admit_per_minute > 1_000_000:
        raise ValueError("--admit-per-minute: at most 1,000,000 (the event's limit)")
    seated_sections(plan.tickets)  # ValueError if one event cannot seat them
    seated_sections(plan.scalper_tickets)
    return plan


# --- requests ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Call:
    kind: str
    status: int | None
    problem: str | None
    # Seconds since the run's start (one monotonic clock), and the request's own duration.
    started: float
    latency: float

    @property
    def outcome(self) -> str:
        if self.status is None:
            return self.problem or "transport error"
        return f"{self.status} {self.problem}" if self.problem else str(self.status)

    @property
    def unexpected(self) -> bool:
        if self.status is None:
            return True
        expected = EXPECTED.get(self.kind, frozenset())
        if self.status >= 500:
            return self.outcome not in expected
        return str(self.status) not in expected and self.outcome not in expected


def _problem(body: Any) -> str | None:
    if isinstance(body, dict) and body.get("type"):
        return str(body["type"]).rsplit("/", 1)[-1] or None
    return None


def _retry_after(response: httpx.Response) -> float:
    try:
        return max(0.05, float(response.headers.get("retry-after", "1")))
    except ValueError:
        return 1.0


class Wire:
    """`slots` connections, each an HTTP client of its own, taken in turn (first come, first
    served); every request recorded as a Call.

    One client per connection, not one client with many: httpx's pool costs about 5 ms of
    CPU a request at 64 connections (measured here), 0.7 ms with one each, and this client
    shares the machine's two cores with the server and PostgreSQL."""

    def __init__(self, url: str, slots: int, timeout: float, clock: "Clock") -> None:
        self.clients = [_client(url, 1, timeout) for _ in range(max(1, slots))]
        self.free: asyncio.Queue[httpx.AsyncClient] = asyncio.Queue()
        for http in self.clients:
            self.free.put_nowait(http)
        self.clock = clock

    async def aclose(self) -> None:
        await asyncio.gather(*(http.aclose() for http in self.clients), return_exceptions=True)

    async def __aenter__(self) -> "Wire":
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def send(
        self,
        kind: str,
        method: str,
        path: str,
        *,
        address: str | None = None,
        body: dict[str, Any] | None = None,
        token: str | None = None,
    ) -> tuple[Call, Any, float]:
        """The Call, the answer's JSON (None if none), and its Retry-After (seconds)."""
        headers: dict[str, str] = {}
        if address is not None:
            headers["X-Forwarded-For"] = address
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        http = await self.free.get()
        started = time.perf_counter()
        try:
            try:
                response = await http.request(method, path, json=body, headers=headers)
            except (httpx.ReadError, httpx.RemoteProtocolError):
                # A slot idle for longer than the server's HEADER_TIMEOUT_SECONDS had its
                # connection closed by the server just as it was reused: once more, on a new one.
                response = await http.request(method, path, json=body, headers=headers)
        except httpx.HTTPError as error:
            call = Call(
                kind,
                None,
                type(error).__name__,
                started - self.clock.t0,
                time.perf_counter() - started,
            )
            self.clock.calls.append(call)
            return call, None, 1.0
        finally:
            self.free.put_nowait(http)
        latency = time.perf_counter() - started
        answer: Any = None
        if response.content:
            with contextlib.suppress(ValueError):
                answer = response.json()
        problem = _problem(answer) if response.status_code >= 400 else None
        call = Call(kind, response.status_code, problem, started - self.clock.t0, latency)
        self.clock.calls.append(call)
        return call, answer, _retry_after(response)


@dataclass
class Clock:
    t0: float = field(default_factory=time.perf_counter)
    calls: list[Call] = field(default_factory=list)

    def now(self) -> float:
        return time.perf_counter() - self.t0


def _client(
    url: str, connections: int, timeout: float, *, read: float | None = None
) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=url,
        # `pool=None`: a request waits for a connection only behind our own queue.
        timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0), read=read or timeout, pool=None),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        # Plain HTTP to the server; no TLS context to build for each of hundreds of clients.
        verify=False,
    )


# --- the buyers --------------------------------------------------------------------------------


@dataclass(slots=True)
class Buyer:
    number: int
    customer: str
    address: str
    pre_queue: bool
    streams: bool
    greedy: bool
    probe: bool
    wants: int
    place_id: str | None = None
    token: str | None = None
    # How long to wait before the first poll, from the place the join answered.
    first_wait: float = 0.0
    join_sent: float | None = None
    join_answered: float | None = None
    # When the buyer learned it was admitted (time.time(), this machine's clock).
    learned: float | None = None
    outcome: str = "not joined"
    tickets: int = 0


def address_of(number: int) -> str:
    return f"10.{number >> 16 & 255}.{number >> 8 & 255}.{number & 255}"


def make_buyers(plan: OnsalePlan) -> list[Buyer]:
    rng = random.Random(f"onsale/{plan.seed}")
    pre = set(rng.sample(range(1, plan.buyers + 1), plan.pre_queue))
    streams = min(plan.streams, plan.buyers)
    streamers = {1 + i * plan.buyers // streams for i in range(streams)} if streams else set()
    sizes, weights = zip(*WANTS, strict=True)
    buyers = []
    for number in range(1, plan.buyers + 1):
        wants = rng.choices(sizes, weights)[0]
        if plan.cap is not None:
            wants = min(wants, plan.cap)
        buyers.append(
            Buyer(
                number=number,
                customer=f"onsale-{plan.seed}-{number}@sim.example",
                address=address_of(number),
                pre_queue=number in pre,
                streams=number in streamers,
                greedy=plan.cap is not None and rng.random() < GREEDY_SHARE,
                probe=rng.random() < PROBE_SHARE,
                wants=wants,
            )
        )
    return buyers


@dataclass(frozen=True)
class Wires:
    """The run's clients: joins, polls, reservations and payments, streams."""

    joins: Wire
    polling: Wire
    shop: Wire
    streams: httpx.AsyncClient


async def open_wires(
    stack: contextlib.AsyncExitStack, plan: OnsalePlan, url: str, clock: "Clock"
) -> Wires:
    async def wire(slots: int) -> Wire:
        return await stack.enter_async_context(Wire(url, slots, plan.timeout, clock))

    return Wires(
        joins=await wire(plan.concurrency),
        polling=await wire(POLL_CONCURRENCY),
        shop=await wire(SHOP_CONCURRENCY),
        # Long-lived and busy only when news comes; reads wait a heartbeat (15 s) and more.
        streams=await stack.enter_async_context(
            _client(url, max(1, plan.streams), plan.timeout, read=60.0)
        ),
    )


class Rush:
    """One on-sale run: its event, its buyers and their shared state."""

    def __init__(
        self, plan: OnsalePlan, target: Target, say: Say, clock: "Clock", wires: Wires
    ) -> None:
        self.plan = plan
        self.target = target
        self.say = say
        self.clock = clock
        self.joins, self.polling, self.shop = wires.joins, wires.polling, wires.shop
        self.streams_http = wires.streams
        self.rng = random.Random(f"onsale-timing/{plan.seed}")
        self.buyers = make_buyers(plan)
        self.event_id = ""
        self.opened = asyncio.Event()
        self.arrivals_go = asyncio.Event()
        self.pre_done = asyncio.Event()
        self.sold_out = asyncio.Event()
        # Buyers still waiting give up: sold out, or past the deadline.
        self.give_up = asyncio.Event()
        self.deadline_passed = False
        self.pre_answered = 0
        self.opening_local: float | None = None
        self.arrivals_started: float | None = None
        self.sold_out_at: float | None = None
        self.polls = 0

    async def pause(self, seconds: float) -> bool:
        """Wait; False if the buyer should give up meanwhile (sold out, deadline)."""
        if self.give_up.is_set():
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.give_up.wait(), timeout=max(0.0, seconds))
        return not self.give_up.is_set()

    def _wait_for(self, body: dict[str, Any]) -> float:
        """How long to wait before asking again, from the place as the server showed it."""
        position = body.get("position")
        if body.get("status") == "pre-queue" or position is None:
            return TICK_SECONDS + self.rng.uniform(0, TICK_SECONDS)
        estimate = float(position) * 60 / self.plan.admit_per_minute
        return min(MAX_POLL_WAIT_SECONDS, estimate + TICK_SECONDS + POLL_MARGIN_SECONDS)

    # -- one buyer

    async def journey(self, buyer: Buyer) -> None:
        if not buyer.pre_queue:
            await self.arrivals_go.wait()
        try:
            joined = await self.join(buyer)
        finally:
            if buyer.pre_queue:
                self.pre_answered += 1
                if self.pre_answered == self.plan.pre_queue:
                    self.pre_done.set()
        if not joined:
            return
        if buyer.probe:
            await self.shop.send(
                "probe-no-pass",
                "POST",
                f"/events/{self.event_id}/reservations",
                address=buyer.address,
                body={"quantity": 1, "customer": buyer.customer},
            )
        if await self.admitted(buyer):
            await self.buy(buyer)

    async def join(self, buyer: Buyer) -> bool:
        while True:
            call, body, retry = await self.joins.send(
                "join",
                "POST",
                f"/events/{self.event_id}/queue",
                address=buyer.address,
                body={"customer": buyer.customer},
            )
            if call.outcome != RETRIED:
                break
            await asyncio.sleep(retry)
        buyer.join_sent, buyer.join_answered = call.started, call.started + call.latency
        if call.status != 201 or not isinstance(body, dict):
            buyer.outcome = f"join {call.outcome}"
            return False
        buyer.place_id, buyer.token = str(body["id"]), str(body["token"])
        buyer.first_wait = self._wait_for(body)
        buyer.outcome = "waiting"
        return True

    async def admitted(self, buyer: Buyer) -> bool:
        if buyer.streams:
            found = await self.until_given_up(self.follow(buyer))
            if found is None:
                buyer.outcome = self.gave_up_why()
            return bool(found)
        if buyer.pre_queue:
            if await self.until_given_up(self.opened.wait()) is None:
                buyer.outcome = self.gave_up_why()
                return False
            spread = min(5.0, self.plan.pre_queue / 2000)
            wait = TICK_SECONDS + POLL_MARGIN_SECONDS + self.rng.uniform(0, spread)
        else:
            wait = buyer.first_wait
        while True:
            if not await self.pause(wait):
                buyer.outcome = self.gave_up_why()
                return False
            self.polls += 1
            call, body, retry = await self.polling.send(
                "poll",
                "GET",
                f"/events/{self.event_id}/queue/{buyer.place_id}",
                address=buyer.address,
                token=buyer.token,
            )
            if call.status == 429 or call.outcome == RETRIED:
                wait = retry
                continue
            if call.status != 200 or not isinstance(body, dict):
                buyer.outcome = f"poll {call.outcome}"
                return False
            status = body.get("status")
            if status == "admitted":
                buyer.learned = time.time()
                return True
            if status not in ("waiting", "pre-queue"):
                buyer.outcome = f"place {status}"
                return False
            wait = self._wait_for(body)

    def gave_up_why(self) -> str:
        return "left at sell-out" if self.sold_out.is_set() else "not admitted by the deadline"

    async def until_given_up(self, work: Coroutine[Any, Any, T]) -> T | None:
        """`work`'s result, or None if the buyer gave up first (the work is cancelled)."""
        task = asyncio.ensure_future(work)
        quit_waiting = asyncio.ensure_future(self.give_up.wait())
        try:
            await asyncio.wait({task, quit_waiting}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            quit_waiting.cancel()
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return None

    async def follow(self, buyer: Buyer) -> bool:
        """The place's stream until it says admitted (reconnecting if it ends before)."""
        path = f"/events/{self.event_id}/queue/{buyer.place_id}/stream"
        headers = {"X-Forwarded-For": buyer.address}
        while True:
            started = time.perf_counter()
            status: int | None = None
            problem: str | None = None
            final: str | None = None
            try:
                async with self.streams_http.stream("GET", path, headers=headers) as response:
                    status = response.status_code
                    if status == 200:
                        kind = None
                        async for line in response.aiter_lines():
                            if line.startswith("event: "):
                                kind = line.removeprefix("event: ")
                            elif line.startswith("data: ") and kind == "place":
                                place = json.loads(line.removeprefix("data: "))
                                if place.get("status") not in ("waiting", "pre-queue"):
                                    final = str(place.get("status"))
                                    break
            except httpx.HTTPError as error:
                problem = type(error).__name__
            self.clock.calls.append(
                Call(
                    "stream",
                    status,
                    problem,
                    started - self.clock.t0,
                    time.perf_counter() - started,
                )
            )
            if final == "admitted":
                buyer.learned = time.time()
                return True
            if final is not None or status != 200:
                buyer.outcome = f"stream {final or status or problem}"
                return False

    async def buy(self, buyer: Buyer) -> None:
        if self.sold_out.is_set():
            buyer.outcome = "admitted after sell-out"
            return
        path = f"/events/{self.event_id}/reservations"
        cap = self.plan.cap
        quantity = cap + 1 if buyer.greedy and cap is not None else buyer.wants
        buyer.outcome = "gave up"
        for _ in range(8):
            call, body, retry = await self.shop.send(
                "reserve",
                "POST",
                path,
                address=buyer.address,
                body={"quantity": quantity, "customer": buyer.customer, "queue_pass": buyer.token},
            )
            if call.status == 201 and isinstance(body, dict):
                paid, _, _ = await self.shop.send(
                    "confirm",
                    "POST",
                    f"/reservations/{body['id']}/confirm",
                    address=buyer.address,
                    body={"payment_reference": f"sim-{self.plan.seed}-{buyer.number}"},
                    token=str(body["token"]),
                )
                buyer.outcome = "paid" if paid.status == 200 else f"pay {paid.outcome}"
                buyer.tickets = quantity if paid.status == 200 else 0
                break
            if call.outcome == "409 customer-limit-reached" and isinstance(body, dict):
                quantity = int(body.get("limit", 0)) - int(body.get("holding", 0))
                if quantity < 1:
                    buyer.outcome = "at the cap"
                    break
            elif call.outcome == "409 tickets-unavailable":
                if quantity == 1:
                    buyer.outcome = "sold out"
                    break
                quantity = 1
            elif call.outcome in ("409 conflict", "429 too-many-requests"):
                await asyncio.sleep(retry if call.status == 429 else 0.05)
            else:
                buyer.outcome = f"reserve {call.outcome}"
                break
        if buyer.probe and buyer.outcome == "paid":
            await self.shop.send(
                "probe-reuse",
                "POST",
                path,
                address=buyer.address,
                body={"quantity": 1, "customer": buyer.customer, "queue_pass": buyer.token},
            )


# --- setting up --------------------------------------------------------------------------------


async def _admin(
    http: httpx.AsyncClient, method: str, path: str, token: str, body: dict[str, Any] | None = None
) -> dict[str, Any]:
    try:
        response = await http.request(
            method, path, json=body, headers={"Authorization": f"Bearer {token}"}
        )
    except httpx.HTTPError as error:
        raise SetupError(f"{method} {path}: {describe(error)}") from error
    if response.status_code in (401, 403):
        raise SetupError(
            f"the server refused the admin token ({response.status_code}): give the server's "
            "token with --admin-token or ADMIN_TOKEN"
        )
    if response.status_code not in (200, 201):
        raise SetupError(f"{method} {path} answered {response.status_code}: {response.text[:300]}")
    answer: dict[str, Any] = response.json()
    return answer


async def connect(database_url: str) -> asyncpg.Connection:
    """A connection to the server's database, for the figures. A database whose connection
    slots are all taken (a busy shared server) gets a few more tries; then SetupError."""
    for attempt in range(5):
        try:
            return await asyncpg.connect(database_url)
        except asyncpg.TooManyConnectionsError:
            if attempt == 4:
                raise SetupError(
                    "the database refused a connection: all its connection slots are taken"
                ) from None
            await asyncio.sleep(1.0 + attempt)
        except Exception as error:
            raise SetupError(f"cannot connect to the database: {describe(error)}") from error
    raise AssertionError("unreachable")


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat()


async def database_clock(conn: asyncpg.Connection) -> float:
    """The database's clock minus this machine's, in seconds."""
    before = time.time()
    database = float(await conn.fetchval("SELECT extract(epoch FROM clock_timestamp())"))
    after = time.time()
    return database - (before + after) / 2


def _scalper_event(plan: OnsalePlan, *, cap: int | None, label: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": f"boxoffice simulate onsale scalper target, protections {label} (seed {plan.seed})",
        "venue": "The Simulator",
        "starts_at": (datetime.now(UTC) + timedelta(days=30)).isoformat(),
        "hold_seconds": plan.scalper_hold_seconds,
        "sections": seated_sections(plan.scalper_tickets),
    }
    if cap is not None:
        body["max_tickets_per_customer"] = cap
    return body


async def attack(
    plan: OnsalePlan,
    url: str,
    admin_token: str,
    database_url: str,
    clock: Clock,
    *,
    protected: bool,
    rate_limits: str,
    stop: asyncio.Event | None = None,
) -> ScalperResult:
    """The scalper and the real buyer against an event of their own on the server at `url`."""
    cap = (plan.cap or defaults.DEFAULT_CAP) if protected else None
    label = "on" if protected else "off"
    connections = plan.scalper_names * 2 + 4
    async with (
        _client(url, 1, plan.timeout) as http,
        Wire(url, connections, plan.timeout, clock) as wire,
    ):
        event = await _admin(
            http, "POST", "/events", admin_token, _scalper_event(plan, cap=cap, label=label)
        )

        async def call(
            kind: str,
            method: str,
            path: str,
            address: str,
            body: dict[str, Any] | None,
            token: str | None,
        ) -> tuple[int | None, str | None, Any]:
            sent, answer, _ = await wire.send(
                kind, method, path, address=address, body=body, token=token
            )
            return sent.status, sent.problem, answer

        halt = stop or asyncio.Event()
        customers = [f"scalper-{n}@sim.example" for n in range(1, plan.scalper_names + 1)]
        counts, real = await asyncio.gather(
            scalper(
                call,
                event_id=str(event["id"]),
                customers=customers,
                seconds=plan.scalper_seconds,
                hold_seconds=plan.scalper_hold_seconds,
                stop=halt,
            ),
            real_buyer(call, event_id=str(event["id"]), seconds=plan.scalper_seconds, stop=halt),
        )
    conn = await connect(database_url)
    try:
        held, together = await held_most(conn, str(event["id"]), customers)
    finally:
        await conn.close()
    return ScalperResult(
        protections=label,
        event_id=str(event["id"]),
        tickets=plan.scalper_tickets,
        cap=cap,
        rate_limits=rate_limits,
        seconds=plan.scalper_seconds,
        hold_seconds=plan.scalper_hold_seconds,
        customers=customers,
        attack=counts,
        real=real,
        held_most_db=held,
        held_most_together=together,
    )


# --- the run -----------------------------------------------------------------------------------


@dataclass
class OnsaleResult:
    figures: dict[str, Any]
    ok: bool

    @property
    def line(self) -> str:
        return str(self.figures["verdict"]["line"])


async def run_onsale(
    plan: OnsalePlan,
    target: Target,
    say: Say,
    *,
    settings: Settings | None = None,
    off_server: Callable[[], contextlib.AbstractAsyncContextManager[str | None]] | None = None,
    rate_limits: str = "as the server is configured",
) -> OnsaleResult:
    """The whole run; SetupError if it cannot start. `off_server` yields the URL of a server
    with its rate limits off on the same database (None: no attack without protections)."""
    if not target.admin_token:
        raise SetupError(
            "an admin token is needed to create the run's events: give --admin-token or set "
            "ADMIN_TOKEN"
        )
    if not target.database_url:
        raise SetupError(
            "simulate onsale reads its figures from the server's database: give "
            "--database-url or set DATABASE_URL"
        )
    await check_reachable(target.url)
    raise_open_files_limit(
        plan.concurrency + POLL_CONCURRENCY + SHOP_CONCURRENCY + plan.streams + 64
    )
    token = target.admin_token
    conn = await connect(target.database_url)
    try:
        offset = await database_clock(conn)
        async with contextlib.AsyncExitStack() as stack:
            clock = Clock()
            rush = Rush(plan, target, say, clock, await open_wires(stack, plan, target.url, clock))
            admin = await stack.enter_async_context(_client(target.url, 2, plan.timeout))
            database_now = time.time() + offset
            body: dict[str, Any] = {
                "name": f"boxoffice simulate onsale (seed {plan.seed})",
                "venue": "The Simulator",
                "starts_at": _iso(database_now + 30 * 86_400),
                "sections": seated_sections(plan.tickets),
                "hold_seconds": 600,
                # Opens for real once the pre-queue has joined (PATCHed then).
                "sales_start_at": _iso(database_now + 86_400),
                "queue_enabled": True,
                "queue_admit_per_minute": plan.admit_per_minute,
            }
            if plan.cap is not None:
                body["max_tickets_per_customer"] = plan.cap
            event = await _admin(admin, "POST", "/events", token, body)
            rush.event_id = event_id = str(event["id"])
            say(
                f"event {event_id}: {plan.tickets:,} seats, admits {plan.admit_per_minute:,}/min, "
                f"cap {plan.cap or 'none'}; {plan.buyers:,} buyers ({plan.pre_queue:,} pre-queue)"
            )
            phases = await _rush(rush, admin, token, offset)
            scalper_on: ScalperResult | None = phases.pop("_scalper")
            scalper_off: ScalperResult | None = None
            if plan.scalper and off_server is not None:
                async with off_server() as off_url:
                    if off_url is not None:
                        say(f"scalper with the protections off (no cap, no rate limits): {off_url}")
                        scalper_off = await attack(
                            plan,
                            off_url,
                            token,
                            target.database_url,
                            rush.clock,
                            protected=False,
                            rate_limits="off",
                        )
            say("reading the figures from the database")
            places = await queue_places(conn, uuid.UUID(event_id))
            opening = await opening_of(conn, uuid.UUID(event_id))
            checked = await integrity(conn, uuid.UUID(event_id), plan.cap)
    finally:
        await conn.close()
    invariants = await check_database(target.database_url, event_id, settings=settings)
    return _judge(
        plan,
        rush,
        phases,
        places,
        opening,
        offset,
        checked,
        invariants,
        scalper_on,
        scalper_off,
        rate_limits,
    )


async def _rush(rush: Rush, admin: httpx.AsyncClient, token: str, offset: float) -> dict[str, Any]:
    """The buyers, the opening, the scalper alongside, and the wait for the queue to drain."""
    plan, say, clock = rush.plan, rush.say, rush.clock
    event_path = f"/events/{rush.event_id}"
    clock.t0 = time.perf_counter()
    tasks = [asyncio.ensure_future(rush.journey(buyer)) for buyer in rush.buyers]
    if plan.pre_queue == 0:
        rush.pre_done.set()
    say(f"pre-queue: {plan.pre_queue:,} buyers join before sales open")
    await rush.pre_done.wait()
    pre_seconds = clock.now()
    opening_at = time.time() + offset + plan.opens_in
    await _admin(admin, "PATCH", event_path, token, {"sales_start_at": _iso(opening_at)})
    rush.opening_local = opening_at - offset
    await asyncio.sleep(max(0.0, rush.opening_local - time.time()) + 0.02)
    for _ in range(100):  # the server agrees it is on sale (its database's clock)
        answer = await _admin(admin, "GET", event_path, token)
        if answer.get("on_sale"):
            break
        await asyncio.sleep(0.05)
    rush.arrivals_started = clock.now()
    rush.opened.set()
    rush.arrivals_go.set()
    say(f"sales open: {plan.buyers - plan.pre_queue:,} more buyers join")

    stop_scalper = asyncio.Event()
    scalper_task: asyncio.Future[ScalperResult] | None = None
    if plan.scalper:
        assert rush.target.database_url is not None
        scalper_task = asyncio.ensure_future(
            attack(
                plan,
                rush.target.url,
                token,
                rush.target.database_url,
                clock,
                protected=True,
                rate_limits="server's defaults",
                stop=stop_scalper,
            )
        )

    async def watch() -> None:
        """Sold out (every seat booked): buyers still waiting leave. Past the deadline: too."""
        deadline = time.monotonic() + plan.deadline_seconds
        while True:
            with contextlib.suppress(SetupError):
                counts = (await _admin(admin, "GET", event_path, token)).get("counts", {})
                if counts.get("available") == 0 and counts.get("reserved") == 0:
                    if not rush.sold_out.is_set():
                        rush.sold_out_at = clock.now()
                        after = rush.sold_out_at - (rush.arrivals_started or 0)
                        say(f"sold out {after:.1f} s after the opening")
                    rush.sold_out.set()
                    rush.give_up.set()
            if time.monotonic() > deadline:
                rush.deadline_passed = True
                rush.give_up.set()
            await asyncio.sleep(0.5)

    watcher = asyncio.ensure_future(watch())
    try:
        await asyncio.gather(*tasks)
        say("every buyer is done; waiting for the queue to drain")
        drained = False
        while not rush.deadline_passed:
            stats = await _admin(admin, "GET", f"{event_path}/queue", token)
            if stats.get("waiting") == 0 and stats.get("pre_queue") == 0:
                drained = True
                break
            await asyncio.sleep(0.25)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    scalper_on = None
    if scalper_task is not None:
        scalper_on = await scalper_task
    return {
        "_scalper": scalper_on,
        "pre_queue_seconds": pre_seconds,
        "drained": drained,
    }


def _rate(count: int, seconds: float) -> float | None:
    return round(count / seconds, 1) if seconds > 0 else None


def _judge(
    plan: OnsalePlan,
    rush: Rush,
    phases: dict[str, Any],
    places: list[PlaceRow],
    opening: float,
    offset: float,
    checked: Integrity,
    invariants: InvariantReport,
    scalper_on: ScalperResult | None,
    scalper_off: ScalperResult | None,
    rate_limits: str,
) -> OnsaleResult:
    calls = rush.clock.calls
    buyers = rush.buyers
    arrivals_started = rush.arrivals_started or 0.0
    joins = [c for c in calls if c.kind == "join"]
    pre_joins = [b for b in buyers if b.pre_queue and b.join_answered is not None]
    arrival_joins = [b for b in buyers if not b.pre_queue and b.join_answered is not None]
    joins_ended = max((b.join_answered or 0.0 for b in arrival_joins), default=arrivals_started)
    arrivals_seconds = joins_ended - arrivals_started
    pre_seconds = float(phases["pre_queue_seconds"])
    join_latency = latency_ms(c.latency for c in joins)
    arrival_join_latency = latency_ms(c.latency for c in joins if c.started >= arrivals_started)
    reserves = [c for c in calls if c.kind == "reserve"]
    during = [c for c in reserves if arrivals_started <= c.started <= joins_ended]
    during_latency = latency_ms(c.latency for c in during)

    errors: dict[str, int] = {}
    outcomes: dict[str, dict[str, int]] = {}
    for call in calls:
        kind = outcomes.setdefault(call.kind, {})
        kind[call.outcome] = kind.get(call.outcome, 0) + 1
        if call.unexpected:
            what = f"{call.kind} {call.outcome}"
            errors[what] = errors.get(what, 0) + 1

    by_place = {b.place_id: b for b in buyers if b.place_id}
    client = [
        ClientJoin(b.place_id, b.join_sent, b.join_answered)
        for b in arrival_joins
        if b.place_id and b.join_sent is not None and b.join_answered is not None
    ]
    arrivals = arrival_fairness(places, client)
    pre_queue = pre_queue_fairness(places)
    lanes = lane_order_violations(places)
    rate = admission_rate(places, per_minute=plan.admit_per_minute, opening=opening)
    delays: dict[str, list[float]] = {"stream": [], "poll": []}
    for place in places:
        buyer = by_place.get(place.id)
        if buyer is not None and buyer.learned is not None and place.admitted is not None:
            delays["stream" if buyer.streams else "poll"].append(
                max(0.0, buyer.learned + offset - place.admitted)
            )
    buyer_outcomes: dict[str, int] = {}
    for buyer in buyers:
        buyer_outcomes[buyer.outcome] = buyer_outcomes.get(buyer.outcome, 0) + 1
    not_admitted = buyer_outcomes.get("not admitted by the deadline", 0)

    found = checks(
        arrivals=arrivals,
        pre_queue=pre_queue,
        lane_violations=lanes,
        rate=rate,
        integrity=checked,
        invariants=invariants,
        errors=errors,
        not_admitted=not_admitted + (0 if phases["drained"] else 1),
        scalper_held_most=scalper_on.held_most_per_customer if scalper_on else None,
        scalper_cap=scalper_on.cap if scalper_on else None,
    )
    targets = [reservation_target(during_latency)]
    failed = [check for check in found if check.ok is False]
    missed = [target for target in targets if target.met is False]
    ok = not failed and not (plan.fail_on_missed_targets and missed)
    if ok:
        unmeasured = [check.name for check in found if check.ok is None]
        line = f"VERDICT: PASS — {sum(1 for c in found if c.ok)} checks passed" + (
            f"; not measured: {', '.join(unmeasured)}" if unmeasured else ""
        )
    else:
        line = "VERDICT: FAIL — " + "; ".join(
            [f"{c.name}: {c.measured}" for c in failed]
            + (
                [f"target missed: {t.name}: {t.measured}" for t in missed]
                if plan.fail_on_missed_targets
                else []
            )
        )

    figures: dict[str, Any] = {
        "scenario": ONSALE,
        "url": rush.target.url,
        "event_id": rush.event_id,
        "rate_limits": rate_limits,
        "settings": plan.settings(),
        "joins": {
            "total": len(joins),
            "pre_queue": len(pre_joins),
            "arrivals": len(arrival_joins),
            "per_second": _rate(len(arrival_joins), arrivals_seconds),
            "pre_queue_per_second": _rate(len(pre_joins), pre_seconds),
            "arrivals_seconds": round(arrivals_seconds, 3),
            "pre_queue_seconds": round(pre_seconds, 3),
            "latency_ms": join_latency,
            "arrivals_latency_ms": arrival_join_latency,
        },
        "reservations": {
            "attempts": len(reserves),
            "latency_ms": latency_ms(c.latency for c in reserves),
            "during_joins": during_latency,
            "confirm_latency_ms": latency_ms(c.latency for c in calls if c.kind == "confirm"),
            "sold_out_after_seconds": (
                None if rush.sold_out_at is None else round(rush.sold_out_at - arrivals_started, 3)
            ),
        },
        "admission": rate.to_json(),
        "fairness": {
            "arrivals": arrivals.to_json(),
            "pre_queue": pre_queue.to_json(),
            "lane_order_violations": lanes,
        },
        "notice": {
            "streams": sum(1 for b in buyers if b.streams),
            "polls": rush.polls,
            "polls_per_polling_buyer": round(
                rush.polls / max(1, sum(1 for b in buyers if not b.streams and b.place_id)), 2
            ),
            "stream_delay_ms": latency_ms(delays["stream"]),
            "poll_delay_ms": latency_ms(delays["poll"]),
        },
        "integrity": checked.to_json(),
        "invariants": {
            "status": invariants.status,
            "reason": invariants.reason,
            "event": [str(v) for v in invariants.event],
            "database": [str(v) for v in invariants.database],
        },
        "buyers": dict(sorted(buyer_outcomes.items(), key=lambda item: -item[1])),
        "outcomes": outcomes,
        "errors": errors,
        "scalper": {
            "protections_on": None if scalper_on is None else scalper_on.to_json(),
            "protections_off": None if scalper_off is None else scalper_off.to_json(),
        },
        "checks": [{"name": c.name, "ok": c.ok, "measured": c.measured} for c in found],
        "targets": [{"name": t.name, "met": t.met, "measured": t.measured} for t in targets],
        "verdict": {"ok": ok, "line": line},
    }
    return OnsaleResult(figures, ok)


# --- for people --------------------------------------------------------------------------------


def _ms(latency: dict[str, float] | None) -> str:
    if latency is None:
        return "–"
    return (
        f"p50 {latency['p50']:.1f} ms · p99 {latency['p99']:.1f} ms · max {latency['max']:.1f} ms "
        f"({int(latency['count']):,})"
    )


def _share(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f} %"


def render(figures: dict[str, Any]) -> str:
    """The figures as plain text, the verdict last."""
    joins, admission = figures["joins"], figures["admission"]
    arrivals, pre = figures["fairness"]["arrivals"], figures["fairness"]["pre_queue"]
    settings = figures["settings"]
    reservations, notice = figures["reservations"], figures["notice"]
    lines = [
        f"boxoffice simulate onsale — {settings['buyers']:,} buyers "
        f"({settings['pre_queue']:,} pre-queue), {settings['tickets']:,} seats, admits "
        f"{settings['admit_per_minute']:,}/min, cap {settings['cap'] or 'none'}, "
        f"seed {settings['seed']}",
        f"  server {figures['url']} (rate limits: {figures['rate_limits']}), "
        f"event {figures['event_id']}",
        "",
        "joins",
        f"  arrivals after the on-sale  {joins['arrivals']:,} in {joins['arrivals_seconds']:.1f} s"
        f" = {joins['per_second'] or 0:,.0f} joins/s   {_ms(joins['arrivals_latency_ms'])}",
        f"  pre-queue                   {joins['pre_queue']:,} in "
        f"{joins['pre_queue_seconds']:.1f} s = {joins['pre_queue_per_second'] or 0:,.0f} joins/s",
        f"  all joins                   {_ms(joins['latency_ms'])}",
        "reservations (admitted buyers)",
        f"  while the joins go on       {_ms(reservations['during_joins'])}",
        f"  all                         {_ms(reservations['latency_ms'])}",
        f"  payments                    {_ms(reservations['confirm_latency_ms'])}",
        f"  sold out after              {reservations['sold_out_after_seconds'] or '–'} s",
        "admission",
        f"  configured {admission['configured_per_minute']:,}/min, measured "
        + (
            f"{admission['measured_per_minute']:,.0f}/min ({admission['deviation'] * 100:+.2f} %)"
            if admission["measured_per_minute"] is not None
            else "– (the queue never stayed non-empty long enough)"
        )
        + f" over {admission['measured_seconds']:.1f} s, {admission['measured_admissions']:,} "
        f"admissions; {admission['admitted']:,} admitted in {admission['ticks']} ticks",
        f"  learning it: {notice['streams']} streams {_ms(notice['stream_delay_ms'])}; "
        f"polls ({notice['polls']:,}, {notice['polls_per_polling_buyer']} a buyer) "
        f"{_ms(notice['poll_delay_ms'])}",
        "fairness",
        "  arrivals: Spearman ρ(join order, admission order) = "
        + ("–" if arrivals["spearman"] is None else f"{arrivals['spearman']:.6f}")
        + f" over {arrivals['admitted']:,} admitted; {arrivals['overtakers']} overtook, "
        f"{arrivals['skipped']} skipped, {arrivals['client_order_violations']} against the "
        "client's order",
        "  pre-queue: "
        + (
            f"χ² = {pre['chi_square']:.2f}, {pre['dof']} dof ({pre['groups']}×{pre['groups']} "
            f"buckets of {pre['places']:,} places), p = {pre['p_value']:.4f}; "
            f"ρ(join order, drawn rank) = {pre['spearman_join_vs_draw']:.4f}"
            if pre["p_value"] is not None
            else f"not measured ({pre['places']} places)"
        ),
        "integrity",
        f"  {figures['integrity']['paid']:,} paid holds, {figures['integrity']['tickets_booked']:,}"
        f" of {figures['integrity']['tickets']:,} seats booked; without a pass "
        f"{figures['integrity']['without_pass']}, above the cap {figures['integrity']['above_cap']}"
        f", sold twice {figures['integrity']['sold_twice']}; invariants "
        f"{figures['invariants']['status']}",
        "buyers: " + ", ".join(f"{count:,} {what}" for what, count in figures["buyers"].items()),
    ]
    for key, title in (("protections_off", "off"), ("protections_on", "on")):
        scalper = figures["scalper"][key]
        if scalper is None:
            continue
        real = scalper["real_buyer"]
        lines += [
            f"scalper, protections {title} (cap {scalper['cap'] or 'none'}, rate limits "
            f"{scalper['rate_limits']}, {scalper['tickets']} seats, {scalper['customers']} names, "
            f"{scalper['seconds']:g} s)",
            f"  held at most {scalper['held_most_per_customer']} at once per customer "
            f"(all names at once: {scalper['held_most_all_names_at_once']}); "
            f"{scalper['holds']:,} holds, {scalper['renewed']:,} re-holds, "
            f"{scalper['renewals_lost']} lost, {scalper['too_many_requests']:,} × 429",
            f"  real buyer: {real['holds']} holds of {real['attempts']} attempts, success "
            f"{_share(real['success_rate'])} of the answered ({real['refused']} refused, "
            f"{real['too_many_requests']} × 429)",
        ]
    lines += ["", "checks"]
    for check in figures["checks"]:
        mark = {True: "ok  ", False: "FAIL", None: "–   "}[check["ok"]]
        lines.append(f"  {mark} {check['name']}: {check['measured']}")
    lines.append("targets")
    for target in figures["targets"]:
        mark = {True: "met ", False: "MISS", None: "–   "}[target["met"]]
        lines.append(f"  {mark} {target['name']}: {target['measured']}")
    if figures["errors"]:
        lines.append(
            "errors: " + ", ".join(f"{n}× {what}" for what, n in figures["errors"].items())
        )
    lines += ["", figures["verdict"]["line"]]
    return "\n".join(lines)


# --- the command -------------------------------------------------------------------------------


@contextlib.contextmanager
def _temporary_folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="boxoffice-onsale-", ignore_cleanup_errors=True) as f:
        yield Path(f)


def unprotected_server(
    target: Target, say: Say
) -> Callable[[], contextlib.AbstractAsyncContextManager[str | None]]:
    """A second `boxoffice serve` on the private server's database, its rate limits off."""

    @contextlib.asynccontextmanager
    async def serve() -> AsyncIterator[str | None]:
        assert target.database_url is not None and target.admin_token is not None
        with _temporary_folder() as folder:
            server = ServeProcess(
                env={
                    "DATABASE_URL": target.database_url,
                    "ADMIN_TOKEN": target.admin_token,
                    "SERVER_SECRET": secrets.token_urlsafe(48),
                    "SWEEP_INTERVAL_SECONDS": str(SERVER_SWEEP_INTERVAL_SECONDS),
                    **LIMITS_OFF,
                },
                log_path=folder / "server.log",
                log_mode="w",
                workers=SERVER_WORKERS,
                ready_timeout=SERVER_START_SECONDS,
            )
            say(f"starting a second server with its rate limits off on {server.url}")
            try:
                await server.astart()
            except ServeFailed as error:
                say(f"the server without rate limits did not start: {error}")
                yield None
                return
            try:
                yield server.url
            finally:
                await server.astop()

    return serve


def given_server(
    url: str | None,
) -> Callable[[], contextlib.AbstractAsyncContextManager[str | None]]:
    @contextlib.asynccontextmanager
    async def serve() -> AsyncIterator[str | None]:
        yield url

    return serve


def main(args: argparse.Namespace, settings: Settings) -> int:
    """`boxoffice simulate onsale`: 0 PASS, 1 FAIL, 2 cannot run, 130 interrupted."""
    import sys

    def say(message: str) -> None:
        print(f"boxoffice simulate onsale: {message}", file=sys.stderr, flush=True)

    try:
        plan = plan_from_args(args)
    except ValueError as error:
        say(str(error))
        return EXIT_SETUP
    if args.url is None and (args.database_url or args.admin_token or args.scalper_off_url):
        say(
            "--database-url, --admin-token and --scalper-off-url go with --url (the private "
            "server has its own)"
        )
        return EXIT_SETUP
    try:
        with contextlib.ExitStack() as stack:
            if args.url is None:
                target = stack.enter_context(private_server(say, server_env=PROTECTED_LIMITS))
                off = unprotected_server(target, say)
                limits = "the service's defaults"
            else:
                target = Target(
                    args.url.rstrip("/"),
                    args.database_url or settings.database_url,
                    args.admin_token or settings.admin_token,
                )
                off = given_server(args.scalper_off_url)
                limits = "as the server is configured"
                if plan.scalper and not args.scalper_off_url:
                    say("no --scalper-off-url: the attack runs with the protections on only")
            say(f"seed {plan.seed}")
            result = asyncio.run(
                run_onsale(plan, target, say, settings=settings, off_server=off, rate_limits=limits)
            )
    except SetupError as error:
        say(str(error))
        return EXIT_SETUP
    except KeyboardInterrupt:
        say("interrupted")
        return EXIT_INTERRUPTED
    if args.json:
        print(json.dumps(result.figures, indent=2, default=str))
    else:
        print(render(result.figures))
    return EXIT_OK if result.ok else EXIT_FAIL
