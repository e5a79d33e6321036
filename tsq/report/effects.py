"""The effect of each knob in a replicated grid study (`tsq report effects`): the study's arms, their means
over seeds, and contrasts between arms judged against the seed noise.

An arm is one configuration (one set of searched params) on the eval split: an original trial, its `sweep
confirm` replicates on the eval split, and any other trial with the same params (a grid run twice). Its n is
its number of seeds. Held-out-split replicates and trials stopped early (evaluated on part of the problems)
are left out, and so is the original of a trial the sweep picked (not a grid point: no `grid_id`) once it has
fresh-seed replicates: it was picked for looking good, and averaging it in would keep the winner's curse.
A grid point was not selected, so its original stays.

What each interval holds (95%):
- Arm metrics (accuracy, Len-A, tokens/step, Len-A reduction, Δ accuracy; the trials' records): the mean
  over seeds with `aggregate_replicates`' interval, from the arm's own between-seed SD (Student's t at n − 1
  degrees of freedom, Welch–Satterthwaite with the problem-bootstrap SE) plus that SE: seed, evaluation
  sampling and problem noise. An arm of one seed takes the SD pooled over the study's other arms, with its
  degrees of freedom.
- By difficulty level (accuracy and Len-A from the per-response records): the mean over seeds of each
  seed's value at the level, and a t interval from the between-seed SD pooled over the study's arms, at the
  pooled degrees of freedom Σ(n_i − 1). It holds seed and evaluation-sampling noise, not the problem noise
  of the level's problems (no bootstrap per level).
- Contrasts (an arm minus the reference arm, one metric): SE = s·√(1/n₁ + 1/n₂), with s the between-seed SD
  of that metric pooled over the study's arms, at its df = Σ(n_i − 1). A new seed retrains and re-samples the
  answers, so s holds the seed noise and the evaluation-sampling noise; every arm is evaluated on the same
  problems, so problem difficulty is common to both sides and cancels (paired), and is not in the SE. The
  interval is diff ± t(0.975, df)·SE.

Verdicts (docs/method.md "Statistics"), at level α = 0.05:
- The primary family (`study.effects.primary`, default the study's objectives): each arm's contrast on each
  primary metric, overall. Their two-sided t-test p-values are Holm-adjusted across the family, and so are
  their equivalence p-values; every other contrast (other metrics, by depth) is exploratory: its p is
  unadjusted and its verdict is a lead to replicate, not a finding.
- Each contrast is "better" or "worse" (the arm against the reference, in the metric's direction) when its
  p is below α; else "equivalent within ±m" when the two one-sided tests (TOST) reject |difference| ≥ m
  at α, m the metric's margin (`study.effects.margins`; accuracy defaults to the constraint's
  max_accuracy_drop); else "undecided": an interval that merely contains 0 is no evidence of no effect.
  With fewer than 2 seeds in either arm there is no SE ("unreplicated").

Which contrasts: when the arms differ in one numeric knob, its last value against its first (the two ends of
the range); in one categorical knob, every arm against the reference arm (the first in the spec's choice
order). A `reference` value picks the reference arm for either kind: then every arm is compared with it.

The metrics of each table are the registry's (`tsq.method.metrics.report_metrics`: "arms", "contrasts",
"levels"); `tsq.report.effects_markdown` renders what this module computes from the study's data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from tsq.errors import UserError
from tsq.method.metrics import ProblemSums, metric, metric_values, report_metrics
from tsq.method.stats import ReplicateEstimate, aggregate_replicates, holm, pooled_sd, t_test, tost
from tsq.records import TrialRecord
from tsq.report.data import StudyData, study_data, trial_responses
from tsq.report.table import replicate_estimates

ARM_METRICS = report_metrics("arms")
CONTRAST_METRICS = report_metrics("contrasts")  # the relative ones differ by the same amounts
LEVEL_METRICS = report_metrics("levels")
Level = int | None  # a problem's difficulty (the tiny world's chain depth); None where records have none
ALPHA = 0.05  # every verdict's level: two-sided for a difference, each one-sided test of TOST


@dataclass(frozen=True)
class Arm:
    params: dict[str, Any]
    trials: tuple[int, ...]  # one trial per seed, by number
    estimates: dict[str, ReplicateEstimate]  # metric -> mean over seeds
    by_level: dict[str, dict[Level, ReplicateEstimate]]  # LEVEL_METRICS -> difficulty -> mean over seeds

    @property
    def n(self) -> int:
        return len(self.trials)


def verdict(
    diff: float, p: float | None, p_equiv: float | None, direction: str, margin: str | None = None,
    alpha: float = ALPHA,
) -> str:  # fmt: skip
    """ "better"/"worse" (the arm against the reference, in the metric's `direction`) when the difference's
    p is below α; else "equivalent within ±margin" (`margin`: its text) when the equivalence p is; else
    "undecided"; "unreplicated" without a p-value."""
    if p is None:
        return "unreplicated"
    if p < alpha:
        return "better" if (diff > 0) == (direction == "maximize") else "worse"
    if p_equiv is not None and p_equiv < alpha:
        return f"equivalent within ±{margin}"
    return "undecided"


@dataclass(frozen=True)
class Contrast:
    knob: str
    value: Any
    reference: Any
    metric: str
    diff: float  # mean of the arm − mean of the reference arm
    se: float | None  # None: an arm has a single seed (or no arm measured the seed spread)
    level: Level = None  # a difficulty level's responses only; None: all responses
    df: int | None = None  # of the pooled seed SD
    margin: float | None = None  # equivalence margin of the metric (its units), None: none declared
    primary: bool = False  # in the study's primary family (Holm-adjusted); else exploratory
    p: float | None = None  # two-sided t-test p: Holm-adjusted in the primary family, else unadjusted
    p_equiv: float | None = None  # TOST p within ±margin, adjusted alike

    @property
    def verdict(self) -> str:
        margin = (
            None if self.margin is None else format_difference(self.metric, self.margin, None).lstrip("+")
        )
        return verdict(self.diff, self.p, self.p_equiv, metric(self.metric).direction, margin)

    def interval(self) -> tuple[float, float] | None:
        """The 95% interval of the difference: diff ± t(0.975, df)·SE."""
        from scipy.stats import t  # deferred: scipy is slow to import

        if self.se is None or self.df is None:
            return None
        half = float(t.ppf(0.5 + (1 - ALPHA) / 2, self.df)) * self.se
        return self.diff - half, self.diff + half


def judge(contrasts: Sequence[Contrast], primary: Sequence[str]) -> list[Contrast]:
    """Each contrast with its p-values: the overall contrasts on a `primary` metric form the family, whose
    t-test and TOST p-values are Holm-adjusted (each kind across the family); the rest keep unadjusted
    ones."""
    raw = []
    for c in contrasts:
        if c.se is None or c.df is None:
            raw.append((None, None))
            continue
        p_eq = None if c.margin is None else tost(c.diff, c.se, c.df, c.margin)
        raw.append((t_test(c.diff, c.se, c.df), p_eq))
    in_family = [c.level is None and c.metric in primary for c in contrasts]
    family = [i for i, c in enumerate(contrasts) if in_family[i] and raw[i][0] is not None]
    adjusted = dict(zip(family, holm([raw[i][0] for i in family]), strict=True))  # type: ignore[misc]
    with_margin = [i for i in family if raw[i][1] is not None]
    adjusted_eq = dict(zip(with_margin, holm([raw[i][1] for i in with_margin]), strict=True))  # type: ignore[misc]
    return [
        replace(c, primary=in_family[i], p=adjusted.get(i, raw[i][0]), p_equiv=adjusted_eq.get(i, raw[i][1]))
        for i, c in enumerate(contrasts)
    ]


@dataclass(frozen=True)
class StudyEffects:
    study_name: str
    knobs: list[str]  # the searched knobs whose value differs between arms
    arms: list[Arm]
    contrasts: list[Contrast]
    seed_sd: dict[str, tuple[float, int]]  # metric -> between-seed SD pooled over the arms, its dof
    notes: list[str]
    primary: list[str] = field(default_factory=list)  # the metrics of the primary family
    margins: dict[str, float] = field(default_factory=dict)  # metric -> equivalence margin


def contrast_se(sd: float | None, n1: int, n2: int) -> float | None:
    """SE of a difference of two means over n1 and n2 seeds with a common seed SD: sd·√(1/n1 + 1/n2);
    None when either arm has a single seed."""
    if sd is None or n1 < 2 or n2 < 2:
        return None
    return sd * math.sqrt(1 / n1 + 1 / n2)


def level_values(records: Sequence[Mapping[str, Any]], budget: int) -> dict[str, dict[Level, float]]:
    """LEVEL_METRICS of one trial's responses, per difficulty level (`tsq.method.metrics` definitions)."""
    groups: dict[Level, list[Mapping[str, Any]]] = {}
    for rec in records:
        groups.setdefault(rec.get("difficulty"), []).append(rec)
    out: dict[str, dict[Level, float]] = {name: {} for name in LEVEL_METRICS}
    for level, rows in groups.items():
        values = metric_values(ProblemSums.from_records(rows, budget))
        for name in LEVEL_METRICS:
            if values[name] is not None:
                out[name][level] = float(values[name])  # type: ignore[arg-type]
    return out


def level_estimates(
    per_arm: Sequence[Mapping[Level, Sequence[float]]],
) -> tuple[list[dict[Level, ReplicateEstimate]], dict[Level, int]]:
    """Per arm and level, the mean of the seeds' values with the t interval of the between-seed SD pooled
    over the arms at that level (`pooled_sd`); no interval at a level where no arm has two seeds. Also the
    pooled degrees of freedom of each level that has them."""
    levels = {level for arm in per_arm for level in arm}
    pooled = {
        level: pooled_sd(
            (len(arm[level]), float(np.std(arm[level], ddof=1)) if len(arm[level]) > 1 else None)
            for arm in per_arm
            if level in arm
        )
        for level in levels
    }
    out = []
    for arm in per_arm:
        estimates = {}
        for level in sorted_levels(set(arm)):
            sd, dof = pooled[level] or (None, None)
            estimates[level] = aggregate_replicates(list(arm[level]), sd_seed=sd, sd_dof=dof)
        out.append(estimates)
    return out, {level: p[1] for level, p in pooled.items() if p is not None}


def _eval_trials(data: StudyData, notes: list[str]) -> list[TrialRecord]:
    """The COMPLETE trials on the eval split: originals and eval replicates, not stopped early."""
    trials = [
        t
        for t in data.trials
        # a promoted re-run (`tsq sweep promote`) is another fidelity: never an arm's seed
        if t.state == TrialState.COMPLETE
        and (t.replicate is None or (t.replicate.split == "eval" and not t.replicate.promoted))
    ]
    stopped = [t.number for t in trials if t.stopped]
    if stopped:
        notes.append(f"left out trials stopped early (evaluated on part of the problems): {stopped}")
    confirmed = {t.replicate.of for t in trials if t.replicate is not None}
    picked = [t.number for t in trials if t.number in confirmed and not t.grid_point]
    if picked:
        notes.append(
            f"trials {picked} were picked by the sweep (not grid points): their arms are their fresh-seed "
            "replicates only, their own runs left out (the winner's curse)"
        )
    return [t for t in trials if t.number not in stopped and t.number not in picked]


def _arm_order(groups: list[list[TrialRecord]], knob: str) -> list[list[TrialRecord]]:
    """Arms by the knob: numeric values ascending, categorical ones in the spec's choice order."""
    dist = groups[0][0].distributions.get(knob)
    if isinstance(dist, CategoricalDistribution):
        choices = [str(c) for c in dist.choices]

        def position(group: list[TrialRecord]) -> tuple[int, str]:
            value = str(group[0].params[knob])
            return (choices.index(value) if value in choices else len(choices), value)

        return sorted(groups, key=position)
    return sorted(groups, key=lambda g: g[0].params[knob])


def _matches(value: Any, text: str) -> bool:
    if str(value) == text:
        return True
    try:
        return not isinstance(value, bool | str) and float(text) == float(value)
    except ValueError:
        return False


def _contrasts(
    arms: list[Arm],
    knob: str,
    categorical: bool,
    reference: str | None,
    seed_sd: dict[str, tuple[float, int]],
    level_dof: dict[str, dict[Level, int]],
    metrics: Sequence[str],
    margins: Mapping[str, float],
) -> list[Contrast]:
    if reference is not None:
        ref = next((a for a in arms if _matches(a.params[knob], reference)), None)
        if ref is None:
            values = ", ".join(str(a.params[knob]) for a in arms)
            raise UserError(f"--reference {reference}: no arm has {knob} = {reference} (arms: {values})")
        pairs = [(a, ref) for a in arms if a is not ref]
    elif categorical:
        pairs = [(a, arms[0]) for a in arms[1:]]
    else:
        pairs = [(arms[-1], arms[0])]  # the two ends of the range
    out = []
    for arm, ref in pairs:
        for name in metrics:
            if name in arm.estimates and name in ref.estimates:
                sd, dof = seed_sd.get(name, (None, None))
                diff = arm.estimates[name].mean - ref.estimates[name].mean
                out.append(Contrast(knob, arm.params[knob], ref.params[knob], name, diff,
                                    contrast_se(sd, arm.n, ref.n), None, dof, margins.get(name)))  # fmt: skip
        # by level: a knob can trade depth for accuracy on hard problems only (the selection ablation's
        # story), which the overall means dilute; the level's pooled seed SD is each estimate's sd_seed
        for name in LEVEL_METRICS:
            for level in sorted_levels(set(arm.by_level[name]) & set(ref.by_level[name])):
                a, r = arm.by_level[name][level], ref.by_level[name][level]
                out.append(Contrast(knob, arm.params[knob], ref.params[knob], name, a.mean - r.mean,
                                    contrast_se(a.sd_seed, a.n, r.n), level, level_dof[name].get(level),
                                    margins.get(name)))  # fmt: skip
    return out


def effects_settings(data: StudyData) -> tuple[list[str], dict[str, float]]:
    """The study's primary metrics and equivalence margins (`study.effects`, as the study recorded it):
    primary by default its objectives, a relative one counted in the metric it changes (Δacc: accuracy);
    accuracy's margin by default the constraint's max_accuracy_drop."""
    recorded = data.record.effects or {}
    primary = recorded.get("primary") or data.record.objectives or list(data.metric_names or [])
    margins = dict(recorded.get("margins") or {})
    drop = data.record.max_accuracy_drop
    if drop and "accuracy" not in margins:
        margins["accuracy"] = float(drop)
    return list(dict.fromkeys(metric(m).of or m for m in primary)), margins


def study_effects(
    study: optuna.Study, reference: str | None = None, margins: Mapping[str, float] | None = None
) -> StudyEffects:
    """The effects of a stored study (`effects_of` its `study_data`)."""
    return effects_of(study_data(study), reference, margins)


def effects_of(
    data: StudyData, reference: str | None = None, margins: Mapping[str, float] | None = None
) -> StudyEffects:
    """The arms of a study, their means over seeds by metric and by difficulty level, and the contrasts with
    their verdicts. `margins` (metric -> equivalence margin) overrides the study's own."""
    notes: list[str] = []
    trials = _eval_trials(data, notes)
    if not trials:
        raise UserError(f"study {data.name}: no completed trial on the eval split yet, no effects")
    primary, study_margins = effects_settings(data)
    margins = {**study_margins, **(margins or {})}
    names = list(dict.fromkeys([*ARM_METRICS, *primary]))
    grouped: dict[tuple[tuple[str, Any], ...], list[TrialRecord]] = {}
    for t in sorted(trials, key=lambda t: t.number):
        grouped.setdefault(tuple(sorted(t.params.items())), []).append(t)
    groups = list(grouped.values())
    knobs = sorted(k for k in {k for g in groups for k in g[0].params}
                   if len({repr(g[0].params.get(k)) for g in groups}) > 1)  # fmt: skip
    if len(knobs) == 1:
        groups = _arm_order(groups, knobs[0])

    # the seed SD of each metric, pooled over the arms with two seeds or more
    first = [replicate_estimates(g, names) for g in groups]
    seed_sd = {}
    for name in names:
        pooled = pooled_sd((len(g), e[name].sd_seed) for g, e in zip(groups, first, strict=True) if name in e)
        if pooled is not None:
            seed_sd[name] = pooled

    per_arm_levels = _level_inputs(data, groups, notes)
    by_level = {name: level_estimates([arm[name] for arm in per_arm_levels]) for name in LEVEL_METRICS}
    arms = [
        Arm(dict(g[0].params), tuple(t.number for t in g), replicate_estimates(g, names, seed_sd),
            {name: by_level[name][0][i] for name in LEVEL_METRICS})
        for i, g in enumerate(groups)
    ]  # fmt: skip
    contrasts: list[Contrast] = []
    if len(knobs) == 1:
        categorical = isinstance(groups[0][0].distributions.get(knobs[0]), CategoricalDistribution)
        metrics = list(dict.fromkeys([*primary, *CONTRAST_METRICS]))
        level_dof = {name: by_level[name][1] for name in LEVEL_METRICS}
        contrasts = judge(
            _contrasts(arms, knobs[0], categorical, reference, seed_sd, level_dof, metrics, margins), primary
        )
    if reference is not None and len(knobs) != 1:
        notes.append(f"--reference {reference} not used: the arms do not differ in exactly one knob")
    if len(knobs) > 1:
        notes.append(f"no contrasts: the arms differ in {len(knobs)} knobs ({', '.join(knobs)}), not one")
    elif not knobs:
        notes.append("no contrasts: every trial has the same params (one arm)")
    if not seed_sd:
        notes.append("no arm has two seeds: no seed noise measured (tsq sweep confirm --replicates R)")
    return StudyEffects(data.name, knobs, arms, contrasts, seed_sd, notes, primary, margins)


def _level_inputs(
    data: StudyData, groups: list[list[TrialRecord]], notes: list[str]
) -> list[dict[str, dict[Level, list[float]]]]:
    """Per arm, metric and level: the seeds' values from their per-response records."""
    # the budget only enters AUC, which is not broken down by level; any positive value does
    budget = data.record.budget or 1
    missing: list[int] = []
    out = []
    for group in groups:
        arm: dict[str, dict[Level, list[float]]] = {name: {} for name in LEVEL_METRICS}
        for t in group:
            responses = trial_responses(t)
            if responses is None:
                missing.append(t.number)
                continue
            for name, levels in level_values(responses, budget).items():
                for level, value in levels.items():
                    arm[name].setdefault(level, []).append(value)
        out.append(arm)
    if missing:
        notes.append(f"no per-response records for trials {missing}: the by-depth values leave them out")
    return out


def format_difference(name: str, diff: float, interval: tuple[float, float] | None) -> str:
    """A difference of means in display units, with its interval: accuracy +3.1 pts [-0.9, +7.1]."""
    m = metric(name)
    digits = {"ratio": 3, "signed_ratio": 3, "steps": 2}.get(m.format, 1)
    unit = " pts" if m.scale == 100 else ""
    text = f"{diff * m.scale:+.{digits}f}{unit}"
    if interval is None:
        return text
    lo, hi = (f"{v * m.scale:+.{digits}f}" for v in interval)
    return f"{text} [{lo}, {hi}]"


def sorted_levels(levels: set[Level]) -> list[Level]:
    return sorted(levels, key=lambda v: (v is None, v or 0))
