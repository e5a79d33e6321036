"""`tsq sweep confirm`: re-run the front (or the top K by p_front) with new training and evaluation seeds, on
the sweep's eval split or on a held-out split it never saw (docs/method.md "Statistics": seed noise and the
winner's curse). A confirmed value is the mean over the fresh seeds only; the sweep's own run is shown beside
it, never averaged in.

Replicates are ordinary trials of the same study, enqueued with the original's parameters and their record's
`tsq.records.Replicate` (the original's number, the replicate's index, its seeds and split). The objective
hands those seeds and that split to the trial program (`TrialContext.seeds`, `.split`), which re-evaluates the
baseline at each new evaluation seed. Replicates do not count toward `n_trials` and never enter the front as
points of their own; the report aggregates them under their original.
"""

from __future__ import annotations

import json
from contextlib import closing
from typing import Any

import optuna
from optuna.trial import TrialState

from tsq.config.spec import Spec
from tsq.data.loading import Split, load_problem_set
from tsq.errors import UserError
from tsq.records import Replicate, TrialRecord, enqueue_replicate, trial_records
from tsq.report.data import study_data
from tsq.report.table import front_trials, table_of
from tsq.signals import sigterm_as_exit
from tsq.study.lifecycle import create_or_load, study_name_of
from tsq.study.objective import TrialObjective
from tsq.study.storage import StorageURL, parse_storage_url
from tsq.study.tracking import Tracker, TrackerKind


def plan(spec: Spec, targets: list[TrialRecord], replicates: int, split: Split) -> list[Replicate]:
    """Seeds of each replicate: replicate r ≥ 1 shifts both seeds by r, so `replicates` fresh seeds per trial
    (the original is replicate 0). The fresh seeds alone estimate the configuration: the original was picked
    for looking good, so averaging it in would keep the winner's curse. On the held-out split replicate 0 is
    run as well, at the original's seeds: the very adapter the sweep picked, evaluated there, which the report
    shows apart from the fresh seeds."""
    first = 1 if split == "eval" else 0
    return [
        Replicate(t.number, r, split,
                  {"training": spec.training.seed + 7919 * r, "evaluation": spec.evaluation.seed + 7919 * r})
        for t in targets
        for r in range(first, replicates + 1)
    ]  # fmt: skip


def targets_of(study: optuna.Study, top: int | None) -> list[TrialRecord]:
    """The front (non-replicate, feasible, non-dominated), or the top K trials by p_front."""
    data = study_data(study)
    if top is None:
        return front_trials(data)
    table = table_of(data)
    if any(r.p_front is None for r in table.rows):
        raise UserError(f"--top {top}: p_front is unknown for this study ({'; '.join(table.notes)})")
    best = sorted(table.rows, key=lambda r: (-(r.p_front or 0.0), r.number))[:top]
    trials = {t.number: t for t in data.trials}
    return [trials[r.number] for r in best]


def open_targets(
    spec: Spec, storage_url: str | None, study_name: str | None, top: int | None, split: Split, verb: str
) -> tuple[StorageURL, optuna.Study, list[TrialRecord]]:
    """The storage, the study and the trials to re-run (`targets_of`) for `confirm` and `promote` (`verb`);
    a spec without the held-out split it asks for, or a study with no complete trial on its front, is one
    UserError before any work."""
    storage = parse_storage_url(storage_url or spec.study.storage)
    name = study_name_of(spec, study_name)
    if split == "test":
        load_problem_set(spec.data, "test")
    study = create_or_load(spec, storage, name)
    targets = targets_of(study, top)
    if not targets:
        raise UserError(f"study {name}: no complete trial on the front to {verb} yet")
    return storage, study, targets


def confirm(
    spec: Spec,
    storage_url: str | None,
    study_name: str | None,
    top: int | None,
    replicates: int,
    split: Split,
    tracker_kind: TrackerKind,
) -> tuple[optuna.Study, list[Replicate]]:
    """Enqueue the replicates a study lacks and run them here; returns the study and the replicates."""
    storage, study, targets = open_targets(spec, storage_url, study_name, top, split, "confirm")
    wanted = plan(spec, targets, replicates, split)
    run_replicates(spec, storage, study, wanted, {t.number: t.params for t in targets}, tracker_kind)
    return study, wanted


def run_replicates(
    spec: Spec,
    storage: StorageURL,
    study: optuna.Study,
    wanted: list[Replicate],
    params: dict[int, dict[str, Any]],
    tracker_kind: TrackerKind,
) -> None:
    """Enqueue the replicates in `wanted` that the study lacks (`params`: each original's point) and run them
    here, each failed one retried once; an interrupted run is resumed by running it again (the queue holds
    what is left, a relaunch adds only what is missing). A replicate a killed confirm left RUNNING is failed
    as stale and re-queued with its record before the missing ones are counted: counted as RUNNING, then
    re-queued by Optuna's own stale check as the run began, it was queued twice, one copy left WAITING."""
    optuna.storages.fail_stale_trials(study)
    existing = replicates_of(study, (TrialState.COMPLETE, TrialState.WAITING, TrialState.RUNNING))
    for r in wanted:
        if key_of(r) not in existing:
            enqueue_replicate(study, params[r.of], r)
    tracker = Tracker(tracker_kind, study.study_name, spec.study.wandb.project, spec.study.wandb.entity)
    with sigterm_as_exit(), closing(TrialObjective(spec, tracker, storage.masked)) as objective:
        for _ in range(2 * len(wanted)):  # room to retry each failed replicate once
            done = replicates_of(study)
            missing = [r for r in wanted if key_of(r) not in done]
            if not missing:
                break
            if not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
                for r in missing:  # what failed goes back in the queue
                    enqueue_replicate(study, params[r.of], r)
            study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=True)


ReplicateKey = tuple[int, int, str, str]


def key_of(replicate: Replicate) -> ReplicateKey:
    """What makes a replicate the one asked for: its original, index, split and fidelity (a promoted re-run,
    `tsq sweep promote`, at another overlay is another run; none of them is one `confirm` asks for)."""
    fidelity = "" if replicate.fidelity is None else json.dumps(replicate.fidelity, sort_keys=True)
    return (replicate.of, replicate.index, replicate.split, fidelity)


def replicates_of(
    study: optuna.Study, states: tuple[TrialState, ...] = (TrialState.COMPLETE,)
) -> set[ReplicateKey]:
    """The keys (`key_of`) of the study's replicates in `states`."""
    return {key_of(t.replicate) for t in trial_records(study, states) if t.replicate is not None}
