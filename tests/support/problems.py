"""RFC 9457 problem answers and the bearer header, as the HTTP tests check them."""

from typing import Any

import httpx

PROBLEM_BASE = "https://boxoffice.dev/problems/"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    """An RFC 9457 problem with this status and stable type; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), (
        response.headers["content-type"]
    )
    body: dict[str, Any] = response.json()
    assert body["type"] == PROBLEM_BASE + slug, body
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    return body
