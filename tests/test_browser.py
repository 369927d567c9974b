"""The buyer's page and the admin page in a real browser: Debian's headless Chromium, driven by
selenium through the system's chromedriver (selenium never downloads a driver).

Each buyer is a browser of its own (its own process and profile, so its own sessionStorage);
the server is the real one with two workers and a sweeper every second. Waits are conditions
(WebDriverWait), never sleeps. The seat-map screenshot for the README is saved here too.
"""

import asyncio
import json
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import asyncpg
import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from boxoffice.config import Settings
from boxoffice.db import Database
from boxoffice.invariants import check_invariants
from tests.conftest import ADMIN, ADMIN_TOKEN, running_server

# The system layer (tests/support/system.py). Every test drives a browser against its own `boxoffice
# serve`.
pytestmark = pytest.mark.system

SCREENSHOT = Path(__file__).parent.parent / "docs" / "screenshot.png"
CHROMIUM = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WAIT_SECONDS = 15


@dataclass(frozen=True)
class Browser:
    binary: str
    driver: str


@pytest.fixture(scope="session")
def browser() -> Browser:
    binary = next((found for name in CHROMIUM if (found := shutil.which(name))), None)
    driver = shutil.which("chromedriver")
    if binary is None or driver is None:
        pytest.skip(
            "no headless browser: Chromium and chromedriver are not installed "
            "(scripts/install-browser installs Debian's chromium and chromium-driver as root)"
        )
    return Browser(binary, driver)


@dataclass(frozen=True)
class Shop:
    url: str
    log: Path
    api: httpx.Client


@pytest.fixture(scope="module")
def shop(
    browser: Browser, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Shop]:
    """The service as `boxoffice serve` runs it, sweeping expired holds every second."""
    log = tmp_path_factory.mktemp("shop") / "server.log"
    with (
        running_server(database_url, log, SWEEP_INTERVAL_SECONDS="1") as url,
        httpx.Client(base_url=url, timeout=30) as api,
    ):
        yield Shop(url, log, api)


OpenBrowser = Callable[[], WebDriver]


@pytest.fixture
def open_browser(browser: Browser, tmp_path: Path) -> Iterator[OpenBrowser]:
    """Start buyers' browsers; each is a separate Chromium with its own profile."""
    opened: list[WebDriver] = []

    def start() -> WebDriver:
        options = webdriver.ChromeOptions()
        options.binary_location = browser.binary
        for argument in (
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--window-size=1280,1000",
            "--lang=en-GB",
            f"--user-data-dir={tmp_path / f'profile-{len(opened)}'}",
        ):
            options.add_argument(argument)
        # Every request the page makes, to prove no token ever travels in a URL.
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
        driver = webdriver.Chrome(options=options, service=Service(executable_path=browser.driver))
        opened.append(driver)
        return driver

    yield start
    try:
        for driver in opened:
            assert_no_script_errors(driver)
    finally:
        for driver in opened:
            driver.quit()


# ---- helpers ----


def create_event(shop: Shop, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Browser test night",
        "venue": "Test Hall",
        "starts_at": "2030-06-01T19:30:00Z",
        "currency": "EUR",
        "sections": [{"name": "Stalls", "rows": 3, "seats_per_row": 8, "price": 2500}],
        **fields,
    }
    if "general_admission" in fields:
        del body["sections"]
    response = shop.api.post("/events", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    event: dict[str, Any] = response.json()
    return event


def tickets(shop: Shop, event_id: str) -> dict[str, dict[str, Any]]:
    """The event's tickets by label ("Stalls B-4")."""
    found: dict[str, dict[str, Any]] = {}
    after = None
    while True:
        params: dict[str, Any] = {"limit": 500} | ({"after": after} if after else {})
        page = shop.api.get(f"/events/{event_id}/tickets", params=params).json()
        found |= {ticket["label"]: ticket for ticket in page["items"]}
        after = page["next_after"]
        if after is None:
            return found


def labels(section: str, seats: str) -> list[str]:
    return [f"{section} {seat}" for seat in seats.split()]


def hold_as_someone_else(shop: Shop, event_id: str, ids: list[int]) -> dict[str, Any]:
    response = shop.api.post(
        f"/events/{event_id}/reservations",
        json={"ticket_ids": ids, "customer": "someone.else@example.com"},
    )
    assert response.status_code == 201, response.text
    hold: dict[str, Any] = response.json()
    return hold


T = TypeVar("T")


class PageWait(WebDriverWait[WebDriver]):
    """A wait that also rides out the page navigating away under a check (after paying, the
    shop moves on to the booking page): Chrome then aborts the command in flight, which is
    no answer yet, not a failure."""

    def until(self, method: Callable[[WebDriver], Literal[False] | T], message: str = "") -> T:
        def check(driver: WebDriver) -> Literal[False] | T:
            try:
                return method(driver)
            except WebDriverException as error:
                if "aborted by navigation" not in (error.msg or ""):
                    raise
                return False

        return super().until(check, message)


def wait(driver: WebDriver, seconds: float = WAIT_SECONDS) -> WebDriverWait[WebDriver]:
    return PageWait(
        driver, seconds, ignored_exceptions=[NoSuchElementException, StaleElementReferenceException]
    )


def seat(driver: WebDriver, label: str) -> WebElement:
    return driver.find_element(By.CSS_SELECTOR, f'button.seat[data-label="{label}"]')


def wait_for_seats(driver: WebDriver, labels: list[str], state: str) -> None:
    wait(driver).until(
        lambda d: all(seat(d, label).get_attribute("data-state") == state for label in labels),
        f"{labels} never became {state}",
    )


def open_shop(driver: WebDriver, shop: Shop, event_id: str) -> None:
    """Open the event's page and wait until its live stream delivered the first snapshot."""
    driver.get(f"{shop.url}/shop/events/{event_id}")
    wait(driver).until(
        lambda d: d.find_element(By.ID, "live").get_attribute("data-state") == "on",
        "the live stream never connected",
    )
    # Survives only as long as the page is not reloaded.
    driver.execute_script("window.sameDocument = true")


def still_the_same_document(driver: WebDriver) -> bool:
    return bool(driver.execute_script("return window.sameDocument === true"))


def message(driver: WebDriver) -> str:
    return str(driver.find_element(By.ID, "message").text)


def wait_for_message(driver: WebDriver, text: str) -> str:
    wait(driver).until(lambda d: text in message(d), f"no message saying {text!r}")
    return message(driver)


def type_email(driver: WebDriver, address: str = "ada@example.com") -> None:
    field = driver.find_element(By.ID, "customer")
    field.clear()
    field.send_keys(address)


def click_seats(driver: WebDriver, labels: list[str]) -> None:
    for label in labels:
        seat(driver, label).click()
        assert seat(driver, label).get_attribute("aria-pressed") == "true"


def hold_seats(driver: WebDriver, labels: list[str]) -> None:
    click_seats(driver, labels)
    type_email(driver)
    driver.find_element(By.ID, "hold-button").click()
    wait_for_seats(driver, labels, "mine")


def countdown(driver: WebDriver) -> str:
    return str(driver.find_element(By.ID, "countdown").text)


def wait_until_ticking(driver: WebDriver) -> None:
    wait(driver).until(lambda d: d.find_element(By.ID, "held").is_displayed())
    first = countdown(driver)
    assert first[0].isdigit(), first
    wait(driver).until(lambda d: countdown(d) != first, "the countdown does not tick")


def session_tokens(driver: WebDriver) -> list[str]:
    holds = json.loads(
        driver.execute_script("return sessionStorage.getItem('boxoffice.holds') || '{}'")
    )
    return [record["token"] for record in holds.values() if record.get("token")]


def requested_urls(driver: WebDriver) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        event = json.loads(entry["message"])["message"]
        if event["method"] == "Network.requestWillBeSent":
            urls.append(event["params"]["request"]["url"])
    return urls


def assert_no_script_errors(driver: WebDriver) -> None:
    # Refused requests (the 409 a test provokes) are logged as failed loads: not script errors.
    errors = [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE" and "Failed to load resource" not in entry["message"]
    ]
    assert errors == [], errors


def count_reservations(database_url: str, event_id: str) -> int:
    async def count() -> int:
        conn = await asyncpg.connect(database_url)
        try:
            found: int = await conn.fetchval(
                "SELECT count(*) FROM reservations WHERE event_id = $1", uuid.UUID(event_id)
            )
            return found
        finally:
            await conn.close()

    return asyncio.run(count())


@pytest.fixture(autouse=True)
def invariants_hold_afterwards(database_url: str) -> Iterator[None]:
    """Each scenario ends with the invariant checker on the whole database."""
    yield

    async def check() -> list[Any]:
        # Its own pool: asyncio.run makes a new event loop each time.
        db = Database(Settings(database_url=database_url, admin_token=ADMIN_TOKEN), size=1)
        try:
            return await check_invariants(db)
        finally:
            await db.close()

    violations = asyncio.run(check())
    assert violations == [], "\n".join(str(v) for v in violations)


# ---- the scenarios ----


def pay_at_the_test_checkout(browser: WebDriver) -> None:
    """On the `test` provider's checkout page, press Pay (it sends the buyer back)."""
    wait(browser).until(lambda d: "/pay/test/" in d.current_url)
    assert "no money moves" in browser.find_element(By.CSS_SELECTOR, ".status-badge").text
    browser.find_element(By.ID, "pay-button").click()


def test_hold_two_seats_pay_and_another_buyer_sees_it_live(
    shop: Shop, open_browser: OpenBrowser, database_url: str
) -> None:
    event = create_event(shop, hold_seconds=120)
    buyer, watcher = open_browser(), open_browser()
    open_shop(buyer, shop, event["id"])
    open_shop(watcher, shop, event["id"])
    seats = ["Stalls A-3", "Stalls A-4"]

    click_seats(buyer, seats)
    assert buyer.find_element(By.ID, "selection-total").text == "€50.00"
    assert "Hold 2 seats" in buyer.find_element(By.ID, "hold-button").text
    type_email(buyer)
    # A double click makes one hold: the button is busy at once, and the request carries an
    # Idempotency-Key besides.
    buyer.execute_script("const b = document.getElementById('hold-button'); b.click(); b.click();")
    wait_for_seats(buyer, seats, "mine")
    assert seat(buyer, seats[0]).get_attribute("aria-label") == (
        "Row A, seat 3, held by you, €25.00"
    )
    wait_until_ticking(buyer)
    assert countdown(buyer) <= "2:00"
    assert count_reservations(database_url, event["id"]) == 1

    # The other buyer's map changes without a reload.
    wait_for_seats(watcher, seats, "reserved")
    assert seat(watcher, seats[0]).get_attribute("aria-disabled") == "true"
    assert watcher.find_element(By.ID, "available-count").text == "22"

    assert buyer.find_element(By.ID, "pay-button").text == "Pay €50.00"
    buyer.find_element(By.ID, "pay-button").click()
    pay_at_the_test_checkout(buyer)
    wait(buyer).until(lambda d: "/shop/reservations/" in d.current_url)
    wait(buyer).until(lambda d: d.find_element(By.ID, "booking-details").is_displayed())
    assert buyer.find_element(By.ID, "booking-title").text == "You're going!"
    assert buyer.find_element(By.ID, "booking-event").text == "Browser test night"
    assert len(buyer.find_element(By.ID, "booking-code").text) == 6
    assert buyer.find_element(By.ID, "booking-total").text == "€50.00"
    rows = buyer.find_elements(By.CSS_SELECTOR, "#booking-tickets tr")
    assert [row.find_element(By.CSS_SELECTOR, "td").text for row in rows] == seats
    assert all(row.find_elements(By.CSS_SELECTOR, "td")[-1].text == "✓ Booked" for row in rows)

    wait_for_seats(watcher, seats, "booked")
    assert still_the_same_document(watcher)
    assert {tickets(shop, event["id"])[label]["status"] for label in seats} == {"booked"}

    # The hold's token stayed in the tab: in no URL the browser asked for, not in the log.
    [token] = session_tokens(buyer)
    urls = [*requested_urls(buyer), buyer.current_url]
    assert any("/checkout" in url for url in urls)
    assert not [url for url in urls if token in url or "token" in url.lower()]
    assert token not in shop.log.read_text()


def test_a_seat_taken_first_by_someone_faster_shows_the_409(
    shop: Shop, open_browser: OpenBrowser
) -> None:
    event = create_event(shop)
    by_label = tickets(shop, event["id"])
    buyer = open_browser()
    # This buyer's live updates are slow (blocked): the other buyer gets in between the
    # click and the hold, which only the server can tell.
    buyer.execute_cdp_cmd("Network.enable", {})
    buyer.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["*/stream"]})
    buyer.get(f"{shop.url}/shop/events/{event['id']}")
    click_seats(buyer, ["Stalls B-1", "Stalls B-2"])
    hold_as_someone_else(shop, event["id"], [by_label["Stalls B-2"]["id"]])
    type_email(buyer)
    buyer.find_element(By.ID, "hold-button").click()

    text = wait_for_message(buyer, "just taken")
    assert text == "Stalls B-2 was just taken by someone faster — pick another seat."
    taken = seat(buyer, "Stalls B-2")
    assert taken.get_attribute("data-state") == "reserved"
    assert taken.get_attribute("aria-disabled") == "true"
    assert "held by another buyer" in (taken.get_attribute("aria-label") or "")
    # The other seat is still chosen: one more click holds it.
    assert seat(buyer, "Stalls B-1").get_attribute("aria-pressed") == "true"
    buyer.find_element(By.ID, "hold-button").click()
    wait_for_seats(buyer, ["Stalls B-1"], "mine")


def test_a_seat_taken_while_chosen_is_dropped_live(shop: Shop, open_browser: OpenBrowser) -> None:
    event = create_event(shop)
    by_label = tickets(shop, event["id"])
    buyer = open_browser()
    open_shop(buyer, shop, event["id"])
    click_seats(buyer, ["Stalls C-5", "Stalls C-6"])
    hold_as_someone_else(shop, event["id"], [by_label["Stalls C-6"]["id"]])
    wait_for_message(buyer, "Stalls C-6 was just taken by another buyer")
    wait_for_seats(buyer, ["Stalls C-6"], "reserved")
    assert seat(buyer, "Stalls C-5").get_attribute("aria-pressed") == "true"
    assert buyer.find_element(By.ID, "selection-total").text == "€25.00"
    assert still_the_same_document(buyer)


def test_release_returns_the_seats_and_a_reload_keeps_the_hold(
    shop: Shop, open_browser: OpenBrowser
) -> None:
    event = create_event(shop)
    buyer, watcher = open_browser(), open_browser()
    open_shop(buyer, shop, event["id"])
    open_shop(watcher, shop, event["id"])
    seats = ["Stalls C-1", "Stalls C-2"]
    hold_seats(buyer, seats)
    wait_for_seats(watcher, seats, "reserved")

    # A reload finds the hold again (its token is in the tab's sessionStorage).
    buyer.refresh()
    wait_for_seats(buyer, seats, "mine")
    wait_until_ticking(buyer)

    buyer.find_element(By.ID, "release-button").click()
    wait_for_message(buyer, "Released")
    wait_for_seats(buyer, seats, "available")
    assert buyer.find_element(By.ID, "choose").is_displayed()
    wait_for_seats(watcher, seats, "available")
    assert still_the_same_document(watcher)
    assert {tickets(shop, event["id"])[label]["status"] for label in seats} == {"available"}
    # The seats can be chosen again.
    click_seats(buyer, seats)


def test_an_expired_hold_returns_the_seats(shop: Shop, open_browser: OpenBrowser) -> None:
    event = create_event(shop, hold_seconds=4)
    buyer, watcher = open_browser(), open_browser()
    open_shop(buyer, shop, event["id"])
    open_shop(watcher, shop, event["id"])
    seats = ["Stalls A-7", "Stalls A-8"]
    hold_seats(buyer, seats)
    wait_until_ticking(buyer)
    wait_for_seats(watcher, seats, "reserved")

    wait_for_message(buyer, "Your hold expired")
    wait_for_seats(buyer, seats, "available")
    assert not buyer.find_element(By.ID, "held").is_displayed()
    # The sweeper frees them and the other buyer hears of it.
    wait_for_seats(watcher, seats, "available")
    assert still_the_same_document(watcher)
    click_seats(buyer, seats)


def test_general_admission_quantity_hold_and_pay(shop: Shop, open_browser: OpenBrowser) -> None:
    event = create_event(
        shop, name="Open air test", general_admission={"quantity": 20, "price": 3900}
    )
    buyer = open_browser()
    open_shop(buyer, shop, event["id"])
    assert not buyer.find_elements(By.CSS_SELECTOR, "button.seat")
    buyer.find_element(By.ID, "quantity-up").click()
    assert buyer.find_element(By.ID, "quantity").get_attribute("value") == "3"
    assert buyer.find_element(By.ID, "selection-total").text == "€117.00"
    type_email(buyer)
    buyer.find_element(By.ID, "hold-button").click()
    wait_until_ticking(buyer)
    assert len(buyer.find_elements(By.CSS_SELECTOR, "#held-list li")) == 3
    wait(buyer).until(lambda d: d.find_element(By.ID, "available-count").text == "17")
    buyer.find_element(By.ID, "pay-button").click()
    pay_at_the_test_checkout(buyer)
    wait(buyer).until(lambda d: d.find_element(By.ID, "booking-details").is_displayed())
    assert len(buyer.find_elements(By.CSS_SELECTOR, "#booking-tickets tr")) == 3


def test_keyboard_only(shop: Shop, open_browser: OpenBrowser) -> None:
    """Tab reaches the map (one stop), arrows move between seats, Space and Enter choose,
    Enter in the email field holds."""
    event = create_event(shop)
    buyer = open_browser()
    open_shop(buyer, shop, event["id"])
    body = buyer.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)
    for _ in range(20):
        active = buyer.switch_to.active_element
        if active.get_attribute("class") == "seat":
            break
        active.send_keys(Keys.TAB)
    else:
        pytest.fail("Tab never reached the seat map")
    assert active.get_attribute("data-label") == "Stalls A-1"
    active.send_keys(Keys.ARROW_RIGHT)
    active = buyer.switch_to.active_element
    active.send_keys(Keys.ARROW_RIGHT)
    active = buyer.switch_to.active_element
    assert active.get_attribute("data-label") == "Stalls A-3"
    active.send_keys(Keys.SPACE)
    assert active.get_attribute("aria-pressed") == "true"
    active.send_keys(Keys.ARROW_DOWN)
    active = buyer.switch_to.active_element
    assert active.get_attribute("data-label") == "Stalls B-3"
    active.send_keys(Keys.ENTER)
    assert active.get_attribute("aria-pressed") == "true"
    # One Tab leaves the map for the first control after it.
    active.send_keys(Keys.TAB)
    active = buyer.switch_to.active_element
    assert active.get_attribute("aria-label") == "Remove Stalls A-3"
    field = buyer.find_element(By.ID, "customer")
    field.send_keys("keys@example.com", Keys.ENTER)
    wait_for_seats(buyer, ["Stalls A-3", "Stalls B-3"], "mine")


def test_admin_page_creates_events_and_shows_counts(shop: Shop, open_browser: OpenBrowser) -> None:
    admin = open_browser()
    admin.get(f"{shop.url}/admin")
    assert not admin.find_element(By.ID, "admin-area").is_displayed()
    assert admin.find_elements(By.CSS_SELECTOR, "#events-body tr") == []

    token_field = admin.find_element(By.ID, "admin-token")
    token_field.send_keys("not-the-admin-token-at-all", Keys.ENTER)
    wait_for_message(admin, "That is not the admin token.")
    assert not admin.find_element(By.ID, "admin-area").is_displayed()

    token_field.clear()
    token_field.send_keys(ADMIN_TOKEN, Keys.ENTER)
    wait(admin).until(lambda d: d.find_element(By.ID, "admin-area").is_displayed())
    wait(admin).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#events-body tr[data-event-id]"))

    name = f"Admin GA {uuid.uuid4().hex[:6]}"
    admin.find_element(By.ID, "event-name").send_keys(name)
    admin.find_element(By.CSS_SELECTOR, 'input[name="layout"][value="general_admission"]').click()
    quantity = admin.find_element(By.ID, "ga-quantity")
    quantity.clear()
    quantity.send_keys("50")
    price = admin.find_element(By.ID, "ga-price")
    price.clear()
    price.send_keys("12.50")
    admin.find_element(By.ID, "create-button").click()
    wait_for_message(admin, f"Created “{name}” with 50 tickets.")
    row = cast(
        WebElement,
        wait(admin).until(
            lambda d: next(
                (r for r in d.find_elements(By.CSS_SELECTOR, "#events-body tr") if name in r.text),
                False,
            )
        ),
    )
    cells = [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
    assert cells[2:] == ["General admission", "50", "50", "0", "0"]
    link = admin.find_element(By.LINK_TEXT, "Open its shop page").get_attribute("href") or ""
    first = tickets(shop, link.rsplit("/", 1)[1])["GA 1"]
    assert (first["price"], first["currency"]) == (1250, "EUR")

    # The form starts with one seated section (Stalls, 8 × 16).
    admin.find_element(By.CSS_SELECTOR, 'input[name="layout"][value="seated"]').click()
    name_field = admin.find_element(By.ID, "event-name")
    name_field.clear()
    name_field.send_keys(name + " seated")
    admin.find_element(By.ID, "create-button").click()
    wait_for_message(admin, "with 128 tickets.")
    admin.find_element(By.LINK_TEXT, "Open its shop page").click()
    wait(admin).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "button.seat")) == 128)

    # The token stays in the tab and is sent only as a header.
    urls = [*requested_urls(admin), admin.current_url]
    assert not [url for url in urls if ADMIN_TOKEN in url]


def test_screenshot_of_the_seat_map(shop: Shop, open_browser: OpenBrowser) -> None:
    """A realistic evening: some seats sold, some held by others, two held by this buyer."""
    event = create_event(
        shop,
        name="Midsummer Night Concert",
        venue="The Demo Hall",
        starts_at="2030-06-21T19:30:00Z",
        hold_seconds=300,
        sections=[
            {"name": "Stalls", "rows": 8, "seats_per_row": 16, "price": 4500},
            {"name": "Balcony", "rows": 4, "seats_per_row": 12, "price": 2500},
        ],
    )
    by_label = tickets(shop, event["id"])
    sold = labels("Stalls", "A-7 A-8 A-9 A-10 B-8 B-9 C-3 C-4 D-12 D-13 D-14 E-1 E-2 F-8 F-9")
    sold += labels("Stalls", "H-15 H-16") + labels("Balcony", "A-5 A-6 A-7 A-8 B-1 B-2 C-11")
    held = labels("Stalls", "B-10 B-11 E-15 E-16") + labels("Balcony", "B-6")
    for group in (sold[i : i + 3] for i in range(0, len(sold), 3)):
        hold = hold_as_someone_else(shop, event["id"], [by_label[label]["id"] for label in group])
        paid = shop.api.post(
            f"/reservations/{hold['id']}/confirm",
            json={"payment_reference": "pay_test_shot"},
            headers={"Authorization": f"Bearer {hold['token']}"},
        )
        assert paid.status_code == 200, paid.text
    hold_as_someone_else(shop, event["id"], [by_label[label]["id"] for label in held])

    buyer = open_browser()
    open_shop(buyer, shop, event["id"])
    hold_seats(buyer, ["Stalls C-8", "Stalls C-9"])
    wait_until_ticking(buyer)
    wait_for_seats(buyer, held, "reserved")
    wait_for_seats(buyer, sold, "booked")
    # The whole page in one picture: a viewport as tall as the page, so no scroll bar.
    height = buyer.execute_script("return document.documentElement.scrollHeight")
    buyer.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 1280, "height": int(height), "deviceScaleFactor": 1, "mobile": False},
    )
    SCREENSHOT.parent.mkdir(exist_ok=True)
    assert buyer.save_screenshot(str(SCREENSHOT))


# ---- the waiting room ----


def fetch_rows(database_url: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    async def fetch() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(database_url)
        try:
            return [dict(row) for row in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    return asyncio.run(fetch())


def database_now(database_url: str) -> datetime:
    """The database's clock: the one the on-sale and the waiting room go by."""
    [row] = fetch_rows(database_url, "SELECT now() AS now")
    now: datetime = row["now"]
    return now


def join_queue(shop: Shop, event_id: str, customer: str) -> dict[str, Any]:
    response = shop.api.post(f"/events/{event_id}/queue", json={"customer": customer})
    assert response.status_code == 201, response.text
    place: dict[str, Any] = response.json()
    return place


def place_status(shop: Shop, event_id: str, place: dict[str, Any]) -> str:
    response = shop.api.get(
        f"/events/{event_id}/queue/{place['id']}",
        headers={"Authorization": f"Bearer {place['token']}"},
    )
    assert response.status_code == 200, response.text
    return str(response.json()["status"])


def leave_queue(shop: Shop, event_id: str, place: dict[str, Any]) -> None:
    response = shop.api.delete(
        f"/events/{event_id}/queue/{place['id']}",
        headers={"Authorization": f"Bearer {place['token']}"},
    )
    assert response.status_code == 204, response.text


def queue_status_text(driver: WebDriver) -> str:
    return str(driver.find_element(By.ID, "queue-status").text)


def wait_for_queue_status(driver: WebDriver, text: str, seconds: float = WAIT_SECONDS) -> str:
    wait(driver, seconds).until(
        lambda d: (
            d.find_element(By.ID, "queue-status").is_displayed()
            and queue_status_text(d).startswith(text)
        ),
        f"the waiting room never said {text!r}",
    )
    return queue_status_text(driver)


def on_sale_countdown(driver: WebDriver) -> str:
    return str(driver.find_element(By.ID, "queue-countdown-time").text)


def map_locked(driver: WebDriver) -> bool:
    venue = driver.find_element(By.CSS_SELECTOR, ".venue")
    return bool(driver.execute_script("return arguments[0].inert", venue))


def test_waiting_room_countdown_queue_admitted_seat_map_hold(
    shop: Shop, open_browser: OpenBrowser, database_url: str
) -> None:
    buyer = open_browser()
    # One shopper at a time (and 60 a minute): the test lets the next one in by making the
    # one shopping leave, so the buyer's position moves at the test's pace.
    event = create_event(
        shop,
        name="Waiting room night",
        hold_seconds=300,
        queue_enabled=True,
        queue_admit_per_minute=60,
        queue_max_shoppers=1,
        sales_start_at=(database_now(database_url) + timedelta(seconds=2)).isoformat(),
    )
    event_id = event["id"]
    # Two early birds join the pre-queue; the on-sale draws them, the first is admitted and
    # the cap on shoppers holds the second back.
    early = [join_queue(shop, event_id, f"early{n}@example.com") for n in (1, 2)]
    assert {place["status"] for place in early} == {"pre-queue"}
    wait(buyer).until(
        lambda _: (
            sorted(place_status(shop, event_id, place) for place in early)
            == ["admitted", "waiting"]
        ),
        "the on-sale never drew and admitted the early birds",
    )
    # The organiser moves the on-sale a few seconds ahead again: this buyer joins its
    # pre-queue, drawn after the two already in line.
    opens = database_now(database_url) + timedelta(seconds=8)
    moved = shop.api.patch(
        f"/events/{event_id}", json={"sales_start_at": opens.isoformat()}, headers=ADMIN
    )
    assert moved.status_code == 200, moved.text
    assert "Waiting room" in shop.api.get("/").text

    open_shop(buyer, shop, event_id)
    # Before joining: the countdown to the on-sale ticks, the map and the hold controls wait.
    wait(buyer).until(lambda d: d.find_element(By.ID, "queue-countdown").is_displayed())
    first = on_sale_countdown(buyer)
    assert re.fullmatch(r"00:00:0\d", first), first
    wait(buyer).until(lambda d: on_sale_countdown(d) != first, "the countdown does not tick")
    assert "random place" in buyer.find_element(By.ID, "queue-intro").text
    assert map_locked(buyer)
    assert not buyer.find_element(By.ID, "choose").is_displayed()
    assert buyer.find_element(By.ID, "map-locked").is_displayed()

    email = buyer.find_element(By.ID, "queue-customer")
    email.clear()
    email.send_keys("queued@example.com", Keys.ENTER)
    wait_for_queue_status(buyer, "You're in the pre-queue: your place is drawn when sales open.")
    assert buyer.find_element(By.ID, "queue-countdown").is_displayed()
    [place] = fetch_rows(
        database_url,
        "SELECT id, lane, rank FROM queue_entries WHERE event_id = $1 AND customer_key = $2",
        uuid.UUID(event_id),
        "queued@example.com",
    )
    assert (place["lane"], place["rank"]) == (0, None)

    # The on-sale draws the buyer behind the two: one shopping, one waiting ahead.
    text = wait_for_queue_status(buyer, "You are number 2 in the queue", seconds=30)
    assert text == "You are number 2 in the queue · less than a minute"
    assert not buyer.find_element(By.ID, "queue-countdown").is_displayed()
    assert map_locked(buyer)

    # A reload picks the place up again (its token is in the tab's sessionStorage).
    buyer.refresh()
    wait_for_queue_status(buyer, "You are number 2 in the queue")

    def shopping() -> dict[str, Any]:
        [admitted] = [p for p in early if place_status(shop, event_id, p) == "admitted"]
        return admitted

    leave_queue(shop, event_id, shopping())
    wait_for_queue_status(buyer, "You are number 1 in the queue")
    wait(buyer).until(lambda _: any(place_status(shop, event_id, p) == "admitted" for p in early))
    leave_queue(shop, event_id, shopping())

    turn = wait_for_queue_status(buyer, "It's your turn — you have until")
    assert re.fullmatch(r"It's your turn — you have until \d\d:\d\d to choose\.", turn), turn
    wait(buyer).until(lambda d: d.find_element(By.ID, "choose").is_displayed())
    assert not map_locked(buyer)
    assert not buyer.find_element(By.ID, "map-locked").is_displayed()
    customer = buyer.find_element(By.ID, "customer")
    assert customer.get_attribute("value") == "queued@example.com"
    assert customer.get_attribute("readonly") is not None

    seats = ["Stalls B-5"]
    click_seats(buyer, seats)
    buyer.find_element(By.ID, "hold-button").click()
    wait_for_seats(buyer, seats, "mine")
    wait_until_ticking(buyer)
    assert not buyer.find_element(By.ID, "queue").is_displayed()

    [hold] = fetch_rows(
        database_url,
        """
        SELECT r.id, r.customer, r.status::text AS status, q.status AS place_status,
               q.reservation_id
        FROM reservations r JOIN queue_entries q ON q.id = $2
        WHERE r.event_id = $1
        """,
        uuid.UUID(event_id),
        place["id"],
    )
    assert (hold["customer"], hold["status"]) == ("queued@example.com", "active")
    assert (hold["place_status"], hold["reservation_id"]) == ("used", hold["id"])
    assert {tickets(shop, event_id)[label]["status"] for label in labels("Stalls", "B-5")} == {
        "reserved"
    }

    # The place's token stayed in the tab: in no URL the browser asked for, not in the log.
    saved = json.loads(
        buyer.execute_script("return sessionStorage.getItem('boxoffice.queue') || '{}'")
    )
    token = saved[event_id]["token"]
    assert token.startswith(place["id"].hex)
    urls = [*requested_urls(buyer), buyer.current_url]
    assert any("/queue/" in url and url.endswith("/stream") for url in urls)
    assert not [url for url in urls if token in url or "token" in url.lower()]
    assert token not in shop.log.read_text()


def test_admin_page_sets_on_sale_settings_and_shows_queue_counts(
    shop: Shop, open_browser: OpenBrowser
) -> None:
    event = create_event(shop, name=f"Admin queue {uuid.uuid4().hex[:6]}")
    admin = open_browser()
    admin.get(f"{shop.url}/admin")
    admin.find_element(By.ID, "admin-token").send_keys(ADMIN_TOKEN, Keys.ENTER)
    settings = wait(admin).until(
        lambda d: d.find_element(By.CSS_SELECTOR, f'tr[data-settings-for="{event["id"]}"]')
    )
    assert not settings.find_element(By.CSS_SELECTOR, ".queue-stats").is_displayed()
    summary = settings.find_element(By.TAG_NAME, "summary")
    # (Screen readers hear which event; the words after "settings" are visually hidden.)
    assert " ".join(summary.text.split()) == f"Edit on-sale settings of {event['name']}"
    summary.click()

    def field(name: str) -> WebElement:
        return settings.find_element(By.CSS_SELECTOR, f'[name="{name}"]')

    # A datetime-local field is typed in the browser's own format: set it as a script would.
    admin.execute_script(
        "arguments[0].value = '2029-12-01T10:00';"
        "arguments[0].dispatchEvent(new Event('input', {bubbles: true}))",
        field("sales_start_at"),
    )
    opens = admin.execute_script("return new Date('2029-12-01T10:00').toISOString()")
    field("max_tickets_per_customer").send_keys("4")
    assert not field("queue_admit_per_minute").is_displayed()
    field("queue_enabled").click()
    field("queue_admit_per_minute").send_keys("30")
    field("queue_max_shoppers").send_keys("5")
    field("queue_pass_minutes").send_keys("3")
    settings.find_element(By.CSS_SELECTOR, ".save-settings").click()
    wait_for_message(admin, f"Saved the on-sale settings of “{event['name']}”.")

    saved = shop.api.get(f"/events/{event['id']}").json()
    assert datetime.fromisoformat(saved["sales_start_at"]) == datetime.fromisoformat(
        opens.replace("Z", "+00:00")
    )
    assert {k: saved[k] for k in saved if k.startswith("queue_") or k.startswith("max_")} == {
        "max_tickets_per_customer": 4,
        "queue_enabled": True,
        "queue_admit_per_minute": 30,
        "queue_max_shoppers": 5,
        "queue_pass_seconds": 180,
    }

    # The row now shows the waiting room's counts; a refresh fetches them again.
    settings = admin.find_element(By.CSS_SELECTOR, f'tr[data-settings-for="{event["id"]}"]')
    stats = settings.find_element(By.CSS_SELECTOR, ".queue-stats")
    assert stats.is_displayed()

    def count(name: str) -> str:
        element = admin.find_element(
            By.CSS_SELECTOR, f'tr[data-settings-for="{event["id"]}"] dd[data-count="{name}"]'
        )
        return str(element.text)

    wait(admin).until(lambda _: count("pre_queue") == "0")
    places = [join_queue(shop, event["id"], f"fan{n}@example.com") for n in range(3)]
    leave_queue(shop, event["id"], places[0])
    stats.find_element(By.CSS_SELECTOR, ".refresh-queue").click()
    wait(admin).until(
        lambda _: (
            [count(n) for n in ("pre_queue", "waiting", "admitted", "left_queue")]
            == ["2", "2", "0", "1"]
        ),
        "the queue counts never showed the joins",
    )

    # Changing one setting sends only that one: the others keep their value.
    # The form stays open after saving, focus on its summary.
    assert settings.find_element(By.TAG_NAME, "details").get_attribute("open") is not None
    shoppers = settings.find_element(By.CSS_SELECTOR, '[name="queue_max_shoppers"]')
    shoppers.clear()
    settings.find_element(By.CSS_SELECTOR, ".save-settings").click()
    wait(admin).until(
        lambda _: shop.api.get(f"/events/{event['id']}").json()["queue_max_shoppers"] is None
    )
    again = shop.api.get(f"/events/{event['id']}").json()
    assert (again["queue_admit_per_minute"], again["max_tickets_per_customer"]) == (30, 4)
    assert again["sales_start_at"] == saved["sales_start_at"]

    # The create form takes the on-sale settings too.
    name = f"Queued GA {uuid.uuid4().hex[:6]}"
    admin.find_element(By.ID, "event-name").send_keys(name)
    admin.find_element(By.CSS_SELECTOR, 'input[name="layout"][value="general_admission"]').click()
    create = admin.find_element(By.ID, "create-sale")
    create.find_element(By.CSS_SELECTOR, '[name="max_tickets_per_customer"]').send_keys("6")
    create.find_element(By.CSS_SELECTOR, '[name="queue_enabled"]').click()
    assert (
        create.find_element(By.CSS_SELECTOR, '[name="queue_admit_per_minute"]').get_attribute(
            "value"
        )
        == "60"
    )
    admin.find_element(By.ID, "create-button").click()
    wait_for_message(admin, f"Created “{name}”")
    link = admin.find_element(By.LINK_TEXT, "Open its shop page").get_attribute("href") or ""
    created = shop.api.get(f"/events/{link.rsplit('/', 1)[1]}").json()
    assert (created["queue_enabled"], created["queue_admit_per_minute"]) == (True, 60)
    assert (created["max_tickets_per_customer"], created["sales_start_at"]) == (6, None)


def test_a_refused_queue_pass_offers_to_join_again(shop: Shop, open_browser: OpenBrowser) -> None:
    event = create_event(
        shop, name="Queue on sale now", queue_enabled=True, queue_admit_per_minute=600
    )
    event_id = event["id"]
    buyer = open_browser()
    open_shop(buyer, shop, event_id)
    # On sale already: no countdown, the queue admits at once.
    assert not buyer.find_element(By.ID, "queue-countdown").is_displayed()
    assert "Sales are open" in buyer.find_element(By.ID, "queue-intro").text
    email = buyer.find_element(By.ID, "queue-customer")
    email.clear()
    email.send_keys("twice@example.com")
    buyer.find_element(By.ID, "queue-join").click()
    wait_for_queue_status(buyer, "It's your turn")

    # The pass is spent elsewhere (another tab, say) before this page holds with it.
    saved = json.loads(buyer.execute_script("return sessionStorage.getItem('boxoffice.queue')"))
    elsewhere = shop.api.post(
        f"/events/{event_id}/reservations",
        json={
            "quantity": 1,
            "customer": "twice@example.com",
            "queue_pass": saved[event_id]["token"],
        },
    )
    assert elsewhere.status_code == 201, elsewhere.text
    click_seats(buyer, ["Stalls C-3"])
    buyer.find_element(By.ID, "hold-button").click()
    text = wait_for_message(buyer, "used for a hold already")
    assert text == (
        "This queue pass was used for a hold already. Join the queue again to choose."
    ), text
    wait(buyer).until(lambda d: d.find_element(By.ID, "queue-form").is_displayed())
    assert "used for a hold already" in buyer.find_element(By.ID, "queue-note").text
    assert not buyer.find_element(By.ID, "choose").is_displayed()
    assert map_locked(buyer)

    # Once that hold is over the customer may queue again, and hold with the new pass.
    other = elsewhere.json()
    released = shop.api.delete(
        f"/reservations/{other['id']}", headers={"Authorization": f"Bearer {other['token']}"}
    )
    assert released.status_code in (200, 204), released.text
    buyer.find_element(By.ID, "queue-join").click()
    wait_for_queue_status(buyer, "It's your turn")
    click_seats(buyer, ["Stalls C-4"])
    buyer.find_element(By.ID, "hold-button").click()
    wait_for_seats(buyer, ["Stalls C-4"], "mine")
