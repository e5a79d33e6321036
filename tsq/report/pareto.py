"""The Pareto report of a study: pareto.csv, pareto.html (plotly, offline), pareto.md, pareto.png, and the
per-response records of every trial and the baseline under records/ (so the report can be rebuilt elsewhere).

Every metric carries its 95% problem-bootstrap interval; every trial its `p_front`, the share of joint problem
resamples in which it is on the feasible front (`tsq.report.table`). Optuna's own front (`study.best_trials`)
is the `pareto` flag, so the report and `tsq sweep best` agree. Every file is written atomically. The
columns are the metrics' registry entries (`tsq.method.metrics.METRICS`, `report_metrics("pareto")`).
"""

from __future__ import annotations

import csv
import html
import io
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

from tsq.errors import UserError
from tsq.fileio import write_atomic
from tsq.method.metrics import (
    axis_label,
    baseline_value,
    display_value,
    distinct_decimals,
    format_estimate,
    format_value,
    interval_key,
    metric,
    report_metrics,
)
from tsq.method.stats import FRONT_CLASS_LABELS
from tsq.records import TrialRecord
from tsq.report.advice import feasible_cell, feasible_header, recommendation_lines
from tsq.report.data import export_records, study_data
from tsq.report.sections import importance_markdown, spread_lines
from tsq.report.table import Row, StudyTable, front_trials, metric_columns, table_hypervolume, table_of


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _estimate(row_metrics: dict[str, Any], name: str, decimals: int | None = None) -> str:
    lo, hi = (row_metrics.get(interval_key(name, part)) for part in ("lo", "hi"))
    return format_estimate(name, row_metrics.get(name), lo, hi, decimals)


def estimate_columns() -> list[str]:
    """Each objective metric and its interval ends, as pareto.csv and the W&B summary list them."""
    return [c for m in metric_columns() for c in (m, interval_key(m, "lo"), interval_key(m, "hi"))]


def render_csv(table: StudyTable) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    columns = estimate_columns()
    writer.writerow(["trial", *table.param_names, *columns, "pareto", "p_front", "front"])
    for row in table.rows:
        writer.writerow(
            [row.number, *(row.params.get(p, "") for p in table.param_names)]
            + [_fmt(row.metrics.get(c), 8) for c in columns]
            + [int(row.pareto), _fmt(row.p_front, 4), row.front or ""]
        )
    return buf.getvalue()


def _report_metrics(table: StudyTable) -> list[str]:
    """The paper's columns (docs/method.md "Metrics"), then any objective the study adds."""
    paper = report_metrics("pareto")
    return [*paper, *(m for m, _ in table.objectives if m not in paper)]


def _ordered_rows(table: StudyTable) -> list[Row]:
    """Every trial, shortest first."""
    return sorted(table.rows, key=lambda r: r.metrics.get("len_all") or math.inf)


def render_markdown(table: StudyTable, spec: str | None = None) -> str:
    """What to train with, then the paper-style table of every trial against the baseline, with intervals,
    feasibility and p_front, then what the noise allows."""
    names = _report_metrics(table)
    budget = table.budget
    header = [
        "",
        *table.param_names,
        *(axis_label(m, budget) for m in names),
        feasible_header(table),
        "p_front",
    ]
    decimals = {m: distinct_decimals(m, [r.metrics.get(m) for r in table.rows]) for m in names}
    lines = [
        f"# Pareto front of study `{table.study_name}`",
        "",
        "## What to train with",
        "",
        *recommendation_lines(table, spec),
        "",
        "## Every trial",
        "",
        "Each value has its 95% interval in brackets, from a bootstrap over evaluation problems "
        "(deltas paired with the baseline on the same problems). *feasible*: yes when the whole interval of "
        "Δ Acc (with seed noise once replicates exist) is above the constraint's limit, unsure when only the "
        "value is, no when the value is below it or the staged test stopped the trial (its metrics are of "
        "part of the problems). `p_front` is the share of joint "
        "problem resamples in which the trial is on the feasible front: "
        f"≥ {table.front['clear']:g} is *clearly on the front*, ≥ {table.front['possible']:g} *not "
        "distinguishable from the front*. The intervals hold evaluation noise only; seed noise adds to them, "
        "and `p_front` holds it once the study has fresh-seed replicates (`tsq sweep confirm`; see the notes "
        "below). A difference whose interval contains 0 is no measurable effect.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    blanks = [""] * len(table.param_names)
    base_cells = [_estimate(table.baseline, m, decimals[m]) if not metric(m).relative else "" for m in names]
    lines.append("| " + " | ".join(["baseline", *blanks, *base_cells, "", ""]) + " |")
    pick = table.recommendation.pick if table.recommendation else None
    for row in _ordered_rows(table):
        cells = [
            f"trial {row.number}" + (" ★" if row.pareto else "") + (" ◆" if row.number == pick else ""),
            *(_fmt(row.params.get(p)) for p in table.param_names),
            *(_estimate(row.metrics, m, decimals[m]) for m in names),
            feasible_cell(table, row),
            _fmt(row.p_front, 3),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if not table.rows:
        lines += ["", "No completed trial yet."]
    lines += ["", "★: on Optuna's Pareto front (`tsq sweep best`). ◆: the recommended trial."]
    for cls in ("clear", "indistinguishable"):
        members = [r.number for r in table.rows if r.front == cls]
        lines.append(f"- {FRONT_CLASS_LABELS[cls]}: " + (", ".join(f"trial {n}" for n in members) or "none"))
    lines += [f"- front spread in {line}" for line in spread_lines(table)]
    lines += [f"- note: {note}" for note in table.notes]
    lines += _replicated_markdown(table)
    if table.importances:
        lines += ["", "## Which knob mattered (PED-ANOVA importance per objective)", ""]
        lines += importance_markdown(table.importances, table.importance_warning, table.importance_stability)
    if table.provenance:
        lines += ["", "## What ran it", ""] + [f"- {line}" for line in table.provenance]
    return "\n".join(lines) + "\n"


def _replicated_markdown(table: StudyTable) -> list[str]:
    """The replicates of `tsq sweep confirm`, by trial and split: means over the fresh seeds only, whose
    intervals hold seed noise, beside the value the sweep saw (never averaged in: it was picked for looking
    good, the winner's curse) and, on the held-out split, the picked adapter itself evaluated there."""
    if not table.replicated:
        return []
    names = [m for m in _report_metrics(table) if any(m in r.estimates for r in table.replicated)]
    held_out = any(r.picked is not None for r in table.replicated)
    header = ["trial", "split", "fresh seeds"]
    for m in names:
        label = axis_label(m, table.budget)
        header += [f"{label}: as the sweep saw it"]
        header += [f"{label}: picked adapter, held out"] if held_out else []
        header += [f"{label}: fresh seeds"]
    lines = [
        "",
        "## Confirmed over fresh seeds (`tsq sweep confirm`)",
        "",
        "The configuration's estimate is the mean over its fresh seeds only (eval: re-trained and re-sampled "
        "with new seeds on the sweep's split; test: the held-out split the sweep never saw), with a 95% "
        "interval holding seed and evaluation noise. The sweep's own run is shown beside it *as the sweep "
        "saw it* and never averaged in: it was picked because it looked good (the winner's curse). On the "
        "held-out split, *picked adapter, held out* is the very adapter the sweep trained (its seeds), "
        "evaluated there.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in table.replicated:
        cells = [f"trial {row.of}", row.split, str(row.n)]
        for m in names:
            est = row.estimates.get(m)
            cells.append(format_value(m, row.original.get(m)) if row.split == "eval" else "")
            if held_out:
                cells.append("" if row.picked is None else format_value(m, row.picked.get(m)))
            cells.append("" if est is None else format_estimate(m, est.mean, est.lo, est.hi))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _axes(table: StudyTable) -> tuple[str, str]:
    """The two metrics to plot: the first two objectives (x: the second), else Len-A against accuracy."""
    metrics = [m for m, _ in table.objectives]
    return (metrics[1], metrics[0]) if len(metrics) >= 2 else ("len_all", "accuracy")


def _errors(rows: list[Row], name: str) -> tuple[list[float | None], list[float], list[float]]:
    """Values in display units and the distances to their interval ends (0 where there is no interval)."""
    values, minus, plus = [], [], []
    for r in rows:
        v = display_value(name, r.metrics.get(name))
        lo = display_value(name, r.metrics.get(interval_key(name, "lo")))
        hi = display_value(name, r.metrics.get(interval_key(name, "hi")))
        values.append(v)
        minus.append(v - lo if v is not None and lo is not None else 0.0)
        plus.append(hi - v if v is not None and hi is not None else 0.0)
    return values, minus, plus


def _hover(row: Row) -> str:
    params = ", ".join(f"{k}={_fmt(v)}" for k, v in row.params.items())
    p = "" if row.p_front is None else f"<br>p_front={row.p_front:.2f}"
    return f"trial {row.number}<br>{params}{p}"


def _baseline_point(table: StudyTable, name: str) -> tuple[float | None, float, float]:
    value = display_value(name, baseline_value(name, table.baseline))
    lo = display_value(name, table.baseline.get(interval_key(name, "lo")))
    hi = display_value(name, table.baseline.get(interval_key(name, "hi")))
    return (
        value,
        (value - lo if value is not None and lo is not None else 0.0),
        (hi - value if value is not None and hi is not None else 0.0),
    )


def constraint_limit(table: StudyTable, name: str) -> float | None:
    """Where the accuracy-drop constraint lies on an axis of `name`, in display units (None: not on it)."""
    drop = table.recommendation.max_accuracy_drop if table.recommendation else None
    if drop is None:
        return None
    if name == "accuracy_delta":
        return display_value(name, -drop)
    base = table.baseline.get("accuracy")
    return display_value(name, base - drop) if name == "accuracy" and base is not None else None


def _groups(table: StudyTable) -> list[tuple[str, list[Row]]]:
    """The plot's point groups: trials off the front, stopped early, on Optuna's front (each by x)."""
    x, _ = _axes(table)

    def by_x(rows: list[Row]) -> list[Row]:
        return sorted(rows, key=lambda r: r.metrics.get(x) or 0)

    return [
        ("other trials", by_x([r for r in table.rows if not r.pareto and not r.stopped])),
        ("stopped early (part of the problems)", by_x([r for r in table.rows if r.stopped])),
        ("Pareto front", by_x([r for r in table.rows if r.pareto])),
    ]


def render_html(table: StudyTable, spec: str | None = None) -> str:
    import plotly.graph_objects as go

    x, y = _axes(table)
    xl, yl = axis_label(x, table.budget), axis_label(y, table.budget)
    fig = go.Figure()
    styles = {
        "other trials": ("circle", "lightgray", 18),
        "stopped early (part of the problems)": ("x", "silver", 14),
        "Pareto front": ("circle", "crimson", 20),
    }
    for label, rows in _groups(table):
        if not rows:
            continue
        symbol, colour, size = styles[label]
        xs, xm, xp = _errors(rows, x)
        ys, ym, yp = _errors(rows, y)
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                error_x={"type": "data", "array": xp, "arrayminus": xm, "thickness": 1},
                error_y={"type": "data", "array": yp, "arrayminus": ym, "thickness": 1},
                mode="markers+text",
                text=[str(r.number) for r in rows],
                textposition="middle center",
                textfont={"size": 10, "color": "white" if label == "Pareto front" else "black"},
                name=label,
                marker={"symbol": symbol, "size": size, "color": colour},
                customdata=[_hover(r) for r in rows],
                hovertemplate="%{customdata}<br>" + f"{xl}=%{{x}}<br>{yl}=%{{y}}<extra></extra>",
            )
        )
    rec = table.recommendation
    if rec is not None and rec.pick is not None:
        pick = next(r for r in table.rows if r.number == rec.pick)
        fig.add_trace(
            go.Scatter(
                x=[display_value(x, pick.metrics.get(x))],
                y=[display_value(y, pick.metrics.get(y))],
                mode="markers",
                name=f"recommended: trial {pick.number}",
                marker={"symbol": "circle-open", "size": 34, "color": "goldenrod", "line": {"width": 3}},
                hoverinfo="skip",
            )
        )
    (bx, bxm, bxp), (by, bym, byp) = _baseline_point(table, x), _baseline_point(table, y)
    if bx is not None and by is not None:
        fig.add_trace(
            go.Scatter(
                x=[bx],
                y=[by],
                error_x={"type": "data", "array": [bxp], "arrayminus": [bxm]},
                error_y={"type": "data", "array": [byp], "arrayminus": [bym]},
                mode="markers",
                name="baseline",
                marker={"symbol": "x", "size": 13, "color": "black"},
            )
        )
    for name, add in ((y, fig.add_hline), (x, fig.add_vline)):
        limit = constraint_limit(table, name)
        if limit is not None:
            add(limit, line_dash="dash", line_color="darkorange", annotation_text=_constraint_text(table))
    fig.update_layout(
        title=f"Study {table.study_name}: {yl} against {xl} (95% intervals over problems; the number in a "
        "marker is its trial)",
        xaxis_title=xl,
        yaxis_title=yl,
    )
    parts = [fig.to_html(include_plotlyjs=True, full_html=False)]  # inlined plotly.js: works offline
    if table.rows and table.param_names:
        parts.append(_knobs_figure(table).to_html(include_plotlyjs=False, full_html=False))
    text = render_markdown(table, spec).splitlines()[1:]  # the title is the plot's
    split = text.index("## Every trial") if "## Every trial" in text else 0
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>tsq report: {html.escape(table.study_name)}</title></head><body>"
        f"<h2>Study {html.escape(table.study_name)}</h2>{_markdown_as_html(text[:split])}"
        + "\n".join(parts)
        + f"{_markdown_as_html(text[split:])}</body></html>"
    )


def _constraint_text(table: StudyTable) -> str:
    drop = table.recommendation.max_accuracy_drop if table.recommendation else None
    return "" if drop is None else f"constraint: Δ Acc ≥ {-100 * drop:.1f} pts"


def _knobs_figure(table: StudyTable) -> Any:
    """Parallel coordinates: every searched knob against the objectives, one line per trial."""
    import plotly.graph_objects as go

    dims = []
    for p in table.param_names:
        values = [r.params.get(p) for r in table.rows]
        if all(isinstance(v, int | float) for v in values):
            dims.append({"label": p, "values": values})
        else:
            levels = sorted({str(v) for v in values})
            dims.append({"label": p, "values": [levels.index(str(v)) for v in values],
                         "tickvals": list(range(len(levels))), "ticktext": levels})  # fmt: skip
    for m, _ in table.objectives:
        dims.append(
            {
                "label": axis_label(m, table.budget),
                "values": [display_value(m, r.metrics.get(m)) for r in table.rows],
            }
        )
    first = table.objectives[0][0] if table.objectives else "accuracy"
    color = [display_value(first, r.metrics.get(first)) or 0.0 for r in table.rows]
    fig = go.Figure(
        go.Parcoords(line={"color": color, "colorscale": "Viridis", "showscale": True}, dimensions=dims)
    )
    fig.update_layout(title="Knobs against objectives (one line per trial, coloured by the first objective)")
    return fig


def _inline(text: str) -> str:
    """Markdown's `code` and **bold** as HTML, the rest escaped."""
    out = html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", out)


def _markdown_as_html(lines: list[str]) -> str:
    """pareto.md's tables, lists and notes as plain HTML (no markdown renderer needed offline)."""
    out: list[str] = []
    rows: list[list[str]] = []

    def flush() -> None:
        if rows:
            head = "".join(f"<th>{c}</th>" for c in rows[0])
            body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows[1:])
            out.append(f"<table border='1' cellpadding='4' style='{_TABLE_STYLE}'>{head}{body}</table>")
            rows.clear()

    for line in lines:
        if line.startswith("|"):
            if "---" not in line:
                rows.append([_inline(c.strip()) for c in line.strip("|").split("|")])
            continue
        flush()
        if line.startswith("## "):
            out.append(f"<h3>{html.escape(line[3:])}</h3>")
        elif line.startswith(("- ", "> ")):
            out.append(f"<p style='{_TEXT_STYLE}'>{_inline(line[2:])}</p>")
        elif line.strip():
            out.append(f"<p style='{_TEXT_STYLE}'>{_inline(line)}</p>")
    flush()
    return "\n".join(out)


_TABLE_STYLE = "border-collapse:collapse;font-family:sans-serif;font-size:13px"
_TEXT_STYLE = "font-family:sans-serif;font-size:13px"


_PNG_STYLES: dict[str, dict[str, Any]] = {
    "other trials": {"marker": "o", "ms": 15, "mfc": "#d9d9d9", "mec": "gray", "text": "black", "z": 3},
    "stopped early (part of the problems)": {"marker": "X", "ms": 13, "mfc": "#f0f0f0", "mec": "gray",
                                             "text": "dimgray", "z": 2},
    "Pareto front": {"marker": "o", "ms": 17, "mfc": "tab:red", "mec": "darkred", "text": "white", "z": 5},
}  # fmt: skip


def render_png(table: StudyTable) -> bytes:
    """The front as a person reads it: each trial's number inside its marker (a label cannot sit on another
    trial's marker), front trials red, trials stopped early crossed out, the recommended trial ringed, the
    constraint dashed with its infeasible side shaded, p_front keyed by trial beside the plot, and a zoom on
    the front when its trials crowd together at the scale of the whole plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = _axes(table)
    fig, ax = plt.subplots(figsize=(8.5, 5.6), dpi=120)
    _draw_points(ax, table, x, y, legend=True)
    (bx, bxm, bxp), (by, bym, byp) = _baseline_point(table, x), _baseline_point(table, y)
    if bx is not None and by is not None:
        ax.errorbar([bx], [by], xerr=[[bxm], [bxp]], yerr=[[bym], [byp]], fmt="x", ms=9, c="black",
                    label="baseline", capsize=2)  # fmt: skip
    _draw_constraint(ax, table, x, y)
    ax.set_xlabel(axis_label(x, table.budget))
    ax.set_ylabel(axis_label(y, table.budget))
    ax.set_title(f"Study {table.study_name}: the number in a marker is its trial; bars: 95% intervals over "
                 "problems", fontsize=9)  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, markerscale=0.6)
    key = [f"{r.number}: {r.p_front:.2f}" for r in sorted(table.rows, key=lambda r: -(r.p_front or 0))
           if r.pareto and r.p_front is not None]  # fmt: skip
    if key:
        ax.text(1.02, 0.45, "p_front of the\nfront trials\n" + "\n".join(key), transform=ax.transAxes,
                fontsize=8, va="top", family="monospace")  # fmt: skip
    _zoom_on_front(ax, table, x, y)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _draw_points(ax: Any, table: StudyTable, x: str, y: str, legend: bool) -> None:
    for label, rows in _groups(table):
        if not rows:
            continue
        st = _PNG_STYLES[label]
        xs, xm, xp = _errors(rows, x)
        ys, ym, yp = _errors(rows, y)
        ax.errorbar(xs, ys, xerr=[xm, xp], yerr=[ym, yp], fmt="none", ecolor=st["mec"], elinewidth=0.8,
                    capsize=2, alpha=0.6, zorder=st["z"] - 1)  # fmt: skip
        if label == "Pareto front":
            ax.plot(xs, ys, "-", c=st["mec"], lw=0.8, zorder=st["z"] - 1)
        ax.plot(xs, ys, ls="", marker=st["marker"], ms=st["ms"], mfc=st["mfc"], mec=st["mec"],
                label=label if legend else None, zorder=st["z"])  # fmt: skip
        for r, xv, yv in zip(rows, xs, ys, strict=True):
            if xv is not None and yv is not None:
                ax.text(xv, yv, str(r.number), ha="center", va="center", fontsize=7, color=st["text"],
                        weight="bold", zorder=st["z"] + 0.5, clip_on=True)  # fmt: skip
    rec = table.recommendation
    if rec is not None and rec.pick is not None:
        pick = next(r for r in table.rows if r.number == rec.pick)
        ring = f"recommended: trial {pick.number}" + (" (provisional)" if rec.provisional else "")
        ax.plot([display_value(x, pick.metrics.get(x))], [display_value(y, pick.metrics.get(y))], ls="",
                marker="o", ms=25, mfc="none", mec="goldenrod", mew=2.5, zorder=6,
                label=ring if legend else None)  # fmt: skip


CROWDED = 0.15  # the front spans less than this share of the plot in both axes: zoom on it


_INSET_SPOTS = [(0.55, 0.53), (0.55, 0.05), (0.05, 0.53), (0.05, 0.05), (0.3, 0.53), (0.3, 0.05)]
_INSET_SIZE = (0.4, 0.42)


def _emptiest_spot(
    ax: Any, table: StudyTable, x: str, y: str, zoomed: tuple[float, float, float, float]
) -> tuple[float, float, float, float]:
    """Where the inset covers the fewest points (the zoomed region counts as many), in axes fractions."""
    to_axes = ax.transData + ax.transAxes.inverted()
    points = [(display_value(x, r.metrics.get(x)), display_value(y, r.metrics.get(y))) for r in table.rows]
    points += [(_baseline_point(table, x)[0], _baseline_point(table, y)[0])]
    x0, x1, y0, y1 = zoomed
    points += [(a, b) for a in (x0, x1) for b in (y0, y1)] * 10
    placed = [to_axes.transform((a, b)) for a, b in points if a is not None and b is not None]
    w, h = _INSET_SIZE

    def covered(spot: tuple[float, float]) -> int:
        return sum(spot[0] - 0.03 <= px <= spot[0] + w + 0.03 and spot[1] - 0.03 <= py <= spot[1] + h + 0.03
                   for px, py in placed)  # fmt: skip

    left, bottom = min(_INSET_SPOTS, key=covered)
    return (left, bottom, w, h)


def _zoom_on_front(ax: Any, table: StudyTable, x: str, y: str) -> None:
    """An inset that zooms on the front when its trials crowd together (their markers would overlap)."""
    front = [r for r in table.rows if r.pareto]
    xs = [v for r in front if (v := display_value(x, r.metrics.get(x))) is not None]
    ys = [v for r in front if (v := display_value(y, r.metrics.get(y))) is not None]
    if len(front) < 2 or len(xs) < 2 or len(ys) < 2:
        return
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    xspan, yspan = max(xs) - min(xs), max(ys) - min(ys)
    if xspan > CROWDED * (x1 - x0) and yspan > CROWDED * (y1 - y0):
        return
    pad_x = max(xspan, 0.02 * (x1 - x0)) * 0.25
    pad_y = max(yspan, 0.02 * (y1 - y0)) * 0.25
    inset = ax.inset_axes(_emptiest_spot(ax, table, x, y, (min(xs), max(xs), min(ys), max(ys))))
    _draw_points(inset, table, x, y, legend=False)
    inset.set_xlim(min(xs) - pad_x, max(xs) + pad_x)
    inset.set_ylim(min(ys) - pad_y, max(ys) + pad_y)
    inset.tick_params(labelsize=7)
    inset.set_title("the front, zoomed", fontsize=7)
    inset.grid(alpha=0.3)
    ax.indicate_inset_zoom(inset, edgecolor="gray")


def _draw_constraint(ax: Any, table: StudyTable, x: str, y: str) -> None:
    """The accuracy-drop limit as a dashed line, its infeasible side shaded (on whichever axis shows it)."""
    for name, horizontal in ((y, True), (x, False)):
        limit = constraint_limit(table, name)
        if limit is None:
            continue
        ax.autoscale_view()
        low, high = ax.get_ylim() if horizontal else ax.get_xlim()
        # the infeasible side is below the limit on an axis where accuracy grows upward
        lower_bad = dict(table.objectives).get(name, "maximize") == "maximize" or name.startswith("accuracy")
        span = (min(low, limit), limit) if lower_bad else (limit, max(high, limit))
        text = _constraint_text(table)
        if horizontal:
            ax.axhline(limit, ls="--", c="darkorange", lw=1.2, label=text)
            ax.axhspan(*span, color="darkorange", alpha=0.08, zorder=0)
            ax.set_ylim(min(low, limit - 0.02 * (high - low)), high)
        else:
            ax.axvline(limit, ls="--", c="darkorange", lw=1.2, label=text)
            ax.axvspan(*span, color="darkorange", alpha=0.08, zorder=0)
            ax.set_xlim(min(low, limit - 0.02 * (high - low)), high)


def write_report(
    study: optuna.Study,
    out_dir: Path,
    thresholds: dict[str, float] | None = None,
    table: StudyTable | None = None,
    spec: str | None = None,
) -> dict[str, Path]:
    """Write the four report files and records/ into `out_dir`; returns the files by name. `table`: the
    study's table when the caller already has it (`study_table(study, records_dir=out_dir / "records")`);
    `spec`: the spec's path, for the recommendation's commands (default: the placeholder SPEC)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data = study_data(study)
    if table is None:
        table = table_of(data, records_dir=out_dir / "records", thresholds=thresholds)
    if not table.rows:
        raise UserError(f"study {study.study_name}: no completed trial yet, nothing to report")
    export_records(data, [r.number for r in table.rows], out_dir / "records")
    renderers: dict[str, Callable[[StudyTable], str | bytes]] = {
        "pareto.csv": render_csv,
        "pareto.md": lambda t: render_markdown(t, spec),
        "pareto.html": lambda t: render_html(t, spec),
        "pareto.png": render_png,
    }
    written: dict[str, Path] = {}
    for name, render in renderers.items():
        path = out_dir / name
        write_atomic(path, render(table))
        written[name] = path
    return written


def study_hypervolume(study: optuna.Study) -> float | None:
    """Hypervolume of the feasible COMPLETE trials, the baseline as reference point (None: no baseline)."""
    return table_hypervolume(table_of(study_data(study)))


def pareto_trials(study: optuna.Study) -> list[TrialRecord]:
    """The Pareto front (Optuna's rule, replicates left out), ordered by trial number."""
    return front_trials(study_data(study))
