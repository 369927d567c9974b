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
    Conflict,
    CustomerLimitReached,
    EventCancelled,
    EventNotFound,
    IdempotencyKeyReused,
    IdempotentReplay,
    InvalidRequest,
    SalesClosed,
    TicketsUnavailable,
    UnknownSection,
    UnknownTickets,
)
from boxoffice.idempotency import KEY_TTL, IdempotencyRequest, key_hash, settled_answer
from boxoffice.queue.service import explain_refused_pass
from boxoffice.reservations.records import HeldTicket, Hold
from boxoffice.reservations.tokens import token_pair

# A reservation is ONE statement: `WITH locked AS (<which tickets>), <hold them>`. The first
# part differs by kind of request (the four `_LOCK_*` below), the rest (`_HOLD_LOCKED`) is
# the same for all; each kind is its own prepared statement, so each plan holds only what
# its kind runs. Parameters, the same in all four: $1 event id, $2 the chosen ticket ids (or
# for best available, the section or NULL), $3 how many tickets, $4 customer, $5 the
# token's hash, and for a keyed request $6 the key's scope (NULL without a key), $7 its
# hash, $8 the request's hash; $9 the queue pass (the waiting room's place, or NULL); $10
# the waiting-list entry this hold is an offer for (the offerer's own holds, else NULL).
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
#   sale           the event: is it on sale now (its sales window, never once it started,
#                  never once it was cancelled), its hold length, its cap per customer.
#   seats          all or nothing: every ticket there and free.
#   allowance      a capped event only, and only when the seats are there: the customer's
#                  tickets held or bought so far, counted under a lock on (event, customer)
#                  that lasts until this statement commits, so the customer's racing holds
#                  take turns and each counts the ones before it (lock_customer_and_count,
#                  migration 0009). It comes after the seats: the lock order is tickets (in
#                  id order), then the customer.
#   queue_pass     a queued event only: the customer's admitted place in the waiting room,
#                  its pass unexpired and unused, locked (after the seats) so that two holds
#                  with one pass take turns and the second finds it used.
#   offer_entry    an offer to the waiting list only: the entry, still waiting, locked.
#   verdict        seats free, on sale, within the cap; with a pass if the event is queued
#                  and nobody on its waiting list if it has one (their seats are offered to
#                  them first), unless this hold is such an offer.
#   claim          a keyed request claims its key, after its tickets: a concurrent retry
#                  with the same key waits for the first attempt to commit, then claims
#                  nothing. A refusal claims nothing either, so it may be retried with the
#                  same key.
#   new_reservation, held, links, audit, spent
#                  the hold itself, only with a verdict (and a claimed key, when keyed); each
#                  audit row records a hold that expired under its ticket too; the pass is
#                  spent on the hold; an offer marks its entry offered.
# The answer is the locked tickets and, if it was made, the reservation, with what the
# verdict was made of (so a refusal can say why without asking again).
_HOLD_LOCKED = f"""
sale AS (
    SELECT e.hold_seconds, e.currency, e.max_tickets_per_customer AS cap,
           e.queue_enabled AS queued,
           EXISTS (SELECT 1 FROM waiting_list w
                   WHERE w.event_id = e.id AND w.status = 'waiting') AS waitlisted,
           now() >= coalesce(e.sales_start_at, '-infinity')
           AND now() < coalesce(e.sales_end_at, e.starts_at)
           AND e.cancelled_at IS NULL AS open
    FROM events e WHERE e.id = $1
), seats AS (
    SELECT count(*) = $3 AND coalesce(bool_and(available), false) AS free FROM locked
), allowance AS (
    SELECT CASE WHEN sale.cap IS NOT NULL AND sale.open AND seats.free
                THEN lock_customer_and_count($1, lower(btrim($4))) END AS holding
    FROM sale, seats
), queue_pass AS (
    SELECT q.id FROM queue_entries q, seats
    WHERE q.id = $9::uuid AND q.event_id = $1 AND q.customer_key = lower(btrim($4))
      AND q.status = 'admitted' AND q.pass_expires_at > now() AND seats.free
    FOR UPDATE OF q
), offer_entry AS (
    SELECT w.id FROM waiting_list w
    WHERE w.id = $10::uuid AND w.event_id = $1 AND w.status = 'waiting'
    FOR UPDATE
), verdict AS (
    SELECT seats.free AND sale.open
           AND (sale.cap IS NULL OR allowance.holding + $3 <= sale.cap)
           AND CASE WHEN $10::uuid IS NULL
                    THEN NOT sale.waitlisted
                         AND (NOT sale.queued OR EXISTS (SELECT FROM queue_pass))
                    ELSE EXISTS (SELECT FROM offer_entry) END AS ok
    FROM sale, seats, allowance
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
    SELECT hold.id, $1, $4, $5, $3, now() + make_interval(secs => sale.hold_seconds)
    FROM sale, verdict, hold
    WHERE verdict.ok AND ($6::text IS NULL OR EXISTS (SELECT FROM claim))
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
), spent AS (
    UPDATE queue_entries q SET status = 'used', used_at = now(), reservation_id = r.id
    FROM new_reservation r, sale
    WHERE sale.queued AND q.id IN (SELECT id FROM queue_pass)
), offered AS (
    UPDATE waiting_list w SET status = 'offered', offered_at = now(), reservation_id = r.id
    FROM new_reservation r
    WHERE w.id IN (SELECT id FROM offer_entry)
)
SELECT l.id, l.label, l.section, l.row_label, l.seat, l.price_minor, l.available,
       r.id AS reservation_id, r.created_at, r.expires_at, sale.currency,
       sale.open AS sales_open, sale.cap, allowance.holding, sale.queued, sale.waitlisted,
       EXISTS (SELECT FROM queue_pass) AS pass_ok
FROM locked l CROSS JOIN sale CROSS JOIN allowance LEFT JOIN new_reservation r ON true
ORDER BY l.id
"""

RESERVE_CHOSEN = f"WITH locked AS ({_LOCK_CHOSEN}), {_HOLD_LOCKED}"
RESERVE_BEST = f"WITH locked AS ({_LOCK_BEST}), {_HOLD_LOCKED}"
RESERVE_BEST_IN_SECTION = f"WITH locked AS ({_LOCK_BEST_IN_SECTION}), {_HOLD_LOCKED}"
RESERVE_BEST_INCLUDING_EXPIRED = f"WITH locked AS ({_LOCK_BEST_INCLUDING_EXPIRED}), {_HOLD_LOCKED}"

# Why an event is not on sale, for a refusal's answer.
_SALES_WINDOW = """
SELECT cancelled_at IS NOT NULL AS cancelled,
       sales_start_at, nullif(coalesce(sales_end_at, starts_at), 'infinity') AS sales_end_at,
       now() >= coalesce(sales_start_at, '-infinity')
       AND now() < coalesce(sales_end_at, starts_at) AS open,
       now() < sales_start_at AS not_yet
FROM events WHERE id = $1
"""
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
    queue_pass: uuid.UUID | None = None,
) -> Hold:
    """Hold exactly these tickets, all or none; 409 listing any that are taken.

    `queue_pass`: the waiting-room place whose pass this hold uses (a queued event needs
    one; it is spent on the hold)."""
    ids = sorted(set(ticket_ids))
    token, token_hash = token_pair(token)
    keyed = _key_arguments(idempotency)
    async with db.connection() as conn:
        try:
            rows = await conn.fetch(
                RESERVE_CHOSEN,
                event_id,
                ids,
                len(ids),
                customer,
                token_hash,
                *keyed,
                queue_pass,
                None,
            )
        except asyncpg.LockNotAvailableError as busy:
            await _replay_if_keyed(conn, idempotency, token)
            _refuse_if_customer_busy(busy)
            raise TicketsUnavailable(
                "another buyer is reserving some of these tickets right now", ticket_ids=ids
            ) from None
        if rows and rows[0]["reservation_id"] is not None:
            return _hold_from(rows, event_id=event_id, customer=customer, token=token)
        await _replay_if_keyed(conn, idempotency, token)
        await _refuse_unless_on_sale(conn, event_id, rows)
        if len(rows) != len(ids):
            unknown = sorted(set(ids) - {row["id"] for row in rows})
            raise UnknownTickets(
                f"{len(unknown)} ticket(s) are not tickets of this event", ticket_ids=unknown
            )
        taken = [row["id"] for row in rows if not row["available"]]
        if not taken:
            _refuse_if_waitlisted(rows, ticket_ids=ids)
            await _refuse_without_pass(conn, event_id, rows, queue_pass, customer)
            _refuse_over_cap(rows, len(ids))
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
    queue_pass: uuid.UUID | None = None,
    offer: uuid.UUID | None = None,
) -> Hold:
    """Hold the best `quantity` free tickets (seat order), all or none (`queue_pass`: as
    for `reserve_tickets`). `offer`: the waiting-list entry this hold is offered to (the
    offerer's; it needs no pass and goes before open sale)."""
    token, token_hash = token_pair(token)
    keyed = _key_arguments(idempotency)
    first = RESERVE_BEST if section is None else RESERVE_BEST_IN_SECTION
    async with db.connection() as conn:
        for statement in (first, RESERVE_BEST_INCLUDING_EXPIRED):
            try:
                rows = await conn.fetch(
                    statement,
                    event_id,
                    section,
                    quantity,
                    customer,
                    token_hash,
                    *keyed,
                    queue_pass,
                    offer,
                )
            except asyncpg.LockNotAvailableError as busy:
                await _replay_if_keyed(conn, idempotency, token)
                _refuse_if_customer_busy(busy)
                # SKIP LOCKED still waits when it follows a row another buyer just changed;
                # past the lock timeout the seats are contended, not gone: a clean 409.
                raise TicketsUnavailable(
                    "other buyers are taking these seats right now; try again",
                    requested=quantity,
                ) from None
            if rows and rows[0]["reservation_id"] is not None:
                return _hold_from(rows, event_id=event_id, customer=customer, token=token)
            if len(rows) == quantity:
                break  # enough free seats, yet no hold: not on sale, the cap, or a used key
        await _replay_if_keyed(conn, idempotency, token)
        await _refuse_unless_on_sale(conn, event_id, rows)
        if len(rows) == quantity:
            _refuse_over_cap(rows, quantity)
            if offer is None:
                _refuse_if_waitlisted(rows, requested=quantity)
                await _refuse_without_pass(conn, event_id, rows, queue_pass, customer)
        if section is not None and not await conn.fetchval(_SECTION_EXISTS, event_id, section):
            raise UnknownSection(f"the event has no section {section!r}")
    in_section = f" in section {section!r}" if section is not None else ""
    raise TicketsUnavailable(
        f"only {len(rows)} of {quantity} tickets{in_section} are free right now",
        requested=quantity,
        free=len(rows),
    )


async def _refuse_unless_on_sale(
    conn: asyncpg.Connection, event_id: uuid.UUID, rows: Sequence[Mapping[str, Any]]
) -> None:
    """404 for no such event, 409 `event-cancelled` once cancelled, 409 `sales-closed`
    outside its sales window. The hold's own answer says whether it was on sale; only a
    refusal to explain costs a query."""
    if rows and rows[0]["sales_open"]:
        return
    window = await conn.fetchrow(_SALES_WINDOW, event_id)
    if window is None:
        raise EventNotFound(f"no event {event_id}")
    if window["cancelled"]:
        raise EventCancelled("the event was cancelled; nothing more is sold for it")
    if window["open"]:
        return  # it opened since (or no tickets matched): the other checks say why
    start, end = window["sales_start_at"], window["sales_end_at"]
    not_yet = bool(window["not_yet"])
    bounds = {
        name: moment.isoformat()
        for name, moment in (("sales_start_at", start), ("sales_end_at", end))
        if moment is not None  # extensions are left out when they do not apply, never null
    }
    raise SalesClosed(
        f"sales open at {start.isoformat()}" if not_yet else "sales for this event have ended",
        **bounds,
    )


async def _refuse_without_pass(
    conn: asyncpg.Connection,
    event_id: uuid.UUID,
    rows: Sequence[Mapping[str, Any]],
    queue_pass: uuid.UUID | None,
    customer: str,
) -> None:
    """403 `queue-pass-required` when a queued event's hold had no valid pass. Call it only
    when every seat was there and free: the pass is checked, and locked, only then."""
    first = rows[0]
    if first["queued"] and not first["pass_ok"]:
        raise await explain_refused_pass(
            conn, event_id=event_id, place_id=queue_pass, customer=customer
        )


def _refuse_if_waitlisted(rows: Sequence[Mapping[str, Any]], **extensions: Any) -> None:
    """409 `tickets-unavailable` when the seats are free but owed to the waiting list."""
    if rows[0]["waitlisted"]:
        raise TicketsUnavailable(
            "this event was sold out and the seats that come back are offered to its waiting "
            "list first: sign up with POST /events/{id}/waiting-list",
            **extensions,
        )


def _refuse_over_cap(rows: Sequence[Mapping[str, Any]], wanted: int) -> None:
    """409 `customer-limit-reached` when the hold was refused for the customer's cap."""
    first = rows[0]
    cap, holding = first["cap"], first["holding"]
    if cap is not None and holding is not None and holding + wanted > cap:
        raise CustomerLimitReached(
            f"at most {cap} tickets per customer for this event; this customer holds or "
            f"bought {holding} already",
            limit=cap,
            holding=holding,
        )


def _refuse_if_customer_busy(error: asyncpg.LockNotAvailableError) -> None:
    """A lock timeout on the customer's own lock (not on a seat): another hold of the same
    customer is being made at this very moment. A 409 `conflict`: retry when it is done."""
    if "lock_customer_and_count" in (getattr(error, "context", None) or ""):
        raise Conflict(
            "another hold for this customer is being made right now; try again"
        ) from None


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
