"""Each worker hears the admitter's progress and wakes its queue streams.

The notifications arrive on the live feed's session (`TicketFeed.listen_also`): a worker
listens on one connection for both."""

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass

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


class QueueFeed:
    def __init__(self) -> None:
        self._latest: dict[uuid.UUID, Progress] = {}
        self._signals: dict[uuid.UUID, asyncio.Event] = {}
        self.generation = 0

    def signal(self, event_id: uuid.UUID) -> asyncio.Event:
        """Set at the event's next news (each waiter takes it before it looks at `latest`)."""
        return self._signals.setdefault(event_id, asyncio.Event())

    def latest(self, event_id: uuid.UUID) -> Progress | None:
        return self._latest.get(event_id)

    def reconnected(self) -> None:
        """What was said while nobody listened was never heard: everyone looks again."""
        self.generation += 1
        self._wake_all()

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
