"""Are the report's intervals calibrated for problem noise? One trained adapter evaluated on K disjoint
eval subsets of equal size from the same world: if each subset's 95% bootstrap interval is calibrated,
another subset's accuracy falls inside it about 83% of the time: two independent estimates with equal
standard errors differ by a normal with √2 times that error, so one lands inside the other's ±1.96·SE band
with probability P(|Z| < 1.96/√2) = 0.834.

    python diagnostics/calibrate_problem_noise.py SPEC ADAPTER_DIR [--subsets 5] [--size 100]

Uses tsq's own evaluation (per-sample seeds, the spec's evaluation settings) and
`tsq.engines.evaluate.intervals`.
"""

from __future__ import annotations

import argparse
import itertools
from contextlib import closing
from pathlib import Path

from tsq.cache import Cache, cache_dir_of
from tsq.data.loading import load_problem_set
from tsq.data.problems import ProblemSet
from tsq.engines.evaluate import EvalResult, intervals
from tsq.engines.generation import backend_from_spec
from tsq.engines.models import resolve_model
from tsq.engines.sample import sample_responses, sampling_settings
from tsq.method.metrics import summarize
from tsq.recipe import load_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", type=Path)
    parser.add_argument("adapter", type=Path)
    parser.add_argument("--subsets", type=int, default=5)
    parser.add_argument("--size", type=int, default=100)
    args = parser.parse_args()

    spec = load_spec(args.spec)
    total = args.subsets * args.size
    data = spec.data.model_copy(update={"eval": spec.data.eval.model_copy(update={"n": total})})
    spec = spec.model_copy(update={"data": data})
    problems = load_problem_set(spec.data, "eval")
    model_path = resolve_model(spec.model)
    cache = Cache(cache_dir_of(spec.cache_dir))
    estimates = []
    with closing(backend_from_spec(spec, model_path)) as backend:
        for k in range(args.subsets):
            chunk = problems.problems[k * args.size : (k + 1) * args.size]
            subset = ProblemSet(f"{problems.name}[{k}]", chunk, problems.grader)
            responses = sample_responses(
                backend, model_path, subset, sampling_settings(spec.evaluation), cache, adapter=args.adapter
            )
            difficulty = {p.id: p.difficulty for p in subset.problems}
            result = EvalResult(
                responses, difficulty, summarize(responses, difficulty, spec.evaluation.budget)
            )
            iv = intervals(result, spec.evaluation)
            estimates.append((iv["accuracy"], iv["accuracy_lo"], iv["accuracy_hi"]))
            acc, lo, hi = estimates[-1]
            print(f"subset {k}: accuracy {acc:.3f} [{lo:.3f}, {hi:.3f}]")
    inside = [
        estimates[i][1] <= estimates[j][0] <= estimates[i][2]
        for i, j in itertools.permutations(range(len(estimates)), 2)
    ]
    print(f"another subset's accuracy inside a subset's 95% interval: {sum(inside)} of {len(inside)} "
          f"({100 * sum(inside) / len(inside):.0f}%; about 83% expected when calibrated)")  # fmt: skip


if __name__ == "__main__":  # vLLM backends spawn processes
    main()
