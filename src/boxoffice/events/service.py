"""Creating events with their tickets in bulk, and reading them with live counts."""

import uuid
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from boxoffice.errors import EventNotFound, InvalidRequest
from boxoffice.events.schemas import EventCreate
from boxoffice.idempotency import IdempotencyRequest, claim, finish
from boxoffice.tickets.sql import IS_AVAILABLE, STATUS_COUNTS


def row_labels(count: int) -> list[str]:
    """A, B, … Z, AA, AB, …: the way venues letter their rows."""
    labels = []
    for number in range(1, count + 1):
        label = ""
        while number:
            number, remainder = divmod(number - 1, 26)
            label = chr(ord("A") + remainder) + label
        labels.append(label)
    return labels


# Tickets are generated inside PostgreSQL: one statement per section, no rows shipped over
# the wire, so 60,000 seats take well under a second.
_INSERT_SECTION = text(
    """
    INSERT INTO tickets (event_id, position, section, row_label, seat, label, price_minor)
    SELECT :event_id, :first_position + (r.n - 1) * :seats_per_row + (s - 1),
           :section, r.label, s, :section || ' ' || r.label || '-' || s, :price
    FROM unnest(CAST(:row_labels AS text[])) WITH ORDINALITY AS r(label, n),
         generate_series(1, :seats_per_row) AS s
    """
)
_INSERT_GENERAL_ADMISSION = text(
    """
    INSERT INTO tickets (event_id, position, label, price_minor)
    SELECT :event_id, n - 1, 'GA ' || n, :price FROM generate_series(1, :quantity) AS n
    """
)

_EVENT_WITH_COUNTS = f"""
    SELECT e.id, e.name, e.venue, e.starts_at, e.hold_seconds, e.currency, e.kind,
           e.ticket_count, e.created_at, c.available, c.reserved, c.booked
    FROM events e
    CROSS JOIN LATERAL (SELECT {STATUS_COUNTS} FROM tickets t WHERE t.event_id = e.id) c
"""


async def create_event(
    engine: AsyncEngine,
    *,
    event: EventCreate,
    default_hold_seconds: int,
    max_tickets: int,
    idempotency: IdempotencyRequest | None = None,
) -> uuid.UUID:
    if event.ticket_count > max_tickets:
        raise InvalidRequest(
            f"{event.ticket_count} tickets is more than the limit of {max_tickets} per event"
        )
    async with engine.begin() as conn:
        if idempotency is not None:
            await claim(conn, idempotency)
        event_id = (
            await conn.execute(
                text(
                    "INSERT INTO events (name, venue, starts_at, hold_seconds, currency, kind,"
                    " ticket_count) VALUES (:name, :venue, :starts_at, :hold_seconds, :currency,"
                    " :kind, :ticket_count) RETURNING id"
                ),
                {
                    "name": event.name,
                    "venue": event.venue,
                    "starts_at": event.starts_at,
                    "hold_seconds": event.hold_seconds or default_hold_seconds,
                    "currency": event.currency,
                    "kind": "seated" if event.sections else "general_admission",
                    "ticket_count": event.ticket_count,
                },
            )
        ).scalar_one()
        if event.general_admission is not None:
            await conn.execute(
                _INSERT_GENERAL_ADMISSION,
                {
                    "event_id": event_id,
                    "price": event.general_admission.price,
                    "quantity": event.general_admission.quantity,
                },
            )
        first_position = 0
        for section in event.sections or []:
            await conn.execute(
                _INSERT_SECTION,
                {
                    "event_id": event_id,
                    "first_position": first_position,
                    "section": section.name,
                    "row_labels": row_labels(section.rows),
                    "seats_per_row": section.seats_per_row,
                    "price": section.price,
                },
            )
            first_position += section.rows * section.seats_per_row
        if idempotency is not None:
            # The answer is the new event as this transaction sees it: the key commits with it.
            await finish(conn, idempotency, await _event_on(conn, event_id))
    return uuid.UUID(str(event_id))


async def get_event(engine: AsyncEngine, *, event_id: uuid.UUID) -> tuple[Any, list[Any]]:
    """The event with its counts by status, and each section's size and free seats."""
    async with engine.connect() as conn:
        return await _event_on(conn, event_id)


async def _event_on(conn: AsyncConnection, event_id: uuid.UUID) -> tuple[Any, list[Any]]:
    row = (
        await conn.execute(text(_EVENT_WITH_COUNTS + " WHERE e.id = :id"), {"id": event_id})
    ).first()
    if row is None:
        raise EventNotFound(f"no event {event_id}")
    sections = (
        await conn.execute(
            text(
                f"SELECT t.section AS name, count(*) AS tickets,"
                f" count(*) FILTER (WHERE {IS_AVAILABLE}) AS available,"
                " min(t.position) AS first_position"
                " FROM tickets t WHERE t.event_id = :id AND t.section IS NOT NULL"
                " GROUP BY t.section ORDER BY first_position"
            ),
            {"id": event_id},
        )
    ).all()
    return row, list(sections)


async def list_events(
    engine: AsyncEngine, *, limit: int, after: uuid.UUID | None, upcoming: bool = False
) -> tuple[list[Any], uuid.UUID | None]:
    """Events by start time (keyset pagination on (starts_at, id)); `upcoming`: only those
    that have not started by the database clock."""
    filters = []
    params: dict[str, Any] = {"limit": limit + 1}
    if after is not None:
        filters.append("(e.starts_at, e.id) > (SELECT starts_at, id FROM events WHERE id = :after)")
        params["after"] = after
    if upcoming:
        filters.append("e.starts_at > now()")
    where = f" WHERE {' AND '.join(filters)}" if filters else ""
    async with engine.connect() as conn:
        if after is not None:
            known = await conn.execute(text("SELECT 1 FROM events WHERE id = :id"), {"id": after})
            if known.first() is None:
                raise InvalidRequest(f"`after` names no event: {after}")
        rows = (
            await conn.execute(
                text(_EVENT_WITH_COUNTS + where + " ORDER BY e.starts_at, e.id LIMIT :limit"),
                params,
            )
        ).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return list(rows), (rows[-1].id if more else None)
