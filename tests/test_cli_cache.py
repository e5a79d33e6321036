"""`tsq cache ls|clear` on a real cache directory."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tsq.cache import Cache, content_key
from tsq.cli.cache import human_size
from tsq.cli.main import app


@pytest.fixture
def filled_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TSQ_HOME", str(tmp_path / "home"))
    cache = Cache(tmp_path / "cache")
    for i in range(3):
        cache.get_or_compute_json("samples", content_key(i=i), lambda i=i: {"x": [i] * 100})
    cache.get_or_compute_json("candidates", content_key(i=0), lambda: [1, 2, 3])
    return cache.root


def _run(*args: str, input: str | None = None):
    return CliRunner().invoke(app, list(args), input=input)


def test_ls_lists_stages_with_counts(filled_cache: Path) -> None:
    result = _run("cache", "ls", "--cache-dir", str(filled_cache))
    assert result.exit_code == 0, result.output
    lines = {line.split("│")[1].strip(): line for line in result.output.splitlines() if line.count("│") >= 3}
    assert "3" in lines["samples"].split("│")[2]
    assert "1" in lines["candidates"].split("│")[2]
    assert "4" in lines["total"].split("│")[2]
    only = _run("cache", "ls", "--stage", "candidates", "--cache-dir", str(filled_cache))
    assert "candidates" in only.output and "samples" not in only.output


def test_clear_one_stage_then_all(filled_cache: Path) -> None:
    result = _run("cache", "clear", "--stage", "samples", "--yes", "--cache-dir", str(filled_cache))
    assert result.exit_code == 0 and "removed 3 entries" in result.output
    assert [e.stage for e in Cache(filled_cache).entries()] == ["candidates"]
    declined = _run("cache", "clear", "--cache-dir", str(filled_cache), input="n\n")
    assert declined.exit_code != 0
    assert len(list(Cache(filled_cache).entries())) == 1
    accepted = _run("cache", "clear", "--cache-dir", str(filled_cache), input="y\n")
    assert accepted.exit_code == 0 and "removed 1 entries" in accepted.output
    assert list(Cache(filled_cache).entries()) == []


def test_ls_of_an_empty_cache_uses_tsq_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TSQ_HOME", str(tmp_path))
    result = _run("cache", "ls")
    assert result.exit_code == 0 and "empty" in result.output and str(tmp_path) in result.output


def test_human_size() -> None:
    assert [human_size(n) for n in (0, 1023, 1536, 5 * 1024**2, 3 * 1024**3)] == [
        "0 B",
        "1023 B",
        "1.5 KiB",
        "5.0 MiB",
        "3.0 GiB",
    ]


@pytest.mark.slow
def test_warm_fills_every_shared_stage_once_even_from_two_workers(tsq_home: Path, tmp_path: Path) -> None:
    """Two `tsq cache warm` processes at once: one computes each shared stage, the other waits on the lock
    and reads it (no stage is computed twice); a trial afterwards computes only its own evaluation."""
    import os
    import subprocess
    import sys

    import yaml

    from objectives.tokensqueeze.trial import run_trial
    from tsq.recipe import TrialContext, load_spec, scope_of

    smoke = yaml.safe_load((Path(__file__).resolve().parents[1] / "sweeps" / "smoke.yaml").read_text())
    spec_path = tmp_path / "warm.yaml"
    spec_path.write_text(yaml.safe_dump({**smoke, "cache_dir": str(tmp_path / "cache")}))
    env = {**os.environ, "TSQ_HOME": str(tsq_home), "TSQ_NO_PROGRESS": "1"}
    cmd = [sys.executable, "-m", "tsq", "cache", "warm", str(spec_path)]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=900) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outputs]

    def misses(out: str) -> dict[str, int]:
        rows = [line.strip("│ ").split("│") for line in out.splitlines() if line.startswith("│")]
        return {r[0].strip(): int(r[2]) for r in rows}

    first, second = (misses(out) for out, _ in outputs)
    for stage in ("samples", "candidates", "ref_logps"):
        assert min(first.get(stage, 0), second.get(stage, 0)) == 0, (first, second)  # computed once
        assert max(first.get(stage, 0), second.get(stage, 0)) > 0

    spec = load_spec(spec_path)
    cache = Cache(tmp_path / "cache")
    ctx = TrialContext(cache=cache, out_dir=tmp_path / "trial", scope=scope_of(spec.study))
    result = run_trial(spec, spec.params, ctx)
    stats = result.stats["cache"]
    assert stats["samples"]["misses"] == 1  # its own evaluation, nothing shared
    assert stats["candidates"]["misses"] == 0 and stats["ref_logps"]["misses"] == 0
    assert result.stats["training"]["ref_logps_computed_ahead"] == 0
