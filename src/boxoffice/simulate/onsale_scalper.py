"""The scalper of `boxoffice simulate onsale`: the release/re-hold attack, and a real buyer
beside it.

The scalper is one client (one address) with a few customer names. Under each name it holds
as many seats as it can (best available: it halves what it asks for on a refusal and doubles
it after a hold, so a single seat that comes free is taken at once), and just before a hold
would expire it releases it and holds the same seats again, so they never come back on
sale. A refusal of any kind is retried at once
(a refused request costs no token of the rate limit, so retrying early is the scalper's best
play).

The real buyer is another client (another address) that asks for one ticket every 100 ms and
releases at once what it gets: its success rate is the share of the answers it got that were
a hold (429s are counted apart).

The figure that matters is read from the database afterwards: for each customer, the most
tickets it held at once (a sweep over its holds' lifetimes), against the event's cap.
"""

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

# The scalper releases and re-holds this long before a hold's expiry (by its own clock, which
# started the hold's countdown before the server did).
RENEW_BEFORE_SECONDS = 0.6
# The most it asks for in one hold.
SCALPER_CHUNK = 10
# Between refused attempts, so the event loop and the server breathe.
RETRY_PAUSE_SECONDS = 0.02
REAL_BUYER_INTERVAL_SECONDS = 0.1
SCALPER_ADDRESS = "198.51.100.66"
REAL_BUYER_ADDRESS = "203.0.113.10"
REAL_BUYER = "real-buyer@example.org"

# call(kind, method, path, address, json, token) → (status, problem, body, headers)
Call = Callable[
    [str, str, str, str, dict[str, Any] | None, str | None],
    Awaitable[tuple[int | None, str | None, Any]],
]


@dataclass
class Hold:
    id: str
    token: str
    tickets: list[int]
    renew_at: float


@dataclass
class AttackCounts:
    holds: int = 0
    renewed: int = 0
    renewals_lost: int = 0
    too_many: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    # The most this client saw itself hold at once, per customer.
    held_most: dict[str, int] = field(default_factory=dict)

    def refuse(self, status: int | None, problem: str | None) -> None:
        key = f"{status} {problem}" if problem else str(status)
        self.refused[key] = self.refused.get(key, 0) + 1


@dataclass
class RealBuyerCounts:
    attempts: int = 0
    holds: int = 0
    refused: int = 0
    too_many: int = 0
    other: int = 0

    @property
    def success_rate(self) -> float | None:
        """Holds among the answers that were a hold or a refusal (429s apart)."""
        judged = self.holds + self.refused
        return self.holds / judged if judged else None

    @property
    def success_rate_all(self) -> float | None:
        return self.holds / self.attempts if self.attempts else None


def _problem(body: Any) -> str | None:
    if isinstance(body, dict) and body.get("type"):
        return str(body["type"]).rsplit("/", 1)[-1]
    return None


async def scalper(
    call: Call,
    *,
    event_id: str,
    customers: list[str],
    seconds: float,
    hold_seconds: int,
    stop: asyncio.Event,
) -> AttackCounts:
    """The attack, one task per customer name, all from SCALPER_ADDRESS, for `seconds`."""
    counts = AttackCounts()
    deadline = time.monotonic() + seconds
    path = f"/events/{event_id}/reservations"

    async def hold(customer: str, body: dict[str, Any]) -> Hold | None:
        started = time.monotonic()
        status, problem, answer = await call(
            "scalper-hold", "POST", path, SCALPER_ADDRESS, {**body, "customer": customer}, None
        )
        if status == 201 and isinstance(answer, dict):
            counts.holds += 1
            return Hold(
                str(answer["id"]),
                str(answer["token"]),
                [int(ticket["id"]) for ticket in answer.get("tickets", [])],
                started + hold_seconds - RENEW_BEFORE_SECONDS,
            )
        if status == 429:
            counts.too_many += 1
        counts.refuse(status, problem)
        return None

    async def release(held: Hold) -> None:
        await call(
            "scalper-release",
            "DELETE",
            f"/reservations/{held.id}",
            SCALPER_ADDRESS,
            None,
            held.token,
        )

    async def one(customer: str) -> None:
        holds: list[Hold] = []
        ask = SCALPER_CHUNK

        def note() -> None:
            now_held = sum(len(h.tickets) for h in holds)
            counts.held_most[customer] = max(counts.held_most.get(customer, 0), now_held)

        while time.monotonic() < deadline and not stop.is_set():
            now = time.monotonic()
            for held in [h for h in holds if h.renew_at <= now]:
                holds.remove(held)
                await release(held)
                again = await hold(customer, {"ticket_ids": held.tickets})
                if again is None:
                    counts.renewals_lost += 1
                else:
                    counts.renewed += 1
                    holds.append(again)
                    note()
            got = await hold(customer, {"quantity": ask})
            if got is not None:
                holds.append(got)
                note()
                ask = min(SCALPER_CHUNK, ask * 2)
                continue
            ask = max(1, ask // 2)
            await asyncio.sleep(RETRY_PAUSE_SECONDS)
        for held in holds:
            await release(held)

    await asyncio.gather(*(one(customer) for customer in customers))
    return counts


async def real_buyer(
    call: Call, *, event_id: str, seconds: float, stop: asyncio.Event
) -> RealBuyerCounts:
    """One ticket every 100 ms, released at once when held."""
    counts = RealBuyerCounts()
    path = f"/events/{event_id}/reservations"
    started = time.monotonic()
    attempt = 0
    while time.monotonic() - started < seconds and not stop.is_set():
        counts.attempts += 1
        status, _, answer = await call(
            "real-hold",
            "POST",
            path,
            REAL_BUYER_ADDRESS,
            {"quantity": 1, "customer": REAL_BUYER},
            None,
        )
        if status == 201 and isinstance(answer, dict):
            counts.holds += 1
            await call(
                "real-release",
                "DELETE",
                f"/reservations/{answer['id']}",
                REAL_BUYER_ADDRESS,
                None,
                str(answer["token"]),
            )
        elif status == 409:
            counts.refused += 1
        elif status == 429:
            counts.too_many += 1
        else:
            counts.other += 1
        attempt += 1
        wait = attempt * REAL_BUYER_INTERVAL_SECONDS - (time.monotonic() - started)
        if wait > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait)
    return counts


# --- the database's view -----------------------------------------------------------------------

_HOLD_SPANS = """
SELECT customer_key, ticket_count,
       extract(epoch FROM created_at)::float8 AS held_from,
       extract(epoch FROM least(coalesce(ended_at, expires_at), expires_at))::float8 AS held_to
FROM reservations WHERE event_id = $1
"""


def most_at_once(spans: list[tuple[float, float, int]]) -> int:
    """The most tickets held at one moment, from (from, to, tickets) spans; a hold that ends
    when another starts does not overlap it."""
    moments: list[tuple[float, int]] = []
    for start, end, tickets in spans:
        if end > start:
            moments.append((start, tickets))
            moments.append((end, -tickets))
    # At one instant, ends (negative) before starts.
    moments.sort(key=lambda moment: (moment[0], moment[1]))
    held = most = 0
    for _, change in moments:
        held += change
        most = max(most, held)
    return most


async def held_most(
    conn: asyncpg.Connection, event_id: str, customers: list[str]
) -> tuple[dict[str, int], int]:
    """By the database: per customer, the most tickets it held (or had paid for) at once;
    and the most these customers held together at once."""
    spans: dict[str, list[tuple[float, float, int]]] = {}
    for row in await conn.fetch(_HOLD_SPANS, uuid.UUID(event_id)):
        spans.setdefault(row["customer_key"], []).append(
            (float(row["held_from"]), float(row["held_to"]), int(row["ticket_count"]))
        )
    keys = [customer.strip().lower() for customer in customers]
    per_customer = {c: most_at_once(spans.get(k, [])) for c, k in zip(customers, keys, strict=True)}
    together = most_at_once([span for key in keys for span in spans.get(key, [])])
    return per_customer, together


@dataclass
class ScalperResult:
    protections: str  # "on" or "off"
    event_id: str
    tickets: int
    cap: int | None
    rate_limits: str
    seconds: float
    hold_seconds: int
    customers: list[str]
    attack: AttackCounts
    real: RealBuyerCounts
    # The most held at once by the database: per customer name, and by all of them together.
    held_most_db: dict[str, int]
    held_most_together: int

    @property
    def held_most_per_customer(self) -> int:
        return max(self.held_most_db.values(), default=0)

    def to_json(self) -> dict[str, Any]:
        real = self.real
        return {
            "protections": self.protections,
            "event_id": self.event_id,
            "tickets": self.tickets,
            "cap": self.cap,
            "rate_limits": self.rate_limits,
            "seconds": self.seconds,
            "hold_seconds": self.hold_seconds,
            "customers": len(self.customers),
            "held_most_per_customer": self.held_most_per_customer,
            "held_most_by_customer": self.held_most_db,
            "held_most_all_names_at_once": self.held_most_together,
            "holds": self.attack.holds,
            "renewed": self.attack.renewed,
            "renewals_lost": self.attack.renewals_lost,
            "too_many_requests": self.attack.too_many,
            "refused": dict(sorted(self.attack.refused.items())),
            "real_buyer": {
                "attempts": real.attempts,
                "holds": real.holds,
                "refused": real.refused,
                "too_many_requests": real.too_many,
                "other": real.other,
                "success_rate": None if real.success_rate is None else round(real.success_rate, 4),
                "success_rate_all_attempts": (
                    None if real.success_rate_all is None else round(real.success_rate_all, 4)
                ),
            },
        }
