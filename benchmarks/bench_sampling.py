"""Sampling throughput, HF `generate` vs vLLM; what per-(problem, sample) seeding costs on each; and the cost
of a cached sample vs a fresh one.

Run as a script (vLLM spawns processes, hence the main guard):
    .venv/bin/python benchmarks/bench_sampling.py [--variant test|default] [--problems 64] [--n 4]
Every row samples the same prompts with the same settings in one run, so the ratios are like for like:
- HF, seeded per row: tsq's sampler (each row its own stream; `tsq.engines.generation.hf.SeededSampler`);
- HF, shared stream: transformers' own multinomial sampling over one global generator (what tsq did before);
- vLLM, one request per sample: tsq's way (n=1, a seed each);
- vLLM, one request of n: `SamplingParams(n=N, seed=s)`, the samples of a prompt share one request.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import AutoTokenizer, GenerationConfig

from tsq.cache import Cache
from tsq.data.formatting import format_prompt
from tsq.data.tiny_world import tiny_problem_set
from tsq.engines.generation import get_backend
from tsq.engines.generation.base import SamplingSettings
from tsq.engines.generation.hf import HFBackend
from tsq.engines.generation.vllm import VLLMBackend
from tsq.engines.sample import sample_responses
from tsq.engines.tiny_model import tiny_model


def timed(run: Callable[[], int]) -> tuple[int, float]:
    """(generated tokens, seconds) of one call."""
    start = time.perf_counter()
    tokens = run()
    return tokens, time.perf_counter() - start


def hf_shared_stream(hf: HFBackend, prompts: list[str], settings: SamplingSettings) -> int:
    """transformers' multinomial sampling, batches of hf.batch_size rows: generated tokens (eos included)."""
    model = hf._load_base()
    config = GenerationConfig(
        do_sample=True,
        temperature=settings.temperature,
        top_p=settings.top_p,
        top_k=0,
        max_new_tokens=settings.max_new_tokens,
        pad_token_id=hf.tokenizer.pad_token_id,
        eos_token_id=list(hf.eos_ids),
    )
    rows = [p for p in prompts for _ in range(settings.n)]
    torch.manual_seed(settings.seed)
    tokens = 0
    for start in range(0, len(rows), hf.batch_size):
        enc = hf.tokenizer(
            rows[start : start + hf.batch_size], return_tensors="pt", padding=True, add_special_tokens=False
        ).to(hf.device)
        with torch.inference_mode():
            out = model.generate(**enc, generation_config=config)
        generated = out[:, enc["input_ids"].shape[1] :]
        tokens += int((generated != hf.tokenizer.pad_token_id).sum())
    return tokens


def vllm_one_request_of_n(vllm: VLLMBackend, prompts: list[str], settings: SamplingSettings) -> int:
    from vllm import SamplingParams, TokensPrompt

    params = SamplingParams(
        n=settings.n,
        temperature=settings.temperature,
        top_p=settings.top_p,
        max_tokens=settings.max_new_tokens,
        seed=settings.seed,
        stop_token_ids=list(vllm.eos_ids),
    )
    token_prompts = [
        TokensPrompt(prompt_token_ids=vllm.tokenizer(p, add_special_tokens=False)["input_ids"])
        for p in prompts
    ]
    outputs = vllm.llm.generate(token_prompts, params, use_tqdm=False)
    return sum(len(c.token_ids) for out in outputs for c in out.outputs)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variant", default="test", choices=["test", "default"])
    parser.add_argument("--problems", type=int, default=64)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    args = parser.parse_args()

    model = tiny_model(args.variant)
    problems = tiny_problem_set("train", args.problems, seed=0)
    keys = [p.id for p in problems.problems]
    tokenizer = AutoTokenizer.from_pretrained(model)
    prompts = [format_prompt(tokenizer, p) for p in problems.problems]
    settings = SamplingSettings(n=args.n, temperature=0.6, max_new_tokens=args.max_new_tokens, seed=0)

    def count(completions) -> int:
        return sum(len(c.token_ids) for cs in completions for c in cs)

    rows: dict[str, tuple[int, float]] = {}
    with get_backend("hf", model, batch_size=64, progress=False) as hf:
        hf.generate(prompts[:2], settings)  # warm-up: model load
        rows["HF, seeded per row"] = timed(lambda: count(hf.generate(prompts, settings, keys=keys)))
        rows["HF, shared stream"] = timed(lambda: hf_shared_stream(hf, prompts, settings))

        with tempfile.TemporaryDirectory() as tmp:
            cache = Cache(Path(tmp))
            start = time.perf_counter()
            sample_responses(hf, model, problems, settings, cache)
            miss_s = time.perf_counter() - start
            start = time.perf_counter()
            sample_responses(hf, model, problems, settings, cache)
            hit_s = time.perf_counter() - start

    start = time.perf_counter()
    with get_backend("vllm", model, progress=False, max_model_len=1024) as vllm:
        vllm_init = time.perf_counter() - start
        vllm.generate(prompts[:2], settings)  # warm-up
        rows["vLLM, one request per sample"] = timed(
            lambda: count(vllm.generate(prompts, settings, keys=keys))
        )
        rows["vLLM, one request of n"] = timed(lambda: vllm_one_request_of_n(vllm, prompts, settings))

    print(f"tiny-{args.variant}: {args.problems} prompts × n={args.n}, max_new_tokens={args.max_new_tokens}")
    for name, (tokens, seconds) in rows.items():
        print(f"{name:30s}: {tokens:6d} tokens in {seconds:7.2f} s = {tokens / seconds:8.0f} tok/s")
    hf_row, hf_shared, vllm_row, vllm_n = (tokens / seconds for tokens, seconds in rows.values())
    print(f"(vLLM engine start-up {vllm_init:.1f} s, not included)")
    print(f"HF per-row seeding / shared stream: {hf_row / hf_shared:.2f}×")
    print(f"vLLM request per sample / request of n: {vllm_row / vllm_n:.2f}×")
    print(f"vLLM/HF throughput ratio (tsq's ways): {vllm_row / hf_row:.2f}×")
    print(f"cache miss {miss_s:.3f} s, hit {hit_s:.3f} s: a hit costs {hit_s / miss_s:.4f} of a miss")


if __name__ == "__main__":
    main()
