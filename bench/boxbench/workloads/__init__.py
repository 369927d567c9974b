"""One module per workload, each `async def run(bench)`; bench/README.md says what each
measures and against which target."""

from collections.abc import Awaitable, Callable

from ..bench import Bench
from . import best, distinct, hot, listing, sweep

STEPS: dict[str, Callable[[Bench], Awaitable[None]]] = {
    "distinct": distinct.run,
    "hot": hot.run,
    "best": best.run,
    "listing": listing.run,
    "sweep": sweep.run,
}
