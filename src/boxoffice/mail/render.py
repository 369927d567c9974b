"""What each owed e-mail says, rendered when it is sent from the rows it names.

Rendering late means a retried message says what is true now (a cancelled booking's
confirmation is not sent at all), and the outbox row stays small. Every message has a plain
text part and an HTML alternative; a confirmation's HTML shows each ticket's QR code as an
inline image and carries the event as a calendar file.
"""

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, parseaddr
from html import escape

import asyncpg

from boxoffice.bookings.calendar import event_ics
from boxoffice.bookings.links import booking_url
from boxoffice.bookings.qr import qr_png
from boxoffice.config import Settings
from boxoffice.db import Database
from boxoffice.web.views import currency, when


@dataclass(frozen=True, slots=True)
class OwedMessage:
    """An outbox row as the sender claimed it (`attempts` counts this attempt)."""

    id: int
    kind: str
    recipient: str
    booking_id: uuid.UUID | None
    payment_id: uuid.UUID | None
    created_at: datetime
    attempts: int


class NothingToSend(Exception):
    """The message no longer has anything to say: its rows are gone, or overtaken."""


class Undeliverable(Exception):
    """The message can never be sent as it is (its recipient is not a usable address)."""


_BOOKING = """
SELECT b.id, b.code, b.status, b.total_minor, b.currency, b.cancel_reason, b.created_at,
       e.name AS event_name, e.venue, e.starts_at
FROM bookings b
JOIN events e ON e.id = b.event_id
WHERE b.id = $1
"""

# The admissions a booking issued, in seat order.
_ISSUED_TICKETS = """
SELECT it.id, it.code, t.label
FROM issued_tickets it
JOIN tickets t ON t.id = it.ticket_id
WHERE it.booking_id = $1
ORDER BY t.position, it.id
"""

# The money a cancelled booking gives back, if it cost any.
_BOOKING_REFUND = """
SELECT amount_minor, currency FROM payments
WHERE booking_id = $1 AND status IN ('refund_pending', 'refunded') AND amount_minor > 0
"""

_PAYMENT = """
SELECT p.amount_minor, p.currency, p.status, p.refund_reason, e.name AS event_name,
       e.starts_at, b.code AS booking_code
FROM payments p
JOIN events e ON e.id = p.event_id
LEFT JOIN bookings b ON b.id = p.booking_id
WHERE p.id = $1
"""

_REFUND_REASONS = {
    "seats-taken": "your payment arrived after your hold expired and the seats were taken",
    "booking-cancelled": "your booking was cancelled",
    "event-cancelled": "the event was cancelled",
    "already-booked": "your hold had already been paid for, so this payment booked nothing",
    "customer-limit": "your payment arrived after your hold expired, and booking its seats "
    "then would have taken you past the event's limit of tickets per customer",
}
_CANCEL_REASONS = {"event-cancelled": "the event was cancelled"}


@dataclass(frozen=True, slots=True)
class _Booking:
    id: uuid.UUID
    code: str
    status: str
    total: str
    cancel_reason: str | None
    created_at: datetime
    event_name: str
    venue: str | None
    starts_at: datetime

    @classmethod
    def of(cls, row: asyncpg.Record) -> "_Booking":
        return cls(
            id=row["id"],
            code=row["code"],
            status=row["status"],
            total=currency(row["currency"]).format(row["total_minor"]),
            cancel_reason=row["cancel_reason"],
            created_at=row["created_at"],
            event_name=row["event_name"],
            venue=row["venue"],
            starts_at=row["starts_at"],
        )


@dataclass(frozen=True, slots=True)
class _Letter:
    """A message's words, before it becomes MIME."""

    subject: str
    text: str
    html: str
    # (Content-ID without brackets, ticket code): the QR codes the HTML shows as cid: images.
    qr_codes: tuple[tuple[str, str], ...] = ()
    calendar: str | None = None


async def render(db: Database, settings: Settings, message: OwedMessage) -> EmailMessage:
    """The e-mail `message` stands for, as its rows read now."""
    # One snapshot: the booking and its tickets as one moment saw them.
    async with db.transaction(isolation="repeatable_read", readonly=True) as conn:
        letter = await _letter(conn, settings, message)
    # Drawing the QR codes takes milliseconds each: off the event loop, which serves buyers.
    return await asyncio.to_thread(_compose, settings, message, letter)


async def _letter(conn: asyncpg.Connection, settings: Settings, message: OwedMessage) -> _Letter:
    if message.kind == "payment-refunded":
        if message.payment_id is None:
            raise NothingToSend("nothing to send")
        return await _payment_refunded(conn, message.payment_id)
    if message.booking_id is None:
        raise NothingToSend("nothing to send")
    row = await conn.fetchrow(_BOOKING, message.booking_id)
    if row is None:
        raise NothingToSend("nothing to send")
    booking = _Booking.of(row)
    if message.kind == "booking-confirmed":
        if booking.status == "cancelled":
            # The cancellation's own message tells the buyer; valid-looking tickets must not.
            raise NothingToSend("booking cancelled before its confirmation was sent")
        tickets = await conn.fetch(_ISSUED_TICKETS, booking.id)
        return _booking_confirmed(settings, booking, tickets)
    if message.kind == "booking-cancelled":
        refund = await conn.fetchrow(_BOOKING_REFUND, booking.id)
        return _booking_cancelled(booking, refund)
    if message.kind == "booking-link":
        return _booking_link(settings, booking)
    raise Undeliverable(f"unknown kind of message {message.kind!r}")


def _booking_confirmed(
    settings: Settings,
    booking: _Booking,
    tickets: list[asyncpg.Record],
) -> _Letter:
    link = booking_url(settings, booking.id)
    domain = _mail_domain(settings)
    lines = [f"  {ticket['label']}: {ticket['code']}" for ticket in tickets]
    text = "\n".join(
        [
            "Hello,",
            "",
            f"your booking {booking.code} for {booking.event_name} is confirmed.",
            "",
            *_event_lines(booking),
            f"Total: {booking.total}",
            "",
            "Your tickets (each code admits one person, once):",
            *lines,
            "",
            "Your booking, with each ticket's QR code to show at the door:",
            link,
            "",
            "Keep this e-mail and the link to yourself: the codes are your admission.",
        ]
    )
    qr_codes: list[tuple[str, str]] = []
    cards: list[str] = []
    for ticket in tickets:
        cid = f"ticket-{ticket['id']}@{domain}"
        qr_codes.append((cid, ticket["code"]))
        cards.append(
            '<div style="display:inline-block;margin:0 16px 16px 0;text-align:center">'
            f'<img src="cid:{escape(cid)}" width="232" height="232"'
            f' alt="QR code of ticket {escape(ticket["label"])}"><br>'
            f"<strong>{escape(ticket['label'])}</strong><br>"
            f'<code style="font-size:15px">{escape(ticket["code"])}</code></div>'
        )
    html = _page(
        f"<p>Your booking <strong>{escape(booking.code)}</strong> for"
        f" <strong>{escape(booking.event_name)}</strong> is confirmed.</p>"
        f"{_event_html(booking)}"
        f"<p>Total: {escape(booking.total)}</p>"
        "<p>Show a ticket's QR code at the door; each admits one person, once.</p>"
        f"{''.join(cards)}"
        f'<p><a href="{escape(link)}">Your booking page</a> always has your tickets.</p>'
        "<p>Keep this e-mail and the link to yourself: the codes are your admission.</p>"
    )
    calendar = event_ics(
        booking_id=booking.id,
        booking_code=booking.code,
        event_name=booking.event_name,
        venue=booking.venue,
        starts_at=booking.starts_at,
        booking_url=link,
        # As the booking page's entry: every copy of the calendar file is the same.
        stamp=booking.created_at,
    )
    return _Letter(
        subject=f"Your tickets for {booking.event_name} (booking {booking.code})",
        text=text,
        html=html,
        qr_codes=tuple(qr_codes),
        calendar=calendar,
    )


def _booking_cancelled(booking: _Booking, refund: asyncpg.Record | None) -> _Letter:
    reason = booking.cancel_reason
    because = f": {_CANCEL_REASONS.get(reason, reason)}" if reason else ""
    refund_text = ""
    if refund is not None:
        amount = currency(refund["currency"]).format(refund["amount_minor"])
        refund_text = f"Your {amount} will be refunded; a separate e-mail follows when it is."
    text = "\n".join(
        [
            "Hello,",
            "",
            f"your booking {booking.code} for {booking.event_name} has been cancelled{because}.",
            "",
            *_event_lines(booking),
            "",
            "Its tickets are no longer valid and will be refused at the door.",
            *([refund_text] if refund_text else []),
        ]
    )
    html = _page(
        f"<p>Your booking <strong>{escape(booking.code)}</strong> for"
        f" <strong>{escape(booking.event_name)}</strong> has been cancelled"
        f"{escape(because)}.</p>"
        f"{_event_html(booking)}"
        "<p>Its tickets are no longer valid and will be refused at the door.</p>"
        + (f"<p>{escape(refund_text)}</p>" if refund_text else "")
    )
    return _Letter(
        subject=f"Booking {booking.code} for {booking.event_name} is cancelled",
        text=text,
        html=html,
    )


def _booking_link(settings: Settings, booking: _Booking) -> _Letter:
    link = booking_url(settings, booking.id)
    text = "\n".join(
        [
            "Hello,",
            "",
            f"here is the link to your booking {booking.code} for {booking.event_name},"
            " as asked for:",
            link,
            "",
            *_event_lines(booking),
            "",
            "If you did not ask for it, you can ignore this e-mail: only you receive the link.",
        ]
    )
    html = _page(
        f"<p>Here is the link to your booking <strong>{escape(booking.code)}</strong> for"
        f" <strong>{escape(booking.event_name)}</strong>, as asked for:</p>"
        f'<p><a href="{escape(link)}">Your booking page</a></p>'
        f"{_event_html(booking)}"
        "<p>If you did not ask for it, you can ignore this e-mail: only you receive the"
        " link.</p>"
    )
    return _Letter(
        subject=f"Your booking {booking.code} for {booking.event_name}", text=text, html=html
    )


async def _payment_refunded(conn: asyncpg.Connection, payment_id: uuid.UUID) -> _Letter:
    row = await conn.fetchrow(_PAYMENT, payment_id)
    if row is None:
        raise NothingToSend("nothing to send")
    amount = currency(row["currency"]).format(row["amount_minor"])
    reason = row["refund_reason"]
    because = _REFUND_REASONS.get(reason, "it did not buy any tickets")
    done = "has been refunded" if row["status"] == "refunded" else "is being refunded"
    booking = f" (booking {row['booking_code']})" if row["booking_code"] else ""
    event = f"{row['event_name']}, {when(row['starts_at'])}"
    text = "\n".join(
        [
            "Hello,",
            "",
            f"your payment of {amount} for {event}{booking} {done}, because {because}.",
            "",
            "It goes back the way you paid; your bank may take a few days to show it.",
        ]
    )
    html = _page(
        f"<p>Your payment of <strong>{escape(amount)}</strong> for"
        f" {escape(event)}{escape(booking)} {done}, because {escape(because)}.</p>"
        "<p>It goes back the way you paid; your bank may take a few days to show it.</p>"
    )
    return _Letter(subject=f"Refund of {amount} for {row['event_name']}", text=text, html=html)


def _event_lines(booking: _Booking) -> list[str]:
    lines = [f"Event: {booking.event_name}", f"When:  {when(booking.starts_at)}"]
    if booking.venue:
        lines.append(f"Where: {booking.venue}")
    return lines


def _event_html(booking: _Booking) -> str:
    rows = "".join(
        f"<tr><th style='text-align:left;padding-right:12px'>{escape(name)}</th>"
        f"<td>{escape(value)}</td></tr>"
        for name, value in (
            ("When", when(booking.starts_at)),
            ("Where", booking.venue or ""),
        )
        if value
    )
    return f"<table>{rows}</table>"


def _page(body: str) -> str:
    return (
        '<!DOCTYPE html><html><head><meta charset="utf-8"></head>'
        '<body style="font-family:sans-serif;line-height:1.4">'
        f"<p>Hello,</p>{body}</body></html>"
    )


def _mail_domain(settings: Settings) -> str:
    """The domain of MAIL_FROM, for ids only this sender makes (Message-ID, Content-ID)."""
    domain = parseaddr(settings.mail_from)[1].rpartition("@")[2]
    return domain or "boxoffice"


def message_id(settings: Settings, outbox_id: int) -> str:
    """The Message-ID of an outbox message: the same for every attempt, so a copy sent twice
    (the sender is at-least-once) is recognisably one message."""
    return f"<outbox-{outbox_id}@{_mail_domain(settings)}>"


def _one_line(value: str) -> str:
    """Header text on one line: a name with a newline must not break the header."""
    return " ".join(value.split())


def _compose(settings: Settings, message: OwedMessage, letter: _Letter) -> EmailMessage:
    try:
        recipient = Address(addr_spec=message.recipient)
    except (ValueError, HeaderParseError) as error:
        raise Undeliverable(f"not an address: {error}") from None
    email = EmailMessage(policy=SMTP)
    email["From"] = settings.mail_from
    email["To"] = recipient
    email["Subject"] = _one_line(letter.subject)
    # When the message became owed, not when this attempt made it: a retry is the same mail.
    email["Date"] = format_datetime(message.created_at)
    email["Message-ID"] = message_id(settings, message.id)
    email.set_content(letter.text + "\n")
    email.add_alternative(letter.html, subtype="html")
    html_part = email.get_body(preferencelist=("html",))
    assert html_part is not None
    for cid, code in letter.qr_codes:
        name = cid.partition("@")[0] + ".png"
        html_part.add_related(
            qr_png(code),
            maintype="image",
            subtype="png",
            cid=f"<{cid}>",
            disposition="inline",
            filename=name,
        )
    if letter.calendar is not None:
        email.add_attachment(
            letter.calendar.encode(),
            maintype="text",
            subtype="calendar",
            filename="event.ics",
            params={"method": "PUBLISH", "charset": "utf-8"},
        )
    return email
