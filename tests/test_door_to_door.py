"""The whole way from a seat to the door, as a buyer and a door scanner live it.

Headless Chromium picks seats, holds them, pays at the `test` provider's checkout, lands on
the booking and opens its ticket page; the e-mail arrives at a real SMTP server in this
process with each ticket's QR code, which decodes to a ticket code; a scanner admits that
ticket once and refuses the second scan. Then the invariants, payments included.
"""

import asyncio
import email
import email.policy
import io
import threading
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
import zxingcpp
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session
from PIL import Image
from selenium.webdriver.common.by import By

from boxoffice.config import Settings
from boxoffice.db import Database
from boxoffice.invariants import Violation, check_invariants
from boxoffice.migrate import upgrade
from tests import test_browser as ui
from tests.conftest import ADMIN, Databases, free_port, running_server
from tests.test_browser import (
    OpenBrowser,
    click_seats,
    pay_at_the_test_checkout,
    type_email,
    wait,
    wait_for_seats,
)

pytestmark = pytest.mark.system

# The browser tests' fixtures: Chromium (or a skip that says why) and buyers' browsers.
browser = ui.browser
open_browser = ui.open_browser


class Inbox:
    """Messages a real SMTP server received, and a way to wait for the next one."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self._arrived = threading.Condition()

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self._arrived:
            self.messages.append(message)
            self._arrived.notify_all()
        return "250 OK"

    def wait_for(self, count: int, timeout: float = 30) -> list[EmailMessage]:
        with self._arrived:
            arrived = self._arrived.wait_for(lambda: len(self.messages) >= count, timeout)
        assert arrived, f"{len(self.messages)} message(s) arrived, {count} expected"
        return self.messages


@pytest.fixture(scope="module")
def inbox() -> Iterator[tuple[Inbox, int]]:
    handler = Inbox()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def box_office(
    databases: Databases, inbox: tuple[Inbox, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """A `serve` on a database of its own (its mail sender must be the only one there), with
    SMTP pointing at the inbox."""
    url = databases.create()
    upgrade(url)
    log = tmp_path_factory.mktemp("door") / "server.log"
    with running_server(
        url,
        log,
        workers=1,
        POOL_SIZE="4",
        SMTP_URL=f"smtp://127.0.0.1:{inbox[1]}",
        MAIL_FROM="Box office <tickets@example.org>",
        OUTBOX_INTERVAL_SECONDS="0.2",
    ) as base:
        yield base, url


def qr_codes_in(message: EmailMessage) -> list[str]:
    """What every inline PNG of the message decodes to."""
    decoded = []
    for part in message.walk():
        if part.get_content_type() == "image/png":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            image = Image.open(io.BytesIO(payload))
            decoded += [result.text for result in zxingcpp.read_barcodes(image)]
    return decoded


def test_pick_hold_pay_get_the_email_and_get_in_once(
    box_office: tuple[str, str], inbox: tuple[Inbox, int], open_browser: OpenBrowser
) -> None:
    base, database_url = box_office
    api = httpx.Client(base_url=base, timeout=30)
    created = api.post(
        "/events",
        headers=ADMIN,
        json={
            "name": "Door to door night",
            "venue": "Test Hall",
            "starts_at": "2030-06-01T19:30:00Z",
            "sections": [{"name": "Stalls", "rows": 2, "seats_per_row": 6, "price": 2500}],
        },
    )
    assert created.status_code == 201, created.text
    event: dict[str, Any] = created.json()

    buyer = open_browser()
    buyer.get(f"{base}/shop/events/{event['id']}")
    wait(buyer).until(lambda d: d.find_element(By.ID, "live").get_attribute("data-state") == "on")
    seats = ["Stalls A-3", "Stalls A-4"]
    click_seats(buyer, seats)
    type_email(buyer, "ada@example.com")
    buyer.find_element(By.ID, "hold-button").click()
    wait_for_seats(buyer, seats, "mine")
    buyer.find_element(By.ID, "pay-button").click()
    pay_at_the_test_checkout(buyer)
    wait(buyer).until(lambda d: d.find_element(By.ID, "booking-details").is_displayed())
    assert buyer.find_element(By.ID, "booking-title").text == "You're going!"
    code = buyer.find_element(By.ID, "booking-code").text
    assert len(code) == 6

    # The booking's own page, from its link (its secret in the fragment).
    buyer.find_element(By.ID, "booking-link").click()
    wait(buyer).until(lambda d: d.find_element(By.ID, "tickets-details").is_displayed())
    assert buyer.find_element(By.ID, "tickets-code").text == code
    cards = buyer.find_elements(By.CSS_SELECTOR, "#ticket-cards li")
    page_codes = {card.get_attribute("data-code") for card in cards}
    assert len(page_codes) == 2
    assert all(
        card.find_element(By.CSS_SELECTOR, "img.ticket-qr").get_attribute("naturalWidth") != "0"
        for card in cards
    )

    # The e-mail: to the buyer, with the booking code and a QR code per ticket.
    handler, _ = inbox
    [message] = handler.wait_for(1)
    assert message["To"] == "ada@example.com"
    assert code in message["Subject"]
    mailed_codes = qr_codes_in(message)
    assert set(mailed_codes) == page_codes and len(mailed_codes) == 2

    # The door: a scanner of this event admits the ticket once.
    scanner = api.post(f"/events/{event['id']}/scanners", json={"name": "Door 1"}, headers=ADMIN)
    assert scanner.status_code == 201, scanner.text
    door = {"Authorization": f"Bearer {scanner.json()['token']}"}
    ticket_code = mailed_codes[0]
    first = api.post(
        f"/events/{event['id']}/checkins", json={"ticket_code": ticket_code}, headers=door
    )
    assert first.status_code == 200, first.text
    assert first.json()["label"] in seats
    second = api.post(
        f"/events/{event['id']}/checkins", json={"ticket_code": ticket_code}, headers=door
    )
    assert second.status_code == 409
    assert second.json()["type"].endswith("/already-checked-in")
    assert second.json()["checked_in_by"] == "Door 1"

    # The ticket page says so too, after a reload.
    buyer.refresh()
    wait(buyer).until(lambda d: d.find_element(By.ID, "tickets-details").is_displayed())
    states = {
        card.get_attribute("data-code"): card.find_element(By.CSS_SELECTOR, ".ticket-state").text
        for card in buyer.find_elements(By.CSS_SELECTOR, "#ticket-cards li")
    }
    assert states[ticket_code].startswith("Checked in")

    assert asyncio.run(violations(database_url)) == []
    api.close()


async def violations(database_url: str) -> list[Violation]:
    db = Database(Settings(database_url=database_url, pool_size=2))
    try:
        return await check_invariants(db)
    finally:
        await db.close()
