"""Where the CPU goes (Linux /proc; None elsewhere): the app, PostgreSQL, the client and
anything else, over one measurement."""

import asyncio
import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

from .common import read_text


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
        first = read_text("/proc/stat").splitlines()[0].split()
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
