"""The load: HTTP requests recorded one by one, a barrier rush, and a worker pool of buyers."""

import asyncio
import contextlib
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from boxoffice.simulate.outcomes import Action, Attempt


class SetupError(Exception):
    """The run cannot start: no server, a refused admin token, nothing to fight over."""


def describe(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


_ssl_context: ssl.SSLContext | None = None

# Below uvicorn's keep-alive timeout (5 s): see `client`.
KEEPALIVE_EXPIRY_SECONDS = 2.0


def client(url: str, *, connections: int, timeout: float) -> httpx.AsyncClient:
    """An HTTP client with `connections` sockets. One TLS context for all of them: building
    one per client takes ~20 ms, which adds up to seconds for hundreds of buyers."""
    global _ssl_context
    if _ssl_context is None:
        _ssl_context = httpx.create_ssl_context()
    return httpx.AsyncClient(
        base_url=url,
        timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
        # A connection idle this long is not reused: uvicorn closes idle keep-alive connections
        # after 5 s, httpx would reuse them until 5 s, and a reuse racing that close fails
        # with a ReadError (seen under CPU load) for a request the server never read.
        limits=httpx.Limits(
            max_connections=connections,
            max_keepalive_connections=connections,
            keepalive_expiry=KEEPALIVE_EXPIRY_SECONDS,
        ),
        verify=_ssl_context,
    )


async def check_reachable(url: str, *, request_timeout: float = 5.0) -> None:
    """Raise SetupError unless the server answers HTTP at all (any status will do)."""
    try:
        async with client(url, connections=1, timeout=request_timeout) as http:
            await http.get("/healthz")
    except (httpx.TransportError, httpx.InvalidURL) as error:
        raise SetupError(f"cannot reach the server at {url}: {describe(error)}") from error


def _json(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return None


def summarise(response: httpx.Response, body: Any) -> str:
    """A short, human account of one answer."""
    status = response.status_code
    if 200 <= status < 300 and isinstance(body, dict):
        reservation = body.get("reservation_id") or body.get("id")
        if "token" in body:
            return f"WINNER  reservation {reservation} until {body.get('expires_at')}"
        return f"OK  {reservation}" if reservation else "OK"
    if 200 <= status < 300:
        return "OK"
    if isinstance(body, dict) and ("title" in body or "detail" in body):
        kind = "refused" if status == 409 else "error"
        title = body.get("title") or ""
        detail = body.get("detail") or ""
        text = f"{title}: {detail}" if title and detail else str(title or detail)
        return f"{kind}  {text}"[:160]
    snippet = " ".join(response.text.split())[:120]
    return f"unexpected answer  {snippet or '(empty body)'}"


def _won_tickets(body: dict[str, Any]) -> tuple[int, ...]:
    """The ticket ids in a winning answer: a reservation's `tickets`, or the original demo
    endpoint's `internal_id`. A malformed answer yields none, and the verdict reports a hold
    without its tickets."""
    try:
        if isinstance(body.get("tickets"), list):
            return tuple(int(ticket["id"]) for ticket in body["tickets"])
        if "internal_id" in body:
            return (int(body["internal_id"]),)
    except (KeyError, TypeError, ValueError):
        pass
    return ()


@dataclass(frozen=True)
class Answer:
    attempt: Attempt
    body: Any
    # The reservation's secret, kept out of the Attempt so it never reaches a report.
    token: str | None = None


class Recorder:
    """Sends requests and keeps an Attempt for each, timed from the run's start."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.attempts: list[Attempt] = []
        self.sent = 0

    def restart_clock(self) -> None:
        self.t0 = time.perf_counter()

    async def send(
        self,
        http: httpx.AsyncClient,
        *,
        buyer: int,
        action: Action,
        method: str,
        path: str,
        json: Any = None,
        params: dict[str, Any] | None = None,
        token: str | None = None,
        reservation: str | None = None,
        wanted: Sequence[int] = (),
        quantity: int | None = None,
        idempotency_key: str | None = None,
    ) -> Answer:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        self.sent += 1
        started = time.perf_counter()
        try:
            response = await http.request(method, path, json=json, params=params, headers=headers)
        except httpx.HTTPError as error:
            latency = time.perf_counter() - started
            attempt = Attempt(
                buyer=buyer,
                action=action,
                status=None,
                started=started - self.t0,
                latency=latency,
                problem=type(error).__name__,
                detail=f"transport error  {describe(error)}",
                reservation=reservation,
                wanted=tuple(wanted),
                quantity=quantity,
            )
            self.attempts.append(attempt)
            return Answer(attempt, None)
        latency = time.perf_counter() - started
        body = _json(response)
        problem = None
        tickets: tuple[int, ...] = ()
        new_token = None
        if response.status_code >= 400 and isinstance(body, dict):
            problem = str(body.get("type") or "").rsplit("/", 1)[-1] or None
        elif isinstance(body, dict) and action == "reserve":
            reservation = str(body.get("id") or body.get("reservation_id") or "") or None
            new_token = body.get("token")
            tickets = _won_tickets(body)
        attempt = Attempt(
            buyer=buyer,
            action=action,
            status=response.status_code,
            started=started - self.t0,
            latency=latency,
            problem=problem,
            detail=summarise(response, body),
            reservation=reservation,
            tickets=tickets,
            wanted=tuple(wanted),
            quantity=quantity,
        )
        self.attempts.append(attempt)
        return Answer(attempt, body, new_token)


Send = Callable[[httpx.AsyncClient, int], Awaitable[object]]


async def rush(
    url: str,
    buyers: int,
    send: Send,
    *,
    concurrency: int | None = None,
    request_timeout: float = 30.0,
    on_done: Callable[[], None] | None = None,
) -> None:
    """Every buyer sends at the same moment: connections opened first, then one barrier.

    Buyers share `concurrency` connections (default: one each). Opening them before the
    barrier makes the release send N requests on N ready sockets, not N TCP handshakes.
    """
    if buyers < 1:
        raise ValueError("buyers must be at least 1")
    count = max(1, min(concurrency or buyers, buyers))
    clients = [client(url, connections=1, timeout=request_timeout) for _ in range(count)]
    try:

        async def warm(http: httpx.AsyncClient) -> None:
            # The real request reports any failure; here every buyer must reach the barrier.
            with contextlib.suppress(httpx.HTTPError):
                await http.get("/healthz")

        await asyncio.gather(*(warm(http) for http in clients))
        barrier = asyncio.Barrier(buyers)

        async def one(buyer: int) -> None:
            http = clients[(buyer - 1) % count]
            await barrier.wait()
            await send(http, buyer)
            if on_done is not None:
                on_done()

        await asyncio.gather(*(one(buyer) for buyer in range(1, buyers + 1)))
    finally:
        await asyncio.gather(*(http.aclose() for http in clients), return_exceptions=True)


class Budget:
    """When new buyers stop arriving: after `buyers` of them, `requests` requests or `duration`
    seconds, whichever comes first, or at once on `abort()` (Ctrl-C). Buyers already under way
    finish their journey, unless aborted."""

    def __init__(
        self,
        recorder: Recorder,
        *,
        buyers: int | None,
        requests: int | None,
        duration: float | None,
    ) -> None:
        if buyers is None and requests is None and duration is None:
            raise ValueError("give at least one of buyers, requests or duration")
        self.buyers = buyers
        self.requests = requests
        self.duration = duration
        self.recorder = recorder
        self.started = time.perf_counter()
        self.arrived = 0
        self.finished = 0
        self.aborted = asyncio.Event()

    def start(self) -> None:
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def next_buyer(self) -> int | None:
        """The next buyer's number, or None when no more may arrive."""
        if (
            self.aborted.is_set()
            or (self.buyers is not None and self.arrived >= self.buyers)
            or (self.requests is not None and self.recorder.sent >= self.requests)
            or (self.duration is not None and self.elapsed() >= self.duration)
        ):
            return None
        self.arrived += 1
        return self.arrived

    def abort(self) -> None:
        self.aborted.set()

    async def pause(self, seconds: float) -> bool:
        """A buyer thinks for `seconds`; False if the run was aborted meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.aborted.wait(), timeout=max(0.0, seconds))
        return not self.aborted.is_set()

    def progress(self) -> float:
        """How far the run is, 0..1, by whichever bound is nearest."""
        parts = []
        if self.buyers is not None:
            parts.append(self.finished / self.buyers if self.buyers else 1.0)
        if self.requests is not None:
            parts.append(self.recorder.sent / self.requests if self.requests else 1.0)
        if self.duration is not None:
            parts.append(self.elapsed() / self.duration if self.duration else 1.0)
        return min(1.0, max(parts)) if parts else 0.0


Journey = Callable[[httpx.AsyncClient, int], Awaitable[None]]


async def pool(
    url: str,
    journey: Journey,
    budget: Budget,
    *,
    concurrency: int,
    request_timeout: float = 30.0,
) -> None:
    """`concurrency` workers, each taking the next buyer through its journey until the budget
    says stop; one client with a connection per worker."""
    workers = max(1, concurrency if budget.buyers is None else min(concurrency, budget.buyers))
    async with client(url, connections=workers, timeout=request_timeout) as http:
        budget.start()

        async def worker() -> None:
            while (buyer := budget.next_buyer()) is not None:
                await journey(http, buyer)
                budget.finished += 1

        await asyncio.gather(*(worker() for _ in range(workers)))


def raise_open_files_limit(needed: int) -> None:
    """Hundreds of buyers need hundreds of sockets; lift the soft limit towards the hard one."""
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = needed + 64
        if soft != resource.RLIM_INFINITY and soft < want:
            ceiling = want if hard == resource.RLIM_INFINITY else min(want, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))
