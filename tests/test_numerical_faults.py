"""Numerical faults inside a sweep: the faulty trial is FAIL with its reason, and the sweep goes on.

The faults are injected into the real pipeline (sweeps/smoke.yaml on the tiny test model) by a trial program
that wraps `run_trial` and, for chosen trial numbers, installs a global torch forward hook:
- trial 0: the token embeddings are NaN in every training forward, so the loss is NaN at the first step;
- trial 1: generation with the trained adapter active emits end-of-sequence at once (empty outputs).
Later trials run clean. A quick check uses a program that returns a NaN objective, with no model at all.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
import yaml
from optuna.trial import TrialState
from peft.tuners.lora import LoraLayer
from typer.testing import CliRunner

from objectives.tokensqueeze.config import TokenSqueezeSpec as Spec
from objectives.tokensqueeze.config import TrialParams
from objectives.tokensqueeze.trial import TrialContext, TrialResult, run_trial
from tsq.cli.main import app
from tsq.recipe import FunctionRecipe

REPO = Path(__file__).resolve().parents[1]
__all__ = ["TrialContext", "faulty_trial", "nan_objective_trial"]  # the programs the studies load


@contextmanager
def _global_forward_hook(hook: Callable[[torch.nn.Module, Any, Any], Any]) -> Iterator[None]:
    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _nan_when_training(module: torch.nn.Module, _args: Any, output: Any) -> Any:
    # The token embeddings turn NaN, so everything after them does; only in forwards that build a gradient,
    # so the reference log-probs (no_grad, cached for later trials) and generation stay finite.
    if isinstance(module, torch.nn.Embedding) and module.training and torch.is_grad_enabled():
        return output * math.nan
    return output


def _eos_when_adapter_active(module: torch.nn.Module, _args: Any, output: Any) -> Any:
    if torch.is_grad_enabled() or not hasattr(output, "logits") or not hasattr(module, "generation_config"):
        return output
    lora = [m for m in module.modules() if isinstance(m, LoraLayer)]
    if lora and not any(m.disable_adapters for m in lora):  # the base model (baseline) is left alone
        eos = module.generation_config.eos_token_id
        eos = eos[0] if isinstance(eos, list) else eos
        logits = torch.full_like(output.logits, -1e4)
        logits[..., eos] = 0.0
        output.logits = logits
    return output


FAULTS = {0: _nan_when_training, 1: _eos_when_adapter_active}


def _faulty_trial(spec: Spec, params: TrialParams, ctx: TrialContext) -> TrialResult:
    """`run_trial`, with the fault of FAULTS injected into the trials it names."""
    hook = FAULTS.get(ctx.trial_number if ctx.trial_number is not None else -1)
    if hook is None:
        return run_trial(spec, params, ctx)
    with _global_forward_hook(hook):
        return run_trial(spec, params, ctx)


def _nan_objective_trial(spec: Spec, params: TrialParams, ctx: TrialContext) -> TrialResult:
    """No model: trial 0 reports a NaN accuracy, the others a finite one."""
    accuracy = math.nan if ctx.trial_number == 0 else params.alpha
    metrics = {"accuracy": accuracy, "len_all": 10.0 + params.eta, "accuracy_delta": 0.0}
    return TrialResult({"alpha": params.alpha}, metrics, {}, [], [], ctx.out_dir)


def _launch(tmp_path: Path, program: str, n_trials: int) -> optuna.Study:
    raw = yaml.safe_load((REPO / "sweeps" / "smoke.yaml").read_text())
    raw["study"]["program"] = program
    raw["study"]["n_trials"] = n_trials
    spec = tmp_path / "faults.yaml"
    spec.write_text(yaml.safe_dump(raw))
    url = f"sqlite:///{tmp_path / 'faults.db'}"
    result = CliRunner().invoke(app, ["sweep", "launch", str(spec), "--storage", url, "--tracker", "none"])
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return optuna.load_study(study_name="smoke", storage=url)


def test_a_nan_objective_fails_its_trial_and_the_sweep_goes_on(tmp_path: Path, tiny_model_dir: Path) -> None:
    study = _launch(tmp_path, "test_numerical_faults:nan_objective_trial", n_trials=3)
    trials = study.get_trials(deepcopy=False)
    assert trials[0].state == TrialState.FAIL
    assert "accuracy missing or not finite" in trials[0].user_attrs["error"]
    assert [t.state for t in trials[1:]] == [TrialState.COMPLETE] * 3


@pytest.mark.slow
def test_nan_loss_and_empty_outputs_fail_their_trials_and_the_sweep_goes_on(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    study = _launch(tmp_path, "test_numerical_faults:faulty_trial", n_trials=2)
    trials = study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    assert states[:2] == [TrialState.FAIL, TrialState.FAIL], states
    assert "TrialFailed: training loss became NaN at step 1" in trials[0].user_attrs["error"]
    assert "TrialFailed: the trained adapter produces empty outputs" in trials[1].user_attrs["error"]
    assert states[2:] == [TrialState.COMPLETE, TrialState.COMPLETE], states
    for t in trials[2:]:
        assert math.isfinite(t.values[0]) and math.isfinite(t.values[1])
        assert t.user_attrs["stats"]["training"]["final_loss"] is not None


# a plain trial function on TokenSqueeze's spec model (its knobs and sections), loaded by name
faulty_trial = FunctionRecipe(_faulty_trial, Spec)


# a plain trial function on TokenSqueeze's spec model (its knobs and sections), loaded by name
nan_objective_trial = FunctionRecipe(_nan_objective_trial, Spec)
