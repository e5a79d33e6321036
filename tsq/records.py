"""The study's data model: what tsq records of a study (`StudyRecord`) and of each trial (`TrialRecord`), and
how both are stored in Optuna's user attrs. The only module that reads or writes user attrs: everything else
reads and writes records.

Storage: one user attr per field, under the names below (a trial's metrics flat beside them: each metric,
its interval `<metric>_lo/_hi/_se` (`tsq.method.metrics.interval_key`) and counts such as `n_problems`),
so optuna-dashboard and `optuna` scripts see plain values. A field that is None is not stored; a missing
attr reads as None. `FORMAT_ATTR` holds the format version each record was written in.

Format versions, each older one read through its migration (`TRIAL_MIGRATIONS`, `STUDY_MIGRATIONS`):
- 1: no version attr: every study and trial written before this module. A replicate then carried no `split`
  or `replicate` index where a study was built by hand (readers took "eval" and 1, fresh seeds).
- 2: the version attr; a replicate always carries its index and split.
- 3: a replicate may carry `replicate_fidelity`, the spec overlay it ran at (`tsq sweep promote`: the
  promoted fidelity); without it a replicate ran at the sweep's own fidelity, as every format-2 one did. The
  bump keeps a format-2 reader from taking a promoted trial for a seed replicate at the sweep's fidelity.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from tsq.method.metrics import IntervalPart, interval_key

if TYPE_CHECKING:  # the data loaders are slow to import (graders), and a record only names the split
    from tsq.data.loading import Split

FORMAT = 3  # the format this code writes
FORMAT_ATTR = "tsq_format"
Attrs = Mapping[str, Any]


def _trial_1_to_2(attrs: Attrs) -> dict[str, Any]:
    """A format-1 replicate without its split or index was on the eval split, at fresh seeds."""
    out = dict(attrs)
    if out.get("replicate_of") is not None:
        out.setdefault("split", "eval")
        out.setdefault("replicate", 1)
    out[FORMAT_ATTR] = 2
    return out


def _study_1_to_2(attrs: Attrs) -> dict[str, Any]:
    """Format 2 added only the version attr to a study's record."""
    return {**attrs, FORMAT_ATTR: 2}


def _2_to_3(attrs: Attrs) -> dict[str, Any]:
    """Format 3 added `replicate_fidelity`, absent from a replicate at the sweep's fidelity: every format-2
    record reads unchanged."""
    return {**attrs, FORMAT_ATTR: 3}


# version -> the migration of a record in that version to the next one
TRIAL_MIGRATIONS: dict[int, Callable[[Attrs], dict[str, Any]]] = {1: _trial_1_to_2, 2: _2_to_3}
STUDY_MIGRATIONS: dict[int, Callable[[Attrs], dict[str, Any]]] = {1: _study_1_to_2, 2: _2_to_3}


def migrate(attrs: Attrs, migrations: Mapping[int, Callable[[Attrs], dict[str, Any]]]) -> dict[str, Any]:
    """Stored attrs in the current format, through each migration from their own version on."""
    out = dict(attrs)
    version = int(out.get(FORMAT_ATTR, 1))
    if version > FORMAT:
        raise ValueError(f"record format {version} is newer than this tsq reads ({FORMAT}): upgrade tsq")
    while version < FORMAT:
        out = migrations[version](out)
        version = int(out[FORMAT_ATTR])
    return out


@dataclass(frozen=True)
class Replicate:
    """A re-run of another trial by `tsq sweep confirm` (at the sweep's fidelity) or `tsq sweep promote` (at
    the promoted fidelity): not counted in n_trials, never a front point."""

    of: int  # the original trial's number
    index: int  # 0: the original's own seeds (held-out split only); >= 1: fresh seeds
    split: Split  # "eval": the sweep's split; "test": the held-out split the sweep never saw
    seeds: dict[str, int] = field(default_factory=dict)  # "training", "evaluation": the seeds it overrides
    # `tsq sweep promote`: the spec overlay (study.promote) the trial ran at; None: the sweep's own fidelity
    fidelity: dict[str, Any] | None = None

    @property
    def promoted(self) -> bool:
        """Run at the promoted fidelity (`tsq sweep promote`), not a seed replicate of the sweep's."""
        return self.fidelity is not None

    @property
    def fresh(self) -> bool:
        """At new seeds; on the held-out split replicate 0 re-evaluates the picked adapter itself."""
        return self.split == "eval" or self.index >= 1


# The attrs that store a trial's `Replicate`
_REPLICATE_ATTRS = ("replicate_of", "replicate", "split", "replicate_seeds", "replicate_fidelity")
# TrialRecord's fields that Optuna holds: read by `from_trial`, never stored by `to_attrs`
_OPTUNA_FACTS = ("number", "state", "params", "distributions", "values", "feasible", "grid_point")


@dataclass(frozen=True)
class TrialRecord:
    """What tsq records of one trial, and the Optuna facts the reports read beside it (the first block,
    `_OPTUNA_FACTS`: from `from_trial`, never written by `to_attrs`)."""

    number: int = -1
    state: TrialState = TrialState.COMPLETE
    params: dict[str, Any] = field(default_factory=dict)
    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    values: tuple[float, ...] | None = None
    feasible: bool = True  # every constraint value <= 0 (Optuna's rule; no constraint: feasible)
    grid_point: bool = False  # proposed by the grid sampler: not picked by the sweep for looking good

    metrics: dict[str, Any] = field(default_factory=dict)  # flat: each metric, its interval, counts
    replicate: Replicate | None = None
    early_stop: dict[str, Any] | None = None  # the staged test's record (`tsq.method.early_stop`)
    records: str | None = None  # the path of the per-response records of its evaluation (JSONL)
    baseline_records: str | None = None  # ... and of the baseline's
    baseline: dict[str, Any] | None = None  # the baseline's metrics, as this trial measured them
    budget_curve: list[Any] | None = None
    cache_keys: dict[str, Any] | None = None
    seeds: dict[str, Any] | None = None
    stats: dict[str, Any] | None = None
    adapter_dir: str | None = None
    versions: dict[str, str] | None = None  # provenance: package versions that ran it
    git_commit: str | None = None  # ... and the commit ("-dirty" with uncommitted changes)
    out_dir: str | None = None
    worker_pid: int | None = None
    wandb_run_id: str | None = None
    error: str | None = None  # why it failed
    traceback: str | None = None

    @property
    def stopped(self) -> bool:
        """Stopped by the staged test: COMPLETE with the metrics of part of the problems only."""
        return bool((self.early_stop or {}).get("stopped"))

    def value(self, name: str) -> Any:
        """A metric's value (None where the trial lacks it)."""
        return self.metrics.get(name)

    def interval(self, name: str, part: IntervalPart) -> Any:
        """A metric's interval end or bootstrap SE (None where the trial lacks it)."""
        return self.metrics.get(interval_key(name, part))

    def to_attrs(self) -> dict[str, Any]:
        """The user attrs that store the record (not the Optuna facts; None fields left out)."""
        out: dict[str, Any] = dict(self.metrics)
        for name in _stored_fields():
            value = getattr(self, name)
            if value is None:
                continue
            if name == "replicate":
                out.update(
                    {"replicate_of": value.of, "replicate": value.index, "split": value.split,
                     "replicate_seeds": dict(value.seeds)}
                )  # fmt: skip
                if value.fidelity is not None:
                    out["replicate_fidelity"] = dict(value.fidelity)
            else:
                out[name] = value
        out[FORMAT_ATTR] = FORMAT
        return out

    @classmethod
    def from_attrs(cls, attrs: Attrs, **optuna_facts: Any) -> TrialRecord:
        """The record stored in `attrs` (any format version), with the Optuna facts given."""
        current = migrate(attrs, TRIAL_MIGRATIONS)
        stored = [name for name in _stored_fields() if name != "replicate"]
        known = {*stored, *_REPLICATE_ATTRS, FORMAT_ATTR}
        replicate = None
        if current.get("replicate_of") is not None:
            replicate = Replicate(
                int(current["replicate_of"]),
                int(current["replicate"]),
                current["split"],
                dict(current.get("replicate_seeds") or {}),
                current.get("replicate_fidelity"),
            )
        return cls(
            **optuna_facts,
            metrics={k: v for k, v in current.items() if k not in known},
            replicate=replicate,
            **{k: current.get(k) for k in stored},
        )

    @classmethod
    def from_trial(cls, trial: FrozenTrial | optuna.Trial) -> TrialRecord:
        """The record of a finished trial (with its Optuna facts), or of a live one (its number, params)."""
        if isinstance(trial, FrozenTrial):
            return cls.from_attrs(
                trial.user_attrs,
                number=trial.number,
                state=trial.state,
                params=dict(trial.params),
                distributions=dict(trial.distributions),
                values=None if trial.values is None else tuple(trial.values),
                feasible=all(v <= 0 for v in trial.constraints.values()),
                grid_point="grid_id" in trial.system_attrs,
            )
        return cls.from_attrs(trial.user_attrs, number=trial.number, state=TrialState.RUNNING,
                              params=dict(trial.params))  # fmt: skip


def _stored_fields() -> list[str]:
    """TrialRecord's fields stored one attr each (`replicate`: in `_REPLICATE_ATTRS`), metrics aside."""
    return [f.name for f in fields(TrialRecord) if f.name not in (*_OPTUNA_FACTS, "metrics")]


def is_replicate(trial: FrozenTrial | optuna.Trial) -> bool:
    """A replicate of another trial (`tsq sweep confirm`, or `tsq sweep promote` at the promoted fidelity):
    not counted in n_trials, never a front point."""
    return trial.user_attrs.get("replicate_of") is not None


def write_trial_record(trial: optuna.Trial, record: TrialRecord) -> None:
    """Store the record's fields that are set (a trial's record is written in parts as it runs: where it
    runs, then its result or its error). Values must be JSON (`tsq.study.provenance.json_safe`)."""
    for key, value in record.to_attrs().items():
        trial.set_user_attr(key, value)


def enqueue_replicate(study: optuna.Study, params: dict[str, Any], replicate: Replicate) -> None:
    """Queue a replicate: a trial at `params` whose record marks what it replicates, at which seeds."""
    study.enqueue_trial(params, user_attrs=TrialRecord(replicate=replicate).to_attrs())


def trial_records(study: optuna.Study, states: Iterable[TrialState] | None = None) -> list[TrialRecord]:
    """Every trial's record, by number (only those in `states` when given)."""
    found = study.get_trials(deepcopy=False, states=None if states is None else tuple(states))
    return [TrialRecord.from_trial(t) for t in found]


@dataclass(frozen=True)
class StudyRecord:
    """What tsq records of a study: its settings as launched, and the baseline's metrics."""

    objectives: list[str] | None = None  # the metrics it optimises, in the order of its directions
    searched: list[str] | None = None  # the searched knobs (format 1 studies before search_space)
    search_space: dict[str, Any] | None = None  # each range's settings, each fixed value
    spec_name: str | None = None
    front: dict[str, Any] | None = None  # p_front's thresholds, resamples and seed (study.front)
    effects: dict[str, Any] | None = None  # the effects report's primary family and margins
    constraint: dict[str, Any] | None = None  # study.constraint (max_accuracy_drop); None: none
    sampler: dict[str, Any] | None = None  # study.sampler as first launched (the report's model view)
    baseline: dict[str, Any] | None = None  # the baseline's metrics, from its first trial

    @property
    def max_accuracy_drop(self) -> float | None:
        return (self.constraint or {}).get("max_accuracy_drop")

    @property
    def budget(self) -> int | None:
        value = (self.baseline or {}).get("budget")
        return None if value is None else int(value)

    def to_attrs(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}
        return {**out, FORMAT_ATTR: FORMAT}

    @classmethod
    def from_attrs(cls, attrs: Attrs) -> StudyRecord:
        current = migrate(attrs, STUDY_MIGRATIONS)
        return cls(**{f.name: current.get(f.name) for f in fields(cls)})

    @classmethod
    def from_study(cls, study: optuna.Study) -> StudyRecord:
        return cls.from_attrs(study.user_attrs)

    @classmethod
    def from_storage(cls, storage: optuna.storages.BaseStorage, study_id: int) -> StudyRecord:
        """The record of a study in `storage`, read before the study is loaded."""
        return cls.from_attrs(storage.get_study_user_attrs(study_id))


def write_study_record(study: optuna.Study, record: StudyRecord) -> None:
    """Store the record's fields that are set."""
    for key, value in record.to_attrs().items():
        study.set_user_attr(key, value)


def record_baseline(study: optuna.Study, baseline: dict[str, Any]) -> None:
    """Store the baseline's metrics with the study, unless an earlier trial did."""
    if StudyRecord.from_study(study).baseline is None:
        write_study_record(study, StudyRecord(baseline=baseline))
