"""Settings: the one place that reads the environment (and `.env`)."""

from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    # Empty values (`ADMIN_TOKEN=` in .env) mean "unset", not "the empty string".
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", env_ignore_empty=True
    )

    # Either a full URL, or the seed demo's POSTGRES_* variables; neither means "embedded".
    database_url: str | None = None
    postgres_user: str | None = None
    postgres_password: str | None = None
    postgres_db: str | None = None
    postgres_host: str | None = None
    postgres_port: int = 5432

    # Where the embedded PostgreSQL keeps its data when no database is configured.
    data_dir: Path = Path(".boxoffice")

    # Without one, `boxoffice serve` generates a token and prints it once.
    admin_token: str | None = Field(default=None, min_length=16)

    hold_seconds: int = Field(default=300, ge=1, le=86_400)
    # How long a reservation waits for a row another buyer is locking; 0 means NOWAIT.
    lock_timeout_ms: int = Field(default=100, ge=0, le=10_000)
    # Bounds every statement so a stuck query cannot hold a pool slot forever.
    statement_timeout_ms: int = Field(default=10_000, ge=100)

    # Per worker. Overflow connections are closed as soon as they are returned, so under a
    # steady rush they are opened and closed by the hundred (a PostgreSQL fork each): the
    # benchmark saw 700 opened in 10 s at c=64. A fixed pool makes the extra requests wait
    # (up to pool_timeout_seconds) instead.
    pool_size: int = Field(default=20, ge=1)
    pool_max_overflow: int = Field(default=0, ge=0)
    pool_timeout_seconds: float = Field(default=2.0, gt=0)

    sweep_interval_seconds: float = Field(default=5.0, ge=0)
    sweep_batch_size: int = Field(default=1000, ge=1)

    max_tickets_per_event: int = Field(default=200_000, ge=1)
    max_tickets_per_hold: int = Field(default=10, ge=1)
    max_page_size: int = Field(default=500, ge=1)

    # `text` (uvicorn's usual lines) or `json` (one object per line, with the request id).
    log_format: Literal["text", "json"] = "text"
    # Larger request bodies are refused with 413 before they are parsed.
    max_body_bytes: int = Field(default=1_048_576, ge=1)

    @model_validator(mode="after")
    def _url_from_postgres_vars(self) -> "Settings":
        if self.database_url is None and self.postgres_host:
            user = quote(self.postgres_user or "postgres", safe="")
            password = self.postgres_password
            auth = f"{user}:{quote(password, safe='')}" if password else user
            db = self.postgres_db or "postgres"
            self.database_url = (
                f"postgresql://{auth}@{self.postgres_host}:{self.postgres_port}/{db}"
            )
        return self

    @property
    def uses_embedded_database(self) -> bool:
        return self.database_url is None


def async_url(url: str) -> str:
    """The SQLAlchemy URL for the asyncpg driver, whatever scheme the user wrote."""
    for prefix in (
        "postgresql+asyncpg://",
        "postgresql+psycopg://",
        "postgresql://",
        "postgres://",
    ):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise ValueError(f"DATABASE_URL must be a postgresql:// URL, got {url.split(':', 1)[0]}://…")


@lru_cache
def get_settings() -> Settings:
    return Settings()
