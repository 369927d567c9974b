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
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import benchmark_database

PROTOCOLS = ("httptools", "guarded", "h11")
LOADS = (
    ("/healthz, keep-alive", "/healthz", ()),
    ("/healthz, new connection each", "/healthz", ("-H", "Connection: close")),
    ("/readyz (one query), keep-alive", "/readyz", ()),
)
CONNECTIONS = 64
WORKERS = 2


def serve(protocol: str, port: int) -> None:
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
        workers=WORKERS,
        log_level="warning",
        **options,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    protocol: str, env: dict[str, str], log: Path
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    with log.open("a") as out:
        process = subprocess.Popen(
            [sys.executable, __file__, "--serve", protocol, "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the {protocol} server exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)  # polling a starting server, bounded by the deadline
    raise SystemExit(f"the {protocol} server did not start:\n{log.read_text()[-3000:]}")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


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
    return rate, _milliseconds(*p99.groups()) if p99 else float("nan"), failures  # type: ignore[misc]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (median)")
    parser.add_argument("--database-url", default=os.environ.get("TEST_DATABASE_URL"))
    parser.add_argument("--serve", choices=PROTOCOLS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return 0
    if shutil.which("wrk") is None:
        print("bench: needs wrk (apt-get install wrk)", file=sys.stderr)
        return 1

    from boxoffice.migrate import upgrade

    with tempfile.TemporaryDirectory(prefix="boxoffice-bench-http-") as folder:
        workdir = Path(folder)
        with benchmark_database(args.database_url, workdir) as database:
            upgrade(database.url)
            env = {
                **os.environ,
                "DATABASE_URL": database.url,
                "DATA_DIR": str(workdir / "data"),
                "ADMIN_TOKEN": "bench-admin-token-" + "x" * 16,
                "SERVER_SECRET": "bench-server-secret-" + "x" * 32,
                "SWEEP_INTERVAL_SECONDS": "0",
            }
            results: dict[tuple[str, str], list[tuple[float, float, int]]] = {}
            for round_number in range(1, args.rounds + 1):
                # Rotate the order each round, so no protocol always runs first or last.
                shift = (round_number - 1) % len(PROTOCOLS)
                for protocol in PROTOCOLS[shift:] + PROTOCOLS[:shift]:
                    process, url = start_server(protocol, env, workdir / f"{protocol}.log")
                    try:
                        for label, path, extra in LOADS:
                            wrk(url + path, extra, 2)  # warm-up
                            measured = wrk(url + path, extra, args.duration)
                            results.setdefault((label, protocol), []).append(measured)
                            print(
                                f"round {round_number}  {protocol:<9}  {label:<34}"
                                f"  {measured[0]:>9,.0f}/s  p99 {measured[1]:7.2f} ms"
                                f"  failures {measured[2]}",
                                flush=True,
                            )
                    finally:
                        stop_server(process)

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
