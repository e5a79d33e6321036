"""Issue #33, the check in the real tiny world: TPE against the surrogate benchmark's winner, each sampler run
as its own studies (one per seed) of the quickstart's spec with only the sampler, its seed and the budget
changed, all in one TSQ_HOME so they share the cached self-samples and the baseline. Each study's reported
front (Optuna's, the report's ★) is scored by its measured hypervolume over the surrogate benchmark's
reference point (accuracy at the constraint, len_all at the baseline's), and the samplers are compared paired
by seed, with a bootstrap interval over seeds. Measured values carry the noise the search chose them by, alike
for both samplers; `tsq sweep confirm` on a study re-measures its front at fresh seeds.

The measured values carry the winner's curse, so the fronts are also replicated (fixed before any replicate
ran): each study's reported front points that add hypervolume (inside the reference box) are re-run at one
fresh seed pair, `tsq sweep confirm`'s replicate 1, and the replicated hypervolume is that of those points at
their fresh-seed values alone. Points two studies share (the enqueued default; the startup points of one seed)
are computed once: the cache holds them.

  TSQ_HOME=~/check python benchmarks/search/real_check.py run --samplers tpe gp --seeds 5 --trials 20
  TSQ_HOME=~/check python benchmarks/search/real_check.py replicate --samplers tpe gp --seeds 5
  TSQ_HOME=~/check python benchmarks/search/real_check.py export --samplers tpe gp --seeds 5
  python benchmarks/search/real_check.py table --samplers tpe gp --seeds 5   # from the export, committed

Resumable: a study that exists continues to its n_trials (`tsq sweep launch`); `replicate` runs only the
replicates a study lacks.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tsq.paths import tsq_home as home

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_samplers import REFERENCE, SAMPLERS, bootstrap, hypervolume  # noqa: E402 (beside this file)

REPO = HERE.parents[1]
EXPORT = HERE / "real_check.json"


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


def _storage() -> str:
    return f"sqlite:///{home() / 'studies.db'}"


def _reference(study: Any) -> np.ndarray:
    """(accuracy at the constraint, len_all at the baseline's), as the surrogate benchmark's reference."""
    from tsq.records import StudyRecord

    record = StudyRecord.from_study(study)
    assert record.objectives == ["accuracy", "len_all"], f"{study.study_name}: the check scores those two"
    base, drop = record.baseline or {}, record.max_accuracy_drop or 0.0
    return np.array([base["accuracy"] - drop, base["len_all"]])


def contributing(front: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Indices of the (accuracy, len_all) front points inside the reference box: the ones that add volume."""
    inside = (front[:, 0] > reference[0]) & (front[:, 1] < reference[1])
    return np.flatnonzero(inside)


def replicated(originals: Sequence[int], trials: Sequence[dict[str, Any]]) -> np.ndarray:
    """Each original's (accuracy, len_all) over its fresh-seed replicates on the eval split (mean), one row
    per original that has them (`trials`: the export's)."""

    def fresh_of(number: int, t: dict[str, Any]) -> bool:
        r = t["replicate"] or {}
        return r.get("of") == number and r["index"] >= 1 and r["split"] == "eval" and not r["promoted"]

    rows = []
    for number in originals:
        fresh = [t["values"] for t in trials if t["state"] == "COMPLETE" and fresh_of(number, t)]
        if fresh:
            rows.append(np.mean(fresh, axis=0))
    return np.array(rows).reshape(-1, 2)


def front_volume(study: dict[str, Any]) -> tuple[float, int, float | None, int]:
    """The measured hypervolume of an exported study's reported front and its number of complete trials;
    the replicated hypervolume of the front's contributing points (None until each has a fresh replicate)
    and their number."""
    reference = np.array(study["reference"])
    trials = {t["number"]: t for t in study["trials"]}
    front = np.array([trials[n]["values"] for n in study["front"]]).reshape(-1, 2)
    done = sum(t["state"] == "COMPLETE" and not t["replicate"] for t in study["trials"])
    originals = [study["front"][i] for i in contributing(front, reference)]
    again = replicated(originals, study["trials"])
    volume = hypervolume(again, reference) if len(again) == len(originals) else None
    return hypervolume(front, reference), done, volume, len(originals)


def export(samplers: Sequence[str], seeds: int) -> None:
    """The check's studies as `real_check.json` (committed): what `table` reads."""
    import optuna

    from tsq.records import trial_records
    from tsq.report.pareto import pareto_trials

    studies = []
    for seed in range(seeds):
        for sampler in samplers:
            study = optuna.load_study(study_name=study_name(sampler, seed), storage=_storage())
            trials = []
            for r in trial_records(study):
                rep = r.replicate
                trials.append({
                    "number": r.number, "state": r.state.name, "params": r.params,
                    "values": None if r.values is None else list(r.values), "feasible": r.feasible,
                    "replicate": rep and {"of": rep.of, "index": rep.index, "split": rep.split,
                                          "promoted": rep.promoted},
                })  # fmt: skip
            studies.append({"name": study.study_name, "sampler": sampler, "seed": seed,
                            "reference": _reference(study).tolist(),
                            "front": [t.number for t in pareto_trials(study)], "trials": trials})  # fmt: skip
    EXPORT.write_text(json.dumps({"studies": studies}, indent=None) + "\n")
    print(f"{EXPORT}: {len(studies)} studies")


def replicate(spec: Path, samplers: Sequence[str], seeds: int, trials: int) -> None:
    """Run the fresh-seed replicate of each study's contributing front points (those it lacks)."""
    from tsq.recipe import load_spec
    from tsq.report.pareto import pareto_trials
    from tsq.study.confirm import plan, run_replicates
    from tsq.study.lifecycle import create_or_load
    from tsq.study.storage import parse_storage_url

    storage = parse_storage_url(_storage())
    for seed in range(seeds):
        for sampler in samplers:
            name = study_name(sampler, seed)
            loaded = load_spec(write_spec(spec, sampler, seed, trials))
            # tsq's storage, as `tsq sweep confirm` opens it: heartbeats, so a killed replicate is retried
            study = create_or_load(loaded, storage, name)
            best = pareto_trials(study)
            front = np.array([t.values for t in best]).reshape(-1, 2)
            targets = [best[i] for i in contributing(front, _reference(study))]
            print(f"== {name}: replicating trials {[t.number for t in targets]}", flush=True)
            wanted = plan(loaded, targets, 1, "eval")
            params = {t.number: t.params for t in targets}
            run_replicates(loaded, storage, study, wanted, params, "none")


def t_interval(diff: np.ndarray, level: float) -> tuple[float, float]:
    """Student's t interval for the mean of paired differences: at 5 pairs a percentile bootstrap is too
    narrow (it cannot reach past the sample's own extremes), so the table prints both. tsq's replicate
    interval is exactly that t interval when no bootstrap error is given."""
    from tsq.method.stats import aggregate_replicates

    estimate = aggregate_replicates(diff.tolist(), level=level)
    assert estimate.lo is not None and estimate.hi is not None  # two or more pairs: a measured spread
    return estimate.lo, estimate.hi


def table(samplers: Sequence[str], seeds: int) -> None:
    exported = {(st["sampler"], st["seed"]): st for st in json.loads(EXPORT.read_text())["studies"]}
    volumes = {(s, seed): front_volume(exported[s, seed]) for s in samplers for seed in range(seeds)}
    print("sampler | seed | trials | hypervolume of the reported front: measured | replicated (points)")
    for (sampler, seed), (volume, done, again, points) in volumes.items():
        shown = "not yet" if again is None else f"{again:.4f}"
        print(f"{sampler} | {seed} | {done} | {volume:.4f} | {shown} ({points})")
    for sampler in samplers:
        if sampler == REFERENCE:
            continue
        for label, part in (("measured", 0), ("replicated", 2)):
            pairs = [(volumes[sampler, s][part], volumes[REFERENCE, s][part]) for s in range(seeds)]
            if any(a is None or b is None for a, b in pairs):
                continue
            diff = np.array([a - b for a, b in pairs])
            lo, hi = bootstrap(diff, 0.95)
            t_lo, t_hi = t_interval(diff, 0.95)
            print(f"{sampler} - {REFERENCE}, {label}, paired by seed ({seeds} seeds): {diff.mean():+.4f}; "
                  f"95% bootstrap [{lo:+.4f}, {hi:+.4f}], t [{t_lo:+.4f}, {t_hi:+.4f}]")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=["run", "replicate", "export", "table"])
    parser.add_argument("--spec", type=Path, default=REPO / "sweeps" / "quickstart.yaml")
    parser.add_argument("--samplers", nargs="+", default=[REFERENCE, "gp"], choices=list(SAMPLERS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    if args.stage == "run":
        run(args.spec, args.samplers, args.seeds, args.trials)
    elif args.stage == "replicate":
        replicate(args.spec, args.samplers, args.seeds, args.trials)
    elif args.stage == "export":
        export(args.samplers, args.seeds)
    else:
        table(args.samplers, args.seeds)


if __name__ == "__main__":
    main()
