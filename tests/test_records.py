"""The record module (`tsq.records`): records round-trip through user attrs, a record is written in parts as
a trial runs, and studies and trials written before the format had a version (format 1) read unchanged."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState
from records_util import add_trial, make_study

from tsq.method.metrics import interval_key
from tsq.records import (
    FORMAT,
    FORMAT_ATTR,
    Replicate,
    StudyRecord,
    TrialRecord,
    enqueue_replicate,
    is_replicate,
    record_baseline,
    trial_records,
    write_study_record,
    write_trial_record,
)


def test_a_trial_record_round_trips_through_its_attrs() -> None:
    record = TrialRecord(
        metrics={"accuracy": 0.5, interval_key("accuracy", "lo"): 0.4, "n_problems": 10},
        replicate=Replicate(3, 2, "test", {"training": 7, "evaluation": 8}),
        early_stop={"stopped": True, "stage": 1},
        records="/r/t.jsonl",
        versions={"tsq": "0.1.0"},
        git_commit="abc",
        error=None,  # never stored: a missing attr reads as None
    )
    attrs = record.to_attrs()
    assert attrs["accuracy_lo"] == 0.4 and attrs["replicate_of"] == 3 and attrs["split"] == "test"
    assert attrs[FORMAT_ATTR] == FORMAT and "error" not in attrs
    back = TrialRecord.from_attrs(attrs)
    assert back == record and back.stopped and back.interval("accuracy", "lo") == 0.4
    assert back.value("n_problems") == 10 and back.interval("accuracy", "se") is None


def test_format_1_attrs_read_unchanged_with_the_defaults_readers_applied() -> None:
    # as a study built by hand before the version: a replicate without its split or index
    old = {"accuracy": 0.6, "replicate_of": 0, "early_stop": {"stopped": False}, "records": "/t.jsonl"}
    record = TrialRecord.from_attrs(old)
    assert record.replicate == Replicate(0, 1, "eval") and record.replicate.fresh
    assert record.metrics == {"accuracy": 0.6} and record.records == "/t.jsonl" and not record.stopped
    study = StudyRecord.from_attrs({"objectives": ["accuracy"], "constraint": {"max_accuracy_drop": 0.05}})
    assert study.max_accuracy_drop == 0.05 and study.front is None and study.budget is None
    with pytest.raises(ValueError, match="newer than this tsq reads"):
        TrialRecord.from_attrs({FORMAT_ATTR: FORMAT + 1})


def test_a_live_trial_is_written_in_parts_and_read_back_with_its_optuna_facts(tmp_path) -> None:
    study = make_study(f"sqlite:///{tmp_path / 's.db'}", StudyRecord(objectives=["accuracy"]), ("maximize",))
    enqueue_replicate(study, {"alpha": 0.5}, Replicate(0, 1, "eval", {"training": 1}))
    trial = study.ask({"alpha": FloatDistribution(0.0, 1.0)})
    assert is_replicate(trial) and TrialRecord.from_trial(trial).replicate == Replicate(
        0, 1, "eval", {"training": 1}
    )
    write_trial_record(trial, TrialRecord(out_dir="/o", worker_pid=7))
    write_trial_record(trial, TrialRecord(metrics={"accuracy": 0.7}, baseline={"accuracy": 0.6}))
    record_baseline(study, {"accuracy": 0.6})
    record_baseline(study, {"accuracy": 0.0})  # the first trial's baseline stays
    study.tell(trial, [0.7])
    (done,) = trial_records(study, [TrialState.COMPLETE])
    assert (done.number, done.params, done.values, done.out_dir, done.worker_pid) == (
        0,
        {"alpha": 0.5},
        (0.7,),
        "/o",
        7,
    )
    assert done.metrics == {"accuracy": 0.7} and done.feasible and not done.grid_point
    assert StudyRecord.from_study(study).baseline == {"accuracy": 0.6}


def test_study_records_are_written_where_unset() -> None:
    study = optuna.create_study()
    write_study_record(study, StudyRecord(objectives=["len_all"], constraint=None))
    assert study.user_attrs == {"objectives": ["len_all"], FORMAT_ATTR: FORMAT}
    add_trial(study, TrialRecord(state=TrialState.FAIL, error="boom"))
    assert TrialRecord.from_trial(study.trials[0]).error == "boom"
