"""Adaptive depth selection: hand-made problems for every variant and edge case."""

from __future__ import annotations

import pytest

from tsq.config.pipeline import SelectionSpec
from tsq.data.traces import Response
from tsq.method.select import Pair, adaptive_quantile, build_pairs, k_table, n_positives, select_pairs


def test_adaptive_quantile_values() -> None:
    assert adaptive_quantile(0.25, 0.2) == pytest.approx(0.15)
    assert adaptive_quantile(0.0, 0.2) == pytest.approx(0.2)
    assert adaptive_quantile(1.0, 0.7) == 0.0


def test_q_dyn_pairs_positives_with_longer_incorrect_longest_gap_first() -> None:
    # c = 5 of N = 10, p = 0.5; α = 0.8 -> q = 0.4, k = ceil(2.0) = 2: positives are indices 3 (len 10)
    # and 0 (len 20). Incorrect: 5 (len 15), 6 (len 25), 7 (len 60).
    lengths = [20, 30, 40, 10, 50, 15, 25, 60, 5, 35]
    correct = [True, True, True, True, True, False, False, False, False, False]
    # index 8 (len 5) and 9 (len 35) are incorrect too
    pairs = select_pairs(lengths, correct, alpha=0.8, variant="q-dyn")
    # round-robin: rank 0 of each positive, then rank 1, ...; negatives longest first
    assert pairs == [(3, 7), (0, 7), (3, 9), (0, 9), (3, 6), (0, 6), (3, 5)]


def test_q_fix_ignores_correctness_rate() -> None:
    lengths = [1, 2, 3, 4]
    correct = [True, True, False, False]
    # p = 0.5, α = 1: q-fix q = 1 -> k = 2; q-dyn q = 0.5 -> k = 1
    assert select_pairs(lengths, correct, alpha=1.0, variant="q-fix") == [(0, 3), (1, 3), (0, 2), (1, 2)]
    assert select_pairs(lengths, correct, alpha=1.0, variant="q-dyn") == [(0, 3), (0, 2)]


def test_shortest_uses_only_the_shortest_correct() -> None:
    lengths = [9, 3, 7, 12, 11]
    correct = [True, True, True, False, False]
    assert select_pairs(lengths, correct, alpha=1.0, variant="shortest") == [(1, 3), (1, 4)]


def test_extra_negatives_are_correct_traces_longer_than_ratio_times_positive() -> None:
    # positive: index 0 (len 10). Correct longer ones: 15 (not > 1.5 * 10), 16 and 30 (extra negatives).
    lengths = [10, 15, 16, 30, 12, 40]
    correct = [True, True, True, True, False, False]
    pairs = select_pairs(lengths, correct, alpha=0.0, variant="q-dyn-extra-neg")
    # incorrect negatives first (longest first), then the extra correct ones (longest first)
    assert pairs == [(0, 5), (0, 4), (0, 3), (0, 2)]
    assert select_pairs(lengths, correct, alpha=0.0, variant="q-dyn") == [(0, 5), (0, 4)]
    assert select_pairs(lengths, correct, alpha=0.0, variant="q-dyn-extra-neg", extra_neg_ratio=2.5) == [
        (0, 5),
        (0, 4),
        (0, 3),
    ]


@pytest.mark.parametrize("variant", ["shortest", "q-fix", "q-dyn", "q-dyn-extra-neg"])
def test_no_pairs_when_none_or_all_correct(variant: str) -> None:
    assert select_pairs([5, 6, 7], [False, False, False], alpha=0.5, variant=variant) == []
    assert select_pairs([5, 6, 70], [True, True, True], alpha=0.5, variant=variant) == []
    assert select_pairs([], [], alpha=0.5, variant=variant) == []


def test_small_q_times_c_keeps_one_positive_unless_disabled() -> None:
    lengths = [5, 6, 7, 8]
    correct = [True, True, True, False]
    # p = 0.75, α = 0.2 -> q = 0.05, q·c = 0.15 < 1; the ceiling already gives k = 1
    assert select_pairs(lengths, correct, alpha=0.2) == [(0, 3)]
    assert select_pairs(lengths, correct, alpha=0.2, min_positives=0) == [(0, 3)]
    # α = 0 -> q·c = 0: only the floor keeps a positive
    assert select_pairs(lengths, correct, alpha=0.0) == [(0, 3)]
    assert select_pairs(lengths, correct, alpha=0.0, min_positives=0) == []


def test_cap_takes_pairs_round_robin_over_positives() -> None:
    lengths = [1, 2, 3, 10, 11, 12]
    correct = [True, True, True, False, False, False]
    # p = 0.5, α = 1 -> q = 0.5, k = ceil(1.5) = 2 positives (0, 1); 6 pairs, capped to 3
    assert select_pairs(lengths, correct, alpha=1.0, max_pairs=3) == [(0, 5), (1, 5), (0, 4)]
    assert len(select_pairs(lengths, correct, alpha=1.0, max_pairs=64)) == 6


def test_length_ties_broken_by_index() -> None:
    lengths = [8, 8, 8, 20, 8]
    correct = [False, True, True, False, False]
    # positives sorted by (length, index): 1 before 2; equal-length incorrect (0, 4) are not longer
    assert select_pairs(lengths, correct, alpha=0.0) == [(1, 3)]
    # negatives of equal length keep index order
    assert select_pairs([1, 9, 9], [True, False, False], alpha=0.0) == [(0, 1), (0, 2)]


def test_no_longer_incorrect_means_no_pairs() -> None:
    assert select_pairs([10, 12, 3, 10], [True, True, False, False], alpha=1.0) == []


def test_k_is_robust_to_float_noise() -> None:
    # n = 15, c = 5, α = 0.9: q·c = 0.9 · (2/3) · 5 = 3.0000000000000004 in floats; k must be 3
    assert n_positives(5, 15, alpha=0.9, variant="q-dyn") == 3


def test_unknown_variant_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"selection\.variant"):
        select_pairs([1, 2], [True, False], alpha=0.2, variant="longest")


def _resp(text: str, n_tokens: int, correct: bool) -> Response:
    return Response(text=text, n_tokens=n_tokens, correct=correct, finish_reason="stop")


def test_build_pairs_over_problems() -> None:
    samples = {
        "b": [_resp("b-short", 3, True), _resp("b-long-wrong", 9, False)],
        "a": [_resp("a-right", 4, True), _resp("a-right-too", 5, True)],  # p = 1: no pairs
        "c": [_resp("c-wrong", 2, False), _resp("c-right", 6, True), _resp("c-wrong-long", 8, False)],
    }
    prompts = {"a": "PA", "b": "PB", "c": "PC"}
    pairs = build_pairs(samples, prompts, alpha=0.2, selection_spec=SelectionSpec())
    assert pairs == [
        Pair("b", "PB", "b-short", "b-long-wrong"),
        Pair("c", "PC", "c-right", "c-wrong-long"),
    ]
    with pytest.raises(KeyError, match="'c'"):
        build_pairs(samples, {"a": "PA", "b": "PB"}, alpha=0.2, selection_spec=SelectionSpec())


def test_k_table_hand_values() -> None:
    # q-dyn, α = 1, n = 10: k = ⌈(1 − c/10)·c⌉ = ⌈0.9, 1.6, 2.1, 2.4, 2.5, 2.4, 2.1, 1.6, 0.9⌉
    assert k_table(1.0, 10, "q-dyn").tolist() == [1, 2, 3, 3, 3, 3, 3, 2, 1]
    # q-fix, α = 0.1, n = 31: 0.1 · 30 = 3.0000000000000004 in floats, still k = 3 (the rounding guard)
    assert k_table(0.1, 31, "q-fix").tolist() == [1] * 10 + [2] * 10 + [3] * 10
    assert k_table(0.9, 15, "q-dyn")[5 - 1] == 3  # c = 5: q·c = 3.0000000000000004
    # α = 0: the floor decides, capped at c
    assert k_table(0.0, 5, "q-dyn", min_positives=0).tolist() == [0, 0, 0, 0]
    assert k_table(0.0, 5, "q-dyn").tolist() == [1, 1, 1, 1]
    assert k_table(0.0, 5, "q-dyn", min_positives=3).tolist() == [1, 2, 3, 3]
    assert k_table(0.7, 4, "shortest").tolist() == [1, 1, 1]
    assert k_table(0.5, 1, "q-dyn").tolist() == []
    with pytest.raises(ValueError, match=r"selection\.variant"):
        k_table(0.2, 8, "longest")


def test_k_table_equals_n_positives() -> None:
    alphas = [i / 100 for i in range(101)] + [0.9, 0.3, 1 / 3, 0.15, 0.45]
    for variant in ("q-dyn", "q-fix", "shortest", "q-dyn-extra-neg"):
        for n in range(2, 41):
            for alpha in alphas:
                for m in (0, 1, 2):
                    expected = [n_positives(c, n, alpha, variant, m) for c in range(1, n)]
                    assert k_table(alpha, n, variant, m).tolist() == expected, (alpha, n, variant, m)
