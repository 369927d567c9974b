"""The pages without a browser: what the server renders before any script runs, the HTML 404
page, the static files, and that no secret ever sits in a page or a URL."""

import re
import uuid
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx

from boxoffice.config import Settings
from boxoffice.main import create_app
from tests.conftest import ADMIN_TOKEN, EventFactory, free_port, ticket_ids
from tests.support.problems import bearer

STATIC = Path(__file__).parent.parent / "src" / "boxoffice" / "web" / "static"


class Elements(HTMLParser):
    """Every start tag of a page with its attributes, in document order."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str]]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, {name: value or "" for name, value in attrs}))

    def all(self, tag: str, **attrs: str) -> list[dict[str, str]]:
        return [
            found
            for name, found in self.found
            if name == tag and all(found.get(k.replace("_", "-")) == v for k, v in attrs.items())
        ]


def seats_of(html: str) -> list[dict[str, str]]:
    return [b for b in Elements(html).all("button") if "seat" in b.get("class", "").split()]


async def html_page(client: httpx.AsyncClient, path: str, status: int = 200) -> str:
    response = await client.get(path)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html")
    # Scripts only from this site, and no Referer that could carry a page's address away.
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["referrer-policy"] == "no-referrer"
    return response.text


async def reserve(
    client: httpx.AsyncClient, event_id: str, ids: list[int], pay: bool = False
) -> dict[str, Any]:
    response = await client.post(
        f"/events/{event_id}/reservations", json={"ticket_ids": ids, "customer": "web@test"}
    )
    assert response.status_code == 201, response.text
    hold: dict[str, Any] = response.json()
    if pay:
        paid = await client.post(
            f"/reservations/{hold['id']}/confirm",
            json={"payment_reference": "pay_web"},
            headers=bearer(hold["token"]),
        )
        assert paid.status_code == 200, paid.text
    return hold


async def test_the_event_list_links_every_event(
    client: httpx.AsyncClient, make_event: EventFactory
) -> None:
    name = f"Listed {uuid.uuid4().hex[:8]}"
    event = await make_event(name=name)
    await reserve(client, event["id"], (await ticket_ids(client, event["id"]))[:3])
    # Follow "Later events" until the event shows up: other tests make events too.
    path: str | None = "/"
    while path is not None:
        html = await html_page(client, path)
        if name in html:
            break
        later = [
            a["href"] for a in Elements(html).all("a") if a.get("href", "").startswith("/?after=")
        ]
        path = later[0] if later else None
    else:
        raise AssertionError(f"{name} is on no page of the event list")
    card = html[html.index(name) :]
    card = card[: card.index("</article>")]
    assert f'href="/shop/events/{event["id"]}"' in html
    assert "<strong>7</strong> of 10 available" in card
    assert "3 on hold" in card and "0 sold" in card
    assert "Choose seats" in card


async def test_the_seat_map_is_drawn_on_the_server_with_labels(
    client: httpx.AsyncClient, make_event: EventFactory
) -> None:
    event = await make_event(
        sections=[
            {"name": "Stalls", "rows": 2, "seats_per_row": 4, "price": 2500},
            {"name": "Balcony", "rows": 1, "seats_per_row": 3, "price": 1250},
        ]
    )
    ids = await ticket_ids(client, event["id"])
    await reserve(client, event["id"], [ids[1]])
    await reserve(client, event["id"], [ids[2]], pay=True)

    html = await html_page(client, f"/shop/events/{event['id']}")
    seats = seats_of(html)
    assert [int(s["data-id"]) for s in seats] == ids
    labels = [s["aria-label"] for s in seats]
    assert labels[:4] == [
        "Row A, seat 1, available, €25.00",
        "Row A, seat 2, held by another buyer, €25.00",
        "Row A, seat 3, sold, €25.00",
        "Row A, seat 4, available, €25.00",
    ]
    assert labels[-1] == "Row A, seat 3, available, €12.50"
    assert [s.get("aria-disabled") for s in seats[:4]] == [None, "true", "true", None]
    assert [s["data-state"] for s in seats[:4]] == ["available", "reserved", "booked", "available"]
    assert all(s["type"] == "button" and s["aria-pressed"] == "false" for s in seats)
    assert seats[4]["data-label"] == "Stalls B-1" and seats[4]["title"].startswith("Stalls B-1")
    # Rows are labelled groups; the legend says in words what each colour means.
    groups = [g["aria-label"] for g in Elements(html).all("div", role="group")]
    assert groups == ["Stalls, row A", "Stalls, row B", "Balcony, row A"]
    for words in ("Available", "Selected", "Held by you", "Held by another buyer", "Sold"):
        assert f"</span>{words}</li>" in html
    assert ">Stage<" in html
    assert '<span data-section-available="Stalls">6</span> of 8 free' in html
    assert '<strong id="available-count">9</strong>' in html
    # Every form control has a label.
    for control in Elements(html).all("input") + Elements(html).all("select"):
        assert f'for="{control["id"]}"' in html, control


async def test_general_admission_offers_a_quantity(
    client: httpx.AsyncClient, make_event: EventFactory
) -> None:
    event = await make_event(general_admission=30)
    html = await html_page(client, f"/shop/events/{event['id']}")
    assert seats_of(html) == []
    [quantity] = Elements(html).all("input", id="quantity")
    assert quantity["type"] == "number" and quantity["max"] == "10"
    assert '<label for="quantity">Number of tickets</label>' in html
    assert "<strong>€10.00</strong> per ticket" in html
    assert 'data-unit-price="1000"' in html


async def test_a_large_event_is_drawn_one_section_at_a_time(
    client: httpx.AsyncClient, make_event: EventFactory
) -> None:
    event = await make_event(
        sections=[
            {"name": "Floor", "rows": 40, "seats_per_row": 50, "price": 5000},
            {"name": "Tier", "rows": 40, "seats_per_row": 50, "price": 3000},
            {"name": "Lawn", "rows": 70, "seats_per_row": 50, "price": 1000},
        ]
    )
    first = await html_page(client, f"/shop/events/{event['id']}")
    assert len(seats_of(first)) == 2000
    assert {s["data-section"] for s in seats_of(first)} == {"Floor"}
    assert 'href="?section=Tier"' in first
    tier = await html_page(client, f"/shop/events/{event['id']}?section=Tier")
    assert {s["data-section"] for s in seats_of(tier)} == {"Tier"}
    # Too large to draw: best available in that section instead.
    lawn = await html_page(client, f"/shop/events/{event['id']}?section=Lawn")
    assert seats_of(lawn) == []
    assert "The Lawn section is too large to draw" in lawn
    assert '<option value="Lawn" selected>' in lawn


async def test_names_are_escaped(client: httpx.AsyncClient, make_event: EventFactory) -> None:
    event = await make_event(name='<script>alert("x")</script>')
    html = await html_page(client, f"/shop/events/{event['id']}")
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html


async def test_what_does_not_exist_is_an_html_404(client: httpx.AsyncClient) -> None:
    for path in (
        f"/shop/events/{uuid.uuid4()}",
        "/shop/events/not-an-id",
        "/shop/reservations/not-an-id",
        "/shop/no/such/page",
        "/?after=nonsense",
        f"/?after={uuid.uuid4()}",
    ):
        html = await html_page(client, path, status=404)
        assert "We could not find that page" in html, path
        assert 'href="/"' in html


async def test_while_the_database_is_away_a_page_says_so() -> None:
    nowhere = f"postgresql://nobody@127.0.0.1:{free_port()}/nothing"
    settings = Settings(database_url=nowhere, admin_token=ADMIN_TOKEN, sweep_interval_seconds=0)
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://page") as client,
    ):
        response = await client.get(f"/shop/events/{uuid.uuid4()}")
        assert (await client.get("/admin")).status_code == 200
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["retry-after"] == "2"
    assert "The box office is very busy" in response.text


async def test_the_booking_page_holds_nothing_but_the_reservation_id(
    client: httpx.AsyncClient,
) -> None:
    reservation_id = str(uuid.uuid4())
    html = await html_page(client, f"/shop/reservations/{reservation_id}")
    assert f'data-reservation-id="{reservation_id}"' in html
    # The script reads the booking with the token this tab kept; the server knows no more.
    assert Elements(html).all("tbody", id="booking-tickets") == [{"id": "booking-tickets"}]
    assert "booking.js" in html


async def test_the_admin_page_shows_nothing_without_the_token(
    client: httpx.AsyncClient, make_event: EventFactory
) -> None:
    name = f"Secret plans {uuid.uuid4().hex[:8]}"
    await make_event(name=name)
    html = await html_page(client, "/admin")
    assert name not in html
    assert Elements(html).all("tbody", id="events-body") == [{"id": "events-body"}]
    [field] = Elements(html).all("input", id="admin-token")
    assert field["type"] == "password" and field["autocomplete"] == "off"
    assert '<label for="admin-token">Admin token</label>' in html
    assert ADMIN_TOKEN not in html


async def test_static_files_are_served(client: httpx.AsyncClient) -> None:
    html = await html_page(client, "/admin")
    assets = [link["href"] for link in Elements(html).all("link")]
    assets += [script["src"] for script in Elements(html).all("script") if "src" in script]
    expected = {
        "app.css": "text/css",
        "favicon.svg": "image/svg+xml",
        "common.js": "javascript",
        "admin.js": "javascript",
    }
    assert {re.sub(r"^/static/|\?v=\w+$", "", url) for url in assets} == set(expected)
    for url in assets:
        response = await client.get(url)
        assert response.status_code == 200, url
        name = re.sub(r"^/static/|\?v=\w+$", "", url)
        assert expected[name] in response.headers["content-type"]
        assert response.content == (STATIC / name).read_bytes()
    assert (await client.get("/static/nothing.js")).status_code == 404


async def test_no_token_travels_in_a_url(
    client: httpx.AsyncClient, make_event: EventFactory
) -> None:
    event = await make_event()
    for path in ("/", f"/shop/events/{event['id']}", f"/shop/reservations/{uuid.uuid4()}"):
        html = await html_page(client, path)
        for tag, attrs in Elements(html).found:
            for name in ("href", "src", "action"):
                assert "token" not in attrs.get(name, "").lower(), (tag, attrs)
    # The scripts build no URL with a token in it; they send tokens as a header only.
    for script in STATIC.rglob("*.js"):
        source = script.read_text()
        assert not re.search(r"""[`'"]/[^`'"\n]*token""", source, re.IGNORECASE), script
        assert "token=" not in source.lower(), script
    assert "Authorization = `Bearer ${token}`" in (STATIC / "common.js").read_text()


async def test_the_pages_stay_out_of_the_api_schema(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert not [p for p in paths if p == "/" or p.startswith(("/shop", "/admin", "/static"))]
