"""What an organiser does after the sale: cancel a booking (its money owed back, its seats
back on sale or withdrawn), cancel an event (holds released, bookings cancelled and owed
their money), delete an event that never sold, and read an event's bookings (pages, CSV)
and its audit log. Every change writes its audit_log row in the transaction that makes it.

Locks follow the protocol of reservations.holder and payments.service: reservation rows,
then booking rows, then payment rows, then tickets in id order. Cancelling many bookings
takes each level for all of them (in id order) before the next level, so it cannot deadlock
with a confirm, a payment notification or a single cancellation. A check-in share-locks its
booking's row; a cancellation reads `cancelled_at` from the clock only once it holds that
row's lock, so every admission that got in before it has `checked_in_at <= cancelled_at`,
and every later scan sees the booking cancelled.

An organiser's transactions wait longer for a row lock than a buyer's (which fail after
LOCK_TIMEOUT_MS): a cancellation queues behind the few holds and confirms in flight rather
than failing because of them.
"""

import asyncio
import csv
import io
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from boxoffice.db import Database
from boxoffice.errors import (
    BookingNotFound,
    EventHasSales,
    EventNotFound,
    InvalidRequest,
    ServiceUnavailable,
)

ACTOR = "admin"

_LOCK_TIMEOUT = "SET LOCAL lock_timeout = '5s'"
# Locking and changing every ticket of a large event is one admin's bulk statement, not a
# buyer's: it may take longer than STATEMENT_TIMEOUT_MS.
_LONG_STATEMENTS = "SET LOCAL statement_timeout = '120s'"

# --- cancelling bookings -------------------------------------------------------------------

# Cancels bookings whose rows this transaction locked (their reservations before them, their
# payments and tickets after them), in one statement:
#   cancelled   the booking, `cancelled_at` from the clock (not the transaction's start):
#               later than any check-in that committed while we waited for the row;
#   freed       with $2, its seats that are still its own go back on sale, audited as
#               `cancelled` with the reservation and booking they leave; without $2 they
#               stay booked by the cancelled booking: withdrawn from sale, and refused at
#               the door (check-in refuses a cancelled booking's tickets);
#   refunds     money that paid for it is owed back (the refunder pays it, later);
#   mail        the buyer hears of it, if the customer is an e-mail address (the rule of
#               payments.service's _OWE_REFUND);
#   audit       one audit_log row per booking.
# $1 the bookings, $2 release seats, $3 the booking's cancel reason (the buyer's e-mail says
# it), $4 the payment's refund reason, $5 who, $6 details every audit row carries.
_CANCEL_BOOKINGS = """
WITH cancelled AS (
    UPDATE bookings
    SET status = 'cancelled', cancelled_at = clock_timestamp(), cancel_reason = $3
    WHERE id = ANY($1::uuid[]) AND status = 'confirmed'
    RETURNING id, event_id, reservation_id, customer, code
), freed AS (
    UPDATE tickets t SET status = 'available', reservation_id = NULL, booking_id = NULL
    FROM cancelled c
    WHERE $2 AND t.reservation_id = c.reservation_id AND t.booking_id = c.id
      AND t.status = 'booked'
    RETURNING t.id, t.event_id, c.reservation_id, c.id AS booking_id
), freed_audit AS (
    INSERT INTO ticket_audit (ticket_id, event_id, from_status, to_status, reason,
                              reservation_id, booking_id)
    SELECT id, event_id, 'booked', 'available', 'cancelled', reservation_id, booking_id
    FROM freed ORDER BY id
), refunds AS (
    UPDATE payments p
    SET status = 'refund_pending', refund_reason = $4, refund_requested_at = now()
    FROM cancelled c
    WHERE p.booking_id = c.id AND p.status = 'paid'
    RETURNING p.id, p.booking_id, p.amount_minor, p.currency
), mail AS (
    INSERT INTO outbox_messages (kind, recipient, booking_id)
    SELECT 'booking-cancelled', btrim(c.customer), c.id FROM cancelled c
    WHERE btrim(c.customer) ~ '^[^@[:space:]]+@[^@[:space:]]+$'
      AND char_length(btrim(c.customer)) >= 3
    ORDER BY c.id
), audit AS (
    INSERT INTO audit_log (actor, action, event_id, booking_id, details)
    SELECT $5, 'booking-cancelled', c.event_id, c.id,
           $6::jsonb || jsonb_build_object(
               'code', c.code,
               'release_seats', $2::boolean,
               'seats_released', (SELECT count(*) FROM freed f WHERE f.booking_id = c.id),
               'refund', (SELECT jsonb_build_object('payment_id', r.id,
                                                    'amount', r.amount_minor,
                                                    'currency', r.currency)
                          FROM refunds r WHERE r.booking_id = c.id))
    FROM cancelled c
    ORDER BY c.id
)
SELECT (SELECT count(*) FROM cancelled) AS bookings, (SELECT count(*) FROM freed) AS seats,
       (SELECT count(*) FROM refunds) AS refunds
"""

# Seats a cancelled booking kept (withdrawn from sale) go back on sale. $1 its reservation,
# $2 the booking, $3 who, $4 the event.
_RELEASE_WITHDRAWN = """
WITH freed AS (
    UPDATE tickets t SET status = 'available', reservation_id = NULL, booking_id = NULL
    WHERE t.reservation_id = $1 AND t.booking_id = $2 AND t.status = 'booked'
    RETURNING t.id, t.event_id
), freed_audit AS (
    INSERT INTO ticket_audit (ticket_id, event_id, from_status, to_status, reason,
                              reservation_id, booking_id)
    SELECT id, event_id, 'booked', 'available', 'cancelled', $1, $2 FROM freed ORDER BY id
), audit AS (
    INSERT INTO audit_log (actor, action, event_id, booking_id, details)
    SELECT $3, 'booking-seats-released', $4, $2, jsonb_build_object('seats_released', count(*))
    FROM freed HAVING count(*) > 0
)
SELECT count(*) FROM freed
"""

_BOOKING_RESERVATION = "SELECT reservation_id FROM bookings WHERE id = $1"
_LOCK_RESERVATION = "SELECT id FROM reservations WHERE id = $1 FOR UPDATE"
_LOCK_BOOKING = "SELECT event_id, reservation_id, status FROM bookings WHERE id = $1 FOR UPDATE"
_LOCK_PAYMENTS = "SELECT id FROM payments WHERE booking_id = ANY($1::uuid[]) ORDER BY id FOR UPDATE"
_LOCK_BOOKING_TICKETS = """
SELECT id FROM tickets WHERE reservation_id = $1 AND booking_id = $2 ORDER BY id FOR UPDATE
"""

# --- reading bookings ----------------------------------------------------------------------

# A booking with one row per issued ticket (NULL ticket columns if it has none). `seats_held`:
# its seats still booked by it (a cancelled booking's withdrawn seats; 0 once released).
_BOOKING_COLUMNS = """
b.id, b.event_id, b.code, b.customer, b.status, b.total_minor, b.currency, b.created_at,
b.cancelled_at, b.cancel_reason, p.status AS payment_status,
(SELECT count(*) FROM tickets h
 WHERE h.reservation_id = b.reservation_id AND h.booking_id = b.id) AS seats_held,
t.label, it.code AS ticket_code, it.checked_in_at, it.checked_in_by
"""
_BOOKING_JOINS = """
LEFT JOIN payments p ON p.booking_id = b.id
LEFT JOIN issued_tickets it ON it.booking_id = b.id
LEFT JOIN tickets t ON t.id = it.ticket_id
"""
_BOOKING_ORDER = "ORDER BY b.created_at, b.id, t.position, it.id"

_BOOKINGS_BY_ID = f"""
SELECT {_BOOKING_COLUMNS} FROM bookings b {_BOOKING_JOINS}
WHERE b.id = ANY($1::uuid[])
{_BOOKING_ORDER}
"""

# An event's bookings, keyset-paginated on (created_at, id). $1 event, $2 status or NULL,
# $3 a booking code (exact) or NULL, $4 an ILIKE pattern for the customer, $5/$6 the last
# booking of the previous page (NULL for the first), $7 how many bookings.
_BOOKING_PAGE = f"""
WITH page AS (
    SELECT b.* FROM bookings b
    WHERE b.event_id = $1
      AND ($2::text IS NULL OR b.status = $2::text)
      AND ($3::text IS NULL OR b.code = $3::text OR b.customer ILIKE $4::text)
      AND ($5::timestamptz IS NULL OR (b.created_at, b.id) > ($5::timestamptz, $6::uuid))
    ORDER BY b.created_at, b.id
    LIMIT $7
)
SELECT {_BOOKING_COLUMNS} FROM page b {_BOOKING_JOINS}
{_BOOKING_ORDER}
"""
_CURSOR = "SELECT created_at, id FROM bookings WHERE id = $1 AND event_id = $2"
_EVENT_EXISTS = "SELECT 1 FROM events WHERE id = $1"

# One CSV line per ticket (a booking without tickets: one line, its ticket cells empty).
CSV_HEADER = (
    "booking_code",
    "customer",
    "status",
    "created_at",
    "ticket_label",
    "ticket_code",
    "checked_in_at",
    "checked_in_by",
    "total",
    "currency",
)
_CSV_PAGE = 500
# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

_AUDIT_PAGE = """
SELECT id, at, actor, action, booking_id, details::text AS details
FROM audit_log
WHERE event_id = $1 AND ($2::bigint IS NULL OR id > $2::bigint)
ORDER BY id
LIMIT $3
"""
_HAS_AUDIT = "SELECT 1 FROM audit_log WHERE event_id = $1 LIMIT 1"


@dataclass(frozen=True, slots=True)
class BookingTicket:
    label: str
    code: str
    checked_in_at: datetime | None
    checked_in_by: str | None


@dataclass(frozen=True, slots=True)
class OrganiserBooking:
    id: uuid.UUID
    event_id: uuid.UUID
    code: str
    customer: str
    status: str
    total_minor: int
    currency: str
    created_at: datetime
    cancelled_at: datetime | None
    cancel_reason: str | None
    payment_status: str | None
    seats_held: int
    tickets: list[BookingTicket] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class BookingsPage:
    items: list[OrganiserBooking]
    next_after: uuid.UUID | None


def _bookings_from(records: Sequence[asyncpg.Record]) -> list[OrganiserBooking]:
    """Rows of one booking per ticket (in booking order) as bookings with their tickets."""
    bookings: list[OrganiserBooking] = []
    for record in records:
        if not bookings or bookings[-1].id != record["id"]:
            bookings.append(
                OrganiserBooking(
                    id=record["id"],
                    event_id=record["event_id"],
                    code=record["code"],
                    customer=record["customer"],
                    status=record["status"],
                    total_minor=record["total_minor"],
                    currency=record["currency"],
                    created_at=record["created_at"],
                    cancelled_at=record["cancelled_at"],
                    cancel_reason=record["cancel_reason"],
                    payment_status=record["payment_status"],
                    seats_held=record["seats_held"],
                )
            )
        if record["ticket_code"] is not None:
            bookings[-1].tickets.append(
                BookingTicket(
                    label=record["label"],
                    code=record["ticket_code"],
                    checked_in_at=record["checked_in_at"],
                    checked_in_by=record["checked_in_by"],
                )
            )
    return bookings


async def _booking_on(conn: asyncpg.Connection, booking_id: uuid.UUID) -> OrganiserBooking:
    return _bookings_from(await conn.fetch(_BOOKINGS_BY_ID, [booking_id]))[0]


async def cancel_booking(
    db: Database,
    *,
    booking_id: uuid.UUID,
    release_seats: bool = True,
    reason: str | None = None,
    actor: str = ACTOR,
) -> OrganiserBooking:
    """Cancel a booking: its payment owed back, a `booking-cancelled` e-mail owed, its seats
    back on sale (`release_seats`) or withdrawn from sale (kept by the cancelled booking).

    Cancelling a cancelled booking refunds and mails nothing again; with `release_seats` it
    puts seats it withdrew back on sale."""
    async with db.transaction() as conn:
        await conn.execute(_LOCK_TIMEOUT)
        # A booking's reservation never changes: read it unlocked, to lock it first.
        reservation_id = await conn.fetchval(_BOOKING_RESERVATION, booking_id)
        if reservation_id is None:
            raise BookingNotFound(f"no booking {booking_id}")
        await conn.execute(_LOCK_RESERVATION, reservation_id)
        booking = await conn.fetchrow(_LOCK_BOOKING, booking_id)
        if booking["status"] == "cancelled":
            if release_seats:
                await conn.fetch(_LOCK_BOOKING_TICKETS, reservation_id, booking_id)
                await conn.execute(
                    _RELEASE_WITHDRAWN, reservation_id, booking_id, actor, booking["event_id"]
                )
            return await _booking_on(conn, booking_id)
        await conn.fetch(_LOCK_PAYMENTS, [booking_id])
        await conn.fetch(_LOCK_BOOKING_TICKETS, reservation_id, booking_id)
        details = {"reason": reason} if reason is not None else {}
        await conn.execute(
            _CANCEL_BOOKINGS,
            [booking_id],
            release_seats,
            reason,
            "booking-cancelled",
            actor,
            json.dumps(details),
        )
        return await _booking_on(conn, booking_id)


# --- cancelling an event -------------------------------------------------------------------

# NO KEY UPDATE: cancellations and edits of the event take turns, but a hold's insert (its
# foreign key share-locks the event's key) does not wait for this one.
_LOCK_EVENT = "SELECT cancelled_at FROM events WHERE id = $1 FOR NO KEY UPDATE"
_MARK_CANCELLED = """
WITH marked AS (
    UPDATE events SET cancelled_at = clock_timestamp() WHERE id = $1
    RETURNING id, cancelled_at
), audit AS (
    INSERT INTO audit_log (actor, action, event_id, details)
    SELECT $2, 'event-cancelled', id, jsonb_strip_nulls(jsonb_build_object('reason', $3::text))
    FROM marked
)
SELECT cancelled_at FROM marked
"""

# Transactions of the service (its connections' application_name, db.server_settings)
# that began before $1: any of them may still act on what it read before the cancellation
# committed. A role sees these columns for its own sessions (the service uses one role).
_OLDER_TRANSACTIONS = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
  AND application_name LIKE 'boxoffice/%' AND xact_start < $1
"""

# One pass, in the locking protocol's order: the event's live reservations (active holds,
# and confirmed ones whose booking is not cancelled), their bookings, those bookings'
# payments, then every ticket of the event in id order. Locking every ticket waits for the
# holds in flight, so whatever they made is seen (by the pass that follows, if not this one).
_LOCK_LIVE_RESERVATIONS = """
SELECT r.id, r.status::text AS status FROM reservations r
WHERE r.event_id = $1
  AND (r.status = 'active'
       OR (r.status = 'confirmed'
           AND EXISTS (SELECT 1 FROM bookings b
                       WHERE b.reservation_id = r.id AND b.status = 'confirmed')))
ORDER BY r.id
FOR UPDATE OF r
"""
_LOCK_CONFIRMED_BOOKINGS = """
SELECT id FROM bookings
WHERE reservation_id = ANY($1::uuid[]) AND status = 'confirmed'
ORDER BY id
FOR UPDATE
"""
_LOCK_EVENT_TICKETS = """
SELECT count(*) FROM (SELECT 1 FROM tickets WHERE event_id = $1 ORDER BY id FOR UPDATE) locked
"""

# Active holds among the locked reservations end; their seats go back (audited `released`).
# $1 the reservations, $2 who, $3 the event.
_RELEASE_HOLDS = """
WITH ended AS (
    UPDATE reservations SET status = 'released', ended_at = now()
    WHERE id = ANY($1::uuid[]) AND status = 'active'
    RETURNING id
), freed AS (
    UPDATE tickets t SET status = 'available', reservation_id = NULL, hold_expires_at = NULL
    FROM ended e
    WHERE t.reservation_id = e.id AND t.status = 'reserved'
    RETURNING t.id, t.event_id, e.id AS reservation_id
), freed_audit AS (
    INSERT INTO ticket_audit (ticket_id, event_id, from_status, to_status, reason,
                              reservation_id)
    SELECT id, event_id, 'reserved', 'available', 'released', reservation_id
    FROM freed ORDER BY id
), audit AS (
    INSERT INTO audit_log (actor, action, event_id, details)
    SELECT $2, 'holds-released', $3,
           jsonb_build_object('holds', count(*), 'seats_released', (SELECT count(*) FROM freed),
                              'reason', 'event-cancelled')
    FROM ended HAVING count(*) > 0
)
SELECT count(*) FROM ended
"""

# Nobody waits for seats of a cancelled event: the waiting list's offerer skips them.
_SKIP_WAITING_LIST = """
UPDATE waiting_list SET status = 'skipped' WHERE event_id = $1 AND status = 'waiting'
"""

# What the next pass would still find: seats of an active hold or of a booking not
# cancelled. Once this pass holds every ticket's lock, only a reservation that committed
# after this pass locked the reservations leaves any.
_LEFT_BEHIND = """
SELECT count(*) FROM tickets t
LEFT JOIN reservations r ON r.id = t.reservation_id
LEFT JOIN bookings b ON b.id = t.booking_id
WHERE t.event_id = $1
  AND ((t.status = 'reserved' AND r.status = 'active')
       OR (t.status = 'booked' AND b.status = 'confirmed'))
"""

_NOW = "SELECT clock_timestamp()"
# How long a cancellation waits for the transactions that began before it (a hold is one
# statement, ended by STATEMENT_TIMEOUT_MS; a payment notification, a few of them), and how
# often it looks; and a bound on passes, in case something keeps coming back.
_STRAGGLER_WAIT_SECONDS = 30.0
_STRAGGLER_POLL_SECONDS = 0.02
_MAX_PASSES = 100


@dataclass(frozen=True, slots=True)
class EventCancellation:
    """An event's cancellation: when, and what this call did (nothing, when repeated)."""

    event_id: uuid.UUID
    cancelled_at: datetime
    holds_released: int
    bookings_cancelled: int
    seats_released: int
    refunds_requested: int


@dataclass(slots=True)
class _Done:
    holds: int = 0
    bookings: int = 0
    seats: int = 0
    refunds: int = 0


async def _mark_cancelled(
    db: Database, event_id: uuid.UUID, reason: str | None, actor: str
) -> datetime:
    """Commit the event's `cancelled_at` (once): every hold that starts after it is refused."""
    async with db.transaction() as conn:
        await conn.execute(_LOCK_TIMEOUT)
        current = await conn.fetchrow(_LOCK_EVENT, event_id)
        if current is None:
            raise EventNotFound(f"no event {event_id}")
        if current["cancelled_at"] is not None:
            cancelled_at: datetime = current["cancelled_at"]
            return cancelled_at
        cancelled_at = await conn.fetchval(_MARK_CANCELLED, event_id, actor, reason)
        return cancelled_at


async def _cancel_pass(db: Database, event_id: uuid.UUID, actor: str, done: _Done) -> int:
    """Release the event's holds and cancel its bookings that this pass can lock; returns
    how many tickets a later pass must still see to (holds that committed meanwhile).

    One transaction for the whole event: fine for thousands of bookings. At 100,000 it
    would hold every lock and write every row in one go; there, each pass would instead
    take batches of reservations (keyset on id, a few thousand a transaction, each batch
    locked reservation -> booking -> payment -> its tickets), then lock the tickets last."""
    async with db.transaction() as conn:
        await conn.execute(_LOCK_TIMEOUT)
        await conn.execute(_LONG_STATEMENTS)
        reservations = await conn.fetch(_LOCK_LIVE_RESERVATIONS, event_id)
        holds = [r["id"] for r in reservations if r["status"] == "active"]
        confirmed = [r["id"] for r in reservations if r["status"] == "confirmed"]
        bookings = [r["id"] for r in await conn.fetch(_LOCK_CONFIRMED_BOOKINGS, confirmed)]
        await conn.fetch(_LOCK_PAYMENTS, bookings)
        await conn.fetchval(_LOCK_EVENT_TICKETS, event_id)
        if holds:
            done.holds += await conn.fetchval(_RELEASE_HOLDS, holds, actor, event_id)
        if bookings:
            cancelled = await conn.fetchrow(
                _CANCEL_BOOKINGS,
                bookings,
                True,
                "event-cancelled",
                "event-cancelled",
                actor,
                json.dumps({"reason": "event-cancelled"}),
            )
            done.bookings += cancelled["bookings"]
            done.seats += cancelled["seats"]
            done.refunds += cancelled["refunds"]
        await conn.execute(_SKIP_WAITING_LIST, event_id)
        left: int = await conn.fetchval(_LEFT_BEHIND, event_id)
        return left


async def _wait_for_older_transactions(db: Database, since: datetime) -> None:
    """Return once no transaction of the service that began before `since` is running."""
    deadline = asyncio.get_running_loop().time() + _STRAGGLER_WAIT_SECONDS
    while await db.fetchval(_OLDER_TRANSACTIONS, since):
        if asyncio.get_running_loop().time() > deadline:
            raise ServiceUnavailable(
                "the event is cancelled, but requests made before that are still running; "
                "cancel it again to finish"
            )
        await asyncio.sleep(_STRAGGLER_POLL_SECONDS)


async def cancel_event(
    db: Database, *, event_id: uuid.UUID, reason: str | None = None, actor: str = ACTOR
) -> EventCancellation:
    """Cancel an event: nothing more is sold, every hold is released and every booking
    cancelled (seats back, money owed back, buyers e-mailed). Cancelling again changes
    nothing (and finishes a cancellation that was interrupted).

    First `cancelled_at` commits on its own: every hold that starts after that sees it and
    is refused. Then passes release and cancel what is there, until a pass finds nothing
    left, and that pass began after every transaction from before the cancellation had
    ended: a hold statement that read the event just before it (or a payment notification)
    may still be running, and could otherwise commit its seats after the last pass."""
    cancelled_at = await _mark_cancelled(db, event_id, reason, actor)
    since = await db.fetchval(_NOW)
    older_ended = not await db.fetchval(_OLDER_TRANSACTIONS, since)
    done = _Done()
    for _ in range(_MAX_PASSES):
        if await _cancel_pass(db, event_id, actor, done) == 0:
            if older_ended:
                return EventCancellation(
                    event_id=event_id,
                    cancelled_at=cancelled_at,
                    holds_released=done.holds,
                    bookings_cancelled=done.bookings,
                    seats_released=done.seats,
                    refunds_requested=done.refunds,
                )
            await _wait_for_older_transactions(db, since)
            older_ended = True
    raise ServiceUnavailable(
        f"the event is cancelled, but {_MAX_PASSES} passes found new holds or bookings each "
        "time; cancel it again to finish"
    )


# --- deleting an event ---------------------------------------------------------------------

# FOR UPDATE (not NO KEY): also makes a new hold's insert (its foreign key check) wait.
_LOCK_EVENT_ROW = "SELECT name FROM events WHERE id = $1 FOR UPDATE"
_LOCK_EVENT_RESERVATIONS = """
SELECT count(*) FROM (SELECT 1 FROM reservations WHERE event_id = $1 ORDER BY id FOR UPDATE) r
"""
# A booking (even cancelled) or a payment (even failed) is money's history: never deleted.
_EVER_SOLD = """
SELECT EXISTS (SELECT 1 FROM bookings WHERE event_id = $1)
       OR EXISTS (SELECT 1 FROM payments WHERE event_id = $1)
"""
_DELETE_EVENT = """
WITH audit AS (
    INSERT INTO audit_log (actor, action, event_id, details)
    VALUES ($2, 'event-deleted', $1,
            jsonb_build_object('name', $3::text,
                               'holds_deleted', (SELECT count(*) FROM reservations
                                                 WHERE event_id = $1 AND status = 'active')))
)
DELETE FROM events WHERE id = $1
"""


async def delete_event(db: Database, *, event_id: uuid.UUID, actor: str = ACTOR) -> None:
    """Delete an event that never sold (no booking or payment, ever), with its tickets and
    holds (ON DELETE CASCADE); the audit log keeps a row saying so."""
    async with db.transaction() as conn:
        await conn.execute(_LOCK_TIMEOUT)
        await conn.execute(_LONG_STATEMENTS)
        event = await conn.fetchrow(_LOCK_EVENT_ROW, event_id)
        if event is None:
            raise EventNotFound(f"no event {event_id}")
        # Reservations first (the protocol's order): a checkout or confirm in flight
        # finishes before we look for payments, and none can start on these holds until we
        # are done.
        await conn.fetchval(_LOCK_EVENT_RESERVATIONS, event_id)
        if await conn.fetchval(_EVER_SOLD, event_id):
            raise EventHasSales("the event has sold tickets: cancel it instead")
        # Every ticket: waits for the holds in flight; no hold can take a seat after this.
        await conn.fetchval(_LOCK_EVENT_TICKETS, event_id)
        # ...so the reservations are all there now: lock the ones that committed meanwhile,
        # and look again (a checkout may have started on one of them).
        await conn.fetchval(_LOCK_EVENT_RESERVATIONS, event_id)
        if await conn.fetchval(_EVER_SOLD, event_id):
            raise EventHasSales("the event has sold tickets: cancel it instead")
        await conn.execute(_DELETE_EVENT, event_id, actor, event["name"])


# --- an event's bookings -------------------------------------------------------------------


def _search(q: str | None) -> tuple[str | None, str | None]:
    """`q` as (a booking code to match exactly, a customer substring as an ILIKE pattern)."""
    if q is None or not q.strip():
        return None, None
    text = q.strip()
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return text.upper(), f"%{escaped}%"


async def _event_exists(conn: asyncpg.Connection, event_id: uuid.UUID) -> None:
    if await conn.fetchval(_EVENT_EXISTS, event_id) is None:
        raise EventNotFound(f"no event {event_id}")


async def _page(
    conn: asyncpg.Connection,
    event_id: uuid.UUID,
    status: str | None,
    q: str | None,
    cursor: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[OrganiserBooking]:
    code, pattern = _search(q)
    at, last = cursor if cursor is not None else (None, None)
    records = await conn.fetch(_BOOKING_PAGE, event_id, status, code, pattern, at, last, limit)
    return _bookings_from(records)


async def list_bookings(
    db: Database,
    *,
    event_id: uuid.UUID,
    q: str | None = None,
    status: str | None = None,
    limit: int,
    after: uuid.UUID | None = None,
) -> BookingsPage:
    """An event's bookings in booking order (keyset pages), with their tickets. `q`: a
    booking code (exact, any case) or part of the customer (e-mail or name, any case)."""
    async with db.connection() as conn:
        await _event_exists(conn, event_id)
        cursor = None
        if after is not None:
            found = await conn.fetchrow(_CURSOR, after, event_id)
            if found is None:
                raise InvalidRequest(f"`after` names no booking of this event: {after}")
            cursor = (found["created_at"], found["id"])
        bookings = await _page(conn, event_id, status, q, cursor, limit + 1)
    items = bookings[:limit]
    return BookingsPage(items=items, next_after=items[-1].id if len(bookings) > limit else None)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    text = str(value)
    # A leading apostrophe makes a spreadsheet show the text instead of running it.
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def _csv_lines(bookings: list[OrganiserBooking]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    for booking in bookings:
        tickets: list[BookingTicket | None] = list(booking.tickets) or [None]
        for ticket in tickets:
            writer.writerow(
                _cell(value)
                for value in (
                    booking.code,
                    booking.customer,
                    booking.status,
                    booking.created_at,
                    ticket.label if ticket else None,
                    ticket.code if ticket else None,
                    ticket.checked_in_at if ticket else None,
                    ticket.checked_in_by if ticket else None,
                    booking.total_minor,
                    booking.currency,
                )
            )
    return out.getvalue()


async def bookings_csv(
    db: Database, *, event_id: uuid.UUID, q: str | None = None, status: str | None = None
) -> AsyncIterator[str]:
    """The event's bookings as CSV, one line per ticket, a page of bookings at a time (each
    page its own short query: no transaction or connection is held while the client reads).
    The event and the first page are read before the answer starts, so an unknown event or
    a value the database refuses is a problem answer rather than a cut stream."""
    async with db.connection() as conn:
        await _event_exists(conn, event_id)
        first = await _page(conn, event_id, status, q, None, _CSV_PAGE)

    async def lines() -> AsyncIterator[str]:
        out = io.StringIO()
        csv.writer(out).writerow(CSV_HEADER)
        yield out.getvalue()
        bookings = first
        while bookings:
            yield _csv_lines(bookings)
            if len(bookings) < _CSV_PAGE:
                return
            cursor = (bookings[-1].created_at, bookings[-1].id)
            async with db.connection() as conn:
                bookings = await _page(conn, event_id, status, q, cursor, _CSV_PAGE)

    return lines()


# --- an event's audit log ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    action: str
    booking_id: uuid.UUID | None
    details: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AuditPage:
    items: list[AuditEntry]
    next_after: int | None


async def list_audit(
    db: Database, *, event_id: uuid.UUID, limit: int, after: int | None = None
) -> AuditPage:
    """The event's audit log, oldest first (keyset pages on id). A deleted event's log stays
    readable; an id that never had an event or a log is a 404."""
    async with db.connection() as conn:
        records = await conn.fetch(_AUDIT_PAGE, event_id, after, limit + 1)
        if (
            not records
            and await conn.fetchval(_EVENT_EXISTS, event_id) is None
            and await conn.fetchval(_HAS_AUDIT, event_id) is None
        ):
            raise EventNotFound(f"no event {event_id}")
    items = [
        AuditEntry(
            id=r["id"],
            at=r["at"],
            actor=r["actor"],
            action=r["action"],
            booking_id=r["booking_id"],
            details=json.loads(r["details"]),
        )
        for r in records[:limit]
    ]
    return AuditPage(items=items, next_after=items[-1].id if len(records) > limit else None)
