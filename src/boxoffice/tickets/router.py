import uuid
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Response

from boxoffice.dependencies import Db, page_size
from boxoffice.problems import problem_responses
from boxoffice.tickets import service
from boxoffice.tickets.models import TicketStatus
from boxoffice.tickets.schemas import (
    DemoTicketList,
    DemoTicketOut,
    TicketOut,
    TicketPage,
)

router = APIRouter(tags=["tickets"])

TicketCursor = Annotated[int | None, Query(ge=1, le=2**63 - 1)]


@router.get(
    "/events/{event_id}/tickets",
    summary="An event's tickets in seat order (keyset pages)",
    responses=problem_responses(
        404, 422, 503, descriptions={404: "No such event (`event-not-found`)."}
    ),
)
async def list_event_tickets(
    event_id: uuid.UUID,
    db: Db,
    status: TicketStatus | None = None,
    section: Annotated[str | None, Query(min_length=1, max_length=60)] = None,
    limit: Annotated[int, Query(ge=1)] = 100,
    after: TicketCursor = None,
) -> TicketPage:
    settings = db.settings
    currency, rows, next_after = await service.list_event_tickets(
        db,
        event_id=event_id,
        status=status,
        section=section,
        limit=page_size(limit, settings),
        after=after,
    )
    return TicketPage(
        items=[TicketOut.from_row(row, currency) for row in rows], next_after=next_after
    )


@router.get(
    "/tickets",
    summary="All tickets by id (the original demo's endpoint)",
    description='`{"data": [...], "next": ...}` as the original demo answered: each '
    "ticket's `id` is its public UUID. Follow `next` for the next page; the next page's cursor "
    "is also in the `X-Next-After` header.",
    responses=problem_responses(422, 503),
)
async def list_tickets(
    db: Db,
    response: Response,
    limit: Annotated[int, Query(ge=1)] = 100,
    after: TicketCursor = None,
) -> DemoTicketList:
    settings = db.settings
    rows, next_after = await service.list_all_tickets(
        db, limit=page_size(limit, settings), after=after
    )
    next_page = None
    if next_after is not None:
        response.headers["X-Next-After"] = str(next_after)
        next_page = f"/tickets?{urlencode({'limit': limit, 'after': next_after})}"
    return DemoTicketList(data=[DemoTicketOut.from_row(row) for row in rows], next=next_page)
