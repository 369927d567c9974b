"""The domain through its services, on the real database, with no server: the fast layer.

Reserve (chosen seats, best available, with an Idempotency-Key), confirm, release and the
sweeper, called the way the routers call them, each refusal checked by its error (the
routers only render those). Expiry never sleeps: a hold's time runs out when the test moves it
into the past on the database clock (tests/support/expiry.py). The invariant checker runs on
the event after every test.
"""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from boxoffice.db import Database
from boxoffice.errors import (
    EventNotFound,
    IdempotencyKeyReused,
    IdempotentReplay,
    InvalidRequest,
    ReservationExpired,
    ReservationNotActive,
    ReservationNotFound,
    TicketsUnavailable,
    UnknownSection,
    UnknownTickets,
)
from boxoffice.events.schemas import EventCreate, GeneralAdmissionIn, SectionIn
from boxoffice.events.service import create_event, get_event
from boxoffice.expiry import free_expired_holds, sweep_all
from boxoffice.idempotency import IdempotencyRequest, key_hash
from boxoffice.reservations import holder
from boxoffice.reservations.records import Hold
from boxoffice.reservations.reserve import (
    reserve_best_available,
    reserve_tickets,
    validate_ticket_ids,
)
from boxoffice.reservations.schemas import ReservationCreate, created_from_hold, keyed_reservation
from boxoffice.tickets.models import TicketStatus
from boxoffice.tickets.service import list_event_tickets
from tests.conftest import assert_invariants
from tests.support.expiry import move_expiry_into_the_past

HOLD_SECONDS = 300
SECRET = b"service-test-secret"
NO_SUCH_TICKET = 2**62
FRONT = SectionIn(name="Front", rows=1, seats_per_row=3, price=5000)
BACK = SectionIn(name="Back", rows=2, seats_per_row=2, price=2000)


# --- helpers ---------------------------------------------------------------------------------


async def new_event(
    db: Database,
    *,
    sections: list[SectionIn] | None = None,
    general_admission: int | None = None,
) -> uuid.UUID:
    """A seated event (one section of 2 × 4 at 2500 unless given), or general admission."""
    ga = None
    if general_admission is not None:
        ga = GeneralAdmissionIn(quantity=general_admission, price=1000)
    elif sections is None:
        sections = [SectionIn(name="Main", rows=2, seats_per_row=4, price=2500)]
    return await create_event(
        db,
        event=EventCreate(
            name="Service test",
            starts_at=datetime.now(UTC) + timedelta(days=30),
            hold_seconds=HOLD_SECONDS,
            sections=sections if ga is None else None,
            general_admission=ga,
        ),
        default_hold_seconds=600,
        max_tickets=1000,
    )


async def statuses(db: Database, event_id: uuid.UUID, section: str | None = None) -> dict[int, str]:
    """Ticket id → status as buyers see it now, in seat order."""
    _, rows, after = await list_event_tickets(
        db, event_id=event_id, status=None, section=section, limit=500, after=None
    )
    assert after is None
    return {row.id: row.status for row in rows}


async def seats(db: Database, event_id: uuid.UUID, section: str | None = None) -> list[int]:
    """The event's ticket ids in seat order."""
    return list(await statuses(db, event_id, section))


async def counts(db: Database, event_id: uuid.UUID) -> tuple[int, int, int]:
    """(available, reserved, booked) as the event reports them."""
    event = (await get_event(db, event_id=event_id)).event
    return event.available, event.reserved, event.booked


async def stored_tickets(engine: AsyncEngine, ids: list[int]) -> dict[int, tuple[Any, ...]]:
    """Ticket id → (stored status, reservation, booking, hold_expires_at): not the effective
    status, the row as the sweeper (or a re-take) leaves it."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT id, status::text, reservation_id, booking_id, hold_expires_at"
                " FROM tickets WHERE id = ANY(:ids)"
            ),
            {"ids": ids},
        )
        return {row[0]: tuple(row[1:]) for row in rows}


async def stored_reservation(engine: AsyncEngine, hold: Hold) -> tuple[str, datetime | None]:
    """(stored status, ended_at) of a hold's reservation row."""
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT status::text, ended_at FROM reservations WHERE id = :id"),
                {"id": hold.reservation_id},
            )
        ).one()
        return row[0], row[1]


async def audit_trail(engine: AsyncEngine, ticket_id: int) -> list[tuple[Any, ...]]:
    """(from, to, reason, reservation) of one ticket, oldest first."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT from_status::text, to_status::text, reason, reservation_id"
                " FROM ticket_audit WHERE ticket_id = :id ORDER BY id"
            ),
            {"id": ticket_id},
        )
        return [tuple(row) for row in rows]


async def scalar(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with engine.connect() as conn:
        return await conn.scalar(text(sql), params)


async def reservations_of(engine: AsyncEngine, event_id: uuid.UUID) -> int:
    count = await scalar(
        engine, "SELECT count(*) FROM reservations WHERE event_id = :e", e=event_id
    )
    return int(count)


def ids_of(hold: Hold) -> list[int]:
    return [ticket.id for ticket in hold.tickets]


async def hold_seats(db: Database, event_id: uuid.UUID, ids: list[int], customer: str) -> Hold:
    return await reserve_tickets(db, event_id=event_id, ticket_ids=ids, customer=customer)


async def lapse(engine: AsyncEngine, hold: Hold) -> None:
    """The hold's time runs out now, on the database clock."""
    moved, _ = await move_expiry_into_the_past(engine, hold.reservation_id)
    assert moved


def keyed(event_id: uuid.UUID, body: ReservationCreate, key: str) -> tuple[IdempotencyRequest, str]:
    """A reservation request with an Idempotency-Key, as the router builds it, and the token
    its hold gets (derived from the key)."""
    return keyed_reservation(SECRET, key, event_id, body)


async def reserve_keyed(
    db: Database, event_id: uuid.UUID, body: ReservationCreate, key: str
) -> Hold:
    request, token = keyed(event_id, body, key)
    assert body.quantity is not None
    return await reserve_best_available(
        db,
        event_id=event_id,
        quantity=body.quantity,
        section=body.section,
        customer=body.customer,
        idempotency=request,
        token=token,
    )


async def stored_keys(engine: AsyncEngine, key: str) -> int:
    hashed = key_hash(SECRET, key)
    count = await scalar(
        engine, "SELECT count(*) FROM idempotency_keys WHERE key_hash = :h", h=hashed
    )
    return int(count)


# --- reserve chosen seats ----------------------------------------------------------------------


async def test_reserve_chosen_holds_exactly_those_tickets(
    db: Database, engine: AsyncEngine
) -> None:
    event_id = await new_event(db)
    ids = await seats(db, event_id)
    hold = await hold_seats(db, event_id, [ids[2], ids[1]], "ada@example.com")

    assert ids_of(hold) == ids[1:3]  # in id order, whatever order they were asked in
    assert (hold.event_id, hold.customer, hold.currency) == (event_id, "ada@example.com", "EUR")
    assert hold.expires_at - hold.created_at == timedelta(seconds=HOLD_SECONDS)
    assert [ticket.price_minor for ticket in hold.tickets] == [2500, 2500]
    assert [ticket.label for ticket in hold.tickets] == ["Main A-2", "Main A-3"]
    now = await statuses(db, event_id)
    assert [now[i] for i in ids] == ["available", "reserved", "reserved"] + ["available"] * 5
    assert await counts(db, event_id) == (6, 2, 0)
    rows = await stored_tickets(engine, ids[1:3])
    assert {row[:3] for row in rows.values()} == {("reserved", hold.reservation_id, None)}
    assert {row[3] for row in rows.values()} == {hold.expires_at}
    assert await audit_trail(engine, ids[1]) == [
        ("available", "reserved", "reserved", hold.reservation_id)
    ]
    view = await holder.get_reservation(db, reservation_id=hold.reservation_id, token=hold.token)
    assert view.reservation.status == "active" and view.booking is None
    assert [(t.id, t.status) for t in view.tickets] == [(i, "reserved") for i in ids[1:3]]
    await assert_invariants(engine, str(event_id))


async def test_reserve_chosen_is_all_or_nothing(db: Database, engine: AsyncEngine) -> None:
    event_id = await new_event(db)
    ids = await seats(db, event_id)
    first = await hold_seats(db, event_id, [ids[2]], "first")

    with pytest.raises(TicketsUnavailable) as refused:
        await hold_seats(db, event_id, ids[1:4], "second")
    assert refused.value.extensions["ticket_ids"] == [ids[2]]

    now = await statuses(db, event_id)
    assert (now[ids[1]], now[ids[2]], now[ids[3]]) == ("available", "reserved", "available")
    assert await reservations_of(engine, event_id) == 1
    assert (await stored_tickets(engine, [ids[2]]))[ids[2]][1] == first.reservation_id
    # The free ones were never touched: their only audit is none at all.
    assert await audit_trail(engine, ids[1]) == [] and await audit_trail(engine, ids[3]) == []
    await assert_invariants(engine, str(event_id))


async def test_taken_tickets_are_listed_held_or_sold(db: Database, engine: AsyncEngine) -> None:
    event_id = await new_event(db)
    ids = await seats(db, event_id)
    held = await hold_seats(db, event_id, ids[0:2], "holder")
    sold = await hold_seats(db, event_id, [ids[2]], "payer")
    await holder.confirm(
        db, reservation_id=sold.reservation_id, token=sold.token, payment_reference="p"
    )

    with pytest.raises(TicketsUnavailable) as refused:
        await hold_seats(db, event_id, ids[0:4], "late")
    assert refused.value.extensions["ticket_ids"] == ids[0:3]
    assert await statuses(db, event_id) == {
        **dict.fromkeys(ids, "available"),
        ids[0]: "reserved",
        ids[1]: "reserved",
        ids[2]: "booked",
    }
    assert await reservations_of(engine, event_id) == 2
    assert held.reservation_id != sold.reservation_id
    await assert_invariants(engine, str(event_id))


async def test_unknown_tickets_are_refused_before_availability(
    db: Database, engine: AsyncEngine
) -> None:
    event_id = await new_event(db)
    other = await new_event(db, general_admission=1)
    ids = await seats(db, event_id)
    (foreign,) = await seats(db, other)
    await hold_seats(db, event_id, [ids[0]], "holder")

    with pytest.raises(UnknownTickets) as refused:
        await hold_seats(db, event_id, [ids[0], ids[1], NO_SUCH_TICKET, foreign], "stranger")
    assert refused.value.extensions["ticket_ids"] == sorted([foreign, NO_SUCH_TICKET])
    assert await statuses(db, event_id) == {**dict.fromkeys(ids, "available"), ids[0]: "reserved"}
    assert await statuses(db, other) == {foreign: "available"}
    assert await reservations_of(engine, event_id) == 1
    await assert_invariants(engine, str(event_id))
    await assert_invariants(engine, str(other))


async def test_an_unknown_event_is_not_found_either_way(db: Database) -> None:
    nowhere = uuid.uuid4()
    with pytest.raises(EventNotFound):
        await reserve_tickets(db, event_id=nowhere, ticket_ids=[1], customer="lost")
    with pytest.raises(EventNotFound):
        await reserve_best_available(
            db, event_id=nowhere, quantity=1, section=None, customer="lost"
        )
    with pytest.raises(EventNotFound):
        await get_event(db, event_id=nowhere)


def test_ticket_ids_must_not_repeat_and_are_bounded() -> None:
    validate_ticket_ids([1, 2, 3], max_per_hold=3)
    with pytest.raises(InvalidRequest, match="must not repeat"):
        validate_ticket_ids([1, 2, 1], max_per_hold=10)
    with pytest.raises(InvalidRequest, match="at most 3"):
        validate_ticket_ids([1, 2, 3, 4], max_per_hold=3)


# --- best available ----------------------------------------------------------------------------


async def test_best_available_takes_the_first_free_seats_in_seat_order(
    db: Database, engine: AsyncEngine
) -> None:
    event_id = await new_event(db)
    ids = await seats(db, event_id)
    await hold_seats(db, event_id, [ids[0], ids[2]], "chooser")

    best = await reserve_best_available(
        db, event_id=event_id, quantity=3, section=None, customer="best"
    )
    assert ids_of(best) == [ids[1], ids[3], ids[4]]
    again = await reserve_best_available(
        db, event_id=event_id, quantity=2, section=None, customer="next"
    )
    assert ids_of(again) == ids[5:7]
    assert await counts(db, event_id) == (1, 7, 0)
    await assert_invariants(engine, str(event_id))


async def test_best_available_in_a_section(db: Database, engine: AsyncEngine) -> None:
    event_id = await new_event(db, sections=[FRONT, BACK])
    front, back = await seats(db, event_id, "Front"), await seats(db, event_id, "Back")
    assert len(front) == 3 and len(back) == 4

    best = await reserve_best_available(
        db, event_id=event_id, quantity=2, section="Back", customer="back"
    )
    assert ids_of(best) == back[0:2]
    assert {(t.section, t.price_minor) for t in best.tickets} == {("Back", 2000)}
    assert [t.label for t in best.tickets] == ["Back A-1", "Back A-2"]

    with pytest.raises(TicketsUnavailable) as refused:
        await reserve_best_available(
            db, event_id=event_id, quantity=4, section="Front", customer="greedy"
        )
    assert (refused.value.extensions["requested"], refused.value.extensions["free"]) == (4, 3)
    assert set((await statuses(db, event_id, "Front")).values()) == {"available"}
    sections = (await get_event(db, event_id=event_id)).sections
    assert [(s.name, s.tickets, s.available) for s in sections] == [
        ("Front", 3, 3),
        ("Back", 4, 2),
    ]
    await assert_invariants(engine, str(event_id))


async def test_an_unknown_section_is_refused(db: Database, engine: AsyncEngine) -> None:
    seated = await new_event(db, sections=[FRONT, BACK])
    ga = await new_event(db, general_admission=4)
    for event_id in (seated, ga):
        with pytest.raises(UnknownSection):
            await reserve_best_available(
                db, event_id=event_id, quantity=1, section="Balcony", customer="lost"
            )
        assert await reservations_of(engine, event_id) == 0
        await assert_invariants(engine, str(event_id))


async def test_too_few_free_tickets_hold_nothing(db: Database, engine: AsyncEngine) -> None:
    event_id = await new_event(db, general_admission=3)
    first = await reserve_best_available(
        db, event_id=event_id, quantity=2, section=None, customer="first"
    )
    with pytest.raises(TicketsUnavailable) as refused:
        await reserve_best_available(
            db, event_id=event_id, quantity=2, section=None, customer="second"
        )
    assert (refused.value.extensions["requested"], refused.value.extensions["free"]) == (2, 1)
    assert await counts(db, event_id) == (1, 2, 0)
    assert await reservations_of(engine, event_id) == 1
    assert len(first.tickets) == 2
    await assert_invariants(engine, str(event_id))


async def test_a_lapsed_holds_seats_are_taken_again_and_the_expiry_audited(
    db: Database, engine: AsyncEngine
) -> None:
    event_id = await new_event(db, general_admission=4)
    ids = await seats(db, event_id)
    old = await reserve_best_available(
        db, event_id=event_id, quantity=4, section=None, customer="slow"
    )
    with pytest.raises(TicketsUnavailable):
        await reserve_best_available(
            db, event_id=event_id, quantity=1, section=None, customer="early"
        )

    await lapse(engine, old)
    # Over at once for every read, though no sweeper ran: the rows still say reserved.
    assert await counts(db, event_id) == (4, 0, 0)
    assert {row[0] for row in (await stored_tickets(engine, ids)).values()} == {"reserved"}
    view = await holder.get_reservation(db, reservation_id=old.reservation_id, token=old.token)
    assert view.reservation.status == "expired"
    assert view.reservation.stored_status == "active"
    _, reserved, _ = await list_event_tickets(
        db, event_id=event_id, status=TicketStatus.reserved, section=None, limit=10, after=None
    )
    assert reserved == []

    best = await reserve_best_available(
        db, event_id=event_id, quantity=2, section=None, customer="best"
    )
    assert ids_of(best) == ids[0:2]  # seat order, lapsed seats and all
    chosen = await hold_seats(db, event_id, [ids[3]], "chooser")
    for ticket_id, new in ((ids[0], best), (ids[1], best), (ids[3], chosen)):
        assert await audit_trail(engine, ticket_id) == [
            ("available", "reserved", "reserved", old.reservation_id),
            ("reserved", "available", "expired", old.reservation_id),
            ("available", "reserved", "reserved", new.reservation_id),
        ]
    # The one seat nobody re-took still carries the lapsed hold's claim, free to every read.
    assert (await stored_tickets(engine, [ids[2]]))[ids[2]][:2] == ("reserved", old.reservation_id)
    assert await counts(db, event_id) == (1, 3, 0)
    await assert_invariants(engine, str(event_id))


# --- confirm -----------------------------------------------------------------------------------


async def test_confirm_books_the_hold(db: Database, engine: AsyncEngine) -> None:
    event_id = await new_event(db, sections=[FRONT, BACK])
    front, back = await seats(db, event_id, "Front"), await seats(db, event_id, "Back")
    hold = await hold_seats(db, event_id, [front[1], back[0]], "payer@example.com")

    view = await holder.confirm(
        db, reservation_id=hold.reservation_id, token=hold.token, payment_reference="pay_42"
    )
    booking = view.booking
    assert booking is not None
    assert (booking.reservation_id, booking.event_id) == (hold.reservation_id, event_id)
    assert (booking.customer, booking.payment_reference) == ("payer@example.com", "pay_42")
    assert (booking.total_minor, booking.currency) == (5000 + 2000, "EUR")
    assert view.reservation.status == view.reservation.stored_status == "confirmed"
    assert view.reservation.ended_at is not None
    assert [(t.id, t.status) for t in view.tickets] == [(front[1], "booked"), (back[0], "booked")]
    rows = await stored_tickets(engine, ids_of(hold))
    assert set(rows.values()) == {("booked", hold.reservation_id, booking.id, None)}
    assert await counts(db, event_id) == (5, 0, 2)
    assert (await audit_trail(engine, front[1]))[-1] == (
        "reserved",
        "booked",
        "confirmed",
        hold.reservation_id,
    )
    # Read back later, the booking is the same.
    again = await holder.get_reservation(db, reservation_id=hold.reservation_id, token=hold.token)
    assert again.booking == booking
    await assert_invariants(engine, str(event_id))


async def test_confirming_twice_is_refused_and_books_once(
    db: Database, engine: AsyncEngine
) -> None:
    event_id = await new_event(db)
    ids = await seats(db, event_id)
    hold = await hold_seats(db, event_id, ids[0:2], "payer")
    first = await holder.confirm(
        db, reservation_id=hold.reservation_id, token=hold.token, payment_reference="p1"
    )
    assert first.booking is not None

    with pytest.raises(ReservationNotActive) as refused:
        await holder.confirm(
            db, reservation_id=hold.reservation_id, token=hold.token, payment_reference="p2"
        )
    assert refused.value.extensions == {
        "reservation_status": "confirmed",
        "booking_id": str(first.booking.id),
    }
    bookings = await scalar(
        engine, "SELECT count(*) FROM bookings WHERE reservation_id = :r", r=hold.reservation_id
    )
    assert bookings == 1
    await assert_invariants(engine, str(event_id))


async def test_confirm_after_expiry_is_refused(db: Database, engine: AsyncEngine) -> None:
    event_id = await new_event(db)
    ids = await seats(db, event_id)
    hold = await hold_seats(db, event_id, ids[0:2], "slow")
    await lapse(engine, hold)

    with pytest.raises(ReservationExpired) as refused:
        await holder.confirm(
            db, reservation_id=hold.reservation_id, token=hold.token, payment_reference="late"
        )
    assert "expires_at" in refused.value.extensions
    bookings = await scalar(
        engine, "SELECT count(*) FROM bookings WHERE reservation_id = :r", r=hold.reservation_id
    )
    assert bookings == 0
    # Not swept: stored as reserved, free to every read; and still taken by the next buyer.
    rows = await stored_tickets(engine, ids[0:2])
    assert {row[:2] for row in rows.values()} == {("reserved", hold.reservation_id)}
    assert await counts(db, event_id) == (8, 0, 0)
    assert await stored_reservation(engine, hold) == ("active", None)
    await hold_seats(db, event_id, ids[0:2], "next")
    await assert_invariants(engine, str(event_id))


async def test_a_wrong_token_is_an_unknown_reservation(db: Database, engine: AsyncEngine) -> None:
    event_id = await new_event(db)
    ids = await seats(db, event_id)
    hold = await hold_seats(db, event_id, ids[0:1], "owner")
    other = await hold_seats(db, event_id, ids[1:2], "other")

    for reservation_id, token in (
        (hold.reservation_id, other.token),
        (hold.reservation_id, "not-the-token"),
        (hold.reservation_id, None),
        (uuid.uuid4(), hold.token),
    ):
        with pytest.raises(ReservationNotFound):
            await holder.get_reservation(db, reservation_id=reservation_id, token=token)
        with pytest.raises(ReservationNotFound):
            await holder.confirm(
                db, reservation_id=reservation_id, token=token, payment_reference="stolen"
            )
        with pytest.raises(ReservationNotFound):
            await holder.release(db, reservation_id=reservation_id, token=token)
    # Nothing moved: the hold is still its owner's.
    view = await holder.get_reservation(db, reservation_id=hold.reservation_id, token=hold.token)
    assert view.reservation.status == "active"
    assert await counts(db, event_id) == (6, 2, 0)
    await assert_invariants(engine, str(event_id))


# --- release -----------------------------------------------------------------------------------


async def test_release_frees_the_tickets_at_once_and_twice_is_fine(
    db: Database, engine: AsyncEngine
) -> None:
    event_id = await new_event(db)
    ids = await seats(db, event_id)
    hold = await hold_seats(db, event_id, ids[0:3], "changed-mind")

    await holder.release(db, reservation_id=hold.reservation_id, token=hold.token)
    rows = await stored_tickets(engine, ids[0:3])
    assert set(rows.values()) == {("available", None, None, None)}
    status, ended_at = await stored_reservation(engine, hold)
    assert status == "released" and ended_at is not None
    assert await counts(db, event_id) == (8, 0, 0)
    trail = await audit_trail(engine, ids[0])

    await holder.release(db, reservation_id=hold.reservation_id, token=hold.token)
    assert await stored_reservation(engine, hold) == ("released", ended_at)
    assert await audit_trail(engine, ids[0]) == trail
    assert trail[-1] == ("reserved", "available", "released", hold.reservation_id)
    view = await holder.get_reservation(db, reservation_id=hold.reservation_id, token=hold.token)
    assert view.reservation.status == "released"
    with pytest.raises(ReservationNotActive) as refused:
        await holder.confirm(
            db, reservation_id=hold.reservation_id, token=hold.token, payment_reference="p"
        )
    assert refused.value.extensions == {"reservation_status": "released"}
    # Someone else may have them at once.
    again = await hold_seats(db, event_id, ids[0:3], "next")
    assert ids_of(again) == ids[0:3]
    await assert_invariants(engine, str(event_id))


async def test_release_after_confirm_or_expiry_is_refused(
    db: Database, engine: AsyncEngine
) -> None:
    event_id = await new_event(db)
    ids = await seats(db, event_id)
    paid = await hold_seats(db, event_id, ids[0:2], "payer")
    await holder.confirm(
        db, reservation_id=paid.reservation_id, token=paid.token, payment_reference="p"
    )
    lapsed = await hold_seats(db, event_id, ids[2:4], "slow")
    await lapse(engine, lapsed)

    with pytest.raises(ReservationNotActive) as refused:
        await holder.release(db, reservation_id=paid.reservation_id, token=paid.token)
    assert refused.value.extensions == {"reservation_status": "confirmed"}
    with pytest.raises(ReservationExpired):
        await holder.release(db, reservation_id=lapsed.reservation_id, token=lapsed.token)
    assert await counts(db, event_id) == (6, 0, 2)
    assert (await stored_reservation(engine, paid))[0] == "confirmed"
    assert (await stored_reservation(engine, lapsed))[0] == "active"
    await assert_invariants(engine, str(event_id))


# --- with an Idempotency-Key -------------------------------------------------------------------


async def test_a_keyed_replay_returns_the_same_hold_and_token(
    db: Database, engine: AsyncEngine
) -> None:
    event_id = await new_event(db, general_admission=5)
    body = ReservationCreate(quantity=2, customer="keyed")
    key = str(uuid.uuid4())
    first = await reserve_keyed(db, event_id, body, key)
    assert first.token == keyed(event_id, body, key)[1]

    with pytest.raises(IdempotentReplay) as replay:
        await reserve_keyed(db, event_id, body, key)
    assert replay.value.status_code == 201
    answer = replay.value.body
    assert answer == {**created_from_hold(first).model_dump(mode="json"), "status": "active"}
    assert (answer["id"], answer["token"]) == (str(first.reservation_id), first.token)
    # Held once: the replay made nothing, and the token it handed out opens the hold.
    assert await reservations_of(engine, event_id) == 1
    assert await counts(db, event_id) == (3, 2, 0)
    assert await stored_keys(engine, key) == 1
    view = await holder.get_reservation(db, reservation_id=first.reservation_id, token=first.token)
    assert view.reservation.customer == "keyed"
    await assert_invariants(engine, str(event_id))


async def test_the_key_with_another_body_is_refused(db: Database, engine: AsyncEngine) -> None:
    event_id = await new_event(db, general_admission=5)
    key = str(uuid.uuid4())
    await reserve_keyed(db, event_id, ReservationCreate(quantity=1, customer="keyed"), key)

    for other in (
        ReservationCreate(quantity=2, customer="keyed"),
        ReservationCreate(quantity=1, customer="someone else"),
    ):
        with pytest.raises(IdempotencyKeyReused):
            await reserve_keyed(db, event_id, other, key)
    assert await reservations_of(engine, event_id) == 1
    assert await counts(db, event_id) == (4, 1, 0)
    await assert_invariants(engine, str(event_id))


async def test_a_refusal_stores_no_key(db: Database, engine: AsyncEngine) -> None:
    event_id = await new_event(db, general_admission=2)
    blocker = await reserve_best_available(
        db, event_id=event_id, quantity=2, section=None, customer="blocker"
    )
    body = ReservationCreate(quantity=2, customer="keyed")
    key = str(uuid.uuid4())

    with pytest.raises(TicketsUnavailable):
        await reserve_keyed(db, event_id, body, key)
    assert await stored_keys(engine, key) == 0
    assert await reservations_of(engine, event_id) == 1

    # Once the seats are free again, the same key makes the hold.
    await holder.release(db, reservation_id=blocker.reservation_id, token=blocker.token)
    hold = await reserve_keyed(db, event_id, body, key)
    assert sorted(ids_of(hold)) == sorted(ids_of(blocker))
    assert await stored_keys(engine, key) == 1
    await assert_invariants(engine, str(event_id))


# --- the sweeper -------------------------------------------------------------------------------


async def test_the_sweeper_frees_lapsed_holds_and_leaves_the_rest(
    db: Database, engine: AsyncEngine
) -> None:
    event_id = await new_event(db)
    ids = await seats(db, event_id)
    live = await hold_seats(db, event_id, ids[0:2], "live")
    paid = await hold_seats(db, event_id, ids[2:3], "paid")
    await holder.confirm(
        db, reservation_id=paid.reservation_id, token=paid.token, payment_reference="p"
    )
    released = await hold_seats(db, event_id, ids[3:4], "released")
    await holder.release(db, reservation_id=released.reservation_id, token=released.token)
    lapsed = await hold_seats(db, event_id, ids[4:6], "lapsed")
    retaken = await hold_seats(db, event_id, ids[6:8], "lapsed-too")
    for hold in (lapsed, retaken):
        await lapse(engine, hold)
    successor = await hold_seats(db, event_id, ids[6:8], "successor")
    before = await stored_tickets(engine, ids)
    assert before[ids[4]][:2] == ("reserved", lapsed.reservation_id)  # lazily free, not swept

    # The sweep is global: its counts include other tests' lapsed holds, so only this
    # event's rows are checked exactly.
    swept = await sweep_all(db, batch_size=50)
    assert swept.tickets_freed >= 2 and swept.reservations_expired >= 2

    after = await stored_tickets(engine, ids)
    for ticket_id in ids[4:6]:
        assert after[ticket_id] == ("available", None, None, None)
        reasons = [reason for _, _, reason, _ in await audit_trail(engine, ticket_id)]
        assert reasons == ["reserved", "expired"]
    # Live holds, bookings, released seats and the successor's seats are as they were.
    for ticket_id in ids[0:4] + ids[6:8]:
        assert after[ticket_id] == before[ticket_id]
    for hold, status in (
        (live, "active"),
        (paid, "confirmed"),
        (released, "released"),
        (lapsed, "expired"),
        (retaken, "expired"),
        (successor, "active"),
    ):
        assert (await stored_reservation(engine, hold))[0] == status, hold.customer
    for ticket_id in ids[6:8]:
        reasons = [reason for _, _, reason, _ in await audit_trail(engine, ticket_id)]
        assert reasons == ["reserved", "expired", "reserved"]  # the expiry audited once
    view = await holder.get_reservation(
        db, reservation_id=lapsed.reservation_id, token=lapsed.token
    )
    assert view.reservation.status == view.reservation.stored_status == "expired"
    with pytest.raises(ReservationExpired):
        await holder.confirm(
            db, reservation_id=lapsed.reservation_id, token=lapsed.token, payment_reference="p"
        )
    assert await counts(db, event_id) == (3, 4, 1)
    # A further batch finds nothing of this event to do.
    await free_expired_holds(db, batch_size=50)
    assert await stored_tickets(engine, ids) == after
    await assert_invariants(engine, str(event_id))
