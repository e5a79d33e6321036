"""Bootstrap intervals, paired deltas, p_front and seed noise against hand-computed cases."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from tsq.method.metrics import ProblemSums
from tsq.method.stats import (
    FRONT_CLASS_LABELS,
    absolute_intervals,
    aggregate_replicates,
    classify_front,
    combined_se,
    front_spread,
    largest_separated_set,
    non_dominated,
    p_front,
    paired_intervals,
    percentile_interval,
    pooled_seed_noise,
    resample_weights,
    seed_covariance,
)


def _sums(problems: dict[str, list[tuple[int, bool]]], budget: int = 100) -> ProblemSums:
    """ProblemSums from {problem: [(tokens, correct), ...]}, one step per response, none truncated."""
    records = [
        {"problem_id": pid, "n_tokens": n, "correct": ok, "steps": 1, "truncated": False}
        for pid, rs in problems.items()
        for n, ok in rs
    ]
    return ProblemSums.from_records(records, budget)


def test_resample_weights_are_seeded_draws_of_every_problem_count() -> None:
    w = resample_weights(5, 1000, seed=3)
    assert w.shape == (1000, 5) and (w.sum(axis=1) == 5).all() and (w >= 0).all()
    assert np.array_equal(w, resample_weights(5, 1000, seed=3))
    assert not np.array_equal(w, resample_weights(5, 1000, seed=4))
    # multinomial counts of 5 draws over 5 problems: each problem's count has mean 1 and variance
    # 5·(1/5)·(4/5) = 0.8, two problems' counts covariance −5·(1/5)² = −0.2 (rows summing to 5 alone, e.g.
    # always one draw of each, would give variance 0)
    assert w.mean(axis=0) == pytest.approx(np.ones(5), abs=0.1)
    assert w.var(axis=0, ddof=1) == pytest.approx(np.full(5, 0.8), abs=0.12)
    assert np.cov(w.T)[0, 1] == pytest.approx(-0.2, abs=0.07)
    assert (resample_weights(1, 10, seed=0) == 1).all()
    with pytest.raises(ValueError):
        resample_weights(0, 10, seed=0)


def test_percentile_interval_ignores_undefined_draws() -> None:
    assert percentile_interval(np.array([1.0, np.nan, 1.0])) == (1.0, 1.0)
    assert percentile_interval(np.array([np.nan])) == (None, None)
    lo, hi = percentile_interval(np.arange(101.0))  # percentiles of 0..100 are the values themselves
    assert (lo, hi) == pytest.approx((2.5, 97.5))


def test_absolute_intervals_hand_computed() -> None:
    # Two problems: a has 1 correct response of 10 tokens, b has 3 wrong ones of 30 tokens. A resample draws
    # (a, a), (a, b) or (b, b) with probability 1/4, 1/2, 1/4:
    #   accuracy  1, 1/4, 0         → interval [0, 1], point 1/4, bootstrap mean 3/8, sd 3/8
    #   Len-A     10, 25, 30        → interval [10, 30], point 25
    #   Len-T     10, 10, undefined → interval [10, 10], point 10
    sums = _sums({"a": [(10, True)], "b": [(30, False)] * 3})
    est = absolute_intervals(sums, n_resamples=4000, seed=0)
    acc, len_all, len_correct = est["accuracy"], est["len_all"], est["len_correct"]
    assert (acc.value, acc.lo, acc.hi) == (0.25, 0.0, 1.0)
    assert acc.se == pytest.approx(3 / 8, abs=0.01)  # sqrt(1/4 + 1/2 · 1/16 − (3/8)²)
    assert (len_all.value, len_all.lo, len_all.hi) == (25.0, 10.0, 30.0)
    assert (len_correct.value, len_correct.lo, len_correct.hi) == (10.0, 10.0, 10.0)
    # AUC at B = 100: a contributes 0.9; (a, a) → 0.9, (a, b) → 0.9/4, (b, b) → 0
    assert (est["auc"].value, est["auc"].lo, est["auc"].hi) == pytest.approx((0.225, 0.0, 0.9))
    assert est["tokens_per_step"].value == 25.0  # 100 tokens over 4 one-step responses


def test_one_problem_has_no_problem_noise() -> None:
    est = absolute_intervals(_sums({"a": [(10, True), (20, False)]}), n_resamples=200, seed=1)
    assert (est["accuracy"].lo, est["accuracy"].hi, est["accuracy"].se) == (0.5, 0.5, 0.0)


def test_undefined_metric_has_no_interval() -> None:
    est = absolute_intervals(_sums({"a": [(10, False)], "b": [(5, False)]}), n_resamples=100, seed=0)
    assert est["len_correct"].value is None and est["len_correct"].lo is None


def test_paired_delta_hand_computed() -> None:
    # Per-problem accuracy deltas 1 (problem a) and 0 (problem b): a resample's delta is 1, 1/2 or 0.
    base = _sums({"a": [(10, False)], "b": [(10, True)]})
    new = _sums({"a": [(5, True)], "b": [(10, True)]})
    est = paired_intervals(base, new, n_resamples=4000, seed=1)
    d = est["accuracy_delta"]
    assert (d.value, d.lo, d.hi) == (0.5, 0.0, 1.0)
    # Len-A reduction: (a, a) → 1 − 5/10, (a, b) → 1 − 15/20, (b, b) → 0
    r = est["token_reduction"]
    assert (r.value, r.lo, r.hi) == (0.25, 0.0, 0.5)
    # Len-T: base's correct responses are b's only, so (a, a) leaves the baseline's Len-T undefined
    assert est["len_correct_reduction"].value == pytest.approx(1 - 7.5 / 10)


def test_paired_intervals_cancel_problem_difficulty() -> None:
    # Problems of very different difficulty, the trial one response better on every problem: the paired
    # delta has no width, although each system's own accuracy interval is wide.
    base = _sums({f"p{i}": [(10, j < i) for j in range(10)] for i in range(10)})
    new = _sums({f"p{i}": [(10, j <= i) for j in range(10)] for i in range(10)})
    d = paired_intervals(base, new, n_resamples=500, seed=0)["accuracy_delta"]
    assert (d.value, d.lo, d.hi) == pytest.approx((0.1, 0.1, 0.1))
    own = absolute_intervals(new, n_resamples=500, seed=0)["accuracy"]
    assert own.hi - own.lo > 0.2  # type: ignore[operator]


def test_identical_systems_have_zero_deltas_and_unshared_problems_are_ignored() -> None:
    base = _sums({"a": [(10, True), (30, False)], "b": [(20, False)], "c": [(5, True)]})
    new = _sums({"a": [(10, True), (30, False)], "b": [(20, False)], "c": [(5, True)], "extra": [(1, True)]})
    for e in paired_intervals(base, new, n_resamples=300, seed=0).values():
        assert e.lo == e.hi == e.value == pytest.approx(0.0)
    with pytest.raises(ValueError, match="share no eval problems"):
        paired_intervals(base, _sums({"z": [(1, True)]}), n_resamples=10, seed=0)


def test_intervals_are_seeded() -> None:
    sums = _sums({f"p{i}": [(10 + i, i % 3 == 0), (20, i % 2 == 0)] for i in range(30)})
    assert absolute_intervals(sums, 300, seed=5) == absolute_intervals(sums, 300, seed=5)
    assert absolute_intervals(sums, 300, seed=5) != absolute_intervals(sums, 300, seed=6)


# -- the front ---------------------------------------------------------------------------------------------


def test_non_dominated_hand_computed() -> None:
    # one scenario, two objectives to minimise: (1, 1) and (2, 0) trade off, (2, 2) is dominated by both,
    # a copy of (1, 1) ties with it, and an infeasible (0, 0) neither counts nor dominates
    losses = np.array([[[1, 1]], [[2, 0]], [[2, 2]], [[1, 1]], [[0, 0]]], dtype=float)
    feasible = np.array([[True], [True], [True], [True], [False]])
    assert non_dominated(losses, feasible)[:, 0].tolist() == [True, True, False, True, False]


def _problems(n: int, better: set[int] = frozenset(), worse: set[int] = frozenset()) -> ProblemSums:
    """n problems of 4 responses: all correct and short on `better` ones, all wrong and long on `worse`."""
    out = {}
    for i in range(n):
        if i in better:
            out[f"p{i:02d}"] = [(10, True)] * 4
        elif i in worse:
            out[f"p{i:02d}"] = [(40, False)] * 4
        else:  # middling, and varying from problem to problem
            out[f"p{i:02d}"] = [(20 + i % 5, j < i % 4) for j in range(4)]
    return _sums(out)


ACC_LEN = [("accuracy", "maximize"), ("len_all", "minimize")]


def test_p_front_of_a_dominating_trial_is_one() -> None:
    base = _problems(30)
    strong = _problems(30, better=set(range(0, 30, 2)))  # better on half the problems, equal on the rest
    weak = _problems(30, worse=set(range(0, 30, 2)))
    p = p_front({"strong": strong, "weak": weak}, base, ACC_LEN, n_resamples=500, seed=0)
    assert p == {"strong": 1.0, "weak": 0.0}


def test_p_front_of_trials_tied_within_noise_is_between_zero_and_one() -> None:
    # A is better than the baseline on problems 0-2, B on problems 3-5, both equal elsewhere: each resample
    # draws more of one group or the other, so each trial dominates in part of the resamples.
    base = _problems(30)
    a, b = _problems(30, better={0, 1, 2}), _problems(30, better={3, 4, 5})
    p = p_front({"a": a, "b": b}, base, ACC_LEN, n_resamples=2000, seed=0)
    assert 0.2 < p["a"] < 0.8 and 0.2 < p["b"] < 0.8
    assert p["a"] + p["b"] >= 1.0  # a resample that ties them puts both on the front


def test_p_front_relative_objectives_match_their_absolute_metrics() -> None:
    base = _problems(30)
    trials = {"a": _problems(30, better={0, 1, 2}), "b": _problems(30, better={3, 4, 5}), "c": _problems(30)}
    absolute = p_front(trials, base, ACC_LEN, n_resamples=500, seed=2)
    relative = [("accuracy_delta", "maximize"), ("token_reduction", "maximize")]
    assert p_front(trials, base, relative, n_resamples=500, seed=2) == absolute


def test_p_front_recomputes_feasibility_in_each_resample() -> None:
    base = _problems(30)
    hopeless = _problems(30, worse=set(range(30)))  # every response lost: far below any allowed drop
    assert p_front({"t": hopeless}, base, ACC_LEN, n_resamples=300, seed=0) == {"t": 1.0}
    assert p_front({"t": hopeless}, base, ACC_LEN, n_resamples=300, seed=0, max_accuracy_drop=0.05) == {
        "t": 0.0
    }
    assert p_front({"t": hopeless}, base, ACC_LEN, n_resamples=300, seed=0, max_accuracy_drop=0.9) == {
        "t": 1.0
    }
    # p03: 3 of 4 correct in the baseline, 0 here. The accuracy drop of a resample is 3·w/120 = 0.025·w, w how
    # often p03 is drawn (Binomial(30, 1/30)); within 0.03 iff w ≤ 1: (29/30)^30 + (29/30)^29 = 0.7357
    borderline = _problems(30, worse={3})
    p = p_front({"t": borderline}, base, ACC_LEN, n_resamples=4000, seed=0, max_accuracy_drop=0.03)
    assert p["t"] == pytest.approx((29 / 30) ** 30 + (29 / 30) ** 29, abs=0.02)


RELATIVE = [("accuracy_delta", "maximize"), ("token_reduction", "maximize")]


def test_p_front_with_seed_noise_is_the_same_for_absolute_and_relative_objectives() -> None:
    # Trials near the feasibility bound (3 points) and close in both objectives: with seed noise on accuracy
    # and Len-A, the relative objectives and feasibility must move with the absolute metrics they derive
    # from, so both spellings give the same p_front. Drawn per metric (derived ones unmoved, feasibility
    # read from a moved accuracy), they did not.
    base = _problems(30)
    trials = {
        "a": _problems(30, better={0}, worse={3}),
        "b": _problems(30, worse={5}),
        "c": _problems(30, better={1, 2}, worse={4, 6, 7}),
    }
    kw = {"n_resamples": 2000, "seed": 5, "max_accuracy_drop": 0.03}
    sd = {"accuracy": 0.02, "len_all": 0.4}
    noisy = p_front(trials, base, ACC_LEN, seed_sd=sd, **kw)
    assert p_front(trials, base, RELATIVE, seed_sd=sd, **kw) == noisy
    corr = {("accuracy", "len_all"): 0.6}
    assert p_front(trials, base, RELATIVE, seed_sd=sd, seed_corr=corr, **kw) == p_front(
        trials, base, ACC_LEN, seed_sd=sd, seed_corr=corr, **kw
    )
    assert noisy != p_front(trials, base, ACC_LEN, **kw)  # the seed noise counts
    with pytest.raises(ValueError, match="give it for accuracy"):
        p_front(trials, base, ACC_LEN, seed_sd={"accuracy_delta": 0.02}, **kw)


@pytest.mark.parametrize("rho", [0.0, 0.5, -0.5])
def test_p_front_draws_a_trials_seed_noise_jointly(rho: float) -> None:
    # One problem (no problem noise) and two identical trials: only seed noise separates them. The
    # differences of their draws are bivariate normal with the metrics' correlation ρ, so A dominates B
    # (more accurate and shorter) with the orthant probability 1/4 + arcsin(−ρ)/(2π), and B is on the front
    # otherwise: p_front = 3/4 at ρ 0, 5/6 at ρ 0.5 (accuracy and length move together), 2/3 at −0.5.
    one = _sums({"p": [(10, True), (12, False)]})
    p = p_front({"a": one, "b": one}, one, ACC_LEN, n_resamples=20000, seed=0,
                seed_sd={"accuracy": 0.05, "len_all": 1.0},
                seed_corr={("accuracy", "len_all"): rho})  # fmt: skip
    expected = 1 - (0.25 + math.asin(-rho) / (2 * math.pi))
    assert p["a"] == pytest.approx(expected, abs=0.012) and p["b"] == pytest.approx(expected, abs=0.012)


def test_seed_covariance_and_pooled_seed_noise_hand_computed() -> None:
    names, cov = seed_covariance(
        {"accuracy": 0.1, "len_all": 2.0, "auc": 0.0}, {("len_all", "accuracy"): 0.5}
    )
    assert names == ["accuracy", "len_all"]  # a zero SD adds nothing
    assert cov == pytest.approx(np.array([[0.01, 0.1], [0.1, 4.0]]))
    with pytest.raises(ValueError, match="len_all"):
        seed_covariance({"token_reduction": 0.01})
    with pytest.raises(ValueError, match="correlation"):
        seed_covariance({"accuracy": 0.1, "len_all": 1.0}, {("accuracy", "len_all"): 1.5})
    # deviations from each group's mean: a ±1, l ±2 (same sign) in the first; a 0, l ±1 in the second; the
    # third has one run. Scatter: aa 2, ll 8 + 2 = 10, al 4; over df 2: var 1 and 5, cov 2
    groups = [
        [{"a": 1, "l": 10}, {"a": 3, "l": 14}],
        [{"a": 2, "l": 5}, {"a": 2, "l": 7}],
        [{"a": 9, "l": 1}],
    ]
    noise = pooled_seed_noise(groups, ["a", "l"])
    assert noise is not None and noise.dof == 2
    assert noise.sd == pytest.approx({"a": 1.0, "l": 5**0.5})
    assert noise.corr == pytest.approx({("a", "l"): 2 / 5**0.5})
    assert pooled_seed_noise([[{"a": 1.0}]], ["a"]) is None


def test_p_front_rejects_bad_objectives() -> None:
    base = _problems(5)
    with pytest.raises(KeyError):
        p_front({"t": base}, base, [("speed", "maximize")], n_resamples=10, seed=0)
    with pytest.raises(ValueError):
        p_front({"t": base}, base, [("accuracy", "up")], n_resamples=10, seed=0)
    assert p_front({}, base, ACC_LEN, n_resamples=10, seed=0) == {}


def test_largest_separated_set_hand_computed() -> None:
    # a-b and b-c apart, a-c not: the largest set is a pair (the first one in order: a, b); all apart: all
    apart = {("a", "b"): True, ("a", "c"): False, ("b", "c"): True}
    assert largest_separated_set(["a", "b", "c"], apart) == ("a", "b")
    assert largest_separated_set(["a", "b", "c"], dict.fromkeys(apart, True)) == ("a", "b", "c")
    assert largest_separated_set(["a", "b", "c"], dict.fromkeys(apart, False)) == ("a",)
    # past EXHAUSTIVE_UP_TO keys the search is greedy in key order: 14 points on a line, neighbours not apart,
    # every second one apart from each other -> the greedy pick is 0, 2, 4, ..., 12 (7 keys, here the largest)
    keys = list(range(14))
    line = {(a, b): b - a >= 2 for a, b in itertools.combinations(keys, 2)}
    assert largest_separated_set(keys, line) == (0, 2, 4, 6, 8, 10, 12)


def test_front_spread_hand_computed() -> None:
    # Lengths 10 / 20 / 21 on every response of every problem: each gap is exact (SE 0) and non-zero, so all
    # three trials are apart, 1 token as much as 10.
    def flat(length: int) -> ProblemSums:
        return _sums({f"p{i}": [(length, i % 2 == 0)] * 2 for i in range(10)})

    trials = {1: flat(10), 2: flat(20), 3: flat(21)}
    spread = front_spread(trials, "len_all", n_resamples=200, seed=0)
    assert spread.values == {1: 10.0, 2: 20.0, 3: 21.0}
    assert spread.gaps[(1, 2)] == pytest.approx((-10.0, 0.0))
    assert spread.gaps[(2, 3)] == pytest.approx((-1.0, 0.0))
    assert spread.separated == (1, 2, 3)
    # Seed noise of SD 0.5 per trial: a gap's SE is sqrt(0 + 2 * 0.25) = 0.707, so 1 token is within 2 SE and
    # trials 2 and 3 are one point; trial 1 stays apart from both (another metric's seed SD does not count)
    sds = {"len_all": 0.5, "accuracy": 9.0}
    noisy = front_spread(trials, "len_all", n_resamples=200, seed=0, seed_sd=sds)
    assert noisy.gaps[(2, 3)][1] == pytest.approx(math.sqrt(0.5))
    assert noisy.separated == (1, 2)
    # an objective that is a change against the baseline is spread in what it changes
    assert front_spread(trials, "token_reduction", n_resamples=50, seed=0).metric == "len_all"


def test_front_spread_se_is_the_paired_bootstrap_sd() -> None:
    # Trial b is 2 tokens longer on half the problems and equal on the rest: the gap's resampled SD is that of
    # a mean of 0/2 values (SD 1) over 40 problems, about 1/sqrt(40) = 0.158; problem lengths (10..49) vary
    # far more but cancel, since both trials are resampled alike
    a = _sums({f"p{i:02d}": [(10 + i, True)] for i in range(40)})
    b = _sums({f"p{i:02d}": [(10 + i + 2 * (i % 2), True)] for i in range(40)})
    spread = front_spread({"a": a, "b": b}, "len_all", n_resamples=4000, seed=1)
    gap, se = spread.gaps[("a", "b")]
    assert gap == pytest.approx(-1.0) and se == pytest.approx(1 / math.sqrt(40), rel=0.1)
    assert spread.separated == ("a", "b")  # 1.0 > 2 x 0.158


def test_classify_front() -> None:
    assert [classify_front(p) for p in (1.0, 0.9, 0.5, 0.1, 0.09, 0.0)] == [
        "clear", "clear", "indistinguishable", "indistinguishable", "off", "off",
    ]  # fmt: skip
    assert classify_front(0.7, hi=0.6, lo=0.2) == "clear" and classify_front(0.15, hi=0.6, lo=0.2) == "off"
    assert set(FRONT_CLASS_LABELS) == {"clear", "indistinguishable", "off"}
    with pytest.raises(ValueError):
        classify_front(0.5, hi=0.1, lo=0.9)


# -- seed noise --------------------------------------------------------------------------------------------


def test_combined_se_hand_computed() -> None:
    assert combined_se(3.0, 4.0) == 5.0
    assert combined_se(3.0, 4.0, n_reps=4) == pytest.approx(math.sqrt(9 + 16 / 4))
    assert combined_se(0.0, 2.0, n_reps=4) == 1.0
    with pytest.raises(ValueError):
        combined_se(1.0, 1.0, n_reps=0)


def test_aggregate_replicates_is_the_t_interval_without_bootstrap_noise() -> None:
    est = aggregate_replicates([1.0, 2.0, 3.0])
    assert (est.mean, est.n, est.sd_seed) == (2.0, 3, 1.0)
    assert est.se == pytest.approx(1 / math.sqrt(3))
    # t quantile 0.975 at 2 degrees of freedom is 4.302653
    assert (est.lo, est.hi) == pytest.approx(
        (2 - 4.302653 / math.sqrt(3), 2 + 4.302653 / math.sqrt(3)), abs=1e-5
    )


def test_aggregate_replicates_adds_bootstrap_noise_with_satterthwaite_dof() -> None:
    # values 1, 3: sd √2, seed variance of the mean 1; se_boot 1 → se² = 2, dof = 1 · (2/1)² = 4, t = 2.776445
    est = aggregate_replicates([1.0, 3.0], se_boot=[1.0, 1.0])
    assert est.se == pytest.approx(math.sqrt(2))
    assert est.hi - est.mean == pytest.approx(2.776445 * math.sqrt(2), abs=1e-5)


def test_aggregate_replicates_of_one_run_needs_a_known_seed_spread() -> None:
    assert aggregate_replicates([5.0]).se is None
    est = aggregate_replicates([5.0], se_boot=0.3, sd_seed=0.4)  # se 0.5, normal quantile 1.959964
    assert est.se == pytest.approx(0.5)
    assert (est.lo, est.hi) == pytest.approx((5 - 0.979982, 5 + 0.979982), abs=1e-5)
    assert aggregate_replicates([2.0, 2.0]).hi == 2.0
    with pytest.raises(ValueError):
        aggregate_replicates([])


def test_aggregate_replicates_with_a_given_sd_and_bootstrap_noise_uses_welch_satterthwaite() -> None:
    from scipy.stats import t

    # one run, se_boot 0.3, a given seed SD 0.4 measured at 4 df: se² = 0.09 + 0.16 = 0.25, and the
    # degrees of freedom 4 · (0.25 / 0.16)² = 9.765625 (more than 4: part of the SE is known exactly)
    est = aggregate_replicates([5.0], se_boot=0.3, sd_seed=0.4, sd_dof=4)
    assert est.se == pytest.approx(0.5)
    assert est.hi - 5.0 == pytest.approx(float(t.ppf(0.975, 9.765625)) * 0.5)
    assert est.hi - 5.0 < float(t.ppf(0.975, 4)) * 0.5
