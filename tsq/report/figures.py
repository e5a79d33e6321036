"""The figures of the Pareto report: the front with each trial's 95% intervals, the baseline, the recommended
trial and the constraint, drawn for pareto.png (matplotlib) and pareto.html (plotly), and the knobs'
parallel coordinates; from the report's statistics (`tsq.report.table.StudyTable`)."""

from __future__ import annotations

import io
from typing import Any

from tsq.method.metrics import axis_label, baseline_value, display_value, interval_key
from tsq.report.table import Row, StudyTable


def cell(value: Any, digits: int = 4) -> str:
    """A value as the report's tables and hover texts print it (4 significant digits by default)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


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
    params = ", ".join(f"{k}={cell(v)}" for k, v in row.params.items())
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


def front_figure(table: StudyTable) -> Any:
    """The front as plotly draws it for pareto.html: each trial with its intervals, the baseline, the
    recommended trial ringed and the constraint dashed."""
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
    return fig


def _constraint_text(table: StudyTable) -> str:
    drop = table.recommendation.max_accuracy_drop if table.recommendation else None
    return "" if drop is None else f"constraint: Δ Acc ≥ {-100 * drop:.1f} pts"


def knobs_figure(table: StudyTable) -> Any:
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
