"""Alembic environment: runs migrations over asyncpg, the driver the service uses."""

import asyncio
import io
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from logging.config import fileConfig
from typing import Any

from alembic import context
from alembic.operations import MigrationScript
from alembic.script import ScriptDirectory
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

# Revision ids are four-digit numbers in order (0001 the initial schema), and alembic.ini's
# file_template `%(rev)s_%(slug)s` makes them the file names: versions/0001_initial_schema.py.
REVISION_ID = re.compile(r"\d{4}")
# pg_advisory_xact_lock key ("bxmigrat" in ASCII) that serialises migrations: several API hosts
# starting together on one database would otherwise run the same DDL at once.
MIGRATION_LOCK = 0x62786D69_67726174


def number_new_revision(_context: Any, _revision: Any, directives: Iterable[Any]) -> None:
    """`alembic revision` gives a new revision the number after the head, unless it was given
    a four-digit `--rev-id` (alembic's own default, a random hex id, is replaced)."""
    for script in directives:
        if isinstance(script, MigrationScript) and not REVISION_ID.fullmatch(script.rev_id or ""):
            head = ScriptDirectory.from_config(config).get_current_head()
            script.rev_id = f"{int(head or 0) + 1:04d}"


def _writing_a_revision_by_hand() -> bool:
    """`alembic revision -m ...` without --autogenerate: numbering it needs no database.
    (alembic.ini's `revision_environment = true` runs this file for it.)"""
    options = config.cmd_opts
    command = getattr(options, "cmd", (None,))[0]
    by_hand = not getattr(options, "autogenerate", False)
    return getattr(command, "__name__", None) == "revision" and by_hand


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        process_revision_directives=number_new_revision,
    )
    with context.begin_transaction():
        # Taken before alembic reads the schema's version: a second migrator waits for the
        # first to commit, then finds the schema at head and has nothing left to do.
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
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
elif _writing_a_revision_by_hand():
    # As if with --sql (no connection, nothing read), writing what it would print nowhere.
    context.configure(
        dialect_name="postgresql",
        as_sql=True,
        output_buffer=io.StringIO(),
        target_metadata=target_metadata,
        process_revision_directives=number_new_revision,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    with _database_url() as url:
        asyncio.run(_run_online(url))
