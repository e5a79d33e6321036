"""The Pareto report of a study: pareto.csv, pareto.html (plotly, offline), pareto.md, pareto.png, and the
per-response records of every trial and the baseline under records/ (so the report can be rebuilt elsewhere).

Every metric carries its 95% problem-bootstrap interval; every trial its `p_front`, the share of joint problem
resamples in which it is on the feasible front (`tsq.report.table`). Optuna's own front (`study.best_trials`)
is the `pareto` flag, so the report and `tsq sweep best` agree. Every file is written atomically.
"""

from __future__ import annotations

import csv
import html
import io
import itertools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from tsq.errors import UserError
from tsq.fileio import write_atomic
from tsq.metrics import axis_label, baseline_value, display_value, format_estimate, format_value, metric
from tsq.report.importance import importance_markdown
from tsq.report.table import (
    Row,
    StudyTable,
    front_trials,
    metric_columns,
    records_path,
    study_table,
    table_hypervolume,
)
from tsq.stats import FRONT_CLASS_LABELS

# The paper's columns (docs/method.md "Metrics"), then any objective the study adds
PAPER_COLUMNS = ("accuracy", "accuracy_delta", "len_correct", "len_all", "token_reduction", "auc")


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _estimate(row_metrics: dict[str, Any], name: str) -> str:
    return format_estimate(
        name, row_metrics.get(name), row_metrics.get(f"{name}_lo"), row_metrics.get(f"{name}_hi")
    )


def render_csv(table: StudyTable) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    columns = [c for m in metric_columns() for c in (m, f"{m}_lo", f"{m}_hi")]
    writer.writerow(["trial", *table.param_names, *columns, "pareto", "p_front", "front"])
    for row in table.rows:
        writer.writerow(
            [row.number, *(row.params.get(p, "") for p in table.param_names)]
            + [_fmt(row.metrics.get(c), 8) for c in columns]
            + [int(row.pareto), _fmt(row.p_front, 4), row.front or ""]
        )
    return buf.getvalue()


def _report_metrics(table: StudyTable) -> list[str]:
    return [*PAPER_COLUMNS, *(m for m, _ in table.objectives if m not in PAPER_COLUMNS)]


def _shown_rows(table: StudyTable) -> list[Row]:
    """Optuna's front and every trial the noise cannot separate from it, shortest first."""
    shown = [r for r in table.rows if r.pareto or r.front in ("clear", "indistinguishable")]
    return sorted(shown, key=lambda r: r.metrics.get("len_all") or math.inf)


def _ratio(gap: float, se: float) -> float:
    return abs(gap) / se if se > 0 else math.inf


def _span(values: list[float], digits: int) -> str:
    low, high = (f"{v:.{digits}f}".replace("inf", "∞") for v in (min(values), max(values)))
    return low if low == high else f"{low}–{high}"


def spread_lines(table: StudyTable) -> list[str]:
    """Per objective, whether Optuna's front is spread out in it: its largest set of trials pairwise more than
    the threshold of SEs apart (`tsq.stats.front_spread`), or, when no two are, its widest gap."""
    lines = []
    for spread in table.spreads:
        label = axis_label(spread.metric, table.budget)
        if len(spread.separated) >= 2:
            pairs = [spread.gaps[pair] for pair in itertools.combinations(spread.separated, 2)]
            sizes = [display_value(spread.metric, abs(gap)) or 0.0 for gap, _ in pairs]
            members = ", ".join(str(n) for n in sorted(spread.separated, key=spread.values.__getitem__))
            lines.append(
                f"{label}: trials {members} lie pairwise > {spread.threshold:g} SE apart "
                f"(gaps {_span(sizes, 1)}, {_span([_ratio(*pair) for pair in pairs], 1)} SE)"
            )
        else:
            (a, b), (gap, se) = max(spread.gaps.items(), key=lambda item: _ratio(*item[1]))
            lines.append(
                f"{label}: no two front trials lie > {spread.threshold:g} SE apart (widest gap: trials {a} "
                f"and {b}, {display_value(spread.metric, abs(gap)) or 0.0:.1f}, {_ratio(gap, se):.1f} SE), "
                "so within noise the front is one point in it"
            )
    return lines


def render_markdown(table: StudyTable) -> str:
    """Paper-style table against the baseline, with intervals and p_front, then what the noise allows."""
    names = _report_metrics(table)
    budget = table.budget
    header = ["", *table.param_names, *(axis_label(m, budget) for m in names), "p_front"]
    lines = [
        f"# Pareto front of study `{table.study_name}`",
        "",
        "Each value has its 95% interval in brackets, from a bootstrap over evaluation problems "
        "(deltas paired with the baseline on the same problems). `p_front` is the share of joint "
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
    base_cells = [_estimate(table.baseline, m) if not metric(m).relative else "" for m in names]
    lines.append("| " + " | ".join(["baseline", *blanks, *base_cells, ""]) + " |")
    shown = _shown_rows(table)
    for row in shown:
        cells = [
            f"trial {row.number}" + (" ★" if row.pareto else ""),
            *(_fmt(row.params.get(p)) for p in table.param_names),
            *(_estimate(row.metrics, m) for m in names),
            _fmt(row.p_front, 3),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if not shown:
        lines += ["", "No completed (feasible) trial yet."]
    lines += ["", "★: on Optuna's Pareto front (`tsq sweep best`)."]
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
        lo = display_value(name, r.metrics.get(f"{name}_lo"))
        hi = display_value(name, r.metrics.get(f"{name}_hi"))
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
    lo = display_value(name, table.baseline.get(f"{name}_lo"))
    hi = display_value(name, table.baseline.get(f"{name}_hi"))
    return (
        value,
        (value - lo if value is not None and lo is not None else 0.0),
        (hi - value if value is not None and hi is not None else 0.0),
    )


def render_html(table: StudyTable) -> str:
    import plotly.graph_objects as go

    x, y = _axes(table)
    xl, yl = axis_label(x, table.budget), axis_label(y, table.budget)
    fig = go.Figure()
    for label, keep, symbol in (("trials", False, "circle"), ("Pareto front", True, "diamond")):
        rows = sorted((r for r in table.rows if r.pareto == keep), key=lambda r: r.metrics.get(x) or 0)
        xs, xm, xp = _errors(rows, x)
        ys, ym, yp = _errors(rows, y)
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                error_x={"type": "data", "array": xp, "arrayminus": xm, "thickness": 1},
                error_y={"type": "data", "array": yp, "arrayminus": ym, "thickness": 1},
                mode="lines+markers" if keep else "markers",
                name=label,
                marker={"symbol": symbol, "size": 11 if keep else 8},
                text=[_hover(r) for r in rows],
                hovertemplate="%{text}<br>" + f"{xl}=%{{x}}<br>{yl}=%{{y}}<extra></extra>",
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
                marker={"symbol": "x", "size": 13},
            )
        )
    fig.update_layout(
        title=f"Study {table.study_name}: {yl} against {xl} (95% intervals)", xaxis_title=xl, yaxis_title=yl
    )
    parts = [fig.to_html(include_plotlyjs=True, full_html=False)]  # inlined plotly.js: works offline
    if table.rows and table.param_names:
        parts.append(_knobs_figure(table).to_html(include_plotlyjs=False, full_html=False))
    body = "\n".join(parts)
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>tsq report: {html.escape(table.study_name)}</title></head><body>"
        f"{body}{_markdown_as_html(table)}</body></html>"
    )


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


def _markdown_as_html(table: StudyTable) -> str:
    """pareto.md's tables, lists and notes as plain HTML (no markdown renderer needed offline)."""
    out: list[str] = []
    rows: list[list[str]] = []

    def flush() -> None:
        if rows:
            head = "".join(f"<th>{c}</th>" for c in rows[0])
            body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows[1:])
            out.append(f"<table border='1' cellpadding='4' style='{_TABLE_STYLE}'>{head}{body}</table>")
            rows.clear()

    for line in render_markdown(table).splitlines()[1:]:  # the title is the plot's
        if line.startswith("|"):
            if "---" not in line:
                rows.append([html.escape(c.strip()) for c in line.strip("|").split("|")])
            continue
        flush()
        if line.startswith("## "):
            out.append(f"<h3>{html.escape(line[3:])}</h3>")
        elif line.startswith(("- ", "> ")):
            out.append(f"<p>{html.escape(line[2:])}</p>")
        elif line.strip():
            out.append(f"<p style='font-family:sans-serif;font-size:13px'>{html.escape(line)}</p>")
    flush()
    return "\n".join(out)


_TABLE_STYLE = "border-collapse:collapse;font-family:sans-serif;font-size:13px"


# Where a point's label may go, in points from it (right above, right below, left above, left below).
_LABEL_SPOTS = ((6, 4, "left"), (6, -11, "left"), (-6, 4, "right"), (-6, -11, "right"))


def label_points(ax: Any, points: list[tuple[str, float, float]]) -> list[Any]:
    """Annotate each (text, x, y) at the first spot whose box overlaps no label placed before it (front points
    close in both objectives otherwise overprint each other's labels); the last spot when none is free."""
    ax.autoscale_view()  # matplotlib defers autoscaling to the first draw: measure on the final limits
    renderer = ax.figure.canvas.get_renderer()
    placed: list[Any] = []
    boxes: list[Any] = []
    for text, xv, yv in points:
        for i, (dx, dy, ha) in enumerate(_LABEL_SPOTS):
            label = ax.annotate(
                text, (xv, yv), textcoords="offset points", xytext=(dx, dy), fontsize=8, ha=ha
            )
            box = label.get_window_extent(renderer)
            if i == len(_LABEL_SPOTS) - 1 or not any(box.overlaps(b) for b in boxes):
                placed.append(label)
                boxes.append(box)
                break
            label.remove()
    return placed


def render_png(table: StudyTable) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = _axes(table)
    fig, ax = plt.subplots(figsize=(7.5, 5.2), dpi=110)
    front: list[tuple[str, float, float]] = []
    for rows, style, colour, label in (
        ([r for r in table.rows if not r.pareto], "o", "tab:gray", "trials"),
        (sorted((r for r in table.rows if r.pareto), key=lambda r: r.metrics.get(x) or 0), "D-", "tab:red",
         "Pareto front"),
    ):  # fmt: skip
        if not rows:
            continue
        xs, xm, xp = _errors(rows, x)
        ys, ym, yp = _errors(rows, y)
        ax.errorbar(xs, ys, xerr=[xm, xp], yerr=[ym, yp], fmt=style, c=colour, label=label, capsize=2, lw=1)
        if colour == "tab:red":
            front = [
                (str(r.number) if r.p_front is None else f"{r.number} (p={r.p_front:.2f})", xv, yv)
                for r, xv, yv in zip(rows, xs, ys, strict=True)
            ]
    (bx, bxm, bxp), (by, bym, byp) = _baseline_point(table, x), _baseline_point(table, y)
    if bx is not None and by is not None:
        ax.errorbar([bx], [by], xerr=[[bxm], [bxp]], yerr=[[bym], [byp]], fmt="x", ms=9, c="black",
                    label="baseline", capsize=2)  # fmt: skip
    label_points(ax, front)  # last: every point is plotted, so the axes limits are final
    ax.set_xlabel(axis_label(x, table.budget))
    ax.set_ylabel(axis_label(y, table.budget))
    ax.set_title(f"Study {table.study_name} (bars: 95% intervals over problems)")
    ax.grid(alpha=0.3)
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _export_records(study: optuna.Study, table: StudyTable, folder: Path) -> None:
    """Copy each trial's and the baseline's per-response records into `folder` (a report rebuilt elsewhere
    finds them there), and remove trial files of trials the report does not hold."""
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    wanted = {f"trial-{r.number}.jsonl": trials[r.number].user_attrs.get("records") for r in table.rows}
    if table.rows:
        wanted["baseline.jsonl"] = trials[table.rows[0].number].user_attrs.get("baseline_records")
    for name, attr in wanted.items():
        source = records_path(attr, None, name)
        if source is not None and source.resolve() != (folder / name).resolve():
            folder.mkdir(parents=True, exist_ok=True)
            write_atomic(folder / name, source.read_bytes())
        elif source is None and (folder / name).is_file():
            continue  # already exported by an earlier run of the report
    # a report rewritten into the same folder for a shorter study (one re-run under the same name) would
    # otherwise keep the longer run's trial files beside the new ones
    for stale in folder.glob("trial-*.jsonl"):
        if stale.name not in wanted:
            stale.unlink()


def write_report(
    study: optuna.Study,
    out_dir: Path,
    thresholds: dict[str, float] | None = None,
    table: StudyTable | None = None,
) -> dict[str, Path]:
    """Write the four report files and records/ into `out_dir`; returns the files by name. `table`: the
    study's table when the caller already has it (`study_table(study, records_dir=out_dir / "records")`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if table is None:
        table = study_table(study, records_dir=out_dir / "records", thresholds=thresholds)
    if not table.rows:
        raise UserError(f"study {study.study_name}: no completed trial yet, nothing to report")
    _export_records(study, table, out_dir / "records")
    renderers: dict[str, Callable[[StudyTable], str | bytes]] = {
        "pareto.csv": render_csv,
        "pareto.md": render_markdown,
        "pareto.html": render_html,
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
    return table_hypervolume(study_table(study))


def pareto_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The Pareto front (Optuna's rule, replicates left out), ordered by trial number."""
    return front_trials(study)
