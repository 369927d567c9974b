"""The Stripe provider against a local stand-in for Stripe's API (tests/stripe_standin.py),
with webhook events signed here the way Stripe signs them: no server, no database."""

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from boxoffice.config import Settings
from boxoffice.errors import InvalidSignature, ServiceUnavailable
from boxoffice.payments.providers import Notification, PaymentToStart
from boxoffice.payments.stripe_provider import StripeProvider
from tests.stripe_standin import (
    API_KEY,
    WEBHOOK_SECRET,
    StripeStandIn,
    closed_base_url,
    event,
    signature_header,
    signed_event,
)

TOLERANCE = 300


def settings_for(api_base: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "payment_provider": "stripe",
        "stripe_api_key": API_KEY,
        "stripe_webhook_secret": WEBHOOK_SECRET,
        "stripe_api_base": api_base,
        "payment_webhook_tolerance_seconds": TOLERANCE,
        "public_base_url": "https://tickets.example.org",
    } | overrides
    return Settings(**values)


@pytest.fixture
def stripe_api() -> Iterator[StripeStandIn]:
    with StripeStandIn() as standin:
        yield standin


@pytest.fixture
def provider(stripe_api: StripeStandIn) -> StripeProvider:
    return StripeProvider(settings_for(stripe_api.base_url))


def a_payment(**overrides: Any) -> PaymentToStart:
    values: dict[str, Any] = {
        "payment_id": uuid.uuid4(),
        "reservation_id": uuid.uuid4(),
        "amount_minor": 4500,
        "currency": "EUR",
        "customer": "ann@example.com",
        "description": "Gig night: 2 ticket(s)",
        "return_url": "/reservations/r1",
    } | overrides
    return PaymentToStart(**values)


async def test_start_creates_a_checkout_session_for_the_payment(
    provider: StripeProvider, stripe_api: StripeStandIn
) -> None:
    payment = a_payment()

    checkout = await provider.start(payment)

    session = stripe_api.sessions[checkout.provider_payment_id]
    assert checkout.provider_payment_id.startswith("cs_test_")
    assert checkout.checkout_url == session["url"]
    assert (session["amount_total"], session["currency"]) == (4500, "eur")
    assert session["client_reference_id"] == str(payment.payment_id)
    assert session["metadata"] == {
        "payment_id": str(payment.payment_id),
        "reservation_id": str(payment.reservation_id),
    }
    assert session["customer_email"] == "ann@example.com"
    # A path of ours becomes an absolute address for Stripe to send the buyer back to.
    assert session["success_url"] == "https://tickets.example.org/reservations/r1"
    assert session["cancel_url"] == "https://tickets.example.org/reservations/r1"
    [request] = stripe_api.requests
    assert request.params["mode"] == "payment"
    assert request.params["line_items"] == [
        {
            "price_data": {
                "currency": "eur",
                "unit_amount": "4500",
                "product_data": {"name": "Gig night: 2 ticket(s)"},
            },
            "quantity": "1",
        }
    ]
    assert request.idempotency_key == f"checkout-{payment.payment_id}"


async def test_a_second_start_of_a_payment_gets_the_same_session(
    provider: StripeProvider, stripe_api: StripeStandIn
) -> None:
    payment = a_payment()

    first = await provider.start(payment)
    second = await provider.start(payment)

    assert second == first
    assert len(stripe_api.sessions) == 1
    keys = [r.idempotency_key for r in stripe_api.requests]
    assert keys == [f"checkout-{payment.payment_id}"] * 2


async def test_an_absolute_return_address_is_kept_and_a_name_is_no_email(
    provider: StripeProvider, stripe_api: StripeStandIn
) -> None:
    checkout = await provider.start(
        a_payment(customer="Ann Example", return_url="https://shop.example.org/done")
    )

    session = stripe_api.sessions[checkout.provider_payment_id]
    assert session["customer_email"] is None
    assert session["success_url"] == "https://shop.example.org/done"


async def test_an_address_stripe_refuses_is_left_for_the_buyer_to_type(
    provider: StripeProvider, stripe_api: StripeStandIn
) -> None:
    stripe_api.invalid_emails.add("ann@example.com")
    payment = a_payment()

    checkout = await provider.start(payment)

    assert stripe_api.sessions[checkout.provider_payment_id]["customer_email"] is None
    first, second = stripe_api.requests
    assert "customer_email" in first.params
    assert "customer_email" not in second.params
    assert first.idempotency_key == second.idempotency_key == f"checkout-{payment.payment_id}"


async def test_a_failed_attempt_is_retried_under_the_same_key(
    stripe_api: StripeStandIn,
) -> None:
    provider = StripeProvider(settings_for(stripe_api.base_url), network_retries=1)
    stripe_api.fail_next(1, status=500)
    payment = a_payment()

    checkout = await provider.start(payment)

    assert checkout.provider_payment_id in stripe_api.sessions
    assert [r.idempotency_key for r in stripe_api.requests] == [
        f"checkout-{payment.payment_id}"
    ] * 2


async def paid_session(provider: StripeProvider, stripe_api: StripeStandIn) -> dict[str, Any]:
    checkout = await provider.start(a_payment())
    return stripe_api.pay(checkout.provider_payment_id)


async def test_verify_takes_a_signed_completed_session_as_paid(
    provider: StripeProvider, stripe_api: StripeStandIn
) -> None:
    session = await paid_session(provider, stripe_api)
    body, headers = signed_event(
        WEBHOOK_SECRET, "checkout.session.completed", session, event_id="evt_test_1"
    )

    assert provider.verify(body, headers) == Notification(
        notification_id="evt_test_1",
        kind="paid",
        provider_payment_id=session["id"],
        amount_minor=4500,
        currency="EUR",
    )


async def test_the_signature_header_is_found_whatever_its_case(
    provider: StripeProvider, stripe_api: StripeStandIn
) -> None:
    session = await paid_session(provider, stripe_api)
    body = event("checkout.session.completed", session)

    notification = provider.verify(
        body, {"stripe-signature": signature_header(WEBHOOK_SECRET, body)}
    )

    assert notification is not None and notification.kind == "paid"


async def test_a_completed_session_still_unpaid_says_nothing_yet(
    provider: StripeProvider, stripe_api: StripeStandIn
) -> None:
    checkout = await provider.start(a_payment())
    session = stripe_api.sessions[checkout.provider_payment_id] | {"status": "complete"}
    body, headers = signed_event(WEBHOOK_SECRET, "checkout.session.completed", session)

    assert provider.verify(body, headers) is None


@pytest.mark.parametrize(
    ("event_type", "kind"),
    [
        ("checkout.session.async_payment_succeeded", "paid"),
        ("checkout.session.async_payment_failed", "failed"),
        ("checkout.session.expired", "failed"),
    ],
)
async def test_delayed_outcomes_and_expiry_are_mapped(
    provider: StripeProvider, stripe_api: StripeStandIn, event_type: str, kind: str
) -> None:
    checkout = await provider.start(a_payment())
    session = stripe_api.sessions[checkout.provider_payment_id]
    body, headers = signed_event(WEBHOOK_SECRET, event_type, session, event_id="evt_test_2")

    notification = provider.verify(body, headers)

    assert notification is not None
    assert notification.notification_id == "evt_test_2"
    assert (notification.kind, notification.provider_payment_id) == (kind, session["id"])


@pytest.mark.parametrize(
    ("event_type", "obj"),
    [
        ("payment_intent.succeeded", {"id": "pi_test_1", "object": "payment_intent"}),
        ("charge.refunded", {"id": "ch_test_1", "object": "charge"}),
        ("checkout.session.async_payment_succeeded", {"id": "ch_test_1", "object": "charge"}),
    ],
)
def test_events_about_other_things_are_ignored(
    provider: StripeProvider, event_type: str, obj: dict[str, Any]
) -> None:
    body, headers = signed_event(WEBHOOK_SECRET, event_type, obj)

    assert provider.verify(body, headers) is None


async def test_an_unrelated_session_event_is_ignored(
    provider: StripeProvider, stripe_api: StripeStandIn
) -> None:
    session = await paid_session(provider, stripe_api)
    body, headers = signed_event(WEBHOOK_SECRET, "checkout.session.updated", session)

    assert provider.verify(body, headers) is None


def refusals() -> list[Any]:
    """(body, headers, why it is refused) for each way a delivery can fail the check.

    Signed when a test runs, not when the tests are collected: a signature made at collection
    would be older than the tolerance by the time a long run reaches it."""
    session = {"id": "cs_test_x", "object": "checkout.session", "payment_status": "paid"}
    body = event("checkout.session.completed", session)
    signed = signature_header(WEBHOOK_SECRET, body)
    old = int(time.time()) - TOLERANCE - 60
    tampered = body.replace(b'"paid"', b'"paid" ')
    mismatch = "No signatures found matching"
    return [
        pytest.param(
            body, {"Stripe-Signature": signature_header("whsec_other", body)}, mismatch, id="key"
        ),
        pytest.param(tampered, {"Stripe-Signature": signed}, mismatch, id="tampered"),
        pytest.param(body, {}, "no Stripe-Signature header", id="missing"),
        pytest.param(body, {"Stripe-Signature": ""}, "no Stripe-Signature header", id="empty"),
        pytest.param(body, {"Stripe-Signature": "v1=abc"}, "Unable to extract", id="no-time"),
        pytest.param(
            body, {"Stripe-Signature": signed.replace("v1=", "v0=")}, "scheme v1", id="scheme"
        ),
        pytest.param(
            body,
            {"Stripe-Signature": signature_header(WEBHOOK_SECRET, body, old)},
            "outside the tolerance",
            id="too-old",
        ),
        pytest.param(
            b"not json",
            {"Stripe-Signature": signature_header(WEBHOOK_SECRET, b"not json")},
            "not a Stripe event",
            id="not-an-event",
        ),
    ]


@pytest.mark.parametrize("refusal", [case.id for case in refusals()])
def test_verify_refuses_what_stripe_did_not_sign_recently(
    provider: StripeProvider, refusal: str
) -> None:
    [case] = [case for case in refusals() if case.id == refusal]
    body, headers, why = case.values
    with pytest.raises(InvalidSignature, match=why):
        provider.verify(body, headers)


async def test_refund_pays_back_the_session_s_payment_intent_once(
    provider: StripeProvider, stripe_api: StripeStandIn
) -> None:
    session = await paid_session(provider, stripe_api)
    stripe_api.requests.clear()

    first = await provider.refund(session["id"], 4500, "refund-1")
    again = await provider.refund(session["id"], 4500, "refund-1")

    assert again == first
    [refund] = stripe_api.refunds_of(session["payment_intent"])
    assert (refund["id"], refund["amount"]) == (first, 4500)
    assert stripe_api.requests_to("GET", f"/v1/checkout/sessions/{session['id']}")
    [create] = stripe_api.requests_to("POST", "/v1/refunds")
    assert create.idempotency_key == "refund-1"
    assert create.params["payment_intent"] == session["payment_intent"]


async def test_concurrent_refunds_under_one_key_refund_once(
    provider: StripeProvider, stripe_api: StripeStandIn
) -> None:
    session = await paid_session(provider, stripe_api)

    ids = await asyncio.gather(*(provider.refund(session["id"], 1000, "k") for _ in range(4)))

    assert len(set(ids)) == 1
    assert len(stripe_api.refunds_of(session["payment_intent"])) == 1


async def test_a_retry_after_stripe_forgot_the_key_refunds_nothing_more(
    provider: StripeProvider, stripe_api: StripeStandIn
) -> None:
    session = await paid_session(provider, stripe_api)
    first = await provider.refund(session["id"], 1000, "k")
    stripe_api.forget_idempotency_keys()

    assert await provider.refund(session["id"], 1000, "k") == first
    assert len(stripe_api.refunds_of(session["payment_intent"])) == 1


async def test_refunds_under_different_keys_are_different_refunds(
    provider: StripeProvider, stripe_api: StripeStandIn
) -> None:
    session = await paid_session(provider, stripe_api)

    await provider.refund(session["id"], 1000, "k1")
    await provider.refund(session["id"], 2000, "k2")

    amounts = [r["amount"] for r in stripe_api.refunds_of(session["payment_intent"])]
    assert amounts == [1000, 2000]


async def test_an_unpaid_session_has_nothing_to_refund(
    provider: StripeProvider, stripe_api: StripeStandIn
) -> None:
    checkout = await provider.start(a_payment())

    with pytest.raises(ServiceUnavailable, match="no payment to refund"):
        await provider.refund(checkout.provider_payment_id, 4500, "k")
    assert stripe_api.refunds == {}


async def test_a_stripe_that_cannot_be_reached_is_unavailable() -> None:
    provider = StripeProvider(settings_for(closed_base_url()), network_retries=0)

    with pytest.raises(ServiceUnavailable, match="could not be reached"):
        await provider.start(a_payment())
    with pytest.raises(ServiceUnavailable, match="could not be reached"):
        await provider.refund("cs_test_x", 4500, "k")


async def test_a_refusing_stripe_is_unavailable_too(stripe_api: StripeStandIn) -> None:
    provider = StripeProvider(
        settings_for(stripe_api.base_url, stripe_api_key="sk_test_wrong"), network_retries=0
    )

    with pytest.raises(ServiceUnavailable, match="HTTP 401"):
        await provider.start(a_payment())
    with pytest.raises(ServiceUnavailable, match="HTTP 401"):
        await provider.refund("cs_test_x", 4500, "k")


async def test_an_outage_answer_is_unavailable(stripe_api: StripeStandIn) -> None:
    provider = StripeProvider(settings_for(stripe_api.base_url), network_retries=0)
    stripe_api.fail_next(1, status=503)

    with pytest.raises(ServiceUnavailable, match="HTTP 503"):
        await provider.start(a_payment())


@pytest.mark.parametrize("missing", ["stripe_api_key", "stripe_webhook_secret"])
def test_a_provider_without_its_secrets_is_a_configuration_error(missing: str) -> None:
    with pytest.raises(ValueError, match=missing.upper()):
        StripeProvider(settings_for("http://127.0.0.1:9", **{missing: None}))
