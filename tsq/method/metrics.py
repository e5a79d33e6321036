"""Evaluation metrics: the one registry of every metric a trial reports (`METRICS`), and the math behind it.

Definitions (docs/method.md, "Metrics"), over the graded responses of the eval split:
- accuracy: the share of correct responses (a truncated response is never correct).
- Len-A (`len_all`): mean generated tokens per response, eos included; Len-T (`len_correct`): the same over
  correct responses only (undefined when none is correct).
- AUC@B (`auc`): area under accuracy(b) for b in [0, B], normalised by B (`budget_auc`).
- `steps_per_response`, `tokens_per_step`: THINKING steps only (`thinking_steps`). For a response with a
  `</think>`, its steps are the blank-line chunks of the text before the last `</think>`; without one, of
  the whole response. The answer after `</think>` is not a step. `tokens_per_step` is all generated tokens
  over all thinking steps (a response's token count is not split into thinking and answer).
- relative metrics compare a trial with the baseline on the same problems: `accuracy_delta` and
  `auc_delta` (new − base), `token_reduction` (1 − Len-A / baseline Len-A) and `len_correct_reduction` (the
  same for Len-T). The baseline's own value of a relative metric is 0 by definition.

Every absolute metric is a ratio of two sums over responses (`SUM_FIELDS`). Sums are kept per problem
(`ProblemSums`), so a bootstrap resample of problems is a weight matrix W (resamples × problems) and a
metric's resampled values are (W @ numerator) / (W @ denominator), vectorised (`tsq.method.stats`). Adding a
metric is one entry in `METRICS` (plus a sum field if it needs a new one); its `reports` say which report
tables show it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from tsq.data.traces import THINK_CLOSE, THINK_OPEN, Response, split_steps

Direction = Literal["maximize", "minimize"]
Format = Literal["percent", "points", "signed_percent", "tokens", "ratio", "signed_ratio", "steps"]
# The report tables a metric can be shown in (`Metric.reports`): "pareto" pareto.md's table of every trial;
# "replicates" the metrics `sweep confirm`'s replicates are summarised in (pareto.md, p_front's seed noise);
# `report effects`' "arms" table, "contrasts" and by-depth "levels"
Report = Literal["pareto", "replicates", "arms", "contrasts", "levels"]
IntervalPart = Literal["lo", "hi", "se"]  # a metric's 95% interval ends and its bootstrap SE

# Per-response quantities whose sums make every absolute metric. `auc` is a correct response's
# max(0, 1 − ℓ/B); `correct_tokens` is ℓ of correct responses only.
SUM_FIELDS: tuple[str, ...] = (
    "responses",
    "correct",
    "tokens",
    "correct_tokens",
    "auc",
    "steps",
    "truncated",
)
_COLUMN = {name: i for i, name in enumerate(SUM_FIELDS)}


@dataclass(frozen=True)
class Metric:
    """One metric: how to name, print and compute it.

    Absolute metrics are `numerator` / `denominator` (both `SUM_FIELDS`). Relative metrics compare the
    absolute metric `of` between a trial and the baseline: `change` "delta" is new − base, "reduction" is
    1 − new/base.
    `objective`: may be a study objective (every metric but bookkeeping ones such as `truncated`).
    `reports`: the report tables that show it (`Report`), each with the metric's position among its columns.
    """

    name: str
    label: str  # readable axis / column name
    direction: Direction  # the natural direction when it is an objective
    format: Format
    description: str
    relative: bool = False
    numerator: str | None = None
    denominator: str | None = None
    of: str | None = None
    change: Literal["delta", "reduction"] | None = None
    objective: bool = True
    reports: Mapping[Report, int] = field(default_factory=dict)  # report table -> the metric's column in it

    def __post_init__(self) -> None:
        complete = (
            self.of is not None and self.change is not None
            if self.relative
            else self.numerator in _COLUMN and self.denominator in _COLUMN
        )
        if not complete:
            raise ValueError(f"metric {self.name}: an absolute metric needs numerator and denominator sum "
                             "fields, a relative one needs `of` and `change`")  # fmt: skip

    @property
    def scale(self) -> float:
        """Factor from stored value to displayed value (fractions are shown in %, or percentage points)."""
        return 100.0 if self.format in ("percent", "points", "signed_percent") else 1.0


def _ratio(name: str, label: str, direction: Direction, fmt: Format, ratio: str, description: str,
           objective: bool = True, reports: Mapping[Report, int] | None = None) -> Metric:  # fmt: skip
    numerator, denominator = ratio.split("/")
    return Metric(name, label, direction, fmt, description, numerator=numerator, denominator=denominator,
                  objective=objective, reports=reports or {})  # fmt: skip


def _vs_baseline(name: str, label: str, fmt: Format, of: str, change: Literal["delta", "reduction"],
                 description: str, reports: Mapping[Report, int] | None = None) -> Metric:  # fmt: skip
    return Metric(name, label, "maximize", fmt, description, relative=True, of=of, change=change,
                  reports=reports or {})  # fmt: skip


# fmt: off
METRICS: dict[str, Metric] = {m.name: m for m in (
    _ratio("accuracy", "Acc (%)", "maximize", "percent", "correct/responses", "share of correct responses",
           reports={"pareto": 0, "replicates": 0, "arms": 0, "contrasts": 0, "levels": 0}),
    _ratio("len_all", "Len-A (tokens)", "minimize", "tokens", "tokens/responses", "mean tokens per response",
           reports={"pareto": 3, "replicates": 2, "arms": 1, "contrasts": 1, "levels": 1}),
    _ratio("len_correct", "Len-T (tokens)", "minimize", "tokens", "correct_tokens/correct",
           "mean tokens per correct response", reports={"pareto": 2}),
    _ratio("auc", "AUC@B", "maximize", "ratio", "auc/responses", "area under budgeted accuracy, over B",
           reports={"pareto": 5, "replicates": 4}),
    _ratio("steps_per_response", "Thinking steps", "minimize", "steps", "steps/responses",
           "mean thinking steps per response"),
    _ratio("tokens_per_step", "tokens/step", "minimize", "tokens", "tokens/steps",
           "generated tokens per thinking step", reports={"arms": 2, "contrasts": 2}),
    _ratio("truncated", "Truncated (%)", "minimize", "percent", "truncated/responses",
           "share of responses cut at max_new_tokens", objective=False),
    _vs_baseline("accuracy_delta", "Δ Acc (pts)", "points", "accuracy", "delta",
                 "accuracy − baseline accuracy", reports={"pareto": 1, "replicates": 1, "arms": 4}),
    _vs_baseline("token_reduction", "Len-A reduction (%)", "signed_percent", "len_all", "reduction",
                 "1 − Len-A / baseline Len-A", reports={"pareto": 4, "replicates": 3, "arms": 3}),
    _vs_baseline("len_correct_reduction", "Len-T reduction (%)", "signed_percent", "len_correct", "reduction",
                 "1 − Len-T / baseline Len-T"),
    _vs_baseline("auc_delta", "Δ AUC", "signed_ratio", "auc", "delta", "AUC − baseline AUC"),
)}
# fmt: on
# Older names still emitted by `tsq.engines.evaluate.compare`, so stored trials and callers keep working.
METRIC_ALIASES: dict[str, str] = {"len_all_reduction": "token_reduction"}


def metric(name: str) -> Metric:
    """The registry entry of `name` (aliases resolved); KeyError naming the known metrics otherwise."""
    found = METRICS.get(METRIC_ALIASES.get(name, name))
    if found is None:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
    return found


def objective_metric_names() -> tuple[str, ...]:
    return tuple(n for n, m in METRICS.items() if m.objective)


def report_metrics(report: Report) -> tuple[str, ...]:
    """The metrics a report table shows, in its column order (`Metric.reports`)."""
    shown = [m for m in METRICS.values() if report in m.reports]
    return tuple(m.name for m in sorted(shown, key=lambda m: m.reports[report]))


def interval_key(name: str, part: IntervalPart) -> str:
    """Where a metric's interval end or SE sits beside its value in a flat mapping (a trial's metrics as
    the evaluation returns them and the study stores them, a CSV row): `accuracy_lo`."""
    return f"{name}_{part}"


def absolute_metric_names() -> tuple[str, ...]:
    return tuple(n for n, m in METRICS.items() if not m.relative)


def relative_metric_names() -> tuple[str, ...]:
    return tuple(n for n, m in METRICS.items() if m.relative)


def axis_label(name: str, budget: int | None = None) -> str:
    """Readable name for axes and columns; AUC@B gets the budget when it is known."""
    label = metric(name).label
    return label.replace("@B", f"@{budget}") if budget is not None else label


def display_value(name: str, value: float | None) -> float | None:
    """The value in display units (fractions → % or points), e.g. for plot axes labelled `axis_label`."""
    return None if value is None else value * metric(name).scale


_DECIMALS: dict[str, int] = {"percent": 1, "signed_percent": 1, "points": 1, "ratio": 3, "signed_ratio": 3,
                             "steps": 2, "tokens": 1}  # fmt: skip


def format_value(name: str, value: float | None, decimals: int | None = None) -> str:
    """The value as a table prints it: `accuracy` 0.612 → "61.2%", `accuracy_delta` −0.01 → "-1.0 pts".
    `decimals`: more than the format's own (`distinct_decimals`)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    fmt = metric(name).format
    d = _DECIMALS[fmt] if decimals is None else decimals
    if fmt == "percent":
        return f"{100 * value:.{d}f}%"
    if fmt == "signed_percent":
        return f"{100 * value:+.{d}f}%"
    if fmt == "points":
        return f"{100 * value:+.{d}f} pts"
    if fmt.startswith("signed"):
        return f"{value:+.{d}f}"
    return f"{value:.{d}f}"  # tokens, steps, ratio


def distinct_decimals(name: str, values: Iterable[float | None], most: int = 4) -> int:
    """The fewest decimals (the format's own at least, `most` at most) at which the distinct values print
    distinct: two trials 8.62 and 8.57 tokens per step both read "8.6" at the format's one decimal."""
    finite = {float(v) for v in values if v is not None and math.isfinite(v)}
    d = _DECIMALS[metric(name).format]
    while d < most and len({format_value(name, v, d) for v in finite}) < len(finite):
        d += 1
    return d


def format_estimate(
    name: str, value: float | None, lo: float | None, hi: float | None, decimals: int | None = None
) -> str:
    """Value and 95% interval: "61.2% [58.0%, 64.1%]"; just the value when there is no interval. A share
    (a "percent" metric) cannot leave [0%, 100%], so a t interval that would is cut at the bound."""
    if lo is None or hi is None:
        return format_value(name, value, decimals)
    if metric(name).format == "percent":
        lo, hi = max(lo, 0.0), min(hi, 1.0)
    parts = (format_value(name, v, decimals) for v in (value, lo, hi))
    return "{} [{}, {}]".format(*parts)


def baseline_value(name: str, baseline: Mapping[str, Any]) -> float | None:
    """The baseline's value of a metric: its own summary value, or 0 for a relative metric."""
    m = metric(name)
    if m.relative:
        return 0.0
    value = baseline.get(m.name)
    return None if value is None else float(value)


# -- per-response quantities ------------------------------------------------------------------------------


def thinking_steps(text: str) -> list[str]:
    """The thinking steps of a response: blank-line chunks before the last `</think>`, else of all of it.

    A leading `<think>` tag is not part of the first step. R1-style completions whose prompt opened the think
    block have a `</think>` but no `<think>`; a completion whose thinking never closed is all thinking.
    """
    close_at = text.rfind(THINK_CLOSE)
    thinking = text[:close_at] if close_at >= 0 else text
    open_at = thinking.find(THINK_OPEN)
    if open_at >= 0:
        thinking = thinking[open_at + len(THINK_OPEN) :]
    return split_steps(thinking)


# The columns of a per-response record (`response_record`; `tsq.engines.evaluate.EvalResult.records`).
RECORD_FIELDS: tuple[str, ...] = (
    "problem_id",
    "sample",
    "n_tokens",
    "correct",
    "finish_reason",
    "truncated",
    "difficulty",
    "steps",
)


def response_record(
    problem_id: str, sample: int, response: Response, difficulty: int | None
) -> dict[str, Any]:
    """One row of the per-response table: everything the metrics need, without the text."""
    return {
        "problem_id": problem_id,
        "sample": sample,
        "n_tokens": response.n_tokens,
        "correct": response.correct,
        "finish_reason": response.finish_reason,
        "truncated": response.finish_reason == "length",
        "difficulty": difficulty,
        "steps": len(thinking_steps(response.text)),
    }


def _record_sums(record: Mapping[str, Any], budget: int) -> list[float]:
    ell, ok = int(record["n_tokens"]), bool(record["correct"])
    values = {
        "responses": 1.0,
        "correct": float(ok),
        "tokens": float(ell),
        "correct_tokens": float(ell) if ok else 0.0,
        "auc": max(0.0, 1.0 - ell / budget) if ok else 0.0,
        "steps": float(record["steps"]),
        "truncated": float(bool(record["truncated"])),
    }
    return [values[f] for f in SUM_FIELDS]


@dataclass(frozen=True)
class ProblemSums:
    """Per-problem sums of `SUM_FIELDS`: `sums[i, j]` is field j summed over `problem_ids[i]`'s responses."""

    problem_ids: tuple[str, ...]  # sorted, so two results on the same problems line up row by row
    sums: np.ndarray  # shape (problems, len(SUM_FIELDS))
    budget: int

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]], budget: int) -> ProblemSums:
        if budget <= 0:
            raise ValueError(f"budget must be positive, got {budget}")
        by_problem: dict[str, np.ndarray] = {}
        for rec in records:
            row = np.asarray(_record_sums(rec, budget))
            pid = str(rec["problem_id"])
            by_problem[pid] = by_problem[pid] + row if pid in by_problem else row
        if not by_problem:
            raise ValueError("ProblemSums of no responses")
        ids = tuple(sorted(by_problem))
        return cls(ids, np.stack([by_problem[p] for p in ids]), budget)

    @classmethod
    def from_responses(
        cls, responses_by_problem: Mapping[str, Sequence[Response]], budget: int
    ) -> ProblemSums:
        records = (
            response_record(pid, j, r, None)
            for pid, rs in responses_by_problem.items()
            for j, r in enumerate(rs)
        )
        return cls.from_records(records, budget)

    def total(self) -> np.ndarray:
        return self.sums.sum(axis=0)

    def select(self, problem_ids: Sequence[str]) -> ProblemSums:
        """These problems' rows, in this order (KeyError if one is missing)."""
        index = {p: i for i, p in enumerate(self.problem_ids)}
        return ProblemSums(tuple(problem_ids), self.sums[[index[p] for p in problem_ids]], self.budget)


# -- metric values from sums (vectorised) ------------------------------------------------------------------


def absolute_values(sums: np.ndarray) -> dict[str, np.ndarray]:
    """Every absolute metric from summed fields, shape (..., len(SUM_FIELDS)) → (...); NaN where undefined."""
    out: dict[str, np.ndarray] = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        for name, m in METRICS.items():
            if m.relative:
                continue
            num, den = sums[..., _COLUMN[m.numerator]], sums[..., _COLUMN[m.denominator]]  # type: ignore[index]
            out[name] = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return out


def relative_values(new: Mapping[str, np.ndarray], base: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every relative metric from a trial's and the baseline's absolute values (same resamples: paired)."""
    out: dict[str, np.ndarray] = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        for name, m in METRICS.items():
            if not m.relative:
                continue
            n, b = np.asarray(new[m.of], dtype=float), np.asarray(base[m.of], dtype=float)  # type: ignore[index]
            if m.change == "delta":
                out[name] = n - b
            else:
                out[name] = np.where(b != 0, 1.0 - n / np.where(b != 0, b, 1.0), np.nan)
    return out


def _scalar(value: np.ndarray) -> float | None:
    v = float(value)
    return None if math.isnan(v) else v


def metric_values(sums: ProblemSums, base: ProblemSums | None = None) -> dict[str, float | None]:
    """Point values of the absolute metrics, plus the relative ones given a baseline (None: undefined).

    Relative metrics use each result's own totals, so they equal the difference of the reported summaries.
    """
    new_abs = absolute_values(sums.total())
    out = {name: _scalar(v) for name, v in new_abs.items()}
    if base is not None:
        rel = relative_values(new_abs, absolute_values(base.total()))
        out.update({name: _scalar(v) for name, v in rel.items()})
    return out


# -- pure helpers kept from before -------------------------------------------------------------------------


def budget_auc(lengths: Sequence[int], correct: Sequence[bool], budget: int) -> float:
    """Area under accuracy(b) for b in [0, B], normalised by B.

    accuracy(b) counts a response as correct when it is correct and its length ℓ ≤ b (a response of
    length exactly b is within budget b), so each correct response contributes max(0, 1 − ℓ/B):
    AUC = mean over responses of correct_i · max(0, 1 − ℓ_i / B).
    """
    if len(lengths) != len(correct):
        raise ValueError(f"{len(lengths)} lengths but {len(correct)} correctness flags")
    if not lengths:
        raise ValueError("budget_auc of no responses")
    if budget <= 0:
        raise ValueError(f"budget must be positive, got {budget}")
    return sum(max(0.0, 1.0 - ell / budget) for ell, ok in zip(lengths, correct, strict=True) if ok) / len(
        lengths
    )


def coefficient_of_variation(values: Sequence[float]) -> float:
    """Population standard deviation over mean (0 for constant values)."""
    if not values:
        raise ValueError("coefficient_of_variation of no values")
    mean = sum(values) / len(values)
    if mean == 0:
        return 0.0
    return math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)) / mean


def budget_curve(
    lengths: Sequence[int], correct: Sequence[bool], budget: int, points: int = 33
) -> list[tuple[int, float]]:
    """accuracy(b) at `points` evenly spaced budgets b in [0, B]: the curve whose area `budget_auc` is."""
    if len(lengths) != len(correct) or not lengths:
        raise ValueError("budget_curve needs one correctness flag per length, and at least one response")
    budgets = sorted({round(budget * i / (points - 1)) for i in range(points)})
    n = len(lengths)
    return [
        (b, sum(1 for ell, ok in zip(lengths, correct, strict=True) if ok and ell <= b) / n) for b in budgets
    ]


# -- summaries ---------------------------------------------------------------------------------------------


def summarize_responses(responses: Sequence[Response], budget: int) -> dict[str, float | int | None]:
    """Every absolute metric of `METRICS` over one group of responses, plus `n_responses` and `len_cv`.

    None marks an undefined metric (Len-T with no correct response, tokens/step with no step).
    """
    if not responses:
        raise ValueError("summarize of no responses")
    sums = ProblemSums.from_responses({"all": responses}, budget)
    return {
        "n_responses": len(responses),
        **metric_values(sums),
        "len_cv": coefficient_of_variation([r.n_tokens for r in responses]),
    }


def summarize(
    responses_by_problem: Mapping[str, Sequence[Response]],
    difficulty_by_problem: Mapping[str, int | None],
    budget: int,
) -> dict:
    """Overall metrics plus `by_difficulty` (keys are difficulties as strings, "none" when unknown)."""
    everything = [r for rs in responses_by_problem.values() for r in rs]
    groups: dict[str, list[Response]] = {}
    for pid, rs in responses_by_problem.items():
        level = difficulty_by_problem.get(pid)
        groups.setdefault("none" if level is None else str(level), []).extend(rs)
    summary = summarize_responses(everything, budget)
    summary["n_problems"] = len(responses_by_problem)
    summary["budget"] = budget
    summary["by_difficulty"] = {
        level: summarize_responses(rs, budget) for level, rs in sorted(groups.items(), key=_level_order)
    }
    return summary


def _level_order(item: tuple[str, list[Response]]) -> tuple[int, int | str]:
    level = item[0]
    return (0, int(level)) if level.lstrip("-").isdigit() else (1, level)
