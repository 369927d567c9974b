"""What a run records: one `Attempt` per HTTP request, and the invariant check's result."""

from dataclasses import dataclass, field
from typing import Literal

from boxoffice.invariants import Violation

# The four ways a buyer's request can end that the verdict tells apart.
Action = Literal["reserve", "confirm", "release", "browse"]


@dataclass(frozen=True)
class Attempt:
    """One request: who sent it, when (seconds since the run began), how long, and the answer.

    `status` is None when no HTTP answer came at all; `problem` is then the transport error's
    class name, and otherwise the problem+json `type` slug of an error answer.
    """

    buyer: int
    action: Action
    status: int | None
    started: float
    latency: float
    problem: str | None = None
    detail: str = ""
    # The reservation this request created (reserve) or acted on (confirm, release).
    reservation: str | None = None
    # Tickets a winning reserve got, and what it asked for (ids, or a quantity).
    tickets: tuple[int, ...] = ()
    wanted: tuple[int, ...] = ()
    quantity: int | None = None

    @property
    def finished(self) -> float:
        return self.started + self.latency

    @property
    def kind(self) -> str:
        """A short name for the answer, e.g. `409 tickets-unavailable` or `ReadTimeout`."""
        if self.status is None:
            return self.problem or "transport error"
        return f"{self.status} {self.problem}" if self.problem else str(self.status)


InvariantStatus = Literal["passed", "failed", "skipped", "off"]


@dataclass(frozen=True)
class InvariantReport:
    """I1–I5 as read from the database: for this run's event, and for the whole database.

    `skipped` means the check could not run (no database, unreachable, wrong database): the
    verdict fails then. `off` means nobody asked for it (`--no-invariants`, run_concurrent.py).
    """

    status: InvariantStatus
    event: list[Violation] = field(default_factory=list)
    database: list[Violation] = field(default_factory=list)
    reason: str = ""
    database_url: str | None = None

    @classmethod
    def off(cls, reason: str = "") -> "InvariantReport":
        return cls("off", reason=reason)

    @classmethod
    def skipped(cls, reason: str, database_url: str | None = None) -> "InvariantReport":
        return cls("skipped", reason=reason, database_url=database_url)

    @classmethod
    def of(
        cls, event: list[Violation], database: list[Violation], database_url: str | None = None
    ) -> "InvariantReport":
        status: InvariantStatus = "failed" if event or database else "passed"
        return cls(status, event, database, database_url=database_url)
