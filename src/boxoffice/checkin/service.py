"""Door scanners, and admitting an issued ticket exactly once.

A scanner is a per-event bearer token (only its SHA-256 is stored) with a name the door
knows it by. A check-in locks the ticket's booking (shared), then the issued ticket, in one
statement; a booking's cancellation locks the same booking row FOR UPDATE before it changes
it, so the two are ordered by that row's lock and neither can slip past the other.
"""

import hmac
import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from boxoffice.config import Settings
from boxoffice.db import Database
from boxoffice.errors import (
    AlreadyCheckedIn,
    BookingCancelled,
    Conflict,
    EventNotFound,
    Forbidden,
    NotFound,
    TicketCodeNotFound,
    WrongEvent,
)
from boxoffice.reservations.tokens import hash_token, new_token

# Who a check-in with the admin token is recorded as.
ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class ScannerRow:
    id: uuid.UUID
    name: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class NewScanner:
    """A scanner just created: the only time its token is ever shown."""

    id: uuid.UUID
    name: str
    token: str


@dataclass(frozen=True, slots=True)
class DoorEvent:
    id: uuid.UUID
    name: str
    venue: str | None
    starts_at: datetime


@dataclass(frozen=True, slots=True)
class Door:
    """Who is scanning: the name check-ins record (a scanner's, or "admin")."""

    name: str
    scanner_id: uuid.UUID | None


@dataclass(frozen=True, slots=True)
class Admission:
    ticket_code: str
    booking_code: str
    event_id: uuid.UUID
    label: str
    section: str | None
    row_label: str | None
    seat: int | None
    customer: str
    checked_in_at: datetime
    checked_in_by: str


_DOOR_EVENT = "SELECT id, name, venue, starts_at FROM events WHERE id = $1"

_CREATE_SCANNER = """
INSERT INTO scanners (event_id, name, token_hash)
SELECT e.id, $2, $3 FROM events e WHERE e.id = $1
RETURNING id, name
"""

# An event without scanners is one row of NULLs (the outer join); an unknown event, none.
_SCANNERS = """
SELECT s.id, s.name, s.created_at, s.revoked_at
FROM events e
LEFT JOIN scanners s ON s.event_id = e.id
WHERE e.id = $1
ORDER BY s.created_at, s.id
"""

# Revoking twice keeps the first time.
_REVOKE_SCANNER = """
UPDATE scanners SET revoked_at = coalesce(revoked_at, now())
WHERE id = $2 AND event_id = $1
"""

_SCANNER_BY_TOKEN = """
SELECT id, event_id, name, revoked_at IS NOT NULL AS revoked
FROM scanners
WHERE token_hash = $1
"""

# Scanners of one door may all read the same ticket at once (a photocopied code, a double
# beep): each waits its turn on the ticket's row lock, which the one before holds for a
# millisecond or two, rather than get a `conflict` after the service's usual 100 ms.
_DOOR_LOCK_TIMEOUT = "SET LOCAL lock_timeout = '2s'"

# The ticket by its code, its booking share-locked first and then the ticket itself locked
# (PostgreSQL takes row locks in the order of the FOR clauses).
# - FOR UPDATE OF it: concurrent scans of one code queue here; each sees the row as the one
#   before it committed (READ COMMITTED re-reads a row it waited for), so only the first
#   sees `checked_in_at` NULL and admits; every later one answers `already-checked-in`.
# - FOR SHARE OF b: a cancellation locks the booking FOR UPDATE before it sets `status` and
#   `cancelled_at = clock_timestamp()`. If it holds the lock first, this waits and then
#   reads the booking cancelled (and refuses); if this holds it first, the cancellation
#   waits for this commit, so `checked_in_at` (this transaction's start) comes before
#   `cancelled_at`. A ticket is never admitted after its booking's cancellation.
# - The booking before the ticket: the order a cancellation takes them in (booking first),
#   so the two cannot deadlock even if it also locks the booking's issued tickets.
_LOCK_TICKET = """
SELECT it.id, it.event_id, it.checked_in_at, it.checked_in_by,
       b.status AS booking_status, b.code AS booking_code, b.customer,
       t.label, t.section, t.row_label, t.seat, e.name AS event_name
FROM issued_tickets it
JOIN bookings b ON b.id = it.booking_id
JOIN tickets t ON t.id = it.ticket_id
JOIN events e ON e.id = it.event_id
WHERE it.code = $1
FOR SHARE OF b FOR UPDATE OF it
"""

# Admits the locked ticket and writes the audit row, in one statement. Matching only while
# `checked_in_at` is NULL makes the admission itself set-once, whatever ran before it.
# $1 issued ticket, $2 who admits it, $3 the scanner (NULL: admin).
_ADMIT = """
WITH admitted AS (
    UPDATE issued_tickets SET checked_in_at = now(), checked_in_by = $2
    WHERE id = $1 AND checked_in_at IS NULL
    RETURNING event_id, booking_id, code, checked_in_at
), audit AS (
    INSERT INTO audit_log (actor, action, event_id, booking_id, details)
    SELECT $2, 'checked-in', event_id, booking_id,
           jsonb_strip_nulls(jsonb_build_object('ticket_code', code, 'scanner_id', $3::uuid))
    FROM admitted
)
SELECT checked_in_at FROM admitted
"""


async def door_event(db: Database, *, event_id: uuid.UUID) -> DoorEvent:
    """The event a scanner page is for."""
    record = await db.fetchrow(_DOOR_EVENT, event_id)
    if record is None:
        raise EventNotFound(f"no event {event_id}")
    return DoorEvent(**record)


async def create_scanner(db: Database, *, event_id: uuid.UUID, name: str) -> NewScanner:
    token, token_hash = new_token()
    record = await db.fetchrow(_CREATE_SCANNER, event_id, name, token_hash)
    if record is None:
        raise EventNotFound(f"no event {event_id}")
    return NewScanner(id=record["id"], name=record["name"], token=token)


async def list_scanners(db: Database, *, event_id: uuid.UUID) -> list[ScannerRow]:
    """The event's scanners, oldest first, revoked ones included."""
    records = await db.fetch(_SCANNERS, event_id)
    if not records:
        raise EventNotFound(f"no event {event_id}")
    return [ScannerRow(**record) for record in records if record["id"] is not None]


async def revoke_scanner(db: Database, *, event_id: uuid.UUID, scanner_id: uuid.UUID) -> None:
    """Refuse the scanner's token from now on; revoking twice is fine."""
    status = await db.execute(_REVOKE_SCANNER, event_id, scanner_id)
    if status == "UPDATE 0":
        raise NotFound(f"event {event_id} has no scanner {scanner_id}")


def _is_admin(settings: Settings, token: str) -> bool:
    expected = settings.admin_token
    return expected is not None and hmac.compare_digest(token.encode(), expected.encode())


async def _door(
    conn: asyncpg.Connection, settings: Settings, event_id: uuid.UUID, token: str
) -> Door:
    """Who `token` is at this event's door: the admin or one of its unrevoked scanners."""
    if _is_admin(settings, token):
        return Door(name=ADMIN, scanner_id=None)
    scanner = await conn.fetchrow(_SCANNER_BY_TOKEN, hash_token(token))
    if scanner is None:
        raise Forbidden("that is neither the admin token nor a scanner's token")
    if scanner["event_id"] != event_id:
        raise Forbidden("that scanner belongs to another event")
    if scanner["revoked"]:
        raise Forbidden(f"the scanner {scanner['name']!r} was revoked")
    return Door(name=scanner["name"], scanner_id=scanner["id"])


async def check_in(db: Database, *, event_id: uuid.UUID, token: str, ticket_code: str) -> Admission:
    """Admit the ticket with this (normalised) code at this event's door, once."""
    async with db.transaction() as conn:
        await conn.execute(_DOOR_LOCK_TIMEOUT)
        door = await _door(conn, db.settings, event_id, token)
        ticket = await conn.fetchrow(_LOCK_TICKET, ticket_code)
        if ticket is None or ticket["event_id"] != event_id:
            # A scanner's event exists (its scanners go with it); the admin's may not.
            if door.scanner_id is None and await conn.fetchrow(_DOOR_EVENT, event_id) is None:
                raise EventNotFound(f"no event {event_id}")
            if ticket is None:
                raise TicketCodeNotFound(f"no ticket has the code {ticket_code}")
            raise WrongEvent(
                f"this ticket is for another event: {ticket['event_name']}",
                event_name=ticket["event_name"],
            )
        if ticket["booking_status"] == "cancelled":
            raise BookingCancelled(f"booking {ticket['booking_code']} was cancelled")
        if ticket["checked_in_at"] is not None:
            first_at = ticket["checked_in_at"].isoformat()
            raise AlreadyCheckedIn(
                f"already admitted at {first_at} by {ticket['checked_in_by']}",
                checked_in_at=first_at,
                checked_in_by=ticket["checked_in_by"],
            )
        checked_in_at = await conn.fetchval(_ADMIT, ticket["id"], door.name, door.scanner_id)
        if checked_in_at is None:
            # Not while this transaction holds the ticket's lock; the statement guards anyway.
            raise Conflict("the ticket changed while it was checked in; scan it again")
        return Admission(
            ticket_code=ticket_code,
            booking_code=ticket["booking_code"],
            event_id=event_id,
            label=ticket["label"],
            section=ticket["section"],
            row_label=ticket["row_label"],
            seat=ticket["seat"],
            customer=ticket["customer"],
            checked_in_at=checked_in_at,
            checked_in_by=door.name,
        )
