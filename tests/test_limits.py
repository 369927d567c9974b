"""The request body cap: a body over MAX_BODY_BYTES is a 413 before anything parses it."""

from collections.abc import AsyncIterator

import httpx

from tests.conftest import ADMIN

CAP = 1024 * 1024


def event_body(padding: int) -> bytes:
    """A valid event whose name field pads the JSON body to about `padding` bytes."""
    head = (
        b'{"starts_at": "2030-01-01T20:00:00Z", "general_admission": {"quantity": 1, "price": 1},'
    )
    head += b' "name": "'
    tail = b'"}'
    return head + b"n" * (padding - len(head) - len(tail)) + tail


async def test_oversized_body_is_413_and_the_server_keeps_serving(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/events",
        content=event_body(2 * CAP),
        headers={**ADMIN, "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("/payload-too-large")
    assert (await client.get("/healthz")).status_code == 200


async def test_oversized_streamed_body_is_413(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(32):
            yield b"x" * (64 * 1024)

    # No Content-Length: the body arrives chunked and is counted as it comes.
    response = await client.post(
        "/events", content=chunks(), headers={**ADMIN, "Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["type"].endswith("/payload-too-large")
    assert (await client.get("/healthz")).status_code == 200


async def test_streamed_body_under_the_cap_is_handled(client: httpx.AsyncClient) -> None:
    body = event_body(1000)

    async def chunks() -> AsyncIterator[bytes]:
        yield body[:500]
        yield body[500:]

    response = await client.post(
        "/events", content=chunks(), headers={**ADMIN, "Content-Type": "application/json"}
    )
    assert response.status_code in (201, 422), response.text


async def test_body_just_under_the_cap_is_handled_normally(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/events",
        content=event_body(CAP - 16),
        headers={**ADMIN, "Content-Type": "application/json"},
    )
    # A 1 MiB name is not a valid event, but the body was read and judged: not a 413.
    assert response.status_code in (201, 422), response.text
