"""The rush a drill runs through the load balancer, and its ledger: every answer, and every
hold, booking and release a client was told succeeded (what must survive the fault)."""

import asyncio
import contextlib
import json
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from boxoffice.live.service import snapshot_statuses
from boxoffice.simulate.load import describe

# Longer than any answer may take (POOL_TIMEOUT_SECONDS, STATEMENT_TIMEOUT_MS, HAProxy's cut of
# a dead node's sessions): a request still unanswered after this counts as hung.
REQUEST_TIMEOUT_SECONDS = 15.0
# A client told 503 waits Retry-After, but at most this, before trying the same request again.
RETRY_PAUSE_CAP_SECONDS = 0.5


@dataclass(frozen=True)
class Answer:
    action: str
    started: float
    finished: float
    status: int | None  # None: no HTTP answer (the connection failed or timed out)
    error: str = ""
    served_by: str = ""
    # A 503 must say when to come back (Retry-After) in the one error format.
    proper_503: bool = True
    retry: bool = False  # the same request again, after a failed attempt

    @property
    def failed(self) -> bool:
        return self.status is None or self.status >= 500

    @property
    def kind(self) -> str:
        if self.status is None:
            return self.error
        return str(self.status)


@dataclass
class Ledger:
    answers: list[Answer] = field(default_factory=list)
    holds: dict[str, list[int]] = field(default_factory=dict)  # acknowledged: id → tickets
    bookings: dict[str, str] = field(default_factory=dict)  # acknowledged: hold id → booking id
    released: set[str] = field(default_factory=set)

    def failures(self) -> list[Answer]:
        return [answer for answer in self.answers if answer.failed]

    def kinds(self) -> Counter[str]:
        return Counter(answer.kind for answer in self.failures())


@dataclass
class Rush:
    """`clients` buyers, each in a loop: hold chosen seats or a best-available quantity, then
    confirm, release or let the hold lapse. Every request carries an Idempotency-Key and is
    retried with it after a 503 or a lost connection, as a well-behaved client would."""

    http: httpx.AsyncClient
    event_id: str
    ticket_ids: list[int]
    seed: int
    ledger: Ledger = field(default_factory=Ledger)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(
        self,
        action: str,
        method: str,
        path: str,
        *,
        json_body: dict[str, Any] | None = None,
        token: str | None = None,
        keyed: bool = True,
    ) -> httpx.Response | None:
        """The request, retried (same key) while the answer is a failure and the rush runs;
        the last answer, or None if none came."""
        headers = {"Idempotency-Key": str(uuid.uuid4())} if keyed else {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        retry = False
        while True:
            started = time.monotonic()
            response: httpx.Response | None = None
            error = ""
            try:
                response = await self.http.request(method, path, json=json_body, headers=headers)
            except httpx.TimeoutException:
                error = "timeout"
            except httpx.HTTPError as failure:
                error = describe(failure)
            answer = Answer(
                action,
                started,
                time.monotonic(),
                response.status_code if response is not None else None,
                error,
                response.headers.get("x-served-by", "") if response is not None else "",
                response is None
                or response.status_code != 503
                or (
                    "retry-after" in response.headers
                    and response.headers.get("content-type") == "application/problem+json"
                ),
                retry,
            )
            retry = True
            self.ledger.answers.append(answer)
            if not answer.failed or self.stop.is_set():
                return response
            pause = RETRY_PAUSE_CAP_SECONDS
            if response is not None:
                with contextlib.suppress(ValueError):
                    pause = min(pause, float(response.headers.get("retry-after", pause)))
            await asyncio.sleep(pause)

    async def buyer(self, number: int) -> None:
        rng = random.Random(f"{self.seed}/{number}")
        customer = f"drill-{self.seed}-{number}@example.com"
        path = f"/events/{self.event_id}/reservations"
        while not self.stop.is_set():
            body: dict[str, Any] = {"customer": customer}
            if rng.random() < 0.6:
                body["ticket_ids"] = rng.sample(self.ticket_ids, rng.choice((1, 1, 2)))
                action = "hold"
            else:
                body["quantity"] = rng.choice((1, 2, 3))
                action = "best-available"
            response = await self.send(action, "POST", path, json_body=body)
            if response is None or response.status_code != 201:
                continue
            hold = response.json()
            hold_id = str(hold["id"])
            self.ledger.holds[hold_id] = sorted(int(ticket["id"]) for ticket in hold["tickets"])
            fate = rng.random()
            if fate < 0.45:
                confirmed = await self.send(
                    "confirm",
                    "POST",
                    f"/reservations/{hold_id}/confirm",
                    json_body={"payment_reference": f"drill-{uuid.uuid4().hex[:12]}"},
                    token=hold["token"],
                )
                if confirmed is not None and confirmed.status_code in (200, 201):
                    self.ledger.bookings[hold_id] = str(confirmed.json()["id"])
            elif fate < 0.8:
                released = await self.send(
                    "release",
                    "DELETE",
                    f"/reservations/{hold_id}",
                    token=hold["token"],
                    keyed=False,
                )
                if released is not None and released.status_code in (200, 204):
                    self.ledger.released.add(hold_id)
            # else: the hold lapses, and the sweeper (on whichever node leads) releases it.


async def join_queue(rush: "Rush", queue_event_id: str) -> None:
    """Buyers joining another event's waiting room, four a second through the rush: the
    admitter (the relay's leader) must go on admitting them on whichever node leads."""
    number = 0
    while not rush.stop.is_set():
        number += 1
        await rush.send(
            "queue-join",
            "POST",
            f"/events/{queue_event_id}/queue",
            json_body={"customer": f"drill-queue-{rush.seed}-{number}@example.com"},
            keyed=False,
        )
        await asyncio.sleep(0.25)  # a pace, not a wait for anything


@dataclass
class Stream:
    """One buyer's live seat map: GET /events/{id}/stream through the load balancer, folded
    into ticket → status (`available`, `reserved`, `booked`), reconnecting as a browser
    would."""

    http: httpx.AsyncClient
    event_id: str
    statuses: dict[int, str] = field(default_factory=dict)
    # Tickets the stream ever called booked: a booking is never undone in a drill, so each must
    # be booked in the database afterwards (an announced change that did not commit is not).
    announced_booked: set[int] = field(default_factory=set)
    changes: list[float] = field(default_factory=list)  # when each change arrived
    snapshots: list[float] = field(default_factory=list)
    reconnects: int = 0

    def fold(self, kind: str, data: dict[str, Any]) -> None:
        now = time.monotonic()
        if kind == "snapshot":
            self.snapshots.append(now)
            self.statuses = snapshot_statuses(data)
            changed = list(self.statuses.items())
        elif kind == "tickets":
            self.changes.append(now)
            changed = [(int(ticket), str(status)) for ticket, status in data["tickets"]]
            self.statuses.update(changed)
        else:
            return
        self.announced_booked.update(ticket for ticket, status in changed if status == "booked")

    async def follow(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                async with self.http.stream(
                    "GET", f"/events/{self.event_id}/stream", timeout=httpx.Timeout(None)
                ) as response:
                    if response.status_code != 200:
                        raise httpx.HTTPError(f"stream answered {response.status_code}")
                    kind = ""
                    async for line in response.aiter_lines():
                        if line.startswith("event:"):
                            kind = line[6:].strip()
                        elif line.startswith("data:"):
                            self.fold(kind, json.loads(line[5:]))
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            if not stop.is_set():
                self.reconnects += 1
                await asyncio.sleep(0.5)
