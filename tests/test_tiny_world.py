"""The tiny world: deterministic, disjoint splits, difficulty spread, and traces that grade as they should."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from tsq.data.tiny_world import (
    MAX_VALUE,
    ChainProblem,
    TraceStyle,
    generate_trace,
    random_training_example,
    split_of,
    tiny_problem_set,
)
from tsq.data.traces import split_steps
from tsq.errors import UserError
from tsq.grading import extract_exact_answer


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


def test_rechecks_fix_slips() -> None:
    """Every step slips; with a re-check after every step the answer is still right, without it is wrong
    (on one step: over several, slips may cancel out)."""
    problem = ChainProblem(start=7, updates=(("+", 5), ("-", 3), ("+", 2)))
    checked = TraceStyle(p_long=0.0, p_check=1.0, restate=False)
    unchecked = TraceStyle(p_long=0.0, p_check=0.0, restate=False)
    for seed in range(20):
        fixed = generate_trace(problem, random.Random(seed), slip_rate=1.0, style=checked)
        assert extract_exact_answer(fixed) == str(problem.answer())
        assert "not" in fixed
        one_step = ChainProblem(start=7, updates=(("+", 5),))
        broken = generate_trace(one_step, random.Random(seed), slip_rate=1.0, style=unchecked)
        assert extract_exact_answer(broken) != "12"


def test_long_and_short_phrasings_say_the_same() -> None:
    problem = ChainProblem(start=9, updates=(("-", 4),))
    short = generate_trace(problem, random.Random(0), 0.0, TraceStyle(0.0, 0.0, False))
    long = generate_trace(problem, random.Random(0), 0.0, TraceStyle(1.0, 0.0, False))
    assert len(long.split()) > 2 * len(short.split())
    assert extract_exact_answer(short) == extract_exact_answer(long) == "5"


def test_training_traces_vary_and_are_mostly_right() -> None:
    rng = random.Random(0)
    lengths, right = [], 0
    for _ in range(300):
        question, trace = random_training_example(rng, 1, 5, slip_rate=0.05)
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
    assert 0.75 < right / 300 < 1.0
