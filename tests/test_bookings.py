"""The booking page's API: its own secret link, the calendar entry, the lookup."""

import uuid
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from boxoffice.bookings.links import booking_token
from boxoffice.config import Settings
from tests.conftest import SERVER_SECRET, EventFactory


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def book(client: httpx.AsyncClient, event: dict[str, Any], customer: str) -> dict[str, Any]:
    held = await client.post(
        f"/events/{event['id']}/reservations", json={"quantity": 2, "customer": customer}
    )
    assert held.status_code == 201, held.text
    hold = held.json()
    booked = await client.post(
        f"/reservations/{hold['id']}/confirm",
        json={"payment_reference": "p"},
        headers=bearer(hold["token"]),
    )
    assert booked.status_code == 200, booked.text
    booking: dict[str, Any] = booked.json()
    return booking


async def test_the_booking_link_shows_the_tickets_and_nothing_else_does(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    event = await make_event(name="Booking page night")
    booking = await book(client, event, "ada@example.com")
    secret = booking["booking_url"].split("#", 1)[1]
    page = await client.get(f"/bookings/{booking['id']}", headers=bearer(secret))
    assert page.status_code == 200, page.text
    shown = page.json()
    assert shown["code"] == booking["code"] and shown["status"] == "confirmed"
    assert shown["event_name"] == "Booking page night"
    async with engine.connect() as conn:
        codes = set(
            (
                await conn.execute(
                    text("SELECT code FROM issued_tickets WHERE booking_id = :b"),
                    {"b": booking["id"]},
                )
            ).scalars()
        )
    assert {t["code"] for t in shown["tickets"]} == codes and len(codes) == 2
    assert all(t["qr"].startswith("data:image/svg+xml;base64,") for t in shown["tickets"])

    # Without the secret, with the hold's token, with another booking's secret: nothing.
    other = await book(client, event, "bob@example.com")
    other_secret = other["booking_url"].split("#", 1)[1]
    assert (await client.get(f"/bookings/{booking['id']}")).status_code == 401
    for wrong in (other_secret, secret + "0", "x" * 40):
        answer = await client.get(f"/bookings/{booking['id']}", headers=bearer(wrong))
        assert answer.status_code == 404, wrong
        assert answer.json()["type"].endswith("/booking-not-found")
    # The secret is the server's signature, not something the database could reproduce.
    forged = booking_token(Settings(server_secret="y" * 40), uuid.UUID(booking["id"]))
    assert (
        await client.get(f"/bookings/{booking['id']}", headers=bearer(forged))
    ).status_code == 404
    assert booking_token(Settings(server_secret=SERVER_SECRET), uuid.UUID(booking["id"])) == secret

    ics = await client.get(f"/bookings/{booking['id']}/calendar.ics", headers=bearer(secret))
    assert ics.status_code == 200 and ics.headers["content-type"].startswith("text/calendar")
    assert "DTSTART:20300101T200000Z\r\n" in ics.text and booking["code"] in ics.text
    assert (await client.get(f"/bookings/{booking['id']}/calendar.ics")).status_code == 401


async def test_lookup_answers_the_same_either_way_and_mails_only_the_owner(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    event = await make_event()
    booking = await book(client, event, "Grace@Example.com")
    # The client address is its own for this test: the lookup's limit is per client.
    headers = {"X-Forwarded-For": f"198.51.100.{uuid.uuid4().int % 250}"}
    answers = [
        await client.post("/booking-lookups", json={"email": email, "code": code}, headers=headers)
        for email, code in [
            (" grace@example.com ", booking["code"].lower()),
            ("mallory@example.com", booking["code"]),
            ("grace@example.com", "ZZZZZZ"),
        ]
    ]
    assert [a.status_code for a in answers] == [202, 202, 202]
    assert len({a.text for a in answers}) == 1
    async with engine.connect() as conn:
        mails = (
            (
                await conn.execute(
                    text(
                        "SELECT recipient FROM outbox_messages"
                        " WHERE booking_id = :b AND kind = 'booking-link'"
                    ),
                    {"b": booking["id"]},
                )
            )
            .scalars()
            .all()
        )
    assert mails == ["Grace@Example.com"]


async def test_lookup_is_rate_limited(client: httpx.AsyncClient) -> None:
    codes = [
        (
            await client.post(
                "/booking-lookups", json={"email": "eve@example.com", "code": f"AAAA{i:02d}"}
            )
        ).status_code
        for i in range(12)
    ]
    assert codes.count(202) <= 6 and codes[-1] == 429, codes
