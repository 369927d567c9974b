"""The HTTP load through wrk: a Lua script per measurement, written into the run's folder,
that counts statuses per thread and prints one JSON line of figures at the end."""

import asyncio
import json
import re
import secrets
import signal
import uuid
from pathlib import Path
from string import Template

from .cpu import cpu_snapshot
from .load import (
    LOAD_TIMEOUT_SECONDS,
    CpuSince,
    ListPages,
    LoadResult,
    LoadSpec,
    ReserveBest,
    ReserveChosen,
    capacity_of,
    lanes_for,
)

LUA_COMMON = """-- written by bench/run.py (boxbench.wrk)
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
    '"p50_us": %.0f, "p90_us": %.0f, "p99_us": %.0f, "max_us": %.0f}\\n',
    summary.requests, summary.duration, table.concat(parts, ", "),
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""

# A random (version 4) UUID per request, from each thread's own generator, seeded from the
# run's seed and the thread (LuaJIT has no UUIDs; 16-bit draws keep to its integer range).
LUA_IDEMPOTENCY_KEY = Template("""
local seeded = false

local function idempotency_key()
  if not seeded then
    math.randomseed($seed + thread_index * 7919)
    seeded = true
  end
  local r = math.random
  return string.format("%04x%04x-%04x-4%03x-%04x-%04x%04x%04x",
    r(0, 0xffff), r(0, 0xffff), r(0, 0xffff), r(0, 0xfff), r(0x8000, 0xbfff),
    r(0, 0xffff), r(0, 0xffff), r(0, 0xffff))
end
""")
LUA_SET_KEY = '  headers["Idempotency-Key"] = idempotency_key()\n'

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
$set_key  return wrk.format("POST", path, headers, body)
end
""")

LUA_RESERVE_BEST = Template("""
wrk.method = "POST"
wrk.path = "/events/$event_id/reservations"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"quantity": 1, "customer": "bench-best"}'
""")

LUA_RESERVE_BEST_KEYED = Template("""
local path = "/events/$event_id/reservations"
local headers = {["Content-Type"] = "application/json"}
local body = '{"quantity": 1, "customer": "bench-best"}'

function request()
$set_key  return wrk.format("POST", path, headers, body)
end
""")

LUA_LIST_PAGES = Template("""
local paths = {$paths}
local i = 0

function request()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
""")


def lua_script(spec: LoadSpec, lanes: int) -> str:
    keyed = isinstance(spec, ReserveChosen | ReserveBest) and spec.keyed
    prelude = LUA_IDEMPOTENCY_KEY.substitute(seed=secrets.randbelow(2**30)) if keyed else ""
    set_key = LUA_SET_KEY if keyed else ""
    if isinstance(spec, ReserveChosen):
        body = LUA_RESERVE_CHOSEN.substitute(
            event_id=spec.tickets.event_id,
            first=spec.tickets.first,
            per_lane=spec.tickets.count // lanes,
            set_key=set_key,
        )
    elif isinstance(spec, ReserveBest):
        template = LUA_RESERVE_BEST_KEYED if keyed else LUA_RESERVE_BEST
        body = template.substitute(event_id=spec.event_id, set_key=set_key)
    else:
        assert isinstance(spec, ListPages)
        body = LUA_LIST_PAGES.substitute(paths=", ".join(f'"{p}"' for p in spec.paths))
    return LUA_COMMON + prelude + body


async def wrk_load(
    wrk: Path,
    workdir: Path,
    base_url: str,
    spec: LoadSpec,
    connections: int,
    duration: float,
    stop: asyncio.Event | None,
    cpu_since: CpuSince,
    notes: list[str],
) -> LoadResult:
    """wrk for `duration` (or until `stop`: SIGINT, and wrk prints what it measured)."""
    lanes = lanes_for(connections)
    script = workdir / f"load-{uuid.uuid4().hex[:8]}.lua"
    script.write_text(lua_script(spec, lanes))
    seconds = 600 if stop is not None else max(1, round(duration))
    command = [str(wrk), "-t", str(lanes), "-c", str(connections)]
    command += ["-d", f"{seconds}s", "--timeout", f"{LOAD_TIMEOUT_SECONDS}s", "--latency"]
    command += ["-s", str(script), base_url]
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
    if match and int(match.group(1)) != sum(n for status, n in statuses.items() if status >= 400):
        notes.append(
            f"wrk's Non-2xx count ({match.group(1)}) differs from its Lua status count "
            f"({statuses})."
        )
    return LoadResult(
        seconds=data["duration_us"] / 1e6,
        statuses=statuses,
        socket_errors=int(data["connect"] + data["read"] + data["write"]),
        timeouts=int(data["timeout"]),
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        cpu=await cpu_since(before, after),
        capacity=capacity_of(spec),
    )
