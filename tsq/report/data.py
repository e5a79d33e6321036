"""What the reports read of a study: its record and every trial's record (`tsq.records`), gathered once into
`StudyData`, and the per-response records of the trials and the baseline, found on disk. The statistics
(`tsq.report.table`, `.effects`, `.importance`, `.recommend`) are functions of this data alone; the renderers
(`tsq.report.pareto`, `.sections`, `.advice`, `.effects_markdown`) print what they compute.

A trial's per-response records are found at the path its record holds, or, on another machine, in a report
folder's `records/` (where `export_records` copies them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from tsq.engines.evaluate import read_records
from tsq.fileio import write_atomic
from tsq.method.metrics import ProblemSums
from tsq.records import StudyRecord, TrialRecord, trial_records

# p_front's settings for studies that did not record their own (made before tsq recorded them)
DEFAULT_FRONT = {"clear": 0.9, "possible": 0.1, "resamples": 1000, "seed": 0}


@dataclass(frozen=True)
class StudyData:
    """A study as the reports read it."""

    name: str
    directions: tuple[str, ...]  # "maximize" / "minimize", one per objective
    metric_names: tuple[str, ...] | None  # Optuna's names of the objectives (set by tsq)
    record: StudyRecord
    trials: tuple[TrialRecord, ...]  # every trial, by number

    @property
    def complete(self) -> list[TrialRecord]:
        """The COMPLETE trials that are not replicates: the sweep's own points."""
        return [t for t in self.trials if t.state == TrialState.COMPLETE and t.replicate is None]

    @property
    def replicates(self) -> list[TrialRecord]:
        """The COMPLETE replicates at the sweep's fidelity (`tsq sweep confirm`)."""
        return [
            t
            for t in self.trials
            if t.state == TrialState.COMPLETE and t.replicate is not None and not t.replicate.promoted
        ]

    @property
    def promoted(self) -> list[TrialRecord]:
        """The COMPLETE re-runs at the promoted fidelity (`tsq sweep promote`): never a point of the sweep's,
        nor a seed replicate of one (another fidelity measures other values)."""
        return [t for t in self.trials if t.state == TrialState.COMPLETE and t.replicate is not None
                and t.replicate.promoted]  # fmt: skip

    @property
    def objectives(self) -> list[tuple[str, str]]:
        """(metric, direction) of each objective the study recorded."""
        return list(zip(self.record.objectives or [], self.directions, strict=False))

    def front_settings(self, thresholds: dict[str, float] | None = None) -> dict[str, float]:
        """p_front's thresholds, resamples and seed: the study's, overridden by `thresholds`."""
        return {**DEFAULT_FRONT, **(self.record.front or {}), **(thresholds or {})}


def study_data(study: optuna.Study) -> StudyData:
    return StudyData(
        name=study.study_name,
        directions=tuple(d.name.lower() for d in study.directions),
        metric_names=None if study.metric_names is None else tuple(study.metric_names),
        record=StudyRecord.from_study(study),
        trials=tuple(trial_records(study)),
    )


def records_path(attr: Any, records_dir: Path | None, name: str) -> Path | None:
    """Where a result's per-response records are: the path the trial stored, else `records_dir/name`."""
    for path in (Path(attr) if attr else None, records_dir / name if records_dir else None):
        if path is not None and path.is_file():
            return path
    return None


@dataclass(frozen=True)
class ResultSums:
    """Per-problem sums of the baseline and of every COMPLETE trial not stopped early, from their records."""

    baseline: ProblemSums
    trials: dict[int, ProblemSums]
    stopped: list[int]  # stopped early: records of part of the problems only, never on the front


def load_sums(
    data: StudyData, complete: Sequence[TrialRecord], records_dir: Path | None, notes: list[str]
) -> ResultSums | None:
    """Per-problem sums of the baseline and the trials; None (and a note) when some records are missing."""
    budget = data.record.budget
    if not complete:
        return None
    base_path = records_path(complete[0].baseline_records, records_dir, "baseline.jsonl")
    # A trial stopped early (tsq/method/early_stop.py) holds records of part of the problems and is
    # infeasible: it is never on the front, and leaving it out keeps the joint resamples on every problem.
    stopped = [t.number for t in complete if t.stopped]
    paths = {t.number: records_path(t.records, records_dir, f"trial-{t.number}.jsonl")
             for t in complete if t.number not in stopped}  # fmt: skip
    missing = [n for n, p in paths.items() if p is None]
    if budget is None or base_path is None or missing:
        notes.append(
            "p_front not computed: it needs every trial's per-response records "
            f"(missing for {'the baseline' if base_path is None else f'trials {missing}'})"
        )
        return None
    return ResultSums(
        baseline=ProblemSums.from_records(read_records(base_path), int(budget)),
        trials={n: ProblemSums.from_records(read_records(p), int(budget)) for n, p in paths.items() if p},
        stopped=stopped,
    )


def trial_responses(trial: TrialRecord) -> list[dict[str, Any]] | None:
    """A trial's per-response records (None where they are not at the path it stored)."""
    path = records_path(trial.records, None, "")
    return None if path is None else read_records(path)


def provenance_lines(trials: Sequence[TrialRecord]) -> list[str]:
    """What ran the trials, one line per distinct record (several when a study spans code versions): the git
    commit, package versions and the model weights' hash each trial recorded (`tsq.study.provenance`)."""
    seen: dict[str, None] = {}
    for t in trials:
        commit = str(t.git_commit or "")
        dirty = "-dirty" if commit.endswith("-dirty") else ""  # uncommitted changes ran: say so
        parts = [f"commit {commit.removesuffix('-dirty')[:12]}{dirty}"] if commit else []
        parts += [f"{pkg} {v}" for pkg, v in (t.versions or {}).items()]
        model = (t.cache_keys or {}).get("model")
        parts += [f"model weights {model}"] if model else []
        if parts:
            seen[", ".join(parts)] = None
    return list(seen)


def export_records(
    data: StudyData, numbers: Sequence[int], folder: Path, also: Mapping[str, Any] | None = None
) -> None:
    """Copy the per-response records of the trials `numbers`, of the baseline and of `also` (file name ->
    the path a record stored) into `folder` (a report rebuilt elsewhere finds them there), and remove trial
    files of trials the report does not hold."""
    trials = {t.number: t for t in data.trials}
    wanted = {f"trial-{n}.jsonl": trials[n].records for n in numbers}
    if numbers:
        wanted["baseline.jsonl"] = trials[numbers[0]].baseline_records
    wanted.update(also or {})
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
