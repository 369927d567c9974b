"""Round trips per hot operation, counted on the wire.

The service's connection to PostgreSQL goes through a TCP relay in the test that counts
turns: each time the client speaks after the server has, that is one more round trip. The
counts are pinned: a change that adds a BEGIN, a SET, or a second statement to a hot
operation fails here, whatever it does to the benchmark.
"""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import pytest

from boxoffice.config import Settings
from boxoffice.db import Database
from boxoffice.events.schemas import EventCreate, SectionIn
from boxoffice.events.service import create_event
from boxoffice.idempotency import IdempotencyRequest
from boxoffice.reservations import holder
from boxoffice.reservations.records import Hold
from boxoffice.reservations.reserve import reserve_best_available, reserve_tickets
from boxoffice.reservations.schemas import ReservationCreate, keyed_reservation
from boxoffice.tickets.service import list_event_tickets

SECRET = b"round-trip-test-secret"


class TurnCountingRelay:
    """Relays one PostgreSQL connection at a time and counts the client's turns."""

    def __init__(self, upstream_url: str) -> None:
        self._upstream = urlsplit(upstream_url)
        self.turns = 0
        self._server_spoke_last = True
        self.port = 0
        self._server: asyncio.Server | None = None

    async def _open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        socket_dir = parse_qs(self._upstream.query).get("host", [self._upstream.hostname or ""])[0]
        port = self._upstream.port or 5432
        if socket_dir.startswith("/"):
            return await asyncio.open_unix_connection(f"{socket_dir}/.s.PGSQL.{port}")
        return await asyncio.open_connection(socket_dir or "127.0.0.1", port)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, from_client: bool
    ) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                if from_client and self._server_spoke_last:
                    self.turns += 1
                self._server_spoke_last = not from_client
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await self._open_upstream()
        await asyncio.gather(
            self._pipe(reader, up_writer, from_client=True),
            self._pipe(up_reader, writer, from_client=False),
        )

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def url(self) -> str:
        parts = self._upstream
        user = f"{parts.username}@" if parts.username else ""
        return urlunsplit((parts.scheme, f"{user}127.0.0.1:{self.port}", parts.path, "", ""))

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()


@pytest.fixture
async def relayed(database_url: str) -> AsyncIterator[tuple[TurnCountingRelay, Database]]:
    relay = TurnCountingRelay(database_url)
    await relay.start()
    # One connection, so every operation runs on the one the relay watches.
    db = Database(Settings(database_url=relay.url()), size=1)
    try:
        yield relay, db
    finally:
        await db.close()
        await relay.stop()


async def turns_of(relay: TurnCountingRelay, operation: object) -> int:
    assert asyncio.iscoroutine(operation)
    relay.turns = 0
    await operation
    return relay.turns


def keyed(event_id: uuid.UUID, body: ReservationCreate) -> tuple[IdempotencyRequest, str]:
    return keyed_reservation(SECRET, str(uuid.uuid4()), event_id, body)


async def test_each_hot_operation_costs_the_round_trips_it_should(
    relayed: tuple[TurnCountingRelay, Database],
) -> None:
    relay, db = relayed
    event_id = await create_event(
        db,
        event=EventCreate(
            name="Round trips",
            starts_at=datetime.now(UTC) + timedelta(days=30),
            sections=[SectionIn(name="Main", rows=4, seats_per_row=10, price=1000)],
        ),
        default_hold_seconds=300,
        max_tickets=1000,
    )
    _, tickets, _ = await list_event_tickets(
        db, event_id=event_id, status=None, section=None, limit=40, after=None
    )
    # Chosen seats from the back, so best available (from the front) never takes them.
    seats = iter(ticket.id for ticket in reversed(tickets))

    async def chosen(**extra: Any) -> object:
        return await reserve_tickets(
            db, event_id=event_id, ticket_ids=[next(seats)], customer="ada", **extra
        )

    # The first use of each statement prepares it on the connection (one more round trip);
    # after that asyncpg reuses the prepared statement, as a worker's connections do.
    await chosen()
    assert await turns_of(relay, chosen()) == 1

    await reserve_best_available(db, event_id=event_id, quantity=2, section=None, customer="ada")
    assert (
        await turns_of(
            relay,
            reserve_best_available(db, event_id=event_id, quantity=2, section=None, customer="b"),
        )
        == 1
    )

    # With an Idempotency-Key: the key travels with the hold, in the same statement.
    body = ReservationCreate(quantity=1, customer="keyed")
    request, token = keyed(event_id, body)
    await reserve_best_available(
        db, event_id=event_id, quantity=1, section=None, customer="keyed",
        idempotency=request, token=token,
    )  # fmt: skip
    request, token = keyed(event_id, body)
    hold_turns = await turns_of(
        relay,
        reserve_best_available(
            db, event_id=event_id, quantity=1, section=None, customer="keyed",
            idempotency=request, token=token,
        ),
    )  # fmt: skip
    assert hold_turns == 1

    # The holder's operations: a read is its statements; a change runs in a transaction
    # (BEGIN, the reservation's lock, the tickets' locks, the change, COMMIT), and confirm
    # reads the booking back for its answer.
    async def hold() -> Hold:
        return await reserve_tickets(db, event_id=event_id, ticket_ids=[next(seats)], customer="c")

    async def read(held: Hold) -> object:
        return await holder.get_reservation(
            db, reservation_id=held.reservation_id, token=held.token
        )

    async def release(held: Hold) -> None:
        await holder.release(db, reservation_id=held.reservation_id, token=held.token)

    async def confirm(held: Hold) -> object:
        return await holder.confirm(
            db, reservation_id=held.reservation_id, token=held.token, payment_reference="p"
        )

    warm, measured = await hold(), await hold()
    await read(warm)
    assert await turns_of(relay, read(measured)) == 2
    await release(warm)
    assert await turns_of(relay, release(measured)) == 5
    warm, measured = await hold(), await hold()
    await confirm(warm)
    assert await turns_of(relay, confirm(measured)) == 8
