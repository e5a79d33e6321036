"""`tsq sweep check`'s selection pre-flight (objectives.tokensqueeze.selection_check): counts on hand-made
samples, and the CLI before any sample is cached and on cached samples that give no pairs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml
from test_check import _put_samples

from objectives.tokensqueeze.config import TokenSqueezeSpec as Spec
from objectives.tokensqueeze.selection_check import summarize
from tsq.cache import Cache
from tsq.data.traces import Response


def _r(n: int, correct: bool, finish: str = "stop") -> Response:
    return Response(f"r{n}{correct}", n, correct, finish)


def test_counts_by_hand() -> None:
    spec = Spec.model_validate(
        {"sampling": {"n": 4}, "study": {"search": {"alpha": {"low": 0.1, "high": 0.5}}}}
    )
    samples = {
        # mixed, an incorrect one longer than the shortest correct: pairs (q-dyn at α 0.5: k = 1, 2 negatives)
        "a": [_r(10, True), _r(20, False), _r(30, False, "length"), _r(12, True)],
        # mixed, but every incorrect one is shorter: no pair
        "b": [_r(30, True), _r(5, False), _r(6, False), _r(7, False)],
        "c": [_r(10, True)] * 4,  # always right: no pair
        "d": [_r(40, False, "length")] * 4,  # never right: no pair
    }
    got = summarize(samples, spec)
    assert (got.n_problems, got.n_samples, got.n_correct, got.n_truncated) == (4, 4, 7, 5)
    assert (got.n_mixed, got.n_paired, got.n_pairs, got.alpha) == (2, 1, 2, 0.5)
    assert got.accuracy == 7 / 16 and not got.too_few  # 1 of 4 problems: above the 10% share
    lines = got.lines("s.yaml", 64)
    assert lines == [
        "selection: base model 43.8% correct on the train split (7 of 4 × 4 cached samples, 5 cut off at 64 "
        "tokens); 2 of 4 problems have both a correct and an incorrect sample, 1 give pairs (2 at α = 0.5)"
    ]
    none = summarize({"c": samples["c"], "d": samples["d"]}, spec)
    assert none.too_few and none.n_pairs == 0
    assert none.lines("s.yaml", 64)[1] == (
        "  warning: too few problems give pairs: no trial can form pairs: every one fails (TrialFailed); "
        "give the model problems it solves some of the time: more samples per problem (sampling.n, now 4), "
        "easier problems (data), or more tokens (sampling.max_new_tokens, now 64, 4 were cut off)"
    )


def _check(spec: Path, home: Path) -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "tsq", "sweep", "check", str(spec)],
        capture_output=True, text=True, env={**os.environ, "TSQ_HOME": str(home)}, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return [
        line for line in proc.stdout.splitlines() if line.startswith(("selection:", "  warning: too few"))
    ]


def test_cli_before_samples_then_on_samples_without_pairs(tiny_model_dir: Path, tmp_path: Path) -> None:
    raw = {
        "name": "pf",
        "model": {"path": "tiny", "tiny_variant": "test"},
        "data": {"train": {"n": 3}, "eval": {"n": 2}},
        "sampling": {"n": 2, "max_new_tokens": 8},
        "cache_dir": str(tmp_path / "cache"),
        "study": {"search": {"alpha": {"low": 0.1, "high": 0.5}}},
    }
    path = tmp_path / "pf.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert _check(path, tmp_path / "home") == [
        "selection: cannot tell yet whether the base model's self-samples give pairs (none cached for this "
        f"model, train split and sampling); to find out, sample the train split: tsq cache warm {path} (or "
        "run one trial), then check again"
    ]
    spec = Spec.model_validate(raw)
    wrong = [_r(8, False, "length"), _r(8, False, "length")]
    _put_samples(spec, Cache(tmp_path / "cache"), tiny_model_dir, {"p0": wrong, "p1": wrong, "p2": wrong})
    head, warning = _check(path, tmp_path / "home")
    assert head.startswith("selection: base model 0.0% correct on the train split (0 of 3 × 2 cached samples")
    assert (
        "no trial can form pairs" in warning and "(sampling.max_new_tokens, now 8, 6 were cut off)" in warning
    )
