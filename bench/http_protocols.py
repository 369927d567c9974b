"""What the hostile-traffic guard costs: one app, three HTTP protocols, same run.

`boxoffice serve` runs uvicorn with `GuardedHttpToolsProtocol` (boxoffice.server): httptools
plus a header-size bound, head and body deadlines and a connection cap. This script serves the
same app with uvicorn's own httptools protocol (no guard: the "before"), with the guarded one
(what `serve` runs), and with h11 (uvicorn's other protocol, which bounds heads by itself),
and loads each with wrk, in rounds, interleaved, so machine noise hits all three alike:

- GET /healthz over keep-alive connections: a bare endpoint, where the protocol's own cost is
  the largest share of a request;
- GET /healthz with `Connection: close`: a connection per request, so the guard's per-connection
  bookkeeping is paid every time;
- GET /readyz over keep-alive: one database round trip per request.

    .venv/bin/python bench/http_protocols.py [--duration 10] [--rounds 2] [--database-url URL]

Prints requests/s and p99 per protocol, and each as a share of plain httptools. Needs wrk.
"""

import argparse
import asyncio
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from boxbench.database import benchmark_database
from boxbench.server import Server

PROTOCOLS = ("httptools", "guarded", "h11")
LOADS = (
    ("/healthz, keep-alive", "/healthz", ()),
    ("/healthz, new connection each", "/healthz", ("-H", "Connection: close")),
    ("/readyz (one query), keep-alive", "/readyz", ()),
)
CONNECTIONS = 64
WORKERS = 2


def serve(protocol: str, port: int, workers: int, log_level: str) -> None:
    """Run as the server process: the app as `boxoffice serve` runs it, but for the protocol."""
    import uvicorn

    from boxoffice.config import get_settings
    from boxoffice.server import uvicorn_options

    options = uvicorn_options(get_settings())
    if protocol != "guarded":
        options["http"] = protocol
    uvicorn.run(
        "boxoffice.main:create_app",
        factory=True,
        host="127.0.0.1",
        port=port,
        workers=workers,
        log_level=log_level,
        **options,
    )


def _milliseconds(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, extra: tuple[str, ...], seconds: float) -> tuple[float, float, int]:
    """requests/s, p99 in ms, and non-2xx/3xx answers plus socket errors."""
    command = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds:g}s", "--latency", *extra, url]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", output)
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    failures = int(bad.group(1)) if bad else 0
    if errors:
        failures += sum(int(count) for count in errors.groups())
    return rate, _milliseconds(*p99.groups()) if p99 else float("nan"), failures


async def measure(
    server: Server, server_secret: str, seconds: float
) -> list[tuple[float, float, int]]:
    """Start the server, load it with each of LOADS (after a warm-up), stop it."""
    await server.start(SERVER_SECRET=server_secret)
    try:
        figures = []
        for _, path, extra in LOADS:
            url = server.base_url + path
            await asyncio.to_thread(wrk, url, extra, 2)  # warm-up
            figures.append(await asyncio.to_thread(wrk, url, extra, seconds))
        return figures
    finally:
        await server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (median)")
    parser.add_argument("--database-url", default=os.environ.get("TEST_DATABASE_URL"))
    parser.add_argument("--serve", choices=PROTOCOLS, help=argparse.SUPPRESS)
    # How boxbench's Server starts the server process (`--serve` runs it).
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--log-level", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.workers, args.log_level)
        return 0
    if shutil.which("wrk") is None:
        print("bench: needs wrk (apt-get install wrk)", file=sys.stderr)
        return 1

    from boxoffice.migrate import upgrade

    with tempfile.TemporaryDirectory(prefix="boxoffice-bench-http-") as folder:
        workdir = Path(folder)
        with benchmark_database(args.database_url, workdir) as database:
            upgrade(database.url)
            admin_token = "bench-admin-" + secrets.token_urlsafe(16)
            server_secret = "bench-server-secret-" + secrets.token_urlsafe(32)
            results: dict[tuple[str, str], list[tuple[float, float, int]]] = {}
            for round_number in range(1, args.rounds + 1):
                # Rotate the order each round, so no protocol always runs first or last.
                shift = (round_number - 1) % len(PROTOCOLS)
                for protocol in PROTOCOLS[shift:] + PROTOCOLS[:shift]:
                    server = Server(
                        database.url,
                        admin_token,
                        WORKERS,
                        workdir,
                        program=(__file__, "--serve", protocol),
                    )
                    measured = asyncio.run(measure(server, server_secret, args.duration))
                    for (label, _, _), figures in zip(LOADS, measured, strict=True):
                        results.setdefault((label, protocol), []).append(figures)
                        print(
                            f"round {round_number}  {protocol:<9}  {label:<34}"
                            f"  {figures[0]:>9,.0f}/s  p99 {figures[1]:7.2f} ms"
                            f"  failures {figures[2]}",
                            flush=True,
                        )

    print(
        f"\nwrk -t2 -c{CONNECTIONS}, {args.duration:g} s each, {WORKERS} workers, "
        f"median of {args.rounds} rounds\n"
    )
    print("| load | protocol | requests/s | ÷ httptools | p99 | failures |")
    print("|---|---|---|---|---|---|")
    for label, _, _ in LOADS:
        base = statistics.median(rate for rate, _, _ in results[(label, "httptools")])
        for protocol in PROTOCOLS:
            runs = results[(label, protocol)]
            rate = statistics.median(r for r, _, _ in runs)
            p99 = statistics.median(p for _, p, _ in runs)
            failures = sum(f for _, _, f in runs)
            print(
                f"| {label} | {protocol} | {rate:,.0f} | {rate / base:.0%} | {p99:.2f} ms "
                f"| {failures} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
