"""What a holder does with a hold: read it, pay for it (confirm), give it back (release).

Confirm and release lock the reservation row first, then its tickets in id order: the same
order in every transaction, so none can deadlock another (reserve locks tickets only; the
sweeper skips whatever is locked).
"""

import uuid

import asyncpg

from boxoffice.db import Database
from boxoffice.errors import (
    Conflict,
    ReservationExpired,
    ReservationNotActive,
    ReservationNotFound,
)
from boxoffice.idempotency import IdempotencyRequest, claim, finish
from boxoffice.reservations.records import (
    BookingRow,
    ReservationRow,
    ReservationTicket,
    ReservationView,
)
from boxoffice.reservations.tokens import token_matches

# `status` is the hold as its holder sees it now: an active hold past its expiry is
# `expired`, swept or not (the database clock decides).
_RESERVATION = """
SELECT r.id, r.event_id, r.customer, r.token_hash, r.ticket_count, r.created_at,
       r.expires_at, r.ended_at, r.status::text AS stored_status,
       CASE WHEN r.status = 'active' AND r.expires_at <= now() THEN 'expired'
            ELSE r.status::text END AS status,
       (r.status = 'active' AND r.expires_at <= now()) AS hold_expired
FROM reservations r
WHERE r.id = $1
"""
# Confirm and release take the reservation's row lock before any ticket's.
_LOCK_RESERVATION = _RESERVATION + "FOR UPDATE\n"

_RESERVATION_TICKETS = """
SELECT t.id, t.event_id, t.label, t.section, t.row_label, t.seat, t.price_minor,
       ticket_effective_status(t.status, t.hold_expires_at)::text AS status, e.currency
FROM reservation_tickets rt
JOIN tickets t ON t.id = rt.ticket_id
JOIN events e ON e.id = t.event_id
WHERE rt.reservation_id = $1
ORDER BY t.position
"""

_BOOKING = """
SELECT id, reservation_id, event_id, customer, payment_reference, total_minor, currency,
       created_at, code, status
FROM bookings
WHERE reservation_id = $1
"""

# The tickets this hold still owns, locked in id order (after the reservation's row).
_LOCK_OWN_TICKETS = """
SELECT t.id FROM tickets t
WHERE t.reservation_id = $1 AND t.status = 'reserved'
ORDER BY t.id
FOR UPDATE
"""

# Books the locked tickets for the reservation, in one statement (one round trip):
# the booking (with its human code), the tickets, their secret codes, the payment that paid
# and the e-mail owed. $1 reservation, $2 event, $3 customer, $4 the booking's payment
# reference, $5 the locked ticket ids, $6 the payment that paid (NULL: a direct confirm,
# which records a `test` payment for the client's reference). A hold paid after it lapsed
# books tickets that may be `available` again: each audit row says where it came from.
BOOK = """
WITH booking AS (
    INSERT INTO bookings (reservation_id, event_id, customer, payment_reference, total_minor,
                          currency)
    SELECT $1, e.id, $3, $4,
           (SELECT coalesce(sum(price_minor), 0) FROM tickets WHERE id = ANY($5::bigint[])),
           e.currency
    FROM events e WHERE e.id = $2
    RETURNING id, event_id, total_minor, currency
), booked AS (
    UPDATE tickets t SET status = 'booked', booking_id = b.id, reservation_id = $1,
                         hold_expires_at = NULL
    FROM booking b, tickets old
    WHERE t.id = ANY($5::bigint[]) AND old.id = t.id
    RETURNING t.id, t.event_id, b.id AS booking_id, old.status AS from_status
), audit AS (
    INSERT INTO ticket_audit (ticket_id, event_id, from_status, to_status, reason,
                              reservation_id, booking_id)
    SELECT id, event_id, from_status, 'booked', 'confirmed', $1, booking_id
    FROM booked ORDER BY id
), issued AS (
    INSERT INTO issued_tickets (booking_id, event_id, ticket_id, code)
    SELECT booking_id, event_id, id, random_code(16) FROM booked ORDER BY id
), paid AS (
    UPDATE payments p SET status = 'paid', paid_at = now(), booking_id = b.id
    FROM booking b WHERE p.id = $6::uuid
), paid_directly AS (
    INSERT INTO payments (reservation_id, event_id, customer, provider, provider_payment_id,
                          client_reference, amount_minor, currency, status, booking_id,
                          paid_at)
    SELECT $1, b.event_id, $3, 'test', 'direct_' || gen_random_uuid(), $4, b.total_minor,
           b.currency, 'paid', b.id, now()
    FROM booking b WHERE $6::uuid IS NULL
), mail AS (
    -- A customer who is not an e-mail address (a user id) gets no e-mail.
    INSERT INTO outbox_messages (kind, recipient, booking_id)
    SELECT 'booking-confirmed', btrim($3), b.id FROM booking b
    WHERE btrim($3) ~ '^[^@[:space:]]+@[^@[:space:]]+$' AND char_length(btrim($3)) >= 3
)
UPDATE reservations SET status = 'confirmed', ended_at = coalesce(ended_at, now())
WHERE id = $1
RETURNING (SELECT id FROM booking) AS booking_id
"""

_RELEASE = """
WITH freed AS (
    UPDATE tickets t SET status = 'available', reservation_id = NULL, hold_expires_at = NULL
    WHERE t.reservation_id = $1 AND t.status = 'reserved'
    RETURNING t.id, t.event_id
), audit AS (
    INSERT INTO ticket_audit (ticket_id, event_id, from_status, to_status, reason,
                              reservation_id)
    SELECT id, event_id, 'reserved', 'available', 'released', $1
    FROM freed ORDER BY id
)
UPDATE reservations SET status = 'released', ended_at = now() WHERE id = $1
"""


async def _reservation_for_holder(
    conn: asyncpg.Connection, reservation_id: uuid.UUID, token: str | None, *, lock: bool
) -> ReservationRow:
    record = await conn.fetchrow(_LOCK_RESERVATION if lock else _RESERVATION, reservation_id)
    # A wrong token gets the same answer as an unknown id: strangers learn nothing.
    if record is None or not token_matches(token, record["token_hash"]):
        raise ReservationNotFound(f"no reservation {reservation_id} for this token")
    return ReservationRow.of(record)


async def _view(conn: asyncpg.Connection, reservation: ReservationRow) -> ReservationView:
    tickets = [
        ReservationTicket(**r) for r in await conn.fetch(_RESERVATION_TICKETS, reservation.id)
    ]
    booking = None
    if reservation.status == "confirmed":
        booking = BookingRow.of(await conn.fetchrow(_BOOKING, reservation.id))
    return ReservationView(reservation=reservation, tickets=tickets, booking=booking)


async def get_reservation(
    db: Database, *, reservation_id: uuid.UUID, token: str | None
) -> ReservationView:
    async with db.connection() as conn:
        reservation = await _reservation_for_holder(conn, reservation_id, token, lock=False)
        return await _view(conn, reservation)


def _refuse_unless_active(row: ReservationRow) -> None:
    if row.hold_expired or row.stored_status == "expired":
        raise ReservationExpired(
            f"the hold expired at {row.expires_at.isoformat()}; reserve again",
            expires_at=row.expires_at.isoformat(),
        )
    if row.stored_status != "active":
        raise ReservationNotActive(
            f"the reservation is {row.stored_status}", reservation_status=row.stored_status
        )


async def _lock_own_tickets(conn: asyncpg.Connection, row: ReservationRow) -> list[int]:
    """Lock the tickets this hold still owns, in id order; refuse if any slipped away."""
    ids = [record["id"] for record in await conn.fetch(_LOCK_OWN_TICKETS, row.id)]
    # A ticket is only taken from an active hold after its expiry passed, so a short count
    # means the hold expired between our check and our lock.
    if len(ids) != row.ticket_count:
        raise ReservationExpired(
            "the hold expired while confirming; reserve again",
            expires_at=row.expires_at.isoformat(),
        )
    return ids


async def _locked_reservation(
    conn: asyncpg.Connection, reservation_id: uuid.UUID, token: str | None
) -> ReservationRow:
    try:
        return await _reservation_for_holder(conn, reservation_id, token, lock=True)
    except asyncpg.LockNotAvailableError:
        raise Conflict("another request is changing this reservation; retry") from None


async def locked_active_reservation(
    conn: asyncpg.Connection, reservation_id: uuid.UUID, token: str | None
) -> ReservationRow:
    """The holder's reservation, row-locked, if it is an unexpired active hold."""
    row = await _locked_reservation(conn, reservation_id, token)
    _refuse_unless_active(row)
    return row


async def confirm(
    db: Database,
    *,
    reservation_id: uuid.UUID,
    token: str | None,
    payment_reference: str,
    idempotency: IdempotencyRequest | None = None,
) -> ReservationView:
    """Turn an active hold into a booking; its tickets become booked."""
    async with db.transaction() as conn:
        if idempotency is not None:
            # Before the reservation's lock: concurrent retries queue on the key, not the row.
            await claim(conn, idempotency)
        row = await _locked_reservation(conn, reservation_id, token)
        if row.stored_status == "confirmed":
            booking = await conn.fetchrow(_BOOKING, reservation_id)
            raise ReservationNotActive(
                "the reservation is already confirmed",
                reservation_status="confirmed",
                booking_id=str(booking["id"]),
            )
        _refuse_unless_active(row)
        ticket_ids = await _lock_own_tickets(conn, row)
        await conn.execute(
            BOOK, reservation_id, row.event_id, row.customer, payment_reference, ticket_ids, None
        )
        refreshed = await _reservation_for_holder(conn, reservation_id, token, lock=False)
        view = await _view(conn, refreshed)
        if idempotency is not None:
            await finish(conn, idempotency, view)
        return view


async def release(db: Database, *, reservation_id: uuid.UUID, token: str | None) -> None:
    """Give the tickets back at once; releasing twice is fine, releasing a booking is not."""
    async with db.transaction() as conn:
        row = await _locked_reservation(conn, reservation_id, token)
        if row.stored_status == "released":
            return
        _refuse_unless_active(row)
        await _lock_own_tickets(conn, row)
        await conn.execute(_RELEASE, reservation_id)
