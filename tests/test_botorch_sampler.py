"""`sampler: {name: botorch}`: BoTorch's qLogNEHVI through optuna-integration, with tsq's constraint as one
more modelled output (feasible <= 0) and running trials as pending points."""

from __future__ import annotations

import sys

import optuna
import pytest
import torch
from optuna_integration.botorch import botorch as integration  # the botorch extra (scripts/test.sh has it)

from tsq.compat.optuna import set_feasibility
from tsq.config.space import StudySpec
from tsq.study.sampler import build_sampler, suggest

N_STARTUP = 4


def _spec() -> StudySpec:
    return StudySpec.model_validate({
        "search": {"alpha": {"low": 0.0, "high": 1.0}, "eta": {"low": 0.0, "high": 1.0}},
        "sampler": {"name": "botorch", "seed": 0, "n_startup_trials": N_STARTUP},
        "objectives": [{"metric": "accuracy"}, {"metric": "len_all"}],
        "n_trials": 6,
    })  # fmt: skip


def _objective(trial: optuna.Trial) -> tuple[float, float]:
    """Accuracy falls and length shrinks with alpha; alpha > 0.5 breaks the constraint, so an unconstrained
    search would call those short points the front."""
    spec = _spec()
    x = {name: suggest(trial, name, entry) for name, entry in spec.searched.items()}
    set_feasibility(trial, x["alpha"] - 0.5)
    return 1 - x["alpha"] ** 2 + 0.01 * x["eta"], 100 * (1 - x["alpha"]) + x["eta"]


class _Spy:
    """Records what each qLogNEHVI the sampler builds is given, then builds it."""

    def __init__(self) -> None:
        self.calls: list[dict[str, object]] = []
        self.real = integration.qLogNoisyExpectedHypervolumeImprovement

    def __call__(self, **kwargs: object) -> object:
        self.calls.append(kwargs)
        return self.real(**kwargs)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> _Spy:
    """The spy in place of qLogNEHVI, and its optimiser made cheap: 2 restarts from 64 raw samples instead of
    20 from 1024 (about 50 s a suggestion on this 2-core machine under load); the acquisition is untouched."""
    spy = _Spy()
    monkeypatch.setattr(integration, "qLogNoisyExpectedHypervolumeImprovement", spy)
    real = integration.optimize_acqf

    def cheap(**kwargs: object) -> object:
        return real(**{**kwargs, "num_restarts": 2, "raw_samples": 64})

    monkeypatch.setattr(integration, "optimize_acqf", cheap)
    return spy


def test_the_constraint_reaches_qlognehvi(spy: _Spy) -> None:
    sampler = build_sampler(_spec())
    assert isinstance(sampler, integration.BoTorchSampler)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    for alpha in (0.9, 0.8, 0.2, 0.1):  # two infeasible, two feasible startup trials
        study.enqueue_trial({"alpha": alpha, "eta": 0.5})
    study.optimize(_objective, n_trials=6)

    assert len(spy.calls) == 2  # one acquisition per trial after the startup ones: qLogNEHVI, not qEHVI
    kwargs = spy.calls[0]
    constraints = kwargs["constraints"]
    assert isinstance(constraints, list) and len(constraints) == 1
    model = kwargs["model"]
    y, _ = model.outcome_transform.untransform(model.train_targets.T)  # type: ignore[union-attr]
    done = study.get_trials()[:N_STARTUP]
    # the modelled outputs: accuracy, -len_all (BoTorch maximises), then the constraint value as written
    expected = torch.tensor(
        [[t.values[0], -t.values[1], t.params["alpha"] - 0.5] for t in done], dtype=y.dtype
    )
    assert torch.allclose(y, expected, atol=1e-6)
    # the constraint function the acquisition applies reads that column: positive (infeasible) exactly where
    # tsq wrote an infeasible trial
    assert [bool(v > 0) for v in constraints[0](y)] == [t.params["alpha"] > 0.5 for t in done]
    assert {t.number for t in study.best_trials}.isdisjoint({0, 1})  # the front holds feasible trials only


def test_running_trials_are_pending_points(spy: _Spy) -> None:
    """A worker asking while another trial runs passes that trial's point to the acquisition (X_pending),
    so parallel workers are not proposed the same point."""
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=build_sampler(_spec()))
    for alpha in (0.9, 0.8, 0.2, 0.1):
        study.enqueue_trial({"alpha": alpha, "eta": 0.5})
    study.optimize(_objective, n_trials=N_STARTUP)
    space = {name: optuna.distributions.FloatDistribution(0.0, 1.0) for name in ("alpha", "eta")}
    running = study.ask(space)  # proposed by the model, left running
    assert spy.calls[-1]["X_pending"].numel() == 0  # type: ignore[union-attr]
    study.ask(space)
    pending = spy.calls[-1]["X_pending"]  # normalised to the unit box, as the bounds here are
    assert pending is not None and pending.shape == (1, 2)
    assert pending[0].tolist() == pytest.approx([running.params["alpha"], running.params["eta"]])


def test_without_the_extra_it_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from tsq.errors import UserError

    monkeypatch.setitem(sys.modules, "optuna_integration", None)  # as if not installed
    with pytest.raises(UserError, match=r"^study\.sampler\.name: botorch needs .* --with-botorch$"):
        build_sampler(_spec())
