"""Demo data for a fresh database: one seated event and one general-admission event."""

import datetime as dt

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from boxoffice.events.schemas import EventCreate, GeneralAdmissionIn, SectionIn
from boxoffice.events.service import create_event


def demo_events(now: dt.datetime) -> list[EventCreate]:
    return [
        EventCreate(
            name="Boxoffice Demo Night",
            venue="The Demo Hall",
            starts_at=now + dt.timedelta(days=30),
            currency="EUR",
            sections=[
                SectionIn(name="Stalls", rows=8, seats_per_row=16, price=4500),
                SectionIn(name="Balcony", rows=4, seats_per_row=12, price=2500),
            ],
        ),
        EventCreate(
            name="Open Air Festival",
            venue="Riverside Park",
            starts_at=now + dt.timedelta(days=60),
            currency="EUR",
            general_admission=GeneralAdmissionIn(quantity=500, price=3900),
        ),
    ]


async def seed_demo(engine: AsyncEngine, *, hold_seconds: int, force: bool = False) -> int:
    """Create the demo events unless some event exists (or `force`); returns how many."""
    async with engine.connect() as conn:
        has_events = (await conn.execute(text("SELECT EXISTS (SELECT 1 FROM events)"))).scalar()
    if has_events and not force:
        return 0
    now = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    events = demo_events(now)
    for event in events:
        await create_event(
            engine, event=event, default_hold_seconds=hold_seconds, max_tickets=1_000_000
        )
    return len(events)
