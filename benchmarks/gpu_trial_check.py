"""One tiny-world trial on this machine's device (CUDA in bf16 where there is one), beside a saved run.

Run it once on CPU to save the reference, then on a GPU machine with the reference beside it:
    .venv/bin/python benchmarks/gpu_trial_check.py --save cpu.json
    python benchmarks/gpu_trial_check.py --compare cpu.json --save cuda.json
The trial starts from an empty cache, so every stage runs on the device: self-sampling, step candidates and
their KL, the reference log-probs, LoRA training and both evaluations. Same spec, seeds and parameters on
both sides; sampling differs by device and precision, so the figures should agree within sampling noise
(about ±3 points of accuracy at 800 responses), not exactly.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from objectives.tokensqueeze import TrialContext, run_trial
from tsq.cache import Cache
from tsq.devices import pick_device, pick_dtype
from tsq.models import resolve_model
from tsq.spec import TrialParams, load_spec

ROWS = (  # label, section, key, scale, format
    ("baseline accuracy", "baseline", "accuracy", 100, "{:.1f}%"),
    ("baseline Len-A", "baseline", "len_all", 1, "{:.1f}"),
    ("trial accuracy", "metrics", "accuracy", 100, "{:.1f}%"),
    ("trial Len-T", "metrics", "len_correct", 1, "{:.1f}"),
    ("trial Len-A", "metrics", "len_all", 1, "{:.1f}"),
    ("trial AUC", "metrics", "auc", 1, "{:.3f}"),
    ("accuracy delta", "metrics", "accuracy_delta", 100, "{:+.1f} pts"),
    ("Len-A change", "metrics", "len_all_reduction", -100, "{:+.1f}%"),
    ("pairs", "stats", "pairs", 1, "{}"),
    ("training final loss", "training", "final_loss", 1, "{:.3f}"),
)


def run(spec_path: str, params: TrialParams) -> dict:
    spec = load_spec(spec_path)
    resolve_model(spec.model)  # a one-off build, not part of the trial's time
    device = pick_device()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = run_trial(spec, params, TrialContext(cache=Cache(Path(tmp) / "cache"), out_dir=Path(tmp)))
        seconds = time.perf_counter() - start
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {
        "device": f"{device.type} ({name})",
        "dtype": str(pick_dtype(spec.model.dtype, device)).removeprefix("torch."),
        "seconds": round(seconds, 1),
        "params": result.params,
        "metrics": result.metrics,
        "baseline": result.baseline,
        "stats": result.stats,
        "training": result.stats["training"],
    }


def _cell(run: dict, section: str, key: str, scale: float, fmt: str) -> str:
    value = run[section].get(key)
    return "–" if value is None else fmt.format(scale * value)


def print_table(runs: list[dict]) -> None:
    header = ["", *(f"{r['device']}, {r['dtype']}" for r in runs)]
    lines = [header, ["trial seconds (cold cache)", *(f"{r['seconds']:.1f}" for r in runs)]]
    lines += [[label, *(_cell(r, *rest) for r in runs)] for label, *rest in ROWS]
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    for row in lines:
        print(
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("spec", nargs="?", default="sweeps/quickstart.yaml")
    parser.add_argument("--compare", type=Path, help="a run saved with --save (e.g. on CPU) to print beside")
    parser.add_argument("--save", type=Path, help="write this run's figures here as JSON")
    args = parser.parse_args()

    here = run(args.spec, TrialParams())  # the paper's point: α 0.2, ε 0.005, λ 1, η 0.5
    if args.save:
        args.save.write_text(json.dumps(here, indent=2, default=str))
    print_table([json.loads(args.compare.read_text()), here] if args.compare else [here])


if __name__ == "__main__":
    main()
