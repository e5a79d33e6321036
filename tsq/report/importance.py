"""Which searched knob mattered, per objective: Optuna's PED-ANOVA importances over a study's trials.

PED-ANOVA (Optuna's `PedAnovaImportanceEvaluator`) compares where the best trials of an objective sit in each
knob's range with where all trials sit: a knob whose good trials bunch up in one part of its range scores
high. It needs no model fitting (fANOVA would need scikit-learn, which tsq does not install).

Our choices:
- Trials: COMPLETE ones with finite values; replicates of a point (user attr `replicate_of`, `sweep confirm`)
  are left out, so a replicated point does not count as several observations, and so are trials stopped
  early (`tsq.method.early_stop`): their metrics come from part of the problems, and they were stopped for looking
  bad, so they would count a selected, noisier measurement as a point of the knob's landscape.
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import optuna
from optuna.importance import PedAnovaImportanceEvaluator
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

MIN_TRIALS = 10  # complete trials below which importances carry a warning
TRIALS_PER_KNOB = 2  # ... and below this many per searched knob
REPLICATE_ATTR = "replicate_of"


def stopped_early(trial: FrozenTrial) -> bool:
    """Stopped by the staged test (`tsq.method.early_stop`): metrics of part of the problems only."""
    return bool((trial.user_attrs.get("early_stop") or {}).get("stopped"))


def usable_trials(study: optuna.Study) -> list[FrozenTrial]:
    """COMPLETE trials with finite values, neither replicates of another trial nor stopped early."""
    return [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.values is not None
        and all(math.isfinite(v) for v in t.values)
        and REPLICATE_ATTR not in t.user_attrs
        and not stopped_early(t)
    ]


def objective_names(study: optuna.Study) -> list[str]:
    """The study's metric names (set by tsq), else objective_0, objective_1, ..."""
    names = study.metric_names
    return list(names) if names else [f"objective_{i}" for i in range(len(study.directions))]


def searched_params(trials: Sequence[FrozenTrial]) -> list[str]:
    """Params that vary across the trials' distributions (a single-valued one cannot be important)."""
    names = sorted({name for t in trials for name, dist in t.distributions.items() if not dist.single()})
    return names


def target_quantile(n_trials: int) -> float:
    """The share of trials counted as "good": about 5 trials, between 10% and 50%."""
    return max(0.1, min(0.5, 5.0 / max(1, n_trials)))


def importances(study: optuna.Study) -> dict[str, dict[str, float]]:
    """Per objective (by metric name): {param: importance}, highest first, summing to 1 (or all 0).

    Empty per objective when fewer than 2 usable trials or no varying param; never writes to the study."""
    return trial_importances(study, usable_trials(study))


@dataclass(frozen=True)
class ImportanceStability:
    """One objective's importances recomputed without each usable trial in turn (leave-one-out)."""

    top: str | None  # the first knob with every trial
    ranges: dict[str, tuple[float, float]]  # knob -> (lowest, highest) importance over the leave-one-outs
    top_without: dict[int, str]  # trial number -> the first knob without it, where that is another knob

    @property
    def stable(self) -> bool:
        return not self.top_without


def importance_stability(study: optuna.Study) -> dict[str, ImportanceStability]:
    """Per objective, the importances' range over leave-one-out subsets of the usable trials, and the trials
    without which another knob comes first (empty per objective with fewer than 3 usable trials)."""
    trials = usable_trials(study)
    full = trial_importances(study, trials)
    if len(trials) < 3:
        return {}
    without = {t.number: trial_importances(study, [u for u in trials if u is not t]) for t in trials}
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


def trial_importances(study: optuna.Study, trials: Sequence[FrozenTrial]) -> dict[str, dict[str, float]]:
    """`importances` over the given trials of the study."""
    params = searched_params(trials)
    names = objective_names(study)
    if len(trials) < 2 or not params:
        return {name: {} for name in names}
    # a private in-memory copy holding only the usable trials: PED-ANOVA reads every COMPLETE trial of a study
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        copy = optuna.create_study(directions=study.directions)
        copy.add_trials(trials)
    finally:
        optuna.logging.set_verbosity(verbosity)
    evaluator = PedAnovaImportanceEvaluator(target_quantile=target_quantile(len(trials)))
    out: dict[str, dict[str, float]] = {}
    for i, (name, direction) in enumerate(zip(names, study.directions, strict=True)):
        sign = -1.0 if direction == StudyDirection.MAXIMIZE else 1.0
        with warnings.catch_warnings():
            # PED-ANOVA warns that it minimises the target (we negate maximised ones) and about thin regimes
            warnings.simplefilter("ignore")
            raw = evaluator.evaluate(copy, params=params, target=lambda t, i=i, s=sign: s * t.values[i])
        total = sum(raw.values())
        scores = {p: (v / total if total > 0 else 0.0) for p, v in raw.items()}
        out[name] = dict(sorted(scores.items(), key=lambda kv: (-kv[1], kv[0])))
    return out


def importance_warning(study: optuna.Study) -> str | None:
    """A one-line warning when the study has too few usable trials to trust its importances, else None."""
    trials = usable_trials(study)
    n_params = len(searched_params(trials))
    needed = max(MIN_TRIALS, TRIALS_PER_KNOB * n_params)
    if len(trials) >= needed:
        return None
    return (
        f"importances from {len(trials)} complete trials over {n_params} searched knobs: too few to trust "
        f"(want >= {needed}: {MIN_TRIALS} trials and {TRIALS_PER_KNOB} per knob); read them as a hint"
    )


def importance_markdown(
    imps: Mapping[str, Mapping[str, float]],
    warning: str | None = None,
    stability: Mapping[str, ImportanceStability] | None = None,
) -> list[str]:
    """Markdown lines: one row per param, one column per objective (params in order of the first objective's
    importance; with `stability`, each value with its leave-one-out range), then a line per objective on
    whether its top knob is stable, and the warning as a blockquote when there is one."""
    stability = stability or {}
    objectives = list(imps)
    params = list(dict.fromkeys(p for name in objectives for p in imps[name]))
    if not params:
        lines = ["_No importances: fewer than 2 complete trials, or no searched knob varies._"]
    else:
        lines = [
            "| knob | " + " | ".join(objectives) + " |",
            "|---|" + "---:|" * len(objectives),
            *(
                f"| {p} | "
                + " | ".join(_cell(imps[o].get(p, 0.0), stability.get(o), p) for o in objectives)
                + " |"
                for p in params
            ),
        ]
        if stability:
            lines += [
                "",
                "In brackets: the range over the importances recomputed without each trial in turn.",
            ]
        lines += [f"- {stability_line(name, s)}" for name, s in stability.items()]
    if warning:
        lines += ["", f"> {warning}"]
    return lines


def _cell(value: float, stability: ImportanceStability | None, param: str) -> str:
    if stability is None or param not in stability.ranges:
        return f"{value:.2f}"
    lo, hi = stability.ranges[param]
    return f"{value:.2f} [{lo:.2f}, {hi:.2f}]"


def stability_line(objective: str, stability: ImportanceStability) -> str:
    """Whether the top knob of an objective survives leaving out any one trial, in plain words."""
    if stability.stable:
        return f"{objective}: {stability.top} stays first without any one trial"
    moved = ", ".join(f"without trial {n} {k}" for n, k in sorted(stability.top_without.items()))
    return f"{objective}: **not stable**: {stability.top} is first, but another knob is first {moved}"
