"""Engine, sessions and the declarative base every domain's models share."""

from typing import Any

from sqlalchemy import MetaData
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
                "application_name": "boxoffice",
            },
        },
    }
    options.update(overrides)
    return create_async_engine(async_url(settings.database_url), **options)
