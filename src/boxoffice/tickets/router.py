import uuid
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Response

from boxoffice.dependencies import AppSettings, Engine, page_size
from boxoffice.errors import BoxofficeError, problem_responses
from boxoffice.reservations import service as reservations
from boxoffice.tickets import service
from boxoffice.tickets.models import TicketStatus
from boxoffice.tickets.schemas import (
    DemoTicketList,
    DemoTicketOut,
    SeedReserveRequest,
    SeedReserveResponse,
    TicketOut,
    TicketPage,
)

router = APIRouter(tags=["tickets"])

TicketCursor = Annotated[int | None, Query(ge=1, le=2**63 - 1)]

# What the original demo's clients print for a refusal (its own words, near enough).
_REFUSAL_MESSAGES = {404: "No such ticket.", 409: "Ticket not available."}


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
    summary="All tickets by id (the original demo's endpoint)",
    description='`{"data": [...], "next": ...}` as the original demo answered: each '
    "ticket's `id` is its public UUID. Follow `next` for the next page; the next page's cursor "
    "is also in the `X-Next-After` header.",
    responses=problem_responses(422, 503),
)
async def list_tickets(
    engine: Engine,
    settings: AppSettings,
    response: Response,
    limit: Annotated[int, Query(ge=1)] = 100,
    after: TicketCursor = None,
) -> DemoTicketList:
    rows, next_after = await service.list_all_tickets(
        engine, limit=page_size(limit, settings), after=after
    )
    next_page = None
    if next_after is not None:
        response.headers["X-Next-After"] = str(next_after)
        next_page = f"/tickets?{urlencode({'limit': limit, 'after': next_after})}"
    return DemoTicketList(data=[DemoTicketOut.from_row(row) for row in rows], next=next_page)


@router.patch(
    "/tickets/reserve",
    summary="Reserve one ticket (the original demo's endpoint)",
    description="The ticket may be named by its UUID (as the original demo's clients do) or "
    "its id. Answers carry a `message`, as the demo's did, refusals included.",
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
    try:
        ticket = await service.find_ticket(engine, ticket=body.ticket_id)
        hold = await reservations.reserve_tickets(
            engine,
            event_id=ticket.event_id,
            ticket_ids=[ticket.id],
            customer=str(body.user_id),
            nowait=settings.lock_timeout_ms == 0,
        )
    except BoxofficeError as refusal:
        # The demo's clients print `message`; problem+json allows extension members.
        refusal.extensions.setdefault(
            "message", _REFUSAL_MESSAGES.get(refusal.status, refusal.detail)
        )
        raise
    return SeedReserveResponse(
        message="Ticket reserved. Pay for it before the hold expires to keep it.",
        ticket_id=body.ticket_id,
        ticket_public_id=ticket.public_id,
        internal_id=ticket.id,
        user_id=body.user_id,
        status=TicketStatus.reserved,
        reservation_id=hold.reservation_id,
        token=hold.token,
        expires_at=hold.expires_at,
    )
