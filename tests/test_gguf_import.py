"""Imported GGUF models (tsq.engines.gguf_import) without a GGUF file: names, lookup and the checksum record.

The import itself (a real GGUF file through transformers) runs in tests/test_real_model.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tsq.config.spec import ModelSpec
from tsq.engines.gguf_import import (
    IMPORT_INFO,
    default_name,
    find_gguf,
    imported_dir,
    imported_model,
    is_import_name,
)
from tsq.engines.models import resolve_model
from tsq.errors import UserError
from tsq.fileio import record_checksums


def _fake_import(name: str) -> Path:
    """A folder as import_gguf leaves it: files and their recorded checksums."""
    path = imported_dir(name)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text('{"model_type": "llama"}')
    (path / "model.safetensors").write_bytes(b"weights" * 100)
    info = {
        "gguf": "/x/Model.Q4_1.gguf",
        "gguf_sha256": "0" * 64,
        "files": record_checksums(path, ["config.json", "model.safetensors"]),
    }
    (path / IMPORT_INFO).write_text(json.dumps(info))
    return path


def test_names() -> None:
    assert default_name(Path("SmolLM2-135M-Instruct.Q4_1.gguf")) == "smollm2-135m-instruct-q4_1"
    assert is_import_name("smollm2-135m-instruct-q4_1")
    for path in ("Qwen/Qwen2-0.5B", "./model", "/abs/model", "~/m", "Upper"):
        assert not is_import_name(path), path


def test_a_spec_names_an_imported_folder_and_its_files_are_verified() -> None:
    path = _fake_import("fake-model")
    assert resolve_model(ModelSpec(path="fake-model")) == path
    (path / "model.safetensors").write_bytes(b"altered" * 100)
    with pytest.raises(UserError) as err:
        resolve_model(ModelSpec(path="fake-model"))
    message = str(err.value)
    assert "\n" not in message and f"{path / 'model.safetensors'}: sha256 " in message
    assert (
        "is not the imported" in message
        and "tsq model import-gguf /x/Model.Q4_1.gguf --name fake-model --force" in message
    )
    (path / "model.safetensors").unlink()
    with pytest.raises(UserError, match=r"sha256 \(missing\) is not the imported"):
        imported_model("fake-model")


def test_a_name_never_imported_is_one_line_with_the_command() -> None:
    with pytest.raises(UserError) as err:
        resolve_model(ModelSpec(path="never-imported"))
    assert "model.path: never-imported is not an imported model" in str(err.value)
    assert "tsq model import-gguf FILE.gguf --name never-imported" in str(err.value)


def test_find_gguf_refuses_what_is_not_one(tmp_path: Path) -> None:
    other = tmp_path / "model.bin"
    other.write_bytes(b"x")
    with pytest.raises(UserError, match=r"not a \.gguf file"):
        find_gguf(str(other))
    with pytest.raises(UserError, match=r"neither a \.gguf file nor an installed Python package"):
        find_gguf("no-such-package-tsq")
    with pytest.raises(UserError, match=r"holds 0 \.gguf files"):
        find_gguf("pytest")
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert find_gguf(str(gguf)) == gguf
