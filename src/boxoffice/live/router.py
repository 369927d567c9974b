"""GET /events/{id}/stream: Server-Sent Events with the event's seats as they change."""

import asyncio
import logging
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from boxoffice.config import Settings
from boxoffice.dependencies import AppSettings
from boxoffice.live.feed import MAX_PENDING, Subscription, TicketFeed, TooManyStreams
from boxoffice.problems import PROBLEM_JSON, PROBLEM_SCHEMA_REF, problem, problem_responses

logger = logging.getLogger(__name__)
router = APIRouter(tags=["live"])

# A comment line this often keeps proxies from closing an idle stream.
HEARTBEAT_SECONDS = 15.0
# Streams end after this long; the browser reconnects at once and starts from a snapshot.
# Keeps long-lived connections spread over workers and bounds what a forgotten tab holds.
MAX_STREAM_SECONDS = 600.0
# A client at its cap may try again after this long (its other streams may have ended).
TOO_MANY_STREAMS_RETRY_SECONDS = 5


# One message of the stream, as SSE tools read it.
_SSE_MESSAGE = {
    "type": "object",
    "properties": {
        "event": {"enum": ["snapshot", "tickets"]},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "description": 'snapshot: `{"event_id": "<uuid>", "first": <id>, "runs": '
            '"a199990r8b2"}`; tickets: `{"event_id": "<uuid>", "tickets": [[<id>, '
            '"<status>"], ...], "change": <n>}`',
        },
    },
    "required": ["event", "data"],
}

_TOO_MANY_STREAMS = {
    "description": "This client has MAX_STREAMS_PER_CLIENT streams open (`too-many-requests`); "
    "retry after `Retry-After` seconds.",
    "headers": {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "string"}}},
    "content": {PROBLEM_JSON: {"schema": {"$ref": PROBLEM_SCHEMA_REF}}},
}


@router.get(
    "/events/{event_id}/stream",
    summary="Live seat availability (Server-Sent Events)",
    description="`text/event-stream`. First `event: snapshot` with every ticket's status, then "
    "`event: tickets` with the tickets each committed change touched (hold, confirm, release, "
    "expiry once swept). A snapshot is "
    '`{"event_id": …, "first": <id>, "runs": "a199990r8b2"}`: from ticket id `first` on, in '
    "id order, a status letter (`a` available, `r` reserved, `b` booked, `-` not a ticket of "
    "this event) followed by how many ids in a row have it (no number: one). A change is "
    '`{"event_id": …, "tickets": [[id, status], …], "change": <n>}` (`change` numbers the '
    "changes, increasing). After a reconnect (automatic in "
    "browsers: `retry: 2000`), a burst of changes, or a lost database connection, the stream "
    "sends a snapshot again. A client that stops reading is disconnected. Each server process "
    "takes at most MAX_STREAMS_PER_WORKER streams (503 beyond) and MAX_STREAMS_PER_CLIENT "
    "from one client (429 beyond).",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {"schema": _SSE_MESSAGE}}},
        429: _TOO_MANY_STREAMS,
        **problem_responses(404, 422, 503, descriptions={404: "No such event."}),
    },
)
async def stream(event_id: uuid.UUID, request: Request, settings: AppSettings) -> Response:
    feed: TicketFeed = request.app.state.ticket_feed
    client = request.client.host if request.client is not None else "unknown"
    try:
        # Subscribed before the snapshot is read: a change committed in between is then in
        # the snapshot or queued (or both; replaying it is harmless, statuses are absolute).
        subscription, snapshot = feed.open(event_id, client=client, settings=settings)
    except TooManyStreams as error:
        retry = {"Retry-After": str(TOO_MANY_STREAMS_RETRY_SECONDS)}
        return problem(error.status, error.slug, error.title, error.detail, retry)
    try:
        # Shared with other streams: leaving must not cancel it for them.
        first = await asyncio.shield(snapshot)
    except BaseException:
        feed.unsubscribe(subscription)
        raise
    return EventStream(feed, subscription, first, settings)


class EventStream(Response):
    """The stream itself: sends the changes, and ends it when the client stops reading.

    Not a StreamingResponse: a client that reads nothing leaves the write waiting forever,
    and only a task of our own around it can be ended then.
    """

    media_type = "text/event-stream"

    def __init__(
        self, feed: TicketFeed, subscription: Subscription, first: bytes, settings: Settings
    ) -> None:
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._feed = feed
        self._subscription = subscription
        self._first = first
        self._settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        subscription = self._subscription
        tasks = {
            asyncio.create_task(self._send_all(send)),
            asyncio.create_task(_disconnected(receive)),
            dropped := asyncio.create_task(subscription.dropped.wait()),
        }
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            if dropped in done:
                # The write in progress never completes: the response ends unfinished, and the
                # server closes the connection once what it buffered is gone.
                logger.warning(
                    "dropped a live stream: its client read nothing while %d changes came",
                    MAX_PENDING,
                )
        finally:
            self._feed.unsubscribe(subscription)
            for task in tasks:
                task.cancel()
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                raise outcome

    async def _send_all(self, send: Send) -> None:
        subscription = self._subscription
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        await self._body(send, b"retry: 2000\n\n" + self._first)
        self._first = b""  # shared with other streams; this one is done with it
        loop = asyncio.get_running_loop()
        deadline = loop.time() + MAX_STREAM_SECONDS
        while (left := deadline - loop.time()) > 0:
            try:
                async with asyncio.timeout(min(HEARTBEAT_SECONDS, left)):
                    chunk = await subscription.next()
            except TimeoutError:
                await self._body(send, b": keep-alive\n\n")
                continue
            if chunk is not None:
                await self._body(send, chunk)
                continue
            if subscription.closed:
                break
            try:
                fresh = await asyncio.shield(self._feed.restart(subscription, self._settings))
            except Exception as error:
                # The database is away: end the stream; the browser comes back later.
                logger.warning("stream ended, no snapshot: %s", error.__class__.__name__)
                break
            await self._body(send, fresh)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _body(self, send: Send, chunk: bytes) -> None:
        self._subscription.sending = True
        try:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            self._subscription.sending = False


async def _disconnected(receive: Receive) -> None:
    message: Message = {}
    while message.get("type") != "http.disconnect":
        message = await receive()
