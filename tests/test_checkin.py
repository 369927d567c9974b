"""Check-in at the door over HTTP: scanners, one admission per ticket, and the races that
matter (many scanners on one code; a check-in against the booking's cancellation).

Every outcome is checked in the database too. Races are ordered by the database's own lock
queue: a test waits until PostgreSQL reports a backend blocked on the lock it holds
(`pg_blocking_pids`), never for a while.
"""

import asyncio
import hashlib
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

import asyncpg
import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import ADMIN, EventFactory, assert_invariants, ticket_ids
from tests.support.problems import assert_problem, bearer
from tests.test_concurrency import assert_no_server_errors, rush

RACERS = 50

# A booking cancelled as a cancellation leaves it (its endpoint lives elsewhere): refunded,
# cancelled at the clock's time once it holds the booking's lock.
CANCEL = """
WITH refund AS (
    UPDATE payments SET status = 'refund_pending', refund_reason = 'cancelled',
                        refund_requested_at = now()
    WHERE booking_id = $1 AND status = 'paid'
)
UPDATE bookings SET status = 'cancelled', cancelled_at = clock_timestamp() WHERE id = $1
"""


@dataclass(frozen=True)
class Booked:
    id: str
    code: str
    event_id: str
    # The issued tickets' codes, in the order of their seats.
    ticket_codes: list[str]
    # The booking link's secret: what the buyer's booking page reads the booking with.
    secret: str


async def book(
    client: httpx.AsyncClient,
    event_id: str,
    *,
    count: int = 2,
    customer: str = "ada@example.com",
) -> Booked:
    """Hold `count` tickets of the event and pay for them; the booking and its codes."""
    free = (await ticket_ids(client, event_id))[:count]
    response = await client.post(
        f"/events/{event_id}/reservations", json={"ticket_ids": free, "customer": customer}
    )
    assert response.status_code == 201, response.text
    hold = response.json()
    response = await client.post(
        f"/reservations/{hold['id']}/confirm",
        json={"payment_reference": "pay_door"},
        headers=bearer(hold["token"]),
    )
    assert response.status_code == 200, response.text
    booking = response.json()
    # The codes as the buyer's booking page shows them (its link's secret follows the `#`).
    secret = booking["booking_url"].split("#", 1)[1]
    response = await client.get(f"/bookings/{booking['id']}", headers=bearer(secret))
    assert response.status_code == 200, response.text
    ticket_codes = [ticket["code"] for ticket in response.json()["tickets"]]
    assert len(ticket_codes) == count
    return Booked(booking["id"], booking["code"], event_id, ticket_codes, secret)


async def add_scanner(client: httpx.AsyncClient, event_id: str, name: str) -> dict[str, Any]:
    response = await client.post(f"/events/{event_id}/scanners", json={"name": name}, headers=ADMIN)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def check_in(
    client: httpx.AsyncClient, event_id: str, code: str, token: str
) -> Any:  # the request, to await or to hand to a rush
    return client.post(
        f"/events/{event_id}/checkins", json={"ticket_code": code}, headers=bearer(token)
    )


async def issued(engine: AsyncEngine, code: str) -> Any:
    async with engine.connect() as conn:
        result = await conn.execute(
            text("SELECT checked_in_at, checked_in_by FROM issued_tickets WHERE code = :code"),
            {"code": code},
        )
        return result.one()


async def door_audit(engine: AsyncEngine, booking_id: str) -> list[Any]:
    async with engine.connect() as conn:
        result = await conn.execute(
            text(
                "SELECT actor, action, event_id, booking_id, details, at FROM audit_log"
                " WHERE booking_id = :booking AND action = 'checked-in' ORDER BY id"
            ),
            {"booking": uuid.UUID(booking_id)},
        )
        return list(result)


def moment(value: str) -> datetime:
    return datetime.fromisoformat(value)


@asynccontextmanager
async def connection(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()


async def blocked_by(observer: asyncpg.Connection, pid: int) -> int:
    """The backend waiting for a lock that backend `pid` holds, once there is one."""
    async with asyncio.timeout(10):
        while True:
            waiter: int | None = await observer.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))", pid
            )
            if waiter is not None:
                return waiter
            await asyncio.sleep(0.01)


# ---- scanners ----


async def test_the_admin_adds_lists_and_revokes_scanners(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    event_id = (await make_event())["id"]
    scanners = f"/events/{event_id}/scanners"

    response = await client.post(scanners, json={"name": "  North door  "}, headers=ADMIN)
    assert response.status_code == 201, response.text
    north = response.json()
    assert set(north) == {"id", "name", "token"}
    assert north["name"] == "North door"
    assert len(north["token"]) >= 40
    south = await add_scanner(client, event_id, "South door")
    assert south["token"] != north["token"]

    # Only the token's SHA-256 is stored.
    async with engine.connect() as conn:
        stored = (
            await conn.execute(
                text("SELECT name, token_hash FROM scanners WHERE id = :id"),
                {"id": uuid.UUID(north["id"])},
            )
        ).one()
    assert stored.name == "North door"
    assert bytes(stored.token_hash) == hashlib.sha256(north["token"].encode()).digest()

    response = await client.get(scanners, headers=ADMIN)
    assert response.status_code == 200, response.text
    listed = response.json()
    assert [(s["id"], s["name"], s["revoked_at"]) for s in listed] == [
        (north["id"], "North door", None),
        (south["id"], "South door", None),
    ]
    assert all("token" not in s for s in listed)

    response = await client.delete(f"{scanners}/{north['id']}", headers=ADMIN)
    assert response.status_code == 204, response.text
    revoked_at = {
        s["id"]: s["revoked_at"] for s in (await client.get(scanners, headers=ADMIN)).json()
    }
    assert revoked_at[north["id"]] is not None and revoked_at[south["id"]] is None
    # Revoking again is fine and keeps the first time.
    response = await client.delete(f"{scanners}/{north['id']}", headers=ADMIN)
    assert response.status_code == 204, response.text
    again = {s["id"]: s["revoked_at"] for s in (await client.get(scanners, headers=ADMIN)).json()}
    assert again == revoked_at

    # Another event's scanner, or none at all, cannot be revoked through this event.
    other_event = (await make_event(name="Elsewhere"))["id"]
    assert (await client.get(f"/events/{other_event}/scanners", headers=ADMIN)).json() == []
    response = await client.delete(f"/events/{other_event}/scanners/{south['id']}", headers=ADMIN)
    assert_problem(response, 404, "not-found")
    response = await client.delete(f"{scanners}/{uuid.uuid4()}", headers=ADMIN)
    assert_problem(response, 404, "not-found")


async def test_scanners_are_for_the_admin_only(
    client: httpx.AsyncClient, make_event: EventFactory
) -> None:
    event_id = (await make_event())["id"]
    scanner = await add_scanner(client, event_id, "Door")
    scanners = f"/events/{event_id}/scanners"
    body = {"name": "Sneaky"}
    assert_problem(await client.post(scanners, json=body), 401, "unauthorized")
    assert_problem(await client.get(scanners), 401, "unauthorized")
    # A scanner's token opens the door, nothing else.
    door = bearer(scanner["token"])
    assert_problem(await client.post(scanners, json=body, headers=door), 403, "forbidden")
    assert_problem(await client.get(scanners, headers=door), 403, "forbidden")
    response = await client.delete(f"{scanners}/{scanner['id']}", headers=door)
    assert_problem(response, 403, "forbidden")

    unknown = f"/events/{uuid.uuid4()}/scanners"
    assert_problem(await client.post(unknown, json=body, headers=ADMIN), 404, "event-not-found")
    assert_problem(await client.get(unknown, headers=ADMIN), 404, "event-not-found")
    for name in ["", "   ", "x" * 101]:
        response = await client.post(scanners, json={"name": name}, headers=ADMIN)
        assert_problem(response, 422, "invalid-request")
    response = await client.post(scanners, json={"name": "A", "token": "mine"}, headers=ADMIN)
    assert_problem(response, 422, "invalid-request")


# ---- check-in ----


async def test_the_first_scan_admits_with_the_seat_and_the_second_says_when_and_by_whom(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    event = await make_event(rows=2, seats_per_row=5)
    event_id = event["id"]
    booking = await book(client, event_id, count=2, customer="ada@example.com")
    first, second = booking.ticket_codes
    north = await add_scanner(client, event_id, "North door")
    south = await add_scanner(client, event_id, "South door")

    # As printed in groups of four, in lower case: the door's typing does not matter.
    typed = " " + "-".join(first[i : i + 4] for i in range(0, 16, 4)).lower() + " "
    response = await check_in(client, event_id, typed, north["token"])
    assert response.status_code == 200, response.text
    admitted = response.json()
    assert admitted == {
        "ticket_code": first,
        "booking_code": booking.code,
        "event_id": event_id,
        "label": "Main A-1",
        "section": "Main",
        "row": "A",
        "seat": 1,
        "customer": "ada@example.com",
        "checked_in_at": admitted["checked_in_at"],
        "checked_in_by": "North door",
    }
    row = await issued(engine, first)
    assert row.checked_in_at == moment(admitted["checked_in_at"])
    assert row.checked_in_by == "North door"

    # Again, at the other door and with the admin token: refused, naming the first scan.
    for token in (south["token"], north["token"], ADMIN["Authorization"].split()[1]):
        response = await check_in(client, event_id, first, token)
        body = assert_problem(response, 409, "already-checked-in")
        assert moment(body["checked_in_at"]) == row.checked_in_at
        assert body["checked_in_by"] == "North door"
        assert "North door" in body["detail"]
    assert await issued(engine, first) == row

    # The booking's other ticket is its own admission; the admin is recorded as "admin".
    response = await check_in(client, event_id, second, ADMIN["Authorization"].split()[1])
    assert response.status_code == 200, response.text
    assert response.json()["checked_in_by"] == "admin"
    assert (response.json()["label"], response.json()["seat"]) == ("Main A-2", 2)

    # The buyer's booking page shows which tickets went in.
    page = await client.get(f"/bookings/{booking.id}", headers=bearer(booking.secret))
    shown = {t["code"]: t["checked_in_at"] for t in page.json()["tickets"]}
    assert moment(shown[first]) == row.checked_in_at
    assert shown[second] is not None

    # One audit row per admission, none for the refusals.
    audit = await door_audit(engine, booking.id)
    assert [(a.actor, a.action, str(a.event_id), a.details) for a in audit] == [
        ("North door", "checked-in", event_id, {"ticket_code": first, "scanner_id": north["id"]}),
        ("admin", "checked-in", event_id, {"ticket_code": second}),
    ]
    assert audit[0].at == row.checked_in_at


async def test_unknown_codes_other_events_and_cancelled_bookings_are_refused(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine, database_url: str
) -> None:
    event_id = (await make_event(name="Tonight"))["id"]
    other_id = (await make_event(name="Next Friday's gig"))["id"]
    door = (await add_scanner(client, event_id, "Door"))["token"]
    here = await book(client, event_id, count=2)
    there = await book(client, other_id, count=1)

    response = await check_in(client, event_id, "ABCDEFGHJKLMNPQR", door)
    assert_problem(response, 404, "ticket-not-found")

    response = await check_in(client, event_id, there.ticket_codes[0], door)
    body = assert_problem(response, 409, "wrong-event")
    assert "Next Friday's gig" in body["detail"]
    assert body["event_name"] == "Next Friday's gig"
    assert (await issued(engine, there.ticket_codes[0])).checked_in_at is None

    async with connection(database_url) as conn:
        await conn.execute(CANCEL, uuid.UUID(here.id))
    for code in here.ticket_codes:
        response = await check_in(client, event_id, code, door)
        body = assert_problem(response, 409, "booking-cancelled")
        assert here.code in body["detail"]
        assert (await issued(engine, code)).checked_in_at is None
    assert await door_audit(engine, here.id) == []
    assert await door_audit(engine, there.id) == []
    await assert_invariants(engine, event_id)


async def test_garbage_codes_are_refused_before_anything_is_looked_up(
    client: httpx.AsyncClient, make_event: EventFactory
) -> None:
    event_id = (await make_event())["id"]
    door = bearer((await add_scanner(client, event_id, "Door"))["token"])
    url = f"/events/{event_id}/checkins"
    for code in [
        "",
        "   ",
        "ABCDEFGHJKLMNPQ",  # 15
        "ABCDEFGHJKLMNPQRS",  # 17
        "ABCDEFGHJKLMNPQ1",  # 1 is not in the alphabet
        "ABCDEFGH/JKLMNPQR",
        "ABCDEFGHJKLMNPQ\u00c9",
        "ABCD EFGH JKLM NPQR" + "-" * 60,  # over 64 characters
    ]:
        assert_problem(
            await client.post(url, json={"ticket_code": code}, headers=door), 422, "invalid-request"
        )
    for body in [{}, {"ticket_code": 1234567890123456}, {"ticket_code": None}, {"code": "X"}]:
        assert_problem(await client.post(url, json=body, headers=door), 422, "invalid-request")
    response = await client.post(
        url, json={"ticket_code": "ABCDEFGHJKLMNPQR", "extra": 1}, headers=door
    )
    assert_problem(response, 422, "invalid-request")


async def test_only_the_admin_and_this_events_live_scanners_may_check_in(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    event_id = (await make_event())["id"]
    other_id = (await make_event(name="Elsewhere"))["id"]
    booking = await book(client, event_id, count=1)
    code = booking.ticket_codes[0]
    url = f"/events/{event_id}/checkins"

    # No token: 401, before the body is even read.
    response = await client.post(url, json={"ticket_code": code})
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"
    assert_problem(await client.post(url, json={"ticket_code": "?"}), 401, "unauthorized")

    elsewhere = await add_scanner(client, other_id, "Door elsewhere")
    revoked = await add_scanner(client, event_id, "Lost phone")
    response = await client.delete(f"/events/{event_id}/scanners/{revoked['id']}", headers=ADMIN)
    assert response.status_code == 204
    for token in ["not-a-token", elsewhere["token"], revoked["token"], revoked["token"] + "x"]:
        assert_problem(await check_in(client, event_id, code, token), 403, "forbidden")
    assert (await issued(engine, code)).checked_in_at is None

    # The admin at a door of an event that does not exist.
    admin = ADMIN["Authorization"].split()[1]
    response = await check_in(client, str(uuid.uuid4()), code, admin)
    assert_problem(response, 404, "event-not-found")
    response = await check_in(client, str(uuid.uuid4()), "ABCDEFGHJKLMNPQR", admin)
    assert_problem(response, 404, "event-not-found")

    # The scanner of the ticket's own event admits it.
    live = await add_scanner(client, event_id, "Main door")
    response = await check_in(client, event_id, code, live["token"])
    assert response.status_code == 200, response.text


async def test_fifty_scanners_on_one_code_admit_it_exactly_once(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    event_id = (await make_event())["id"]
    booking = await book(client, event_id, count=1)
    code = booking.ticket_codes[0]
    scanners = [await add_scanner(client, event_id, f"Door {n}") for n in range(RACERS)]

    responses = await rush(
        client, [partial(check_in, client, event_id, code, s["token"]) for s in scanners]
    )

    assert_no_server_errors(responses)
    assert Counter(r.status_code for r in responses) == {200: 1, 409: RACERS - 1}
    [winner] = [n for n, r in enumerate(responses) if r.status_code == 200]
    admitted = responses[winner].json()
    assert admitted["checked_in_by"] == f"Door {winner}"
    for response in responses:
        if response.status_code == 409:
            body = assert_problem(response, 409, "already-checked-in")
            assert body["checked_in_by"] == f"Door {winner}"
            assert moment(body["checked_in_at"]) == moment(admitted["checked_in_at"])

    async with engine.connect() as conn:
        checked = (
            await conn.execute(
                text(
                    "SELECT code, checked_in_by FROM issued_tickets"
                    " WHERE event_id = :event AND checked_in_at IS NOT NULL"
                ),
                {"event": uuid.UUID(event_id)},
            )
        ).all()
    assert [tuple(row) for row in checked] == [(code, f"Door {winner}")]
    assert [a.actor for a in await door_audit(engine, booking.id)] == [f"Door {winner}"]
    await assert_invariants(engine, event_id)


# ---- against a cancellation ----


async def test_a_check_in_waiting_on_a_cancellation_sees_the_booking_cancelled(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine, database_url: str
) -> None:
    event_id = (await make_event())["id"]
    booking = await book(client, event_id, count=1)
    code = booking.ticket_codes[0]
    door = (await add_scanner(client, event_id, "Door"))["token"]

    async with connection(database_url) as cancel, connection(database_url) as observer:
        async with cancel.transaction():
            # The cancellation holds the booking's lock before it changes anything...
            await cancel.execute(
                "SELECT id FROM bookings WHERE id = $1 FOR UPDATE", uuid.UUID(booking.id)
            )
            scan = asyncio.create_task(check_in(client, event_id, code, door))
            # ...the check-in queues behind it...
            await blocked_by(observer, cancel.get_server_pid())
            await cancel.execute(CANCEL, uuid.UUID(booking.id))
        # ...and reads the booking as the cancellation left it.
        response = await scan

    assert_problem(response, 409, "booking-cancelled")
    assert (await issued(engine, code)).checked_in_at is None
    assert await door_audit(engine, booking.id) == []
    await assert_invariants(engine, event_id)


async def test_a_cancellation_waits_for_a_check_in_under_way(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine, database_url: str
) -> None:
    event_id = (await make_event())["id"]
    booking = await book(client, event_id, count=1)
    code = booking.ticket_codes[0]
    door = (await add_scanner(client, event_id, "Door"))["token"]

    async with (
        connection(database_url) as holder,
        connection(database_url) as cancel,
        connection(database_url) as observer,
    ):
        # Something holds the issued ticket, so the check-in stops there: after it locked
        # the booking (the booking comes first).
        holding = holder.transaction()
        await holding.start()
        await holder.execute("SELECT id FROM issued_tickets WHERE code = $1 FOR UPDATE", code)
        scan = asyncio.create_task(check_in(client, event_id, code, door))
        checking_in = await blocked_by(observer, holder.get_server_pid())

        async with cancel.transaction():
            lock = asyncio.create_task(
                cancel.execute(
                    "SELECT id FROM bookings WHERE id = $1 FOR UPDATE", uuid.UUID(booking.id)
                )
            )
            # The cancellation waits for the check-in's share of the booking...
            assert await blocked_by(observer, checking_in) == cancel.get_server_pid()
            await holding.rollback()
            response = await scan
            assert response.status_code == 200, response.text
            # ...and gets the booking only once the check-in committed.
            await lock
            await cancel.execute(CANCEL, uuid.UUID(booking.id))

    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT it.checked_in_at, b.cancelled_at FROM issued_tickets it"
                    " JOIN bookings b ON b.id = it.booking_id WHERE it.code = :code"
                ),
                {"code": code},
            )
        ).one()
    assert row.checked_in_at == moment(response.json()["checked_in_at"])
    assert row.checked_in_at < row.cancelled_at
    # Admitted before the cancellation, so nothing more admits it.
    assert_problem(await check_in(client, event_id, code, door), 409, "booking-cancelled")
    await assert_invariants(engine, event_id)


async def test_a_lock_held_past_the_doors_patience_is_a_clean_conflict(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine, database_url: str
) -> None:
    event_id = (await make_event())["id"]
    booking = await book(client, event_id, count=1)
    code = booking.ticket_codes[0]
    door = (await add_scanner(client, event_id, "Door"))["token"]

    async with connection(database_url) as blocker, blocker.transaction():
        await blocker.execute(
            "SELECT id FROM bookings WHERE id = $1 FOR UPDATE", uuid.UUID(booking.id)
        )
        # Held until the answer arrives: the check-in's lock_timeout (2 s) runs out first.
        response = await check_in(client, event_id, code, door)

    assert_problem(response, 409, "conflict")
    assert (await issued(engine, code)).checked_in_at is None
    response = await check_in(client, event_id, code, door)
    assert response.status_code == 200, response.text


# ---- the door's page ----


async def test_the_scanner_page_is_served_for_an_event(
    client: httpx.AsyncClient, make_event: EventFactory
) -> None:
    event = await make_event(name="Door test <night>")
    response = await client.get(f"/events/{event['id']}/scan")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert "Door test &lt;night&gt;" in response.text
    assert f'data-event-id="{event["id"]}"' in response.text
    assert "/static/scanner.js?v=" in response.text

    for missing in [f"/events/{uuid.uuid4()}/scan", "/events/not-a-uuid/scan"]:
        response = await client.get(missing)
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("text/html")
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert "/events/{event_id}/scan" not in paths
    assert "/events/{event_id}/checkins" in paths


async def test_the_door_racing_the_organisers_cancellation_never_admits_after_it(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    """The real cancel endpoint against ten scanners scanning the booking's ten tickets at
    once: each scan is admitted before the cancellation or refused after it, never later."""
    event_id = (await make_event())["id"]
    booking = await book(client, event_id, count=10)
    scanners = [await add_scanner(client, event_id, f"Gate {n}") for n in range(10)]
    cancel = partial(
        client.post, f"/bookings/{booking.id}/cancel", json={"release_seats": True}, headers=ADMIN
    )
    scans = [
        partial(check_in, client, event_id, code, scanner["token"])
        for code, scanner in zip(booking.ticket_codes, scanners, strict=True)
    ]
    responses = await rush(client, [*scans[:5], cancel, *scans[5:]])
    assert_no_server_errors(responses)
    cancelled = responses[5]
    assert cancelled.status_code == 200, cancelled.text
    cancelled_at = moment(cancelled.json()["cancelled_at"])
    scanned = responses[:5] + responses[6:]
    for response in scanned:
        if response.status_code == 200:
            assert moment(response.json()["checked_in_at"]) <= cancelled_at
        else:
            assert_problem(response, 409, "booking-cancelled")
    # Afterwards every ticket of it is refused at the door.
    for code, scanner in zip(booking.ticket_codes, scanners, strict=True):
        again = await check_in(client, event_id, code, scanner["token"])
        assert again.status_code == 409
    await assert_invariants(engine, event_id)
