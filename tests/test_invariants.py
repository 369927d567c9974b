"""The invariant checker can fail: break each invariant on purpose and it names exactly that one.

Everything runs on a throwaway database, where we may bypass constraints (replica role, a check
constraint dropped for one statement) to create states the service can never produce.
"""

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from boxoffice.config import Settings
from boxoffice.events.schemas import EventCreate, SectionIn
from boxoffice.events.service import create_event
from boxoffice.expiry import sweep_all
from boxoffice.invariants import Violation, check_invariants
from boxoffice.migrate import upgrade
from boxoffice.reservations import holder
from boxoffice.reservations.records import Hold
from boxoffice.reservations.reserve import reserve_tickets
from tests.conftest import ADMIN_TOKEN, Databases, create_engine, service_db
from tests.support.expiry import move_expiry_into_the_past


@pytest_asyncio.fixture(scope="module")
async def engine(databases: Databases) -> AsyncIterator[AsyncEngine]:
    """A throwaway database of our own (shadows the session's `engine` in this module)."""
    url = await asyncio.to_thread(databases.create, "boxoffice_invariants")
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(Settings(database_url=url, admin_token=ADMIN_TOKEN))
    yield engine
    await engine.dispose()


@dataclass(frozen=True)
class Scene:
    """A valid event: tickets 0-1 held, 2-3 booked, 4 released, 5 never touched."""

    event_id: uuid.UUID
    tickets: list[int]
    held: Hold
    paid: Hold
    released: Hold


async def make_scene(engine: AsyncEngine, *, hold_seconds: int = 300) -> Scene:
    event_id = await create_event(
        service_db(engine),
        event=EventCreate(
            name="Invariant scene",
            starts_at=datetime.now(UTC) + timedelta(days=30),
            hold_seconds=hold_seconds,
            sections=[SectionIn(name="Main", rows=1, seats_per_row=6, price=1200)],
        ),
        default_hold_seconds=300,
        max_tickets=1000,
    )
    async with engine.connect() as conn:
        result = await conn.scalars(
            text("SELECT id FROM tickets WHERE event_id = :e ORDER BY position"), {"e": event_id}
        )
        tickets = list(result.all())

    async def hold(ids: list[int], customer: str) -> Hold:
        return await reserve_tickets(
            service_db(engine), event_id=event_id, ticket_ids=ids, customer=customer
        )

    held = await hold(tickets[0:2], "holder")
    paid = await hold(tickets[2:4], "payer")
    await holder.confirm(
        service_db(engine),
        reservation_id=paid.reservation_id,
        token=paid.token,
        payment_reference="pay-1",
    )
    released = await hold(tickets[4:5], "changed-mind")
    await holder.release(
        service_db(engine), reservation_id=released.reservation_id, token=released.token
    )
    return Scene(event_id, tickets, held, paid, released)


async def violations_of(engine: AsyncEngine, scene: Scene) -> list[Violation]:
    return await check_invariants(service_db(engine), event_id=scene.event_id)


async def audit(conn: AsyncConnection, ticket: int, old: str, new: str, reason: str) -> None:
    """An audit row for a hand-made change, so only the invariant under test is broken."""
    await conn.execute(
        text(
            "INSERT INTO ticket_audit (ticket_id, event_id, from_status, to_status, reason)"
            " SELECT id, event_id, CAST(:old AS ticket_status), CAST(:new AS ticket_status),"
            " :reason FROM tickets WHERE id = :t"
        ),
        {"t": ticket, "old": old, "new": new, "reason": reason},
    )


async def test_a_valid_scene_has_no_violations(engine: AsyncEngine) -> None:
    scene = await make_scene(engine)
    assert await violations_of(engine, scene) == []
    async with engine.connect() as conn:
        statuses = await conn.execute(
            text("SELECT status::text FROM tickets WHERE event_id = :e ORDER BY position"),
            {"e": scene.event_id},
        )
        assert [row[0] for row in statuses] == ["reserved"] * 2 + ["booked"] * 2 + ["available"] * 2


async def test_expired_holds_are_valid_before_and_after_the_sweep(engine: AsyncEngine) -> None:
    scene = await make_scene(engine)
    # `paid` was confirmed in time; only `held` lapses (now, on the database clock).
    await move_expiry_into_the_past(engine, scene.held.reservation_id)
    assert await violations_of(engine, scene) == []
    result = await sweep_all(service_db(engine), batch_size=10)
    assert result.tickets_freed >= 2
    assert await violations_of(engine, scene) == []


Breaker = Callable[[AsyncConnection, Scene], Awaitable[None]]


async def available_ticket_keeps_its_claim(conn: AsyncConnection, scene: Scene) -> None:
    # The check constraint forbids this state: lift it for one statement, then restore it
    # (NOT VALID: it keeps guarding new rows without re-checking this one).
    definition = await conn.scalar(
        text(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conname = 'ck_tickets_status_matches_claim'"
        )
    )
    await conn.execute(text("ALTER TABLE tickets DROP CONSTRAINT ck_tickets_status_matches_claim"))
    await conn.execute(
        text("UPDATE tickets SET status = 'available' WHERE id = :t"), {"t": scene.tickets[0]}
    )
    await conn.execute(
        text(
            "ALTER TABLE tickets ADD CONSTRAINT ck_tickets_status_matches_claim"
            f" {definition} NOT VALID"
        )
    )
    await audit(conn, scene.tickets[0], "reserved", "available", "released")


async def active_hold_lost_a_ticket(conn: AsyncConnection, scene: Scene) -> None:
    await conn.execute(
        text(
            "UPDATE tickets SET status = 'available', reservation_id = NULL,"
            " hold_expires_at = NULL WHERE id = :t"
        ),
        {"t": scene.tickets[1]},
    )
    await audit(conn, scene.tickets[1], "reserved", "available", "released")


async def reserved_by_a_released_reservation(conn: AsyncConnection, scene: Scene) -> None:
    await conn.execute(
        text("UPDATE reservations SET status = 'released', ended_at = now() WHERE id = :r"),
        {"r": scene.held.reservation_id},
    )


async def booked_by_an_unconfirmed_reservation(conn: AsyncConnection, scene: Scene) -> None:
    await conn.execute(
        text("UPDATE reservations SET status = 'released' WHERE id = :r"),
        {"r": scene.paid.reservation_id},
    )


async def confirmed_reservation_with_a_ticket_not_booked(
    conn: AsyncConnection, scene: Scene
) -> None:
    await conn.execute(
        text(
            "UPDATE tickets SET status = 'available', reservation_id = NULL, booking_id = NULL"
            " WHERE id = :t"
        ),
        {"t": scene.tickets[3]},
    )
    await audit(conn, scene.tickets[3], "booked", "available", "released")


async def reservation_claims_a_ticket_of_another_event(conn: AsyncConnection, scene: Scene) -> None:
    other = await make_scene(conn.engine)
    # The composite foreign keys forbid this: the replica role skips their triggers.
    await conn.execute(text("SET LOCAL session_replication_role = replica"))
    await conn.execute(
        text(
            "INSERT INTO reservation_tickets (reservation_id, ticket_id, event_id)"
            " VALUES (:r, :t, :e)"
        ),
        {"r": scene.paid.reservation_id, "t": other.tickets[5], "e": scene.event_id},
    )
    await conn.execute(
        text("UPDATE reservations SET ticket_count = ticket_count + 1 WHERE id = :r"),
        {"r": scene.paid.reservation_id},
    )


async def reservation_count_disagrees_with_its_tickets(conn: AsyncConnection, scene: Scene) -> None:
    await conn.execute(
        text("UPDATE reservations SET ticket_count = 3 WHERE id = :r"),
        {"r": scene.released.reservation_id},
    )


async def event_ticket_count_is_wrong(conn: AsyncConnection, scene: Scene) -> None:
    await conn.execute(
        text("UPDATE events SET ticket_count = ticket_count + 1 WHERE id = :e"),
        {"e": scene.event_id},
    )


async def ticket_in_two_live_holds(conn: AsyncConnection, scene: Scene) -> None:
    second = await reserve_tickets(
        service_db(conn.engine),
        event_id=scene.event_id,
        ticket_ids=[scene.tickets[5]],
        customer="second",
    )
    await conn.execute(
        text(
            "INSERT INTO reservation_tickets (reservation_id, ticket_id, event_id)"
            " VALUES (:r, :t, :e)"
        ),
        {"r": second.reservation_id, "t": scene.tickets[0], "e": scene.event_id},
    )
    await conn.execute(
        text("UPDATE reservations SET ticket_count = 2 WHERE id = :r"),
        {"r": second.reservation_id},
    )


async def last_audit_row_disagrees(conn: AsyncConnection, scene: Scene) -> None:
    await audit(conn, scene.tickets[0], "reserved", "available", "expired")


async def state_change_without_audit(conn: AsyncConnection, scene: Scene) -> None:
    await conn.execute(
        text("DELETE FROM ticket_audit WHERE ticket_id = :t"), {"t": scene.tickets[2]}
    )


_USED_PASS = """
INSERT INTO queue_entries (event_id, customer, lane, rank, status, admitted_at,
                           pass_expires_at, used_at, reservation_id)
SELECT r.event_id, coalesce(:customer, r.customer), 1, nextval('queue_arrivals'), 'used',
       now(), now() + interval '10 minutes', now(), r.id
FROM reservations r WHERE r.id = :r
"""


async def pass_used_for_another_customers_hold(conn: AsyncConnection, scene: Scene) -> None:
    await conn.execute(text(_USED_PASS), {"r": scene.held.reservation_id, "customer": "mallory"})


async def one_hold_made_with_two_passes(conn: AsyncConnection, scene: Scene) -> None:
    # One place per customer: the second pass can only be another customer's.
    await conn.execute(text(_USED_PASS), {"r": scene.held.reservation_id, "customer": None})
    await conn.execute(text(_USED_PASS), {"r": scene.held.reservation_id, "customer": "eve"})


async def offer_made_to_another_customers_hold(conn: AsyncConnection, scene: Scene) -> None:
    await conn.execute(
        text(
            "INSERT INTO waiting_list (event_id, customer, quantity, status, offered_at,"
            " reservation_id) VALUES (:e, 'mallory', 1, 'offered', now(), :r)"
        ),
        {"e": scene.event_id, "r": scene.held.reservation_id},
    )


async def booking_paid_twice(conn: AsyncConnection, scene: Scene) -> None:
    await conn.execute(
        text(
            "INSERT INTO payments (reservation_id, event_id, customer, provider,"
            " provider_payment_id, amount_minor, currency, status, paid_at)"
            " SELECT reservation_id, event_id, customer, 'test', 'tp_extra', amount_minor,"
            " currency, 'failed', NULL FROM payments WHERE reservation_id = :r"
        ),
        {"r": scene.paid.reservation_id},
    )
    # The extra payment claims the booking too: one booking, two payments.
    await conn.execute(text("DROP INDEX IF EXISTS uq_payments_booking_id"))
    await conn.execute(
        text(
            "UPDATE payments SET booking_id = (SELECT id FROM bookings WHERE reservation_id = :r)"
            " WHERE provider_payment_id = 'tp_extra'"
        ),
        {"r": scene.paid.reservation_id},
    )


async def valid_booking_refunded(conn: AsyncConnection, scene: Scene) -> None:
    await conn.execute(
        text(
            "UPDATE payments SET status = 'refunded', refunded_at = now() WHERE reservation_id = :r"
        ),
        {"r": scene.paid.reservation_id},
    )


async def booking_lost_an_issued_ticket(conn: AsyncConnection, scene: Scene) -> None:
    await conn.execute(
        text("DELETE FROM issued_tickets WHERE ticket_id = :t"), {"t": scene.tickets[2]}
    )


async def checked_in_after_cancellation(conn: AsyncConnection, scene: Scene) -> None:
    # Cancelled (seats kept off sale, money on its way back), then admitted at the door.
    await conn.execute(
        text(
            "UPDATE bookings SET status = 'cancelled', cancelled_at = now() - interval '1 hour'"
            " WHERE reservation_id = :r"
        ),
        {"r": scene.paid.reservation_id},
    )
    await conn.execute(
        text(
            "UPDATE payments SET status = 'refund_pending', refund_requested_at = now()"
            " WHERE reservation_id = :r"
        ),
        {"r": scene.paid.reservation_id},
    )
    await conn.execute(
        text(
            "UPDATE issued_tickets SET checked_in_at = now(), checked_in_by = 'door 1'"
            " WHERE ticket_id = :t"
        ),
        {"t": scene.tickets[2]},
    )


async def hold_paid_twice_and_kept(conn: AsyncConnection, scene: Scene) -> None:
    # A second payment marked paid without booking anything (its CHECK needs a booking: the
    # first payment's booking, which breaks P1 too).
    await conn.execute(text("DROP INDEX IF EXISTS uq_payments_booking_id"))
    await conn.execute(
        text(
            "INSERT INTO payments (reservation_id, event_id, customer, provider,"
            " provider_payment_id, amount_minor, currency, status, paid_at, booking_id)"
            " SELECT reservation_id, event_id, customer, 'test', 'tp_twice', amount_minor,"
            " currency, 'paid', now(), booking_id FROM payments WHERE reservation_id = :r"
        ),
        {"r": scene.paid.reservation_id},
    )


CASES: list[tuple[Breaker, set[str], str]] = [
    (available_ticket_keeps_its_claim, {"I1"}, "available ticket still carries"),
    (active_hold_lost_a_ticket, {"I1"}, "does not own every one of its tickets"),
    (reserved_by_a_released_reservation, {"I2"}, "reserved ticket without"),
    (booked_by_an_unconfirmed_reservation, {"I3"}, "booked ticket without"),
    (confirmed_reservation_with_a_ticket_not_booked, {"I4"}, "tickets are not all booked"),
    # The paid hold gains a ticket it never issued a code for, so P2 notices too.
    (reservation_claims_a_ticket_of_another_event, {"I4", "P2"}, "ticket of another event"),
    (reservation_count_disagrees_with_its_tickets, {"I4"}, "ticket count differs"),
    (event_ticket_count_is_wrong, {"I5"}, "do not add up"),
    # A ticket row names one reservation, so the second live hold also fails to own it (I1).
    (ticket_in_two_live_holds, {"I1", "I5"}, "two reservations that are both live"),
    (last_audit_row_disagrees, {"audit"}, "last audit row does not match"),
    (state_change_without_audit, {"audit"}, "no audit row"),
    (pass_used_for_another_customers_hold, {"S1"}, "used queue pass names a hold of another"),
    (one_hold_made_with_two_passes, {"S1"}, "one hold made with two queue passes"),
    (offer_made_to_another_customers_hold, {"S2"}, "waiting-list offer names a hold"),
    (booking_paid_twice, {"P1"}, "not paid by exactly one payment"),
    (valid_booking_refunded, {"P1"}, "a valid booking refunded"),
    (booking_lost_an_issued_ticket, {"P2"}, "issued tickets are not exactly"),
    (checked_in_after_cancellation, {"P3"}, "checked in after its booking was cancelled"),
    (hold_paid_twice_and_kept, {"P1", "P4"}, "more than one payment of it is `paid`"),
]


@pytest.mark.parametrize(
    ("breaker", "expected", "description"),
    [pytest.param(*case, id=case[0].__name__) for case in CASES],
)
async def test_checker_names_the_broken_invariant(
    engine: AsyncEngine, breaker: Breaker, expected: set[str], description: str
) -> None:
    scene = await make_scene(engine)
    assert await violations_of(engine, scene) == []

    async with engine.begin() as conn:
        await breaker(conn, scene)

    violations = await violations_of(engine, scene)
    assert {v.invariant for v in violations} == expected, "\n".join(map(str, violations))
    assert any(description in v.description for v in violations), violations
    assert all(v.rows for v in violations)
    # The whole-database check sees it too; a neighbouring valid event stays clean.
    everywhere = await check_invariants(service_db(engine))
    assert any(description in v.description for v in everywhere)
    neighbour = await make_scene(engine)
    assert await violations_of(engine, neighbour) == []


async def test_violation_rows_point_at_the_offending_ticket(engine: AsyncEngine) -> None:
    scene = await make_scene(engine)
    async with engine.begin() as conn:
        await reserved_by_a_released_reservation(conn, scene)
    (violation,) = await violations_of(engine, scene)
    assert violation.invariant == "I2"
    assert sorted(row["id"] for row in violation.rows) == scene.tickets[0:2]
    assert "I2" in str(violation)
