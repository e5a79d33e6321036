"""The tiny model: a real HF model directory with a round-tripping tokenizer and a chat template, cached."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from tsq.cli.main import app
from tsq.data.tiny_world import random_training_example, tiny_problem_set
from tsq.tiny_model import BUILD_INFO, VARIANTS, build_tiny, build_tokenizer, build_warning


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
    assert info["digest"] == VARIANTS["test"].digest()
    assert info["settings"]["variant"] == "test"
    # which CPU kernels built it: the same settings give other weights on other kernels
    assert info["machine"] == {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
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


def test_second_build_is_a_cache_hit(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TSQ_HOME", str(tiny_model_dir.parent.parent))
    before = (tiny_model_dir / "model.safetensors").stat().st_mtime_ns
    assert build_tiny("test") == tiny_model_dir
    assert (tiny_model_dir / "model.safetensors").stat().st_mtime_ns == before
    # no temp dirs left beside it
    assert sorted(p.name for p in tiny_model_dir.parent.iterdir() if not p.name.endswith(".lock")) == [
        "tiny-test"
    ]


def test_build_command_says_what_it_built(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TSQ_HOME", str(tiny_model_dir.parent.parent))
    result = CliRunner().invoke(app, ["model", "build-tiny", "--variant", "test"])
    assert result.exit_code == 0, result.output
    assert f"tiny-test: {tiny_model_dir}" in result.output
    assert f"on {torch.backends.cpu.get_cpu_capability()} CPU kernels" in result.output


def test_settings_digest_depends_on_the_settings() -> None:
    assert VARIANTS["test"].digest() != VARIANTS["default"].digest()
    assert VARIANTS["test"].digest() == VARIANTS["test"].digest()


def test_a_default_build_above_the_working_loss_is_flagged() -> None:
    settings = {"variant": "default"}
    assert build_warning({"settings": settings, "final_loss": 0.0986}) is None  # the reference build
    line = build_warning({"settings": settings, "final_loss": 0.1398})  # seed 1 of the same settings
    assert line is not None and line.startswith("warning: this build ended at loss 0.1398, above 0.11")
    assert build_warning({"settings": {"variant": "test"}, "final_loss": 1.5}) is None  # tests only
