"""The data of a study's report: one row per COMPLETE trial with every metric and its 95% interval, Optuna's
Pareto flag, and the noise-aware front (`p_front`, docs/method.md "Statistics").

Metrics come from the trials' user attrs (`<metric>`, `<metric>_lo`, `<metric>_hi`, as the runner stored
them); `p_front` is recomputed from each trial's per-response records, resampling problems jointly across the
trials and the baseline. A trial's records are found at its `records` user attr, or, on another machine, in a
report folder's `records/` (where `write_report` exports them).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from tsq.compat.optuna import compute_hypervolume
from tsq.engines.evaluate import read_records
from tsq.method.metrics import METRICS, ProblemSums, baseline_value, metric, objective_metric_names
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
from tsq.report.importance import ImportanceStability, importance_stability, importance_warning, importances
from tsq.report.recommend import Candidate, Recommendation, compression_objective, recommend

# Defaults for studies that did not record their own (made before tsq recorded them)
DEFAULT_FRONT = {"clear": 0.9, "possible": 0.1, "resamples": 1000, "seed": 0}


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


def is_replicate(trial: FrozenTrial) -> bool:
    """A replicate of another trial (`tsq sweep confirm`): not counted in n_trials, never a front point."""
    return trial.user_attrs.get("replicate_of") is not None


def _feasible(trial: FrozenTrial) -> bool:
    return all(v <= 0 for v in trial.constraints.values())


def front_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The feasible, non-dominated COMPLETE trials that are not replicates, by number: Optuna's
    `study.best_trials` rule, with replicates left out (they are the same points at other seeds)."""
    trials = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not is_replicate(t) and _feasible(t) and t.values is not None
    ]
    signs = [1.0 if d == optuna.study.StudyDirection.MINIMIZE else -1.0 for d in study.directions]
    losses = [[s * v for s, v in zip(signs, t.values, strict=True)] for t in trials]

    def dominated(i: int) -> bool:
        return any(
            all(a <= b for a, b in zip(other, losses[i], strict=True)) and other != losses[i]
            for other in losses
        )

    return [t for i, t in enumerate(trials) if not dominated(i)]


def metric_columns() -> list[str]:
    """The metrics every report lists: each that can be an objective, in the registry's order."""
    return list(objective_metric_names())


def _row_metrics(trial: FrozenTrial) -> dict[str, Any]:
    attrs = trial.user_attrs
    return {
        key: attrs.get(key) for name in METRICS for key in (name, f"{name}_lo", f"{name}_hi", f"{name}_se")
    }


def study_table(
    study: optuna.Study, records_dir: Path | None = None, thresholds: dict[str, float] | None = None
) -> StudyTable:
    """The report's data: one Row per COMPLETE trial (ordered by number), the baseline and the front."""
    every = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    complete = [t for t in every if not is_replicate(t)]
    best = {t.number for t in front_trials(study)}
    metrics = study.user_attrs.get("objectives") or []
    objectives = [(m, d.name.lower()) for m, d in zip(metrics, study.directions, strict=False)]
    front = {**DEFAULT_FRONT, **(study.user_attrs.get("front") or {}), **(thresholds or {})}
    rows = [
        Row(
            number=t.number,
            params=dict(t.params),
            metrics=_row_metrics(t),
            pareto=t.number in best,
            feasible=_feasible(t),
            stopped=_stopped(t),
        )
        for t in complete
    ]
    notes: list[str] = []
    replicated, noise = replicate_groups(complete, [t for t in every if is_replicate(t)], objectives)
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
    records = _load_records(study, complete, records_dir, notes) if objectives else None
    spreads: list[FrontSpread[int]] = []
    if records is not None:
        probabilities = _front_probabilities(study, records, objectives, front, seed_sd, seed_corr)
        spreads = _front_spreads(rows, records, objectives, front, seed_sd)
        rows = [
            replace(
                r,
                p_front=probabilities[r.number],
                front=classify_front(probabilities[r.number], front["clear"], front["possible"]),
            )
            for r in rows
        ]
    advice = _recommendation(rows, objectives, study, records, replicated, front, noise)
    imps = importances(study) if complete else {}
    stability = importance_stability(study) if complete else {}
    return StudyTable(
        study_name=study.study_name,
        param_names=sorted({name for t in complete for name in t.params}),
        rows=rows,
        baseline=dict(study.user_attrs.get("baseline") or {}),
        objectives=objectives,
        front=front,
        notes=notes,
        importances=imps,
        importance_warning=importance_warning(study) if complete else None,
        importance_stability=stability,
        replicated=replicated,
        seed_sd=seed_sd,
        seed_corr=seed_corr,
        spreads=spreads,
        provenance=provenance_lines(complete),
        seed_dof=noise.dof if noise else None,
        recommendation=advice,
    )


def _stopped(trial: FrozenTrial) -> bool:
    return bool((trial.user_attrs.get("early_stop") or {}).get("stopped"))


def _recommendation(
    rows: Sequence[Row],
    objectives: list[tuple[str, str]],
    study: optuna.Study,
    records: _Records | None,
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

    constraint = study.user_attrs.get("constraint") or {}
    return recommend(candidates, objectives, constraint.get("max_accuracy_drop"), gap_of, seed_sd,
                     noise.dof if noise else None)  # fmt: skip


def _delta_interval(metrics: Mapping[str, Any]) -> tuple[float, float] | None:
    lo, hi = metrics.get("accuracy_delta_lo"), metrics.get("accuracy_delta_hi")
    return None if lo is None or hi is None else (float(lo), float(hi))


def _delta_se(metrics: Mapping[str, Any]) -> float | None:
    """The accuracy change's bootstrap SE as the runner stored it, else from its 95% interval."""
    se, lo, hi = (metrics.get(f"accuracy_delta{s}") for s in ("_se", "_lo", "_hi"))
    if se is not None:
        return float(se)
    return None if lo is None or hi is None else (float(hi) - float(lo)) / (2 * 1.959964)


def provenance_lines(trials: list[FrozenTrial]) -> list[str]:
    """What ran the trials, one line per distinct record (several when a study spans code versions): the git
    commit, package versions and the model weights' hash each trial recorded (`tsq.study.provenance`)."""
    seen: dict[str, None] = {}
    for t in trials:
        attrs = t.user_attrs
        versions = attrs.get("versions") or {}
        commit = str(attrs.get("git_commit") or "")
        dirty = "-dirty" if commit.endswith("-dirty") else ""  # uncommitted changes ran: say so
        parts = [f"commit {commit.removesuffix('-dirty')[:12]}{dirty}"] if commit else []
        parts += [f"{pkg} {v}" for pkg, v in versions.items()]
        model = (attrs.get("cache_keys") or {}).get("model")
        parts += [f"model weights {model}"] if model else []
        if parts:
            seen[", ".join(parts)] = None
    return list(seen)


# Metrics the replicate table aggregates, besides the study's objectives
REPLICATED_METRICS = ("accuracy", "accuracy_delta", "len_all", "token_reduction", "auc")


@dataclass(frozen=True)
class ReplicatedRow:
    """One trial's fresh-seed replicates on one split: the mean of each metric over them, with an interval
    that holds the seed noise as well as the evaluation noise (`tsq.method.stats.aggregate_replicates`). The trial
    was picked because its run looked good, so that run is never averaged in (the winner's curse): it is
    shown beside, as the sweep saw it, and on the held-out split the picked adapter itself is shown apart."""

    of: int
    params: dict[str, Any]
    split: str  # "eval": re-seeded runs on the sweep's split; "test": the held-out split the sweep never saw
    n: int  # fresh seeds
    original: dict[str, Any]  # the original trial's values on the sweep's eval split (as the sweep saw it)
    estimates: dict[str, ReplicateEstimate]  # means over the fresh seeds only
    picked: dict[str, Any] | None = None  # test split: the picked adapter (the sweep's seeds), held out


def _is_fresh(t: FrozenTrial) -> bool:
    """A replicate at new seeds; on the held-out split replicate 0 re-evaluates the picked adapter itself."""
    return t.user_attrs.get("split", "eval") == "eval" or int(t.user_attrs.get("replicate", 1)) >= 1


def replicate_groups(
    originals: Sequence[FrozenTrial], replicates: Sequence[FrozenTrial], objectives: list[tuple[str, str]]
) -> tuple[list[ReplicatedRow], SeedNoise | None]:
    """The replicates of each (trial, split), summarised over their fresh seeds, and the seed noise pooled
    over the eval split's groups (`tsq.method.stats.pooled_seed_noise`, absolute metrics: what `p_front` draws). A
    group of one fresh seed takes the SD pooled over the others, with its degrees of freedom."""
    names = list(dict.fromkeys([*(m for m, _ in objectives), *REPLICATED_METRICS]))
    by_number = {t.number: t for t in originals}
    groups: dict[tuple[int, str], list[FrozenTrial]] = {}
    for t in replicates:
        of, split = int(t.user_attrs["replicate_of"]), t.user_attrs.get("split", "eval")
        if of in by_number:
            groups.setdefault((of, split), []).append(t)
    fresh = {key: [t for t in members if _is_fresh(t)] for key, members in sorted(groups.items())}
    eval_groups = [[t.user_attrs for t in g] for (_, split), g in fresh.items() if split == "eval"]
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
    fresh: Mapping[tuple[int, str], Sequence[FrozenTrial]], name: str
) -> list[tuple[int, float | None]]:
    """(n, between-seed SD) of one metric in each eval-split group (for `pooled_sd`)."""
    out = []
    for (_, split), g in fresh.items():
        values = [t.user_attrs.get(name) for t in g]
        if split == "eval" and len(values) >= 2 and None not in values:
            out.append((len(values), float(np.std(values, ddof=1))))
    return out


def replicate_estimates(
    members: Sequence[FrozenTrial],
    names: Iterable[str],
    seed_sd: Mapping[str, tuple[float, int]] | None = None,
) -> dict[str, ReplicateEstimate]:
    """Each metric (user attr) of one configuration run at several seeds on the same problems: the mean and
    its interval (`aggregate_replicates`), with the problem-bootstrap SE where every member stored one.
    `seed_sd` (metric -> (SD, degrees of freedom), measured on other configurations) stands in for the seed
    spread a single member cannot measure. Metrics some member lacks are left out."""
    estimates = {}
    for name in names:
        values = [t.user_attrs.get(name) for t in members]
        if any(v is None for v in values):
            continue
        ses = [t.user_attrs.get(f"{name}_se") for t in members]
        sd, dof = (seed_sd or {}).get(name, (None, None)) if len(members) < 2 else (None, None)
        estimates[name] = aggregate_replicates(
            [float(v) for v in values],
            se_boot=None if None in ses else [float(x) for x in ses],
            sd_seed=sd,
            sd_dof=dof,
        )
    return estimates


def records_path(attr: Any, records_dir: Path | None, name: str) -> Path | None:
    """Where a result's per-response records are: the path the trial stored, else `records_dir/name`."""
    for path in (Path(attr) if attr else None, records_dir / name if records_dir else None):
        if path is not None and path.is_file():
            return path
    return None


@dataclass(frozen=True)
class _Records:
    """Per-problem sums of the baseline and of every COMPLETE trial not stopped early, from their records."""

    baseline: ProblemSums
    trials: dict[int, ProblemSums]
    stopped: list[int]  # stopped early: records of part of the problems only, never on the front


def _load_records(
    study: optuna.Study, complete: Sequence[FrozenTrial], records_dir: Path | None, notes: list[str]
) -> _Records | None:
    budget = study.user_attrs.get("baseline", {}).get("budget")
    if not complete:
        return None
    base_path = records_path(complete[0].user_attrs.get("baseline_records"), records_dir, "baseline.jsonl")
    # A trial stopped early (tsq/method/early_stop.py) holds records of part of the problems and is infeasible: it is
    # never on the front, and leaving it out keeps the joint resamples on every problem.
    stopped = [t.number for t in complete if _stopped(t)]
    paths = {t.number: records_path(t.user_attrs.get("records"), records_dir, f"trial-{t.number}.jsonl")
             for t in complete if t.number not in stopped}  # fmt: skip
    missing = [n for n, p in paths.items() if p is None]
    if budget is None or base_path is None or missing:
        notes.append(
            "p_front not computed: it needs every trial's per-response records "
            f"(missing for {'the baseline' if base_path is None else f'trials {missing}'})"
        )
        return None
    return _Records(
        baseline=ProblemSums.from_records(read_records(base_path), int(budget)),
        trials={n: ProblemSums.from_records(read_records(p), int(budget)) for n, p in paths.items() if p},
        stopped=stopped,
    )


def _front_probabilities(
    study: optuna.Study,
    records: _Records,
    objectives: list[tuple[str, str]],
    front: dict[str, float],
    seed_sd: dict[str, float],
    seed_corr: dict[tuple[str, str], float],
) -> dict[int, float]:
    constraint = study.user_attrs.get("constraint") or {}
    probabilities = p_front(
        records.trials,
        records.baseline,
        objectives,
        n_resamples=int(front["resamples"]),
        seed=int(front["seed"]),
        max_accuracy_drop=constraint.get("max_accuracy_drop"),
        seed_sd=seed_sd,
        seed_corr=seed_corr,
    )
    return {**probabilities, **dict.fromkeys(records.stopped, 0.0)}


def _front_spreads(
    rows: Sequence[Row],
    records: _Records,
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
