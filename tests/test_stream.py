"""GET /events/{id}/stream without a browser: a snapshot, then every committed change (hold,
confirm, release, expiry) as it happens, whichever server process made it; a fresh snapshot
after the listening connection drops; big sweeps split into notifications that fit."""

import asyncio
import json
import signal
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from boxoffice.expiry import sweep_all
from boxoffice.live.service import snapshot_statuses
from tests.conftest import (
    EventFactory,
    assert_invariants,
    running_server,
    service_db,
    serving,
    ticket_ids,
)
from tests.support.expiry import move_expiry_into_the_past
from tests.support.metrics import scrape, value
from tests.support.problems import assert_problem, bearer

# The system layer (tests/support/system.py). Every test streams from the live server, some from
# servers of their own.
pytestmark = pytest.mark.system

WAIT_SECONDS = 15.0


@dataclass
class Message:
    kind: str
    event_id: str
    tickets: dict[int, str]


class Stream:
    """An SSE client reading one event's stream: every message parsed, comments skipped."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def next(self) -> Message:
        async with asyncio.timeout(WAIT_SECONDS):
            kind, data = "message", ""
            async for line in self._lines:
                if line.startswith("event: "):
                    kind = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    data += line.removeprefix("data: ")
                elif line == "" and data:
                    body: dict[str, Any] = json.loads(data)
                    if kind == "snapshot":
                        tickets = snapshot_statuses(body)
                    else:
                        tickets = {int(i): status for i, status in body["tickets"]}
                    return Message(kind, body["event_id"], tickets)
            raise AssertionError("the stream ended")

    async def changes(self, expected: dict[int, str]) -> None:
        """The next `tickets` messages (one or several) announce exactly these changes."""
        seen: dict[int, str] = {}
        while len(seen) < len(expected):
            message = await self.next()
            assert message.kind == "tickets", message
            seen.update(message.tickets)
        assert seen == expected


@asynccontextmanager
async def stream(base_url: str, event_id: str) -> AsyncIterator[Stream]:
    # Its own connection each, so the streams spread over the server's workers.
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=WAIT_SECONDS) as client,
        client.stream("GET", f"/events/{event_id}/stream") as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        yield Stream(response)


async def reserve(client: httpx.AsyncClient, event_id: str, tickets: list[int]) -> dict[str, Any]:
    response = await client.post(
        f"/events/{event_id}/reservations", json={"ticket_ids": tickets, "customer": "sse"}
    )
    assert response.status_code == 201, response.text
    hold: dict[str, Any] = response.json()
    return hold


async def test_a_stream_starts_from_a_snapshot_and_hears_every_change(
    client: httpx.AsyncClient,
    live_server: str,
    database_url: str,
    make_event: EventFactory,
    engine: AsyncEngine,
    tmp_path: Path,
) -> None:
    """Four streams on the two-worker server; changes made through both of its workers and
    through a second, separate server process: every stream hears every change, in order."""
    event = await make_event(rows=1, seats_per_row=6)
    seats = await ticket_ids(client, event["id"])
    async with (
        stream(live_server, event["id"]) as one,
        stream(live_server, event["id"]) as two,
        stream(live_server, event["id"]) as three,
        stream(live_server, event["id"]) as four,
    ):
        streams = (one, two, three, four)
        for each in streams:
            first = await each.next()
            assert first.kind == "snapshot" and first.event_id == event["id"]
            assert first.tickets == dict.fromkeys(seats, "available")

        samples = await scrape(client)
        assert value(samples, "boxoffice_streams_open") >= 4
        assert value(samples, "boxoffice_feed_connected") == 2  # each worker listens

        async def everyone_hears(expected: dict[int, str]) -> None:
            await asyncio.gather(*(each.changes(expected) for each in streams))

        hold = await reserve(client, event["id"], seats[:2])
        await everyone_hears(dict.fromkeys(seats[:2], "reserved"))
        paid = await client.post(
            f"/reservations/{hold['id']}/confirm",
            json={"payment_reference": "pay-sse"},
            headers=bearer(hold["token"]),
        )
        assert paid.status_code == 200, paid.text
        await everyone_hears(dict.fromkeys(seats[:2], "booked"))

        # The same through another server process on the same database.
        with running_server(database_url, tmp_path / "other.log", workers=1) as other_url:
            async with httpx.AsyncClient(base_url=other_url) as other:
                hold = await reserve(other, event["id"], [seats[2]])
                await everyone_hears({seats[2]: "reserved"})
                released = await other.delete(
                    f"/reservations/{hold['id']}", headers=bearer(hold["token"])
                )
                assert released.status_code == 204
                await everyone_hears({seats[2]: "available"})

        # Expiry is heard when the sweeper frees the seats.
        hold = await reserve(client, event["id"], seats[3:5])
        await everyone_hears(dict.fromkeys(seats[3:5], "reserved"))
        moved, _ = await move_expiry_into_the_past(engine, hold["id"])
        assert moved
        await sweep_all(service_db(engine), batch_size=100)
        await everyone_hears(dict.fromkeys(seats[3:5], "available"))
    await assert_invariants(engine, event["id"])


async def test_a_stream_hears_only_its_own_event(
    client: httpx.AsyncClient, live_server: str, make_event: EventFactory, engine: AsyncEngine
) -> None:
    mine, other = await make_event(), await make_event()
    my_seats, other_seats = (
        await ticket_ids(client, mine["id"]),
        await ticket_ids(client, other["id"]),
    )
    async with stream(live_server, mine["id"]) as listening:
        assert (await listening.next()).kind == "snapshot"
        await reserve(client, other["id"], other_seats[:1])
        await reserve(client, mine["id"], my_seats[:1])
        # Had the other event's change come through, it would be the next message.
        message = await listening.next()
        assert message.event_id == mine["id"]
        assert message.tickets == {my_seats[0]: "reserved"}
    await assert_invariants(engine)


async def test_an_unknown_event_has_no_stream(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/events/{uuid.uuid4()}/stream")
    assert_problem(response, 404, "event-not-found")
    assert_problem(await client.get("/events/not-a-uuid/stream"), 422, "invalid-request")


async def test_after_the_listening_connection_drops_the_stream_starts_over(
    client: httpx.AsyncClient, live_server: str, make_event: EventFactory, engine: AsyncEngine
) -> None:
    """Changes made while a worker's LISTEN connection is gone are never notified; once it
    is back, every stream gets a fresh snapshot that has them."""
    event = await make_event(rows=1, seats_per_row=4)
    seats = await ticket_ids(client, event["id"])
    async with stream(live_server, event["id"]) as listening:
        assert (await listening.next()).kind == "snapshot"
        async with engine.connect() as conn:
            ended = await conn.execute(
                text(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM"
                    " pg_stat_activity WHERE application_name = 'boxoffice-feed'"
                    " AND datname = current_database()"
                )
            )
            assert ended.scalar() == 2  # one per worker
        await reserve(client, event["id"], seats[:1])
        # Either the change is heard (the worker was listening again already) and then a
        # snapshot follows, or the snapshot comes first and already shows it.
        message = await listening.next()
        if message.kind == "tickets":
            assert message.tickets == {seats[0]: "reserved"}
            message = await listening.next()
        assert message.kind == "snapshot"
        assert message.tickets[seats[0]] == "reserved"
        assert list(message.tickets.values()).count("available") == 3
    await assert_invariants(engine, event["id"])


async def test_a_big_sweep_arrives_in_notifications_that_fit(
    client: httpx.AsyncClient, live_server: str, make_event: EventFactory, engine: AsyncEngine
) -> None:
    """NOTIFY payloads are capped at 8000 bytes: 450 seats freed by one sweep statement still
    all reach the stream (in batches of at most 200)."""
    event = await make_event(general_admission=450)
    holds = []
    for _ in range(45):
        response = await client.post(
            f"/events/{event['id']}/reservations", json={"quantity": 10, "customer": "bulk"}
        )
        assert response.status_code == 201, response.text
        holds.append(response.json()["id"])
    for hold in holds:
        await move_expiry_into_the_past(engine, hold)
    seats = await ticket_ids(client, event["id"])
    async with stream(live_server, event["id"]) as listening:
        snapshot = await listening.next()
        assert set(snapshot.tickets.values()) == {"available"}  # lapsed holds count as free
        await sweep_all(service_db(engine), batch_size=1000)
        sizes = []
        freed: dict[int, str] = {}
        while len(freed) < len(seats):
            message = await listening.next()
            sizes.append(len(message.tickets))
            freed.update(message.tickets)
        assert freed == dict.fromkeys(seats, "available")
        assert max(sizes) <= 200 and len(sizes) >= 3
    await assert_invariants(engine, event["id"])


async def test_changes_made_while_the_relay_is_down_are_sent_when_it_is_back(
    client: httpx.AsyncClient, live_server: str, make_event: EventFactory, engine: AsyncEngine
) -> None:
    """Changes are recorded in the buyer's own transaction and sent by one relay per database
    (the worker holding an advisory lock). Its connection terminated, the changes made
    meanwhile wait in ticket_changes and reach the streams once a relay is back."""
    event = await make_event(rows=1, seats_per_row=4)
    seats = await ticket_ids(client, event["id"])

    async def relays() -> int:
        async with engine.connect() as conn:
            found = await conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid"
                    " WHERE a.application_name LIKE 'boxoffice-relay/%' AND l.locktype = 'advisory'"
                    " AND a.datname = current_database()"
                )
            )
            return int(found.scalar_one())

    assert await relays() == 1  # two workers, one relay
    async with stream(live_server, event["id"]) as listening:
        assert (await listening.next()).kind == "snapshot"
        async with engine.connect() as conn:
            await conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE application_name LIKE 'boxoffice-relay/%'"
                    " AND datname = current_database()"
                )
            )
        await reserve(client, event["id"], seats[:2])
        await reserve(client, event["id"], seats[2:3])
        await listening.changes(dict.fromkeys(seats[:3], "reserved"))
    assert await relays() == 1
    await assert_invariants(engine, event["id"])


async def test_stopping_the_server_ends_open_streams_at_once(
    database_url: str, make_event: EventFactory, tmp_path: Path
) -> None:
    """A stream never ends by itself; on SIGTERM the workers end them, so `serve` stops
    without waiting out its graceful timeout (5 s) and without errors in its log."""
    event = await make_event(rows=1, seats_per_row=2)
    log = tmp_path / "server.log"
    with serving(database_url, log, workers=2) as served:
        async with stream(served.url, event["id"]) as one, stream(served.url, event["id"]) as two:
            assert (await one.next()).kind == "snapshot"
            assert (await two.next()).kind == "snapshot"
            began = time.monotonic()
            served.process.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(served.process.wait, 10)
            stopped_after = time.monotonic() - began
    assert code == 0
    assert stopped_after < 4, f"serve took {stopped_after:.1f}s to stop"
    text_of_log = log.read_text()
    assert "Traceback" not in text_of_log and "ERROR" not in text_of_log, text_of_log
