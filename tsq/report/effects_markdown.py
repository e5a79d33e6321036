"""The markdown of `tsq report effects`: what the numbers mean, then per study its arms (overall and by
depth), the contrasts with their verdicts and the family's summary, as `tsq.report.effects` computed them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tsq.method.metrics import axis_label, format_estimate, metric
from tsq.method.stats import ReplicateEstimate
from tsq.report.effects import (
    ALPHA,
    ARM_METRICS,
    CONTRAST_METRICS,
    LEVEL_METRICS,
    Arm,
    StudyEffects,
    format_difference,
    sorted_levels,
)

EXPLANATION = (
    "Arms are configurations (searched params) on the eval split; n is the number of seeds (the original "
    "trial unless the sweep picked it, its `sweep confirm` replicates, repeated grid points). Values are "
    "means over seeds with 95% intervals holding seed and evaluation noise. A contrast is an arm's mean "
    "minus the reference arm's with its 95% interval (t at the pooled seed SD's degrees of freedom; the "
    "arms share their eval problems, so problem difficulty cancels). Verdicts at α = 0.05: the primary "
    "family (each arm's contrast on each primary metric, overall) is Holm-adjusted; every other contrast "
    "is exploratory (unadjusted: a lead, not a finding). *better*/*worse*: the difference's p is below α;"
    " *equivalent within ±m*: the two one-sided tests reject a difference of m or more; *undecided*: "
    "neither — an interval that contains 0 is not evidence of no effect."
)


def _value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _arm_label(arm: Arm, knobs: list[str]) -> str:
    if len(knobs) == 1:
        return _value(arm.params[knobs[0]])
    return ", ".join(f"{k}={_value(arm.params.get(k))}" for k in knobs) or "all trials"


def _estimate(name: str, est: ReplicateEstimate | None) -> str:
    return "" if est is None else format_estimate(name, est.mean, est.lo, est.hi)


def _p(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}" if value >= 0.001 else "<0.001"


def _short(name: str) -> str:
    """The metric's label without its unit: "Acc", "Len-A"."""
    return metric(name).label.split(" (")[0]


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
                        for m, (s, d) in effects.seed_sd.items()
                        if m in CONTRAST_METRICS or m in effects.primary)  # fmt: skip
        lines += [f"Between-seed SD pooled over the arms: {sds}.", ""]
    rows = [[_arm_label(a, effects.knobs), str(a.n), *(_estimate(m, a.estimates.get(m)) for m in names)]
            for a in effects.arms]  # fmt: skip
    lines += _table([knob_col, "n", *(axis_label(m) for m in names)], rows)

    levels = sorted_levels({lv for a in effects.arms for m in LEVEL_METRICS for lv in a.by_level[m]})
    if levels:
        lines += ["", "By depth (difficulty level), intervals from the between-seed SD pooled over the arms "
                  "(seed and sampling noise; the level's problem noise is not in them):", ""]  # fmt: skip
        columns = [(m, lv) for m in LEVEL_METRICS for lv in levels]
        header = [knob_col, *(f"{_short(m)} d{'?' if lv is None else lv}" for m, lv in columns)]
        rows = [[_arm_label(a, effects.knobs), *(_estimate(m, a.by_level[m].get(lv)) for m, lv in columns)]
                for a in effects.arms]  # fmt: skip
        lines += _table(header, rows)
    if effects.contrasts:
        lines += ["", "Contrasts (arm − reference, 95% interval; p Holm-adjusted in the primary family):", ""]
        rows = [
            [f"{c.knob} {_value(c.value)} − {_value(c.reference)}", axis_label(c.metric),
             "all" if c.level is None else f"d{c.level}", "primary" if c.primary else "exploratory",
             format_difference(c.metric, c.diff, c.interval()), "" if c.p is None else str(c.df), _p(c.p),
             _p(c.p_equiv), c.verdict]
            for c in sorted(effects.contrasts, key=lambda c: (not c.primary, c.level is not None))
        ]  # fmt: skip
        header = [
            "contrast",
            "metric",
            "depth",
            "family",
            "difference [95%]",
            "df",
            "p",
            "p equiv.",
            "verdict",
        ]
        lines += _table(header, rows)
    lines += [""] + _family_lines(effects) + [f"- note: {note}" for note in effects.notes]
    return "\n".join(lines).rstrip() + "\n"


def _family_lines(effects: StudyEffects) -> list[str]:
    """What the primary family is, its margins, and how many exploratory contrasts pass their unadjusted
    test next to how many would by chance alone (α of them)."""
    judged = [c for c in effects.contrasts if c.p is not None]
    if not judged:
        return []
    primary = [c for c in judged if c.primary]
    margins = ", ".join(f"{_short(m)} ±{format_difference(m, v, None).lstrip('+')}"
                        for m, v in effects.margins.items()) or "none declared"  # fmt: skip
    lines = [
        f"- primary family: {len(primary)} replicated contrasts on "
        f"{', '.join(_short(m) for m in effects.primary)} (Holm across them); equivalence margins: {margins}"
    ]
    exploratory = [c for c in judged if not c.primary]
    if exploratory:
        passed = sum(c.verdict in ("better", "worse") for c in exploratory)
        lines.append(
            f"- exploratory: {passed} of {len(exploratory)} pass their unadjusted test; were no knob to "
            f"matter, about {ALPHA * len(exploratory):.1f} would by chance. Leads to replicate, not findings."
        )
    return lines


def render_report(studies: Sequence[StudyEffects]) -> str:
    """The effects report of several studies: what the numbers mean, then a section per study."""
    sections = [render_markdown(s) for s in studies]
    return "\n".join(["# Knob effects (`tsq report effects`)", "", EXPLANATION, "", *sections])
