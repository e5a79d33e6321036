"""End-to-end sweeps with the real trial program on the tiny test model (sweeps/smoke.yaml): SQLite with
W&B offline runs read back, a failing trial recorded and skipped, two worker processes on a real PostgreSQL
server, and a relaunch after a SIGKILLed worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from pg import PgServer, postgres_server  # noqa: F401  (session fixture)
from typer.testing import CliRunner
from wandb_files import read_runs

from tsq.cli.main import app

SMOKE = Path(__file__).resolve().parents[1] / "sweeps" / "smoke.yaml"
pytestmark = pytest.mark.slow


@pytest.fixture
def home(tsq_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The session's TSQ_HOME (tiny model + warm cache shared by these tests), W&B offline in tmp_path."""
    monkeypatch.setenv("TSQ_HOME", str(tsq_home))
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("TSQ_NO_PROGRESS", "1")
    return tmp_path


def _launch(*args: str) -> None:
    result = CliRunner().invoke(app, ["sweep", "launch", str(SMOKE), *args])
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"


def _states(study: optuna.Study) -> list[TrialState]:
    return [t.state for t in study.get_trials(deepcopy=False)]


def test_smoke_sweep_sqlite_with_wandb_offline(home: Path) -> None:
    url = f"sqlite:///{home / 's.db'}"
    _launch("--storage", url, "--study", "smoke-a")
    study = optuna.load_study(study_name="smoke-a", storage=url)
    assert _states(study) == [TrialState.COMPLETE, TrialState.COMPLETE]
    first = study.trials[0]
    assert first.params == {"alpha": 0.2, "epsilon": 0.005, "lambda": 1.0, "eta": 0.5}  # the paper's point
    attrs = first.user_attrs
    assert {"accuracy", "len_all", "len_correct", "auc", "token_reduction", "accuracy_delta"} <= set(attrs)
    assert {"cache_keys", "seeds", "versions", "git_commit", "baseline", "budget_curve"} <= set(attrs)
    assert first.values == [attrs["accuracy"], attrs["len_all"]]

    runs = read_runs(home / "wb")
    trials = [r for r in runs if r.job_type == "trial"]
    assert len(trials) == 2 and {r.group for r in runs} == {"smoke-a"}
    assert {"alpha", "epsilon", "lambda", "eta", "cache_keys", "training", "study"} <= set(trials[0].config)
    assert (
        "***" in str(trials[0].config["study"]["storage"]) or "sqlite" in trials[0].config["study"]["storage"]
    )
    assert trials[0].summary["accuracy"] == pytest.approx(attrs["accuracy"])
    (summary,) = [r for r in runs if r.job_type == "summary"]
    assert summary.summary["n_complete"] == 2

    # n_trials is the study's target of COMPLETE trials: a relaunch asking for 3 runs exactly one more.
    _launch("--storage", url, "--study", "smoke-a", "--n-trials", "3", "--tracker", "none")
    assert _states(optuna.load_study(study_name="smoke-a", storage=url)).count(TrialState.COMPLETE) == 3


def test_failing_trials_are_recorded_and_the_worker_stops(home: Path) -> None:
    spec = home / "broken.yaml"
    # every trial raises TrialFailed (bad input such as a too small training.max_length is refused before the
    # study is touched; see tests/test_bad_input.py)
    text = SMOKE.read_text().replace("n_trials: 2", "n_trials: 2\n  max_consecutive_failures: 2")
    spec.write_text(text + "  program: programs:failing_trial\n")
    url = f"sqlite:///{home / 's.db'}"
    result = CliRunner().invoke(app, ["sweep", "launch", str(spec), "--storage", url, "--tracker", "none"])
    assert result.exit_code == 0, result.output
    assert "2 trials failed in a row" in result.output
    study = optuna.load_study(study_name="smoke", storage=url)
    assert _states(study) == [TrialState.FAIL, TrialState.FAIL]
    assert "TrialFailed: a trial that cannot succeed" in study.trials[0].user_attrs["error"]


@pytest.mark.postgres
def test_two_workers_share_a_postgres_study(home: Path, postgres_server: PgServer) -> None:  # noqa: F811
    url = postgres_server.new_database()
    _launch("--storage", url, "--study", "pg", "--workers", "2", "--n-trials", "4", "--tracker", "none")
    study = optuna.load_study(study_name="pg", storage=url.replace("postgresql://", "postgresql+psycopg2://"))
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials].count(TrialState.COMPLETE) == 4
    assert TrialState.RUNNING not in [t.state for t in trials]
    assert sorted(t.number for t in trials) == list(range(len(trials)))  # none lost, none duplicated
    assert len({t.user_attrs["worker_pid"] for t in trials}) == 2  # both workers ran trials


def test_relaunch_after_a_killed_worker_completes_the_study(home: Path) -> None:
    url = f"sqlite:///{home / 'k.db'}"
    cmd = [sys.executable, "-c", "from tsq.cli.main import run; run()", "sweep", "launch", str(SMOKE)]
    worker = subprocess.Popen(
        [*cmd, "--storage", url, "--study", "k", "--tracker", "none"], env=os.environ.copy()
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            time.sleep(1)
            try:
                study = optuna.load_study(study_name="k", storage=url)
            except KeyError:
                continue
            if TrialState.RUNNING in _states(study):
                break
        assert worker.poll() is None, "the worker ended before a trial was running"
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    killed = next(t.number for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING)
    _launch("--storage", url, "--study", "k", "--tracker", "none")  # waits out the grace period, retries
    study = optuna.load_study(study_name="k", storage=url)
    states = _states(study)
    assert states.count(TrialState.COMPLETE) == 2 and TrialState.RUNNING not in states
    assert study.trials[killed].state == TrialState.FAIL
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed]
    assert retried and retried[0].params == study.trials[killed].params
