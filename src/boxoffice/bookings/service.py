"""The buyer's side of a booking: the booking page's data, its calendar entry, and a lookup
for a buyer who lost the link."""

import uuid
from dataclasses import dataclass
from datetime import datetime

from boxoffice.bookings.calendar import event_ics
from boxoffice.bookings.links import booking_id_of_token, booking_url
from boxoffice.config import Settings
from boxoffice.db import Database
from boxoffice.errors import BookingNotFound, Unauthorized

_BOOKING = """
SELECT b.id, b.code, b.status, b.customer, b.total_minor, b.currency, b.created_at,
       b.cancelled_at, e.id AS event_id, e.name AS event_name, e.venue, e.starts_at,
       e.cancelled_at IS NOT NULL AS event_cancelled
FROM bookings b JOIN events e ON e.id = b.event_id
WHERE b.id = $1
"""

_TICKETS = """
SELECT it.code, it.checked_in_at, t.label, t.section, t.row_label, t.seat, t.price_minor
FROM issued_tickets it JOIN tickets t ON t.id = it.ticket_id
WHERE it.booking_id = $1
ORDER BY t.position
"""

# The same work whether or not the code and address match, and the same answer: a stranger
# learns nothing about which bookings exist. A match owes the buyer their link by e-mail.
_LOOKUP = """
INSERT INTO outbox_messages (kind, recipient, booking_id)
SELECT 'booking-link', btrim(b.customer), b.id
FROM bookings b
WHERE b.code = $1 AND lower(btrim(b.customer)) = lower(btrim($2))
  AND btrim(b.customer) ~ '^[^@[:space:]]+@[^@[:space:]]+$'
  -- At most one link a minute per booking: the lookup cannot be used to flood an inbox.
  AND NOT EXISTS (SELECT 1 FROM outbox_messages m
                  WHERE m.booking_id = b.id AND m.kind = 'booking-link'
                    AND m.created_at > now() - interval '1 minute')
"""


@dataclass(frozen=True, slots=True)
class IssuedTicketView:
    code: str
    checked_in_at: datetime | None
    label: str
    section: str | None
    row_label: str | None
    seat: int | None
    price_minor: int


@dataclass(frozen=True, slots=True)
class BookingPage:
    id: uuid.UUID
    code: str
    status: str
    customer: str
    total_minor: int
    currency: str
    created_at: datetime
    cancelled_at: datetime | None
    event_id: uuid.UUID
    event_name: str
    venue: str | None
    starts_at: datetime
    event_cancelled: bool
    tickets: list[IssuedTicketView]


async def booking_for_link(
    db: Database, *, booking_id: uuid.UUID, token: str | None
) -> BookingPage:
    """The booking its link's secret names; anything else is `booking-not-found`."""
    if not token:
        raise Unauthorized("send the booking link's secret as `Authorization: Bearer <secret>`")
    if booking_id_of_token(db.settings, token) != booking_id:
        raise BookingNotFound(f"no booking {booking_id} for this link")
    async with db.connection() as conn:
        record = await conn.fetchrow(_BOOKING, booking_id)
        if record is None:
            raise BookingNotFound(f"no booking {booking_id} for this link")
        tickets = [IssuedTicketView(**row) for row in await conn.fetch(_TICKETS, booking_id)]
    return BookingPage(**record, tickets=tickets)


def calendar_entry(settings: Settings, booking: BookingPage) -> str:
    return event_ics(
        booking_id=booking.id,
        booking_code=booking.code,
        event_name=booking.event_name,
        venue=booking.venue,
        starts_at=booking.starts_at,
        booking_url=booking_url(settings, booking.id),
        stamp=booking.created_at,
    )


async def request_link(db: Database, *, code: str, email: str) -> None:
    async with db.connection() as conn:
        await conn.execute(_LOOKUP, code.strip().upper(), email)
