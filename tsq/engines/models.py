"""Model resolution, identity and loading.

`resolve_model`: "tiny" (the shipped build, checksummed), a bare name (a GGUF model imported under
$TSQ_HOME/models by `tsq model import-gguf`, checksummed), a local directory, or an HF hub id from the local
HF cache; a hub id missing there is fetched through huggingface_hub only when the spec says
`model.download: true` (else a one-line error naming `hf download`). `model_fingerprint` hashes the weights
and config, so cache keys follow the model's content, not its name. `load_causal_lm` puts the weights
straight onto a CUDA device when there is one.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from tsq.config.spec import ModelSpec
from tsq.engines.gguf_import import imported_model, is_import_name
from tsq.errors import UserError
from tsq.fileio import hash_files

log = logging.getLogger(__name__)

_FINGERPRINTED = ("config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json")
_NOT_DOWNLOADED = ["*.pth", "*.pt", "*.h5", "*.msgpack", "*.onnx", "*.gguf", "original/*"]
_fingerprints: dict[tuple[str, tuple[tuple[str, float, int], ...]], str] = {}


def resolve_model(spec: ModelSpec) -> Path:
    """The local directory of the spec's model ("tiny": the shipped build, its checksums verified)."""
    if spec.path == "tiny":
        from tsq.engines.tiny_model import tiny_model

        return tiny_model(spec.tiny_variant)
    local = Path(spec.path).expanduser()
    if not local.exists() and is_import_name(spec.path):
        return imported_model(spec.path)  # a folder `tsq model import-gguf` made, its checksums verified
    if local.exists():
        if not (local / "config.json").is_file():
            raise UserError(f"model.path: {local} is not a model directory (no config.json)")
        return local
    if spec.path.startswith((".", "/", "~")) or spec.path.count("/") != 1:
        raise UserError(f"model.path: {spec.path} does not exist")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(spec.path, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        if not spec.download:
            raise UserError(
                f"model.path: {spec.path} is neither a local directory nor in the local HF cache; "
                f"download it first (hf download {spec.path}) or set model.download: true"
            ) from None
    log.info("downloading %s from the Hugging Face hub (model.download: true)", spec.path)
    try:
        # the weights once: checkpoints that also ship other frameworks' or the original format's copies
        return Path(snapshot_download(spec.path, ignore_patterns=_NOT_DOWNLOADED))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError, ValueError) as exc:
        raise UserError(
            f"model.path: could not download {spec.path} ({_first_line(exc)}); check the id, the network, "
            f"and for gated models `hf auth login`"
        ) from None


def _weight_files(path: Path) -> list[Path]:
    files = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
    return files + [path / name for name in _FINGERPRINTED if (path / name).is_file()]


def model_fingerprint(path: Path | str) -> str:
    """SHA-256 over the weight, config and tokenizer files (memoised per path, size and mtime)."""
    path = Path(path)
    files = _weight_files(path)
    if not files:
        raise UserError(f"model.path: {path} has no weight files")
    stamp = tuple((f.name, f.stat().st_mtime, f.stat().st_size) for f in files)
    memo_key = (str(path.resolve()), stamp)
    if memo_key not in _fingerprints:
        _fingerprints[memo_key] = hash_files(files)[:32]
    return _fingerprints[memo_key]


def load_tokenizer(path: Path, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise UserError(f"model.path: cannot load a tokenizer from {path} ({_first_line(exc)})") from None


def load_causal_lm(
    path: Path, dtype: Any = "auto", trust_remote_code: bool = False, device: Any = None
) -> Any:
    """An AutoModelForCausalLM; `dtype` "auto" means float32 on CPU (see tsq.devices for GPUs).

    The weights load straight onto `device` when it is a CUDA device; `device` None means this process's
    GPU when CUDA is available (LOCAL_RANK's under a distributed launcher), so a 7B checkpoint never sits
    in CPU memory. Elsewhere (CPU, MPS) the model loads on the CPU as before and callers move it.
    """
    import torch
    from transformers import AutoModelForCausalLM

    torch_dtype = (
        torch.float32 if dtype == "auto" else getattr(torch, dtype) if isinstance(dtype, str) else dtype
    )
    target = _load_device(device)
    placement = {"device_map": {"": target}} if target is not None else {}
    try:
        return AutoModelForCausalLM.from_pretrained(
            path, dtype=torch_dtype, trust_remote_code=trust_remote_code, **placement
        )
    except (OSError, ValueError) as exc:
        raise UserError(f"model.path: cannot load a causal LM from {path} ({_first_line(exc)})") from None


def _load_device(device: Any) -> Any:
    """The CUDA device to load onto, or None to load on the CPU."""
    import torch

    if device is None:
        if not torch.cuda.is_available():
            return None
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", torch.cuda.current_device())))
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return device if device.index is not None else torch.device("cuda", torch.cuda.current_device())


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
