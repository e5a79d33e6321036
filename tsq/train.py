"""LoRA fine-tuning with L = L_DPO-L + η·L_SFT through TRL's DPOTrainer: the one place where η acts.

TRL does everything it already does well: tokenisation (prompt/chosen/rejected, EOS appended), padding,
the fused log-prob head, PEFT wrapping (the adapter disabled is the reference model), the optimiser, the
metrics and the SFT term (TRL's `"sft"` loss type: the mean NLL over all chosen completion tokens of the
batch, weighted by `loss_weights`). `TokenSqueezeDPOTrainer` adds two narrow pieces:

- the DPO-L term (`tsq.losses.dpo_l_loss`) for the `dpo-l+sft` variant. TRL's loss loop has no hook for a
  per-pair margin, so the trainer lets TRL compute its loss with only the SFT term and reads the policy's
  per-token log-probs from the same forward pass (a forward hook: no second pass), then adds DPO-L;
- reference log-probs cached per sequence (prompt + completion) in `tsq.cache.Cache` (stage `ref_logps`),
  keyed by the model's fingerprint, the token ids (so the texts and the tokenizer), `max_length` and the
  precision, in place of TRL's own per-dataset cache file. `cache_reference_logps` runs that pass ahead
  for every sequence a study's trials can train on, so a later trial runs no reference model at all
  (the base model, adapter disabled, is the reference).

Loss variants (`training.loss`): `dpo` = sigmoid DPO; `sft` = SFT alone (weight 1); `dpo+sft` = sigmoid DPO
+ η·SFT; `dpo-l+sft` = DPO-L(λ) + η·SFT. λ only acts in `dpo-l+sft`, η in the two `+sft` variants.
ℓ(y) is the number of completion tokens the model is trained on (TRL appends EOS, so it counts; a response
truncated by `max_length` counts only its kept tokens).
"""

from __future__ import annotations

import gc
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch
from datasets import Dataset
from peft import LoraConfig
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase, ProgressCallback, TrainerCallback
from trl import DPOConfig, DPOTrainer

from tsq.cache import Cache, content_key
from tsq.devices import mixed_precision_flags, pick_device, pick_dtype
from tsq.errors import TrialFailed
from tsq.losses import dpo_l_loss
from tsq.models import load_causal_lm, load_tokenizer, model_fingerprint
from tsq.select import Pair
from tsq.spec import TrainingSpec

REF_LOGPS_STAGE = "ref_logps"
REF_LOGPS_FORMAT = 2  # 2: one entry per sequence (1 was per pair)
REF_COVER_STAGE = "ref_cover"  # markers of covering reference passes already run (`cache_reference_logps`)
LOSS_VARIANTS = ("dpo", "sft", "dpo+sft", "dpo-l+sft")
SIDES = ("chosen_ids", "rejected_ids")


def trl_losses(variant: str, sft_weight: float) -> tuple[list[str], list[float]]:
    """TRL's `loss_type`/`loss_weights` for a variant; for `dpo-l+sft` the DPO-L term is added on top."""
    table = {
        "dpo": (["sigmoid"], [1.0]),
        "sft": (["sft"], [1.0]),
        "dpo+sft": (["sigmoid", "sft"], [1.0, sft_weight]),
        "dpo-l+sft": (["sft"], [sft_weight]),
    }
    if variant not in table:
        raise ValueError(f"training.loss: unknown loss variant {variant!r}; expected one of {LOSS_VARIANTS}")
    return table[variant]


@dataclass
class TokenSqueezeDPOConfig(DPOConfig):
    """DPOConfig plus the TokenSqueeze loss; `loss_type`/`loss_weights` are derived from `loss_variant`."""

    loss_variant: str = field(default="dpo-l+sft", metadata={"help": f"One of {LOSS_VARIANTS}."})
    length_lambda: float = field(
        default=0.0, metadata={"help": "λ: weight of the length margin (dpo-l+sft)."}
    )
    sft_weight: float = field(
        default=0.0, metadata={"help": "η: weight of the SFT term (the +sft variants)."}
    )

    def __post_init__(self) -> None:
        self.loss_type, self.loss_weights = trl_losses(self.loss_variant, self.sft_weight)
        if self.loss_variant == "dpo-l+sft":
            # The DPO-L term reads reference log-probs from the batch and sums plain token log-probs: TRL
            # options that change either would silently not apply to it.
            if not self.precompute_ref_log_probs:
                raise ValueError("loss_variant 'dpo-l+sft' needs precompute_ref_log_probs=True")
            if self.ld_alpha is not None or self.use_weighting or self.f_divergence_type != "reverse_kl":
                raise ValueError(
                    "loss_variant 'dpo-l+sft' supports neither ld_alpha, use_weighting nor f-divergences"
                )
        super().__post_init__()


@dataclass(frozen=True)
class RefLogpsStore:
    """Where reference log-probs live: `cache` stage `ref_logps`, one entry per prompt + completion.

    Per sequence, not per pair: a response keeps its entry whatever it is paired with, so the covering
    pass of `cache_reference_logps` serves every later trial's pairs.
    """

    cache: Cache
    model_fingerprint: str

    def key(
        self, prompt_ids: list[int], completion_ids: list[int], max_length: int | None, precision: str
    ) -> str:
        return content_key(
            format=REF_LOGPS_FORMAT,
            model=self.model_fingerprint,
            precision=precision,
            prompt_ids=prompt_ids,
            completion_ids=completion_ids,
            max_length=max_length,
        )

    def get(self, key: str) -> float | None:
        found = self.cache.get_tensors(REF_LOGPS_STAGE, key)
        return None if found is None else found["logp"].item()

    def put(self, key: str, logp: float) -> None:
        self.cache.put_tensors(REF_LOGPS_STAGE, key, {"logp": torch.tensor([logp])})


class TokenSqueezeDPOTrainer(DPOTrainer):
    """DPOTrainer with the DPO-L term, cached reference log-probs and a NaN/inf loss guard."""

    args: TokenSqueezeDPOConfig

    def __init__(self, *args: Any, ref_logps_store: RefLogpsStore | None = None, **kwargs: Any) -> None:
        # Set before super().__init__, which runs the reference pass (`_precompute_ref_logps`)
        self.ref_logps_store = ref_logps_store
        # pairs whose reference log-probs were computed rather than read from the cache
        self.n_ref_computed = 0
        super().__init__(*args, **kwargs)

    def _precompute_ref_logps(self, dataset: Dataset, name: str, batch_size: int) -> Dataset:
        if self.ref_logps_store is None or self.is_deepspeed_enabled:
            return super()._precompute_ref_logps(dataset, name, batch_size)
        store = self.ref_logps_store
        ids = dataset.select_columns(["prompt_ids", "chosen_ids", "rejected_ids"])
        # The reference pass runs in the model's dtype under the trainer's autocast: both change the values
        precision = f"{self.model.dtype}/bf16={self.args.bf16}/fp16={self.args.fp16}"
        keys = [
            tuple(store.key(ex["prompt_ids"], ex[side], self.args.max_length, precision) for side in SIDES)
            for ex in ids
        ]
        values = [tuple(store.get(key) for key in pair) for pair in keys]
        missing = [i for i, pair in enumerate(values) if None in pair]
        if missing:
            loader = DataLoader(
                ids.select(missing), batch_size=batch_size, collate_fn=self.data_collator, shuffle=False
            )
            model = self.ref_model or self.model  # with PEFT, compute_ref_log_probs disables the adapter
            computed: list[tuple[float, float]] = []
            for batch in tqdm(loader, desc=f"Reference log-probs ({name})", leave=False):
                batch = {k: v.to(self.accelerator.device) for k, v in batch.items()}
                chosen, rejected = self.compute_ref_log_probs(model, batch)
                computed.extend(
                    zip(chosen.float().cpu().tolist(), rejected.float().cpu().tolist(), strict=True)
                )
            for i, pair in zip(missing, computed, strict=True):
                for key, value in zip(keys[i], pair, strict=True):
                    store.put(key, value)
                values[i] = pair
            self.n_ref_computed += len(missing)
        dataset = dataset.add_column("ref_chosen_logps", [v[0] for v in values])
        return dataset.add_column("ref_rejected_logps", [v[1] for v in values])

    def _compute_loss(self, model, inputs, return_outputs):
        if self.args.loss_variant != "dpo-l+sft":
            return super()._compute_loss(model, inputs, return_outputs)
        # TRL's forward returns per-token log-probs of the completion tokens (0 elsewhere); capture the first
        # (policy) forward of this call rather than running the model twice.
        captured: list[torch.Tensor] = []

        def capture(_module, _args, output):
            if not captured:
                captured.append(output.log_probs)

        handle = model.register_forward_hook(capture)
        try:
            result = super()._compute_loss(model, inputs, return_outputs)
        finally:
            handle.remove()
        trl_loss = result[0] if return_outputs else result

        shift_mask = inputs["completion_mask"][:, 1:]
        per_token = captured[0][:, -shift_mask.size(1) :]
        chosen_logps, rejected_logps = (per_token * shift_mask).sum(dim=1).chunk(2, dim=0)
        chosen_lengths, rejected_lengths = shift_mask.sum(dim=1).chunk(2, dim=0)
        per_pair = dpo_l_loss(
            chosen_logps,
            rejected_logps,
            inputs["ref_chosen_logps"],
            inputs["ref_rejected_logps"],
            chosen_lengths,
            rejected_lengths,
            beta=self.beta,
            lam=self.args.length_lambda,
        )
        dpo_l = per_pair.mean()
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["dpo_l_loss"].append(self.accelerator.gather(dpo_l.detach()).mean().item())
        loss = trl_loss + dpo_l
        return (loss, result[1]) if return_outputs else loss

    def training_step(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        loss = super().training_step(*args, **kwargs)
        if not torch.isfinite(loss).all():
            what = "NaN" if torch.isnan(loss).any() else "infinite"
            raise TrialFailed(f"training loss became {what} at step {self.state.global_step + 1}")
        return loss


@dataclass(frozen=True)
class TrainResult:
    adapter_dir: Path  # PEFT format: adapter_config.json + adapter_model.safetensors
    final_loss: float  # the last logged training loss
    mean_loss: float  # mean training loss over all steps
    history: list[dict[str, float]]  # one dict per logging step: step, loss, rewards/*, dpo_l_loss, ...
    n_pairs: int  # pairs trained on (after TRL drops prompts that fill max_length)
    n_steps: int
    n_ref_computed: int  # pairs whose reference log-probs were computed (the rest came from the cache)


class _QuietProgress(ProgressCallback):
    """The step progress bar without the log dicts printed under it (they go to `on_log` instead)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        return None


class _LogRelay(TrainerCallback):
    """Collects the trainer's per-step logs and forwards every log to `on_log` (tracking lives elsewhere)."""

    def __init__(self, on_log: Callable[[dict], None] | None) -> None:
        self.forward_to = on_log
        self.history: list[dict[str, float]] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        entry = {"step": state.global_step, **(logs or {})}
        if "loss" in entry:
            self.history.append(entry)
        if self.forward_to is not None:
            self.forward_to(entry)


def train_lora(
    model_path: Path,
    pairs: Sequence[Pair],
    training: TrainingSpec,
    lam: float,
    eta: float,
    out_dir: Path,
    cache: Cache,
    *,
    on_log: Callable[[dict], None] | None = None,
    trust_remote_code: bool = False,
    dtype: str = "auto",
) -> TrainResult:
    """Train a LoRA adapter on `pairs` with the `training.loss` variant; it is saved to out_dir/adapter."""
    if not pairs:
        raise TrialFailed("no preference pairs to train on")
    out_dir = Path(out_dir)
    relay = _LogRelay(on_log)
    trainer = _trainer(
        model_path, pairs, training, lam, eta, out_dir, cache, [relay], trust_remote_code, dtype
    )
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(_QuietProgress())
    n_pairs = len(trainer.train_dataset)
    if n_pairs == 0:
        raise TrialFailed(f"every pair's prompt fills training.max_length={training.max_length}")
    output = trainer.train()
    adapter_dir = out_dir / "adapter"
    trainer.model.save_pretrained(adapter_dir)
    losses = [entry["loss"] for entry in relay.history]
    return TrainResult(
        adapter_dir=adapter_dir,
        final_loss=losses[-1] if losses else math.nan,
        mean_loss=output.training_loss,
        history=relay.history,
        n_pairs=n_pairs,
        n_steps=output.global_step,
        n_ref_computed=trainer.n_ref_computed,
    )


def cache_reference_logps(
    model_path: Path,
    pairs: Sequence[Pair],
    training: TrainingSpec,
    cache: Cache,
    work_dir: Path,
    *,
    trust_remote_code: bool = False,
    dtype: str = "auto",
) -> int:
    """Run the reference pass for every sequence of `pairs` not yet cached, without training.

    A sweep calls this once with pairs that cover every chosen and rejected response a later trial can
    train on, so that trial reads all its reference log-probs from the cache. Returns the pairs computed.
    A cover done before is recorded by its content, so repeating it loads no model.
    """
    if not pairs:
        return 0
    done_key = content_key(
        format=REF_LOGPS_FORMAT,
        model=model_fingerprint(model_path),
        dtype=str(pick_dtype(dtype, pick_device())),
        max_length=training.max_length,
        sequences=sorted({(p.prompt, text) for p in pairs for text in (p.chosen, p.rejected)}),
    )
    if cache.get_json(REF_COVER_STAGE, done_key) is not None:
        return 0
    trainer = _trainer(
        model_path, pairs, training, 0.0, 0.0, Path(work_dir), cache, [], trust_remote_code, dtype
    )
    cache.write_bytes(REF_COVER_STAGE, done_key, json.dumps({"pairs": len(pairs)}).encode())
    computed = trainer.n_ref_computed
    # The trainer holds a copy of the model, possibly inside reference cycles: free it now, not at some
    # later collection, before training loads the next copy (on one GPU, two 7B copies may not fit).
    del trainer
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return computed


def _trainer(
    model_path: Path,
    pairs: Sequence[Pair],
    training: TrainingSpec,
    lam: float,
    eta: float,
    out_dir: Path,
    cache: Cache,
    callbacks: list[TrainerCallback],
    trust_remote_code: bool,
    dtype_name: str,
) -> TokenSqueezeDPOTrainer:
    """The trainer for `pairs`; building it runs the reference pass (cached per sequence)."""
    model_path = Path(model_path)
    # float32 on CPU, bf16 (fp16 on older GPUs) weights with matching autocast on a GPU
    dtype = pick_dtype(dtype_name, pick_device())
    tokenizer = load_tokenizer(model_path, trust_remote_code=trust_remote_code)
    model = load_causal_lm(model_path, dtype=dtype, trust_remote_code=trust_remote_code)
    dataset = Dataset.from_list(
        [
            {"prompt": strip_duplicate_bos(p.prompt, tokenizer), "chosen": p.chosen, "rejected": p.rejected}
            for p in pairs
        ]
    )
    lora = training.lora
    args = TokenSqueezeDPOConfig(
        output_dir=str(out_dir / "trainer"),
        loss_variant=training.loss,
        length_lambda=lam,
        sft_weight=eta,
        beta=training.beta,
        learning_rate=training.learning_rate,
        max_steps=training.max_steps,
        per_device_train_batch_size=training.batch_size,
        max_length=training.max_length,
        seed=training.seed,
        gradient_checkpointing=training.gradient_checkpointing,
        **mixed_precision_flags(dtype),
        precompute_ref_log_probs=True,
        # TRL's switch is all-or-nothing: keep dropout on when the spec asks for LoRA dropout
        disable_dropout=lora.dropout == 0.0,
        logging_steps=max(1, training.max_steps // 100),
        save_strategy="no",
        report_to=[],
        log_level="error",
        disable_tqdm=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
    )
    peft_config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )
    # TRL's dataset preparation shows one progress bar per `map`; the reference pass keeps its own bar
    bars_were_off = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        return TokenSqueezeDPOTrainer(
            model=model,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=callbacks,
            ref_logps_store=RefLogpsStore(cache, model_fingerprint(model_path)),
        )
    finally:
        if not bars_were_off:
            datasets.enable_progress_bars()


def strip_duplicate_bos(prompt: str, tokenizer: PreTrainedTokenizerBase) -> str:
    """Drop a leading BOS text from a chat-formatted prompt when the tokenizer adds BOS itself.

    TRL tokenises non-conversational prompts with the tokenizer's special tokens; a chat template that
    already wrote BOS into the text would otherwise give two BOS tokens.
    """
    bos = tokenizer.bos_token
    if not bos or not prompt.startswith(bos):
        return prompt
    adds_bos = tokenizer("x")["input_ids"][:1] == [tokenizer.bos_token_id]
    return prompt[len(bos) :] if adds_bos else prompt
