"""Sampling throughput, HF `generate` vs vLLM, and the cost of a cached sample vs a fresh one.

Run as a script (vLLM spawns processes, hence the main guard):
    .venv/bin/python benchmarks/bench_sampling.py [--variant test|default] [--problems 64] [--n 4]
Both backends sample the same prompts with the same settings in one run, so the ratio is like for like.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from transformers import AutoTokenizer

from tsq.cache import Cache
from tsq.data.formatting import format_prompt
from tsq.data.tiny_world import tiny_problem_set
from tsq.generation import get_backend
from tsq.generation.base import Backend, SamplingSettings
from tsq.sample import sample_responses
from tsq.tiny_model import build_tiny


def throughput(backend: Backend, prompts: list[str], settings: SamplingSettings) -> tuple[int, float]:
    """(generated tokens, seconds) of one generate call."""
    start = time.perf_counter()
    completions = backend.generate(prompts, settings)
    seconds = time.perf_counter() - start
    return sum(len(c.token_ids) for cs in completions for c in cs), seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variant", default="test", choices=["test", "default"])
    parser.add_argument("--problems", type=int, default=64)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    args = parser.parse_args()

    model = build_tiny(args.variant)
    problems = tiny_problem_set("train", args.problems, seed=0)
    tokenizer = AutoTokenizer.from_pretrained(model)
    prompts = [format_prompt(tokenizer, p) for p in problems.problems]
    settings = SamplingSettings(n=args.n, temperature=0.6, max_new_tokens=args.max_new_tokens, seed=0)

    hf = get_backend("hf", model, batch_size=64, progress=False)
    hf.generate(prompts[:2], settings)  # warm-up: model load
    hf_tokens, hf_s = throughput(hf, prompts, settings)

    start = time.perf_counter()
    vllm = get_backend("vllm", model, progress=False, max_model_len=1024)
    vllm_init = time.perf_counter() - start
    vllm.generate(prompts[:2], settings)  # warm-up
    vllm_tokens, vllm_s = throughput(vllm, prompts, settings)
    vllm.close()

    with tempfile.TemporaryDirectory() as tmp:
        cache = Cache(Path(tmp))
        start = time.perf_counter()
        sample_responses(hf, model, problems, settings, cache)
        miss_s = time.perf_counter() - start
        start = time.perf_counter()
        sample_responses(hf, model, problems, settings, cache)
        hit_s = time.perf_counter() - start

    print(f"tiny-{args.variant}: {args.problems} prompts × n={args.n}, max_new_tokens={args.max_new_tokens}")
    print(f"HF    : {hf_tokens:6d} tokens in {hf_s:7.2f} s = {hf_tokens / hf_s:8.0f} tok/s")
    print(f"vLLM  : {vllm_tokens:6d} tokens in {vllm_s:7.2f} s = {vllm_tokens / vllm_s:8.0f} tok/s")
    print(f"        (engine start-up {vllm_init:.1f} s, not included)")
    print(f"vLLM/HF throughput ratio: {(vllm_tokens / vllm_s) / (hf_tokens / hf_s):.2f}×")
    print(f"cache miss {miss_s:.3f} s, hit {hit_s:.3f} s: a hit costs {hit_s / miss_s:.4f} of a miss")


if __name__ == "__main__":
    main()
