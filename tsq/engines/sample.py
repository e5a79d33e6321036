"""Self-sampling: N graded responses per problem from a model (optionally with a LoRA adapter), cached.

The cache key covers everything that determines the result: the model's weights (not its name), the
adapter's weights, the problems, the exact prompts (so a chat-template change invalidates), the grader,
the sampling settings with their seed, and the backend.

Sample j of a problem is seeded by (settings seed, problem id, j) on every backend (the problem ids go to
`Backend.generate` as keys), so it is the same whichever other problems are sampled with it.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path

from tsq.cache import Cache, content_key
from tsq.config.pipeline import EvaluationSpec, SamplingSpec
from tsq.data.formatting import format_prompt
from tsq.data.problems import Grader, ProblemSet
from tsq.data.reasoning import grade_completion, prompt_opens_think
from tsq.data.traces import Response
from tsq.engines.generation.adapters import adapter_fingerprint
from tsq.engines.generation.base import Backend, SamplingSettings
from tsq.engines.models import model_fingerprint

STAGE = "samples"
# Bump when the meaning of a cached entry changes (grading, length counting, response format, seeding).
# 2: per-(problem id, sample) seeds; format-1 entries were seeded per batch (HF) or per sample index (vLLM).
_FORMAT = 2


def sampling_settings(section: SamplingSpec | EvaluationSpec) -> SamplingSettings:
    """The generation settings of a spec's `sampling:` (self-samples) or `evaluation:` section."""
    return SamplingSettings(
        n=section.n,
        temperature=section.temperature,
        top_p=section.top_p,
        max_new_tokens=section.max_new_tokens,
        seed=section.seed,
    )


def samples_key(
    model_path: Path,
    problem_set: ProblemSet,
    prompts: list[str],
    settings: SamplingSettings,
    backend_name: str,
    *,
    grader: Grader | None = None,
    adapter: Path | None = None,
) -> str:
    """The cache key of `sample_responses` (also read by `tsq sweep check`, which looks samples up)."""
    return content_key(
        stage=STAGE,
        format=_FORMAT,
        model=model_fingerprint(model_path),
        adapter=adapter_fingerprint(adapter) if adapter is not None else None,
        problems=problem_set.fingerprint(),
        prompts=hashlib.sha256("\0".join(prompts).encode()).hexdigest(),
        grader=grader or problem_set.grader,
        settings=asdict(settings),
        backend=backend_name,
    )


def sample_responses(
    backend: Backend,
    model_path: Path,
    problem_set: ProblemSet,
    settings: SamplingSettings,
    cache: Cache,
    *,
    grader: Grader | None = None,
    adapter: Path | None = None,
) -> dict[str, list[Response]]:
    """`settings.n` graded responses per problem, keyed by problem id, in problem order.

    A response that hit max_new_tokens is incorrect and counts at its truncated length. Computed once per
    key: a repeated request reads the cache and makes no model call.
    """
    grader = grader or problem_set.grader
    prompts = [format_prompt(backend.tokenizer, p) for p in problem_set.problems]
    key = samples_key(
        model_path, problem_set, prompts, settings, backend.name, grader=grader, adapter=adapter
    )

    def compute() -> dict[str, list[dict]]:
        keys = [p.id for p in problem_set.problems]
        completions = backend.generate(prompts, settings, adapter=adapter, keys=keys)
        out: dict[str, list[dict]] = {}
        for problem, prompt, outs in zip(problem_set.problems, prompts, completions, strict=True):
            in_think = prompt_opens_think(prompt)
            out[problem.id] = [
                asdict(
                    Response(
                        text=c.text,
                        n_tokens=len(c.token_ids),
                        correct=grade_completion(grader, c.text, c.finish_reason, problem.answer, in_think),
                        finish_reason=c.finish_reason,
                    )
                )
                for c in outs
            ]
        return out

    raw = cache.get_or_compute_json(STAGE, key, compute)
    return {pid: [Response(**r) for r in rs] for pid, rs in raw.items()}
