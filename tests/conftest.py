"""Fixtures: a real PostgreSQL (embedded, or TEST_DATABASE_URL's server), a fresh migrated
database per test session, and the real service running with two workers over HTTP.

Tests that use the server (or start processes) are marked `system` here at collection (see
tests/support/system.py); `pytest -m "not system"` runs the fast layer alone."""

import asyncio
import os
import secrets
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from boxoffice import serving as serving_helpers
from boxoffice.config import Settings, async_url
from boxoffice.db import Database, server_settings
from boxoffice.invariants import check_invariants
from boxoffice.migrate import upgrade
from boxoffice.serving import ServeProcess
from tests.support.system import SYSTEM, forbid_processes, mark_system_items

ADMIN_TOKEN = "test-admin-" + secrets.token_urlsafe(16)
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
# The live servers' server secret, so tests can find a key's stored hash.
SERVER_SECRET = "test-server-secret-" + secrets.token_urlsafe(24)
# Every per-client rate limit off (boxoffice.ratelimit: 0 turns a scope's limit off).
RATE_LIMITS_OFF = {"RATE_LIMIT_RESERVATIONS_PER_MINUTE": "0", "RATE_LIMIT_QUEUE_PER_MINUTE": "0"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test whose fixtures start a server is a `system` test."""
    mark_system_items(items)


@pytest.fixture(autouse=True)
def _fast_tests_start_no_processes(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A test outside the system layer that starts a process fails, naming the marker."""
    if request.node.get_closest_marker(SYSTEM) is None:
        forbid_processes(monkeypatch, request.node.nodeid)


def with_database(url: str, name: str) -> str:
    """The same server URL, pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@contextmanager
def embedded_data_dir() -> Iterator[Path]:
    """A folder of our own for an embedded server. Not under pytest's tmp_path: the server runs
    as another user and needs its parents opened up, which fights pytest's private folders."""
    with tempfile.TemporaryDirectory(prefix="boxoffice-test-") as folder:
        yield Path(folder)


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A URL to a server we may create databases on: TEST_DATABASE_URL's, or an embedded one."""
    configured = os.environ.get("TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    from boxoffice.embedded import embedded_postgres

    with embedded_data_dir() as folder, embedded_postgres(folder, database="postgres") as url:
        yield url


async def execute_sql(url: str, sql: str) -> None:
    """Run `sql` (one statement or several) on its own connection to `url`."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


class Databases:
    """Creates throwaway databases on the test server and drops them at the end."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self.created: list[str] = []

    async def _admin(self, sql: str) -> None:
        await execute_sql(with_database(self.server_url, "postgres"), sql)

    def create(self, prefix: str = "boxoffice_test") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        asyncio.run(self._admin(f'CREATE DATABASE "{name}"'))
        self.created.append(name)
        return with_database(self.server_url, name)

    def drop_all(self) -> None:
        for name in self.created:
            asyncio.run(self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def databases(postgres_server_url: str) -> Iterator[Databases]:
    manager = Databases(postgres_server_url)
    yield manager
    manager.drop_all()


@pytest.fixture(scope="session")
def database_url(databases: Databases) -> str:
    """A fresh database, migrated to head, shared by the session's tests."""
    url = databases.create()
    upgrade(url)
    return url


def migrated_database(databases: Databases) -> str:
    """A fresh database of its own, migrated: for tests whose rows no running server may
    touch (every `serve` of the session's database runs the waiting room's admitter)."""
    url = databases.create()
    upgrade(url)
    return url


@pytest_asyncio.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """SQLAlchemy, for the tests' own looks at the rows (the service uses `db`)."""
    engine = create_async_engine(async_url(database_url), pool_size=10)
    yield engine
    await engine.dispose()


def create_engine(settings: Settings, **overrides: Any) -> AsyncEngine:
    """A SQLAlchemy engine for a test's own looks at the rows, with the service's session
    settings (lock and statement timeouts), so what it waits for is what the service would."""
    assert settings.database_url is not None
    options: dict[str, Any] = {"connect_args": {"server_settings": server_settings(settings)}}
    options.update(overrides)
    return create_async_engine(async_url(settings.database_url), **options)


# One service pool per database and event loop, for calling the services directly (a pool
# belongs to the loop it was made on; most tests share the session's loop).
_service_pools: dict[tuple[str, int], Database] = {}


def service_db(engine: AsyncEngine) -> Database:
    """The service's own data layer on the database `engine` points at."""
    url = engine.url.render_as_string(hide_password=False).replace("+asyncpg", "")
    key = (url, id(asyncio.get_running_loop()))
    if key not in _service_pools:
        # A pool of 10: racing tests queue for it (for up to POOL_TIMEOUT_SECONDS) rather
        # than hold 20 of PostgreSQL's connections for the rest of the session.
        _service_pools[key] = Database(
            Settings(database_url=url, admin_token=ADMIN_TOKEN, pool_size=10)
        )
    return _service_pools[key]


async def close_service_db(engine: AsyncEngine) -> None:
    """Close the service pool of `engine`'s database now (a module's own database, at the
    module's end: its connections must not stay open beside the session's servers')."""
    url = engine.url.render_as_string(hide_password=False).replace("+asyncpg", "")
    pool = _service_pools.pop((url, id(asyncio.get_running_loop())), None)
    if pool is not None:
        await pool.close()


@pytest_asyncio.fixture(scope="session")
async def db(engine: AsyncEngine) -> AsyncIterator[Database]:
    yield service_db(engine)
    loop = id(asyncio.get_running_loop())
    for (_, pool_loop), pool in _service_pools.items():
        if pool_loop == loop:
            await pool.close()


def free_port() -> int:
    return serving_helpers.free_port()


@dataclass(frozen=True)
class Served:
    url: str
    process: subprocess.Popen[bytes]


@contextmanager
def running_server(
    database_url: str,
    log_path: Path,
    *,
    workers: int = 2,
    log_level: str = "warning",
    **env: str,
) -> Iterator[str]:
    """`boxoffice serve` in a subprocess, exactly as a user starts it; yields its base URL."""
    with serving(database_url, log_path, workers=workers, log_level=log_level, **env) as served:
        yield served.url


@contextmanager
def serving(
    database_url: str,
    log_path: Path,
    *,
    workers: int = 2,
    log_level: str = "warning",
    **env: str,
) -> Iterator[Served]:
    """`running_server`, also handing out the `serve` process (the workers' parent)."""
    server = ServeProcess(
        env={
            "DATABASE_URL": database_url,
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "SERVER_SECRET": SERVER_SECRET,
            "SWEEP_INTERVAL_SECONDS": "0",
            # Rate limits off: the tests send thousands of requests from 127.0.0.1. Tests of
            # the limits (tests/test_rate_limits.py) set their own through `env`.
            **RATE_LIMITS_OFF,
            # Several servers run at once beside the tests' own pools, all on one PostgreSQL
            # of 100 connections: 10 per worker is plenty for the tests' loads.
            "POOL_SIZE": "10",
            # Owed e-mail is written as .eml files: into the test's folder, not the project's.
            "MAIL_DIR": str(log_path.parent / "mail"),
            **env,
        },
        log_path=log_path,
        log_mode="w",
        workers=workers,
        log_level=log_level,
        # The tests signal the process themselves (to the `serve` process, or its group).
        new_session=False,
    )
    with server:
        assert server.process is not None
        yield Served(server.url, server.process)


def wait_until_ready(base_url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    """Poll /readyz until the server answers (or fail with its log)."""
    serving_helpers.wait_until_ready(base_url, process, log_path, timeout=60)


@pytest.fixture(scope="session")
def live_server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The service with two workers and no background sweeper (expiry must work without it)."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    with running_server(database_url, log) as url:
        yield url


@pytest_asyncio.fixture
async def client(live_server: str) -> AsyncIterator[httpx.AsyncClient]:
    # Idle connections are dropped before uvicorn's 5 s keep-alive timeout closes them, so a
    # reuse never races that close (a ReadError for a request the server never read).
    limits = httpx.Limits(
        max_connections=1000, max_keepalive_connections=1000, keepalive_expiry=2.0
    )
    async with httpx.AsyncClient(base_url=live_server, timeout=30, limits=limits) as client:
        yield client


EventFactory = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture
def make_event(client: httpx.AsyncClient) -> EventFactory:
    """Create an event through the API: seated by default, or `general_admission=N`."""

    async def make(
        *,
        rows: int = 2,
        seats_per_row: int = 5,
        sections: list[dict[str, Any]] | None = None,
        general_admission: int | None = None,
        hold_seconds: int | None = None,
        name: str = "Test event",
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name, "starts_at": "2030-01-01T20:00:00Z"}
        if hold_seconds is not None:
            body["hold_seconds"] = hold_seconds
        if general_admission is not None:
            body["general_admission"] = {"quantity": general_admission, "price": 1000}
        else:
            body["sections"] = sections or [
                {"name": "Main", "rows": rows, "seats_per_row": seats_per_row, "price": 2500}
            ]
        response = await client.post("/events", json=body, headers=ADMIN)
        assert response.status_code == 201, response.text
        event: dict[str, Any] = response.json()
        return event

    return make


async def ticket_ids(client: httpx.AsyncClient, event_id: str) -> list[int]:
    """Every ticket id of an event, following the keyset pages."""
    ids: list[int] = []
    after: int | None = None
    while True:
        params: dict[str, Any] = {"limit": 500}
        if after is not None:
            params["after"] = after
        response = await client.get(f"/events/{event_id}/tickets", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        ids += [ticket["id"] for ticket in page["items"]]
        after = page["next_after"]
        if after is None:
            return ids


async def assert_invariants(engine: AsyncEngine, event_id: str | None = None) -> None:
    violations = await check_invariants(
        service_db(engine), event_id=uuid.UUID(event_id) if event_id else None
    )
    assert violations == [], "\n".join(str(v) for v in violations)
