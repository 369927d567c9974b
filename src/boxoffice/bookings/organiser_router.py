"""The organiser's endpoints (admin): cancel a booking, cancel or delete an event, and an
event's bookings (JSON pages, CSV) and audit log."""

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, Query, Response
from fastapi.responses import StreamingResponse

from boxoffice.bookings import organiser
from boxoffice.bookings.organiser_schemas import (
    AuditLogPage,
    BookingCancel,
    BookingPage,
    EventCancel,
    EventCancellationOut,
    OrganiserBookingOut,
)
from boxoffice.dependencies import Db, page_size, require_admin
from boxoffice.problems import problem_responses

router = APIRouter(tags=["organisers"], dependencies=[Depends(require_admin)])

_NO_EVENT = {404: "No such event (`event-not-found`)."}
_ADMIN_ERRORS = (401, 403, 404, 422, 503)

Search = Annotated[
    str | None,
    Query(
        max_length=200,
        description="A booking code (exact, any case) or part of the customer's e-mail or "
        "name (any case).",
    ),
]
BookingStatus = Annotated[Literal["confirmed", "cancelled"] | None, Query()]


@router.post(
    "/bookings/{booking_id}/cancel",
    summary="Cancel a booking: refund it, seats back on sale or withdrawn (admin)",
    description="The payment becomes `refund_pending` (the refunder pays it back) and the "
    "buyer is e-mailed. `release_seats` (default true) puts the seats back on sale; false "
    "keeps them booked by the cancelled booking, withdrawn from sale. Cancelling a cancelled "
    "booking refunds and mails nothing again (with `release_seats` it puts withdrawn seats "
    "back on sale). Its tickets are refused at the door from then on.",
    responses=problem_responses(
        *_ADMIN_ERRORS, 409, 413, descriptions={404: "No such booking (`booking-not-found`)."}
    ),
)
async def cancel_booking(
    booking_id: uuid.UUID, db: Db, body: Annotated[BookingCancel | None, Body()] = None
) -> OrganiserBookingOut:
    body = body or BookingCancel()
    booking = await organiser.cancel_booking(
        db, booking_id=booking_id, release_seats=body.release_seats, reason=body.reason
    )
    return OrganiserBookingOut.of(booking)


@router.post(
    "/events/{event_id}/cancel",
    summary="Cancel an event: holds released, bookings cancelled and refunded (admin)",
    description="Nothing more is sold (holds are refused with `event-cancelled`); every hold "
    "is released; every booking is cancelled, its seats back, its payment owed back, its "
    "buyer e-mailed. Cancelling again changes nothing (and finishes an interrupted "
    "cancellation). The counts say what this call did.",
    responses=problem_responses(*_ADMIN_ERRORS, 409, 413, descriptions=_NO_EVENT),
)
async def cancel_event(
    event_id: uuid.UUID, db: Db, body: Annotated[EventCancel | None, Body()] = None
) -> EventCancellationOut:
    reason = body.reason if body is not None else None
    return EventCancellationOut.of(
        await organiser.cancel_event(db, event_id=event_id, reason=reason)
    )


@router.delete(
    "/events/{event_id}",
    status_code=204,
    summary="Delete an event that never sold (admin)",
    description="With its tickets and any holds on it. An event with a booking (even a "
    "cancelled one) or a payment is refused with `event-has-sales`: cancel it instead.",
    responses=problem_responses(
        *_ADMIN_ERRORS,
        409,
        descriptions={
            **_NO_EVENT,
            409: "The event sold tickets (`event-has-sales`), or its rows are busy (`conflict`).",
        },
    ),
)
async def delete_event(event_id: uuid.UUID, db: Db) -> Response:
    await organiser.delete_event(db, event_id=event_id)
    return Response(status_code=204)


@router.get(
    "/events/{event_id}/bookings",
    summary="An event's bookings, with their tickets and check-ins (admin)",
    description="In booking order, keyset-paginated (`after`: the last booking's id).",
    responses=problem_responses(*_ADMIN_ERRORS, descriptions=_NO_EVENT),
)
async def list_bookings(
    event_id: uuid.UUID,
    db: Db,
    q: Search = None,
    status: BookingStatus = None,
    limit: Annotated[int, Query(ge=1)] = 50,
    after: uuid.UUID | None = None,
) -> BookingPage:
    page = await organiser.list_bookings(
        db,
        event_id=event_id,
        q=q,
        status=status,
        limit=page_size(limit, db.settings),
        after=after,
    )
    return BookingPage.of(page)


@router.get(
    "/events/{event_id}/bookings.csv",
    summary="An event's bookings as CSV, one line per ticket (admin)",
    description="The same filters as the JSON listing; streamed. Columns: "
    + ", ".join(organiser.CSV_HEADER)
    + " (total in minor units). A cell that a spreadsheet would run as a formula starts "
    "with `'`.",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/csv": {"schema": {"type": "string"}}}, "description": "CSV."},
        **problem_responses(*_ADMIN_ERRORS, descriptions=_NO_EVENT),
    },
)
async def bookings_csv(
    event_id: uuid.UUID, db: Db, q: Search = None, status: BookingStatus = None
) -> StreamingResponse:
    lines = await organiser.bookings_csv(db, event_id=event_id, q=q, status=status)
    return StreamingResponse(
        lines,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="bookings-{event_id}.csv"'},
    )


@router.get(
    "/events/{event_id}/audit",
    summary="An event's audit log: organisers', scanners' and payments' changes (admin)",
    description="Oldest first, keyset-paginated (`after`: the last entry's id). A deleted "
    "event's log stays readable.",
    responses=problem_responses(*_ADMIN_ERRORS, descriptions=_NO_EVENT),
)
async def audit_log(
    event_id: uuid.UUID,
    db: Db,
    limit: Annotated[int, Query(ge=1)] = 100,
    after: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
) -> AuditLogPage:
    page = await organiser.list_audit(
        db, event_id=event_id, limit=page_size(limit, db.settings), after=after
    )
    return AuditLogPage.of(page)
