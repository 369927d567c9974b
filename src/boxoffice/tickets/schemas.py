import uuid
from typing import Annotated, Any

from pydantic import BaseModel, Field

from boxoffice.tickets.models import TicketStatus


class TicketOut(BaseModel):
    id: int
    event_id: uuid.UUID
    label: str
    section: str | None
    row: str | None
    seat: int | None
    price: int = Field(description="Price in minor units of the event's currency (cents).")
    currency: str
    status: TicketStatus

    @classmethod
    def from_row(cls, row: Any, currency: str) -> "TicketOut":
        return cls(
            id=row.id,
            event_id=row.event_id,
            label=row.label,
            section=row.section,
            row=row.row_label,
            seat=row.seat,
            price=row.price_minor,
            currency=currency,
            status=row.status,
        )


class TicketPage(BaseModel):
    items: list[TicketOut]
    next_after: int | None = Field(
        description="Pass as `after` to get the next page; null on the last page."
    )


class SeedReserveRequest(BaseModel):
    """The seed demo's body, kept so its clients run unchanged."""

    user_id: (
        Annotated[int, Field(strict=True, ge=-(2**63), le=2**63 - 1)]
        | Annotated[str, Field(min_length=1, max_length=200)]
    ) = Field(description="Who reserves; stored as the reservation's customer.")
    ticket_id: int = Field(strict=True, ge=1, le=2**63 - 1)


class SeedReserveResponse(BaseModel):
    ticket_id: int
    user_id: int | str
    status: TicketStatus
    reservation_id: uuid.UUID
    token: str
    expires_at: Any
