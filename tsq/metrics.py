"""Evaluation metrics (PAPER.md "Metrics"): accuracy, Len-T, Len-A, budgeted AUC, steps, bootstrap CIs.

Pure functions over lengths and correctness flags; `summarize` works on graded `Response`s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from tsq.data.traces import Response, split_steps


def budget_auc(lengths: Sequence[int], correct: Sequence[bool], budget: int) -> float:
    """Area under accuracy(b) for b in [0, B], normalised by B.

    accuracy(b) counts a response as correct when it is correct and its length ℓ ≤ b (a response of
    length exactly b is within budget b), so each correct response contributes max(0, 1 − ℓ/B):
    AUC = mean over responses of correct_i · max(0, 1 − ℓ_i / B).
    """
    if len(lengths) != len(correct):
        raise ValueError(f"{len(lengths)} lengths but {len(correct)} correctness flags")
    if not lengths:
        raise ValueError("budget_auc of no responses")
    if budget <= 0:
        raise ValueError(f"budget must be positive, got {budget}")
    return sum(max(0.0, 1.0 - ell / budget) for ell, ok in zip(lengths, correct, strict=True) if ok) / len(
        lengths
    )


def coefficient_of_variation(values: Sequence[float]) -> float:
    """Population standard deviation over mean (0 for constant values)."""
    if not values:
        raise ValueError("coefficient_of_variation of no values")
    mean = sum(values) / len(values)
    if mean == 0:
        return 0.0
    return math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)) / mean


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarize_responses(responses: Sequence[Response], budget: int) -> dict[str, float | int | None]:
    """Metrics of one group of responses.

    Steps are the response's blank-line separated chunks (`split_steps`; for a reasoning model this counts
    the answer after `</think>` as one more step). tokens_per_step is total tokens over total steps, i.e.
    the mean step length in tokens, where a response's tokens include its eos token.
    len_correct (Len-T) is None when no response is correct.
    """
    if not responses:
        raise ValueError("summarize of no responses")
    lengths = [r.n_tokens for r in responses]
    correct = [r.correct for r in responses]
    steps = [len(split_steps(r.text)) for r in responses]
    return {
        "n_responses": len(responses),
        "accuracy": sum(correct) / len(responses),
        "len_correct": _mean([ell for ell, ok in zip(lengths, correct, strict=True) if ok]),
        "len_all": sum(lengths) / len(lengths),
        "len_cv": coefficient_of_variation(lengths),
        "auc": budget_auc(lengths, correct, budget),
        "steps_per_response": sum(steps) / len(steps),
        "tokens_per_step": sum(lengths) / sum(steps) if sum(steps) else None,
        "truncated": sum(r.finish_reason == "length" for r in responses) / len(responses),
    }


def summarize(
    responses_by_problem: Mapping[str, Sequence[Response]],
    difficulty_by_problem: Mapping[str, int | None],
    budget: int,
) -> dict:
    """Overall metrics plus `by_difficulty` (keys are difficulties as strings, "none" when unknown)."""
    everything = [r for rs in responses_by_problem.values() for r in rs]
    groups: dict[str, list[Response]] = {}
    for pid, rs in responses_by_problem.items():
        level = difficulty_by_problem.get(pid)
        groups.setdefault("none" if level is None else str(level), []).extend(rs)
    summary = summarize_responses(everything, budget)
    summary["n_problems"] = len(responses_by_problem)
    summary["budget"] = budget
    summary["by_difficulty"] = {
        level: summarize_responses(rs, budget) for level, rs in sorted(groups.items(), key=_level_order)
    }
    return summary


def _level_order(item: tuple[str, list[Response]]) -> tuple[int, int | str]:
    level = item[0]
    return (0, int(level)) if level.lstrip("-").isdigit() else (1, level)


def paired_bootstrap_delta(
    base: Mapping[str, Sequence[bool]],
    new: Mapping[str, Sequence[bool]],
    n_resamples: int,
    seed: int,
) -> tuple[float, float, float]:
    """Accuracy delta (new − base) and its 95% percentile-bootstrap CI, resampling problems.

    Pairing is by problem: each resample draws problems with replacement and takes both systems'
    accuracies on the same draw, so problem difficulty cancels out of the delta. Accuracy is the mean of
    per-problem accuracies (equal to the response mean when every problem has the same sample count).
    """
    shared = sorted(set(base) & set(new))
    if not shared:
        raise ValueError("paired_bootstrap_delta: the two results share no problems")
    if any(not base[p] or not new[p] for p in shared):
        raise ValueError("paired_bootstrap_delta: a problem has no responses")
    diffs = np.array([np.mean(new[p]) - np.mean(base[p]) for p in shared], dtype=float)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(diffs), size=(n_resamples, len(diffs)))
    resampled = diffs[draws].mean(axis=1)
    lo, hi = np.percentile(resampled, [2.5, 97.5])
    return float(diffs.mean()), float(lo), float(hi)


def budget_curve(
    lengths: Sequence[int], correct: Sequence[bool], budget: int, points: int = 33
) -> list[tuple[int, float]]:
    """accuracy(b) at `points` evenly spaced budgets b in [0, B]: the curve whose area `budget_auc` is."""
    if len(lengths) != len(correct) or not lengths:
        raise ValueError("budget_curve needs one correctness flag per length, and at least one response")
    budgets = sorted({round(budget * i / (points - 1)) for i in range(points)})
    n = len(lengths)
    return [
        (b, sum(1 for ell, ok in zip(lengths, correct, strict=True) if ok and ell <= b) / n) for b in budgets
    ]
