"""Per-client rate limits: a token bucket per (scope, client address), kept in PostgreSQL.

A client may send BURST requests of a scope at once, and then PER_MINUTE a minute: its bucket
holds up to BURST tokens, refills at PER_MINUTE / 60 tokens a second, and each request takes
one; a request that finds less than one token is refused with 429 `too-many-requests` and a
`Retry-After` of the seconds until the next token (at least 1). A refused request takes no
token, so a client that keeps retrying too early does not push its own next chance back.

Scopes and their settings (0 in either turns the scope's limit off):
  - `reservations`: RATE_LIMIT_RESERVATIONS_PER_MINUTE, RATE_LIMIT_RESERVATIONS_BURST, on
    POST /events/{id}/reservations and the demo's PATCH /tickets/reserve
    (`reservations_rate_limit`);
  - `queue`: RATE_LIMIT_QUEUE_PER_MINUTE, RATE_LIMIT_QUEUE_BURST, on the waiting room's
    endpoints (`queue_rate_limit`).

Why PostgreSQL: the limit must be one limit however many workers and hosts serve, and the
product depends on no server but PostgreSQL (no Redis). The `limits` library (what slowapi
builds on) stores its counters in memory, Redis, Memcached or MongoDB, not PostgreSQL, and has
fixed and moving windows but no token bucket; so this module writes the one statement it needs
itself (TAKE_TOKEN). The buckets live in the UNLOGGED table `rate_buckets` (migration 0010:
rate state need not survive a crash, and a check writes no WAL).

Clients are told apart by the address uvicorn reports (`request.client.host`): the peer's, or,
from a proxy listed in FORWARDED_ALLOW_IPS (uvicorn's setting, default 127.0.0.1), the one its
X-Forwarded-For names. Behind a reverse proxy that is not listed, every client is the proxy.
"""

import hashlib
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from fastapi import Request
from sqlalchemy import CheckConstraint, DateTime, Double, Text
from sqlalchemy.orm import Mapped, mapped_column

from boxoffice.config import Settings
from boxoffice.database import Base
from boxoffice.db import Database
from boxoffice.errors import TooManyRequests

RESERVATIONS = "reservations"
QUEUE = "queue"
LOOKUP = "lookup"
# What a refusal's detail calls a scope's requests.
_WHAT = {RESERVATIONS: "reservation", QUEUE: "waiting room", LOOKUP: "booking lookup"}

MAX_KEY_LENGTH = 300
# A longer client address (only a proxy's X-Forwarded-For could make one) is keyed by its hash.
MAX_HOST_LENGTH = 200
# A bucket nobody used for this long (or for as long as its refill takes, if longer) is full
# again, and a full bucket is the same as none: the sweeper deletes it.
IDLE_SECONDS = 600
# What a request refused because its bucket's row stayed locked is told to wait.
CONTENDED_RETRY_AFTER = 1


class RateBucket(Base):
    """One client's token bucket in one scope, keyed `<scope> <address>`."""

    __tablename__ = "rate_buckets"
    __table_args__ = (
        CheckConstraint(f"char_length(key) <= {MAX_KEY_LENGTH}", name="key_length"),
        CheckConstraint("tokens >= 0", name="tokens_not_negative"),
        # Rate state need not survive a crash, and so writes no WAL (migration 0010).
        {"prefixes": ["UNLOGGED"]},
    )

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    # Tokens left at `refreshed_at`; what the time since then added is computed, not stored.
    tokens: Mapped[float] = mapped_column(Double)
    refreshed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


# The bucket `b` refilled up to now: its tokens, plus what the time since its last refresh
# added, capped at the burst. Always on the database clock (now()), which every worker and host
# share. greatest(0, …): a check whose transaction began before the one that last refreshed the
# bucket (it waited for that row's lock) must not take that time back.
_REFILLED = (
    "least($3::float8, b.tokens + greatest(0, extract(epoch FROM now() - b.refreshed_at))"
    "::float8 * $2::float8)"
)

# One check, one statement. $1 key, $2 tokens per second, $3 burst.
# - A client's first request inserts its bucket, full, with the token it takes already gone.
# - Later ones conflict on the key and so wait for its row lock: a client's concurrent
#   requests, whichever worker or host serves them, take their turns on the row, each seeing
#   the tokens the one before it left (ON CONFLICT reads the latest committed row, not this
#   statement's snapshot). The lock lasts as long as this autocommitted statement, and waits at
#   most LOCK_TIMEOUT_MS like every lock of the service (then the caller refuses the request).
# - The update takes a token only WHERE at least one is there; otherwise the row is left as it
#   is (a refused request takes no token, and writes nothing). refreshed_at never moves back
#   (greatest): a check that began earlier but got the lock later must not have the next check
#   count again the time the one before it already counted.
# - `taken` is empty exactly when the request is refused. The wait is then computed from the
#   row as this statement's snapshot saw it: if other requests took tokens in between, the
#   estimate is early (never below 1 s), and a retry that comes too early is told again.
#   Nothing but the wait depends on that read.
TAKE_TOKEN = f"""
WITH taken AS (
    INSERT INTO rate_buckets AS b (key, tokens, refreshed_at)
    VALUES ($1, $3::float8 - 1, now())
    ON CONFLICT (key) DO UPDATE
        SET tokens = {_REFILLED} - 1, refreshed_at = greatest(b.refreshed_at, now())
        WHERE {_REFILLED} >= 1
    RETURNING 1
)
SELECT EXISTS (SELECT FROM taken) AS allowed,
       greatest(1, ceil((1 - coalesce(
           (SELECT {_REFILLED} FROM rate_buckets b WHERE b.key = $1), 0)) / $2::float8))::int
           AS retry_after
"""

# One batch of idle buckets (full again by now). No ORDER BY, and so no index needed: the scan
# stops at the batch's last row. SKIP LOCKED: a bucket a check holds right now is in use.
# $1 idle seconds, $2 batch size.
DELETE_IDLE_BUCKETS = """
WITH idle AS (
    SELECT key FROM rate_buckets
    WHERE refreshed_at < now() - make_interval(secs => $1)
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
DELETE FROM rate_buckets b USING idle WHERE b.key = idle.key
"""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    # Seconds until the bucket has a token again (meaningful when refused; at least 1).
    retry_after: int


def client_key(scope: str, request: Request) -> str:
    """`<scope> <client address>`: the bucket of this request's client in this scope."""
    host = request.client.host if request.client is not None else "unknown"
    if len(host) > MAX_HOST_LENGTH:
        host = "sha256:" + hashlib.sha256(host.encode()).hexdigest()
    return f"{scope} {host}"


async def take_token(db: Database, key: str, *, per_minute: int, burst: int) -> Decision:
    """Take one token from `key`'s bucket (PER_MINUTE refill, BURST size) if it has one."""
    try:
        row = await db.fetchrow(TAKE_TOKEN, key, per_minute / 60, float(burst))
    except asyncpg.LockNotAvailableError:
        # The bucket's row stayed locked for LOCK_TIMEOUT_MS: only this client's own checks
        # lock it for longer than a moment (the sweeper deletes only idle buckets), so this is
        # one client hammering its own bucket. Its own contention: refused.
        return Decision(allowed=False, retry_after=CONTENDED_RETRY_AFTER)
    assert row is not None, "the statement always answers one row"
    return Decision(allowed=bool(row["allowed"]), retry_after=int(row["retry_after"]))


async def enforce(db: Database, request: Request, scope: str, per_minute: int, burst: int) -> None:
    """Raise TooManyRequests (429) if this request's client is over `scope`'s limit."""
    if per_minute == 0 or burst == 0:
        return
    decision = await take_token(db, client_key(scope, request), per_minute=per_minute, burst=burst)
    if decision.allowed:
        return
    # Imported here: `boxoffice serve` imports this module (through the models) before it sets
    # PROMETHEUS_MULTIPROC_DIR, and prometheus_client must not be imported before that.
    from boxoffice import metrics

    metrics.RATE_LIMITED.labels(scope).inc()
    raise TooManyRequests(
        f"too many {_WHAT[scope]} requests from this client (at most {burst} at once, then "
        f"{per_minute} a minute); retry after {decision.retry_after} s",
        retry_after=decision.retry_after,
    )


# The dependencies: `dependencies=[Depends(queue_rate_limit)]` on a route, or a parameter.
# Each takes the request alone and reads the settings from the app's database, so a route pays
# for one dependency resolution, not three.


async def reservations_rate_limit(request: Request) -> None:
    """RATE_LIMIT_RESERVATIONS_* for this request's client: 429 `too-many-requests` beyond."""
    db: Database = request.app.state.db
    settings = db.settings
    await enforce(
        db,
        request,
        RESERVATIONS,
        settings.rate_limit_reservations_per_minute,
        settings.rate_limit_reservations_burst,
    )


async def queue_rate_limit(request: Request) -> None:
    """RATE_LIMIT_QUEUE_* for this request's client: 429 `too-many-requests` beyond."""
    db: Database = request.app.state.db
    settings = db.settings
    await enforce(
        db, request, QUEUE, settings.rate_limit_queue_per_minute, settings.rate_limit_queue_burst
    )


async def lookup_rate_limit(request: Request) -> None:
    """RATE_LIMIT_LOOKUP_* for this request's client: guessing booking codes is slow."""
    db: Database = request.app.state.db
    settings = db.settings
    await enforce(
        db, request, LOOKUP, settings.rate_limit_lookup_per_minute, settings.rate_limit_lookup_burst
    )


def idle_seconds(settings: Settings) -> float:
    """How long after its last refresh a bucket is surely full again: IDLE_SECONDS, or the
    longest time any scope's empty bucket takes to refill, if that is longer."""
    limits = [
        (settings.rate_limit_reservations_per_minute, settings.rate_limit_reservations_burst),
        (settings.rate_limit_queue_per_minute, settings.rate_limit_queue_burst),
        (settings.rate_limit_lookup_per_minute, settings.rate_limit_lookup_burst),
    ]
    refill = [burst * 60 / per_minute for per_minute, burst in limits if per_minute and burst]
    return max([IDLE_SECONDS, *refill])


async def prune_idle_buckets(db: Database, *, batch_size: int) -> int:
    """Delete up to `batch_size` buckets that are full again (the sweeper's); how many."""
    status = await db.execute(DELETE_IDLE_BUCKETS, idle_seconds(db.settings), batch_size)
    return int(status.rsplit(" ", 1)[-1])
