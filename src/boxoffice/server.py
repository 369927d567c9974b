"""How `boxoffice serve` runs uvicorn: its options, and an HTTP protocol that sheds hostile
traffic without slowing anybody else down.

uvicorn's httptools protocol is the fastest it has (h11 costs about a third of the reservation
throughput), but it trusts its clients: it has no bound on the size of a request head (a
150 MB header froze a worker for 28 s while the parser concatenated it), no deadline for
sending one (20,000 idle connections used up the open-file limit, and every new buyer's
connection failed), and no cap on connections but `limit_concurrency`'s plain-text 503.
`GuardedHttpToolsProtocol` is that protocol plus, for each connection:

- MAX_HEADER_BYTES: the bytes of a request head (request line and headers) are counted as they
  arrive; past the bound the client gets 431 and the connection is closed.
- HEADER_TIMEOUT_SECONDS, from connecting (or from the previous response) to a complete request
  head, and BODY_TIMEOUT_SECONDS, from the head to the end of the body: a connection past its
  deadline gets 408 (if it sent anything) and is closed. One check a second per worker walks
  the connections, so no request pays for a timer.
- MAX_CONNECTIONS_PER_WORKER (lowered to what the open-file limit allows): at the cap, the
  connections that have waited longest for a request head (idle or trickling) are closed to
  make room; when every connection has a request in progress, newcomers get 503.

Every answer is problem+json; every shed connection is counted in
`boxoffice_http_connections_shed_total` and logged, at most once per 10 s per reason.
"""

import asyncio
import contextlib
import functools
import logging
import math
import weakref
from dataclasses import dataclass
from typing import Any

from starlette.types import Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from boxoffice import metrics
from boxoffice.config import Settings
from boxoffice.problems import problem

logger = logging.getLogger(__name__)

# How often each worker checks its connections' deadlines (and samples their number).
CHECK_INTERVAL_SECONDS = 1.0
# At most one log line per reason and worker this often; the line counts what it stands for.
WARNING_INTERVAL_SECONDS = 10.0
# After a 431 the server reads and drops up to this much (for this long) before closing, so a
# client still sending its head reads the answer instead of a connection reset.
LINGER_BYTES = 1 << 20
LINGER_SECONDS = 1.0
# Files a worker needs besides client connections (its database connections, the listening
# socket, logs, pipes...), on top of the pool: the connection cap leaves them free.
RESERVED_FILES = 128


@dataclass(frozen=True)
class ConnectionLimits:
    max_header_bytes: int
    header_timeout_seconds: float
    body_timeout_seconds: float
    max_connections: int  # per worker

    @property
    def connection_ceiling(self) -> int:
        """Open connections beyond which a newcomer is closed at once, without an answer."""
        return self.max_connections + max(16, self.max_connections // 8)


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (workers inherit it); the soft limit."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on POSIX
        return 1 << 20
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        # e.g. macOS refuses an infinite soft limit: then keep what we have.
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def connection_limits(settings: Settings, open_files: int) -> ConnectionLimits:
    """The limits from the settings, with the connection cap lowered to fit `open_files`."""
    reserved = RESERVED_FILES + settings.pool_size + settings.pool_max_overflow
    # The cap and the ceiling above it (cap + 1/8) must fit in the open-file limit.
    fits = max(16, (open_files - reserved) * 8 // 9)
    cap = min(settings.max_connections_per_worker, fits)
    if cap < settings.max_connections_per_worker:
        logger.warning(
            "the open-file limit (%d) allows %d connections per worker, not "
            "MAX_CONNECTIONS_PER_WORKER=%d",
            open_files,
            cap,
            settings.max_connections_per_worker,
        )
    return ConnectionLimits(
        max_header_bytes=settings.max_header_bytes,
        header_timeout_seconds=settings.header_timeout_seconds,
        body_timeout_seconds=settings.body_timeout_seconds,
        max_connections=cap,
    )


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """What `boxoffice serve` passes to uvicorn.run besides the app, address, workers and log
    level. Raises this process's open-file limit first (the workers inherit it)."""
    limits = connection_limits(settings, raise_open_file_limit())
    return {
        # uvicorn accepts a protocol class (here with our limits bound) instead of a name.
        "http": functools.partial(GuardedHttpToolsProtocol, limits=limits),
        # Live streams never end by themselves: on stop, give requests this long to finish,
        # then close what is still open (browsers reconnect elsewhere).
        "timeout_graceful_shutdown": 5,
    }


# reason → what the log line says about the connections it counts (and the level it says it at).
_REASONS: dict[str, tuple[int, str]] = {
    "evicted": (
        logging.WARNING,
        "at MAX_CONNECTIONS_PER_WORKER (%(cap)d): closed %(count)d connection(s) that were "
        "waiting for a request (idle or slow), to make room",
    ),
    "over-capacity": (
        logging.WARNING,
        "at MAX_CONNECTIONS_PER_WORKER (%(cap)d) with every connection busy: refused "
        "%(count)d connection(s) with 503",
    ),
    "header-too-large": (
        logging.INFO,
        "refused %(count)d request(s) whose head was larger than MAX_HEADER_BYTES "
        "(%(header_bytes)d) with 431",
    ),
    "header-timeout": (
        logging.INFO,
        "closed %(count)d connection(s) that sent no complete request head within "
        "HEADER_TIMEOUT_SECONDS (%(header_timeout)gs)",
    ),
    "body-timeout": (
        logging.INFO,
        "closed %(count)d connection(s) whose request body took longer than "
        "BODY_TIMEOUT_SECONDS (%(body_timeout)gs)",
    ),
}


class _Guard:
    """One per worker (per uvicorn ServerState): the cap, the deadline checks, the counts."""

    def __init__(
        self, server_state: ServerState, loop: asyncio.AbstractEventLoop, limits: ConnectionLimits
    ) -> None:
        self.connections = server_state.connections  # uvicorn's set of this worker's protocols
        self.loop = loop
        self.limits = limits
        self.unlogged: dict[str, int] = {}
        self.logged_at: dict[str, float] = {}
        self.counters = {reason: metrics.CONNECTIONS_SHED.labels(reason) for reason in _REASONS}
        loop.call_later(CHECK_INTERVAL_SECONDS, self.check)

    def check(self) -> None:
        """Close the connections past their deadlines; runs every CHECK_INTERVAL_SECONDS."""
        try:
            now = self.loop.time()
            head_deadline = now - self.limits.header_timeout_seconds
            body_deadline = now - self.limits.body_timeout_seconds
            for connection in list(self.connections):
                if not isinstance(connection, GuardedHttpToolsProtocol):
                    continue
                waiting = connection.waiting_since
                if waiting is not None:
                    if waiting < head_deadline:
                        connection.head_timed_out()
                else:
                    reading = connection.reading_since
                    if reading is not None and reading < body_deadline:
                        connection.body_timed_out()
            metrics.CONNECTIONS_OPEN.set(len(self.connections))
            for reason in list(self.unlogged):
                if now - self.logged_at.get(reason, -math.inf) >= WARNING_INTERVAL_SECONDS:
                    self._log(reason, now)
        finally:
            self.loop.call_later(CHECK_INTERVAL_SECONDS, self.check)

    def make_room(self, newcomer: "GuardedHttpToolsProtocol") -> None:
        """Over the cap: close the connections waiting longest for a request head; if every
        other connection has a request in progress, the newcomer is refused instead."""
        live = [c for c in self.connections if not c.transport.is_closing()]
        excess = len(live) - self.limits.max_connections
        if excess <= 0:
            return
        waiting = sorted(
            (
                c
                for c in live
                if isinstance(c, GuardedHttpToolsProtocol)
                and c is not newcomer
                and c.waiting_since is not None
            ),
            key=lambda c: c.waiting_since or 0.0,
        )
        # A little more room than needed, so the next newcomers do not each sort again.
        victims = waiting[: excess + self.limits.max_connections // 32]
        for victim in victims:
            victim.transport.close()
        if victims:
            self.shed("evicted", len(victims))
        if len(victims) >= excess:
            return
        self.shed("over-capacity")
        if len(live) - len(victims) > self.limits.connection_ceiling:
            newcomer.transport.abort()  # too many even to answer
        else:
            newcomer.refuse_for_capacity()

    def shed(self, reason: str, count: int = 1) -> None:
        self.counters[reason].inc(count)
        self.unlogged[reason] = self.unlogged.get(reason, 0) + count
        now = self.loop.time()
        if now - self.logged_at.get(reason, -math.inf) >= WARNING_INTERVAL_SECONDS:
            self._log(reason, now)

    def _log(self, reason: str, now: float) -> None:
        level, message = _REASONS[reason]
        self.logged_at[reason] = now
        logger.log(
            level,
            message,
            {
                "count": self.unlogged.pop(reason),
                "cap": self.limits.max_connections,
                "header_bytes": self.limits.max_header_bytes,
                "header_timeout": self.limits.header_timeout_seconds,
                "body_timeout": self.limits.body_timeout_seconds,
            },
        )


_guards: "weakref.WeakKeyDictionary[ServerState, _Guard]" = weakref.WeakKeyDictionary()


def _guard_for(
    server_state: ServerState, loop: asyncio.AbstractEventLoop, limits: ConnectionLimits
) -> _Guard:
    guard = _guards.get(server_state)
    if guard is None:
        guard = _guards[server_state] = _Guard(server_state, loop, limits)
    return guard


def _raw_problem(
    state: ServerState, status: int, slug: str, title: str, detail: str, **headers: str
) -> bytes:
    """A whole HTTP response, for answers written straight to the socket (no request cycle)."""
    response = problem(status, slug, title, detail, {"Connection": "close", **headers})
    lines = [STATUS_LINE[status]]
    for name, value in [*state.default_headers, *response.raw_headers]:
        lines += [name, b": ", value, b"\r\n"]
    lines += [b"\r\n", bytes(response.body)]
    return b"".join(lines)


async def _head_too_large(scope: Scope, receive: Receive, send: Send) -> None:
    """The answer to a complete request head over MAX_HEADER_BYTES (in place of the app)."""
    response = problem(
        431,
        "request-header-too-large",
        "Request header fields too large",
        "the request line and headers are larger than the server accepts",
        {"Connection": "close"},
    )
    await response(scope, receive, send)


async def _over_capacity(scope: Scope, receive: Receive, send: Send) -> None:
    """The answer on a connection accepted beyond MAX_CONNECTIONS_PER_WORKER."""
    response = problem(
        503,
        "service-unavailable",
        "Service temporarily unavailable",
        "the server has too many open connections; retry shortly",
        {"Connection": "close", "Retry-After": "1"},
    )
    await response(scope, receive, send)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with bounds on head size, head and body time, and
    connections (see the module docstring). The hot path pays a counter and a clock read."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: ConnectionLimits,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self.max_header_bytes = limits.max_header_bytes
        self.guard = _guard_for(server_state, self.loop, limits)
        # Loop time since which the connection has waited for a request head; None while a
        # request is being read or answered.
        self.waiting_since: float | None = None
        # Loop time since which the current request's body has been read; None otherwise.
        self.reading_since: float | None = None
        # Bytes received of the request head in progress; None once it is complete.
        self.head_bytes: int | None = 0
        self.discarding = 0  # after a 431 written to the socket: bytes still to read and drop

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.waiting_since = self.loop.time()
        if len(self.connections) > self.limits.max_connections:
            self.guard.make_room(self)

    def data_received(self, data: bytes) -> None:
        if self.discarding:
            self._discard(len(data))
            return
        head = self.head_bytes
        if head is None:  # body bytes
            super().data_received(data)
            return
        # Counted before parsing: httptools accumulates a header (and uvicorn the URL) by
        # concatenation, so a huge one must be stopped before it has grown.
        self.head_bytes = head + len(data)
        super().data_received(data)
        head = self.head_bytes
        if head is not None and head > self.max_header_bytes and not self.transport.is_closing():
            self._refuse_head()

    def on_headers_complete(self) -> None:
        head = self.head_bytes
        self.head_bytes = None
        self.waiting_since = None
        self.reading_since = self.loop.time()
        # `head` counts every byte of the packets that carried the head, body bytes included:
        # only when it is over the bound is the head itself measured.
        if (
            head is not None
            and head > self.max_header_bytes
            and self._head_size() > self.max_header_bytes
        ):
            self.guard.shed("header-too-large")
            app, self.app = self.app, _head_too_large
            try:
                super().on_headers_complete()
            finally:
                self.app = app
            return
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.head_bytes = 0
        self.reading_since = None
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # The newest request is answered: the connection now waits for the next head (a
        # pipelined request whose head already arrived would be the newest cycle instead).
        if self.cycle.response_complete:
            self.waiting_since = self.loop.time()

    def connection_lost(self, exc: Exception | None) -> None:
        self.waiting_since = self.reading_since = None
        super().connection_lost(exc)

    def refuse_for_capacity(self) -> None:
        """Answer this connection's requests with 503 (the worker is full of busy ones)."""
        self.app = _over_capacity

    def head_timed_out(self) -> None:
        self.waiting_since = None
        if self.transport.is_closing():
            return
        if self.head_bytes and self.cycle_done():
            self.transport.write(
                _raw_problem(
                    self.server_state,
                    408,
                    "request-timeout",
                    "Request timeout",
                    "the request head did not arrive in time",
                )
            )
        self.transport.close()
        self.guard.shed("header-timeout")

    def body_timed_out(self) -> None:
        self.reading_since = None
        if self.transport.is_closing():
            return
        cycle: Any = self.cycle
        if cycle is None:
            self.transport.close()
            return
        if not cycle.response_started:
            self.transport.write(
                _raw_problem(
                    self.server_state,
                    408,
                    "request-timeout",
                    "Request timeout",
                    "the request body did not arrive in time",
                )
            )
        # The app, waiting for the rest of the body, hears that the client is gone; whatever
        # it answers is dropped.
        cycle.disconnected = True
        cycle.message_event.set()
        self.transport.close()
        self.guard.shed("body-timeout")

    def cycle_done(self) -> bool:
        """No response is in progress on this connection (so one of ours may be written)."""
        cycle: Any = self.cycle
        return cycle is None or bool(cycle.response_complete)

    def _head_size(self) -> int:
        """The request head's size as parsed (method, URL, version and every header line)."""
        size = len(self.url) + 16
        for name, value in self.headers:
            size += len(name) + len(value) + 4
        return size

    def _refuse_head(self) -> None:
        """431 for a head that is still arriving past MAX_HEADER_BYTES; nothing more is parsed."""
        self.head_bytes = None
        self.waiting_since = None
        self.guard.shed("header-too-large")
        if not self.cycle_done():
            self.transport.close()  # an answer is on its way: ours cannot follow it
            return
        self.transport.write(
            _raw_problem(
                self.server_state,
                431,
                "request-header-too-large",
                "Request header fields too large",
                f"the request line and headers are larger than {self.max_header_bytes} bytes",
            )
        )
        # Read and drop what the client is still sending, for a little while, then close.
        self.discarding = LINGER_BYTES
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def _discard(self, size: int) -> None:
        self.discarding -= size
        if self.discarding <= 0:
            self.discarding = 1  # keep dropping until the transport is gone
            self.transport.close()
