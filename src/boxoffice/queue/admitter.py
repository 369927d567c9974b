"""The admitter: draws pre-queues, admits places and offers returned seats to the waiting
lists, one admitter per database at a time.

It runs in the live feed's relay session (boxoffice.live.relay): every worker has one, and
the one holding the relay's session advisory lock relays and admits, while the others wait
to take over. A worker costs no database connection more for it. If the leading worker dies,
PostgreSQL ends its session and with it the lock, and another worker takes over within a
second. Each tick of each event is one transaction (boxoffice.queue.service.admit_once), so
a tick cut short admits nobody and the next leader starts from the same state.
"""

import logging

import asyncpg

from boxoffice import metrics
from boxoffice.config import Settings
from boxoffice.credentials import server_secret
from boxoffice.db import Database
from boxoffice.errors import BoxofficeError
from boxoffice.queue.service import admit_once, events_with_waiting_places
from boxoffice.waitlist.service import offer_returned_seats

logger = logging.getLogger(__name__)

# The gauges count whole tables: every so many ticks is often enough for a dashboard.
GAUGE_EVERY_TICKS = 10
_GAUGES = """
SELECT (SELECT count(*) FROM queue_entries WHERE status = 'waiting') AS waiting,
       (SELECT count(*) FROM queue_entries
        WHERE status = 'admitted' AND pass_expires_at > now()) AS active_passes,
       (SELECT count(*) FROM waiting_list WHERE status = 'waiting') AS waiting_list
"""


class Admitter:
    """One tick at a time, on the leading relay's connection (`tick`)."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self._settings = settings
        # The waiting lists' offers are holds, made through the reservation service's pool.
        self._db = db
        self._ticks = 0
        self.interval = settings.queue_admit_interval_seconds

    async def tick(self, conn: asyncpg.Connection) -> None:
        if self._ticks % GAUGE_EVERY_TICKS == 0:
            await _publish_gauges(conn)
        self._ticks += 1
        for event_id in await events_with_waiting_places(conn):
            admitted = await admit_once(
                conn,
                event_id=event_id,
                default_pass_seconds=self._settings.queue_pass_seconds,
                settle_seconds=self._settings.queue_settle_seconds,
            )
            metrics.QUEUE_ADMITTED.inc(admitted.admitted)
        try:
            offers = await offer_returned_seats(self._db, secret=server_secret(self._settings))
        except (BoxofficeError, asyncpg.PostgresError, OSError) as error:
            # The pool is busy or the database away: offer on the next tick.
            logger.warning("admitter: no offers this tick: %s", error)
        else:
            metrics.WAITING_LIST_OFFERS.inc(offers)


async def _publish_gauges(conn: asyncpg.Connection) -> None:
    row = await conn.fetchrow(_GAUGES)
    assert row is not None
    metrics.QUEUE_WAITING.set(row["waiting"])
    metrics.QUEUE_ACTIVE_PASSES.set(row["active_passes"])
    metrics.WAITING_LIST_WAITING.set(row["waiting_list"])
