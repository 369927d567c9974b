"""Reading tickets: keyset pages in seat order, with expired holds shown as available."""

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from boxoffice.errors import EventNotFound, InvalidRequest, NotFound
from boxoffice.tickets.models import TicketStatus
from boxoffice.tickets.sql import IS_AVAILABLE, IS_HELD, TICKET_COLUMNS

_STATUS_FILTERS = {
    TicketStatus.available: IS_AVAILABLE,
    TicketStatus.reserved: IS_HELD,
    TicketStatus.booked: "t.status = 'booked'",
}


async def list_event_tickets(
    engine: AsyncEngine,
    *,
    event_id: uuid.UUID,
    status: TicketStatus | None,
    section: str | None,
    limit: int,
    after: int | None,
) -> tuple[str, list[Any], int | None]:
    """One page of an event's tickets in seat order: (currency, rows, next cursor)."""
    filters = ["t.event_id = :event_id"]
    params: dict[str, Any] = {"event_id": event_id, "limit": limit + 1}
    if status is not None:
        filters.append(_STATUS_FILTERS[status])
    if section is not None:
        filters.append("t.section = :section")
        params["section"] = section
    async with engine.connect() as conn:
        currency = (
            await conn.execute(text("SELECT currency FROM events WHERE id = :id"), {"id": event_id})
        ).scalar()
        if currency is None:
            raise EventNotFound(f"no event {event_id}")
        if after is not None:
            # The cursor is a ticket id; the page continues after its seat position.
            position = (
                await conn.execute(
                    text("SELECT position FROM tickets WHERE id = :id AND event_id = :event_id"),
                    {"id": after, "event_id": event_id},
                )
            ).scalar()
            if position is None:
                raise InvalidRequest(f"`after` names no ticket of this event: {after}")
            filters.append("t.position > :after_position")
            params["after_position"] = position
        rows = (
            await conn.execute(
                text(
                    f"SELECT {TICKET_COLUMNS} FROM tickets t WHERE {' AND '.join(filters)}"
                    " ORDER BY t.position LIMIT :limit"
                ),
                params,
            )
        ).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return str(currency), list(rows), (rows[-1].id if more else None)


async def list_all_tickets(
    engine: AsyncEngine, *, limit: int, after: int | None
) -> tuple[list[Any], int | None]:
    """Every ticket of every event by id, with its public UUID and event name: the original
    demo's `GET /tickets`."""
    params: dict[str, Any] = {"limit": limit + 1, "after": after or 0}
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    f"SELECT {TICKET_COLUMNS}, t.public_id, e.currency, e.name AS event_name"
                    " FROM tickets t JOIN events e ON e.id = t.event_id"
                    " WHERE t.id > :after ORDER BY t.id LIMIT :limit"
                ),
                params,
            )
        ).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return list(rows), (rows[-1].id if more else None)


@dataclass(frozen=True)
class TicketRef:
    id: int
    public_id: uuid.UUID
    event_id: uuid.UUID


async def find_ticket(engine: AsyncEngine, *, ticket: int | uuid.UUID) -> TicketRef:
    """A ticket by its internal id or its public UUID (the original demo's clients use UUIDs)."""
    column = "public_id" if isinstance(ticket, uuid.UUID) else "id"
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(f"SELECT id, public_id, event_id FROM tickets WHERE {column} = :ticket"),
                {"ticket": ticket},
            )
        ).first()
    if row is None:
        raise NotFound(f"no ticket {ticket}")
    return TicketRef(id=row.id, public_id=row.public_id, event_id=row.event_id)
