"""Idempotency-Key: a retried POST replays the first answer instead of repeating the effect.

The key row is claimed at the start of the effect's own transaction and filled in with the
answer at its end, so the key and the effect commit (or roll back) together:
  - a concurrent request with the same key blocks on the primary key until the first one
    ends; if it committed, the waiter replays the stored answer, if it rolled back (a refusal,
    a crash), the waiter runs the effect itself;
  - refusals (4xx) are raised out of the transaction and so never stored: a client may retry
    a 409 with the same key once the seats free up, and get a fresh attempt.
Keys live 24 hours; an older key is ignored and overwritten by its next use.

A reservation, the hot path, does the same in one statement instead of a transaction: its
key is claimed by the very statement that makes the hold, and what is stored is only the
hold's id; a replay renders the hold again (reservations.reserve).

The table holds no secret a buyer sent or received: only an HMAC of the key under the
server secret (which the database never sees, so a backup cannot even test guesses), and
answers without bearer tokens (a keyed hold's token is derived from the key and the server
secret again at replay time: reservations.tokens.token_for_key). Keys must carry at least
128 bits: 22 or more base64url characters, or a UUID, so a stranger cannot guess a buyer's
key and replay it.
"""

import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import asyncpg
from fastapi import Header
from pydantic import BaseModel
from sqlalchemy import CheckConstraint, DateTime, Index, Integer, LargeBinary, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from boxoffice.database import Base
from boxoffice.errors import IdempotencyKeyReused, IdempotentReplay

MAX_KEY_LENGTH = 200
# 22 base64url characters are 132 bits; a UUID (36 characters with its hyphens) has 122
# random ones plus its fixed bits, and is what browsers make (crypto.randomUUID).
MIN_KEY_LENGTH = 22
KEY_PATTERN = r"^[A-Za-z0-9_-]+$"
KEY_TTL = "24 hours"


class IdempotencyKeyRow(Base):
    __tablename__ = "idempotency_keys"
    __table_args__ = (
        CheckConstraint("key_hash ~ '^[0-9a-f]{64}$'", name="key_hash_is_sha256"),
        # The sweeper deletes keys past their 24 hours, oldest first.
        Index("ix_idempotency_keys_created_at", "created_at"),
    )

    # (scope, key): the scope names the endpoint and its target, so one key reused on another
    # endpoint, or on another reservation's confirm, is a new request, not a replay.
    scope: Mapped[str] = mapped_column(Text, primary_key=True)
    # Hex HMAC-SHA-256 of the Idempotency-Key under the server secret: the key itself is the
    # client's secret, and without the server's a hash cannot be matched to a guess.
    key_hash: Mapped[str] = mapped_column(Text, primary_key=True)
    request_hash: Mapped[bytes] = mapped_column(LargeBinary)
    # NULL while the first request's transaction runs; never committed as NULL.
    status_code: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[Any | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


@dataclass(frozen=True)
class IdempotencyRequest:
    """One keyed request: where it applies, what it asked, and how its answer is rendered."""

    key: str
    # The server secret the key's stored hash is keyed with.
    secret: bytes
    scope: str
    request_hash: bytes
    status_code: int
    # The service's result -> the JSON body the router answers with (stored for replays,
    # except a hold's: see reservations.reserve).
    render: Callable[[Any], Any]


def request_hash(body: BaseModel, *extra: str) -> bytes:
    """sha256 of the canonical JSON of the parsed body (sorted keys, no spaces), plus extras
    such as a credential's hash that the body alone does not carry."""
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode())
    for part in extra:
        digest.update(b"\0" + part.encode())
    return digest.digest()


# The optional Idempotency-Key header, declared once for every route that takes one: a
# plain header parameter (`idempotency_key: IdempotencyKey = None`), not a dependency, which
# FastAPI would resolve separately on every request. Length and characters are checked here
# (a 422 like any bad field).
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=MIN_KEY_LENGTH,
        max_length=MAX_KEY_LENGTH,
        pattern=KEY_PATTERN,
        description="Optional: a random UUID, or 22-200 base64url characters (at least 128"
        " random bits: whoever knows the key and the body can replay the answer). Retrying"
        " with the same key and body replays the first answer (header"
        " `Idempotent-Replayed: true`) for 24 hours; the same key with another body is a"
        " 422. Refusals (4xx) are not stored, so they may be retried with the same key.",
    ),
]

# Claim the key, or take over one that expired. On conflict with a row still being written,
# PostgreSQL waits for that transaction; DO UPDATE ... WHERE then re-checks the committed row.
# The wait is for a retry's twin, which commits in milliseconds: it is bounded by
# statement_timeout, not the short lock_timeout meant for busy seats (SET LOCAL: this
# transaction only).
_WAIT_FOR_KEYS = "SET LOCAL lock_timeout = 0"
_CLAIM = f"""
INSERT INTO idempotency_keys AS k (scope, key_hash, request_hash)
VALUES ($1, $2, $3)
ON CONFLICT (scope, key_hash) DO UPDATE
SET request_hash = EXCLUDED.request_hash, status_code = NULL, response_body = NULL,
    created_at = now()
WHERE k.created_at <= now() - interval '{KEY_TTL}'
RETURNING true AS claimed
"""
# ::text: the answer is replayed as it was stored, without a round trip through a codec.
_STORED = f"""
SELECT request_hash, status_code, response_body::text AS body
FROM idempotency_keys
WHERE scope = $1 AND key_hash = $2 AND created_at > now() - interval '{KEY_TTL}'
"""
_FINISH = """
UPDATE idempotency_keys SET status_code = $3, response_body = $4::text::jsonb
WHERE scope = $1 AND key_hash = $2
"""

# For the sweeper: expired keys are already ignored, deleting them only bounds the table.
# SKIP LOCKED, like the rest of the sweep: a key being taken over right now is left alone.
DELETE_EXPIRED_KEYS = f"""
DELETE FROM idempotency_keys k USING (
    SELECT scope, key_hash FROM idempotency_keys
    WHERE created_at <= now() - interval '{KEY_TTL}'
    ORDER BY created_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
) expired
WHERE k.scope = expired.scope AND k.key_hash = expired.key_hash
"""


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    request_hash: bytes
    status_code: int
    body: str


def key_hash(secret: bytes, key: str) -> str:
    """What the database stores for a key: an HMAC under the server secret (the pepper)."""
    return hmac.new(secret, b"idempotency key\0" + key.encode(), hashlib.sha256).hexdigest()


async def stored_answer(
    conn: asyncpg.Connection, request: IdempotencyRequest
) -> StoredAnswer | None:
    """The committed answer of this key, if it has one and is not past its 24 hours."""
    row = await conn.fetchrow(_STORED, request.scope, key_hash(request.secret, request.key))
    if row is None or row["status_code"] is None:
        return None
    return StoredAnswer(bytes(row["request_hash"]), row["status_code"], row["body"])


async def settled_answer(
    conn: asyncpg.Connection, request: IdempotencyRequest
) -> StoredAnswer | None:
    """The key's committed answer, once a request with the same key that is still in flight
    has ended; None if the key has no answer (then nothing was stored, nor is now).

    For a keyed request that made nothing (a refusal): a twin with the same key may have
    taken the seats it found gone, and be about to commit. Trying to claim the key waits for
    that twin (on the key's primary key); the probe's own claim is always rolled back.
    """
    hashed = key_hash(request.secret, request.key)
    probe = conn.transaction()
    await probe.start()
    try:
        await conn.execute(_WAIT_FOR_KEYS)
        if await conn.fetchval(_CLAIM, request.scope, hashed, request.request_hash) is not None:
            return None
        return await stored_answer(conn, request)
    finally:
        await probe.rollback()


def _replay_or_refuse(request: IdempotencyRequest, stored: StoredAnswer) -> IdempotentReplay:
    if stored.request_hash != request.request_hash:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was already used with a different request body"
        )
    return IdempotentReplay(stored.status_code, json.loads(stored.body))


async def claim(conn: asyncpg.Connection, request: IdempotencyRequest) -> None:
    """First statement of the effect's transaction: claim the key, or raise IdempotentReplay
    (rolling the transaction back) with the stored answer."""
    hashed = key_hash(request.secret, request.key)
    await conn.execute(_WAIT_FOR_KEYS)
    if await conn.fetchval(_CLAIM, request.scope, hashed, request.request_hash) is None:
        stored = await stored_answer(conn, request)
        # A committed row always has its answer: the claim and the answer share a transaction.
        assert stored is not None, "idempotency key committed without an answer"
        raise _replay_or_refuse(request, stored)
    await conn.execute("SET LOCAL lock_timeout = DEFAULT")


async def finish(conn: asyncpg.Connection, request: IdempotencyRequest, result: Any) -> None:
    """Last statement of the effect's transaction: store the answer with the effect."""
    await conn.execute(
        _FINISH,
        request.scope,
        key_hash(request.secret, request.key),
        request.status_code,
        json.dumps(request.render(result)),
    )
