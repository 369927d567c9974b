"""What to run: the workloads, their durations and the ticket budget of each measurement."""

import math
from dataclasses import dataclass

WORKLOADS = ("distinct", "hot", "best", "listing", "sweep")

# Most tickets one event may have (the service's MAX_TICKETS_PER_EVENT default); events are
# created with sections of 1,000 seats per row, so sizes are multiples of 1,000.
EVENT_SIZE = 200_000
SEATS_PER_ROW = 1_000
# Tickets set aside per second of measurement: above anything this 2-core machine reaches, so
# a run never walks off the end of its range (a run that does is flagged in the notes).
PGBENCH_RATE_CAP = 12_000
HTTP_RATE_CAP = 4_000
# Holds of the benchmark's own events outlive the run, so only the sweep workload's holds
# (hold_seconds=1) ever expire.
LONG_HOLD_SECONDS = 3_600


@dataclass(frozen=True)
class Plan:
    quick: bool
    duration: float
    warmup: float
    listing_duration: float
    workloads: tuple[str, ...]
    client: str
    workers: int = 2
    concurrencies: tuple[int, ...] = (1, 16, 64)
    target_concurrency: int = 16
    best_concurrency: int = 64
    hot_buyers: int = 500
    listing_sizes: tuple[int, ...] = (10_000, 100_000, 200_000)
    listing_target_size: int = 100_000
    sweep_holds: int = 100_000
    sweep_concurrency: int = 16
    sweep_in_server: bool = True

    def tickets_for(self, rate_cap: int, seconds: float) -> int:
        """A range big enough for `seconds` at `rate_cap`, in whole rows, at most one event."""
        wanted = math.ceil(rate_cap * seconds / SEATS_PER_ROW) * SEATS_PER_ROW
        return max(SEATS_PER_ROW, min(EVENT_SIZE, wanted))
