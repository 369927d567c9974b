"""The one way the service talks to PostgreSQL at run time: an asyncpg pool.

SQLAlchemy describes the schema (models, Alembic migrations); every query the service runs
goes through `Database`, as whole SQL statements with asyncpg's own `$1` parameters, and
comes back as asyncpg records that the services turn into small typed rows.

What the pool promises every caller:
  - no wait is unbounded: a free connection within POOL_TIMEOUT_SECONDS, or a 503;
  - a connection the server closed (restart, pg_terminate_backend) is never lent out, and
    one lost under a statement is thrown away rather than returned;
  - returning a connection costs no round trip (nothing we run leaves session state behind).

`classify` is the single reading of a database error: busy or gone (503), contended (409),
a value PostgreSQL refuses (422), or a bug (500). The API and the pages both use it.
"""

import asyncio
import enum
import os
import select
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any

import asyncpg

from boxoffice.config import Settings, asyncpg_dsn
from boxoffice.errors import ServiceUnavailable

Connection = asyncpg.Connection
Record = asyncpg.Record


class Failure(enum.Enum):
    """What a database error means for the client."""

    UNAVAILABLE = "unavailable"  # the database is busy, restarting or unreachable: retry
    CONTENDED = "contended"  # another transaction holds the rows: retry soon
    BAD_VALUE = "bad-value"  # a value PostgreSQL cannot store (NUL in text, date overflow)
    UNEXPECTED = "unexpected"  # our bug


LOCK_NOT_AVAILABLE = "55P03"
# 55P03 lock_not_available (lock_timeout, NOWAIT), 40P01 deadlock, 40001 serialization.
_CONTENDED = {LOCK_NOT_AVAILABLE, "40P01", "40001"}
# 57014 query_canceled (statement_timeout: too busy to answer), 57P0x the server shutting
# down or ending our session, 53xxx out of resources (connections, memory, disk), 08xxx the
# connection failed.
_UNAVAILABLE_CLASSES = ("08", "53", "57")
# 25006 read_only_sql_transaction: a write reached a server that is (now) a standby, e.g. a
# primary Patroni demoted while this connection stayed open. Retry: the next connection
# reaches the new primary.
READ_ONLY = "25006"

# Errors after which a connection cannot be trusted. QueryCanceledError (57014) is a 57xxx
# too, but the session is fine after it.
_CONNECTION_LOST = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    # The server's goodbye arrived but the socket's end did not yet: the protocol is stuck.
    asyncpg.exceptions.InternalClientError,
    asyncpg.exceptions.OperatorInterventionError,
    OSError,
)


# Everything `classify` reads: the API and the pages answer these as database problems.
DATABASE_ERRORS: tuple[type[Exception], ...] = (
    asyncpg.PostgresError,
    *_CONNECTION_LOST,
    TimeoutError,
)


def sqlstate(error: BaseException | None) -> str | None:
    code = getattr(error, "sqlstate", None)
    return str(code) if code else None


def classify(error: BaseException) -> Failure | None:
    """What a database error means, or None when `error` did not come from the database."""
    if isinstance(error, ServiceUnavailable):
        return Failure.UNAVAILABLE
    if isinstance(error, asyncpg.PostgresError):
        code = sqlstate(error) or ""
        if code in _CONTENDED:
            return Failure.CONTENDED
        if code.startswith("22"):
            return Failure.BAD_VALUE
        if code.startswith(_UNAVAILABLE_CLASSES) or code == READ_ONLY:
            return Failure.UNAVAILABLE
        return Failure.UNEXPECTED
    if isinstance(error, (*_CONNECTION_LOST, TimeoutError)):
        return Failure.UNAVAILABLE
    return None


def _lost(error: BaseException) -> bool:
    """Whether the connection must be thrown away: gone, or it reaches a standby."""
    if isinstance(error, asyncpg.ReadOnlySQLTransactionError):
        return True
    return isinstance(error, _CONNECTION_LOST) and not isinstance(error, asyncpg.QueryCanceledError)


def server_settings(settings: Settings) -> dict[str, str]:
    """Session settings of every service connection: nothing it does can hang."""
    return {
        "statement_timeout": str(settings.statement_timeout_ms),
        # Every row lock waits at most this long; a busy seat is a 409, not a queue. The one
        # place the lock policy lives: no statement says NOWAIT, LOCK_TIMEOUT_MS=0 is 1 ms.
        "lock_timeout": str(max(settings.lock_timeout_ms, 1)),
        "idle_in_transaction_session_timeout": "60000",
        # A worker that dies mid-statement (kill -9, OOM) leaves its backend waiting on a
        # row lock; PostgreSQL notices the lost client within this time and rolls the
        # statement back instead of finishing a hold nobody will hear about.
        "client_connection_check_interval": "1000",
        # pg_stat_activity shows which worker each connection belongs to.
        "application_name": f"boxoffice/{os.getpid()}",
    }


async def _no_reset(_: asyncpg.Connection) -> None:
    """asyncpg's default reset (UNLISTEN *, RESET ALL, …) is a round trip per request. The
    service sets nothing at session level (only SET LOCAL, which ends with its transaction)
    and asyncpg rolls back an open transaction itself, so there is nothing to reset."""


class Database:
    """The service's pool of connections to PostgreSQL, opened lazily: the service starts while
    the database is still down, and connects (up to `size` connections, POOL_SIZE +
    POOL_MAX_OVERFLOW by default) when requests come."""

    def __init__(self, settings: Settings, *, size: int | None = None, url: str | None = None):
        url = url or settings.database_url
        assert url is not None, "the embedded database must be started first"
        self._pool = asyncpg.create_pool(
            asyncpg_dsn(url),
            min_size=0,
            max_size=size or settings.pool_size + settings.pool_max_overflow,
            timeout=settings.pool_timeout_seconds,
            server_settings=server_settings(settings),
            reset=_no_reset,
            # Keep warm connections: reconnecting costs a fork on the server.
            max_inactive_connection_lifetime=0,
        )
        self._acquire_timeout = settings.pool_timeout_seconds
        # The app's settings travel with its database: a route that takes `Db` reads them here
        # instead of from a second dependency (each costs a resolution per request).
        self.settings = settings
        self._started: asyncio.Future[Any] | None = None

    async def _start(self) -> None:
        # min_size=0: setting the pool up opens no connection; done once, by the first caller.
        started = self._started
        if started is not None and started.done() and not started.cancelled():
            started.result()  # set up (or raise why not): the common case, nothing to await
            return
        if started is None:
            started = self._started = asyncio.ensure_future(self._set_up())
        await asyncio.shield(started)

    async def _set_up(self) -> None:
        await self._pool

    async def close(self) -> None:
        if self._started is None:
            return
        try:
            async with asyncio.timeout(5):
                await self._pool.close()
        except TimeoutError:
            self._pool.terminate()

    @property
    def size(self) -> int:
        """Connections the pool may keep open (it opens them as requests need them)."""
        return int(self._pool.get_max_size())

    @property
    def in_use(self) -> int:
        """Connections lent out now."""
        return int(self._pool.get_size() - self._pool.get_idle_size())

    def connection(self) -> "Lease":
        """A connection for one unit of work (`async with`), returned to the pool afterwards."""
        return Lease(self)

    @asynccontextmanager
    async def transaction(
        self, *, isolation: str | None = None, readonly: bool = False
    ) -> AsyncIterator[asyncpg.Connection]:
        """A connection inside BEGIN … COMMIT (ROLLBACK when the block raises)."""
        async with (
            self.connection() as conn,
            conn.transaction(isolation=isolation, readonly=readonly),
        ):
            yield conn

    async def _acquire(self) -> asyncpg.Connection:
        try:
            async with asyncio.timeout(self._acquire_timeout):
                await self._start()
                while True:
                    conn: asyncpg.Connection = await self._pool.acquire()
                    if not _server_has_spoken(conn):
                        return conn
                    conn.terminate()
                    await self._pool.release(conn)
        except TimeoutError:
            raise ServiceUnavailable("all database connections are busy; retry shortly") from None

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        async with self.connection() as conn:
            return list(await conn.fetch(sql, *args))

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        async with self.connection() as conn:
            row: asyncpg.Record | None = await conn.fetchrow(sql, *args)
            return row

    async def fetchval(self, sql: str, *args: Any) -> Any:
        async with self.connection() as conn:
            return await conn.fetchval(sql, *args)

    async def execute(self, sql: str, *args: Any) -> str:
        async with self.connection() as conn:
            status: str = await conn.execute(sql, *args)
            return status


class Lease:
    """One use of a pooled connection: `async with db.connection() as conn`.

    A class rather than an @asynccontextmanager: every request takes one, and the generator
    machinery was a visible share of a reservation's CPU.
    """

    __slots__ = ("_conn", "_db")

    def __init__(self, db: Database) -> None:
        self._db = db
        self._conn: asyncpg.Connection | None = None

    async def __aenter__(self) -> asyncpg.Connection:
        conn = self._conn = await self._db._acquire()
        return conn

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _: TracebackType | None
    ) -> None:
        conn = self._conn
        assert conn is not None
        self._conn = None
        if error is not None and (_lost(error) or conn.is_closed()):
            # Never hand a dead or desynchronised connection to the next request.
            conn.terminate()
        await self._db._pool.release(conn)


def _server_has_spoken(conn: asyncpg.Connection) -> bool:
    """Whether an idle connection's socket has something to read, or is closed.

    After a database restart or `pg_terminate_backend` every idle pooled connection is dead.
    asyncpg learns that from the event loop when the socket closes, but only on the loop's
    next turn: a request that took the connection in between would get the corpse. So the
    socket is asked too, with one zero-timeout poll (no round trip): our pooled connections
    LISTEN to nothing, so the server only speaks first to say goodbye.
    """
    if conn.is_closed():
        return True
    transport = conn._transport  # asyncpg keeps its transport private
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return False
    # poll, not select: a worker may have more than FD_SETSIZE (1024) descriptors open.
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(0))
