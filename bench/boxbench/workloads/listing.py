"""Listing pages: keyset pages of 100 from events of growing size, one connection."""

import asyncio

from ..bench import Bench
from ..common import ms, num, pct, say, seconds, table
from ..load import ListPages, other_cpu
from ..report import Target


async def run(bench: Bench) -> None:
    plan = bench.plan
    rows: list[list[str]] = []
    p50s: dict[int, float] = {}
    p99s: dict[int, float] = {}
    for size in plan.listing_sizes:
        event = await bench.create_event(f"bench listing {size}", size)
        # Ten cursors from 90 % to 99 % of the way through the event.
        positions = [min(int(size * (0.90 + 0.01 * k)), size - 101) for k in range(10)]
        cursors = await bench.conn.fetch(
            "SELECT id FROM tickets WHERE event_id = $1 AND position = ANY($2::int[])"
            " ORDER BY position",
            event.id,
            positions,
        )
        paths = tuple(f"/events/{event.id}/tickets?limit=100&after={row['id']}" for row in cursors)
        for path in paths:
            page = await bench.http.get(path)
            if page.status_code != 200 or len(page.json()["items"]) != 100:
                raise RuntimeError(f"GET {path} answered {page.status_code}: {page.text[:200]}")
        await bench.checkpoint()
        await bench.autovacuum_idle()
        done = asyncio.Event()
        watch = asyncio.create_task(bench.autovacuum_share(done))
        result = await bench.load(ListPages(paths), 1, plan.listing_duration)
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
                other_cpu(result),
                pct(vacuuming),
            ]
        )
        say(
            f"[listing {size:,}] p50 {ms(result.p50_ms)}, p99 {ms(result.p99_ms)}, "
            f"{num(result.rate)} pages/s",
        )
    bench.report.sections.append(
        "\n".join(
            [
                "## Listing pages",
                "",
                "`GET /events/{id}/tickets?limit=100&after=<cursor>` with cursors 90–99 % of "
                f"the way through the event, one connection (c=1) for "
                f"{seconds(plan.listing_duration)}: with nothing queued, the latency wrk "
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
        bench.report.targets.append(
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
        bench.report.targets.append(
            Target(
                f"Listing: flat as the event grows (p50 at {large:,} within 25 % or 1 ms of "
                f"p50 at {small:,})",
                f"{ms(p50s[small])} → {ms(p50s[large])}",
                growth <= max(0.25 * p50s[small], 1.0),
            )
        )
