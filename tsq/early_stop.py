"""Staged evaluation with an early stop: the math (pure functions). docs/method.md, "Statistics".

A trial with an accuracy-drop constraint (`study.constraint.max_accuracy_drop` = δ) is evaluated in stages
(`evaluation.stages`, default 25% → 50% → 100% of the eval problems). The problems are put in one fixed,
seeded order (`stage_order`) and stage k evaluates its prefix, so each stage holds the previous one. Sample j
of a problem is seeded by (seed, problem id, j) (`tsq.sample`), so a stage draws exactly the responses the
full evaluation would draw for its problems, and a trial that passes every stage has the full evaluation's
records.

After each stage but the last, `look` tests, paired with the baseline on the stage's problems,
    H0: accuracy change ≥ −δ    against    H1: accuracy change < −δ (the constraint is violated).
- Unit: the problem. x_i = trial accuracy on problem i − baseline accuracy on problem i (both over the
  problem's `evaluation.n` samples), so mean(x) is the trial's accuracy delta on those problems (every
  problem has the same number of samples).
- Statistic: the one-sided paired t, T = (mean(x) + δ) / (sd(x) / √m), m − 1 degrees of freedom; p = P(t ≤ T).
- Repeated looks: a Bonferroni split of α = 0.05 over the looks that can stop a trial (all stages but the
  last: a look at 100% has nothing left to save, and there the full evaluation's point value decides
  feasibility as it does without the early stop). With the default stages that is 0.025 per look. The
  chance that a trial at the boundary (change exactly −δ) is ever stopped is then at most 5% (the union
  bound); Pocock's exact boundary for the correlated looks would buy 1.88 instead of 1.96 standard errors
  (normal approximation), not worth a multivariate-normal integral.
- Equivalently, the trial stops when the one-sided upper confidence bound of its accuracy change, at level
  1 − α/looks, lies below −δ (`Look.upper_bound`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from tsq.metrics import SUM_FIELDS, ProblemSums

ALPHA = 0.05  # one-sided: a trial at the boundary is stopped in at most 5% of evaluations
TEST = "one-sided paired t on per-problem accuracy change + max_accuracy_drop, Bonferroni over the looks"


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
    correct, responses = SUM_FIELDS.index("correct"), SUM_FIELDS.index("responses")
    return new.sums[:, correct] / new.sums[:, responses] - base.sums[:, correct] / base.sums[:, responses]


@dataclass(frozen=True)
class Look:
    """One look of the staged test: what it saw, the statistic, the threshold, and whether the trial stops."""

    stage: int  # 1-based
    n_stages: int
    problems: int  # evaluated so far
    of: int  # in the whole eval set
    max_accuracy_drop: float
    accuracy_change: float  # mean per-problem accuracy change vs the baseline on these problems
    se: float | None  # its standard error, sd/√m (None with fewer than 2 problems)
    statistic: float | None  # paired t of x + δ (−inf/+inf when every problem changed alike)
    df: int
    p_value: float | None  # one-sided P(t ≤ statistic) under H0 (None: not tested)
    threshold: float | None  # the p-value below which the trial stops (None: this look cannot stop it)
    upper_bound: float | None  # one-sided (1 − threshold) upper confidence bound of the accuracy change
    stop: bool
    test: str = TEST

    def to_json(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


def look_threshold(n_stages: int, alpha: float = ALPHA) -> float | None:
    """Nominal one-sided level of each look: α split evenly over the n_stages − 1 looks that can stop a trial
    (None with a single stage: nothing to stop)."""
    return None if n_stages <= 1 else alpha / (n_stages - 1)


def look(
    base: ProblemSums,
    new: ProblemSums,
    max_accuracy_drop: float,
    stage: int,
    n_stages: int,
    n_problems: int,
    alpha: float = ALPHA,
) -> Look:
    """The test after `stage` (1-based) of `n_stages`, on `new`'s problems, paired with the baseline on them.

    The trial stops when the look can stop it (not the last stage) and the p-value is below α/(n_stages − 1).
    """
    from scipy.stats import t as student_t  # deferred: scipy is slow to import

    if max_accuracy_drop < 0:
        raise ValueError(f"max_accuracy_drop must be >= 0, got {max_accuracy_drop}")
    if not 1 <= stage <= n_stages:
        raise ValueError(f"stage {stage} is not in 1..{n_stages}")
    x = accuracy_changes(base, new)
    m = len(x)
    mean = float(x.mean())
    threshold = look_threshold(n_stages, alpha) if stage < n_stages else None
    if m < 2:  # no spread to test against
        return Look(stage, n_stages, m, n_problems, max_accuracy_drop, mean, None, None, 0, None, threshold,
                    None, False)  # fmt: skip
    df = m - 1
    se = float(x.std(ddof=1)) / math.sqrt(m)
    excess = mean + max_accuracy_drop
    if se > 0:
        statistic = excess / se
        p_value = float(student_t.cdf(statistic, df))
    else:  # every problem changed by the same amount: the sign of the excess decides
        statistic = math.copysign(math.inf, excess) if excess != 0 else 0.0
        p_value = 0.0 if excess < 0 else 1.0 if excess > 0 else 0.5
    upper = None if threshold is None else mean + float(student_t.ppf(1 - threshold, df)) * se
    stop = threshold is not None and p_value < threshold
    return Look(stage, n_stages, m, n_problems, max_accuracy_drop, mean, se, statistic, df, p_value,
                threshold, upper, stop)  # fmt: skip


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
    alpha: float = ALPHA,
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
        looks.append(look(base, seen, max_accuracy_drop, stage, len(stages), len(stages[-1]), alpha))
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
        "alpha": ALPHA,
        "test": TEST,
        "looks": [lk.to_json() for lk in looks],
    }
