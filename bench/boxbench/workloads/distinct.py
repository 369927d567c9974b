"""Reserving distinct tickets (chosen by id): HTTP against pgbench, same SQL, same run, each
both without and with an Idempotency-Key."""

from ..bench import Bench, TicketPool
from ..common import BENCH_DIR, cpu_ms, delta, ms, num, pct, ratio, say, seconds, table
from ..load import LoadResult, ReserveChosen
from ..pgbench import PgbenchResult, key_variables, keyed_available, pgbench_chosen_script
from ..plan import HTTP_RATE_CAP, PGBENCH_RATE_CAP
from ..report import Target
from ..server import Server

# The floor's server: uvicorn as `boxoffice serve` runs it (httptools), given the same
# `--port`, `--workers` and `--log-level`.
FLOOR_PROGRAM = (
    "-m",
    "uvicorn",
    "boxbench.floor:app",
    "--app-dir",
    str(BENCH_DIR),
    "--http",
    "httptools",
)

PATHS = (False, True)  # unkeyed, keyed


def _path(keyed: bool) -> str:
    return "keyed" if keyed else "unkeyed"


async def _pgbench(
    bench: Bench,
    pool: TicketPool,
    clients: int,
    keyed: bool,
    label: str,
    rate: float | None = None,
) -> PgbenchResult | None:
    plan = bench.plan
    script = pgbench_chosen_script(keyed=keyed)
    warm = await pool.take(plan.tickets_for(PGBENCH_RATE_CAP, plan.warmup))
    tickets = await pool.take(plan.tickets_for(PGBENCH_RATE_CAP, plan.duration))
    await bench.checkpoint()
    try:
        for run, seconds_, capacity in (
            (warm, plan.warmup, None),
            (tickets, plan.duration, (tickets.count // clients) * clients),
        ):
            variables = {
                "event_id": str(run.event_id),
                "first_ticket": str(run.first),
                "per_client": str(run.count // clients),
                "tx": "0",
                **(key_variables(run.event_id) if keyed else {}),
            }
            result = await bench.pgbench_run(
                script,
                clients,
                seconds_,
                variables,
                capacity=capacity,
                label=label if capacity is not None else f"{label} (warm-up)",
                rate=rate,
            )
    except RuntimeError as error:
        bench.report.errors.append(f"{label}: {error}")
        return None
    if result.wrapped:
        bench.report.notes.append(
            f"{label}: pgbench ran past its {result.capacity:,} tickets and asked again "
            "for tickets it already held (it cannot branch on the answer), so some "
            "of its transactions did less work than a reservation."
        )
    if result.failed:
        bench.report.notes.append(f"{label}: {result.failed} pgbench transactions failed.")
    return result


async def _http(
    bench: Bench, pool: TicketPool, clients: int, keyed: bool, label: str
) -> tuple[LoadResult, int | None]:
    plan = bench.plan
    warm = await pool.take(plan.tickets_for(HTTP_RATE_CAP, plan.warmup))
    tickets = await pool.take(plan.tickets_for(HTTP_RATE_CAP, plan.duration))
    await bench.checkpoint()
    await bench.load(ReserveChosen(warm, keyed=keyed), clients, plan.warmup)
    opened = await bench.sessions()
    http = await bench.load(ReserveChosen(tickets, keyed=keyed), clients, plan.duration)
    opened = delta(opened, await bench.sessions())
    if http.exhausted:
        bench.report.notes.append(f"{label}: HTTP ran out of its {tickets.count:,} tickets.")
    return http, opened


async def _floor(bench: Bench, pool: TicketPool, clients: int) -> LoadResult | None:
    """The same unkeyed load against boxbench.floor (bare FastAPI + asyncpg, the service's
    statement and schemas), with as many workers: the CPU a reservation cannot go below
    on this framework and driver."""
    plan = bench.plan
    warm = await pool.take(plan.tickets_for(HTTP_RATE_CAP, plan.warmup))
    tickets = await pool.take(plan.tickets_for(HTTP_RATE_CAP, plan.duration))
    floor = Server(
        bench.database.url, bench.admin_token, plan.workers, bench.workdir, program=FLOOR_PROGRAM
    )
    service = bench.server
    try:
        await floor.start()
    except RuntimeError as error:
        bench.report.errors.append(f"floor: {error}\n{floor.log_tail()}")
        return None
    bench.server = floor  # the load and its CPU figures follow bench.server
    try:
        await bench.checkpoint()
        await bench.load(ReserveChosen(warm, keyed=False), clients, plan.warmup)
        return await bench.load(ReserveChosen(tickets, keyed=False), clients, plan.duration)
    finally:
        bench.server = service
        await floor.stop()


async def run(bench: Bench) -> None:
    plan = bench.plan
    pool = TicketPool(bench, "distinct")
    rows: list[list[str]] = []
    keyed_rows: list[list[str]] = []
    cpu_rows: list[list[str]] = []
    statement_tables: dict[bool, tuple[list[str], list[list[str]]]] = {}
    pgbench_tps: dict[int, float] = {}
    # PostgreSQL CPU per reservation: HTTP's, and pgbench's when paced to HTTP's rate.
    db_cpu: dict[int, tuple[float, float]] = {}
    app_cpu: dict[int, float] = {}
    pg_keyed = bench.pgbench is not None and keyed_available()
    for clients in plan.concurrencies:
        pg: dict[bool, PgbenchResult | None] = {False: None, True: None}
        http: dict[bool, LoadResult] = {}
        opened: dict[bool, int | None] = {}
        for keyed in PATHS:
            label = f"distinct c={clients}" + (" keyed" if keyed else "")
            if bench.pgbench is not None and (pg_keyed or not keyed):
                result = pg[keyed] = await _pgbench(bench, pool, clients, keyed, label)
                if result is not None:
                    labels, statement_rows = statement_tables.setdefault(keyed, ([], []))
                    labels[:] = [f"`{name}`" for name, _ in result.statements_ms]
                    statement_rows.append(
                        [str(clients), *(f"{value:.3f}" for _, value in result.statements_ms)]
                    )
        for keyed in PATHS:
            label = f"distinct c={clients}" + (" keyed" if keyed else "")
            http[keyed], opened[keyed] = await _http(bench, pool, clients, keyed, label)
            bench.distinct_rates[clients, keyed] = http[keyed].rate
        plain, keyed_http = http[False], http[True]
        paced = None
        if bench.pgbench is not None and plain.rate > 0:
            # PostgreSQL spends more CPU per transaction at a lower rate (fewer commits share a
            # WAL flush, backends sleep and wake per statement): pgbench paced to HTTP's rate
            # tells the service's own cost apart from the rate's.
            paced = await _pgbench(
                bench, pool, clients, False, f"distinct c={clients} paced", rate=plain.rate
            )
        bench.distinct_p99[clients] = plain.p99_ms
        if pg[False] is not None:
            pgbench_tps[clients] = pg[False].tps
        pg_tps = {k: (r.tps if r is not None else None) for k, r in pg.items()}
        http_share = ratio(plain.rate, pg_tps[False])
        rows.append(
            [
                str(clients),
                num(pg_tps[False]) if pg_tps[False] is not None else "–",
                num(plain.rate),
                pct(http_share),
                ms(plain.p50_ms),
                ms(plain.p90_ms),
                ms(plain.p99_ms),
                ms(plain.max_ms),
                plain.non_2xx_text(),
                str(plain.server_errors),
                "–" if opened[False] is None else str(opened[False]),
            ]
        )
        keyed_rows.append(
            [
                str(clients),
                num(plain.rate),
                num(keyed_http.rate),
                pct(ratio(keyed_http.rate, plain.rate)),
                ms(keyed_http.p50_ms),
                ms(keyed_http.p99_ms),
                keyed_http.non_2xx_text(),
                str(keyed_http.server_errors),
                num(pg_tps[False]) if pg_tps[False] is not None else "–",
                num(pg_tps[True]) if pg_tps[True] is not None else "–",
                pct(ratio(pg_tps[True], pg_tps[False])),
                pct(ratio(keyed_http.rate, pg_tps[True])),
            ]
        )
        for keyed in PATHS:
            suffix = " keyed" if keyed else ""
            result = pg[keyed]
            runs = [
                ("pgbench", result.cpu if result else None, result.transactions if result else 0),
                ("HTTP", http[keyed].cpu, http[keyed].ok),
            ]
            if not keyed and paced is not None:
                runs.append(("pgbench at HTTP's rate,", paced.cpu, paced.transactions))
            for name, run_cpu, count in runs:
                if run_cpu is None:
                    continue
                each = run_cpu.per_request_ms(count)
                if not keyed and name == "HTTP" and each["app"] is not None:
                    app_cpu[clients] = each["app"]
                if not keyed and paced is not None and each["db"] is not None:
                    if name == "HTTP":
                        db_cpu[clients] = (each["db"], db_cpu.get(clients, (0.0, 0.0))[1])
                    elif name.startswith("pgbench at"):
                        db_cpu[clients] = (db_cpu.get(clients, (0.0, 0.0))[0], each["db"])
                cpu_rows.append(
                    [
                        f"{name}{suffix} c={clients}",
                        cpu_ms(each["app"]),
                        cpu_ms(each["db"]),
                        cpu_ms(each["client"]),
                        pct(run_cpu.busy),
                        pct(run_cpu.other),
                    ]
                )
        say(
            f"[distinct c={clients}] pgbench {num(pg_tps[False]) if pg_tps[False] else '–'} tps, "
            f"HTTP {num(plain.rate)}/s ({pct(http_share)}), p50 {ms(plain.p50_ms)}, p99 "
            f"{ms(plain.p99_ms)}, non-2xx {plain.non_2xx}; keyed: HTTP {num(keyed_http.rate)}/s "
            f"({pct(ratio(keyed_http.rate, plain.rate))} of unkeyed), p99 "
            f"{ms(keyed_http.p99_ms)}, non-2xx {keyed_http.non_2xx}; pgbench "
            f"{num(pg_tps[True]) if pg_tps[True] else '–'} tps "
            f"({pct(ratio(pg_tps[True], pg_tps[False]))} of unkeyed)"
        )
    c = plan.target_concurrency
    floor = await _floor(bench, pool, c) if c in plan.concurrencies else None
    floor_app = None
    if floor is not None and floor.cpu is not None:
        floor_app = floor.cpu.per_request_ms(floor.ok)["app"]
        cpu_rows.append(
            [
                f"floor (bare FastAPI + asyncpg) c={c}",
                cpu_ms(floor_app),
                cpu_ms(floor.cpu.per_request_ms(floor.ok)["db"]),
                cpu_ms(floor.cpu.per_request_ms(floor.ok)["client"]),
                pct(floor.cpu.busy),
                pct(floor.cpu.other),
            ]
        )
        say(f"[distinct c={c}] floor {num(floor.rate)}/s, app CPU {cpu_ms(floor_app)}")
    section = [
        "## Reserving distinct tickets: HTTP against pgbench, same SQL, same run",
        "",
        "Every request holds one ticket nobody else asks for (`POST /events/{id}/reservations`"
        ' `{"ticket_ids": [id]}`); each wrk thread walks its own ticket range. Right before '
        "each HTTP measurement pgbench runs the service's own statements "
        "(`boxoffice.reservations.reserve.RESERVE_CHOSEN`, `-M prepared`, one statement as the "
        "service sends it, keyed or not) at the same client count against "
        "the same database server: the raw limit of the database for this work. "
        f"{seconds(plan.duration)} each; before each, a CHECKPOINT and then a "
        f"{seconds(plan.warmup)} warm-up of the same kind (pgbench or HTTP). "
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
        "",
        "The keyed path, measured right after the unkeyed one at each client count: every "
        "request carries a fresh random `Idempotency-Key` (a UUID, as the buyer's web page "
        "sends), so the key's claim, the hold and the stored answer share one transaction. "
        + (
            "pgbench runs the same statements the keyed path adds (boxoffice.idempotency's "
            "claim and answer, in one transaction with the reservation)."
            if pg_keyed
            else "pgbench runs unkeyed only (no keyed script)."
        ),
        "",
        table(
            [
                "clients",
                "HTTP unkeyed/s",
                "HTTP keyed/s",
                "keyed ÷ unkeyed",
                "keyed p50",
                "keyed p99",
                "keyed non-2xx",
                "keyed 5xx",
                "pgbench unkeyed tps",
                "pgbench keyed tps",
                "keyed ÷ unkeyed (pgbench)",
                "keyed HTTP ÷ keyed pgbench",
            ],
            keyed_rows,
        ),
    ]
    if cpu_rows:
        section += [
            "",
            "Where the CPU goes: CPU time per reservation, by process group (app = "
            "`boxoffice serve` and its workers, PostgreSQL = the benchmark's database "
            "server, client = wrk or pgbench), how busy the whole machine was, and how much "
            "of it went to anything else (other processes, the kernel's loopback work). "
            "“pgbench at HTTP's rate”: pgbench again, unkeyed, throttled (`-R`) to the rate "
            "HTTP just reached with the same clients: PostgreSQL's CPU per transaction grows "
            "as the rate falls, so this is the figure HTTP's PostgreSQL CPU is compared with. "
            "“floor”: the same unkeyed load, right after, against `bench/boxbench/floor.py`, "
            "the reservation endpoint on bare FastAPI + asyncpg with nothing of boxoffice's "
            "but its statement and schemas (same workers, same uvicorn protocol): the server "
            "CPU a reservation cannot go below on this framework and driver"
            + (
                f" ({num(floor.rate)} reservations/s, non-2xx {floor.non_2xx_text()})"
                if floor
                else ""
            )
            + ":",
            "",
            table(
                ["run", "app", "PostgreSQL", "client", "machine busy", "anything else"],
                cpu_rows,
            ),
        ]
    for keyed, (labels, statement_rows) in sorted(statement_tables.items()):
        section += [
            "",
            f"pgbench's latency per statement, {_path(keyed)} (ms, `-r`):",
            "",
            table(["clients", *labels], statement_rows),
        ]
    bench.report.sections.append("\n".join(section))
    if (c, False) in bench.distinct_rates:
        rate, tps = bench.distinct_rates[c, False], pgbench_tps.get(c)
        bench.report.targets.append(
            Target(
                f"Distinct tickets, HTTP `--workers {plan.workers}`, c={c}: at least 50 % of "
                "pgbench's tps for the same SQL, same run",
                f"{num(rate)}/s ÷ {num(tps)} tps = {pct(rate / tps)}" if tps else "no pgbench",
                rate / tps >= 0.50 if tps else None,
            )
        )
        if (c, True) in bench.distinct_rates:
            keyed_rate = bench.distinct_rates[c, True]
            bench.report.targets.append(
                Target(
                    f"Distinct tickets, c={c}: the keyed path at least 80 % of the unkeyed rate",
                    f"{num(keyed_rate)}/s ÷ {num(rate)}/s = {pct(keyed_rate / rate)}",
                    keyed_rate / rate >= 0.80 if rate else None,
                )
            )
        if c in app_cpu:
            bench.report.targets.append(
                Target(
                    f"Distinct tickets, c={c}: the server's CPU per reservation at most 0.35 ms",
                    cpu_ms(app_cpu[c])
                    + (
                        f" (the floor, bare FastAPI + asyncpg, same run: {cpu_ms(floor_app)}; "
                        f"the service {app_cpu[c] / floor_app:.2f}×)"
                        if floor_app
                        else ""
                    ),
                    app_cpu[c] <= 0.35,
                )
            )
        if c in db_cpu and all(db_cpu[c]):
            http_db, paced_db = db_cpu[c]
            bench.report.targets.append(
                Target(
                    f"Distinct tickets, c={c}: PostgreSQL CPU per HTTP reservation within 20 % "
                    "of pgbench's at the same rate",
                    f"{cpu_ms(http_db)} vs {cpu_ms(paced_db)} ({http_db / paced_db - 1:+.0%})",
                    http_db <= 1.2 * paced_db,
                )
            )
        bench.report.targets.append(
            Target(
                f"Distinct tickets, c={c}: p99 under 50 ms",
                ms(bench.distinct_p99[c]),
                bench.distinct_p99[c] < 50,
            )
        )
