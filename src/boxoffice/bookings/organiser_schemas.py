import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from boxoffice.bookings.organiser import (
    AuditEntry,
    AuditPage,
    BookingsPage,
    EventCancellation,
    OrganiserBooking,
)


class BookingCancel(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"release_seats": False, "reason": "Seat is broken"}]},
    )

    release_seats: bool = Field(
        default=True,
        strict=True,
        description="true: its seats go back on sale. false: they stay booked by the "
        "cancelled booking, withdrawn from sale (and refused at the door); cancelling again "
        "with true puts them back on sale later.",
    )
    reason: str | None = Field(
        default=None,
        min_length=1,
        max_length=500,
        description="Why; the buyer's e-mail says it, and the audit log records it.",
    )


class EventCancel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(
        default=None, min_length=1, max_length=500, description="Why; the audit log records it."
    )


class BookingTicketOut(BaseModel):
    label: str
    code: str = Field(description="The ticket's secret code (what the door scans).")
    checked_in_at: datetime | None
    checked_in_by: str | None = Field(description="The scanner that admitted it, or `admin`.")


class OrganiserBookingOut(BaseModel):
    id: uuid.UUID
    event_id: uuid.UUID
    code: str
    customer: str
    status: str = Field(description="`confirmed` or `cancelled`.")
    total: int = Field(description="Minor units.")
    currency: str
    created_at: datetime
    cancelled_at: datetime | None
    cancel_reason: str | None = Field(
        description="Why it was cancelled (`event-cancelled` when its event was)."
    )
    payment_status: str | None = Field(
        description="`paid`, `refund_pending` (owed back, the refunder pays it) or `refunded`."
    )
    seats_held: int = Field(
        description="Seats still booked by this booking: all of them while it is confirmed; "
        "for a cancelled one, the seats it withdrew from sale."
    )
    tickets: list[BookingTicketOut]

    @classmethod
    def of(cls, booking: OrganiserBooking) -> "OrganiserBookingOut":
        return cls(
            id=booking.id,
            event_id=booking.event_id,
            code=booking.code,
            customer=booking.customer,
            status=booking.status,
            total=booking.total_minor,
            currency=booking.currency,
            created_at=booking.created_at,
            cancelled_at=booking.cancelled_at,
            cancel_reason=booking.cancel_reason,
            payment_status=booking.payment_status,
            seats_held=booking.seats_held,
            tickets=[
                BookingTicketOut(
                    label=t.label,
                    code=t.code,
                    checked_in_at=t.checked_in_at,
                    checked_in_by=t.checked_in_by,
                )
                for t in booking.tickets
            ],
        )


class BookingPage(BaseModel):
    items: list[OrganiserBookingOut]
    next_after: uuid.UUID | None = Field(
        description="Pass as `after` to get the next page; null on the last page."
    )

    @classmethod
    def of(cls, page: BookingsPage) -> "BookingPage":
        return cls(
            items=[OrganiserBookingOut.of(b) for b in page.items], next_after=page.next_after
        )


class EventCancellationOut(BaseModel):
    event_id: uuid.UUID
    cancelled_at: datetime
    holds_released: int = Field(description="By this call (0 when repeated).")
    bookings_cancelled: int = Field(description="By this call (0 when repeated).")
    seats_released: int = Field(description="Booked seats back on sale, by this call.")
    refunds_requested: int = Field(description="Payments now owed back, by this call.")

    @classmethod
    def of(cls, done: EventCancellation) -> "EventCancellationOut":
        return cls(
            event_id=done.event_id,
            cancelled_at=done.cancelled_at,
            holds_released=done.holds_released,
            bookings_cancelled=done.bookings_cancelled,
            seats_released=done.seats_released,
            refunds_requested=done.refunds_requested,
        )


class AuditEntryOut(BaseModel):
    id: int
    at: datetime
    actor: str = Field(description="`admin`, a scanner's name, `provider:<name>`, `refunder`.")
    action: str = Field(examples=["booking-cancelled"])
    booking_id: uuid.UUID | None
    details: dict[str, Any]

    @classmethod
    def of(cls, entry: AuditEntry) -> "AuditEntryOut":
        return cls(
            id=entry.id,
            at=entry.at,
            actor=entry.actor,
            action=entry.action,
            booking_id=entry.booking_id,
            details=entry.details,
        )


class AuditLogPage(BaseModel):
    items: list[AuditEntryOut]
    next_after: int | None = Field(
        description="Pass as `after` to get the next page; null on the last page."
    )

    @classmethod
    def of(cls, page: AuditPage) -> "AuditLogPage":
        return cls(items=[AuditEntryOut.of(e) for e in page.items], next_after=page.next_after)
