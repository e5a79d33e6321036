"""The recommendation section of the report, `tsq sweep status` and the W&B summary: the constraint, the
configuration tsq recommends and the rule that chose it (`tsq.report.recommend`), its knobs ready to use,
and what would make the choice more certain."""

from __future__ import annotations

from tsq.method.metrics import axis_label, format_estimate, format_value, interval_key
from tsq.report.recommend import FEASIBILITY_TEXT, SEPARATION_SE, fragment, trial_command
from tsq.report.table import Row, StudyTable

SPEC_PLACEHOLDER = "SPEC"  # the spec the study was launched with, where the caller does not know its path


def constraint_line(table: StudyTable) -> str:
    rec = table.recommendation
    drop = None if rec is None else rec.max_accuracy_drop
    if drop is None:
        return "constraint: none (study.constraint.max_accuracy_drop is not set): every trial is feasible"
    base = table.baseline.get("accuracy")
    of = "" if base is None else f" (baseline {format_value('accuracy', base)})"
    return (
        f"constraint: accuracy at most {100 * drop:.1f} pts below the baseline's{of}, i.e. Δ Acc ≥ "
        f"{-100 * drop:.1f} pts (study.constraint.max_accuracy_drop {drop:g})"
    )


def feasible_header(table: StudyTable) -> str:
    rec = table.recommendation
    drop = None if rec is None else rec.max_accuracy_drop
    return "feasible" if drop is None else f"feasible (Δ Acc ≥ {-100 * drop:.1f} pts)"


def feasible_cell(table: StudyTable, row: Row) -> str:
    rec = table.recommendation
    if rec is None or rec.max_accuracy_drop is None:
        return "no (stopped early)" if row.stopped else "yes"
    judged = rec.judged.get(row.number)
    return "" if judged is None else FEASIBILITY_TEXT[judged.feasible]


def _metric(row: Row, name: str) -> str:
    lo, hi = (row.metrics.get(interval_key(name, part)) for part in ("lo", "hi"))
    return format_estimate(name, row.metrics.get(name), lo, hi)


def _fresh(table: StudyTable, number: int, name: str) -> str:
    """The fresh seeds' mean of a metric beside the sweep's value, for a replicated trial."""
    for row in table.replicated:
        est = row.estimates.get(name)
        if row.of == number and row.split == "eval" and est is not None:
            fresh = format_estimate(name, est.mean, est.lo, est.hi)
            return f" as the sweep saw it, {fresh} over {row.n} fresh seeds"
    return ""


def _interval(delta: float | None, lo: float | None, hi: float | None) -> str:
    return format_estimate("accuracy_delta", delta, lo, hi)


def _noise_words(table: StudyTable) -> str:
    rec = table.recommendation
    if rec is not None and rec.seed_noise:
        return "evaluation and seed noise (seed SD pooled over the study's fresh-seed replicates)"
    return "evaluation noise only: no fresh-seed replicates yet, so seed noise is not in it"


def _knobs(row: Row) -> str:
    return ", ".join(
        f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(row.params.items())
    )


def recommendation_lines(table: StudyTable, spec: str | None = None) -> list[str]:
    """The section as markdown list items (and code lines), for pareto.md/html, `sweep status` and W&B."""
    rec = table.recommendation
    spec = spec or SPEC_PLACEHOLDER
    lines = [f"- {constraint_line(table)}"]
    if rec is None or rec.pick is None:
        why = "the study has no completed trial" if rec is None else rec.reason
        return [*lines, f"- tsq recommends no configuration: {why}."]
    pick = table.rows_by_number[rec.pick]
    name = rec.metric or ""
    label = axis_label(name, table.budget)
    judged = rec.judged[rec.pick]
    limit = -100 * (rec.max_accuracy_drop or 0.0)
    better = "lowest" if dict(table.objectives).get(name) == "minimize" else "highest"
    if rec.provisional:
        rule = (
            f"no trial's Δ Acc interval lies wholly above {limit:.1f} pts, so none is feasible with high "
            f"probability; of those feasible at their point value, the one with the {better} {label}"
        )
        head = f"**tsq recommends trial {pick.number}, provisionally**"
    else:
        rule = (
            "of the trials feasible with high probability (the whole 95% interval of Δ Acc above "
            f"{limit:.1f} pts: not worse than the baseline beyond the margin), the one with the {better} "
            f"{label}"
        )
        head = f"**tsq recommends trial {pick.number}**"
    lines += [
        f"- {head} ({_knobs(pick)}): {label} {_metric(pick, name)}{_fresh(table, pick.number, name)}"
        f", Δ Acc {_interval(judged.delta, judged.lo, judged.hi)}"
        + (f" (mean over {judged.seeds} fresh seeds)" if judged.seeds else ""),
        f"- rule: {rule}. Intervals judged here hold {_noise_words(table)}.",
    ]
    if rec.tied:
        names = ", ".join(f"trial {n}" for n in [rec.pick, *rec.tied])
        lines.append(
            f"- the noise cannot separate trial{'s' if len(rec.tied) > 1 else ''} "
            f"{', '.join(str(n) for n in rec.tied)} from it in {label} (gap within {SEPARATION_SE:g} SE of "
            f"the gap): {names} are equally good choices on this evidence; tsq names the first"
        )
    lines += [
        "- its knobs, as a spec fragment: `" + fragment(pick.params) + "`",
        f"- train it alone: `{trial_command(spec, pick.params)}`",
    ]
    lines += [f"- to be more certain: {step}" for step in _next_steps(table, spec)]
    return lines


def _next_steps(table: StudyTable, spec: str) -> list[str]:
    rec = table.recommendation
    assert rec is not None and rec.pick is not None
    named = [rec.pick, *rec.tied]
    by_p = sorted(table.rows, key=lambda r: -(r.p_front or 0.0))
    ranks = [i for i, r in enumerate(by_p) if r.number in named]
    top = max(ranks) + 1 if ranks else len(named)
    steps = []
    if not rec.seed_noise or any(rec.judged[n].seeds == 0 for n in named):
        steps.append(
            f"confirm on fresh seeds: `tsq sweep confirm {spec} --top {top} --replicates 3` ("
            + (
                f"the {top} trials of highest p_front, {_trials(named)} among them"
                if top > 1
                else "the trial of highest p_front"
            )
            + "); the report then judges feasibility with seed noise and by the fresh seeds' means"
        )
    unsure = [
        n for n, j in rec.judged.items()
        if j.feasible == "unsure" and n not in named and _more_compressed(table, n, rec.pick)
    ]  # fmt: skip
    if unsure and not rec.provisional:
        steps.append(
            f"trial{'s' if len(unsure) > 1 else ''} {', '.join(map(str, sorted(unsure)))} "
            f"{'are' if len(unsure) > 1 else 'is'} more compressed and feasible at the point value, but the "
            "interval crosses the limit: more eval problems (data.eval.n) or more fresh seeds "
            "(`tsq sweep confirm`) would narrow it"
        )
    steps.append(
        "check it on the held-out split the sweep never saw: "
        f"`tsq sweep confirm {spec} --top {top} --split test` (needs data.test in the spec)"
    )
    return steps


def _trials(numbers: list[int]) -> str:
    return ("trials " if len(numbers) > 1 else "trial ") + ", ".join(map(str, numbers))


def _more_compressed(table: StudyTable, number: int, than: int) -> bool:
    rec = table.recommendation
    assert rec is not None and rec.metric is not None
    rows = table.rows_by_number
    a, b = rows[number].metrics.get(rec.metric), rows[than].metrics.get(rec.metric)
    if a is None or b is None:
        return False
    return a < b if dict(table.objectives).get(rec.metric) == "minimize" else a > b
