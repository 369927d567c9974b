"""The invariant checker: I1–I5 of DESIGN.md, read from the database in one snapshot.

Tests run it after every concurrency test; the simulator runs it after a rush. Each check is
a query that returns the offending rows, so a failure says exactly what broke.
"""

import re
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from boxoffice.tickets.sql import STATUS_COUNTS


@dataclass(frozen=True)
class Violation:
    invariant: str
    description: str
    rows: list[dict[str, Any]]

    def __str__(self) -> str:
        sample = ", ".join(str(row) for row in self.rows[:5])
        return f"{self.invariant} {self.description}: {len(self.rows)} row(s), e.g. {sample}"


# (invariant, what is wrong, query returning the rows that break it). `{scope}` limits a
# check to one event when :event_id is given, and is true for every row when it is NULL.
_CHECKS: list[tuple[str, str, str]] = [
    (
        "I1",
        "available ticket still carries a reservation, booking or hold expiry",
        """SELECT t.id FROM tickets t
           WHERE {scope:t.event_id} AND t.status = 'available'
             AND (t.reservation_id IS NOT NULL OR t.booking_id IS NOT NULL
                  OR t.hold_expires_at IS NOT NULL)""",
    ),
    (
        "I1",
        "an unexpired active hold does not own every one of its tickets",
        """SELECT r.id AS reservation_id, rt.ticket_id FROM reservations r
           JOIN reservation_tickets rt ON rt.reservation_id = r.id
           JOIN tickets t ON t.id = rt.ticket_id
           WHERE {scope:r.event_id} AND r.status = 'active' AND r.expires_at > now()
             AND (t.status <> 'reserved' OR t.reservation_id IS DISTINCT FROM r.id
                  OR t.hold_expires_at IS DISTINCT FROM r.expires_at)""",
    ),
    (
        "I2",
        "reserved ticket without exactly one matching active hold, or with a booking",
        """SELECT t.id FROM tickets t
           LEFT JOIN reservations r ON r.id = t.reservation_id
           WHERE {scope:t.event_id} AND t.status = 'reserved'
             AND (t.hold_expires_at IS NULL OR t.booking_id IS NOT NULL OR r.id IS NULL
                  OR (t.hold_expires_at > now() AND (r.status <> 'active'
                      OR r.expires_at IS DISTINCT FROM t.hold_expires_at))
                  OR NOT EXISTS (SELECT 1 FROM reservation_tickets rt
                                 WHERE rt.reservation_id = r.id AND rt.ticket_id = t.id))""",
    ),
    (
        "I3",
        "booked ticket without exactly one booking from its confirmed reservation",
        """SELECT t.id FROM tickets t
           LEFT JOIN bookings b ON b.id = t.booking_id
           LEFT JOIN reservations r ON r.id = t.reservation_id
           WHERE {scope:t.event_id} AND t.status = 'booked'
             AND (b.id IS NULL OR t.hold_expires_at IS NOT NULL
                  OR b.reservation_id IS DISTINCT FROM t.reservation_id
                  OR r.status IS DISTINCT FROM 'confirmed')""",
    ),
    (
        "I4",
        "reservation holds a ticket of another event",
        """SELECT rt.reservation_id, rt.ticket_id FROM reservation_tickets rt
           JOIN reservations r ON r.id = rt.reservation_id
           JOIN tickets t ON t.id = rt.ticket_id
           WHERE {scope:r.event_id} AND (r.event_id <> t.event_id OR rt.event_id <> r.event_id)""",
    ),
    (
        "I4",
        "confirmed reservation whose tickets are not all booked by its booking",
        """SELECT r.id AS reservation_id, rt.ticket_id FROM reservations r
           JOIN reservation_tickets rt ON rt.reservation_id = r.id
           JOIN tickets t ON t.id = rt.ticket_id
           LEFT JOIN bookings b ON b.reservation_id = r.id
           WHERE {scope:r.event_id} AND r.status = 'confirmed'
             AND (b.id IS NULL OR t.status <> 'booked' OR t.booking_id IS DISTINCT FROM b.id)""",
    ),
    (
        "I4",
        "reservation's ticket count differs from the tickets it claimed",
        """SELECT r.id AS reservation_id, r.ticket_count, count(rt.ticket_id) AS claimed
           FROM reservations r LEFT JOIN reservation_tickets rt ON rt.reservation_id = r.id
           WHERE {scope:r.event_id}
           GROUP BY r.id HAVING count(rt.ticket_id) <> r.ticket_count""",
    ),
    (
        "I5",
        "counts by status do not add up to the event's ticket count",
        f"""SELECT e.id AS event_id, e.ticket_count, c.available, c.reserved, c.booked
           FROM events e
           CROSS JOIN LATERAL (SELECT {STATUS_COUNTS} FROM tickets t
                               WHERE t.event_id = e.id) c
           WHERE {{scope:e.id}}
             AND c.available + c.reserved + c.booked <> e.ticket_count""",
    ),
    (
        "I5",
        "ticket in two reservations that are both live (unexpired active, or confirmed)",
        """SELECT rt.ticket_id, array_agg(r.id::text) AS reservations
           FROM reservation_tickets rt JOIN reservations r ON r.id = rt.reservation_id
           WHERE {scope:r.event_id}
             AND (r.status = 'confirmed' OR (r.status = 'active' AND r.expires_at > now()))
           GROUP BY rt.ticket_id HAVING count(*) > 1""",
    ),
    (
        "audit",
        "ticket's last audit row does not match its status",
        """SELECT t.id, t.status, last.to_status FROM tickets t
           JOIN LATERAL (SELECT a.to_status FROM ticket_audit a WHERE a.ticket_id = t.id
                         ORDER BY a.id DESC LIMIT 1) last ON true
           WHERE {scope:t.event_id} AND last.to_status <> t.status""",
    ),
    (
        "audit",
        "ticket changed state with no audit row",
        """SELECT t.id FROM tickets t
           WHERE {scope:t.event_id} AND t.status <> 'available'
             AND NOT EXISTS (SELECT 1 FROM ticket_audit a WHERE a.ticket_id = t.id)""",
    ),
]

_SCOPE = re.compile(r"\{scope:([a-z_.]+)\}")


def _scoped(query: str) -> str:
    return _SCOPE.sub(r"(CAST(:event_id AS uuid) IS NULL OR \1 = :event_id)", query)


async def check_invariants(
    engine: AsyncEngine, *, event_id: uuid.UUID | None = None
) -> list[Violation]:
    """Every violation of I1–I5 (and of the audit trail), from one consistent snapshot."""
    violations = []
    async with engine.connect() as conn:
        # One snapshot and one now() for every check, so they cannot contradict each other.
        await conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
        for invariant, description, query in _CHECKS:
            result = await conn.execute(text(_scoped(query)), {"event_id": event_id})
            rows = [dict(row._mapping) for row in result]
            if rows:
                violations.append(Violation(invariant, description, rows))
        await conn.rollback()
    return violations
