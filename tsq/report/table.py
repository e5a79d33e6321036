"""The statistics of a study's Pareto report: one row per COMPLETE trial with every metric and its 95%
interval, Optuna's Pareto flag, and the noise-aware front (`p_front`, docs/method.md "Statistics"), computed
from the study's data (`tsq.report.data`) alone; `tsq.report.pareto` renders them.

Metrics come from the trials' records (each metric with its interval, as the runner stored them); `p_front`
is recomputed from each trial's per-response records, resampling problems jointly across the trials and the
baseline.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from tsq.compat.optuna import compute_hypervolume
from tsq.method.metrics import (
    METRICS,
    baseline_value,
    interval_key,
    metric,
    objective_metric_names,
    report_metrics,
)
from tsq.method.stats import (
    FrontClass,
    FrontSpread,
    ReplicateEstimate,
    SeedNoise,
    aggregate_replicates,
    classify_front,
    front_spread,
    p_front,
    pooled_sd,
    pooled_seed_noise,
)
from tsq.records import TrialRecord
from tsq.report.data import DEFAULT_FRONT, ResultSums, StudyData, load_sums, provenance_lines, study_data
from tsq.report.importance import ImportanceStability, importance_stability, importance_warning, importances
from tsq.report.recommend import Candidate, Recommendation, compression_objective, recommend


@dataclass(frozen=True)
class Row:
    number: int
    params: dict[str, Any]
    metrics: dict[str, Any]  # every registry metric with `_lo` / `_hi` (None where the trial lacks it)
    pareto: bool  # on Optuna's front (study.best_trials: feasible trials only when a constraint is set)
    feasible: bool
    p_front: float | None = None  # share of problem resamples in which the trial is on the feasible front
    front: FrontClass | None = None  # p_front against the study's thresholds
    stopped: bool = False  # stopped early by the staged test: metrics of part of the problems only


@dataclass(frozen=True)
class StudyTable:
    study_name: str
    param_names: list[str]
    rows: list[Row]
    baseline: dict[str, Any]
    objectives: list[tuple[str, str]]  # (metric, direction)
    front: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_FRONT))
    notes: list[str] = field(default_factory=list)  # what the report could not compute, and why
    importances: dict[str, dict[str, float]] = field(default_factory=dict)  # objective -> knob -> share
    importance_warning: str | None = None  # too few trials to trust the importances
    importance_stability: dict[str, ImportanceStability] = field(default_factory=dict)  # per objective
    replicated: list[ReplicatedRow] = field(default_factory=list)  # `sweep confirm` results, per trial/split
    seed_sd: dict[str, float] = field(default_factory=dict)  # pooled between-seed SD per absolute metric
    seed_corr: dict[tuple[str, str], float] = field(default_factory=dict)  # ... and their correlations
    spreads: list[FrontSpread[int]] = field(default_factory=list)  # front gaps per objective
    provenance: list[str] = field(default_factory=list)  # the code, packages and model weights that ran it
    seed_dof: int | None = None  # degrees of freedom of seed_sd
    recommendation: Recommendation | None = None  # the configuration to train with, and why

    @property
    def rows_by_number(self) -> dict[int, Row]:
        return {r.number: r for r in self.rows}

    @property
    def budget(self) -> int | None:
        value = self.baseline.get("budget")
        return None if value is None else int(value)


def front_trials(data: StudyData) -> list[TrialRecord]:
    """The feasible, non-dominated COMPLETE trials that are not replicates, by number: Optuna's
    `study.best_trials` rule, with replicates left out (they are the same points at other seeds)."""
    trials = [t for t in data.complete if t.feasible and t.values is not None]
    signs = [1.0 if d == "minimize" else -1.0 for d in data.directions]
    losses = [[s * v for s, v in zip(signs, t.values or (), strict=True)] for t in trials]

    def dominated(i: int) -> bool:
        return any(
            all(a <= b for a, b in zip(other, losses[i], strict=True)) and other != losses[i]
            for other in losses
        )

    return [t for i, t in enumerate(trials) if not dominated(i)]


def metric_columns() -> list[str]:
    """The metrics every report lists: each that can be an objective, in the registry's order."""
    return list(objective_metric_names())


def _row_metrics(trial: TrialRecord) -> dict[str, Any]:
    out = {}
    for name in METRICS:
        out[name] = trial.value(name)
        out.update({interval_key(name, part): trial.interval(name, part) for part in ("lo", "hi", "se")})
    return out


def study_table(
    study: optuna.Study, records_dir: Path | None = None, thresholds: dict[str, float] | None = None
) -> StudyTable:
    """The report's data of a stored study (`table_of` its `study_data`)."""
    return table_of(study_data(study), records_dir, thresholds)


def table_of(
    data: StudyData, records_dir: Path | None = None, thresholds: dict[str, float] | None = None
) -> StudyTable:
    """The report's data: one Row per COMPLETE trial (ordered by number), the baseline and the front."""
    complete = data.complete
    best = {t.number for t in front_trials(data)}
    objectives = data.objectives
    front = data.front_settings(thresholds)
    rows = [
        Row(
            number=t.number,
            params=dict(t.params),
            metrics=_row_metrics(t),
            pareto=t.number in best,
            feasible=t.feasible,
            stopped=t.stopped,
        )
        for t in complete
    ]
    notes: list[str] = []
    replicated, noise = replicate_groups(complete, data.replicates, objectives)
    if noise is not None:
        corr = "".join(f", correlation {a}/{b} {r:+.2f}" for (a, b), r in noise.corr.items())
        notes.append(
            "p_front includes seed noise measured from the fresh-seed replicates, drawn jointly for the "
            "absolute metrics, relative ones and feasibility derived from them (pooled between-seed SD: "
            + ", ".join(f"{m} {v:.3g}" for m, v in noise.sd.items())
            + f"{corr}; {noise.dof} df)"
        )
    else:
        notes.append(
            "p_front and intervals hold evaluation noise only: no replicates yet (tsq sweep confirm), so no "
            "trial here is shown to be on the front with seed noise"
        )
    seed_sd = noise.sd if noise else {}
    seed_corr = noise.corr if noise else {}
    records = load_sums(data, complete, records_dir, notes) if objectives else None
    spreads: list[FrontSpread[int]] = []
    if records is not None:
        probabilities = _front_probabilities(data, records, objectives, front, seed_sd, seed_corr)
        spreads = _front_spreads(rows, records, objectives, front, seed_sd)
        rows = [
            replace(
                r,
                p_front=probabilities[r.number],
                front=classify_front(probabilities[r.number], front["clear"], front["possible"]),
            )
            for r in rows
        ]
    advice = _recommendation(rows, objectives, data, records, replicated, front, noise)
    imps = importances(data) if complete else {}
    stability = importance_stability(data) if complete else {}
    return StudyTable(
        study_name=data.name,
        param_names=sorted({name for t in complete for name in t.params}),
        rows=rows,
        baseline=dict(data.record.baseline or {}),
        objectives=objectives,
        front=front,
        notes=notes,
        importances=imps,
        importance_warning=importance_warning(data) if complete else None,
        importance_stability=stability,
        replicated=replicated,
        seed_sd=seed_sd,
        seed_corr=seed_corr,
        spreads=spreads,
        provenance=provenance_lines(complete),
        seed_dof=noise.dof if noise else None,
        recommendation=advice,
    )


def _recommendation(
    rows: Sequence[Row],
    objectives: list[tuple[str, str]],
    data: StudyData,
    records: ResultSums | None,
    replicated: Sequence[ReplicatedRow],
    front: dict[str, float],
    noise: SeedNoise | None,
) -> Recommendation:
    """`tsq.report.recommend.recommend` on the study's rows: each trial's accuracy change (the fresh seeds'
    mean where it was replicated on the eval split), gaps measured on the records, paired over problems."""
    fresh = {r.of: r.estimates.get("accuracy_delta") for r in replicated if r.split == "eval"}
    target = compression_objective(objectives)
    candidates = [
        Candidate(
            r.number,
            r.params,
            None if target is None else r.metrics.get(target[0]),
            r.metrics.get("accuracy_delta"),
            _delta_se(r.metrics),
            r.stopped,
            None if (e := fresh.get(r.number)) is None or e.lo is None or e.hi is None
            else (e.mean, e.lo, e.hi, e.n),
            _delta_interval(r.metrics),
        )
        for r in rows
    ]  # fmt: skip
    seed_sd = noise.sd.get("accuracy") if noise else None

    def gap_of(a: int, b: int) -> tuple[float, float] | None:
        if records is None or target is None or a not in records.trials or b not in records.trials:
            return None
        spread = front_spread(
            {a: records.trials[a], b: records.trials[b]},
            target[0],
            n_resamples=int(front["resamples"]),
            seed=int(front["seed"]),
            seed_sd=noise.sd if noise else None,
        )
        return next(iter(spread.gaps.values()))

    return recommend(candidates, objectives, data.record.max_accuracy_drop, gap_of, seed_sd,
                     noise.dof if noise else None)  # fmt: skip


def _delta_interval(metrics: Mapping[str, Any]) -> tuple[float, float] | None:
    lo, hi = (metrics.get(interval_key("accuracy_delta", part)) for part in ("lo", "hi"))
    return None if lo is None or hi is None else (float(lo), float(hi))


def _delta_se(metrics: Mapping[str, Any]) -> float | None:
    """The accuracy change's bootstrap SE as the runner stored it, else from its 95% interval."""
    se, lo, hi = (metrics.get(interval_key("accuracy_delta", part)) for part in ("se", "lo", "hi"))
    if se is not None:
        return float(se)
    return None if lo is None or hi is None else (float(hi) - float(lo)) / (2 * 1.959964)


@dataclass(frozen=True)
class ReplicatedRow:
    """One trial's fresh-seed replicates on one split: the mean of each metric over them, with an interval
    that holds the seed noise as well as the evaluation noise (`tsq.method.stats.aggregate_replicates`). The
    trial was picked because its run looked good, so that run is never averaged in (the winner's curse): it
    is shown beside, as the sweep saw it, and on the held-out split the picked adapter itself is shown
    apart."""

    of: int
    params: dict[str, Any]
    split: str  # "eval": re-seeded runs on the sweep's split; "test": the held-out split the sweep never saw
    n: int  # fresh seeds
    original: dict[str, Any]  # the original trial's values on the sweep's eval split (as the sweep saw it)
    estimates: dict[str, ReplicateEstimate]  # means over the fresh seeds only
    picked: dict[str, Any] | None = None  # test split: the picked adapter (the sweep's seeds), held out


def _is_fresh(t: TrialRecord) -> bool:
    return t.replicate is not None and t.replicate.fresh


def replicate_groups(
    originals: Sequence[TrialRecord], replicates: Sequence[TrialRecord], objectives: list[tuple[str, str]]
) -> tuple[list[ReplicatedRow], SeedNoise | None]:
    """The replicates of each (trial, split), summarised over their fresh seeds, and the seed noise pooled
    over the eval split's groups (`tsq.method.stats.pooled_seed_noise`, absolute metrics: what `p_front`
    draws). A group of one fresh seed takes the SD pooled over the others, with its degrees of freedom."""
    names = list(dict.fromkeys([*(m for m, _ in objectives), *report_metrics("replicates")]))
    by_number = {t.number: t for t in originals}
    groups: dict[tuple[int, str], list[TrialRecord]] = {}
    for t in replicates:
        assert t.replicate is not None
        if t.replicate.of in by_number:
            groups.setdefault((t.replicate.of, t.replicate.split), []).append(t)
    fresh = {key: [t for t in members if _is_fresh(t)] for key, members in sorted(groups.items())}
    eval_groups = [[t.metrics for t in g] for (_, split), g in fresh.items() if split == "eval"]
    absolute = [n for n in dict.fromkeys(metric(m).of or m for m in names) if not metric(n).relative]
    noise = pooled_seed_noise(eval_groups, absolute)
    spread = {name: pooled for name in names if (pooled := pooled_sd(_group_sds(fresh, name))) is not None}
    rows = []
    for (of, split), members in fresh.items():
        original = by_number[of]
        picked = next((t for t in groups[(of, split)] if not _is_fresh(t)), None)
        rows.append(
            ReplicatedRow(
                of,
                dict(original.params),
                split,
                len(members),
                _row_metrics(original),
                replicate_estimates(members, names, spread) if members else {},
                None if picked is None else _row_metrics(picked),
            )
        )
    return rows, noise


def _group_sds(
    fresh: Mapping[tuple[int, str], Sequence[TrialRecord]], name: str
) -> list[tuple[int, float | None]]:
    """(n, between-seed SD) of one metric in each eval-split group (for `pooled_sd`)."""
    out = []
    for (_, split), g in fresh.items():
        values = [t.value(name) for t in g]
        if split == "eval" and len(values) >= 2 and None not in values:
            out.append((len(values), float(np.std(values, ddof=1))))
    return out


def replicate_estimates(
    members: Sequence[TrialRecord],
    names: Iterable[str],
    seed_sd: Mapping[str, tuple[float, int]] | None = None,
) -> dict[str, ReplicateEstimate]:
    """Each metric of one configuration run at several seeds on the same problems: the mean and
    its interval (`aggregate_replicates`), with the problem-bootstrap SE where every member stored one.
    `seed_sd` (metric -> (SD, degrees of freedom), measured on other configurations) stands in for the seed
    spread a single member cannot measure. Metrics some member lacks are left out."""
    estimates = {}
    for name in names:
        values = [t.value(name) for t in members]
        if any(v is None for v in values):
            continue
        ses = [t.interval(name, "se") for t in members]
        sd, dof = (seed_sd or {}).get(name, (None, None)) if len(members) < 2 else (None, None)
        estimates[name] = aggregate_replicates(
            [float(v) for v in values],
            se_boot=None if None in ses else [float(x) for x in ses],
            sd_seed=sd,
            sd_dof=dof,
        )
    return estimates


def _front_probabilities(
    data: StudyData,
    records: ResultSums,
    objectives: list[tuple[str, str]],
    front: dict[str, float],
    seed_sd: dict[str, float],
    seed_corr: dict[tuple[str, str], float],
) -> dict[int, float]:
    probabilities = p_front(
        records.trials,
        records.baseline,
        objectives,
        n_resamples=int(front["resamples"]),
        seed=int(front["seed"]),
        max_accuracy_drop=data.record.max_accuracy_drop,
        seed_sd=seed_sd,
        seed_corr=seed_corr,
    )
    return {**probabilities, **dict.fromkeys(records.stopped, 0.0)}


def _front_spreads(
    rows: Sequence[Row],
    records: ResultSums,
    objectives: list[tuple[str, str]],
    front: dict[str, float],
    seed_sd: dict[str, float],
) -> list[FrontSpread[int]]:
    """How far apart Optuna's front trials lie in each objective (`tsq.method.stats.front_spread`)."""
    on_front = {r.number: records.trials[r.number] for r in rows if r.pareto and r.number in records.trials}
    if len(on_front) < 2:
        return []
    return [
        front_spread(
            on_front,
            name,
            n_resamples=int(front["resamples"]),
            seed=int(front["seed"]),
            seed_sd=seed_sd,
        )
        for name, _ in objectives
    ]


def _loss(value: float, direction: str) -> float:
    return value if direction == "minimize" else -value


def hypervolume(
    points: Sequence[Sequence[float]], reference: Sequence[float], directions: Sequence[str]
) -> float:
    """Hypervolume dominated by `points` and bounded by `reference` (e.g. the baseline), in the objectives'
    own units; points that do not beat the reference in every objective add nothing."""
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


def table_hypervolume(table: StudyTable) -> float | None:
    """Hypervolume of the feasible COMPLETE trials, the baseline as reference point (None: no baseline)."""
    reference = [baseline_value(m, table.baseline) for m, _ in table.objectives]
    if not table.objectives or any(r is None for r in reference):
        return None
    points = [
        [float(r.metrics[m]) for m, _ in table.objectives]
        for r in table.rows
        if r.feasible and all(r.metrics.get(m) is not None for m, _ in table.objectives)
    ]
    return hypervolume(
        points, [float(r) for r in reference if r is not None], [d for _, d in table.objectives]
    )
