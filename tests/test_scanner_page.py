"""The door's page in a real browser (headless Chromium, as tests/test_browser.py drives it):
verdicts as the door sees them, and scans that outlive a lost network and a reload.

The network is cut with Chrome's DevTools protocol: emulated offline (every request fails),
or only the check-in requests blocked (the page itself still reloads). Waits are conditions,
never sleeps.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tests import test_browser
from tests.conftest import ADMIN
from tests.support.problems import bearer
from tests.test_browser import OpenBrowser, fetch_rows, wait

# The browser and its teardown check (no script errors) are test_browser's own fixtures.
browser = test_browser.browser
open_browser = test_browser.open_browser

PHONE = (412, 915)


@dataclass(frozen=True)
class Door:
    event_id: str
    scanner_name: str
    scanner_token: str
    # Issued ticket codes of one booking, in seat order (Main, …).
    codes: list[str]


@pytest.fixture
def api(live_server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server, timeout=30) as client:
        yield client


@pytest.fixture
def door(api: httpx.Client) -> Door:
    """An event with one booking of three tickets and a scanner."""
    body = {
        "name": "Door night",
        "starts_at": "2030-06-01T19:30:00Z",
        "sections": [{"name": "Main", "rows": 2, "seats_per_row": 4, "price": 2500}],
    }
    response = api.post("/events", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    event_id = response.json()["id"]
    tickets = api.get(f"/events/{event_id}/tickets").json()["items"]
    response = api.post(
        f"/events/{event_id}/reservations",
        json={"ticket_ids": [t["id"] for t in tickets[:3]], "customer": "ada@example.com"},
    )
    assert response.status_code == 201, response.text
    hold = response.json()
    response = api.post(
        f"/reservations/{hold['id']}/confirm",
        json={"payment_reference": "pay_door"},
        headers=bearer(hold["token"]),
    )
    assert response.status_code == 200, response.text
    booking = response.json()
    secret = booking["booking_url"].split("#", 1)[1]
    page = api.get(f"/bookings/{booking['id']}", headers=bearer(secret))
    assert page.status_code == 200, page.text
    codes = [ticket["code"] for ticket in page.json()["tickets"]]
    response = api.post(f"/events/{event_id}/scanners", json={"name": "Door 1"}, headers=ADMIN)
    assert response.status_code == 201, response.text
    return Door(event_id, "Door 1", response.json()["token"], codes)


def checked_in_by(database_url: str, code: str) -> Any:
    [row] = fetch_rows(
        database_url, "SELECT checked_in_by FROM issued_tickets WHERE code = $1", code
    )
    return row["checked_in_by"]


def open_door(driver: WebDriver, live_server: str, door: Door) -> None:
    """Open the scanner page on a phone-sized window and save the scanner's token."""
    driver.set_window_size(*PHONE)
    driver.get(f"{live_server}/events/{door.event_id}/scan")
    field = driver.find_element(By.ID, "scanner-token")
    assert field.is_displayed(), "with no token saved, the page asks for one"
    field.send_keys(door.scanner_token + Keys.ENTER)
    wait(driver).until(
        lambda d: d.find_element(By.ID, "token-state").text == "Scanner token: saved"
    )


def scan(driver: WebDriver, code: str) -> None:
    """Type the code and press Enter, as a hardware scanner does."""
    driver.find_element(By.ID, "ticket-code").send_keys(code + Keys.ENTER)


def verdict(driver: WebDriver) -> tuple[str, str, str]:
    box = driver.find_element(By.ID, "verdict")
    return (
        str(box.get_attribute("data-verdict")),
        str(driver.find_element(By.ID, "verdict-word").text),
        str(driver.find_element(By.ID, "verdict-detail").text),
    )


def wait_for_verdict(driver: WebDriver, kind: str) -> tuple[str, str, str]:
    wait(driver).until(lambda d: verdict(d)[0] == kind, f"no {kind} verdict")
    return verdict(driver)


def queued(driver: WebDriver) -> str:
    return str(driver.find_element(By.ID, "queue-count").text)


def earlier(driver: WebDriver) -> list[tuple[str, str]]:
    """The late answers to queued scans, newest first: (verdict, text)."""
    return [
        (str(item.get_attribute("data-verdict")), str(item.text))
        for item in driver.find_elements(By.CSS_SELECTOR, "#earlier li")
    ]


def go_offline(driver: WebDriver, offline: bool) -> None:
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd(
        "Network.emulateNetworkConditions",
        {"offline": offline, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
    )


def block_check_ins(driver: WebDriver, blocked: bool) -> None:
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["*/checkins"] if blocked else []})


def test_admitted_then_already_in_then_queued_offline_and_sent_when_back(
    live_server: str, open_browser: OpenBrowser, door: Door, database_url: str
) -> None:
    driver = open_browser()
    open_door(driver, live_server, door)
    first, second = door.codes[:2]

    # Typed as printed, in lower case: the page and the server both normalise.
    scan(driver, f"{first[:8].lower()}-{first[8:].lower()}")
    kind, word, detail = wait_for_verdict(driver, "admitted")
    assert word == "ADMITTED"
    assert "Main · Row A · Seat 1" in detail
    assert checked_in_by(database_url, first) == "Door 1"

    scan(driver, first)
    kind, word, detail = wait_for_verdict(driver, "already")
    assert word == "ALREADY IN"
    assert "by Door 1" in detail

    scan(driver, "NOT-A-CODE")
    kind, word, _ = wait_for_verdict(driver, "refused")
    assert word == "NOT A TICKET CODE"

    go_offline(driver, True)
    scan(driver, second)
    kind, word, detail = wait_for_verdict(driver, "queued")
    assert word == "QUEUED (offline)"
    assert queued(driver) == "1"
    assert checked_in_by(database_url, second) is None

    go_offline(driver, False)
    wait(driver).until(lambda d: queued(d) == "0", "the queued scan was never sent")
    [(kind, text)] = earlier(driver)
    assert kind == "admitted"
    assert "ADMITTED" in text and second in text and "Row A · Seat 2" in text
    assert checked_in_by(database_url, second) == "Door 1"
    # The live verdict still shows the scan that was queued, not the late answer.
    assert verdict(driver)[0] == "queued"


def test_queued_scans_survive_a_reload_and_are_sent_in_order(
    live_server: str, open_browser: OpenBrowser, door: Door, database_url: str
) -> None:
    driver = open_browser()
    open_door(driver, live_server, door)
    third = door.codes[2]
    unknown = "ABCDEFGHJKLMNPQR"

    block_check_ins(driver, True)
    scan(driver, third)
    wait_for_verdict(driver, "queued")
    assert queued(driver) == "1"
    scan(driver, unknown)
    wait(driver).until(lambda d: queued(d) == "2", "the second scan was not queued")

    driver.refresh()
    wait(driver).until(lambda d: d.find_element(By.ID, "token-state").text.endswith("saved"))
    assert queued(driver) == "2"
    assert earlier(driver) == []
    assert checked_in_by(database_url, third) is None

    block_check_ins(driver, False)
    wait(driver).until(lambda d: queued(d) == "0", "the queued scans were never sent")
    answers = earlier(driver)
    assert [kind for kind, _ in answers] == ["refused", "admitted"]  # newest first
    assert "UNKNOWN TICKET" in answers[0][1] and unknown in answers[0][1]
    assert "ADMITTED" in answers[1][1] and third in answers[1][1]
    assert checked_in_by(database_url, third) == "Door 1"

    # And a reload keeps the answers, not the queue.
    driver.refresh()
    wait(driver).until(lambda d: len(earlier(d)) == 2)
    assert queued(driver) == "0"
