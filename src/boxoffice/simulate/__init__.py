"""The concurrency simulator behind `boxoffice simulate` and run_concurrent.py.

Many buyers at one ticket or one event, over real HTTP; every request recorded; then the
invariants I1–I5 read from the database and a verdict that is a pure function of both.

    outcomes   what a run records (Attempt) and the invariant check's result
    verdict    figures and the OK/FAIL verdict, pure and unit-tested
    load       HTTP recording, the barrier rush, the worker pool
    scenarios  one-ticket, overlap, best-available, mixed
    runner     the private server, the run's event, the invariant step, the CLI
    report     the rich table, JSON, and the plot

Submodules import rich and httpx only when used, so `import boxoffice.simulate` is cheap.
"""

from boxoffice.simulate.outcomes import Attempt, InvariantReport
from boxoffice.simulate.verdict import Verdict, judge, summarize

__all__ = ["Attempt", "InvariantReport", "Verdict", "judge", "summarize"]
