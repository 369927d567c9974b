"""The original demo's re-seed: its events' tickets back on sale as if never sold."""

import uuid

import asyncpg


async def reset_to_unsold(conn: asyncpg.Connection, event_ids: list[uuid.UUID]) -> int:
    """Put every ticket of these events back on sale as if none had ever been sold.

    For the original demo's data only (`boxoffice seed --demo-data`): its clients expect to
    find its tickets free after a re-seed. Their holds, bookings and audit rows are deleted,
    not ended, so the events look freshly seeded; returns how many tickets were claimed.
    Runs in the caller's transaction. Lock order as confirm and release: the reservation rows
    first, then the tickets in id order, so a buyer's confirm or release in flight cannot
    deadlock with it; waiting a few seconds for them is fine here, so the short buyer-facing
    lock_timeout is lifted for this transaction.
    """
    await conn.execute("SET LOCAL lock_timeout = '5s'")
    await conn.execute(
        "SELECT id FROM reservations WHERE event_id = ANY($1::uuid[]) ORDER BY id FOR UPDATE",
        event_ids,
    )
    await conn.execute(
        "SELECT id FROM tickets WHERE event_id = ANY($1::uuid[]) ORDER BY id FOR UPDATE",
        event_ids,
    )
    claimed = await conn.fetch(
        """
        UPDATE tickets
        SET status = 'available', reservation_id = NULL, hold_expires_at = NULL,
            booking_id = NULL
        WHERE event_id = ANY($1::uuid[]) AND status <> 'available'
        RETURNING id
        """,
        event_ids,
    )
    # Children first: the foreign keys point from these tables to reservations.
    await conn.execute("DELETE FROM ticket_audit WHERE event_id = ANY($1::uuid[])", event_ids)
    await conn.execute("DELETE FROM bookings WHERE event_id = ANY($1::uuid[])", event_ids)
    await conn.execute(
        "DELETE FROM reservation_tickets WHERE event_id = ANY($1::uuid[])", event_ids
    )
    await conn.execute("DELETE FROM reservations WHERE event_id = ANY($1::uuid[])", event_ids)
    return len(claimed)
