"""The outbox sender: delivers the e-mail that committed transactions owe, at least once.

A message is written in the transaction that makes it owed (a booking, a cancellation, a
refund), so it exists exactly when its reason does. Every worker runs a sender; each pass
claims a batch of due messages in one statement (SKIP LOCKED: senders never wait for each
other nor claim the same message) and leases them: `next_attempt_at` moves LEASE_SECONDS
ahead and `attempts` counts the claim. Rendering and delivery happen outside any
transaction; only then is the message marked sent. A sender that dies between delivery and
that mark leaves the message to be claimed again once its lease ends: a buyer may get a
message twice (with the same Message-ID), never not at all.

A failed delivery is retried after FIRST_RETRY_SECONDS, doubling up to LONGEST_RETRY_SECONDS,
and given up after MAX_ATTEMPTS (or at once when the server refuses the recipient): it keeps
`sent_at` NULL and its `last_error`, with `next_attempt_at` at 'infinity'. A message whose
rows are gone is marked sent with the reason in `last_error`.
"""

import asyncio
import logging
from datetime import UTC

from boxoffice.config import Settings
from boxoffice.db import Database
from boxoffice.mail.delivery import Refused, deliver
from boxoffice.mail.render import NothingToSend, OwedMessage, Undeliverable, render

logger = logging.getLogger("boxoffice")

# Longer than any one pass can take: every delivery of a pass ends by LEASE_SECONDS -
# LEASE_MARGIN_SECONDS after its claim, so no other sender claims a message being sent.
LEASE_SECONDS = 120.0
LEASE_MARGIN_SECONDS = 15.0
MAX_ATTEMPTS = 10
FIRST_RETRY_SECONDS = 30.0
LONGEST_RETRY_SECONDS = 3600.0
# Deliveries of one pass under way at once (each holds an SMTP connection, and a pool
# connection while it renders).
DELIVERIES_AT_ONCE = 5
_ERROR_CHARACTERS = 1000

# $1 batch size, $2 lease in seconds. SKIP LOCKED: a message another sender is claiming
# right now is theirs. A claim that commits first moves `next_attempt_at` ahead, and the
# second claimer's lock re-reads the row (READ COMMITTED) and finds it no longer due.
# A CTE, so the locking subquery runs exactly once.
CLAIM_DUE = """
WITH due AS (
    SELECT id FROM outbox_messages
    WHERE sent_at IS NULL AND next_attempt_at <= now()
    ORDER BY next_attempt_at, id
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE outbox_messages m
SET attempts = m.attempts + 1, next_attempt_at = now() + make_interval(secs => $2)
FROM due
WHERE m.id = due.id
RETURNING m.id, m.kind, m.recipient, m.booking_id, m.payment_id, m.created_at, m.attempts
"""

# $1 message, $2 why nothing was sent (NULL when it was). The first sender to finish keeps
# its time, should a lease have run out under a slow delivery.
MARK_SENT = """
UPDATE outbox_messages SET sent_at = now(), last_error = $2
WHERE id = $1 AND sent_at IS NULL
"""

# $1 message, $2 the attempt that failed, $3 the error, $4 give up, $5 seconds until the
# next attempt. Only while the failed attempt is the latest claim: a sender whose lease ran
# out does not reschedule another sender's attempt.
MARK_FAILED = """
UPDATE outbox_messages
SET last_error = $3,
    next_attempt_at = CASE WHEN $4 THEN 'infinity'::timestamptz
                           ELSE now() + make_interval(secs => $5) END
WHERE id = $1 AND attempts = $2 AND sent_at IS NULL
"""


def retry_delay(attempts: int) -> float:
    """Seconds to wait after the `attempts`-th failed attempt: 30 s, doubling, at most 1 h."""
    return min(FIRST_RETRY_SECONDS * 2.0 ** max(attempts - 1, 0), LONGEST_RETRY_SECONDS)


def _file_stem(message: OwedMessage) -> str:
    created = message.created_at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{created}-{message.id}-{message.kind}"


async def send_due(db: Database, settings: Settings, *, limit: int = 20) -> int:
    """One pass: claim up to `limit` due messages and deliver them. Returns how many were
    delivered (a message with nothing left to say is marked sent but not counted)."""
    rows = await db.fetch(CLAIM_DUE, limit, LEASE_SECONDS)
    if not rows:
        return 0
    deadline = asyncio.get_running_loop().time() + LEASE_SECONDS - LEASE_MARGIN_SECONDS
    gate = asyncio.Semaphore(DELIVERIES_AT_ONCE)
    claimed = sorted((OwedMessage(**row) for row in rows), key=lambda message: message.id)
    outcomes = await asyncio.gather(
        *(_send_one(db, settings, message, gate, deadline) for message in claimed),
        return_exceptions=True,
    )
    # Every message had its chance before a failure to record one (the database gone) is
    # raised; the unrecorded ones are claimed again after their lease.
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return sum(1 for outcome in outcomes if outcome is True)


async def _send_one(
    db: Database,
    settings: Settings,
    message: OwedMessage,
    gate: asyncio.Semaphore,
    deadline: float,
) -> bool:
    async with gate:
        try:
            async with asyncio.timeout_at(deadline):
                email = await render(db, settings, message)
                await deliver(settings, email, file_stem=_file_stem(message))
        except NothingToSend as reason:
            await db.execute(MARK_SENT, message.id, str(reason))
            logger.info("e-mail %d (%s) not sent: %s", message.id, message.kind, reason)
            return False
        except Exception as error:
            await _record_failure(db, message, error)
            return False
    await db.execute(MARK_SENT, message.id, None)
    return True


async def _record_failure(db: Database, message: OwedMessage, error: Exception) -> None:
    permanent = isinstance(error, (Refused, Undeliverable))
    give_up = permanent or message.attempts >= MAX_ATTEMPTS
    description = f"{type(error).__name__}: {error}"[:_ERROR_CHARACTERS]
    delay = retry_delay(message.attempts)
    await db.execute(MARK_FAILED, message.id, message.attempts, description, give_up, delay)
    if give_up:
        logger.error(
            "e-mail %d (%s) given up after %d attempts: %s",
            message.id,
            message.kind,
            message.attempts,
            description,
        )
    else:
        logger.warning(
            "e-mail %d (%s) attempt %d failed, retrying in %.0f s: %s",
            message.id,
            message.kind,
            message.attempts,
            delay,
            description,
        )


async def run_outbox_sender(db: Database, settings: Settings) -> None:
    """Send owed e-mail every OUTBOX_INTERVAL_SECONDS until cancelled; safe in every worker
    at once."""
    batch = 20
    share = settings.outbox_busy_share
    loop = asyncio.get_running_loop()
    while True:
        try:
            while True:
                started = loop.time()
                sent = await send_due(db, settings, limit=batch)
                if sent and db.in_use > 0:
                    # Buyers are being served: rendering a message (its QR codes above all)
                    # costs milliseconds of this worker's CPU, so during a rush the sender
                    # takes at most OUTBOX_BUSY_SHARE of the worker's time and the mail
                    # waits; idle, it sends at full speed.
                    await asyncio.sleep((loop.time() - started) * (1 - share) / share)
                # A full batch suggests more are due: go on.
                if sent < batch:
                    break
        except asyncio.CancelledError:
            raise
        except Exception as error:
            # A database outage must not kill the sender; owed messages wait in the outbox.
            logger.warning("outbox sender run failed: %s", error)
        await asyncio.sleep(settings.outbox_interval_seconds)
