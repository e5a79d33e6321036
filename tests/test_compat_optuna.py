"""The Optuna adapter (tsq/compat/optuna.py) refuses an Optuna it was not written for, in one line, and writes
each trial's one constraint where every sampler and optuna-dashboard read it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
import pytest

from tsq.compat.optuna import (
    OptunaVersionError,
    check_optuna,
    compute_hypervolume,
    feasibility_value,
    set_feasibility,
)
from tsq.errors import UserError


def test_the_installed_optuna_passes() -> None:
    check_optuna()


@pytest.mark.parametrize("version", ["4.2.0", "5.1.0", "not-a-version"])
def test_an_unsupported_version_is_one_line(version: str) -> None:
    with pytest.raises(OptunaVersionError, match=r"supports optuna>=5\.0,<5\.1") as err:
        check_optuna(version)
    assert isinstance(err.value, UserError) and "\n" not in str(err.value)


def test_a_missing_private_name_is_one_line() -> None:
    with pytest.raises(OptunaVersionError, match=r"optuna\._hypervolume\.gone is missing"):
        check_optuna(names=[("optuna._hypervolume", "gone")])


def test_hypervolume_through_the_adapter() -> None:
    # two boxes 1x2 and 2x1 from the reference (3, 3) overlapping in 1x1: 2 + 2 - 1
    assert compute_hypervolume(np.array([[2.0, 1.0], [1.0, 2.0]]), np.array([3.0, 3.0])) == pytest.approx(3.0)


def _constrained_study(sampler_name: str, write: Callable[[optuna.Trial, float], None]) -> optuna.Study:
    """Six trials of a two-objective study under tsq's sampler `sampler_name` (2 startup trials, so the
    constrained models of TPE, GP and NSGA-II run), each trial's constraint written by `write`."""
    from tsq.config.space import StudySpec
    from tsq.study.sampler import build_sampler, suggest

    search = {"alpha": {"low": 0.0, "high": 1.0, "step": 0.25}, "eta": {"low": 0.0, "high": 1.0, "step": 0.5}}
    spec = StudySpec.model_validate({
        "search": search,
        "sampler": {"name": sampler_name, "seed": 0,
                    **({"n_startup_trials": 2} if sampler_name in ("tpe", "gp") else {})},
        "objectives": [{"metric": "accuracy"}, {"metric": "len_all"}],
    })  # fmt: skip
    study = optuna.create_study(directions=spec.directions, sampler=build_sampler(spec))

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        values = {name: suggest(trial, name, entry) for name, entry in spec.searched.items()}
        write(trial, values["alpha"] - 0.5)  # feasible for alpha <= 0.5
        return 1 - values["alpha"] ** 2, 100 * values["alpha"] + values["eta"]

    study.optimize(objective, n_trials=6)
    return study


@pytest.mark.parametrize("sampler_name", ["tpe", "nsga2", "gp", "random", "grid", "qmc"])
# botorch: tests/test_botorch_sampler.py (what its acquisition is given; the storage is the same)
def test_every_sampler_sees_exactly_one_constraint(sampler_name: str) -> None:
    study = _constrained_study(sampler_name, set_feasibility)
    trials = study.get_trials()
    assert len(trials) == 6
    for t in trials:  # FrozenTrial.constraints is what every sampler and study.best_trials read
        assert (
            t.constraints == {"0": t.params["alpha"] - 0.5}
            and feasibility_value(t) == t.params["alpha"] - 0.5
        )
        assert t.system_attrs["constraints"] == [t.params["alpha"] - 0.5]  # where optuna-dashboard reads it
    assert all(t.params["alpha"] <= 0.5 for t in study.best_trials)  # the front holds feasible trials only


def test_writing_the_named_constraint_too_would_give_samplers_two() -> None:
    """The pitfall the adapter avoids: Optuna 5 reads the list as constraint "0" beside the named one."""

    def both(trial: optuna.Trial, value: float) -> None:
        set_feasibility(trial, value)
        trial.set_constraint("accuracy_drop", value)

    study = _constrained_study("random", both)
    assert all(len(t.constraints) == 2 for t in study.get_trials())


def test_optuna_dashboard_api_gives_each_trial_its_constraint(tmp_path: Path) -> None:
    """optuna-dashboard's own WSGI app, asked `/api/studies/<id>` as its front end asks it."""
    import io
    import json
    from wsgiref.util import setup_testing_defaults

    from optuna_dashboard import wsgi

    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 's.db'}")
    study = _constrained_study("random", set_feasibility)
    stored = optuna.copy_study(from_study_name=study.study_name, from_storage=study._storage,
                               to_storage=storage, to_study_name="dash")  # fmt: skip
    del stored
    study_id = storage.get_study_id_from_name("dash")
    environ: dict[str, object] = {"PATH_INFO": f"/api/studies/{study_id}", "REQUEST_METHOD": "GET"}
    setup_testing_defaults(environ)
    environ["wsgi.input"] = io.BytesIO(b"")
    status: list[str] = []
    body = b"".join(wsgi(storage)(environ, lambda s, h, *a: status.append(s)))  # type: ignore[arg-type]
    assert status == ["200 OK"], body[:300]
    trials = json.loads(body)["trials"]
    assert len(trials) == 6
    for t in trials:
        alpha = next(p for p in t["params"] if p["name"] == "alpha")["param_internal_value"]
        assert t["constraints"] == [pytest.approx(alpha - 0.5)]


def test_tpe_settings_reach_optuna() -> None:
    """tsq's defaults keep what the quickstart has always run (multivariate, Optuna 5's constant liar)."""
    from tsq.config.space import StudySpec
    from tsq.study.sampler import build_sampler

    def tpe(**settings: object) -> optuna.samplers.TPESampler:
        spec = StudySpec.model_validate({"search": {"alpha": {"low": 0.0, "high": 1.0}}, "n_trials": 1,
                                         "sampler": {"name": "tpe", **settings}})  # fmt: skip
        sampler = build_sampler(spec)
        assert isinstance(sampler, optuna.samplers.TPESampler)
        return sampler

    assert (tpe()._multivariate, tpe()._constant_liar) == (True, True)
    assert (tpe(multivariate=False)._multivariate, tpe(constant_liar=False)._constant_liar) == (False, False)
