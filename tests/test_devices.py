"""Device/dtype selection on this CPU machine (the GPU branches run in the lead's GPU check)."""

from __future__ import annotations

import os

import pytest
import torch

from tsq.devices import (
    expandable_segments_setting,
    gpu_assignment,
    mixed_precision_flags,
    pick_device,
    pick_dtype,
    use_expandable_segments,
    visible_gpus,
)
from tsq.errors import UserError


def test_auto_is_float32_on_cpu_and_explicit_choices_are_honoured() -> None:
    assert pick_dtype("auto", "cpu") == torch.float32
    assert pick_dtype("bfloat16", "cpu") == torch.bfloat16
    assert pick_dtype("float16", torch.device("cpu")) == torch.float16
    assert pick_dtype("float32", "cpu") == torch.float32


def test_unknown_dtype_is_a_user_error() -> None:
    with pytest.raises(UserError, match=r"model\.dtype: unknown dtype 'fp8'"):
        pick_dtype("fp8", "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU branch")
def test_cpu_only_machine() -> None:
    assert pick_device() == torch.device("cpu")
    with pytest.raises(UserError, match="CUDA is not available"):
        pick_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_auto_dtype() -> None:
    expected = torch.bfloat16 if torch.cuda.get_device_capability()[0] >= 8 else torch.float16
    assert pick_dtype("auto", pick_device()) == expected


def test_mixed_precision_flags() -> None:
    assert mixed_precision_flags(torch.bfloat16) == {"bf16": True, "fp16": False}
    assert mixed_precision_flags(torch.float16) == {"bf16": False, "fp16": True}
    assert mixed_precision_flags(torch.float32) == {"bf16": False, "fp16": False}


def test_gpus_per_worker_0_hides_the_gpus_from_every_worker(tmp_path) -> None:
    """`--gpus-per-worker 0` on a GPU node: each worker's environment hides every GPU (issue 29: they all
    landed on GPU 0, and the second engine failed vLLM's free-memory check)."""
    from tsq.study.launch import worker_command
    from tsq.study.storage import parse_storage_url

    storage = parse_storage_url(f"sqlite:///{tmp_path / 's.db'}")
    visible = ["0", "1"]
    for index, device in enumerate(gpu_assignment(2, 0, visible)):
        args, env = worker_command(
            tmp_path / "spec.yaml",
            storage,
            "s",
            2,
            "none",
            index,
            device,
            environ={"CUDA_VISIBLE_DEVICES": "0,1"},
        )
        assert visible_gpus(env) == []  # what the worker sees
        assert args[args.index("--gpus-per-worker") + 1] == "0"
    for index, device in enumerate(gpu_assignment(2, 1, visible)):
        args, env = worker_command(tmp_path / "spec.yaml", storage, "s", 2, "none", index, device, environ={})
        assert visible_gpus(env) == [visible[index]]
        assert args[args.index("--gpus-per-worker") + 1] == "1"
    assert gpu_assignment(2, 0, []) == [None, None]  # nothing to hide


def test_expandable_segments_only_where_cuda_runs_and_the_user_chose_nothing() -> None:
    assert expandable_segments_setting({}, cuda=True) == "expandable_segments:True"
    assert expandable_segments_setting({}, cuda=False) is None
    assert (
        expandable_segments_setting({"PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:512"}, cuda=True) is None
    )
    assert expandable_segments_setting({"PYTORCH_ALLOC_CONF": "x:1"}, cuda=True) is None
    # set at run time in this process only: the environment an engine process inherits stays as it was
    before = dict(os.environ)
    use_expandable_segments()
    assert dict(os.environ) == before
