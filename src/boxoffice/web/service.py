"""Reads for the pages, through the events and tickets services the JSON API uses."""

import uuid
from dataclasses import dataclass

from boxoffice.db import Database
from boxoffice.events import service as events
from boxoffice.tickets import service as tickets
from boxoffice.tickets.records import TicketRow
from boxoffice.web.views import EventCard, Section, event_card, seat_map

# More seats than this on one page make a slow page and a slow browser: larger events show one
# section at a time, and a section larger still offers best available only.
SEAT_MAP_LIMIT = 3000


@dataclass(frozen=True)
class SectionSummary:
    name: str
    tickets: int
    available: int


@dataclass(frozen=True)
class ShopPage:
    event: EventCard
    sections: list[SectionSummary]
    seat_map: list[Section]
    # The one section shown when the whole event is too large for one map.
    focus: str | None
    # General admission: the price of one ticket, in minor units.
    unit_price: int | None


async def list_events(
    db: Database, *, limit: int, after: uuid.UUID | None
) -> tuple[list[EventCard], uuid.UUID | None]:
    # The storefront offers what can still be attended; the original demo's events are past.
    rows, next_after = await events.list_events(db, limit=limit, after=after, upcoming=True)
    return [event_card(row) for row in rows], next_after


async def shop_page(db: Database, *, event_id: uuid.UUID, section: str | None) -> ShopPage:
    """The event with the seats to draw (or, for general admission, its ticket price)."""
    found = await events.get_event(db, event_id=event_id)
    card = event_card(found.event)
    summaries = [SectionSummary(s.name, s.tickets, s.available) for s in found.sections]
    if not card.seated:
        first = await _tickets(db, event_id, section=None, limit=1)
        unit_price = first[0].price_minor if first else None
        return ShopPage(card, summaries, [], None, unit_price)
    if card.ticket_count <= SEAT_MAP_LIMIT:
        rows = await _tickets(db, event_id, section=None, limit=card.ticket_count)
        return ShopPage(card, summaries, seat_map(rows, card.currency), None, None)
    focus = next((s for s in summaries if s.name == section), summaries[0])
    if focus.tickets > SEAT_MAP_LIMIT:
        return ShopPage(card, summaries, [], focus.name, None)
    rows = await _tickets(db, event_id, section=focus.name, limit=focus.tickets)
    return ShopPage(card, summaries, seat_map(rows, card.currency), focus.name, None)


async def _tickets(
    db: Database, event_id: uuid.UUID, *, section: str | None, limit: int
) -> list[TicketRow]:
    _, rows, _ = await tickets.list_event_tickets(
        db, event_id=event_id, status=None, section=section, limit=limit, after=None
    )
    return rows
