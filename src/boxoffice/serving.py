"""Start `boxoffice serve` on a free port, wait until it is ready, stop it: the one way the
tests, `boxoffice simulate`'s private server and the benchmarks run the service.

    with ServeProcess(env={"DATABASE_URL": url}, log_path=log) as server:
        httpx.get(server.url + "/events")

    server = ServeProcess(env=..., log_path=log)
    await server.astart()          # the same, from a running event loop
    await server.astop()

The server runs exactly as a user starts it (`python -m boxoffice.cli serve --port N
--workers W --log-level L`) in a subprocess of its own session, so a Ctrl-C reaches the caller
only and the last-resort SIGKILL reaches the workers too. Ready means `GET /readyz` answered
200; a process that exits first, or a timeout, raises ServeFailed with the tail of its log.

Standard library only (the readiness probe is urllib), so importing this costs nothing.
"""

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

HOST = "127.0.0.1"
# What runs the server, before `--port`, `--workers` and `--log-level`.
SERVE_PROGRAM: tuple[str, ...] = ("-m", "boxoffice.cli", "serve")
READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 20.0
POLL_SECONDS = 0.1

# No proxy from the environment may stand between us and a server on the loopback.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ServeFailed(RuntimeError):
    """The server exited before it was ready, or was not ready in time."""


def free_port(host: str = HOST) -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"


def is_ready(url: str, *, timeout: float = 1.0) -> bool:
    """True if `GET {url}/readyz` answers 200."""
    try:
        with _OPENER.open(url + "/readyz", timeout=timeout) as response:
            return int(response.status) == 200
    except (OSError, ValueError):  # refused, reset, timed out, an HTTP error status
        return False


def _not_ready(process: subprocess.Popen[bytes], log_path: Path, timeout: float) -> ServeFailed:
    if process.poll() is not None:
        return ServeFailed(
            f"the server exited early (status {process.returncode}); its log ends:\n"
            f"{log_tail(log_path)}"
        )
    return ServeFailed(
        f"the server was not ready after {timeout:g} s; its log ends:\n{log_tail(log_path)}"
    )


def wait_until_ready(
    url: str,
    process: subprocess.Popen[bytes],
    log_path: Path,
    *,
    timeout: float = READY_TIMEOUT_SECONDS,
) -> None:
    """Poll /readyz until it answers 200; ServeFailed if the process dies first or time runs
    out. For any process that serves the app, not only one a ServeProcess started."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if is_ready(url):
            return
        # Polling a server that is starting up: bounded by the deadline.
        time.sleep(POLL_SECONDS)
    raise _not_ready(process, log_path, timeout)


async def wait_until_ready_async(
    url: str,
    process: subprocess.Popen[bytes],
    log_path: Path,
    *,
    within: float = READY_TIMEOUT_SECONDS,
) -> None:
    """`wait_until_ready` without blocking the event loop."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if await asyncio.to_thread(is_ready, url):
            return
        await asyncio.sleep(POLL_SECONDS)
    raise _not_ready(process, log_path, within)


def stop_process(
    process: subprocess.Popen[bytes],
    *,
    timeout: float = STOP_TIMEOUT_SECONDS,
    stop_signal: int = signal.SIGTERM,
    group: bool = True,
) -> int:
    """`stop_signal` (uvicorn stops its workers on SIGTERM), then after `timeout` SIGKILL: for
    the whole process group if `group` (a process started in a session of its own, workers
    included), else for the process alone. Its exit status."""
    if process.poll() is not None:
        return process.returncode
    with contextlib.suppress(ProcessLookupError):
        if group and stop_signal == signal.SIGKILL:
            os.killpg(process.pid, signal.SIGKILL)  # no grace asked for: workers too, at once
        else:
            process.send_signal(stop_signal)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(process.pid, signal.SIGKILL)
            else:
                process.kill()
        return process.wait()


class ServeProcess:
    """`boxoffice serve` (or `command`) in a subprocess on `port` (default: a free one).

    env         settings on top of `base_env` (default: this process's environment)
    program     what follows the interpreter, before `--port`, `--workers`, `--log-level`
    command     the whole command line instead (its own port options; nothing is added)
    log_path    the server's stdout and stderr, appended to (`log_mode="w"`: truncated)
    cwd         the server's folder (a `.env` there would be read by the settings)
    """

    def __init__(
        self,
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        base_env: Mapping[str, str] | None = None,
        port: int | None = None,
        workers: int | None = 2,
        log_level: str | None = "warning",
        program: Sequence[str] = SERVE_PROGRAM,
        command: Sequence[str] | None = None,
        cwd: Path | None = None,
        new_session: bool = True,
        log_mode: str = "a",
        ready_timeout: float = READY_TIMEOUT_SECONDS,
        stop_timeout: float = STOP_TIMEOUT_SECONDS,
        stop_signal: int = signal.SIGTERM,
    ) -> None:
        self.log_path = log_path
        self.env = dict(env or {})
        self.base_env = dict(os.environ if base_env is None else base_env)
        self.port = port if port is not None else free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.workers = workers
        self.log_level = log_level
        self.program = tuple(program)
        self.explicit_command = tuple(command) if command is not None else None
        self.cwd = cwd
        self.new_session = new_session
        self.log_mode = log_mode
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.stop_signal = stop_signal
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def command(self) -> list[str]:
        if self.explicit_command is not None:
            return list(self.explicit_command)
        command = [sys.executable, *self.program, "--port", str(self.port)]
        if self.workers is not None:
            command += ["--workers", str(self.workers)]
        if self.log_level is not None:
            command += ["--log-level", self.log_level]
        return command

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start the process; do not wait for it."""
        if self.running:
            raise RuntimeError("this server is already running")
        with self.log_path.open(self.log_mode + "b") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env={**self.base_env, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=self.new_session,
            )
        return self.process

    def start(self) -> Self:
        """Start it and wait until it is ready (stopping it again if it never is)."""
        process = self.spawn()
        try:
            wait_until_ready(self.url, process, self.log_path, timeout=self.ready_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    async def astart(self) -> Self:
        """`start` from a running event loop."""
        process = self.spawn()
        try:
            await wait_until_ready_async(
                self.url, process, self.log_path, within=self.ready_timeout
            )
        except BaseException:
            await self.astop()
            raise
        return self

    def stop(self) -> int | None:
        """The stop signal, then SIGKILL after `stop_timeout`; the exit status (None: never
        started)."""
        process, self.process = self.process, None
        if process is None:
            return None
        return stop_process(
            process,
            timeout=self.stop_timeout,
            stop_signal=self.stop_signal,
            group=self.new_session,
        )

    async def astop(self) -> int | None:
        return await asyncio.to_thread(self.stop)

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log_path, lines)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await self.astart()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.astop()
