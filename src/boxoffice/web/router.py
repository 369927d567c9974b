"""The buyer's pages and the admin page: server-rendered, then the page's script takes over.

Pages carry no secrets: a hold's token lives in the tab's sessionStorage and the admin token
is typed in; both travel only in the `Authorization` header of the script's API calls.
"""

import uuid

from fastapi import APIRouter, Request, Response

from boxoffice.dependencies import AppSettings, Db
from boxoffice.web import service
from boxoffice.web.pages import PageRoute, not_found, page
from boxoffice.web.views import currency_rules

router = APIRouter(include_in_schema=False, route_class=PageRoute)

EVENTS_PER_PAGE = 50


def _uuid(text: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(text) if text else None
    except ValueError:
        return None


@router.get("/")
async def events_page(request: Request, db: Db, after: str | None = None) -> Response:
    cursor = _uuid(after)
    if after and cursor is None:
        return not_found(request)
    events, next_after = await service.list_events(db, limit=EVENTS_PER_PAGE, after=cursor)
    return page(request, "index.html", events=events, next_after=next_after)


@router.get("/shop/events/{event_id}")
async def shop_page(
    request: Request,
    event_id: str,
    db: Db,
    section: str | None = None,
) -> Response:
    settings = db.settings
    event_uuid = _uuid(event_id)
    if event_uuid is None:
        return not_found(request)
    shop = await service.shop_page(db, event_id=event_uuid, section=section)
    return page(request, "shop.html", shop=shop, max_per_hold=settings.max_tickets_per_hold)


@router.get("/shop/reservations/{reservation_id}")
async def booking_page(request: Request, reservation_id: str) -> Response:
    # Only the holder's tab knows the token, so the script fetches the booking itself.
    if _uuid(reservation_id) is None:
        return not_found(request)
    return page(request, "booking.html", reservation_id=reservation_id, currencies=currency_rules())


@router.get("/admin")
async def admin_page(request: Request, settings: AppSettings) -> Response:
    return page(
        request,
        "admin.html",
        currencies=currency_rules(),
        default_hold_seconds=settings.hold_seconds,
    )


@router.get("/shop/{anything:path}")
async def shop_not_found(request: Request, anything: str) -> Response:
    return not_found(request)
