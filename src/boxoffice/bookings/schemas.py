import base64
import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from boxoffice.bookings.qr import qr_svg
from boxoffice.bookings.service import BookingPage


class IssuedTicketOut(BaseModel):
    label: str
    section: str | None
    row: str | None
    seat: int | None
    price: int
    code: str = Field(description="The ticket's secret code: what the door scans.")
    qr: str = Field(description="The code as a QR code: a `data:image/svg+xml` URI.")
    checked_in_at: datetime | None


class BookingPageOut(BaseModel):
    id: uuid.UUID
    code: str
    status: str = Field(description="`confirmed` or `cancelled`.")
    customer: str
    total: int
    currency: str
    created_at: datetime
    cancelled_at: datetime | None
    event_id: uuid.UUID
    event_name: str
    venue: str | None
    starts_at: datetime
    event_cancelled: bool
    tickets: list[IssuedTicketOut]

    @classmethod
    def of(cls, booking: BookingPage) -> "BookingPageOut":
        return cls(
            id=booking.id,
            code=booking.code,
            status=booking.status,
            customer=booking.customer,
            total=booking.total_minor,
            currency=booking.currency,
            created_at=booking.created_at,
            cancelled_at=booking.cancelled_at,
            event_id=booking.event_id,
            event_name=booking.event_name,
            venue=booking.venue,
            starts_at=booking.starts_at,
            event_cancelled=booking.event_cancelled,
            tickets=[
                IssuedTicketOut(
                    label=t.label,
                    section=t.section,
                    row=t.row_label,
                    seat=t.seat,
                    price=t.price_minor,
                    code=t.code,
                    qr="data:image/svg+xml;base64,"
                    + base64.b64encode(qr_svg(t.code).encode()).decode(),
                    checked_in_at=t.checked_in_at,
                )
                for t in booking.tickets
            ],
        )


class LookupRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(min_length=3, max_length=200)
    code: str = Field(min_length=1, max_length=20, description="The booking's short code.")


class LookupAnswer(BaseModel):
    detail: str
