"""TokenSqueeze's trial: one reduced TokenSqueeze run for a point (α, ε, λ, η), straight through.

cached self-samples → selection (α) → refinement (ε) → LoRA DPO-L + SFT (λ, η) → evaluation vs the cached
baseline. Everything that does not depend on the trial's parameters comes from the cache, so a warm trial
costs one short training run plus one evaluation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from contextlib import ExitStack, closing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from filelock import FileLock

from objectives.tokensqueeze.config import TokenSqueezeSpec as Spec
from objectives.tokensqueeze.config import TrialParams
from objectives.tokensqueeze.cover import covering_pairs, reference_cover
from tsq.cache import Cache
from tsq.config.pipeline import TrainingSpec
from tsq.data.formatting import format_prompt
from tsq.data.loading import load_problem_set
from tsq.data.traces import Response
from tsq.engines.evaluate import EvalResult, baseline, compare, evaluate, intervals
from tsq.engines.generation import backend_from_spec
from tsq.engines.generation.base import Backend
from tsq.engines.models import model_fingerprint, resolve_model
from tsq.engines.refine import compute_candidates
from tsq.engines.sample import sample_responses, sampling_settings
from tsq.engines.train import cache_reference_logps, check_max_length, train_lora
from tsq.errors import TrialFailed
from tsq.fileio import write_atomic
from tsq.method.early_stop import look_line, run_stages, stage_problems, stop_record
from tsq.method.metrics import ProblemSums, budget_curve, summarize
from tsq.method.refinement import TraceCandidates, reachable_refinements, refine_trace, restrict
from tsq.method.select import Pair, build_pairs
from tsq.recipe import TrialContext, TrialResult, TrialSeeds

log = logging.getLogger(__name__)


def run_trial(spec: Spec, params: TrialParams, ctx: TrialContext) -> TrialResult:
    """Run one trial; raises TrialFailed when it cannot produce a meaningful result.

    Uses the worker's generation backend when the context hands one in, else makes its own and closes it.
    """
    spec = with_seeds(spec, ctx.seeds)
    model_path = resolve_model(spec.model)
    with ExitStack() as owned:
        backend = ctx.backend or owned.enter_context(closing(backend_from_spec(spec, model_path)))
        return _run(spec, params, ctx, model_path, backend)


def with_seeds(spec: Spec, seeds: TrialSeeds) -> Spec:
    """The spec with a replicate's training and evaluation seeds (None keeps the spec's own)."""
    training = {} if seeds.training is None else {"seed": seeds.training}
    evaluation = {} if seeds.evaluation is None else {"seed": seeds.evaluation}
    return spec.model_copy(
        update={
            "training": spec.training.model_copy(update=training),
            "evaluation": spec.evaluation.model_copy(update=evaluation),
        }
    )


@dataclass
class Shared:
    """What every trial of a study shares, computed by its first trial (or `tsq cache warm`) and cached."""

    train_fingerprint: str
    prompts: dict[str, str]
    samples: dict[str, list[Response]]
    base: EvalResult
    candidates: dict[tuple[str, str], TraceCandidates] | None  # None: refinement off
    training: TrainingSpec  # with the checked max_length
    unfinished: set[str]  # sampled texts that ran into max_new_tokens (trained without EOS)
    ref_computed: int  # sequences the covering reference pass computed (0 when it was cached)


def shared_stages(
    spec: Spec, params: TrialParams, ctx: TrialContext, model_path: Path, backend: Backend
) -> Shared:
    """Steps 1, 3 and 4 that do not depend on the trial's knobs: self-samples and the baseline, the step
    candidates of every positive any trial can pick, and the reference pass over every sequence any trial can
    train on. Under one lock per spec, so workers starting together wait for the first instead of computing
    the same entries; everything after the first trial is a cache hit."""
    with FileLock(str(ctx.cache.root / "locks" / f"shared-{_shared_key(spec)}.lock")):
        # 1. self-samples on the train split and the baseline on the evaluated split
        train_set = load_problem_set(spec.data, "train")
        prompts = {p.id: format_prompt(backend.tokenizer, p) for p in train_set.problems}
        samples = sample_responses(
            backend, model_path, train_set, sampling_settings(spec.sampling), ctx.cache
        )
        base = baseline(spec, ctx.cache, backend=backend, split=ctx.split)

        # 3. candidates and their KL, per trace, for the positives of every α and variant of the study
        cover = covering_pairs(spec, samples, prompts, params.alpha, ctx.scope)
        reachable = {(p.prompt, p.chosen): [p.chosen] for p in cover}  # chosen texts any trial can train on
        candidates = None
        if spec.refinement.enabled:
            traces = sorted(reachable)
            found = compute_candidates(
                model_path,
                backend,
                traces,
                spec.refinement,
                ctx.cache,
                trust_remote_code=spec.model.trust_remote_code,
                dtype=spec.model.dtype,
            )
            rule = spec.refinement.candidates
            candidates = {t: restrict(c, rule) for t, c in zip(traces, found, strict=True)}
            low, high = ctx.scope.extent("epsilon", params.epsilon)
            reachable = {t: reachable_refinements(c, low, high) for t, c in candidates.items()}

        # 4a. max_length holds the longest prompt + max_new_tokens + EOS (derived when unset, refused when too
        # small); a response that ran into max_new_tokens is trained without an EOS it never generated. The
        # reference pass and training get the same settings, or their cached log-probs would not match.
        training = spec.training.model_copy(
            update={
                "max_length": check_max_length(
                    spec.training.max_length,
                    list(prompts.values()),
                    backend.tokenizer,
                    spec.sampling.max_new_tokens,
                )
            }
        )
        unfinished = {r.text for rs in samples.values() for r in rs if r.finish_reason == "length"}
        ctx.out_dir.mkdir(parents=True, exist_ok=True)
        # vLLM on CUDA: its GPU memory goes to the reference model, and only when the cover is not cached yet
        # (a sleep and wake-up cost two probes and a weights round trip; on CPU both are no-ops)
        ref_computed = cache_reference_logps(
            model_path,
            reference_cover(cover, reachable, samples),
            training,
            ctx.cache,
            ctx.out_dir,
            unfinished=unfinished,
            make_room=backend.asleep,
            **_model_options(spec),
        )
    return Shared(
        train_set.fingerprint(), prompts, samples, base, candidates, training, unfinished, ref_computed
    )


def warm_cache(spec: Spec, ctx: TrialContext) -> dict[str, Any]:
    """`tsq cache warm`: every shared stage of the spec's study, before any trial (cache use by stage)."""
    spec = with_seeds(spec, ctx.seeds)
    model_path = resolve_model(spec.model)
    with ExitStack() as owned:
        backend = ctx.backend or owned.enter_context(closing(backend_from_spec(spec, model_path)))
        shared = shared_stages(spec, spec.params, ctx, model_path, backend)
    return {
        "reference_sequences_computed": shared.ref_computed,
        "cache": {stage: dict(c) for stage, c in ctx.cache.stage_stats.items()},
    }


def _shared_key(spec: Spec) -> str:
    """The settings the shared stages depend on (not the knobs, nor training's optimiser settings)."""
    parts = spec.model_dump(mode="json", include={"model", "data", "sampling", "evaluation", "selection",
                                                 "refinement"})  # fmt: skip
    parts["max_length"] = spec.training.max_length
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _model_options(spec: Spec) -> dict[str, Any]:
    return {"trust_remote_code": spec.model.trust_remote_code, "dtype": spec.model.dtype}


def _run(
    spec: Spec, params: TrialParams, ctx: TrialContext, model_path: Path, backend: Backend
) -> TrialResult:
    shared = shared_stages(spec, params, ctx, model_path, backend)
    samples, base = shared.samples, shared.base

    # 2. adaptive depth selection: α
    pairs = build_pairs(samples, shared.prompts, params.alpha, spec.selection)
    if not pairs:
        raise TrialFailed(f"selection produced no pairs (alpha={params.alpha}, {spec.selection.variant})")

    # 3. KL-constrained step refinement: ε thresholds the cached candidates
    refinement: dict[str, Any] = {"enabled": False}
    if shared.candidates is not None:
        pairs, refinement = refine_pairs(pairs, shared.candidates, params.epsilon)

    # 4. LoRA DPO-L + SFT: λ, η; reference log-probs all come from the cache (the shared reference pass)
    with backend.asleep():  # the generation engine sleeps meanwhile (vLLM on CUDA; a no-op on CPU)
        trained = train_lora(
            model_path,
            pairs,
            shared.training,
            params.lam,
            params.eta,
            ctx.out_dir,
            ctx.cache,
            on_log=ctx.on_log,
            unfinished=shared.unfinished,
            **_model_options(spec),
        )

    # 5. evaluation of model + adapter vs the baseline: in stages with an early stop when the study has a
    # constraint and the early stop is on (ctx.early_stop_max_drop), else on the whole split at once
    started = time.perf_counter()
    early_stop: dict[str, Any] | None = None
    if ctx.early_stop_max_drop is None or ctx.split != "eval":
        result = evaluate(
            spec, model_path, ctx.cache, adapter=trained.adapter_dir, backend=backend, split=ctx.split
        )
    else:
        result, early_stop = evaluate_staged(
            spec, model_path, ctx.cache, base, ctx.early_stop_max_drop, adapter=trained.adapter_dir,
            backend=backend,
        )  # fmt: skip
    evaluation = {"seconds": time.perf_counter() - started, "problems": len(result.responses),
                  "of": len(base.responses)}  # fmt: skip
    # judged by the text: an immediate end-of-sequence still counts one token (the eos is kept)
    if all(not r.text.strip() for rs in result.responses.values() for r in rs):
        raise TrialFailed("the trained adapter produces empty outputs")
    # every metric with its 95% interval over problems; deltas paired with the baseline on the same problems
    metrics = {
        **result.summary,
        **intervals(result, spec.evaluation),
        **compare(base, result, spec.evaluation),
    }

    trial = TrialResult(
        params={"alpha": params.alpha, "epsilon": params.epsilon, "lambda": params.lam, "eta": params.eta},
        metrics=metrics,
        baseline={**base.summary, **intervals(base, spec.evaluation)},
        budget_curve=_curve(result, spec.evaluation.budget),
        baseline_budget_curve=_curve(base, spec.evaluation.budget),
        records=result.write_records(ctx.out_dir / "records.jsonl"),
        baseline_records=base.write_records(ctx.out_dir / "baseline_records.jsonl"),
        adapter_dir=trained.adapter_dir,
        cache_keys={"model": model_fingerprint(model_path), "train_problems": shared.train_fingerprint},
        seeds={
            "sampling": spec.sampling.seed,
            "refinement": spec.refinement.seed,
            "training": spec.training.seed,
            "evaluation": spec.evaluation.seed,
        },
        stats={
            "pairs": len(pairs),
            "problems_with_pairs": len({p.problem_id for p in pairs}),
            "refinement": refinement,
            "training": {
                "steps": trained.n_steps,
                "pairs_trained": trained.n_pairs,
                "final_loss": trained.final_loss,
                "mean_loss": trained.mean_loss,
                "ref_logps_computed": trained.n_ref_computed,
                "ref_logps_computed_ahead": shared.ref_computed,
                "truncation": trained.truncation.as_stats(),
            },
            "cache": {stage: dict(c) for stage, c in ctx.cache.stage_stats.items()},
            "evaluation": evaluation,
            **({} if early_stop is None else {"early_stop": early_stop}),
        },
    )
    write_atomic(ctx.out_dir / "metrics.json", json.dumps(trial.to_json(), indent=2, default=str))
    log.info("trial done: cache use by stage %s", trial.stats["cache"])
    return trial


def refine_pairs(
    pairs: Sequence[Pair], candidates: dict[tuple[str, str], TraceCandidates], epsilon: float
) -> tuple[list[Pair], dict[str, Any]]:
    """Replace each chosen response by its refined trace at ε; the rejected side stays as sampled."""
    refined = {(p.prompt, p.chosen): refine_trace(candidates[p.prompt, p.chosen], epsilon) for p in pairs}
    out = [replace(p, chosen=refined[p.prompt, p.chosen].text) for p in pairs]
    before = [n for r in refined.values() for n in r.tokens_before]
    after = [n for r in refined.values() for n in r.tokens_after]
    stats = {
        "enabled": True,
        "traces": len(refined),
        "traces_with_candidates": len(candidates),
        "steps_per_trace": len(before) / max(1, len(refined)),
        "steps_rewritten": sum(r.n_rewritten for r in refined.values()),
        "tokens_per_step_before": sum(before) / max(1, len(before)),
        "tokens_per_step_after": sum(after) / max(1, len(after)),
    }
    return out, stats


def evaluate_staged(
    spec: Spec,
    model_path: Path,
    cache: Cache,
    base: EvalResult,
    max_accuracy_drop: float,
    *,
    adapter: Path | None,
    backend: Backend,
) -> tuple[EvalResult, dict[str, Any]]:
    """Evaluate in `spec.evaluation.stages` and stop once the staged test shows the accuracy-drop constraint
    violated (`tsq.method.early_stop`). Returns the evaluation of the problems evaluated so far and the
    record of
    the looks: `stopped`, `stage`, `problems` of `of`, and each look's statistic, p-value and threshold.

    Each stage samples only the problems it adds (stages are prefixes of one seeded order); a problem's
    samples are seeded per (problem, sample), so a trial that passes every stage holds exactly the responses
    `tsq.engines.evaluate.evaluate` draws on the whole set."""
    problems = load_problem_set(spec.data, "eval")
    by_id = {p.id: p for p in problems.problems}
    settings = sampling_settings(spec.evaluation)
    responses: dict[str, list[Response]] = {}

    def evaluate_more(ids: Sequence[str]) -> ProblemSums:
        added = replace(problems, problems=tuple(by_id[i] for i in ids))
        sampled = sample_responses(backend, model_path, added, settings, cache, adapter=adapter)
        responses.update(sampled)
        return ProblemSums.from_responses(sampled, spec.evaluation.budget)

    stages = stage_problems(list(by_id), spec.evaluation.stages, spec.evaluation.seed)
    looks = run_stages(base.problem_sums(), stages, evaluate_more, max_accuracy_drop)
    for seen in looks:
        log.info("%s", look_line(seen))
    ordered = {p.id: responses[p.id] for p in problems.problems if p.id in responses}  # as `evaluate` orders
    difficulty = {pid: by_id[pid].difficulty for pid in ordered}
    result = EvalResult(ordered, difficulty, summarize(ordered, difficulty, spec.evaluation.budget))
    return result, stop_record(looks)


def _curve(result: EvalResult, budget: int) -> list[tuple[int, float]]:
    responses = [r for rs in result.responses.values() for r in rs]
    return budget_curve([r.n_tokens for r in responses], [r.correct for r in responses], budget)
