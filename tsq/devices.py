"""Device and dtype selection: bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU."""

from __future__ import annotations

import gc
import os
from collections.abc import Mapping

import torch

from tsq.errors import UserError

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def pick_device(preferred: str | None = None) -> torch.device:
    """`preferred` ("cpu", "cuda", "cuda:1", "mps") if given, else the first CUDA GPU, else MPS, else CPU."""
    if preferred is not None:
        device = torch.device(preferred)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UserError(f"device: {preferred!r} requested but CUDA is not available")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def supports_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        # Ampere (sm_80) and newer do bf16 natively; torch's check also rejects emulated bf16
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return device.type == "cpu"  # CPU kernels exist (slow on most CPUs); MPS support varies by OS version


def pick_dtype(spec_dtype: str, device: torch.device | str) -> torch.dtype:
    """The dtype for `model.dtype` on `device`.

    "auto": bfloat16 on a GPU that supports it (the dtype R1-distilled models ship in), float16 on older
    GPUs and MPS, float32 on CPU (half precision on CPU is slow and, for training, unstable). An explicit
    choice is honoured unless the device cannot run it.
    """
    device = torch.device(device)
    if spec_dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if supports_bf16(device) else torch.float16
        return torch.float16 if device.type == "mps" else torch.float32
    if spec_dtype not in DTYPES:
        raise UserError(f"model.dtype: unknown dtype {spec_dtype!r}; use auto, {', '.join(DTYPES)}")
    dtype = DTYPES[spec_dtype]
    if dtype == torch.bfloat16 and device.type == "cuda" and not supports_bf16(device):
        name = torch.cuda.get_device_name(device)
        raise UserError(f"model.dtype: bfloat16 is not supported on {name}; use float16 or auto")
    return dtype


def mixed_precision_flags(dtype: torch.dtype) -> dict[str, bool]:
    """`bf16`/`fp16` for transformers/TRL TrainingArguments matching the model dtype."""
    return {"bf16": dtype == torch.bfloat16, "fp16": dtype == torch.float16}


def release_accelerator_memory() -> None:
    """Free what dropped models left behind and give torch's cached GPU blocks back to the driver.

    Every stage that loaded a model while a vLLM engine sleeps calls this before the engine wakes: the engine
    re-maps its memory in another process, where this process's cache cannot be reclaimed.
    """
    gc.collect()  # trainers and PEFT models sit in reference cycles: free them now, not later
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


ALLOC_CONF_VARIABLES = ("PYTORCH_ALLOC_CONF", "PYTORCH_CUDA_ALLOC_CONF")
EXPANDABLE_SEGMENTS = "expandable_segments:True"


def expandable_segments_setting(environ: Mapping[str, str], cuda: bool) -> str | None:
    """The allocator setting `use_expandable_segments` applies: expandable segments on a CUDA machine whose
    user set no allocator configuration of their own (None: leave the allocator as it is)."""
    if not cuda or any(environ.get(name) for name in ALLOC_CONF_VARIABLES):
        return None
    return EXPANDABLE_SEGMENTS


def use_expandable_segments() -> str | None:
    """Let this process's CUDA allocator grow segments in place: the HF stages (scoring, reference pass,
    training) allocate sequences of every length between engine sleeps, and fixed segments fragment.

    Set at run time, not in the environment, so that an engine process started later does not inherit it
    (vLLM's own sleep-mode pool turns it off around itself). Returns the setting applied, if any.
    """
    setting = expandable_segments_setting(os.environ, torch.cuda.is_available())
    if setting is not None:
        torch._C._accelerator_setAllocatorSettings(setting)
    return setting


def visible_gpus(environ: dict[str, str] | None = None) -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries: that variable's list when it is set
    (Slurm and users set it; "" or "-1" hide every GPU), else every GPU torch counts."""
    value = (os.environ if environ is None else environ).get("CUDA_VISIBLE_DEVICES")
    if value is not None:
        return [d.strip() for d in value.split(",") if d.strip() and d.strip() != "-1"]
    return [str(i) for i in range(torch.cuda.device_count())]


def gpu_assignment(workers: int, gpus_per_worker: int | None, visible: list[str]) -> list[str | None]:
    """CUDA_VISIBLE_DEVICES for each of `workers` local workers: one visible GPU each; "" (every GPU hidden)
    for CPU workers asked for with `gpus_per_worker` 0 where GPUs are visible, so that no worker's engine
    lands on GPU 0; None (leave the variable as it is) where none is visible. `gpus_per_worker` None means 1
    where GPUs are visible, else 0. One trial uses one GPU, so a worker never gets more than one. Raises
    UserError (one line) when the GPUs asked for are not there."""
    per = (1 if visible else 0) if gpus_per_worker is None else gpus_per_worker
    if per not in (0, 1):
        raise UserError(f"--gpus-per-worker {per}: a trial uses one GPU; use 0 or 1")
    if per == 0:
        return [""] * workers if visible else [None] * workers
    if not visible:
        raise UserError("--gpus-per-worker 1: no GPU is visible (CUDA_VISIBLE_DEVICES and torch see none)")
    if workers > len(visible):
        raise UserError(
            f"--workers {workers}: only {len(visible)} GPU(s) visible ({','.join(visible)}); use at most "
            f"{len(visible)} workers, or --gpus-per-worker 0"
        )
    return visible[:workers]
