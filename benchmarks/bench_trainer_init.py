"""Building tsq's trainer with and without TRL's whole-model hash, side by side on a random Qwen2.

With `precompute_ref_log_probs`, TRL's `DPOTrainer.__init__` copies every weight to CPU as fp32 and takes
its SHA-256, only to name TRL's own reference cache file; tsq's reference store replaces that file, so
`tsq.compat.trl` skips the hash. This builds the trainer exactly as `train_lora` does
(`tsq.engines.train.build_trainer`, reference log-probs already in the store) on a random-weight Qwen2 of a
few hundred M parameters, alternately with the skip and without it, and prints the build times and the ratio.
The model is loaded afresh before each build (not timed: PEFT wraps it in place).

    .venv/bin/python benchmarks/bench_trainer_init.py [--layers 20] [--hidden 1024] [--repeats 3]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

from tsq.cache import Cache
from tsq.compat.trl import model_hash
from tsq.config.pipeline import TrainingSpec
from tsq.data.tiny_world import TraceStyle, generate_trace, random_problem
from tsq.engines.tiny_model import tiny_model
from tsq.engines.train import RefLogpsStore, TrainerSetup, build_trainer
from tsq.method.select import Pair


def random_qwen2(out: Path, tokenizer_dir: Path, layers: int, hidden: int) -> int:
    """Save a random Qwen2 with the tiny model's tokenizer into `out`; returns its parameter count."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=max(1, hidden // 256),
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return sum(p.numel() for p in model.parameters())


def tiny_pairs(tokenizer, n: int = 8) -> list[Pair]:
    rng = random.Random(0)
    pairs = []
    for i in range(n):
        problem = random_problem(rng, steps=1 + i % 3)
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": problem.question()}], tokenize=False, add_generation_prompt=True
        )
        terse = TraceStyle(p_long=0.0, p_check=0.0, restate=False)
        verbose = TraceStyle(p_long=1.0, p_check=1.0, restate=True)
        chosen = " " + generate_trace(problem, rng, slip_rate=0.0, style=terse)
        rejected = " " + generate_trace(problem, rng, slip_rate=1.0, style=verbose)
        pairs.append(Pair(f"p{i}", prompt, chosen, rejected))
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layers", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    tiny = tiny_model("test")
    training = TrainingSpec(max_steps=1, batch_size=4, lora={"r": 8, "alpha": 16})
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n_params = random_qwen2(tmp / "qwen2", tiny, args.layers, args.hidden)
        tokenizer = AutoTokenizer.from_pretrained(tmp / "qwen2")
        pairs = tiny_pairs(tokenizer)
        store = RefLogpsStore(Cache(tmp / "cache"), "random-qwen2")

        def load():
            return AutoModelForCausalLM.from_pretrained(tmp / "qwen2", dtype=torch.float32)

        # fill the store first (not timed): a trial builds its trainer with reference log-probs cached
        build_trainer(
            load(),
            tokenizer,
            pairs,
            TrainerSetup(training=training, out_dir=tmp / "warm", lam=1.0, eta=0.5),
            store,
        )
        model = load()
        start = time.perf_counter()
        model_hash(model)
        hash_alone = time.perf_counter() - start
        del model

        times: dict[str, list[float]] = {"hash skipped": [], "TRL's hash": []}
        for _ in range(args.repeats):  # interleaved: the machine's noise hits both alike
            for label, skip in (("hash skipped", True), ("TRL's hash", False)):
                model = load()
                start = time.perf_counter()
                trainer = build_trainer(
                    model,
                    tokenizer,
                    pairs,
                    TrainerSetup(training=training, out_dir=tmp / "t", lam=1.0, eta=0.5),
                    store,
                    skip_model_hash=skip,
                )
                times[label].append(time.perf_counter() - start)
                assert trainer.n_ref_computed == 0
                del trainer, model

    print(f"random Qwen2: {n_params / 1e6:.0f}M parameters, fp32, CPU, {torch.get_num_threads()} threads")
    print(f"hash_module alone: {hash_alone:.2f} s")
    for label, values in times.items():
        runs = ", ".join(f"{v:.2f}" for v in values)
        print(f"trainer build, {label:12s}: median {statistics.median(values):.2f} s  ({runs})")
    ratio = statistics.median(times["TRL's hash"]) / statistics.median(times["hash skipped"])
    print(f"ratio (with hash / skipped): {ratio:.2f}x")


if __name__ == "__main__":
    main()
