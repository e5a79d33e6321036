"""`tsq sweep confirm`: replicates of the front with new seeds, on the eval split and on a held-out split,
through the CLI with a synthetic trial program (tests/programs.py): what is under test is the study logic."""

from __future__ import annotations

import os
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from programs import synthetic_spec
from typer.testing import CliRunner

from tsq.cli.main import app
from tsq.config.space import HeartbeatSpec
from tsq.records import Replicate, TrialRecord, enqueue_replicate, is_replicate
from tsq.report.pareto import pareto_trials
from tsq.report.table import replicate_groups, study_table
from tsq.study.confirm import plan
from tsq.study.storage import open_storage, parse_storage_url


def _spec(tmp_path: Path, test_split: bool) -> Path:
    path = synthetic_spec(tmp_path / "conf.yaml", "conf", 4)
    if not test_split:
        spec = yaml.safe_load(path.read_text())
        del spec["data"]["test"]
        path.write_text(yaml.safe_dump(spec))
    return path


def _cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return result.output


def _launch(spec: Path, db: Path, tsq_home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Launch `spec`'s study into SQLite file `db`; returns the storage URL."""
    # the session's TSQ_HOME: the launch's preflight resolves the (already built) tiny test model
    monkeypatch.setenv("TSQ_HOME", str(tsq_home))
    monkeypatch.setenv("TSQ_NO_PROGRESS", "1")
    url = f"sqlite:///{db}"
    _cli("sweep", "launch", str(spec), "--storage", url, "--tracker", "none")
    return url


@pytest.fixture
def launched(tmp_path: Path, tsq_home: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str]:
    spec = _spec(tmp_path, test_split=True)
    return spec, _launch(spec, tmp_path / "c.db", tsq_home, monkeypatch)


def test_replicates_are_marked_not_counted_and_never_front_points(launched: tuple[Path, str]) -> None:
    spec, url = launched
    study = optuna.load_study(study_name="conf", storage=url)
    front = [t.number for t in pareto_trials(study)]
    out = _cli("sweep", "confirm", str(spec), "--storage", url, "--replicates", "2", "--tracker", "none")
    assert f"confirmed trials {front}" in out
    study = optuna.load_study(study_name="conf", storage=url)
    reps = [t for t in study.get_trials() if is_replicate(t)]
    assert len(reps) == 2 * len(front) and all(t.state == TrialState.COMPLETE for t in reps)
    assert {t.user_attrs["replicate_of"] for t in reps} == set(front)
    assert all(t.params == study.trials[t.user_attrs["replicate_of"]].params for t in reps)
    assert [t.number for t in pareto_trials(study)] == front  # replicates are no points of their own
    # a relaunch with the same n_trials runs nothing: replicates do not count toward it
    _cli("sweep", "launch", str(spec), "--storage", url, "--tracker", "none")
    assert len(optuna.load_study(study_name="conf", storage=url).trials) == 4 + len(reps)
    # a second confirm adds nothing: every replicate exists
    _cli("sweep", "confirm", str(spec), "--storage", url, "--replicates", "2", "--tracker", "none")
    assert len(optuna.load_study(study_name="conf", storage=url).trials) == 4 + len(reps)
    table = study_table(optuna.load_study(study_name="conf", storage=url))
    assert [r.number for r in table.rows] == [0, 1, 2, 3]
    assert {(r.of, r.split, r.n) for r in table.replicated} == {(n, "eval", 2) for n in front}
    # the synthetic program lengthens answers by (training seed mod 3) tokens: the fresh seeds 7919 and 15838
    # add 2 and 1, so every front trial's two fresh runs differ by 1 token: SD 1/√2 (the original's +0,
    # averaged in as before, would make it 1); accuracy does not move with the seed
    assert table.seed_sd == pytest.approx({"len_all": 2**-0.5, "accuracy": 0.0, "auc": table.seed_sd["auc"]})
    assert any("seed noise measured from the fresh-seed replicates" in n for n in table.notes)


def test_a_replicate_a_killed_confirm_left_running_runs_again(
    tmp_path: Path, tsq_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = synthetic_spec(tmp_path / "k.yaml", "conf", 2,
                          heartbeat={"interval": 1, "grace_period": 2, "max_retry": 1})  # fmt: skip
    url = _launch(spec, tmp_path / "k.db", tsq_home, monkeypatch)
    # through tsq's storage, as confirm's worker had it: heartbeats from the moment a trial runs
    storage = open_storage(parse_storage_url(url), HeartbeatSpec(interval=1, grace_period=2, max_retry=1))
    study = optuna.load_study(study_name="conf", storage=storage)
    front = pareto_trials(study)
    killed = Replicate(front[0].number, 1, "eval", {"training": 7919, "evaluation": 7919})
    enqueue_replicate(study, front[0].params, killed)
    study.ask()  # taken up, then its confirm was killed: RUNNING, its heartbeats stop
    time.sleep(3)
    _cli("sweep", "confirm", str(spec), "--storage", url, "--replicates", "1", "--tracker", "none")
    reps = [t for t in optuna.load_study(study_name="conf", storage=url).get_trials() if is_replicate(t)]
    states = sorted((t.user_attrs["replicate_of"], t.state.name) for t in reps)
    # the killed one failed as stale and ran again: one COMPLETE replicate each, none RUNNING or WAITING
    assert states == sorted([(front[0].number, "FAIL")] + [(t.number, "COMPLETE") for t in front]), states


def test_confirm_on_the_held_out_split_shows_the_winners_curse(launched: tuple[Path, str]) -> None:
    spec, url = launched
    _cli("sweep", "confirm", str(spec), "--storage", url, "--replicates", "2", "--split", "test",
         "--tracker", "none")  # fmt: skip
    table = study_table(optuna.load_study(study_name="conf", storage=url))
    held_out = [r for r in table.replicated if r.split == "test"]
    assert held_out and all(r.n == 2 and r.picked is not None for r in held_out)  # 2 fresh seeds + the pick
    for row in held_out:  # the synthetic held-out split is 5 points harder
        assert row.estimates["accuracy"].mean == pytest.approx(row.original["accuracy"] - 0.05, abs=0.03)
        # the picked adapter (the sweep's seeds: +0 tokens) apart from the fresh seeds (+2 and +1)
        assert row.picked["len_all"] == pytest.approx(row.estimates["len_all"].mean - 1.5)
    md = (Path(os.environ["TSQ_HOME"]) / "studies" / "conf" / "report" / "pareto.md").read_text()
    assert "Confirmed over fresh seeds" in md and "picked adapter, held out" in md and " test " in md


def test_confirm_without_a_held_out_split_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TSQ_HOME", str(tmp_path / "home"))
    url = f"sqlite:///{tmp_path / 'c.db'}"
    spec = _spec(tmp_path, test_split=False)
    result = CliRunner().invoke(app, ["sweep", "confirm", str(spec), "--storage", url, "--split", "test"])
    assert result.exit_code != 0 and "data.test" in str(result.exception)


def _trial(number: int, accuracy: float, length: float, replicate: Replicate | None = None) -> TrialRecord:
    return TrialRecord(number=number, params={"alpha": 0.5}, values=(accuracy,),
                       metrics={"accuracy": accuracy, "len_all": length}, replicate=replicate)  # fmt: skip


def test_a_lucky_original_is_shown_beside_the_fresh_seeds_never_averaged_in() -> None:
    # trial 0 was picked at accuracy 0.80 (lucky); its two fresh seeds give 0.60 and 0.64. On the held-out
    # split, replicate 0 re-evaluates the picked adapter (0.70) and replicates 1, 2 are fresh (0.58, 0.62).
    original = _trial(0, 0.80, 30.0)
    reps = [
        _trial(1, 0.60, 31.0, Replicate(0, 1, "eval")),
        _trial(2, 0.64, 33.0, Replicate(0, 2, "eval")),
        _trial(3, 0.70, 29.0, Replicate(0, 0, "test")),
        _trial(4, 0.58, 32.0, Replicate(0, 1, "test")),
        _trial(5, 0.62, 34.0, Replicate(0, 2, "test")),
    ]
    rows, noise = replicate_groups([original], reps, [("accuracy", "maximize"), ("len_all", "minimize")])
    on_eval, on_test = sorted(rows, key=lambda r: r.split)
    assert (on_eval.split, on_eval.n, on_test.split, on_test.n) == ("eval", 2, "test", 2)
    assert on_eval.estimates["accuracy"].mean == pytest.approx(0.62)  # not (0.80 + 0.60 + 0.64) / 3
    assert on_eval.original["accuracy"] == 0.80 and on_eval.picked is None
    assert on_test.estimates["accuracy"].mean == pytest.approx(0.60) and on_test.picked["accuracy"] == 0.70
    # the seed noise is the fresh eval seeds' spread: accuracy 0.04/√2, Len-A 2/√2, correlation 1 (both
    # moved up together), at 1 df
    assert noise is not None and noise.dof == 1
    assert noise.sd == pytest.approx({"accuracy": 0.04 / 2**0.5, "len_all": 2 / 2**0.5})  # no AUC stored
    assert noise.corr[("accuracy", "len_all")] == pytest.approx(1.0)


def test_plan_seeds_new_on_eval_and_original_first_on_test() -> None:
    from objectives.tokensqueeze.config import TokenSqueezeSpec as Spec

    spec = Spec()
    trial = TrialRecord(number=5, values=(0.0,))
    on_eval = plan(spec, [trial], 2, "eval")
    on_test = plan(spec, [trial], 2, "test")
    # R fresh seeds on either split; on the held-out one the picked adapter (replicate 0) as well
    assert [r.index for r in on_eval] == [1, 2] and [r.index for r in on_test] == [0, 1, 2]
    assert on_test[0].seeds == {"training": spec.training.seed, "evaluation": spec.evaluation.seed}
    assert len({r.seeds["training"] for r in on_eval} | {spec.training.seed}) == 3
