"""Evaluation: sample the spec's eval split (the `evaluation:` section), grade, summarise.

The responses come from `sample_responses`, so evaluation is cached like any sampling: the baseline (the
model without adapter) is computed once per sweep, and re-evaluating an unchanged adapter is free.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from tsq.cache import Cache
from tsq.data.problems import load_problem_set
from tsq.data.traces import Response
from tsq.generation import backend_from_spec
from tsq.generation.base import Backend
from tsq.metrics import paired_bootstrap_delta, summarize
from tsq.models import resolve_model
from tsq.sample import sample_responses, sampling_settings
from tsq.spec import EvaluationSpec, Spec


@dataclass(frozen=True)
class EvalResult:
    """Per-response records (by problem id) and their summary metrics (`tsq.metrics.summarize`)."""

    responses: dict[str, list[Response]]
    difficulty: dict[str, int | None]
    summary: dict

    def correct_by_problem(self) -> dict[str, list[bool]]:
        return {pid: [r.correct for r in rs] for pid, rs in self.responses.items()}

    def to_json(self) -> dict:
        return {
            "summary": self.summary,
            "responses": {
                pid: [{**asdict(r), "difficulty": self.difficulty.get(pid)} for r in rs]
                for pid, rs in self.responses.items()
            },
        }


def evaluate(
    spec: Spec,
    model_path: Path,
    cache: Cache,
    *,
    adapter: Path | None = None,
    backend: Backend | None = None,
) -> EvalResult:
    """Evaluate the model (plus `adapter`, if given) on the spec's eval split."""
    problems = load_problem_set(spec.data, "eval")
    backend = backend or backend_from_spec(spec, model_path)
    responses = sample_responses(
        backend, model_path, problems, sampling_settings(spec.evaluation), cache, adapter=adapter
    )
    difficulty = {p.id: p.difficulty for p in problems.problems}
    return EvalResult(responses, difficulty, summarize(responses, difficulty, spec.evaluation.budget))


def baseline(spec: Spec, cache: Cache, *, backend: Backend | None = None) -> EvalResult:
    """The base model (no adapter) on the eval split: computed once, then read from the cache."""
    return evaluate(spec, resolve_model(spec.model), cache, backend=backend)


def compare(base: EvalResult, new: EvalResult, evaluation: EvaluationSpec) -> dict[str, float | None]:
    """How `new` differs from `base`: accuracy delta with its paired-bootstrap 95% CI, token reductions."""
    delta, lo, hi = paired_bootstrap_delta(
        base.correct_by_problem(), new.correct_by_problem(), evaluation.bootstrap, evaluation.seed
    )
    b, n = base.summary, new.summary
    return {
        "accuracy_delta": delta,
        "accuracy_delta_lo": lo,
        "accuracy_delta_hi": hi,
        "len_all_reduction": 1 - n["len_all"] / b["len_all"],
        "len_correct_reduction": (
            1 - n["len_correct"] / b["len_correct"] if n["len_correct"] and b["len_correct"] else None
        ),
        "auc_delta": n["auc"] - b["auc"],
    }
