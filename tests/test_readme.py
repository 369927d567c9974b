"""The README's curl walkthrough runs as written against the real service."""

import json
import re
import subprocess
from pathlib import Path

import pytest

from boxoffice.migrate import upgrade
from tests.conftest import ADMIN_TOKEN, Databases, running_server

README = Path(__file__).parent.parent / "README.md"


def curl_walkthrough() -> str:
    text = README.read_text()
    section = text.split("### Try it with curl", 1)[1]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, "the README lost its curl walkthrough"
    return match.group(1)


@pytest.mark.system
def test_readme_curl_examples_work(databases: Databases, tmp_path: Path) -> None:
    # A fresh database, as a new user has: the walkthrough speaks of "the demo event", which
    # `serve` seeds into an empty database, not of whatever other tests left behind.
    url = databases.create("boxoffice_readme")
    upgrade(url)
    with running_server(url, tmp_path / "server.log") as base_url:
        check_walkthrough(base_url)


def check_walkthrough(base_url: str) -> None:
    script = curl_walkthrough()
    # The only lines a reader adapts: where the server is and which admin token it uses.
    script = re.sub(r"^BASE=.*$", f"BASE={base_url}", script, count=1, flags=re.M)
    script = re.sub(r"^ADMIN_TOKEN=.*$", f"ADMIN_TOKEN={ADMIN_TOKEN}", script, count=1, flags=re.M)
    completed = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr + completed.stdout
    lines = [line for line in completed.stdout.splitlines() if line.strip()]
    bodies = [json.loads(line) for line in lines if line.startswith(("{", "["))]
    statuses = [body.get("status") for body in bodies if isinstance(body, dict)]
    assert 500 not in statuses and 503 not in statuses, completed.stdout

    hold = next(b for b in bodies if isinstance(b, dict) and "token" in b and "tickets" in b)
    assert hold["status"] == "active" and len(hold["tickets"]) == 2
    refused = next(b for b in bodies if isinstance(b, dict) and b.get("status") == 409)
    assert refused["type"].endswith("/tickets-unavailable")
    assert sorted(refused["ticket_ids"]) == sorted(t["id"] for t in hold["tickets"])
    payment = next(b for b in bodies if isinstance(b, dict) and "checkout_url" in b)
    assert payment["reservation_id"] == hold["id"] and payment["status"] == "pending"
    assert "303" in lines, "the test checkout's Pay sends the buyer back (303)"
    booked = next(b for b in bodies if isinstance(b, dict) and b.get("booking_code"))
    assert booked["id"] == hold["id"] and booked["status"] == "confirmed"
    assert all(ticket["status"] == "booked" for ticket in booked["tickets"])
    admitted = next(
        b for b in bodies if isinstance(b, dict) and "checked_in_by" in b and "status" not in b
    )
    assert admitted["checked_in_by"] == "Door 1"
    again = next(
        b
        for b in bodies
        if isinstance(b, dict)
        and b.get("status") == 409
        and b["type"].endswith("/already-checked-in")
    )
    assert again["checked_in_by"] == "Door 1"
    assert "204" in lines, "releasing the best-available hold answers 204"
    created = next(b for b in bodies if isinstance(b, dict) and b.get("name") == "Jazz Night")
    assert created["ticket_count"] == 60
    demo_list = next(b for b in bodies if isinstance(b, dict) and "data" in b)
    assert demo_list["data"][0]["id"] == "bf2af413-dd2f-4dd2-a0e1-13def2abe020"
    seed_reserve = bodies[-1]
    assert seed_reserve["ticket_id"] == "bf2af413-dd2f-4dd2-a0e1-13def2abe020"
    assert seed_reserve["message"] and seed_reserve["status"] == "reserved"


@pytest.mark.system
def test_readme_waiting_room_example_makes_a_queued_event(
    databases: Databases, tmp_path: Path
) -> None:
    section = README.read_text().split("### Selling fairly", 1)[1]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, "the README lost its waiting-room example"
    url = databases.create("boxoffice_readme")
    upgrade(url)
    with running_server(url, tmp_path / "server.log") as base_url:
        script = re.sub(r"^BASE=\S+;", f"BASE={base_url};", match.group(1), count=1, flags=re.M)
        script = script.replace("$(cat .boxoffice/admin_token)", ADMIN_TOKEN)
        completed = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert completed.returncode == 0, completed.stderr + completed.stdout
        page = completed.stdout.strip().replace("http://127.0.0.1:8000", base_url)
        event_id = page.rsplit("/", 1)[1]
        event = json.loads(
            subprocess.run(
                ["curl", "-s", f"{base_url}/events/{event_id}"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        assert event["queue_enabled"] and not event["on_sale"]
        assert event["max_tickets_per_customer"] == 4 and event["ticket_count"] == 96
        shop = subprocess.run(["curl", "-s", page], capture_output=True, text=True, check=True)
        assert "Sales open" in shop.stdout


@pytest.mark.parametrize("command", ["./scripts/serve", "./scripts/test"])
def test_readme_names_the_two_commands(command: str) -> None:
    text = README.read_text()
    assert command in text
    assert (README.parent / command).stat().st_mode & 0o111, f"{command} must be executable"
