"""One worker: run trials of a study until it holds `n_trials` COMPLETE trials (a target for the whole study,
not "n more"), the timeout passes, or too many trials fail in a row.

Robustness: RDB storages run with heartbeats, so a killed worker's RUNNING trial is failed after the grace
period and re-queued (RetryHeartbeatStaleTrialCallback). A live worker whose trial a peer declared stale (its
heartbeats were late, on an overloaded machine) loses that trial to the re-queued copy, logs it and goes on;
Optuna would raise "Cannot tell a FAIL trial" out of `optimize`. A trial that raises (TrialFailed, NaN
metrics, OOM, anything) is recorded FAIL with its error in user attrs and the loop goes on; a worker gives up
only after `study.max_consecutive_failures` failures in a row. Safe to run in many processes against one
storage: which trials may run is `tsq.study.slots`'s rule, so workers that race never run one too many.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tsq.compat.optuna import quiet_traceback
from tsq.config.spec import Spec
from tsq.records import TrialRecord, is_replicate, write_trial_record
from tsq.signals import exit_if_stopping, sigterm_as_exit
from tsq.study.lifecycle import create_or_load
from tsq.study.objective import TrialObjective
from tsq.study.slots import RetryRule, held_slots, surplus
from tsq.study.storage import StorageURL
from tsq.study.tracking import Tracker, TrackerKind

POLL_S = 2.0
log = logging.getLogger(__name__)


class SurplusTrial(Exception):
    """A trial that started when the study's n_trials slots were all held (`tsq.study.slots`)."""


@dataclass
class WorkerReport:
    ran: int = 0
    completed: int = 0
    failed: int = 0
    reclaimed: int = 0  # trials a peer declared stale (and failed) while this worker still ran them
    surplus: int = 0  # trials started beside a peer's when all the study's slots were held (tsq.study.slots)
    stopped_reason: str = ""


def state_counts(trials: Sequence[FrozenTrial]) -> dict[TrialState, int]:
    """A study's trials by state; replicates (`tsq sweep confirm`, and `tsq sweep promote`'s runs at the
    promoted fidelity) do not count toward the study's n_trials."""
    counts = dict.fromkeys(TrialState, 0)
    for t in trials:
        if not is_replicate(t):
            counts[t.state] += 1
    return counts


def run_worker(
    spec: Spec,
    storage: StorageURL,
    name: str,
    n_trials: int | None,
    timeout: float | None,
    tracker_kind: TrackerKind,
    progress: bool = True,
) -> WorkerReport:
    """One worker: run trials of the study until it holds n_trials COMPLETE trials, the timeout passes, or
    too many trials fail in a row. Safe to run in many processes at once against one storage. The worker's
    generation backend is closed when it ends, on an error or SIGTERM too."""
    from tqdm import tqdm

    index = os.environ.get("TSQ_WORKER_INDEX")
    study = create_or_load(spec, storage, name, None if index is None else int(index))
    tracker = Tracker(tracker_kind, name, spec.study.wandb.project, spec.study.wandb.entity)
    bar = tqdm(total=n_trials, desc=f"study {name}", unit="trial", disable=not progress)
    with sigterm_as_exit(), closing(TrialObjective(spec, tracker, storage.masked)) as objective, closing(bar):
        return _run_trials(study, objective, spec, storage, n_trials, timeout, bar)


def _run_trials(
    study: optuna.Study,
    objective: TrialObjective,
    spec: Spec,
    storage: StorageURL,
    n_trials: int | None,
    timeout: float | None,
    bar: Any,
) -> WorkerReport:
    report = WorkerReport()
    deadline = None if timeout is None else time.monotonic() + timeout
    finished: list[FrozenTrial] = []
    bar.update(state_counts(study.get_trials(deepcopy=False))[TrialState.COMPLETE])
    consecutive_failures = 0
    started: list[int] = []  # the number of the trial this worker took up in this round
    rule = RetryRule(storage.supports_heartbeat, spec.study.heartbeat.max_retry)
    quiet_traceback(SurplusTrial)
    skipped: list[int] = []  # the surplus trial this worker ended in this round

    def run(trial: optuna.Trial) -> Any:
        started.append(trial.number)
        if n_trials is not None:
            reason = surplus(study.get_trials(deepcopy=False), trial.number, n_trials, rule)
            if reason is not None:  # FAIL, before any sampling: samplers and reports skip it
                write_trial_record(trial, TrialRecord(worker_pid=os.getpid(), error=reason))
                skipped.append(trial.number)
                raise SurplusTrial(reason)
        return objective(trial)

    while True:
        exit_if_stopping()  # a SIGTERM whose SystemExit was dropped: no trial after it
        optuna.storages.fail_stale_trials(study)  # a dead worker's trial: FAIL, then re-queued as WAITING
        trials = study.get_trials(deepcopy=False)  # one read: the counts and the slots agree
        counts = state_counts(trials)
        bar.n = counts[TrialState.COMPLETE]
        bar.refresh()
        done = n_trials is not None and counts[TrialState.COMPLETE] >= n_trials
        # Done, but a trial is still RUNNING: a peer's, or a killed worker's that goes stale within the grace
        # period. Wait for it to end or be failed, so a finished launch never leaves one stuck RUNNING.
        settling = done and counts[TrialState.RUNNING] > 0 and storage.supports_heartbeat
        if done and not settling:
            report.stopped_reason = f"the study holds {counts[TrialState.COMPLETE]} complete trials"
            return report
        if deadline is not None and time.monotonic() >= deadline:
            report.stopped_reason = "timeout"
            return report
        if settling:
            time.sleep(POLL_S)
            continue
        if (
            n_trials is not None
            and counts[TrialState.WAITING] == 0
            and held_slots(trials, rule, datetime.now()) >= n_trials
        ):
            time.sleep(POLL_S)  # the last trials are running elsewhere: start one only if one of them fails
            continue
        started.clear()
        skipped.clear()
        try:
            study.optimize(
                run,
                n_trials=1,
                catch=(Exception,),
                callbacks=[lambda _study, frozen: finished.append(frozen)],
                gc_after_trial=True,
            )
        except ValueError:
            if not started or _state_of(study, started[-1]) != TrialState.FAIL:
                raise
            log.warning(
                "trial %d was declared stale by another worker (no heartbeat within %d s) and failed; its "
                "result is dropped (a re-queued copy runs instead, up to study.heartbeat.max_retry times)",
                started[-1],
                spec.study.heartbeat.grace_period,
            )
            report.reclaimed += 1
            continue
        if not finished:  # the grid sampler has no point left
            report.stopped_reason = "the grid is exhausted"
            return report
        last = finished.pop()
        if skipped:
            log.info("trial %d ended as surplus: %s", last.number, TrialRecord.from_trial(last).error)
            report.surplus += 1
            continue
        report.ran += 1
        if last.state == TrialState.COMPLETE:
            report.completed += 1
            consecutive_failures = 0
        else:
            report.failed += 1
            consecutive_failures += 1
            if consecutive_failures >= spec.study.max_consecutive_failures:
                error = TrialRecord.from_trial(last).error
                report.stopped_reason = f"{consecutive_failures} trials failed in a row (last: {error})"
                return report


def _state_of(study: optuna.Study, number: int) -> TrialState:
    return next(t.state for t in study.get_trials(deepcopy=False) if t.number == number)
