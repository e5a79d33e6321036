"""The default trial program: one reduced TokenSqueeze run for a point (α, ε, λ, η).

cached self-samples → selection (α) → refinement (ε) → LoRA DPO-L + SFT (λ, η) → evaluation vs the cached
baseline. Everything that does not depend on the trial's parameters comes from the cache, so a warm trial
costs one short training run plus one evaluation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tsq.cache import Cache
from tsq.spec import Spec, TrialParams


@dataclass
class TrialContext:
    cache: Cache
    out_dir: Path  # the trial writes adapter/ and metrics.json here
    on_log: Callable[[dict[str, Any]], None] | None = None  # training curves (W&B)
    trial_number: int | None = None


@dataclass
class TrialResult:
    params: dict[str, float]
    metrics: dict[str, Any]  # accuracy, len_all, len_correct, auc, steps_per_response, tokens_per_step, deltas
    baseline: dict[str, Any]  # the same keys for the base model
    budget_curve: list[tuple[int, float]]  # (budget, accuracy within budget) for the trial
    baseline_budget_curve: list[tuple[int, float]]
    adapter_dir: Path
    cache_keys: dict[str, str] = field(default_factory=dict)
    seeds: dict[str, int] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)  # pairs, refinement before/after, training


def run_trial(spec: Spec, params: TrialParams, ctx: TrialContext) -> TrialResult:
    raise NotImplementedError("being wired by the lead")
