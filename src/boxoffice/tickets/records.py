"""Ticket rows as the ticket reads return them: small, typed, immutable."""

import uuid
from dataclasses import dataclass
from typing import Any, Self


@dataclass(frozen=True, slots=True)
class TicketRow:
    """A ticket with its status as buyers see it now (an expired hold reads `available`)."""

    id: int
    event_id: uuid.UUID
    label: str
    section: str | None
    row_label: str | None
    seat: int | None
    price_minor: int
    status: str

    @classmethod
    def of(cls, record: Any) -> Self:
        return cls(**record)


@dataclass(frozen=True, slots=True)
class CatalogueTicket(TicketRow):
    """A ticket in the original demo's `GET /tickets`: with its public id and its event."""

    public_id: uuid.UUID
    currency: str
    event_name: str


@dataclass(frozen=True, slots=True)
class TicketRef:
    id: int
    public_id: uuid.UUID
    event_id: uuid.UUID
