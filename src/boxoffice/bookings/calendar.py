"""A booking's event as an iCalendar file (RFC 5545), for the buyer's calendar.

One VEVENT whose UID is the booking's, so a calendar that imports the file twice (a
re-sent e-mail) updates one entry instead of adding a second.
"""

import uuid
from datetime import UTC, datetime, timedelta

# Events store no end; an evening's show is a fair guess.
DEFAULT_LENGTH = timedelta(hours=3)
# RFC 5545 3.1: lines longer than 75 octets (without the CRLF) are folded.
_LINE_OCTETS = 75
_PRODID = "-//boxoffice//tickets//EN"


def escape_text(value: str) -> str:
    """A TEXT value (RFC 5545 3.3.11): backslash, semicolon, comma and newlines escaped."""
    value = value.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,")
    return value.replace("\r\n", "\\n").replace("\r", "\\n").replace("\n", "\\n")


def fold(line: str) -> str:
    """One content line folded into lines of at most 75 octets, never inside a character."""
    pieces: list[str] = []
    piece = ""
    octets = 0
    for char in line:
        size = len(char.encode())
        if octets + size > _LINE_OCTETS:
            pieces.append(piece)
            # The continuation's leading space is an octet of its line.
            piece, octets = " ", 1
        piece += char
        octets += size
    pieces.append(piece)
    return "\r\n".join(pieces)


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def event_ics(
    *,
    booking_id: uuid.UUID,
    booking_code: str,
    event_name: str,
    venue: str | None,
    starts_at: datetime,
    booking_url: str,
    stamp: datetime,
    ends_at: datetime | None = None,
) -> str:
    """A VCALENDAR with the event (in UTC) and the booking's code and link in its text.

    `stamp` is when the entry was made (DTSTAMP): the booking's time, so every copy (the
    e-mail's, the booking page's, a resent one) is the same file.
    """
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        f"PRODID:{_PRODID}",
        "CALSCALE:GREGORIAN",
        "METHOD:PUBLISH",
        "BEGIN:VEVENT",
        f"UID:booking-{booking_id}@boxoffice",
        f"DTSTAMP:{_utc(stamp)}",
        f"DTSTART:{_utc(starts_at)}",
        f"DTEND:{_utc(ends_at or starts_at + DEFAULT_LENGTH)}",
        f"SUMMARY:{escape_text(event_name)}",
    ]
    if venue:
        lines.append(f"LOCATION:{escape_text(venue)}")
    description = f"Booking {booking_code}\nYour tickets: {booking_url}"
    lines += [
        f"DESCRIPTION:{escape_text(description)}",
        # A URI value, not TEXT: its commas and semicolons are not escaped.
        f"URL:{booking_url}",
        "STATUS:CONFIRMED",
        "TRANSP:OPAQUE",
        "END:VEVENT",
        "END:VCALENDAR",
    ]
    return "".join(fold(line) + "\r\n" for line in lines)
