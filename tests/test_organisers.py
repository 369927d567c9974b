"""The organiser's side over HTTP: edit an event, cancel a booking (seats back or withdrawn),
cancel an event (also racing holds and confirms), delete one that never sold, and read an
event's bookings (search, pages, CSV) and audit log.

Every outcome is checked in the database too: tickets, their audit, payments, the e-mail
owed, the audit log, and the invariants at the end of each test.
"""

import asyncio
import csv
import io
import uuid
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from boxoffice.bookings import organiser
from tests.conftest import ADMIN, EventFactory, assert_invariants, service_db, ticket_ids
from tests.support.problems import assert_problem, bearer
from tests.test_concurrency import assert_no_server_errors, rush, warm_up

NOT_ADMIN = bearer("not-the-admin-token")


async def rows(engine: AsyncEngine, sql: str, **params: Any) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        result = await conn.execute(text(sql), params)
        return [dict(row) for row in result.mappings()]


async def hold(
    client: httpx.AsyncClient, event_id: str, customer: str, **body: Any
) -> dict[str, Any]:
    body = body or {"quantity": 2}
    response = await client.post(
        f"/events/{event_id}/reservations", json={**body, "customer": customer}
    )
    assert response.status_code == 201, response.text
    held: dict[str, Any] = response.json()
    return held


async def confirm(client: httpx.AsyncClient, held: dict[str, Any]) -> httpx.Response:
    return await client.post(
        f"/reservations/{held['id']}/confirm",
        json={"payment_reference": "pay_organiser"},
        headers=bearer(held["token"]),
    )


async def book(
    client: httpx.AsyncClient, event_id: str, customer: str, **body: Any
) -> dict[str, Any]:
    """Hold and pay (the test provider's direct confirm); the booking."""
    response = await confirm(client, await hold(client, event_id, customer, **body))
    assert response.status_code == 200, response.text
    booking: dict[str, Any] = response.json()
    return booking


async def cancel_booking(client: httpx.AsyncClient, booking_id: str, **body: Any) -> httpx.Response:
    return await client.post(f"/bookings/{booking_id}/cancel", json=body, headers=ADMIN)


async def tickets_of(engine: AsyncEngine, event_id: str) -> list[dict[str, Any]]:
    return await rows(
        engine,
        "SELECT id, status::text, reservation_id, booking_id FROM tickets"
        " WHERE event_id = :e ORDER BY id",
        e=event_id,
    )


async def audit_actions(engine: AsyncEngine, event_id: str) -> list[str]:
    found = await rows(
        engine, "SELECT actor, action FROM audit_log WHERE event_id = :e ORDER BY id", e=event_id
    )
    assert {row["actor"] for row in found if row["action"] != "payment-refunded"} <= {"admin"}
    # The refunder pays owed money back in the background, and logs it: not ours to count.
    return [row["action"] for row in found if row["action"] != "payment-refunded"]


# --- editing an event ----------------------------------------------------------------------


async def test_edit_changes_details_and_refuses_bad_edits_cleanly(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    event = await make_event(name="Before the edit")
    path = f"/events/{event['id']}"
    before = await hold(client, event["id"], "early@example.com", quantity=1)

    edited = await client.patch(
        path,
        json={
            "name": "After the edit",
            "venue": "Town Hall",
            "starts_at": "2030-02-01T19:00:00Z",
            "hold_seconds": 120,
            "sales_end_at": "2030-01-31T12:00:00Z",
        },
        headers=ADMIN,
    )
    assert edited.status_code == 200, edited.text
    shown = edited.json()
    assert (shown["name"], shown["venue"], shown["hold_seconds"]) == (
        "After the edit",
        "Town Hall",
        120,
    )
    assert shown["starts_at"].startswith("2030-02-01T19:00:00")
    assert shown["cancelled_at"] is None and shown["on_sale"] is True
    # A new hold lasts the new length; the one made before keeps its expiry.
    after = await hold(client, event["id"], "late@example.com", quantity=1)
    lengths = await rows(
        engine,
        "SELECT id, extract(epoch FROM expires_at - created_at)::int AS seconds"
        " FROM reservations WHERE id IN (:a, :b)",
        a=before["id"],
        b=after["id"],
    )
    assert {str(r["id"]): r["seconds"] for r in lengths} == {before["id"]: 300, after["id"]: 120}
    # null clears the venue; members left out keep their value.
    cleared = await client.patch(path, json={"venue": None}, headers=ADMIN)
    assert cleared.status_code == 200 and cleared.json()["venue"] is None
    assert cleared.json()["name"] == "After the edit"

    bad_edits: list[dict[str, Any]] = [
        {"name": None},
        {"name": ""},
        {"starts_at": None},
        {"hold_seconds": None},
        {"hold_seconds": 0},
        {"hold_seconds": "60"},
        {"starts_at": "2030-02-01T19:00:00"},  # no timezone
        # The start moved before the end of sales (which stays 2030-01-31 12:00).
        {"starts_at": "2030-01-15T19:00:00Z"},
        # ...or before their opening.
        {
            "sales_end_at": None,
            "sales_start_at": "2030-01-20T00:00:00Z",
            "starts_at": "2030-01-10T00:00:00Z",
        },
        {"colour": "red"},
    ]
    for bad in bad_edits:
        assert_problem(await client.patch(path, json=bad, headers=ADMIN), 422, "invalid-request")
    assert (await client.get(path)).json()["starts_at"].startswith("2030-02-01T19:00:00")

    assert_problem(
        await client.patch(f"/events/{uuid.uuid4()}", json={"name": "x"}, headers=ADMIN),
        404,
        "event-not-found",
    )
    assert (await client.patch(path, json={"name": "x"})).status_code == 401
    assert (await client.patch(path, json={"name": "x"}, headers=NOT_ADMIN)).status_code == 403

    audit = await rows(
        engine,
        "SELECT actor, details FROM audit_log WHERE event_id = :e AND action = 'event-updated'"
        " ORDER BY id",
        e=event["id"],
    )
    assert [row["actor"] for row in audit] == ["admin", "admin"]
    assert audit[0]["details"]["name"] == "After the edit"
    assert audit[1]["details"] == {"venue": None}

    # A cancelled event is not edited any more.
    cancelled = await client.post(f"{path}/cancel", headers=ADMIN)
    assert cancelled.status_code == 200, cancelled.text
    assert_problem(
        await client.patch(path, json={"name": "Back from the dead"}, headers=ADMIN),
        409,
        "event-cancelled",
    )
    await assert_invariants(engine, event["id"])


# --- cancelling a booking ------------------------------------------------------------------


async def test_cancelling_a_booking_refunds_mails_and_puts_the_seats_back(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    event = await make_event()
    booking = await book(client, event["id"], "  ada@example.com ")
    seats = sorted(t["id"] for t in booking["tickets"])

    response = await cancel_booking(client, booking["id"], reason="Double booking")
    assert response.status_code == 200, response.text
    cancelled = response.json()
    assert cancelled["id"] == booking["id"] and cancelled["status"] == "cancelled"
    assert cancelled["cancelled_at"] is not None and cancelled["cancel_reason"] == "Double booking"
    assert cancelled["payment_status"] in ("refund_pending", "refunded")
    assert cancelled["seats_held"] == 0 and len(cancelled["tickets"]) == 2

    tickets = {t["id"]: t for t in await tickets_of(engine, event["id"])}
    assert all(
        (tickets[s]["status"], tickets[s]["reservation_id"], tickets[s]["booking_id"])
        == ("available", None, None)
        for s in seats
    )
    audit = await rows(
        engine,
        "SELECT ticket_id, from_status::text, to_status::text, reservation_id, booking_id"
        " FROM ticket_audit WHERE reason = 'cancelled' AND ticket_id = ANY(:t) ORDER BY ticket_id",
        t=seats,
    )
    assert [(a["ticket_id"], a["from_status"], a["to_status"]) for a in audit] == [
        (s, "booked", "available") for s in seats
    ]
    assert {(str(a["reservation_id"]), str(a["booking_id"])) for a in audit} == {
        (booking["reservation_id"], booking["id"])
    }
    payment = await rows(
        engine,
        "SELECT status, refund_reason, refund_requested_at FROM payments WHERE booking_id = :b",
        b=booking["id"],
    )
    assert payment[0]["status"] in ("refund_pending", "refunded")
    assert payment[0]["refund_reason"] == "booking-cancelled"
    assert payment[0]["refund_requested_at"] is not None

    async def owed_mail() -> list[dict[str, Any]]:
        return await rows(
            engine,
            "SELECT recipient FROM outbox_messages WHERE booking_id = :b"
            " AND kind = 'booking-cancelled'",
            b=booking["id"],
        )

    assert await owed_mail() == [{"recipient": "ada@example.com"}]
    assert await audit_actions(engine, event["id"]) == ["booking-cancelled"]

    # The seats are on sale again.
    again = await hold(client, event["id"], "bob@example.com", ticket_ids=seats)
    assert sorted(t["id"] for t in again["tickets"]) == seats

    # Cancelling again: the same booking, nothing refunded or mailed twice.
    repeated = await cancel_booking(client, booking["id"])
    assert repeated.status_code == 200, repeated.text
    assert repeated.json()["cancelled_at"] == cancelled["cancelled_at"]
    assert await owed_mail() == [{"recipient": "ada@example.com"}]
    assert await audit_actions(engine, event["id"]) == ["booking-cancelled"]

    assert_problem(await cancel_booking(client, str(uuid.uuid4())), 404, "booking-not-found")
    assert_problem(
        await cancel_booking(client, booking["id"], release_seats="yes"), 422, "invalid-request"
    )
    path = f"/bookings/{booking['id']}/cancel"
    assert (await client.post(path)).status_code == 401
    assert (await client.post(path, headers=NOT_ADMIN)).status_code == 403
    await assert_invariants(engine, event["id"])


async def test_cancelling_without_releasing_withdraws_the_seats_until_released(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    event = await make_event()
    booking = await book(client, event["id"], "user-4711")  # not an e-mail address
    seats = sorted(t["id"] for t in booking["tickets"])

    response = await cancel_booking(client, booking["id"], release_seats=False)
    assert response.status_code == 200, response.text
    cancelled = response.json()
    assert cancelled["status"] == "cancelled" and cancelled["seats_held"] == 2
    assert cancelled["cancel_reason"] is None
    tickets = {t["id"]: t for t in await tickets_of(engine, event["id"])}
    assert {(tickets[s]["status"], str(tickets[s]["booking_id"])) for s in seats} == {
        ("booked", booking["id"])
    }
    # Withdrawn: not for sale, and not admitted at the door.
    taken = await client.post(
        f"/events/{event['id']}/reservations", json={"ticket_ids": seats, "customer": "bob"}
    )
    assert_problem(taken, 409, "tickets-unavailable")
    codes = [t["code"] for t in cancelled["tickets"]]
    door = await client.post(
        f"/events/{event['id']}/checkins", json={"ticket_code": codes[0]}, headers=ADMIN
    )
    assert_problem(door, 409, "booking-cancelled")
    # Money owed back, no e-mail for a customer that is no address.
    payment = await rows(
        engine, "SELECT status, refund_reason FROM payments WHERE booking_id = :b", b=booking["id"]
    )
    assert payment[0]["status"] in ("refund_pending", "refunded")
    assert payment[0]["refund_reason"] == "booking-cancelled"
    assert not await rows(
        engine,
        "SELECT 1 FROM outbox_messages WHERE booking_id = :b AND kind <> 'booking-confirmed'",
        b=booking["id"],
    )
    await assert_invariants(engine, event["id"])

    # Later the organiser puts them back on sale: no second refund, nothing mailed.
    released = await cancel_booking(client, booking["id"], release_seats=True)
    assert released.status_code == 200, released.text
    assert released.json()["seats_held"] == 0
    assert released.json()["cancelled_at"] == cancelled["cancelled_at"]
    tickets = {t["id"]: t for t in await tickets_of(engine, event["id"])}
    assert {tickets[s]["status"] for s in seats} == {"available"}
    assert await audit_actions(engine, event["id"]) == [
        "booking-cancelled",
        "booking-seats-released",
    ]
    again = await cancel_booking(client, booking["id"], release_seats=True)
    assert again.status_code == 200
    assert await audit_actions(engine, event["id"]) == [
        "booking-cancelled",
        "booking-seats-released",
    ]
    await hold(client, event["id"], "bob@example.com", ticket_ids=seats)
    await assert_invariants(engine, event["id"])


# --- cancelling an event -------------------------------------------------------------------


async def test_cancelling_an_event_releases_holds_and_cancels_bookings_once(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    event = await make_event()
    event_id = event["id"]
    held = await hold(client, event_id, "carol@example.com")
    first = await book(client, event_id, "ada@example.com")
    second = await book(client, event_id, "user-42")

    response = await client.post(
        f"/events/{event_id}/cancel", json={"reason": "The band split up"}, headers=ADMIN
    )
    assert response.status_code == 200, response.text
    done = response.json()
    assert {k: v for k, v in done.items() if k != "cancelled_at"} == {
        "event_id": event_id,
        "holds_released": 1,
        "bookings_cancelled": 2,
        "seats_released": 4,
        "refunds_requested": 2,
    }
    assert {t["status"] for t in await tickets_of(engine, event_id)} == {"available"}
    reservation = await rows(
        engine, "SELECT status::text FROM reservations WHERE id = :r", r=held["id"]
    )
    assert reservation == [{"status": "released"}]
    bookings = await rows(
        engine,
        "SELECT b.status, b.cancel_reason, p.status AS payment, p.refund_reason"
        " FROM bookings b JOIN payments p ON p.booking_id = b.id WHERE b.event_id = :e",
        e=event_id,
    )
    assert len(bookings) == 2
    for row in bookings:
        assert (row["status"], row["cancel_reason"], row["refund_reason"]) == (
            "cancelled",
            "event-cancelled",
            "event-cancelled",
        )
        assert row["payment"] in ("refund_pending", "refunded")
    mail = await rows(
        engine,
        "SELECT recipient, booking_id FROM outbox_messages"
        " WHERE booking_id IN (:a, :b) AND kind = 'booking-cancelled'",
        a=first["id"],
        b=second["id"],
    )
    assert [(m["recipient"], str(m["booking_id"])) for m in mail] == [
        ("ada@example.com", first["id"])
    ]
    actions = await audit_actions(engine, event_id)
    assert sorted(actions) == sorted(
        ["event-cancelled", "holds-released", "booking-cancelled", "booking-cancelled"]
    )
    reason = await rows(
        engine,
        "SELECT details FROM audit_log WHERE event_id = :e AND action = 'event-cancelled'",
        e=event_id,
    )
    assert reason == [{"details": {"reason": "The band split up"}}]

    # Nothing more is sold, and the released hold cannot be paid for.
    shown = (await client.get(f"/events/{event_id}")).json()
    assert shown["cancelled_at"] == done["cancelled_at"] and shown["on_sale"] is False
    for body in ({"quantity": 1}, {"ticket_ids": (await ticket_ids(client, event_id))[:1]}):
        refused = await client.post(
            f"/events/{event_id}/reservations", json={**body, "customer": "dan@example.com"}
        )
        assert_problem(refused, 409, "event-cancelled")
    assert_problem(await confirm(client, held), 409, "reservation-not-active")

    # Again: a 200 that changes nothing.
    repeated = await client.post(f"/events/{event_id}/cancel", headers=ADMIN)
    assert repeated.status_code == 200, repeated.text
    assert repeated.json() == {
        **done,
        "holds_released": 0,
        "bookings_cancelled": 0,
        "seats_released": 0,
        "refunds_requested": 0,
    }
    assert await audit_actions(engine, event_id) == actions

    assert_problem(
        await client.post(f"/events/{uuid.uuid4()}/cancel", headers=ADMIN),
        404,
        "event-not-found",
    )
    assert (await client.post(f"/events/{event_id}/cancel")).status_code == 401
    assert (await client.post(f"/events/{event_id}/cancel", headers=NOT_ADMIN)).status_code == 403
    await assert_invariants(engine, event_id)


async def assert_nothing_sold_or_held(engine: AsyncEngine, event_id: str) -> None:
    live = await rows(
        engine,
        "SELECT r.id, r.status::text FROM reservations r WHERE r.event_id = :e"
        " AND (r.status = 'active' OR EXISTS (SELECT 1 FROM bookings b"
        " WHERE b.reservation_id = r.id AND b.status = 'confirmed'))",
        e=event_id,
    )
    assert live == []
    assert {t["status"] for t in await tickets_of(engine, event_id)} == {"available"}
    assert not await rows(
        engine,
        "SELECT 1 FROM payments WHERE event_id = :e AND status = 'paid'",
        e=event_id,
    )


async def test_no_hold_survives_a_cancellation_it_races(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    event = await make_event(rows=4, seats_per_row=10)
    event_id = event["id"]
    seats = await ticket_ids(client, event_id)
    await warm_up(client, 31)
    go = asyncio.Event()
    # The cancellation leaves once the first hold is answered: the others are in flight.
    first_answered = asyncio.Event()

    async def reserve(n: int) -> httpx.Response:
        # Half choose a seat (FOR UPDATE), half take the best available (SKIP LOCKED).
        body: dict[str, Any] = {"ticket_ids": [seats[n]]} if n % 2 else {"quantity": 1}
        await go.wait()
        response = await client.post(
            f"/events/{event_id}/reservations", json={**body, "customer": f"racer{n}@x.org"}
        )
        first_answered.set()
        return response

    async def cancel() -> httpx.Response:
        await first_answered.wait()
        return await client.post(f"/events/{event_id}/cancel", headers=ADMIN)

    racing = asyncio.gather(*(reserve(n) for n in range(30)), cancel())
    go.set()
    *holds, cancelled = await racing
    assert_no_server_errors([*holds, cancelled])
    assert cancelled.status_code == 200, cancelled.text
    made = [r for r in holds if r.status_code == 201]
    for response in holds:
        if response.status_code != 201:
            assert response.status_code == 409, response.text
            assert response.json()["type"].rsplit("/", 1)[1] in (
                "event-cancelled",
                "tickets-unavailable",
            )
    assert made, "no hold was made before the cancellation: nothing raced it"
    assert cancelled.json()["holds_released"] == len(made)
    await assert_nothing_sold_or_held(engine, event_id)
    # A hold made before the cancellation was released by it: it pays for nothing.
    for response in made:
        assert_problem(await confirm(client, response.json()), 409, "reservation-not-active")
    await assert_nothing_sold_or_held(engine, event_id)
    await assert_invariants(engine, event_id)


# A hold as a reservation statement makes it, written by hand in a transaction that read the
# event before its cancellation: what a hold statement still running from before looks like.
_LATE_HOLD = """
WITH r AS (
    INSERT INTO reservations (event_id, customer, token_hash, ticket_count, expires_at)
    VALUES ($1, 'late@example.com', sha256('late'::bytea), 1, now() + interval '5 minutes')
    RETURNING id, expires_at
), held AS (
    UPDATE tickets t SET status = 'reserved', reservation_id = r.id, hold_expires_at = r.expires_at
    FROM r WHERE t.id = $2 AND t.status = 'available'
    RETURNING t.id, t.event_id, r.id AS reservation_id
), links AS (
    INSERT INTO reservation_tickets (reservation_id, ticket_id, event_id)
    SELECT reservation_id, id, event_id FROM held
)
INSERT INTO ticket_audit (ticket_id, event_id, from_status, to_status, reason, reservation_id)
SELECT id, event_id, 'available', 'reserved', 'reserved', reservation_id FROM held
"""


async def first_pass_done(engine: AsyncEngine, event_id: str) -> None:
    """Return once a cancellation's pass released the event's holds (and committed)."""
    async with asyncio.timeout(10):
        while True:
            released = await rows(
                engine,
                "SELECT 1 FROM audit_log WHERE event_id = :e AND action = 'holds-released'",
                e=event_id,
            )
            if released:
                return
            await asyncio.sleep(0.01)


async def test_a_transaction_from_before_the_cancellation_is_waited_for(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine, database_url: str
) -> None:
    """A hold that read the event before it was cancelled and commits after a pass that
    released everything else is released too: the cancellation waits for every service
    transaction that began before it, then looks once more."""
    event = await make_event(rows=1, seats_per_row=5)
    event_id = uuid.UUID(event["id"])
    late_seat, held_seat = (await ticket_ids(client, event["id"]))[:2]
    await hold(client, event["id"], "early@example.com", ticket_ids=[held_seat])
    late = await asyncpg.connect(
        database_url, server_settings={"application_name": "boxoffice/late-hold"}
    )
    try:
        transaction = late.transaction()
        await transaction.start()
        assert (
            await late.fetchval("SELECT cancelled_at FROM events WHERE id = $1", event_id) is None
        )
        cancelling = asyncio.create_task(
            organiser.cancel_event(service_db(engine), event_id=event_id)
        )
        await first_pass_done(engine, event["id"])
        # A pass found the early hold and released it; the cancellation still waits for
        # this transaction, which read the event before it was cancelled.
        assert not cancelling.done()
        await late.execute(_LATE_HOLD, event_id, late_seat)
        await transaction.commit()
        done = await cancelling
    finally:
        await late.close()
    assert done.holds_released == 2
    await assert_nothing_sold_or_held(engine, event["id"])
    await assert_invariants(engine, event["id"])


async def test_a_confirm_racing_the_cancellation_is_cancelled_or_refused(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    event = await make_event(rows=2, seats_per_row=10)
    event_id = event["id"]
    holds = [await hold(client, event_id, f"payer{n}@example.com", quantity=1) for n in range(10)]

    def pay(held: dict[str, Any]) -> Any:
        return lambda: confirm(client, held)

    responses = await rush(
        client,
        [pay(h) for h in holds]
        + [lambda: client.post(f"/events/{event_id}/cancel", headers=ADMIN)],
    )
    assert_no_server_errors(responses)
    *paid, cancelled = responses
    assert cancelled.status_code == 200, cancelled.text
    booked = [r.json()["id"] for r in paid if r.status_code == 200]
    for response in paid:
        if response.status_code != 200:
            assert_problem(response, 409, "reservation-not-active")
    assert cancelled.json()["bookings_cancelled"] == len(booked)
    assert cancelled.json()["holds_released"] == len(holds) - len(booked)
    if booked:
        statuses = await rows(
            engine,
            "SELECT status FROM bookings WHERE id = ANY(:b)",
            b=[uuid.UUID(b) for b in booked],
        )
        assert {s["status"] for s in statuses} == {"cancelled"}
    await assert_nothing_sold_or_held(engine, event_id)
    await assert_invariants(engine, event_id)


# --- deleting an event ---------------------------------------------------------------------


async def test_deleting_an_unsold_event_takes_its_holds_with_it(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    event = await make_event(name="Never sold")
    event_id = event["id"]
    held = await hold(client, event_id, "ada@example.com")

    assert (await client.delete(f"/events/{event_id}")).status_code == 401
    assert (await client.delete(f"/events/{event_id}", headers=NOT_ADMIN)).status_code == 403
    deleted = await client.delete(f"/events/{event_id}", headers=ADMIN)
    assert deleted.status_code == 204, deleted.text
    assert_problem(await client.get(f"/events/{event_id}"), 404, "event-not-found")
    assert_problem(
        await client.get(f"/reservations/{held['id']}", headers=bearer(held["token"])),
        404,
        "reservation-not-found",
    )
    for table in ("tickets", "reservations"):
        assert not await rows(engine, f"SELECT 1 FROM {table} WHERE event_id = :e", e=event_id)
    assert_problem(
        await client.delete(f"/events/{event_id}", headers=ADMIN), 404, "event-not-found"
    )
    # The audit log remembers it.
    log = await client.get(f"/events/{event_id}/audit", headers=ADMIN)
    assert log.status_code == 200, log.text
    (entry,) = log.json()["items"]
    assert (entry["actor"], entry["action"]) == ("admin", "event-deleted")
    assert entry["details"] == {"name": "Never sold", "holds_deleted": 1}
    assert_problem(
        await client.get(f"/events/{uuid.uuid4()}/audit", headers=ADMIN), 404, "event-not-found"
    )
    await assert_invariants(engine, event_id)


async def test_an_event_that_ever_sold_or_took_money_is_not_deleted(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    event = await make_event()
    event_id = event["id"]
    booking = await book(client, event_id, "ada@example.com")
    assert_problem(
        await client.delete(f"/events/{event_id}", headers=ADMIN), 409, "event-has-sales"
    )
    assert (await cancel_booking(client, booking["id"])).status_code == 200
    assert_problem(
        await client.delete(f"/events/{event_id}", headers=ADMIN), 409, "event-has-sales"
    )
    assert (await client.post(f"/events/{event_id}/cancel", headers=ADMIN)).status_code == 200
    assert_problem(
        await client.delete(f"/events/{event_id}", headers=ADMIN), 409, "event-has-sales"
    )
    assert (await client.get(f"/events/{event_id}")).status_code == 200

    # A checkout started (a payment row, not paid) is money's history too.
    other = await make_event()
    held = await hold(client, other["id"], "bob@example.com")
    started = await client.post(
        f"/reservations/{held['id']}/checkout", headers=bearer(held["token"])
    )
    assert started.status_code == 201, started.text
    assert_problem(
        await client.delete(f"/events/{other['id']}", headers=ADMIN), 409, "event-has-sales"
    )
    await assert_invariants(engine, event_id)
    await assert_invariants(engine, other["id"])


# --- an event's bookings -------------------------------------------------------------------


async def test_bookings_are_searched_by_code_or_customer_and_paged(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    event = await make_event(rows=2, seats_per_row=10)
    event_id = event["id"]
    path = f"/events/{event_id}/bookings"
    ada = await book(client, event_id, "Ada Lovelace <ada@example.com>")
    grace = await book(client, event_id, "grace_hopper@example.org", quantity=1)
    bob = await book(client, event_id, "100%bob@example.net", quantity=3)

    async def found(**params: Any) -> list[str]:
        response = await client.get(path, params=params, headers=ADMIN)
        assert response.status_code == 200, response.text
        return [b["code"] for b in response.json()["items"]]

    assert await found() == [ada["code"], grace["code"], bob["code"]]
    assert await found(q=grace["code"].lower()) == [grace["code"]]
    assert await found(q=f"  {bob['code']} ") == [bob["code"]]
    assert await found(q="EXAMPLE.ORG") == [grace["code"]]
    assert await found(q="lovelace") == [ada["code"]]
    # % and _ are text, not wildcards.
    assert await found(q="_") == [grace["code"]]
    assert await found(q="%") == [bob["code"]]
    assert await found(q="nobody") == []

    assert (await cancel_booking(client, grace["id"])).status_code == 200
    assert await found(status="cancelled") == [grace["code"]]
    assert await found(status="confirmed") == [ada["code"], bob["code"]]

    page = (await client.get(path, params={"q": "lovelace"}, headers=ADMIN)).json()
    (item,) = page["items"]
    assert page["next_after"] is None
    assert item["id"] == ada["id"] and item["status"] == "confirmed"
    assert item["total"] == 5000 and item["currency"] == "EUR"
    assert item["payment_status"] == "paid" and item["seats_held"] == 2
    assert [t["label"] for t in item["tickets"]] == [t["label"] for t in ada["tickets"]]
    assert all(t["checked_in_at"] is None and len(t["code"]) == 16 for t in item["tickets"])

    # Keyset pages of one.
    walked: list[str] = []
    after: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 1}
        if after is not None:
            params["after"] = after
        page = (await client.get(path, params=params, headers=ADMIN)).json()
        walked += [b["code"] for b in page["items"]]
        after = page["next_after"]
        if after is None:
            break
    assert walked == [ada["code"], grace["code"], bob["code"]]

    assert_problem(
        await client.get(path, params={"after": str(uuid.uuid4())}, headers=ADMIN),
        422,
        "invalid-request",
    )
    assert_problem(
        await client.get(path, params={"status": "paid"}, headers=ADMIN), 422, "invalid-request"
    )
    assert_problem(
        await client.get(f"/events/{uuid.uuid4()}/bookings", headers=ADMIN),
        404,
        "event-not-found",
    )
    for listing in (path, f"{path}.csv", f"/events/{event_id}/audit"):
        assert_problem(await client.get(listing), 401, "unauthorized")
        assert_problem(await client.get(listing, headers=NOT_ADMIN), 403, "forbidden")
    await assert_invariants(engine, event_id)


async def test_bookings_csv_has_a_line_per_ticket_and_no_formulas(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    event = await make_event()
    event_id = event["id"]
    sneaky = await book(client, event_id, '=HYPERLINK("http://evil.example","x")', quantity=3)
    plain = await book(client, event_id, "ada@example.com", quantity=1)
    codes = {
        t["label"]: t
        for t in (
            await client.get(
                f"/events/{event_id}/bookings", params={"q": plain["code"]}, headers=ADMIN
            )
        ).json()["items"][0]["tickets"]
    }
    (label,) = codes
    admitted = await client.post(
        f"/events/{event_id}/checkins", json={"ticket_code": codes[label]["code"]}, headers=ADMIN
    )
    assert admitted.status_code == 200, admitted.text

    response = await client.get(f"/events/{event_id}/bookings.csv", headers=ADMIN)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    header, *lines = list(csv.reader(io.StringIO(response.text)))
    assert header == list(organiser.CSV_HEADER)
    assert len(lines) == 4
    by_code: dict[str, list[dict[str, str]]] = {}
    for line in lines:
        row = dict(zip(header, line, strict=True))
        by_code.setdefault(row["booking_code"], []).append(row)
    assert [r["ticket_label"] for r in by_code[sneaky["code"]]] == [
        t["label"] for t in sneaky["tickets"]
    ]
    assert {r["customer"] for r in by_code[sneaky["code"]]} == {
        '\'=HYPERLINK("http://evil.example","x")'
    }
    assert {(r["total"], r["currency"], r["status"]) for r in by_code[sneaky["code"]]} == {
        ("7500", "EUR", "confirmed")
    }
    (door,) = by_code[plain["code"]]
    assert door["checked_in_by"] == "admin" and door["checked_in_at"].startswith("20")
    assert door["ticket_code"] == codes[label]["code"]

    filtered = await client.get(
        f"/events/{event_id}/bookings.csv", params={"q": "ada@"}, headers=ADMIN
    )
    assert len(list(csv.reader(io.StringIO(filtered.text)))) == 2
    assert_problem(
        await client.get(f"/events/{uuid.uuid4()}/bookings.csv", headers=ADMIN),
        404,
        "event-not-found",
    )
    for listing in ("bookings", "bookings.csv"):
        refused = await client.get(
            f"/events/{event_id}/{listing}", params={"q": "nul\x00"}, headers=ADMIN
        )
        assert_problem(refused, 422, "invalid-request")
    await assert_invariants(engine, event_id)


async def test_the_csv_is_read_a_page_at_a_time(
    client: httpx.AsyncClient,
    make_event: EventFactory,
    engine: AsyncEngine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    event = await make_event(rows=1, seats_per_row=10)
    made = [await book(client, event["id"], f"fan{n}@example.com", quantity=1) for n in range(5)]
    monkeypatch.setattr(organiser, "_CSV_PAGE", 2)
    chunks = [
        chunk
        async for chunk in await organiser.bookings_csv(
            service_db(engine), event_id=uuid.UUID(event["id"])
        )
    ]
    # The header, then pages of two, two and one booking.
    assert len(chunks) == 4
    lines = list(csv.reader(io.StringIO("".join(chunks))))
    assert [line[0] for line in lines[1:]] == [b["code"] for b in made]


async def test_the_audit_log_pages_through_an_events_changes(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    event = await make_event()
    event_id = event["id"]
    path = f"/events/{event_id}/audit"
    assert (await client.get(path, headers=ADMIN)).json() == {"items": [], "next_after": None}
    assert (
        await client.patch(f"/events/{event_id}", json={"venue": "Hall"}, headers=ADMIN)
    ).status_code == 200
    booking = await book(client, event_id, "ada@example.com")
    assert (await cancel_booking(client, booking["id"], reason="Asked to")).status_code == 200
    assert (await client.post(f"/events/{event_id}/cancel", headers=ADMIN)).status_code == 200

    entries: list[dict[str, Any]] = []
    after: int | None = None
    while True:
        params: dict[str, Any] = {"limit": 1}
        if after is not None:
            params["after"] = after
        page = (await client.get(path, params=params, headers=ADMIN)).json()
        entries += page["items"]
        after = page["next_after"]
        if after is None:
            break
    mine = [e for e in entries if e["action"] != "payment-refunded"]
    assert [e["action"] for e in mine] == ["event-updated", "booking-cancelled", "event-cancelled"]
    assert [e["id"] for e in entries] == sorted(e["id"] for e in entries)
    assert mine[1]["booking_id"] == booking["id"]
    assert mine[1]["details"]["reason"] == "Asked to"
    assert mine[1]["details"]["code"] == booking["code"]
    assert mine[1]["details"]["refund"]["amount"] == 5000
    await assert_invariants(engine, event_id)


async def test_cancelling_a_booking_and_its_event_at_once_agree(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    """Both lock in the protocol's order: neither deadlocks nor refunds twice."""
    event = await make_event(rows=2, seats_per_row=10)
    event_id = event["id"]
    bookings = [await book(client, event_id, f"two{n}@example.com", quantity=1) for n in range(6)]
    responses = await asyncio.gather(
        *(
            cancel_booking(client, b["id"], release_seats=bool(n % 2))
            for n, b in enumerate(bookings)
        ),
        client.post(f"/events/{event_id}/cancel", headers=ADMIN),
    )
    assert [r.status_code for r in responses] == [200] * 7, [r.text for r in responses]
    mail = await rows(
        engine,
        "SELECT booking_id, count(*) AS n FROM outbox_messages WHERE kind = 'booking-cancelled'"
        " AND booking_id = ANY(:b) GROUP BY booking_id",
        b=[uuid.UUID(b["id"]) for b in bookings],
    )
    assert len(mail) == 6 and {m["n"] for m in mail} == {1}
    assert not await rows(
        engine,
        "SELECT 1 FROM bookings WHERE event_id = :e AND status = 'confirmed'",
        e=event_id,
    )
    await assert_invariants(engine, event_id)
