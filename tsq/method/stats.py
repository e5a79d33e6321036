"""Uncertainty of the metrics: problem-bootstrap intervals, paired deltas, `p_front`, and seed noise.

Why these choices (docs/method.md, "Statistics"):
- The unit of resampling is the problem. A problem is easy or hard for all its samples, so its responses are
  correlated and an interval over responses would be too narrow.
- A resample is a weight vector over problems (multinomial counts: how often each problem was drawn), so the
  metrics of a resample are ratios of weighted per-problem sums (`tsq.method.metrics.ProblemSums`), computed
  for all resamples at once as (W @ numerator) / (W @ denominator).
- Deltas against the baseline are paired: the trial and the baseline are weighted by the same W, so problem
  difficulty cancels. `p_front` weights every trial and the baseline by the same W (joint resampling).
- Intervals are 95% percentile intervals of the resampled values. The weights depend only on (number of
  problems, resamples, seed), and problems are sorted by id, so every result evaluated on the same problems
  with the same `evaluation.seed` sees the same resamples, even when its intervals are computed separately.
- Seed noise (training and sampling seeds) is a separate component that the problem bootstrap cannot see; it
  is measured from replicates (`combined_se`, `aggregate_replicates`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

import numpy as np

from tsq.method.metrics import ProblemSums, absolute_values, metric, relative_values

LEVEL = 0.95
K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Estimate:
    """A point value with its bootstrap interval and standard error (None where undefined)."""

    value: float | None
    lo: float | None
    hi: float | None
    se: float | None


def resample_weights(n_problems: int, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, n_problems) bootstrap weights: row r counts how often resample r draws each problem.

    Each row is a draw of n_problems problems with replacement (a multinomial with equal probabilities), the
    classic nonparametric bootstrap written as weights.
    """
    if n_problems <= 0 or n_resamples <= 0:
        raise ValueError(f"need problems and resamples, got {n_problems} problems, {n_resamples} resamples")
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_problems, np.full(n_problems, 1.0 / n_problems), size=n_resamples).astype(float)


def shared_problems(*sums: ProblemSums) -> tuple[str, ...]:
    """The problems every result has, sorted (ValueError when there are none)."""
    shared = set(sums[0].problem_ids).intersection(*(s.problem_ids for s in sums[1:]))
    if not shared:
        raise ValueError("the results share no eval problems")
    return tuple(sorted(shared))


def percentile_interval(draws: np.ndarray, level: float = LEVEL) -> tuple[float | None, float | None]:
    """The central `level` percentile interval of bootstrap draws, ignoring undefined (NaN) draws."""
    finite = draws[~np.isnan(draws)]
    if finite.size == 0:
        return None, None
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(finite, [tail, 100 - tail])
    return float(lo), float(hi)


def bootstrap_se(draws: np.ndarray) -> float | None:
    """Standard deviation of the defined bootstrap draws: the bootstrap standard error."""
    finite = draws[~np.isnan(draws)]
    return float(np.std(finite, ddof=1)) if finite.size > 1 else None


def _estimate(value: float, draws: np.ndarray, level: float) -> Estimate:
    if math.isnan(value):
        return Estimate(None, None, None, None)
    lo, hi = percentile_interval(draws, level)
    return Estimate(value, lo, hi, bootstrap_se(draws))


def absolute_draws(sums: ProblemSums, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Every absolute metric in every resample: {metric: (n_resamples,)}; weights' columns are sums' rows."""
    return absolute_values(weights @ sums.sums)


def absolute_intervals(
    sums: ProblemSums, n_resamples: int, seed: int, level: float = LEVEL
) -> dict[str, Estimate]:
    """Point value and percentile-bootstrap interval of every absolute metric, resampling problems."""
    weights = resample_weights(len(sums.problem_ids), n_resamples, seed)
    point = absolute_values(sums.total())
    draws = absolute_draws(sums, weights)
    return {name: _estimate(float(point[name]), draws[name], level) for name in draws}


def paired_draws(base: ProblemSums, new: ProblemSums, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Every relative metric in every resample, the trial and the baseline weighted alike (rows aligned)."""
    return relative_values(absolute_draws(new, weights), absolute_draws(base, weights))


def paired_intervals(
    base: ProblemSums, new: ProblemSums, n_resamples: int, seed: int, level: float = LEVEL
) -> dict[str, Estimate]:
    """Point value and paired percentile-bootstrap interval of every relative metric (new against base).

    Both are restricted to the problems they share, and each resample weights the two alike, so a trial
    identical to the baseline has intervals of zero width. The point value uses the shared problems too.
    """
    ids = shared_problems(base, new)
    base, new = base.select(ids), new.select(ids)
    weights = resample_weights(len(ids), n_resamples, seed)
    point = relative_values(absolute_values(new.total()), absolute_values(base.total()))
    draws = paired_draws(base, new, weights)
    return {name: _estimate(float(point[name]), draws[name], level) for name in draws}


# -- the noise-aware front ---------------------------------------------------------------------------------


def non_dominated(losses: np.ndarray, feasible: np.ndarray) -> np.ndarray:
    """Which points are on the feasible front, for each of several scenarios at once.

    losses: (points, scenarios, objectives), every objective to be minimised; feasible: (points, scenarios).
    A feasible point is on the front unless another feasible point is no worse in every objective and better
    in one; infeasible points are never on it. Points equal in every objective are all on it.
    """
    on_front = feasible.copy()
    for i in range(losses.shape[0]):
        no_worse = (losses[i][None] <= losses).all(axis=-1)
        better = (losses[i][None] < losses).any(axis=-1)
        on_front &= ~(feasible[i][None] & no_worse & better)
    return on_front


def seed_covariance(
    seed_sd: Mapping[str, float], seed_corr: Mapping[tuple[str, str], float] | None = None
) -> tuple[list[str], np.ndarray]:
    """The metrics with seed noise and their between-seed covariance matrix, from SDs and correlations.

    Seed noise is given for absolute metrics only: a relative metric (Δacc, Len-A reduction) moves because
    what it is derived from moves, so noise of its own would double it and set it apart from feasibility
    (ValueError naming the metric to give instead). Pairs missing from `seed_corr` are uncorrelated."""
    names = [name for name, sd in seed_sd.items() if sd > 0]
    for name in list(seed_sd) + [n for pair in (seed_corr or {}) for n in pair]:
        m = metric(name)
        if m.relative:
            raise ValueError(
                f"seed noise of {name}: give it for {m.of}, the absolute metric it is derived from"
            )
    sd = np.array([seed_sd[n] for n in names], dtype=float)
    corr = np.eye(len(names))
    for (a, b), rho in (seed_corr or {}).items():
        if a in names and b in names and a != b:
            if not -1 <= rho <= 1:
                raise ValueError(f"seed correlation of {a} and {b} must be in [-1, 1], got {rho}")
            i, j = names.index(a), names.index(b)
            corr[i, j] = corr[j, i] = rho
    return names, corr * np.outer(sd, sd)


def p_front(
    trials: Mapping[K, ProblemSums],
    baseline: ProblemSums,
    objectives: Sequence[tuple[str, str]],
    *,
    n_resamples: int,
    seed: int,
    max_accuracy_drop: float | None = None,
    seed_sd: Mapping[str, float] | None = None,
    seed_corr: Mapping[tuple[str, str], float] | None = None,
) -> dict[K, float]:
    """Each trial's share of bootstrap resamples in which it is on the feasible Pareto front.

    Problems are resampled jointly: one weight vector per resample applies to every trial and to the baseline,
    over the problems they all share. In each resample every objective (a (metric, "maximize"/"minimize")
    pair; relative metrics against the baseline in the same resample) and feasibility (accuracy ≥ baseline
    accuracy − `max_accuracy_drop`, when given) are recomputed, then non-domination among the feasible trials
    (`non_dominated`). A trial with an undefined objective in a resample (e.g. Len-T with no correct
    response drawn) is not on the front in that resample. The baseline is a reference, not a competitor.

    Seed noise: `seed_sd` (absolute metric -> between-seed SD, measured from replicates) and `seed_corr`
    ((metric, metric) -> between-seed correlation) define a covariance (`seed_covariance`); in each resample
    each trial's absolute metrics move by one joint normal draw of it (a trial trained and sampled with other
    seeds lands elsewhere in accuracy and length at once), and its relative metrics and its feasibility are
    derived from the moved values. So an objective spelled relative (Δacc, Len-A reduction) gives the same
    p_front as its absolute metric. Without seed noise the front is judged by evaluation noise alone.
    """
    if not trials:
        return {}
    if not objectives:
        raise ValueError("p_front needs at least one objective")
    for name, direction in objectives:
        metric(name)
        if direction not in ("maximize", "minimize"):
            raise ValueError(f"objective {name}: direction must be maximize or minimize, got {direction!r}")
    noisy, cov = seed_covariance(seed_sd or {}, seed_corr)
    keys = list(trials)
    ids = shared_problems(baseline, *trials.values())
    weights = resample_weights(len(ids), n_resamples, seed)
    base_abs = absolute_draws(baseline.select(ids), weights)
    losses = np.empty((len(keys), n_resamples, len(objectives)))
    feasible = np.ones((len(keys), n_resamples), dtype=bool)
    rng = np.random.default_rng([seed, 1])
    for t, key in enumerate(keys):
        values = absolute_draws(trials[key].select(ids), weights)
        if noisy:
            draw = rng.multivariate_normal(
                np.zeros(len(noisy)), cov, size=n_resamples, method="eigh", check_valid="raise"
            )
            for j, name in enumerate(noisy):
                values[name] = values[name] + draw[:, j]
        values.update(relative_values(values, base_abs))
        for o, (name, direction) in enumerate(objectives):
            v = values[metric(name).name]
            losses[t, :, o] = v if direction == "minimize" else -v
        if max_accuracy_drop is not None:
            # a tiny tolerance so that a trial equal to the baseline minus exactly the drop stays feasible
            feasible[t] &= values["accuracy"] >= base_abs["accuracy"] - max_accuracy_drop - 1e-12
    feasible &= ~np.isnan(losses).any(axis=-1)
    on_front = non_dominated(np.nan_to_num(losses, nan=np.inf), feasible)
    return {key: float(on_front[t].mean()) for t, key in enumerate(keys)}


FrontClass = Literal["clear", "indistinguishable", "off"]
FRONT_CLASS_LABELS: dict[str, str] = {
    "clear": "clearly on the front",
    "indistinguishable": "not distinguishable from the front",
    "off": "off the front",
}


def classify_front(p: float, hi: float = 0.9, lo: float = 0.1) -> FrontClass:
    """ "clear" when p_front ≥ hi, "indistinguishable" when lo ≤ p_front < hi, else "off".

    With hi = 0.9 a trial is called on the front only when at most 10% of resamples put it off; with lo = 0.1
    a trial is called off only when at most 10% put it on.
    """
    if not 0 <= lo <= hi <= 1:
        raise ValueError(f"front thresholds need 0 <= lo <= hi <= 1, got lo={lo}, hi={hi}")
    if p >= hi:
        return "clear"
    return "indistinguishable" if p >= lo else "off"


@dataclass(frozen=True)
class FrontSpread(Generic[K]):
    """How far apart the front's trials lie along one objective, with the noise of each gap.

    A front of several trials whose values in an objective sit within noise of each other is one point said
    several times; only trials whose every pair is `threshold` SEs apart trace a curve in it."""

    metric: str
    values: dict[K, float]  # trial -> the metric on the shared problems
    gaps: dict[tuple[K, K], tuple[float, float]]  # (a, b) -> (value a − value b, SE of the difference)
    separated: tuple[K, ...]  # the largest set of trials whose every pair differs by more than threshold · SE
    threshold: float


EXHAUSTIVE_UP_TO = 12  # trials; past that the subsets are too many to try (2^n)


def largest_separated_set(keys: Sequence[K], apart: Mapping[tuple[K, K], bool]) -> tuple[K, ...]:
    """The largest subset of `keys` whose every pair (a, b), a before b in `keys`, is `apart`; the earliest
    in `keys` order among equally large ones. Exhaustive up to `EXHAUSTIVE_UP_TO` keys (fronts are small);
    past that greedy in `keys` order (a key joins when it is apart from every key already in), which for keys
    sorted by value is a large set but not always the largest."""
    if len(keys) > EXHAUSTIVE_UP_TO:
        chosen: list[K] = []
        for k in keys:
            if all(apart[(c, k)] for c in chosen):
                chosen.append(k)
        return tuple(chosen)
    for size in range(len(keys), 1, -1):
        for group in itertools.combinations(keys, size):
            if all(apart[pair] for pair in itertools.combinations(group, 2)):
                return group
    return tuple(keys[:1])


def front_spread(
    trials: Mapping[K, ProblemSums],
    metric_name: str,
    *,
    n_resamples: int,
    seed: int,
    threshold: float = 2.0,
    seed_sd: Mapping[str, float] | None = None,
) -> FrontSpread[K]:
    """Pairwise gaps of one metric between trials, each with the SE of the paired difference, and the largest
    set of trials pairwise more than `threshold` SEs apart (`largest_separated_set`).

    The trials are resampled jointly over the problems they share, so problem difficulty cancels from each gap
    (its SE is the SD of the resampled gap). `seed_sd` (metric -> between-seed SD measured from replicates, as
    for `p_front`) adds each trial's seed noise: SE² = SE_boot² + 2·SD² (two independent trainings). Without
    it the SE holds evaluation noise only. A relative metric (`token_reduction`) is measured in the metric it
    changes (`len_all`): the trials share one baseline, so their gap is there. Pairs are keyed (lower value,
    higher value)."""
    ids = shared_problems(*trials.values())
    weights = resample_weights(len(ids), n_resamples, seed)
    m = metric(metric_name)
    name = m.of if m.relative and m.of else m.name
    sd = (seed_sd or {}).get(name, 0.0)
    shared = {k: sums.select(ids) for k, sums in trials.items()}
    values = {k: float(absolute_values(sums.total())[name]) for k, sums in shared.items()}
    keys = sorted(trials, key=values.__getitem__)  # by value: what the greedy search of a large front needs
    draws = {k: absolute_draws(shared[k], weights)[name] for k in keys}
    gaps: dict[tuple[K, K], tuple[float, float]] = {}
    for a, b in itertools.combinations(keys, 2):
        se_boot = float(np.nanstd(draws[a] - draws[b]))
        gaps[(a, b)] = (values[a] - values[b], math.sqrt(se_boot**2 + 2 * sd**2))
    apart = {pair: abs(gap) > threshold * se for pair, (gap, se) in gaps.items()}
    return FrontSpread(name, values, gaps, largest_separated_set(keys, apart), threshold)


# -- seed noise --------------------------------------------------------------------------------------------


def combined_se(se_boot: float, sd_seed: float, n_reps: int = 1) -> float:
    """Standard error of a mean over `n_reps` seed replicates on the same problems: √(se_boot² + sd_seed²/n).

    The problem-sampling error `se_boot` does not shrink with replicates, because every replicate sees the
    same problems; the seed component does, as for any mean of n independent runs. `sd_seed` is the
    between-replicate standard deviation, which also holds the sampling noise of the responses that the
    bootstrap already counts, so the sum is slightly conservative.
    """
    if n_reps < 1:
        raise ValueError(f"n_reps must be at least 1, got {n_reps}")
    if se_boot < 0 or sd_seed < 0:
        raise ValueError("standard errors and deviations are not negative")
    return math.sqrt(se_boot**2 + sd_seed**2 / n_reps)


@dataclass(frozen=True)
class ReplicateEstimate:
    """Replicates of one metric summarised: mean, seed spread, total standard error and interval."""

    mean: float
    n: int
    sd_seed: float | None  # between-replicate standard deviation (ddof 1), or the one given
    se: float | None  # combined_se of the mean; None when no noise component is known
    lo: float | None
    hi: float | None


def aggregate_replicates(
    values: Sequence[float],
    se_boot: float | Sequence[float] | None = None,
    sd_seed: float | None = None,
    level: float = LEVEL,
    sd_dof: float | None = None,
) -> ReplicateEstimate:
    """Mean of replicates (same config, other seeds, same problems), its interval holding seed noise.

    se_boot: the problem-bootstrap standard error; given one per replicate, their mean is used (the replicates
    share problems, so this error is common to them and does not average out). sd_seed: the between-seed
    standard deviation; measured from `values` (ddof 1) when there are two or more, else it must be given
    (e.g. measured on other replicated configurations) for the seed component to count. sd_dof: the degrees
    of freedom of a given `sd_seed` (e.g. Σ(n_i − 1) of a `pooled_sd`); without it a given spread counts as
    known exactly (normal quantile).
    The interval is mean ± t·se, with t from Student's t at the Welch–Satterthwaite degrees of freedom of
    se² = se_boot² + sd²/n: dof·(se² / (sd²/n))², dof being n − 1 for a measured spread. It is the classic t
    interval of n replicates when the bootstrap part is 0 and tends to the normal interval when seed noise is
    small next to it.
    """
    from scipy.stats import norm, t  # deferred: scipy is slow to import and only this needs it

    if not values:
        raise ValueError("aggregate_replicates of no values")
    n = len(values)
    mean = float(np.mean(values))
    measured = n >= 2 and sd_seed is None
    sd = float(np.std(values, ddof=1)) if measured else sd_seed
    if se_boot is not None and not isinstance(se_boot, int | float):
        se_boot = float(np.mean(se_boot))
    if sd is None and se_boot is None:
        return ReplicateEstimate(mean, n, None, None, None, None)
    se = combined_se(float(se_boot or 0.0), float(sd or 0.0), n)
    seed_var = (sd or 0.0) ** 2 / n
    if se == 0:
        return ReplicateEstimate(mean, n, sd, 0.0, mean, mean)
    dof = n - 1 if measured else sd_dof
    if dof is not None and seed_var > 0:
        q = float(t.ppf(0.5 + level / 2, dof * (se**2 / seed_var) ** 2))
    else:
        q = float(norm.ppf(0.5 + level / 2))  # the seed spread is given (or absent): no estimation error here
    return ReplicateEstimate(mean, n, sd, se, mean - q * se, mean + q * se)


def pooled_sd(groups: Iterable[tuple[int, float | None]]) -> tuple[float, int] | None:
    """The SD pooled over groups of (size n_i, SD s_i), with its degrees of freedom:
    (√(Σ (n_i − 1)·s_i² / Σ (n_i − 1)), Σ (n_i − 1)). Groups of one (or without an SD) add nothing; None when
    no group has two members. It assumes one common spread: e.g. the seed noise of several configurations."""
    num, dof = 0.0, 0
    for n, sd in groups:
        if n >= 2 and sd is not None:
            num += (n - 1) * sd**2
            dof += n - 1
    return ((num / dof) ** 0.5, dof) if dof > 0 else None


@dataclass(frozen=True)
class SeedNoise:
    """Between-seed noise of several metrics, pooled over replicated configurations: what `p_front` draws
    jointly (`sd` as its `seed_sd`, `corr` as its `seed_corr`)."""

    sd: dict[str, float]
    corr: dict[tuple[str, str], float]
    dof: int  # Σ (n_i − 1) over the groups


def pooled_seed_noise(
    groups: Iterable[Sequence[Mapping[str, float]]], names: Sequence[str]
) -> SeedNoise | None:
    """The between-seed covariance pooled over groups of replicates (each group: one configuration's runs at
    several seeds, each run a {metric: value}), as SDs and correlations: Σ over groups of the products of
    deviations from the group's mean, over Σ (n_i − 1). Metrics some run lacks are left out; groups of one add
    nothing; None when no group has two runs."""
    groups = [list(g) for g in groups]
    kept = [n for n in names if all(n in run and run[n] is not None for g in groups for run in g)]
    scatter, dof = np.zeros((len(kept), len(kept))), 0
    for g in groups:
        if len(g) < 2:
            continue
        x = np.array([[float(run[n]) for n in kept] for run in g])
        dev = x - x.mean(axis=0)
        scatter += dev.T @ dev
        dof += len(g) - 1
    if dof == 0 or not kept:
        return None
    cov = scatter / dof
    sd = np.sqrt(np.diag(cov))
    corr = {
        (a, b): float(cov[i, j] / (sd[i] * sd[j]))
        for (i, a), (j, b) in itertools.combinations(enumerate(kept), 2)
        if sd[i] > 0 and sd[j] > 0
    }
    return SeedNoise({n: float(v) for n, v in zip(kept, sd, strict=True)}, corr, dof)


# -- verdicts at their stated confidence -------------------------------------------------------------------


def t_test(diff: float, se: float, df: float) -> float:
    """Two-sided p-value of a difference `diff` with standard error `se` at `df` degrees of freedom (Student's
    t; the normal when `df` is infinite)."""
    from scipy.stats import t  # deferred: scipy is slow to import

    if se <= 0:
        return 0.0 if diff != 0 else 1.0
    return float(2 * t.sf(abs(diff) / se, df))


def tost(diff: float, se: float, df: float, margin: float) -> float:
    """p-value of the two one-sided tests of equivalence within ±`margin` (H0: |true difference| ≥ margin):
    the larger of P(T ≥ (diff + margin)/se) and P(T ≤ (diff − margin)/se). Below α, the difference is
    "equivalent within ±margin" at level α; it needs |diff| + t·se < margin, so a noisy contrast never is."""
    from scipy.stats import t  # deferred: scipy is slow to import

    if margin <= 0:
        raise ValueError(f"an equivalence margin must be positive, got {margin}")
    if se <= 0:
        return 0.0 if abs(diff) < margin else 1.0
    return float(max(t.sf((diff + margin) / se, df), t.cdf((diff - margin) / se, df)))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment: sorted ascending, p_(i) · (m − i + 1), made monotone and capped at 1, in
    the input's order. Rejecting where the adjusted p is below α controls the family-wise error at α."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [0.0] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


# -- rank agreement: does a ranking measured at one fidelity hold at another --------------------------------


def kendall_tau_b_many(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's τ_b of each row of `x` against the same row of `y` (both (rows, points)): Σ sign(Δx)·sign(Δy)
    over the pairs of points, over √(pairs untied in x · pairs untied in y). A point that is NaN in either
    row of a pair of rows is absent from it. NaN where a row has no pair untied in x or none in y."""
    x, y = np.atleast_2d(np.asarray(x, dtype=float)), np.atleast_2d(np.asarray(y, dtype=float))
    upper = np.triu(np.ones((x.shape[1], x.shape[1]), dtype=bool), k=1)
    dx = (x[:, None, :] - x[:, :, None])[:, upper]
    dy = (y[:, None, :] - y[:, :, None])[:, upper]
    present = ~(np.isnan(dx) | np.isnan(dy))
    sx, sy = np.where(present, np.sign(dx), 0.0), np.where(present, np.sign(dy), 0.0)
    denominator = np.sqrt(np.abs(sx).sum(axis=1) * np.abs(sy).sum(axis=1))
    numerator = (sx * sy).sum(axis=1)
    return np.divide(numerator, denominator, out=np.full(len(numerator), np.nan), where=denominator > 0)


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's τ_b of paired values (ties in either corrected for); None where it is undefined (fewer than
    two points, or every x or every y equal)."""
    if len(x) != len(y):
        raise ValueError(f"kendall_tau_b of {len(x)} and {len(y)} values")
    if len(x) < 2:
        return None
    tau = float(kendall_tau_b_many(np.asarray([x]), np.asarray([y]))[0])
    return None if math.isnan(tau) else tau


def point_resamples(n_points: int, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, n_points) indices of points drawn with replacement: the bootstrap over points (here the
    unit is the configuration, not the problem)."""
    if n_points <= 0 or n_resamples <= 0:
        raise ValueError(f"need points and resamples, got {n_points} points, {n_resamples} resamples")
    return np.random.default_rng([seed, 2]).integers(0, n_points, size=(n_resamples, n_points))


def split_halves(runs: Sequence[float]) -> tuple[float, float] | None:
    """The means of one configuration's runs in two halves, by position (runs 1, 3, ... and 2, 4, ...): two
    independent measurements of it (None with fewer than two runs)."""
    if len(runs) < 2:
        return None
    return float(np.mean(runs[0::2])), float(np.mean(runs[1::2]))


@dataclass(frozen=True)
class RankTransfer:
    """How well the ranking of points by one metric at a reduced fidelity holds at the full one.

    `tau`: Kendall's τ_b between the reduced values and the full ones (means over each point's seeds).
    `ceiling`: the τ_b between the two split halves of each point's full-fidelity seeds (`split_halves`):
    what two measurements of one and the same ranking show at the measured seed noise, so what perfect
    transfer would show. `gap`: ceiling − τ. Each with a 95% percentile interval from one bootstrap over the
    points (the same resamples for all three, so the gap is paired); None where undefined."""

    n: int  # points with a full-fidelity value
    n_split: int  # ... of them with two or more seeds (the ceiling's)
    tau: Estimate
    ceiling: Estimate
    gap: Estimate


def rank_transfer(
    reduced: Sequence[float], full_runs: Sequence[Sequence[float]], *, n_resamples: int, seed: int
) -> RankTransfer:
    """`RankTransfer` of points given their reduced values and each one's full-fidelity runs (one per
    seed, at least one)."""
    if not reduced or len(reduced) != len(full_runs) or any(not runs for runs in full_runs):
        raise ValueError("rank_transfer needs points, each with a reduced value and at least one full run")
    x = np.asarray(reduced, dtype=float)
    y = np.asarray([np.mean(runs) for runs in full_runs], dtype=float)
    halves = np.asarray([split_halves(runs) or (math.nan, math.nan) for runs in full_runs], dtype=float)
    a, b = halves[:, 0], halves[:, 1]
    index = point_resamples(len(x), n_resamples, seed)
    tau_draws = kendall_tau_b_many(x[index], y[index])
    ceiling_draws = kendall_tau_b_many(a[index], b[index])  # a point of one seed is absent (NaN) from it
    split = ~np.isnan(a)
    tau = kendall_tau_b(list(x), list(y))
    ceiling = kendall_tau_b(list(a[split]), list(b[split]))
    gap = None if tau is None or ceiling is None else ceiling - tau

    def estimate(value: float | None, draws: np.ndarray) -> Estimate:
        return _estimate(math.nan if value is None else value, draws, LEVEL)

    return RankTransfer(
        len(x),
        int(split.sum()),
        estimate(tau, tau_draws),
        estimate(ceiling, ceiling_draws),
        estimate(gap, ceiling_draws - tau_draws),
    )
