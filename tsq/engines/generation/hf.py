"""HF transformers backend: batched `generate` (KV cache, left padding), the portable fallback.

Sampling draws every row from its own seeded stream (`SeededSampler`), not from torch's global generator,
so a (prompt, sample) row gets the same tokens alone or in any batch (see `tsq.engines.generation.base`).
"""

from __future__ import annotations

import gc
from collections import OrderedDict
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch
from peft import PeftModel
from tqdm.auto import tqdm
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
)

from tsq.devices import pick_device, pick_dtype
from tsq.engines.generation.adapters import adapter_fingerprint
from tsq.engines.generation.base import BackendLifecycle, Completion, SamplingSettings, row_seeds
from tsq.engines.generation.completions import eos_token_ids, finish_completion
from tsq.engines.models import load_causal_lm, load_tokenizer


class HFBackend(BackendLifecycle):
    """Generates with `model.generate`; LoRA adapters are loaded with PEFT onto one shared base model.

    Sample j of prompt i is drawn with uniforms from a CPU generator seeded by (seed, key_i, j), so it is the
    same alone or in any batch, as long as the batch's logits agree with the lone row's. Left padding changes
    them only by float rounding (exactly equal on the tiny model in fp32, as the tests check); a draw flips
    only when its uniform lies within that rounding of a boundary of the cumulative distribution.
    On CUDA, sleep() moves the weights to CPU memory and wake_up() moves them back; on CPU both do nothing.
    """

    name = "hf"

    def __init__(
        self,
        model_path: Path,
        *,
        dtype: str = "auto",
        batch_size: int = 64,
        device: str | None = None,
        max_cached_adapters: int = 4,
        progress: bool = True,
        trust_remote_code: bool = False,
    ) -> None:
        self.model_path = Path(model_path)
        self.batch_size = batch_size
        self.device = pick_device(device)
        self.progress = progress
        self._dtype = pick_dtype(dtype, self.device)
        self._max_cached_adapters = max_cached_adapters
        self._trust_remote_code = trust_remote_code
        self.tokenizer = load_tokenizer(self.model_path, trust_remote_code=trust_remote_code)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.eos_ids = eos_token_ids(self.model_path, self.tokenizer)
        self._base: PreTrainedModel | None = None
        # Once an adapter is loaded the base is wrapped in a PeftModel; adapters live in it by name and the
        # base model is used through `disable_adapter()`. Names are adapter fingerprints, oldest first.
        self._peft: PeftModel | None = None
        self._adapters: OrderedDict[str, None] = OrderedDict()
        self.calls = 0  # generate() calls, read by tests and benchmarks

    # -- models ------------------------------------------------------------------------------------
    def _load_base(self) -> PreTrainedModel:
        if self._base is None:
            model = load_causal_lm(
                self.model_path,
                dtype=self._dtype,
                trust_remote_code=self._trust_remote_code,
                device=self.device,  # straight onto this backend's device, never via another
            )
            self._base = model.to(self.device).eval()
        return self._base

    def _activate(self, adapter: Path | None) -> str | None:
        """Load (once) and select the adapter; returns its name, or None for the base model."""
        if adapter is None:
            return None
        name = adapter_fingerprint(adapter)
        if self._peft is None:
            self._peft = PeftModel.from_pretrained(self._load_base(), str(adapter), adapter_name=name)
            self._peft.eval()
        elif name not in self._adapters:
            self._peft.load_adapter(str(adapter), adapter_name=name)
        self._adapters[name] = None
        self._adapters.move_to_end(name)
        self._peft.set_adapter(name)
        while len(self._adapters) > self._max_cached_adapters:
            oldest = next(iter(self._adapters))
            self._peft.delete_adapter(oldest)
            del self._adapters[oldest]
        return name

    # -- generation ----------------------------------------------------------------------------------
    def generate(
        self,
        prompts: list[str],
        settings: SamplingSettings,
        adapter: Path | None = None,
        keys: Sequence[str] | None = None,
    ) -> list[list[Completion]]:
        self._begin_generate()
        sample = settings.temperature > 0
        seeds = row_seeds(prompts, settings, keys)  # checks keys even when greedy
        adapter_name = self._activate(adapter)
        model = self._peft if self._peft is not None else self._load_base()
        config = self._generation_config(settings)
        rows = [i for i in range(len(prompts)) for _ in range(settings.n)]
        results: list[list[Completion]] = [[] for _ in prompts]
        starts = range(0, len(rows), self.batch_size)
        for start in tqdm(
            starts, desc="generate (hf)", unit="batch", disable=not self.progress or len(starts) < 2
        ):
            batch_rows = rows[start : start + self.batch_size]
            enc = self.tokenizer(
                [prompts[i] for i in batch_rows],
                return_tensors="pt",
                padding=True,
                add_special_tokens=False,  # chat templates already carry any BOS they need
            ).to(self.device)
            prompt_len = enc["input_ids"].shape[1]
            processors = LogitsProcessorList()
            if sample:
                uniforms = row_uniforms(seeds[start : start + self.batch_size], settings.max_new_tokens)
                # float32 on the device: MPS has no float64, and 2^-24 steps are far below any probability
                uniforms = uniforms.to(self.device, torch.float32)
                processors.append(SeededSampler(uniforms, prompt_len, settings.temperature, settings.top_p))
            stopping = (
                StoppingCriteriaList([StopOnStrings(self.tokenizer, settings.stop, prompt_len)])
                if settings.stop
                else None
            )
            with torch.inference_mode(), _adapter_scope(model, adapter_name):
                out = model.generate(
                    **enc, generation_config=config, logits_processor=processors, stopping_criteria=stopping
                )
            generated = out[:, prompt_len:].tolist()
            for row, ids in zip(batch_rows, generated, strict=True):
                results[row].append(finish_completion(self.tokenizer, ids, self.eos_ids, settings.stop))
        return results

    def _generation_config(self, settings: SamplingSettings) -> GenerationConfig:
        # Greedy decoding always: when sampling, `SeededSampler` has already reduced each row's scores to the
        # one token it drew, so argmax picks that token. Everything is explicit so the model's own
        # generation_config.json (top_k, repetition penalty, ...) cannot change what the settings say.
        return GenerationConfig(
            do_sample=False,
            temperature=1.0,
            top_p=1.0,
            top_k=None,
            repetition_penalty=1.0,
            max_new_tokens=settings.max_new_tokens,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=list(self.eos_ids),
        )

    # -- lifecycle ----------------------------------------------------------------------------------
    def _do_close(self) -> None:
        self._peft = None
        self._base = None
        self._adapters.clear()
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _do_sleep(self) -> bool:
        # Only an accelerator's memory is worth giving back; on CPU, training shares the same RAM anyway.
        if self.device.type != "cuda" or self._base is None:
            return False
        self._base.to("cpu")  # PEFT's LoRA layers live inside the base modules and move with them
        torch.cuda.empty_cache()
        return True

    def _do_wake_up(self) -> None:
        if self._base is not None:
            self._base.to(self.device)


def row_uniforms(seeds: Sequence[int], steps: int) -> torch.Tensor:
    """(rows, steps) float64 uniforms in [0, 1), row r from a CPU generator seeded with seeds[r].

    A CPU generator gives the same stream on every device, and one row's stream is untouched by the others.
    """
    out = torch.empty(len(seeds), steps, dtype=torch.float64)
    for r, seed in enumerate(seeds):
        out[r] = torch.rand(steps, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return out


def sample_tokens(
    logits: torch.Tensor, uniforms: torch.Tensor, temperature: float, top_p: float
) -> torch.Tensor:
    """One token per row by inverse-CDF sampling of softmax(logits / temperature) restricted to the top-p set.

    The top-p set is the most probable tokens up to and including the first one at which the cumulative
    probability reaches top_p (HF's and vLLM's rule); the draw is the first token, in order of decreasing
    probability (ties: lower id first), whose cumulative kept mass exceeds u · (kept mass).
    """
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    sorted_p, order = probs.sort(dim=-1, descending=True, stable=True)
    if top_p < 1.0:
        keep = (sorted_p.cumsum(dim=-1) - sorted_p) < top_p
        sorted_p = sorted_p * keep
    cum = sorted_p.cumsum(dim=-1)
    target = uniforms.to(cum.dtype).unsqueeze(-1) * cum[:, -1:]
    idx = torch.searchsorted(cum, target, right=True)
    # Rounding can put the target at the top of the kept mass: take the last kept token then.
    last = (sorted_p > 0).sum(dim=-1, keepdim=True) - 1
    idx = torch.minimum(idx, last)
    return order.gather(-1, idx).squeeze(-1)


class SeededSampler(LogitsProcessor):
    """Draws each row's next token with that row's uniform for this step; returns scores where only the
    drawn token is finite, so greedy decoding emits it."""

    def __init__(self, uniforms: torch.Tensor, prompt_len: int, temperature: float, top_p: float) -> None:
        self.uniforms = uniforms
        self.prompt_len = prompt_len
        self.temperature = temperature
        self.top_p = top_p

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1] - self.prompt_len
        tokens = sample_tokens(scores, self.uniforms[:, step], self.temperature, self.top_p)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(-1, tokens.unsqueeze(-1), 0.0)


class StopOnStrings(StoppingCriteria):
    """Stops a row once its generated text contains a stop string.

    transformers' own `stop_strings` needs a tokenizer whose decoder round-trips single tokens (it fails on
    word-level vocabularies such as the tiny model's), so this decodes a short tail of each row instead:
    a stop string of c characters is completed within the last c + 2 tokens of the step that completes it.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stop: tuple[str, ...], prompt_len: int) -> None:
        self.tokenizer = tokenizer
        self.stop = stop
        self.prompt_len = prompt_len
        self.window = max(len(s) for s in stop) + 2

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        tails = input_ids[:, self.prompt_len :][:, -self.window :].tolist()
        texts = self.tokenizer.batch_decode(
            tails, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        done = [any(s in text for s in self.stop) for text in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def _adapter_scope(model: PreTrainedModel | PeftModel, adapter_name: str | None) -> AbstractContextManager:
    """The base model's weights when no adapter is requested, even if adapters are loaded."""
    if adapter_name is None and isinstance(model, PeftModel):
        return model.disable_adapter()
    return nullcontext()
