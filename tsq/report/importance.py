"""Which searched knob mattered, per objective: Optuna's PED-ANOVA importances over a study's trials.

PED-ANOVA (Optuna's `PedAnovaImportanceEvaluator`) compares where the best trials of an objective sit in each
knob's range with where all trials sit: a knob whose good trials bunch up in one part of its range scores
high. It needs no model fitting (fANOVA would need scikit-learn, which tsq does not install).

Our choices:
- Trials: COMPLETE ones with finite values; replicates of a point (`sweep confirm`)
  are left out, so a replicated point does not count as several observations, and so are trials stopped
  early (`tsq.method.early_stop`): their metrics come from part of the problems, and they were stopped for
  looking bad, so they would count a selected, noisier measurement as a point of the knob's landscape.
- **Stability**: with a dozen trials one trial can decide the ranking. `importance_stability` recomputes the
  importances leaving each trial out in turn and reports each knob's range over those and whether the top
  knob stays first in all of them; when it does not, the report says the ranking is not stable.
- One target per objective, "lower is better" as PED-ANOVA assumes (a maximised metric is negated); the
  multi-objective default (reaching the Pareto front) is not used, since the report asks which knob moved
  which metric.
- The "good" trials are the top quantile max(0.1, min(0.5, 5/n)) of n trials: Optuna recommends at least 5
  trials there, and a small study has too few in its default top 10%.
- Importances are normalised to sum to 1 per objective (all 0 when no knob separates the good trials).
- **Too few trials to trust**: fewer than `MIN_TRIALS` (10) complete trials, or fewer than two per searched
  knob. Below that a knob's rank mostly reflects where the sampler happened to put the few good trials; the
  numbers are still shown, with the warning.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import optuna
from optuna.importance import PedAnovaImportanceEvaluator

from tsq.records import TrialRecord
from tsq.report.data import StudyData

MIN_TRIALS = 10  # complete trials below which importances carry a warning
TRIALS_PER_KNOB = 2  # ... and below this many per searched knob


def usable_trials(data: StudyData) -> list[TrialRecord]:
    """COMPLETE trials with finite values, neither replicates of another trial nor stopped early."""
    return [
        t
        for t in data.complete
        if t.values is not None and all(math.isfinite(v) for v in t.values) and not t.stopped
    ]


def objective_names(data: StudyData) -> list[str]:
    """The study's metric names (set by tsq), else objective_0, objective_1, ..."""
    names = data.metric_names
    return list(names) if names else [f"objective_{i}" for i in range(len(data.directions))]


def searched_params(trials: Sequence[TrialRecord]) -> list[str]:
    """Params that vary across the trials' distributions (a single-valued one cannot be important)."""
    names = sorted({name for t in trials for name, dist in t.distributions.items() if not dist.single()})
    return names


def target_quantile(n_trials: int) -> float:
    """The share of trials counted as "good": about 5 trials, between 10% and 50%."""
    return max(0.1, min(0.5, 5.0 / max(1, n_trials)))


def importances(data: StudyData) -> dict[str, dict[str, float]]:
    """Per objective (by metric name): {param: importance}, highest first, summing to 1 (or all 0).

    Empty per objective when fewer than 2 usable trials or no varying param."""
    return trial_importances(data, usable_trials(data))


@dataclass(frozen=True)
class ImportanceStability:
    """One objective's importances recomputed without each usable trial in turn (leave-one-out)."""

    top: str | None  # the first knob with every trial
    ranges: dict[str, tuple[float, float]]  # knob -> (lowest, highest) importance over the leave-one-outs
    top_without: dict[int, str]  # trial number -> the first knob without it, where that is another knob

    @property
    def stable(self) -> bool:
        return not self.top_without


def importance_stability(data: StudyData) -> dict[str, ImportanceStability]:
    """Per objective, the importances' range over leave-one-out subsets of the usable trials, and the trials
    without which another knob comes first (empty per objective with fewer than 3 usable trials)."""
    trials = usable_trials(data)
    full = trial_importances(data, trials)
    if len(trials) < 3:
        return {}
    without = {t.number: trial_importances(data, [u for u in trials if u is not t]) for t in trials}
    out = {}
    for name, scores in full.items():
        if not scores:
            continue
        top = next(iter(scores))
        ranges = {k: (min(w[name].get(k, 0.0) for w in without.values()),
                      max(w[name].get(k, 0.0) for w in without.values())) for k in scores}  # fmt: skip
        moved = {n: next(iter(w[name])) for n, w in without.items() if w[name] and next(iter(w[name])) != top}
        out[name] = ImportanceStability(top, ranges, moved)
    return out


def trial_importances(data: StudyData, trials: Sequence[TrialRecord]) -> dict[str, dict[str, float]]:
    """`importances` over the given trials of the study."""
    params = searched_params(trials)
    names = objective_names(data)
    if len(trials) < 2 or not params:
        return {name: {} for name in names}
    # an in-memory study holding only these trials: PED-ANOVA reads every COMPLETE trial of a study
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        copy = optuna.create_study(directions=list(data.directions))
        copy.add_trials(
            [optuna.trial.create_trial(params=t.params, distributions=t.distributions, values=t.values)
             for t in trials]
        )  # fmt: skip
    finally:
        optuna.logging.set_verbosity(verbosity)
    evaluator = PedAnovaImportanceEvaluator(target_quantile=target_quantile(len(trials)))
    out: dict[str, dict[str, float]] = {}
    for i, (name, direction) in enumerate(zip(names, data.directions, strict=True)):
        sign = -1.0 if direction == "maximize" else 1.0
        with warnings.catch_warnings():
            # PED-ANOVA warns that it minimises the target (we negate maximised ones) and about thin regimes
            warnings.simplefilter("ignore")
            raw = evaluator.evaluate(copy, params=params, target=lambda t, i=i, s=sign: s * t.values[i])
        total = sum(raw.values())
        scores = {p: (v / total if total > 0 else 0.0) for p, v in raw.items()}
        out[name] = dict(sorted(scores.items(), key=lambda kv: (-kv[1], kv[0])))
    return out


def importance_warning(data: StudyData) -> str | None:
    """A one-line warning when the study has too few usable trials to trust its importances, else None."""
    trials = usable_trials(data)
    n_params = len(searched_params(trials))
    needed = max(MIN_TRIALS, TRIALS_PER_KNOB * n_params)
    if len(trials) >= needed:
        return None
    return (
        f"importances from {len(trials)} complete trials over {n_params} searched knobs: too few to trust "
        f"(want >= {needed}: {MIN_TRIALS} trials and {TRIALS_PER_KNOB} per knob); read them as a hint"
    )
