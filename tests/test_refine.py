"""KL-constrained step refinement: window KL by hand, ε threshold semantics, the tiny model end to end."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tsq.cache import Cache
from tsq.data.tiny_world import ChainProblem
from tsq.refine import (
    Candidate,
    StepCandidates,
    TraceCandidates,
    compute_candidates,
    reachable_refinements,
    refine_trace,
    score_step,
    step_candidates,
    window_kl,
)
from tsq.spec import RefinementSpec


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


def _hand_trace() -> TraceCandidates:
    return TraceCandidates(
        head="",
        steps=(
            StepCandidates(
                original="now we work out b : b is 9 - 4 , which gives 5",
                n_tokens=14,
                refinable=True,
                candidates=(
                    Candidate("b = 9 - 4 = 5", 7, 0.003),
                    Candidate("b is 5", 3, 0.2),
                    Candidate("b = 5 from 9 - 4", 7, 0.001),
                ),
            ),
            StepCandidates(
                original="c = 5 + 1 = 6",
                n_tokens=7,
                refinable=True,
                candidates=(Candidate("c = 6", 3, 0.05),),
            ),
            StepCandidates(original="answer : 6", n_tokens=3, refinable=False),
        ),
        tail="",
    )


def test_refine_trace_threshold_semantics() -> None:
    cands = _hand_trace()
    original = "now we work out b : b is 9 - 4 , which gives 5\n\nc = 5 + 1 = 6\n\nanswer : 6"
    tiny = refine_trace(cands, 1e-9)  # nothing qualifies but the original
    assert (tiny.text, tiny.tokens_after, tiny.n_rewritten) == (original, (14, 7, 3), 0)
    huge = refine_trace(cands, 1e9)  # the shortest candidate of every step
    assert huge.text == "b is 5\n\nc = 6\n\nanswer : 6"
    assert (huge.tokens_before, huge.tokens_after, huge.n_rewritten, huge.n_steps) == (
        (14, 7, 3),
        (3, 3, 3),
        2,
        3,
    )
    # ε = 0.005: strict "<"; of the two 7-token candidates below ε the lower KL wins
    mid = refine_trace(cands, 0.005)
    assert mid.text == "b = 5 from 9 - 4\n\nc = 5 + 1 = 6\n\nanswer : 6"
    assert mid.tokens_after == (7, 7, 3)
    assert refine_trace(cands, 0.05).tokens_after == (7, 7, 3)  # KL 0.05 is not below ε = 0.05
    assert TraceCandidates.from_json(cands.to_json()) == cands


def test_reachable_refinements_lists_every_text_some_epsilon_gives() -> None:
    cands = _hand_trace()
    original = "now we work out b : b is 9 - 4 , which gives 5\n\nc = 5 + 1 = 6\n\nanswer : 6"
    b_from = "b = 5 from 9 - 4\n\nc = 5 + 1 = 6\n\nanswer : 6"
    # KL 0.001 and 0.003 both pass inside [1e-4, 0.01); the 0.003 candidate never wins (same length)
    assert reachable_refinements(cands, 1e-4, 0.01) == [original, b_from]
    # ε = high itself is in range, but "KL < ε" keeps a candidate with KL = 0.05 out at high = 0.05
    assert reachable_refinements(cands, 1e-4, 0.05) == [original, b_from]
    assert reachable_refinements(cands, 1e-4, 1.0) == [
        original,
        b_from,
        "b = 5 from 9 - 4\n\nc = 6\n\nanswer : 6",
        "b is 5\n\nc = 6\n\nanswer : 6",
    ]
    assert reachable_refinements(cands, 0.06, 0.1) == ["b = 5 from 9 - 4\n\nc = 6\n\nanswer : 6"]
    for eps in (1e-4, 0.002, 0.004, 0.06, 0.3, 1.0):
        assert refine_trace(cands, eps).text in reachable_refinements(cands, 1e-4, 1.0)


def test_refine_trace_keeps_head_and_tail() -> None:
    cands = TraceCandidates(
        head="<think>\n",
        steps=(StepCandidates("long step", 2, True, (Candidate("s", 1, 0.0),)),),
        tail="\n</think>\n\nanswer",
    )
    assert refine_trace(cands, 0.1).text == "<think>\ns\n</think>\n\nanswer"


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

    context = enc(_prompt(tok))
    original = enc("now we work out b : b is a - 4 , that is 9 - 4 , which gives 5")
    candidates = [
        enc("b = 9 - 4 = 5"),
        original,
        enc("next we want b : b = a - 4 , so b is 9 - 4 , which is 5"),
    ]
    candidates.append(enc("b = 9 - 4 = 7"))  # other content (a slip)
    future = enc("c = 5 + 1 = 6 \n\n answer : 6")
    args = (model, context, original, candidates, enc("\n\n"), future)
    batched = score_step(*args, window=8, batch_size=64)
    single = score_step(*args, window=8, batch_size=1)
    assert batched == pytest.approx(single, abs=1e-5)
    assert batched[1] == pytest.approx(0.0, abs=1e-6)  # the original against itself, left-padded in a batch
    assert min(batched[0], batched[2], batched[3]) > 0
    # the window is capped by the tokens left
    assert score_step(*args, window=1000, batch_size=3) == pytest.approx(
        score_step(*args, window=len(future), batch_size=3), abs=1e-6
    )


@pytest.mark.slow
def test_candidates_on_the_tiny_model_are_cached(tiny, tiny_model_dir: Path, tmp_path: Path) -> None:
    from tsq.generation.hf import HFBackend

    model, tok = tiny
    prompt = _prompt(tok)
    trace = (
        "first we have a = 9 , and we want c \n\n now we work out b : b is a - 4 , that is 9 - 4 , which"
        " gives 5 \n\n next we want c : c = b + 1 , so c is 5 + 1 , which is 6 \n\n answer : 6"
    )
    spec = RefinementSpec(k=8, window=16, temperature=1.0, max_step_tokens=24, batch_size=16, seed=0)
    backend = HFBackend(tiny_model_dir, progress=False)
    cache = Cache(tmp_path / "cache")

    cands = step_candidates(tiny_model_dir, backend, prompt, trace, spec, cache, model=model, tokenizer=tok)
    assert backend.calls == 1 and cache.stats["misses"] == 1 and cache.stats["hits"] == 0
    assert [s.refinable for s in cands.steps] == [True, True, True, False]  # the answer step is kept
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
