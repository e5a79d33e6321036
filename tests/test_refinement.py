"""The ε rule of refinement (tsq.method.refinement) on hand-made candidates: threshold semantics, ties, the
ε values where the refined text changes, the JSON round trip, and that the rule imports no torch.

Scoring the candidates (the KL engine) on the tiny model: tests/test_refine.py.
"""

from __future__ import annotations

import math
import subprocess
import sys

from tsq.method.refinement import (
    Candidate,
    StepCandidates,
    TraceCandidates,
    reachable_refinements,
    refine_step,
    refine_trace,
    refinement_breakpoints,
)


def _hand_trace() -> TraceCandidates:
    return TraceCandidates(
        head="",
        steps=(
            StepCandidates(
                original="now we work out b : b is 9 - 4 , which gives 5",
                n_tokens=14,
                refinable=True,
                candidates=(
                    Candidate("b = 9 - 4 = 5", 7, 0.003),
                    Candidate("b is 5", 3, 0.2),
                    Candidate("b = 5 from 9 - 4", 7, 0.001),
                ),
            ),
            StepCandidates(
                original="c = 5 + 1 = 6",
                n_tokens=7,
                refinable=True,
                candidates=(Candidate("c = 6", 3, 0.05),),
            ),
            StepCandidates(original="answer : 6", n_tokens=3, refinable=False),
        ),
        tail="",
    )


def test_refine_trace_threshold_semantics() -> None:
    cands = _hand_trace()
    original = "now we work out b : b is 9 - 4 , which gives 5\n\nc = 5 + 1 = 6\n\nanswer : 6"
    tiny = refine_trace(cands, 1e-9)  # nothing qualifies but the original
    assert (tiny.text, tiny.tokens_after, tiny.n_rewritten) == (original, (14, 7, 3), 0)
    huge = refine_trace(cands, 1e9)  # the shortest candidate of every step
    assert huge.text == "b is 5\n\nc = 6\n\nanswer : 6"
    assert (huge.tokens_before, huge.tokens_after, huge.n_rewritten, huge.n_steps) == (
        (14, 7, 3),
        (3, 3, 3),
        2,
        3,
    )
    # ε = 0.005: strict "<"; of the two 7-token candidates below ε the lower KL wins
    mid = refine_trace(cands, 0.005)
    assert mid.text == "b = 5 from 9 - 4\n\nc = 5 + 1 = 6\n\nanswer : 6"
    assert mid.tokens_after == (7, 7, 3)
    assert refine_trace(cands, 0.05).tokens_after == (7, 7, 3)  # KL 0.05 is not below ε = 0.05
    assert TraceCandidates.from_json(cands.to_json()) == cands


def test_reachable_refinements_lists_every_text_some_epsilon_gives() -> None:
    cands = _hand_trace()
    original = "now we work out b : b is 9 - 4 , which gives 5\n\nc = 5 + 1 = 6\n\nanswer : 6"
    b_from = "b = 5 from 9 - 4\n\nc = 5 + 1 = 6\n\nanswer : 6"
    # KL 0.001 and 0.003 both pass inside [1e-4, 0.01); the 0.003 candidate never wins (same length)
    assert reachable_refinements(cands, 1e-4, 0.01) == [original, b_from]
    # ε = high itself is in range, but "KL < ε" keeps a candidate with KL = 0.05 out at high = 0.05
    assert reachable_refinements(cands, 1e-4, 0.05) == [original, b_from]
    assert reachable_refinements(cands, 1e-4, 1.0) == [
        original,
        b_from,
        "b = 5 from 9 - 4\n\nc = 6\n\nanswer : 6",
        "b is 5\n\nc = 6\n\nanswer : 6",
    ]
    assert reachable_refinements(cands, 0.06, 0.1) == ["b = 5 from 9 - 4\n\nc = 6\n\nanswer : 6"]
    for eps in (1e-4, 0.002, 0.004, 0.06, 0.3, 1.0):
        assert refine_trace(cands, eps).text in reachable_refinements(cands, 1e-4, 1.0)


def test_refine_trace_keeps_head_and_tail() -> None:
    cands = TraceCandidates(
        head="<think>\n",
        steps=(StepCandidates("long step", 2, True, (Candidate("s", 1, 0.0),)),),
        tail="\n</think>\n\nanswer",
    )
    assert refine_trace(cands, 0.1).text == "<think>\ns\n</think>\n\nanswer"


def test_refine_step_ties_go_to_the_original_then_the_lower_kl_then_order() -> None:
    step = StepCandidates("a b c", 3, True, (Candidate("x y", 2, 0.02), Candidate("y x", 2, 0.01)))
    assert refine_step(step, 0.015) == ("y x", 2)  # only KL 0.01 is below ε
    assert refine_step(step, 0.1) == ("y x", 2)  # equal length: the lower KL
    same = StepCandidates("a b", 2, True, (Candidate("c d", 2, 0.0),))  # not shorter: the original wins
    assert refine_step(same, 1.0) == ("a b", 2)
    twins = StepCandidates("a b c", 3, True, (Candidate("p q", 2, 0.01), Candidate("q p", 2, 0.01)))
    assert refine_step(twins, 1.0) == ("p q", 2)  # equal length and KL: the earlier


def test_refinement_breakpoints_are_where_the_text_changes() -> None:
    cands = _hand_trace()
    # KL 0.001 changes step 0; 0.003 does not (same length, higher KL); 0.05 changes step 1; 0.2 step 0 again
    assert refinement_breakpoints(cands, 1e-4, 1.0) == {
        math.nextafter(0.001, math.inf),
        math.nextafter(0.05, math.inf),
        math.nextafter(0.2, math.inf),
    }
    assert refinement_breakpoints(cands, 1e-4, 0.05) == {math.nextafter(0.001, math.inf)}
    # one text more than the breakpoints, as `reachable_refinements` lists them
    assert len(reachable_refinements(cands, 1e-4, 1.0)) == 1 + len(refinement_breakpoints(cands, 1e-4, 1.0))


def test_json_round_trip() -> None:
    cands = _hand_trace()
    assert TraceCandidates.from_json(cands.to_json()) == cands
    data = cands.to_json()
    assert data["steps"][0]["candidates"][0] == {"text": "b = 9 - 4 = 5", "n_tokens": 7, "kl": 0.003}


def test_the_rule_imports_no_torch() -> None:
    code = "import tsq.method.refinement, sys; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
