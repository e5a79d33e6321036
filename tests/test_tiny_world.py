"""The tiny world (v2): deterministic, disjoint splits, difficulty spread, traces that grade as they should,
and the two properties TokenSqueeze needs: verification pays off only on deep chains, and even the shortest
correct traces carry long phrasings."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from tsq.data.grading import extract_exact_answer
from tsq.data.tiny_world import (
    MAX_VALUE,
    ChainProblem,
    TraceStyle,
    generate_trace,
    has_verification,
    random_style,
    random_training_example,
    sample_split_problem,
    slip_probability,
    split_of,
    stale_value,
    step_meaning,
    tiny_problem_set,
)
from tsq.data.traces import split_steps
from tsq.engines.tiny_model import TINY_BUILDS
from tsq.errors import UserError

SLIP = TINY_BUILDS["default"].slip_rate  # the world the default model is pre-trained on


def test_problem_by_hand() -> None:
    problem = ChainProblem(start=7, updates=(("+", 5), ("-", 3)))
    assert problem.question() == "a = 7 , b = a + 5 , c = b - 3 . what is c ?"
    assert problem.values() == [7, 12, 9]
    assert problem.answer() == 9


def test_problem_sets_are_deterministic_and_seeded() -> None:
    assert tiny_problem_set("eval", 30, seed=3) == tiny_problem_set("eval", 30, seed=3)
    assert tiny_problem_set("eval", 30, seed=3) != tiny_problem_set("eval", 30, seed=4)


def test_splits_are_disjoint() -> None:
    train = tiny_problem_set("train", 400, seed=0)
    evals = tiny_problem_set("eval", 200, seed=0)
    assert not {p.question for p in train.problems} & {p.question for p in evals.problems}
    assert all(split_of(p.question) == "eval" for p in evals.problems)
    assert len({p.id for p in train.problems}) == 400  # distinct problems


def test_difficulty_distribution_and_answers() -> None:
    ps = tiny_problem_set("eval", 100, seed=0, min_steps=2, max_steps=6)
    assert ps.grader == "exact"
    assert Counter(p.difficulty for p in ps.problems) == {2: 20, 3: 20, 4: 20, 5: 20, 6: 20}
    for p in ps.problems:
        assert p.question.count("=") == p.difficulty + 1
        assert 0 <= int(p.answer) <= MAX_VALUE


def test_too_many_problems_is_a_user_error() -> None:
    with pytest.raises(UserError, match=r"data\.eval\.n"):
        tiny_problem_set("eval", 1000, min_steps=1, max_steps=1)


def test_trace_without_slips_is_right_and_ends_with_the_answer() -> None:
    problem = ChainProblem(start=7, updates=(("+", 5), ("-", 3)))
    style = TraceStyle(p_long=0.0, p_check=0.0, restate=False)
    trace = generate_trace(problem, random.Random(0), slip_rate=0.0, style=style)
    assert trace == "b = 7 + 5 = 12 \n\n c = 12 - 3 = 9 \n\n answer : 9"
    assert split_steps(trace)[-1].strip() == "answer : 9"


def test_slip_probability_grows_with_position() -> None:
    assert slip_probability(1, 0.15) == 0.0  # a first step depends on the question only: never slips
    assert slip_probability(2, 0.15) == pytest.approx(0.15)
    assert slip_probability(4, 0.15) == pytest.approx(0.45)
    assert slip_probability(9, 0.15) == 1.0


def test_stale_value_by_hand() -> None:
    assert stale_value([7, 12], 2, "-", 3, ()) == 7  # the second step copies a instead of b
    assert stale_value([7, 12, 9], 3, "+", 2, ()) == 12
    assert stale_value([7], 1, "+", 5, ()) is None  # a first step has nothing stale to copy
    assert stale_value([2, 12], 2, "-", 3, ()) is None  # 2 - 3 leaves 0..19
    assert stale_value([15, 6], 2, "+", 3, (("+", 2),)) is None  # 15 + 3 + 2 = 20 leaves it later


def test_verification_fixes_slips() -> None:
    """At slip rate 1 the second step always slips (copies a = 7 instead of b = 12; the first step never
    slips): a verifying trace recomputes it from b and answers right; one without answers 4."""
    problem = ChainProblem(start=7, updates=(("+", 5), ("-", 3)))
    fixed = generate_trace(problem, random.Random(0), 1.0, TraceStyle(0.0, 1.0, False))
    assert fixed == (
        "b = 7 + 5 = 12 \n\n check b : 7 + 5 = 12 \n\n c = 7 - 3 = 4 \n\n"
        " check c : 12 - 3 = 9 \n\n answer : 9"
    )
    for seed in range(20):
        fixed = generate_trace(problem, random.Random(seed), 1.0, TraceStyle(0.5, 1.0, True))
        assert extract_exact_answer(fixed) == "9"
        broken = generate_trace(problem, random.Random(seed), 1.0, TraceStyle(0.5, 0.0, True))
        assert extract_exact_answer(broken) == "4"


def test_verification_is_detected_in_any_phrasing() -> None:
    problem = ChainProblem(start=7, updates=(("+", 5), ("-", 3)))
    for seed in range(10):
        rng = random.Random(seed)
        style = TraceStyle(rng.random(), 1.0, rng.random() < 0.5)
        assert has_verification(generate_trace(problem, rng, 0.5, style))
        assert not has_verification(generate_trace(problem, rng, 0.5, TraceStyle(style.p_long, 0.0, True)))


def test_long_and_short_phrasings_say_the_same() -> None:
    problem = ChainProblem(start=9, updates=(("-", 4),))
    short = generate_trace(problem, random.Random(0), 0.0, TraceStyle(0.0, 0.0, False))
    long = generate_trace(problem, random.Random(0), 0.0, TraceStyle(1.0, 0.0, False))
    assert len(long.split()) > 2 * len(short.split())
    assert extract_exact_answer(short) == extract_exact_answer(long) == "5"


def _is_long(step: str) -> bool:
    return step.split()[0] in ("now", "next", "first", "so")  # the first word of every long phrasing


def test_phrasing_is_drawn_per_step() -> None:
    """Every style mixes phrasings within a trace: no per-trace probability of a long step is 0 or 1."""
    problem = ChainProblem(start=3, updates=(("+", 4), ("+", 2), ("-", 5), ("+", 1)))
    mixed = 0
    for seed in range(50):
        rng = random.Random(seed)
        style = random_style(rng)
        assert 0.0 < style.p_long < 1.0
        kinds = {_is_long(s) for s in split_steps(generate_trace(problem, rng, 0.0, style))}
        mixed += kinds == {True, False}
    assert mixed >= 30


def test_verification_pays_off_on_deep_chains_only() -> None:
    """Pre-training traces at the default build's slip rate 0.3: verifying traces are always right; without
    verification a one-step chain is always right and a four-step one is right with probability
    (1 − .3)(1 − .6)(1 − .9) = 0.028, or more: a slip whose stale value would leave 0..19 never happens."""
    assert SLIP == 0.3
    rng = random.Random(0)
    right: dict[tuple[int, bool], list[bool]] = {}
    for i in range(1600):
        depth = 1 if i % 2 else 4
        problem = sample_split_problem(rng, "train", depth)
        trace = generate_trace(problem, rng, SLIP, random_style(rng))
        right.setdefault((depth, has_verification(trace)), []).append(
            extract_exact_answer(trace) == str(problem.answer())
        )
    rate = {key: sum(v) / len(v) for key, v in right.items()}
    assert rate[(1, True)] == rate[(1, False)] == rate[(4, True)] == 1.0
    assert 0.02 < rate[(4, False)] < 0.16  # 0.092 here
    assert 0.4 < len(right[(4, True)]) / 800 < 0.6  # about half the traces verify


def test_shortest_correct_traces_still_carry_long_steps() -> None:
    """What refinement needs: of 16 traces of a deep problem, the shortest correct one mostly has a
    long-phrased step (the answer step, which refinement never rewrites, does not count)."""
    rng = random.Random(1)
    with_long = 0
    for _ in range(100):
        problem = sample_split_problem(rng, "train", 4)
        traces = [generate_trace(problem, rng, SLIP, random_style(rng)) for _ in range(16)]
        correct = [t for t in traces if extract_exact_answer(t) == str(problem.answer())]
        shortest = min(correct, key=lambda t: len(t.split()))
        with_long += any(_is_long(s) for s in split_steps(shortest)[:-1])
    assert with_long >= 60


def test_training_traces_vary_and_are_mostly_right() -> None:
    rng = random.Random(0)
    lengths, right = [], 0
    for _ in range(300):
        question, trace = random_training_example(rng, 1, 5, slip_rate=SLIP)
        assert split_of(question) == "train"
        lengths.append(len(trace.split()))
        values = [int(tok) for tok in question.split() if tok.isdigit()]
        start, operands = values[0], values[1:]
        ops = [tok for tok in question.split() if tok in "+-"]
        answer = start
        for op, y in zip(ops, operands, strict=True):
            answer = answer + y if op == "+" else answer - y
        right += extract_exact_answer(trace) == str(answer)
    assert max(lengths) > 5 * min(lengths)
    assert 0.65 < right / 300 < 0.95


def test_step_meaning_ignores_phrasing_only() -> None:
    same = [
        "b = 7 + 5 = 12",
        "now we work out b : b = a + 5 , and so that is 7 + 5 = 12",
        "next we want b : b = a + 5 , and so b is then 7 + 5 = 12",
    ]
    assert {step_meaning(s) for s in same} == {("compute", "b", "12")}
    assert step_meaning("b = 7 + 5 = 13") != step_meaning(same[0])  # a value changed
    assert step_meaning("c = b - 3 = 9") != step_meaning(same[0])  # another step
    assert step_meaning("check b : 7 + 5 = 12") == ("check", "b", "12")
    assert step_meaning("check b : 7 + 5 = 13") != step_meaning("check b : 7 + 5 = 12")
    assert step_meaning("answer : 9") == step_meaning("so c is 9 , and the answer is 9") == ("answer", "9")
    assert step_meaning("start with a = 7") == step_meaning("first we have a = 7 , and we want c")
    assert step_meaning("is is")[0] == "other"
