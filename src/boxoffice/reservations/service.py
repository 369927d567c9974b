"""Every change of a ticket's state happens here, under row locks taken in a fixed order.

Lock order, the same in every transaction so none can deadlock another:
  reserve:          tickets, in id order (chosen) or SKIP LOCKED (best available)
  confirm, release: the reservation row first, then its tickets in id order
  sweep:            SKIP LOCKED everywhere, so it never waits for anyone
The database clock (`now()`) is the only clock: a hold is expired when
`hold_expires_at <= now()`, and such a ticket is free at once, swept or not.
"""

import base64
import hashlib
import hmac
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from boxoffice.errors import (
    Conflict,
    EventNotFound,
    InvalidRequest,
    ReservationExpired,
    ReservationNotActive,
    ReservationNotFound,
    TicketsUnavailable,
    UnknownSection,
    UnknownTickets,
    sqlstate,
)
from boxoffice.idempotency import (
    DELETE_EXPIRED_KEYS,
    IdempotencyRequest,
    claim,
    claim_pg,
    finish,
    finish_pg,
)
from boxoffice.pg import Statement, driver_connection, fetch
from boxoffice.retention import prune_history
from boxoffice.tickets.sql import IS_AVAILABLE, TICKET_COLUMNS

LOCK_NOT_AVAILABLE = "55P03"


@dataclass(frozen=True)
class Hold:
    """A new reservation as the buyer sees it; the only time its token is ever shown."""

    reservation_id: uuid.UUID
    event_id: uuid.UUID
    customer: str
    token: str
    created_at: datetime
    expires_at: datetime
    currency: str
    tickets: list[Any]


def new_token() -> tuple[str, bytes]:
    """A random bearer token and the hash we store; the token itself is never stored."""
    token = secrets.token_urlsafe(32)
    return token, hash_token(token)


def token_for_key(secret: bytes, idempotency_key: str, scope: str, request_hash: bytes) -> str:
    """The token of a hold made with an Idempotency-Key, derived from the key.

    A replay must hand the buyer the same token, yet no token may be stored. Keyed by the
    server secret, which the database never holds, over the key, which only the buyer and
    its requests know: neither a database backup nor someone who knows the key and the body
    can compute it offline (a replay still hands it to whoever sends the key and the body,
    which is why keys must carry 128 random bits).
    """
    message = (
        b"boxoffice hold token\0"
        + idempotency_key.encode()
        + b"\0"
        + scope.encode()
        + b"\0"
        + request_hash
    )
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _token_pair(token: str | None) -> tuple[str, bytes]:
    """The given token (a keyed request's) and its hash, or a new random one."""
    return (token, hash_token(token)) if token is not None else new_token()


def token_matches(token: str | None, stored_hash: bytes) -> bool:
    return token is not None and hmac.compare_digest(hash_token(token), bytes(stored_hash))


# A reservation is ONE statement, so it costs one round trip (no BEGIN, no COMMIT) and its
# locks last exactly as long as it runs. Its parts, in the order PostgreSQL runs them:
#   locked           the lock query (below); FOR UPDATE returns each row as it is now, after
#                    any wait, so the checks that follow see the truth
#   new_reservation  inserted only when every ticket is there and free: all or nothing
#   held, links      claim the locked tickets; the update finds each row's newest version
#   audit            one row per change, recording a hold that expired under a ticket too
# The final SELECT answers with the locked tickets and, if it was made, the reservation.
_RESERVE = """
    WITH locked AS ({lock}),
    verdict AS (SELECT {enough} AS ok FROM locked),
    new_reservation AS (
        INSERT INTO reservations (event_id, customer, token_hash, ticket_count, expires_at)
        SELECT e.id, :customer, :token_hash, (SELECT count(*) FROM locked),
               now() + make_interval(secs => e.hold_seconds)
        FROM events e, verdict WHERE e.id = :event_id AND verdict.ok
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
           (SELECT currency FROM events WHERE id = :event_id) AS currency
    FROM locked l LEFT JOIN new_reservation r ON true
    ORDER BY l.id
"""

_LOCKED_COLUMNS = (
    "t.id, t.label, t.section, t.row_label, t.seat, t.price_minor, t.status,"
    f" t.reservation_id, {IS_AVAILABLE} AS available"
)

# FOR UPDATE in id order: overlapping multi-ticket holds queue in one direction and can never
# deadlock. A busy row fails fast (NOWAIT, or the session's short lock_timeout) rather than
# queueing buyers behind a winner they cannot beat.
LOCK_CHOSEN_TICKETS = (
    f"SELECT {_LOCKED_COLUMNS}"
    " FROM tickets t WHERE t.id = ANY(CAST(:ids AS bigint[])) AND t.event_id = :event_id"
    " ORDER BY t.id FOR UPDATE"
)

# SKIP LOCKED: concurrent buyers of one event take different rows instead of queueing on the
# same few. Free rows first, through the partial index on available tickets...
LOCK_BEST_AVAILABLE = (
    f"SELECT {_LOCKED_COLUMNS} FROM tickets t"
    " WHERE t.event_id = :event_id AND t.status = 'available'{section}"
    " ORDER BY t.position LIMIT :n FOR UPDATE SKIP LOCKED"
)
# ...and only when those run short, free seats that include holds which expired but have not
# been swept yet (those are free too). The OR costs an index filter, hence the two queries.
LOCK_BEST_INCLUDING_EXPIRED = (
    f"SELECT {_LOCKED_COLUMNS} FROM tickets t"
    f" WHERE t.event_id = :event_id AND {IS_AVAILABLE}{{section}}"
    " ORDER BY t.position LIMIT :n FOR UPDATE SKIP LOCKED"
)

_ALL_CHOSEN_FREE = "count(*) = cardinality(CAST(:ids AS bigint[])) AND bool_and(available)"
_ENOUGH = "count(*) = :n"

RESERVE_CHOSEN = _RESERVE.format(lock=LOCK_CHOSEN_TICKETS, enough=_ALL_CHOSEN_FREE)
RESERVE_BEST_AVAILABLE = _RESERVE.format(
    lock=LOCK_BEST_AVAILABLE.format(section=""), enough=_ENOUGH
)

# What one reservation runs, in order, in one transaction: the benchmark replays exactly this
# through pgbench to measure what the database alone can do.
RESERVE_CHOSEN_STATEMENTS = (RESERVE_CHOSEN,)
RESERVE_BEST_AVAILABLE_STATEMENTS = (RESERVE_BEST_AVAILABLE,)

_RESERVE_CHOSEN = Statement.from_named(RESERVE_CHOSEN)
_RESERVE_CHOSEN_NOWAIT = Statement.from_named(
    _RESERVE.format(lock=LOCK_CHOSEN_TICKETS + " NOWAIT", enough=_ALL_CHOSEN_FREE)
)
_SECTION = " AND t.section = :section"
_RESERVE_BEST = {
    (has_section, include_expired): Statement.from_named(
        _RESERVE.format(
            lock=(LOCK_BEST_INCLUDING_EXPIRED if include_expired else LOCK_BEST_AVAILABLE).format(
                section=_SECTION if has_section else ""
            ),
            enough=_ENOUGH,
        )
    )
    for has_section in (False, True)
    for include_expired in (False, True)
}
_EVENT_EXISTS = Statement.from_named("SELECT 1 FROM events WHERE id = :event_id")
_SECTION_EXISTS = Statement.from_named(
    "SELECT 1 FROM tickets WHERE event_id = :event_id AND section = :section LIMIT 1"
)


@asynccontextmanager
async def _keyed_connection(
    engine: AsyncEngine, idempotency: IdempotencyRequest | None
) -> AsyncIterator[asyncpg.Connection]:
    """The hot path's connection. Without an Idempotency-Key a reservation stays one
    autocommitted statement (one round trip); with one, the key's claim, the reservation and
    the stored answer share a transaction, so they commit or vanish together."""
    async with driver_connection(engine) as conn:
        if idempotency is None:
            yield conn
            return
        async with conn.transaction():
            await claim_pg(conn, idempotency)
            yield conn


def _hold_from(rows: list[Any], *, event_id: uuid.UUID, customer: str, token: str) -> Hold:
    first = rows[0]
    return Hold(
        reservation_id=first["reservation_id"],
        event_id=event_id,
        customer=customer,
        token=token,
        created_at=first["created_at"],
        expires_at=first["expires_at"],
        currency=first["currency"],
        tickets=rows,
    )


async def reserve_tickets(
    engine: AsyncEngine,
    *,
    event_id: uuid.UUID,
    ticket_ids: list[int],
    customer: str,
    nowait: bool,
    idempotency: IdempotencyRequest | None = None,
    token: str | None = None,
) -> Hold:
    """Hold exactly these tickets, all or none; 409 listing any that are taken."""
    ids = sorted(set(ticket_ids))
    token, token_hash = _token_pair(token)
    async with _keyed_connection(engine, idempotency) as conn:
        try:
            rows = await fetch(
                conn,
                _RESERVE_CHOSEN_NOWAIT if nowait else _RESERVE_CHOSEN,
                event_id=event_id,
                ids=ids,
                customer=customer,
                token_hash=token_hash,
            )
        except asyncpg.LockNotAvailableError:
            raise TicketsUnavailable(
                "another buyer is reserving some of these tickets right now", ticket_ids=ids
            ) from None
        if not rows and not await fetch(conn, _EVENT_EXISTS, event_id=event_id):
            raise EventNotFound(f"no event {event_id}")
        if len(rows) != len(ids):
            unknown = sorted(set(ids) - {row["id"] for row in rows})
            raise UnknownTickets(
                f"{len(unknown)} ticket(s) are not tickets of this event", ticket_ids=unknown
            )
        taken = [row["id"] for row in rows if not row["available"]]
        if taken:
            raise TicketsUnavailable(
                f"{len(taken)} of the requested tickets are already held or sold", ticket_ids=taken
            )
        assert rows[0]["reservation_id"] is not None, "free tickets, all found: held"
        hold = _hold_from(rows, event_id=event_id, customer=customer, token=token)
        if idempotency is not None:
            await finish_pg(conn, idempotency, hold)
        return hold


async def reserve_best_available(
    engine: AsyncEngine,
    *,
    event_id: uuid.UUID,
    quantity: int,
    section: str | None,
    customer: str,
    idempotency: IdempotencyRequest | None = None,
    token: str | None = None,
) -> Hold:
    """Hold the best `quantity` free tickets (seat order), all or none."""
    token, token_hash = _token_pair(token)
    where: dict[str, Any] = {"event_id": event_id}
    if section is not None:
        where["section"] = section
    async with _keyed_connection(engine, idempotency) as conn:
        for include_expired in (False, True):
            statement = _RESERVE_BEST[section is not None, include_expired]
            try:
                rows = await fetch(
                    conn, statement, **where, n=quantity, customer=customer, token_hash=token_hash
                )
            except asyncpg.LockNotAvailableError:
                # SKIP LOCKED still waits when it follows a row another buyer just changed;
                # past the lock timeout the seats are contended, not gone: a clean 409.
                raise TicketsUnavailable(
                    "other buyers are taking these seats right now; try again",
                    requested=quantity,
                ) from None
            if len(rows) == quantity:
                assert rows[0]["reservation_id"] is not None, "enough free tickets: held"
                hold = _hold_from(rows, event_id=event_id, customer=customer, token=token)
                if idempotency is not None:
                    await finish_pg(conn, idempotency, hold)
                return hold
        if not await fetch(conn, _EVENT_EXISTS, event_id=event_id):
            raise EventNotFound(f"no event {event_id}")
        if section is not None and not await fetch(conn, _SECTION_EXISTS, **where):
            raise UnknownSection(f"the event has no section {section!r}")
    in_section = f" in section {section!r}" if section is not None else ""
    raise TicketsUnavailable(
        f"only {len(rows)} of {quantity} tickets{in_section} are free right now",
        requested=quantity,
        free=len(rows),
    )


_RESERVATION_COLUMNS = (
    "r.id, r.event_id, r.customer, r.token_hash, r.ticket_count, r.created_at, r.expires_at,"
    " r.ended_at, r.status AS stored_status,"
    " CASE WHEN r.status = 'active' AND r.expires_at <= now() THEN 'expired'"
    " ELSE r.status::text END AS status,"
    " (r.status = 'active' AND r.expires_at <= now()) AS hold_expired"
)


async def _reservation_for_holder(
    conn: AsyncConnection, *, reservation_id: uuid.UUID, token: str | None, lock: bool
) -> Any:
    query = f"SELECT {_RESERVATION_COLUMNS} FROM reservations r WHERE r.id = :id"
    # Confirm and release lock the reservation row before any ticket (see module docstring).
    result = await conn.execute(
        text(query + (" FOR UPDATE" if lock else "")), {"id": reservation_id}
    )
    row = result.first()
    # A wrong token gets the same answer as an unknown id: strangers learn nothing.
    if row is None or not token_matches(token, row.token_hash):
        raise ReservationNotFound(f"no reservation {reservation_id} for this token")
    return row


async def _reservation_tickets(conn: AsyncConnection, reservation_id: uuid.UUID) -> list[Any]:
    result = await conn.execute(
        text(
            f"SELECT {TICKET_COLUMNS}, e.currency FROM reservation_tickets rt"
            " JOIN tickets t ON t.id = rt.ticket_id JOIN events e ON e.id = t.event_id"
            " WHERE rt.reservation_id = :id ORDER BY t.position"
        ),
        {"id": reservation_id},
    )
    return list(result.all())


async def _booking(conn: AsyncConnection, reservation_id: uuid.UUID) -> Any:
    result = await conn.execute(
        text(
            "SELECT id, reservation_id, event_id, customer, payment_reference, total_minor,"
            " currency, created_at FROM bookings WHERE reservation_id = :id"
        ),
        {"id": reservation_id},
    )
    return result.first()


@dataclass(frozen=True)
class ReservationView:
    reservation: Any
    tickets: list[Any]
    booking: Any | None


async def get_reservation(
    engine: AsyncEngine, *, reservation_id: uuid.UUID, token: str | None
) -> ReservationView:
    async with engine.connect() as conn:
        row = await _reservation_for_holder(
            conn, reservation_id=reservation_id, token=token, lock=False
        )
        tickets = await _reservation_tickets(conn, reservation_id)
        booking = await _booking(conn, reservation_id) if row.status == "confirmed" else None
        return ReservationView(reservation=row, tickets=tickets, booking=booking)


async def reservation_status(engine: AsyncEngine, reservation_id: str) -> str | None:
    """A reservation's status as a holder sees it now (an active hold past its expiry is
    `expired`), for replays of its creation; None if it is gone."""
    async with engine.connect() as conn:
        result = await conn.execute(
            text(
                "SELECT CASE WHEN status = 'active' AND expires_at <= now() THEN 'expired'"
                " ELSE status::text END FROM reservations WHERE id = CAST(:id AS uuid)"
            ),
            {"id": reservation_id},
        )
        status: str | None = result.scalar()
    return status


def _refuse_unless_active(row: Any) -> None:
    if row.hold_expired or row.stored_status == "expired":
        raise ReservationExpired(
            f"the hold expired at {row.expires_at.isoformat()}; reserve again",
            expires_at=row.expires_at.isoformat(),
        )
    if row.stored_status != "active":
        raise ReservationNotActive(
            f"the reservation is {row.stored_status}", reservation_status=row.stored_status
        )


async def _lock_own_tickets(conn: AsyncConnection, row: Any) -> list[int]:
    """Lock the tickets this hold still owns, in id order; refuse if any slipped away."""
    result = await conn.execute(
        text(
            "SELECT t.id FROM tickets t WHERE t.reservation_id = :id AND t.status = 'reserved'"
            " ORDER BY t.id FOR UPDATE"
        ),
        {"id": row.id},
    )
    ids = list(result.scalars().all())
    # A ticket is only taken from an active hold after its expiry passed, so a short count
    # means the hold expired between our check and our lock.
    if len(ids) != row.ticket_count:
        raise ReservationExpired(
            "the hold expired while confirming; reserve again",
            expires_at=row.expires_at.isoformat(),
        )
    return ids


async def _locked_reservation(
    conn: AsyncConnection, reservation_id: uuid.UUID, token: str | None
) -> Any:
    try:
        return await _reservation_for_holder(
            conn, reservation_id=reservation_id, token=token, lock=True
        )
    except DBAPIError as error:
        if sqlstate(error) == LOCK_NOT_AVAILABLE:
            raise Conflict("another request is changing this reservation; retry") from None
        raise


async def confirm(
    engine: AsyncEngine,
    *,
    reservation_id: uuid.UUID,
    token: str | None,
    payment_reference: str,
    idempotency: IdempotencyRequest | None = None,
) -> ReservationView:
    """Turn an active hold into a booking; its tickets become booked."""
    async with engine.begin() as conn:
        if idempotency is not None:
            # Before the reservation's lock: concurrent retries queue on the key, not the row.
            await claim(conn, idempotency)
        row = await _locked_reservation(conn, reservation_id, token)
        if row.stored_status == "confirmed":
            booking = await _booking(conn, reservation_id)
            raise ReservationNotActive(
                "the reservation is already confirmed",
                reservation_status="confirmed",
                booking_id=str(booking.id),
            )
        _refuse_unless_active(row)
        ticket_ids = await _lock_own_tickets(conn, row)
        await conn.execute(
            text(
                """
                WITH booking AS (
                    INSERT INTO bookings (reservation_id, event_id, customer, payment_reference,
                                          total_minor, currency)
                    SELECT :id, e.id, :customer, :payment_reference,
                           (SELECT coalesce(sum(price_minor), 0) FROM tickets
                            WHERE id = ANY(CAST(:ticket_ids AS bigint[]))),
                           e.currency
                    FROM events e WHERE e.id = :event_id
                    RETURNING id
                ), booked AS (
                    UPDATE tickets t SET status = 'booked', booking_id = b.id,
                                         hold_expires_at = NULL
                    FROM booking b WHERE t.id = ANY(CAST(:ticket_ids AS bigint[]))
                    RETURNING t.id, t.event_id, b.id AS booking_id
                ), audit AS (
                    INSERT INTO ticket_audit (ticket_id, event_id, from_status, to_status,
                                              reason, reservation_id, booking_id)
                    SELECT id, event_id, 'reserved', 'booked', 'confirmed', :id, booking_id
                    FROM booked ORDER BY id
                )
                UPDATE reservations SET status = 'confirmed', ended_at = now() WHERE id = :id
                """
            ),
            {
                "id": reservation_id,
                "event_id": row.event_id,
                "customer": row.customer,
                "payment_reference": payment_reference,
                "ticket_ids": ticket_ids,
            },
        )
        tickets = await _reservation_tickets(conn, reservation_id)
        booking = await _booking(conn, reservation_id)
        refreshed = await _reservation_for_holder(
            conn, reservation_id=reservation_id, token=token, lock=False
        )
        view = ReservationView(reservation=refreshed, tickets=tickets, booking=booking)
        if idempotency is not None:
            await finish(conn, idempotency, view)
        return view


async def release(engine: AsyncEngine, *, reservation_id: uuid.UUID, token: str | None) -> None:
    """Give the tickets back at once; releasing twice is fine, releasing a booking is not."""
    async with engine.begin() as conn:
        row = await _locked_reservation(conn, reservation_id, token)
        if row.stored_status == "released":
            return
        _refuse_unless_active(row)
        await _lock_own_tickets(conn, row)
        await conn.execute(
            text(
                """
                WITH freed AS (
                    UPDATE tickets t SET status = 'available', reservation_id = NULL,
                                         hold_expires_at = NULL
                    WHERE t.reservation_id = :id AND t.status = 'reserved'
                    RETURNING t.id, t.event_id
                ), audit AS (
                    INSERT INTO ticket_audit (ticket_id, event_id, from_status, to_status,
                                              reason, reservation_id)
                    SELECT id, event_id, 'reserved', 'available', 'released', :id
                    FROM freed ORDER BY id
                )
                UPDATE reservations SET status = 'released', ended_at = now() WHERE id = :id
                """
            ),
            {"id": reservation_id},
        )


# SKIP LOCKED in both statements: a hold someone is confirming, releasing or re-taking right
# now is theirs to settle; the sweeper never waits, so it never slows a buyer, and any number
# of sweepers (one per worker) each free a given hold at most once.
_FREE_EXPIRED_TICKETS = text(
    """
    WITH expired AS (
        SELECT t.id FROM tickets t
        WHERE t.status = 'reserved' AND t.hold_expires_at <= now()
        ORDER BY t.hold_expires_at
        LIMIT :batch
        FOR UPDATE SKIP LOCKED
    ), freed AS (
        UPDATE tickets t SET status = 'available', reservation_id = NULL, hold_expires_at = NULL
        FROM expired, tickets old
        WHERE t.id = expired.id AND old.id = t.id
        RETURNING t.id, t.event_id, old.reservation_id
    ), audit AS (
        INSERT INTO ticket_audit (ticket_id, event_id, from_status, to_status, reason,
                                  reservation_id)
        SELECT id, event_id, 'reserved', 'available', 'expired', reservation_id
        FROM freed ORDER BY id
    )
    SELECT count(*) FROM freed
    """
)

_MARK_EXPIRED_RESERVATIONS = text(
    """
    WITH expired AS (
        SELECT r.id FROM reservations r
        WHERE r.status = 'active' AND r.expires_at <= now()
        ORDER BY r.expires_at
        LIMIT :batch
        FOR UPDATE SKIP LOCKED
    )
    UPDATE reservations r SET status = 'expired', ended_at = now()
    FROM expired WHERE r.id = expired.id
    RETURNING r.id
    """
)


@dataclass(frozen=True)
class SweepResult:
    tickets_freed: int
    reservations_expired: int


async def free_expired_holds(engine: AsyncEngine, *, batch_size: int) -> SweepResult:
    """Free tickets of expired holds and mark those holds expired, one batch each; and
    delete one batch of idempotency keys past their 24 hours, and one of unsold holds past
    HISTORY_RETENTION_HOURS (boxoffice.retention)."""
    async with engine.begin() as conn:
        tickets_freed = (await conn.execute(_FREE_EXPIRED_TICKETS, {"batch": batch_size})).scalar()
    async with engine.begin() as conn:
        expired = await conn.execute(_MARK_EXPIRED_RESERVATIONS, {"batch": batch_size})
        reservations_expired = len(expired.all())
    async with engine.begin() as conn:
        await conn.execute(DELETE_EXPIRED_KEYS, {"batch": batch_size})
    await prune_history(engine, batch_size=batch_size)
    return SweepResult(int(tickets_freed or 0), reservations_expired)


async def sweep_all(engine: AsyncEngine, *, batch_size: int) -> SweepResult:
    """Sweep batch after batch until nothing expired is left."""
    tickets = reservations = 0
    while True:
        result = await free_expired_holds(engine, batch_size=batch_size)
        tickets += result.tickets_freed
        reservations += result.reservations_expired
        if result.tickets_freed < batch_size and result.reservations_expired < batch_size:
            return SweepResult(tickets, reservations)


def validate_ticket_ids(ticket_ids: list[int], max_per_hold: int) -> None:
    if len(set(ticket_ids)) != len(ticket_ids):
        raise InvalidRequest("ticket_ids must not repeat a ticket")
    if len(ticket_ids) > max_per_hold:
        raise InvalidRequest(f"at most {max_per_hold} tickets per hold")


async def reset_to_unsold(conn: AsyncConnection, event_ids: list[uuid.UUID]) -> int:
    """Put every ticket of these events back on sale as if none had ever been sold.

    For the original demo's data only (`boxoffice seed --demo-data`): its clients expect to
    find its tickets free after a re-seed. Their holds, bookings and audit rows are deleted,
    not ended, so the events look freshly seeded; returns how many tickets were claimed.
    Runs in the caller's transaction. Lock order as confirm and release: the reservation rows
    first, then the tickets in id order, so a buyer's confirm or release in flight cannot
    deadlock with it; waiting a few seconds for them is fine here, so the short buyer-facing
    lock_timeout is lifted for this transaction.
    """
    await conn.execute(text("SET LOCAL lock_timeout = '5s'"))
    ids = {"event_ids": event_ids}
    await conn.execute(
        text(
            "SELECT id FROM reservations WHERE event_id = ANY(CAST(:event_ids AS uuid[]))"
            " ORDER BY id FOR UPDATE"
        ),
        ids,
    )
    await conn.execute(
        text(
            "SELECT id FROM tickets WHERE event_id = ANY(CAST(:event_ids AS uuid[]))"
            " ORDER BY id FOR UPDATE"
        ),
        ids,
    )
    claimed = await conn.execute(
        text(
            "UPDATE tickets SET status = 'available', reservation_id = NULL,"
            " hold_expires_at = NULL, booking_id = NULL"
            " WHERE event_id = ANY(CAST(:event_ids AS uuid[])) AND status <> 'available'"
            " RETURNING id"
        ),
        ids,
    )
    for table in ("ticket_audit", "bookings", "reservation_tickets", "reservations"):
        await conn.execute(
            text(f"DELETE FROM {table} WHERE event_id = ANY(CAST(:event_ids AS uuid[]))"), ids
        )
    return len(claimed.all())
