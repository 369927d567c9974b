"""Shared by every benchmark here: paths, progress lines, Markdown tables, figure formats."""

import math
import ssl
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

BENCH_DIR = Path(__file__).resolve().parent.parent
PROJECT_DIR = BENCH_DIR.parent
DEFAULT_OUTPUT = BENCH_DIR / "RESULTS.md"
# Every client here speaks plain HTTP to 127.0.0.1; one shared TLS context spares each of the
# hot-ticket rush's 500 clients loading the CA bundle (~20 ms each).
PLAIN_HTTP = ssl.create_default_context()

_STARTED = time.perf_counter()


def say(message: str, *, file: TextIO | None = None) -> None:
    """Progress, with the time since the benchmark started."""
    stamp = f"[{time.perf_counter() - _STARTED:6.1f} s]"
    print(f"{stamp} {message}", file=file or sys.stdout, flush=True)


def read_text(path: str | Path) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def percentile(sorted_values: Sequence[float], share: float) -> float:
    if not sorted_values:
        return 0.0
    rank = max(0, math.ceil(share * len(sorted_values)) - 1)
    return sorted_values[min(rank, len(sorted_values) - 1)]


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def ms(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms"


def num(value: float) -> str:
    return f"{value:,.0f}"


def pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.0f} %"


def ratio(part: float | None, whole: float | None) -> float | None:
    """part ÷ whole, or None when either is missing or whole is 0."""
    return part / whole if part is not None and whole else None


def yes_no(met: bool | None) -> str:
    return "not measured" if met is None else ("**yes**" if met else "**no**")


def cpu_ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f} ms"


def seconds(value: float) -> str:
    return f"{value:g} s"


def delta(before: int | None, after: int | None) -> int | None:
    return after - before if before is not None and after is not None else None
