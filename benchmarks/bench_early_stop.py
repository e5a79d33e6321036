"""Staged evaluation with an early stop, measured: 8 fixed points of the quickstart's world, half of them in a
collapsing region (β 0.03 with the quickstart's lr; at β 0.1 an earlier run lost 8-16 points, which the
test caught only at the second look), run as a real study with the early stop on (enqueued points, the
worker, the objective, the trial program), then every trial's adapter evaluated in stages and on the whole
eval set, back to back.

Run:  OMP_NUM_THREADS=1 TSQ_HOME=/tmp/tsqhome-X .venv/bin/python benchmarks/bench_early_stop.py [SPEC]
      [--train-n N] [--study NAME]
      .venv/bin/python benchmarks/bench_early_stop.py --per-study [--studies S --trials T]
(default: sweeps/quickstart.yaml as it is, data.train.n 200; --study re-times a finished benchmark
study without training, its trials' own early-stop decisions shown beside the re-run's, which may differ when
the test changed since; --per-study simulates S studies of T trials at the constraint's boundary, each study
with one baseline draw (tests/early_stop_sim.py), and prints the distribution of the per-study false-stop
rate, with no model). The tiny model is built (or found) and the self-samples and the baseline are
computed before timing starts. On a shared machine keep OMP_NUM_THREADS=1: oversubscribed torch threads
made generation 20x slower here.

"Without the early stop" evaluates the SAME adapters the study trained on the whole eval set, exactly what
the trial program runs under `--no-early-stop` (`tsq.engines.evaluate.evaluate`): training is seeded and
costs the same either way, so training each point twice would only buy noise. Both evaluations of a trial
run in one process, each into an empty cache, in alternating order. Prints, per point, the trial's own staged
evaluation (stage, seconds, accuracy change), the timed staged and full evaluations, the ratio of the
totals (time and responses generated), and the sets of stopped and feasible points; requirements:
evaluation time falls by >= 25%, and no point feasible without the early stop is stopped.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

import optuna
import yaml

from objectives.tokensqueeze.trial import evaluate_staged
from tsq.cache import Cache, cache_dir_of
from tsq.config.spec import Spec
from tsq.data.formatting import format_prompt
from tsq.data.loading import load_problem_set
from tsq.engines.evaluate import EvalResult, baseline, compare, evaluate
from tsq.engines.generation import backend_from_spec
from tsq.engines.generation.base import Backend
from tsq.engines.models import resolve_model
from tsq.engines.sample import sample_responses, samples_key, sampling_settings
from tsq.method.early_stop import TEST
from tsq.paths import tsq_home
from tsq.recipe import load_spec
from tsq.study.launch import launch
from tsq.study.storage import open_storage, parse_storage_url

# (β, α, ε, λ, η): the same four knob settings at β 0.03 (collapsing) and at the quickstart's β 1.0
SETTINGS = [(0.2, 0.05, 1.0, 0.5), (0.6, 0.05, 0.0, 0.2), (0.4, 0.1, 2.0, 0.0), (0.8, 0.02, 1.0, 1.0)]
POINTS = [{"beta": beta, "alpha": a, "epsilon": e, "lambda": lam, "eta": eta}
          for beta in (0.03, 1.0) for a, e, lam, eta in SETTINGS]  # fmt: skip


def bench_spec(path: str, train_n: int) -> tuple[Spec, Path]:
    """The spec with β searched over the points' values, the points' study settings and fewer train problems,
    written next to the study (and validated as any spec)."""
    raw = yaml.safe_load(Path(path).read_text())
    if (raw.get("study") or {}).get("constraint") is None:
        raise SystemExit(f"{path}: the benchmark needs study.constraint (the early stop keeps it)")
    raw["data"]["train"] = {**raw["data"].get("train", {}), "n": train_n}
    raw["study"]["search"]["beta"] = {"type": "categorical", "choices": sorted({p["beta"] for p in POINTS})}
    # the points' α at most 0.8: step candidates and reference log-probs are computed up to the study's top α
    raw["study"]["search"]["alpha"] = {"low": 0.2, "high": max(p["alpha"] for p in POINTS)}
    raw["study"].update(name=f"bench-early-stop-{int(time.time())}", n_trials=len(POINTS), timeout=None,
                        enqueue_defaults=False, early_stop=True,
                        storage=f"sqlite:///{tsq_home() / 'bench-early-stop.db'}")  # fmt: skip
    out = tsq_home() / "bench-early-stop.yaml"
    out.write_text(yaml.safe_dump(raw))
    return load_spec(out), out


def drop_trial_evaluations(cache: Cache, keep: set[str]) -> int:
    """Delete every sample entry but `keep` (the self-samples and the baseline): the trial evaluations of
    earlier runs, so both sides of the comparison sample anew. Use a TSQ_HOME of the benchmark's own."""
    dropped = 0
    for entry in cache.entries("samples"):
        if entry.key not in keep:
            entry.path.unlink()
            dropped += 1
    return dropped


def warm_keys(spec: Spec, model_path: Path, backend: Backend) -> set[str]:
    """The cache keys of the self-samples and the baseline (what every trial reads, not what it measures)."""
    keys = set()
    for split, section in (("train", spec.sampling), ("eval", spec.evaluation)):
        problems = load_problem_set(spec.data, split)  # type: ignore[arg-type]
        prompts = [format_prompt(backend.tokenizer, p) for p in problems.problems]
        keys.add(samples_key(model_path, problems, prompts, sampling_settings(section), backend.name))
    return keys


def per_study(studies: int, trials: int) -> None:
    """The false-stop rate of trials at the boundary, per simulated study (one baseline draw each)."""
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from early_stop_sim import per_study_false_stops

    started = time.perf_counter()
    rates = per_study_false_stops(studies, trials)
    q = np.quantile(rates, [0.5, 0.9, 0.99])
    print(f"{studies} studies x {trials} trials at the boundary (100 problems x 8 samples, delta 5 points), "
          f"{time.perf_counter() - started:.0f} s\ntest: {TEST}")  # fmt: skip
    print(f"false-stop rate per study: mean {rates.mean():.2%}, median {q[0]:.2%}, "
          f"90th percentile {q[1]:.2%}, 99th {q[2]:.2%}, max {rates.max():.2%}; "
          f"studies above 10%: {np.mean(rates > 0.10):.1%} (requirement <= 1%)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("spec", nargs="?", default="sweeps/quickstart.yaml")
    parser.add_argument("--train-n", type=int, default=200, help="train problems (self-samples)")
    parser.add_argument("--study", help="time the evaluations of this finished benchmark study (no training)")
    parser.add_argument("--per-study", action="store_true", help="simulate the per-study false-stop rate")
    parser.add_argument("--studies", type=int, default=500)
    parser.add_argument("--trials", type=int, default=200)
    args = parser.parse_args()
    if args.per_study:
        per_study(args.studies, args.trials)
        return
    spec, spec_path = bench_spec(args.spec, args.train_n)
    drop = spec.study.constraint.max_accuracy_drop  # type: ignore[union-attr]
    model_path = resolve_model(spec.model)
    cache = Cache(cache_dir_of(spec.cache_dir))

    # not timed: the parameter-free stages every trial reads from the cache
    with closing(backend_from_spec(spec, model_path)) as backend:
        sample_responses(backend, model_path, load_problem_set(spec.data, "train"),
                         sampling_settings(spec.sampling), cache)  # fmt: skip
        base = baseline(spec, cache, backend=backend)
        keep = warm_keys(spec, model_path, backend)
    print(f"dropped {drop_trial_evaluations(cache, keep)} trial evaluations of earlier runs")

    # with the early stop: a real study of the 8 points (the worker, the objective, the trial program)
    storage = parse_storage_url(spec.study.storage)
    name = args.study or str(spec.study.name)
    study_seconds = None
    if args.study is None:
        study = optuna.create_study(
            study_name=name, storage=open_storage(storage), directions=spec.study.directions
        )
        for point in POINTS:
            study.enqueue_trial(point)
        started = time.perf_counter()
        launch(spec, spec_path, None, name, len(POINTS), 1, "none", 0)
        study_seconds = time.perf_counter() - started
    trials = sorted(optuna.load_study(study_name=name, storage=open_storage(storage)).trials,
                    key=lambda t: t.number)  # fmt: skip

    # Evaluation cost, like for like: each trial's adapter evaluated in stages (as with the early stop) and on
    # the whole eval set (as with --no-early-stop), back to back in this process on one backend, each into an
    # empty cache, the order alternating between trials so that drifting load on the machine evens out.
    rows = []
    with closing(backend_from_spec(spec, model_path)) as backend:
        for i, t in enumerate(trials):
            attrs = t.user_attrs
            adapter = Path(attrs["adapter_dir"])
            timed: dict[str, tuple[float, EvalResult]] = {}
            for side in ("staged", "full") if i % 2 == 0 else ("full", "staged"):
                with tempfile.TemporaryDirectory() as tmp:
                    start = time.perf_counter()
                    if side == "staged":
                        result, record = evaluate_staged(spec, model_path, Cache(tmp), base, drop,
                                                         adapter=adapter, backend=backend)  # fmt: skip
                    else:
                        result = evaluate(spec, model_path, Cache(tmp), adapter=adapter, backend=backend)
                    timed[side] = (time.perf_counter() - start, result)
            full = timed["full"][1]
            delta_full = compare(base, full, spec.evaluation)["accuracy_delta"]
            stop = attrs.get("early_stop") or {}
            if stop.get("test") == TEST:  # a study run under an earlier test may have decided otherwise
                assert bool(stop.get("stopped")) == record["stopped"], (
                    "the re-run must decide as the trial did"
                )
            rows.append({
                "n": t.number, "params": dict(t.params),
                "stopped": record["stopped"], "stage": record["stage"],
                "trial_stopped": bool(stop.get("stopped")), "trial_stage": stop.get("stage"),
                "in_trial_s": attrs["stats"]["evaluation"]["seconds"], "delta_on": attrs["accuracy_delta"],
                "feasible_on": all(v <= 0 for v in t.constraints.values()),
                "seconds_on": timed["staged"][0], "seconds_off": timed["full"][0],
                "responses_on": sum(len(rs) for rs in timed["staged"][1].responses.values()),
                "responses_off": sum(len(rs) for rs in full.responses.values()),
                "delta_off": delta_full,
                "feasible_off": delta_full is not None and delta_full >= -drop - 1e-12,
            })  # fmt: skip

    print(f"\n{args.spec} with data.train.n {args.train_n}; constraint: accuracy >= baseline - {drop:.2f} "
          f"(baseline {base.summary['accuracy']:.3f}); stages {list(spec.evaluation.stages)}; study {name}"
          + ("" if study_seconds is None else f": {study_seconds:.0f} s"))  # fmt: skip
    print(f"early-stop test: {TEST}")
    print("trial | beta alpha eps   lam  eta | in the trial: stage, s, dAcc | re-run: stage | "
          "timed: staged s, full s | full: dAcc, feasible")  # fmt: skip
    for r in rows:
        p = r["params"]
        in_trial = f"stopped@{r['trial_stage']}" if r["trial_stopped"] else f"ran {r['trial_stage']}"
        stage = f"stopped@{r['stage']}" if r["stopped"] else f"ran {r['stage']}"
        print(f"{r['n']:5d} | {p['beta']:<4} {p['alpha']:<5} {p['epsilon']:<5} {p['lambda']:<4} "
              f"{p['eta']:<4}| {in_trial:10s} {r['in_trial_s']:6.1f} {100 * r['delta_on']:+6.1f} pts | "
              f"{stage:10s} | {r['seconds_on']:6.1f} {r['seconds_off']:6.1f} | "
              f"{100 * r['delta_off']:+6.1f} pts  {r['feasible_off']}")  # fmt: skip
    on, off = sum(r["seconds_on"] for r in rows), sum(r["seconds_off"] for r in rows)
    n_on, n_off = sum(r["responses_on"] for r in rows), sum(r["responses_off"] for r in rows)
    print(f"\nevaluation time: {on:.1f} s with the early stop, {off:.1f} s without: ratio {on / off:.2f} "
          f"({100 * (1 - on / off):.0f}% less; requirement >= 25%)")  # fmt: skip
    print(f"responses generated: {n_on} with, {n_off} without: ratio {n_on / n_off:.2f}")
    stopped = {r["n"] for r in rows if r["stopped"]}
    feasible_off = {r["n"] for r in rows if r["feasible_off"]}
    print(f"stopped (with the early stop):  {sorted(stopped)}")
    print(f"stopped in the trials:          {sorted(r['n'] for r in rows if r['trial_stopped'])}")
    print(f"feasible in the study:          {sorted(r['n'] for r in rows if r['feasible_on'])}")
    print(f"feasible without the early stop: {sorted(feasible_off)}")
    print(f"feasible without yet stopped:   {sorted(stopped & feasible_off)} (requirement: none)")


if __name__ == "__main__":
    main()
