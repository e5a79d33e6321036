"""Identity of a PEFT LoRA adapter directory: a hash of its config and weights (not its path)."""

from __future__ import annotations

from pathlib import Path

from tsq.errors import UserError
from tsq.fileio import hash_files

_ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")


def adapter_fingerprint(adapter: Path) -> str:
    """Content hash of a saved PEFT adapter; a retrained adapter at the same path gets a new one."""
    adapter = Path(adapter)
    if not (adapter / "adapter_config.json").is_file():
        raise UserError(f"{adapter}: not a PEFT adapter directory (no adapter_config.json)")
    return hash_files(adapter / name for name in _ADAPTER_FILES if (adapter / name).is_file())[:16]
