"""Device/dtype selection on this CPU machine (the GPU branches run in the lead's GPU check)."""

from __future__ import annotations

import pytest
import torch

from tsq.devices import mixed_precision_flags, pick_device, pick_dtype
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
