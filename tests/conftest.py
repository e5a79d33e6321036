"""Shared fixtures.

`tsq_home`: one private TSQ_HOME for the whole test session (autouse), so the tiny test model is built once
and every test, CLI subprocess and worker process sees it; tests never touch the user's ~/.cache/tsq.
`tiny_model_dir`: the tiny model's "test" variant, built once per test session.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def tsq_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    # TSQ_TEST_HOME keeps the built test model between local runs; CI always starts from a fresh one.
    home = Path(os.environ.get("TSQ_TEST_HOME") or tmp_path_factory.mktemp("tsq_home"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TSQ_HOME", str(home))
        mp.setenv("WANDB_MODE", "offline")
        yield home


@pytest.fixture(scope="session")
def tiny_model_dir(tsq_home: Path) -> Path:
    """A real HF model directory (tokenizer, chat template, weights) under the session TSQ_HOME.

    Built with the "test" variant of `tsq.tiny_model.build_tiny` (a few tens of seconds on CPU).
    """
    from tsq.tiny_model import build_tiny

    return build_tiny("test")
