"""Running a scenario: the target server (given, or a private one started here), the run's own
event, the load, the invariant check on the database, and the exit code."""

import argparse
import asyncio
import contextlib
import json
import secrets
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from sqlalchemy import make_url

from boxoffice.config import Settings
from boxoffice.invariants import check_invariants
from boxoffice.serving import ServeFailed, ServeProcess
from boxoffice.simulate import scenarios
from boxoffice.simulate.load import (
    Budget,
    Recorder,
    SetupError,
    check_reachable,
    client,
    describe,
    pool,
    raise_open_files_limit,
    rush,
)
from boxoffice.simulate.outcomes import InvariantReport
from boxoffice.simulate.report import (
    PLOT_INSTALL_HINT,
    PlotUnavailable,
    Result,
    plot,
    plot_available,
    render,
    to_json,
)
from boxoffice.simulate.scenarios import Plan, Stage, make_plan
from boxoffice.simulate.verdict import judge, summarize

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_SETUP = 2
EXIT_INTERRUPTED = 130

SERVER_WORKERS = 2
# The private server's sweeper runs often, so in `mixed` it races the buyers for lapsed holds.
SERVER_SWEEP_INTERVAL_SECONDS = 1.0
SERVER_START_SECONDS = 60.0
# The private server's per-client rate limits are off: every simulated buyer comes from this
# machine's one address, and the rush is what is measured. A scenario that wants them (buyers
# who hammer, like scalpers) passes its own RATE_LIMIT_* in `private_server(server_env=...)`.
SERVER_RATE_LIMITS_OFF = {
    "RATE_LIMIT_RESERVATIONS_PER_MINUTE": "0",
    "RATE_LIMIT_QUEUE_PER_MINUTE": "0",
}

Say = Callable[[str], None]


@dataclass(frozen=True)
class Target:
    url: str
    database_url: str | None
    admin_token: str | None


def safe_url(url: str) -> str:
    """A database URL fit to print: no password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


@contextlib.contextmanager
def private_server(say: Say, server_env: Mapping[str, str] | None = None) -> Iterator[Target]:
    """A private embedded PostgreSQL in a temporary folder (never ./.boxoffice, so nobody's
    data is touched) and `boxoffice serve` on it; both stop on the way out, also on Ctrl-C.
    `server_env`: settings for the server on top of the simulator's (rate limits off)."""
    from boxoffice.embedded import embedded_postgres

    with (
        tempfile.TemporaryDirectory(
            prefix="boxoffice-simulate-", ignore_cleanup_errors=True
        ) as folder,
        contextlib.ExitStack() as stack,
    ):
        data = Path(folder)
        started = time.monotonic()
        say(f"starting a private PostgreSQL in {folder}")
        stack.callback(say, "private server and database stopped")
        try:
            database_url = stack.enter_context(embedded_postgres(data / "data"))
        except Exception as error:
            raise SetupError(f"cannot start the embedded PostgreSQL: {describe(error)}") from error
        token = secrets.token_urlsafe(24)
        server = ServeProcess(
            env={
                "DATABASE_URL": database_url,
                "ADMIN_TOKEN": token,
                # Its own: keyed holds and key hashes need one, and the default (a file in
                # ./.boxoffice) would touch the data folder of whoever runs the simulator.
                "SERVER_SECRET": secrets.token_urlsafe(48),
                "SWEEP_INTERVAL_SECONDS": str(SERVER_SWEEP_INTERVAL_SECONDS),
                **SERVER_RATE_LIMITS_OFF,
                **(server_env or {}),
            },
            log_path=data / "server.log",
            log_mode="w",
            workers=SERVER_WORKERS,
            ready_timeout=SERVER_START_SECONDS,
        )
        url = server.url
        say(f"starting boxoffice serve --workers {SERVER_WORKERS} on {url}")
        # Its own session: a Ctrl-C reaches us only, and we stop it in order.
        try:
            stack.enter_context(server)
        except ServeFailed as error:
            raise SetupError(f"the private server did not start: {error}") from error
        say(f"private server ready in {time.monotonic() - started:.1f} s")
        yield Target(url, database_url, token)


# --- setting up the run's event -------------------------------------------------------------


async def create_event(target: Target, plan: Plan) -> dict[str, Any]:
    """The run's own event, through the admin API."""
    if not target.admin_token:
        raise SetupError(
            "an admin token is needed to create the run's event: give --admin-token or set "
            "ADMIN_TOKEN (`boxoffice serve` keeps the one it generated in .boxoffice/admin_token)"
        )
    headers = {"Authorization": f"Bearer {target.admin_token}"}
    try:
        async with client(target.url, connections=1, timeout=plan.timeout) as http:
            response = await http.post("/events", json=scenarios.event_body(plan), headers=headers)
    except httpx.HTTPError as error:
        raise SetupError(f"cannot create the run's event: {describe(error)}") from error
    if response.status_code in (401, 403):
        raise SetupError(
            f"the server refused the admin token ({response.status_code}): give the "
            "server's token with --admin-token or ADMIN_TOKEN"
        )
    if response.status_code != 201:
        raise SetupError(f"POST /events answered {response.status_code}: {response.text[:300]}")
    event: dict[str, Any] = response.json()
    return event


async def event_ticket_ids(target: Target, event_id: str, *, request_timeout: float) -> list[int]:
    """Every ticket id of the event, in seat order (keyset pages)."""
    ids: list[int] = []
    after: int | None = None
    try:
        async with client(target.url, connections=1, timeout=request_timeout) as http:
            while True:
                params: dict[str, int] = {"limit": 500}
                if after is not None:
                    params["after"] = after
                response = await http.get(f"/events/{event_id}/tickets", params=params)
                if response.status_code != 200:
                    raise SetupError(
                        f"GET /events/{event_id}/tickets answered {response.status_code}"
                    )
                page = response.json()
                ids += [int(ticket["id"]) for ticket in page["items"]]
                after = page.get("next_after")
                if after is None:
                    return ids
    except httpx.HTTPError as error:
        raise SetupError(f"cannot list the event's tickets: {describe(error)}") from error


async def tickets_left(target: Target, event_id: str, *, request_timeout: float) -> int | None:
    """How many tickets the server says are still available after the run."""
    try:
        async with client(target.url, connections=1, timeout=request_timeout) as http:
            response = await http.get(f"/events/{event_id}")
        if response.status_code == 200:
            return int(response.json()["counts"]["available"])
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        pass
    return None


# --- the invariant step -----------------------------------------------------------------------


async def check_database(
    database_url: str | None,
    event_id: uuid.UUID | str | None,
    *,
    settings: Settings | None = None,
) -> InvariantReport:
    """I1–I5 on the database: for the run's event, and for the whole database.

    Never raises for a database it cannot read: that is a `skipped` report with the reason,
    which fails the verdict (a check that did not run must not look like one that passed).
    """
    if not database_url:
        return InvariantReport.skipped(
            "no database to check: give --database-url or set DATABASE_URL "
            "(or pass --no-invariants)"
        )
    from boxoffice.db import Database

    shown = safe_url(database_url)
    event = uuid.UUID(str(event_id)) if event_id is not None else None
    try:
        base = settings or Settings(database_url=database_url)
        db = Database(base, url=database_url, size=1)
    except Exception as error:
        return InvariantReport.skipped(f"bad database URL {shown}: {describe(error)}", shown)
    try:
        if event is not None:
            if await db.fetchval("SELECT 1 FROM events WHERE id = $1", event) is None:
                return InvariantReport.skipped(
                    f"the database at {shown} has no event {event}: is it the one the server uses?",
                    shown,
                )
            in_event = await check_invariants(db, event_id=event)
        else:
            in_event = []
        everywhere = await check_invariants(db)
    except Exception as error:
        return InvariantReport.skipped(
            f"cannot check the database at {shown}: {describe(error)}", shown
        )
    finally:
        await db.close()
    return InvariantReport.of(in_event, everywhere, shown)


# --- the run ---------------------------------------------------------------------------------

ProgressHook = Callable[[float, str], None]


async def _ticking(measure: Callable[[], tuple[float, str]], progress: ProgressHook) -> None:
    while True:
        progress(*measure())
        await asyncio.sleep(0.1)


async def _interruptible(load: Coroutine[Any, Any, None], budget: Budget | None) -> bool:
    """Run the load; the first Ctrl-C lets buyers under way finish, a second one cuts them off.
    True if interrupted."""
    task = asyncio.ensure_future(load)
    interrupts = 0

    def on_interrupt() -> None:
        nonlocal interrupts
        interrupts += 1
        if budget is not None and interrupts == 1:
            budget.abort()
        else:
            task.cancel()

    loop = asyncio.get_running_loop()
    installed = False
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is threading.main_thread():
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGINT, on_interrupt)
            installed = True
    try:
        await asyncio.wait({task})
    finally:
        if installed:
            loop.remove_signal_handler(signal.SIGINT)
            signal.signal(signal.SIGINT, previous)
    if not task.cancelled():
        error = task.exception()
        if error is not None:
            raise error
    return interrupts > 0


async def run_plan(
    plan: Plan,
    target: Target,
    *,
    settings: Settings | None = None,
    invariants: bool = True,
    progress: ProgressHook | None = None,
) -> Result:
    """Create the event, run the buyers, check the database, judge. SetupError if it cannot."""
    await check_reachable(target.url)
    event = await create_event(target, plan)
    event_id = str(event["id"])
    ids: list[int] = []
    if plan.scenario in ("one-ticket", "overlap"):
        ids = await event_ticket_ids(target, event_id, request_timeout=plan.timeout)
    recorder = Recorder()
    stage = Stage(plan, event_id, ids, recorder)
    raise_open_files_limit(plan.concurrency)

    budget: Budget | None = None
    done = 0
    if plan.scenario == "one-ticket":
        assert plan.buyers is not None

        def answered() -> None:
            nonlocal done
            done += 1

        async def send(http: httpx.AsyncClient, buyer: int) -> None:
            await scenarios.one_ticket(stage, http, buyer)

        load = rush(
            target.url,
            plan.buyers,
            send,
            concurrency=plan.concurrency,
            request_timeout=plan.timeout,
            on_done=answered,
        )
        total = plan.buyers

        def measure() -> tuple[float, str]:
            return done / total, f"{done} of {total} answered"
    else:
        budget = pool_budget = Budget(
            recorder, buyers=plan.buyers, requests=plan.requests, duration=plan.duration
        )

        async def journey(http: httpx.AsyncClient, buyer: int) -> None:
            if plan.scenario == "overlap":
                await scenarios.overlap(stage, http, buyer)
            elif plan.scenario == "best-available":
                await scenarios.best_available(stage, http, buyer)
            else:
                await scenarios.mixed(stage, pool_budget, http, buyer)

        load = pool(
            target.url, journey, budget, concurrency=plan.concurrency, request_timeout=plan.timeout
        )

        def measure() -> tuple[float, str]:
            return pool_budget.progress(), f"{len(recorder.attempts)} answers"

    recorder.restart_clock()
    ticker = asyncio.create_task(_ticking(measure, progress)) if progress else None
    try:
        interrupted = await _interruptible(load, budget)
    finally:
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
    if progress is not None:
        progress(*measure())

    leftover = await tickets_left(target, event_id, request_timeout=plan.timeout)
    if invariants:
        report = await check_database(target.database_url, event_id, settings=settings)
    else:
        report = InvariantReport.off("--no-invariants")
    attempts = list(recorder.attempts)
    verdict = judge(
        attempts,
        scenario=plan.scenario,
        invariants=report,
        supply=int(event["ticket_count"]),
        hold_seconds=plan.hold_seconds,
    )
    return Result(
        plan=plan,
        url=target.url,
        event=event,
        attempts=attempts,
        summary=summarize(attempts),
        invariants=report,
        verdict=verdict,
        leftover=leftover,
        interrupted=interrupted,
    )


@contextlib.contextmanager
def progress_bar(console: Console, *, enabled: bool) -> Iterator[ProgressHook | None]:
    """A rich progress bar on stderr while the buyers run (none for --json or a pipe)."""
    if not enabled:
        yield None
        return
    with Progress(
        TextColumn("[bold]buyers"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("buyers", total=1000, status="")

        def update(fraction: float, status: str) -> None:
            bar.update(task, completed=fraction * 1000, status=status)

        yield update


def plan_from_args(args: argparse.Namespace) -> Plan:
    return make_plan(
        args.scenario,
        buyers=args.buyers,
        requests=args.requests,
        duration=args.duration,
        concurrency=args.concurrency,
        seats_per_hold=args.seats_per_hold,
        pool=args.pool,
        layout=args.layout,
        hold_seconds=args.hold_seconds,
        seed=args.seed,
        timeout=args.timeout,
        # `--idempotency-keys`; absent from a parser that does not declare it.
        keyed=bool(args.idempotency_keys),
    )


def main(args: argparse.Namespace, settings: Settings) -> int:
    """`boxoffice simulate`: 0 OK, 1 FAIL, 2 cannot run, 130 interrupted while setting up."""
    # No markup: messages and figures hold brackets (`boxoffice[plot]`, ticket lists).
    out = Console(highlight=False, markup=False)
    err = Console(stderr=True, highlight=False, markup=False)

    def say(message: str) -> None:
        err.print(f"boxoffice simulate: {message}", soft_wrap=True)

    try:
        plan = plan_from_args(args)
    except ValueError as error:
        say(str(error))
        return EXIT_SETUP
    if args.plot is not None and not plot_available():
        say(f"--plot needs matplotlib: {PLOT_INSTALL_HINT}")
        return EXIT_SETUP
    if args.url is None and (args.database_url or args.admin_token):
        say("--database-url and --admin-token go with --url (the private server has its own)")
        return EXIT_SETUP

    try:
        with contextlib.ExitStack() as stack:
            if args.url is None:
                target = stack.enter_context(private_server(say))
            else:
                target = Target(
                    args.url.rstrip("/"),
                    args.database_url or settings.database_url,
                    args.admin_token or settings.admin_token,
                )
                if target.database_url is None and not args.no_invariants:
                    say(
                        "WARNING: no database to check the invariants on (give --database-url "
                        "or set DATABASE_URL, or pass --no-invariants): the run will FAIL"
                    )
            say(f"{plan.scenario}: seed {plan.seed}; reservations {plan.path}")
            with progress_bar(err, enabled=not args.json and err.is_terminal) as progress:
                result = asyncio.run(
                    run_plan(
                        plan,
                        target,
                        settings=settings,
                        invariants=not args.no_invariants,
                        progress=progress,
                    )
                )
    except SetupError as error:
        say(str(error))
        return EXIT_SETUP
    except KeyboardInterrupt:
        say("interrupted")
        return EXIT_INTERRUPTED

    if args.json:
        print(json.dumps(to_json(result), indent=2, default=str))
    else:
        render(result, out)
    if result.invariants.status == "skipped":
        say(f"WARNING: the invariant check was SKIPPED: {result.invariants.reason}")
    if args.plot is not None:
        try:
            plot(result, Path(args.plot))
        except (PlotUnavailable, OSError, ValueError) as error:
            say(f"cannot draw the plot: {error}")
            return EXIT_SETUP
        say(f"plot written to {args.plot}")
    return EXIT_OK if result.verdict.ok else EXIT_FAIL
