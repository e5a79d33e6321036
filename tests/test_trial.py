"""One trial end to end on the tiny test model, through the CLI and in-process.

A second trial (other α, ε, λ, η) reuses every parameter-independent stage: no self-sampling, no candidate
generation, no reference pass (the first trial computed reference log-probs for every sequence a trial of
the study can train on); only the trial's own evaluation samples anew.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from objectives.tokensqueeze.config import TrialParams
from objectives.tokensqueeze.trial import TrialContext, reference_cover, run_trial
from tsq.cache import Cache
from tsq.data.traces import Response
from tsq.method.select import Pair
from tsq.recipe import load_spec

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def smoke_spec(tmp_path: Path, tiny_model_dir: Path) -> Path:
    raw = yaml.safe_load((ROOT / "sweeps" / "smoke.yaml").read_text())
    raw["cache_dir"] = str(tmp_path / "cache")
    path = tmp_path / "smoke.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.slow
def test_trial_cli_then_warm_trial_reuses_caches(smoke_spec: Path, tmp_path: Path) -> None:
    out = tmp_path / "trial1"
    cmd = [sys.executable, "-m", "tsq", "trial", "run", str(smoke_spec), "--set", "alpha=0.2", "--set",
           "epsilon=0.01", "--set", "lambda=1.0", "--set", "eta=1.5", "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # η 1.5 is valid but outside the smoke spec's search range [0, 1]: said, then run
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: eta 1.5 is outside [0, 1], the spec's search range (study.search.eta): a sweep of this "
        "spec never runs it"
    ]
    assert "baseline" in proc.stdout and "trial" in proc.stdout and "intervals: 95%" in proc.stdout
    first = json.loads((out / "metrics.json").read_text())
    for key in ("accuracy", "len_all", "len_correct", "auc", "accuracy_delta", "token_reduction"):
        assert key in first["metrics"]
    assert (out / "adapter" / "adapter_config.json").exists()
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    assert first["stats"]["training"]["ref_logps_computed_ahead"] > 0
    assert first["stats"]["training"]["ref_logps_computed"] == 0  # the pass ahead covered its pairs

    spec = load_spec(smoke_spec)
    cache = Cache(spec.cache_dir)
    params = TrialParams(alpha=0.4, epsilon=0.02, lam=0.5, eta=0.2)
    second = run_trial(spec, params, TrialContext(cache=cache, out_dir=tmp_path / "trial2"))
    stages = cache.stage_stats
    # self-samples and baseline are hits; the only sampling miss is this trial's own evaluation
    assert stages["samples"] == {"hits": 2, "misses": 1}
    assert stages["candidates"]["misses"] == 0  # candidates cover the study's largest alpha
    # other pairs and other refined texts (α, ε), yet no reference pass: trial 1 covered them ahead
    assert second.stats["training"]["ref_logps_computed"] == 0
    assert second.stats["training"]["ref_logps_computed_ahead"] == 0
    assert stages["ref_logps"]["misses"] == 0
    assert second.params == {"alpha": 0.4, "epsilon": 0.02, "lambda": 0.5, "eta": 0.2}
    assert second.baseline == first["baseline"]

    # same pairs (same α, ε), other λ and η
    third = run_trial(
        spec,
        TrialParams(alpha=0.4, epsilon=0.02, lam=1.5, eta=0.8),
        TrialContext(cache=Cache(spec.cache_dir), out_dir=tmp_path / "trial3"),
    )
    assert third.stats["training"]["ref_logps_computed"] == 0
    assert third.stats["cache"]["candidates"]["misses"] == 0


def test_reference_cover_holds_each_sequence_once() -> None:
    def r(text: str, correct: bool) -> Response:
        return Response(text=text, n_tokens=len(text.split()), correct=correct, finish_reason="stop")

    samples = {"p1": [r("short", True), r("long one", True), r("wrong x y", False)], "p2": [r("a b", True)]}
    cover = [Pair("p1", "P1", "short", "wrong x y"), Pair("p2", "P2", "a b", "a b")]
    reachable = {("P1", "short"): ["short", "sh"], ("P2", "a b"): ["a b"]}
    pairs = reference_cover(cover, reachable, samples)
    sides = {prompt: [] for prompt in ("P1", "P2")}
    for p in pairs:
        sides[p.prompt] += [p.chosen, p.rejected]
    # P1: the original, its refinement "sh", then every other response; P2's lone sequence pairs with itself
    assert sides["P1"] == ["short", "sh", "long one", "wrong x y"]
    assert sides["P2"] == ["a b", "a b"]


@pytest.mark.slow
def test_a_failed_trial_is_one_line_and_exit_1(tiny_model_dir: Path, tmp_path: Path) -> None:
    # 2 tokens: no self-sample reaches an answer, so selection forms no pairs (TrialFailed)
    raw = yaml.safe_load((ROOT / "sweeps" / "smoke.yaml").read_text())
    raw["cache_dir"] = str(tmp_path / "cache")
    raw["data"] = {"train": {"n": 3}, "eval": {"n": 2}, "max_steps": 3}
    raw["sampling"]["max_new_tokens"] = raw["evaluation"]["max_new_tokens"] = 2
    spec = tmp_path / "short.yaml"
    spec.write_text(yaml.safe_dump(raw))
    cmd = [sys.executable, "-m", "tsq", "trial", "run", str(spec), "--out", str(tmp_path / "t")]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"trial failed: selection produced no pairs (alpha=0.2, q-dyn) (tsq sweep check {spec} tells what it "
        "can beforehand)"
    )


@pytest.mark.slow  # about a minute: a real SIGINT chain, like tests/test_crash.py
def test_ctrl_c_says_what_stopped_and_leaves_no_empty_folder(tmp_path: Path) -> None:
    """A real SIGINT to `tsq trial run` while its program runs: one line naming the trial and that nothing
    was recorded, exit 130, the empty trainer/ folder gone (the adapter it had trained is named, and kept)."""
    import signal
    import time

    from programs import env_with_tests_on_path, synthetic_spec

    spec = synthetic_spec(tmp_path / "spec.yaml", "ctrlc", 1, program="programs:interrupted_trial")
    out = tmp_path / "runs" / "t"
    cmd = [sys.executable, "-m", "tsq", "trial", "run", str(spec), "--out", str(out), "--set", "alpha=0.3"]
    env = {**env_with_tests_on_path(), "TSQ_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (out.parent / "started").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"interrupted: the trial of {spec} (alpha=0.3, eta=0.5) stopped before it "
        f"finished; nothing was recorded (no {out / 'metrics.json'}); left in {out} by the interrupted run: "
        "adapter/; finished cache stages are kept, so a rerun starts after them"
    )
    assert sorted(p.name for p in out.iterdir()) == ["adapter"]  # trainer/ (empty) is gone
