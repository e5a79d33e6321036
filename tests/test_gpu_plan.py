"""The GPU memory and time plan (tsq/engines/gpu_plan.py, objectives/tokensqueeze/plan.py) against
hand-computed
values, on the model configs tsq ships for the two real-model specs; `tsq sweep check` prints it; the docs
show what it prints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from objectives.tokensqueeze.config import TokenSqueezeSpec as Spec
from objectives.tokensqueeze.plan import check_gpu_plan, gpu_plan
from tsq.engines.gpu_plan import (
    CUDA_CONTEXT,
    H100_80GB,
    ModelShape,
    engine_asleep_bytes,
    engine_items,
    find_config,
    read_config,
    scoring_items,
    shipped_config,
    training_items,
)
from tsq.recipe import load_spec

ROOT = Path(__file__).resolve().parents[1]
SPECS = {size: ROOT / "sweeps" / f"math500-r1-distill-qwen-{size}.yaml" for size in ("1.5b", "7b")}
IDS = {"1.5b": "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "7b": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"}


def shape(size: str) -> ModelShape:
    path = shipped_config(IDS[size])
    assert path is not None
    return ModelShape.from_config(read_config(path))


def test_shipped_configs_give_the_models_sizes() -> None:
    small, large = shape("1.5b"), shape("7b")
    # parameter counts as transformers counts them for Qwen2ForCausalLM built from these configs
    assert small.params == 1_777_088_000 and large.params == 7_615_616_512
    # KV cache per token: 2 (K, V) x 28 layers x KV heads x 128 x 2 bytes
    assert small.kv_bytes_per_token() == 2 * 28 * 2 * 128 * 2 == 28_672
    assert large.kv_bytes_per_token() == 2 * 28 * 4 * 128 * 2 == 57_344
    # LoRA r = 16 on all 7 projections: 16 x 28 x sum(in + out); 1.5B: q 1536+1536, k and v 1536+256,
    # o 1536+1536, gate and up 1536+8960, down 8960+1536 = 41,216
    assert small.lora_params(16) == 16 * 28 * 41_216 == 18_464_768
    assert small.lora_params(16, ["q_proj", "v_proj"]) == 16 * 28 * (3072 + 1792)


def test_stage_items_by_hand() -> None:
    s = shape("1.5b")
    # scoring at the 1.5B spec: 32 rows, a 4608-token trace, rows of 96 + 128 tokens, window 128
    items = scoring_items(s, 32, 4608, 224, 128)
    assert items["window logits + KL temporaries"] == 4 * 32 * 128 * 151_936 * 4
    assert items["KV expanded per row"] == 32 * (4608 + 224) * 28_672
    assert items["fp32 LM head"] == 151_936 * 1536 * 4
    # training: 8 pairs = 16 rows of 4608 tokens, checkpointed inputs of 28 layers in bf16
    train = training_items(s, 16 * 4608, 16, "all-linear", checkpointing=True)
    assert train["checkpointed layer inputs"] == 73_728 * 1536 * 2 * 28
    assert train["LoRA + Adam"] == 18_464_768 * 16
    # the engine's KV cache is what its budget leaves
    engine = engine_items(s, 10 << 30, max_lora_rank=16)
    assert engine["LoRA slots"] == 4 * 18_464_768 * 2
    assert engine["KV cache"] == (10 << 30) - sum(v for k, v in engine.items() if k != "KV cache")


@pytest.mark.parametrize("size", ["1.5b", "7b"])
def test_shipped_specs_fit_one_80gb_gpu(size: str) -> None:
    plan = check_gpu_plan(load_spec(SPECS[size]))
    assert plan is not None and plan.fits, plan.lines() if plan else None
    assert [s.name for s in plan.stages] == [
        "vLLM engine (self-samples, step rewrites, evaluation)",
        "refinement scoring",
        "reference pass",
        "LoRA training",
    ]
    asleep = engine_asleep_bytes() + CUDA_CONTEXT
    assert all(sum(s.beside.values()) == asleep for s in plan.stages[1:])  # sleep mode: the engine asleep


def _edit(size: str, **sampling) -> Spec:
    spec = load_spec(SPECS[size])
    return spec.model_copy(update={"sampling": spec.sampling.model_copy(update=sampling)})


def test_7b_without_sleep_names_the_stages_that_do_not_fit_and_the_remedy() -> None:
    plan = check_gpu_plan(_edit("7b", sleep_mode=False))
    assert plan is not None and not plan.fits
    misfits = {s.name: s.remedy for s in plan.misfits()}
    assert set(misfits) == {"refinement scoring", "reference pass", "LoRA training"}
    # scoring fits beside an engine at a lower utilisation; training beside no engine that can still run
    assert misfits["refinement scoring"].startswith(
        "set sampling.sleep_mode: true or lower sampling.gpu_memory"
    )
    assert misfits["LoRA training"].startswith("set sampling.sleep_mode: true (beside an awake engine")
    line = plan.stages[3].line()
    assert (
        "LoRA training" in line and "DOES NOT FIT" in line and "remedy: set sampling.sleep_mode: true" in line
    )
    # and the remedy holds: at the utilisation it names, scoring fits beside the awake engine
    u = float(misfits["refinement scoring"].rsplit("<= ", 1)[1])
    lowered = check_gpu_plan(_edit("7b", sleep_mode=False, gpu_memory_utilization=u))
    assert lowered is not None and lowered.stages[1].fits and lowered.stages[0].fits


def test_1_5b_fits_without_sleep_at_half_the_gpu() -> None:
    plan = check_gpu_plan(_edit("1.5b", sleep_mode=False, gpu_memory_utilization=0.5))
    assert plan is not None and plan.fits, plan.lines()


def test_an_engine_whose_kv_cache_holds_no_sequence_is_named() -> None:
    plan = check_gpu_plan(_edit("7b", gpu_memory_utilization=0.25, max_model_len=131072))
    assert plan is not None
    engine = plan.stages[0]
    assert not engine.fits and "holds no sequence of sampling.max_model_len 131072" in engine.line()
    assert engine.remedy.startswith("raise sampling.gpu_memory_utilization to >= 0.")
    assert "lower sampling.max_model_len to <=" in engine.remedy


def test_training_too_large_even_asleep_names_the_batch_size() -> None:
    spec = load_spec(SPECS["7b"])
    spec = spec.model_copy(update={"training": spec.training.model_copy(update={"batch_size": 16})})
    plan = gpu_plan(spec, shape("7b"), H100_80GB)
    training = plan.stages[3]
    assert not training.fits and training.remedy.startswith("lower training.batch_size to <= ")
    fits_at = int(training.remedy.rsplit("<= ", 1)[1])
    smaller = spec.model_copy(update={"training": spec.training.model_copy(update={"batch_size": fits_at})})
    assert gpu_plan(smaller, shape("7b"), H100_80GB).stages[3].fits


def test_config_lookup_without_download(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 8}))
    assert find_config(str(tmp_path)) == (tmp_path / "config.json", "the model folder")
    found = find_config(IDS["7b"])  # not in the local HF cache here: tsq's copy
    assert found is not None and found[0] == shipped_config(IDS["7b"])
    assert find_config("nobody/no-such-model") is None
    unknown = load_spec(SPECS["7b"]).model_copy(update={"model": {"path": "nobody/no-such-model"}})
    plan = check_gpu_plan(Spec.model_validate(unknown.model_dump()))
    assert plan is not None and plan.stages == () and "no config.json for nobody/no-such-model" in plan.title
    assert check_gpu_plan(Spec()) is None  # the tiny world on the HF backend: no GPU plan


@pytest.mark.slow  # ~50 s of CLI start-up; the plan is tested in-process above, the CLI in test_check
def test_sweep_check_prints_the_plan(tmp_path: Path) -> None:
    raw = yaml.safe_load(SPECS["7b"].read_text())
    raw["sampling"]["sleep_mode"] = False
    edited = tmp_path / "7b-no-sleep.yaml"
    edited.write_text(yaml.safe_dump(raw))
    run = [sys.executable, "-m", "tsq", "sweep", "check"]
    out = subprocess.run([*run, str(edited)], capture_output=True, text=True, check=True).stdout
    assert "GPU plan on one H100 80GB (79.6 GiB)" in out
    assert (
        "  LoRA training: " in out
        and "DOES NOT FIT" in out
        and "remedy: set sampling.sleep_mode: true" in out
    )
    as_json = [*run, str(SPECS["7b"]), "--json", "--gpu", "h200"]
    report = json.loads(subprocess.run(as_json, capture_output=True, text=True, check=True).stdout)
    assert report["gpu_plan"]["fits"] and "H200" in report["gpu_plan"]["title"]


def test_the_docs_show_the_plan_the_code_computes() -> None:
    """docs/real-models.md quotes `tsq sweep check`'s plan for both shipped specs (not arithmetic by hand)."""
    docs = (ROOT / "docs" / "real-models.md").read_text()
    for size in SPECS:
        plan = check_gpu_plan(load_spec(SPECS[size]))
        assert plan is not None
        for line in plan.lines()[1:]:  # the title names where config.json was read: machine-dependent
            assert line in docs, line
