import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field

from boxoffice.tickets.models import TicketStatus
from boxoffice.tickets.records import CatalogueTicket, TicketRow


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
    def from_row(cls, row: TicketRow, currency: str) -> "TicketOut":
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


class DemoTicketOut(BaseModel):
    """A ticket as the original demo listed it (`id` is its UUID), plus boxoffice's fields."""

    id: uuid.UUID = Field(description="The ticket's public UUID (the original demo's id).")
    internal_id: int = Field(description="boxoffice's own id (also accepted by the API).")
    status: TicketStatus
    event_name: str
    event_id: uuid.UUID
    label: str
    section: str | None
    row: str | None
    seat: int | None
    price: int = Field(description="Price in minor units of the event's currency (cents).")
    currency: str

    @classmethod
    def from_row(cls, row: CatalogueTicket) -> "DemoTicketOut":
        return cls(
            id=row.public_id,
            internal_id=row.id,
            status=row.status,
            event_name=row.event_name,
            event_id=row.event_id,
            label=row.label,
            section=row.section,
            row=row.row_label,
            seat=row.seat,
            price=row.price_minor,
            currency=row.currency,
        )


class DemoTicketList(BaseModel):
    data: list[DemoTicketOut]
    next: str | None = Field(description="The next page's URL (path and query); null on the last.")


# The ticket as the original demo's clients name it: its UUID, or boxoffice's integer id.
TicketReference = Annotated[int, Field(strict=True, ge=1, le=2**63 - 1)] | uuid.UUID


class SeedReserveRequest(BaseModel):
    """The original demo's body, kept so its clients run unchanged."""

    user_id: (
        Annotated[int, Field(strict=True, ge=-(2**63), le=2**63 - 1)]
        | Annotated[str, Field(min_length=1, max_length=200)]
    ) = Field(description="Who reserves; stored as the reservation's customer.")
    ticket_id: TicketReference = Field(
        description="The ticket's UUID (as the original demo's clients send it) or its id.",
        examples=["bf2af413-dd2f-4dd2-a0e1-13def2abe020", 1],
    )


class SeedReserveResponse(BaseModel):
    message: str = Field(description="What happened, in words (the original demo's answer).")
    ticket_id: int | uuid.UUID = Field(description="The ticket as the request named it.")
    ticket_public_id: uuid.UUID
    internal_id: int = Field(description="boxoffice's own id of the ticket.")
    user_id: int | str
    status: TicketStatus
    reservation_id: uuid.UUID
    token: str
    expires_at: datetime
