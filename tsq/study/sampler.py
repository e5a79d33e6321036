"""The spec's Optuna sampler, and how one search entry is sampled."""

from __future__ import annotations

import warnings
from typing import Any

import optuna

from tsq.config.space import Categorical, FloatRange, IntRange, Range, StudySpec, grid_values
from tsq.errors import UserError


def build_sampler(study: StudySpec, seed_offset: int = 0) -> optuna.samplers.BaseSampler:
    """The spec's sampler. `seed_offset` keeps parallel workers and relaunches from proposing the very same
    points (equal seeds give equal proposals); it is derived from the worker index and the study's size."""
    cfg = study.sampler.model_copy(
        update={"seed": None if study.sampler.seed is None else (study.sampler.seed + seed_offset) % 2**32}
    )
    if cfg.name == "random":
        return optuna.samplers.RandomSampler(seed=cfg.seed)
    if cfg.name == "qmc":
        return optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=cfg.seed)
    if cfg.name == "grid":
        grid = {name: grid_values(entry) for name, entry in study.searched.items()}
        return optuna.samplers.GridSampler(grid, seed=cfg.seed)  # type: ignore[arg-type]
    if cfg.name == "nsga2":
        kw = {} if cfg.population_size is None else {"population_size": cfg.population_size}
        return optuna.samplers.NSGAIISampler(seed=cfg.seed, **kw)
    startup = {} if cfg.n_startup_trials is None else {"n_startup_trials": cfg.n_startup_trials}
    if cfg.name == "gp":
        try:
            import scipy  # noqa: F401  (GPSampler's optimiser)
        except ImportError:
            raise UserError("study.sampler.name: gp needs scipy; rerun scripts/setup.sh") from None
        return optuna.samplers.GPSampler(seed=cfg.seed, **startup)
    if cfg.name == "botorch":
        return _botorch_sampler(cfg.seed, startup)
    return optuna.samplers.TPESampler(
        seed=cfg.seed, multivariate=cfg.multivariate, constant_liar=cfg.constant_liar, **startup
    )


def _botorch_sampler(seed: int | None, startup: dict[str, int]) -> optuna.samplers.BaseSampler:
    """qLogNEHVI through optuna-integration's BoTorchSampler: `qnehvi_candidates_func` uses BoTorch's
    log variant (the extra pins a BoTorch that has it) and models the trial's constraint as one more output
    (feasible <= 0, where `set_feasibility` writes it). Running trials are pending points, so parallel
    workers are proposed a batch (q-batch acquisition) rather than the same point twice."""
    try:
        from optuna_integration import BoTorchSampler
        from optuna_integration.botorch import qnehvi_candidates_func
    except ImportError:
        raise UserError(
            "study.sampler.name: botorch needs botorch and optuna-integration; "
            "rerun scripts/setup.sh --with-botorch"
        ) from None
    # tsq pins the versions it was written for (pyproject's botorch extra): the notice is not the user's
    experimental = r".*(BoTorchSampler|qnehvi_candidates_func) is experimental"
    warnings.filterwarnings("ignore", experimental, optuna.exceptions.ExperimentalWarning)
    return BoTorchSampler(
        candidates_func=qnehvi_candidates_func, consider_running_trials=True, seed=seed, **startup
    )


def suggest(trial: optuna.Trial, name: str, entry: Range) -> Any:
    if isinstance(entry, Categorical):
        return trial.suggest_categorical(name, entry.choices)
    if isinstance(entry, IntRange):
        return trial.suggest_int(name, entry.low, entry.high, step=entry.step, log=entry.log)
    assert isinstance(entry, FloatRange)
    return trial.suggest_float(name, entry.low, entry.high, step=entry.step, log=entry.log)
