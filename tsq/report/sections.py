"""Markdown sections that pareto.md and `tsq sweep status` share: how spread out the front is in each
objective (`tsq.method.stats.front_spread`), which knob mattered (`tsq.report.importance`), and whether the
reduced sweep's answer holds at full fidelity (`tsq.report.fidelity`)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping

from tsq.method.metrics import axis_label, display_value, format_value, metric
from tsq.method.stats import FRONT_CLASS_LABELS, Estimate
from tsq.report.fidelity import FidelityCheck, label, overlay_text
from tsq.report.importance import ImportanceStability
from tsq.report.table import StudyTable

# A gap of a metric in this format is in these units (a gap of two percentages is in points)
_GAP_UNITS = {"percent": " pts", "points": " pts", "signed_percent": " pts", "tokens": " tokens",
              "steps": " steps", "ratio": "", "signed_ratio": ""}  # fmt: skip


def _ratio(gap: float, se: float) -> float:
    """The gap in SEs of the gap; equal values (gap and SE 0: identical responses) are 0 SE apart."""
    if se > 0:
        return abs(gap) / se
    return math.inf if gap != 0 else 0.0


def _span(values: list[float], digits: int, unit: str = "", most: float = math.inf) -> str:
    low, high = (
        f"> {most:g}" if v > most else f"{v:.{digits}f}".replace("inf", "∞")
        for v in (min(values), max(values))
    )
    return f"{low}{unit}" if low == high else f"{low}–{high}{unit}"


def _ratio_span(ratios: list[float], threshold: float, above: bool) -> str:
    """Ratios to gap SEs, with the decimals that keep them on their side of the threshold after rounding (a
    2.04 printed "2.0" would contradict "more than 2 SE")."""
    digits = 1
    while digits < 4:
        shown = [(float(f"{r:.{digits}f}"), r) for r in ratios if math.isfinite(r)]
        if all(v > threshold if above else v < threshold or r == threshold for v, r in shown):
            break
        digits += 1
    return _span(ratios, digits, " SE", most=99)  # past that the gap's SE is ~0: a ratio says nothing more


def spread_lines(table: StudyTable) -> list[str]:
    """Per objective, whether Optuna's front is spread out in it: its largest set of trials whose every pair's
    gap is more than the threshold times the gap's SE (`tsq.method.stats.front_spread`), or, when no two are,
    its widest gap. Gaps are in the metric's units; "SE" is the standard error of each gap."""
    lines = []
    for spread in table.spreads:
        label = axis_label(spread.metric, table.budget)
        unit = _GAP_UNITS[metric(spread.metric).format]
        if len(spread.separated) >= 2:
            pairs = [spread.gaps[pair] for pair in itertools.combinations(spread.separated, 2)]
            sizes = [display_value(spread.metric, abs(gap)) or 0.0 for gap, _ in pairs]
            members = ", ".join(str(n) for n in sorted(spread.separated, key=spread.values.__getitem__))
            ratios = _ratio_span([_ratio(*pair) for pair in pairs], spread.threshold, True)
            lines.append(
                f"{label}: trials {members} differ pairwise by more than {spread.threshold:g} SE of their "
                f"gap (gaps {_span(sizes, 1, unit)}, i.e. {ratios})"
            )
        else:
            (a, b), (gap, se) = max(spread.gaps.items(), key=lambda item: _ratio(*item[1]))
            size = display_value(spread.metric, abs(gap)) or 0.0
            ratio = _ratio_span([_ratio(gap, se)], spread.threshold, False)
            lines.append(
                f"{label}: no two front trials differ by more than {spread.threshold:g} SE of their gap "
                f"(widest: trials {a} and {b}, {size:.1f}{unit}, i.e. {ratio}), so within noise the front "
                "is one point in it"
            )
    return lines


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


def _tau(estimate: Estimate) -> str:
    if estimate.value is None:
        return "n/a"
    if estimate.lo is None or estimate.hi is None:
        return f"{estimate.value:+.2f}"
    return f"{estimate.value:+.2f} [{estimate.lo:+.2f}, {estimate.hi:+.2f}]"


def fidelity_lines(check: FidelityCheck) -> list[str]:
    """The section "At full fidelity" (`tsq sweep promote`): the verdict, each objective's rank transfer
    against its noise ceiling, the front check, the hypervolume lost, each knob's sign at both fidelities."""
    seeds = "/".join(map(str, sorted(set(check.seeds.values()))))
    on_front = ", ".join(map(str, check.reduced_front)) or "none"
    off_front = ", ".join(str(n) for n in check.points if n not in check.reduced_front) or "none"
    lines = [
        "",
        "## At full fidelity (`tsq sweep promote`)",
        "",
        f'**Verdict: {check.verdict}** (the rule: docs/sweeps.md, "Does the answer hold at full fidelity").',
        "",
        f"Promoted at `{overlay_text(check.overlay)}`: {len(check.points)} points (on the sweep's front: "
        f"{on_front}; off it: {off_front}), {seeds} fresh seeds each. A point's full value is the mean over "
        "its promoted seeds, its reduced value the sweep's own run. τ_b: Kendall's rank correlation of the "
        "two over the points, with a 95% bootstrap interval over the points. Noise ceiling: τ_b between the "
        "means of the two halves of each point's seeds, what perfect transfer would show at the measured "
        "seed noise (halves of R/2 seeds are noisier than a mean of R, so a τ at the ceiling is slightly "
        "generous). A difference not separable from the noise is no measurable effect.",
        "",
        "| objective | points | τ_b reduced vs full | noise ceiling | ceiling − τ_b | verdict |",
        "|---|---:|---|---|---|---|",
    ]
    for t in check.transfers:
        lines.append(
            f"| {label(t.metric)} | {t.transfer.n} | {_tau(t.transfer.tau)} | {_tau(t.transfer.ceiling)} "
            f"| {_tau(t.transfer.gap)} | {t.verdict}: {t.reason} |"
        )
    lines.append("")
    if check.pick_p_front is not None and check.pick_front is not None:
        lines.append(
            f"- the recommended trial {check.pick} at full fidelity: p_front {check.pick_p_front:.3f} among "
            f"the promoted points, seed noise in ({FRONT_CLASS_LABELS[check.pick_front]})"
        )
    hv = check.hypervolume
    if hv is not None:
        reference = ", ".join(
            f"{label(m)} {format_value(m, v)} ({why})" for m, (v, why) in hv.reference.items()
        )
        lost = "n/a (the promoted points dominate no volume)" if hv.lost is None else f"{100 * hv.lost:.1f}%"
        lines.append(
            f"- hypervolume at full fidelity: the sweep's front points {hv.reduced_front:.4g}, every "
            f"promoted point {hv.full_front:.4g}: lost by choosing at reduced fidelity {lost} (reference "
            f"point: {reference})"
        )
    if check.knobs:
        lines += [
            "",
            "Each knob's rank correlation (τ_b) with each objective over the promoted points, at each "
            "fidelity. Caveat: the points are not a designed experiment (the front's knobs move together, "
            "so one knob's correlation carries the others'), and with few points most intervals reach 0: "
            "*not measurable* says so, not that the knob has no effect.",
            "",
            "| knob | objective | τ_b reduced | τ_b full | sign |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {k.knob} | {label(k.metric)} | {_tau(k.reduced)} | {_tau(k.full)} | {k.agreement} |"
            for k in check.knobs
        ]
    lines += [f"- note: {note}" for note in check.notes]
    return lines
