"""Demo data: boxoffice's own two demo events, and the original demo's data set.

The original demo (see DESIGN.md, "The original demo's clients") shipped two events and ten
tickets with fixed UUIDs; its clients, its `run_concurrent.py` among them, hard-code one of
them, so we create exactly those, with the demo's dates.
"""

import datetime as dt
import uuid
from dataclasses import dataclass

import asyncpg

from boxoffice.db import Database
from boxoffice.events.schemas import EventCreate, GeneralAdmissionIn, SectionIn
from boxoffice.events.service import create_event
from boxoffice.reservations.demo import reset_to_unsold

# pg_advisory_lock key of the demo seed ("bxseed" in ASCII).
SEED_LOCK = 0x62787365_6564


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


@dataclass(frozen=True)
class OriginalDemoEvent:
    # Our own fixed id, so a re-seed finds the event again; the demo's events had integer ids.
    id: uuid.UUID
    name: str
    starts_at: dt.datetime
    ticket_ids: tuple[uuid.UUID, ...]


ORIGINAL_DEMO_EVENTS = (
    OriginalDemoEvent(
        id=uuid.UUID("061da83a-6229-4c5b-b86f-574a5c1fdbfe"),
        name="Event #1",
        starts_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        ticket_ids=tuple(
            uuid.UUID(u)
            for u in (
                "bf2af413-dd2f-4dd2-a0e1-13def2abe020",
                "94c60c55-0e59-41b3-9f56-55a67ddef42f",
                "410c82b1-d33a-4eec-b93f-9b42f66f1000",
                "b34b2e03-edba-46bb-884d-d64a30e3886a",
                "c6f0078a-224a-449c-aeb8-0a81fbba1e8a",
            )
        ),
    ),
    OriginalDemoEvent(
        id=uuid.UUID("f9efbae6-e5d3-490a-acd3-fef980dd7a4c"),
        name="Event #2",
        starts_at=dt.datetime(2026, 1, 2, tzinfo=dt.UTC),
        ticket_ids=tuple(
            uuid.UUID(u)
            for u in (
                "cfae7a8f-4d1f-4ac0-aab7-fb46b3f9f420",
                "664047f8-3253-41e4-98d6-9416cd3af9d4",
                "bf03a62f-338c-4b13-a291-2d52152fcfa0",
                "fef88ffa-a9e2-425a-86d0-c8d0b4c5555d",
                "91691830-bd26-4ebf-9f8c-b8e15bdbf136",
            )
        ),
    ),
)

# The demo's ticket that its run_concurrent.py fights over.
ORIGINAL_DEMO_TICKET = ORIGINAL_DEMO_EVENTS[0].ticket_ids[0]


@dataclass(frozen=True)
class OriginalDemoSeed:
    created_tickets: int
    reset_tickets: int


async def _create_original_demo(conn: asyncpg.Connection, *, hold_seconds: int) -> int:
    # The demo's events are dated January 2026 and its clients still reserve their tickets
    # (DESIGN.md's compatibility contract): their sales never end, which the API refuses to
    # any other event (a started event is not sold).
    created = 0
    for event in ORIGINAL_DEMO_EVENTS:
        await conn.execute(
            """
            INSERT INTO events (id, name, starts_at, hold_seconds, currency, kind, ticket_count,
                                sales_end_at)
            VALUES ($1, $2, $3, $4, 'EUR', 'general_admission', $5, 'infinity')
            ON CONFLICT (id) DO NOTHING
            """,
            event.id,
            event.name,
            event.starts_at,
            hold_seconds,
            len(event.ticket_ids),
        )
        # A ticket the event already has keeps its row (and its internal id).
        inserted = await conn.fetch(
            """
            INSERT INTO tickets (public_id, event_id, position, label, price_minor)
            SELECT u.public_id, $1, u.n - 1, 'GA ' || u.n, 0
            FROM unnest($2::uuid[]) WITH ORDINALITY AS u(public_id, n)
            ORDER BY u.n
            ON CONFLICT DO NOTHING
            RETURNING id
            """,
            event.id,
            list(event.ticket_ids),
        )
        created += len(inserted)
    return created


async def seed_original_demo(db: Database, *, hold_seconds: int) -> OriginalDemoSeed:
    """The original demo's events and tickets, all ten on sale; the same after every run."""
    async with db.transaction() as conn:
        created = await _create_original_demo(conn, hold_seconds=hold_seconds)
        reset = await reset_to_unsold(conn, [event.id for event in ORIGINAL_DEMO_EVENTS])
    return OriginalDemoSeed(created_tickets=created, reset_tickets=reset)


async def seed_demo(db: Database, *, hold_seconds: int, force: bool = False) -> int:
    """On an empty database (or with `force`): the original demo's data set first, so its ten
    tickets come first in its `GET /tickets`, then boxoffice's demo events. Returns how many
    events were created."""
    # Several hosts starting on one empty database: one seeds, the others wait and then find
    # its events (a session lock, held on a connection of its own while others do the work).
    async with db.connection() as locked:
        # The service's lock_timeout (a busy seat is a fast 409) would end this wait in 100 ms;
        # here waiting is the point. RESET restores the connection's own settings.
        await locked.execute("SET lock_timeout = 0; SET statement_timeout = 0")
        await locked.execute("SELECT pg_advisory_lock($1)", SEED_LOCK)
        try:
            has_events = await db.fetchval("SELECT EXISTS (SELECT 1 FROM events)")
            if has_events and not force:
                return 0
            return await _seed_demo(db, hold_seconds=hold_seconds)
        finally:
            await locked.execute("SELECT pg_advisory_unlock($1)", SEED_LOCK)
            await locked.execute("RESET lock_timeout; RESET statement_timeout")


async def _seed_demo(db: Database, *, hold_seconds: int) -> int:
    original = await seed_original_demo(db, hold_seconds=hold_seconds)
    now = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    events = demo_events(now)
    for event in events:
        await create_event(
            db, event=event, default_hold_seconds=hold_seconds, max_tickets=1_000_000
        )
    original_events = len(ORIGINAL_DEMO_EVENTS) if original.created_tickets else 0
    return len(events) + original_events
