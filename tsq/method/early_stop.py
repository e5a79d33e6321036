"""Staged evaluation with an early stop: the math (pure functions). docs/method.md, "Statistics".

A trial with an accuracy-drop constraint (`study.constraint.max_accuracy_drop` = δ) is evaluated in stages
(`evaluation.stages`, default 25% → 50% → 100% of the eval problems). The problems are put in one fixed,
seeded order (`stage_order`) and stage k evaluates its prefix, so each stage holds the previous one. Sample j
of a problem is seeded by (seed, problem id, j) (`tsq.engines.sample`), so a stage draws exactly the
responses the full evaluation would draw for its problems, and a trial that passes every stage has the full
evaluation's records.

After each stage but the last, `look` tests, paired with the baseline on the stage's problems,
    H0: accuracy change ≥ −δ    against    H1: accuracy change < −δ (the constraint is violated).
- Unit: the problem. x_i = trial accuracy on problem i − baseline accuracy on problem i (each over the
  problem's samples), so mean(x) is the trial's accuracy delta on those problems.
- The guarantee holds per study, not only on average over studies. Every trial of a study is compared with
  the study's one baseline evaluation, so the baseline's own sampling error on a stage's problems is an offset
  common to all of them: a study whose baseline drew lucky makes every trial look worse. A test whose SE
  merely holds that error (the paired t on x alone) controls false stops on average over baseline draws only
  (simulated, 100 problems × 8 samples, δ 5 points, 400 studies: median 1.3% per study, but over 10% in 13.5%
  of studies, 99th percentile 39%).
  So the baseline's error is bounded apart: σ_b² = Σ_i b_i(1 − b_i)/(n_i − 1) / m² (b_i: the baseline's
  accuracy on problem i over its n_i samples; unbiased for the variance of its mean), and the trial's own
  noise with the spread of the change across problems is what is left of the paired SE:
  σ_t² = max(sd(x)²/m − σ_b², 0). The trial stops when
      mean(x) + δ + q_b·σ_b < −q_t·σ_t,
  q_b and q_t the one-sided t quantiles (m − 1 df) at 1 − γ/L and 1 − a/L (a: the test's level, `LEVEL`; not
  the α of selection), L the looks that can stop a trial
  (all stages but the last: a look at 100% has nothing left to save, and there the full evaluation's point
  value decides feasibility as it does without the early stop). With probability ≥ 1 − γ over the
  baseline's draw its error stays below q_b·σ_b at every look, and then a trial at the boundary is stopped
  in at most a of evaluations (union bounds over the L looks). a = 0.10 and γ = 0.01: in all but 1% of
  studies, at most 10% false stops at the boundary (simulated: none of 400 studies above 10%, the 99th
  percentile 4%, the mean 0.3%: `benchmarks/bench_early_stop.py --per-study`). The price is power: a trial 10
  points beyond the bound is stopped in 73% of evaluations instead of 94%. A baseline evaluated on more
  samples per problem has a smaller σ_b and buys back most of it (4× the samples: 96%).
- Equivalently, the trial stops when the upper bound mean(x) + q_b·σ_b + q_t·σ_t of its accuracy change lies
  below −δ (`Look.upper_bound`); `Look.p_value` is P(t ≤ (mean(x) + δ + q_b·σ_b)/σ_t), compared with a/L.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tsq.method.metrics import SUM_FIELDS, ProblemSums

LEVEL = 0.10  # a trial at the boundary is stopped in at most 10% of evaluations ...
BASELINE_RISK = 0.01  # ... in every study but those whose baseline drew this unluckily (γ)
TEST = (
    "one-sided t on per-problem accuracy change + max_accuracy_drop against the baseline's upper bound "
    "(its sampling error bounded apart, risk 0.01), Bonferroni over the looks"
)


def stage_order(problem_ids: Sequence[str], seed: int) -> list[str]:
    """The eval problems in the staged order: sorted ids, then a permutation seeded by `seed`.

    Sorting first makes the order depend on the set of ids only, not on the order they were loaded in."""
    ids = sorted(set(problem_ids))
    perm = np.random.default_rng(seed).permutation(len(ids))
    return [ids[i] for i in perm]


def stage_sizes(n_problems: int, fractions: Sequence[float]) -> list[int]:
    """Problems in each stage: ⌈f·n⌉ for each fraction, at least 1, repeats dropped, the last always n.

    fractions must increase and end at 1 (ValueError otherwise; the spec validates them first)."""
    if n_problems <= 0:
        raise ValueError(f"staged evaluation needs problems, got {n_problems}")
    check_fractions(fractions)
    sizes: list[int] = []
    for f in fractions:
        size = min(n_problems, max(1, math.ceil(f * n_problems - 1e-9)))  # 0.25·100 is 25, not 26
        if not sizes or size > sizes[-1]:
            sizes.append(size)
    return sizes


def check_fractions(fractions: Sequence[float]) -> None:
    """ValueError unless fractions are in (0, 1], strictly increasing, and the last is 1."""
    if not fractions:
        raise ValueError("stages: give at least one fraction (the last must be 1.0)")
    if any(not 0 < f <= 1 for f in fractions):
        raise ValueError(f"stages: fractions must be in (0, 1], got {list(fractions)}")
    if any(b <= a for a, b in itertools.pairwise(fractions)):
        raise ValueError(f"stages: fractions must increase, got {list(fractions)}")
    if fractions[-1] != 1:
        raise ValueError(f"stages: the last fraction must be 1.0 (the whole eval set), got {fractions[-1]}")


def stage_problems(problem_ids: Sequence[str], fractions: Sequence[float], seed: int) -> list[list[str]]:
    """The problems of each stage (cumulative: each stage is a prefix of `stage_order`, so it holds the
    previous stage), the last one all problems."""
    order = stage_order(problem_ids, seed)
    return [order[:size] for size in stage_sizes(len(order), fractions)]


def accuracy_changes(base: ProblemSums, new: ProblemSums) -> np.ndarray:
    """Per-problem accuracy change (new − base) on `new`'s problems, in its order (each must be in `base`)."""
    base = base.select(new.problem_ids)
    return _accuracies(new) - _accuracies(base)


def _accuracies(sums: ProblemSums) -> np.ndarray:
    correct, responses = SUM_FIELDS.index("correct"), SUM_FIELDS.index("responses")
    return sums.sums[:, correct] / sums.sums[:, responses]


def baseline_error_sd(base: ProblemSums, problem_ids: Sequence[str]) -> float:
    """SD of the baseline's sampling error in its mean accuracy over `problem_ids`:
    √(Σ_i b_i(1 − b_i)/(n_i − 1)) / m, b_i its accuracy on problem i over n_i samples (each term unbiased
    for the variance of that problem's mean)."""
    base = base.select(problem_ids)
    b = _accuracies(base)
    n = base.sums[:, SUM_FIELDS.index("responses")]
    return float(math.sqrt(np.sum(b * (1 - b) / np.maximum(n - 1, 1)))) / len(b)


@dataclass(frozen=True)
class Look:
    """One look of the staged test: what it saw, the statistic, the threshold, and whether the trial stops."""

    stage: int  # 1-based
    n_stages: int
    problems: int  # evaluated so far
    of: int  # in the whole eval set
    max_accuracy_drop: float
    accuracy_change: float  # mean per-problem accuracy change vs the baseline on these problems
    se: float | None  # its paired standard error, sd/√m (None with fewer than 2 problems)
    baseline_se: float | None  # σ_b: the baseline's sampling error on these problems, bounded apart
    trial_se: float | None  # σ_t: the rest of the paired SE (the trial's noise, the change's spread)
    statistic: float | None  # (x + δ + q_b·σ_b)/σ_t (−inf/+inf when σ_t is 0)
    df: int
    p_value: float | None  # one-sided P(t ≤ statistic) under H0 (None: not tested)
    threshold: float | None  # the p-value below which the trial stops, a/L (None: this look cannot stop it)
    upper_bound: float | None  # mean + q_b·σ_b + q_t·σ_t: the trial stops when it is below −δ
    stop: bool
    test: str = TEST

    def to_json(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


def look_threshold(n_stages: int, level: float = LEVEL) -> float | None:
    """Nominal one-sided level of each look: `level` split evenly over the n_stages − 1 looks that can stop a
    trial (None with a single stage: nothing to stop)."""
    return None if n_stages <= 1 else level / (n_stages - 1)


def look(
    base: ProblemSums,
    new: ProblemSums,
    max_accuracy_drop: float,
    stage: int,
    n_stages: int,
    n_problems: int,
    level: float = LEVEL,
    baseline_risk: float = BASELINE_RISK,
) -> Look:
    """The test after `stage` (1-based) of `n_stages`, on `new`'s problems, paired with the baseline on them.

    The trial stops when the look can stop it (not the last stage) and mean(x) + δ + q_b·σ_b < −q_t·σ_t
    (module docstring), i.e. the p-value is below level/(n_stages − 1).
    """
    from scipy.stats import t as student_t  # deferred: scipy is slow to import

    if max_accuracy_drop < 0:
        raise ValueError(f"max_accuracy_drop must be >= 0, got {max_accuracy_drop}")
    if not 1 <= stage <= n_stages:
        raise ValueError(f"stage {stage} is not in 1..{n_stages}")
    x = accuracy_changes(base, new)
    m = len(x)
    mean = float(x.mean())
    threshold = look_threshold(n_stages, level) if stage < n_stages else None
    if m < 2:  # no spread to test against
        return Look(stage, n_stages, m, n_problems, max_accuracy_drop, mean, None, None, None, None, 0, None,
                    threshold, None, False)  # fmt: skip
    df = m - 1
    se = float(x.std(ddof=1)) / math.sqrt(m)
    sd_base = baseline_error_sd(base, new.problem_ids)
    sd_trial = math.sqrt(max(se**2 - sd_base**2, 0.0))
    risk = look_threshold(n_stages, baseline_risk) or baseline_risk
    excess = mean + max_accuracy_drop + float(student_t.ppf(1 - risk, df)) * sd_base
    if sd_trial > 0:
        statistic = excess / sd_trial
        p_value = float(student_t.cdf(statistic, df))
    else:  # no noise left beside the baseline's: the sign of the excess decides
        statistic = math.copysign(math.inf, excess) if excess != 0 else 0.0
        p_value = 0.0 if excess < 0 else 1.0 if excess > 0 else 0.5
    upper = None if threshold is None else excess - max_accuracy_drop + float(
        student_t.ppf(1 - threshold, df)) * sd_trial  # fmt: skip
    stop = threshold is not None and p_value < threshold
    return Look(stage, n_stages, m, n_problems, max_accuracy_drop, mean, se, sd_base, sd_trial, statistic, df,
                p_value, threshold, upper, stop)  # fmt: skip


def look_line(seen: Look) -> str:
    """One look as the log prints it: p-values to 3 significant digits, and what decides at the last stage."""
    change = f"accuracy change {100 * seen.accuracy_change:+.1f} pts vs the baseline"
    head = f"evaluation stage {seen.stage}/{seen.n_stages}: {seen.problems} of {seen.of} problems, {change}"
    if seen.p_value is None:
        return f"{head}; not tested (fewer than 2 problems)"
    if seen.threshold is None:
        return f"{head}; p {seen.p_value:.3g} (last stage: the full evaluation decides feasibility)"
    verdict = "stop" if seen.stop else "go on"
    return f"{head}; p {seen.p_value:.3g}, stop below {seen.threshold:.3g}: {verdict}"


def merge_sums(a: ProblemSums, b: ProblemSums) -> ProblemSums:
    """The per-problem sums of two disjoint sets of problems, as one (rows sorted by problem id)."""
    if a.budget != b.budget or set(a.problem_ids) & set(b.problem_ids):
        raise ValueError("merge_sums needs disjoint problems with the same budget")
    rows = dict(zip(a.problem_ids, a.sums, strict=True)) | dict(zip(b.problem_ids, b.sums, strict=True))
    ids = tuple(sorted(rows))
    return ProblemSums(ids, np.stack([rows[p] for p in ids]), a.budget)


def run_stages(
    base: ProblemSums,
    stages: Sequence[Sequence[str]],
    evaluate_more: Callable[[Sequence[str]], ProblemSums],
    max_accuracy_drop: float,
    level: float = LEVEL,
) -> list[Look]:
    """Evaluate stage by stage and look after each; stop at the first look that says stop.

    `stages` are cumulative (each a prefix of the next, e.g. `stage_problems`); `evaluate_more(ids)` evaluates
    the problems a stage adds and returns their sums. Returns the looks made: the trial stopped when the last
    one has `stop`."""
    looks: list[Look] = []
    seen: ProblemSums | None = None
    previous: list[str] = []
    for stage, ids in enumerate(stages, 1):
        if list(ids[: len(previous)]) != previous or len(ids) <= len(previous):
            raise ValueError("each stage must extend the previous one (stage_problems makes such stages)")
        added = evaluate_more(ids[len(previous) :])
        previous = list(ids)
        seen = added if seen is None else merge_sums(seen, added)
        looks.append(look(base, seen, max_accuracy_drop, stage, len(stages), len(stages[-1]), level))
        if looks[-1].stop:
            break
    return looks


def stop_record(looks: Sequence[Look]) -> dict[str, Any]:
    """What a trial records of its staged evaluation (the trial's `early_stop` user attr)."""
    last = looks[-1]
    return {
        "stopped": last.stop,
        "stage": last.stage,
        "n_stages": last.n_stages,
        "problems": last.problems,
        "of": last.of,
        "max_accuracy_drop": last.max_accuracy_drop,
        "alpha": LEVEL,  # the key the records of existing studies hold
        "baseline_risk": BASELINE_RISK,
        "test": TEST,
        "looks": [lk.to_json() for lk in looks],
    }
