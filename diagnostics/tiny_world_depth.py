"""Does verification pay off where problems are hard? The baseline's own responses, split by depth.

Runs (or reads from the cache) the baseline evaluation of a spec through tsq's own code
(`tsq.engines.evaluate.baseline`; with `--adapter`, a trained trial's LoRA adapter on the same split), splits
every difficulty level's responses by whether they contain a verification step
(`tsq.data.tiny_world.has_verification`: the world knows its own phrasing), and prints accuracy and Len-A of
each group with a 95% bootstrap interval over problems, and the with-minus-without difference with its
interval. Problems are the resampling unit: the samples of one problem are not independent.

    TSQ_HOME=... .venv/bin/python diagnostics/tiny_world_depth.py sweeps/quickstart.yaml [--bootstrap 2000]
        [--eval-problems 400]   (more eval problems than the spec's, for narrower intervals)
        [--adapter $TSQ_HOME/studies/STUDY/trial-N/adapter]   (a trained model instead of the baseline)

`--adapter` may be given several times (say, one trained configuration's seeds): each model gets its table,
then one more table gives, per depth, the mean over the models (± their SD) of the share of responses that
verify, the accuracy with and without a check, and the accuracy — what a verify-share story needs per seed.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from tsq.cache import Cache, cache_dir_of
from tsq.config.spec import Spec
from tsq.data.tiny_world import has_verification
from tsq.data.traces import Response
from tsq.engines.evaluate import EvalResult, evaluate
from tsq.engines.generation import backend_from_spec
from tsq.engines.models import resolve_model
from tsq.recipe import load_spec

# Per problem: [n, correct, tokens] for responses with a verification step, then the same without.
_COLUMNS = 6


def problem_sums(responses: Sequence[Response]) -> np.ndarray:
    """One problem's [n, correct, tokens] with verification, then without."""
    row = np.zeros(_COLUMNS)
    for r in responses:
        base = 0 if has_verification(r.text) else 3
        row[base : base + 3] += (1, r.correct, r.n_tokens)
    return row


def _group_stats(sums: np.ndarray) -> np.ndarray:
    """[acc with, len with, acc without, len without, acc diff, len diff] from column sums (…, 6) → (…, 6);
    a group with no responses gives NaN."""
    with np.errstate(invalid="ignore", divide="ignore"):
        acc_w, len_w = sums[..., 1] / sums[..., 0], sums[..., 2] / sums[..., 0]
        acc_o, len_o = sums[..., 4] / sums[..., 3], sums[..., 5] / sums[..., 3]
    return np.stack([acc_w, len_w, acc_o, len_o, acc_w - acc_o, len_w - len_o], axis=-1)


def depth_table(rows: np.ndarray, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point estimates and 95% percentile intervals (lo, hi) of `_group_stats` over problems `rows` [P, 6]."""
    point = _group_stats(rows.sum(0))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(rows), size=(n_boot, len(rows)))
    boots = _group_stats(rows[idx].sum(1))
    lo = np.nanpercentile(boots, 2.5, axis=0)
    hi = np.nanpercentile(boots, 97.5, axis=0)
    return point, lo, hi


def _fmt(value: float, lo: float, hi: float, pct: bool) -> str:
    if np.isnan(value):
        return "n/a"
    scale = 100.0 if pct else 1.0
    return f"{value * scale:.1f} [{lo * scale:.1f}, {hi * scale:.1f}]"


def print_table(
    responses: Mapping[str, Sequence[Response]], difficulty: Mapping[str, int | None], n_boot: int, seed: int
) -> None:
    levels = sorted({d for d in difficulty.values() if d is not None})
    print(
        "| depth | n with / without | Acc with (%) | Acc without (%) | Acc diff (pts) "
        "| Len-A with | Len-A without | Len-A diff |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for level in (*levels, None):
        pids = [p for p in responses if level is None or difficulty.get(p) == level]
        rows = np.stack([problem_sums(responses[p]) for p in pids])
        point, lo, hi = depth_table(rows, n_boot, seed)
        cells = [_fmt(point[i], lo[i], hi[i], pct=i in (0, 2, 4)) for i in range(6)]
        n_w, n_o = int(rows[:, 0].sum()), int(rows[:, 3].sum())
        label = "all" if level is None else str(level)
        print(
            f"| {label} | {n_w} / {n_o} | {cells[0]} | {cells[2]} | {cells[4]} "
            f"| {cells[1]} | {cells[3]} | {cells[5]} |"
        )


def group_shares(responses: Mapping[str, Sequence[Response]], pids: Sequence[str]) -> np.ndarray:
    """[verify share, Acc with, Acc without, Acc] over the responses of `pids` (NaN for an empty group)."""
    sums = np.stack([problem_sums(responses[p]) for p in pids]).sum(0)
    n_w, c_w, _, n_o, c_o, _ = sums
    acc_w, _, acc_o, *_ = _group_stats(sums)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.array([n_w / (n_w + n_o), acc_w, acc_o, (c_w + c_o) / (n_w + n_o)])


def print_seed_table(results: Sequence[EvalResult]) -> None:
    """Per depth, the mean over models (± SD between them) of verify share and accuracies."""
    difficulty = results[0].difficulty
    levels = sorted({d for d in difficulty.values() if d is not None})
    print(f"mean over {len(results)} models (± SD between them):")
    print("| depth | verify share (%) | Acc with (%) | Acc without (%) | Acc (%) |")
    print("|---|---|---|---|---|")
    for level in (*levels, None):
        pids = [p for p in results[0].responses if level is None or difficulty.get(p) == level]
        per_model = 100 * np.stack([group_shares(r.responses, pids) for r in results])
        mean, sd = np.nanmean(per_model, 0), np.nanstd(per_model, 0, ddof=1)
        cells = " | ".join(f"{m:.1f} ± {d:.1f}" for m, d in zip(mean, sd, strict=True))
        print(f"| {'all' if level is None else level} | {cells} |")


def baseline_parser(description: str) -> argparse.ArgumentParser:
    """The arguments every tiny-world baseline diagnostic takes: a spec, and optionally more eval problems."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("spec", type=Path)
    parser.add_argument("--eval-problems", type=int, help="eval problems (default: the spec's data.eval.n)")
    return parser


def spec_of(args: argparse.Namespace) -> Spec:
    """The spec, with `--eval-problems` applied."""
    spec = load_spec(args.spec)
    if args.eval_problems:
        data = spec.data.model_copy(
            update={"eval": spec.data.eval.model_copy(update={"n": args.eval_problems})}
        )
        spec = spec.model_copy(update={"data": data})
    return spec


def model_parser(description: str) -> argparse.ArgumentParser:
    """`baseline_parser`, plus `--adapter` (repeatable): trained models instead of the base model."""
    parser = baseline_parser(description)
    parser.add_argument(
        "--adapter",
        type=Path,
        action="append",
        help="a trial's LoRA adapter directory; repeat for several models (default: the base model)",
    )
    return parser


def evaluations(args: argparse.Namespace) -> tuple[Spec, list[tuple[str, EvalResult]]]:
    """The spec (with `--eval-problems` applied) and one (label, evaluation) per `--adapter`, or the base
    model's alone; each is cached (an adapter's by its weights), and one backend serves them all."""
    spec = spec_of(args)
    cache = Cache(cache_dir_of(spec.cache_dir))
    model_path = resolve_model(spec.model)
    out = []
    with backend_from_spec(spec, model_path) as backend:
        for adapter in args.adapter or [None]:
            label = f"{adapter} on {args.spec}" if adapter else f"baseline of {args.spec}"
            out.append((label, evaluate(spec, model_path, cache, adapter=adapter, backend=backend)))
    return spec, out


def main() -> None:
    parser = model_parser(__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples over problems")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    _, results = evaluations(args)
    for label, result in results:
        summary = result.summary
        print(f"{label}: accuracy {summary['accuracy']:.3f}, Len-A {summary['len_all']:.1f}")
        print_table(result.responses, result.difficulty, args.bootstrap, args.seed)
    if len(results) > 1:
        print_seed_table([result for _, result in results])


if __name__ == "__main__":
    main()
