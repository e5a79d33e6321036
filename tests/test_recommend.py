"""The recommendation rule (`tsq.report.recommend`) against hand-computed intervals."""

from __future__ import annotations

import pytest

from tsq.report.recommend import Candidate, fragment, judge, recommend, trial_command

OBJECTIVES = [("accuracy", "maximize"), ("len_all", "minimize")]
Z = 1.959964  # the normal's 97.5% quantile


def _c(number: int, length: float, delta: float, se: float = 0.02, **kw: object) -> Candidate:
    return Candidate(number, {"alpha": 0.1 * number}, length, delta, se, **kw)  # type: ignore[arg-type]


def test_judge_by_the_whole_interval_above_the_limit() -> None:
    # -1.5 pts with SE 1.75/1.96 pts: the interval's low end is exactly -5 pts, the limit: feasible
    assert judge(_c(0, 30, -0.015, 0.035 / Z), 0.05).feasible == "yes"
    # -2 pts with SE 2: low end -2 - 1.96*2 = -5.9 pts, under the limit while the value is above: unsure
    unsure = judge(_c(1, 30, -0.02, 0.02), 0.05)
    assert unsure.feasible == "unsure" and unsure.lo == pytest.approx(-0.02 - Z * 0.02)
    assert judge(_c(2, 30, -0.06, 0.01), 0.05).feasible == "no"  # the value under the limit
    assert judge(_c(3, 30, 0.0, 0.01, stopped=True), 0.05).feasible == "stopped"


def test_seed_noise_widens_the_interval_judged() -> None:
    # 0 pts, bootstrap SE 1: low end -1.96 pts without seed noise, feasible at a 5-point limit. A seed SD of 2
    # pts (4 df) makes the SE sqrt(1 + 4) = 2.236 pts at 4*(5/4)^2 = 6.25 Welch-Satterthwaite df: t 2.42,
    # low end -5.4 pts, under the limit.
    trial = _c(0, 30, 0.0, 0.01)
    assert judge(trial, 0.05).feasible == "yes"
    noisy = judge(trial, 0.05, seed_sd=0.02, seed_dof=4)
    assert noisy.feasible == "unsure" and -0.0545 < noisy.lo < -0.0535  # type: ignore[operator]
    # a replicated trial is judged by its fresh seeds' mean and interval, not the sweep's run
    replicated = _c(1, 30, 0.03, 0.01, replicate_delta=(-0.01, -0.07, 0.05, 3))
    assert judge(replicated, 0.05).feasible == "unsure" and judge(replicated, 0.05).seeds == 3


def test_the_most_compressed_sure_trial_with_the_ones_noise_cannot_separate() -> None:
    trials = [
        _c(0, 40.0, 0.02),  # sure, long
        _c(1, 31.0, -0.01),  # sure
        _c(2, 30.0, -0.015, 0.035 / Z),  # sure (at the limit), shortest of the sure ones
        _c(3, 25.0, -0.03),  # shorter but unsure: never picked over a sure one
        _c(4, 20.0, -0.08),  # infeasible
    ]
    gaps = {(2, 1): (-1.0, 0.6), (2, 0): (-10.0, 0.7)}  # 1.67 SE: not separated; 14 SE: separated
    rec = recommend(trials, OBJECTIVES, 0.05, lambda a, b: gaps.get((a, b)))
    assert (rec.pick, rec.tied, rec.provisional) == (2, [1], False)
    assert [rec.judged[n].feasible for n in range(5)] == ["yes", "yes", "yes", "unsure", "no"]
    # every gap measured beyond 2 SE: the pick stands alone
    alone = recommend(trials, OBJECTIVES, 0.05, lambda a, b: (-5.0, 1.0))
    assert (alone.pick, alone.tied) == (2, [])
    # a maximised compression objective picks the highest
    up = recommend(trials, [("accuracy", "maximize"), ("token_reduction", "maximize")], 0.05,
                   lambda a, b: (-5.0, 1.0))  # fmt: skip
    assert up.pick == 0


def test_no_sure_trial_gives_a_provisional_pick_and_no_constraint_none() -> None:
    trials = [_c(0, 30.0, -0.03), _c(1, 25.0, -0.04), _c(2, 20.0, -0.09)]
    rec = recommend(trials, OBJECTIVES, 0.05, lambda a, b: (-5.0, 1.0))
    assert (rec.pick, rec.provisional) == (1, True)
    none = recommend(trials, OBJECTIVES, None, lambda a, b: None)
    assert none.pick is None and "no constraint" in (none.reason or "")
    nothing = recommend([_c(0, 30.0, -0.2)], OBJECTIVES, 0.05, lambda a, b: None)
    assert nothing.pick is None and nothing.reason == "no trial is feasible, even at its point value"


def test_knobs_ready_to_use_are_exact() -> None:
    params = {"alpha": 0.23330448123, "lambda": 1.7, "epsilon": 0.00684, "eta": 0.1}
    assert fragment(params) == "params: {alpha: 0.23330448123, epsilon: 0.00684, eta: 0.1, lambda: 1.7}"
    assert trial_command("sweeps/q.yaml", params) == (
        "tsq trial run sweeps/q.yaml --set alpha=0.23330448123 --set epsilon=0.00684 --set eta=0.1 "
        "--set lambda=1.7 --out runs/recommended"
    )


def test_without_seed_noise_the_table_interval_is_judged() -> None:
    # the report's bootstrap interval [-5.6, +2.8] pts, skewed; a normal one from the SE would differ from
    # what the table shows beside it
    trial = _c(8, 32.3, -0.014, 0.021, delta_interval=(-0.056, 0.028))
    judged = judge(trial, 0.05)
    assert (judged.lo, judged.hi, judged.feasible) == (-0.056, 0.028, "unsure")
    assert judge(trial, 0.05, seed_sd=0.001, seed_dof=10).lo != -0.056  # with seed noise: the combined SE
