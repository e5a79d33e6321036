"""Markdown sections that pareto.md and `tsq sweep status` share: how spread out the front is in each
objective (`tsq.method.stats.front_spread`), and which knob mattered (`tsq.report.importance`)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping

from tsq.method.metrics import axis_label, display_value, metric
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
