"""The waiting list's endpoints: sign up for a sold-out event, look, leave."""

import uuid
from datetime import datetime

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, ConfigDict, Field

from boxoffice.config import TICKETS_PER_HOLD_CEILING
from boxoffice.credentials import server_secret
from boxoffice.db import Database
from boxoffice.dependencies import Db, HolderToken
from boxoffice.errors import InvalidRequest
from boxoffice.problems import problem_responses
from boxoffice.ratelimit import queue_rate_limit
from boxoffice.waitlist import service
from boxoffice.waitlist.service import Entry, WaitingListEntryNotFound, entry_token, token_names

router = APIRouter(tags=["waiting list"])

_ENTRY = {
    401: "No token was sent (`unauthorized`).",
    404: "No such entry for this token (`waiting-list-entry-not-found`).",
}


class WaitingListSignUp(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"customer": "ada@example.com", "quantity": 2}]},
    )

    customer: str = Field(min_length=1, max_length=200)
    quantity: int = Field(default=1, strict=True, ge=1, le=TICKETS_PER_HOLD_CEILING)


class WaitingListEntryOut(BaseModel):
    id: uuid.UUID
    event_id: uuid.UUID
    customer: str
    quantity: int
    status: str = Field(
        description="`waiting`; `offered` (seats are held for you: read and pay for the hold "
        "`reservation_id` with this entry's token before `offer_expires_at`); `claimed` "
        "(paid); `lapsed` (the offer ran out, the seats went to the next in line); `skipped` "
        "(it would take the customer past the event's cap); `left`."
    )
    position: int | None = Field(description="1: next to be offered seats; null unless waiting.")
    joined_at: datetime
    offered_at: datetime | None
    offer_expires_at: datetime | None
    reservation_id: uuid.UUID | None

    @classmethod
    def of(cls, entry: Entry) -> "WaitingListEntryOut":
        return cls(
            id=entry.id,
            event_id=entry.event_id,
            customer=entry.customer,
            quantity=entry.quantity,
            status=entry.status,
            position=entry.position,
            joined_at=entry.joined_at,
            offered_at=entry.offered_at,
            offer_expires_at=entry.offer_expires_at,
            reservation_id=entry.reservation_id,
        )


class WaitingListJoined(WaitingListEntryOut):
    token: str = Field(
        description="Proves this entry (`Authorization: Bearer <token>`); when seats are "
        "offered, it is also the offered hold's token. Shown once."
    )


def _check_token(db: Database, entry_id: uuid.UUID, token: str) -> None:
    if not token_names(server_secret(db.settings), token, entry_id):
        raise WaitingListEntryNotFound(f"no waiting-list entry {entry_id} for this event")


@router.post(
    "/events/{event_id}/waiting-list",
    status_code=201,
    dependencies=[Depends(queue_rate_limit)],
    summary="Sign up for a sold-out event's returned seats",
    description="Open while the event is on sale and has nothing free (or others wait). A "
    "seat that comes back (a hold lapsed or released) is offered to the next in line as a "
    "hold of its own, for the event's hold time, instead of going back on sale.",
    responses=problem_responses(
        404,
        409,
        413,
        422,
        429,
        503,
        descriptions={
            404: "No such event (`event-not-found`).",
            409: "Tickets are free (`not-sold-out`), the customer is on the list already "
            "(`already-waiting`), or the event is not on sale (`sales-closed`).",
        },
    ),
)
async def sign_up(
    event_id: uuid.UUID, body: WaitingListSignUp, db: Db, response: Response
) -> WaitingListJoined:
    if body.quantity > db.settings.max_tickets_per_hold:
        raise InvalidRequest(f"at most {db.settings.max_tickets_per_hold} tickets per hold")
    entry_id = await service.sign_up(
        db, event_id=event_id, customer=body.customer, quantity=body.quantity
    )
    entry = await service.get_entry(db, event_id=event_id, entry_id=entry_id)
    response.headers["Location"] = f"/events/{event_id}/waiting-list/{entry_id}"
    token = entry_token(server_secret(db.settings), entry_id)
    return WaitingListJoined(**WaitingListEntryOut.of(entry).model_dump(), token=token)


@router.get(
    "/events/{event_id}/waiting-list/{entry_id}",
    dependencies=[Depends(queue_rate_limit)],
    summary="Your waiting-list entry (token required)",
    responses=problem_responses(401, 404, 422, 429, 503, descriptions=_ENTRY),
)
async def get_entry(
    event_id: uuid.UUID, entry_id: uuid.UUID, db: Db, token: HolderToken
) -> WaitingListEntryOut:
    _check_token(db, entry_id, token)
    return WaitingListEntryOut.of(await service.get_entry(db, event_id=event_id, entry_id=entry_id))


@router.delete(
    "/events/{event_id}/waiting-list/{entry_id}",
    status_code=204,
    dependencies=[Depends(queue_rate_limit)],
    summary="Leave the waiting list (token required)",
    responses=problem_responses(401, 404, 422, 429, 503, descriptions=_ENTRY),
)
async def leave(event_id: uuid.UUID, entry_id: uuid.UUID, db: Db, token: HolderToken) -> Response:
    _check_token(db, entry_id, token)
    await service.leave(db, event_id=event_id, entry_id=entry_id)
    return Response(status_code=204)
