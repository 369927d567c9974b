"""Secrets the service makes for itself when they are not configured: the admin token and the
server secret. One of each per data folder, shared by every process that uses the folder.

Neither ever goes into a log record: a generated admin token is shown once, on the terminal
(stderr), when it is created; the server secret is never shown.
"""

import os
import secrets
import sys
from pathlib import Path

from boxoffice.config import Settings

ADMIN_TOKEN_FILE = "admin_token"
SERVER_SECRET_FILE = "server_secret"


def folder_secret(data_dir: Path, name: str) -> tuple[str, bool]:
    """The secret kept in `data_dir/name`, made now if there is none: (secret, made now).

    Written to a private temporary file first and then linked into place, so processes that
    start together (uvicorn workers) all end up with the one that was linked first, and none
    ever reads a half-written file.
    """
    path = data_dir / name
    try:
        return path.read_text().strip(), False
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    draft = data_dir / f".{name}.{os.getpid()}"
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(value + "\n")
    try:
        os.link(draft, path)
    except FileExistsError:
        return path.read_text().strip(), False
    finally:
        draft.unlink()
    return value, True


def admin_token(settings: Settings) -> str:
    """ADMIN_TOKEN, or the data folder's own (never a default, never logged)."""
    if settings.admin_token:
        return settings.admin_token
    token, made = folder_secret(settings.data_dir, ADMIN_TOKEN_FILE)
    path = settings.data_dir / ADMIN_TOKEN_FILE
    if made:
        # On the terminal only, and only now: log records go to collectors and files.
        print(f"boxoffice: generated an admin token (kept in {path}): {token}", file=sys.stderr)
    else:
        print(f"boxoffice: the admin token is in {path}", file=sys.stderr)
    return token


def server_secret(settings: Settings) -> bytes:
    """SERVER_SECRET, or the data folder's own: it keys what the database must not be able
    to recompute (idempotency key hashes, keyed holds' tokens). Servers sharing a database
    must share it."""
    if settings.server_secret:
        return settings.server_secret.encode()
    secret, _ = folder_secret(settings.data_dir, SERVER_SECRET_FILE)
    return secret.encode()
