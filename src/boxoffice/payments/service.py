"""From payment to booking: checkout, the provider's notifications, and refunds.

A hold is paid through its provider: `start_checkout` creates a payment for the hold's
amount, the buyer pays on the provider's page, and the provider's signed notification
(`handle_notification`) books the hold, in one transaction with its seats. The client's word
books nothing (except the `test` provider's direct confirm, reservations.holder.confirm).

Exactly once, whatever the provider sends:
  - a notification is verified (signature, age) before anything is read;
  - it is recorded under the provider's notification id (`payment_notifications`): a
    replay or a retry inserts nothing and does nothing;
  - the payment row is locked after its reservation (the locking protocol: reservation,
    then payment, then tickets in id order), so two different notifications of one payment
    (Stripe sends `completed` and `async_payment_succeeded`) take turns, and the second
    finds it paid;
  - money that arrives after the hold lapsed books the same seats if they are still free
    (retaking them from whatever lapsed hold still marks them), and otherwise goes to
    `refund_pending`, like money for a cancelled event or a hold another payment booked;
  - the refunder (`run_refunder`) asks the provider to pay it back, outside any
    transaction, with the payment id as the provider's idempotency key, so a retry after a
    crash never refunds twice.
"""

import asyncio
import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import asyncpg

from boxoffice.config import Settings
from boxoffice.db import Database
from boxoffice.errors import (
    BoxofficeError,
    EventCancelled,
    PaymentMismatch,
    PaymentNotFound,
)
from boxoffice.payments.providers import Notification, PaymentProvider, PaymentToStart
from boxoffice.reservations import holder
from boxoffice.reservations.holder import BOOK

logger = logging.getLogger("boxoffice.payments")

# A notification waits this long for the rows a buyer's request may be holding (a confirm,
# a release): providers retry a failed delivery, but a short wait is cheaper than a retry.
_NOTIFICATION_LOCK_TIMEOUT = "2s"

_PAYMENT = """
SELECT id, reservation_id, event_id, customer, provider, provider_payment_id, checkout_url,
       amount_minor, currency, status, booking_id
FROM payments
"""

_OPEN_PAYMENT = _PAYMENT + "WHERE reservation_id = $1 AND status = 'pending'"

# The hold's amount: what its tickets cost, in the event's currency.
_NEW_PAYMENT = """
INSERT INTO payments (reservation_id, event_id, customer, provider, amount_minor, currency)
SELECT r.id, r.event_id, r.customer, $2, coalesce(sum(t.price_minor), 0), e.currency
FROM reservations r
JOIN events e ON e.id = r.event_id
JOIN reservation_tickets rt ON rt.reservation_id = r.id
JOIN tickets t ON t.id = rt.ticket_id
WHERE r.id = $1
GROUP BY r.id, r.event_id, r.customer, e.currency
RETURNING id, reservation_id, event_id, customer, provider, provider_payment_id, checkout_url,
          amount_minor, currency, status, booking_id
"""

_EVENT_NAME = "SELECT name, cancelled_at IS NOT NULL AS cancelled FROM events WHERE id = $1"

_STARTED = """
UPDATE payments SET provider_payment_id = $2, checkout_url = $3
WHERE id = $1 AND provider_payment_id IS NULL
"""

_PAYMENT_BY_PROVIDER_ID = _PAYMENT + "WHERE provider = $1 AND provider_payment_id = $2"

_LOCK_RESERVATION = """
SELECT r.id, r.event_id, r.customer, r.status::text AS status, r.ticket_count,
       r.status = 'active' AND r.expires_at > now() AS live,
       e.cancelled_at IS NOT NULL AS event_cancelled
FROM reservations r JOIN events e ON e.id = r.event_id
WHERE r.id = $1
FOR UPDATE OF r
"""

_LOCK_PAYMENT = _PAYMENT + "WHERE id = $1 FOR UPDATE"

_RECORD_NOTIFICATION = """
INSERT INTO payment_notifications (provider, notification_id, payment_id, kind, outcome)
VALUES ($1, $2, $3, $4, 'received')
ON CONFLICT DO NOTHING
RETURNING 1
"""

_NOTIFICATION_OUTCOME = """
UPDATE payment_notifications SET outcome = $3 WHERE provider = $1 AND notification_id = $2
"""

# The tickets a hold claimed (still its own, or not), locked in id order: a hold paid after
# it lapsed may only book the very seats it held.
_LOCK_HELD_TICKETS = """
SELECT t.id, t.reservation_id, ticket_is_free(t.status, t.hold_expires_at) AS free
FROM reservation_tickets rt JOIN tickets t ON t.id = rt.ticket_id
WHERE rt.reservation_id = $1
ORDER BY t.id
FOR UPDATE OF t
"""

# Seats a lapsed hold still marks go back to available first (audited as expired, as the
# sweeper would have), so the booking takes them from `available`.
_FREE_LAPSED = """
WITH freed AS (
    UPDATE tickets t SET status = 'available', reservation_id = NULL, hold_expires_at = NULL
    FROM tickets old
    WHERE t.id = ANY($1::bigint[]) AND old.id = t.id
      AND t.status = 'reserved' AND t.hold_expires_at <= now()
    RETURNING t.id, t.event_id, old.reservation_id
)
INSERT INTO ticket_audit (ticket_id, event_id, from_status, to_status, reason, reservation_id)
SELECT id, event_id, 'reserved', 'available', 'expired', reservation_id FROM freed ORDER BY id
"""

# Money that booked nothing is owed back (the refunder pays it, and then tells the buyer).
_OWE_REFUND = """
UPDATE payments
SET status = 'refund_pending', paid_at = coalesce(paid_at, now()), refund_reason = $2,
    refund_requested_at = now()
WHERE id = $1
"""

# A lapsed hold's late money books only within the customer's cap, counted as a new hold
# would be (its transaction-scoped lock on (event, customer), after the tickets' locks).
_OVER_THE_CAP = """
SELECT e.max_tickets_per_customer IS NOT NULL
       AND lock_customer_and_count(e.id, r.customer_key) + r.ticket_count
           > e.max_tickets_per_customer
FROM reservations r JOIN events e ON e.id = r.event_id
WHERE r.id = $1
"""

_FAIL = "UPDATE payments SET status = 'failed' WHERE id = $1 AND status = 'pending'"

_AUDIT = """
INSERT INTO audit_log (actor, action, event_id, booking_id, details)
VALUES ($1, $2, $3, $4, $5::jsonb)
"""


@dataclass(frozen=True, slots=True)
class PaymentRow:
    id: uuid.UUID
    reservation_id: uuid.UUID
    event_id: uuid.UUID
    customer: str
    provider: str
    provider_payment_id: str | None
    checkout_url: str | None
    amount_minor: int
    currency: str
    status: str
    booking_id: uuid.UUID | None

    @classmethod
    def of(cls, record: asyncpg.Record) -> "PaymentRow":
        return cls(**dict(record))


async def start_checkout(
    db: Database,
    provider: PaymentProvider,
    *,
    reservation_id: uuid.UUID,
    token: str | None,
    return_url: str,
) -> PaymentRow:
    """The hold's payment, with the provider's checkout page; a second call continues the
    first (one open payment per hold)."""
    async with db.transaction() as conn:
        # The reservation's lock makes two racing checkouts of one hold take turns: the
        # second finds the first's payment.
        row = await holder.locked_active_reservation(conn, reservation_id, token)
        event = await conn.fetchrow(_EVENT_NAME, row.event_id)
        if event["cancelled"]:
            raise EventCancelled("the event was cancelled; nothing can be paid for it")
        record = await conn.fetchrow(_OPEN_PAYMENT, reservation_id)
        if record is None:
            record = await conn.fetchrow(_NEW_PAYMENT, reservation_id, provider.name)
        payment = PaymentRow.of(record)
    if payment.provider_payment_id is not None:
        return payment
    # The provider is asked outside any transaction: a slow provider holds no lock. Its
    # start is idempotent per payment id, so a retry after a failure here gets the same one.
    checkout = await provider.start(
        PaymentToStart(
            payment_id=payment.id,
            reservation_id=reservation_id,
            amount_minor=payment.amount_minor,
            currency=payment.currency,
            customer=payment.customer,
            description=f"{event['name']}: {row.ticket_count} ticket(s)",
            return_url=return_url,
        )
    )
    async with db.connection() as conn:
        await conn.execute(
            _STARTED, payment.id, checkout.provider_payment_id, checkout.checkout_url
        )
        record = await conn.fetchrow(_PAYMENT + "WHERE id = $1", payment.id)
    return PaymentRow.of(record)


async def handle_notification(
    db: Database, provider: PaymentProvider, body: bytes, headers: Mapping[str, str]
) -> str:
    """Verify a provider's notification and act on it once; returns what it did."""
    notification = provider.verify(body, headers)
    if notification is None:
        return "ignored"
    async with db.transaction() as conn:
        await conn.execute(f"SET LOCAL lock_timeout = '{_NOTIFICATION_LOCK_TIMEOUT}'")
        found = await conn.fetchrow(
            _PAYMENT_BY_PROVIDER_ID, provider.name, notification.provider_payment_id
        )
        if found is None:
            raise PaymentNotFound(
                f"no {provider.name} payment {notification.provider_payment_id} here"
            )
        reservation = await conn.fetchrow(_LOCK_RESERVATION, found["reservation_id"])
        payment = PaymentRow.of(await conn.fetchrow(_LOCK_PAYMENT, found["id"]))
        _check_amount(payment, notification)
        fresh = await conn.fetchval(
            _RECORD_NOTIFICATION,
            provider.name,
            notification.notification_id,
            payment.id,
            notification.kind,
        )
        if fresh is None:
            return "duplicate"
        if notification.kind == "failed":
            outcome = "failed" if payment.status == "pending" else f"ignored-{payment.status}"
            await conn.execute(_FAIL, payment.id)
        else:
            outcome = await _paid(conn, payment, reservation)
        await conn.execute(
            _NOTIFICATION_OUTCOME, provider.name, notification.notification_id, outcome
        )
        await conn.execute(
            _AUDIT,
            f"provider:{provider.name}",
            f"payment-{outcome}",
            payment.event_id,
            payment.booking_id,
            json.dumps(
                {"payment_id": str(payment.id), "notification": notification.notification_id}
            ),
        )
        return outcome


def _check_amount(payment: PaymentRow, notification: Notification) -> None:
    if notification.kind != "paid":
        return
    if notification.amount_minor is not None and notification.amount_minor != payment.amount_minor:
        raise PaymentMismatch(
            f"the notification says {notification.amount_minor}, the payment is for "
            f"{payment.amount_minor}"
        )
    if notification.currency is not None and notification.currency.upper() != payment.currency:
        raise PaymentMismatch(
            f"the notification is in {notification.currency}, the payment in {payment.currency}"
        )


async def _paid(conn: asyncpg.Connection, payment: PaymentRow, reservation: asyncpg.Record) -> str:
    """Money arrived for `payment`: book its hold, or owe the money back."""
    if payment.status in ("paid", "refund_pending", "refunded"):
        return "already-paid"  # another notification of the same payment came first
    # From here the money is real, whatever the payment's state said (a decline may have
    # been reported before a later success: notifications can arrive out of order).
    if reservation["status"] == "confirmed":
        await conn.execute(_OWE_REFUND, payment.id, "already-booked")
        return "refund-already-booked"
    if reservation["event_cancelled"]:
        await conn.execute(_OWE_REFUND, payment.id, "event-cancelled")
        return "refund-event-cancelled"
    held = await conn.fetch(_LOCK_HELD_TICKETS, payment.reservation_id)
    ticket_ids = [record["id"] for record in held]
    if reservation["live"]:
        outcome = "booked"
    elif all(
        record["free"] or record["reservation_id"] == payment.reservation_id for record in held
    ):
        # The customer may have held or bought others since: nobody passes the cap by paying
        # for holds that lapsed.
        if await conn.fetchval(_OVER_THE_CAP, payment.reservation_id):
            await conn.execute(_OWE_REFUND, payment.id, "customer-limit")
            return "refund-customer-limit"
        await conn.execute(_FREE_LAPSED, ticket_ids)
        outcome = "booked-late"
    else:
        await conn.execute(_OWE_REFUND, payment.id, "seats-taken")
        return "refund-seats-taken"
    await conn.execute(
        BOOK,
        payment.reservation_id,
        payment.event_id,
        payment.customer,
        payment.provider_payment_id,
        ticket_ids,
        payment.id,
    )
    return outcome


# --- refunds ---------------------------------------------------------------------------

# Claim due refunds: the lease (refund_requested_at pushed into the future) keeps other
# refunders off while this one asks the provider; one that dies leaves it to the next.
_CLAIM_REFUNDS = """
UPDATE payments SET refund_requested_at = now() + make_interval(secs => $2),
                    refund_attempts = refund_attempts + 1
WHERE id IN (
    SELECT id FROM payments
    WHERE status = 'refund_pending' AND refund_requested_at <= now()
    ORDER BY refund_requested_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
RETURNING id, provider, provider_payment_id, amount_minor, refund_attempts
"""

# The money is back: audited, and the buyer is told (whatever owed it: a late payment, a
# cancelled booking or event), when there was money and an address to tell.
_REFUNDED = """
WITH done AS (
    UPDATE payments SET status = 'refunded', refunded_at = now(), provider_refund_id = $2,
                        refund_error = NULL
    WHERE id = $1 AND status = 'refund_pending'
    RETURNING id, event_id, booking_id, amount_minor, currency, customer
), audit AS (
    INSERT INTO audit_log (actor, action, event_id, booking_id, details)
    SELECT 'refunder', 'payment-refunded', event_id, booking_id,
           jsonb_build_object('payment_id', id, 'amount', amount_minor, 'currency', currency,
                              'refund_id', $2::text)
    FROM done
)
INSERT INTO outbox_messages (kind, recipient, payment_id)
SELECT 'payment-refunded', btrim(customer), id FROM done
WHERE amount_minor > 0
  AND btrim(customer) ~ '^[^@[:space:]]+@[^@[:space:]]+$' AND char_length(btrim(customer)) >= 3
"""

_REFUND_FAILED = """
UPDATE payments SET refund_error = $2,
                    refund_requested_at = now() + make_interval(secs => $3)
WHERE id = $1 AND status = 'refund_pending'
"""

_REFUND_LEASE_SECONDS = 120.0


async def refund_due(
    db: Database, providers: Mapping[str, PaymentProvider], *, limit: int = 20
) -> int:
    """One pass: ask the providers to pay back what is owed; returns how many were."""
    async with db.connection() as conn:
        claimed = await conn.fetch(_CLAIM_REFUNDS, limit, _REFUND_LEASE_SECONDS)
    refunded = 0
    for claim in claimed:
        provider = providers.get(claim["provider"])
        try:
            if provider is None:
                raise BoxofficeError(f"provider {claim['provider']} is not configured here")
            if claim["provider_payment_id"] is None:
                raise BoxofficeError("the payment never reached its provider")
            refund_id = await provider.refund(
                claim["provider_payment_id"], claim["amount_minor"], f"refund-{claim['id']}"
            )
        except Exception as error:  # any failure waits and retries
            backoff = min(30.0 * 2 ** (claim["refund_attempts"] - 1), 3600.0)
            logger.warning("refund of payment %s failed: %s", claim["id"], error)
            async with db.connection() as conn:
                await conn.execute(_REFUND_FAILED, claim["id"], str(error)[:500], backoff)
            continue
        async with db.connection() as conn:
            await conn.execute(_REFUNDED, claim["id"], refund_id)
        refunded += 1
    return refunded


async def run_refunder(
    db: Database, settings: Settings, providers: Mapping[str, PaymentProvider]
) -> None:
    """Every worker refunds (each payment claimed by one: SKIP LOCKED and a lease)."""
    while True:
        try:
            await refund_due(db, providers)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            # A database outage must not kill the refunder; owed refunds wait in the table.
            logger.warning("refund pass failed: %s", error)
        await asyncio.sleep(settings.refund_interval_seconds)
