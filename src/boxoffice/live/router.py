"""GET /events/{id}/stream: Server-Sent Events with the event's seats as they change."""

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from sqlalchemy.ext.asyncio import AsyncEngine

from boxoffice.dependencies import Engine
from boxoffice.errors import problem_responses
from boxoffice.live import service
from boxoffice.live.feed import Subscription, TicketFeed

logger = logging.getLogger(__name__)
router = APIRouter(tags=["live"])

# A comment line this often keeps proxies from closing an idle stream.
HEARTBEAT_SECONDS = 15.0
# Streams end after this long; the browser reconnects at once and starts from a snapshot.
# Keeps long-lived connections spread over workers and bounds what a forgotten tab holds.
MAX_STREAM_SECONDS = 600.0


# One message of the stream, as SSE tools read it.
_SSE_MESSAGE = {
    "type": "object",
    "properties": {
        "event": {"enum": ["snapshot", "tickets"]},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "description": '`{"event_id": "<uuid>", "tickets": [[<id>, "<status>"], ...]}`',
        },
    },
    "required": ["event", "data"],
}


def _message(kind: str, data: str) -> str:
    return f"event: {kind}\ndata: {data}\n\n"


@router.get(
    "/events/{event_id}/stream",
    summary="Live seat availability (Server-Sent Events)",
    description="`text/event-stream`. First `event: snapshot` with every ticket, then `event: "
    "tickets` with the tickets each committed change touched (hold, confirm, release, expiry "
    'once swept). Both carry `{"event_id": …, "tickets": [[id, status], …]}`. After a '
    "reconnect (automatic in browsers: `retry: 2000`) the stream starts with a snapshot again.",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {"schema": _SSE_MESSAGE}}},
        **problem_responses(404, 422, 503, descriptions={404: "No such event."}),
    },
)
async def stream(event_id: uuid.UUID, request: Request, engine: Engine) -> StreamingResponse:
    feed: TicketFeed = request.app.state.ticket_feed
    # Subscribe before reading the snapshot: a change committed in between is then both in
    # the snapshot and queued, and replaying it is harmless (statuses are absolute).
    subscription = feed.subscribe(event_id)
    try:
        first = await service.snapshot(engine, event_id)
    except BaseException:
        feed.unsubscribe(subscription)
        raise
    return StreamingResponse(
        _messages(feed, subscription, engine, first),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _messages(
    feed: TicketFeed, subscription: Subscription, engine: AsyncEngine, first: str
) -> AsyncIterator[str]:
    # No asyncio.timeout around a `yield`: the cancellation could land in the server's code.
    deadline = asyncio.get_running_loop().time() + MAX_STREAM_SECONDS
    try:
        yield "retry: 2000\n\n"
        yield _message("snapshot", first)
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            try:
                async with asyncio.timeout(min(HEARTBEAT_SECONDS, left)):
                    change = await subscription.next()
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            if change is not None:
                yield _message("tickets", change)
                continue
            if subscription.closed:
                return
            try:
                fresh = await service.snapshot(engine, subscription.event_id)
            except Exception as error:
                # The database is away: end the stream; the browser comes back later.
                logger.warning("stream ended, no snapshot: %s", error.__class__.__name__)
                return
            yield _message("snapshot", fresh)
    finally:
        feed.unsubscribe(subscription)
