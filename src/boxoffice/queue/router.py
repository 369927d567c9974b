"""The waiting room's endpoints: join, look, leave, follow live; the organiser's counts."""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse

from boxoffice import metrics
from boxoffice.credentials import server_secret
from boxoffice.db import Database
from boxoffice.dependencies import Db, HolderToken, require_admin
from boxoffice.problems import problem_responses
from boxoffice.queue import service
from boxoffice.queue.feed import QueueFeed
from boxoffice.queue.schemas import QueueJoin, QueueJoined, QueuePlaceOut, QueueStatsOut
from boxoffice.queue.service import Place, QueuePlaceNotFound, place_of_token, place_token
from boxoffice.ratelimit import queue_rate_limit

router = APIRouter(tags=["waiting room"])

# A queue stream ends after this long; the browser reconnects and counts again.
MAX_STREAM_SECONDS = 600.0
# Places that are over: the stream says so and ends.
_FINAL = {"admitted", "used", "expired", "left"}

_PLACE = {
    401: "No token was sent (`unauthorized`).",
    404: "No such place for this token (`queue-place-not-found`).",
}


def _check_token(db: Database, place_id: uuid.UUID, token: str) -> None:
    """A wrong token gets the same 404 as an unknown place: a stranger learns nothing."""
    if place_of_token(server_secret(db.settings), token) != place_id:
        raise QueuePlaceNotFound(f"no queue place {place_id} for this event")


@router.post(
    "/events/{event_id}/queue",
    status_code=201,
    dependencies=[Depends(queue_rate_limit)],
    summary="Join the event's waiting room",
    description="One place per customer. Before sales open the place is in the pre-queue, "
    "whose order is drawn at random when they open; afterwards, first come, first served. "
    "Follow the place at `stream`; once `admitted`, reserve with the token as `queue_pass` "
    "before `pass_expires_at`.",
    responses=problem_responses(
        404,
        409,
        413,
        422,
        429,
        503,
        descriptions={
            404: "No such event (`event-not-found`).",
            409: "The customer has a place already (`already-queued`), the event sells "
            "without a waiting room (`queue-closed`), or its sales ended (`sales-closed`).",
        },
    ),
)
async def join(event_id: uuid.UUID, body: QueueJoin, db: Db, response: Response) -> QueueJoined:
    place_id = await service.join_queue(db, event_id=event_id, customer=body.customer)
    metrics.QUEUE_JOINS.inc()
    place = await service.get_place(db, event_id=event_id, place_id=place_id)
    response.headers["Location"] = f"/events/{event_id}/queue/{place_id}"
    token = place_token(server_secret(db.settings), place_id)
    return QueueJoined(**QueuePlaceOut.of(place).model_dump(), token=token)


@router.get(
    "/events/{event_id}/queue/{place_id}",
    dependencies=[Depends(queue_rate_limit)],
    summary="Your place in the waiting room (token required)",
    responses=problem_responses(401, 404, 422, 429, 503, descriptions=_PLACE),
)
async def get_place(
    event_id: uuid.UUID, place_id: uuid.UUID, db: Db, token: HolderToken
) -> QueuePlaceOut:
    _check_token(db, place_id, token)
    return QueuePlaceOut.of(await service.get_place(db, event_id=event_id, place_id=place_id))


@router.delete(
    "/events/{event_id}/queue/{place_id}",
    status_code=204,
    dependencies=[Depends(queue_rate_limit)],
    summary="Leave the waiting room (token required)",
    description="Gives up the place (waiting, or admitted with the pass unused); the customer "
    "may join again, at the back.",
    responses=problem_responses(401, 404, 422, 429, 503, descriptions=_PLACE),
)
async def leave(event_id: uuid.UUID, place_id: uuid.UUID, db: Db, token: HolderToken) -> Response:
    _check_token(db, place_id, token)
    await service.leave_queue(db, event_id=event_id, place_id=place_id)
    return Response(status_code=204)


@router.get(
    "/events/{event_id}/queue",
    dependencies=[Depends(require_admin)],
    summary="The waiting room's counts (admin)",
    responses=problem_responses(401, 403, 404, 422, 503, descriptions={404: "No such event."}),
)
async def stats(event_id: uuid.UUID, db: Db) -> QueueStatsOut:
    return QueueStatsOut.of(event_id, await service.queue_stats(db, event_id=event_id))


@router.get(
    "/events/{event_id}/queue/{place_id}/stream",
    summary="Follow a place in the waiting room (Server-Sent Events)",
    description="`text/event-stream` of `event: place` messages, each the place as `GET` "
    "shows it (without the customer), sent at once and whenever the queue moves; the last "
    "one has status `admitted` (or another that ends the wait) and the stream ends. The place "
    "id is unguessable and the stream carries no token.",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}},
        **problem_responses(404, 422, 503, descriptions={404: "No such place."}),
    },
)
async def stream(event_id: uuid.UUID, place_id: uuid.UUID, request: Request, db: Db) -> Response:
    feed: QueueFeed = request.app.state.queue_feed
    place = await service.get_place(db, event_id=event_id, place_id=place_id)
    return StreamingResponse(
        _follow(db, feed, place),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _message(place: Place, ahead: int | None) -> bytes:
    out = QueuePlaceOut.of(place).model_dump(mode="json", exclude={"customer"})
    if ahead is not None and place.status == "waiting":
        out.update(
            ahead=ahead,
            position=ahead + 1,
            estimated_wait_seconds=place.estimated_wait_seconds(ahead),
        )
    return f"event: place\ndata: {json.dumps(out)}\n\n".encode()


async def _follow(db: Database, feed: QueueFeed, place: Place) -> AsyncIterator[bytes]:
    """The place now, then again each time the admitter moves the queue: arithmetic from the
    admitter's count while nothing concerns this place, a fresh read when the admitter gave
    it a position (the draw, or numbering a new arrival), reached it, or the feed reconnected
    (news may have been missed)."""
    heartbeat = db.settings.queue_heartbeat_seconds
    generation = feed.generation
    ahead, counted_at = place.ahead, place.admitted_total
    yield b"retry: 2000\n\n" + _message(place, ahead)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + MAX_STREAM_SECONDS
    while place.status not in _FINAL and (left := deadline - loop.time()) > 0:
        signal = feed.signal(place.event_id)
        try:
            async with asyncio.timeout(min(heartbeat, left)):
                await signal.wait()
        except TimeoutError:
            yield b": keep-alive\n\n"
            continue
        news = feed.latest(place.event_id)
        reached = (
            news is not None
            and news.through is not None
            and place.rank is not None
            and (place.lane, place.rank) <= news.through
        )
        if (
            news is None
            or reached
            or (ahead is None and news.drawn)
            or feed.generation != generation
        ):
            generation = feed.generation
            place = await service.get_place(db, event_id=place.event_id, place_id=place.id)
            ahead, counted_at = place.ahead, place.admitted_total
        elif ahead is not None:
            # Everyone admitted since was ahead of this place (admission is in queue order
            # and this place still waits).
            ahead = max(ahead - (news.admitted_total - counted_at), 0)
            counted_at = news.admitted_total
        yield _message(place, ahead)
