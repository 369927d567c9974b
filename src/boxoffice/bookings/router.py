"""The booking page's API (with the booking link's secret), its calendar entry, the lookup,
and the page itself."""

import uuid

from fastapi import APIRouter, Depends, Request, Response

from boxoffice.bookings import service
from boxoffice.bookings.schemas import BookingPageOut, LookupAnswer, LookupRequest
from boxoffice.dependencies import BearerToken, Db
from boxoffice.problems import problem_responses
from boxoffice.ratelimit import lookup_rate_limit
from boxoffice.web.pages import PageRoute, page
from boxoffice.web.views import currency_rules

router = APIRouter()
pages = APIRouter(include_in_schema=False, route_class=PageRoute)

_LINK = {
    401: "No credentials: send the booking link's secret (after `#`) as a bearer token.",
    404: "No such booking for this secret (`booking-not-found`).",
}


@router.get(
    "/bookings/{booking_id}",
    summary="Your booking and its tickets (the booking link's secret required)",
    responses=problem_responses(401, 404, 422, 503, descriptions=_LINK),
)
async def get_booking(booking_id: uuid.UUID, db: Db, token: BearerToken) -> BookingPageOut:
    booking = await service.booking_for_link(db, booking_id=booking_id, token=token)
    return BookingPageOut.of(booking)


@router.get(
    "/bookings/{booking_id}/calendar.ics",
    summary="Your booking's calendar entry (iCalendar)",
    response_class=Response,
    responses={
        200: {"content": {"text/calendar": {}}, "description": "An RFC 5545 VCALENDAR."},
        **problem_responses(401, 404, 422, 503, descriptions=_LINK),
    },
)
async def calendar(booking_id: uuid.UUID, db: Db, token: BearerToken) -> Response:
    booking = await service.booking_for_link(db, booking_id=booking_id, token=token)
    return Response(
        service.calendar_entry(db.settings, booking),
        media_type="text/calendar; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{booking.code}.ics"'},
    )


@router.post(
    "/booking-lookups",
    status_code=202,
    summary="Lost your booking link? Get it by e-mail again",
    description="The same answer whether or not a booking matches, so nobody learns which "
    "codes exist; rate limited per client (RATE_LIMIT_LOOKUP_*).",
    dependencies=[Depends(lookup_rate_limit)],
    responses=problem_responses(413, 422, 429, 503),
)
async def lookup(body: LookupRequest, db: Db) -> LookupAnswer:
    await service.request_link(db, code=body.code, email=body.email)
    return LookupAnswer(
        detail="If a booking with this code belongs to this address, its link is on its way there."
    )


@pages.get("/booking")
async def booking_page(request: Request) -> Response:
    # The secret is in the URL's fragment, which never reaches us: the script reads it.
    return page(request, "booking_link.html", currencies=currency_rules())
