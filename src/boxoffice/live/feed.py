"""One LISTEN connection per worker, fanned out to the streams open on that worker.

Every committed ticket change is announced on channel `ticket_changes` (recorded by the
trigger of migration 0005, sent by boxoffice.live.relay). Each worker listens on a connection
of its own (outside the pool: it is held for the worker's life) and hands each payload to the
subscribers of its event.

Nothing may be missed silently: when the listening connection drops, notifications sent
meanwhile are lost, so every subscriber is told to resynchronise (send a fresh snapshot) once
the connection is back; a subscriber too slow to keep up is told the same instead of being
allowed to grow without bound.
"""

import asyncio
import json
import logging
import uuid
from collections import defaultdict
from typing import Any

import asyncpg

from boxoffice import metrics
from boxoffice.live.session import BackgroundSession

logger = logging.getLogger(__name__)

CHANNEL = "ticket_changes"
# Changes queued for one stream before it is told to start again from a snapshot.
MAX_PENDING = 1000


class Subscription:
    """The changes of one event, for one stream. `None` means: send a fresh snapshot."""

    def __init__(self, event_id: uuid.UUID) -> None:
        self.event_id = event_id
        self._queue: asyncio.Queue[str | None] = asyncio.Queue(MAX_PENDING)
        # Set when the worker is stopping: the stream ends, the browser reconnects elsewhere.
        self.closed = False

    def deliver(self, payload: str) -> None:
        try:
            self._queue.put_nowait(payload)
        except asyncio.QueueFull:
            self.resync()

    def resync(self) -> None:
        # What is queued is superseded by the snapshot the stream will read.
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(None)

    def close(self) -> None:
        self.closed = True
        self.resync()  # wakes the stream

    async def next(self) -> str | None:
        return await self._queue.get()


class TicketFeed(BackgroundSession):
    """Listens while the worker lives; after a reconnect, every stream starts over."""

    application_name = "boxoffice-feed"

    def __init__(self, database_url: str) -> None:
        super().__init__(database_url)
        self._subscribers: dict[uuid.UUID, set[Subscription]] = defaultdict(set)
        self._listened = False
        self.connected = asyncio.Event()

    def subscribe(self, event_id: uuid.UUID) -> Subscription:
        subscription = Subscription(event_id)
        self._subscribers[event_id].add(subscription)
        metrics.STREAMS_OPEN.inc()
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        subscribers = self._subscribers.get(subscription.event_id)
        if subscribers is not None and subscription in subscribers:
            subscribers.discard(subscription)
            metrics.STREAMS_OPEN.dec()
            if not subscribers:
                del self._subscribers[subscription.event_id]

    async def serve(self, conn: asyncpg.Connection) -> None:
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        await conn.add_listener(CHANNEL, self._on_notification)
        if self._listened:
            # Changes made while we were away were never heard: start everyone over.
            self._resync_all()
        self._listened = True
        self.connected.set()
        metrics.FEED_CONNECTED.set(1)
        await lost.wait()

    def disconnected(self) -> None:
        self.connected.clear()
        metrics.FEED_CONNECTED.set(0)

    def close_streams(self) -> None:
        """End every stream now (the worker is stopping)."""
        for subscribers in self._subscribers.values():
            for subscription in subscribers:
                subscription.close()

    def _on_notification(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            event_id = uuid.UUID(json.loads(payload)["event_id"])
        except (ValueError, KeyError, TypeError):
            logger.warning("ignored a malformed %s notification", CHANNEL)
            return
        for subscription in self._subscribers.get(event_id, ()):
            subscription.deliver(payload)

    def _resync_all(self) -> None:
        for subscribers in self._subscribers.values():
            for subscription in subscribers:
                subscription.resync()
