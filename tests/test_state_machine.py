"""Random lives of holds on a tiny event, checked against a pure-Python model after every step.

Hypothesis drives reserve (chosen seats, and best available by quantity), confirm, release,
expire and sweep through the real HTTP API of the live server (two workers, no background
sweeper) on a real PostgreSQL. A model predicts every answer: the status code, the problem
`type`, which seats a best-available hold gets. After every step the model's status of each
ticket and each reservation is compared with what the API reports and with the rows as stored
(which tell a lazily expired hold from a swept one), and the invariant checker (I1–I5 and the
audit trail) runs on the event.

Expiry never sleeps: the database clock is the only clock for holds, so "expire" moves one
hold's expiry into the past in the database (the reservation's `expires_at` and its tickets'
`hold_expires_at` together, with `created_at` so that `expires_at > created_at` still holds).
After that the hold is over lazily, for every read and every reservation; the separate
"sweep" rule runs the sweeper's own code (`sweep_all`, i.e. `free_expired_holds` in batches,
what `boxoffice sweep` runs) to flip the rows as well.

The machine is synchronous: a sync httpx client for HTTP, and one private event loop for the
database work (an `asyncio.Runner` with its own loop factory, in a plain sync test: no loop is
running, and the current loop pytest-asyncio keeps for the async tests is left alone).
Derandomized, so CI runs the same examples every time (about 20 s on two cores); set
BOXOFFICE_STATEFUL_EXAMPLES to explore more.
"""

import asyncio
import os
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import httpx
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from boxoffice.config import Settings
from boxoffice.db import Database
from boxoffice.expiry import sweep_all
from boxoffice.invariants import check_invariants
from tests.conftest import ADMIN, ADMIN_TOKEN, create_engine
from tests.support.expiry import move_expiry_into_the_past

PROBLEM_BASE = "https://boxoffice.dev/problems/"
T = TypeVar("T")

# Small events, so holds collide often. (name, rows, seats_per_row, price) per section, or
# None for general admission (six tickets at one price).
LAYOUTS: list[list[tuple[str, int, int, int]] | None] = [
    [("Main", 2, 2, 2500)],
    [("Front", 1, 3, 5000), ("Back", 1, 2, 2000)],
    [("Front", 1, 2, 5000), ("Back", 2, 2, 2000)],
    None,
]
GA_QUANTITY, GA_PRICE = 6, 1000
# Best available may name a section by its index in the layout; an index past the last
# section (and any index on general admission, which has none) names one no event has.
NO_SUCH_SECTION = "Balcony"
# Chosen seats are picked by index in seat order, modulo the event's ticket count (4..6).
MAX_PICK = 5
# Sometimes one more id that is not a ticket of the event: an id no ticket has (0), or a
# ticket of another event (1).
STRANGER = st.sampled_from([None, None, None, None, 0, 1])
NO_SUCH_TICKET = 2**62
CUSTOMERS = ["ada@example.com", "bob@example.com", "cy@example.com"]


@dataclass
class Context:
    """What the test function hands the machine: the server, the database, the loop."""

    client: httpx.Client
    engine: AsyncEngine
    db: Database  # the service's own data layer, on this loop
    runner: asyncio.Runner
    foreign_ids: list[int]  # not tickets of the example's event (len == 2)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coro)


@dataclass
class Ticket:
    id: int
    section: str | None
    price: int
    # The reservation the row's claim columns name (None: the row says available). A hold that
    # lapsed leaves its claim on the row until someone re-takes the ticket or the sweeper runs.
    holder: str | None = None


@dataclass
class Hold:
    id: str
    token: str
    customer: str
    tickets: list[int]  # seat order
    stored: str = "active"  # the row's status: active, confirmed, released, expired (swept)
    # Its expiry is in the past. Set by "expire"; it matters only while stored active (then the
    # API reports it expired); a confirmed or released hold whose expiry passed stays as it was.
    lapsed: bool = False
    booking_id: str | None = None

    @property
    def status(self) -> str:
        """As the API reports it: a lapsed active hold reads as expired, swept or not."""
        return "expired" if self.stored == "active" and self.lapsed else self.stored


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def expect_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, (status, slug, response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["type"] == PROBLEM_BASE + slug, body
    assert body["status"] == status, body
    return body


class BoxOfficeMachine(RuleBasedStateMachine):
    ctx: ClassVar[Context]

    holds_bundle = Bundle("holds")

    def __init__(self) -> None:
        super().__init__()
        self.event_id = ""
        self.layout: list[tuple[str, int, int, int]] | None = None
        self.tickets: list[Ticket] = []  # seat order
        self.by_id: dict[int, Ticket] = {}
        self.holds: dict[str, Hold] = {}

    # ---- the model ------------------------------------------------------------------------

    def ticket_status(self, ticket: Ticket) -> str:
        if ticket.holder is None:
            return "available"
        hold = self.holds[ticket.holder]
        if hold.stored == "confirmed":
            return "booked"
        if hold.status == "active":
            return "reserved"
        # A lapsed hold whose claim is still on the row: available to every read.
        return "available"

    def free(self, ticket: Ticket) -> bool:
        return self.ticket_status(ticket) == "available"

    def take(self, hold: Hold) -> None:
        self.holds[hold.id] = hold
        for ticket_id in hold.tickets:
            # Re-taking a lapsed hold's ticket moves the claim; the lapsed hold stays stored
            # as active (reported expired) until the sweeper marks it.
            self.by_id[ticket_id].holder = hold.id

    # ---- HTTP -----------------------------------------------------------------------------

    @property
    def client(self) -> httpx.Client:
        return self.ctx.client

    def created_hold(self, response: httpx.Response, customer: str, ids: list[int]) -> Hold:
        assert response.status_code == 201, response.text
        body = response.json()
        assert response.headers["location"] == f"/reservations/{body['id']}"
        assert body["status"] == "active" and body["event_id"] == self.event_id
        assert body["customer"] == customer
        assert body["booking_id"] is None and body["ended_at"] is None
        # The answer lists the held tickets in id order (seat order for these events).
        assert [t["id"] for t in body["tickets"]] == sorted(ids), (body["tickets"], ids)
        assert {t["status"] for t in body["tickets"]} == {"reserved"}
        assert body["total"] == sum(self.by_id[i].price for i in ids)
        seat_order = [t.id for t in self.tickets if t.id in set(ids)]
        return Hold(body["id"], body["token"], customer, seat_order)

    # ---- rules ----------------------------------------------------------------------------

    @initialize(layout=st.sampled_from(LAYOUTS))
    def create_event(self, layout: list[tuple[str, int, int, int]] | None) -> None:
        """A fresh event per example, so examples cannot see each other's holds."""
        self.layout = layout
        body: dict[str, Any] = {
            "name": "State machine",
            "starts_at": "2030-01-01T20:00:00Z",
            "hold_seconds": 3600,  # never runs out by itself during a test
        }
        if layout is None:
            body["general_admission"] = {"quantity": GA_QUANTITY, "price": GA_PRICE}
        else:
            body["sections"] = [
                {"name": name, "rows": rows, "seats_per_row": seats, "price": price}
                for name, rows, seats, price in layout
            ]
        response = self.client.post("/events", json=body, headers=ADMIN)
        assert response.status_code == 201, response.text
        self.event_id = response.json()["id"]
        listing = self.client.get(f"/events/{self.event_id}/tickets", params={"limit": 500})
        assert listing.status_code == 200, listing.text
        self.tickets = [Ticket(t["id"], t["section"], t["price"]) for t in listing.json()["items"]]
        self.by_id = {t.id: t for t in self.tickets}
        assert 4 <= len(self.tickets) <= MAX_PICK + 1

    @rule(
        target=holds_bundle,
        picks=st.lists(st.integers(0, MAX_PICK), min_size=1, max_size=3, unique=True),
        stranger=STRANGER,
        customer=st.sampled_from(CUSTOMERS),
    )
    def reserve_chosen(self, picks: list[int], stranger: int | None, customer: str) -> Any:
        n = len(self.tickets)
        ids = list(dict.fromkeys(self.tickets[i % n].id for i in picks))
        if stranger is not None:
            ids.append(self.ctx.foreign_ids[stranger])
        response = self.client.post(
            f"/events/{self.event_id}/reservations",
            json={"ticket_ids": ids, "customer": customer},
        )
        unknown = sorted(i for i in ids if i not in self.by_id)
        if unknown:
            # Checked before availability: a foreign ticket is a 422 even if others are taken.
            event("reserve chosen: 422 unknown-tickets")
            body = expect_problem(response, 422, "unknown-tickets")
            assert body["ticket_ids"] == unknown, body
            return multiple()
        taken = sorted(i for i in ids if not self.free(self.by_id[i]))
        if taken:
            event("reserve chosen: 409 tickets-unavailable")
            body = expect_problem(response, 409, "tickets-unavailable")
            assert body["ticket_ids"] == taken, body
            return multiple()
        lapsed = any(self.by_id[i].holder is not None for i in ids)
        event("reserve chosen: 201" + (" re-taking a lapsed hold's seat" if lapsed else ""))
        hold = self.created_hold(response, customer, ids)
        self.take(hold)
        return hold.id

    @rule(
        target=holds_bundle,
        quantity=st.integers(1, 3),
        section_index=st.none() | st.integers(0, 1),
        customer=st.sampled_from(CUSTOMERS),
    )
    def reserve_best_available(
        self, quantity: int, section_index: int | None, customer: str
    ) -> Any:
        names = [name for name, *_ in self.layout or []]
        section = None
        if section_index is not None:
            section = names[section_index] if section_index < len(names) else NO_SUCH_SECTION
        payload: dict[str, Any] = {"quantity": quantity, "customer": customer}
        if section is not None:
            payload["section"] = section
        response = self.client.post(f"/events/{self.event_id}/reservations", json=payload)
        candidates = [t for t in self.tickets if section is None or t.section == section]
        # As designed, but surprising: best available first looks only at rows that SAY
        # available (the partial index), in seat order; only when those are too few does it
        # also take seats whose hold lapsed but was not swept yet. So a lapsed seat A-1 is
        # passed over for while enough never-held seats remain.
        never_claimed = [t for t in candidates if t.holder is None]
        free = [t for t in candidates if self.free(t)]
        if len(never_claimed) >= quantity:
            chosen = never_claimed[:quantity]
            event("best available: 201 from never-claimed seats")
        elif len(free) >= quantity:
            chosen = free[:quantity]
            event("best available: 201 re-taking lapsed seats")
        elif section is not None and not candidates:
            # Only asked once no seats were found; with an unknown section there are none.
            event("best available: 422 unknown-section")
            expect_problem(response, 422, "unknown-section")
            return multiple()
        else:
            event("best available: 409 tickets-unavailable")
            body = expect_problem(response, 409, "tickets-unavailable")
            assert (body["requested"], body["free"]) == (quantity, len(free)), body
            return multiple()
        hold = self.created_hold(response, customer, [t.id for t in chosen])
        self.take(hold)
        return hold.id

    @rule(hold_id=holds_bundle, reference=st.sampled_from(["pay_1", "pay_2"]))
    def confirm(self, hold_id: str, reference: str) -> None:
        hold = self.holds[hold_id]
        event(f"confirm a hold that is {hold.status}")
        response = self.client.post(
            f"/reservations/{hold_id}/confirm",
            json={"payment_reference": reference},
            headers=bearer(hold.token),
        )
        if hold.stored == "confirmed":
            body = expect_problem(response, 409, "reservation-not-active")
            assert body["booking_id"] == hold.booking_id, body
        elif hold.status == "expired":
            expect_problem(response, 409, "reservation-expired")
        elif hold.stored == "released":
            body = expect_problem(response, 409, "reservation-not-active")
            assert body["reservation_status"] == "released", body
        else:
            assert hold.status == "active"
            assert response.status_code == 200, response.text
            booking = response.json()
            assert booking["reservation_id"] == hold_id
            assert booking["customer"] == hold.customer
            assert booking["payment_reference"] == reference
            assert [t["id"] for t in booking["tickets"]] == hold.tickets
            assert {t["status"] for t in booking["tickets"]} == {"booked"}
            assert booking["total"] == sum(self.by_id[i].price for i in hold.tickets)
            hold.stored = "confirmed"
            hold.booking_id = booking["id"]

    @rule(hold_id=holds_bundle)
    def release(self, hold_id: str) -> None:
        hold = self.holds[hold_id]
        event(f"release a hold that is {hold.status}")
        response = self.client.delete(f"/reservations/{hold_id}", headers=bearer(hold.token))
        if hold.stored == "released":
            # As designed: releasing twice is fine (204 again), nothing changes.
            assert response.status_code == 204, response.text
        elif hold.status == "expired":
            # As designed, if surprising: a lapsed hold cannot be released either (its seats
            # are already free), whether or not the sweeper marked it.
            expect_problem(response, 409, "reservation-expired")
        elif hold.stored == "confirmed":
            body = expect_problem(response, 409, "reservation-not-active")
            assert body["reservation_status"] == "confirmed", body
        else:
            assert response.status_code == 204, response.text
            hold.stored = "released"
            for ticket in self.tickets:
                if ticket.holder == hold_id:
                    ticket.holder = None

    @rule(
        hold_id=holds_bundle,
        action=st.sampled_from(["read", "confirm", "release"]),
        token=st.sampled_from(["another hold's", "made up"]),
    )
    def wrong_token(self, hold_id: str, action: str, token: str) -> None:
        """A stranger gets the 404 of an unknown reservation, and nothing moves."""
        others = [h.token for h in self.holds.values() if h.id != hold_id]
        secret = others[0] if token == "another hold's" and others else "not-" + hold_id
        url = f"/reservations/{hold_id}"
        if action == "read":
            response = self.client.get(url, headers=bearer(secret))
        elif action == "confirm":
            payload = {"payment_reference": "stolen"}
            response = self.client.post(url + "/confirm", json=payload, headers=bearer(secret))
        else:
            response = self.client.delete(url, headers=bearer(secret))
        expect_problem(response, 404, "reservation-not-found")

    @precondition(lambda self: any(not h.lapsed for h in self.holds.values()))
    @rule(data=st.data())
    def expire(self, data: st.DataObject) -> None:
        """One hold's time runs out now, on the database clock, without sleeping. A live hold
        lapses; time passing changes nothing for a confirmed or released one."""
        # Live holds first (an index shrinks towards them), each list in creation order: a
        # draw must name the same hold when Hypothesis replays the example.
        ahead = [h for h in self.holds.values() if not h.lapsed]
        ahead.sort(key=lambda h: h.status != "active")
        hold = ahead[data.draw(st.integers(0, len(ahead) - 1), label="index of hold")]
        event(f"expire a hold that is {hold.status}")
        moved, tickets = self.ctx.run(move_expiry_into_the_past(self.ctx.engine, hold.id))
        # Its expiry was ahead, so it moved; only a live hold still has seats to move: all of
        # them, none re-taken by anyone.
        assert moved, hold
        expected = sorted(hold.tickets) if hold.status == "active" else []
        assert tickets == expected, (hold, tickets)
        hold.lapsed = True

    @precondition(lambda self: any(h.stored == "active" and h.lapsed for h in self.holds.values()))
    @rule()
    def sweep(self) -> None:
        """The sweeper's own code path (what `boxoffice sweep` and each worker run), once some
        hold lapsed and was not swept yet; until then every read treated it lazily."""
        # A lapsed hold is one still stored active whose expiry passed (a confirmed or released
        # one whose expiry passed is none of the sweeper's business).
        lapsed = [h for h in self.holds.values() if h.stored == "active" and h.lapsed]
        lapsed_ids = {h.id for h in lapsed}
        expected_tickets = sum(1 for t in self.tickets if t.holder in lapsed_ids)
        # "only marks": every seat of the lapsed holds was re-taken already.
        event("sweep: frees seats" if expected_tickets else "sweep: only marks holds")
        # The sweeper is global, so its counts include lapsed holds of earlier examples (and
        # tests): asserting on them would make a failure depend on history. What it did to
        # this event's rows is checked after the step (database_agrees_with_the_model).
        self.ctx.run(sweep_all(self.ctx.db, batch_size=1000))
        for hold in lapsed:
            hold.stored = "expired"
        for ticket in self.tickets:
            if ticket.holder in lapsed_ids:
                ticket.holder = None

    # ---- after every step -----------------------------------------------------------------

    @invariant()
    def api_agrees_with_the_model(self) -> None:
        listing = self.client.get(f"/events/{self.event_id}/tickets", params={"limit": 500})
        assert listing.status_code == 200, listing.text
        page = listing.json()
        assert page["next_after"] is None
        reported = [(t["id"], t["status"]) for t in page["items"]]
        expected = [(t.id, self.ticket_status(t)) for t in self.tickets]
        assert reported == expected

        detail = self.client.get(f"/events/{self.event_id}")
        assert detail.status_code == 200, detail.text
        statuses = [status for _, status in expected]
        counts = {s: statuses.count(s) for s in ("available", "reserved", "booked")}
        assert detail.json()["counts"] == counts
        if self.layout is not None:
            sections = [
                {
                    "name": name,
                    "tickets": rows * seats,
                    "available": sum(1 for t in self.tickets if t.section == name and self.free(t)),
                }
                for name, rows, seats, _ in self.layout
            ]
            assert detail.json()["sections"] == sections

        for hold in self.holds.values():
            response = self.client.get(f"/reservations/{hold.id}", headers=bearer(hold.token))
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["status"] == hold.status, (hold, body)
            assert body["customer"] == hold.customer
            assert body["booking_id"] == hold.booking_id
            assert (body["ended_at"] is None) == (hold.stored == "active")
            # As designed, if surprising: a hold lists the seats it claimed with their status
            # NOW, so a lapsed hold's seat re-taken by someone else shows as reserved here.
            assert [(t["id"], t["status"]) for t in body["tickets"]] == [
                (i, self.ticket_status(self.by_id[i])) for i in hold.tickets
            ], (hold, body["tickets"])

    @invariant()
    def database_agrees_with_the_model(self) -> None:
        """The rows as stored, which only the sweeper (or a re-take) changes after a hold
        lapses: the lazy path must leave them alone, the sweeper must flip them."""
        tickets, reservations = self.ctx.run(stored_rows(self.ctx.engine, self.event_id))
        expected_tickets = {}
        for ticket in self.tickets:
            status = "available"
            if ticket.holder is not None:
                confirmed = self.holds[ticket.holder].stored == "confirmed"
                status = "booked" if confirmed else "reserved"
            expected_tickets[ticket.id] = (status, ticket.holder)
        assert tickets == expected_tickets
        assert reservations == {h.id: h.stored for h in self.holds.values()}

    @invariant()
    def database_invariants_hold(self) -> None:
        violations = self.ctx.run(check_invariants(self.ctx.db, event_id=uuid.UUID(self.event_id)))
        assert violations == [], "\n".join(str(v) for v in violations)


async def stored_rows(
    engine: AsyncEngine, event_id: str
) -> tuple[dict[int, tuple[str, str | None]], dict[str, str]]:
    """Ticket id → (stored status, reservation id); reservation id → stored status."""
    async with engine.connect() as conn:
        tickets = await conn.execute(
            text(
                "SELECT id, status::text, reservation_id::text FROM tickets"
                " WHERE event_id = :event_id"
            ),
            {"event_id": uuid.UUID(event_id)},
        )
        reservations = await conn.execute(
            text("SELECT id::text, status::text FROM reservations WHERE event_id = :event_id"),
            {"event_id": uuid.UUID(event_id)},
        )
        return (
            {row[0]: (row[1], row[2]) for row in tickets},
            {row[0]: row[1] for row in reservations},
        )


def create_foreign_tickets(client: httpx.Client) -> list[int]:
    """An id no ticket has, and a ticket of another event."""
    body = {
        "name": "Another event",
        "starts_at": "2030-01-01T20:00:00Z",
        "general_admission": {"quantity": 1, "price": 100},
    }
    response = client.post("/events", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    listing = client.get(f"/events/{response.json()['id']}/tickets")
    return [NO_SUCH_TICKET] + [t["id"] for t in listing.json()["items"]]


def test_random_hold_lifecycles_match_the_model(live_server: str, database_url: str) -> None:
    """Every step's answer as the model predicts it, and the API and rows agree with the model
    after every step. Reproducible: derandomized, no example database."""
    examples = int(os.environ.get("BOXOFFICE_STATEFUL_EXAMPLES", "35"))
    with (
        httpx.Client(base_url=live_server, timeout=30) as client,
        asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner,
    ):
        engine = create_engine(
            Settings(database_url=database_url, admin_token=ADMIN_TOKEN), pool_size=2
        )

        async def open_db() -> Database:
            return Database(Settings(database_url=database_url, admin_token=ADMIN_TOKEN), size=2)

        db = runner.run(open_db())
        try:
            foreign = create_foreign_tickets(client)
            BoxOfficeMachine.ctx = Context(client, engine, db, runner, foreign)
            run_state_machine_as_test(
                BoxOfficeMachine,
                settings=settings(
                    max_examples=examples,
                    stateful_step_count=25,
                    deadline=None,
                    derandomize=True,
                    database=None,
                    suppress_health_check=[
                        HealthCheck.too_slow,
                        HealthCheck.filter_too_much,
                        HealthCheck.data_too_large,
                    ],
                ),
            )
        finally:
            runner.run(db.close())
            runner.run(engine.dispose())
