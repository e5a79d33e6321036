"""One tiny-world trial on this machine's device (CUDA in bf16 where there is one), beside a saved run.

Run it once on CPU to save the reference, then on a GPU machine with the reference beside it:
    .venv/bin/python benchmarks/gpu_trial_check.py --save cpu.json
    python benchmarks/gpu_trial_check.py --compare cpu.json --save cuda.json
The trial starts from an empty cache, so every stage runs on the device: self-sampling, step candidates and
their KL, the reference log-probs, LoRA training and both evaluations. Same spec, seeds and parameters on
both sides; sampling differs by device and precision, so the figures should agree within sampling noise
(about ±3 points of accuracy at 800 responses), not exactly.

`--plan SPEC` is the GPU memory smoke check of a real-model spec (issue 29): a random-init model built from
the spec's config.json (tsq ships the two R1-distill configs: memory does not depend on the weights), in
the spec's dtype on CUDA, runs the HF stages at the plan's sizes (refinement scoring, the reference pass,
`--steps` LoRA steps) and prints each stage's peak memory beside `tsq sweep check`'s plan:
    python benchmarks/gpu_trial_check.py --plan sweeps/math500-r1-distill-qwen-1.5b.yaml
    python benchmarks/gpu_trial_check.py --plan sweeps/math500-r1-distill-qwen-7b.yaml --steps 2
The vLLM engine's stage is not measured (the lent GPU machine has no vLLM): its figures come from vLLM's own
start-up lines on a machine that has it. `--plan ... --tiny-shapes` runs the same code on CPU with a
shrunken model, to check the script itself where there is no GPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from objectives.tokensqueeze.config import TrialParams
from objectives.tokensqueeze.trial import TrialContext, run_trial
from tsq.cache import Cache
from tsq.devices import pick_device, pick_dtype, release_accelerator_memory
from tsq.engines.gpu_plan import GiB
from tsq.engines.models import resolve_model
from tsq.recipe import load_spec

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


# -- --plan: peak memory per HF stage against the plan ---------------------------------------------------
def _random_model(config: dict, dtype: torch.dtype, device: torch.device):
    """A random-init causal LM of `config` (built on the device: a 7B init on CPU takes minutes)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(**{k: v for k, v in config.items() if k != "architectures"})
    with device:
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    return model.eval()


def _words(n: int) -> str:
    return " a" * n  # one token per word for the tiny tokenizer


class _Peak:
    """Peak CUDA memory (allocated, reserved) of a block, from a cache emptied at its start."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.allocated = self.reserved = 0

    def __enter__(self) -> _Peak:
        if self.cuda:
            release_accelerator_memory()
            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self.allocated, self.reserved = (
                torch.cuda.max_memory_allocated(),
                torch.cuda.max_memory_reserved(),
            )


def check_plan(spec_path: str, steps: int, tiny_shapes: bool) -> list[tuple[str, int, int, int]]:
    """(stage, planned bytes, peak allocated, peak reserved) for each HF stage of the spec's plan."""
    from transformers import AutoTokenizer

    from objectives.tokensqueeze.plan import PROMPT_ALLOWANCE, gpu_plan
    from tsq.engines.gpu_plan import GPUS, ModelShape, find_config, read_config
    from tsq.engines.refine import LMHead, encode_prefix, score_step
    from tsq.engines.tiny_model import tiny_model
    from tsq.engines.train import TrainerSetup, build_trainer
    from tsq.method.select import Pair

    spec = load_spec(spec_path)
    found = find_config(spec.model.path)
    if found is None:
        raise SystemExit(f"no config.json for {spec.model.path}")
    config = read_config(found[0])
    device = pick_device()
    if tiny_shapes:  # the same code on CPU: a shrunken model and short sequences
        config = {**config, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                  "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 512,
                  "bos_token_id": 0, "eos_token_id": 1}  # fmt: skip
        spec = spec.model_copy(update={
            "sampling": spec.sampling.model_copy(update={"max_new_tokens": 48}),
            "training": spec.training.model_copy(update={"batch_size": 2}),
            "refinement": spec.refinement.model_copy(
                update={"batch_size": 4, "window": 8, "max_step_tokens": 8}
            ),
        })  # fmt: skip
    plan = gpu_plan(spec, ModelShape.from_config(config), GPUS["h100"], found[1], config)
    planned = {s.name: sum(s.items.values()) for s in plan.stages}
    print("\n".join(plan.lines()))
    dtype = pick_dtype(spec.model.dtype, device)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model("test"))  # ids < 67: valid for any vocabulary
    length = spec.training.max_length or PROMPT_ALLOWANCE + spec.sampling.max_new_tokens
    rows: list[tuple[str, int, int, int]] = []

    ref = spec.refinement
    if "refinement scoring" in planned:
        with _Peak(device) as peak:
            model = _random_model(config, dtype, device)
            ids = torch.randint(0, 60, (length,)).tolist()
            context, original = ids[: length - ref.window - ref.max_step_tokens], [1] * ref.max_step_tokens
            future = ids[len(context) : len(context) + ref.window]
            candidates = [[2] * (ref.max_step_tokens - 1)] * (ref.batch_size - 1)
            prefix = encode_prefix(model, context)
            score_step(model, context, original, candidates, future, ref.window, ref.batch_size,
                       prefix=prefix, head=LMHead(model))  # fmt: skip
            del model, prefix
        rows.append(("refinement scoring", planned["refinement scoring"], peak.allocated, peak.reserved))
        release_accelerator_memory()

    training = spec.training.model_copy(update={"max_steps": steps, "max_length": length})
    answer = spec.sampling.max_new_tokens  # both sides at the cap: every row padded to `length`
    prompt = _words(length - answer - 2)  # room for BOS and EOS
    pairs = [Pair(f"p{i}", prompt, _words(answer), _words(answer)) for i in range(2 * training.batch_size)]
    with tempfile.TemporaryDirectory() as tmp:
        with _Peak(device) as ref_peak:
            model = _random_model(config, dtype, device)
            setup = TrainerSetup(training=training, out_dir=Path(tmp), lam=1.0, eta=0.5)
            trainer = build_trainer(model, tokenizer, pairs, setup, None)  # + TRL's pass
        with _Peak(device) as train_peak:
            trainer.train()
        del trainer, model
    release_accelerator_memory()
    rows.append(("reference pass", planned["reference pass"], ref_peak.allocated, ref_peak.reserved))
    rows.append(("LoRA training", planned["LoRA training"], train_peak.allocated, train_peak.reserved))
    return rows


def print_plan_check(rows: list[tuple[str, int, int, int]], device: torch.device) -> None:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "no CUDA: peaks not measured"
    print(f"\npeak memory per stage on {name} (GiB; the plan's figures are this process's items only)")
    print(f"{'stage':<22}{'plan':>8}{'allocated':>11}{'reserved':>10}")
    for stage, plan, allocated, reserved in rows:
        print(f"{stage:<22}{plan / GiB:>8.1f}{allocated / GiB:>11.1f}{reserved / GiB:>10.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("spec", nargs="?", default="sweeps/quickstart.yaml")
    parser.add_argument("--compare", type=Path, help="a run saved with --save (e.g. on CPU) to print beside")
    parser.add_argument("--save", type=Path, help="write this run's figures here as JSON")
    parser.add_argument(
        "--plan", metavar="SPEC", help="peak memory per HF stage of a real-model spec vs its plan"
    )
    parser.add_argument("--steps", type=int, default=2, help="--plan: LoRA steps to measure")
    parser.add_argument("--tiny-shapes", action="store_true", help="--plan on CPU with a shrunken model")
    args = parser.parse_args()
    if args.plan:
        print_plan_check(check_plan(args.plan, args.steps, args.tiny_shapes), pick_device())
        return

    here = run(args.spec, TrialParams())  # the paper's point: α 0.2, ε 0.005, λ 1, η 0.5
    if args.save:
        args.save.write_text(json.dumps(here, indent=2, default=str))
    print_table([json.loads(args.compare.read_text()), here] if args.compare else [here])


if __name__ == "__main__":
    main()
