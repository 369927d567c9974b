import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from boxoffice.credentials import server_secret
from boxoffice.dependencies import Db, page_size, require_admin
from boxoffice.events import service
from boxoffice.events.records import EventWithSections
from boxoffice.events.schemas import (
    EventCreate,
    EventDetail,
    EventOut,
    EventPage,
    EventUpdate,
    SectionOut,
)
from boxoffice.idempotency import IdempotencyKey, IdempotencyRequest, request_hash
from boxoffice.problems import problem_responses

router = APIRouter(tags=["events"])

_NO_EVENT = {404: "No such event (`event-not-found`)."}


async def _detail(db: Db, event_id: uuid.UUID) -> EventDetail:
    return _detail_from(await service.get_event(db, event_id=event_id))


def _detail_from(found: EventWithSections) -> EventDetail:
    return EventDetail(
        **EventOut.from_row(found.event).model_dump(),
        sections=[
            SectionOut(name=s.name, tickets=s.tickets, available=s.available)
            for s in found.sections
        ],
    )


@router.post(
    "/events",
    status_code=201,
    dependencies=[Depends(require_admin)],
    summary="Create an event and all its tickets (admin)",
    responses=problem_responses(401, 403, 413, 422, 503),
)
async def create_event(
    body: EventCreate,
    db: Db,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> EventDetail:
    settings = db.settings
    idempotency = None
    if idempotency_key is not None:
        idempotency = IdempotencyRequest(
            key=idempotency_key,
            secret=server_secret(settings),
            scope="POST /events",
            request_hash=request_hash(body),
            status_code=201,
            render=lambda found: _detail_from(found).model_dump(mode="json"),
        )
    event_id = await service.create_event(
        db,
        event=body,
        default_hold_seconds=settings.hold_seconds,
        max_tickets=settings.max_tickets_per_event,
        idempotency=idempotency,
    )
    response.headers["Location"] = f"/events/{event_id}"
    return await _detail(db, event_id)


@router.get(
    "/events",
    summary="Events by start time, with availability counts",
    responses=problem_responses(422, 503),
)
async def list_events(
    db: Db,
    limit: Annotated[int, Query(ge=1)] = 50,
    after: uuid.UUID | None = None,
    upcoming: Annotated[bool, Query(description="Only events that have not started yet.")] = False,
) -> EventPage:
    settings = db.settings
    rows, next_after = await service.list_events(
        db, limit=page_size(limit, settings), after=after, upcoming=upcoming
    )
    return EventPage(items=[EventOut.from_row(row) for row in rows], next_after=next_after)


@router.get(
    "/events/{event_id}",
    summary="One event, with counts by status and by section",
    responses=problem_responses(404, 422, 503, descriptions=_NO_EVENT),
)
async def get_event(event_id: uuid.UUID, db: Db) -> EventDetail:
    return await _detail(db, event_id)


@router.patch(
    "/events/{event_id}",
    dependencies=[Depends(require_admin)],
    summary="Edit an event: its details and on-sale controls (admin)",
    description="Name, venue, start, hold length (for new holds), sales window, cap per "
    "customer, waiting room. Members left out keep their value; null clears one (no venue, "
    "sales open at once, end at `starts_at`, no cap). The sales window must still end by "
    "`starts_at`. Recorded in the event's audit log.",
    responses=problem_responses(
        401,
        403,
        404,
        409,
        413,
        422,
        503,
        descriptions={**_NO_EVENT, 409: "The event was cancelled (`event-cancelled`)."},
    ),
)
async def update_event(event_id: uuid.UUID, body: EventUpdate, db: Db) -> EventDetail:
    return _detail_from(await service.update_sale_settings(db, event_id=event_id, changes=body))
