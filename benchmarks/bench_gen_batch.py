"""HF `generate` batch size on CPU: wall time side by side, and whether every row's tokens stay the same.

    .venv/bin/python benchmarks/bench_gen_batch.py [--problems 64] [--n 8] [--sizes 64 128 256] [--repeats 2]

The quickstart's sampling settings (the shipped default model, T 1.0, 192 new tokens) over the first
`--problems` train problems × `--n` samples. Arms run interleaved, `--repeats` rounds, so load on a shared
machine falls on every arm alike; the ratio is each arm's median time over the first size's. A row is drawn
from its own seeded stream (`tsq.engines.generation.hf.SeededSampler`), so a batch size may change a row's
tokens only through float rounding of the batch's logits: the check compares every row's token ids with the
first arm's.
"""

from __future__ import annotations

import argparse
import statistics
import time

from transformers import AutoTokenizer

from tsq.data.formatting import format_prompt
from tsq.data.tiny_world import tiny_problem_set
from tsq.engines.generation.base import SamplingSettings
from tsq.engines.generation.hf import HFBackend
from tsq.engines.tiny_model import tiny_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", type=int, default=64)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    model = tiny_model("default")
    problems = tiny_problem_set("train", args.problems, seed=0, max_steps=4).problems
    keys = [p.id for p in problems]
    prompts = [format_prompt(AutoTokenizer.from_pretrained(model), p) for p in problems]
    settings = SamplingSettings(n=args.n, temperature=1.0, max_new_tokens=192, seed=0)
    backends = {size: HFBackend(model, batch_size=size, progress=False) for size in args.sizes}
    for backend in backends.values():
        backend.generate(prompts[:1], settings, keys=keys[:1])  # warm-up: model load
    seconds: dict[int, list[float]] = {size: [] for size in args.sizes}
    tokens: dict[int, list[tuple[int, ...]]] = {}
    for _ in range(args.repeats):
        for size, backend in backends.items():
            start = time.perf_counter()
            out = backend.generate(prompts, settings, keys=keys)
            seconds[size].append(time.perf_counter() - start)
            tokens[size] = [c.token_ids for cs in out for c in cs]
    first = args.sizes[0]
    rows = len(tokens[first])
    print(f"{args.problems} prompts × n={args.n} = {rows} rows, T 1.0, 192 new tokens, {args.repeats} rounds")
    for size in args.sizes:
        median = statistics.median(seconds[size])
        same = sum(a == b for a, b in zip(tokens[size], tokens[first], strict=True))
        print(
            f"batch {size:4d}: {median:7.2f} s (median), {median / statistics.median(seconds[first]):.2f}× "
            f"batch {first}'s time; rows identical to batch {first}: {same}/{rows}"
        )
    for backend in backends.values():
        backend.close()


if __name__ == "__main__":
    main()
