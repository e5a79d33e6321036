"""Refinement on a byte-level BPE in which punctuation and newlines merge as in Qwen, and a random Qwen2.

The vocabulary is trained in tests/qwen_bpe.py with Qwen2's pre-tokenizer, so ".\\n\\n" and ":\\n\\n" are
single tokens (the model emits `5` `.\\n\\n` `Then`, never `5` `.` `\\n\\n` `Then`). The scored rows must hold
the ids of the trace as the tokenizer encodes it whole, for the middle steps and for the last thinking step.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from qwen_bpe import build_qwen_like, reasoning_trace

from tsq.engines.generation.base import Completion
from tsq.engines.refine import (
    KL_NOISE_FLOOR,
    LMHead,
    _keep,
    _plan,
    _window_logits,
    encode_prefix,
    measure_kl_noise_floor,
    score_step,
)


@pytest.fixture(scope="module")
def qwen(tmp_path_factory: pytest.TempPathFactory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = build_qwen_like(tmp_path_factory.mktemp("qwen") / "model")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return path, model, tok


def _prompt(tok) -> str:
    return tok.apply_chat_template(
        [{"role": "user", "content": "Find x."}], tokenize=False, add_generation_prompt=True
    )


def _enc(tok, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False)


def test_the_vocabulary_merges_punctuation_with_newlines(qwen) -> None:
    _, _, tok = qwen
    assert type(tok).__name__ in ("Qwen2TokenizerFast", "PreTrainedTokenizerFast", "Qwen2Tokenizer")
    for text in (".\n\n", ":\n\n", ".\n"):
        assert len(_enc(tok, text)) == 1, text
    # so a step encoded apart from its separator is not what the model generates
    assert _enc(tok, "x = 5.") + _enc(tok, "\n\n") != _enc(tok, "x = 5.\n\n")


class _Inputs:
    """Records the input ids every forward of the decoder receives (a hook on the real embedding layer)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.rows: list[list[list[int]]] = []
        self._handle = model.get_input_embeddings().register_forward_pre_hook(self._record)

    def _record(self, _module: torch.nn.Module, args: tuple) -> None:
        self.rows.append(args[0].tolist())

    def close(self) -> None:
        self._handle.remove()


def _strip_pads(row: list[int], pad: int) -> list[int]:
    return [t for t in row if t != pad]  # the pad id (<|endoftext|>) never occurs inside these traces


def _check_rows(model, tok, prefix_cache: bool, seed: int) -> tuple[list[int], list]:
    """Score one rewrite of every step of a 4-step R1-style trace and check the rows the model received
    against the trace encoded whole; (whole ids, jobs)."""
    prompt = _prompt(tok)
    pad = tok.pad_token_id
    head = LMHead(model)
    trace = reasoning_trace(random.Random(seed), n_steps=4)
    cands, plan = _plan(prompt, trace, 0, tok, max_steps=None)
    whole = _enc(tok, prompt + trace)
    assert plan.ids == whole and plan.whole
    assert [job.step for job in plan.jobs] == [0, 1, 2, 3]  # the last thinking step is refined too
    assert all(s.n_tokens == len(_enc(tok, s.original)) for s in cands.steps)  # the step alone
    prefix = encode_prefix(model, plan.ids[: plan.jobs[-1].start]) if prefix_cache else None
    for job in plan.jobs:
        window = 6
        future = plan.ids[job.end :]
        # a rewrite: the original's piece without its first token (any other piece would do)
        candidate = plan.ids[job.start + 1 : job.end]
        seen = _Inputs(model)
        try:
            score_step(
                model, plan.ids[: job.start], plan.ids[job.start : job.end], [candidate], future,
                window, prefix=prefix, head=head, pad_id=pad,
            )  # fmt: skip
        finally:
            seen.close()
        (batch,) = seen.rows
        cached = job.start if prefix_cache else 0
        original_row = _strip_pads(batch[0], pad)
        assert original_row == whole[cached : job.end + window - 1]
        candidate_row = _strip_pads(batch[1], pad)
        assert candidate_row == whole[cached : job.start] + whole[job.start + 1 : job.end + window - 1]
    return whole, plan.jobs


@pytest.mark.parametrize("prefix_cache", [False, True])
def test_scored_rows_are_the_trace_as_encoded_whole(qwen, prefix_cache: bool) -> None:
    _, model, tok = qwen
    merged_last = 0
    for seed in range(6):
        whole, jobs = _check_rows(model, tok, prefix_cache, seed)
        for job in jobs:
            if job.step == 3:  # the last thinking step: its piece ends in "?\n" or ".\n" merged; </think>
                assert tok.decode(whole[job.end : job.end + 1]) == "</think>"
                last = tok.decode(whole[job.end - 1 : job.end])
                merged_last += last.endswith("\n") and len(last) > 1
            else:  # a middle step: its piece ends in the separator, merged with the punctuation before it
                assert tok.decode(whole[job.end - 1 : job.end]).endswith("\n\n")
    assert merged_last > 0


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory: pytest.TempPathFactory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = build_qwen_like(tmp_path_factory.mktemp("gpt2") / "model", family="gpt2")
    tok = AutoTokenizer.from_pretrained(path)
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval(), tok


def test_gpt2_pretokenizer_splits_the_separator_by_what_follows(gpt2) -> None:
    _, tok = gpt2
    # SmolLM2's family: "\n\n" alone is one token, before a word two; a step encoded with its separator
    # alone is therefore not what the model generates
    assert len(_enc(tok, "\n\n")) == 1
    assert [tok.decode([t]) for t in _enc(tok, ".\n\nSo")] == [".", "\n", "\n", "So"]
    assert _enc(tok, "x = 5.\n\n") + _enc(tok, "So") != _enc(tok, "x = 5.\n\nSo")


@pytest.mark.parametrize("prefix_cache", [False, True])
def test_gpt2_scored_rows_are_the_trace_as_encoded_whole(gpt2, prefix_cache: bool) -> None:
    model, tok = gpt2
    for seed in range(6):
        whole, jobs = _check_rows(model, tok, prefix_cache, seed)
        for job in jobs[:-1]:  # a middle step's piece ends in the separator's two tokens, as in the whole
            assert [tok.decode([t]) for t in whole[job.end - 2 : job.end]] == ["\n", "\n"]


def test_a_rewrite_piece_is_cut_as_it_falls_before_the_following_text(gpt2) -> None:
    _, tok = gpt2
    prompt = _prompt(tok)
    trace = reasoning_trace(random.Random(3), n_steps=3)
    _, plan = _plan(prompt, trace, 0, tok, max_steps=None)
    job = plan.jobs[0]
    job.kept.clear()
    _keep(job, [Completion("So x = 5.\n\nmore", (), "stop")], tok)
    ((text, ids, piece),) = job.kept
    assert text == "So x = 5." and ids == _enc(tok, text)
    # the piece is the rewrite and its separator as the trace's next step follows them: the row it makes is
    # the rewritten trace encoded whole
    rewritten = _enc(tok, prompt + text + "\n\n" + trace.split("\n\n", 1)[1])
    assert plan.ids[: job.start] + piece + plan.ids[job.end :] == rewritten


def test_fp32_head_gives_the_models_own_logits(qwen) -> None:
    _, model, tok = qwen
    ids = _enc(tok, _prompt(tok) + reasoning_trace(random.Random(0), 3))
    with torch.no_grad():
        expected = model(input_ids=torch.tensor([ids])).logits[:, -5:]
    got = _window_logits(model, LMHead(model), None, 0, [ids], 5, tok.pad_token_id)
    assert torch.allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_noise_floor_is_below_the_documented_bound(qwen, dtype: torch.dtype) -> None:
    path, _, tok = qwen
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()
    trace = reasoning_trace(random.Random(1), n_steps=5)
    _, plan = _plan(_prompt(tok), trace, 0, tok, max_steps=None)
    bound = KL_NOISE_FLOOR[str(dtype).removeprefix("torch.")]
    for job in (plan.jobs[1], plan.jobs[-1]):
        args = (model, plan.ids[: job.start], plan.ids[job.start : job.end], plan.ids[job.end :], 16)
        for prefix in (None, encode_prefix(model, plan.ids[: job.start])):
            floor = measure_kl_noise_floor(*args, prefix=prefix, pad_id=tok.pad_token_id)
            assert floor[0] == pytest.approx(0.0, abs=1e-12)  # the original as its own candidate
            assert max(abs(v) for v in floor.values()) < bound
        # the original among its candidates scores 0: same batch, same path
        scores = score_step(model, *args[1:3], [args[2][1:], args[2]], args[3], 16, pad_id=tok.pad_token_id)
        assert scores[1] == pytest.approx(0.0, abs=1e-12) and scores[0] > 10 * bound


def test_prefix_cache_scores_equal_full_rows(qwen) -> None:
    _, model, tok = qwen
    trace = reasoning_trace(random.Random(2), n_steps=6)
    _, plan = _plan(_prompt(tok), trace, 0, tok, max_steps=None)
    prefix = encode_prefix(model, plan.ids[: plan.jobs[-1].start])
    for job in plan.jobs:
        piece = plan.ids[job.start : job.end]
        candidates = [piece[2:], piece[:-3] + piece[-1:], piece[1:]]
        args = (model, plan.ids[: job.start], piece, candidates, plan.ids[job.end :], 8)
        full = score_step(*args, batch_size=3, pad_id=tok.pad_token_id)
        cached = score_step(*args, batch_size=3, pad_id=tok.pad_token_id, prefix=prefix)
        assert cached == pytest.approx(full, abs=1e-6)
        assert min(full) > 0


def test_the_bpe_tokenizer_files_round_trip(qwen) -> None:
    path, _, tok = qwen
    assert Path(path, "tokenizer.json").is_file()
    assert "<think>" in tok.get_vocab() and "</think>" in tok.get_vocab()
