"""Every shipped sweep spec and config file loads and validates (no network: nothing is resolved remotely)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tsq.data.sources import resolve_split
from tsq.recipe import load_spec

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = sorted((ROOT / "sweeps").glob("*.yaml"))
CONFIGS = sorted((ROOT / "configs").glob("accelerate-*.yaml"))


def test_the_named_sweeps_exist() -> None:
    names = {p.name for p in SWEEPS}
    assert {
        "math500-r1-distill-qwen-1.5b.yaml",
        "math500-r1-distill-qwen-7b.yaml",
        "paper-ablations-selection.yaml",
        "paper-ablations-refinement.yaml",
        "paper-ablations-loss.yaml",
    } <= names


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_sweep_spec_loads(path: Path) -> None:
    spec = load_spec(path)
    assert spec.name == path.stem  # the study name, and so its storage key, follows the file name
    assert spec.study.searched, "a sweep must search something"
    if spec.data.source != "tiny":
        # train and eval resolve to local files or hub splits without touching the network
        assert resolve_split(spec.data, "train").split and resolve_split(spec.data, "eval").split


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_accelerate_config_loads(path: Path) -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))
    assert config.num_processes > 1 and config.mixed_precision in {"bf16", "fp16"}
