"""One training step of tsq's TRL-based trainer against a minimal hand-written PyTorch step, side by side.

Both train the same LoRA (same rank, alpha, target modules) on the same model weights and the same batch,
with the same loss, DPO-L(λ) + η·SFT, the same AdamW and gradient clipping (the HF Trainer's default 1.0).

- tsq: the trainer exactly as `train_lora` builds it (`tsq.engines.train._trainer`), run by `trainer.train()`
  with a logging step every step (as `train_lora` logs a run of under 200 steps). Its step time is everything
  the loop does between two steps: fetching and collating the batch, forward, backward, clipping, the
  optimiser, the scheduler, the metrics and the log.
- hand: the batch collated once; `model(input_ids, attention_mask).logits` → log-softmax → gather → the
  same loss → backward → clip → AdamW step → zero_grad.

The hand step runs inside a callback at the end of each trainer step, so repetitions interleave one to
one and the machine's noise hits both alike. The dataset holds exactly one batch of pairs, so every
trainer step sees the same pairs (in shuffled order: same padded shape).

    .venv/bin/python benchmarks/bench_train_step.py [--model tiny|qwen2] [--steps 20] [--batch 8]

To time the trainer of another checkout (say, before a change): PYTHONPATH=/path/to/that/checkout.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

# the same pairs and random Qwen2 as the trainer-construction benchmark (run from benchmarks/, on its path)
from bench_trainer_init import random_qwen2, tiny_pairs
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

import tsq.engines.train as tsq_train
from tsq.cache import Cache
from tsq.config.pipeline import TrainingSpec
from tsq.engines.tiny_model import tiny_model
from tsq.method.losses import dpo_l_loss

LAM, ETA, BETA, LR = 1.0, 0.5, 0.1, 1e-4


class HandStep:
    """The minimal step: plain logits, the DPO-L + η·SFT formula, AdamW, clipping."""

    def __init__(self, model_dir: Path, lora: LoraConfig, batch: dict[str, torch.Tensor]) -> None:
        base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        self.model = get_peft_model(base, lora)
        self.model.train()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=LR, weight_decay=0.0)
        self.batch = batch

    def __call__(self) -> float:
        b = self.batch
        logits = self.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        tokens = logp.gather(-1, b["input_ids"][:, 1:, None]).squeeze(-1)
        mask = b["completion_mask"][:, 1:].to(tokens.dtype)
        seq = (tokens * mask).sum(1)
        lengths = mask.sum(1)
        chosen, rejected = seq.chunk(2)
        chosen_len, rejected_len = lengths.chunk(2)
        dpo = dpo_l_loss(
            chosen,
            rejected,
            b["ref_chosen_logps"],
            b["ref_rejected_logps"],
            chosen_len,
            rejected_len,
            beta=BETA,
            lam=LAM,
        ).mean()
        chosen_tokens, chosen_mask = tokens.chunk(2)[0], mask.chunk(2)[0]
        loss = dpo + ETA * (-(chosen_tokens * chosen_mask).sum() / chosen_mask.sum())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss.item()


class Interleave(TrainerCallback):
    """At each trainer step's end: note the time, run one hand step (timed), note the time again."""

    def __init__(self) -> None:
        self.hand: HandStep | None = None
        self.trainer_times: list[float] = []
        self.hand_times: list[float] = []
        self._resumed: float | None = None

    def on_step_begin(self, args, state, control, **kwargs):
        if self._resumed is None:  # the first step: time from here (the batch is already fetched)
            self._resumed = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer_times.append(time.perf_counter() - self._resumed)
        start = time.perf_counter()
        self.hand()
        self.hand_times.append(time.perf_counter() - start)
        self._resumed = time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", choices=["tiny", "qwen2"], default="tiny")
    parser.add_argument("--layers", type=int, default=8, help="qwen2 only")
    parser.add_argument("--hidden", type=int, default=768, help="qwen2 only")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--profile", type=int, default=0, help="print the N costliest functions (cProfile)")
    args = parser.parse_args()
    torch.manual_seed(0)
    tiny = tiny_model("test")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = tiny
        if args.model == "qwen2":
            model_dir = tmp / "qwen2"
            random_qwen2(model_dir, tiny, args.layers, args.hidden)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        pairs = tiny_pairs(tokenizer, args.batch)
        training = TrainingSpec(
            max_steps=args.warmup + args.steps,
            batch_size=args.batch,
            learning_rate=LR,
            beta=BETA,
            lora={"r": 8, "alpha": 16},
        )
        relay = Interleave()
        setup = tsq_train.TrainerSetup(
            training=training, out_dir=tmp / "out", lam=LAM, eta=ETA, callbacks=(relay,)
        )
        trainer = tsq_train._trainer(model_dir, pairs, setup, Cache(tmp / "cache"))
        lora = training.lora
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])
        relay.hand = HandStep(
            model_dir,
            LoraConfig(
                r=lora.r, lora_alpha=lora.alpha, target_modules=lora.target_modules, task_type="CAUSAL_LM"
            ),
            batch,
        )
        n_params = sum(p.numel() for p in relay.hand.model.parameters())
        if args.profile:
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            profiler.runcall(trainer.train)
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(args.profile)
        else:
            trainer.train()

    tsq_times = relay.trainer_times[args.warmup :]
    hand_times = relay.hand_times[args.warmup :]
    tsq_med, hand_med = statistics.median(tsq_times), statistics.median(hand_times)
    shape = tuple(batch["input_ids"].shape)
    print(
        f"model {args.model}: {n_params / 1e6:.1f}M parameters, batch {args.batch} pairs -> input {shape},"
        f" {len(tsq_times)} steps after {args.warmup} warm-up, CPU, {torch.get_num_threads()} threads"
    )
    print(f"trainer from {tsq_train.__file__}")
    print(f"tsq/TRL step: median {tsq_med * 1e3:.1f} ms  (min {min(tsq_times) * 1e3:.1f})")
    print(f"hand step:    median {hand_med * 1e3:.1f} ms  (min {min(hand_times) * 1e3:.1f})")
    paired = statistics.median(t / h for t, h in zip(tsq_times, hand_times, strict=True))
    print(
        f"ratio tsq/TRL : hand = {tsq_med / hand_med:.2f}x (medians),"
        f" {paired:.2f}x (median of per-step ratios)"
    )


if __name__ == "__main__":
    main()
