"""One LISTEN connection per worker, fanned out to the streams open on that worker.

Every committed ticket change is announced on channel `ticket_changes` (recorded by the
trigger of migration 0005, sent by boxoffice.live.relay). Each worker listens on a connection
of its own (outside the pool: it is held for the worker's life) and hands each payload to the
subscribers of its event, framed once as an SSE message that every stream sends as it is.

Nothing may be missed silently: when the listening connection drops, notifications sent
meanwhile are lost, so every subscriber is told to resynchronise (send a fresh snapshot) once
the connection is back, and no snapshot read before is handed out again. A burst of more
changes than a stream may queue is replaced by a fresh snapshot too. A stream whose client
stopped reading (its last write still waits for room while the queue fills) is dropped
instead: the browser reconnects and starts from a snapshot.

The worker's streams are capped, per worker and per client, when they open.
"""

import asyncio
import json
import logging
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from typing import Any

import asyncpg

from boxoffice import metrics
from boxoffice.config import Settings
from boxoffice.db import Database
from boxoffice.errors import BoxofficeError, ServiceUnavailable
from boxoffice.live import service
from boxoffice.live.session import BackgroundSession

logger = logging.getLogger(__name__)

CHANNEL = "ticket_changes"
# Changes queued for one stream. A burst beyond them becomes a fresh snapshot; a client that
# does not read while they pile up is dropped.
MAX_PENDING = 256


class TooManyStreams(BoxofficeError):
    """This client has MAX_STREAMS_PER_CLIENT streams open already."""

    status = 429
    slug = "too-many-requests"
    title = "Too many requests"


class Subscription:
    """The changes of one event, for one stream. `None` means: send a fresh snapshot."""

    def __init__(self, event_id: uuid.UUID, client: str) -> None:
        self.event_id = event_id
        self.client = client
        self._pending: deque[bytes | None] = deque()
        self._ready = asyncio.Event()
        # Set when the worker is stopping: the stream ends, the browser reconnects elsewhere.
        self.closed = False
        # True while the stream waits for its client to take what it wrote.
        self.sending = False
        # Set when the client stopped reading: the stream must end now.
        self.dropped = asyncio.Event()

    def deliver(self, message: bytes) -> None:
        if self.dropped.is_set():
            return
        if len(self._pending) < MAX_PENDING:
            self._pending.append(message)
            self._ready.set()
        elif self.sending:
            self._pending.clear()
            self.dropped.set()
        else:
            self.resync()

    def resync(self) -> None:
        # What is queued is superseded by the snapshot the stream will read.
        self._pending.clear()
        self._pending.append(None)
        self._ready.set()

    def restart(self, replay: list[bytes]) -> None:
        """From now on: these changes, then what the feed hears (see boxoffice.live.service)."""
        self._pending.clear()
        self._pending.extend(replay)
        if replay:
            self._ready.set()

    def close(self) -> None:
        self.closed = True
        self.resync()  # wakes the stream

    async def next(self) -> bytes | None:
        """The changes queued so far, as one chunk to send; or None: send a fresh snapshot."""
        while not self._pending:
            self._ready.clear()
            await self._ready.wait()
        if self._pending[0] is None:
            self._pending.popleft()
            return None
        chunk = []
        while self._pending and (message := self._pending[0]) is not None:
            chunk.append(message)
            self._pending.popleft()
        return b"".join(chunk)


class TicketFeed(BackgroundSession):
    """Listens while the worker lives; after a reconnect, every stream starts over."""

    application_name = "boxoffice-feed"

    def __init__(
        self, database_url: str, *, snapshots: service.SharedSnapshots | None = None
    ) -> None:
        """`snapshots`: where streams get their snapshots; by default, read on a pool of
        their own (STREAM_SNAPSHOT_CONNECTIONS), created with the first stream."""
        super().__init__(database_url)
        self._subscribers: dict[uuid.UUID, set[Subscription]] = defaultdict(set)
        self._per_client: Counter[str] = Counter()
        self._open = 0
        self._snapshots = snapshots
        self._snapshot_db: Database | None = None
        self.connected = asyncio.Event()
        # Other channels heard on this same session (the waiting room's), so they cost no
        # connection of their own: channel -> (what hears a payload, what hears a reconnect).
        self._also: dict[str, tuple[Callable[[str], None], Callable[[], None]]] = {}

    def listen_also(
        self, channel: str, hear: Callable[[str], None], reconnected: Callable[[], None]
    ) -> None:
        """Hand `channel`'s payloads to `hear` too; `reconnected` after each (re)connection,
        since what was sent while nobody listened was never heard. Call before `start`."""
        self._also[channel] = (hear, reconnected)

    def open(
        self, event_id: uuid.UUID, *, client: str, settings: Settings
    ) -> tuple[Subscription, "asyncio.Task[bytes]"]:
        """A new stream's subscription, and the snapshot read it starts from.

        One step of the event loop: subscribing and joining a shared snapshot read cannot
        be separated by a notification (boxoffice.live.service says why that matters).
        """
        if self._per_client[client] >= settings.max_streams_per_client:
            raise TooManyStreams(
                f"this client has {settings.max_streams_per_client} live streams open already;"
                " close one first"
            )
        if self._open >= settings.max_streams_per_worker:
            raise ServiceUnavailable("this server has as many live streams open as it takes")
        subscription = Subscription(event_id, client)
        self._subscribers[event_id].add(subscription)
        self._per_client[client] += 1
        self._open += 1
        metrics.STREAMS_OPEN.inc()
        return subscription, self._restart(subscription, settings)

    def restart(self, subscription: Subscription, settings: Settings) -> "asyncio.Task[bytes]":
        """A fresh snapshot for a stream that must start over, and its changes from then on."""
        return self._restart(subscription, settings)

    def _restart(self, subscription: Subscription, settings: Settings) -> "asyncio.Task[bytes]":
        snapshot, replay = self._shared_snapshots(settings).join(subscription.event_id)
        subscription.restart(replay)
        return snapshot

    def unsubscribe(self, subscription: Subscription) -> None:
        subscribers = self._subscribers.get(subscription.event_id)
        if subscribers is not None and subscription in subscribers:
            subscribers.discard(subscription)
            self._open -= 1
            self._per_client[subscription.client] -= 1
            if not self._per_client[subscription.client]:
                del self._per_client[subscription.client]
            metrics.STREAMS_OPEN.dec()
            if not subscribers:
                del self._subscribers[subscription.event_id]

    def _shared_snapshots(self, settings: Settings) -> service.SharedSnapshots:
        if self._snapshots is None:
            # Its own small pool: a storm of streams waits for these, never for the buyers'.
            db = Database(settings, size=settings.stream_snapshot_connections)
            self._snapshot_db = db

            async def read(event_id: uuid.UUID) -> bytes:
                return await service.read_snapshot(db, event_id)

            self._snapshots = service.SharedSnapshots(read)
        return self._snapshots

    async def stop(self) -> None:
        await super().stop()
        if self._snapshots is not None:
            await self._snapshots.close()
        if self._snapshot_db is not None:
            await self._snapshot_db.close()

    async def serve(self, conn: asyncpg.Connection) -> None:
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        await conn.add_listener(CHANNEL, self._on_notification)
        for channel, (hear, reconnected) in self._also.items():
            await conn.add_listener(
                channel, lambda _conn, _pid, _channel, payload, hear=hear: hear(payload)
            )
            reconnected()
        # Changes made while we were not listening were never heard: start everyone over.
        self._resync_all()
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
        self.hear(payload)

    def hear(self, payload: str) -> None:
        """A notification of channel CHANNEL: hand it to its event's streams."""
        try:
            event_id = uuid.UUID(json.loads(payload)["event_id"])
        except (ValueError, KeyError, TypeError):
            logger.warning("ignored a malformed %s notification", CHANNEL)
            return
        message = service.sse_message("tickets", payload)
        if self._snapshots is not None:
            self._snapshots.heard(event_id, message)
        for subscription in self._subscribers.get(event_id, ()):
            subscription.deliver(message)

    def _resync_all(self) -> None:
        if self._snapshots is not None:
            self._snapshots.forget_all()
        for subscribers in self._subscribers.values():
            for subscription in subscribers:
                subscription.resync()
