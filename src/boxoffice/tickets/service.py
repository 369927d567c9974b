"""Reading tickets: keyset pages in seat order, with expired holds shown as available."""

import uuid

from boxoffice.db import Database
from boxoffice.errors import EventNotFound, InvalidRequest, NotFound
from boxoffice.tickets.models import TicketStatus
from boxoffice.tickets.records import CatalogueTicket, TicketRef, TicketRow

# One page of an event's tickets in seat order. $1 event, $2 a status as buyers see it
# (NULL for any), $3 section (NULL for any), $4 the position the page continues after
# (-1 for the first page), $5 page size.
_EVENT_TICKETS = """
SELECT t.id, t.event_id, t.label, t.section, t.row_label, t.seat, t.price_minor,
       ticket_effective_status(t.status, t.hold_expires_at)::text AS status
FROM tickets t
WHERE t.event_id = $1
  AND ($2::ticket_status IS NULL OR ticket_effective_status(t.status, t.hold_expires_at) = $2)
  AND ($3::text IS NULL OR t.section = $3)
  AND t.position > $4
ORDER BY t.position
LIMIT $5
"""

# The cursor is a ticket id; the page continues after its seat position.
_POSITION = "SELECT position FROM tickets WHERE id = $1 AND event_id = $2"

# Every ticket of every event by id: the original demo's `GET /tickets`.
_ALL_TICKETS = """
SELECT t.id, t.event_id, t.label, t.section, t.row_label, t.seat, t.price_minor,
       ticket_effective_status(t.status, t.hold_expires_at)::text AS status,
       t.public_id, e.currency, e.name AS event_name
FROM tickets t JOIN events e ON e.id = t.event_id
WHERE t.id > $1
ORDER BY t.id
LIMIT $2
"""


async def list_event_tickets(
    db: Database,
    *,
    event_id: uuid.UUID,
    status: TicketStatus | None,
    section: str | None,
    limit: int,
    after: int | None,
) -> tuple[str, list[TicketRow], int | None]:
    """One page of an event's tickets in seat order: (currency, rows, next cursor)."""
    async with db.connection() as conn:
        currency = await conn.fetchval("SELECT currency FROM events WHERE id = $1", event_id)
        if currency is None:
            raise EventNotFound(f"no event {event_id}")
        position = -1
        if after is not None:
            position = await conn.fetchval(_POSITION, after, event_id)
            if position is None:
                raise InvalidRequest(f"`after` names no ticket of this event: {after}")
        records = await conn.fetch(
            _EVENT_TICKETS,
            event_id,
            status.value if status is not None else None,
            section,
            position,
            limit + 1,
        )
    rows = [TicketRow.of(r) for r in records[:limit]]
    return str(currency), rows, (rows[-1].id if len(records) > limit else None)


async def list_all_tickets(
    db: Database, *, limit: int, after: int | None
) -> tuple[list[CatalogueTicket], int | None]:
    """Every ticket of every event by id, with its public UUID and event name."""
    records = await db.fetch(_ALL_TICKETS, after or 0, limit + 1)
    rows = [CatalogueTicket.of(r) for r in records[:limit]]
    return rows, (rows[-1].id if len(records) > limit else None)


async def find_ticket(db: Database, *, ticket: int | uuid.UUID) -> TicketRef:
    """A ticket by its internal id or its public UUID (the original demo's clients use UUIDs)."""
    if isinstance(ticket, uuid.UUID):
        sql = "SELECT id, public_id, event_id FROM tickets WHERE public_id = $1"
    else:
        sql = "SELECT id, public_id, event_id FROM tickets WHERE id = $1"
    record = await db.fetchrow(sql, ticket)
    if record is None:
        raise NotFound(f"no ticket {ticket}")
    return TicketRef(id=record["id"], public_id=record["public_id"], event_id=record["event_id"])
