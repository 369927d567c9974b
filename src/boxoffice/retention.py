"""History retention: the sweeper forgets holds that ended unsold, HISTORY_RETENTION_HOURS
after they ended.

Every hold leaves a reservation row, one `reservation_tickets` link per ticket and two or
three `ticket_audit` rows per ticket, kept after it ends; a client that holds and releases in
a loop would fill the disk with them. So each sweep deletes one batch of reservations that
ended as `released` or `expired` longer ago than the retention, together with their links and
audit rows, in one statement (a reservation and its rows go together or not at all). Kept
forever: active holds, confirmed reservations, bookings and their audit rows.

Why the invariants still hold afterwards (`boxoffice.invariants`):
  - No ticket references a pruned reservation: a ticket's `reservation_id` is cleared when
    it is freed and only ever set to a new hold's id, and the statement skips any reservation
    a ticket still names (an expired hold whose tickets the sweeper has not freed yet). No
    booking references one either (only a confirmed reservation has a booking). The foreign
    keys would refuse the delete otherwise.
  - A reservation goes with all of its links, so no claimed-ticket count can disagree.
  - The audit trail: for each of its tickets, a hold's audit rows are one unbroken stretch of
    that ticket's history, from `available` (its `reserved` row) back to `available` (the row
    that freed it: `released`, `expired` by the sweeper, or `expired` written by the next
    hold that took the lapsed seat). Removing such a stretch leaves the ticket's last row
    either unchanged or an earlier row that also ends in `available`, or no row at all, which
    the checker allows for an available ticket. A ticket still held or booked keeps its current
    hold's rows, which are never pruned.
"""

from dataclasses import dataclass

from boxoffice.config import get_settings
from boxoffice.db import Database


@dataclass(frozen=True)
class PrunedHistory:
    reservations: int
    reservation_tickets: int
    ticket_audit: int


# One batch of unsold holds past the retention, oldest first, and everything they left.
# FOR UPDATE OF r SKIP LOCKED: a reservation row someone has locked (a late release of an old
# hold, another worker's sweeper, the demo re-seed) is skipped, not waited for, so any number
# of sweepers prune disjoint batches at once. Lock order as DESIGN.md asks (reservation rows
# first), and no ticket row is ever locked: deleting links and audit rows, which no buyer
# locks, needs no lock on the tickets they point to, so a buyer holding or paying for those
# seats right now never waits for the sweeper, nor it for them. (The one wait left: a late
# release of a hold that is being pruned right now queues for the batch's few milliseconds,
# then finds it gone: 404.)
# Audit rows are found by reservation (ix_ticket_audit_reservation_id), not by ticket: a
# seat churned all week has thousands of audit rows, a hold only its own.
# $1 retention in hours, $2 batch size.
PRUNE_UNSOLD_HOLDS = """
WITH doomed AS (
    SELECT r.id FROM reservations r
    WHERE r.status IN ('released', 'expired')
      AND r.ended_at < now() - make_interval(hours => $1)
      AND NOT EXISTS (SELECT 1 FROM tickets t WHERE t.reservation_id = r.id)
      AND NOT EXISTS (SELECT 1 FROM bookings b WHERE b.reservation_id = r.id)
      -- A hold anybody tried to pay for is kept with its payments: money is never forgotten.
      AND NOT EXISTS (SELECT 1 FROM payments p WHERE p.reservation_id = r.id)
    ORDER BY r.ended_at
    LIMIT $2
    FOR UPDATE OF r SKIP LOCKED
), links AS (
    DELETE FROM reservation_tickets rt USING doomed
    WHERE rt.reservation_id = doomed.id
    RETURNING rt.reservation_id, rt.ticket_id
), audit AS (
    DELETE FROM ticket_audit a USING links
    WHERE a.ticket_id = links.ticket_id AND a.reservation_id = links.reservation_id
      AND a.booking_id IS NULL
    RETURNING a.id
), gone AS (
    DELETE FROM reservations r USING doomed
    WHERE r.id = doomed.id
    RETURNING r.id
)
SELECT (SELECT count(*) FROM gone) AS reservations,
       (SELECT count(*) FROM links) AS reservation_tickets,
       (SELECT count(*) FROM audit) AS ticket_audit
"""


async def prune_history(
    db: Database, *, batch_size: int, retention_hours: int | None = None
) -> PrunedHistory:
    """Delete up to `batch_size` unsold holds that ended more than `retention_hours` ago
    (default: HISTORY_RETENTION_HOURS; 0 keeps everything), with their links and audit rows."""
    hours = get_settings().history_retention_hours if retention_hours is None else retention_hours
    if hours == 0:
        return PrunedHistory(0, 0, 0)
    counts = await db.fetchrow(PRUNE_UNSOLD_HOLDS, hours, batch_size)
    assert counts is not None, "an aggregate always answers"
    pruned = PrunedHistory(
        counts["reservations"], counts["reservation_tickets"], counts["ticket_audit"]
    )
    # Imported here: the serve process imports this module (through the seed) before it sets
    # PROMETHEUS_MULTIPROC_DIR, and prometheus_client must not be imported before that.
    from boxoffice import metrics

    metrics.HISTORY_PRUNED.labels("reservations").inc(pruned.reservations)
    metrics.HISTORY_PRUNED.labels("reservation_tickets").inc(pruned.reservation_tickets)
    metrics.HISTORY_PRUNED.labels("ticket_audit").inc(pruned.ticket_audit)
    return pruned
