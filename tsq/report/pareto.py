"""The Pareto report of a study: pareto.csv, pareto.html (plotly, offline), pareto.md, pareto.png, and the
per-response records of every trial and the baseline under records/ (so the report can be rebuilt elsewhere).

Every metric carries its 95% problem-bootstrap interval; every trial its `p_front`, the share of joint problem
resamples in which it is on the feasible front (`tsq.report.table`). Optuna's own front (`study.best_trials`)
is the `pareto` flag, so the report and `tsq sweep best` agree. Every file is written atomically. The
columns are the metrics' registry entries (`tsq.method.metrics.METRICS`, `report_metrics("pareto")`); the
plots are `tsq.report.figures`'.
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
from tsq.report.fidelity import FidelityCheck, fidelity_check
from tsq.report.figures import cell, front_figure, knobs_figure, render_png
from tsq.report.model_view import ModelView, model_view, model_view_lines
from tsq.report.sections import fidelity_lines, importance_markdown, spread_lines
from tsq.report.table import Row, StudyTable, front_trials, metric_columns, table_hypervolume, table_of


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
            + [cell(row.metrics.get(c), 8) for c in columns]
            + [int(row.pareto), cell(row.p_front, 4), row.front or ""]
        )
    return buf.getvalue()


def _report_metrics(table: StudyTable) -> list[str]:
    """The paper's columns (docs/method.md "Metrics"), then any objective the study adds."""
    paper = report_metrics("pareto")
    return [*paper, *(m for m, _ in table.objectives if m not in paper)]


def _ordered_rows(table: StudyTable) -> list[Row]:
    """Every trial, shortest first."""
    return sorted(table.rows, key=lambda r: r.metrics.get("len_all") or math.inf)


def render_markdown(
    table: StudyTable,
    spec: str | None = None,
    fidelity: FidelityCheck | None = None,
    model: ModelView | None = None,
) -> str:
    """What to train with, then the paper-style table of every trial against the baseline, with intervals,
    feasibility and p_front, then what the noise allows; with `fidelity` (`tsq sweep promote`), whether the
    answer holds at full fidelity; with `model` (a gp or botorch sampler), the sampler's view of the front."""
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
            *(cell(row.params.get(p)) for p in table.param_names),
            *(_estimate(row.metrics, m, decimals[m]) for m in names),
            feasible_cell(table, row),
            cell(row.p_front, 3),
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
    lines += fidelity_lines(fidelity) if fidelity is not None else []
    lines += model_view_lines(model) if model is not None else []
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


def render_html(
    table: StudyTable,
    spec: str | None = None,
    fidelity: FidelityCheck | None = None,
    model: ModelView | None = None,
) -> str:
    parts = [front_figure(table).to_html(include_plotlyjs=True, full_html=False)]  # inlined: works offline
    if table.rows and table.param_names:
        parts.append(knobs_figure(table).to_html(include_plotlyjs=False, full_html=False))
    text = render_markdown(table, spec, fidelity, model).splitlines()[1:]  # the title is the plot's
    split = text.index("## Every trial") if "## Every trial" in text else 0
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>tsq report: {html.escape(table.study_name)}</title></head><body>"
        f"<h2>Study {html.escape(table.study_name)}</h2>{_markdown_as_html(text[:split])}"
        + "\n".join(parts)
        + f"{_markdown_as_html(text[split:])}</body></html>"
    )


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
    # promoted runs (`tsq sweep promote`) and their baseline travel with the report too: its front check
    # reads them
    promoted = data.promoted
    also = {"baseline-promoted.jsonl": promoted[0].baseline_records} if promoted else {}
    numbers = [r.number for r in table.rows] + [t.number for t in promoted]
    export_records(data, numbers, out_dir / "records", also)
    fidelity = fidelity_check(data, table, out_dir / "records")
    model = model_view(data)
    renderers: dict[str, Callable[[StudyTable], str | bytes]] = {
        "pareto.csv": render_csv,
        "pareto.md": lambda t: render_markdown(t, spec, fidelity, model),
        "pareto.html": lambda t: render_html(t, spec, fidelity, model),
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
