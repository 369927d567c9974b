"""The sold-out waiting list at the service layer: sign-up, offers that pass on, and the
open sale kept shut while anybody waits. The offerer runs as the admitter calls it; holds
lapse when the test moves them into the past on the database clock."""

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from boxoffice.config import async_url
from boxoffice.db import Database
from boxoffice.errors import TicketsUnavailable
from boxoffice.events.schemas import EventCreate, SectionIn
from boxoffice.events.service import create_event
from boxoffice.reservations import holder
from boxoffice.reservations.records import Hold
from boxoffice.reservations.reserve import reserve_best_available, reserve_tickets
from boxoffice.waitlist.service import (
    AlreadyWaiting,
    NotSoldOut,
    entry_token,
    get_entry,
    leave,
    offer_returned_seats,
    sign_up,
)
from tests.conftest import (
    Databases,
    assert_invariants,
    close_service_db,
    migrated_database,
    service_db,
)
from tests.support.expiry import move_expiry_into_the_past


@pytest.fixture(scope="module")
def database_url(databases: Databases) -> str:
    """A database of this module's own: no running server's admitter may admit or offer
    here (the offers made here are the test's own)."""
    return migrated_database(databases)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(async_url(database_url))
    yield engine
    await engine.dispose()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def db(engine: AsyncEngine) -> AsyncIterator[Database]:
    yield service_db(engine)
    await close_service_db(engine)


SECRET = b"waitlist-test-secret"


async def small_event(db: Database, *, seats: int = 4, cap: int | None = None) -> uuid.UUID:
    return await create_event(
        db,
        event=EventCreate(
            name="Small room",
            starts_at=datetime.now(UTC) + timedelta(days=5),
            sections=[SectionIn(name="Main", rows=1, seats_per_row=seats, price=1000)],
            max_tickets_per_customer=cap,
        ),
        default_hold_seconds=300,
        max_tickets=1000,
    )


async def sell_out(db: Database, event_id: uuid.UUID, seats: int = 4) -> list[Hold]:
    """Every seat held, one per buyer."""
    return [
        await reserve_best_available(
            db, event_id=event_id, quantity=1, section=None, customer=f"first{n}@x.org"
        )
        for n in range(seats)
    ]


async def offer(db: Database) -> int:
    return await offer_returned_seats(db, secret=SECRET)


async def holds_of(engine: AsyncEngine, event_id: uuid.UUID) -> dict[str, int]:
    """Live holds and bookings per customer."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT customer, sum(ticket_count) FROM reservations WHERE event_id = :e"
                " AND (status = 'confirmed' OR (status = 'active' AND expires_at > now()))"
                " GROUP BY customer"
            ),
            {"e": event_id},
        )
        return {row[0]: int(row[1]) for row in rows}


async def test_sign_up_only_when_sold_out_and_once_per_customer(
    db: Database, engine: AsyncEngine
) -> None:
    event_id = await small_event(db)
    with pytest.raises(NotSoldOut):
        await sign_up(db, event_id=event_id, customer="w@x.org", quantity=1)
    await sell_out(db, event_id)
    entry = await sign_up(db, event_id=event_id, customer="W@x.org", quantity=1)
    with pytest.raises(AlreadyWaiting):
        await sign_up(db, event_id=event_id, customer=" w@x.org", quantity=1)
    found = await get_entry(db, event_id=event_id, entry_id=entry)
    assert (found.status, found.position) == ("waiting", 1)
    assert await offer(db) == 0  # nothing came back


async def test_a_returned_seat_is_offered_in_turn_not_sold_openly(
    db: Database, engine: AsyncEngine
) -> None:
    event_id = await small_event(db)
    holds = await sell_out(db, event_id)
    first = await sign_up(db, event_id=event_id, customer="ada@x.org", quantity=1)
    second = await sign_up(db, event_id=event_id, customer="bob@x.org", quantity=1)

    await holder.release(db, reservation_id=holds[0].reservation_id, token=holds[0].token)
    # The seat is free, but not for the open sale: it is owed to the waiting list.
    with pytest.raises(TicketsUnavailable) as refused:
        await reserve_best_available(
            db, event_id=event_id, quantity=1, section=None, customer="sniper@x.org"
        )
    assert "waiting list" in refused.value.detail
    freed = holds[0].tickets[0].id
    with pytest.raises(TicketsUnavailable):
        await reserve_tickets(db, event_id=event_id, ticket_ids=[freed], customer="sniper@x.org")

    assert await offer(db) == 1
    ada = await get_entry(db, event_id=event_id, entry_id=first)
    assert ada.status == "offered" and ada.reservation_id is not None
    assert (await get_entry(db, event_id=event_id, entry_id=second)).position == 1
    # The offer is a hold the entry's token reads and pays for.
    token = entry_token(SECRET, first)
    view = await holder.get_reservation(db, reservation_id=ada.reservation_id, token=token)
    assert view.reservation.customer == "ada@x.org" and [t.id for t in view.tickets] == [freed]
    await holder.confirm(
        db, reservation_id=ada.reservation_id, token=token, payment_reference="wl-1"
    )
    assert (await get_entry(db, event_id=event_id, entry_id=first)).status == "claimed"
    assert "sniper@x.org" not in await holds_of(engine, event_id)
    await assert_invariants(engine, str(event_id))


async def test_an_unclaimed_offer_passes_to_the_next_in_line(
    db: Database, engine: AsyncEngine
) -> None:
    event_id = await small_event(db)
    holds = await sell_out(db, event_id)
    first = await sign_up(db, event_id=event_id, customer="slow@x.org", quantity=1)
    second = await sign_up(db, event_id=event_id, customer="quick@x.org", quantity=1)
    moved, _ = await move_expiry_into_the_past(engine, holds[2].reservation_id)
    assert moved
    assert await offer(db) == 1  # a lapsed hold comes back, unswept
    slow = await get_entry(db, event_id=event_id, entry_id=first)
    assert slow.status == "offered" and slow.reservation_id is not None

    moved, _ = await move_expiry_into_the_past(engine, slow.reservation_id)
    assert moved
    assert (await get_entry(db, event_id=event_id, entry_id=first)).status == "lapsed"
    assert await offer(db) == 1
    quick = await get_entry(db, event_id=event_id, entry_id=second)
    assert quick.status == "offered"
    assert await holds_of(engine, event_id) == {
        "first0@x.org": 1,
        "first1@x.org": 1,
        "first3@x.org": 1,
        "quick@x.org": 1,
    }
    await assert_invariants(engine, str(event_id))


async def test_first_come_first_served_even_for_a_larger_request(
    db: Database, engine: AsyncEngine
) -> None:
    event_id = await small_event(db)
    holds = await sell_out(db, event_id)
    pair = await sign_up(db, event_id=event_id, customer="pair@x.org", quantity=2)
    single = await sign_up(db, event_id=event_id, customer="single@x.org", quantity=1)
    await holder.release(db, reservation_id=holds[1].reservation_id, token=holds[1].token)
    assert await offer(db) == 0  # one seat back: not enough for the first in line
    assert (await get_entry(db, event_id=event_id, entry_id=single)).status == "waiting"
    await holder.release(db, reservation_id=holds[3].reservation_id, token=holds[3].token)
    assert await offer(db) == 1
    assert (await get_entry(db, event_id=event_id, entry_id=pair)).status == "offered"
    assert (await holds_of(engine, event_id))["pair@x.org"] == 2
    # Someone who leaves the line gives up their turn.
    await leave(db, event_id=event_id, entry_id=single)
    assert (await get_entry(db, event_id=event_id, entry_id=single)).status == "left"
    await assert_invariants(engine, str(event_id))


async def test_an_offer_never_takes_a_customer_past_the_cap_and_open_sale_resumes(
    db: Database, engine: AsyncEngine
) -> None:
    event_id = await small_event(db, cap=1)
    holds = await sell_out(db, event_id)
    # first0 holds one already: the cap of one leaves no room for an offer.
    greedy = await sign_up(db, event_id=event_id, customer="first0@x.org", quantity=1)
    await holder.release(db, reservation_id=holds[1].reservation_id, token=holds[1].token)
    assert await offer(db) == 0
    assert (await get_entry(db, event_id=event_id, entry_id=greedy)).status == "skipped"
    # Nobody waits any more: the free seat is on open sale again.
    hold = await reserve_best_available(
        db, event_id=event_id, quantity=1, section=None, customer="walkin@x.org"
    )
    assert hold.tickets[0].id == holds[1].tickets[0].id
    await assert_invariants(engine, str(event_id))
