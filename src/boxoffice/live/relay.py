"""The relay: sends the recorded ticket changes with NOTIFY, then forgets them.

Buyers' transactions only insert into `ticket_changes` (migration 0005 explains why they do
not NOTIFY themselves). One relay per database sends those rows: every worker runs one, and
the one holding a session advisory lock works while the others wait to take over if it dies.
A row is deleted in the same transaction that notifies it, so a change is announced once:
if the relay dies mid-batch, the batch rolls back and the next relay sends it.
"""

import asyncio

import asyncpg

from boxoffice.live.feed import CHANNEL
from boxoffice.live.session import RECONNECT_SECONDS, BackgroundSession

# pg_try_advisory_lock key of the relay ("bxrelay" in ASCII); per database.
RELAY_LOCK = 0x62787265_6C6179
# How often the relay looks for new rows when it found none: the streams' added latency.
POLL_SECONDS = 0.05
BATCH = 500

# Oldest first: two changes of one seat are ordered by its row lock, so the later one always
# has the higher id and is committed after the earlier. unnest keeps the array's order, so
# the notifications are queued in id order.
# Each payload gets its row's id as `"change"`: PostgreSQL delivers identical payloads sent
# on one channel in one transaction only once, and a batch often repeats one (a hold of the
# first 100 free tickets, released, held again: the second hold's payload is the first's), so
# without it a stream would miss changes. The trigger's payload is a json_build_object: it
# ends with its closing brace.
_TAKE = """
    WITH taken AS (
        DELETE FROM ticket_changes
        WHERE id IN (SELECT id FROM ticket_changes ORDER BY id LIMIT $1)
        RETURNING id, payload
    )
    SELECT coalesce(
        array_agg(left(payload, -1) || ', "change" : ' || id || '}' ORDER BY id), '{}'
    )
    FROM taken
"""
_NOTIFY = f"SELECT count(pg_notify('{CHANNEL}', payload)) FROM unnest($1::text[]) AS payload"


class ChangeRelay(BackgroundSession):
    application_name = "boxoffice-relay"

    async def serve(self, conn: asyncpg.Connection) -> None:
        # Another worker relays while it holds the lock; take over when it is gone. (Polling:
        # the lock's holder is another process, there is nothing to await.) Closing the
        # session, as the worker does on any error or exit, releases the lock.
        while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK):  # noqa: ASYNC110
            await asyncio.sleep(RECONNECT_SECONDS)
        while True:
            if await relay_once(conn) < BATCH:
                await asyncio.sleep(POLL_SECONDS)


async def relay_once(conn: asyncpg.Connection) -> int:
    """Notify and delete up to BATCH recorded changes, in one transaction; how many."""
    async with conn.transaction():
        payloads: list[str] = await conn.fetchval(_TAKE, BATCH)
        if payloads:
            await conn.fetchval(_NOTIFY, payloads)
    return len(payloads)
