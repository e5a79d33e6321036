"""Metrics against hand-computed values and against their definitions; the metric registry."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tsq.data.traces import Response
from tsq.method.metrics import (
    METRIC_ALIASES,
    METRICS,
    RECORD_FIELDS,
    SUM_FIELDS,
    Metric,
    ProblemSums,
    absolute_metric_names,
    axis_label,
    baseline_value,
    budget_auc,
    coefficient_of_variation,
    display_value,
    format_estimate,
    format_value,
    metric,
    metric_values,
    objective_metric_names,
    relative_metric_names,
    response_record,
    summarize,
    thinking_steps,
)


def test_budget_auc_hand_computed() -> None:
    # (1 - 10/40) + 0 (wrong) + max(0, 1 - 40/40) + 0 (over budget) = 0.75, over 4 responses
    assert budget_auc([10, 20, 40, 50], [True, False, True, True], 40) == pytest.approx(0.75 / 4)


def test_budget_auc_matches_the_paper() -> None:
    # docs/method.md: 92.4% accuracy at Len-T 1773 under B = 32K gives 0.874 (reported 87.5 in the paper)
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


# -- thinking steps ----------------------------------------------------------------------------------------


def test_thinking_steps_stop_at_the_last_think_close() -> None:
    # R1 style: the prompt opened the think block, the completion closes it; the answer is not a step
    assert thinking_steps("a\n\nb\n\nc\n</think>\n\nso the answer is 3\n\nreally") == ["a", "b", "c\n"]
    # an explicit <think> opener is not part of the first step; everything before the LAST close is thinking
    assert len(thinking_steps("<think>\nx\n\ny</think>z\n\nw</think>\n\nanswer")) == 3
    assert len(thinking_steps("<think>\n\n</think>\n\nanswer : 7")) == 0


def test_thinking_steps_without_a_close_are_the_whole_response() -> None:
    assert thinking_steps("one\n\ntwo\n\nanswer : 3") == ["one", "two", "answer : 3"]
    assert len(thinking_steps("<think>\nstill\n\nthinking when cut")) == 2


def test_summarize_counts_thinking_steps_only() -> None:
    thinker = Response(
        "first\n\nsecond\n</think>\n\nanswer : 3", n_tokens=12, correct=True, finish_reason="stop"
    )
    plain = Response("a\n\nb\n\nanswer : 3", n_tokens=6, correct=True, finish_reason="stop")
    s = summarize({"p": [thinker, plain]}, {"p": None}, budget=20)
    assert s["steps_per_response"] == 2.5  # 2 thinking steps + 3 steps of a response that does not think
    assert s["tokens_per_step"] == pytest.approx(18 / 5)


# -- the registry ------------------------------------------------------------------------------------------


def test_every_objective_metric_is_registered_with_a_label_and_direction() -> None:
    names = objective_metric_names()
    for name in (
        "accuracy", "len_all", "len_correct", "auc", "steps_per_response", "tokens_per_step",
        "token_reduction", "accuracy_delta", "len_correct_reduction", "auc_delta",
    ):  # fmt: skip
        assert name in names
        m = METRICS[name]
        assert m.name == name and m.label and m.direction in ("maximize", "minimize")
    assert "truncated" not in names and "truncated" in absolute_metric_names()
    assert set(relative_metric_names()) == {
        "accuracy_delta",
        "token_reduction",
        "len_correct_reduction",
        "auc_delta",
    }
    assert all(METRICS[n].relative for n in relative_metric_names())
    assert all(not METRICS[METRICS[n].of].relative for n in relative_metric_names())  # type: ignore[index]
    assert METRICS["len_all"].direction == "minimize" and METRICS["accuracy_delta"].direction == "maximize"


def test_metric_lookup_resolves_aliases_and_names_the_known_ones() -> None:
    assert metric("len_all_reduction") is METRICS["token_reduction"]
    assert set(METRIC_ALIASES.values()) <= set(METRICS)
    with pytest.raises(KeyError, match="known: accuracy"):
        metric("speed")
    with pytest.raises(ValueError, match="numerator"):
        Metric("bad", "Bad", "maximize", "ratio", "no sums", numerator="tokens")


def test_formats_labels_and_baseline_values() -> None:
    assert format_value("accuracy", 0.6121) == "61.2%"
    assert format_value("accuracy_delta", -0.01) == "-1.0 pts"
    assert format_value("token_reduction", 0.342) == "+34.2%"
    assert format_value("len_all", 24.876) == "24.9"
    assert format_value("auc", 0.12345) == "0.123"
    assert format_value("auc_delta", 0.01) == "+0.010"
    assert format_value("steps_per_response", 3.456) == "3.46"
    assert format_value("len_correct", None) == "–" and format_value("len_correct", math.nan) == "–"
    assert format_estimate("accuracy", 0.612, 0.58, 0.641) == "61.2% [58.0%, 64.1%]"
    assert format_estimate("accuracy", 0.612, None, None) == "61.2%"
    assert format_estimate("accuracy", 0.935, 0.855, 1.015) == "93.5% [85.5%, 100.0%]"  # a share: cut at 1
    assert format_estimate("len_all", 2.0, -1.0, 5.0) == "2.0 [-1.0, 5.0]"  # tokens are not cut
    assert axis_label("len_all") == "Len-A (tokens)" and axis_label("len_correct") == "Len-T (tokens)"
    assert axis_label("auc") == "AUC@B" and axis_label("auc", 128) == "AUC@128"
    assert display_value("accuracy", 0.5) == 50.0 and display_value("len_all", 25.0) == 25.0
    assert baseline_value("accuracy_delta", {}) == 0.0 and baseline_value("token_reduction", {}) == 0.0
    assert baseline_value("accuracy", {"accuracy": 0.5}) == 0.5 and baseline_value("len_correct", {}) is None


def _responses(seed: int) -> dict[str, list[Response]]:
    """Uneven problems: sample counts, lengths, correctness, truncation, thinking or not, all vary."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[Response]] = {}
    for p in range(7):
        rs = []
        for _ in range(int(rng.integers(1, 5))):
            steps = int(rng.integers(1, 5))
            body = "\n\n".join(["s"] * steps)
            text = body + "\n</think>\n\nanswer" if rng.random() < 0.5 else body
            truncated = rng.random() < 0.2
            rs.append(
                Response(
                    text,
                    int(rng.integers(1, 60)),
                    bool(rng.random() < 0.5) and not truncated,
                    "length" if truncated else "stop",
                )
            )
        out[f"p{p}"] = rs
    return out


def _definition(name: str, rs: list[Response], budget: int) -> float | None:
    """Each absolute metric by its plain definition, independent of the registry's sums."""
    lengths = [r.n_tokens for r in rs]
    correct_lengths = [r.n_tokens for r in rs if r.correct]
    steps = [len(thinking_steps(r.text)) for r in rs]
    return {
        "accuracy": sum(r.correct for r in rs) / len(rs),
        "len_all": sum(lengths) / len(rs),
        "len_correct": sum(correct_lengths) / len(correct_lengths) if correct_lengths else None,
        "auc": budget_auc(lengths, [r.correct for r in rs], budget),
        "steps_per_response": sum(steps) / len(rs),
        "tokens_per_step": sum(lengths) / sum(steps) if sum(steps) else None,
        "truncated": sum(r.finish_reason == "length" for r in rs) / len(rs),
    }[name]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_registry_from_sums_equals_summarize_and_the_definitions(seed: int) -> None:
    responses, budget = _responses(seed), 40
    everything = [r for rs in responses.values() for r in rs]
    s = summarize(responses, {}, budget)
    sums = ProblemSums.from_responses(responses, budget)
    assert sums.sums.shape == (7, len(SUM_FIELDS)) and sums.problem_ids == tuple(sorted(responses))
    values = metric_values(sums)
    assert set(values) == set(absolute_metric_names())
    for name in absolute_metric_names():
        expected = _definition(name, everything, budget)
        assert s[name] == pytest.approx(expected) and values[name] == pytest.approx(expected), name


def test_relative_metrics_from_sums_are_the_change_of_the_summaries() -> None:
    base, new, budget = _responses(3), _responses(4), 40
    b, n = summarize(base, {}, budget), summarize(new, {}, budget)
    values = metric_values(ProblemSums.from_responses(new, budget), ProblemSums.from_responses(base, budget))
    assert values["accuracy_delta"] == pytest.approx(n["accuracy"] - b["accuracy"])
    assert values["auc_delta"] == pytest.approx(n["auc"] - b["auc"])
    assert values["token_reduction"] == pytest.approx(1 - n["len_all"] / b["len_all"])
    assert values["len_correct_reduction"] == pytest.approx(1 - n["len_correct"] / b["len_correct"])


def test_records_and_sums_hand_computed() -> None:
    r = Response("a\n\nb</think>answer : 3", n_tokens=10, correct=True, finish_reason="stop")
    rec = response_record("p", 2, r, 3)
    assert tuple(rec) == RECORD_FIELDS
    assert rec == {"problem_id": "p", "sample": 2, "n_tokens": 10, "correct": True, "finish_reason": "stop",
                   "truncated": False, "difficulty": 3, "steps": 2}  # fmt: skip
    cut = response_record("p", 3, Response("x", 40, False, "length"), 3)
    q = response_record("q", 0, Response("y", 4, False, "stop"), None)
    sums = ProblemSums.from_records([q, rec, cut], budget=40)
    assert sums.problem_ids == ("p", "q")
    # responses, correct, tokens, correct_tokens, auc (1 − 10/40), steps, truncated
    assert sums.sums.tolist() == [[2, 1, 50, 10, 0.75, 3, 1], [1, 0, 4, 0, 0, 1, 0]]
    assert metric_values(sums)["len_correct"] == 10.0 and metric_values(sums)["truncated"] == pytest.approx(
        1 / 3
    )
    assert metric_values(sums.select(["q"]))["len_correct"] is None
    with pytest.raises(ValueError):
        ProblemSums.from_records([], budget=40)


def test_enough_decimals_to_tell_values_apart() -> None:
    from tsq.method.metrics import distinct_decimals, format_estimate

    # two front trials at 8.62 and 8.57 tokens per step both read "8.6" at the format's one decimal
    assert distinct_decimals("tokens_per_step", [8.62, 8.57, None]) == 2
    assert distinct_decimals("tokens_per_step", [8.6, 8.6, 9.1]) == 1  # equal values stay equal
    assert distinct_decimals("accuracy", [0.61, 0.62]) == 1
    assert distinct_decimals("len_all", [30.0, 30.0 + 1e-9]) == 4  # at most 4
    assert format_estimate("tokens_per_step", 8.62, 8.5, 8.7, 2) == "8.62 [8.50, 8.70]"
    assert format_estimate("accuracy_delta", -0.014, -0.056, 0.028) == "-1.4 pts [-5.6 pts, +2.8 pts]"
