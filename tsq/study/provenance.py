"""What every trial records about the code that ran it: package versions and the git commit."""

from __future__ import annotations

import importlib.metadata
import math
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PACKAGES = ("tsq", "torch", "transformers", "trl", "peft", "optuna", "wandb", "vllm")


def provenance() -> dict[str, Any]:
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            continue
    commit = None
    try:
        repo = Path(__file__).resolve().parents[2]
        out = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        commit = out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass  # not a git checkout (an installed wheel): the versions identify the code
    return {"versions": versions, "git_commit": commit}


def json_safe(value: Any) -> Any:
    """User attrs must be JSON: paths become strings, tuples lists, NaN None."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
