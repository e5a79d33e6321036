"""Generation backends (HF `generate`, vLLM) behind one interface."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from tsq.config.pipeline import PipelineSpec
from tsq.config.space import bounding_values
from tsq.engines.generation.base import Backend


def get_backend(name: Literal["hf", "vllm"], model_path: Path, **kwargs: Any) -> Backend:
    """A backend for `model_path`; keyword arguments go to the backend's constructor.

    Imports are deferred so that using the HF backend never imports vLLM (slow, spawns processes).
    """
    if name == "hf":
        from tsq.engines.generation.hf import HFBackend

        return HFBackend(model_path, **kwargs)
    if name == "vllm":
        from tsq.engines.generation.vllm import VLLMBackend

        return VLLMBackend(model_path, **kwargs)
    raise ValueError(f"unknown generation backend {name!r} (expected 'hf' or 'vllm')")


def study_values(spec: PipelineSpec, path: tuple[str, ...]) -> list[Any]:
    """Every value that bounds the spec field at `path` across the spec's study: its own value, and the
    bounding values (tsq.config.space) of each searched or fixed knob the spec's recipe puts on that field."""
    value: Any = spec
    for key in path:
        value = getattr(value, key)
    values = [value]
    for name, entry in spec.study.search.items():
        knob = type(spec).knob(name)
        if knob is not None and knob.path == path:
            values += [knob.to_spec(v) for _, v in bounding_values(entry)]
    return values


def lora_rank_bound(spec: PipelineSpec) -> int:
    """The largest `training.lora.r` a trial of the spec's study trains (vLLM sizes its LoRA slots by it)."""
    return max(int(r) for r in study_values(spec, ("training", "lora", "r")))


def backend_from_spec(spec: PipelineSpec, model_path: Path, *, progress: bool = True) -> Backend:
    """The backend a spec asks for (`sampling.backend`), with the spec's dtype, batch size and vLLM memory
    settings, its LoRA slots sized for the largest rank the spec's study trains. Close it when done (`with
    backend_from_spec(...) as backend:`)."""
    if spec.sampling.backend == "hf":
        return get_backend(
            "hf",
            model_path,
            dtype=spec.model.dtype,
            batch_size=spec.sampling.batch_size,
            progress=progress,
            trust_remote_code=spec.model.trust_remote_code,
        )
    return get_backend(
        "vllm",
        model_path,
        dtype=spec.model.dtype,
        progress=progress,
        trust_remote_code=spec.model.trust_remote_code,
        gpu_memory_utilization=spec.sampling.gpu_memory_utilization,
        max_model_len=spec.sampling.max_model_len,
        sleep_mode=spec.sampling.sleep_mode,
        max_lora_rank=lora_rank_bound(spec),
    )
