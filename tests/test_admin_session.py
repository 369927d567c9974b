"""GET /admin/session, the admin page's sign-in: 200 for the admin token, 401 (with a Bearer
challenge) without one, 403 for another; and a wrong token leaves no trace in any log."""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from boxoffice.config import Settings
from boxoffice.main import create_app
from tests.conftest import (
    ADMIN,
    ADMIN_TOKEN,
    SERVER_SECRET,
    running_server,
)
from tests.support.problems import assert_problem

PATH = "/admin/session"
# Long enough for the page's form (minlength 16), and unmistakable in a log.
WRONG_TOKEN = "wrong-admin-token-" + "q7Zx" * 6


async def test_the_admin_token_signs_in(client: httpx.AsyncClient) -> None:
    response = await client.get(PATH, headers=ADMIN)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"role": "admin"}


async def test_no_token_is_a_401_with_a_bearer_challenge(client: httpx.AsyncClient) -> None:
    for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": f"Basic {ADMIN_TOKEN}"}):
        response = await client.get(PATH, headers=headers)
        assert_problem(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer", headers


async def test_a_wrong_token_is_a_403(client: httpx.AsyncClient) -> None:
    for token in (WRONG_TOKEN, ADMIN_TOKEN[:-1], ADMIN_TOKEN + "x", ADMIN_TOKEN.upper()):
        response = await client.get(PATH, headers={"Authorization": f"Bearer {token}"})
        body = assert_problem(response, 403, "forbidden")
        assert token not in response.text and ADMIN_TOKEN not in response.text, body


async def test_it_only_reads(client: httpx.AsyncClient) -> None:
    for method in ("POST", "PUT", "DELETE"):
        response = await client.request(method, PATH, headers=ADMIN)
        assert response.status_code == 405, (method, response.text)


async def test_a_wrong_token_is_in_no_log_record(caplog: pytest.LogCaptureFixture) -> None:
    """In process, every logger at DEBUG: no record of the request carries the token."""
    settings = Settings(
        admin_token=ADMIN_TOKEN, server_secret=SERVER_SECRET, sweep_interval_seconds=0
    )
    app = create_app(settings)
    caplog.set_level(logging.DEBUG)
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://admin") as local:
        wrong = await local.get(PATH, headers={"Authorization": f"Bearer {WRONG_TOKEN}"})
        right = await local.get(PATH, headers=ADMIN)
    assert (wrong.status_code, right.status_code) == (403, 200)
    logged = "\n".join(
        f"{record.getMessage()} {record.args!r} {record.__dict__!r}" for record in caplog.records
    )
    assert WRONG_TOKEN not in logged
    assert ADMIN_TOKEN not in logged


@contextmanager
def verbose_server(database_url: str, log: Path) -> Iterator[str]:
    """`boxoffice serve` as a user starts it, but logging at DEBUG (access log included)."""
    with running_server(database_url, log, workers=1, log_level="debug") as url:
        yield url


@pytest.mark.system
def test_a_wrong_token_is_not_in_the_server_log(database_url: str, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    with verbose_server(database_url, log) as url:
        wrong = httpx.get(url + PATH, headers={"Authorization": f"Bearer {WRONG_TOKEN}"})
        assert wrong.status_code == 403
        assert httpx.get(url + PATH, headers=ADMIN).status_code == 200
    output = log.read_text()
    # The log did see the requests (so their absence below means something) ...
    assert f"GET {PATH} HTTP/1.1" in output and "403" in output, output
    # ... and neither token.
    assert WRONG_TOKEN not in output
    assert ADMIN_TOKEN not in output
