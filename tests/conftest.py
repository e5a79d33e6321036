"""Shared fixtures. `tiny_model_dir`: the tiny model's "test" variant, built once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real HF model directory (tokenizer, chat template, weights) under a session-private TSQ_HOME.

    Built with the "test" variant of `tsq.tiny_model.build_tiny` (a few tens of seconds on CPU).
    """
    from tsq.tiny_model import build_tiny

    home = tmp_path_factory.mktemp("tsq_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TSQ_HOME", str(home))
        return build_tiny("test")
