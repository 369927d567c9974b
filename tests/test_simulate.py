"""`boxoffice simulate`: its verdict on hand-made runs (so a broken service would make it fail),
each scenario against the real server, a database broken on purpose, and the issue's
acceptance command on a private embedded server."""

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from boxoffice import cli
from boxoffice.config import Settings
from boxoffice.invariants import Violation
from boxoffice.migrate import upgrade
from boxoffice.simulate import runner
from boxoffice.simulate.load import Budget, Recorder
from boxoffice.simulate.outcomes import Attempt, InvariantReport
from boxoffice.simulate.scenarios import SCENARIOS, make_plan, seated_sections
from boxoffice.simulate.verdict import judge, percentile, summarize
from tests.conftest import (
    ADMIN_TOKEN,
    Databases,
    assert_invariants,
    create_engine,
    free_port,
    running_server,
)
from tests.support.simulate import against, run_json, simulate

# --- the verdict on hand-made runs ------------------------------------------------------------


def win(buyer: int, tickets: tuple[int, ...] = (7,), **fields: Any) -> Attempt:
    fields.setdefault("reservation", f"r{buyer}")
    fields.setdefault("started", 0.0)
    fields.setdefault("latency", 0.01)
    return Attempt(buyer, "reserve", 201, tickets=tickets, wanted=tickets, **fields)


def refused(buyers: range) -> list[Attempt]:
    return [Attempt(b, "reserve", 409, 0.0, 0.01, problem="tickets-unavailable") for b in buyers]


def follow_up(buyer: int, action: str, status: int, started: float, **fields: Any) -> Attempt:
    return Attempt(buyer, action, status, started, 0.01, reservation=f"r{buyer}", **fields)  # type: ignore[arg-type]


BROKEN = Violation("I5", "counts by status do not add up to the event's ticket count", [{"x": 1}])


def test_exactly_one_winner_is_ok() -> None:
    verdict = judge([*refused(range(1, 4)), win(4), *refused(range(5, 8))], hold_seconds=600)
    assert verdict.ok, verdict.problems
    assert verdict.line() == "VERDICT: OK — exactly one winner (buyer 4), 6 refused with 409"


def test_zero_winners_fail() -> None:
    verdict = judge(refused(range(1, 11)))
    assert not verdict.ok
    assert verdict.line().startswith("VERDICT: FAIL — zero winners: nobody got the ticket")


def test_two_winners_fail() -> None:
    verdict = judge([win(1), win(2), *refused(range(3, 6))], hold_seconds=600)
    assert not verdict.ok
    assert "2 winners (buyers 1, 2): the ticket was sold twice" in verdict.message
    # The timing check sees the same thing from the tickets' side.
    assert "held by two buyers at once" in verdict.message


def test_a_server_error_fails_even_with_one_winner() -> None:
    error = Attempt(2, "reserve", 500, 0.0, 0.01, problem="internal-error")
    verdict = judge([win(1), error, *refused(range(3, 6))])
    assert not verdict.ok
    assert "1 server error(s) (1× 500 internal-error)" in verdict.message


def test_a_transport_error_fails() -> None:
    lost = Attempt(2, "reserve", None, 0.0, 30.0, problem="ReadTimeout", detail="ReadTimeout")
    verdict = judge([win(1), lost])
    assert not verdict.ok
    assert "1 transport error(s), e.g. ReadTimeout" in verdict.message


def test_an_unexpected_status_fails() -> None:
    verdict = judge([win(1), Attempt(2, "reserve", 404, 0.0, 0.01, problem="not-found")])
    assert not verdict.ok
    assert "1× 404 not-found" in verdict.message


def test_no_attempts_fail() -> None:
    assert not judge([]).ok


@pytest.mark.parametrize(
    ("report", "expected"),
    [
        (InvariantReport.of([BROKEN], [BROKEN]), "invariant I5 broken in this run's event"),
        (InvariantReport.of([], [BROKEN]), "invariant I5 broken in the database"),
        (InvariantReport.skipped("no database to check"), "invariant check skipped"),
    ],
)
def test_a_broken_or_unchecked_invariant_fails_a_clean_run(
    report: InvariantReport, expected: str
) -> None:
    verdict = judge([win(1), *refused(range(2, 5))], invariants=report)
    assert not verdict.ok
    assert expected in verdict.message


def test_a_clean_run_with_the_invariants_holding_is_ok() -> None:
    verdict = judge([win(1), *refused(range(2, 5))], invariants=InvariantReport.of([], []))
    assert verdict.ok
    assert verdict.message.endswith("invariants I1–I5 hold in the event and the whole database")
    # Nobody asked for the check: OK, and the verdict does not claim it.
    assert "invariants" not in judge([win(1)], invariants=InvariantReport.off()).message


def test_overlapping_holds_fail_and_disjoint_ones_pass() -> None:
    disjoint = [win(1, (1, 2)), win(2, (3,)), *refused(range(3, 9))]
    verdict = judge(disjoint, scenario="overlap", supply=12, hold_seconds=600)
    assert verdict.ok, verdict.problems
    assert verdict.message.startswith("2 of 8 reservation attempts won 3 tickets, none twice")

    overlapping = [win(1, (1, 2)), win(2, (2, 3))]
    verdict = judge(overlapping, scenario="overlap", supply=12, hold_seconds=600)
    assert not verdict.ok
    assert "1 ticket(s) held by two buyers at once: sold twice, e.g. ticket 2" in verdict.message


def test_a_hold_must_be_exactly_what_was_asked_for() -> None:
    partial = Attempt(1, "reserve", 201, 0.0, 0.01, tickets=(1,), wanted=(1, 2))
    verdict = judge([partial], scenario="overlap", hold_seconds=600)
    assert not verdict.ok
    assert "asked for [1, 2] and got [1]" in verdict.message

    short = Attempt(1, "reserve", 201, 0.0, 0.01, tickets=(1,), quantity=2)
    assert "asked for 2 and got 1" in judge([short], scenario="best-available").message


def test_more_tickets_than_the_event_has_fail() -> None:
    wins = [win(1, (1, 2)), win(2, (3, 4))]
    verdict = judge(wins, scenario="best-available", supply=3)
    assert not verdict.ok
    assert "4 tickets won but the event has only 3" in verdict.message


def test_mixed_a_released_ticket_may_be_won_again_a_booked_one_never() -> None:
    first = win(1, (5,), started=0.0, latency=0.01)
    second = win(2, (5,), started=0.5, latency=0.01)
    released = follow_up(1, "release", 204, started=0.2)
    assert judge([first, released, second], scenario="mixed", hold_seconds=2).ok

    confirmed = follow_up(1, "confirm", 200, started=0.2)
    verdict = judge([first, confirmed, second], scenario="mixed", hold_seconds=2)
    assert not verdict.ok
    assert "ticket 5 (buyers 1 and 2)" in verdict.message

    # After the hold surely lapsed, the ticket is free again without anyone releasing it.
    later = win(2, (5,), started=2.5, latency=0.01)
    assert judge([first, later], scenario="mixed", hold_seconds=2).ok
    # Before it can have lapsed, it is not.
    assert not judge([first, second], scenario="mixed", hold_seconds=2).ok


def test_mixed_holds_last_exactly_as_long_as_promised() -> None:
    hold = win(1, (5,), started=0.0, latency=0.01)
    late_and_refused = follow_up(1, "confirm", 409, 2.3, problem="reservation-expired")
    verdict = judge([hold, late_and_refused], scenario="mixed", hold_seconds=2)
    assert verdict.ok, verdict.problems
    assert "0 confirmed, 0 released, 1 found their hold expired" in verdict.message

    late_but_paid = follow_up(1, "confirm", 200, 2.3)
    verdict = judge([hold, late_but_paid], scenario="mixed", hold_seconds=2)
    assert not verdict.ok
    assert "honoured after they expired" in verdict.message

    early = follow_up(1, "release", 409, 0.5, problem="reservation-expired")
    verdict = judge([hold, early], scenario="mixed", hold_seconds=2)
    assert not verdict.ok
    assert "expired before their 2 s" in verdict.message

    # A confirm that cannot be told in time or late (near the expiry) may go either way.
    close = follow_up(1, "confirm", 409, 1.99, problem="reservation-expired")
    assert judge([hold, close], scenario="mixed", hold_seconds=2).ok


def test_only_the_expected_409s_of_a_follow_up_are_fine() -> None:
    hold = win(1, (5,))
    not_active = follow_up(1, "confirm", 409, 0.1, problem="reservation-not-active")
    verdict = judge([hold, not_active], scenario="mixed", hold_seconds=2)
    assert not verdict.ok
    assert "1× 409 reservation-not-active on confirm" in verdict.message


def test_figures() -> None:
    attempts = [
        win(1, (1, 2), started=0.0, latency=0.010),
        *[
            Attempt(b, "reserve", 409, 0.1, 0.001 * b, problem="tickets-unavailable")
            for b in range(2, 101)
        ],
        Attempt(101, "reserve", 503, 0.2, 0.5, problem="service-unavailable"),
    ]
    summary = summarize(attempts)
    assert (summary.requests, summary.attempts, summary.wins, summary.tickets_won) == (
        101,
        101,
        1,
        2,
    )
    assert summary.conflicts == {"tickets-unavailable": 99}
    assert summary.errors == {"503 service-unavailable": 1}
    assert summary.latency is not None
    assert summary.latency.max == 500.0
    assert summary.latency.p50 == pytest.approx(51.0)
    assert summary.elapsed == pytest.approx(0.7)
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 99) == 4.0


def test_plans() -> None:
    assert make_plan("one-ticket", buyers=500).concurrency == 500
    with pytest.raises(ValueError, match="one-ticket sends one request per buyer"):
        make_plan("one-ticket", duration=5)
    mixed = make_plan("mixed")
    assert (mixed.requests, mixed.hold_seconds, mixed.buyers, mixed.pool) == (1000, 2, None, 333)
    best = make_plan("best-available", buyers=80)
    assert (best.seats_per_hold, best.pool, best.layout) == (2, 80, "ga")
    with pytest.raises(ValueError, match="needs --layout seated"):
        make_plan("overlap", layout="ga")
    with pytest.raises(ValueError, match="must be positive"):
        make_plan("overlap", buyers=0)
    for seats in (1, 24, 25, 60, 1234):
        sections = seated_sections(seats)
        assert sum(s["rows"] * s["seats_per_row"] for s in sections) == seats


def test_the_cli_offers_every_scenario() -> None:
    parser = cli.build_parser()
    for scenario in SCENARIOS:
        assert parser.parse_args(["simulate", scenario]).scenario == scenario


async def test_the_budget_stops_new_buyers_and_an_abort_wakes_thinkers() -> None:
    recorder = Recorder()
    budget = Budget(recorder, buyers=2, requests=None, duration=None)
    assert [budget.next_buyer(), budget.next_buyer(), budget.next_buyer()] == [1, 2, None]
    budget = Budget(recorder, buyers=None, requests=5, duration=None)
    recorder.sent = 5
    assert budget.next_buyer() is None
    budget = Budget(recorder, buyers=None, requests=None, duration=60)
    asyncio.get_running_loop().call_soon(budget.abort)
    assert await budget.pause(60) is False
    assert budget.next_buyer() is None


# --- the command, in this process -------------------------------------------------------------


async def counts(engine: AsyncEngine, sql: str, event_id: str) -> dict[str, int]:
    async with engine.connect() as conn:
        rows = await conn.execute(text(sql), {"e": uuid.UUID(event_id)})
        return {str(row[0]): int(row[1]) for row in rows}


def assert_clean(code: int, report: dict[str, Any]) -> None:
    assert code == 0, report["verdict"]
    assert report["verdict"]["ok"] is True
    assert report["errors"] == {}
    assert report["invariants"]["status"] == "passed"
    assert report["invariants"]["event"] == [] and report["invariants"]["database"] == []


async def test_one_ticket_exactly_one_winner(
    live_server: str, database_url: str, engine: AsyncEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = await run_json(
        capsys, "one-ticket", "--buyers", "100", *against(live_server, database_url)
    )
    assert_clean(code, report)
    assert (report["attempts"], report["wins"], report["refused"]) == (100, 1, 99)
    assert report["conflicts"] == {"tickets-unavailable": 99}
    assert report["supply"] == 1 and report["tickets_left"] == 0
    assert set(report["latency_ms"]) == {"p50", "p95", "p99", "max", "mean"}
    assert report["throughput_rps"] > 0
    # The database agrees: one active hold, the winner's, on the one ticket.
    holds = await counts(
        engine,
        "SELECT customer, count(*) FROM reservations WHERE event_id = :e GROUP BY customer",
        report["event_id"],
    )
    assert holds == {f"sim-{report['settings']['seed']}-{report['winners'][0]}": 1}
    await assert_invariants(engine, report["event_id"])


@pytest.mark.parametrize(
    ("scenario", "options"),
    [("one-ticket", ("--buyers", "50")), ("best-available", ("--buyers", "40", "--quantity", "2"))],
)
async def test_keyed_buyers_take_the_keyed_path_with_the_same_verdict(
    scenario: str,
    options: tuple[str, ...],
    live_server: str,
    database_url: str,
    engine: AsyncEngine,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Each attempt with a fresh Idempotency-Key, as the buyer's web page sends it: the same
    verdict and invariants as without, and every win went through the key's claim."""
    code, report = await run_json(
        capsys, scenario, *options, *against(live_server, database_url), keyed=True
    )
    assert_clean(code, report)
    assert report["idempotency_keys"] is True and report["path"].startswith("keyed")
    assert report["settings"]["idempotency_keys"] is True
    if scenario == "one-ticket":
        assert (report["attempts"], report["wins"], report["refused"]) == (50, 1, 49)
        assert report["conflicts"] == {"tickets-unavailable": 49}
    else:
        assert report["attempts"] == 40 and report["wins"] >= 1
        assert report["tickets_won"] == 2 * report["wins"] <= report["supply"]
        assert report["tickets_won"] + report["tickets_left"] == report["supply"]
    # Every win went through the keyed path: its key is stored with its answer (201).
    keys = await counts(
        engine,
        "SELECT 'answered', count(*) FROM idempotency_keys WHERE status_code = 201"
        " AND scope = 'POST /events/{event_id}/reservations ' || CAST(CAST(:e AS uuid) AS text)",
        report["event_id"],
    )
    assert keys == {"answered": report["wins"]}
    await assert_invariants(engine, report["event_id"])


async def test_overlap_holds_never_share_a_seat(
    live_server: str, database_url: str, engine: AsyncEngine, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = await run_json(
        capsys, "overlap", "--buyers", "60", "--seed", "7", *against(live_server, database_url)
    )
    assert_clean(code, report)
    assert report["attempts"] == 60 and report["wins"] >= 1
    assert report["wins"] + report["refused"] == 60
    statuses = await counts(
        engine,
        "SELECT status::text, count(*) FROM tickets WHERE event_id = :e GROUP BY status",
        report["event_id"],
    )
    assert statuses.get("reserved", 0) == report["tickets_won"] <= report["supply"] == 12
    await assert_invariants(engine, report["event_id"])


@pytest.mark.parametrize("layout", ["ga", "seated"])
async def test_best_available_sells_each_ticket_once(
    layout: str,
    live_server: str,
    database_url: str,
    engine: AsyncEngine,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, report = await run_json(
        capsys,
        "best-available",
        "--buyers",
        "80",
        "--quantity",
        "2",
        "--layout",
        layout,
        *against(live_server, database_url),
    )
    assert_clean(code, report)
    assert report["supply"] == 80
    assert report["tickets_won"] == 2 * report["wins"] <= 80
    assert report["tickets_won"] + report["tickets_left"] == 80
    holds = await counts(
        engine,
        "SELECT status::text, count(*) FROM reservations WHERE event_id = :e GROUP BY status",
        report["event_id"],
    )
    assert holds == {"active": report["wins"]}


async def test_mixed_pays_releases_and_lets_holds_expire(
    live_server: str,
    database_url: str,
    engine: AsyncEngine,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    # 1 s holds, so late payers come back within the run. With seed 3, buyers 4, 22 and 24 of
    # the first wave (32 buyers, 100 free seats: nearly all win) are late payers.
    chart = tmp_path / "mixed.png"
    code, report = await run_json(
        capsys,
        "mixed",
        "--requests",
        "150",
        "--hold-seconds",
        "1",
        "--pool",
        "100",
        "--seed",
        "3",
        "--plot",
        str(chart),
        *against(live_server, database_url),
    )
    assert_clean(code, report)
    assert report["requests"] >= 150
    assert report["confirmed"] >= 1 and report["released"] >= 1
    assert report["expired"] >= 1, "a late payer must get 409 reservation-expired"
    assert report["by_action"]["confirm"].get("409 reservation-expired", 0) >= 1
    bookings = await counts(
        engine,
        "SELECT 'bookings', count(*) FROM bookings WHERE event_id = :e",
        report["event_id"],
    )
    assert bookings == {"bookings": report["confirmed"]}
    await assert_invariants(engine, report["event_id"])
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert chart.stat().st_size > 10_000


def test_the_table_for_people(
    live_server: str, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = simulate("one-ticket", "--buyers", "20", *against(live_server, database_url))
    out = capsys.readouterr().out
    assert code == 0, out
    for figure in ("reservation attempts", "wins", "409s", "errors", "latency", "invariants"):
        assert figure in out
    assert "20× tickets-unavailable" not in out and "19× tickets-unavailable" in out
    verdict = [line for line in out.splitlines() if line.startswith("VERDICT:")]
    assert len(verdict) == 1 and verdict[0].startswith("VERDICT: OK — exactly one winner")
    # Which path was measured: no Idempotency-Key unless asked for.
    assert "unkeyed: no Idempotency-Key" in out


def test_setup_errors_exit_2(
    live_server: str, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    assert simulate("one-ticket", "--url", closed, "--no-invariants") == 2
    assert f"cannot reach the server at {closed}" in capsys.readouterr().err

    wrong = ["--url", live_server, "--admin-token", "not-the-admin-token", "--no-invariants"]
    assert simulate("one-ticket", "--buyers", "3", *wrong) == 2
    assert "refused the admin token (403)" in capsys.readouterr().err

    assert simulate("one-ticket", "--duration", "3") == 2
    assert "use --buyers" in capsys.readouterr().err


def test_without_a_database_the_check_is_skipped_loudly(
    live_server: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("DATABASE_URL", "POSTGRES_HOST"):
        monkeypatch.delenv(variable, raising=False)
    target = ["--url", live_server, "--admin-token", ADMIN_TOKEN, "--buyers", "5"]
    assert simulate("one-ticket", *target) == 1
    captured = capsys.readouterr()
    assert "SKIPPED" in captured.out
    assert "VERDICT: FAIL — invariant check skipped: no database to check" in captured.out
    assert "WARNING: the invariant check was SKIPPED" in captured.err

    assert simulate("one-ticket", *target, "--no-invariants") == 0
    assert "not checked (--no-invariants)" in capsys.readouterr().out


def test_plot_without_matplotlib_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(runner, "plot_available", lambda: False)
    assert simulate("one-ticket", "--plot", str(tmp_path / "x.png")) == 2
    assert "pip install 'boxoffice[plot]'" in capsys.readouterr().err


async def test_the_invariant_step_skips_what_it_cannot_read() -> None:
    report = await runner.check_database(None, None)
    assert report.status == "skipped" and "no database" in report.reason
    closed = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    report = await runner.check_database(closed, uuid.uuid4())
    assert report.status == "skipped" and "cannot check the database" in report.reason


async def test_the_invariant_step_wants_the_servers_database(database_url: str) -> None:
    report = await runner.check_database(database_url, uuid.uuid4())
    assert report.status == "skipped"
    assert "is it the one the server uses?" in report.reason


# --- a database broken on purpose ---------------------------------------------------------


@pytest.mark.system
def test_a_broken_invariant_fails_the_run(
    databases: Databases, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = databases.create("boxoffice_simulate_broken")
    upgrade(url)
    with running_server(url, tmp_path / "server.log") as base:
        target = ["--url", base, "--database-url", url, "--admin-token", ADMIN_TOKEN]
        assert simulate("one-ticket", "--buyers", "20", *target, "--json") == 0
        first = json.loads(capsys.readouterr().out)

        async def break_and_check() -> InvariantReport:
            engine = create_engine(Settings(database_url=url, admin_token=ADMIN_TOKEN))
            try:
                async with engine.begin() as conn:
                    await conn.execute(
                        text("UPDATE events SET ticket_count = ticket_count + 1 WHERE id = :e"),
                        {"e": uuid.UUID(first["event_id"])},
                    )
            finally:
                await engine.dispose()
            # The step the simulator runs after its load, on the run's (now broken) event.
            return await runner.check_database(url, first["event_id"])

        report = asyncio.run(break_and_check())
        assert report.status == "failed"
        assert [v.invariant for v in report.event] == ["I5"]
        assert [v.invariant for v in report.database] == ["I5"]

        # A new run on that database: its own event is fine, the database is not: FAIL, exit 1.
        assert simulate("overlap", "--buyers", "20", *target) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out
    assert "database: I5 counts by status do not add up" in out
    verdict = next(line for line in out.splitlines() if line.startswith("VERDICT:"))
    assert verdict.startswith("VERDICT: FAIL — invariant I5 broken in the database")


# --- the acceptance command ---------------------------------------------------------


@pytest.mark.skipif(
    bool(os.environ.get("SKIP_EMBEDDED_TESTS")), reason="SKIP_EMBEDDED_TESTS is set"
)
@pytest.mark.system
def test_acceptance_500_buyers_on_a_private_embedded_server() -> None:
    """`boxoffice simulate one-ticket --buyers 500`, no --url: it starts and stops its own."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "TEST_DATABASE_URL", "POSTGRES_HOST", "ADMIN_TOKEN"}
    }
    command = [sys.executable, "-m", "boxoffice.cli", "simulate", "one-ticket", "--buyers", "500"]
    completed = subprocess.run(
        [*command, "--json"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    report = json.loads(completed.stdout)
    assert (report["attempts"], report["wins"], report["refused"]) == (500, 1, 499)
    assert report["errors"] == {}
    assert report["invariants"]["status"] == "passed"
    assert "private server and database stopped" in completed.stderr
