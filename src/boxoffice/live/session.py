"""A background task on a database connection of its own, outside the pool.

The feed's LISTEN and the relay's advisory lock belong to one session for as long as the
worker lives, so they cannot borrow pool connections; when the session drops (a restart, a
terminated backend) the task connects again after a second.
"""

import asyncio
import contextlib
import logging

import asyncpg

from boxoffice.config import asyncpg_dsn

logger = logging.getLogger(__name__)

RECONNECT_SECONDS = 1.0


class BackgroundSession:
    # How the session shows in pg_stat_activity.
    application_name = "boxoffice"

    def __init__(self, database_url: str) -> None:
        self._database_url = asyncpg_dsn(database_url)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run_forever(), name=self.application_name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def serve(self, conn: asyncpg.Connection) -> None:
        """Work on the session until it drops (return or raise)."""
        raise NotImplementedError

    def disconnected(self) -> None:
        """The session is gone (or never came)."""

    async def _run_forever(self) -> None:
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(
                    self._database_url,
                    timeout=10,
                    server_settings={"application_name": self.application_name},
                )
                await self.serve(conn)
                logger.warning("%s: lost the database connection", self.application_name)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
                logger.warning("%s: %s; reconnecting", self.application_name, error)
            finally:
                self.disconnected()
                if conn is not None and not conn.is_closed():
                    await conn.close(timeout=2)
            await asyncio.sleep(RECONNECT_SECONDS)
