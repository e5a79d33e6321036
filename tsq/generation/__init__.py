"""Generation backends (HF `generate`, vLLM) behind one interface."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from tsq.generation.base import Backend
from tsq.spec import Spec


def get_backend(name: Literal["hf", "vllm"], model_path: Path, **kwargs: Any) -> Backend:
    """A backend for `model_path`; keyword arguments go to the backend's constructor.

    Imports are deferred so that using the HF backend never imports vLLM (slow, spawns processes).
    """
    if name == "hf":
        from tsq.generation.hf import HFBackend

        return HFBackend(model_path, **kwargs)
    if name == "vllm":
        from tsq.generation.vllm import VLLMBackend

        return VLLMBackend(model_path, **kwargs)
    raise ValueError(f"unknown generation backend {name!r} (expected 'hf' or 'vllm')")


def backend_from_spec(spec: Spec, model_path: Path, *, progress: bool = True) -> Backend:
    """The backend a spec asks for (`sampling.backend`), with the spec's dtype, batch size and vLLM memory
    settings. Close it when done (`with backend_from_spec(...) as backend:`)."""
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
    )
