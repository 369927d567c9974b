"""Reserving tickets: the hot path, one SQL statement and so one round trip per hold.

Chosen seats, best available and holds made with an Idempotency-Key each run one statement
(RESERVE_CHOSEN, RESERVE_BEST, …): it locks, checks, holds, audits and (when keyed) claims
the key, autocommitted, so its row locks last exactly as long as it runs and there is no
BEGIN or COMMIT to pay for. Only an unhappy path (a refusal, too few free seats without
counting lapsed holds, a key already used) costs further round trips.
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

# A reservation is ONE statement: `WITH locked AS (<which tickets>), <hold them>`. The first
# part differs by kind of request (the four `_LOCK_*` below), the rest (`_HOLD_LOCKED`) is
# the same for all; each kind is its own prepared statement, so each plan holds only what
# its kind runs. Parameters, the same in all four: $1 event id, $2 the chosen ticket ids (or
# for best available, the section or NULL), $3 how many tickets, $4 customer, $5 the
# token's hash, and for a keyed request $6 the key's scope (NULL without a key), $7 its
# hash, $8 the request's hash.
#
# FOR UPDATE in id order: overlapping multi-seat holds queue in one direction and can never
# deadlock; a busy row fails after the session's lock_timeout (a 409), not a long queue.
# FOR UPDATE returns each row as it is after any wait, so the checks that follow see the
# truth.
_LOCK_CHOSEN = """
    SELECT t.id, t.label, t.section, t.row_label, t.seat, t.price_minor, t.status,
           t.reservation_id, ticket_is_free(t.status, t.hold_expires_at) AS available
    FROM tickets t
    WHERE t.id = ANY($2::bigint[]) AND t.event_id = $1
    ORDER BY t.id
    FOR UPDATE
"""
# SKIP LOCKED in seat order: concurrent buyers of one event take different rows instead of
# queueing on the same ones. Free rows through the partial index on available tickets...
_LOCK_BEST = """
    SELECT t.id, t.label, t.section, t.row_label, t.seat, t.price_minor, t.status,
           t.reservation_id, true AS available
    FROM tickets t
    WHERE $2::text IS NULL AND t.event_id = $1 AND t.status = 'available'
    ORDER BY t.position
    LIMIT $3
    FOR UPDATE SKIP LOCKED
"""
# ...in one section (its own statement, not `$2 IS NULL OR section = $2`: with that OR the
# prepared statement's generic plan sorts every free seat of the event instead of walking
# the index in seat order, 15 times slower under load)...
_LOCK_BEST_IN_SECTION = """
    SELECT t.id, t.label, t.section, t.row_label, t.seat, t.price_minor, t.status,
           t.reservation_id, true AS available
    FROM tickets t
    WHERE t.event_id = $1 AND t.status = 'available' AND t.section = $2::text
    ORDER BY t.position
    LIMIT $3
    FOR UPDATE SKIP LOCKED
"""
# ...and only when those run short, free seats including holds that expired but were not
# swept yet (free too). The OR costs an index filter, hence a statement of its own.
_LOCK_BEST_INCLUDING_EXPIRED = """
    SELECT t.id, t.label, t.section, t.row_label, t.seat, t.price_minor, t.status,
           t.reservation_id, true AS available
    FROM tickets t
    WHERE t.event_id = $1 AND ticket_is_free(t.status, t.hold_expires_at)
      AND ($2::text IS NULL OR t.section = $2::text)
    ORDER BY t.position
    LIMIT $3
    FOR UPDATE SKIP LOCKED
"""
# Holding what `locked` holds, in the order PostgreSQL needs it:
#   verdict        all or nothing: every ticket there and free.
#   claim          a keyed request claims its key, after its tickets: a concurrent retry
#                  with the same key waits for the first attempt to commit, then claims
#                  nothing. A refusal claims nothing either, so it may be retried with the
#                  same key.
#   new_reservation, held, links, audit
#                  the hold itself, only with a verdict (and a claimed key, when keyed); each
#                  audit row records a hold that expired under its ticket too.
# The answer is the locked tickets and, if it was made, the reservation.
_HOLD_LOCKED = f"""
verdict AS (
    SELECT count(*) = $3 AND coalesce(bool_and(available), false) AS ok FROM locked
), hold AS (
    SELECT gen_random_uuid() AS id
), claim AS (
    INSERT INTO idempotency_keys AS k (scope, key_hash, request_hash, status_code,
                                       response_body)
    SELECT $6::text, $7::text, $8::bytea, 201, jsonb_build_object('id', hold.id)
    FROM verdict, hold
    WHERE verdict.ok AND $6::text IS NOT NULL
    ON CONFLICT (scope, key_hash) DO UPDATE
    SET request_hash = EXCLUDED.request_hash, status_code = EXCLUDED.status_code,
        response_body = EXCLUDED.response_body, created_at = now()
    WHERE k.created_at <= now() - interval '{KEY_TTL}'
    RETURNING true AS claimed
), new_reservation AS (
    INSERT INTO reservations (id, event_id, customer, token_hash, ticket_count, expires_at)
    SELECT hold.id, e.id, $4, $5, $3, now() + make_interval(secs => e.hold_seconds)
    FROM events e, verdict, hold
    WHERE e.id = $1 AND verdict.ok AND ($6::text IS NULL OR EXISTS (SELECT FROM claim))
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

RESERVE_CHOSEN = f"WITH locked AS ({_LOCK_CHOSEN}), {_HOLD_LOCKED}"
RESERVE_BEST = f"WITH locked AS ({_LOCK_BEST}), {_HOLD_LOCKED}"
RESERVE_BEST_IN_SECTION = f"WITH locked AS ({_LOCK_BEST_IN_SECTION}), {_HOLD_LOCKED}"
RESERVE_BEST_INCLUDING_EXPIRED = f"WITH locked AS ({_LOCK_BEST_INCLUDING_EXPIRED}), {_HOLD_LOCKED}"

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
                RESERVE_CHOSEN, event_id, ids, len(ids), customer, token_hash, *keyed
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
    first = RESERVE_BEST if section is None else RESERVE_BEST_IN_SECTION
    async with db.connection() as conn:
        for statement in (first, RESERVE_BEST_INCLUDING_EXPIRED):
            try:
                rows = await conn.fetch(
                    statement, event_id, section, quantity, customer, token_hash, *keyed
                )
            except asyncpg.LockNotAvailableError:
                await _replay_if_keyed(conn, idempotency, token)
                # SKIP LOCKED still waits when it follows a row another buyer just changed;
                # past the lock timeout the seats are contended, not gone: a clean 409.
                raise TicketsUnavailable(
                    "other buyers are taking these seats right now; try again",
                    requested=quantity,
                ) from None
            if rows and rows[0]["reservation_id"] is not None:
                return _hold_from(rows, event_id=event_id, customer=customer, token=token)
            if len(rows) == quantity:
                break  # enough free seats, yet no hold: the key was used already
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
