"""SIGTERM stops a worker even when Python drops the SystemExit its handler raised: the handler can run inside
a `__del__` or a weakref callback, where Python prints the exception ("Exception ignored in ...") and goes on.
Under Slurm that happened to a cancelled task (tests/test_slurm.py): it ran on with its W&B service gone and
failed its trial and 4 more, where its trial should have been left RUNNING for a peer to retry."""

from __future__ import annotations

import gc
import os
import signal
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from programs import synthetic_spec
from tqdm import tqdm

from objectives.tokensqueeze.config import TokenSqueezeSpec as Spec
from objectives.tokensqueeze.config import TrialParams
from tsq.recipe import FunctionRecipe, TrialContext, TrialResult, load_spec
from tsq.signals import exit_if_stopping, sigterm_as_exit
from tsq.study.objective import TrialObjective
from tsq.study.storage import open_storage, parse_storage_url
from tsq.study.tracking import Tracker
from tsq.study.worker import _run_trials


class _SigtermInDel:
    """Sends this process SIGTERM from its `__del__` and lets the handler run there."""

    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(10_000):  # bytecodes: the pending handler runs among them, inside __del__
            pass


def _drop_a_sigterm() -> None:
    _SigtermInDel()
    gc.collect()


def test_a_dropped_sigterm_is_raised_again() -> None:
    with sigterm_as_exit():
        _drop_a_sigterm()  # no SystemExit here: Python dropped it
        with pytest.raises(SystemExit) as stop:
            exit_if_stopping()
    assert stop.value.code == 128 + signal.SIGTERM
    exit_if_stopping()  # outside the block: nothing pending


def _dropped_sigterm_trial(spec: Spec, params: TrialParams, ctx: TrialContext) -> TrialResult:
    """A trial whose SIGTERM is dropped, then fails as W&B's next call did once its service was stopped."""
    _drop_a_sigterm()
    raise ConnectionResetError("Connection lost")


dropped_sigterm_trial = FunctionRecipe(_dropped_sigterm_trial, Spec)


def test_a_worker_whose_sigterm_was_dropped_leaves_its_trial_running(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    spec = load_spec(
        synthetic_spec(tmp_path / "s.yaml", "sig", 3, program="test_signals:dropped_sigterm_trial")
    )
    url = parse_storage_url(f"sqlite:///{tmp_path / 's.db'}")
    study = optuna.create_study(
        study_name="sig", storage=open_storage(url, spec.study.heartbeat), directions=spec.study.directions
    )
    objective = TrialObjective(spec, Tracker("none", "sig", "tsq"), "memory")
    try:
        with sigterm_as_exit(), pytest.raises(SystemExit) as stop:
            _run_trials(study, objective, spec, url, 3, None, tqdm(disable=True))
    finally:
        objective.close()
    assert stop.value.code == 128 + signal.SIGTERM
    trials = study.get_trials()
    # left for a peer's stale check to retry; not failed with the shutdown's error, and no trial after it
    assert [t.state for t in trials] == [TrialState.RUNNING]
    assert "error" not in trials[0].user_attrs


def test_no_trial_starts_after_a_dropped_sigterm(tmp_path: Path) -> None:
    url = parse_storage_url(f"sqlite:///{tmp_path / 'n.db'}")
    study = optuna.create_study(study_name="n", storage=open_storage(url))

    def objective(trial: optuna.Trial) -> float:
        _drop_a_sigterm()  # between trials, as it may be: the trial itself ends well
        return trial.suggest_float("x", 0, 1)

    with sigterm_as_exit(), pytest.raises(SystemExit):
        _run_trials(study, objective, Spec(), url, 3, None, tqdm(disable=True))  # type: ignore[arg-type]
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE]
