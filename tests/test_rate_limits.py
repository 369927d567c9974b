"""Per-client rate limits (boxoffice.ratelimit): a token bucket per client address and scope,
kept in PostgreSQL and so shared by every worker.

The fast layer runs the bucket's statement on the session's database: the burst, the refill,
independent keys, refusals that take nothing, racing checks, a locked bucket, the dependency
and the sweeper's pruning. Time passes by moving `refreshed_at` back with SQL on the database
clock, never by sleeping. The system layer goes through a real `boxoffice serve` with two
workers and limits of 6 a minute, 3 at once. Each test there is its own client: the bare
127.0.0.1 once, otherwise an address named in X-Forwarded-For, which uvicorn takes from
127.0.0.1 (a local proxy, FORWARDED_ALLOW_IPS's default).
"""

import asyncio
import itertools
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from types import SimpleNamespace
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from prometheus_client import REGISTRY
from starlette.requests import Request

from boxoffice.config import Settings
from boxoffice.db import Database
from boxoffice.errors import TooManyRequests
from boxoffice.expiry import free_expired_holds
from boxoffice.migrate import upgrade
from boxoffice.ratelimit import (
    MAX_KEY_LENGTH,
    QUEUE,
    RESERVATIONS,
    client_key,
    idle_seconds,
    queue_rate_limit,
    reservations_rate_limit,
    take_token,
)
from tests.conftest import ADMIN, ADMIN_TOKEN, Databases, running_server
from tests.support.problems import assert_problem, bearer
from tests.support.system import system_fixture

# A token a minute: no test runs long enough for its bucket to gain one by itself.
SLOW = 1


def new_key() -> str:
    return f"test {uuid.uuid4()}"


async def bucket(db: Database, key: str) -> asyncpg.Record | None:
    return await db.fetchrow("SELECT tokens, refreshed_at FROM rate_buckets WHERE key = $1", key)


async def let_time_pass(db: Database, key: str, seconds: float) -> None:
    """As if `seconds` had passed since the bucket's last refresh, on the database clock."""
    await db.execute(
        "UPDATE rate_buckets SET refreshed_at = refreshed_at - make_interval(secs => $2)"
        " WHERE key = $1",
        key,
        seconds,
    )


async def allowed(db: Database, key: str, times: int, *, per_minute: int, burst: int) -> list[bool]:
    """`times` checks one after another: which were allowed."""
    return [
        (await take_token(db, key, per_minute=per_minute, burst=burst)).allowed
        for _ in range(times)
    ]


# --- the bucket's statement -------------------------------------------------------------------


async def test_a_client_gets_its_burst_at_once_then_refusals_that_say_how_long_to_wait(
    db: Database,
) -> None:
    key = new_key()
    decisions = [await take_token(db, key, per_minute=SLOW, burst=3) for _ in range(5)]
    assert [d.allowed for d in decisions] == [True, True, True, False, False]
    # A token a minute and the bucket empty: the next one is (nearly) a minute away.
    for refused in decisions[3:]:
        assert 50 <= refused.retry_after <= 60, refused
    row = await bucket(db, key)
    assert row is not None and 0 <= row["tokens"] < 1


async def test_the_bucket_refills_at_the_rate_up_to_the_burst(db: Database) -> None:
    key = new_key()
    # 60 a minute: a token a second.
    assert await allowed(db, key, 4, per_minute=60, burst=3) == [True, True, True, False]
    await let_time_pass(db, key, 2.5)
    assert await allowed(db, key, 3, per_minute=60, burst=3) == [True, True, False]
    # Half a token there: the wait is the other half, rounded up to a whole second.
    decision = await take_token(db, key, per_minute=60, burst=3)
    assert not decision.allowed and decision.retry_after == 1
    # A long while: full again, but never more than the burst.
    await let_time_pass(db, key, 3600)
    assert await allowed(db, key, 4, per_minute=60, burst=3) == [True, True, True, False]


async def test_keys_are_independent(db: Database) -> None:
    first, second = new_key(), new_key()
    assert await allowed(db, first, 3, per_minute=SLOW, burst=2) == [True, True, False]
    assert await allowed(db, second, 3, per_minute=SLOW, burst=2) == [True, True, False]
    row = await bucket(db, first)
    assert row is not None and row["tokens"] < 1


async def test_a_refused_request_takes_no_token_and_writes_nothing(db: Database) -> None:
    key = new_key()
    assert await allowed(db, key, 2, per_minute=60, burst=2) == [True, True]
    emptied = await bucket(db, key)
    assert await allowed(db, key, 20, per_minute=60, burst=2) == [False] * 20
    assert await bucket(db, key) == emptied
    # One token's time later, exactly one request more goes through.
    await let_time_pass(db, key, 1.0)
    assert await allowed(db, key, 2, per_minute=60, burst=2) == [True, False]


async def test_racing_checks_of_one_client_allow_exactly_the_burst(database_url: str) -> None:
    """50 checks at once from two pools (two workers, as far as the database can tell)."""
    # Waits for the bucket's row lock long enough that no check is refused for contention
    # (that case has its own test): exactly the burst may pass, never more.
    # Sixteen connections race: the session's servers hold most of the embedded PostgreSQL's
    # 100, and the checks beyond them wait for a connection, then race the same way.
    settings = Settings(
        database_url=database_url,
        lock_timeout_ms=10_000,
        pool_size=8,
        pool_timeout_seconds=30,
    )
    pools = [Database(settings), Database(settings)]
    key = new_key()
    try:
        decisions = await asyncio.gather(
            *(
                take_token(pool, key, per_minute=SLOW, burst=10)
                for pool in itertools.islice(itertools.cycle(pools), 50)
            )
        )
        row = await bucket(pools[0], key)
    finally:
        for pool in pools:
            await pool.close()
    assert sum(d.allowed for d in decisions) == 10
    assert row is not None and 0 <= row["tokens"] < 1


async def test_a_check_that_cannot_lock_its_bucket_is_refused_and_takes_nothing(
    db: Database, database_url: str
) -> None:
    key = new_key()
    assert await allowed(db, key, 1, per_minute=SLOW, burst=5) == [True]
    before = await bucket(db, key)
    holder = await asyncpg.connect(database_url)
    try:
        async with holder.transaction():
            # This client's own request, holding its bucket: the check waits LOCK_TIMEOUT_MS.
            await holder.execute("SELECT FROM rate_buckets WHERE key = $1 FOR UPDATE", key)
            decision = await take_token(db, key, per_minute=SLOW, burst=5)
    finally:
        await holder.close()
    assert not decision.allowed and decision.retry_after == 1
    assert await bucket(db, key) == before
    assert await allowed(db, key, 1, per_minute=SLOW, burst=5) == [True]


# --- the dependency -------------------------------------------------------------------------


def request_from(host: str, db: Database | None = None) -> Request:
    """A request as the dependency sees it: its client's address and the app's database."""
    app = SimpleNamespace(state=SimpleNamespace(db=db))
    return Request({"type": "http", "app": app, "client": (host, 40000), "headers": []})


def refused_count(scope: str) -> float:
    value = REGISTRY.get_sample_value("boxoffice_rate_limited_total", {"scope": scope})
    return value or 0.0


@pytest_asyncio.fixture
async def limited_db(database_url: str) -> AsyncIterator[Database]:
    """The service's database with 2 reservations at once, then 1 a minute; queue limits off."""
    settings = Settings(
        database_url=database_url,
        admin_token=ADMIN_TOKEN,
        rate_limit_reservations_per_minute=SLOW,
        rate_limit_reservations_burst=2,
        rate_limit_queue_per_minute=0,
    )
    db = Database(settings)
    yield db
    await db.close()


async def test_the_dependency_refuses_a_client_over_its_limit_with_a_429(
    limited_db: Database,
) -> None:
    host = f"client-{uuid.uuid4().hex}"
    request = request_from(host, limited_db)
    before = refused_count(RESERVATIONS)
    await reservations_rate_limit(request)
    await reservations_rate_limit(request)
    with pytest.raises(TooManyRequests) as refused:
        await reservations_rate_limit(request)
    assert refused.value.status == 429 and refused.value.slug == "too-many-requests"
    assert 50 <= refused.value.retry_after <= 60
    assert refused_count(RESERVATIONS) == before + 1
    # Another client has a bucket of its own.
    await reservations_rate_limit(request_from(host + "-other", limited_db))
    # The queue's limit is off here: no check, no bucket.
    for _ in range(5):
        await queue_rate_limit(request)
    assert await bucket(limited_db, client_key(QUEUE, request)) is None


def test_a_bucket_key_fits_its_column_whatever_address_a_proxy_names() -> None:
    long = request_from("x" * 10_000)
    assert len(client_key(RESERVATIONS, long)) <= MAX_KEY_LENGTH
    assert client_key(RESERVATIONS, long) != client_key(RESERVATIONS, request_from("y" * 10_000))
    assert client_key(QUEUE, long) != client_key(RESERVATIONS, long)


# --- the sweeper ------------------------------------------------------------------------------


def test_buckets_count_as_idle_only_once_surely_full_again() -> None:
    assert idle_seconds(Settings()) == 600
    # 20 at once, refilled at 1 a minute: 20 minutes to fill up.
    slow = Settings(rate_limit_queue_per_minute=1, rate_limit_queue_burst=20)
    assert idle_seconds(slow) == 1200


async def test_the_sweeper_deletes_idle_buckets_and_keeps_the_others(
    databases: Databases,
) -> None:
    # A database of its own: a sweep also frees and prunes every expired hold it finds.
    url = await asyncio.to_thread(databases.create, "boxoffice_ratelimit_sweep")
    await asyncio.to_thread(upgrade, url)
    db = Database(Settings(database_url=url, admin_token=ADMIN_TOKEN))
    slow = Database(
        Settings(
            database_url=url,
            admin_token=ADMIN_TOKEN,
            rate_limit_queue_per_minute=1,
            rate_limit_queue_burst=20,
        )
    )
    try:
        await db.execute(
            """INSERT INTO rate_buckets (key, tokens, refreshed_at) VALUES
               ('fresh', 0, now()),
               ('eleven minutes', 0, now() - interval '11 minutes'),
               ('an hour', 0, now() - interval '1 hour')"""
        )
        # Where a scope refills in 20 minutes, an 11-minute-old bucket may not be full yet.
        await free_expired_holds(slow, batch_size=100)
        keys = {row["key"] for row in await db.fetch("SELECT key FROM rate_buckets")}
        assert keys == {"fresh", "eleven minutes"}
        await free_expired_holds(db, batch_size=100)
        keys = {row["key"] for row in await db.fetch("SELECT key FROM rate_buckets")}
        assert keys == {"fresh"}
    finally:
        await db.close()
        await slow.close()


# --- through a real server with two workers ---------------------------------------------------

PER_MINUTE = 6
BURST = 3


@pytest.fixture(scope="module")
@system_fixture
def limited_server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("rate_limits") / "server.log"
    with running_server(
        database_url,
        log,
        RATE_LIMIT_RESERVATIONS_PER_MINUTE=str(PER_MINUTE),
        RATE_LIMIT_RESERVATIONS_BURST=str(BURST),
        # It runs beside the session's server: together they stay well inside the embedded
        # PostgreSQL's 100 connections.
        POOL_SIZE="4",
    ) as url:
        yield url


def forwarded_for() -> dict[str, str]:
    """A client of its own: an address from TEST-NET-2, named by the 'proxy' at 127.0.0.1."""
    n = uuid.uuid4().int
    return {"X-Forwarded-For": f"198.51.{n % 256}.{n // 256 % 254 + 1}"}


async def create_event(http: httpx.AsyncClient) -> str:
    body = {
        "name": "Rate limited",
        "starts_at": "2030-01-01T20:00:00Z",
        "general_admission": {"quantity": 100, "price": 1000},
    }
    response = await http.post("/events", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    event_id: str = response.json()["id"]
    return event_id


async def reserve(
    http: httpx.AsyncClient, event_id: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    return await http.post(
        f"/events/{event_id}/reservations",
        json={"quantity": 1, "customer": f"{uuid.uuid4().hex}@example.com"},
        headers=headers or {},
    )


async def holds_of(db: Database, event_id: str) -> int:
    count = await db.fetchval(
        "SELECT count(*) FROM reservations WHERE event_id = $1", uuid.UUID(event_id)
    )
    return int(count)


async def test_the_fourth_quick_reservation_is_a_429_and_holds_nothing(
    limited_server: str, db: Database
) -> None:
    # The one test here that is the bare 127.0.0.1.
    async with httpx.AsyncClient(base_url=limited_server, timeout=30) as http:
        event_id = await create_event(http)
        answers = [await reserve(http, event_id) for _ in range(BURST + 2)]
        assert [a.status_code for a in answers] == [201] * BURST + [429, 429]
        for refused in answers[BURST:]:
            assert_problem(refused, 429, "too-many-requests")
            assert int(refused.headers["retry-after"]) >= 1
        assert await holds_of(db, event_id) == BURST

        # The demo's endpoint draws on the same bucket, and answers with its `message`.
        tickets = await http.get(f"/events/{event_id}/tickets", params={"limit": 1})
        ticket_id = tickets.json()["items"][0]["id"]
        demo = await http.patch("/tickets/reserve", json={"user_id": 7, "ticket_id": ticket_id})
        assert assert_problem(demo, 429, "too-many-requests")["message"]
        assert int(demo.headers["retry-after"]) >= 1
        assert await holds_of(db, event_id) == BURST

        # Reading is not limited: the same client reads on, its holds included.
        won = answers[0].json()
        reads = [
            f"/events/{event_id}",
            f"/events/{event_id}/tickets",
            "/events",
            "/tickets",
        ]
        for _ in range(5):
            for path in reads:
                assert (await http.get(path)).status_code == 200, path
            own = await http.get(f"/reservations/{won['id']}", headers=bearer(won["token"]))
            assert own.status_code == 200


async def worker_backends_since(url: str, since: Any) -> set[str]:
    """The server workers whose database connections ran something after `since`."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            """SELECT DISTINCT application_name FROM pg_stat_activity
               WHERE datname = current_database() AND application_name LIKE 'boxoffice/%'
                 AND application_name <> $1 AND state_change >= $2""",
            f"boxoffice/{os.getpid()}",  # this test process's own pools
            since,
        )
    finally:
        await conn.close()
    return {row["application_name"] for row in rows}


async def test_one_clients_limit_is_shared_by_both_workers(
    limited_server: str, database_url: str, db: Database
) -> None:
    client = forwarded_for()
    async with httpx.AsyncClient(base_url=limited_server, timeout=30) as http:
        event_id = await create_event(http)
    since = await db.fetchval("SELECT clock_timestamp()")
    started = time.monotonic()
    statuses: list[int] = []

    async def fresh_connection() -> int:
        # A connection of its own per request: the workers take turns accepting them.
        async with httpx.AsyncClient(base_url=limited_server, timeout=30) as http:
            return (await reserve(http, event_id, client)).status_code

    # Batches until both workers have served some (the first batch, in practice).
    for _ in range(5):
        statuses += await asyncio.gather(*(fresh_connection() for _ in range(20)))
        if len(await worker_backends_since(database_url, since)) >= 2:
            break
    elapsed = time.monotonic() - started
    assert len(await worker_backends_since(database_url, since)) >= 2
    # At most the burst, plus what the bucket refilled meanwhile (nothing under 10 s).
    passed = sum(1 for status in statuses if status in (201, 409))
    assert 1 <= passed <= BURST + int(elapsed * PER_MINUTE / 60), statuses
    assert set(statuses) <= {201, 409, 429}, statuses
    assert await holds_of(db, event_id) == statuses.count(201)


async def test_each_client_address_has_a_bucket_of_its_own(limited_server: str) -> None:
    first, second = forwarded_for(), forwarded_for()
    async with httpx.AsyncClient(base_url=limited_server, timeout=30) as http:
        event_id = await create_event(http)
        one = [(await reserve(http, event_id, first)).status_code for _ in range(BURST + 1)]
        other = [(await reserve(http, event_id, second)).status_code for _ in range(BURST + 1)]
    assert one == [201] * BURST + [429]
    assert other == [201] * BURST + [429]
