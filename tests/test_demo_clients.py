"""The original demo's clients run against boxoffice unchanged (DESIGN.md, compatibility).

The client here is the demo's own `run_concurrent.py` in spirit: plain HTTP from threads,
50 ms apart, the demo's hard-coded ticket UUID, nothing imported from boxoffice. It runs
against `./scripts/serve` exactly as a new user starts it (embedded PostgreSQL, fresh data
folder), before and after `boxoffice seed --demo-data`.
"""

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
import pytest

from boxoffice.serving import ServeProcess, free_port
from tests.conftest import RATE_LIMITS_OFF, Databases, embedded_data_dir
from tests.support.system import system_fixture

PROJECT = Path(__file__).resolve().parent.parent
DEMO_TICKET = "bf2af413-dd2f-4dd2-a0e1-13def2abe020"
DEMO_TICKETS = {
    "Event #1": {
        DEMO_TICKET,
        "94c60c55-0e59-41b3-9f56-55a67ddef42f",
        "410c82b1-d33a-4eec-b93f-9b42f66f1000",
        "b34b2e03-edba-46bb-884d-d64a30e3886a",
        "c6f0078a-224a-449c-aeb8-0a81fbba1e8a",
    },
    "Event #2": {
        "cfae7a8f-4d1f-4ac0-aab7-fb46b3f9f420",
        "664047f8-3253-41e4-98d6-9416cd3af9d4",
        "bf03a62f-338c-4b13-a291-2d52152fcfa0",
        "fef88ffa-a9e2-425a-86d0-c8d0b4c5555d",
        "91691830-bd26-4ebf-9f8c-b8e15bdbf136",
    },
}
# What a new user's shell has: none of the settings that would point away from the embedded
# default (the test runner's own may name a server).
_DATABASE_SETTINGS = ("DATABASE_URL", "POSTGRES_HOST", "POSTGRES_USER", "POSTGRES_DB")


def user_environment(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _DATABASE_SETTINGS}
    env.pop("ADMIN_TOKEN", None)
    env["DATA_DIR"] = str(data_dir)
    # Rate limits off: these tests send the demo's ten reservations from one address three
    # times in a few seconds, more than the default bucket (10 at once, 30 a minute) allows.
    env.update(RATE_LIMITS_OFF)
    return env


def demo_client(base_url: str, users: int = 10) -> list[tuple[int, dict[str, Any]]]:
    """The original demo's run_concurrent.py: one thread per user, started 50 ms apart."""
    answers: list[tuple[int, dict[str, Any]] | None] = [None] * users

    def reserve(user_id: int) -> None:
        response = httpx.patch(
            base_url + "/tickets/reserve",
            json={"user_id": user_id, "ticket_id": DEMO_TICKET},
            headers={"accept": "application/json"},
            timeout=30,
        )
        answers[user_id - 1] = (response.status_code, response.json())

    threads = [threading.Thread(target=reserve, args=(user,)) for user in range(1, users + 1)]
    for thread in threads:
        thread.start()
        time.sleep(0.05)  # the demo's own stagger between users, not a wait for a race
    for thread in threads:
        thread.join()
    assert all(answer is not None for answer in answers)
    return [answer for answer in answers if answer is not None]


def assert_one_winner(answers: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
    statuses = sorted(status for status, _ in answers)
    assert statuses == [200] + [409] * 9, answers
    assert all(body.get("message") for _, body in answers), answers
    (won,) = [body for status, body in answers if status == 200]
    assert won["ticket_id"] == DEMO_TICKET and won["ticket_public_id"] == DEMO_TICKET
    return won


def demo_tickets(base_url: str) -> dict[str, dict[str, Any]]:
    """The demo's tickets as `GET /tickets` lists them on its first page, by UUID."""
    response = httpx.get(base_url + "/tickets", timeout=10)
    assert response.status_code == 200, response.text
    listed = response.json()["data"]
    wanted = set().union(*DEMO_TICKETS.values())
    return {ticket["id"]: ticket for ticket in listed if ticket["id"] in wanted}


def seed_demo_data(env: dict[str, str]) -> str:
    completed = subprocess.run(
        [str(PROJECT / ".venv/bin/boxoffice"), "seed", "--demo-data"],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed.stdout


@pytest.fixture(scope="module")
@system_fixture
def fresh_serve() -> Iterator[tuple[str, dict[str, str]]]:
    """`./scripts/serve` as a new user runs it, on a data folder of its own."""
    with embedded_data_dir() as data_dir:
        env = user_environment(data_dir)
        port = free_port()
        server = ServeProcess(
            command=["./scripts/serve", "--port", str(port)],
            port=port,
            base_env=env,
            cwd=PROJECT,
            log_path=data_dir / "serve.log",
            log_mode="w",
            new_session=False,
            # Ctrl-C, as the user stops it.
            stop_signal=signal.SIGINT,
            stop_timeout=30,
        )
        with server:
            yield server.url, env


def test_demo_client_gets_one_200_and_nine_409s_again_after_each_reseed(
    fresh_serve: tuple[str, dict[str, str]],
) -> None:
    base_url, env = fresh_serve
    listed = demo_tickets(base_url)
    # A fresh serve has the demo's ten tickets, on the first page of GET /tickets, on sale.
    assert set(listed) == set().union(*DEMO_TICKETS.values())
    for event_name, ids in DEMO_TICKETS.items():
        assert {listed[i]["event_name"] for i in ids} == {event_name}
    assert {ticket["status"] for ticket in listed.values()} == {"available"}

    first = assert_one_winner(demo_client(base_url))
    assert demo_tickets(base_url)[DEMO_TICKET]["status"] == "reserved"

    for _ in range(2):  # idempotent: the same state however often it runs
        output = seed_demo_data(env)
        assert "all ten are available" in output
        listed = demo_tickets(base_url)
        assert len(listed) == 10
        assert {ticket["status"] for ticket in listed.values()} == {"available"}
    # The reseed took the earlier winner's hold away: its token no longer opens anything.
    response = httpx.get(
        f"{base_url}/reservations/{first['reservation_id']}",
        headers={"Authorization": f"Bearer {first['token']}"},
        timeout=10,
    )
    assert response.status_code == 404, response.text

    second = assert_one_winner(demo_client(base_url))
    assert second["reservation_id"] != first["reservation_id"]
    # Still one ticket per UUID, still the same internal row.
    assert demo_tickets(base_url)[DEMO_TICKET]["internal_id"] == first["internal_id"]


def test_storefront_does_not_offer_the_demo_events_as_upcoming(
    fresh_serve: tuple[str, dict[str, str]],
) -> None:
    base_url, _ = fresh_serve
    page = httpx.get(base_url + "/", timeout=10)
    assert page.status_code == 200
    assert "Boxoffice Demo Night" in page.text
    assert "Event #1" not in page.text and "Event #2" not in page.text
    upcoming = httpx.get(base_url + "/events", params={"upcoming": "true"}, timeout=10).json()
    assert "Event #1" not in {event["name"] for event in upcoming["items"]}
    everything = httpx.get(base_url + "/events", timeout=10).json()
    assert {"Event #1", "Event #2"} <= {event["name"] for event in everything["items"]}


def test_our_run_concurrent_with_no_ticket_fights_over_the_demo_ticket(
    fresh_serve: tuple[str, dict[str, str]],
) -> None:
    base_url, env = fresh_serve
    seed_demo_data(env)
    completed = subprocess.run(
        [sys.executable, str(PROJECT / "run_concurrent.py"), "--url", base_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert f"ticket {DEMO_TICKET}" in completed.stdout
    assert "VERDICT: OK — exactly one winner" in completed.stdout
    assert len([line for line in completed.stdout.splitlines() if "HTTP 409" in line]) == 9
    assert demo_tickets(base_url)[DEMO_TICKET]["status"] == "reserved"


@pytest.mark.system
def test_run_concurrent_outside_the_venv_says_what_to_do() -> None:
    # -S: no site-packages, as with a system python that has neither httpx nor boxoffice.
    completed = subprocess.run(
        [sys.executable, "-S", str(PROJECT / "run_concurrent.py")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert completed.returncode != 0
    assert "Traceback" not in completed.stderr
    assert ".venv/bin/python run_concurrent.py" in completed.stderr
    assert "./scripts/serve" in completed.stderr


# --- `alembic upgrade head` in the project folder --------------------------------------------


async def migrated_revision(url: str) -> str | None:
    conn = await asyncpg.connect(url)
    try:
        exists = await conn.fetchval("SELECT to_regclass('alembic_version') IS NOT NULL")
        return await conn.fetchval("SELECT version_num FROM alembic_version") if exists else None
    finally:
        await conn.close()


def alembic_upgrade(env: dict[str, str], cwd: Path, *extra: str) -> None:
    completed = subprocess.run(
        [str(PROJECT / ".venv/bin/alembic"), *extra, "upgrade", "head"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_alembic_ini_names_no_database() -> None:
    ini = (PROJECT / "alembic.ini").read_text()
    assert "sqlalchemy.url" not in ini
    assert "postgresql://" not in ini


def postgres_variables(url: str) -> dict[str, str]:
    parts = urlsplit(url)
    # The embedded server listens on a socket only: its directory is the host, as in PGHOST.
    socket_dir = parse_qs(parts.query).get("host", [""])[0]
    variables = {
        "POSTGRES_HOST": parts.hostname or socket_dir,
        "POSTGRES_PORT": str(parts.port or 5432),
        "POSTGRES_USER": parts.username or "postgres",
        "POSTGRES_DB": parts.path.lstrip("/"),
    }
    if parts.password:
        variables["POSTGRES_PASSWORD"] = parts.password
    return variables


@pytest.mark.parametrize("how", ["DATABASE_URL", "POSTGRES_*", ".env"])
@pytest.mark.system
def test_alembic_upgrade_head_migrates_the_configured_database(
    how: str, databases: Databases, tmp_path: Path
) -> None:
    target = databases.create("boxoffice_alembic")
    bystander = databases.create("boxoffice_alembic_bystander")
    env = user_environment(tmp_path / "unused-data")
    cwd = PROJECT
    extra: tuple[str, ...] = ()
    if how == "DATABASE_URL":
        env["DATABASE_URL"] = target
    elif how == "POSTGRES_*":
        env.update(postgres_variables(target))
    else:
        # pydantic-settings reads .env from the working directory: run from a folder of our
        # own that holds one, with the project's alembic.ini.
        (tmp_path / ".env").write_text(f"DATABASE_URL={target}\n")
        cwd = tmp_path
        extra = ("-c", str(PROJECT / "alembic.ini"))

    alembic_upgrade(env, cwd, *extra)

    assert asyncio.run(migrated_revision(target)) is not None
    assert asyncio.run(migrated_revision(bystander)) is None
    assert not (tmp_path / "unused-data").exists(), "started an embedded server instead"
