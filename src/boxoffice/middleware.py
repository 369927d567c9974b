"""One pure ASGI middleware for every request: request id, body size cap, metrics.

Kept to a few dictionary operations per request: the reservation hot path is benchmarked.
Bodies are capped per endpoint: POST /events (an admin's event with its sections) may use
MAX_BODY_BYTES, every other endpoint MAX_BUYER_BODY_BYTES (a buyer's body is a few hundred
bytes; a megabyte of ticket ids is an attack, refused before anything parses it).
It logs only refusals (a warning naming method and path, at most one a second; never headers:
they carry tokens), and reads no header but Content-Length and X-Request-ID.
"""

import itertools
import logging
import os
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from boxoffice import metrics
from boxoffice.errors import PayloadTooLarge
from boxoffice.logs import request_id
from boxoffice.problems import problem

logger = logging.getLogger(__name__)

_SANE_ID = re.compile(rb"[A-Za-z0-9._-]{1,64}")
_REQUEST_ID = b"x-request-id"
_CONTENT_LENGTH = b"content-length"
# On every answer: a browser must never guess a type other than the one we declare (a JSON
# error echoing input rendered as HTML, say).
_NOSNIFF = (b"x-content-type-options", b"nosniff")
# An Idempotency-Key replay repeats an earlier answer: not a new reservation outcome.
_REPLAYED = (b"idempotent-replayed", b"true")
# Refusals are logged at most this often (per worker); the next line counts the ones skipped.
REFUSAL_LOG_INTERVAL_SECONDS = 1.0
# Request ids for requests that bring none: this worker's random prefix and a counter, 32 hex
# digits like a UUID's. Unique across workers and restarts without a random draw per request
# (uuid4 was a visible share of a reservation's CPU); an id is a label, not a secret.
_ID_PREFIX = os.urandom(8).hex()
_id_counter = itertools.count()


def _new_id_prefix() -> None:
    global _ID_PREFIX, _id_counter
    _ID_PREFIX, _id_counter = os.urandom(8).hex(), itertools.count()


# A worker forked from a parent that imported us (gunicorn --preload) draws its own prefix.
os.register_at_fork(after_in_child=_new_id_prefix)

# The paths whose bodies may be as large as MAX_BODY_BYTES; the rest get the buyer cap.
# Payment providers sign whole events (a Stripe event can pass the buyer cap).
_LARGE_BODY_PATHS = frozenset({"/events", "/payments/webhooks/test", "/payments/webhooks/stripe"})


class OpsMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self._buyer_cap: int | None = None
        self._refusal_logged_at = -REFUSAL_LOG_INTERVAL_SECONDS
        self._refusals_unlogged = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        incoming: bytes | None = None
        length: bytes | None = None
        for name, value in scope["headers"]:
            if name == _REQUEST_ID:
                incoming = value
            elif name == _CONTENT_LENGTH:
                length = value
        rid = (
            incoming.decode("ascii")
            if incoming is not None and _SANE_ID.fullmatch(incoming)
            else f"{_ID_PREFIX}{next(_id_counter):016x}"
        )
        token = request_id.set(rid)
        rid_header = (_REQUEST_ID, rid.encode("ascii"))
        status = 500
        replayed = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, replayed
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message.get("headers", ())
                replayed = _REPLAYED in headers
                message["headers"] = [*headers, rid_header, _NOSNIFF]
            await send(message)

        try:
            too_large = False
            cap = 0
            if length is not None:
                cap = self._cap(scope)
                try:
                    too_large = int(length) > cap
                except ValueError:
                    too_large = False  # the server itself refuses a malformed Content-Length
            elif scope["method"] not in ("GET", "HEAD", "OPTIONS", "DELETE"):
                # Streamed (chunked) body: read it up to the cap before anything parses it.
                cap = self._cap(scope)
                receive, too_large = await self._buffer(receive, cap)
            if too_large:
                await self._refuse(scope, receive, send_with_id, cap)
            else:
                await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            metrics.observe_request(
                scope["method"], template, status, time.perf_counter() - started, replayed
            )

    def _cap(self, scope: Scope) -> int:
        """The largest body this request's path accepts."""
        if scope["path"] in _LARGE_BODY_PATHS:
            return self.max_body_bytes
        cap = self._buyer_cap
        if cap is None:
            # The app's own settings (create_app keeps them in app.state, as the routes read
            # them); MAX_BODY_BYTES stays the bound for every endpoint.
            settings = scope["app"].state.settings
            cap = self._buyer_cap = min(self.max_body_bytes, settings.max_buyer_body_bytes)
        return cap

    async def _buffer(self, receive: Receive, cap: int) -> tuple[Receive, bool]:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                # The client went away: let the app see the disconnect.
                pending: list[Message] = [message]
                break
            body = message.get("body", b"")
            size += len(body)
            if size > cap:
                return receive, True
            chunks.append(body)
            if not message.get("more_body", False):
                pending = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]
                break

        async def replay() -> Message:
            if pending:
                return pending.pop()
            return await receive()

        return replay, False

    def _log_refusal(self, scope: Scope, cap: int) -> None:
        """A warning per refusal, but at most one a second: a client sending oversized bodies
        in a loop must not turn into a flood of log lines."""
        now = time.monotonic()
        if now - self._refusal_logged_at < REFUSAL_LOG_INTERVAL_SECONDS:
            self._refusals_unlogged += 1
            return
        more, since = self._refusals_unlogged, now - self._refusal_logged_at
        self._refusal_logged_at, self._refusals_unlogged = now, 0
        # The suffix says over how long the unlogged ones came: they are only counted when the
        # next refusal is logged, which may be long after the last one.
        logger.warning(
            "refused %s %s: body over %d bytes%s",
            scope["method"],
            scope["path"],
            cap,
            f" (and {more} more, not logged, in the {since:.0f} s since the last such line)"
            if more
            else "",
        )

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, cap: int) -> None:
        self._log_refusal(scope, cap)
        # Read (and drop) what the client is still sending, so it sees the answer instead of a
        # connection reset; a client that keeps sending far past MAX_BODY_BYTES is cut off.
        drained = 0
        more = True
        while more and drained <= 16 * self.max_body_bytes:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            drained += len(message.get("body", b""))
            more = message.get("more_body", False)
        error = PayloadTooLarge(f"the request body is larger than {cap} bytes")
        response = problem(error.status, error.slug, error.title, error.detail)
        if more:
            response.headers["Connection"] = "close"
        await response(scope, receive, send)
