"""W&B tracking, offline: runs written to disk and read back (group, job type, config keys, summary)."""

from __future__ import annotations

from pathlib import Path

import pytest
from wandb_files import read_runs

from tsq.tracking import Tracker, wandb_mode


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: not logged in
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    return tmp_path / "wb"


def test_mode_is_offline_unless_logged_in(
    offline: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert wandb_mode() == "offline"
    (tmp_path / ".netrc").write_text("machine api.wandb.ai login user password not-a-real-key\n")
    (tmp_path / ".netrc").chmod(0o600)
    assert wandb_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode() == "disabled"


def test_trial_and_summary_runs_read_back(offline: Path) -> None:
    tracker = Tracker("wandb", "study-x", project="tsq-test")
    run = tracker.trial(3, {"alpha": 0.2, "lambda": 1.0, "training": {"beta": 0.1}})
    run.log({"train/loss": 0.5, "train/step": 1})
    run.finish_ok(
        summary={"accuracy": 0.6, "len_all": 40.0},
        config={"cache_keys": {"samples": "abc"}},
        budget_curve=[(32, 0.2), (64, 0.6)],
        baseline_curve=[(32, 0.1), (64, 0.5)],
    )
    failed = tracker.trial(4, {"alpha": 0.9})
    failed.finish_failed("TrialFailed: no pairs")
    tracker.summary(["trial", "accuracy", "pareto"], [[3, 0.6, True]], {"n_complete": 1}, image=None)

    runs = {r.name: r for r in read_runs(offline)}
    trial = runs["study-x-trial-3"]
    assert (trial.group, trial.job_type) == ("study-x", "trial")
    assert {"alpha", "lambda", "training", "cache_keys"} <= set(trial.config)
    assert trial.summary["accuracy"] == 0.6 and trial.summary["len_all"] == 40.0
    assert "train/loss" in trial.history_keys and trial.exit_code == 0
    assert runs["study-x-trial-4"].summary["error"] == "TrialFailed: no pairs"
    assert runs["study-x-trial-4"].exit_code == 1
    summary = runs["study-x-summary"]
    assert (summary.group, summary.job_type) == ("study-x", "summary")
    assert summary.summary["n_complete"] == 1 and summary.summary["pareto/table/nrows"] == 1


def test_tracker_none_writes_nothing(offline: Path) -> None:
    tracker = Tracker("none", "s", project="p")
    run = tracker.trial(0, {"alpha": 0.2})
    run.log({"x": 1})
    run.finish_failed("boom")
    assert run.run_id is None and not offline.exists()
