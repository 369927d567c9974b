"""Bad input never reaches the database and never makes a 500.

Every case is one request that must be refused with an RFC 9457 `application/problem+json`
body carrying `type`, `title`, `status` and `detail`; and after each one, the database must
be exactly as it was (no event, ticket, hold, booking or audit row added or changed).
"""

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import ADMIN, assert_invariants
from tests.support.problems import assert_problem

UNKNOWN = "00000000-0000-4000-8000-000000000000"
NO_SUCH_TICKET = 2**62
TOO_BIG = 2**63  # one past the largest bigint


@dataclass
class Target:
    """An event in a known state: ten free seats, one held, one booked."""

    event: str
    ids: list[int]
    free: list[int]
    held_ticket: int
    booked_ticket: int
    held: str
    held_token: str
    other_event: str
    other_ticket: int
    snapshot: dict[str, Any] = field(default_factory=dict)

    def fields(self) -> dict[str, Any]:
        return {
            "event": self.event,
            "other_event": self.other_event,
            "other_ticket": self.other_ticket,
            "held": self.held,
            "free0": self.free[0],
            "held_ticket": self.held_ticket,
            "unknown": UNKNOWN,
            "no_such_ticket": NO_SUCH_TICKET,
            "too_big": TOO_BIG,
        }


@dataclass(frozen=True)
class Raw:
    """A body sent byte for byte, not JSON-encoded by the client."""

    content: bytes
    content_type: str = "application/json"


Body = Any  # JSON value, Raw, a callable taking the Target, or None for no body


async def _snapshot(engine: AsyncEngine, event_id: str) -> dict[str, Any]:
    """Everything a stray write could change: row counts, and the target event's state."""
    async with engine.connect() as conn:
        totals = (
            await conn.execute(
                text(
                    "SELECT (SELECT count(*) FROM events) AS events,"
                    " (SELECT count(*) FROM tickets) AS tickets,"
                    " (SELECT count(*) FROM reservations) AS reservations,"
                    " (SELECT count(*) FROM reservation_tickets) AS reservation_tickets,"
                    " (SELECT count(*) FROM bookings) AS bookings,"
                    " (SELECT count(*) FROM ticket_audit) AS audit"
                )
            )
        ).one()
        tickets = await conn.execute(
            text(
                "SELECT id, status::text, reservation_id, booking_id, hold_expires_at"
                " FROM tickets WHERE event_id = :id ORDER BY id"
            ),
            {"id": uuid.UUID(event_id)},
        )
        reservations = await conn.execute(
            text(
                "SELECT id, status::text, expires_at, ended_at FROM reservations"
                " WHERE event_id = :id ORDER BY id"
            ),
            {"id": uuid.UUID(event_id)},
        )
        return {
            "totals": dict(totals._mapping),
            "tickets": [tuple(row) for row in tickets],
            "reservations": [tuple(row) for row in reservations],
        }


@pytest_asyncio.fixture(scope="module")
async def target(live_server: str, engine: AsyncEngine) -> AsyncIterator[Target]:
    async with httpx.AsyncClient(base_url=live_server, timeout=30) as client:
        seated = {
            "name": "Bad input target",
            "starts_at": "2030-06-01T20:00:00Z",
            "sections": [{"name": "Main", "rows": 2, "seats_per_row": 6, "price": 1200}],
        }
        response = await client.post("/events", json=seated, headers=ADMIN)
        assert response.status_code == 201, response.text
        event = response.json()["id"]
        other_body = {
            "name": "Another event",
            "starts_at": "2030-06-02T20:00:00Z",
            "general_admission": {"quantity": 2, "price": 100},
        }
        response = await client.post("/events", json=other_body, headers=ADMIN)
        assert response.status_code == 201, response.text
        other_event = response.json()["id"]
        ids = [t["id"] for t in (await client.get(f"/events/{event}/tickets")).json()["items"]]
        other = (await client.get(f"/events/{other_event}/tickets")).json()["items"]
        assert len(ids) == 12 and len(other) == 2

        hold = await client.post(
            f"/events/{event}/reservations", json={"ticket_ids": [ids[0]], "customer": "held"}
        )
        assert hold.status_code == 201, hold.text
        sale = await client.post(
            f"/events/{event}/reservations", json={"ticket_ids": [ids[1]], "customer": "sold"}
        )
        assert sale.status_code == 201, sale.text
        confirm = await client.post(
            f"/reservations/{sale.json()['id']}/confirm",
            json={"payment_reference": "paid"},
            headers={"Authorization": f"Bearer {sale.json()['token']}"},
        )
        assert confirm.status_code == 200, confirm.text

    result = Target(
        event=event,
        ids=ids,
        free=ids[2:],
        held_ticket=ids[0],
        booked_ticket=ids[1],
        held=hold.json()["id"],
        held_token=hold.json()["token"],
        other_event=other_event,
        other_ticket=other[0]["id"],
    )
    result.snapshot = await _snapshot(engine, event)
    yield result


@pytest_asyncio.fixture
async def unchanged(target: Target, engine: AsyncEngine) -> AsyncIterator[None]:
    """Fails the test if the database differs after it from before it."""
    before = await _snapshot(engine, target.event)
    yield
    assert await _snapshot(engine, target.event) == before
    await assert_invariants(engine, target.event)


async def send(
    client: httpx.AsyncClient,
    target: Target,
    method: str,
    path: str,
    body: Body,
    auth: str | None,
) -> httpx.Response:
    headers: dict[str, str] = {}
    if auth == "admin":
        headers.update(ADMIN)
    elif auth == "holder":
        headers["Authorization"] = f"Bearer {target.held_token}"
    elif auth is not None:
        headers["Authorization"] = auth
    if callable(body):
        body = body(target)
    kwargs: dict[str, Any] = {}
    if isinstance(body, Raw):
        kwargs["content"] = body.content
        headers["content-type"] = body.content_type
    elif body is not None:
        kwargs["json"] = body
    return await client.request(method, path.format(**target.fields()), headers=headers, **kwargs)


INVALID = "invalid-request"


def case(
    method: str,
    path: str,
    body: Body,
    status: int = 422,
    slug: str = INVALID,
    *,
    id: str,
    auth: str | None = None,
    bug: str | None = None,
) -> Any:
    marks = [pytest.mark.xfail(reason=bug, strict=True)] if bug else []
    return pytest.param(method, path, body, auth, status, slug, id=id, marks=marks)


RESERVE = "/events/{event}/reservations"
CONFIRM = "/reservations/{held}/confirm"


def reserve(id: str, body: Body, status: int = 422, slug: str = INVALID, **kw: Any) -> Any:
    return case("POST", kw.pop("path", RESERVE), body, status, slug, id=id, **kw)


def get(id: str, path: str, status: int = 422, slug: str = INVALID, **kw: Any) -> Any:
    return case("GET", path, None, status, slug, id=id, **kw)


def seed(id: str, body: Body, status: int = 422, slug: str = INVALID, **kw: Any) -> Any:
    return case("PATCH", "/tickets/reserve", body, status, slug, id=id, **kw)


def confirm(id: str, body: Body, status: int = 422, slug: str = INVALID, **kw: Any) -> Any:
    return case("POST", CONFIRM, body, status, slug, id=id, **{"auth": "holder", **kw})


def new_event(id: str, body: Body, status: int = 422, slug: str = INVALID, **kw: Any) -> Any:
    return case("POST", "/events", body, status, slug, id=id, **{"auth": "admin", **kw})


def ids(pick: Callable[[Target], list[Any]], customer: str = "c") -> Callable[[Target], Any]:
    return lambda t: {"ticket_ids": pick(t), "customer": customer}


def qty(quantity: Any, **more: Any) -> dict[str, Any]:
    return {"quantity": quantity, "customer": "c", **more}


def seed_body(user_id: Any, pick: Callable[[Target], int] = lambda t: t.free[0]) -> Body:
    return lambda t: {"user_id": user_id, "ticket_id": pick(t)}


RESERVATION_CASES = [
    reserve("ids-empty", ids(lambda t: [])),
    reserve("qty-0", qty(0)),
    reserve("qty-string", qty("2")),
    reserve("qty-bool", qty(True)),
    reserve("ids-strings", {"ticket_ids": ["1"], "customer": "x"}),
    reserve("qty-negative", qty(-2)),
    reserve("qty-11", qty(11)),
    reserve("qty-string", qty("two")),
    reserve("qty-float", qty(1.5)),
    reserve("qty-huge", qty(2**64)),
    reserve("ids-and-qty", lambda t: {"ticket_ids": t.free[:1], "quantity": 1, "customer": "c"}),
    reserve("neither", {"customer": "c"}),
    reserve("section-with-ids", lambda t: {**ids(lambda t: t.free[:1])(t), "section": "Main"}),
    reserve("duplicate-ids", ids(lambda t: [t.free[0], t.free[0]])),
    reserve("duplicate-in-11", ids(lambda t: [*t.free, t.free[0]])),
    reserve("eleven-ids", ids(lambda t: t.ids[:11])),
    reserve("other-event-ticket", ids(lambda t: [t.other_ticket]), 422, "unknown-tickets"),
    reserve(
        "mixed-other-ticket", ids(lambda t: [t.free[0], t.other_ticket]), 422, "unknown-tickets"
    ),
    reserve("no-such-ticket", ids(lambda t: [NO_SUCH_TICKET]), 422, "unknown-tickets"),
    reserve("id-0", ids(lambda t: [0])),
    reserve("id-negative", ids(lambda t: [-1])),
    reserve("id-beyond-bigint", ids(lambda t: [TOO_BIG])),
    reserve("id-string", ids(lambda t: ["abc"])),
    reserve("id-float", ids(lambda t: [1.5])),
    reserve("ids-as-string", {"ticket_ids": "1,2", "customer": "c"}),
    reserve("no-customer", {"quantity": 1}),
    reserve("customer-empty", qty(1, customer="")),
    reserve("customer-too-long", qty(1, customer="x" * 201)),
    reserve("customer-int", qty(1, customer=42)),
    reserve("customer-null", qty(1, customer=None)),
    reserve("section-empty", qty(1, section="")),
    reserve("section-too-long", qty(1, section="s" * 61)),
    reserve("extra-field", qty(1, price=0)),
    reserve("body-list", [1, 2]),
    reserve("body-string", "tickets please"),
    reserve("body-null", Raw(b"null")),
    reserve("malformed-json", Raw(b'{"quantity": 1,')),
    reserve("empty-body", Raw(b"")),
    reserve("not-utf8", Raw(b"\xff\xfe{}")),
    reserve("text-plain", Raw(b'{"quantity": 1, "customer": "c"}', "text/plain")),
    reserve("lone-surrogate", Raw(b'{"quantity": 1, "customer": "\\ud800"}')),
    reserve("held-ticket", ids(lambda t: [t.held_ticket]), 409, "tickets-unavailable"),
    reserve(
        "booked-ticket", ids(lambda t: [t.booked_ticket, t.free[0]]), 409, "tickets-unavailable"
    ),
    reserve("no-such-section", qty(1, section="Pit"), 422, "unknown-section"),
    reserve(
        "unknown-event-ids",
        ids(lambda t: t.free[:1]),
        404,
        "event-not-found",
        path="/events/{unknown}/reservations",
    ),
    reserve(
        "unknown-event-qty", qty(1), 404, "event-not-found", path="/events/{unknown}/reservations"
    ),
    reserve("event-not-a-uuid", qty(1), path="/events/x/reservations"),
]

READ_CASES = [
    get("event-not-a-uuid", "/events/not-a-uuid"),
    get("event-unknown", "/events/{unknown}", 404, "event-not-found"),
    get("tickets-not-a-uuid", "/events/x/tickets"),
    get("tickets-unknown-event", "/events/{unknown}/tickets", 404, "event-not-found"),
    get("events-limit-0", "/events?limit=0"),
    get("events-limit-over-max", "/events?limit=501"),
    get("tickets-limit-over-max", "/events/{event}/tickets?limit=501"),
    get("seed-limit-over-max", "/tickets?limit=501"),
    get("events-limit-negative", "/events?limit=-3"),
    get("events-limit-string", "/events?limit=ten"),
    get("events-after-not-uuid", "/events?after=nope"),
    get("events-after-unknown", "/events?after={unknown}"),
    get("tickets-limit-0", "/events/{event}/tickets?limit=0"),
    get("tickets-after-negative", "/events/{event}/tickets?after=-1"),
    get("tickets-after-0", "/events/{event}/tickets?after=0"),
    get("tickets-after-bigint", "/events/{event}/tickets?after={too_big}"),
    get("tickets-after-string", "/events/{event}/tickets?after=abc"),
    get("tickets-after-unknown", "/events/{event}/tickets?after={no_such_ticket}"),
    get("tickets-after-other-event", "/events/{event}/tickets?after={other_ticket}"),
    get("tickets-status-bogus", "/events/{event}/tickets?status=bogus"),
    get("tickets-section-empty", "/events/{event}/tickets?section="),
    get("seed-limit-0", "/tickets?limit=0"),
    get("seed-after-negative", "/tickets?after=-1"),
    get("seed-after-bigint", "/tickets?after={too_big}"),
    get("unknown-route", "/nope", 404, "not-found"),
    get("unknown-subroute", "/events/{event}/nope", 404, "not-found"),
    case("POST", "/reservations", {}, 404, "not-found", id="unknown-post-route"),
]

SEED_CASES = [
    seed("empty", {}),
    seed("no-ticket", {"user_id": 1}),
    seed("no-user", lambda t: {"ticket_id": t.free[0]}),
    seed("ticket-0", {"user_id": 1, "ticket_id": 0}),
    seed("ticket-string", {"user_id": 1, "ticket_id": "x"}),
    seed("ticket-beyond-bigint", {"user_id": 1, "ticket_id": TOO_BIG}),
    seed("ticket-unknown", {"user_id": 1, "ticket_id": NO_SUCH_TICKET}, 404, "not-found"),
    seed("ticket-held", seed_body(2, lambda t: t.held_ticket), 409, "tickets-unavailable"),
    seed("malformed-json", Raw(b"{")),
]

HOLDER_CASES = [
    get("get-not-a-uuid", "/reservations/xyz", auth="holder"),
    get("get-unknown", "/reservations/{unknown}", 404, "reservation-not-found", auth="holder"),
    case(
        "POST",
        "/reservations/{unknown}/confirm",
        {"payment_reference": "p"},
        404,
        "reservation-not-found",
        id="confirm-unknown",
        auth="holder",
    ),
    case(
        "DELETE",
        "/reservations/{unknown}",
        None,
        404,
        "reservation-not-found",
        id="release-unknown",
        auth="holder",
    ),
    case(
        "POST",
        "/reservations/xyz/confirm",
        {"payment_reference": "p"},
        id="confirm-not-a-uuid",
        auth="holder",
    ),
    get("get-no-token", "/reservations/{held}", 401, "unauthorized"),
    confirm("confirm-no-token", {"payment_reference": "p"}, 401, "unauthorized", auth=None),
    case("DELETE", "/reservations/{held}", None, 401, "unauthorized", id="release-no-token"),
    confirm(
        "confirm-wrong-token",
        {"payment_reference": "p"},
        404,
        "reservation-not-found",
        auth="Bearer wrong",
    ),
    confirm("payment-ref-missing", {}),
    confirm("payment-ref-empty", {"payment_reference": ""}),
    confirm("payment-ref-too-long", {"payment_reference": "p" * 201}),
    confirm("payment-ref-int", {"payment_reference": 7}),
    confirm("payment-ref-null", {"payment_reference": None}),
    confirm("extra-field", {"payment_reference": "p", "amount": 1}),
    confirm("no-body", None),
    confirm("malformed-json", Raw(b"{'payment_reference': 'p'}")),
]


def event_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Should not exist",
        "starts_at": "2030-01-01T20:00:00Z",
        "sections": [section()],
    }
    body.update(changes)
    return {key: value for key, value in body.items() if value is not None}


def section(**changes: Any) -> dict[str, Any]:
    return {"name": "A", "rows": 1, "seats_per_row": 2, "price": 100, **changes}


def ga(quantity: int) -> dict[str, Any]:
    return event_body(sections=None, general_admission={"quantity": quantity, "price": 1})


BIG_SECTIONS = [section(name=name, rows=500, seats_per_row=1000) for name in "XYZ"]
EVENT_CASES = [
    new_event("no-token", event_body(), 401, "unauthorized", auth=None),
    new_event("wrong-token", event_body(), 403, "forbidden", auth="Bearer not-the-admin-token"),
    new_event(
        "basic-auth",
        event_body(),
        401,
        "unauthorized",
        auth="Basic " + ADMIN["Authorization"].split()[1],
    ),
    new_event("sections-and-ga", event_body(general_admission={"quantity": 2, "price": 1})),
    new_event("no-layout", event_body(sections=None)),
    new_event("naive-starts-at", event_body(starts_at="2030-01-01T20:00:00")),
    new_event("starts-at-text", event_body(starts_at="tomorrow")),
    new_event("starts-at-number", event_body(starts_at=0)),
    new_event("no-starts-at", {"name": "n", "sections": [section()]}),
    new_event("no-name", {"starts_at": "2030-01-01T20:00:00Z", "sections": [section()]}),
    new_event("name-empty", event_body(name="")),
    new_event("name-too-long", event_body(name="n" * 201)),
    new_event("currency-lowercase", event_body(currency="eur")),
    new_event("currency-four-letters", event_body(currency="EURO")),
    new_event("hold-0", event_body(hold_seconds=0)),
    new_event("hold-over-a-day", event_body(hold_seconds=86_401)),
    new_event("sections-empty", event_body(sections=[])),
    new_event("duplicate-sections", event_body(sections=[section(), section()])),
    new_event("rows-0", event_body(sections=[section(rows=0)])),
    new_event("seats-0", event_body(sections=[section(seats_per_row=0)])),
    new_event("rows-string", event_body(sections=[section(rows="many")])),
    new_event("rows-beyond-bigint", event_body(sections=[section(rows=TOO_BIG)])),
    new_event("price-negative", event_body(sections=[section(price=-1)])),
    new_event("price-huge", event_body(sections=[section(price=100_000_001)])),
    new_event("price-float", event_body(sections=[section(price=9.99)])),
    new_event("section-name-empty", event_body(sections=[section(name="")])),
    new_event("section-extra-field", event_body(sections=[section(colour="red")])),
    new_event("101-sections", event_body(sections=[section(name=f"S{n}") for n in range(101)])),
    new_event("too-many-tickets", event_body(sections=BIG_SECTIONS)),
    new_event(
        "one-section-over-limit", event_body(sections=[section(rows=201, seats_per_row=1000)])
    ),
    new_event("ga-over-limit", ga(200_001)),
    new_event("ga-zero", ga(0)),
    new_event("extra-field", event_body(kind="seated")),
    new_event("malformed-json", Raw(b'{"name": "n"')),
]

METHOD_CASES = [
    case("PUT", "/events/{event}", {}, 405, "method-not-allowed", id="put-event"),
    case("PUT", "/events", {}, 405, "method-not-allowed", id="put-events"),
    case("PATCH", "/events/{event}/tickets", {}, 405, "method-not-allowed", id="patch-tickets"),
    case("GET", CONFIRM, None, 405, "method-not-allowed", id="get-confirm", auth="holder"),
    case("GET", "/tickets/reserve", None, 405, "method-not-allowed", id="get-seed-reserve"),
    case("POST", "/tickets", {}, 405, "method-not-allowed", id="post-seed-list"),
]

NUL = "a\x00b"
# Values that pass validation but PostgreSQL cannot store: a NUL character in text, and a
# starts_at whose UTC value leaves the year range asyncpg can encode.
UNSTORABLE_CASES = [
    reserve("nul-customer-ids", ids(lambda t: t.free[:1], customer=NUL)),
    reserve("nul-customer-qty", qty(1, customer=NUL)),
    reserve("nul-section", qty(1, section=NUL)),
    get("nul-section-query", "/events/{event}/tickets?section=a%00b"),
    confirm("nul-payment-ref", {"payment_reference": NUL}),
    new_event("nul-event-name", event_body(name=NUL)),
    new_event("nul-venue", event_body(venue=NUL)),
    new_event("nul-section-name", event_body(sections=[section(name=NUL)])),
    seed("nul-seed-user", seed_body(NUL)),
    new_event("starts-after-9999", event_body(starts_at="9999-12-31T23:59:59-14:00")),
    new_event("starts-before-1", event_body(starts_at="0001-01-01T00:00:00+14:00")),
]

# Once answered 500: the seed endpoint stored any user_id as the customer unchecked.
SEED_USER_CASES = [
    seed("seed-user-empty", seed_body("")),
    seed("seed-user-too-long", seed_body("u" * 201)),
    seed("seed-user-huge-int", seed_body(10**300)),
]


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    ("method", "path", "body", "auth", "status", "slug"),
    RESERVATION_CASES
    + READ_CASES
    + SEED_CASES
    + HOLDER_CASES
    + EVENT_CASES
    + METHOD_CASES
    + UNSTORABLE_CASES
    + SEED_USER_CASES,
)
async def test_bad_request_is_a_problem_and_changes_nothing(
    client: httpx.AsyncClient,
    target: Target,
    method: str,
    path: str,
    body: Body,
    auth: str | None,
    status: int,
    slug: str,
) -> None:
    response = await send(client, target, method, path, body, auth)
    problem = assert_problem(response, status, slug)
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"
    if status == 405:
        assert response.headers["allow"]
    if slug == "unknown-tickets":
        assert (
            target.other_ticket in problem["ticket_ids"] or NO_SUCH_TICKET in problem["ticket_ids"]
        )
        assert not set(problem["ticket_ids"]) & set(target.ids)
    if status == 422 and slug == "invalid-request" and "errors" in problem:
        assert problem["errors"] and all("loc" in error for error in problem["errors"])


@pytest.mark.usefixtures("unchanged")
async def test_wrong_token_looks_exactly_like_an_unknown_reservation(
    client: httpx.AsyncClient, target: Target
) -> None:
    wrong = await client.get(
        f"/reservations/{target.held}", headers={"Authorization": "Bearer not-it"}
    )
    unknown = await client.get(
        f"/reservations/{UNKNOWN}", headers={"Authorization": f"Bearer {target.held_token}"}
    )
    wrong_body = assert_problem(wrong, 404, "reservation-not-found")
    unknown_body = assert_problem(unknown, 404, "reservation-not-found")
    assert wrong_body.keys() == unknown_body.keys()
    assert wrong_body["detail"].replace(target.held, UNKNOWN) == unknown_body["detail"]


async def test_the_target_event_is_unchanged_after_all_the_bad_input(
    client: httpx.AsyncClient, target: Target, engine: AsyncEngine
) -> None:
    current = await _snapshot(engine, target.event)
    assert current["tickets"] == target.snapshot["tickets"]
    assert current["reservations"] == target.snapshot["reservations"]
    event = (await client.get(f"/events/{target.event}")).json()
    assert event["counts"] == {"available": 10, "reserved": 1, "booked": 1}
    assert event["sections"] == [{"name": "Main", "tickets": 12, "available": 10}]
    hold = await client.get(
        f"/reservations/{target.held}", headers={"Authorization": f"Bearer {target.held_token}"}
    )
    assert hold.json()["status"] == "active"
    async with engine.connect() as conn:
        stray = await conn.execute(
            text("SELECT count(*) FROM events WHERE name = 'Should not exist'")
        )
        assert stray.scalar() == 0
    await assert_invariants(engine, target.event)
