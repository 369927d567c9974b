"""The invariant checker: I1–I5 of docs/design.md (and S1–S2, the waiting room's passes and
the waiting list's offers; P1–P4, a booking's payment, tickets and check-ins), read from the
database in one snapshot.

Tests run it after every concurrency test; the simulator runs it after a rush. Each check is
a query that returns the offending rows, so a failure says exactly what broke.
"""

import uuid
from dataclasses import dataclass
from typing import Any

from boxoffice.db import Database


@dataclass(frozen=True)
class Violation:
    invariant: str
    description: str
    rows: list[dict[str, Any]]

    def __str__(self) -> str:
        sample = ", ".join(str(row) for row in self.rows[:5])
        return f"{self.invariant} {self.description}: {len(self.rows)} row(s), e.g. {sample}"


# (invariant, what is wrong, query returning the rows that break it). $1 is the event to
# check, or NULL for every event.
_CHECKS: list[tuple[str, str, str]] = [
    (
        "I1",
        "available ticket still carries a reservation, booking or hold expiry",
        """SELECT t.id FROM tickets t
           WHERE ($1::uuid IS NULL OR t.event_id = $1) AND t.status = 'available'
             AND (t.reservation_id IS NOT NULL OR t.booking_id IS NOT NULL
                  OR t.hold_expires_at IS NOT NULL)""",
    ),
    (
        "I1",
        "an unexpired active hold does not own every one of its tickets",
        """SELECT r.id AS reservation_id, rt.ticket_id FROM reservations r
           JOIN reservation_tickets rt ON rt.reservation_id = r.id
           JOIN tickets t ON t.id = rt.ticket_id
           WHERE ($1::uuid IS NULL OR r.event_id = $1)
             AND r.status = 'active' AND r.expires_at > now()
             AND (t.status <> 'reserved' OR t.reservation_id IS DISTINCT FROM r.id
                  OR t.hold_expires_at IS DISTINCT FROM r.expires_at)""",
    ),
    (
        "I2",
        "reserved ticket without exactly one matching active hold, or with a booking",
        """SELECT t.id FROM tickets t
           LEFT JOIN reservations r ON r.id = t.reservation_id
           WHERE ($1::uuid IS NULL OR t.event_id = $1) AND t.status = 'reserved'
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
           WHERE ($1::uuid IS NULL OR t.event_id = $1) AND t.status = 'booked'
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
           WHERE ($1::uuid IS NULL OR r.event_id = $1)
             AND (r.event_id <> t.event_id OR rt.event_id <> r.event_id)""",
    ),
    (
        "I4",
        "confirmed reservation whose tickets are not all booked by its booking",
        """SELECT r.id AS reservation_id, rt.ticket_id FROM reservations r
           JOIN reservation_tickets rt ON rt.reservation_id = r.id
           JOIN tickets t ON t.id = rt.ticket_id
           LEFT JOIN bookings b ON b.reservation_id = r.id
           WHERE ($1::uuid IS NULL OR r.event_id = $1) AND r.status = 'confirmed'
             -- A cancelled booking's seats may be back on sale (or withdrawn).
             AND b.status IS DISTINCT FROM 'cancelled'
             AND (b.id IS NULL OR t.status <> 'booked' OR t.booking_id IS DISTINCT FROM b.id)""",
    ),
    (
        "I4",
        "reservation's ticket count differs from the tickets it claimed",
        """SELECT r.id AS reservation_id, r.ticket_count, count(rt.ticket_id) AS claimed
           FROM reservations r LEFT JOIN reservation_tickets rt ON rt.reservation_id = r.id
           WHERE ($1::uuid IS NULL OR r.event_id = $1)
           GROUP BY r.id HAVING count(rt.ticket_id) <> r.ticket_count""",
    ),
    (
        "I5",
        "counts by status do not add up to the event's ticket count",
        """SELECT e.id AS event_id, e.ticket_count, c.available, c.reserved, c.booked
           FROM events e
           CROSS JOIN LATERAL (
               SELECT count(*) FILTER (WHERE ticket_is_free(t.status, t.hold_expires_at))
                          AS available,
                      count(*) FILTER (WHERE ticket_is_held(t.status, t.hold_expires_at))
                          AS reserved,
                      count(*) FILTER (WHERE t.status = 'booked') AS booked
               FROM tickets t WHERE t.event_id = e.id) c
           WHERE ($1::uuid IS NULL OR e.id = $1)
             AND c.available + c.reserved + c.booked <> e.ticket_count""",
    ),
    (
        "I5",
        "ticket in two reservations that are both live (unexpired active, or confirmed)",
        """SELECT rt.ticket_id, array_agg(r.id::text) AS reservations
           FROM reservation_tickets rt JOIN reservations r ON r.id = rt.reservation_id
           LEFT JOIN bookings b ON b.reservation_id = r.id
           WHERE ($1::uuid IS NULL OR r.event_id = $1)
             AND ((r.status = 'confirmed' AND b.status IS DISTINCT FROM 'cancelled')
                  OR (r.status = 'active' AND r.expires_at > now()))
           GROUP BY rt.ticket_id HAVING count(*) > 1""",
    ),
    (
        "audit",
        "ticket's last audit row does not match its status",
        """SELECT t.id, t.status, last.to_status FROM tickets t
           JOIN LATERAL (SELECT a.to_status FROM ticket_audit a WHERE a.ticket_id = t.id
                         ORDER BY a.id DESC LIMIT 1) last ON true
           WHERE ($1::uuid IS NULL OR t.event_id = $1) AND last.to_status <> t.status""",
    ),
    (
        "audit",
        "ticket changed state with no audit row",
        """SELECT t.id FROM tickets t
           WHERE ($1::uuid IS NULL OR t.event_id = $1) AND t.status <> 'available'
             AND NOT EXISTS (SELECT 1 FROM ticket_audit a WHERE a.ticket_id = t.id)""",
    ),
    # Selling fairly: a pass or a waiting-list offer went to its own customer's hold, once.
    # (A hold the retention sweep deleted is no longer there to compare.)
    (
        "S1",
        "a used queue pass names a hold of another event or customer",
        """SELECT q.id AS place_id, q.reservation_id FROM queue_entries q
           JOIN reservations r ON r.id = q.reservation_id
           WHERE ($1::uuid IS NULL OR q.event_id = $1) AND q.status = 'used'
             AND (r.event_id <> q.event_id OR r.customer_key <> q.customer_key)""",
    ),
    (
        "S1",
        "one hold made with two queue passes",
        """SELECT q.reservation_id, count(*) AS passes FROM queue_entries q
           WHERE ($1::uuid IS NULL OR q.event_id = $1) AND q.status = 'used'
           GROUP BY q.reservation_id HAVING count(*) > 1""",
    ),
    (
        "S2",
        "a waiting-list offer names a hold of another event or customer",
        """SELECT w.id AS entry_id, w.reservation_id FROM waiting_list w
           JOIN reservations r ON r.id = w.reservation_id
           WHERE ($1::uuid IS NULL OR w.event_id = $1) AND w.status = 'offered'
             AND (r.event_id <> w.event_id OR r.customer_key <> w.customer_key)""",
    ),
    # From hold to the door: a booking's payment, its issued tickets and their check-ins agree.
    (
        "P1",
        "a booking is not paid by exactly one payment of its amount",
        """SELECT b.id AS booking_id, count(p.id) AS payments,
                  array_agg(p.amount_minor) AS amounts
           FROM bookings b LEFT JOIN payments p ON p.booking_id = b.id
           WHERE ($1::uuid IS NULL OR b.event_id = $1)
           GROUP BY b.id, b.total_minor, b.currency
           HAVING count(p.id) <> 1
               OR bool_or(p.amount_minor <> b.total_minor OR p.currency <> b.currency)""",
    ),
    (
        "P1",
        "money and booking disagree: a valid booking refunded, or a cancelled one kept",
        """SELECT b.id AS booking_id, b.status, p.status AS payment_status
           FROM bookings b JOIN payments p ON p.booking_id = b.id
           WHERE ($1::uuid IS NULL OR b.event_id = $1)
             AND ((b.status = 'confirmed' AND p.status <> 'paid')
                  OR (b.status = 'cancelled' AND p.status = 'paid'))""",
    ),
    (
        "P2",
        "a valid booking's issued tickets are not exactly the tickets its hold claimed",
        """SELECT b.id AS booking_id FROM bookings b
           WHERE ($1::uuid IS NULL OR b.event_id = $1) AND b.status = 'confirmed'
             AND ARRAY(SELECT it.ticket_id FROM issued_tickets it
                       WHERE it.booking_id = b.id ORDER BY 1)
                 IS DISTINCT FROM
                 ARRAY(SELECT rt.ticket_id FROM reservation_tickets rt
                       WHERE rt.reservation_id = b.reservation_id ORDER BY 1)""",
    ),
    (
        "P3",
        "a ticket was checked in after its booking was cancelled",
        """SELECT it.code, it.checked_in_at, b.cancelled_at FROM issued_tickets it
           JOIN bookings b ON b.id = it.booking_id
           WHERE ($1::uuid IS NULL OR it.event_id = $1)
             AND it.checked_in_at > b.cancelled_at""",
    ),
    (
        "P4",
        "a hold was paid twice and kept both: more than one payment of it is `paid`",
        """SELECT p.reservation_id, count(*) AS paid FROM payments p
           WHERE ($1::uuid IS NULL OR p.event_id = $1) AND p.status = 'paid'
           GROUP BY p.reservation_id HAVING count(*) > 1""",
    ),
]


async def check_invariants(db: Database, *, event_id: uuid.UUID | None = None) -> list[Violation]:
    """Every violation of I1–I5 (and of the audit trail), from one consistent snapshot."""
    violations = []
    # One snapshot and one now() for every check, so they cannot contradict each other.
    async with db.transaction(isolation="repeatable_read", readonly=True) as conn:
        for invariant, description, query in _CHECKS:
            rows = [dict(record) for record in await conn.fetch(query, event_id)]
            if rows:
                violations.append(Violation(invariant, description, rows))
    return violations
