#!/usr/bin/env python3
"""Many buyers, one ticket, one moment: does exactly one of them get it?

N simulated users each open their own connection to a running boxoffice server, wait at a
barrier until every one of them is ready, and then all send the original demo's
`PATCH /tickets/reserve {"user_id": N, "ticket_id": T}` at once. The service promises that
exactly one wins (200) and every other one is refused at once with 409.

    python run_concurrent.py                      # as the original demo: 10 users, its ticket
    python run_concurrent.py --url http://127.0.0.1:8000 --users 50 [--ticket-id 7]
    python run_concurrent.py --first-available    # the first ticket GET /tickets lists free

With no arguments it does what the demo's own script did: 10 users at the demo's ticket
bf2af413-dd2f-4dd2-a0e1-13def2abe020 on http://localhost:8000 (`./scripts/serve` creates the
demo's data; `boxoffice seed --demo-data` puts its tickets back on sale). --ticket-id takes a
UUID or boxoffice's integer id. Exit status: 0 exactly one winner and every other user refused
with 409; 1 anything else (no winner, several winners, a 5xx, a transport error, another
status); 2 the server cannot be reached, or it has no such ticket.

The load and the verdict are `boxoffice simulate`'s (this is its one-ticket rush with the
demo's request), so run it with the project installed: `.venv/bin/python run_concurrent.py`.
`boxoffice simulate one-ticket` does the same on an event of its own and also checks the
database's invariants.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

try:
    import httpx

    # One implementation of the rush and the verdict: the simulator's. This script keeps the
    # original demo's request, its output and its exit codes.
    from boxoffice.simulate.load import Recorder, SetupError, check_reachable, describe, rush
    from boxoffice.simulate.outcomes import Attempt
    from boxoffice.simulate.scenarios import seed_one_ticket
    from boxoffice.simulate.verdict import Verdict
    from boxoffice.simulate.verdict import judge as judge_attempts
except ImportError as missing:  # pragma: no cover - what a user sees outside the venv
    sys.exit(
        f"run_concurrent.py needs boxoffice installed ({missing.name} is missing).\n"
        "In the project folder: scripts/bootstrap.sh simulate (it adds what this script needs "
        "to .venv),\nstart the server with ./scripts/serve, then in another terminal: "
        ".venv/bin/python run_concurrent.py"
    )

# What the original demo's script hard-codes: its server and its ticket.
DEFAULT_URL = "http://localhost:8000"
DEMO_TICKET = "bf2af413-dd2f-4dd2-a0e1-13def2abe020"
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


@dataclass(frozen=True)
class Target:
    """The ticket to fight over, as requests name it and as answers report it."""

    reference: int | str
    internal_id: int
    status: str


def ticket_reference(text: str) -> int | str:
    """--ticket-id: a UUID (sent as the demo sent it) or boxoffice's integer id."""
    try:
        return str(uuid.UUID(text))
    except ValueError:
        pass
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a ticket UUID or id: {text!r}") from None


async def find_ticket(
    url: str, reference: int | str | None, *, request_timeout: float = 5.0
) -> Target:
    """Walk `GET /tickets` to the ticket named (by UUID or id), or the first available one."""
    timeout = httpx.Timeout(request_timeout, connect=min(request_timeout, 5.0))
    path: str | None = f"/tickets?limit={PAGE_SIZE}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=timeout) as client:
            while path is not None:
                response = await client.get(path)
                if response.status_code != 200:
                    raise SetupError(
                        f"GET /tickets answered {response.status_code}: {response.text[:200]}"
                    )
                try:
                    page: dict[str, Any] = response.json()
                    tickets: list[dict[str, Any]] = page["data"]
                except (ValueError, KeyError, TypeError) as error:
                    raise SetupError(f"GET /tickets did not answer its list: {error}") from error
                for ticket in tickets:
                    named = reference in (ticket.get("id"), ticket.get("internal_id"))
                    free = reference is None and ticket.get("status") == "available"
                    if named or free:
                        return Target(
                            reference if reference is not None else ticket["id"],
                            int(ticket["internal_id"]),
                            str(ticket["status"]),
                        )
                path = page.get("next")
    except httpx.TransportError as error:
        raise SetupError(f"cannot reach the server at {url}: {describe(error)}") from error
    if reference is None:
        raise SetupError(f"no available ticket at {url} (GET /tickets lists none)")
    hint = (
        " (run `boxoffice seed --demo-data` to create the demo's)"
        if reference == DEMO_TICKET
        else ""
    )
    raise SetupError(f"no ticket {reference} at {url}{hint}")


async def run(
    url: str = DEFAULT_URL,
    users: int = DEFAULT_USERS,
    ticket: int | str | None = DEMO_TICKET,
    *,
    request_timeout: float = DEFAULT_TIMEOUT,
) -> Result:
    """Release `users` buyers at one ticket (UUID, id, or None: the first available) together;
    raise SetupError if that cannot start."""
    if users < 1:
        raise ValueError("users must be at least 1")
    url = url.rstrip("/")
    await check_reachable(url)
    target = await find_ticket(url, ticket)
    ticket_id = target.internal_id
    recorder = Recorder()

    async def send(client: httpx.AsyncClient, user: int) -> None:
        await seed_one_ticket(recorder, client, user, target.reference, wanted=ticket_id)

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
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--ticket-id",
        type=ticket_reference,
        default=DEMO_TICKET,
        help=f"ticket to fight over, its UUID or id (default: the demo's {DEMO_TICKET})",
    )
    target.add_argument(
        "--first-available",
        action="store_true",
        help="fight over the first ticket GET /tickets lists as available",
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
    ticket = None if args.first_available else args.ticket_id
    target = f"ticket {ticket}" if ticket is not None else "first available ticket"
    print(f"{args.users} users → PATCH {args.url.rstrip('/')}/tickets/reserve, {target}")
    try:
        result = asyncio.run(run(args.url, args.users, ticket, request_timeout=args.timeout))
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
