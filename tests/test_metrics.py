"""/metrics (summed over the two workers of the live server) and JSON logs with request ids."""

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import ADMIN, ADMIN_TOKEN, EventFactory, running_server, ticket_ids
from tests.support.metrics import scrape, value
from tests.support.simulate import against, run_json

# The system layer (tests/support/system.py). Every test reads /metrics or the logs of a running
# server.
pytestmark = pytest.mark.system

RESERVE_ROUTE = "/events/{event_id}/reservations"


async def test_metrics_count_requests_over_all_workers(live_server: str) -> None:
    async with httpx.AsyncClient(base_url=live_server) as client:
        before = await scrape(client)
    # A new connection per request, so both workers answer some of them.
    for _ in range(20):
        async with httpx.AsyncClient(base_url=live_server) as fresh:
            assert (await fresh.get("/healthz")).status_code == 200
    async with httpx.AsyncClient(base_url=live_server) as client:
        after = await scrape(client)
    name = "boxoffice_http_requests_total"
    labels: dict[str, Any] = {"route": "/healthz", "method": "GET", "status": "200"}
    assert value(after, name, **labels) - value(before, name, **labels) == 20
    histogram = "boxoffice_http_request_duration_seconds_count"
    assert (
        value(after, histogram, route="/healthz") - value(before, histogram, route="/healthz") == 20
    )
    # Each of the two workers reports its pool; the gauge is their sum.
    assert value(after, "boxoffice_db_pool_size") >= 2 * 10  # POOL_SIZE=10 in the tests
    assert value(after, "boxoffice_db_pool_checked_out") >= 0


async def test_reservations_move_the_outcome_counters(
    client: httpx.AsyncClient, make_event: EventFactory
) -> None:
    event = await make_event(rows=1, seats_per_row=5)
    ids = await ticket_ids(client, event["id"])
    before = await scrape(client)

    tokens = []
    for ticket in ids[:3]:
        response = await client.post(
            f"/events/{event['id']}/reservations", json={"ticket_ids": [ticket], "customer": "m"}
        )
        assert response.status_code == 201, response.text
        tokens.append((response.json()["id"], response.json()["token"]))
    taken = await client.post(
        f"/events/{event['id']}/reservations", json={"ticket_ids": [ids[0]], "customer": "late"}
    )
    assert taken.status_code == 409
    rid, token = tokens[0]
    paid = await client.post(
        f"/reservations/{rid}/confirm",
        json={"payment_reference": "pay-1"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert paid.status_code == 200, paid.text

    after = await scrape(client)
    counter = "boxoffice_reservations_total"
    assert value(after, counter, outcome="won") - value(before, counter, outcome="won") == 3
    assert value(after, counter, outcome="refused") - value(before, counter, outcome="refused") == 1
    confirmed = value(after, counter, outcome="confirmed") - value(
        before, counter, outcome="confirmed"
    )
    assert confirmed == 1
    requests = "boxoffice_http_requests_total"
    for status, count in (("201", 3), ("409", 1)):
        moved = value(after, requests, route=RESERVE_ROUTE, status=status) - value(
            before, requests, route=RESERVE_ROUTE, status=status
        )
        assert moved == count
    text = (await client.get("/metrics")).text
    assert "boxoffice_lock_timeouts_total " in text
    assert "boxoffice_sweeper_freed_tickets_total " in text


def test_a_worker_still_creating_its_file_does_not_break_a_scrape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker's histogram file is empty between its creation and its sizing (and stays so if
    the worker dies then); a scrape at that moment still answers, with the other files' sums."""
    from prometheus_client.mmap_dict import MmapedDict, mmap_key

    from boxoffice import metrics

    name = "boxoffice_lock_timeouts"
    # prometheus_client's file format, written by its own (untyped) writer.
    worker = MmapedDict(str(tmp_path / "counter_1001.db"))  # type: ignore[no-untyped-call]
    key = mmap_key(name, name + "_total", [], [], "help")
    worker.write_value(key, 3.0, 0.0)  # type: ignore[no-untyped-call]
    worker.close()  # type: ignore[no-untyped-call]
    (tmp_path / "histogram_1002.db").touch()  # the other worker, caught mid-creation
    monkeypatch.setenv(metrics.MULTIPROC_DIR_ENV, str(tmp_path))

    body, _ = metrics.exposition()

    assert "boxoffice_lock_timeouts_total 3.0" in body.decode()


def test_json_logs_carry_the_request_id_and_no_tokens(
    database_url: str, tmp_path: Path, make_event: EventFactory
) -> None:
    log_path = tmp_path / "server.log"
    with (
        running_server(
            database_url, log_path, LOG_FORMAT="json", MAX_BODY_BYTES="1000", workers=1
        ) as base_url,
        httpx.Client(base_url=base_url, timeout=30) as client,
    ):
        response = client.get("/healthz", headers={"X-Request-ID": "test-123"})
        assert response.headers["x-request-id"] == "test-123"
        # An insane id is replaced by a fresh one.
        other = client.get("/healthz", headers={"X-Request-ID": "bad id/" + "x" * 80})
        assert len(other.headers["x-request-id"]) == 32
        created = client.post(
            "/events",
            json={
                "name": "Logged",
                "starts_at": "2030-01-01T20:00:00Z",
                "general_admission": {"quantity": 3, "price": 100},
            },
            headers=ADMIN,
        )
        assert created.status_code == 201, created.text
        hold = client.post(
            f"/events/{created.json()['id']}/reservations",
            json={"quantity": 1, "customer": "log"},
            headers={"X-Request-ID": "test-123"},
        )
        assert hold.status_code == 201, hold.text
        token = hold.json()["token"]
        auth = {"Authorization": f"Bearer {token}", "X-Request-ID": "test-123"}
        assert client.get(f"/reservations/{hold.json()['id']}", headers=auth).status_code == 200
        # A refusal is logged (a warning), with the request's id.
        refused = client.post(
            "/events", content=b"x" * 2000, headers={**ADMIN, "X-Request-ID": "test-123"}
        )
        assert refused.status_code == 413
        assert refused.headers["x-request-id"] == "test-123"

    lines = [line for line in log_path.read_text().splitlines() if line.strip()]
    entries = []
    for line in lines:
        assert token not in line
        assert ADMIN_TOKEN not in line
        if line.startswith("{"):
            entries.append(json.loads(line))
    ours = [entry for entry in entries if entry.get("request_id") == "test-123"]
    assert ours, lines
    for entry in ours:
        assert {"time", "level", "logger", "message", "request_id"} <= entry.keys()


async def test_a_lock_timeout_is_counted(
    client: httpx.AsyncClient, make_event: EventFactory, engine: AsyncEngine
) -> None:
    event = await make_event(rows=1, seats_per_row=2)
    ids = await ticket_ids(client, event["id"])
    before = await scrape(client)
    async with engine.begin() as conn:
        # Another transaction holds the seat's row lock: the reservation waits LOCK_TIMEOUT_MS.
        await conn.execute(text("SELECT id FROM tickets WHERE id = :id FOR UPDATE"), {"id": ids[0]})
        response = await client.post(
            f"/events/{event['id']}/reservations", json={"ticket_ids": [ids[0]], "customer": "l"}
        )
        assert response.status_code == 409, response.text
    after = await scrape(client)
    name = "boxoffice_lock_timeouts_total"
    assert value(after, name) - value(before, name) == 1
    counter = "boxoffice_reservations_total"
    assert value(after, counter, outcome="refused") - value(before, counter, outcome="refused") == 1


async def test_the_counters_move_while_boxoffice_simulate_runs(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What an operator watches during an on-sale: scraped while `boxoffice simulate mixed`
    runs, the counters climb; afterwards they agree with the simulator's own tally."""
    counter = "boxoffice_reservations_total"
    env = {"SWEEP_INTERVAL_SECONDS": "0.5"}
    with running_server(database_url, tmp_path / "server.log", workers=2, **env) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            before = await scrape(client)
            run = asyncio.create_task(
                run_json(
                    capsys,
                    "mixed",
                    *("--requests", "400", "--hold-seconds", "1", "--pool", "100"),
                    *("--seed", "3"),
                    *against(url, database_url),
                )
            )
            won_during: list[float] = []
            while not run.done():
                samples = await scrape(client)
                if not run.done():
                    won_during.append(value(samples, counter, outcome="won"))
            code, report = await run
            assert code == 0, report["verdict"]

            async def swept() -> bool:
                samples = await scrape(client)
                return value(samples, counter, outcome="expired") > value(
                    before, counter, outcome="expired"
                )

            # Late payers leave expired holds behind; the sweeper (every 0.5 s) counts them.
            async with asyncio.timeout(30):
                while not await swept():  # noqa: ASYNC110 - the sweeper is another process
                    await asyncio.sleep(0.1)
            after = await scrape(client)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    # by_action counts answers by status, e.g. {"201": 112, "409 tickets-unavailable": 103}.
    reserve = report["by_action"]["reserve"]
    won = reserve["201"]
    refused = sum(count for answer, count in reserve.items() if answer.startswith("409"))
    start = value(before, counter, outcome="won")
    assert any(start < seen < start + won for seen in won_during), (
        "no scrape saw the won counter part-way",
        start,
        won_during,
    )
    assert moved(counter, outcome="won") == won == report["wins"]
    assert moved(counter, outcome="refused") == refused
    assert moved(counter, outcome="confirmed") == report["confirmed"]
    assert moved(counter, outcome="expired") >= 1
    assert moved("boxoffice_sweeper_freed_tickets_total") >= 1
    assert moved("boxoffice_sweeper_runs_total", result="ok") >= 1
    attempts = sum(reserve.values())
    assert moved("boxoffice_http_requests_total", route=RESERVE_ROUTE) == attempts
    assert moved("boxoffice_http_request_duration_seconds_count", route=RESERVE_ROUTE) == attempts
