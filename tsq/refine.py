"""Intra-step linguistic refinement under a KL constraint (PAPER.md section 2): the one place where ε acts.

Two halves, split so that a trial pays only for the cheap one:

1. Candidates (expensive, cached per trace, independent of ε): for every refinable step s_i of a positive
   trace, K rewrites are sampled from the base model conditioned on the ORIGINAL preceding context
   (prompt, s_1 … s_{i−1}, separator) and stopped at the step boundary "\\n\\n". Each rewrite s'_i gets
   D = window_kl over the original trace's following tokens t_1 … t_T (t_1 = first token of s_{i+1},
   T = min(tokens left, L)) between Q(· | context, s_i, t_<j) and Q(· | context, s'_i, t_<j).
2. `refine_trace(candidates, ε)` (pure, per trial): per step, the shortest candidate with D < ε; the
   original always qualifies (D = 0), so a step never gets longer.

Choices the paper leaves open (ours):
- Steps are the blank-line chunks of `tsq.data.reasoning.reasoning_parts` (the thinking part for reasoning
  models); the text around them (`<think>`, `</think>` and the answer) is never rewritten.
- The answer step is not refined: without a closed think block the last step carries the final answer,
  and it has no following tokens to measure a divergence on. With a closed think block the answer lives in
  the tail, so the last thinking step IS refined, its window being the tail's tokens.
- Candidates kept: completions that reached the step boundary (a rewrite that ends the response or runs
  past `max_step_tokens` is not a step), non-blank, deduplicated by token ids, and strictly shorter than
  the original in tokens — a candidate that is not shorter can never be chosen (ties go to the original),
  so it is not scored.
- KL: `refinement.kl_reduction` "mean" over the window (our reading, the default) or "sum"; at the
  model's own temperature 1 (the sampling temperature only shapes the candidates).
- Sampling is seeded per generate call (`refinement.seed`); calls batch many steps and traces, so the exact
  candidates of a trace depend on which traces were computed together. Cached values are reused as is.

Text ↔ tokens: every scored row is the concatenation of four separately tokenised segments,
enc(prompt + head + s_1 … s_{i−1} + "\\n\\n") ‖ enc(step) ‖ enc("\\n\\n") ‖ enc(rest after the separator),
with `add_special_tokens=False` (formatted prompts carry their own special tokens). The context string is
exactly what the generation backend was prompted with; the original and every candidate use the same
segmentation, so rows differ only in the step's tokens and the window is the same token ids in every row.
Token counts per step are len(enc(step)).

Batched scoring uses LEFT padding (explicit position ids), so the window sits at the same final positions
in every row and `logits_to_keep` computes the vocabulary projection for the window only: memory is
O(batch · L · V), not O(batch · sequence · V), which matters for real vocabularies (~150k).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm import tqdm

from tsq.cache import Cache, content_key
from tsq.data.reasoning import prompt_opens_think, reasoning_parts
from tsq.data.traces import STEP_SEPARATOR, join_steps
from tsq.devices import pick_device, pick_dtype
from tsq.generation.base import Backend, SamplingSettings
from tsq.models import load_causal_lm, load_tokenizer, model_fingerprint
from tsq.spec import RefinementSpec

CACHE_STAGE = "candidates"
# Bump when the meaning of a cached entry changes (candidate filtering, segmentation, KL definition).
CANDIDATES_FORMAT = 1

Reduction = Literal["mean", "sum"]


# -- the divergence --------------------------------------------------------------------------------------
def window_kl(
    logits_p: torch.Tensor,
    logits_q: torch.Tensor,
    mask: torch.Tensor | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Per row, KL(softmax(p) ‖ softmax(q)) at each window position, averaged (or summed) over the window.

    Shapes: logits [B, T, V] (p may broadcast, e.g. [1, T, V]), mask [B, T] (True = position counts) → [B].
    Computed in float32. A row whose mask is all False gets 0.
    """
    logp = torch.log_softmax(logits_p.float(), dim=-1)
    logq = torch.log_softmax(logits_q.float(), dim=-1)
    per_position = (logp.exp() * (logp - logq)).sum(-1)  # [B, T]
    if mask is None:
        mask = torch.ones(per_position.shape, dtype=torch.bool, device=per_position.device)
    mask = mask.to(per_position.device).bool()
    total = (per_position * mask).sum(-1)
    if reduction == "sum":
        return total
    if reduction == "mean":
        return total / mask.sum(-1).clamp(min=1)
    raise ValueError(f"refinement.kl_reduction: expected 'mean' or 'sum', got {reduction!r}")


@torch.no_grad()
def _window_logits(
    model: torch.nn.Module, rows: Sequence[list[int]], window: int, pad_id: int
) -> torch.Tensor:
    """Logits [B, window, V] at the last `window` positions of each row, rows left-padded into one batch."""
    width = max(len(r) for r in rows)
    device = next(model.parameters()).device
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, row in enumerate(rows):
        input_ids[b, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        attention_mask[b, width - len(row) :] = 1
    # left padding: positions must count real tokens only, or the rotary positions of a row would shift
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    out = model(
        input_ids=input_ids.to(device),
        attention_mask=attention_mask.to(device),
        position_ids=position_ids.to(device),
        logits_to_keep=window,
        use_cache=False,
    )
    return out.logits[:, -window:]


def score_step(
    model: torch.nn.Module,
    context: list[int],
    original: list[int],
    candidates: Sequence[list[int]],
    separator: list[int],
    future: list[int],
    window: int,
    batch_size: int = 64,
    reduction: Reduction = "mean",
    pad_id: int = 0,
) -> list[float]:
    """D(original, candidate) for each candidate step (token ids), over the first `window` future tokens.

    One forward for the original, then the candidates in batches of `batch_size` (1 = one at a time).
    Row = context ‖ step ‖ separator ‖ future[:T−1]: its last T positions predict future[0 … T−1].
    """
    n_window = min(window, len(future))
    if n_window == 0:
        raise ValueError("score_step: no future tokens after the step to measure a divergence on")
    tail = separator + future[: n_window - 1]
    reference = _window_logits(model, [context + original + tail], n_window, pad_id)
    scores: list[float] = []
    for start in range(0, len(candidates), batch_size):
        chunk = candidates[start : start + batch_size]
        logits = _window_logits(model, [context + c + tail for c in chunk], n_window, pad_id)
        scores.extend(window_kl(reference, logits, reduction=reduction).tolist())
    return scores


# -- cached candidates per trace ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    text: str
    n_tokens: int
    kl: float


@dataclass(frozen=True)
class StepCandidates:
    original: str
    n_tokens: int  # tokens of the original step
    refinable: bool  # False for the answer step (see the module docstring): never rewritten
    candidates: tuple[Candidate, ...] = ()  # rewrites strictly shorter than the original, with their KL


@dataclass(frozen=True)
class TraceCandidates:
    """A trace as `head + join_steps(steps) + tail`, with the scored rewrites of each step."""

    head: str
    steps: tuple[StepCandidates, ...]
    tail: str

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TraceCandidates:
        steps = tuple(
            StepCandidates(
                original=s["original"],
                n_tokens=s["n_tokens"],
                refinable=s["refinable"],
                candidates=tuple(Candidate(**c) for c in s["candidates"]),
            )
            for s in data["steps"]
        )
        return cls(head=data["head"], steps=steps, tail=data["tail"])


@dataclass(frozen=True)
class RefinedTrace:
    text: str
    tokens_before: tuple[int, ...]  # per step
    tokens_after: tuple[int, ...]
    n_rewritten: int  # steps replaced by a shorter candidate

    @property
    def n_steps(self) -> int:
        return len(self.tokens_before)


def refine_trace(cands: TraceCandidates, epsilon: float) -> RefinedTrace:
    """Per step, the shortest candidate with KL < ε (ties: the original, then the lower KL, then order)."""
    chosen: list[tuple[str, int]] = []
    for step in cands.steps:
        best = (step.n_tokens, 0.0, -1, step.original)
        for idx, cand in enumerate(step.candidates):
            if cand.kl < epsilon:
                best = min(best, (cand.n_tokens, cand.kl, idx, cand.text))
        chosen.append((best[3], best[0]))
    return RefinedTrace(
        text=cands.head + join_steps([text for text, _ in chosen]) + cands.tail,
        tokens_before=tuple(s.n_tokens for s in cands.steps),
        tokens_after=tuple(n for _, n in chosen),
        n_rewritten=sum(text != s.original for (text, _), s in zip(chosen, cands.steps, strict=True)),
    )


def reachable_refinements(cands: TraceCandidates, low: float, high: float) -> list[str]:
    """Every distinct refined text `refine_trace` gives for some ε in [low, high], in order of ε.

    The choice changes only where ε passes a candidate's KL (the rule is KL < ε), so ε = low and the
    smallest ε above each KL in [low, high) reach them all.
    """
    kls = sorted({c.kl for s in cands.steps for c in s.candidates if low <= c.kl < high})
    texts = [refine_trace(cands, e).text for e in (low, *(math.nextafter(k, math.inf) for k in kls))]
    return list(dict.fromkeys(texts))


def candidates_key(
    model_fp: str, precision: str, backend_name: str, prompt: str, trace: str, spec: RefinementSpec
) -> str:
    return content_key(
        format=CANDIDATES_FORMAT,
        model=model_fp,
        precision=precision,  # of the KL scoring pass
        backend=backend_name,
        prompt=prompt,
        trace=trace,
        k=spec.k,
        window=spec.window,
        temperature=spec.temperature,
        seed=spec.seed,
        max_step_tokens=spec.max_step_tokens,
        kl_reduction=spec.kl_reduction,
    )


@dataclass
class _StepJob:
    """One refinable step of one trace: what to generate from and what to score against."""

    trace: int
    step: int
    context_text: str
    context: list[int]
    original: list[int]
    future: list[int]
    kept: list[tuple[str, list[int]]] = dataclasses.field(default_factory=list)


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


def _plan(prompt: str, trace: str, index: int, tokenizer: Any) -> tuple[TraceCandidates, list[_StepJob]]:
    """The trace's steps (scores left empty) and a job per refinable step."""
    parts = reasoning_parts(trace, in_think=prompt_opens_think(prompt))
    steps: list[StepCandidates] = []
    jobs: list[_StepJob] = []
    for i, text in enumerate(parts.steps):
        ids = _encode(tokenizer, text)
        is_answer_step = i == len(parts.steps) - 1 and not parts.closed
        future = (
            [] if is_answer_step else _encode(tokenizer, join_steps(list(parts.steps[i + 1 :])) + parts.tail)
        )
        refinable = bool(future)
        steps.append(StepCandidates(original=text, n_tokens=len(ids), refinable=refinable))
        if refinable:
            before = join_steps(list(parts.steps[:i])) + STEP_SEPARATOR if i else ""
            context_text = prompt + parts.head + before
            jobs.append(_StepJob(index, i, context_text, _encode(tokenizer, context_text), ids, future))
    return TraceCandidates(parts.head, tuple(steps), parts.tail), jobs


def _keep(job: _StepJob, completions: Sequence[Any], tokenizer: Any) -> None:
    """Candidate rewrites of a step: reached the boundary, non-blank, new, shorter than the original."""
    seen = {tuple(job.original)}
    for comp in completions:
        cut = comp.text.find(STEP_SEPARATOR)
        if cut < 0 or not comp.text[:cut].strip():
            continue
        text = comp.text[:cut]
        ids = _encode(tokenizer, text)
        if tuple(ids) in seen or len(ids) >= len(job.original):
            continue
        seen.add(tuple(ids))
        job.kept.append((text, ids))


def _load(model_path: Path, trust_remote_code: bool, dtype: str) -> tuple[torch.nn.Module, Any]:
    """The scoring model (eval mode, on the default device) and its tokenizer."""
    device = pick_device()
    model = load_causal_lm(model_path, dtype=pick_dtype(dtype, device), trust_remote_code=trust_remote_code)
    return model.to(device).eval(), load_tokenizer(model_path, trust_remote_code=trust_remote_code)


def compute_candidates(
    model_path: Path | str,
    backend: Backend,
    traces: Sequence[tuple[str, str]],
    spec: RefinementSpec,
    cache: Cache,
    *,
    model: torch.nn.Module | None = None,
    tokenizer: Any = None,
    trust_remote_code: bool = False,
    dtype: str = "auto",
) -> list[TraceCandidates]:
    """Scored candidates for many (prompt, trace) pairs; cached per trace, computed in batches.

    Generation is batched across all steps of all uncached traces; scoring runs one step at a time with
    the step's candidates batched. Pass `model`/`tokenizer` to reuse a loaded model for scoring.
    """
    model_path = Path(model_path)
    fingerprint = model_fingerprint(model_path)
    precision = str(pick_dtype(dtype, pick_device()))
    keys = [candidates_key(fingerprint, precision, backend.name, p, t, spec) for p, t in traces]
    found = [cache.get_json(CACHE_STAGE, key) for key in keys]
    results: list[TraceCandidates | None] = [
        None if f is None else TraceCandidates.from_json(f) for f in found
    ]
    missing = [i for i, r in enumerate(results) if r is None]
    if not missing:
        return [r for r in results if r is not None]

    if model is None or tokenizer is None:
        model, tokenizer = _load(model_path, trust_remote_code, dtype)
    planned: dict[int, TraceCandidates] = {}
    jobs: list[_StepJob] = []
    for i in missing:
        planned[i], trace_jobs = _plan(traces[i][0], traces[i][1], i, tokenizer)
        jobs.extend(trace_jobs)

    settings = SamplingSettings(
        n=spec.k,
        temperature=spec.temperature,
        max_new_tokens=spec.max_step_tokens,
        seed=spec.seed,
        stop=(STEP_SEPARATOR,),
    )
    chunks = [jobs[s : s + spec.batch_size] for s in range(0, len(jobs), spec.batch_size)]
    for chunk in tqdm(chunks, desc="refinement: sampling step rewrites", unit="batch"):
        outputs = backend.generate([job.context_text for job in chunk], settings)
        for job, completions in zip(chunk, outputs, strict=True):
            _keep(job, completions, tokenizer)

    separator = _encode(tokenizer, STEP_SEPARATOR)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    scores: dict[tuple[int, int], list[float]] = {}
    for job in tqdm(jobs, desc="refinement: scoring rewrites (KL)", unit="step"):
        if job.kept:
            scores[job.trace, job.step] = score_step(
                model,
                job.context,
                job.original,
                [ids for _, ids in job.kept],
                separator,
                job.future,
                spec.window,
                spec.batch_size,
                spec.kl_reduction,
                pad_id,
            )
    kept = {(job.trace, job.step): job.kept for job in jobs}

    for i in missing:
        base = planned[i]
        steps = tuple(
            dataclasses.replace(
                step,
                candidates=tuple(
                    Candidate(text, len(ids), kl)
                    for (text, ids), kl in zip(kept.get((i, s), []), scores.get((i, s), []), strict=True)
                ),
            )
            for s, step in enumerate(base.steps)
        )
        results[i] = _store(cache, keys[i], dataclasses.replace(base, steps=steps))
    return [r for r in results if r is not None]


def _store(cache: Cache, key: str, value: TraceCandidates) -> TraceCandidates:
    """Write a computed entry (its miss was counted by get_json); a concurrent worker's entry wins."""
    with cache.lock(CACHE_STAGE, key):
        stored = cache.read_bytes(CACHE_STAGE, key)
        if stored is not None:
            return TraceCandidates.from_json(json.loads(stored))
        cache.write_bytes(CACHE_STAGE, key, json.dumps(value.to_json()).encode())
    return value


def step_candidates(
    model_path: Path | str,
    backend: Backend,
    prompt: str,
    trace: str,
    spec: RefinementSpec,
    cache: Cache,
    *,
    model: torch.nn.Module | None = None,
    tokenizer: Any = None,
) -> TraceCandidates:
    """Scored candidates for one trace (see `compute_candidates`)."""
    return compute_candidates(
        model_path, backend, [(prompt, trace)], spec, cache, model=model, tokenizer=tokenizer
    )[0]
