"""The waiting room through the real HTTP stack: a `boxoffice serve` with two workers, its
admitter running, the queue followed live over Server-Sent Events; and the admitter's
failover when the worker that admits is killed.
"""

import asyncio
import json
import os
import signal
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from boxoffice.live.relay import RELAY_LOCK
from boxoffice.migrate import upgrade
from tests.conftest import ADMIN, Databases, serving
from tests.support.metrics import scrape, value
from tests.support.problems import assert_problem, bearer

pytestmark = pytest.mark.system

WAIT_SECONDS = 20


async def database_now(url: str) -> datetime:
    conn = await asyncpg.connect(url)
    try:
        now: datetime = await conn.fetchval("SELECT now()")
        return now
    finally:
        await conn.close()


async def queued_event(
    client: httpx.AsyncClient, *, opens_at: datetime | None = None, **settings: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Queued on-sale",
        "starts_at": "2030-01-01T20:00:00Z",
        "sections": [{"name": "Main", "rows": 2, "seats_per_row": 10, "price": 1000}],
        "queue_enabled": True,
        "queue_admit_per_minute": 600,
        **settings,
    }
    if opens_at is not None:
        body["sales_start_at"] = opens_at.isoformat()
    response = await client.post("/events", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    event: dict[str, Any] = response.json()
    return event


async def places(stream: AsyncIterator[str]) -> AsyncIterator[dict[str, Any]]:
    """The `place` messages of a queue stream, as they come."""
    kind = None
    async for line in stream:
        if line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: ") and kind == "place":
            yield json.loads(line.removeprefix("data: "))


async def follow_until_admitted(client: httpx.AsyncClient, stream_url: str) -> list[dict[str, Any]]:
    """Every message of the place's stream until it says the wait is over."""
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(WAIT_SECONDS):
        async with client.stream("GET", stream_url) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            async for place in places(response.aiter_lines()):
                seen.append(place)
                if place["status"] != "waiting" and place["status"] != "pre-queue":
                    break
    return seen


@pytest.fixture
def own_database(databases: Databases) -> str:
    """A database of this test's own: the admitter's lock is per database, and the worker
    killed here must be one of this test's server, not of the session's shared one."""
    url = databases.create()
    upgrade(url)
    return url


@pytest.fixture
async def queue_server(own_database: str, tmp_path: Path) -> AsyncIterator[tuple[str, int]]:
    """A `serve` of our own (its workers are killed here): base URL and its process id."""
    # Beside the session's server: a small pool keeps both inside PostgreSQL's connections.
    with serving(own_database, tmp_path / "serve.log", POOL_SIZE="4") as served:
        yield served.url, served.process.pid


async def test_join_follow_live_get_admitted_and_hold_with_the_pass(
    client: httpx.AsyncClient, database_url: str
) -> None:
    opens = await database_now(database_url) + timedelta(seconds=3)
    event = await queued_event(client, opens_at=opens)
    event_id = event["id"]
    assert event["queue_enabled"] and not event["on_sale"]

    # Without a pass, nothing; before the on-sale, a join lands in the pre-queue.
    refused = await client.post(
        f"/events/{event_id}/reservations", json={"quantity": 1, "customer": "q@x.org"}
    )
    assert_problem(refused, 409, "sales-closed")
    ahead = [
        (await client.post(f"/events/{event_id}/queue", json={"customer": f"a{n}@x.org"})).json()
        for n in range(3)
    ]
    joined = await client.post(f"/events/{event_id}/queue", json={"customer": "Q@x.org"})
    assert joined.status_code == 201, joined.text
    place = joined.json()
    assert place["status"] == "pre-queue" and place["position"] is None
    assert place["sales_start_at"] is not None and "token" in place
    again = await client.post(f"/events/{event_id}/queue", json={"customer": " q@X.org"})
    assert_problem(again, 409, "already-queued")

    seen = await follow_until_admitted(client, place["stream"])
    assert seen[0]["status"] == "pre-queue"
    assert seen[-1]["status"] == "admitted" and seen[-1]["pass_expires_at"]
    assert "token" not in seen[-1] and "customer" not in seen[-1]

    # The place as its holder sees it; a stranger's token learns nothing.
    mine = await client.get(
        f"/events/{event_id}/queue/{place['id']}", headers=bearer(place["token"])
    )
    assert mine.status_code == 200 and mine.json()["status"] == "admitted"
    stranger = await client.get(
        f"/events/{event_id}/queue/{place['id']}", headers=bearer(ahead[0]["token"])
    )
    assert_problem(stranger, 404, "queue-place-not-found")

    no_pass = await client.post(
        f"/events/{event_id}/reservations", json={"quantity": 1, "customer": "q@x.org"}
    )
    assert_problem(no_pass, 403, "queue-pass-required")
    forged = await client.post(
        f"/events/{event_id}/reservations",
        json={"quantity": 1, "customer": "q@x.org", "queue_pass": place["id"].replace("-", "")},
    )
    assert_problem(forged, 403, "queue-pass-required")
    held = await client.post(
        f"/events/{event_id}/reservations",
        json={"quantity": 2, "customer": "q@x.org", "queue_pass": place["token"]},
    )
    assert held.status_code == 201, held.text
    twice = await client.post(
        f"/events/{event_id}/reservations",
        json={"quantity": 1, "customer": "q@x.org", "queue_pass": place["token"]},
    )
    assert "used" in assert_problem(twice, 403, "queue-pass-required")["detail"]

    stats = await client.get(f"/events/{event_id}/queue", headers=ADMIN)
    assert stats.status_code == 200
    assert stats.json()["used_passes"] == 1 and stats.json()["pre_queue"] == 0

    # The counters saw it too (at least: other tests share the server); the gauges exist.
    samples = await scrape(client)
    assert value(samples, "boxoffice_queue_joins_total") >= 4
    assert value(samples, "boxoffice_queue_admitted_total") >= 4
    assert value(samples, "boxoffice_reservations_total", outcome="no_pass") >= 2
    for gauge in (
        "boxoffice_queue_waiting",
        "boxoffice_queue_active_passes",
        "boxoffice_waiting_list_waiting",
    ):
        assert any(name == gauge for name, _ in samples), gauge


async def test_a_later_arrival_sees_its_position_move_live(client: httpx.AsyncClient) -> None:
    event = await queued_event(client, queue_admit_per_minute=120)  # one each half second
    event_id = event["id"]
    for n in range(4):
        await client.post(f"/events/{event_id}/queue", json={"customer": f"b{n}@x.org"})
    place = (await client.post(f"/events/{event_id}/queue", json={"customer": "late@x.org"})).json()
    seen = await follow_until_admitted(client, place["stream"])
    # The first message may come before the admitter numbered the newcomer (no position yet).
    positions = [p["position"] for p in seen if p["status"] == "waiting" and p["position"]]
    assert positions == sorted(positions, reverse=True) and len(set(positions)) >= 2, seen
    assert seen[-1]["status"] == "admitted"


async def test_an_unqueued_event_and_bad_input_are_refused_cleanly(
    client: httpx.AsyncClient,
) -> None:
    plain = await client.post(
        "/events",
        json={
            "name": "Plain",
            "starts_at": "2030-01-01T20:00:00Z",
            "general_admission": {"quantity": 5, "price": 0},
        },
        headers=ADMIN,
    )
    event_id = plain.json()["id"]
    assert_problem(
        await client.post(f"/events/{event_id}/queue", json={"customer": "x@x.org"}),
        409,
        "queue-closed",
    )
    assert_problem(
        await client.post(f"/events/{uuid.uuid4()}/queue", json={"customer": "x@x.org"}),
        404,
        "event-not-found",
    )
    for body in ({}, {"customer": ""}, {"customer": "x" * 201}, {"customer": 5}):
        bad = await client.post(f"/events/{event_id}/queue", json=body)
        assert_problem(bad, 422, "invalid-request")
    no_room = await client.post(
        "/events",
        json={
            "name": "No way in",
            "starts_at": "2030-01-01T20:00:00Z",
            "general_admission": {"quantity": 5, "price": 0},
            "queue_enabled": True,
        },
        headers=ADMIN,
    )
    assert_problem(no_room, 422, "invalid-request")
    edited = await client.patch(
        f"/events/{event_id}",
        json={"max_tickets_per_customer": 2, "sales_end_at": "2031-01-01T00:00:00Z"},
        headers=ADMIN,
    )
    assert_problem(edited, 422, "invalid-request")
    edited = await client.patch(
        f"/events/{event_id}", json={"max_tickets_per_customer": 2}, headers=ADMIN
    )
    assert edited.status_code == 200 and edited.json()["max_tickets_per_customer"] == 2
    capped = await client.post(
        f"/events/{event_id}/reservations", json={"quantity": 3, "customer": "x@x.org"}
    )
    body = assert_problem(capped, 409, "customer-limit-reached")
    assert (body["limit"], body["holding"]) == (2, 0)
    assert (await client.patch(f"/events/{event_id}", json={})).status_code == 401


async def admitter_pid(url: str) -> int | None:
    """The worker that admits: the one whose relay holds the relay's lock in this database
    (pg_locks shows every database's), from pg_locks (a bigint advisory key is classid: its
    high 32 bits, objid: its low 32)."""
    conn = await asyncpg.connect(url)
    try:
        name = await conn.fetchval(
            """
            SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
            WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1 AND l.objid = $2
              AND a.datname = current_database()
            """,
            RELAY_LOCK >> 32,
            RELAY_LOCK & 0xFFFFFFFF,
        )
    finally:
        await conn.close()
    return int(name.rpartition("/")[2]) if name else None


async def wait_for_admitter(url: str, *, other_than: int | None = None) -> int:
    async with asyncio.timeout(WAIT_SECONDS):
        while True:
            pid = await admitter_pid(url)
            if pid is not None and pid != other_than:
                return pid
            await asyncio.sleep(0.1)  # polling the database for a condition, not a race


async def test_killing_the_worker_that_admits_hands_admission_to_another(
    queue_server: tuple[str, int], own_database: str
) -> None:
    base_url, serve_pid = queue_server
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        event_id = (await queued_event(client, queue_admit_per_minute=6000))["id"]
        leader = await wait_for_admitter(own_database)
        first = (
            await client.post(f"/events/{event_id}/queue", json={"customer": "f1@x.org"})
        ).json()
        assert (await follow_until_admitted(client, first["stream"]))[-1]["status"] == "admitted"

        os.kill(leader, signal.SIGKILL)
        successor = await wait_for_admitter(own_database, other_than=leader)
        assert successor != leader and successor != serve_pid

        # The surviving worker admits the next joiner (retrying the join while the killed
        # worker's connections are refused).
        async with asyncio.timeout(WAIT_SECONDS):
            while True:
                try:
                    joined = await client.post(
                        f"/events/{event_id}/queue", json={"customer": "f2@x.org"}
                    )
                    break
                except httpx.TransportError:
                    continue
        assert joined.status_code == 201, joined.text
        second = joined.json()
        assert (await follow_until_admitted(client, second["stream"]))[-1]["status"] == "admitted"
        stats = (await client.get(f"/events/{event_id}/queue", headers=ADMIN)).json()
        assert stats["admitted"] == 2 and stats["waiting"] == 0


async def test_a_sold_out_events_returned_seat_reaches_the_waiting_list_by_itself(
    client: httpx.AsyncClient,
) -> None:
    """The running admitter offers the seat; the buyer reads and pays with the entry token."""
    created = await client.post(
        "/events",
        json={
            "name": "Tiny club",
            "starts_at": "2030-01-01T20:00:00Z",
            "general_admission": {"quantity": 2, "price": 500},
        },
        headers=ADMIN,
    )
    event_id = created.json()["id"]
    not_yet = await client.post(f"/events/{event_id}/waiting-list", json={"customer": "w@x.org"})
    assert_problem(not_yet, 409, "not-sold-out")
    holds = [
        (
            await client.post(
                f"/events/{event_id}/reservations", json={"quantity": 1, "customer": f"h{n}"}
            )
        ).json()
        for n in range(2)
    ]
    joined = await client.post(f"/events/{event_id}/waiting-list", json={"customer": "w@x.org"})
    assert joined.status_code == 201, joined.text
    entry = joined.json()
    assert (entry["status"], entry["position"]) == ("waiting", 1)

    released = await client.delete(
        f"/reservations/{holds[0]['id']}", headers=bearer(holds[0]["token"])
    )
    assert released.status_code == 204
    snipe = await client.post(
        f"/events/{event_id}/reservations", json={"quantity": 1, "customer": "sniper"}
    )
    assert snipe.status_code in (409, 429), snipe.text  # never a 201: the seat is owed

    async with asyncio.timeout(WAIT_SECONDS):
        while True:  # the admitter's next tick (every 0.5 s) makes the offer
            seen = await client.get(
                f"/events/{event_id}/waiting-list/{entry['id']}", headers=bearer(entry["token"])
            )
            if seen.json()["status"] != "waiting":
                break
            await asyncio.sleep(0.1)
    offer = seen.json()
    assert offer["status"] == "offered" and offer["offer_expires_at"]
    paid = await client.post(
        f"/reservations/{offer['reservation_id']}/confirm",
        json={"payment_reference": "wl"},
        headers=bearer(entry["token"]),
    )
    assert paid.status_code == 200, paid.text
    claimed = await client.get(
        f"/events/{event_id}/waiting-list/{entry['id']}", headers=bearer(entry["token"])
    )
    assert claimed.json()["status"] == "claimed"
    stats = (await client.get(f"/events/{event_id}/queue", headers=ADMIN)).json()
    assert (stats["waiting_list"], stats["waiting_list_offers"]) == (0, 1)
