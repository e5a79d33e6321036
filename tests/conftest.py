"""Shared fixtures.

`tsq_home`: one private TSQ_HOME for the whole test session (autouse), shared by every test, CLI subprocess
and worker process; tests never touch the user's ~/.cache/tsq.
`tiny_model_dir`: the tiny model's "test" variant, as shipped with tsq (its checksums verified).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def tsq_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    # TSQ_TEST_HOME keeps caches between local runs; CI always starts from a fresh one.
    home = Path(os.environ.get("TSQ_TEST_HOME") or tmp_path_factory.mktemp("tsq_home"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TSQ_HOME", str(home))
        mp.setenv("WANDB_MODE", "offline")
        yield home


@pytest.fixture(scope="session")
def tiny_model_dir(tsq_home: Path) -> Path:
    """A real HF model directory (tokenizer, chat template, weights): the shipped "test" variant.

    Shipped rather than built per test session: loading it is instant, a build took ~90 s of every run.
    """
    from tsq.engines.tiny_model import tiny_model

    return tiny_model("test")
