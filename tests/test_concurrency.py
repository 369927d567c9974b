"""Many buyers at once, through the real HTTP stack (two server processes, one database).

Every rush is released by a barrier: each request is prepared and parked on an asyncio.Event,
the last one to arrive opens it, and the HTTP connections are opened beforehand, so the
requests really reach the two workers together. Outcomes are then checked in the database.
"""

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import EventFactory, assert_invariants, ticket_ids
from tests.support.expiry import move_expiry_into_the_past

Send = Callable[[], Awaitable[httpx.Response]]


async def warm_up(client: httpx.AsyncClient, connections: int) -> None:
    """Open (and keep alive) enough connections that the rush does not wait on TCP handshakes."""
    responses = await asyncio.gather(*(client.get("/healthz") for _ in range(connections)))
    assert all(response.status_code == 200 for response in responses)


async def rush(client: httpx.AsyncClient, sends: list[Send]) -> list[httpx.Response]:
    """Send every request at the same moment; the responses in the order of `sends`."""
    await warm_up(client, min(len(sends), 400))
    go = asyncio.Event()
    arrived = 0

    async def one(send: Send) -> httpx.Response:
        nonlocal arrived
        arrived += 1
        if arrived == len(sends):
            go.set()
        await go.wait()
        return await send()

    return list(await asyncio.gather(*(one(send) for send in sends)))


def statuses(responses: list[httpx.Response]) -> Counter[int]:
    return Counter(response.status_code for response in responses)


def problem_type(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    kind: str = response.json()["type"]
    return kind


def assert_no_server_errors(responses: list[httpx.Response]) -> None:
    errors = [f"{r.status_code} {r.text}" for r in responses if r.status_code >= 500]
    assert not errors, f"{len(errors)} server errors, e.g. {errors[:3]}"


def assert_all_unavailable(responses: list[httpx.Response]) -> None:
    """Every refusal is a clean `409 tickets-unavailable` (a deadlock would be `conflict`)."""
    kinds = Counter(problem_type(r) for r in responses if r.status_code == 409)
    assert set(kinds) <= {"https://boxoffice.dev/problems/tickets-unavailable"}, kinds
    assert all(kind.endswith("tickets-unavailable") for kind in kinds)


def reserve(client: httpx.AsyncClient, event_id: str, customer: str, **body: Any) -> Send:
    def send() -> Awaitable[httpx.Response]:
        return client.post(f"/events/{event_id}/reservations", json={**body, "customer": customer})

    return send


def holder(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def ticket_rows(engine: AsyncEngine, event_id: str) -> dict[int, Any]:
    async with engine.connect() as conn:
        result = await conn.execute(
            text(
                "SELECT id, status::text AS status, reservation_id, booking_id, hold_expires_at"
                " FROM tickets WHERE event_id = :event ORDER BY id"
            ),
            {"event": uuid.UUID(event_id)},
        )
        return {row.id: row for row in result}


async def reservation_rows(engine: AsyncEngine, event_id: str) -> dict[uuid.UUID, Any]:
    async with engine.connect() as conn:
        result = await conn.execute(
            text(
                "SELECT id, customer, status::text AS status, ticket_count FROM reservations"
                " WHERE event_id = :event"
            ),
            {"event": uuid.UUID(event_id)},
        )
        return {row.id: row for row in result}


async def claimed_tickets(engine: AsyncEngine, event_id: str) -> dict[uuid.UUID, set[int]]:
    """reservation_tickets of an event: reservation id -> the tickets it claimed."""
    claimed: dict[uuid.UUID, set[int]] = {}
    async with engine.connect() as conn:
        result = await conn.execute(
            text("SELECT reservation_id, ticket_id FROM reservation_tickets WHERE event_id = :e"),
            {"e": uuid.UUID(event_id)},
        )
        for row in result:
            claimed.setdefault(row.reservation_id, set()).add(row.ticket_id)
    return claimed


async def scalar(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(text(sql), params)).scalar()


async def test_200_buyers_of_one_ticket_exactly_one_wins(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    event = await make_event(rows=1, seats_per_row=8)
    event_id = event["id"]
    ids = await ticket_ids(client, event_id)
    target = ids[3]

    responses = await rush(
        client,
        [reserve(client, event_id, f"buyer-{i}", ticket_ids=[target]) for i in range(200)],
    )

    assert_no_server_errors(responses)
    assert statuses(responses) == {201: 1, 409: 199}
    assert_all_unavailable(responses)
    winner_index = next(i for i, r in enumerate(responses) if r.status_code == 201)
    winner = responses[winner_index].json()
    assert winner["status"] == "active"
    assert winner["customer"] == f"buyer-{winner_index}"
    assert [ticket["id"] for ticket in winner["tickets"]] == [target]

    tickets = await ticket_rows(engine, event_id)
    assert tickets[target].status == "reserved"
    assert tickets[target].reservation_id == uuid.UUID(winner["id"])
    assert all(row.status == "available" for tid, row in tickets.items() if tid != target)
    reservations = await reservation_rows(engine, event_id)
    assert list(reservations) == [uuid.UUID(winner["id"])]
    assert await claimed_tickets(engine, event_id) == {uuid.UUID(winner["id"]): {target}}
    audit = await scalar(engine, "SELECT count(*) FROM ticket_audit WHERE ticket_id = :t", t=target)
    assert audit == 1
    await assert_invariants(engine, event_id)


async def test_overlapping_multi_ticket_holds_are_all_or_nothing_and_never_deadlock(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    event = await make_event(rows=3, seats_per_row=10)
    event_id = event["id"]
    ids = await ticket_ids(client, event_id)
    assert len(ids) == 30
    rng = random.Random(20261124)
    wanted = [rng.sample(ids, 3) for _ in range(300)]

    responses = await rush(
        client,
        [reserve(client, event_id, f"multi-{i}", ticket_ids=want) for i, want in enumerate(wanted)],
    )

    assert_no_server_errors(responses)
    counts = statuses(responses)
    assert set(counts) <= {201, 409}, counts
    assert counts[201] >= 1
    assert_all_unavailable(responses)

    winners = {i: r.json() for i, r in enumerate(responses) if r.status_code == 201}
    tickets = await ticket_rows(engine, event_id)
    reservations = await reservation_rows(engine, event_id)
    claimed = await claimed_tickets(engine, event_id)
    # Only the 201s left a reservation behind: a refused hold leaves no trace.
    assert len(reservations) == len(winners)
    assert {row.customer for row in reservations.values()} == {f"multi-{i}" for i in winners}
    taken: set[int] = set()
    for i, body in winners.items():
        reservation_id = uuid.UUID(body["id"])
        want = set(wanted[i])
        assert {ticket["id"] for ticket in body["tickets"]} == want
        assert reservations[reservation_id].status == "active"
        assert reservations[reservation_id].ticket_count == 3
        assert claimed[reservation_id] == want
        for ticket_id in want:
            assert tickets[ticket_id].status == "reserved", ticket_id
            assert tickets[ticket_id].reservation_id == reservation_id, ticket_id
        assert not taken & want, "two winning holds share a ticket"
        taken |= want
    for ticket_id, row in tickets.items():
        if ticket_id not in taken:
            assert row.status == "available", ticket_id
            assert row.reservation_id is None
    await assert_invariants(engine, event_id)


async def test_300_buyers_of_100_general_admission_tickets(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    event = await make_event(general_admission=100)
    event_id = event["id"]

    responses = await rush(
        client, [reserve(client, event_id, f"ga-{i}", quantity=1) for i in range(300)]
    )

    assert_no_server_errors(responses)
    assert statuses(responses) == {201: 100, 409: 200}
    assert_all_unavailable(responses)
    won = [r.json() for r in responses if r.status_code == 201]
    assert all(len(body["tickets"]) == 1 for body in won)
    holders = {body["tickets"][0]["id"]: uuid.UUID(body["id"]) for body in won}
    assert len(holders) == 100, "two buyers got the same ticket"

    tickets = await ticket_rows(engine, event_id)
    assert set(tickets) == set(holders)
    for ticket_id, row in tickets.items():
        assert row.status == "reserved"
        assert row.reservation_id == holders[ticket_id]
    assert len(await reservation_rows(engine, event_id)) == 100
    sold_out = await client.post(
        f"/events/{event_id}/reservations", json={"quantity": 1, "customer": "late"}
    )
    assert sold_out.status_code == 409
    await assert_invariants(engine, event_id)


async def test_best_available_pairs_are_all_or_nothing(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    event = await make_event(rows=2, seats_per_row=10)
    event_id = event["id"]

    responses = await rush(
        client, [reserve(client, event_id, f"pair-{i}", quantity=2) for i in range(120)]
    )

    assert_no_server_errors(responses)
    counts = statuses(responses)
    assert set(counts) <= {201, 409}, counts
    assert 1 <= counts[201] <= 10
    assert_all_unavailable(responses)
    won = {uuid.UUID(r.json()["id"]): r.json() for r in responses if r.status_code == 201}
    tickets = await ticket_rows(engine, event_id)
    claimed = await claimed_tickets(engine, event_id)
    assert set(await reservation_rows(engine, event_id)) == set(won)
    taken: set[int] = set()
    for reservation_id, body in won.items():
        pair = {ticket["id"] for ticket in body["tickets"]}
        assert len(pair) == 2
        assert claimed[reservation_id] == pair
        assert all(tickets[t].reservation_id == reservation_id for t in pair)
        assert not taken & pair
        taken |= pair
    held = {t for t, row in tickets.items() if row.status == "reserved"}
    assert held == taken, "a refused pair left a ticket held"

    # The refused buyers left no lock and no half hold behind: the rest sell out pair by pair.
    for i in range(10 - len(won)):
        response = await client.post(
            f"/events/{event_id}/reservations", json={"quantity": 2, "customer": f"after-{i}"}
        )
        assert response.status_code == 201, response.text
    last = await client.post(
        f"/events/{event_id}/reservations", json={"quantity": 1, "customer": "too-late"}
    )
    assert last.status_code == 409
    assert problem_type(last).endswith("tickets-unavailable")
    await assert_invariants(engine, event_id)


async def _holds(
    client: httpx.AsyncClient, event_id: str, ids: list[int], prefix: str
) -> list[dict[str, Any]]:
    holds = []
    for ticket_id in ids:
        response = await client.post(
            f"/events/{event_id}/reservations",
            json={"ticket_ids": [ticket_id], "customer": f"{prefix}-{ticket_id}"},
        )
        assert response.status_code == 201, response.text
        holds.append(response.json())
    return holds


async def test_confirm_racing_release_exactly_one_wins(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    event = await make_event(rows=2, seats_per_row=10)
    event_id = event["id"]
    holds = await _holds(client, event_id, await ticket_ids(client, event_id), "race")

    sends: list[Send] = []
    for hold in holds:
        path, headers = f"/reservations/{hold['id']}", holder(hold["token"])
        sends.append(
            partial(
                client.post,
                path + "/confirm",
                json={"payment_reference": "pay-race"},
                headers=headers,
            )
        )
        sends.append(partial(client.delete, path, headers=headers))
    responses = await rush(client, sends)

    assert_no_server_errors(responses)
    reservations = await reservation_rows(engine, event_id)
    tickets = await ticket_rows(engine, event_id)
    confirmed = released = 0
    for n, hold in enumerate(holds):
        confirm, release = responses[2 * n], responses[2 * n + 1]
        reservation_id = uuid.UUID(hold["id"])
        ticket = tickets[hold["tickets"][0]["id"]]
        if confirm.status_code == 200:
            confirmed += 1
            assert release.status_code == 409, release.text
            assert reservations[reservation_id].status == "confirmed"
            assert ticket.status == "booked"
            assert ticket.booking_id == uuid.UUID(confirm.json()["id"])
        else:
            released += 1
            assert (confirm.status_code, release.status_code) == (409, 204), confirm.text
            assert reservations[reservation_id].status == "released"
            assert ticket.status == "available"
        loser = release if confirm.status_code == 200 else confirm
        assert problem_type(loser).rsplit("/", 1)[1] in {"reservation-not-active", "conflict"}
    assert confirmed + released == len(holds)
    bookings = await scalar(
        engine, "SELECT count(*) FROM bookings WHERE event_id = :e", e=uuid.UUID(event_id)
    )
    assert bookings == confirmed
    await assert_invariants(engine, event_id)


async def test_double_confirm_books_once(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    event = await make_event(rows=1, seats_per_row=10)
    event_id = event["id"]
    holds = await _holds(client, event_id, await ticket_ids(client, event_id), "twice")
    attempts = 5

    sends: list[Send] = []
    for hold in holds:
        for attempt in range(attempts):
            path = f"/reservations/{hold['id']}/confirm"
            body = {"payment_reference": f"pay-{attempt}"}
            headers = holder(hold["token"])
            sends.append(partial(client.post, path, json=body, headers=headers))
    responses = await rush(client, sends)

    assert_no_server_errors(responses)
    async with engine.connect() as conn:
        result = await conn.execute(
            text("SELECT reservation_id, id FROM bookings WHERE event_id = :e"),
            {"e": uuid.UUID(event_id)},
        )
        bookings = [tuple(row) for row in result]
    booking_of = dict(bookings)
    assert len(bookings) == len(holds) == len(booking_of)
    for n, hold in enumerate(holds):
        mine = responses[n * attempts : (n + 1) * attempts]
        assert statuses(mine) == {200: 1, 409: attempts - 1}
        won = next(r.json() for r in mine if r.status_code == 200)
        assert uuid.UUID(won["id"]) == booking_of[uuid.UUID(hold["id"])]
        for refused in (r for r in mine if r.status_code == 409):
            kind = problem_type(refused).rsplit("/", 1)[1]
            assert kind in {"reservation-not-active", "conflict"}, refused.text
            if kind == "reservation-not-active":
                assert refused.json()["booking_id"] == won["id"]
    tickets = await ticket_rows(engine, event_id)
    assert all(row.status == "booked" for row in tickets.values())
    await assert_invariants(engine, event_id)


async def test_an_expired_hold_cannot_be_confirmed_even_if_nobody_took_it(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    event = await make_event(rows=1, seats_per_row=4, hold_seconds=3600)
    event_id = event["id"]
    ids = await ticket_ids(client, event_id)
    response = await client.post(
        f"/events/{event_id}/reservations", json={"ticket_ids": ids[:2], "customer": "slow"}
    )
    assert response.status_code == 201, response.text
    old = response.json()
    await move_expiry_into_the_past(engine, old["id"])  # its time runs out now

    confirm = await client.post(
        f"/reservations/{old['id']}/confirm",
        json={"payment_reference": "too-late"},
        headers=holder(old["token"]),
    )
    assert confirm.status_code == 409, confirm.text
    assert problem_type(confirm).endswith("reservation-expired")
    tickets = await ticket_rows(engine, event_id)
    assert [tickets[t].status for t in ids[:2]] == ["reserved", "reserved"]  # not swept yet
    assert all(row.booking_id is None for row in tickets.values())
    taken = await client.post(
        f"/events/{event_id}/reservations", json={"ticket_ids": ids[:2], "customer": "next"}
    )
    assert taken.status_code == 201, taken.text
    await assert_invariants(engine, event_id)


async def test_buyers_take_an_expired_hold_while_its_holder_confirms(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    event = await make_event(rows=1, seats_per_row=6, hold_seconds=3600)
    event_id = event["id"]
    ids = await ticket_ids(client, event_id)
    wanted = ids[1:3]
    response = await client.post(
        f"/events/{event_id}/reservations", json={"ticket_ids": wanted, "customer": "slow"}
    )
    assert response.status_code == 201, response.text
    old = response.json()
    await move_expiry_into_the_past(engine, old["id"])  # its time runs out now

    confirm_path = f"/reservations/{old['id']}/confirm"
    sends: list[Send] = [
        lambda: client.post(
            confirm_path, json={"payment_reference": "too-late"}, headers=holder(old["token"])
        )
    ]
    sends += [reserve(client, event_id, f"fast-{i}", ticket_ids=wanted) for i in range(60)]
    responses = await rush(client, sends)

    assert_no_server_errors(responses)
    confirm, buyers = responses[0], responses[1:]
    assert confirm.status_code == 409, confirm.text
    assert problem_type(confirm).endswith("reservation-expired")
    assert statuses(buyers) == {201: 1, 409: 59}
    assert_all_unavailable(buyers)
    new = next(r.json() for r in buyers if r.status_code == 201)

    tickets = await ticket_rows(engine, event_id)
    for ticket_id in wanted:
        assert tickets[ticket_id].status == "reserved"
        assert tickets[ticket_id].reservation_id == uuid.UUID(new["id"])
    assert (
        await scalar(
            engine, "SELECT count(*) FROM bookings WHERE event_id = :e", e=uuid.UUID(event_id)
        )
        == 0
    )
    async with engine.connect() as conn:
        result = await conn.execute(
            text(
                "SELECT ticket_id, array_agg(reason ORDER BY id) AS reasons,"
                " array_agg(reservation_id ORDER BY id) AS reservations"
                " FROM ticket_audit WHERE ticket_id = ANY(:ids) GROUP BY ticket_id"
            ),
            {"ids": wanted},
        )
        audit = {row.ticket_id: row for row in result}
    for ticket_id in wanted:
        assert audit[ticket_id].reasons == ["reserved", "expired", "reserved"]
        old_id, new_id = uuid.UUID(old["id"]), uuid.UUID(new["id"])
        assert audit[ticket_id].reservations == [old_id, old_id, new_id]
    stale = await client.get(f"/reservations/{old['id']}", headers=holder(old["token"]))
    assert stale.status_code == 200
    assert stale.json()["status"] == "expired"
    # The old holder can no longer release what is now someone else's hold.
    late_release = await client.delete(f"/reservations/{old['id']}", headers=holder(old["token"]))
    assert late_release.status_code == 409, late_release.text
    assert problem_type(late_release).endswith("reservation-expired")
    assert await ticket_rows(engine, event_id) == tickets
    await assert_invariants(engine, event_id)


async def test_best_available_buyers_take_expired_holds_while_holder_confirms(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    event = await make_event(general_admission=5, hold_seconds=3600)
    event_id = event["id"]
    response = await client.post(
        f"/events/{event_id}/reservations", json={"quantity": 5, "customer": "slow"}
    )
    assert response.status_code == 201, response.text
    old = response.json()
    await move_expiry_into_the_past(engine, old["id"])  # its time runs out now

    confirm_path = f"/reservations/{old['id']}/confirm"
    sends: list[Send] = [
        lambda: client.post(
            confirm_path, json={"payment_reference": "too-late"}, headers=holder(old["token"])
        )
    ]
    sends += [reserve(client, event_id, f"fast-{i}", quantity=1) for i in range(40)]
    responses = await rush(client, sends)

    assert_no_server_errors(responses)
    confirm, buyers = responses[0], responses[1:]
    assert confirm.status_code == 409, confirm.text
    assert problem_type(confirm).endswith("reservation-expired")
    assert statuses(buyers) == {201: 5, 409: 35}
    assert_all_unavailable(buyers)
    holders = {
        r.json()["tickets"][0]["id"]: uuid.UUID(r.json()["id"])
        for r in buyers
        if r.status_code == 201
    }
    tickets = await ticket_rows(engine, event_id)
    assert set(holders) == set(tickets)
    for ticket_id, row in tickets.items():
        assert row.status == "reserved"
        assert row.reservation_id == holders[ticket_id]
    await assert_invariants(engine, event_id)
