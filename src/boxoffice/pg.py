"""asyncpg directly, for the reservation hot path.

SQLAlchemy stays the way in for everything else; on the hot path its per-statement Python
work was a large part of a reservation's CPU time, so those few statements go straight to the
driver on a connection borrowed from the same pool (same limits, same timeouts).
"""

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

# Errors after which the connection cannot be trusted: the server is gone, restarting, or
# ended our session (57P01 admin_shutdown from pg_terminate_backend, 57P02, 57P03, 08xxx).
_CONNECTION_LOST = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    # The server's goodbye arrived but the socket's end did not yet: the protocol is stuck.
    asyncpg.exceptions.InternalClientError,
    asyncpg.exceptions.OperatorInterventionError,
    OSError,
)

# `:name` but not the second colon of a `::type` cast.
_NAMED_PARAMETER = re.compile(r"(?<!:):([a-z_]+)\b")


@dataclass(frozen=True)
class Statement:
    """SQL written with `:name` parameters, as asyncpg wants it: `$1`, `$2`, … in order."""

    sql: str
    names: tuple[str, ...]

    @classmethod
    def from_named(cls, named_sql: str) -> "Statement":
        names: list[str] = []

        def number(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in names:
                names.append(name)
            return f"${names.index(name) + 1}"

        return cls(_NAMED_PARAMETER.sub(number, named_sql), tuple(names))

    def arguments(self, values: dict[str, Any]) -> list[Any]:
        return [values[name] for name in self.names]


@asynccontextmanager
async def driver_connection(engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    """An asyncpg connection checked out of the engine's pool, returned to it afterwards."""
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        driver: asyncpg.Connection = raw.driver_connection
        try:
            yield driver
        except BaseException as error:
            # SQLAlchemy throws away a broken connection only when its own statement broke it.
            # Here the driver ran the statement, so a connection lost with it (the server
            # restarted, our backend was terminated) must be invalidated by hand, or the pool
            # would lend out a dead connection again and again after the database is back.
            # QueryCanceledError (statement_timeout) is a 57xxx too, but the session is fine.
            canceled = isinstance(error, asyncpg.QueryCanceledError)
            lost = isinstance(error, _CONNECTION_LOST) and not canceled
            if lost or driver.is_closed():
                await conn.invalidate()
            raise


async def fetch(conn: asyncpg.Connection, statement: Statement, **values: Any) -> list[Any]:
    """Run a statement; asyncpg prepares it once per connection and reuses it."""
    return list(await conn.fetch(statement.sql, *statement.arguments(values)))
