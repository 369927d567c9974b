"""Idempotency-Key on the three POSTs that create or confirm, through the live server: a retry
replays the first answer, a reused key with another body is refused, and concurrent requests
with one key make one effect."""

import asyncio
import hashlib
import uuid
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from boxoffice.expiry import free_expired_holds
from boxoffice.idempotency import key_hash, request_hash
from boxoffice.reservations.schemas import ReservationCreate
from boxoffice.reservations.tokens import token_for_key
from tests.conftest import (
    ADMIN,
    SERVER_SECRET,
    EventFactory,
    assert_invariants,
    service_db,
    ticket_ids,
)
from tests.support.problems import assert_problem, bearer

CONCURRENT = 20
# The database keeps only the key's HMAC under the server secret, in hex.
KEY_HASH = ":key_hash"


def stored_hash(key: str) -> str:
    return key_hash(SERVER_SECRET.encode(), key)


def keyed(key: str, headers: dict[str, str] | None = None) -> dict[str, str]:
    return {**(headers or {}), "Idempotency-Key": key}


async def count(engine: AsyncEngine, sql: str, **params: Any) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text(sql), params)).scalar_one())


async def reservations_of(engine: AsyncEngine, event_id: str) -> int:
    return await count(
        engine, "SELECT count(*) FROM reservations WHERE event_id = :e", e=uuid.UUID(event_id)
    )


async def post_reserve(
    client: httpx.AsyncClient, event_id: str, body: dict[str, Any], key: str | None
) -> httpx.Response:
    headers = keyed(key) if key is not None else {}
    return await client.post(f"/events/{event_id}/reservations", json=body, headers=headers)


async def test_replayed_reservation_returns_the_first_answer_and_holds_once(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    event = await make_event()
    key = str(uuid.uuid4())
    body = {"quantity": 2, "customer": "ada@example.com"}
    first = await post_reserve(client, event["id"], body, key)
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    again = await post_reserve(client, event["id"], body, key)
    assert again.status_code == 201, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert again.json()["token"] == first.json()["token"]
    assert await reservations_of(engine, event["id"]) == 1
    await assert_invariants(engine, event["id"])


async def test_same_key_with_another_body_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    event = await make_event()
    key = str(uuid.uuid4())
    first = await post_reserve(client, event["id"], {"quantity": 1, "customer": "a"}, key)
    assert first.status_code == 201, first.text
    other = await post_reserve(client, event["id"], {"quantity": 3, "customer": "a"}, key)
    assert_problem(other, 422, "idempotency-key-reused")
    assert await reservations_of(engine, event["id"]) == 1
    await assert_invariants(engine, event["id"])


async def test_malformed_keys_are_refused(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    event = await make_event()
    for key in ("", "x" * 201, "tab\there"):
        response = await post_reserve(client, event["id"], {"quantity": 1, "customer": "a"}, key)
        assert_problem(response, 422, "invalid-request")
    assert await reservations_of(engine, event["id"]) == 0


async def test_a_refusal_is_not_stored_so_the_key_can_be_retried(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    event = await make_event(rows=1, seats_per_row=2)
    ids = await ticket_ids(client, event["id"])
    taken = await post_reserve(client, event["id"], {"ticket_ids": ids, "customer": "b"}, None)
    assert taken.status_code == 201, taken.text
    key = str(uuid.uuid4())
    body = {"ticket_ids": ids, "customer": "a"}
    assert_problem(await post_reserve(client, event["id"], body, key), 409, "tickets-unavailable")
    released = await client.delete(
        f"/reservations/{taken.json()['id']}", headers=bearer(taken.json()["token"])
    )
    assert released.status_code == 204, released.text
    retried = await post_reserve(client, event["id"], body, key)
    assert retried.status_code == 201, retried.text
    assert "idempotent-replayed" not in retried.headers


async def test_a_sold_out_best_available_refusal_is_not_stored_either(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    """Best available refused (nothing free) leaves no key behind: once a seat is free again,
    the same key makes a hold instead of replaying a refusal (or an unfinished answer)."""
    event = await make_event(rows=1, seats_per_row=1)
    taken = await post_reserve(client, event["id"], {"quantity": 1, "customer": "b"}, None)
    assert taken.status_code == 201, taken.text
    key = str(uuid.uuid4())
    body = {"quantity": 1, "customer": "a"}
    assert_problem(await post_reserve(client, event["id"], body, key), 409, "tickets-unavailable")
    stored = "SELECT count(*) FROM idempotency_keys WHERE key_hash = " + KEY_HASH
    assert await count(engine, stored, key_hash=stored_hash(key)) == 0
    released = await client.delete(
        f"/reservations/{taken.json()['id']}", headers=bearer(taken.json()["token"])
    )
    assert released.status_code == 204, released.text
    retried = await post_reserve(client, event["id"], body, key)
    assert retried.status_code == 201, retried.text
    assert "idempotent-replayed" not in retried.headers
    again = await post_reserve(client, event["id"], body, key)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == retried.json()
    await assert_invariants(engine, event["id"])


async def test_concurrent_reservations_with_one_key_make_one_hold(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    event = await make_event()
    key = str(uuid.uuid4())
    body = {"quantity": 2, "customer": "ada@example.com"}
    responses = await asyncio.gather(
        *(post_reserve(client, event["id"], body, key) for _ in range(CONCURRENT))
    )
    assert [r.status_code for r in responses] == [201] * CONCURRENT, [r.text for r in responses]
    assert len({(r.json()["id"], r.json()["token"]) for r in responses}) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in responses) == CONCURRENT - 1
    assert await reservations_of(engine, event["id"]) == 1
    await assert_invariants(engine, event["id"])


async def hold(client: httpx.AsyncClient, event_id: str) -> dict[str, Any]:
    response = await post_reserve(client, event_id, {"quantity": 1, "customer": "a"}, None)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def post_confirm(
    client: httpx.AsyncClient, reservation: dict[str, Any], key: str, reference: str = "pay-1"
) -> httpx.Response:
    return await client.post(
        f"/reservations/{reservation['id']}/confirm",
        json={"payment_reference": reference},
        headers=keyed(key, bearer(reservation["token"])),
    )


async def bookings_of(engine: AsyncEngine, event_id: str) -> int:
    return await count(
        engine, "SELECT count(*) FROM bookings WHERE event_id = :e", e=uuid.UUID(event_id)
    )


async def test_concurrent_confirms_with_one_key_book_once(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    event = await make_event()
    reservation = await hold(client, event["id"])
    key = str(uuid.uuid4())
    responses = await asyncio.gather(
        *(post_confirm(client, reservation, key) for _ in range(CONCURRENT))
    )
    assert [r.status_code for r in responses] == [200] * CONCURRENT, [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert await bookings_of(engine, event["id"]) == 1
    # Without the key the same confirm is a plain second attempt: refused, as before.
    plain = await client.post(
        f"/reservations/{reservation['id']}/confirm",
        json={"payment_reference": "pay-1"},
        headers=bearer(reservation["token"]),
    )
    assert_problem(plain, 409, "reservation-not-active")
    await assert_invariants(engine, event["id"])


async def test_one_key_on_two_reservations_does_not_collide(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    event = await make_event()
    first, second = await hold(client, event["id"]), await hold(client, event["id"])
    key = str(uuid.uuid4())
    one = await post_confirm(client, first, key)
    two = await post_confirm(client, second, key)
    assert one.status_code == two.status_code == 200, (one.text, two.text)
    assert "idempotent-replayed" not in two.headers
    assert one.json()["reservation_id"] == first["id"]
    assert two.json()["reservation_id"] == second["id"]
    assert await bookings_of(engine, event["id"]) == 2
    await assert_invariants(engine, event["id"])


async def test_concurrent_event_creations_with_one_key_make_one_event(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    name = f"Idempotent {uuid.uuid4()}"
    body = {
        "name": name,
        "starts_at": "2030-01-01T20:00:00Z",
        "general_admission": {"quantity": 50, "price": 1000},
    }
    key = str(uuid.uuid4())
    responses = await asyncio.gather(
        *(client.post("/events", json=body, headers=keyed(key, ADMIN)) for _ in range(CONCURRENT))
    )
    assert [r.status_code for r in responses] == [201] * CONCURRENT, [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert await count(engine, "SELECT count(*) FROM events WHERE name = :n", n=name) == 1
    changed = await client.post(
        "/events", json={**body, "venue": "Elsewhere"}, headers=keyed(key, ADMIN)
    )
    assert_problem(changed, 422, "idempotency-key-reused")
    await assert_invariants(engine, responses[0].json()["id"])


async def test_a_key_older_than_a_day_is_not_replayed(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    event = await make_event()
    key = str(uuid.uuid4())
    body = {"quantity": 1, "customer": "a"}
    first = await post_reserve(client, event["id"], body, key)
    assert first.status_code == 201, first.text
    async with engine.begin() as conn:
        aged = await conn.execute(
            text(
                "UPDATE idempotency_keys SET created_at = now() - interval '24 hours 1 second'"
                f" WHERE key_hash = {KEY_HASH}"
            ),
            {"key_hash": stored_hash(key)},
        )
        assert aged.rowcount == 1
    # Even a different body: the old answer is forgotten, not compared.
    later = await post_reserve(client, event["id"], {"quantity": 2, "customer": "a"}, key)
    assert later.status_code == 201, later.text
    assert "idempotent-replayed" not in later.headers
    assert later.json()["id"] != first.json()["id"]
    assert await reservations_of(engine, event["id"]) == 2
    replay = await post_reserve(client, event["id"], {"quantity": 2, "customer": "a"}, key)
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["id"] == later.json()["id"]


async def test_requests_without_a_key_are_not_deduplicated(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    event = await make_event()
    body = {"quantity": 1, "customer": "a"}
    keys_before = await count(engine, "SELECT count(*) FROM idempotency_keys")
    responses = [await post_reserve(client, event["id"], body, None) for _ in range(2)]
    assert [r.status_code for r in responses] == [201, 201]
    assert responses[0].json()["id"] != responses[1].json()["id"]
    assert all("idempotent-replayed" not in r.headers for r in responses)
    assert await reservations_of(engine, event["id"]) == 2
    assert await count(engine, "SELECT count(*) FROM idempotency_keys") == keys_before
    await assert_invariants(engine, event["id"])


async def test_openapi_documents_the_header(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    for path in (
        "/events",
        "/events/{event_id}/reservations",
        "/reservations/{reservation_id}/confirm",
    ):
        parameters = paths[path]["post"]["parameters"]
        assert any(p["name"] == "Idempotency-Key" and p["in"] == "header" for p in parameters)


async def test_the_sweeper_deletes_expired_keys_only(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    event = await make_event()
    old, fresh = str(uuid.uuid4()), str(uuid.uuid4())
    for key in (old, fresh):
        response = await post_reserve(client, event["id"], {"quantity": 1, "customer": "a"}, key)
        assert response.status_code == 201, response.text
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE idempotency_keys SET created_at = now() - interval '25 hours'"
                f" WHERE key_hash = {KEY_HASH}"
            ),
            {"key_hash": stored_hash(old)},
        )
    await free_expired_holds(service_db(engine), batch_size=1000)
    left = f"SELECT count(*) FROM idempotency_keys WHERE key_hash = {KEY_HASH}"
    assert await count(engine, left, key_hash=stored_hash(old)) == 0
    assert await count(engine, left, key_hash=stored_hash(fresh)) == 1


async def test_the_database_keeps_neither_the_key_nor_the_token(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    """Someone who reads the database (a backup, a replica) cannot take over a keyed hold:
    the stored row has the key's hash and the answer without its token, yet a replay still
    hands the buyer the token, and that token works."""
    event = await make_event()
    key = str(uuid.uuid4())
    body = {"quantity": 1, "customer": "ada@example.com"}
    first = await post_reserve(client, event["id"], body, key)
    assert first.status_code == 201, first.text
    token = first.json()["token"]
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT idempotency_keys::text AS everything FROM idempotency_keys"
                    f" WHERE key_hash = {KEY_HASH}"
                ),
                {"key_hash": stored_hash(key)},
            )
        ).scalar_one()
    assert key not in row and token not in row
    assert first.json()["id"] in row

    again = await post_reserve(client, event["id"], body, key)
    assert again.status_code == 201 and again.json() == first.json()
    mine = await client.get(f"/reservations/{first.json()['id']}", headers=bearer(token))
    assert mine.status_code == 200, mine.text
    # Another key (or the same key for another request) gets a hold with another token.
    other = await post_reserve(client, event["id"], body, str(uuid.uuid4()))
    assert other.status_code == 201 and other.json()["token"] != token


async def test_guessable_keys_are_refused(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    """A key is a bearer secret for its answer: one a bot could guess (short, or not from a
    random alphabet) is a 422 before anything is held."""
    event = await make_event()
    body = {"quantity": 1, "customer": "a"}
    before = await reservations_of(engine, event["id"])
    for weak in (b"1", b"a" * 21, b"order 42 of ada@example.com", "é".encode() * 30):
        response = await client.post(
            f"/events/{event['id']}/reservations", json=body, headers={b"Idempotency-Key": weak}
        )
        assert_problem(response, 422, "invalid-request")
    assert await reservations_of(engine, event["id"]) == before
    strong = await post_reserve(client, event["id"], body, "A1b2C3d4E5f6G7h8I9j0_-")
    assert strong.status_code == 201, strong.text


async def test_a_backup_can_neither_match_a_key_nor_compute_a_token(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    """The stored hash is peppered with the server secret, and so is a keyed hold's token:
    knowing the key and the body (or holding a backup) is not enough to compute either."""
    event = await make_event()
    key = str(uuid.uuid4())
    body = {"quantity": 1, "customer": "ada@example.com"}
    first = await post_reserve(client, event["id"], body, key)
    assert first.status_code == 201, first.text
    async with engine.connect() as conn:
        stored = set(
            (await conn.execute(text("SELECT key_hash FROM idempotency_keys"))).scalars().all()
        )
    assert stored_hash(key) in stored
    assert hashlib.sha256(key.encode()).hexdigest() not in stored
    scope = f"POST /events/{{event_id}}/reservations {event['id']}"
    fingerprint = request_hash(ReservationCreate.model_validate(body))
    # The token under a secret other than the server's (e.g. the key itself) is not it.
    for guess in (key.encode(), b"", b"boxoffice"):
        assert token_for_key(guess, key, scope, fingerprint) != first.json()["token"]
    assert token_for_key(SERVER_SECRET.encode(), key, scope, fingerprint) == first.json()["token"]


async def test_a_replay_reports_the_hold_as_it_is_now(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    event = await make_event()
    paid_key, released_key = str(uuid.uuid4()), str(uuid.uuid4())
    paid = await post_reserve(client, event["id"], {"quantity": 1, "customer": "a"}, paid_key)
    released = await post_reserve(
        client, event["id"], {"quantity": 1, "customer": "b"}, released_key
    )
    assert paid.status_code == released.status_code == 201
    confirmed = await client.post(
        f"/reservations/{paid.json()['id']}/confirm",
        json={"payment_reference": "pay_1"},
        headers=bearer(paid.json()["token"]),
    )
    assert confirmed.status_code == 200, confirmed.text
    gone = await client.delete(
        f"/reservations/{released.json()['id']}", headers=bearer(released.json()["token"])
    )
    assert gone.status_code == 204

    again = await post_reserve(client, event["id"], {"quantity": 1, "customer": "a"}, paid_key)
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == {**paid.json(), "status": "confirmed"}
    again = await post_reserve(client, event["id"], {"quantity": 1, "customer": "b"}, released_key)
    assert again.json() == {**released.json(), "status": "released"}
    await assert_invariants(engine, event["id"])
