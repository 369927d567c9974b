"""The service under test: `boxoffice serve --workers N` in a subprocess, exactly as a user
starts it (boxoffice.serving's ServeProcess), on a port it keeps across restarts."""

import os
import secrets
from collections.abc import Sequence
from pathlib import Path

from boxoffice.serving import SERVE_PROGRAM, ServeProcess, free_port, log_tail

from .common import PROJECT_DIR

# Every client of a benchmark is 127.0.0.1: per-client rate limits (boxoffice.ratelimit) would
# measure the limiter's 429s, not the service. A run that wants them passes its own to start().
RATE_LIMITS_OFF = {"RATE_LIMIT_RESERVATIONS_PER_MINUTE": "0", "RATE_LIMIT_QUEUE_PER_MINUTE": "0"}


class Server:
    def __init__(
        self,
        database_url: str,
        admin_token: str,
        workers: int,
        workdir: Path,
        program: Sequence[str] = SERVE_PROGRAM,
    ) -> None:
        self.program = tuple(program)
        self.database_url = database_url
        self.admin_token = admin_token
        # Keyed holds and key hashes need one; the same for every (re)start.
        self.server_secret = "bench-server-secret-" + secrets.token_urlsafe(32)
        self.workers = workers
        self.workdir = workdir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "server.log"
        self.env: dict[str, str] = {}
        self._serve: ServeProcess | None = None

    @property
    def pid(self) -> int | None:
        return self._serve.pid if self._serve is not None else None

    @property
    def running(self) -> bool:
        return self._serve is not None and self._serve.running

    async def start(self, **env: str) -> None:
        """Start it and wait for /readyz (ServeFailed, a RuntimeError, with its log if not)."""
        self.env = {"SWEEP_INTERVAL_SECONDS": "0", **RATE_LIMITS_OFF, **env}
        self._serve = ServeProcess(
            env={
                "DATABASE_URL": self.database_url,
                "ADMIN_TOKEN": self.admin_token,
                "SERVER_SECRET": self.server_secret,
                # The working tree's code, whatever is installed.
                "PYTHONPATH": os.pathsep.join(
                    [str(PROJECT_DIR / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
                ),
                **self.env,
            },
            port=self.port,
            workers=self.workers,
            log_level="warning",
            program=self.program,
            # A folder of our own, so no .env from the project folder changes the settings.
            cwd=self.workdir,
            log_path=self.log_path,
            ready_timeout=90,
            stop_timeout=30,
        )
        await self._serve.astart()

    async def stop(self) -> None:
        serve, self._serve = self._serve, None
        if serve is not None:
            await serve.astop()

    async def restart(self, **env: str) -> None:
        await self.stop()
        await self.start(**env)

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)
