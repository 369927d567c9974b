"""The waiting room: joining, a place's standing, admission, and the passes reservations need.

A buyer joins an event's queue once per customer and gets a place and a token. The token is
the place's id signed with the server secret: it proves the place without a database read
(a forged or mangled one is refused at once) and, once the place is admitted, it is the pass
a reservation presents (`boxoffice.reservations.reserve` checks and spends it in the hold's
own statement). Places are served in queue order, `(lane, rank)`: the pre-queue (lane 0,
joined before sales opened, ranked by a random draw when they open) before the later
arrivals (lane 1, ranked as they join).
"""

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Self

import asyncpg

from boxoffice.db import Database
from boxoffice.errors import (
    Conflict,
    EventNotFound,
    NotFound,
    QueuePassRequired,
    SalesClosed,
)
from boxoffice.signed_ids import sign_id, signed_id_of

CHANNEL = "queue_changes"
# Unspent admissions carried from one tick to the next while nobody waits, at most this many
# seconds' worth: a queue that empties and fills again does not let a burst through.
CREDIT_SECONDS = 2.0


class QueueClosed(Conflict):
    slug = "queue-closed"
    title = "This event has no waiting room"


class AlreadyQueued(Conflict):
    slug = "already-queued"
    title = "This customer is in the queue already"


class QueuePlaceNotFound(NotFound):
    """Also the answer to a wrong token: a stranger learns nothing about the place."""

    slug = "queue-place-not-found"
    title = "Queue place not found"


# --- tokens ------------------------------------------------------------------------------------


_PLACE_TOKEN = b"queue-place"


def place_token(secret: bytes, place_id: uuid.UUID) -> str:
    """The place's token: its id and the server's signature of it (`<id>.<signature>`)."""
    return sign_id(secret, _PLACE_TOKEN, place_id)


def place_of_token(secret: bytes, token: str) -> uuid.UUID | None:
    """The place a token names, if the server signed it; None for anything else."""
    return signed_id_of(secret, _PLACE_TOKEN, token)


def pass_of(secret: bytes, queue_pass: str | None) -> uuid.UUID | None:
    """A reservation's `queue_pass` as the place it names; 403 for one the server never
    signed (no database read for a forgery)."""
    if queue_pass is None:
        return None
    place_id = place_of_token(secret, queue_pass)
    if place_id is None:
        raise QueuePassRequired("this queue pass is not valid")
    return place_id


# --- joining and standing ----------------------------------------------------------------------

# One round trip. Before sales open a joiner goes to the pre-queue, unranked until the draw;
# after, to the arrivals' lane with the next number of one sequence, so the order of the
# ranks is the order of the joins. The unique (event, customer) makes a second join of one
# customer insert nothing, whatever the race, unless the customer's place is over (left, its
# pass expired unused, or its hold ended unpaid): then it starts again at the back, under a
# new id, so the old token is worthless.
_JOIN = """
WITH e AS (
    SELECT id, now() < coalesce(sales_start_at, '-infinity') AS early
    FROM events
    WHERE id = $1 AND queue_enabled AND now() < coalesce(sales_end_at, starts_at)
)
INSERT INTO queue_entries AS q (id, event_id, customer, lane, rank)
SELECT $2, e.id, $3, CASE WHEN e.early THEN 0 ELSE 1 END,
       CASE WHEN e.early THEN NULL ELSE nextval('queue_arrivals') END
FROM e
ON CONFLICT (event_id, customer_key) DO UPDATE
SET id = EXCLUDED.id, customer = EXCLUDED.customer, lane = EXCLUDED.lane,
    rank = EXCLUDED.rank, status = 'waiting', joined_at = now(), admitted_at = NULL,
    pass_expires_at = NULL, used_at = NULL, reservation_id = NULL
WHERE q.status = 'left'
   OR (q.status = 'admitted' AND q.pass_expires_at <= now())
   OR (q.status = 'used' AND NOT EXISTS (
           SELECT 1 FROM reservations r
           WHERE r.id = q.reservation_id
             AND (r.status = 'confirmed' OR (r.status = 'active' AND r.expires_at > now()))
       ))
RETURNING id
"""
_WHY_NOT_JOINED = """
SELECT queue_enabled, now() < coalesce(sales_end_at, starts_at) AS selling
FROM events WHERE id = $1
"""

# A place as its holder sees it: standing, and (waiting and numbered) how many are ahead, by
# arithmetic (an upper bound: some ahead may have left). The pre-queue is ranked 1..N by the
# draw and goes first; an arrival waits behind what is left of it and behind the arrivals
# numbered before it that are not admitted yet.
_PLACE = """
SELECT q.id, q.event_id, q.customer, q.lane, q.rank, q.joined_at, q.admitted_at,
       q.pass_expires_at, q.used_at, q.reservation_id,
       CASE WHEN q.status = 'admitted' AND q.pass_expires_at <= now() THEN 'expired'
            WHEN q.status = 'waiting' AND q.rank IS NULL THEN 'pre-queue'
            ELSE q.status END AS status,
       CASE WHEN q.status <> 'waiting' THEN NULL
            WHEN q.lane = 0 AND q.rank IS NOT NULL
                THEN greatest(q.rank - 1 - coalesce(s.admitted_early, 0), 0)
            WHEN q.lane = 1 AND q.ordinal IS NOT NULL
                THEN greatest(s.drawn_total - s.admitted_early, 0)
                     + greatest(q.ordinal - 1 - s.admitted_arrivals, 0)
       END AS ahead,
       e.sales_start_at, e.queue_admit_per_minute,
       coalesce(s.admitted_total, 0) AS admitted_total,
       CASE WHEN s.last_admitted_at > s.first_admitted_at
            THEN (s.admitted_total - 1) * 60.0
                 / extract(epoch FROM s.last_admitted_at - s.first_admitted_at)
       END AS observed_per_minute,
       now() AS now
FROM queue_entries q
JOIN events e ON e.id = q.event_id
LEFT JOIN queue_state s ON s.event_id = q.event_id
WHERE q.id = $1 AND q.event_id = $2
"""


@dataclass(frozen=True, slots=True)
class Place:
    id: uuid.UUID
    event_id: uuid.UUID
    customer: str
    lane: int
    rank: int | None
    joined_at: datetime
    admitted_at: datetime | None
    pass_expires_at: datetime | None
    used_at: datetime | None
    reservation_id: uuid.UUID | None
    # pre-queue, waiting, admitted, expired (admitted, pass not used in time), used, left
    status: str
    ahead: int | None
    sales_start_at: datetime | None
    queue_admit_per_minute: int | None
    admitted_total: int
    observed_per_minute: float | None
    now: datetime

    @classmethod
    def of(cls, record: Any) -> Self:
        return cls(**record)

    @property
    def position(self) -> int | None:
        """1 for the next to be admitted; None while unranked (the pre-queue) or not waiting."""
        return None if self.ahead is None else self.ahead + 1

    @property
    def per_minute(self) -> float | None:
        """How fast places are admitted: the event's rate, else what was seen so far."""
        if self.queue_admit_per_minute is not None:
            return float(self.queue_admit_per_minute)
        if self.observed_per_minute:
            return float(self.observed_per_minute)
        return None

    def estimated_wait_seconds(self, ahead: int | None = None) -> int | None:
        ahead = self.ahead if ahead is None else ahead
        rate = self.per_minute
        if ahead is None or not rate:
            return None
        return round((ahead + 1) * 60 / rate)


async def join_queue(db: Database, *, event_id: uuid.UUID, customer: str) -> uuid.UUID:
    """A new place in the event's queue for this customer: its id (the token is signed)."""
    place_id = uuid.uuid4()
    async with db.connection() as conn:
        joined = await conn.fetchval(_JOIN, event_id, place_id, customer)
        if joined is not None:
            return place_id
        why = await conn.fetchrow(_WHY_NOT_JOINED, event_id)
    if why is None:
        raise EventNotFound(f"no event {event_id}")
    if not why["queue_enabled"]:
        raise QueueClosed("this event sells without a waiting room: reserve directly")
    if not why["selling"]:
        raise SalesClosed("sales for this event have ended")
    raise AlreadyQueued("this customer has a place in this queue already; one place per customer")


async def get_place(db: Database, *, event_id: uuid.UUID, place_id: uuid.UUID) -> Place:
    """The place now; `ahead` is None until the admitter numbered a new arrival (within a
    tick) or drew the pre-queue."""
    async with db.connection() as conn:
        record = await conn.fetchrow(_PLACE, place_id, event_id)
    if record is None:
        raise QueuePlaceNotFound(f"no queue place {place_id} for this event")
    return Place.of(record)


async def leave_queue(db: Database, *, event_id: uuid.UUID, place_id: uuid.UUID) -> None:
    """Give the place up (waiting, or admitted and unused); the next in line moves up."""
    async with db.connection() as conn:
        status = await conn.fetchval(
            """
            UPDATE queue_entries SET status = 'left', admitted_at = NULL, pass_expires_at = NULL
            WHERE id = $1 AND event_id = $2 AND status IN ('waiting', 'admitted')
            RETURNING status
            """,
            place_id,
            event_id,
        )
        if status is None and not await conn.fetchval(
            "SELECT 1 FROM queue_entries WHERE id = $1 AND event_id = $2", place_id, event_id
        ):
            raise QueuePlaceNotFound(f"no queue place {place_id} for this event")


# --- why a pass was refused --------------------------------------------------------------------

_PASS = """
SELECT q.event_id, q.customer_key, q.customer_key = lower(btrim($2)) AS same_customer,
       q.status, q.pass_expires_at <= now() AS pass_expired
FROM queue_entries q WHERE q.id = $1
"""


async def explain_refused_pass(
    conn: asyncpg.Connection,
    *,
    event_id: uuid.UUID,
    place_id: uuid.UUID | None,
    customer: str,
) -> QueuePassRequired:
    """The 403 for a hold on a queued event whose pass did not pass, saying why."""
    if place_id is None:
        return QueuePassRequired(
            "this event sells through its waiting room: join the queue, and reserve with "
            "the pass you get when admitted (`queue_pass`)"
        )
    found = await conn.fetchrow(_PASS, place_id, customer)
    if found is None or found["event_id"] != event_id:
        return QueuePassRequired("this queue pass is not for this event")
    if not found["same_customer"]:
        return QueuePassRequired("this queue pass belongs to another customer")
    if found["status"] == "used":
        return QueuePassRequired("this queue pass was used for a hold already")
    if found["status"] in ("waiting", "left"):
        return QueuePassRequired("this queue place has not been admitted")
    if found["pass_expired"]:
        return QueuePassRequired("this queue pass has expired; join the queue again")
    return QueuePassRequired("this queue pass was not accepted")


# --- admission ---------------------------------------------------------------------------------

# Events whose waiting room has work: on sale (or opening) with places waiting.
_QUEUES_WITH_WORK = """
SELECT e.id FROM events e
WHERE e.queue_enabled AND now() >= coalesce(e.sales_start_at, '-infinity')
  AND now() < coalesce(e.sales_end_at, e.starts_at)
  AND EXISTS (SELECT 1 FROM queue_entries q WHERE q.event_id = e.id AND q.status = 'waiting')
"""
_NEW_STATE = "INSERT INTO queue_state (event_id) VALUES ($1) ON CONFLICT (event_id) DO NOTHING"
# The event's settings and bookkeeping, locked for this tick (the admitter is alone, but a
# second one during a failover must not admit the same budget twice).
_TICK_STATE = """
SELECT s.credit, greatest(extract(epoch FROM now() - s.ticked_at), 0) AS elapsed,
       e.queue_admit_per_minute, e.queue_max_shoppers, e.queue_pass_seconds,
       s.admitted_total, s.numbered_total
FROM queue_state s JOIN events e ON e.id = s.event_id
WHERE s.event_id = $1
FOR UPDATE OF s
"""
# The pre-queue's draw: every unranked place of lane 0 gets a rank in a random order (from
# the cryptographic generator, so nobody can predict it), after any drawn before (a joiner
# whose join committed just after an earlier draw).
_DRAW = """
WITH drawn AS (
    SELECT id, row_number() OVER (ORDER BY gen_random_uuid()) AS n
    FROM queue_entries
    WHERE event_id = $1 AND lane = 0 AND rank IS NULL AND status = 'waiting'
), base AS (
    SELECT coalesce(max(rank), 0) AS top FROM queue_entries WHERE event_id = $1 AND lane = 0
)
UPDATE queue_entries q SET rank = base.top + drawn.n
FROM drawn, base WHERE q.id = drawn.id
"""
# New arrivals get their numbers, in rank order, after those numbered before.
_NUMBER = """
WITH todo AS (
    SELECT id, row_number() OVER (ORDER BY rank) AS n
    FROM queue_entries
    WHERE event_id = $1 AND lane = 1 AND ordinal IS NULL AND status = 'waiting'
)
UPDATE queue_entries q SET ordinal = $2 + todo.n
FROM todo WHERE q.id = todo.id
"""
# Buyers shopping now: unexpired passes not yet used, and passes whose hold is still live.
_SHOPPING = """
SELECT count(*) FROM queue_entries q
WHERE q.event_id = $1 AND (
    (q.status = 'admitted' AND q.pass_expires_at > now())
    OR (q.status = 'used' AND EXISTS (
        SELECT 1 FROM reservations r
        WHERE r.id = q.reservation_id AND r.status = 'active' AND r.expires_at > now()
    ))
)
"""
# The next places in queue order become passes: the drawn pre-queue, then the arrivals up to
# (not including) the first that joined less than $4 seconds ago. An arrival's rank comes
# from a sequence when its join runs, but its row is seen only when the join commits: two
# joins a moment apart can commit in the other order. Admitting only arrivals older than any
# join takes to commit means a lower rank is never still on its way when a higher one is
# admitted (bench/onsale.py saw 17 of 90,000 overtaken without it).
_ADMIT = """
WITH settling AS (
    SELECT coalesce(min(rank), 9223372036854775807) AS rank FROM queue_entries
    WHERE event_id = $1 AND status = 'waiting' AND lane = 1
      AND joined_at > now() - make_interval(secs => $4)
), next AS (
    SELECT q.id FROM queue_entries q, settling
    WHERE q.event_id = $1 AND q.status = 'waiting' AND q.rank IS NOT NULL
      AND (q.lane = 0 OR q.rank < settling.rank)
    ORDER BY q.lane, q.rank
    LIMIT $2
    FOR UPDATE OF q SKIP LOCKED
)
UPDATE queue_entries q
SET status = 'admitted', admitted_at = now(), pass_expires_at = now() + make_interval(secs => $3)
FROM next WHERE q.id = next.id
RETURNING q.lane, q.rank
"""
_SAVE_STATE = """
UPDATE queue_state
SET credit = $2, ticked_at = now(), admitted_total = admitted_total + $3,
    drawn_total = drawn_total + $7, numbered_total = numbered_total + $8,
    admitted_early = admitted_early + $9, admitted_arrivals = admitted_arrivals + $3 - $9,
    drawn_at = CASE WHEN $4 THEN now() ELSE drawn_at END,
    first_admitted_at = CASE WHEN $3 > 0 THEN coalesce(first_admitted_at, now())
                             ELSE first_admitted_at END,
    last_admitted_at = CASE WHEN $3 > 0 THEN now() ELSE last_admitted_at END,
    through_lane = coalesce($5, through_lane), through_rank = coalesce($6, through_rank)
WHERE event_id = $1
RETURNING admitted_total, through_lane, through_rank
"""
_NOTIFY = f"SELECT pg_notify('{CHANNEL}', $1)"


@dataclass(frozen=True, slots=True)
class Tick:
    event_id: uuid.UUID
    drawn: int
    admitted: int
    admitted_total: int


async def events_with_waiting_places(conn: asyncpg.Connection) -> list[uuid.UUID]:
    return [row["id"] for row in await conn.fetch(_QUEUES_WITH_WORK)]


async def admit_once(
    conn: asyncpg.Connection,
    *,
    event_id: uuid.UUID,
    default_pass_seconds: int,
    settle_seconds: float,
) -> Tick:
    """One tick of one event's waiting room, in one transaction: draw the pre-queue if sales
    opened, admit as many places as the rate and the cap on shoppers allow, and tell the
    streams. Call it only from the admitter (one per database)."""
    async with conn.transaction():
        await conn.execute(_NEW_STATE, event_id)
        state = await conn.fetchrow(_TICK_STATE, event_id)
        if state is None:  # the event was deleted
            return Tick(event_id, 0, 0, 0)
        drawn = int((await conn.execute(_DRAW, event_id)).split()[-1])
        numbered_status = await conn.execute(_NUMBER, event_id, state["numbered_total"])
        numbered = int(numbered_status.split()[-1])

        budget: float | None = None
        credit = float(state["credit"])
        rate = state["queue_admit_per_minute"]
        if rate is not None:
            per_second = rate / 60
            credit += float(state["elapsed"]) * per_second
            budget = credit
        cap = state["queue_max_shoppers"]
        if cap is not None:
            free_slots = cap - int(await conn.fetchval(_SHOPPING, event_id))
            budget = free_slots if budget is None else min(budget, free_slots)
        wanted = max(int(budget or 0), 0)
        pass_seconds = state["queue_pass_seconds"] or default_pass_seconds
        admitted = (
            await conn.fetch(_ADMIT, event_id, wanted, pass_seconds, settle_seconds)
            if wanted
            else []
        )
        if rate is not None:
            credit -= len(admitted)
            # Nobody left to take what was earned: keep at most a little of it.
            credit = min(credit, max(1.0, rate / 60 * CREDIT_SECONDS))
        last = max(((row["lane"], row["rank"]) for row in admitted), default=(None, None))
        early = sum(1 for row in admitted if row["lane"] == 0)
        saved = await conn.fetchrow(
            _SAVE_STATE,
            event_id,
            credit,
            len(admitted),
            drawn > 0,
            last[0],
            last[1],
            drawn,
            numbered,
            early,
        )
        if drawn or numbered or admitted:
            payload = {
                "event_id": str(event_id),
                "admitted_total": saved["admitted_total"],
                "through": [saved["through_lane"], saved["through_rank"]],
                # Places that had no position have one now: their streams read it.
                "drawn": drawn > 0 or numbered > 0,
                "per_minute": rate,
            }
            await conn.fetchval(_NOTIFY, json.dumps(payload))
    return Tick(event_id, drawn, len(admitted), int(saved["admitted_total"]))


# --- what the organiser sees -------------------------------------------------------------------

_STATS = """
SELECT
    count(*) FILTER (WHERE q.status = 'waiting' AND q.rank IS NULL) AS pre_queue,
    count(*) FILTER (WHERE q.status = 'waiting') AS waiting,
    count(*) FILTER (WHERE q.status IN ('admitted', 'used')) AS admitted,
    count(*) FILTER (WHERE q.status = 'admitted' AND q.pass_expires_at > now()) AS active_passes,
    count(*) FILTER (WHERE q.status = 'used') AS used_passes,
    count(*) FILTER (WHERE q.status = 'admitted' AND q.pass_expires_at <= now())
        AS expired_passes,
    count(*) FILTER (WHERE q.status = 'left') AS left_queue,
    (SELECT count(*) FROM waiting_list w
     WHERE w.event_id = $1 AND w.status = 'waiting') AS waiting_list,
    (SELECT count(*) FROM waiting_list w
     WHERE w.event_id = $1 AND w.status = 'offered') AS waiting_list_offers
FROM queue_entries q WHERE q.event_id = $1
"""


@dataclass(frozen=True, slots=True)
class QueueStats:
    pre_queue: int
    waiting: int
    admitted: int
    active_passes: int
    used_passes: int
    expired_passes: int
    left_queue: int
    waiting_list: int
    waiting_list_offers: int

    @classmethod
    def of(cls, record: Any) -> Self:
        return cls(**record)


async def queue_stats(db: Database, *, event_id: uuid.UUID) -> QueueStats:
    async with db.connection() as conn:
        if not await conn.fetchval("SELECT 1 FROM events WHERE id = $1", event_id):
            raise EventNotFound(f"no event {event_id}")
        return QueueStats.of(await conn.fetchrow(_STATS, event_id))
