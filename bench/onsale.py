#!/usr/bin/env python3
"""The on-sale rush at the issue's size: `boxoffice simulate onsale`, its figures into
bench/RESULTS.md.

    .venv/bin/python bench/onsale.py      # 100,000 buyers, 20,000 seats (several minutes)
    .venv/bin/python bench/onsale.py --buyers 2000 --tickets 400 --admit-per-minute 6000 \\
        --output /tmp/results.md          # a smoke run

It runs `python -m boxoffice.cli simulate onsale --json` with the working tree's code in a
temporary folder (so no .env applies): a private embedded PostgreSQL and `boxoffice serve
--workers 2` with the service's default rate limits, a second server with them off for the
scalper without protections. Its progress goes to the terminal; its figures become the
section "On-sale rush through the waiting room" of RESULTS.md, between markers, replacing
the one before (bench/run.py keeps it when it rewrites the file). Options it does not know
go to the simulator unchanged (`--concurrency`, `--streams`, `--scalper-seconds`, ...).
Exit status: the simulator's (0 PASS, 1 FAIL, 2 could not run; nothing written then).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from boxbench.common import DEFAULT_OUTPUT, PROJECT_DIR, read_text, say, table
from boxbench.machine import git_revision, machine_facts
from boxbench.sections import ONSALE, with_section

# The issue's size.
BUYERS, TICKETS = 100_000, 20_000
ADMIT_PER_MINUTE = 12_000


def _ms(latency: dict[str, Any] | None, key: str = "p99") -> str:
    if not latency:
        return "–"
    return f"{latency[key]:,.1f} ms"


def _latency(latency: dict[str, Any] | None) -> str:
    if not latency:
        return "–"
    return (
        f"p50 {latency['p50']:,.1f} ms, p99 {latency['p99']:,.1f} ms, max {latency['max']:,.1f} "
        f"ms ({int(latency['count']):,})"
    )


def _share(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f} %"


def _yes(flag: bool | None) -> str:
    return "not measured" if flag is None else ("**yes**" if flag else "**no**")


def section(figures: dict[str, Any], command: str, minutes: float) -> str:
    """RESULTS.md's section for one run's JSON figures."""
    facts = machine_facts()
    settings = figures["settings"]
    joins, admission, reservations = figures["joins"], figures["admission"], figures["reservations"]
    arrivals = figures["fairness"]["arrivals"]
    pre = figures["fairness"]["pre_queue"]
    integrity = figures["integrity"]
    target = figures["targets"][0]
    rate = (
        "not measured (the queue never stayed non-empty long enough)"
        if admission["measured_per_minute"] is None
        else f"{admission['measured_per_minute']:,.0f}/min vs "
        f"{admission['configured_per_minute']:,}/min ({admission['deviation'] * 100:+.2f} %) "
        f"over {admission['measured_seconds']:.1f} s of non-empty queue, "
        f"{admission['measured_admissions']:,} admissions"
    )
    chi = (
        f"χ² = {pre['chi_square']:.2f}, {pre['dof']} dof ({pre['groups']} × {pre['groups']} "
        f"buckets, {pre['places']:,} places), p = {pre['p_value']:.4f}; ρ(join order, drawn "
        f"rank) = {pre['spearman_join_vs_draw']:.4f}"
        if pre["p_value"] is not None
        else f"not measured ({pre['places']} places)"
    )
    rows = [
        [
            "joins/s through HTTP (arrivals after the on-sale)",
            f"{joins['per_second'] or 0:,.0f}/s ({joins['arrivals']:,} in "
            f"{joins['arrivals_seconds']:.1f} s); pre-queue "
            f"{joins['pre_queue_per_second'] or 0:,.0f}/s ({joins['pre_queue']:,})",
            "–",
        ],
        ["join latency (all joins)", _latency(joins["latency_ms"]), "–"],
        [
            "reservation latency of admitted buyers while the joins go on",
            _latency(reservations["during_joins"]),
            f"p99 < 100 ms: {_yes(target['met'])}",
        ],
        ["reservation latency, whole run", _latency(reservations["latency_ms"]), "–"],
        [
            "arrivals: admission order = join order",
            f"Spearman ρ = {arrivals['spearman']:.6f} over {arrivals['admitted']:,} admitted; "
            f"{arrivals['overtakers']} overtook, {arrivals['skipped']} skipped, "
            f"{arrivals['client_order_violations']} against the client-observed order"
            if arrivals["spearman"] is not None
            else "not measured",
            "ρ = 1.0",
        ],
        ["pre-queue: positions uniformly random", chi, "p ≥ 0.001"],
        ["admission rate", rate, "within ±5 %"],
        [
            "reservations without a valid pass",
            f"{integrity['without_pass']} of {integrity['holds']:,}",
            "0",
        ],
        [
            "customers above the cap",
            f"{integrity['above_cap']} (most by one customer: {integrity['most_per_customer']}, "
            f"cap {integrity['cap'] or 'none'})",
            "0",
        ],
        [
            "seats sold twice",
            f"{integrity['sold_twice']} ({integrity['tickets_booked']:,} of "
            f"{integrity['tickets']:,} seats booked)",
            "0",
        ],
        ["invariants I1–I5", figures["invariants"]["status"], "passed"],
        [
            "errors (5xx, transport, unexpected)",
            (", ".join(f"{n}× {what}" for what, n in figures["errors"].items()) or "none")
            + _retried(figures),
            "none",
        ],
    ]
    notice = figures["notice"]
    lines = [
        "## On-sale rush through the waiting room (`bench/onsale.py`)",
        "",
        f"Generated by `.venv/bin/python bench/onsale.py` on {facts['date']} in {minutes:.1f} "
        f"min ({facts['CPU']}; {git_revision()}): `{command}`, seed {settings['seed']}. "
        f"{settings['buyers']:,} buyers, {settings['pre_queue']:,} of them in the pre-queue; "
        f"{settings['tickets']:,} seats, admitted {settings['admit_per_minute']:,}/min, cap "
        f"{settings['cap'] or 'none'}; joins {settings['concurrency']} in flight. Client, "
        "server and PostgreSQL share the machine. What each figure means: "
        "[README.md](README.md#on-sale-rush-through-the-waiting-room).",
        "",
        table(["figure", "measured", "target"], rows),
        "",
        f"Buyers learned their admission from {notice['streams']} Server-Sent Event streams "
        f"({_latency(notice['stream_delay_ms'])} after `admitted_at`) and "
        f"{notice['polls']:,} polls ({notice['polls_per_polling_buyer']} a polling buyer; "
        f"{_latency(notice['poll_delay_ms'])}). Sold out "
        f"{reservations['sold_out_after_seconds'] or '–'} s after the opening; buyers: "
        + ", ".join(f"{n:,} {what}" for what, n in figures["buyers"].items())
        + ".",
    ]
    scalper_rows = []
    for key in ("protections_off", "protections_on"):
        scalper = figures["scalper"][key]
        if scalper is None:
            continue
        real = scalper["real_buyer"]
        scalper_rows.append(
            [
                f"{key.removeprefix('protections_')}: cap {scalper['cap'] or 'none'}, rate "
                f"limits {scalper['rate_limits']}",
                f"{scalper['held_most_per_customer']} (all {scalper['customers']} names at "
                f"once: {scalper['held_most_all_names_at_once']})",
                f"{scalper['holds']:,} / {scalper['renewed']:,} / {scalper['renewals_lost']:,}",
                f"{scalper['too_many_requests']:,}",
                f"{_share(real['success_rate'])} ({real['holds']} of "
                f"{real['holds'] + real['refused']} answered; {real['too_many_requests']} × 429 "
                f"of {real['attempts']} attempts)",
            ]
        )
    if scalper_rows:
        first = next(s for s in figures["scalper"].values() if s is not None)
        lines += [
            "",
            f"**The scalper** (release/re-hold: one address, {first['customers']} names, "
            f"{first['tickets']} seats held {first['hold_seconds']} s at a time, "
            f"{first['seconds']:g} s; with the protections on it runs alongside the rush, off "
            "right after it on a second server without rate limits) and a real buyer asking "
            "for one seat every 100 ms:",
            "",
            table(
                [
                    "protections",
                    "most held at once per customer",
                    "holds / re-holds / re-holds lost",
                    "scalper 429s",
                    "real buyer's success",
                ],
                scalper_rows,
            ),
        ]
    lines += ["", f"`{figures['verdict']['line']}`"]
    return "\n".join(lines)


def _retried(figures: dict[str, Any]) -> str:
    """The 503s (pool busy) that joins and polls waited out and asked again, if any."""
    retried = {
        kind: answers["503 service-unavailable"]
        for kind, answers in figures["outcomes"].items()
        if answers.get("503 service-unavailable")
    }
    if not retried:
        return ""
    parts = ", ".join(f"{n:,} {kind}s" for kind, n in retried.items())
    return f" (503 + Retry-After, waited out and asked again: {parts})"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--buyers", type=int, default=BUYERS)
    parser.add_argument("--tickets", type=int, default=TICKETS)
    # Below what this machine joins a second (about 350/s), so the queue has a backlog all
    # through the burst and the admission rate is the waiting room's, not the arrivals'.
    parser.add_argument("--admit-per-minute", type=int, default=ADMIT_PER_MINUTE)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="results file")
    args, passed_on = parser.parse_known_args(argv)
    simulate = [
        "simulate",
        "onsale",
        "--buyers",
        str(args.buyers),
        "--tickets",
        str(args.tickets),
        "--admit-per-minute",
        str(args.admit_per_minute),
        *passed_on,
    ]
    command = "boxoffice " + " ".join(simulate)
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "POSTGRES_HOST", "ADMIN_TOKEN", "MIGRATE_DATABASE_URL"}
    }
    # The working tree's code, whatever is installed.
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(PROJECT_DIR / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    say(f"onsale: {command}")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="boxoffice-onsale-bench-") as folder:
        completed = subprocess.run(
            [sys.executable, "-m", "boxoffice.cli", *simulate, "--json"],
            cwd=folder,
            env=environment,
            stdout=subprocess.PIPE,
            text=True,
            check=False,
        )
    minutes = (time.perf_counter() - started) / 60
    try:
        figures = json.loads(completed.stdout)
    except ValueError:
        say(f"onsale: the simulator wrote no figures (exit {completed.returncode})")
        print(completed.stdout)
        return completed.returncode or 2
    text = section(figures, command, minutes)
    args.output.write_text(with_section(read_text(args.output), ONSALE, text))
    print("\n" + text)
    say(f"onsale: wrote the section into {args.output}")
    return completed.returncode


if __name__ == "__main__":
    sys.exit(main())
