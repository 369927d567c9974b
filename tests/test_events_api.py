"""Events: creation with all their tickets in one call, counts, and keyset-paginated reads."""

import uuid
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from boxoffice.events.service import row_labels
from tests.conftest import ADMIN, EventFactory, assert_invariants, ticket_ids


async def create_event(client: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    response = await client.post("/events", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    return response


def seat_order(sections: list[tuple[str, int, int]]) -> list[str]:
    """Every seat label of a seated event, in the order a venue lists them."""
    return [
        f"{name} {row}-{seat}"
        for name, rows, seats in sections
        for row in row_labels(rows)
        for seat in range(1, seats + 1)
    ]


async def walk(
    client: httpx.AsyncClient, event_id: str, *, limit: int, **filters: str
) -> tuple[list[dict[str, Any]], list[int]]:
    """Every ticket the filters select, page by page; also the size of each page."""
    items: list[dict[str, Any]] = []
    sizes: list[int] = []
    after: int | None = None
    while True:
        params: dict[str, Any] = {"limit": limit, **filters}
        if after is not None:
            params["after"] = after
        response = await client.get(f"/events/{event_id}/tickets", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["items"]
        sizes.append(len(page["items"]))
        after = page["next_after"]
        if after is None:
            return items, sizes
        assert after == page["items"][-1]["id"]
        assert len(sizes) < 1000, "paging does not end"


async def test_create_event_returns_201_with_location_and_counts(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    body: dict[str, Any] = {
        "name": "Counts night",
        "venue": "Hall 1",
        "starts_at": "2031-05-01T19:30:00+02:00",
        "hold_seconds": 120,
        "currency": "USD",
        "sections": [
            {"name": "Stalls", "rows": 3, "seats_per_row": 4, "price": 4500},
            {"name": "Balcony", "rows": 2, "seats_per_row": 3, "price": 2500},
        ],
    }
    response = await create_event(client, body)
    event = response.json()
    event_id = event["id"]
    assert response.headers["location"] == f"/events/{event_id}"
    assert response.headers["content-type"].startswith("application/json")
    assert (event["name"], event["venue"], event["hold_seconds"]) == ("Counts night", "Hall 1", 120)
    assert datetime.fromisoformat(event["starts_at"]) == datetime.fromisoformat(body["starts_at"])
    assert (event["currency"], event["kind"], event["ticket_count"]) == ("USD", "seated", 18)
    assert event["counts"] == {"available": 18, "reserved": 0, "booked": 0}
    assert event["sections"] == [
        {"name": "Stalls", "tickets": 12, "available": 12},
        {"name": "Balcony", "tickets": 6, "available": 6},
    ]
    assert (await client.get(response.headers["location"])).json() == event

    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT name, venue, hold_seconds, currency, kind, ticket_count"
                    " FROM events WHERE id = :id"
                ),
                {"id": uuid.UUID(event_id)},
            )
        ).one()
        assert tuple(row) == ("Counts night", "Hall 1", 120, "USD", "seated", 18)
        prices = await conn.execute(
            text(
                "SELECT section, count(*), min(price_minor), max(price_minor) FROM tickets"
                " WHERE event_id = :id GROUP BY section ORDER BY section"
            ),
            {"id": uuid.UUID(event_id)},
        )
        assert [tuple(r) for r in prices] == [
            ("Balcony", 6, 2500, 2500),
            ("Stalls", 12, 4500, 4500),
        ]

    # Tickets carry the event's currency; counts follow holds and sales, per section too.
    ids = await ticket_ids(client, event_id)
    hold = await client.post(
        f"/events/{event_id}/reservations", json={"ticket_ids": ids[-2:], "customer": "c"}
    )
    assert hold.status_code == 201, hold.text
    assert {t["currency"] for t in hold.json()["tickets"]} == {"USD"}
    sale = await client.post(
        f"/events/{event_id}/reservations", json={"ticket_ids": ids[:1], "customer": "d"}
    )
    confirm = await client.post(
        f"/reservations/{sale.json()['id']}/confirm",
        json={"payment_reference": "p"},
        headers={"Authorization": f"Bearer {sale.json()['token']}"},
    )
    assert confirm.status_code == 200, confirm.text
    assert confirm.json()["total"] == 4500 and confirm.json()["currency"] == "USD"
    detail = (await client.get(f"/events/{event_id}")).json()
    assert detail["counts"] == {"available": 15, "reserved": 2, "booked": 1}
    assert detail["sections"] == [
        {"name": "Stalls", "tickets": 12, "available": 11},
        {"name": "Balcony", "tickets": 6, "available": 4},
    ]
    await assert_invariants(engine, event_id)


async def test_create_general_admission_event(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    body = {
        "name": "Field day",
        "starts_at": "2031-06-01T12:00:00Z",
        "general_admission": {"quantity": 250, "price": 1500},
    }
    event = (await create_event(client, body)).json()
    assert (event["kind"], event["ticket_count"], event["sections"]) == (
        "general_admission",
        250,
        [],
    )
    assert event["counts"] == {"available": 250, "reserved": 0, "booked": 0}
    assert event["currency"] == "EUR" and event["venue"] is None
    assert 1 <= event["hold_seconds"] <= 86_400
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT count(*), count(DISTINCT label), min(position), max(position),"
                    " count(section), count(row_label), count(seat), min(price_minor),"
                    " max(price_minor) FROM tickets WHERE event_id = :id"
                ),
                {"id": uuid.UUID(event["id"])},
            )
        ).one()
    assert tuple(row) == (250, 250, 0, 249, 0, 0, 0, 1500, 1500)
    await assert_invariants(engine, event["id"])


async def test_a_sixty_thousand_seat_event_is_created_in_one_request(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    sections = [
        {"name": f"Tier {n}", "rows": 100, "seats_per_row": 200, "price": 1000 * n}
        for n in (1, 2, 3)
    ]
    body = {"name": "Stadium", "starts_at": "2031-07-01T18:00:00Z", "sections": sections}
    event = (await create_event(client, body)).json()
    event_id = uuid.UUID(event["id"])
    assert event["ticket_count"] == 60_000
    assert event["counts"] == {"available": 60_000, "reserved": 0, "booked": 0}
    assert event["sections"] == [
        {"name": f"Tier {n}", "tickets": 20_000, "available": 20_000} for n in (1, 2, 3)
    ]

    async with engine.connect() as conn:
        totals = (
            await conn.execute(
                text(
                    "SELECT count(*), count(DISTINCT (section, row_label, seat)),"
                    " count(DISTINCT position), min(position), max(position),"
                    " count(*) FILTER (WHERE status = 'available') FROM tickets"
                    " WHERE event_id = :id"
                ),
                {"id": event_id},
            )
        ).one()
        assert tuple(totals) == (60_000, 60_000, 60_000, 0, 59_999, 60_000)
        per_section = await conn.execute(
            text(
                "SELECT section, min(position), max(position), count(DISTINCT row_label),"
                " min(seat), max(seat), min(price_minor), max(price_minor) FROM tickets"
                " WHERE event_id = :id GROUP BY section ORDER BY min(position)"
            ),
            {"id": event_id},
        )
        assert [tuple(r) for r in per_section] == [
            (f"Tier {n}", (n - 1) * 20_000, n * 20_000 - 1, 100, 1, 200, 1000 * n, 1000 * n)
            for n in (1, 2, 3)
        ]
        # Positions follow seat order: row by row, seat by seat, section by section.
        samples = await conn.execute(
            text(
                "SELECT position, label FROM tickets WHERE event_id = :id"
                " AND position = ANY(:positions) ORDER BY position"
            ),
            {"id": event_id, "positions": [0, 199, 200, 19_999, 20_000, 59_999]},
        )
        assert [tuple(r) for r in samples] == [
            (0, "Tier 1 A-1"),
            (199, "Tier 1 A-200"),
            (200, "Tier 1 B-1"),
            (19_999, "Tier 1 CV-200"),
            (20_000, "Tier 2 A-1"),
            (59_999, "Tier 3 CV-200"),
        ]
    page = await client.get(f"/events/{event_id}/tickets", params={"limit": 2})
    assert [t["label"] for t in page.json()["items"]] == ["Tier 1 A-1", "Tier 1 A-2"]
    last_tier = await client.get(
        f"/events/{event_id}/tickets", params={"section": "Tier 3", "limit": 1}
    )
    assert last_tier.json()["items"][0]["label"] == "Tier 3 A-1"
    await assert_invariants(engine, str(event_id))


async def test_list_events_is_keyset_paginated_by_start_time(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    def body(name: str, starts_at: str) -> dict[str, Any]:
        return {
            "name": name,
            "starts_at": starts_at,
            "general_admission": {"quantity": 2, "price": 100},
        }

    # Two share a start time, so the id must break the tie for pages to be stable.
    later = (await create_event(client, body("later", "2032-03-01T20:00:00Z"))).json()
    tie_a = (await create_event(client, body("tie a", "2032-02-01T20:00:00Z"))).json()
    tie_b = (await create_event(client, body("tie b", "2032-02-01T20:00:00Z"))).json()
    earlier = (await create_event(client, body("earlier", "2032-01-01T20:00:00Z"))).json()

    items: list[dict[str, Any]] = []
    after: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2}
        if after is not None:
            params["after"] = after
        response = await client.get("/events", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert 1 <= len(page["items"]) <= 2
        items += page["items"]
        pages += 1
        after = page["next_after"]
        if after is None:
            break
        assert after == page["items"][-1]["id"]
        assert pages < 1000, "paging does not end"

    ids = [item["id"] for item in items]
    assert len(ids) == len(set(ids)), "an event appeared on two pages"
    async with engine.connect() as conn:
        everything = await conn.execute(text("SELECT id FROM events ORDER BY starts_at, id"))
        assert ids == [str(row.id) for row in everything], "pages skipped or reordered events"
    keys = [(datetime.fromisoformat(i["starts_at"]), uuid.UUID(i["id"])) for i in items]
    assert keys == sorted(keys)
    mine = [i["id"] for i in items if i["id"] in {e["id"] for e in (later, tie_a, tie_b, earlier)}]
    ties = sorted([tie_a["id"], tie_b["id"]], key=uuid.UUID)
    assert mine == [earlier["id"], *ties, later["id"]]
    listed = next(i for i in items if i["id"] == earlier["id"])
    assert listed["counts"] == {"available": 2, "reserved": 0, "booked": 0}
    assert listed["ticket_count"] == 2 and "sections" not in listed

    # `after` continues right behind the named event.
    response = await client.get("/events", params={"after": ties[0], "limit": 1})
    page = response.json()
    assert [i["id"] for i in page["items"]] == [ties[1]]
    assert page["next_after"] == ties[1]


async def test_ticket_pages_walk_the_event_in_seat_order_without_gaps(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    layout = [("Left", 3, 4), ("Right", 2, 5)]
    event = await make_event(
        sections=[
            {"name": name, "rows": rows, "seats_per_row": seats, "price": 100}
            for name, rows, seats in layout
        ]
    )
    event_id = event["id"]
    expected = seat_order(layout)

    items, sizes = await walk(client, event_id, limit=5)
    assert [t["label"] for t in items] == expected
    assert sizes == [5, 5, 5, 5, 2]
    ids = [t["id"] for t in items]
    assert len(set(ids)) == len(ids) == 22
    async with engine.connect() as conn:
        positions = await conn.execute(
            text("SELECT id FROM tickets WHERE event_id = :id ORDER BY position"),
            {"id": uuid.UUID(event_id)},
        )
        assert [row.id for row in positions] == ids
    # A page size that divides the event exactly still ends with next_after = null.
    exact, sizes = await walk(client, event_id, limit=11)
    assert [t["id"] for t in exact] == ids and sizes[:2] == [11, 11] and sum(sizes) == 22
    one_page = (await client.get(f"/events/{event_id}/tickets", params={"limit": 500})).json()
    assert [t["id"] for t in one_page["items"]] == ids and one_page["next_after"] is None

    # Hold three seats, then sell one of them in a separate purchase.
    by_label = dict(zip(expected, ids, strict=True))
    held = [by_label["Left A-2"], by_label["Left C-1"], by_label["Right B-5"]]
    sold = by_label["Right A-1"]
    hold = await client.post(
        f"/events/{event_id}/reservations", json={"ticket_ids": held, "customer": "h"}
    )
    assert hold.status_code == 201, hold.text
    sale = await client.post(
        f"/events/{event_id}/reservations", json={"ticket_ids": [sold], "customer": "s"}
    )
    confirm = await client.post(
        f"/reservations/{sale.json()['id']}/confirm",
        json={"payment_reference": "p"},
        headers={"Authorization": f"Bearer {sale.json()['token']}"},
    )
    assert confirm.status_code == 200, confirm.text

    reserved, _ = await walk(client, event_id, limit=2, status="reserved")
    assert [t["id"] for t in reserved] == held
    assert {t["status"] for t in reserved} == {"reserved"}
    booked, _ = await walk(client, event_id, limit=2, status="booked")
    assert [(t["id"], t["status"]) for t in booked] == [(sold, "booked")]
    available, sizes = await walk(client, event_id, limit=4, status="available")
    assert [t["id"] for t in available] == [i for i in ids if i not in {*held, sold}]
    assert {t["status"] for t in available} == {"available"}
    assert sizes == [4, 4, 4, 4, 2]

    right, _ = await walk(client, event_id, limit=3, section="Right")
    assert [t["label"] for t in right] == [label for label in expected if label.startswith("Right")]
    right_free, _ = await walk(client, event_id, limit=3, section="Right", status="available")
    assert [t["label"] for t in right_free] == [
        f"Right {r}-{s}" for r in "AB" for s in range(1, 6) if (r, s) not in {("A", 1), ("B", 5)}
    ]
    nowhere = await client.get(f"/events/{event_id}/tickets", params={"section": "Pit"})
    assert nowhere.json() == {"items": [], "next_after": None}

    # The cursor is a position in seat order, even when it names a ticket the filter skips.
    response = await client.get(
        f"/events/{event_id}/tickets",
        params={"status": "available", "after": by_label["Left C-1"], "limit": 3},
    )
    assert [t["label"] for t in response.json()["items"]] == ["Left C-2", "Left C-3", "Left C-4"]
    await assert_invariants(engine, event_id)


async def test_row_labels_go_from_z_to_aa(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    event = await make_event(rows=28, seats_per_row=1)
    items, _ = await walk(client, event["id"], limit=500)
    rows = [t["row"] for t in items]
    assert rows == [chr(c) for c in range(ord("A"), ord("Z") + 1)] + ["AA", "AB"]
    assert [t["label"] for t in items[-3:]] == ["Main Z-1", "Main AA-1", "Main AB-1"]
    assert {t["seat"] for t in items} == {1}
    labels = row_labels(703)
    assert (labels[25], labels[26], labels[51], labels[52]) == ("Z", "AA", "AZ", "BA")
    assert (labels[701], labels[702]) == ("ZZ", "AAA")
    assert len(set(labels)) == 703
    await assert_invariants(engine, event["id"])
