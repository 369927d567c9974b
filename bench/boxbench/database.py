"""The database under test: a private embedded PostgreSQL, or a throwaway database on a
given server (dropped afterwards)."""

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from .common import say


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


async def _on_server(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@dataclass(frozen=True)
class Database:
    url: str
    embedded: bool


@contextlib.contextmanager
def benchmark_database(server_url: str | None, workdir: Path) -> Iterator[Database]:
    """A private embedded server, or a throwaway database on the given server (dropped after)."""
    if server_url is None:
        from boxoffice.embedded import embedded_postgres

        say("bench: starting a private embedded PostgreSQL")
        with embedded_postgres(workdir / "embedded") as url:
            yield Database(url, embedded=True)
        return
    name = f"boxoffice_bench_{uuid.uuid4().hex[:10]}"
    asyncio.run(_on_server(server_url, f'CREATE DATABASE "{name}"'))
    say(f"bench: created database {name} on the given server")
    try:
        yield Database(with_database(server_url, name), embedded=False)
    finally:
        asyncio.run(_on_server(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        say(f"bench: dropped database {name}")
