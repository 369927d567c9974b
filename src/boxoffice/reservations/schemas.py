import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from boxoffice.bookings.links import booking_url
from boxoffice.config import TICKETS_PER_HOLD_CEILING, Settings
from boxoffice.idempotency import IdempotencyRequest, request_hash
from boxoffice.reservations.records import Hold, ReservationView
from boxoffice.reservations.tokens import token_for_key
from boxoffice.tickets.models import TicketStatus
from boxoffice.tickets.schemas import TicketOut

# Numbers must be JSON numbers: "2" or true for a count is a client bug worth reporting.
TicketId = Annotated[int, Field(strict=True, ge=1, le=2**63 - 1)]


class ReservationCreate(BaseModel):
    """Either exact `ticket_ids`, or a `quantity` of best available (optionally in a section)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"ticket_ids": [1, 2], "customer": "ada@example.com"},
                {"quantity": 2, "section": "Stalls", "customer": "ada@example.com"},
            ]
        },
    )

    # Bounded by the ceiling of MAX_TICKETS_PER_HOLD (the service checks the setting itself):
    # a longer list is one short 422, not one error per item.
    ticket_ids: list[TicketId] | None = Field(
        default=None, min_length=1, max_length=TICKETS_PER_HOLD_CEILING
    )
    quantity: int | None = Field(default=None, strict=True, ge=1)
    section: str | None = Field(default=None, min_length=1, max_length=60)
    customer: str = Field(min_length=1, max_length=200, description="An opaque buyer reference.")
    queue_pass: str | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="For an event with a waiting room: the token of this customer's admitted "
        "place. Good for one hold, until the pass expires.",
    )

    @model_validator(mode="after")
    def _ids_or_quantity(self) -> "ReservationCreate":
        if (self.ticket_ids is None) == (self.quantity is None):
            raise ValueError("give either ticket_ids or quantity, not both")
        if self.section is not None and self.quantity is None:
            raise ValueError("section goes with quantity (best available), not with ticket_ids")
        return self


class ConfirmRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    payment_reference: str = Field(min_length=1, max_length=200, examples=["pay_test_4242"])


class BookingOut(BaseModel):
    id: uuid.UUID
    reservation_id: uuid.UUID
    event_id: uuid.UUID
    customer: str
    payment_reference: str
    total: int = Field(description="Sum of the ticket prices, in minor units.")
    currency: str
    created_at: datetime
    code: str = Field(description="The booking's short code, to read out or type in a lookup.")
    status: str = Field(description="`confirmed` or `cancelled`.")
    booking_url: str = Field(
        description="The booking page: tickets with their QR codes. The secret after `#` is "
        "the booking's own (not the hold's token); anyone with the link sees the tickets."
    )
    tickets: list[TicketOut]


class ReservationOut(BaseModel):
    id: uuid.UUID
    event_id: uuid.UUID
    customer: str
    status: str = Field(description="`active`, `confirmed`, `released` or `expired`.")
    created_at: datetime
    expires_at: datetime
    ended_at: datetime | None
    total: int = Field(description="Sum of the ticket prices, in minor units.")
    currency: str
    tickets: list[TicketOut]
    booking_id: uuid.UUID | None
    booking_code: str | None = Field(
        default=None, description="Once paid: the booking's short code."
    )
    booking_url: str | None = Field(default=None, description="Once paid: the booking page.")

    @classmethod
    def from_view(cls, view: ReservationView, settings: Settings) -> "ReservationOut":
        fields = _reservation_fields(view)
        if view.booking is not None:
            fields["booking_code"] = view.booking.code
            fields["booking_url"] = booking_url(settings, view.booking.id)
        return cls(**fields)


class ReservationCreated(ReservationOut):
    token: str = Field(
        description="The secret that proves you hold this reservation; shown only once. "
        "Send it as `Authorization: Bearer <token>`."
    )


def _reservation_fields(view: ReservationView) -> dict[str, Any]:
    row = view.reservation
    currency = view.tickets[0].currency if view.tickets else "EUR"
    return {
        "id": row.id,
        "event_id": row.event_id,
        "customer": row.customer,
        "status": row.status,
        "created_at": row.created_at,
        "expires_at": row.expires_at,
        "ended_at": row.ended_at,
        "total": sum(ticket.price_minor for ticket in view.tickets),
        "currency": currency,
        "tickets": [TicketOut.from_row(ticket, ticket.currency) for ticket in view.tickets],
        "booking_id": view.booking.id if view.booking is not None else None,
    }


def created_from_hold(hold: Hold) -> ReservationCreated:
    tickets = [
        TicketOut(
            id=ticket.id,
            event_id=hold.event_id,
            label=ticket.label,
            section=ticket.section,
            row=ticket.row_label,
            seat=ticket.seat,
            price=ticket.price_minor,
            currency=hold.currency,
            status=TicketStatus.reserved,
        )
        for ticket in hold.tickets
    ]
    return ReservationCreated(
        id=hold.reservation_id,
        event_id=hold.event_id,
        customer=hold.customer,
        status="active",
        created_at=hold.created_at,
        expires_at=hold.expires_at,
        ended_at=None,
        total=sum(ticket.price for ticket in tickets),
        currency=hold.currency,
        tickets=tickets,
        booking_id=None,
        token=hold.token,
    )


def booking_from_view(view: ReservationView, settings: Settings) -> BookingOut:
    booking = view.booking
    assert booking is not None
    return BookingOut(
        code=booking.code,
        status=booking.status,
        booking_url=booking_url(settings, booking.id),
        id=booking.id,
        reservation_id=booking.reservation_id,
        event_id=booking.event_id,
        customer=booking.customer,
        payment_reference=booking.payment_reference,
        total=booking.total_minor,
        currency=booking.currency,
        created_at=booking.created_at,
        tickets=[TicketOut.from_row(ticket, ticket.currency) for ticket in view.tickets],
    )


def keyed_reservation(
    secret: bytes, key: str, event_id: uuid.UUID, body: ReservationCreate
) -> tuple[IdempotencyRequest, str]:
    """A reservation request made with an Idempotency-Key, and the token its hold gets: derived
    from the key, never stored, so a replay derives it again. A replay renders the hold again,
    with its status as it is now (it may have been paid, released or have expired since): a
    retrying client must not pay for a dead hold."""
    scope = f"POST /events/{{event_id}}/reservations {event_id}"
    fingerprint = request_hash(body)
    request = IdempotencyRequest(
        key=key,
        secret=secret,
        scope=scope,
        request_hash=fingerprint,
        status_code=201,
        render=lambda hold: created_from_hold(hold).model_dump(mode="json"),
    )
    return request, token_for_key(secret, key, scope, fingerprint)
