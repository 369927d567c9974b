"""A hold's whole life over HTTP: reserve → confirm | release | expire, checked in the database.

The server runs without its background sweeper, so every expiry seen here is the lazy one:
reads and reservations must treat a hold whose expiry passed as free on their own.
"""

import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import ADMIN, EventFactory, assert_invariants, ticket_ids
from tests.support.expiry import move_expiry_into_the_past
from tests.support.problems import assert_problem, bearer


async def reserve(
    client: httpx.AsyncClient, event_id: str, *, customer: str = "ada@example.com", **body: Any
) -> dict[str, Any]:
    response = await client.post(
        f"/events/{event_id}/reservations", json={**body, "customer": customer}
    )
    assert response.status_code == 201, response.text
    assert response.headers["location"] == f"/reservations/{response.json()['id']}"
    created: dict[str, Any] = response.json()
    return created


async def statuses(client: httpx.AsyncClient, event_id: str) -> dict[int, str]:
    """Ticket id → status, as the public ticket list shows it."""
    response = await client.get(f"/events/{event_id}/tickets", params={"limit": 500})
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["next_after"] is None
    return {ticket["id"]: ticket["status"] for ticket in page["items"]}


async def counts(client: httpx.AsyncClient, event_id: str) -> dict[str, int]:
    response = await client.get(f"/events/{event_id}")
    assert response.status_code == 200, response.text
    result: dict[str, int] = response.json()["counts"]
    return result


async def db_tickets(engine: AsyncEngine, ids: list[int]) -> dict[int, Any]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT id, status::text AS status, reservation_id, booking_id, hold_expires_at"
                " FROM tickets WHERE id = ANY(:ids)"
            ),
            {"ids": ids},
        )
        return {row.id: row for row in rows}


async def db_reservation(engine: AsyncEngine, reservation_id: str) -> Any:
    async with engine.connect() as conn:
        row = await conn.execute(
            text(
                "SELECT id, event_id, customer, status::text AS status, ticket_count,"
                " created_at, expires_at, ended_at FROM reservations WHERE id = :id"
            ),
            {"id": uuid.UUID(reservation_id)},
        )
        return row.one()


async def audit_trail(engine: AsyncEngine, ticket_id: int) -> list[tuple[Any, ...]]:
    """(from, to, reason, reservation, booking) of one ticket, oldest first."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT from_status::text, to_status::text, reason, reservation_id, booking_id"
                " FROM ticket_audit WHERE ticket_id = :id ORDER BY id"
            ),
            {"id": ticket_id},
        )
        return [tuple(row) for row in rows]


def when(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def test_reserve_then_confirm_books_the_tickets(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    event = await make_event(rows=2, seats_per_row=5)
    event_id = event["id"]
    ids = await ticket_ids(client, event_id)
    chosen = ids[2:4]

    hold = await reserve(client, event_id, ticket_ids=chosen, customer="ada@example.com")
    rid = hold["id"]
    assert hold["status"] == "active"
    assert hold["event_id"] == event_id
    assert hold["customer"] == "ada@example.com"
    assert hold["booking_id"] is None and hold["ended_at"] is None
    assert isinstance(hold["token"], str) and len(hold["token"]) >= 32
    assert [t["id"] for t in hold["tickets"]] == chosen
    assert {t["status"] for t in hold["tickets"]} == {"reserved"}
    assert hold["total"] == 2 * 2500 and hold["currency"] == "EUR"
    hold_length = when(hold["expires_at"]) - when(hold["created_at"])
    assert hold_length == timedelta(seconds=event["hold_seconds"])
    assert await counts(client, event_id) == {"available": 8, "reserved": 2, "booked": 0}

    token = hold["token"]
    payment = {"payment_reference": "pay_4242"}
    confirm_url = f"/reservations/{rid}/confirm"
    response = await client.post(confirm_url, json=payment, headers=bearer(token))
    assert response.status_code == 200, response.text
    booking = response.json()
    assert booking["reservation_id"] == rid
    assert booking["event_id"] == event_id
    assert booking["customer"] == "ada@example.com"
    assert booking["payment_reference"] == "pay_4242"
    assert booking["total"] == 5000 and booking["currency"] == "EUR"
    assert [t["id"] for t in booking["tickets"]] == chosen
    assert {t["status"] for t in booking["tickets"]} == {"booked"}
    booking_id = booking["id"]

    listed = await statuses(client, event_id)
    assert listed == {i: ("booked" if i in chosen else "available") for i in ids}
    assert await counts(client, event_id) == {"available": 8, "reserved": 0, "booked": 2}
    detail = (await client.get(f"/events/{event_id}")).json()
    assert detail["sections"] == [{"name": "Main", "tickets": 10, "available": 8}]

    response = await client.get(f"/reservations/{rid}", headers=bearer(token))
    assert response.status_code == 200, response.text
    view = response.json()
    assert view["status"] == "confirmed"
    assert view["booking_id"] == booking_id
    assert view["ended_at"] is not None
    assert "token" not in view

    # The database agrees, row by row.
    rows = await db_tickets(engine, chosen)
    for ticket_id in chosen:
        row = rows[ticket_id]
        assert row.status == "booked"
        assert str(row.booking_id) == booking_id and str(row.reservation_id) == rid
        assert row.hold_expires_at is None
    reservation = await db_reservation(engine, rid)
    assert reservation.status == "confirmed"
    assert reservation.ended_at is not None
    assert reservation.ticket_count == 2
    async with engine.connect() as conn:
        bookings = (
            await conn.execute(
                text(
                    "SELECT id, event_id, customer, payment_reference, total_minor, currency"
                    " FROM bookings WHERE reservation_id = :id"
                ),
                {"id": uuid.UUID(rid)},
            )
        ).all()
    assert len(bookings) == 1
    assert str(bookings[0].id) == booking_id
    assert str(bookings[0].event_id) == event_id
    assert tuple(bookings[0])[2:] == ("ada@example.com", "pay_4242", 5000, "EUR")
    for ticket_id in chosen:
        trail = await audit_trail(engine, ticket_id)
        assert [(a, b, reason, str(r), b_id and str(b_id)) for a, b, reason, r, b_id in trail] == [
            ("available", "reserved", "reserved", rid, None),
            ("reserved", "booked", "confirmed", rid, booking_id),
        ]
    for ticket_id in set(ids) - set(chosen):
        assert await audit_trail(engine, ticket_id) == []
    await assert_invariants(engine, event_id)


async def test_release_frees_the_tickets_at_once_and_twice_is_fine(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    event = await make_event(rows=1, seats_per_row=5)
    event_id = event["id"]
    ids = await ticket_ids(client, event_id)
    chosen = ids[:3]
    hold = await reserve(client, event_id, ticket_ids=chosen, customer="first")
    rid, token = hold["id"], hold["token"]
    assert await counts(client, event_id) == {"available": 2, "reserved": 3, "booked": 0}

    # Someone else cannot take them while held.
    response = await client.post(
        f"/events/{event_id}/reservations", json={"ticket_ids": chosen[:1], "customer": "second"}
    )
    body = assert_problem(response, 409, "tickets-unavailable")
    assert body["ticket_ids"] == chosen[:1]

    response = await client.delete(f"/reservations/{rid}", headers=bearer(token))
    assert response.status_code == 204, response.text
    assert response.content == b""
    assert await statuses(client, event_id) == dict.fromkeys(ids, "available")
    assert await counts(client, event_id) == {"available": 5, "reserved": 0, "booked": 0}
    rows = await db_tickets(engine, chosen)
    assert all(
        (r.status, r.reservation_id, r.hold_expires_at, r.booking_id)
        == ("available", None, None, None)
        for r in rows.values()
    )
    reservation = await db_reservation(engine, rid)
    assert reservation.status == "released" and reservation.ended_at is not None

    # Releasing again changes nothing and still answers 204.
    response = await client.delete(f"/reservations/{rid}", headers=bearer(token))
    assert response.status_code == 204, response.text
    view = (await client.get(f"/reservations/{rid}", headers=bearer(token))).json()
    assert view["status"] == "released"
    for ticket_id in chosen:
        assert [row[2] for row in await audit_trail(engine, ticket_id)] == ["reserved", "released"]

    # A released hold cannot be paid for.
    response = await client.post(
        f"/reservations/{rid}/confirm", json={"payment_reference": "late"}, headers=bearer(token)
    )
    body = assert_problem(response, 409, "reservation-not-active")
    assert body["reservation_status"] == "released"

    # Someone else can now hold the released tickets.
    second = await reserve(client, event_id, ticket_ids=chosen, customer="second")
    assert [t["status"] for t in second["tickets"]] == ["reserved"] * 3
    rows = await db_tickets(engine, chosen)
    assert {str(r.reservation_id) for r in rows.values()} == {second["id"]}
    assert (await db_reservation(engine, rid)).status == "released"
    await assert_invariants(engine, event_id)


async def test_hold_expires_lazily_and_the_tickets_are_free_again(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    seated = await make_event(rows=1, seats_per_row=4, hold_seconds=1)
    ga = await make_event(general_admission=3, hold_seconds=1)
    ids = await ticket_ids(client, seated["id"])
    chosen = ids[1:3]
    first = await reserve(client, seated["id"], ticket_ids=chosen, customer="first")
    first_ga = await reserve(client, ga["id"], quantity=3, customer="first")
    assert when(first["expires_at"]) - when(first["created_at"]) == timedelta(seconds=1)
    assert await counts(client, seated["id"]) == {"available": 2, "reserved": 2, "booked": 0}

    # Both holds run out now, on the database clock (no sleeping out their second).
    for lapsing in (first, first_ga):
        await move_expiry_into_the_past(engine, lapsing["id"])

    # No sweeper runs in these tests: the rows still say reserved...
    rows = await db_tickets(engine, chosen)
    assert {r.status for r in rows.values()} == {"reserved"}
    # ...yet every read already treats the hold as over.
    response = await client.get(f"/reservations/{first['id']}", headers=bearer(first["token"]))
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "expired"
    assert await statuses(client, seated["id"]) == dict.fromkeys(ids, "available")
    assert await counts(client, seated["id"]) == {"available": 4, "reserved": 0, "booked": 0}
    assert await counts(client, ga["id"]) == {"available": 3, "reserved": 0, "booked": 0}
    held = await client.get(f"/events/{seated['id']}/tickets", params={"status": "reserved"})
    assert held.json()["items"] == []
    detail = (await client.get(f"/events/{seated['id']}")).json()
    assert detail["sections"] == [{"name": "Main", "tickets": 4, "available": 4}]

    # The holder can neither pay for nor release an expired hold.
    confirm = await client.post(
        f"/reservations/{first['id']}/confirm",
        json={"payment_reference": "too-late"},
        headers=bearer(first["token"]),
    )
    assert_problem(confirm, 409, "reservation-expired")
    release = await client.delete(f"/reservations/{first['id']}", headers=bearer(first["token"]))
    assert_problem(release, 409, "reservation-expired")
    async with engine.connect() as conn:
        booked = await conn.execute(
            text("SELECT count(*) FROM bookings WHERE reservation_id = :id"),
            {"id": uuid.UUID(first["id"])},
        )
        assert booked.scalar() == 0

    # Another buyer gets the very same tickets, chosen or best available.
    second = await reserve(client, seated["id"], ticket_ids=chosen, customer="second")
    assert [t["id"] for t in second["tickets"]] == chosen
    second_ga = await reserve(client, ga["id"], quantity=3, customer="second")
    assert sorted(t["id"] for t in second_ga["tickets"]) == sorted(
        t["id"] for t in first_ga["tickets"]
    )
    for ticket_id in chosen:
        trail = await audit_trail(engine, ticket_id)
        assert [(a, b, reason, str(r)) for a, b, reason, r, _ in trail] == [
            ("available", "reserved", "reserved", first["id"]),
            ("reserved", "available", "expired", first["id"]),
            ("available", "reserved", "reserved", second["id"]),
        ]
    for ticket in second_ga["tickets"]:
        reasons = [row[2] for row in await audit_trail(engine, ticket["id"])]
        assert reasons == ["reserved", "expired", "reserved"]

    # The first holder still cannot act, and the second one can.
    confirm = await client.post(
        f"/reservations/{first['id']}/confirm",
        json={"payment_reference": "too-late"},
        headers=bearer(first["token"]),
    )
    assert_problem(confirm, 409, "reservation-expired")
    confirm = await client.post(
        f"/reservations/{second['id']}/confirm",
        json={"payment_reference": "in-time"},
        headers=bearer(second["token"]),
    )
    assert confirm.status_code == 200, confirm.text
    assert await counts(client, seated["id"]) == {"available": 2, "reserved": 0, "booked": 2}
    await assert_invariants(engine, seated["id"])
    await assert_invariants(engine, ga["id"])


async def test_a_confirmed_reservation_cannot_be_confirmed_or_released_again(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    event = await make_event(rows=1, seats_per_row=3)
    event_id = event["id"]
    ids = await ticket_ids(client, event_id)
    hold = await reserve(client, event_id, ticket_ids=ids[:2])
    rid, headers = hold["id"], bearer(hold["token"])
    first = await client.post(
        f"/reservations/{rid}/confirm", json={"payment_reference": "pay_1"}, headers=headers
    )
    assert first.status_code == 200, first.text

    again = await client.post(
        f"/reservations/{rid}/confirm", json={"payment_reference": "pay_2"}, headers=headers
    )
    body = assert_problem(again, 409, "reservation-not-active")
    assert body["booking_id"] == first.json()["id"]
    release = await client.delete(f"/reservations/{rid}", headers=headers)
    assert_problem(release, 409, "reservation-not-active")

    async with engine.connect() as conn:
        refs = await conn.execute(
            text("SELECT payment_reference FROM bookings WHERE reservation_id = :id"),
            {"id": uuid.UUID(rid)},
        )
        assert refs.scalars().all() == ["pay_1"]
    assert {r.status for r in (await db_tickets(engine, ids[:2])).values()} == {"booked"}
    assert (await db_reservation(engine, rid)).status == "confirmed"
    assert await counts(client, event_id) == {"available": 1, "reserved": 0, "booked": 2}

    # Booked seats are not for sale again.
    response = await client.post(
        f"/events/{event_id}/reservations", json={"ticket_ids": ids[:1], "customer": "late"}
    )
    assert_problem(response, 409, "tickets-unavailable")
    await assert_invariants(engine, event_id)


async def test_only_the_token_holder_can_read_confirm_or_release(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    event = await make_event(rows=1, seats_per_row=4)
    event_id = event["id"]
    ids = await ticket_ids(client, event_id)
    mine = await reserve(client, event_id, ticket_ids=ids[:2], customer="mine")
    theirs = await reserve(client, event_id, ticket_ids=ids[2:3], customer="theirs")
    rid = mine["id"]

    unknown_id = str(uuid.uuid4())
    unknown = await client.get(f"/reservations/{unknown_id}", headers=bearer(mine["token"]))
    unknown_body = assert_problem(unknown, 404, "reservation-not-found")

    actions = [
        ("GET", f"/reservations/{rid}", None),
        ("POST", f"/reservations/{rid}/confirm", {"payment_reference": "stolen"}),
        ("DELETE", f"/reservations/{rid}", None),
    ]
    for method, path, body in actions:
        kwargs: dict[str, Any] = {"json": body} if body is not None else {}
        for headers in ({}, {"Authorization": "Basic " + mine["token"]}, {"Authorization": ""}):
            response = await client.request(method, path, headers=headers, **kwargs)
            assert_problem(response, 401, "unauthorized")
            assert response.headers["www-authenticate"] == "Bearer"
        for token in ("not-the-token", theirs["token"], ADMIN["Authorization"].split()[1]):
            response = await client.request(method, path, headers=bearer(token), **kwargs)
            body_404 = assert_problem(response, 404, "reservation-not-found")
            # Indistinguishable from a reservation that does not exist.
            assert body_404.keys() == unknown_body.keys()
            assert body_404["title"] == unknown_body["title"]
            assert body_404["detail"] == unknown_body["detail"].replace(unknown_id, rid)

    # Nothing moved: still held by its owner, no booking, the other hold untouched.
    rows = await db_tickets(engine, ids[:3])
    assert [(rows[i].status, str(rows[i].reservation_id)) for i in ids[:3]] == [
        ("reserved", rid),
        ("reserved", rid),
        ("reserved", theirs["id"]),
    ]
    assert (await db_reservation(engine, rid)).status == "active"
    async with engine.connect() as conn:
        count = await conn.execute(
            text("SELECT count(*) FROM bookings WHERE event_id = :id"), {"id": uuid.UUID(event_id)}
        )
        assert count.scalar() == 0
    response = await client.get(f"/reservations/{rid}", headers=bearer(mine["token"]))
    assert response.status_code == 200 and response.json()["status"] == "active"
    response = await client.delete(f"/reservations/{rid}", headers=bearer(mine["token"]))
    assert response.status_code == 204
    await assert_invariants(engine, event_id)


async def test_best_available_takes_the_first_free_seats_in_seat_order(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    event = await make_event(
        sections=[
            {"name": "Front", "rows": 2, "seats_per_row": 3, "price": 5000},
            {"name": "Back", "rows": 2, "seats_per_row": 3, "price": 2000},
        ]
    )
    event_id = event["id"]
    ids = await ticket_ids(client, event_id)
    # Front A-2 is taken first, so best available must skip it.
    await reserve(client, event_id, ticket_ids=[ids[1]], customer="early")

    best = await reserve(client, event_id, quantity=3, customer="best")
    assert [t["label"] for t in best["tickets"]] == ["Front A-1", "Front A-3", "Front B-1"]
    assert [t["id"] for t in best["tickets"]] == [ids[0], ids[2], ids[3]]
    assert best["total"] == 3 * 5000

    back = await reserve(client, event_id, quantity=2, section="Back", customer="back")
    assert [(t["section"], t["row"], t["seat"]) for t in back["tickets"]] == [
        ("Back", "A", 1),
        ("Back", "A", 2),
    ]
    assert back["total"] == 2 * 2000

    # Only two Front seats are left: asking for three takes none.
    response = await client.post(
        f"/events/{event_id}/reservations",
        json={"quantity": 3, "section": "Front", "customer": "greedy"},
    )
    body = assert_problem(response, 409, "tickets-unavailable")
    assert (body["requested"], body["free"]) == (3, 2)
    detail = (await client.get(f"/events/{event_id}")).json()
    assert detail["sections"] == [
        {"name": "Front", "tickets": 6, "available": 2},
        {"name": "Back", "tickets": 6, "available": 4},
    ]
    assert detail["counts"] == {"available": 6, "reserved": 6, "booked": 0}
    last = await reserve(client, event_id, quantity=2, section="Front", customer="last")
    assert [t["label"] for t in last["tickets"]] == ["Front B-2", "Front B-3"]
    await assert_invariants(engine, event_id)


async def test_best_available_for_general_admission(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    event = await make_event(general_admission=5)
    event_id = event["id"]
    assert event["kind"] == "general_admission"
    first = await reserve(client, event_id, quantity=2, customer="first")
    assert [t["label"] for t in first["tickets"]] == ["GA 1", "GA 2"]
    assert all(
        (t["section"], t["row"], t["seat"], t["price"]) == (None, None, None, 1000)
        for t in first["tickets"]
    )
    second = await reserve(client, event_id, quantity=3, customer="second")
    assert [t["label"] for t in second["tickets"]] == ["GA 3", "GA 4", "GA 5"]
    response = await client.post(
        f"/events/{event_id}/reservations", json={"quantity": 1, "customer": "third"}
    )
    body = assert_problem(response, 409, "tickets-unavailable")
    assert (body["requested"], body["free"]) == (1, 0)
    assert await counts(client, event_id) == {"available": 0, "reserved": 5, "booked": 0}
    await assert_invariants(engine, event_id)


async def test_demo_ticket_list_is_data_paged_by_next_link(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    event = await make_event(rows=2, seats_per_row=5)
    event_id = event["id"]
    ids = await ticket_ids(client, event_id)
    assert ids == sorted(ids)

    # This event's tickets are the newest, so walking from its first one ends with its last.
    seen: list[int] = []
    sizes: list[int] = []
    path: str | None = f"/tickets?after={ids[0] - 1}&limit=4"
    while path is not None:
        response = await client.get(path)
        assert response.status_code == 200, response.text
        page = response.json()
        assert set(page) == {"data", "next"}
        seen += [ticket["internal_id"] for ticket in page["data"]]
        sizes.append(len(page["data"]))
        path = page["next"]
        if path is not None:
            assert response.headers["x-next-after"] == str(page["data"][-1]["internal_id"])
        assert len(sizes) < 10, "paging does not end"
    assert seen == ids
    assert sizes == [4, 4, 2]
    first = (await client.get("/tickets", params={"after": ids[0] - 1, "limit": 1})).json()
    public_id = first["data"][0]["id"]
    assert str(uuid.UUID(public_id)) == public_id
    assert first["data"][0] == {
        "id": public_id,
        "internal_id": ids[0],
        "status": "available",
        "event_name": "Test event",
        "event_id": event_id,
        "label": "Main A-1",
        "section": "Main",
        "row": "A",
        "seat": 1,
        "price": 2500,
        "currency": "EUR",
    }
    response = await client.get("/tickets", params={"after": ids[-3], "limit": 5})
    assert [ticket["internal_id"] for ticket in response.json()["data"]] == ids[-2:]
    assert response.json()["next"] is None
    assert "x-next-after" not in response.headers
    await assert_invariants(engine, event_id)


async def test_seed_patch_reserve_gives_a_ticket_to_one_user_only(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    event = await make_event(rows=1, seats_per_row=3)
    event_id = event["id"]
    ids = await ticket_ids(client, event_id)
    target = ids[1]

    response = await client.patch("/tickets/reserve", json={"user_id": 1, "ticket_id": target})
    assert response.status_code == 200, response.text
    won = response.json()
    assert (won["ticket_id"], won["user_id"], won["status"]) == (target, 1, "reserved")
    assert won["internal_id"] == target and won["message"]

    # The same ticket by its public UUID, as the original demo's clients name it.
    response = await client.patch(
        "/tickets/reserve", json={"user_id": 2, "ticket_id": won["ticket_public_id"]}
    )
    body = assert_problem(response, 409, "tickets-unavailable")
    assert body["ticket_ids"] == [target]
    assert body["message"] == "Ticket not available."

    listed = await statuses(client, event_id)
    assert listed == {ids[0]: "available", target: "reserved", ids[2]: "available"}
    row = (await db_tickets(engine, [target]))[target]
    assert (row.status, str(row.reservation_id)) == ("reserved", won["reservation_id"])
    reservation = await db_reservation(engine, won["reservation_id"])
    assert (reservation.customer, reservation.status) == ("1", "active")
    # The seed endpoint's hold is a real one: its token works like any other.
    response = await client.get(
        f"/reservations/{won['reservation_id']}", headers=bearer(won["token"])
    )
    assert response.status_code == 200, response.text
    assert [t["id"] for t in response.json()["tickets"]] == [target]
    await assert_invariants(engine, event_id)
