"""How a hold expires: the whole story in one place.

1. A hold expires by the database clock alone: its tickets are free the moment
   `hold_expires_at <= now()`. Every read and every reservation sees that through the SQL
   functions `ticket_is_free`, `ticket_is_held` and `ticket_effective_status` (migration
   0008), so an expired hold is free at once, swept or not; a reservation may take such a
   seat directly (reservations.reserve: RESERVE_CHOSEN, RESERVE_BEST_INCLUDING_EXPIRED),
   auditing the expiry.
2. A holder who comes back too late is refused (reservations.holder): the hold reads
   `expired` as soon as its time is up.
3. The sweeper tidies up after the fact, every SWEEP_INTERVAL_SECONDS in every worker: it
   flips expired tickets back to `available`, marks their reservations `expired`, and, on
   the way, deletes idempotency keys past their 24 hours, unsold holds past
   HISTORY_RETENTION_HOURS (boxoffice.retention) and rate-limit buckets that are full again
   (boxoffice.ratelimit). SKIP LOCKED everywhere: a hold someone is
   confirming, releasing or re-taking right now is theirs to settle, so the sweeper never
   waits, never slows a buyer, and any number of sweepers free a given hold at most once.
   `boxoffice sweep` runs one pass by hand.
"""

import asyncio
import logging
from dataclasses import dataclass

from boxoffice.config import Settings
from boxoffice.db import Database
from boxoffice.idempotency import DELETE_EXPIRED_KEYS
from boxoffice.ratelimit import prune_idle_buckets
from boxoffice.retention import prune_history

logger = logging.getLogger("boxoffice")

# $1 batch size. The old row (`tickets old`) is read for the hold it belonged to, which the
# audit row records.
FREE_EXPIRED_TICKETS = """
WITH expired AS (
    SELECT t.id FROM tickets t
    WHERE t.status = 'reserved' AND t.hold_expires_at <= now()
    ORDER BY t.hold_expires_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), freed AS (
    UPDATE tickets t SET status = 'available', reservation_id = NULL, hold_expires_at = NULL
    FROM expired, tickets old
    WHERE t.id = expired.id AND old.id = t.id
    RETURNING t.id, t.event_id, old.reservation_id
), audit AS (
    INSERT INTO ticket_audit (ticket_id, event_id, from_status, to_status, reason,
                              reservation_id)
    SELECT id, event_id, 'reserved', 'available', 'expired', reservation_id
    FROM freed ORDER BY id
)
SELECT count(*) FROM freed
"""

# $1 batch size.
MARK_EXPIRED_RESERVATIONS = """
WITH expired AS (
    SELECT r.id FROM reservations r
    WHERE r.status = 'active' AND r.expires_at <= now()
    ORDER BY r.expires_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
), marked AS (
    UPDATE reservations r SET status = 'expired', ended_at = now()
    FROM expired WHERE r.id = expired.id
    RETURNING r.id
)
SELECT count(*) FROM marked
"""


@dataclass(frozen=True)
class SweepResult:
    tickets_freed: int
    reservations_expired: int


async def free_expired_holds(db: Database, *, batch_size: int) -> SweepResult:
    """One batch of each: free tickets of expired holds, mark those holds expired, delete
    idempotency keys past their 24 hours, unsold holds past the history retention and idle
    rate-limit buckets."""
    tickets_freed = await db.fetchval(FREE_EXPIRED_TICKETS, batch_size)
    reservations_expired = await db.fetchval(MARK_EXPIRED_RESERVATIONS, batch_size)
    await db.execute(DELETE_EXPIRED_KEYS, batch_size)
    await prune_history(db, batch_size=batch_size)
    await prune_idle_buckets(db, batch_size=batch_size)
    return SweepResult(int(tickets_freed), int(reservations_expired))


async def sweep_all(db: Database, *, batch_size: int) -> SweepResult:
    """Sweep batch after batch until nothing expired is left."""
    tickets = reservations = 0
    while True:
        result = await free_expired_holds(db, batch_size=batch_size)
        tickets += result.tickets_freed
        reservations += result.reservations_expired
        if result.tickets_freed < batch_size and result.reservations_expired < batch_size:
            return SweepResult(tickets, reservations)


async def run_sweeper(db: Database, settings: Settings) -> None:
    """Sweep every SWEEP_INTERVAL_SECONDS until cancelled; safe in every worker at once."""
    from boxoffice import metrics  # after PROMETHEUS_MULTIPROC_DIR is set (see metrics)

    while True:
        try:
            result = await sweep_all(db, batch_size=settings.sweep_batch_size)
            metrics.record_sweep(result.tickets_freed, result.reservations_expired)
            if result.tickets_freed or result.reservations_expired:
                logger.info(
                    "sweeper freed %d tickets of %d expired holds",
                    result.tickets_freed,
                    result.reservations_expired,
                )
        except asyncio.CancelledError:
            raise
        except Exception as error:
            # A database outage must not kill the sweeper; holds stay free lazily meanwhile.
            metrics.record_sweep_failure()
            logger.warning("sweeper run failed: %s", error)
        await asyncio.sleep(settings.sweep_interval_seconds)
