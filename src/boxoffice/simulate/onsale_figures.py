"""`boxoffice simulate onsale`: the figures and the verdict, from what the buyers saw and
what the database recorded.

Fairness and the admission rate are read from `queue_entries` (lane, rank, joined_at,
admitted_at), the integrity checks from `reservations`; the pure functions here take plain
rows, so tests/test_onsale_stats.py can feed them made-up queues.

    arrivals     after the on-sale, admission order must be join order: Spearman's ρ between
                 the arrival rank (the server's join order) and the admission order is 1.0,
                 nobody was admitted before someone who joined earlier, and no waiting place
                 was skipped. Places of one admitter tick share one `admitted_at` (one
                 transaction): within a tick the admission order is taken as the rank order,
                 since nothing can tell those places apart. Independently of the server's
                 ranks, from the client's clocks: a buyer whose join was answered before
                 another's join was sent must not be admitted after it.
    pre-queue    the draw must be uniformly random: the places bucketed by join order against
                 their drawn ranks bucketed in rank order, a k × k chi-square test of
                 independence (k so that every cell expects at least 5).
    rate         admissions per minute over the intervals between two admitter ticks during
                 which the queue never emptied (after both ticks somebody who had joined
                 before was still waiting), so the rate, not the supply, limited them; and
                 never more admitted by any moment than the rate allows since the opening.
"""

import bisect
import math
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import asyncpg

from boxoffice.simulate.outcomes import InvariantReport
from boxoffice.simulate.stats import groups_for, position_table, spearman
from boxoffice.simulate.verdict import percentile

# The admission rate must come within this share of the configured one.
RATE_TOLERANCE = 0.05
# Fewer admissions than this in the measured intervals: the ±1 of a tick boundary could
# matter, and the rate is reported as not measured.
RATE_MIN_ADMISSIONS = 40
RATE_MIN_SECONDS = 1.0
# A place counts as waiting at a tick only if it joined this long before it (a join's
# transaction starts, and is stamped, a moment before it commits and the admitter sees it).
JOIN_VISIBLE_SECONDS = 0.1
# The pre-queue's draw fails the verdict below this p-value (a fair draw fails 1 run in 1000).
PRE_QUEUE_ALPHA = 0.001
# The latency target for reservations while the joins go on.
RESERVATION_P99_TARGET_MS = 100.0


@dataclass(frozen=True, slots=True)
class PlaceRow:
    """One place of the queue as the database has it; times in seconds since the epoch."""

    id: str
    lane: int
    rank: int | None
    status: str
    joined: float
    admitted: float | None


@dataclass(frozen=True, slots=True)
class ClientJoin:
    """One arrival's join as the buyer timed it (seconds on one monotonic clock)."""

    place_id: str
    sent: float
    answered: float


# --- latency -----------------------------------------------------------------------------------


def latency_ms(seconds: Iterable[float]) -> dict[str, float] | None:
    values = sorted(value * 1000 for value in seconds)
    if not values:
        return None
    return {
        "count": len(values),
        "p50": round(percentile(values, 50), 1),
        "p95": round(percentile(values, 95), 1),
        "p99": round(percentile(values, 99), 1),
        "max": round(values[-1], 1),
        "mean": round(math.fsum(values) / len(values), 1),
    }


# --- the admission rate ------------------------------------------------------------------------


@dataclass(frozen=True)
class AdmissionRate:
    configured_per_minute: int
    admitted: int
    ticks: int
    first_admitted: float | None
    last_admitted: float | None
    # Over the intervals when the queue stayed non-empty (None: too little of that to tell).
    measured_per_minute: float | None
    measured_admissions: int
    measured_seconds: float
    # Most admitted by any tick beyond what the rate allowed since the opening (≤ 1 is fine).
    ahead_of_rate: float

    @property
    def deviation(self) -> float | None:
        if self.measured_per_minute is None:
            return None
        return self.measured_per_minute / self.configured_per_minute - 1

    @property
    def within_tolerance(self) -> bool | None:
        deviation = self.deviation
        return None if deviation is None else abs(deviation) <= RATE_TOLERANCE

    def to_json(self) -> dict[str, Any]:
        deviation = self.deviation
        return {
            **asdict(self),
            "measured_per_minute": (
                None if self.measured_per_minute is None else round(self.measured_per_minute, 1)
            ),
            "measured_seconds": round(self.measured_seconds, 3),
            "ahead_of_rate": round(self.ahead_of_rate, 3),
            "deviation": None if deviation is None else round(deviation, 4),
            "within_5_percent": self.within_tolerance,
        }


def admission_rate(places: Sequence[PlaceRow], *, per_minute: int, opening: float) -> AdmissionRate:
    """The admitter's rate, from `admitted_at` of the admitted places (see the module doc)."""
    per_second = per_minute / 60
    admitted = sorted(p.admitted for p in places if p.admitted is not None)
    ticks = sorted(set(admitted))
    # Places by when they were admitted (never: last), and the earliest join among each
    # suffix: the earliest-joined place still waiting after a tick at t.
    by_admission = sorted(
        (p for p in places if p.status != "left"),
        key=lambda p: math.inf if p.admitted is None else p.admitted,
    )
    admitted_keys = [math.inf if p.admitted is None else p.admitted for p in by_admission]
    earliest_waiting = [math.inf] * (len(by_admission) + 1)
    for index in range(len(by_admission) - 1, -1, -1):
        earliest_waiting[index] = min(earliest_waiting[index + 1], by_admission[index].joined)

    def backlogged(tick: float) -> bool:
        """After this tick, somebody who had joined before it was still waiting."""
        start = bisect.bisect_right(admitted_keys, tick)
        return earliest_waiting[start] < tick - JOIN_VISIBLE_SECONDS

    counts: dict[float, int] = {}
    for moment in admitted:
        counts[moment] = counts.get(moment, 0) + 1
    measured_admissions = 0
    measured_seconds = 0.0
    saturated = [backlogged(tick) for tick in ticks]
    for index in range(1, len(ticks)):
        if saturated[index - 1] and saturated[index]:
            measured_admissions += counts[ticks[index]]
            measured_seconds += ticks[index] - ticks[index - 1]
    measured = None
    if measured_admissions >= RATE_MIN_ADMISSIONS and measured_seconds >= RATE_MIN_SECONDS:
        measured = measured_admissions * 60 / measured_seconds
    ahead = 0.0
    total = 0
    for tick in ticks:
        total += counts[tick]
        ahead = max(ahead, total - per_second * max(0.0, tick - opening))
    return AdmissionRate(
        configured_per_minute=per_minute,
        admitted=len(admitted),
        ticks=len(ticks),
        first_admitted=ticks[0] if ticks else None,
        last_admitted=ticks[-1] if ticks else None,
        measured_per_minute=measured,
        measured_admissions=measured_admissions,
        measured_seconds=measured_seconds,
        ahead_of_rate=ahead,
    )


# --- fairness ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArrivalFairness:
    arrivals: int
    admitted: int
    # ρ between join order (arrival rank) and admission order; 1.0 when they agree.
    spearman: float | None
    # Admitted strictly before someone who joined earlier (by rank).
    overtakers: int
    # Still waiting at the end although someone who joined later was admitted.
    skipped: int
    # From the client's clocks: admitted strictly before (or while still waiting, instead of)
    # someone whose join had been answered before this one's was sent.
    client_order_violations: int
    client_joins: int

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "spearman": None if self.spearman is None else round(self.spearman, 9),
        }


def arrival_fairness(
    places: Sequence[PlaceRow], client: Sequence[ClientJoin] = ()
) -> ArrivalFairness:
    arrivals = sorted(
        (p for p in places if p.lane == 1 and p.rank is not None and p.status != "left"),
        key=lambda p: p.rank or 0,
    )
    admitted = [p for p in arrivals if p.admitted is not None]
    rho = None
    if len(admitted) >= 2:
        join_order = [p.rank for p in admitted]
        admission_order = [(p.admitted, p.rank) for p in admitted]
        rho = spearman(join_order, admission_order)
    overtakers = 0
    latest = -math.inf
    for place in admitted:
        assert place.admitted is not None
        if place.admitted < latest:
            overtakers += 1
        latest = max(latest, place.admitted)
    last_admitted_rank = max((p.rank or 0 for p in admitted), default=0)
    skipped = sum(1 for p in arrivals if p.admitted is None and (p.rank or 0) < last_admitted_rank)
    return ArrivalFairness(
        arrivals=len(arrivals),
        admitted=len(admitted),
        spearman=rho,
        overtakers=overtakers,
        skipped=skipped,
        client_order_violations=client_order_violations(arrivals, client),
        client_joins=len(client),
    )


def client_order_violations(places: Sequence[PlaceRow], client: Sequence[ClientJoin]) -> int:
    """Arrivals admitted before (or instead of) a buyer whose join was answered before theirs
    was sent: that buyer surely joined first, whatever the server's clock or ranks say."""
    admitted_at = {p.id: (math.inf if p.admitted is None else p.admitted) for p in places}
    joins = [join for join in client if join.place_id in admitted_at]
    by_answer = sorted(joins, key=lambda join: join.answered)
    answered = [join.answered for join in by_answer]
    latest_before = [-math.inf]
    for join in by_answer:
        latest_before.append(max(latest_before[-1], admitted_at[join.place_id]))
    violations = 0
    for join in joins:
        mine = admitted_at[join.place_id]
        if mine == math.inf:
            continue
        earlier = bisect.bisect_left(answered, join.sent)
        if latest_before[earlier] > mine:
            violations += 1
    return violations


@dataclass(frozen=True)
class PreQueueFairness:
    places: int
    groups: int
    chi_square: float | None
    dof: int | None
    p_value: float | None
    min_expected: float | None
    # ρ between join order and the drawn rank (a fair draw: near 0).
    spearman_join_vs_draw: float | None
    table: list[list[int]] = field(default_factory=list)

    @property
    def measured(self) -> bool:
        return self.p_value is not None

    @property
    def uniform(self) -> bool | None:
        return None if self.p_value is None else self.p_value >= PRE_QUEUE_ALPHA

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "chi_square": None if self.chi_square is None else round(self.chi_square, 3),
            "p_value": None if self.p_value is None else round(self.p_value, 6),
            "min_expected": None if self.min_expected is None else round(self.min_expected, 2),
            "spearman_join_vs_draw": (
                None if self.spearman_join_vs_draw is None else round(self.spearman_join_vs_draw, 4)
            ),
            "alpha": PRE_QUEUE_ALPHA,
            "uniform": self.uniform,
        }


def pre_queue_fairness(places: Sequence[PlaceRow]) -> PreQueueFairness:
    drawn = sorted(
        (p for p in places if p.lane == 0 and p.rank is not None),
        key=lambda p: (p.joined, p.id),
    )
    count = len(drawn)
    rho = spearman(list(range(count)), [p.rank for p in drawn]) if count >= 2 else None
    groups = groups_for(count)
    if not groups:
        return PreQueueFairness(count, 0, None, None, None, None, rho)
    test = position_table([p.id for p in drawn], [p.rank for p in drawn], groups)
    return PreQueueFairness(
        places=count,
        groups=groups,
        chi_square=test.statistic,
        dof=test.dof,
        p_value=test.p_value,
        min_expected=test.min_expected,
        spearman_join_vs_draw=rho,
        table=test.table,
    )


def lane_order_violations(places: Sequence[PlaceRow]) -> int:
    """Pre-queue places admitted after (or still waiting when) the first arrival was admitted:
    the pre-queue goes first."""
    first_arrival = min(
        (p.admitted for p in places if p.lane == 1 and p.admitted is not None), default=None
    )
    if first_arrival is None:
        return 0
    return sum(
        1
        for p in places
        if p.lane == 0 and p.status != "left" and (p.admitted is None or p.admitted > first_arrival)
    )


# --- the database ------------------------------------------------------------------------------

_PLACES = """
SELECT id::text AS id, lane, rank, status,
       extract(epoch FROM joined_at)::float8 AS joined,
       extract(epoch FROM admitted_at)::float8 AS admitted
FROM queue_entries WHERE event_id = $1
"""
_OPENING = "SELECT extract(epoch FROM sales_start_at)::float8 FROM events WHERE id = $1"
# Every hold of the queued event made with a pass the waiting room gave this customer, used
# for this hold, admitted before it and unexpired when it was made.
_WITHOUT_PASS = """
SELECT count(*) FROM reservations r
WHERE r.event_id = $1 AND NOT EXISTS (
    SELECT 1 FROM queue_entries q
    WHERE q.event_id = r.event_id AND q.reservation_id = r.id AND q.status = 'used'
      AND q.customer_key = r.customer_key
      AND q.admitted_at <= r.created_at AND r.created_at < q.pass_expires_at
)
"""
_PER_CUSTOMER = """
SELECT coalesce(max(n), 0) AS most, count(*) FILTER (WHERE $2::int IS NOT NULL AND n > $2)
       AS above
FROM (
    SELECT customer_key, sum(ticket_count) AS n FROM reservations
    WHERE event_id = $1 AND (status = 'confirmed' OR (status = 'active' AND expires_at > now()))
    GROUP BY customer_key
) c
"""
_SOLD_TWICE = """
SELECT count(*) FROM (
    SELECT rt.ticket_id FROM reservation_tickets rt
    JOIN reservations r ON r.id = rt.reservation_id
    WHERE r.event_id = $1 AND r.status = 'confirmed'
    GROUP BY rt.ticket_id HAVING count(*) > 1
) twice
"""
_SALES = """
SELECT (SELECT count(*) FROM reservations WHERE event_id = $1) AS holds,
       (SELECT count(*) FROM reservations WHERE event_id = $1 AND status = 'confirmed') AS paid,
       (SELECT count(*) FROM bookings WHERE event_id = $1) AS bookings,
       (SELECT count(*) FROM tickets WHERE event_id = $1 AND status = 'booked') AS booked,
       (SELECT coalesce(sum(ticket_count), 0) FROM reservations
        WHERE event_id = $1 AND status = 'confirmed') AS paid_tickets,
       (SELECT count(*) FROM tickets WHERE event_id = $1) AS tickets
"""


async def queue_places(conn: asyncpg.Connection, event_id: uuid.UUID) -> list[PlaceRow]:
    return [PlaceRow(**dict(row)) for row in await conn.fetch(_PLACES, event_id)]


async def opening_of(conn: asyncpg.Connection, event_id: uuid.UUID) -> float:
    return float(await conn.fetchval(_OPENING, event_id))


@dataclass(frozen=True)
class Integrity:
    holds: int
    paid: int
    bookings: int
    tickets: int
    tickets_booked: int
    tickets_paid: int
    without_pass: int
    above_cap: int
    most_per_customer: int
    cap: int | None
    sold_twice: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


async def integrity(conn: asyncpg.Connection, event_id: uuid.UUID, cap: int | None) -> Integrity:
    """The issue's checks on the queued event, in one snapshot."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        without_pass = int(await conn.fetchval(_WITHOUT_PASS, event_id))
        per_customer = await conn.fetchrow(_PER_CUSTOMER, event_id, cap)
        sold_twice = int(await conn.fetchval(_SOLD_TWICE, event_id))
        sales = await conn.fetchrow(_SALES, event_id)
    assert per_customer is not None and sales is not None
    return Integrity(
        holds=int(sales["holds"]),
        paid=int(sales["paid"]),
        bookings=int(sales["bookings"]),
        tickets=int(sales["tickets"]),
        tickets_booked=int(sales["booked"]),
        tickets_paid=int(sales["paid_tickets"]),
        without_pass=without_pass,
        above_cap=int(per_customer["above"]),
        most_per_customer=int(per_customer["most"]),
        cap=cap,
        sold_twice=sold_twice,
    )


# --- the verdict -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool | None  # None: not measured (says why in `measured`)
    measured: str


def checks(
    *,
    arrivals: ArrivalFairness,
    pre_queue: PreQueueFairness,
    lane_violations: int,
    rate: AdmissionRate,
    integrity: Integrity,
    invariants: InvariantReport,
    errors: dict[str, int],
    not_admitted: int,
    scalper_held_most: int | None,
    scalper_cap: int | None,
) -> list[Check]:
    """Every check of the verdict, each with what was measured."""
    rho = arrivals.spearman
    found: list[Check] = [
        Check(
            "arrivals admitted in join order (Spearman ρ = 1.0)",
            None if rho is None else rho >= 1.0 - 1e-12 and arrivals.overtakers == 0,
            "fewer than 2 arrivals admitted"
            if rho is None
            else f"ρ = {rho:.6f} over {arrivals.admitted:,} admitted arrivals; "
            f"{arrivals.overtakers} admitted before an earlier joiner",
        ),
        Check(
            "no arrival skipped",
            arrivals.skipped == 0,
            f"{arrivals.skipped} still waiting behind admitted later joiners",
        ),
        Check(
            "client-observed join order kept",
            arrivals.client_order_violations == 0,
            f"{arrivals.client_order_violations} admitted before a buyer whose join was "
            f"answered before theirs was sent ({arrivals.client_joins:,} joins timed)",
        ),
        Check(
            "pre-queue before arrivals",
            lane_violations == 0,
            f"{lane_violations} pre-queue places admitted after the first arrival",
        ),
        Check(
            "pre-queue positions uniformly random (chi-square, p ≥ 0.001)",
            pre_queue.uniform,
            f"too few pre-queue places for the test ({pre_queue.places}; it needs 20)"
            if not pre_queue.measured
            else f"χ² = {pre_queue.chi_square:.2f}, {pre_queue.dof} dof "
            f"({pre_queue.groups}×{pre_queue.groups}), p = {pre_queue.p_value:.4f}",
        ),
        Check(
            "admission rate within ±5 % of the configured rate",
            rate.within_tolerance,
            "the queue never stayed non-empty long enough to measure "
            f"({rate.measured_admissions} admissions over {rate.measured_seconds:.1f} s)"
            if rate.measured_per_minute is None
            else f"{rate.measured_per_minute:,.0f}/min vs {rate.configured_per_minute:,}/min "
            f"({(rate.deviation or 0) * 100:+.1f} %, {rate.measured_admissions:,} admissions "
            f"over {rate.measured_seconds:.1f} s)",
        ),
        Check(
            "never ahead of the rate",
            rate.ahead_of_rate <= 1.0 + 1e-6,
            f"at most {rate.ahead_of_rate:.2f} admitted beyond rate × time since the opening",
        ),
        Check(
            "every buyer who kept waiting was admitted",
            not_admitted == 0,
            f"{not_admitted} still waiting when the run ended",
        ),
        Check(
            "zero reservations without a valid pass",
            integrity.without_pass == 0,
            f"{integrity.without_pass} of {integrity.holds:,} holds",
        ),
        Check(
            "zero customers above the cap",
            integrity.above_cap == 0,
            f"{integrity.above_cap} above; most held or bought by one customer: "
            f"{integrity.most_per_customer} (cap {integrity.cap or 'none'})",
        ),
        Check(
            "zero seats sold twice",
            integrity.sold_twice == 0
            and integrity.tickets_booked == integrity.tickets_paid
            and integrity.bookings == integrity.paid,
            f"{integrity.sold_twice} tickets in two paid holds; {integrity.tickets_booked:,} "
            f"booked = {integrity.tickets_paid:,} paid for",
        ),
        Check(
            "invariants I1–I5 hold",
            invariants.status == "passed",
            invariants.status
            if invariants.status != "failed"
            else "; ".join(str(v) for v in [*invariants.event, *invariants.database])[:300],
        ),
        Check(
            "no server errors, transport errors or unexpected answers",
            not errors,
            ", ".join(f"{count}× {what}" for what, count in errors.items())[:300] or "none",
        ),
    ]
    if scalper_cap is not None and scalper_held_most is not None:
        found.append(
            Check(
                "scalper (protections on) never above the cap per customer",
                scalper_held_most <= scalper_cap,
                f"held at most {scalper_held_most} at once per customer, cap {scalper_cap}",
            )
        )
    return found


@dataclass(frozen=True)
class Target:
    name: str
    met: bool | None
    measured: str


def reservation_target(during_joins: dict[str, float] | None) -> Target:
    if during_joins is None:
        return Target(
            "reservation p99 < 100 ms while the joins go on",
            None,
            "no reservation was made while the joins went on",
        )
    p99 = during_joins["p99"]
    return Target(
        "reservation p99 < 100 ms while the joins go on",
        p99 < RESERVATION_P99_TARGET_MS,
        f"p99 {p99:.1f} ms over {int(during_joins['count']):,} reservations",
    )
