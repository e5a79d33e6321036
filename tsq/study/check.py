"""`tsq sweep check`: before a sweep spends compute, say for each searched knob whether it can change what a
trial computes (docs/sweeps.md, "Checking knobs before a sweep").

A knob is in one of four states:
- **live**: two values of its range give trials different inputs (pairs, refined texts, a loss term, ...);
- **inert**: every value of its range gives the same trial (e.g. α when every α selects k = 1);
- **moot**: a setting of another knob removes the term the knob acts on (λ under `dpo`, ε with refinement off,
  α under `shortest`);
- **unknown**: the answer needs data that is not cached yet (ε before any candidates exist).

It reads the spec and the cache only: it never loads, builds or downloads a model. α is judged on the cached
self-samples when the cache holds them under the exact key `tsq.engines.sample` uses (forming that key reads the
model's files for their hash and its tokenizer for the prompts, both local), else on the k-table of
`sampling.n` alone (docs/method.md, section 1). ε is judged on the cached step candidates of those samples.

Everything below `check_spec` is pure (hand-checked in tests/test_check.py); only `load_cached_inputs` and
`load_cached_candidates` touch the cache.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from tsq.config.knobs import KNOBS, spec_value
from tsq.config.space import Categorical, FloatRange, IntRange, Range, grid_values
from tsq.engines.gguf_import import imported_model, is_import_name
from tsq.errors import UserError
from tsq.method.losses import LOSSES
from tsq.method.select import SELECTION_VARIANTS, n_positives, select_pairs

if TYPE_CHECKING:
    from tsq.cache import Cache
    from tsq.config.spec import Spec
    from tsq.data.traces import Response
    from tsq.method.refinement import TraceCandidates

log = logging.getLogger(__name__)

State = Literal["live", "inert", "moot", "unknown"]
GRID = 16  # α values tried across its range (the figure); ends included
N_SEARCH_LIMIT = 4096  # the largest sampling.n a remedy proposes


@dataclass(frozen=True)
class Finding:
    """What `sweep check` says about one searched knob."""

    knob: str
    state: State
    reason: str  # one line; for an inert or moot knob it carries the remedy
    distinct: int | None = None  # distinct trial inputs across the range (α: pair sets; ε: refinements)
    warnings: tuple[str, ...] = ()  # e.g. an ε range below the KL noise floor, a choice equal to another

    @property
    def live(self) -> bool | None:
        return None if self.state == "unknown" else self.state == "live"

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "live": self.live,
            "distinct": self.distinct,
            "reason": self.reason,
            "warnings": list(self.warnings),
        }

    def line(self) -> str:
        return f"{self.knob}: {self.state}: {self.reason}"


# -- the values a study can give a knob ----------------------------------------------------------------------
def knob_values(spec: Spec, name: str) -> list[Any]:
    """Every value knob `name` takes across the study, in search-space terms: a categorical's choices, the
    fixed value of `study.search`, or the spec's own value when the study does not search it (numeric
    ranges: the grid of `range_grid`)."""
    entry = spec.study.search.get(name)
    if entry is None:
        return [spec_value(spec, KNOBS[name])]
    if isinstance(entry, FloatRange | IntRange | Categorical):
        return range_grid(entry)
    return [entry]


def range_grid(entry: Range, n: int = GRID) -> list[Any]:
    """`n` values spread over a range, ends included (log-spaced on a log range; on a range with a step, its
    grid values, thinned evenly to `n`); a categorical's choices."""
    if isinstance(entry, Categorical):
        return list(entry.choices)
    if entry.step is not None and not entry.log:
        values = grid_values(entry)
        if len(values) <= n:
            return values
        picks = sorted({round(i * (len(values) - 1) / (n - 1)) for i in range(n)})
        return [values[i] for i in picks]
    if entry.low == entry.high:
        return [entry.low]
    space = np.geomspace if entry.log else np.linspace
    values = [float(v) for v in space(entry.low, entry.high, n)]
    values[0], values[-1] = entry.low, entry.high  # exact ends (geomspace rounds them)
    if isinstance(entry, IntRange):
        return sorted({round(v) for v in values})
    return values


def _bounds(entry: Range) -> tuple[Any, Any]:
    if isinstance(entry, Categorical):
        return entry.choices[0], entry.choices[-1]
    return entry.low, entry.high


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _span(entry: Range) -> str:
    if isinstance(entry, Categorical):
        return "{" + ", ".join(map(str, entry.choices)) + "}"
    return f"[{_fmt(entry.low)}, {_fmt(entry.high)}]"


# -- α: the k-table (docs/method.md, section 1) --------------------------------------------------------------
def k_vector(alpha: float, n: int, variant: str, min_positives: int = 1) -> tuple[int, ...]:
    """k, the number of positives, for each count of correct responses c = 1 … n−1 (c = 0 and c = n give no
    pair): the row of the k-table at this α."""
    return tuple(n_positives(c, n, alpha, variant, min_positives) for c in range(1, n))


def distinct_k_vectors(
    alphas: Iterable[float], n: int, variant: str, min_positives: int = 1
) -> list[tuple[int, ...]]:
    """The distinct k-table rows over `alphas`, in order of first appearance."""
    return list(dict.fromkeys(k_vector(a, n, variant, min_positives) for a in alphas))


def _gain(c: np.ndarray | int, n: int, variant: str) -> Any:
    """q·c / α: (1 − c/n)·c under a dynamic quantile, c under a fixed one."""
    return (1 - c / n) * c if SELECTION_VARIANTS[variant].quantile == "dynamic" else c


def alpha_threshold(high: float, n: int, variant: str, min_positives: int = 1) -> float | None:
    """The α above which some k grows past its value at `high` (k = max(m, ⌈α·g(c)⌉) reaches t + 1 once
    α·g(c) > t); None when no k can grow (k = c everywhere, or `shortest`)."""
    if not SELECTION_VARIANTS[variant].uses_alpha:
        return None
    best: float | None = None
    for c in range(1, n):
        k = n_positives(c, n, high, variant, min_positives)
        gain = float(_gain(c, n, variant))
        if k < c and gain > 0:
            at = k / gain
            best = at if best is None else min(best, at)
    return best


def _k_row(alpha: float, n: int, variant: str, min_positives: int) -> np.ndarray:
    # vectorised n_positives (same rounding guard), for the remedy's scan over n
    c = np.arange(1, n)
    q_c = alpha * _gain(c, n, variant)
    return np.minimum(c, np.maximum(min_positives, np.ceil(np.round(q_c, 9))))


def smallest_n_live(
    low: float, high: float, variant: str, min_positives: int = 1, start: int = 2
) -> int | None:
    """The smallest sampling.n ≥ `start` at which α = low and α = high give different k-table rows (k is
    non-decreasing in α, so the whole range is then live); None up to N_SEARCH_LIMIT."""
    if not SELECTION_VARIANTS[variant].uses_alpha:
        return None
    for n in range(max(start, 2), N_SEARCH_LIMIT + 1):
        fast_differs = not np.array_equal(
            _k_row(low, n, variant, min_positives), _k_row(high, n, variant, min_positives)
        )
        # confirmed with the exact rule (the scan's rounding is numpy's)
        if fast_differs and k_vector(low, n, variant, min_positives) != k_vector(
            high, n, variant, min_positives
        ):
            return n
    return None


def alpha_remedy(
    low: float, high: float, n: int, variant: str, min_positives: int = 1, paper: float | None = 0.2
) -> str:
    """What makes an inert α range live: the smallest sampling.n at which the range's ends differ (with the α
    above which k then moves, and the sampling.n the paper's α = 0.2 needs when it lies in the range), or the
    α above the range where k first changes at this sampling.n."""
    options = []
    n_live = smallest_n_live(low, high, variant, min_positives, start=n + 1)
    if n_live is not None:
        text = f"raise sampling.n to >= {n_live}"
        moves = alpha_threshold(low, n_live, variant, min_positives)
        notes = [f"then α > {moves:.4g} moves k"] if moves is not None and moves > low else []
        if paper is not None and low < paper <= high:
            n_paper = smallest_n_live(low, paper, variant, min_positives, start=n + 1)
            if n_paper is not None and n_paper != n_live:
                notes.append(f"α = {paper:g} needs >= {n_paper}")
        options.append(text + (f" ({'; '.join(notes)})" if notes else ""))
    above = alpha_threshold(high, n, variant, min_positives)
    if above is not None and above < 1.0:  # α ≤ 1 is the spec's bound
        options.append(f"the range above {above:.4g}")
    return " or ".join(options) if options else "widen the range"


def _k_summary(row: tuple[int, ...]) -> str:
    values = sorted(set(row))
    return f"k = {values[0]}" if len(values) == 1 else f"k in {values[0]}..{values[-1]}"


# -- α on cached samples -------------------------------------------------------------------------------------
PairSet = tuple[tuple[str, tuple[tuple[int, int], ...]], ...]


def pair_set(
    samples: Mapping[str, Sequence[Response]], alpha: float, selection: Any, variant: str
) -> PairSet:
    """The pairs `tsq.method.select.build_pairs` forms at α, as (problem id, (chosen index, rejected index) ...)."""
    return tuple(
        (
            pid,
            tuple(
                select_pairs(
                    [r.n_tokens for r in samples[pid]],
                    [r.correct for r in samples[pid]],
                    alpha,
                    variant=variant,
                    max_pairs=selection.max_pairs,
                    extra_neg_ratio=selection.extra_neg_ratio,
                    min_positives=selection.min_positives,
                )
            ),
        )
        for pid in sorted(samples)
    )


def _samples_remedy(low: float, high: float, n: int, variant: str, min_positives: int) -> str:
    """The remedy when the samples are inert: the k-table's, unless the k-table already moves at this
    sampling.n, and only no problem has a c where it does."""
    k_low = k_vector(low, n, variant, min_positives)
    k_high = k_vector(high, n, variant, min_positives)
    moving = [c for c, (a, b) in enumerate(zip(k_low, k_high, strict=True), start=1) if a != b]
    if not moving:
        return alpha_remedy(low, high, n, variant, min_positives)
    cs = ", ".join(map(str, moving))
    return (
        f"k changes only at c = {cs} correct of {n}, and no problem has such a c: sample more problems, or "
        "problems of middling difficulty"
    )


def _n_pairs(pairs: PairSet) -> int:
    return sum(len(p) for _, p in pairs)


def check_alpha(
    spec: Spec, entry: Range, samples: Mapping[str, Sequence[Response]] | None, why_no_samples: str = ""
) -> Finding:
    """α: distinct pair sets over a 16-value grid of its range, per selection variant the study proposes."""
    variants = sorted({str(v) for v in knob_values(spec, "selection_variant")})
    using = [v for v in variants if SELECTION_VARIANTS[v].uses_alpha]
    if not using:
        return Finding(
            "alpha", "moot", f"selection.variant {'/'.join(variants)} ignores α (k = 1); use q-dyn or q-fix"
        )
    moot_under = [v for v in variants if v not in using]
    note = f"; moot under {', '.join(moot_under)}" if moot_under else ""
    alphas = [float(a) for a in range_grid(entry)]
    low, high = min(alphas), max(alphas)
    n, m = spec.sampling.n, spec.selection.min_positives
    if samples is not None:
        counts = {}
        for variant in using:
            sets = [pair_set(samples, a, spec.selection, variant) for a in alphas]
            counts[variant] = (len(set(sets)), _n_pairs(sets[0]), _n_pairs(sets[-1]))
        distinct = max(c[0] for c in counts.values())
        where = f"on the cached self-samples ({len(samples)} problems x {n})"
        detail = ", ".join(
            ("" if len(using) == 1 else f"{v}: ")
            + f"{d} distinct pair sets ({lo_n} pairs at α = {_fmt(low)}, {hi_n} at α = {_fmt(high)})"
            for v, (d, lo_n, hi_n) in counts.items()
        )
        if distinct > 1:
            return Finding(
                "alpha",
                "live",
                f"{len(alphas)} values in {_span(entry)} give {detail} {where}{note}",
                distinct,
            )
        remedies = "; ".join(
            ("" if len(using) == 1 else f"{v}: ") + _samples_remedy(low, high, n, v, m) for v in using
        )
        n_pairs = counts[using[0]][1]
        return Finding(
            "alpha",
            "inert",
            f"every value in {_span(entry)} selects the same {n_pairs} pairs {where}; {remedies}{note}",
            1,
        )
    rows = {v: distinct_k_vectors(alphas, n, v, m) for v in using}
    distinct = max(len(r) for r in rows.values())
    source = f"k-table at sampling.n = {n}" + (
        f" (no cached self-samples: {why_no_samples})" if why_no_samples else ""
    )
    if distinct > 1:
        detail = ", ".join(
            ("" if len(using) == 1 else f"{v}: ")
            + f"{len(r)} distinct k-table rows ({_k_summary(r[0])} at α = {_fmt(low)}, "
            f"{_k_summary(r[-1])} at α = {_fmt(high)})"
            for v, r in rows.items()
        )
        return Finding(
            "alpha", "live", f"{len(alphas)} values in {_span(entry)} give {detail}; {source}{note}", distinct
        )
    parts = []
    for v in using:
        parts.append(
            f"{'' if len(using) == 1 else v + ': '}every value in {_span(entry)} selects "
            f"{_k_summary(rows[v][0])} at sampling.n = {n}; {alpha_remedy(low, high, n, v, m)}"
        )
    tail = "" if not why_no_samples else f" (k-table; no cached self-samples: {why_no_samples})"
    return Finding("alpha", "inert", "; ".join(parts) + note + tail, 1)


# -- ε on cached candidates ---------------------------------------------------------------------------------
def refinement_breakpoints(cands: TraceCandidates, low: float, high: float) -> set[float]:
    """The ε in (low, high] at which `refine_trace` changes this trace's text (rule: KL < ε)."""
    from tsq.method.refinement import refine_trace

    kls = sorted({c.kl for s in cands.steps for c in s.candidates if low <= c.kl < high})
    points: set[float] = set()
    text = refine_trace(cands, low).text
    for kl in kls:
        eps = math.nextafter(kl, math.inf)
        new = refine_trace(cands, eps).text
        if new != text:
            points.add(eps)
            text = new
    return points


def check_epsilon(
    spec: Spec, entry: Range, candidates: Sequence[TraceCandidates] | None, why_none: str, n_traces: int = 0
) -> Finding:
    """ε: moot with refinement off; else the share of steps rewritten at both ends, from cached candidates."""
    enabled = {KNOBS["refinement"].to_spec(v) for v in knob_values(spec, "refinement")}
    if True not in enabled:
        return Finding("epsilon", "moot", "refinement is off for every trial; search ε with refinement on")
    values = [float(v) for v in range_grid(entry)]
    low, high = min(values), max(values)
    warnings = []
    floor = _noise_floor(spec.model.dtype)
    if floor is not None and low <= floor:
        warnings.append(
            f"epsilon: the range starts at {_fmt(low)}, at or below the KL noise floor {floor:g} of "
            f"model.dtype {spec.model.dtype}: values there measure rounding, not wording"
        )
    note = "; moot when refinement is off" if False in enabled else ""
    if not candidates:
        return Finding(
            "epsilon",
            "unknown",
            f"no refinement candidates cached ({why_none}); run one trial (tsq trial run SPEC) and check "
            "again",
            None,
            tuple(warnings),
        )
    from tsq.method.refinement import refine_trace

    steps = sum(len(c.steps) for c in candidates)
    at_low = sum(refine_trace(c, low).n_rewritten for c in candidates)
    at_high = sum(refine_trace(c, high).n_rewritten for c in candidates)
    points: set[float] = set()
    for c in candidates:
        points |= refinement_breakpoints(c, low, high)
    distinct = (
        1 + len(points)
        if isinstance(entry, FloatRange | IntRange)
        else len({tuple(refine_trace(c, float(v)).text for c in candidates) for v in values})
    )
    cached = f"{len(candidates)} positives" + (f" of {n_traces}" if n_traces > len(candidates) else "")
    shares = (
        f"rewrites {at_low} of {steps} steps ({at_low / max(1, steps):.0%}) at ε = {_fmt(low)} and {at_high} "
        f"({at_high / max(1, steps):.0%}) at ε = {_fmt(high)} on the cached candidates of {cached}"
    )
    if distinct > 1:
        return Finding(
            "epsilon", "live", f"{shares}; {distinct} distinct refinements{note}", distinct, tuple(warnings)
        )
    kls = sorted(c.kl for t in candidates for s in t.steps for c in s.candidates)
    if not kls:
        remedy = "no step has a shorter rewrite: raise refinement.k or refinement.max_step_tokens"
    elif at_high == 0:
        remedy = f"the smallest candidate KL is {kls[0]:.3g}: raise the range's top above it"
    else:
        remedy = f"the candidates' KLs lie in [{kls[0]:.3g}, {kls[-1]:.3g}]: put the range across them"
    return Finding("epsilon", "inert", f"{shares}; {remedy}{note}", 1, tuple(warnings))


def _noise_floor(dtype: str) -> float | None:
    # the refine module documents its scoring noise floor per dtype; absent there, nothing to warn about
    try:
        from tsq.engines import refine
    except ImportError:
        return None
    floor = getattr(refine, "kl_noise_floor", None)
    if floor is None:
        return None
    try:
        return float(floor(dtype))
    except ValueError:
        return None


# -- the other knobs -----------------------------------------------------------------------------------------
def _moot_by_loss(spec: Spec, name: str, entry: Range) -> Finding | None:
    losses = [str(v) for v in knob_values(spec, "loss")]
    if name == "beta":
        without = [lo for lo in losses if not LOSSES[lo].dpo]
        term = "preference (DPO) term"
    else:
        without = [lo for lo in losses if name in LOSSES[lo].moot_knobs()]
        term = {"lambda": "length-margin term (DPO-L)", "eta": "η-weighted SFT term"}[name]
    if not without:
        return None
    with_term = [lo for lo in LOSSES if lo not in without and (name != "beta" or LOSSES[lo].dpo)]
    if len(without) == len(losses):
        which = "training.loss " + "/".join(without)
        return Finding(
            name,
            "moot",
            f"{which} has no {term}; use a loss with it ({', '.join(with_term)}) or stop searching {name}",
        )
    return Finding(
        name, "live", f"{len(range_grid(entry))} values over {_span(entry)}; moot under {', '.join(without)}"
    )


def check_plain(spec: Spec, name: str, entry: Range) -> Finding:
    """β, lr, LoRA rank and the categorical switches: live unless the range holds one value or a loss the
    study proposes removes their term."""
    values = range_grid(entry)
    if len(values) < 2 or (not isinstance(entry, Categorical) and entry.low == entry.high):
        return Finding(
            name, "inert", f"the range {_span(entry)} holds one value; fix it in study.search or widen it", 1
        )
    if name in ("lambda", "eta", "beta"):
        found = _moot_by_loss(spec, name, entry)
        if found is not None:
            return found
    lo, hi = _bounds(entry)
    if isinstance(entry, Categorical):
        return Finding(name, "live", f"{len(values)} choices {_span(entry)}", len(values))
    return Finding(name, "live", f"{len(values)} grid values over [{_fmt(lo)}, {_fmt(hi)}]")


def check_variants(
    spec: Spec, entry: Categorical, samples: Mapping[str, Sequence[Response]] | None
) -> Finding:
    """selection_variant: choices that select the same pairs at every α the study gives (e.g. q-dyn and
    `shortest` when every α selects k = 1) are one choice; inert when all coincide."""
    alphas = [float(a) for a in knob_values(spec, "alpha")]
    n, m = spec.sampling.n, spec.selection.min_positives

    def signature(variant: str) -> Any:
        if samples is not None:
            return tuple(pair_set(samples, a, spec.selection, variant) for a in alphas)
        rows = tuple(k_vector(a, n, variant, m) for a in alphas)
        return (SELECTION_VARIANTS[variant].extra_negatives, rows)

    groups: dict[Any, list[str]] = {}
    for choice in entry.choices:
        groups.setdefault(signature(str(choice)), []).append(str(choice))
    where = "on the cached self-samples" if samples is not None else f"by the k-table at sampling.n = {n}"
    alpha_txt = _fmt(alphas[0]) if len(alphas) == 1 else f"[{_fmt(min(alphas))}, {_fmt(max(alphas))}]"
    same = [g for g in groups.values() if len(g) > 1]
    warnings = tuple(
        f"selection_variant: {' = '.join(g)}: the same pairs at α = {alpha_txt} {where}" for g in same
    )
    if len(groups) == 1:
        return Finding(
            "selection_variant",
            "inert",
            f"every choice selects the same pairs at α = {alpha_txt} {where}; "
            f"{alpha_remedy(min(alphas), max(alphas), n, 'q-dyn', m)}",
            1,
            warnings,
        )
    return Finding(
        "selection_variant",
        "live",
        f"{len(groups)} distinct pair sets from {len(entry.choices)} choices at α = {alpha_txt} {where}",
        len(groups),
        warnings,
    )


# -- reading the cache ---------------------------------------------------------------------------------------
@dataclass
class CachedInputs:
    """What the cache holds for a spec: its self-samples (None: see why_not) and the prompts behind them."""

    samples: dict[str, list[Response]] | None = None
    prompts: dict[str, str] = field(default_factory=dict)
    model_path: Path | None = None
    why_not: str = ""


def _local_model(spec: Spec) -> Path | str:
    """The model's local directory without building or downloading it, or why there is none."""
    if spec.model.path == "tiny":
        from tsq.engines.tiny_model import tiny_model

        try:
            return tiny_model(spec.model.tiny_variant)
        except UserError as err:
            return str(err)
    local = Path(spec.model.path).expanduser()
    if not local.exists() and is_import_name(spec.model.path):
        try:
            return imported_model(spec.model.path)
        except UserError as err:
            return str(err)
    if local.exists():
        return local if (local / "config.json").is_file() else f"{local} is not a model directory"
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(spec.model.path, local_files_only=True))
    except Exception:  # not in the local HF cache, or not a hub id: either way nothing to read
        return f"{spec.model.path} is not in the local HF cache"


def load_cached_inputs(spec: Spec, cache: Cache, *, hub_data: bool = False) -> CachedInputs:
    """The spec's self-samples if the cache holds them under `tsq.engines.sample`'s key; never computes them.

    `hub_data`: allow reading a hub dataset's problems (through the datasets cache, which may download); off
    for `sweep check`, on in `sweep launch` after its preflight has loaded them anyway."""
    model = _local_model(spec)
    if not isinstance(model, Path):
        return CachedInputs(why_not=model)
    source = spec.data.source
    if source != "tiny" and not hub_data and not Path(source).expanduser().is_file():
        return CachedInputs(why_not=f"data.source {source} is a hub dataset (not read by the check)")
    # imported here: transformers (the tokenizer) is a slow import a check without a local model skips
    from tsq.data.formatting import format_prompt
    from tsq.data.loading import load_problem_set
    from tsq.engines.models import load_tokenizer
    from tsq.engines.sample import STAGE, samples_key, sampling_settings

    try:
        problems = load_problem_set(spec.data, "train")
        tokenizer = load_tokenizer(model, spec.model.trust_remote_code)
        prompts = {p.id: format_prompt(tokenizer, p) for p in problems.problems}
        key = samples_key(
            model, problems, list(prompts.values()), sampling_settings(spec.sampling), spec.sampling.backend
        )
    except (UserError, OSError, ValueError) as exc:
        return CachedInputs(why_not=str(exc))
    raw = cache.get_json(STAGE, key)
    if raw is None:
        return CachedInputs(model_path=model, why_not="none cached for this model, train split and sampling")
    from tsq.data.traces import Response

    samples = {pid: [Response(**r) for r in rs] for pid, rs in raw.items()}
    return CachedInputs(samples, prompts, model)


def load_cached_candidates(
    spec: Spec, inputs: CachedInputs, cache: Cache
) -> tuple[list[TraceCandidates], int, str]:
    """Cached candidates for the positives at the largest α the study can propose (what the trial program
    computes them for); (found, traces asked for, why none)."""
    if inputs.samples is None or inputs.model_path is None:
        return [], 0, f"no cached self-samples: {inputs.why_not}"
    from tsq.engines.candidate_store import CACHE_STAGE, candidates_key
    from tsq.engines.models import model_fingerprint
    from tsq.method.refinement import TraceCandidates

    top = max(float(a) for a in knob_values(spec, "alpha"))
    traces = sorted(
        {
            (inputs.prompts[pid], inputs.samples[pid][ci].text)
            for variant in {str(v) for v in knob_values(spec, "selection_variant")}
            for pid, pairs in pair_set(inputs.samples, top, spec.selection, variant)
            for ci, _ in pairs
        }
    )
    if not traces:
        return [], 0, "selection gives no pairs"
    fingerprint = model_fingerprint(inputs.model_path)
    # the key records the scoring precision, which depends on the machine that ran the trial: try each
    for precision in ("torch.float32", "torch.bfloat16", "torch.float16"):
        keys = [
            candidates_key(fingerprint, precision, spec.sampling.backend, p, t, spec.refinement)
            for p, t in traces
        ]
        raw = [cache.get_json(CACHE_STAGE, k) for k in keys]
        found = [TraceCandidates.from_json(r) for r in raw if r is not None]
        if found:
            return found, len(traces), ""
    return [], len(traces), "none for these positives"


# -- the check -----------------------------------------------------------------------------------------------
def check_spec(spec: Spec, cache: Cache | None = None, *, hub_data: bool = False) -> dict[str, Finding]:
    """One finding per searched knob, in `study.search` order."""
    searched = spec.study.searched
    inputs = CachedInputs(why_not="no cache given")
    needs_data = {"alpha", "epsilon", "selection_variant"} & set(searched)
    if cache is not None and needs_data:
        inputs = load_cached_inputs(spec, cache, hub_data=hub_data)
    findings: dict[str, Finding] = {}
    for name, entry in searched.items():
        if name == "alpha":
            findings[name] = check_alpha(spec, entry, inputs.samples, inputs.why_not)
        elif name == "epsilon":
            if cache is None:
                found, asked, why = [], 0, "no cache given"
            else:
                found, asked, why = load_cached_candidates(spec, inputs, cache)
            findings[name] = check_epsilon(spec, entry, found, why, asked)
        elif name == "selection_variant" and isinstance(entry, Categorical):
            findings[name] = check_variants(spec, entry, inputs.samples)
        else:
            findings[name] = check_plain(spec, name, entry)
    return findings


def report_json(findings: Mapping[str, Finding]) -> dict[str, Any]:
    return {"knobs": {name: f.to_json() for name, f in findings.items()}}


def program_check(spec: Spec, gpu: str = "h100") -> Any:
    """The trial program's own check, when it has one (a `check` attribute, `check(spec, gpu) -> report`;
    TokenSqueeze's is its GPU plan, tsq.engines.gpu_plan.Plan: `lines()`, `to_json()`, `misfits()`), for specs that
    sample with vLLM (GPU specs; loading a program imports its engines, so HF specs skip it). None: none."""
    if spec.sampling.backend != "vllm":
        return None
    import contextlib
    import sys

    from tsq.recipe import load_program

    # what the program's imports print (W&B's offline notice) must not mix into `--json` on stdout
    with contextlib.redirect_stdout(sys.stderr):
        check = getattr(load_program(spec.study.program), "check", None)
    return None if check is None else check(spec, gpu)


def warn_before_launch(spec: Spec) -> None:
    """`sweep launch`: log one warning per searched knob that is not live (and each finding's warnings).

    Spawned workers (TSQ_WORKER_INDEX) skip it: the launching process has said it once."""
    if os.environ.get("TSQ_WORKER_INDEX"):
        return
    from tsq.cache import Cache, cache_dir_of

    try:
        findings = check_spec(spec, Cache(cache_dir_of(spec.cache_dir)), hub_data=True)
    except Exception as exc:  # a report must never stop a launch
        log.warning("sweep check: could not check the knobs (%s)", exc)
        return
    for finding in findings.values():
        if finding.state != "live":
            log.warning("sweep check: %s", finding.line())
        for warning in finding.warnings:
            log.warning("sweep check: %s", warning)
    try:
        report = program_check(spec)
    except Exception as exc:  # a report must never stop a launch
        log.warning("sweep check: the program's check failed (%s)", exc)
        return
    for stage in [] if report is None else report.misfits():
        log.warning("sweep check: GPU plan: %s", stage.line())
