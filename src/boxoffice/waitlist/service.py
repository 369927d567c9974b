"""The waiting list: sign up for a sold-out event, be offered a seat that comes back.

While anybody waits, the event's free seats are not on open sale (the hold statement refuses
them, `boxoffice.reservations.reserve`); the offerer, run by the admitter (one at a time
across workers), holds them for the next entry in line instead. The offer is an ordinary
hold whose token is the entry's token: the buyer reads and pays for it like any hold, and if
it lapses unpaid its seats go to the next entry.
"""

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Self

from boxoffice.db import Database
from boxoffice.errors import (
    Conflict,
    CustomerLimitReached,
    EventNotFound,
    NotFound,
    SalesClosed,
    TicketsUnavailable,
)
from boxoffice.reservations.reserve import reserve_best_available
from boxoffice.signed_ids import sign_id, signed_id_of

logger = logging.getLogger(__name__)


class NotSoldOut(Conflict):
    slug = "not-sold-out"
    title = "Tickets are on sale"


class AlreadyWaiting(Conflict):
    slug = "already-waiting"
    title = "This customer is on the waiting list already"


class WaitingListEntryNotFound(NotFound):
    """Also the answer to a wrong token: a stranger learns nothing about the entry."""

    slug = "waiting-list-entry-not-found"
    title = "Waiting-list entry not found"


_ENTRY_TOKEN = b"waiting-list"


def entry_token(secret: bytes, entry_id: uuid.UUID) -> str:
    """The entry's token, `<id>.<signature>`; an offer's hold takes it as its own token."""
    return sign_id(secret, _ENTRY_TOKEN, entry_id)


def token_names(secret: bytes, token: str, entry_id: uuid.UUID) -> bool:
    return signed_id_of(secret, _ENTRY_TOKEN, token) == entry_id


# Open to a sign-up while the event is on sale and has nothing free (counting lapsed holds
# as free), or somebody waits already (then what is free is theirs). One live entry per
# customer: the partial unique index makes a second one insert nothing.
_SIGN_UP = """
WITH e AS (
    SELECT e.id FROM events e
    WHERE e.id = $1
      AND now() >= coalesce(e.sales_start_at, '-infinity')
      AND now() < coalesce(e.sales_end_at, e.starts_at)
      AND (
          EXISTS (SELECT 1 FROM waiting_list w WHERE w.event_id = e.id AND w.status = 'waiting')
          OR NOT EXISTS (
              SELECT 1 FROM tickets t
              WHERE t.event_id = e.id AND ticket_is_free(t.status, t.hold_expires_at)
          )
      )
)
INSERT INTO waiting_list (id, event_id, customer, quantity)
SELECT $2, e.id, $3, $4 FROM e
ON CONFLICT (event_id, customer_key) WHERE status IN ('waiting', 'offered') DO NOTHING
RETURNING id
"""
_WHY_NOT = """
SELECT now() >= coalesce(sales_start_at, '-infinity')
       AND now() < coalesce(sales_end_at, starts_at) AS on_sale
FROM events WHERE id = $1
"""
_HAS_LIVE_ENTRY = """
SELECT 1 FROM waiting_list
WHERE event_id = $1 AND customer_key = lower(btrim($2)) AND status IN ('waiting', 'offered')
"""

# An entry as its holder sees it: `offered` becomes `claimed` once paid and `lapsed` once
# the offer ran out or was released.
_ENTRY = """
SELECT w.id, w.event_id, w.customer, w.quantity, w.joined_at, w.offered_at, w.reservation_id,
       CASE WHEN w.status <> 'offered' THEN w.status
            WHEN r.status = 'confirmed' THEN 'claimed'
            WHEN r.status = 'active' AND r.expires_at > now() THEN 'offered'
            ELSE 'lapsed' END AS status,
       CASE WHEN w.status = 'offered' THEN r.expires_at END AS offer_expires_at,
       CASE WHEN w.status = 'waiting' THEN (
           SELECT count(*) FROM waiting_list o
           WHERE o.event_id = w.event_id AND o.status = 'waiting' AND o.seq < w.seq
       ) + 1 END AS position
FROM waiting_list w LEFT JOIN reservations r ON r.id = w.reservation_id
WHERE w.id = $1 AND w.event_id = $2
"""


@dataclass(frozen=True, slots=True)
class Entry:
    id: uuid.UUID
    event_id: uuid.UUID
    customer: str
    quantity: int
    joined_at: datetime
    offered_at: datetime | None
    reservation_id: uuid.UUID | None
    # waiting, offered, claimed, lapsed, skipped (the customer's cap), left
    status: str
    offer_expires_at: datetime | None
    position: int | None

    @classmethod
    def of(cls, record: Any) -> Self:
        return cls(**record)


async def sign_up(db: Database, *, event_id: uuid.UUID, customer: str, quantity: int) -> uuid.UUID:
    entry_id = uuid.uuid4()
    async with db.connection() as conn:
        if await conn.fetchval(_SIGN_UP, event_id, entry_id, customer, quantity) is not None:
            return entry_id
        why = await conn.fetchrow(_WHY_NOT, event_id)
        if why is None:
            raise EventNotFound(f"no event {event_id}")
        if not why["on_sale"]:
            raise SalesClosed("this event is not on sale")
        if await conn.fetchval(_HAS_LIVE_ENTRY, event_id, customer):
            raise AlreadyWaiting("this customer is on this event's waiting list already")
    raise NotSoldOut("tickets are free right now: reserve them instead")


async def get_entry(db: Database, *, event_id: uuid.UUID, entry_id: uuid.UUID) -> Entry:
    record = await db.fetchrow(_ENTRY, entry_id, event_id)
    if record is None:
        raise WaitingListEntryNotFound(f"no waiting-list entry {entry_id} for this event")
    return Entry.of(record)


async def leave(db: Database, *, event_id: uuid.UUID, entry_id: uuid.UUID) -> None:
    """Leave the list (a waiting entry only: an offer is a hold, released as one)."""
    left = await db.fetchval(
        "UPDATE waiting_list SET status = 'left'"
        " WHERE id = $1 AND event_id = $2 AND status = 'waiting' RETURNING 1",
        entry_id,
        event_id,
    )
    if left is None:
        await get_entry(db, event_id=event_id, entry_id=entry_id)  # 404 if there is none


# --- the offerer -------------------------------------------------------------------------------

_EVENTS_WAITING = "SELECT DISTINCT event_id FROM waiting_list WHERE status = 'waiting'"
_NEXT_IN_LINE = """
SELECT id, customer, quantity FROM waiting_list
WHERE event_id = $1 AND status = 'waiting'
ORDER BY seq
LIMIT 1
"""
_SKIP = "UPDATE waiting_list SET status = 'skipped' WHERE id = $1 AND status = 'waiting'"


async def offer_returned_seats(db: Database, *, secret: bytes) -> int:
    """Hold what is free of each event with a waiting list for the entries in line, first
    come first served; stop at an entry there are not enough seats for (it keeps its turn).
    How many offers were made."""
    offers = 0
    for row in await db.fetch(_EVENTS_WAITING):
        event_id = row["event_id"]
        while (entry := await db.fetchrow(_NEXT_IN_LINE, event_id)) is not None:
            try:
                await reserve_best_available(
                    db,
                    event_id=event_id,
                    quantity=entry["quantity"],
                    section=None,
                    customer=entry["customer"],
                    token=entry_token(secret, entry["id"]),
                    offer=entry["id"],
                )
            except CustomerLimitReached:
                await db.execute(_SKIP, entry["id"])  # it could never be offered
                continue
            except TicketsUnavailable:
                break  # not enough came back yet, or the entry left meanwhile
            except SalesClosed:
                break
            offers += 1
    return offers


_STATS = """
SELECT count(*) FILTER (WHERE w.status = 'waiting') AS waiting,
       count(*) FILTER (WHERE w.status = 'offered') AS offered
FROM waiting_list w WHERE w.event_id = $1
"""


async def waiting_list_size(db: Database, *, event_id: uuid.UUID) -> tuple[int, int]:
    """(waiting, offers made) of the event's list."""
    row = await db.fetchrow(_STATS, event_id)
    assert row is not None
    return int(row["waiting"]), int(row["offered"])
