"""TokenSqueeze as a recipe (tsq.recipe.Recipe): its spec model and knobs (config.py), its launch preflight,
its knob check with the selection pre-flight and the GPU plan (check.py, selection_check.py, plan.py), its
warm-up and its trial (trial.py). The engines are imported where a part runs, so loading a spec stays light.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import TYPE_CHECKING, Any

from objectives.tokensqueeze.config import TokenSqueezeSpec
from tsq.recipe import CheckReport, RecipeBase, TrialContext, TrialResult

if TYPE_CHECKING:
    from tsq.cache import Cache
    from tsq.engines.generation.base import Backend

log = logging.getLogger(__name__)


class TokenSqueeze(RecipeBase):
    spec_model = TokenSqueezeSpec

    def preflight(self, spec: TokenSqueezeSpec) -> None:
        """The model, both problem sets, `training.max_length` against the longest prompt, and vLLM's LoRA
        slots against the largest rank the study trains."""
        from tsq.data.formatting import format_prompt
        from tsq.data.loading import load_problem_set
        from tsq.engines.generation import lora_rank_bound
        from tsq.engines.generation.vllm import vllm_lora_rank
        from tsq.engines.models import load_tokenizer, resolve_model
        from tsq.engines.train import check_max_length

        model_path = resolve_model(spec.model)
        train = load_problem_set(spec.data, "train")
        load_problem_set(spec.data, "eval")
        tokenizer = load_tokenizer(model_path, trust_remote_code=spec.model.trust_remote_code)
        prompts = [format_prompt(tokenizer, p) for p in train.problems]
        check_max_length(spec.training.max_length, prompts, tokenizer, spec.sampling.max_new_tokens)
        if spec.sampling.backend == "vllm":  # the adapters of every rank the study trains must fit its slots
            vllm_lora_rank(lora_rank_bound(spec))
        import objectives.tokensqueeze.trial  # noqa: F401  # a slow import (engines): fail here, not in trial 0

    def check(
        self,
        spec: TokenSqueezeSpec,
        cache: Cache | None,
        *,
        source: str = "",
        gpu: str = "h100",
        launch: bool = False,
    ) -> CheckReport:
        """Each searched knob's state, whether selection can give pairs on the cached self-samples, and the
        GPU plan of a vLLM spec. `launch`: a sweep is starting (hub datasets may be read: the preflight
        loaded them)."""
        from objectives.tokensqueeze.check import check_spec, load_cached_inputs
        from objectives.tokensqueeze.plan import check_gpu_plan
        from objectives.tokensqueeze.selection_check import selection_preflight

        findings = check_spec(spec, cache, hub_data=launch)
        report = CheckReport(findings)
        if cache is not None and not launch:
            selection = selection_preflight(spec, load_cached_inputs(spec, cache))
            report.lines += selection.lines(source, spec.sampling.max_new_tokens)
            report.sections["selection"] = selection.to_json()
        # what the engines' imports print (W&B's offline notice) must not mix into `--json` on stdout
        with contextlib.redirect_stdout(sys.stderr):
            plan = check_gpu_plan(spec, gpu)
        if plan is not None:
            report.lines += plan.lines()
            report.sections["gpu_plan"] = plan.to_json()
            report.launch_warnings += [f"GPU plan: {stage.line()}" for stage in plan.misfits()]
        return report

    def warm(self, spec: TokenSqueezeSpec, ctx: TrialContext) -> dict[str, Any]:
        from objectives.tokensqueeze.trial import warm_cache

        return warm_cache(spec, ctx)

    def open_engine(self, spec: TokenSqueezeSpec) -> Backend:
        # trials differ only in their knobs, never in the model or the sampling settings: one engine serves
        # all
        from tsq.engines.generation import backend_from_spec
        from tsq.engines.models import resolve_model

        return backend_from_spec(spec, resolve_model(spec.model))

    def run(self, spec: TokenSqueezeSpec, ctx: TrialContext) -> TrialResult:
        from objectives.tokensqueeze.trial import run_trial

        return run_trial(spec, spec.params, ctx)
