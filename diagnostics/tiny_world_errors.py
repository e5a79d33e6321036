"""Why the tiny model's deep answers are wrong: the first mistake of every wrong baseline response, by depth.

Reads (or computes) the baseline evaluation of a spec on the tiny world through tsq's own code, replays each
wrong response step by step against the problem's true values, and names its first mistake:

- `wrong operator`: a computing step applies the other operator to the right value ("c = 10 - 2 = 8" for
  c = b + 2); `wrong operand`: it uses another update's number; `stale value`: it builds on an earlier
  variable's value (the slip the world's traces teach); `wrong value`: it builds on a value no variable had;
  `wrong sum`: the arithmetic as written is wrong;
- `check repeated it`: a re-check restated the step's wrong value; `check missed it`: it stated another wrong
  value; `check broke it`: it stated a wrong value after a right step;
- `answer miscopied`: every value right, the answer not the last one; `stopped early`: no answer for the
  last variable; `other`: a step the world never writes, or one out of order.

A verifying response whose first mistake a later check fixed is counted by the mistake that finally stuck.
A second table asks whether the checks recompute at all: what a check states after a step that went wrong
(the training data: always the right value). A third counts the sums written wrong ("8 - 5 = 4") by the
phrasing that wrote them, in every response: in the training data there are none, so a phrasing whose sums
the model gets wrong more often is one a check's recomputation (or a rewrite to another phrasing) can fix.

    TSQ_HOME=... .venv/bin/python diagnostics/tiny_world_errors.py sweeps/quickstart.yaml
        [--eval-problems 260]
        [--adapter $TSQ_HOME/studies/STUDY/trial-N/adapter ...]   (trained models instead of the baseline)

With several `--adapter`s (one configuration's seeds) the tables sum the models' responses, and one more line
gives each model's share of checks that fixed a wrong step, with their mean and SD: a difference between two
configurations in that share is a difference between their checks.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field, fields

from tiny_world_depth import evaluations, model_parser  # the sibling diagnostic (scripts run from here)

from tsq.data.loading import load_problem_set
from tsq.data.tiny_world import OPS, VARIABLES, ChainProblem, apply_op, has_verification, step_meaning
from tsq.data.traces import STEP_SEPARATOR, Response


def true_chain(question: str) -> tuple[list[int], list[tuple[str, int]]]:
    """The values a..z of a tiny-world question and its (op, operand) updates."""
    words = question.split()
    updates = tuple((w, int(words[i + 1])) for i, w in enumerate(words[:-1]) if w in OPS)
    problem = ChainProblem(start=int(words[2]), updates=updates)
    return problem.values(), list(problem.updates)


def written_sum(step: str) -> tuple[int, str, int, int] | None:
    """The sum a step or check writes, (x, op, y, value): the end of every phrasing; None if it has none."""
    words = step.split()
    numbers = [int(w) for w in words if w.isdigit()]
    ops = [w for w in words if w in OPS]
    if len(numbers) < 3 or not ops:
        return None
    x, y, said = numbers[-3:]
    return x, ops[-1], y, said


def _compute_mistake(step: str, index: int, stated: list[int], values: list[int], updates) -> str | None:
    """What a computing step for variable `index` got wrong; None when it is right from the value as stated
    before it (so an earlier mistake carried on is not counted twice)."""
    written_as = written_sum(step)
    if written_as is None:
        return "other"
    x, written, y, said = written_as
    op, operand = updates[index - 1]
    if said != apply_op(x, written, y):
        return "wrong sum"
    if x != stated[index - 1]:
        return "stale value" if x in values[: index - 1] else "wrong value"
    if y != operand:
        return "wrong operand"
    return "wrong operator" if written != op else None


def first_mistake(text: str, values: list[int], updates: list[tuple[str, int]]) -> str:
    """The mistake that made a wrong response wrong (see the module docstring)."""
    stated = values[:1]  # the values as the response states them, by variable index
    mistake: str | None = None
    for step in (s.strip() for s in text.split(STEP_SEPARATOR)):
        meaning = step_meaning(step)
        var = meaning[1] if meaning[0] in ("compute", "check") else ""
        index = VARIABLES.find(var) if len(var) == 1 else -1  # -1: not a variable
        if meaning[0] == "compute":
            if not 1 <= index <= len(stated) or index >= len(values):
                return "other"
            mistake = mistake or _compute_mistake(step, index, stated, values, updates)
            del stated[index:]
            stated.append(int(meaning[2]))
        elif meaning[0] == "check":
            if not 1 <= index < len(stated):
                return "other"
            step_value, stated[index] = stated[index], int(meaning[2])
            if stated[index] != values[index]:
                if step_value == values[index]:
                    return "check broke it"
                return "check repeated it" if stated[index] == step_value else "check missed it"
            mistake = None  # the check fixed what went wrong before it (or confirmed a right step)
        elif meaning[0] == "answer":
            if len(stated) < len(values):
                return "stopped early"
            return mistake or ("answer miscopied" if int(meaning[1]) != stated[-1] else "other")
    return "stopped early"


def compute_phrasing(step: str) -> str:
    """A computing step's phrasing: "long" ("now we work out c : ...") or "short" ("c = 12 - 3 = 9")."""
    return "long" if step.split()[0] in ("now", "next") else "short"


def checks_after_slips(text: str, values: list[int]) -> list[tuple[str, str]]:
    """For every check that follows a wrong step: the phrasing of the step it checks, and what the check did:
    "fixed", "repeated" (restated the step's wrong value) or "other" (another wrong value)."""
    said: dict[str, tuple[int, str]] = {}
    out = []
    for step in (s.strip() for s in text.split(STEP_SEPARATOR)):
        meaning = step_meaning(step)
        if meaning[0] not in ("compute", "check") or len(meaning[1]) != 1:
            continue
        index, value = VARIABLES.find(meaning[1]), int(meaning[2])
        if meaning[0] == "compute":
            said[meaning[1]] = (value, compute_phrasing(step))
        elif meaning[1] in said and 0 < index < len(values) and said[meaning[1]][0] != values[index]:
            wrong, phrasing = said[meaning[1]]
            repeated = "repeated" if value == wrong else "other"
            out.append((phrasing, "fixed" if value == values[index] else repeated))
    return out


def sum_phrasings(text: str) -> list[tuple[str, bool]]:
    """(phrasing, sum written right) for every computing step and check: "short" ("c = 12 - 3 = 9"),
    "long" ("now we work out c : ..."), or "check"; the sum is the step's last "x op y" and value."""
    out = []
    for step in (s.strip() for s in text.split(STEP_SEPARATOR)):
        kind = step_meaning(step)[0]
        written_as = written_sum(step)
        if kind not in ("compute", "check") or written_as is None:
            continue
        x, op, y, said = written_as
        phrasing = "check" if kind == "check" else compute_phrasing(step)
        out.append((phrasing, said == apply_op(x, op, y)))
    return out


@dataclass
class Tally:
    """The three tables' counts over one or more models' responses."""

    # keyed by (depth, whether the response checks, its first mistake), and by (depth, checks)
    mistakes: Counter[tuple[int, bool, str]] = field(default_factory=Counter)
    totals: Counter[tuple[int, bool]] = field(default_factory=Counter)
    # keyed by (the phrasing of the wrong step checked, what the check did)
    after_slips: Counter[tuple[str, str]] = field(default_factory=Counter)
    sums: Counter[tuple[str, bool]] = field(default_factory=Counter)

    def add(self, responses: dict[str, list[Response]], questions: dict[str, str]) -> None:
        for pid, group in responses.items():
            values, updates = true_chain(questions[pid])
            for r in group:
                key = (len(updates), has_verification(r.text))
                self.totals[key] += 1
                self.after_slips.update(checks_after_slips(r.text, values))
                self.sums.update(sum_phrasings(r.text))
                if not r.correct:
                    self.mistakes[(*key, first_mistake(r.text, values, updates))] += 1

    def merge(self, other: Tally) -> None:
        for f in fields(self):
            getattr(self, f.name).update(getattr(other, f.name))

    def fixed_share(self) -> float:
        fixed = sum(v for (_, outcome), v in self.after_slips.items() if outcome == "fixed")
        n = sum(self.after_slips.values())
        return fixed / n if n else float("nan")


def print_tally(tally: Tally) -> None:
    counts, totals, after_slips, sums = tally.mistakes, tally.totals, tally.after_slips, tally.sums
    kinds = sorted(  # commonest first; ties by name, so a rerun prints the same columns
        {kind for *_, kind in counts}, key=lambda k: (-sum(v for c, v in counts.items() if c[2] == k), k)
    )
    print("| depth | checks | responses | wrong | " + " | ".join(kinds) + " |")
    print("|---|---|---|---|" + "---|" * len(kinds))
    for depth, checks in sorted(totals):
        wrong = sum(counts[(depth, checks, k)] for k in kinds)
        cells = " | ".join(str(counts[(depth, checks, k)]) for k in kinds)
        print(f"| {depth} | {'yes' if checks else 'no'} | {totals[(depth, checks)]} | {wrong} | {cells} |")
    outcomes = ("fixed", "repeated", "other")
    print(
        "\n| checks after a wrong step | checks | fixed it | repeated the wrong value | another wrong value |"
    )
    print("|---|---|---|---|---|")
    for name, phrasings in (
        ("any", ("short", "long")),
        ("short-phrased", ("short",)),
        ("long-phrased", ("long",)),
    ):
        counts_of = {o: sum(after_slips[(p, o)] for p in phrasings) for o in outcomes}
        n = sum(counts_of.values())
        shares = " | ".join(f"{counts_of[o] / n:.1%}" if n else "n/a" for o in outcomes)
        print(f"| {name} | {n} | {shares} |")
    print("\n| phrasing | sums written | wrong | share wrong |")
    print("|---|---|---|---|")
    for phrasing in ("short", "long", "check"):
        wrong = sums[(phrasing, False)]
        total = wrong + sums[(phrasing, True)]
        share = f"{wrong / total:.1%}" if total else "n/a"
        print(f"| {phrasing} | {total} | {wrong} | {share} |")


def main() -> None:
    spec, results = evaluations(model_parser(__doc__.splitlines()[0]).parse_args())
    questions = {p.id: p.question for p in load_problem_set(spec.data, "eval").problems}
    total, fixed = Tally(), []
    for label, result in results:
        one = Tally()
        one.add(result.responses, questions)
        total.merge(one)
        fixed.append(one.fixed_share())
        print(f"{label}: {sum(one.after_slips.values())} checks after a wrong step, {fixed[-1]:.1%} fixed it")
    print()
    print_tally(total)
    if len(fixed) > 1:
        mean, sd = statistics.mean(fixed), statistics.stdev(fixed)
        print(f"\nchecks that fixed a wrong step, per model: {mean:.1%} ± {sd:.1%} SD")


if __name__ == "__main__":
    main()
