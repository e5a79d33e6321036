"""Issue #33, the check in the real tiny world: TPE against the surrogate benchmark's winner, each sampler run
as its own studies (one per seed) of the quickstart's spec with only the sampler, its seed and the budget
changed, all in one TSQ_HOME so they share the cached self-samples and the baseline. Each study's reported
front (Optuna's, the report's ★) is scored by its measured hypervolume over the surrogate benchmark's
reference point (accuracy at the constraint, len_all at the baseline's), and the samplers are compared paired
by seed, with a bootstrap interval over seeds. Measured values carry the noise the search chose them by, alike
for both samplers; `tsq sweep confirm` on a study re-measures its front at fresh seeds.

  TSQ_HOME=~/check python benchmarks/search/real_check.py run --samplers tpe gp --seeds 5 --trials 20
  TSQ_HOME=~/check python benchmarks/search/real_check.py table --samplers tpe gp --seeds 5

Resumable: a study that exists continues to its n_trials (`tsq sweep launch`).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml

from tsq.paths import tsq_home as home

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_samplers import REFERENCE, SAMPLERS, bootstrap, hypervolume  # noqa: E402 (beside this file)

REPO = HERE.parents[1]


def study_name(sampler: str, seed: int) -> str:
    return f"check-{sampler}-s{seed}"


def write_spec(spec: Path, sampler: str, seed: int, trials: int) -> Path:
    path = home() / "real-check" / f"{study_name(sampler, seed)}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    study = {"name": study_name(sampler, seed), "sampler": {**SAMPLERS[sampler], "seed": seed},
             "n_trials": trials, "timeout": None}  # fmt: skip
    path.write_text(yaml.safe_dump({"extends": str(spec.resolve()), "study": study}, sort_keys=False))
    return path


def run(spec: Path, samplers: Sequence[str], seeds: int, trials: int) -> None:
    tsq = Path(sys.executable).with_name("tsq")
    for seed in range(seeds):
        for sampler in samplers:
            path = write_spec(spec, sampler, seed, trials)
            print(f"== {study_name(sampler, seed)}", flush=True)
            subprocess.run(
                [str(tsq), "sweep", "launch", str(path), "--tracker", "none", "--no-summary"], check=True
            )


def front_volume(name: str, storage: str) -> tuple[float, int]:
    """The measured hypervolume of the study's reported front, and its number of complete trials."""
    import optuna

    from tsq.records import StudyRecord
    from tsq.report.pareto import pareto_trials

    study = optuna.load_study(study_name=name, storage=storage)
    record = StudyRecord.from_study(study)
    assert record.objectives == ["accuracy", "len_all"], f"{name}: the check scores accuracy and len_all"
    base, drop = record.baseline or {}, record.max_accuracy_drop or 0.0
    reference = np.array([base["accuracy"] - drop, base["len_all"]])
    front = np.array([t.values for t in pareto_trials(study)]).reshape(-1, 2)
    done = len([t for t in study.get_trials() if t.state.name == "COMPLETE"])
    return hypervolume(front, reference), done


def table(samplers: Sequence[str], seeds: int) -> None:
    storage = f"sqlite:///{home() / 'studies.db'}"
    volumes = {
        (s, seed): front_volume(study_name(s, seed), storage) for s in samplers for seed in range(seeds)
    }
    print("sampler | seed | trials | measured hypervolume of the reported front")
    for (sampler, seed), (volume, done) in volumes.items():
        print(f"{sampler} | {seed} | {done} | {volume:.4f}")
    for sampler in samplers:
        if sampler == REFERENCE:
            continue
        diff = np.array([volumes[sampler, s][0] - volumes[REFERENCE, s][0] for s in range(seeds)])
        lo, hi = bootstrap(diff, 0.95)
        gain = f"{diff.mean():+.4f} [{lo:+.4f}, {hi:+.4f}]"
        print(f"{sampler} - {REFERENCE}, paired by seed: {gain} (95% bootstrap over {seeds} seeds)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=["run", "table"])
    parser.add_argument("--spec", type=Path, default=REPO / "sweeps" / "quickstart.yaml")
    parser.add_argument("--samplers", nargs="+", default=[REFERENCE, "gp"], choices=list(SAMPLERS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    if args.stage == "run":
        run(args.spec, args.samplers, args.seeds, args.trials)
    else:
        table(args.samplers, args.seeds)


if __name__ == "__main__":
    main()
