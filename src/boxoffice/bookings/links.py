"""The booking page's secret link: the booking id signed with the server secret.

Derived, never stored: the confirmation, the e-mail and a lookup all derive the same link,
and a database backup alone cannot produce one. It is not the hold's token, so a booking
link forwarded to a friend cannot release or pay for anything. The secret travels in the
URL's fragment, which browsers never send to a server (nor log); the page hands it to the
API in the Authorization header.
"""

import uuid

from boxoffice.config import Settings
from boxoffice.credentials import server_secret
from boxoffice.signed_ids import sign_id, signed_id_of

_PURPOSE = b"booking-page"


def booking_token(settings: Settings, booking_id: uuid.UUID) -> str:
    return sign_id(server_secret(settings), _PURPOSE, booking_id)


def booking_id_of_token(settings: Settings, token: str | None) -> uuid.UUID | None:
    if not token:
        return None
    return signed_id_of(server_secret(settings), _PURPOSE, token)


def booking_url(settings: Settings, booking_id: uuid.UUID) -> str:
    base = settings.public_base_url.rstrip("/")
    return f"{base}/booking#{booking_token(settings, booking_id)}"
