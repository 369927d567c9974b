"""Paying through a provider: checkout, signed notifications, late money, refunds.

Through the real HTTP stack, with notifications signed exactly as the `test` provider (and
Stripe) sign them. Every test ends with the invariant checker.
"""

import asyncio
import json
import time
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from boxoffice.config import Settings
from boxoffice.payments.registry import build_providers
from boxoffice.payments.service import refund_due
from boxoffice.payments.testpay import FAILED, PAID, TestProvider
from tests.conftest import ADMIN, SERVER_SECRET, EventFactory, assert_invariants, service_db
from tests.support.expiry import move_expiry_into_the_past

WEBHOOK = "/payments/webhooks/test"


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings(server_secret=SERVER_SECRET, payment_provider="test")


@pytest.fixture(scope="module")
def provider(settings: Settings) -> TestProvider:
    return TestProvider(settings)


def holder(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def hold(
    client: httpx.AsyncClient, event: dict[str, Any], n: int = 2, **extra: Any
) -> dict[str, Any]:
    body = {"quantity": n, "customer": extra.pop("customer", "ada@example.com"), **extra}
    response = await client.post(f"/events/{event['id']}/reservations", json=body)
    assert response.status_code == 201, response.text
    held: dict[str, Any] = response.json()
    return held


async def checkout(client: httpx.AsyncClient, held: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(
        f"/reservations/{held['id']}/checkout", headers=holder(held["token"])
    )
    assert response.status_code == 201, response.text
    payment: dict[str, Any] = response.json()
    return payment


def provider_id(payment: dict[str, Any]) -> str:
    return str(payment["checkout_url"]).split("/pay/test/")[1].split("?")[0]


async def notify(
    client: httpx.AsyncClient,
    provider: TestProvider,
    payment: dict[str, Any],
    kind: str = PAID,
    **overrides: Any,
) -> httpx.Response:
    body, headers = provider.notification(
        provider_id(payment),
        kind,
        amount_minor=overrides.pop("amount_minor", payment["amount"]),
        currency=overrides.pop("currency", payment["currency"]),
        **overrides,
    )
    return await client.post(WEBHOOK, content=body, headers=headers)


async def payment_row(engine: AsyncEngine, payment_id: str) -> dict[str, Any]:
    async with engine.connect() as conn:
        row = (
            (await conn.execute(text("SELECT * FROM payments WHERE id = :id"), {"id": payment_id}))
            .mappings()
            .one()
        )
    return dict(row)


async def bookings_of(engine: AsyncEngine, reservation_id: str) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT * FROM bookings WHERE reservation_id = :id"), {"id": reservation_id}
        )
        return [dict(row) for row in rows.mappings()]


async def test_checkout_then_signed_notification_books_the_hold(
    client: httpx.AsyncClient, make_event: EventFactory, provider: TestProvider, engine: AsyncEngine
) -> None:
    event = await make_event()
    held = await hold(client, event)
    payment = await checkout(client, held)
    assert payment["status"] == "pending" and payment["provider"] == "test"
    assert payment["amount"] == 2 * 2500 and payment["currency"] == "EUR"
    # A second click continues the same payment.
    assert (await checkout(client, held))["id"] == payment["id"]

    answer = await notify(client, provider, payment)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"outcome": "booked"}

    reservation = (
        await client.get(f"/reservations/{held['id']}", headers=holder(held["token"]))
    ).json()
    assert reservation["status"] == "confirmed"
    assert len(reservation["booking_code"]) == 6
    assert "/booking#" in reservation["booking_url"]
    row = await payment_row(engine, payment["id"])
    assert row["status"] == "paid" and row["booking_id"] == uuid.UUID(reservation["booking_id"])
    async with engine.connect() as conn:
        codes = (
            (
                await conn.execute(
                    text("SELECT code FROM issued_tickets WHERE booking_id = :b"),
                    {"b": reservation["booking_id"]},
                )
            )
            .scalars()
            .all()
        )
    assert len(codes) == 2 and len(set(codes)) == 2
    # Checkout of a paid hold is refused; so is paying twice.
    again = await client.post(f"/reservations/{held['id']}/checkout", headers=holder(held["token"]))
    assert again.status_code == 409
    await assert_invariants(engine, event["id"])


async def test_a_replayed_notification_does_nothing(
    client: httpx.AsyncClient, make_event: EventFactory, provider: TestProvider, engine: AsyncEngine
) -> None:
    event = await make_event()
    held = await hold(client, event)
    payment = await checkout(client, held)
    body, headers = provider.notification(
        provider_id(payment), PAID, amount_minor=payment["amount"], currency="EUR"
    )
    first = await client.post(WEBHOOK, content=body, headers=headers)
    replay = await client.post(WEBHOOK, content=body, headers=headers)
    assert first.json() == {"outcome": "booked"}
    assert replay.status_code == 200 and replay.json() == {"outcome": "duplicate"}
    # Another notification of the same payment (a provider sends several) books nothing more.
    other = await notify(client, provider, payment)
    assert other.json() == {"outcome": "already-paid"}
    assert len(await bookings_of(engine, held["id"])) == 1
    await assert_invariants(engine, event["id"])


@pytest.mark.parametrize(
    "mangle",
    ["no-signature", "wrong-secret", "tampered-body", "signed-long-ago", "not-json"],
)
async def test_notifications_that_do_not_verify_are_refused(
    client: httpx.AsyncClient,
    make_event: EventFactory,
    provider: TestProvider,
    engine: AsyncEngine,
    mangle: str,
) -> None:
    event = await make_event()
    held = await hold(client, event)
    payment = await checkout(client, held)
    body, headers = provider.notification(
        provider_id(payment), PAID, amount_minor=payment["amount"], currency="EUR"
    )
    if mangle == "no-signature":
        headers = {}
    elif mangle == "wrong-secret":
        stranger = TestProvider(Settings(server_secret="x" * 40, payment_provider="test"))
        body, headers = stranger.notification(
            provider_id(payment), PAID, amount_minor=payment["amount"], currency="EUR"
        )
    elif mangle == "tampered-body":
        body = body.replace(b'"amount": 5000', b'"amount": 1')
    elif mangle == "signed-long-ago":
        body, headers = provider.notification(
            provider_id(payment),
            PAID,
            amount_minor=payment["amount"],
            currency="EUR",
            timestamp=int(time.time()) - 3600,
        )
    elif mangle == "not-json":
        body = b"not json"
        headers = provider.signed_headers(body)
    answer = await client.post(WEBHOOK, content=body, headers=headers)
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"].endswith("/invalid-signature")
    assert (await payment_row(engine, payment["id"]))["status"] == "pending"
    assert await bookings_of(engine, held["id"]) == []


async def test_unknown_foreign_and_mismatched_payments_are_refused(
    client: httpx.AsyncClient, make_event: EventFactory, provider: TestProvider, engine: AsyncEngine
) -> None:
    event = await make_event()
    held = await hold(client, event)
    payment = await checkout(client, held)
    unknown = dict(payment, checkout_url="/pay/test/tp_" + uuid.uuid4().hex)
    assert (await notify(client, provider, unknown)).status_code == 404
    cheap = await notify(client, provider, payment, amount_minor=1)
    assert cheap.status_code == 422 and cheap.json()["type"].endswith("/payment-mismatch")
    dollars = await notify(client, provider, payment, currency="USD")
    assert dollars.status_code == 422
    # Another provider's webhook is not taken while `test` is configured.
    body, headers = provider.notification(
        provider_id(payment), PAID, amount_minor=payment["amount"], currency="EUR"
    )
    stripe = await client.post("/payments/webhooks/stripe", content=body, headers=headers)
    assert stripe.status_code == 404
    assert await bookings_of(engine, held["id"]) == []
    # The real one still books: nothing above left a trace.
    assert (await notify(client, provider, payment)).json() == {"outcome": "booked"}
    await assert_invariants(engine, event["id"])


async def test_out_of_order_notifications(
    client: httpx.AsyncClient, make_event: EventFactory, provider: TestProvider, engine: AsyncEngine
) -> None:
    event = await make_event()
    # A decline reported after the payment succeeded changes nothing.
    held = await hold(client, event)
    payment = await checkout(client, held)
    assert (await notify(client, provider, payment)).json() == {"outcome": "booked"}
    late_decline = await notify(client, provider, payment, kind=FAILED)
    assert late_decline.json() == {"outcome": "ignored-paid"}
    assert (await payment_row(engine, payment["id"]))["status"] == "paid"
    # A success reported after a decline books: the money is real.
    other = await hold(client, event, customer="bob@example.com")
    second = await checkout(client, other)
    assert (await notify(client, provider, second, kind=FAILED)).json() == {"outcome": "failed"}
    assert (await notify(client, provider, second)).json() == {"outcome": "booked"}
    await assert_invariants(engine, event["id"])


async def test_paid_after_expiry_books_seats_that_are_still_free(
    client: httpx.AsyncClient, make_event: EventFactory, provider: TestProvider, engine: AsyncEngine
) -> None:
    event = await make_event()
    held = await hold(client, event)
    payment = await checkout(client, held)
    await move_expiry_into_the_past(engine, held["id"])
    answer = await notify(client, provider, payment)
    assert answer.json() == {"outcome": "booked-late"}
    booked = await bookings_of(engine, held["id"])
    assert len(booked) == 1
    async with engine.connect() as conn:
        statuses = (
            (
                await conn.execute(
                    text("SELECT status::text FROM tickets WHERE booking_id = :b"),
                    {"b": booked[0]["id"]},
                )
            )
            .scalars()
            .all()
        )
    assert statuses == ["booked", "booked"]
    await assert_invariants(engine, event["id"])


async def test_paid_after_expiry_with_the_seats_taken_is_refunded(
    client: httpx.AsyncClient,
    make_event: EventFactory,
    provider: TestProvider,
    engine: AsyncEngine,
    settings: Settings,
) -> None:
    event = await make_event(rows=1, seats_per_row=2)
    held = await hold(client, event)
    payment = await checkout(client, held)
    await move_expiry_into_the_past(engine, held["id"])
    # Somebody else takes the lapsed seats before the money arrives.
    rival = await hold(client, event, customer="rival@example.com")
    answer = await notify(client, provider, payment)
    assert answer.json() == {"outcome": "refund-seats-taken"}
    row = await payment_row(engine, payment["id"])
    assert row["status"] == "refund_pending" and row["refund_reason"] == "seats-taken"
    assert await bookings_of(engine, held["id"]) == []
    # The refunder pays it back, once, however often it runs.
    db = service_db(engine)
    providers = build_providers(settings).by_name
    await asyncio.gather(*(refund_due(db, providers) for _ in range(3)))
    await refund_due(db, providers)
    row = await payment_row(engine, payment["id"])
    assert row["status"] == "refunded" and row["provider_refund_id"].startswith("tr_")
    assert row["refund_attempts"] == 1
    # Once the money is back, the buyer is told why, once.
    async with engine.connect() as conn:
        owed = (
            await conn.execute(
                text("SELECT kind, recipient FROM outbox_messages WHERE payment_id = :p"),
                {"p": payment["id"]},
            )
        ).all()
    assert [tuple(m) for m in owed] == [("payment-refunded", "ada@example.com")]
    # The rival's hold is untouched.
    rival_view = await client.get(f"/reservations/{rival['id']}", headers=holder(rival["token"]))
    assert rival_view.json()["status"] == "active"
    await assert_invariants(engine, event["id"])


async def test_concurrent_deliveries_book_once(
    client: httpx.AsyncClient, make_event: EventFactory, provider: TestProvider, engine: AsyncEngine
) -> None:
    event = await make_event()
    held = await hold(client, event)
    payment = await checkout(client, held)
    body, headers = provider.notification(
        provider_id(payment), PAID, amount_minor=payment["amount"], currency="EUR"
    )
    # 10 deliveries of one notification and 10 different notifications of the same payment.
    requests = [client.post(WEBHOOK, content=body, headers=headers) for _ in range(10)]
    requests += [notify(client, provider, payment) for _ in range(10)]
    answers = await asyncio.gather(*requests)
    assert all(answer.status_code == 200 for answer in answers), [a.text for a in answers]
    outcomes = [answer.json()["outcome"] for answer in answers]
    assert outcomes.count("booked") == 1, outcomes
    assert set(outcomes) <= {"booked", "duplicate", "already-paid"}
    assert outcomes[:10].count("duplicate") >= 9
    assert len(await bookings_of(engine, held["id"])) == 1
    await assert_invariants(engine, event["id"])


async def test_two_payments_for_one_hold_book_once_and_refund_the_other(
    client: httpx.AsyncClient, make_event: EventFactory, provider: TestProvider, engine: AsyncEngine
) -> None:
    event = await make_event()
    held = await hold(client, event)
    first = await checkout(client, held)
    # The first payment is declined, so the buyer's next checkout is a new payment...
    await notify(client, provider, first, kind=FAILED)
    second = await checkout(client, held)
    assert second["id"] != first["id"]
    # ...and then both succeed (the decline was wrong), at the same moment.
    answers = await asyncio.gather(
        notify(client, provider, first), notify(client, provider, second)
    )
    outcomes = sorted(answer.json()["outcome"] for answer in answers)
    assert outcomes == ["booked", "refund-already-booked"], outcomes
    rows = [await payment_row(engine, p["id"]) for p in (first, second)]
    assert sorted(row["status"] for row in rows) == ["paid", "refund_pending"]
    assert len(await bookings_of(engine, held["id"])) == 1
    await assert_invariants(engine, event["id"])


async def test_the_test_checkout_page_pays(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    event = await make_event()
    held = await hold(client, event)
    payment = await checkout(client, held)
    page = await client.get(payment["checkout_url"])
    assert page.status_code == 200 and "Pay for" in page.text
    paid = await client.post(
        provider_id_path(payment),
        data={"action": "pay", "return_path": f"/shop/reservations/{held['id']}"},
    )
    assert paid.status_code == 303
    assert paid.headers["location"] == f"/shop/reservations/{held['id']}"
    assert len(await bookings_of(engine, held["id"])) == 1
    # An open redirect is not on offer.
    other = await hold(client, event, customer="eve@example.com")
    other_payment = await checkout(client, other)
    declined = await client.post(
        provider_id_path(other_payment),
        data={"action": "decline", "return_path": "//evil.example/"},
    )
    assert declined.status_code == 303 and declined.headers["location"] == "/"
    assert (await payment_row(engine, other_payment["id"]))["status"] == "failed"
    await assert_invariants(engine, event["id"])


def provider_id_path(payment: dict[str, Any]) -> str:
    return "/pay/test/" + provider_id(payment)


def test_signature_scheme_is_stripes() -> None:
    """The `test` provider signs as Stripe documents: t=…,v1=HMAC-SHA256("<t>.<body>")."""
    import hashlib
    import hmac

    from boxoffice.payments.providers import sign

    body = json.dumps({"id": "evt_1"}).encode()
    header = sign(b"whsec", body, timestamp=1700000000)
    mac = hmac.new(b"whsec", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={mac}"


async def test_a_refund_racing_a_second_notification_refunds_once(
    client: httpx.AsyncClient,
    make_event: EventFactory,
    provider: TestProvider,
    engine: AsyncEngine,
    settings: Settings,
) -> None:
    event = await make_event(rows=1, seats_per_row=2)
    held = await hold(client, event)
    payment = await checkout(client, held)
    await move_expiry_into_the_past(engine, held["id"])
    await hold(client, event, customer="rival@example.com")
    first = await notify(client, provider, payment)
    assert first.json() == {"outcome": "refund-seats-taken"}
    # The provider reports the same money again while the refunders pay it back.
    db = service_db(engine)
    providers = build_providers(settings).by_name
    results = await asyncio.gather(
        notify(client, provider, payment),
        refund_due(db, providers),
        notify(client, provider, payment),
        refund_due(db, providers),
    )
    outcomes = [r.json()["outcome"] for r in results if isinstance(r, httpx.Response)]
    assert outcomes == ["already-paid", "already-paid"]
    await refund_due(db, providers)
    row = await payment_row(engine, payment["id"])
    assert row["status"] == "refunded" and row["refund_attempts"] == 1
    async with engine.connect() as conn:
        refunds = await conn.scalar(
            text(
                "SELECT count(*) FROM audit_log WHERE action = 'payment-refunded'"
                " AND details->>'payment_id' = :p"
            ),
            {"p": payment["id"]},
        )
    assert refunds == 1
    assert await bookings_of(engine, held["id"]) == []
    await assert_invariants(engine, event["id"])


async def test_paying_for_a_lapsed_hold_cannot_pass_the_cap_per_customer(
    client: httpx.AsyncClient,
    make_event: EventFactory,
    provider: TestProvider,
    engine: AsyncEngine,
    settings: Settings,
) -> None:
    """A scalper holds to the cap, lets it lapse, holds to the cap again, then pays for the
    first hold late: its seats are free, but booking them would pass the cap."""
    event = await make_event(rows=1, seats_per_row=10)
    capped = await client.patch(
        f"/events/{event['id']}", json={"max_tickets_per_customer": 2}, headers=ADMIN
    )
    assert capped.status_code == 200, capped.text
    first = await hold(client, event, customer="scalper@example.com")
    payment = await checkout(client, first)
    await move_expiry_into_the_past(engine, first["id"])
    await hold(client, event, customer="Scalper@Example.com")
    answer = await notify(client, provider, payment)
    assert answer.json() == {"outcome": "refund-customer-limit"}
    assert (await payment_row(engine, payment["id"]))["refund_reason"] == "customer-limit"
    assert await bookings_of(engine, first["id"]) == []
    await assert_invariants(engine, event["id"])
