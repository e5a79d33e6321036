"""Refinement scoring with the trace's prefix KV cache vs without, and the KL noise floor, side by side.

1. Prefix cache (`--worlds tiny qwen`): every searched step of a few traces scored twice by
   `tsq.engines.refine.score_trace`, reusing the trace's KV cache and running each row's whole context;
   prints both times, the ratio and the largest KL difference. tiny: the tiny world's model (under
   $TSQ_HOME), rewrites sampled with the HF backend; qwen: a random Qwen2 with the byte-level BPE of
   tests/qwen_bpe.py, long traces, rewrites made by dropping tokens of the step (a random model samples no
   step boundaries).
2. Noise floor (`--noise-floor`): on the random Qwen2 in float32 and bfloat16, the KL of a step's original
   against copies of itself, as a candidate of the same length and behind 1 … 32 more pads (what a shorter
   rewrite sees): before (the reference row scored alone, the copies in a padded batch, logits in the
   model's dtype, KL as Σ p (log p − log q)) and after (`tsq.engines.refine.measure_kl_noise_floor`: the
   original inside its candidates' batch, fp32 head and KL; the figure `KL_NOISE_FLOOR` bounds), plus
   float16.

    .venv/bin/python benchmarks/bench_refine_prefix.py [--worlds tiny qwen] [--noise-floor] [--device cpu]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from qwen_bpe import build_qwen_like, reasoning_trace

from tsq.config.pipeline import RefinementSpec
from tsq.data.tiny_world import generate_trace, random_problem, random_style
from tsq.engines.refine import (
    LMHead,
    _keep,
    _plan,
    _TracePlan,
    encode_prefix,
    measure_kl_noise_floor,
    score_step,
    score_trace,
)


def _load(path: Path, dtype: torch.dtype, device: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
    return model, AutoTokenizer.from_pretrained(path)


def _prompt(tok, question: str) -> str:
    return tok.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
    )


# -- 1. prefix cache vs none -------------------------------------------------------------------------------
def tiny_plans(path: Path, spec: RefinementSpec, n_traces: int) -> tuple[list[_TracePlan], object]:
    """Plans of tiny-world traces with rewrites sampled by the HF backend, as compute_candidates does."""
    from tsq.engines.generation.base import SamplingSettings
    from tsq.engines.generation.hf import HFBackend

    backend = HFBackend(path, progress=False)
    tok = backend.tokenizer
    rng = random.Random(0)
    plans = []
    for i in range(n_traces):
        problem = random_problem(rng, 4)
        trace = generate_trace(problem, rng, 0.0, random_style(rng))
        _, plan = _plan(_prompt(tok, problem.question()), trace, i, tok, spec.max_steps_per_trace)
        plans.append(plan)
    jobs = [job for plan in plans for job in plan.jobs]
    settings = SamplingSettings(
        n=spec.k, temperature=1.0, max_new_tokens=spec.max_step_tokens, seed=0, stop=("\n\n",)
    )
    outputs = backend.generate([job.context_text for job in jobs], settings)
    for job, completions in zip(jobs, outputs, strict=True):
        _keep(job, completions, tok)
    return plans, tok


def qwen_plans(path: Path, spec: RefinementSpec, n_traces: int, n_steps: int, tok) -> list[_TracePlan]:
    """Plans of long random traces; each step's rewrites drop 1 … k tokens of it (shorter, distinct)."""
    plans = []
    rng = random.Random(0)
    for i in range(n_traces):
        trace = reasoning_trace(rng, n_steps)
        _, plan = _plan(_prompt(tok, "Find x."), trace, i, tok, spec.max_steps_per_trace)
        for job in plan.jobs:
            piece = plan.ids[job.start : job.end]
            step = job.original
            for drop in range(1, min(spec.k, len(step) - 1) + 1):
                cut = rng.randrange(len(step) - drop)
                job.kept.append(("", step[:cut] + step[cut + drop :], piece[:cut] + piece[cut + drop :]))
        plans.append(plan)
    return plans


def time_prefix(model, plans: list[_TracePlan], spec: RefinementSpec, pad_id: int, repeats: int) -> dict:
    head = LMHead(model)

    def run(prefix_cache: bool) -> tuple[float, list[float]]:
        best, kls = float("inf"), []
        for _ in range(repeats):
            start = time.perf_counter()
            scores = [score_trace(model, plan, spec, pad_id, head, prefix_cache) for plan in plans]
            best = min(best, time.perf_counter() - start)
            kls = [kl for s in scores for step in sorted(s) for kl in s[step]]
        return best, kls

    t_cached, cached = run(True)
    t_full, full = run(False)
    return {
        "traces": len(plans),
        "steps": sum(len([j for j in p.jobs if j.kept]) for p in plans),
        "rewrites": len(cached),
        "tokens_per_trace": sum(len(p.ids) for p in plans) / len(plans),
        "cached_s": t_cached,
        "full_s": t_full,
        "max_kl_diff": max(abs(a - b) for a, b in zip(cached, full, strict=True)),
        "max_kl": max(cached),
    }


def report_prefix(name: str, r: dict) -> str:
    return (
        f"{name}: {r['traces']} traces (~{r['tokens_per_trace']:.0f} tokens), {r['steps']} steps, "
        f"{r['rewrites']} rewrites | prefix cache {r['cached_s']:.2f} s | whole rows {r['full_s']:.2f} s | "
        f"{r['full_s'] / r['cached_s']:.1f}x | max |ΔKL| = {r['max_kl_diff']:.1e} (max KL {r['max_kl']:.3g})"
    )


# -- 2. noise floor ----------------------------------------------------------------------------------------
SHIFTS = (0, 1, 2, 4, 8, 16, 32)


@torch.no_grad()
def _before_logits(model, rows: list[list[int]], lead: list[int], window: int, pad_id: int) -> torch.Tensor:
    """The scheme before: logits in the model's dtype from its own head; row b behind lead[b] pads."""
    device = next(model.parameters()).device
    width = max(a + len(r) for a, r in zip(lead, rows, strict=True))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, (row, a) in enumerate(zip(rows, lead, strict=True)):
        ids[b, a : a + len(row)] = torch.tensor(row)
        mask[b, a : a + len(row)] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(
        input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device), use_cache=False
    ).logits
    ends = [a + len(r) for a, r in zip(lead, rows, strict=True)]
    return torch.stack([logits[b, e - window : e] for b, e in enumerate(ends)])


def _naive_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    logp, logq = torch.log_softmax(p.float(), -1), torch.log_softmax(q.float(), -1)
    return (logp.exp() * (logp - logq)).sum(-1).mean(-1)


def noise_floor(path: Path, dtype: torch.dtype, device: str, window: int, n_steps: int) -> dict:
    """Largest |KL| of a step's original against copies of itself, per scheme, over a trace's steps."""
    model, tok = _load(path, dtype, device)
    pad = tok.pad_token_id
    trace = reasoning_trace(random.Random(1), n_steps)
    _, plan = _plan(_prompt(tok, "Find x."), trace, 0, tok, None)
    out = {"before_self": 0.0, "before_shifted": 0.0, "after_self": 0.0, "after_shifted": 0.0}
    out["after_shifted_cached"] = 0.0
    real = []
    for job in plan.jobs:
        context, piece, future = plan.ids[: job.start], plan.ids[job.start : job.end], plan.ids[job.end :]
        n = min(window, len(future))
        row = context + piece + future[: n - 1]
        # before: the reference scored alone (no mask: the is_causal path); copies in one padded batch
        ref = _before_logits(model, [row], [0], n, pad)
        copies = _before_logits(model, [row] * len(SHIFTS), list(SHIFTS), n, pad)
        kls = _naive_kl(ref, copies).abs().tolist()
        out["before_self"] = max(out["before_self"], kls[0])
        out["before_shifted"] = max(out["before_shifted"], *kls[1:])
        # after: the original inside its own batch, fp32 head and KL
        after = measure_kl_noise_floor(model, context, piece, future, window, SHIFTS, pad_id=pad)
        out["after_self"] = max(out["after_self"], abs(after[0]))
        out["after_shifted"] = max(out["after_shifted"], *(abs(v) for v in after.values()))
        prefix = encode_prefix(model, context)
        cached = measure_kl_noise_floor(
            model, context, piece, future, window, SHIFTS, pad_id=pad, prefix=prefix
        )
        out["after_shifted_cached"] = max(out["after_shifted_cached"], *(abs(v) for v in cached.values()))
        real.append(
            min(score_step(model, context, piece, [piece[2:], piece[4:]], future, window, pad_id=pad))
        )
    return {
        "dtype": str(dtype).removeprefix("torch."),
        "steps": len(plan.jobs),
        "smallest_real": min(real),
        **out,
    }


def report_floor(r: dict) -> str:
    return (
        f"noise floor {r['dtype']:>8} ({r['steps']} steps), max |KL(original ‖ itself)|: "
        f"before {r['before_self']:.1e} as a candidate, {r['before_shifted']:.1e} at pad shifts 1-32 | "
        f"after {r['after_self']:.1e} as a candidate, {r['after_shifted']:.1e} at shifts (whole rows), "
        f"{r['after_shifted_cached']:.1e} (prefix cache) | smallest KL of a rewrite 2 tokens shorter: "
        f"{r['smallest_real']:.1e}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", nargs="*", default=["tiny", "qwen"], choices=["tiny", "qwen"])
    parser.add_argument("--variant", default="test", choices=["test", "default"], help="tiny model")
    parser.add_argument("--noise-floor", action="store_true", help="also measure the KL noise floor")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--qwen-dir", default="/tmp/tsq-bench-qwen", help="where the random Qwen2 is built")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--traces", type=int, default=4)
    parser.add_argument("--qwen-steps", type=int, default=40, help="steps per random-Qwen2 trace")
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    spec = RefinementSpec(k=args.k, window=args.window, batch_size=args.batch_size, max_step_tokens=32)
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, k {args.k}, window {args.window}")
    qwen = build_qwen_like(
        Path(args.qwen_dir) / f"h{args.hidden}-l{args.layers}", hidden=args.hidden, layers=args.layers,
        heads=max(4, args.hidden // 64), kv_heads=2,
    )  # fmt: skip
    if "tiny" in args.worlds:
        from tsq.engines.tiny_model import tiny_model

        path = tiny_model(args.variant)
        plans, tok = tiny_plans(path, spec, args.traces)
        model, _ = _load(path, torch.float32, args.device)
        r = time_prefix(model, plans, spec, tok.pad_token_id or 0, args.repeats)
        print(report_prefix(f"tiny-{args.variant} float32", r))
    if "qwen" in args.worlds:
        for dtype in (torch.float32, torch.bfloat16):
            model, tok = _load(qwen, dtype, args.device)
            plans = qwen_plans(qwen, spec, args.traces, args.qwen_steps, tok)
            r = time_prefix(model, plans, spec, tok.pad_token_id, args.repeats)
            name = f"random Qwen2 (h{args.hidden}, {args.layers} layers) {str(dtype).removeprefix('torch.')}"
            print(report_prefix(name, r))
    if args.noise_floor:
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            print(report_floor(noise_floor(qwen, dtype, args.device, args.window, 12)))


if __name__ == "__main__":
    main()
