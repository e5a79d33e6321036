"""Which trials hold a study's n_trials slots (tsq.study.slots), and workers that race for the last slot: the
two races that ran 4 complete trials for n_trials 3 on a real Slurm cluster, replayed step by step."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState, create_trial
from tqdm import tqdm

import tsq.study.worker as worker
from objectives.tokensqueeze.config import TokenSqueezeSpec as Spec
from tsq.config.space import HeartbeatSpec
from tsq.records import Replicate, TrialRecord
from tsq.study.slots import PENDING_RETRY_S, RetryRule, held_slots, surplus
from tsq.study.storage import open_storage, parse_storage_url

X = {"x": FloatDistribution(0, 1)}
RULE = RetryRule(heartbeat=True, max_retry=2)


def _add(study: optuna.Study, state: TrialState, x: float = 0.5, **attrs: Any) -> FrozenTrial:
    """A trial in `state`, with `error` (tsq failed it), `replicate`, `retry_of` (a stale trial's retry)."""
    user = TrialRecord(error=attrs.get("error"), replicate=attrs.get("replicate")).to_attrs()
    system: dict[str, Any] = {}
    if "retry_of" in attrs:
        failed = study.trials[attrs["retry_of"]]
        history = [*RetryHeartbeatStaleTrialCallback.retry_history(failed), failed.number]
        system = {"failed_trial": history[0], "retry_history": history}
    values = 1.0 if state == TrialState.COMPLETE else None
    study.add_trial(create_trial(state=state, params={"x": x}, distributions=X, value=values,
                                 user_attrs=user, system_attrs=system))  # fmt: skip
    return study.trials[-1]


def _failed_at(study: optuna.Study, number: int) -> datetime:
    complete = study.trials[number].datetime_complete
    assert complete is not None
    return complete


def test_each_live_root_holds_one_slot_and_a_retry_runs_in_its_root_s() -> None:
    study = optuna.create_study()
    _add(study, TrialState.COMPLETE)  # 0
    _add(study, TrialState.FAIL, error="TrialFailed: loss became nan")  # 1: tsq failed it: no slot
    _add(study, TrialState.FAIL)  # 2: stale, retried as 4
    _add(study, TrialState.RUNNING)  # 3
    _add(study, TrialState.RUNNING, retry_of=2)  # 4
    _add(study, TrialState.WAITING)  # 5
    later = _failed_at(study, 2) + timedelta(seconds=PENDING_RETRY_S + 1)
    trials = study.get_trials()
    assert held_slots(trials, RULE, later) == 4  # roots 0, 2 (through 4), 3, 5
    assert held_slots(trials, RULE, later, below=3) == 2
    assert surplus(trials, 4, 2, RULE) is None  # the retry runs in root 2's slot: only root 0 below it
    assert surplus(trials, 4, 1, RULE) is not None
    assert surplus(trials, 3, 2, RULE).startswith("surplus: 2 earlier trials")  # type: ignore[union-attr]
    assert surplus(trials, 3, 3, RULE) is None


def test_a_stale_trial_holds_its_slot_until_its_retry_is_queued_and_no_longer() -> None:
    study = optuna.create_study()
    _add(study, TrialState.FAIL)
    failed = _failed_at(study, 0)
    trials = study.get_trials()
    assert held_slots(trials, RULE, failed + timedelta(seconds=1)) == 1
    # the peer that failed it died before queuing its retry: the slot frees itself
    assert held_slots(trials, RULE, failed + timedelta(seconds=PENDING_RETRY_S + 1)) == 0
    # no retry to come: without heartbeats, or with max_retry spent
    assert held_slots(trials, RetryRule(heartbeat=False, max_retry=2), failed) == 0
    _add(study, TrialState.FAIL, retry_of=0)  # 1
    _add(study, TrialState.FAIL, retry_of=1)  # 2: the second retry, itself stale
    assert held_slots(study.get_trials(), RULE, _failed_at(study, 2)) == 0


def test_replicates_hold_no_slot_and_are_never_surplus() -> None:
    study = optuna.create_study()
    _add(study, TrialState.COMPLETE)
    replicate = Replicate(of=0, index=1, split="test", seeds={"training": 7})
    _add(study, TrialState.RUNNING, replicate=replicate)
    trials = study.get_trials()
    assert held_slots(trials, RULE, datetime.now()) == 1
    assert surplus(trials, 1, 1, RULE) is None


def _race_storage(tmp_path: Path) -> tuple[optuna.Study, Any]:
    url = parse_storage_url(f"sqlite:///{tmp_path / 'race.db'}")
    storage = open_storage(url, HeartbeatSpec(interval=5, grace_period=60, max_retry=3))
    return optuna.create_study(study_name="race", storage=storage), url


def _peer_acts(monkeypatch: pytest.MonkeyPatch, *acts: Callable[[], None]) -> None:
    """The worker's k-th count of the study in its loop is followed by what a peer does then (`acts[k]`), as
    if the peer ran between the worker's read of the study and its next step."""
    real = worker.state_counts
    calls = iter([lambda: None, *acts])  # the first count sets the progress bar

    def counts_then_peer(trials: Sequence[FrozenTrial]) -> dict[TrialState, int]:
        counts = real(trials)
        next(calls, lambda: None)()
        return counts

    monkeypatch.setattr(worker, "state_counts", counts_then_peer)


def _run(study: optuna.Study, url: Any, ran: list[int]) -> worker.WorkerReport:
    def objective(trial: optuna.Trial) -> float:
        ran.append(trial.number)
        return trial.suggest_float("x", 0, 1)

    return worker._run_trials(study, objective, Spec(), url, 3, None, tqdm(disable=True))  # type: ignore[arg-type]


def test_two_workers_that_see_one_waiting_retry_run_it_once_and_nothing_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    study, url = _race_storage(tmp_path)
    _add(study, TrialState.COMPLETE)
    _add(study, TrialState.COMPLETE)
    study.enqueue_trial({"x": 0.25})  # 2: the retry both workers see WAITING
    storage, study_id = study._storage, study._study_id

    def peer_takes_it_up() -> None:
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, 2)
        assert storage.set_trial_state_values(trial_id, TrialState.RUNNING)

    def peer_finishes_it() -> None:
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, 2)
        storage.set_trial_param(trial_id, "x", 0.25, X["x"])
        storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [0.25])

    ran: list[int] = []
    _peer_acts(monkeypatch, peer_takes_it_up, peer_finishes_it)
    # Optuna's own warnings, whatever verbosity an earlier test left
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.INFO)
    optuna.logging.enable_propagation()
    try:
        with caplog.at_level(logging.INFO):
            report = _run(study, url, ran)
    finally:
        optuna.logging.disable_propagation()
        optuna.logging.set_verbosity(verbosity)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3 + [TrialState.FAIL]
    assert (ran, report.surplus, report.ran, report.failed) == ([], 1, 0, 0)
    assert TrialRecord.from_trial(trials[3]).error.startswith("surplus: 3 earlier trials")  # type: ignore[union-attr]
    assert trials[3].params == {}  # ended before it sampled: no point for a sampler to learn from
    assert TrialRecord.from_trial(trials[3]).worker_pid == os.getpid()
    # one line from Optuna, no traceback: nothing went wrong
    failed = [r for r in caplog.records if "Trial 3 failed" in r.getMessage()]
    assert failed and all(r.exc_info is None for r in failed), failed


def test_a_worker_waits_for_a_stale_trials_retry_to_be_queued(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study, url = _race_storage(tmp_path)
    _add(study, TrialState.FAIL, x=0.75)  # 0: a peer's stale check failed it just now; its retry is next
    _add(study, TrialState.COMPLETE)
    _add(study, TrialState.COMPLETE)

    def peer_queues_the_retry() -> None:
        RetryHeartbeatStaleTrialCallback(max_retry=3)(study, study.trials[0])

    ran: list[int] = []
    _peer_acts(monkeypatch, lambda: None, peer_queues_the_retry)  # waits, then finds it queued
    report = _run(study, url, ran)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL] + [TrialState.COMPLETE] * 3
    assert (ran, report.surplus) == ([3], 0)
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(trials[3]) == 0
    assert trials[3].params == {"x": 0.75}
