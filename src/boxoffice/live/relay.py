"""The relay: sends the recorded ticket changes with NOTIFY, then forgets them.

Buyers' transactions only insert into `ticket_changes` (migration 0005 explains why they do
not NOTIFY themselves). One relay per database sends those rows: every worker runs one, and
the one holding a session advisory lock works while the others wait to take over if it dies.
A row is deleted in the same transaction that notifies it, so a change is announced once:
if the relay dies mid-batch, the batch rolls back and the next relay sends it. The leading
relay also runs the waiting room's admitter (boxoffice.queue.admitter) on its session.
"""

import asyncio
import os
from collections.abc import Awaitable, Callable

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
    """`leader_work`, every `every` seconds: what else one worker at a time does on this
    session while it holds the lock (the waiting room's admitter), so that job costs no
    connection of its own in every worker."""

    def __init__(
        self,
        database_url: str,
        *,
        leader_work: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
        every: float = 1.0,
    ) -> None:
        super().__init__(database_url)
        # Which worker leads, as pg_stat_activity shows it (a drill kills that one).
        self.application_name = f"boxoffice-relay/{os.getpid()}"
        self._leader_work = leader_work
        self._every = every

    async def serve(self, conn: asyncpg.Connection) -> None:
        # Another worker relays while it holds the lock; take over when it is gone. (Polling:
        # the lock's holder is another process, there is nothing to await.) Closing the
        # session, as the worker does on any error or exit, releases the lock.
        while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK):  # noqa: ASYNC110
            await asyncio.sleep(RECONNECT_SECONDS)
        loop = asyncio.get_running_loop()
        work_due = loop.time()
        while True:
            relayed = await relay_once(conn)
            if self._leader_work is not None and loop.time() >= work_due:
                await self._leader_work(conn)
                work_due = loop.time() + self._every
            if relayed < BATCH:
                await asyncio.sleep(POLL_SECONDS)


async def relay_once(conn: asyncpg.Connection) -> int:
    """Notify and delete up to BATCH recorded changes, in one transaction; how many."""
    async with conn.transaction():
        payloads: list[str] = await conn.fetchval(_TAKE, BATCH)
        if payloads:
            await conn.fetchval(_NOTIFY, payloads)
    return len(payloads)
