"""boxoffice benchmarks, one module per part; `bench/run.py` runs them all.

    plan       what to run: the workloads, durations, ticket budgets
    common     progress lines, Markdown tables, figure formats, percentiles
    machine    the machine's facts, the git revision, where pgbench is
    cpu        where the CPU went (Linux /proc)
    database   a private embedded PostgreSQL, or a throwaway database on a given server
    server     `boxoffice serve` under test (boxoffice.serving's ServeProcess)
    load       HTTP load: what to send, the asyncio + httpx client, the result
    wrk        the same load through wrk and its Lua scripts
    pgbench    the service's own SQL through pgbench (plain and keyed)
    bench      the run's shared state: server, connections, events, invariants
    workloads  distinct, hot, best, listing, sweep: one module each
    report     the Report and the RESULTS.md writer
    cli        the command line

bench/attacks.py and bench/http_protocols.py use `server`, `database` and `common` too.
"""
