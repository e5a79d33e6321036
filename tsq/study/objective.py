"""The Optuna objective: sample a point, apply it to the spec, run the recipe's trial, record what it returned
(metrics with their intervals, per-response records, provenance) in the trial's user attrs and W&B."""

from __future__ import annotations

import logging
import math
import os
import traceback
from collections.abc import Mapping
from typing import Any

import optuna

from tsq.cache import Cache, cache_dir_of
from tsq.compat.optuna import set_feasibility
from tsq.config.spec import Spec, merge_sections
from tsq.engines.generation.base import Backend
from tsq.errors import TrialFailed
from tsq.paths import tsq_home
from tsq.recipe import TrialContext, TrialResult, TrialSeeds, recipe_of, scope_of
from tsq.records import TrialRecord, record_baseline, write_trial_record
from tsq.signals import exit_if_stopping
from tsq.study.params import apply_params
from tsq.study.provenance import json_safe, provenance
from tsq.study.sampler import suggest
from tsq.study.tracking import Tracker

log = logging.getLogger(__name__)


class TrialObjective:
    """Optuna objective: sample → apply to the spec → run the recipe's trial → record and return values.

    It owns the engine the recipe keeps across trials (TokenSqueeze: its generation backend), made at the
    first trial, handed to every trial (each trial's adapter goes in per call), closed by `close()` when the
    worker ends. An engine that a failed wake-up closed is replaced at the next trial, so that trial does not
    queue on a half-awake engine. A recipe that keeps none gets None.
    """

    def __init__(self, spec: Spec, tracker: Tracker, storage_masked: str) -> None:
        self.spec = spec
        self.tracker = tracker
        self.storage_masked = storage_masked
        self.recipe = recipe_of(spec)
        self.scope = scope_of(spec.study)
        self.cache = Cache(cache_dir_of(spec.cache_dir))
        self.provenance = provenance()
        self._backend: Backend | None = None

    def backend(self) -> Backend | None:
        if self._backend is None or self._backend.closed:
            self._backend = self.recipe.open_engine(self.spec)
        return self._backend

    def close(self) -> None:
        if self._backend is not None:
            backend, self._backend = self._backend, None
            backend.close()

    def _fixed_settings(self) -> dict[str, Any]:
        settings = self.spec.model_dump(mode="json", by_alias=True, exclude={"study"})
        study = self.spec.study.model_dump(mode="json", exclude={"search", "storage"})
        return {
            **settings,
            "study": {**study, "storage": self.storage_masked, "fixed": self.spec.study.fixed},
        }

    def __call__(self, trial: optuna.Trial) -> list[float]:
        study_cfg = self.spec.study
        values = {name: suggest(trial, name, entry) for name, entry in study_cfg.searched.items()}
        # a replicate enqueued by `tsq sweep confirm` carries its seeds and split, and is evaluated in full;
        # one by `tsq sweep promote` also the overlay of its fidelity, applied under the point
        replicate = TrialRecord.from_trial(trial).replicate
        base = (
            self.spec
            if replicate is None or replicate.fidelity is None
            else at_fidelity(self.spec, replicate.fidelity)
        )
        trial_spec = apply_params(base, {**study_cfg.fixed, **values})
        out_dir = tsq_home() / "studies" / trial.study.study_name / f"trial-{trial.number}"
        out_dir.mkdir(parents=True, exist_ok=True)
        run = self.tracker.trial(
            trial.number, {**values, "trial_number": trial.number, **self._fixed_settings()}
        )
        write_trial_record(
            trial, TrialRecord(out_dir=str(out_dir), worker_pid=os.getpid(), wandb_run_id=run.run_id or None)
        )
        try:
            ctx = TrialContext(
                cache=self.cache,
                out_dir=out_dir,
                scope=self.scope,
                on_log=run.log,
                trial_number=trial.number,
                backend=self.backend(),
                seeds=TrialSeeds(**(replicate.seeds if replicate else {})),
                split=replicate.split if replicate else "eval",
                early_stop_max_drop=(
                    study_cfg.constraint.max_accuracy_drop
                    if study_cfg.constraint is not None and study_cfg.early_stop and not replicate
                    else None
                ),
            )
            result = self.recipe.run(trial_spec, ctx)
            objective_values = [result.metrics.get(m) for m in study_cfg.metrics]
            bad = [m for m, v in zip(study_cfg.metrics, objective_values, strict=True) if not _finite(v)]
            if bad:
                raise TrialFailed(f"objective metric(s) {', '.join(bad)} missing or not finite")
        except Exception as exc:
            # Stopping: the error may be the shutdown's doing (a cancel stops W&B's service too), so the trial
            # is left RUNNING, for a peer to retry once it goes stale, rather than failed.
            exit_if_stopping()
            error = f"{type(exc).__name__}: {exc}"
            trace = "".join(traceback.format_exception(exc))[-4000:]
            write_trial_record(trial, TrialRecord(error=error[:2000], traceback=trace))
            run.finish_failed(error[:500])
            log.warning("trial %d failed: %s", trial.number, error)
            raise
        self._record(trial, result, run.run_id)
        run.finish_ok(
            summary={**result.metrics, **{f"baseline/{k}": v for k, v in result.baseline.items()}},
            config={"cache_keys": result.cache_keys, "seeds": result.seeds},
            budget_curve=result.budget_curve,
            baseline_curve=result.baseline_budget_curve,
        )
        return [float(v) for v in objective_values]

    def _record(self, trial: optuna.Trial, result: TrialResult, run_id: str | None) -> None:
        # A trial the staged test stopped (tsq/method/early_stop.py) is COMPLETE with the metrics of the
        # problems it evaluated; its record says at which stage and by which test.
        early_stop = result.stats.get("early_stop")
        record = TrialRecord(
            metrics=json_safe(result.metrics),
            baseline=json_safe(result.baseline),
            budget_curve=json_safe(result.budget_curve),
            cache_keys=json_safe(result.cache_keys),
            seeds=json_safe(result.seeds),
            stats=json_safe(result.stats),
            adapter_dir=json_safe(result.adapter_dir),
            records=json_safe(result.records),
            baseline_records=json_safe(result.baseline_records),
            versions=json_safe(self.provenance["versions"]),
            git_commit=self.provenance["git_commit"],
            early_stop=json_safe(early_stop),
        )
        write_trial_record(trial, record)
        record_baseline(trial.study, record.baseline or {})
        constraint = self.spec.study.constraint
        if constraint is not None:
            value = constraint.value(result.metrics)  # feasible (<= 0) within the allowed drop
            if early_stop is not None and early_stop.get("stopped"):
                value = max(value, 1e-9)  # the test showed it violated, so samplers see it infeasible
            set_feasibility(trial, value)  # where optuna-dashboard reads it too (tsq.compat.optuna)


def at_fidelity(spec: Spec, overlay: Mapping[str, Any]) -> Spec:
    """`spec` at another fidelity (`study.promote`, `tsq sweep promote`): the overlay merged over its own
    sections (`merge_sections`) and validated with its own spec model, the study section kept. Raises
    pydantic's ValidationError (paths in the spec's own terms) for a field that does not exist or a bad
    value."""
    merged = merge_sections(spec.model_dump(by_alias=True, exclude={"study"}), dict(overlay))
    return type(spec).model_validate(merged).model_copy(update={"study": spec.study})


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
