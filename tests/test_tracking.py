"""W&B tracking, offline: runs written to disk and read back (group, job type, config keys, summary)."""

from __future__ import annotations

from pathlib import Path

import pytest
from wandb_files import read_runs

from tsq.study.tracking import Tracker, wandb_mode


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
    # one type per config key across the project: `study` is a mapping in trial and summary runs alike
    assert trial.config["study"] == {"name": "study-x"} == runs["study-x-summary"].config["study"]
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


def test_the_summary_table_joins_the_trial_runs_with_feasibility_front_and_p_front(
    offline: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The launch's summary (`tsq.cli.sweep._summarise`) on a study whose trials have W&B runs: its table
    carries each trial's run id, feasibility, front membership, p_front and the recommendation, read back
    from the offline files and joined with the trial runs by id."""
    import json

    from test_report import CROWDED, crowded_study

    from tsq.cli.sweep import _summarise
    from tsq.method.stats import classify_front

    monkeypatch.setenv("TSQ_HOME", str(tmp_path / "home"))
    tracker = Tracker("wandb", "crowded", project="tsq-test")
    run_ids = {}
    for number, (accuracy, _) in enumerate(CROWDED):  # the trial runs, as the workers make them
        run = tracker.trial(number, {"trial_number": number, "study": {"sampler": {"name": "tpe"}}})
        run.finish_ok(summary={"accuracy": accuracy}, config={}, budget_curve=[], baseline_curve=[])
        run_ids[number] = run.run_id
    study = crowded_study(f"sqlite:///{tmp_path / 's.db'}", tmp_path / "runs", run_ids)
    _summarise(study, "tsq-test", None, "wandb", Path("sweeps/crowded.yaml"))

    runs = read_runs(offline)
    summary = next(r for r in runs if r.job_type == "summary")
    trial_runs = {r.path.name.rsplit("-", 1)[1]: r for r in runs if r.job_type == "trial"}
    assert {type(r.config["study"]) for r in runs} == {dict}  # one type for the key in the whole project
    assert summary.summary["recommended/trial"] == 3 and summary.summary["recommended/alpha"] == 0.4
    assert summary.summary["recommended/run_id"] in trial_runs
    assert "tsq recommends trial 3" in summary.summary["recommendation"]
    (table_file,) = summary.path.glob("files/media/table/pareto/table_*.table.json")
    table = json.loads(table_file.read_text())
    rows = [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]
    joined = {trial_runs[r["wandb_run_id"]].name: r for r in rows}  # every row joins a trial run
    assert len(joined) == 7
    three, six = joined["crowded-trial-3"], joined["crowded-trial-6"]
    assert (three["feasible"], three["pareto"], three["recommended"]) == ("yes", True, "recommended")
    assert 0.1 < three["p_front"] < 1 and three["front"] == classify_front(three["p_front"])
    assert joined["crowded-trial-1"]["recommended"] == "not separable from it"
    assert (six["feasible"], six["pareto"], six["p_front"]) == ("no (stopped early)", False, 0.0)
