import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response

from boxoffice.dependencies import AppSettings, Engine, page_size
from boxoffice.errors import problem_responses
from boxoffice.reservations import service as reservations
from boxoffice.tickets import service
from boxoffice.tickets.models import TicketStatus
from boxoffice.tickets.schemas import (
    SeedReserveRequest,
    SeedReserveResponse,
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
    engine: Engine,
    settings: AppSettings,
    status: TicketStatus | None = None,
    section: Annotated[str | None, Query(min_length=1, max_length=60)] = None,
    limit: Annotated[int, Query(ge=1)] = 100,
    after: TicketCursor = None,
) -> TicketPage:
    currency, rows, next_after = await service.list_event_tickets(
        engine,
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
    summary="All tickets by id (the seed demo's endpoint)",
    description="A plain list, as the seed demo returned; the next page's cursor is in the "
    "`X-Next-After` header.",
    responses=problem_responses(422, 503),
)
async def list_tickets(
    engine: Engine,
    settings: AppSettings,
    response: Response,
    limit: Annotated[int, Query(ge=1)] = 100,
    after: TicketCursor = None,
) -> list[TicketOut]:
    rows, next_after = await service.list_all_tickets(
        engine, limit=page_size(limit, settings), after=after
    )
    if next_after is not None:
        response.headers["X-Next-After"] = str(next_after)
    return [TicketOut.from_row(row, row.currency) for row in rows]


@router.patch(
    "/tickets/reserve",
    summary="Reserve one ticket (the seed demo's endpoint)",
    responses=problem_responses(
        404,
        409,
        413,
        422,
        503,
        descriptions={
            404: "No such ticket (`not-found`).",
            409: "Someone else holds or bought the ticket (`tickets-unavailable`).",
        },
    ),
)
async def reserve_ticket(
    body: SeedReserveRequest, engine: Engine, settings: AppSettings
) -> SeedReserveResponse:
    event_id = await service.event_of_ticket(engine, ticket_id=body.ticket_id)
    hold = await reservations.reserve_tickets(
        engine,
        event_id=event_id,
        ticket_ids=[body.ticket_id],
        customer=str(body.user_id),
        nowait=settings.lock_timeout_ms == 0,
    )
    return SeedReserveResponse(
        ticket_id=body.ticket_id,
        user_id=body.user_id,
        status=TicketStatus.reserved,
        reservation_id=hold.reservation_id,
        token=hold.token,
        expires_at=hold.expires_at,
    )
