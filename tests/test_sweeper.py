"""The expiry sweeper: `boxoffice sweep` in two processes at once, the in-app background
sweeper, and what a sweep must leave alone.

A sweep frees every expired hold in the database it is pointed at, so these tests own a fresh
database (and a server on it, background sweeper off) instead of sharing the session's.
"""

import asyncio
import os
import re
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from boxoffice.config import Settings
from boxoffice.migrate import upgrade
from tests.conftest import (
    ADMIN,
    ADMIN_TOKEN,
    Databases,
    assert_invariants,
    create_engine,
    running_server,
    ticket_ids,
)
from tests.support.expiry import expire_holds_of_event

# The system layer (tests/support/system.py). A server of its own, and `boxoffice sweep` run as
# processes.
pytestmark = pytest.mark.system

FREED = re.compile(r"freed (\d+) tickets, marked (\d+) holds expired")


@dataclass(frozen=True)
class SweepDatabase:
    url: str
    base_url: str


@pytest.fixture(scope="module")
def sweep_database(
    databases: Databases, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SweepDatabase]:
    url = databases.create("boxoffice_sweep")
    upgrade(url)
    log = tmp_path_factory.mktemp("sweep_server") / "server.log"
    with running_server(url, log) as base_url:
        yield SweepDatabase(url, base_url)


@pytest_asyncio.fixture(scope="module")
async def sweep_engine(sweep_database: SweepDatabase) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(Settings(database_url=sweep_database.url, admin_token=ADMIN_TOKEN))
    yield engine
    await engine.dispose()


@pytest_asyncio.fixture
async def api(sweep_database: SweepDatabase) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=500, max_keepalive_connections=500)
    async with httpx.AsyncClient(
        base_url=sweep_database.base_url, timeout=30, limits=limits
    ) as client:
        yield client


async def create_event(
    client: httpx.AsyncClient, *, rows: int, seats_per_row: int, hold_seconds: int
) -> str:
    body = {
        "name": "Sweep test",
        "starts_at": "2030-01-01T20:00:00Z",
        "hold_seconds": hold_seconds,
        "sections": [{"name": "Main", "rows": rows, "seats_per_row": seats_per_row, "price": 1500}],
    }
    response = await client.post("/events", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    event_id: str = response.json()["id"]
    return event_id


async def hold(
    client: httpx.AsyncClient, event_id: str, ids: list[int], customer: str
) -> dict[str, Any]:
    response = await client.post(
        f"/events/{event_id}/reservations", json={"ticket_ids": ids, "customer": customer}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def holder(reservation: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {reservation['token']}"}


def sweep_command(url: str, batch_size: int) -> tuple[list[str], dict[str, str]]:
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "SWEEP_BATCH_SIZE": str(batch_size),
        # Long enough to queue behind the test's table lock (the start barrier) without failing.
        "LOCK_TIMEOUT_MS": "10000",
    }
    return [sys.executable, "-m", "boxoffice.cli", "sweep"], env


async def run_sweep(url: str, batch_size: int = 25) -> tuple[int, int]:
    command, env = sweep_command(url, batch_size)
    process = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    return parse_sweep(process.returncode, output.decode())


def parse_sweep(returncode: int | None, output: str) -> tuple[int, int]:
    assert returncode == 0, output
    found = FREED.search(output)
    assert found, output
    return int(found[1]), int(found[2])


async def stored_state(engine: AsyncEngine, event_id: str) -> dict[str, Any]:
    """The rows as stored (not the effective status): what the sweeper changes."""
    params = {"e": uuid.UUID(event_id)}
    async with engine.connect() as conn:
        tickets = {
            row.id: tuple(row)
            for row in await conn.execute(
                text(
                    "SELECT id, status::text, reservation_id, hold_expires_at, booking_id"
                    " FROM tickets WHERE event_id = :e"
                ),
                params,
            )
        }
        reservations = {
            row.id: row.status
            for row in await conn.execute(
                text("SELECT id, status::text AS status FROM reservations WHERE event_id = :e"),
                params,
            )
        }
        audit = [
            tuple(row)
            for row in await conn.execute(
                text(
                    "SELECT ticket_id, reason, reservation_id FROM ticket_audit"
                    " WHERE event_id = :e ORDER BY id"
                ),
                params,
            )
        ]
    return {"tickets": tickets, "reservations": reservations, "audit": audit}


async def expired_audit_per_ticket(engine: AsyncEngine, event_id: str) -> dict[int, int]:
    async with engine.connect() as conn:
        result = await conn.execute(
            text(
                "SELECT t.id, count(a.id) FILTER (WHERE a.reason = 'expired') AS expired"
                " FROM tickets t LEFT JOIN ticket_audit a ON a.ticket_id = t.id"
                " WHERE t.event_id = :e GROUP BY t.id"
            ),
            {"e": uuid.UUID(event_id)},
        )
        return {row.id: row.expired for row in result}


async def waiting_on_locks(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        count = await conn.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
            )
        )
    return int(count or 0)


async def test_two_sweep_processes_free_each_expired_hold_once(
    api: httpx.AsyncClient, sweep_engine: AsyncEngine, sweep_database: SweepDatabase
) -> None:
    event_id = await create_event(api, rows=30, seats_per_row=20, hold_seconds=300)
    ids = await ticket_ids(api, event_id)
    assert len(ids) == 600
    pairs = [ids[i : i + 2] for i in range(0, 600, 2)]
    # Setup, not a rush: a few holds at a time, so a loaded machine cannot turn it into 503s.
    limit = asyncio.Semaphore(8)

    async def take(n: int, pair: list[int]) -> dict[str, Any]:
        async with limit:
            return await hold(api, event_id, pair, f"sweep-{n}")

    holds = await asyncio.gather(*(take(n, pair) for n, pair in enumerate(pairs)))
    assert len({h["id"] for h in holds}) == 300
    # Every hold's time runs out now, on the database clock.
    assert len(await expire_holds_of_event(sweep_engine, event_id)) == 300
    before = await stored_state(sweep_engine, event_id)
    assert {row[1] for row in before["tickets"].values()} == {"reserved"}

    # Start barrier: both sweepers queue behind a table lock, then start in the same instant.
    async with sweep_engine.connect() as gate:
        await gate.execute(text("LOCK TABLE tickets IN EXCLUSIVE MODE"))
        command, env = sweep_command(sweep_database.url, batch_size=25)
        processes = [
            await asyncio.create_subprocess_exec(
                *command,
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            for _ in range(2)
        ]
        for _ in range(600):  # a bounded poll of the database, at most ~30 s
            if await waiting_on_locks(sweep_engine) >= 2:
                break
            assert all(p.returncode is None for p in processes), "a sweeper exited early"
            async with sweep_engine.connect() as conn:
                await conn.execute(text("SELECT pg_sleep(0.05)"))
        else:
            pytest.fail("the two sweepers never queued behind the table lock")
        await gate.commit()
    outputs = await asyncio.wait_for(
        asyncio.gather(*(p.communicate() for p in processes)), timeout=60
    )
    results = [
        parse_sweep(p.returncode, out.decode())
        for p, (out, _) in zip(processes, outputs, strict=True)
    ]

    assert sum(freed for freed, _ in results) == 600, results
    assert sum(marked for _, marked in results) == 300, results
    assert all(freed > 0 for freed, _ in results), f"the sweepers did not overlap: {results}"
    after = await stored_state(sweep_engine, event_id)
    for ticket_id, (_, status, reservation_id, expires, booking_id) in after["tickets"].items():
        assert (status, reservation_id, expires, booking_id) == ("available", None, None, None), (
            ticket_id
        )
    assert set(after["reservations"].values()) == {"expired"}
    assert await expired_audit_per_ticket(sweep_engine, event_id) == dict.fromkeys(ids, 1)
    owner = {t: uuid.UUID(h["id"]) for h in holds for t in (x["id"] for x in h["tickets"])}
    expired_rows = [(t, r) for t, reason, r in after["audit"] if reason == "expired"]
    assert sorted(expired_rows) == sorted(owner.items())
    # A second sweep finds nothing left to do.
    assert await run_sweep(sweep_database.url) == (0, 0)
    await assert_invariants(sweep_engine, event_id)
    await assert_invariants(sweep_engine)


async def test_background_sweeper_frees_expired_holds(
    api: httpx.AsyncClient,
    sweep_engine: AsyncEngine,
    sweep_database: SweepDatabase,
    tmp_path: Path,
) -> None:
    event_id = await create_event(api, rows=2, seats_per_row=10, hold_seconds=300)
    ids = await ticket_ids(api, event_id)
    holds = [await hold(api, event_id, ids[n : n + 4], f"bg-{n}") for n in range(0, 20, 4)]
    await expire_holds_of_event(sweep_engine, event_id)
    # Expired but not swept: stored as reserved, yet every read already says available.
    before = await stored_state(sweep_engine, event_id)
    assert {row[1] for row in before["tickets"].values()} == {"reserved"}
    listed = await api.get(f"/events/{event_id}/tickets", params={"limit": 100})
    assert {ticket["status"] for ticket in listed.json()["items"]} == {"available"}

    log = tmp_path / "sweeping_server.log"
    with running_server(sweep_database.url, log, SWEEP_INTERVAL_SECONDS="0.2"):
        for _ in range(300):  # a bounded poll of the database, at most ~30 s
            state = await stored_state(sweep_engine, event_id)
            statuses = {row[1] for row in state["tickets"].values()}
            if statuses == {"available"} and set(state["reservations"].values()) == {"expired"}:
                break
            async with sweep_engine.connect() as conn:
                await conn.execute(text("SELECT pg_sleep(0.1)"))
        else:
            pytest.fail(f"the background sweeper did not free the holds:\n{log.read_text()}")

    # Two workers each ran a sweeper: still exactly one expiry per ticket.
    assert await expired_audit_per_ticket(sweep_engine, event_id) == dict.fromkeys(ids, 1)
    assert set(state["reservations"]) == {uuid.UUID(h["id"]) for h in holds}
    await assert_invariants(sweep_engine, event_id)


async def test_sweep_leaves_live_holds_bookings_and_ended_holds_alone(
    api: httpx.AsyncClient, sweep_engine: AsyncEngine, sweep_database: SweepDatabase
) -> None:
    # Whatever earlier tests left is swept, so the counts below are this test's alone.
    await run_sweep(sweep_database.url)

    lasting = await create_event(api, rows=1, seats_per_row=6, hold_seconds=300)
    lasting_ids = await ticket_ids(api, lasting)
    live = await hold(api, lasting, lasting_ids[0:2], "live")
    paid = await hold(api, lasting, lasting_ids[2:4], "paid")
    confirm = await api.post(
        f"/reservations/{paid['id']}/confirm",
        json={"payment_reference": "p1"},
        headers=holder(paid),
    )
    assert confirm.status_code == 200, confirm.text

    short = await create_event(api, rows=1, seats_per_row=8, hold_seconds=300)
    short_ids = await ticket_ids(api, short)
    lapsed = await hold(api, short, short_ids[0:2], "lapsed")
    paid_in_time = await hold(api, short, short_ids[2:4], "paid-in-time")
    released = await hold(api, short, short_ids[4:6], "released")
    confirm = await api.post(
        f"/reservations/{paid_in_time['id']}/confirm",
        json={"payment_reference": "p2"},
        headers=holder(paid_in_time),
    )
    assert confirm.status_code == 200, confirm.text
    release = await api.delete(f"/reservations/{released['id']}", headers=holder(released))
    assert release.status_code == 204, release.text
    retaken = await hold(api, short, short_ids[6:8], "lapsed-too")
    # The two holds still active run out now, on the database clock.
    lapsing = {uuid.UUID(lapsed["id"]), uuid.UUID(retaken["id"])}
    assert set(await expire_holds_of_event(sweep_engine, short)) == lapsing
    # Another buyer takes over the tickets of one lapsed hold, with a hold that lasts.
    successor = await hold(api, short, short_ids[6:8], "successor")
    lasting_before = await stored_state(sweep_engine, lasting)
    short_before = await stored_state(sweep_engine, short)

    # Frees only the two tickets still under a lapsed hold; marks both lapsed holds expired.
    assert await run_sweep(sweep_database.url) == (2, 2)

    # The event with live holds is untouched: same rows, same audit trail.
    assert await stored_state(sweep_engine, lasting) == lasting_before
    assert lasting_before["reservations"] == {
        uuid.UUID(live["id"]): "active",
        uuid.UUID(paid["id"]): "confirmed",
    }
    short_after = await stored_state(sweep_engine, short)
    assert short_after["reservations"] == {
        uuid.UUID(lapsed["id"]): "expired",
        uuid.UUID(paid_in_time["id"]): "confirmed",
        uuid.UUID(released["id"]): "released",
        uuid.UUID(retaken["id"]): "expired",
        uuid.UUID(successor["id"]): "active",
    }
    for ticket_id, row in short_after["tickets"].items():
        if ticket_id in short_ids[2:4]:
            assert row == short_before["tickets"][ticket_id]
            assert row[1] == "booked"
        elif ticket_id in short_ids[6:8]:
            assert row == short_before["tickets"][ticket_id]
            assert row[1:3] == ("reserved", uuid.UUID(successor["id"]))
        else:
            assert row[1:] == ("available", None, None, None)
    new_audit = short_after["audit"][len(short_before["audit"]) :]
    assert short_after["audit"][: len(short_before["audit"])] == short_before["audit"]
    assert sorted(new_audit) == [(t, "expired", uuid.UUID(lapsed["id"])) for t in short_ids[0:2]]
    await assert_invariants(sweep_engine, lasting)
    await assert_invariants(sweep_engine, short)
