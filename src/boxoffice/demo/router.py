"""The original demo's own endpoint, `PATCH /tickets/reserve`, kept for its clients.

It reserves through the same hot path as `POST /events/{id}/reservations`; it lives apart
so that the tickets domain (reads) does not depend on the reservations domain (changes).
"""

from fastapi import APIRouter, Request

from boxoffice.dependencies import Db
from boxoffice.errors import BoxofficeError
from boxoffice.problems import problem_responses
from boxoffice.ratelimit import reservations_rate_limit
from boxoffice.reservations.reserve import reserve_tickets
from boxoffice.tickets import service as tickets
from boxoffice.tickets.models import TicketStatus
from boxoffice.tickets.schemas import SeedReserveRequest, SeedReserveResponse

router = APIRouter(tags=["tickets"])

# What the original demo's clients print for a refusal (its own words, near enough).
_REFUSAL_MESSAGES = {
    404: "No such ticket.",
    409: "Ticket not available.",
    429: "Too many requests. Try again later.",
}


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
        429,
        503,
        descriptions={
            404: "No such ticket (`not-found`).",
            409: "Someone else holds or bought the ticket (`tickets-unavailable`).",
        },
    ),
)
async def reserve_ticket(body: SeedReserveRequest, db: Db, request: Request) -> SeedReserveResponse:
    try:
        # In the handler rather than as a dependency, so that a 429 carries a `message` too.
        await reservations_rate_limit(request)
        ticket = await tickets.find_ticket(db, ticket=body.ticket_id)
        hold = await reserve_tickets(
            db, event_id=ticket.event_id, ticket_ids=[ticket.id], customer=str(body.user_id)
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
