#!/usr/bin/env python3
"""Many buyers, one ticket, one moment: does exactly one of them get it?

N simulated users each open their own connection to a running boxoffice server, wait at a
barrier until every one of them is ready, and then all send the seed demo's
`PATCH /tickets/reserve {"user_id": N, "ticket_id": T}` at once. The service promises that
exactly one wins (200) and every other one is refused at once with 409.

    python run_concurrent.py --url http://127.0.0.1:8000 --users 50 [--ticket-id 7]

Without --ticket-id it takes the first ticket that `GET /tickets` lists as available.
Exit status: 0 exactly one winner and every other user refused with 409; 1 anything else
(no winner, several winners, a 5xx, a transport error, another status); 2 the server cannot
be reached, or it has no available ticket.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_USERS = 10
DEFAULT_TIMEOUT = 30.0
WIN_STATUSES = frozenset({200, 201})
REFUSED_STATUS = 409
PAGE_SIZE = 500

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_UNAVAILABLE = 2


class SetupError(Exception):
    """The rush cannot start: the server does not answer, or it has no ticket to fight over."""


@dataclass(frozen=True)
class Outcome:
    """What one simulated user got back. `status` is None when no HTTP answer came at all."""

    user: int
    status: int | None
    summary: str
    sent_at: float = 0.0
    elapsed: float = 0.0

    @property
    def won(self) -> bool:
        return self.status in WIN_STATUSES

    @property
    def refused(self) -> bool:
        return self.status == REFUSED_STATUS

    @property
    def server_error(self) -> bool:
        return self.status is not None and self.status >= 500

    @property
    def transport_error(self) -> bool:
        return self.status is None

    def line(self) -> str:
        status = "---" if self.status is None else str(self.status)
        return f"user {self.user:>4}  HTTP {status}  {self.summary}"


@dataclass(frozen=True)
class Verdict:
    ok: bool
    message: str

    def line(self) -> str:
        return f"VERDICT: {'OK' if self.ok else 'FAIL'} — {self.message}"


@dataclass(frozen=True)
class Result:
    url: str
    ticket_id: int
    outcomes: list[Outcome]
    verdict: Verdict

    @property
    def ok(self) -> bool:
        return self.verdict.ok

    @property
    def release_spread_ms(self) -> float:
        """How far apart the first and the last request were sent, in milliseconds."""
        sent = [outcome.sent_at for outcome in self.outcomes]
        return (max(sent) - min(sent)) * 1000 if sent else 0.0


def judge(outcomes: Sequence[Outcome]) -> Verdict:
    """OK only for exactly one winner and a 409 for every other user; FAIL says what went wrong."""
    if not outcomes:
        return Verdict(False, "no user ran")
    winners = sorted(outcome.user for outcome in outcomes if outcome.won)
    refused = sum(1 for outcome in outcomes if outcome.refused)
    server_errors = [outcome for outcome in outcomes if outcome.server_error]
    transport_errors = [outcome for outcome in outcomes if outcome.transport_error]
    others = [
        outcome
        for outcome in outcomes
        if not (outcome.won or outcome.refused or outcome.server_error or outcome.transport_error)
    ]

    problems: list[str] = []
    if not winners:
        problems.append("zero winners: nobody got the ticket")
    elif len(winners) > 1:
        users = ", ".join(str(user) for user in winners)
        problems.append(f"{len(winners)} winners (users {users}): the ticket was sold twice")
    if server_errors:
        counts = Counter(outcome.status for outcome in server_errors)
        listed = ", ".join(f"{count}× {status}" for status, count in sorted(counts.items()))
        problems.append(f"{len(server_errors)} server error(s) ({listed})")
    if transport_errors:
        problems.append(
            f"{len(transport_errors)} transport error(s), e.g. {transport_errors[0].summary}"
        )
    if others:
        counts = Counter(outcome.status for outcome in others)
        listed = ", ".join(f"{count}× {status}" for status, count in sorted(counts.items()))
        problems.append(f"{len(others)} unexpected answer(s) ({listed}), not 200 or 409")
    if problems:
        return Verdict(False, "; ".join(problems) + f" ({refused} refused with 409)")
    return Verdict(True, f"exactly one winner (user {winners[0]}), {refused} refused with 409")


def _summarise(response: httpx.Response) -> str:
    """A short, human account of one answer."""
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if response.status_code in WIN_STATUSES and isinstance(body, dict):
        return f"WINNER  reservation {body.get('reservation_id')} until {body.get('expires_at')}"
    if isinstance(body, dict) and ("title" in body or "detail" in body):
        kind = "refused" if response.status_code == REFUSED_STATUS else "error"
        title = body.get("title") or ""
        detail = body.get("detail") or ""
        text = f"{title}: {detail}" if title and detail else str(title or detail)
        return f"{kind}  {text}"[:160]
    snippet = " ".join(response.text.split())[:120]
    return f"unexpected answer  {snippet or '(empty body)'}"


def _timeout(seconds: float) -> httpx.Timeout:
    return httpx.Timeout(seconds, connect=min(seconds, 5.0))


async def check_reachable(url: str, *, request_timeout: float = 5.0) -> None:
    """Raise SetupError unless the server answers HTTP at all (any status will do)."""
    try:
        async with httpx.AsyncClient(base_url=url, timeout=_timeout(request_timeout)) as client:
            await client.get("/healthz")
    except (httpx.TransportError, httpx.InvalidURL) as error:
        raise SetupError(f"cannot reach the server at {url}: {_describe(error)}") from error


async def find_available_ticket(url: str, *, request_timeout: float = 5.0) -> int:
    """The id of the first ticket that `GET /tickets` lists as available (following pages)."""
    after: int | None = None
    try:
        async with httpx.AsyncClient(base_url=url, timeout=_timeout(request_timeout)) as client:
            while True:
                params: dict[str, int] = {"limit": PAGE_SIZE}
                if after is not None:
                    params["after"] = after
                response = await client.get("/tickets", params=params)
                if response.status_code != 200:
                    raise SetupError(
                        f"GET /tickets answered {response.status_code}: {response.text[:200]}"
                    )
                try:
                    tickets: list[dict[str, Any]] = response.json()
                except ValueError as error:
                    raise SetupError(f"GET /tickets did not answer JSON: {error}") from error
                for ticket in tickets:
                    if ticket.get("status") == "available":
                        return int(ticket["id"])
                next_after = response.headers.get("X-Next-After")
                if not next_after:
                    raise SetupError(f"no available ticket at {url} (GET /tickets lists none)")
                after = int(next_after)
    except httpx.TransportError as error:
        raise SetupError(f"cannot reach the server at {url}: {_describe(error)}") from error


def _describe(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


async def _one_user(
    url: str,
    user: int,
    ticket_id: int,
    barrier: asyncio.Barrier,
    request_timeout: float,
) -> Outcome:
    """One buyer: own connection, warmed up before the barrier, then one PATCH on release."""
    # One connection per user, opened before the barrier, so the release sends N requests on
    # N ready sockets instead of queueing them behind N TCP handshakes.
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(
        base_url=url, timeout=_timeout(request_timeout), limits=limits
    ) as client:
        # The PATCH below reports any real failure; every user must reach the barrier.
        with contextlib.suppress(httpx.HTTPError):
            await client.get("/healthz")
        await barrier.wait()
        sent_at = time.perf_counter()
        try:
            response = await client.patch(
                "/tickets/reserve", json={"user_id": user, "ticket_id": ticket_id}
            )
        except httpx.HTTPError as error:
            elapsed = time.perf_counter() - sent_at
            return Outcome(user, None, f"transport error  {_describe(error)}", sent_at, elapsed)
        elapsed = time.perf_counter() - sent_at
        return Outcome(user, response.status_code, _summarise(response), sent_at, elapsed)


async def run(
    url: str = DEFAULT_URL,
    users: int = DEFAULT_USERS,
    ticket_id: int | None = None,
    *,
    request_timeout: float = DEFAULT_TIMEOUT,
) -> Result:
    """Release `users` buyers at one ticket together; raise SetupError if that cannot start."""
    if users < 1:
        raise ValueError("users must be at least 1")
    url = url.rstrip("/")
    await check_reachable(url)
    if ticket_id is None:
        ticket_id = await find_available_ticket(url)
    barrier = asyncio.Barrier(users)
    outcomes = await asyncio.gather(
        *(_one_user(url, user, ticket_id, barrier, request_timeout) for user in range(1, users + 1))
    )
    return Result(url, ticket_id, sorted(outcomes, key=lambda o: o.user), judge(outcomes))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="N users try to reserve the same ticket at the same moment; exactly one "
        "must win and the others must get 409."
    )
    parser.add_argument("--url", default=DEFAULT_URL, help=f"server base URL ({DEFAULT_URL})")
    parser.add_argument(
        "--users", type=int, default=DEFAULT_USERS, help=f"simulated users ({DEFAULT_USERS})"
    )
    parser.add_argument(
        "--ticket-id",
        type=int,
        default=None,
        help="ticket to fight over (default: the first available one in GET /tickets)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds to wait for each answer ({DEFAULT_TIMEOUT:g})",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.users < 1:
        print("run_concurrent: --users must be at least 1", file=sys.stderr)
        return EXIT_UNAVAILABLE
    target = f"ticket {args.ticket_id}" if args.ticket_id is not None else "first available ticket"
    print(f"{args.users} users → PATCH {args.url.rstrip('/')}/tickets/reserve, {target}")
    try:
        result = asyncio.run(
            run(args.url, args.users, args.ticket_id, request_timeout=args.timeout)
        )
    except SetupError as error:
        print(f"run_concurrent: {error}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    for outcome in result.outcomes:
        print(outcome.line())
    slowest = max(outcome.elapsed for outcome in result.outcomes) * 1000
    print(
        f"ticket {result.ticket_id}: {len(result.outcomes)} requests released within "
        f"{result.release_spread_ms:.1f} ms, slowest answer {slowest:.0f} ms"
    )
    print(result.verdict.line())
    return EXIT_OK if result.ok else EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
