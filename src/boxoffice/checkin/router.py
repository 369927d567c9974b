import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from boxoffice.checkin import service
from boxoffice.checkin.schemas import (
    CheckinOut,
    CheckinRequest,
    ScannerCreate,
    ScannerCreated,
    ScannerOut,
)
from boxoffice.dependencies import BearerToken, Db, require_admin
from boxoffice.errors import Unauthorized
from boxoffice.problems import problem_responses
from boxoffice.web.pages import PageRoute, not_found, page

router = APIRouter(tags=["check-in"])
# The door's page answers errors as pages, like the buyer's (boxoffice.web).
pages = APIRouter(include_in_schema=False, route_class=PageRoute)

_NO_EVENT = {404: "No such event (`event-not-found`)."}


async def door_token(token: BearerToken) -> str:
    """The bearer token of a check-in, required before the body is even read."""
    if not token:
        raise Unauthorized("send the admin token or a scanner token as `Authorization: Bearer`")
    return token


@router.post(
    "/events/{event_id}/scanners",
    status_code=201,
    dependencies=[Depends(require_admin)],
    summary="Add a door scanner to an event; its token is shown once (admin)",
    responses=problem_responses(401, 403, 404, 413, 422, 503, descriptions=_NO_EVENT),
)
async def create_scanner(event_id: uuid.UUID, body: ScannerCreate, db: Db) -> ScannerCreated:
    created = await service.create_scanner(db, event_id=event_id, name=body.name)
    return ScannerCreated(id=created.id, name=created.name, token=created.token)


@router.get(
    "/events/{event_id}/scanners",
    dependencies=[Depends(require_admin)],
    summary="An event's door scanners, revoked ones included; never their tokens (admin)",
    responses=problem_responses(401, 403, 404, 422, 503, descriptions=_NO_EVENT),
)
async def list_scanners(event_id: uuid.UUID, db: Db) -> list[ScannerOut]:
    scanners = await service.list_scanners(db, event_id=event_id)
    return [
        ScannerOut(id=s.id, name=s.name, created_at=s.created_at, revoked_at=s.revoked_at)
        for s in scanners
    ]


@router.delete(
    "/events/{event_id}/scanners/{scanner_id}",
    status_code=204,
    dependencies=[Depends(require_admin)],
    summary="Revoke a door scanner: its token is refused from now on (admin)",
    responses=problem_responses(
        401, 403, 404, 422, 503, descriptions={404: "The event has no such scanner (`not-found`)."}
    ),
)
async def revoke_scanner(event_id: uuid.UUID, scanner_id: uuid.UUID, db: Db) -> Response:
    await service.revoke_scanner(db, event_id=event_id, scanner_id=scanner_id)
    return Response(status_code=204)


@router.post(
    "/events/{event_id}/checkins",
    summary="Check a ticket in at the door: each ticket is admitted once",
    description="Send the admin token or a scanner token of this event. A second scan of "
    "a ticket is refused with when and by whom it was admitted first.",
    responses=problem_responses(
        401,
        403,
        404,
        409,
        413,
        422,
        503,
        descriptions={
            403: "The token is neither the admin token nor an unrevoked scanner token of "
            "this event (`forbidden`).",
            404: "No ticket has this code (`ticket-not-found`), or no such event "
            "(`event-not-found`).",
            409: "The ticket was admitted already (`already-checked-in`, with "
            "`checked_in_at` and `checked_in_by`), is for another event (`wrong-event`, "
            "with `event_name`), its booking was cancelled (`booking-cancelled`), or "
            "other scanners kept it busy too long (`conflict`: scan again).",
            422: "The body is not valid or the code cannot be a ticket code (`invalid-request`).",
        },
    ),
)
async def check_in(
    event_id: uuid.UUID,
    body: CheckinRequest,
    db: Db,
    token: Annotated[str, Depends(door_token)],
) -> CheckinOut:
    admitted = await service.check_in(
        db, event_id=event_id, token=token, ticket_code=body.ticket_code
    )
    return CheckinOut(
        ticket_code=admitted.ticket_code,
        booking_code=admitted.booking_code,
        event_id=admitted.event_id,
        label=admitted.label,
        section=admitted.section,
        row=admitted.row_label,
        seat=admitted.seat,
        customer=admitted.customer,
        checked_in_at=admitted.checked_in_at,
        checked_in_by=admitted.checked_in_by,
    )


@pages.get("/events/{event_id}/scan")
async def scanner_page(request: Request, event_id: str, db: Db) -> Response:
    # The page carries no secret: the scanner's token is typed in and kept by the browser.
    try:
        event_uuid = uuid.UUID(event_id)
    except ValueError:
        return not_found(request)
    event = await service.door_event(db, event_id=event_uuid)
    return page(request, "scanner.html", event=event)


router.include_router(pages)
