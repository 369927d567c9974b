"""The snapshot a stream starts from: every ticket of an event with its effective status."""

import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from boxoffice.errors import EventNotFound
from boxoffice.tickets.sql import EFFECTIVE_STATUS

# PostgreSQL builds the JSON: one round trip and no Python object per seat, even for a
# stadium. Same shape as a notification of migration 0005's trigger.
_SNAPSHOT = text(
    f"""
    SELECT json_build_object(
               'event_id', e.id,
               'tickets', coalesce(
                   (SELECT json_agg(json_build_array(t.id, {EFFECTIVE_STATUS}) ORDER BY t.position)
                    FROM tickets t WHERE t.event_id = e.id),
                   '[]'::json)
           )::text
    FROM events e WHERE e.id = :event_id
    """
)


async def snapshot(engine: AsyncEngine, event_id: uuid.UUID) -> str:
    """`{"event_id": ..., "tickets": [[id, status], ...]}` as JSON text, in seat order."""
    async with engine.connect() as conn:
        payload = (await conn.execute(_SNAPSHOT, {"event_id": event_id})).scalar()
    if payload is None:
        raise EventNotFound(f"no event {event_id}")
    return str(payload)
