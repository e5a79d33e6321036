"""Batched vs one-candidate-at-a-time KL scoring of step rewrites (tsq.refine.score_step), side by side.

Samples K rewrites of one step of a tiny-world trace with the HF backend, then scores them with the same
function twice: all candidates in one left-padded batch, and one forward per candidate. Prints both
times, the ratio and the largest difference between the two sets of KL values.

    .venv/bin/python benchmarks/bench_refine_kl.py [--variant test|default] [--k 64] [--window 32]
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tsq.data.tiny_world import ChainProblem
from tsq.generation.base import SamplingSettings
from tsq.generation.hf import HFBackend
from tsq.refine import score_step
from tsq.tiny_model import build_tiny

STEP = "now we work out b : b is a - 4 , that is 9 - 4 , which gives 5"
FUTURE = (
    "next we want c : c = b + 1 , so c is 5 + 1 , which is 6 \n\n now we check c again : 5 + 1 is 6 ,"
    " so c is 6 , correct \n\n so c is 6 , and the answer is 6"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="test", choices=["test", "default"])
    parser.add_argument("--k", type=int, default=64, help="candidates sampled for the step")
    parser.add_argument("--window", type=int, default=32, help="KL window L in tokens")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (best is reported)")
    args = parser.parse_args()

    path = build_tiny(args.variant)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    question = ChainProblem(start=9, updates=(("-", 4), ("+", 1))).question()
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
    )
    context_text = prompt + "first we have a = 9 , and we want c \n\n "

    settings = SamplingSettings(n=args.k, temperature=1.0, max_new_tokens=32, seed=0, stop=("\n\n",))
    completions = HFBackend(path, progress=False).generate([context_text], settings)[0]

    def enc(text: str) -> list[int]:
        return tok.encode(text, add_special_tokens=False)

    # every sampled rewrite (duplicates included, so the batch is K rows as in the worst case)
    candidates = [enc(c.text.split("\n\n")[0]) or enc(STEP) for c in completions]
    common = (model, enc(context_text), enc(STEP), candidates, enc("\n\n"), enc(FUTURE), args.window)

    def timed(batch_size: int) -> tuple[float, list[float]]:
        best, scores = float("inf"), []
        for _ in range(args.repeats):
            start = time.perf_counter()
            scores = score_step(*common, batch_size=batch_size)
            best = min(best, time.perf_counter() - start)
        return best, scores

    t_batched, batched = timed(len(candidates))
    t_single, single = timed(1)
    diff = max(abs(a - b) for a, b in zip(batched, single, strict=True))
    lengths = sorted(len(c) for c in candidates)
    print(f"model tiny-{args.variant}, torch threads {torch.get_num_threads()}, window {args.window}")
    print(
        f"candidates {len(candidates)} (step tokens {lengths[0]}..{lengths[-1]}, original {len(enc(STEP))})"
    )
    print(f"batched (1 forward for the original + 1 for {len(candidates)} rows): {t_batched * 1000:8.1f} ms")
    print(f"one at a time ({len(candidates) + 1} forwards):                {t_single * 1000:8.1f} ms")
    print(f"speed-up {t_single / t_batched:.1f}x; max |KL batched - KL single| = {diff:.2e}")


if __name__ == "__main__":
    main()
