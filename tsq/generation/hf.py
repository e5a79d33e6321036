"""HF transformers backend: batched `generate` (KV cache, left padding), the portable fallback."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import torch
from peft import PeftModel
from tqdm.auto import tqdm
from transformers import (
    GenerationConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
)

from tsq.devices import pick_device, pick_dtype
from tsq.generation.adapters import adapter_fingerprint
from tsq.generation.base import Completion, SamplingSettings
from tsq.generation.completions import eos_token_ids, finish_completion
from tsq.models import load_causal_lm, load_tokenizer


class HFBackend:
    """Generates with `model.generate`; LoRA adapters are loaded with PEFT onto one shared base model.

    Sampling is seeded per batch (from the settings' seed and the batch index), so a call is deterministic
    for a given seed, prompt list and batch size.
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
                self.model_path, dtype=self._dtype, trust_remote_code=self._trust_remote_code
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
        self, prompts: list[str], settings: SamplingSettings, adapter: Path | None = None
    ) -> list[list[Completion]]:
        self.calls += 1
        adapter_name = self._activate(adapter)
        model = self._peft if self._peft is not None else self._load_base()
        config = self._generation_config(settings)
        rows = [i for i in range(len(prompts)) for _ in range(settings.n)]
        results: list[list[Completion]] = [[] for _ in prompts]
        starts = range(0, len(rows), self.batch_size)
        for batch_index, start in enumerate(
            tqdm(starts, desc="generate (hf)", unit="batch", disable=not self.progress or len(starts) < 2)
        ):
            batch_rows = rows[start : start + self.batch_size]
            enc = self.tokenizer(
                [prompts[i] for i in batch_rows],
                return_tensors="pt",
                padding=True,
                add_special_tokens=False,  # chat templates already carry any BOS they need
            ).to(self.device)
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
                torch.manual_seed(_batch_seed(settings.seed, batch_index))
                with torch.inference_mode(), _adapter_scope(model, adapter_name):
                    prompt_len = enc["input_ids"].shape[1]
                    stopping = (
                        StoppingCriteriaList([StopOnStrings(self.tokenizer, settings.stop, prompt_len)])
                        if settings.stop
                        else None
                    )
                    out = model.generate(**enc, generation_config=config, stopping_criteria=stopping)
            generated = out[:, prompt_len:].tolist()
            for row, ids in zip(batch_rows, generated, strict=True):
                results[row].append(finish_completion(self.tokenizer, ids, self.eos_ids, settings.stop))
        return results

    def _generation_config(self, settings: SamplingSettings) -> GenerationConfig:
        sample = settings.temperature > 0
        # Everything is explicit so the model's own generation_config.json (top_k, repetition penalty, ...)
        # cannot change what the settings say; vLLM's SamplingParams get the same values.
        return GenerationConfig(
            do_sample=sample,
            temperature=settings.temperature if sample else 1.0,
            top_p=settings.top_p if sample else 1.0,
            top_k=0 if sample else None,
            repetition_penalty=1.0,
            max_new_tokens=settings.max_new_tokens,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=list(self.eos_ids),
        )


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


def _batch_seed(seed: int, batch_index: int) -> int:
    return int(hashlib.sha256(f"{seed}:{batch_index}".encode()).hexdigest()[:8], 16)
