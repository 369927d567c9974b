"""A run's result for people (a rich table, a plot) and for machines (one JSON object)."""

import importlib.util
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from boxoffice.invariants import Violation
from boxoffice.simulate.outcomes import Attempt, InvariantReport
from boxoffice.simulate.scenarios import Plan
from boxoffice.simulate.verdict import (
    BROWSED,
    CONFIRMED,
    ERROR_KINDS,
    EXPIRED,
    REFUSED,
    RELEASED,
    WIN,
    Summary,
    Verdict,
    classify,
)

PLOT_INSTALL_HINT = "pip install 'boxoffice[plot]'"
# Throughput over time is counted in slices this long.
THROUGHPUT_SLICE_SECONDS = 0.1


@dataclass(frozen=True)
class Result:
    plan: Plan
    url: str
    event: dict[str, Any]
    attempts: list[Attempt]
    summary: Summary
    invariants: InvariantReport
    verdict: Verdict
    # Tickets still available after the run (GET /events/{id}), if the server said.
    leftover: int | None = None
    interrupted: bool = False

    @property
    def buyers(self) -> int:
        return len({attempt.buyer for attempt in self.attempts})


def _violation(violation: Violation) -> dict[str, Any]:
    return {
        "invariant": violation.invariant,
        "description": violation.description,
        "rows": len(violation.rows),
        "sample": [{key: str(value) for key, value in row.items()} for row in violation.rows[:5]],
    }


def to_json(result: Result) -> dict[str, Any]:
    """Every figure of the run as plain JSON values."""
    summary = result.summary
    kinds = summary.kinds
    report = result.invariants
    return {
        "scenario": result.plan.scenario,
        "url": result.url,
        "event_id": str(result.event.get("id")),
        "supply": result.event.get("ticket_count"),
        "settings": result.plan.settings(),
        "idempotency_keys": result.plan.keyed,
        "path": result.plan.path,
        "buyers": result.buyers,
        "requests": summary.requests,
        "attempts": summary.attempts,
        "wins": summary.wins,
        "winners": summary.winners[:100],
        "tickets_won": summary.tickets_won,
        "refused": kinds.get(REFUSED, 0),
        "confirmed": kinds.get(CONFIRMED, 0),
        "released": kinds.get(RELEASED, 0),
        "expired": kinds.get(EXPIRED, 0),
        "browsed": kinds.get(BROWSED, 0),
        "conflicts": summary.conflicts,
        "errors": summary.errors,
        "server_errors": kinds.get("server-error", 0),
        "transport_errors": kinds.get("transport-error", 0),
        "unexpected": kinds.get("unexpected", 0),
        "by_action": summary.by_action,
        "latency_ms": asdict(summary.latency) if summary.latency else None,
        "elapsed_seconds": summary.elapsed,
        "throughput_rps": summary.throughput,
        "tickets_left": result.leftover,
        "interrupted": result.interrupted,
        "invariants": {
            "status": report.status,
            "reason": report.reason or None,
            "database_url": report.database_url,
            "event": [_violation(v) for v in report.event],
            "database": [_violation(v) for v in report.database],
        },
        "verdict": {
            "ok": result.verdict.ok,
            "message": result.verdict.message,
            "problems": list(result.verdict.problems),
        },
    }


def _plural(count: Any, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _counts(counts: dict[str, int]) -> str:
    return " · ".join(f"{count}× {kind}" for kind, count in counts.items()) or "none"


def _invariants_cell(report: InvariantReport) -> Text:
    if report.status == "passed":
        return Text("I1–I5 hold: this run's event and the whole database", "green")
    if report.status == "off":
        return Text(f"not checked ({report.reason or 'off'})", "yellow")
    if report.status == "skipped":
        return Text(f"SKIPPED: {report.reason}", "bold red")
    cell = Text("FAILED", "bold red")
    for where, violations in (("event", report.event), ("database", report.database)):
        for violation in violations:
            cell.append(f"\n{where}: {violation}", "red")
    return cell


def render(result: Result, console: Console) -> None:
    """The verdict table, then the one line that says OK or FAIL."""
    plan = result.plan
    summary = result.summary
    kinds = summary.kinds
    table = Table(title=f"boxoffice simulate {plan.scenario}", box=box.SIMPLE, show_header=False)
    table.add_column("figure", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")

    event = result.event
    table.add_row("server", result.url)
    table.add_row("reservation path", plan.path)
    table.add_row(
        "event",
        f"{event.get('id')} · {_plural(event.get('ticket_count'), 'ticket')} ({plan.layout}) · "
        f"holds last {plan.hold_seconds} s",
    )
    table.add_row(
        "buyers",
        f"{result.buyers} · {plan.concurrency} at a time · seed {plan.seed}"
        + (" · INTERRUPTED" if result.interrupted else ""),
    )
    table.add_row(
        "requests",
        f"{summary.requests} in {summary.elapsed:.2f} s → {summary.throughput:,.0f} req/s",
    )
    table.add_row("reservation attempts", str(summary.attempts))
    wins = f"{summary.wins} · {_plural(summary.tickets_won, 'ticket')}"
    if summary.wins and summary.wins <= 3:
        wins += " (buyer " + ", ".join(str(buyer) for buyer in summary.winners) + ")"
    table.add_row("wins", Text(wins, "green" if summary.wins else "yellow"))
    table.add_row("409s", _counts(summary.conflicts))
    if plan.scenario == "mixed":
        table.add_row(
            "after winning",
            f"{kinds.get(CONFIRMED, 0)} confirmed · {kinds.get(RELEASED, 0)} released · "
            f"{kinds.get(EXPIRED, 0)} came back too late (409 reservation-expired)",
        )
    errors = Text(_counts(summary.errors), "red bold" if summary.errors else "green")
    table.add_row("errors", errors)
    if summary.latency is not None:
        latency = summary.latency
        table.add_row(
            "latency",
            f"p50 {latency.p50:.1f} ms · p95 {latency.p95:.1f} ms · "
            f"p99 {latency.p99:.1f} ms · max {latency.max:.1f} ms",
        )
    if result.leftover is not None:
        table.add_row("tickets left", f"{result.leftover} of {event.get('ticket_count')}")
    table.add_row("invariants", _invariants_cell(result.invariants))
    console.print(table)
    style = "bold green" if result.verdict.ok else "bold red"
    console.print(Text(result.verdict.line(), style), soft_wrap=True)


# --- the plot --------------------------------------------------------------------------------


class PlotUnavailable(RuntimeError):
    pass


def plot_available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def per_slice(times: Sequence[float], width: float) -> list[int]:
    """How many of `times` (seconds) fall in each `width`-second slice from 0."""
    if not times:
        return []
    counts = [0] * (math.floor(max(times) / width) + 1)
    for moment in times:
        counts[max(0, math.floor(moment / width))] += 1
    return counts


_GROUPS = (
    ("won / done", "#2e7d32", frozenset({WIN, CONFIRMED, RELEASED, BROWSED})),
    ("409", "#ef6c00", frozenset({REFUSED, EXPIRED})),
    ("error", "#c62828", ERROR_KINDS),
)


def plot(result: Result, path: Path) -> None:
    """A latency histogram and throughput per 100 ms over time, by outcome, as a PNG."""
    if not plot_available():
        raise PlotUnavailable(f"--plot needs matplotlib: {PLOT_INSTALL_HINT}")
    # The Figure API draws with Agg and touches no global pyplot state or GUI backend.
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 8), layout="constrained")
    latency_axes, rate_axes = figure.subplots(2, 1)
    kinds = [classify(attempt) for attempt in result.attempts]
    groups = [
        (name, color, [a for a, k in zip(result.attempts, kinds, strict=True) if k in members])
        for name, color, members in _GROUPS
    ]
    groups = [group for group in groups if group[2]]
    if groups:
        latency_axes.hist(
            [[attempt.latency * 1000 for attempt in attempts] for _, _, attempts in groups],
            bins=50,
            stacked=True,
            color=[color for _, color, _ in groups],
            label=[name for name, _, _ in groups],
        )
        latency_axes.legend()
    latency = result.summary.latency
    if latency is not None:
        for name, value in (("p50", latency.p50), ("p99", latency.p99)):
            latency_axes.axvline(value, color="black", linestyle=":", linewidth=1)
            latency_axes.annotate(
                f" {name} {value:.1f} ms",
                (value, 1),
                xycoords=("data", "axes fraction"),
                va="top",
                fontsize=8,
            )
    latency_axes.set_xlabel("latency (ms)")
    latency_axes.set_ylabel("requests")
    latency_axes.set_title("latency")

    width = THROUGHPUT_SLICE_SECONDS
    start = min((attempt.started for attempt in result.attempts), default=0.0)
    bottom: list[float] = []
    for name, color, attempts in groups:
        counts = per_slice([attempt.finished - start for attempt in attempts], width)
        rates = [count / width for count in counts]
        slices = max(len(bottom), len(rates))
        bottom += [0.0] * (slices - len(bottom))
        rates += [0.0] * (slices - len(rates))
        rate_axes.bar(
            [index * width for index in range(slices)],
            rates,
            width=width,
            bottom=bottom,
            align="edge",
            color=color,
            label=name,
        )
        bottom = [below + rate for below, rate in zip(bottom, rates, strict=True)]
    if groups:
        rate_axes.legend()
    rate_axes.set_xlabel("seconds since the first request")
    rate_axes.set_ylabel(f"answers per second ({width * 1000:.0f} ms slices)")
    rate_axes.set_title("throughput")

    summary = result.summary
    verdict = "OK" if result.verdict.ok else "FAIL"
    figure.suptitle(
        f"boxoffice simulate {result.plan.scenario} ({'keyed' if result.plan.keyed else 'unkeyed'})"
        f": {summary.requests} requests, "
        f"{summary.throughput:,.0f} req/s — {verdict}"
    )
    figure.savefig(path, dpi=100)
