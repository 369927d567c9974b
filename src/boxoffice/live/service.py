"""The snapshot a stream starts from: every ticket of an event with its effective status.

Compact: PostgreSQL encodes the statuses of the event's tickets, in id order, as runs,
`{"event_id": "<uuid>", "first": <id>, "runs": "a199990r8b2"}`: starting at ticket `first`, a
status letter (`a` available, `r` reserved, `b` booked, `-` ids that are not tickets of this
event) and how many in a row (no number: one). A 200,000-ticket event on sale is a few bytes
to a few kilobytes instead of 4.5 MB of `[id, status]` pairs; a checkerboard, the worst case,
is one byte per ticket.

Shared: the streams of one event that open while a snapshot is being read, or within
SNAPSHOT_REUSE_SECONDS after, get that one read (single flight). That is correct only with
the changes heard since the read began: a change committed after the read took its MVCC
snapshot is not in it. So each shared read keeps the changes the feed hears for its event
from the moment it is started, before its query is even sent (so before its MVCC snapshot),
and a stream joining it gets them replayed after the snapshot, then everything the feed
hears after it joined. Joining (copying those changes) and subscribing happen in one step of
the event loop, so no notification falls between them. Replaying a change the snapshot
already has is harmless: statuses are absolute and arrive in commit order per seat.
"""

import asyncio
import contextlib
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from boxoffice.db import Database
from boxoffice.errors import EventNotFound

# How long a finished snapshot is handed to streams that open after it: the longer, the fewer
# reads under a reconnect storm, and the more changes each new stream replays.
SNAPSHOT_REUSE_SECONDS = 1.0
# A shared snapshot that heard more changes than this is read afresh for the next stream (it
# would replay more than a new read costs).
MAX_REPLAYED_CHANGES = 128

_RUN = re.compile(r"([a-z-])(\d*)")
_RUN_STATUS = {"a": "available", "r": "reserved", "b": "booked"}


def snapshot_statuses(snapshot: dict[str, Any]) -> dict[int, str]:
    """A snapshot read back, for clients in Python (the drills, the tests): every ticket's
    status from its runs, from id `first` on, a letter and how many ids in a row have it
    (`-`: ids that are not tickets of the event)."""
    statuses: dict[int, str] = {}
    ticket_id = snapshot["first"]
    for letter, digits in _RUN.findall(snapshot["runs"]):
        count = int(digits) if digits else 1
        if letter != "-":
            statuses.update(dict.fromkeys(range(ticket_id, ticket_id + count), _RUN_STATUS[letter]))
        ticket_id += count
    return statuses


# Runs of consecutive ids with one status: along a run, id - row_number() (numbered per
# status, in id order) is constant. Gaps between runs are ids of other events' tickets.
_SNAPSHOT = """
WITH ticket AS (
    SELECT t.id, left(ticket_effective_status(t.status, t.hold_expires_at)::text, 1) AS code
    FROM tickets t WHERE t.event_id = $1
), island AS (
    SELECT code, min(id) AS first, count(*) AS n
    FROM (SELECT id, code, id - row_number() OVER (PARTITION BY code ORDER BY id) AS run
          FROM ticket) numbered
    GROUP BY code, run
), run AS (
    SELECT first, code, n,
           first - coalesce(lag(first + n) OVER (ORDER BY first), first) AS gap
    FROM island
)
SELECT json_build_object(
           'event_id', e.id,
           'first', (SELECT min(first) FROM run),
           'runs', (SELECT coalesce(string_agg(
                        CASE WHEN gap = 0 THEN '' WHEN gap = 1 THEN '-' ELSE '-' || gap END
                        || code || CASE WHEN n = 1 THEN '' ELSE n::text END,
                        '' ORDER BY first), '')
                    FROM run)
       )::text
FROM events e WHERE e.id = $1
"""


def sse_message(kind: str, data: str) -> bytes:
    """One Server-Sent Events message, as sent."""
    return f"event: {kind}\ndata: {data}\n\n".encode()


async def read_snapshot(db: Database, event_id: uuid.UUID) -> bytes:
    """The event's snapshot, framed as an SSE `snapshot` message."""
    payload = await db.fetchval(_SNAPSHOT, event_id)
    if payload is None:
        raise EventNotFound(f"no event {event_id}")
    return sse_message("snapshot", str(payload))


@dataclass(eq=False)
class _SharedRead:
    """One read of an event's snapshot, and every change heard since it was started."""

    changes: list[bytes] = field(default_factory=list)
    # None while the read is in flight; then until when it is handed out.
    fresh_until: float | None = None
    task: "asyncio.Task[bytes] | None" = None


class SharedSnapshots:
    """At most one snapshot read in flight per event; a finished one reused for a second."""

    def __init__(
        self,
        read: Callable[[uuid.UUID], Awaitable[bytes]],
        *,
        reuse_seconds: float = SNAPSHOT_REUSE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._reuse_seconds = reuse_seconds
        self._clock = clock
        self._reads: dict[uuid.UUID, _SharedRead] = {}

    def join(self, event_id: uuid.UUID) -> tuple["asyncio.Task[bytes]", list[bytes]]:
        """The read to wait for, and the changes heard since it began (replay them after it).

        Not a coroutine on purpose: the caller subscribes to the feed in the same step, so
        the changes returned here and the ones the subscription hears leave no gap.
        """
        shared = self._reads.get(event_id)
        stale = shared is not None and self._clock() >= (shared.fresh_until or float("inf"))
        if shared is None or stale:
            shared = _SharedRead()
            self._reads[event_id] = shared
            shared.task = asyncio.create_task(self._run(event_id, shared))
            # Retrieved here too, so a read whose streams all left logs no "never retrieved".
            shared.task.add_done_callback(_consume)
        assert shared.task is not None
        return shared.task, list(shared.changes)

    def heard(self, event_id: uuid.UUID, message: bytes) -> None:
        """A change of the event, as the feed hands it to the streams."""
        shared = self._reads.get(event_id)
        if shared is None:
            return
        shared.changes.append(message)
        if len(shared.changes) > MAX_REPLAYED_CHANGES:
            self._retire(event_id, shared)

    def forget_all(self) -> None:
        """No current read may be handed out any more (the feed missed changes)."""
        self._reads.clear()

    async def close(self) -> None:
        reads, self._reads = list(self._reads.values()), {}
        for shared in reads:
            if shared.task is not None:
                shared.task.cancel()
                with contextlib.suppress(BaseException):
                    await shared.task

    async def _run(self, event_id: uuid.UUID, shared: _SharedRead) -> bytes:
        try:
            snapshot = await self._read(event_id)
        except BaseException:
            self._retire(event_id, shared)  # a failure is not shared with later streams
            raise
        shared.fresh_until = self._clock() + self._reuse_seconds
        # Let it go when it is stale even if no stream opens: its changes are memory.
        asyncio.get_running_loop().call_later(self._reuse_seconds, self._retire, event_id, shared)
        return snapshot

    def _retire(self, event_id: uuid.UUID, shared: _SharedRead) -> None:
        if self._reads.get(event_id) is shared:
            del self._reads[event_id]


def _consume(task: "asyncio.Task[bytes]") -> None:
    if not task.cancelled():
        task.exception()
