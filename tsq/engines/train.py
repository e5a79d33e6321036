"""LoRA fine-tuning with the `training.loss` objective (DPO-L + η·SFT by default): the one place where η acts.

TRL does what it already does well: PEFT wrapping (the adapter disabled is the reference model), padding
(its collator), the fused log-prob head (no `(batch, seq, vocab)` logits), the optimiser and the training
loop. `TokenSqueezeDPOTrainer` adds, through the version-checked adapter `tsq.compat.trl`:

- the loss, computed here from the terms `tsq.method.losses.LOSSES` declares for the variant: the preference
  term `tsq.method.losses.dpo_l_loss` (λ = 0 for plain sigmoid DPO) and `η·tsq.method.losses.sft_loss` (mean
  NLL over all chosen completion tokens of the batch, as TRL's `sft` loss). TRL's own loss loop is not used:
  it has no per-pair margin, and its per-step metrics cost a host sync each; ours stay on the device until a
  log;
- tokenisation (`tokenize_pairs`), done like TRL's (prompt and prompt + completion, the completion starts
  where they diverge), except that a response which ran into `sampling.max_new_tokens` gets no EOS it never
  generated, and that truncation at `max_length` is counted (`Truncation`, in `TrainResult`), never silent;
- reference log-probs cached per sequence (prompt + completion) in `tsq.cache.Cache` (stage `ref_logps`),
  keyed by the model's fingerprint, the token ids (so the texts and the tokenizer), `max_length` and the
  precision, in place of TRL's own per-dataset cache file (so TRL's whole-model hash is skipped).
  `cache_reference_logps` runs that pass ahead for every sequence a study's trials can train on, so a
  later trial runs no reference model at all (the base model, adapter disabled, is the reference).

ℓ(y) is the number of completion tokens the model is trained on: EOS counts when the response generated
one; a response cut at `max_length` counts only its kept tokens. `check_max_length` is the preflight that
keeps that from happening: `training.max_length` must hold the longest prompt + `sampling.max_new_tokens` +
1, and is derived from them when unset.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch
from datasets import Dataset
from peft import LoraConfig
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase, ProgressCallback, TrainerCallback
from trl import DPOConfig

from tsq.cache import Cache, content_key
from tsq.compat.trl import FencedDPOTrainer
from tsq.config.pipeline import TrainingSpec
from tsq.devices import mixed_precision_flags, pick_device, pick_dtype, release_accelerator_memory
from tsq.engines.models import load_causal_lm, load_tokenizer, model_fingerprint
from tsq.errors import TrialFailed, UserError
from tsq.method.losses import LOSSES, dpo_l_loss, loss_def, sft_loss
from tsq.method.select import Pair

REF_LOGPS_STAGE = "ref_logps"
REF_LOGPS_FORMAT = 2  # 2: one entry per sequence (1 was per pair)
REF_COVER_STAGE = "ref_cover"  # markers of covering reference passes already run (`cache_reference_logps`)
SIDES = ("chosen_ids", "rejected_ids")
# keys of a collated batch that are not model inputs
_NON_MODEL_KEYS = frozenset({"completion_mask", "ref_chosen_logps", "ref_rejected_logps"})


@dataclass
class TokenSqueezeDPOConfig(DPOConfig):
    """DPOConfig plus the TokenSqueeze loss (`loss_variant`, one of `tsq.method.losses.LOSSES`, with λ `lam`
    and η `sft_weight`)."""

    loss_variant: str = field(default="dpo-l+sft", metadata={"help": f"One of {tuple(LOSSES)}."})
    lam: float = field(default=0.0, metadata={"help": "λ: weight of the length margin (DPO-L)."})
    sft_weight: float = field(
        default=0.0, metadata={"help": "η: weight of the SFT term (the +sft variants)."}
    )

    def __post_init__(self) -> None:
        loss = loss_def(self.loss_variant)
        # The loss is computed by tsq (TokenSqueezeDPOTrainer.compute_loss), not by TRL's loss loop: TRL
        # options that would change it are refused rather than silently ignored.
        if loss.dpo and not self.precompute_ref_log_probs:
            raise ValueError(f"loss_variant {loss.name!r} needs precompute_ref_log_probs=True")
        if self.ld_alpha is not None or self.use_weighting or self.f_divergence_type != "reverse_kl":
            raise ValueError("tsq's losses support neither ld_alpha, use_weighting nor f-divergences")
        if self.label_smoothing != 0.0 or self.loss_weights is not None or self.loss_type != ["sigmoid"]:
            raise ValueError(
                "tsq's losses come from loss_variant: leave loss_type, loss_weights, label_smoothing"
            )
        if self.truncation_mode != "keep_start":
            raise ValueError("tsq tokenises with truncation_mode 'keep_start' only (`tokenize_pairs`)")
        super().__post_init__()


@dataclass(frozen=True)
class Truncation:
    """What `max_length` and the sampling cap did to one training set (per trial: `TrainResult`)."""

    max_length: int | None
    pairs_dropped: int = 0  # pairs whose prompt alone fills max_length: nothing left to train on
    chosen_cut: int = 0  # chosen completions that lost their end (and EOS) at max_length
    rejected_cut: int = 0
    tokens_cut: int = 0  # completion tokens cut, both sides
    without_eos: int = (
        0  # completions trained without EOS: they ran into max_new_tokens and never generated one
    )

    def as_stats(self) -> dict[str, int | None]:
        return asdict(self)


def tokenize_pairs(
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    completions: dict[str, Sequence[str]],
    with_eos: dict[str, Sequence[bool]],
    max_length: int | None,
) -> tuple[dict[str, list[list[int]]], Truncation]:
    """Token ids per pair, TRL's way (`prompt_ids`, `chosen_ids`, `rejected_ids`), truncated and counted.

    `completions` and `with_eos` are keyed "chosen" / "rejected". The completion starts where the ids of the
    prompt alone and of prompt + completion diverge (tokens can merge across the boundary), and its EOS
    (appended as text, as TRL does) only when `with_eos`. Each sequence keeps its first `max_length` tokens
    (TRL's `keep_start`); a pair whose prompt alone fills `max_length` is dropped.
    """
    eos = tokenizer.eos_token
    prompt_ids = tokenizer(list(prompts))["input_ids"]
    whole: dict[str, list[list[int]]] = {}
    for side, texts in completions.items():
        joined = [
            p + t + (eos if add and not t.endswith(eos) else "")
            for p, t, add in zip(prompts, texts, with_eos[side], strict=True)
        ]
        whole[side] = tokenizer(joined)["input_ids"]
    out: dict[str, list[list[int]]] = {"prompt_ids": [], "chosen_ids": [], "rejected_ids": []}
    cut = {"chosen": 0, "rejected": 0}
    dropped = tokens_cut = 0
    for i, prompt in enumerate(prompt_ids):
        start = min(_common_prefix(prompt, whole[side][i]) for side in completions)
        if max_length is not None and start >= max_length:
            dropped += 1
            continue
        out["prompt_ids"].append(prompt[:start])
        room = None if max_length is None else max_length - start
        for side in completions:
            ids = whole[side][i][start:]
            if room is not None and len(ids) > room:
                cut[side] += 1
                tokens_cut += len(ids) - room
                ids = ids[:room]
            out[f"{side}_ids"].append(ids)
    without_eos = sum(not add for side in with_eos for add in with_eos[side])
    return out, Truncation(max_length, dropped, cut["chosen"], cut["rejected"], tokens_cut, without_eos)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def check_max_length(
    max_length: int | None, prompts: Collection[str], tokenizer: PreTrainedTokenizerBase, max_new_tokens: int
) -> int:
    """The `max_length` training must use: enough for the longest prompt + `max_new_tokens` + EOS.

    Returns `max_length` when it holds them, the value they need when it is None; raises UserError (one
    line naming `training.max_length` and the needed value) when it is set and too small. A preflight: call
    it before any trial trains, and train with the value it returns.
    """
    if not prompts:
        raise UserError("training.max_length: no training prompts to check it against")
    longest = max(
        len(ids) for ids in tokenizer([strip_duplicate_bos(p, tokenizer) for p in prompts])["input_ids"]
    )
    needed = longest + max_new_tokens + 1
    if max_length is None:
        return needed
    if max_length < needed:
        raise UserError(
            f"training.max_length: {max_length} is too small, training sequences would be cut; the longest"
            f" prompt ({longest} tokens) + sampling.max_new_tokens ({max_new_tokens}) + EOS need {needed}:"
            " set it to at least that, or leave it unset to derive it"
        )
    return max_length


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


class TokenSqueezeDPOTrainer(FencedDPOTrainer):
    """DPOTrainer with tsq's loss, tokenisation, cached reference log-probs and a NaN/inf loss guard.

    The text dataset has columns prompt / chosen / rejected and, optionally, chosen_eos / rejected_eos
    (False for a response that never generated an EOS; default True).
    """

    args: TokenSqueezeDPOConfig

    def __init__(
        self,
        *args: Any,
        ref_logps_store: RefLogpsStore | None = None,
        skip_model_hash: bool | None = None,
        **kwargs: Any,
    ) -> None:
        # Set before super().__init__, which tokenises (`prepare_dataset`) and runs the reference pass
        self.ref_logps_store = ref_logps_store
        # pairs whose reference log-probs were computed rather than read from the cache
        self.n_ref_computed = 0
        self.truncation: Truncation | None = None
        # per-step metrics, kept on the device as tensors until `log` averages them
        self._step_metrics: dict[str, list[torch.Tensor]] = {}
        # TRL's model hash only names its own reference cache file, which the store replaces
        skip = ref_logps_store is not None if skip_model_hash is None else skip_model_hash
        super().__init__(*args, skip_model_hash=skip, **kwargs)
        self.loss_def = loss_def(self.args.loss_variant)

    def prepare_dataset(self, dataset: Any, processing_class: Any, args: Any, dataset_name: str) -> Dataset:
        columns = dataset.column_names
        n = len(dataset)
        ids, truncation = tokenize_pairs(
            processing_class,
            dataset["prompt"],
            {side: dataset[side] for side in ("chosen", "rejected")},
            {
                side: dataset[f"{side}_eos"] if f"{side}_eos" in columns else [True] * n
                for side in ("chosen", "rejected")
            },
            args.max_length,
        )
        if dataset_name == "train":
            self.truncation = truncation
        return Dataset.from_dict(ids)

    def reference_logps(self, dataset: Any, name: str, batch_size: int) -> Dataset:
        if self.ref_logps_store is None or self.is_deepspeed_enabled:
            return super().reference_logps(dataset, name, batch_size)
        store = self.ref_logps_store
        # The reference pass runs in the model's dtype under the trainer's autocast: both change the values
        precision = f"{self.model.dtype}/bf16={self.args.bf16}/fp16={self.args.fp16}"
        keys = [
            tuple(store.key(prompt, ids, self.args.max_length, precision) for ids in sides)
            for prompt, *sides in zip(*(dataset[c] for c in ("prompt_ids", *SIDES)), strict=True)
        ]
        values = [tuple(store.get(key) for key in pair) for pair in keys]
        missing = [i for i, pair in enumerate(values) if None in pair]
        if missing:
            loader = DataLoader(
                dataset.select(missing), batch_size=batch_size, collate_fn=self.data_collator, shuffle=False
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

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The loss of `self.loss_def` on one collated batch (chosen rows first, then rejected)."""
        model_kwargs = {k: v for k, v in inputs.items() if k not in _NON_MODEL_KEYS}
        model_kwargs["use_cache"] = False
        if self.aux_loss_enabled:  # MoE: as TRL, ask for the router logits to add their balancing loss
            model_kwargs["output_router_logits"] = True
        completion_mask = inputs["completion_mask"]
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        # TRL's fused head: per-token log-probs of the labels (0 at -100), no (batch, seq, vocab) logits
        outputs = model(**model_kwargs, labels=labels, fused_lm_head=True)
        mask = completion_mask[:, 1:]
        per_token = outputs.log_probs[:, -mask.size(1) :]  # prompt-learning PEFT prepends virtual tokens
        chosen_logps, rejected_logps = (per_token * mask).sum(dim=1).chunk(2, dim=0)
        chosen_lengths, rejected_lengths = mask.sum(dim=1).chunk(2, dim=0)
        terms: dict[str, torch.Tensor] = {}
        if self.loss_def.dpo:
            chosen_ratio = chosen_logps - inputs["ref_chosen_logps"]
            rejected_ratio = rejected_logps - inputs["ref_rejected_logps"]
            per_pair = dpo_l_loss(
                chosen_logps,
                rejected_logps,
                inputs["ref_chosen_logps"],
                inputs["ref_rejected_logps"],
                chosen_lengths,
                rejected_lengths,
                beta=self.beta,
                lam=self.loss_def.margin_lam(self.args.lam),
            )
            terms["dpo_l_loss" if self.loss_def.length_margin else "dpo_loss"] = per_pair.mean()
            self._record(
                {
                    "rewards/chosen": self.beta * chosen_ratio.mean(),
                    "rewards/rejected": self.beta * rejected_ratio.mean(),
                    "rewards/margins": self.beta * (chosen_ratio - rejected_ratio).mean(),
                    "rewards/accuracies": (chosen_ratio > rejected_ratio).float().mean(),
                }
            )
        sft_weight = self.loss_def.sft_weight(self.args.sft_weight)
        loss = sum(terms.values(), torch.zeros((), device=per_token.device))
        if sft_weight:
            chosen_tokens, _ = per_token.chunk(2, dim=0)
            terms["sft_loss"] = sft_loss(chosen_tokens, mask.chunk(2, dim=0)[0].to(chosen_tokens.dtype))
            loss = loss + sft_weight * terms["sft_loss"]
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * outputs.aux_loss
        self._record({**terms, "logps/chosen": chosen_logps.mean(), "logps/rejected": rejected_logps.mean()})
        return (loss, outputs) if return_outputs else loss

    def _record(self, values: dict[str, torch.Tensor]) -> None:
        if self.model.training:  # tsq only logs training; no host sync here
            for key, value in values.items():
                self._step_metrics.setdefault(key, []).append(value.detach().float())

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self.model.training and self._step_metrics:
            # one host transfer for all metrics of the steps since the last log
            means = torch.stack([torch.stack(v).mean() for v in self._step_metrics.values()]).tolist()
            logs.update(zip(self._step_metrics, means, strict=True))
            self._step_metrics = {}
        super().log(logs, start_time)

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
    n_pairs: int  # pairs trained on (after dropping prompts that fill max_length)
    n_steps: int
    n_ref_computed: int  # pairs whose reference log-probs were computed (the rest came from the cache)
    truncation: Truncation  # what max_length cut and which completions got no EOS (trial stats)


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


@dataclass(frozen=True, kw_only=True)
class TrainerSetup:
    """What a trainer is built from besides the model, its tokenizer, the pairs and the reference store."""

    training: TrainingSpec
    out_dir: Path  # TRL's output_dir is out_dir/trainer (left empty: nothing is checkpointed)
    lam: float = 0.0  # λ, the length margin (0 for a reference pass: it reads no knob)
    eta: float = 0.0  # η, the SFT term's weight
    unfinished: frozenset[str] = frozenset()  # responses trained without an EOS (see `train_lora`)
    callbacks: tuple[TrainerCallback, ...] = ()


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
    unfinished: Collection[str] = (),
) -> TrainResult:
    """Train a LoRA adapter on `pairs` with the `training.loss` variant; it is saved to out_dir/adapter.

    `unfinished`: response texts that ran into `sampling.max_new_tokens` (finish_reason "length"); they are
    trained on without an EOS they never generated. `training.max_length` None: nothing is truncated (use
    `check_max_length` first to have it checked or derived).
    """
    if not pairs:
        raise TrialFailed("no preference pairs to train on")
    out_dir = Path(out_dir)
    relay = _LogRelay(on_log)
    setup = TrainerSetup(
        training=training,
        out_dir=out_dir,
        lam=lam,
        eta=eta,
        unfinished=frozenset(unfinished),
        callbacks=(relay,),
    )
    trainer = _trainer(model_path, pairs, setup, cache, trust_remote_code=trust_remote_code, dtype=dtype)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(_QuietProgress())
    n_pairs = len(trainer.train_dataset)
    if n_pairs == 0:
        raise TrialFailed(f"every pair's prompt fills training.max_length={training.max_length}")
    output = trainer.train()
    with contextlib.suppress(OSError):  # the Trainer's output_dir: empty, since nothing is checkpointed
        (out_dir / "trainer").rmdir()
    adapter_dir = out_dir / "adapter"
    trainer.model.save_pretrained(adapter_dir)
    losses = [entry["loss"] for entry in relay.history]
    result = TrainResult(
        adapter_dir=adapter_dir,
        final_loss=losses[-1] if losses else math.nan,
        mean_loss=output.training_loss,
        history=relay.history,
        n_pairs=n_pairs,
        n_steps=output.global_step,
        n_ref_computed=trainer.n_ref_computed,
        truncation=trainer.truncation or Truncation(training.max_length),
    )
    # The model, its optimiser state and torch's cached blocks go back to the device before this returns:
    # a sleeping vLLM engine wakes right after, into what this process left free.
    del trainer, output
    release_accelerator_memory()
    return result


def cache_reference_logps(
    model_path: Path,
    pairs: Sequence[Pair],
    training: TrainingSpec,
    cache: Cache,
    work_dir: Path,
    *,
    trust_remote_code: bool = False,
    dtype: str = "auto",
    unfinished: Collection[str] = (),
    make_room: Callable[[], AbstractContextManager[Any]] = nullcontext,
) -> int:
    """Run the reference pass for every sequence of `pairs` not yet cached, without training.

    A sweep calls this once with pairs that cover every chosen and rejected response a later trial can
    train on, so that trial reads all its reference log-probs from the cache. Returns the pairs computed.
    A cover done before is recorded by its content, so repeating it loads no model. `unfinished` as in
    `train_lora` (pass the same set: a completion without EOS is another sequence). `make_room` is entered
    around the pass only when it loads a model (a generation backend's `asleep`), and the model is freed
    inside it.
    """
    if not pairs:
        return 0
    done_key = content_key(
        format=REF_LOGPS_FORMAT,
        model=model_fingerprint(model_path),
        dtype=str(pick_dtype(dtype, pick_device())),
        max_length=training.max_length,
        sequences=sorted({(p.prompt, text) for p in pairs for text in (p.chosen, p.rejected)}),
        # only texts of this cover count, so the key of a cover without unfinished responses is unchanged
        **_unfinished_key(pairs, unfinished),
    )
    if cache.get_json(REF_COVER_STAGE, done_key) is not None:
        return 0
    with make_room():
        setup = TrainerSetup(training=training, out_dir=Path(work_dir), unfinished=frozenset(unfinished))
        computed = reference_pass(
            model_path, pairs, setup, cache, trust_remote_code=trust_remote_code, dtype=dtype
        )
    cache.write_bytes(REF_COVER_STAGE, done_key, json.dumps({"pairs": len(pairs)}).encode())
    return computed


def reference_pass(
    model_path: Path,
    pairs: Sequence[Pair],
    setup: TrainerSetup,
    cache: Cache,
    *,
    trust_remote_code: bool = False,
    dtype: str = "auto",
) -> int:
    """Compute and cache the reference log-probs of every sequence of `pairs` not cached yet; the pairs
    computed. The model is loaded and freed here.

    The pass is the one a trainer runs when it is built (`TokenSqueezeDPOTrainer.reference_logps`: TRL's
    collator, fused log-prob head and autocast on the PEFT model with its adapter disabled), so it builds
    one: a pass of its own would have to reproduce each of those to give the same bits as the trainer's
    pass for the pairs a trial adds.
    """
    trainer = _trainer(model_path, pairs, setup, cache, trust_remote_code=trust_remote_code, dtype=dtype)
    computed = trainer.n_ref_computed
    # The trainer holds a copy of the model, possibly inside reference cycles: free it now, before
    # training loads the next copy (on one GPU, two 7B copies may not fit) or the engine wakes.
    del trainer
    release_accelerator_memory()
    return computed


def _trainer(
    model_path: Path,
    pairs: Sequence[Pair],
    setup: TrainerSetup,
    cache: Cache,
    *,
    trust_remote_code: bool = False,
    dtype: str = "auto",
) -> TokenSqueezeDPOTrainer:
    """The trainer for `pairs`; building it runs the reference pass (cached per sequence)."""
    model_path = Path(model_path)
    # float32 on CPU, bf16 (fp16 on older GPUs) weights with matching autocast on a GPU
    torch_dtype = pick_dtype(dtype, pick_device())
    tokenizer = load_tokenizer(model_path, trust_remote_code=trust_remote_code)
    model = load_causal_lm(model_path, dtype=torch_dtype, trust_remote_code=trust_remote_code)
    store = RefLogpsStore(cache, model_fingerprint(model_path))
    return build_trainer(model, tokenizer, pairs, setup, store)


def build_trainer(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[Pair],
    setup: TrainerSetup,
    store: RefLogpsStore | None,
    *,
    skip_model_hash: bool | None = None,
) -> TokenSqueezeDPOTrainer:
    """The trainer `train_lora` uses, on a loaded model (benchmarks build it on a model of their own).

    `skip_model_hash` None: skipped when `store` serves the reference log-probs.
    """
    dtype = model.dtype
    training, unfinished = setup.training, setup.unfinished
    dataset = Dataset.from_list(
        [
            {
                "prompt": strip_duplicate_bos(p.prompt, tokenizer),
                "chosen": p.chosen,
                "rejected": p.rejected,
                "chosen_eos": p.chosen not in unfinished,
                "rejected_eos": p.rejected not in unfinished,
            }
            for p in pairs
        ]
    )
    lora = training.lora
    args = TokenSqueezeDPOConfig(
        output_dir=str(Path(setup.out_dir) / "trainer"),
        loss_variant=training.loss,
        lam=setup.lam,
        sft_weight=setup.eta,
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
            callbacks=list(setup.callbacks),
            ref_logps_store=store,
            skip_model_hash=skip_model_hash,
        )
    finally:
        if not bars_were_off:
            datasets.enable_progress_bars()


def _unfinished_key(pairs: Sequence[Pair], unfinished: Collection[str]) -> dict[str, list[str]]:
    texts = set(unfinished) & {t for p in pairs for t in (p.chosen, p.rejected)}
    return {"unfinished": sorted(texts)} if texts else {}


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
