"""The scenarios: what event each run creates, and what each of its buyers does.

one-ticket      N buyers, one seat, all at the same moment: exactly one may win.
overlap         N buyers each pick 1..K random seats from a small pool: holds never share a seat.
best-available  N buyers each ask for K tickets (general admission or seated): no seat twice.
mixed           buyers browse or ask for best available, then pay, change their mind, pay too
                late, or walk away and let the hold expire (2 s holds, so some do mid-run).

With `keyed`, every reservation attempt carries a fresh Idempotency-Key (a random UUID), as
the buyer's web page sends it; without, none, as run_concurrent.py and API clients do.

Every buyer draws from its own random.Random(f"{seed}/{buyer}"), so a seed replays the same
buyers making the same choices, whatever order the workers happen to take them in.
"""

import math
import random
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import httpx

from boxoffice.simulate.load import Budget, Recorder

SCENARIOS = ("one-ticket", "overlap", "best-available", "mixed")
Layout = Literal["seated", "ga"]

# A pool scenario's workers when --concurrency is not given: plenty for a 2-core server.
DEFAULT_CONCURRENCY = 32
DEFAULT_BUYERS = 100
DEFAULT_MIXED_REQUESTS = 1000
# Long enough that no hold lapses during a run, except in `mixed`, where lapsing is the point.
DEFAULT_HOLD_SECONDS = 600
MIXED_HOLD_SECONDS = 2

# What a mixed buyer does after winning a hold, with how likely: most pay, some change their
# mind, a few pay too late (after the hold expired: 409 reservation-expired is the right
# answer), and some just walk away and let it expire.
MIXED_FATES: tuple[tuple[str, float], ...] = (
    ("confirm", 0.50),
    ("late", 0.10),
    ("release", 0.25),
    ("abandon", 0.15),
)
# How long a mixed buyer thinks before paying or releasing (uniform, seconds).
THINK_SECONDS = 0.2
# A late payer comes back this long after the hold should have expired.
LATE_BY_SECONDS = 0.25
# Half the mixed buyers look at the seat map and pick seats; the others take best available.
MIXED_BROWSE_SHARE = 0.5


@dataclass(frozen=True)
class Plan:
    """A scenario with every option resolved to a number."""

    scenario: str
    buyers: int | None
    requests: int | None
    duration: float | None
    concurrency: int
    seats_per_hold: int
    pool: int
    layout: Layout
    hold_seconds: int
    seed: int
    timeout: float
    # Every reservation attempt sends a fresh Idempotency-Key, as the buyer's web page does
    # (the keyed path: the key's claim, the hold and the stored answer in one transaction).
    keyed: bool = False

    @property
    def path(self) -> str:
        """Which reservation path the run measures, in words."""
        if self.keyed:
            return "keyed: a fresh Idempotency-Key on every reservation attempt"
        return "unkeyed: no Idempotency-Key"

    def settings(self) -> dict[str, Any]:
        return {
            "buyers": self.buyers,
            "requests": self.requests,
            "duration": self.duration,
            "concurrency": self.concurrency,
            "seats_per_hold": self.seats_per_hold,
            "pool": self.pool,
            "layout": self.layout,
            "hold_seconds": self.hold_seconds,
            "seed": self.seed,
            "timeout": self.timeout,
            "idempotency_keys": self.keyed,
        }


def _positive(name: str, value: float | None) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{name} must be positive, got {value:g}")


def make_plan(
    scenario: str,
    *,
    buyers: int | None = None,
    requests: int | None = None,
    duration: float | None = None,
    concurrency: int | None = None,
    seats_per_hold: int | None = None,
    pool: int | None = None,
    layout: Layout | None = None,
    hold_seconds: int | None = None,
    seed: int | None = None,
    timeout: float = 30.0,
    keyed: bool = False,
) -> Plan:
    """Fill in each scenario's defaults; ValueError for options that make no sense together."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    for name, value in (
        ("--buyers", buyers),
        ("--requests", requests),
        ("--duration", duration),
        ("--concurrency", concurrency),
        ("--seats-per-hold", seats_per_hold),
        ("--pool", pool),
        ("--hold-seconds", hold_seconds),
        ("--timeout", timeout),
    ):
        _positive(name, value)
    if seed is None:
        seed = secrets.randbelow(2**31)

    if scenario == "one-ticket":
        if requests is not None or duration is not None:
            raise ValueError(
                "one-ticket sends one request per buyer: use --buyers, not --requests or --duration"
            )
        buyers = buyers or DEFAULT_BUYERS
        return Plan(
            scenario=scenario,
            buyers=buyers,
            requests=None,
            duration=None,
            concurrency=min(concurrency or buyers, buyers),
            seats_per_hold=1,
            pool=1,
            layout="seated",
            hold_seconds=hold_seconds or DEFAULT_HOLD_SECONDS,
            seed=seed,
            timeout=timeout,
            keyed=keyed,
        )

    if buyers is None and requests is None and duration is None:
        if scenario == "mixed":
            requests = DEFAULT_MIXED_REQUESTS
        else:
            buyers = DEFAULT_BUYERS
    if scenario == "overlap":
        seats_per_hold = seats_per_hold or 3
        pool = pool or 12
    elif scenario == "best-available":
        seats_per_hold = seats_per_hold or 2
        # Enough for half the buyers: the event sells out, and the last seats are fought over.
        pool = pool or max(seats_per_hold, (buyers or DEFAULT_BUYERS) * seats_per_hold // 2)
    else:
        seats_per_hold = seats_per_hold or 3
        # Fewer seats than the buyers end up paying for: free at first, then fought over.
        pool = pool or max(seats_per_hold * 4, buyers // 2 if buyers else (requests or 1000) // 3)
    if seats_per_hold > pool:
        raise ValueError(f"--seats-per-hold {seats_per_hold} is more than the --pool of {pool}")
    if layout == "ga" and scenario != "best-available":
        raise ValueError(f"{scenario} picks seats by id: it needs --layout seated")
    return Plan(
        scenario=scenario,
        buyers=buyers,
        requests=requests,
        duration=duration,
        concurrency=concurrency or DEFAULT_CONCURRENCY,
        seats_per_hold=seats_per_hold,
        pool=pool,
        layout=layout or ("ga" if scenario == "best-available" else "seated"),
        hold_seconds=hold_seconds
        or (MIXED_HOLD_SECONDS if scenario == "mixed" else DEFAULT_HOLD_SECONDS),
        seed=seed,
        timeout=timeout,
        keyed=keyed,
    )


def seated_sections(seats: int) -> list[dict[str, Any]]:
    """Exactly `seats` seats: full rows in the stalls, the rest in one balcony row."""
    per_row = max(25, math.ceil(seats / 500))
    if per_row > 1000:
        raise ValueError(f"{seats} seats is more than one seated event can have here")
    sections = []
    if seats // per_row:
        sections.append({"name": "Stalls", "rows": seats // per_row, "seats_per_row": per_row})
    if seats % per_row:
        sections.append({"name": "Balcony", "rows": 1, "seats_per_row": seats % per_row})
    return [{**section, "price": 2500} for section in sections]


def event_body(plan: Plan) -> dict[str, Any]:
    """POST /events for the run's own event, so runs never disturb each other's tickets."""
    body: dict[str, Any] = {
        "name": f"boxoffice simulate {plan.scenario} (seed {plan.seed})",
        "venue": "The Simulator",
        "starts_at": (datetime.now(UTC) + timedelta(days=30)).isoformat(),
        "hold_seconds": plan.hold_seconds,
    }
    if plan.layout == "ga":
        body["general_admission"] = {"quantity": plan.pool, "price": 1000}
    else:
        body["sections"] = seated_sections(plan.pool)
    return body


def buyer_random(seed: int, buyer: int) -> random.Random:
    return random.Random(f"{seed}/{buyer}")


@dataclass
class Stage:
    """What the buyers of one run share: the plan, its event, and the recorder."""

    plan: Plan
    event_id: str
    ticket_ids: list[int]
    recorder: Recorder

    @property
    def reservations_path(self) -> str:
        return f"/events/{self.event_id}/reservations"

    def customer(self, buyer: int) -> str:
        return f"sim-{self.plan.seed}-{buyer}"

    def idempotency_key(self) -> str | None:
        """A fresh key per attempt (a random UUID, as the web page makes), if the plan says."""
        return str(uuid.uuid4()) if self.plan.keyed else None


async def reserve_chosen(
    stage: Stage, http: httpx.AsyncClient, buyer: int, ticket_ids: list[int]
) -> tuple[str | None, str | None]:
    """Hold exactly these seats; (reservation id, token) if it won."""
    answer = await stage.recorder.send(
        http,
        buyer=buyer,
        action="reserve",
        method="POST",
        path=stage.reservations_path,
        json={"ticket_ids": ticket_ids, "customer": stage.customer(buyer)},
        wanted=ticket_ids,
        idempotency_key=stage.idempotency_key(),
    )
    return answer.attempt.reservation, answer.token


async def reserve_quantity(
    stage: Stage, http: httpx.AsyncClient, buyer: int, quantity: int
) -> tuple[str | None, str | None]:
    """Hold the best `quantity` free tickets; (reservation id, token) if it won."""
    answer = await stage.recorder.send(
        http,
        buyer=buyer,
        action="reserve",
        method="POST",
        path=stage.reservations_path,
        json={"quantity": quantity, "customer": stage.customer(buyer)},
        quantity=quantity,
        idempotency_key=stage.idempotency_key(),
    )
    return answer.attempt.reservation, answer.token


async def one_ticket(stage: Stage, http: httpx.AsyncClient, buyer: int) -> None:
    await reserve_chosen(stage, http, buyer, stage.ticket_ids[:1])


async def seed_one_ticket(
    recorder: Recorder,
    http: httpx.AsyncClient,
    buyer: int,
    ticket: int | str,
    *,
    wanted: int,
) -> None:
    """The original demo's request, as run_concurrent.py has always sent it: the ticket named
    by its UUID (or id); `wanted` is its internal id, which a winning answer must report."""
    await recorder.send(
        http,
        buyer=buyer,
        action="reserve",
        method="PATCH",
        path="/tickets/reserve",
        json={"user_id": buyer, "ticket_id": ticket},
        wanted=(wanted,),
    )


async def overlap(stage: Stage, http: httpx.AsyncClient, buyer: int) -> None:
    rng = buyer_random(stage.plan.seed, buyer)
    count = rng.randint(1, min(stage.plan.seats_per_hold, len(stage.ticket_ids)))
    await reserve_chosen(stage, http, buyer, sorted(rng.sample(stage.ticket_ids, count)))


async def best_available(stage: Stage, http: httpx.AsyncClient, buyer: int) -> None:
    await reserve_quantity(stage, http, buyer, stage.plan.seats_per_hold)


def _fate(rng: random.Random) -> str:
    draw = rng.random()
    for fate, share in MIXED_FATES:
        if draw < share:
            return fate
        draw -= share
    return MIXED_FATES[-1][0]


async def mixed(stage: Stage, budget: Budget, http: httpx.AsyncClient, buyer: int) -> None:
    plan = stage.plan
    rng = buyer_random(plan.seed, buyer)
    # Every choice drawn up front, so a seed gives each buyer the same plan whatever it finds.
    count = rng.randint(1, plan.seats_per_hold)
    browses = rng.random() < MIXED_BROWSE_SHARE
    fate = _fate(rng)
    think = plan.hold_seconds + LATE_BY_SECONDS if fate == "late" else rng.uniform(0, THINK_SECONDS)
    if browses:
        answer = await stage.recorder.send(
            http,
            buyer=buyer,
            action="browse",
            method="GET",
            path=f"/events/{stage.event_id}/tickets",
            params={"status": "available", "limit": min(plan.pool, 500)},
        )
        items = answer.body.get("items") if isinstance(answer.body, dict) else None
        free = [int(ticket["id"]) for ticket in items or []]
        if len(free) >= count:
            chosen = sorted(rng.sample(free, count))
            reservation, token = await reserve_chosen(stage, http, buyer, chosen)
        else:
            reservation, token = await reserve_quantity(stage, http, buyer, count)
    else:
        reservation, token = await reserve_quantity(stage, http, buyer, count)
    if reservation is None or token is None:
        return

    if fate == "abandon":
        return
    if not await budget.pause(think):
        return
    if fate == "release":
        await stage.recorder.send(
            http,
            buyer=buyer,
            action="release",
            method="DELETE",
            path=f"/reservations/{reservation}",
            token=token,
            reservation=reservation,
        )
    else:
        await stage.recorder.send(
            http,
            buyer=buyer,
            action="confirm",
            method="POST",
            path=f"/reservations/{reservation}/confirm",
            json={"payment_reference": f"sim-pay-{plan.seed}-{buyer}"},
            token=token,
            reservation=reservation,
        )
