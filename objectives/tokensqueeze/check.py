"""TokenSqueeze's knob check (`tsq sweep check`): before a sweep spends compute, say for each searched knob
whether it can change what a trial computes (docs/sweeps.md, "Checking knobs before a sweep"; the four states
are `tsq.recipe.Finding`'s): e.g. α is inert when every α selects k = 1, λ is moot under `dpo`, ε with
refinement off, α under `shortest`; ε is unknown before any candidates exist.

It reads the spec and the cache only: it never loads, builds or downloads a model. α is judged on the cached
self-samples when the cache holds them under the exact key `tsq.engines.sample` uses (forming that key reads
the model's files for their hash and its tokenizer for the prompts, both local), else on the k-table of
`sampling.n` alone (docs/method.md, section 1). ε is judged on the cached step candidates of those samples.

Everything below `check_spec` is pure (hand-checked in tests/test_check.py); only `load_cached_inputs` and
`load_cached_candidates` touch the cache.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from objectives.tokensqueeze.config import KNOBS, TokenSqueezeSpec
from objectives.tokensqueeze.cover import covering_pairs
from tsq.config.knobs import spec_value
from tsq.config.space import Categorical, FloatRange, IntRange, Range, range_grid
from tsq.engines.gguf_import import imported_model, is_import_name
from tsq.errors import UserError
from tsq.method.losses import LOSSES
from tsq.method.refinement import refine_trace, refinement_breakpoints, restrict
from tsq.method.select import SELECTION_VARIANTS, k_table, n_positives, select_pairs
from tsq.recipe import Finding, fmt_value, plain_finding, scope_of, span_of

if TYPE_CHECKING:
    from tsq.cache import Cache
    from tsq.data.traces import Response
    from tsq.method.refinement import TraceCandidates

log = logging.getLogger(__name__)

N_SEARCH_LIMIT = 4096  # the largest sampling.n a remedy proposes


# -- the values a study can give a knob ----------------------------------------------------------------------
def knob_values(spec: TokenSqueezeSpec, name: str) -> list[Any]:
    """Every value knob `name` takes across the study, in search-space terms: a categorical's choices, the
    fixed value of `study.search`, or the spec's own value when the study does not search it (numeric
    ranges: the grid of `range_grid`)."""
    entry = spec.study.search.get(name)
    if entry is None:
        return [spec_value(spec, KNOBS[name])]
    if isinstance(entry, FloatRange | IntRange | Categorical):
        return range_grid(entry)
    return [entry]


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


def smallest_n_live(
    low: float, high: float, variant: str, min_positives: int = 1, start: int = 2
) -> int | None:
    """The smallest sampling.n ≥ `start` at which α = low and α = high give different k-table rows (k is
    non-decreasing in α, so the whole range is then live); None up to N_SEARCH_LIMIT."""
    if not SELECTION_VARIANTS[variant].uses_alpha:
        return None
    for n in range(max(start, 2), N_SEARCH_LIMIT + 1):
        if not np.array_equal(
            k_table(low, n, variant, min_positives), k_table(high, n, variant, min_positives)
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
    """The pairs `tsq.method.select.build_pairs` forms at α: (problem id, ((chosen, rejected) index, ...))."""
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
    spec: TokenSqueezeSpec,
    entry: Range,
    samples: Mapping[str, Sequence[Response]] | None,
    why_no_samples: str = "",
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
            + f"{d} distinct pair sets ({lo_n} pairs at α = {fmt_value(low)}, "
            + f"{hi_n} at α = {fmt_value(high)})"
            for v, (d, lo_n, hi_n) in counts.items()
        )
        if distinct > 1:
            return Finding(
                "alpha",
                "live",
                f"{len(alphas)} values in {span_of(entry)} give {detail} {where}{note}",
                distinct,
            )
        remedies = "; ".join(
            ("" if len(using) == 1 else f"{v}: ") + _samples_remedy(low, high, n, v, m) for v in using
        )
        n_pairs = counts[using[0]][1]
        return Finding(
            "alpha",
            "inert",
            f"every value in {span_of(entry)} selects the same {n_pairs} pairs {where}; {remedies}{note}",
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
            + f"{len(r)} distinct k-table rows ({_k_summary(r[0])} at α = {fmt_value(low)}, "
            f"{_k_summary(r[-1])} at α = {fmt_value(high)})"
            for v, r in rows.items()
        )
        return Finding(
            "alpha",
            "live",
            f"{len(alphas)} values in {span_of(entry)} give {detail}; {source}{note}",
            distinct,
        )
    parts = []
    for v in using:
        parts.append(
            f"{'' if len(using) == 1 else v + ': '}every value in {span_of(entry)} selects "
            f"{_k_summary(rows[v][0])} at sampling.n = {n}; {alpha_remedy(low, high, n, v, m)}"
        )
    tail = "" if not why_no_samples else f" (k-table; no cached self-samples: {why_no_samples})"
    return Finding("alpha", "inert", "; ".join(parts) + note + tail, 1)


# -- ε on cached candidates ---------------------------------------------------------------------------------
def check_epsilon(
    spec: TokenSqueezeSpec,
    entry: Range,
    candidates: Sequence[TraceCandidates] | None,
    why_none: str,
    n_traces: int = 0,
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
            f"epsilon: the range starts at {fmt_value(low)}, at or below the KL noise floor {floor:g} of "
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
        f"rewrites {at_low} of {steps} steps ({at_low / max(1, steps):.0%}) at ε = {fmt_value(low)} and "
        f"{at_high} ({at_high / max(1, steps):.0%}) at ε = {fmt_value(high)} "
        f"on the cached candidates of {cached}"
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
def _moot_by_loss(spec: TokenSqueezeSpec, name: str, entry: Range) -> Finding | None:
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
        name,
        "live",
        f"{len(range_grid(entry))} values over {span_of(entry)}; moot under {', '.join(without)}",
    )


def check_plain(spec: TokenSqueezeSpec, name: str, entry: Range) -> Finding:
    """β, lr, LoRA rank and the categorical switches: live unless the range holds one value or a loss the
    study proposes removes their term."""
    found = plain_finding(name, entry)
    if found.state == "live" and name in ("lambda", "eta", "beta"):
        return _moot_by_loss(spec, name, entry) or found
    return found


def check_variants(
    spec: TokenSqueezeSpec, entry: Categorical, samples: Mapping[str, Sequence[Response]] | None
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
    alpha_txt = (
        fmt_value(alphas[0]) if len(alphas) == 1 else f"[{fmt_value(min(alphas))}, {fmt_value(max(alphas))}]"
    )
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


def _local_model(spec: TokenSqueezeSpec) -> Path | str:
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


def load_cached_inputs(spec: TokenSqueezeSpec, cache: Cache, *, hub_data: bool = False) -> CachedInputs:
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
    spec: TokenSqueezeSpec, inputs: CachedInputs, cache: Cache
) -> tuple[list[TraceCandidates], int, str]:
    """Cached candidates for the positives any trial of the study can train on (the covering set the trial
    computes them for, objectives/tokensqueeze/cover.py); (found, traces asked for, why none)."""
    if inputs.samples is None or inputs.model_path is None:
        return [], 0, f"no cached self-samples: {inputs.why_not}"
    from tsq.engines.candidate_store import CACHE_STAGE, candidates_key
    from tsq.engines.models import model_fingerprint
    from tsq.method.refinement import TraceCandidates

    cover = covering_pairs(spec, inputs.samples, inputs.prompts, spec.params.alpha, scope_of(spec.study))
    traces = sorted({(p.prompt, p.chosen) for p in cover})
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
        rule = spec.refinement.candidates
        found = [restrict(TraceCandidates.from_json(r), rule) for r in raw if r is not None]
        if found:
            return found, len(traces), ""
    return [], len(traces), "none for these positives"


# -- the check -----------------------------------------------------------------------------------------------
def check_spec(
    spec: TokenSqueezeSpec, cache: Cache | None = None, *, hub_data: bool = False
) -> dict[str, Finding]:
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
