"""Stripe end to end through a real `serve`: checkout, Stripe's signed webhook books, money
that booked nothing is refunded through Stripe once, and a client's word books nothing.

Stripe itself is out of reach here: the server's Stripe calls go to a local stand-in of the
few endpoints it uses (tests/stripe_standin.py), and the webhooks are signed exactly as
Stripe documents, with the stand-in's secret.
"""

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio

from boxoffice.migrate import upgrade
from tests.conftest import ADMIN, Databases, serving
from tests.stripe_standin import API_KEY, WEBHOOK_SECRET, StripeStandIn, signed_event

WEBHOOK = "/payments/webhooks/stripe"


@pytest.fixture(scope="module")
def stripe_api() -> Iterator[StripeStandIn]:
    with StripeStandIn() as standin:
        yield standin


@pytest.fixture(scope="module")
def own_database(databases: Databases) -> str:
    """A database of its own: every server of a database must share its payment settings
    (another configuration's refunder would find Stripe payments it cannot refund)."""
    url = databases.create()
    upgrade(url)
    return url


@pytest_asyncio.fixture(scope="module")
async def stripe_server(
    own_database: str, stripe_api: StripeStandIn, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[httpx.AsyncClient]:
    log = tmp_path_factory.mktemp("stripe") / "serve.log"
    with serving(
        own_database,
        log,
        workers=1,
        POOL_SIZE="4",
        PAYMENT_PROVIDER="stripe",
        STRIPE_API_KEY=API_KEY,
        STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
        STRIPE_API_BASE=stripe_api.base_url,
        REFUND_INTERVAL_SECONDS="0.2",
    ) as served:
        async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
            yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def new_event(client: httpx.AsyncClient, seats: int = 4) -> dict[str, Any]:
    response = await client.post(
        "/events",
        json={
            "name": "Stripe night",
            "starts_at": "2030-01-01T20:00:00Z",
            "sections": [{"name": "Main", "rows": 1, "seats_per_row": seats, "price": 3000}],
        },
        headers=ADMIN,
    )
    assert response.status_code == 201, response.text
    event: dict[str, Any] = response.json()
    return event


async def hold(client: httpx.AsyncClient, event: dict[str, Any], customer: str) -> dict[str, Any]:
    response = await client.post(
        f"/events/{event['id']}/reservations", json={"quantity": 2, "customer": customer}
    )
    assert response.status_code == 201, response.text
    held: dict[str, Any] = response.json()
    return held


async def checkout(client: httpx.AsyncClient, held: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(
        f"/reservations/{held['id']}/checkout", headers=bearer(held["token"])
    )
    assert response.status_code == 201, response.text
    payment: dict[str, Any] = response.json()
    return payment


async def payment_status(url: str, payment_id: str) -> asyncpg.Record:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchrow(
            "SELECT status, provider_payment_id, provider_refund_id, refund_reason"
            " FROM payments WHERE id = $1::uuid",
            payment_id,
        )
    finally:
        await conn.close()


async def wait_for_refund(url: str, payment_id: str) -> asyncpg.Record:
    """The server's refunder works on its own clock: wait (20 s at most) for the database to
    say it did."""
    deadline = time.monotonic() + 20
    while True:
        row = await payment_status(url, payment_id)
        if row["status"] == "refunded" or time.monotonic() > deadline:
            return row
        await asyncio.sleep(0.1)


async def test_stripe_checkout_and_webhook_book_the_hold(
    stripe_server: httpx.AsyncClient, stripe_api: StripeStandIn, own_database: str
) -> None:
    client = stripe_server
    event = await new_event(client)
    held = await hold(client, event, "ada@example.com")

    # A client's word books nothing once real money is involved.
    direct = await client.post(
        f"/reservations/{held['id']}/confirm",
        json={"payment_reference": "trust me"},
        headers=bearer(held["token"]),
    )
    assert direct.status_code == 403 and direct.json()["type"].endswith("/payment-required")

    payment = await checkout(client, held)
    assert payment["provider"] == "stripe" and payment["amount"] == 6000
    session_id = (await payment_status(own_database, payment["id"]))["provider_payment_id"]
    session = stripe_api.sessions[session_id]
    assert payment["checkout_url"] == session["url"]
    assert session["amount_total"] == 6000 and session["currency"] == "eur"
    assert session["client_reference_id"] == payment["id"]

    # The `test` provider's notifications are not taken while Stripe is configured.
    assert (await client.post("/payments/webhooks/test", content=b"{}")).status_code == 404

    body, headers = signed_event(
        WEBHOOK_SECRET, "checkout.session.completed", stripe_api.pay(session_id)
    )
    booked = await client.post(WEBHOOK, content=body, headers=headers)
    assert booked.status_code == 200, booked.text
    assert booked.json() == {"outcome": "booked"}
    # Stripe retries deliveries: the same event again does nothing.
    again = await client.post(WEBHOOK, content=body, headers=headers)
    assert again.json() == {"outcome": "duplicate"}
    view = (await client.get(f"/reservations/{held['id']}", headers=bearer(held["token"]))).json()
    assert view["status"] == "confirmed" and len(view["booking_code"]) == 6

    tampered = body.replace(b"6000", b"1")
    refused = await client.post(WEBHOOK, content=tampered, headers=headers)
    assert refused.status_code == 400 and refused.json()["type"].endswith("/invalid-signature")


async def test_money_for_seats_taken_is_refunded_through_stripe_once(
    stripe_server: httpx.AsyncClient, stripe_api: StripeStandIn, own_database: str
) -> None:
    client = stripe_server
    event = await new_event(client, seats=2)
    held = await hold(client, event, "late@example.com")
    payment = await checkout(client, held)
    session_id = (await payment_status(own_database, payment["id"]))["provider_payment_id"]
    # The hold lapses and someone else takes the seats before the money arrives.
    conn = await asyncpg.connect(own_database)
    try:
        await conn.execute(
            "UPDATE reservations SET created_at = created_at - interval '1 hour',"
            " expires_at = now() - interval '1 second' WHERE id = $1::uuid",
            held["id"],
        )
        await conn.execute(
            "UPDATE tickets SET hold_expires_at = now() - interval '1 second'"
            " WHERE reservation_id = $1::uuid",
            held["id"],
        )
    finally:
        await conn.close()
    await hold(client, event, "rival@example.com")

    paid = stripe_api.pay(session_id)
    body, headers = signed_event(WEBHOOK_SECRET, "checkout.session.completed", paid)
    answer = await client.post(WEBHOOK, content=body, headers=headers)
    assert answer.json() == {"outcome": "refund-seats-taken"}
    # Stripe also reports the async success of the same payment: still one refund.
    body, headers = signed_event(WEBHOOK_SECRET, "checkout.session.async_payment_succeeded", paid)
    assert (await client.post(WEBHOOK, content=body, headers=headers)).json() == {
        "outcome": "already-paid"
    }
    row = await wait_for_refund(own_database, payment["id"])
    assert row["status"] == "refunded", dict(row)
    refunds = stripe_api.refunds_of(paid["payment_intent"])
    assert len(refunds) == 1 and refunds[0]["amount"] == 6000
    assert row["provider_refund_id"] == refunds[0]["id"]
