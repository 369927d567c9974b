"""The built-in `test` provider: pays without money, the way a real provider does.

It has its own checkout page (pay, decline, or pay after a delay) and signs its
notifications with Stripe's scheme (boxoffice.payments.providers.sign), under its own
secret. The notification goes through the same verification and the same
`handle_notification` as any provider's webhook, so the demo exercises the production path.
Its notifications are delivered in-process rather than over HTTP (there is nobody else to
send them); `POST /payments/webhooks/test` takes them over HTTP too, as tests send them.
"""

import hashlib
import hmac
import json
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from boxoffice.config import Settings
from boxoffice.credentials import server_secret
from boxoffice.errors import InvalidSignature
from boxoffice.payments.providers import (
    Checkout,
    Notification,
    PaymentToStart,
    sign,
    verify_signature,
)

SIGNATURE_HEADER = "boxoffice-signature"
PAID = "payment.succeeded"
FAILED = "payment.failed"


def test_payment_secret(settings: Settings) -> bytes:
    """TEST_PAYMENT_SECRET, or one derived from the server secret (never stored)."""
    if settings.test_payment_secret:
        return settings.test_payment_secret.encode()
    return hmac.new(server_secret(settings), b"test-payment-provider", hashlib.sha256).digest()


class TestProvider:
    name = "test"
    __test__ = False  # not a pytest test class, whatever its name says

    def __init__(self, settings: Settings) -> None:
        self._secret = test_payment_secret(settings)
        self._tolerance = settings.payment_webhook_tolerance_seconds
        self._base = settings.public_base_url.rstrip("/")

    async def start(self, payment: PaymentToStart) -> Checkout:
        provider_payment_id = f"tp_{payment.payment_id.hex}"
        # The page is this server's own, so its address is a path; it sends the buyer back
        # to `return_url` only if that is a path here too (no open redirect).
        url = f"/pay/test/{provider_payment_id}"
        if payment.return_url.startswith("/") and not payment.return_url.startswith("//"):
            url += "?" + urlencode({"return": payment.return_url})
        return Checkout(provider_payment_id, url)

    def notification(
        self,
        provider_payment_id: str,
        kind: str,
        *,
        amount_minor: int,
        currency: str,
        notification_id: str | None = None,
        timestamp: int | None = None,
    ) -> tuple[bytes, dict[str, str]]:
        """A signed notification, as the provider sends it: body and headers."""
        body = json.dumps(
            {
                "id": notification_id or f"evt_{uuid.uuid4().hex}",
                "type": kind,
                "data": {
                    "payment": provider_payment_id,
                    "amount": amount_minor,
                    "currency": currency,
                },
            }
        ).encode()
        return body, self.signed_headers(body, timestamp)

    def signed_headers(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        return {SIGNATURE_HEADER: sign(self._secret, body, timestamp)}

    def verify(self, body: bytes, headers: Mapping[str, str]) -> Notification | None:
        verify_signature(self._secret, body, headers.get(SIGNATURE_HEADER), self._tolerance)
        try:
            event: Any = json.loads(body)
            kind = event["type"]
            data = event["data"]
            notification_id = str(event["id"])
            provider_payment_id = str(data["payment"])
            amount = data.get("amount")
            currency = data.get("currency")
        except (ValueError, KeyError, TypeError):
            raise InvalidSignature("a signed notification that is not one of ours") from None
        if kind not in (PAID, FAILED):
            return None
        return Notification(
            notification_id=notification_id,
            kind="paid" if kind == PAID else "failed",
            provider_payment_id=provider_payment_id,
            amount_minor=amount if isinstance(amount, int) else None,
            currency=currency if isinstance(currency, str) else None,
        )

    async def refund(self, provider_payment_id: str, amount_minor: int, key: str) -> str:
        # No money moved, so none moves back; the refund id is stable per key, as a real
        # provider's idempotent refund would be.
        return "tr_" + hashlib.sha256(key.encode()).hexdigest()[:24]
