"""Intra-step linguistic refinement under a KL constraint (docs/method.md): the engine that scores rewrites.

Two halves, split so that a trial pays only for the cheap one:

1. Candidates (expensive, cached per trace, independent of ε): for every refinable step s_i of a positive
   trace, K rewrites are sampled from the base model conditioned on the ORIGINAL preceding context
   (prompt, s_1 … s_{i−1}, separator) and stopped where the step ends in the trace (see below). Each rewrite
   s'_i gets D = window_kl over the original trace's following tokens t_1 … t_T (t_1 = the first token
   after the step and its boundary, T = min(tokens left, L)) between Q(· | context, s_i, t_<j) and
   Q(· | context, s'_i, t_<j).
2. `tsq.method.refinement.refine_trace(candidates, ε)` (pure, per trial; the one place where ε acts): per
   step, the shortest candidate with D < ε; the original always qualifies (D = 0), so a step never gets
   longer. The candidates' cache entries: `tsq.engines.candidate_store`.

Choices the paper leaves open (ours):
- Steps are the blank-line chunks of `tsq.data.reasoning.reasoning_parts` (the thinking part for reasoning
  models); the text around them (`<think>`, `</think>` and the answer) is never rewritten.
- The answer step is not refined: without a closed think block the last step carries the final answer,
  and it has no following tokens to measure a divergence on. With a closed think block the answer lives in
  the tail, so the last thinking step IS refined, its window being the tail's tokens.
- At most `refinement.max_steps_per_trace` steps of a trace are searched: its longest refinable steps (the
  most tokens to save), earlier first among equals. The others keep their text.
- Candidates kept: completions that reached the step's end (a middle step's "\\n\\n"; for the last thinking
  step also `</think>`), non-blank, without think tags, deduplicated by token ids, and strictly shorter
  than the original in tokens — a candidate that is not shorter can never be chosen (ties go to the
  original), so it is not scored. A rewrite that ends the response or runs past `max_step_tokens` is not
  a step; a rewrite of a middle step that closes the thinking is not one either.
- KL: `refinement.kl_reduction` "mean" over the window (our reading, the default) or "sum"; at the
  model's own temperature 1 (the sampling temperature only shapes the candidates).
- Sampling is seeded per prompt by the backend, and cached values are reused as is.

Text ↔ tokens, as the model tokenizes them. A byte-level BPE (Qwen's) merges punctuation with the newlines
after it (".\\n\\n" is one token), so a step is never encoded apart from its boundary. A trace is encoded
in pieces:
    enc(prompt + head) ‖ enc(s_1 + "\\n\\n") ‖ … ‖ enc(s_{n−1} + "\\n\\n") ‖ enc(s_n + ws) ‖ enc(rest of tail)
where ws is the whitespace that opens the tail (before `</think>`), and each piece is encoded as it falls
before the text that follows it (`_encode_pieces`: the piece and a few following characters, cut where the
tokens decode to the piece). That matters where what follows changes a piece's last tokens: GPT-2's
pre-tokenizer (SmolLM2's) makes "\\n\\n" one token at the end of a text but two before a word. For Qwen's
and GPT-2's tokenizers the pieces equal the trace encoded whole (tests/test_refine_bpe.py checks both;
`compute_candidates` logs traces where they do not). A scored row replaces one step's piece by its rewrite's
piece, encoded before the same following text; the window is the tokens after the original piece, the same
ids in every row. Token counts per step are len(enc(step)), the step alone.

Scoring is symmetric and precise: each forward holds the original's row and its candidates' rows in one
padded batch, so every row takes the same attention path; the window's LM head and the KL run in float32
whatever the model's dtype. What remains is the noise floor (`measure_kl_noise_floor`, `kl_noise_floor`):
the KL between identical tokens placed at other padding offsets in the batch, documented per dtype in
docs/real-models.md; ε below it measures rounding, not wording.

Prefix reuse: the trace is run once through the model (`encode_prefix`) and every step's rows start from
that KV cache cropped to the step's context, so a step's forward covers only its piece and its window.
Rows are padded between the cached context and their piece (explicit position ids), so the window sits at
the same final positions in every row and only the window's hidden states reach the LM head.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm import tqdm

from tsq.cache import Cache
from tsq.config.pipeline import RefinementSpec
from tsq.data.reasoning import THINK_CLOSE, THINK_OPEN, prompt_opens_think, reasoning_parts
from tsq.data.traces import STEP_SEPARATOR, join_steps
from tsq.devices import pick_device, pick_dtype, release_accelerator_memory
from tsq.engines.candidate_store import candidates_key, load_candidates, store_candidates
from tsq.engines.generation.base import Backend, SamplingSettings
from tsq.engines.models import load_causal_lm, load_tokenizer, model_fingerprint
from tsq.method.refinement import Candidate, StepCandidates, TraceCandidates

log = logging.getLogger(__name__)

Reduction = Literal["mean", "sum"]

# Upper bounds of the KL noise floor per scoring dtype: the largest KL measured between identical tokens at
# padding offsets 0 … 32 in one batch (benchmarks/bench_refine_prefix.py --noise-floor, random Qwen2 on
# CPU; figures and method in docs/real-models.md), rounded up to a power of ten. ε at or below them is noise.
# float32: 2.0e-12 on the random Qwen2, 1.04e-11 on SmolLM2-135M's own outputs (tests/test_real_model.py).
KL_NOISE_FLOOR: dict[str, float] = {"float32": 1e-10, "bfloat16": 1e-4, "float16": 1e-5}


def kl_noise_floor(dtype: str | torch.dtype) -> float:
    """The documented KL noise floor of refinement scoring in `dtype` (a `model.dtype` name or a torch dtype).

    "auto" gets the largest floor (bfloat16, what "auto" means on a GPU), so a check made away from the GPU
    errs on the safe side. A spec whose ε range reaches below this value searches rounding noise.
    """
    name = str(dtype).removeprefix("torch.")
    if name == "auto":
        return max(KL_NOISE_FLOOR.values())
    if name not in KL_NOISE_FLOOR:
        raise ValueError(f"model.dtype: no KL noise floor for {dtype!r}; known: {', '.join(KL_NOISE_FLOOR)}")
    return KL_NOISE_FLOOR[name]


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

    Written in the logit difference δ = z_p − z_q: KL = E_p[δ] + log E_p[exp(−δ)], with δ centred on E_p[δ]
    and log1p/expm1. Σ p (log p − log q) would subtract log-probabilities of size ~10, whose float32 rounding
    (~1e-7 of the KL per position) swamps the KLs of nearly identical rows; here rounding scales with δ.
    """
    zp, zq = logits_p.float(), logits_q.float()
    p = torch.softmax(zp, dim=-1)
    delta = zp - zq
    delta = delta - (p * delta).sum(-1, keepdim=True)
    per_position = (p * delta).sum(-1) + torch.log1p((p * torch.expm1(-delta)).sum(-1))  # [B, T]
    if mask is None:
        mask = torch.ones(per_position.shape, dtype=torch.bool, device=per_position.device)
    mask = mask.to(per_position.device).bool()
    total = (per_position * mask).sum(-1)
    if reduction == "sum":
        return total
    if reduction == "mean":
        return total / mask.sum(-1).clamp(min=1)
    raise ValueError(f"refinement.kl_reduction: expected 'mean' or 'sum', got {reduction!r}")


# -- scoring -----------------------------------------------------------------------------------------------
class LMHead:
    """The model's output layer in float32: window logits are computed from the final hidden states.

    bf16 logits of a ~150k vocabulary round by more than the KLs ε is meant to separate; the fp32 weight is
    made once per scoring session (about 2 GB for a 7B model's head).
    """

    def __init__(self, model: torch.nn.Module) -> None:
        head = model.get_output_embeddings()
        if not isinstance(head, torch.nn.Linear):
            raise ValueError(f"refinement: {type(model).__name__} has no linear output layer to score with")
        self.weight = head.weight.detach().float()
        self.bias = None if head.bias is None else head.bias.detach().float()
        self.softcap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = torch.nn.functional.linear(hidden.float(), self.weight, self.bias)
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits


@dataclass
class PrefixKV:
    """Keys and values of one token sequence (batch 1): rows extending any prefix of `ids` start from it."""

    ids: list[int]
    layers: list[tuple[torch.Tensor, torch.Tensor]]  # per layer, [1, kv heads, len(ids), head dim]


@torch.no_grad()
def encode_prefix(model: torch.nn.Module, ids: Sequence[int]) -> PrefixKV | None:
    """The KV cache of `ids`, to be cropped per step; None where cropping is not exact (sliding windows)."""
    if not ids:
        return None
    device = next(model.parameters()).device
    out = model.get_decoder()(input_ids=torch.tensor([list(ids)], device=device), use_cache=True)
    cache = out.past_key_values
    if any(getattr(layer, "is_sliding", False) for layer in cache.layers):
        return None
    return PrefixKV(list(ids), [(layer.keys, layer.values) for layer in cache.layers])


@torch.no_grad()
def _window_logits(
    model: torch.nn.Module,
    head: LMHead,
    prefix: PrefixKV | None,
    prefix_len: int,
    rows: Sequence[list[int]],
    window: int,
    pad_id: int,
    lead: Sequence[int] | None = None,
) -> torch.Tensor:
    """float32 logits [B, window, V] at the last `window` positions of each row.

    Row b is laid out as [prefix_len cached tokens] [lead_b pads] [row b] [pads to the batch width]; by
    default lead_b pads each row up to the longest (the window at the same final positions in every row).
    Pads are masked and position ids count real tokens only, so padding changes no row's math, only the
    shapes its reductions run over (what `measure_kl_noise_floor` measures).
    """
    device = next(model.parameters()).device
    lengths = [len(r) for r in rows]
    lead = [max(lengths) - n for n in lengths] if lead is None else list(lead)
    width = max(a + n for a, n in zip(lead, lengths, strict=True))
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, (row, a) in enumerate(zip(rows, lead, strict=True)):
        input_ids[b, a : a + len(row)] = torch.tensor(row, dtype=torch.long)
        mask[b, a : a + len(row)] = 1
    position_ids = prefix_len + (mask.cumsum(-1) - 1).clamp(min=0)
    cache = None
    attention = mask
    if prefix_len:
        from transformers import DynamicCache

        assert prefix is not None
        # expand() is a view; the cache's first update materialises one copy per row of the batch
        shape = (len(rows), -1, -1, -1)
        cache = DynamicCache(
            ddp_cache_data=[
                (k[:, :, :prefix_len].expand(shape), v[:, :, :prefix_len].expand(shape))
                for k, v in prefix.layers
            ],
            config=model.config,
        )
        attention = torch.cat([torch.ones((len(rows), prefix_len), dtype=torch.long), mask], dim=1)
    hidden = model.get_decoder()(
        input_ids=input_ids.to(device),
        attention_mask=attention.to(device),
        position_ids=position_ids.to(device),
        past_key_values=cache,
        use_cache=cache is not None,
    ).last_hidden_state
    ends = torch.tensor([a + n for a, n in zip(lead, lengths, strict=True)])
    index = (ends[:, None] - window + torch.arange(window)[None, :]).to(device)  # [B, window]
    picked = hidden.gather(1, index[..., None].expand(-1, -1, hidden.shape[-1]))
    return head(picked)


def _rows(
    context: list[int], prefix: PrefixKV | None, pieces: Sequence[list[int]], tail: list[int]
) -> tuple[int, list[list[int]]]:
    """(tokens served from the prefix cache, rows to run): the context goes in the rows without a cache."""
    if prefix is None or not context:
        return 0, [context + p + tail for p in pieces]
    if prefix.ids[: len(context)] != context:
        raise ValueError("score_step: the context is not a prefix of the cached sequence")
    return len(context), [p + tail for p in pieces]


def score_step(
    model: torch.nn.Module,
    context: list[int],
    original: list[int],
    candidates: Sequence[list[int]],
    future: list[int],
    window: int,
    batch_size: int = 64,
    reduction: Reduction = "mean",
    pad_id: int = 0,
    prefix: PrefixKV | None = None,
    head: LMHead | None = None,
) -> list[float]:
    """D(original, candidate) for each candidate piece (token ids), over the first `window` future tokens.

    `original` and `candidates` are pieces: a step's tokens together with its boundary (see the module
    docstring). Row = context ‖ piece ‖ future[:T−1]: its last T positions predict future[0 … T−1]. Each
    forward holds the original's row and up to max(1, batch_size − 1) candidates (so batch_size 2 scores
    one candidate at a time). `prefix`: a KV cache of a sequence that starts with `context`, reused instead
    of running the context again.
    """
    n_window = min(window, len(future))
    if n_window == 0:
        raise ValueError("score_step: no future tokens after the step to measure a divergence on")
    head = head if head is not None else LMHead(model)
    tail = future[: n_window - 1]
    per_forward = max(1, batch_size - 1)
    scores: list[float] = []
    for start in range(0, len(candidates), per_forward):
        chunk = candidates[start : start + per_forward]
        cached, rows = _rows(context, prefix, [original, *chunk], tail)
        logits = _window_logits(model, head, prefix, cached, rows, n_window, pad_id)
        scores.extend(window_kl(logits[:1], logits[1:], reduction=reduction).tolist())
    return scores


def measure_kl_noise_floor(
    model: torch.nn.Module,
    context: list[int],
    original: list[int],
    future: list[int],
    window: int,
    shifts: Sequence[int] = (0, 1, 2, 4, 8, 16, 32),
    reduction: Reduction = "mean",
    pad_id: int = 0,
    prefix: PrefixKV | None = None,
) -> dict[int, float]:
    """KL of the original against itself, per padding shift, scored as `score_step` scores candidates.

    One batch: the original's row, then a copy of it behind `d` more pads for each shift d. Shift 0 is the
    original scored as its own candidate; shift d is what a candidate d tokens shorter sees besides its
    wording. The largest value is the noise floor of this model, dtype and device.
    """
    n_window = min(window, len(future))
    if n_window == 0:
        raise ValueError("measure_kl_noise_floor: no future tokens after the step")
    cached, rows = _rows(context, prefix, [original] * (len(shifts) + 1), future[: n_window - 1])
    logits = _window_logits(model, LMHead(model), prefix, cached, rows, n_window, pad_id, lead=[0, *shifts])
    kls = window_kl(logits[:1], logits[1:], reduction=reduction).tolist()
    return dict(zip(shifts, kls, strict=True))


@dataclass
class _StepJob:
    """One searched step of one trace: what to generate from and where its piece sits in the trace's ids."""

    trace: int
    step: int
    context_text: str  # prompt + head + the steps before + separator: what the backend continues
    start: int  # the step's piece is ids[start:end] of its trace; the window starts at `end`
    end: int
    original: list[int]  # the step alone (counted)
    boundary: str  # text after the step in its piece: the separator, or the whitespace opening the tail
    stops: tuple[str, ...]  # where a rewrite of this step ends
    last: bool  # the last thinking step (its rewrite may also end at </think>)
    follow: str = ""  # the trace's text after the piece (LOOKAHEAD_CHARS of it): where its piece is cut
    # (text, step-alone ids, piece ids: text + boundary as encoded before `follow`)
    kept: list[tuple[str, list[int], list[int]]] = dataclasses.field(default_factory=list)


@dataclass
class _TracePlan:
    ids: list[int]  # the prompt and trace as encoded in pieces (module docstring)
    whole: bool  # those ids equal the prompt and trace encoded whole
    jobs: list[_StepJob]


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


def _encode_many(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    if not texts:
        return []
    return [list(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


# Characters of the following text that a piece is encoded with: pre-tokenizers look at most a character
# or two past a piece's end (GPT-2's "\s+(?!\S)" one), so a few suffice to split the piece as in the whole.
LOOKAHEAD_CHARS = 16


def _encode_pieces(tokenizer: Any, texts: Sequence[str], follows: Sequence[str]) -> list[list[int]]:
    """Each text's tokens as the tokenizer splits it when `follow` comes after it (module docstring).

    text + follow[:LOOKAHEAD_CHARS] is encoded and cut where its first tokens decode to exactly the text. A
    text with nothing after it, a token that spans the cut, or a tokenizer whose decoding does not give the
    text back (the tiny world's word-level one, which already encodes pieces as the whole) gets the text's
    own tokens.
    """
    alone = _encode_many(tokenizer, texts)
    joined = _encode_many(tokenizer, [t + f[:LOOKAHEAD_CHARS] for t, f in zip(texts, follows, strict=True)])
    out: list[list[int]] = []
    for text, follow, ids, own in zip(texts, follows, joined, alone, strict=True):
        cut = _cut(tokenizer, ids, text, len(follow[:LOOKAHEAD_CHARS].encode())) if follow else None
        out.append(own if cut is None else ids[:cut])
    return out


def _cut(tokenizer: Any, ids: list[int], text: str, follow_bytes: int) -> int | None:
    """The k for which ids[:k] decodes to exactly `text`, None when there is none. The follow's tokens are at
    most its UTF-8 bytes, so only that many cuts from the end are tried."""
    for k in range(len(ids) - 1, max(0, len(ids) - follow_bytes - 1) - 1, -1):
        if tokenizer.decode(ids[:k], skip_special_tokens=False, clean_up_tokenization_spaces=False) == text:
            return k
    return None


def _plan(
    prompt: str, trace: str, index: int, tokenizer: Any, max_steps: int | None
) -> tuple[TraceCandidates, _TracePlan]:
    """The trace's steps (scores left empty), its ids in pieces and a job per searched step."""
    parts = reasoning_parts(trace, in_think=prompt_opens_think(prompt))
    steps = list(parts.steps)
    n = len(steps)
    opening = parts.tail[: len(parts.tail) - len(parts.tail.lstrip())]  # whitespace before </think>
    boundaries = [STEP_SEPARATOR] * (n - 1) + [opening] if n else []
    pieces = [prompt + parts.head] + [s + b for s, b in zip(steps, boundaries, strict=True)]
    pieces.append(parts.tail[len(opening) :] if n else parts.tail)
    full = prompt + trace
    covered = "".join(pieces)
    if full.startswith(covered):  # steps drop the whitespace that ends a plain trace: the last piece holds it
        pieces[-1] += full[len(covered) :]
    follows = [full[end : end + LOOKAHEAD_CHARS] for end in itertools.accumulate(len(p) for p in pieces)]
    piece_ids = _encode_pieces(tokenizer, pieces, follows)
    whole, *step_ids = _encode_many(tokenizer, [full, *steps])
    ids = [t for p in piece_ids for t in p]
    bounds = list(itertools.accumulate((len(p) for p in piece_ids), initial=0))
    starts, ends = bounds[1 : n + 1], bounds[2 : n + 2]  # step i is piece i + 1 (piece 0: prompt + head)
    # the answer step (no closed think block) and a step with nothing after it are not refined
    refinable = [
        not (i == n - 1 and not parts.closed) and ends[i] < len(ids) and bool(step_ids[i]) for i in range(n)
    ]
    searched = [i for i in range(n) if refinable[i]]
    if max_steps is not None and len(searched) > max_steps:
        searched = sorted(sorted(searched, key=lambda i: -len(step_ids[i]))[:max_steps])
    stops = (STEP_SEPARATOR, THINK_CLOSE) if parts.thinking else (STEP_SEPARATOR,)
    jobs = [
        _StepJob(
            trace=index,
            step=i,
            context_text=prompt + parts.head + (join_steps(steps[:i]) + STEP_SEPARATOR if i else ""),
            start=starts[i],
            end=ends[i],
            original=step_ids[i],
            boundary=boundaries[i],
            follow=follows[i + 1],
            stops=stops,
            last=i == n - 1,
        )
        for i in searched
    ]
    chosen = set(searched)
    cands = TraceCandidates(
        parts.head,
        tuple(StepCandidates(s, len(step_ids[i]), i in chosen) for i, s in enumerate(steps)),
        parts.tail,
    )
    return cands, _TracePlan(ids, ids == whole, jobs)


def _rewrite(job: _StepJob, text: str) -> str | None:
    """The step a completion proposes, or None when it is not a rewrite of this step."""
    ends = [(text.find(s), s) for s in job.stops if s in text]
    if not ends:
        return None  # never reached the step's end (the response ended, or max_step_tokens ran out)
    cut, stop = min(ends)
    if stop == THINK_CLOSE and not job.last:
        return None  # closed the thinking in place of a middle step
    body = text[:cut]
    if job.last:
        body = body.rstrip()  # the tail brings its own whitespace before </think>
    if not body.strip() or THINK_OPEN in body or THINK_CLOSE in body:
        return None
    return body


def _keep(job: _StepJob, completions: Sequence[Any], tokenizer: Any) -> None:
    """Candidate rewrites of a step: reached the step's end, non-blank, new, shorter than the original."""
    seen = {tuple(job.original)}
    for comp in completions:
        text = _rewrite(job, comp.text)
        if text is None:
            continue
        ids = _encode(tokenizer, text)
        if tuple(ids) in seen or len(ids) >= len(job.original):
            continue
        seen.add(tuple(ids))
        job.kept.append((text, ids, _encode_pieces(tokenizer, [text + job.boundary], [job.follow])[0]))


def _load_model(model_path: Path, trust_remote_code: bool, dtype: str) -> torch.nn.Module:
    """The scoring model, in eval mode, loaded straight onto the default device."""
    device = pick_device()
    model = load_causal_lm(
        model_path, dtype=pick_dtype(dtype, device), trust_remote_code=trust_remote_code, device=device
    )
    return model.to(device).eval()


def score_trace(
    model: torch.nn.Module,
    plan: _TracePlan,
    spec: RefinementSpec,
    pad_id: int,
    head: LMHead,
    prefix_cache: bool = True,
) -> dict[int, list[float]]:
    """KL of every kept rewrite of every searched step of one trace, by step index.

    With `prefix_cache`, the trace runs through the model once and each step reuses its context's keys and
    values; without, every row runs its whole context (same values, benchmarks/bench_refine_prefix.py).
    """
    jobs = [job for job in plan.jobs if job.kept]
    if not jobs:
        return {}
    prefix = encode_prefix(model, plan.ids[: max(job.start for job in jobs)]) if prefix_cache else None
    return {
        job.step: score_step(
            model,
            plan.ids[: job.start],
            plan.ids[job.start : job.end],
            [piece for _, _, piece in job.kept],
            plan.ids[job.end :],
            spec.window,
            spec.batch_size,
            spec.kl_reduction,
            pad_id,
            prefix=prefix,
            head=head,
        )
        for job in jobs
    }


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
    prefix_cache: bool = True,
) -> list[TraceCandidates]:
    """Scored candidates for many (prompt, trace) pairs; cached per trace, computed in batches.

    Generation is batched across all steps of all uncached traces (grouped by where their rewrites stop);
    scoring runs trace by trace, each step's original and candidates in shared batches, the trace's prefix
    reused (`prefix_cache`; False runs every row's whole context, for benchmarks: the same KLs up to the
    model dtype's rounding, and the cache key does not tell them apart). Pass `model`/`tokenizer` to reuse a
    loaded model for scoring.
    """
    model_path = Path(model_path)
    fingerprint = model_fingerprint(model_path)
    precision = str(pick_dtype(dtype, pick_device()))
    keys = [candidates_key(fingerprint, precision, backend.name, p, t, spec) for p, t in traces]
    results: list[TraceCandidates | None] = [load_candidates(cache, key) for key in keys]
    missing = [i for i, r in enumerate(results) if r is None]
    if not missing:
        return [r for r in results if r is not None]

    if tokenizer is None:
        tokenizer = load_tokenizer(model_path, trust_remote_code=trust_remote_code)
    planned: dict[int, TraceCandidates] = {}
    plans: dict[int, _TracePlan] = {}
    for i in missing:
        planned[i], plans[i] = _plan(traces[i][0], traces[i][1], i, tokenizer, spec.max_steps_per_trace)
    split = sum(not plan.whole for plan in plans.values())
    if split:
        log.warning(
            "refinement: %d of %d traces tokenize differently in step pieces than whole; their rows hold "
            "the pieces' tokens",
            split,
            len(plans),
        )

    jobs = [job for plan in plans.values() for job in plan.jobs]
    for stops in sorted({job.stops for job in jobs}):
        group = [job for job in jobs if job.stops == stops]
        settings = SamplingSettings(
            n=spec.k,
            temperature=spec.temperature,
            max_new_tokens=spec.max_step_tokens,
            seed=spec.seed,
            stop=stops,
        )
        # One call per group: the engine batches every step's k rewrites itself (`refinement.batch_size`
        # bounds scoring rows only; chunking generation by it left the engine under-filled).
        log.info("refinement: sampling %d x %d step rewrites", len(group), spec.k)
        outputs = backend.generate([job.context_text for job in group], settings)
        for job, completions in zip(group, outputs, strict=True):
            _keep(job, completions, tokenizer)

    # The scoring model loads only once the rewrites are sampled, with the backend asleep (vLLM on CUDA: its
    # GPU memory goes to the scoring model; a no-op elsewhere), and it is freed before the backend wakes.
    # No rewrite kept anywhere: nothing to score, no model to load.
    loaded = model is None and any(job.kept for job in jobs)
    with backend.asleep() if loaded else nullcontext():
        if loaded:
            model = _load_model(model_path, trust_remote_code, dtype)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        head = None if model is None else LMHead(model)
        for i in tqdm(missing, desc="refinement: scoring rewrites (KL)", unit="trace"):
            plan = plans[i]
            scores = {} if model is None or head is None else score_trace(model, plan, spec, pad_id, head,
                                                                          prefix_cache)  # fmt: skip
            kept = {job.step: job.kept for job in plan.jobs}
            steps = tuple(
                dataclasses.replace(
                    step,
                    candidates=tuple(
                        Candidate(text, len(ids), kl)
                        for (text, ids, _), kl in zip(kept.get(s, []), scores.get(s, []), strict=True)
                    ),
                )
                for s, step in enumerate(planned[i].steps)
            )
            results[i] = store_candidates(cache, keys[i], dataclasses.replace(planned[i], steps=steps))
        del head
        if loaded:
            del model
            release_accelerator_memory()
    return [r for r in results if r is not None]


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
