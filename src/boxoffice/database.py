"""Engine, sessions and the declarative base every domain's models share."""

import os
import select
from typing import Any

from sqlalchemy import MetaData, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import DeclarativeBase

from boxoffice.config import Settings, async_url

# Stable constraint names, so migrations and error mapping can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def create_engine(settings: Settings, **overrides: Any) -> AsyncEngine:
    """An asyncpg engine whose sessions cannot hang: bounded pool wait and statement time."""
    assert settings.database_url is not None, "the embedded database must be started first"
    options: dict[str, Any] = {
        "pool_size": settings.pool_size,
        "max_overflow": settings.pool_max_overflow,
        "pool_timeout": settings.pool_timeout_seconds,
        "pool_pre_ping": False,
        "connect_args": {
            "timeout": settings.pool_timeout_seconds,
            "server_settings": {
                "statement_timeout": str(settings.statement_timeout_ms),
                # Every row lock waits at most this long; a busy seat is a 409, not a queue.
                "lock_timeout": str(settings.lock_timeout_ms or settings.statement_timeout_ms),
                "idle_in_transaction_session_timeout": "60000",
                # A worker that dies mid-statement (kill -9, OOM) leaves its backend waiting
                # on a row lock; PostgreSQL notices the lost client within this time and rolls
                # the statement back instead of finishing a hold nobody will hear about.
                "client_connection_check_interval": "1000",
                # pg_stat_activity shows which worker each connection belongs to.
                "application_name": f"boxoffice/{os.getpid()}",
            },
        },
    }
    options.update(overrides)
    engine = create_async_engine(async_url(settings.database_url), **options)
    event.listen(engine.sync_engine, "checkout", _discard_closed_connection)
    return engine


def _discard_closed_connection(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """Never lend out a connection the server has already closed.

    After a database restart or `pg_terminate_backend`, every idle pooled connection is dead.
    asyncpg learns that from the event loop when the socket closes, but only on the loop's next
    turn: a request checked out in between would get the corpse. So the socket is asked too,
    with one zero-timeout poll (no round trip, unlike pool_pre_ping): an idle connection the
    server has written to (its FATAL goodbye, or the end of the stream) is dead. Raising
    DisconnectionError makes the pool drop it and open a fresh one, so requests after an
    outage do not fail one per corpse.
    """
    driver = dbapi_connection.driver_connection
    if driver.is_closed() or _server_has_spoken(driver):
        raise DisconnectionError("the server closed this connection")


def _server_has_spoken(driver: Any) -> bool:
    """Whether an idle connection's socket has something to read. Our pooled connections
    LISTEN to nothing, so the server only speaks first to say goodbye."""
    sock = driver._transport.get_extra_info("socket")  # asyncpg keeps its transport private
    if sock is None:
        return False
    # poll, not select: a worker may have more than FD_SETSIZE (1024) descriptors open.
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(0))
