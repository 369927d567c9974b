import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from boxoffice.events.records import EventRow

Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", examples=["EUR"])]
# Numbers must be JSON numbers: "2" or true for a count is a client bug worth reporting.
Price = Annotated[int, Field(strict=True, ge=0, le=100_000_000, description="Minor units (cents).")]


def _iso_text(value: Any) -> Any:
    # Lax mode would read a number as seconds since 1970: the schema promises a string.
    if not isinstance(value, str | datetime):
        raise ValueError("must be an ISO 8601 date-time, e.g. 2027-06-01T20:00:00Z")
    return value


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("needs a timezone, e.g. 2027-06-01T20:00:00Z")
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range") from None
    if not 1970 <= utc.year <= 9999:
        raise ValueError("must be between 1970 and 9999")
    return value


Moment = Annotated[datetime, BeforeValidator(_iso_text), AfterValidator(_aware)]
# Holds and bookings of one customer together; more than any hold may take is allowed.
CustomerCap = Annotated[int, Field(strict=True, ge=1, le=100_000)]


class SaleSettings(BaseModel):
    """The on-sale controls an organiser sets on create and may change later."""

    model_config = ConfigDict(extra="forbid")

    sales_start_at: Moment | None = Field(
        default=None,
        description="When sales open; omitted or null: at once.",
        examples=["2027-03-01T10:00:00Z"],
    )
    sales_end_at: Moment | None = Field(
        default=None,
        description="When sales end, at the latest `starts_at`; omitted or null: `starts_at`.",
    )
    max_tickets_per_customer: CustomerCap | None = Field(
        default=None,
        description="Most tickets one customer (compared trimmed and case-insensitively) may "
        "hold and have bought together; null: no cap.",
        examples=[4],
    )
    queue_enabled: bool = Field(
        default=False,
        strict=True,
        description="Sell through a waiting room: reservations need a pass it hands out.",
    )
    queue_admit_per_minute: int | None = Field(
        default=None,
        strict=True,
        ge=1,
        le=1_000_000,
        description="Waiting room: buyers admitted per minute (this, the cap on shoppers, or "
        "both, when the waiting room is on).",
        examples=[600],
    )
    queue_max_shoppers: int | None = Field(
        default=None,
        strict=True,
        ge=1,
        le=1_000_000,
        description="Waiting room: most admitted buyers shopping at once (an unused pass "
        "gives its place back when it expires; a hold counts while it lasts).",
    )
    queue_pass_seconds: int | None = Field(
        default=None,
        strict=True,
        ge=60,
        le=86_400,
        description="Waiting room: how long a pass is good for; null: QUEUE_PASS_SECONDS.",
    )


def check_queue(
    queue_enabled: bool, admit_per_minute: int | None, max_shoppers: int | None
) -> None:
    """A waiting room must admit somehow (ValueError otherwise)."""
    if queue_enabled and admit_per_minute is None and max_shoppers is None:
        raise ValueError(
            "a waiting room needs queue_admit_per_minute or queue_max_shoppers (or both)"
        )


def check_sales_window(
    starts_at: datetime, sales_start_at: datetime | None, sales_end_at: datetime | None
) -> None:
    """Sales end by the start, and open before they end (ValueError otherwise)."""
    end = sales_end_at or starts_at
    if end > starts_at:
        raise ValueError("sales_end_at must not be after starts_at: a started event is not sold")
    if sales_start_at is not None and sales_start_at >= end:
        raise ValueError("sales_start_at must be before the end of sales")


class SectionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=60, examples=["Stalls"])
    rows: int = Field(strict=True, ge=1, le=500, examples=[10])
    seats_per_row: int = Field(strict=True, ge=1, le=1000, examples=[20])
    price: Price


class GeneralAdmissionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    quantity: int = Field(strict=True, ge=1, le=1_000_000, examples=[500])
    price: Price


class EventCreate(SaleSettings):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, examples=["Midsummer Night Concert"])
    venue: str | None = Field(default=None, max_length=200, examples=["Open Air Stage"])
    starts_at: Moment = Field(examples=["2027-06-21T19:30:00Z"])
    hold_seconds: int | None = Field(
        default=None,
        strict=True,
        ge=1,
        le=86_400,
        description="Hold length; the server default if omitted.",
    )
    currency: Currency = "EUR"
    sections: list[SectionIn] | None = Field(default=None, min_length=1, max_length=100)
    general_admission: GeneralAdmissionIn | None = None

    @model_validator(mode="after")
    def _one_layout(self) -> "EventCreate":
        if (self.sections is None) == (self.general_admission is None):
            raise ValueError("give either sections (seated) or general_admission, not both")
        if self.sections is not None:
            names = [section.name for section in self.sections]
            if len(set(names)) != len(names):
                raise ValueError("section names must be unique within an event")
        check_sales_window(self.starts_at, self.sales_start_at, self.sales_end_at)
        check_queue(self.queue_enabled, self.queue_admit_per_minute, self.queue_max_shoppers)
        return self

    @property
    def ticket_count(self) -> int:
        if self.general_admission is not None:
            return self.general_admission.quantity
        assert self.sections is not None
        return sum(section.rows * section.seats_per_row for section in self.sections)


# Members an edit may change but never clear: an event always has them.
_REQUIRED_ON_EDIT = ("name", "starts_at", "hold_seconds")


class EventUpdate(SaleSettings):
    """What to change; members left out keep their value, null clears one (not `name`,
    `starts_at` or `hold_seconds`, which an event always has)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"sales_start_at": "2027-03-01T10:00:00Z", "max_tickets_per_customer": 4},
                {"name": "Midsummer Night Concert (moved)", "starts_at": "2027-06-22T19:30:00Z"},
            ]
        },
    )

    name: str | None = Field(default=None, min_length=1, max_length=200)
    venue: str | None = Field(default=None, max_length=200, description="null clears it.")
    starts_at: Moment | None = Field(
        default=None,
        description="The sales window must still end by then (an explicit `sales_end_at` "
        "after it is refused).",
    )
    hold_seconds: int | None = Field(
        default=None,
        strict=True,
        ge=1,
        le=86_400,
        description="Hold length for new holds; holds made before keep their expiry.",
    )

    @model_validator(mode="after")
    def _keeps_what_an_event_needs(self) -> "EventUpdate":
        cleared = [
            name
            for name in _REQUIRED_ON_EDIT
            if name in self.model_fields_set and getattr(self, name) is None
        ]
        if cleared:
            raise ValueError(f"{', '.join(cleared)} cannot be null: an event always has one")
        return self


class StatusCounts(BaseModel):
    available: int
    reserved: int
    booked: int


class SectionOut(BaseModel):
    name: str
    tickets: int
    available: int


class EventOut(BaseModel):
    id: uuid.UUID
    name: str
    venue: str | None
    starts_at: datetime
    hold_seconds: int
    currency: str
    kind: str = Field(description="`seated` or `general_admission`.")
    ticket_count: int
    counts: StatusCounts
    created_at: datetime
    sales_start_at: datetime | None = Field(description="When sales open; null: since creation.")
    sales_end_at: datetime | None = Field(
        description="When sales end; null: never (only the original demo's two events, which "
        "its clients still reserve)."
    )
    on_sale: bool = Field(
        description="Whether the sales window is open now (database clock) and the event is "
        "not cancelled."
    )
    max_tickets_per_customer: int | None
    queue_enabled: bool
    queue_admit_per_minute: int | None
    queue_max_shoppers: int | None
    queue_pass_seconds: int | None
    cancelled_at: datetime | None = Field(
        description="When the organiser cancelled the event (nothing more is sold); null if not."
    )

    @classmethod
    def from_row(cls, row: EventRow) -> "EventOut":
        return cls(
            id=row.id,
            name=row.name,
            venue=row.venue,
            starts_at=row.starts_at,
            hold_seconds=row.hold_seconds,
            currency=row.currency,
            kind=row.kind,
            ticket_count=row.ticket_count,
            counts=StatusCounts(available=row.available, reserved=row.reserved, booked=row.booked),
            created_at=row.created_at,
            sales_start_at=row.sales_start_at,
            sales_end_at=row.sales_end_at,
            on_sale=row.on_sale,
            max_tickets_per_customer=row.max_tickets_per_customer,
            queue_enabled=row.queue_enabled,
            queue_admit_per_minute=row.queue_admit_per_minute,
            queue_max_shoppers=row.queue_max_shoppers,
            queue_pass_seconds=row.queue_pass_seconds,
            cancelled_at=row.cancelled_at,
        )


class EventDetail(EventOut):
    sections: list[SectionOut]


class EventPage(BaseModel):
    items: list[EventOut]
    next_after: uuid.UUID | None = Field(
        description="Pass as `after` to get the next page; null on the last page."
    )
