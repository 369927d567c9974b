"""Reserving tickets: the hot path, one SQL statement and so one round trip per hold.

Chosen seats, best available and holds made with an Idempotency-Key all run `RESERVE`: it
locks, checks, holds, audits and (when keyed) claims the key in one autocommitted statement,
so its row locks last exactly as long as it runs and there is no BEGIN or COMMIT to pay for.
Only an unhappy path (a refusal, a key already used) costs further round trips.
"""

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from boxoffice.db import Database
from boxoffice.errors import (
    EventNotFound,
    IdempotencyKeyReused,
    IdempotentReplay,
    InvalidRequest,
    TicketsUnavailable,
    UnknownSection,
    UnknownTickets,
)
from boxoffice.idempotency import KEY_TTL, IdempotencyRequest, key_hash, settled_answer
from boxoffice.reservations.records import HeldTicket, Hold
from boxoffice.reservations.tokens import token_pair

# Parameters: $1 event id, $2 the chosen ticket ids (NULL for best available), $3 how many
# tickets, $4 section (best available; NULL for any), $5 customer, $6 the token's hash, and
# for a keyed request $7 the key's scope (NULL without a key), $8 its hash, $9 the request's.
#
# The parts, in the order PostgreSQL needs them:
#   chosen        FOR UPDATE in id order, so overlapping multi-seat holds queue in one
#                 direction and can never deadlock; a busy row fails after the session's
#                 lock_timeout (a 409), not a long queue. FOR UPDATE returns each row as it is
#                 after any wait, so the checks below see the truth.
#   best_free     SKIP LOCKED in seat order: concurrent buyers of one event take different
#                 rows instead of queueing on the same ones; free rows through the partial
#                 index on available tickets (best_free_in_section the same, in one section:
#                 a separate part, not an `OR $4 IS NULL`, so that the prepared statement's
#                 generic plan still walks that index in seat order rather than sorting
#                 every free seat of the event, 15 times slower under load)...
#   best_expired  ...and only when those run short, seats whose hold expired but was not yet
#                 swept (free too, by `ticket_is_free`). Each part runs only for its kind of
#                 request: the others' first condition is false before any row is read.
#   verdict       all or nothing: every ticket there and free.
#   claim         a keyed request claims its key, after its tickets: a concurrent retry with
#                 the same key waits for the first attempt to commit, then claims nothing.
#                 A refusal claims nothing either, so it may be retried with the same key.
#   new_reservation, held, links, audit
#                 the hold itself, only with a verdict (and a claimed key, when keyed); each
#                 audit row records a hold that expired under its ticket too.
# The answer is the locked tickets and, if it was made, the reservation.
RESERVE = f"""
WITH chosen AS (
    SELECT t.id, t.position, t.label, t.section, t.row_label, t.seat, t.price_minor, t.status,
           t.reservation_id, ticket_is_free(t.status, t.hold_expires_at) AS available
    FROM tickets t
    WHERE $2::bigint[] IS NOT NULL AND t.id = ANY($2::bigint[]) AND t.event_id = $1
    ORDER BY t.id
    FOR UPDATE
), best_free AS (
    SELECT t.id, t.position, t.label, t.section, t.row_label, t.seat, t.price_minor, t.status,
           t.reservation_id, true AS available
    FROM tickets t
    WHERE $2::bigint[] IS NULL AND $4::text IS NULL
      AND t.event_id = $1 AND t.status = 'available'
    ORDER BY t.position
    LIMIT $3
    FOR UPDATE SKIP LOCKED
), best_free_in_section AS (
    SELECT t.id, t.position, t.label, t.section, t.row_label, t.seat, t.price_minor, t.status,
           t.reservation_id, true AS available
    FROM tickets t
    WHERE $2::bigint[] IS NULL AND $4::text IS NOT NULL
      AND t.event_id = $1 AND t.status = 'available' AND t.section = $4::text
    ORDER BY t.position
    LIMIT $3
    FOR UPDATE SKIP LOCKED
), free AS (
    SELECT * FROM best_free UNION ALL SELECT * FROM best_free_in_section
), best_expired AS (
    SELECT t.id, t.position, t.label, t.section, t.row_label, t.seat, t.price_minor, t.status,
           t.reservation_id, true AS available
    FROM tickets t
    WHERE $2::bigint[] IS NULL AND (SELECT count(*) FROM free) < $3
      AND t.event_id = $1 AND t.status = 'reserved' AND t.hold_expires_at <= now()
      AND ($4::text IS NULL OR t.section = $4::text)
    ORDER BY t.position
    LIMIT $3 - (SELECT count(*) FROM free)
    FOR UPDATE SKIP LOCKED
), locked AS (
    SELECT * FROM chosen
    UNION ALL SELECT * FROM free
    UNION ALL SELECT * FROM best_expired
), verdict AS (
    SELECT count(*) = $3 AND coalesce(bool_and(available), false) AS ok FROM locked
), hold AS (
    SELECT gen_random_uuid() AS id
), claim AS (
    INSERT INTO idempotency_keys AS k (scope, key_hash, request_hash, status_code,
                                       response_body)
    SELECT $7::text, $8::text, $9::bytea, 201, jsonb_build_object('id', hold.id)
    FROM verdict, hold
    WHERE verdict.ok AND $7::text IS NOT NULL
    ON CONFLICT (scope, key_hash) DO UPDATE
    SET request_hash = EXCLUDED.request_hash, status_code = EXCLUDED.status_code,
        response_body = EXCLUDED.response_body, created_at = now()
    WHERE k.created_at <= now() - interval '{KEY_TTL}'
    RETURNING true AS claimed
), new_reservation AS (
    INSERT INTO reservations (id, event_id, customer, token_hash, ticket_count, expires_at)
    SELECT hold.id, e.id, $5, $6, $3, now() + make_interval(secs => e.hold_seconds)
    FROM events e, verdict, hold
    WHERE e.id = $1 AND verdict.ok AND ($7::text IS NULL OR EXISTS (SELECT FROM claim))
    RETURNING id, created_at, expires_at
), held AS (
    UPDATE tickets t
    SET status = 'reserved', reservation_id = r.id, hold_expires_at = r.expires_at
    FROM new_reservation r, locked l
    WHERE t.id = l.id
    RETURNING t.id, t.event_id, r.id AS reservation_id,
              l.status AS old_status, l.reservation_id AS old_reservation_id
), links AS (
    INSERT INTO reservation_tickets (reservation_id, ticket_id, event_id)
    SELECT reservation_id, id, event_id FROM held
), audit AS (
    INSERT INTO ticket_audit (ticket_id, event_id, from_status, to_status, reason,
                              reservation_id)
    SELECT id, event_id, from_status::ticket_status, to_status::ticket_status, reason,
           audit_reservation
    FROM (
        SELECT id, event_id, 'reserved' AS from_status, 'available' AS to_status,
               'expired' AS reason, old_reservation_id AS audit_reservation, 0 AS step
        FROM held WHERE old_status = 'reserved'
        UNION ALL
        SELECT id, event_id, 'available', 'reserved', 'reserved', reservation_id, 1
        FROM held
    ) changes
    ORDER BY id, step
)
SELECT l.id, l.label, l.section, l.row_label, l.seat, l.price_minor, l.available,
       r.id AS reservation_id, r.created_at, r.expires_at,
       (SELECT currency FROM events WHERE id = $1) AS currency
FROM locked l LEFT JOIN new_reservation r ON true
ORDER BY l.id
"""

_EVENT_EXISTS = "SELECT 1 FROM events WHERE id = $1"
_SECTION_EXISTS = "SELECT 1 FROM tickets WHERE event_id = $1 AND section = $2 LIMIT 1"

# A keyed hold as it is now, for a replay: the first answer again, with today's status.
_KEYED_HOLD = """
SELECT r.id AS reservation_id, r.event_id, r.customer, r.created_at, r.expires_at,
       e.currency,
       CASE WHEN r.status = 'active' AND r.expires_at <= now() THEN 'expired'
            ELSE r.status::text END AS status
FROM reservations r JOIN events e ON e.id = r.event_id
WHERE r.id = $1
"""
_KEYED_HOLD_TICKETS = """
SELECT t.id, t.label, t.section, t.row_label, t.seat, t.price_minor
FROM reservation_tickets rt JOIN tickets t ON t.id = rt.ticket_id
WHERE rt.reservation_id = $1
ORDER BY t.id
"""


def validate_ticket_ids(ticket_ids: list[int], max_per_hold: int) -> None:
    if len(set(ticket_ids)) != len(ticket_ids):
        raise InvalidRequest("ticket_ids must not repeat a ticket")
    if len(ticket_ids) > max_per_hold:
        raise InvalidRequest(f"at most {max_per_hold} tickets per hold")


def _key_arguments(idempotency: IdempotencyRequest | None) -> tuple[Any, Any, Any]:
    if idempotency is None:
        return None, None, None
    return (
        idempotency.scope,
        key_hash(idempotency.secret, idempotency.key),
        idempotency.request_hash,
    )


def _hold_from(
    rows: Sequence[Mapping[str, Any]], *, event_id: uuid.UUID, customer: str, token: str
) -> Hold:
    first = rows[0]
    return Hold(
        reservation_id=first["reservation_id"],
        event_id=event_id,
        customer=customer,
        token=token,
        created_at=first["created_at"],
        expires_at=first["expires_at"],
        currency=first["currency"],
        tickets=[
            HeldTicket(
                id=row["id"],
                label=row["label"],
                section=row["section"],
                row_label=row["row_label"],
                seat=row["seat"],
                price_minor=row["price_minor"],
            )
            for row in rows
        ],
    )


async def reserve_tickets(
    db: Database,
    *,
    event_id: uuid.UUID,
    ticket_ids: list[int],
    customer: str,
    idempotency: IdempotencyRequest | None = None,
    token: str | None = None,
) -> Hold:
    """Hold exactly these tickets, all or none; 409 listing any that are taken."""
    ids = sorted(set(ticket_ids))
    token, token_hash = token_pair(token)
    keyed = _key_arguments(idempotency)
    async with db.connection() as conn:
        try:
            rows = await conn.fetch(
                RESERVE, event_id, ids, len(ids), None, customer, token_hash, *keyed
            )
        except asyncpg.LockNotAvailableError:
            await _replay_if_keyed(conn, idempotency, token)
            raise TicketsUnavailable(
                "another buyer is reserving some of these tickets right now", ticket_ids=ids
            ) from None
        if rows and rows[0]["reservation_id"] is not None:
            return _hold_from(rows, event_id=event_id, customer=customer, token=token)
        await _replay_if_keyed(conn, idempotency, token)
        if not rows and not await conn.fetchval(_EVENT_EXISTS, event_id):
            raise EventNotFound(f"no event {event_id}")
        if len(rows) != len(ids):
            unknown = sorted(set(ids) - {row["id"] for row in rows})
            raise UnknownTickets(
                f"{len(unknown)} ticket(s) are not tickets of this event", ticket_ids=unknown
            )
        taken = [row["id"] for row in rows if not row["available"]]
        raise TicketsUnavailable(
            f"{len(taken)} of the requested tickets are already held or sold", ticket_ids=taken
        )


async def reserve_best_available(
    db: Database,
    *,
    event_id: uuid.UUID,
    quantity: int,
    section: str | None,
    customer: str,
    idempotency: IdempotencyRequest | None = None,
    token: str | None = None,
) -> Hold:
    """Hold the best `quantity` free tickets (seat order), all or none."""
    token, token_hash = token_pair(token)
    keyed = _key_arguments(idempotency)
    async with db.connection() as conn:
        try:
            rows = await conn.fetch(
                RESERVE, event_id, None, quantity, section, customer, token_hash, *keyed
            )
        except asyncpg.LockNotAvailableError:
            await _replay_if_keyed(conn, idempotency, token)
            # SKIP LOCKED still waits when it follows a row another buyer just changed;
            # past the lock timeout the seats are contended, not gone: a clean 409.
            raise TicketsUnavailable(
                "other buyers are taking these seats right now; try again", requested=quantity
            ) from None
        if rows and rows[0]["reservation_id"] is not None:
            return _hold_from(rows, event_id=event_id, customer=customer, token=token)
        await _replay_if_keyed(conn, idempotency, token)
        if not await conn.fetchval(_EVENT_EXISTS, event_id):
            raise EventNotFound(f"no event {event_id}")
        if section is not None and not await conn.fetchval(_SECTION_EXISTS, event_id, section):
            raise UnknownSection(f"the event has no section {section!r}")
    in_section = f" in section {section!r}" if section is not None else ""
    raise TicketsUnavailable(
        f"only {len(rows)} of {quantity} tickets{in_section} are free right now",
        requested=quantity,
        free=len(rows),
    )


async def _replay_if_keyed(
    conn: asyncpg.Connection, idempotency: IdempotencyRequest | None, token: str
) -> None:
    """After a keyed request made no hold: if its key has one (a retry, or a concurrent twin
    that won, waited for if still in flight), replay it; a key used for another request is a
    422. Otherwise the refusal stands and nothing was stored."""
    if idempotency is None:
        return
    stored = await settled_answer(conn, idempotency)
    if stored is None:
        return
    if stored.request_hash != idempotency.request_hash:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was already used with a different request body"
        )
    body = json.loads(stored.body)
    replay = await _replayed_hold(conn, uuid.UUID(body["id"]), idempotency, token)
    if replay is None:  # the hold was deleted (retention); nothing to show but its id
        raise IdempotentReplay(stored.status_code, body)
    raise IdempotentReplay(stored.status_code, replay)


async def _replayed_hold(
    conn: asyncpg.Connection,
    reservation_id: uuid.UUID,
    idempotency: IdempotencyRequest,
    token: str,
) -> Any:
    """The keyed hold's first answer, rendered again from the database (the key's row
    stores only the hold's id, and no token: the token is derived from the key)."""
    reservation = await conn.fetchrow(_KEYED_HOLD, reservation_id)
    if reservation is None:
        return None
    tickets = await conn.fetch(_KEYED_HOLD_TICKETS, reservation_id)
    hold = _hold_from(
        [{**dict(reservation), **dict(ticket)} for ticket in tickets],
        event_id=reservation["event_id"],
        customer=reservation["customer"],
        token=token,
    )
    body = idempotency.render(hold)
    body["status"] = reservation["status"]
    return body
