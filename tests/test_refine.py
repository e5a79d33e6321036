"""KL-constrained step refinement: window KL by hand, ε threshold semantics, the tiny model end to end.

Step boundaries under a byte-level BPE and the noise floor on a random Qwen2: tests/test_refine_bpe.py.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tsq.cache import Cache
from tsq.config.pipeline import RefinementSpec
from tsq.data.tiny_world import ChainProblem
from tsq.engines.candidate_store import CACHE_STAGE, load_candidates, store_candidates
from tsq.engines.generation.base import Completion
from tsq.engines.refine import (
    KL_NOISE_FLOOR,
    _keep,
    _plan,
    _StepJob,
    compute_candidates,
    encode_prefix,
    kl_noise_floor,
    score_step,
    step_candidates,
    window_kl,
)
from tsq.method.refinement import Candidate, StepCandidates, TraceCandidates, refine_trace


def _logits(*probs: list[float]) -> torch.Tensor:
    """[1, T, V] logits whose softmax is the given distributions (log-probs plus an arbitrary shift)."""
    return torch.log(torch.tensor([probs], dtype=torch.float64)) + 3.0


P = _logits([0.5, 0.25, 0.25], [1 / 3, 1 / 3, 1 / 3])
Q = _logits([0.25, 0.5, 0.25], [0.5, 0.25, 0.25])
# position 1: 0.5 ln 2 + 0.25 ln(1/2) = 0.25 ln 2
# position 2: (1/3) ln((1/3)^3 / (0.5 · 0.25 · 0.25)) = ln(32/27) / 3
KL1 = 0.25 * math.log(2)
KL2 = math.log(32 / 27) / 3


def test_window_kl_hand_values() -> None:
    assert window_kl(P, Q).tolist() == pytest.approx([(KL1 + KL2) / 2], abs=1e-7)
    assert window_kl(P, Q, reduction="sum").tolist() == pytest.approx([KL1 + KL2], abs=1e-7)
    assert window_kl(P, Q, mask=torch.tensor([[True, False]])).tolist() == pytest.approx([KL1], abs=1e-7)
    # batched, with a broadcast reference row; KL(p‖p) = 0
    both = window_kl(P, torch.cat([Q, P]))
    assert both.tolist() == pytest.approx([(KL1 + KL2) / 2, 0.0], abs=1e-7)
    assert window_kl(P, P).item() == 0.0
    # direction matters: KL(q‖p) differs from KL(p‖q)
    assert window_kl(Q, P).item() != pytest.approx(window_kl(P, Q).item(), abs=1e-3)
    assert window_kl(P, Q, mask=torch.tensor([[False, False]])).tolist() == [0.0]
    with pytest.raises(ValueError, match="kl_reduction"):
        window_kl(P, Q, reduction="max")  # type: ignore[arg-type]


def _naive_kl64(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    logp, logq = torch.log_softmax(p.double(), -1), torch.log_softmax(q.double(), -1)
    return (logp.exp() * (logp - logq)).sum(-1).mean(-1)


def test_window_kl_is_precise_for_nearly_identical_rows() -> None:
    """float32 inputs, float64-accurate KL: the regime ε's low end lives in (KL ~ 1e-9 … 1e-5)."""
    gen = torch.Generator().manual_seed(0)
    p = (torch.randn(1, 4, 5000, generator=gen, dtype=torch.float64) * 4).float()
    for scale, rel in ((1e-2, 1e-3), (1e-4, 1e-2)):
        q = (p.double() + scale * torch.randn(p.shape, generator=gen, dtype=torch.float64)).float()
        exact = _naive_kl64(p, q).item()
        assert window_kl(p, q).item() == pytest.approx(exact, rel=rel)
    # identical rows give exactly 0; Σ p (log p − log q) in float32 would not be this close
    assert window_kl(p, p.clone()).item() == 0.0


def test_noise_floor_lookup() -> None:
    assert kl_noise_floor("float32") == KL_NOISE_FLOOR["float32"] == kl_noise_floor(torch.float32)
    assert kl_noise_floor("bfloat16") > kl_noise_floor("float32")
    assert kl_noise_floor("auto") == max(KL_NOISE_FLOOR.values())
    with pytest.raises(ValueError, match=r"model\.dtype"):
        kl_noise_floor("int8")


def test_candidate_store_keeps_the_first_entry_written(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "cache")
    first = TraceCandidates("", (StepCandidates("a b", 2, True, (Candidate("a", 1, 0.5),)),), "")
    second = TraceCandidates("", (StepCandidates("a b", 2, True),), "")
    assert load_candidates(cache, "k") is None
    assert store_candidates(cache, "k", first) == first
    # a worker that computed the same trace concurrently gets the stored entry back, not its own
    assert store_candidates(cache, "k", second) == first
    assert load_candidates(cache, "k") == first
    assert cache.read_bytes(CACHE_STAGE, "k") is not None


# -- the real tiny model --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def _prompt(tokenizer) -> str:
    question = ChainProblem(start=9, updates=(("-", 4), ("+", 1))).question()  # a = 9 , b = a - 4 , ...
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
    )


def test_batched_scoring_equals_one_at_a_time(tiny) -> None:
    model, tok = tiny

    def enc(text: str) -> list[int]:
        return tok.encode(text, add_special_tokens=False)

    context = enc(_prompt(tok) + "first we have a = 9 , and we want c \n\n ")
    original = enc("now we work out b : b = a - 4 , and so that is 9 - 4 = 5 \n\n")  # a step's piece
    candidates = [
        enc("b = 9 - 4 = 5 \n\n"),
        original,
        enc("next we want b : b = a - 4 , and so b is then 9 - 4 = 5 \n\n"),
    ]
    candidates.append(enc("b = 9 - 4 = 7 \n\n"))  # other content (a slip)
    future = enc("c = 5 + 1 = 6 \n\n answer : 6")
    args = (model, context, original, candidates, future)
    batched = score_step(*args, window=8, batch_size=64)
    single = score_step(*args, window=8, batch_size=2)  # the original and one candidate per forward
    assert batched == pytest.approx(single, abs=1e-5)
    # the original against itself in its own batch: same tokens, same padding, same attention path
    assert batched[1] == pytest.approx(0.0, abs=1e-9)
    assert min(batched[0], batched[2], batched[3]) > 1e-4
    # the window is capped by the tokens left
    assert score_step(*args, window=1000, batch_size=3) == pytest.approx(
        score_step(*args, window=len(future), batch_size=3), abs=1e-6
    )
    # rows that start from a cached prefix (any longer sequence that begins with the context) score the same
    prefix = encode_prefix(model, context + original + future[:3])
    assert prefix is not None
    cached = score_step(*args, window=8, batch_size=64, prefix=prefix)
    assert cached == pytest.approx(batched, abs=1e-6)
    with pytest.raises(ValueError, match="not a prefix"):
        score_step(model, future, original, candidates, future, 8, prefix=prefix)


TRACE = (
    "first we have a = 9 , and we want c \n\n now we work out b : b = a - 4 , and so that is 9 - 4 = 5"
    " \n\n next we want c : c = b + 1 , and so c is then 5 + 1 = 6 \n\n answer : 6"
)


def test_plan_caps_the_searched_steps(tiny) -> None:
    _, tok = tiny
    prompt = _prompt(tok)
    cands, plan = _plan(prompt, TRACE, 0, tok, max_steps=None)
    assert plan.whole  # the pieces tokenize as the whole text does
    assert [s.refinable for s in cands.steps] == [True, True, True, False]  # the answer step is kept
    assert [job.step for job in plan.jobs] == [0, 1, 2]
    # pieces: each step with its separator; the window after a step starts at the next step's first token
    for job in plan.jobs:
        assert tok.decode(plan.ids[job.start : job.end]).split() == (cands.steps[job.step].original.split())
        assert job.context_text == prompt + "\n\n".join(s.original for s in cands.steps[: job.step]) + (
            "\n\n" if job.step else ""
        )
    capped, plan2 = _plan(prompt, TRACE, 0, tok, max_steps=2)
    lengths = [s.n_tokens for s in cands.steps]
    assert [job.step for job in plan2.jobs] == [1, 2] and lengths[0] < min(lengths[1], lengths[2])
    assert [s.refinable for s in capped.steps] == [False, True, True, False]
    assert capped.steps[0].n_tokens == cands.steps[0].n_tokens


def _job(last: bool, thinking: bool = True) -> _StepJob:
    stops = ("\n\n", "</think>") if thinking else ("\n\n",)
    return _StepJob(0, 0, "", 0, 0, list(range(20)), "\n", stops, last)


def _completion(text: str) -> Completion:
    return Completion(text, (), "stop")


def test_rewrites_stop_where_the_step_ends(tiny) -> None:
    _, tok = tiny
    texts = [
        "b = 5 \n\n",  # a step
        "b is 5 \n</think>\n\nanswer : 5",  # ended the thinking
        "b = 5 \n\n",  # duplicate
        "b = 9 - 4",  # never reached the end
        "  \n\n",  # blank
        "<think> b = 5 \n\n",  # a think tag inside the step
    ]
    middle, last = _job(last=False), _job(last=True)
    _keep(middle, [_completion(t) for t in texts], tok)
    _keep(last, [_completion(t) for t in texts], tok)
    assert [text for text, _, _ in middle.kept] == ["b = 5 "]
    # the last thinking step's rewrite stops at </think> too, without the whitespace the tail brings
    assert [text for text, _, _ in last.kept] == ["b = 5", "b is 5"]
    assert all(piece == tok.encode(text + "\n", add_special_tokens=False) for text, _, piece in last.kept)


@pytest.mark.slow
def test_candidates_on_the_tiny_model_are_cached(tiny, tiny_model_dir: Path, tmp_path: Path) -> None:
    from tsq.engines.generation.hf import HFBackend

    model, tok = tiny
    prompt = _prompt(tok)
    trace = TRACE
    spec = RefinementSpec(k=8, window=16, temperature=1.0, max_step_tokens=24, batch_size=16, seed=0)
    backend = HFBackend(tiny_model_dir, progress=False)
    cache = Cache(tmp_path / "cache")

    cands = step_candidates(tiny_model_dir, backend, prompt, trace, spec, cache, model=model, tokenizer=tok)
    assert backend.calls == 1 and cache.stats["misses"] == 1 and cache.stats["hits"] == 0
    assert [s.refinable for s in cands.steps] == [True, True, True, False]
    assert cands.head + "\n\n".join(s.original for s in cands.steps) + cands.tail == trace
    scored = [c for s in cands.steps for c in s.candidates]
    assert scored, "no candidate rewrites were sampled"
    for step in cands.steps:
        texts = [c.text for c in step.candidates]
        assert len(set(texts)) == len(texts)
        assert all(
            c.n_tokens < step.n_tokens and c.kl >= -1e-6 and "\n\n" not in c.text for c in step.candidates
        )

    # the second call is a cache hit: no generation, no model needed
    misses, hits = cache.stats["misses"], cache.stats["hits"]
    again = compute_candidates(tiny_model_dir, backend, [(prompt, trace)], spec, cache)
    assert again == [cands]
    assert backend.calls == 1 and cache.stats["misses"] == misses and cache.stats["hits"] == hits + 1
    # refinement never makes a trace longer, and a huge ε takes the shortest candidates
    refined = refine_trace(cands, 1e9)
    assert sum(refined.tokens_after) < sum(refined.tokens_before)
    assert refine_trace(cands, 1e-12).text == trace


def test_step_rewrites_are_sampled_in_one_call_per_stop_group(
    tiny, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """`refinement.batch_size` bounds scoring rows, not generation: every step of every trace goes to the
    engine in one call (issue 29: chunks of batch_size left a vLLM engine under-filled)."""
    from tsq.engines.generation.hf import HFBackend

    model, tok = tiny
    prompt = _prompt(tok)
    traces = [(prompt, TRACE), (prompt, TRACE.replace("9 - 4 = 5", "9 minus 4 is 5"))]
    spec = RefinementSpec(k=2, window=8, temperature=1.0, max_step_tokens=16, batch_size=2, seed=0)
    backend = HFBackend(tiny_model_dir, progress=False)
    found = compute_candidates(
        tiny_model_dir, backend, traces, spec, Cache(tmp_path), model=model, tokenizer=tok
    )
    assert sum(s.refinable for c in found for s in c.steps) == 6  # 6 step jobs, batch_size 2
    assert backend.calls == 1  # one stop group (the traces' steps all stop at a blank line)
