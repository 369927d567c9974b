"""Handing a rendered e-mail over: to the SMTP server of SMTP_URL, or, without one, to a
file under MAIL_DIR, so a local run keeps its messages in the data folder."""

import asyncio
import contextlib
import os
import tempfile
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import parseaddr
from pathlib import Path
from urllib.parse import unquote, urlsplit

import aiosmtplib

from boxoffice.config import Settings

# Each SMTP step (connect, a command, the data) waits at most this long.
SMTP_TIMEOUT_SECONDS = 30.0
_DEFAULT_PORTS = {"smtp": 25, "smtps": 465}


class Refused(Exception):
    """The mail server refused the recipient for good (a 5xx reply): retrying cannot help."""


@dataclass(frozen=True)
class SmtpServer:
    hostname: str
    port: int
    username: str | None
    password: str | None
    # smtps://: TLS from the first byte; smtp://: STARTTLS when the server offers it.
    implicit_tls: bool


def smtp_server(url: str) -> SmtpServer:
    """SMTP_URL read: smtp[s]://[user[:password]@]host[:port], user and password %-encoded."""
    parts = urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError("SMTP_URL must look like smtp://user:password@host:port (or smtps://)")
    return SmtpServer(
        hostname=parts.hostname,
        port=parts.port or _DEFAULT_PORTS[parts.scheme],
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        implicit_tls=parts.scheme == "smtps",
    )


async def deliver(settings: Settings, message: EmailMessage, *, file_stem: str) -> None:
    """Send `message` over SMTP, or write it as `<file_stem>.eml` without SMTP_URL."""
    if settings.smtp_url:
        await _send(smtp_server(settings.smtp_url), settings, message)
    else:
        data = message.as_bytes(policy=SMTP)
        await asyncio.to_thread(_write_atomically, settings.mail_folder, f"{file_stem}.eml", data)


async def _send(server: SmtpServer, settings: Settings, message: EmailMessage) -> None:
    try:
        await aiosmtplib.send(
            message,
            sender=parseaddr(settings.mail_from)[1],
            recipients=[str(message["To"].addresses[0].addr_spec)],
            hostname=server.hostname,
            port=server.port,
            username=server.username,
            password=server.password,
            use_tls=server.implicit_tls,
            # None: upgrade when the server offers STARTTLS; never a second TLS under smtps.
            start_tls=False if server.implicit_tls else None,
            timeout=SMTP_TIMEOUT_SECONDS,
        )
    except aiosmtplib.SMTPRecipientsRefused as refused:
        if all(500 <= recipient.code < 600 for recipient in refused.recipients):
            raise Refused(str(refused)) from None
        raise


def _write_atomically(folder: Path, name: str, data: bytes) -> None:
    """Write a whole file or none: a reader (or a crash) never sees half a message."""
    # The messages hold ticket codes: the folder and files are the service user's alone.
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as out:
            out.write(data)
        os.replace(temporary, folder / name)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
