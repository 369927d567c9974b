"""History retention: the sweeper deletes unsold holds past HISTORY_RETENTION_HOURS (issue 9,
"Churn fills the disk") and keeps everything else.

A sweep prunes every old unsold hold in the database it runs on, so these tests own a fresh
database and a server on it (background sweeper off) instead of sharing the session's. Age
is simulated by moving ended holds' timestamps back with SQL, never by sleeping.
"""

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import pydantic
import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from boxoffice.config import Settings, get_settings
from boxoffice.expiry import free_expired_holds, sweep_all
from boxoffice.migrate import upgrade
from boxoffice.retention import PRUNE_UNSOLD_HOLDS, prune_history
from tests.conftest import (
    ADMIN,
    ADMIN_TOKEN,
    Databases,
    assert_invariants,
    create_engine,
    running_server,
    service_db,
    ticket_ids,
)
from tests.support.expiry import move_expiry_into_the_past
from tests.support.system import system_fixture

HISTORY_TABLES = ("reservations", "reservation_tickets", "ticket_audit")
# Older than the default retention (168 hours).
AGE = timedelta(hours=200)
# Hold/release cycles per round of the disk test.
CHURN_CYCLES = 200

SetRetention = Callable[[int], None]


@dataclass(frozen=True)
class RetentionDatabase:
    url: str
    base_url: str


@pytest.fixture(scope="module")
@system_fixture
def retention_database(
    databases: Databases, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RetentionDatabase]:
    url = databases.create("boxoffice_retention")
    upgrade(url)
    log = tmp_path_factory.mktemp("retention_server") / "server.log"
    with running_server(url, log, workers=1) as base_url:
        yield RetentionDatabase(url, base_url)


@pytest_asyncio.fixture(scope="module")
async def retention_engine(retention_database: RetentionDatabase) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(Settings(database_url=retention_database.url, admin_token=ADMIN_TOKEN))
    yield engine
    await engine.dispose()


@pytest_asyncio.fixture
async def api(retention_database: RetentionDatabase) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=retention_database.base_url, timeout=30) as client:
        yield client


@pytest.fixture
def retention_hours(monkeypatch: pytest.MonkeyPatch) -> Iterator[SetRetention]:
    """Set HISTORY_RETENTION_HOURS for this process's sweeps (the default after the test)."""

    def configure(hours: int) -> None:
        monkeypatch.setenv("HISTORY_RETENTION_HOURS", str(hours))
        get_settings.cache_clear()

    configure(168)
    yield configure
    monkeypatch.delenv("HISTORY_RETENTION_HOURS")
    get_settings.cache_clear()


async def create_event(client: httpx.AsyncClient, seats: int) -> tuple[str, list[int]]:
    body = {
        "name": "Retention test",
        "starts_at": "2030-01-01T20:00:00Z",
        "sections": [{"name": "Main", "rows": 1, "seats_per_row": seats, "price": 1500}],
    }
    response = await client.post("/events", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    event_id: str = response.json()["id"]
    return event_id, await ticket_ids(client, event_id)


async def hold(
    client: httpx.AsyncClient, event_id: str, ids: list[int], customer: str = "churner"
) -> dict[str, Any]:
    response = await client.post(
        f"/events/{event_id}/reservations", json={"ticket_ids": ids, "customer": customer}
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def holder(reservation: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {reservation['token']}"}


async def release(client: httpx.AsyncClient, reservation: dict[str, Any]) -> None:
    response = await client.delete(
        f"/reservations/{reservation['id']}", headers=holder(reservation)
    )
    assert response.status_code == 204, response.text


async def confirm(client: httpx.AsyncClient, reservation: dict[str, Any]) -> None:
    response = await client.post(
        f"/reservations/{reservation['id']}/confirm",
        json={"payment_reference": "pay_test_retention"},
        headers=holder(reservation),
    )
    assert response.status_code == 200, response.text


async def churn(
    client: httpx.AsyncClient, event_id: str, seats: list[int], cycles: int
) -> list[str]:
    """One anonymous client holding and releasing seat after seat, as in issue 9."""
    made = []
    for cycle in range(cycles):
        reservation = await hold(client, event_id, [seats[cycle % len(seats)]])
        await release(client, reservation)
        made.append(reservation["id"])
    return made


async def lapse(engine: AsyncEngine, reservation_id: str) -> None:
    """Let a hold's expiry pass now (its tickets' hold_expires_at moves with it)."""
    moved, _ = await move_expiry_into_the_past(engine, reservation_id)
    assert moved, f"hold {reservation_id} had already lapsed"


async def age_ended_holds(engine: AsyncEngine, event_id: str, age: timedelta = AGE) -> None:
    """Make every ended reservation of the event (confirmed ones too) `age` older."""
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE reservations SET created_at = created_at - CAST(:age AS interval),"
                " expires_at = expires_at - CAST(:age AS interval),"
                " ended_at = ended_at - CAST(:age AS interval)"
                " WHERE event_id = :e AND status <> 'active'"
            ),
            {"e": uuid.UUID(event_id), "age": age},
        )


async def history_counts(engine: AsyncEngine, event_id: str | None = None) -> dict[str, int]:
    """Rows per history table: the event's, or the whole database's."""
    where = "" if event_id is None else " WHERE event_id = :e"
    params = {} if event_id is None else {"e": uuid.UUID(event_id)}
    counts = {}
    async with engine.connect() as conn:
        for table in HISTORY_TABLES:
            counts[table] = int(
                await conn.scalar(text(f"SELECT count(*) FROM {table}{where}"), params) or 0
            )
    return counts


async def prune_everything(engine: AsyncEngine) -> None:
    for _ in range(1000):  # bounded: each round deletes a batch or ends the loop
        if (await prune_history(service_db(engine), batch_size=100)).reservations == 0:
            return
    pytest.fail("pruning never finished")


async def test_churn_history_past_the_retention_is_deleted_and_the_rest_kept(
    api: httpx.AsyncClient, retention_engine: AsyncEngine, retention_hours: SetRetention
) -> None:
    event_id, seats = await create_event(api, seats=6)
    churned = await churn(api, event_id, seats[:4], cycles=120)
    # Expired twice over: one taken over by the next hold (which writes the `expired` audit
    # row itself), one freed by the sweeper.
    taken_over = await hold(api, event_id, [seats[2]])
    await lapse(retention_engine, taken_over["id"])
    await release(api, await hold(api, event_id, [seats[2]]))
    swept = await hold(api, event_id, [seats[3]])
    await lapse(retention_engine, swept["id"])
    # A booking of seats with pruned history before it: kept forever, however old.
    paid = await hold(api, event_id, seats[:2], "buyer")
    await confirm(api, paid)
    await sweep_all(service_db(retention_engine), batch_size=1000)
    await age_ended_holds(retention_engine, event_id)
    # After the aging: a live hold and a release inside the retention, both kept.
    live = await hold(api, event_id, [seats[4]], "live")
    recent = await hold(api, event_id, [seats[5]], "recent")
    await release(api, recent)
    await assert_invariants(retention_engine)
    before = await history_counts(retention_engine, event_id)
    assert before["reservations"] == 120 + 3 + 1 + 2
    live_row_before = await reservation_row(retention_engine, live["id"])

    # One sweep prunes one batch, no more (the server's sweeper is off: nothing else runs).
    total = await history_counts(retention_engine)
    await free_expired_holds(service_db(retention_engine), batch_size=50)
    assert (await history_counts(retention_engine))["reservations"] == total["reservations"] - 50
    await assert_invariants(retention_engine)
    await prune_everything(retention_engine)

    after = await history_counts(retention_engine, event_id)
    # Left: the booking (2 tickets, a hold row and a booking row each), the live hold (1 link,
    # 1 audit row) and the recent release (1 link, 2 audit rows).
    assert after == {"reservations": 3, "reservation_tickets": 4, "ticket_audit": 7}
    async with retention_engine.connect() as conn:
        kept = set(
            (
                await conn.execute(
                    text("SELECT id::text FROM reservations WHERE event_id = :e"),
                    {"e": uuid.UUID(event_id)},
                )
            ).scalars()
        )
        audit = (
            await conn.execute(
                text(
                    "SELECT ticket_id, reason, reservation_id::text, booking_id IS NOT NULL"
                    " FROM ticket_audit WHERE event_id = :e ORDER BY id"
                ),
                {"e": uuid.UUID(event_id)},
            )
        ).all()
        bookings = await conn.scalar(
            text("SELECT count(*) FROM bookings WHERE event_id = :e"), {"e": uuid.UUID(event_id)}
        )
    assert kept == {paid["id"], live["id"], recent["id"]}
    assert [tuple(row) for row in audit] == [
        (seats[0], "reserved", paid["id"], False),
        (seats[1], "reserved", paid["id"], False),
        (seats[0], "confirmed", paid["id"], True),
        (seats[1], "confirmed", paid["id"], True),
        (seats[4], "reserved", live["id"], False),
        (seats[5], "reserved", recent["id"], False),
        (seats[5], "released", recent["id"], False),
    ]
    assert bookings == 1
    assert await reservation_row(retention_engine, live["id"]) == live_row_before
    await assert_invariants(retention_engine)

    # What the holders see: the booking and the live hold as before; a pruned hold is gone.
    booked = await api.get(f"/reservations/{paid['id']}", headers=holder(paid))
    assert booked.status_code == 200 and booked.json()["status"] == "confirmed"
    still = await api.get(f"/reservations/{live['id']}", headers=holder(live))
    assert still.status_code == 200 and still.json()["status"] == "active"
    assert (await api.get(f"/reservations/{churned[0]}", headers=holder(live))).status_code == 404
    listed = await api.get(f"/events/{event_id}/tickets")
    statuses = [ticket["status"] for ticket in listed.json()["items"]]
    assert statuses == ["booked", "booked", "available", "available", "reserved", "available"]
    # The live feed's outbox was never the problem: its relay deletes what it sends.
    await wait_for_empty_outbox(retention_engine)


async def reservation_row(engine: AsyncEngine, reservation_id: str) -> tuple[Any, ...]:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT r.status::text, r.expires_at, r.ended_at,"
                    " array_agg(rt.ticket_id ORDER BY rt.ticket_id),"
                    " (SELECT count(*) FROM ticket_audit a WHERE a.reservation_id = r.id)"
                    " FROM reservations r JOIN reservation_tickets rt ON rt.reservation_id = r.id"
                    " WHERE r.id = :id GROUP BY r.id"
                ),
                {"id": uuid.UUID(reservation_id)},
            )
        ).one()
    return tuple(row)


async def wait_for_empty_outbox(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        for _ in range(100):  # a bounded poll of the database, at most ~10 s
            if await conn.scalar(text("SELECT count(*) FROM ticket_changes")) == 0:
                return
            await conn.execute(text("SELECT pg_sleep(0.1)"))
    pytest.fail("the relay left ticket_changes rows behind")


async def test_zero_retention_keeps_history_forever(
    api: httpx.AsyncClient, retention_engine: AsyncEngine, retention_hours: SetRetention
) -> None:
    event_id, seats = await create_event(api, seats=2)
    await churn(api, event_id, seats, cycles=20)
    await age_ended_holds(retention_engine, event_id, timedelta(days=3650))
    before = await history_counts(retention_engine, event_id)

    retention_hours(0)
    await free_expired_holds(service_db(retention_engine), batch_size=1000)
    assert await history_counts(retention_engine, event_id) == before
    # Back to a retention: ten years is past it.
    retention_hours(168)
    await free_expired_holds(service_db(retention_engine), batch_size=1000)
    assert await history_counts(retention_engine, event_id) == dict.fromkeys(HISTORY_TABLES, 0)
    await assert_invariants(retention_engine)


def test_retention_setting_is_bounded() -> None:
    assert Settings.model_fields["history_retention_hours"].default == 168
    assert Settings(history_retention_hours=0).history_retention_hours == 0
    with pytest.raises(pydantic.ValidationError):
        Settings(history_retention_hours=-1)


async def test_sweep_skips_locked_rows_and_never_blocks_buyers(
    api: httpx.AsyncClient,
    retention_engine: AsyncEngine,
    retention_database: RetentionDatabase,
    retention_hours: SetRetention,
) -> None:
    await prune_everything(retention_engine)  # what earlier tests left
    event_id, seats = await create_event(api, seats=5)
    old = [await hold(api, event_id, [seat]) for seat in seats[:3]]
    for reservation in old:
        await release(api, reservation)
    await age_ended_holds(retention_engine, event_id)

    # 1. Buyers hold locks: one on an old hold's reservation row (as a late release of it
    #    does), one on the seat of another old hold (as a new hold of that seat does). The
    #    sweep completes at once, skips the locked reservation and prunes the other two.
    buyer_a = await asyncpg.connect(retention_database.url)
    buyer_b = await asyncpg.connect(retention_database.url)
    try:
        async with buyer_a.transaction(), buyer_b.transaction():
            await buyer_a.execute(
                "SELECT id FROM reservations WHERE id = $1 FOR UPDATE", uuid.UUID(old[0]["id"])
            )
            await buyer_b.execute(
                "SELECT id FROM tickets WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE",
                [seats[1]],
            )
            await asyncio.wait_for(
                free_expired_holds(service_db(retention_engine), batch_size=1000), 5
            )
            assert await remaining(retention_engine, old) == {old[0]["id"]}
    finally:
        await buyer_a.close()
        await buyer_b.close()
    await release(api, old[0])  # releasing twice is fine, and it was not blocked
    await prune_everything(retention_engine)
    assert await remaining(retention_engine, old) == set()

    # 2. The sweeper is mid-prune, its locks held, while buyers hold, pay for and release the
    #    seats whose history it is deleting: each answers at once (a wait longer than the
    #    100 ms lock_timeout would be a 409).
    again = [await hold(api, event_id, [seat]) for seat in seats[:2]]
    for reservation in again:
        await release(api, reservation)
    await age_ended_holds(retention_engine, event_id)
    async with retention_engine.begin() as sweeper:
        counts = (await sweeper.exec_driver_sql(PRUNE_UNSOLD_HOLDS, (168, 1000))).one()
        assert counts.reservations == 2
        paid = await hold(api, event_id, [seats[0]], "buyer")
        await confirm(api, paid)
        await release(api, await hold(api, event_id, [seats[1]], "browser"))
        await release(api, await hold(api, event_id, seats[2:5], "browser"))
    assert await remaining(retention_engine, again) == set()
    await assert_invariants(retention_engine)


async def remaining(engine: AsyncEngine, reservations: list[dict[str, Any]]) -> set[str]:
    async with engine.connect() as conn:
        found = await conn.execute(
            text("SELECT id::text FROM reservations WHERE id = ANY(:ids)"),
            {"ids": [uuid.UUID(r["id"]) for r in reservations]},
        )
        return set(found.scalars())


async def history_bytes(url: str, *, compact: bool = False) -> int:
    """The three history tables' size on disk (with indexes and TOAST), after a VACUUM
    makes the space of deleted rows reusable, or a VACUUM FULL gives it back (either cannot
    run in a transaction)."""
    conn = await asyncpg.connect(url)
    try:
        # VACUUM cannot reclaim a row some snapshot taken before its deletion may still see:
        # first let every snapshot of this database's other sessions end (the server's
        # background loops take short ones all the time; any taken from now on postdates the
        # pruning). Bounded: at most ~10 s.
        for _ in range(1000):
            holding = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND backend_xmin IS NOT NULL"
            )
            if holding == 0:
                break
            await conn.execute("SELECT pg_sleep(0.01)")
        await conn.execute(f"VACUUM {'FULL ' if compact else ''}{', '.join(HISTORY_TABLES)}")
        size: int = await conn.fetchval(
            "SELECT sum(pg_total_relation_size(t::regclass))::bigint FROM unnest($1::text[]) t",
            list(HISTORY_TABLES),
        )
        return size
    finally:
        await conn.close()


async def test_churn_does_not_grow_the_disk_once_pruned(
    api: httpx.AsyncClient,
    retention_engine: AsyncEngine,
    retention_database: RetentionDatabase,
    retention_hours: SetRetention,
) -> None:
    event_id, seats = await create_event(api, seats=4)
    url = retention_database.url

    async def churn_and_sweep() -> tuple[int, int]:
        """Bytes after a round of churn, then after its history was pruned."""
        await churn(api, event_id, seats, cycles=CHURN_CYCLES)
        churned = await history_bytes(url)
        await age_ended_holds(retention_engine, event_id)
        await prune_everything(retention_engine)
        assert await history_counts(retention_engine, event_id) == dict.fromkeys(HISTORY_TABLES, 0)
        return churned, await history_bytes(url)

    # Compacted first, so the first round cannot reuse space earlier tests' rows left.
    before = await history_bytes(url, compact=True)
    rounds = [await churn_and_sweep() for _ in range(4)]
    one_round = rounds[0][0] - before
    # The first two rounds size the tables and their indexes (a B-tree page emptied by one
    # VACUUM is reused only after the next); from then on each round reuses that space,
    # where without pruning every round would add `one_round` again.
    assert rounds[3][1] - rounds[1][1] < one_round / 4, (before, rounds)
    assert rounds[3][0] - rounds[1][0] < one_round / 4, (before, rounds)
    await assert_invariants(retention_engine)


async def test_a_hold_somebody_tried_to_pay_for_is_kept(
    api: httpx.AsyncClient, retention_engine: AsyncEngine, retention_hours: SetRetention
) -> None:
    event_id, seats = await create_event(api, seats=2)
    tried = await hold(api, event_id, [seats[0]], "tried@example.com")
    started = await api.post(f"/reservations/{tried['id']}/checkout", headers=holder(tried))
    assert started.status_code == 201, started.text
    await release(api, tried)
    unpaid = await hold(api, event_id, [seats[1]])
    await release(api, unpaid)
    await age_ended_holds(retention_engine, event_id)
    await prune_everything(retention_engine)
    async with retention_engine.connect() as conn:
        kept = set(
            (
                await conn.execute(
                    text("SELECT id::text FROM reservations WHERE event_id = :e"),
                    {"e": uuid.UUID(event_id)},
                )
            ).scalars()
        )
    assert kept == {tried["id"]}
    await assert_invariants(retention_engine)
