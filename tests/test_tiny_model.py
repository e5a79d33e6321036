"""The tiny model: a real HF model directory with a round-tripping tokenizer and a chat template, shipped
with its checksums; a rebuild is compared with the shipped weights."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from tsq.cli.main import app
from tsq.data.tiny_world import random_training_example, tiny_problem_set
from tsq.engines import tiny_model as tm
from tsq.engines.models import model_fingerprint
from tsq.engines.tiny_model import (
    BUILD_INFO,
    TINY_BUILDS,
    build_tiny,
    build_tokenizer,
    build_warning,
    compare_weights,
    ship,
    tiny_model,
)
from tsq.errors import UserError


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory):
    """The tokenizer as every stage sees it: saved, then reloaded through AutoTokenizer."""
    path = tmp_path_factory.mktemp("tok")
    build_tokenizer().save_pretrained(path)
    return AutoTokenizer.from_pretrained(path)


def test_tokenizer_round_trips_generated_text(tokenizer) -> None:
    rng = random.Random(0)
    for _ in range(300):
        question, trace = random_training_example(rng, 1, 8, slip_rate=0.2)
        for text in (question, trace):
            ids = tokenizer.encode(text, add_special_tokens=False)
            assert tokenizer.unk_token_id not in ids
            assert tokenizer.decode(ids) == text
    # the step separator is one token of its own
    assert len(tokenizer.encode(" \n\n ", add_special_tokens=False)) == 1


def test_chat_template(tokenizer) -> None:
    question = tiny_problem_set("eval", 1).problems[0].question
    messages = [{"role": "user", "content": question}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt == f"<s><user> {question} <assistant>"
    full = tokenizer.apply_chat_template(
        [*messages, {"role": "assistant", "content": "answer : 3"}], tokenize=False
    )
    ids = tokenizer.encode(full, add_special_tokens=False)
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == f"{question} answer : 3"


def test_built_model_loads_and_answers_in_format(tiny_model_dir: Path) -> None:
    info = json.loads((tiny_model_dir / BUILD_INFO).read_text())
    assert info["digest"] == TINY_BUILDS["test"].digest()
    assert info["settings"]["variant"] == "test"
    # which CPU kernels built it: the same settings give other weights on other kernels
    assert set(info["machine"]) == {"torch", "cpu_capability"}
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    # AutoTokenizer on the model dir (with its config.json) must give the word-level tokenizer as saved
    assert tok.convert_ids_to_tokens(tok.encode("what is 13", add_special_tokens=False)) == [
        "what",
        "is",
        "13",
    ]
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.config.model_type == "llama"
    assert model.config.hidden_size // model.config.num_attention_heads == 64
    question = tiny_problem_set("eval", 1).problems[0].question
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
    )
    enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**enc, do_sample=False, max_new_tokens=200)
    text = tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "=" in text  # even the briefly trained test model has learnt the trace format
    assert out[0, -1].item() == tok.eos_token_id  # and stops


def test_both_variants_ship_with_the_code_settings_and_checksums() -> None:
    for variant in TINY_BUILDS:
        path = tiny_model(variant)  # raises on a stale or altered shipped build
        info = json.loads((path / BUILD_INFO).read_text())
        assert sorted(info["files"]) == sorted(p.name for p in path.iterdir() if p.name != BUILD_INFO)


@pytest.fixture
def shipped_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the shipped builds that a test may alter; `tiny_model` reads it instead."""
    root = tmp_path / "assets"
    shutil.copytree(tm.SHIPPED_ROOT, root)
    monkeypatch.setattr(tm, "SHIPPED_ROOT", root)
    return root / "tiny-test"


def test_an_altered_shipped_file_is_refused_naming_file_and_checksum(shipped_copy: Path) -> None:
    weights = shipped_copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    want = json.loads((shipped_copy / BUILD_INFO).read_text())["files"]["model.safetensors"]
    refusal = rf"model\.safetensors: sha256 \w{{16}} is not the shipped {want[:16]} \(corrupted or altered\)"
    with pytest.raises(UserError, match=refusal):
        tiny_model("test")
    weights.unlink()
    with pytest.raises(UserError, match=r"model\.safetensors: sha256 \(missing\)"):
        tiny_model("test")


def test_a_shipped_build_of_other_settings_is_refused(shipped_copy: Path) -> None:
    info = json.loads((shipped_copy / BUILD_INFO).read_text())
    info["digest"] = "0" * 16  # as after a BUILD_FORMAT bump without a new build shipped
    (shipped_copy / BUILD_INFO).write_text(json.dumps(info))
    with pytest.raises(UserError, match=r"shipped with settings 0{16}, the code's tiny-test settings are"):
        tiny_model("test")


def test_compare_weights_counts_the_tensors_that_differ(tiny_model_dir: Path, tmp_path: Path) -> None:
    same = compare_weights(tiny_model_dir, tiny_model_dir)
    assert same.identical and same.max_abs_diff == 0.0 and same.n_tensors > 10
    other = tmp_path / "other"
    shutil.copytree(tiny_model_dir, other)
    weights = load_file(str(other / "model.safetensors"))
    name = sorted(weights)[0]
    weights[name] = weights[name].clone()
    weights[name].view(-1)[3] += 0.25
    save_file(weights, str(other / "model.safetensors"), metadata={"format": "pt"})
    diff = compare_weights(tiny_model_dir, other)
    assert (diff.n_different, diff.n_tensors) == (1, same.n_tensors)
    assert diff.max_abs_diff == pytest.approx(0.25, abs=1e-6)


def test_ship_records_checksums_that_tiny_model_accepts(shipped_copy: Path, tmp_path: Path) -> None:
    build = tmp_path / "build"
    shutil.copytree(shipped_copy, build)
    (build / BUILD_INFO).write_text(
        json.dumps({k: v for k, v in json.loads((build / BUILD_INFO).read_text()).items() if k != "files"})
    )
    before = model_fingerprint(shipped_copy)
    assert ship(build, "test") == shipped_copy
    assert tiny_model("test") == shipped_copy and model_fingerprint(shipped_copy) == before
    assert not [p for p in shipped_copy.parent.iterdir() if p.name.startswith(".")]  # no temp dir left


@pytest.mark.slow
def test_rebuild_is_cached_and_compared_with_the_shipped_weights(
    tsq_home: Path, tiny_model_dir: Path
) -> None:
    """`tsq model build-tiny` rebuilds under TSQ_HOME (a cache hit the second time) and says whether the
    rebuild reproduces the shipped weights; the comparison line matches what compare_weights finds."""
    result = CliRunner().invoke(app, ["model", "build-tiny", "--variant", "test"])
    assert result.exit_code == 0, result.output
    built = tsq_home / "models" / "tiny-test"
    assert f"tiny-test: {built}" in result.output
    assert f"on {torch.backends.cpu.get_cpu_capability()} CPU kernels" in result.output
    if compare_weights(built, tiny_model_dir).identical:
        assert f"matches the shipped weights ({tiny_model_dir}" in result.output
    else:
        assert "differs from the shipped weights" in result.output
    before = (built / "model.safetensors").stat().st_mtime_ns
    assert build_tiny("test") == built
    assert (built / "model.safetensors").stat().st_mtime_ns == before
    # no temp dirs left beside it (other tests may have put other models in the session's TSQ_HOME)
    assert not [p.name for p in built.parent.iterdir() if p.name.startswith(".tiny-test-")]


def test_settings_digest_depends_on_the_settings() -> None:
    assert TINY_BUILDS["test"].digest() != TINY_BUILDS["default"].digest()
    assert TINY_BUILDS["test"].digest() == TINY_BUILDS["test"].digest()


def test_a_default_build_above_the_working_loss_is_flagged() -> None:
    settings = {"variant": "default"}
    assert build_warning({"settings": settings, "final_loss": 0.0986}) is None  # the reference build
    line = build_warning({"settings": settings, "final_loss": 0.1398})  # seed 1 of the same settings
    assert line is not None and line.startswith("warning: this build ended at loss 0.1398, above 0.11")
    assert build_warning({"settings": {"variant": "test"}, "final_loss": 1.5}) is None  # tests only
