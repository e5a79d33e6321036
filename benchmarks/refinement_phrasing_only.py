"""A diagnostic trial program for the tiny world: the TokenSqueeze trial with refinement restricted to
phrasing-only rewrites (a candidate must say what the original step says, `tsq.data.tiny_world.step_meaning`).

Trained with DPO-L+SFT, the refinement ablation's "on" arm is more accurate than "off" (docs/tiny-world.md,
Table 3 section; study paper-ablations-refinement-dpo). Its rewrites include value changes that the windowed
KL cannot see; this program drops them, so a study of it tells whether the gain comes from those changes or
from the shorter phrasing (it comes from the phrasing). Not a method variant: the rule needs the tiny world's
own reading of a step, so it lives here and replaces `tsq.method.refinement.refine_step` (the rule
`refine_trace` applies) in the worker process that loads it.

    export PYTHONPATH=benchmarks TSQ_HOME=...
    tsq sweep launch benchmarks/refinement_phrasing_only.yaml
    tsq sweep confirm benchmarks/refinement_phrasing_only.yaml --top 2 --replicates 5
    tsq report effects --study refinement-phrasing-only
"""

from __future__ import annotations

from dataclasses import replace

import tsq.method.refinement
from objectives.tokensqueeze.trial import run_trial
from tsq.data.tiny_world import step_meaning
from tsq.method.refinement import StepCandidates

__all__ = ["run_trial"]

_refine_step = tsq.method.refinement.refine_step


def refine_step_keeping_meaning(step: StepCandidates, epsilon: float) -> tuple[str, int]:
    """`tsq.method.refinement.refine_step` over the candidates that state what the original step states (the
    order, and so the tie rules, kept)."""
    meaning = step_meaning(step.original)
    kept = tuple(c for c in step.candidates if step_meaning(c.text) == meaning)
    return _refine_step(replace(step, candidates=kept), epsilon)


tsq.method.refinement.refine_step = refine_step_keeping_meaning
