"""Small trial programs for tests of the runner and the report, where the real pipeline is not what is under
test. Each is a plain trial function made a recipe on TokenSqueeze's spec model (its knobs and sections:
these programs stand in for its trials), loaded by name (`study.program: programs:NAME`), so the tests folder
must be on PYTHONPATH for spawned workers (`env_with_tests_on_path`).

`synthetic_trial` writes per-response records whose accuracy and length follow the trial's knobs and scores
them with tsq's own statistics, so every registry metric, its interval and p_front come out as in a real
trial. It records the CUDA_VISIBLE_DEVICES it ran under.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import yaml

from objectives.tokensqueeze.config import TokenSqueezeSpec as Spec
from objectives.tokensqueeze.config import TrialParams
from tsq.engines.evaluate import compare, intervals, read_records
from tsq.errors import TrialFailed
from tsq.fileio import write_atomic
from tsq.method.metrics import ProblemSums, metric_values
from tsq.recipe import FunctionRecipe, TrialContext, TrialResult

TESTS = Path(__file__).resolve().parent
N_PROBLEMS, N_SAMPLES = 24, 2


def synthetic_spec(path: Path, name: str, n_trials: int, **study: object) -> Path:
    """A spec file for `synthetic_trial` on the tiny test model (its preflight resolves that model), with
    `study` entries over the defaults: α and η searched by a seeded random sampler."""
    spec = {
        "name": name,
        "model": {"path": "tiny", "tiny_variant": "test"},
        "data": {"train": {"n": 8}, "eval": {"n": 12}, "test": {"n": 12}},
        "evaluation": {"bootstrap": 200},
        "study": {
            "search": {"alpha": {"low": 0.05, "high": 0.5}, "eta": {"low": 0.0, "high": 1.0}},
            "sampler": {"name": "random", "seed": 1},
            "n_trials": n_trials,
            "program": "programs:synthetic_trial",
            "front": {"resamples": 200},
            **study,
        },
    }
    path.write_text(yaml.safe_dump(spec))
    return path


def env_with_tests_on_path() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path}


def _write_records(path: Path, accuracy: float, length: int) -> Path:
    import json

    rows = []
    for i in range(N_PROBLEMS):
        for j in range(N_SAMPLES):
            # problem i is solved in the first round(accuracy * N) draws of a fixed order: shared difficulty
            correct = (7 * i + 3 * j) % (N_PROBLEMS * N_SAMPLES) < accuracy * N_PROBLEMS * N_SAMPLES
            rows.append(
                {"problem_id": f"syn-{i:02d}", "sample": j, "n_tokens": length + (i % 5), "correct": correct,
                 "finish_reason": "stop", "truncated": False, "difficulty": 1 + i % 3, "steps": 2 + i % 2}
            )  # fmt: skip
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))
    return path


def _wait_for_workers() -> None:
    """With TSQ_TEST_BARRIER=DIR:N, a trial waits (at most a minute) until N worker processes have started
    one, so a test of parallel workers does not hang on how fast each spawned worker imports its modules."""
    barrier = os.environ.get("TSQ_TEST_BARRIER")
    if not barrier:
        return
    folder, n = barrier.rsplit(":", 1)
    Path(folder, str(os.getpid())).touch()
    deadline = time.monotonic() + 60
    while len(list(Path(folder).iterdir())) < int(n) and time.monotonic() < deadline:
        time.sleep(0.05)


def _synthetic_trial(spec: Spec, params: TrialParams, ctx: TrialContext) -> TrialResult:
    """Accuracy rises with η and falls with α; length falls with α. Another training seed moves the length
    by a token or two (seed noise); the held-out split is 5 points harder (the winner's curse)."""
    _wait_for_workers()
    time.sleep(float(os.environ.get("TSQ_TEST_TRIAL_SECONDS", "0")))
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    budget = spec.evaluation.budget
    harder = 0.05 if ctx.split == "test" else 0.0
    jitter = (ctx.seeds.training or 0) % 3
    base_path = _write_records(ctx.out_dir / "baseline_records.jsonl", 0.6 - harder, 40)
    path = _write_records(
        ctx.out_dir / "records.jsonl",
        0.5 + 0.2 * params.eta - 0.1 * params.alpha - harder,
        int(40 - 20 * params.alpha) + jitter,
    )
    base = ProblemSums.from_records(read_records(base_path), budget)
    new = ProblemSums.from_records(read_records(path), budget)
    baseline = {**metric_values(base), **intervals(base, spec.evaluation), "budget": budget}
    metrics = {
        **metric_values(new, base),
        **intervals(new, spec.evaluation),
        **compare(base, new, spec.evaluation),
    }
    return TrialResult(
        params={"alpha": params.alpha, "epsilon": params.epsilon, "lambda": params.lam, "eta": params.eta},
        metrics={**metrics, "budget": budget},
        baseline=baseline,
        budget_curve=[],
        baseline_budget_curve=[],
        adapter_dir=ctx.out_dir,
        records=path,
        baseline_records=base_path,
        stats={"cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "pid": os.getpid()},
    )


def _failing_trial(spec: Spec, params: TrialParams, ctx: TrialContext) -> TrialResult:
    raise TrialFailed("a trial that cannot succeed")


def _interrupted_trial(spec: Spec, params: TrialParams, ctx: TrialContext) -> TrialResult:
    """Makes what a real trial makes before its end (the Trainer's empty output folder, an adapter), says so
    in `ctx.out_dir.parent / "started"`, then waits to be interrupted (Ctrl-C)."""
    (ctx.out_dir / "trainer").mkdir(parents=True)
    (ctx.out_dir / "adapter").mkdir()
    (ctx.out_dir / "adapter" / "adapter_model.safetensors").write_bytes(b"weights")
    (ctx.out_dir.parent / "started").touch()
    time.sleep(120)
    raise TrialFailed("not interrupted within 120 s")


# `fidelity_trial`'s reduced fidelity: what `fidelity_spec` sets; a promotion above it changes the values
REDUCED_STEPS, REDUCED_TRAIN = 20, 8


def fidelity_spec(path: Path, name: str, promote: dict[str, object]) -> Path:
    """A spec for `fidelity_trial`: a 2 × 3 grid of α and η (6 trials, a front of 3 along η), a loose
    accuracy constraint (so the report recommends a trial) and `promote` as study.promote."""
    synthetic_spec(path, name, 6)
    spec = yaml.safe_load(path.read_text())
    spec["training"] = {"max_steps": REDUCED_STEPS}
    spec["data"]["train"] = {"n": REDUCED_TRAIN}
    spec["study"].update(
        search={"alpha": {"type": "categorical", "choices": [0.1, 0.5]},
                "eta": {"type": "categorical", "choices": [0.0, 0.5, 1.0]}},
        sampler={"name": "grid", "seed": 1},
        program="programs:fidelity_trial",
        constraint={"max_accuracy_drop": 0.4},
        promote=promote,
        n_trials=6,
    )  # fmt: skip
    path.write_text(yaml.safe_dump(spec))
    return path


def _write_levels(path: Path, correct: int, length: int) -> Path:
    """Records with exactly `correct` of the N_PROBLEMS × N_SAMPLES responses correct (draw k = 2i + j of
    problem i is correct when k < correct) and `length` tokens (+ i mod 5)."""
    import json

    rows = [
        {"problem_id": f"syn-{i:02d}", "sample": j, "n_tokens": length + (i % 5),
         "correct": 2 * i + j < correct, "finish_reason": "stop", "truncated": False,
         "difficulty": 1 + i % 3, "steps": 2}
        for i in range(N_PROBLEMS)
        for j in range(N_SAMPLES)
    ]  # fmt: skip
    write_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))
    return path


def _fidelity_trial(spec: Spec, params: TrialParams, ctx: TrialContext) -> TrialResult:
    """Accuracy rises with η (8 of 48 responses per 0.5), Len-A rises with η and falls with α: a front of
    three trials along η. Promoted to more training problems (data.train.n above REDUCED_TRAIN) every value
    moves by a constant, a monotone function of the reduced one (τ = 1); promoted to more training steps
    (training.max_steps above REDUCED_STEPS) η's effect on accuracy flips sign (τ = −1 on accuracy), Len-A
    still moves by a constant. Another training seed lengthens answers by (seed mod 3) tokens."""
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    budget = spec.evaluation.budget
    longer = spec.training.max_steps > REDUCED_STEPS
    more = (spec.data.train.n or 0) > REDUCED_TRAIN
    eta_effect = -1 if longer else 1
    correct = 24 + eta_effect * round(16 * params.eta) + (4 if longer or more else 0)
    length = 100 + round(40 * params.eta) - round(100 * params.alpha) - (10 if longer or more else 0)
    length += (ctx.seeds.training or 0) % 3
    base_path = _write_levels(ctx.out_dir / "baseline_records.jsonl", 30, 120)
    path = _write_levels(ctx.out_dir / "records.jsonl", correct, length)
    base = ProblemSums.from_records(read_records(base_path), budget)
    new = ProblemSums.from_records(read_records(path), budget)
    metrics = {
        **metric_values(new, base),
        **intervals(new, spec.evaluation),
        **compare(base, new, spec.evaluation),
    }
    return TrialResult(
        params={"alpha": params.alpha, "eta": params.eta},
        metrics={**metrics, "budget": budget},
        baseline={**metric_values(base), **intervals(base, spec.evaluation), "budget": budget},
        budget_curve=[],
        baseline_budget_curve=[],
        adapter_dir=ctx.out_dir,
        records=path,
        baseline_records=base_path,
    )


synthetic_trial = FunctionRecipe(_synthetic_trial, Spec)
fidelity_trial = FunctionRecipe(_fidelity_trial, Spec)
failing_trial = FunctionRecipe(_failing_trial, Spec)
interrupted_trial = FunctionRecipe(_interrupted_trial, Spec)
