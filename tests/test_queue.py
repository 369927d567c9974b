"""The waiting room at the service layer: joining, the draw, admission, and passes.

The admitter's ticks are called directly (`admit_once`); time passes only on the database
clock, moved by the test (sales open, a tick's elapsed time, a pass's expiry).
"""

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from boxoffice.config import async_url
from boxoffice.db import Database
from boxoffice.errors import QueuePassRequired
from boxoffice.events.schemas import EventCreate, SectionIn
from boxoffice.events.service import create_event
from boxoffice.queue.service import (
    AlreadyQueued,
    QueueClosed,
    admit_once,
    get_place,
    join_queue,
    leave_queue,
    pass_of,
    place_of_token,
    place_token,
    queue_stats,
)
from boxoffice.reservations import holder
from boxoffice.reservations.reserve import reserve_best_available, reserve_tickets
from tests.conftest import (
    Databases,
    assert_invariants,
    close_service_db,
    migrated_database,
    service_db,
)


@pytest.fixture(scope="module")
def database_url(databases: Databases) -> str:
    """A database of this module's own: no running server's admitter may admit or offer
    here (the admitter ticks here are the test's own)."""
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


SECRET = b"queue-test-secret"
MAIN = SectionIn(name="Main", rows=5, seats_per_row=10, price=2500)


async def queued_event(
    db: Database,
    *,
    opens_in: timedelta | None = None,
    per_minute: int | None = 60,
    max_shoppers: int | None = None,
    cap: int | None = None,
) -> uuid.UUID:
    now = datetime.now(UTC)
    return await create_event(
        db,
        event=EventCreate(
            name="Queued",
            starts_at=now + timedelta(days=30),
            sections=[MAIN],
            sales_start_at=now + opens_in if opens_in is not None else None,
            queue_enabled=True,
            queue_admit_per_minute=per_minute,
            queue_max_shoppers=max_shoppers,
            max_tickets_per_customer=cap,
        ),
        default_hold_seconds=300,
        max_tickets=1000,
    )


async def execute(engine: AsyncEngine, sql: str, **params: object) -> None:
    async with engine.begin() as conn:
        await conn.execute(text(sql), params)


async def open_sales(engine: AsyncEngine, event_id: uuid.UUID) -> None:
    await execute(
        engine,
        "UPDATE events SET sales_start_at = now() - interval '1 second' WHERE id = :e",
        e=event_id,
    )


async def let_time_pass(engine: AsyncEngine, event_id: uuid.UUID, seconds: float) -> None:
    """The admitter's last tick was `seconds` ago (the rate earns admissions by time)."""
    await execute(
        engine,
        "UPDATE queue_state SET ticked_at = now() - make_interval(secs => :s) WHERE event_id = :e",
        s=seconds,
        e=event_id,
    )


async def tick(db: Database, event_id: uuid.UUID) -> int:
    async with db.connection() as conn:
        # Settled at once: these joins committed before the tick (the server waits 2 s).
        tick = await admit_once(conn, event_id=event_id, default_pass_seconds=600, settle_seconds=0)
        return tick.admitted


async def admission_order(engine: AsyncEngine, event_id: uuid.UUID) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT customer FROM queue_entries WHERE event_id = :e"
                " AND status IN ('admitted', 'used') ORDER BY admitted_at, lane, rank"
            ),
            {"e": event_id},
        )
        return list(rows.scalars())


async def seat_ids(engine: AsyncEngine, event_id: uuid.UUID) -> list[int]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT id FROM tickets WHERE event_id = :e ORDER BY position"), {"e": event_id}
        )
        return list(rows.scalars())


# --- tokens ------------------------------------------------------------------------------------


def test_a_place_token_is_signed_and_a_forgery_is_refused_without_the_database() -> None:
    place = uuid.uuid4()
    token = place_token(SECRET, place)
    assert place_of_token(SECRET, token) == place
    assert pass_of(SECRET, token) == place
    other = uuid.uuid4()
    forged = f"{other.hex}.{token.partition('.')[2]}"
    for wrong in (forged, token[:-1] + "0", "garbage", place.hex, token + "x"):
        assert place_of_token(SECRET, wrong) is None or wrong == token
        if wrong != token:
            with pytest.raises(QueuePassRequired):
                pass_of(SECRET, wrong)
    assert place_of_token(b"another-secret", token) is None


# --- joining -----------------------------------------------------------------------------------


async def test_one_place_per_customer_whatever_the_spelling_and_the_race(
    db: Database, engine: AsyncEngine
) -> None:
    event_id = await queued_event(db)
    spellings = ["Dup@Example.com", "dup@example.com", " DUP@example.COM "] * 10
    outcomes = await asyncio.gather(
        *(join_queue(db, event_id=event_id, customer=c) for c in spellings),
        return_exceptions=True,
    )
    joined = [o for o in outcomes if isinstance(o, uuid.UUID)]
    assert len(joined) == 1
    assert all(isinstance(o, AlreadyQueued) for o in outcomes if o not in joined)
    assert (await queue_stats(db, event_id=event_id)).waiting == 1


async def test_an_event_without_a_waiting_room_refuses_joins(db: Database) -> None:
    event_id = await create_event(
        db,
        event=EventCreate(
            name="Open", starts_at=datetime.now(UTC) + timedelta(days=3), sections=[MAIN]
        ),
        default_hold_seconds=300,
        max_tickets=1000,
    )
    with pytest.raises(QueueClosed):
        await join_queue(db, event_id=event_id, customer="a@x.org")


# --- the pre-queue's draw, then first come first served ----------------------------------------


async def test_the_pre_queue_is_drawn_at_random_when_sales_open_and_goes_first(
    db: Database, engine: AsyncEngine
) -> None:
    event_id = await queued_event(db, opens_in=timedelta(hours=1), per_minute=6000)
    early = [f"early{n:02d}@x.org" for n in range(40)]
    for customer in early:
        await join_queue(db, event_id=event_id, customer=customer)
    place = await get_place(
        db, event_id=event_id, place_id=await join_queue(db, event_id=event_id, customer="e@x.org")
    )
    assert place.status == "pre-queue" and place.position is None
    assert await tick(db, event_id) == 0  # not open yet: nobody is drawn or admitted

    await open_sales(engine, event_id)
    late = [f"late{n}@x.org" for n in range(5)]
    for customer in late:
        await join_queue(db, event_id=event_id, customer=customer)
    await let_time_pass(engine, event_id, 10)  # 6000/min for 10 s: room for everyone
    assert await tick(db, event_id) == 46
    order = await admission_order(engine, event_id)
    assert set(order[:41]) == {*early, "e@x.org"} and order[41:] == late
    # 40! orders: the join order coming out of a fair draw is a 1 in 10^47 event.
    assert [c for c in order if c in early] != early


async def test_later_arrivals_are_admitted_in_join_order_at_the_rate(
    db: Database, engine: AsyncEngine
) -> None:
    event_id = await queued_event(db, per_minute=60)  # one a second
    customers = [f"fifo{n:02d}@x.org" for n in range(30)]
    for customer in customers:
        await join_queue(db, event_id=event_id, customer=customer)
    await tick(db, event_id)  # the first tick starts the clock
    await let_time_pass(engine, event_id, 10)
    assert await tick(db, event_id) == 10
    await let_time_pass(engine, event_id, 5)
    assert await tick(db, event_id) == 5
    assert await admission_order(engine, event_id) == customers[:15]

    last = await join_queue(db, event_id=event_id, customer="last@x.org")
    place = await get_place(db, event_id=event_id, place_id=last)
    assert (place.status, place.position) == ("waiting", None)  # numbered at the next tick
    await tick(db, event_id)  # no time passed: admits nobody, numbers the newcomer
    place = await get_place(db, event_id=event_id, place_id=last)
    assert (place.status, place.position) == ("waiting", 16)
    assert place.estimated_wait_seconds() == 16  # at one a second
    stats = await queue_stats(db, event_id=event_id)
    assert (stats.waiting, stats.admitted, stats.active_passes) == (16, 15, 15)


async def test_the_cap_on_shoppers_admits_as_passes_end(db: Database, engine: AsyncEngine) -> None:
    event_id = await queued_event(db, per_minute=None, max_shoppers=3)
    places = [await join_queue(db, event_id=event_id, customer=f"s{n}@x.org") for n in range(6)]
    assert await tick(db, event_id) == 3
    assert await tick(db, event_id) == 0

    # One shopper holds seats (still shopping), one pass runs out unused, one leaves.
    ids = await seat_ids(engine, event_id)
    hold = await reserve_tickets(
        db,
        event_id=event_id,
        ticket_ids=ids[:2],
        customer="s0@x.org",
        queue_pass=places[0],
    )
    await execute(
        engine,
        "UPDATE queue_entries SET pass_expires_at = now() - interval '1 second' WHERE id = :p",
        p=places[1],
    )
    await leave_queue(db, event_id=event_id, place_id=places[2])
    assert await tick(db, event_id) == 2
    assert (await get_place(db, event_id=event_id, place_id=places[1])).status == "expired"
    # The hold ends: its shopper is done, the last place comes in.
    await holder.release(db, reservation_id=hold.reservation_id, token=hold.token)
    assert await tick(db, event_id) == 1
    assert await admission_order(engine, event_id) == [f"s{n}@x.org" for n in (0, 1, 3, 4, 5)]
    await assert_invariants(engine, str(event_id))


# --- passes ------------------------------------------------------------------------------------


async def test_a_queued_event_sells_only_with_a_valid_pass_of_that_customer(
    db: Database, engine: AsyncEngine
) -> None:
    event_id = await queued_event(db, per_minute=6000)
    other_event = await queued_event(db, per_minute=6000)
    ada = await join_queue(db, event_id=event_id, customer="ada@x.org")
    bob = await join_queue(db, event_id=event_id, customer="bob@x.org")
    elsewhere = await join_queue(db, event_id=other_event, customer="ada@x.org")
    ids = await seat_ids(engine, event_id)

    async def hold(customer: str, queue_pass: uuid.UUID | None, seat: int) -> str:
        try:
            await reserve_tickets(
                db,
                event_id=event_id,
                ticket_ids=[ids[seat]],
                customer=customer,
                queue_pass=queue_pass,
            )
        except QueuePassRequired as refusal:
            return refusal.detail
        return "held"

    assert "join the queue" in await hold("ada@x.org", None, 0)
    assert "not been admitted" in await hold("ada@x.org", ada, 0)
    await tick(db, event_id)
    await let_time_pass(engine, event_id, 1)
    await tick(db, event_id)
    await tick(db, other_event)
    assert "another customer" in await hold("bob@x.org", ada, 0)
    assert "not for this event" in await hold("ada@x.org", elsewhere, 0)
    assert await hold(" ADA@x.org", ada, 0) == "held"
    assert "used" in await hold("ada@x.org", ada, 1)
    await execute(
        engine,
        "UPDATE queue_entries SET pass_expires_at = now() - interval '1 second' WHERE id = :p",
        p=bob,
    )
    assert "expired" in await hold("bob@x.org", bob, 2)
    with pytest.raises(QueuePassRequired):
        await reserve_best_available(
            db, event_id=event_id, quantity=1, section=None, customer="bob@x.org", queue_pass=bob
        )
    async with engine.connect() as conn:
        holds = await conn.scalar(
            text("SELECT count(*) FROM reservations WHERE event_id = :e"), {"e": event_id}
        )
    assert holds == 1
    await assert_invariants(engine, str(event_id))


async def test_one_pass_used_by_many_holds_at_once_makes_exactly_one(
    db: Database, engine: AsyncEngine
) -> None:
    event_id = await queued_event(db, per_minute=6000)
    place = await join_queue(db, event_id=event_id, customer="share@x.org")
    await tick(db, event_id)
    await let_time_pass(engine, event_id, 1)
    assert await tick(db, event_id) == 1
    ids = await seat_ids(engine, event_id)
    start = asyncio.Event()

    async def attempt(n: int) -> str:
        await start.wait()
        try:
            if n % 2:
                await reserve_tickets(
                    db,
                    event_id=event_id,
                    ticket_ids=[ids[-1 - n]],
                    customer="share@x.org",
                    queue_pass=place,
                )
            else:
                await reserve_best_available(
                    db,
                    event_id=event_id,
                    quantity=1,
                    section=None,
                    customer="share@x.org",
                    queue_pass=place,
                )
        except QueuePassRequired:
            return "refused"
        except Exception as other:  # a seat contended by a twin is a 409 too
            return type(other).__name__
        return "held"

    attempts = [asyncio.create_task(attempt(n)) for n in range(20)]
    await asyncio.sleep(0)
    start.set()
    outcomes = await asyncio.gather(*attempts)
    assert outcomes.count("held") == 1, outcomes
    async with engine.connect() as conn:
        holds = await conn.scalar(
            text("SELECT count(*) FROM reservations WHERE event_id = :e"), {"e": event_id}
        )
        used = await conn.scalar(
            text("SELECT reservation_id FROM queue_entries WHERE id = :p"), {"p": place}
        )
    assert holds == 1 and used is not None
    await assert_invariants(engine, str(event_id))


async def test_a_customer_whose_pass_ran_out_joins_again_at_the_back(
    db: Database, engine: AsyncEngine
) -> None:
    event_id = await queued_event(db, per_minute=6000)
    first = await join_queue(db, event_id=event_id, customer="again@x.org")
    await join_queue(db, event_id=event_id, customer="other@x.org")
    await tick(db, event_id)
    await let_time_pass(engine, event_id, 1)
    await tick(db, event_id)
    with pytest.raises(AlreadyQueued):
        await join_queue(db, event_id=event_id, customer="again@x.org")
    await execute(
        engine,
        "UPDATE queue_entries SET pass_expires_at = now() - interval '1 second' WHERE id = :p",
        p=first,
    )
    second = await join_queue(db, event_id=event_id, customer="AGAIN@x.org")
    assert second != first
    place = await get_place(db, event_id=event_id, place_id=second)
    assert place.status == "waiting" and place.position == 1
    with pytest.raises(QueuePassRequired):  # the old token's place is gone
        await reserve_best_available(
            db,
            event_id=event_id,
            quantity=1,
            section=None,
            customer="again@x.org",
            queue_pass=first,
        )


async def test_an_arrival_still_settling_holds_back_those_ranked_after_it(
    db: Database, engine: AsyncEngine
) -> None:
    """The straggler: `first` took its rank before `second` but (as if its join were still
    committing) is younger than the settling time; `second` must not be admitted ahead."""
    event_id = await queued_event(db, per_minute=6000)
    first = await join_queue(db, event_id=event_id, customer="straggler@x.org")
    second = await join_queue(db, event_id=event_id, customer="quick@x.org")
    await execute(
        engine,
        "UPDATE queue_entries SET joined_at = now() - interval '5 seconds' WHERE id = :p",
        p=second,
    )

    async def settled_tick() -> int:
        async with db.connection() as conn:
            tick = await admit_once(
                conn, event_id=event_id, default_pass_seconds=600, settle_seconds=2
            )
            return tick.admitted

    await settled_tick()
    await let_time_pass(engine, event_id, 10)
    assert await settled_tick() == 0
    assert (await get_place(db, event_id=event_id, place_id=second)).status == "waiting"
    await execute(
        engine,
        "UPDATE queue_entries SET joined_at = now() - interval '5 seconds' WHERE id = :p",
        p=first,
    )
    assert await settled_tick() == 2
    assert await admission_order(engine, event_id) == ["straggler@x.org", "quick@x.org"]
