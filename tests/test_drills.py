"""The failover drills (./scripts/drill NAME) pass on a fresh cluster, and their verdict can
fail: it counts what the database lost against what clients were told.

The drills need root (network namespaces) and scripts/install-ha's packages, and take about
three minutes together; deselect them with -m "not drill".
"""

import json
import os
import shutil
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from boxoffice.drill.run import verdict_from_database
from boxoffice.drill.rush import Ledger, Stream
from tests.conftest import EventFactory, ticket_ids

ROOT = Path(__file__).parent.parent


def run_drill(name: str) -> dict[str, Any]:
    if os.geteuid() != 0:
        pytest.skip("the drills need root (network namespaces)")
    if shutil.which("patroni") is None:
        pytest.skip("the cluster's packages are missing: scripts/install-ha installs them")
    drill = subprocess.run(
        [ROOT / "scripts" / "drill", name], capture_output=True, text=True, timeout=600
    )
    last = drill.stdout.strip().splitlines()[-1] if drill.stdout.strip() else ""
    assert last.startswith("{"), drill.stderr[-3000:] + drill.stdout[-3000:]
    verdict: dict[str, Any] = json.loads(last)
    assert drill.returncode == (0 if verdict["ok"] else 1)
    return verdict


@pytest.mark.drill
@pytest.mark.system
def test_failover_loses_nothing_a_client_was_told_of() -> None:
    """The primary killed (Patroni and postmaster, SIGKILL), then cut off the network, each in
    the middle of a rush through the load balancer to two API hosts."""
    verdict = run_drill("failover")
    assert [phase["fault"] for phase in verdict["phases"]] == ["kill", "netcut"]
    assert verdict["acknowledged_lost"] == 0
    assert verdict["oversold"] == 0
    assert verdict["invariants"] == "hold"
    assert verdict["non_503_errors"] == 0
    for phase in verdict["phases"]:
        # A new leader took over, clients were told 503 while there was none, and the rush
        # went on: every one-at-a-time job (relay, sweeper) works on the new leader.
        assert phase["leader_after"] != phase["broken"]
        assert phase["errors"].get("503", 0) > 0
        assert phase["acknowledged"]["bookings"] > 0
        assert phase["swept_after_fault"] > 0
        assert phase["mail_sent_after_fault"] > 0
        assert phase["admitted_after_fault"] > 0
        assert phase["stream_changes_after_fault"] > 0
        assert phase["stream_mismatched_tickets"] == 0
        assert phase["relay_host"] in ("api1", "api2")
    assert verdict["ok"], verdict["violations"]


@pytest.mark.drill
@pytest.mark.system
def test_a_switchover_under_load_loses_nothing() -> None:
    verdict = run_drill("switchover")
    [phase] = verdict["phases"]
    assert phase["leader_after"] != phase["broken"]
    assert verdict["acknowledged_lost"] == 0
    assert verdict["oversold"] == 0
    assert verdict["non_503_errors"] == 0
    assert verdict["ok"], verdict["violations"]


@pytest.mark.drill
@pytest.mark.system
def test_losing_an_api_host_costs_only_its_requests_in_flight() -> None:
    verdict = run_drill("api-host-loss")
    assert [phase["fault"] for phase in verdict["phases"]] == ["api-kill", "api-netcut"]
    for phase in verdict["phases"]:
        # The drill breaks the host whose worker relays the live feed.
        lost = phase["broken"]
        [survivor] = {"api1", "api2"} - {lost}
        assert phase["relay_host_before"] == lost, phase
        # Requests the host had taken may fail; none sent after HAProxy took it out.
        assert phase["host_out_after_seconds"] is not None, phase
        assert phase["failed_after_host_out"] == 0, phase
        assert phase["failed_not_in_flight"] == 0, phase
        # The other host's worker relays the live feed now.
        assert phase["relay_host"] == survivor, phase
        assert "503" not in phase["errors"], phase
        assert phase["served_after_loss"].get(lost, 0) == 0, phase
        assert phase["served_after_loss"][survivor] > 0, phase
        assert phase["acknowledged_lost"] == 0
        assert phase["invariants"] == "hold"
    assert verdict["ok"], verdict["violations"]


@pytest.mark.system
async def test_the_verdict_counts_what_the_database_does_not_have(
    client: httpx.AsyncClient, make_event: EventFactory, database_url: str
) -> None:
    """A hold, a booking and a release the clients were told of but the database lacks; two
    acknowledged bookings of one seat; a stream that announced a booking nobody made."""
    event = await make_event(rows=1, seats_per_row=6)
    seats = await ticket_ids(client, event["id"])
    path = f"/events/{event['id']}/reservations"
    ledger = Ledger()
    held = []
    for seat in seats[:3]:
        response = await client.post(path, json={"ticket_ids": [seat], "customer": "c"})
        assert response.status_code == 201, response.text
        held.append(response.json())
        ledger.holds[held[-1]["id"]] = [seat]
    confirmed = await client.post(
        f"/reservations/{held[0]['id']}/confirm",
        json={"payment_reference": "p"},
        headers={"Authorization": f"Bearer {held[0]['token']}"},
    )
    assert confirmed.status_code in (200, 201), confirmed.text
    ledger.bookings[held[0]["id"]] = confirmed.json()["id"]
    released = await client.delete(
        f"/reservations/{held[1]['id']}", headers={"Authorization": f"Bearer {held[1]['token']}"}
    )
    assert released.status_code in (200, 204), released.text
    ledger.released.add(held[1]["id"])

    stream = Stream(client, event["id"])
    stream.statuses = dict.fromkeys(seats, "available") | {
        seats[0]: "booked",
        seats[2]: "reserved",
    }
    stream.announced_booked = {seats[0]}
    clean = await verdict_from_database(
        database_url, ledger, stream, event["id"], datetime.now(UTC)
    )
    assert (clean["acknowledged_lost"], clean["oversold"]) == (0, 0)
    assert clean["invariants"] == "hold"
    assert clean["stream_mismatched_tickets"] == 0
    assert clean["stream_announced_uncommitted"] == 0

    ghost = str(uuid.uuid4())
    ledger.holds[ghost] = [seats[4]]  # a hold the database never got
    ledger.bookings[held[2]["id"]] = str(uuid.uuid4())  # a booking it never made
    ledger.released.add(held[2]["id"])  # a release it never did (the hold is active)
    twice = str(uuid.uuid4())
    ledger.holds[twice] = [seats[0]]  # told booked twice: oversold
    ledger.bookings[twice] = str(uuid.uuid4())
    stream.announced_booked.add(seats[5])  # the stream said booked; it is not
    stream.statuses[seats[3]] = "reserved"
    lossy = await verdict_from_database(
        database_url, ledger, stream, event["id"], datetime.now(UTC)
    )
    # The ghost hold and the twice-told one, two bookings, one release.
    assert lossy["acknowledged_lost"] == 5
    assert lossy["oversold"] == 1
    assert lossy["stream_mismatched_tickets"] == 1
    assert lossy["stream_announced_uncommitted"] == 1
