"""The admitter: draws pre-queues, admits places and offers returned seats to the waiting
lists, one admitter per database at a time.

Every worker runs one; the one holding a session advisory lock works while the others wait
to take over (as the live feed's relay does). If its worker dies, PostgreSQL ends its
session and with it the lock, and another worker's admitter takes over within a second.
Each tick of each event is one transaction (boxoffice.queue.service.admit_once), so a tick
cut short admits nobody and the next admitter starts from the same state.
"""

import asyncio
import logging
import os

import asyncpg

from boxoffice import metrics
from boxoffice.config import Settings
from boxoffice.credentials import server_secret
from boxoffice.db import Database
from boxoffice.errors import BoxofficeError
from boxoffice.live.session import RECONNECT_SECONDS, BackgroundSession
from boxoffice.queue.service import ADMITTER_LOCK, admit_once, events_with_waiting_places
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


async def _publish_gauges(conn: asyncpg.Connection) -> None:
    row = await conn.fetchrow(_GAUGES)
    assert row is not None
    metrics.QUEUE_WAITING.set(row["waiting"])
    metrics.QUEUE_ACTIVE_PASSES.set(row["active_passes"])
    metrics.WAITING_LIST_WAITING.set(row["waiting_list"])


class Admitter(BackgroundSession):
    application_name = "boxoffice-admitter"

    def __init__(self, settings: Settings, db: Database) -> None:
        assert settings.database_url is not None
        super().__init__(settings.database_url)
        # The waiting lists' offers are holds, made through the reservation service's pool.
        self._db = db
        # Which worker admits, as pg_stat_activity shows it (a drill kills that one).
        self.application_name = f"boxoffice-admitter/{os.getpid()}"
        self._settings = settings
        # Set while this worker's admitter holds the lock (the tests kill the one that does).
        self.leading = asyncio.Event()

    async def serve(self, conn: asyncpg.Connection) -> None:
        # Polling: the lock's holder is another process, there is nothing to await.
        while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", ADMITTER_LOCK):  # noqa: ASYNC110
            await asyncio.sleep(RECONNECT_SECONDS)
        self.leading.set()
        logger.info("admitter: this worker admits from the waiting rooms")
        interval = self._settings.queue_admit_interval_seconds
        ticks = 0
        while True:
            if ticks % GAUGE_EVERY_TICKS == 0:
                await _publish_gauges(conn)
            ticks += 1
            for event_id in await events_with_waiting_places(conn):
                tick = await admit_once(
                    conn,
                    event_id=event_id,
                    default_pass_seconds=self._settings.queue_pass_seconds,
                    settle_seconds=self._settings.queue_settle_seconds,
                )
                metrics.QUEUE_ADMITTED.inc(tick.admitted)
            try:
                offers = await offer_returned_seats(self._db, secret=server_secret(self._settings))
            except (BoxofficeError, asyncpg.PostgresError, OSError) as error:
                # The pool is busy or the database away: offer on the next tick.
                logger.warning("admitter: no offers this tick: %s", error)
            else:
                metrics.WAITING_LIST_OFFERS.inc(offers)
            await asyncio.sleep(interval)

    def disconnected(self) -> None:
        self.leading.clear()
