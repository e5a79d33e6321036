"""Where refinement's scored candidates live: `tsq.cache.Cache` stage "candidates", one JSON entry per trace.

The key holds everything the entry depends on (the model, the scoring precision, the backend that sampled
the rewrites, the prompt and trace, and the refinement settings except ε, which only `refine_trace` reads),
so every trial of a study reuses the entries of the traces it shares with earlier ones. torch-free: `sweep
check` reads the entries without loading the scoring engine.
"""

from __future__ import annotations

import json

from tsq.cache import Cache, content_key
from tsq.config.pipeline import RefinementSpec
from tsq.method.refinement import TraceCandidates

CACHE_STAGE = "candidates"
# Bump when the meaning of a cached entry changes (candidate filtering, segmentation, KL definition).
# 2: steps encoded with their boundary, the original scored inside its candidates' batch, fp32 head and KL.
# (Pieces cut as they fall before the following text changed no row of the tiny or Qwen tokenizers: kept 2.)
CANDIDATES_FORMAT = 2


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
        max_steps_per_trace=spec.max_steps_per_trace,
    )


def load_candidates(cache: Cache, key: str) -> TraceCandidates | None:
    """The cached entry under `key` (a hit or a miss is counted by the cache), None when there is none."""
    found = cache.get_json(CACHE_STAGE, key)
    return None if found is None else TraceCandidates.from_json(found)


def store_candidates(cache: Cache, key: str, value: TraceCandidates) -> TraceCandidates:
    """Write a computed entry (its miss was counted by `load_candidates`); a concurrent worker's wins."""
    with cache.lock(CACHE_STAGE, key):
        stored = cache.read_bytes(CACHE_STAGE, key)
        if stored is not None:
            return TraceCandidates.from_json(json.loads(stored))
        cache.write_bytes(CACHE_STAGE, key, json.dumps(value.to_json()).encode())
    return value
