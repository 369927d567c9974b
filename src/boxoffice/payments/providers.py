"""What boxoffice needs from a payment provider, and the signature scheme notifications use.

A provider starts a checkout for a payment (the buyer pays on the provider's page), turns a
notification it sent into a `Notification` once its signature verifies, and pays money back.
Everything else (booking, refunding late money, replays) is the payments service's, the same
for every provider.

Notifications are signed the way Stripe signs webhooks, which the `test` provider copies:
a header `t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">`, refused when older than the
tolerance (PAYMENT_WEBHOOK_TOLERANCE_SECONDS), so a captured notification cannot be replayed
later, and deduplicated by its id, so one replayed within the tolerance does nothing.
"""

import hashlib
import hmac
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from boxoffice.errors import InvalidSignature


@dataclass(frozen=True, slots=True)
class PaymentToStart:
    payment_id: uuid.UUID
    reservation_id: uuid.UUID
    amount_minor: int
    currency: str
    customer: str
    description: str
    # Where the provider sends the buyer back after paying or giving up.
    return_url: str


@dataclass(frozen=True, slots=True)
class Checkout:
    provider_payment_id: str
    checkout_url: str


@dataclass(frozen=True, slots=True)
class Notification:
    notification_id: str
    kind: Literal["paid", "failed"]
    provider_payment_id: str
    # What the provider says was paid; checked against the payment (None: it did not say).
    amount_minor: int | None
    currency: str | None


class PaymentProvider(Protocol):
    name: str

    async def start(self, payment: PaymentToStart) -> Checkout:
        """Create the provider's payment; idempotent per `payment.payment_id`."""
        ...

    def verify(self, body: bytes, headers: Mapping[str, str]) -> Notification | None:
        """The notification, if its signature verifies (else InvalidSignature); None for a
        kind of notification that does not concern a payment's outcome."""
        ...

    async def refund(self, provider_payment_id: str, amount_minor: int, key: str) -> str:
        """Pay the money back; idempotent per `key`. Returns the provider's refund id."""
        ...


def sign(secret: bytes, body: bytes, timestamp: int | None = None) -> str:
    """The signature header for `body`, as Stripe writes its `Stripe-Signature`."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify_signature(secret: bytes, body: bytes, header: str | None, tolerance: int) -> None:
    """Raise InvalidSignature unless `header` signs `body` with `secret`, recently enough."""
    if not header:
        raise InvalidSignature("the notification carries no signature")
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        parts.setdefault(key, []).append(value)
    try:
        timestamp = int(parts["t"][0])
    except (KeyError, ValueError):
        raise InvalidSignature("the signature has no timestamp") from None
    expected = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    if not any(hmac.compare_digest(expected, given) for given in parts.get("v1", [])):
        raise InvalidSignature("the signature does not match the notification")
    if abs(time.time() - timestamp) > tolerance:
        raise InvalidSignature(
            f"the notification was signed more than {tolerance} s from now; refused as a replay"
        )
