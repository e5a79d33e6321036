"""The Pareto report of a study: pareto.csv, pareto.html (plotly, offline), pareto.md, pareto.png.

Rows come from the study's COMPLETE trials and the metrics the runner stored in their user attrs; the
Pareto flag is Optuna's own `study.best_trials` (feasible trials only when a constraint is set), so the report
and `tsq sweep best` always agree. Every file is written to a temporary name and renamed into place.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tsq.errors import UserError
from tsq.fileio import write_atomic

METRIC_COLUMNS = ("accuracy", "len_all", "len_correct", "auc", "token_reduction", "accuracy_delta")
# Metrics that are already relative to the baseline: the baseline's own value is 0 by definition.
RELATIVE_METRICS = ("token_reduction", "accuracy_delta")


@dataclass(frozen=True)
class Row:
    number: int
    params: dict[str, Any]
    metrics: dict[str, Any]
    pareto: bool
    feasible: bool


@dataclass(frozen=True)
class StudyTable:
    study_name: str
    param_names: list[str]
    rows: list[Row]
    baseline: dict[str, Any]
    objectives: list[tuple[str, str]]  # (metric, direction)


def study_table(study: optuna.Study) -> StudyTable:
    """The report's data: one Row per COMPLETE trial (ordered by number) and the study's baseline."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    best = {t.number for t in study.best_trials} if complete else set()
    param_names = sorted({name for t in complete for name in t.params})
    rows = [
        Row(
            number=t.number,
            params=dict(t.params),
            metrics={
                m: t.user_attrs.get(m) for m in (*METRIC_COLUMNS, "accuracy_delta_lo", "accuracy_delta_hi")
            },
            pareto=t.number in best,
            feasible=all(v <= 0 for v in t.constraints.values()),
        )
        for t in complete
    ]
    metrics = study.user_attrs.get("objectives") or []
    objectives = [(m, d.name.lower()) for m, d in zip(metrics, study.directions, strict=False)]
    return StudyTable(
        study.study_name, param_names, rows, dict(study.user_attrs.get("baseline") or {}), objectives
    )


def _loss(value: float, direction: str) -> float:
    return value if direction == "minimize" else -value


def baseline_value(baseline: dict[str, Any], metric: str) -> float | None:
    if metric in baseline and baseline[metric] is not None:
        return float(baseline[metric])
    return 0.0 if metric in RELATIVE_METRICS else None


def hypervolume(
    points: Sequence[Sequence[float]], reference: Sequence[float], directions: Sequence[str]
) -> float:
    """Hypervolume dominated by `points` and bounded by `reference` (e.g. the baseline), in the objectives'
    own units; points that do not beat the reference in every objective add nothing."""
    import numpy as np

    from tsq.compat.optuna import compute_hypervolume

    ref = np.array([_loss(r, d) for r, d in zip(reference, directions, strict=True)], dtype=float)
    losses = np.array(
        [[_loss(v, d) for v, d in zip(p, directions, strict=True)] for p in points], dtype=float
    )
    if losses.size == 0:
        return 0.0
    inside = losses[(losses <= ref).all(axis=1)]
    if inside.size == 0:
        return 0.0
    return compute_hypervolume(inside, ref)


def study_hypervolume(study: optuna.Study) -> float | None:
    """Hypervolume of the feasible COMPLETE trials, the baseline as reference point (None: no baseline)."""
    table = study_table(study)
    reference = [baseline_value(table.baseline, m) for m, _ in table.objectives]
    if not table.objectives or any(r is None for r in reference):
        return None
    points = [[float(r.metrics[m]) for m, _ in table.objectives] for r in table.rows if r.feasible]
    return hypervolume(
        points, [float(r) for r in reference if r is not None], [d for _, d in table.objectives]
    )


def _pct_change(value: float | None, base: float | None) -> str:
    if value is None or base is None or base == 0:
        return ""
    return f" ({(value - base) / base * 100:+.1f}%)"


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def render_csv(table: StudyTable) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["trial", *table.param_names, *METRIC_COLUMNS, "pareto"])
    for row in table.rows:
        writer.writerow(
            [row.number, *(row.params.get(p, "") for p in table.param_names)]
            + [_fmt(row.metrics.get(m), 8) for m in METRIC_COLUMNS]
            + [int(row.pareto)]
        )
    return buf.getvalue()


def render_markdown(table: StudyTable) -> str:
    """Paper-style table: the baseline row, then the Pareto trials by Len-A, with % change vs baseline."""
    base = table.baseline
    acc_b, lt_b, la_b, auc_b = (base.get(k) for k in ("accuracy", "len_correct", "len_all", "auc"))
    header = ["", *table.param_names, "Acc %", "Δ acc (95% CI, pts)", "Len-T", "Len-A", "AUC %"]
    lines = [
        f"# Pareto front of study `{table.study_name}`",
        "",
        "Len-T: mean tokens of correct responses. Len-A: mean tokens of all responses. "
        "Δ acc: accuracy minus the baseline's, with its 95% paired bootstrap interval.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]

    def pct(v: Any) -> str:
        return "" if v is None else f"{float(v) * 100:.1f}"

    def tokens(v: Any, b: Any) -> str:
        return "" if v is None else f"{float(v):.1f}{_pct_change(v, b)}"

    blanks = [""] * len(table.param_names)
    lines.append(
        "| " + " | ".join(["baseline", *blanks, pct(acc_b), "", _fmt(lt_b), _fmt(la_b), pct(auc_b)]) + " |"
    )
    front = sorted((r for r in table.rows if r.pareto), key=lambda r: r.metrics.get("len_all") or math.inf)
    for row in front:
        m = row.metrics
        delta = ""
        if m.get("accuracy_delta") is not None:
            delta = f"{m['accuracy_delta'] * 100:+.1f}"
            if m.get("accuracy_delta_lo") is not None and m.get("accuracy_delta_hi") is not None:
                delta += f" [{m['accuracy_delta_lo'] * 100:+.1f}, {m['accuracy_delta_hi'] * 100:+.1f}]"
        auc = pct(m.get("auc"))
        if auc and auc_b is not None:
            auc += f" ({(float(m['auc']) - float(auc_b)) * 100:+.1f})"
        cells = [
            f"trial {row.number}",
            *(_fmt(row.params.get(p)) for p in table.param_names),
            pct(m.get("accuracy")),
            delta,
            tokens(m.get("len_correct"), lt_b),
            tokens(m.get("len_all"), la_b),
            auc,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if not front:
        lines.append("")
        lines.append("No completed (feasible) trial yet.")
    return "\n".join(lines) + "\n"


def _axes(table: StudyTable) -> tuple[str, str]:
    """The two metrics to plot: the first two objectives, else accuracy vs Len-A."""
    metrics = [m for m, _ in table.objectives]
    return (metrics[1], metrics[0]) if len(metrics) >= 2 else ("len_all", "accuracy")


def _hover(row: Row) -> str:
    params = ", ".join(f"{k}={_fmt(v)}" for k, v in row.params.items())
    return f"trial {row.number}<br>{params}"


def render_html(table: StudyTable) -> str:
    import plotly.graph_objects as go

    x, y = _axes(table)
    fig = go.Figure()
    for label, keep, symbol in (("trials", False, "circle"), ("Pareto front", True, "diamond")):
        rows = [r for r in table.rows if r.pareto == keep]
        if keep:
            rows.sort(key=lambda r: r.metrics.get(x) or 0)
        fig.add_trace(
            go.Scatter(
                x=[r.metrics.get(x) for r in rows],
                y=[r.metrics.get(y) for r in rows],
                mode="lines+markers" if keep else "markers",
                name=label,
                marker={"symbol": symbol, "size": 11 if keep else 8},
                text=[_hover(r) for r in rows],
                hovertemplate="%{text}<br>" + f"{x}=%{{x}}<br>{y}=%{{y}}<extra></extra>",
            )
        )
    bx, by = baseline_value(table.baseline, x), baseline_value(table.baseline, y)
    if bx is not None and by is not None:
        fig.add_trace(
            go.Scatter(x=[bx], y=[by], mode="markers", name="baseline", marker={"symbol": "x", "size": 13})
        )
    fig.update_layout(title=f"Study {table.study_name}: {y} vs {x}", xaxis_title=x, yaxis_title=y)
    # include_plotlyjs=True inlines plotly.js: the page works offline, from a file, with no CDN.
    return fig.to_html(include_plotlyjs=True, full_html=True)


def render_png(table: StudyTable) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = _axes(table)
    fig, ax = plt.subplots(figsize=(7, 5), dpi=110)
    others = [r for r in table.rows if not r.pareto]
    front = sorted((r for r in table.rows if r.pareto), key=lambda r: r.metrics.get(x) or 0)
    ax.scatter([r.metrics[x] for r in others], [r.metrics[y] for r in others], c="tab:gray", label="trials")
    ax.plot(
        [r.metrics[x] for r in front], [r.metrics[y] for r in front], "D-", c="tab:red", label="Pareto front"
    )
    for r in front:
        ax.annotate(str(r.number), (r.metrics[x], r.metrics[y]), textcoords="offset points", xytext=(5, 5))
    bx, by = baseline_value(table.baseline, x), baseline_value(table.baseline, y)
    if bx is not None and by is not None:
        ax.scatter([bx], [by], marker="x", s=90, c="black", label="baseline")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(f"Study {table.study_name}")
    ax.grid(alpha=0.3)
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def write_report(study: optuna.Study, out_dir: Path) -> dict[str, Path]:
    """Write the four report files into `out_dir`; returns them by name."""
    table = study_table(study)
    if not table.rows:
        raise UserError(f"study {study.study_name}: no completed trial yet, nothing to report")
    out_dir.mkdir(parents=True, exist_ok=True)
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


def pareto_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Optuna's Pareto front (`study.best_trials`), ordered by trial number."""
    return sorted(study.best_trials, key=lambda t: t.number)
