"""`boxoffice simulate onsale` against real servers: a small queued on-sale (a pre-queue, a
burst after the opening, a cap) with the scalper alongside, on a server with the default
rate limits, and the scalper again on a second server (same database) with them off.

The statistics and figures are unit-tested without a server in tests/test_onsale_stats.py.
"""

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from boxoffice import cli
from boxoffice.config import Settings
from boxoffice.simulate.onsale import PROTECTED_LIMITS
from tests.conftest import ADMIN_TOKEN, Databases, running_server

pytestmark = pytest.mark.system

BUYERS, TICKETS, PRE_QUEUE_SHARE, CAP = 300, 60, 0.3, 4
# Two servers of two workers on a PostgreSQL other test runs may share: small pools.
POOL = "6"


async def booked(database_url: str, event_id: str) -> tuple[int, int]:
    """Booked tickets of the event, and holds on it that no used pass of the same customer
    stands behind (the figure the simulator reports, counted here on our own)."""
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow(
            """
            SELECT (SELECT count(*) FROM tickets WHERE event_id = $1 AND status = 'booked'),
                   (SELECT count(*) FROM reservations r WHERE r.event_id = $1 AND NOT EXISTS (
                        SELECT 1 FROM queue_entries q
                        WHERE q.reservation_id = r.id AND q.customer_key = r.customer_key))
            """,
            uuid.UUID(event_id),
        )
    finally:
        await conn.close()
    assert row is not None
    return int(row[0]), int(row[1])


def test_a_small_onsale_passes_with_sane_figures(
    databases: Databases, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = databases.create("boxoffice_onsale")
    with (
        running_server(
            url,
            tmp_path / "protected.log",
            # The service's default rate limits (the fixtures' servers have them off).
            RATE_LIMIT_RESERVATIONS_PER_MINUTE=PROTECTED_LIMITS[
                "RATE_LIMIT_RESERVATIONS_PER_MINUTE"
            ],
            RATE_LIMIT_RESERVATIONS_BURST=PROTECTED_LIMITS["RATE_LIMIT_RESERVATIONS_BURST"],
            RATE_LIMIT_QUEUE_PER_MINUTE=PROTECTED_LIMITS["RATE_LIMIT_QUEUE_PER_MINUTE"],
            RATE_LIMIT_QUEUE_BURST=PROTECTED_LIMITS["RATE_LIMIT_QUEUE_BURST"],
            POOL_SIZE=POOL,
        ) as protected,
        running_server(url, tmp_path / "open.log", POOL_SIZE=POOL) as unprotected,
    ):
        args = cli.build_parser().parse_args(
            [
                "simulate", "onsale", "--url", protected, "--database-url", url,
                "--admin-token", ADMIN_TOKEN, "--scalper-off-url", unprotected,
                "--buyers", str(BUYERS), "--tickets", str(TICKETS),
                "--pre-queue-share", str(PRE_QUEUE_SHARE), "--cap", str(CAP),
                "--admit-per-minute", "3000", "--streams", "20",
                "--scalper-seconds", "5", "--scalper-hold-seconds", "2",
                "--seed", "20240601", "--json",
            ]
        )  # fmt: skip
        code = cli.cmd_simulate(args, Settings(_env_file=None))
    captured = capsys.readouterr()
    try:
        report: dict[str, Any] = json.loads(captured.out)
    except ValueError:
        pytest.fail(f"no JSON (exit {code}):\n{captured.out}\n{captured.err}")
    assert code == 0, json.dumps(report["checks"], indent=1)
    assert report["verdict"]["ok"] is True
    assert report["verdict"]["line"].startswith("VERDICT: PASS")
    assert report["errors"] == {}
    assert all(check["ok"] is not False for check in report["checks"])

    joins = report["joins"]
    assert joins["total"] == BUYERS
    assert joins["pre_queue"] == round(BUYERS * PRE_QUEUE_SHARE)
    assert joins["arrivals"] == BUYERS - joins["pre_queue"]
    assert joins["per_second"] > 0 and joins["latency_ms"]["p99"] > 0

    arrivals = report["fairness"]["arrivals"]
    assert arrivals["spearman"] == 1.0
    assert arrivals["admitted"] == joins["arrivals"]  # the queue drained
    assert (arrivals["overtakers"], arrivals["skipped"], arrivals["client_order_violations"]) == (
        0, 0, 0,
    )  # fmt: skip
    assert report["fairness"]["lane_order_violations"] == 0
    pre = report["fairness"]["pre_queue"]
    assert pre["places"] == joins["pre_queue"]
    assert pre["groups"] == 4 and pre["dof"] == 9
    assert pre["p_value"] >= 0.001 and pre["uniform"] is True

    admission = report["admission"]
    assert admission["configured_per_minute"] == 3000
    assert admission["within_5_percent"] is True
    assert abs(admission["measured_per_minute"] / 3000 - 1) <= 0.05
    assert admission["ahead_of_rate"] <= 1

    integrity = report["integrity"]
    assert integrity["without_pass"] == 0
    assert integrity["above_cap"] == 0 and integrity["most_per_customer"] <= CAP
    assert integrity["sold_twice"] == 0
    # 300 buyers want about 600 seats: the 60 sell out, every one booked and paid for once.
    assert integrity["tickets_booked"] == integrity["tickets_paid"] == TICKETS
    assert report["invariants"]["status"] == "passed"
    assert report["reservations"]["during_joins"] is None or (
        report["reservations"]["during_joins"]["p99"] > 0
    )
    assert asyncio.run(booked(url, report["event_id"])) == (TICKETS, 0)

    on = report["scalper"]["protections_on"]
    off = report["scalper"]["protections_off"]
    assert on is not None and off is not None
    assert on["cap"] == CAP and off["cap"] is None
    assert on["held_most_per_customer"] <= CAP < off["held_most_per_customer"]
    assert on["too_many_requests"] > 0 and off["too_many_requests"] == 0
    assert on["real_buyer"]["success_rate"] > off["real_buyer"]["success_rate"]
