"""PED-ANOVA importances per objective (tsq.report.importance) on synthetic in-memory studies: the knob that
drives an objective ranks first, directions are honoured, replicates are left out, and the warning fires
below the documented threshold."""

from __future__ import annotations

import random

import optuna
import pytest

from tsq.records import TrialRecord
from tsq.report.data import study_data
from tsq.report.importance import (
    MIN_TRIALS,
    importance_stability,
    importance_warning,
    importances,
    target_quantile,
    trial_importances,
    usable_trials,
)
from tsq.report.sections import importance_markdown

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def _study(n: int, objective, directions=("maximize", "minimize"), names=("accuracy", "len_all"), seed=0):
    study = optuna.create_study(directions=list(directions), sampler=optuna.samplers.RandomSampler(seed=seed))
    study.set_metric_names(list(names))
    study.optimize(objective, n_trials=n)
    return study


def _two_knobs(trial: optuna.Trial) -> tuple[float, float]:
    alpha = trial.suggest_float("alpha", 0.0, 1.0)
    eta = trial.suggest_float("eta", 0.0, 1.0)
    trial.suggest_float("noise", 0.0, 1.0)  # drives nothing
    return eta, 100 * alpha  # accuracy follows η, length follows α


def test_the_driving_knob_ranks_first_per_objective():
    imps = importances(study_data(_study(40, _two_knobs)))
    assert list(imps) == ["accuracy", "len_all"]
    assert next(iter(imps["accuracy"])) == "eta"
    assert next(iter(imps["len_all"])) == "alpha"
    assert imps["accuracy"]["eta"] > 0.5 and imps["len_all"]["alpha"] > 0.5
    for scores in imps.values():
        assert set(scores) == {"alpha", "eta", "noise"}
        assert sum(scores.values()) == pytest.approx(1.0)


def test_direction_is_honoured():
    # maximised: the best trials are those with x > 0.8 (x matters); if the direction were flipped the "best"
    # would be the smallest y among the rest, and y would rank first instead
    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        y = trial.suggest_float("y", 0.0, 1.0)
        return 10.0 * (x > 0.8) + 0.01 * y

    up = importances(study_data(_study(60, objective, directions=("maximize",), names=("accuracy",))))[
        "accuracy"
    ]
    assert next(iter(up)) == "x"
    down = importances(study_data(_study(60, objective, directions=("minimize",), names=("len_all",))))[
        "len_all"
    ]
    assert next(iter(down)) == "y"


def test_replicates_and_failed_trials_are_left_out():
    study = _study(12, _two_knobs)
    base = study.trials[0]
    study.add_trial(
        optuna.trial.create_trial(
            params=base.params,
            distributions=base.distributions,
            values=base.values,
            user_attrs={"replicate_of": base.number},
        )
    )
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    assert len(study.trials) == 14 and len(usable_trials(study_data(study))) == 12


def test_trials_stopped_early_are_left_out():
    # Trials the staged test stopped hold metrics of a quarter of the problems, picked for looking bad: here
    # accuracy 0 and a short Len-A at high α and low η. Counted, they would make α look like it drives
    # length; left out, the importances are those of the full evaluations alone.
    study = _study(12, _two_knobs)
    clean = importances(study_data(study))
    dists = study.trials[0].distributions
    for i in range(4):
        params = {"alpha": 0.9 + 0.02 * i, "eta": 0.05 * i, "noise": 0.5}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, values=[0.0, 5.0 + i],
                                                  user_attrs={"early_stop": {"stopped": True}}))  # fmt: skip
    assert len(usable_trials(study_data(study))) == 12
    assert importances(study_data(study)) == clean
    every = [TrialRecord.from_trial(t) for t in study.trials]
    counted = trial_importances(study_data(study), every)  # what counting them would have given
    assert counted != clean


def test_stability_over_leave_one_out():
    # η drives accuracy in every subset of 40 trials: stable; a pure-noise objective over 10 trials is not
    study40 = _study(40, _two_knobs)
    strong = importance_stability(study_data(study40))
    assert strong["accuracy"].top == "eta" and strong["accuracy"].stable
    # each range is the min and max over the 40 leave-one-out importances, recomputed here
    trials = usable_trials(study_data(study40))
    loo = [
        trial_importances(study_data(study40), [u for u in trials if u is not t])["accuracy"]["eta"]
        for t in trials
    ]
    assert strong["accuracy"].ranges["eta"] == pytest.approx((min(loo), max(loo)))

    def noise(trial: optuna.Trial) -> tuple[float, float]:
        for k in ("a", "b", "c"):
            trial.suggest_float(k, 0.0, 1.0)
        return random.Random(trial.number).random(), random.Random(100 + trial.number).random()

    study = _study(10, noise, seed=3)
    fragile = importance_stability(study_data(study))
    moved = {name: s for name, s in fragile.items() if not s.stable}
    assert moved  # pure noise: some trial decides some objective's ranking
    trials = usable_trials(study_data(study))
    for name, s in moved.items():
        for number, knob in s.top_without.items():  # each claim recomputed by hand
            without = trial_importances(study_data(study), [t for t in trials if t.number != number])[name]
            assert next(iter(without)) == knob != s.top
    lines = importance_markdown(importances(study_data(study)), None, fragile)
    assert any("**not stable**" in line for line in lines)
    assert any("[" in line and "|" in line for line in lines)  # each value with its range


def test_warning_threshold():
    assert MIN_TRIALS == 10
    few = _study(8, _two_knobs)
    warning = importance_warning(study_data(few))
    assert warning is not None and "8 complete trials over 3 searched knobs" in warning
    assert importance_warning(study_data(_study(12, _two_knobs))) is None

    def six(trial: optuna.Trial) -> float:
        return sum(trial.suggest_float(f"k{i}", 0.0, 1.0) for i in range(6))

    # 11 trials >= 10, but 6 knobs want 12
    six_knobs = _study(11, six, directions=("minimize",), names=("len_all",))
    assert "want >= 12" in (importance_warning(study_data(six_knobs)) or "")


def test_quantile_keeps_about_five_good_trials():
    assert target_quantile(8) == 0.5
    assert target_quantile(20) == 0.25
    assert target_quantile(200) == 0.1


def test_too_few_trials_and_markdown():
    one = _study(1, _two_knobs)
    imps = importances(study_data(one))
    assert imps == {"accuracy": {}, "len_all": {}}
    assert importance_markdown(imps)[0].startswith("_No importances")

    study = _study(12, _two_knobs)
    lines = importance_markdown(importances(study_data(study)), "too few")
    assert lines[0] == "| knob | accuracy | len_all |"
    assert lines[1] == "|---|---:|---:|"
    assert len([line for line in lines if line.startswith("| ")]) == 4  # header + 3 knobs
    assert lines[-1] == "> too few"


def test_study_without_metric_names_and_untouched_storage(tmp_path):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(
        directions=["minimize"], storage=storage, sampler=optuna.samplers.RandomSampler(seed=1)
    )
    rng = random.Random(0)
    study.optimize(
        lambda t: t.suggest_float("a", 0, 1) + 0.001 * rng.random() + 0 * t.suggest_int("b", 0, 3),
        n_trials=15,
    )
    before = len(study.trials)
    imps = importances(study_data(study))
    assert list(imps) == ["objective_0"] and next(iter(imps["objective_0"])) == "a"
    assert len(optuna.load_study(study_name=study.study_name, storage=storage).trials) == before
