#!/usr/bin/env python3
"""Beyond one machine: what the load balancer and a second API host cost, and what synchronous
replication costs per commit, on deploy/ha's cluster (docs/deploy.md). Needs root.

    .venv/bin/python bench/ha.py                  # 10 s a point, c=16 and 64
    .venv/bin/python bench/ha.py --seconds 3      # smoke run

It brings the cluster up (deploy/ha/up: three Patroni nodes with synchronous replication,
HAProxy, two API hosts of `boxoffice serve --workers 2`, each in its own network namespace),
then, on a fresh event for each point, holds distinct chosen seats (one per request, as
bench/run.py's `distinct` workload):

- HTTP straight to one API host (one `serve`, as without a load balancer), through HAProxy to
  that host alone (the balancer's own cost), and through HAProxy to both hosts; the peak
  number of client sessions on the leader while each ran;
- pgbench on the same statement (boxoffice.reservations.reserve.RESERVE_CHOSEN, imported)
  through HAProxy's leader port, at c=1 and each --concurrency: with the cluster's synchronous
  commit, and with `synchronous_commit=local` (the commit waits for the primary's own disk
  only), alternated, twice each.

Everything shares this machine's two cores: the point is the overhead and the correctness,
not a speed-up. The cluster is taken down at the end.
"""

import argparse
import asyncio
import os
import secrets
import shutil
import sys
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from boxbench.common import num, table
from boxbench.cpu import CpuSnapshot, CpuUsage, cpu_snapshot, cpu_usage
from boxbench.load import LoadResult, ReserveChosen, TicketRange, python_load
from boxbench.pgbench import pgbench_chosen_script, pgbench_env, run_pgbench

from boxoffice.config import Settings
from boxoffice.drill.cluster import API_URL, LEADER_URL, Cluster, node_address

PGBENCH = Path("/usr/lib/postgresql/15/bin/pgbench")
# deploy/ha's load balancer in front of api1 alone.
BALANCED_ONE_HOST = "http://127.0.0.1:8081"


async def cpu_since(before: CpuSnapshot, after: CpuSnapshot) -> CpuUsage:
    return cpu_usage(before, after, None, None, cpu_snapshot())


async def new_event(admin_token: str, seats: int) -> tuple[uuid.UUID, int]:
    """A fresh event of `seats` seats; its id and first ticket id."""
    per_row = 100
    body = {
        "name": "bench/ha.py",
        "starts_at": (datetime.now(UTC) + timedelta(days=30)).isoformat(),
        "sections": [
            {"name": "Stalls", "rows": seats // per_row, "seats_per_row": per_row, "price": 2500}
        ],
    }
    async with httpx.AsyncClient(base_url=API_URL, timeout=60) as http:
        response = await http.post(
            "/events", json=body, headers={"Authorization": f"Bearer {admin_token}"}
        )
        response.raise_for_status()
        event_id = uuid.UUID(response.json()["id"])
    conn = await asyncpg.connect(LEADER_URL)
    try:
        first = await conn.fetchval("SELECT min(id) FROM tickets WHERE event_id = $1", event_id)
    finally:
        await conn.close()
    return event_id, int(first)


async def peak_sessions(stop: asyncio.Event) -> int:
    """The most client sessions on the leader while the load ran (sampled every 0.2 s)."""
    conn = await asyncpg.connect(LEADER_URL)
    peak = 0
    try:
        while not stop.is_set():
            count = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
            )
            peak = max(peak, int(count))
            await asyncio.sleep(0.2)
    finally:
        await conn.close()
    return peak


async def http_point(url: str, admin_token: str, clients: int, seconds: float) -> dict[str, Any]:
    event_id, first = await new_event(admin_token, 20_000)
    spec = ReserveChosen(TicketRange(event_id, first, 20_000))
    stop = asyncio.Event()
    sessions = asyncio.create_task(peak_sessions(stop))
    result: LoadResult = await python_load(url, spec, clients, seconds, None, cpu_since)
    stop.set()
    return {
        "rate": result.rate,
        "p99_ms": result.p99_ms,
        "non_2xx": result.non_2xx_text(),
        "errors": result.socket_errors + result.timeouts,
        "server_errors": result.server_errors,
        "peak_sessions": await sessions,
        "exhausted": result.exhausted,
    }


async def pgbench_point(
    workdir: Path, admin_token: str, clients: int, seconds: float, commit: str
) -> float:
    event_id, first = await new_event(admin_token, 40_000)
    url = LEADER_URL
    settings = Settings(database_url=url)
    script = pgbench_chosen_script()
    variables = {
        "event_id": str(event_id),
        "first_ticket": str(first),
        "per_client": str(40_000 // clients),
    }
    if commit == "local":
        # The URL's options replace pgbench_env's PGOPTIONS: carry those too.
        options = pgbench_env(settings)["PGOPTIONS"] + " -c synchronous_commit=local"
        url = f"{LEADER_URL}?options={quote(options)}"
    result, _ = await run_pgbench(
        PGBENCH, workdir, url, settings, script, clients, seconds, variables, None, cpu_since
    )
    return result.tps


async def measure(args: argparse.Namespace, workdir: Path, admin_token: str) -> list[Any]:
    http_rows = []
    one_host = f"http://{node_address('api1')}:8000"
    for clients in args.concurrency:
        points = []
        for url in (one_host, BALANCED_ONE_HOST, API_URL):
            points.append(await http_point(url, admin_token, clients, args.seconds))
        http_rows.append((clients, *points))
        print(f"c={clients}: {points}", file=sys.stderr)
    commit_rows = []
    for clients in (1, *args.concurrency):
        # Alternated, twice each: the two modes see the same machine, in turn.
        runs: dict[str, list[float]] = {"on": [], "local": []}
        for _ in range(2):
            for commit in ("on", "local"):
                tps = await pgbench_point(workdir, admin_token, clients, args.seconds, commit)
                runs[commit].append(tps)
        commit_rows.append((clients, runs["on"], runs["local"]))
        print(f"pgbench c={clients}: {runs}", file=sys.stderr)
    return [http_rows, commit_rows]


def main(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="boxoffice-bench-ha-"))
    workdir.chmod(0o755)  # the nodes run as `postgres`
    admin_token = secrets.token_urlsafe(24)
    env = {
        **os.environ,
        "BOXOFFICE_HA_DIR": str(workdir / "ha"),
        "ADMIN_TOKEN": admin_token,
        "SERVER_SECRET": secrets.token_urlsafe(32),
        "RATE_LIMIT_RESERVATIONS_PER_MINUTE": "0",
        "RATE_LIMIT_QUEUE_PER_MINUTE": "0",
    }
    cluster = Cluster(workdir / "ha", env)
    print("bench/ha.py: bringing the cluster up", file=sys.stderr)
    try:
        cluster.up(api_hosts=2, workers=args.workers)
        http_rows, commit_rows = asyncio.run(measure(args, workdir, admin_token))
    finally:
        cluster.down()
        shutil.rmtree(workdir, ignore_errors=True)

    def holds(point: dict[str, Any]) -> str:
        return f"{num(point['rate'])}/s, p99 {point['p99_ms']:.0f} ms"

    print("HTTP: holds of distinct seats (one per request)\n")
    print(
        table(
            [
                "c",
                "one serve (api1 directly)",
                "HAProxy → api1",
                "HAProxy → api1 + api2",
                "2 hosts / 1 serve",
                "peak sessions on the leader (1 serve / 2 hosts)",
            ],
            [
                (
                    str(c),
                    holds(direct),
                    holds(one),
                    holds(both),
                    f"{both['rate'] / direct['rate']:.0%}",
                    f"{direct['peak_sessions']} / {both['peak_sessions']}",
                )
                for c, direct, one, both in http_rows
            ],
        )
    )
    print("\npgbench on the hold statement through HAProxy's leader port (two runs each)\n")
    print(
        table(
            [
                "c",
                "synchronous commit",
                "synchronous_commit=local",
                "sync / local",
                "per commit (sync − local)",
            ],
            [
                (
                    str(c),
                    " / ".join(f"{num(t)} tps" for t in on),
                    " / ".join(f"{num(t)} tps" for t in local),
                    f"{sum(on) / sum(local):.0%}",
                    f"{1000 * c * (2 / sum(on) - 2 / sum(local)):+.2f} ms",
                )
                for c, on, local in commit_rows
            ],
        )
    )
    problems = [
        f"c={row[0]}: {point['non_2xx']} non-2xx, {point['errors']} errors"
        for row in http_rows
        for point in row[1:]
        if point["errors"] or point["exhausted"] or point["server_errors"]
    ]
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--workers", type=int, default=2, help="workers per API host")
    sys.exit(main(parser.parse_args()))
