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

The load and the verdict are `boxoffice simulate`'s (this is its one-ticket rush with the seed
demo's request), so run it with the project installed: `.venv/bin/python run_concurrent.py`.
`boxoffice simulate one-ticket` does the same on an event of its own and also checks the
database's invariants.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

# One implementation of the rush and the verdict: the simulator's. This script keeps the seed
# demo's request, its output and its exit codes.
from boxoffice.simulate.load import Recorder, SetupError, check_reachable, describe, rush
from boxoffice.simulate.outcomes import Attempt
from boxoffice.simulate.scenarios import seed_one_ticket
from boxoffice.simulate.verdict import Verdict
from boxoffice.simulate.verdict import judge as judge_attempts

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_USERS = 10
DEFAULT_TIMEOUT = 30.0
WIN_STATUSES = frozenset({200, 201})
REFUSED_STATUS = 409
PAGE_SIZE = 500

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_UNAVAILABLE = 2

__all__ = ["Outcome", "Result", "SetupError", "Verdict", "judge", "main", "run"]


@dataclass(frozen=True)
class Outcome:
    """What one simulated user got back. `status` is None when no HTTP answer came at all."""

    user: int
    status: int | None
    summary: str
    sent_at: float = 0.0
    elapsed: float = 0.0

    @classmethod
    def from_attempt(cls, attempt: Attempt) -> Outcome:
        return cls(attempt.buyer, attempt.status, attempt.detail, attempt.started, attempt.latency)

    def attempt(self) -> Attempt:
        return Attempt(
            buyer=self.user,
            action="reserve",
            status=self.status,
            started=self.sent_at,
            latency=self.elapsed,
            detail=self.summary,
        )

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
    return judge_attempts([outcome.attempt() for outcome in outcomes], noun="user")


async def find_available_ticket(url: str, *, request_timeout: float = 5.0) -> int:
    """The id of the first ticket that `GET /tickets` lists as available (following pages)."""
    after: int | None = None
    timeout = httpx.Timeout(request_timeout, connect=min(request_timeout, 5.0))
    try:
        async with httpx.AsyncClient(base_url=url, timeout=timeout) as client:
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
        raise SetupError(f"cannot reach the server at {url}: {describe(error)}") from error


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
    target = ticket_id
    recorder = Recorder()

    async def send(client: httpx.AsyncClient, user: int) -> None:
        await seed_one_ticket(recorder, client, user, target)

    # One connection per user, opened before the barrier: N requests on N ready sockets.
    await rush(url, users, send, request_timeout=request_timeout)
    attempts = sorted(recorder.attempts, key=lambda attempt: attempt.buyer)
    outcomes = [Outcome.from_attempt(attempt) for attempt in attempts]
    # Judged on the full records, so the simulator's further checks apply too (the winner
    # holds the very ticket it asked for).
    return Result(url, ticket_id, outcomes, judge_attempts(attempts, noun="user"))


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
