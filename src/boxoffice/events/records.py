"""Event rows as the event reads return them: small, typed, immutable."""

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Self


@dataclass(frozen=True, slots=True)
class EventRow:
    """An event with its tickets counted by status as buyers see it now."""

    id: uuid.UUID
    name: str
    venue: str | None
    starts_at: datetime
    hold_seconds: int
    currency: str
    kind: str
    ticket_count: int
    created_at: datetime
    available: int
    reserved: int
    booked: int
    sales_start_at: datetime | None
    sales_end_at: datetime | None  # None: never (the original demo's events only)
    on_sale: bool
    max_tickets_per_customer: int | None
    queue_enabled: bool
    queue_admit_per_minute: int | None
    queue_max_shoppers: int | None
    queue_pass_seconds: int | None
    cancelled_at: datetime | None  # set once the organiser cancelled it: nothing more is sold

    @classmethod
    def of(cls, record: Any) -> Self:
        return cls(**record)


@dataclass(frozen=True, slots=True)
class SectionRow:
    name: str
    tickets: int
    available: int
    first_position: int

    @classmethod
    def of(cls, record: Any) -> Self:
        return cls(**record)


@dataclass(frozen=True, slots=True)
class EventWithSections:
    event: EventRow
    sections: list[SectionRow]
