"""The tiny reasoning world (v2): chain arithmetic on 0..19, and the verbose, sometimes wrong traces the tiny
model is pre-trained on.

A problem with k steps defines a start value and k dependent updates by 1..9, e.g. (k = 2)
"a = 7 , b = a + 5 , c = b - 3 . what is c ?"; the answer is c. Every value stays within 0..19 (the
vocabulary's numbers), so each step is a fact of a small addition/subtraction table a tiny model can learn.

Traces vary along the two axes TokenSqueeze compresses, and only one of them buys accuracy:
- depth: whether the trace verifies (drawn once per trace). A verifying trace re-checks every computing step
  right after it and corrects the value when it was a slip. Slips are rare early in a chain and common late
  in it (step i slips with probability slip_rate·(i − 1)), so on deep problems checks are worth many points
  and on one-step problems nothing. An optional restatement of the question adds depth that buys nothing;
- expression: each computing, answer and restatement step is said in a long or a short phrasing, drawn
  per STEP with a per-trace probability that is never 0, so even the shortest correct responses usually carry
  long-phrased steps that a phrasing-only rewrite can shorten ("now we work out b : b = a + 5 , and so that
  is 7 + 5 = 12" vs "b = 7 + 5 = 12").

Every text is in canonical form: words separated by single spaces, steps separated by " \\n\\n " (a blank
line as its own word), so the tiny model's word-level tokenizer round-trips it exactly.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Literal

from tsq.data.problems import Problem, ProblemSet
from tsq.data.traces import STEP_SEPARATOR
from tsq.errors import UserError

MAX_VALUE = 19
MAX_OPERAND = 9
VARIABLES = "abcdefghijk"
MAX_STEPS = len(VARIABLES) - 1
OPS = ("+", "-")
# Every word a tiny-world text can contain (the tokenizer's vocabulary, special tokens aside).
WORDS: tuple[str, ...] = (
    *(str(v) for v in range(MAX_VALUE + 1)),
    *VARIABLES,
    *OPS,
    STEP_SEPARATOR,
    *"=,.:?",
    *("what", "is", "we", "have", "and", "want", "now", "work", "out", "that", "then", "next"),
    *("check", "again", "correct", "not", "so", "the", "answer", "first", "start", "with"),
)

Split = Literal["train", "eval"]


@dataclass(frozen=True)
class ChainProblem:
    """Start value and the (op, operand) updates; variable i+1 = variable i op operand."""

    start: int
    updates: tuple[tuple[str, int], ...]

    @property
    def steps(self) -> int:
        return len(self.updates)

    def values(self) -> list[int]:
        vals = [self.start]
        for op, operand in self.updates:
            vals.append(apply_op(vals[-1], op, operand))
        return vals

    def answer(self) -> int:
        return self.values()[-1]

    def question(self) -> str:
        parts = [f"a = {self.start}"]
        for i, (op, operand) in enumerate(self.updates):
            parts.append(f", {VARIABLES[i + 1]} = {VARIABLES[i]} {op} {operand}")
        return " ".join(parts) + f" . what is {VARIABLES[self.steps]} ?"


def apply_op(value: int, op: str, operand: int) -> int:
    return value + operand if op == "+" else value - operand


def in_range(value: int, updates: tuple[tuple[str, int], ...]) -> bool:
    """Whether `value` and every value the `updates` lead to from it stay within 0..19."""
    for op, operand in (("+", 0), *updates):
        value = apply_op(value, op, operand)
        if not 0 <= value <= MAX_VALUE:
            return False
    return True


def random_problem(rng: random.Random, steps: int) -> ChainProblem:
    if not 1 <= steps <= MAX_STEPS:
        raise UserError(f"data.max_steps: the tiny world supports 1..{MAX_STEPS} steps, got {steps}")
    start = value = rng.randrange(MAX_VALUE + 1)
    updates = []
    for _ in range(steps):
        choices = [(op, y) for op in OPS for y in range(1, MAX_OPERAND + 1) if in_range(value, ((op, y),))]
        op, operand = rng.choice(choices)
        updates.append((op, operand))
        value = apply_op(value, op, operand)
    return ChainProblem(start=start, updates=tuple(updates))


def split_of(question: str) -> Split:
    """The split a question belongs to, by a hash of its text: so train and eval are disjoint."""
    return "eval" if hashlib.sha256(question.encode()).digest()[0] % 4 == 0 else "train"


def sample_split_problem(rng: random.Random, split: Split, steps: int) -> ChainProblem:
    """A random problem with `steps` steps whose question hashes into `split`."""
    while True:
        problem = random_problem(rng, steps)
        if split_of(problem.question()) == split:
            return problem


def tiny_problem_set(
    split: Split, n: int, seed: int = 0, min_steps: int = 1, max_steps: int = 5
) -> ProblemSet:
    """`n` distinct problems of `split`, difficulties cycling evenly through min_steps..max_steps."""
    if split not in ("train", "eval"):
        raise UserError(f"data.split: the tiny world has splits 'train' and 'eval', got {split!r}")
    if min_steps > max_steps:
        raise UserError("data.min_steps: must be <= data.max_steps")
    rng = random.Random(f"tiny-world/{split}/{seed}")
    problems: list[Problem] = []
    seen: set[str] = set()
    levels = range(min_steps, max_steps + 1)
    for i in range(n):
        steps = levels[i % len(levels)]
        for _ in range(10_000):
            chain = sample_split_problem(rng, split, steps)
            question = chain.question()
            if question not in seen:
                break
        else:
            raise UserError(f"data.{split}.n: only {len(seen)} distinct tiny problems fit; ask for fewer")
        seen.add(question)
        digest = hashlib.sha256(question.encode()).hexdigest()[:12]
        problems.append(
            Problem(id=f"tiny-{digest}", question=question, answer=str(chain.answer()), difficulty=steps)
        )
    return ProblemSet(name=f"tiny-{split}", problems=tuple(problems), grader="exact")


@dataclass(frozen=True)
class TraceStyle:
    """How a trace is said: drawn once per trace, so a model learns to commit to a style."""

    p_long: float  # probability that a step uses a long phrasing (expression), drawn per step
    p_check: float  # probability that the trace verifies: re-checks every computing step (depth)
    restate: bool  # open with a restatement of the question (depth that buys nothing)


# Per-trace phrasing probabilities: never 0, so short correct responses still carry long steps to refine.
P_LONG_CHOICES = (0.5, 0.7, 0.9)
P_VERIFY = 0.5  # half the traces verify: the base model's samples hold both kinds
P_RESTATE = 0.3


def random_style(rng: random.Random) -> TraceStyle:
    return TraceStyle(
        p_long=rng.choice(P_LONG_CHOICES),
        p_check=1.0 if rng.random() < P_VERIFY else 0.0,
        restate=rng.random() < P_RESTATE,
    )


def slip_probability(position: int, slip_rate: float) -> float:
    """Probability that the computing step at 1-based `position` states a wrong value: it grows with the
    number of values computed before it, so one-step chains never slip and deep ones often do."""
    return min(1.0, max(0.0, slip_rate * (position - 1)))


def _compute_step(
    rng: random.Random, long: bool, var: str, prev: str, x: int, op: str, y: int, v: int
) -> str:
    # The long phrasings quote the update as the question says it ("c = b + 2"): v1's "c is b + 2" had the
    # tiny model copy the wrong update's operand on most deep chains. Every phrasing writes the numbers out,
    # so the sums the model learns are always exact (a slip is a wrong copy, never a wrong sum), and ends in
    # the sum "x op y = v" exactly as the short form and the checks write it: format 8's long forms put
    # ", which gives" between the operands and the value, and the model got those sums wrong 4x as often
    # (12.8% vs 3.5% on one-step chains), so a check's recomputation bought accuracy even where no step
    # slips (docs/tiny-world.md, "Design 11"). The long forms keep format 8's 21 tokens.
    if not long:
        return f"{var} = {x} {op} {y} = {v}"
    return rng.choice(
        (
            f"now we work out {var} : {var} = {prev} {op} {y} , and so that is {x} {op} {y} = {v}",
            f"next we want {var} : {var} = {prev} {op} {y} , and so {var} is then {x} {op} {y} = {v}",
        )
    )


def _check_step(var: str, x: int, op: str, y: int, v: int) -> str:
    """Re-check the step just written: recompute it from the value stated before it (a check never slips).
    The check states the value and the next step builds on it, so a check fixes a slip without judging it:
    a verdict ("correct" / "not 4 , so c = 9") asks the model to compare two numbers, which the tiny model
    did by guessing (docs/tiny-world.md, build 7)."""
    return f"check {var} : {x} {op} {y} = {v}"


def has_verification(text: str) -> bool:
    """Whether a response (in either phrasing) contains a verification step: the world knows its own words."""
    return "check" in text.split()


def step_meaning(step: str) -> tuple[str, ...]:
    """What a step says, whatever its phrasing: ("compute", var, value), ("check", var, value),
    ("answer", value), ("restate", start), or ("other", text) for anything the world never writes.

    Two phrasings of the same step have the same meaning; a rewrite that changes a stated value or turns one
    kind of step into another does not (used to tell phrasing-only rewrites from value-changing ones)."""
    words = step.split()
    if not words:
        return ("other", "")
    numbers = [w for w in words if w.isdigit()]
    if words[0] == "check" and len(words) > 1 and numbers:
        return ("check", words[1], numbers[-1])
    if "answer" in words and numbers:
        return ("answer", numbers[-1])
    if words[0] in ("first", "start") and numbers:
        return ("restate", numbers[0])
    if len(words) >= 3 and words[0] in VARIABLES and words[1] == "=" and numbers:
        return ("compute", words[0], numbers[-1])
    if words[0] in ("now", "next") and ":" in words and numbers:
        var = words[words.index(":") - 1]
        if var in VARIABLES:
            return ("compute", var, numbers[-1])
    return ("other", step.strip())


def stale_value(
    values: list[int], position: int, op: str, y: int, rest: tuple[tuple[str, int], ...]
) -> int | None:
    """The value a slip at 1-based `position` builds on: the one before the previous (a stale copy, so the
    sum as written stays exact and only the copy is wrong), or None when there is none or the chain would
    leave 0..19 from it."""
    if position < 2:
        return None
    stale = values[position - 2]
    return stale if in_range(apply_op(stale, op, y), rest) else None


def generate_trace(problem: ChainProblem, rng: random.Random, slip_rate: float, style: TraceStyle) -> str:
    """One reasoning trace in canonical form, ending with "answer : <value>" (or its long phrasing).

    The computing step at position i slips with `slip_probability(i, slip_rate)`: it copies a stale value
    (`stale_value`) and computes from it, and later steps build on the value as stated. A verifying trace
    (`style.p_check`, drawn once per trace) re-checks every computing step right after it from the value as
    stated before it, which fixes every slip; without checks any slip makes the answer wrong.
    """
    last = VARIABLES[problem.steps]
    verify = rng.random() < style.p_check
    steps: list[str] = []
    if style.restate:
        if rng.random() < style.p_long:
            steps.append(f"first we have a = {problem.start} , and we want {last}")
        else:
            steps.append(f"start with a = {problem.start}")
    stated = [problem.start]  # values as the trace states them (after any re-check)
    for i, (op, operand) in enumerate(problem.updates):
        var, prev = VARIABLES[i + 1], VARIABLES[i]
        x = stated[-1]
        right = apply_op(x, op, operand)
        used = x
        if rng.random() < slip_probability(i + 1, slip_rate):
            stale = stale_value(stated, i + 1, op, operand, problem.updates[i + 1 :])
            used = x if stale is None else stale
        said = apply_op(used, op, operand)
        steps.append(_compute_step(rng, rng.random() < style.p_long, var, prev, used, op, operand, said))
        if verify:
            steps.append(_check_step(var, x, op, operand, right))
            said = right
        stated.append(said)
    value = stated[-1]
    if rng.random() < style.p_long:
        steps.append(f"so {last} is {value} , and the answer is {value}")
    else:
        steps.append(f"answer : {value}")
    return f" {STEP_SEPARATOR} ".join(steps)


def random_training_example(
    rng: random.Random, min_steps: int, max_steps: int, slip_rate: float
) -> tuple[str, str]:
    """(question, trace) for pre-training, drawn only from the train side of the split hash."""
    problem = sample_split_problem(rng, "train", rng.randint(min_steps, max_steps))
    return problem.question(), generate_trace(problem, rng, slip_rate, random_style(rng))
