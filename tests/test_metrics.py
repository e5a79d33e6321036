"""Metrics against hand-computed values and against their definitions."""

from __future__ import annotations

import pytest

from tsq.data.traces import Response
from tsq.metrics import (
    budget_auc,
    coefficient_of_variation,
    paired_bootstrap_delta,
    summarize,
)


def test_budget_auc_hand_computed() -> None:
    # (1 - 10/40) + 0 (wrong) + max(0, 1 - 40/40) + 0 (over budget) = 0.75, over 4 responses
    assert budget_auc([10, 20, 40, 50], [True, False, True, True], 40) == pytest.approx(0.75 / 4)


def test_budget_auc_matches_the_paper() -> None:
    # PAPER.md: 92.4% accuracy at Len-T 1773 under B = 32K gives 0.874 (reported 87.5 in the paper)
    lengths = [1773] * 924 + [5000] * 76
    correct = [True] * 924 + [False] * 76
    assert round(budget_auc(lengths, correct, 32768), 3) == 0.874


def test_budget_auc_is_the_area_under_budgeted_accuracy() -> None:
    # Definition: accuracy(b) counts a correct response when ℓ <= b. For integer lengths the mean of
    # accuracy(b) over b = 0 .. B-1 is exactly the area under the step function, normalised by B.
    lengths, correct, budget = [0, 3, 7, 7, 12, 20], [True, True, False, True, True, True], 12
    area = sum(
        sum(ok and ell <= b for ell, ok in zip(lengths, correct, strict=True)) / len(lengths)
        for b in range(budget)
    )
    assert budget_auc(lengths, correct, budget) == pytest.approx(area / budget)


def test_budget_auc_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        budget_auc([], [], 10)
    with pytest.raises(ValueError):
        budget_auc([1, 2], [True], 10)
    with pytest.raises(ValueError):
        budget_auc([1], [True], 0)


def test_coefficient_of_variation() -> None:
    assert coefficient_of_variation([1, 3]) == pytest.approx(0.5)  # mean 2, population std 1
    assert coefficient_of_variation([4, 4, 4]) == 0.0


def _r(n_tokens: int, correct: bool, steps: int = 1, finish: str = "stop") -> Response:
    return Response(text="\n\n".join(["x"] * steps), n_tokens=n_tokens, correct=correct, finish_reason=finish)


def test_summarize_hand_computed() -> None:
    responses = {
        "p1": [_r(10, True, 2), _r(30, False, 3)],
        "p2": [_r(20, True, 1), _r(40, False, 4, "length")],
    }
    s = summarize(responses, {"p1": 1, "p2": 2}, budget=40)
    assert s["n_responses"] == 4 and s["n_problems"] == 2
    assert s["accuracy"] == 0.5
    assert s["len_correct"] == 15.0  # (10 + 20) / 2
    assert s["len_all"] == 25.0  # (10 + 20 + 30 + 40) / 4
    assert s["auc"] == pytest.approx(((1 - 10 / 40) + (1 - 20 / 40)) / 4)
    assert s["steps_per_response"] == 2.5  # (2 + 3 + 1 + 4) / 4
    assert s["tokens_per_step"] == 10.0  # 100 tokens / 10 steps
    assert s["truncated"] == 0.25
    assert s["len_cv"] == pytest.approx(125**0.5 / 25)  # population std of 10,20,30,40 is sqrt(125)
    assert list(s["by_difficulty"]) == ["1", "2"]
    assert s["by_difficulty"]["1"]["accuracy"] == 0.5
    assert s["by_difficulty"]["2"]["len_all"] == 30.0
    assert s["by_difficulty"]["2"]["auc"] == pytest.approx((1 - 20 / 40) / 2)


def test_summarize_without_correct_responses() -> None:
    s = summarize({"p": [_r(5, False)]}, {"p": None}, budget=10)
    assert s["len_correct"] is None and s["accuracy"] == 0.0
    assert list(s["by_difficulty"]) == ["none"]


def test_bootstrap_of_identical_systems_is_zero() -> None:
    base = {"a": [True, False], "b": [False, False], "c": [True, True]}
    assert paired_bootstrap_delta(base, base, 500, seed=0) == (0.0, 0.0, 0.0)


def test_bootstrap_of_a_constant_gain_has_no_width() -> None:
    base = {p: [False, False] for p in "abcd"}
    new = {p: [True, True] for p in "abcd"}
    assert paired_bootstrap_delta(base, new, 500, seed=0) == (1.0, 1.0, 1.0)


def test_bootstrap_hand_computed() -> None:
    # Per-problem deltas 1 and 0: a resample's mean is 0, 0.5 or 1 with probability 1/4, 1/2, 1/4, so the
    # 2.5% and 97.5% percentiles of 4000 resamples are 0 and 1; the point estimate is 0.5.
    base = {"a": [False], "b": [True]}
    new = {"a": [True], "b": [True]}
    assert paired_bootstrap_delta(base, new, 4000, seed=1) == (0.5, 0.0, 1.0)


def test_bootstrap_pairs_by_problem_and_is_seeded() -> None:
    base = {f"p{i}": [i % 3 == 0, i % 2 == 0] for i in range(30)}
    new = {f"p{i}": [i % 3 != 1, i % 2 == 0] for i in range(30)}
    new["only-new"] = [True]  # unpaired problems are ignored
    delta, lo, hi = paired_bootstrap_delta(base, new, 1000, seed=7)
    assert lo < delta < hi
    assert (delta, lo, hi) == paired_bootstrap_delta(base, new, 1000, seed=7)
    with pytest.raises(ValueError):
        paired_bootstrap_delta({"a": [True]}, {"b": [True]}, 10, seed=0)
