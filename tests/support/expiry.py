"""A hold's expiry moved into the past on the database clock, never by sleeping.

The database clock is the only clock for holds: a hold is over once `expires_at <= now()`.
Moving it: the reservation's `expires_at` and the `hold_expires_at` of the tickets it still
holds move together (I2), and `created_at` moves by the same amount, so the hold keeps its
length (and CHECK expires_at > created_at holds).
"""

import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

# The reservation(s) chosen by `{where}` whose expiry is still ahead, moved to one second ago.
_MOVE_RESERVATIONS = """
UPDATE reservations
SET created_at = created_at - (expires_at - (now() - interval '1 second')),
    expires_at = now() - interval '1 second'
WHERE {where} AND expires_at > now()
RETURNING id, expires_at
"""
_MOVE_TICKETS = """
UPDATE tickets SET hold_expires_at = :expires_at
WHERE reservation_id = :id AND status = 'reserved' RETURNING id
"""


async def move_expiry_into_the_past(
    engine: AsyncEngine, reservation_id: str | uuid.UUID
) -> tuple[bool, list[int]]:
    """Let a hold's expiry pass now, if it is still ahead. Returns whether the reservation
    moved, and which of its tickets did (those it still holds)."""
    async with engine.begin() as conn:
        moved = await conn.execute(
            text(_MOVE_RESERVATIONS.format(where="id = :id")),
            {"id": uuid.UUID(str(reservation_id))},
        )
        row = moved.one_or_none()
        if row is None:
            return False, []
        tickets = await conn.execute(
            text(_MOVE_TICKETS), {"id": row.id, "expires_at": row.expires_at}
        )
        return True, sorted(tickets.scalars().all())


async def expire_holds_of_event(engine: AsyncEngine, event_id: str | uuid.UUID) -> list[uuid.UUID]:
    """Let every active hold of an event lapse now, in one statement (as
    `move_expiry_into_the_past` does for one hold); returns the reservations that moved."""
    reservations = _MOVE_RESERVATIONS.format(where="event_id = :e AND status = 'active'")
    async with engine.begin() as conn:
        moved = await conn.execute(
            text(
                f"""
                WITH moved AS ({reservations}),
                held AS (
                    UPDATE tickets t SET hold_expires_at = moved.expires_at
                    FROM moved WHERE t.reservation_id = moved.id AND t.status = 'reserved'
                )
                SELECT id FROM moved
                """
            ),
            {"e": uuid.UUID(str(event_id))},
        )
        return list(moved.scalars().all())
