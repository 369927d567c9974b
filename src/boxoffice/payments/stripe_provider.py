"""The Stripe provider: a payment is a Checkout Session, its outcome a signed webhook event,
its refund a Refund of the session's PaymentIntent.

The `stripe` package makes the API calls and, above all, checks the webhook signatures
(`Stripe-Signature`, within PAYMENT_WEBHOOK_TOLERANCE_SECONDS). Every call that creates
something carries an idempotency key, so a retried start or refund gives back what the first
one made. A Stripe that cannot be reached, or refuses, is a ServiceUnavailable: the buyer
may try again, the refunder tries again later.

The calls are the package's synchronous ones, each in a worker thread (`asyncio.to_thread`).
Its `*_async` methods need httpx (with anyio) or aiohttp, and neither is a runtime dependency
of boxoffice (httpx is only in the simulate and test sets): with them the tests would take a
path production does not have. `requests` comes with `stripe` itself, so the same HTTP client
runs everywhere; a call holds a thread from the default pool for its duration, no lock.
"""

import asyncio
import logging
import re
from collections.abc import Callable, Mapping
from typing import Literal, TypeVar

import stripe

from boxoffice.config import Settings
from boxoffice.errors import InvalidSignature, ServiceUnavailable
from boxoffice.payments.providers import Checkout, Notification, PaymentToStart

logger = logging.getLogger(__name__)

T = TypeVar("T")

SIGNATURE_HEADER = "stripe-signature"
# Seconds to connect to Stripe and to wait for its answer: a buyer is waiting on a start.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0
# The package retries a failed connection or a 409/5xx answer itself, with backoff; safe,
# since each creating call carries an idempotency key.
NETWORK_RETRIES = 2
# An address Stripe takes as `customer_email` (it pre-fills the page and gets the receipt).
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
# The metadata key under which a refund carries our key (see `refund`).
REFUND_KEY = "boxoffice_refund_key"


class StripeProvider:
    name = "stripe"

    def __init__(self, settings: Settings, *, network_retries: int = NETWORK_RETRIES) -> None:
        if not settings.stripe_api_key:
            raise ValueError("PAYMENT_PROVIDER=stripe needs STRIPE_API_KEY (a secret key sk_…)")
        if not settings.stripe_webhook_secret:
            raise ValueError(
                "PAYMENT_PROVIDER=stripe needs STRIPE_WEBHOOK_SECRET (whsec_…, the signing"
                " secret of the webhook endpoint)"
            )
        self._webhook_secret = settings.stripe_webhook_secret
        self._tolerance = settings.payment_webhook_tolerance_seconds
        self._public_base_url = settings.public_base_url.rstrip("/")
        self._client = stripe.StripeClient(
            settings.stripe_api_key,
            base_addresses=(
                {"api": settings.stripe_api_base} if settings.stripe_api_base else None
            ),
            max_network_retries=network_retries,
            http_client=stripe.RequestsClient(timeout=(CONNECT_TIMEOUT, READ_TIMEOUT)),
        )

    async def start(self, payment: PaymentToStart) -> Checkout:
        """A Checkout Session for the payment; the same one again for the same payment id."""
        return_url = self._absolute(payment.return_url)
        params: stripe.params.checkout.SessionCreateParams = {
            "mode": "payment",
            "line_items": [
                {
                    "price_data": {
                        "currency": payment.currency.lower(),
                        "unit_amount": payment.amount_minor,
                        "product_data": {"name": payment.description},
                    },
                    "quantity": 1,
                }
            ],
            "client_reference_id": str(payment.payment_id),
            "metadata": {
                "payment_id": str(payment.payment_id),
                "reservation_id": str(payment.reservation_id),
            },
            "success_url": return_url,
            "cancel_url": return_url,
        }
        customer = payment.customer.strip()
        if _EMAIL.fullmatch(customer):
            params["customer_email"] = customer
        options: stripe.RequestOptions = {"idempotency_key": f"checkout-{payment.payment_id}"}

        def create() -> stripe.checkout.Session:
            try:
                return self._client.v1.checkout.sessions.create(params, options)
            except stripe.InvalidRequestError as error:
                if error.param != "customer_email":
                    raise
                # Stripe finds the address invalid: its page asks the buyer for one instead.
                # A refused request stores nothing under the key, so the key is still free.
                del params["customer_email"]
                return self._client.v1.checkout.sessions.create(params, options)

        session = await self._call("start the checkout", create)
        if session.url is None:
            raise ServiceUnavailable(f"Stripe gave checkout session {session.id} no page address")
        return Checkout(provider_payment_id=session.id, checkout_url=session.url)

    def verify(self, body: bytes, headers: Mapping[str, str]) -> Notification | None:
        """The payment's outcome from a Stripe event whose `Stripe-Signature` verifies."""
        header = next((v for k, v in headers.items() if k.lower() == SIGNATURE_HEADER), None)
        if not header:
            raise InvalidSignature("the notification carries no Stripe-Signature header")
        try:
            event = self._client.construct_event(
                body, header, self._webhook_secret, tolerance=self._tolerance
            )
        except stripe.SignatureVerificationError as error:
            raise InvalidSignature(
                f"the Stripe-Signature does not verify: {error.user_message}"
            ) from None
        except ValueError:
            # Signed, but not JSON (or not UTF-8), or not a snapshot event.
            raise InvalidSignature("the notification is not a Stripe event") from None
        # As plain data: a StripeObject answers a missing field with AttributeError.
        session = event.to_dict().get("data", {}).get("object")
        if not isinstance(session, dict) or session.get("object") != "checkout.session":
            return None
        kind: Literal["paid", "failed"] | None
        match event.type:
            case "checkout.session.completed":
                # "unpaid": a delayed method (a bank debit…); async_payment_* tells the end.
                kind = "paid" if session.get("payment_status") == "paid" else None
            case "checkout.session.async_payment_succeeded":
                kind = "paid"
            case "checkout.session.async_payment_failed" | "checkout.session.expired":
                kind = "failed"
            case _:
                kind = None
        if kind is None:
            return None
        amount = session.get("amount_total")
        currency = session.get("currency")
        return Notification(
            notification_id=event.id,
            kind=kind,
            provider_payment_id=session["id"],
            amount_minor=amount if isinstance(amount, int) else None,
            currency=currency.upper() if isinstance(currency, str) else None,
        )

    async def refund(self, provider_payment_id: str, amount_minor: int, key: str) -> str:
        """Refund `amount_minor` of the session's PaymentIntent, once per `key`."""
        session = await self._call(
            f"look up checkout session {provider_payment_id}",
            lambda: self._client.v1.checkout.sessions.retrieve(provider_payment_id),
        )
        intent = session.payment_intent
        if intent is None:
            raise ServiceUnavailable(
                f"Stripe's checkout session {provider_payment_id} has no payment to refund"
            )
        intent_id = intent if isinstance(intent, str) else intent.id
        # Stripe forgets an idempotency key after 24 hours, and a refunder may retry later
        # than that: a refund already made under this key (in its metadata) is the answer.
        earlier = await self._call(
            f"list the refunds of {intent_id}",
            lambda: self._client.v1.refunds.list({"payment_intent": intent_id, "limit": 100}),
        )
        for made in earlier.data:
            if made.metadata and REFUND_KEY in made.metadata and made.metadata[REFUND_KEY] == key:
                return made.id
        refund = await self._call(
            f"refund {intent_id}",
            lambda: self._client.v1.refunds.create(
                {
                    "payment_intent": intent_id,
                    "amount": amount_minor,
                    "metadata": {REFUND_KEY: key, "checkout_session": provider_payment_id},
                },
                {"idempotency_key": key},
            ),
        )
        return refund.id

    def _absolute(self, url: str) -> str:
        """Stripe sends the buyer back to an absolute address; a path is one of ours."""
        return self._public_base_url + url if url.startswith("/") else url

    async def _call(self, action: str, call: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(call)
        except stripe.APIConnectionError as error:
            logger.warning("Stripe could not be reached to %s: %s", action, error)
            raise ServiceUnavailable(
                f"the payment provider (Stripe) could not be reached to {action}; try again"
            ) from None
        except stripe.StripeError as error:
            logger.warning("Stripe refused to %s: %s", action, error)
            refusal = f" ({error.code})" if error.code else ""
            raise ServiceUnavailable(
                f"the payment provider (Stripe) refused to {action}:"
                f" HTTP {error.http_status}{refusal}"
            ) from None
