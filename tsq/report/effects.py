"""The effect of each knob in a replicated grid study (`tsq report effects`): the study's arms, their means
over seeds, and contrasts between arms judged against the seed noise.

An arm is one configuration (one set of searched params) on the eval split: an original trial, its `sweep
confirm` replicates on the eval split, and any other trial with the same params (a grid run twice). Its n is
its number of seeds. Held-out-split replicates and trials stopped early (evaluated on part of the problems)
are left out.

What each interval holds (95%):
- Arm metrics (accuracy, Len-A, tokens/step, Len-A reduction, Δ accuracy; the trials' user attrs): the mean
  over seeds with `aggregate_replicates`' interval, from the arm's own between-seed SD (Student's t at n − 1
  degrees of freedom, Welch–Satterthwaite with the problem-bootstrap SE) plus that SE: seed, evaluation
  sampling and problem noise. These are the numbers of pareto.md's "Confirmed over seeds" table. An arm of
  one seed takes the SD pooled over the study's other arms, with its degrees of freedom.
- By difficulty level (accuracy and Len-A from the per-response records): the mean over seeds of each
  seed's value at the level, and a t interval from the between-seed SD pooled over the study's arms, at the
  pooled degrees of freedom Σ(n_i − 1) (2 or 3 seeds alone give t quantiles of 12.7 or 4.3). It holds seed
  and evaluation-sampling noise, not the problem noise of the level's problems (no bootstrap per level).
- Contrasts (an arm minus the reference arm, one metric): SE = s·√(1/n₁ + 1/n₂), with s the between-seed SD
  of that metric pooled over the study's arms. A new seed retrains and re-samples the answers, so s holds the
  seed noise and the evaluation-sampling noise; every arm is evaluated on the same problems, so problem
  difficulty is common to both sides and cancels (paired), and is not in the SE. The verdict is "> 2 SE" or
  "within 2 SE (no measurable effect)"; with fewer than 2 seeds in either arm there is no SE ("unreplicated").
  Each study's section counts its contrasts beyond 2 SE beside the count expected by chance alone
  (`chance_rate`: P(|t| > 2) at the pooled degrees of freedom, 8.1% at 8), since a report of dozens of
  contrasts holds a few beyond 2 SE even where no knob matters.

Which contrasts: when the arms differ in one numeric knob, its last value against its first (the two ends of
the range); in one categorical knob, every arm against the reference arm (the first in the spec's choice
order). A `reference` value picks the reference arm for either kind: then every arm is compared with it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from tsq.errors import UserError
from tsq.evaluate import read_records
from tsq.metrics import METRICS, ProblemSums, axis_label, format_estimate, metric, metric_values
from tsq.report.table import is_replicate, records_path, replicate_estimates
from tsq.stats import ReplicateEstimate, aggregate_replicates, pooled_sd

ARM_METRICS = tuple(m for m in ("accuracy", "len_all", "tokens_per_step", "token_reduction",
                                "accuracy_delta") if m in METRICS)  # fmt: skip
CONTRAST_METRICS = ("accuracy", "len_all", "tokens_per_step")  # the relative ones differ by the same amounts
LEVEL_METRICS = ("accuracy", "len_all")
Level = int | None  # a problem's difficulty (the tiny world's chain depth); None where records have none


@dataclass(frozen=True)
class Arm:
    params: dict[str, Any]
    trials: tuple[int, ...]  # one trial per seed, by number
    estimates: dict[str, ReplicateEstimate]  # metric -> mean over seeds
    by_level: dict[str, dict[Level, ReplicateEstimate]]  # LEVEL_METRICS -> difficulty -> mean over seeds

    @property
    def n(self) -> int:
        return len(self.trials)


def chance_rate(dof: int | None) -> float:
    """The share of contrasts beyond 2 SE when there is no effect at all: P(|T| > 2) for Student's t at `dof`
    degrees of freedom (the SE is estimated from the seeds), or for the normal when `dof` is None."""
    from scipy.stats import norm, t  # deferred: scipy is slow to import

    return float(2 * (t.sf(2.0, dof) if dof is not None else norm.sf(2.0)))


def verdict(diff: float, se: float | None) -> str:
    if se is None:
        return "unreplicated"
    return "> 2 SE" if abs(diff) > 2 * se else "within 2 SE (no measurable effect)"


@dataclass(frozen=True)
class Contrast:
    knob: str
    value: Any
    reference: Any
    metric: str
    diff: float  # mean of the arm − mean of the reference arm
    se: float | None  # None: an arm has a single seed (or no arm measured the seed spread)
    level: Level = None  # a difficulty level's responses only; None: all responses

    @property
    def verdict(self) -> str:
        return verdict(self.diff, self.se)


@dataclass(frozen=True)
class StudyEffects:
    study_name: str
    knobs: list[str]  # the searched knobs whose value differs between arms
    arms: list[Arm]
    contrasts: list[Contrast]
    seed_sd: dict[str, tuple[float, int]]  # metric -> between-seed SD pooled over the arms, its dof
    notes: list[str]


def contrast_se(sd: float | None, n1: int, n2: int) -> float | None:
    """SE of a difference of two means over n1 and n2 seeds with a common seed SD: sd·√(1/n1 + 1/n2);
    None when either arm has a single seed."""
    if sd is None or n1 < 2 or n2 < 2:
        return None
    return sd * math.sqrt(1 / n1 + 1 / n2)


def level_values(records: Sequence[Mapping[str, Any]], budget: int) -> dict[str, dict[Level, float]]:
    """LEVEL_METRICS of one trial's responses, per difficulty level (`tsq.metrics` definitions)."""
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
) -> list[dict[Level, ReplicateEstimate]]:
    """Per arm and level, the mean of the seeds' values with the t interval of the between-seed SD pooled
    over the arms at that level (`pooled_sd`); no interval at a level where no arm has two seeds."""
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
        for level in _sorted_levels(set(arm)):
            sd, dof = pooled[level] or (None, None)
            estimates[level] = aggregate_replicates(list(arm[level]), sd_seed=sd, sd_dof=dof)
        out.append(estimates)
    return out


def _eval_trials(study: optuna.Study, notes: list[str]) -> list[FrozenTrial]:
    """The COMPLETE trials on the eval split: originals and eval replicates, not stopped early."""
    trials = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not is_replicate(t) or t.user_attrs.get("split", "eval") == "eval"
    ]
    stopped = [t.number for t in trials if (t.user_attrs.get("early_stop") or {}).get("stopped")]
    if stopped:
        notes.append(f"left out trials stopped early (evaluated on part of the problems): {stopped}")
    return [t for t in trials if t.number not in stopped]


def _arm_order(groups: list[list[FrozenTrial]], knob: str) -> list[list[FrozenTrial]]:
    """Arms by the knob: numeric values ascending, categorical ones in the spec's choice order."""
    dist = groups[0][0].distributions.get(knob)
    if isinstance(dist, CategoricalDistribution):
        choices = [str(c) for c in dist.choices]

        def position(group: list[FrozenTrial]) -> tuple[int, str]:
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
        for name in CONTRAST_METRICS:
            if name in arm.estimates and name in ref.estimates:
                sd = seed_sd[name][0] if name in seed_sd else None
                diff = arm.estimates[name].mean - ref.estimates[name].mean
                out.append(Contrast(knob, arm.params[knob], ref.params[knob], name, diff,
                                    contrast_se(sd, arm.n, ref.n)))  # fmt: skip
        # by level: a knob can trade depth for accuracy on hard problems only (the selection ablation's
        # story), which the overall means dilute; the level's pooled seed SD is each estimate's sd_seed
        for name in LEVEL_METRICS:
            for level in _sorted_levels(set(arm.by_level[name]) & set(ref.by_level[name])):
                a, r = arm.by_level[name][level], ref.by_level[name][level]
                out.append(Contrast(knob, arm.params[knob], ref.params[knob], name, a.mean - r.mean,
                                    contrast_se(a.sd_seed, a.n, r.n), level))  # fmt: skip
    return out


def study_effects(study: optuna.Study, reference: str | None = None) -> StudyEffects:
    """The arms of a study, their means over seeds by metric and by difficulty level, and the contrasts."""
    notes: list[str] = []
    trials = _eval_trials(study, notes)
    if not trials:
        raise UserError(f"study {study.study_name}: no completed trial on the eval split yet, no effects")
    grouped: dict[tuple[tuple[str, Any], ...], list[FrozenTrial]] = {}
    for t in sorted(trials, key=lambda t: t.number):
        grouped.setdefault(tuple(sorted(t.params.items())), []).append(t)
    groups = list(grouped.values())
    knobs = sorted(k for k in {k for g in groups for k in g[0].params}
                   if len({repr(g[0].params.get(k)) for g in groups}) > 1)  # fmt: skip
    if len(knobs) == 1:
        groups = _arm_order(groups, knobs[0])

    # the seed SD of each metric, pooled over the arms with two seeds or more
    first = [replicate_estimates(g, ARM_METRICS) for g in groups]
    seed_sd = {}
    for name in ARM_METRICS:
        pooled = pooled_sd((len(g), e[name].sd_seed) for g, e in zip(groups, first, strict=True) if name in e)
        if pooled is not None:
            seed_sd[name] = pooled

    per_arm_levels = _level_inputs(study, groups, notes)
    by_level = {name: level_estimates([arm[name] for arm in per_arm_levels]) for name in LEVEL_METRICS}
    arms = [
        Arm(dict(g[0].params), tuple(t.number for t in g), replicate_estimates(g, ARM_METRICS, seed_sd),
            {name: by_level[name][i] for name in LEVEL_METRICS})
        for i, g in enumerate(groups)
    ]  # fmt: skip
    contrasts: list[Contrast] = []
    if len(knobs) == 1:
        categorical = isinstance(groups[0][0].distributions.get(knobs[0]), CategoricalDistribution)
        contrasts = _contrasts(arms, knobs[0], categorical, reference, seed_sd)
    if reference is not None and len(knobs) != 1:
        notes.append(f"--reference {reference} not used: the arms do not differ in exactly one knob")
    if len(knobs) > 1:
        notes.append(f"no contrasts: the arms differ in {len(knobs)} knobs ({', '.join(knobs)}), not one")
    elif not knobs:
        notes.append("no contrasts: every trial has the same params (one arm)")
    if not seed_sd:
        notes.append("no arm has two seeds: no seed noise measured (tsq sweep confirm --replicates R)")
    return StudyEffects(study.study_name, knobs, arms, contrasts, seed_sd, notes)


def _level_inputs(
    study: optuna.Study, groups: list[list[FrozenTrial]], notes: list[str]
) -> list[dict[str, dict[Level, list[float]]]]:
    """Per arm, metric and level: the seeds' values from their per-response records."""
    # the budget only enters AUC, which is not broken down by level; any positive value does
    budget = int((study.user_attrs.get("baseline") or {}).get("budget") or 1)
    missing: list[int] = []
    out = []
    for group in groups:
        arm: dict[str, dict[Level, list[float]]] = {name: {} for name in LEVEL_METRICS}
        for t in group:
            path = records_path(t.user_attrs.get("records"), None, "")
            if path is None:
                missing.append(t.number)
                continue
            for name, levels in level_values(read_records(path), budget).items():
                for level, value in levels.items():
                    arm[name].setdefault(level, []).append(value)
        out.append(arm)
    if missing:
        notes.append(f"no per-response records for trials {missing}: the by-depth values leave them out")
    return out


# -- markdown ----------------------------------------------------------------------------------------------

EXPLANATION = (
    "Arms are configurations (searched params) on the eval split; n is the number of seeds (the original "
    "trial, its `sweep confirm` replicates, repeated grid points). Values are means over seeds with 95% "
    "intervals holding seed and evaluation noise. A contrast is an arm's mean minus the reference arm's, "
    "± 2 SE, the SE from the between-seed SD pooled over the study's arms (the arms share their eval "
    "problems, so problem difficulty cancels). A difference within 2 SE is no measurable effect."
)


def _value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _arm_label(arm: Arm, knobs: list[str]) -> str:
    if len(knobs) == 1:
        return _value(arm.params[knobs[0]])
    return ", ".join(f"{k}={_value(arm.params.get(k))}" for k in knobs) or "all trials"


def _estimate(name: str, est: ReplicateEstimate | None) -> str:
    return "" if est is None else format_estimate(name, est.mean, est.lo, est.hi)


def format_difference(name: str, diff: float, se: float | None) -> str:
    """A difference of means in display units, with ± 2 SE: accuracy +3.1 pts ± 4.0, Len-A -5.0 ± 8.2."""
    m = metric(name)
    digits = {"ratio": 3, "signed_ratio": 3, "steps": 2}.get(m.format, 1)
    unit = " pts" if m.scale == 100 else ""
    text = f"{diff * m.scale:+.{digits}f}{unit}"
    return text if se is None else f"{text} ± {2 * se * m.scale:.{digits}f}"


def _short(name: str) -> str:
    """The metric's label without its unit: "Acc", "Len-A"."""
    return metric(name).label.split(" (")[0]


def _sorted_levels(levels: set[Level]) -> list[Level]:
    return sorted(levels, key=lambda v: (v is None, v or 0))


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(r) + " |" for r in rows
    ]


def render_markdown(effects: StudyEffects) -> str:
    """One study's section: the arm table, the by-depth table, the contrasts and the notes."""
    knob_col = effects.knobs[0] if len(effects.knobs) == 1 else "arm"
    names = [m for m in ARM_METRICS if any(m in a.estimates for a in effects.arms)]
    lines = [f"## Study `{effects.study_name}`", ""]
    if effects.seed_sd:
        sds = ", ".join(f"{_short(m)} {format_difference(m, s, None).lstrip('+')} (df {d})"
                        for m, (s, d) in effects.seed_sd.items() if m in CONTRAST_METRICS)  # fmt: skip
        lines += [f"Between-seed SD pooled over the arms: {sds}.", ""]
    rows = [[_arm_label(a, effects.knobs), str(a.n), *(_estimate(m, a.estimates.get(m)) for m in names)]
            for a in effects.arms]  # fmt: skip
    lines += _table([knob_col, "n", *(axis_label(m) for m in names)], rows)

    levels = _sorted_levels({lv for a in effects.arms for m in LEVEL_METRICS for lv in a.by_level[m]})
    if levels:
        lines += ["", "By depth (difficulty level), intervals from the between-seed SD pooled over the arms "
                  "(seed and sampling noise; the level's problem noise is not in them):", ""]  # fmt: skip
        columns = [(m, lv) for m in LEVEL_METRICS for lv in levels]
        header = [knob_col, *(f"{_short(m)} d{'?' if lv is None else lv}" for m, lv in columns)]
        rows = [[_arm_label(a, effects.knobs), *(_estimate(m, a.by_level[m].get(lv)) for m, lv in columns)]
                for a in effects.arms]  # fmt: skip
        lines += _table(header, rows)
    if effects.contrasts:
        lines += ["", "Contrasts (arm − reference, ± 2 SE):", ""]
        rows = [
            [f"{c.knob} {_value(c.value)} − {_value(c.reference)}", axis_label(c.metric),
             "all" if c.level is None else f"d{c.level}", format_difference(c.metric, c.diff, c.se),
             c.verdict]
            for c in sorted(effects.contrasts, key=lambda c: c.level is not None)
        ]  # fmt: skip
        lines += _table(["contrast", "metric", "depth", "difference ± 2 SE", "verdict"], rows)
    lines += [""] + _chance_lines(effects) + [f"- note: {note}" for note in effects.notes]
    return "\n".join(lines).rstrip() + "\n"


def _chance_lines(effects: StudyEffects) -> list[str]:
    """How many contrasts lie beyond 2 SE, next to how many would by chance alone: many contrasts, each at
    2 SE, give a few such by chance, and a lone one must not be read as an effect."""
    judged = [c for c in effects.contrasts if c.se is not None]
    if not judged:
        return []
    dof = min((d for m, (_, d) in effects.seed_sd.items() if m in CONTRAST_METRICS), default=None)
    rate = chance_rate(dof)
    beyond = sum(c.verdict == "> 2 SE" for c in judged)
    quantile = "the normal" if dof is None else f"t at {dof} df, the SE being estimated from the seeds"
    return [
        f"- {beyond} of {len(judged)} contrasts lie beyond 2 SE; were no knob to matter, about "
        f"{rate * len(judged):.1f} would by chance ({rate:.1%} each, {quantile}). A lone one, by depth "
        "especially, is a lead to replicate, not a finding."
    ]


def render_report(studies: Sequence[StudyEffects]) -> str:
    """The effects report of several studies: what the numbers mean, then a section per study."""
    sections = [render_markdown(s) for s in studies]
    return "\n".join(["# Knob effects (`tsq report effects`)", "", EXPLANATION, "", *sections])
