"""The pipeline components' sections of a spec, each beside the settings it configures: sampling
(tsq.engines.sample), evaluation (tsq.engines.evaluate), selection (tsq.method.select), refinement
(tsq.engines.refine) and training (tsq.engines.train). `PipelineSpec` is the core spec with all of them, what
the engines read; a recipe's spec model extends it with its knobs (objectives/tokensqueeze/config.py).

`PlainSpec` is the spec model of a plain trial function (`study.program: module:function`): the pipeline
sections and a free `params` mapping, where every searched name is a knob of its own.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from tsq.config.knobs import Knob
from tsq.config.spec import Section, Spec
from tsq.method.early_stop import check_fractions
from tsq.method.losses import DEFAULT_LOSS, LossName
from tsq.method.refinement import CandidateFilter
from tsq.method.select import DEFAULT_VARIANT, VariantName


class SamplingSpec(Section):
    backend: Literal["hf", "vllm"] = "hf"
    n: Annotated[int, Field(gt=0)] = 8
    temperature: Annotated[float, Field(ge=0)] = 0.6
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    max_new_tokens: Annotated[int, Field(gt=0)] = 256
    batch_size: Annotated[int, Field(gt=0)] = 64
    seed: int = 0
    # vLLM only (see "GPU memory plan" in docs/real-models.md). The share of the GPU's memory the engine
    # takes (weights + KV cache), and the longest prompt + response it serves (None: the model's own
    # limit; keep it above the longest prompt plus the larger of the two max_new_tokens).
    gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] = 0.9
    max_model_len: Annotated[int, Field(gt=0)] | None = None
    # vLLM on CUDA: the engine sleeps (weights to CPU RAM, KV cache dropped) while refinement scoring, the
    # reference pass and training use the GPU, and checks a greedy probe when it wakes. Ignored on CPU.
    sleep_mode: bool = True


class EvaluationSpec(Section):
    n: Annotated[int, Field(gt=0)] = 8  # samples per eval problem (paper: 16)
    temperature: Annotated[float, Field(ge=0)] = 0.6
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    max_new_tokens: Annotated[int, Field(gt=0)] = 256
    budget: Annotated[int, Field(gt=0)] = 128  # token budget B of the budgeted AUC
    seed: int = 1234
    bootstrap: Annotated[int, Field(gt=0)] = 2000  # resamples for the accuracy-delta CI
    # Staged evaluation (tsq/method/early_stop.py): cumulative fractions of the eval problems, increasing,
    # the last 1.0. Used only when a study constraint is set and the early stop is on (study.early_stop).
    stages: tuple[float, ...] = (0.25, 0.5, 1.0)

    @model_validator(mode="after")
    def _check_stages(self) -> EvaluationSpec:
        check_fractions(self.stages)
        return self


class SelectionSpec(Section):
    variant: VariantName = DEFAULT_VARIANT  # the variants: tsq.method.select.SELECTION_VARIANTS
    max_pairs: Annotated[int, Field(gt=0)] = 64  # M: pairs per problem
    extra_neg_ratio: Annotated[float, Field(gt=1)] = 1.5
    # (our reading) k = max(min_positives, ceil(q*c)) when 1 <= c < N; binds only at alpha = 0. 0 = literal
    min_positives: Annotated[int, Field(ge=0)] = 1


class RefinementSpec(Section):
    enabled: bool = True
    k: Annotated[int, Field(gt=0)] = 8  # candidates per step (paper: 64)
    window: Annotated[int, Field(gt=0)] = 32  # L: KL window in tokens (paper: 512)
    temperature: Annotated[float, Field(gt=0)] = 1.0
    max_step_tokens: Annotated[int, Field(gt=0)] = 48
    # (our reading) KL averaged over the window ("mean", so ε is per token) or summed as written ("sum")
    kl_reduction: Literal["mean", "sum"] = "mean"
    batch_size: Annotated[int, Field(gt=0)] = 64
    seed: int = 0
    # steps searched per trace, its longest first (None = all); bounds the one-off cost on long traces
    max_steps_per_trace: Annotated[int, Field(gt=0)] | None = 64
    # which scored rewrites the ε rule may choose (tsq.method.refinement.CANDIDATE_FILTERS); not in the cache
    # key: candidates are scored alike and filtered per trial
    candidates: CandidateFilter = "all"


class LoraSpec(Section):
    r: Annotated[int, Field(gt=0)] = 16
    alpha: Annotated[int, Field(gt=0)] = 32
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    target_modules: list[str] | str = "all-linear"


class TrainingSpec(Section):
    loss: LossName = DEFAULT_LOSS  # the variants and their terms: tsq.method.losses.LOSSES
    beta: Annotated[float, Field(gt=0)] = 0.1
    learning_rate: Annotated[float, Field(gt=0)] = 2e-4
    max_steps: Annotated[int, Field(gt=0)] = 100
    batch_size: Annotated[int, Field(gt=0)] = 32
    # tokens of prompt + response + EOS; None = derived from the longest prompt + sampling.max_new_tokens + 1
    # (tsq.engines.train.check_max_length, which also refuses a value too small for them)
    max_length: Annotated[int, Field(gt=0)] | None = None
    seed: int = 0
    gradient_checkpointing: bool = False
    lora: LoraSpec = LoraSpec()


class PipelineSpec(Spec):
    """The core spec with every pipeline component's section."""

    sampling: SamplingSpec = SamplingSpec()
    evaluation: EvaluationSpec = EvaluationSpec()
    selection: SelectionSpec = SelectionSpec()
    refinement: RefinementSpec = RefinementSpec()
    training: TrainingSpec = TrainingSpec()


class PlainSpec(PipelineSpec):
    """A plain trial function's spec: any name in `study.search` is a knob at `params.<name>`."""

    params: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def knob(cls, name: str) -> Knob | None:
        return Knob(name, ("params", name), "any", f"{name} (a plain trial function's parameter)")
