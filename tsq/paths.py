"""Where tsq keeps its state: caches, built models, W&B offline runs."""

import os
from pathlib import Path


def tsq_home() -> Path:
    """Root of tsq's state; `TSQ_HOME` overrides the default `~/.cache/tsq`."""
    return Path(os.environ.get("TSQ_HOME", Path.home() / ".cache" / "tsq")).expanduser()


def default_cache_dir() -> Path:
    return tsq_home() / "cache"


def tiny_model_dir(variant: str = "default") -> Path:
    return tsq_home() / "models" / f"tiny-{variant}"
