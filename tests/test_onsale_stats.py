"""`boxoffice simulate onsale`'s arithmetic, without a server: the statistics (Spearman, the
chi-square p-value against closed forms and tables), the fairness and rate figures on
made-up queues, the scalper's sweep, and the command line."""

import argparse
import math
import random

import pytest

from boxoffice import cli
from boxoffice.config import Settings
from boxoffice.simulate import onsale
from boxoffice.simulate.onsale_figures import (
    ClientJoin,
    PlaceRow,
    admission_rate,
    arrival_fairness,
    lane_order_violations,
    pre_queue_fairness,
)
from boxoffice.simulate.onsale_scalper import most_at_once
from boxoffice.simulate.stats import (
    buckets,
    chi2_sf,
    groups_for,
    independence,
    position_table,
    ranks,
    spearman,
    upper_regularized_gamma,
)

# --- the statistics ----------------------------------------------------------------------------


@pytest.mark.parametrize("x", [0.01, 0.5, 1.0, 3.84, 10.0, 50.0])
def test_chi2_sf_matches_closed_forms(x: float) -> None:
    # ν = 1: erfc(√(x/2)); ν = 2: e^(−x/2); ν = 2m: e^(−x/2) Σ_{i<m} (x/2)^i / i!
    assert chi2_sf(x, 1) == pytest.approx(math.erfc(math.sqrt(x / 2)), rel=1e-10, abs=1e-300)
    assert chi2_sf(x, 2) == pytest.approx(math.exp(-x / 2), rel=1e-10)
    for m in (2, 5, 20):
        expected = math.exp(-x / 2) * sum((x / 2) ** i / math.factorial(i) for i in range(m))
        assert chi2_sf(x, 2 * m) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(
    ("statistic", "dof", "p"),
    [
        # Critical values from the standard chi-square table.
        (3.841458820694124, 1, 0.05),
        (6.634896601021214, 1, 0.01),
        (18.307038053275146, 10, 0.05),
        (21.665994333461924, 9, 0.01),
        (37.65248413348277, 25, 0.05),
        (124.34211340400407, 100, 0.05),
    ],
)
def test_chi2_sf_matches_the_table(statistic: float, dof: int, p: float) -> None:
    assert chi2_sf(statistic, dof) == pytest.approx(p, rel=1e-4)


def test_chi2_sf_edges() -> None:
    assert chi2_sf(0, 9) == 1.0
    assert chi2_sf(1e4, 9) < 1e-300 or chi2_sf(1e4, 9) == 0.0
    assert 0 < chi2_sf(200, 81) < 1e-10
    assert upper_regularized_gamma(1.0, 0.0) == 1.0
    with pytest.raises(ValueError):
        chi2_sf(1.0, 0)
    with pytest.raises(ValueError):
        upper_regularized_gamma(0.0, 1.0)


def test_spearman() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # Wikipedia's worked example (IQ against hours of TV a week): ρ = −29/165.
    iq = [106, 100, 86, 101, 99, 103, 97, 113, 112, 110]
    tv = [7, 27, 2, 50, 28, 29, 20, 12, 6, 17]
    assert spearman(iq, tv) == pytest.approx(-29 / 165, abs=1e-12)
    # Ties take the mean of their ranks; ρ is then Pearson's r of the ranks.
    assert ranks([5, 6, 7, 8, 7]) == [1.0, 2.0, 3.5, 5.0, 3.5]
    assert spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(0.82078268166812329)
    assert spearman([1, 2, 3], [7, 7, 7]) is None
    assert spearman([1], [1]) is None
    # Tuples sort too: the admission order (tick, then join order).
    assert spearman([1, 2, 3], [(0.5, 1), (0.5, 2), (1.0, 3)]) == pytest.approx(1.0)


def test_independence_of_a_known_table() -> None:
    # Expected 12, 18, 28, 42: χ² = 4/12 + 4/18 + 4/28 + 4/42, 1 dof.
    test = independence([[10, 20], [30, 40]])
    statistic = 4 / 12 + 4 / 18 + 4 / 28 + 4 / 42
    assert test.statistic == pytest.approx(statistic)
    assert test.dof == 1
    assert test.p_value == pytest.approx(math.erfc(math.sqrt(statistic / 2)))
    assert test.min_expected == pytest.approx(12)
    with pytest.raises(ValueError):
        independence([[1, 2]])
    with pytest.raises(ValueError):
        independence([[0, 0], [1, 2]])


def test_buckets_and_groups() -> None:
    assert buckets(10, 3) == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert buckets(0, 3) == []
    assert groups_for(19) == 0  # a 2 × 2 table needs 20 places for 5 a cell
    assert groups_for(20) == 2
    assert groups_for(90) == 4
    assert groups_for(10_000) == 10


def test_a_fair_draw_passes_and_an_ordered_one_fails() -> None:
    count = 2_000
    drawn = list(range(1, count + 1))
    random.Random(3).shuffle(drawn)
    fair = position_table(list(range(count)), drawn, groups_for(count))
    assert fair.dof == 81 and fair.p_value > 0.001
    in_order = position_table(list(range(count)), list(range(1, count + 1)), 10)
    assert in_order.p_value < 1e-100
    # Early joiners favoured a little (the first tenth drawn into the first half) is caught.
    biased = drawn[:]
    early = sorted(range(count // 10), key=lambda i: drawn[i])
    for i in early:
        biased[i] = min(biased[i], random.Random(i).randint(1, count // 2))
    assert position_table(list(range(count)), biased, 10).p_value < 0.001


# --- the figures on made-up queues -------------------------------------------------------------


def place(n: int, lane: int, rank: int | None, joined: float, admitted: float | None) -> PlaceRow:
    return PlaceRow(
        f"p{n}", lane, rank, "waiting" if admitted is None else "used", joined, admitted
    )


def steady_queue(per_tick: int, ticks: int, *, start: float = 100.0) -> list[PlaceRow]:
    """Everybody joins before the opening at `start`; `per_tick` admitted every 0.5 s."""
    places = []
    n = 0
    for tick in range(1, ticks + 1):
        for _ in range(per_tick):
            n += 1
            places.append(place(n, 1, n, start - 10 + n * 1e-4, start + tick * 0.5))
    # Still waiting at the end: the queue never emptied.
    places += [place(n + i, 1, n + i, start - 5, None) for i in range(1, 4)]
    return places


def test_the_rate_of_a_queue_that_never_empties() -> None:
    rate = admission_rate(steady_queue(5, 40), per_minute=600, opening=100.0)
    assert rate.admitted == 200 and rate.ticks == 40
    assert rate.measured_per_minute == pytest.approx(600)
    assert rate.within_tolerance is True
    assert rate.ahead_of_rate <= 1


def test_the_rate_leaves_out_ticks_when_the_queue_was_empty() -> None:
    # 5 a tick while a backlog lasts (ticks 1-20: joined at 95; ticks 41-60: joined just
    # before tick 41), and between them a lull: 1 a tick, each admitted as it arrives.
    places = []
    n = 0
    for tick in range(1, 61):
        moment = 100 + tick * 0.5
        busy = tick <= 20 or tick > 40
        for _ in range(5 if busy else 1):
            n += 1
            joined = (95.0 if tick <= 20 else 119.95) if busy else moment - 0.01
            places.append(place(n, 1, n, joined, moment))
    places.append(place(n + 1, 1, n + 1, 119.95, None))
    rate = admission_rate(places, per_minute=600, opening=100.0)
    assert rate.measured_per_minute == pytest.approx(600)
    # Only between two ticks that both left somebody waiting: ticks 1-19 and 41-60.
    assert rate.measured_seconds == pytest.approx(18 * 0.5 + 19 * 0.5)
    assert rate.measured_admissions == 18 * 5 + 19 * 5


def test_a_burst_beyond_the_rate_is_caught() -> None:
    places = [place(n, 1, n, 90.0, 100.5) for n in range(1, 101)]
    rate = admission_rate(places, per_minute=600, opening=100.0)
    assert rate.ahead_of_rate > 90
    assert rate.measured_per_minute is None  # nobody left waiting: not measurable


def test_arrivals_in_join_order_and_out_of_it() -> None:
    fair = steady_queue(5, 10)
    result = arrival_fairness(fair)
    assert result.spearman == pytest.approx(1.0)
    assert (result.overtakers, result.skipped) == (0, 0)
    # Two places of different ticks swap: ρ < 1 and one overtook.
    swapped = list(fair)
    a, b = swapped[2], swapped[12]
    swapped[2] = PlaceRow(a.id, a.lane, a.rank, a.status, a.joined, b.admitted)
    swapped[12] = PlaceRow(b.id, b.lane, b.rank, b.status, b.joined, a.admitted)
    result = arrival_fairness(swapped)
    assert result.spearman is not None and result.spearman < 1
    assert result.overtakers >= 1
    # An early place left waiting while later ones were admitted: skipped.
    skipped = list(fair)
    first = skipped[0]
    skipped[0] = PlaceRow(first.id, 1, first.rank, "waiting", first.joined, None)
    assert arrival_fairness(skipped).skipped == 1


def test_the_clients_order_is_checked_independently() -> None:
    places = [place(1, 1, 1, 0.0, 10.0), place(2, 1, 2, 0.0, 10.5), place(3, 1, 3, 0.0, 10.5)]
    # p1 answered before p2 was sent, p3 overlapped p2: no violation.
    joins = [ClientJoin("p1", 0.0, 0.1), ClientJoin("p2", 0.2, 0.3), ClientJoin("p3", 0.25, 0.4)]
    assert arrival_fairness(places, joins).client_order_violations == 0
    # p2's join was answered before p1's was sent, yet p1 was admitted first... that is fine;
    # the other way round is not: p1 answered first but admitted after p2.
    late = [place(1, 1, 1, 0.0, 11.0), place(2, 1, 2, 0.0, 10.5)]
    joins = [ClientJoin("p1", 0.0, 0.1), ClientJoin("p2", 0.2, 0.3)]
    assert arrival_fairness(late, joins).client_order_violations == 1


def test_the_pre_queue_draw_and_the_lanes() -> None:
    count = 400
    drawn = list(range(1, count + 1))
    random.Random(5).shuffle(drawn)
    fair = [place(n, 0, drawn[n], float(n), 200.0 + drawn[n]) for n in range(count)]
    result = pre_queue_fairness(fair)
    assert result.groups == 8 and result.dof == 49
    assert result.uniform is True
    ordered = [place(n, 0, n + 1, float(n), 200.0 + n) for n in range(count)]
    assert pre_queue_fairness(ordered).uniform is False
    assert pre_queue_fairness(fair[:10]).p_value is None
    arrivals = [place(1000 + n, 1, n + 1, 150.0, 700.0 + n) for n in range(5)]
    assert lane_order_violations(fair + arrivals) == 0
    early_arrival = [place(2000, 1, 1, 150.0, 300.0)]
    assert lane_order_violations(fair + early_arrival) > 0


def test_the_most_held_at_once() -> None:
    assert most_at_once([]) == 0
    assert most_at_once([(0, 10, 4), (5, 15, 4), (20, 30, 4)]) == 8
    # A release followed by a re-hold at the same instant does not overlap.
    assert most_at_once([(0, 10, 4), (10, 20, 4)]) == 4
    assert most_at_once([(0, 0, 4)]) == 0


# --- the command line --------------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(["simulate", *argv])


def test_the_cli_offers_onsale_and_keeps_the_other_scenarios() -> None:
    args = parse(
        "onsale", "--buyers", "100000", "--tickets", "20000", "--pre-queue-share", "0.2",
        "--admit-per-minute", "30000", "--no-scalper", "--seed", "4",
    )  # fmt: skip
    plan = onsale.plan_from_args(args)
    assert (plan.buyers, plan.tickets, plan.pre_queue, plan.admit_per_minute) == (
        100_000, 20_000, 20_000, 30_000,
    )  # fmt: skip
    assert plan.scalper is False and plan.cap == 4 and plan.concurrency == 256
    assert onsale.plan_from_args(parse("onsale", "--cap", "0")).cap is None
    assert parse("one-ticket", "--buyers", "5").tickets is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["onsale", "--pre-queue-share", "1.5"], "--pre-queue-share must be between 0 and 1"),
        (["onsale", "--buyers", "0"], "--buyers must be positive"),
        (["onsale", "--pool", "3"], "--pool do(es) not go with"),
        (["onsale", "--admit-per-minute", "2000000"], "at most 1,000,000"),
    ],
)
def test_bad_onsale_plans(argv: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        onsale.plan_from_args(parse(*argv))


def test_flags_of_the_wrong_scenario_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings(_env_file=None)
    assert cli.cmd_simulate(parse("one-ticket", "--tickets", "5"), settings) == 2
    assert "--tickets do(es) not go with `simulate one-ticket`" in capsys.readouterr().err
    assert cli.cmd_simulate(parse("onsale", "--idempotency-keys"), settings) == 2
    assert "--idempotency-keys" in capsys.readouterr().err


def test_onsale_needs_the_servers_database(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("POSTGRES_HOST", raising=False)
    settings = Settings(_env_file=None)
    args = parse("onsale", "--url", "http://127.0.0.1:9", "--admin-token", "x" * 32)
    assert onsale.main(args, settings) == 2
    assert "reads its figures from the server's database" in capsys.readouterr().err
