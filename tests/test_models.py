"""Model resolution and identity: tiny, local dir or local HF cache; weight fingerprints; loader errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from tsq.config.spec import ModelSpec
from tsq.engines.models import load_causal_lm, load_tokenizer, model_fingerprint, resolve_model
from tsq.errors import UserError


def test_resolve_local_directory(tiny_model_dir: Path) -> None:
    assert resolve_model(ModelSpec(path=str(tiny_model_dir))) == tiny_model_dir


def test_resolve_tiny_is_the_shipped_build(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TSQ_HOME", str(tmp_path))  # an empty home: nothing is built
    assert resolve_model(ModelSpec(path="tiny", tiny_variant="test")) == tiny_model_dir
    assert not (tmp_path / "models").exists()


def test_resolve_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))  # an empty local HF cache
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        UserError, match=r"model\.path: .*not-a-user/not-a-model.*hf download not-a-user/not-a-m"
    ):
        resolve_model(ModelSpec(path="not-a-user/not-a-model"))
    with pytest.raises(UserError, match=r"model\.path: .* does not exist"):
        resolve_model(ModelSpec(path=str(tmp_path / "missing")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"model\.path: .*not a model directory"):
        resolve_model(ModelSpec(path=str(tmp_path / "empty")))


def test_fingerprint_follows_the_weights(tiny_model_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    assert model_fingerprint(copy) == model_fingerprint(tiny_model_dir)  # content, not name
    weights = load_file(copy / "model.safetensors")
    name = next(iter(weights))
    weights[name] = weights[name] + 1.0
    save_file(weights, copy / "model.safetensors", metadata={"format": "pt"})
    assert model_fingerprint(copy) != model_fingerprint(tiny_model_dir)


def test_loaders(tiny_model_dir: Path, tmp_path: Path) -> None:
    assert load_tokenizer(tiny_model_dir).eos_token == "</s>"
    assert load_causal_lm(tiny_model_dir).config.model_type == "llama"
    with pytest.raises(UserError, match=r"model\.path: cannot load a causal LM"):
        load_causal_lm(tmp_path)
    with pytest.raises(UserError, match=r"model\.path: cannot load a tokenizer"):
        load_tokenizer(tmp_path)


def test_download_is_explicit_and_its_failure_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import: set it here
    spec = ModelSpec(path="not-a-user/not-a-model", download=True)
    with pytest.raises(
        UserError, match=r"model\.path: could not download not-a-user/not-a-model .*hf auth login"
    ):
        resolve_model(spec)


def test_cpu_loading_is_unchanged(tiny_model_dir: Path) -> None:
    """On CPU no device map (as before); with CUDA the default is to load onto the GPU directly."""
    import torch

    for device in (None, "cpu"):
        model = load_causal_lm(tiny_model_dir, device=device)
        on_gpu = torch.cuda.is_available() and device is None
        assert next(model.parameters()).device.type == ("cuda" if on_gpu else "cpu")
        assert hasattr(model, "hf_device_map") == on_gpu
