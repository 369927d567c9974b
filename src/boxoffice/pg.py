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
        yield raw.driver_connection


async def fetch(conn: asyncpg.Connection, statement: Statement, **values: Any) -> list[Any]:
    """Run a statement; asyncpg prepares it once per connection and reuses it."""
    return list(await conn.fetch(statement.sql, *statement.arguments(values)))
