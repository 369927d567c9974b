"""The e-mail outbox: what a sale owes is delivered, at least once and (barring a crash)
exactly once, to a real SMTP server in the test process or to .eml files.

Bookings are made through the services (reserve, confirm), which write the outbox rows;
`send_due` passes are called directly. Time passes only on the database clock: a retry or
a lease falls due when the test moves `next_attempt_at` into the past.
"""

import asyncio
import contextlib
import email
import email.policy
import io
import re
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from html import escape
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import segno
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from PIL import Image
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from boxoffice.bookings.calendar import event_ics, fold
from boxoffice.bookings.links import booking_url
from boxoffice.bookings.qr import qr_code, qr_png, qr_svg
from boxoffice.config import Settings, async_url
from boxoffice.db import Database
from boxoffice.events.schemas import EventCreate, SectionIn
from boxoffice.events.service import create_event
from boxoffice.mail import sender
from boxoffice.mail.delivery import smtp_server
from boxoffice.mail.sender import (
    CLAIM_DUE,
    LEASE_SECONDS,
    MARK_FAILED,
    MAX_ATTEMPTS,
    retry_delay,
    send_due,
)
from boxoffice.reservations import holder
from boxoffice.reservations.reserve import reserve_best_available
from tests.conftest import Databases, close_service_db, free_port, migrated_database, service_db

SERVER_SECRET = "mail-test-server-secret-0123456789abcdef"
BUYER = "ada@example.com"
# Everything an iCalendar TEXT value must escape, and more than a line's 75 octets.
EVENT_NAME = "Lieder, Arien; und Duette \\ ein Abend mit Ümlauten und einem langen Namen"
STARTS_AT = datetime(2031, 3, 14, 19, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def database_url(databases: Databases) -> str:
    """A database of this module's own: no running server's sender may claim its messages."""
    return migrated_database(databases)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(async_url(database_url))
    yield engine
    await engine.dispose()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def db(engine: AsyncEngine) -> AsyncIterator[Database]:
    yield service_db(engine)
    await close_service_db(engine)


@pytest_asyncio.fixture(autouse=True, loop_scope="session")
async def _empty_outbox(engine: AsyncEngine) -> None:
    """Each test counts only the messages it made owed."""
    await execute(engine, "DELETE FROM outbox_messages")


# --- an SMTP server in the test process --------------------------------------------------------


@dataclass
class MailServer:
    """Collects what it receives; `answer` set, refuses every message with it."""

    received: list[Envelope] = field(default_factory=list)
    answer: str | None = None
    refuse_recipients: str | None = None
    logins: list[tuple[bytes, bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        if self.refuse_recipients is not None:
            return self.refuse_recipients
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.answer is not None:
            return self.answer
        with self.lock:
            self.received.append(envelope)
        return "250 Message accepted for delivery"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        self.logins.append((data.login, data.password))
        return AuthResult(success=True)

    def messages(self) -> list[EmailMessage]:
        with self.lock:
            envelopes = list(self.received)
        return [parse(envelope.original_content or b"") for envelope in envelopes]


@dataclass
class RunningMailServer:
    server: MailServer
    port: int

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def smtp_controller() -> Iterator[RunningMailServer]:
    handler = MailServer()
    port = free_port()
    # Logins accepted without TLS: the test's server is on the loopback.
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        authenticator=handler.authenticate,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield RunningMailServer(handler, port)
    finally:
        controller.stop()


@pytest.fixture
def smtp(smtp_controller: RunningMailServer) -> RunningMailServer:
    """The module's mail server, emptied and accepting."""
    server = smtp_controller.server
    with server.lock:
        server.received.clear()
    server.logins.clear()
    server.answer = None
    server.refuse_recipients = None
    return smtp_controller


# --- helpers --------------------------------------------------------------------------------------


def settings_for(database_url: str, *, smtp_url: str | None, mail_dir: Path) -> Settings:
    return Settings(
        database_url=database_url,
        server_secret=SERVER_SECRET,
        smtp_url=smtp_url,
        mail_dir=mail_dir,
        mail_from="Box Office <tickets@boxoffice.test>",
        public_base_url="https://tickets.example",
    )


def parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def written(folder: Path) -> dict[str, tuple[str, EmailMessage]]:
    """The .eml files in `folder` by kind: (file name, message)."""
    found = {}
    for path in folder.iterdir():
        kind = path.name.split("-", 2)[2].removesuffix(".eml")
        found[kind] = (path.name, parse(path.read_bytes()))
    return found


def body(message: EmailMessage, kind: str) -> str:
    part = message.get_body(preferencelist=(kind,))
    assert part is not None, f"no text/{kind} part"
    content = part.get_content()
    assert isinstance(content, str)
    return content


async def execute(engine: AsyncEngine, sql: str, **params: Any) -> None:
    async with engine.begin() as conn:
        await conn.execute(text(sql), params)


async def rows(engine: AsyncEngine, sql: str, **params: Any) -> list[Any]:
    async with engine.connect() as conn:
        return list(await conn.execute(text(sql), params))


async def new_event(db: Database, *, seats: int = 10) -> uuid.UUID:
    return await create_event(
        db,
        event=EventCreate(
            name=EVENT_NAME,
            venue="Konzerthaus, Saal 2",
            starts_at=STARTS_AT,
            sections=[SectionIn(name="Main", rows=1, seats_per_row=seats, price=2500)],
        ),
        default_hold_seconds=600,
        max_tickets=1000,
    )


async def book(
    db: Database, event_id: uuid.UUID, *, customer: str = BUYER, quantity: int = 2
) -> uuid.UUID:
    """A confirmed booking, as a buyer makes one; returns its id."""
    hold = await reserve_best_available(
        db, event_id=event_id, quantity=quantity, section=None, customer=customer
    )
    view = await holder.confirm(
        db, reservation_id=hold.reservation_id, token=hold.token, payment_reference="p"
    )
    assert view.booking is not None
    return view.booking.id


async def outbox(engine: AsyncEngine) -> list[Any]:
    return await rows(
        engine,
        "SELECT id, kind, recipient, booking_id, payment_id, attempts, sent_at, last_error,"
        " next_attempt_at, next_attempt_at > now() AS waiting,"
        " next_attempt_at = 'infinity' AS given_up"
        " FROM outbox_messages ORDER BY id",
    )


async def issued_codes(engine: AsyncEngine, booking_id: uuid.UUID) -> list[str]:
    found = await rows(
        engine, "SELECT code FROM issued_tickets WHERE booking_id = :b ORDER BY id", b=booking_id
    )
    return [row.code for row in found]


async def fall_due(engine: AsyncEngine) -> None:
    """Every unsent message's retry (or lease) ends now."""
    await execute(
        engine,
        "UPDATE outbox_messages SET next_attempt_at = now() - interval '1 second'"
        " WHERE sent_at IS NULL",
    )


async def owe(
    engine: AsyncEngine,
    kind: str,
    *,
    booking_id: Any = None,
    payment_id: Any = None,
    recipient: str = BUYER,
) -> None:
    await execute(
        engine,
        "INSERT INTO outbox_messages (kind, recipient, booking_id, payment_id)"
        " VALUES (:k, :r, :b, :p)",
        k=kind,
        r=recipient,
        b=booking_id,
        p=payment_id,
    )


def png_modules(png: bytes, *, border: int = 4) -> list[list[int]]:
    """The dark (1) and light (0) modules a QR code's PNG shows, read from its pixels."""
    image = Image.open(io.BytesIO(png)).convert("L")
    width, height = image.size
    assert width == height
    # The top-left finder pattern's corner is the first dark pixel on the diagonal, right
    # after the quiet zone: that gives the pixels per module.
    first_dark = next(x for x in range(width) if image.getpixel((x, x)) == 0)
    scale = first_dark // border
    modules = width // scale - 2 * border

    def dark(row: int, col: int) -> int:
        centre = ((border + col) * scale + scale // 2, (border + row) * scale + scale // 2)
        return 1 if image.getpixel(centre) == 0 else 0

    return [[dark(row, col) for col in range(modules)] for row in range(modules)]


def svg_modules(svg: str, *, border: int = 4) -> list[list[int]]:
    """The dark modules an SVG from segno draws: its path's horizontal runs, read back."""
    path = re.search(r'class="qrline"[^>]*\sd="([^"]+)"', svg)
    assert path is not None
    tokens = re.findall(r"[Mmh]|-?[\d.]+", path.group(1))
    x = y = 0.0
    dark: set[tuple[int, int]] = set()
    i = 0
    while i < len(tokens):
        if tokens[i] in ("M", "m"):
            dx, dy = float(tokens[i + 1]), float(tokens[i + 2])
            x, y = (dx, dy) if tokens[i] == "M" else (x + dx, y + dy)
            i += 3
        else:  # h: a run of dark modules on the row through y
            length = int(float(tokens[i + 1]))
            dark |= {(int(y) - border, int(x) - border + step) for step in range(length)}
            x += length
            i += 2
    # The finder patterns reach the last row and the last column.
    modules = max(max(row for row, _ in dark), max(col for _, col in dark)) + 1
    return [[1 if (row, col) in dark else 0 for col in range(modules)] for row in range(modules)]


def matrix_of(code: str) -> list[list[int]]:
    """The modules of a full QR code of `code` at level M, made independently of our helper."""
    symbol = segno.make(code, error="m", micro=False, boost_error=False)
    return [list(row) for row in symbol.matrix]


def unfold(ics: str) -> list[str]:
    return ics.replace("\r\n ", "").split("\r\n")


def ics_property(ics: str, name: str) -> str:
    for line in unfold(ics):
        if line.startswith(f"{name}:"):
            return line[len(name) + 1 :]
    raise AssertionError(f"no {name} in {ics!r}")


# --- the QR code and the calendar file -------------------------------------------------------


def test_qr_png_and_svg_encode_exactly_the_code() -> None:
    code = "K7M2QX9PLR4TZ8WN"
    symbol = qr_code(code)
    assert not symbol.is_micro
    assert symbol.error == "M"
    assert symbol.mode == "alphanumeric"
    expected = matrix_of(code)
    assert png_modules(qr_png(code)) == expected
    assert svg_modules(qr_svg(code)) == expected
    # A different code draws a different symbol: the comparison can tell them apart.
    assert png_modules(qr_png("K7M2QX9PLR4TZ8WM")) != expected


def test_qr_svg_is_inline_markup() -> None:
    svg = qr_svg("K7M2QX9PLR4TZ8WN")
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "<?xml" not in svg


def test_calendar_folds_escapes_and_ends_lines_with_crlf() -> None:
    booking_id = uuid.uuid4()
    link = "https://tickets.example/booking#abc,def;ghi"
    ics = event_ics(
        booking_id=booking_id,
        booking_code="ABC234",
        event_name=EVENT_NAME,
        venue="Konzerthaus, Saal 2",
        starts_at=STARTS_AT.astimezone(datetime.now().astimezone().tzinfo),
        booking_url=link,
        stamp=datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    assert ics.endswith("\r\n")
    assert "\n" not in ics.replace("\r\n", "")
    assert all(len(line.encode()) <= 75 for line in ics.split("\r\n"))
    lines = unfold(ics)
    assert lines[0] == "BEGIN:VCALENDAR" and lines[-2] == "END:VCALENDAR"
    assert "METHOD:PUBLISH" in lines
    assert ics_property(ics, "UID") == f"booking-{booking_id}@boxoffice"
    assert ics_property(ics, "DTSTAMP") == "20310102T030405Z"
    assert ics_property(ics, "DTSTART") == "20310314T193000Z"
    assert ics_property(ics, "DTEND") == "20310314T223000Z"
    assert ics_property(ics, "SUMMARY") == (
        "Lieder\\, Arien\\; und Duette \\\\ ein Abend mit Ümlauten und einem langen Namen"
    )
    assert ics_property(ics, "LOCATION") == "Konzerthaus\\, Saal 2"
    assert ics_property(ics, "DESCRIPTION") == (
        "Booking ABC234\\nYour tickets: https://tickets.example/booking#abc\\,def\\;ghi"
    )
    assert ics_property(ics, "URL") == link


def test_folding_never_splits_a_character() -> None:
    line = "SUMMARY:" + "ü" * 100
    folded = fold(line)
    assert all(len(piece.encode()) <= 75 for piece in folded.split("\r\n"))
    assert folded.replace("\r\n ", "") == line
    assert fold("SHORT:line") == "SHORT:line"


def test_smtp_url_is_read_with_its_escapes() -> None:
    server = smtp_server("smtps://mailer%40shop:p%40ss%3Aw%2Frd@mail.example")
    assert (server.hostname, server.port, server.implicit_tls) == ("mail.example", 465, True)
    assert (server.username, server.password) == ("mailer@shop", "p@ss:w/rd")
    plain = smtp_server("smtp://relay:2525")
    assert (plain.port, plain.implicit_tls, plain.username, plain.password) == (
        2525,
        False,
        None,
        None,
    )
    with pytest.raises(ValueError):
        smtp_server("http://mail.example")


def test_retries_back_off_up_to_an_hour() -> None:
    assert [retry_delay(n) for n in (1, 2, 3)] == [30, 60, 120]
    assert retry_delay(MAX_ATTEMPTS) == 3600


# --- delivery -------------------------------------------------------------------------------------


async def test_a_booking_is_mailed_with_its_tickets_qr_codes_and_calendar_entry(
    db: Database, engine: AsyncEngine, smtp: RunningMailServer, database_url: str, tmp_path: Path
) -> None:
    settings = settings_for(database_url, smtp_url=smtp.url, mail_dir=tmp_path)
    booking_id = await book(db, await new_event(db), quantity=3)
    [owed] = await outbox(engine)
    assert (owed.kind, owed.recipient, owed.booking_id) == ("booking-confirmed", BUYER, booking_id)

    assert await send_due(db, settings) == 1

    [envelope] = smtp.server.received
    assert envelope.mail_from == "tickets@boxoffice.test"
    assert envelope.rcpt_tos == [BUYER]
    [message] = smtp.server.messages()
    assert message["To"] == BUYER
    assert message["Message-ID"] == f"<outbox-{owed.id}@boxoffice.test>"
    [code] = await rows(engine, "SELECT code FROM bookings WHERE id = :b", b=booking_id)
    assert code.code in message["Subject"]

    codes = await issued_codes(engine, booking_id)
    assert len(codes) == 3
    link = booking_url(settings, booking_id)
    plain, html = body(message, "plain"), body(message, "html")
    for ticket_code in codes:
        assert ticket_code in plain and ticket_code in html
    assert link in plain and escape(link) in html

    # Each ticket's QR code is an inline image the HTML shows, encoding exactly its code.
    images = [part for part in message.walk() if part.get_content_type() == "image/png"]
    assert len(images) == 3
    for image in images:
        content_id = image["Content-ID"].strip("<>")
        assert f'src="cid:{content_id}"' in html
    shown = {image.get_content() for image in images}
    assert shown == {qr_png(ticket_code) for ticket_code in codes}

    [calendar] = [part for part in message.walk() if part.get_content_type() == "text/calendar"]
    assert calendar.get_filename() == "event.ics"
    assert calendar.get_param("method") == "PUBLISH"
    ics = calendar.get_content()
    assert ics_property(ics, "DTSTART") == "20310314T193000Z"
    assert ics_property(ics, "UID") == f"booking-{booking_id}@boxoffice"
    assert code.code in ics_property(ics, "DESCRIPTION")

    [sent] = await outbox(engine)
    assert sent.sent_at is not None and sent.last_error is None and sent.attempts == 1
    # Nothing is owed any more: a second pass sends nothing.
    assert await send_due(db, settings) == 0
    assert len(smtp.server.received) == 1


async def test_the_smtp_login_comes_from_the_url(
    db: Database, engine: AsyncEngine, smtp: RunningMailServer, database_url: str, tmp_path: Path
) -> None:
    url = f"smtp://mailer%40shop:p%40ss%3Aword@127.0.0.1:{smtp.port}"
    settings = settings_for(database_url, smtp_url=url, mail_dir=tmp_path)
    await book(db, await new_event(db), quantity=1)
    assert await send_due(db, settings) == 1
    assert smtp.server.logins == [(b"mailer@shop", b"p@ss:word")]


async def test_without_smtp_messages_are_written_to_the_mail_folder(
    db: Database, engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "mail"
    settings = settings_for(database_url, smtp_url=None, mail_dir=folder)
    booking_id = await book(db, await new_event(db), quantity=2)
    [owed] = await outbox(engine)

    assert await send_due(db, settings) == 1

    # One file, and no temporary one left behind.
    [(name, message)] = written(folder).values()
    assert re.fullmatch(rf"\d{{8}}T\d{{6}}Z-{owed.id}-booking-confirmed\.eml", name)
    assert message["To"] == BUYER
    assert "Your tickets for" in message["Subject"]
    for ticket_code in await issued_codes(engine, booking_id):
        assert ticket_code in body(message, "plain")
    [sent] = await outbox(engine)
    assert sent.sent_at is not None


async def test_each_kind_says_what_happened(
    db: Database, engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    settings = settings_for(database_url, smtp_url=None, mail_dir=tmp_path)
    booking_id = await book(db, await new_event(db), quantity=2)
    [code] = await rows(engine, "SELECT code FROM bookings WHERE id = :b", b=booking_id)
    [payment] = await rows(engine, "SELECT id FROM payments WHERE booking_id = :b", b=booking_id)
    await execute(
        engine,
        "UPDATE bookings SET status = 'cancelled', cancelled_at = now(),"
        " cancel_reason = 'event-cancelled' WHERE id = :b",
        b=booking_id,
    )
    await execute(
        engine,
        "UPDATE payments SET status = 'refund_pending', refund_reason = 'seats-taken',"
        " refund_requested_at = now() WHERE id = :p",
        p=payment.id,
    )
    await owe(engine, "booking-cancelled", booking_id=booking_id)
    await owe(engine, "payment-refunded", payment_id=payment.id)
    await owe(engine, "booking-link", booking_id=booking_id)

    # The confirmation, overtaken by the cancellation, is not sent; the other three are.
    assert await send_due(db, settings) == 3
    messages = {kind: message for kind, (_, message) in written(tmp_path).items()}
    assert set(messages) == {"booking-cancelled", "payment-refunded", "booking-link"}

    cancelled = body(messages["booking-cancelled"], "plain")
    assert code.code in cancelled
    assert "no longer valid" in cancelled
    assert "the event was cancelled" in cancelled
    assert "€50.00 will be refunded" in cancelled

    refunded = body(messages["payment-refunded"], "plain")
    assert "€50.00" in refunded
    assert "your payment arrived after your hold expired and the seats were taken" in refunded
    assert "€50.00" in messages["payment-refunded"]["Subject"]

    link = body(messages["booking-link"], "plain")
    assert code.code in link and booking_url(settings, booking_id) in link

    confirmed = [row for row in await outbox(engine) if row.kind == "booking-confirmed"]
    assert confirmed[0].sent_at is not None
    assert confirmed[0].last_error == "booking cancelled before its confirmation was sent"


async def test_a_message_whose_rows_are_gone_is_dropped_not_retried(
    db: Database, engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    settings = settings_for(database_url, smtp_url=None, mail_dir=tmp_path)
    await owe(engine, "booking-link", booking_id=uuid.uuid4())
    await owe(engine, "payment-refunded", payment_id=uuid.uuid4())
    assert await send_due(db, settings) == 0
    assert written(tmp_path) == {}
    for row in await outbox(engine):
        assert row.sent_at is not None and row.last_error == "nothing to send"


async def test_a_customer_who_is_not_an_address_gets_no_mail(
    db: Database, engine: AsyncEngine
) -> None:
    await book(db, await new_event(db), customer="user-7", quantity=1)
    assert await outbox(engine) == []


# --- failures, retries, leases ----------------------------------------------------------------


async def test_an_unreachable_server_is_retried_later(
    db: Database, engine: AsyncEngine, smtp: RunningMailServer, database_url: str, tmp_path: Path
) -> None:
    nowhere = settings_for(
        database_url, smtp_url=f"smtp://127.0.0.1:{free_port()}", mail_dir=tmp_path
    )
    await book(db, await new_event(db), quantity=1)

    assert await send_due(db, nowhere) == 0
    [failed] = await outbox(engine)
    assert failed.sent_at is None and failed.attempts == 1
    assert failed.waiting and not failed.given_up
    assert failed.last_error
    # Not due again until its retry: a pass now sends nothing, even to a working server.
    working = settings_for(database_url, smtp_url=smtp.url, mail_dir=tmp_path)
    assert await send_due(db, working) == 0

    await fall_due(engine)
    assert await send_due(db, working) == 1
    [sent] = await outbox(engine)
    assert sent.sent_at is not None and sent.attempts == 2 and sent.last_error is None
    assert len(smtp.server.received) == 1


async def test_a_server_saying_try_later_gets_the_message_once_it_works(
    db: Database, engine: AsyncEngine, smtp: RunningMailServer, database_url: str, tmp_path: Path
) -> None:
    settings = settings_for(database_url, smtp_url=smtp.url, mail_dir=tmp_path)
    await book(db, await new_event(db), quantity=1)
    smtp.server.answer = "451 4.3.0 Try again later"

    assert await send_due(db, settings) == 0
    [failed] = await outbox(engine)
    assert failed.sent_at is None and failed.attempts == 1 and failed.waiting
    assert "451" in failed.last_error
    [delay] = await rows(
        engine,
        "SELECT extract(epoch FROM next_attempt_at - now()) AS seconds FROM outbox_messages",
    )
    assert 20 < delay.seconds <= 30

    smtp.server.answer = None
    await fall_due(engine)
    assert await send_due(db, settings) == 1
    assert await send_due(db, settings) == 0
    assert len(smtp.server.received) == 1
    [sent] = await outbox(engine)
    assert sent.sent_at is not None and sent.attempts == 2 and sent.last_error is None


async def test_a_message_is_given_up_after_its_last_attempt(
    db: Database, engine: AsyncEngine, smtp: RunningMailServer, database_url: str, tmp_path: Path
) -> None:
    settings = settings_for(database_url, smtp_url=smtp.url, mail_dir=tmp_path)
    await book(db, await new_event(db), quantity=1)
    await execute(engine, "UPDATE outbox_messages SET attempts = :n", n=MAX_ATTEMPTS - 1)
    smtp.server.answer = "451 4.3.0 Try again later"

    assert await send_due(db, settings) == 0
    [given_up] = await outbox(engine)
    assert given_up.sent_at is None and given_up.given_up
    assert given_up.attempts == MAX_ATTEMPTS and "451" in given_up.last_error


async def test_a_refused_recipient_is_given_up_at_once(
    db: Database, engine: AsyncEngine, smtp: RunningMailServer, database_url: str, tmp_path: Path
) -> None:
    settings = settings_for(database_url, smtp_url=smtp.url, mail_dir=tmp_path)
    await book(db, await new_event(db), quantity=1)
    smtp.server.refuse_recipients = "550 5.1.1 No such mailbox"

    assert await send_due(db, settings) == 0
    [given_up] = await outbox(engine)
    assert given_up.sent_at is None and given_up.given_up and given_up.attempts == 1
    assert "550" in given_up.last_error


async def test_a_recipient_that_is_no_address_is_given_up_at_once(
    db: Database, engine: AsyncEngine, smtp: RunningMailServer, database_url: str, tmp_path: Path
) -> None:
    settings = settings_for(database_url, smtp_url=smtp.url, mail_dir=tmp_path)
    booking_id = await book(db, await new_event(db), quantity=1)
    await execute(engine, "DELETE FROM outbox_messages")
    # The sale's own check lets this through (one @, no spaces); no mail header can hold it.
    await owe(engine, "booking-link", booking_id=booking_id, recipient="ada,bob@example.com")

    assert await send_due(db, settings) == 0
    [given_up] = await outbox(engine)
    assert given_up.sent_at is None and given_up.given_up and given_up.attempts == 1
    assert given_up.last_error.startswith("Undeliverable: not an address")
    assert smtp.server.received == []


async def test_concurrent_senders_deliver_each_message_once(
    db: Database, engine: AsyncEngine, smtp: RunningMailServer, database_url: str, tmp_path: Path
) -> None:
    settings = settings_for(database_url, smtp_url=smtp.url, mail_dir=tmp_path)
    booking_id = await book(db, await new_event(db), quantity=1)
    for _ in range(19):
        await owe(engine, "booking-link", booking_id=booking_id)
    ids = [row.id for row in await outbox(engine)]
    assert len(ids) == 20

    # Three senders on their own connections claim at once; together they can take 21, so
    # all 20 are sent only if their claims split the messages between them.
    start = asyncio.Barrier(3)

    async def sender() -> int:
        await start.wait()
        return await send_due(db, settings, limit=7)

    sent = await asyncio.gather(sender(), sender(), sender())
    assert sum(sent) == 20
    message_ids = [message["Message-ID"] for message in smtp.server.messages()]
    assert sorted(message_ids) == sorted(f"<outbox-{id}@boxoffice.test>" for id in ids)
    assert all(row.sent_at is not None and row.attempts == 1 for row in await outbox(engine))


async def test_a_crashed_senders_message_waits_for_its_lease_then_is_sent(
    db: Database, engine: AsyncEngine, smtp: RunningMailServer, database_url: str, tmp_path: Path
) -> None:
    settings = settings_for(database_url, smtp_url=smtp.url, mail_dir=tmp_path)
    await book(db, await new_event(db), quantity=1)
    # A sender claims the message and dies before it is marked sent.
    [claimed] = await db.fetch(CLAIM_DUE, 10, LEASE_SECONDS)
    [leased] = await outbox(engine)
    assert leased.attempts == 1 and leased.waiting

    assert await send_due(db, settings) == 0
    assert smtp.server.received == []

    await fall_due(engine)  # the lease ends
    assert await send_due(db, settings) == 1
    [message] = smtp.server.messages()
    assert message["Message-ID"] == f"<outbox-{claimed['id']}@boxoffice.test>"
    [sent] = await outbox(engine)
    assert sent.sent_at is not None and sent.attempts == 2


async def test_a_late_failure_does_not_reschedule_a_newer_claim(
    db: Database, engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    """A sender whose lease ran out records its failure only if nobody claimed since."""
    await book(db, await new_event(db), quantity=1)
    [first] = await db.fetch(CLAIM_DUE, 10, LEASE_SECONDS)
    await fall_due(engine)
    [second] = await db.fetch(CLAIM_DUE, 10, LEASE_SECONDS)
    assert (first["attempts"], second["attempts"]) == (1, 2)
    await db.execute(MARK_FAILED, first["id"], first["attempts"], "late", True, 30.0)
    [row] = await outbox(engine)
    assert row.last_error is None and not row.given_up and row.attempts == 2


async def test_the_sender_loop_outlives_a_database_outage(
    db: Database,
    engine: AsyncEngine,
    smtp: RunningMailServer,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = settings_for(database_url, smtp_url=smtp.url, mail_dir=tmp_path)
    settings.outbox_interval_seconds = 0.01
    await book(db, await new_event(db), quantity=1)
    # The first pass finds the database gone (nothing listens on its port); the next one
    # finds it back.
    gone = Database(
        settings_for(
            f"postgresql://postgres@127.0.0.1:{free_port()}/gone", smtp_url=None, mail_dir=tmp_path
        )
    )
    failures: list[BaseException] = []
    delivered = asyncio.Event()

    async def one_pass(_: Database, pass_settings: Settings, *, limit: int = 20) -> int:
        if not failures:
            try:
                return await send_due(gone, pass_settings, limit=limit)
            except Exception as error:
                failures.append(error)
                raise
        sent = await send_due(db, pass_settings, limit=limit)
        if sent:
            delivered.set()
        return sent

    monkeypatch.setattr(sender, "send_due", one_pass)
    task = asyncio.create_task(sender.run_outbox_sender(db, settings))
    try:
        await asyncio.wait_for(delivered.wait(), timeout=30)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await gone.close()
    assert len(failures) == 1 and task.cancelled()
    assert len(smtp.server.received) == 1
