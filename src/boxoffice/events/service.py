"""Creating events with their tickets in bulk, and reading them with live counts."""

import json
import uuid

import asyncpg

from boxoffice.db import Database
from boxoffice.errors import EventCancelled, EventNotFound, InvalidRequest
from boxoffice.events.records import EventRow, EventWithSections, SectionRow
from boxoffice.events.schemas import EventCreate, EventUpdate, check_queue, check_sales_window
from boxoffice.idempotency import IdempotencyRequest, claim, finish


def row_labels(count: int) -> list[str]:
    """A, B, … Z, AA, AB, …: the way venues letter their rows."""
    labels = []
    for number in range(1, count + 1):
        label = ""
        while number:
            number, remainder = divmod(number - 1, 26)
            label = chr(ord("A") + remainder) + label
        labels.append(label)
    return labels


# Tickets are generated inside PostgreSQL: one statement per section, no rows shipped over
# the wire, so 60,000 seats take well under a second.
# $1 event, $2 first seat position, $3 seats per row, $4 section, $5 row labels, $6 price.
_INSERT_SECTION = """
INSERT INTO tickets (event_id, position, section, row_label, seat, label, price_minor)
SELECT $1, $2 + (r.n - 1) * $3 + (s - 1), $4, r.label, s, $4 || ' ' || r.label || '-' || s, $6
FROM unnest($5::text[]) WITH ORDINALITY AS r(label, n),
     generate_series(1, $3) AS s
"""
# $1 event, $2 price, $3 how many.
_INSERT_GENERAL_ADMISSION = """
INSERT INTO tickets (event_id, position, label, price_minor)
SELECT $1, n - 1, 'GA ' || n, $2 FROM generate_series(1, $3) AS n
"""
_LONG_STATEMENTS = "SET LOCAL statement_timeout = '120s'"
_INSERT_EVENT = """
INSERT INTO events (name, venue, starts_at, hold_seconds, currency, kind, ticket_count,
                    sales_start_at, sales_end_at, max_tickets_per_customer,
                    queue_enabled, queue_admit_per_minute, queue_max_shoppers,
                    queue_pass_seconds)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
RETURNING id
"""

# An event with its tickets counted by status as buyers see them now.
_EVENT = """
SELECT e.id, e.name, e.venue, e.starts_at, e.hold_seconds, e.currency, e.kind,
       e.ticket_count, e.created_at, c.available, c.reserved, c.booked,
       e.sales_start_at, nullif(coalesce(e.sales_end_at, e.starts_at), 'infinity') AS sales_end_at,
       now() >= coalesce(e.sales_start_at, '-infinity')
       AND now() < coalesce(e.sales_end_at, e.starts_at) AND e.cancelled_at IS NULL AS on_sale,
       e.max_tickets_per_customer, e.queue_enabled, e.queue_admit_per_minute,
       e.queue_max_shoppers, e.queue_pass_seconds, e.cancelled_at
FROM events e
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE ticket_is_free(t.status, t.hold_expires_at)) AS available,
           count(*) FILTER (WHERE ticket_is_held(t.status, t.hold_expires_at)) AS reserved,
           count(*) FILTER (WHERE t.status = 'booked') AS booked
    FROM tickets t WHERE t.event_id = e.id
) c
WHERE e.id = $1
"""

_SECTIONS = """
SELECT t.section AS name, count(*) AS tickets,
       count(*) FILTER (WHERE ticket_is_free(t.status, t.hold_expires_at)) AS available,
       min(t.position) AS first_position
FROM tickets t
WHERE t.event_id = $1 AND t.section IS NOT NULL
GROUP BY t.section
ORDER BY first_position
"""

# Keyset pagination on (starts_at, id): $1 the last event of the previous page (NULL for
# the first page), $2 only those that have not started by the database clock, $3 page size.
_EVENT_PAGE = """
SELECT e.id, e.name, e.venue, e.starts_at, e.hold_seconds, e.currency, e.kind,
       e.ticket_count, e.created_at, c.available, c.reserved, c.booked,
       e.sales_start_at, nullif(coalesce(e.sales_end_at, e.starts_at), 'infinity') AS sales_end_at,
       now() >= coalesce(e.sales_start_at, '-infinity')
       AND now() < coalesce(e.sales_end_at, e.starts_at) AND e.cancelled_at IS NULL AS on_sale,
       e.max_tickets_per_customer, e.queue_enabled, e.queue_admit_per_minute,
       e.queue_max_shoppers, e.queue_pass_seconds, e.cancelled_at
FROM events e
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE ticket_is_free(t.status, t.hold_expires_at)) AS available,
           count(*) FILTER (WHERE ticket_is_held(t.status, t.hold_expires_at)) AS reserved,
           count(*) FILTER (WHERE t.status = 'booked') AS booked
    FROM tickets t WHERE t.event_id = e.id
) c
WHERE ($1::uuid IS NULL OR (e.starts_at, e.id) > (SELECT starts_at, id FROM events WHERE id = $1))
  AND (NOT $2 OR e.starts_at > now())
ORDER BY e.starts_at, e.id
LIMIT $3
"""


async def create_event(
    db: Database,
    *,
    event: EventCreate,
    default_hold_seconds: int,
    max_tickets: int,
    idempotency: IdempotencyRequest | None = None,
) -> uuid.UUID:
    if event.ticket_count > max_tickets:
        raise InvalidRequest(
            f"{event.ticket_count} tickets is more than the limit of {max_tickets} per event"
        )
    async with db.transaction() as conn:
        # Generating up to MAX_TICKETS_PER_EVENT seats is one admin's bulk insert, not a
        # buyer's statement: it may take longer than STATEMENT_TIMEOUT_MS on a busy server.
        await conn.execute(_LONG_STATEMENTS)
        if idempotency is not None:
            await claim(conn, idempotency)
        event_id: uuid.UUID = await conn.fetchval(
            _INSERT_EVENT,
            event.name,
            event.venue,
            event.starts_at,
            event.hold_seconds or default_hold_seconds,
            event.currency,
            "seated" if event.sections else "general_admission",
            event.ticket_count,
            event.sales_start_at,
            event.sales_end_at,
            event.max_tickets_per_customer,
            event.queue_enabled,
            event.queue_admit_per_minute,
            event.queue_max_shoppers,
            event.queue_pass_seconds,
        )
        if event.general_admission is not None:
            await conn.execute(
                _INSERT_GENERAL_ADMISSION,
                event_id,
                event.general_admission.price,
                event.general_admission.quantity,
            )
        first_position = 0
        for section in event.sections or []:
            await conn.execute(
                _INSERT_SECTION,
                event_id,
                first_position,
                section.seats_per_row,
                section.name,
                row_labels(section.rows),
                section.price,
            )
            first_position += section.rows * section.seats_per_row
        if idempotency is not None:
            # The answer is the new event as this transaction sees it: the key commits with it.
            await finish(conn, idempotency, await _event_on(conn, event_id))
    return event_id


# The event's settings, locked: two edits of one event apply one after the other, and an
# edit waits for a cancellation that is being committed (and then refuses). NO KEY UPDATE:
# holds being made meanwhile (their insert share-locks the event's key) do not wait for it.
_EDITABLE = """
SELECT name, venue, starts_at, hold_seconds, sales_start_at,
       nullif(sales_end_at, 'infinity') AS sales_end_at, sales_end_at = 'infinity' AS endless,
       max_tickets_per_customer, queue_enabled, queue_admit_per_minute, queue_max_shoppers,
       queue_pass_seconds, cancelled_at IS NOT NULL AS cancelled
FROM events WHERE id = $1
FOR NO KEY UPDATE
"""
_UPDATE_EVENT = """
UPDATE events SET name = $2, venue = $3, starts_at = $4, hold_seconds = $5,
                  sales_start_at = $6, sales_end_at = coalesce($7, CASE WHEN $13 THEN
                  'infinity'::timestamptz END), max_tickets_per_customer = $8,
                  queue_enabled = $9, queue_admit_per_minute = $10, queue_max_shoppers = $11,
                  queue_pass_seconds = $12
WHERE id = $1
"""
_AUDIT = """
INSERT INTO audit_log (actor, action, event_id, details) VALUES ($1, $2, $3, $4::jsonb)
"""


async def update_sale_settings(
    db: Database, *, event_id: uuid.UUID, changes: EventUpdate, actor: str = "admin"
) -> EventWithSections:
    """Change the event's details and on-sale controls that `changes` names (null clears
    one); the others keep their value. The audit log records what was asked.

    A lower cap does not take back what customers hold or bought already: it refuses their
    next holds until they are under it. A new `hold_seconds` applies to new holds only."""
    asked = changes.model_dump(mode="json", exclude_unset=True)
    async with db.transaction() as conn:
        current = await conn.fetchrow(_EDITABLE, event_id)
        if current is None:
            raise EventNotFound(f"no event {event_id}")
        if current["cancelled"]:
            raise EventCancelled("the event was cancelled; it can no longer be changed")
        merged = {**dict(current), **changes.model_dump(exclude_unset=True)}
        # The original demo's events sell for ever (seed.py) until an edit sets an end.
        endless = current["endless"] and "sales_end_at" not in changes.model_fields_set
        try:
            if not endless:
                check_sales_window(
                    merged["starts_at"], merged["sales_start_at"], merged["sales_end_at"]
                )
            check_queue(
                merged["queue_enabled"],
                merged["queue_admit_per_minute"],
                merged["queue_max_shoppers"],
            )
        except ValueError as wrong:
            raise InvalidRequest(str(wrong)) from None
        try:
            await conn.execute(
                _UPDATE_EVENT,
                event_id,
                merged["name"],
                merged["venue"],
                merged["starts_at"],
                merged["hold_seconds"],
                merged["sales_start_at"],
                merged["sales_end_at"],
                merged["max_tickets_per_customer"],
                merged["queue_enabled"],
                merged["queue_admit_per_minute"],
                merged["queue_max_shoppers"],
                merged["queue_pass_seconds"],
                endless,
            )
        except asyncpg.CheckViolationError as refused:
            # The checks above mirror the table's; should they ever drift apart, the edit is
            # still the client's mistake to hear about, not a server error.
            raise InvalidRequest(
                f"the event cannot be changed so: {refused.constraint_name}"
            ) from None
        await conn.execute(_AUDIT, actor, "event-updated", event_id, json.dumps(asked))
        return await _event_on(conn, event_id)


async def get_event(db: Database, *, event_id: uuid.UUID) -> EventWithSections:
    """The event with its counts by status, and each section's size and free seats."""
    async with db.connection() as conn:
        return await _event_on(conn, event_id)


async def _event_on(conn: asyncpg.Connection, event_id: uuid.UUID) -> EventWithSections:
    record = await conn.fetchrow(_EVENT, event_id)
    if record is None:
        raise EventNotFound(f"no event {event_id}")
    sections = [SectionRow.of(r) for r in await conn.fetch(_SECTIONS, event_id)]
    return EventWithSections(EventRow.of(record), sections)


async def list_events(
    db: Database, *, limit: int, after: uuid.UUID | None, upcoming: bool = False
) -> tuple[list[EventRow], uuid.UUID | None]:
    """Events by start time (keyset pages); `upcoming`: only those not started yet."""
    async with db.connection() as conn:
        if after is not None and not await conn.fetchval(
            "SELECT 1 FROM events WHERE id = $1", after
        ):
            raise InvalidRequest(f"`after` names no event: {after}")
        records = await conn.fetch(_EVENT_PAGE, after, upcoming, limit + 1)
    rows = [EventRow.of(r) for r in records[:limit]]
    return rows, (rows[-1].id if len(records) > limit else None)
