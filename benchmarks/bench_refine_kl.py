"""Batched vs one-candidate-at-a-time KL scoring of step rewrites (tsq.engines.refine.score_step), side by
side.

Samples K rewrites of one step of a tiny-world trace with the HF backend, then scores them with the same
function twice: all candidates in one left-padded batch with the original, and one forward per candidate
(the original and that candidate). Prints both times, the ratio and the largest difference between the two
sets of KL values. Prefix reuse and the noise floor: benchmarks/bench_refine_prefix.py.

    .venv/bin/python benchmarks/bench_refine_kl.py [--variant test|default] [--k 64] [--window 32]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tsq.data.tiny_world import ChainProblem
from tsq.engines.generation.base import SamplingSettings
from tsq.engines.generation.hf import HFBackend
from tsq.engines.refine import score_step
from tsq.engines.tiny_model import tiny_model

STEP = "now we work out b : b = a - 4 , and so that is 9 - 4 = 5"
FUTURE = (
    "next we want c : c = b + 1 , and so c is then 5 + 1 = 6 \n\n now we check c again : 5 + 1 is 6 ,"
    " so c is 6 , correct \n\n so c is 6 , and the answer is 6"
)


def kl_scoring(path: Path, k: int = 64, window: int = 32, repeats: int = 3) -> dict[str, float]:
    """Best-of-`repeats` seconds of batched and one-at-a-time scoring of K rewrites, and their max KL gap."""
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    question = ChainProblem(start=9, updates=(("-", 4), ("+", 1))).question()
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
    )
    context_text = prompt + "first we have a = 9 , and we want c \n\n "

    settings = SamplingSettings(n=k, temperature=1.0, max_new_tokens=32, seed=0, stop=("\n\n",))
    completions = HFBackend(path, progress=False).generate([context_text], settings)[0]

    def enc(text: str) -> list[int]:
        return tok.encode(text, add_special_tokens=False)

    # every sampled rewrite (duplicates included, so the batch is K rows as in the worst case), each encoded
    # with its separator as a step's piece is
    candidates = [enc((c.text.split("\n\n")[0] or STEP) + "\n\n") for c in completions]
    common = (model, enc(context_text), enc(STEP + "\n\n"), candidates, enc(FUTURE), window)

    def timed(batch_size: int) -> tuple[float, list[float]]:
        best, scores = float("inf"), []
        for _ in range(repeats):
            start = time.perf_counter()
            scores = score_step(*common, batch_size=batch_size)
            best = min(best, time.perf_counter() - start)
        return best, scores

    t_batched, batched = timed(len(candidates) + 1)
    t_single, single = timed(2)
    return {
        "candidates": len(candidates),
        "batched_s": t_batched,
        "single_s": t_single,
        "max_kl_diff": max(abs(a - b) for a, b in zip(batched, single, strict=True)),
    }


def report(r: dict[str, float], window: int) -> str:
    n = int(r["candidates"])
    return (
        f"KL scoring of {n} rewrites (window {window}, torch threads {torch.get_num_threads()}): "
        f"batched {r['batched_s'] * 1000:.1f} ms | one at a time ({n} forwards of 2 rows) "
        f"{r['single_s'] * 1000:.1f} ms | {r['single_s'] / r['batched_s']:.1f}x; "
        f"max |KL batched - KL single| = {r['max_kl_diff']:.2e}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="test", choices=["test", "default"])
    parser.add_argument("--k", type=int, default=64, help="candidates sampled for the step")
    parser.add_argument("--window", type=int, default=32, help="KL window L in tokens")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (best is reported)")
    args = parser.parse_args()
    result = kl_scoring(tiny_model(args.variant), args.k, args.window, args.repeats)
    print(f"model tiny-{args.variant}: " + report(result, args.window))


if __name__ == "__main__":
    main()
