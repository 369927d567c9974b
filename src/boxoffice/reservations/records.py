"""The rows the reservation services hand to the routers: small, typed, immutable."""

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Self

from boxoffice.tickets.records import TicketRow


@dataclass(frozen=True, slots=True)
class HeldTicket:
    """A ticket as a new hold lists it."""

    id: int
    label: str
    section: str | None
    row_label: str | None
    seat: int | None
    price_minor: int


@dataclass(frozen=True, slots=True)
class Hold:
    """A new reservation as the buyer sees it; the only time its token is ever shown."""

    reservation_id: uuid.UUID
    event_id: uuid.UUID
    customer: str
    token: str
    created_at: datetime
    expires_at: datetime
    currency: str
    tickets: list[HeldTicket]


@dataclass(frozen=True, slots=True)
class ReservationRow:
    id: uuid.UUID
    event_id: uuid.UUID
    customer: str
    token_hash: bytes
    ticket_count: int
    created_at: datetime
    expires_at: datetime
    ended_at: datetime | None
    # As stored, and as a holder sees it now (an active hold past its expiry is `expired`).
    stored_status: str
    status: str
    hold_expired: bool

    @classmethod
    def of(cls, record: Any) -> Self:
        return cls(**record)


@dataclass(frozen=True, slots=True)
class ReservationTicket(TicketRow):
    currency: str


@dataclass(frozen=True, slots=True)
class BookingRow:
    id: uuid.UUID
    reservation_id: uuid.UUID
    event_id: uuid.UUID
    customer: str
    payment_reference: str
    total_minor: int
    currency: str
    created_at: datetime
    code: str
    status: str

    @classmethod
    def of(cls, record: Any) -> Self:
        return cls(**record)


@dataclass(frozen=True, slots=True)
class ReservationView:
    reservation: ReservationRow
    tickets: list[ReservationTicket]
    booking: BookingRow | None
