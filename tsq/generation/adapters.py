"""Identity of a PEFT LoRA adapter directory: a hash of its config and weights (not its path)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from tsq.errors import UserError

_ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")


def adapter_fingerprint(adapter: Path) -> str:
    """Content hash of a saved PEFT adapter; a retrained adapter at the same path gets a new one."""
    adapter = Path(adapter)
    if not (adapter / "adapter_config.json").is_file():
        raise UserError(f"{adapter}: not a PEFT adapter directory (no adapter_config.json)")
    digest = hashlib.sha256()
    for name in _ADAPTER_FILES:
        path = adapter / name
        if path.is_file():
            digest.update(name.encode())
            with path.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()[:16]
