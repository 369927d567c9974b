"""Sweeping expired holds while reservations continue: `sweep_all` in the benchmark process,
then (full runs) the server's own sweepers."""

import asyncio
import time

from ..bench import Bench, TicketPool
from ..common import ms, num, say, table
from ..load import Event, LoadResult, ReserveChosen, other_cpu
from ..plan import HTTP_RATE_CAP
from ..report import Target

# Cheap enough to poll ten times a second while the sweepers work (first index entry only).
ANY_EXPIRED_SQL = """
SELECT EXISTS (SELECT 1 FROM tickets WHERE status = 'reserved' AND hold_expires_at <= now())
    OR EXISTS (SELECT 1 FROM reservations WHERE status = 'active' AND expires_at <= now())
"""

SWEEP_HOLDS_SQL = """
WITH holds AS MATERIALIZED (
    SELECT t.id AS ticket_id, t.event_id, gen_random_uuid() AS reservation_id,
           now() + make_interval(secs => e.hold_seconds) AS expires_at
    FROM tickets t JOIN events e ON e.id = t.event_id
    WHERE t.event_id = $1 AND t.status = 'available'
), new_reservations AS (
    INSERT INTO reservations (id, event_id, customer, token_hash, ticket_count, expires_at)
    SELECT reservation_id, event_id, 'bench-sweep-' || ticket_id,
           sha256(CAST(CAST(reservation_id AS text) AS bytea)), 1, expires_at
    FROM holds
), held AS (
    UPDATE tickets t
    SET status = 'reserved', reservation_id = h.reservation_id, hold_expires_at = h.expires_at
    FROM holds h WHERE t.id = h.ticket_id
), links AS (
    INSERT INTO reservation_tickets (reservation_id, ticket_id, event_id)
    SELECT reservation_id, ticket_id, event_id FROM holds
), audit AS (
    INSERT INTO ticket_audit (ticket_id, event_id, from_status, to_status, reason, reservation_id)
    SELECT ticket_id, event_id, 'available', 'reserved', 'reserved', reservation_id
    FROM holds ORDER BY ticket_id
)
SELECT count(*) FROM holds
"""


async def _insert_expiring_holds(bench: Bench, event: Event) -> tuple[int, float]:
    """One active, 1-second hold per ticket, written as the service writes a hold."""
    started = time.perf_counter()
    count = await bench.conn.fetchval(SWEEP_HOLDS_SQL, event.id)
    await bench.conn.execute("ANALYZE tickets; ANALYZE reservations; ANALYZE ticket_audit")
    return int(count), time.perf_counter() - started


async def _wait_expired(bench: Bench, event: Event) -> None:
    query = "SELECT now() > max(hold_expires_at) FROM tickets WHERE event_id = $1"
    while True:
        if await bench.conn.fetchval(query, event.id):
            return
        await asyncio.sleep(0.05)


async def _leftovers(bench: Bench) -> int:
    return int(
        await bench.conn.fetchval(
            "SELECT (SELECT count(*) FROM tickets"
            "        WHERE status = 'reserved' AND hold_expires_at <= now())"
            " + (SELECT count(*) FROM reservations"
            "    WHERE status = 'active' AND expires_at <= now())"
        )
    )


async def run(bench: Bench) -> None:
    from boxoffice.expiry import sweep_all

    plan = bench.plan
    batch = bench.settings.sweep_batch_size
    pool = TicketPool(bench, "sweep reservations")
    rows: list[list[str]] = []
    baseline = bench.distinct_p99.get(plan.sweep_concurrency)

    # A: `boxoffice sweep` (sweep_all) in this process; the server's sweepers are off.
    event = await bench.create_event("bench sweep", plan.sweep_holds, hold_seconds=1)
    holds, setup_seconds = await _insert_expiring_holds(bench, event)
    say(f"wrote {holds:,} holds in {setup_seconds:.1f} s")
    await _wait_expired(bench, event)
    warm = await pool.take(plan.tickets_for(HTTP_RATE_CAP, plan.warmup))
    tickets = await pool.take(plan.tickets_for(HTTP_RATE_CAP, 30))
    await bench.checkpoint()
    await bench.load(ReserveChosen(warm), plan.sweep_concurrency, plan.warmup)
    stop = asyncio.Event()
    running = asyncio.create_task(
        bench.load(ReserveChosen(tickets), plan.sweep_concurrency, 0, stop=stop)
    )
    await asyncio.sleep(0.3)  # the load is on before the sweep starts
    started = time.perf_counter()
    swept = await sweep_all(bench.service_db, batch_size=batch)
    sweep_seconds = time.perf_counter() - started
    stop.set()
    during = await running
    left = await _leftovers(bench)
    await bench.invariants(event.id, "sweep (boxoffice sweep)")
    if left or swept.tickets_freed != holds:
        bench.report.errors.append(
            f"sweep: freed {swept.tickets_freed} of {holds} tickets; {left} expired left"
        )
    rows.append(
        _sweep_row(
            "`sweep_all` (what `boxoffice sweep` runs), in the benchmark process",
            holds,
            sweep_seconds,
            swept.tickets_freed,
            during,
            baseline,
        )
    )
    say(
        f"[sweep] {holds:,} holds (set up in {setup_seconds:.1f} s) swept in "
        f"{sweep_seconds:.2f} s; reservations meanwhile {num(during.rate)}/s, p99 "
        f"{ms(during.p99_ms)}, non-2xx {during.non_2xx}",
    )
    bench.report.targets += [
        Target(
            f"Sweeping {holds:,} expired holds completes in under 10 s",
            f"{sweep_seconds:.2f} s",
            sweep_seconds < 10,
        ),
        Target(
            f"… reservation p99 under 100 ms while it runs (c={plan.sweep_concurrency})",
            f"{ms(during.p99_ms)} ({during.ok:,} reservations during the sweep)",
            during.p99_ms < 100 and during.server_errors == 0,
        ),
    ]

    # B: the server's own sweepers (every worker, SWEEP_INTERVAL_SECONDS=1).
    if plan.sweep_in_server:
        await bench.server.restart(SWEEP_INTERVAL_SECONDS="1")
        event = await bench.create_event("bench sweep (server)", plan.sweep_holds, hold_seconds=1)
        warm = await pool.take(plan.tickets_for(HTTP_RATE_CAP, plan.warmup))
        await bench.load(ReserveChosen(warm), plan.sweep_concurrency, plan.warmup)
        tickets = await pool.take(plan.tickets_for(HTTP_RATE_CAP, 30))
        holds, _ = await _insert_expiring_holds(bench, event)
        await _wait_expired(bench, event)
        expired_at = time.perf_counter()
        stop = asyncio.Event()
        running = asyncio.create_task(
            bench.load(ReserveChosen(tickets), plan.sweep_concurrency, 0, stop=stop)
        )
        deadline = expired_at + 120
        while time.perf_counter() < deadline:
            if not await bench.conn.fetchval(ANY_EXPIRED_SQL):
                break
            await asyncio.sleep(0.1)
        sweep_seconds = time.perf_counter() - expired_at
        stop.set()
        during = await running
        left = await _leftovers(bench)
        await bench.invariants(event.id, "sweep (server sweepers)")
        if left:
            bench.report.errors.append(f"server sweepers left {left} expired holds after 120 s")
        rows.append(
            _sweep_row(
                f"the server's sweepers ({plan.workers} workers, SWEEP_INTERVAL_SECONDS=1): "
                "from expiry until none is left",
                holds,
                sweep_seconds,
                holds - left,
                during,
                baseline,
            )
        )
        say(
            f"[sweep, server] {holds:,} holds freed {sweep_seconds:.2f} s after expiring; "
            f"reservations meanwhile p99 {ms(during.p99_ms)}",
        )
        await bench.server.restart()

    bench.report.sections.append(
        "\n".join(
            [
                "## Sweeping expired holds while reservations continue",
                "",
                f"{plan.sweep_holds:,} one-ticket holds of a `hold_seconds=1` event, written "
                "with one set-based SQL statement that mirrors the service's (reservations, "
                "reservation_tickets, tickets status/reservation_id/hold_expires_at, audit "
                "rows), then ANALYZE (as autovacuum would have by then); once they have "
                f"expired on the database clock, they are swept (batches of {batch:,}) while "
                f"wrk reserves distinct tickets of another event at "
                f"c={plan.sweep_concurrency}. The reservation figures cover exactly the "
                "sweep (wrk is stopped when it ends).",
                "",
                table(
                    [
                        "sweeper",
                        "expired holds",
                        "sweep time",
                        "tickets freed",
                        "reservations/s meanwhile",
                        "p50",
                        "p99",
                        "max",
                        "non-2xx",
                        f"p99 without a sweep (c={plan.sweep_concurrency})",
                        "CPU to anything else",
                    ],
                    rows,
                ),
            ]
        )
    )


def _sweep_row(
    name: str,
    holds: int,
    seconds: float,
    freed: int,
    during: LoadResult,
    baseline: float | None,
) -> list[str]:
    return [
        name,
        f"{holds:,}",
        f"{seconds:.2f} s",
        f"{freed:,}",
        num(during.rate),
        ms(during.p50_ms),
        ms(during.p99_ms),
        ms(during.max_ms),
        f"{during.non_2xx} ({during.status_text()})" if during.non_2xx else "0",
        ms(baseline),
        other_cpu(during),
    ]
