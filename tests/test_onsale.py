"""Selling fairly, at the service layer: the sales window and the cap per customer.

The cap is the database's to enforce: a rush of one customer's holds, all at once on their
own connections, must never leave the customer holding more than the cap, whatever the
interleaving. Time never passes by sleeping: a window opens or closes when the test moves it
on the database clock.
"""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from boxoffice.db import Database
from boxoffice.errors import (
    Conflict,
    CustomerLimitReached,
    EventNotFound,
    InvalidRequest,
    SalesClosed,
)
from boxoffice.events.schemas import EventCreate, EventUpdate, SectionIn
from boxoffice.events.service import create_event, get_event, update_sale_settings
from boxoffice.reservations import holder
from boxoffice.reservations.reserve import reserve_best_available, reserve_tickets
from tests.conftest import assert_invariants
from tests.support.expiry import move_expiry_into_the_past

MAIN = SectionIn(name="Main", rows=4, seats_per_row=10, price=2500)


async def capped_event(
    db: Database,
    *,
    cap: int | None = None,
    sales_start_at: datetime | None = None,
    sales_end_at: datetime | None = None,
) -> uuid.UUID:
    return await create_event(
        db,
        event=EventCreate(
            name="On-sale test",
            starts_at=datetime.now(UTC) + timedelta(days=30),
            sections=[MAIN],
            max_tickets_per_customer=cap,
            sales_start_at=sales_start_at,
            sales_end_at=sales_end_at,
        ),
        default_hold_seconds=300,
        max_tickets=1000,
    )


async def seat_ids(engine: AsyncEngine, event_id: uuid.UUID) -> list[int]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT id FROM tickets WHERE event_id = :e ORDER BY position"), {"e": event_id}
        )
        return list(rows.scalars())


async def execute(engine: AsyncEngine, sql: str, **params: object) -> None:
    async with engine.begin() as conn:
        await conn.execute(text(sql), params)


async def live_tickets_of(engine: AsyncEngine, event_id: uuid.UUID, customer_key: str) -> int:
    """Tickets the customer holds (unexpired) or bought, straight from the rows."""
    async with engine.connect() as conn:
        count = await conn.scalar(
            text(
                "SELECT coalesce(sum(ticket_count), 0) FROM reservations"
                " WHERE event_id = :e AND customer_key = :c"
                " AND (status = 'confirmed' OR (status = 'active' AND expires_at > now()))"
            ),
            {"e": event_id, "c": customer_key},
        )
        return int(count)


# --- the sales window --------------------------------------------------------------------------


async def test_before_sales_open_nothing_is_sold_and_the_answer_says_when(
    db: Database, engine: AsyncEngine
) -> None:
    opens = datetime.now(UTC) + timedelta(days=1)
    event_id = await capped_event(db, sales_start_at=opens)
    ids = await seat_ids(engine, event_id)

    with pytest.raises(SalesClosed) as chosen:
        await reserve_tickets(db, event_id=event_id, ticket_ids=ids[:2], customer="early@x.org")
    assert chosen.value.extensions["sales_start_at"] == opens.isoformat()
    assert "sales open at" in chosen.value.detail
    with pytest.raises(SalesClosed):
        await reserve_best_available(
            db, event_id=event_id, quantity=2, section=None, customer="early@x.org"
        )
    event = (await get_event(db, event_id=event_id)).event
    assert not event.on_sale and event.available == 40

    # The window opens (on the database clock): the same request holds.
    await execute(engine, "UPDATE events SET sales_start_at = now() WHERE id = :e", e=event_id)
    hold = await reserve_tickets(db, event_id=event_id, ticket_ids=ids[:2], customer="early@x.org")
    assert [t.id for t in hold.tickets] == ids[:2]
    assert (await get_event(db, event_id=event_id)).event.on_sale
    await assert_invariants(engine, str(event_id))


async def test_after_sales_end_and_once_the_event_started_nothing_is_sold(
    db: Database, engine: AsyncEngine
) -> None:
    event_id = await capped_event(db)
    ids = await seat_ids(engine, event_id)
    await reserve_tickets(db, event_id=event_id, ticket_ids=ids[:1], customer="a@x.org")

    await execute(
        engine,
        "UPDATE events SET sales_end_at = now() - interval '1 second' WHERE id = :e",
        e=event_id,
    )
    with pytest.raises(SalesClosed) as ended:
        await reserve_tickets(db, event_id=event_id, ticket_ids=ids[1:2], customer="a@x.org")
    assert ended.value.detail == "sales for this event have ended"

    # No explicit end: sales end when the event starts.
    await execute(
        engine,
        "UPDATE events SET sales_end_at = NULL, starts_at = now() - interval '1 second'"
        " WHERE id = :e",
        e=event_id,
    )
    with pytest.raises(SalesClosed):
        await reserve_best_available(
            db, event_id=event_id, quantity=1, section=None, customer="a@x.org"
        )
    assert not (await get_event(db, event_id=event_id)).event.on_sale
    async with engine.connect() as conn:
        holds = await conn.scalar(
            text("SELECT count(*) FROM reservations WHERE event_id = :e"), {"e": event_id}
        )
    assert holds == 1
    await assert_invariants(engine, str(event_id))


async def test_an_unknown_event_is_still_not_found(db: Database) -> None:
    with pytest.raises(EventNotFound):
        await reserve_best_available(
            db, event_id=uuid.uuid4(), quantity=1, section=None, customer="a@x.org"
        )


def test_a_window_past_the_start_or_backwards_is_refused() -> None:
    starts = datetime.now(UTC) + timedelta(days=10)
    for start, end in (
        (None, starts + timedelta(seconds=1)),
        (starts, None),
        (starts - timedelta(days=1), starts - timedelta(days=2)),
    ):
        with pytest.raises(ValueError):
            EventCreate(
                name="x",
                starts_at=starts,
                general_admission={"quantity": 1, "price": 0},
                sales_start_at=start,
                sales_end_at=end,
            )


async def test_editing_the_controls_merges_and_checks_the_window(
    db: Database, engine: AsyncEngine
) -> None:
    event_id = await capped_event(db, cap=4)
    opens = datetime.now(UTC) + timedelta(days=2)
    found = await update_sale_settings(
        db, event_id=event_id, changes=EventUpdate(sales_start_at=opens)
    )
    assert found.event.sales_start_at == opens and found.event.max_tickets_per_customer == 4
    found = await update_sale_settings(
        db,
        event_id=event_id,
        changes=EventUpdate.model_validate({"max_tickets_per_customer": None}),
    )
    assert found.event.sales_start_at == opens and found.event.max_tickets_per_customer is None
    with pytest.raises(InvalidRequest):
        await update_sale_settings(
            db,
            event_id=event_id,
            changes=EventUpdate(sales_end_at=datetime.now(UTC) + timedelta(days=1)),
        )
    with pytest.raises(EventNotFound):
        await update_sale_settings(db, event_id=uuid.uuid4(), changes=EventUpdate())


# --- the cap per customer ----------------------------------------------------------------------


async def test_the_cap_counts_holds_and_bookings_of_the_normalised_customer(
    db: Database, engine: AsyncEngine
) -> None:
    event_id = await capped_event(db, cap=4)
    ids = await seat_ids(engine, event_id)
    first = await reserve_tickets(
        db, event_id=event_id, ticket_ids=ids[:2], customer="Ada@Example.com"
    )
    await holder.confirm(
        db, reservation_id=first.reservation_id, token=first.token, payment_reference="p1"
    )
    await reserve_best_available(
        db, event_id=event_id, quantity=1, section=None, customer="  ada@example.COM "
    )

    with pytest.raises(CustomerLimitReached) as refused:
        await reserve_tickets(
            db, event_id=event_id, ticket_ids=ids[5:7], customer="ADA@example.com"
        )
    assert (refused.value.extensions["limit"], refused.value.extensions["holding"]) == (4, 3)
    with pytest.raises(CustomerLimitReached):
        await reserve_best_available(
            db, event_id=event_id, quantity=2, section=None, customer="ada@example.com"
        )
    # Another customer is not affected; one more ticket fits this one's cap exactly.
    await reserve_tickets(db, event_id=event_id, ticket_ids=ids[5:9], customer="bob@example.com")
    await reserve_tickets(db, event_id=event_id, ticket_ids=ids[9:10], customer="ada@example.com")
    assert await live_tickets_of(engine, event_id, "ada@example.com") == 4
    await assert_invariants(engine, str(event_id))


async def test_released_and_expired_holds_give_their_tickets_back_to_the_cap(
    db: Database, engine: AsyncEngine
) -> None:
    event_id = await capped_event(db, cap=2)
    ids = await seat_ids(engine, event_id)
    released = await reserve_tickets(db, event_id=event_id, ticket_ids=ids[:2], customer="c@x.org")
    await holder.release(db, reservation_id=released.reservation_id, token=released.token)
    lapsing = await reserve_tickets(db, event_id=event_id, ticket_ids=ids[2:4], customer="c@x.org")
    with pytest.raises(CustomerLimitReached):
        await reserve_tickets(db, event_id=event_id, ticket_ids=ids[4:5], customer="c@x.org")

    moved, _ = await move_expiry_into_the_past(engine, lapsing.reservation_id)
    assert moved
    # Not swept yet: the lapsed hold counts for nothing all the same.
    await reserve_tickets(db, event_id=event_id, ticket_ids=ids[4:6], customer="c@x.org")
    assert await live_tickets_of(engine, event_id, "c@x.org") == 2
    await assert_invariants(engine, str(event_id))


@pytest.mark.parametrize("cap", [1, 3])
async def test_a_rush_of_one_customers_holds_never_passes_the_cap(
    db: Database, engine: AsyncEngine, cap: int
) -> None:
    """40 holds of one customer (spelled differently), each for its own seat or for best
    available, all released at once: the customer ends with at most `cap` tickets, and every
    refusal is the cap or the customer's own concurrent hold (never a seat taken)."""
    event_id = await capped_event(db, cap=cap)
    ids = await seat_ids(engine, event_id)
    spellings = ["rush@example.com", "RUSH@example.com", " Rush@Example.com "]
    start = asyncio.Event()

    async def attempt(n: int) -> str:
        await start.wait()
        customer = spellings[n % len(spellings)]
        try:
            if n % 2:
                # From the back, where best available (from the front) never comes.
                await reserve_tickets(
                    db, event_id=event_id, ticket_ids=[ids[-1 - n // 2]], customer=customer
                )
            else:
                await reserve_best_available(
                    db, event_id=event_id, quantity=1, section=None, customer=customer
                )
        except CustomerLimitReached:
            return "cap"
        except Conflict as refusal:
            assert refusal.slug == "conflict", refusal.detail
            return "busy"
        return "held"

    attempts = [asyncio.create_task(attempt(n)) for n in range(40)]
    await asyncio.sleep(0)
    start.set()
    outcomes = await asyncio.gather(*attempts)

    held = outcomes.count("held")
    assert 1 <= held <= cap, outcomes
    assert outcomes.count("cap") >= 40 - cap - outcomes.count("busy")
    assert await live_tickets_of(engine, event_id, "rush@example.com") == held
    await assert_invariants(engine, str(event_id))
