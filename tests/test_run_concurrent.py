"""run_concurrent.py, the seed demo's race: as a user runs it against the real server, and its
verdict logic on hand-made outcomes (so a broken service would visibly make it fail)."""

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

import run_concurrent
from boxoffice.config import Settings
from run_concurrent import Outcome, judge
from tests.conftest import (
    ADMIN_TOKEN,
    Databases,
    EventFactory,
    assert_invariants,
    create_engine,
    free_port,
    running_server,
    ticket_ids,
)

SCRIPT = Path(__file__).resolve().parent.parent / "run_concurrent.py"
USERS = 50


def run_script(*args: str) -> tuple[int, str, str]:
    """`python run_concurrent.py ARGS` exactly as a user runs it: (exit code, stdout, stderr)."""
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return completed.returncode, completed.stdout, completed.stderr


def outcome_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("user ")]


def winner_lines(stdout: str) -> list[str]:
    return [line for line in outcome_lines(stdout) if re.search(r"HTTP 20[01]\s+WINNER", line)]


# --- the verdict on hand-made outcomes ---------------------------------------------------


def refusals(users: range) -> list[Outcome]:
    return [Outcome(user, 409, "refused  Tickets unavailable") for user in users]


def test_exactly_one_winner_is_ok() -> None:
    verdict = judge([*refusals(range(1, 4)), Outcome(4, 200, "WINNER"), *refusals(range(5, 8))])
    assert verdict.ok
    assert verdict.line() == "VERDICT: OK — exactly one winner (user 4), 6 refused with 409"


def test_201_also_counts_as_the_winner() -> None:
    assert judge([Outcome(1, 201, "WINNER"), *refusals(range(2, 4))]).ok


def test_zero_winners_fail() -> None:
    verdict = judge(refusals(range(1, 11)))
    assert not verdict.ok
    assert verdict.line().startswith("VERDICT: FAIL — zero winners")


def test_two_winners_fail() -> None:
    outcomes = [Outcome(1, 200, "WINNER"), Outcome(2, 200, "WINNER"), *refusals(range(3, 6))]
    verdict = judge(outcomes)
    assert not verdict.ok
    assert "2 winners (users 1, 2)" in verdict.message
    assert "sold twice" in verdict.message


def test_a_server_error_fails_even_with_one_winner() -> None:
    outcomes = [Outcome(1, 200, "WINNER"), Outcome(2, 500, "error  boom"), *refusals(range(3, 6))]
    verdict = judge(outcomes)
    assert not verdict.ok
    assert "1 server error(s) (1× 500)" in verdict.message


def test_a_transport_error_fails() -> None:
    outcomes = [Outcome(1, 200, "WINNER"), Outcome(2, None, "transport error  ReadTimeout")]
    verdict = judge(outcomes)
    assert not verdict.ok
    assert "transport error" in verdict.message


def test_an_unexpected_status_fails() -> None:
    verdict = judge([Outcome(1, 200, "WINNER"), Outcome(2, 404, "error  Not found")])
    assert not verdict.ok
    assert "1× 404" in verdict.message


def test_no_outcomes_fail() -> None:
    assert not judge([]).ok


def test_main_exits_2_when_the_server_cannot_be_reached(
    capsys: pytest.CaptureFixture[str],
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    assert run_concurrent.main(["--url", closed, "--users", "3"]) == 2
    assert f"cannot reach the server at {closed}" in capsys.readouterr().err


# --- against the real server, as a subprocess ---------------------------------------------


@pytest.mark.system
async def test_fifty_users_one_ticket_exactly_one_wins(
    live_server: str, make_event: EventFactory, client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    event = await make_event(rows=1, seats_per_row=3)
    ticket_id = (await ticket_ids(client, event["id"]))[0]
    args = ["--url", live_server, "--users", str(USERS), "--ticket-id", str(ticket_id)]

    code, stdout, stderr = await asyncio.to_thread(run_script, *args)

    assert code == 0, stdout + stderr
    assert len(outcome_lines(stdout)) == USERS, stdout
    winners = winner_lines(stdout)
    assert len(winners) == 1, stdout
    winner = int(winners[0].split()[1])
    refused = [line for line in outcome_lines(stdout) if "HTTP 409" in line]
    assert len(refused) == USERS - 1, stdout
    assert (
        f"VERDICT: OK — exactly one winner (user {winner}), {USERS - 1} refused with 409"
        in stdout.splitlines()
    ), stdout

    # The database agrees: the ticket is held by one active reservation, the winner's.
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT t.status::text AS ticket_status, r.status::text AS hold_status,"
                    " r.customer FROM tickets t JOIN reservations r ON r.id = t.reservation_id"
                    " WHERE t.id = :id"
                ),
                {"id": ticket_id},
            )
        ).all()
        holds = (
            await conn.execute(
                text("SELECT count(*) FROM reservation_tickets WHERE ticket_id = :id"),
                {"id": ticket_id},
            )
        ).scalar()
    assert [(row.ticket_status, row.hold_status, row.customer) for row in rows] == [
        ("reserved", "active", str(winner))
    ]
    assert holds == 1

    # The same ticket again: it is taken, so nobody wins and the script must say FAIL.
    code, stdout, stderr = await asyncio.to_thread(
        run_script, *args[:2], "--users", "10", *args[4:]
    )
    assert code == 1, stdout + stderr
    assert winner_lines(stdout) == []
    assert len([line for line in outcome_lines(stdout) if "HTTP 409" in line]) == 10, stdout
    assert any(line.startswith("VERDICT: FAIL — zero winners") for line in stdout.splitlines()), (
        stdout
    )

    await assert_invariants(engine, event["id"])


@pytest.mark.system
def test_first_available_ticket_on_request(databases: Databases, tmp_path: Path) -> None:
    """--first-available fights over the first ticket `GET /tickets` lists as available.

    On a server of its own (fresh database, seeded demo events), so the shared test database's
    demo tickets stay untouched for the other tests."""
    url = databases.create("boxoffice_run_concurrent")
    with running_server(url, tmp_path / "server.log") as base:
        listed = httpx.get(base + "/tickets", params={"limit": 500}, timeout=10).json()["data"]
        first = next(t["internal_id"] for t in listed if t["status"] == "available")
        code, stdout, stderr = run_script("--url", base, "--users", "10", "--first-available")
    assert code == 0, stdout + stderr
    assert f"ticket {first}:" in stdout, stdout
    winners = winner_lines(stdout)
    assert len(winners) == 1, stdout
    winner = winners[0].split()[1]

    async def check() -> None:
        engine = create_engine(Settings(database_url=url, admin_token=ADMIN_TOKEN))
        try:
            async with engine.connect() as conn:
                holder = (
                    await conn.execute(
                        text(
                            "SELECT r.customer FROM tickets t JOIN reservations r"
                            " ON r.id = t.reservation_id"
                            " WHERE t.id = :id AND t.status = 'reserved' AND r.status = 'active'"
                        ),
                        {"id": first},
                    )
                ).scalar_one()
            assert holder == winner
            await assert_invariants(engine)
        finally:
            await engine.dispose()

    asyncio.run(check())


@pytest.mark.system
def test_a_closed_port_exits_2() -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    code, stdout, stderr = run_script("--url", closed, "--users", "5")
    assert code == 2, stdout + stderr
    assert "cannot reach the server" in stderr
    assert "VERDICT" not in stdout
