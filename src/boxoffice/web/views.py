"""What the pages show, built from the services' rows: prices as text, the seat map as a grid.

The page's JavaScript keeps these up to date; it formats money and words seats the same way
(static/shop/), so a seat reads alike before and after the script takes over.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from boxoffice.events.records import EventRow
from boxoffice.tickets.records import TicketRow

# ISO 4217 currencies without minor units, and those with three; every other has two.
_NO_MINOR_UNITS = frozenset(
    "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF".split()  # noqa: SIM905
)
_THREE_MINOR_DIGITS = frozenset("BHD IQD JOD KWD LYD OMR TND".split())  # noqa: SIM905
_SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£", "JPY": "¥", "INR": "₹", "KRW": "₩", "ILS": "₪"}

# The words a seat's label uses for each status (static/shop/ has the same, plus its own two).
STATUS_WORDS = {"available": "available", "reserved": "held by another buyer", "booked": "sold"}


@dataclass(frozen=True)
class Currency:
    code: str
    symbol: str
    exponent: int

    def format(self, minor: int) -> str:
        whole, fraction = divmod(minor, 10**self.exponent)
        amount = f"{whole:,}" + (f".{fraction:0{self.exponent}d}" if self.exponent else "")
        return f"{self.symbol}{amount}"


def currency(code: str) -> Currency:
    exponent = 0 if code in _NO_MINOR_UNITS else 3 if code in _THREE_MINOR_DIGITS else 2
    # A code without a well-known symbol reads as "CHF 25.00".
    return Currency(code=code, symbol=_SYMBOLS.get(code, code + "\u00a0"), exponent=exponent)


def currency_rules() -> dict[str, Any]:
    """The rules above for the admin page's script, which turns typed prices into minor units."""
    return {
        "noMinorUnits": sorted(_NO_MINOR_UNITS),
        "threeMinorDigits": sorted(_THREE_MINOR_DIGITS),
        "symbols": _SYMBOLS,
    }


def when(moment: datetime) -> str:
    """The start time as text in UTC; the page's script restates it in the buyer's time zone."""
    return moment.astimezone(UTC).strftime("%a %d %b %Y, %H:%M UTC")


@dataclass(frozen=True)
class Seat:
    id: int
    section: str
    row: str
    number: int
    label: str
    status: str
    price_minor: int
    price_text: str

    @property
    def aria_label(self) -> str:
        return f"Row {self.row}, seat {self.number}, {STATUS_WORDS[self.status]}, {self.price_text}"

    @property
    def title(self) -> str:
        return f"{self.label} · {self.price_text} · {STATUS_WORDS[self.status]}"


@dataclass
class Row:
    label: str
    seats: list[Seat] = field(default_factory=list)


@dataclass
class Section:
    name: str
    rows: list[Row] = field(default_factory=list)
    prices: set[int] = field(default_factory=set)
    tickets: int = 0
    available: int = 0

    def price_text(self, money: Currency) -> str:
        low, high = min(self.prices), max(self.prices)
        return money.format(low) if low == high else f"{money.format(low)}–{money.format(high)}"


def seat_map(tickets: list[TicketRow], money: Currency) -> list[Section]:
    """Tickets in seat order (as the listing returns them) grouped into sections and rows."""
    sections: dict[str, Section] = {}
    for ticket in tickets:
        # A seated event's tickets are all numbered seats (the event's kind says so).
        assert ticket.section is not None and ticket.row_label is not None
        assert ticket.seat is not None
        section = sections.setdefault(ticket.section, Section(ticket.section))
        if not section.rows or section.rows[-1].label != ticket.row_label:
            section.rows.append(Row(ticket.row_label))
        section.rows[-1].seats.append(
            Seat(
                id=ticket.id,
                section=ticket.section,
                row=ticket.row_label,
                number=ticket.seat,
                label=ticket.label,
                status=ticket.status,
                price_minor=ticket.price_minor,
                price_text=money.format(ticket.price_minor),
            )
        )
        section.prices.add(ticket.price_minor)
        section.tickets += 1
        section.available += ticket.status == "available"
    return list(sections.values())


@dataclass(frozen=True)
class EventCard:
    """One event as the list and the seat page headline show it."""

    id: str
    name: str
    venue: str | None
    starts_at: datetime
    starts_at_text: str
    kind: str
    hold_seconds: int
    ticket_count: int
    available: int
    reserved: int
    booked: int
    currency: Currency
    on_sale: bool
    sales_start_at: datetime | None
    sales_start_text: str | None
    max_tickets_per_customer: int | None
    queue_enabled: bool = False
    queue_pass_seconds: int | None = None

    @property
    def seated(self) -> bool:
        return self.kind == "seated"

    @property
    def sold_out(self) -> bool:
        """Nothing free and nothing that may come back: every ticket is sold."""
        return self.available == 0 and self.reserved == 0

    @property
    def all_on_hold(self) -> bool:
        """Nothing free now, but some tickets are only held: they may come back."""
        return self.available == 0 and self.reserved > 0

    @property
    def not_on_sale_yet(self) -> bool:
        # For the words on the page only; whether a hold is taken is the database's call.
        start = self.sales_start_at
        return not self.on_sale and start is not None and start > datetime.now(UTC)

    @property
    def server_now(self) -> datetime:
        """The server's clock as the page is drawn: the page's countdown to the on-sale runs
        from it, so a wrong clock on the buyer's computer does not move the opening."""
        return datetime.now(UTC)

    @property
    def hold_text(self) -> str:
        minutes, seconds = divmod(self.hold_seconds, 60)
        if seconds == 0:
            return f"{minutes} minute{'s' * (minutes != 1)}"
        return f"{minutes}:{seconds:02d} minutes" if minutes else f"{seconds} seconds"


def event_card(row: EventRow) -> EventCard:
    return EventCard(
        id=str(row.id),
        name=row.name,
        venue=row.venue,
        starts_at=row.starts_at,
        starts_at_text=when(row.starts_at),
        kind=row.kind,
        hold_seconds=row.hold_seconds,
        ticket_count=row.ticket_count,
        available=row.available,
        reserved=row.reserved,
        booked=row.booked,
        currency=currency(row.currency),
        on_sale=row.on_sale,
        sales_start_at=row.sales_start_at,
        sales_start_text=when(row.sales_start_at) if row.sales_start_at is not None else None,
        max_tickets_per_customer=row.max_tickets_per_customer,
        queue_enabled=row.queue_enabled,
        queue_pass_seconds=row.queue_pass_seconds,
    )
