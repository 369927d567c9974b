"""Alembic environment: runs migrations over asyncpg, the driver the service uses."""

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from logging.config import fileConfig

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from boxoffice.config import async_url
from boxoffice.models import Base

config = context.config
if config.config_file_name is not None:
    # The alembic CLI with alembic.ini: its progress lines, as alembic users expect them.
    fileConfig(config.config_file_name, disable_existing_loggers=False)
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_online(url: str) -> None:
    engine = create_async_engine(async_url(url), poolclass=pool.NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


@contextmanager
def _database_url() -> Iterator[str]:
    """`boxoffice migrate` passes its URL; the plain `alembic` command (the original demo's
    `alembic upgrade head`) migrates the database the service is configured for: DATABASE_URL,
    POSTGRES_* or `.env`, else the embedded server under DATA_DIR. alembic.ini names none."""
    given = config.get_main_option("sqlalchemy.url")
    if given:
        yield given
        return
    from boxoffice.cli import database
    from boxoffice.config import get_settings

    with database(get_settings()) as url:
        yield url


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    with _database_url() as url:
        asyncio.run(_run_online(url))
