"""The verdict and the figures: pure functions of the recorded attempts and the invariant check.

Nothing here talks to a server or a database, so the tests can feed it hand-made runs (two
winners, a 500, a broken invariant) and see it fail. The timing checks only flag what the
timestamps prove: a hold is surely live from its 201's arrival until its confirm, release or
expiry was requested, and a request's effect happened somewhere between sending and answer.
"""

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from boxoffice.simulate.outcomes import Attempt, InvariantReport

WIN = "win"
REFUSED = "refused"
CONFIRMED = "confirmed"
RELEASED = "released"
EXPIRED = "expired"
BROWSED = "browsed"
SERVER_ERROR = "server-error"
TRANSPORT_ERROR = "transport-error"
UNEXPECTED = "unexpected"
ERROR_KINDS = frozenset({SERVER_ERROR, TRANSPORT_ERROR, UNEXPECTED})

# Clock rates of this machine and the database's may differ a little (NTP slews): timing
# checks leave this much room, far more than any slew over a run.
TIMING_SLACK_SECONDS = 0.05

# 409s a confirm or release may rightly get: the hold lapsed, or a sweeper held its row.
_EXPECTED_FOLLOW_UP_409 = {"reservation-expired": EXPIRED, "conflict": REFUSED}


def classify(attempt: Attempt) -> str:
    """Which of the kinds above one answer is; anything not expected is `unexpected`."""
    status = attempt.status
    if status is None:
        return TRANSPORT_ERROR
    if status >= 500:
        return SERVER_ERROR
    if attempt.action == "reserve":
        if status in (200, 201):
            return WIN
        if status == 409:
            return REFUSED
    elif attempt.action == "confirm" and status == 200:
        return CONFIRMED
    elif attempt.action == "release" and status == 204:
        return RELEASED
    elif attempt.action in ("confirm", "release") and status == 409:
        return _EXPECTED_FOLLOW_UP_409.get(attempt.problem or "", UNEXPECTED)
    elif attempt.action == "browse" and status == 200:
        return BROWSED
    return UNEXPECTED


def label(attempt: Attempt) -> str:
    """How an answer is listed among the errors: `500 internal-error`, `404 on confirm`."""
    return attempt.kind if attempt.action == "reserve" else f"{attempt.kind} on {attempt.action}"


# --- figures -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Latency:
    """Milliseconds."""

    p50: float
    p95: float
    p99: float
    max: float
    mean: float


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence (the value some request really had)."""
    if not ordered:
        raise ValueError("no values")
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def latency_of(attempts: Iterable[Attempt]) -> Latency | None:
    values = sorted(attempt.latency * 1000 for attempt in attempts)
    if not values:
        return None
    return Latency(
        p50=percentile(values, 50),
        p95=percentile(values, 95),
        p99=percentile(values, 99),
        max=values[-1],
        mean=sum(values) / len(values),
    )


@dataclass(frozen=True)
class Summary:
    requests: int
    attempts: int
    wins: int
    tickets_won: int
    winners: list[int]
    kinds: dict[str, int]
    conflicts: dict[str, int]
    errors: dict[str, int]
    by_action: dict[str, dict[str, int]]
    latency: Latency | None
    elapsed: float
    throughput: float


def summarize(attempts: Sequence[Attempt]) -> Summary:
    """The figures of a run: counts by kind, 409s by type, errors by type, latency, rate."""
    kinds: Counter[str] = Counter()
    conflicts: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    by_action: dict[str, Counter[str]] = defaultdict(Counter)
    winners: list[int] = []
    tickets_won = 0
    for attempt in attempts:
        kind = classify(attempt)
        kinds[kind] += 1
        by_action[attempt.action][attempt.kind] += 1
        if attempt.status == 409:
            conflicts[attempt.problem or "unknown"] += 1
        if kind in ERROR_KINDS:
            errors[label(attempt)] += 1
        if kind == WIN:
            winners.append(attempt.buyer)
            tickets_won += len(attempt.tickets)
    elapsed = 0.0
    if attempts:
        elapsed = max(a.finished for a in attempts) - min(a.started for a in attempts)
    return Summary(
        requests=len(attempts),
        attempts=sum(1 for attempt in attempts if attempt.action == "reserve"),
        wins=len(winners),
        tickets_won=tickets_won,
        winners=sorted(winners),
        kinds=dict(kinds),
        conflicts=dict(conflicts.most_common()),
        errors=dict(errors.most_common()),
        by_action={action: dict(counts.most_common()) for action, counts in by_action.items()},
        latency=latency_of(attempts),
        elapsed=elapsed,
        throughput=len(attempts) / elapsed if elapsed > 0 else 0.0,
    )


# --- the verdict ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    ok: bool
    message: str
    problems: tuple[str, ...] = ()

    def line(self) -> str:
        return f"VERDICT: {'OK' if self.ok else 'FAIL'} — {self.message}"


def _listed(counts: Counter[str]) -> str:
    return ", ".join(f"{count}× {kind}" for kind, count in sorted(counts.items()))


def _error_problems(attempts: Sequence[Attempt], kinds: Sequence[str]) -> list[str]:
    server = Counter(label(a) for a, k in zip(attempts, kinds, strict=True) if k == SERVER_ERROR)
    transport = [a for a, k in zip(attempts, kinds, strict=True) if k == TRANSPORT_ERROR]
    other = Counter(label(a) for a, k in zip(attempts, kinds, strict=True) if k == UNEXPECTED)
    problems = []
    if server:
        problems.append(f"{server.total()} server error(s) ({_listed(server)})")
    if transport:
        example = transport[0].detail or transport[0].kind
        problems.append(f"{len(transport)} transport error(s), e.g. {example}")
    if other:
        problems.append(f"{other.total()} unexpected answer(s) ({_listed(other)})")
    return problems


def _ticket_problems(wins: Sequence[Attempt], noun: str) -> list[str]:
    """All or nothing: a win holds exactly the seats asked for, or exactly `quantity` seats."""
    wrong = []
    for win in wins:
        if not win.tickets:
            # Hand-made outcomes know nothing of tickets; a recorded win must list them.
            if win.wanted or win.quantity is not None:
                wrong.append(f"{noun} {win.buyer}'s winning answer lists no tickets")
            continue
        got = set(win.tickets)
        if len(got) != len(win.tickets):
            wrong.append(f"{noun} {win.buyer} got ticket(s) twice in one hold {list(win.tickets)}")
        elif win.wanted and got != set(win.wanted):
            wrong.append(f"{noun} {win.buyer} asked for {sorted(win.wanted)} and got {sorted(got)}")
        elif win.quantity is not None and len(got) != win.quantity:
            wrong.append(f"{noun} {win.buyer} asked for {win.quantity} and got {len(got)}")
    if not wrong:
        return []
    return [f"{len(wrong)} hold(s) not what was asked for, e.g. {wrong[0]}"]


def _follow_ups(attempts: Sequence[Attempt]) -> dict[str, list[Attempt]]:
    follow: dict[str, list[Attempt]] = defaultdict(list)
    for attempt in attempts:
        if attempt.action in ("confirm", "release") and attempt.reservation:
            follow[attempt.reservation].append(attempt)
    return follow


def _double_holds(
    wins: Sequence[Attempt], follow: dict[str, list[Attempt]], hold_seconds: float, noun: str
) -> list[str]:
    """No ticket in two holds that were surely live at the same moment: sold twice."""
    spans: dict[int, list[tuple[float, float, int]]] = defaultdict(list)
    for win in wins:
        # Surely live from the 201's arrival until the hold could first have ended.
        start = win.finished
        end = win.started + hold_seconds - TIMING_SLACK_SECONDS
        for later in follow.get(win.reservation or "", []):
            kind = classify(later)
            if kind == CONFIRMED:
                end = math.inf
            elif kind == RELEASED:
                end = min(end, later.started)
        if end > start:
            for ticket in set(win.tickets):
                spans[ticket].append((start, end, win.buyer))
    clashes: list[tuple[int, int, int]] = []
    for ticket, windows in spans.items():
        windows.sort()
        live_until, holder = -math.inf, 0
        for start, end, buyer in windows:
            if start < live_until:
                clashes.append((ticket, holder, buyer))
            if end > live_until:
                live_until, holder = end, buyer
    if not clashes:
        return []
    ticket, first, second = clashes[0]
    tickets = len({clash[0] for clash in clashes})
    return [
        f"{tickets} ticket(s) held by two {noun}s at once: sold twice, "
        f"e.g. ticket {ticket} ({noun}s {first} and {second})"
    ]


def _expiry_problems(
    wins: Sequence[Attempt], follow: dict[str, list[Attempt]], hold_seconds: float, noun: str
) -> list[str]:
    """A hold is honoured until it expires, and not after (DESIGN: promise 2)."""
    late: list[str] = []
    early: list[str] = []
    for win in wins:
        for later in follow.get(win.reservation or "", []):
            kind = classify(later)
            age = later.started - win.finished
            if kind in (CONFIRMED, RELEASED) and age > hold_seconds + TIMING_SLACK_SECONDS:
                late.append(f"{noun} {later.buyer}'s {later.action} {age:.2f} s after the hold")
            elif (
                kind == EXPIRED
                and later.finished < win.started + hold_seconds - TIMING_SLACK_SECONDS
            ):
                age = later.finished - win.started
                early.append(f"{noun} {later.buyer}'s {later.action} {age:.2f} s after reserving")
    problems = []
    if late:
        problems.append(
            f"{len(late)} hold(s) honoured after they expired ({hold_seconds:g} s), e.g. {late[0]}"
        )
    if early:
        problems.append(
            f"{len(early)} hold(s) expired before their {hold_seconds:g} s, e.g. {early[0]}"
        )
    return problems


def _invariant_problems(report: InvariantReport | None) -> list[str]:
    if report is None or report.status in ("off", "passed"):
        return []
    if report.status == "skipped":
        return [f"invariant check skipped: {report.reason}"]
    return [
        f"invariant {v.invariant} broken in {where}: {v.description} ({len(v.rows)} row(s))"
        for where, violations in (
            ("this run's event", report.event),
            ("the database", report.database),
        )
        for v in violations
    ]


def judge(
    attempts: Sequence[Attempt],
    *,
    scenario: str = "one-ticket",
    invariants: InvariantReport | None = None,
    supply: int | None = None,
    hold_seconds: float | None = None,
    noun: str = "buyer",
) -> Verdict:
    """OK only when every answer was expected, the tickets went to one holder at a time (and for
    one-ticket to exactly one winner), holds lasted as long as promised, and I1–I5 hold.

    `supply` is the event's ticket count and `hold_seconds` its hold length (None: unknown,
    so the timing checks are off). A buyer refused while a few tickets were still free is not
    a failure: SKIP LOCKED may skip rows that a losing buyer held for a moment (DESIGN).
    """
    if not attempts:
        return Verdict(False, f"no {noun} ran", (f"no {noun} ran",))
    kinds = [classify(attempt) for attempt in attempts]
    wins = [a for a, k in zip(attempts, kinds, strict=True) if k == WIN]
    refused = sum(
        1 for a, k in zip(attempts, kinds, strict=True) if k == REFUSED and a.action == "reserve"
    )
    winners = sorted(win.buyer for win in wins)
    tickets_won = sum(len(win.tickets) for win in wins)

    problems: list[str] = []
    if scenario == "one-ticket":
        if not winners:
            problems.append("zero winners: nobody got the ticket")
        elif len(winners) > 1:
            listed = ", ".join(str(buyer) for buyer in winners[:20])
            more = ", …" if len(winners) > 20 else ""
            problems.append(
                f"{len(winners)} winners ({noun}s {listed}{more}): the ticket was sold twice"
            )
    elif not wins and any(attempt.action == "reserve" for attempt in attempts):
        problems.append("zero winners: nobody got a ticket")
    problems += _error_problems(attempts, kinds)
    problems += _ticket_problems(wins, noun)
    if hold_seconds is not None:
        follow = _follow_ups(attempts)
        problems += _double_holds(wins, follow, hold_seconds, noun)
        problems += _expiry_problems(wins, follow, hold_seconds, noun)
    if supply is not None and scenario != "mixed" and tickets_won > supply:
        problems.append(f"{tickets_won} tickets won but the event has only {supply}")
    problems += _invariant_problems(invariants)

    if problems:
        return Verdict(
            False, "; ".join(problems) + f" ({refused} refused with 409)", tuple(problems)
        )
    if scenario == "one-ticket":
        message = f"exactly one winner ({noun} {winners[0]}), {refused} refused with 409"
    else:
        reserve_attempts = sum(1 for attempt in attempts if attempt.action == "reserve")
        message = (
            f"{len(wins)} of {reserve_attempts} reservation attempts won {tickets_won} "
            f"tickets, none twice; {refused} refused with 409"
        )
        if scenario == "mixed":
            counts = Counter(kinds)
            message += (
                f"; {counts[CONFIRMED]} confirmed, {counts[RELEASED]} released, "
                f"{counts[EXPIRED]} found their hold expired"
            )
    if invariants is not None and invariants.status == "passed":
        message += "; invariants I1–I5 hold in the event and the whole database"
    return Verdict(True, message)
