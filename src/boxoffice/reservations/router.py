import uuid

from fastapi import APIRouter, Depends, Response

from boxoffice.config import Settings
from boxoffice.credentials import server_secret
from boxoffice.db import Database
from boxoffice.dependencies import Db, HolderToken
from boxoffice.errors import InvalidRequest, PaymentRequired
from boxoffice.idempotency import IdempotencyKey, IdempotencyRequest, request_hash
from boxoffice.problems import problem_responses
from boxoffice.queue.service import pass_of
from boxoffice.ratelimit import reservations_rate_limit
from boxoffice.reservations import holder
from boxoffice.reservations.records import Hold
from boxoffice.reservations.reserve import (
    reserve_best_available,
    reserve_tickets,
    validate_ticket_ids,
)
from boxoffice.reservations.schemas import (
    BookingOut,
    ConfirmRequest,
    ReservationCreate,
    ReservationCreated,
    ReservationOut,
    booking_from_view,
    created_from_hold,
    keyed_reservation,
)
from boxoffice.reservations.tokens import hash_token

router = APIRouter(tags=["reservations"])

# A wrong token gets the same 404 as an unknown reservation: a stranger learns nothing.
_HOLDER = {
    401: "No token was sent (`unauthorized`).",
    404: "No such reservation for this token (`reservation-not-found`).",
    409: "The reservation expired (`reservation-expired`), is no longer active "
    "(`reservation-not-active`), or another request is changing it (`conflict`).",
}


@router.post(
    "/events/{event_id}/reservations",
    status_code=201,
    summary="Hold tickets: chosen ones, or a quantity of best available",
    dependencies=[Depends(reservations_rate_limit)],
    responses=problem_responses(
        403,
        404,
        409,
        413,
        422,
        429,
        503,
        descriptions={
            403: "The event sells through its waiting room and this request has no valid "
            "pass for this customer (`queue-pass-required`, saying why).",
            404: "No such event (`event-not-found`).",
            409: "Some tickets are held or sold (`tickets-unavailable`, listing them), the "
            "event is not on sale (`sales-closed`) or was cancelled (`event-cancelled`), or "
            "the customer would pass the event's cap (`customer-limit-reached`).",
            422: "The request is not valid (`invalid-request`), names tickets of another "
            "event (`unknown-tickets`) or a section the event lacks (`unknown-section`).",
        },
    ),
)
async def reserve(
    event_id: uuid.UUID,
    body: ReservationCreate,
    db: Db,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> ReservationCreated:
    settings = db.settings
    idempotency = None
    token = None
    if idempotency_key is not None:
        secret = server_secret(settings)
        idempotency, token = keyed_reservation(secret, idempotency_key, event_id, body)
    hold = await _reserve(event_id, body, db, settings, idempotency, token)
    response.headers["Location"] = f"/reservations/{hold.reservation_id}"
    return created_from_hold(hold)


async def _reserve(
    event_id: uuid.UUID,
    body: ReservationCreate,
    db: Database,
    settings: Settings,
    idempotency: IdempotencyRequest | None,
    token: str | None,
) -> Hold:
    queue_pass = pass_of(server_secret(settings), body.queue_pass)
    if body.ticket_ids is not None:
        validate_ticket_ids(body.ticket_ids, settings.max_tickets_per_hold)
        return await reserve_tickets(
            db,
            event_id=event_id,
            ticket_ids=body.ticket_ids,
            customer=body.customer,
            idempotency=idempotency,
            token=token,
            queue_pass=queue_pass,
        )
    else:
        assert body.quantity is not None
        if body.quantity > settings.max_tickets_per_hold:
            raise InvalidRequest(f"at most {settings.max_tickets_per_hold} tickets per hold")
    return await reserve_best_available(
        db,
        event_id=event_id,
        quantity=body.quantity,
        section=body.section,
        customer=body.customer,
        idempotency=idempotency,
        token=token,
        queue_pass=queue_pass,
    )


@router.get(
    "/reservations/{reservation_id}",
    summary="Your hold (token required)",
    responses=problem_responses(401, 404, 422, 503, descriptions=_HOLDER),
)
async def get_reservation(reservation_id: uuid.UUID, db: Db, token: HolderToken) -> ReservationOut:
    view = await holder.get_reservation(db, reservation_id=reservation_id, token=token)
    return ReservationOut.from_view(view, db.settings)


@router.post(
    "/reservations/{reservation_id}/confirm",
    summary="Pay for your hold: its tickets become booked",
    responses=problem_responses(
        401,
        403,
        404,
        409,
        413,
        422,
        503,
        descriptions=_HOLDER
        | {
            403: "`payment-required`: a real payment provider is configured; pay through "
            "the checkout."
        },
    ),
)
async def confirm(
    reservation_id: uuid.UUID,
    body: ConfirmRequest,
    db: Db,
    token: HolderToken,
    idempotency_key: IdempotencyKey = None,
) -> BookingOut:
    settings = db.settings
    if not settings.allows_direct_confirm:
        raise PaymentRequired(
            "pay through POST /reservations/{id}/checkout: with a real payment provider, only "
            "its notification books a hold"
        )
    idempotency = None
    if idempotency_key is not None:
        idempotency = IdempotencyRequest(
            key=idempotency_key,
            secret=server_secret(settings),
            scope=f"POST /reservations/{{reservation_id}}/confirm {reservation_id}",
            # The token is part of the request: someone else who learns the key and the
            # reservation id gets a 422, not a replay of the holder's booking.
            request_hash=request_hash(body, hash_token(token).hex()),
            status_code=200,
            render=lambda view: booking_from_view(view, settings).model_dump(mode="json"),
        )
    view = await holder.confirm(
        db,
        reservation_id=reservation_id,
        token=token,
        payment_reference=body.payment_reference,
        idempotency=idempotency,
    )
    return booking_from_view(view, settings)


@router.delete(
    "/reservations/{reservation_id}",
    status_code=204,
    summary="Release your hold: its tickets are free again at once",
    responses=problem_responses(401, 404, 409, 422, 503, descriptions=_HOLDER),
)
async def release(reservation_id: uuid.UUID, db: Db, token: HolderToken) -> Response:
    await holder.release(db, reservation_id=reservation_id, token=token)
    return Response(status_code=204)
