"""Model resolution and identity: "tiny", a local directory, or an HF hub id from the local HF cache.

`model_fingerprint` hashes the weights and config, so cache keys follow the model's content, not its name.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tsq.errors import UserError
from tsq.fileio import hash_files
from tsq.spec import ModelSpec

log = logging.getLogger(__name__)

_FINGERPRINTED = ("config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json")
_fingerprints: dict[tuple[str, tuple[tuple[str, float, int], ...]], str] = {}


def resolve_model(spec: ModelSpec) -> Path:
    """The local directory of the spec's model; builds the tiny model when it is asked for and missing."""
    if spec.path == "tiny":
        from tsq.tiny_model import build_tiny

        return build_tiny(spec.tiny_variant)
    local = Path(spec.path).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise UserError(f"model.path: {local} is not a model directory (no config.json)")
        return local
    if spec.path.startswith((".", "/", "~")) or spec.path.count("/") != 1:
        raise UserError(f"model.path: {spec.path} does not exist")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(spec.path, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        raise UserError(
            f"model.path: {spec.path} is neither a local directory nor in the local HF cache; "
            f"download it first (huggingface-cli download {spec.path}), tsq never downloads at run time"
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


def load_causal_lm(path: Path, dtype: Any = "auto", trust_remote_code: bool = False) -> Any:
    """An AutoModelForCausalLM; `dtype` "auto" means float32 on CPU (see tsq.devices for GPUs)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch_dtype = (
        torch.float32 if dtype == "auto" else getattr(torch, dtype) if isinstance(dtype, str) else dtype
    )
    try:
        return AutoModelForCausalLM.from_pretrained(
            path, dtype=torch_dtype, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as exc:
        raise UserError(f"model.path: cannot load a causal LM from {path} ({_first_line(exc)})") from None


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
