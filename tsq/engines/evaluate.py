"""Evaluation: sample the spec's eval split (the `evaluation:` section), grade, summarise, bound.

The responses come from `sample_responses`, so evaluation is cached like any sampling: the baseline (the
model without adapter) is computed once per sweep, and re-evaluating an unchanged adapter is free.
An `EvalResult` exposes its per-response table (`records`, `write_records` / `read_records` as JSONL), so
any later analysis, such as a report rebuilt on another machine, recomputes every metric and interval from
it (`tsq.method.metrics.ProblemSums.from_records`). `intervals` and `compare` give 95% problem-bootstrap
intervals (`tsq.method.stats`), paired with the baseline for relative metrics.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tsq.cache import Cache
from tsq.config.pipeline import EvaluationSpec, PipelineSpec
from tsq.data.loading import Split, load_problem_set
from tsq.data.traces import Response
from tsq.engines.generation import backend_from_spec
from tsq.engines.generation.base import Backend
from tsq.engines.models import resolve_model
from tsq.engines.sample import sample_responses, sampling_settings
from tsq.errors import UserError
from tsq.fileio import write_atomic
from tsq.method.metrics import (
    METRIC_ALIASES,
    RECORD_FIELDS,
    ProblemSums,
    interval_key,
    response_record,
    summarize,
)
from tsq.method.stats import Estimate, absolute_intervals, paired_intervals


@dataclass(frozen=True)
class EvalResult:
    """Per-response records (by problem id) and their summary metrics (`tsq.method.metrics.summarize`)."""

    responses: dict[str, list[Response]]
    difficulty: dict[str, int | None]
    summary: dict

    def correct_by_problem(self) -> dict[str, list[bool]]:
        return {pid: [r.correct for r in rs] for pid, rs in self.responses.items()}

    def records(self) -> list[dict[str, Any]]:
        """One row per response (`tsq.method.metrics.RECORD_FIELDS`): problem id, sample index, tokens,
        correct,
        finish reason, truncated, difficulty, thinking steps. The text is left out; it stays in the cache."""
        return [
            response_record(pid, j, r, self.difficulty.get(pid))
            for pid, rs in self.responses.items()
            for j, r in enumerate(rs)
        ]

    def write_records(self, path: Path) -> Path:
        """Write `records()` as JSONL, atomically; `read_records` reads it back."""
        write_atomic(path, "".join(json.dumps(rec) + "\n" for rec in self.records()))
        return path

    def problem_sums(self) -> ProblemSums:
        return ProblemSums.from_records(self.records(), int(self.summary["budget"]))

    def to_json(self) -> dict:
        return {
            "summary": self.summary,
            "responses": {
                pid: [{**asdict(r), "difficulty": self.difficulty.get(pid)} for r in rs]
                for pid, rs in self.responses.items()
            },
        }


def read_records(path: Path) -> list[dict[str, Any]]:
    """The rows of a `write_records` JSONL file; a missing file or a malformed row is a UserError."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise UserError(f"{path}: cannot read the per-response records ({exc.strerror})") from exc
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{number}: not a JSON line ({exc.msg}); rewrite it with tsq") from exc
        missing = [f for f in RECORD_FIELDS if not isinstance(row, dict) or f not in row]
        if missing:
            raise UserError(f"{path}:{number}: a per-response record lacks {', '.join(missing)}")
        rows.append(row)
    return rows


def _flatten(estimates: dict[str, Estimate]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name, e in estimates.items():
        out[name] = e.value
        out.update({interval_key(name, part): getattr(e, part) for part in ("lo", "hi", "se")})
    return out


def evaluate(
    spec: PipelineSpec,
    model_path: Path,
    cache: Cache,
    *,
    adapter: Path | None = None,
    backend: Backend | None = None,
    split: Split = "eval",
) -> EvalResult:
    """Evaluate the model (plus `adapter`, if given) on the spec's eval split (or its held-out `test`).
    Without `backend`, one is built for this call and closed after it."""
    if backend is None:
        with backend_from_spec(spec, model_path) as own:
            return evaluate(spec, model_path, cache, adapter=adapter, backend=own, split=split)
    problems = load_problem_set(spec.data, split)
    responses = sample_responses(
        backend, model_path, problems, sampling_settings(spec.evaluation), cache, adapter=adapter
    )
    difficulty = {p.id: p.difficulty for p in problems.problems}
    return EvalResult(responses, difficulty, summarize(responses, difficulty, spec.evaluation.budget))


def baseline(
    spec: PipelineSpec, cache: Cache, *, backend: Backend | None = None, split: Split = "eval"
) -> EvalResult:
    """The base model (no adapter) on the eval split (or `test`): computed once, then read from the cache."""
    return evaluate(spec, resolve_model(spec.model), cache, backend=backend, split=split)


def intervals(result: EvalResult | ProblemSums, evaluation: EvaluationSpec) -> dict[str, float | None]:
    """Every absolute metric with its 95% problem-bootstrap interval: `<metric>`, `<metric>_lo`, `<metric>_hi`
    (and the bootstrap standard error `<metric>_se`); None where undefined. `evaluation.bootstrap` resamples,
    seeded by `evaluation.seed`."""
    sums = result.problem_sums() if isinstance(result, EvalResult) else result
    return _flatten(absolute_intervals(sums, evaluation.bootstrap, evaluation.seed))


def compare(
    base: EvalResult | ProblemSums, new: EvalResult | ProblemSums, evaluation: EvaluationSpec
) -> dict[str, float | None]:
    """How `new` differs from `base`: every relative metric (`accuracy_delta`, `token_reduction`,
    `len_correct_reduction`, `auc_delta`) with its paired 95% bootstrap interval (`_lo`, `_hi`, `_se`), on the
    problems both share. `len_all_reduction*` repeat `token_reduction*` (its older name)."""
    b = base.problem_sums() if isinstance(base, EvalResult) else base
    n = new.problem_sums() if isinstance(new, EvalResult) else new
    out = _flatten(paired_intervals(b, n, evaluation.bootstrap, evaluation.seed))
    for alias, name in METRIC_ALIASES.items():
        out.update({alias + key[len(name) :]: v for key, v in list(out.items()) if key.startswith(name)})
    return out
