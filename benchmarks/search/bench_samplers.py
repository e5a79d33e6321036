"""Issue #33: how many trials each sampler needs to find the tiny world's accuracy/length front.

The samplers run on surrogates of the tiny world fitted to a census of it (`census.yaml`: 64 Sobol points, one
seed each, plus fresh-seed replicates of four of them from `tsq sweep confirm`), with the measured noise added
back, so hundreds of 40-trial studies cost minutes instead of days. Two surrogate families, because a GP
surrogate flatters GP samplers: a ranking counts only where it holds on both.

Stages, each resumable and each writing beside this file (commit each as it finishes):
  export  the census study -> census.json (points, their noise, the replicates, the baseline, the space)
  run     each (surrogate, sampler, mode, seed) run not yet in runs.jsonl.gz: 40 trials, tsq's samplers as
          `tsq.study.sampler.build_sampler` builds them, the same enqueued default point first for all
  table   per surrogate, mode and budget (10, 20, 40: prefixes of one run): mean normalised hypervolume of
          the front the study would report, the paired difference against TPE (tsq's default), of the
          model view's front, of everything it evaluated, trials spent in the infeasible region, the
          samplers' CPU time

  python benchmarks/search/bench_samplers.py export --storage sqlite:///$TSQ_HOME/studies.db
  python benchmarks/search/bench_samplers.py run --seeds 10 --workers 2 [--samplers tpe gp ...]
  python benchmarks/search/bench_samplers.py table

The world, as simulated (each choice is the measured one where the census measures it):
- Truth: each surrogate's mean prediction of accuracy and len_all over the unit cube of the census's knobs
  (log ε). Constraint: accuracy >= baseline - δ (δ = the census spec's max_accuracy_drop), the baseline
  fixed (its own sampling error is one offset common to every trial of a study).
- Noise of one evaluation: a seed part plus an evaluation part, bivariate normal. Their sum's covariance is
  the replicates' pooled within-point covariance (fresh training and evaluation seeds, as a new trial draws
  them); the evaluation part's variances are the census trials' mean squared standard errors (accuracy_se,
  len_all_se), with the replicates' correlation; the seed part is the rest. A real sweep gives every trial
  the same seeds, so its noise is a fixed function of the point; i.i.d. noise per evaluation is the usual
  model and the one the samplers assume.
- tsq's early stop (tsq/method/early_stop.py), approximated: the evaluation part is drawn as four quarters,
  so the 25% and 50% stages see the means of their prefixes (nested, as tsq's stages are). At those stages
  a trial stops when Δ_k + δ < -(q_t + q_b)·se_Δ/√(2 f_k): the one-sided t quantiles at 1 - a/L and 1 - γ/L
  (tsq's LEVEL and BASELINE_RISK, L = 2 looks, 100 f_k - 1 df) on the paired standard error of the change,
  split evenly between trial and baseline. A stopped trial reports its stage's values and is infeasible.
- Scores against the truth: the true hypervolume of the front Optuna reports (feasible and undominated in
  the *observed* values: the report's ★) and of all points evaluated, each over the reference point fixed in
  advance (accuracy at the constraint, len_all at the baseline's), normalised by the true front's (the
  surrogate on 2^15 Sobol points); the true hypervolume of the front of a GP's posterior means (the report's
  model view, `tsq.report.model_view.posterior`, fitted to what the study observed): does it pick better
  than the noisy values do?; trials whose true accuracy breaks the constraint.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tsq.report.model_view import posterior, undominated
from tsq.report.table import hypervolume as report_hypervolume

HERE = Path(__file__).resolve().parent
CENSUS = HERE / "census.json"
RUNS = HERE / "runs.jsonl.gz"  # one JSON line per run, gzip members appended as runs finish
N_TRIALS = 40
BUDGETS = (10, 20, 40)
BATCH = {"sequential": 1, "batch4": 4}
STAGES = (0.25, 0.5, 1.0)
N_STARTUP = 4  # the quickstart's, for every model-based sampler but the two *-startup10 ones
# The samplers, as tsq's spec names them (study.sampler); "tpe" is tsq's default and the reference.
SAMPLERS: dict[str, dict[str, Any]] = {
    "tpe": {"name": "tpe", "n_startup_trials": N_STARTUP},
    "tpe-univariate": {"name": "tpe", "n_startup_trials": N_STARTUP, "multivariate": False},
    "tpe-no-liar": {"name": "tpe", "n_startup_trials": N_STARTUP, "constant_liar": False},  # batches only
    "tpe-startup10": {"name": "tpe", "n_startup_trials": 10},  # Optuna's default: is 4 too few?
    "gp": {"name": "gp", "n_startup_trials": N_STARTUP},
    "gp-startup10": {"name": "gp", "n_startup_trials": 10},  # GPSampler's default
    "botorch": {"name": "botorch", "n_startup_trials": N_STARTUP},
    "nsga2": {"name": "nsga2", "population_size": 8},
    "random": {"name": "random"},
}
REFERENCE = "tpe"
BATCH_ONLY = {"tpe-no-liar"}  # without running trials the constant liar changes nothing


# --------------------------------------------------------------------------------------------- the world
@dataclass(frozen=True)
class Space:
    names: tuple[str, ...]
    low: np.ndarray
    high: np.ndarray
    log: np.ndarray

    @classmethod
    def from_json(cls, raw: dict[str, dict[str, Any]]) -> Space:
        names = tuple(raw)
        return cls(
            names,
            np.array([raw[n]["low"] for n in names], float),
            np.array([raw[n]["high"] for n in names], float),
            np.array([bool(raw[n].get("log")) for n in names]),
        )

    def to_unit(self, params: dict[str, float]) -> np.ndarray:
        x = np.array([params[n] for n in self.names], float)
        warped = (np.where(self.log, np.log(np.where(self.log, v, 1.0)), v) for v in (x, self.low, self.high))
        x, lo, hi = warped
        return (x - lo) / (hi - lo)


def pooled_covariance(groups: Sequence[np.ndarray]) -> tuple[np.ndarray, int]:
    """The within-group covariance of rows (one row per run of a point), pooled over groups, and its df."""
    scatter = sum(((g - g.mean(0)).T @ (g - g.mean(0)) for g in groups), np.zeros((2, 2)))
    df = sum(len(g) - 1 for g in groups)
    return scatter / df, df


@dataclass(frozen=True)
class Noise:
    """Bivariate (accuracy, len_all) noise of one evaluation: seed part + evaluation part (module doc)."""

    seed_cov: np.ndarray
    eval_cov: np.ndarray

    @classmethod
    def measured(cls, census: dict[str, Any]) -> Noise:
        groups = [np.array(g, float) for g in census["replicates"].values()]
        total, _ = pooled_covariance(groups)
        rho = total[0, 1] / math.sqrt(total[0, 0] * total[1, 1])
        se = np.array([np.sqrt(np.mean(np.square([p[k] for p in census["points"]])))
                       for k in ("accuracy_se", "len_all_se")])  # fmt: skip
        eval_cov = np.outer(se, se) * np.array([[1, rho], [rho, 1]])
        seed_var = np.maximum(np.diag(total) - se**2, 0.0)
        seed_cov = np.outer(np.sqrt(seed_var), np.sqrt(seed_var)) * np.array([[1, rho], [rho, 1]])
        return cls(seed_cov, eval_cov)

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """The noise each stage of one evaluation sees: rows = STAGES, columns = (accuracy, len_all)."""
        seed = rng.multivariate_normal(np.zeros(2), self.seed_cov)
        quarters = rng.multivariate_normal(np.zeros(2), 4 * self.eval_cov, size=4)
        prefix = [quarters[: round(4 * f)].mean(0) for f in STAGES]
        return seed + np.array(prefix)


def fit_surrogate(kind: str, x: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Per objective, a model of y on the unit cube; returns the mean prediction (rows: points)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import SplineTransformer

    warnings.filterwarnings("ignore", category=ConvergenceWarning)  # a length scale at its bound is an answer
    models = []
    for j in range(y.shape[1]):
        if kind == "gp":  # ARD Matern 5/2 with a fitted noise term, the family GP samplers assume
            kernel = ConstantKernel() * Matern([0.5] * x.shape[1], (0.05, 20.0), nu=2.5) + WhiteKernel()
            model = GaussianProcessRegressor(kernel, normalize_y=True, n_restarts_optimizer=4, random_state=0)
        else:  # additive cubic splines, ridge-penalised: no GP kernel, no interactions
            model = make_pipeline(SplineTransformer(n_knots=5, degree=3), RidgeCV(np.logspace(-4, 2, 25)))
        models.append(model.fit(x, y[:, j]))
    return lambda u: np.column_stack([m.predict(np.atleast_2d(u)) for m in models])


SURROGATES = ("gp", "splines")


def census_data(census: dict[str, Any]) -> tuple[Space, np.ndarray, np.ndarray]:
    """The census's space, its points on the unit cube, and their (accuracy, len_all)."""
    space = Space.from_json(census["search"])
    x = np.array([space.to_unit(p["params"]) for p in census["points"]])
    return space, x, np.array([[p["accuracy"], p["len_all"]] for p in census["points"]])


def reference_point(census: dict[str, Any]) -> np.ndarray:
    """The hypervolume's reference, fixed in advance: accuracy at the constraint, len_all at the baseline."""
    base = census["baseline"]
    return np.array([base["accuracy"] - census["max_accuracy_drop"], base["len_all"]])


@dataclass
class World:
    space: Space
    truth: Callable[[np.ndarray], np.ndarray]
    noise: Noise
    baseline_accuracy: float
    max_drop: float
    reference: np.ndarray  # (accuracy, len_all) of the hypervolume's reference point
    se_delta: float  # the paired standard error of a full evaluation's accuracy change
    default: dict[str, float]
    search: dict[str, Any]

    @classmethod
    def load(cls, surrogate: str, census: dict[str, Any]) -> World:
        space, x, y = census_data(census)
        return cls(
            space=space,
            truth=fit_surrogate(surrogate, x, y),
            noise=Noise.measured(census),
            baseline_accuracy=census["baseline"]["accuracy"],
            max_drop=census["max_accuracy_drop"],
            reference=reference_point(census),
            se_delta=float(np.sqrt(np.mean(np.square([p["accuracy_delta_se"] for p in census["points"]])))),
            default=census["default"],
            search=census["search"],
        )

    def evaluate(self, params: dict[str, float], rng: np.random.Generator) -> dict[str, Any]:
        """One noisy evaluation as a trial of tsq would report it, early stop included."""
        from scipy.stats import t as student

        from tsq.method.early_stop import BASELINE_RISK, LEVEL

        true = self.truth(self.space.to_unit(params))[0]
        observed = true + self.noise.draw(rng)
        looks = len(STAGES) - 1
        for k, f in enumerate(STAGES[:-1]):
            df = round(100 * f) - 1
            q = student.ppf(1 - LEVEL / looks, df) + student.ppf(1 - BASELINE_RISK / looks, df)
            delta = observed[k, 0] - self.baseline_accuracy
            if delta + self.max_drop < -q * self.se_delta / math.sqrt(2 * f):
                return self._result(true, observed[k], stopped=True)
        return self._result(true, observed[-1], stopped=False)

    def _result(self, true: np.ndarray, seen: np.ndarray, stopped: bool) -> dict[str, Any]:
        constraint = self.baseline_accuracy - self.max_drop - seen[0]  # feasible <= 0, tsq's Constraint
        return {
            "true": true.tolist(),
            "observed": seen.tolist(),
            "constraint": max(constraint, 1e-9) if stopped else constraint,
            "stopped": stopped,
        }


# ----------------------------------------------------------------------------------------- the scores
DIRECTIONS = ("maximize", "minimize")  # accuracy, len_all


def hypervolume(points: np.ndarray, reference: np.ndarray) -> float:
    """Hypervolume of (accuracy, len_all) points over `reference`: the report's own
    (`tsq.report.table.hypervolume`, Optuna's WFG); points not beating the reference add nothing."""
    return report_hypervolume(points.tolist(), reference.tolist(), DIRECTIONS)


def reported(observed: np.ndarray, feasible: np.ndarray) -> np.ndarray:
    """Indices of the front Optuna reports (`best_trials`): feasible, undominated in observed values (the
    model view's rule, `tsq.report.model_view.undominated`, on accuracy and −len_all)."""
    return np.flatnonzero(undominated(observed * [1, -1], feasible))


def true_front_volume(world: World, m: int = 15) -> float:
    from scipy.stats import qmc

    u = qmc.Sobol(len(world.space.names), scramble=True, seed=0).random_base2(m)
    return hypervolume(world.truth(u), world.reference)


SCORES = ("reported", "model", "evaluated", "infeasible", "cpu_s")


def score(run: dict[str, Any], world: World, best: float, budget: int) -> dict[str, float]:
    trials = run["trials"][:budget]
    true = np.array([t["true"] for t in trials])
    observed = np.array([t["observed"] for t in trials])
    feasible = np.array([t["constraint"] <= 0 for t in trials])
    front = reported(observed, feasible)
    # the report's model view (tsq/report/model_view.py): the front of the GP's posterior means
    x = np.array([world.space.to_unit(t["params"]) for t in trials])
    mean, _ = posterior(x, observed * [1, -1], x)
    by_model = undominated(mean, feasible)
    return {
        "reported": hypervolume(true[front], world.reference) / best if len(front) else 0.0,
        "model": hypervolume(true[by_model], world.reference) / best,
        "evaluated": hypervolume(true, world.reference) / best,
        "infeasible": float(np.sum(true[:, 0] < world.reference[0])),
        "cpu_s": float(sum(t["suggest_cpu_s"] for t in trials)),
    }


# ------------------------------------------------------------------------------------------- the runs
def run_one(
    census: dict[str, Any], surrogate: str, sampler: str, mode: str, seed: int, n_trials: int = N_TRIALS
) -> dict[str, Any]:
    """One `n_trials` study of `sampler` on `surrogate`'s noisy world (batches of BATCH[mode] asks, each
    batch's trials running while the next in it is proposed)."""
    import optuna

    from tsq.compat.optuna import set_feasibility
    from tsq.config.space import StudySpec
    from tsq.study.sampler import build_sampler, suggest

    world = World.load(surrogate, census)
    spec = StudySpec.model_validate({
        "search": world.search, "sampler": {**SAMPLERS[sampler], "seed": seed},
        "objectives": [{"metric": "accuracy"}, {"metric": "len_all"}], "n_trials": n_trials,
    })  # fmt: skip
    study = optuna.create_study(directions=spec.directions, sampler=build_sampler(spec))
    study.enqueue_trial(world.default)
    rng = np.random.default_rng([seed, 33])  # the noise stream: the same for every sampler at a seed
    trials: list[dict[str, Any]] = []
    while len(trials) < n_trials:
        batch = []
        for _ in range(min(BATCH[mode], n_trials - len(trials))):
            start = time.process_time()
            trial = study.ask()
            params = {name: suggest(trial, name, entry) for name, entry in spec.searched.items()}
            batch.append((trial, params, time.process_time() - start))
        for trial, params, cpu in batch:
            result = world.evaluate(params, rng)
            set_feasibility(trial, result["constraint"])
            study.tell(trial, result["observed"])
            trials.append({"params": params, "suggest_cpu_s": cpu, **result})
    return {"surrogate": surrogate, "sampler": sampler, "mode": mode, "seed": seed, "trials": trials}


def _key(run: dict[str, Any]) -> tuple[str, str, str, int]:
    return run["surrogate"], run["sampler"], run["mode"], run["seed"]


def load_runs() -> list[dict[str, Any]]:
    """Every run in runs.jsonl.gz; of runs of one (surrogate, sampler, mode, seed), the longest."""
    runs: dict[tuple[str, str, str, int], dict[str, Any]] = {}
    lines = gzip.decompress(RUNS.read_bytes()).decode().splitlines() if RUNS.exists() else []
    for line in lines:
        run = json.loads(line)
        key = _key(run)
        if key not in runs or len(run["trials"]) > len(runs[key]["trials"]):
            runs[key] = run
    return list(runs.values())


def _worker_init() -> None:
    import optuna
    import torch

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a line per trial, thousands of trials
    warnings.filterwarnings("ignore")  # BoTorch's and scikit-learn's numerical notices, per suggestion
    torch.set_num_threads(1)  # one core per run: the pool is the parallelism


def run_all(seeds: int, samplers: Sequence[str], modes: Sequence[str], n_trials: int, workers: int) -> None:
    census = json.loads(CENSUS.read_text())
    done = {
        (r["surrogate"], r["sampler"], r["mode"], r["seed"])
        for r in load_runs()
        if len(r["trials"]) >= n_trials
    }
    todo = [(s, name, mode, seed) for seed in range(seeds) for name in samplers for mode in modes
            for s in SURROGATES if (s, name, mode, seed) not in done
            and not (name in BATCH_ONLY and mode == "sequential")]  # fmt: skip
    print(f"{len(todo)} runs of {n_trials} trials to do ({len(done)} done in {RUNS.name})", flush=True)
    with ProcessPoolExecutor(workers, initializer=_worker_init) as pool, gzip.open(RUNS, "at") as out:
        futures = {pool.submit(run_one, census, *job, n_trials): job for job in todo}
        for i, future in enumerate(as_completed(futures), 1):
            run = future.result()
            out.write(json.dumps(run) + "\n")
            out.flush()
            cpu = sum(t["suggest_cpu_s"] for t in run["trials"])
            job = " ".join(map(str, futures[future]))
            print(f"[{i}/{len(todo)}] {job}: sampler CPU {cpu:.1f} s", flush=True)


# ------------------------------------------------------------------------------------------ the table
def bootstrap(values: np.ndarray, level: float, resamples: int = 10_000) -> tuple[float, float]:
    """Percentile interval of the mean over seeds (rows), resampling seeds."""
    rng = np.random.default_rng(0)
    means = values[rng.integers(0, len(values), (resamples, len(values)))].mean(1)
    return float(np.quantile(means, (1 - level) / 2)), float(np.quantile(means, (1 + level) / 2))


def cross_validated_r2(kind: str, census: dict[str, Any], folds: int = 8) -> list[float]:
    """Out-of-fold R² of each objective's surrogate: how much of the census it explains beyond noise."""
    _, x, y = census_data(census)
    pred = np.zeros_like(y)
    for k in range(folds):
        test = np.arange(len(x)) % folds == k
        pred[test] = fit_surrogate(kind, x[~test], y[~test])(x[test])
    residual, spread = np.sum((y - pred) ** 2, 0), np.sum((y - y.mean(0)) ** 2, 0)
    return [float(v) for v in 1 - residual / spread]


_WORLDS: dict[str, tuple[World, float]] = {}


def _score_run(census: dict[str, Any], run: dict[str, Any]) -> dict[int, dict[str, float]]:
    """A run's scores at each budget it reaches (in a pool worker: each surrogate's world built once)."""
    if run["surrogate"] not in _WORLDS:
        world = World.load(run["surrogate"], census)
        _WORLDS[run["surrogate"]] = world, true_front_volume(world)
    world, best = _WORLDS[run["surrogate"]]
    return {b: score(run, world, best, b) for b in BUDGETS if len(run["trials"]) >= b}


def print_table(workers: int) -> None:
    census = json.loads(CENSUS.read_text())
    runs = load_runs()
    with ProcessPoolExecutor(workers, initializer=_worker_init) as pool:  # a GP fit per run and budget
        scored = dict(zip(map(_key, runs), pool.map(_score_run, [census] * len(runs), runs), strict=True))
    noise = Noise.measured(census)
    total = noise.seed_cov + noise.eval_cov
    _, df = pooled_covariance([np.array(g, float) for g in census["replicates"].values()])
    sd, sd_eval = np.sqrt(np.diag(total)), np.sqrt(np.diag(noise.eval_cov))
    print(f"census: {len(census['points'])} points; noise of one evaluation (replicates, {df} df): "
          f"sd accuracy {sd[0]:.4f} (evaluation part {sd_eval[0]:.4f}), "
          f"sd len_all {sd[1]:.2f} (evaluation part {sd_eval[1]:.2f}), "
          f"correlation {total[0, 1] / (sd[0] * sd[1]):+.2f}")  # fmt: skip
    contrasts = len({r["sampler"] for r in runs} - {REFERENCE})
    level = 1 - 0.05 / max(contrasts, 1)
    view_level = 1 - 0.05 / (contrasts + 1)  # the model view's gain: one contrast per sampler
    print(
        f"paired differences against {REFERENCE}: bootstrap over seeds, {100 * level:.1f}% intervals "
        f"(Bonferroni over the {contrasts} samplers compared within each block); * = interval excludes 0; "
        f"the model view's gain over the reported front: {100 * view_level:.1f}% (Bonferroni over "
        f"{contrasts + 1} samplers)"
    )
    reference = reference_point(census)
    for surrogate in SURROGATES:
        r2 = cross_validated_r2(surrogate, census)
        print(
            f"\n## surrogate: {surrogate} (8-fold CV R²: accuracy {r2[0]:.2f}, len_all {r2[1]:.2f}; "
            f"reference point accuracy {reference[0]:.4f}, len_all {reference[1]:.2f})"
        )
        for mode in BATCH:
            mine = [r for r in runs if r["surrogate"] == surrogate and r["mode"] == mode]
            if not mine:
                continue
            for budget in BUDGETS:
                print(
                    f"\n{mode}, {budget} trials | seeds | reported front HV [95%] | vs {REFERENCE} "
                    f"| model-view front HV (gain over reported) | all evaluated HV | infeasible trials "
                    f"| sampler CPU s/run"
                )
                scores = {(r["sampler"], r["seed"]): scored[_key(r)][budget]
                          for r in mine if len(r["trials"]) >= budget}  # fmt: skip
                for sampler in SAMPLERS:
                    seeds = sorted(seed for name, seed in scores if name == sampler)
                    if not seeds:
                        continue
                    got = {k: np.array([scores[sampler, s][k] for s in seeds]) for k in SCORES}
                    lo, hi = bootstrap(got["reported"], 0.95)
                    paired = [s for s in seeds if (REFERENCE, s) in scores]
                    versus = "-"
                    if sampler != REFERENCE and paired:
                        diff = np.array([scores[sampler, s]["reported"] - scores[REFERENCE, s]["reported"]
                                         for s in paired])  # fmt: skip
                        dlo, dhi = bootstrap(diff, level)
                        star = "*" if dlo > 0 or dhi < 0 else " "
                        versus = f"{diff.mean():+.3f} [{dlo:+.3f}, {dhi:+.3f}]{star}"
                    mean = got["reported"].mean()
                    glo, ghi = bootstrap(got["model"] - got["reported"], view_level)
                    view = (
                        f"{got['model'].mean():.3f} ({(got['model'] - got['reported']).mean():+.3f} "
                        f"[{glo:+.3f}, {ghi:+.3f}])"
                    )
                    print(f"{sampler:>14} | {len(seeds):>2} | {mean:.3f} [{lo:.3f}, {hi:.3f}] "
                          f"| {versus} | {view} | {got['evaluated'].mean():.3f} "
                          f"| {got['infeasible'].mean():.1f} | {got['cpu_s'].mean():.1f}")  # fmt: skip


# ------------------------------------------------------------------------------------------ the export
def export(storage: str, study_name: str) -> None:
    import optuna

    from tsq.recipe import load_spec
    from tsq.records import StudyRecord, trial_records

    spec = load_spec(HERE / "census.yaml")
    study = optuna.load_study(study_name=study_name, storage=storage)
    records = trial_records(study, [optuna.trial.TrialState.COMPLETE])
    metrics = ("accuracy", "len_all", "accuracy_se", "len_all_se", "accuracy_delta_se")
    points = [{"number": r.number, "params": r.params, **{k: r.metrics[k] for k in metrics}}
              for r in records if r.replicate is None]  # fmt: skip
    replicates: dict[str, list[list[float]]] = {}
    for r in records:
        if r.replicate is not None and r.replicate.split == "eval" and not r.replicate.promoted:
            original = next(p for p in points if p["number"] == r.replicate.of)
            group = replicates.setdefault(str(r.replicate.of), [[original["accuracy"], original["len_all"]]])
            group.append([r.metrics["accuracy"], r.metrics["len_all"]])
    search = {n: e.model_dump(exclude_none=True) for n, e in spec.study.searched.items()}
    default = {n: v for n, v in spec.params.model_dump(by_alias=True).items() if n in search}
    baseline = StudyRecord.from_study(study).baseline or {}
    census = {
        "spec": "benchmarks/search/census.yaml",
        "search": search,
        "default": default,
        "max_accuracy_drop": spec.study.constraint.max_accuracy_drop,
        "baseline": {k: baseline[k] for k in ("accuracy", "len_all")},
        "points": points,
        "replicates": replicates,
    }
    CENSUS.write_text(json.dumps(census, indent=1) + "\n")
    print(f"{CENSUS}: {len(points)} points, {len(replicates)} replicated "
          f"({sum(len(g) for g in replicates.values())} runs)")  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="stage", required=True)
    ex = sub.add_parser("export")
    ex.add_argument("--storage", required=True)
    ex.add_argument("--study", default="census")
    rn = sub.add_parser("run")
    rn.add_argument("--seeds", type=int, default=10)
    rn.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=list(SAMPLERS))
    rn.add_argument("--modes", nargs="+", default=list(BATCH), choices=list(BATCH))
    rn.add_argument("--trials", type=int, default=N_TRIALS, help="a run's length (budgets are its prefixes)")
    rn.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 1)))
    tb = sub.add_parser("table")
    tb.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 1)))
    args = parser.parse_args(argv)
    if args.stage == "export":
        export(args.storage, args.study)
    elif args.stage == "run":
        run_all(args.seeds, args.samplers, args.modes, args.trials, args.workers)
    else:
        print_table(args.workers)


if __name__ == "__main__":
    main()
