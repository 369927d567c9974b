"""Best available on one hot event (`FOR UPDATE SKIP LOCKED` in seat order), without and with
an Idempotency-Key, against the distinct-ticket rate and pgbench running the same SQL."""

from ..bench import Bench
from ..common import delta, ms, num, pct, ratio, say, table
from ..load import LoadResult, ReserveBest, other_cpu
from ..pgbench import PgbenchResult, key_variables, keyed_available, pgbench_best_script
from ..plan import HTTP_RATE_CAP, PGBENCH_RATE_CAP
from ..report import Target


async def _pgbench(bench: Bench, clients: int, keyed: bool) -> PgbenchResult | None:
    plan = bench.plan
    path = " keyed" if keyed else ""
    event = await bench.create_event(
        f"bench best available (pgbench{path})",
        plan.tickets_for(PGBENCH_RATE_CAP, plan.duration + plan.warmup),
    )
    script = pgbench_best_script(keyed=keyed)
    variables = {"event_id": str(event.id), **(key_variables(event.id) if keyed else {})}
    await bench.checkpoint()
    try:
        await bench.pgbench_run(
            script,
            clients,
            plan.warmup,
            variables,
            capacity=None,
            label=f"best available{path} c={clients} (warm-up)",
        )
        return await bench.pgbench_run(
            script,
            clients,
            plan.duration,
            # Its own keys: the warm-up's salt and counters would collide with these.
            {**variables, **(key_variables(event.id) if keyed else {})},
            capacity=event.tickets,
            label=f"best available{path} c={clients}",
        )
    except RuntimeError as error:
        bench.report.notes.append(f"best-available{path} pgbench run failed: {error}")
        return None


async def _http(
    bench: Bench, clients: int, size: int, keyed: bool
) -> tuple[LoadResult, int | None]:
    plan = bench.plan
    path = " keyed" if keyed else ""
    event = await bench.create_event(f"bench best available{path}", size)
    await bench.checkpoint()
    await bench.load(ReserveBest(event.id, keyed=keyed), clients, plan.warmup)
    opened = await bench.sessions()
    http = await bench.load(ReserveBest(event.id, keyed=keyed), clients, plan.duration)
    opened = delta(opened, await bench.sessions())
    await bench.invariants(event.id, f"best available{path}")
    return http, opened


async def run(bench: Bench) -> None:
    plan = bench.plan
    clients = plan.best_concurrency
    size = plan.tickets_for(HTTP_RATE_CAP, plan.duration + plan.warmup)
    pg: dict[bool, PgbenchResult | None] = {False: None, True: None}
    http: dict[bool, LoadResult] = {}
    opened: dict[bool, int | None] = {}
    for keyed in (False, True):
        if bench.pgbench is not None and (keyed_available() or not keyed):
            pg[keyed] = await _pgbench(bench, clients, keyed)
    for keyed in (False, True):
        http[keyed], opened[keyed] = await _http(bench, clients, size, keyed)
    rows = []
    for keyed in (False, True):
        result, run_pg = http[keyed], pg[keyed]
        distinct = bench.distinct_rates.get((clients, keyed))
        share = ratio(result.rate, distinct)
        vs_unkeyed = (
            f"HTTP {pct(ratio(result.rate, http[False].rate))}, pgbench "
            f"{pct(ratio(run_pg.tps if run_pg else None, pg[False].tps if pg[False] else None))}"
            if keyed
            else "–"
        )
        rows.append(
            [
                "keyed" if keyed else "unkeyed",
                str(clients),
                num(result.rate),
                pct(share),
                ms(result.p50_ms),
                ms(result.p99_ms),
                ms(result.max_ms),
                result.non_2xx_text(),
                num(run_pg.tps) if run_pg else "–",
                pct(ratio(result.rate, run_pg.tps if run_pg else None)),
                vs_unkeyed,
                "–" if opened[keyed] is None else str(opened[keyed]),
                other_cpu(result),
            ]
        )
        say(
            f"[best available{' keyed' if keyed else ''} c={clients}] HTTP "
            f"{num(result.rate)}/s ({pct(share)} of distinct), p99 {ms(result.p99_ms)}, "
            f"non-2xx {result.non_2xx}; pgbench {num(run_pg.tps) if run_pg else '–'} tps"
            + (f"; keyed ÷ unkeyed: {vs_unkeyed}" if keyed else "")
        )
    bench.report.sections.append(
        "\n".join(
            [
                "## Best available on one hot event",
                "",
                f'Every request asks for `{{"quantity": 1}}` of the same {size:,}-ticket '
                f"event at c={clients} (`FOR UPDATE SKIP LOCKED` in seat order), first "
                "without, then with a fresh random `Idempotency-Key` per request (each on an "
                "event of its own). For comparison: the distinct-ticket HTTP rate at the same "
                "concurrency on the same path, and pgbench running "
                "`boxoffice.reservations.reserve.RESERVE_BEST` (keyed: with the key's claim in the "
                "same statement) on a fresh event.",
                "",
                table(
                    [
                        "path",
                        "clients",
                        "HTTP reservations/s",
                        f"÷ distinct c={clients}",
                        "p50",
                        "p99",
                        "max",
                        "non-2xx",
                        "pgbench tps (same SQL)",
                        "HTTP ÷ pgbench",
                        "keyed ÷ unkeyed",
                        "DB connections opened",
                        "CPU to anything else",
                    ],
                    rows,
                ),
            ]
        )
    )
    plain = http[False]
    distinct = bench.distinct_rates.get((clients, False))
    share = ratio(plain.rate, distinct)
    bench.report.targets.append(
        Target(
            f"Best available at c={clients} on one event: at least 80 % of the "
            "distinct-ticket rate",
            f"{num(plain.rate)}/s ÷ {num(distinct)}/s = {pct(share)}"
            if distinct
            else f"{num(plain.rate)}/s (no distinct-ticket run to compare)",
            share >= 0.80 if share is not None else None,
        )
    )
