"""Does the reduced sweep's answer hold at full fidelity? The statistics of the report's section "At full
fidelity", from the runs `tsq sweep promote` added (`StudyData.promoted`) and the sweep's own table; the
rule is docs/sweeps.md's "Does the answer hold at full fidelity", and `tsq.report.sections.fidelity_lines`
renders it.

Each promoted point (a front trial, the recommended one, a control off the front) has its reduced value (the
sweep's run) and its full value (the mean over its promoted seeds). Per objective:
- τ_b between the two, with a 95% bootstrap interval over the points (`tsq.method.stats.rank_transfer`);
- the noise ceiling: τ_b between the means of the two split halves of each point's promoted seeds, the τ
  that perfect transfer would show at the measured seed noise, and the gap ceiling − τ (paired bootstrap);
- the verdict: "holds" when τ is above 0 beyond the noise and not below the ceiling beyond it; "fails" when
  τ is below the ceiling beyond the noise; else "undecided" (so is every objective whose ceiling is not above
  0 beyond the noise: at full fidelity its ranking is not separable from seed noise, so no transfer can be
  measured).
Then whether the recommended trial is still on the front at full fidelity (p_front over the promoted points,
with their seed noise), the hypervolume lost by choosing the reduced front, and each numeric knob's rank
correlation with each objective at both fidelities (same sign, opposite sign, or not measurable).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tsq.engines.evaluate import read_records
from tsq.method.metrics import ProblemSums, metric
from tsq.method.stats import (
    Estimate,
    FrontClass,
    RankTransfer,
    classify_front,
    kendall_tau_b,
    kendall_tau_b_many,
    p_front,
    percentile_interval,
    point_resamples,
    pooled_seed_noise,
    rank_transfer,
    shared_problems,
)
from tsq.records import TrialRecord
from tsq.report.data import StudyData, records_path
from tsq.report.table import StudyTable, hypervolume

Verdict = Literal["holds", "fails", "undecided"]
HOLDS = "the reduced sweep's answer holds"
FAILS = "does not hold: sweep at higher fidelity"
UNDECIDED = "cannot tell at this noise: promote more points (--controls) or seeds (--replicates)"


@dataclass(frozen=True)
class MetricTransfer:
    metric: str
    direction: str
    transfer: RankTransfer
    verdict: Verdict
    reason: str


@dataclass(frozen=True)
class KnobSign:
    """One numeric knob's rank correlation (τ_b) with one objective over the promoted points, at each
    fidelity, with 95% bootstrap intervals over the points."""

    knob: str
    metric: str
    reduced: Estimate
    full: Estimate
    agreement: Literal["same sign", "opposite sign", "not measurable"]


@dataclass(frozen=True)
class HypervolumeLoss:
    """Full-fidelity hypervolume of the reduced front's points and of every promoted point (the full front),
    from one reference point (`reference`: metric -> (value, what it is))."""

    reduced_front: float
    full_front: float
    reference: dict[str, tuple[float, str]]

    @property
    def lost(self) -> float | None:
        """The share of the full front's hypervolume that choosing at reduced fidelity gives up."""
        return None if self.full_front <= 0 else 1 - self.reduced_front / self.full_front


@dataclass(frozen=True)
class FidelityCheck:
    overlay: dict[str, Any]  # study.promote as the runs recorded it
    points: list[int]  # promoted originals with a full-fidelity value
    seeds: dict[int, int]  # promoted seeds per point
    reduced_front: list[int]  # of them, those on the sweep's (Optuna's) front
    transfers: list[MetricTransfer]
    pick: int | None  # the sweep's recommended trial
    pick_p_front: float | None  # its p_front among the promoted points at full fidelity (seed noise in)
    pick_front: FrontClass | None
    hypervolume: HypervolumeLoss | None
    knobs: list[KnobSign]
    verdict: str
    notes: list[str] = field(default_factory=list)


def label(name: str) -> str:
    """A metric's short label ("Len-A (tokens)" -> "Len-A")."""
    return metric(name).label.split(" (")[0]


def fidelity_check(
    data: StudyData, table: StudyTable, records_dir: Path | None = None
) -> FidelityCheck | None:
    """The section's statistics; None when the study has no promoted run."""
    promoted = data.promoted
    if not promoted:
        return None
    notes: list[str] = []
    newest = max(promoted, key=lambda t: t.number)
    assert newest.replicate is not None and newest.replicate.fidelity is not None
    overlay = newest.replicate.fidelity
    same = [t for t in promoted if t.replicate is not None and t.replicate.fidelity == overlay]
    if len(same) < len(promoted):
        notes.append(
            f"{len(promoted) - len(same)} runs at another study.promote left out (the newest overlay is the "
            "one compared)"
        )
    rows = table.rows_by_number
    groups: dict[int, list[TrialRecord]] = {}
    for t in sorted(same, key=lambda t: (t.replicate.index if t.replicate else 0, t.number)):
        assert t.replicate is not None
        if t.replicate.of in rows:
            groups.setdefault(t.replicate.of, []).append(t)
    points = sorted(groups)
    front = data.front_settings()
    n_resamples, seed = int(front["resamples"]), int(front["seed"])
    transfers = []
    for name, direction in table.objectives:
        usable = [
            n
            for n in points
            if rows[n].metrics.get(name) is not None and all(t.value(name) is not None for t in groups[n])
        ]
        if not usable:
            continue
        transfer = rank_transfer(
            [float(rows[n].metrics[name]) for n in usable],
            [[float(t.value(name)) for t in groups[n]] for n in usable],
            n_resamples=n_resamples,
            seed=seed,
        )
        verdict, reason = judge(transfer)
        transfers.append(MetricTransfer(name, direction, transfer, verdict, reason))
    pick = table.recommendation.pick if table.recommendation else None
    p_pick = _pick_p_front(data, groups, pick, table, records_dir, notes)
    pick_front = None if p_pick is None else classify_front(p_pick, front["clear"], front["possible"])
    if pick is not None and pick not in groups:
        notes.append(f"the recommended trial {pick} was not promoted: no front check")
    reduced_front = [n for n in points if rows[n].pareto]
    return FidelityCheck(
        overlay=dict(overlay),
        points=points,
        seeds={n: len(g) for n, g in groups.items()},
        reduced_front=reduced_front,
        transfers=transfers,
        pick=pick,
        pick_p_front=p_pick,
        pick_front=pick_front,
        hypervolume=_hypervolume(table, groups, reduced_front, data.record.max_accuracy_drop),
        knobs=_knob_signs(table, groups, points, n_resamples, seed),
        verdict=overall(transfers, pick_front),
        notes=notes,
    )


def judge(transfer: RankTransfer) -> tuple[Verdict, str]:
    """One objective's verdict (the module docstring's rule) and why, in words."""
    tau, ceiling, gap = transfer.tau, transfer.ceiling, transfer.gap
    if transfer.n < 3:
        return "undecided", f"{transfer.n} points: too few to rank"
    if ceiling.value is None or ceiling.lo is None:
        return "undecided", "no noise ceiling: promote with --replicates 2 or more"
    if ceiling.lo <= 0:
        return (
            "undecided",
            "at full fidelity the points' ranking is not separable from seed noise (the ceiling's interval "
            "reaches 0)",
        )
    if gap.lo is not None and gap.lo > 0:
        return "fails", "τ is below the noise ceiling beyond the noise"
    if tau.lo is not None and tau.lo > 0:
        return "holds", "τ is above 0 and not below the noise ceiling beyond the noise"
    return "undecided", "τ is separable neither from 0 nor from the noise ceiling"


def overall(transfers: Sequence[MetricTransfer], pick_front: FrontClass | None) -> str:
    """The plain verdict: a recommended trial clearly off the full-fidelity front fails the answer; else every
    objective holding holds it, some holding hold it for those only, one failing (none holding) fails it."""
    held = [t.metric for t in transfers if t.verdict == "holds"]
    if pick_front == "off" or (not held and any(t.verdict == "fails" for t in transfers)):
        return FAILS
    if transfers and len(held) == len(transfers):
        return HOLDS
    if held:
        return f"holds for {', '.join(label(m) for m in held)} only"
    return UNDECIDED


def _full_means(groups: dict[int, list[TrialRecord]], n: int, name: str) -> float | None:
    values = [t.value(name) for t in groups[n]]
    return None if any(v is None for v in values) else float(np.mean([float(v) for v in values]))


def _pick_p_front(
    data: StudyData,
    groups: dict[int, list[TrialRecord]],
    pick: int | None,
    table: StudyTable,
    records_dir: Path | None,
    notes: list[str],
) -> float | None:
    """The recommended trial's p_front among the promoted points at full fidelity: each point's responses
    over all its seeds pooled per problem, and the seed noise of a mean of R seeds (the between-seed SD
    pooled over the points, over √R) drawn as the report's p_front draws it."""
    if pick is None or pick not in groups or len(groups) < 2 or not table.objectives:
        return None
    first = groups[pick][0]
    budget = (first.baseline or {}).get("budget") or data.record.budget
    base_path = records_path(first.baseline_records, records_dir, "baseline-promoted.jsonl")
    paths = {t.number: records_path(t.records, records_dir, f"trial-{t.number}.jsonl")
             for g in groups.values() for t in g}  # fmt: skip
    found = {number: path for number, path in paths.items() if path is not None}
    if budget is None or base_path is None or len(found) < len(paths):
        notes.append("front check not computed: it needs the promoted runs' per-response records")
        return None
    sums: dict[int, ProblemSums] = {}
    for n, g in groups.items():
        runs = [ProblemSums.from_records(read_records(found[t.number]), int(budget)) for t in g]
        ids = shared_problems(*runs)
        sums[n] = ProblemSums(ids, np.sum([r.select(ids).sums for r in runs], axis=0), int(budget))
    names = [m for m, _ in table.objectives]
    wanted = dict.fromkeys([*(metric(m).of or m for m in names), "accuracy"])  # accuracy: feasibility
    absolute = [a for a in wanted if not metric(a).relative]
    noise = pooled_seed_noise([[t.metrics for t in g] for g in groups.values()], absolute)
    r = min(len(g) for g in groups.values())
    front = data.front_settings()
    p = p_front(
        sums,
        ProblemSums.from_records(read_records(base_path), int(budget)),
        table.objectives,
        n_resamples=int(front["resamples"]),
        seed=int(front["seed"]),
        max_accuracy_drop=data.record.max_accuracy_drop,
        seed_sd={k: v / math.sqrt(r) for k, v in noise.sd.items()} if noise else None,
        seed_corr=noise.corr if noise else None,
    )
    return p[pick]


def _hypervolume(
    table: StudyTable, groups: dict[int, list[TrialRecord]], reduced_front: list[int], drop: float | None
) -> HypervolumeLoss | None:
    """Full-fidelity hypervolume of the reduced front's points against that of every promoted point. The
    reference point: an accuracy objective at the constraint (Δ accuracy −max_drop, accuracy the promoted
    baseline's minus it); every other objective at its worst promoted value. Points infeasible at full
    fidelity (mean Δ accuracy below −max_drop) add nothing."""
    names = [m for m, _ in table.objectives]
    directions = [d for _, d in table.objectives]
    values: dict[int, list[float]] = {}
    for n in groups:
        means = [_full_means(groups, n, m) for m in names]
        if all(v is not None for v in means):
            values[n] = [float(v) for v in means if v is not None]
    if not values or not names:
        return None
    baseline = next(iter(groups.values()))[0].baseline or {}
    reference: dict[str, tuple[float, str]] = {}
    for i, (name, direction) in enumerate(table.objectives):
        column = [v[i] for v in values.values()]
        if drop is not None and name == "accuracy_delta":
            reference[name] = (-drop, "the constraint")
        elif drop is not None and name == "accuracy" and baseline.get("accuracy") is not None:
            reference[name] = (float(baseline["accuracy"]) - drop, "the constraint")
        else:
            worst = min(column) if direction == "maximize" else max(column)
            reference[name] = (worst, "the worst promoted value")

    def feasible(n: int) -> bool:
        delta = _full_means(groups, n, "accuracy_delta")
        return drop is None or delta is None or delta >= -drop - 1e-12

    ref = [reference[m][0] for m in names]
    full = [values[n] for n in values if feasible(n)]
    reduced = [values[n] for n in values if feasible(n) and n in reduced_front]
    return HypervolumeLoss(
        hypervolume(reduced, ref, directions), hypervolume(full, ref, directions), reference
    )


def _tau_estimate(x: Sequence[float], y: Sequence[float], n_resamples: int, seed: int) -> Estimate:
    index = point_resamples(len(x), n_resamples, seed)
    draws = kendall_tau_b_many(np.asarray(x, dtype=float)[index], np.asarray(y, dtype=float)[index])
    lo, hi = percentile_interval(draws)
    return Estimate(kendall_tau_b(x, y), lo, hi, None)


def _sign(estimate: Estimate) -> int:
    """+1 / −1 when the interval excludes 0, else 0 (no measurable effect)."""
    if estimate.lo is None or estimate.hi is None:
        return 0
    return 1 if estimate.lo > 0 else -1 if estimate.hi < 0 else 0


def _knob_signs(
    table: StudyTable, groups: dict[int, list[TrialRecord]], points: list[int], n_resamples: int, seed: int
) -> list[KnobSign]:
    rows = table.rows_by_number
    out = []
    for knob in table.param_names:
        if len(points) < 3:
            break
        raw = [rows[n].params.get(knob) for n in points]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in raw):
            continue  # a categorical knob has no sign
        for name, _ in table.objectives:
            xs, at_reduced, at_full = [], [], []
            for value, n in zip(raw, points, strict=True):
                r, f = rows[n].metrics.get(name), _full_means(groups, n, name)
                if r is not None and f is not None:
                    xs.append(float(value))
                    at_reduced.append(float(r))
                    at_full.append(f)
            if len(xs) < 3:
                continue
            reduced = _tau_estimate(xs, at_reduced, n_resamples, seed)
            full = _tau_estimate(xs, at_full, n_resamples, seed)
            a, b = _sign(reduced), _sign(full)
            agreement = "not measurable" if not a or not b else "same sign" if a == b else "opposite sign"
            out.append(KnobSign(knob, name, reduced, full, agreement))
    return out


def overlay_text(overlay: dict[str, Any]) -> str:
    """The overlay as one line of YAML flow style."""
    return json.dumps(overlay, sort_keys=True).replace('"', "")
