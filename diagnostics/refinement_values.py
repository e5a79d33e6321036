"""What refinement's rewrites do to the values a tiny-world step states, per ε.

Reads a spec's cached self-samples and refinement candidates
(`objectives.tokensqueeze.check.load_cached_candidates`: it
never generates; run one trial of the spec first), refines every step of every positive at each ε with
`tsq.method.refinement.refine_step` (the rule a trial's `refine_trace` applies), and sorts each rewritten
computing or check step by what it states against the problem's true value: the same value as the original
step (a phrasing-only rewrite), a repaired slip (the original was wrong, the rewrite right), a new slip (the
original right, the rewrite wrong), another wrong value, or another step (a restatement or answer, or a
rewrite that is no longer the same variable's computation or check). A windowed KL sees a changed value only
through the tokens after it, and a check that restates the value overwrites it, so value changes pass small ε.

    TSQ_HOME=... .venv/bin/python diagnostics/refinement_values.py sweeps/paper-ablations-refinement.yaml \\
        --epsilon 0.005 0.02 0.5
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from tiny_world_errors import true_chain  # a sibling diagnostic (scripts run from here)

from objectives.tokensqueeze.check import load_cached_candidates, load_cached_inputs
from tsq.cache import Cache, cache_dir_of
from tsq.data.loading import load_problem_set
from tsq.data.tiny_world import VARIABLES, step_meaning
from tsq.data.traces import join_steps
from tsq.method.refinement import TraceCandidates, refine_step
from tsq.recipe import load_spec

KINDS = ("same value", "repaired slip", "new slip", "other wrong value", "other step")


def rewrite_kind(original: str, rewrite: str, values: list[int]) -> str:
    """What a rewrite of one step does to the value it states (see the module docstring)."""
    before, after = step_meaning(original), step_meaning(rewrite)
    index = VARIABLES.find(before[1]) if before[0] in ("compute", "check") and len(before[1]) == 1 else -1
    if not 0 <= index < len(values):
        return "other step"
    if after[:2] != before[:2]:  # no longer the same variable's computation or check
        return "other step"
    said = int(after[2])
    if said == int(before[2]):
        return "same value"
    if said == values[index]:
        return "repaired slip"
    return "new slip" if int(before[2]) == values[index] else "other wrong value"


def kinds_at(traces: list[tuple[TraceCandidates, list[int]]], epsilon: float) -> Counter[str]:
    counts: Counter[str] = Counter()
    for cands, values in traces:
        for step in cands.steps:
            after, _ = refine_step(step, epsilon)
            if after != step.original:
                counts[rewrite_kind(step.original, after, values)] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec")
    parser.add_argument("--epsilon", type=float, nargs="+", default=[0.005, 0.02, 0.5])
    args = parser.parse_args()
    spec = load_spec(args.spec)
    cache = Cache(cache_dir_of(spec.cache_dir))
    inputs = load_cached_inputs(spec, cache)
    found, asked, why = load_cached_candidates(spec, inputs, cache)
    if not found:
        sys.exit(f"no cached candidates: {why}")
    assert inputs.samples is not None  # load_cached_candidates found some, so the samples were cached
    problems = {p.id: p for p in load_problem_set(spec.data, "train").problems}
    pid_of = {r.text: pid for pid, rs in inputs.samples.items() for r in rs}
    traces = []
    for c in found:
        pid = pid_of[c.head + join_steps([s.original for s in c.steps]) + c.tail]
        traces.append((c, true_chain(problems[pid].question)[0]))
    print(f"{spec.name}: {len(found)} of {asked} positives' candidates cached; rewritten steps by kind")
    print("| ε | " + " | ".join(KINDS) + " |")
    print("|---" * (len(KINDS) + 1) + "|")
    for epsilon in args.epsilon:
        counts = kinds_at(traces, epsilon)
        print(f"| {epsilon:g} | " + " | ".join(str(counts[k]) for k in KINDS) + " |")


if __name__ == "__main__":
    main()
