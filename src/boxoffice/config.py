"""Settings: the one place that reads the environment (and `.env`)."""

from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The most MAX_TICKETS_PER_HOLD may be: request schemas bound their lists by it, so a body
# cannot make the server validate (and report on) thousands of items.
TICKETS_PER_HOLD_CEILING = 100


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
    # The schema owner, for migrations only; the service itself connects as DATABASE_URL, which
    # should be a role that may only read and write rows (boxoffice.roles), which migrate then
    # grants its rights. Unset: DATABASE_URL migrates too. (The embedded default needs neither:
    # it migrates as its superuser and serves as its own row-only role.)
    migrate_database_url: str | None = None

    # Where the embedded PostgreSQL keeps its data when no database is configured.
    data_dir: Path = Path(".boxoffice")

    # Without one, the data folder's own is used (generated once, shown once on the terminal).
    admin_token: str | None = Field(default=None, min_length=16)
    # Keys idempotency key hashes and keyed holds' tokens, so that a database backup alone
    # can neither find a key nor compute a token. Without one, the data folder's own; every
    # server of one database must share it. Never stored in the database.
    server_secret: str | None = Field(default=None, min_length=32)
    # Bearer token for GET /metrics; unset, /metrics is open (fine on a private network).
    metrics_token: str | None = Field(default=None, min_length=16)

    hold_seconds: int = Field(default=300, ge=1, le=86_400)
    # How long any statement waits for a row lock another request holds before it gives up
    # (a 409); 0: do not wait (PostgreSQL's shortest lock_timeout, 1 ms). The one lock policy:
    # every buyer-facing statement runs under it (boxoffice.db.server_settings).
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
    # Holds that ended unsold (released, expired) are deleted by the sweeper with their ticket
    # links and audit rows this long after they ended; 0 keeps them forever. Bookings and
    # their history are always kept (boxoffice.retention). At most 100 years.
    history_retention_hours: int = Field(default=168, ge=0, le=876_000)

    max_tickets_per_event: int = Field(default=200_000, ge=1)
    max_tickets_per_hold: int = Field(default=10, ge=1, le=TICKETS_PER_HOLD_CEILING)
    max_page_size: int = Field(default=500, ge=1)

    # `text` (uvicorn's usual lines) or `json` (one object per line, with the request id).
    log_format: Literal["text", "json"] = "text"
    # FastAPI's own OpenTelemetry spans, metrics and logs, when an OpenTelemetry SDK is set up
    # in the process (opentelemetry-instrument, say). Off, no request asks OpenTelemetry
    # whether it is: a measurable share of a reservation's CPU, for a feature we do not ship.
    otel_enabled: bool = False
    # Larger request bodies are refused with 413 before they are parsed.
    max_body_bytes: int = Field(default=1_048_576, ge=1)

    # Hostile traffic (docs/operations.md, "Hostile traffic"): enforced by boxoffice.server's
    # HTTP protocol and the body cap in boxoffice.middleware.
    # Buyer endpoints' bodies are a few hundred bytes; only POST /events may use MAX_BODY_BYTES.
    max_buyer_body_bytes: int = Field(default=16_384, ge=1)
    # Request line and headers together; larger is a 431 before anything parses them.
    max_header_bytes: int = Field(default=32_768, ge=1024)
    # From connecting (or the previous response) to a complete request head; then for the body.
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    body_timeout_seconds: float = Field(default=30.0, gt=0)
    # Open connections per worker (also bounded by the open-file limit); at the cap, idle ones
    # are closed first, and a worker whose connections are all busy answers 503.
    max_connections_per_worker: int = Field(default=4096, ge=16)

    # Per-client rate limits (boxoffice.ratelimit; docs/operations.md, "Rate limits"): a
    # token bucket per client address and scope, kept in PostgreSQL, so all workers and hosts
    # share it. PER_MINUTE refills the bucket, BURST is its size (requests a client may send at
    # once). Beyond, 429 with Retry-After. 0 in either turns that scope's limit off.
    # Reservations: POST /events/{id}/reservations and the demo's PATCH /tickets/reserve.
    rate_limit_reservations_per_minute: int = Field(default=30, ge=0, le=1_000_000)
    rate_limit_reservations_burst: int = Field(default=10, ge=0, le=1_000_000)
    # The waiting room's endpoints (boxoffice.queue).
    rate_limit_queue_per_minute: int = Field(default=60, ge=0, le=1_000_000)
    rate_limit_queue_burst: int = Field(default=20, ge=0, le=1_000_000)

    # Live streams (GET /events/{id}/stream; docs/operations.md, "Live streams"). Beyond a
    # cap a stream is refused: 503 when the worker has MAX_STREAMS_PER_WORKER open, 429 when
    # the client (its address as uvicorn reports it) has MAX_STREAMS_PER_CLIENT open.
    max_streams_per_worker: int = Field(default=1000, ge=1)
    max_streams_per_client: int = Field(default=20, ge=1)
    # Snapshots are read on a pool of their own, so streams never take the connections buyers
    # and the sweeper need (per worker, on top of POOL_SIZE).
    stream_snapshot_connections: int = Field(default=2, ge=1)

    # The waiting room (boxoffice.queue; docs/operations.md, "Waiting room"). How long an
    # admitted buyer's pass is good for, unless the event sets its own queue_pass_seconds.
    queue_pass_seconds: int = Field(default=600, ge=60, le=86_400)
    # How often the admitter (one at a time across workers) draws the pre-queue and admits.
    queue_admit_interval_seconds: float = Field(default=0.5, gt=0, le=60)
    # An arrival is admitted only once it joined this long ago, so that no join with a lower
    # rank is still committing when it is (longer than any join takes; see queue.service).
    queue_settle_seconds: float = Field(default=2.0, ge=0, le=60)
    # A queue stream sends a comment this often when nothing happens, so proxies keep it.
    queue_heartbeat_seconds: float = Field(default=15.0, gt=0)

    # Payments (boxoffice.payments; docs/operations.md, "Payments"). `test` pays without
    # money through its own checkout page; only with it may a client confirm a hold directly.
    payment_provider: Literal["test", "stripe"] = "test"
    # Signs the `test` provider's notifications; unset, derived from SERVER_SECRET.
    test_payment_secret: str | None = Field(default=None, min_length=16)
    # A notification signed longer ago than this is refused (a replayed old one).
    payment_webhook_tolerance_seconds: int = Field(default=300, ge=1, le=86_400)
    stripe_api_key: str | None = None
    stripe_webhook_secret: str | None = None
    # Where the Stripe package sends its API calls; the tests point it at a local stand-in.
    stripe_api_base: str | None = None
    # How often the refunder asks providers to pay back money that booked nothing.
    refund_interval_seconds: float = Field(default=2.0, gt=0, le=3600)

    # Links in e-mails and the providers' return addresses start with this.
    public_base_url: str = "http://127.0.0.1:8000"

    # E-mail (boxoffice.mail): smtp://user:password@host:port (smtps:// for TLS from the
    # start; smtp:// upgrades with STARTTLS when the server offers it). Unset, messages are
    # written as .eml files under MAIL_DIR (default: the data folder's `mail/`).
    smtp_url: str | None = None
    mail_from: str = "boxoffice <tickets@boxoffice.invalid>"
    mail_dir: Path | None = None
    # How often each worker's sender looks for owed e-mail.
    outbox_interval_seconds: float = Field(default=1.0, gt=0, le=3600)
    # While a worker serves requests, the most of its time its sender may spend rendering and
    # sending (the rest waits for a quieter moment); 1 never holds it back.
    outbox_busy_share: float = Field(default=0.2, gt=0, le=1)
    # Buyers who lost their booking link may ask for it again (POST /booking-lookups).
    rate_limit_lookup_per_minute: int = Field(default=5, ge=0, le=1_000_000)
    rate_limit_lookup_burst: int = Field(default=5, ge=0, le=1_000_000)

    @model_validator(mode="after")
    def _url_from_postgres_vars(self) -> "Settings":
        if self.database_url is None and self.postgres_host:
            user = quote(self.postgres_user or "postgres", safe="")
            password = self.postgres_password
            auth = f"{user}:{quote(password, safe='')}" if password else user
            db = self.postgres_db or "postgres"
            if self.postgres_host.startswith("/"):
                # A Unix socket directory, as libpq's PGHOST allows: it travels in the query.
                host = quote(self.postgres_host, safe="/")
                self.database_url = (
                    f"postgresql://{auth}@/{db}?host={host}&port={self.postgres_port}"
                )
            else:
                self.database_url = (
                    f"postgresql://{auth}@{self.postgres_host}:{self.postgres_port}/{db}"
                )
        return self

    @property
    def uses_embedded_database(self) -> bool:
        return self.database_url is None

    @property
    def allows_direct_confirm(self) -> bool:
        """A client's word books a hold only when no money can be involved."""
        return self.payment_provider == "test"

    @property
    def mail_folder(self) -> Path:
        return self.mail_dir if self.mail_dir is not None else self.data_dir / "mail"


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


def asyncpg_dsn(url: str) -> str:
    """The URL for asyncpg.connect itself, which wants the plain scheme, whatever the user wrote."""
    return "postgresql://" + async_url(url).removeprefix("postgresql+asyncpg://")


@lru_cache
def get_settings() -> Settings:
    return Settings()
