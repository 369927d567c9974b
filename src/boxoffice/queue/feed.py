"""Each worker hears the admitter's progress (LISTEN) and wakes its queue streams."""

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from boxoffice.live.session import BackgroundSession
from boxoffice.queue.service import CHANNEL

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Progress:
    """What the admitter last said of one event's queue."""

    admitted_total: int
    through: tuple[int, int] | None  # (lane, rank) of the last place admitted
    drawn: bool
    # Counts reconnections of the feed: a stream that saw another one may have missed news.
    generation: int


class QueueFeed(BackgroundSession):
    application_name = "boxoffice-queue-feed"

    def __init__(self, database_url: str) -> None:
        super().__init__(database_url)
        self._latest: dict[uuid.UUID, Progress] = {}
        self._signals: dict[uuid.UUID, asyncio.Event] = {}
        self.generation = 0

    def signal(self, event_id: uuid.UUID) -> asyncio.Event:
        """Set at the event's next news (each waiter takes it before it looks at `latest`)."""
        return self._signals.setdefault(event_id, asyncio.Event())

    def latest(self, event_id: uuid.UUID) -> Progress | None:
        return self._latest.get(event_id)

    async def serve(self, conn: asyncpg.Connection) -> None:
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        await conn.add_listener(CHANNEL, self._on_notification)
        # What was said while we were not listening was never heard: everyone looks again.
        self.generation += 1
        self._wake_all()
        await lost.wait()

    def _on_notification(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self.hear(payload)

    def hear(self, payload: str) -> None:
        try:
            news = json.loads(payload)
            event_id = uuid.UUID(news["event_id"])
            lane, rank = news["through"]
            progress = Progress(
                admitted_total=int(news["admitted_total"]),
                through=(int(lane), int(rank)) if rank is not None else None,
                drawn=bool(news["drawn"]),
                generation=self.generation,
            )
        except (ValueError, KeyError, TypeError):
            logger.warning("ignored a malformed %s notification", CHANNEL)
            return
        self._latest[event_id] = progress
        signal = self._signals.pop(event_id, None)
        if signal is not None:
            signal.set()

    def _wake_all(self) -> None:
        signals, self._signals = self._signals, {}
        for signal in signals.values():
            signal.set()
