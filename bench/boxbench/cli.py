"""The command line: `.venv/bin/python bench/run.py [options]`."""

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from .bench import Bench
from .common import DEFAULT_OUTPUT, pct, read_text, say
from .cpu import machine_busy
from .database import Database, benchmark_database
from .machine import find_pgbench
from .plan import WORKLOADS, Plan
from .report import Report, render
from .sections import keep_sections
from .workloads import STEPS


async def run_benchmarks(plan: Plan, database: Database, workdir: Path) -> Report:
    wrk_path = shutil.which("wrk") if plan.client == "wrk" else None
    if plan.client == "wrk" and wrk_path is None:
        say("bench: wrk not found (apt-get install wrk); using asyncio + httpx")
    pgbench = find_pgbench()
    if pgbench is None:
        say("bench: pgbench not found; no raw-limit figures")
    bench = Bench(plan, database, workdir, Path(wrk_path) if wrk_path else None, pgbench)
    try:
        await bench.open()
        await bench.collect_facts()
        busy = await machine_busy()
        bench.report.facts["other load"] = (
            f"{pct(busy)} of the machine's CPU was busy in the 2 s before the run started"
        )
        if busy is not None and busy > 0.15:
            say(f"bench: warning: the machine is {pct(busy)} busy with other work")
            bench.report.notes.append(
                f"The machine was {pct(busy)} busy with other work when the run started: "
                "the figures are lower than on an idle machine."
            )
        for name in WORKLOADS:
            if name not in plan.workloads:
                continue
            say(f"bench: workload {name}")
            try:
                await STEPS[name](bench)
            except Exception as error:
                message = f"{name}: {type(error).__name__}: {error}"
                bench.report.errors.append(message)
                say(f"bench: {message}\n{bench.server.log_tail()}", file=sys.stderr)
                if not bench.server.running:
                    await bench.server.start()
        if bench.most_other > 0.15:
            bench.report.notes.insert(
                0,
                f"**Other work shared the machine during the run**: up to "
                f"{pct(bench.most_other)} of its CPU went to processes that are not part of the "
                "benchmark (see the “anything else” columns); figures measured then are low.",
            )
    finally:
        await bench.close()
    return bench.report


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark boxoffice: HTTP against pgbench with the same SQL, and the "
        "hot-ticket, best-available, listing and sweep workloads; writes bench/RESULTS.md."
    )
    parser.add_argument("--quick", action="store_true", help="short smoke run (~70 s)")
    parser.add_argument(
        "--duration", type=float, help="seconds per measurement (default 10; 3 with --quick)"
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("TEST_DATABASE_URL"),
        help="a PostgreSQL server to use (a throwaway database is created there and dropped "
        "after); default: TEST_DATABASE_URL, else a private embedded PostgreSQL",
    )
    parser.add_argument(
        "--only",
        help=f"comma-separated workloads to run (default all: {','.join(WORKLOADS)})",
    )
    parser.add_argument(
        "--client",
        choices=("wrk", "python"),
        default="wrk",
        help="HTTP load generator (python: asyncio + httpx; also used when wrk is missing)",
    )
    parser.add_argument("--workers", type=int, default=2, help="server workers (default 2)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="results file")
    parser.add_argument(
        "--fail-on-missed-targets",
        action="store_true",
        help="exit 1 when a target is not met (default: only when a workload fails)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    workloads = tuple(WORKLOADS)
    if args.only:
        wanted = {w.strip() for w in args.only.split(",") if w.strip()}
        unknown = wanted - set(WORKLOADS)
        if unknown:
            print(f"bench: unknown workloads {sorted(unknown)}", file=sys.stderr)
            return 2
        workloads = tuple(w for w in WORKLOADS if w in wanted)
    duration = args.duration or (3.0 if args.quick else 10.0)
    plan = Plan(
        quick=args.quick,
        duration=duration,
        warmup=1.0 if args.quick else 2.0,
        listing_duration=2.0 if args.quick else max(2.0, duration / 2),
        workloads=workloads,
        client=args.client,
        workers=args.workers,
        sweep_in_server=not args.quick,
    )
    started = datetime.now(UTC)
    clock = time.perf_counter()
    # The embedded server runs as its own system user when we are root: the folder must be
    # one it may enter, so not a private pytest-style one.
    with (
        tempfile.TemporaryDirectory(prefix="boxoffice-bench-", ignore_cleanup_errors=True) as tmp,
        benchmark_database(args.database_url, Path(tmp)) as database,
    ):
        report = asyncio.run(run_benchmarks(plan, database, Path(tmp)))
    text = render(report, started, time.perf_counter() - clock)
    # Sections other commands wrote (bench/onsale.py's) stay.
    text = keep_sections(read_text(args.output), text)
    args.output.write_text(text)
    print("\n" + text)
    print(f"bench: wrote {args.output}")
    if report.errors:
        return 1
    if args.fail_on_missed_targets and any(t.met is False for t in report.targets):
        return 1
    return 0
